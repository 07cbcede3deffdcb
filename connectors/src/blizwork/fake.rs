//! A faithful fake BlizWork server: processes with cases, every call a POST of JSON with the
//! API token as the last path segment, the `{resultCode, resultMessage, payload}` envelope
//! (errors as non-zero codes with HTTP 200), `init`, `exec` (forms fill fields and move the
//! case), `process/case-list` and `process/case`, and extension webhooks with one-time
//! handshake tokens confirmed by `utils/validatecall` in both documented forms.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset, Utc};
use ferry_framework::sandbox::{
    answer_stored, AppUser, CallKinds, ErrorBody, FakeControl, Fault, Sandbox, SandboxApp,
    SandboxHandle, Target, Variant, Waiting,
};
use serde_json::{json, Map, Value};

pub const API_TOKEN: &str = "sandbox0blizwork0api0token0000000";
pub const COMPANY_ID: &str = "5fe4a1f0f5d18203afbd6af2";
pub const USER: &str = "ferry@acme.example";
pub const PROCESS: &str = "sales-process";

#[derive(Clone)]
struct Case {
    fields: Map<String, Value>,
    environment: String,
    updated_on: DateTime<Utc>,
    history: Vec<Value>,
}

#[derive(Default)]
struct Process {
    forms: Vec<String>,
    cases: BTreeMap<i64, Case>,
    next: i64,
}

#[derive(Default)]
struct Inner {
    processes: BTreeMap<String, Process>,
    handshakes: HashSet<String>,
    /// The variant where case summaries and cases carry no top-level `updatedOn`.
    no_updated_on: bool,
}

/// Handle on the fake's state, shared with its server.
#[derive(Clone, Default)]
pub struct FakeBlizWork {
    inner: Arc<Mutex<Inner>>,
    control: Arc<FakeControl>,
}

/// BlizWork's envelope, for the shared faults.
struct BwErrors;

impl ErrorBody for BwErrors {
    fn status(&self, status: StatusCode, message: &str) -> Response {
        let mut r = envelope(99, message, json!({}));
        *r.status_mut() = status;
        r
    }

    /// BlizWork reports errors as HTTP 200 with a non-zero `resultCode` (BW-D).
    fn envelope(&self, message: &str) -> Response {
        envelope(9, message, json!({}))
    }
}

fn envelope(code: i64, message: &str, extra: Value) -> Response {
    let mut v = json!({"resultCode": code, "resultMessage": message});
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    Json(v).into_response()
}

/// Case `n` of `process`, to change.
fn case_mut<'a>(g: &'a mut Inner, process: &str, n: i64) -> Option<&'a mut Case> {
    g.processes.get_mut(process)?.cases.get_mut(&n)
}

/// A case as `process/case` answers it; times in the tenant's zone, with their offset.
fn case_doc(process: &str, n: i64, c: &Case, with_updated_on: bool, zone: FixedOffset) -> Value {
    let mut doc = json!({
        "companyId": COMPANY_ID, "environment": c.environment, "processSlug": process,
        "processVersion": 1, "caseNumber": n, "fields": c.fields, "history": c.history,
    });
    // Unverified (contract-findings §3, "change detection"): the library shows `updatedOn`
    // only inside `history[]`; the fake offers the top-level one and its absence.
    if with_updated_on {
        doc["updatedOn"] = json!(c.updated_on.with_timezone(&zone).to_rfc3339());
    }
    doc
}

impl FakeBlizWork {
    pub fn new() -> Self {
        let f = Self::default();
        f.define_process(PROCESS, &["qualify", "propose"]);
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        crate::serve(self.router(), addr).await
    }

    pub fn router(&self) -> Router {
        let mut r = Router::new();
        for op in ["init", "exec", "process/case-list", "process/case"] {
            let name = op.to_string();
            let handler =
                move |s: State<FakeBlizWork>, Path(token): Path<String>, b: Json<Value>| {
                    let name = name.clone();
                    async move { api(s, name, token, b).await }
                };
            r = r
                .route(&format!("/{op}/{{token}}"), post(handler.clone()))
                .route(&format!("/{op}/{{token}}/"), post(handler));
        }
        r.route("/utils/validatecall/{token}", post(validate_docs))
            .route("/utils/validatecall/{token}/", post(validate_docs))
            .route(
                "/utils/validatecall/{handshake}/{token}/",
                post(validate_library),
            )
            .route(
                "/utils/validatecall/{handshake}/{token}",
                post(validate_library),
            )
            .with_state(self.clone())
    }

    /// Connection settings pointing at a fake served on `addr`, syncing its sales process
    /// into hub Organizations.
    pub fn settings(addr: SocketAddr) -> Value {
        json!({
            "company_id": COMPANY_ID,
            "user_email": USER,
            "environment": format!("http://{addr}/"),
            "processes": {PROCESS: {"hub_entity": "Organization", "form_id": "qualify"}},
        })
    }

    pub fn secrets() -> BTreeMap<String, String> {
        BTreeMap::from([("api_token".to_string(), API_TOKEN.to_string())])
    }

    pub fn define_process(&self, id: &str, forms: &[&str]) {
        let mut g = self.lock();
        let p = g.processes.entry(id.into()).or_default();
        p.forms = forms.iter().map(|f| f.to_string()).collect();
    }

    /// Starts a case with these fields, as a BlizWork user would; returns its number.
    pub fn add_case(&self, process: &str, fields: Value) -> i64 {
        let mut g = self.lock();
        let p = g.processes.entry(process.into()).or_default();
        p.next += 1;
        let n = p.next;
        p.cases.insert(
            n,
            Case {
                fields: fields.as_object().cloned().unwrap_or_default(),
                environment: "production".into(),
                updated_on: self.control.now(),
                history: Vec::new(),
            },
        );
        n
    }

    /// Changes fields of a case as a user completing a form would.
    pub fn edit_case(&self, process: &str, n: i64, fields: Value) -> bool {
        let mut g = self.lock();
        let Some(c) = case_mut(&mut g, process, n) else {
            return false;
        };
        if let Value::Object(f) = fields {
            c.fields.extend(f);
        }
        c.updated_on = self.control.now();
        true
    }

    pub fn case(&self, process: &str, n: i64) -> Option<Value> {
        let g = self.lock();
        g.processes
            .get(process)?
            .cases
            .get(&n)
            .map(|c| case_doc(process, n, c, true, self.control.zone()))
    }

    pub fn cases(&self, process: &str) -> Vec<Value> {
        let g = self.lock();
        g.processes
            .get(process)
            .map(|p| {
                p.cases
                    .iter()
                    .map(|(n, c)| case_doc(process, *n, c, true, self.control.zone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Calls by operation (`init`, `exec`, `process/case-list`, `process/case`,
    /// `validatecall`).
    pub fn calls(&self, op: &str) -> u64 {
        self.control.calls(op)
    }

    /// Serves `fault` for the next request `target` matches (`Target::Kind("exec")`...).
    pub fn fail_next(&self, target: Target, fault: Fault) {
        self.control.fail_next(target, fault);
    }

    /// `init` plus `exec`: the writes.
    pub fn writes(&self) -> u64 {
        self.calls("init") + self.calls("exec")
    }

    /// The body of an extension call for a case, with a fresh one-time handshake token
    /// BlizWork will confirm once.
    pub fn extension_call(&self, process: &str, case: i64, environment: &str) -> Value {
        let token = uuid::Uuid::new_v4().simple().to_string()[..24].to_string();
        self.lock().handshakes.insert(token.clone());
        json!({
            "environment": environment, "processId": process, "processVersion": 1,
            "caseNumber": case, "handshakeToken": token,
        })
    }
}

async fn api(
    State(fake): State<FakeBlizWork>,
    op: String,
    token: String,
    Json(body): Json<Value>,
) -> Response {
    fake.control.receive(&op, "process/case-list");
    if token != API_TOKEN {
        return envelope(1, "Invalid or expired API token", json!({}));
    }
    let after = match fake.control.serve_fault(&op, "", &BwErrors).await {
        Ok(after) => after,
        Err(r) => return r,
    };
    let (answer, extra) = match run_op(&fake, &op, &body) {
        Ok(answer) => answer,
        Err(refusal) => return *refusal,
    };
    answer_stored(after, extra, &BwErrors, |extra| envelope(0, answer, extra)).await
}

/// Performs one operation; `Ok` is the success message and the envelope's other members.
fn run_op(
    fake: &FakeBlizWork,
    op: &str,
    body: &Value,
) -> Result<(&'static str, Value), Box<Response>> {
    let (now, zone) = (fake.control.now(), fake.control.zone());
    let mut g = fake.lock();
    let with_updated_on = !g.no_updated_on;
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if text("userId").is_empty() {
        return Err(Box::new(envelope(2, "userId is required", json!({}))));
    }
    let process_id = if op == "init" || op == "exec" {
        text("workflowId")
    } else {
        text("processId")
    };
    if (op == "init" || op == "exec") && text("companyId") != COMPANY_ID {
        return Err(Box::new(envelope(
            2,
            "The user has no permission in this company",
            json!({}),
        )));
    }
    let Some(p) = g.processes.get_mut(&process_id) else {
        return Err(Box::new(envelope(
            3,
            &format!("Process {process_id:?} not found"),
            json!({}),
        )));
    };
    let number = body.get("caseNumber").and_then(Value::as_i64);
    match op {
        "init" => {
            p.next += 1;
            let n = p.next;
            p.cases.insert(
                n,
                Case {
                    fields: Map::new(),
                    environment: body
                        .get("environment")
                        .and_then(Value::as_str)
                        .unwrap_or("production")
                        .into(),
                    updated_on: now,
                    history: Vec::new(),
                },
            );
            Ok(("Case started", json!({"caseNumber": n})))
        }
        "exec" => {
            let form = text("formId");
            if !p.forms.contains(&form) {
                return Err(Box::new(envelope(
                    4,
                    &format!("Form {form:?} is not an activity of {process_id}"),
                    json!({}),
                )));
            }
            let forms = p.forms.clone();
            let Some(c) = number.and_then(|n| p.cases.get_mut(&n)) else {
                return Err(Box::new(envelope(3, "Case not found", json!({}))));
            };
            if let Some(Value::Object(data)) = body.get("formData") {
                for (k, v) in data {
                    c.fields.insert(k.clone(), v.clone());
                }
            }
            let next = body
                .get("nextFormId")
                .and_then(Value::as_str)
                .filter(|f| forms.contains(&f.to_string()));
            c.updated_on = now;
            c.history.push(json!({
                "updatedBy": text("userId"), "updatedOn": c.updated_on.with_timezone(&zone).to_rfc3339(),
                "currentActivity": {"formId": form}, "nextActivity": {"formId": next.unwrap_or(&form)},
            }));
            Ok(("Activity executed", json!({})))
        }
        "process/case-list" => {
            let list: Vec<Value> = p
                .cases
                .iter()
                .map(|(n, c)| {
                    let mut row = json!({"caseNumber": n, "environment": c.environment});
                    if with_updated_on {
                        row["updatedOn"] = json!(c.updated_on.with_timezone(&zone).to_rfc3339());
                    }
                    row
                })
                .collect();
            Ok(("OK", json!({"payload": list})))
        }
        "process/case" => match number.and_then(|n| p.cases.get(&n).map(|c| (n, c))) {
            Some((n, c)) => {
                let doc = case_doc(&process_id, n, c, with_updated_on, zone);
                Ok(("OK", json!({ "payload": doc })))
            }
            None => Err(Box::new(envelope(3, "Case not found", json!({})))),
        },
        _ => Err(Box::new(envelope(9, "Unknown operation", json!({})))),
    }
}

fn consume(fake: &FakeBlizWork, handshake: &str, token: &str) -> Response {
    fake.control.count("validatecall");
    let mut g = fake.lock();
    if token != API_TOKEN {
        return envelope(2, "Invalid API token", json!({}));
    }
    // One use only.
    if g.handshakes.remove(handshake) {
        envelope(0, "Valid call", json!({}))
    } else {
        envelope(1, "Invalid call", json!({}))
    }
}

async fn validate_docs(
    State(fake): State<FakeBlizWork>,
    Path(token): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let handshake = body
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    consume(&fake, &handshake, &token)
}

async fn validate_library(
    State(fake): State<FakeBlizWork>,
    Path((handshake, token)): Path<(String, String)>,
) -> Response {
    consume(&fake, &handshake, &token)
}

/// `ferry sandbox blizwork` and the demo.
pub struct FakeSandbox;

#[async_trait]
impl Sandbox for FakeSandbox {
    async fn start(&self, addr: SocketAddr) -> anyhow::Result<SandboxHandle> {
        let fake = FakeBlizWork::new();
        let bound = fake.serve(addr).await?;
        Ok(SandboxHandle {
            addr: bound,
            settings: FakeBlizWork::settings(bound),
            secrets: FakeBlizWork::secrets(),
            rate_limit: None,
            app: Arc::new(fake),
        })
    }
}

impl SandboxApp for FakeBlizWork {
    fn seed_demo(&self) {
        self.add_case(PROCESS, json!({"company_name": "Tidewater Marine AS", "website": "https://tidewater.example", "industry": "Shipping"}));
    }

    fn user_edit(&self) -> String {
        let first = self
            .cases(PROCESS)
            .first()
            .and_then(|c| c["caseNumber"].as_i64());
        match first {
            Some(n) => {
                self.edit_case(PROCESS, n, json!({"industry": "Offshore"}));
                format!("set industry of BlizWork case {n} to \"Offshore\"")
            }
            None => "nothing to edit".into(),
        }
    }

    fn describe(&self) -> Vec<String> {
        self.cases(PROCESS)
            .iter()
            .map(|c| format!("case {} {}", c["caseNumber"], c["fields"]))
            .collect()
    }

    fn write_calls(&self) -> u64 {
        self.writes()
    }

    fn control(&self) -> &FakeControl {
        &self.control
    }

    fn user(&self) -> Option<&dyn AppUser> {
        Some(self)
    }
}

const NO_UPDATED_ON: &str = "no-top-level-updatedOn";

/// The conformance kit's user: cases of the sales process (hub Organizations).
impl AppUser for FakeBlizWork {
    fn entity(&self) -> &'static str {
        PROCESS
    }

    /// `process/case-list` answers every case at once (LIB: no paging parameters).
    fn pages(&self) -> bool {
        false
    }

    fn call_kinds(&self) -> CallKinds {
        CallKinds {
            list: "process/case-list",
            reads: &["process/case"],
            create: "init",
            writes: &["init", "exec"],
        }
    }

    fn create(&self, name: &str) -> String {
        self.add_case(PROCESS, json!({ "company_name": name }))
            .to_string()
    }

    fn rename(&self, id: &str, name: &str) -> bool {
        let n = id.parse().unwrap_or(-1);
        self.edit_case(PROCESS, n, json!({ "company_name": name }))
    }

    fn delete(&self, id: &str) -> bool {
        let n: i64 = id.parse().unwrap_or(-1);
        let mut g = self.lock();
        g.processes
            .get_mut(PROCESS)
            .is_some_and(|p| p.cases.remove(&n).is_some())
    }

    fn names(&self) -> Vec<(String, String)> {
        self.cases(PROCESS)
            .iter()
            .map(|c| {
                let name = c["fields"]["company_name"].as_str().unwrap_or_default();
                (c["caseNumber"].to_string(), name.to_string())
            })
            .collect()
    }

    /// Fields of the case no mapping names.
    fn add_unmapped(&self, id: &str) -> bool {
        let n = id.parse().unwrap_or(-1);
        self.edit_case(
            PROCESS,
            n,
            json!({"budget": 125000, "notes": "Met at the fair; call back in May"}),
        )
    }

    fn unmapped_intact(&self, id: &str) -> Result<(), String> {
        let c = self
            .case(PROCESS, id.parse().unwrap_or(-1))
            .ok_or("the case is gone")?;
        let f = &c["fields"];
        if f["budget"] != json!(125000) || f["notes"] != json!("Met at the fair; call back in May")
        {
            return Err(format!("the unmapped fields are now {f}"));
        }
        Ok(())
    }

    /// A company name that is not text.
    fn corrupt(&self, id: &str) -> bool {
        let mut g = self.lock();
        let Some(c) = case_mut(&mut g, PROCESS, id.parse().unwrap_or(-1)) else {
            return false;
        };
        c.fields
            .insert("company_name".into(), json!(["not", "a", "name"]));
        true
    }

    fn variants(&self) -> Vec<Variant> {
        vec![Variant {
            name: NO_UPDATED_ON,
            about: "case summaries and cases carry no top-level updatedOn, only history[] \
                    (unverifiable: contract-findings §3, change detection)",
        }]
    }

    fn set_variant(&self, name: &str) -> bool {
        let known = name == NO_UPDATED_ON;
        self.lock().no_updated_on = known;
        known
    }

    fn waiting(&self) -> Vec<Waiting> {
        const READS: &str = "issue 17: each listed case is read with process/case, so cases \
                             a listing meets again are read again";
        const INIT: &str = "issue 17 item 10 (creates are not idempotent): a lost init answer \
                            leaves an empty case that the next run reads as a record";
        let w = |case, failure, why| Waiting {
            case,
            variant: "",
            failure,
            why,
        };
        vec![
            w("idle_run_writes_nothing", "records one by one", READS),
            w(
                "lost_create_answer_error",
                "required field `name` is missing",
                INIT,
            ),
            w(
                "lost_create_answer_timeout",
                "required field `name` is missing",
                INIT,
            ),
        ]
    }

    /// Without `updatedOn` there are no times to read in any zone.
    fn reports_times(&self) -> bool {
        !self.lock().no_updated_on
    }
}
