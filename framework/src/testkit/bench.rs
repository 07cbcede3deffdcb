//! One case's world: a fresh fake of the application, an organization of its own in the
//! kit's database with one connection to the fake, and an engine to sync them.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{CaseError, KitConfig};
use crate::config::{OrgConfig, Settings};
use crate::connector::Connector;
use crate::hub::HubModel;
use crate::sandbox::{AppUser, CallKinds, FakeControl, SandboxApp, SandboxHandle};
use crate::secrets::Cipher;
use crate::store::idmaps::IdMap;
use crate::store::Store;
use crate::sync::{Engine, Prepared, RunReport, SyncOptions};

/// The settings every case runs with: small pages, so a handful of records spans several,
/// and a short HTTP timeout, so a fake that hangs outlasts it.
pub const PAGE_SIZE: usize = 2;
pub const HTTP_TIMEOUT_SECONDS: u64 = 2;
pub const MAX_RETRIES: u32 = 3;

/// A case's fake, organization, connection and engine.
pub struct Bench {
    pub engine: Engine,
    pub prepared: Prepared,
    pub handle: SandboxHandle,
    app: Arc<dyn SandboxApp>,
    /// The first secret found in what Ferry stored, checked after every run (a later run
    /// may overwrite the error that held it).
    leak: Option<String>,
}

impl Bench {
    /// Starts a fresh fake (switched to `variant`, when not empty) and registers an
    /// organization named after `case` with one connection to it, syncing the fake's entity.
    pub async fn new(
        connector: &dyn Connector,
        cfg: &KitConfig,
        case: &str,
        variant: &str,
    ) -> Result<Bench> {
        let sandbox = connector.sandbox().context("no sandbox")?;
        let handle = sandbox.start("127.0.0.1:0".parse()?).await?;
        let app = handle.app.clone();
        let user = app.user().context("the sandbox has no kit user")?;
        if !variant.is_empty() && !user.set_variant(variant) {
            anyhow::bail!("the fake has no variant {variant:?}");
        }
        let engine = engine(cfg)?;
        // Its own organization, even in a database an earlier kit run used.
        let nonce = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let slug = format!(
            "kit-{}-{}-{nonce}",
            connector.name(),
            case.replace('_', "-")
        )
        .to_lowercase();
        let org = OrgConfig {
            slug: slug.clone(),
            name: format!("Conformance kit: {case}"),
            sync_enabled: true,
            date_filtering_limit: None,
            sync_interval_seconds: None,
            connections: Vec::new(),
            source: "conformance kit".into(),
        };
        let mut conn = handle.connection("app", connector.name(), [user.entity().to_string()]);
        // Small pages whatever the connector recommends: every listing pages.
        conn.page_size = Some(PAGE_SIZE);
        let prepared = engine.prepare(&org, &conn, Some(handle.secrets.clone()))?;
        Ok(Bench {
            engine,
            prepared,
            handle,
            app,
            leak: None,
        })
    }

    pub fn user(&self) -> &dyn AppUser {
        self.app.user().expect("checked in Bench::new")
    }

    pub fn control(&self) -> &FakeControl {
        self.app.control()
    }

    pub fn kinds(&self) -> CallKinds {
        self.user().call_kinds()
    }

    /// The fake itself, for hooks that act on it later.
    pub fn app(&self) -> Arc<dyn SandboxApp> {
        self.app.clone()
    }

    /// One run of the connection; `Err` only when the run could not happen at all. What it
    /// stored is then searched for secrets.
    pub async fn sync(&mut self) -> Result<RunReport> {
        let r = self
            .engine
            .run(&self.prepared, &SyncOptions::default(), &|_| {})
            .await;
        if self.leak.is_none() {
            let report = format!("{r:?}");
            self.leak = self.leaked_secrets(&[report]);
        }
        r
    }

    /// The first secret any run of this case left in what Ferry stored or answered.
    pub fn first_leak(&mut self) -> Option<String> {
        if self.leak.is_none() {
            self.leak = self.leaked_secrets(&[]);
        }
        self.leak.clone()
    }

    /// A run that must end without errors.
    pub async fn sync_clean(&mut self) -> Result<RunReport, CaseError> {
        let r = self.sync().await?;
        if r.has_errors() {
            return Err(CaseError::Fail(format!(
                "the run ended {:?}: {}",
                r.status,
                self.errors(&r)
            )));
        }
        Ok(r)
    }

    /// What went wrong in a run, for a failure message: entity errors and id map errors.
    pub fn errors(&self, r: &RunReport) -> String {
        let mut out: Vec<String> = r.entities.iter().filter_map(|e| e.error.clone()).collect();
        out.extend(
            self.idmaps()
                .into_iter()
                .filter_map(|m| m.last_error.map(|e| format!("{:?}: {e}", m.external_id))),
        );
        out.join("; ")
    }

    pub fn idmaps(&self) -> Vec<IdMap> {
        self.engine
            .store
            .idmaps_of(&[self.prepared.connection_id])
            .unwrap_or_default()
    }

    fn hub_entity(&self) -> (&'static str, &'static str) {
        self.user().hub_field()
    }

    /// Every live hub record of the kit's entity: `(uid, name)`.
    pub fn hub_names(&self) -> Result<Vec<(String, String)>> {
        let (entity, field) = self.hub_entity();
        Ok(self
            .engine
            .store
            .hub_list(self.prepared.org_id, entity, 100_000)?
            .into_iter()
            .map(|h| {
                let name = h
                    .data
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (h.uid, name.to_string())
            })
            .collect())
    }

    /// Creates a hub record with this name, as another application or an operator would.
    pub fn hub_create(&self, name: &str) -> Result<String> {
        let (entity, field) = self.hub_entity();
        self.engine.store.hub_put(
            &self.engine.hub,
            self.prepared.org_id,
            entity,
            None,
            json!({ field: name }),
            None,
        )
    }

    /// Renames a hub record, keeping its other fields.
    pub fn hub_rename(&self, uid: &str, name: &str) -> Result<()> {
        let (entity, field) = self.hub_entity();
        let current = self
            .engine
            .store
            .hub_get(self.prepared.org_id, uid)?
            .context("no such hub record")?;
        let mut data = current.data;
        data[field] = json!(name);
        self.engine.store.hub_put(
            &self.engine.hub,
            self.prepared.org_id,
            entity,
            Some(uid),
            data,
            None,
        )?;
        Ok(())
    }

    /// Fails unless `names` are each held exactly once by the application.
    pub fn app_holds_once(&self, names: &[&str]) -> Result<(), CaseError> {
        holds_once("the application", &self.user().names(), names)
    }

    /// Fails unless `names` are each held exactly once by the hub.
    pub fn hub_holds_once(&self, names: &[&str]) -> Result<(), CaseError> {
        holds_once("the hub", &self.hub_names()?, names)
    }

    /// Sum of the calls of these kinds so far.
    pub fn calls(&self, kinds: &[&str]) -> u64 {
        kinds.iter().map(|k| self.control().calls(k)).sum()
    }

    /// The first secret (configured, or handed out by the fake: access tokens, rotated
    /// refresh tokens) found in what Ferry stored for this case (run rows, id maps) or in
    /// `more` (a run's report); `None` when there is none.
    pub fn leaked_secrets(&self, more: &[String]) -> Option<String> {
        let mut texts: Vec<String> = self
            .engine
            .store
            .runs_of(self.prepared.connection_id, 1000)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|r| [r.message.unwrap_or_default(), r.counts, r.options])
            .collect();
        for m in self.idmaps() {
            texts.extend([
                m.last_error.unwrap_or_default(),
                m.name.unwrap_or_default(),
                m.metadata.unwrap_or_default(),
                m.retry_to.unwrap_or_default(),
            ]);
        }
        texts.extend(more.iter().cloned());
        let issued = self.user().issued_secrets();
        let secrets = self
            .handle
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(
                issued
                    .into_iter()
                    .map(|v| ("a token the fake issued".into(), v)),
            )
            .filter(|(_, v)| v.len() >= 6);
        for (key, value) in secrets {
            if let Some(t) = texts.iter().find(|t| t.contains(value.as_str())) {
                let at = t.find(value.as_str()).unwrap_or(0);
                let context: String = t[..at].chars().rev().take(60).collect();
                let context: String = context.chars().rev().collect();
                return Some(format!(
                    "the secret {key:?} is stored in plain text after {context:?}"
                ));
            }
        }
        None
    }
}

fn holds_once(side: &str, held: &[(String, String)], names: &[&str]) -> Result<(), CaseError> {
    for name in names {
        let n = held.iter().filter(|(_, h)| h == name).count();
        if n != 1 {
            let all: Vec<&str> = held.iter().map(|(_, h)| h.as_str()).collect();
            return Err(CaseError::Fail(format!(
                "{side} holds {name:?} {n} times (expected once); it holds {all:?}"
            )));
        }
    }
    Ok(())
}

/// The kit's engine: the repository's hub model and mappers, the kit's settings, a
/// throwaway key (the kit's credentials are sandbox values).
pub(super) fn engine(cfg: &KitConfig) -> Result<Engine> {
    let mut settings = Settings::with_base(&cfg.base_dir, &cfg.database_url);
    settings.sync.page_size = PAGE_SIZE;
    settings.sync.first_sync_batch_size = PAGE_SIZE;
    settings.sync.http_timeout_seconds = HTTP_TIMEOUT_SECONDS;
    settings.sync.max_retries = MAX_RETRIES;
    // No lookback: a listing that starts too late is not covered up by re-reading.
    settings.sync.lookback_seconds = 0;
    let hub = HubModel::load(&settings.resolve(&settings.paths.hub_model))?;
    let store = Store::open_and_migrate(&settings.database_url())?;
    let key = uuid::Uuid::new_v4().simple().to_string();
    let cipher = Cipher::from_base64(&base64_of(key.as_bytes()))?;
    Ok(Engine::new(store, hub, settings, cipher))
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
