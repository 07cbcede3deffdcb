//! `ferry demo` and `ferry sandbox`: a connector's fake application on loopback, synced
//! through a hub on the embedded SQLite default.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use ferry_framework::config::{ConnectionConfig, OrgConfig, Settings};
use ferry_framework::connector;
use ferry_framework::input_error;
use ferry_framework::sync::{Engine, SyncOptions};
use serde_json::json;

use super::sync::{print_reports, run_all};

#[derive(Args)]
pub struct DemoArgs {
    /// Connectors whose sandboxes to run (repeat); all that have one by default.
    #[arg(long = "connector")]
    pub connectors: Vec<String>,
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
    /// Load this many synthetic records, last changed a day ago (for benchmarks).
    #[arg(long)]
    pub records: Option<usize>,
    /// Do not enforce the application's call limits.
    #[arg(long)]
    pub no_limits: bool,
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
    if let Some(n) = args.records {
        if !h.app.seed_many(n) {
            return Err(input_error!(
                "the {} sandbox cannot load synthetic records",
                args.connector
            ));
        }
    }
    if args.no_limits {
        h.app.lift_limits();
    }
    let _ = out!("{} sandbox listening on http://{}", args.connector, h.addr);
    let _ = out!(
        "connection settings: {}",
        serde_json::to_string_pretty(&h.settings)?
    );
    let _ = out!("sandbox secrets (not real credentials):");
    for (k, v) in &h.secrets {
        let _ = out!("  {k} = {v}");
    }
    let _ = out!("press Ctrl-C to stop");
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

    let names: Vec<String> = if args.connectors.is_empty() {
        connector::registry()
            .iter()
            .filter(|c| c.sandbox().is_some())
            .map(|c| c.name().to_string())
            .collect()
    } else {
        args.connectors.clone()
    };
    // One organization, one connection per application, all through one hub.
    let mut apps = Vec::new();
    for name in &names {
        let handle = sandbox_of(name)?.start("127.0.0.1:0".parse()?).await?;
        handle.app.seed_demo();
        out!("== {name} sandbox on http://{} seeded with:", handle.addr)?;
        for l in handle.app.describe() {
            out!("   {l}")?;
        }
        let conn_def = connector::find(name).expect("found above");
        let entities = conn_def.entities_for(&handle.settings)?;
        let conn = handle.connection(name, name, entities.iter().map(|e| e.name().to_string()));
        apps.push((handle, conn));
    }
    let org = OrgConfig {
        slug: "demo".into(),
        name: "Demo Org".into(),
        sync_enabled: true,
        date_filtering_limit: None,
        sync_interval_seconds: None,
        connections: apps.iter().map(|(_, c)| c.clone()).collect(),
        source: "demo".into(),
    };
    let mut prepared = Vec::new();
    for (handle, conn) in &apps {
        prepared.push(engine.prepare(&org, conn, Some(handle.secrets.clone()))?);
    }
    let org_id = prepared
        .first()
        .context("no connector has a sandbox")?
        .org_id;
    let writes = || apps.iter().map(|(h, _)| h.app.write_calls()).sum::<u64>();

    // Records that arrived in the hub from elsewhere (another application, an import).
    let hub_org = engine.store.hub_put(
        &engine.hub,
        org_id,
        "Organization",
        None,
        json!({"name": "Harbour Logistics Ltd", "website": "https://harbour.example"}),
        None,
    )?;
    let hub_person = engine.store.hub_put(&engine.hub, org_id, "Person", None,
        json!({"first_name": "Nora", "last_name": "Dahl", "email": "nora@harbour.example", "organization_id": hub_org}), None)?;
    out!(
        "== the hub already holds Organization \"Harbour Logistics Ltd\" and Person \"Nora Dahl\""
    )?;

    let opts = SyncOptions::default();
    let mut round = 0;
    let (engine, prepared, opts) = (&engine, &prepared, &opts);
    let mut sync = |title: &str| {
        round += 1;
        let said = out!(
            "\n== round {round}: {title} (connections run in order: {})",
            names.join(", ")
        );
        async move {
            said?;
            run_all(engine, prepared, opts).await
        }
    };
    let r = sync("first sync, both ways").await?;
    print_reports(&r, false)?;
    show(engine, org_id, &apps, prepared)?;

    out!("\n== changes in every place:")?;
    for (handle, conn) in &apps {
        out!("   {}: {}", conn.name, handle.app.user_edit())?;
    }
    let rec = engine
        .store
        .hub_get(org_id, &hub_person)?
        .context("hub person vanished")?;
    let mut data = rec.data.clone();
    data["job_title"] = json!("Head of Sales");
    engine
        .store
        .hub_put(&engine.hub, org_id, "Person", Some(&hub_person), data, None)?;
    out!("   hub: set job_title of Person \"Nora Dahl\" to \"Head of Sales\"")?;

    let before = writes();
    let r = sync("each change moves on").await?;
    print_reports(&r, false)?;
    let r = sync("a change read from a later connection reaches the earlier ones").await?;
    print_reports(&r, false)?;
    out!("   writes to the applications: {}", writes() - before)?;
    show(engine, org_id, &apps, prepared)?;

    let before = (writes(), engine.store.hub_seq(org_id)?);
    let r = sync("nothing changed, so nothing is written").await?;
    print_reports(&r, false)?;
    let after = (writes(), engine.store.hub_seq(org_id)?);
    out!(
        "   writes to the applications: {}, hub changes: {}",
        after.0 - before.0,
        after.1 - before.1
    )?;
    // Settings for reading the demo's database with the other commands.
    let demo_settings = db.with_file_name("demo-settings.yml");
    std::fs::write(
        &demo_settings,
        "# Written by `ferry demo`: its database, for `ferry --settings <this file> ...`.\ndatabase: { url: demo.db }\n",
    )
    .with_context(|| format!("cannot write {}", demo_settings.display()))?;
    out!(
        "\nThe demo database is {}; try `ferry --settings {} idmaps --org demo`.",
        db.display(),
        demo_settings.display()
    )?;
    Ok(if r.iter().any(|r| r.has_errors()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What each application holds, and each hub record with the connections it is linked in.
fn show(
    engine: &Engine,
    org_id: i64,
    apps: &[(ferry_framework::sandbox::SandboxHandle, ConnectionConfig)],
    prepared: &[ferry_framework::sync::Prepared],
) -> Result<()> {
    for (handle, conn) in apps {
        out!("   in {} now:", conn.name)?;
        for l in handle.app.describe() {
            out!("     {l}")?;
        }
    }
    let ids: Vec<i64> = prepared.iter().map(|p| p.connection_id).collect();
    let maps = engine.store.idmaps_of(&ids)?;
    out!("   in the hub now (and where each record is linked):")?;
    for entity in engine.hub.entities.keys() {
        for r in engine.store.hub_list(org_id, entity, 100)? {
            let text = |k: &str| r.data.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let name = [text("name"), text("first_name"), text("last_name")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let mut extra: Vec<String> = ["job_title", "mobile"]
                .iter()
                .filter(|k| !text(k).is_empty())
                .map(|k| format!("{k}: {}", text(k)))
                .collect();
            let linked: Vec<String> = maps
                .iter()
                .filter(|m| m.hub_id.as_deref() == Some(r.uid.as_str()) && m.external_id.is_some())
                .filter_map(|m| {
                    let p = prepared
                        .iter()
                        .find(|p| p.connection_id == m.connection_id)?;
                    Some(format!("{} {}", p.config.name, m.external_entity))
                })
                .collect();
            if !linked.is_empty() {
                extra.push(format!("linked in {}", linked.join(", ")));
            }
            out!("     {entity} {name:?} ({})", extra.join("; "))?;
        }
    }
    Ok(())
}
