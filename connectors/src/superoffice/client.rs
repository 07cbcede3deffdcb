//! The SuperOffice REST client: the tenant's address, OAuth refresh, error
//! classification, keyset listing of archive rows, and reads and writes that keep what
//! Ferry does not map.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use ferry_framework::connector::ConnectionContext;
use ferry_framework::entity::{
    id_text, EntityDef, ExternalClient, Fetched, ListOrder, Page, PageRequest,
};
use ferry_framework::http::oauth::{RefreshConfig, TokenSource};
use ferry_framework::http::{ApiError, Transport};
use ferry_framework::sync::support::merge;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::columns::{self, Archive, Plan};
use super::{tenant, values, Settings};

/// The largest page asked for.
const MAX_TOP: usize = 1000;

/// Tenants (by state service address) that refused `or` in a `$filter` (undocumented
/// either way) in this process: their changed and new records are listed in two passes,
/// from the refusal on, without the refused query first.
fn refuse_or() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    SEEN.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Talks to one SuperOffice tenant.
pub struct SuperOfficeClient {
    transport: Transport,
    settings: Settings,
    tokens: TokenSource,
    /// The tenant's web API, once known (ends in `/`).
    api: tokio::sync::Mutex<Option<String>>,
    /// What the Contact and Person listings select and carry.
    contact: Plan,
    person: Plan,
    /// Each entity's default entity, read once per client (a run).
    defaults: tokio::sync::Mutex<std::collections::HashMap<&'static str, Value>>,
}

/// SuperOffice dates: `2024-05-01T10:00:00` (UTC, as the reference says of `UpdatedDate`
/// and the archives' dates), or with an offset (`+01:00`, or `-0500` as `SO-TimeZone`'s
/// `includeTZOffset` writes: SuperOfficeDocs `en/api/web-services/so-timezone.mdx`).
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Which records a listing pass asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Pass {
    /// Every record (a first sync).
    All,
    /// Updated or registered since (one query, with `or`).
    Either,
    /// Updated since; followed by [`Pass::Registered`].
    Updated,
    /// Registered since: records never edited may have no update date (unverified).
    Registered,
}

/// Where a keyset listing is: the pass and the last primary key read.
#[derive(Debug, Serialize, Deserialize)]
struct ListToken {
    pass: Pass,
    after: i64,
}

impl SuperOfficeClient {
    pub fn new(ctx: ConnectionContext) -> anyhow::Result<Self> {
        let settings = Settings::parse(&ctx.settings)?;
        let mut refresh = RefreshConfig::from_secrets(
            settings.token_url(),
            settings.client_id.clone(),
            None,
            &ctx.secrets,
        );
        refresh.endpoint_of = Some(tenant::from_token_response);
        let plan = |a: &Archive, entity: &str| match ctx.reads.get(entity) {
            Some(reads) => a.plan(reads),
            None => a.plan_whole(),
        };
        Ok(Self {
            tokens: TokenSource::new(&ctx.transport, refresh, ctx.tokens),
            contact: plan(&columns::CONTACT, "Contact"),
            person: plan(&columns::PERSON, "Person"),
            transport: ctx.transport,
            api: tokio::sync::Mutex::new(None),
            defaults: Default::default(),
            settings,
        })
    }

    fn plan(&self, entity: &EntityDef) -> &Plan {
        match entity.external_entity {
            "Person" => &self.person,
            _ => &self.contact,
        }
    }

    /// The tenant's web API: the configured `api_url`; else what the last token grant (or
    /// discovery) stored with the credential; else the state service's answer.
    async fn api(&self) -> Result<String, ApiError> {
        if let Some(u) = &self.settings.api_url {
            return Ok(tenant::with_slash(u));
        }
        let mut known = self.api.lock().await;
        if let Some(u) = known.as_ref() {
            return Ok(u.clone());
        }
        let stored = self.tokens.endpoint().await?;
        let found = match stored.filter(|u| self.belongs(u).is_ok()) {
            Some(u) => u,
            None => {
                let u = self.ask_state().await?;
                self.tokens.save_endpoint(&u)?;
                u
            }
        };
        *known = Some(found.clone());
        Ok(found)
    }

    fn belongs(&self, url: &str) -> Result<(), String> {
        tenant::belongs(
            url,
            &self.settings.context_identifier,
            &self.settings.login_url(),
        )
    }

    /// After a 421 from `stale`: asks the state service where the tenant is now.
    async fn rediscover(&self, stale: &str) -> Result<(), ApiError> {
        if self.settings.api_url.is_some() {
            return Err(ApiError::Permanent(format!(
                "HTTP 421 Misdirected Request from {stale} (the connection's `api_url`): \
                 SuperOffice serves this tenant on another host. Remove `api_url` from the \
                 connection's settings and Ferry finds the tenant itself"
            )));
        }
        let mut known = self.api.lock().await;
        if known.as_deref().is_some_and(|k| k != stale) {
            return Ok(()); // another call found it meanwhile
        }
        let found = self.ask_state().await?;
        if found == stale {
            return Err(ApiError::Transient(format!(
                "HTTP 421 Misdirected Request from {stale}, and SuperOffice's state service \
                 still names it"
            )));
        }
        tracing::info!(from = stale, to = %found, "the SuperOffice tenant moved");
        self.tokens.save_endpoint(&found)?;
        *known = Some(found);
        Ok(())
    }

    /// `GET {login}api/state/{ctx}`: where the tenant lives now.
    async fn ask_state(&self) -> Result<String, ApiError> {
        let req = self
            .transport
            .http
            .get(self.settings.state_url())
            .header("Accept", "application/json");
        let (status, wait, text) = self.transport.send(req).await?;
        if status != 200 {
            return Err(ApiError::from_status(
                status,
                wait,
                format!("SuperOffice's state service: {}", error_message(&text)),
            ));
        }
        let body: Value = serde_json::from_str(&text).map_err(|e| {
            ApiError::Malformed(format!("SuperOffice's state service: invalid JSON: {e}"))
        })?;
        let url = tenant::from_state(&body).map_err(ApiError::Transient)?;
        self.belongs(&url).map_err(|e| {
            ApiError::Permanent(format!("SuperOffice's state service answered {e}"))
        })?;
        Ok(url)
    }

    /// One exchange with the tenant: auth (one refresh on 401), its address (found again
    /// once on 421), retries of transient failures. Answers other than 2xx, 404 and 412
    /// are errors; those three are the caller's to read.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        unmodified_since: Option<&str>,
    ) -> Result<(u16, String), ApiError> {
        self.transport
            .with_retry(method != Method::POST, || async {
                let (mut rejected, mut moved) = (None::<String>, false);
                loop {
                    let token = self.tokens.access_token(rejected.as_deref()).await?;
                    let api = self.api().await?;
                    let mut req = self
                        .transport
                        .http
                        .request(method.clone(), format!("{api}{path}"))
                        .bearer_auth(&token)
                        .header("Accept", "application/json")
                        .query(query);
                    if let Some(t) = &self.settings.app_token {
                        req = req.header("SO-AppToken", t);
                    }
                    if let Some(d) = unmodified_since {
                        req = req.header("If-Unmodified-Since", d);
                    }
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    let (status, wait, text) = self.transport.send(req).await?;
                    match status {
                        401 if rejected.is_none() => rejected = Some(token),
                        421 if !moved => {
                            moved = true;
                            self.rediscover(&api).await?;
                        }
                        200..=299 | 404 | 412 => return Ok((status, text)),
                        _ => return Err(ApiError::from_status(status, wait, error_message(&text))),
                    }
                }
            })
            .await
    }

    /// A call whose 2xx answer is JSON (`Null` when empty); 404 is `None` for a GET and
    /// an error otherwise; 412 is an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let (status, text) = self
            .exchange(method.clone(), path, query, body, None)
            .await?;
        match status {
            404 if method == Method::GET => Ok(None),
            404 | 412 => Err(ApiError::from_status(status, None, error_message(&text))),
            _ => json(&method, path, &text).map(Some),
        }
    }

    /// An entity as SuperOffice holds it (values still encoded).
    async fn get_raw(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        let path = format!("{}/{id}", columns::archive(entity.external_entity).path);
        match self.call(Method::GET, &path, &[], None).await? {
            Some(v) if v.is_object() => Ok(Some(v)),
            Some(other) => Err(ApiError::Malformed(format!(
                "{path}: expected an object, got {}",
                short(&other)
            ))),
            None => Ok(None),
        }
    }

    /// The entity SuperOffice makes on "New" (`GET {path}/default`), read once a run.
    async fn defaults(&self, path: &'static str) -> Result<Value, ApiError> {
        let mut known = self.defaults.lock().await;
        if let Some(d) = known.get(path) {
            return Ok(d.clone());
        }
        let d = self
            .call(Method::GET, &format!("{path}/default"), &[], None)
            .await?
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::Object(Default::default()));
        known.insert(path, d.clone());
        Ok(d)
    }

    /// Rows of an OData archive query.
    async fn odata(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>, ApiError> {
        Ok(self.odata_page(path, query).await?.0)
    }

    /// Rows of an OData archive query, and whether the answer says more follow (an
    /// `odata.nextLink`: Swagger-v1-Contact.json, `ODataSlimResponse`).
    async fn odata_page(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Vec<Value>, bool), ApiError> {
        let mut v = self
            .call(Method::GET, path, query, None)
            .await?
            .unwrap_or(Value::Null);
        let more = v
            .get("odata.nextLink")
            .and_then(Value::as_str)
            .is_some_and(|l| !l.is_empty());
        match v.get_mut("value").map(Value::take) {
            Some(Value::Array(rows)) => Ok((rows, more)),
            _ => Err(ApiError::Malformed(format!(
                "{path}: the OData response has no `value` list: {}",
                short(&v)
            ))),
        }
    }

    /// The query of one listing page: the mapped columns, keyset on the primary key
    /// ("Always use an $orderby={primarykey}": SuperOfficeDocs
    /// `en/developer-portal/best-practices/index.mdx`), and the change filter with the
    /// time-precision operator `afterTime` (`en/api/search/odata/datetime.md`; `after`
    /// compares dates, `date.md`) on the update and registration dates (UTC).
    fn list_query(
        a: &Archive,
        plan: &Plan,
        since: Option<DateTime<Utc>>,
        at: &ListToken,
        top: usize,
    ) -> Vec<(&'static str, String)> {
        let mut filters = Vec::new();
        if let Some(s) = since {
            // The engine asks for "at or after"; `afterTime` is strict.
            let t = (s - chrono::Duration::seconds(1)).format("%Y-%m-%dT%H:%M:%S");
            let (u, r) = (a.updated, a.registered);
            match at.pass {
                Pass::All => {}
                Pass::Either => {
                    filters.push(format!("({u} afterTime '{t}' or {r} afterTime '{t}')"))
                }
                Pass::Updated => filters.push(format!("{u} afterTime '{t}'")),
                Pass::Registered => filters.push(format!("{r} afterTime '{t}'")),
            }
        }
        if at.after > 0 {
            filters.push(format!("{} gt {}", a.key, at.after));
        }
        let mut query = vec![
            ("$select", plan.select.join(",")),
            ("$orderBy", a.key.to_string()),
            ("$top", top.to_string()),
        ];
        if !filters.is_empty() {
            query.push(("$filter", filters.join(" and ")));
        }
        query
    }

    /// One page of rows. A tenant that refuses the `or` query (4xx) is asked again with
    /// the first of the two passes that replace it; when that answers, the tenant is known
    /// to take no `or`.
    async fn rows(
        &self,
        a: &Archive,
        plan: &Plan,
        since: Option<DateTime<Utc>>,
        at: &mut ListToken,
        top: usize,
    ) -> Result<(Vec<Value>, bool), ApiError> {
        let query = Self::list_query(a, plan, since, at, top);
        let failed = match self.odata_page(a.path, &query).await {
            // A server error is not read as a refusal: it would hide an outage (and a
            // failing page) behind the second pass.
            Err(e @ ApiError::Permanent(_)) if at.pass == Pass::Either => e,
            other => return other,
        };
        at.pass = Pass::Updated;
        let query = Self::list_query(a, plan, since, at, top);
        let page = self.odata_page(a.path, &query).await?;
        tracing::info!(error = %failed, "SuperOffice failed `or` in $filter; listing changed and new records in two passes");
        refuse_or().insert(self.settings.state_url());
        Ok(page)
    }

    /// Records for listed rows the list cannot carry whole: each read by id.
    async fn read_each(
        &self,
        entity: &EntityDef,
        ids: Vec<String>,
    ) -> Result<Vec<Fetched>, ApiError> {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(entity, &id).await {
                Ok(Some(r)) => records.push(Fetched::Record(r)),
                Ok(None) => {} // deleted between the list and the read
                Err(e @ (ApiError::Malformed(_) | ApiError::Permanent(_))) => {
                    records.push(Fetched::Bad {
                        id: Some(id),
                        error: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(records)
    }

    /// Writes `body` over the entity unless someone changed it since `current` was read
    /// (`If-Unmodified-Since`, answered 412: SuperOfficeDocs
    /// `en/api/web-services/endpoints/http-headers.mdx`; Swagger-v1-Contact.json
    /// `PUT /api/v1/Contact/{id}` response 412). `None`: it changed.
    async fn put_unless_changed(
        &self,
        path: &str,
        since: Option<DateTime<Utc>>,
        body: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let since = since.map(ferry_framework::http::http_date);
        let (status, text) = self
            .exchange(Method::PUT, path, &[], Some(body), since.as_deref())
            .await?;
        match status {
            412 => Ok(None),
            404 => Err(ApiError::NotFound(path.to_string())),
            _ => json(&Method::PUT, path, &text).map(Some),
        }
    }
}

/// When a record last changed: its update date, else its registration date. A date before
/// 1900 is SuperOffice's "not set" (`0001-01-01T00:00:00Z`), not a time.
fn last_change(record: &Value) -> Option<DateTime<Utc>> {
    ["UpdatedDate", "CreatedDate"].iter().find_map(|k| {
        record
            .get(*k)?
            .as_str()
            .and_then(parse_date)
            .filter(|t| chrono::Datelike::year(t) >= 1900)
    })
}

fn json(method: &Method, path: &str, text: &str) -> Result<Value, ApiError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| ApiError::Malformed(format!("{method} {path}: invalid JSON: {e}")))
}

/// SuperOffice's error JSON (`ErrorType: ErrorMessage`), else the raw body.
fn error_message(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.get("ErrorMessage").is_some() => format!(
            "{}: {}",
            v.get("ErrorType")
                .and_then(Value::as_str)
                .unwrap_or("Error"),
            v.get("ErrorMessage").and_then(Value::as_str).unwrap_or("")
        ),
        _ => text.chars().take(300).collect(),
    }
}

fn short(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}

fn object(v: Option<Value>, what: impl FnOnce() -> String) -> Result<Value, ApiError> {
    v.filter(Value::is_object)
        .ok_or_else(|| ApiError::Malformed(format!("{}: no entity in the response", what())))
}

#[async_trait]
impl ExternalClient for SuperOfficeClient {
    /// Keyset pages in primary-key order, each row a record carrying the mapped columns
    /// (read whole by id only when a mapping reads a field no column carries).
    async fn list_changed(
        &self,
        entity: &EntityDef,
        since: Option<DateTime<Utc>>,
        page: &PageRequest,
    ) -> Result<Page, ApiError> {
        let a = columns::archive(entity.external_entity);
        let plan = self.plan(entity);
        let mut at = match page.token.as_deref() {
            Some(t) => serde_json::from_str(t)
                .map_err(|e| ApiError::Malformed(format!("bad page token {t:?}: {e}")))?,
            None => ListToken {
                pass: match since {
                    None => Pass::All,
                    Some(_) if refuse_or().contains(&self.settings.state_url()) => Pass::Updated,
                    Some(_) => Pass::Either,
                },
                after: 0,
            },
        };
        // "Ask for a pagesize of 1000" (SuperOfficeDocs
        // `en/developer-portal/best-practices/index.mdx`): no larger page is documented, and
        // a tenant that answered fewer rows than asked would end the listing early.
        let top = page.size.clamp(1, MAX_TOP);
        let (rows, more) = self.rows(a, plan, since, &mut at, top).await?;
        let mut records = Vec::with_capacity(rows.len());
        let mut last = at.after;
        for row in &rows {
            match a.record_of(plan, row) {
                Ok(rec) => {
                    let id = id_text(rec.get(a.id_field)).and_then(|id| id.parse::<i64>().ok());
                    last = last.max(id.unwrap_or(0));
                    records.push(Fetched::Record(rec));
                }
                Err(error) => records.push(Fetched::Bad { id: None, error }),
            }
        }
        let full = rows.len() >= top || more;
        if full && last <= at.after {
            return Err(ApiError::Malformed(format!(
                "{}: a full page of rows without a {} past {}",
                a.path, a.key, at.after
            )));
        }
        if !plan.uncarried.is_empty() {
            let ids = records
                .iter()
                .filter_map(|f| match f {
                    Fetched::Record(r) => id_text(r.get(a.id_field)),
                    Fetched::Bad { .. } => None,
                })
                .collect();
            let bad = records
                .into_iter()
                .filter(|f| matches!(f, Fetched::Bad { .. }));
            let mut read = self.read_each(entity, ids).await?;
            read.extend(bad);
            records = read;
        }
        let next = match (full, at.pass) {
            (true, pass) => Some(ListToken { pass, after: last }),
            (false, Pass::Updated) => Some(ListToken {
                pass: Pass::Registered,
                after: 0,
            }),
            (false, _) => None,
        };
        Ok(Page {
            records,
            next: next.map(|t| serde_json::to_string(&t).unwrap_or_default()),
        })
    }

    fn list_order(&self, _entity: &EntityDef) -> ListOrder {
        ListOrder::ByKey
    }

    /// A record by id in the shape its listing gives: from its archive row when the rows
    /// carry every mapped field (so a webhook's read and the next poll agree on values
    /// the list shows in display form, a formatted phone number), else the entity.
    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        let (a, plan) = (columns::archive(entity.external_entity), self.plan(entity));
        if !plan.uncarried.is_empty() {
            return Ok(self.get_raw(entity, id).await?.map(values::decode_record));
        }
        let Ok(n) = id.parse::<i64>() else {
            return Ok(None);
        };
        let query = [
            ("$select", plan.select.join(",")),
            ("$filter", format!("{} eq {n}", a.key)),
            ("$top", "1".to_string()),
        ];
        match self.odata(a.path, &query).await?.first() {
            Some(row) => a
                .record_of(plan, row)
                .map(Some)
                .map_err(ApiError::Malformed),
            None => Ok(None),
        }
    }

    /// Starts from the entity SuperOffice would make on "New" (`GET .../default`:
    /// Swagger-v1-Contact.json, "NetServer calculates default values on the entity, which
    /// is required when creating/storing a new instance"; SuperOfficeDocs
    /// `en/api/web-services/howto/company/create-contact.mdx`), then POSTs it.
    async fn create(
        &self,
        entity: &EntityDef,
        fields: &Value,
        _key: &str,
    ) -> Result<Value, ApiError> {
        let path = columns::archive(entity.external_entity).path;
        let defaults = self.defaults(path).await?;
        let encoded = values::encode_fields(fields, &defaults).map_err(ApiError::Permanent)?;
        let body = merge(&defaults, &encoded);
        let stored = self.call(Method::POST, path, &[], Some(&body)).await?;
        object(stored, || format!("POST {path}")).map(values::decode_record)
    }

    /// Reads the entity, changes only the mapped values (lists item by item, encoded
    /// values in their kind) and PUTs it back unless it changed meanwhile. A record that
    /// changed (412) is not written over: the error leaves the write to the next run,
    /// which reads the change first and merges it field by field (a retry of this PUT
    /// whose first answer was lost meets 412 too, and may have landed: the engine treats a
    /// transient error so). A 412 for a record that reads the same as before is a tenant
    /// comparing its stamp's fraction of a second with the header's whole seconds: the
    /// PUT goes again with the next second.
    async fn update(
        &self,
        entity: &EntityDef,
        id: &str,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        let path = format!("{}/{id}", columns::archive(entity.external_entity).path);
        let read = || async {
            self.get_raw(entity, id)
                .await?
                .ok_or_else(|| ApiError::NotFound(path.clone()))
        };
        let current = read().await?;
        let encoded = values::encode_fields(fields, &current).map_err(ApiError::Permanent)?;
        let body = merge(&current, &encoded);
        let since = last_change(&current);
        let mut stored = self.put_unless_changed(&path, since, &body).await?;
        if stored.is_none() && read().await? == current {
            let next = since.map(|t| t + chrono::Duration::seconds(1));
            stored = self.put_unless_changed(&path, next, &body).await?;
        }
        match stored {
            Some(s) => object(Some(s), || format!("PUT {path}")).map(values::decode_record),
            None => Err(ApiError::Transient(format!(
                "PUT {path}: HTTP 412, the record changed in SuperOffice since Ferry read it; \
                 the next run reads the change and writes what is still Ferry's to write"
            ))),
        }
    }

    async fn find_match(
        &self,
        entity: &EntityDef,
        fields: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let a = columns::archive(entity.external_entity);
        let s = |k: &str| {
            fields
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let filter = match entity.external_entity {
            "Person" => match (s("Firstname"), s("Lastname")) {
                (Some(f), Some(l)) => {
                    format!("firstName is {} and lastName is {}", quote(f), quote(l))
                }
                _ => return Ok(None),
            },
            _ => match s("Name") {
                Some(n) => format!("name is {}", quote(n)),
                None => return Ok(None),
            },
        };
        // Text equality is `is` (SuperOfficeDocs `en/api/search/odata/strings.md`).
        let rows = self
            .odata(
                a.path,
                &[
                    ("$select", a.key.to_string()),
                    ("$filter", filter),
                    ("$orderBy", a.key.to_string()),
                    ("$top", "1".into()),
                ],
            )
            .await?;
        match rows.first().and_then(|r| id_text(r.get(a.key))) {
            Some(id) => self.get(entity, &id).await,
            None => Ok(None),
        }
    }

    fn record_id(&self, entity: &EntityDef, record: &Value) -> Option<String> {
        id_text(record.get(columns::archive(entity.external_entity).id_field))
            .filter(|id| id != "0")
    }

    fn updated_at(&self, _entity: &EntityDef, record: &Value) -> Option<DateTime<Utc>> {
        last_change(record)
    }

    fn display_name(&self, entity: &EntityDef, record: &Value) -> Option<String> {
        let s = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or("");
        match entity.external_entity {
            "Person" => Some(
                format!("{} {}", s("Firstname"), s("Lastname"))
                    .trim()
                    .to_string(),
            ),
            _ => Some(s("Name").to_string()),
        }
        .filter(|n| !n.is_empty())
    }
}
