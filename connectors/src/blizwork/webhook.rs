//! BlizWork extension calls: `{environment, processId, processVersion, caseNumber,
//! handshakeToken}`. They carry no signature; the connection confirms each with BlizWork's
//! one-time handshake call (`ExternalClient::verify_webhook`) before anything is stored.

use ferry_framework::webhook::{Headers, WebhookEvent, WebhookFormat};
use serde_json::Value;

pub struct Extension;

impl WebhookFormat for Extension {
    fn verify_signature(&self, _: &Headers, _: &[u8], _: &str) -> Result<(), String> {
        Err("BlizWork extension calls are not signed; leave `secret` unset".into())
    }

    fn verified_by_application(&self) -> bool {
        true
    }

    fn parse(&self, _headers: &Headers, body: &[u8]) -> Result<WebhookEvent, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let text = |k: &str| match v.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let token = text("handshakeToken").ok_or("field `handshakeToken` is missing")?;
        Ok(WebhookEvent {
            // The handshake token is single-use: a redelivery carries the same one.
            event_id: token,
            event: format!("extension.{}", text("environment").unwrap_or_default()),
            entity: text("processId"),
            record_id: text("caseNumber"),
            changes: None,
        })
    }
}
