//! PhixFlow (incoming API endpoints): outbound only. Hub records are sent, one per call, to
//! an actionflow's API endpoint (`…/api/1/action/<App>/<Actionflow>/trigger`, POST). The
//! endpoint either answers with the result ("wait for result") or with a process id to
//! poll ("poll for result"). Each record's Success or Fail lands on its id map; a failed
//! record is retried on the next run and never blocks the others. What the stored copies
//! of PhixFlow's documentation leave out (the auth header's name, the status URL, the
//! result JSON) are settings with the documented or likely value as default.

mod client;
pub mod fake;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use ferry_framework::connector::{ConnectionContext, Connector};
use ferry_framework::entity::{Capabilities, Entity, EntityDef, ExternalClient};
use ferry_framework::sandbox::Sandbox;
use serde::Deserialize;
use serde_json::Value;

/// `wait`: the call returns the result; `poll`: it returns a process id to poll.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Wait,
    Poll,
}

/// Connection settings (config `settings:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The server, e.g. `https://app.phixflow.com/phixflow/`.
    pub base_url: String,
    /// The application name; without it the v10 form `…/action/<Actionflow>/trigger`.
    #[serde(default)]
    pub application: Option<String>,
    /// Actionflow name per entity (`person: "Sync People"`).
    pub actionflows: BTreeMap<String, String>,
    #[serde(default)]
    pub mode: Mode,
    /// `timeout` query parameter in ms (overrides the endpoint's own).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Poll mode: status URL, `{base}` and `{process_id}` filled in. UNVERIFIED.
    #[serde(default = "default_status_url")]
    pub status_url: String,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_seconds: u64,
    /// Header carrying the API key, and a prefix for its value. UNVERIFIED: PhixFlow's
    /// documentation names the header in a macro no stored copy kept.
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    #[serde(default)]
    pub auth_prefix: String,
    /// Fields of the result JSON: outcome (`Success`/`Fail`), message, process id.
    #[serde(default = "default_status_field")]
    pub status_field: String,
    #[serde(default = "default_message_field")]
    pub message_field: String,
    #[serde(default = "default_process_field")]
    pub process_id_field: String,
}

fn default_status_url() -> String {
    "{base}api/1/action/status/{process_id}".into()
}
fn default_poll_interval() -> u64 {
    200
}
fn default_poll_timeout() -> u64 {
    60
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_status_field() -> String {
    "status".into()
}
fn default_message_field() -> String {
    "message".into()
}
fn default_process_field() -> String {
    "processId".into()
}

impl Settings {
    pub fn parse(v: &Value) -> Result<Settings> {
        let mut s: Settings =
            serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        ferry_framework::config::check_http_url("base_url", &s.base_url)?;
        let status_url = s.status_url.replace("{base}", &s.base_url);
        ferry_framework::config::check_http_url("status_url", &status_url)?;
        if reqwest::header::HeaderName::from_bytes(s.auth_header.as_bytes()).is_err() {
            bail!(
                "settings: field `auth_header` must be an HTTP header name, not {:?}",
                s.auth_header
            );
        }
        for (field, v) in [
            ("poll_interval_ms", s.poll_interval_ms),
            ("poll_timeout_seconds", s.poll_timeout_seconds),
        ] {
            if v == 0 {
                bail!("settings: field `{field}` must be at least 1");
            }
        }
        if !s.base_url.ends_with('/') {
            s.base_url.push('/');
        }
        for e in s.actionflows.keys() {
            if !ENTITIES.contains(&e.as_str()) {
                bail!(
                    "settings: actionflows: no entity {e:?} (this connector sends: {})",
                    ENTITIES.join(", ")
                );
            }
        }
        Ok(s)
    }
}

const ENTITIES: &[&str] = &["organization", "person"];

pub struct PhixFlow;

/// PhixFlow cannot be read: the engine never lists or pulls.
const OUTBOUND: Capabilities = Capabilities {
    read: false,
    create: true,
    update: true,
    delete: false,
};

impl Connector for PhixFlow {
    fn name(&self) -> &'static str {
        "phixflow"
    }

    fn description(&self) -> &'static str {
        "PhixFlow actionflow API endpoints (outbound only, wait or poll for result)"
    }

    fn entities(&self) -> Vec<Entity> {
        vec![
            EntityDef {
                name: "organization",
                hub_entity: "Organization",
                external_entity: "Organization",
                mapping: "organization",
                external_fields: &[],
                capabilities: OUTBOUND,
            }
            .into(),
            EntityDef {
                name: "person",
                hub_entity: "Person",
                external_entity: "Person",
                mapping: "person",
                external_fields: &[],
                capabilities: OUTBOUND,
            }
            .into(),
        ]
    }

    fn check_settings(&self, settings: &Value, secrets: &BTreeMap<String, String>) -> Result<()> {
        Settings::parse(settings)?;
        if !secrets.contains_key("api_key") {
            bail!("secrets: `api_key` is required (name the environment variable that holds it)");
        }
        Ok(())
    }

    fn open(&self, ctx: ConnectionContext) -> Result<Arc<dyn ExternalClient>> {
        Ok(Arc::new(client::PhixFlowClient::new(ctx)?))
    }

    fn sandbox(&self) -> Option<Box<dyn Sandbox>> {
        Some(Box::new(fake::FakeSandbox))
    }
}

ferry_framework::register_connector!(|| Box::new(PhixFlow));
