//! A faithful fake WorkflowMax (BlueRock) tenant: Clients with their Contacts, custom field
//! definitions and values, the XML envelope with `<Status>`, errors given as HTTP 200 with
//! `<Status>ERROR</Status>`, OAuth with rotating refresh tokens and JWT access tokens carrying
//! `org_ids`, the `account_id` header, `modifiedsince` and `page`/`pagesize`, and the
//! published rate limits (concurrent, per minute, per day) answered with 429. Strict where
//! the contract is: bodies must be XML 1.0 (no U+000B), a contact update's job title is a
//! `Positions` item. Faults, clock and call counts through the shared [`FakeControl`]. Used
//! by the tests, `ferry demo`, `ferry sandbox workflowmax` and the conformance kit.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use ferry_framework::sandbox::{
    answer_stored, bearer_token, AfterStore, AppUser, CallKinds, ErrorBody, FakeControl, Sandbox,
    SandboxApp, SandboxHandle, Waiting,
};
use serde_json::{json, Map, Value};

use super::xml;
use super::ORDER;

pub const ORG_ID: &str = "5d7c1a7e-0000-4000-8000-00000000f3a1";
pub const CLIENT_ID: &str = "ferry-sandbox";
pub const CLIENT_SECRET: &str = "sandbox-client-secret";
pub const REFRESH_TOKEN: &str = "sandbox-wfm-refresh-token";

/// The tenant's call limits; a call over any of them is answered 429.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub concurrent: usize,
    pub per_window: usize,
    pub window: Duration,
    pub per_day: usize,
}

impl Default for Limits {
    /// BlueRock's published limits: 5 concurrent, 60 per minute, 5000 per day.
    fn default() -> Self {
        Limits {
            concurrent: 5,
            per_window: 60,
            window: Duration::from_secs(60),
            per_day: 5000,
        }
    }
}

pub use ferry_framework::sandbox::{Fault, Target};

/// A custom field definition of the account.
#[derive(Debug, Clone)]
pub struct Definition {
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub link_url: Option<String>,
    pub use_client: bool,
    pub use_contact: bool,
    pub value_element: String,
}

#[derive(Debug, Clone)]
struct Client {
    uuid: String,
    fields: Map<String, Value>,
    contacts: Vec<String>,
    custom: BTreeMap<String, String>,
    modified: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Contact {
    client: String,
    fields: Map<String, Value>,
    custom: BTreeMap<String, String>,
}

/// The filtered list of the last paged listing, kept while nothing changes so any page of
/// it is answered in about the same time, as the real API answers any page (its keys in
/// list order). A change to any client (`edits`) or a new one (`next`) makes it stale.
#[derive(Clone)]
struct Listing {
    since: Option<DateTime<Utc>>,
    stamp: (u64, u64),
    keys: Arc<Vec<u64>>,
}

#[derive(Default)]
struct Inner {
    /// By creation order, which is the list order.
    clients: BTreeMap<u64, Client>,
    by_uuid: HashMap<String, u64>,
    contacts: HashMap<String, Contact>,
    definitions: Vec<Definition>,
    refresh_tokens: HashSet<String>,
    access_tokens: HashSet<String>,
    next: u64,
    edits: u64,
    listing: Option<Listing>,
    limits: Limits,
    recent: VecDeque<Instant>,
    today: usize,
    in_flight: usize,
    peak_in_window: usize,
    peak_in_flight: usize,
    refused: u64,
    /// Every access and refresh token handed out.
    issued: Vec<String>,
    control: Arc<FakeControl>,
}

/// A change a user makes while a listing is under way.
pub type ListHook = Box<dyn FnOnce(&FakeWorkflowMax) + Send>;

/// Handle on the fake's state, shared with its server.
#[derive(Clone)]
pub struct FakeWorkflowMax {
    inner: Arc<Mutex<Inner>>,
    control: Arc<FakeControl>,
}

/// WorkflowMax's XML error, for the shared faults.
struct WfmErrors;

impl ErrorBody for WfmErrors {
    fn status(&self, status: StatusCode, message: &str) -> Response {
        wfm_error(status, message)
    }

    /// HTTP 200 with `<Status>ERROR</Status>` (LEG, SEED "Error").
    fn envelope(&self, message: &str) -> Response {
        wfm_error(StatusCode::OK, message)
    }

    /// A document cut off mid-element.
    fn garbled(&self) -> Response {
        xml_response(
            StatusCode::OK,
            "<Response><Status>OK</Status><Client><UUID>".into(),
        )
    }
}

impl Default for FakeWorkflowMax {
    fn default() -> Self {
        Self::with_limits(Limits::default())
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FakeWorkflowMax {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake enforcing other limits (tests use short windows).
    pub fn with_limits(limits: Limits) -> Self {
        let control = Arc::new(FakeControl::default());
        let inner = Inner {
            limits,
            refresh_tokens: HashSet::from([REFRESH_TOKEN.to_string()]),
            control: control.clone(),
            ..Default::default()
        };
        FakeWorkflowMax {
            inner: Arc::new(Mutex::new(inner)),
            control,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves the fake on `addr`; returns the bound address. The server stops with the runtime.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        crate::serve(self.router(), addr).await
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth/token", post(token))
            .route("/client.api/list", get(list))
            .route("/client.api/search", get(search))
            .route("/client.api/get/{uuid}", get(read_client))
            .route("/client.api/add", post(add_client))
            .route("/client.api/update", axum::routing::put(update_client))
            .route(
                "/client.api/get/{uuid}/customfield",
                get(|s, h, p| custom_get(s, h, p, false)),
            )
            .route(
                "/client.api/update/{uuid}/customfield",
                axum::routing::put(|s, h, p, b| custom_put(s, h, p, b, false)),
            )
            .route("/client.api/contact", post(add_contact))
            .route(
                "/client.api/contact/{uuid}",
                get(read_contact).put(update_contact),
            )
            .route(
                "/client.api/contact/{uuid}/customfield",
                get(|s, h, p| custom_get(s, h, p, true))
                    .put(|s, h, p, b| custom_put(s, h, p, b, true)),
            )
            .route("/customfield.api/definition", get(definitions))
            .with_state(self.clone())
    }

    /// Connection settings pointing at a fake served on `addr`.
    pub fn settings(addr: SocketAddr) -> Value {
        json!({
            "client_id": CLIENT_ID,
            "api_url": format!("http://{addr}/"),
            "token_url": format!("http://{addr}/oauth/token"),
        })
    }

    pub fn secrets() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("client_secret".to_string(), CLIENT_SECRET.to_string()),
            ("refresh_token".to_string(), REFRESH_TOKEN.to_string()),
        ])
    }

    /// Fixes the fake's clock; `None` uses the real time.
    pub fn set_clock(&self, t: Option<DateTime<Utc>>) {
        self.control.set_clock(t);
    }

    fn now(g: &Inner) -> DateTime<Utc> {
        g.control.now()
    }

    /// Calls received by kind: `token`, `list`, `search`, `get`, `create`, `update`,
    /// `customfield_get`, `customfield_put`, `definition`.
    pub fn calls(&self, kind: &str) -> u64 {
        self.control.calls(kind)
    }

    /// Every API call (token calls excluded).
    pub fn api_calls(&self) -> u64 {
        self.control.api_calls()
    }

    /// Creates, updates and custom field writes: what "zero writes" counts.
    pub fn writes(&self) -> u64 {
        self.calls("create") + self.calls("update") + self.calls("customfield_put")
    }

    /// The most calls seen inside one rate window, the most at once, and the calls refused
    /// with 429.
    pub fn rate_report(&self) -> (usize, usize, u64) {
        let g = self.lock();
        (g.peak_in_window, g.peak_in_flight, g.refused)
    }

    /// Serves `fault` for the next request `target` matches.
    pub fn fail_next(&self, target: Target, fault: Fault) {
        self.control.fail_next(target, fault);
    }

    /// Invalidates every access token (as their 30-minute expiry would).
    pub fn expire_tokens(&self) {
        self.lock().access_tokens.clear();
    }

    /// Refresh tokens that still work (rotation spends each one).
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.lock().refresh_tokens.iter().cloned().collect()
    }

    pub fn define(&self, d: Definition) {
        self.lock().definitions.push(d);
    }

    /// The demo's definitions: Industry (text) and LinkedIn (a Link field whose template
    /// must never be applied to a stored full URL).
    pub fn define_standard_fields(&self) {
        self.define(Definition {
            uuid: "cf-industry".into(),
            name: "Industry".into(),
            kind: "Text".into(),
            link_url: None,
            use_client: true,
            use_contact: false,
            value_element: "Text".into(),
        });
        self.define(Definition {
            uuid: "cf-linkedin".into(),
            name: "LinkedIn".into(),
            kind: "Link".into(),
            link_url: Some("https://{value}".into()),
            use_client: true,
            use_contact: false,
            value_element: "Text".into(),
        });
    }

    /// Adds a client as a WorkflowMax user would; returns its UUID.
    pub fn add_client(&self, name: &str, fields: Value) -> String {
        let mut g = self.lock();
        let mut f = fields.as_object().cloned().unwrap_or_default();
        f.insert("Name".into(), name.into());
        insert_client(&mut g, f)
    }

    /// Deletes a client and its contacts, as a user would in the UI (the list shrinks).
    pub fn remove_client(&self, uuid: &str) -> bool {
        let mut g = self.lock();
        let Some(seq) = g.by_uuid.remove(uuid) else {
            return false;
        };
        g.clients.remove(&seq);
        g.contacts.retain(|_, c| c.client != uuid);
        g.edits += 1;
        true
    }

    /// Runs `hook` just before the `n`-th list request (from 1) is answered.
    pub fn before_list(&self, n: u64, hook: ListHook) {
        let fake = self.clone();
        self.control.before_list(n, Box::new(move || hook(&fake)));
    }

    /// Adds a contact under a client; returns its UUID.
    pub fn add_contact(&self, client: &str, name: &str, fields: Value) -> Option<String> {
        let mut g = self.lock();
        let mut f = fields.as_object().cloned().unwrap_or_default();
        f.insert("Name".into(), name.into());
        insert_contact(&mut g, client, f)
    }

    /// Sets a custom field value by field name, as a user would in the UI.
    pub fn set_custom(&self, client: &str, field: &str, value: &str) -> bool {
        let mut g = self.lock();
        let Some(def) = g.definitions.iter().find(|d| d.name == field).cloned() else {
            return false;
        };
        let now = Self::now(&g);
        let Some(c) = client_mut(&mut g, client) else {
            return false;
        };
        c.custom.insert(def.uuid, value.into());
        c.modified = now;
        true
    }

    /// Changes fields of a client or a contact as a user would (the client's modified time
    /// moves: a contact edit shows in `modifiedsince` through its client).
    pub fn edit(&self, uuid: &str, fields: Value) -> bool {
        let mut g = self.lock();
        let now = Self::now(&g);
        let Value::Object(f) = fields else {
            return false;
        };
        let parent = if let Some(c) = g.contacts.get_mut(uuid) {
            c.fields.extend(f);
            c.client.clone()
        } else if g.by_uuid.contains_key(uuid) {
            if let Some(c) = client_mut(&mut g, uuid) {
                c.fields.extend(f);
            }
            uuid.to_string()
        } else {
            return false;
        };
        if let Some(c) = client_mut(&mut g, &parent) {
            c.modified = now;
        }
        true
    }

    /// A client as the API shows it (detailed, with contacts and custom fields by name).
    pub fn client(&self, uuid: &str) -> Option<Value> {
        let g = self.lock();
        let c = g.by_uuid.get(uuid).and_then(|s| g.clients.get(s))?;
        let mut v = client_value(&g, c, true);
        v["CustomFields"] = custom_by_name(&g, &c.custom);
        Some(v)
    }

    pub fn clients(&self) -> Vec<Value> {
        let uuids: Vec<String> = self
            .lock()
            .clients
            .values()
            .map(|c| c.uuid.clone())
            .collect();
        uuids.iter().filter_map(|u| self.client(u)).collect()
    }

    pub fn contact(&self, uuid: &str) -> Option<Value> {
        let g = self.lock();
        g.contacts.get(uuid).map(|c| {
            let mut v = contact_value(uuid, c);
            v["Client"] = json!({"UUID": c.client});
            v
        })
    }
}

fn client_mut<'a>(g: &'a mut Inner, uuid: &str) -> Option<&'a mut Client> {
    let seq = *g.by_uuid.get(uuid)?;
    g.edits += 1;
    g.clients.get_mut(&seq)
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn insert_client(g: &mut Inner, mut fields: Map<String, Value>) -> String {
    let uuid = new_uuid();
    let contacts = match fields.remove("Contacts") {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    fields.remove("UUID");
    fields.remove("CustomFields");
    g.next += 1;
    let seq = g.next;
    let now = FakeWorkflowMax::now(g);
    g.clients.insert(
        seq,
        Client {
            uuid: uuid.clone(),
            fields,
            contacts: Vec::new(),
            custom: BTreeMap::new(),
            modified: now,
        },
    );
    g.by_uuid.insert(uuid.clone(), seq);
    for c in contacts {
        if let Value::Object(f) = c {
            insert_contact(g, &uuid, f);
        }
    }
    uuid
}

fn insert_contact(g: &mut Inner, client: &str, mut fields: Map<String, Value>) -> Option<String> {
    let now = FakeWorkflowMax::now(g);
    let c = client_mut(g, client)?;
    let uuid = new_uuid();
    c.contacts.push(uuid.clone());
    c.modified = now;
    fields.remove("UUID");
    fields.remove("Client");
    g.contacts.insert(
        uuid.clone(),
        Contact {
            client: client.to_string(),
            fields,
            custom: BTreeMap::new(),
        },
    );
    Some(uuid)
}

fn contact_value(uuid: &str, c: &Contact) -> Value {
    let mut v = Map::new();
    v.insert("UUID".into(), uuid.into());
    for (k, x) in &c.fields {
        v.insert(k.clone(), x.clone());
    }
    Value::Object(v)
}

fn client_value(g: &Inner, c: &Client, detailed: bool) -> Value {
    let mut v = Map::new();
    v.insert("UUID".into(), c.uuid.clone().into());
    for (k, x) in &c.fields {
        v.insert(k.clone(), x.clone());
    }
    if detailed {
        let contacts: Vec<Value> = c
            .contacts
            .iter()
            .filter_map(|u| g.contacts.get(u).map(|ct| contact_value(u, ct)))
            .collect();
        v.insert("Contacts".into(), Value::Array(contacts));
    }
    Value::Object(v)
}

fn custom_by_name(g: &Inner, custom: &BTreeMap<String, String>) -> Value {
    let mut out = Map::new();
    for d in &g.definitions {
        if let Some(v) = custom.get(&d.uuid) {
            out.insert(d.name.clone(), v.clone().into());
        }
    }
    Value::Object(out)
}

fn ok(payload: &[(&str, Value)]) -> Response {
    let mut body = String::from("<Response><Status>OK</Status>");
    for (name, v) in payload {
        xml::element(name, v, ORDER, &mut body);
    }
    body.push_str("</Response>");
    xml_response(StatusCode::OK, body)
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/xml")], body).into_response()
}

/// WorkflowMax's error idiom: HTTP 200 (unless `status` says otherwise) and a Status that
/// is not OK.
fn wfm_error(status: StatusCode, description: &str) -> Response {
    let mut body = String::from("<Response><Status>ERROR</Status>");
    xml::element(
        "ErrorDescription",
        &Value::String(description.into()),
        &[],
        &mut body,
    );
    body.push_str("</Response>");
    let mut resp = xml_response(status, body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert("Retry-After", HeaderValue::from_static("1"));
    }
    resp
}

/// Leaves the concurrency count when the request is answered.
struct InFlight(FakeWorkflowMax);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// Counts the call and checks the token, the account id, the rate limits and injected
/// faults. `Err` is the answer to give instead; `Ok` holds the request's place in the
/// concurrency count and what to do after storing a write.
async fn gate(
    fake: &FakeWorkflowMax,
    headers: &HeaderMap,
    kind: &str,
    entity: &str,
) -> Result<(InFlight, Option<AfterStore>), Box<Response>> {
    fake.control.receive(kind, "list");
    admit(fake, headers)?;
    let guard = InFlight(fake.clone());
    let after = fake
        .control
        .serve_fault(kind, entity, &WfmErrors)
        .await
        .map_err(Box::new)?;
    Ok((guard, after))
}

/// The token, the account id and the published rate limits (OA `info`).
fn admit(fake: &FakeWorkflowMax, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let mut g = fake.lock();
    let token = bearer_token(headers);
    if !g.access_tokens.contains(token) {
        return Err(Box::new(wfm_error(
            StatusCode::UNAUTHORIZED,
            "Invalid access token",
        )));
    }
    if headers.get("account_id").and_then(|v| v.to_str().ok()) != Some(ORG_ID) {
        return Err(Box::new(wfm_error(
            StatusCode::FORBIDDEN,
            "The account_id header does not name an organisation this token may use",
        )));
    }
    let now = Instant::now();
    let limits = g.limits;
    while g
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= limits.window)
    {
        g.recent.pop_front();
    }
    if g.in_flight >= limits.concurrent
        || g.recent.len() >= limits.per_window
        || g.today >= limits.per_day
    {
        g.refused += 1;
        return Err(Box::new(wfm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded",
        )));
    }
    g.recent.push_back(now);
    g.today += 1;
    g.in_flight += 1;
    g.peak_in_window = g.peak_in_window.max(g.recent.len());
    g.peak_in_flight = g.peak_in_flight.max(g.in_flight);
    Ok(())
}

macro_rules! gate {
    ($fake:expr, $headers:expr, $kind:expr, $entity:expr) => {
        match gate(&$fake, &$headers, $kind, $entity).await {
            Ok(g) => g,
            Err(resp) => return *resp,
        }
    };
}

fn jwt(n: u64, expires: i64) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.sandbox-signature-{n}",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        b64(&json!({"org_ids": [ORG_ID], "exp": expires, "jti": n, "scope": "workflowmax"}))
    )
}

async fn token(
    State(fake): State<FakeWorkflowMax>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = fake.control.gate("token", "", &WfmErrors).await {
        return r;
    }
    let mut g = fake.lock();
    let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let refuse = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if f("grant_type") != "refresh_token" {
        return refuse(
            "unsupported_grant_type",
            "only refresh_token is served here",
        );
    }
    if f("client_id") != CLIENT_ID || f("client_secret") != CLIENT_SECRET {
        return refuse("invalid_client", "unknown client or wrong secret");
    }
    // Rotation: a refresh token works once.
    if !g.refresh_tokens.remove(f("refresh_token")) {
        return refuse(
            "invalid_grant",
            "refresh token is invalid, expired or already used",
        );
    }
    g.next += 1;
    let n = g.next;
    let access = jwt(
        n,
        (g.control.now() + chrono::Duration::minutes(30)).timestamp(),
    );
    let refresh = format!("wfm-rt-{n}-{}", uuid::Uuid::new_v4().simple());
    g.access_tokens.insert(access.clone());
    g.refresh_tokens.insert(refresh.clone());
    g.issued.extend([access.clone(), refresh.clone()]);
    Json(json!({
        "access_token": access, "expires_in": 1800, "token_type": "Bearer",
        "refresh_token": refresh, "scope": f("scope"),
    }))
    .into_response()
}

fn parse_since(s: &str) -> Option<DateTime<Utc>> {
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s.trim(), f).ok())
        .map(|n| n.and_utc())
}

async fn list(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let _g = gate!(fake, headers, "list", "Client");
    let since = match q.get("modifiedsince") {
        Some(s) => match parse_since(s) {
            Some(t) => Some(t),
            None => {
                return wfm_error(
                    StatusCode::OK,
                    &format!("Invalid modifiedsince {s:?}: use yyyy-MM-ddTHH:mm:ss"),
                )
            }
        },
        None => None,
    };
    let detailed = q.get("detailed").is_some_and(|d| d == "true");
    let paged = q.contains_key("page") || q.contains_key("pagesize");
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let size = q
        .get("pagesize")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(100);
    let mut g = fake.lock();
    let stamp = (g.next, g.edits);
    let cached = g
        .listing
        .as_ref()
        .filter(|l| paged && (l.since, l.stamp) == (since, stamp))
        .map(|l| Arc::clone(&l.keys));
    let all = match cached {
        Some(keys) => keys,
        None => {
            let keys: Arc<Vec<u64>> = Arc::new(
                g.clients
                    .iter()
                    .filter(|(_, c)| since.is_none_or(|s| c.modified >= s))
                    .map(|(k, _)| *k)
                    .collect(),
            );
            if paged {
                g.listing = Some(Listing {
                    since,
                    stamp,
                    keys: Arc::clone(&keys),
                });
            }
            keys
        }
    };
    let total = all.len();
    let keys: Vec<u64> = all
        .iter()
        .copied()
        .skip(if paged {
            (page - 1).saturating_mul(size)
        } else {
            0
        })
        .take(if paged { size } else { usize::MAX })
        .collect();
    let clients: Vec<Value> = keys
        .iter()
        .filter_map(|k| g.clients.get(k))
        .map(|c| client_value(&g, c, detailed))
        .collect();
    let mut payload = vec![("Clients", Value::Array(clients))];
    if paged {
        payload.push(("Page", page.into()));
        payload.push(("PageSize", size.into()));
        payload.push(("TotalRecords", total.into()));
    }
    ok(&payload)
}

async fn search(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let _g = gate!(fake, headers, "search", "Client");
    let query = q.get("query").map(|s| s.to_lowercase()).unwrap_or_default();
    let detailed = q.get("detailed").is_some_and(|d| d == "true");
    let g = fake.lock();
    let found: Vec<Value> = g
        .clients
        .values()
        .filter(|c| {
            c.fields
                .get("Name")
                .map(str_of)
                .is_some_and(|n| n.to_lowercase().contains(&query))
        })
        .map(|c| client_value(&g, c, detailed))
        .collect();
    ok(&[("Clients", Value::Array(found))])
}

async fn read_client(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Response {
    let _g = gate!(fake, headers, "get", "Client");
    let g = fake.lock();
    match g.by_uuid.get(&uuid).and_then(|s| g.clients.get(s)) {
        Some(c) => ok(&[("Client", client_value(&g, c, true))]),
        None => wfm_error(StatusCode::OK, "Client not found"),
    }
}

/// The first character XML 1.0 cannot hold (W3C XML 1.0 §2.2, production [2] `Char`:
/// U+0009, U+000A, U+000D, U+0020–U+D7FF, U+E000–U+FFFD, U+10000–U+10FFFF), whether raw or
/// as a character reference (§4.1, well-formedness constraint "Legal Character").
fn illegal_xml_char(text: &str) -> Option<char> {
    let legal = xml::legal_char;
    if let Some(c) = text.chars().find(|c| !legal(*c)) {
        return Some(c);
    }
    // A reference inside a CDATA section is literal text (§2.7).
    let mut markup = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<![CDATA[") {
        markup.push_str(&rest[..i]);
        rest = rest[i..].find("]]>").map_or("", |j| &rest[i + j + 3..]);
    }
    markup.push_str(rest);
    markup.split("&#").skip(1).find_map(|rest| {
        let code = rest.split(';').next()?;
        let n = match code.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => code.parse().ok()?,
        };
        match char::from_u32(n) {
            Some(c) if legal(c) => None,
            Some(c) => Some(c),
            None => Some(char::REPLACEMENT_CHARACTER),
        }
    })
}

/// A body's text, refused when it is not well-formed XML 1.0 (the API speaks XML 1.0:
/// `specs/workflowmax/workflowmax_api.yaml`, `application/xml` bodies).
fn xml_text<'a>(
    fake: &FakeWorkflowMax,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, str>, Box<Response>> {
    let text = String::from_utf8_lossy(body);
    if let Some(c) = illegal_xml_char(&text) {
        let what = format!(
            "Invalid XML: character U+{:04X} is not allowed in XML 1.0",
            c as u32
        );
        fake.control.refuse_off_contract(&what);
        return Err(Box::new(wfm_error(StatusCode::BAD_REQUEST, &what)));
    }
    Ok(text)
}

/// The elements each write accepts (`specs/workflowmax/workflowmax_api.yaml`, schemas
/// `NewClient`, `UpdateClient`, `NewContact` (with its `Client`) and `Update_ClientContact`).
/// `NewClient` and `UpdateClient` share every element but their own few.
const CLIENT: &[&str] = &[
    "AccountManagerUUID",
    "Address",
    "AgencyStatus",
    "BalanceMonth",
    "BillingClientUUID",
    "BusinessNumber",
    "BusinessStructure",
    "City",
    "CompanyNumber",
    "Country",
    "DateOfBirth",
    "Email",
    "Fax",
    "FirstName",
    "GSTBasis",
    "GSTPeriod",
    "GSTRegistered",
    "JobManagerUUID",
    "LastName",
    "Name",
    "OtherName",
    "Phone",
    "PostalAddress",
    "PostalCity",
    "PostalCountry",
    "PostalPostCode",
    "PostalRegion",
    "Postcode",
    "PrepareActivityStatement",
    "PrepareGST",
    "PrepareTaxReturn",
    "ProvisionalTaxBasis",
    "ProvisionalTaxRatio",
    "ReferralSource",
    "Region",
    "ReturnType",
    "SignedTaxAuthority",
    "TaxAgent",
    "TaxNumber",
    "Website",
];
const NEW_CLIENT_ONLY: &[&str] = &["Contacts", "ExportCode", "IsProspect"];
const UPDATE_CLIENT_ONLY: &[&str] = &["UUID"];
const NEW_CONTACT: &[&str] = &[
    "Addressee",
    "Client",
    "Email",
    "IsPrimary",
    "Mobile",
    "Name",
    "Phone",
    "Position",
    "Salutation",
];
const UPDATE_CONTACT: &[&str] = &[
    "Addressee",
    "Email",
    "Mobile",
    "Name",
    "Phone",
    "Positions",
    "Salutation",
];

/// Refuses an element the operation's schema (the union of `schema`'s lists) does not have.
fn only(
    fake: &FakeWorkflowMax,
    fields: &Map<String, Value>,
    schema: &[&[&str]],
    op: &str,
) -> Result<(), Box<Response>> {
    let known = |k: &str| schema.iter().any(|list| list.contains(&k));
    match fields.keys().find(|k| !known(k)) {
        None => Ok(()),
        Some(k) => {
            let what = format!("{op} has no element {k}");
            fake.control.refuse_off_contract(&what);
            Err(Box::new(wfm_error(StatusCode::BAD_REQUEST, &what)))
        }
    }
}

macro_rules! only {
    ($fake:expr, $fields:expr, $schema:expr, $op:expr) => {
        if let Err(resp) = only(&$fake, &$fields, $schema, $op) {
            return *resp;
        }
    };
}

/// The body's root element as an object, or the error to answer.
fn body_object(
    fake: &FakeWorkflowMax,
    body: &[u8],
    root: &str,
) -> Result<Map<String, Value>, Box<Response>> {
    let text = xml_text(fake, body)?;
    match xml::parse(&text) {
        Ok((name, Value::Object(m))) if name == root => Ok(m),
        Ok((name, _)) => Err(Box::new(wfm_error(
            StatusCode::OK,
            &format!("Expected a <{root}> element, got <{name}>"),
        ))),
        Err(e) => Err(Box::new(wfm_error(
            StatusCode::OK,
            &format!("Invalid XML: {e}"),
        ))),
    }
}

macro_rules! body {
    ($fake:expr, $bytes:expr, $root:expr) => {
        match body_object(&$fake, &$bytes, $root) {
            Ok(m) => m,
            Err(resp) => return *resp,
        }
    };
}

fn has_name(f: &Map<String, Value>) -> bool {
    f.get("Name")
        .map(str_of)
        .is_some_and(|n| !n.trim().is_empty())
}

async fn add_client(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_g, after) = gate!(fake, headers, "create", "Client");
    let fields = body!(fake, body, "Client");
    only!(fake, fields, &[CLIENT, NEW_CLIENT_ONLY], "NewClient");
    if !has_name(&fields) {
        return wfm_error(StatusCode::OK, "Name is required");
    }
    let stored = {
        let mut g = fake.lock();
        let uuid = insert_client(&mut g, fields);
        let seq = g.by_uuid[&uuid];
        client_value(&g, &g.clients[&seq], true)
    };
    answer_stored(after, stored, &WfmErrors, |v| ok(&[("Client", v)])).await
}

async fn update_client(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_g, after) = gate!(fake, headers, "update", "Client");
    let mut fields = body!(fake, body, "Client");
    only!(fake, fields, &[CLIENT, UPDATE_CLIENT_ONLY], "UpdateClient");
    let Some(uuid) = fields.remove("UUID").map(|u| str_of(&u)) else {
        return wfm_error(StatusCode::OK, "UUID is required");
    };
    if fields.contains_key("Name") && !has_name(&fields) {
        return wfm_error(StatusCode::OK, "Name cannot be empty");
    }
    fields.remove("Contacts");
    let stored = {
        let mut g = fake.lock();
        let now = FakeWorkflowMax::now(&g);
        let Some(c) = client_mut(&mut g, &uuid) else {
            return wfm_error(StatusCode::OK, "Client not found");
        };
        // Elements left out keep their values.
        c.fields.extend(fields);
        c.modified = now;
        let c = c.clone();
        client_value(&g, &c, true)
    };
    answer_stored(after, stored, &WfmErrors, |v| ok(&[("Client", v)])).await
}

async fn add_contact(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_g, after) = gate!(fake, headers, "create", "Contact");
    let fields = body!(fake, body, "Contact");
    only!(fake, fields, &[NEW_CONTACT], "NewContact");
    let client = fields
        .get("Client")
        .and_then(|c| c.get("UUID"))
        .map(str_of)
        .unwrap_or_default();
    if !has_name(&fields) {
        return wfm_error(StatusCode::OK, "Name is required");
    }
    let stored = {
        let mut g = fake.lock();
        match insert_contact(&mut g, &client, fields) {
            Some(uuid) => contact_value(&uuid, &g.contacts[&uuid]),
            None => return wfm_error(StatusCode::OK, &format!("Client {client:?} not found")),
        }
    };
    answer_stored(after, stored, &WfmErrors, |v| ok(&[("Contact", v)])).await
}

async fn read_contact(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
) -> Response {
    let _g = gate!(fake, headers, "get", "Contact");
    let g = fake.lock();
    match g.contacts.get(&uuid) {
        Some(c) => ok(&[("Contact", contact_value(&uuid, c))]),
        None => wfm_error(StatusCode::OK, "Contact not found"),
    }
}

async fn update_contact(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Response {
    let (_g, after) = gate!(fake, headers, "update", "Contact");
    let mut fields = body!(fake, body, "Contact");
    if fields.contains_key("Name") && !has_name(&fields) {
        return wfm_error(StatusCode::OK, "Name cannot be empty");
    }
    fields.remove("UUID");
    fields.remove("Client");
    // `Update_ClientContact` has no flat Position: a job title is a Position of the
    // contact at a client, `Positions/Position{UUID, Position, IncludeInEmails, IsPrimary}`
    // (specs/workflowmax/workflowmax_api.yaml, PUT client.api/contact/{uuid}).
    if fields.contains_key("Position") {
        let what = "Contact has no element Position: send Positions/Position{UUID, Position}";
        fake.control.refuse_off_contract(what);
        return wfm_error(StatusCode::BAD_REQUEST, what);
    }
    only!(fake, fields, &[UPDATE_CONTACT], "Update_ClientContact");
    let positions = fields.remove("Positions");
    let stored = {
        let mut g = fake.lock();
        let now = FakeWorkflowMax::now(&g);
        let Some(c) = g.contacts.get_mut(&uuid) else {
            return wfm_error(StatusCode::OK, "Contact not found");
        };
        if let Some(p) = &positions {
            match position_at(Some(p), &c.client) {
                Some(title) => {
                    c.fields.insert("Position".into(), title);
                }
                None => {
                    let what = "Positions/Position needs the UUID of the contact's client";
                    fake.control.refuse_off_contract(what);
                    return wfm_error(StatusCode::BAD_REQUEST, what);
                }
            }
        }
        c.fields.extend(fields);
        let (parent, value) = (c.client.clone(), contact_value(&uuid, c));
        if let Some(p) = client_mut(&mut g, &parent) {
            p.modified = now;
        }
        value
    };
    answer_stored(after, stored, &WfmErrors, |v| ok(&[("Contact", v)])).await
}

/// The title in the `Positions` item for `client` (one item parses as an object, several
/// as a list).
fn position_at(positions: Option<&Value>, client: &str) -> Option<Value> {
    let items = match positions? {
        Value::Object(m) => match m.get("Position")? {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        },
        Value::Array(a) => a.clone(),
        _ => return None,
    };
    items
        .iter()
        .find(|p| p.get("UUID").map(str_of).as_deref() == Some(client))
        .and_then(|p| p.get("Position").cloned())
}

async fn definitions(State(fake): State<FakeWorkflowMax>, headers: HeaderMap) -> Response {
    let _g = gate!(fake, headers, "definition", "");
    let g = fake.lock();
    let defs: Vec<Value> = g
        .definitions
        .iter()
        .map(|d| {
            let mut v = json!({
                "UUID": d.uuid, "Name": d.name, "Type": d.kind,
                "UseClient": d.use_client.to_string(), "UseContact": d.use_contact.to_string(),
                "UseSupplier": "false", "UseJob": "false", "UseLead": "false",
                "UseJobTask": "false", "UseJobCost": "false", "UseJobTime": "false",
                "ValueElement": d.value_element,
            });
            if let Some(l) = &d.link_url {
                v["LinkUrl"] = l.clone().into();
            }
            v
        })
        .collect();
    ok(&[("CustomFieldDefinitions", Value::Array(defs))])
}

fn custom_values(g: &Inner, custom: &BTreeMap<String, String>, contact: bool) -> Value {
    let list: Vec<Value> = g
        .definitions
        .iter()
        .filter(|d| if contact { d.use_contact } else { d.use_client })
        .filter_map(|d| {
            let v = custom.get(&d.uuid)?;
            let mut m = Map::new();
            m.insert("UUID".into(), d.uuid.clone().into());
            m.insert("Name".into(), d.name.clone().into());
            m.insert(d.value_element.clone(), v.clone().into());
            Some(Value::Object(m))
        })
        .collect();
    Value::Array(list)
}

async fn custom_get(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
    contact: bool,
) -> Response {
    let _g = gate!(
        fake,
        headers,
        "customfield_get",
        if contact { "Contact" } else { "Client" }
    );
    let mut g = fake.lock();
    let custom = if contact {
        g.contacts.get(&uuid).map(|c| c.custom.clone())
    } else {
        client_mut(&mut g, &uuid).map(|c| c.custom.clone())
    };
    match custom {
        Some(c) => ok(&[("CustomFields", custom_values(&g, &c, contact))]),
        None => wfm_error(StatusCode::OK, "Record not found"),
    }
}

/// Checks one `<CustomField>` of a PUT against its definition; returns (uuid, value).
fn check_custom(g: &Inner, f: &Value, contact: bool) -> Result<(String, String), String> {
    let uuid = f
        .get("UUID")
        .map(str_of)
        .filter(|u| !u.is_empty())
        .ok_or("Every CustomField needs its UUID")?;
    let def = g
        .definitions
        .iter()
        .find(|d| d.uuid == uuid)
        .ok_or_else(|| format!("Unknown custom field {uuid}"))?;
    if !(if contact {
        def.use_contact
    } else {
        def.use_client
    }) {
        return Err(format!("Custom field {} does not apply here", def.name));
    }
    let value = f.get(&def.value_element).map(str_of).ok_or_else(|| {
        format!(
            "Invalid field value: {} takes its value in <{}>",
            def.name, def.value_element
        )
    })?;
    let valid = match def.value_element.as_str() {
        "Decimal" | "Number" => value.trim().is_empty() || value.trim().parse::<f64>().is_ok(),
        "Boolean" => matches!(value.as_str(), "true" | "false" | ""),
        "Date" => {
            value.is_empty()
                || parse_since(&value).is_some()
                || chrono::NaiveDate::parse_from_str(&value, "%Y-%m-%d").is_ok()
        }
        _ => true,
    };
    if !valid {
        return Err(format!("Invalid field value for {}: {value:?}", def.name));
    }
    Ok((uuid, value))
}

async fn custom_put(
    State(fake): State<FakeWorkflowMax>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
    body: Bytes,
    contact: bool,
) -> Response {
    let _g = gate!(
        fake,
        headers,
        "customfield_put",
        if contact { "Contact" } else { "Client" }
    );
    let text = match xml_text(&fake, &body) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    // UUID comes first in each CustomField.
    if text
        .split("<CustomField>")
        .skip(1)
        .any(|rest| !rest.trim_start().starts_with("<UUID>"))
    {
        return wfm_error(StatusCode::OK, "Each CustomField must start with its UUID");
    }
    let fields = match xml::parse(&text) {
        Ok((name, Value::Array(list))) if name == "CustomFields" => list,
        Ok((name, _)) => {
            return wfm_error(
                StatusCode::OK,
                &format!("Expected <CustomFields>, got <{name}>"),
            )
        }
        Err(e) => return wfm_error(StatusCode::OK, &format!("Invalid XML: {e}")),
    };
    let mut g = fake.lock();
    let mut values = BTreeMap::new();
    for f in &fields {
        match check_custom(&g, f, contact) {
            Ok((u, v)) => {
                values.insert(u, v);
            }
            Err(e) => return wfm_error(StatusCode::OK, &e),
        }
    }
    let now = FakeWorkflowMax::now(&g);
    // The set sent replaces the record's values: a field left out is cleared, which is
    // why a client must always send them all together.
    let parent = if contact {
        match g.contacts.get_mut(&uuid) {
            Some(c) => {
                c.custom = values;
                c.client.clone()
            }
            None => return wfm_error(StatusCode::OK, "Contact not found"),
        }
    } else {
        match client_mut(&mut g, &uuid) {
            Some(c) => {
                c.custom = values;
                uuid.clone()
            }
            None => return wfm_error(StatusCode::OK, "Client not found"),
        }
    };
    if let Some(p) = client_mut(&mut g, &parent) {
        p.modified = now;
    }
    ok(&[])
}

/// `ferry sandbox workflowmax` and the demo.
pub struct FakeSandbox;

#[async_trait]
impl Sandbox for FakeSandbox {
    async fn start(&self, addr: SocketAddr) -> anyhow::Result<SandboxHandle> {
        // Ten times the real per-minute limit, so demos and sandboxes are quick; connections
        // to it raise their budget to match (`rate_limit: { per_minute: 600 }`).
        let fake = FakeWorkflowMax::with_limits(Limits {
            per_window: 600,
            per_day: 50_000,
            ..Limits::default()
        });
        fake.define_standard_fields();
        let bound = fake.serve(addr).await?;
        Ok(SandboxHandle {
            addr: bound,
            settings: FakeWorkflowMax::settings(bound),
            secrets: FakeWorkflowMax::secrets(),
            rate_limit: Some(ferry_framework::http::rate::RateLimits {
                per_minute: Some(600),
                per_day: Some(50_000),
                ..Default::default()
            }),
            app: Arc::new(fake),
        })
    }
}

impl SandboxApp for FakeWorkflowMax {
    fn seed_demo(&self) {
        let client = self.add_client(
            "Harbour & Sons Ltd",
            json!({"Email": "office@harbour.example", "Phone": "+64 9 555 0100", "Website": "https://harbour.example"}),
        );
        self.set_custom(&client, "Industry", "Marine <logistics>");
        self.set_custom(
            &client,
            "LinkedIn",
            "https://www.linkedin.com/company/harbour-sons",
        );
        self.add_contact(
            &client,
            "Aroha Ngata",
            json!({"Email": "aroha@harbour.example", "Mobile": "+64 21 555 0101", "Position": "Director"}),
        );
    }

    fn user_edit(&self) -> String {
        // The first contact (in client order) that did not start in WorkflowMax.
        let g = self.lock();
        let target = g
            .clients
            .values()
            .flat_map(|c| c.contacts.iter())
            .filter_map(|u| g.contacts.get(u).map(|c| (u, c)))
            .find(|(_, c)| {
                c.fields
                    .get("Email")
                    .map(str_of)
                    .is_some_and(|e| !e.ends_with("harbour.example"))
            })
            .map(|(u, c)| {
                (
                    u.clone(),
                    c.fields.get("Name").map(str_of).unwrap_or_default(),
                )
            });
        drop(g);
        match target {
            Some((uuid, name)) => {
                self.edit(&uuid, json!({"Mobile": "+47 900 00 001"}));
                format!("set the mobile of WorkflowMax Contact {name:?} to \"+47 900 00 001\"")
            }
            None => "nothing to edit".into(),
        }
    }

    fn describe(&self) -> Vec<String> {
        let g = self.lock();
        let mut out = Vec::new();
        for c in g.clients.values() {
            out.push(format!(
                "Client {:?} {}",
                c.fields.get("Name").map(str_of).unwrap_or_default(),
                custom_by_name(&g, &c.custom)
            ));
            for u in &c.contacts {
                if let Some(ct) = g.contacts.get(u) {
                    out.push(format!(
                        "  Contact {:?} <{}> mobile {}",
                        ct.fields.get("Name").map(str_of).unwrap_or_default(),
                        ct.fields.get("Email").map(str_of).unwrap_or_default(),
                        ct.fields.get("Mobile").map(str_of).unwrap_or_default(),
                    ));
                }
            }
        }
        out
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

    fn seed_many(&self, n: usize) -> bool {
        let mut g = self.lock();
        let day_ago = Utc::now() - chrono::Duration::days(1);
        let saved = g.control.fixed_clock();
        g.control.set_clock(Some(day_ago));
        for i in 0..n {
            let mut f = Map::new();
            f.insert("Name".into(), format!("Bench Client {i:07}").into());
            f.insert("Email".into(), format!("client{i}@bench.example").into());
            f.insert("Phone".into(), format!("+64 9 {i:07}").into());
            f.insert(
                "Website".into(),
                format!("https://client{i}.bench.example").into(),
            );
            insert_client(&mut g, f);
        }
        g.control.set_clock(saved);
        true
    }

    fn lift_limits(&self) {
        self.lock().limits = Limits {
            concurrent: usize::MAX,
            per_window: usize::MAX,
            window: Duration::from_secs(60),
            per_day: usize::MAX,
        };
    }
}

/// The conformance kit's user: clients (hub Organizations).
impl AppUser for FakeWorkflowMax {
    fn entity(&self) -> &'static str {
        "client"
    }

    fn call_kinds(&self) -> CallKinds {
        CallKinds {
            list: "list",
            reads: &["get", "customfield_get"],
            create: "create",
            writes: &["create", "update", "customfield_put"],
        }
    }

    fn create(&self, name: &str) -> String {
        self.add_client(name, json!({}))
    }

    fn rename(&self, id: &str, name: &str) -> bool {
        self.edit(id, json!({ "Name": name }))
    }

    fn delete(&self, id: &str) -> bool {
        self.remove_client(id)
    }

    fn names(&self) -> Vec<(String, String)> {
        self.clients()
            .iter()
            .map(|c| (str_of(&c["UUID"]), str_of(&c["Name"])))
            .collect()
    }

    /// Client elements and a custom field no mapping names.
    fn add_unmapped(&self, id: &str) -> bool {
        if !self
            .lock()
            .definitions
            .iter()
            .any(|d| d.uuid == "cf-kit-owner")
        {
            self.define(Definition {
                uuid: "cf-kit-owner".into(),
                name: "Account Owner".into(),
                kind: "Text".into(),
                link_url: None,
                use_client: true,
                use_contact: false,
                value_element: "Text".into(),
            });
        }
        self.edit(
            id,
            json!({"ReferralSource": "Trade fair", "AccountManager": {"UUID": "staff-7"}}),
        ) && self.set_custom(id, "Account Owner", "Ana")
    }

    fn unmapped_intact(&self, id: &str) -> Result<(), String> {
        let c = self.client(id).ok_or("the client is gone")?;
        if str_of(&c["ReferralSource"]) != "Trade fair" || c["AccountManager"]["UUID"] != "staff-7"
        {
            return Err(format!("unmapped elements are now {c}"));
        }
        let g = self.lock();
        let owner = g
            .by_uuid
            .get(id)
            .and_then(|s| g.clients.get(s))
            .and_then(|c| c.custom.get("cf-kit-owner").cloned());
        match owner.as_deref() {
            Some("Ana") => Ok(()),
            other => Err(format!(
                "custom field Account Owner is {other:?}, was \"Ana\""
            )),
        }
    }

    /// A name with child elements.
    fn corrupt(&self, id: &str) -> bool {
        let mut g = self.lock();
        match client_mut(&mut g, id) {
            Some(c) => {
                c.fields
                    .insert("Name".into(), json!({"First": "not", "Last": "text"}));
                true
            }
            None => false,
        }
    }

    fn expire_access_tokens(&self) -> bool {
        self.expire_tokens();
        true
    }

    fn revoke_refresh_token(&self) -> bool {
        self.lock().refresh_tokens.clear();
        true
    }

    /// WorkflowMax reports no update times (`modifiedsince` is a UTC filter only).
    fn reports_times(&self) -> bool {
        false
    }

    fn waiting(&self) -> Vec<Waiting> {
        vec![Waiting {
            case: "idle_run_writes_nothing",
            variant: "",
            failure: "records one by one",
            why: "issue 17 (budget: read custom fields only for records that changed): every \
                  listed client's custom fields are read with a GET",
        }]
    }

    fn issued_secrets(&self) -> Vec<String> {
        self.lock().issued.clone()
    }
}
