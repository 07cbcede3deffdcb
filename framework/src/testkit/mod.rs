//! The connector conformance kit: one suite of hard cases, each taken from a failure seen in
//! the field, run against any registered connector through its sandbox (its fake
//! application) and a real database. `ferry conformance <connector>` and every connector's
//! tests run it; an integrator checks a new connector the same way.
//!
//! The kit acts on the fake through [`AppUser`](crate::sandbox::AppUser) (as the
//! application's users would) and [`FakeControl`](crate::sandbox::FakeControl) (faults,
//! clock, call counts), and on the hub through the store, and asserts what each side ends up
//! holding. Each case gets a fresh fake and its own organization in the database; a case
//! the connector cannot take part in (by what its fake declares) is "not applicable".

mod bench;
mod cases;

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::connector::Connector;
use crate::sandbox::Waiting;

pub use bench::Bench;

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// What went wrong.
    Fail(String),
    /// Why the case does not apply to this connector.
    NotApplicable(String),
    /// A known failure the connector's issue will fix: the issue, then what failed.
    Waiting(String),
}

/// One case under one variant of the fake.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: &'static str,
    /// The fake's variant (a behaviour the contract leaves open); empty for the default.
    pub variant: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time of the case, in milliseconds.
    pub millis: u128,
}

/// The kit's verdict on one connector on one database.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub connector: String,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    pub results: Vec<CaseResult>,
}

impl Report {
    /// True when no case failed (not applicable and waiting cases do not fail the kit).
    pub fn passed(&self) -> bool {
        !self
            .results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Fail(_)))
    }

    /// How many cases ended each way: (pass, fail, not applicable, waiting).
    pub fn tally(&self) -> (usize, usize, usize, usize) {
        let mut t = (0, 0, 0, 0);
        for r in &self.results {
            match r.outcome {
                Outcome::Pass => t.0 += 1,
                Outcome::Fail(_) => t.1 += 1,
                Outcome::NotApplicable(_) => t.2 += 1,
                Outcome::Waiting(_) => t.3 += 1,
            }
        }
        t
    }

    /// The failures, one line each: `case [variant]: detail`.
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Fail(d) => Some(format!("{} [{}]: {d}", r.case, r.variant)),
                _ => None,
            })
            .collect()
    }
}

/// Where the kit runs.
#[derive(Debug, Clone)]
pub struct KitConfig {
    /// The directory holding the hub model and mappers (`config/hub.yml`, `mappers/`).
    pub base_dir: PathBuf,
    /// The database: a SQLite file path or a `postgres://` URL, migrated on first use.
    pub database_url: String,
    /// Only cases whose names contain this text.
    pub only: Option<String>,
}

/// A case: sets up what it needs on `bench` and checks what each side holds.
type CaseFn = for<'a> fn(
    &'a mut Bench,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), CaseError>> + Send + 'a>,
>;

/// Why a case did not pass.
#[derive(Debug)]
pub enum CaseError {
    Fail(String),
    NotApplicable(String),
}

impl<E: std::fmt::Display> From<E> for CaseError {
    fn from(e: E) -> Self {
        CaseError::Fail(format!("{e:#}"))
    }
}

/// Runs the whole suite against `connector`'s sandbox, under each variant its fake offers.
/// `Err` only when the kit cannot run at all (no sandbox, an unusable database).
pub async fn run(connector: &dyn Connector, cfg: &KitConfig) -> anyhow::Result<Report> {
    let sandbox = connector.sandbox().ok_or_else(|| {
        crate::input_error!(
            "connector {:?} has no sandbox to run the kit against",
            connector.name()
        )
    })?;
    // The hub model, the mappers and the database, checked once: a kit that cannot start
    // says so instead of failing every case.
    bench::engine(cfg).context(
        "the conformance kit needs the hub model (config/hub.yml), the mappers/ and a database",
    )?;
    let probe = sandbox.start("127.0.0.1:0".parse()?).await?;
    let Some(user) = probe.app.user() else {
        return Err(crate::input_error!(
            "the {} sandbox does not take part in the conformance kit (SandboxApp::user)",
            connector.name()
        ));
    };
    if let Some(only) = &cfg.only {
        if !cases::ALL.iter().any(|(c, _)| c.contains(only.as_str())) {
            return Err(crate::input_error!(
                "no conformance case is named like {only:?}; the cases are: {}",
                case_names().join(", ")
            ));
        }
    }
    let mut variants = vec![String::new()];
    variants.extend(user.variants().iter().map(|v| v.name.to_string()));
    let waiting = user.waiting();
    let mut results = Vec::new();
    for variant in &variants {
        for (case, f) in cases::ALL {
            if cfg.only.as_deref().is_some_and(|o| !case.contains(o)) {
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = match run_case(connector, cfg, case, variant, *f).await {
                Ended::Failed(d) => match waits(&waiting, case, variant, &d) {
                    Some(why) => Outcome::Waiting(format!("{why}; now: {d}")),
                    None => Outcome::Fail(d),
                },
                // A leaked secret is never waived.
                Ended::Leaked(d) => Outcome::Fail(d),
                Ended::Done(o) => o,
            };
            results.push(CaseResult {
                case,
                variant: variant.clone(),
                outcome,
                millis: started.elapsed().as_millis(),
            });
        }
    }
    Ok(Report {
        connector: connector.name().to_string(),
        backend: backend_of(&cfg.database_url),
        results,
    })
}

/// The declared reason a failure is waived: same case and variant, and the expected text.
fn waits(waiting: &[Waiting], case: &str, variant: &str, failure: &str) -> Option<&'static str> {
    waiting
        .iter()
        .find(|w| {
            w.case == case
                && (w.variant.is_empty() || w.variant == variant)
                && failure.contains(w.failure)
        })
        .map(|w| w.why)
}

fn backend_of(url: &str) -> &'static str {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "postgres"
    } else {
        "sqlite"
    }
}

/// How a case ended, before declared waits are applied.
enum Ended {
    Done(Outcome),
    Failed(String),
    Leaked(String),
}

async fn run_case(
    connector: &dyn Connector,
    cfg: &KitConfig,
    case: &'static str,
    variant: &str,
    f: CaseFn,
) -> Ended {
    let mut bench = match Bench::new(connector, cfg, case, variant).await {
        Ok(b) => b,
        Err(e) => return Ended::Failed(format!("could not set the case up: {e:#}")),
    };
    let limit = std::time::Duration::from_secs(120);
    let result = match tokio::time::timeout(limit, f(&mut bench)).await {
        Ok(r) => r,
        Err(_) => Err(CaseError::Fail(format!("did not finish in {limit:?}"))),
    };
    if let Some(leak) = bench.first_leak() {
        return Ended::Leaked(leak);
    }
    match result {
        Ok(()) => Ended::Done(Outcome::Pass),
        Err(CaseError::NotApplicable(why)) => Ended::Done(Outcome::NotApplicable(why)),
        Err(CaseError::Fail(d)) => Ended::Failed(d),
    }
}

/// The table `ferry conformance` prints: case | variant | result | detail.
pub fn table(report: &Report) -> Vec<[String; 4]> {
    report
        .results
        .iter()
        .map(|r| {
            let (word, detail) = match &r.outcome {
                Outcome::Pass => ("pass", String::new()),
                Outcome::Fail(d) => ("FAIL", d.clone()),
                Outcome::NotApplicable(d) => ("n/a", d.clone()),
                Outcome::Waiting(d) => ("waiting", d.clone()),
            };
            [
                r.case.to_string(),
                r.variant.clone(),
                word.to_string(),
                detail,
            ]
        })
        .collect()
}

/// The names of every standard case, in the order they run.
pub fn case_names() -> Vec<&'static str> {
    cases::ALL.iter().map(|(n, _)| *n).collect()
}
