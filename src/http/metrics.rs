//! `GET /metrics`: Prometheus text exposition, open like the probes (it holds counts only:
//! no names, ids or record text).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::StoreGauges;

/// Counters of runs, AWS calls and HTTP requests of this instance, and the outbox and run
/// gauges of the shared database.
#[utoipa::path(get, operation_id = "get_metrics", path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let store = &state.store;
    // The store answering or not is itself worth a series; a down database must not make
    // the scrape fail.
    let (events, active, successes) =
        tokio::join!(store.event_counts(), store.active_run_count(), store.last_successes());
    // The backlog is the pending row of the same count (no row: none pending).
    let backlog =
        events.as_ref().ok().map(|rows| rows.iter().find(|(state, _)| state == "pending").map_or(0, |(_, n)| *n));
    let gauges = StoreGauges {
        up: events.is_ok() && active.is_ok() && successes.is_ok(),
        outbox_backlog: backlog,
        events_by_state: events.unwrap_or_default(),
        active_runs: active.ok(),
        last_successes: successes.ok(),
    };
    let body = state.runner.metrics().render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// Counts every answer by route template. Added with `Router::layer`, so it runs after
/// routing and sees [`MatchedPath`]; unrouted requests count as `unmatched`, never by path.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // Both are cheap to clone (a known method is no allocation, a matched path is an Arc).
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let res = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |m| m.as_str());
    state.runner.metrics().http_request(method.as_str(), route, res.status().as_u16(), started.elapsed());
    res
}
