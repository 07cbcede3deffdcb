//! OAuth2 refresh-token flows, including applications that rotate the refresh token on every
//! refresh. Tokens live encrypted in the store; a refresh saves both new tokens with a
//! compare-and-swap on the credential's version, so two workers refreshing at once never
//! lose the newest refresh token: the loser adopts the winner's tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::http::{ApiError, ApiStats, TokenStore, Tokens, Transport};

/// Where and how to refresh.
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Sent with the refresh when the application asks for it (WorkflowMax does).
    pub scope: Option<String>,
    /// The refresh token from the environment, used until one is stored.
    pub initial_refresh_token: Option<String>,
    /// Reads where the account's API lives from a token response (SuperOffice's id_token
    /// claim), for applications that say so there; kept with the tokens.
    pub endpoint_of: Option<fn(&Value) -> Option<String>>,
}

impl RefreshConfig {
    /// Reads `client_secret` and `refresh_token` from a connection's resolved secrets.
    pub fn from_secrets(
        token_url: String,
        client_id: String,
        scope: Option<String>,
        secrets: &BTreeMap<String, String>,
    ) -> RefreshConfig {
        RefreshConfig {
            token_url,
            client_id,
            client_secret: secrets.get("client_secret").cloned().unwrap_or_default(),
            scope,
            initial_refresh_token: secrets.get("refresh_token").cloned(),
            endpoint_of: None,
        }
    }
}

/// Hands out access tokens for one connection, refreshing when needed.
pub struct TokenSource {
    http: reqwest::Client,
    config: RefreshConfig,
    tokens: TokenStore,
    stats: Arc<ApiStats>,
    /// The token in use; refreshes inside this process are serialized by this lock.
    current: Mutex<Option<String>>,
    /// Tokens a refresh got that the store could not take yet (see [`TokenSource::keep`]).
    unsaved: Mutex<Option<Tokens>>,
}

/// Saves of new tokens are tried this many times before they wait in memory.
const SAVE_ATTEMPTS: u32 = 8;

fn store_err(e: anyhow::Error) -> ApiError {
    ApiError::Transient(format!("credential store: {e:#}"))
}

fn usable(t: &Tokens) -> Option<&String> {
    match (&t.access_token, t.expires_at) {
        (Some(a), Some(exp)) if exp > Utc::now() + Duration::seconds(60) => Some(a),
        _ => None,
    }
}

impl TokenSource {
    /// Refreshes go out on `transport`'s client and are counted with its calls.
    pub fn new(transport: &Transport, config: RefreshConfig, tokens: TokenStore) -> TokenSource {
        TokenSource {
            http: transport.http.clone(),
            config,
            tokens,
            stats: transport.stats.clone(),
            current: Mutex::new(None),
            unsaved: Mutex::new(None),
        }
    }

    /// Saves tokens a refresh got. With rotation the stored refresh token is spent the
    /// moment the application answered, so a store error (a busy database) must not drop
    /// the new one: the save is retried with backoff, and if the store still refuses, the
    /// tokens wait in memory and are saved before this source hands out anything again.
    /// Returns whether they are the stored ones (false: another worker saved first).
    async fn keep(&self, new: &Tokens, expected_version: i64) -> bool {
        let mut wait = std::time::Duration::from_millis(50);
        for attempt in 1..=SAVE_ATTEMPTS {
            match self.tokens.save(new, expected_version) {
                Ok(saved) => return saved,
                Err(e) if attempt == SAVE_ATTEMPTS => {
                    tracing::error!(error = %format!("{e:#}"), "cannot save refreshed tokens; keeping them in memory and retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), attempt, "cannot save refreshed tokens yet")
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(2));
        }
        *self.unsaved.lock().await = Some(Tokens {
            version: expected_version,
            ..new.clone()
        });
        true
    }

    /// Saves tokens an earlier refresh could not store. Errs while the store still refuses:
    /// nothing may refresh (and spend the unsaved refresh token's predecessor) meanwhile.
    async fn save_pending(&self) -> Result<(), ApiError> {
        let mut unsaved = self.unsaved.lock().await;
        if let Some(t) = unsaved.as_ref() {
            self.tokens.save(t, t.version).map_err(store_err)?;
            *unsaved = None;
        }
        Ok(())
    }

    /// A valid access token. `rejected` is a token the application just refused (401): a
    /// newer stored one is taken if another worker refreshed, else Ferry refreshes.
    pub async fn access_token(&self, rejected: Option<&str>) -> Result<String, ApiError> {
        let mut current = self.current.lock().await;
        self.save_pending().await?;
        if let Some(t) = current.as_ref().filter(|t| Some(t.as_str()) != rejected) {
            return Ok(t.clone());
        }
        let stored = self.tokens.load().map_err(store_err)?;
        if let Some(t) = usable(&stored).filter(|t| Some(t.as_str()) != rejected) {
            *current = Some(t.clone());
            return Ok(t.clone());
        }
        let token = self.refresh(stored).await?;
        *current = Some(token.clone());
        Ok(token)
    }

    /// Where the account's API lives, as the last token grant (or a later discovery) said:
    /// `None` when no grant said. Call after [`TokenSource::access_token`].
    pub async fn endpoint(&self) -> Result<Option<String>, ApiError> {
        if let Some(t) = self.unsaved.lock().await.as_ref() {
            return Ok(t.endpoint.clone());
        }
        Ok(self.tokens.load().map_err(store_err)?.endpoint)
    }

    /// Records where the account's API lives now (found after a grant, or moved).
    pub fn save_endpoint(&self, endpoint: &str) -> Result<(), ApiError> {
        self.tokens.save_endpoint(endpoint).map_err(store_err)
    }

    /// Refreshes with the stored refresh token; when the application refuses it and the
    /// connection's `refresh_token` secret holds another one (an operator authorized Ferry
    /// again after a revocation), with that one.
    async fn refresh(&self, stored: Tokens) -> Result<String, ApiError> {
        let configured = self.config.initial_refresh_token.clone();
        let first = stored
            .refresh_token
            .clone()
            .or_else(|| configured.clone())
            .ok_or_else(|| {
                ApiError::Auth(
                    "no refresh token stored or configured: authorize Ferry in the \
                     application and set the connection's refresh_token secret"
                        .into(),
                )
            })?;
        match self.refresh_with(&stored, first.clone()).await {
            Err(ApiError::Auth(_)) if configured.as_ref().is_some_and(|c| *c != first) => {
                tracing::info!("the stored refresh token was refused; trying the configured one");
                let configured = configured.unwrap_or_default();
                self.refresh_with(&stored, configured).await
            }
            other => other,
        }
    }

    async fn refresh_with(&self, stored: &Tokens, refresh: String) -> Result<String, ApiError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.as_str()),
        ];
        if let Some(s) = &self.config.scope {
            form.push(("scope", s.as_str()));
        }
        self.stats.record_call();
        let resp = self
            .http
            .post(&self.config.token_url)
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(ApiError::from_transport)?;
        let status = resp.status().as_u16();
        let body: Value =
            serde_json::from_str(&super::read_capped(resp).await?).unwrap_or(Value::Null);
        if status != 200 {
            let msg = body
                .get("error_description")
                .or(body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("token request refused")
                .to_string();
            if matches!(status, 400 | 401 | 403) {
                // With rotation, our refresh token is spent when another worker refreshed
                // first: its tokens are in the store now.
                // It may still be saving them: look a few times.
                for _ in 0..10 {
                    let now = self.tokens.load().map_err(store_err)?;
                    if now.version != stored.version {
                        if let Some(t) = usable(&now) {
                            tracing::debug!("another worker rotated the tokens; using theirs");
                            return Ok(t.clone());
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                return Err(ApiError::Auth(format!(
                    "the application refused the refresh token ({msg}): it was revoked or has \
                     expired. Authorize Ferry again in the application and set the \
                     connection's refresh_token secret to the new refresh token"
                )));
            }
            return Err(ApiError::from_status(
                status,
                None,
                format!("token endpoint: {msg}"),
            ));
        }
        let access = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Malformed("token response has no access_token".into()))?
            .to_string();
        let expires_in = body
            .get("expires_in")
            .and_then(Value::as_i64)
            .unwrap_or(1800);
        let new = Tokens {
            access_token: Some(access.clone()),
            // A rotated refresh token replaces the spent one; else the old one stays valid.
            refresh_token: body
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(Some(refresh)),
            expires_at: Some(Utc::now() + Duration::seconds(expires_in)),
            endpoint: self
                .config
                .endpoint_of
                .and_then(|f| f(&body))
                .or(stored.endpoint.clone()),
            version: stored.version,
        };
        if self.keep(&new, stored.version).await {
            return Ok(access);
        }
        // Another worker saved between our read and our save. Its refresh used the same
        // refresh token, so with rotation ours would have been refused: the stored tokens are
        // the newest. Ours stay valid for this call.
        tracing::debug!("another worker saved tokens first; keeping theirs stored");
        Ok(access)
    }
}
