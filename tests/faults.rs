//! The fault suite: Ferry under kills, injected API faults, concurrent writers, webhook
//! bursts, slow clients and hostile input, on SQLite and (with FERRY_TEST_POSTGRES_URL)
//! PostgreSQL. Loopback only. Each case that counts prints one figures row
//! (`FAULTS | case | trials | duplicates | lost | panics | wrong exits | leaked secrets`)
//! and fails on any non-zero figure. `FERRY_FAULT_TRIALS` sets the number of kills and
//! rounds (default: the short form CI runs); `scripts/faults` runs the full form and
//! collects the table (docs/RELIABILITY.md).

mod common;

use common::{eventually, Served};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_connectors::superoffice::fake::{self as so_fake, FakeSuperOffice, Fault, Target};
use ferry_connectors::workflowmax::fake::{self as wfm_fake, FakeWorkflowMax};
use ferry_framework::runtime::worker;
use ferry_framework::store::jobs::status;
use ferry_framework::store::Store;
use ferry_framework::webhook::hmac_sha256_base64;
use serde_json::{json, Value};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const HOOK_SECRET: &str = "fault-suite-webhook-secret";

/// Every secret the suite hands Ferry: none may appear in any output or stored message.
fn secrets() -> Vec<&'static str> {
    vec![
        KEY,
        HOOK_SECRET,
        so_fake::CLIENT_SECRET,
        so_fake::REFRESH_TOKEN,
        wfm_fake::CLIENT_SECRET,
        wfm_fake::REFRESH_TOKEN,
    ]
}

fn trials(short: usize) -> usize {
    std::env::var("FERRY_FAULT_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}

/// One row of the figures table; every count but `trials` must be zero.
#[derive(Default, Debug)]
struct Figures {
    trials: usize,
    duplicates: usize,
    lost: usize,
    panics: usize,
    wrong_exits: usize,
    leaked: usize,
}

impl Figures {
    fn check(&self, case: &str) {
        println!(
            "FAULTS | {case} | {} | {} | {} | {} | {} | {}",
            self.trials, self.duplicates, self.lost, self.panics, self.wrong_exits, self.leaked
        );
        assert_eq!(
            (
                self.duplicates,
                self.lost,
                self.panics,
                self.wrong_exits,
                self.leaked
            ),
            (0, 0, 0, 0, 0),
            "{case}: {self:?}"
        );
    }

    /// Counts panics and leaked secrets in a process's output.
    fn scan(&mut self, out: &Output) {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.scan_text(&text);
    }

    fn scan_text(&mut self, text: &str) {
        self.panics += usize::from(text.contains("panicked"));
        self.leaked += secrets().iter().filter(|s| text.contains(*s)).count();
    }
}

/// The shipped organization (SuperOffice then WorkflowMax), pointed at two fakes served
/// in this process.
struct Apps {
    so: FakeSuperOffice,
    wfm: FakeWorkflowMax,
    so_addr: std::net::SocketAddr,
    wfm_addr: std::net::SocketAddr,
}

async fn apps() -> Apps {
    let so = FakeSuperOffice::new();
    let so_addr = so.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let wfm = FakeWorkflowMax::with_limits(common::quick_limits().0);
    wfm.define_standard_fields();
    let wfm_addr = wfm.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    Apps {
        so,
        wfm,
        so_addr,
        wfm_addr,
    }
}

/// A Ferry installation in a temporary folder for `db`: the shipped hub model, mappers and
/// organization, `settings` appended to the settings file.
fn workspace(db: &str, apps: &Apps, settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    let root = dir.path();
    std::fs::create_dir_all(root.join("config/organizations")).unwrap();
    std::fs::copy(repo.join("config/hub.yml"), root.join("config/hub.yml")).unwrap();
    for app in ["superoffice", "workflowmax"] {
        let to = root.join("mappers").join(app);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(repo.join("mappers").join(app)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let org = std::fs::read_to_string(repo.join("config/organizations/acme.yml"))
        .unwrap()
        .replace("127.0.0.1:7701", &apps.so_addr.to_string())
        .replace("127.0.0.1:7702", &apps.wfm_addr.to_string())
        .replace("per_minute: 600", "per_minute: 100000");
    std::fs::write(root.join("config/organizations/acme.yml"), org).unwrap();
    std::fs::write(
        root.join("settings.yml"),
        format!(
            "database: {{ url: {db:?} }}\n\
             secrets: {{ key_env: FERRY_SECRET_KEY, key_file: secret.key }}\n{settings}"
        ),
    )
    .unwrap();
    dir
}

fn set_env() {
    for (k, v) in env_vars() {
        std::env::set_var(k, v);
    }
}

fn env_vars() -> [(&'static str, &'static str); 6] {
    [
        ("FERRY_SECRET_KEY", KEY),
        ("SUPEROFFICE_CLIENT_SECRET", so_fake::CLIENT_SECRET),
        ("SUPEROFFICE_REFRESH_TOKEN", so_fake::REFRESH_TOKEN),
        ("SUPEROFFICE_WEBHOOK_SECRET", HOOK_SECRET),
        ("WORKFLOWMAX_CLIENT_SECRET", wfm_fake::CLIENT_SECRET),
        ("WORKFLOWMAX_REFRESH_TOKEN", wfm_fake::REFRESH_TOKEN),
    ]
}

fn ferry(ws: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.current_dir(ws).args(args).envs(env_vars());
    c
}

/// A small pseudo-random sequence (xorshift), so a failing trial can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Names held more than once, and expected names missing.
fn dupes_and_lost(names: &[String], expected: &BTreeSet<String>) -> (usize, usize) {
    let unique: BTreeSet<&String> = names.iter().collect();
    let lost = expected.iter().filter(|n| !unique.contains(n)).count();
    (names.len() - unique.len(), lost)
}

fn names(records: &[Value], field: &str) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r[field].as_str().map(str::to_string))
        .collect()
}

/// SIGKILL of `ferry sync` and of `ferry serve` at random points, then runs to completion:
/// every record reaches the other application exactly once, nothing panics, no secret is
/// printed or stored.
#[tokio::test(flavor = "multi_thread")]
async fn kills_at_random_points_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let a = apps().await;
        let mut expected = BTreeSet::new();
        for i in 0..20 {
            let name = format!("SO Company {i:02}");
            let c = a.so.add_contact(&name, "", "");
            a.so.add_person("Per", &format!("Son{i:02}"), "", Some(c));
            expected.insert(name);
        }
        for i in 0..10 {
            let name = format!("WFM Client {i:02}");
            a.wfm.add_client(&name, json!({}));
            expected.insert(name);
        }
        let ws = workspace(
            &db,
            &a,
            "sync: { lease_seconds: 2, max_retries: 1 }\n\
             runtime: { poll_millis: 50, job_lease_seconds: 2, sync_interval_seconds: 1, \
             jitter_ratio: 0.0, shutdown_grace_seconds: 1 }\n",
        );
        let mut f = Figures::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for t in 0..trials(6) {
            let (args, serve): (&[&str], bool) = match t % 3 {
                0 => (&["sync"], false),
                1 => (&["serve", "--listen", "127.0.0.1:0"], true),
                _ => {
                    let queued = ferry(ws.path(), &["sync", "--enqueue"]).output().unwrap();
                    f.scan(&queued);
                    if !queued.status.success() {
                        eprintln!(
                            "trial {t} enqueue: {}",
                            String::from_utf8_lossy(&queued.stderr)
                        );
                        f.wrong_exits += 1;
                    }
                    (&["worker"], true)
                }
            };
            let mut child = ferry(ws.path(), args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100 + rng.below(1500))).await;
            let finished = child.try_wait().unwrap();
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            f.scan(&out);
            // Finished before the kill: a sync must have succeeded (serve and worker never
            // end alone).
            // A sync that found a killed run's lease still held says so (exit 1, busy).
            if let Some(code) = finished {
                let said = String::from_utf8_lossy(&out.stderr).to_string()
                    + &String::from_utf8_lossy(&out.stdout);
                let busy = code.code() == Some(1) && said.contains("already being synced");
                if serve || !(code.success() || busy) {
                    eprintln!("trial {t} {args:?}: {code:?}\n{said}");
                    f.wrong_exits += 1;
                }
            }
            f.trials += 1;
        }
        // Leases of killed runs run out; then runs to completion converge.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let mut last = None;
        for _ in 0..3 {
            let out = ferry(ws.path(), &["sync"]).output().unwrap();
            f.scan(&out);
            let ok = out.status.code() == Some(0);
            last = Some(out);
            if ok {
                break;
            }
        }
        let last = last.unwrap();
        if !last.status.success() {
            eprintln!("final sync: {}", String::from_utf8_lossy(&last.stderr));
            f.wrong_exits += 1;
        }
        let so_names = names(&a.so.contacts(), "Name");
        let wfm_names = names(&a.wfm.clients(), "Name");
        for held in [&so_names, &wfm_names] {
            let (dup, lost) = dupes_and_lost(held, &expected);
            f.duplicates += dup;
            f.lost += lost;
        }
        let persons = names(&a.so.persons(), "Lastname");
        let (dup, _) = dupes_and_lost(&persons, &BTreeSet::new());
        f.duplicates += dup;
        if let ferry_framework::store::testing::ScratchDb::File(path) = &db {
            f.scan_text(&String::from_utf8_lossy(&std::fs::read(path).unwrap()));
        }
        f.check(&format!(
            "kill matrix (sync, serve, worker) on {}",
            backend(&db)
        ));
        assert_eq!(
            so_names.len(),
            expected.len(),
            "{}",
            String::from_utf8_lossy(&last.stderr)
        );
    }
}

fn backend(db: &str) -> &'static str {
    if db.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

async fn served(db: &str, apps: &Apps, settings: &str) -> Served {
    set_env();
    common::served(workspace(db, apps, settings)).await
}

fn so_event(id: &str, key: i64) -> String {
    json!({
        "EventId": id, "Timestamp": "2026-11-30T10:48:07Z", "Changes": ["name"],
        "Event": "contact.changed", "PrimaryKey": key, "Entity": "contact",
        "ContextIdentifier": so_fake::CONTEXT, "ChangedByAssociateId": 5, "FieldValues": {},
    })
    .to_string()
}

/// A burst of webhooks from 20 concurrent senders while a worker takes jobs: every
/// accepted event's record is synced (folds into a queued job never drop each other's).
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_burst_syncs_every_accepted_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = trials(4) * 40;
    for db in common::backends(dir.path()) {
        let a = apps().await;
        let ids: Vec<i64> = (0..n)
            .map(|i| a.so.add_contact(&format!("Burst {i:03}"), "", ""))
            .collect();
        let s = served(
            &db,
            &a,
            "runtime: { poll_millis: 20, webhook_coalesce_seconds: 0, sync_interval_seconds: 86400 }\n",
        )
        .await;
        let p = s.rt.find("acme", "superoffice").unwrap();
        let first = s.rt.engine.run(p, &Default::default(), &|_| {}).await;
        assert!(first.is_ok(), "{first:?}");
        for id in &ids {
            a.so.edit("Contact", *id, json!({"Name": format!("Edited {id}")}));
        }
        tokio::spawn(worker::run(s.rt.clone(), s.stop.subscribe()));
        let url = format!("{}/webhooks/acme/superoffice", s.base);
        let http = reqwest::Client::new();
        let mut senders = tokio::task::JoinSet::new();
        for chunk in ids.chunks(n.div_ceil(20)) {
            let (chunk, url, http) = (chunk.to_vec(), url.clone(), http.clone());
            senders.spawn(async move {
                let mut refused = 0;
                for id in chunk {
                    let body = so_event(&format!("burst-{id}"), id);
                    let code = http
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header(
                            "X-SuperOffice-Signature",
                            hmac_sha256_base64(HOOK_SECRET, body.as_bytes()),
                        )
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    refused += usize::from(code != 202);
                }
                refused
            });
        }
        let mut f = Figures {
            trials: n,
            ..Default::default()
        };
        while let Some(r) = senders.join_next().await {
            f.wrong_exits += r.unwrap();
        }
        let store = s.rt.store();
        eventually(120, "the webhook jobs", || {
            let open = [status::QUEUED, status::RUNNING]
                .iter()
                .map(|st| store.jobs(Some(st), 10_000).unwrap().len())
                .sum::<usize>();
            open == 0
        })
        .await;
        let folded: BTreeSet<String> = store
            .jobs(None, 100_000)
            .unwrap()
            .iter()
            .filter_map(|j| {
                serde_json::from_str::<ferry_framework::runtime::SyncJob>(&j.payload).ok()
            })
            .flat_map(|sj| sj.records.into_values().flatten())
            .collect();
        let hub = store.hub_list(p.org_id, "Organization", 100_000).unwrap();
        let edited = hub
            .iter()
            .filter(|r| {
                r.data["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("Edited"))
            })
            .count();
        f.lost = (n - folded.len().min(n)) + (n - edited.min(n));
        f.check(&format!("webhook burst of {n} on {}", backend(&db)));
        let _ = s.stop.send(true);
    }
}

/// Credential saves while other connections write: on SQLite a deferred transaction that
/// read first failed at once with "database is locked", dropping a rotated token.
#[tokio::test(flavor = "multi_thread")]
async fn credential_saves_survive_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = trials(4) * 25;
    for db in common::backends(dir.path()) {
        let store = Store::open_and_migrate(&db).unwrap();
        let org = store.upsert_org("acme", "Acme", true, None).unwrap();
        let conn = store
            .upsert_connection(org, "wfm", "workflowmax", "{}", "{}")
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ =
                            store.upsert_org(&format!("writer-{w}"), &format!("W {i}"), true, None);
                        i += 1;
                    }
                })
            })
            .collect();
        let mut f = Figures {
            trials: rounds,
            ..Default::default()
        };
        for v in 0..rounds as i64 {
            let token = format!("rotated-{v}");
            match store.save_credentials(conn, Some("a"), Some(&token), None, None, v) {
                Ok(true) => {}
                Ok(false) => f.lost += 1,
                Err(e) => {
                    eprintln!("save {v}: {e:#}");
                    f.lost += 1;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let stored = store.credentials(conn).unwrap().unwrap();
        f.lost += usize::from(stored.version != rounds as i64);
        f.check(&format!(
            "rotated token saves under contention on {}",
            backend(&db)
        ));
    }
}

/// Four processes migrating one fresh database at once all succeed.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_starts_all_migrate() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let a = apps().await;
        let ws = workspace(&db, &a, "");
        let children: Vec<_> = (0..4)
            .map(|_| {
                ferry(ws.path(), &["migrate"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut f = Figures {
            trials: 4,
            ..Default::default()
        };
        for c in children {
            let out = c.wait_with_output().unwrap();
            f.scan(&out);
            if out.status.code() != Some(0) {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                f.wrong_exits += 1;
            }
        }
        f.check(&format!("4 concurrent migrates on {}", backend(&db)));
        if let ferry_framework::store::testing::ScratchDb::File(path) = &db {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode, 0o600,
                "the database file is readable by its owner only"
            );
        }
    }
}

/// A dead run's lease holds only its own connection, and only until it runs out.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_runs_lease_blocks_only_its_connection_briefly() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let a = apps().await;
        a.so.add_contact("Leased AS", "", "");
        let s = served(&db, &a, "sync: { lease_seconds: 2 }\n").await;
        let so = s.rt.find("acme", "superoffice").unwrap();
        assert!(s
            .rt
            .store()
            .acquire_lease(so.connection_id, "a-killed-process", 2)
            .unwrap());
        let reports =
            s.rt.engine
                .run_each(&s.rt.connections, &Default::default(), &|_, _| {})
                .await
                .unwrap();
        let by = |c: &str| reports.iter().find(|r| r.connection == c).unwrap().status;
        assert_eq!(by("superoffice").as_str(), "busy");
        assert_eq!(
            by("workflowmax").as_str(),
            "success",
            "the other connection ran"
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let again =
            s.rt.engine
                .run(so, &Default::default(), &|_| {})
                .await
                .unwrap();
        assert_eq!(again.status.as_str(), "success");
        let _ = s.stop.send(true);
    }
}

/// SIGTERM while a job waits on a hung application: the worker stops within the grace
/// period, the run is recorded as interrupted and the job goes back to the queue.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_interrupts_a_hung_job_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let a = apps().await;
        a.so.fail_next(Target::List, Fault::Delay(Duration::from_secs(60)));
        let s = served(
            &db,
            &a,
            "sync: { http_timeout_seconds: 120 }\n\
             runtime: { poll_millis: 20, shutdown_grace_seconds: 1 }\n",
        )
        .await;
        let job =
            s.rt.enqueue_sync(
                &ferry_framework::runtime::SyncJob {
                    org: "acme".into(),
                    connection: "superoffice".into(),
                    ..Default::default()
                },
                None,
                ferry_framework::store::orgs::now(),
            )
            .unwrap()
            .unwrap();
        let w = tokio::spawn(worker::run(s.rt.clone(), s.stop.subscribe()));
        let store = s.rt.store().clone();
        eventually(20, "the job to start", || {
            store.job(job).unwrap().unwrap().status == status::RUNNING
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let asked = Instant::now();
        let _ = s.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("the worker stops within the grace period")
            .unwrap()
            .unwrap();
        assert!(asked.elapsed() < Duration::from_secs(4));
        let j = store.job(job).unwrap().unwrap();
        assert_eq!(
            (j.status.as_str(), j.attempts),
            (status::QUEUED, 0),
            "{j:?}"
        );
        let so = s.rt.find("acme", "superoffice").unwrap();
        let runs = store.runs_of(so.connection_id, 10).unwrap();
        assert_eq!(runs[0].status, "interrupted");
    }
}

/// Idle and slow clients cannot hold `ferry serve`: connections beyond the limit wait, and
/// one that sends no headers, or not its body, is closed after the request timeout.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_cannot_hold_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferry.db").to_string_lossy().into_owned();
    let a = apps().await;
    let s = served(
        &db,
        &a,
        "runtime: { max_connections: 8, request_timeout_seconds: 1 }\n",
    )
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Bodies trickling in one byte at a time, each just inside a per-read timeout.
    for _ in 0..12 {
        let addr = addr.clone();
        tokio::spawn(async move {
            let Ok(mut c) = tokio::net::TcpStream::connect(&addr).await else {
                return;
            };
            let head = "POST /webhooks/acme/superoffice HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
            if c.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if c.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
    }
    // Clients that pipeline thousands of requests and never read the answers.
    for _ in 0..8 {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        tokio::spawn(async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            let _ = sock.set_recv_buffer_size(1024);
            let Ok(mut c) = sock.connect(addr).await else {
                return;
            };
            let burst = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20_000);
            let _ = c.write_all(burst.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(120)).await;
        });
    }
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /webhooks/acme/superoffice HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_secs(100))
        .send()
        .await
        .expect("the server answers while slow clients are connected");
    assert!(health.status().as_u16() == 200 || health.status().as_u16() == 503);
    // 37 attackers through 8 slots of at most 1 s each: about 5 s. The bound is loose for
    // a loaded machine; without the limits the slow readers alone hold every slot 120 s.
    assert!(started.elapsed() < Duration::from_secs(60));
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection is closed"
    );
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut all = Vec::new();
        let _ = slow_body.read_to_end(&mut all).await;
        all
    })
    .await
    .expect("a body that never comes ends the connection");
    let text = String::from_utf8_lossy(&answered);
    assert!(text.is_empty() || text.contains(" 408 "), "{text}");
    let _ = s.stop.send(true);
}

/// Bad data in write answers: an id of the wrong type, another record's id. The record
/// fails, the link keeps the id Ferry wrote to, and the next run settles it for good.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_write_answers_are_per_record_errors_that_clear() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let h = common::hubbed(&db, true, common::quick_limits(), json!({})).await;
        let uuid = h.wfm.add_client("Tidewater Trading", json!({}));
        h.sync_wfm().await;
        h.so.fail_next(
            Target::Create,
            Fault::StoreThenTamper(|v| v["ContactId"] = json!({"not": "an id"})),
        );
        let first = h.sync_so().await;
        assert!(first.has_errors(), "the unreadable answer is an error");
        let second = h.sync_so().await;
        assert!(!second.has_errors(), "{second:?}");
        assert_eq!(
            h.so.contacts().len(),
            1,
            "the create is adopted, not repeated"
        );
        let so_conn = h.so_conn.as_ref().unwrap().connection_id;
        let linked = |store: &Store| {
            store
                .idmaps_of(&[so_conn])
                .unwrap()
                .into_iter()
                .find(|m| m.external_entity == "Contact")
                .unwrap()
        };
        let before = linked(&h.engine.store);
        assert!(before.last_error.is_none(), "{before:?}");

        h.wfm.edit(&uuid, json!({"Name": "Tidewater Trading Co"}));
        h.sync_wfm().await;
        h.so.fail_next(
            Target::Update,
            Fault::StoreThenTamper(|v| v["ContactId"] = json!(424242)),
        );
        let third = h.sync_so().await;
        assert!(
            third.has_errors(),
            "an answer about another record is an error"
        );
        let after = linked(&h.engine.store);
        assert_eq!(
            after.external_id, before.external_id,
            "the answered id is not trusted"
        );
        let fourth = h.sync_so().await;
        assert!(!fourth.has_errors(), "{fourth:?}");
        assert_eq!(h.so.contacts()[0]["Name"], "Tidewater Trading Co");
        assert!(linked(&h.engine.store).last_error.is_none());
    }
}

/// Hostile answers: nesting deep enough to overflow a recursive walk, a body larger than
/// the cap, bytes that are not UTF-8. Each is an error, never a crash or stored damage.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_answers_are_errors_not_crashes() {
    let deep = format!(
        "<Response>{}x{}</Response>",
        "<Client>".repeat(8000),
        "</Client>".repeat(8000)
    );
    let err = ferry_connectors::workflowmax::xml::parse(&deep).unwrap_err();
    assert!(err.contains("nested deeper"), "{err}");

    let addr = raw_server().await;
    let get = |p: &str| reqwest::get(format!("http://{addr}{p}"));
    let huge = ferry_framework::http::read_capped(get("/huge").await.unwrap()).await;
    assert!(
        matches!(&huge, Err(ferry_framework::http::ApiError::Malformed(m)) if m.contains("larger")),
        "{huge:?}"
    );
    let text = ferry_framework::http::read_capped(get("/latin1").await.unwrap())
        .await
        .unwrap();
    assert!(text.contains('\u{FFFD}'), "damage is marked, not hidden");
}

/// A loopback server answering `/huge` with 40 MB and no length (read until closed), and
/// anything else with JSON holding a Latin-1 byte.
async fn raw_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let huge = String::from_utf8_lossy(&buf[..n]).starts_with("GET /huge");
                let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n";
                if huge {
                    let _ = sock.write_all(format!("{head}\r\n").as_bytes()).await;
                    let chunk = vec![b' '; 1024 * 1024];
                    for _ in 0..40 {
                        if sock.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let body = b"{\"Name\":\"Caf\xe9\"}";
                    let _ = sock
                        .write_all(
                            format!("{head}Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                        )
                        .await;
                    let _ = sock.write_all(body).await;
                }
            });
        }
    });
    addr
}

/// Config files that used to break runs are refused with exit 2, naming the file, line and
/// field, before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_is_refused_before_anything_is_written() {
    let a = apps().await;
    let settings_cases: &[(&str, &str)] = &[
        (
            "sync: { lookback_seconds: 99999999999999 }\n",
            "lookback_seconds",
        ),
        ("sync: { lookback_seconds: -300 }\n", "lookback_seconds"),
        ("sync: { max_retries: 4294967295 }\n", "max_retries"),
        (
            "sync: { http_timeout_seconds: 0 }\n",
            "http_timeout_seconds",
        ),
        ("sync: { lease_seconds: 0 }\n", "lease_seconds"),
        ("sync: { lease_seconds: -5 }\n", "lease_seconds"),
        ("runtime: { poll_millis: 0 }\n", "poll_millis"),
        ("runtime: { jitter_ratio: 7 }\n", "jitter_ratio"),
        ("runtime: { max_attempts: 0 }\n", "max_attempts"),
        (
            "runtime: { retry_base_seconds: 100, retry_cap_seconds: 10 }\n",
            "retry_cap_seconds",
        ),
        ("runtime: { listen: \"not an address\" }\n", "listen"),
        ("runtime: { listen: \"127.0.0.1:99999\" }\n", "listen"),
        (
            "secrets: { key_env: FERRY_SECRET_KEY, key_file: \"\" }\n",
            "key_file",
        ),
    ];
    let org_cases: &[(&str, &str, &str)] = &[
        (
            "rate_limit: { per_minute: 100000 }",
            "rate_limit: { per_minute: 0 }",
            "rate limit",
        ),
        (
            "rate_limit: { per_minute: 100000 }",
            "rate_limit: { concurrent: 0 }",
            "rate limit",
        ),
        ("slug: acme", "slug: ../../etc", "slug"),
        ("slug: acme", "slug: \"ac'me\"", "slug"),
        ("login_url: http://", "login_url: ftp://", "login_url"),
        (
            "sync_enabled: true",
            "date_filtering_limit: 2999-01-01T00:00:00Z",
            "date_filtering_limit",
        ),
        (
            "        organization: [name,",
            "        invoice: [name,",
            "webhooks.relevant",
        ),
    ];
    let mut f = Figures::default();
    let run = |ws: &Path, env: &[(&str, &str)]| {
        let mut c = ferry(ws, &["sync"]);
        c.envs(env.iter().copied());
        c.output().unwrap()
    };
    let judge = |f: &mut Figures, ws: &tempfile::TempDir, out: Output, needle: &str| {
        f.trials += 1;
        f.scan(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        let named = err.contains(needle) && (err.contains(".yml") || needle.is_empty());
        let written = ["ferry.db", "secret.key"]
            .iter()
            .any(|f| ws.path().join(f).exists());
        if out.status.code() != Some(2) || !named || written {
            eprintln!(
                "{needle}: exit {:?}, written {written}: {err}",
                out.status.code()
            );
            f.wrong_exits += 1;
        }
    };
    for (extra, field) in settings_cases {
        let ws = workspace("ferry.db", &a, extra);
        let out = run(ws.path(), &[]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("line"), "{field}: the line is named: {err}");
        judge(&mut f, &ws, out, field);
    }
    for (from, to, field) in org_cases {
        let ws = workspace("ferry.db", &a, "");
        let path = ws.path().join("config/organizations/acme.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        // A second, valid organization before it must not be written either.
        std::fs::write(
            ws.path().join("config/organizations/a-first.yml"),
            "slug: first\nname: First\nconnections: []\n",
        )
        .unwrap();
        let out = run(ws.path(), &[]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let located = err.contains("line") || err.contains("acme.yml:");
        assert!(located, "{field}: the line is named: {err}");
        judge(&mut f, &ws, out, field);
    }
    for url in ["\"mysql://u:sekrit@h/x\"", "\"\""] {
        let ws = workspace("ferry.db", &a, "");
        let settings = format!("database: {{ url: {url} }}\nsync: {{ page_size: 0 }}\n");
        std::fs::write(ws.path().join("settings.yml"), settings).unwrap();
        let out = run(ws.path(), &[]);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("sekrit"),
            "no password shown"
        );
        judge(&mut f, &ws, out, "url");
    }
    // A secret pasted into the file by mistake is refused without being repeated.
    for (from, to) in [
        (
            "client_secret: { env: SUPEROFFICE_CLIENT_SECRET }",
            "client_secret: hunter2secret",
        ),
        (
            "login_url: http://",
            "login_url: ftp://admin:hunter2secret@",
        ),
    ] {
        let ws = workspace("ferry.db", &a, "");
        let path = ws.path().join("config/organizations/acme.yml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let out = run(ws.path(), &[]);
        f.leaked += usize::from(String::from_utf8_lossy(&out.stderr).contains("hunter2secret"));
        judge(&mut f, &ws, out, "acme.yml");
    }
    let ws = workspace("ferry.db", &a, "");
    let out = ferry(ws.path(), &["sync", "--connection", "typo"])
        .output()
        .unwrap();
    judge(&mut f, &ws, out, "");
    let ws = workspace("ferry.db", &a, "");
    std::fs::write(ws.path().join("settings.yml"), "# nothing\n").unwrap();
    judge(&mut f, &ws, run(ws.path(), &[]), "empty");
    let ws = workspace("ferry.db", &a, "");
    let out = run(ws.path(), &[("FERRY_SECRET_KEY", "bm90LWEta2V5")]);
    f.trials += 1;
    f.scan(&out);
    f.wrong_exits +=
        usize::from(out.status.code() != Some(2) || ws.path().join("ferry.db").exists());
    // An empty webhook secret would accept any signature: `ferry serve` refuses to start.
    let ws = workspace("ferry.db", &a, "");
    let out = ferry(ws.path(), &["serve", "--listen", "127.0.0.1:0"])
        .env("SUPEROFFICE_WEBHOOK_SECRET", "")
        .output()
        .unwrap();
    judge(&mut f, &ws, out, "SUPEROFFICE_WEBHOOK_SECRET");
    f.check("malformed configuration");
}

/// Output read by `head` (a pipe closed early) ends every listing command quietly.
#[tokio::test(flavor = "multi_thread")]
async fn listings_end_quietly_on_a_closed_pipe() {
    let a = apps().await;
    for i in 0..300 {
        a.so.add_contact(
            &format!("Piped {i:03} with a long enough name to fill a pipe"),
            "",
            "",
        );
    }
    let ws = workspace("ferry.db", &a, "");
    let out = ferry(ws.path(), &["sync", "--connection", "superoffice"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut f = Figures::default();
    // Each command with the exit it has when it can write (a sync of an unknown
    // organization is bad input), which a closed stdout or stderr must not change.
    let commands: &[(&[&str], i32)] = &[
        (
            &["hub", "list", "--org", "acme", "--entity", "Organization"],
            0,
        ),
        (
            &[
                "hub",
                "list",
                "--org",
                "acme",
                "--entity",
                "Organization",
                "--json",
            ],
            0,
        ),
        (&["idmaps", "--org", "acme"], 0),
        (&["status"], 0),
        (&["jobs"], 0),
        (&["connectors"], 0),
        (&["sync", "--org", "nope"], 2),
        (&["sync", "--connection", "superoffice", "--dry-run"], 0),
    ];
    for (args, want) in commands {
        for closed in ["stdout", "stderr"] {
            let mut child = ferry(ws.path(), args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            match closed {
                "stdout" => drop(child.stdout.take()),
                _ => drop(child.stderr.take()),
            }
            let out = child.wait_with_output().unwrap();
            f.trials += 1;
            f.scan(&out);
            if out.status.code() != Some(*want) {
                eprintln!("{args:?} with {closed} closed: {:?}", out.status.code());
                f.wrong_exits += 1;
            }
        }
    }
    f.check("closed pipes");
}

/// Runs `sync` until a run has no errors (at most `n` runs); true when one had none.
async fn settles<F, Fut>(n: usize, mut sync: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ferry_framework::sync::RunReport>,
{
    for _ in 0..n {
        if !sync().await.has_errors() {
            return true;
        }
    }
    false
}

/// Every kind of injected API fault on every create and update path of both applications:
/// after the fault, runs settle with each record held exactly once, at its latest values.
#[tokio::test(flavor = "multi_thread")]
async fn injected_api_faults_on_writes_lose_and_duplicate_nothing() {
    let so_faults = [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Status(429),
        Fault::Status(401),
        Fault::Status(403),
        Fault::StoreThenFail(500),
        Fault::StoreThenHang(Duration::from_millis(2500)),
    ];
    let wfm_faults = [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Status(429),
        Fault::Status(401),
        Fault::Envelope("The server is busy".into()),
        Fault::Garbled,
        Fault::StoreThenFail(500),
        Fault::StoreThenHang(Duration::from_millis(2500)),
    ];
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let mut h = common::hubbed(&db, true, common::quick_limits(), json!({})).await;
        h.engine.settings.sync.http_timeout_seconds = 1;
        let mut f = Figures::default();
        // Into SuperOffice: WorkflowMax clients become contacts.
        for (k, fault) in so_faults.iter().enumerate() {
            for target in [Target::Create, Target::Update] {
                let name = format!("SO fault {k} {target:?}");
                let uuid = h.wfm.add_client(&name, json!({}));
                h.sync_wfm().await;
                let mut want = name.clone();
                if target == Target::Update {
                    f.wrong_exits += usize::from(!settles(3, || h.sync_so()).await);
                    want = format!("{name} v2");
                    h.wfm.edit(&uuid, json!({"Name": want}));
                    h.sync_wfm().await;
                }
                h.so.fail_next(target, fault.clone());
                f.wrong_exits += usize::from(!settles(4, || h.sync_so()).await);
                let held = names(&h.so.contacts(), "Name");
                f.trials += 1;
                f.duplicates += held
                    .iter()
                    .filter(|n| n.starts_with(&name))
                    .count()
                    .saturating_sub(1);
                f.lost += usize::from(!held.contains(&want));
            }
        }
        // Into WorkflowMax: SuperOffice contacts become clients.
        for (k, fault) in wfm_faults.iter().enumerate() {
            for target in [Target::Create, Target::Update] {
                let name = format!("WFM fault {k} {target:?}");
                let id = h.so.add_contact(&name, "", "");
                h.sync_so().await;
                let mut want = name.clone();
                if target == Target::Update {
                    f.wrong_exits += usize::from(!settles(3, || h.sync_wfm()).await);
                    want = format!("{name} v2");
                    h.so.edit("Contact", id, json!({"Name": want}));
                    h.sync_so().await;
                }
                h.wfm.fail_next(target, fault.clone());
                f.wrong_exits += usize::from(!settles(4, || h.sync_wfm()).await);
                let held = names(&h.wfm.clients(), "Name");
                f.trials += 1;
                f.duplicates += held
                    .iter()
                    .filter(|n| n.starts_with(&name))
                    .count()
                    .saturating_sub(1);
                f.lost += usize::from(!held.contains(&want));
            }
        }
        f.check(&format!(
            "injected API faults on writes on {}",
            backend(&db)
        ));
    }
}

/// Text an answer damaged (bytes that were not UTF-8, read as U+FFFD) is a per-record error:
/// never stored in the hub or passed on, and cleared when the record is good again.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_text_is_never_stored_or_passed_on() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::backends(dir.path()) {
        let h = common::hubbed(&db, true, common::quick_limits(), json!({})).await;
        let id = h.so.add_contact("Café Nord", "", "");
        assert!(!h.sync_so().await.has_errors());
        h.sync_wfm().await;
        h.so.edit("Contact", id, json!({"Name": "Caf\u{FFFD} Nord"}));
        let damaged = h.sync_so().await;
        assert!(damaged.has_errors(), "{damaged:?}");
        h.sync_wfm().await;
        let held = names(&h.wfm.clients(), "Name");
        assert_eq!(
            held,
            vec!["Café Nord".to_string()],
            "nothing damaged passed on"
        );
        h.so.edit("Contact", id, json!({"Name": "Café Nord AS"}));
        assert!(!h.sync_so().await.has_errors(), "the error clears");
        h.sync_wfm().await;
        assert_eq!(
            names(&h.wfm.clients(), "Name"),
            vec!["Café Nord AS".to_string()]
        );
    }
}
