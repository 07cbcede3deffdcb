//! `ferry bench --app superoffice`: the cost of SuperOffice syncs in API calls and wall
//! time. A fake SuperOffice tenant holds N companies and answers each call after a set
//! latency; Ferry syncs them into an empty hub with the connector's defaults (pages of
//! 1000, at most 10 calls a second), then runs again with nothing changed. The fake counts
//! each kind of call, so the table shows list calls, reads by id and writes per phase.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ferry_connectors::superoffice::fake::{self as so, FakeSuperOffice};
use ferry_framework::config::{ConnectionConfig, EntitySelection, OrgConfig, Settings};
use ferry_framework::sandbox::SandboxApp;
use ferry_framework::sync::{Engine, SyncOptions};
use serde::Serialize;
use serde_json::json;

/// One phase: its time and the calls the fake received, by kind.
#[derive(Debug, Serialize)]
pub struct SoPhase {
    pub wall_seconds: f64,
    pub list_calls: u64,
    pub reads_by_id: u64,
    pub writes: u64,
    /// Every call Ferry made (token and state calls included).
    pub api_calls: u64,
    pub hub_changes: i64,
}

#[derive(Debug, Serialize)]
pub struct SoResult {
    pub backend: String,
    pub records: usize,
    pub latency_ms: u64,
    pub first_sync: SoPhase,
    pub calls_per_record_first: f64,
    pub idle: SoPhase,
}

/// The calls a fake received so far: (list, get, writes).
fn counts(fake: &FakeSuperOffice) -> (u64, u64, u64) {
    (fake.calls("list"), fake.calls("get"), fake.writes())
}

async fn phase(
    engine: &Engine,
    p: &ferry_framework::sync::Prepared,
    fake: &FakeSuperOffice,
) -> Result<SoPhase> {
    let (l0, g0, w0) = counts(fake);
    let seq0 = engine.store.hub_seq(p.org_id)?;
    let start = Instant::now();
    let r = engine.run(p, &SyncOptions::default(), &|_| {}).await?;
    let wall = start.elapsed().as_secs_f64();
    if r.has_errors() {
        bail!("the sync had errors: {r:?}");
    }
    let (l, g, w) = counts(fake);
    Ok(SoPhase {
        wall_seconds: wall,
        list_calls: l - l0,
        reads_by_id: g - g0,
        writes: w - w0,
        api_calls: r.api_calls,
        hub_changes: engine.store.hub_seq(p.org_id)? - seq0,
    })
}

/// One backend and size: a first sync of `n` companies and an idle run.
pub async fn one(
    settings: &Settings,
    db: &str,
    backend: &str,
    n: usize,
    latency: Duration,
) -> Result<SoResult> {
    note!("bench superoffice: {backend}, {n} companies: starting the fake");
    let fake = FakeSuperOffice::new();
    let addr = fake.serve("127.0.0.1:0".parse()?).await?;
    fake.seed_many(n);
    fake.control()
        .set_latency(Some(latency).filter(|d| !d.is_zero()));
    let mut s = settings.clone();
    s.database.url = db.to_string();
    let engine = Engine::from_settings(&s)?;
    // The connector's defaults: its recommended page size and call budget.
    let conn = ConnectionConfig {
        name: "superoffice".into(),
        connector: "superoffice".into(),
        settings: FakeSuperOffice::settings(addr),
        secrets: Default::default(),
        parameters: Default::default(),
        rate_limit: None,
        page_size: None,
        webhooks: None,
        line: None,
        entities: [("organization".to_string(), EntitySelection::default())].into(),
    };
    let org = OrgConfig {
        slug: format!("bench-so-{n}"),
        name: "Bench".into(),
        sync_enabled: true,
        date_filtering_limit: None,
        sync_interval_seconds: None,
        connections: vec![conn.clone()],
        source: Path::new("bench").to_path_buf(),
    };
    let secrets = [
        ("client_secret".to_string(), so::CLIENT_SECRET.to_string()),
        ("refresh_token".to_string(), so::REFRESH_TOKEN.to_string()),
    ]
    .into();
    let p = engine.prepare(&org, &conn, Some(secrets))?;
    note!("bench superoffice: {backend}, {n} companies: first sync");
    let first = phase(&engine, &p, &fake).await?;
    note!("bench superoffice: {backend}, {n} companies: idle sync");
    let idle = phase(&engine, &p, &fake).await?;
    Ok(SoResult {
        backend: backend.into(),
        records: n,
        latency_ms: latency.as_millis() as u64,
        calls_per_record_first: first.api_calls as f64 / n.max(1) as f64,
        first_sync: first,
        idle,
    })
}

pub fn print(results: &[SoResult]) -> std::io::Result<()> {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(vec![
        "backend",
        "companies",
        "latency ms",
        "first sync s",
        "lists",
        "reads by id",
        "calls",
        "calls/rec",
        "idle s",
        "idle lists",
        "idle reads",
        "idle writes",
    ]);
    for r in results {
        let (f, i) = (&r.first_sync, &r.idle);
        t.add_row(vec![
            r.backend.clone(),
            r.records.to_string(),
            r.latency_ms.to_string(),
            format!("{:.2}", f.wall_seconds),
            f.list_calls.to_string(),
            f.reads_by_id.to_string(),
            f.api_calls.to_string(),
            format!("{:.4}", r.calls_per_record_first),
            format!("{:.2}", i.wall_seconds),
            i.list_calls.to_string(),
            i.reads_by_id.to_string(),
            (i.writes as i64 + i.hub_changes).to_string(),
        ]);
    }
    out!("{t}")?;
    Ok(())
}

/// The JSON written for a SuperOffice bench.
pub fn report(machine: serde_json::Value, results: &[SoResult]) -> serde_json::Value {
    json!({"machine": machine, "app": "superoffice", "results": results})
}
