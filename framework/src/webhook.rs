//! The webhook contract: how a connector verifies and reads its application's webhook
//! deliveries. The server (`server`) stores, de-duplicates, filters and queues them.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// One change an application reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The provider's own event id: a redelivery carries the same one.
    pub event_id: String,
    /// The provider's event name (`contact.changed`).
    pub event: String,
    /// The connector entity the record belongs to; `None` when Ferry does not sync it.
    pub entity: Option<String>,
    pub record_id: Option<String>,
    /// Changed fields as the application names them; `None` when it does not say (a
    /// create or delete), which makes the event relevant.
    pub changes: Option<Vec<String>>,
}

/// A delivery's body as JSON, or why it is not.
pub fn json_body(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// Headers of a delivery, names lowercased.
pub type Headers = BTreeMap<String, String>;

/// An application's webhook format.
pub trait WebhookFormat: Send + Sync {
    /// Checks a signed delivery against the connection's shared secret.
    fn verify_signature(&self, headers: &Headers, body: &[u8], secret: &str) -> Result<(), String>;
    /// Whether deliveries are checked by asking the application
    /// ([`ExternalClient::verify_webhook`](crate::entity::ExternalClient::verify_webhook))
    /// when the connection configures no secret or token.
    fn verified_by_application(&self) -> bool {
        false
    }
    /// Reads the event; an error is a 400 and nothing is stored.
    fn parse(&self, headers: &Headers, body: &[u8]) -> Result<WebhookEvent, String>;
}

/// `base64(HMAC-SHA256(secret, body))`, compared in constant time.
pub fn hmac_sha256_base64_matches(secret: &str, body: &[u8], signature: &str) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The signature a sender computes, for fakes and tests.
pub fn hmac_sha256_base64(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let sig = hmac_sha256_base64("s3cret", b"{\"a\":1}");
        assert!(hmac_sha256_base64_matches("s3cret", b"{\"a\":1}", &sig));
        assert!(!hmac_sha256_base64_matches("other", b"{\"a\":1}", &sig));
        assert!(!hmac_sha256_base64_matches("s3cret", b"{\"a\":2}", &sig));
        assert!(!hmac_sha256_base64_matches(
            "s3cret",
            b"{\"a\":1}",
            "not base64!"
        ));
    }
}
