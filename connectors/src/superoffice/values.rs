//! SuperOffice's encoded field values, as user-defined and extra fields carry them in an
//! entity's `UserDefinedFields` and `CustomFields` maps: `[I:23]` (integer, a checkbox, or
//! a list item's id), `[F:1.5]` (decimal), `[M:12.50]` (money), `[D:06/19/2019]` (date),
//! `[DT:06/19/2019 14:35:56.00000]` (date and time); text is not encoded.
//!
//! Sources: SuperOfficeDocs `en/api/archive-providers/encoded-values.md` (the codes),
//! `en/automation/crmscript/reference/CRMScript.NetServer.CustomFieldType.mdx` (the date
//! formats `MM/dd/yyyy`), `en/custom-objects/reference/index.mdx` ("Viewing entity data":
//! `"SuperOffice:1": "[I:23]"`). The encoded-values page also shows dates as `dd.MM.yyyy`
//! (`[D:09.11.2017]`), so both are read; dates are written as `MM/dd/yyyy`.
//!
//! Towards the hub a value becomes a number, a bool-free integer or an ISO date
//! (`2019-06-19`, `2019-06-19T14:35:56`); towards SuperOffice it is encoded like the value
//! it replaces (an update) or the default entity's value (a create), so a hub date written
//! to a date field is a `[D:…]` again and a number to a text field stays text.

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Map, Number, Value};

/// The maps whose values are encoded: the deprecated one first.
pub const ENCODED_MAPS: [&str; 2] = ["UserDefinedFields", "CustomFields"];

/// The kind of an encoded value, from its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integer,
    Decimal,
    Money,
    Date,
    DateTime,
    /// Not encoded (or a code Ferry does not read: kept as the text it is).
    Text,
}

fn split(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.split_once(':')
}

/// The kind `s` is encoded as.
pub fn kind_of(s: &str) -> Kind {
    match split(s).map(|(code, _)| code) {
        Some("I") => Kind::Integer,
        Some("F") => Kind::Decimal,
        Some("M") => Kind::Money,
        Some("D") => Kind::Date,
        Some("DT") => Kind::DateTime,
        _ => Kind::Text,
    }
}

fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%m/%d/%Y")
        .or_else(|_| NaiveDate::parse_from_str(s, "%d.%m.%Y"))
        .ok()
}

fn date_time(s: &str) -> Option<NaiveDateTime> {
    [
        "%m/%d/%Y %H:%M:%S%.f",
        "%d.%m.%Y %H:%M:%S%.f",
        "%m/%d/%Y %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// One encoded value as a hub value; text (and anything not readable as its code says)
/// stays the text it is, so nothing is lost.
pub fn decode(s: &str) -> Value {
    let Some((code, raw)) = split(s) else {
        return Value::String(s.to_string());
    };
    let decoded = match code {
        "I" => raw.trim().parse::<i64>().ok().map(Value::from),
        "F" | "M" => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number),
        "D" => date(raw.trim()).map(|d| Value::String(d.format("%Y-%m-%d").to_string())),
        "DT" => {
            date_time(raw.trim()).map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S").to_string()))
        }
        _ => None,
    };
    decoded.unwrap_or_else(|| Value::String(s.to_string()))
}

/// A hub value encoded as `kind`; `Err` names what does not fit (a word for a number
/// field). Null stays null (the field is cleared).
pub fn encode(v: &Value, kind: Kind) -> Result<Value, String> {
    let text = match v {
        Value::Null => return Ok(Value::Null),
        Value::String(s) => s.clone(),
        Value::Bool(b) => (*b as i64).to_string(),
        other => other.to_string(),
    };
    let bad = |what: &str| format!("{text:?} is not {what}");
    let encoded = match kind {
        Kind::Text => text,
        Kind::Integer => {
            let whole = match v {
                Value::Bool(b) => Some(*b as i64),
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                        .map(|f| f as i64)
                }),
                _ => text.trim().parse::<i64>().ok(),
            };
            format!("[I:{}]", whole.ok_or_else(|| bad("a whole number"))?)
        }
        Kind::Decimal | Kind::Money => format!(
            "[{}:{}]",
            if kind == Kind::Money { "M" } else { "F" },
            text.trim().parse::<f64>().map_err(|_| bad("a number"))?
        ),
        Kind::Date => {
            let d = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .map_err(|_| bad("a date (yyyy-mm-dd)"))?;
            format!("[D:{}]", d.format("%m/%d/%Y"))
        }
        Kind::DateTime => {
            let t = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.f")
                .map_err(|_| bad("a date and time (yyyy-mm-ddThh:mm:ss)"))?;
            format!("[DT:{}]", t.format("%m/%d/%Y %H:%M:%S"))
        }
    };
    Ok(Value::String(encoded))
}

/// An entity as the hub reads it: the values of its encoded maps decoded in place.
pub fn decode_record(mut record: Value) -> Value {
    for map in ENCODED_MAPS {
        if let Some(Value::Object(m)) = record.get_mut(map) {
            for v in m.values_mut() {
                if let Value::String(s) = v {
                    *v = decode(s);
                }
            }
        }
    }
    record
}

/// Encodes the encoded maps' values of `fields` (mapped values on their way out) like the
/// same keys of `like` (the entity they go into, or the default entity), and writes each
/// key into both maps wherever `like` carries it, so the deprecated `UserDefinedFields`
/// and its successor `CustomFields` never disagree in one request. `Err` names the field.
pub fn encode_fields(fields: &Value, like: &Value) -> Result<Value, String> {
    let mut out = fields.clone();
    let mut both: Map<String, Value> = Map::new();
    for map in ENCODED_MAPS {
        let Some(Value::Object(m)) = fields.get(map) else {
            continue;
        };
        for (key, v) in m {
            let kind = ENCODED_MAPS
                .iter()
                .find_map(|n| like.get(n)?.get(key)?.as_str())
                .map_or(Kind::Text, kind_of);
            let encoded = encode(v, kind).map_err(|e| format!("{map}[{key:?}]: {e}"))?;
            both.insert(key.clone(), encoded);
        }
    }
    for (key, v) in both {
        for map in ENCODED_MAPS {
            let carried = like.get(map).and_then(|m| m.get(&key)).is_some()
                || fields.get(map).and_then(|m| m.get(&key)).is_some();
            if carried {
                if !out.get(map).is_some_and(Value::is_object) {
                    out[map] = Value::Object(Map::new());
                }
                out[map][&key] = v.clone();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_each_code_and_keeps_what_it_cannot_read() {
        assert_eq!(decode("[I:23]"), json!(23));
        assert_eq!(decode("[F:1.5]"), json!(1.5));
        assert_eq!(decode("[M:12.50]"), json!(12.5));
        assert_eq!(decode("[D:06/19/2019]"), json!("2019-06-19"));
        assert_eq!(decode("[D:09.11.2017]"), json!("2017-11-09"));
        assert_eq!(
            decode("[DT:06/19/2019 14:35:56.00000]"),
            json!("2019-06-19T14:35:56")
        );
        for kept in ["Shipping", "[I:x]", "[B:X98]", "[D:soon]", "", "[I:5"] {
            assert_eq!(decode(kept), json!(kept), "{kept}");
        }
    }

    #[test]
    fn encodes_like_the_value_it_replaces() {
        let like = json!({
            "UserDefinedFields": {"SuperOffice:1": "text", "SuperOffice:3": "[I:0]",
                                  "SuperOffice:4": "[D:01/01/2020]"},
            "CustomFields": {"SuperOffice:3": "[I:0]", "x_rate": "[F:0]"},
        });
        let fields = json!({
            "UserDefinedFields": {"SuperOffice:1": 42, "SuperOffice:3": 7,
                                  "SuperOffice:4": "2021-02-03"},
            "CustomFields": {"x_rate": 2.5},
        });
        let out = encode_fields(&fields, &like).unwrap();
        assert_eq!(out["UserDefinedFields"]["SuperOffice:1"], json!("42"));
        assert_eq!(out["UserDefinedFields"]["SuperOffice:3"], json!("[I:7]"));
        assert_eq!(out["CustomFields"]["SuperOffice:3"], json!("[I:7]"));
        assert_eq!(
            out["UserDefinedFields"]["SuperOffice:4"],
            json!("[D:02/03/2021]")
        );
        assert_eq!(out["CustomFields"]["x_rate"], json!("[F:2.5]"));
        let err =
            encode_fields(&json!({"CustomFields": {"SuperOffice:3": "many"}}), &like).unwrap_err();
        assert!(
            err.contains("SuperOffice:3") && err.contains("many"),
            "{err}"
        );
    }

    #[test]
    fn round_trips() {
        for s in [
            "[I:23]",
            "[F:1.5]",
            "[D:06/19/2019]",
            "[DT:06/19/2019 14:35:56]",
        ] {
            let v = decode(s);
            assert_eq!(encode(&v, kind_of(s)).unwrap(), json!(s), "{s}");
        }
    }
}
