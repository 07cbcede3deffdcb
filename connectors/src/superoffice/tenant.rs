//! Where a SuperOffice Online tenant's web API lives.
//!
//! The web API is on a numbered host (`https://online2.superoffice.com/Cust12345/api/`)
//! that "will change routinely to balance the load"; the unnumbered hosts are "reserved
//! for authentication", and "calls to the wrong public endpoint return HTTP status code
//! 421 - Misdirected request" (SuperOfficeDocs
//! `en/developer-portal/best-practices/tenant-status/check-status.mdx`). Two documented
//! sources say where the tenant is:
//!
//! - the token response's `id_token`, whose claim
//!   `http://schemes.superoffice.net/identity/webapi_url` is "the URL to a tenant REST web
//!   services", e.g. `https://sod.superoffice.com/Cust26759/api/`
//!   (`en/api/authentication/online/validate-security-tokens.mdx`; a refresh's answer
//!   carries an id token too: `en/api/authentication/online/sign-in-user/auth-code-flow.mdx`);
//! - the state service, `GET https://{env}.superoffice.com/api/state/{ctx}`, whose `Api`
//!   is e.g. `https://online2.superoffice.com/Cust12345/api` (check-status.mdx).
//!
//! Ferry takes the first from every token grant, asks the second when no grant said or when
//! the tenant answers 421, and keeps what it learnt with the connection's credential.

use base64::Engine as _;
use serde_json::Value;

/// The id token claim that names the tenant's web API.
pub const WEBAPI_URL_CLAIM: &str = "http://schemes.superoffice.net/identity/webapi_url";

/// `url` ending in one `/`, so paths join onto it.
pub fn with_slash(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

/// The tenant's web API from a token response's `id_token`, if it names one. The token's
/// signature is not checked: Ferry got it straight from the token endpoint it trusts with
/// its client secret, and reads nothing from it but this address.
pub fn from_token_response(body: &Value) -> Option<String> {
    let jwt = body.get("id_token")?.as_str()?;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let url = claims.get(WEBAPI_URL_CLAIM)?.as_str()?;
    (url.starts_with("https://") || url.starts_with("http://")).then(|| with_slash(url))
}

/// The tenant's web API from the state service's answer; `Err` says why there is none (a
/// tenant that is not running, an answer without `Api`).
pub fn from_state(body: &Value) -> Result<String, String> {
    let state = body
        .get("State")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    if body.get("IsRunning").and_then(Value::as_bool) == Some(false) {
        return Err(format!(
            "SuperOffice's state service says the tenant is {state}, not running"
        ));
    }
    match body.get("Api").and_then(Value::as_str) {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            Ok(with_slash(url))
        }
        _ => Err("SuperOffice's state service answered without an `Api` address".into()),
    }
}

/// Whether `url` is a web API of tenant `ctx` that Ferry may send this connection's
/// token to: its path names the tenant (`…/Cust12345/api/`), and it is https unless the
/// authentication host itself is plain http (a sandbox). A grant for another tenant (a
/// user with several picked another in the consent dialog) or a settings change of
/// `context_identifier` must not make Ferry sync someone else's data.
pub fn belongs(url: &str, ctx: &str, login_url: &str) -> Result<(), String> {
    let secure = url.starts_with("https://") || login_url.starts_with("http://");
    let names = url
        .to_ascii_lowercase()
        .contains(&format!("/{}/", ctx.to_ascii_lowercase()));
    match (secure, names) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("{url} is not https")),
        (_, false) => Err(format!(
            "{url} is not tenant {ctx}'s (the connection's `context_identifier`)"
        )),
    }
}

/// An unsigned id token carrying `claims`, as the fake's token endpoint hands out.
pub fn id_token(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_claim_and_the_state() {
        let token = id_token(&json!({
            WEBAPI_URL_CLAIM: "https://sod2.superoffice.com/Cust26759/api/",
            "http://schemes.superoffice.net/identity/ctx": "Cust26759",
        }));
        assert_eq!(
            from_token_response(&json!({ "id_token": token })).as_deref(),
            Some("https://sod2.superoffice.com/Cust26759/api/")
        );
        assert_eq!(from_token_response(&json!({"access_token": "x"})), None);
        assert_eq!(from_token_response(&json!({"id_token": "garbage"})), None);
        let state = json!({"ContextIdentifier": "Cust12345", "State": "Running",
            "IsRunning": true, "Api": "https://online2.superoffice.com/Cust12345/api"});
        assert_eq!(
            from_state(&state).unwrap(),
            "https://online2.superoffice.com/Cust12345/api/"
        );
        let down = json!({"State": "OfflineMaintenance", "IsRunning": false, "Api": "x"});
        assert!(from_state(&down)
            .unwrap_err()
            .contains("OfflineMaintenance"));
        let login = "https://online.superoffice.com/";
        let ok = |u: &str, l: &str| belongs(u, "Cust12345", l).is_ok();
        assert!(ok("https://online2.superoffice.com/Cust12345/api/", login));
        assert!(!ok("https://online2.superoffice.com/Cust99999/api/", login));
        assert!(!ok("http://online2.superoffice.com/Cust12345/api/", login));
        assert!(ok(
            "http://127.0.0.1:1/sod2/Cust12345/api/",
            "http://127.0.0.1:1/"
        ));
    }
}
