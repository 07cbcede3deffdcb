//! The SuperOffice REST client: OAuth refresh, error classification, OData listing and
//! entity reads and writes.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use ferry_framework::connector::ConnectionContext;
use ferry_framework::entity::{id_text, EntityDef, ExternalClient, Fetched, Page, PageRequest};
use ferry_framework::http::oauth::{RefreshConfig, TokenSource};
use ferry_framework::http::{ApiError, Transport};
use ferry_framework::listing::{Advance, OffsetCursor};
use ferry_framework::sync::support::merge;
use reqwest::Method;
use serde_json::Value;

use super::Settings;

/// Talks to one SuperOffice tenant.
pub struct SuperOfficeClient {
    transport: Transport,
    settings: Settings,
    api: String,
    tokens: TokenSource,
}

/// The OData list: which archive columns hold the id and the update time.
fn list_columns(entity: &EntityDef) -> (&'static str, &'static str, &'static str) {
    match entity.external_entity {
        "Person" => ("v1/Person", "personId", "personUpdatedDate"),
        _ => ("v1/Contact", "contactId", "updatedDate"),
    }
}

fn id_field(entity: &EntityDef) -> &'static str {
    match entity.external_entity {
        "Person" => "PersonId",
        _ => "ContactId",
    }
}

/// SuperOffice dates: `2024-05-01T10:00:00` (UTC) or RFC 3339.
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
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

impl SuperOfficeClient {
    pub fn new(ctx: ConnectionContext) -> anyhow::Result<Self> {
        let settings = Settings::parse(&ctx.settings)?;
        Ok(Self {
            api: settings.api_url(),
            tokens: TokenSource::new(
                &ctx.transport,
                RefreshConfig::from_secrets(
                    settings.token_url(),
                    settings.client_id.clone(),
                    None,
                    &ctx.secrets,
                ),
                ctx.tokens,
            ),
            transport: ctx.transport,
            settings,
        })
    }

    /// One API call with auth (one refresh on 401) and retries of transient failures.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        self.transport
            .with_retry(method != Method::POST, || async {
                let mut rejected: Option<String> = None;
                loop {
                    let token = self.tokens.access_token(rejected.as_deref()).await?;
                    let mut req = self
                        .transport
                        .http
                        .request(method.clone(), format!("{}{path}", self.api))
                        .bearer_auth(&token)
                        .header("Accept", "application/json")
                        .query(query);
                    if let Some(t) = &self.settings.app_token {
                        req = req.header("SO-AppToken", t);
                    }
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    let (status, wait, text) = self.transport.send(req).await?;
                    if status == 401 && rejected.is_none() {
                        rejected = Some(token);
                        continue;
                    }
                    if status == 404 && method == Method::GET {
                        return Ok(None);
                    }
                    if !(200..300).contains(&status) {
                        return Err(ApiError::from_status(status, wait, error_message(&text)));
                    }
                    if text.trim().is_empty() {
                        return Ok(Some(Value::Null));
                    }
                    return serde_json::from_str(&text).map(Some).map_err(|e| {
                        ApiError::Malformed(format!("{method} {path}: invalid JSON: {e}"))
                    });
                }
            })
            .await
    }

    async fn get_entity(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        let (path, _, _) = list_columns(entity);
        match self
            .call(Method::GET, &format!("{path}/{id}"), &[], None)
            .await?
        {
            Some(v) if v.is_object() => Ok(Some(v)),
            Some(other) => Err(ApiError::Malformed(format!(
                "{path}/{id}: expected an object, got {}",
                short(&other)
            ))),
            None => Ok(None),
        }
    }

    /// Rows of an OData archive query.
    async fn odata(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>, ApiError> {
        let v = self
            .call(Method::GET, path, query, None)
            .await?
            .unwrap_or(Value::Null);
        match v.get("value") {
            Some(Value::Array(rows)) => Ok(rows.clone()),
            _ => Err(ApiError::Malformed(format!(
                "{path}: the OData response has no `value` list: {}",
                short(&v)
            ))),
        }
    }
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

#[async_trait]
impl ExternalClient for SuperOfficeClient {
    async fn list_changed(
        &self,
        entity: &EntityDef,
        since: Option<DateTime<Utc>>,
        page: &PageRequest,
    ) -> Result<Page, ApiError> {
        let (path, id_col, date_col) = list_columns(entity);
        // The list is sorted by update date and paged by $skip: an edit during the listing
        // moves a row to the end and shifts the rest, so pages overlap (framework listing).
        let cursor = OffsetCursor::from_token(page.token.as_deref())?;
        let (skip, top) = cursor.window(page.size);
        let mut query = vec![
            ("$select", format!("{id_col},{date_col}")),
            ("$orderBy", date_col.to_string()),
            ("$top", top.to_string()),
            ("$skip", skip.to_string()),
        ];
        if let Some(s) = since {
            // `after` compares dates; times take `afterTime` (SuperOffice docs,
            // en/api/search/odata/date.md and datetime.md). The engine asks for "at or
            // after" and `afterTime` is strict, so one second earlier keeps records at the
            // boundary time; the lookback re-reads the boundary either way.
            let s = s - chrono::Duration::seconds(1);
            query.push((
                "$filter",
                format!("{date_col} afterTime '{}'", s.format("%Y-%m-%dT%H:%M:%S")),
            ));
        }
        let rows = self.odata(path, &query).await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| id_text(r.get(id_col)).unwrap_or_default())
            .collect();
        let (keep, next) = match cursor.advance(&ids, top)? {
            Advance::Rows { keep, next } => (keep, next),
            Advance::Restart { next } => {
                return Ok(Page {
                    records: Vec::new(),
                    next: Some(next),
                })
            }
        };
        let mut records = Vec::with_capacity(keep.len());
        for row in keep.into_iter().map(|i| &rows[i]) {
            let Some(id) = id_text(row.get(id_col)) else {
                records.push(Fetched::Bad {
                    id: None,
                    error: format!("{path}: a row has no {id_col}: {}", short(row)),
                });
                continue;
            };
            match self.get_entity(entity, &id).await {
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
        Ok(Page { records, next })
    }

    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        self.get_entity(entity, id).await
    }

    async fn create(&self, entity: &EntityDef, fields: &Value) -> Result<Value, ApiError> {
        let (path, _, _) = list_columns(entity);
        self.call(Method::POST, path, &[], Some(fields))
            .await?
            .filter(Value::is_object)
            .ok_or_else(|| ApiError::Malformed(format!("POST {path}: no entity in the response")))
    }

    async fn update(
        &self,
        entity: &EntityDef,
        id: &str,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        // PUT replaces the entity: read it, overlay the mapped fields, write it back.
        let (path, _, _) = list_columns(entity);
        let current = self
            .get_entity(entity, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{path}/{id}")))?;
        let body = merge(&current, fields);
        self.call(Method::PUT, &format!("{path}/{id}"), &[], Some(&body))
            .await?
            .filter(Value::is_object)
            .ok_or_else(|| {
                ApiError::Malformed(format!("PUT {path}/{id}: no entity in the response"))
            })
    }

    async fn find_match(
        &self,
        entity: &EntityDef,
        fields: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let (path, id_col, _) = list_columns(entity);
        let s = |k: &str| {
            fields
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let filter = match entity.external_entity {
            "Person" => match (s("Firstname"), s("Lastname")) {
                (Some(f), Some(l)) => {
                    format!("firstName eq {} and lastName eq {}", quote(f), quote(l))
                }
                _ => return Ok(None),
            },
            _ => match s("Name") {
                Some(n) => format!("name eq {}", quote(n)),
                None => return Ok(None),
            },
        };
        let rows = self
            .odata(
                path,
                &[
                    ("$select", id_col.to_string()),
                    ("$filter", filter),
                    ("$orderBy", id_col.to_string()),
                    ("$top", "1".into()),
                ],
            )
            .await?;
        match rows.first().and_then(|r| id_text(r.get(id_col))) {
            Some(id) => self.get_entity(entity, &id).await,
            None => Ok(None),
        }
    }

    fn record_id(&self, entity: &EntityDef, record: &Value) -> Option<String> {
        id_text(record.get(id_field(entity))).filter(|id| id != "0")
    }

    fn updated_at(&self, _entity: &EntityDef, record: &Value) -> Option<DateTime<Utc>> {
        record
            .get("UpdatedDate")
            .and_then(Value::as_str)
            .and_then(parse_date)
            .or_else(|| {
                record
                    .get("CreatedDate")
                    .and_then(Value::as_str)
                    .and_then(parse_date)
            })
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
