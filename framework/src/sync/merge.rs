//! Field-level three-way merge: the engine's model of change.
//!
//! For one linked record on one connection there are three versions of each mapped field,
//! all in the hub's shape: the *base* (what the hub and that application last agreed), the
//! application's value and the hub's value. A side changed a field when its value differs
//! from the base. A field changed on one side flows to the other; only a field changed on
//! both sides to different values is a conflict, settled by the entity's policy. A side
//! that does not carry a field (absent, not null) says nothing about it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::ConflictPolicy;
use crate::mapping::{MappedField, Mapping};

/// Mapped field values by field name (a mapping's hub path: `email`, `address.city`).
pub type Fields = BTreeMap<String, Value>;

pub use crate::store::hub::{FieldTimes, EVERY_FIELD};

/// The side a settled conflict went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    Hub,
    Application,
}

impl Winner {
    pub fn as_str(self) -> &'static str {
        match self {
            Winner::Hub => "hub",
            Winner::Application => "application",
        }
    }
}

/// A field both sides changed to different values, and how it was settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub field: String,
    pub hub: Value,
    pub external: Value,
    pub hub_time: Option<DateTime<Utc>>,
    pub external_time: Option<DateTime<Utc>>,
    pub winner: Winner,
}

/// The three versions of a record's fields and what is known of their edit times.
pub struct Sides<'a> {
    pub base: &'a Fields,
    /// The application's values of the fields it is read for.
    pub external: &'a Fields,
    /// The hub's values of every field the mapping carries.
    pub hub: &'a Fields,
    /// The application's edit time of the record (or when Ferry first saw the change,
    /// for applications that report none).
    pub external_time: Option<DateTime<Utc>>,
    /// The hub's per-field edit times, and the record's for fields without one.
    pub hub_times: &'a FieldTimes,
    pub hub_time: Option<DateTime<Utc>>,
    pub policy: ConflictPolicy,
    /// Fields written to the application: a hub value these lack there must be pushed.
    pub outbound: &'a BTreeSet<String>,
}

/// The outcome of settling one record.
#[derive(Debug, Default, PartialEq)]
pub struct Settled {
    /// Fields the hub takes from the application.
    pub to_hub: Fields,
    /// The new base: every field both sides now agree on takes the agreed value.
    pub base: Fields,
    pub conflicts: Vec<Conflict>,
    /// The application lacks a hub value it is written for (a hub edit, or a conflict the
    /// hub won): the push must send it.
    pub push: bool,
}

fn base_of<'a>(base: &'a Fields, f: &str) -> &'a Value {
    base.get(f).unwrap_or(&Value::Null)
}

/// Whether two values of a field say the same. No value and empty text say the same: an
/// application that keeps an emptied field as `""` (a SuperOffice user-defined field)
/// and one that keeps it as nothing (a WorkflowMax custom field without a value) must
/// not hand the difference back and forth as an edit.
pub fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| v.is_null() || v.as_str() == Some("");
    a == b || (empty(a) && empty(b))
}

/// Settles one record (see the module documentation).
pub fn settle(s: &Sides<'_>) -> Settled {
    let mut out = Settled {
        base: s.base.clone(),
        ..Settled::default()
    };
    for (f, ext) in s.external {
        let base = base_of(s.base, f);
        if same(ext, base) {
            continue;
        }
        let hub = s.hub.get(f);
        let hub_changed = hub.is_some_and(|h| !same(h, base));
        let take = match hub {
            Some(h) if hub_changed && !same(h, ext) => {
                let hub_time = field_time(s.hub_times, f, s.hub_time);
                let winner = winner(s.policy, s.external_time, hub_time);
                out.conflicts.push(Conflict {
                    field: f.clone(),
                    hub: h.clone(),
                    external: ext.clone(),
                    hub_time,
                    external_time: s.external_time,
                    winner,
                });
                winner == Winner::Application
            }
            Some(h) if same(h, ext) => false,
            _ => true,
        };
        if take {
            out.to_hub.insert(f.clone(), ext.clone());
        }
    }
    let hub_after = |f: &str| out.to_hub.get(f).or_else(|| s.hub.get(f));
    for (f, ext) in s.external {
        if same(hub_after(f).unwrap_or(&Value::Null), ext) {
            out.base.insert(f.clone(), ext.clone());
        }
    }
    // The application's value that lost is settled: it is not an edit to weigh again (a
    // later pull would otherwise re-decide it by a newer record time, one an edit to
    // another field gave the record); the hub's value stays pending for the application.
    for c in out.conflicts.iter().filter(|c| c.winner == Winner::Hub) {
        out.base.insert(c.field.clone(), c.external.clone());
    }
    out.push = s.outbound.iter().any(|f| {
        hub_after(f).is_some_and(|h| {
            !same(h, base_of(&out.base, f)) && !s.external.get(f).is_some_and(|e| same(e, h))
        })
    });
    out
}

/// Who wins a true conflict under `policy`. `newest` compares the two edits' times as
/// their sources reported them; a tie, or a side without a time, goes to the application.
pub fn winner(
    policy: ConflictPolicy,
    external: Option<DateTime<Utc>>,
    hub: Option<DateTime<Utc>>,
) -> Winner {
    match policy {
        ConflictPolicy::Hub => Winner::Hub,
        ConflictPolicy::External => Winner::Application,
        ConflictPolicy::Newest => match (external, hub) {
            (Some(e), Some(h)) if h > e => Winner::Hub,
            _ => Winner::Application,
        },
    }
}

/// The hub fields the push must send: those whose hub value differs from the base.
pub fn hub_changes<'a>(
    hub: &'a Fields,
    base: &Fields,
    outbound: &'a BTreeSet<String>,
) -> BTreeSet<String> {
    outbound
        .iter()
        .filter(|f| hub.get(*f).is_some_and(|h| !same(h, base_of(base, f))))
        .cloned()
        .collect()
}

/// The fields a mapping carries, and how to read and write them on hub-shaped values.
pub struct FieldSet {
    fields: Vec<MappedField>,
    pub outbound: BTreeSet<String>,
}

impl FieldSet {
    pub fn of(mapping: &Mapping) -> FieldSet {
        let fields = mapping.hub_fields();
        let outbound = fields
            .iter()
            .filter(|f| f.outbound)
            .map(|f| f.name.clone())
            .collect();
        FieldSet { fields, outbound }
    }

    /// The values a hub-shaped record holds, of the fields read from the application
    /// (`inbound_only`) or of every field.
    pub fn project(&self, data: &Value, inbound_only: bool) -> Fields {
        self.fields
            .iter()
            .filter(|f| f.inbound || !inbound_only)
            .filter_map(|f| Some((f.name.clone(), f.path.get(data)?.clone())))
            .collect()
    }

    /// Writes `values` into a hub record.
    pub fn apply(&self, data: &mut Value, values: &Fields) {
        for f in &self.fields {
            if let Some(v) = values.get(&f.name) {
                f.path.set(data, v.clone());
            }
        }
    }
}

/// A field's edit time: its own, else its top-level field's (an operator's write records
/// top-level fields), else the one every field of the record took when it was created
/// ([`EVERY_FIELD`]), else the record's.
pub fn field_time(
    times: &FieldTimes,
    field: &str,
    record: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let root = field.split(['.', '[']).next().unwrap_or(field);
    times
        .get(field)
        .or_else(|| times.get(root))
        .or_else(|| times.get(EVERY_FIELD))
        .copied()
        .or(record)
}

/// A base as stored on an id map (a JSON object keyed by field name).
pub fn base_from_text(text: Option<&str>) -> Option<Fields> {
    let v: Map<String, Value> = serde_json::from_str(text?).ok()?;
    Some(v.into_iter().collect())
}

pub fn base_to_text(base: &Fields) -> String {
    serde_json::to_string(base).unwrap_or_default()
}

impl FieldSet {
    /// The base text of a hub-shaped record's fields read from the application, written
    /// straight from the record (a first sync writes one per record).
    pub fn base_text(&self, data: &Value) -> String {
        let fields: BTreeMap<&str, &Value> = self
            .fields
            .iter()
            .filter(|f| f.inbound)
            .filter_map(|f| Some((f.name.as_str(), f.path.get(data)?)))
            .collect();
        serde_json::to_string(&fields).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    fn at(s: u32) -> Option<DateTime<Utc>> {
        Some(DateTime::from_timestamp(1_800_000_000 + s as i64, 0).unwrap())
    }

    fn run(
        base: Value,
        ext: Value,
        hub: Value,
        policy: ConflictPolicy,
        times: (u32, u32),
    ) -> Settled {
        let outbound: BTreeSet<String> = ["name", "phone", "email"].map(String::from).into();
        settle(&Sides {
            base: &fields(base),
            external: &fields(ext),
            hub: &fields(hub),
            external_time: at(times.0),
            hub_times: &FieldTimes::new(),
            hub_time: at(times.1),
            policy,
            outbound: &outbound,
        })
    }

    #[test]
    fn edits_to_different_fields_both_survive() {
        let s = run(
            json!({"name": "A", "phone": "1"}),
            json!({"name": "A", "phone": "2"}),
            json!({"name": "B", "phone": "1"}),
            ConflictPolicy::Hub,
            (0, 0),
        );
        assert_eq!(s.to_hub, fields(json!({"phone": "2"})));
        assert!(s.conflicts.is_empty());
        assert!(
            s.push,
            "the hub's rename still has to reach the application"
        );
        assert_eq!(s.base, fields(json!({"name": "A", "phone": "2"})));
    }

    #[test]
    fn a_true_conflict_goes_by_policy_and_newest_by_source_times() {
        let base = json!({"name": "A"});
        let (ext, hub) = (json!({"name": "E"}), json!({"name": "H"}));
        let hub_wins = run(
            base.clone(),
            ext.clone(),
            hub.clone(),
            ConflictPolicy::Hub,
            (0, 0),
        );
        assert!(hub_wins.to_hub.is_empty() && hub_wins.push);
        assert_eq!(hub_wins.conflicts[0].winner, Winner::Hub);
        let newer_hub = run(
            base.clone(),
            ext.clone(),
            hub.clone(),
            ConflictPolicy::Newest,
            (1, 2),
        );
        assert_eq!(newer_hub.conflicts[0].winner, Winner::Hub);
        let tie = run(base, ext, hub, ConflictPolicy::Newest, (2, 2));
        assert_eq!(tie.conflicts[0].winner, Winner::Application);
        assert_eq!(tie.to_hub, fields(json!({"name": "E"})));
        assert!(!tie.push);
    }

    #[test]
    fn the_same_edit_on_both_sides_is_no_conflict_and_an_absent_field_says_nothing() {
        let s = run(
            json!({"name": "A", "phone": "1"}),
            json!({"name": "B"}),
            json!({"name": "B", "phone": "1"}),
            ConflictPolicy::Hub,
            (0, 0),
        );
        assert!(s.conflicts.is_empty() && s.to_hub.is_empty() && !s.push);
        assert_eq!(s.base, fields(json!({"name": "B", "phone": "1"})));
    }

    #[test]
    fn empty_text_and_no_value_are_the_same_value() {
        // An application that keeps an emptied field as nothing, against a hub that holds
        // "" (another application's empty field): no edit, no push.
        let s = run(
            json!({"name": "A", "phone": ""}),
            json!({"name": "A", "phone": null}),
            json!({"name": "A", "phone": ""}),
            ConflictPolicy::Newest,
            (2, 1),
        );
        assert!(
            s.conflicts.is_empty() && s.to_hub.is_empty() && !s.push,
            "{s:?}"
        );
        // Emptying a field is still an edit that flows.
        let s = run(
            json!({"name": "A", "phone": "1"}),
            json!({"name": "A", "phone": ""}),
            json!({"name": "A", "phone": "1"}),
            ConflictPolicy::Newest,
            (2, 1),
        );
        assert_eq!(s.to_hub, fields(json!({"phone": ""})));
        assert_eq!(
            hub_changes(
                &fields(json!({"phone": null})),
                &fields(json!({"phone": ""})),
                &["phone".to_string()].into()
            )
            .len(),
            0
        );
    }
}
