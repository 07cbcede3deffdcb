//! Framework features no shipped application exercises yet, through the engine and a real
//! database: keyed lists (sub-records matched by id, not position) and singleton entities.
//! The application here is a small in-memory ledger defined by the test, registered like
//! any connector.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_framework::config::{OrgConfig, Settings};
use ferry_framework::connector::{ConnectionContext, Connector};
use ferry_framework::entity::{
    Capabilities, Entity, EntityDef, ExternalClient, Fetched, Page, PageRequest,
};
use ferry_framework::http::ApiError;
use ferry_framework::hub::HubModel;
use ferry_framework::secrets::Cipher;
use ferry_framework::store::Store;
use ferry_framework::sync::{Engine, Prepared, SyncOptions};
use serde_json::{json, Value};

mod common;

#[derive(Default)]
struct Ledger {
    invoices: BTreeMap<String, Value>,
    profile: Option<Value>,
    next: u64,
    writes: u64,
}

/// Ledgers by tenant (a connection setting), so tests do not share one.
fn ledgers() -> &'static Mutex<HashMap<String, Ledger>> {
    static L: OnceLock<Mutex<HashMap<String, Ledger>>> = OnceLock::new();
    L.get_or_init(Default::default)
}

fn with<T>(tenant: &str, f: impl FnOnce(&mut Ledger) -> T) -> T {
    let mut g = ledgers().lock().unwrap();
    f(g.entry(tenant.to_string()).or_default())
}

struct LedgerClient {
    tenant: String,
}

impl Ledger {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// Lines with a LineID update that line; lines without one are new; others go.
    fn write_invoice(&mut self, id: Option<&str>, fields: &Value) -> Value {
        let id = id.map_or_else(|| self.id("INV"), str::to_string);
        let old = self.invoices.get(&id).cloned().unwrap_or(json!({}));
        let mut lines = Vec::new();
        for l in fields["Lines"].as_array().cloned().unwrap_or_default() {
            let mut l = l;
            let existing = l["LineID"].as_str().and_then(|lid| {
                old["Lines"]
                    .as_array()
                    .and_then(|ls| ls.iter().find(|x| x["LineID"] == lid).cloned())
            });
            if existing.is_none() {
                l["LineID"] = self.id("L").into();
            }
            lines.push(l);
        }
        let rec = json!({"ID": id, "Number": fields.get("Number").cloned().unwrap_or(old["Number"].clone()), "Lines": lines, "Updated": Utc::now().to_rfc3339()});
        self.invoices.insert(id, rec.clone());
        self.writes += 1;
        rec
    }
}

#[async_trait]
impl ExternalClient for LedgerClient {
    async fn list_changed(
        &self,
        entity: &EntityDef,
        _since: Option<DateTime<Utc>>,
        _page: &PageRequest,
    ) -> Result<Page, ApiError> {
        let records = with(&self.tenant, |l| match entity.external_entity {
            "Profile" => l.profile.iter().cloned().collect::<Vec<_>>(),
            _ => l.invoices.values().cloned().collect(),
        });
        Ok(Page {
            records: records.into_iter().map(Fetched::Record).collect(),
            next: None,
        })
    }
    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        Ok(with(&self.tenant, |l| match entity.external_entity {
            "Profile" => l.profile.clone(),
            _ => l.invoices.get(id).cloned(),
        }))
    }
    async fn create(
        &self,
        entity: &EntityDef,
        fields: &Value,
        _key: &str,
    ) -> Result<Value, ApiError> {
        Ok(with(&self.tenant, |l| match entity.external_entity {
            // An account has exactly one profile: "creating" it sets it.
            "Profile" => {
                let mut p = l.profile.clone().unwrap_or(json!({"ID": "PROFILE"}));
                for (k, v) in fields.as_object().unwrap() {
                    p[k] = v.clone();
                }
                l.profile = Some(p.clone());
                l.writes += 1;
                p
            }
            _ => l.write_invoice(None, fields),
        }))
    }
    async fn update(
        &self,
        entity: &EntityDef,
        id: &str,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        if entity.external_entity == "Profile" {
            return self.create(entity, fields, "").await;
        }
        Ok(with(&self.tenant, |l| l.write_invoice(Some(id), fields)))
    }
    async fn find_match(&self, _: &EntityDef, _: &Value) -> Result<Option<Value>, ApiError> {
        Ok(None)
    }
    fn record_id(&self, _: &EntityDef, record: &Value) -> Option<String> {
        record["ID"].as_str().map(str::to_string)
    }
    fn updated_at(&self, _: &EntityDef, _: &Value) -> Option<DateTime<Utc>> {
        None
    }
    fn display_name(&self, _: &EntityDef, record: &Value) -> Option<String> {
        record["Number"].as_str().map(str::to_string)
    }
}

struct LedgerConnector;

impl Connector for LedgerConnector {
    fn name(&self) -> &'static str {
        "ledger"
    }
    fn description(&self) -> &'static str {
        "in-memory ledger (tests only)"
    }
    fn entities(&self) -> Vec<Entity> {
        vec![
            EntityDef {
                name: "invoice",
                hub_entity: "Invoice",
                external_entity: "Invoice",
                mapping: "invoice",
                external_fields: &["ID", "Number", "Lines"],
                capabilities: Capabilities::READ_WRITE,
            }
            .into(),
            EntityDef {
                name: "profile",
                hub_entity: "CompanyProfile",
                external_entity: "Profile",
                mapping: "profile",
                external_fields: &["ID", "CompanyName", "Currency"],
                capabilities: Capabilities::READ_WRITE,
            }
            .into(),
        ]
    }
    fn check_settings(&self, _: &Value, _: &BTreeMap<String, String>) -> anyhow::Result<()> {
        Ok(())
    }
    fn open(&self, ctx: ConnectionContext) -> anyhow::Result<Arc<dyn ExternalClient>> {
        Ok(Arc::new(LedgerClient {
            tenant: ctx.settings["tenant"].as_str().unwrap_or("").to_string(),
        }))
    }
}

ferry_framework::register_connector!(|| Box::new(LedgerConnector));

struct Env {
    engine: Engine,
    prepared: Prepared,
    tenant: String,
}

fn env(url: &str) -> Env {
    let fixtures = common::repo().join("tests/fixtures/ledger");
    let mut settings = Settings::with_base(&fixtures, url);
    settings.paths.mappers = fixtures.join("mappers").to_string_lossy().into_owned();
    let hub = HubModel::load(&fixtures.join("hub.yml")).unwrap();
    let store = Store::open_and_migrate(url).unwrap();
    let cipher = Cipher::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let engine = Engine::new(store, hub, settings, cipher);
    let tenant = uuid::Uuid::new_v4().to_string();
    let conn = common::connection(
        "ledger",
        "ledger",
        json!({ "tenant": tenant }),
        &["invoice", "profile"],
        Default::default(),
    );
    let org = OrgConfig {
        slug: "acme".into(),
        name: "Acme".into(),
        sync_enabled: true,
        date_filtering_limit: None,
        sync_interval_seconds: None,
        connections: vec![conn.clone()],
        source: "test".into(),
    };
    let prepared = engine.prepare(&org, &conn, Some(BTreeMap::new())).unwrap();
    Env {
        engine,
        prepared,
        tenant,
    }
}

impl Env {
    async fn sync(&self) -> ferry_framework::sync::RunReport {
        let r = self
            .engine
            .run(&self.prepared, &SyncOptions::default(), &|_| {})
            .await
            .unwrap();
        assert_eq!(r.status.as_str(), "success", "{r:?}");
        r
    }
    fn hub(&self, entity: &str) -> Vec<ferry_framework::store::hub::HubRecord> {
        self.engine
            .store
            .hub_list(self.prepared.org_id, entity, 100)
            .unwrap()
    }
    fn ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        with(&self.tenant, f)
    }
}

fn lines(v: &Value, desc: &str, id: &str) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l[desc].as_str().unwrap().to_string(),
                l[id].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn keyed_lines_are_matched_by_id_not_position() {
    ferry_connectors::link();
    let dir = tempfile::tempdir().unwrap();
    for url in common::backends(dir.path()) {
        let e = env(&url);
        let inv = e.ledger(|l| {
            l.write_invoice(
                None,
                &json!({"Number": "1001", "Lines": [
                    {"Description": "Rope", "Amount": 10},
                    {"Description": "Anchor", "Amount": 250}]}),
            )
        });
        let inv_id = inv["ID"].as_str().unwrap().to_string();
        let app_lines = lines(&inv["Lines"], "Description", "LineID");
        e.sync().await;
        let hub = e.hub("Invoice").pop().unwrap();
        let hub_lines = lines(&hub.data["lines"], "description", "id");
        assert_eq!(hub_lines.len(), 2);

        // The hub reorders the lines, edits one and adds one.
        let mut data = hub.data.clone();
        let (rope, anchor) = (data["lines"][0].clone(), data["lines"][1].clone());
        let mut anchor2 = anchor.clone();
        anchor2["description"] = "Anchor, galvanised".into();
        data["lines"] = json!([anchor2, rope, {"description": "Chain", "amount": 80}]);
        e.engine
            .store
            .hub_put(
                &e.engine.hub,
                e.prepared.org_id,
                "Invoice",
                Some(&hub.uid),
                data,
                None,
            )
            .unwrap();
        e.sync().await;
        let stored = e.ledger(|l| l.invoices[&inv_id].clone());
        let now = lines(&stored["Lines"], "Description", "LineID");
        assert_eq!(now.len(), 3, "no line duplicated or lost: {now:?}");
        // The edited line kept its application id; the new one got a new id.
        assert_eq!(
            now[0],
            ("Anchor, galvanised".to_string(), app_lines[1].1.clone())
        );
        assert_eq!(now[1], ("Rope".to_string(), app_lines[0].1.clone()));
        assert!(!app_lines.iter().any(|(_, id)| *id == now[2].1));

        // The application reorders and edits: the hub keeps each line's id.
        e.ledger(|l| {
            let mut rec = l.invoices[&inv_id].clone();
            let ls = rec["Lines"].as_array_mut().unwrap();
            ls.reverse();
            ls[2]["Amount"] = 300.into();
            l.write_invoice(Some(&inv_id), &rec)
        });
        e.sync().await;
        let hub = e.hub("Invoice").pop().unwrap();
        let after = &hub.data["lines"];
        assert_eq!(after[0]["description"], "Chain");
        assert_eq!(after[2]["description"], "Anchor, galvanised");
        assert_eq!(after[2]["amount"], 300);
        assert_eq!(after[2]["id"], anchor["id"], "a line keeps its hub id");
        assert_eq!(after[1]["id"], rope["id"]);

        let writes = e.ledger(|l| l.writes);
        let r = e.sync().await;
        assert!(r.entities.iter().all(|x| x.counts.writes() == 0), "{r:?}");
        assert_eq!(e.ledger(|l| l.writes), writes);
    }
}

#[tokio::test]
async fn a_singleton_merges_into_the_one_hub_record() {
    ferry_connectors::link();
    let dir = tempfile::tempdir().unwrap();
    for url in common::backends(dir.path()) {
        let e = env(&url);
        let org = e.prepared.org_id;
        let put = |uid: Option<&str>, data: Value| {
            e.engine
                .store
                .hub_put(&e.engine.hub, org, "CompanyProfile", uid, data, None)
        };
        let uid = put(None, json!({"currency": "NOK"})).unwrap();
        let err = put(None, json!({"currency": "EUR"})).unwrap_err();
        assert!(
            format!("{err}").contains("one record per organization"),
            "{err}"
        );
        e.ledger(|l| l.profile = Some(json!({"ID": "PROFILE", "CompanyName": "Acme AS"})));
        e.sync().await;
        let all = e.hub("CompanyProfile");
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].uid, uid);
        assert_eq!(all[0].data["company_name"], "Acme AS");
        assert_eq!(all[0].data["currency"], "NOK");
        // The hub's currency went out to the one profile.
        let p = e.ledger(|l| l.profile.clone()).unwrap();
        assert_eq!(p["Currency"], "NOK");
        assert_eq!(p["ID"], "PROFILE");
    }
}
