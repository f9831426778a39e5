//! The HTTP control API on `api.port`.
//!
//! `GET /healthz` (alive) and `GET /readyz` (configuration loaded, every
//! primary reachable, not draining) are open, for probes. Everything under
//! `/api/v1` needs `Authorization: Bearer <token>`, compared in constant
//! time; with no token configured those endpoints answer 404 — disabled,
//! never open. `POST /api/v1/reload` takes the same path as SIGHUP and the
//! admin console's RELOAD. The OpenAPI description is
//! `GET /api/v1/openapi.json`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::admin::show;
use crate::config::ConfigError;
use crate::runtime::{ReloadError, Shared};

/// How long readyz waits for a primary to accept TCP.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const OPENAPI: &str = include_str!("openapi.json");

pub fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/reload", post(reload))
        .route("/pools", get(pools))
        .route("/clients", get(clients))
        .route("/servers", get(servers))
        .route("/stats", get(stats))
        .route("/databases", get(databases))
        .route("/query_cache", get(query_cache))
        .route("/config", get(config))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api/v1", v1)
        .fallback(not_found)
        .with_state(shared)
}

pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    if let Err(e) = axum::serve(listener, router(shared)).await {
        tracing::error!(error = %e, "API server stopped");
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Bearer-token check for `/api/v1`. Both sides are hashed first, so the
/// comparison takes the same time whatever the token's length or content.
async fn require_token(State(shared): State<Arc<Shared>>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let Some(token) = shared.snapshot().config.router.api.token.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "the API is disabled: no token is configured (api.token_env, api.token_file or PGDOG_API_TOKEN)",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let ok = given.is_some_and(|g| Sha256::digest(g.as_bytes()).ct_eq(&Sha256::digest(token.as_bytes())).into());
    if !ok {
        let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(req).await
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Ready: not draining, and every database's current primary accepts a TCP connection.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_draining() {
        return not_ready("draining for shutdown");
    }
    let snapshot = shared.snapshot();
    // The hosts that take writes now (the configured primaries unless a
    // failover moved them).
    let primaries: BTreeSet<(String, u16)> = snapshot
        .topologies
        .values()
        .filter_map(|t| t.members().into_iter().find(|m| m.0 == t.writer()).map(|(_, host, port)| (host, port)))
        .collect();
    for (host, port) in primaries {
        let probe = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port))).await;
        let reason = match probe {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => format!("primary {host}:{port} is unreachable: {e}"),
            Err(_) => format!("primary {host}:{port} did not answer within {} s", PROBE_TIMEOUT.as_secs()),
        };
        return not_ready(&reason);
    }
    Json(json!({ "ready": true })).into_response()
}

fn not_ready(reason: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "reason": reason }))).into_response()
}

/// Re-reads both files. A bad file: 400 naming file, line and key; the
/// running configuration keeps serving.
async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    match shared.reload() {
        Ok(()) => Json(json!({ "status": "reloaded" })).into_response(),
        Err(ReloadError::Config(e)) => {
            let mut body = json!({ "error": e.to_string() });
            match &e {
                ConfigError::At { file, line, column, key, .. } => {
                    body["file"] = json!(file);
                    body["line"] = json!(line);
                    body["column"] = json!(column);
                    if !key.is_empty() {
                        body["key"] = json!(key);
                    }
                }
                ConfigError::InFile { file, .. } => body["file"] = json!(file),
                ConfigError::Read { path, .. } => body["file"] = json!(path),
                ConfigError::Env { var, .. } => body["variable"] = json!(var),
            }
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(e @ ReloadError::Apply(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        // The file is fine; the address it asks for is taken (or not ours).
        Err(ReloadError::Listen(e)) => {
            let body = json!({ "error": e.to_string(), "listener": e.service.name(), "address": e.addr });
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Err(e @ ReloadError::NoFile) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn pools(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(show::pools(&shared).to_json())
}

async fn clients(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(show::clients(&shared).to_json())
}

async fn servers(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(show::servers(&shared).to_json())
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(show::stats(&shared).to_json())
}

async fn databases(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(show::databases(&shared).to_json())
}

async fn query_cache(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(show::query_cache(&shared).to_json())
}

/// The running configuration; secrets are never included (the API token
/// is not serialised, user passwords show as `<redacted>`).
async fn config(State(shared): State<Arc<Shared>>) -> Response {
    let snapshot = shared.snapshot();
    let router = match serde_json::to_value(&snapshot.config.router) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let redacted = |set: bool| if set { json!("<redacted>") } else { Value::Null };
    let users: Vec<Value> = snapshot
        .config
        .users
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "database": u.database,
                "pool": u.pool,
                "pool_mode": u.pool_mode.map(show::mode_name),
                "auth": format!("{:?}", u.auth).to_ascii_lowercase(),
                "server_user": u.server_user,
                "password": redacted(u.password.is_some()),
                "server_password": redacted(u.server_password.is_some()),
            })
        })
        .collect();
    Json(json!({ "router": router, "users": users })).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_is_json_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("openapi.json parses");
        let paths = doc["paths"].as_object().expect("paths");
        for p in [
            "/healthz",
            "/readyz",
            "/api/v1/reload",
            "/api/v1/pools",
            "/api/v1/clients",
            "/api/v1/servers",
            "/api/v1/stats",
            "/api/v1/databases",
            "/api/v1/query_cache",
            "/api/v1/config",
            "/api/v1/openapi.json",
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
    }

    /// The `Pool` schema names SHOW POOLS' columns, all of them, in order,
    /// with their types; the health ones may be null.
    #[test]
    fn openapi_pool_schema_matches_show_pools() {
        use crate::admin::show::POOLS_COLUMNS;
        use crate::admin::table::Kind;
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("openapi.json parses");
        let items = &doc["paths"]["/api/v1/pools"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(items["items"]["$ref"], "#/components/schemas/Pool");
        let schema = &doc["components"]["schemas"]["Pool"];
        let required: Vec<&str> =
            schema["required"].as_array().expect("required").iter().filter_map(|v| v.as_str()).collect();
        let columns: Vec<&str> = POOLS_COLUMNS.iter().map(|(name, _)| *name).collect();
        assert_eq!(required, columns);
        let properties = schema["properties"].as_object().expect("properties");
        assert_eq!(properties.keys().count(), columns.len());
        for (name, kind) in POOLS_COLUMNS {
            let p = &properties[name];
            let want = if kind == Kind::Int { "integer" } else { "string" };
            assert_eq!(p["type"], want, "{name}");
            let nullable = matches!(name, "replica_lag_ms" | "last_error");
            assert_eq!(p["nullable"].as_bool().unwrap_or(false), nullable, "{name}");
        }
    }
}
