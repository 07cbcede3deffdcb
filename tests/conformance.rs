//! The conformance kit run against every connector, on SQLite and on PostgreSQL (when
//! FERRY_TEST_POSTGRES_URL is set): what `ferry conformance <connector>` runs.

mod common;

use std::sync::Arc;

use ferry_framework::connector::{self, ConnectionContext, Connector};
use ferry_framework::entity::{Entity, EntityDef, ExternalClient, Page, PageRequest};
use ferry_framework::http::ApiError;
use ferry_framework::testkit::{self, KitConfig, Outcome};
use serde_json::Value;

/// Every log line of this test binary (debug and up), to search for secrets.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Logs;

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,reqwest=info,h2=info")
            .with_writer(|| Logs)
            .try_init();
    });
}

/// The first of the sandbox's secrets found in the logs so far.
fn secret_in_logs(secrets: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    let text = String::from_utf8_lossy(&logs);
    // The kit's 429 cases retry: their debug lines must be here, or nothing was captured.
    assert!(text.contains("retrying API call"), "no logs were captured");
    secrets
        .iter()
        .find(|(_, v)| text.contains(v.as_str()))
        .map(|(k, _)| k.clone())
}

async fn kit(name: &str) {
    ferry_connectors::link();
    capture_logs();
    let c = connector::find(name).expect("registered");
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let cfg = KitConfig {
            base_dir: common::repo(),
            database_url: db.to_string(),
            only: None,
        };
        let report = testkit::run(c.as_ref(), &cfg).await.unwrap();
        for [case, variant, result, detail] in testkit::table(&report) {
            eprintln!(
                "KIT | {name} | {} | {case} | {variant} | {result} | {detail}",
                report.backend
            );
        }
        assert!(
            report.passed(),
            "{name} on {}:\n{}",
            report.backend,
            report.failures().join("\n")
        );
        let sandbox = c.sandbox().unwrap();
        let secrets = sandbox
            .start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .secrets;
        assert_eq!(
            secret_in_logs(&secrets),
            None,
            "a secret of {name} was logged"
        );
        let ran: Vec<_> = report.results.iter().map(|r| r.case).collect();
        for case in testkit::case_names() {
            assert!(ran.contains(&case), "{case} did not run");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn superoffice_conforms() {
    kit("superoffice").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workflowmax_conforms() {
    kit("workflowmax").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blizwork_conforms() {
    kit("blizwork").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phixflow_conforms() {
    kit("phixflow").await;
}

/// Every registered connector with a sandbox takes part, and each is tested above.
#[tokio::test(flavor = "multi_thread")]
async fn every_sandbox_takes_part_in_the_kit() {
    ferry_connectors::link();
    for c in connector::registry() {
        let Some(sandbox) = c.sandbox() else { continue };
        if c.name() == "forgetful" {
            continue; // this file's own broken connector
        }
        let h = sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert!(h.app.user().is_some(), "{} has no kit user", c.name());
        assert!(
            ["superoffice", "workflowmax", "blizwork", "phixflow"].contains(&c.name()),
            "{} has no conformance test in tests/conformance.rs",
            c.name()
        );
    }
}

/// A SuperOffice connector that answers updates without making them: the kit must fail it
/// (a kit that cannot fail proves nothing).
struct Forgetful;

struct ForgetfulClient(Arc<dyn ExternalClient>);

#[async_trait::async_trait]
impl ExternalClient for ForgetfulClient {
    async fn list_changed(
        &self,
        entity: &EntityDef,
        since: Option<chrono::DateTime<chrono::Utc>>,
        page: &PageRequest,
    ) -> Result<Page, ApiError> {
        self.0.list_changed(entity, since, page).await
    }
    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        self.0.get(entity, id).await
    }
    async fn create(
        &self,
        entity: &EntityDef,
        fields: &Value,
        key: &str,
    ) -> Result<Value, ApiError> {
        self.0.create(entity, fields, key).await
    }
    async fn update(&self, entity: &EntityDef, id: &str, _: &Value) -> Result<Value, ApiError> {
        self.0
            .get(entity, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(id.into()))
    }
    async fn find_match(&self, entity: &EntityDef, f: &Value) -> Result<Option<Value>, ApiError> {
        self.0.find_match(entity, f).await
    }
    fn record_id(&self, entity: &EntityDef, record: &Value) -> Option<String> {
        self.0.record_id(entity, record)
    }
    fn updated_at(
        &self,
        entity: &EntityDef,
        record: &Value,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.updated_at(entity, record)
    }
    fn display_name(&self, entity: &EntityDef, record: &Value) -> Option<String> {
        self.0.display_name(entity, record)
    }
}

fn superoffice() -> Box<dyn Connector> {
    connector::find("superoffice").expect("registered")
}

impl Connector for Forgetful {
    fn name(&self) -> &'static str {
        "forgetful"
    }
    fn description(&self) -> &'static str {
        "SuperOffice, with updates that are never made"
    }
    fn entities(&self) -> Vec<Entity> {
        superoffice().entities()
    }
    fn check_settings(
        &self,
        settings: &Value,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        superoffice().check_settings(settings, secrets)
    }
    fn open(&self, ctx: ConnectionContext) -> anyhow::Result<Arc<dyn ExternalClient>> {
        Ok(Arc::new(ForgetfulClient(superoffice().open(ctx)?)))
    }
    fn sandbox(&self) -> Option<Box<dyn ferry_framework::sandbox::Sandbox>> {
        superoffice().sandbox()
    }
}

ferry_framework::register_connector!(|| Box::new(Forgetful));

/// The kit fails a connector that breaks a case, names the case, and passes the others.
#[tokio::test(flavor = "multi_thread")]
async fn the_kit_fails_a_connector_that_drops_updates() {
    ferry_connectors::link();
    let dir = tempfile::tempdir().unwrap();
    // The forgetful connector reads SuperOffice's mappings under its own name.
    let base = dir.path().join("repo");
    std::fs::create_dir_all(base.join("config")).unwrap();
    std::fs::copy(
        common::repo().join("config/hub.yml"),
        base.join("config/hub.yml"),
    )
    .unwrap();
    std::fs::create_dir_all(base.join("mappers/forgetful")).unwrap();
    for f in ["contact.yml", "person.yml"] {
        std::fs::copy(
            common::repo().join("mappers/superoffice").join(f),
            base.join("mappers/forgetful").join(f),
        )
        .unwrap();
    }
    let cfg = KitConfig {
        base_dir: base,
        database_url: dir.path().join("kit.db").to_string_lossy().into_owned(),
        only: Some("hub_edit".into()),
    };
    let report = testkit::run(&Forgetful, &cfg).await.unwrap();
    assert!(!report.passed(), "{report:?}");
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .map(|r| r.case)
        .collect();
    assert!(failed.contains(&"hub_edit_reaches_app"), "{report:?}");
}
