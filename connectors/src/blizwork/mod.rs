//! BlizWork (workflow/BPM; JSON over POST, the API token as the last path segment): each
//! configured process's cases are an entity, mapped to a hub entity by its own mapping file,
//! case fields read and written by name. Extension webhooks are confirmed with BlizWork's
//! one-time handshake call before anything is stored.

mod client;
pub mod fake;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use ferry_framework::connector::{ConnectionContext, Connector};
use ferry_framework::entity::{intern, Capabilities, Entity, EntityDef, ExternalClient};
use ferry_framework::sandbox::Sandbox;
use serde::Deserialize;
use serde_json::Value;

/// Where the API is: `production` (api.blizwork.com) or the URL of a local or sandbox
/// server (the Python library's NODE_ENV rule, as a setting).
pub const PRODUCTION: &str = "https://api.blizwork.com/";

/// Which documented form of the handshake call confirms an extension webhook.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Handshake {
    /// The official docs: `POST utils/validatecall/<apiToken>` with `{endpoint, token}`.
    #[default]
    Docs,
    /// The Python library: `POST utils/validatecall/<handshakeToken>/<apiToken>/` with `{}`.
    Library,
}

/// What to do with webhooks from draft (unpublished) process versions.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DraftCalls {
    /// Confirm them with the handshake like production ones.
    #[default]
    Validate,
    /// Accept without a handshake (what the Python library does).
    Accept,
    /// Refuse them.
    Refuse,
}

/// One synced process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    pub hub_entity: String,
    /// Mapping file stem in `mappers/blizwork/` (default: the process id).
    #[serde(default)]
    pub mapping: Option<String>,
    /// The activity (form) whose fields a write fills, and the one the case moves to.
    pub form_id: String,
    #[serde(default)]
    pub next_form_id: Option<String>,
}

/// Connection settings (config `settings:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub company_id: String,
    /// The email the operations are performed as (`userId`).
    pub user_email: String,
    #[serde(default = "production")]
    pub environment: String,
    /// Process environment of the cases: `production` or `draft`.
    #[serde(default = "production_env")]
    pub case_environment: String,
    /// Processes by id, in sync order.
    pub processes: BTreeMap<String, ProcessConfig>,
    #[serde(default)]
    pub handshake: Handshake,
    #[serde(default)]
    pub draft_calls: DraftCalls,
    /// The webhook URL configured in BlizWork (sent in the docs' handshake); default:
    /// the URL the call arrived at.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

fn production() -> String {
    "production".into()
}
fn production_env() -> String {
    "production".into()
}

impl Settings {
    pub fn parse(v: &Value) -> Result<Settings> {
        let s: Settings =
            serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        if s.environment != "production"
            && ferry_framework::config::check_http_url("environment", &s.environment).is_err()
        {
            bail!(
                "settings: field `environment` must be production or the URL of a BlizWork server, not {:?}",
                s.environment
            );
        }
        if !["production", "draft"].contains(&s.case_environment.as_str()) {
            bail!("settings: field `case_environment` must be production or draft");
        }
        if s.processes.is_empty() {
            bail!("settings: `processes` names no process to sync");
        }
        Ok(s)
    }

    pub fn base_url(&self) -> String {
        let mut b = if self.environment == "production" {
            PRODUCTION.to_string()
        } else {
            self.environment.clone()
        };
        if !b.ends_with('/') {
            b.push('/');
        }
        b
    }
}

/// Case fields mappings may name: `fields.<name>`, plus the case's own attributes.
pub const CASE_FIELDS: &[&str] = &[
    "caseNumber",
    "processVersion",
    "environment",
    "fields",
    "updatedOn",
];

pub struct BlizWork;

impl Connector for BlizWork {
    fn name(&self) -> &'static str {
        "blizwork"
    }

    fn description(&self) -> &'static str {
        "BlizWork processes (JSON over POST): each configured process's cases"
    }

    /// Entities come from each connection's `processes`.
    fn entities(&self) -> Vec<Entity> {
        Vec::new()
    }

    fn entities_for(&self, settings: &Value) -> Result<Vec<Entity>> {
        let s = Settings::parse(settings)?;
        Ok(s.processes
            .iter()
            .map(|(id, p)| {
                EntityDef {
                    name: intern(id),
                    hub_entity: intern(&p.hub_entity),
                    external_entity: intern(id),
                    mapping: intern(p.mapping.as_deref().unwrap_or(id)),
                    external_fields: CASE_FIELDS,
                    capabilities: Capabilities::READ_WRITE,
                }
                .into()
            })
            .collect())
    }

    fn check_settings(&self, settings: &Value, secrets: &BTreeMap<String, String>) -> Result<()> {
        Settings::parse(settings)?;
        if !secrets.contains_key("api_token") {
            bail!("secrets: `api_token` is required (name the environment variable that holds it)");
        }
        Ok(())
    }

    fn open(&self, ctx: ConnectionContext) -> Result<Arc<dyn ExternalClient>> {
        Ok(Arc::new(client::BlizWorkClient::new(ctx)?))
    }

    fn webhooks(&self) -> Option<Box<dyn ferry_framework::webhook::WebhookFormat>> {
        Some(Box::new(webhook::Extension))
    }

    fn sandbox(&self) -> Option<Box<dyn Sandbox>> {
        Some(Box::new(fake::FakeSandbox))
    }
}

ferry_framework::register_connector!(|| Box::new(BlizWork));
