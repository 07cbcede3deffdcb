//! BlizWork extension calls: `{environment, processId, processVersion, caseNumber,
//! handshakeToken}`. They carry no signature; the connection confirms each with BlizWork's
//! one-time handshake call (`ExternalClient::verify_webhook`) before anything is stored.

use ferry_framework::entity::id_text;
use ferry_framework::webhook::{json_body, Headers, WebhookEvent, WebhookFormat};

pub struct Extension;

impl WebhookFormat for Extension {
    fn verify_signature(&self, _: &Headers, _: &[u8], _: &str) -> Result<(), String> {
        Err("BlizWork extension calls are not signed; leave `secret` unset".into())
    }

    fn verified_by_application(&self) -> bool {
        true
    }

    fn parse(&self, _headers: &Headers, body: &[u8]) -> Result<WebhookEvent, String> {
        let v = json_body(body)?;
        let text = |k: &str| id_text(v.get(k));
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
