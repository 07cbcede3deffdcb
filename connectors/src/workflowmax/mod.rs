//! WorkflowMax by BlueRock (API v2, XML): a Client with its Contacts is one complex entity,
//! Client ↔ hub Organization and Contact ↔ hub Person. Custom fields ride on the records as
//! `CustomFields: {name: value}`. OAuth with rotating refresh tokens; the published rate
//! limits (5 concurrent, 60 a minute, 5000 a day) are the default budget.

mod client;
pub mod fake;
pub mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use ferry_framework::connector::{ConnectionContext, Connector};
use ferry_framework::entity::{Capabilities, ComplexEntity, Entity, EntityDef, ExternalClient};
use ferry_framework::http::rate::RateLimits;
use ferry_framework::sandbox::Sandbox;
use serde::Deserialize;
use serde_json::{json, Value};

pub use client::WorkflowMaxClient;

/// The documented element order (legacy v1/v3 examples, BlueRock names), one list for every
/// element since names do not clash: UUID first, then Name, then the rest.
pub const ORDER: &[&str] = &[
    "UUID",
    "Client",
    "Name",
    "Title",
    "FirstName",
    "OtherName",
    "LastName",
    "Salutation",
    "Addressee",
    "Mobile",
    "Email",
    "DateOfBirth",
    "Address",
    "City",
    "Region",
    "Postcode",
    "Country",
    "PostalAddress",
    "PostalCity",
    "PostalRegion",
    "PostalPostCode",
    "PostalCountry",
    "Phone",
    "Fax",
    "Website",
    "ReferralSource",
    "ExportCode",
    "IsProspect",
    "IsArchived",
    "IsDeleted",
    "AccountManager",
    "Type",
    "Position",
    "IsPrimary",
    "Positions",
    "Contacts",
    "Notes",
    "LinkURL",
    "Text",
    "Decimal",
    "Number",
    "Boolean",
    "Date",
];

/// Client fields mappings may name (`RawClient` of the contract, plus `CustomFields`).
pub const CLIENT_FIELDS: &[&str] = &[
    "UUID",
    "Name",
    "Title",
    "FirstName",
    "OtherName",
    "LastName",
    "Email",
    "DateOfBirth",
    "Address",
    "City",
    "Region",
    "Postcode",
    "Country",
    "PostalAddress",
    "PostalCity",
    "PostalRegion",
    "PostalPostCode",
    "PostalCountry",
    "Phone",
    "Fax",
    "Website",
    "ReferralSource",
    "ExportCode",
    "IsProspect",
    "IsArchived",
    "IsDeleted",
    "AccountManager",
    "Type",
    "Gender",
    "CustomFields",
];

/// Contact fields mappings may name. `FirstName`/`LastName` are split from `Name` (the
/// application has one name field) and joined back when writing; `Client` is the parent.
pub const CONTACT_FIELDS: &[&str] = &[
    "UUID",
    "Client",
    "Name",
    "FirstName",
    "LastName",
    "Salutation",
    "Addressee",
    "Mobile",
    "Email",
    "Phone",
    "Position",
    "IsPrimary",
    "CustomFields",
];

/// Connection settings (config `settings:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub client_id: String,
    #[serde(default = "default_api")]
    pub api_url: String,
    #[serde(default = "default_token")]
    pub token_url: String,
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Read and write custom fields (one more call per record that has any).
    #[serde(default = "yes")]
    pub custom_fields: bool,
    /// Re-read custom fields after writing them and fail the record if they did not stick.
    #[serde(default)]
    pub verify_custom_fields: bool,
}

fn default_api() -> String {
    "https://api.workflowmax2.com/".into()
}
fn default_token() -> String {
    "https://oauth.workflowmax2.com/oauth/token".into()
}
fn default_scope() -> String {
    "openid profile email workflowmax offline_access".into()
}
fn yes() -> bool {
    true
}

impl Settings {
    pub fn parse(v: &Value) -> Result<Settings> {
        let mut s: Settings =
            serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        for (field, url) in [("api_url", &s.api_url), ("token_url", &s.token_url)] {
            ferry_framework::config::check_http_url(field, url)?;
        }
        if !s.api_url.ends_with('/') {
            s.api_url.push('/');
        }
        Ok(s)
    }
}

/// External → hub routing: a Client, and each of its Contacts with the Client as parent.
fn split(record: &Value) -> Vec<(&'static str, Value)> {
    let mut client = record.clone();
    let contacts = client
        .as_object_mut()
        .and_then(|c| c.remove("Contacts"))
        .unwrap_or(Value::Null);
    let uuid = record.get("UUID").cloned().unwrap_or(Value::Null);
    let mut out = vec![("client", client)];
    for mut c in contacts.as_array().cloned().unwrap_or_default() {
        if let Some(obj) = c.as_object_mut() {
            obj.insert("Client".into(), json!({ "UUID": uuid }));
            client::split_name(obj);
            out.push(("contact", c));
        }
    }
    out
}

/// Hub → external routing: organizations become Clients; a person becomes a Contact only
/// under an organization, since WorkflowMax has no contacts without a client.
fn route(hub_entity: &str, data: &Value) -> Option<&'static str> {
    match hub_entity {
        "Organization" => Some("client"),
        "Person" if data.get("organization_id").is_some_and(|v| !v.is_null()) => Some("contact"),
        _ => None,
    }
}

pub struct WorkflowMax;

impl Connector for WorkflowMax {
    fn name(&self) -> &'static str {
        "workflowmax"
    }

    fn description(&self) -> &'static str {
        "WorkflowMax by BlueRock (API v2, XML, OAuth with rotating refresh tokens)"
    }

    fn entities(&self) -> Vec<Entity> {
        vec![Entity::Complex(ComplexEntity {
            name: "client",
            parts: vec![
                EntityDef {
                    name: "client",
                    hub_entity: "Organization",
                    external_entity: "Client",
                    mapping: "client",
                    external_fields: CLIENT_FIELDS,
                    capabilities: Capabilities::READ_WRITE,
                },
                EntityDef {
                    name: "contact",
                    hub_entity: "Person",
                    external_entity: "Contact",
                    mapping: "contact",
                    external_fields: CONTACT_FIELDS,
                    capabilities: Capabilities::READ_WRITE,
                },
            ],
            split,
            route,
        })]
    }

    fn check_settings(&self, settings: &Value, secrets: &BTreeMap<String, String>) -> Result<()> {
        Settings::parse(settings)?;
        for s in ["client_secret", "refresh_token"] {
            if !secrets.contains_key(s) {
                bail!("secrets: `{s}` is required (name the environment variable that holds it)");
            }
        }
        Ok(())
    }

    fn rate_limits(&self) -> RateLimits {
        RateLimits {
            concurrent: Some(5),
            per_second: None,
            per_minute: Some(60),
            per_day: Some(5000),
        }
    }

    fn open(&self, ctx: ConnectionContext) -> Result<Arc<dyn ExternalClient>> {
        Ok(Arc::new(WorkflowMaxClient::new(ctx)?))
    }

    fn sandbox(&self) -> Option<Box<dyn Sandbox>> {
        Some(Box::new(fake::FakeSandbox))
    }
}

ferry_framework::register_connector!(|| Box::new(WorkflowMax));
