//! Hub changes out to the application: read hub records changed since the cursor's seq,
//! skip what the application already holds, and create or update the rest. A create first
//! commits a `pending_create` id map, so a crash after the API call is finished by matching
//! instead of creating a duplicate.

use anyhow::Result;
use serde_json::Value;

use std::collections::{BTreeSet, HashMap};

use super::merge::{self, FieldSet, Fields};
use super::support::{content_hash, external_fingerprint, PageRefs};
use super::EntitySync;
use crate::http::ApiError;
use crate::store::hub::{same_hash, HubRecord};
use crate::store::idmaps::{IdMap, LinkState, Side};
use crate::store::orgs::now;
use crate::store::runs::Cursor;
use crate::store::write_transaction;
use crate::store::Store;

enum Action {
    Create { recovering: bool },
    Update(String),
}

struct Work {
    rec: HubRecord,
    map: IdMap,
    payload: Value,
    action: Action,
    /// For an update from a base: the fields it changes.
    changed: Option<BTreeSet<String>>,
}

impl EntitySync<'_> {
    pub(crate) async fn push(&mut self) -> Result<()> {
        let mut cur = {
            let mut c = self.engine.store.conn()?;
            Store::cursor(&mut c, self.p.connection_id, self.def.name)?
        }
        .unwrap_or_else(|| Cursor {
            connection_id: self.p.connection_id,
            entity: self.def.name.to_string(),
            watermark: None,
            hub_seq: 0,
            updated_at: now(),
        });
        // A record is written at most once a run: one retried here (and refused again,
        // say) waits for the next run instead of being sent twice; a version of it that
        // another writer committed since is a new change and goes out.
        let retried = self.push_retries().await?;
        // Every record up to here is committed: the ones the query passes over (already in
        // the application) are behind the cursor once the loop is done.
        let upto = self.engine.store.hub_seq(self.p.org_id)?;
        let size = self.page_size(cur.hub_seq == 0);
        let mut seq = if self.opts.full { 0 } else { cur.hub_seq };
        loop {
            let mut recs = {
                let mut c = self.engine.store.conn()?;
                Store::hub_changed_for(
                    &mut c,
                    self.p.org_id,
                    self.def.hub_entity,
                    seq,
                    size,
                    (self.p.connection_id, self.def.external_entity),
                )?
            };
            let Some(last) = recs.last() else { break };
            seq = last.seq;
            let n = recs.len();
            cur.hub_seq = cur.hub_seq.max(seq);
            recs.retain(|r| retried.get(&r.uid) != Some(&r.seq));
            self.push_page(recs, Some(&cur)).await?;
            (self.progress)(&format!(
                "{}: checked {n} hub {} records",
                self.def.name, self.def.hub_entity
            ));
            if n < size {
                break;
            }
        }
        if upto > cur.hub_seq && !self.opts.dry_run {
            cur.hub_seq = upto;
            let mut c = self.engine.store.conn()?;
            Store::save_cursor(&mut c, &cur)?;
        }
        Ok(())
    }

    /// Hub records that still have to reach the application (deferred, failed, or an
    /// interrupted create). Returns the version (seq) of each record it handled.
    async fn push_retries(&mut self) -> Result<HashMap<String, i64>> {
        let mut after = 0;
        let mut retried = HashMap::new();
        loop {
            let recs = {
                let mut c = self.engine.store.conn()?;
                let batch = Store::idmaps_to_retry(
                    &mut c,
                    self.p.connection_id,
                    self.def.external_entity,
                    Side::External,
                    after,
                    self.engine.settings.sync.page_size,
                )?;
                let Some(last) = batch.last() else {
                    return Ok(retried);
                };
                after = last.id;
                let uids: Vec<String> = batch.iter().filter_map(|m| m.hub_id.clone()).collect();
                Store::hub_get_many(&mut c, self.p.org_id, &uids)?
            };
            retried.extend(recs.iter().map(|r| (r.uid.clone(), r.seq)));
            self.push_page(recs, None).await?;
        }
    }

    async fn push_page(&mut self, recs: Vec<HubRecord>, checkpoint: Option<&Cursor>) -> Result<()> {
        let cid = self.p.connection_id;
        let (hub_entity, ext_entity) = (self.def.hub_entity, self.def.external_entity);
        let caps = self.def.capabilities;
        let mut c = self.engine.store.conn()?;
        let uids: Vec<String> = recs.iter().map(|r| r.uid.clone()).collect();
        let mut maps = Store::idmaps_by_hub(&mut c, cid, hub_entity, ext_entity, &uids)?;
        let wanted = recs
            .iter()
            .flat_map(|r| self.mapping.hub_refs(&r.data))
            .collect();
        let mut refs = PageRefs::load(&mut c, cid, wanted, false)?;
        let fields = FieldSet::of(self.mapping);

        let mut done: Vec<IdMap> = Vec::new();
        let mut work: Vec<Work> = Vec::new();
        for rec in recs {
            let mut m = maps.remove(&rec.uid).unwrap_or_else(|| {
                let mut m = IdMap::new(cid, hub_entity, ext_entity);
                m.hub_id = Some(rec.uid.clone());
                m
            });
            let h = content_hash(&rec.data);
            let waiting = m.waits_for(Side::External);
            if !m.to_external || m.state() == LinkState::Inactive {
                self.counts.skipped += 1;
                continue;
            }
            if let Some(route) = self.route {
                if route(hub_entity, &rec.data) != Some(self.def.name) {
                    // A complex entity's router sends this record to another part, or the
                    // application has no place for it.
                    continue;
                }
            }
            if m.external_id.is_some() && same_hash(m.hub_hash.as_deref(), &h) && !waiting {
                self.counts.skipped += 1;
                continue;
            }
            if let (Some(limit), 0) = (self.p.org.date_filtering_limit, m.id) {
                if rec.updated_at < limit {
                    self.counts.skipped += 1;
                    continue;
                }
            }
            if m.name.is_none() {
                m.name = display(&rec.data);
            }
            let Some((payload, changed)) = self.payload(&mut m, &rec, &fields, &refs) else {
                done.push(m);
                continue;
            };
            let action = match m.external_id.clone() {
                Some(_) if changed.as_ref().is_some_and(|c| c.is_empty()) || !caps.update => {
                    // The application already holds this content.
                    self.counts.skipped += 1;
                    m.hub_hash = Some(h);
                    m.reached_external();
                    done.push(m);
                    continue;
                }
                Some(id) => Action::Update(id),
                None if caps.create => Action::Create {
                    recovering: m.state() == LinkState::PendingCreate,
                },
                None => {
                    self.counts.skipped += 1;
                    continue;
                }
            };
            work.push(Work {
                rec,
                map: m,
                payload,
                action,
                changed,
            });
        }

        if self.opts.dry_run {
            for w in &work {
                let what = match &w.action {
                    Action::Create { .. } => {
                        self.counts.created_in_app += 1;
                        "create"
                    }
                    Action::Update(_) => {
                        self.counts.updated_in_app += 1;
                        "update"
                    }
                };
                let name = w.map.name.clone().unwrap_or_default();
                self.note(|| {
                    format!(
                        "{}: {what} {ext_entity} from {hub_entity} {name}",
                        self.p.config.name
                    )
                });
            }
            return Ok(());
        }

        // Commit the intent before calling the application: what each create and update
        // sends, so a write whose answer never comes is known for Ferry's own.
        write_transaction(&mut c, |c| {
            let mut sending = Vec::new();
            for w in work.iter_mut() {
                match (&w.action, &w.changed) {
                    (Action::Create { recovering: false }, _) => {
                        w.map.begin_create();
                        w.map.base = Some(fields.base_text(&w.rec.data));
                    }
                    (Action::Update(_), Some(changed)) => {
                        let hub = fields.project(&w.rec.data, false);
                        let sent = changed
                            .iter()
                            .filter_map(|f| Some((f.clone(), hub.get(f)?.clone())))
                            .collect();
                        w.map.set_sent(Some(sent));
                        sending.push(&w.map);
                        continue;
                    }
                    _ => continue,
                }
                w.map.id = Store::save_idmap(c, &w.map)?;
            }
            Store::save_idmap_metadata(c, &sending)?;
            Ok::<_, anyhow::Error>(())
        })?;
        drop(c);

        for mut w in work {
            let h = content_hash(&w.rec.data);
            let result = match &w.action {
                Action::Update(id) => self
                    .client
                    .update_in(self.def, id, w.map.parent().as_deref(), &w.payload)
                    .await
                    .map(|r| (r, false)),
                Action::Create { recovering } => self.create(&w, *recovering).await,
            };
            let result = result.and_then(|(stored, created)| {
                let id = self.answered_id(&w.action, &stored)?;
                Ok((stored, created, id))
            });
            match result {
                Ok((stored, created, ext_id)) => {
                    if created {
                        self.counts.created_in_app += 1;
                    } else {
                        self.counts.updated_in_app += 1;
                    }
                    refs.add(hub_entity, &ext_id, &w.rec.uid);
                    if self.mapping.has_keyed_lists() {
                        let mut ids = w.map.item_ids();
                        self.mapping.learn_item_ids(&w.rec.data, &stored, &mut ids);
                        w.map.set_item_ids(&ids);
                    }
                    w.map.external_id = Some(ext_id);
                    let base = agreed(&w, &fields);
                    // What the application answered is Ferry's own write (an echo the next
                    // pull passes over) unless it also holds an edit of a field the update
                    // did not send, made since the application was last read: then the
                    // next pull must read it.
                    w.map.ext_hash =
                        match self.holds_unread_edit(&w, &stored, &base, &fields, &refs) {
                            true => None,
                            false => Some(external_fingerprint(self.mapping, &stored, &refs)),
                        };
                    w.map.base = Some(merge::base_to_text(&base));
                    w.map.set_sent(None);
                    w.map.hub_hash = Some(h);
                    w.map.set_state(LinkState::Linked);
                    w.map.reached_external();
                    w.map.last_push_to_external = Some(now());
                }
                Err(ApiError::NotFound(msg)) if matches!(w.action, Action::Update(_)) => {
                    self.counts.skipped += 1;
                    w.map.gone(format!("gone from the application: {msg}"));
                }
                Err(e) => {
                    self.counts.errors += 1;
                    let pending = w.map.state() == LinkState::PendingCreate;
                    if matches!(w.action, Action::Update(_)) && !may_have_landed(&e) {
                        // An answer that refuses the write: nothing of it is in the
                        // application, so nothing there is Ferry's own.
                        w.map.set_sent(None);
                    }
                    w.map.fail(Side::External, e.to_string());
                    if pending {
                        // The create may have happened: the next run matches before creating.
                        w.map.set_state(LinkState::PendingCreate);
                    }
                }
            }
            done.push(w.map);
        }

        let mut c = self.engine.store.conn()?;
        write_transaction(&mut c, |c| {
            for m in &done {
                Store::save_idmap(c, m)?;
            }
            if let Some(cur) = checkpoint {
                Store::save_cursor(c, cur)?;
            }
            self.renew(c)
        })
    }

    /// What to send for a record: everything for a create; for an update, the fields that
    /// changed in the hub since the base (`Some` set, empty when none did), or for a record
    /// linked before bases existed, every mapped field unless the application already
    /// holds them (`None`). A record that cannot be mapped yet is marked and left out.
    fn payload(
        &mut self,
        m: &mut IdMap,
        rec: &HubRecord,
        fields: &FieldSet,
        refs: &PageRefs,
    ) -> Option<(Value, Option<BTreeSet<String>>)> {
        let base = merge::base_from_text(m.base.as_deref());
        let (mapped, changed) = match (&m.external_id, base) {
            (None, _) => (self.mapping.to_external_new(&rec.data, refs), None),
            (Some(_), Some(base)) => {
                let hub = fields.project(&rec.data, false);
                let changed = merge::hub_changes(&hub, &base, &fields.outbound);
                // An application Ferry cannot read (an outbound actionflow) takes whole
                // records: nothing there is anyone's edit to keep.
                let p = match self.def.capabilities.read {
                    true => self.mapping.to_external_fields(&rec.data, refs, &changed),
                    false => self.mapping.to_external(&rec.data, refs),
                };
                (p, Some(changed))
            }
            (Some(_), None) => {
                let p = self.mapping.to_external(&rec.data, refs);
                let held = p.as_ref().is_ok_and(|p| {
                    m.ext_hash.as_deref()
                        == Some(external_fingerprint(self.mapping, p, refs).as_str())
                });
                (p, held.then(BTreeSet::new))
            }
        };
        match mapped {
            Ok(mut p) => {
                self.mapping
                    .key_external_items(&rec.data, &mut p, &m.item_ids());
                Some((p, changed))
            }
            Err(e) => {
                self.map_failed(m, Side::External, &e);
                None
            }
        }
    }

    /// Whether an updated record, as the application answered, holds a value of a field
    /// the update did not send that differs from the base: a user's edit made since the
    /// last read.
    fn holds_unread_edit(
        &self,
        w: &Work,
        stored: &Value,
        base: &Fields,
        fields: &FieldSet,
        refs: &PageRefs,
    ) -> bool {
        let (Some(changed), Ok(seen)) = (&w.changed, self.mapping.to_hub(stored, refs)) else {
            return false;
        };
        fields
            .project(&seen, true)
            .iter()
            .any(|(f, v)| !changed.contains(f) && base.get(f).unwrap_or(&Value::Null) != v)
    }

    /// Creates a record, or after an interrupted create, links the one already there.
    /// Returns the stored record and whether it was created now.
    async fn create(&self, w: &Work, recovering: bool) -> Result<(Value, bool), ApiError> {
        if recovering {
            if let Some(found) = self.client.find_match(self.def, &w.payload).await? {
                let taken = match self.client.record_id(self.def, &found) {
                    Some(id) => {
                        let mut c = self
                            .engine
                            .store
                            .conn()
                            .map_err(|e| ApiError::Transient(e.to_string()))?;
                        Store::idmaps_by_external(
                            &mut c,
                            self.p.connection_id,
                            self.def.external_entity,
                            std::slice::from_ref(&id),
                        )
                        .map_err(|e| ApiError::Transient(e.to_string()))?
                        .contains_key(&id)
                    }
                    None => true,
                };
                if !taken {
                    return Ok((found, false));
                }
            }
        }
        let key = w.map.hub_id.as_deref().unwrap_or_default();
        self.client
            .create(self.def, &w.payload, key)
            .await
            .map(|r| (r, true))
    }
}

impl EntitySync<'_> {
    /// The id of the record a write's answer holds. An answer without a readable id, or
    /// (for an update) with another record's id, is malformed: the write may have landed,
    /// and the link keeps the id Ferry wrote to, never one an answer claims.
    fn answered_id(&self, action: &Action, stored: &Value) -> Result<String, ApiError> {
        let id = self.client.record_id(self.def, stored).ok_or_else(|| {
            ApiError::Malformed("the application answered a record without a readable id".into())
        })?;
        match action {
            Action::Update(wrote) if *wrote != id => Err(ApiError::Malformed(format!(
                "the application answered record {id} to a write of record {wrote}"
            ))),
            _ => Ok(id),
        }
    }
}

/// Whether a failed write may still have been stored: no answer came, or one Ferry could
/// not read. A refusal (4xx), a rate limit or an authentication failure stored nothing.
fn may_have_landed(e: &ApiError) -> bool {
    matches!(e, ApiError::Transient(_) | ApiError::Malformed(_))
}

/// The base after a successful write: an update makes the fields it sent agreed; a create,
/// or an update of a record linked before bases existed, every mapped field.
fn agreed(w: &Work, fields: &FieldSet) -> Fields {
    let hub = fields.project(&w.rec.data, false);
    match (&w.changed, merge::base_from_text(w.map.base.as_deref())) {
        (Some(changed), Some(mut base)) => {
            for f in changed {
                if let Some(v) = hub.get(f) {
                    base.insert(f.clone(), v.clone());
                }
            }
            base
        }
        _ => hub,
    }
}

/// A short label for a hub record in id maps and plans.
fn display(data: &Value) -> Option<String> {
    for k in ["name", "full_name", "title"] {
        if let Some(Value::String(s)) = data.get(k) {
            return Some(s.clone());
        }
    }
    let first = data.get("first_name").and_then(Value::as_str);
    let last = data.get("last_name").and_then(Value::as_str);
    match (first, last) {
        (None, None) => None,
        (f, l) => Some(
            format!("{} {}", f.unwrap_or(""), l.unwrap_or(""))
                .trim()
                .to_string(),
        ),
    }
}
