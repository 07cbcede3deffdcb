//! `ferry conformance <connector>`: the conformance kit against a connector's sandbox, on a
//! throwaway database, printed as a table (or JSON).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use ferry_framework::store::testing::{fresh_postgres, ScratchDb};
use ferry_framework::testkit::{self, KitConfig};
use ferry_framework::{connector, input_error};

#[derive(Args)]
pub struct ConformanceArgs {
    /// The connector to check (see `ferry connectors`).
    pub connector: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A PostgreSQL server URL to run on instead of a SQLite file: the kit creates a
    /// throwaway database there and drops it afterwards.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Only the cases whose names contain this text.
    #[arg(long)]
    pub case: Option<String>,
}

pub async fn conformance(settings_path: &Path, args: ConformanceArgs) -> Result<ExitCode> {
    let c = connector::find(&args.connector)
        .ok_or_else(|| input_error!("no connector named {:?}", args.connector))?;
    let base_dir = settings_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let dir = std::env::temp_dir().join(format!("ferry-conformance-{}", std::process::id()));
    let db = match &args.postgres {
        Some(admin) => ScratchDb::Postgres(fresh_postgres(admin)?),
        None => {
            std::fs::create_dir_all(&dir)?;
            ScratchDb::File(dir.join("kit.db").to_string_lossy().into_owned())
        }
    };
    let cfg = KitConfig {
        base_dir,
        database_url: db.to_string(),
        only: args.case.clone(),
    };
    // Ctrl-C still drops the throwaway database.
    let report = tokio::select! {
        r = testkit::run(c.as_ref(), &cfg) => r,
        _ = tokio::signal::ctrl_c() => {
            drop(db);
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(ExitCode::from(130));
        }
    };
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let mut t = super::show::table(vec!["case", "variant", "result", "detail"]);
        for row in testkit::table(&report) {
            t.add_row(row.to_vec());
        }
        out!("{} on {}\n{t}", report.connector, report.backend)?;
        let (pass, fail, na, waiting) = report.tally();
        out!(
            "{} cases: {pass} passed, {fail} failed, {na} not applicable, {waiting} waiting \
             for their connector's issue",
            report.results.len()
        )?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
