//! Keyed lists: sub-records inside a record (invoice lines, a client's addresses) matched by
//! id, not position. Hub items carry their own id (the hub model's `key`); each connection
//! records which external sub-record id goes with which hub item id, so a later update
//! addresses the same sub-record even after the list was reordered, and a new hub item goes
//! out without an id (the application creates it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Mapping, Rule};
use crate::entity::id_text;

/// Per keyed list (by hub field name): hub item id → external item id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemIds(pub BTreeMap<String, BTreeMap<String, String>>);

/// A keyed rule's parts: hub list field, hub key, external key.
fn parts(r: &Rule) -> Option<(String, &str, &str)> {
    let (hk, ek) = r.key.as_ref()?;
    Some((r.hub.as_ref()?.to_string(), hk.as_str(), ek.as_str()))
}

impl Mapping {
    /// Whether any list of this mapping is keyed (id maps then record item ids).
    pub fn has_keyed_lists(&self) -> bool {
        self.rules.iter().any(|r| r.key.is_some())
    }

    /// After [`Mapping::to_hub`]: gives each hub item of a keyed list the hub id recorded for
    /// its external item's id, or a new one, and records the pairs. Pairs of sub-records no
    /// longer in the application's list are dropped.
    pub fn key_hub_items(&self, external: &Value, hub: &mut Value, ids: &mut ItemIds) {
        for r in self.rules.iter().filter(|r| r.to_hub_dir) {
            let Some((field, hk, ek)) = parts(r) else {
                continue;
            };
            let ext_items = r
                .external
                .as_ref()
                .and_then(|p| p.get(external))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let Some(Value::Array(hub_items)) = hub.get_mut(&field) else {
                continue;
            };
            let old = ids.0.remove(&field).unwrap_or_default();
            let mut pairs = BTreeMap::new();
            for (i, item) in hub_items.iter_mut().enumerate() {
                let Some(obj) = item.as_object_mut() else {
                    continue;
                };
                let ext_id = id_text(ext_items.get(i).and_then(|x| x.get(ek)));
                let known = ext_id
                    .as_ref()
                    .and_then(|x| old.iter().find(|(_, e)| *e == x).map(|(h, _)| h.clone()));
                let hub_id = known.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                obj.insert(hk.to_string(), hub_id.clone().into());
                if let Some(x) = ext_id {
                    pairs.insert(hub_id, x);
                }
            }
            ids.0.insert(field, pairs);
        }
    }

    /// After [`Mapping::to_external`]: gives each outgoing item the external id recorded for
    /// its hub item; items without one go out without (new sub-records).
    pub fn key_external_items(&self, hub: &Value, payload: &mut Value, ids: &ItemIds) {
        for r in self.rules.iter().filter(|r| r.to_external_dir) {
            let (Some((field, hk, ek)), Some(path)) = (parts(r), r.external.as_ref()) else {
                continue;
            };
            let hub_items = hub.get(&field).and_then(Value::as_array);
            let Some(Value::Array(mut out)) = path.get(payload).cloned() else {
                continue;
            };
            let pairs = ids.0.get(&field);
            for (i, item) in out.iter_mut().enumerate() {
                let hub_id = id_text(hub_items.and_then(|h| h.get(i)).and_then(|h| h.get(hk)));
                let ext = hub_id.and_then(|h| pairs.and_then(|p| p.get(&h)).cloned());
                if let (Some(ext), Some(obj)) = (ext, item.as_object_mut()) {
                    obj.insert(ek.to_string(), ext.into());
                }
            }
            path.set(payload, Value::Array(out));
        }
    }

    /// After a write: keeps the pairs whose sub-records are still there and pairs the ids
    /// the application gave new sub-records, in order, with the hub items sent without one.
    pub fn learn_item_ids(&self, hub: &Value, stored: &Value, ids: &mut ItemIds) {
        for r in self.rules.iter().filter(|r| r.to_external_dir) {
            let (Some((field, hk, ek)), Some(path)) = (parts(r), r.external.as_ref()) else {
                continue;
            };
            let list = |v: Option<&Value>, key: &str| -> Vec<String> {
                v.and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|i| id_text(i.get(key))).collect())
                    .unwrap_or_default()
            };
            let stored_ids = list(path.get(stored), ek);
            let hub_ids = list(hub.get(&field), hk);
            let pairs = ids.0.entry(field).or_default();
            pairs.retain(|h, e| hub_ids.contains(h) && stored_ids.contains(e));
            let new_ext: Vec<&String> = stored_ids
                .iter()
                .filter(|e| !pairs.values().any(|p| p == *e))
                .collect();
            let new_hub: Vec<&String> =
                hub_ids.iter().filter(|h| !pairs.contains_key(*h)).collect();
            for (h, e) in new_hub.into_iter().zip(new_ext) {
                pairs.insert(h.clone(), e.clone());
            }
        }
    }
}
