//! Small pieces the pull and push halves share: content hashes, merging, reference
//! resolution from one batch query, and the per-page id map lookups.

use std::collections::HashMap;

use anyhow::Result;
use serde_json::Value;

use crate::mapping::{Mapping, RefResolver};
pub use crate::store::hub::content_hash;
use crate::store::{AnyConnection, Store};

/// Overlays `patch` on `base`: present keys win (null included), absent keys keep `base`.
/// Lists merge item by item, as a mapping writes them (`Emails[0].Value`): the patch's n-th
/// item overlays the base's n-th, and items the patch does not reach stay, with every key
/// the patch does not name (a second e-mail and the first one's description survive an
/// update of the first address).
pub fn merge(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out = b.clone();
            for (k, v) in p {
                let merged = match out.get(k) {
                    Some(old) => merge(old, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(p)) if !p.is_empty() => {
            let mut out = b.clone();
            for (i, v) in p.iter().enumerate() {
                match out.get_mut(i) {
                    Some(old) => *old = merge(old, v),
                    None => out.push(v.clone()),
                }
            }
            Value::Array(out)
        }
        (_, p) => p.clone(),
    }
}

/// Linked references of one page: `(hub entity, external id) <-> hub id`.
#[derive(Default)]
pub struct PageRefs {
    to_hub: HashMap<(String, String), String>,
    to_external: HashMap<(String, String), String>,
}

impl RefResolver for PageRefs {
    fn hub_id(&self, entity: &str, external_id: &str) -> Option<String> {
        self.to_hub
            .get(&(entity.to_string(), external_id.to_string()))
            .cloned()
    }
    fn external_id(&self, entity: &str, hub_id: &str) -> Option<String> {
        self.to_external
            .get(&(entity.to_string(), hub_id.to_string()))
            .cloned()
    }
}

impl PageRefs {
    /// Loads every link the page's references need, one query per referenced entity.
    pub fn load(
        c: &mut AnyConnection,
        connection_id: i64,
        wanted: Vec<(String, String)>,
        by_external: bool,
    ) -> Result<PageRefs> {
        let mut grouped: HashMap<String, Vec<String>> = HashMap::new();
        for (entity, id) in wanted {
            grouped.entry(entity).or_default().push(id);
        }
        let mut refs = PageRefs::default();
        for (entity, ids) in grouped {
            let (ext, hub) = if by_external {
                (ids, Vec::new())
            } else {
                (Vec::new(), ids)
            };
            for (e, h) in Store::linked_pairs(c, connection_id, &entity, &ext, &hub)? {
                refs.to_hub.insert((entity.clone(), e.clone()), h.clone());
                refs.to_external.insert((entity.clone(), h), e);
            }
        }
        Ok(refs)
    }

    /// Adds links learnt during the page (records created a moment ago).
    pub fn add(&mut self, entity: &str, external_id: &str, hub_id: &str) {
        self.to_hub.insert(
            (entity.to_string(), external_id.to_string()),
            hub_id.to_string(),
        );
        self.to_external.insert(
            (entity.to_string(), hub_id.to_string()),
            external_id.to_string(),
        );
    }
}

/// The hub-shaped projection of an external record, hashed: what "the application's
/// version" of a record is compared by. Falls back to the raw record when it cannot map.
pub fn external_fingerprint(mapping: &Mapping, record: &Value, refs: &dyn RefResolver) -> String {
    match mapping.to_hub(record, refs) {
        Ok(v) => content_hash(&v),
        Err(_) => content_hash(record),
    }
}
