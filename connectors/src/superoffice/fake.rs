//! A faithful fake SuperOffice tenant: stateful Contacts and Persons, the OAuth token
//! endpoint, OData listing with `$select`, `$filter` (`after`/`before` with a date,
//! `afterTime`/`beforeTime` with a time, `eq`, `and`), `$orderBy`, `$top`, `$skip`,
//! SuperOffice's error JSON and bearer-token checks; faults, clock and call counts through
//! the shared [`FakeControl`]. Used by the tests, `ferry demo`, `ferry sandbox` and the
//! conformance kit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use ferry_framework::sandbox::{
    answer_stored, bearer_token, AfterStore, AppUser, ErrorBody, FakeControl, Sandbox, SandboxApp,
    SandboxHandle, Variant, Waiting,
};
use serde_json::{json, Map, Value};

use super::client::parse_date;

pub const CONTEXT: &str = "Cust12345";
pub const CLIENT_ID: &str = "ferry-sandbox";
pub const CLIENT_SECRET: &str = "sandbox-client-secret";
pub const REFRESH_TOKEN: &str = "sandbox-refresh-token";

pub use ferry_framework::sandbox::{Fault, Target};

#[derive(Default)]
struct Inner {
    contacts: BTreeMap<i64, Value>,
    persons: BTreeMap<i64, Value>,
    next_id: i64,
    tokens: HashSet<String>,
    /// Whether an admin revoked the refresh token (the token endpoint refuses it).
    revoked: bool,
    /// The variant where rows of never-edited records have no update date.
    no_update_date_on_insert: bool,
    /// The variant where dates are the tenant's local time (else UTC, as documented).
    local_times: bool,
    /// Every access token handed out.
    issued: Vec<String>,
    control: Arc<FakeControl>,
    /// Where webhooks go (`TargetUrl`) and the webhook's `Secret`, once registered.
    webhook: Option<(String, Option<String>)>,
}

/// A change a user makes while a listing is under way.
pub type ListHook = Box<dyn FnOnce(&FakeSuperOffice) + Send>;

/// Handle on the fake's state, shared with its server.
#[derive(Clone)]
pub struct FakeSuperOffice {
    inner: Arc<Mutex<Inner>>,
    control: Arc<FakeControl>,
}

impl Default for FakeSuperOffice {
    fn default() -> Self {
        let control = Arc::new(FakeControl::default());
        let inner = Inner {
            control: control.clone(),
            ..Default::default()
        };
        FakeSuperOffice {
            inner: Arc::new(Mutex::new(inner)),
            control,
        }
    }
}

/// The fake's clock as SuperOffice writes dates, without an offset: in UTC, as the
/// reference says (docs, `PUT Contact/{id}`: "UpdatedDate: Date last updated in UTC"), or
/// in the tenant's wall-clock time under the `tenant-local-times` variant.
fn stamp(g: &Inner) -> String {
    let c = &g.control;
    let now = c.now();
    let t = if g.local_times {
        c.local(now)
    } else {
        now.naive_utc()
    };
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// SuperOffice's error JSON, for the shared faults.
struct SoErrors;

impl ErrorBody for SoErrors {
    fn status(&self, status: StatusCode, message: &str) -> Response {
        so_error(status.as_u16(), "SoException", message)
    }
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
        self.control.set_clock(t);
    }

    /// Calls received by kind: `token`, `list`, `get`, `create`, `update`, `delete`.
    pub fn calls(&self, kind: &str) -> u64 {
        self.control.calls(kind)
    }

    /// Creates plus updates: what a test asserts for "zero writes".
    pub fn writes(&self) -> u64 {
        self.calls("create") + self.calls("update")
    }

    /// Runs `hook` (a user's edit, say) just before the `n`-th list request (counting
    /// from 1 over the fake's life) is answered.
    pub fn before_list(&self, n: u64, hook: ListHook) {
        let fake = self.clone();
        self.control.before_list(n, Box::new(move || hook(&fake)));
    }

    /// Serves `fault` for the next request `target` matches.
    pub fn fail_next(&self, target: Target, fault: Fault) {
        self.control.fail_next(target, fault);
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
        let now = stamp(&g);
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
    (
        code,
        Json(json!({
            "Error": true, "ErrorType": kind, "ErrorMessage": message,
            "ErrorSource": "SuperOffice.Services.Implementation",
        })),
    )
        .into_response()
}

/// Counts the call, checks the bearer token and serves an injected fault if one is due.
/// `Err` is the answer to give instead; `Ok` says what to do after storing a write.
async fn gate(
    fake: &FakeSuperOffice,
    headers: &HeaderMap,
    kind: &str,
    entity: &str,
) -> Result<Option<AfterStore>, Box<Response>> {
    // What users do during a listing happens before the page is read.
    fake.control.receive(kind, "list");
    {
        let g = fake.lock();
        let token = bearer_token(headers);
        if !g.tokens.contains(token) {
            return Err(Box::new(so_error(
                401,
                "SoAuthenticationException",
                "Invalid or expired access token",
            )));
        }
    }
    fake.control
        .serve_fault(kind, entity, &SoErrors)
        .await
        .map_err(Box::new)
}

async fn token(
    State(fake): State<FakeSuperOffice>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = fake.control.gate("token", "", &SoErrors).await {
        return r;
    }
    let mut g = fake.lock();
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
        || g.revoked
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
    g.issued.push(access.clone());
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
    let now = stamp(g);
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
        // Unverified either way (contract-findings §1, "change filter"): a record never
        // edited may carry no update date; the fake offers both.
        let updated = if g.no_update_date_on_insert {
            Value::Null
        } else {
            Value::String(now)
        };
        r.insert("UpdatedDate".into(), updated);
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
        "Timestamp": stamp(g),
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
    let after = match gate(&fake, &headers, "create", &entity).await {
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
    // POST answers 200 with the entity (specs/superoffice/Swagger-v1-Contact.json,
    // `POST /api/v1/Contact`: responses 200 only).
    answer_stored(after, rec, &SoErrors, |rec| Json(rec).into_response()).await
}

async fn read(
    State(fake): State<FakeSuperOffice>,
    Path((_ctx, entity, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&fake, &headers, "get", &entity).await {
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
    let after = match gate(&fake, &headers, "update", &entity).await {
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
        let now = stamp(&g);
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
    answer_stored(after, new, &SoErrors, |v| Json(v).into_response()).await
}

async fn remove(
    State(fake): State<FakeSuperOffice>,
    Path((_ctx, entity, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&fake, &headers, "delete", &entity).await {
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
            // The date operators compare dates and take a date; times take the DateTime
            // operators (SuperOffice docs, en/api/search/odata/date.md and datetime.md:
            // `date after '2020-05-28'`, `afterTime '2020-05-28T15:00:01'`).
            "after" | "before" => {
                let d = NaiveDate::parse_from_str(&val, "%Y-%m-%d").map_err(|_| {
                    format!("{op} takes a date (yyyy-mm-dd), not {val:?}; use {op}Time for a time")
                })?;
                let t = d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
                if op == "after" {
                    // After the whole day.
                    Cond::After(
                        col.into(),
                        t + chrono::Duration::days(1) - chrono::Duration::seconds(1),
                    )
                } else {
                    Cond::Before(col.into(), t)
                }
            }
            "afterTime" | "beforeTime" => {
                let t =
                    parse_when(&val).ok_or_else(|| format!("{val:?} is not a date and time"))?;
                if op == "afterTime" {
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
    if let Err(r) = gate(&fake, &headers, "list", &entity).await {
        return *r;
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
        Err(e) => {
            fake.control.refuse_off_contract(&e);
            return so_error(400, "SoODataException", &e);
        }
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
    if top != usize::MAX && skip.saturating_add(top) < total {
        body["odata.nextLink"] = json!(format!(
            "/{ctx}/api/v1/{entity}?$skip={}&$top={top}",
            skip.saturating_add(top)
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

    fn control(&self) -> &FakeControl {
        &self.control
    }

    fn user(&self) -> Option<&dyn AppUser> {
        Some(self)
    }
}

const NO_UPDATE_DATE: &str = "no-update-date-on-insert";
const LOCAL_TIMES: &str = "tenant-local-times";

/// The conformance kit's user: companies (hub Organizations).
impl AppUser for FakeSuperOffice {
    fn entity(&self) -> &'static str {
        "organization"
    }

    fn create(&self, name: &str) -> String {
        self.add_contact(name, "", "").to_string()
    }

    fn rename(&self, id: &str, name: &str) -> bool {
        let id = id.parse().unwrap_or(-1);
        self.edit("Contact", id, json!({ "Name": name }))
    }

    fn delete(&self, id: &str) -> bool {
        let id = id.parse().unwrap_or(-1);
        self.lock().contacts.remove(&id).is_some()
    }

    fn names(&self) -> Vec<(String, String)> {
        self.contacts()
            .iter()
            .map(|c| {
                let name = c["Name"].as_str().unwrap_or_default().to_string();
                (c["ContactId"].to_string(), name)
            })
            .collect()
    }

    /// A described first e-mail, a second e-mail, a second phone and a user-defined field.
    fn add_unmapped(&self, id: &str) -> bool {
        let Some(c) = self.contact(id.parse().unwrap_or(-1)) else {
            return false;
        };
        let first = c["Emails"][0]["Value"]
            .as_str()
            .unwrap_or("office@kit.example")
            .to_string();
        let item = |v: &str, d: &str| json!({"Value": v, "StrippedValue": v, "Description": d});
        self.edit(
            "Contact",
            c["ContactId"].as_i64().unwrap_or(-1),
            json!({
                "Emails": [item(&first, "Main office"), item("private@kit.example", "Private")],
                "Phones": [item("+47 22 00 00 00", "Switchboard"), item("+47 22 00 00 01", "Fax")],
                "UserDefinedFields": {"SuperOffice:7": "kept", "SuperOffice:8": "[I:42]"},
            }),
        )
    }

    fn unmapped_intact(&self, id: &str) -> Result<(), String> {
        let c = self
            .contact(id.parse().unwrap_or(-1))
            .ok_or("the contact is gone")?;
        let want = [
            ("/Emails/0/Description", "Main office"),
            ("/Emails/1/Value", "private@kit.example"),
            ("/Emails/1/Description", "Private"),
            ("/Phones/1/Value", "+47 22 00 00 01"),
            ("/UserDefinedFields/SuperOffice:7", "kept"),
            ("/UserDefinedFields/SuperOffice:8", "[I:42]"),
        ];
        for (path, v) in want {
            let got = c.pointer(path).and_then(Value::as_str);
            if got != Some(v) {
                return Err(format!("{path} is {got:?}, was {v:?}"));
            }
        }
        Ok(())
    }

    /// A name that is not text.
    fn corrupt(&self, id: &str) -> bool {
        let id = id.parse().unwrap_or(-1);
        match self.lock().contacts.get_mut(&id) {
            Some(c) => {
                c["Name"] = json!({"Text": ["not", "a", "name"]});
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
        self.lock().revoked = true;
        true
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            Variant {
                name: NO_UPDATE_DATE,
                about: "a record never edited has no update date in the archive list \
                        (unverifiable: contract-findings §5.3)",
            },
            Variant {
                name: LOCAL_TIMES,
                about: "dates are the tenant's wall-clock time without an offset (the \
                        reference says UpdatedDate is in UTC, its samples carry +01:00)",
            },
        ]
    }

    fn set_variant(&self, name: &str) -> bool {
        let mut g = self.lock();
        g.no_update_date_on_insert = name == NO_UPDATE_DATE;
        g.local_times = name == LOCAL_TIMES;
        g.no_update_date_on_insert || g.local_times
    }

    fn waiting(&self) -> Vec<Waiting> {
        const LISTS: &str = "issue 16 (lists that carry the fields): each listed row is read \
                             with a GET, so rows a listing meets again are read again";
        const NEW: &str = "issue 16 (the right change filter): the filter is on the update \
                           date alone, so a record never edited is never listed";
        const ZONE: &str = "issue 16: the connector reads SuperOffice's times as UTC; with \
                            local times it must learn the tenant's zone (or ask for UTC with \
                            the documented SO-TimeZone header)";
        let w = |case, variant, failure, why| Waiting {
            case,
            variant,
            failure,
            why,
        };
        vec![
            w("idle_run_writes_nothing", "", "records one by one", LISTS),
            w(
                "changes_during_listing",
                NO_UPDATE_DATE,
                "Created Mid-Listing",
                NEW,
            ),
            w(
                "shared_update_time_interrupted",
                NO_UPDATE_DATE,
                "reported no error",
                NEW,
            ),
            w(
                "tenant_time_zone_east",
                LOCAL_TIMES,
                "lost a conflict",
                ZONE,
            ),
            w(
                "tenant_time_zone_west",
                LOCAL_TIMES,
                "lost a conflict",
                ZONE,
            ),
        ]
    }

    fn issued_secrets(&self) -> Vec<String> {
        self.lock().issued.clone()
    }
}
