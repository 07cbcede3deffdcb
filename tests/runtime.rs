//! The runtime end to end: durable jobs shared by worker processes, a worker killed in the
//! middle of a job, webhooks (verification, replays, relevance, coalescing, no ping-pong)
//! and `ferry serve` on the embedded default.

mod common;

use common::{eventually, Served};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ferry_connectors::superoffice::fake::{self, FakeSuperOffice, Fault, Target};
use ferry_framework::runtime::{SyncJob, SYNC};
use ferry_framework::store::jobs::{status, NewJob};
use ferry_framework::store::orgs::now;
use ferry_framework::store::Store;
use ferry_framework::webhook::hmac_sha256_base64;
use serde_json::json;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const WEBHOOK_SECRET: &str = "so-webhook-secret";
const WEBHOOK_TOKEN: &str = "shared-webhook-token";

fn set_env() {
    std::env::set_var("FERRY_SECRET_KEY", KEY);
    std::env::set_var("FERRY_TEST_SO_SECRET", fake::CLIENT_SECRET);
    std::env::set_var("FERRY_TEST_SO_REFRESH", fake::REFRESH_TOKEN);
    std::env::set_var("FERRY_TEST_SO_HOOK_SECRET", WEBHOOK_SECRET);
    std::env::set_var("FERRY_TEST_SO_HOOK_TOKEN", WEBHOOK_TOKEN);
}

/// How an organization's SuperOffice webhooks are verified.
#[derive(Clone, Copy)]
enum Hook {
    Signed,
    Token,
}

/// A Ferry installation in a temporary folder: settings for `db`, the shipped hub model and
/// mappers, and one organization per `(slug, SuperOffice address, webhook mode)`.
fn workspace(db: &str, orgs: &[(String, std::net::SocketAddr, Hook)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    std::fs::create_dir_all(dir.path().join("config/organizations")).unwrap();
    std::fs::copy(
        repo.join("config/hub.yml"),
        dir.path().join("config/hub.yml"),
    )
    .unwrap();
    let to = dir.path().join("mappers/superoffice");
    std::fs::create_dir_all(&to).unwrap();
    for f in ["contact.yml", "person.yml"] {
        std::fs::copy(repo.join("mappers/superoffice").join(f), to.join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("settings.yml"),
        format!(
            "database: {{ url: {db:?} }}\n\
             secrets: {{ key_env: FERRY_SECRET_KEY, key_file: secret.key }}\n\
             sync: {{ lease_seconds: 3, max_retries: 1 }}\n\
             runtime: {{ poll_millis: 100, job_lease_seconds: 3, retry_base_seconds: 1, \
             retry_cap_seconds: 4, webhook_coalesce_seconds: 1, sync_interval_seconds: 3600 }}\n"
        ),
    )
    .unwrap();
    for (slug, addr, hook) in orgs {
        let hook = match hook {
            Hook::Signed => "secret: { env: FERRY_TEST_SO_HOOK_SECRET }",
            Hook::Token => "token: { env: FERRY_TEST_SO_HOOK_TOKEN }",
        };
        std::fs::write(
            dir.path().join(format!("config/organizations/{slug}.yml")),
            format!(
                "slug: {slug}\nname: {slug}\nconnections:\n  - name: superoffice\n    connector: superoffice\n    settings:\n      environment: sod\n      context_identifier: {ctx}\n      client_id: {cid}\n      login_url: http://{addr}/\n    secrets:\n      client_secret: {{ env: FERRY_TEST_SO_SECRET }}\n      refresh_token: {{ env: FERRY_TEST_SO_REFRESH }}\n    webhooks:\n      {hook}\n      relevant:\n        organization: [name, orgnr, urls, userdef_id]\n        person: [firstname, lastname, title, emails, mobilephones, contact_id]\n    entities:\n      organization: {{}}\n      person: {{}}\n",
                ctx = fake::CONTEXT,
                cid = fake::CLIENT_ID,
            ),
        )
        .unwrap();
    }
    dir
}

fn ferry(ws: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(ws)
        .args(args)
        .env("FERRY_SECRET_KEY", KEY)
        .env("FERRY_TEST_SO_SECRET", fake::CLIENT_SECRET)
        .env("FERRY_TEST_SO_REFRESH", fake::REFRESH_TOKEN)
        .env("FERRY_TEST_SO_HOOK_SECRET", WEBHOOK_SECRET)
        .env("FERRY_TEST_SO_HOOK_TOKEN", WEBHOOK_TOKEN)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn enqueue(store: &Store, org: &str) -> i64 {
    let job = SyncJob {
        org: org.into(),
        connection: "superoffice".into(),
        ..Default::default()
    };
    store
        .enqueue(&NewJob {
            kind: SYNC,
            payload: &serde_json::to_string(&job).unwrap(),
            dedupe_key: None,
            run_at: now(),
            max_attempts: 5,
        })
        .unwrap()
        .unwrap()
}

async fn seeded_fake() -> (FakeSuperOffice, std::net::SocketAddr) {
    let f = FakeSuperOffice::new();
    let nordic = f.add_contact("Nordic Freight AS", "NO912345678", "");
    f.add_person("Ingrid", "Solberg", "ingrid@nordic.example", Some(nordic));
    let addr = f.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (f, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_on_postgres_run_each_sync_once_never_overlapping() {
    let Ok(admin) = std::env::var("FERRY_TEST_POSTGRES_URL") else {
        eprintln!("FERRY_TEST_POSTGRES_URL is not set: the multi-worker test needs PostgreSQL");
        return;
    };
    set_env();
    let db = ferry_framework::store::testing::fresh_postgres(&admin).unwrap();
    let mut orgs = Vec::new();
    let mut fakes = Vec::new();
    for i in 0..10 {
        let (f, addr) = seeded_fake().await;
        fakes.push(f);
        orgs.push((format!("org{i}"), addr, Hook::Signed));
    }
    let ws = workspace(&db, &orgs);
    let store = Store::open_and_migrate(&db).unwrap();
    for round in 0..5 {
        for (slug, _, _) in &orgs {
            let _ = round;
            enqueue(&store, slug);
        }
    }
    let mut workers: Vec<Child> = (0..3).map(|_| ferry(ws.path(), &["worker"])).collect();
    eventually(180, "50 jobs done", || {
        store.jobs(Some(status::DONE), 100).unwrap().len() == 50
    })
    .await;
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let jobs = store.jobs(None, 100).unwrap();
    assert_eq!(jobs.len(), 50);
    assert!(
        jobs.iter()
            .all(|j| j.status == status::DONE && j.attempts == 1),
        "each job ran exactly once: {jobs:?}"
    );
    let mut total = 0;
    for org in store.orgs().unwrap() {
        for conn in store.connections_of(org.id).unwrap() {
            let mut runs = store.runs_of(conn.id, 100).unwrap();
            assert_eq!(runs.len(), 5, "{}: {runs:?}", org.slug);
            total += runs.len();
            runs.sort_by_key(|r| r.started_at);
            for pair in runs.windows(2) {
                let finished = pair[0].finished_at.expect("finished");
                assert!(
                    finished <= pair[1].started_at,
                    "{}: runs overlap: {pair:?}",
                    org.slug
                );
            }
            assert!(runs.iter().all(|r| r.status == "success"), "{runs:?}");
        }
    }
    assert_eq!(total, 50);
    // Each organization's records arrived once.
    for f in &fakes {
        assert_eq!(f.contacts().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_leaves_it_to_another_without_duplicates() {
    set_env();
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let fake = FakeSuperOffice::new();
        let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let ws = workspace(&db, &[("acme".into(), addr, Hook::Signed)]);
        let store = Store::open_and_migrate(&db).unwrap();
        let hub =
            ferry_framework::hub::HubModel::load(&common::repo().join("config/hub.yml")).unwrap();
        let org = store.upsert_org("acme", "acme", true, None).unwrap();
        for name in ["Alpha AS", "Beta AS", "Gamma AS"] {
            store
                .hub_put(
                    &hub,
                    org,
                    "Organization",
                    None,
                    json!({ "name": name }),
                    None,
                )
                .unwrap();
        }
        // The first create is stored by the application, but its answer never comes back.
        fake.fail_next(
            Target::Create,
            Fault::StoreThenHang(Duration::from_secs(60)),
        );
        let job = enqueue(&store, "acme");
        let mut first = ferry(ws.path(), &["worker"]);
        eventually(30, "the first create", || fake.calls("create") >= 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        assert_eq!(fake.contacts().len(), 1, "the hung create was stored");

        let mut second = ferry(ws.path(), &["worker"]);
        eventually(60, "the job done by the second worker", || {
            store
                .job(job)
                .unwrap()
                .is_some_and(|j| j.status == status::DONE)
        })
        .await;
        let _ = second.kill();
        let _ = second.wait();
        let mut names: Vec<String> = fake
            .contacts()
            .iter()
            .map(|c| c["Name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["Alpha AS", "Beta AS", "Gamma AS"], "no duplicates");
        assert_eq!(store.job(job).unwrap().unwrap().attempts, 2);
    }
}

async fn served(db: &str, orgs: &[(String, std::net::SocketAddr, Hook)]) -> Served {
    set_env();
    common::served(workspace(db, orgs)).await
}

impl Served {
    async fn sync_now(&self, org: &str) {
        let p = self.rt.find(org, "superoffice").unwrap();
        let r = self
            .rt
            .engine
            .run(p, &Default::default(), &|_| {})
            .await
            .unwrap();
        assert_eq!(r.status.as_str(), "success", "{r:?}");
    }

    fn url(&self, org: &str) -> String {
        format!("{}/webhooks/{org}/superoffice", self.base)
    }

    fn events(&self, org: &str) -> Vec<ferry_framework::store::jobs::WebhookEventRow> {
        let p = self.rt.find(org, "superoffice").unwrap();
        self.rt.store().webhook_events_of(p.connection_id).unwrap()
    }
}

fn so_event(id: &str, entity: &str, key: i64, changes: &[&str]) -> String {
    json!({
        "EventId": id, "Timestamp": "2026-11-23T10:48:07Z", "Changes": changes,
        "Event": format!("{entity}.changed"), "PrimaryKey": key, "Entity": entity,
        "ContextIdentifier": fake::CONTEXT, "ChangedByAssociateId": 5, "FieldValues": {},
    })
    .to_string()
}

async fn post_signed(url: &str, body: &str, secret: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .header(
            "X-SuperOffice-Signature",
            hmac_sha256_base64(secret, body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_verified_deduplicated_filtered_and_coalesced() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let (so, addr) = seeded_fake().await;
        let (so2, addr2) = seeded_fake().await;
        let s = served(
            &db,
            &[
                ("acme".into(), addr, Hook::Signed),
                ("beta".into(), addr2, Hook::Token),
            ],
        )
        .await;
        s.sync_now("acme").await;
        let contact = so.contacts()[0]["ContactId"].as_i64().unwrap();
        let store = s.rt.store();

        // A bad signature, or none, is refused and nothing is stored.
        let body = so_event("e-bad", "contact", contact, &["name"]);
        let (code, _) = post_signed(&s.url("acme"), &body, "wrong-secret").await;
        assert_eq!(code, 401);
        let code = reqwest::Client::new()
            .post(s.url("acme"))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(code, 401);
        assert!(s.events("acme").is_empty());
        assert!(store.jobs(None, 10).unwrap().is_empty());

        // A shared token: wrong is refused, right is accepted.
        let bad = reqwest::Client::new()
            .post(format!("{}?token=nope", s.url("beta")))
            .body(so_event("t-1", "contact", 1, &["name"]))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 401);
        assert!(s.events("beta").is_empty());
        let good = reqwest::Client::new()
            .post(s.url("beta"))
            .bearer_auth(WEBHOOK_TOKEN)
            .body(so_event("t-1", "contact", 1, &["name"]))
            .send()
            .await
            .unwrap();
        assert_eq!(good.status().as_u16(), 202);
        assert_eq!(s.events("beta").len(), 1);
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let lower = reqwest::Client::new()
            .post(s.url("beta"))
            .header("Authorization", format!("bearer {WEBHOOK_TOKEN}"))
            .body(so_event("t-2", "contact", 1, &["name"]))
            .send()
            .await
            .unwrap();
        assert_eq!(lower.status().as_u16(), 202);
        // An organization or connection that does not exist reads like a wrong signature.
        for url in [
            format!("{}/webhooks/nope/superoffice", s.base),
            format!("{}/webhooks/beta/nope", s.base),
        ] {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(WEBHOOK_TOKEN)
                .body(so_event("t-3", "contact", 1, &["name"]))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401);
        }
        drop(so2);

        // An irrelevant change is recorded as skipped; no job, no API call.
        let (gets, lists) = (so.calls("get"), so.calls("list"));
        let (code, v) = post_signed(
            &s.url("acme"),
            &so_event("e-phone", "contact", contact, &["updated", "phone"]),
            WEBHOOK_SECRET,
        )
        .await;
        assert_eq!((code, v["status"].as_str()), (200, Some("skipped")), "{v}");
        let ev = s.events("acme");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].status, "skipped");
        assert!(ev[0].reason.as_deref().unwrap().contains("phone"));

        // A burst of 20 events for one record, one of them replayed: one targeted sync.
        let mut job_ids = std::collections::BTreeSet::new();
        for i in 0..20 {
            let body = so_event(&format!("e-{i}"), "contact", contact, &["name", "updated"]);
            let (code, v) = post_signed(&s.url("acme"), &body, WEBHOOK_SECRET).await;
            assert_eq!(code, 202, "{v}");
            job_ids.insert(v["job"].as_i64().unwrap());
        }
        let replay = so_event("e-7", "contact", contact, &["name", "updated"]);
        let (code, v) = post_signed(&s.url("acme"), &replay, WEBHOOK_SECRET).await;
        assert_eq!(
            (code, v["status"].as_str()),
            (200, Some("duplicate")),
            "{v}"
        );
        assert_eq!(job_ids.len(), 1, "coalesced into one job");
        assert_eq!(s.events("acme").len(), 21, "20 events + the skipped one");
        let job = *job_ids.iter().next().unwrap();
        let runs_before = store
            .runs_of(s.rt.find("acme", "superoffice").unwrap().connection_id, 100)
            .unwrap()
            .len();

        so.edit("Contact", contact, json!({"Name": "Nordic Freight Group"}));
        s.start_worker();
        eventually(30, "the targeted sync", || {
            store
                .job(job)
                .unwrap()
                .is_some_and(|j| j.status == status::DONE)
        })
        .await;
        // The record is read by id as its listing shows it: one list call filtered on its
        // primary key (the rows carry every mapped field), no GET, no full listing.
        assert_eq!(
            (so.calls("get"), so.calls("list")),
            (gets, lists + 1),
            "one read of the one record, no listing"
        );
        let runs = store
            .runs_of(s.rt.find("acme", "superoffice").unwrap().connection_id, 100)
            .unwrap();
        assert_eq!(runs.len(), runs_before + 1);
        let hub = ferry_framework::store::Store::hub_list(
            store,
            s.rt.find("acme", "superoffice").unwrap().org_id,
            "Organization",
            10,
        )
        .unwrap();
        assert_eq!(hub[0].data["name"], "Nordic Freight Group");
        let _ = s.stop.send(true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_echoing_ferrys_own_write_causes_no_write_back() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let (so, addr) = seeded_fake().await;
        let s = served(&db, &[("acme".into(), addr, Hook::Signed)]).await;
        s.sync_now("acme").await;
        so.subscribe(&s.url("acme"), Some(WEBHOOK_SECRET));
        s.start_worker();

        // A hub change goes out; SuperOffice announces Ferry's own write by webhook.
        let p = s.rt.find("acme", "superoffice").unwrap();
        let store = s.rt.store();
        let person = store.hub_list(p.org_id, "Person", 10).unwrap().remove(0);
        let mut data = person.data.clone();
        data["job_title"] = json!("Skipper");
        store
            .hub_put(
                &s.rt.engine.hub,
                p.org_id,
                "Person",
                Some(&person.uid),
                data,
                None,
            )
            .unwrap();
        enqueue(store, "acme");
        eventually(30, "the echo processed", || {
            let ev = s.events("acme");
            ev.len() == 1
                && ev[0].job_id.is_some_and(|j| {
                    store
                        .job(j)
                        .unwrap()
                        .is_some_and(|j| j.status == status::DONE)
                })
        })
        .await;
        assert_eq!(so.calls("update"), 1, "Ferry's one write");
        assert_eq!(so.persons()[0]["Title"], "Skipper");
        let seq = store.hub_seq(p.org_id).unwrap();
        // Give anything that would bounce time to do so.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(so.writes(), 1, "no write back");
        assert_eq!(s.events("acme").len(), 1, "no further webhook");
        assert_eq!(store.hub_seq(p.org_id).unwrap(), seq);
        let _ = s.stop.send(true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ferry_serve_alone_runs_scheduled_syncs_and_answers_webhooks() {
    set_env();
    let (so, addr) = seeded_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db").to_string_lossy().into_owned();
    let ws = workspace(&db, &[("acme".into(), addr, Hook::Signed)]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut serve = ferry(
        ws.path(),
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The scheduler's first sync (never run: due now) brings the records in.
    let store = Store::open(&db).unwrap();
    let org_names = || -> Vec<String> {
        let Some(org) = store.org_by_slug("acme").unwrap() else {
            return Vec::new();
        };
        store
            .hub_list(org.id, "Organization", 10)
            .unwrap()
            .iter()
            .map(|r| r.data["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    eventually(30, "the scheduled sync", || {
        org_names() == ["Nordic Freight AS"]
    })
    .await;

    // A user's change in SuperOffice arrives by webhook, long before the next poll.
    so.subscribe(
        &format!("{base}/webhooks/acme/superoffice"),
        Some(WEBHOOK_SECRET),
    );
    let contact = so.contacts()[0]["ContactId"].as_i64().unwrap();
    so.edit("Contact", contact, json!({"Name": "Nordic Freight Group"}));
    eventually(30, "the webhook's sync", || {
        org_names() == ["Nordic Freight Group"]
    })
    .await;

    let health: serde_json::Value = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["database"], "ok");

    // SIGTERM: a graceful stop.
    Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_refuses_a_second_worker_process_clearly() {
    set_env();
    let (_so, addr) = seeded_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db").to_string_lossy().into_owned();
    let ws = workspace(&db, &[("acme".into(), addr, Hook::Signed)]);
    let mut first = ferry(ws.path(), &["worker"]);
    let lock = format!("{db}.worker.lock");
    eventually(30, "the first worker", || Path::new(&lock).exists()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(ws.path())
        .args(["worker"])
        .env("FERRY_SECRET_KEY", KEY)
        .env("FERRY_TEST_SO_SECRET", fake::CLIENT_SECRET)
        .env("FERRY_TEST_SO_REFRESH", fake::REFRESH_TOKEN)
        .env("FERRY_TEST_SO_HOOK_SECRET", WEBHOOK_SECRET)
        .output()
        .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("SQLite supports one worker process"), "{err}");

    // Jobs are visible to operators.
    let store = Store::open_and_migrate(&db).unwrap();
    enqueue(&store, "acme");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(ws.path())
        .args(["jobs", "--json"])
        .output()
        .unwrap();
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs[0]["status"], "queued", "{jobs}");
    assert_eq!(jobs[0]["payload"]["org"], "acme");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_is_retried_with_backoff_then_kept_dead() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db").to_string_lossy().into_owned();
    let (_so, addr) = seeded_fake().await;
    let s = served(&db, &[("acme".into(), addr, Hook::Signed)]).await;
    let job = SyncJob {
        org: "gone".into(),
        connection: "superoffice".into(),
        ..Default::default()
    };
    let id =
        s.rt.store()
            .enqueue(&NewJob {
                kind: SYNC,
                payload: &serde_json::to_string(&job).unwrap(),
                dedupe_key: None,
                run_at: now(),
                max_attempts: 3,
            })
            .unwrap()
            .unwrap();
    let started = Instant::now();
    s.start_worker();
    eventually(30, "the job dead", || {
        s.rt.store()
            .job(id)
            .unwrap()
            .is_some_and(|j| j.status == status::DEAD)
    })
    .await;
    let j = s.rt.store().job(id).unwrap().unwrap();
    assert_eq!(j.attempts, 3);
    assert!(j.last_error.unwrap().contains("no connection"));
    // Backoff of 1 s, then 2 s, between the three attempts.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let _ = s.stop.send(true);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_only_good_keys_and_runs_syncs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let (_so, addr) = seeded_fake().await;
        let (_so2, addr2) = seeded_fake().await;
        let s = served(
            &db,
            &[
                ("acme".into(), addr, Hook::Signed),
                ("beta".into(), addr2, Hook::Signed),
            ],
        )
        .await;
        s.start_worker();
        let store = s.rt.store();
        let acme = store.org_by_slug("acme").unwrap().unwrap().id;
        let beta = store.org_by_slug("beta").unwrap().unwrap().id;
        let (read_row, read) = store.create_api_key(acme, "read").unwrap();
        let (_, sync) = store.create_api_key(acme, "sync").unwrap();
        let (_, other) = store.create_api_key(beta, "sync").unwrap();
        assert!(store
            .api_keys(None)
            .unwrap()
            .iter()
            .all(|k| !k.key_hash.contains(&read[6..])));
        let http = reqwest::Client::new();
        let call = |method: reqwest::Method, path: &str, key: Option<&str>| {
            let mut r = http.request(method, format!("{}{path}", s.base));
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            r
        };
        async fn status_of(r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
            let resp = r.send().await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.json().await.unwrap_or_default())
        }
        use reqwest::Method;
        // Every endpoint: missing, wrong, other organization's and out-of-scope keys.
        let endpoints = [
            (Method::POST, "/api/v1/orgs/acme/syncs", scope_needed::SYNC),
            (Method::GET, "/api/v1/orgs/acme/status", scope_needed::READ),
            (Method::GET, "/api/v1/orgs/acme/idmaps", scope_needed::READ),
            (
                Method::GET,
                "/api/v1/orgs/acme/conflicts",
                scope_needed::READ,
            ),
        ];
        for (m, path, need) in &endpoints {
            let (code, body) = status_of(call(m.clone(), path, None)).await;
            assert_eq!(
                (code, body["error"].as_str()),
                (401, Some("unauthorized")),
                "{path}"
            );
            let (code, body) = status_of(call(m.clone(), path, Some("ferry_not_a_key"))).await;
            assert_eq!(
                (code, body["error"].as_str()),
                (401, Some("unauthorized")),
                "{path}"
            );
            let (code, body) = status_of(call(m.clone(), path, Some(&other))).await;
            assert_eq!(
                (code, body["error"].as_str()),
                (403, Some("forbidden")),
                "{path}"
            );
            if *need == scope_needed::SYNC {
                let (code, body) = status_of(call(m.clone(), path, Some(&read))).await;
                assert_eq!(
                    (code, body["error"].as_str()),
                    (403, Some("forbidden")),
                    "{path}"
                );
            }
        }
        // An organization that does not exist reads like someone else's.
        let (code, _) = status_of(call(Method::GET, "/api/v1/orgs/nope/status", Some(&sync))).await;
        assert_eq!(code, 403);

        // A sync started through the API, then polled to completion.
        let (code, started) = status_of(
            call(Method::POST, "/api/v1/orgs/acme/syncs", Some(&sync))
                .json(&json!({"connection": "superoffice", "entities": ["organization"]})),
        )
        .await;
        assert_eq!(code, 202, "{started}");
        let run = started["runs"][0]["id"].as_i64().unwrap();
        let path = format!("/api/v1/runs/{run}");
        let start = Instant::now();
        let done = loop {
            let (code, v) = status_of(call(Method::GET, &path, Some(&read))).await;
            assert_eq!(code, 200, "{v}");
            if v["finished_at"].is_string() {
                break v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "run never finished: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(done["status"], "success", "{done}");
        assert_eq!(done["entities"][0]["entity"], "organization");
        assert_eq!(done["entities"][0]["counts"]["created_in_hub"], 1);
        for (key, want) in [
            (None, 401),
            (Some("ferry_not_a_key"), 401),
            // Another organization's run reads as one that does not exist.
            (Some(other.as_str()), 404),
        ] {
            let (code, _) = status_of(call(Method::GET, &path, key)).await;
            assert_eq!(code, want);
        }
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let lower = reqwest::Client::new()
            .get(format!("{}{path}", s.base))
            .header("Authorization", format!("bearer {read}"))
            .send()
            .await
            .unwrap();
        assert_eq!(lower.status().as_u16(), 200);
        let (code, _) = status_of(call(Method::GET, "/api/v1/runs/999999", Some(&read))).await;
        assert_eq!(code, 404);
        // Or waited for in one call.
        let (code, v) = status_of(
            call(Method::POST, "/api/v1/orgs/acme/syncs?wait=30", Some(&sync)).json(&json!({})),
        )
        .await;
        assert_eq!(
            (code, v["runs"][0]["status"].as_str()),
            (200, Some("success")),
            "{v}"
        );
        let (code, v) = status_of(
            call(Method::POST, "/api/v1/orgs/acme/syncs", Some(&sync))
                .json(&json!({"entities": ["nope"]})),
        )
        .await;
        assert_eq!(code, 400, "{v}");

        let (code, st) =
            status_of(call(Method::GET, "/api/v1/orgs/acme/status", Some(&read))).await;
        assert_eq!(code, 200);
        assert_eq!(
            st["connections"][0]["sync_run"]["status"], "success",
            "{st}"
        );
        let (code, page) = status_of(call(
            Method::GET,
            "/api/v1/orgs/acme/idmaps?entity=Person&per_page=1&page=1",
            Some(&read),
        ))
        .await;
        assert_eq!(code, 200);
        assert_eq!(
            (
                page["total"].as_i64(),
                page["items"].as_array().unwrap().len()
            ),
            (Some(1), 1),
            "{page}"
        );
        assert_eq!(page["items"][0]["hub_entity"], "Person");
        let (_, page) = status_of(call(
            Method::GET,
            "/api/v1/orgs/acme/idmaps?errors=true",
            Some(&read),
        ))
        .await;
        assert_eq!(page["total"], 0);
        let (code, log) = status_of(call(
            Method::GET,
            "/api/v1/orgs/acme/conflicts?limit=5",
            Some(&read),
        ))
        .await;
        assert_eq!(code, 200);
        assert!(log.is_array(), "{log}");

        // A revoked key stops working.
        assert!(store.revoke_api_key(read_row.id).unwrap());
        let (code, _) = status_of(call(Method::GET, "/api/v1/orgs/acme/status", Some(&read))).await;
        assert_eq!(code, 401);

        // The OpenAPI document is served without a key, and validates.
        let (code, doc) = status_of(call(Method::GET, "/api/v1/openapi.json", None)).await;
        assert_eq!(code, 200);
        let spec = oas3::from_json(doc.to_string()).expect("a valid OpenAPI 3.1 document");
        let paths = spec.paths.unwrap_or_default();
        for p in [
            "/api/v1/orgs/{org}/syncs",
            "/api/v1/runs/{id}",
            "/api/v1/orgs/{org}/status",
            "/api/v1/orgs/{org}/idmaps",
            "/api/v1/orgs/{org}/conflicts",
        ] {
            assert!(paths.contains_key(p), "{p} missing from the document");
        }
        let _ = s.stop.send(true);
    }
}

mod scope_needed {
    pub const READ: &str = "read";
    pub const SYNC: &str = "sync";
}

#[tokio::test(flavor = "multi_thread")]
async fn apikey_commands_print_a_key_once_list_and_revoke() {
    set_env();
    let (_so, addr) = seeded_fake().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db").to_string_lossy().into_owned();
    let ws = workspace(&db, &[("acme".into(), addr, Hook::Signed)]);
    let store = Store::open_and_migrate(&db).unwrap();
    store.upsert_org("acme", "acme", true, None).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .current_dir(ws.path())
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["apikey", "create", "--org", "acme", "--scope", "sync"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(key.starts_with("ferry_") && key.len() > 60, "{key}");
    let k = store.api_key(&key).unwrap().expect("the printed key works");
    assert_eq!(k.scope, "sync");
    assert_ne!(k.key_hash, key, "only a hash is stored");
    let o = run(&["apikey", "list", "--json"]);
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(!listed.contains(&key), "a listing never shows the key");
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v[0]["organization"], "acme");
    let o = run(&["apikey", "revoke", &k.id.to_string()]);
    assert!(o.status.success());
    assert!(store.api_key(&key).unwrap().is_none());
    let o = run(&["apikey", "create", "--org", "nope", "--scope", "read"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["apikey", "create", "--org", "acme", "--scope", "admin"]);
    assert_eq!(o.status.code(), Some(2), "clap refuses an unknown scope");
}
