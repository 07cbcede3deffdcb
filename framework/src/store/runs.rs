//! Sync cursors (per connection and entity) and the run ledger.

use anyhow::Result;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{sync_cursors, sync_runs};
use super::{AnyConnection, Store};

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = sync_cursors)]
pub struct Cursor {
    pub connection_id: i64,
    pub entity: String,
    /// Newest external update time read (capped at the read's start).
    pub watermark: Option<NaiveDateTime>,
    /// Last hub change sequence pushed out.
    pub hub_seq: i64,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sync_runs)]
pub struct RunRow {
    pub id: i64,
    pub connection_id: i64,
    pub status: String,
    pub options: String,
    pub counts: String,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub message: Option<String>,
}

impl Store {
    pub fn cursor(
        c: &mut AnyConnection,
        connection_id: i64,
        entity: &str,
    ) -> Result<Option<Cursor>> {
        Ok(sync_cursors::table
            .find((connection_id, entity))
            .select(Cursor::as_select())
            .first(c)
            .optional()?)
    }

    pub fn cursors_of(&self, connection_id: i64) -> Result<Vec<Cursor>> {
        let mut c = self.conn()?;
        Ok(sync_cursors::table
            .filter(sync_cursors::connection_id.eq(connection_id))
            .order(sync_cursors::entity)
            .select(Cursor::as_select())
            .load(&mut c)?)
    }

    /// Saves a cursor in the caller's transaction (the page's writes and the checkpoint
    /// commit together).
    pub fn save_cursor(c: &mut AnyConnection, cur: &Cursor) -> Result<()> {
        let n = diesel::update(sync_cursors::table.find((cur.connection_id, &cur.entity)))
            .set((
                sync_cursors::watermark.eq(cur.watermark),
                sync_cursors::hub_seq.eq(cur.hub_seq),
                sync_cursors::updated_at.eq(super::orgs::now()),
            ))
            .execute(c)?;
        if n == 0 {
            diesel::insert_into(sync_cursors::table)
                .values((
                    sync_cursors::connection_id.eq(cur.connection_id),
                    sync_cursors::entity.eq(&cur.entity),
                    sync_cursors::watermark.eq(cur.watermark),
                    sync_cursors::hub_seq.eq(cur.hub_seq),
                    sync_cursors::updated_at.eq(super::orgs::now()),
                ))
                .execute(c)?;
        }
        Ok(())
    }

    pub fn start_run(&self, connection_id: i64, options: &str) -> Result<i64> {
        let mut c = self.conn()?;
        Ok(diesel::insert_into(sync_runs::table)
            .values((
                sync_runs::connection_id.eq(connection_id),
                sync_runs::status.eq("running"),
                sync_runs::options.eq(options),
                sync_runs::counts.eq("{}"),
                sync_runs::started_at.eq(super::orgs::now()),
            ))
            .returning(sync_runs::id)
            .get_result(&mut c)?)
    }

    /// A run requested but not started yet (status `queued`); a worker claims it.
    pub fn queue_run(&self, connection_id: i64, options: &str) -> Result<i64> {
        let mut c = self.conn()?;
        Ok(diesel::insert_into(sync_runs::table)
            .values((
                sync_runs::connection_id.eq(connection_id),
                sync_runs::status.eq("queued"),
                sync_runs::options.eq(options),
                sync_runs::counts.eq("[]"),
                sync_runs::started_at.eq(super::orgs::now()),
            ))
            .returning(sync_runs::id)
            .get_result(&mut c)?)
    }

    pub fn claim_run(&self, id: i64) -> Result<()> {
        let mut c = self.conn()?;
        diesel::update(sync_runs::table.find(id))
            .set((
                sync_runs::status.eq("running"),
                sync_runs::started_at.eq(super::orgs::now()),
            ))
            .execute(&mut c)?;
        Ok(())
    }

    pub fn run(&self, id: i64) -> Result<Option<RunRow>> {
        let mut c = self.conn()?;
        Ok(sync_runs::table
            .find(id)
            .select(RunRow::as_select())
            .first(&mut c)
            .optional()?)
    }

    pub fn finish_run(
        &self,
        id: i64,
        status: &str,
        counts: &str,
        message: Option<&str>,
    ) -> Result<()> {
        let mut c = self.conn()?;
        diesel::update(sync_runs::table.find(id))
            .set((
                sync_runs::status.eq(status),
                sync_runs::counts.eq(counts),
                sync_runs::finished_at.eq(Some(super::orgs::now())),
                sync_runs::message.eq(message),
            ))
            .execute(&mut c)?;
        Ok(())
    }

    /// The newest runs of a connection, newest first.
    pub fn runs_of(&self, connection_id: i64, limit: usize) -> Result<Vec<RunRow>> {
        let mut c = self.conn()?;
        Ok(sync_runs::table
            .filter(sync_runs::connection_id.eq(connection_id))
            .order(sync_runs::id.desc())
            .limit(limit as i64)
            .select(RunRow::as_select())
            .load(&mut c)?)
    }
}

/// Runs of one connection close together, shown as one sync run (a burst of webhooks makes
/// many small runs; operators want to see one).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunGroup {
    pub first_started: NaiveDateTime,
    pub last_started: NaiveDateTime,
    pub runs: usize,
    /// `success` if any run in it succeeded, else the best of `partial`, `running`, `error`.
    pub status: String,
    pub by_status: std::collections::BTreeMap<String, usize>,
}

/// Groups runs (newest first) whose starts are at most `window` apart.
pub fn cluster_runs(runs: &[RunRow], window: chrono::Duration) -> Vec<RunGroup> {
    let mut groups: Vec<RunGroup> = Vec::new();
    for r in runs {
        match groups.last_mut() {
            Some(g) if g.first_started - r.started_at <= window => {
                g.first_started = r.started_at;
                g.runs += 1;
                *g.by_status.entry(r.status.clone()).or_default() += 1;
            }
            _ => groups.push(RunGroup {
                first_started: r.started_at,
                last_started: r.started_at,
                runs: 1,
                status: String::new(),
                by_status: [(r.status.clone(), 1)].into(),
            }),
        }
    }
    for g in &mut groups {
        g.status = ["success", "partial", "running", "interrupted", "error"]
            .iter()
            .find(|s| g.by_status.contains_key(**s))
            .map_or_else(|| "unknown".into(), |s| s.to_string());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_succeeds_if_any_run_in_it_did() {
        let t0 = chrono::Utc::now().naive_utc();
        let run = |status: &str, minutes_ago: i64| RunRow {
            id: 0,
            connection_id: 1,
            status: status.into(),
            options: "{}".into(),
            counts: "{}".into(),
            started_at: t0 - chrono::Duration::minutes(minutes_ago),
            finished_at: None,
            message: None,
        };
        // Newest first: three runs within minutes, then one an hour earlier.
        let runs = [
            run("error", 0),
            run("success", 5),
            run("partial", 12),
            run("error", 70),
        ];
        let g = cluster_runs(&runs, chrono::Duration::minutes(15));
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].runs, g[0].status.as_str()), (3, "success"));
        assert_eq!((g[1].runs, g[1].status.as_str()), (1, "error"));
    }
}
