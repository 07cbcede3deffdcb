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
    /// Top-level fields of the external record; mappings may only name these. Empty when
    /// the application takes free-form records (a PhixFlow actionflow's body).
    pub external_fields: &'static [&'static str],
    pub capabilities: Capabilities,
}

/// Splits one listed record into its sub-records, each named by the part that maps it
/// (external → hub routing of a complex entity).
pub type SplitFn = fn(&Value) -> Vec<(&'static str, Value)>;

/// Names the part that sends a hub record out, or `None` when the record has no place in
/// this application (hub → external routing of a complex entity).
pub type RouteFn = fn(hub_entity: &str, data: &Value) -> Option<&'static str>;

/// N hub entities to M external entities listed together, like a WorkflowMax Client that
/// carries its Contacts: the application's list returns parent records, and each (hub,
/// external) pair is a part with its own mapping, id maps and references.
#[derive(Debug, Clone)]
pub struct ComplexEntity {
    /// The name operators select in config.
    pub name: &'static str,
    /// The parts in sync order (referenced first); the first one is what the list returns.
    pub parts: Vec<EntityDef>,
    pub split: SplitFn,
    pub route: RouteFn,
}

/// An entry of a connector's entities list.
#[derive(Debug, Clone)]
pub enum Entity {
    Simple(EntityDef),
    Complex(ComplexEntity),
}

impl Entity {
    pub fn name(&self) -> &'static str {
        match self {
            Entity::Simple(d) => d.name,
            Entity::Complex(c) => c.name,
        }
    }

    /// The (hub, external) pairs this entity syncs, in order.
    pub fn parts(&self) -> &[EntityDef] {
        match self {
            Entity::Simple(d) => std::slice::from_ref(d),
            Entity::Complex(c) => &c.parts,
        }
    }
}

impl From<EntityDef> for Entity {
    fn from(d: EntityDef) -> Entity {
        Entity::Simple(d)
    }
}

/// A record id as text: applications send ids as non-empty strings or as numbers.
pub fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A string made `'static` once per distinct value, for entities a connector builds from a
/// connection's settings (BlizWork's processes). Config is small and read once per process.
pub fn intern(s: &str) -> &'static str {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(found) = seen.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.insert(leaked);
    leaked
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

/// The order an application's listing gives records in, which decides what a page tells
/// the engine about changes not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListOrder {
    /// Oldest change first: once a page is read, every change up to its newest is in, so
    /// each page is a checkpoint.
    #[default]
    ByChange,
    /// By a key that never changes (keyset paging on the primary key): no row moves while
    /// the list is read, but a record changed after the reader passed its key is not
    /// listed again. No page is a checkpoint, and the watermark a complete listing leaves
    /// stops short of the application's clock (its `Date` header) when the listing
    /// began, so the next run lists what changed meanwhile. Record times must be in
    /// that clock's frame (UTC).
    ByKey,
}

/// The application side of a connection. Each call is one unit of API work; the connector
/// handles auth, retries and its paging scheme inside.
#[async_trait]
pub trait ExternalClient: Send + Sync {
    /// Records of `entity` changed at or after `since` (all when `None`), oldest change
    /// first, one page per call. `since` is in the application's own clock (the engine's
    /// watermark is the newest [`ExternalClient::updated_at`] it listed). A record created,
    /// edited or deleted while a listing runs must never make another be skipped: an API
    /// paged by offset lists through [`crate::listing::OffsetCursor`]; records read twice
    /// are de-duplicated by the engine.
    async fn list_changed(
        &self,
        entity: &EntityDef,
        since: Option<DateTime<Utc>>,
        page: &PageRequest,
    ) -> Result<Page, ApiError>;

    /// The order [`ExternalClient::list_changed`] gives `entity`'s records in.
    fn list_order(&self, _entity: &EntityDef) -> ListOrder {
        ListOrder::ByChange
    }

    /// One record by id; `Ok(None)` when it no longer exists.
    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError>;

    /// Creates a record from mapped fields; returns the record as stored. `key` is the
    /// create's idempotency key: the hub record's id, the same on every attempt to create
    /// that record (a retry after a lost answer, the next run). A connector whose
    /// application can hold it (an external id, a field it upserts by) stores it there,
    /// so an attempt whose answer was lost never duplicates the record.
    async fn create(
        &self,
        entity: &EntityDef,
        fields: &Value,
        key: &str,
    ) -> Result<Value, ApiError>;

    /// Updates a record with `fields`: only the mapped values that changed in the hub since
    /// the application and the hub last agreed (every mapped value for an entity that
    /// cannot be read); everything else is kept as the application's users left it.
    /// Returns the record as stored. A change the application cannot make (a move its API
    /// has no operation for) is refused with [`ApiError::Permanent`] saying why.
    async fn update(&self, entity: &EntityDef, id: &str, fields: &Value)
        -> Result<Value, ApiError>;

    /// [`update`](Self::update) of a part of a complex entity, told the external id of its
    /// parent record as the application last reported it (a WorkflowMax contact's client),
    /// for applications whose update addresses a part through its parent. The parent is
    /// what was read, never a hub value, so it cannot undo a move made in the application.
    async fn update_in(
        &self,
        entity: &EntityDef,
        id: &str,
        _parent: Option<&str>,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        self.update(entity, id, fields).await
    }

    /// Finds a record that already holds these fields (used to finish an interrupted
    /// create without duplicating it).
    async fn find_match(
        &self,
        entity: &EntityDef,
        fields: &Value,
    ) -> Result<Option<Value>, ApiError>;

    /// Checks a webhook delivery with the application itself (BlizWork's handshake call)
    /// for connectors whose deliveries carry no signature; `uri` is where it was sent.
    async fn verify_webhook(&self, _body: &Value, _uri: &str) -> Result<bool, ApiError> {
        Ok(false)
    }

    fn record_id(&self, entity: &EntityDef, record: &Value) -> Option<String>;
    /// When the record last changed, as the application reports it (`None` when its
    /// records carry no time: the engine then uses the application's `Date` header).
    fn updated_at(&self, entity: &EntityDef, record: &Value) -> Option<DateTime<Utc>>;
    fn display_name(&self, entity: &EntityDef, record: &Value) -> Option<String>;
}
