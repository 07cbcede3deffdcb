//! A worker: takes due jobs from the queue one at a time, keeps their lease alive while it
//! works, and records the outcome: done, retried later with exponential backoff, or dead.
//! A job whose connection is busy goes back without using an attempt. On shutdown the
//! running job may finish within the grace period (`runtime.shutdown_grace_seconds`);
//! after it, the job stops at its next safe point and goes back to the queue.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{anyhow, Result};
use chrono::Duration;
use tokio::sync::watch;

use super::{Runtime, SyncJob, SYNC};
use crate::store::jobs::Job;
use crate::store::orgs::now;
use crate::sync::{Busy, Interrupted, SyncOptions};

/// Runs jobs until `shutdown` turns true.
pub async fn run(rt: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let owner = format!(
        "worker-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let lease = rt.settings().runtime.job_lease_seconds;
    let poll = StdDuration::from_millis(rt.settings().runtime.poll_millis);
    tracing::info!(%owner, "worker started");
    while !*shutdown.borrow() {
        rt.mark_worker_seen();
        if let Err(e) = rt.store().reap_jobs() {
            tracing::warn!(error = %format!("{e:#}"), "could not reap jobs");
        }
        let job = match rt.store().lease_job(&owner, lease) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not take a job");
                None
            }
        };
        match job {
            Some(job) => run_one(&rt, &owner, job, shutdown.clone()).await,
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    // A dropped sender means the process is going away: stop too (a closed channel
                    // answers at once, and the loop would spin).
                    changed = shutdown.changed() => if changed.is_err() { break },
                }
            }
        }
    }
    tracing::info!(%owner, "worker stopped");
    Ok(())
}

/// Backoff after failed attempt `n` (1-based): base * 2^(n-1), capped.
pub fn backoff(base_seconds: i64, cap_seconds: i64, attempt: i32) -> Duration {
    let exp = (attempt.max(1) - 1).min(20) as u32;
    Duration::seconds(
        base_seconds
            .saturating_mul(2i64.saturating_pow(exp))
            .min(cap_seconds),
    )
}

/// Once `shutdown` turns true, waits the grace period and then interrupts the engine's
/// runs: each stops at its next safe point, recorded as interrupted (an orchestrator's
/// SIGKILL follows a SIGTERM after its own grace period; Ferry's should be shorter).
fn stop_after_grace(
    rt: &Runtime,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let interrupter = rt.engine.interrupter();
    let grace = StdDuration::from_secs(rt.settings().runtime.shutdown_grace_seconds);
    tokio::spawn(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        tokio::time::sleep(grace).await;
        tracing::warn!(
            ?grace,
            "the running job outlived the shutdown grace period: interrupting it"
        );
        interrupter.interrupt();
    })
}

async fn run_one(rt: &Arc<Runtime>, owner: &str, job: Job, shutdown: watch::Receiver<bool>) {
    let lease = rt.settings().runtime.job_lease_seconds;
    let beat = {
        let (rt, owner, id) = (rt.clone(), owner.to_string(), job.id);
        tokio::spawn(async move {
            let every = StdDuration::from_secs((lease as u64 / 3).max(1));
            loop {
                tokio::time::sleep(every).await;
                match rt.store().heartbeat(id, &owner, lease) {
                    // A worker busy with a long job is alive (`/healthz` asks).
                    Ok(true) => rt.mark_worker_seen(),
                    Ok(false) => {
                        tracing::warn!(job = id, "lost the job's lease to another worker");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(job = id, error = %format!("{e:#}"), "heartbeat failed")
                    }
                }
            }
        })
    };
    let grace = stop_after_grace(rt, shutdown);
    let outcome = execute(rt, &job).await;
    grace.abort();
    beat.abort();
    let store = rt.store();
    let recorded = match outcome {
        Ok(()) => store.complete_job(job.id, owner),
        // Back to the queue without using an attempt: it runs again when a worker is free.
        Err(e) if e.is::<Busy>() || e.is::<Interrupted>() => {
            store.release_job(job.id, owner, now() + Duration::seconds(1))
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let s = &rt.settings().runtime;
            let retry = (job.attempts < job.max_attempts)
                .then(|| now() + backoff(s.retry_base_seconds, s.retry_cap_seconds, job.attempts));
            tracing::warn!(job = job.id, attempt = job.attempts, error = %msg, dead = retry.is_none(), "job failed");
            if retry.is_none() {
                // A run requested through the API must not stay queued forever.
                let run = serde_json::from_str::<SyncJob>(&job.payload)
                    .ok()
                    .and_then(|sj| sj.run_id);
                if let Some(run) = run {
                    let _ = store.finish_run(run, "error", "[]", Some(&msg));
                }
            }
            store.fail_job(job.id, owner, &msg, retry)
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(job = job.id, error = %format!("{e:#}"), "could not record the job's outcome");
    }
}

async fn execute(rt: &Runtime, job: &Job) -> Result<()> {
    match job.kind.as_str() {
        SYNC => {
            let sj: SyncJob = serde_json::from_str(&job.payload)
                .map_err(|e| anyhow!("job {}: unreadable payload: {e}", job.id))?;
            let p = rt.find(&sj.org, &sj.connection).ok_or_else(|| {
                anyhow!(
                    "job {}: no connection {:?} of {} in the configuration",
                    job.id,
                    sj.connection,
                    sj.org
                )
            })?;
            let opts = SyncOptions {
                full: sj.full,
                entities: sj.entities.clone(),
                run_id: sj.run_id,
                records: sj
                    .records
                    .into_iter()
                    .map(|(k, v)| (k, v.into_iter().collect()))
                    .collect(),
                ..Default::default()
            };
            let report = rt.engine.run(p, &opts, &|_| {}).await?;
            tracing::info!(job = job.id, org = %sj.org, connection = %sj.connection, status = %report.status, calls = report.api_calls, "sync job ran");
            if report.status == crate::sync::RunStatus::Error {
                let why: Vec<String> = report
                    .entities
                    .iter()
                    .filter_map(|e| e.error.as_ref().map(|m| format!("{}: {m}", e.entity)))
                    .collect();
                return Err(anyhow!("the sync failed: {}", why.join("; ")));
            }
            Ok(())
        }
        other => Err(anyhow!("job {}: unknown kind {other:?}", job.id)),
    }
}
