//! The runtime behind `ferry serve` and `ferry worker`: every configured connection checked
//! and registered once, sync jobs in the durable queue, workers that run them and a
//! scheduler that enqueues them when due.

pub mod scheduler;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use chrono::{Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::config::{ConnectionConfig, OrgConfig, SecretRef, Settings};
use crate::store::jobs::NewJob;
use crate::store::orgs::now;
use crate::store::write_transaction;
use crate::store::{AnyConnection, Store};
use crate::sync::{Engine, Prepared};

/// The payload of a `sync` job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncJob {
    pub org: String,
    pub connection: String,
    #[serde(default)]
    pub full: bool,
    /// A targeted sync of these records (by entity), from webhooks.
    #[serde(default)]
    pub records: BTreeMap<String, BTreeSet<String>>,
    /// Only these entities (empty: all the connection syncs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<String>,
    /// The run row made when the sync was requested through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
}

pub const SYNC: &str = "sync";

/// A connection's webhook keys, read from the environment at start.
#[derive(Clone, Default)]
pub struct WebhookKeys {
    pub secret: Option<String>,
    pub token: Option<String>,
}

/// A connection's webhook keys from the environment, if it takes webhooks. A variable
/// that is unset or empty is a configuration error: an empty key would verify anyone's
/// HMAC and `?token=`.
fn webhook_keys(org: &OrgConfig, conn: &ConnectionConfig) -> Result<Option<WebhookKeys>> {
    let Some(w) = &conn.webhooks else {
        return Ok(None);
    };
    let read = |r: &Option<SecretRef>| {
        r.as_ref()
            .map(|r| {
                std::env::var(&r.env)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| {
                        crate::input_error!(
                            "{}: connection {:?}: webhook secret: environment variable {} is not set or is empty",
                            conn.place(&org.source),
                            conn.name,
                            r.env
                        )
                    })
            })
            .transpose()
    };
    Ok(Some(WebhookKeys {
        secret: read(&w.secret)?,
        token: read(&w.token)?,
    }))
}

/// Everything a worker, the scheduler and the server share.
pub struct Runtime {
    pub engine: Engine,
    /// Every connection of every enabled organization, checked and registered.
    pub connections: Vec<Prepared>,
    pub webhook_keys: HashMap<i64, WebhookKeys>,
    /// Unix time of the worker's last look at the queue (for `/healthz`).
    pub worker_seen: AtomicI64,
}

impl Runtime {
    /// Opens the store and checks every connection's config, mappings and secrets, so a
    /// mistake stops the start instead of failing jobs later.
    pub fn start(settings: &Settings) -> Result<Arc<Runtime>> {
        let orgs: Vec<_> = settings
            .organizations()?
            .into_iter()
            .filter(|o| o.sync_enabled)
            .collect();
        let pairs: Vec<_> = orgs
            .iter()
            .flat_map(|o| o.connections.iter().map(move |c| (o, c)))
            .collect();
        let keys = pairs
            .iter()
            .map(|(org, conn)| webhook_keys(org, conn))
            .collect::<Result<Vec<_>>>()?;
        let (engine, connections) = Engine::start(settings, pairs)?;
        let webhook_keys = connections
            .iter()
            .zip(keys)
            .filter_map(|(p, k)| Some((p.connection_id, k?)))
            .collect();
        Ok(Arc::new(Runtime {
            engine,
            connections,
            webhook_keys,
            worker_seen: AtomicI64::new(0),
        }))
    }

    pub fn store(&self) -> &Store {
        &self.engine.store
    }

    pub fn settings(&self) -> &Settings {
        &self.engine.settings
    }

    pub fn find(&self, org: &str, connection: &str) -> Option<&Prepared> {
        self.connections
            .iter()
            .find(|p| p.org.slug == org && p.config.name == connection)
    }

    pub(crate) fn mark_worker_seen(&self) {
        self.worker_seen
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    /// Adds a sync job; with a key, none is added while one with that key waits.
    pub fn enqueue_sync(
        &self,
        job: &SyncJob,
        key: Option<&str>,
        run_at: NaiveDateTime,
    ) -> Result<Option<i64>> {
        self.store().enqueue(&NewJob {
            kind: SYNC,
            payload: &serde_json::to_string(job)?,
            dedupe_key: key,
            run_at,
            max_attempts: self.settings().runtime.max_attempts,
        })
    }

    /// Folds a record into the waiting targeted sync of its connection, or queues one
    /// that runs after the coalescing window, in the caller's transaction.
    pub fn enqueue_record(
        &self,
        c: &mut AnyConnection,
        p: &Prepared,
        entity: &str,
        record_id: &str,
    ) -> Result<i64> {
        let key = format!("webhook:{}", p.connection_id);
        for _ in 0..2 {
            if let Some(job) = Store::queued_job(c, &key)? {
                let mut sj: SyncJob = serde_json::from_str(&job.payload)?;
                sj.records
                    .entry(entity.to_string())
                    .or_default()
                    .insert(record_id.to_string());
                Store::set_job_payload(c, job.id, &serde_json::to_string(&sj)?)?;
                return Ok(job.id);
            }
            let mut sj = SyncJob {
                org: p.org.slug.clone(),
                connection: p.config.name.clone(),
                ..Default::default()
            };
            sj.records
                .entry(entity.to_string())
                .or_default()
                .insert(record_id.to_string());
            let run_at =
                now() + Duration::seconds(self.settings().runtime.webhook_coalesce_seconds);
            let added = write_transaction(c, |c| {
                Store::enqueue_in(
                    c,
                    &NewJob {
                        kind: SYNC,
                        payload: &serde_json::to_string(&sj)?,
                        dedupe_key: Some(&key),
                        run_at,
                        max_attempts: self.settings().runtime.max_attempts,
                    },
                )
            })?;
            if let Some(id) = added {
                return Ok(id);
            }
        }
        Err(anyhow::anyhow!("could not queue a sync for {key}"))
    }
}
