//! `ferry sync`: run every selected connection once, with progress and a summary table.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use ferry_framework::config::Settings;
use ferry_framework::input_error;
use ferry_framework::sync::{Engine, RunReport, SyncOptions};

#[derive(Args)]
pub struct SyncArgs {
    /// Only this organization (slug).
    #[arg(long)]
    pub org: Option<String>,
    /// Only this connection (name).
    #[arg(long)]
    pub connection: Option<String>,
    /// Only these entities; a partial run never moves other entities' cursors.
    #[arg(long = "entity")]
    pub entities: Vec<String>,
    /// Ignore cursors: read everything on both sides.
    #[arg(long)]
    pub full: bool,
    /// Print what would be created, updated, deferred; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Queue the syncs as jobs for `ferry worker` / `ferry serve` instead of running them.
    #[arg(long, conflicts_with_all = ["dry_run", "entities"])]
    pub enqueue: bool,
}

pub async fn sync(settings: &Settings, args: SyncArgs) -> Result<ExitCode> {
    let orgs = settings.organizations()?;
    if let Some(o) = &args.org {
        if !orgs.iter().any(|x| &x.slug == o) {
            return Err(input_error!(
                "no organization {o:?} in {}",
                settings.paths.organizations
            ));
        }
    }
    let mut pairs = Vec::new();
    for org in orgs
        .iter()
        .filter(|o| args.org.as_ref().is_none_or(|s| &o.slug == s))
    {
        if !org.sync_enabled {
            note!("{}: sync is disabled in {}", org.slug, org.source.display());
            continue;
        }
        for conn in &org.connections {
            if args.connection.as_ref().is_none_or(|c| c == &conn.name) {
                pairs.push((org, conn));
            }
        }
    }
    if pairs.is_empty() {
        return Err(input_error!("nothing to sync: no connection matches"));
    }
    let (engine, prepared) = Engine::start(settings, pairs)?;
    if args.enqueue {
        for p in &prepared {
            let job = ferry_framework::runtime::SyncJob {
                org: p.org.slug.clone(),
                connection: p.config.name.clone(),
                full: args.full,
                ..Default::default()
            };
            let id = engine
                .store
                .enqueue(&ferry_framework::store::jobs::NewJob {
                    kind: ferry_framework::runtime::SYNC,
                    payload: &serde_json::to_string(&job)?,
                    dedupe_key: None,
                    run_at: ferry_framework::store::orgs::now(),
                    max_attempts: settings.runtime.max_attempts,
                })?;
            out!(
                "queued job {} : sync {}/{}",
                id.unwrap_or_default(),
                job.org,
                job.connection
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = SyncOptions {
        entities: args.entities.clone(),
        full: args.full,
        dry_run: args.dry_run,
        ..Default::default()
    };
    let reports = run_all(&engine, &prepared, &opts).await?;
    print_reports(&reports, args.dry_run)?;
    let failed = reports.iter().any(RunReport::has_errors);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs each prepared connection with a spinner on a terminal, plain lines otherwise.
pub async fn run_all(
    engine: &Engine,
    prepared: &[ferry_framework::sync::Prepared],
    opts: &SyncOptions,
) -> Result<Vec<RunReport>> {
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let stop = on_signal(engine.interrupter());
    let line = |p: &ferry_framework::sync::Prepared, line: &str| {
        let label = format!("{}/{}", p.org.slug, p.config.name);
        match &bar {
            Some(b) => b.set_message(format!("{label}: {line}")),
            None => note!("{label}: {line}"),
        }
    };
    let out = engine.run_each(prepared, opts, &line).await;
    stop.abort();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}

/// SIGTERM or SIGINT stops the running sync cleanly: its run is recorded as
/// `interrupted` and its connection's lease released at once.
fn on_signal(stop: ferry_framework::sync::Interrupter) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        stop.interrupt();
    })
}

pub fn print_reports(reports: &[RunReport], dry_run: bool) -> std::io::Result<()> {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(vec![
        "org",
        "connection",
        "entity",
        "fetched",
        "hub +new",
        "hub ~upd",
        "app +new",
        "app ~upd",
        "skipped",
        "deferred",
        "conflicts",
        "errors",
    ]);
    for r in reports {
        for e in &r.entities {
            let c = &e.counts;
            t.add_row(vec![
                r.organization.clone(),
                r.connection.clone(),
                e.entity.clone(),
                c.fetched.to_string(),
                c.created_in_hub.to_string(),
                c.updated_in_hub.to_string(),
                c.created_in_app.to_string(),
                c.updated_in_app.to_string(),
                c.skipped.to_string(),
                c.deferred.to_string(),
                c.conflicts.to_string(),
                c.errors.to_string(),
            ]);
        }
    }
    out!("{t}")?;
    for r in reports {
        for e in &r.entities {
            if let Some(err) = &e.error {
                out!(
                    "{}/{} {}: FAILED: {err}",
                    r.organization,
                    r.connection,
                    e.entity
                )?;
            }
        }
        if dry_run {
            out!(
                "plan for {}/{} (dry run, nothing written):",
                r.organization,
                r.connection
            )?;
            for line in &r.plan {
                out!("  {line}")?;
            }
            if r.plan.is_empty() {
                out!("  nothing to do")?;
            }
        } else {
            out!(
                "{}/{}: {} ({} API calls)",
                r.organization,
                r.connection,
                r.status,
                r.api_calls
            )?;
        }
    }
    Ok(())
}
