//! `ferry bench`: Ferry's sync measured against the floor. A fake WorkflowMax runs in its
//! own process (so its memory is not counted) with N synthetic clients; for each backend
//! and N the bench measures the floor (the same HTTP client fetching the same pages, no
//! mapping, no database), a first sync, the write floor (the first sync's rows written
//! again into an empty database, nothing else: `bench_writes`), an idle sync and a sync of
//! 1% changes on each side: wall time, records/s, peak RSS of this process, API calls and
//! writes. Results are printed as a table and written as JSON with the machine described.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ferry_framework::config::{ConnectionConfig, EntitySelection, OrgConfig, Settings};
use ferry_framework::http::rate::RateLimits;
use ferry_framework::http::{TokenStore, Tokens};
use ferry_framework::store::idmaps::IdMapFilter;
use ferry_framework::store::testing::{fresh_postgres, ScratchDb};
use ferry_framework::sync::{Engine, Prepared, RunReport, SyncOptions};
use serde::Serialize;
use serde_json::{json, Value};

use super::bench_writes::WriteFloor;

/// The application a bench syncs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchApp {
    /// WorkflowMax clients, against the floor (see the module's docs).
    Workflowmax,
    /// SuperOffice companies, with its default page size and call budget.
    Superoffice,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The application to sync with.
    #[arg(long, value_enum, default_value = "workflowmax")]
    pub app: BenchApp,
    /// Milliseconds each SuperOffice call takes (the network and the tenant); SuperOffice
    /// only.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Record counts for the first-sync, idle and 1%-changed phases.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub sizes: Vec<usize>,
    /// Also first-sync this many records, for the memory ratio against the largest size.
    #[arg(long, default_value_t = 0)]
    pub memory_size: usize,
    /// Records per page, for Ferry and the floor alike.
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
    /// A PostgreSQL server to measure too (fresh databases are created on it, and dropped).
    #[arg(long, env = "FERRY_BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results.json")]
    pub out: PathBuf,
}

#[derive(Debug, Default, Serialize)]
struct Phase {
    wall_seconds: f64,
    records_per_second: f64,
    api_calls: u64,
    writes: u64,
    hub_changes: i64,
    peak_rss_mb: f64,
}

#[derive(Debug, Serialize)]
struct Result1 {
    backend: String,
    records: usize,
    floor: Phase,
    first_sync: Phase,
    /// Ferry's first sync time over the floor's.
    ratio_to_floor: f64,
    /// The first sync's rows written again into an empty database through the same store
    /// calls, with nothing else (see `bench_writes`): the database's share of a first sync.
    write_floor: Option<WriteFloor>,
    idle: Option<Phase>,
    changed: Option<Phase>,
    /// Changes made on each side for the 1% phase.
    changes_each_side: usize,
    calls_per_record_first: f64,
    calls_per_change: Option<f64>,
}

/// A fake WorkflowMax in a child process.
struct Fake {
    child: Child,
    addr: String,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_fake(records: usize) -> Result<Fake> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(std::env::current_exe()?)
        .args(["sandbox", "workflowmax", "--listen", &addr, "--no-limits"])
        .args(["--records", &records.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the fake WorkflowMax")?;
    let fake = Fake { child, addr };
    let start = Instant::now();
    while std::net::TcpStream::connect(&fake.addr).is_err() {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("the fake WorkflowMax did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(fake)
}

/// Peak RSS of this process since the last reset, in MB (Linux).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts a phase's peak from what the process holds now, after handing the allocator's
/// free pages back: without that, memory an earlier phase freed but the allocator kept
/// (and SQLite page caches of closed connections) is counted in the next phase's peak.
fn reset_peak_rss() {
    release_free_memory();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: glibc's malloc_trim takes no pointers; it only returns free heap pages of
    // every arena to the kernel.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "memory_gb": mem,
        "os": std::env::consts::OS,
        "ferry": env!("CARGO_PKG_VERSION"),
    })
}

struct Tokens3 {
    access: String,
    refresh: String,
    account: String,
}

/// Authorizes once as an operator would; Ferry gets the tokens through its store.
async fn authorize(http: &reqwest::Client, addr: &str) -> Result<Tokens3> {
    let v: Value = http
        .post(format!("http://{addr}/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                ferry_connectors::workflowmax::fake::REFRESH_TOKEN,
            ),
            ("client_id", ferry_connectors::workflowmax::fake::CLIENT_ID),
            (
                "client_secret",
                ferry_connectors::workflowmax::fake::CLIENT_SECRET,
            ),
        ])
        .send()
        .await?
        .json()
        .await?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the token answer has no {k}: {v}"))
    };
    Ok(Tokens3 {
        access: s("access_token")?,
        refresh: s("refresh_token")?,
        account: ferry_connectors::workflowmax::fake::ORG_ID.to_string(),
    })
}

/// The floor: every page fetched by the same HTTP client, nothing else done.
async fn floor(
    http: &reqwest::Client,
    addr: &str,
    t: &Tokens3,
    page_size: usize,
    n: usize,
) -> Result<Phase> {
    reset_peak_rss();
    let start = Instant::now();
    let mut page = 1;
    let mut seen = 0;
    let mut calls = 0;
    loop {
        let body = http
            .get(format!("http://{addr}/client.api/list"))
            .bearer_auth(&t.access)
            .header("account_id", &t.account)
            .query(&[
                ("detailed", "true".to_string()),
                ("page", page.to_string()),
                ("pagesize", page_size.to_string()),
            ])
            .send()
            .await?
            .text()
            .await?;
        calls += 1;
        let got = body.matches("<Client>").count();
        seen += got;
        if got < page_size {
            break;
        }
        page += 1;
    }
    if seen != n {
        bail!("the floor saw {seen} clients, expected {n}");
    }
    let wall = start.elapsed().as_secs_f64();
    Ok(Phase {
        wall_seconds: wall,
        records_per_second: n as f64 / wall,
        api_calls: calls,
        peak_rss_mb: peak_rss_mb(),
        ..Default::default()
    })
}

async fn timed(engine: &Engine, p: &Prepared, records: usize) -> Result<(Phase, RunReport)> {
    let seq0 = engine.store.hub_seq(p.org_id)?;
    reset_peak_rss();
    let start = Instant::now();
    let r = engine.run(p, &SyncOptions::default(), &|_| {}).await?;
    let wall = start.elapsed().as_secs_f64();
    if r.has_errors() {
        bail!("the sync had errors: {r:?}");
    }
    let writes = r.entities.iter().map(|e| e.counts.writes()).sum();
    Ok((
        Phase {
            wall_seconds: wall,
            records_per_second: records as f64 / wall.max(1e-9),
            api_calls: r.api_calls,
            writes,
            hub_changes: engine.store.hub_seq(p.org_id)? - seq0,
            peak_rss_mb: peak_rss_mb(),
        },
        r,
    ))
}

/// One backend and size. With `writes_db` (an empty database for the write floor) the
/// write-floor, idle and 1%-changed phases run too; without, only the floor and first sync.
async fn one(
    settings: &Settings,
    db: &str,
    backend: &str,
    n: usize,
    page: usize,
    writes_db: Option<&str>,
) -> Result<Result1> {
    note!("bench: {backend}, {n} records: starting the fake");
    let fake = start_fake(n)?;
    let http = reqwest::Client::new();
    let tokens = authorize(&http, &fake.addr).await?;
    note!("bench: {backend}, {n} records: floor");
    let floor = floor(&http, &fake.addr, &tokens, page, n).await?;

    let mut s = settings.clone();
    s.database.url = db.to_string();
    s.sync.page_size = page;
    s.sync.first_sync_batch_size = page;
    let engine = Engine::from_settings(&s)?;
    let conn = ConnectionConfig {
        name: "workflowmax".into(),
        connector: "workflowmax".into(),
        settings: json!({
            "client_id": ferry_connectors::workflowmax::fake::CLIENT_ID,
            "api_url": format!("http://{}/", fake.addr),
            "token_url": format!("http://{}/oauth/token", fake.addr),
            "custom_fields": false,
        }),
        secrets: Default::default(),
        parameters: Default::default(),
        rate_limit: Some(RateLimits {
            concurrent: Some(64),
            per_second: None,
            per_minute: Some(10_000_000),
            per_day: Some(1_000_000_000),
        }),
        page_size: None,
        webhooks: None,
        line: None,
        entities: [("client".to_string(), EntitySelection::default())].into(),
    };
    let org = OrgConfig {
        slug: format!("bench-{n}"),
        name: "Bench".into(),
        sync_enabled: true,
        date_filtering_limit: None,
        sync_interval_seconds: None,
        connections: vec![conn.clone()],
        source: PathBuf::from("bench"),
    };
    let secrets = [
        (
            "client_secret".to_string(),
            ferry_connectors::workflowmax::fake::CLIENT_SECRET.to_string(),
        ),
        ("refresh_token".to_string(), tokens.refresh.clone()),
    ]
    .into();
    let p = engine.prepare(&org, &conn, Some(secrets))?;
    TokenStore::new(engine.store.clone(), engine.cipher.clone(), p.connection_id).save(
        &Tokens {
            access_token: Some(tokens.access.clone()),
            refresh_token: Some(tokens.refresh.clone()),
            expires_at: Some(chrono::Utc::now() + chrono::Duration::minutes(30)),
            endpoint: None,
            version: 0,
        },
        0,
    )?;

    note!("bench: {backend}, {n} records: first sync");
    let (first, _) = timed(&engine, &p, n).await?;
    let ratio = first.wall_seconds / floor.wall_seconds.max(1e-9);
    let mut result = Result1 {
        backend: backend.into(),
        records: n,
        calls_per_record_first: first.api_calls as f64 / n as f64,
        floor,
        first_sync: first,
        ratio_to_floor: ratio,
        write_floor: None,
        idle: None,
        changed: None,
        changes_each_side: 0,
        calls_per_change: None,
    };
    let Some(writes_db) = writes_db else {
        return Ok(result);
    };
    note!("bench: {backend}, {n} records: write floor");
    result.write_floor = Some(super::bench_writes::write_floor(
        &engine, &p, writes_db, page,
    )?);
    note!("bench: {backend}, {n} records: idle sync");
    let (idle, _) = timed(&engine, &p, n).await?;
    result.idle = Some(idle);

    // 1% changed: half made by the application's users, half in the hub.
    let k = (n / 200).max(1);
    // Only the id maps needed: loading them all would leave the allocator holding memory
    // that the next phase's peak RSS would count.
    let maps =
        engine
            .store
            .idmaps_after(&IdMapFilter::all(&[p.connection_id]), 0, (2 * k) as i64)?;
    let ids: Vec<(String, String)> = maps
        .iter()
        .filter_map(|m| Some((m.hub_id.clone()?, m.external_id.clone()?)))
        .collect();
    for (_, ext) in ids.iter().take(k) {
        let body = format!("<Client><UUID>{ext}</UUID><Phone>+64 21 changed</Phone></Client>");
        let r = http
            .put(format!("http://{}/client.api/update", fake.addr))
            .bearer_auth(&tokens.access)
            .header("account_id", &tokens.account)
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("the fake refused an edit: {}", r.status());
        }
    }
    for (hub, _) in ids.iter().skip(k) {
        let rec = engine.store.hub_get(p.org_id, hub)?.context("hub record")?;
        let mut data = rec.data.clone();
        data["website"] = json!("https://changed.bench.example");
        engine
            .store
            .hub_put(&engine.hub, p.org_id, "Organization", Some(hub), data, None)?;
    }
    note!("bench: {backend}, {n} records: 1% changed ({k} on each side)");
    let (changed, r) = timed(&engine, &p, 2 * k).await?;
    let c = &r.entities[0].counts;
    if (c.updated_in_hub, c.updated_in_app) != (k as u64, k as u64) {
        note!("bench: warning: expected {k} updates each way, got {} in the hub and {} in the application", c.updated_in_hub, c.updated_in_app);
    }
    result.calls_per_change = Some(changed.api_calls as f64 / (2 * k) as f64);
    result.changed = Some(changed);
    result.changes_each_side = k;
    Ok(result)
}

fn print(results: &[Result1], memory: Option<(f64, usize, usize)>) -> std::io::Result<()> {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(vec![
        "backend",
        "records",
        "floor s",
        "first sync s",
        "rec/s",
        "× floor",
        "writes s",
        "peak RSS MB",
        "calls/rec",
        "idle s",
        "idle calls",
        "idle writes",
        "1% s",
        "1% writes",
        "calls/change",
    ]);
    for r in results {
        fn o(p: &Option<Phase>, f: impl Fn(&Phase) -> String) -> String {
            p.as_ref().map_or("-".into(), f)
        }
        t.add_row(vec![
            r.backend.clone(),
            r.records.to_string(),
            format!("{:.2}", r.floor.wall_seconds),
            format!("{:.2}", r.first_sync.wall_seconds),
            format!("{:.0}", r.first_sync.records_per_second),
            format!("{:.2}", r.ratio_to_floor),
            r.write_floor
                .as_ref()
                .map_or("-".into(), |w| format!("{:.2}", w.seconds)),
            format!("{:.0}", r.first_sync.peak_rss_mb),
            format!("{:.4}", r.calls_per_record_first),
            o(&r.idle, |p| format!("{:.2}", p.wall_seconds)),
            o(&r.idle, |p| p.api_calls.to_string()),
            o(&r.idle, |p| (p.writes as i64 + p.hub_changes).to_string()),
            o(&r.changed, |p| format!("{:.2}", p.wall_seconds)),
            o(&r.changed, |p| {
                format!("{} (of {})", p.writes, 2 * r.changes_each_side)
            }),
            r.calls_per_change.map_or("-".into(), |c| format!("{c:.2}")),
        ]);
    }
    out!("{t}")?;
    if let Some((ratio, big, base)) = memory {
        out!("memory flatness: peak RSS at {big} records / at {base} records = {ratio:.2}")?;
    }
    Ok(())
}

async fn bench_superoffice(
    settings: &Settings,
    backends: &[&str],
    args: &BenchArgs,
) -> Result<ExitCode> {
    let latency = Duration::from_millis(args.latency_ms);
    let mut results = Vec::new();
    for backend in backends {
        for &n in &args.sizes {
            let db = fresh_db(
                settings,
                backend,
                &format!("so-{n}"),
                args.postgres.as_deref(),
            )?;
            results.push(super::bench_superoffice::one(settings, &db, backend, n, latency).await?);
        }
    }
    super::bench_superoffice::print(&results)?;
    let out = super::bench_superoffice::report(machine(), &results);
    std::fs::write(&args.out, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    out!("results written to {}", args.out.display())?;
    Ok(ExitCode::SUCCESS)
}

fn fresh_db(settings: &Settings, backend: &str, tag: &str, pg: Option<&str>) -> Result<ScratchDb> {
    match (backend, pg) {
        ("postgresql", Some(url)) => Ok(ScratchDb::Postgres(fresh_postgres(url)?)),
        _ => {
            let path = settings.resolve(&format!(".ferry/bench-{tag}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            Ok(ScratchDb::File(path.to_string_lossy().into_owned()))
        }
    }
}

pub async fn bench(settings_path: &Path, args: BenchArgs) -> Result<ExitCode> {
    let settings = if settings_path.exists() {
        Settings::load(settings_path)?
    } else {
        Settings::with_base(Path::new("."), ".ferry/bench.db")
    };
    let mut backends = vec!["sqlite"];
    if args.postgres.is_some() {
        backends.push("postgresql");
    }
    if args.app == BenchApp::Superoffice {
        return bench_superoffice(&settings, &backends, &args).await;
    }
    let mut results = Vec::new();
    let mut memory = None;
    for backend in &backends {
        for &n in &args.sizes {
            let pg = args.postgres.as_deref();
            let db = fresh_db(&settings, backend, &n.to_string(), pg)?;
            let writes = fresh_db(&settings, backend, &format!("{n}-writes"), pg)?;
            results.push(one(&settings, &db, backend, n, args.page_size, Some(&*writes)).await?);
        }
        // Right after SQLite's sizes, before any PostgreSQL run: the peak is of this process,
        // and memory another backend's phases leave behind would be counted as the big run's.
        if *backend == "sqlite" && args.memory_size > 0 {
            let base = *args.sizes.iter().max().unwrap_or(&0);
            let db = fresh_db(&settings, "sqlite", &args.memory_size.to_string(), None)?;
            let big = one(
                &settings,
                &db,
                "sqlite",
                args.memory_size,
                args.page_size,
                None,
            )
            .await?;
            let at_base = results
                .iter()
                .find(|r| r.backend == "sqlite" && r.records == base)
                .map(|r| r.first_sync.peak_rss_mb);
            if let Some(b) = at_base {
                memory = Some((
                    big.first_sync.peak_rss_mb / b.max(1e-9),
                    args.memory_size,
                    base,
                ));
            }
            results.push(big);
        }
    }
    print(&results, memory)?;
    let out = json!({
        "machine": machine(),
        "page_size": args.page_size,
        "results": results,
        "memory_ratio": memory.map(|(r, big, base)| json!({"ratio": r, "records": big, "against": base})),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    out!("results written to {}", args.out.display())?;
    Ok(ExitCode::SUCCESS)
}
