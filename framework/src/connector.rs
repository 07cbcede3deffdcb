//! The Connector contract (Maestrano's External) and the registry connectors join with
//! [`register_connector!`](crate::register_connector). Adding an application touches no
//! framework file.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;

use crate::entity::{Entity, ExternalClient};
use crate::http::rate::RateLimits;
use crate::http::{TokenStore, Transport};
use crate::sandbox::Sandbox;

/// Everything a connector needs to talk to one account of its application.
pub struct ConnectionContext {
    pub connection_id: i64,
    pub connection_name: String,
    /// The connection's `settings` from config.
    pub settings: serde_json::Value,
    /// Secrets resolved from the environment variables named in config.
    pub secrets: BTreeMap<String, String>,
    pub tokens: TokenStore,
    pub transport: Transport,
    /// What the connection's mappings read of each external entity, by external entity
    /// name (`Contact`): see [`Mapping::external_reads`](crate::mapping::Mapping::external_reads).
    /// A connector whose list can carry chosen columns asks for these and reads a record
    /// by id only for what its list cannot carry. Empty: read whole records.
    pub reads: BTreeMap<String, Vec<crate::mapping::path::Path>>,
}

impl std::fmt::Debug for ConnectionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionContext")
            .field("connection", &self.connection_name)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An application Ferry can sync with.
pub trait Connector: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// The entities list, in sync order (referenced entities first).
    fn entities(&self) -> Vec<Entity>;
    /// The entities of one connection, when its settings define them (BlizWork maps each
    /// configured process); the fixed list otherwise.
    fn entities_for(&self, _settings: &serde_json::Value) -> Result<Vec<Entity>> {
        Ok(self.entities())
    }
    /// Checks the connection's settings and secrets without calling the application, so
    /// config mistakes are reported before a run starts.
    fn check_settings(
        &self,
        settings: &serde_json::Value,
        secrets: &BTreeMap<String, String>,
    ) -> Result<()>;
    /// Records per page the application's documentation recommends, if it does; a
    /// connection's `page_size` overrides it, and it overrides the `sync` settings.
    fn page_size(&self) -> Option<usize> {
        None
    }

    /// The application's published call limits; a connection's `rate_limit` overrides them.
    fn rate_limits(&self) -> RateLimits {
        RateLimits::default()
    }
    /// Builds the API client for one connection.
    fn open(&self, ctx: ConnectionContext) -> Result<Arc<dyn ExternalClient>>;
    /// How the application's webhooks are verified and read, if it sends any.
    fn webhooks(&self) -> Option<Box<dyn crate::webhook::WebhookFormat>> {
        None
    }
    /// A faithful fake of the application, for the demo, tests and integrators' sandboxes.
    fn sandbox(&self) -> Option<Box<dyn Sandbox>> {
        None
    }
}

/// A registry entry; create one with [`register_connector!`](crate::register_connector).
pub struct ConnectorRegistration {
    pub factory: fn() -> Box<dyn Connector>,
}

inventory::collect!(ConnectorRegistration);

/// Registers a connector: `register_connector!(|| Box::new(MyConnector))`.
#[macro_export]
macro_rules! register_connector {
    ($factory:expr) => {
        $crate::__inventory::submit! {
            $crate::connector::ConnectorRegistration { factory: $factory }
        }
    };
}

/// Every registered connector, sorted by name.
pub fn registry() -> Vec<Box<dyn Connector>> {
    let mut v: Vec<Box<dyn Connector>> = inventory::iter::<ConnectorRegistration>
        .into_iter()
        .map(|r| (r.factory)())
        .collect();
    v.sort_by_key(|c| c.name());
    v
}

pub fn find(name: &str) -> Option<Box<dyn Connector>> {
    registry().into_iter().find(|c| c.name() == name)
}
