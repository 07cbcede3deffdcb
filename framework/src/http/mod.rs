//! The HTTP toolkit connectors share: error classification, retries that honour Retry-After,
//! API call counting, token storage and refresh for OAuth flows ([`oauth`]), and call
//! budgets ([`rate`]).

pub mod oauth;
pub mod rate;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::secrets::Cipher;
use crate::store::Store;

/// A classified API failure; the class decides what the engine does next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Credentials rejected even after a refresh: the connection fails clearly.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The record is gone: its id map is marked inactive.
    #[error("not found: {0}")]
    NotFound(String),
    /// Wait per Retry-After, then retry.
    #[error("rate limited: {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Timeouts, 5xx: retried with backoff.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The application refused the request: stored on the id map, the run goes on.
    #[error("rejected: {0}")]
    Permanent(String),
    /// The response could not be read: a per-record error naming what was wrong.
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl ApiError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApiError::RateLimited { .. } | ApiError::Transient(_))
    }

    /// Classifies an HTTP status with the application's own error message.
    pub fn from_status(status: u16, retry_after: Option<Duration>, message: String) -> ApiError {
        match status {
            401 | 403 => ApiError::Auth(format!("HTTP {status}: {message}")),
            404 | 410 => ApiError::NotFound(format!("HTTP {status}: {message}")),
            429 => ApiError::RateLimited {
                retry_after,
                message: format!("HTTP 429: {message}"),
            },
            408 | 500..=599 => ApiError::Transient(format!("HTTP {status}: {message}")),
            _ => ApiError::Permanent(format!("HTTP {status}: {message}")),
        }
    }

    /// Classifies a transport error (timeouts and connection failures are transient).
    pub fn from_transport(e: reqwest::Error) -> ApiError {
        ApiError::Transient(format!("request failed: {}", e.without_url()))
    }
}

/// `t` as an HTTP date (RFC 9110 §5.6.7, IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`),
/// for `Date`, `Retry-After` and `If-Unmodified-Since`.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Reads `Retry-After`, given as delay-seconds or as an HTTP date (RFC 9110 §10.2.3); a
/// date in the past is no wait, an unreadable value none at all (backoff then applies).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// How a connector's client reaches its application: the HTTP client, the connection's call
/// budget and call counter, and its retry limit. Held whole, so that every call of every
/// connector goes through the same budget, count and retry policy.
#[derive(Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    pub stats: Arc<ApiStats>,
    /// The connection's call budget, shared by every job of it in this process.
    pub budget: Arc<rate::RateBudget>,
    pub max_retries: u32,
}

impl Transport {
    /// Runs `op`, retrying retryable failures up to `max_retries` times: Retry-After when the
    /// application gives one (capped at 60 s), else exponential backoff from 200 ms. A request
    /// that is not idempotent (a create) is retried only when rate limited, since a transient
    /// failure may come after the application already stored it.
    pub async fn with_retry<T, F, Fut>(&self, idempotent: bool, mut op: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e)
                    if attempt < self.max_retries
                        && (matches!(e, ApiError::RateLimited { .. })
                            || (idempotent && e.is_retryable())) =>
                {
                    let backoff = Duration::from_millis(200 * 2u64.pow(attempt.min(5)));
                    let wait = match &e {
                        ApiError::RateLimited {
                            retry_after: Some(d),
                            ..
                        } => (*d).min(Duration::from_secs(60)),
                        _ => backoff,
                    };
                    tracing::debug!(error = %e, ?wait, attempt, "retrying API call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends one request within the connection's budget, counting it; returns the status,
    /// Retry-After and body for the connector to read in its application's terms.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<Duration>, String), ApiError> {
        let _permit = self.budget.acquire().await;
        self.stats.record_call();
        let resp = req.send().await.map_err(ApiError::from_transport)?;
        let status = resp.status().as_u16();
        self.stats.record_server_date(resp.headers());
        let wait = retry_after(resp.headers());
        let text = read_capped(resp).await?;
        Ok((status, wait, text))
    }
}

/// The largest answer read, in bytes. A page of a few hundred records is well under a
/// megabyte; a much larger answer is broken, and reading it whole would take the memory of
/// every organization the process serves.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Reads an answer's body, refusing one larger than [`MAX_RESPONSE_BYTES`] as it streams
/// in. Bytes that are not UTF-8 become U+FFFD, which the engine refuses per record (a
/// record with damaged text is never stored or passed on).
pub async fn read_capped(mut resp: reqwest::Response) -> Result<String, ApiError> {
    let too_large = || {
        ApiError::Malformed(format!(
            "the answer is larger than {} MB",
            MAX_RESPONSE_BYTES / (1024 * 1024)
        ))
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ApiError::from_transport)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Counts API calls so runs can report and tests can assert their cost, and keeps the
/// application's own clock as its answers' `Date` headers give it.
#[derive(Debug, Default)]
pub struct ApiStats {
    calls: AtomicU64,
    /// The last `Date` an answer carried, and when (on Ferry's monotonic clock) it came.
    server_date: std::sync::Mutex<Option<(DateTime<Utc>, std::time::Instant)>>,
}

impl ApiStats {
    pub fn record_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Notes an answer's `Date` header (RFC 9110 §6.6.1, an IMF-fixdate such as
    /// `Sun, 06 Nov 1994 08:49:37 GMT`, parsed as the RFC 2822 date it also is).
    pub fn record_server_date(&self, headers: &reqwest::header::HeaderMap) {
        let Some(date) = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        else {
            return;
        };
        let mut last = self.server_date.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some((date.with_timezone(&Utc), std::time::Instant::now()));
    }

    /// The application's clock now, from its last answer's `Date` (whole seconds), or
    /// `None` when no answer carried one.
    pub fn application_now(&self) -> Option<DateTime<Utc>> {
        let last = *self.server_date.lock().unwrap_or_else(|p| p.into_inner());
        let (date, at) = last?;
        Some(date + chrono::Duration::from_std(at.elapsed()).unwrap_or_default())
    }
}

/// OAuth tokens of one connection, decrypted.
#[derive(Clone, Default, PartialEq)]
pub struct Tokens {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Where the account's API lives, when the token grant says (SuperOffice's tenant
    /// URL): read by [`RefreshConfig::endpoint_of`](oauth::RefreshConfig::endpoint_of).
    pub endpoint: Option<String>,
    /// Stored version, for compare-and-swap saves.
    pub version: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .field("endpoint", &self.endpoint)
            .field("version", &self.version)
            .finish()
    }
}

/// Encrypted token storage for one connection, shared by every worker of it.
#[derive(Clone, Debug)]
pub struct TokenStore {
    store: Store,
    cipher: Cipher,
    connection_id: i64,
}

impl TokenStore {
    pub fn new(store: Store, cipher: Cipher, connection_id: i64) -> Self {
        Self {
            store,
            cipher,
            connection_id,
        }
    }

    pub fn load(&self) -> Result<Tokens> {
        let Some(row) = self.store.credentials(self.connection_id)? else {
            return Ok(Tokens::default());
        };
        let open = |v: Option<String>| v.map(|s| self.cipher.open(&s)).transpose();
        Ok(Tokens {
            access_token: open(row.access_token)?,
            refresh_token: open(row.refresh_token)?,
            expires_at: row.expires_at.map(|t| t.and_utc()),
            endpoint: row.endpoint,
            version: row.version,
        })
    }

    /// Saves new tokens if nobody saved since `expected.version`; false means another worker
    /// won the race and its tokens should be reloaded.
    pub fn save(&self, new: &Tokens, expected_version: i64) -> Result<bool> {
        let seal = |v: &Option<String>| v.as_deref().map(|s| self.cipher.seal(s)).transpose();
        self.store.save_credentials(
            self.connection_id,
            seal(&new.access_token)?.as_deref(),
            seal(&new.refresh_token)?.as_deref(),
            new.expires_at.map(|t| t.naive_utc()),
            new.endpoint.as_deref(),
            expected_version,
        )
    }

    /// Records where the account's API lives now, keeping the tokens.
    pub fn save_endpoint(&self, endpoint: &str) -> Result<()> {
        self.store.save_endpoint(self.connection_id, endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn after(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        retry_after(&h)
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(after("120"), Some(Duration::from_secs(120)));
        let soon = std::time::SystemTime::now() + Duration::from_secs(90);
        let wait = after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(wait > Duration::from_secs(88) && wait <= Duration::from_secs(90));
        // A date already past is no wait; nonsense is no Retry-After at all.
        assert_eq!(after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(after("soon"), None);
    }
}
