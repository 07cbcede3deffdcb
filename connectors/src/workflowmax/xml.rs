//! WorkflowMax's XML, read into and written from JSON values so mappings work on it like on
//! any other record. Reading keeps every element (repeated ones and the documented list
//! containers become lists); writing follows the documented element order and escapes every
//! value. A response whose `Status` is not `OK` (in any case) is an error even with HTTP 200.

use std::collections::HashMap;

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Value};

use ferry_framework::http::ApiError;

/// Elements whose children are always a list, even with one child.
const LISTS: &[(&str, &str)] = &[
    ("Clients", "Client"),
    ("Contacts", "Contact"),
    ("CustomFields", "CustomField"),
    ("CustomFieldDefinitions", "CustomFieldDefinition"),
    ("Notes", "Note"),
    ("Positions", "Position"),
];

fn list_item(container: &str) -> Option<&'static str> {
    LISTS
        .iter()
        .find(|(c, _)| *c == container)
        .map(|(_, item)| *item)
}

/// An element being read: its name, text and children so far.
struct Open {
    name: String,
    text: String,
    children: Vec<(String, Value)>,
}

impl Open {
    fn finish(self) -> (String, Value) {
        let value = if list_item(&self.name).is_some() {
            Value::Array(self.children.into_iter().map(|(_, v)| v).collect())
        } else if self.children.is_empty() {
            Value::String(self.text.trim().to_string())
        } else {
            let mut repeated: HashMap<&str, usize> = HashMap::new();
            for (k, _) in &self.children {
                *repeated.entry(k.as_str()).or_default() += 1;
            }
            let repeated: Vec<String> = repeated
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(k, _)| k.to_string())
                .collect();
            let mut map = Map::new();
            for (k, v) in self.children {
                if repeated.contains(&k) {
                    if let Value::Array(list) =
                        map.entry(k).or_insert_with(|| Value::Array(Vec::new()))
                    {
                        list.push(v);
                    }
                } else {
                    map.insert(k, v);
                }
            }
            Value::Object(map)
        };
        (self.name, value)
    }
}

/// Deepest element nesting accepted. WorkflowMax's documents nest a handful of levels; a
/// much deeper answer is hostile or broken, and its value would overflow the stack when it
/// is later walked or dropped recursively.
pub const MAX_DEPTH: usize = 64;

/// Parses a document into `(root name, value)`. Errors say where the XML broke; elements
/// nested deeper than [`MAX_DEPTH`] are an error.
pub fn parse(text: &str) -> Result<(String, Value), String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("invalid XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(_) if stack.len() >= MAX_DEPTH => {
                return Err(format!(
                    "elements nested deeper than {MAX_DEPTH} levels at byte {}",
                    reader.buffer_position()
                ));
            }
            Event::Start(e) => stack.push(Open {
                name: e.name().as_ref().to_string(),
                text: String::new(),
                children: Vec::new(),
            }),
            Event::Empty(e) => {
                let name = e.name().as_ref().to_string();
                let done = Open {
                    name,
                    text: String::new(),
                    children: Vec::new(),
                }
                .finish();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                let Some(top) = stack.last_mut() else {
                    continue;
                };
                let name = r.xml10_content();
                if let Some(c) = r
                    .resolve_char_ref()
                    .map_err(|e| format!("bad character reference &{name};: {e}"))?
                {
                    top.text.push(c);
                } else if let Some(s) = resolve_predefined_entity(&name) {
                    top.text.push_str(s);
                } else {
                    return Err(format!("unknown entity &{name}; in <{}>", top.name));
                }
            }
            Event::End(_) => {
                let Some(open) = stack.pop() else {
                    return Err("closing tag without an opening one".into());
                };
                let done = open.finish();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("the document ends inside <{}>", open.name));
    }
    root.ok_or_else(|| "the response holds no XML element".into())
}

/// Reads a `<Response>`: its payload elements when `Status` is `OK`, else the classified
/// error from `ErrorDescription`.
pub fn response(text: &str) -> Result<Map<String, Value>, ApiError> {
    let (root, value) = parse(text).map_err(ApiError::Malformed)?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::Malformed(format!("<{root}> holds no elements")));
    };
    if root != "Response" {
        return Err(ApiError::Malformed(format!(
            "expected a <Response> document, got <{root}>"
        )));
    }
    let status = fields
        .remove("Status")
        .and_then(|s| s.as_str().map(str::to_string));
    if status
        .as_deref()
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("ok"))
    {
        return Ok(fields);
    }
    let description = fields
        .get("ErrorDescription")
        .and_then(Value::as_str)
        .unwrap_or("no ErrorDescription given")
        .to_string();
    let status = status.unwrap_or_else(|| "missing".into());
    Err(classify(&status, &description))
}

/// An error envelope's class, from its whole `ErrorDescription`, never from a word inside
/// it (a company called "Token Ltd" is not an authentication failure, and a custom field
/// that is "not found" is not a deleted client):
/// - the seed's documented authentication error, "Invalid access token" (SEED "API Error
///   Responses"): refresh and retry once;
/// - "Client not found" and the like, a record the call addressed that is gone;
/// - "Rate limit exceeded": wait and retry;
/// - anything else (the seed's "Invalid field value", every validation message): the
///   record's own error, kept on its id map.
///
/// HTTP statuses (401, 403, 404, 429, 5xx) are classified by status before this.
pub fn classify(status: &str, description: &str) -> ApiError {
    let message = format!("Status {status}: {description}");
    let said = description.trim().trim_end_matches('.').to_lowercase();
    let gone = ["client", "contact", "record", "job", "staff"]
        .iter()
        .any(|e| {
            said.strip_prefix(e)
                .is_some_and(|rest| rest.ends_with(" not found"))
        });
    match said.as_str() {
        "invalid access token" => ApiError::Auth(message),
        "rate limit exceeded" => ApiError::RateLimited {
            retry_after: None,
            message,
        },
        _ if gone => ApiError::NotFound(message),
        _ => ApiError::Permanent(message),
    }
}

/// Writes `<name>` from a JSON value: an object's `order`ed elements first, then any others
/// by name; a list under a container name as its items, any other list as repeated
/// elements. Null values are left out, so an update leaves them as they are.
pub fn element(name: &str, value: &Value, order: &[&str], out: &mut String) {
    match (value, list_item(name)) {
        (Value::Null, _) => return,
        (Value::Array(items), None) => {
            for i in items {
                element(name, i, order, out);
            }
            return;
        }
        _ => {}
    }
    out.push('<');
    out.push_str(name);
    out.push('>');
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                (
                    order.iter().position(|o| o == k).unwrap_or(usize::MAX),
                    (*k).clone(),
                )
            });
            for k in keys {
                element(k, &map[k], order, out);
            }
        }
        Value::Array(items) => {
            let item = list_item(name).unwrap_or(name);
            for i in items {
                element(item, i, order, out);
            }
        }
        Value::String(s) => out.push_str(&escape(s.as_str())),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Null => {}
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Whether XML 1.0 can hold `c` (W3C XML 1.0 §2.2, production [2] `Char`); no escaping
/// makes the others legal, so they cannot be sent at all.
pub fn legal_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// The first text in `value` XML 1.0 cannot carry, as "field: U+000B"; `None` when all can.
pub fn unsendable(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s
            .chars()
            .find(|c| !legal_char(*c))
            .map(|c| format!("U+{:04X}", c as u32)),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, v)| unsendable(v).map(|e| format!("{k}: {e}"))),
        Value::Array(a) => a.iter().find_map(unsendable),
        _ => None,
    }
}

/// A whole document: `<name>…</name>`.
pub fn document(name: &str, value: &Value, order: &[&str]) -> String {
    let mut out = String::new();
    element(name, value, order, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_are_classified_by_their_whole_description() {
        let class = |d: &str| match classify("ERROR", d) {
            ApiError::Auth(_) => "auth",
            ApiError::NotFound(_) => "gone",
            ApiError::RateLimited { .. } => "wait",
            ApiError::Permanent(_) => "record",
            _ => "other",
        };
        assert_eq!(class("Invalid access token"), "auth");
        assert_eq!(class("Invalid access token."), "auth");
        assert_eq!(class("Client not found"), "gone");
        assert_eq!(class("Client \"Harbour\" not found"), "gone");
        assert_eq!(class("Rate limit exceeded"), "wait");
        for record in [
            "Invalid field value",
            "Name 'Token Ltd' is already taken",
            "The token field is required",
            "Custom field LinkedIn not found",
            "Unauthorized characters in Name",
        ] {
            assert_eq!(class(record), "record", "{record}");
        }
    }

    #[test]
    fn round_trips_special_characters_and_lists() {
        let v = json!({"UUID": "u1", "Name": "Tom & Jerry <\"Ltd\"> 'x'", "Contacts": [{"UUID": "c1", "Name": "A"}]});
        let xml = document("Client", &v, &["UUID", "Name"]);
        assert!(xml.starts_with("<Client><UUID>u1</UUID><Name>Tom &amp; Jerry &lt;&quot;Ltd&quot;&gt; &apos;x&apos;</Name>"), "{xml}");
        let (root, back) = parse(&xml).unwrap();
        assert_eq!(root, "Client");
        assert_eq!(back, v);
    }

    #[test]
    fn status_other_than_ok_is_an_error_in_any_case() {
        let ok =
            response("<Response><Status>ok</Status><Client><UUID>x</UUID></Client></Response>");
        assert!(ok.is_ok());
        let err = response("<Response><Status>ERROR</Status><ErrorDescription>Client not found</ErrorDescription></Response>");
        assert!(matches!(err, Err(ApiError::NotFound(_))), "{err:?}");
        let err = response("<Response><Status>Error</Status><ErrorDescription>Invalid field value</ErrorDescription></Response>");
        assert!(matches!(err, Err(ApiError::Permanent(_))), "{err:?}");
        let bad = response("<Response><Status>OK</Status><Client><Name>x</Client>");
        assert!(matches!(bad, Err(ApiError::Malformed(_))), "{bad:?}");
    }
}
