//! Runs: trigger one, read the history.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery, OptionalJson};
use super::{AppState, PageParams, page_type, paginate};
use crate::model::cluster::ClusterSummary;
use crate::model::run::{Run, RunRequest, RunStatus, Trigger};
use crate::runner::TriggerError;
use crate::store::{RunClusterKey, RunFilter, TimeKey};

page_type!(RunPage, Run);
page_type!(RunClusterPage, ClusterSummary);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TriggerParams {
    /// Wait for the run to finish (default true). False answers 202 at once.
    pub wait: Option<bool>,
}

impl From<TriggerError> for ApiError {
    fn from(e: TriggerError) -> Self {
        match e {
            TriggerError::NotFound => ApiError::not_found("inspection"),
            TriggerError::Disabled => ApiError::Conflict {
                code: "inspection_disabled",
                message: "the inspection is disabled; enable it to run it".into(),
                details: None,
            },
            TriggerError::Active { run_id } => ApiError::Conflict {
                code: "run_in_progress",
                message: format!("run {run_id} of this inspection is still in progress"),
                details: Some(serde_json::json!({ "run_id": run_id })),
            },
            TriggerError::Invalid(fields) => ApiError::Unprocessable(fields),
            TriggerError::Store(e) => e.into(),
        }
    }
}

fn accepted(run: &Run) -> Response {
    (StatusCode::ACCEPTED, [(header::LOCATION, format!("/api/v1/runs/{}", run.id))], Json(run.clone())).into_response()
}

/// Run an inspection now.
///
/// Reads each log group from where the previous run stopped (or the explicit window), clusters
/// the error records and reports the clusters this inspection had never seen.
#[utoipa::path(
    post, operation_id = "trigger_run", path = "/api/v1/inspections/{id}/runs", tag = "runs",
    params(("id" = Uuid, Path, description = "Inspection id"), TriggerParams),
    request_body(content = Option<RunRequest>, description = "Optional, as is each field: no body (or `{}`) reads from where the previous run stopped"),
    responses(
        (status = 200, description = "The finished run", body = Run),
        (status = 202, description = "Run accepted (or still going when the wait ended)", body = Run,
            headers(("Location" = String, description = "URL of the run"))),
        (status = 404, description = "No such inspection", body = ErrorBody),
        (status = 409, description = "Disabled, or a run is already in progress (`details.run_id`)", body = ErrorBody),
        (status = 422, description = "Invalid request", body = ErrorBody),
    )
)]
pub async fn trigger(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<TriggerParams>,
    OptionalJson(request): OptionalJson<RunRequest>,
) -> ApiResult<Response> {
    let started = state.runner.trigger(id, Trigger::Api, request, None).await?;
    if !params.wait.unwrap_or(true) {
        return Ok(accepted(&started.run));
    }
    // The run is its own task: if this wait ends or the client goes away, it still finishes.
    match tokio::time::timeout(state.settings.run_wait_timeout, started.done).await {
        Ok(Ok(Some(run))) => Ok(Json(run).into_response()),
        Ok(Ok(None)) => Err(ApiError::not_found("run (its inspection was deleted)")),
        Ok(Err(join)) => Err(ApiError::Internal(anyhow::anyhow!("run task failed: {join}"))),
        Err(_) => {
            let run = state.store.get_run(started.run.id).await?.unwrap_or(started.run);
            Ok(accepted(&run))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only runs of this inspection.
    pub inspection_id: Option<Uuid>,
    /// Only runs that ended (or are) in this status.
    pub status: Option<RunStatus>,
    /// Runs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Runs created before this time.
    pub until: Option<DateTime<Utc>>,
}

/// List runs, newest first.
#[utoipa::path(
    get, operation_id = "list_runs", path = "/api/v1/runs", tag = "runs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of runs", body = RunPage),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, ApiQuery(params): ApiQuery<ListParams>) -> ApiResult<Json<RunPage>> {
    let page = PageParams { limit: params.limit, cursor: params.cursor };
    let limit = page.limit()?;
    let after: Option<TimeKey> = page.after()?;
    let filter = RunFilter {
        inspection_id: params.inspection_id,
        status: params.status,
        since: params.since,
        until: params.until,
    };
    let rows = state.store.list_runs(&filter, after, limit + 1).await?;
    let (items, next_cursor) = paginate(rows, limit, |r| (r.created_at, r.id));
    Ok(Json(RunPage { items, next_cursor }))
}

/// Read a run with its report.
#[utoipa::path(
    get, operation_id = "get_run", path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Run>> {
    let run = state.store.get_run(id).await?.ok_or_else(|| ApiError::not_found("run"))?;
    Ok(Json(run))
}

/// The clusters a run found: new ones first, then the largest.
#[utoipa::path(
    get, operation_id = "list_run_clusters", path = "/api/v1/runs/{id}/clusters", tag = "runs",
    params(("id" = Uuid, Path, description = "Run id"), PageParams),
    responses(
        (status = 200, description = "A page of the run's clusters", body = RunClusterPage),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn clusters(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<RunClusterPage>> {
    let limit = page.limit()?;
    let after: Option<RunClusterKey> = page.after()?;
    if state.store.get_run(id).await?.is_none() {
        return Err(ApiError::not_found("run"));
    }
    let rows = state.store.run_clusters(id, after, limit + 1).await?;
    let (items, next_cursor) = paginate(rows, limit, |c| (c.is_new, c.count, c.identity.fingerprint.clone()));
    Ok(Json(RunClusterPage { items, next_cursor }))
}
