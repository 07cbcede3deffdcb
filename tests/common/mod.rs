//! Shared test harness: a real database per backend (a SQLite file, and a fresh PostgreSQL
//! database when FERRY_TEST_POSTGRES_URL is set), the fake SuperOffice on loopback, and an
//! engine wired to both.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_connectors::superoffice::fake::FakeSuperOffice;
use ferry_connectors::workflowmax::fake::{FakeWorkflowMax, Limits};
use ferry_framework::config::{
    ConflictPolicy, ConnectionConfig, EntitySelection, OrgConfig, Settings,
};
use ferry_framework::http::rate::RateLimits;
use ferry_framework::hub::HubModel;
use ferry_framework::secrets::Cipher;
use ferry_framework::store::testing::{fresh_postgres, ScratchDb};
use ferry_framework::store::Store;
use ferry_framework::sync::{Engine, Prepared, RunReport, SyncOptions};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Databases to run a scenario on: SQLite always, PostgreSQL when configured.
pub fn backends(dir: &Path) -> Vec<ScratchDb> {
    let mut v = vec![ScratchDb::File(
        dir.join("ferry.db").to_string_lossy().into_owned(),
    )];
    if let Ok(admin) = std::env::var("FERRY_TEST_POSTGRES_URL") {
        if !admin.trim().is_empty() {
            v.push(ScratchDb::Postgres(
                fresh_postgres(&admin).expect("fresh PostgreSQL database"),
            ));
        }
    }
    v
}

pub struct Env {
    pub engine: Engine,
    pub fake: FakeSuperOffice,
    pub prepared: Prepared,
    pub org: OrgConfig,
}

pub struct Opts {
    pub conflict: ConflictPolicy,
    pub first_sync_batch_size: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            conflict: ConflictPolicy::Newest,
            first_sync_batch_size: 100,
        }
    }
}

/// An engine on `url` with the shipped hub model and mappings.
pub fn engine(url: &str, opts: &Opts) -> Engine {
    ferry_connectors::link();
    let mut settings = Settings::with_base(&repo(), url);
    settings.sync.first_sync_batch_size = opts.first_sync_batch_size;
    settings.sync.max_retries = 1;
    let hub = HubModel::load(&repo().join("config/hub.yml")).unwrap();
    let store = Store::open_and_migrate(url).unwrap();
    let cipher = Cipher::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    Engine::new(store, hub, settings, cipher)
}

/// A connection syncing `entities` with one selection, no secrets, parameters, rate limit
/// or webhooks.
pub fn connection(
    name: &str,
    connector: &str,
    settings: serde_json::Value,
    entities: &[&str],
    selection: EntitySelection,
) -> ConnectionConfig {
    ConnectionConfig {
        name: name.into(),
        connector: connector.into(),
        settings,
        secrets: BTreeMap::new(),
        parameters: BTreeMap::new(),
        // The fakes throttle nothing: no test waits on an application's published limit
        // (SuperOffice's 10 calls a second) unless it sets one.
        rate_limit: Some(ferry_framework::http::rate::RateLimits {
            per_second: Some(1000),
            ..Default::default()
        }),
        page_size: None,
        webhooks: None,
        line: None,
        entities: entities
            .iter()
            .map(|e| (e.to_string(), selection.clone()))
            .collect(),
    }
}

pub fn org(connections: Vec<ConnectionConfig>) -> OrgConfig {
    OrgConfig {
        slug: "acme".into(),
        name: "Acme".into(),
        sync_enabled: true,
        date_filtering_limit: None,
        sync_interval_seconds: None,
        connections,
        source: "test".into(),
    }
}

pub async fn env(url: &str, opts: Opts) -> Env {
    let engine = engine(url, &opts);
    let fake = FakeSuperOffice::new();
    let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let sel = EntitySelection {
        conflict: opts.conflict,
        ..Default::default()
    };
    let mut conn = connection(
        "so",
        "superoffice",
        FakeSuperOffice::settings(addr),
        &["organization", "person"],
        sel,
    );
    // The test's pages, not SuperOffice's recommended 1000: listings must page.
    conn.page_size = Some(opts.first_sync_batch_size);
    let org = org(vec![conn.clone()]);
    let prepared = engine
        .prepare(&org, &conn, Some(FakeSuperOffice::secrets()))
        .unwrap();
    Env {
        engine,
        fake,
        prepared,
        org,
    }
}

impl Env {
    pub async fn sync(&self) -> RunReport {
        self.sync_with(SyncOptions::default()).await
    }

    pub async fn sync_with(&self, opts: SyncOptions) -> RunReport {
        self.engine
            .run(&self.prepared, &opts, &|_| {})
            .await
            .unwrap()
    }

    pub fn idmaps(&self) -> Vec<ferry_framework::store::idmaps::IdMap> {
        self.engine
            .store
            .idmaps_of(&[self.prepared.connection_id])
            .unwrap()
    }

    pub fn counts(&self, report: &RunReport, entity: &str) -> ferry_framework::sync::Counts {
        report
            .entities
            .iter()
            .find(|e| e.entity == entity)
            .unwrap()
            .counts
            .clone()
    }
}

/// One organization with a WorkflowMax connection, and a SuperOffice one when asked.
pub struct Hubbed {
    pub engine: Engine,
    pub wfm: FakeWorkflowMax,
    pub wfm_conn: Prepared,
    pub so: FakeSuperOffice,
    pub so_conn: Option<Prepared>,
}

/// A fast budget for tests; the burst test sets its own.
pub fn quick_limits() -> (Limits, RateLimits) {
    (
        Limits {
            concurrent: 5,
            per_window: 10_000,
            window: std::time::Duration::from_secs(60),
            per_day: 100_000,
        },
        RateLimits {
            concurrent: Some(5),
            per_second: None,
            per_minute: Some(10_000),
            per_day: Some(100_000),
        },
    )
}

pub async fn hubbed(
    url: &str,
    with_so: bool,
    limits: (Limits, RateLimits),
    wfm_settings: serde_json::Value,
) -> Hubbed {
    let engine = engine(url, &Opts::default());
    let wfm = FakeWorkflowMax::with_limits(limits.0);
    wfm.define_standard_fields();
    let addr = wfm.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut settings = FakeWorkflowMax::settings(addr);
    if let (Some(s), serde_json::Value::Object(extra)) = (settings.as_object_mut(), wfm_settings) {
        s.extend(extra);
    }
    let wfm_cfg = ConnectionConfig {
        rate_limit: Some(limits.1),
        ..connection(
            "wfm",
            "workflowmax",
            settings,
            &["client"],
            Default::default(),
        )
    };
    let so = FakeSuperOffice::new();
    let so_addr = so.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let so_cfg = connection(
        "so",
        "superoffice",
        FakeSuperOffice::settings(so_addr),
        &["organization", "person"],
        Default::default(),
    );
    let mut conns = vec![wfm_cfg.clone()];
    if with_so {
        conns.insert(0, so_cfg.clone());
    }
    let org = org(conns);
    let so_conn = with_so.then(|| {
        engine
            .prepare(&org, &so_cfg, Some(FakeSuperOffice::secrets()))
            .unwrap()
    });
    let wfm_conn = engine
        .prepare(&org, &wfm_cfg, Some(FakeWorkflowMax::secrets()))
        .unwrap();
    Hubbed {
        engine,
        wfm,
        wfm_conn,
        so,
        so_conn,
    }
}

impl Hubbed {
    pub async fn sync_wfm(&self) -> RunReport {
        self.engine
            .run(&self.wfm_conn, &SyncOptions::default(), &|_| {})
            .await
            .unwrap()
    }

    pub async fn sync_so(&self) -> RunReport {
        self.engine
            .run(
                self.so_conn.as_ref().unwrap(),
                &SyncOptions::default(),
                &|_| {},
            )
            .await
            .unwrap()
    }

    pub fn wfm_idmaps(&self) -> Vec<ferry_framework::store::idmaps::IdMap> {
        self.engine
            .store
            .idmaps_of(&[self.wfm_conn.connection_id])
            .unwrap()
    }
}

pub fn counts(report: &RunReport, entity: &str) -> ferry_framework::sync::Counts {
    report
        .entities
        .iter()
        .find(|e| e.entity == entity)
        .unwrap_or_else(|| panic!("no {entity} in {report:?}"))
        .counts
        .clone()
}

/// Reading and writing one organization's hub, for any harness.
pub trait Hub {
    fn engine(&self) -> &Engine;
    fn org_id(&self) -> i64;

    fn hub_seq(&self) -> i64 {
        self.engine().store.hub_seq(self.org_id()).unwrap()
    }

    fn hub(&self, entity: &str) -> Vec<ferry_framework::store::hub::HubRecord> {
        self.engine()
            .store
            .hub_list(self.org_id(), entity, 10_000)
            .unwrap()
    }

    fn hub_named(
        &self,
        entity: &str,
        key: &str,
        value: &str,
    ) -> Option<ferry_framework::store::hub::HubRecord> {
        self.hub(entity)
            .into_iter()
            .find(|r| r.data.get(key).and_then(|v| v.as_str()) == Some(value))
    }

    fn put(&self, entity: &str, uid: Option<&str>, data: serde_json::Value) -> String {
        let e = self.engine();
        e.store
            .hub_put(&e.hub, self.org_id(), entity, uid, data, None)
            .unwrap()
    }
}

impl Hub for Env {
    fn engine(&self) -> &Engine {
        &self.engine
    }
    fn org_id(&self) -> i64 {
        self.prepared.org_id
    }
}

impl Hub for Hubbed {
    fn engine(&self) -> &Engine {
        &self.engine
    }
    fn org_id(&self) -> i64 {
        self.wfm_conn.org_id
    }
}

/// An in-process `ferry serve` without its scheduler: the runtime of a Ferry installation
/// in `ws` (a folder with `settings.yml` and its config), its server on a loopback port, and
/// a worker started when the test wants jobs to run.
pub struct Served {
    pub rt: std::sync::Arc<ferry_framework::runtime::Runtime>,
    pub base: String,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub ws: tempfile::TempDir,
}

pub async fn served(ws: tempfile::TempDir) -> Served {
    let settings = Settings::load(&ws.path().join("settings.yml")).unwrap();
    let rt = ferry_framework::runtime::Runtime::start(&settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(ferry_framework::server::serve(rt.clone(), listener, rx));
    Served { rt, base, stop, ws }
}

impl Served {
    pub fn start_worker(&self) {
        tokio::spawn(ferry_framework::runtime::worker::run(
            self.rt.clone(),
            self.stop.subscribe(),
        ));
    }
}

/// Waits up to `secs` for `cond`, polling every 100 ms.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
