//! The hub model (`config/hub.yml`): which canonical entities an organization's hub holds and
//! what their fields are. Every record written to the hub is validated against it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;

use crate::config::load_yaml;
use crate::input_error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubModel {
    pub entities: BTreeMap<String, HubEntity>,
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubEntity {
    /// Fields whose values identify the same real-world record across applications; used to
    /// merge instead of duplicate on a first sync.
    #[serde(default)]
    pub match_on: Vec<String>,
    /// One record per organization (a company profile, account settings): every
    /// application's record of it merges into that one.
    #[serde(default)]
    pub singleton: bool,
    pub fields: BTreeMap<String, HubField>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubField {
    #[serde(rename = "type")]
    pub kind: FieldType,
    #[serde(default)]
    pub required: bool,
    /// For `reference` fields: the hub entity referred to.
    #[serde(default)]
    pub entity: Option<String>,
    /// For `object` fields: the nested fields.
    #[serde(default)]
    pub fields: BTreeMap<String, HubField>,
    /// For `list` fields: the fields of each item.
    #[serde(default)]
    pub items: BTreeMap<String, HubField>,
    /// For `list` fields of sub-records (invoice lines): the item field holding each
    /// sub-record's hub id, so applications' sub-records are matched by id, not position.
    #[serde(default)]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Date,
    Datetime,
    Reference,
    Object,
    List,
}

impl HubModel {
    pub fn load(path: &Path) -> Result<Self> {
        let mut m: HubModel = load_yaml(path)?;
        m.source = path.to_path_buf();
        for (name, e) in &m.entities {
            for f in &e.match_on {
                if !e.fields.contains_key(f) {
                    return Err(input_error!(
                        "{}: entity {name}: match_on names unknown field `{f}`",
                        path.display()
                    ));
                }
            }
            for (fname, f) in &e.fields {
                if let Some(k) = &f.key {
                    if f.kind != FieldType::List
                        || f.items.get(k).is_none_or(|i| i.kind != FieldType::String)
                    {
                        return Err(input_error!(
                            "{}: entity {name}: field `{fname}`: `key: {k}` needs a list whose items have a string field `{k}`",
                            path.display()
                        ));
                    }
                }
                if f.kind == FieldType::Reference {
                    match &f.entity {
                        Some(t) if m.entities.contains_key(t) => {}
                        other => {
                            return Err(input_error!(
                                "{}: entity {name}: field `{fname}` references unknown entity {:?}",
                                path.display(),
                                other
                            ))
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    pub fn entity(&self, name: &str) -> Option<&HubEntity> {
        self.entities.get(name)
    }

    /// The field definition at a dotted path (`address.city`, `phones[].number`), if declared.
    pub fn field(&self, entity: &str, path: &[String]) -> Option<&HubField> {
        let mut fields = &self.entities.get(entity)?.fields;
        let mut found = None;
        for seg in path {
            let f = fields.get(seg)?;
            fields = if f.kind == FieldType::List {
                &f.items
            } else {
                &f.fields
            };
            found = Some(f);
        }
        found
    }

    /// Checks a record against the model; the error names the entity, record and field.
    pub fn validate(&self, entity: &str, record_label: &str, data: &Value) -> Result<()> {
        let e = self
            .entities
            .get(entity)
            .ok_or_else(|| input_error!("hub entity {entity:?} is not in the hub model"))?;
        let obj = data.as_object().ok_or_else(|| {
            input_error!("{entity} {record_label}: a hub record must be an object")
        })?;
        check_fields(&e.fields, obj, &format!("{entity} {record_label}"), "")
    }

    /// Gives every sub-record of a keyed list its hub id, so each application's copy of
    /// it can be recorded against that id.
    pub fn assign_item_keys(&self, entity: &str, data: &mut Value) {
        let Some(e) = self.entities.get(entity) else {
            return;
        };
        for (name, f) in &e.fields {
            let (Some(key), Some(Value::Array(items))) = (&f.key, data.get_mut(name)) else {
                continue;
            };
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                if item.get(key).is_none_or(|v| !v.is_string()) {
                    item.insert(key.clone(), uuid::Uuid::now_v7().to_string().into());
                }
            }
        }
    }

    /// The normalized value of the entity's match fields, or `None` when any is empty. A
    /// singleton's key is constant: there is one per organization.
    pub fn match_key(&self, entity: &str, data: &Value) -> Option<String> {
        let e = self.entities.get(entity)?;
        if e.singleton {
            return Some("\u{1f}singleton".into());
        }
        if e.match_on.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for f in &e.match_on {
            match data.get(f) {
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    parts.push(s.trim().to_lowercase())
                }
                Some(Value::Number(n)) => parts.push(n.to_string()),
                _ => return None,
            }
        }
        Some(parts.join("\u{1f}"))
    }
}

fn check_fields(
    fields: &BTreeMap<String, HubField>,
    obj: &serde_json::Map<String, Value>,
    label: &str,
    prefix: &str,
) -> Result<()> {
    for (k, v) in obj {
        let path = format!("{prefix}{k}");
        let f = fields
            .get(k)
            .ok_or_else(|| input_error!("{label}: field `{path}` is not in the hub model"))?;
        check_value(f, v, label, &path)?;
    }
    for (k, f) in fields {
        if f.required && obj.get(k).is_none_or(Value::is_null) {
            return Err(input_error!(
                "{label}: required field `{prefix}{k}` is missing"
            ));
        }
    }
    Ok(())
}

fn check_value(f: &HubField, v: &Value, label: &str, path: &str) -> Result<()> {
    if v.is_null() {
        return Ok(());
    }
    let ok = match f.kind {
        FieldType::String | FieldType::Reference => v.is_string(),
        FieldType::Integer => v.is_i64() || v.is_u64(),
        FieldType::Number => v.is_number(),
        FieldType::Boolean => v.is_boolean(),
        FieldType::Date => v
            .as_str()
            .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        FieldType::Datetime => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        FieldType::Object => {
            let o = v
                .as_object()
                .ok_or_else(|| input_error!("{label}: field `{path}` must be an object"))?;
            if !f.fields.is_empty() {
                check_fields(&f.fields, o, label, &format!("{path}."))?;
            }
            true
        }
        FieldType::List => {
            let items = v
                .as_array()
                .ok_or_else(|| input_error!("{label}: field `{path}` must be a list"))?;
            for (i, item) in items.iter().enumerate() {
                let o = item.as_object().ok_or_else(|| {
                    input_error!("{label}: field `{path}[{i}]` must be an object")
                })?;
                check_fields(&f.items, o, label, &format!("{path}[{i}]."))?;
            }
            true
        }
    };
    if ok {
        Ok(())
    } else {
        Err(input_error!(
            "{label}: field `{path}` must be a {:?}, got {v}",
            f.kind
        ))
    }
}
