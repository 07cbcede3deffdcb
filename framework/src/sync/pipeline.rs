//! How a listing streams: the next page is fetched and prepared on the runtime while one is
//! written, and pages that keep arriving are written in one transaction.

use std::sync::Arc;

use anyhow::Result;
use chrono::{DateTime, Utc};
use diesel::connection::TransactionManager;
use diesel::Connection;

use super::premap::{prepare_page, Part, PreparedPage};
use crate::entity::{Fetched, PageRequest, SplitFn};
use crate::http::ApiError;
use crate::store::write_transaction;
use crate::store::{AnyConnection, Conn};

/// A page being listed and prepared on the runtime. Dropping it (an error while writing
/// the previous page) cancels the request.
pub(super) struct Prefetch(tokio::task::JoinHandle<Result<Listed, ApiError>>);

/// A listed page, prepared.
pub(super) struct Listed {
    pub page: PreparedPage,
    /// The token of the page after it.
    pub next: Option<String>,
    /// Records listed.
    pub n: usize,
    /// The latest change among them.
    pub latest: Option<DateTime<Utc>>,
}

impl Prefetch {
    pub(super) fn start(
        parts: &Arc<[Part]>,
        split: Option<SplitFn>,
        since: Option<DateTime<Utc>>,
        req: PageRequest,
    ) -> Prefetch {
        let parts = Arc::clone(parts);
        Prefetch(tokio::spawn(async move {
            let Part { client, def, .. } = &parts[0];
            let page = client.list_changed(def, since, &req).await?;
            let latest = page
                .records
                .iter()
                .filter_map(|f| match f {
                    Fetched::Record(r) => client.updated_at(def, r),
                    Fetched::Bad { .. } => None,
                })
                .max();
            Ok(Listed {
                n: page.records.len(),
                latest,
                next: page.next,
                page: prepare_page(&parts, split, page.records),
            })
        }))
    }

    pub(super) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    pub(super) async fn finish(mut self) -> Result<Listed, ApiError> {
        (&mut self.0)
            .await
            .unwrap_or_else(|e| Err(ApiError::Transient(format!("listing task failed: {e}"))))
    }
}

/// Pages written in one transaction while the application keeps up (the next page is
/// already here): fewer commits, and index pages that consecutive pages share go to the
/// log once. Committed before waiting on the network, so no lock is held across a wait;
/// dropped uncommitted (an error), the pages are rolled back and read again next time.
pub(super) struct Batch {
    c: Conn,
    enabled: bool,
    open: bool,
    pub(super) pages: usize,
}

/// At most this many pages in one transaction.
pub(super) const BATCH_PAGES: usize = 8;

impl Batch {
    pub(super) fn new(c: Conn, enabled: bool) -> Batch {
        Batch {
            c,
            enabled,
            open: false,
            pages: 0,
        }
    }

    /// The connection for the next page, inside the batch's transaction.
    pub(super) fn conn(&mut self) -> Result<&mut AnyConnection> {
        if self.enabled && !self.open {
            crate::store::begin_write(&mut self.c)?;
            self.open = true;
        }
        self.pages += 1;
        Ok(&mut self.c)
    }

    pub(super) fn commit(&mut self) -> Result<()> {
        self.pages = 0;
        if self.open {
            self.open = false;
            Manager::commit_transaction(&mut *self.c)?;
        }
        Ok(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.open {
            let _ = Manager::rollback_transaction(&mut *self.c);
        }
    }
}

type Manager = <AnyConnection as Connection>::TransactionManager;

/// Runs `f` in a transaction of its own, or straight inside the caller's (a batch): a
/// savepoint there would copy every database page it touches to the statement journal,
/// and an error rolls the whole batch back anyway.
pub(super) fn in_transaction<T>(
    c: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> Result<T>,
) -> Result<T> {
    match Manager::transaction_manager_status_mut(c).transaction_depth()? {
        Some(_) => f(c),
        None => write_transaction(c, f),
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}
