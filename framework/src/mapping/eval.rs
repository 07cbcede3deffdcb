//! Applying a checked mapping to a record, in either direction.

use std::fmt;

use serde_json::{Map, Value};

use super::{Mapping, Rule, Step};
use crate::entity::id_text;

/// Translates references between the hub's ids and one connection's external ids.
pub trait RefResolver {
    fn hub_id(&self, hub_entity: &str, external_id: &str) -> Option<String>;
    fn external_id(&self, hub_entity: &str, hub_id: &str) -> Option<String>;
}

/// Why a record could not be mapped.
#[derive(Debug, Clone, PartialEq)]
pub enum MapError {
    /// A referenced record is not linked on this connection yet: defer and retry later.
    Unresolved {
        entity: String,
        id: String,
        field: String,
    },
    /// The record's data does not fit the mapping.
    Invalid { field: String, message: String },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::Unresolved { entity, id, field } => {
                write!(
                    f,
                    "field `{field}`: referenced {entity} {id} is not linked yet"
                )
            }
            MapError::Invalid { field, message } => write!(f, "field `{field}`: {message}"),
        }
    }
}

impl std::error::Error for MapError {}

/// A hub field a mapping carries (see [`Mapping::hub_fields`]).
#[derive(Debug, Clone)]
pub struct MappedField {
    /// The path as written in the mapping: the field's name in bases and conflicts.
    pub name: String,
    pub path: super::Path,
    /// Read from the application into the hub.
    pub inbound: bool,
    /// Written from the hub to the application.
    pub outbound: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    ToHub,
    ToExternal,
}

impl Mapping {
    /// Maps an external record to the hub fields it carries. Absent source values are left
    /// out, so merging the result never overwrites with "absent".
    pub fn to_hub(&self, external: &Value, refs: &dyn RefResolver) -> Result<Value, MapError> {
        apply(&self.rules, external, refs, Dir::ToHub, false)
    }

    /// Like [`Mapping::to_hub`] for a record about to be created in the hub: creation-only
    /// rules apply too.
    pub fn to_hub_new(&self, external: &Value, refs: &dyn RefResolver) -> Result<Value, MapError> {
        apply(&self.rules, external, refs, Dir::ToHub, true)
    }

    /// Whether creation-only rules exist: without them a new record maps like any other
    /// and needs no second pass.
    pub fn has_create_rules(&self) -> bool {
        fn any(rules: &[Rule]) -> bool {
            rules.iter().any(|r| r.create_only || any(&r.items))
        }
        any(&self.rules)
    }

    /// The external fields a record must carry for [`Mapping::to_hub`] to see everything
    /// this mapping reads: each rule's external path (a list with item rules is read
    /// whole). A connector that can list chosen columns asks for these alone.
    pub fn external_reads(&self) -> Vec<super::Path> {
        let mut out: Vec<super::Path> = Vec::new();
        for r in self.rules.iter().filter(|r| r.to_hub_dir) {
            if let Some(p) = r.external.as_ref().filter(|p| !out.contains(p)) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Maps a hub record to the external fields it carries.
    pub fn to_external(&self, hub: &Value, refs: &dyn RefResolver) -> Result<Value, MapError> {
        apply(&self.rules, hub, refs, Dir::ToExternal, false)
    }

    /// Like [`Mapping::to_external`] for a record about to be created in the application.
    pub fn to_external_new(&self, hub: &Value, refs: &dyn RefResolver) -> Result<Value, MapError> {
        apply(&self.rules, hub, refs, Dir::ToExternal, true)
    }

    /// Maps only the rules whose hub field (a [`Mapping::hub_fields`] name) is in `fields`:
    /// an update that changes what changed in the hub and leaves every other value of the
    /// application's record as its users left it, even where a rule is not invertible (a
    /// lowercased e-mail is not written back over the application's mixed-case one).
    pub fn to_external_fields(
        &self,
        hub: &Value,
        refs: &dyn RefResolver,
        fields: &std::collections::BTreeSet<String>,
    ) -> Result<Value, MapError> {
        let rules: Vec<Rule> = self
            .rules
            .iter()
            .filter(|r| {
                r.hub
                    .as_ref()
                    .is_some_and(|h| fields.contains(&h.to_string()))
            })
            .cloned()
            .collect();
        apply(&rules, hub, refs, Dir::ToExternal, false)
    }

    /// The hub fields this mapping carries after a record exists (creation-only rules
    /// left out), by path (`email`, `address.city`, `lines`), with whether each is read
    /// from the application (`inbound`) and written to it (`outbound`): the fields a
    /// three-way merge compares.
    pub fn hub_fields(&self) -> Vec<MappedField> {
        let mut out: Vec<MappedField> = Vec::new();
        for r in self.rules.iter().filter(|r| !r.create_only) {
            let Some(path) = &r.hub else { continue };
            let name = path.to_string();
            let inbound = r.to_hub_dir && (r.external.is_some() || r.to_hub.is_some());
            let outbound = r.to_external_dir && r.external.is_some();
            match out.iter_mut().find(|f| f.name == name) {
                Some(f) => {
                    f.inbound |= inbound;
                    f.outbound |= outbound;
                }
                None => out.push(MappedField {
                    path: path.clone(),
                    name,
                    inbound,
                    outbound,
                }),
            }
        }
        out
    }

    /// External ids referenced by an external record, as `(hub entity, external id)`, so they
    /// can be resolved in one query per page.
    pub fn external_refs(&self, external: &Value) -> Vec<(String, String)> {
        collect_refs(&self.rules, external, Dir::ToHub)
    }

    /// Hub ids referenced by a hub record, as `(hub entity, hub id)`.
    pub fn hub_refs(&self, hub: &Value) -> Vec<(String, String)> {
        collect_refs(&self.rules, hub, Dir::ToExternal)
    }
}

fn paths(r: &Rule, dir: Dir) -> (Option<&super::Path>, Option<&super::Path>, Option<&Step>) {
    match dir {
        Dir::ToHub => (r.external.as_ref(), r.hub.as_ref(), r.to_hub.as_ref()),
        Dir::ToExternal => (r.hub.as_ref(), r.external.as_ref(), r.to_external.as_ref()),
    }
}

fn active(r: &Rule, dir: Dir) -> bool {
    match dir {
        Dir::ToHub => r.to_hub_dir,
        Dir::ToExternal => r.to_external_dir,
    }
}

fn collect_refs(rules: &[Rule], src: &Value, dir: Dir) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| active(r, dir)) {
        let (from, _, _) = paths(r, dir);
        let Some(v) = from.and_then(|p| p.get(src)) else {
            continue;
        };
        if let Some(entity) = &r.reference {
            if let Some(id) = id_text(Some(v)) {
                out.push((entity.clone(), id));
            }
        }
        if !r.items.is_empty() {
            for item in v.as_array().into_iter().flatten() {
                out.extend(collect_refs(&r.items, item, dir));
            }
        }
    }
    out
}

fn apply(
    rules: &[Rule],
    src: &Value,
    refs: &dyn RefResolver,
    dir: Dir,
    creating: bool,
) -> Result<Value, MapError> {
    let mut out = Value::Object(Map::new());
    for r in rules
        .iter()
        .filter(|r| active(r, dir) && (creating || !r.create_only))
    {
        let (from, to, step) = paths(r, dir);
        let Some(to) = to else { continue };
        // Named only when something goes wrong: building it per record and rule costs.
        let invalid = |message: String| MapError::Invalid {
            field: to.to_string(),
            message,
        };
        let mut v = match (step, from) {
            (Some(Step::Const(c)), _) => c.clone(),
            (_, Some(from)) => match from.get(src) {
                Some(v) => v.clone(),
                None => match &r.default {
                    Some(d) => d.clone(),
                    None => continue,
                },
            },
            (_, None) => continue,
        };
        if !r.items.is_empty() && !v.is_null() {
            let list = v
                .as_array()
                .ok_or_else(|| invalid(format!("expected a list, got {v}")))?;
            v = Value::Array(
                list.iter()
                    .map(|item| apply(&r.items, item, refs, dir, creating))
                    .collect::<Result<_, _>>()?,
            );
        }
        // Towards the hub: transform, then translate the reference; outwards the reverse,
        // so a transform can shape the external id (e.g. `to_integer`).
        if dir == Dir::ToHub {
            v = run_step(step, v).map_err(invalid)?;
        }
        if let (Some(entity), false) = (&r.reference, v.is_null()) {
            let id = id_text(Some(&v)).ok_or_else(|| invalid(format!("{v} is not a record id")))?;
            let resolved = match dir {
                Dir::ToHub => refs.hub_id(entity, &id),
                Dir::ToExternal => refs.external_id(entity, &id),
            };
            v = Value::String(resolved.ok_or_else(|| MapError::Unresolved {
                entity: entity.clone(),
                id,
                field: to.to_string(),
            })?);
        }
        if dir == Dir::ToExternal {
            v = run_step(step, v).map_err(invalid)?;
        }
        to.set(&mut out, v);
    }
    Ok(out)
}

fn run_step(step: Option<&Step>, v: Value) -> Result<Value, String> {
    match step {
        Some(Step::Transform(name, f)) => f(&v).map_err(|e| format!("transform `{name}`: {e}")),
        _ => Ok(v),
    }
}
