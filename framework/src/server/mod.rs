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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};

use crate::runtime::Runtime;
use crate::store::jobs::status;

pub fn router(rt: Arc<Runtime>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/webhooks/{org}/{connection}", post(webhooks::receive))
        .merge(api::router())
        .with_state(rt)
}

/// Serves until `shutdown` turns true; requests in flight finish first (within the request
/// timeout). Slow or idle clients cannot hold the server: at most
/// `runtime.max_connections` connections are served at once (more wait in the listen
/// backlog), and a request's headers, then its whole body, must each arrive within
/// `runtime.request_timeout_seconds` (else the connection is closed, or the answer is 408).
/// Shutdown waits at most `runtime.shutdown_grace_seconds` for requests in flight.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let limits = &rt.settings().runtime;
    let timeout = Duration::from_secs(limits.request_timeout_seconds);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let app = router(rt.clone()).layer(axum::middleware::from_fn_with_state(
        timeout,
        whole_body_within,
    ));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s?,
            () = stopped(&mut shutdown) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait, do not spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .serve_connection(
                TokioIo::new(WriteDeadline::new(stream, timeout)),
                TowerToHyperService::new(app.clone()),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Bounded like the worker's job: an orchestrator's SIGKILL follows its own grace period.
    let grace = Duration::from_secs(rt.settings().runtime.shutdown_grace_seconds);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace period; closing them");
    }
    Ok(())
}

/// Largest request body read (axum's default limit, kept explicit here).
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Reads a request's whole body within `timeout` before the handler runs. A per-read
/// timeout is not enough: a client sending one byte just inside it holds a connection
/// for ever. Too slow is 408, too large 413.
async fn whole_body_within(
    State(timeout): State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await;
    match read {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        Ok(Err(_)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": "the request body is too large or unreadable"})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({"error": "the request body did not arrive in time"})),
        )
            .into_response(),
    }
}

/// A connection whose writes must make progress within `limit`: a client that stops
/// reading its answers (its receive window full, the server's send buffer full) is cut
/// off instead of holding one of the server's connection slots for ever.
struct WriteDeadline<T> {
    io: T,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(io: T, limit: Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    /// What a write or flush of the connection gave, with the deadline applied: one that
    /// moved stops the count; one pending starts it (or goes on), and once `limit` has
    /// passed without a move it is an error.
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// The credentials of an `Authorization` header value with the `Bearer` scheme, whose name
/// is case-insensitive (RFC 9110 §11.1).
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
        .filter(|c| !c.is_empty())
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
