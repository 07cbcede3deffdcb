//! Durable jobs: enqueued work leased by one worker at a time, with lease expiry (a crashed
//! worker's job goes to another), retries with backoff, dead jobs kept for operators, and
//! de-duplication keys that fold later requests into a job still waiting. On PostgreSQL
//! leasing uses `FOR UPDATE SKIP LOCKED`, so any number of workers share the table.

use anyhow::Result;
use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::{Text, Timestamp};

use super::orgs::now;
use super::schema::{jobs, webhook_events};
use super::{on_backend, AnyConnection, Store};

/// `status` values.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const DONE: &str = "done";
    /// Out of attempts; kept with its last error until an operator retries or drops it.
    pub const DEAD: &str = "dead";
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, PartialEq)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub dedupe_key: Option<String>,
    pub status: String,
    pub run_at: NaiveDateTime,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A job to add.
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: &'a str,
    pub dedupe_key: Option<&'a str>,
    pub run_at: NaiveDateTime,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = webhook_events)]
pub struct WebhookEventRow {
    pub id: i64,
    pub connection_id: i64,
    pub provider_event_id: String,
    pub event: String,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    pub payload: String,
    pub status: String,
    pub reason: Option<String>,
    pub job_id: Option<i64>,
    pub received_at: NaiveDateTime,
}

const LEASE_SQL: &str = "UPDATE jobs SET status = 'running', lease_owner = $1, \
     lease_expires_at = $2, attempts = attempts + 1, updated_at = $3 \
     WHERE id = (SELECT id FROM jobs \
       WHERE (status = 'queued' AND run_at <= $3) \
          OR (status = 'running' AND lease_expires_at < $3 AND attempts < max_attempts) \
       ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING *";

impl Store {
    /// Adds a job; `None` when a job with the same key is still waiting.
    pub fn enqueue(&self, job: &NewJob<'_>) -> Result<Option<i64>> {
        let mut c = self.conn()?;
        Self::enqueue_in(&mut c, job)
    }

    pub fn enqueue_in(c: &mut AnyConnection, job: &NewJob<'_>) -> Result<Option<i64>> {
        let t = now();
        let values = (
            jobs::kind.eq(job.kind),
            jobs::payload.eq(job.payload),
            jobs::dedupe_key.eq(job.dedupe_key),
            jobs::status.eq(status::QUEUED),
            jobs::run_at.eq(job.run_at),
            jobs::attempts.eq(0),
            jobs::max_attempts.eq(job.max_attempts),
            jobs::created_at.eq(t),
            jobs::updated_at.eq(t),
        );
        Ok(on_backend!(c, |conn| diesel::insert_into(jobs::table)
            .values(values)
            .on_conflict_do_nothing()
            .returning(jobs::id)
            .get_result(conn)
            .optional()?))
    }

    /// The waiting job with this key, if any, locked until the caller's transaction ends
    /// (to fold a new request into it). On PostgreSQL the row lock makes concurrent folds
    /// take turns, and a worker's lease (`SKIP LOCKED`) passes the job over until the fold
    /// commits: without it, two folds read the same payload and the later write drops the
    /// earlier's record. SQLite's write transaction (`BEGIN IMMEDIATE`) already serializes.
    pub fn queued_job(c: &mut AnyConnection, key: &str) -> Result<Option<Job>> {
        let q = jobs::table
            .filter(jobs::dedupe_key.eq(key))
            .filter(jobs::status.eq(status::QUEUED));
        Ok(match c {
            AnyConnection::Postgresql(pg) => q
                .select(Job::as_select())
                .for_update()
                .first(pg)
                .optional()?,
            AnyConnection::Sqlite(lite) => q.select(Job::as_select()).first(lite).optional()?,
        })
    }

    pub fn set_job_payload(c: &mut AnyConnection, id: i64, payload: &str) -> Result<()> {
        diesel::update(jobs::table.find(id))
            .set((jobs::payload.eq(payload), jobs::updated_at.eq(now())))
            .execute(c)?;
        Ok(())
    }

    /// Takes the next due job (or one whose worker's lease ran out) for `owner`.
    pub fn lease_job(&self, owner: &str, lease_seconds: i64) -> Result<Option<Job>> {
        let mut c = self.conn()?;
        let t = now();
        let until = t + Duration::seconds(lease_seconds);
        let job = match &mut *c {
            AnyConnection::Postgresql(pg) => diesel::sql_query(LEASE_SQL)
                .bind::<Text, _>(owner)
                .bind::<Timestamp, _>(until)
                .bind::<Timestamp, _>(t)
                .get_result::<Job>(pg)
                .optional()?,
            // SQLite has one writer at a time: the statement is atomic as it stands.
            AnyConnection::Sqlite(lite) => {
                diesel::sql_query(LEASE_SQL.replace(" FOR UPDATE SKIP LOCKED", ""))
                    .bind::<Text, _>(owner)
                    .bind::<Timestamp, _>(until)
                    .bind::<Timestamp, _>(t)
                    .get_result::<Job>(lite)
                    .optional()?
            }
        };
        Ok(job)
    }

    /// Extends a running job's lease; false when another worker took it over.
    pub fn heartbeat(&self, id: i64, owner: &str, lease_seconds: i64) -> Result<bool> {
        let mut c = self.conn()?;
        let n = diesel::update(
            jobs::table
                .find(id)
                .filter(jobs::lease_owner.eq(owner))
                .filter(jobs::status.eq(status::RUNNING)),
        )
        .set(jobs::lease_expires_at.eq(now() + Duration::seconds(lease_seconds)))
        .execute(&mut c)?;
        Ok(n == 1)
    }

    fn finish_job(
        &self,
        id: i64,
        owner: &str,
        new_status: &str,
        run_at: Option<NaiveDateTime>,
        error: Option<&str>,
        refund_attempt: bool,
    ) -> Result<bool> {
        let mut c = self.conn()?;
        let q = jobs::table
            .find(id)
            .filter(jobs::lease_owner.eq(owner))
            .filter(jobs::status.eq(status::RUNNING));
        let t = now();
        let n = diesel::update(q)
            .set((
                jobs::status.eq(new_status),
                jobs::run_at.eq(run_at.unwrap_or(t)),
                jobs::lease_owner.eq(None::<String>),
                jobs::lease_expires_at.eq(None::<NaiveDateTime>),
                jobs::last_error.eq(error),
                jobs::updated_at.eq(t),
                jobs::attempts.eq(jobs::attempts - if refund_attempt { 1 } else { 0 }),
            ))
            .execute(&mut c)?;
        Ok(n == 1)
    }

    pub fn complete_job(&self, id: i64, owner: &str) -> Result<bool> {
        self.finish_job(id, owner, status::DONE, None, None, false)
    }

    /// A failed attempt: queued again at `retry_at`, or dead when there is none.
    pub fn fail_job(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<NaiveDateTime>,
    ) -> Result<bool> {
        match retry_at {
            Some(at) => self.finish_job(id, owner, status::QUEUED, Some(at), Some(error), false),
            None => self.finish_job(id, owner, status::DEAD, None, Some(error), false),
        }
    }

    /// Puts a job back without using up an attempt (its connection was busy, or the worker
    /// is shutting down).
    pub fn release_job(&self, id: i64, owner: &str, run_at: NaiveDateTime) -> Result<bool> {
        self.finish_job(id, owner, status::QUEUED, Some(run_at), None, true)
    }

    /// Jobs whose worker died on their last attempt become dead.
    pub fn reap_jobs(&self) -> Result<usize> {
        let mut c = self.conn()?;
        let t = now();
        Ok(diesel::update(
            jobs::table
                .filter(jobs::status.eq(status::RUNNING))
                .filter(jobs::lease_expires_at.lt(t))
                .filter(jobs::attempts.ge(jobs::max_attempts)),
        )
        .set((
            jobs::status.eq(status::DEAD),
            jobs::last_error.eq("the worker running its last attempt stopped"),
            jobs::lease_owner.eq(None::<String>),
            jobs::updated_at.eq(t),
        ))
        .execute(&mut c)?)
    }

    /// Whether a job with this key is waiting or running.
    pub fn active_job(&self, key: &str) -> Result<bool> {
        let mut c = self.conn()?;
        let n: i64 = jobs::table
            .filter(jobs::dedupe_key.eq(key))
            .filter(jobs::status.eq_any([status::QUEUED, status::RUNNING]))
            .count()
            .get_result(&mut c)?;
        Ok(n > 0)
    }

    pub fn jobs(&self, only_status: Option<&str>, limit: usize) -> Result<Vec<Job>> {
        let mut c = self.conn()?;
        let mut q = jobs::table.select(Job::as_select()).into_boxed();
        if let Some(s) = only_status {
            q = q.filter(jobs::status.eq(s.to_string()));
        }
        Ok(q.order(jobs::id.desc()).limit(limit as i64).load(&mut c)?)
    }

    pub fn job(&self, id: i64) -> Result<Option<Job>> {
        let mut c = self.conn()?;
        Ok(jobs::table
            .find(id)
            .select(Job::as_select())
            .first(&mut c)
            .optional()?)
    }

    /// Stores a received webhook event; `None` when this provider event id was seen already.
    #[allow(clippy::too_many_arguments)]
    pub fn record_webhook(
        c: &mut AnyConnection,
        connection_id: i64,
        provider_event_id: &str,
        event: &str,
        entity: Option<&str>,
        record_id: Option<&str>,
        payload: &str,
        event_status: &str,
        reason: Option<&str>,
        job_id: Option<i64>,
    ) -> Result<Option<i64>> {
        let values = (
            webhook_events::connection_id.eq(connection_id),
            webhook_events::provider_event_id.eq(provider_event_id),
            webhook_events::event.eq(event),
            webhook_events::entity.eq(entity),
            webhook_events::record_id.eq(record_id),
            webhook_events::payload.eq(payload),
            webhook_events::status.eq(event_status),
            webhook_events::reason.eq(reason),
            webhook_events::job_id.eq(job_id),
            webhook_events::received_at.eq(now()),
        );
        Ok(on_backend!(c, |conn| diesel::insert_into(
            webhook_events::table
        )
        .values(values)
        .on_conflict_do_nothing()
        .returning(webhook_events::id)
        .get_result(conn)
        .optional()?))
    }

    pub fn webhook_events_of(&self, connection_id: i64) -> Result<Vec<WebhookEventRow>> {
        let mut c = self.conn()?;
        Ok(webhook_events::table
            .filter(webhook_events::connection_id.eq(connection_id))
            .order(webhook_events::id)
            .select(WebhookEventRow::as_select())
            .load(&mut c)?)
    }
}
