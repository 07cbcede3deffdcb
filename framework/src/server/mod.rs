//! The HTTP server of `ferry serve`: health and webhooks.

pub mod api;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::store::jobs::status;

pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/webhooks/{org}/{connection}", post(webhooks::receive))
        .merge(api::router())
        .with_state(rt)
}

/// Serves until `shutdown` turns true; requests in flight finish first.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router(rt))
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await?;
    Ok(())
}

/// The database answers and a worker looked at the queue recently.
async fn health(State(rt): State<Arc<Runtime>>) -> Response {
    let counts = [status::QUEUED, status::RUNNING, status::DEAD]
        .map(|s| rt.store().jobs(Some(s), 10_000).map(|j| j.len()));
    let database_ok = counts.iter().all(Result::is_ok);
    let seen = rt.worker_seen.load(Ordering::Relaxed);
    let age = chrono::Utc::now().timestamp() - seen;
    let s = &rt.settings().runtime;
    let worker_ok = seen > 0 && age <= (s.poll_millis as i64 / 1000) * 3 + s.job_lease_seconds;
    let n = |i: usize| counts[i].as_ref().map(|n| *n as i64).unwrap_or(-1);
    let body = json!({
        "status": if database_ok && worker_ok { "ok" } else { "unhealthy" },
        "database": if database_ok { "ok".to_string() } else {
            counts.iter().find_map(|c| c.as_ref().err().map(|e| format!("{e:#}"))).unwrap_or_default()
        },
        "worker": { "ok": worker_ok, "last_seen_seconds_ago": if seen > 0 { age } else { -1 } },
        "jobs": { "queued": n(0), "running": n(1), "dead": n(2) },
    });
    let code = if database_ok && worker_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
