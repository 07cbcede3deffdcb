//! Sends records to PhixFlow actionflows and reads each outcome, waiting or polling.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_framework::connector::ConnectionContext;
use ferry_framework::entity::{EntityDef, ExternalClient, Page, PageRequest};
use ferry_framework::http::{ApiError, Transport};
use serde_json::Value;

use super::{Mode, Settings};

/// The field Ferry adds to every record it sends: the id the actionflow upserts by.
pub const FERRY_ID: &str = "ferry_id";

pub struct PhixFlowClient {
    transport: Transport,
    settings: Settings,
    api_key: String,
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl PhixFlowClient {
    pub fn new(ctx: ConnectionContext) -> anyhow::Result<Self> {
        Ok(Self {
            settings: Settings::parse(&ctx.settings)?,
            api_key: ctx.secrets.get("api_key").cloned().unwrap_or_default(),
            transport: ctx.transport,
        })
    }

    fn trigger_url(&self, entity: &EntityDef) -> Result<String, ApiError> {
        let flow = self.settings.actionflows.get(entity.name).ok_or_else(|| {
            ApiError::Permanent(format!(
                "no actionflow is configured for {} (settings.actionflows.{})",
                entity.name, entity.name
            ))
        })?;
        let base = &self.settings.base_url;
        Ok(match &self.settings.application {
            Some(app) => format!(
                "{base}api/1/action/{}/{}/trigger",
                encode(app),
                encode(flow)
            ),
            None => format!("{base}api/1/action/{}/trigger", encode(flow)),
        })
    }

    /// One authorized call; the JSON answer (an empty object when there is none).
    async fn call(
        &self,
        req: reqwest::RequestBuilder,
        idempotent: bool,
    ) -> Result<Value, ApiError> {
        let auth = format!("{}{}", self.settings.auth_prefix, self.api_key);
        self.transport
            .with_retry(idempotent, || async {
                let req = req
                    .try_clone()
                    .ok_or_else(|| ApiError::Permanent("request cannot be repeated".into()))?
                    .header(self.settings.auth_header.as_str(), auth.as_str());
                let (status, wait, text) = self.transport.send(req).await?;
                let body: Value = if text.trim().is_empty() {
                    Value::Object(Default::default())
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        ApiError::Malformed(format!(
                            "the actionflow answered non-JSON ({e}): {}",
                            text.chars().take(200).collect::<String>()
                        ))
                    })?
                };
                if !(200..300).contains(&status) {
                    let msg = self
                        .message(&body)
                        .unwrap_or_else(|| text.chars().take(300).collect());
                    return Err(ApiError::from_status(status, wait, msg));
                }
                Ok(body)
            })
            .await
    }

    fn message(&self, body: &Value) -> Option<String> {
        body.get(&self.settings.message_field)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// `Ok` for Success, the actionflow's message for Fail, `None` while running.
    fn outcome(&self, body: &Value) -> Option<Result<(), ApiError>> {
        let status = body
            .get(&self.settings.status_field)
            .and_then(Value::as_str)?;
        match status.to_ascii_lowercase().as_str() {
            "success" | "succeeded" | "completed" | "ok" => Some(Ok(())),
            "fail" | "failed" | "failure" | "error" => Some(Err(ApiError::Permanent(format!(
                "the actionflow failed: {}",
                self.message(body).unwrap_or_else(|| "no message".into())
            )))),
            _ => None,
        }
    }

    /// Sends one record; returns it with its Ferry id once the actionflow succeeded.
    async fn send(
        &self,
        entity: &EntityDef,
        id: String,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        let mut record = fields.clone();
        if let Some(o) = record.as_object_mut() {
            o.insert(FERRY_ID.into(), id.into());
        }
        let mut req = self
            .transport
            .http
            .post(self.trigger_url(entity)?)
            .json(&record);
        if let Some(t) = self.settings.timeout_ms {
            req = req.query(&[("timeout", t.to_string())]);
        }
        // An actionflow is keyed by the Ferry id: sending a record again updates it.
        let body = self.call(req, true).await?;
        match self.settings.mode {
            Mode::Wait => match self.outcome(&body) {
                Some(r) => r.map(|()| record),
                // No outcome field: the HTTP status said it all.
                None => Ok(record),
            },
            Mode::Poll => {
                if let Some(done) = self.outcome(&body) {
                    return done.map(|()| record);
                }
                let process = body
                    .get(&self.settings.process_id_field)
                    .and_then(|v| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        ApiError::Malformed(format!(
                            "poll mode: the answer has no `{}`: {body}",
                            self.settings.process_id_field
                        ))
                    })?;
                self.poll(&process).await.map(|()| record)
            }
        }
    }

    async fn poll(&self, process: &str) -> Result<(), ApiError> {
        let url = self
            .settings
            .status_url
            .replace("{base}", &self.settings.base_url)
            .replace("{process_id}", &encode(process));
        let started = Instant::now();
        loop {
            let body = self.call(self.transport.http.get(&url), true).await?;
            if let Some(done) = self.outcome(&body) {
                return done;
            }
            if started.elapsed() > Duration::from_secs(self.settings.poll_timeout_seconds) {
                return Err(ApiError::Transient(format!(
                    "process {process} still running after {} s",
                    self.settings.poll_timeout_seconds
                )));
            }
            tokio::time::sleep(Duration::from_millis(self.settings.poll_interval_ms)).await;
        }
    }
}

#[async_trait]
impl ExternalClient for PhixFlowClient {
    async fn list_changed(
        &self,
        _entity: &EntityDef,
        _since: Option<DateTime<Utc>>,
        _page: &PageRequest,
    ) -> Result<Page, ApiError> {
        Err(ApiError::Permanent(
            "PhixFlow endpoints cannot be read".into(),
        ))
    }

    async fn get(&self, _entity: &EntityDef, _id: &str) -> Result<Option<Value>, ApiError> {
        Err(ApiError::Permanent(
            "PhixFlow endpoints cannot be read".into(),
        ))
    }

    /// The record goes with the create's idempotency key as its `ferry_id`, which the
    /// actionflow upserts by: every attempt for one hub record (a retry after a lost
    /// answer or a poll timeout, the next run) names the same record, so none duplicates.
    async fn create(
        &self,
        entity: &EntityDef,
        fields: &Value,
        key: &str,
    ) -> Result<Value, ApiError> {
        if key.is_empty() {
            return Err(ApiError::Permanent(
                "a create needs its idempotency key".into(),
            ));
        }
        self.send(entity, key.to_string(), fields).await
    }

    async fn update(
        &self,
        entity: &EntityDef,
        id: &str,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        self.send(entity, id.to_string(), fields).await
    }

    /// Nothing can be looked up; a create that failed is sent again with the same
    /// `ferry_id`, which the actionflow upserts by.
    async fn find_match(
        &self,
        _entity: &EntityDef,
        _fields: &Value,
    ) -> Result<Option<Value>, ApiError> {
        Ok(None)
    }

    fn record_id(&self, _entity: &EntityDef, record: &Value) -> Option<String> {
        record
            .get(FERRY_ID)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn updated_at(&self, _entity: &EntityDef, _record: &Value) -> Option<DateTime<Utc>> {
        None
    }

    fn display_name(&self, _entity: &EntityDef, record: &Value) -> Option<String> {
        ["name", "Name", "email", "Email"]
            .iter()
            .find_map(|k| record.get(*k).and_then(Value::as_str).map(str::to_string))
    }
}
