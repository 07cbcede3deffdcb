//! The scheduler: enqueues a sync of each connection when its organization's interval has
//! passed since its last run, plus a per-connection jitter. A connection whose last three
//! or more runs failed backs off (the interval doubles for each further failure, up to a
//! day) until a run succeeds, for example one forced with `ferry sync`.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, NaiveDateTime};
use tokio::sync::watch;

use super::{Runtime, SyncJob};
use crate::store::orgs::now;
use crate::store::runs::RunRow;

/// When a connection is next due, from its newest runs (newest first); `None`: now.
pub fn next_due(
    runs: &[RunRow],
    interval_seconds: u64,
    jitter_ratio: f64,
    connection_id: i64,
) -> Option<NaiveDateTime> {
    let last = runs.first()?;
    let failures = runs.iter().take_while(|r| r.status == "error").count() as u32;
    let mut interval = interval_seconds as i64;
    if failures >= 3 {
        interval = interval
            .saturating_mul(2i64.saturating_pow(failures - 2))
            .min(86_400);
    }
    // The same connection always gets the same share of the jitter.
    let share = (connection_id.wrapping_mul(2_654_435_761) % 1000).abs() as f64 / 1000.0;
    let jitter = (interval as f64 * jitter_ratio.clamp(0.0, 1.0) * share) as i64;
    Some(last.started_at + Duration::seconds(interval + jitter))
}

/// Enqueues every connection that is due; returns how many were queued.
pub fn tick(rt: &Runtime) -> anyhow::Result<usize> {
    let s = &rt.settings().runtime;
    let mut queued = 0;
    for p in &rt.connections {
        let key = format!("sync:{}", p.connection_id);
        if rt.store().active_job(&key)? {
            continue;
        }
        let runs = rt.store().runs_of(p.connection_id, 20)?;
        let interval = p
            .org
            .sync_interval_seconds
            .unwrap_or(s.sync_interval_seconds);
        let due = next_due(&runs, interval, s.jitter_ratio, p.connection_id);
        if due.is_none_or(|d| d <= now()) {
            let job = SyncJob {
                org: p.org.slug.clone(),
                connection: p.config.name.clone(),
                ..Default::default()
            };
            if rt.enqueue_sync(&job, Some(&key), now())?.is_some() {
                queued += 1;
            }
        }
    }
    Ok(queued)
}

/// Ticks until `shutdown` turns true.
pub async fn run(rt: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) {
    let poll = StdDuration::from_millis(rt.settings().runtime.poll_millis);
    while !*shutdown.borrow() {
        if let Err(e) = tick(&rt) {
            tracing::warn!(error = %format!("{e:#}"), "scheduler tick failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            // A dropped sender means the process is going away: stop too (a closed channel
            // answers at once, and the loop would spin).
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: &str, minutes_ago: i64) -> RunRow {
        RunRow {
            id: 0,
            connection_id: 1,
            status: status.into(),
            options: "{}".into(),
            counts: "{}".into(),
            started_at: now() - Duration::minutes(minutes_ago),
            finished_at: None,
            message: None,
        }
    }

    #[test]
    fn three_failures_in_a_row_back_off_until_a_success() {
        let interval = 600;
        let ok = next_due(&[run("success", 0)], interval, 0.0, 1).unwrap();
        let two = next_due(&[run("error", 0), run("error", 10)], interval, 0.0, 1).unwrap();
        let three = next_due(
            &[run("error", 0), run("error", 10), run("error", 20)],
            interval,
            0.0,
            1,
        )
        .unwrap();
        let four = next_due(
            &[
                run("error", 0),
                run("error", 10),
                run("error", 20),
                run("error", 30),
            ],
            interval,
            0.0,
            1,
        )
        .unwrap();
        assert_eq!((two - ok).num_seconds(), 0);
        assert_eq!((three - ok).num_seconds(), 600);
        assert_eq!((four - ok).num_seconds(), 1800);
        let recovered = next_due(
            &[
                run("success", 0),
                run("error", 10),
                run("error", 20),
                run("error", 30),
            ],
            interval,
            0.0,
            1,
        )
        .unwrap();
        assert_eq!((recovered - ok).num_seconds(), 0);
        assert!(
            next_due(&[], interval, 0.1, 1).is_none(),
            "never run: due now"
        );
        let jittered = next_due(&[run("success", 0)], interval, 0.1, 7).unwrap();
        assert!((jittered - ok).num_seconds() <= 60);
    }
}
