//! The agent's HTTP servers. Main port (8080): `/healthz`, `/readyz`, and kubeseal's API
//! (`crate::sealed_secrets::api`). Metrics port (8081): `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;

use crate::Health;
use crate::metrics::Metrics;

/// The router for the main port: health, readiness, and the jobs' own routes (`jobs`).
pub fn router(health: Health, jobs: Router) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
        .merge(jobs)
}

/// The router for the metrics port.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    )
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
