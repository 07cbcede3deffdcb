//! Read-only commands: `connectors`, `status`, `idmaps`, `hub list`.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use ferry_framework::config::Settings;
use ferry_framework::connector::registry;
use ferry_framework::input_error;
use ferry_framework::store::idmaps::IdMapFilter;
use ferry_framework::store::runs::cluster_runs;
use ferry_framework::store::Store;
use ferry_framework::sync::EntityReport;
use serde_json::json;

pub(super) fn table(header: Vec<&str>) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    t.set_header(header);
    t
}

fn open(settings: &Settings) -> Result<Store> {
    Store::open_and_migrate(&settings.database_url())
}

fn org_id(store: &Store, slug: &str) -> Result<i64> {
    Ok(store
        .org_by_slug(slug)?
        .ok_or_else(|| {
            input_error!("no organization {slug:?} in the database (has it synced yet?)")
        })?
        .id)
}

pub fn connectors() -> Result<ExitCode> {
    let mut t = table(vec![
        "connector",
        "entity",
        "hub entity",
        "external entity",
        "capabilities",
        "sandbox",
    ]);
    for c in registry() {
        if c.entities().is_empty() {
            t.add_row(vec![
                c.name().to_string(),
                "(set by each connection's settings)".to_string(),
                String::new(),
                String::new(),
                String::new(),
                if c.sandbox().is_some() { "yes" } else { "no" }.to_string(),
            ]);
        }
        for entity in c.entities() {
            for e in entity.parts() {
                let name = if e.name == entity.name() {
                    e.name.to_string()
                } else {
                    format!("{} / {}", entity.name(), e.name)
                };
                t.add_row(vec![
                    c.name().to_string(),
                    name,
                    e.hub_entity.to_string(),
                    e.external_entity.to_string(),
                    e.capabilities.describe(),
                    if c.sandbox().is_some() { "yes" } else { "no" }.to_string(),
                ]);
            }
        }
    }
    out!("{t}")?;
    Ok(ExitCode::SUCCESS)
}

pub fn status(settings: &Settings, json_out: bool) -> Result<ExitCode> {
    let store = open(settings)?;
    // (org, connection, connector, last run, its per-entity reports)
    let mut rows = Vec::new();
    let window = chrono::Duration::minutes(settings.runtime.run_cluster_minutes);
    for org in store.orgs()? {
        for conn in store.connections_of(org.id)? {
            let runs = store.runs_of(conn.id, 200)?;
            let groups = cluster_runs(&runs, window);
            let last = runs.into_iter().next();
            let entities: Vec<EntityReport> = last
                .as_ref()
                .and_then(|r| serde_json::from_str(&r.counts).ok())
                .unwrap_or_default();
            let group = groups.into_iter().next();
            rows.push((
                org.slug.clone(),
                conn.name,
                conn.connector,
                last,
                entities,
                group,
            ));
        }
    }
    if json_out {
        let v: Vec<_> = rows
            .iter()
            .map(|(org, conn, connector, last, entities, group)| {
                json!({
                    "organization": org,
                    "connection": conn,
                    "connector": connector,
                    "sync_run": group.as_ref().map(|g| json!({
                        "status": g.status,
                        "runs": g.runs,
                        "by_status": g.by_status,
                        "first_started": g.first_started.and_utc().to_rfc3339(),
                        "last_started": g.last_started.and_utc().to_rfc3339(),
                    })),
                    "last_run": last.as_ref().map(|r| json!({
                        "id": r.id,
                        "status": r.status,
                        "started_at": r.started_at.and_utc().to_rfc3339(),
                        "finished_at": r.finished_at.map(|t| t.and_utc().to_rfc3339()),
                        "message": r.message,
                    })),
                    "entities": entities,
                })
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(vec![
        "org",
        "connection",
        "sync run (grouped)",
        "last run",
        "status",
        "entity",
        "fetched",
        "writes",
        "deferred",
        "conflicts",
        "ambiguous",
        "errors",
    ]);
    for (org, conn, _, last, entities, group) in rows {
        let when = last
            .as_ref()
            .map_or("never".to_string(), |r| r.started_at.and_utc().to_rfc3339());
        let status = last.as_ref().map_or("-".to_string(), |r| r.status.clone());
        let grouped = group.map_or("-".to_string(), |g| {
            let parts: Vec<String> = g
                .by_status
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            format!("{} ({} runs: {})", g.status, g.runs, parts.join(", "))
        });
        let head = vec![org, conn, grouped, when, status];
        if entities.is_empty() {
            t.add_row(head.clone());
        }
        for e in entities {
            let mut row = head.clone();
            row.extend([
                e.entity.clone(),
                e.counts.fetched.to_string(),
                e.counts.writes().to_string(),
                e.counts.deferred.to_string(),
                e.counts.conflicts.to_string(),
                e.counts.ambiguous.to_string(),
                match e.error {
                    Some(err) => format!("{} ({err})", e.counts.errors),
                    None => e.counts.errors.to_string(),
                },
            ]);
            t.add_row(row);
        }
    }
    out!("{t}")?;
    Ok(ExitCode::SUCCESS)
}

/// `ferry idmaps`: an organization may have millions of id maps, so they are read a page at
/// a time and printed as they come.
#[derive(clap::Args, Debug)]
pub struct IdmapsArgs {
    #[arg(long)]
    org: String,
    /// Only the id maps of this hub entity.
    #[arg(long)]
    entity: Option<String>,
    /// Only the id maps whose last attempt left an error (what an operator looks into).
    #[arg(long)]
    errors: bool,
    /// The conflict log instead: every field both sides changed to different values, with
    /// both values, both edit times and the side that won, newest first.
    #[arg(long, conflicts_with = "errors")]
    conflicts: bool,
    /// At most this many [default: 1000 for the table, all of them with --json].
    #[arg(long)]
    limit: Option<usize>,
    /// A JSON array, written as it is read.
    #[arg(long)]
    json: bool,
}

/// Id maps read per query.
const IDMAP_PAGE: usize = 1000;

pub fn idmaps(settings: &Settings, args: IdmapsArgs) -> Result<ExitCode> {
    write_idmaps(settings, args)
}

/// `ferry idmaps --conflicts`: the organization's conflict log, newest first.
fn write_conflicts(store: &Store, org: i64, args: &IdmapsArgs) -> Result<ExitCode> {
    let conns = store.connections_of(org)?;
    let names: HashMap<i64, String> = conns.iter().map(|c| (c.id, c.name.clone())).collect();
    let ids: Vec<i64> = conns.iter().map(|c| c.id).collect();
    let limit = args.limit.unwrap_or(1000) as i64;
    let rows: Vec<_> = store
        .conflicts_of(&ids, limit)?
        .into_iter()
        .filter(|r| args.entity.as_deref().is_none_or(|e| e == r.hub_entity))
        .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(vec![
        "connection",
        "hub entity",
        "hub id",
        "external id",
        "field",
        "hub value (time)",
        "application value (time)",
        "winner",
        "settled at",
    ]);
    let time =
        |t: Option<chrono::NaiveDateTime>| t.map_or("?".into(), |t| t.and_utc().to_rfc3339());
    for r in rows {
        t.add_row(vec![
            names.get(&r.connection_id).cloned().unwrap_or_default(),
            r.hub_entity,
            r.hub_id,
            r.external_id,
            r.field,
            format!("{} ({})", r.hub_value, time(r.hub_time)),
            format!("{} ({})", r.external_value, time(r.external_time)),
            r.winner,
            r.created_at.and_utc().to_rfc3339(),
        ]);
    }
    writeln!(out, "{t}")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn write_idmaps(settings: &Settings, args: IdmapsArgs) -> Result<ExitCode> {
    let store = open(settings)?;
    let id = org_id(&store, &args.org)?;
    if args.conflicts {
        return write_conflicts(&store, id, &args);
    }
    let conns = store.connections_of(id)?;
    let names: HashMap<i64, String> = conns.iter().map(|c| (c.id, c.name.clone())).collect();
    let ids: Vec<i64> = conns.iter().map(|c| c.id).collect();
    let filter = IdMapFilter {
        connections: &ids,
        hub_entity: args.entity.as_deref(),
        errors_only: args.errors,
    };
    let limit = args
        .limit
        .unwrap_or(if args.json { usize::MAX } else { 1000 });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut t = table(vec![
        "connection",
        "hub entity",
        "hub id",
        "external",
        "external id",
        "state",
        "name",
        "last error or note",
    ]);
    let (mut after, mut shown) = (0, 0);
    if args.json {
        out.write_all(b"[")?;
    }
    while shown < limit {
        let want = (limit - shown).min(IDMAP_PAGE);
        let page = store.idmaps_after(&filter, after, want as i64)?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        for m in page {
            let connection = names.get(&m.connection_id).cloned().unwrap_or_default();
            if args.json {
                out.write_all(if shown == 0 { b"\n  " } else { b",\n  " })?;
                serde_json::to_writer(
                    &mut out,
                    &json!({
                        "connection": connection,
                        "hub_entity": m.hub_entity, "hub_id": m.hub_id,
                        "external_entity": m.external_entity, "external_id": m.external_id,
                        "state": m.state, "name": m.name, "retry_to": m.retry_to,
                        "last_error": m.last_error, "note": m.note(),
                    }),
                )?;
            } else {
                let text = |v: Option<String>| v.unwrap_or_default();
                let said = m.last_error.clone().or_else(|| m.note());
                t.add_row(vec![
                    connection,
                    m.hub_entity,
                    text(m.hub_id),
                    m.external_entity,
                    text(m.external_id),
                    m.state,
                    text(m.name),
                    text(said),
                ]);
            }
            shown += 1;
        }
    }
    if args.json {
        out.write_all(b"\n]\n")?;
    } else {
        writeln!(out, "{t}")?;
        let total = store.idmaps_count(&filter)?;
        if total as usize > shown {
            writeln!(
                out,
                "{shown} of {total} shown; --limit shows more, --json writes them all"
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn hub_list(
    settings: &Settings,
    org: &str,
    entity: &str,
    limit: usize,
    json_out: bool,
) -> Result<ExitCode> {
    let store = open(settings)?;
    let hub = ferry_framework::hub::HubModel::load(&settings.resolve(&settings.paths.hub_model))?;
    if hub.entity(entity).is_none() {
        return Err(input_error!(
            "no hub entity {entity:?} in {}",
            hub.source.display()
        ));
    }
    let id = org_id(&store, org)?;
    let recs = store.hub_list(id, entity, limit)?;
    if json_out {
        let v: Vec<_> = recs
            .iter()
            .map(|r| json!({"id": r.uid, "seq": r.seq, "updated_at": r.updated_at.to_rfc3339(), "data": r.data}))
            .collect();
        out!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(vec!["id", "seq", "updated", "data"]);
    for r in recs {
        t.add_row(vec![
            r.uid,
            r.seq.to_string(),
            r.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.data.to_string(),
        ]);
    }
    out!("{t}")?;
    Ok(ExitCode::SUCCESS)
}

pub fn jobs(
    settings: &Settings,
    status: Option<&str>,
    limit: usize,
    json_out: bool,
) -> Result<ExitCode> {
    let store = open(settings)?;
    let jobs = store.jobs(status, limit)?;
    let rows: Vec<_> = jobs
        .iter()
        .map(|j| json!({
            "id": j.id, "kind": j.kind, "status": j.status, "attempts": j.attempts,
            "max_attempts": j.max_attempts, "run_at": j.run_at.and_utc().to_rfc3339(),
            "payload": serde_json::from_str::<serde_json::Value>(&j.payload).unwrap_or_default(),
            "last_error": j.last_error, "lease_owner": j.lease_owner,
        }))
        .collect();
    if json_out {
        out!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(vec![
        "id",
        "kind",
        "status",
        "attempts",
        "run at",
        "payload",
        "last error",
    ]);
    for r in rows {
        t.add_row(vec![
            r["id"].to_string(),
            r["kind"].as_str().unwrap_or("").to_string(),
            r["status"].as_str().unwrap_or("").to_string(),
            format!("{}/{}", r["attempts"], r["max_attempts"]),
            r["run_at"].as_str().unwrap_or("").to_string(),
            r["payload"].to_string(),
            r["last_error"].as_str().unwrap_or("").to_string(),
        ]);
    }
    out!("{t}")?;
    Ok(ExitCode::SUCCESS)
}
