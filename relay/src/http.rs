//! The relay's HTTP port: `/health`, `/metrics` (Prometheus text) and `/api/status` (JSON).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::Shared;
use crate::status::RelayStatus;

#[derive(Clone)]
struct HttpState {
    shared: Arc<Shared>,
    http: String,
}

/// The HTTP routes of a relay.
pub fn router(shared: Arc<Shared>, http: String) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .with_state(HttpState { shared, http })
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.shared.metrics.render(),
    )
}

async fn status(State(s): State<HttpState>) -> axum::Json<RelayStatus> {
    let shared = s.shared.clone();
    let http = s.http.clone();
    // The mailbox totals read the store: keep that off the async workers.
    let status = tokio::task::spawn_blocking(move || RelayStatus::of(&shared, &http)).await;
    axum::Json(status.unwrap_or_else(|_| RelayStatus::of(&s.shared, &s.http)))
}
