//! The write floor of `ferry bench`: the rows a first sync wrote (hub records and id maps)
//! written again into an empty database through the same store calls, a page at a time and
//! eight pages to a transaction as a listing batches them, with no HTTP, parsing, mapping
//! or matching. A first sync on that database cannot go below it, whatever the engine does.

use std::time::{Duration, Instant};

use anyhow::Result;
use diesel::connection::TransactionManager;
use diesel::Connection;
use ferry_framework::store::hub::{HubWrite, StoredData};
use ferry_framework::store::idmaps::IdMapFilter;
use ferry_framework::store::{AnyConnection, Store};
use ferry_framework::sync::{Engine, Prepared};
use serde::Serialize;

type Manager = <AnyConnection as Connection>::TransactionManager;

/// Pages to a transaction, as a listing writes them while the application keeps up.
const PAGES_PER_TRANSACTION: usize = 8;

/// The time spent writing the first sync's rows again into the empty database at `target`.
#[derive(Debug, Serialize)]
pub(super) struct WriteFloor {
    pub seconds: f64,
    /// Records written (a hub record and an id map each).
    pub records: usize,
}

pub(super) fn write_floor(
    engine: &Engine,
    p: &Prepared,
    target: &str,
    page: usize,
) -> Result<WriteFloor> {
    let dst = Store::open_and_migrate(target)?;
    let org = dst.upsert_org("write-floor", "Write floor", true, None)?;
    let cid = dst.upsert_connection(org, "workflowmax", "workflowmax", "{}", "{}")?;
    let (mut spent, mut after, mut pages, mut records) = (Duration::ZERO, 0, 0usize, 0);
    let synced = [p.connection_id];
    let mut c = dst.conn()?;
    loop {
        // Read from the synced database outside the timing.
        let read = engine
            .store
            .idmaps_after(&IdMapFilter::all(&synced), after, page as i64)?;
        let last = read.len() < page;
        after = read.last().map_or(after, |m| m.id);
        pages += 1;
        let uids: Vec<String> = read.iter().filter_map(|m| m.hub_id.clone()).collect();
        let mut src = engine.store.conn()?;
        let mut hub = Vec::with_capacity(uids.len());
        for h in Store::hub_get_many(&mut src, p.org_id, &uids)? {
            hub.push(HubWrite {
                match_key: engine.hub.match_key(&h.entity, &h.data),
                uid: h.uid,
                create: true,
                read_seq: None,
                field_times: h.field_times,
                entity: h.entity,
                data: StoredData::of(&h.data),
                updated_at: h.updated_at,
                origin_connection_id: Some(cid),
            });
        }
        let maps: Vec<_> = read
            .into_iter()
            .map(|mut m| {
                m.id = 0;
                m.connection_id = cid;
                m
            })
            .collect();
        // Written as it is read: only one page is held, as in a sync.
        let started = Instant::now();
        if pages % PAGES_PER_TRANSACTION == 1 {
            Manager::begin_transaction(&mut *c)?;
        }
        Store::hub_write(&mut c, org, &hub)?;
        Store::save_idmaps(&mut c, &maps)?;
        if last || pages % PAGES_PER_TRANSACTION == 0 {
            Manager::commit_transaction(&mut *c)?;
        }
        spent += started.elapsed();
        records += maps.len();
        if last {
            return Ok(WriteFloor {
                seconds: spent.as_secs_f64(),
                records,
            });
        }
    }
}
