//! Sync that loses nothing: each case is a way other sync tools lose, revert or duplicate a
//! user's edit, asserted through what the applications (the fakes) end up holding, on
//! SQLite and on PostgreSQL when FERRY_TEST_POSTGRES_URL is set.

mod common;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use common::{backends, connection, org, quick_limits, Hub};
use ferry_connectors::superoffice::fake::{FakeSuperOffice, Fault, Target};
use ferry_connectors::workflowmax::fake::FakeWorkflowMax;
use ferry_framework::config::{ConflictPolicy, EntitySelection, Settings};
use ferry_framework::hub::HubModel;
use ferry_framework::secrets::Cipher;
use ferry_framework::store::Store;
use ferry_framework::sync::{Engine, Prepared, RunReport, SyncOptions};

/// One organization with some SuperOffice tenants and optionally a WorkflowMax account.
struct Org {
    engine: Engine,
    /// In the organization's file order.
    conns: Vec<Prepared>,
    so: Vec<FakeSuperOffice>,
    wfm: Option<FakeWorkflowMax>,
}

struct Setup {
    tenants: usize,
    wfm: bool,
    wfm_first: bool,
    conflict: ConflictPolicy,
    page_size: usize,
}

impl Setup {
    fn tenants(n: usize) -> Setup {
        Setup {
            tenants: n,
            ..Setup::default()
        }
    }
    fn wfm(self) -> Setup {
        Setup { wfm: true, ..self }
    }
    fn wfm_first(self) -> Setup {
        Setup {
            wfm: true,
            wfm_first: true,
            ..self
        }
    }
    fn page(self, page_size: usize) -> Setup {
        Setup { page_size, ..self }
    }
    fn policy(self, conflict: ConflictPolicy) -> Setup {
        Setup { conflict, ..self }
    }
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            tenants: 1,
            wfm: false,
            wfm_first: false,
            conflict: ConflictPolicy::Newest,
            page_size: 100,
        }
    }
}

fn engine(url: &str, page_size: usize) -> Engine {
    ferry_connectors::link();
    let repo = common::repo();
    let mut settings = Settings::with_base(&repo, url);
    settings.sync.first_sync_batch_size = page_size;
    settings.sync.page_size = page_size;
    settings.sync.max_retries = 1;
    let hub = HubModel::load(&repo.join("config/hub.yml")).unwrap();
    let store = Store::open_and_migrate(url).unwrap();
    let cipher = Cipher::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    Engine::new(store, hub, settings, cipher)
}

async fn setup(url: &str, s: Setup) -> Org {
    let engine = engine(url, s.page_size);
    let sel = EntitySelection {
        conflict: s.conflict,
        ..Default::default()
    };
    let mut configs = Vec::new();
    let mut secrets = Vec::new();
    let mut so = Vec::new();
    for i in 0..s.tenants {
        let fake = FakeSuperOffice::new();
        let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let name = ["so_a", "so_b", "so_c"][i];
        let mut cfg = connection(
            name,
            "superoffice",
            FakeSuperOffice::settings(addr),
            &["organization", "person"],
            sel.clone(),
        );
        // The test's pages, not SuperOffice's recommended 1000: listings must page.
        cfg.page_size = Some(s.page_size);
        configs.push(cfg);
        secrets.push(FakeSuperOffice::secrets());
        so.push(fake);
    }
    let wfm = if s.wfm {
        let (limits, rate) = quick_limits();
        let fake = FakeWorkflowMax::with_limits(limits);
        fake.define_standard_fields();
        let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut cfg = connection(
            "wfm",
            "workflowmax",
            FakeWorkflowMax::settings(addr),
            &["client"],
            sel.clone(),
        );
        cfg.rate_limit = Some(rate);
        let at = if s.wfm_first { 0 } else { configs.len() };
        configs.insert(at, cfg);
        secrets.insert(at, FakeWorkflowMax::secrets());
        Some(fake)
    } else {
        None
    };
    let org = org(configs.clone());
    let conns = configs
        .iter()
        .zip(secrets)
        .map(|(c, sec)| engine.prepare(&org, c, Some(sec)).unwrap())
        .collect();
    Org {
        engine,
        conns,
        so,
        wfm,
    }
}

impl Hub for Org {
    fn engine(&self) -> &Engine {
        &self.engine
    }
    fn org_id(&self) -> i64 {
        self.conns[0].org_id
    }
}

impl Org {
    /// One `ferry sync`: every connection in order, then the settle pass.
    async fn sync(&self) -> Vec<RunReport> {
        self.engine
            .run_each(&self.conns, &SyncOptions::default(), &|_, _| {})
            .await
            .unwrap()
    }

    fn conn(&self, name: &str) -> &Prepared {
        self.conns.iter().find(|p| p.config.name == name).unwrap()
    }

    fn idmaps(&self, name: &str) -> Vec<ferry_framework::store::idmaps::IdMap> {
        let id = self.conn(name).connection_id;
        self.engine.store.idmaps_of(&[id]).unwrap()
    }

    fn wfm(&self) -> &FakeWorkflowMax {
        self.wfm.as_ref().unwrap()
    }
}

fn text(v: &Value, path: &str) -> String {
    let mut cur = v;
    for k in path.split('.') {
        cur = match k.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[k],
        };
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn so_contact_named(fake: &FakeSuperOffice, name: &str) -> Value {
    fake.contacts()
        .into_iter()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("no contact {name:?} in {:?}", fake.contacts()))
}

fn wfm_client_named(fake: &FakeWorkflowMax, name: &str) -> Value {
    fake.clients()
        .into_iter()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("no client {name:?} in {:?}", fake.clients()))
}

/// A time an hour ago, whole seconds: fake clocks start there so edits can be ordered.
fn t0() -> DateTime<Utc> {
    let now = Utc::now() - Duration::hours(1);
    DateTime::from_timestamp(now.timestamp(), 0).unwrap()
}

async fn idle(o: &Org) {
    let writes_before: u64 = o.so.iter().map(FakeSuperOffice::writes).sum::<u64>()
        + o.wfm.as_ref().map_or(0, FakeWorkflowMax::writes);
    let seq = o.hub_seq();
    for r in o.sync().await {
        for e in &r.entities {
            assert_eq!(e.counts.writes(), 0, "an idle run wrote: {r:?}");
        }
    }
    let writes_after: u64 = o.so.iter().map(FakeSuperOffice::writes).sum::<u64>()
        + o.wfm.as_ref().map_or(0, FakeWorkflowMax::writes);
    assert_eq!(
        writes_after, writes_before,
        "an idle run wrote to an application"
    );
    assert_eq!(o.hub_seq(), seq, "an idle run wrote to the hub");
}

/// 1. "Newest wins" compares the edits' own times, whatever order connections run in.
#[tokio::test(flavor = "multi_thread")]
async fn newest_wins_by_the_applications_edit_times_in_either_connection_order() {
    for b_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let mut o = setup(&db, Setup::tenants(2)).await;
            let start = t0();
            o.so[0].set_clock(Some(start));
            o.so[1].set_clock(Some(start));
            let a = o.so[0].add_contact("Nordic Freight AS", "NO1", "");
            o.sync().await;
            let b = text(
                &so_contact_named(&o.so[1], "Nordic Freight AS"),
                "ContactId",
            )
            .parse()
            .unwrap();
            o.so[0].set_clock(Some(start + Duration::seconds(600)));
            o.so[0].edit("Contact", a, json!({"Name": "Nordic Freight (A)"}));
            o.so[1].set_clock(Some(start + Duration::seconds(602)));
            o.so[1].edit("Contact", b, json!({"Name": "Nordic Freight (B)"}));
            if b_first {
                o.conns.swap(0, 1);
            }
            o.sync().await;
            let url = &*db;
            assert_eq!(
                o.so[0].contact(a).unwrap()["Name"],
                "Nordic Freight (B)",
                "{url} b_first={b_first}"
            );
            assert_eq!(
                o.so[1].contact(b).unwrap()["Name"],
                "Nordic Freight (B)",
                "{url} b_first={b_first}"
            );
            let conflicts = o
                .engine
                .store
                .conflicts_of(
                    &o.conns.iter().map(|p| p.connection_id).collect::<Vec<_>>(),
                    10,
                )
                .unwrap();
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].field, "name");
            idle(&o).await;
        }
    }
}

/// 2. A hub change to a field this connection does not map is no conflict; a true conflict
/// the hub wins is written to the application.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_change_never_diverges_the_sides_under_hub_wins() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).policy(ConflictPolicy::Hub)).await;
        let so = &o.so[0];
        let id = so.add_contact("Fjord Analytics", "NO2", "");
        o.sync().await;
        let uid = o
            .hub_named("Organization", "name", "Fjord Analytics")
            .unwrap()
            .uid;
        // A user edits Department; another source sets a field SuperOffice does not map.
        so.edit("Contact", id, json!({"Department": "Sales"}));
        let mut data = o
            .hub_named("Organization", "name", "Fjord Analytics")
            .unwrap()
            .data;
        data["linkedin_url"] = json!("https://linkedin.example/fjord");
        o.put("Organization", Some(&uid), data);
        o.sync().await;
        o.sync().await;
        let hub = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(hub.data["department"], "Sales", "{}", &*db);
        assert_eq!(hub.data["linkedin_url"], "https://linkedin.example/fjord");
        assert_eq!(so.contact(id).unwrap()["Department"], "Sales");
        // Now a true conflict on Department: the hub wins and SuperOffice is told.
        so.edit("Contact", id, json!({"Department": "Support"}));
        let mut data = hub.data.clone();
        data["department"] = json!("Marketing");
        o.put("Organization", Some(&uid), data);
        o.sync().await;
        assert_eq!(
            so.contact(id).unwrap()["Department"],
            "Marketing",
            "{}",
            &*db
        );
        let hub = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(hub.data["department"], "Marketing");
        idle(&o).await;
    }
}

/// 3. Edits to different fields in two applications both survive, even from an
/// application without edit times.
#[tokio::test(flavor = "multi_thread")]
async fn edits_to_different_fields_in_two_applications_both_survive() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).wfm()).await;
        let so = &o.so[0];
        let id = so.add_contact("Harbour Logistics", "NO3", "");
        o.sync().await;
        let client = text(&wfm_client_named(o.wfm(), "Harbour Logistics"), "UUID");
        o.wfm().edit(&client, json!({"Phone": "+64 9 555 0100"}));
        so.edit("Contact", id, json!({"Name": "Harbour Logistics Ltd"}));
        o.sync().await;
        let url = &*db;
        let c = so.contact(id).unwrap();
        assert_eq!(c["Name"], "Harbour Logistics Ltd", "{url}");
        assert_eq!(text(&c, "Phones.0.Value"), "+64 9 555 0100", "{url}");
        let w = o.wfm().client(&client).unwrap();
        assert_eq!(w["Name"], "Harbour Logistics Ltd", "{url}");
        assert_eq!(w["Phone"], "+64 9 555 0100", "{url}");
        idle(&o).await;
    }
}

/// 4. A record edited while a multi-page listing runs never makes another one vanish; nor
/// do rows sharing one update time across a page boundary.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_during_a_paged_listing_never_makes_another_record_vanish() {
    for same_time in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let o = setup(&db, Setup::tenants(1).page(2)).await;
            let so = &o.so[0];
            let start = t0();
            let mut ids = Vec::new();
            for i in 0..5 {
                let step = if same_time { 0 } else { i * 60 };
                so.set_clock(Some(start + Duration::seconds(step)));
                ids.push(so.add_contact(&format!("Company {}", i + 1), "", ""));
            }
            so.set_clock(None);
            let first = ids[0];
            // Contact 1 is edited just before page 2 of the contact listing is requested.
            so.before_list(
                2,
                Box::new(move |f| {
                    f.edit("Contact", first, json!({"Department": "Edited"}));
                }),
            );
            o.sync().await;
            o.sync().await;
            let names: Vec<String> = o
                .hub("Organization")
                .iter()
                .map(|h| text(&h.data, "name"))
                .collect();
            for i in 1..=5 {
                assert!(
                    names.contains(&format!("Company {i}")),
                    "{} same_time={same_time}: Company {i} never reached the hub: {names:?}",
                    &*db
                );
            }
            let h = o.hub_named("Organization", "name", "Company 1").unwrap();
            assert_eq!(h.data["department"], "Edited");
        }
    }
}

/// 4b. A client deleted while WorkflowMax's numbered pages are read never makes another
/// one vanish.
#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_during_a_numbered_listing_never_makes_another_record_vanish() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(0).wfm().page(2)).await;
        let uuids: Vec<String> = (1..=5)
            .map(|i| o.wfm().add_client(&format!("Client {i}"), json!({})))
            .collect();
        let first = uuids[0].clone();
        o.wfm().before_list(
            2,
            Box::new(move |f| {
                f.remove_client(&first);
            }),
        );
        o.sync().await;
        let names: Vec<String> = o
            .hub("Organization")
            .iter()
            .map(|h| text(&h.data, "name"))
            .collect();
        for i in 2..=5 {
            assert!(
                names.contains(&format!("Client {i}")),
                "{}: Client {i} never reached the hub: {names:?}",
                &*db
            );
        }
    }
}

/// 5. The incremental window is the application's clock, not Ferry's.
#[tokio::test(flavor = "multi_thread")]
async fn an_application_whose_clock_runs_behind_loses_no_edit() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        // A tenant at UTC-5 reporting local times without an offset: five hours behind.
        let behind = t0() - Duration::hours(4);
        so.set_clock(Some(behind));
        let id = so.add_contact("Tidewater Trading", "US1", "");
        o.sync().await;
        so.set_clock(Some(behind + Duration::seconds(60)));
        so.edit("Contact", id, json!({"Name": "Tidewater Trading Co"}));
        o.sync().await;
        assert!(
            o.hub_named("Organization", "name", "Tidewater Trading Co")
                .is_some(),
            "{}: the rename was never fetched",
            &*db
        );
    }
}

/// 6. A transient failure delays a change; it never drops it.
#[tokio::test(flavor = "multi_thread")]
async fn a_deferred_push_survives_the_next_pull() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let c1 = a.add_contact("Alpha AS", "", "");
        let p = a.add_person("Ola", "Nordmann", "ola@alpha.example", Some(c1));
        o.sync().await;
        let c2 = a.add_contact("Beta AS", "", "");
        a.edit("Person", p, json!({"Contact": {"ContactId": c2}}));
        b.fail_next(Target::Create, Fault::Status(500));
        o.sync().await;
        o.sync().await;
        let b_beta = text(&so_contact_named(b, "Beta AS"), "ContactId");
        let b_ola = b
            .persons()
            .into_iter()
            .find(|x| x["Firstname"] == "Ola")
            .unwrap();
        assert_eq!(text(&b_ola, "Contact.ContactId"), b_beta, "{}", &*db);
        assert_eq!(b.contacts().len(), 2, "{:?}", b.contacts());
        idle(&o).await;
    }
}

/// 7. A match key more than one record holds is ambiguous: nothing is merged.
#[tokio::test(flavor = "multi_thread")]
async fn an_ambiguous_match_never_merges_different_people() {
    for wfm_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let o = setup(
                &db,
                Setup {
                    wfm: true,
                    wfm_first,
                    ..Default::default()
                },
            )
            .await;
            let so = &o.so[0];
            let acme = so.add_contact("Acme AS", "", "");
            let ceo = so.add_person("Carl", "Executive", "office@acme.example", Some(acme));
            so.edit("Person", ceo, json!({"Title": "CEO"}));
            so.add_person("Cecilie", "Finans", "office@acme.example", Some(acme));
            let client = o.wfm().add_client("Acme AS", json!({}));
            let cfo = o
                .wfm()
                .add_contact(
                    &client,
                    "Cecilie Finans",
                    json!({"Email": "office@acme.example", "Position": "CFO"}),
                )
                .unwrap();
            let reports = o.sync().await;
            o.sync().await;
            let url = &*db;
            let p = so.person(ceo).unwrap();
            assert_eq!(
                (p["Firstname"].as_str(), p["Title"].as_str()),
                (Some("Carl"), Some("CEO")),
                "{url} wfm_first={wfm_first}"
            );
            assert_eq!(
                o.wfm().contact(&cfo).unwrap()["Name"],
                "Cecilie Finans",
                "{url}"
            );
            let ambiguous: u64 = reports
                .iter()
                .flat_map(|r| &r.entities)
                .map(|e| e.counts.ambiguous)
                .sum();
            assert!(ambiguous >= 1, "{url}: {reports:?}");
            let noted = ["so_a", "wfm"]
                .iter()
                .flat_map(|c| o.idmaps(c))
                .any(|m| m.note().is_some_and(|e| e.contains("ambiguous")));
            assert!(noted, "{url}: the ambiguity is on no id map");
        }
    }
}

/// 8. A move the target cannot express stays at its source and in the hub; the target
/// records a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_the_target_cannot_make_is_not_reverted_at_the_source() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).wfm()).await;
        let so = &o.so[0];
        let one = so.add_contact("One AS", "", "");
        let two = so.add_contact("Two AS", "", "");
        let p = so.add_person("Kari", "Flytter", "kari@one.example", Some(one));
        o.sync().await;
        so.edit("Person", p, json!({"Contact": {"ContactId": two}}));
        o.sync().await;
        o.sync().await;
        let url = &*db;
        assert_eq!(
            text(&so.person(p).unwrap(), "Contact.ContactId"),
            two.to_string(),
            "{url}"
        );
        let hub_two = o.hub_named("Organization", "name", "Two AS").unwrap().uid;
        let kari = o.hub_named("Person", "email", "kari@one.example").unwrap();
        assert_eq!(kari.data["organization_id"], hub_two.as_str(), "{url}");
        let err = o
            .idmaps("wfm")
            .into_iter()
            .find(|m| m.hub_id.as_deref() == Some(kari.uid.as_str()))
            .and_then(|m| m.last_error)
            .unwrap_or_default();
        assert!(err.contains("cannot move"), "{url}: {err:?}");
    }
}

/// An upgraded database: id maps linked before bases existed take their current values as
/// their base on the first run, and edits to different fields merge from then on.
#[tokio::test(flavor = "multi_thread")]
async fn records_linked_before_bases_existed_take_their_current_values_as_base() {
    use diesel::RunQueryDsl;
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        let id = so.add_contact("Legacy AS", "NO9", "");
        o.sync().await;
        // What the previous release left: no bases, and (the migration) no watermark.
        let mut c = o.engine.store.conn().unwrap();
        diesel::sql_query("UPDATE id_maps SET base = NULL")
            .execute(&mut *c)
            .unwrap();
        diesel::sql_query("UPDATE sync_cursors SET watermark = NULL")
            .execute(&mut *c)
            .unwrap();
        drop(c);
        o.sync().await;
        assert!(
            o.idmaps("so_a").iter().all(|m| m.base.is_some()),
            "{}",
            &*db
        );
        let uid = o
            .hub_named("Organization", "name", "Legacy AS")
            .unwrap()
            .uid;
        so.edit("Contact", id, json!({"Department": "Sales"}));
        let mut data = o
            .engine
            .store
            .hub_get(o.org_id(), &uid)
            .unwrap()
            .unwrap()
            .data;
        data["phone"] = json!("+47 22 00 00 00");
        o.put("Organization", Some(&uid), data);
        o.sync().await;
        let c = so.contact(id).unwrap();
        assert_eq!(c["Department"], "Sales", "{}", &*db);
        assert_eq!(text(&c, "Phones.0.Value"), "+47 22 00 00 00", "{}", &*db);
        let hub = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(hub.data["department"], "Sales");
        idle(&o).await;
    }
}

/// A rule that is not invertible (a lowercase, WorkflowMax's one Name split in two) never
/// rewrites a field whose source did not change.
#[tokio::test(flavor = "multi_thread")]
async fn a_lossy_rule_never_rewrites_a_field_that_did_not_change() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).wfm()).await;
        let so = &o.so[0];
        let acme = so.add_contact("Acme AS", "", "");
        let p = so.add_person("Ingrid", "Solberg", "Ingrid@Acme.example", Some(acme));
        let client = o.wfm().add_client("Acme AS", json!({}));
        let mary = o
            .wfm()
            .add_contact(
                &client,
                "Mary Ann Smith",
                json!({"Email": "mary@acme.example"}),
            )
            .unwrap();
        o.sync().await;
        for email in ["ingrid@acme.example", "mary@acme.example"] {
            let h = o.hub_named("Person", "email", email).unwrap();
            let mut data = h.data.clone();
            data["job_title"] = json!("Director");
            o.put("Person", Some(&h.uid), data);
        }
        o.sync().await;
        let ingrid = so.person(p).unwrap();
        assert_eq!(
            text(&ingrid, "Emails.0.Value"),
            "Ingrid@Acme.example",
            "{}",
            &*db
        );
        assert_eq!(ingrid["Title"], "Director");
        let m = o.wfm().contact(&mary).unwrap();
        assert_eq!(m["Name"], "Mary Ann Smith", "{}", &*db);
        // The job title goes as the contact's position at its client (`Positions`).
        assert_eq!(m["Position"], "Director", "{}", &*db);
        // A last name changed in the hub keeps the first name WorkflowMax holds.
        let h = o.hub_named("Person", "email", "mary@acme.example").unwrap();
        let mut data = h.data.clone();
        data["last_name"] = json!("Jones");
        o.put("Person", Some(&h.uid), data);
        o.sync().await;
        assert_eq!(
            o.wfm().contact(&mary).unwrap()["Name"],
            "Mary Jones",
            "{}",
            &*db
        );
        idle(&o).await;
    }
}

/// A write whose answer never came is Ferry's own write on the next pull, not a user's edit:
/// it never beats a newer edit that reached the hub meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_answer_was_lost_never_reverts_a_newer_edit() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let start = t0();
        a.set_clock(Some(start));
        b.set_clock(Some(start));
        let ida = a.add_contact("Echo AS", "", "");
        o.sync().await;
        let idb = b_contact_id(&o, "Echo AS");
        // A user in B sets Department at +100; the hub gets another value stamped +50.
        b.set_clock(Some(start + Duration::seconds(100)));
        b.edit("Contact", idb, json!({"Department": "Newer"}));
        let uid = o.hub_named("Organization", "name", "Echo AS").unwrap().uid;
        let mut data = o
            .engine
            .store
            .hub_get(o.org_id(), &uid)
            .unwrap()
            .unwrap()
            .data;
        data["department"] = json!("Older");
        o.engine
            .store
            .hub_put(
                &o.engine.hub,
                o.org_id(),
                "Organization",
                Some(&uid),
                data,
                Some(start + Duration::seconds(50)),
            )
            .unwrap();
        // The write to A lands at +200, but its answer (and the retry's) never comes.
        a.set_clock(Some(start + Duration::seconds(200)));
        a.fail_next(Target::Update, Fault::StoreThenFail(500));
        a.fail_next(Target::Update, Fault::StoreThenFail(500));
        let opts = SyncOptions::default();
        o.engine.run(&o.conns[0], &opts, &|_| {}).await.unwrap();
        assert_eq!(a.contact(ida).unwrap()["Department"], "Older");
        o.engine.run(&o.conns[1], &opts, &|_| {}).await.unwrap();
        o.sync().await;
        let url = &*db;
        assert_eq!(a.contact(ida).unwrap()["Department"], "Newer", "{url}");
        assert_eq!(b.contact(idb).unwrap()["Department"], "Newer", "{url}");
        let hub = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(hub.data["department"], "Newer", "{url}");
        idle(&o).await;
    }
}

/// A record the hub refuses (a value of the wrong type) keeps failing, visibly, until it is
/// fixed, and the valid edits that came with it are not lost meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_the_hub_refuses_loses_nothing_that_came_with_it() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        let id = so.add_contact("Typed AS", "", "");
        o.sync().await;
        // A number where the hub model wants text, with a valid edit beside it.
        so.edit(
            "Contact",
            id,
            json!({"Department": "Sales", "UserDefinedFields": {"SuperOffice:1": 5}}),
        );
        for _ in 0..2 {
            let r = o.sync().await;
            let errors: u64 = r
                .iter()
                .flat_map(|r| &r.entities)
                .map(|e| e.counts.errors)
                .sum();
            assert_eq!(
                errors, 1,
                "{}: the refusal is reported every run: {r:?}",
                &*db
            );
        }
        so.edit(
            "Contact",
            id,
            json!({"UserDefinedFields": {"SuperOffice:1": "Shipping"}}),
        );
        o.sync().await;
        let h = o.hub_named("Organization", "name", "Typed AS").unwrap();
        assert_eq!(h.data["department"], "Sales", "{}", &*db);
        assert_eq!(h.data["industry"], "Shipping", "{}", &*db);
        idle(&o).await;
    }
}

/// 9. A hub record changed between a writer's read and its write is not overwritten.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_hub_write_is_refused() {
    use ferry_framework::store::hub::{HubWrite, StaleHubRecord, StoredData};
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let uid = o.put("Organization", None, json!({"name": "Versioned AS"}));
        let read = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        o.put(
            "Organization",
            Some(&uid),
            json!({"name": "Versioned AS", "phone": "1"}),
        );
        let stale = HubWrite {
            uid: uid.clone(),
            create: false,
            read_seq: Some(read.seq),
            field_times: Default::default(),
            entity: "Organization".into(),
            data: StoredData::of(&json!({"name": "Versioned AS", "email": "x@y.z"})),
            match_key: None,
            updated_at: Utc::now(),
            origin_connection_id: None,
        };
        let mut c = o.engine.store.conn().unwrap();
        let err = Store::hub_write(&mut c, o.org_id(), &[stale]).unwrap_err();
        assert!(err.is::<StaleHubRecord>(), "{}: {err:#}", &*db);
        let now = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(now.data["phone"], "1");
    }
}

/// 9b. Two connections pulling the same hub record at once never revert each other's
/// fields (each page reads and writes the hub under the organization's hub lock).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_two_connections_keep_both_edits() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let ida = a.add_contact("Shared AS", "NO5", "");
        o.sync().await;
        let idb: i64 = text(&so_contact_named(b, "Shared AS"), "ContactId")
            .parse()
            .unwrap();
        let opts = SyncOptions::default();
        for round in 0..4 {
            a.edit(
                "Contact",
                ida,
                json!({"Department": format!("dept-{round}")}),
            );
            b.edit("Contact", idb, json!({"OrgNr": format!("NO-{round}")}));
            let (ra, rb) = tokio::join!(
                o.engine.run(&o.conns[0], &opts, &|_| {}),
                o.engine.run(&o.conns[1], &opts, &|_| {})
            );
            for r in [ra.unwrap(), rb.unwrap()] {
                assert!(!r.has_errors(), "{}: {r:?}", &*db);
            }
            let h = o.hub_named("Organization", "name", "Shared AS").unwrap();
            assert_eq!(h.data["department"], format!("dept-{round}"), "{}", &*db);
            assert_eq!(h.data["org_number"], format!("NO-{round}"), "{}", &*db);
        }
        o.sync().await;
        for (fake, id) in [(a, ida), (b, idb)] {
            let c = fake.contact(id).unwrap();
            assert_eq!(
                (c["Department"].as_str(), c["OrgNr"].as_str()),
                (Some("dept-3"), Some("NO-3")),
                "{}",
                &*db
            );
        }
        idle(&o).await;
    }
}

/// 10. The lease lives as long as the run, and an interrupted run releases it at once.
#[tokio::test(flavor = "multi_thread")]
async fn the_lease_lives_with_the_run_and_an_interrupted_run_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let mut o = setup(&db, Setup::default()).await;
        o.engine.settings.sync.lease_seconds = 1;
        o.so[0].add_contact("Slow AS", "", "");
        o.so[0].fail_next(
            Target::List,
            Fault::Delay(std::time::Duration::from_secs(3)),
        );
        let other = engine(&db, 100);
        let cid = o.conns[0].connection_id;
        let stop = o.engine.interrupter();
        let opts = SyncOptions::default();
        let run = o.engine.run(&o.conns[0], &opts, &|_| {});
        let probe = async {
            tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
            // Past the lease's second: a heartbeat has kept it.
            let taken = other.store.acquire_lease(cid, "intruder", 60).unwrap();
            stop.interrupt();
            taken
        };
        let (result, taken) = tokio::join!(run, probe);
        assert!(!taken, "{}: another run took a live run's lease", &*db);
        let err = result.unwrap_err();
        assert!(err.is::<ferry_framework::sync::Interrupted>(), "{err:#}");
        assert!(
            other.store.acquire_lease(cid, "next", 60).unwrap(),
            "the lease was kept"
        );
        let runs = o.engine.store.runs_of(cid, 5).unwrap();
        assert_eq!(runs[0].status, "interrupted", "{runs:?}");
    }
}

// Cases found by trying to break the model of change (fresh inputs of the same kinds).

fn b_contact_id(o: &Org, name: &str) -> i64 {
    text(&so_contact_named(&o.so[1], name), "ContactId")
        .parse()
        .unwrap()
}

/// A1. First-sync matching under `newest`: the record edited later (in the application's
/// own clock) wins every difference, whichever connection runs first. The hub field's
/// time is the one its source reported (the create's `*` time), never Ferry's write time.
#[tokio::test(flavor = "multi_thread")]
async fn first_sync_match_under_newest_goes_by_source_times_in_either_order() {
    for b_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let mut o = setup(&db, Setup::tenants(2)).await;
            let start = t0();
            o.so[0].set_clock(Some(start));
            let a = o.so[0].add_contact("Acme AS", "NO1", "");
            o.so[0].edit("Contact", a, json!({"Department": "Sales"}));
            // B's copy of the same company was edited ten minutes later.
            o.so[1].set_clock(Some(start + Duration::seconds(600)));
            let b = o.so[1].add_contact("Acme AS", "NO1", "");
            o.so[1].edit("Contact", b, json!({"Department": "Support"}));
            if b_first {
                o.conns.swap(0, 1);
            }
            o.sync().await;
            let url = &*db;
            assert_eq!(o.hub("Organization").len(), 1, "{url}: not matched");
            assert_eq!(
                o.so[0].contact(a).unwrap()["Department"],
                "Support",
                "{url} b_first={b_first}: A (older) should take B's newer value"
            );
            assert_eq!(
                o.so[1].contact(b).unwrap()["Department"],
                "Support",
                "{url} b_first={b_first}: B's newer edit was reverted"
            );
            idle(&o).await;
        }
    }
}

/// A2. An application edit made after a connection's pull, while Ferry writes another
/// field to that record later in the same `ferry sync` (the settle pass), is not swallowed
/// as Ferry's own echo.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_made_before_the_settle_pass_writes_the_record_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let a = o.so[0].add_contact("Echo AS", "NO5", "");
        o.sync().await;
        let b = b_contact_id(&o, "Echo AS");
        // B renames the company; while B is being listed, a user in A edits Department.
        o.so[1].edit("Contact", b, json!({"Name": "Echo Group AS"}));
        let fake_a = o.so[0].clone();
        let next = o.so[1].calls("list") + 1;
        o.so[1].before_list(
            next,
            Box::new(move |_| {
                fake_a.edit("Contact", a, json!({"Department": "Sales"}));
            }),
        );
        o.sync().await;
        o.sync().await;
        o.sync().await;
        let url = &*db;
        assert_eq!(
            o.so[0].contact(a).unwrap()["Name"],
            "Echo Group AS",
            "{url}"
        );
        assert_eq!(o.so[0].contact(a).unwrap()["Department"], "Sales", "{url}");
        let h = o
            .hub_named("Organization", "name", "Echo Group AS")
            .unwrap();
        assert_eq!(
            h.data["department"], "Sales",
            "{url}: A's Department edit never reached the hub"
        );
        assert_eq!(
            o.so[1].contact(b).unwrap()["Department"],
            "Sales",
            "{url}: A's Department edit never reached B"
        );
        idle(&o).await;
    }
}

/// A3. A create whose answer was lost (the write happened) for a record with no match key
/// (a person without e-mail) is reconciled, not duplicated, on the next run.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_create_of_a_person_without_email_is_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        so.add_contact("Nomail AS", "", "");
        o.sync().await;
        let org = o
            .hub_named("Organization", "name", "Nomail AS")
            .unwrap()
            .uid;
        o.put(
            "Person",
            None,
            json!({"first_name": "Per", "last_name": "Utenpost", "organization_id": org}),
        );
        so.fail_next(Target::Create, Fault::StoreThenFail(500));
        o.sync().await;
        o.sync().await;
        o.sync().await;
        let url = &*db;
        let pers: Vec<Value> = so
            .persons()
            .into_iter()
            .filter(|p| p["Firstname"] == "Per")
            .collect();
        assert_eq!(pers.len(), 1, "{url}: duplicated in SuperOffice: {pers:?}");
        let hub: Vec<_> = o
            .hub("Person")
            .into_iter()
            .filter(|h| h.data["first_name"] == "Per")
            .collect();
        assert_eq!(hub.len(), 1, "{url}: duplicated in the hub: {hub:?}");
        idle(&o).await;
    }
}

/// A4. A create whose answer was lost, then the hub record renamed before the next run:
/// still one record on each side.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_create_then_a_hub_rename_is_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        let uid = o.put("Organization", None, json!({"name": "Gamma AS"}));
        so.fail_next(Target::Create, Fault::StoreThenFail(500));
        o.sync().await;
        o.put(
            "Organization",
            Some(&uid),
            json!({"name": "Gamma Group AS"}),
        );
        o.sync().await;
        o.sync().await;
        let url = &*db;
        let names: Vec<String> = so.contacts().iter().map(|c| text(c, "Name")).collect();
        assert_eq!(names, vec!["Gamma Group AS".to_string()], "{url}");
        assert_eq!(
            o.hub("Organization").len(),
            1,
            "{url}: {:?}",
            o.hub("Organization")
        );
        idle(&o).await;
    }
}

/// A5. Two SuperOffice persons share one e-mail; WorkflowMax holds one of them. With small
/// pages the two SuperOffice persons are on different pages: still ambiguous, never merged.
#[tokio::test(flavor = "multi_thread")]
async fn an_ambiguous_key_split_across_pages_never_merges_different_people() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).wfm_first().page(1)).await;
        let so = &o.so[0];
        let start = t0();
        so.set_clock(Some(start));
        let acme = so.add_contact("Acme AS", "", "");
        let ceo = so.add_person("Carl", "Executive", "office@acme.example", Some(acme));
        so.edit("Person", ceo, json!({"Title": "CEO"}));
        so.set_clock(Some(start + Duration::seconds(60)));
        let cfo_so = so.add_person("Cecilie", "Finans", "office@acme.example", Some(acme));
        so.set_clock(None);
        let client = o.wfm().add_client("Acme AS", json!({}));
        let cfo = o
            .wfm()
            .add_contact(
                &client,
                "Cecilie Finans",
                json!({"Email": "office@acme.example", "Position": "CFO"}),
            )
            .unwrap();
        o.sync().await;
        o.sync().await;
        let url = &*db;
        let p = so.person(ceo).unwrap();
        assert_eq!(
            (p["Firstname"].as_str(), p["Title"].as_str()),
            (Some("Carl"), Some("CEO")),
            "{url}: the CEO was rewritten"
        );
        let q = so.person(cfo_so).unwrap();
        assert_eq!(q["Firstname"], "Cecilie", "{url}");
        // Each stays itself: three people in the hub, the ambiguity noted.
        assert_eq!(o.hub("Person").len(), 3, "{url}: {:?}", o.hub("Person"));
        assert!(
            o.idmaps("so_a")
                .iter()
                .any(|m| m.note().is_some_and(|n| n.contains("ambiguous"))),
            "{url}"
        );
        assert_eq!(
            o.wfm().contact(&cfo).unwrap()["Name"],
            "Cecilie Finans",
            "{url}"
        );
    }
}

/// A6. Two already-read rows edited during the last page of a listing, minutes apart: the
/// earlier edit is not lost because the later one moved the watermark past it.
#[tokio::test(flavor = "multi_thread")]
async fn two_edits_during_the_last_page_lose_neither() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).page(2)).await;
        let so = &o.so[0];
        let start = t0() - Duration::hours(2);
        let mut ids = Vec::new();
        for i in 0..3 {
            so.set_clock(Some(start + Duration::seconds(i * 60)));
            ids.push(so.add_contact(&format!("Company {}", i + 1), "", ""));
        }
        let (c1, c3) = (ids[0], ids[2]);
        so.before_list(
            2,
            Box::new(move |f| {
                f.set_clock(Some(start + Duration::seconds(1000)));
                f.edit("Contact", c1, json!({"Department": "Edited 1"}));
                f.set_clock(Some(start + Duration::seconds(2000)));
                f.edit("Contact", c3, json!({"Department": "Edited 3"}));
            }),
        );
        o.sync().await;
        so.set_clock(None);
        o.sync().await;
        o.sync().await;
        let url = &*db;
        let h1 = o.hub_named("Organization", "name", "Company 1").unwrap();
        let h3 = o.hub_named("Organization", "name", "Company 3").unwrap();
        assert_eq!(h3.data["department"], "Edited 3", "{url}");
        assert_eq!(
            h1.data["department"], "Edited 1",
            "{url}: the earlier edit during the listing was never read"
        );
    }
}

/// A7. One field changed in three places (two tenants and the hub): the newest by its
/// source's time wins everywhere, in either connection order.
#[tokio::test(flavor = "multi_thread")]
async fn a_three_way_conflict_goes_to_the_newest_edit_in_either_order() {
    for b_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let mut o = setup(&db, Setup::tenants(2)).await;
            let a = o.so[0].add_contact("Tri AS", "", "");
            o.sync().await;
            let b = b_contact_id(&o, "Tri AS");
            let uid = o.hub_named("Organization", "name", "Tri AS").unwrap().uid;
            let now = Utc::now();
            // The hub edit (now), A ten seconds later, B twenty seconds later.
            let mut data = o
                .engine
                .store
                .hub_get(o.org_id(), &uid)
                .unwrap()
                .unwrap()
                .data;
            data["department"] = json!("Hub");
            o.put("Organization", Some(&uid), data);
            o.so[0].set_clock(Some(now + Duration::seconds(10)));
            o.so[0].edit("Contact", a, json!({"Department": "A"}));
            o.so[1].set_clock(Some(now + Duration::seconds(20)));
            o.so[1].edit("Contact", b, json!({"Department": "B"}));
            if b_first {
                o.conns.swap(0, 1);
            }
            o.sync().await;
            let url = &*db;
            let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
            assert_eq!(h.data["department"], "B", "{url} b_first={b_first}");
            assert_eq!(
                o.so[0].contact(a).unwrap()["Department"],
                "B",
                "{url} b_first={b_first}"
            );
            assert_eq!(
                o.so[1].contact(b).unwrap()["Department"],
                "B",
                "{url} b_first={b_first}"
            );
            idle(&o).await;
        }
    }
}

/// A8. Under each policy and in both connection orders, a true conflict between two
/// tenants leaves all three places agreed after one sync, and an edit to another field in
/// the losing tenant survives.
#[tokio::test(flavor = "multi_thread")]
async fn conflicts_under_every_policy_converge_and_keep_other_fields() {
    for policy in [
        ConflictPolicy::Newest,
        ConflictPolicy::Hub,
        ConflictPolicy::External,
    ] {
        for b_first in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let db = backends(dir.path()).remove(0);
            let mut o = setup(&db, Setup::tenants(2).policy(policy)).await;
            let start = t0();
            o.so[0].set_clock(Some(start));
            o.so[1].set_clock(Some(start));
            let a = o.so[0].add_contact("Pol AS", "", "");
            o.sync().await;
            let b = b_contact_id(&o, "Pol AS");
            o.so[0].set_clock(Some(start + Duration::seconds(600)));
            o.so[0].edit("Contact", a, json!({"Name": "Pol A", "OrgNr": "A-1"}));
            o.so[1].set_clock(Some(start + Duration::seconds(602)));
            o.so[1].edit(
                "Contact",
                b,
                json!({"Name": "Pol B", "Department": "B-dept"}),
            );
            if b_first {
                o.conns.swap(0, 1);
            }
            o.sync().await;
            let ca = o.so[0].contact(a).unwrap();
            let cb = o.so[1].contact(b).unwrap();
            let tag = format!("{policy:?} b_first={b_first}");
            assert_eq!(ca["Name"], cb["Name"], "{tag}");
            if policy == ConflictPolicy::Newest {
                assert_eq!(ca["Name"], "Pol B", "{tag}");
            }
            for c in [&ca, &cb] {
                assert_eq!(c["OrgNr"], "A-1", "{tag}: {c}");
                assert_eq!(c["Department"], "B-dept", "{tag}: {c}");
            }
            let h = o.hub("Organization").pop().unwrap();
            assert_eq!(h.data["name"], ca["Name"], "{tag}");
            idle(&o).await;
        }
    }
}

/// A9. The hub wins a true conflict (B's edit is newer) but the push to A fails; before
/// the next run A's user edits another field. B's newer name must not be reverted by A's
/// edit to an unrelated field.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_hub_win_is_not_reverted_by_an_edit_to_another_field() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let mut o = setup(&db, Setup::tenants(2)).await;
        let start = t0();
        o.so[0].set_clock(Some(start));
        o.so[1].set_clock(Some(start));
        let a = o.so[0].add_contact("Win AS", "", "");
        o.sync().await;
        let b = b_contact_id(&o, "Win AS");
        o.conns.swap(0, 1); // B runs first
        o.so[0].set_clock(Some(start + Duration::seconds(600)));
        o.so[0].edit("Contact", a, json!({"Name": "Win (A)"}));
        o.so[1].set_clock(Some(start + Duration::seconds(602)));
        o.so[1].edit("Contact", b, json!({"Name": "Win (B)"}));
        o.so[0].fail_next(Target::Update, Fault::Status(500));
        o.so[0].fail_next(Target::Update, Fault::Status(500));
        o.sync().await;
        o.so[0].set_clock(Some(start + Duration::seconds(700)));
        o.so[0].edit("Contact", a, json!({"Department": "Ops"}));
        o.sync().await;
        o.sync().await;
        let url = &*db;
        let ca = o.so[0].contact(a).unwrap();
        let cb = o.so[1].contact(b).unwrap();
        assert_eq!(cb["Name"], "Win (B)", "{url}: B's newer edit was reverted");
        assert_eq!(ca["Name"], "Win (B)", "{url}");
        assert_eq!(ca["Department"], "Ops", "{url}");
        assert_eq!(cb["Department"], "Ops", "{url}");
        idle(&o).await;
    }
}

/// A10. A person moved to a new company in A while that company is renamed, and B
/// refuses the company create once; then the company is renamed again and the person's
/// title edited before the next run.
#[tokio::test(flavor = "multi_thread")]
async fn a_deferred_move_whose_target_is_edited_meanwhile_arrives() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let c1 = a.add_contact("Alpha AS", "", "");
        let p = a.add_person("Ola", "Nordmann", "ola@alpha.example", Some(c1));
        o.sync().await;
        let c2 = a.add_contact("Beta AS", "", "");
        a.edit("Person", p, json!({"Contact": {"ContactId": c2}}));
        b.fail_next(Target::Create, Fault::Status(500));
        o.sync().await;
        a.edit("Contact", c2, json!({"Name": "Beta Holding AS"}));
        a.edit("Person", p, json!({"Title": "CTO"}));
        o.sync().await;
        o.sync().await;
        let url = &*db;
        let names: Vec<String> = b.contacts().iter().map(|c| text(c, "Name")).collect();
        assert_eq!(b.contacts().len(), 2, "{url}: {names:?}");
        let b_beta = text(&so_contact_named(b, "Beta Holding AS"), "ContactId");
        let b_ola = b
            .persons()
            .into_iter()
            .find(|x| x["Firstname"] == "Ola")
            .unwrap();
        assert_eq!(text(&b_ola, "Contact.ContactId"), b_beta, "{url}");
        assert_eq!(b_ola["Title"], "CTO", "{url}");
        assert_eq!(b.persons().len(), 1, "{url}");
        idle(&o).await;
    }
}

/// A11. A person moved between companies while the target company is renamed (same run),
/// in both connection orders with the other tenant editing the person's title.
#[tokio::test(flavor = "multi_thread")]
async fn a_move_and_a_rename_and_a_title_edit_all_arrive() {
    for b_first in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = backends(dir.path()).remove(0);
        let mut o = setup(&db, Setup::tenants(2)).await;
        let c1 = o.so[0].add_contact("One AS", "", "");
        let c2 = o.so[0].add_contact("Two AS", "", "");
        let p = o.so[0].add_person("Kari", "Flytter", "kari@one.example", Some(c1));
        o.sync().await;
        let bp: i64 = text(
            &o.so[1]
                .persons()
                .into_iter()
                .find(|x| x["Firstname"] == "Kari")
                .unwrap(),
            "PersonId",
        )
        .parse()
        .unwrap();
        o.so[0].edit("Person", p, json!({"Contact": {"ContactId": c2}}));
        o.so[0].edit("Contact", c2, json!({"Name": "Two Renamed AS"}));
        o.so[1].edit("Person", bp, json!({"Title": "Boss"}));
        if b_first {
            o.conns.swap(0, 1);
        }
        o.sync().await;
        let tag = format!("b_first={b_first}");
        let b_two = text(&so_contact_named(&o.so[1], "Two Renamed AS"), "ContactId");
        let bk = o.so[1].person(bp).unwrap();
        assert_eq!(text(&bk, "Contact.ContactId"), b_two, "{tag}");
        assert_eq!(bk["Title"], "Boss", "{tag}");
        let ak = o.so[0].person(p).unwrap();
        assert_eq!(text(&ak, "Contact.ContactId"), c2.to_string(), "{tag}");
        assert_eq!(ak["Title"], "Boss", "{tag}");
        assert_eq!(o.so[1].contacts().len(), 2, "{tag}");
        idle(&o).await;
    }
}

/// A12. Null and empty strings: the hub clears a field to null, then to ""; WorkflowMax
/// turns "" into null; nothing flip-flops and an idle run writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn null_and_empty_values_settle_and_stay_idle() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).wfm()).await;
        let so = &o.so[0];
        let id = so.add_contact("Blank AS", "", "");
        so.edit(
            "Contact",
            id,
            json!({"Department": "Sales", "Phones": [{"Value": "+47 1", "StrippedValue": "+47 1", "Description": ""}]}),
        );
        o.sync().await;
        let client = text(&wfm_client_named(o.wfm(), "Blank AS"), "UUID");
        assert_eq!(o.wfm().client(&client).unwrap()["Phone"], "+47 1");
        let uid = o.hub_named("Organization", "name", "Blank AS").unwrap().uid;
        let mut data = o
            .engine
            .store
            .hub_get(o.org_id(), &uid)
            .unwrap()
            .unwrap()
            .data;
        data["department"] = Value::Null;
        data["phone"] = json!("");
        o.put("Organization", Some(&uid), data);
        o.sync().await;
        o.sync().await;
        idle(&o).await;
        // A WorkflowMax user edits another field: the cleared phone stays cleared
        // everywhere and nothing else moves.
        o.wfm()
            .edit(&client, json!({"Website": "https://blank.example"}));
        o.sync().await;
        o.sync().await;
        let url = &*db;
        let c = so.contact(id).unwrap();
        assert_eq!(text(&c, "Urls.0.Value"), "https://blank.example", "{url}");
        assert_eq!(text(&c, "Department"), "", "{url}: {c}");
        assert_eq!(text(&c, "Phones.0.Value"), "", "{url}: {c}");
        let w = o.wfm().client(&client).unwrap();
        assert_eq!(text(&w, "Phone"), "", "{url}: {w}");
        idle(&o).await;
    }
}

/// A13. First-sync matching on case and whitespace variants of the key: one hub record,
/// both sides keep a consistent name, and an idle run writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn first_sync_matching_on_key_variants() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let a = o.so[0].add_contact("Delta AS", "NO7", "");
        let b = o.so[1].add_contact("  DELTA as ", "NO7", "");
        o.sync().await;
        let url = &*db;
        assert_eq!(
            o.hub("Organization").len(),
            1,
            "{url}: {:?}",
            o.hub("Organization")
        );
        let na = text(&o.so[0].contact(a).unwrap(), "Name");
        let nb = text(&o.so[1].contact(b).unwrap(), "Name");
        assert_eq!(na.trim(), nb.trim(), "{url}");
        assert_eq!(o.so[0].contacts().len(), 1);
        assert_eq!(o.so[1].contacts().len(), 1);
        idle(&o).await;
    }
}

/// A14. Failures at various points of a paged listing and of a push: a 429 and a 500 on
/// page 2, a 400 on an update; every change arrives eventually and nothing duplicates.
#[tokio::test(flavor = "multi_thread")]
async fn failures_mid_listing_and_mid_push_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2).page(2)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let start = t0();
        let mut ids = Vec::new();
        for i in 0..5 {
            a.set_clock(Some(start + Duration::seconds(i * 60)));
            ids.push(a.add_contact(&format!("Fail {}", i + 1), "", ""));
        }
        a.set_clock(None);
        o.sync().await;
        assert_eq!(b.contacts().len(), 5);
        // Edits to every contact; the listing of A fails on page 2 twice over (500s).
        for (i, id) in ids.iter().enumerate() {
            a.edit("Contact", *id, json!({"Department": format!("D{i}")}));
        }
        let n = a.calls("list");
        a.before_list(
            n + 2,
            Box::new(|f| {
                f.fail_next(Target::List, Fault::Status(500));
                f.fail_next(Target::List, Fault::Status(500));
            }),
        );
        b.fail_next(Target::Update, Fault::Status(400));
        b.fail_next(Target::Update, Fault::Status(429));
        o.sync().await;
        o.sync().await;
        o.sync().await;
        let url = &*db;
        for (i, _) in ids.iter().enumerate() {
            let c = so_contact_named(b, &format!("Fail {}", i + 1));
            assert_eq!(text(&c, "Department"), format!("D{i}"), "{url}");
        }
        assert_eq!(b.contacts().len(), 5, "{url}");
        assert_eq!(o.hub("Organization").len(), 5, "{url}");
        idle(&o).await;
    }
}

/// A15. Incremental listings with many rows sharing one UpdatedDate (page_size 2), and
/// edits during the listing to various rows (the page boundary row, several rows, rows
/// already read, rows not read yet) before various pages: every edit reaches the hub.
#[tokio::test(flavor = "multi_thread")]
async fn edits_during_an_incremental_listing_of_tied_rows_all_arrive() {
    let variants: Vec<(u64, Vec<usize>)> = vec![
        (1, vec![1]),
        (2, vec![1]),
        (2, vec![3]),
        (2, vec![1, 3, 5]),
        (2, vec![0, 2, 4, 6]),
        (3, vec![1]),
        (3, vec![0, 1, 2, 3]),
        (3, vec![0, 1, 2, 3, 4, 5, 6]),
        (4, vec![6]),
    ];
    for (gap, (page, victims)) in [1i64, 1000]
        .into_iter()
        .flat_map(|g| variants.clone().into_iter().map(move |v| (g, v)))
    {
        let dir = tempfile::tempdir().unwrap();
        let db = backends(dir.path()).remove(0);
        let o = setup(&db, Setup::tenants(1).page(2)).await;
        let so = &o.so[0];
        let start = t0() - Duration::hours(3);
        so.set_clock(Some(start));
        let ids: Vec<i64> = (0..7)
            .map(|i| so.add_contact(&format!("Tie {i}"), "", ""))
            .collect();
        o.sync().await;
        let t2 = start + Duration::seconds(600);
        so.set_clock(Some(t2));
        let mut want: Vec<String> = vec![String::new(); 7];
        for i in [1usize, 3, 5] {
            so.edit("Contact", ids[i], json!({"Department": format!("x{i}")}));
            want[i] = format!("x{i}");
        }
        let t3 = t2 + Duration::seconds(gap);
        let vids: Vec<(usize, i64)> = victims.iter().map(|&i| (i, ids[i])).collect();
        for &(i, _) in &vids {
            want[i] = format!("y{i}");
        }
        let n = so.calls("list");
        so.before_list(
            n + page,
            Box::new(move |f| {
                f.set_clock(Some(t3));
                for (i, id) in vids {
                    f.edit("Contact", id, json!({"Department": format!("y{i}")}));
                }
            }),
        );
        o.sync().await;
        so.set_clock(Some(t3 + Duration::seconds(5)));
        o.sync().await;
        o.sync().await;
        for (i, want) in want.iter().enumerate() {
            let h = o
                .hub_named("Organization", "name", &format!("Tie {i}"))
                .unwrap_or_else(|| panic!("Tie {i} missing"));
            assert_eq!(
                &text(&h.data, "department"),
                want,
                "gap={gap} page={page} victims={victims:?}: Tie {i}"
            );
        }
    }
}

// A second round of fresh inputs: undone first-time matches, lost and refused writes, lost
// creates, listings that change under the reader.

fn contact_id(c: &Value) -> i64 {
    text(c, "ContactId").parse().unwrap()
}

fn hub_orgs(o: &Org) -> Vec<Value> {
    o.hub("Organization").into_iter().map(|h| h.data).collect()
}

/// 1a. Undo of a first-time organization match, persons of both referencing them in the
/// same run; three contacts share the name across three pages; every policy.
#[tokio::test(flavor = "multi_thread")]
async fn undo_org_match_three_pages_with_persons() {
    for policy in [
        ConflictPolicy::Newest,
        ConflictPolicy::Hub,
        ConflictPolicy::External,
    ] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let o = setup(&db, Setup::tenants(2).page(1).policy(policy)).await;
            let (a, b) = (&o.so[0], &o.so[1]);
            let start = t0();
            a.set_clock(Some(start));
            let ha = a.add_contact("Acme AS", "NOA", "");
            a.edit("Contact", ha, json!({"Department": "DeptA"}));
            o.sync().await;
            let mut ids = Vec::new();
            for (i, nr) in ["B1", "B2", "B3"].iter().enumerate() {
                b.set_clock(Some(start + Duration::seconds(60 * (i as i64 + 1))));
                let id = b.add_contact("Acme AS", nr, "");
                b.edit("Contact", id, json!({"Department": format!("Dept{nr}")}));
                b.add_person("P", nr, &format!("{nr}@acme.example"), Some(id));
                ids.push(id);
            }
            b.set_clock(None);
            a.set_clock(None);
            o.sync().await;
            o.sync().await;
            let tag = format!("{} {policy:?}", &*db);
            // B's contacts keep their own values.
            for (id, nr) in ids.iter().zip(["B1", "B2", "B3"]) {
                let c = b.contact(*id).unwrap();
                assert_eq!(c["OrgNr"], nr, "{tag}: {c}");
                assert_eq!(c["Department"], format!("Dept{nr}"), "{tag}: {c}");
            }
            // A's contact keeps its own values.
            let c = a.contact(ha).unwrap();
            assert_eq!(
                (c["OrgNr"].as_str(), c["Department"].as_str()),
                (Some("NOA"), Some("DeptA")),
                "{tag}: {c}"
            );
            // The hub holds four organizations, one per record.
            let mut nrs: Vec<String> = hub_orgs(&o).iter().map(|d| text(d, "org_number")).collect();
            nrs.sort();
            assert_eq!(
                nrs,
                vec!["B1", "B2", "B3", "NOA"],
                "{tag}: {:?}",
                hub_orgs(&o)
            );
            for d in hub_orgs(&o) {
                let nr = text(&d, "org_number");
                let want = if nr == "NOA" {
                    "DeptA".to_string()
                } else {
                    format!("Dept{nr}")
                };
                assert_eq!(text(&d, "department"), want, "{tag}: {d}");
            }
            // Each person in the hub references the organization with its org number.
            for nr in ["B1", "B2", "B3"] {
                let p = o
                    .hub_named(
                        "Person",
                        "email",
                        &format!("{}@acme.example", nr.to_lowercase()),
                    )
                    .unwrap_or_else(|| {
                        panic!(
                            "{tag}: person {nr} not in hub: {:?} B persons {:?} maps {:?}",
                            o.hub("Person")
                                .iter()
                                .map(|h| h.data.clone())
                                .collect::<Vec<_>>(),
                            b.persons(),
                            o.idmaps("so_b")
                        )
                    });
                let org = o
                    .engine
                    .store
                    .hub_get(o.org_id(), p.data["organization_id"].as_str().unwrap_or(""))
                    .unwrap();
                let org =
                    org.unwrap_or_else(|| panic!("{tag}: person {nr} without org: {}", p.data));
                assert_eq!(text(&org.data, "org_number"), nr, "{tag}");
                // And in A, the person sits under the contact holding that org number.
                let pa = a
                    .persons()
                    .into_iter()
                    .find(|x| x["Lastname"] == nr)
                    .unwrap_or_else(|| panic!("{tag}: person {nr} not in A"));
                let cid: i64 = text(&pa, "Contact.ContactId").parse().unwrap_or(0);
                let ca = a.contact(cid).unwrap_or_else(|| panic!("{tag}: {pa}"));
                assert_eq!(ca["OrgNr"], nr, "{tag}: {pa} {ca}");
            }
            assert_eq!(a.contacts().len(), 4, "{tag}: {:?}", a.contacts());
            assert_eq!(b.contacts().len(), 4, "{tag}: {:?}", b.contacts());
            idle(&o).await;
        }
    }
}

/// 1b. Undo when the hub record was edited by a user between the match and the undo
/// (a hook before page 2 of B's contact listing).
#[tokio::test(flavor = "multi_thread")]
async fn undo_org_match_after_hub_edit_between_pages() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2).page(1)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let start = t0();
        a.set_clock(Some(start));
        let ha = a.add_contact("Acme AS", "NOA", "");
        o.sync().await;
        let uid = o.hub_named("Organization", "name", "Acme AS").unwrap().uid;
        b.set_clock(Some(start + Duration::seconds(60)));
        let b1 = b.add_contact("Acme AS", "B1", "");
        b.set_clock(Some(start + Duration::seconds(120)));
        let b2 = b.add_contact("Acme AS", "B2", "");
        b.set_clock(None);
        let n = b.calls("list");
        let store = o.engine.store.clone();
        let hubm = o.engine.hub.clone();
        let org_id = o.org_id();
        let uid2 = uid.clone();
        b.before_list(
            n + 2,
            Box::new(move |_| {
                let mut d = store.hub_get(org_id, &uid2).unwrap().unwrap().data;
                d["website"] = json!("https://acme.example");
                store
                    .hub_put(&hubm, org_id, "Organization", Some(&uid2), d, None)
                    .unwrap();
            }),
        );
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(text(&h.data, "org_number"), "NOA", "{tag}: {}", h.data);
        assert_eq!(
            text(&h.data, "website"),
            "https://acme.example",
            "{tag}: {}",
            h.data
        );
        let c = a.contact(ha).unwrap();
        assert_eq!(c["OrgNr"], "NOA", "{tag}: {c}");
        assert_eq!(
            text(&c, "Urls.0.Value"),
            "https://acme.example",
            "{tag}: {c}"
        );
        assert_eq!(b.contact(b1).unwrap()["OrgNr"], "B1", "{tag}");
        assert_eq!(text(&b.contact(b1).unwrap(), "Urls.0.Value"), "", "{tag}");
        assert_eq!(b.contact(b2).unwrap()["OrgNr"], "B2", "{tag}");
        assert_eq!(o.hub("Organization").len(), 3, "{tag}: {:?}", hub_orgs(&o));
        idle(&o).await;
    }
}

async fn run_a(o: &Org) {
    let opts = SyncOptions::default();
    o.engine.run(&o.conns[0], &opts, &|_| {}).await.unwrap();
}

fn set_hub(o: &Org, uid: &str, field: &str, v: Value) {
    let mut d = o
        .engine
        .store
        .hub_get(o.org_id(), uid)
        .unwrap()
        .unwrap()
        .data;
    d[field] = v;
    o.put("Organization", Some(uid), d);
}

/// 2a. A lost update, then the user edits the same field (same value or another).
#[tokio::test(flavor = "multi_thread")]
async fn lost_update_then_user_edit_same_field() {
    for same in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let o = setup(&db, Setup::tenants(2)).await;
            let (a, b) = (&o.so[0], &o.so[1]);
            let ida = a.add_contact("Echo AS", "", "");
            o.sync().await;
            let idb = b_contact_id(&o, "Echo AS");
            let uid = o.hub_named("Organization", "name", "Echo AS").unwrap().uid;
            set_hub(&o, &uid, "department", json!("Hub"));
            a.fail_next(Target::Update, Fault::StoreThenFail(500));
            a.fail_next(Target::Update, Fault::StoreThenFail(500));
            run_a(&o).await;
            assert_eq!(a.contact(ida).unwrap()["Department"], "Hub");
            a.set_clock(Some(Utc::now() + Duration::seconds(60)));
            let v = if same { "Hub" } else { "User" };
            a.edit("Contact", ida, json!({"Department": v, "OrgNr": "U1"}));
            o.sync().await;
            o.sync().await;
            let tag = format!("{} same={same}", &*db);
            assert_eq!(a.contact(ida).unwrap()["Department"], v, "{tag}");
            assert_eq!(b.contact(idb).unwrap()["Department"], v, "{tag}");
            assert_eq!(b.contact(idb).unwrap()["OrgNr"], "U1", "{tag}");
            let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
            assert_eq!(text(&h.data, "department"), v, "{tag}");
            assert_eq!(text(&h.data, "org_number"), "U1", "{tag}");
            idle(&o).await;
        }
    }
}

/// 2b. A lost update, then a refused one; the hub moves on; the user then sets the value
/// the refused update tried to send, newest of all: the user's edit must stand.
#[tokio::test(flavor = "multi_thread")]
async fn lost_then_refused_update_then_user_sets_refused_value() {
    refused_update_then_user_sets_refused_value_after(true).await;
}

/// 2b and 2d: the hub sets `Y`, which A refuses (400, twice); the hub moves on to `Z`; a user
/// in A then sets `Y`, newest of all, and it must stand everywhere. With `lost_first`, an
/// update of `X` that A stored but whose answer was lost comes before.
async fn refused_update_then_user_sets_refused_value_after(lost_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let ida = a.add_contact("Echo AS", "", "");
        o.sync().await;
        let idb = b_contact_id(&o, "Echo AS");
        let uid = o.hub_named("Organization", "name", "Echo AS").unwrap().uid;
        let before = if lost_first {
            set_hub(&o, &uid, "department", json!("X"));
            a.fail_next(Target::Update, Fault::StoreThenFail(500));
            a.fail_next(Target::Update, Fault::StoreThenFail(500));
            run_a(&o).await;
            assert_eq!(a.contact(ida).unwrap()["Department"], "X");
            "X"
        } else {
            ""
        };
        set_hub(&o, &uid, "department", json!("Y"));
        a.fail_next(Target::Update, Fault::Status(400));
        a.fail_next(Target::Update, Fault::Status(400));
        run_a(&o).await;
        assert_eq!(a.contact(ida).unwrap()["Department"], before, "refused");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        set_hub(&o, &uid, "department", json!("Z"));
        a.set_clock(Some(Utc::now() + Duration::seconds(60)));
        a.edit("Contact", ida, json!({"Department": "Y"}));
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(
            text(&h.data, "department"),
            "Y",
            "{tag}: the user's newest edit was reverted"
        );
        assert_eq!(a.contact(ida).unwrap()["Department"], "Y", "{tag}");
        assert_eq!(b.contact(idb).unwrap()["Department"], "Y", "{tag}");
        idle(&o).await;
    }
}

/// 2c. A lost update then a refused one, then a plain retry: the hub's value arrives.
#[tokio::test(flavor = "multi_thread")]
async fn lost_then_refused_update_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let ida = a.add_contact("Echo AS", "", "");
        o.sync().await;
        let idb = b_contact_id(&o, "Echo AS");
        let uid = o.hub_named("Organization", "name", "Echo AS").unwrap().uid;
        set_hub(&o, &uid, "department", json!("X"));
        a.fail_next(Target::Update, Fault::StoreThenFail(500));
        a.fail_next(Target::Update, Fault::StoreThenFail(500));
        run_a(&o).await;
        set_hub(&o, &uid, "department", json!("Y"));
        a.fail_next(Target::Update, Fault::Status(500));
        a.fail_next(Target::Update, Fault::Status(500));
        run_a(&o).await;
        a.set_clock(Some(Utc::now() + Duration::seconds(60)));
        a.edit("Contact", ida, json!({"OrgNr": "U2"}));
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(text(&h.data, "department"), "Y", "{tag}");
        assert_eq!(text(&h.data, "org_number"), "U2", "{tag}");
        assert_eq!(a.contact(ida).unwrap()["Department"], "Y", "{tag}");
        assert_eq!(b.contact(idb).unwrap()["Department"], "Y", "{tag}");
        assert_eq!(b.contact(idb).unwrap()["OrgNr"], "U2", "{tag}");
        idle(&o).await;
    }
}

/// 3a. Two lost creates of identical records (no match key ambiguity is settled by
/// merging): still two on each side.
#[tokio::test(flavor = "multi_thread")]
async fn two_lost_creates_of_identical_records() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        so.add_contact("Holder AS", "", "");
        o.sync().await;
        let org = o
            .hub_named("Organization", "name", "Holder AS")
            .unwrap()
            .uid;
        for _ in 0..2 {
            o.put(
                "Person",
                None,
                json!({"first_name": "Twin", "last_name": "Same", "organization_id": org}),
            );
        }
        so.fail_next(Target::Create, Fault::StoreThenFail(500));
        so.fail_next(Target::Create, Fault::StoreThenFail(500));
        o.sync().await;
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        let n = so
            .persons()
            .into_iter()
            .filter(|p| p["Firstname"] == "Twin")
            .count();
        assert_eq!(n, 2, "{tag}: {:?}", so.persons());
        let h = o
            .hub("Person")
            .into_iter()
            .filter(|h| h.data["first_name"] == "Twin")
            .count();
        assert_eq!(h, 2, "{tag}: {:?}", o.hub("Person"));
        idle(&o).await;
    }
}

/// 3b. A lost create whose record a user edits (a sent field) before the next run.
#[tokio::test(flavor = "multi_thread")]
async fn lost_create_then_user_edits_it() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        let uid = o.put(
            "Organization",
            None,
            json!({"name": "Delta AS", "org_number": "D1"}),
        );
        so.fail_next(Target::Create, Fault::StoreThenFail(500));
        o.sync().await;
        let id = contact_id(&so_contact_named(so, "Delta AS"));
        so.set_clock(Some(Utc::now() + Duration::seconds(60)));
        so.edit("Contact", id, json!({"OrgNr": "D2", "Department": "Ops"}));
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        assert_eq!(so.contacts().len(), 1, "{tag}: {:?}", so.contacts());
        assert_eq!(o.hub("Organization").len(), 1, "{tag}: {:?}", hub_orgs(&o));
        let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(text(&h.data, "org_number"), "D2", "{tag}: {}", h.data);
        assert_eq!(text(&h.data, "department"), "Ops", "{tag}: {}", h.data);
        assert_eq!(so.contact(id).unwrap()["OrgNr"], "D2", "{tag}");
        idle(&o).await;
    }
}

/// 3c. A lost create, then the hub clears a field it sent.
#[tokio::test(flavor = "multi_thread")]
async fn lost_create_then_hub_clears_a_field() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::default()).await;
        let so = &o.so[0];
        let uid = o.put(
            "Organization",
            None,
            json!({"name": "Epsilon AS", "org_number": "E1", "department": "Ops"}),
        );
        so.fail_next(Target::Create, Fault::StoreThenFail(500));
        o.sync().await;
        o.put(
            "Organization",
            Some(&uid),
            json!({"name": "Epsilon AS", "org_number": null, "department": "Ops"}),
        );
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        assert_eq!(so.contacts().len(), 1, "{tag}: {:?}", so.contacts());
        assert_eq!(o.hub("Organization").len(), 1, "{tag}: {:?}", hub_orgs(&o));
        let c = so_contact_named(so, "Epsilon AS");
        assert_eq!(text(&c, "OrgNr"), "", "{tag}: {c}");
        let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
        assert_eq!(text(&h.data, "org_number"), "", "{tag}: {}", h.data);
        idle(&o).await;
    }
}

/// 4a. SuperOffice offset listing: records created (they sort last by update time) and
/// edited during the listing, several pages: nothing skipped.
#[tokio::test(flavor = "multi_thread")]
async fn offset_listing_with_edits_on_several_pages() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).page(2)).await;
        let so = &o.so[0];
        let start = t0();
        let mut ids = Vec::new();
        for i in 0..7 {
            so.set_clock(Some(start + Duration::seconds(i * 60)));
            ids.push(so.add_contact(&format!("Company {}", i + 1), "", ""));
        }
        so.set_clock(None);
        let (i0, i1, i2) = (ids[0], ids[1], ids[2]);
        so.before_list(
            2,
            Box::new(move |f| {
                f.edit("Contact", i0, json!({"Department": "E1"}));
                f.edit("Contact", i1, json!({"Department": "E2"}));
            }),
        );
        so.before_list(
            3,
            Box::new(move |f| {
                f.edit("Contact", i2, json!({"Department": "E3"}));
            }),
        );
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        let names: Vec<String> = hub_orgs(&o).iter().map(|d| text(d, "name")).collect();
        for i in 1..=7 {
            assert!(
                names.contains(&format!("Company {i}")),
                "{tag}: Company {i}: {names:?}"
            );
        }
        assert_eq!(names.len(), 7, "{tag}: {names:?}");
        for (n, d) in [
            ("Company 1", "E1"),
            ("Company 2", "E2"),
            ("Company 3", "E3"),
        ] {
            assert_eq!(
                text(
                    &o.hub_named("Organization", "name", n).unwrap().data,
                    "department"
                ),
                d,
                "{tag}"
            );
        }
        idle(&o).await;
    }
}

/// 4b. WorkflowMax numbered listing: clients removed before two different pages.
#[tokio::test(flavor = "multi_thread")]
async fn numbered_listing_shrinks_twice() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(0).wfm().page(2)).await;
        let uuids: Vec<String> = (1..=8)
            .map(|i| o.wfm().add_client(&format!("Client {i}"), json!({})))
            .collect();
        let (r1, r2, r3) = (uuids[0].clone(), uuids[1].clone(), uuids[4].clone());
        o.wfm().before_list(
            2,
            Box::new(move |f| {
                f.remove_client(&r1);
                f.remove_client(&r2);
            }),
        );
        o.wfm().before_list(
            4,
            Box::new(move |f| {
                f.remove_client(&r3);
            }),
        );
        o.sync().await;
        let tag = &*db;
        let names: Vec<String> = hub_orgs(&o).iter().map(|d| text(d, "name")).collect();
        for i in [3, 4, 6, 7, 8] {
            assert!(
                names.contains(&format!("Client {i}")),
                "{tag}: Client {i}: {names:?}"
            );
        }
        o.sync().await;
        idle(&o).await;
    }
}

/// 5. A conflict the hub wins whose push fails; the user then edits another field: the
/// hub's value still arrives and the other edit flows.
#[tokio::test(flavor = "multi_thread")]
async fn hub_wins_conflict_push_fails_then_other_field_edit() {
    for refuse in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            let o = setup(&db, Setup::tenants(2).policy(ConflictPolicy::Hub)).await;
            let (a, b) = (&o.so[0], &o.so[1]);
            let ida = a.add_contact("Zeta AS", "", "");
            o.sync().await;
            let idb = b_contact_id(&o, "Zeta AS");
            let uid = o.hub_named("Organization", "name", "Zeta AS").unwrap().uid;
            a.edit("Contact", ida, json!({"Department": "App"}));
            set_hub(&o, &uid, "department", json!("Hub"));
            if refuse {
                a.fail_next(Target::Update, Fault::Status(500));
                a.fail_next(Target::Update, Fault::Status(500));
            } else {
                a.fail_next(Target::Update, Fault::StoreThenFail(500));
                a.fail_next(Target::Update, Fault::StoreThenFail(500));
            }
            run_a(&o).await;
            a.set_clock(Some(Utc::now() + Duration::seconds(60)));
            a.edit("Contact", ida, json!({"OrgNr": "Z9"}));
            o.sync().await;
            o.sync().await;
            let tag = format!("{} refuse={refuse}", &*db);
            let h = o.engine.store.hub_get(o.org_id(), &uid).unwrap().unwrap();
            assert_eq!(text(&h.data, "department"), "Hub", "{tag}");
            assert_eq!(text(&h.data, "org_number"), "Z9", "{tag}");
            assert_eq!(a.contact(ida).unwrap()["Department"], "Hub", "{tag}");
            assert_eq!(a.contact(ida).unwrap()["OrgNr"], "Z9", "{tag}");
            assert_eq!(b.contact(idb).unwrap()["Department"], "Hub", "{tag}");
            assert_eq!(b.contact(idb).unwrap()["OrgNr"], "Z9", "{tag}");
            idle(&o).await;
        }
    }
}

/// 2d. Only a refused update (no lost one); the hub moves on; the user sets the refused
/// value, newest of all.
#[tokio::test(flavor = "multi_thread")]
async fn refused_update_then_user_sets_refused_value() {
    refused_update_then_user_sets_refused_value_after(false).await;
}

/// 1c. A first-time match whose application record is edited during the listing (so it is
/// listed again on a later page) is not undone: it is the same record, not another.
#[tokio::test(flavor = "multi_thread")]
async fn same_record_relisted_on_later_page_is_not_an_ambiguity() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(2).page(1)).await;
        let (a, b) = (&o.so[0], &o.so[1]);
        let start = t0();
        a.set_clock(Some(start));
        let ha = a.add_contact("Acme AS", "NOA", "");
        let mut ids = Vec::new();
        for (i, n) in ["Acme AS", "Other 1", "Other 2"].iter().enumerate() {
            b.set_clock(Some(start + Duration::seconds(60 * (i as i64 + 1))));
            ids.push(b.add_contact(n, "", ""));
        }
        b.set_clock(None);
        let c1 = ids[0];
        b.before_list(
            2,
            Box::new(move |f| {
                eprintln!(
                    "HOOK at {:?}",
                    f.contacts()
                        .iter()
                        .map(|c| c["Name"].clone())
                        .collect::<Vec<_>>()
                );
                f.edit("Contact", c1, json!({"Department": "Late"}));
            }),
        );
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        let acmes: Vec<Value> = hub_orgs(&o)
            .into_iter()
            .filter(|d| d["name"] == "Acme AS")
            .collect();
        assert_eq!(
            acmes.len(),
            1,
            "{tag}: {acmes:?} {:?}",
            o.idmaps("so_b")
                .iter()
                .map(|m| (
                    m.external_id.clone(),
                    m.hub_id.clone(),
                    m.metadata.clone(),
                    m.base.clone()
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(text(&acmes[0], "department"), "Late", "{tag}");
        assert_eq!(a.contacts().len(), 3, "{tag}: {:?}", a.contacts());
        assert_eq!(b.contacts().len(), 3, "{tag}: {:?}", b.contacts());
        assert_eq!(a.contact(ha).unwrap()["Department"], "Late", "{tag}");
        idle(&o).await;
    }
}

/// 4c. WorkflowMax numbered listing: a client removed and another added before page 2
/// (the total does not shrink, but the rows shift).
#[tokio::test(flavor = "multi_thread")]
async fn numbered_listing_remove_and_add_same_total() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(0).wfm().page(2)).await;
        let uuids: Vec<String> = (1..=8)
            .map(|i| o.wfm().add_client(&format!("Client {i}"), json!({})))
            .collect();
        let r1 = uuids[0].clone();
        o.wfm().before_list(
            2,
            Box::new(move |f| {
                f.remove_client(&r1);
                f.add_client("Client 9", json!({}));
            }),
        );
        o.sync().await;
        let tag = &*db;
        let names: Vec<String> = hub_orgs(&o).iter().map(|d| text(d, "name")).collect();
        for i in 2..=8 {
            assert!(
                names.contains(&format!("Client {i}")),
                "{tag}: Client {i}: {names:?}"
            );
        }
        o.sync().await;
        let names: Vec<String> = hub_orgs(&o).iter().map(|d| text(d, "name")).collect();
        assert!(names.contains(&"Client 9".to_string()), "{tag}: {names:?}");
        idle(&o).await;
    }
}

/// 4d. As 4c, on an incremental run after a clean first sync: the skipped client must not
/// be taken for deleted by the full-scan reconciliation.
#[tokio::test(flavor = "multi_thread")]
async fn numbered_listing_remove_and_add_on_second_run() {
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let o = setup(&db, Setup::tenants(1).wfm().page(2)).await;
        let uuids: Vec<String> = (1..=8)
            .map(|i| o.wfm().add_client(&format!("Client {i}"), json!({})))
            .collect();
        o.sync().await;
        let r1 = uuids[0].clone();
        let n = o.wfm().calls("list");
        eprintln!("list calls so far {n}");
        o.wfm().before_list(
            n + 2,
            Box::new(move |f| {
                f.remove_client(&r1);
                f.add_client("Client 9", json!({}));
            }),
        );
        o.sync().await;
        o.sync().await;
        let tag = &*db;
        let live: Vec<String> = o
            .hub("Organization")
            .iter()
            .map(|h| text(&h.data, "name"))
            .collect();
        for i in 2..=9 {
            assert!(
                live.contains(&format!("Client {i}")),
                "{tag}: Client {i}: {live:?}"
            );
            assert!(
                o.wfm()
                    .clients()
                    .iter()
                    .any(|c| c["Name"] == format!("Client {i}")),
                "{tag}: Client {i} gone from WorkflowMax"
            );
            let _ = so_contact_named(&o.so[0], &format!("Client {i}"));
        }
        idle(&o).await;
    }
}
