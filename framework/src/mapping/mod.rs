//! The mapping DSL: one YAML declaration maps a hub entity to an external entity in both
//! directions. Files are checked when loaded (hub model, the connector's declared fields,
//! transforms, references, parameters) so mistakes surface before any sync runs.

mod keyed;
pub mod model;
pub mod path;
pub mod transforms;

mod eval;

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use anyhow::Result;
use serde_json::Value;

use crate::hub::{FieldType, HubField, HubModel};
use crate::input_error;
pub use eval::{MapError, MappedField, RefResolver};
pub use keyed::ItemIds;
use model::{MappingFile, RuleDirection, RuleFile, TransformSpec};
use path::Path;

/// A checked mapping, bound to one connection's parameters.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub file: PathBuf,
    pub hub_entity: String,
    pub external_entity: String,
    /// Parameters the file declares (a connection may only set declared ones).
    pub params: Vec<String>,
    pub(crate) rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
    Transform(&'static str, fn(&Value) -> Result<Value, String>),
    Const(Value),
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub hub: Option<Path>,
    pub external: Option<Path>,
    pub to_hub_dir: bool,
    pub to_external_dir: bool,
    pub to_hub: Option<Step>,
    pub to_external: Option<Step>,
    pub default: Option<Value>,
    pub reference: Option<String>,
    pub items: Vec<Rule>,
    /// Applied only when the target record is being created.
    pub create_only: bool,
    /// A keyed list: (hub item id field, external item id field).
    pub key: Option<(String, String)>,
}

/// What a mapping is checked against, besides the hub model.
pub struct MappingTarget<'a> {
    pub hub_entity: &'a str,
    pub external_entity: &'a str,
    /// Top-level field names the connector declares for the external entity.
    pub external_fields: &'a [&'a str],
}

impl Mapping {
    /// Loads and checks `file`, binding per-connection `params` (unset ones take defaults).
    pub fn load(
        file: &FsPath,
        hub: &HubModel,
        target: &MappingTarget<'_>,
        params: &BTreeMap<String, String>,
    ) -> Result<Mapping> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| input_error!("{}: cannot read mapping: {e}", file.display()))?;
        Self::parse(file, &text, hub, target, params)
    }

    /// Loads the mapping a connector's entity names: `<mappers>/<connector>/<mapping>.yml`,
    /// checked against that entity's declared fields.
    pub fn load_for(
        mappers: &FsPath,
        connector: &str,
        def: &crate::entity::EntityDef,
        hub: &HubModel,
        params: &BTreeMap<String, String>,
    ) -> Result<Mapping> {
        let file = mappers.join(connector).join(format!("{}.yml", def.mapping));
        let target = MappingTarget {
            hub_entity: def.hub_entity,
            external_entity: def.external_entity,
            external_fields: def.external_fields,
        };
        Self::load(&file, hub, &target, params)
    }

    /// Like [`Mapping::load`] for text already in memory (`file` is used in messages).
    pub fn parse(
        file: &FsPath,
        text: &str,
        hub: &HubModel,
        target: &MappingTarget<'_>,
        params: &BTreeMap<String, String>,
    ) -> Result<Mapping> {
        let raw: MappingFile = crate::config::parse_yaml(file, text)?;
        let at = |line: u64, what: &str| format!("{}:{line}: {what}", file.display());
        if raw.hub.value != target.hub_entity {
            return Err(input_error!(
                "{}",
                at(
                    raw.hub.referenced.line(),
                    &format!(
                        "hub entity is {:?} but the connector maps {:?}",
                        raw.hub.value, target.hub_entity
                    )
                )
            ));
        }
        let hub_entity = hub.entity(&raw.hub.value).ok_or_else(|| {
            input_error!(
                "{}",
                at(
                    raw.hub.referenced.line(),
                    &format!("unknown hub entity {:?}", raw.hub.value)
                )
            )
        })?;
        if raw.external.value != target.external_entity {
            return Err(input_error!(
                "{}",
                at(
                    raw.external.referenced.line(),
                    &format!(
                        "external entity is {:?} but the connector maps {:?}",
                        raw.external.value, target.external_entity
                    )
                )
            ));
        }
        let mut bound = BTreeMap::new();
        for (name, decl) in &raw.params {
            match params.get(name).or(decl.default.as_ref()) {
                Some(v) => {
                    bound.insert(name.clone(), v.clone());
                }
                None => {
                    return Err(input_error!(
                        "{}: parameter `{name}` has no default and the connection does not set it",
                        file.display()
                    ))
                }
            }
        }
        let ctx = CheckCtx {
            file,
            hub,
            external_fields: Some(target.external_fields),
            params: &bound,
        };
        let rules = raw
            .fields
            .iter()
            .map(|r| ctx.rule(r, &hub_entity.fields))
            .collect::<Result<Vec<_>>>()?;
        Ok(Mapping {
            file: file.to_path_buf(),
            hub_entity: raw.hub.value,
            external_entity: raw.external.value,
            params: raw.params.keys().cloned().collect(),
            rules,
        })
    }

    /// Hub paths of rules that map both ways with no constant: where
    /// `to_hub(to_external(h)) == h` must hold.
    pub fn invertible_hub_fields(&self) -> Vec<(String, Option<String>)> {
        self.rules
            .iter()
            .filter(|r| r.to_hub_dir && r.to_external_dir && r.items.is_empty() && !r.create_only)
            .filter(|r| {
                !matches!(r.to_hub, Some(Step::Const(_)))
                    && !matches!(r.to_external, Some(Step::Const(_)))
            })
            .filter_map(|r| Some((r.hub.as_ref()?.to_string(), r.reference.clone())))
            .collect()
    }
}

struct CheckCtx<'a> {
    file: &'a FsPath,
    hub: &'a HubModel,
    external_fields: Option<&'a [&'a str]>,
    params: &'a BTreeMap<String, String>,
}

impl CheckCtx<'_> {
    fn err(&self, line: u64, field: &str, msg: &str) -> anyhow::Error {
        input_error!("{}:{line}: field `{field}`: {msg}", self.file.display())
    }

    fn rule(&self, r: &RuleFile, scope: &BTreeMap<String, HubField>) -> Result<Rule> {
        let line = r
            .hub
            .as_ref()
            .or(r.external.as_ref())
            .map(|s| s.referenced.line())
            .unwrap_or(0);
        let label = r
            .hub
            .as_ref()
            .or(r.external.as_ref())
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let parse = |s: &serde_saphyr::Spanned<String>| {
            Path::parse(&s.value, self.params)
                .map_err(|e| self.err(s.referenced.line(), &s.value, &e))
        };
        let hub = r.hub.as_ref().map(parse).transpose()?;
        let external = r.external.as_ref().map(parse).transpose()?;
        let step = |spec: &Option<TransformSpec>| -> Result<Option<Step>> {
            Ok(match spec {
                None => None,
                Some(TransformSpec::Const { value }) => Some(Step::Const(value.clone())),
                Some(TransformSpec::Name(n)) => {
                    let t = transforms::find(n).ok_or_else(|| {
                        self.err(line, &label, &format!("unknown transform `{n}`"))
                    })?;
                    Some(Step::Transform(t.name, t.apply))
                }
            })
        };
        let to_hub = step(&r.to_hub)?;
        let to_external = step(&r.to_external)?;
        let dir = r.direction.unwrap_or(match (&hub, &external) {
            (Some(_), Some(_)) => RuleDirection::Both,
            (Some(_), None) => RuleDirection::ToHub,
            (None, Some(_)) => RuleDirection::ToExternal,
            (None, None) => return Err(self.err(line, "?", "a rule needs `hub` or `external`")),
        });
        let (to_hub_dir, to_external_dir) = match dir {
            RuleDirection::Both => (true, true),
            RuleDirection::ToHub => (true, false),
            RuleDirection::ToExternal => (false, true),
        };
        let is_const = |s: &Option<Step>| matches!(s, Some(Step::Const(_)));
        if to_hub_dir && (hub.is_none() || (external.is_none() && !is_const(&to_hub))) {
            return Err(self.err(
                line,
                &label,
                "a rule towards the hub needs `hub` and either `external` or `to_hub: {const: ...}`",
            ));
        }
        if to_external_dir && (external.is_none() || (hub.is_none() && !is_const(&to_external))) {
            return Err(self.err(
                line,
                &label,
                "a rule towards the application needs `external` and either `hub` or `to_external: {const: ...}`",
            ));
        }
        let mut hub_field = None;
        if let Some(h) = &hub {
            hub_field = Some(lookup(scope, &h.keys()).ok_or_else(|| {
                self.err(
                    line,
                    &h.to_string(),
                    "unknown hub field (not in the hub model)",
                )
            })?);
        }
        if let (Some(e), Some(declared)) = (&external, self.external_fields) {
            if !declared.is_empty() && !declared.contains(&e.root()) {
                return Err(self.err(
                    line,
                    &e.to_string(),
                    "unknown external field (the connector does not declare it)",
                ));
            }
        }
        if let Some(target) = &r.reference {
            if self.hub.entity(target).is_none() {
                return Err(self.err(
                    line,
                    &label,
                    &format!("reference to unknown hub entity {target:?}"),
                ));
            }
            if let Some(f) = hub_field {
                if !matches!(f.kind, FieldType::Reference | FieldType::String) {
                    return Err(self.err(
                        line,
                        &label,
                        "a reference must map to a reference field",
                    ));
                }
            }
        }
        let items = match &r.items {
            None => Vec::new(),
            Some(items) => {
                let f = hub_field
                    .filter(|f| f.kind == FieldType::List)
                    .ok_or_else(|| {
                        self.err(line, &label, "`items` needs a hub field of type list")
                    })?;
                let inner = CheckCtx {
                    external_fields: None,
                    ..*self
                };
                items
                    .iter()
                    .map(|i| inner.rule(i, &f.items))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let key = match &r.key {
            None => None,
            Some(k) => {
                let declared = hub_field.and_then(|f| f.key.as_deref());
                let top = self.external_fields.is_some()
                    && hub.as_ref().is_some_and(|h| h.keys().len() == 1);
                if r.items.is_none() || !top || declared != Some(k.hub.as_str()) {
                    return Err(self.err(
                        line,
                        &label,
                        &format!(
                            "`key` needs `items` on a top-level hub list whose model declares `key: {}`",
                            k.hub
                        ),
                    ));
                }
                Some((k.hub.clone(), k.external.clone()))
            }
        };
        Ok(Rule {
            hub,
            external,
            to_hub_dir,
            to_external_dir,
            to_hub,
            to_external,
            default: r.default.clone(),
            reference: r.reference.clone(),
            items,
            create_only: r.on == Some(model::RuleWhen::Create),
            key,
        })
    }
}

fn lookup<'a>(scope: &'a BTreeMap<String, HubField>, keys: &[String]) -> Option<&'a HubField> {
    let (first, rest) = keys.split_first()?;
    let f = scope.get(first)?;
    if rest.is_empty() {
        return Some(f);
    }
    match f.kind {
        FieldType::Object if f.fields.is_empty() => Some(f),
        FieldType::Object => lookup(&f.fields, rest),
        FieldType::List => lookup(&f.items, rest),
        _ => None,
    }
}
