//! SuperOffice against its official contract (issue 16): the tenant found where it lives,
//! updates that change only what Ferry maps, and listings that carry the mapped fields.
//! Each test runs on SQLite and on PostgreSQL when FERRY_TEST_POSTGRES_URL is set.

mod common;

use serde_json::{json, Value};

use common::{backends, connection, engine, org, Opts};
use ferry_connectors::superoffice::fake::FakeSuperOffice;
use ferry_framework::config::{ConnectionConfig, EntitySelection};
use ferry_framework::sandbox::SandboxApp;
use ferry_framework::store::hub::HubRecord;
use ferry_framework::store::idmaps::IdMapFilter;
use ferry_framework::sync::{Engine, Prepared, RunReport, SyncOptions};

struct So {
    engine: Engine,
    fake: FakeSuperOffice,
    addr: String,
    prepared: Prepared,
}

/// A SuperOffice connection to a fresh fake; `settings` adjusts the fake's settings.
async fn so(url: &str, settings: impl FnOnce(&mut Value, &FakeSuperOffice, &str)) -> So {
    let engine = engine(url, &Opts::default());
    let fake = FakeSuperOffice::new();
    let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut s = FakeSuperOffice::settings(addr);
    settings(&mut s, &fake, &addr.to_string());
    let conn: ConnectionConfig = connection(
        "so",
        "superoffice",
        s,
        &["organization", "person"],
        EntitySelection::default(),
    );
    let prepared = engine
        .prepare(
            &org(vec![conn.clone()]),
            &conn,
            Some(FakeSuperOffice::secrets()),
        )
        .unwrap();
    So {
        engine,
        fake,
        addr: addr.to_string(),
        prepared,
    }
}

impl So {
    async fn sync(&self) -> RunReport {
        self.engine
            .run(&self.prepared, &SyncOptions::default(), &|_| {})
            .await
            .unwrap()
    }

    /// The hub record linked to this external record.
    fn hub_record(&self, hub_entity: &str, external_id: &str) -> HubRecord {
        let ids = [self.prepared.connection_id];
        let filter = IdMapFilter::all(&ids);
        let hub = self
            .engine
            .store
            .idmaps_after(&filter, 0, 10_000)
            .unwrap()
            .into_iter()
            .find(|m| m.external_id.as_deref() == Some(external_id) && m.hub_entity == hub_entity)
            .and_then(|m| m.hub_id)
            .expect("the record is in the hub");
        let org = self.prepared.org_id;
        self.engine.store.hub_get(org, &hub).unwrap().unwrap()
    }

    async fn clean(&self) -> RunReport {
        let r = self.sync().await;
        assert!(!r.has_errors(), "{r:?}");
        r
    }
}

fn item(v: &str, d: &str) -> Value {
    json!({"Value": v, "StrippedValue": v, "Description": d})
}

/// A person with two described e-mails, three phones and user-defined fields; a hub edit
/// of the first name changes the first name and nothing else SuperOffice holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_edit_changes_only_the_mapped_value() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let s = so(&db, |_, _, _| {}).await;
        let company = s.fake.add_contact("Nordic Freight AS", "NO1", "");
        let id = s
            .fake
            .add_person("Ingrid", "Solberg", "ingrid@nordic.example", Some(company));
        s.fake.edit(
            "Person",
            id,
            json!({
                "Title": "CFO",
                "Emails": [item("ingrid@nordic.example", "Work"), item("ingrid@home.example", "Private")],
                "MobilePhones": [item("+47 900 00 001", "Work mobile"), item("+47 900 00 002", "Private")],
                "OfficePhones": [item("+47 22 00 00 00", "Switchboard")],
                "UserDefinedFields": {"SuperOffice:1": "Key account", "SuperOffice:2": "[I:7]"},
            }),
        );
        s.clean().await;
        let before = s.fake.person(id).unwrap();
        let rec = s.hub_record("Person", &id.to_string());
        let mut data = rec.data.clone();
        data["first_name"] = json!("Ingrid Marie");
        s.engine
            .store
            .hub_put(
                &s.engine.hub,
                s.prepared.org_id,
                "Person",
                Some(&rec.uid),
                data,
                None,
            )
            .unwrap();
        s.clean().await;
        let after = s.fake.person(id).unwrap();
        assert_eq!(after["Firstname"], json!("Ingrid Marie"));
        let strip = |mut v: Value| {
            for k in ["Firstname", "UpdatedDate"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        };
        assert_eq!(
            strip(after),
            strip(before),
            "only the first name may change"
        );
        assert!(
            s.fake.control().off_contract().is_empty(),
            "{:?}",
            s.fake.control().off_contract()
        );
    }
}

/// Only the authentication host is configured: the tenant is found from the id token,
/// and found again through the state service when it moves (HTTP 421 at the old host).
#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_is_found_and_found_again_when_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let s = so(&db, |_, _, _| {}).await;
        s.fake.add_contact("Nordic Freight AS", "NO1", "");
        s.clean().await;
        assert_eq!(s.fake.calls("misdirected"), 0);
        assert_eq!(
            s.fake.calls("state"),
            0,
            "the id token said where the tenant is"
        );
        let stored = ferry_framework::http::TokenStore::new(
            s.engine.store.clone(),
            s.engine.cipher.clone(),
            s.prepared.connection_id,
        );
        assert_eq!(
            stored.load().unwrap().endpoint,
            Some(s.fake.tenant_url(&s.addr))
        );
        s.fake.move_tenant("sod3");
        let moved = s.fake.add_contact("Fjord Analytics", "NO2", "");
        s.clean().await;
        assert_eq!(s.fake.calls("misdirected"), 1);
        assert_eq!(s.fake.calls("state"), 1);
        assert_eq!(
            stored.load().unwrap().endpoint,
            Some(s.fake.tenant_url(&s.addr))
        );
        // The next run goes straight to the new host.
        s.fake
            .edit("Contact", moved, json!({"Department": "Sales"}));
        s.clean().await;
        assert_eq!(s.fake.calls("misdirected"), 1);
    }
}

/// A fixed `api_url` at a host the tenant is not on fails with a message that says what
/// to do, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_api_url_at_the_wrong_host_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = backends(dir.path()).remove(0);
    let s = so(&db, |settings, _, addr| {
        settings["api_url"] = json!(format!("http://{addr}/Cust12345/api/"));
    })
    .await;
    s.fake.add_contact("Nordic Freight AS", "NO1", "");
    let r = s.sync().await;
    let e = format!("{r:?}");
    assert!(e.contains("421") && e.contains("api_url"), "{e}");
    assert_eq!(s.fake.writes(), 0);
}

/// A first sync lists the mapped columns a thousand rows at a time and reads no record
/// by id; an idle run lists each entity once and reads nothing.
#[tokio::test(flavor = "multi_thread")]
async fn listings_carry_the_mapped_fields() {
    let dir = tempfile::tempdir().unwrap();
    let db = backends(dir.path()).remove(0);
    let s = so(&db, |_, _, _| {}).await;
    assert!(s.fake.seed_many(2500));
    let r = s.clean().await;
    assert_eq!(r.entities[0].counts.created_in_hub, 2500);
    assert_eq!(s.fake.calls("get"), 0, "no record read by id");
    // 3 pages of Contacts, 1 of Persons.
    assert_eq!(s.fake.calls("list"), 4);
    let lists = s.fake.calls("list");
    s.clean().await;
    assert_eq!(s.fake.calls("list") - lists, 2, "one list call per entity");
    assert_eq!(s.fake.calls("get"), 0);
    assert_eq!(s.fake.writes(), 0);
    // What the rows carried reached the hub.
    let first = s.fake.contacts()[0]["ContactId"].to_string();
    let rec = s.hub_record("Organization", &first);
    for field in [
        "name",
        "org_number",
        "website",
        "email",
        "phone",
        "industry",
    ] {
        assert!(
            rec.data[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {}",
            rec.data
        );
    }
}

/// A created record starts from SuperOffice's default entity (its preference defaults).
#[tokio::test(flavor = "multi_thread")]
async fn creates_start_from_the_default_entity() {
    let dir = tempfile::tempdir().unwrap();
    let db = backends(dir.path()).remove(0);
    let s = so(&db, |_, _, _| {}).await;
    s.clean().await;
    s.engine
        .store
        .hub_put(
            &s.engine.hub,
            s.prepared.org_id,
            "Organization",
            None,
            json!({"name": "Hub Made AS", "industry": "Shipping"}),
            None,
        )
        .unwrap();
    s.clean().await;
    assert_eq!(s.fake.calls("default"), 1);
    let c = s
        .fake
        .contacts()
        .into_iter()
        .find(|c| c["Name"] == json!("Hub Made AS"))
        .expect("created in SuperOffice");
    assert_eq!(c["Country"]["CountryId"], json!(578), "{c}");
    assert_eq!(c["CustomFields"]["SuperOffice:1"], json!("Shipping"), "{c}");
    assert_eq!(
        c["UserDefinedFields"]["SuperOffice:1"],
        json!("Shipping"),
        "{c}"
    );
    assert_eq!(
        c["UserDefinedFields"]["SuperOffice:3"],
        json!("[I:0]"),
        "{c}"
    );
}
