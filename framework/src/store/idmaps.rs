//! Id maps: the link between a hub record and its counterpart in one connection, with what
//! Ferry last wrote to each side (content hashes) and why a record waits for a retry.

use std::collections::HashMap;

use anyhow::Result;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::id_maps;
use super::{insert_many, AnyConnection, Backend, Store};

/// Where a link between a hub record and an application record stands (the `state`
/// column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Both ids known.
    Linked,
    /// An external create was started; the external id is not known yet.
    PendingCreate,
    /// Waiting for a referenced record to be linked.
    Deferred,
    /// The last attempt failed; `last_error` says why.
    Failed,
    /// The record is gone or inactive in the application.
    Inactive,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Linked => "linked",
            LinkState::PendingCreate => "pending_create",
            LinkState::Deferred => "deferred",
            LinkState::Failed => "failed",
            LinkState::Inactive => "inactive",
        }
    }

    /// The state a stored name stands for; an unknown name reads as `Failed`, so a record
    /// in it is looked at again rather than skipped.
    pub fn parse(s: &str) -> LinkState {
        match s {
            "linked" => LinkState::Linked,
            "pending_create" => LinkState::PendingCreate,
            "deferred" => LinkState::Deferred,
            "inactive" => LinkState::Inactive,
            _ => LinkState::Failed,
        }
    }
}

/// The side a record still has to reach (the `retry_to` column): a durable retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Hub,
    External,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Hub => "hub",
            Side::External => "external",
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, AsChangeset, PartialEq)]
#[diesel(table_name = id_maps, treat_none_as_null = true)]
pub struct IdMap {
    pub id: i64,
    pub connection_id: i64,
    pub hub_entity: String,
    pub hub_id: Option<String>,
    pub external_entity: String,
    pub external_id: Option<String>,
    pub state: String,
    pub hub_hash: Option<String>,
    pub ext_hash: Option<String>,
    pub last_push_to_hub: Option<NaiveDateTime>,
    pub last_push_to_external: Option<NaiveDateTime>,
    pub to_hub: bool,
    pub to_external: bool,
    pub name: Option<String>,
    pub last_error: Option<String>,
    pub retry_to: Option<String>,
    pub metadata: Option<String>,
    pub updated_at: NaiveDateTime,
    /// The base of the three-way merge: the mapped fields (hub-shaped, by field name) as
    /// the hub and this application last agreed, as a JSON object. `None` for a record
    /// linked before bases existed, until its first settle.
    pub base: Option<String>,
}

impl IdMap {
    /// A new, unsaved id map (`id` 0) for the engine to fill in.
    pub fn new(connection_id: i64, hub_entity: &str, external_entity: &str) -> IdMap {
        IdMap {
            id: 0,
            connection_id,
            hub_entity: hub_entity.into(),
            hub_id: None,
            external_entity: external_entity.into(),
            external_id: None,
            state: LinkState::Linked.as_str().into(),
            hub_hash: None,
            ext_hash: None,
            last_push_to_hub: None,
            last_push_to_external: None,
            to_hub: true,
            to_external: true,
            name: None,
            last_error: None,
            retry_to: None,
            metadata: None,
            updated_at: super::orgs::now(),
            base: None,
        }
    }

    pub fn state(&self) -> LinkState {
        LinkState::parse(&self.state)
    }

    pub fn set_state(&mut self, state: LinkState) {
        self.state = state.as_str().into();
    }

    /// The side this record waits to reach, if any.
    pub fn waiting(&self) -> Option<Side> {
        match self.retry_to.as_deref() {
            Some("hub") => Some(Side::Hub),
            Some("external") => Some(Side::External),
            _ => None,
        }
    }

    pub fn waits_for(&self, side: Side) -> bool {
        self.waiting() == Some(side)
    }

    fn wait_for(&mut self, side: Option<Side>) {
        self.retry_to = side.map(|s| s.as_str().into());
    }

    // The transitions of a link, each in one place.

    /// Linked and agreed: both ids known, nothing waiting, no error.
    pub fn agreed(&mut self, ext_hash: String, hub_hash: String) {
        self.set_state(LinkState::Linked);
        self.ext_hash = Some(ext_hash);
        self.hub_hash = Some(hub_hash);
        self.settled();
    }

    /// Nothing waits and no error stands (the state is left as it is).
    pub fn settled(&mut self) {
        self.wait_for(None);
        self.last_error = None;
        self.updated_at = super::orgs::now();
    }

    /// The application holds the hub's values: a pending push is done. A pending pull
    /// stays (no push clears it).
    pub fn reached_external(&mut self) {
        if self.waiting() != Some(Side::Hub) {
            self.settled();
        }
    }

    /// The application lacks hub values: a durable pending push, which no pull clears
    /// until the application holds them. An error of an earlier attempt stays.
    pub fn push_pending(&mut self) {
        if !self.waits_for(Side::External) {
            self.last_error = None;
        }
        self.wait_for(Some(Side::External));
        self.updated_at = super::orgs::now();
    }

    /// A failed attempt towards `side`, retried on the next run. A record not linked yet
    /// is `Failed`; a linked one stays linked.
    pub fn fail(&mut self, side: Side, error: String) {
        if self.hub_id.is_none() || self.external_id.is_none() {
            self.set_state(LinkState::Failed);
        }
        self.wait_for(Some(side));
        self.last_error = Some(error);
        self.updated_at = super::orgs::now();
    }

    /// Waiting for a referenced record to be linked, retried on the next run.
    pub fn defer(&mut self, side: Side, error: String) {
        let unlinked = match side {
            Side::Hub => self.hub_id.is_none(),
            Side::External => self.external_id.is_none(),
        };
        if unlinked {
            self.set_state(LinkState::Deferred);
        }
        self.wait_for(Some(side));
        self.last_error = Some(error);
        self.updated_at = super::orgs::now();
    }

    /// A create in the application is about to be sent: committed first, so a crash or
    /// a lost answer is finished by matching instead of creating twice.
    pub fn begin_create(&mut self) {
        self.set_state(LinkState::PendingCreate);
        self.wait_for(Some(Side::External));
        self.updated_at = super::orgs::now();
    }

    /// The application no longer has the record.
    pub fn gone(&mut self, why: String) {
        self.set_state(LinkState::Inactive);
        self.wait_for(None);
        self.last_error = Some(why);
        self.updated_at = super::orgs::now();
    }

    fn meta(&self) -> serde_json::Map<String, serde_json::Value> {
        self.metadata
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    fn set_meta(&mut self, key: &str, value: serde_json::Value) {
        let mut meta = self.meta();
        meta.insert(key.into(), value);
        self.metadata = Some(serde_json::Value::Object(meta).to_string());
    }

    /// The external id of the parent record a sub-record of a complex entity came in.
    pub fn parent(&self) -> Option<String> {
        self.meta()
            .get("parent")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    pub fn set_parent(&mut self, parent: &str) {
        self.set_meta("parent", parent.into());
    }

    /// Something an operator should know of this link that is no error (an ambiguous
    /// first-sync match that was kept apart); kept until the link goes.
    pub fn note(&self) -> Option<String> {
        self.meta()
            .get("note")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    pub fn set_note(&mut self, note: &str) {
        self.set_meta("note", note.into());
    }

    /// The values an update is sending (hub-shaped, by field name), recorded before it is
    /// sent: if its answer never comes, the next pull knows the application holding them
    /// is Ferry's own write, not a user's edit.
    pub fn sent(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        match self.meta().get("sent") {
            Some(serde_json::Value::Object(m)) => Some(m.clone()),
            _ => None,
        }
    }

    pub fn set_sent(&mut self, sent: Option<serde_json::Map<String, serde_json::Value>>) {
        let mut meta = self.meta();
        match sent {
            Some(m) => meta.insert("sent".into(), serde_json::Value::Object(m)),
            None => meta.remove("sent"),
        };
        self.metadata = (!meta.is_empty()).then(|| serde_json::Value::Object(meta).to_string());
    }

    /// Which external sub-record goes with which hub item, per keyed list.
    pub fn item_ids(&self) -> crate::mapping::ItemIds {
        self.meta()
            .get("items")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    pub fn set_item_ids(&mut self, ids: &crate::mapping::ItemIds) {
        self.set_meta("items", serde_json::to_value(ids).unwrap_or_default());
    }
}

/// The columns of a new id map row, for single and multi-row inserts alike.
macro_rules! idmap_row {
    ($m:expr) => {
        (
            id_maps::connection_id.eq($m.connection_id),
            id_maps::hub_entity.eq(&$m.hub_entity),
            id_maps::hub_id.eq(&$m.hub_id),
            id_maps::external_entity.eq(&$m.external_entity),
            id_maps::external_id.eq(&$m.external_id),
            id_maps::state.eq(&$m.state),
            id_maps::hub_hash.eq(&$m.hub_hash),
            id_maps::ext_hash.eq(&$m.ext_hash),
            id_maps::last_push_to_hub.eq($m.last_push_to_hub),
            id_maps::last_push_to_external.eq($m.last_push_to_external),
            id_maps::to_hub.eq($m.to_hub),
            id_maps::to_external.eq($m.to_external),
            id_maps::name.eq(&$m.name),
            id_maps::last_error.eq(&$m.last_error),
            id_maps::retry_to.eq(&$m.retry_to),
            id_maps::metadata.eq(&$m.metadata),
            id_maps::updated_at.eq($m.updated_at),
            id_maps::base.eq(&$m.base),
        )
    };
}

impl Store {
    /// Inserts (`id == 0`) or updates an id map in the caller's transaction; returns its id.
    pub fn save_idmap(c: &mut AnyConnection, m: &IdMap) -> Result<i64> {
        if m.id != 0 {
            diesel::update(id_maps::table.find(m.id))
                .set(m)
                .execute(c)?;
            return Ok(m.id);
        }
        Ok(diesel::insert_into(id_maps::table)
            .values(idmap_row!(m))
            .returning(id_maps::id)
            .get_result(c)?)
    }

    /// Writes only the metadata of some id maps (what updates are about to send, recorded
    /// before they are sent) in one statement: a statement per row would cost an
    /// incremental run more than its writes.
    pub fn save_idmap_metadata(c: &mut AnyConnection, maps: &[&IdMap]) -> Result<()> {
        if maps.is_empty() {
            return Ok(());
        }
        match c {
            AnyConnection::Postgresql(pg) => {
                use diesel::sql_types::{Array, BigInt, Nullable, Text};
                let ids: Vec<i64> = maps.iter().map(|m| m.id).collect();
                let meta: Vec<Option<String>> = maps.iter().map(|m| m.metadata.clone()).collect();
                diesel::sql_query(
                    "UPDATE id_maps SET metadata = v.metadata \
                     FROM (SELECT unnest($1) AS id, unnest($2) AS metadata) AS v \
                     WHERE id_maps.id = v.id",
                )
                .bind::<Array<BigInt>, _>(ids)
                .bind::<Array<Nullable<Text>>, _>(meta)
                .execute(pg)?;
            }
            AnyConnection::Sqlite(lite) => {
                use diesel::sql_types::{BigInt, Nullable, Text};
                // One statement per 400 rows (3 bound values each, under SQLite's limit).
                for chunk in maps.chunks(400) {
                    let whens = "WHEN ? THEN ? ".repeat(chunk.len());
                    let ids = vec!["?"; chunk.len()].join(", ");
                    let sql = format!(
                        "UPDATE id_maps SET metadata = CASE id {whens}END WHERE id IN ({ids})"
                    );
                    let mut q = diesel::sql_query(sql).into_boxed::<diesel::sqlite::Sqlite>();
                    for m in chunk {
                        q = q
                            .bind::<BigInt, _>(m.id)
                            .bind::<Nullable<Text>, _>(m.metadata.clone());
                    }
                    for m in chunk {
                        q = q.bind::<BigInt, _>(m.id);
                    }
                    q.execute(lite)?;
                }
            }
        }
        Ok(())
    }

    /// Saves a page's id maps: new ones in bulk (`insert_many!`), known ones updated.
    pub fn save_idmaps(c: &mut AnyConnection, maps: &[IdMap]) -> Result<()> {
        let (new, known): (Vec<&IdMap>, Vec<&IdMap>) = maps.iter().partition(|m| m.id == 0);
        for m in known {
            Self::save_idmap(c, m)?;
        }
        let rows: Vec<_> = new.iter().map(|m| idmap_row!(m)).collect();
        insert_many!(c, id_maps::table, &rows);
        Ok(())
    }

    /// Id maps of the given external records, keyed by external id.
    pub fn idmaps_by_external(
        c: &mut AnyConnection,
        connection_id: i64,
        external_entity: &str,
        ids: &[String],
    ) -> Result<HashMap<String, IdMap>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let found: Vec<IdMap> = id_maps::table
            .filter(id_maps::connection_id.eq(connection_id))
            .filter(id_maps::external_entity.eq(external_entity))
            .filter(id_maps::external_id.eq_any(ids))
            .select(IdMap::as_select())
            .load(c)?;
        Ok(found
            .into_iter()
            .filter_map(|m| Some((m.external_id.clone()?, m)))
            .collect())
    }

    /// Id maps of the given hub records towards `external_entity`, keyed by hub id.
    pub fn idmaps_by_hub(
        c: &mut AnyConnection,
        connection_id: i64,
        hub_entity: &str,
        external_entity: &str,
        ids: &[String],
    ) -> Result<HashMap<String, IdMap>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let found: Vec<IdMap> = id_maps::table
            .filter(id_maps::connection_id.eq(connection_id))
            .filter(id_maps::hub_entity.eq(hub_entity))
            .filter(id_maps::external_entity.eq(external_entity))
            .filter(id_maps::hub_id.eq_any(ids))
            .select(IdMap::as_select())
            .load(c)?;
        Ok(found
            .into_iter()
            .filter_map(|m| Some((m.hub_id.clone()?, m)))
            .collect())
    }

    /// Linked pairs `(external id, hub id)` of `hub_entity` among the given ids on one side,
    /// for translating references in one query per page.
    pub fn linked_pairs(
        c: &mut AnyConnection,
        connection_id: i64,
        hub_entity: &str,
        external_ids: &[String],
        hub_ids: &[String],
    ) -> Result<Vec<(String, String)>> {
        if external_ids.is_empty() && hub_ids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<(Option<String>, Option<String>)> = id_maps::table
            .filter(id_maps::connection_id.eq(connection_id))
            .filter(id_maps::hub_entity.eq(hub_entity))
            .filter(
                id_maps::external_id
                    .eq_any(external_ids)
                    .or(id_maps::hub_id.eq_any(hub_ids)),
            )
            .select((id_maps::external_id, id_maps::hub_id))
            .load(c)?;
        Ok(found
            .into_iter()
            .filter_map(|(e, h)| Some((e?, h?)))
            .collect())
    }

    /// Id maps waiting to reach `side` (a deferral, a failure or an unfinished create).
    pub fn idmaps_to_retry(
        c: &mut AnyConnection,
        connection_id: i64,
        external_entity: &str,
        side: Side,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<IdMap>> {
        Ok(id_maps::table
            .filter(id_maps::connection_id.eq(connection_id))
            .filter(id_maps::external_entity.eq(external_entity))
            .filter(id_maps::retry_to.eq(side.as_str()))
            .filter(id_maps::id.gt(after_id))
            .order(id_maps::id)
            .limit(limit as i64)
            .select(IdMap::as_select())
            .load(c)?)
    }

    /// Creates into the application whose answer never came (`pending_create`, no external
    /// id yet), to be recognized when the record they left is listed.
    pub fn interrupted_creates(
        c: &mut AnyConnection,
        connection_id: i64,
        external_entity: &str,
    ) -> Result<Vec<IdMap>> {
        Ok(id_maps::table
            .filter(id_maps::connection_id.eq(connection_id))
            .filter(id_maps::external_entity.eq(external_entity))
            .filter(id_maps::retry_to.eq(Side::External.as_str()))
            .filter(id_maps::state.eq(LinkState::PendingCreate.as_str()))
            .filter(id_maps::external_id.is_null())
            .select(IdMap::as_select())
            .load(c)?)
    }

    /// One page of the id maps `filter` picks, from the `offset`-th on, with the total
    /// matching: what a paged view (the API's `/idmaps`) shows.
    pub fn idmaps_page(
        &self,
        filter: &IdMapFilter<'_>,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<IdMap>)> {
        let total = self.idmaps_count(filter)?;
        let mut c = self.conn()?;
        let rows = filter
            .query()
            .order(id_maps::id)
            .offset(offset)
            .limit(limit)
            .select(IdMap::as_select())
            .load(&mut c)?;
        Ok((total, rows))
    }

    /// How many id maps `filter` picks.
    pub fn idmaps_count(&self, filter: &IdMapFilter<'_>) -> Result<i64> {
        let mut c = self.conn()?;
        Ok(filter.query().count().get_result(&mut c)?)
    }

    /// The id maps `filter` picks with an id above `after`, in id order: callers reading all
    /// of a connection's id maps go page by page from the last id seen, each page a range of
    /// the primary key however deep it is (an OFFSET reads past every row before it).
    pub fn idmaps_after(
        &self,
        filter: &IdMapFilter<'_>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<IdMap>> {
        let mut c = self.conn()?;
        Ok(filter
            .query_by_id(self.backend)
            .filter(id_maps::id.gt(after))
            .order(id_maps::id)
            .limit(limit)
            .select(IdMap::as_select())
            .load(&mut c)?)
    }

    /// All id maps of a set of connections. Tests and the demo read small databases with
    /// it; anything that may meet a real one pages with [`Store::idmaps_after`].
    pub fn idmaps_of(&self, connection_ids: &[i64]) -> Result<Vec<IdMap>> {
        let mut c = self.conn()?;
        Ok(id_maps::table
            .filter(id_maps::connection_id.eq_any(connection_ids))
            .order((id_maps::connection_id, id_maps::hub_entity, id_maps::id))
            .select(IdMap::as_select())
            .load(&mut c)?)
    }
}

/// Which id maps an operator asks to see (`ferry idmaps`, the API's `/idmaps`).
#[derive(Debug, Clone, Copy)]
pub struct IdMapFilter<'a> {
    pub connections: &'a [i64],
    pub hub_entity: Option<&'a str>,
    /// Only the id maps whose last attempt left an error.
    pub errors_only: bool,
}

impl<'a> IdMapFilter<'a> {
    /// Every id map of these connections.
    pub fn all(connections: &'a [i64]) -> Self {
        IdMapFilter {
            connections,
            hub_entity: None,
            errors_only: false,
        }
    }

    fn query(&self) -> id_maps::BoxedQuery<'a, super::MultiBackend> {
        self.narrowed(
            id_maps::table
                .filter(id_maps::connection_id.eq_any(self.connections))
                .into_boxed(),
        )
    }

    /// The same, for walking the table in id order. SQLite (which has no planner statistics
    /// here: they turn a sync's id-list lookups into scans) would answer through an index on
    /// the connection and sort every id map of it, for each page; `connection_id + 0` is no
    /// index's column, which leaves the id range. PostgreSQL plans from its statistics.
    fn query_by_id(&self, backend: Backend) -> id_maps::BoxedQuery<'a, super::MultiBackend> {
        match backend {
            Backend::Sqlite => self.narrowed(
                id_maps::table
                    .filter((id_maps::connection_id + 0).eq_any(self.connections))
                    .into_boxed(),
            ),
            Backend::Postgres => self.query(),
        }
    }

    /// The hub-entity and error filters, on top of the connections.
    fn narrowed(
        &self,
        mut q: id_maps::BoxedQuery<'a, super::MultiBackend>,
    ) -> id_maps::BoxedQuery<'a, super::MultiBackend> {
        if let Some(e) = self.hub_entity {
            q = q.filter(id_maps::hub_entity.eq(e));
        }
        if self.errors_only {
            q = q.filter(id_maps::last_error.is_not_null());
        }
        q
    }
}
