//! A faithful fake SuperOffice tenant: stateful Contacts and Persons; the authentication
//! host's token endpoint (with an id token naming the tenant's web API) and state
//! service; the tenant's web API on another host, which answers 421 at any other address;
//! OData listing of archive rows (`PrimaryKey`, `EntityName`, the documented columns)
//! with `$select`, `$filter` (`after`/`before` with a date, `afterTime`/`beforeTime` with
//! a time, `eq`/`gt`/`ge`/`lt`/`le`, `and`; `or` and parentheses unless a variant refuses
//! them), `$orderBy`, `$top`, `$skip`; `GET …/default`; PUT with `If-Unmodified-Since`;
//! SuperOffice's error JSON and bearer-token checks; faults, clock and call counts through
//! the shared [`FakeControl`]. Used by the tests, `ferry demo`, `ferry sandbox`, `ferry
//! bench` and the conformance kit.
//!
//! Hosts: the fake serves every host on one socket. The authentication host is the
//! socket's root (`/login/…`, `/api/state/…`); a tenant host is the first path segment of
//! the tenant's address (`/sod2/Cust12345/api/`), so a tenant can move (`/sod3/…`) and
//! the old address, or the unnumbered one (`/Cust12345/api/`), answers 421 as SuperOffice
//! does (SuperOfficeDocs `en/developer-portal/best-practices/tenant-status/check-status.mdx`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, Utc};
use ferry_framework::sandbox::{
    answer_stored, bearer_token, fake_date, AfterStore, AppUser, ErrorBody, FakeControl, Sandbox,
    SandboxApp, SandboxHandle, Variant,
};
use serde_json::{json, Value};

use super::client::parse_date;
use super::values::ENCODED_MAPS;

mod archive;

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
    /// The variant where `$filter` takes no `or` and no parentheses.
    no_or: bool,
    /// The variant where list rows show phone numbers formatted, unlike the entity.
    formatted_phones: bool,
    /// The variant where `If-Unmodified-Since` fails at the stamp's own second.
    sub_second: bool,
    /// The tenant's host: the first path segment of its web API's address.
    host: String,
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
            host: "sod2".into(),
            ..Default::default()
        };
        FakeSuperOffice {
            inner: Arc::new(Mutex::new(inner)),
            control,
        }
    }
}

/// The fake's clock as SuperOffice writes created and updated dates: UTC without an
/// offset. "These are always UTC, and so their values are not affected by the TimeZone
/// header" (SuperOfficeDocs `en/api/web-services/so-timezone.mdx`; Swagger-v1-Contact.json,
/// `UpdatedDate`: "Date last updated in UTC").
fn stamp(g: &Inner) -> String {
    g.control
        .now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
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
            .route("/api/state/{ctx}", get(state))
            .route("/{host}/{ctx}/api/v1/{entity}", get(list).post(create))
            .route(
                "/{host}/{ctx}/api/v1/{entity}/{id}",
                get(read).put(update).delete(remove),
            )
            .fallback(misdirected)
            .layer(axum::middleware::map_response_with_state(
                self.control.clone(),
                fake_date,
            ))
            .with_state(self.clone())
    }

    /// Connection settings pointing at a fake served on `addr`: the authentication host
    /// only, so the connector finds the tenant as it must for SuperOffice Online.
    pub fn settings(addr: SocketAddr) -> Value {
        json!({
            "environment": "sod",
            "context_identifier": CONTEXT,
            "client_id": CLIENT_ID,
            "login_url": format!("http://{addr}/"),
        })
    }

    /// The tenant's web API on a fake served at `addr`, as the id token and the state
    /// service give it (ends in `/`).
    pub fn tenant_url(&self, addr: &str) -> String {
        format!("http://{addr}/{}/{CONTEXT}/api/", self.lock().host)
    }

    /// Moves the tenant to another host (SuperOffice balancing load): its old address
    /// answers 421 from now on, the state service and new id tokens name the new one.
    pub fn move_tenant(&self, host: &str) {
        self.lock().host = host.to_string();
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
        apply_fields(rec, fields, id_key(entity));
        rec["UpdatedDate"] = Value::String(now);
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

/// "Calls to the wrong public endpoint return HTTP status code 421 - Misdirected request
/// with an additional error description saying "Wrong subdomain used to access tenant""
/// (SuperOfficeDocs `en/developer-portal/best-practices/tenant-status/check-status.mdx`).
fn wrong_host() -> Response {
    so_error(
        421,
        "SoMisdirectedRequest",
        "Wrong subdomain used to access tenant",
    )
}

/// Any other address: the tenant's API at a host it is not on (the unnumbered
/// authentication host, `/Cust12345/api/v1/…`) answers 421; anything else 404.
async fn misdirected(State(fake): State<FakeSuperOffice>, uri: axum::http::Uri) -> Response {
    if uri.path().contains("/api/v1/") {
        fake.control.count("misdirected");
        return wrong_host();
    }
    so_error(404, "SoNotFoundException", "No such address")
}

/// The tenant a request addressed: `Err` (421) unless it is this tenant at its host.
fn at_tenant(fake: &FakeSuperOffice, host: &str, ctx: &str) -> Result<(), Box<Response>> {
    let g = fake.lock();
    if host != g.host || ctx != CONTEXT {
        fake.control.count("misdirected");
        return Err(Box::new(wrong_host()));
    }
    Ok(())
}

/// Checks the address, counts the call, checks the bearer token and serves an injected
/// fault if one is due. `Err` is the answer to give instead; `Ok` says what to do after
/// storing a write.
async fn gate(
    fake: &FakeSuperOffice,
    headers: &HeaderMap,
    (host, ctx): (&str, &str),
    kind: &str,
    entity: &str,
) -> Result<Option<AfterStore>, Box<Response>> {
    at_tenant(fake, host, ctx)?;
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

/// The state service: where the tenant lives (check-status.mdx: `GET
/// https://{env}.superoffice.com/api/state/{ctx}`, the answer's fields as documented).
async fn state(
    State(fake): State<FakeSuperOffice>,
    Path(ctx): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = fake.control.gate("state", "", &SoErrors).await {
        return r;
    }
    if ctx != CONTEXT {
        return so_error(404, "SoNotFoundException", "Unknown tenant");
    }
    let g = fake.lock();
    let root = format!("http://{}", authority(&headers));
    Json(json!({
        "ContextIdentifier": CONTEXT,
        "Endpoint": format!("{root}/{}/{CONTEXT}", g.host),
        "State": "Running",
        "IsRunning": true,
        "ValidUntil": (g.control.now() + chrono::Duration::minutes(5)).to_rfc3339(),
        "Api": format!("{root}/{}/{CONTEXT}/api", g.host),
        "Version": "Release_11.10_fake",
    }))
    .into_response()
}

/// The `host:port` a request was sent to.
fn authority(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string()
}

async fn token(
    State(fake): State<FakeSuperOffice>,
    headers: HeaderMap,
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
    // "The response contains the token type, access token, expiration in seconds, and id
    // token" (SuperOfficeDocs `en/api/authentication/online/sign-in-user/auth-code-flow.mdx`);
    // the claims as `en/api/authentication/online/validate-security-tokens.mdx` lists them.
    let claims = json!({
        super::tenant::WEBAPI_URL_CLAIM:
            format!("http://{}/{}/{CONTEXT}/api/", authority(&headers), g.host),
        "http://schemes.superoffice.net/identity/ctx": CONTEXT,
        "http://schemes.superoffice.net/identity/associateid": "5",
    });
    Json(json!({
        "token_type": "Bearer", "access_token": access, "expires_in": 3600,
        "id_token": super::tenant::id_token(&claims),
    }))
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

/// The user-defined fields the fake's tenant defines, each empty in its kind (text `""`,
/// a number `[I:0]`): an entity carries every one its type has.
fn udefs(entity: &str) -> Value {
    match entity {
        "Person" => json!({"SuperOffice:1": ""}),
        _ => json!({"SuperOffice:1": "", "SuperOffice:3": "[I:0]"}),
    }
}

/// An entity with nothing set, as a POST of `{}` would store it.
fn blank(entity: &str, id: i64) -> Value {
    let mut rec = match entity {
        "Person" => json!({
            "PersonId": id, "Firstname": "", "MiddleName": "", "Lastname": "", "Title": "",
            "Emails": [], "MobilePhones": [], "OfficePhones": [], "Contact": null,
        }),
        _ => json!({
            "ContactId": id, "Name": "", "Department": "", "OrgNr": "", "Number1": "",
            "Emails": [], "Urls": [], "Phones": [], "Persons": [],
        }),
    };
    rec["UserDefinedFields"] = udefs(entity);
    rec["CustomFields"] = udefs(entity);
    rec
}

/// `GET /api/v1/{entity}/default`: "NetServer calculates default values on the entity,
/// which is required when creating/storing a new instance" (Swagger-v1-Contact.json). The
/// fake's tenant defaults the country (Norway).
fn defaults(entity: &str) -> Option<Value> {
    if !matches!(entity, "Contact" | "Person") {
        return None;
    }
    let mut d = blank(entity, 0);
    d["Country"] = json!({"CountryId": 578, "Name": "Norway"});
    Some(d)
}

/// Stores a new record: assigns the id and dates, fills the defaults SuperOffice returns.
fn store(g: &mut Inner, entity: &str, body: Value) -> (i64, Value) {
    g.next_id += 1;
    let id = g.next_id;
    let now = stamp(g);
    let mut rec = blank(entity, id);
    apply_fields(&mut rec, body, id_key(entity));
    rec["CreatedDate"] = Value::String(now.clone());
    // Unverified either way (contract-findings §1, "change filter"): a record never
    // edited may carry no update date; the fake offers both.
    rec["UpdatedDate"] = if g.no_update_date_on_insert {
        Value::Null
    } else {
        Value::String(now)
    };
    if let Some(t) = table(g, entity) {
        t.insert(id, rec.clone());
    }
    notify(g, entity, id, "created", None);
    (id, rec)
}

/// Writes `fields` into a stored record as a user's edit or a create does: each field
/// replaces the record's, the user-defined and custom field maps key by key (see
/// [`mirror_custom_fields`]); the record's id stays.
fn apply_fields(rec: &mut Value, fields: Value, id_key: &str) {
    mirror_custom_fields(rec, &fields);
    if let (Value::Object(r), Value::Object(f)) = (rec, fields) {
        for (k, v) in f {
            if !ENCODED_MAPS.contains(&k.as_str()) && k != id_key {
                r.insert(k, v);
            }
        }
    }
}

/// Applies `body`'s user-defined and custom field values to `rec`, keeping the two maps in
/// agreement: "Custom fields combines user defined fields and extra fields into one
/// bucket" (Swagger-v1-Contact.json, `CustomFields`), so a user-defined field set through
/// either shows in both; extra fields (`x_…`) are in `CustomFields` only. Where a body
/// sets one key differently in both maps (Ferry never does) `CustomFields` wins, as the
/// map that supersedes the other.
fn mirror_custom_fields(rec: &mut Value, body: &Value) {
    // `ENCODED_MAPS` lists `UserDefinedFields` first: `CustomFields` is applied last.
    let maps = ENCODED_MAPS
        .iter()
        .filter_map(|m| body.get(*m)?.as_object());
    for (k, v) in maps.flatten() {
        let maps: &[&str] = if k.starts_with("x_") {
            &["CustomFields"]
        } else {
            &ENCODED_MAPS
        };
        for m in maps {
            if !rec.get(*m).is_some_and(Value::is_object) {
                rec[*m] = json!({});
            }
            rec[*m][k] = v.clone();
        }
    }
}

/// What a PUT body drops of the stored record: list items (the second e-mail), their
/// fields (an e-mail's description) and field values. SuperOffice itself takes such a
/// PUT ("HTTP PUT replaces the entire entity": SuperOfficeDocs
/// `en/api/web-services/endpoints/rest-webapi/index.mdx`) and deletes them; the fake
/// refuses it, so a client that sends a partial entity fails the tests instead of
/// wiping users' data.
fn dropped(old: &Value, new: &Value) -> Option<String> {
    let (Value::Object(o), Value::Object(n)) = (old, new) else {
        return None;
    };
    for (k, ov) in o {
        let nv = n.get(k);
        match ov {
            Value::Array(items) if !items.is_empty() => {
                let got = nv.and_then(Value::as_array).map_or(0, Vec::len);
                if got < items.len() {
                    return Some(format!("{k} had {} items, the PUT has {got}", items.len()));
                }
                for (i, item) in items.iter().enumerate() {
                    for (f, v) in item.as_object().into_iter().flatten() {
                        let kept = nv.and_then(|a| a.get(i)).and_then(|it| it.get(f)).is_some();
                        if !kept && v.as_str().is_some_and(|s| !s.is_empty()) {
                            return Some(format!("{k}[{i}].{f} is missing"));
                        }
                    }
                }
            }
            Value::Object(m) if ENCODED_MAPS.contains(&k.as_str()) => {
                for (f, v) in m {
                    let kept = nv.and_then(|x| x.get(f)).is_some();
                    if !kept && v.as_str().is_some_and(|s| !s.is_empty()) {
                        return Some(format!("{k}[{f:?}] is missing"));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// `If-Unmodified-Since`: "Returns HTTP code 412 Precondition failed if the entity has been
/// modified since the given date+time on the PUT update request" (SuperOfficeDocs
/// `en/api/web-services/endpoints/http-headers.mdx`), compared in whole seconds as HTTP
/// dates are (RFC 9110 §13.1.4).
fn modified_since(headers: &HeaderMap, rec: &Value, sub_second: bool) -> bool {
    let Some(since) = headers
        .get("If-Unmodified-Since")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
    else {
        return false;
    };
    ["UpdatedDate", "CreatedDate"]
        .iter()
        .find_map(|k| rec.get(*k)?.as_str().and_then(parse_date))
        .is_some_and(|m| {
            m.timestamp() > since.timestamp() || (sub_second && m.timestamp() == since.timestamp())
        })
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
    Path((host, ctx, entity)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let after = match gate(&fake, &headers, (&host, &ctx), "create", &entity).await {
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
    Path((host, ctx, entity, id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let kind = if id == "default" { "default" } else { "get" };
    if let Err(r) = gate(&fake, &headers, (&host, &ctx), kind, &entity).await {
        return *r;
    }
    let mut g = fake.lock();
    if id == "default" {
        return match defaults(&entity) {
            Some(d) => Json(d).into_response(),
            None => so_error(
                404,
                "SoNotFoundException",
                &format!("Unknown entity {entity}"),
            ),
        };
    }
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
    Path((host, ctx, entity, id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let after = match gate(&fake, &headers, (&host, &ctx), "update", &entity).await {
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
        let sub_second = g.sub_second;
        let key = id_key(&entity);
        let Some(rec) = table(&mut g, &entity).and_then(|t| t.get_mut(&n)) else {
            return so_error(
                404,
                "SoNotFoundException",
                &format!("{entity} id {id} not found"),
            );
        };
        if modified_since(&headers, rec, sub_second) {
            return so_error(
                412,
                "SoPreconditionFailed",
                &format!("Update stopped because {entity}Entity has changed since the requested If-Unmodified-Since timestamp."),
            );
        }
        // PUT replaces the entity; ids and system dates stay the server's.
        let created = rec.get("CreatedDate").cloned().unwrap_or(Value::Null);
        let mut new = body.clone();
        mirror_custom_fields(&mut new, &body);
        if let Value::Object(m) = &mut new {
            m.insert(key.into(), json!(n));
            m.insert("CreatedDate".into(), created);
            m.insert("UpdatedDate".into(), Value::String(now));
        }
        if let Some(what) = dropped(rec, &new) {
            let msg = format!("refused by the fake: the PUT would delete data ({what})");
            fake.control.refuse_off_contract(&msg);
            return so_error(400, "SoValidationException", &msg);
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
    Path((host, ctx, entity, id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&fake, &headers, (&host, &ctx), "delete", &entity).await {
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

/// `GET /api/v1/{entity}`: an OData archive list (see [`archive`]).
async fn list(
    State(fake): State<FakeSuperOffice>,
    Path((host, ctx, entity)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = gate(&fake, &headers, (&host, &ctx), "list", &entity).await {
        return *r;
    }
    let mut g = fake.lock();
    let (allow_or, formatted) = (!g.no_or, g.formatted_phones);
    let Some(records) = table(&mut g, &entity) else {
        return so_error(
            404,
            "SoNotFoundException",
            &format!("Unknown entity {entity}"),
        );
    };
    let query = match archive::Query::parse(&entity, &q, allow_or) {
        Ok(query) => query,
        Err(e) => {
            fake.control.refuse_off_contract(&e);
            return so_error(400, "SoODataException", &e);
        }
    };
    let (page, more) = match query.keyset_start(archive::key(&entity)) {
        Some(start) => query.answer(
            &entity,
            records.range(start..).map(|(_, r)| r),
            formatted,
            true,
        ),
        None => query.answer(&entity, records.values(), formatted, false),
    };
    let mut body = json!({
        "odata.metadata": format!("/{host}/{ctx}/api/v1/$metadata"),
        "odata.nextLink": null,
        "value": page,
    });
    if let Some(skip) = more {
        body["odata.nextLink"] = json!(format!(
            "/{host}/{ctx}/api/v1/{entity}?$skip={skip}&$top={}",
            query.top
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
            // The fake throttles nothing: tests and the kit need not wait on SuperOffice's
            // 10 calls a second (the connector's default, which `ferry bench` measures).
            rate_limit: Some(ferry_framework::http::rate::RateLimits {
                per_second: Some(1000),
                ..Default::default()
            }),
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

    /// Companies with a name, VAT number, website, e-mail, phone and a text user-defined
    /// field, registered one after another over the day before now.
    fn seed_many(&self, n: usize) -> bool {
        let mut g = self.lock();
        let saved = g.control.fixed_clock();
        let start = Utc::now() - chrono::Duration::days(1);
        let step = 86_400_000 / n.max(1) as i64;
        for i in 0..n {
            g.control.set_clock(Some(
                start + chrono::Duration::milliseconds(step * i as i64),
            ));
            let body = json!({
                "Name": format!("Bench Company {i:07}"),
                "OrgNr": format!("NO{i:09}"),
                "Urls": [element(&format!("https://company{i}.bench.example"))],
                "Emails": [element(&format!("post@company{i}.bench.example"))],
                "Phones": [element(&format!("+47 22 {i:07}"))],
                "UserDefinedFields": {"SuperOffice:1": "Shipping"},
            });
            store(&mut g, "Contact", body);
        }
        g.control.set_clock(saved);
        true
    }

    fn control(&self) -> &FakeControl {
        &self.control
    }

    fn user(&self) -> Option<&dyn AppUser> {
        Some(self)
    }
}

const NO_UPDATE_DATE: &str = "no-update-date-on-insert";
const NO_OR: &str = "no-or-in-filter";
const FORMATTED_PHONES: &str = "formatted-phones";
const SUB_SECOND: &str = "precondition-sub-second";

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
                name: NO_OR,
                about: "$filter takes no `or` and no parentheses (OData `or` is not \
                        documented either way: SuperOfficeDocs en/api/search/odata/)",
            },
            Variant {
                name: FORMATTED_PHONES,
                about: "list rows show a phone number formatted, unlike the entity's Value \
                        (`formattedNumber`: \"Displays phone number\", archive-providers)",
            },
            Variant {
                name: SUB_SECOND,
                about: "If-Unmodified-Since fails within the stamp's own second (the \
                        server keeps fractions; the header has whole seconds)",
            },
        ]
    }

    /// Without `or`, records changed and records new since need a query each (a record
    /// never edited may have no update date to filter on).
    fn idle_list_calls(&self) -> u64 {
        if self.lock().no_or {
            2
        } else {
            1
        }
    }

    fn set_variant(&self, name: &str) -> bool {
        let mut g = self.lock();
        g.no_update_date_on_insert = name == NO_UPDATE_DATE;
        g.no_or = name == NO_OR;
        g.formatted_phones = name == FORMATTED_PHONES;
        g.sub_second = name == SUB_SECOND;
        [NO_UPDATE_DATE, NO_OR, FORMATTED_PHONES, SUB_SECOND].contains(&name)
    }

    fn issued_secrets(&self) -> Vec<String> {
        self.lock().issued.clone()
    }
}
