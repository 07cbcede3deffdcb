//! The part of reading a page that needs no database: records split into their parts, ids
//! checked, duplicates folded and records mapped to the hub. Pure, so a listing runs it on
//! the runtime as each page arrives, while the page before is written.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::support::{content_hash, PageRefs};
use crate::entity::{EntityDef, ExternalClient, Fetched, SplitFn};
use crate::mapping::{MapError, Mapping, RefResolver};

/// What one part (an entity, or a part of a complex one) needs to prepare its records;
/// owned, so pages are prepared on the runtime as they arrive.
#[derive(Clone)]
pub(super) struct Part {
    pub client: Arc<dyn ExternalClient>,
    pub def: EntityDef,
    pub mapping: Arc<Mapping>,
}

/// One page, prepared for each part.
pub(super) struct PreparedPage {
    pub parts: Vec<Prepared>,
    /// Sub-record id → its parent's id, for the parts after the first.
    pub parents: HashMap<String, String>,
}

/// One part's records of a page.
#[derive(Default)]
pub(super) struct Prepared {
    /// Records as listed, duplicates included.
    pub listed: usize,
    /// Records with an id, each once (a record listed twice: the later copy).
    pub good: Vec<Ready>,
    /// Records the application could not give: `(id, error)`.
    pub bad: Vec<(String, String)>,
    /// Records without an id, and records unreadable without one: their errors.
    pub unreadable: Vec<String>,
}

pub(super) struct Ready {
    pub id: String,
    pub record: Value,
    /// `(hub entity, external id)` of each record it references.
    pub refs: Vec<(String, String)>,
    /// Its hub values and their hash, worked out ahead when it references nothing (the
    /// page's links are read later, with the rest).
    pub mapped: Option<Result<(Value, String), MapError>>,
    /// Likewise its values for a new hub record, when its mapping has creation-only rules.
    pub created: Option<Result<Value, MapError>>,
}

/// Splits a page into its parts' records and prepares each part's.
pub(super) fn prepare_page(
    parts: &[Part],
    split: Option<SplitFn>,
    records: Vec<Fetched>,
) -> PreparedPage {
    let mut per_part: Vec<Vec<Fetched>> = parts.iter().map(|_| Vec::new()).collect();
    let mut parents: HashMap<String, String> = HashMap::new();
    for f in records {
        match (split, f) {
            (Some(split), Fetched::Record(r)) => {
                let parent = parts[0].client.record_id(&parts[0].def, &r);
                for (name, sub) in split(&r) {
                    let Some(k) = parts.iter().position(|p| p.def.name == name) else {
                        continue;
                    };
                    if let (true, Some(parent), Some(id)) = (
                        k > 0,
                        &parent,
                        parts[k].client.record_id(&parts[k].def, &sub),
                    ) {
                        parents.insert(id, parent.clone());
                    }
                    per_part[k].push(Fetched::Record(sub));
                }
            }
            (_, f) => per_part[0].push(f),
        }
    }
    PreparedPage {
        parts: parts
            .iter()
            .zip(per_part)
            .map(|(p, recs)| prepare(p, recs))
            .collect(),
        parents,
    }
}

fn prepare(p: &Part, records: Vec<Fetched>) -> Prepared {
    let mut out = Prepared {
        listed: records.len(),
        good: Vec::with_capacity(records.len()),
        ..Prepared::default()
    };
    let mut at: HashMap<String, usize> = HashMap::with_capacity(records.len());
    for f in records {
        match f {
            Fetched::Record(r) => match (p.client.record_id(&p.def, &r), damaged_text(&r)) {
                (Some(id), Some(field)) => out.bad.push((id, format!(
                    "field `{field}` holds text that was not valid UTF-8 in the application's answer; the record is not synced until it is good again"
                ))),
                (Some(id), None) => match at.get(&id) {
                    Some(&i) => out.good[i].record = r,
                    None => {
                        at.insert(id.clone(), out.good.len());
                        out.good.push(Ready {
                            id,
                            record: r,
                            refs: Vec::new(),
                            mapped: None,
                            created: None,
                        });
                    }
                },
                (None, _) => out.unreadable.push("record without an id".into()),
            },
            Fetched::Bad {
                id: Some(id),
                error,
            } => out.bad.push((id, error)),
            Fetched::Bad { id: None, error } => out.unreadable.push(error),
        }
    }
    let none = PageRefs::default();
    let creating = p.mapping.has_create_rules();
    for g in &mut out.good {
        g.refs = p.mapping.external_refs(&g.record);
        if g.refs.is_empty() {
            g.mapped = Some(to_hub(&p.mapping, &g.record, &none));
            if creating {
                g.created = Some(p.mapping.to_hub_new(&g.record, &none));
            }
        }
    }
    out
}

/// A record's hub values with their hash, taken before list items are keyed: item ids are
/// Ferry's, not the application's.
pub(super) fn to_hub(
    mapping: &Mapping,
    record: &Value,
    refs: &dyn RefResolver,
) -> Result<(Value, String), MapError> {
    let v = mapping.to_hub(record, refs)?;
    let hash = content_hash(&v);
    Ok((v, hash))
}

/// The path of the first string in `v` holding U+FFFD, the replacement character an answer
/// gets where its bytes were not UTF-8 ([`crate::http::read_capped`]): such text is never
/// stored in the hub or passed on to other applications.
fn damaged_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.contains('\u{FFFD}').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| damaged_text(x).map(|p| format!("[{i}]{}", dotted(&p)))),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, x)| damaged_text(x).map(|p| format!("{k}{}", dotted(&p)))),
        _ => None,
    }
}

fn dotted(rest: &str) -> String {
    match rest.chars().next() {
        None | Some('[') => rest.to_string(),
        Some(_) => format!(".{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::damaged_text;
    use serde_json::json;

    #[test]
    fn damaged_text_is_found_with_its_path() {
        assert_eq!(damaged_text(&json!({"Name": "Café"})), None);
        let v = json!({"Name": "ok", "Emails": [{"Value": "a"}, {"Value": "caf\u{FFFD}"}]});
        assert_eq!(damaged_text(&v).as_deref(), Some("Emails[1].Value"));
    }
}
