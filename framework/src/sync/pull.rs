//! External changes into the hub: list changed records page by page, map, compare with what
//! Ferry last saw, settle conflicts, and write each page with its checkpoint in one
//! transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde_json::Value;

use super::pipeline::{Batch, Prefetch, BATCH_PAGES};
use super::premap::{prepare_page, Part, PreparedPage};
use super::EntitySync;
use crate::entity::{Fetched, ListOrder, PageRequest, SplitFn};
use crate::mapping::MapError;
use crate::store::idmaps::{IdMap, Side};
use crate::store::orgs::now;
use crate::store::runs::Cursor;
use crate::store::write_transaction;
use crate::store::{AnyConnection, Store};

/// Reads one entity's changes into the hub. The list returns records of the first part;
/// a complex entity's `split` routes each into sub-records for every part, and the parts'
/// pages are written in part order so references to the parent resolve.
pub(crate) async fn pull_entity(
    name: &str,
    split: Option<SplitFn>,
    jobs: &mut [EntitySync<'_>],
) -> Result<()> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    let (engine, p, opts, def0) = (first.engine, first.p, first.opts, first.def);
    let mut cursor = {
        let mut c = engine.store.conn()?;
        Store::cursor(&mut c, p.connection_id, name)?
    }
    .unwrap_or_else(|| Cursor {
        connection_id: p.connection_id,
        entity: name.to_string(),
        watermark: None,
        hub_seq: 0,
        updated_at: now(),
    });
    let first_sync = cursor.watermark.is_none();
    let limit = p.org.date_filtering_limit;
    let lookback = Duration::seconds(engine.settings.sync.lookback_seconds);
    let since = match (cursor.watermark, opts.full) {
        (Some(w), false) => Some(w.and_utc() - lookback).max(limit),
        _ => limit,
    };
    let read_started = Utc::now();
    // A record is settled at most once a run: what the retries read, the listing passes
    // over (a version changed since is a new change).
    jobs.iter_mut().for_each(|j| j.retrying = true);
    let retried = pull_retries(split, jobs).await;
    jobs.iter_mut().for_each(|j| j.retrying = false);
    retried?;
    let size = jobs[0].page_size(first_sync);
    let parts: Arc<[Part]> = parts(jobs).into();
    let fetch =
        |token: Option<String>| Prefetch::start(&parts, split, since, PageRequest { token, size });
    let mut clock = SourceClock {
        order: jobs[0].client.list_order(def0),
        // The application's clock as the first page is asked for, from the connection's
        // last answer (none yet in a run's first call: the first page's answer then).
        asked: jobs[0].stats.application_now(),
        ..SourceClock::default()
    };
    let mut next = Some(fetch(None));
    let mut batch = Batch::new(engine.store.conn()?, !opts.dry_run);
    let mut pages: u64 = 0;
    while let Some(pending) = next.take() {
        let listed = match pending.finish().await {
            Ok(listed) => listed,
            Err(e) => {
                // The pages before it are good: keep them.
                batch.commit()?;
                return Err(anyhow!("listing {} records: {e}", def0.external_entity));
            }
        };
        if pages == 0 {
            clock.answered = jobs[0].stats.application_now();
        }
        clock.newest = clock.newest.max(listed.latest);
        clock.listed |= listed.n > 0;
        // One page ahead: the application answers the next, and it is prepared, while
        // this one is written.
        next = listed.next.clone().map(|t| fetch(Some(t)));
        // Pages that come oldest change first are checkpoints: every change up to this
        // page's newest is in. A page in key order says nothing of the rows not read yet.
        let seen = match clock.order {
            ListOrder::ByChange => listed.latest.map(|t| t.naive_utc()),
            ListOrder::ByKey => None,
        };
        write_page(
            batch.conn()?,
            jobs,
            listed.page,
            Some((&mut cursor, seen)),
            None,
        )?;
        pages += 1;
        // A first sync grows the tables from nothing: keep the planner's view current.
        let analyze = first_sync && pages.is_power_of_two() && !opts.dry_run;
        let waiting = next.as_ref().is_some_and(|n| !n.is_finished());
        if waiting || next.is_none() || analyze || batch.pages >= BATCH_PAGES {
            batch.commit()?;
        }
        if analyze {
            engine.store.refresh_statistics()?;
        }
        (jobs[0].progress)(&format!(
            "{name}: read {} {} records",
            listed.n, def0.external_entity
        ));
    }
    if !opts.dry_run {
        // The whole list was read: everything the application changed up to its newest
        // reported change is in.
        let end = clock.watermark(read_started).map(|t| t.naive_utc());
        cursor.watermark = cursor.watermark.max(end);
        let mut c = engine.store.conn()?;
        Store::save_cursor(&mut c, &cursor)?;
    }
    Ok(())
}

/// What a listing learnt of the application's clock. The watermark is in that clock: an
/// application whose clock runs behind Ferry's, or that reports local times without an
/// offset, is read from its own times, never from Ferry's.
#[derive(Default)]
struct SourceClock {
    order: ListOrder,
    /// Whether any record was listed.
    listed: bool,
    /// The newest update time among the records listed.
    newest: Option<DateTime<Utc>>,
    /// The application's clock (its `Date` header) when the first page was answered.
    answered: Option<DateTime<Utc>>,
    /// The application's clock when the first page was asked for, if known.
    asked: Option<DateTime<Utc>>,
}

impl SourceClock {
    /// Where a complete listing leaves the watermark: the newest update time the
    /// application reported; for records that carry no time, the application's clock when
    /// the listing began (Ferry's own start of the read only for an application that gives
    /// no time at all); nothing learnt (`None`) when nothing was listed, so an empty
    /// listing never moves the window into a frame the application's times are not in.
    ///
    /// A listing in key order stops short of the moment it began: a record changed after
    /// the reader passed its key shows up only in the next run, which starts from there.
    /// The margin covers a change stamped in the second before the first page's `Date`
    /// that the page's query did not see.
    fn watermark(&self, read_started: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let w = match (self.newest, self.listed) {
            (Some(n), _) => Some(n),
            (None, true) => Some(self.answered.unwrap_or(read_started)),
            (None, false) => None,
        };
        match self.order {
            ListOrder::ByChange => w,
            ListOrder::ByKey => {
                let began =
                    self.asked.or(self.answered).unwrap_or(read_started) - Duration::seconds(2);
                w.map(|w| w.min(began))
            }
        }
    }
}

/// A targeted read (a webhook named these records): each is fetched by id and written
/// like a listed page; cursors stay where they are.
pub(crate) async fn pull_records(
    split: Option<SplitFn>,
    jobs: &mut [EntitySync<'_>],
    ids: &[String],
) -> Result<()> {
    let (client, def0) = (jobs[0].client, jobs[0].def);
    let mut wanted: Vec<&String> = ids.iter().collect();
    wanted.sort();
    wanted.dedup();
    let mut records = Vec::new();
    for id in wanted {
        match client.get(def0, id).await {
            Ok(Some(r)) => records.push(Fetched::Record(r)),
            // Gone already: the next poll reconciles.
            Ok(None) | Err(crate::http::ApiError::NotFound(_)) => {}
            Err(e) => records.push(Fetched::Bad {
                id: Some(id.clone()),
                error: e.to_string(),
            }),
        }
    }
    let n = records.len();
    let mut c = jobs[0].engine.store.conn()?;
    route_page(&mut c, jobs, split, records, None, None)?;
    (jobs[0].progress)(&format!(
        "{}: read {n} {} records by id",
        def0.name, def0.external_entity
    ));
    Ok(())
}

/// Prepares a page and writes it (see [`write_page`]).
fn route_page(
    c: &mut AnyConnection,
    jobs: &mut [EntitySync<'_>],
    split: Option<SplitFn>,
    records: Vec<Fetched>,
    checkpoint: Option<(&mut Cursor, Option<NaiveDateTime>)>,
    seen: Option<&mut HashSet<(usize, String)>>,
) -> Result<()> {
    let page = prepare_page(&parts(jobs), split, records);
    write_page(c, jobs, page, checkpoint, seen)
}

/// What preparing a page needs of each part, apart from the parts' counters.
fn parts(jobs: &[EntitySync<'_>]) -> Vec<Part> {
    jobs.iter()
        .map(|j| Part {
            client: Arc::clone(j.client),
            def: j.def.clone(),
            mapping: Arc::clone(j.mapping),
        })
        .collect()
}

/// Hands each part its prepared records of one page and writes them, the checkpoint going
/// with the last part. `seen` collects `(part, id)` of the records written, for callers
/// that need to know (retries); listing pages pass `None`.
fn write_page(
    c: &mut AnyConnection,
    jobs: &mut [EntitySync<'_>],
    page: PreparedPage,
    mut checkpoint: Option<(&mut Cursor, Option<NaiveDateTime>)>,
    mut seen: Option<&mut HashSet<(usize, String)>>,
) -> Result<()> {
    let last = jobs.len() - 1;
    for (k, (job, recs)) in jobs.iter_mut().zip(page.parts).enumerate() {
        if let Some(seen) = seen.as_deref_mut() {
            seen.extend(recs.good.iter().map(|g| (k, g.id.clone())));
        }
        let cp = if k == last { checkpoint.take() } else { None };
        job.pull_page(c, recs, &page.parents, cp)?;
    }
    Ok(())
}

/// Re-reads records that wait to reach the hub (deferred or failed earlier). A part's
/// sub-record is re-read through its parent, the only way the list gives it out.
async fn pull_retries(split: Option<SplitFn>, jobs: &mut [EntitySync<'_>]) -> Result<()> {
    let (engine, cid, dry_run) = (
        jobs[0].engine,
        jobs[0].p.connection_id,
        jobs[0].opts.dry_run,
    );
    let page_size = engine.settings.sync.page_size;
    for k in 0..jobs.len() {
        let mut after = 0;
        loop {
            let batch = {
                let mut c = engine.store.conn()?;
                Store::idmaps_to_retry(
                    &mut c,
                    cid,
                    jobs[k].def.external_entity,
                    Side::Hub,
                    after,
                    page_size,
                )?
            };
            let Some(last) = batch.last() else {
                break;
            };
            after = last.id;
            let mut waiting: HashMap<String, Vec<IdMap>> = HashMap::new();
            for m in batch {
                let parent = if k == 0 {
                    m.external_id.clone()
                } else {
                    m.parent()
                };
                if let Some(pid) = parent {
                    waiting.entry(pid).or_default().push(m);
                }
            }
            let mut records = Vec::new();
            let mut gone = Vec::new();
            let mut asked = Vec::new();
            for (pid, maps) in waiting {
                match jobs[0].client.get(jobs[0].def, &pid).await {
                    Ok(Some(r)) => {
                        records.push(Fetched::Record(r));
                        asked.extend(maps);
                    }
                    Ok(None) | Err(crate::http::ApiError::NotFound(_)) => gone.extend(maps),
                    Err(e) => records.push(Fetched::Bad {
                        id: Some(pid),
                        error: e.to_string(),
                    }),
                }
            }
            let mut seen = HashSet::new();
            let mut c = engine.store.conn()?;
            route_page(&mut c, jobs, split, records, None, Some(&mut seen))?;
            // A sub-record its parent no longer carries is gone too.
            gone.extend(asked.into_iter().filter(|m| {
                k > 0
                    && !m
                        .external_id
                        .as_ref()
                        .is_some_and(|id| seen.contains(&(k, id.clone())))
            }));
            if !gone.is_empty() && !dry_run {
                let mut c = engine.store.conn()?;
                write_transaction(&mut c, |c| {
                    for mut m in gone {
                        m.gone("no longer exists in the application".into());
                        Store::save_idmap(c, &m)?;
                    }
                    Ok::<_, anyhow::Error>(())
                })?;
            }
        }
    }
    Ok(())
}

impl EntitySync<'_> {
    /// Gives keyed list items their hub ids, recording the pairs on the id map.
    pub(super) fn key_items(&self, m: &mut IdMap, external: &Value, hub: &mut Value) {
        if self.mapping.has_keyed_lists() {
            let mut ids = m.item_ids();
            self.mapping.key_hub_items(external, hub, &mut ids);
            m.set_item_ids(&ids);
        }
    }

    pub(super) fn new_map_for_external(&self, id: &str) -> IdMap {
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
    pub(crate) fn map_failed(&mut self, m: &mut IdMap, side: Side, e: &MapError) {
        match e {
            MapError::Unresolved { .. } => {
                self.counts.deferred += 1;
                self.note(|| {
                    format!(
                        "defer {} {}: {e}",
                        m.hub_entity,
                        m.name.clone().unwrap_or_default()
                    )
                });
                m.defer(side, e.to_string());
            }
            MapError::Invalid { .. } => {
                self.counts.errors += 1;
                m.fail(side, e.to_string());
            }
        }
    }
}
