//! Command-line parsing and dispatch. Exit codes: 0 success, 1 a sync finished with record
//! errors (or failed), 2 bad input or configuration.

/// `println!` that returns the error instead of panicking: output read by `head` or a pager
/// that quit ends the command quietly ([`main`] treats a broken pipe as done).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)
    }};
}

/// `eprintln!` that never panics: a closed stderr (`ferry sync 2>&1 | head -1`) must not
/// turn a message into a crash.
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

mod apikey;
mod bench;
mod bench_superoffice;
mod bench_writes;
mod conformance;
mod demo;
mod serve;
mod show;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ferry_framework::config::Settings;
use ferry_framework::error::is_input_error;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Two-way sync of business records between SaaS applications through a hub"
)]
pub struct Cli {
    /// Engine settings file.
    #[arg(
        long,
        global = true,
        env = "FERRY_SETTINGS",
        default_value = "settings.yml"
    )]
    pub settings: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create or upgrade Ferry's database schema.
    Migrate,
    /// Run due syncs once and exit (cron-friendly).
    Sync(sync::SyncArgs),
    /// Last run of each connection with per-entity counts and errors.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The id maps of an organization: which hub record is which application record.
    Idmaps(show::IdmapsArgs),
    /// Read the hub.
    Hub {
        #[command(subcommand)]
        command: HubCommand,
    },
    /// Registered connectors with their entities and capabilities.
    Connectors,
    /// Start a connector's fake application on loopback, seeded, and sync with it end to end.
    Demo(demo::DemoArgs),
    /// Serve a connector's fake application (a sandbox for integrators and the shipped config).
    Sandbox(demo::SandboxArgs),
    /// Run the HTTP server (webhooks, /healthz), a worker and the scheduler in one process.
    Serve(serve::ServeArgs),
    /// Run queued jobs (several workers share a PostgreSQL database).
    Worker,
    /// Keys of Ferry's incoming API (`/api/v1`, served by `ferry serve`).
    Apikey {
        #[command(subcommand)]
        command: apikey::ApiKeyCommand,
    },
    /// Run the conformance kit against a connector's sandbox: the standard hard cases,
    /// pass | fail | not applicable | waiting. Exits 1 when a case fails.
    Conformance(conformance::ConformanceArgs),
    /// Measure sync throughput, API calls and memory against the floor (fake WorkflowMax).
    Bench(bench::BenchArgs),
    /// Queued, running, done and dead jobs, newest first.
    Jobs {
        /// Only jobs in this state (queued, running, done, dead).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum HubCommand {
    /// Records of one entity, oldest change first.
    List {
        #[arg(long)]
        org: String,
        #[arg(long)]
        entity: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its own report of a failed write is an `eprintln!`, which panics on a closed stderr.
        .log_internal_errors(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            note!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // Read by `head` or a pager that quit: what was wanted was written.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            note!("error: {e:#}");
            if e.is::<ferry_framework::sync::Interrupted>() {
                // 128 + SIGINT, as shells report a command stopped by a signal.
                return ExitCode::from(130);
            }
            ExitCode::from(if is_input_error(&e) { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Connectors => show::connectors(),
        Command::Demo(args) => demo::demo(&cli.settings, args).await,
        Command::Bench(args) => bench::bench(&cli.settings, args).await,
        Command::Sandbox(args) => demo::sandbox(args).await,
        Command::Conformance(args) => conformance::conformance(&cli.settings, args).await,
        command => {
            let settings = Settings::load(&cli.settings)?;
            match command {
                Command::Migrate => {
                    let store = ferry_framework::store::Store::open(&settings.database_url())?;
                    let n = store.migrate()?;
                    out!("{n} migration(s) applied ({:?})", store.backend)?;
                    Ok(ExitCode::SUCCESS)
                }
                Command::Sync(args) => sync::sync(&settings, args).await,
                Command::Serve(args) => serve::serve(&settings, args).await,
                Command::Worker => serve::worker(&settings).await,
                Command::Apikey { command } => apikey::run(&settings, command),
                Command::Jobs {
                    status,
                    limit,
                    json,
                } => show::jobs(&settings, status.as_deref(), limit, json),
                Command::Status { json } => show::status(&settings, json),
                Command::Idmaps(args) => show::idmaps(&settings, args),
                Command::Hub {
                    command:
                        HubCommand::List {
                            org,
                            entity,
                            limit,
                            json,
                        },
                } => show::hub_list(&settings, &org, &entity, limit, json),
                _ => unreachable!("handled above"),
            }
        }
    }
}

/// Whether `e` is a write to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let kind = match c.downcast_ref::<serde_json::Error>() {
            Some(json) => json.io_error_kind(),
            None => c.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
