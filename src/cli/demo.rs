//! `ferry demo` and `ferry sandbox`: a connector's fake application on loopback, synced
//! through a hub on the embedded SQLite default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use ferry_framework::config::{ConnectionConfig, EntitySelection, OrgConfig, Settings};
use ferry_framework::connector;
use ferry_framework::input_error;
use ferry_framework::sync::{Engine, SyncOptions};
use serde_json::json;

use super::sync::{print_reports, run_all};

#[derive(Args)]
pub struct DemoArgs {
    /// Connector whose sandbox to run.
    #[arg(long, default_value = "superoffice")]
    pub connector: String,
}

#[derive(Args)]
pub struct SandboxArgs {
    /// Connector whose fake application to serve.
    pub connector: String,
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub listen: SocketAddr,
    /// Load a few demo records first.
    #[arg(long)]
    pub seed: bool,
}

fn sandbox_of(name: &str) -> Result<Box<dyn ferry_framework::sandbox::Sandbox>> {
    let c = connector::find(name).ok_or_else(|| input_error!("no connector named {name:?}"))?;
    c.sandbox()
        .ok_or_else(|| input_error!("connector {name:?} has no sandbox"))
}

pub async fn sandbox(args: SandboxArgs) -> Result<ExitCode> {
    let h = sandbox_of(&args.connector)?.start(args.listen).await?;
    if args.seed {
        h.app.seed_demo();
    }
    println!("{} sandbox listening on http://{}", args.connector, h.addr);
    println!(
        "connection settings: {}",
        serde_json::to_string_pretty(&h.settings)?
    );
    println!("sandbox secrets (not real credentials):");
    for (k, v) in &h.secrets {
        println!("  {k} = {v}");
    }
    println!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(settings_path: &Path, args: DemoArgs) -> Result<ExitCode> {
    // The demo's own database, fresh each time, next to the usual one.
    let base = settings_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut settings = if settings_path.exists() {
        Settings::load(settings_path)?
    } else {
        Settings::with_base(base, ".ferry/ferry.db")
    };
    let db = settings.resolve(".ferry/demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    settings.database.url = db.to_string_lossy().into_owned();
    let engine = Engine::from_settings(&settings)
        .context("the demo needs the repository's config/ and mappers/")?;

    let handle = sandbox_of(&args.connector)?
        .start("127.0.0.1:0".parse()?)
        .await?;
    handle.app.seed_demo();
    println!(
        "== {} sandbox on http://{} seeded with:",
        args.connector, handle.addr
    );
    for l in handle.app.describe() {
        println!("   {l}");
    }

    let conn_def = connector::find(&args.connector).expect("found above");
    let conn = ConnectionConfig {
        name: args.connector.clone(),
        connector: args.connector.clone(),
        settings: handle.settings.clone(),
        secrets: BTreeMap::new(),
        parameters: BTreeMap::new(),
        rate_limit: None,
        entities: conn_def
            .entities()
            .iter()
            .map(|e| (e.name().to_string(), EntitySelection::default()))
            .collect(),
    };
    let org = OrgConfig {
        slug: "demo".into(),
        name: "Demo Org".into(),
        sync_enabled: true,
        date_filtering_limit: None,
        connections: vec![conn.clone()],
        source: "demo".into(),
    };
    let prepared = engine.prepare(&org, &conn, Some(handle.secrets.clone()))?;

    // Records that arrived in the hub from elsewhere (another application, an import).
    let hub_org = engine.store.hub_put(
        &engine.hub,
        prepared.org_id,
        "Organization",
        None,
        json!({"name": "Harbour Logistics Ltd", "website": "https://harbour.example"}),
        None,
    )?;
    let hub_person = engine.store.hub_put(&engine.hub, prepared.org_id, "Person", None,
        json!({"first_name": "Nora", "last_name": "Dahl", "email": "nora@harbour.example", "organization_id": hub_org}), None)?;
    println!(
        "== the hub already holds Organization \"Harbour Logistics Ltd\" and Person \"Nora Dahl\""
    );

    let opts = SyncOptions::default();
    println!("\n== sync 1: first sync, both ways");
    let r = run_all(&engine, std::slice::from_ref(&prepared), &opts).await?;
    print_reports(&r, false);
    show(&engine, prepared.org_id, handle.app.as_ref())?;

    println!("\n== changes on both sides:");
    println!("   {}", handle.app.user_edit());
    let rec = engine
        .store
        .hub_get(prepared.org_id, &hub_person)?
        .context("hub person vanished")?;
    let mut data = rec.data.clone();
    data["job_title"] = json!("Head of Sales");
    engine.store.hub_put(
        &engine.hub,
        prepared.org_id,
        "Person",
        Some(&hub_person),
        data,
        None,
    )?;
    println!("   set job_title of hub Person \"Nora Dahl\" to \"Head of Sales\"");

    println!("\n== sync 2: each change moves to the other side");
    let before = handle.app.write_calls();
    let r = run_all(&engine, std::slice::from_ref(&prepared), &opts).await?;
    print_reports(&r, false);
    println!(
        "   writes to {}: {}",
        args.connector,
        handle.app.write_calls() - before
    );
    show(&engine, prepared.org_id, handle.app.as_ref())?;

    println!("\n== sync 3: nothing changed, so nothing is written");
    let before = (
        handle.app.write_calls(),
        engine.store.hub_seq(prepared.org_id)?,
    );
    let r = run_all(&engine, std::slice::from_ref(&prepared), &opts).await?;
    print_reports(&r, false);
    let after = (
        handle.app.write_calls(),
        engine.store.hub_seq(prepared.org_id)?,
    );
    println!(
        "   writes to {}: {}, hub changes: {}",
        args.connector,
        after.0 - before.0,
        after.1 - before.1
    );
    println!(
        "\nThe demo database is {}; try `ferry idmaps --org demo` with --settings pointing at it.",
        db.display()
    );
    Ok(if r.iter().any(|r| r.has_errors()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn show(
    engine: &Engine,
    org_id: i64,
    app: &dyn ferry_framework::sandbox::SandboxApp,
) -> Result<()> {
    println!("   in the application now:");
    for l in app.describe() {
        println!("     {l}");
    }
    println!("   in the hub now:");
    for entity in engine.hub.entities.keys() {
        for r in engine.store.hub_list(org_id, entity, 100)? {
            let name = ["name", "first_name"]
                .iter()
                .filter_map(|k| r.data.get(*k).and_then(|v| v.as_str()))
                .collect::<Vec<_>>()
                .join(" ");
            let extra = r
                .data
                .get("last_name")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let title = r
                .data
                .get("job_title")
                .and_then(|v| v.as_str())
                .map(|t| format!(" — {t}"))
                .unwrap_or_default();
            println!("     {entity} {name} {extra}{title}");
        }
    }
    Ok(())
}
