//! The agent's HTTP endpoints. For now `/healthz` (the process is alive) and `/readyz` (the
//! API server has answered); the kubeseal certificate endpoints and webhooks join them later.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::Health;

/// The router for the agent's HTTP port.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the API server\n",
        )
    }
}
