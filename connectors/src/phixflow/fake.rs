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
use ferry_framework::sandbox::{Sandbox, SandboxApp, SandboxHandle};
use serde_json::{json, Value};

use super::client::FERRY_ID;
use super::Mode;

pub const API_KEY: &str = "sandbox-phixflow-api-key";
pub const APPLICATION: &str = "Ferry";

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
    calls: HashMap<String, u64>,
    next: u64,
}

/// Handle on the fake's state, shared with its server.
#[derive(Clone, Default)]
pub struct FakePhixFlow {
    inner: Arc<Mutex<Inner>>,
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
        self.lock().calls.get(kind).copied().unwrap_or(0)
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
    let mut g = fake.lock();
    if let Some(refusal) = refused(&mut g, &headers, "trigger") {
        return refusal;
    }
    let record: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(result("Fail", "The body must be a JSON object")),
            )
                .into_response()
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
    let f = g.flows.entry(flow.clone()).or_default();
    let mode = f.mode;
    if outcome.is_ok() {
        let id = record[FERRY_ID].as_str().unwrap_or("").to_string();
        f.records.insert(id, record);
    }
    match mode {
        Mode::Wait => match outcome {
            Ok(()) => Json(result("Success", "1 record processed")).into_response(),
            Err(m) => Json(result("Fail", &m)).into_response(),
        },
        Mode::Poll => {
            g.next += 1;
            let id = format!("proc-{}", g.next);
            g.processes.insert(
                id.clone(),
                Process {
                    ready_at: Instant::now() + Duration::from_millis(120),
                    outcome,
                },
            );
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "Running", "processId": id})),
            )
                .into_response()
        }
    }
}

/// Counts the call; PhixFlow's refusal when it comes without the API key.
fn refused(g: &mut Inner, headers: &HeaderMap, call: &str) -> Option<Response> {
    *g.calls.entry(call.into()).or_default() += 1;
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(API_KEY);
    (!authorized).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(result("Fail", "Unauthorized")),
        )
            .into_response()
    })
}

async fn status(
    State(fake): State<FakePhixFlow>,
    headers: HeaderMap,
    Path(process): Path<String>,
) -> Response {
    let mut g = fake.lock();
    if let Some(refusal) = refused(&mut g, &headers, "status") {
        return refusal;
    }
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
}
