//! `POST /webhooks/{org}/{connection}`: verify (the application's signature with the
//! connection's secret, else a shared token), store the event once per provider event id,
//! skip changes outside the connection's relevance whitelist, and fold the record into a
//! targeted sync that runs after a short coalescing window. The answer comes before any
//! sync work.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::runtime::Runtime;
use crate::store::write_transaction;
use crate::store::Store;
use crate::webhook::{Headers, WebhookEvent};

fn reply(code: StatusCode, status: &str, detail: &str) -> Response {
    (code, Json(json!({ "status": status, "detail": detail }))).into_response()
}

/// The one answer to every webhook that is not authenticated (the reason is logged).
fn refused() -> Response {
    reply(
        StatusCode::UNAUTHORIZED,
        "refused",
        "the signature or token is missing or wrong",
    )
}

/// Equal in constant time (for shared tokens).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Why an event does not warrant a sync, if it does not.
fn irrelevant(
    ev: &WebhookEvent,
    relevant: &BTreeMap<String, Vec<String>>,
    synced: &[&str],
) -> Option<String> {
    let Some(entity) = &ev.entity else {
        return Some(format!("{} is not a record type Ferry syncs", ev.event));
    };
    if !synced.contains(&entity.as_str()) {
        return Some(format!("entity {entity} is not synced on this connection"));
    }
    if ev.record_id.is_none() {
        return Some("the event names no record".into());
    }
    let (Some(fields), Some(changes)) = (relevant.get(entity), &ev.changes) else {
        return None;
    };
    let fields: Vec<String> = fields.iter().map(|f| f.to_lowercase()).collect();
    if changes.iter().any(|c| fields.contains(c)) {
        None
    } else {
        Some(format!(
            "no relevant field changed ({})",
            changes.join(", ")
        ))
    }
}

/// Asks the application whether it really sent this delivery (a one-time handshake).
async fn verify_with_application(
    rt: &Runtime,
    p: &crate::sync::Prepared,
    body: &[u8],
    headers: &Headers,
) -> Result<(), String> {
    let value = crate::webhook::json_body(body)?;
    let uri = format!(
        "http://{}/webhooks/{}/{}",
        headers
            .get("host")
            .map(String::as_str)
            .unwrap_or("localhost"),
        p.org.slug,
        p.config.name
    );
    let ctx = rt
        .engine
        .context(p, Default::default())
        .map_err(|e| format!("{e:#}"))?;
    let client = p.connector.open(ctx).map_err(|e| format!("{e:#}"))?;
    match client.verify_webhook(&value, &uri).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the application did not confirm this call".into()),
        Err(e) => Err(format!("the application could not confirm this call: {e}")),
    }
}

enum Stored {
    Queued(i64),
    Skipped(String),
}

pub(super) async fn receive(
    State(rt): State<Arc<Runtime>>,
    Path((org, connection)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // An unknown organization or connection is refused like a wrong signature: the answer
    // must not tell a caller without the key which organizations and connections exist.
    let found = rt
        .find(&org, &connection)
        .and_then(|p| Some((p, p.connector.webhooks()?)));
    let Some((p, format)) = found else {
        tracing::warn!(org = %org, connection = %connection, "webhook for no connection that takes webhooks");
        return refused();
    };
    let keys = rt
        .webhook_keys
        .get(&p.connection_id)
        .cloned()
        .unwrap_or_default();
    let headers: Headers = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_lowercase(), v.to_str().ok()?.to_string())))
        .collect();
    let verified = match (&keys.secret, &keys.token) {
        (Some(secret), _) => format.verify_signature(&headers, &body, secret),
        (None, Some(token)) => {
            let given = headers
                .get("authorization")
                .and_then(|a| super::bearer(a))
                .map(str::to_string)
                .or_else(|| query.get("token").cloned());
            match given {
                Some(g) if same(&g, token) => Ok(()),
                _ => Err("the token is missing or wrong".into()),
            }
        }
        (None, None) if format.verified_by_application() => {
            verify_with_application(&rt, p, &body, &headers).await
        }
        (None, None) => Err("webhooks are not configured for this connection".into()),
    };
    if let Err(why) = verified {
        tracing::warn!(org = %org, connection = %connection, %why, "webhook refused");
        return refused();
    }
    let ev = match format.parse(&headers, &body) {
        Ok(ev) => ev,
        Err(why) => return reply(StatusCode::BAD_REQUEST, "unreadable", &why),
    };
    let relevant = p
        .config
        .webhooks
        .as_ref()
        .map(|w| w.relevant.clone())
        .unwrap_or_default();
    let synced: Vec<&str> = p.entities.iter().map(|s| s.entity.name()).collect();
    let skip = irrelevant(&ev, &relevant, &synced);
    let payload = String::from_utf8_lossy(&body).into_owned();
    let stored = (|| -> anyhow::Result<Option<Stored>> {
        let mut c = rt.store().conn()?;
        write_transaction(&mut c, |c| {
            let outcome = match &skip {
                Some(why) => Stored::Skipped(why.clone()),
                None => Stored::Queued(rt.enqueue_record(
                    c,
                    p,
                    ev.entity.as_deref().unwrap_or_default(),
                    ev.record_id.as_deref().unwrap_or_default(),
                )?),
            };
            let (status, reason, job) = match &outcome {
                Stored::Queued(id) => ("queued", None, Some(*id)),
                Stored::Skipped(why) => ("skipped", Some(why.as_str()), None),
            };
            let inserted = Store::record_webhook(
                c,
                p.connection_id,
                &ev.event_id,
                &ev.event,
                ev.entity.as_deref(),
                ev.record_id.as_deref(),
                &payload,
                status,
                reason,
                job,
            )?;
            match inserted {
                Some(_) => Ok(Some(outcome)),
                // A redelivery: undo the folding above, keep the first.
                None => Err(Duplicate.into()),
            }
        })
        .or_else(|e: anyhow::Error| {
            if e.downcast_ref::<Duplicate>().is_some() {
                Ok(None)
            } else {
                Err(e)
            }
        })
    })();
    match stored {
        Ok(Some(Stored::Queued(job))) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "queued", "job": job})),
        )
            .into_response(),
        Ok(Some(Stored::Skipped(why))) => reply(StatusCode::OK, "skipped", &why),
        Ok(None) => reply(
            StatusCode::OK,
            "duplicate",
            "this event was received before",
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not store a webhook event");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "error",
                "could not store the event; retry",
            )
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("duplicate event")]
struct Duplicate;
