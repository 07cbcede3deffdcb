//! The write floor of `ferry bench`: the rows a first sync wrote (hub records and id maps)
//! written again into an empty database through the same store calls, a page at a time and
//! eight pages to a transaction as a listing batches them, with no HTTP, parsing, mapping
//! or matching. A first sync on that database cannot go below it, whatever the engine does.

use std::time::{Duration, Instant};

use anyhow::Result;
use diesel::Connection;
use ferry_framework::store::hub::{HubWrite, StoredData};
use ferry_framework::store::Store;
use ferry_framework::sync::{Engine, Prepared};

/// Pages to a transaction, as a listing writes them while the application keeps up.
const PAGES_PER_TRANSACTION: usize = 8;

/// Seconds spent writing the first sync's rows again into the empty database at `target`.
pub(super) fn write_floor(engine: &Engine, p: &Prepared, target: &str, page: usize) -> Result<f64> {
    let dst = Store::open_and_migrate(target)?;
    let org = dst.upsert_org("write-floor", "Write floor", true, None)?;
    let cid = dst.upsert_connection(org, "workflowmax", "workflowmax", "{}", "{}")?;
    let (mut spent, mut offset, mut pages) = (Duration::ZERO, 0i64, 0usize);
    let mut batch = Vec::new();
    loop {
        // Read from the synced database outside the timing.
        let (_, read) =
            engine
                .store
                .idmaps_page(&[p.connection_id], None, false, offset, page as i64)?;
        let last = read.len() < page;
        offset += read.len() as i64;
        pages += 1;
        let uids: Vec<String> = read.iter().filter_map(|m| m.hub_id.clone()).collect();
        let mut src = engine.store.conn()?;
        let mut hub = Vec::with_capacity(uids.len());
        for h in Store::hub_get_many(&mut src, p.org_id, &uids)? {
            hub.push(HubWrite {
                match_key: engine.hub.match_key(&h.entity, &h.data),
                uid: h.uid,
                create: true,
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
        batch.push((hub, maps));
        if last || pages % PAGES_PER_TRANSACTION == 0 {
            let started = Instant::now();
            let mut c = dst.conn()?;
            c.transaction(|c| {
                for (hub, maps) in &batch {
                    Store::hub_write(c, org, hub)?;
                    Store::save_idmaps(c, maps)?;
                }
                Ok::<_, anyhow::Error>(())
            })?;
            spent += started.elapsed();
            batch.clear();
        }
        if last {
            return Ok(spent.as_secs_f64());
        }
    }
}
