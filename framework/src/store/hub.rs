//! The hub: each organization's canonical records, with a monotonic change sequence per
//! organization so every connection can read "what changed since seq N".

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::schema::{hub_records, organizations};
use super::write_transaction;
use super::{insert_many, AnyConnection, Store};

/// When each hub field was last edited (field name → time), as its source reported it.
pub type FieldTimes = std::collections::BTreeMap<String, DateTime<Utc>>;

/// The key of a [`FieldTimes`] entry that stands for every field without one of its own: a
/// record created from one source at one time stores one time, not one per field.
pub const EVERY_FIELD: &str = "*";

/// Field times as stored: `{"field": milliseconds since the epoch}` (integers: written for
/// every record a first sync creates, where formatting dates costs).
fn times_text(t: &FieldTimes) -> Option<String> {
    let millis: std::collections::BTreeMap<&str, i64> = t
        .iter()
        .map(|(k, v)| (k.as_str(), v.timestamp_millis()))
        .collect();
    (!t.is_empty()).then(|| serde_json::to_string(&millis).unwrap_or_default())
}

/// Reads stored field times; unreadable ones count as none (the record's time is used).
fn times_of(text: Option<&str>) -> FieldTimes {
    let Some(millis) =
        text.and_then(|t| serde_json::from_str::<std::collections::BTreeMap<String, i64>>(t).ok())
    else {
        return FieldTimes::new();
    };
    millis
        .into_iter()
        .filter_map(|(k, ms)| Some((k, DateTime::from_timestamp_millis(ms)?)))
        .collect()
}

/// One hub record as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRecord {
    pub uid: String,
    pub entity: String,
    pub data: Value,
    pub seq: i64,
    pub updated_at: DateTime<Utc>,
    pub origin_connection_id: Option<i64>,
    /// When each field was last edited, as the source that brought the edit reported it.
    pub field_times: FieldTimes,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = hub_records)]
struct Row {
    uid: String,
    entity: String,
    data: String,
    seq: i64,
    updated_at: NaiveDateTime,
    origin_connection_id: Option<i64>,
    field_times: Option<String>,
}

impl Row {
    fn into_record(self) -> Result<HubRecord> {
        Ok(HubRecord {
            data: serde_json::from_str(&self.data)
                .with_context(|| format!("hub record {} holds invalid JSON", self.uid))?,
            uid: self.uid,
            entity: self.entity,
            seq: self.seq,
            updated_at: self.updated_at.and_utc(),
            origin_connection_id: self.origin_connection_id,
            field_times: times_of(self.field_times.as_deref()),
        })
    }
}

/// A write to the hub; `create` inserts a record with the given (new) uid.
#[derive(Debug, Clone)]
pub struct HubWrite {
    pub uid: String,
    pub create: bool,
    /// For an update: the record's `seq` as read (its version). The write fails with
    /// [`StaleHubRecord`] when the record changed since: a stale read would overwrite
    /// fields another writer committed in between.
    pub read_seq: Option<i64>,
    /// The record's per-field edit times after the write.
    pub field_times: FieldTimes,
    pub entity: String,
    pub data: StoredData,
    pub match_key: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub origin_connection_id: Option<i64>,
}

/// A record's data as the hub stores it, with its content hash: serialized once, for the
/// row and for the id map that remembers what was written.
#[derive(Debug, Clone)]
pub struct StoredData {
    text: String,
    hash: String,
}

impl StoredData {
    pub fn of(v: &Value) -> StoredData {
        let text = serde_json::to_string(v).unwrap_or_default();
        let hash = text_hash(text.as_bytes());
        StoredData { text, hash }
    }

    /// The same as [`content_hash`] of the value.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// A stable hash of a JSON value (object keys are sorted by serde_json's map): what id maps
/// compare to tell whether a side changed since Ferry last saw it.
pub fn content_hash(v: &Value) -> String {
    text_hash(&serde_json::to_vec(v).unwrap_or_default())
}

/// Whether a stored hash is the hash `now`: the same, or one stored before hashes were cut
/// to 128 bits (64 hex digits then, whose first 32 are the same hash).
pub fn same_hash(stored: Option<&str>, now: &str) -> bool {
    match stored {
        Some(s) if s.len() == 64 => s.get(..32) == Some(now),
        Some(s) => s == now,
        None => false,
    }
}

/// The content hash of a value already serialized (the hub stores this text, so a record's
/// stored hash equals `content_hash` of its data).
///
/// The first 128 bits of SHA-256, as 32 hex digits: these hashes only tell whether a
/// record changed (a collision among one record's versions is beyond any practical
/// chance), and two of them sit in every id map and one in every hub record.
fn text_hash(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in Sha256::digest(bytes).iter().take(16) {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

fn rows(v: Vec<Row>) -> Result<Vec<HubRecord>> {
    v.into_iter().map(Row::into_record).collect()
}

/// A hub record changed between a writer's read and its write: the write is refused, so
/// no writer ever overwrites fields another committed in between (the caller re-reads).
#[derive(Debug, thiserror::Error)]
#[error("hub record {0} changed while it was being merged; it is merged again on the next read")]
pub struct StaleHubRecord(pub String);

impl Store {
    /// Takes the organization's hub lock in the caller's transaction: the hub rows read
    /// after it cannot change before the transaction ends (every hub write takes it).
    pub fn lock_hub(c: &mut AnyConnection, org_id: i64) -> Result<()> {
        diesel::update(organizations::table.find(org_id))
            .set(organizations::hub_seq.eq(organizations::hub_seq))
            .execute(c)?;
        Ok(())
    }

    /// Writes a batch in the caller's transaction. Sequence numbers are taken in one UPDATE
    /// of the organization row, which also serializes concurrent writers of one hub.
    /// Returns the uid and seq of each write, in order.
    pub fn hub_write(
        c: &mut AnyConnection,
        org_id: i64,
        writes: &[HubWrite],
    ) -> Result<Vec<(String, i64)>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let n = writes.len() as i64;
        let last: i64 = diesel::update(organizations::table.find(org_id))
            .set(organizations::hub_seq.eq(organizations::hub_seq + n))
            .returning(organizations::hub_seq)
            .get_result(c)?;
        let mut out = Vec::with_capacity(writes.len());
        let mut created = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let seq = last - n + 1 + i as i64;
            let (data, hash) = (&w.data.text, &w.data.hash);
            let at = w.updated_at.naive_utc();
            let times = times_text(&w.field_times);
            if w.create {
                created.push((
                    hub_records::organization_id.eq(org_id),
                    hub_records::entity.eq(&w.entity),
                    hub_records::uid.eq(&w.uid),
                    hub_records::data.eq(data),
                    hub_records::content_hash.eq(hash),
                    hub_records::seq.eq(seq),
                    hub_records::match_key.eq(&w.match_key),
                    hub_records::updated_at.eq(at),
                    hub_records::origin_connection_id.eq(w.origin_connection_id),
                    hub_records::field_times.eq(times),
                ));
            } else {
                let n = diesel::update(
                    hub_records::table
                        .filter(hub_records::organization_id.eq(org_id))
                        .filter(hub_records::uid.eq(&w.uid))
                        .filter(hub_records::seq.eq(w.read_seq.unwrap_or(-1))),
                )
                .set((
                    hub_records::data.eq(data),
                    hub_records::content_hash.eq(hash),
                    hub_records::seq.eq(seq),
                    hub_records::match_key.eq(&w.match_key),
                    hub_records::updated_at.eq(at),
                    hub_records::origin_connection_id.eq(w.origin_connection_id),
                    hub_records::field_times.eq(times),
                ))
                .execute(c)?;
                if n == 0 {
                    return Err(anyhow::Error::new(StaleHubRecord(w.uid.clone())));
                }
            }
            out.push((w.uid.clone(), seq));
        }
        insert_many!(c, hub_records::table, &created);
        Ok(out)
    }

    /// Records of `entity` changed after `seq` that one connection does not hold yet,
    /// oldest change first. A record whose id map for this connection is linked, not waiting
    /// to go out, and last sent or read with this very content (same hash) is passed over
    /// inside the query: after a first sync, the records just read in are not read back.
    pub fn hub_changed_for(
        c: &mut AnyConnection,
        org_id: i64,
        entity: &str,
        seq: i64,
        limit: usize,
        connection: (i64, &str),
    ) -> Result<Vec<HubRecord>> {
        use super::schema::id_maps;
        use diesel::dsl::sql;
        use diesel::sql_types::Bool;
        let (connection_id, external_entity) = connection;
        rows(
            hub_records::table
                .left_join(
                    id_maps::table.on(id_maps::connection_id
                        .eq(connection_id)
                        .and(id_maps::hub_entity.eq(entity))
                        .and(id_maps::hub_id.eq(hub_records::uid.nullable()))
                        .and(id_maps::external_entity.eq(external_entity))),
                )
                .filter(hub_records::organization_id.eq(org_id))
                .filter(hub_records::entity.eq(entity))
                .filter(hub_records::seq.gt(seq))
                .filter(hub_records::deleted_at.is_null())
                // Never NULL: each comparison that could be is guarded by a check before it.
                .filter(sql::<Bool>(
                    "NOT (id_maps.external_id IS NOT NULL AND id_maps.hub_hash IS NOT NULL \
                     AND hub_records.content_hash IS NOT NULL \
                     AND id_maps.hub_hash = hub_records.content_hash \
                     AND (id_maps.retry_to IS NULL OR id_maps.retry_to <> 'external'))",
                ))
                .order(hub_records::seq)
                .limit(limit as i64)
                .select(Row::as_select())
                .load(c)?,
        )
    }

    pub fn hub_get_many(
        c: &mut AnyConnection,
        org_id: i64,
        uids: &[String],
    ) -> Result<Vec<HubRecord>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        rows(
            hub_records::table
                .filter(hub_records::organization_id.eq(org_id))
                .filter(hub_records::uid.eq_any(uids))
                .select(Row::as_select())
                .load(c)?,
        )
    }

    /// Records whose match key is one of `keys` (first-sync merging of the same real record).
    pub fn hub_by_match_keys(
        c: &mut AnyConnection,
        org_id: i64,
        entity: &str,
        keys: &[String],
    ) -> Result<Vec<(String, HubRecord)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<(Option<String>, Row)> = hub_records::table
            .filter(hub_records::organization_id.eq(org_id))
            .filter(hub_records::entity.eq(entity))
            .filter(hub_records::match_key.eq_any(keys))
            .filter(hub_records::deleted_at.is_null())
            .order(hub_records::id)
            .select((hub_records::match_key, Row::as_select()))
            .load(c)?;
        found
            .into_iter()
            .filter_map(|(k, r)| k.map(|k| (k, r)))
            .map(|(k, r)| Ok((k, r.into_record()?)))
            .collect()
    }

    /// One page of an entity's records for listing, ordered by seq.
    pub fn hub_list(&self, org_id: i64, entity: &str, limit: usize) -> Result<Vec<HubRecord>> {
        let mut c = self.conn()?;
        rows(
            hub_records::table
                .filter(hub_records::organization_id.eq(org_id))
                .filter(hub_records::entity.eq(entity))
                .filter(hub_records::deleted_at.is_null())
                .order(hub_records::seq)
                .limit(limit as i64)
                .select(Row::as_select())
                .load(&mut c)?,
        )
    }

    /// The organization's current hub sequence number.
    pub fn hub_seq(&self, org_id: i64) -> Result<i64> {
        let mut c = self.conn()?;
        Ok(organizations::table
            .find(org_id)
            .select(organizations::hub_seq)
            .first(&mut c)?)
    }
}

impl Store {
    /// Writes one record from outside a sync (an operator, another system, a test):
    /// validated against the model, then stored with a new seq. `uid: None` creates it.
    pub fn hub_put(
        &self,
        model: &crate::hub::HubModel,
        org_id: i64,
        entity: &str,
        uid: Option<&str>,
        mut data: Value,
        updated_at: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let label = uid.unwrap_or("(new)");
        model.assign_item_keys(entity, &mut data);
        model.validate(entity, label, &data)?;
        if uid.is_none() && model.entity(entity).is_some_and(|e| e.singleton) {
            let mut c = self.conn()?;
            let key = model.match_key(entity, &data).unwrap_or_default();
            if let Some((_, h)) = Self::hub_by_match_keys(&mut c, org_id, entity, &[key])?.pop() {
                return Err(crate::input_error!(
                    "{entity} is one record per organization and it has one already ({})",
                    h.uid
                ));
            }
        }
        let at = updated_at.unwrap_or_else(Utc::now);
        let current = match uid {
            Some(u) => self.hub_get(org_id, u)?,
            None => None,
        };
        let field_times = edited_fields(current.as_ref(), &data, at);
        let w = HubWrite {
            uid: uid.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string),
            create: uid.is_none(),
            read_seq: current.as_ref().map(|h| h.seq),
            field_times,
            entity: entity.to_string(),
            match_key: model.match_key(entity, &data),
            data: StoredData::of(&data),
            updated_at: at,
            origin_connection_id: None,
        };
        let mut c = self.conn()?;
        write_transaction(&mut c, |c| {
            Self::hub_write(c, org_id, std::slice::from_ref(&w))
        })?;
        Ok(w.uid)
    }

    /// One record by uid.
    pub fn hub_get(&self, org_id: i64, uid: &str) -> Result<Option<HubRecord>> {
        let mut c = self.conn()?;
        Ok(Self::hub_get_many(&mut c, org_id, &[uid.to_string()])?.pop())
    }
}

/// A record's field times after `data` replaces `current`: the fields whose values changed
/// were edited at `at`, the others keep theirs.
fn edited_fields(current: Option<&HubRecord>, data: &Value, at: DateTime<Utc>) -> FieldTimes {
    let Some(current) = current else {
        return [(EVERY_FIELD.to_string(), at)].into();
    };
    let mut times = current.field_times.clone();
    for (k, v) in data.as_object().into_iter().flatten() {
        if current.data.get(k) != Some(v) {
            times.insert(k.clone(), at);
        }
    }
    times
}
