//! The BlizWork client: every call is a POST of JSON to `<base><op>/<apiToken>/`, answered
//! with `{resultCode, resultMessage, payload}`; success is HTTP 2xx and `resultCode` 0.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_framework::connector::ConnectionContext;
use ferry_framework::entity::{EntityDef, ExternalClient, Fetched, Page, PageRequest};
use ferry_framework::http::{ApiError, Transport};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{DraftCalls, Handshake, Settings};

pub struct BlizWorkClient {
    transport: Transport,
    settings: Settings,
    token: String,
    /// The listing in progress: the list comes whole, the cases are fetched page by page.
    listing: Mutex<Option<Listing>>,
}

/// The case numbers of one process changed since a time, oldest change first.
type Listing = (String, Option<DateTime<Utc>>, Vec<i64>);

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// BlizWork reports errors as text: the wording decides the class.
fn classify(code: i64, message: &str) -> ApiError {
    let m = format!("resultCode {code}: {message}");
    let lower = message.to_lowercase();
    if lower.contains("token") || lower.contains("permission") || lower.contains("unauthori") {
        ApiError::Auth(m)
    } else if lower.contains("not found") {
        ApiError::NotFound(m)
    } else {
        ApiError::Permanent(m)
    }
}

impl BlizWorkClient {
    pub fn new(ctx: ConnectionContext) -> anyhow::Result<Self> {
        Ok(Self {
            settings: Settings::parse(&ctx.settings)?,
            token: ctx.secrets.get("api_token").cloned().unwrap_or_default(),
            transport: ctx.transport,
            listing: Mutex::new(None),
        })
    }

    /// POSTs `body` to `path` and reads the envelope: the whole answer when `resultCode`
    /// is 0.
    async fn post(&self, path: &str, body: &Value, idempotent: bool) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.settings.base_url());
        self.transport
            .with_retry(idempotent, || async {
                let (status, wait, text) = self
                    .transport
                    .send(self.transport.http.post(&url).json(body))
                    .await?;
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let message = v
                    .get("resultMessage")
                    .or(v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(300).collect());
                if !(200..300).contains(&status) {
                    return Err(ApiError::from_status(status, wait, message));
                }
                let code = v
                    .get("resultCode")
                    .or(v.get("status"))
                    .and_then(Value::as_i64)
                    .ok_or_else(|| {
                        ApiError::Malformed(format!(
                            "{path}: no resultCode in {}",
                            text.chars().take(200).collect::<String>()
                        ))
                    })?;
                if code != 0 {
                    return Err(classify(code, &message));
                }
                Ok(v)
            })
            .await
    }

    async fn call(&self, op: &str, body: Value, idempotent: bool) -> Result<Value, ApiError> {
        self.post(&format!("{op}/{}/", self.token), &body, idempotent)
            .await
    }

    fn base_body(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("companyId".into(), self.settings.company_id.clone().into());
        m.insert("userId".into(), self.settings.user_email.clone().into());
        m.insert(
            "environment".into(),
            self.settings.case_environment.clone().into(),
        );
        m
    }

    async fn case(&self, process: &str, number: i64) -> Result<Option<Value>, ApiError> {
        let mut b = self.base_body();
        b.insert("processId".into(), process.into());
        b.insert("caseNumber".into(), number.into());
        b.insert("include".into(), 0.into());
        match self.call("process/case", Value::Object(b), true).await {
            Ok(v) => {
                let doc = v.get("payload").cloned().unwrap_or(Value::Null);
                if !doc.is_object() {
                    return Err(ApiError::Malformed(format!(
                        "case {number} of {process}: the payload is not a case document"
                    )));
                }
                Ok(Some(json!({
                    "caseNumber": doc.get("caseNumber").cloned().unwrap_or(number.into()),
                    "processVersion": doc.get("processVersion").cloned().unwrap_or(Value::Null),
                    "environment": doc.get("environment").cloned().unwrap_or(Value::Null),
                    "fields": doc.get("fields").cloned().unwrap_or(json!({})),
                    "updatedOn": doc.get("updatedOn").cloned().unwrap_or(Value::Null),
                })))
            }
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every case of a process changed since `since`, oldest change first. The list has
    /// no date filter: it is read whole (summaries only) and filtered here.
    async fn case_numbers(
        &self,
        process: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<i64>, ApiError> {
        let mut b = self.base_body();
        b.insert("processId".into(), process.into());
        b.insert("filter".into(), json!({}));
        let v = self
            .call("process/case-list", Value::Object(b), true)
            .await?;
        let mut rows: Vec<(Option<DateTime<Utc>>, i64)> = v
            .get("payload")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    parse_time(s.get("updatedOn")),
                    s.get("caseNumber")?.as_i64()?,
                ))
            })
            .filter(|(t, _)| match (since, t) {
                (Some(since), Some(t)) => *t >= since,
                _ => true,
            })
            .collect();
        rows.sort();
        Ok(rows.into_iter().map(|(_, n)| n).collect())
    }

    /// Fills a case's form (moving it to the next activity when one is configured).
    async fn exec(&self, entity: &EntityDef, number: i64, fields: &Value) -> Result<(), ApiError> {
        let p = self
            .settings
            .processes
            .get(entity.external_entity)
            .ok_or_else(|| {
                ApiError::Permanent(format!(
                    "process {} is not configured",
                    entity.external_entity
                ))
            })?;
        let mut b = self.base_body();
        b.insert("workflowId".into(), entity.external_entity.into());
        b.insert("caseNumber".into(), number.into());
        b.insert("formId".into(), p.form_id.clone().into());
        b.insert(
            "nextFormId".into(),
            p.next_form_id
                .clone()
                .unwrap_or_else(|| p.form_id.clone())
                .into(),
        );
        b.insert(
            "formData".into(),
            fields.get("fields").cloned().unwrap_or(json!({})),
        );
        // Filling the same form with the same data twice leaves the same case.
        self.call("exec", Value::Object(b), true).await.map(|_| ())
    }
}

#[async_trait]
impl ExternalClient for BlizWorkClient {
    async fn list_changed(
        &self,
        entity: &EntityDef,
        since: Option<DateTime<Utc>>,
        page: &PageRequest,
    ) -> Result<Page, ApiError> {
        let process = entity.external_entity;
        let offset: usize = match &page.token {
            Some(t) => t
                .parse()
                .map_err(|_| ApiError::Malformed(format!("bad page token {t:?}")))?,
            None => 0,
        };
        let numbers = {
            let mut listing = self.listing.lock().await;
            let fresh = offset == 0
                || !listing
                    .as_ref()
                    .is_some_and(|(p, s, _)| p == process && *s == since);
            if fresh {
                *listing = Some((
                    process.to_string(),
                    since,
                    self.case_numbers(process, since).await?,
                ));
            }
            listing
                .as_ref()
                .map(|(_, _, n)| n.clone())
                .unwrap_or_default()
        };
        let end = (offset + page.size.max(1)).min(numbers.len());
        let mut records = Vec::new();
        for n in &numbers[offset.min(end)..end] {
            match self.case(process, *n).await {
                Ok(Some(r)) => records.push(Fetched::Record(r)),
                Ok(None) => {}
                Err(e @ (ApiError::Malformed(_) | ApiError::Permanent(_))) => {
                    records.push(Fetched::Bad {
                        id: Some(n.to_string()),
                        error: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Page {
            records,
            next: (end < numbers.len()).then(|| end.to_string()),
        })
    }

    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        let n: i64 = id
            .parse()
            .map_err(|_| ApiError::Permanent(format!("{id:?} is not a case number")))?;
        self.case(entity.external_entity, n).await
    }

    async fn create(
        &self,
        entity: &EntityDef,
        fields: &Value,
        _key: &str,
    ) -> Result<Value, ApiError> {
        let mut b = self.base_body();
        b.insert("workflowId".into(), entity.external_entity.into());
        // Starting a case is not idempotent: only a 429 is retried.
        let v = self.call("init", Value::Object(b), false).await?;
        let n = v
            .get("caseNumber")
            .or(v.get("payload").and_then(|p| p.get("caseNumber")))
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::Malformed("init answered without a caseNumber".into()))?;
        self.exec(entity, n, fields).await?;
        self.case(entity.external_entity, n)
            .await?
            .ok_or_else(|| ApiError::Malformed(format!("case {n} vanished after it was started")))
    }

    async fn update(
        &self,
        entity: &EntityDef,
        id: &str,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        let n: i64 = id
            .parse()
            .map_err(|_| ApiError::Permanent(format!("{id:?} is not a case number")))?;
        self.exec(entity, n, fields).await?;
        self.case(entity.external_entity, n)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("case {n}")))
    }

    /// Cases cannot be searched by content; an interrupted create starts another case.
    async fn find_match(
        &self,
        _entity: &EntityDef,
        _fields: &Value,
    ) -> Result<Option<Value>, ApiError> {
        Ok(None)
    }

    async fn verify_webhook(&self, body: &Value, uri: &str) -> Result<bool, ApiError> {
        let token = body
            .get("handshakeToken")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if token.is_empty() {
            return Ok(false);
        }
        if body.get("environment").and_then(Value::as_str) == Some("draft") {
            match self.settings.draft_calls {
                DraftCalls::Accept => return Ok(true),
                DraftCalls::Refuse => return Ok(false),
                DraftCalls::Validate => {}
            }
        }
        let (path, payload) = match self.settings.handshake {
            Handshake::Docs => (
                format!("utils/validatecall/{}", self.token),
                json!({
                    "endpoint": self.settings.webhook_url.clone().unwrap_or_else(|| uri.to_string()),
                    "token": token,
                }),
            ),
            Handshake::Library => (
                format!("utils/validatecall/{token}/{}/", self.token),
                json!({}),
            ),
        };
        match self.post(&path, &payload, false).await {
            Ok(_) => Ok(true),
            // resultCode 1: not a valid call.
            Err(e) if e.to_string().contains("resultCode 1:") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn record_id(&self, _entity: &EntityDef, record: &Value) -> Option<String> {
        record
            .get("caseNumber")
            .and_then(Value::as_i64)
            .map(|n| n.to_string())
    }

    fn updated_at(&self, _entity: &EntityDef, record: &Value) -> Option<DateTime<Utc>> {
        parse_time(record.get("updatedOn"))
    }

    fn display_name(&self, _entity: &EntityDef, record: &Value) -> Option<String> {
        let f = record.get("fields")?;
        ["name", "company_name", "title"]
            .iter()
            .find_map(|k| f.get(*k).and_then(Value::as_str).map(str::to_string))
            .or_else(|| record.get("caseNumber").map(|n| format!("case {n}")))
    }
}
