//! A faithful fake SuperOffice tenant: stateful Contacts and Persons, the OAuth token
//! endpoint, OData listing with `$select`, `$filter` (`after`, `before`, `eq`, `and`),
//! `$orderBy`, `$top`, `$skip`, SuperOffice's error JSON, bearer-token checks, failure
//! injection and call counts by kind. Used by the tests, `ferry demo` and `ferry sandbox`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use ferry_framework::sandbox::{Sandbox, SandboxApp, SandboxHandle};
use serde_json::{json, Map, Value};

use super::client::parse_date;

pub const CONTEXT: &str = "Cust12345";
pub const CLIENT_ID: &str = "ferry-sandbox";
pub const CLIENT_SECRET: &str = "sandbox-client-secret";
pub const REFRESH_TOKEN: &str = "sandbox-refresh-token";

/// A failure the fake serves instead of the next matching request.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Answer with this status and SuperOffice's error JSON (429 adds `Retry-After: 1`).
    Status(u16),
    /// Wait this long before answering normally (a timeout for a short client timeout).
    Delay(Duration),
    /// Perform the write, then answer 500 as if the connection broke afterwards.
    AfterCommit,
    /// Perform the write, then take this long to answer (a caller killed meanwhile never
    /// learns the write happened).
    CommitThenHang(Duration),
    /// Perform the write, then answer 200/201 with the stored entity as this function
    /// changes it (an id of the wrong type, another record's id: bad data in an answer).
    CommitThenTamper(fn(&mut Value)),
}

/// Which requests an injected failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Any,
    Create,
    Update,
    List,
    /// List requests of one entity (`Contact` or `Person`).
    ListOf(&'static str),
}

#[derive(Default)]
struct Inner {
    contacts: BTreeMap<i64, Value>,
    persons: BTreeMap<i64, Value>,
    next_id: i64,
    tokens: HashSet<String>,
    calls: HashMap<String, u64>,
    failures: VecDeque<(Target, Failure)>,
    clock: Option<DateTime<Utc>>,
    /// Where webhooks go (`TargetUrl`) and the webhook's `Secret`, once registered.
    webhook: Option<(String, Option<String>)>,
    /// What users do just before the n-th list request is answered (edits during a
    /// listing), by list request number.
    before_list: ferry_framework::sandbox::ListHooks<dyn FnOnce(&FakeSuperOffice) + Send>,
}

/// A change a user makes while a listing is under way.
pub type ListHook = Box<dyn FnOnce(&FakeSuperOffice) + Send>;

/// Handle on the fake's state, shared with its server.
#[derive(Clone, Default)]
pub struct FakeSuperOffice {
    inner: Arc<Mutex<Inner>>,
}

fn fmt_date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn element(v: &str) -> Value {
    json!({"Value": v, "StrippedValue": v, "Description": ""})
}

impl FakeSuperOffice {
    pub fn new() -> Self {
        Self::default()
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
            .route("/login/common/oauth/tokens", post(token))
            .route("/{ctx}/api/v1/{entity}", get(list).post(create))
            .route(
                "/{ctx}/api/v1/{entity}/{id}",
                get(read).put(update).delete(remove),
            )
            .with_state(self.clone())
    }

    /// Connection settings pointing at a fake served on `addr`.
    pub fn settings(addr: SocketAddr) -> Value {
        json!({
            "environment": "sod",
            "context_identifier": CONTEXT,
            "client_id": CLIENT_ID,
            "api_url": format!("http://{addr}/{CONTEXT}/api/"),
            "token_url": format!("http://{addr}/login/common/oauth/tokens"),
        })
    }

    pub fn secrets() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("client_secret".to_string(), CLIENT_SECRET.to_string()),
            ("refresh_token".to_string(), REFRESH_TOKEN.to_string()),
        ])
    }

    /// Fixes the fake's clock (for tests of "newest wins"); `None` uses the real time.
    pub fn set_clock(&self, t: Option<DateTime<Utc>>) {
        self.lock().clock = t;
    }

    fn now(inner: &Inner) -> DateTime<Utc> {
        inner.clock.unwrap_or_else(Utc::now)
    }

    /// Calls received by kind: `token`, `list`, `get`, `create`, `update`, `delete`.
    pub fn calls(&self, kind: &str) -> u64 {
        self.lock().calls.get(kind).copied().unwrap_or(0)
    }

    /// Creates plus updates: what a test asserts for "zero writes".
    pub fn writes(&self) -> u64 {
        self.calls("create") + self.calls("update")
    }

    /// Runs `hook` (a user's edit, say) just before the `n`-th list request (counting
    /// from 1 over the fake's life) is answered.
    pub fn before_list(&self, n: u64, hook: ListHook) {
        self.lock().before_list.add(n, hook);
    }

    /// Serves `failure` for the next request of kind `target`.
    pub fn fail_next(&self, target: Target, failure: Failure) {
        self.lock().failures.push_back((target, failure));
    }

    /// Registers a webhook (`POST /api/v1/Webhook`): every later change is delivered to
    /// `url`, signed with `secret` when there is one.
    pub fn subscribe(&self, url: &str, secret: Option<&str>) {
        self.lock().webhook = Some((url.to_string(), secret.map(str::to_string)));
    }

    /// Invalidates every issued access token (as an expiry would).
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Adds a company as a SuperOffice user would; returns its ContactId.
    pub fn add_contact(&self, name: &str, orgnr: &str, url: &str) -> i64 {
        let mut g = self.lock();
        let body = json!({
            "Name": name, "OrgNr": orgnr,
            "Urls": if url.is_empty() { json!([]) } else { json!([element(url)]) },
        });
        store(&mut g, "Contact", body).0
    }

    /// Adds a person under a company; returns its PersonId.
    pub fn add_person(&self, first: &str, last: &str, email: &str, contact_id: Option<i64>) -> i64 {
        let mut g = self.lock();
        let mut body = json!({
            "Firstname": first, "Lastname": last,
            "Emails": if email.is_empty() { json!([]) } else { json!([element(email)]) },
        });
        if let Some(c) = contact_id {
            body["Contact"] = json!({"ContactId": c});
        }
        store(&mut g, "Person", body).0
    }

    /// Changes fields of a record as a user would (UpdatedDate moves).
    pub fn edit(&self, entity: &str, id: i64, fields: Value) -> bool {
        let mut g = self.lock();
        let now = fmt_date(Self::now(&g));
        let table = if entity == "Person" {
            &mut g.persons
        } else {
            &mut g.contacts
        };
        let Some(rec) = table.get_mut(&id) else {
            return false;
        };
        let old = rec.clone();
        if let (Value::Object(r), Value::Object(f)) = (&mut *rec, fields) {
            for (k, v) in f {
                r.insert(k, v);
            }
            r.insert("UpdatedDate".into(), Value::String(now));
        }
        let changes = changed_columns(&old, rec);
        notify(&g, entity, id, "changed", Some(changes));
        true
    }

    pub fn contact(&self, id: i64) -> Option<Value> {
        self.lock().contacts.get(&id).cloned()
    }

    pub fn person(&self, id: i64) -> Option<Value> {
        self.lock().persons.get(&id).cloned()
    }

    pub fn contacts(&self) -> Vec<Value> {
        self.lock().contacts.values().cloned().collect()
    }

    pub fn persons(&self) -> Vec<Value> {
        self.lock().persons.values().cloned().collect()
    }
}

fn so_error(status: u16, kind: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        code,
        Json(json!({
            "Error": true, "ErrorType": kind, "ErrorMessage": message,
            "ErrorSource": "SuperOffice.Services.Implementation",
        })),
    )
        .into_response();
    if status == 429 {
        resp.headers_mut()
            .insert("Retry-After", axum::http::HeaderValue::from_static("1"));
    }
    resp
}

/// Counts the call, checks the bearer token and serves an injected failure if one is due.
/// Returns `Err(response)` to answer instead, or the failure to apply after committing.
async fn gate(
    fake: &FakeSuperOffice,
    headers: &HeaderMap,
    kind: &str,
    target: Target,
) -> Result<Option<Failure>, Box<Response>> {
    let failure = {
        let mut g = fake.lock();
        *g.calls.entry(kind.to_string()).or_default() += 1;
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !g.tokens.contains(token) {
            return Err(Box::new(so_error(
                401,
                "SoAuthenticationException",
                "Invalid or expired access token",
            )));
        }
        let pos = g.failures.iter().position(|(t, _)| match (*t, target) {
            (Target::Any, _) => true,
            (Target::List, Target::ListOf(_)) => true,
            (a, b) => a == b,
        });
        pos.and_then(|i| g.failures.remove(i)).map(|(_, f)| f)
    };
    match failure {
        Some(Failure::Status(s)) => Err(Box::new(so_error(s, "SoException", "Injected failure"))),
        Some(Failure::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(None)
        }
        other => Ok(other),
    }
}

async fn token(
    State(fake): State<FakeSuperOffice>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut g = fake.lock();
    *g.calls.entry("token".into()).or_default() += 1;
    let f = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if f("grant_type") != "refresh_token" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if f("client_id") != CLIENT_ID
        || f("client_secret") != CLIENT_SECRET
        || f("refresh_token") != REFRESH_TOKEN
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "The refresh token or client credentials are invalid"})),
        )
            .into_response();
    }
    g.next_id += 1;
    let access = format!("8A:{CONTEXT}.{}", g.next_id);
    g.tokens.insert(access.clone());
    Json(json!({"token_type": "Bearer", "access_token": access, "expires_in": 3600}))
        .into_response()
}

fn table<'a>(g: &'a mut Inner, entity: &str) -> Option<&'a mut BTreeMap<i64, Value>> {
    match entity {
        "Contact" => Some(&mut g.contacts),
        "Person" => Some(&mut g.persons),
        _ => None,
    }
}

fn id_key(entity: &str) -> &'static str {
    if entity == "Person" {
        "PersonId"
    } else {
        "ContactId"
    }
}

/// Stores a new record: assigns the id and dates, fills the defaults SuperOffice returns.
fn store(g: &mut Inner, entity: &str, body: Value) -> (i64, Value) {
    g.next_id += 1;
    let id = g.next_id;
    let now = fmt_date(FakeSuperOffice::now(g));
    let mut rec = match entity {
        "Person" => json!({
            "PersonId": id, "Firstname": "", "MiddleName": "", "Lastname": "", "Title": "",
            "Emails": [], "MobilePhones": [], "OfficePhones": [], "Contact": null,
            "UserDefinedFields": {}, "CustomFields": {},
        }),
        _ => json!({
            "ContactId": id, "Name": "", "Department": "", "OrgNr": "", "Number1": "",
            "Emails": [], "Urls": [], "Phones": [], "Persons": [], "UserDefinedFields": {},
            "CustomFields": {},
        }),
    };
    if let (Value::Object(r), Value::Object(b)) = (&mut rec, body) {
        for (k, v) in b {
            if k != id_key(entity) {
                r.insert(k, v);
            }
        }
        r.insert("CreatedDate".into(), Value::String(now.clone()));
        r.insert("UpdatedDate".into(), Value::String(now));
    }
    if let Some(t) = table(g, entity) {
        t.insert(id, rec.clone());
    }
    notify(g, entity, id, "created", None);
    (id, rec)
}

/// SuperOffice's `Changes` name database columns; the fake derives them from the changed
/// properties (`OrgNr` -> `orgnr`, `UserDefinedFields` -> `userdef_id`).
fn changed_columns(old: &Value, new: &Value) -> Vec<String> {
    let mut out = vec!["updated".to_string(), "updated_associate_id".to_string()];
    if let (Value::Object(o), Value::Object(n)) = (old, new) {
        for (k, v) in n {
            if matches!(k.as_str(), "UpdatedDate" | "CreatedDate") || o.get(k) == Some(v) {
                continue;
            }
            out.push(match k.as_str() {
                "UserDefinedFields" => "userdef_id".into(),
                "Contact" => "contact_id".into(),
                other => other.to_lowercase(),
            });
        }
    }
    out
}

/// Sends a webhook delivery to the registered target, as SuperOffice does after every
/// change (its own API's writes included), signed when the webhook has a secret.
fn notify(g: &Inner, entity: &str, id: i64, what: &str, changes: Option<Vec<String>>) {
    let Some((url, secret)) = g.webhook.clone() else {
        return;
    };
    let name = entity.to_lowercase();
    let event = format!("{name}.{what}");
    let body = json!({
        "EventId": uuid::Uuid::new_v4().to_string(),
        "Timestamp": fmt_date(FakeSuperOffice::now(g)),
        "Changes": changes.unwrap_or_default(),
        "Event": event,
        "PrimaryKey": id,
        "Entity": name,
        "ContextIdentifier": CONTEXT,
        "ChangedByAssociateId": 5,
        "WebhookName": "Ferry",
        "FieldValues": {},
    })
    .to_string();
    tokio::spawn(async move {
        let mut req = reqwest::Client::new()
            .post(&url)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-SuperOffice-Event", event)
            .header("User-Agent", "NetServer-Webhook/10.3");
        if let Some(s) = secret {
            req = req.header(
                "X-SuperOffice-Signature",
                ferry_framework::webhook::hmac_sha256_base64(&s, body.as_bytes()),
            );
        }
        if let Err(e) = req.body(body).send().await {
            tracing::debug!(error = %e, "fake SuperOffice: webhook delivery failed");
        }
    });
}

/// Checks a write body against what SuperOffice would refuse.
fn check_body(g: &Inner, entity: &str, body: &Value) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err("The request body must be a JSON object".into());
    };
    if entity == "Contact"
        && obj
            .get("Name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.trim().is_empty())
    {
        return Err("Name: a company needs a name".into());
    }
    if entity == "Person" {
        if let Some(c) = obj.get("Contact").filter(|c| !c.is_null()) {
            let id = c.get("ContactId").and_then(Value::as_i64).unwrap_or(0);
            if id != 0 && !g.contacts.contains_key(&id) {
                return Err(format!("Contact id {id} not found"));
            }
        }
    }
    Ok(())
}

async fn create(
    State(fake): State<FakeSuperOffice>,
    Path((_ctx, entity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let failure = match gate(&fake, &headers, "create", Target::Create).await {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Some(Json(body)) = body else {
        return so_error(400, "SoValidationException", "A body is required");
    };
    let rec = {
        let mut g = fake.lock();
        if table(&mut g, &entity).is_none() {
            return so_error(
                404,
                "SoNotFoundException",
                &format!("Unknown entity {entity}"),
            );
        }
        if let Err(msg) = check_body(&g, &entity, &body) {
            return so_error(400, "SoValidationException", &msg);
        }
        store(&mut g, &entity, body).1
    };
    match failure {
        Some(Failure::AfterCommit) => {
            return so_error(500, "SoException", "The connection was reset")
        }
        Some(Failure::CommitThenHang(d)) => tokio::time::sleep(d).await,
        Some(Failure::CommitThenTamper(f)) => {
            let mut rec = rec;
            f(&mut rec);
            return (StatusCode::CREATED, Json(rec)).into_response();
        }
        _ => {}
    }
    (StatusCode::CREATED, Json(rec)).into_response()
}

async fn read(
    State(fake): State<FakeSuperOffice>,
    Path((_ctx, entity, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&fake, &headers, "get", Target::Any).await {
        return *r;
    }
    let mut g = fake.lock();
    let Ok(n) = id.parse::<i64>() else {
        return so_error(
            400,
            "SoValidationException",
            &format!("{id:?} is not an id"),
        );
    };
    match table(&mut g, &entity).and_then(|t| t.get(&n)) {
        Some(v) => Json(v.clone()).into_response(),
        None => so_error(
            404,
            "SoNotFoundException",
            &format!("{entity} id {id} not found"),
        ),
    }
}

async fn update(
    State(fake): State<FakeSuperOffice>,
    Path((_ctx, entity, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let failure = match gate(&fake, &headers, "update", Target::Update).await {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let Some(Json(body)) = body else {
        return so_error(400, "SoValidationException", "A body is required");
    };
    let new = {
        let mut g = fake.lock();
        let Ok(n) = id.parse::<i64>() else {
            return so_error(
                400,
                "SoValidationException",
                &format!("{id:?} is not an id"),
            );
        };
        if let Err(msg) = check_body(&g, &entity, &body) {
            return so_error(400, "SoValidationException", &msg);
        }
        let now = fmt_date(FakeSuperOffice::now(&g));
        let key = id_key(&entity);
        let Some(rec) = table(&mut g, &entity).and_then(|t| t.get_mut(&n)) else {
            return so_error(
                404,
                "SoNotFoundException",
                &format!("{entity} id {id} not found"),
            );
        };
        // PUT replaces the entity; ids and system dates stay the server's.
        let created = rec.get("CreatedDate").cloned().unwrap_or(Value::Null);
        let mut new = body;
        if let Value::Object(m) = &mut new {
            m.insert(key.into(), json!(n));
            m.insert("CreatedDate".into(), created);
            m.insert("UpdatedDate".into(), Value::String(now));
        }
        let changes = changed_columns(rec, &new);
        *rec = new.clone();
        notify(&g, &entity, n, "changed", Some(changes));
        new
    };
    match failure {
        Some(Failure::AfterCommit) => {
            return so_error(500, "SoException", "The connection was reset")
        }
        Some(Failure::CommitThenHang(d)) => tokio::time::sleep(d).await,
        Some(Failure::CommitThenTamper(f)) => {
            let mut new = new;
            f(&mut new);
            return Json(new).into_response();
        }
        _ => {}
    }
    Json(new).into_response()
}

async fn remove(
    State(fake): State<FakeSuperOffice>,
    Path((_ctx, entity, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&fake, &headers, "delete", Target::Any).await {
        return *r;
    }
    let mut g = fake.lock();
    let n = id.parse::<i64>().unwrap_or(-1);
    match table(&mut g, &entity).and_then(|t| t.remove(&n)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => so_error(
            404,
            "SoNotFoundException",
            &format!("{entity} id {id} not found"),
        ),
    }
}

/// The archive row of a record: the columns `$select` and `$filter` can name.
fn archive_row(entity: &str, r: &Value) -> Map<String, Value> {
    let s = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
    let first = |k: &str| {
        r.get(k)
            .and_then(|a| a.get(0))
            .and_then(|e| e.get("Value"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let pairs: Vec<(&str, Value)> = if entity == "Person" {
        vec![
            ("personId", s("PersonId")),
            ("firstName", s("Firstname")),
            ("lastName", s("Lastname")),
            ("title", s("Title")),
            (
                "contactId",
                r.get("Contact")
                    .and_then(|c| c.get("ContactId"))
                    .cloned()
                    .unwrap_or(Value::Null),
            ),
            ("email/emailAddress", first("Emails")),
            ("personUpdatedDate", s("UpdatedDate")),
            ("personRegisteredDate", s("CreatedDate")),
        ]
    } else {
        vec![
            ("contactId", s("ContactId")),
            ("name", s("Name")),
            ("department", s("Department")),
            ("orgnr", s("OrgNr")),
            ("email/emailAddress", first("Emails")),
            ("updatedDate", s("UpdatedDate")),
            ("registeredDate", s("CreatedDate")),
        ]
    };
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

enum Cond {
    After(String, DateTime<Utc>),
    Before(String, DateTime<Utc>),
    Eq(String, String),
}

fn parse_when(v: &str) -> Option<DateTime<Utc>> {
    parse_date(v).or_else(|| {
        NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|n| n.and_utc())
    })
}

fn parse_filter(filter: &str, columns: &Map<String, Value>) -> Result<Vec<Cond>, String> {
    let mut out = Vec::new();
    for clause in filter.split(" and ") {
        let clause = clause.trim();
        let mut parts = clause.splitn(3, ' ');
        let (Some(col), Some(op), Some(val)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("cannot parse filter clause {clause:?}"));
        };
        if !columns.contains_key(col) {
            return Err(format!("unknown column {col:?} in $filter"));
        }
        let val = val.trim();
        let val = val
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(|| format!("the value in {clause:?} must be quoted"))?
            .replace("''", "'");
        out.push(match op {
            "after" | "before" => {
                let t = parse_when(&val).ok_or_else(|| format!("{val:?} is not a date"))?;
                if op == "after" {
                    Cond::After(col.into(), t)
                } else {
                    Cond::Before(col.into(), t)
                }
            }
            "eq" => Cond::Eq(col.into(), val),
            other => return Err(format!("unsupported operator {other:?} in $filter")),
        });
    }
    Ok(out)
}

fn matches(row: &Map<String, Value>, conds: &[Cond]) -> bool {
    conds.iter().all(|c| match c {
        Cond::After(col, t) => row
            .get(col)
            .and_then(Value::as_str)
            .and_then(parse_date)
            .is_some_and(|d| d > *t),
        Cond::Before(col, t) => row
            .get(col)
            .and_then(Value::as_str)
            .and_then(parse_date)
            .is_some_and(|d| d < *t),
        Cond::Eq(col, v) => match row.get(col) {
            Some(Value::String(s)) => s.eq_ignore_ascii_case(v),
            Some(Value::Number(n)) => n.to_string() == *v,
            _ => false,
        },
    })
}

async fn list(
    State(fake): State<FakeSuperOffice>,
    Path((ctx, entity)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let target = match entity.as_str() {
        "Person" => Target::ListOf("Person"),
        _ => Target::ListOf("Contact"),
    };
    if let Err(r) = gate(&fake, &headers, "list", target).await {
        return *r;
    }
    let due = {
        let mut g = fake.lock();
        let n = g.calls.get("list").copied().unwrap_or(0);
        g.before_list.take_due(n)
    };
    for hook in due {
        hook(&fake);
    }
    let mut g = fake.lock();
    let Some(records) = table(&mut g, &entity) else {
        return so_error(
            404,
            "SoNotFoundException",
            &format!("Unknown entity {entity}"),
        );
    };
    let sample = archive_row(&entity, &json!({}));
    let conds = match q
        .get("$filter")
        .map(|f| parse_filter(f, &sample))
        .transpose()
    {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return so_error(400, "SoODataException", &e),
    };
    let num = |k: &str, d: usize| q.get(k).map(|v| v.parse::<usize>()).unwrap_or(Ok(d));
    let (Ok(top), Ok(skip)) = (num("$top", usize::MAX), num("$skip", 0)) else {
        return so_error(
            400,
            "SoODataException",
            "$top and $skip must be whole numbers",
        );
    };
    let mut rows: Vec<Map<String, Value>> = records
        .values()
        .map(|r| archive_row(&entity, r))
        .filter(|r| matches(r, &conds))
        .collect();
    if let Some(order) = q.get("$orderBy") {
        let (col, desc) = match order.split_once(' ') {
            Some((c, dir)) => (c.to_string(), dir.eq_ignore_ascii_case("desc")),
            None => (order.clone(), false),
        };
        if !sample.contains_key(&col) {
            return so_error(
                400,
                "SoODataException",
                &format!("unknown column {col:?} in $orderBy"),
            );
        }
        rows.sort_by(|a, b| {
            let key =
                |r: &Map<String, Value>| r.get(&col).map(|v| v.to_string()).unwrap_or_default();
            let (ka, kb) = (key(a), key(b));
            // Numbers compare by value; dates and text by their text (ISO dates sort right).
            let ord = match (
                a.get(&col).and_then(Value::as_i64),
                b.get(&col).and_then(Value::as_i64),
            ) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => ka.cmp(&kb),
            };
            if desc {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    let total = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(skip)
        .take(top)
        .map(|mut r| {
            if let Some(sel) = q.get("$select") {
                let cols: Vec<&str> = sel.split(',').map(str::trim).collect();
                r.retain(|k, _| cols.contains(&k.as_str()));
            }
            Value::Object(r)
        })
        .collect();
    let mut body = json!({
        "odata.metadata": format!("/{ctx}/api/v1/$metadata"),
        "value": page,
    });
    if top != usize::MAX && skip + top < total {
        body["odata.nextLink"] = json!(format!(
            "/{ctx}/api/v1/{entity}?$skip={}&$top={top}",
            skip + top
        ));
    }
    Json(body).into_response()
}

/// `ferry sandbox superoffice` / the demo: starts the fake with sandbox credentials.
pub struct FakeSandbox;

#[async_trait]
impl Sandbox for FakeSandbox {
    async fn start(&self, addr: SocketAddr) -> anyhow::Result<SandboxHandle> {
        let fake = FakeSuperOffice::new();
        let bound = fake.serve(addr).await?;
        Ok(SandboxHandle {
            addr: bound,
            settings: FakeSuperOffice::settings(bound),
            secrets: FakeSuperOffice::secrets(),
            rate_limit: None,
            app: Arc::new(fake),
        })
    }
}

impl SandboxApp for FakeSuperOffice {
    fn seed_demo(&self) {
        let nordic = self.add_contact(
            "Nordic Freight AS",
            "NO912345678",
            "https://nordicfreight.example",
        );
        let fjord = self.add_contact("Fjord Analytics", "NO998877665", "");
        self.add_person(
            "Ingrid",
            "Solberg",
            "ingrid@nordicfreight.example",
            Some(nordic),
        );
        self.add_person("Lars", "Hagen", "lars@nordicfreight.example", Some(nordic));
        self.add_person("Maja", "Berg", "maja@fjord.example", Some(fjord));
    }

    fn user_edit(&self) -> String {
        let first = self.lock().contacts.keys().next().copied();
        match first {
            Some(id) => {
                let old = self
                    .contact(id)
                    .and_then(|c| c.get("Name").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                let new = format!("{old} Group");
                self.edit("Contact", id, json!({"Name": new}));
                format!("renamed SuperOffice Contact {id} from {old:?} to {new:?}")
            }
            None => "nothing to edit".into(),
        }
    }

    fn describe(&self) -> Vec<String> {
        let g = self.lock();
        let mut out: Vec<String> = g
            .contacts
            .values()
            .map(|c| {
                format!(
                    "Contact {} {:?}",
                    c["ContactId"],
                    c["Name"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.extend(g.persons.values().map(|p| {
            let mobile = p["MobilePhones"][0]["Value"].as_str().unwrap_or("");
            format!(
                "Person {} {} {} (Contact {}){}",
                p["PersonId"],
                p["Firstname"].as_str().unwrap_or(""),
                p["Lastname"].as_str().unwrap_or(""),
                p.get("Contact")
                    .and_then(|c| c.get("ContactId"))
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                if mobile.is_empty() {
                    String::new()
                } else {
                    format!(" mobile {mobile}")
                }
            )
        }));
        out
    }

    fn write_calls(&self) -> u64 {
        self.writes()
    }
}
