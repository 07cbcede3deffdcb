//! One listed page into the hub, in named stages: load what the page's records are linked
//! to, map them, match new ones, settle each against its base (a field-level three-way
//! merge, [`super::merge`]), and stage the writes, which go in with the page's checkpoint
//! in one transaction under the organization's hub lock.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use super::merge::{self, FieldSet, Fields, Settled, Sides};
use super::pipeline::in_transaction;
use super::premap::{to_hub, Prepared, Ready};
use super::support::{content_hash, PageRefs};
use super::EntitySync;
use crate::store::conflicts::NewConflict;
use crate::store::hub::{same_hash, FieldTimes, HubRecord, HubWrite, StoredData};
use crate::store::idmaps::{IdMap, LinkState, Side};
use crate::store::orgs::now;
use crate::store::runs::Cursor;
use crate::store::{AnyConnection, Store};

/// A listed record, mapped, on its way to being settled.
struct Candidate {
    map: IdMap,
    /// Its hub-shaped values, and their hash (what the id map's `ext_hash` compares).
    values: Value,
    hash: String,
    /// The application's edit time, or when Ferry first saw the change.
    edited: DateTime<Utc>,
    record: Value,
    created: Option<Result<Value, crate::mapping::MapError>>,
}

/// What a page writes, decided before anything is written.
#[derive(Default)]
struct Staged {
    writes: Vec<HubWrite>,
    maps: Vec<IdMap>,
    conflicts: Vec<NewConflict>,
}

/// First-time matches of a run, by match key, and keys found ambiguous across its pages.
#[derive(Default)]
pub(super) struct MatchLog {
    merged: HashMap<String, FirstMatch>,
    ambiguous: HashSet<String>,
}

/// A record merged into a hub record on first sight, with what the hub record held before.
struct FirstMatch {
    external_id: String,
    hub_id: String,
    before: Fields,
    before_times: FieldTimes,
}

/// Hub records new records may be merged into (first-sync matching), by match key.
#[derive(Default)]
struct Matches {
    free: HashMap<String, HubRecord>,
    /// Keys more than one record holds on either side: never merged.
    ambiguous: HashSet<String>,
    /// Hub records whose create into this application was interrupted, by hub id.
    pending: HashMap<String, IdMap>,
    /// Interrupted creates (their id maps, hub records and what was sent), for a record
    /// they left in the application to be recognized by content.
    interrupted: Vec<(IdMap, HubRecord, Fields)>,
    /// Hub records already claimed in this page.
    claimed: HashSet<String>,
}

impl EntitySync<'_> {
    pub(super) fn pull_page(
        &mut self,
        c: &mut AnyConnection,
        page: Prepared,
        parents: &HashMap<String, String>,
        checkpoint: Option<(&mut Cursor, Option<NaiveDateTime>)>,
    ) -> Result<()> {
        self.counts.fetched += page.listed as u64;
        for error in &page.unreadable {
            self.counts.errors += 1;
            tracing::warn!(entity = self.def.external_entity, %error, "unreadable record skipped");
        }
        let dry_run = self.opts.dry_run;
        in_transaction(c, |c| {
            if !dry_run {
                // Nothing another writer commits can slip between this page's reads of
                // the hub and its writes.
                Store::lock_hub(c, self.p.org_id)?;
            }
            let staged = self.settle_page(c, page, parents)?;
            if dry_run {
                return Ok(());
            }
            self.stage_writes(c, staged, checkpoint)
        })
    }

    fn settle_page(
        &mut self,
        c: &mut AnyConnection,
        page: Prepared,
        parents: &HashMap<String, String>,
    ) -> Result<Staged> {
        let cid = self.p.connection_id;
        let mut ids: Vec<String> = page.good.iter().map(|g| g.id.clone()).collect();
        ids.extend(page.bad.iter().map(|(id, _)| id.clone()));
        let mut maps = Store::idmaps_by_external(c, cid, self.def.external_entity, &ids)?;
        let wanted = page
            .good
            .iter()
            .flat_map(|g| g.refs.iter().cloned())
            .collect();
        let mut refs = PageRefs::load(c, cid, wanted, true)?;
        let mut staged = Staged::default();
        for (id, error) in page.bad {
            self.counts.errors += 1;
            let mut m = maps
                .remove(&id)
                .unwrap_or_else(|| self.new_map_for_external(&id));
            m.fail(Side::Hub, error);
            staged.maps.push(m);
        }
        let candidates = self.map_records(page.good, &mut maps, parents, &refs, &mut staged);
        let linked: Vec<String> = candidates
            .iter()
            .filter_map(|k| k.map.hub_id.clone())
            .collect();
        let hubs: HashMap<String, HubRecord> = Store::hub_get_many(c, self.p.org_id, &linked)?
            .into_iter()
            .map(|h| (h.uid.clone(), h))
            .collect();
        let mut matches = self.matches(c, &candidates)?;
        let fields = FieldSet::of(self.mapping);
        // Keys found ambiguous stay so for the run; a first-time match an earlier page
        // made on one of them is undone.
        for key in &matches.ambiguous {
            self.matched.ambiguous.insert(key.clone());
            if let Some(m) = self.matched.merged.remove(key) {
                self.undo_match(c, m, &fields, &mut staged)?;
            }
        }
        for k in candidates {
            let ext_id = k.map.external_id.clone().unwrap_or_default();
            let existing = match &k.map.hub_id {
                Some(uid) => hubs.get(uid).cloned(),
                None => None,
            };
            let uid = match existing {
                Some(h) => self.settle_linked(k, h, &fields, &mut staged),
                None => self.settle_unlinked(k, &mut matches, &fields, &refs, &mut staged),
            };
            if let Some(uid) = uid {
                matches.claimed.insert(uid.clone());
                refs.add(self.def.hub_entity, &ext_id, &uid);
            }
        }
        Ok(staged)
    }

    /// Maps a page's records; those that need nothing (unchanged since Ferry last saw
    /// them, opted out) are finished here.
    fn map_records(
        &mut self,
        good: Vec<Ready>,
        maps: &mut HashMap<String, IdMap>,
        parents: &HashMap<String, String>,
        refs: &PageRefs,
        staged: &mut Staged,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        for g in good {
            let mut m = maps
                .remove(&g.id)
                .unwrap_or_else(|| self.new_map_for_external(&g.id));
            m.name = self.client.display_name(self.def, &g.record).or(m.name);
            let moved = match parents.get(&g.id) {
                Some(pid) if m.parent().as_ref() != Some(pid) => {
                    m.set_parent(pid);
                    true
                }
                _ => false,
            };
            let updated = self.client.updated_at(self.def, &g.record);
            if !m.to_hub || m.state() == LinkState::Inactive || self.before_limit(&m, updated) {
                self.counts.skipped += 1;
                continue;
            }
            let (mut values, hash) = match g
                .mapped
                .unwrap_or_else(|| to_hub(self.mapping, &g.record, refs))
            {
                Ok(ok) => ok,
                Err(e) => {
                    self.map_failed(&mut m, Side::Hub, &e);
                    staged.maps.push(m);
                    continue;
                }
            };
            self.key_items(&mut m, &g.record, &mut values);
            if self.retrying {
                self.retried.insert(g.id.clone(), hash.clone());
            } else if self.retried.get(&g.id) == Some(&hash) {
                self.counts.skipped += 1;
                continue;
            }
            if m.hub_id.is_some() && same_hash(m.ext_hash.as_deref(), &hash) {
                // Unchanged since Ferry last saw it (or wrote it: an echo).
                self.counts.skipped += 1;
                if self.unchanged(&mut m, &values) || moved {
                    staged.maps.push(m);
                }
                continue;
            }
            out.push(Candidate {
                map: m,
                values,
                hash,
                edited: updated.unwrap_or(self.started),
                record: g.record,
                created: g.created,
            });
        }
        out
    }

    /// A record older than the organization's date filtering limit is not brought in.
    fn before_limit(&self, m: &IdMap, updated: Option<DateTime<Utc>>) -> bool {
        match (self.p.org.date_filtering_limit, &m.hub_id, updated) {
            (Some(limit), None, Some(u)) => u < limit,
            _ => false,
        }
    }

    /// An unchanged record finishes a pending pull; a pending push stays pending. A record
    /// linked before bases existed takes its current values as its base. Returns whether
    /// the id map changed.
    fn unchanged(&self, m: &mut IdMap, values: &Value) -> bool {
        let mut changed = false;
        if m.waits_for(Side::Hub) || (m.waiting().is_none() && m.last_error.is_some()) {
            m.settled();
            changed = true;
        }
        if m.base.is_none() {
            let fields = FieldSet::of(self.mapping);
            m.base = Some(fields.base_text(values));
            changed = true;
        }
        changed
    }

    /// First-sync matching: which hub records new records may merge into. A key that more
    /// than one hub record holds, or more than one record of this page, is ambiguous.
    fn matches(&self, c: &mut AnyConnection, candidates: &[Candidate]) -> Result<Matches> {
        let hub_entity = self.def.hub_entity;
        let mut page_keys: HashMap<String, usize> = HashMap::new();
        for k in candidates.iter().filter(|k| k.map.hub_id.is_none()) {
            if let Some(key) = self.engine.hub.match_key(hub_entity, &k.values) {
                *page_keys.entry(key).or_default() += 1;
            }
        }
        let keys: Vec<String> = page_keys.keys().cloned().collect();
        let found = Store::hub_by_match_keys(c, self.p.org_id, hub_entity, &keys)?;
        let mut out = Matches::default();
        let mut hub_keys: HashMap<String, usize> = HashMap::new();
        for (k, _) in &found {
            *hub_keys.entry(k.clone()).or_default() += 1;
        }
        out.ambiguous = hub_keys
            .iter()
            .filter(|(k, n)| **n > 1 || page_keys.get(*k).is_some_and(|p| *p > 1))
            .map(|(k, _)| k.clone())
            .collect();
        // A key an earlier page of this run merged is held by two application records.
        out.ambiguous.extend(
            page_keys
                .keys()
                .filter(|k| {
                    self.matched.merged.contains_key(*k) || self.matched.ambiguous.contains(*k)
                })
                .cloned(),
        );
        let found_ids: Vec<String> = found.iter().map(|(_, h)| h.uid.clone()).collect();
        let cid = self.p.connection_id;
        let (pending, taken): (HashMap<String, IdMap>, HashMap<String, IdMap>) =
            Store::idmaps_by_hub(c, cid, hub_entity, self.def.external_entity, &found_ids)?
                .into_iter()
                .partition(|(_, m)| {
                    m.state() == LinkState::PendingCreate && m.external_id.is_none()
                });
        out.pending = pending;
        if candidates.iter().any(|k| k.map.hub_id.is_none()) {
            out.interrupted = self.interrupted_creates(c)?;
        }
        for (k, h) in found {
            if !taken.contains_key(&h.uid) {
                out.free.entry(k).or_insert(h);
            }
        }
        Ok(out)
    }

    /// This connection's creates whose answer never came, with their hub records and what
    /// they sent (kept as the pending id map's base; none for a create from before that).
    fn interrupted_creates(
        &self,
        c: &mut AnyConnection,
    ) -> Result<Vec<(IdMap, HubRecord, Fields)>> {
        let cid = self.p.connection_id;
        let maps = Store::interrupted_creates(c, cid, self.def.external_entity)?;
        let uids: Vec<String> = maps.iter().filter_map(|m| m.hub_id.clone()).collect();
        let mut hubs: HashMap<String, HubRecord> = Store::hub_get_many(c, self.p.org_id, &uids)?
            .into_iter()
            .map(|h| (h.uid.clone(), h))
            .collect();
        Ok(maps
            .into_iter()
            .filter_map(|m| {
                let h = hubs.remove(m.hub_id.as_deref()?)?;
                let sent = merge::base_from_text(m.base.as_deref()).filter(|s| !s.is_empty())?;
                Some((m, h, sent))
            })
            .collect())
    }

    /// A record not linked yet that an interrupted create left in the application: it
    /// holds every value the create sent (the pending id map's base), whatever the hub
    /// record has become since. Taken out of `matches` when found.
    fn left_by_create(
        &self,
        k: &Candidate,
        matches: &mut Matches,
        fields: &FieldSet,
    ) -> Option<(IdMap, HubRecord, Fields)> {
        let external = fields.project(&k.values, true);
        let at = matches.interrupted.iter().position(|(_, h, sent)| {
            !matches.claimed.contains(&h.uid)
                && sent
                    .iter()
                    .all(|(f, v)| external.get(f).unwrap_or(&Value::Null) == v)
        })?;
        let (m, h, sent) = matches.interrupted.swap_remove(at);
        matches.pending.remove(&h.uid);
        Some((m, h, sent))
    }

    /// Undoes a first-time match a later page proved ambiguous: the hub record gets back
    /// the values the merge gave it (where nothing changed them since), and the
    /// application's record becomes a hub record of its own, made from its values (its
    /// base: after a first-time merge it holds every value the record carried).
    fn undo_match(
        &mut self,
        c: &mut AnyConnection,
        m: FirstMatch,
        fields: &FieldSet,
        staged: &mut Staged,
    ) -> Result<()> {
        let cid = self.p.connection_id;
        let ids = [m.external_id.clone()];
        let Some(mut map) = Store::idmaps_by_external(c, cid, self.def.external_entity, &ids)?
            .remove(&m.external_id)
        else {
            return Ok(());
        };
        let base = merge::base_from_text(map.base.as_deref()).unwrap_or_default();
        if let Some(h) =
            Store::hub_get_many(c, self.p.org_id, std::slice::from_ref(&m.hub_id))?.pop()
        {
            let now = fields.project(&h.data, false);
            let mut data = h.data.clone();
            for (f, v) in &base {
                if now.get(f) == Some(v) && m.before.get(f) != Some(v) {
                    let old = m.before.get(f).cloned().unwrap_or(Value::Null);
                    fields.apply(&mut data, &Fields::from([(f.clone(), old)]));
                }
            }
            if data != h.data {
                staged
                    .writes
                    .push(self.hub_write(&h.uid, Some(h.seq), &data, m.before_times));
            }
        }
        let mut own = Value::Object(Default::default());
        fields.apply(&mut own, &base);
        let uid = uuid::Uuid::now_v7().to_string();
        let write = self.hub_write(
            &uid,
            None,
            &own,
            [(merge::EVERY_FIELD.to_string(), self.started)].into(),
        );
        map.hub_id = Some(uid);
        map.hub_hash = Some(write.data.hash().to_string());
        map.settled();
        map.set_note("ambiguous match: another record of the application has the same match key; kept apart, not merged");
        self.counts.ambiguous += 1;
        self.counts.created_in_hub += 1;
        staged.writes.push(write);
        staged.maps.push(map);
        Ok(())
    }

    /// A record linked to a hub record: merged field by field against its base.
    fn settle_linked(
        &mut self,
        mut k: Candidate,
        h: HubRecord,
        fields: &FieldSet,
        staged: &mut Staged,
    ) -> Option<String> {
        let mut base = match k.map.base.as_deref() {
            Some(text) => merge::base_from_text(Some(text)).unwrap_or_default(),
            // Linked before bases existed. A hub unchanged since that link's last sync
            // holds what was agreed; a hub changed too leaves nothing known as agreed, so
            // every difference is settled by the policy.
            None if same_hash(k.map.hub_hash.as_deref(), &content_hash(&h.data)) => {
                fields.project(&h.data, false)
            }
            None => Fields::new(),
        };
        // An update whose answer never came: the values it sent that the application now
        // holds are Ferry's own write, agreed, not a user's edit to weigh against the hub.
        if let Some(sent) = k.map.sent() {
            let external = fields.project(&k.values, true);
            for (f, v) in sent {
                if external.get(&f) == Some(&v) {
                    base.insert(f, v);
                }
            }
            k.map.set_sent(None);
        }
        Some(self.merge_into(k, h, base, fields, staged))
    }

    /// A record not linked yet: merged into the hub record it matches, or created.
    fn settle_unlinked(
        &mut self,
        mut k: Candidate,
        matches: &mut Matches,
        fields: &FieldSet,
        refs: &PageRefs,
        staged: &mut Staged,
    ) -> Option<String> {
        if let Some((p, h, sent)) = self.left_by_create(&k, matches, fields) {
            // What the create sent is what both sides agreed on; later hub edits go out.
            k.map.id = p.id;
            k.map.hub_hash = p.hub_hash;
            return Some(self.merge_into(k, h, sent, fields, staged));
        }
        let key = self.engine.hub.match_key(self.def.hub_entity, &k.values);
        let ambiguous = key.as_ref().filter(|k| matches.ambiguous.contains(*k)).map(|key| {
            let on = self
                .engine
                .hub
                .entity(self.def.hub_entity)
                .map(|e| e.match_on.join(", "))
                .unwrap_or_default();
            format!("ambiguous match: more than one record has {on} {key:?}; kept apart, not merged")
        });
        if let (None, Some(key)) = (&ambiguous, key) {
            if let Some(h) = matches
                .free
                .get(&key)
                .filter(|h| !matches.claimed.contains(&h.uid))
                .cloned()
            {
                if let Some(p) = matches.pending.remove(&h.uid) {
                    // The record an interrupted create left in the application.
                    k.map.id = p.id;
                    k.map.hub_hash = p.hub_hash;
                }
                self.matched.merged.insert(
                    key,
                    FirstMatch {
                        external_id: k.map.external_id.clone().unwrap_or_default(),
                        hub_id: h.uid.clone(),
                        before: fields.project(&h.data, false),
                        before_times: h.field_times.clone(),
                    },
                );
                // Nothing was ever agreed: every difference is settled by the policy.
                return Some(self.merge_into(k, h, Fields::new(), fields, staged));
            }
        }
        self.create_in_hub(k, fields, refs, staged, ambiguous)
    }

    /// Settles a record against the hub record `h` from `base`, staging the hub write, the
    /// conflicts and the id map. Returns the hub id.
    fn merge_into(
        &mut self,
        mut k: Candidate,
        h: HubRecord,
        base: Fields,
        fields: &FieldSet,
        staged: &mut Staged,
    ) -> String {
        let external = fields.project(&k.values, true);
        let hub = fields.project(&h.data, false);
        let s = merge::settle(&Sides {
            base: &base,
            external: &external,
            hub: &hub,
            external_time: Some(k.edited),
            hub_times: &h.field_times,
            hub_time: Some(h.updated_at),
            policy: self.sel.conflict,
            outbound: &fields.outbound,
        });
        self.note_conflicts(&k.map, &h.uid, &s, staged);
        let mut data = h.data.clone();
        fields.apply(&mut data, &s.to_hub);
        let label = self.label(&k.map);
        if data != h.data {
            if let Err(e) = self.engine.hub.validate(self.def.hub_entity, &label, &data) {
                // Nothing is agreed and nothing seen: the record is settled again, and
                // fails again visibly, on every run until it is fixed.
                self.counts.errors += 1;
                k.map.fail(Side::Hub, format!("{e:#}"));
                staged.maps.push(k.map);
                return h.uid;
            }
        }
        let pushes = s.push && self.sel.direction.to_external() && self.def.capabilities.update;
        k.map.hub_id = Some(h.uid.clone());
        k.map.set_state(LinkState::Linked);
        k.map.ext_hash = Some(k.hash);
        k.map.base = Some(merge::base_to_text(&s.base));
        k.map.updated_at = now();
        if data == h.data {
            self.counts.skipped += 1;
        } else {
            self.counts.updated_in_hub += 1;
            self.note(|| format!("hub: update {label}"));
            let mut times = h.field_times.clone();
            for f in s.to_hub.keys() {
                times.insert(f.clone(), k.edited);
            }
            k.map.last_push_to_hub = Some(now());
            staged
                .writes
                .push(self.hub_write(&h.uid, Some(h.seq), &data, times));
        }
        if pushes {
            k.map.push_pending();
        } else {
            k.map.hub_hash = Some(content_hash(&data));
            k.map.settled();
        }
        staged.maps.push(k.map);
        h.uid
    }

    /// A new hub record from an application record (creation-only rules applied).
    fn create_in_hub(
        &mut self,
        mut k: Candidate,
        fields: &FieldSet,
        refs: &PageRefs,
        staged: &mut Staged,
        ambiguity: Option<String>,
    ) -> Option<String> {
        let mut data = k.values;
        if self.mapping.has_create_rules() {
            let made = k
                .created
                .take()
                .unwrap_or_else(|| self.mapping.to_hub_new(&k.record, refs));
            if let Ok(mut new) = made {
                self.key_items(&mut k.map, &k.record, &mut new);
                data = new;
            }
        }
        let label = self.label(&k.map);
        if let Err(e) = self.engine.hub.validate(self.def.hub_entity, &label, &data) {
            self.counts.errors += 1;
            k.map.fail(Side::Hub, format!("{e:#}"));
            staged.maps.push(k.map);
            return None;
        }
        self.counts.created_in_hub += 1;
        self.note(|| format!("hub: create {label}"));
        let uid = uuid::Uuid::now_v7().to_string();
        let times: FieldTimes = [(merge::EVERY_FIELD.to_string(), k.edited)].into();
        let write = self.hub_write(&uid, None, &data, times);
        k.map.hub_id = Some(uid.clone());
        k.map.last_push_to_hub = Some(now());
        k.map.base = Some(fields.base_text(&data));
        k.map.agreed(k.hash, write.data.hash().to_string());
        if let Some(why) = ambiguity {
            // Reported on the id map and counted in the run; the record stays itself.
            self.counts.ambiguous += 1;
            k.map.set_note(&why);
        }
        staged.writes.push(write);
        staged.maps.push(k.map);
        Some(uid)
    }

    fn hub_write(
        &self,
        uid: &str,
        read_seq: Option<i64>,
        data: &Value,
        field_times: FieldTimes,
    ) -> HubWrite {
        HubWrite {
            uid: uid.to_string(),
            create: read_seq.is_none(),
            read_seq,
            field_times,
            entity: self.def.hub_entity.to_string(),
            match_key: self.engine.hub.match_key(self.def.hub_entity, data),
            data: StoredData::of(data),
            updated_at: Utc::now(),
            origin_connection_id: Some(self.p.connection_id),
        }
    }

    fn label(&self, m: &IdMap) -> String {
        format!(
            "{} from {} {}",
            self.def.hub_entity,
            self.def.external_entity,
            m.external_id.as_deref().unwrap_or_default()
        )
    }

    /// Counts, plans and stages a record's conflicts for the conflict log.
    fn note_conflicts(&mut self, m: &IdMap, hub_id: &str, s: &Settled, staged: &mut Staged) {
        for conflict in &s.conflicts {
            self.counts.conflicts += 1;
            let label = self.label(m);
            self.note(|| {
                format!(
                    "conflict on {label}, field `{}`: the {} wins",
                    conflict.field,
                    conflict.winner.as_str()
                )
            });
            staged.conflicts.push(NewConflict {
                connection_id: self.p.connection_id,
                id_map_id: m.id,
                hub_entity: self.def.hub_entity.to_string(),
                hub_id: hub_id.to_string(),
                external_id: m.external_id.clone().unwrap_or_default(),
                field: conflict.field.clone(),
                hub_value: conflict.hub.to_string(),
                external_value: conflict.external.to_string(),
                hub_time: conflict.hub_time.map(|t| t.naive_utc()),
                external_time: conflict.external_time.map(|t| t.naive_utc()),
                winner: conflict.winner.as_str().to_string(),
                created_at: now(),
            });
        }
    }

    /// Writes a settled page: hub records, id maps, conflicts and the checkpoint.
    fn stage_writes(
        &self,
        c: &mut AnyConnection,
        staged: Staged,
        checkpoint: Option<(&mut Cursor, Option<NaiveDateTime>)>,
    ) -> Result<()> {
        Store::hub_write(c, self.p.org_id, &staged.writes)?;
        Store::save_idmaps(c, &staged.maps)?;
        Store::record_conflicts(c, &staged.conflicts)?;
        if let Some((cur, seen)) = checkpoint {
            cur.watermark = cur.watermark.max(seen);
            Store::save_cursor(c, cur)?;
        }
        self.renew(c)
    }
}
