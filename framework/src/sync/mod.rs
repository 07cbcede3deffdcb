//! The sync engine: runs one connection's selected entities, external changes into the hub
//! first, then hub changes out, under a connection lease, recording a run in the ledger.

pub mod merge;
mod pipeline;
mod premap;
mod pull;
mod push;
mod settle;
pub mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use crate::config::{ConnectionConfig, EntitySelection, OrgConfig, Settings};
use crate::connector::{self, ConnectionContext, Connector};
use crate::entity::{Entity, EntityDef, ExternalClient, RouteFn};
use crate::http::rate::RateBudget;
use crate::http::{ApiStats, TokenStore, Transport};
use crate::hub::HubModel;
use crate::input_error;
use crate::mapping::Mapping;
use crate::secrets::Cipher;
use crate::store::Store;

/// What to run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncOptions {
    /// Only these entities (a partial run); empty means all selected ones.
    pub entities: Vec<String>,
    /// Ignore the cursors: read everything on both sides.
    pub full: bool,
    /// Print the plan, write nothing anywhere.
    pub dry_run: bool,
    /// A targeted run (a webhook's): only these records are read, by entity; the other
    /// entities are not read and no cursor moves. Hub changes still go out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<String, Vec<String>>,
    /// A run row created when the sync was requested (the API hands its id out at once).
    #[serde(skip)]
    pub run_id: Option<i64>,
    /// Only send hub changes out (no listing): the settle pass `ferry sync` gives the
    /// connections that ran before another one changed the hub.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub push_only: bool,
}

/// The connection is being synced by another run (its lease is held): try again later.
#[derive(Debug, thiserror::Error)]
#[error("connection {connection:?} of {org} is already being synced by another run")]
pub struct Busy {
    pub org: String,
    pub connection: String,
}

/// Per-entity counts of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Counts {
    pub fetched: u64,
    pub created_in_hub: u64,
    pub updated_in_hub: u64,
    pub created_in_app: u64,
    pub updated_in_app: u64,
    pub skipped: u64,
    pub deferred: u64,
    pub conflicts: u64,
    pub errors: u64,
    /// New records whose match key more than one record holds: kept apart, not merged.
    #[serde(default)]
    pub ambiguous: u64,
}

impl Counts {
    pub fn writes(&self) -> u64 {
        self.created_in_hub + self.updated_in_hub + self.created_in_app + self.updated_in_app
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EntityReport {
    pub entity: String,
    pub counts: Counts,
    /// Set when the entity failed as a whole (the others still ran).
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every entity ran and no record failed.
    Success,
    /// Some records or entities failed; the rest ran.
    Partial,
    /// Every entity failed.
    Error,
    /// Stopped by a signal before it finished; what it committed stays.
    Interrupted,
    /// Not run: another live run holds the connection's lease (not stored in the ledger).
    Busy,
}

impl RunStatus {
    /// The name stored in the run ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Partial => "partial",
            RunStatus::Error => "error",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Busy => "busy",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The run was stopped by a signal (SIGTERM, SIGINT): it is recorded as `interrupted` and
/// its lease released.
#[derive(Debug, thiserror::Error)]
#[error("the sync of {org}/{connection} was interrupted")]
pub struct Interrupted {
    pub org: String,
    pub connection: String,
}

/// The outcome of one run of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: Option<i64>,
    pub organization: String,
    pub connection: String,
    pub status: RunStatus,
    pub entities: Vec<EntityReport>,
    /// What a dry run would do, one line per record.
    pub plan: Vec<String>,
    pub api_calls: u64,
}

impl RunReport {
    /// Adds a second pass of the same connection (a push-only settle pass) to this report.
    pub fn absorb(&mut self, other: RunReport) {
        for e in other.entities {
            match self.entities.iter_mut().find(|m| m.entity == e.entity) {
                Some(mine) => {
                    let (a, b) = (&mut mine.counts, &e.counts);
                    a.created_in_app += b.created_in_app;
                    a.updated_in_app += b.updated_in_app;
                    a.deferred += b.deferred;
                    a.errors += b.errors;
                    mine.error = mine.error.take().or(e.error);
                }
                None => self.entities.push(e),
            }
        }
        if other.status != RunStatus::Success && self.status == RunStatus::Success {
            self.status = RunStatus::Partial;
        }
        self.api_calls += other.api_calls;
    }

    pub fn has_errors(&self) -> bool {
        self.status == RunStatus::Busy
            || self
                .entities
                .iter()
                .any(|e| e.error.is_some() || e.counts.errors > 0)
    }

    /// The report of a connection that did not run because another run holds its lease.
    fn busy(p: &Prepared) -> RunReport {
        RunReport {
            run_id: None,
            organization: p.org.slug.clone(),
            connection: p.config.name.clone(),
            status: RunStatus::Busy,
            entities: Vec::new(),
            plan: Vec::new(),
            api_calls: 0,
        }
    }
}

/// A connection checked and ready to run: connector found, settings checked, mappings loaded.
pub struct Prepared {
    pub org_id: i64,
    pub org: OrgConfig,
    pub connection_id: i64,
    pub config: ConnectionConfig,
    pub connector: Box<dyn Connector>,
    pub secrets: BTreeMap<String, String>,
    pub entities: Vec<Selected>,
}

/// One entity a connection syncs: the connector's declaration, how config selected it, and
/// one checked mapping per part.
pub struct Selected {
    pub entity: Entity,
    pub selection: EntitySelection,
    pub mappings: Vec<Arc<Mapping>>,
}

/// Progress callback: one short line per page.
pub type Progress<'a> = dyn Fn(&str) + Send + Sync + 'a;

/// Runs syncs against one database and hub model.
pub struct Engine {
    pub store: Store,
    pub hub: Arc<HubModel>,
    pub settings: Settings,
    pub cipher: Cipher,
    owner: String,
    interrupt: Arc<Interrupt>,
}

/// A stop request (a signal) shared by every run of an engine.
#[derive(Default)]
struct Interrupt {
    asked: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Interrupt {
    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.asked.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// Stops every run of an engine: each is recorded as `interrupted`, its lease is released,
/// and [`Engine::run`] returns [`Interrupted`]. What a run committed stays (pages and
/// creates are crash-safe).
#[derive(Clone)]
pub struct Interrupter(Arc<Interrupt>);

impl Interrupter {
    pub fn interrupt(&self) {
        self.0
            .asked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
}

/// Renews a connection's lease while a run lives, whatever the run waits on (a rate
/// budget, a slow page); stopped when dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Engine {
    pub fn new(store: Store, hub: HubModel, settings: Settings, cipher: Cipher) -> Engine {
        Engine {
            store,
            hub: Arc::new(hub),
            settings,
            cipher,
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            interrupt: Arc::default(),
        }
    }

    /// Lets runs start again after [`Interrupter::interrupt`] (tests that kill one run and
    /// go on).
    pub fn resume(&self) {
        self.interrupt
            .asked
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// A handle that stops every run of this engine (from a signal handler's task).
    pub fn interrupter(&self) -> Interrupter {
        Interrupter(Arc::clone(&self.interrupt))
    }

    /// Renews the lease every third of its time until dropped.
    fn heartbeat(&self, connection_id: i64) -> Heartbeat {
        let (store, owner) = (self.store.clone(), self.owner.clone());
        let ttl = self.settings.sync.lease_seconds;
        let every = std::time::Duration::from_millis((ttl.max(1) as u64 * 1000) / 3);
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let renewed = store
                    .conn()
                    .and_then(|mut c| Store::renew_lease(&mut c, connection_id, &owner, ttl));
                if let Err(e) = renewed {
                    tracing::warn!(connection_id, error = %format!("{e:#}"), "lease heartbeat failed");
                }
            }
        }))
    }

    /// Opens the database (migrating it), the hub model and the secret key from settings.
    pub fn from_settings(settings: &Settings) -> Result<Engine> {
        Ok(Engine::start(settings, std::iter::empty())?.0)
    }

    /// Opens an engine for `connections` ([`Engine::from_settings`]), every one checked
    /// before the database is even opened: a mistake in the last file writes nothing.
    pub fn start<'a>(
        settings: &Settings,
        connections: impl IntoIterator<Item = (&'a OrgConfig, &'a ConnectionConfig)>,
    ) -> Result<(Engine, Vec<Prepared>)> {
        let hub = HubModel::load(&settings.resolve(&settings.paths.hub_model))?;
        let mut checked = connections
            .into_iter()
            .map(|(org, conn)| check_connection(settings, &hub, org, conn, None))
            .collect::<Result<Vec<_>>>()?;
        // May create the key file: only once everything else is known to be good.
        let cipher = Cipher::from_settings(settings)?;
        let store = Store::open_and_migrate(&settings.database_url())?;
        let engine = Engine::new(store, hub, settings.clone(), cipher);
        for p in &mut checked {
            engine.register(p)?;
        }
        Ok((engine, checked))
    }
}

/// A connection's `webhooks:` is for a connector that sends them, and its `relevant`
/// fields name entities the connection syncs.
fn check_webhooks(
    file: &str,
    conn: &ConnectionConfig,
    connector: &dyn Connector,
    entities: &[Selected],
) -> Result<()> {
    let Some(w) = &conn.webhooks else {
        return Ok(());
    };
    if connector.webhooks().is_none() {
        return Err(input_error!(
            "{file}: connection {:?}: field `webhooks`: connector {} sends no webhooks",
            conn.name,
            connector.name()
        ));
    }
    for entity in w.relevant.keys() {
        if !entities.iter().any(|s| s.entity.name() == entity) {
            return Err(input_error!(
                "{file}: connection {:?}: field `webhooks.relevant`: {entity:?} is not an entity this connection syncs",
                conn.name
            ));
        }
    }
    Ok(())
}

/// The checks of [`Engine::prepare`], needing no database: a [`Prepared`] whose ids are 0
/// until it is registered. `secrets` overrides the environment (the demo passes its
/// sandbox's).
fn check_connection(
    settings: &Settings,
    hub: &HubModel,
    org: &OrgConfig,
    conn: &ConnectionConfig,
    secrets: Option<BTreeMap<String, String>>,
) -> Result<Prepared> {
    let file = conn.place(&org.source);
    let connector = connector::find(&conn.connector).ok_or_else(|| {
        let known: Vec<_> = connector::registry().iter().map(|c| c.name()).collect();
        input_error!(
            "{file}: connection {:?}: unknown connector {:?} (registered: {})",
            conn.name,
            conn.connector,
            known.join(", ")
        )
    })?;
    let secrets = match secrets {
        Some(s) => s,
        None => conn.resolve_secrets(&org.source)?,
    };
    connector
        .check_settings(&conn.settings, &secrets)
        .map_err(|e| input_error!("{file}: connection {:?}: {e:#}", conn.name))?;
    let defs = connector
        .entities_for(&conn.settings)
        .map_err(|e| input_error!("{file}: connection {:?}: {e:#}", conn.name))?;
    for name in conn.entities.keys() {
        if !defs.iter().any(|d| d.name() == name) {
            let known: Vec<_> = defs.iter().map(|d| d.name()).collect();
            return Err(input_error!(
                "{file}: connection {:?}: connector {} has no entity {name:?} (it has: {})",
                conn.name,
                connector.name(),
                known.join(", ")
            ));
        }
    }
    let mut entities = Vec::new();
    let mut declared = Vec::new();
    let mappers = settings.resolve(&settings.paths.mappers);
    for entity in defs {
        let Some(sel) = conn.entities.get(entity.name()) else {
            continue;
        };
        let mut mappings = Vec::new();
        for def in entity.parts() {
            let mapping =
                Mapping::load_for(&mappers, connector.name(), def, hub, &conn.parameters)?;
            declared.extend(mapping.params.iter().cloned());
            mappings.push(Arc::new(mapping));
        }
        entities.push(Selected {
            entity,
            selection: sel.clone(),
            mappings,
        });
    }
    check_webhooks(&file, conn, connector.as_ref(), &entities)?;
    for p in conn.parameters.keys() {
        if !declared.contains(p) {
            return Err(input_error!(
                "{file}: connection {:?}: parameter `{p}` is not declared by any of its mappings",
                conn.name
            ));
        }
    }
    Ok(Prepared {
        org_id: 0,
        org: org.clone(),
        connection_id: 0,
        config: conn.clone(),
        connector,
        secrets,
        entities,
    })
}

impl Engine {
    /// Checks a connection (connector, settings, secrets, mappings) and registers it with
    /// its organization in the store. `secrets` overrides the environment.
    pub fn prepare(
        &self,
        org: &OrgConfig,
        conn: &ConnectionConfig,
        secrets: Option<BTreeMap<String, String>>,
    ) -> Result<Prepared> {
        let mut p = check_connection(&self.settings, &self.hub, org, conn, secrets)?;
        self.register(&mut p)?;
        Ok(p)
    }

    /// Writes a checked connection's organization and connection rows; sets their ids.
    fn register(&self, p: &mut Prepared) -> Result<()> {
        let org = &p.org;
        p.org_id = self.store.upsert_org(
            &org.slug,
            &org.name,
            org.sync_enabled,
            org.date_filtering_limit,
        )?;
        let conn = &p.config;
        let entity_json = serde_json::to_string(
            &conn
                .entities
                .iter()
                .map(|(k, v)| (k.clone(), (v.direction, v.conflict)))
                .collect::<BTreeMap<_, _>>(),
        )?;
        p.connection_id = self.store.upsert_connection(
            p.org_id,
            &conn.name,
            &conn.connector,
            &conn.settings.to_string(),
            &entity_json,
        )?;
        Ok(())
    }

    /// Runs one connection. Entity failures are isolated and reported; only problems with
    /// the connection as a whole (bad entity name, lease held) return `Err`.
    pub async fn run(
        &self,
        p: &Prepared,
        opts: &SyncOptions,
        progress: &Progress<'_>,
    ) -> Result<RunReport> {
        for e in &opts.entities {
            if !p.entities.iter().any(|s| s.entity.name() == e) {
                return Err(input_error!(
                    "connection {:?} does not sync an entity named {e:?}",
                    p.config.name
                ));
            }
        }
        let selected: Vec<_> = p
            .entities
            .iter()
            .filter(|s| {
                opts.entities.is_empty() || opts.entities.iter().any(|e| e == s.entity.name())
            })
            .collect();
        if !opts.dry_run
            && !self.store.acquire_lease(
                p.connection_id,
                &self.owner,
                self.settings.sync.lease_seconds,
            )?
        {
            return Err(Busy {
                org: p.org.slug.clone(),
                connection: p.config.name.clone(),
            }
            .into());
        }
        let heartbeat = (!opts.dry_run).then(|| self.heartbeat(p.connection_id));
        let result = self.run_interruptible(p, opts, &selected, progress).await;
        drop(heartbeat);
        if !opts.dry_run {
            self.store.release_lease(p.connection_id, &self.owner)?;
        }
        result
    }

    /// Runs under the lease until done or interrupted.
    async fn run_interruptible(
        &self,
        p: &Prepared,
        opts: &SyncOptions,
        selected: &[&Selected],
        progress: &Progress<'_>,
    ) -> Result<RunReport> {
        let run_id = match (opts.dry_run, opts.run_id) {
            (true, _) => None,
            (false, Some(id)) => {
                self.store.claim_run(id)?;
                Some(id)
            }
            (false, None) => Some(
                self.store
                    .start_run(p.connection_id, &serde_json::to_string(opts)?)?,
            ),
        };
        tokio::select! {
            r = self.run_leased(p, opts, selected, progress, run_id) => r,
            () = self.interrupt.wait() => {
                if let Some(id) = run_id {
                    let status = RunStatus::Interrupted.as_str();
                    self.store.finish_run(id, status, "[]", Some("interrupted by a signal"))?;
                }
                Err(Interrupted {
                    org: p.org.slug.clone(),
                    connection: p.config.name.clone(),
                }
                .into())
            }
        }
    }

    /// Runs connections in order (an organization's file order). A connection that ran
    /// before a later one changed the hub then gets a push-only pass, so one call leaves
    /// every application agreed. `progress` gets each connection's lines.
    pub async fn run_each(
        &self,
        prepared: &[Prepared],
        opts: &SyncOptions,
        progress: &(dyn Fn(&Prepared, &str) + Send + Sync),
    ) -> Result<Vec<RunReport>> {
        let mut out: Vec<RunReport> = Vec::new();
        for p in prepared {
            // One busy connection does not hold up the organization's others.
            out.push(match self.run(p, opts, &|line| progress(p, line)).await {
                Err(e) if e.is::<Busy>() => {
                    progress(p, &format!("{e:#}"));
                    RunReport::busy(p)
                }
                other => other?,
            });
        }
        if opts.dry_run || !opts.records.is_empty() || opts.push_only {
            return Ok(out);
        }
        let push_only = SyncOptions {
            push_only: true,
            ..opts.clone()
        };
        for (i, p) in prepared.iter().enumerate() {
            let later_wrote = out[i + 1..].iter().any(|r| {
                r.organization == p.org.slug
                    && r.entities
                        .iter()
                        .any(|e| e.counts.created_in_hub + e.counts.updated_in_hub > 0)
            });
            if later_wrote && out[i].status != RunStatus::Busy {
                match self.run(p, &push_only, &|line| progress(p, line)).await {
                    Ok(again) => out[i].absorb(again),
                    Err(e) if e.is::<Busy>() => progress(p, &format!("{e:#}")),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    async fn run_leased(
        &self,
        p: &Prepared,
        opts: &SyncOptions,
        selected: &[&Selected],
        progress: &Progress<'_>,
        run_id: Option<i64>,
    ) -> Result<RunReport> {
        let stats = Arc::new(ApiStats::default());
        let started = chrono::Utc::now();
        let ctx = self.context(p, stats.clone())?;
        let mut reports: Vec<EntityReport> = selected
            .iter()
            .flat_map(|s| s.entity.parts())
            .map(|d| EntityReport {
                entity: d.name.to_string(),
                counts: Counts::default(),
                error: None,
            })
            .collect();
        let mut plan = Vec::new();
        match p.connector.open(ctx) {
            Err(e) => {
                for r in &mut reports {
                    r.error = Some(format!("{e:#}"));
                }
            }
            Ok(client) => {
                // External changes into the hub for every entity first, so that references
                // and first-sync merging see the application's records before the hub's go out.
                let halves: &[Half] = match opts.push_only {
                    true => &[Half::Push],
                    false => &[Half::Pull, Half::Push],
                };
                for &half in halves {
                    let mut rest = reports.as_mut_slice();
                    for s in selected {
                        let (mine, tail) = rest.split_at_mut(s.entity.parts().len());
                        rest = tail;
                        let route = match &s.entity {
                            Entity::Complex(c) => Some(c.route),
                            Entity::Simple(_) => None,
                        };
                        let mut jobs: Vec<EntitySync> = s
                            .entity
                            .parts()
                            .iter()
                            .zip(&s.mappings)
                            .zip(mine.iter_mut())
                            .filter(|(_, r)| r.error.is_none())
                            .map(|((def, mapping), report)| EntitySync {
                                engine: self,
                                p,
                                def,
                                sel: &s.selection,
                                mapping,
                                route,
                                client: &client,
                                opts,
                                counts: &mut report.counts,
                                plan: Vec::new(),
                                progress,
                                started,
                                stats: Arc::clone(&stats),
                                matched: Default::default(),
                                retried: HashMap::new(),
                                retrying: false,
                            })
                            .collect();
                        let errors = match half {
                            Half::Pull => self.pull_half(s, &mut jobs).await,
                            Half::Push => self.push_half(&mut jobs).await,
                        };
                        for j in &mut jobs {
                            plan.append(&mut j.plan);
                        }
                        drop(jobs);
                        for (name, e) in errors {
                            tracing::warn!(entity = name, error = %format!("{e:#}"), "entity failed");
                            for r in mine
                                .iter_mut()
                                .filter(|r| name.is_none_or(|n| n == r.entity))
                            {
                                r.error = Some(format!("{e:#}"));
                            }
                        }
                    }
                }
            }
        }
        let failed = reports.iter().filter(|r| r.error.is_some()).count();
        let status = if failed == reports.len() && failed > 0 {
            RunStatus::Error
        } else if failed > 0 || reports.iter().any(|r| r.counts.errors > 0) {
            RunStatus::Partial
        } else {
            RunStatus::Success
        };
        let message = reports
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.entity)))
            .collect::<Vec<_>>()
            .join("; ");
        if let Some(id) = run_id {
            self.store.finish_run(
                id,
                status.as_str(),
                &serde_json::to_string(&reports)?,
                (!message.is_empty()).then_some(message.as_str()),
            )?;
        }
        Ok(RunReport {
            run_id,
            organization: p.org.slug.clone(),
            connection: p.config.name.clone(),
            status,
            entities: reports,
            plan,
            api_calls: stats.calls(),
        })
    }
}

impl Engine {
    /// What a connector needs to talk to one connection's account.
    pub fn context(&self, p: &Prepared, stats: Arc<ApiStats>) -> Result<ConnectionContext> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(self.settings.sync.http_timeout_seconds))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ConnectionContext {
            connection_id: p.connection_id,
            connection_name: p.config.name.clone(),
            settings: p.config.settings.clone(),
            secrets: p.secrets.clone(),
            tokens: TokenStore::new(self.store.clone(), self.cipher.clone(), p.connection_id),
            transport: Transport {
                http,
                stats,
                budget: RateBudget::shared(
                    &self.store.url,
                    p.connection_id,
                    p.connector.rate_limits().overlay(p.config.rate_limit),
                ),
                max_retries: self.settings.sync.max_retries,
            },
            reads: external_reads(p),
        })
    }
}

/// What a connection's mappings read, by external entity.
fn external_reads(p: &Prepared) -> BTreeMap<String, Vec<crate::mapping::path::Path>> {
    let mut out: BTreeMap<String, Vec<crate::mapping::path::Path>> = BTreeMap::new();
    for s in &p.entities {
        for (def, m) in s.entity.parts().iter().zip(&s.mappings) {
            let reads = out.entry(def.external_entity.to_string()).or_default();
            for path in m.external_reads() {
                if !reads.contains(&path) {
                    reads.push(path);
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Half {
    Pull,
    Push,
}

/// A failure of a whole part (`Some(name)`) or of every part of an entity (`None`).
type PartErrors = Vec<(Option<&'static str>, anyhow::Error)>;

impl Engine {
    /// Reads an entity's changes into the hub: its parts are listed together.
    async fn pull_half(&self, s: &Selected, jobs: &mut [EntitySync<'_>]) -> PartErrors {
        let readable = s
            .entity
            .parts()
            .first()
            .is_some_and(|d| d.capabilities.read);
        if jobs.len() != s.entity.parts().len() || !s.selection.direction.to_hub() || !readable {
            return Vec::new();
        }
        let split = match &s.entity {
            Entity::Complex(c) => Some(c.split),
            Entity::Simple(_) => None,
        };
        let opts = jobs[0].opts;
        let outcome = if opts.records.is_empty() {
            pull::pull_entity(s.entity.name(), split, jobs).await
        } else {
            match opts.records.get(s.entity.name()) {
                Some(ids) => pull::pull_records(split, jobs, ids).await,
                None => Ok(()),
            }
        };
        match outcome {
            Ok(()) => Vec::new(),
            Err(e) => vec![(None, e)],
        }
    }

    /// Sends hub changes out, part by part; a failing part leaves the others running.
    async fn push_half(&self, jobs: &mut [EntitySync<'_>]) -> PartErrors {
        let mut errors = Vec::new();
        for j in jobs.iter_mut() {
            let caps = j.def.capabilities;
            if j.sel.direction.to_external() && (caps.create || caps.update) {
                if let Err(e) = j.push().await {
                    errors.push((Some(j.def.name), e));
                }
            }
        }
        errors
    }
}

/// One entity of one run: the state both halves work with.
pub(crate) struct EntitySync<'a> {
    engine: &'a Engine,
    p: &'a Prepared,
    def: &'a EntityDef,
    sel: &'a EntitySelection,
    mapping: &'a Arc<Mapping>,
    /// Hub → external routing when this is a part of a complex entity.
    route: Option<RouteFn>,
    /// Shared so the next page can be fetched on the runtime while this one is written.
    client: &'a Arc<dyn ExternalClient>,
    opts: &'a SyncOptions,
    counts: &'a mut Counts,
    plan: Vec<String>,
    progress: &'a Progress<'a>,
    /// When the run started: the edit time of changes from applications that report none
    /// (when Ferry first saw them).
    started: chrono::DateTime<chrono::Utc>,
    /// The connection's call counter, which also keeps the application's clock.
    stats: Arc<ApiStats>,
    /// First-time matches made in this run, by match key: undone if a later page shows
    /// the key held by another record of the application.
    matched: settle::MatchLog,
    /// Records this run's retries settled, by external id, with the hash of the version
    /// they saw (`Some` while the retries run): the listing passes over that version.
    retried: HashMap<String, String>,
    retrying: bool,
}

impl EntitySync<'_> {
    /// A line of a dry run's plan; only formatted when there is a plan to show.
    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.opts.dry_run {
            self.plan.push(line());
        }
    }

    fn page_size(&self, first_sync: bool) -> usize {
        if let Some(n) = self.p.config.page_size.or(self.p.connector.page_size()) {
            n
        } else if first_sync {
            self.engine.settings.sync.first_sync_batch_size
        } else {
            self.engine.settings.sync.page_size
        }
    }

    /// Renews the lease inside the page's transaction; a lost lease aborts the entity.
    fn renew(&self, c: &mut crate::store::AnyConnection) -> Result<()> {
        if !Store::renew_lease(
            c,
            self.p.connection_id,
            &self.engine.owner,
            self.engine.settings.sync.lease_seconds,
        )? {
            return Err(anyhow!("the connection lease was lost to another run"));
        }
        Ok(())
    }
}
