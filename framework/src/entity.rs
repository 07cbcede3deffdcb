//! The Entity contract: one hub entity mapped to one external entity, and the I/O a connector
//! implements for it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::http::ApiError;

/// What the engine may do on the application's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub read: bool,
    pub create: bool,
    pub update: bool,
    pub delete: bool,
}

impl Capabilities {
    pub const READ_WRITE: Capabilities = Capabilities {
        read: true,
        create: true,
        update: true,
        delete: false,
    };

    /// `read, create, update` style list for `ferry connectors`.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        for (on, name) in [
            (self.read, "read"),
            (self.create, "create"),
            (self.update, "update"),
            (self.delete, "delete"),
        ] {
            if on {
                v.push(name);
            }
        }
        v.join(", ")
    }
}

/// A synced pair of entity types, declared by a connector.
#[derive(Debug, Clone)]
pub struct EntityDef {
    /// The name operators select in config (`entities: { organization: ... }`).
    pub name: &'static str,
    pub hub_entity: &'static str,
    pub external_entity: &'static str,
    /// Mapping file stem: `mappers/<connector>/<mapping>.yml`.
    pub mapping: &'static str,
    /// Top-level fields of the external record; mappings may only name these.
    pub external_fields: &'static [&'static str],
    pub capabilities: Capabilities,
}

/// Where to continue listing: an opaque token the connector hands back.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub token: Option<String>,
    pub size: usize,
}

/// One record as fetched: good, or unreadable (kept as a per-record error, never a panic).
#[derive(Debug, Clone)]
pub enum Fetched {
    Record(Value),
    Bad { id: Option<String>, error: String },
}

/// One page of changed records, oldest change first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Fetched>,
    pub next: Option<String>,
}

/// The application side of a connection. Each call is one unit of API work; the connector
/// handles auth, retries and its paging scheme inside.
#[async_trait]
pub trait ExternalClient: Send + Sync {
    /// Records of `entity` changed at or after `since` (all when `None`).
    async fn list_changed(
        &self,
        entity: &EntityDef,
        since: Option<DateTime<Utc>>,
        page: &PageRequest,
    ) -> Result<Page, ApiError>;

    /// One record by id; `Ok(None)` when it no longer exists.
    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError>;

    /// Creates a record from mapped fields; returns the record as stored.
    async fn create(&self, entity: &EntityDef, fields: &Value) -> Result<Value, ApiError>;

    /// Updates the mapped fields of a record, keeping the rest; returns the record as stored.
    async fn update(&self, entity: &EntityDef, id: &str, fields: &Value)
        -> Result<Value, ApiError>;

    /// Finds a record that already holds these fields (used to finish an interrupted
    /// create without duplicating it).
    async fn find_match(
        &self,
        entity: &EntityDef,
        fields: &Value,
    ) -> Result<Option<Value>, ApiError>;

    fn record_id(&self, entity: &EntityDef, record: &Value) -> Option<String>;
    fn updated_at(&self, entity: &EntityDef, record: &Value) -> Option<DateTime<Utc>>;
    fn display_name(&self, entity: &EntityDef, record: &Value) -> Option<String>;
}
