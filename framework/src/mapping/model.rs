//! The YAML shape of a mapping file (`mappers/<connector>/<name>.yml`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    pub hub: Spanned<String>,
    pub external: Spanned<String>,
    /// Per-connection parameters this mapping uses, with their defaults.
    #[serde(default)]
    pub params: BTreeMap<String, ParamDecl>,
    pub fields: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub hub: Option<Spanned<String>>,
    #[serde(default)]
    pub external: Option<Spanned<String>>,
    /// `both` (default), `to_hub` or `to_external`: a one-way rule.
    #[serde(default)]
    pub direction: Option<RuleDirection>,
    #[serde(default)]
    pub to_hub: Option<TransformSpec>,
    #[serde(default)]
    pub to_external: Option<TransformSpec>,
    /// Used when the source value is absent.
    #[serde(default)]
    pub default: Option<Value>,
    /// Hub entity the value refers to; translated through id maps.
    #[serde(default)]
    pub reference: Option<String>,
    /// Rules for each element when both paths hold lists.
    #[serde(default)]
    pub items: Option<Vec<RuleFile>>,
    /// `create`: applied only when the record is first created on the side it goes to
    /// (a source stamp, a default the application's users may change later).
    #[serde(default)]
    pub on: Option<RuleWhen>,
    /// With `items`: match list items by these id fields, not by position.
    #[serde(default)]
    pub key: Option<KeyFile>,
}

/// `key: { hub: id, external: LineID }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub hub: String,
    pub external: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleWhen {
    Always,
    Create,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleDirection {
    Both,
    ToHub,
    ToExternal,
}

/// A transform name, or a constant: `to_hub: trim` / `to_hub: { const: superoffice }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TransformSpec {
    Name(String),
    Const {
        #[serde(rename = "const")]
        value: Value,
    },
}
