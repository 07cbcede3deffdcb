//! External changes into the hub: list changed records page by page, map, compare with what
//! Ferry last saw, settle conflicts, and write each page with its checkpoint in one
//! transaction.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, Result};
use chrono::{DateTime, Duration, Utc};
use diesel::Connection;
use serde_json::Value;

use super::support::{content_hash, merge, PageRefs};
use super::EntitySync;
use crate::config::ConflictPolicy;
use crate::entity::{Fetched, PageRequest};
use crate::mapping::MapError;
use crate::store::hub::{HubRecord, HubWrite};
use crate::store::idmaps::{retry, state, IdMap};
use crate::store::orgs::now;
use crate::store::runs::Cursor;
use crate::store::Store;

impl EntitySync<'_> {
    pub(crate) async fn pull(&mut self) -> Result<()> {
        let mut cursor = {
            let mut c = self.engine.store.conn()?;
            Store::cursor(&mut c, self.p.connection_id, self.def.name)?
        };
        let first_sync = cursor.as_ref().is_none_or(|c| c.watermark.is_none());
        let limit = self.p.org.date_filtering_limit;
        let lookback = Duration::seconds(self.engine.settings.sync.lookback_seconds);
        let since = match (&cursor, self.opts.full) {
            (Some(cur), false) => cur.watermark.map(|w| w.and_utc() - lookback).max(limit),
            _ => limit,
        };
        let read_started = Utc::now();
        self.pull_retries().await?;
        let size = self.page_size(first_sync);
        let mut token = None;
        loop {
            let page = self
                .client
                .list_changed(self.def, since, &PageRequest { token, size })
                .await
                .map_err(|e| anyhow!("listing {} records: {e}", self.def.external_entity))?;
            let cur = cursor.get_or_insert_with(|| Cursor {
                connection_id: self.p.connection_id,
                entity: self.def.name.to_string(),
                watermark: None,
                hub_seq: 0,
                updated_at: now(),
            });
            let n = page.records.len();
            self.pull_page(page.records, Some((cur, read_started)))?;
            (self.progress)(&format!(
                "{}: read {n} {} records",
                self.def.name, self.def.external_entity
            ));
            token = page.next;
            if token.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Re-reads records that wait to reach the hub (deferred or failed earlier).
    async fn pull_retries(&mut self) -> Result<()> {
        let mut after = 0;
        loop {
            let batch = {
                let mut c = self.engine.store.conn()?;
                Store::idmaps_to_retry(
                    &mut c,
                    self.p.connection_id,
                    self.def.external_entity,
                    retry::HUB,
                    after,
                    self.engine.settings.sync.page_size,
                )?
            };
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = last.id;
            let mut records = Vec::new();
            let mut gone = Vec::new();
            for m in batch {
                let Some(id) = m.external_id.clone() else {
                    continue;
                };
                match self.client.get(self.def, &id).await {
                    Ok(Some(r)) => records.push(Fetched::Record(r)),
                    Ok(None) | Err(crate::http::ApiError::NotFound(_)) => gone.push(m),
                    Err(e) => records.push(Fetched::Bad {
                        id: Some(id),
                        error: e.to_string(),
                    }),
                }
            }
            if !gone.is_empty() && !self.opts.dry_run {
                let mut c = self.engine.store.conn()?;
                c.transaction(|c| {
                    for mut m in gone {
                        m.state = state::INACTIVE.into();
                        m.retry_to = None;
                        m.last_error = Some("no longer exists in the application".into());
                        Store::save_idmap(c, &m)?;
                    }
                    Ok::<_, anyhow::Error>(())
                })?;
            }
            self.pull_page(records, None)?;
        }
    }

    fn pull_page(
        &mut self,
        records: Vec<Fetched>,
        checkpoint: Option<(&mut Cursor, DateTime<Utc>)>,
    ) -> Result<()> {
        let cid = self.p.connection_id;
        let (hub_entity, ext_entity) = (self.def.hub_entity, self.def.external_entity);
        self.counts.fetched += records.len() as u64;
        let mut good: Vec<(String, Value)> = Vec::new();
        let mut bad: Vec<(String, String)> = Vec::new();
        for f in records {
            match f {
                Fetched::Record(r) => match self.client.record_id(self.def, &r) {
                    Some(id) => {
                        good.retain(|(g, _)| g != &id);
                        good.push((id, r));
                    }
                    None => {
                        self.counts.errors += 1;
                        tracing::warn!(entity = ext_entity, "record without an id skipped");
                    }
                },
                Fetched::Bad {
                    id: Some(id),
                    error,
                } => bad.push((id, error)),
                Fetched::Bad { id: None, error } => {
                    self.counts.errors += 1;
                    tracing::warn!(entity = ext_entity, %error, "unreadable record");
                }
            }
        }
        let mut c = self.engine.store.conn()?;
        let mut ids: Vec<String> = good.iter().map(|(id, _)| id.clone()).collect();
        ids.extend(bad.iter().map(|(id, _)| id.clone()));
        let mut maps = Store::idmaps_by_external(&mut c, cid, ext_entity, &ids)?;
        let wanted = good
            .iter()
            .flat_map(|(_, r)| self.mapping.external_refs(r))
            .collect();
        let mut refs = PageRefs::load(&mut c, cid, wanted, true)?;
        let linked: Vec<String> = maps.values().filter_map(|m| m.hub_id.clone()).collect();
        let hubs: HashMap<String, HubRecord> = Store::hub_get_many(&mut c, self.p.org_id, &linked)?
            .into_iter()
            .map(|h| (h.uid.clone(), h))
            .collect();

        let mut out_maps: Vec<IdMap> = Vec::new();
        for (id, error) in bad {
            self.counts.errors += 1;
            let mut m = maps
                .remove(&id)
                .unwrap_or_else(|| self.new_map_for_external(&id));
            fail(&mut m, retry::HUB, error);
            out_maps.push(m);
        }

        // Map everything first, so first-sync matching can look all keys up at once.
        let mut mapped = Vec::new();
        let mut page_newest: Option<DateTime<Utc>> = None;
        for (id, r) in good {
            let mut m = maps
                .remove(&id)
                .unwrap_or_else(|| self.new_map_for_external(&id));
            m.name = self.client.display_name(self.def, &r).or(m.name);
            let updated = self.client.updated_at(self.def, &r);
            page_newest = page_newest.max(updated);
            if !m.to_hub || m.state == state::INACTIVE {
                self.counts.skipped += 1;
                continue;
            }
            if let (Some(limit), None, Some(u)) =
                (self.p.org.date_filtering_limit, &m.hub_id, updated)
            {
                if u < limit {
                    self.counts.skipped += 1;
                    continue;
                }
            }
            match self.mapping.to_hub(&r, &refs) {
                Ok(v) => mapped.push((m, v, updated)),
                Err(e) => {
                    self.map_failed(&mut m, retry::HUB, &e);
                    out_maps.push(m);
                }
            }
        }
        let keys: Vec<String> = mapped
            .iter()
            .filter(|(m, _, _)| m.hub_id.is_none())
            .filter_map(|(_, v, _)| self.engine.hub.match_key(hub_entity, v))
            .collect();
        let mut candidates: HashMap<String, HubRecord> = HashMap::new();
        let found = Store::hub_by_match_keys(&mut c, self.p.org_id, hub_entity, &keys)?;
        let found_ids: Vec<String> = found.iter().map(|(_, h)| h.uid.clone()).collect();
        // A hub record whose create was interrupted is still free: the record that create
        // left in the application is adopted (with that pending id map) instead of becoming
        // a second hub record.
        let (mut pending, taken): (HashMap<String, IdMap>, HashMap<String, IdMap>) =
            Store::idmaps_by_hub(&mut c, cid, hub_entity, ext_entity, &found_ids)?
                .into_iter()
                .partition(|(_, m)| m.state == state::PENDING_CREATE && m.external_id.is_none());
        for (k, h) in found {
            if !taken.contains_key(&h.uid) {
                candidates.entry(k).or_insert(h);
            }
        }

        let mut writes: Vec<HubWrite> = Vec::new();
        let mut claimed: HashSet<String> = HashSet::new();
        for (mut m, v, updated) in mapped {
            let hp = content_hash(&v);
            let ext_id = m.external_id.clone().unwrap_or_default();
            if m.hub_id.is_some() && m.ext_hash.as_deref() == Some(hp.as_str()) {
                self.counts.skipped += 1;
                if m.retry_to.is_some() || m.last_error.is_some() {
                    m.retry_to = None;
                    m.last_error = None;
                    out_maps.push(m);
                }
                continue;
            }
            let existing = match &m.hub_id {
                Some(uid) => hubs.get(uid).cloned(),
                None => {
                    let found = self
                        .engine
                        .hub
                        .match_key(hub_entity, &v)
                        .and_then(|k| candidates.get(&k))
                        .filter(|h| !claimed.contains(&h.uid))
                        .cloned();
                    if let Some(p) = found.as_ref().and_then(|h| pending.remove(&h.uid)) {
                        m.id = p.id;
                        m.hub_hash = p.hub_hash;
                    }
                    found
                }
            };
            let label = format!("{hub_entity} from {ext_entity} {ext_id}");
            let (uid, data, create) = match existing {
                Some(h) => {
                    let hub_changed = m
                        .hub_hash
                        .as_ref()
                        .is_some_and(|hh| *hh != content_hash(&h.data));
                    if hub_changed {
                        self.counts.conflicts += 1;
                        let external_wins = match self.sel.conflict {
                            ConflictPolicy::Hub => false,
                            ConflictPolicy::External => true,
                            ConflictPolicy::Newest => updated.is_none_or(|u| u >= h.updated_at),
                        };
                        self.note(format!(
                            "conflict on {label}: {} wins",
                            if external_wins {
                                "the application"
                            } else {
                                "the hub"
                            }
                        ));
                        if !external_wins {
                            // The push half sends the hub's version out.
                            continue;
                        }
                    }
                    let merged = merge(&h.data, &v);
                    if merged == h.data {
                        self.counts.skipped += 1;
                        m.hub_id = Some(h.uid.clone());
                        self.linked(&mut m, hp, &merged);
                        claimed.insert(h.uid.clone());
                        refs.add(hub_entity, &ext_id, &h.uid);
                        out_maps.push(m);
                        continue;
                    }
                    (h.uid, merged, false)
                }
                None => (uuid::Uuid::now_v7().to_string(), v, true),
            };
            if let Err(e) = self.engine.hub.validate(hub_entity, &label, &data) {
                self.counts.errors += 1;
                fail(&mut m, retry::HUB, format!("{e:#}"));
                out_maps.push(m);
                continue;
            }
            if create {
                self.counts.created_in_hub += 1;
                self.note(format!("hub: create {label}"));
            } else {
                self.counts.updated_in_hub += 1;
                self.note(format!("hub: update {label}"));
            }
            m.hub_id = Some(uid.clone());
            m.last_push_to_hub = Some(now());
            self.linked(&mut m, hp, &data);
            claimed.insert(uid.clone());
            refs.add(hub_entity, &ext_id, &uid);
            writes.push(HubWrite {
                uid,
                create,
                entity: hub_entity.to_string(),
                match_key: self.engine.hub.match_key(hub_entity, &data),
                data,
                updated_at: Utc::now(),
                origin_connection_id: Some(cid),
            });
            out_maps.push(m);
        }

        if self.opts.dry_run {
            return Ok(());
        }
        c.transaction(|c| {
            Store::hub_write(c, self.p.org_id, &writes)?;
            for m in &out_maps {
                Store::save_idmap(c, m)?;
            }
            if let Some((cur, read_started)) = checkpoint {
                // Never past the read's start: later changes are read next time.
                let seen = page_newest.map(|t| t.min(read_started).naive_utc());
                cur.watermark = cur.watermark.max(seen);
                Store::save_cursor(c, cur)?;
            }
            self.renew(c)
        })
    }

    fn new_map_for_external(&self, id: &str) -> IdMap {
        let mut m = IdMap::new(
            self.p.connection_id,
            self.def.hub_entity,
            self.def.external_entity,
        );
        m.external_id = Some(id.to_string());
        m
    }

    /// Marks a record whose mapping failed: deferred (a reference is not linked yet) or
    /// failed (its data does not fit); either way it is retried on the next run.
    pub(crate) fn map_failed(&mut self, m: &mut IdMap, side: &str, e: &MapError) {
        let unlinked = if side == retry::HUB {
            m.hub_id.is_none()
        } else {
            m.external_id.is_none()
        };
        match e {
            MapError::Unresolved { .. } => {
                self.counts.deferred += 1;
                self.note(format!(
                    "defer {} {}: {e}",
                    m.hub_entity,
                    m.name.clone().unwrap_or_default()
                ));
                if unlinked {
                    m.state = state::DEFERRED.into();
                }
                m.retry_to = Some(side.into());
                m.last_error = Some(e.to_string());
            }
            MapError::Invalid { .. } => {
                self.counts.errors += 1;
                fail(m, side, e.to_string());
                if !unlinked {
                    m.state = state::LINKED.into();
                }
            }
        }
    }

    fn linked(&self, m: &mut IdMap, ext_hash: String, hub_data: &Value) {
        m.state = state::LINKED.into();
        m.ext_hash = Some(ext_hash);
        m.hub_hash = Some(content_hash(hub_data));
        m.retry_to = None;
        m.last_error = None;
        m.updated_at = now();
    }
}

/// Records a failure on an id map, to be retried towards `side`.
pub(crate) fn fail(m: &mut IdMap, side: &str, error: String) {
    if m.hub_id.is_none() || m.external_id.is_none() {
        m.state = state::FAILED.into();
    }
    m.retry_to = Some(side.into());
    m.last_error = Some(error);
    m.updated_at = now();
}
