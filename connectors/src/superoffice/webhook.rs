//! SuperOffice webhooks: `X-SuperOffice-Signature` is base64(HMAC-SHA256(secret, raw body));
//! the body names the event, the entity (`contact`, `person`), its primary key and the
//! changed database columns.

use ferry_framework::entity::id_text;
use ferry_framework::webhook::{
    hmac_sha256_base64_matches, json_body, Headers, WebhookEvent, WebhookFormat,
};
use serde_json::Value;

pub struct SuperOfficeWebhooks;

impl WebhookFormat for SuperOfficeWebhooks {
    fn verify_signature(&self, headers: &Headers, body: &[u8], secret: &str) -> Result<(), String> {
        let sig = headers
            .get("x-superoffice-signature")
            .ok_or("the X-SuperOffice-Signature header is missing")?;
        if hmac_sha256_base64_matches(secret, body, sig) {
            Ok(())
        } else {
            Err("the X-SuperOffice-Signature does not match the body".into())
        }
    }

    fn parse(&self, _headers: &Headers, body: &[u8]) -> Result<WebhookEvent, String> {
        let v = json_body(body)?;
        let text = |k: &str| id_text(v.get(k));
        let event_id = text("EventId").ok_or("field `EventId` is missing")?;
        let event = text("Event").ok_or("field `Event` is missing")?;
        let entity = match text("Entity").as_deref() {
            Some("contact") => Some("organization".to_string()),
            Some("person") => Some("person".to_string()),
            _ => None,
        };
        // Only a change lists columns; creates and deletes always matter.
        let changes = event
            .ends_with(".changed")
            .then(|| {
                v.get("Changes").and_then(Value::as_array).map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_lowercase)
                        .collect()
                })
            })
            .flatten();
        Ok(WebhookEvent {
            event_id,
            event,
            entity,
            record_id: text("PrimaryKey"),
            changes,
        })
    }
}
