//! Ferry's incoming API (`/api/v1`), served by `ferry serve`: start syncs and poll runs,
//! read an organization's status and id maps. Every request carries an API key
//! (`Authorization: Bearer <key>`): a missing or unknown key is 401; a key of another
//! organization or without the scope is 403; the body never says which. The OpenAPI
//! document is generated from these handlers (`/api/v1/openapi.json`).

// Checks return the ready error response for the handler to send; they run once per
// request, so the size of `Err(Response)` does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::runtime::{Runtime, SyncJob};
use crate::store::apikeys::{scope, ApiKey};
use crate::store::idmaps::IdMapFilter;
use crate::store::runs::{cluster_runs, RunRow};
use crate::sync::EntityReport;

/// A sync to start.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Only this connection (default: every connection of the organization).
    #[serde(default)]
    pub connection: Option<String>,
    /// Only these entities (default: all the connection syncs).
    #[serde(default)]
    pub entities: Vec<String>,
    /// Ignore cursors: read everything on both sides.
    #[serde(default)]
    pub full: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 300) for the runs to finish.
    pub wait: Option<u64>,
}

/// A sync run: `queued`, `running`, `success`, `partial` or `error`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: i64,
    pub organization: String,
    pub connection: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub message: Option<String>,
    pub entities: Vec<EntityReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunsView {
    pub runs: Vec<RunView>,
}

/// Runs of a connection close together, read as one.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncRunGroup {
    /// `success` if any run in the group succeeded.
    pub status: String,
    pub runs: usize,
    pub first_started: String,
    pub last_started: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionStatus {
    pub connection: String,
    pub connector: String,
    pub last_run: Option<RunView>,
    pub sync_run: Option<SyncRunGroup>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgStatus {
    pub organization: String,
    pub connections: Vec<ConnectionStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct IdMapQuery {
    /// Only id maps of this hub entity.
    pub entity: Option<String>,
    /// Only id maps with an error.
    #[serde(default)]
    pub errors: bool,
    /// 1-based page (default 1).
    pub page: Option<i64>,
    /// Items per page (default 100, at most 1000).
    pub per_page: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdMapView {
    pub connection: String,
    pub hub_entity: String,
    pub hub_id: Option<String>,
    pub external_entity: String,
    pub external_id: Option<String>,
    pub state: String,
    pub name: Option<String>,
    pub retry_to: Option<String>,
    pub last_error: Option<String>,
    /// What an operator should know that is no error (an ambiguous match kept apart).
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdMapPage {
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
    pub items: Vec<IdMapView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferry API", version = "1", description = "Start syncs, poll runs, read status and id maps."),
    paths(start_sync, get_run, org_status, org_idmaps, org_conflicts),
    components(schemas(SyncRequest, RunView, RunsView, SyncRunGroup, ConnectionStatus, OrgStatus, IdMapView, IdMapPage, ApiError, EntityReport, crate::sync::Counts, crate::store::conflicts::ConflictRow)),
    modifiers(&BearerKey),
    security(("api_key" = []))
)]
pub struct ApiDoc;

struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let comps = doc.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A key from `ferry apikey create`"))
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/orgs/{org}/syncs", post(start_sync))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/orgs/{org}/status", get(org_status))
        .route("/api/v1/orgs/{org}/idmaps", get(org_idmaps))
        .route("/api/v1/orgs/{org}/conflicts", get(org_conflicts))
}

/// `?limit=` of the conflict log.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ConflictQuery {
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// The conflict log: every field both sides changed to different values, with both values
/// (JSON text), both edit times and the side that won, newest first.
#[utoipa::path(
    get, path = "/api/v1/orgs/{org}/conflicts",
    params(("org" = String, Path, description = "Organization slug"), ConflictQuery),
    responses((status = 200, body = Vec<crate::store::conflicts::ConflictRow>), (status = 401, body = ApiError), (status = 403, body = ApiError))
)]
async fn org_conflicts(
    State(rt): State<Arc<Runtime>>,
    Path(org): Path<String>,
    Query(q): Query<ConflictQuery>,
    headers: HeaderMap,
) -> Response {
    let ids: Vec<i64> = match readable_connections(&rt, &org, &headers) {
        Ok(n) => n.into_keys().collect(),
        Err(r) => return r,
    };
    match rt
        .store()
        .conflicts_of(&ids, q.limit.unwrap_or(100).clamp(1, 1000))
    {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => internal(e),
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(ApiError { error: msg.into() })).into_response()
}

fn internal(e: anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{e:#}"), "API request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// The live key presented, else 401.
fn authenticate(rt: &Runtime, headers: &HeaderMap) -> Result<ApiKey, Response> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(super::bearer);
    match presented.map(|p| rt.store().api_key(p)) {
        Some(Ok(Some(k))) => Ok(k),
        Some(Err(e)) => Err(internal(e)),
        _ => Err(error(StatusCode::UNAUTHORIZED, "unauthorized")),
    }
}

/// 403 unless the key belongs to `org_id` and has scope `need` (`sync` includes `read`).
fn permit(key: &ApiKey, org_id: Option<i64>, need: &str) -> Result<(), Response> {
    let scope_ok = key.scope == scope::SYNC || key.scope == need;
    if org_id != Some(key.organization_id) || !scope_ok {
        return Err(error(StatusCode::FORBIDDEN, "forbidden"));
    }
    Ok(())
}

/// Both checks, for endpoints under an organization.
fn authorize(
    rt: &Runtime,
    headers: &HeaderMap,
    org_id: Option<i64>,
    need: &str,
) -> Result<ApiKey, Response> {
    let key = authenticate(rt, headers)?;
    permit(&key, org_id, need)?;
    Ok(key)
}

/// An organization's connections (id → name) for a caller with the read scope.
fn readable_connections(
    rt: &Runtime,
    org: &str,
    headers: &HeaderMap,
) -> Result<HashMap<i64, String>, Response> {
    let oid = org_id(rt, org)?;
    authorize(rt, headers, oid, scope::READ)?;
    Ok(rt
        .connections
        .iter()
        .filter(|p| p.org.slug == org)
        .map(|p| (p.connection_id, p.config.name.clone()))
        .collect())
}

fn org_id(rt: &Runtime, slug: &str) -> Result<Option<i64>, Response> {
    rt.store()
        .org_by_slug(slug)
        .map(|o| o.map(|o| o.id))
        .map_err(internal)
}

fn view(rt: &Runtime, r: RunRow) -> RunView {
    let (org, conn) = rt
        .connections
        .iter()
        .find(|p| p.connection_id == r.connection_id)
        .map(|p| (p.org.slug.clone(), p.config.name.clone()))
        .unwrap_or_default();
    RunView {
        id: r.id,
        organization: org,
        connection: conn,
        status: r.status,
        started_at: r.started_at.and_utc().to_rfc3339(),
        finished_at: r.finished_at.map(|t| t.and_utc().to_rfc3339()),
        message: r.message,
        entities: serde_json::from_str(&r.counts).unwrap_or_default(),
    }
}

/// Starts a sync of an organization's connections.
#[utoipa::path(
    post, path = "/api/v1/orgs/{org}/syncs", request_body = SyncRequest,
    params(("org" = String, Path, description = "Organization slug"), WaitQuery),
    responses(
        (status = 202, description = "Queued (or still running after `wait`)", body = RunsView),
        (status = 200, description = "Finished within `wait`", body = RunsView),
        (status = 400, description = "Unknown entity", body = ApiError),
        (status = 401, description = "Missing or unknown key", body = ApiError),
        (status = 403, description = "Key of another organization or without the sync scope", body = ApiError),
        (status = 404, description = "No such connection", body = ApiError),
    )
)]
async fn start_sync(
    State(rt): State<Arc<Runtime>>,
    Path(org): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Option<Json<SyncRequest>>,
) -> Response {
    let oid = match org_id(&rt, &org) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = authorize(&rt, &headers, oid, scope::SYNC) {
        return r;
    }
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let targets: Vec<_> = rt
        .connections
        .iter()
        .filter(|p| p.org.slug == org)
        .filter(|p| req.connection.as_ref().is_none_or(|c| *c == p.config.name))
        .collect();
    if targets.is_empty() {
        return error(StatusCode::NOT_FOUND, "no such connection");
    }
    for p in &targets {
        for e in &req.entities {
            if !p.entities.iter().any(|s| s.entity.name() == e) {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "connection {:?} does not sync an entity named {e:?}",
                        p.config.name
                    ),
                );
            }
        }
    }
    let mut ids = Vec::new();
    for p in targets {
        let options = serde_json::json!({"entities": req.entities, "full": req.full, "via": "api"});
        let queued = rt
            .store()
            .queue_run(p.connection_id, &options.to_string())
            .and_then(|run| {
                let job = SyncJob {
                    org: org.clone(),
                    connection: p.config.name.clone(),
                    full: req.full,
                    entities: req.entities.clone(),
                    run_id: Some(run),
                    ..Default::default()
                };
                rt.enqueue_sync(&job, None, crate::store::orgs::now())?;
                Ok(run)
            });
        match queued {
            Ok(run) => ids.push(run),
            Err(e) => return internal(e),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(300));
    loop {
        let runs: Result<Vec<RunRow>, _> = ids
            .iter()
            .map(|id| {
                rt.store()
                    .run(*id)
                    .map(|r| r.into_iter().collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.into_iter().flatten().collect());
        let runs = match runs {
            Ok(r) => r,
            Err(e) => return internal(e),
        };
        let done = runs.iter().all(|r| r.finished_at.is_some());
        if done || tokio::time::Instant::now() >= deadline {
            let code = if done {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let runs = runs.into_iter().map(|r| view(&rt, r)).collect();
            return (code, Json(RunsView { runs })).into_response();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A run's status and per-entity counts.
#[utoipa::path(
    get, path = "/api/v1/runs/{id}",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, body = RunView),
        (status = 401, body = ApiError),
        (status = 404, description = "No such run, or it belongs to another organization (the two are not told apart)", body = ApiError),
    )
)]
async fn get_run(
    State(rt): State<Arc<Runtime>>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    // The key first: without one, nothing is said about which runs exist.
    let key = match authenticate(&rt, &headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let run = match rt.store().run(id) {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let owner = |run: &RunRow| {
        rt.connections
            .iter()
            .find(|p| p.connection_id == run.connection_id)
            .map(|p| p.org_id)
    };
    // Another organization's run is answered as one that does not exist: a 403 would
    // tell which run ids exist.
    match run {
        Some(run) if permit(&key, owner(&run), scope::READ).is_ok() => {
            Json(view(&rt, run)).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "no such run"),
    }
}

/// Each connection's latest run and grouped sync run.
#[utoipa::path(
    get, path = "/api/v1/orgs/{org}/status",
    params(("org" = String, Path, description = "Organization slug")),
    responses((status = 200, body = OrgStatus), (status = 401, body = ApiError), (status = 403, body = ApiError))
)]
async fn org_status(
    State(rt): State<Arc<Runtime>>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    let oid = match org_id(&rt, &org) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Err(r) = authorize(&rt, &headers, oid, scope::READ) {
        return r;
    }
    let window = chrono::Duration::minutes(rt.settings().runtime.run_cluster_minutes);
    let mut connections = Vec::new();
    for p in rt.connections.iter().filter(|p| p.org.slug == org) {
        let runs = match rt.store().runs_of(p.connection_id, 200) {
            Ok(r) => r,
            Err(e) => return internal(e),
        };
        let group = cluster_runs(&runs, window).into_iter().next();
        connections.push(ConnectionStatus {
            connection: p.config.name.clone(),
            connector: p.config.connector.clone(),
            last_run: runs.into_iter().next().map(|r| view(&rt, r)),
            sync_run: group.map(|g| SyncRunGroup {
                status: g.status,
                runs: g.runs,
                first_started: g.first_started.and_utc().to_rfc3339(),
                last_started: g.last_started.and_utc().to_rfc3339(),
            }),
        });
    }
    Json(OrgStatus {
        organization: org,
        connections,
    })
    .into_response()
}

/// Which hub record is which application record, page by page.
#[utoipa::path(
    get, path = "/api/v1/orgs/{org}/idmaps",
    params(("org" = String, Path, description = "Organization slug"), IdMapQuery),
    responses((status = 200, body = IdMapPage), (status = 401, body = ApiError), (status = 403, body = ApiError))
)]
async fn org_idmaps(
    State(rt): State<Arc<Runtime>>,
    Path(org): Path<String>,
    Query(q): Query<IdMapQuery>,
    headers: HeaderMap,
) -> Response {
    let names = match readable_connections(&rt, &org, &headers) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let ids: Vec<i64> = names.keys().copied().collect();
    let page = q.page.unwrap_or(1).max(1);
    let per_page = q.per_page.unwrap_or(100).clamp(1, 1000);
    let filter = IdMapFilter {
        connections: &ids,
        hub_entity: q.entity.as_deref(),
        errors_only: q.errors,
    };
    let (total, rows) = match rt
        .store()
        .idmaps_page(&filter, (page - 1) * per_page, per_page)
    {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    let items = rows
        .into_iter()
        .map(|m| IdMapView {
            note: m.note(),
            connection: names.get(&m.connection_id).cloned().unwrap_or_default(),
            hub_entity: m.hub_entity,
            hub_id: m.hub_id,
            external_entity: m.external_entity,
            external_id: m.external_id,
            state: m.state,
            name: m.name,
            retry_to: m.retry_to,
            last_error: m.last_error,
        })
        .collect();
    Json(IdMapPage {
        page,
        per_page,
        total,
        items,
    })
    .into_response()
}
