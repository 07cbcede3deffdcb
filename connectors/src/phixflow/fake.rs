//! A faithful fake PhixFlow server: actionflow API endpoints (`…/api/1/action/<App>/<Flow>/
//! trigger` and the v10 form without the application) that store the records they receive
//! (upserted by Ferry's id), "wait for result" and "poll for result" modes with a process
//! status endpoint, an API key in a header, and an actionflow that fails (as its `error()`
//! would) any record holding the text `FAIL`. Used by tests, the demo and sandboxes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_framework::sandbox::{
    answer_stored, AfterStore, AppUser, CallKinds, ErrorBody, FakeControl, Fault, Sandbox,
    SandboxApp, SandboxHandle, Target,
};
use serde_json::{json, Value};

use super::client::FERRY_ID;
use super::Mode;

pub const API_KEY: &str = "sandbox-phixflow-api-key";
pub const APPLICATION: &str = "Ferry";
/// The actionflow the sandbox's organizations go to.
pub const ORGANIZATION_FLOW: &str = "Sync Organizations";

#[derive(Default)]
struct Flow {
    mode: Mode,
    records: BTreeMap<String, Value>,
}

struct Process {
    ready_at: Instant,
    outcome: Result<(), String>,
}

#[derive(Default)]
struct Inner {
    flows: HashMap<String, Flow>,
    processes: HashMap<String, Process>,
    next: u64,
}

/// Handle on the fake's state, shared with its server.
#[derive(Clone, Default)]
pub struct FakePhixFlow {
    inner: Arc<Mutex<Inner>>,
    control: Arc<FakeControl>,
}

/// PhixFlow's result JSON, for the shared faults.
struct PfErrors;

impl ErrorBody for PfErrors {
    fn status(&self, status: StatusCode, message: &str) -> Response {
        (status, Json(result("Fail", message))).into_response()
    }
}

impl FakePhixFlow {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        crate::serve(self.router(), addr).await
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/phixflow/api/1/action/{app}/{flow}/trigger",
                post(|s, h, Path((_app, flow)): Path<(String, String)>, b| trigger(s, h, flow, b)),
            )
            .route(
                "/phixflow/api/1/action/{flow}/trigger",
                post(|s, h, Path(flow): Path<String>, b| trigger(s, h, flow, b)),
            )
            .route("/phixflow/api/1/action/status/{process}", get(status))
            .with_state(self.clone())
    }

    /// Connection settings pointing at a fake served on `addr`.
    pub fn settings(addr: SocketAddr, mode: Mode) -> Value {
        json!({
            "base_url": format!("http://{addr}/phixflow/"),
            "application": APPLICATION,
            "actionflows": {"person": "Sync People", "organization": "Sync Organizations"},
            "mode": if mode == Mode::Poll { "poll" } else { "wait" },
            "poll_interval_ms": 50,
        })
    }

    pub fn secrets() -> BTreeMap<String, String> {
        BTreeMap::from([("api_key".to_string(), API_KEY.to_string())])
    }

    /// Sets an actionflow's API mode (as its properties would).
    pub fn set_mode(&self, flow: &str, mode: Mode) {
        self.lock().flows.entry(flow.into()).or_default().mode = mode;
    }

    /// Records an actionflow holds, by Ferry id.
    pub fn records(&self, flow: &str) -> Vec<Value> {
        self.lock()
            .flows
            .get(flow)
            .map(|f| f.records.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Calls by kind: `trigger`, `status`.
    pub fn calls(&self, kind: &str) -> u64 {
        self.control.calls(kind)
    }

    /// Serves `fault` for the next request `target` matches (`Target::Kind("trigger")`).
    pub fn fail_next(&self, target: Target, fault: Fault) {
        self.control.fail_next(target, fault);
    }
}

fn holds_fail(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("FAIL"),
        Value::Object(m) => m.values().any(holds_fail),
        Value::Array(a) => a.iter().any(holds_fail),
        _ => false,
    }
}

fn result(status: &str, message: &str) -> Value {
    json!({"status": status, "message": message})
}

async fn trigger(
    State(fake): State<FakePhixFlow>,
    headers: HeaderMap,
    flow: String,
    body: axum::body::Bytes,
) -> Response {
    let after = match gate(&fake, &headers, "trigger").await {
        Ok(after) => after,
        Err(refusal) => return refusal,
    };
    let (status, answer) = match store(&fake, &flow, &body) {
        Ok(answer) => answer,
        Err(refusal) => return *refusal,
    };
    answer_stored(after, answer, &PfErrors, |v| {
        (status, Json(v)).into_response()
    })
    .await
}

/// Runs the actionflow on one record: stores it unless the flow fails it; answers as the
/// flow's mode says (the result, or a process to poll).
fn store(
    fake: &FakePhixFlow,
    flow: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), Box<Response>> {
    let record: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Err(Box::new(
                PfErrors.status(StatusCode::BAD_REQUEST, "The body must be a JSON object"),
            ))
        }
    };
    let outcome = if holds_fail(&record) {
        Err(format!(
            "error(): record {} rejected by the actionflow",
            record[FERRY_ID].as_str().unwrap_or("?")
        ))
    } else {
        Ok(())
    };
    let mut g = fake.lock();
    let f = g.flows.entry(flow.to_string()).or_default();
    let mode = f.mode;
    if outcome.is_ok() {
        let id = record[FERRY_ID].as_str().unwrap_or("").to_string();
        f.records.insert(id, record);
    }
    Ok(match mode {
        Mode::Wait => match outcome {
            Ok(()) => (StatusCode::OK, result("Success", "1 record processed")),
            Err(m) => (StatusCode::OK, result("Fail", &m)),
        },
        Mode::Poll => {
            g.next += 1;
            let id = format!("proc-{}", g.next);
            let ready_at = Instant::now() + Duration::from_millis(120);
            g.processes
                .insert(id.clone(), Process { ready_at, outcome });
            let answer = json!({"status": "Running", "processId": id});
            (StatusCode::ACCEPTED, answer)
        }
    })
}

/// Counts the call; PhixFlow's refusal when it comes without the API key, or an injected
/// fault.
async fn gate(
    fake: &FakePhixFlow,
    headers: &HeaderMap,
    call: &str,
) -> Result<Option<AfterStore>, Response> {
    fake.control.count(call);
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(API_KEY);
    if !authorized {
        return Err(PfErrors.status(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    fake.control.serve_fault(call, "", &PfErrors).await
}

async fn status(
    State(fake): State<FakePhixFlow>,
    headers: HeaderMap,
    Path(process): Path<String>,
) -> Response {
    if let Err(refusal) = gate(&fake, &headers, "status").await {
        return refusal;
    }
    let g = fake.lock();
    let Some(p) = g.processes.get(&process) else {
        return (
            StatusCode::NOT_FOUND,
            Json(result("Fail", &format!("No process {process}"))),
        )
            .into_response();
    };
    let body = if Instant::now() < p.ready_at {
        json!({"processId": process, "status": "Running"})
    } else {
        match &p.outcome {
            Ok(()) => {
                json!({"processId": process, "status": "Success", "message": "1 record processed"})
            }
            Err(m) => json!({"processId": process, "status": "Fail", "message": m}),
        }
    };
    Json(body).into_response()
}

/// `ferry sandbox phixflow` and the demo.
pub struct FakeSandbox;

#[async_trait]
impl Sandbox for FakeSandbox {
    async fn start(&self, addr: SocketAddr) -> anyhow::Result<SandboxHandle> {
        let fake = FakePhixFlow::new();
        let bound = fake.serve(addr).await?;
        Ok(SandboxHandle {
            addr: bound,
            settings: FakePhixFlow::settings(bound, Mode::Wait),
            secrets: FakePhixFlow::secrets(),
            rate_limit: None,
            app: Arc::new(fake),
        })
    }
}

impl SandboxApp for FakePhixFlow {
    fn seed_demo(&self) {}

    fn user_edit(&self) -> String {
        "nothing: PhixFlow only receives records".into()
    }

    fn describe(&self) -> Vec<String> {
        let g = self.lock();
        let mut out = Vec::new();
        for (name, f) in &g.flows {
            for r in f.records.values() {
                let label = ["name", "email"]
                    .iter()
                    .find_map(|k| r.get(*k).and_then(Value::as_str))
                    .unwrap_or("?");
                out.push(format!("actionflow {name:?} received {label:?}"));
            }
        }
        out.sort();
        out
    }

    fn write_calls(&self) -> u64 {
        self.calls("trigger")
    }

    fn control(&self) -> &FakeControl {
        &self.control
    }

    fn user(&self) -> Option<&dyn AppUser> {
        Some(self)
    }
}

/// The conformance kit's user: PhixFlow only receives records, so the kit reads what the
/// organization actionflow received and acts on nothing.
impl AppUser for FakePhixFlow {
    fn entity(&self) -> &'static str {
        "organization"
    }

    fn readable(&self) -> bool {
        false
    }

    fn call_kinds(&self) -> CallKinds {
        CallKinds {
            list: "list",
            reads: &[],
            create: "trigger",
            writes: &["trigger"],
        }
    }

    fn create(&self, _name: &str) -> String {
        String::new()
    }

    fn rename(&self, _id: &str, _name: &str) -> bool {
        false
    }

    fn names(&self) -> Vec<(String, String)> {
        self.records(ORGANIZATION_FLOW)
            .iter()
            .map(|r| {
                let id = r[FERRY_ID].as_str().unwrap_or_default().to_string();
                (id, r["name"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    fn reports_times(&self) -> bool {
        false
    }
}
