//! Known error clusters and access-key activity of an inspection.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::{AppState, PageParams, page_type, paginate};
use crate::model::cluster::{AccessKeyView, ClusterView};
use crate::store::{AccessKeyKey, ClusterFilter, TimeKey};

page_type!(ClusterPage, ClusterView);
page_type!(AccessKeyPage, AccessKeyView);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClusterParams {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only clusters reported as new at or after this time (not those learned from a
    /// baseline read).
    pub new_since: Option<DateTime<Utc>>,
    /// Only this error code (`ConsoleLoginFailure` for failed sign-ins).
    pub error_code: Option<String>,
    /// Only this event source, e.g. `s3.amazonaws.com`.
    pub event_source: Option<String>,
}

async fn require_inspection(state: &AppState, id: Uuid) -> ApiResult<()> {
    match state.store.get_inspection(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("inspection")),
    }
}

/// Every cluster an inspection knows, most recently discovered first.
#[utoipa::path(
    get, operation_id = "list_inspection_clusters", path = "/api/v1/inspections/{id}/clusters", tag = "clusters",
    params(("id" = Uuid, Path, description = "Inspection id"), ClusterParams),
    responses(
        (status = 200, description = "A page of clusters", body = ClusterPage),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 404, description = "No such inspection", body = ErrorBody),
    )
)]
pub async fn list_for_inspection(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<ClusterParams>,
) -> ApiResult<Json<ClusterPage>> {
    let page = PageParams { limit: params.limit, cursor: params.cursor };
    let limit = page.limit()?;
    let after: Option<TimeKey> = page.after()?;
    for (name, v) in [("error_code", &params.error_code), ("event_source", &params.event_source)] {
        if v.as_ref().is_some_and(|v| v.len() > 256) {
            return Err(ApiError::BadRequest(format!("{name} must be at most 256 characters")));
        }
    }
    require_inspection(&state, id).await?;
    let filter =
        ClusterFilter { new_since: params.new_since, error_code: params.error_code, event_source: params.event_source };
    let rows = state.store.list_clusters(id, &filter, after, limit + 1).await?;
    let (items, next_cursor) = paginate(rows, limit, |c| (c.discovered_at, c.id));
    Ok(Json(ClusterPage { items, next_cursor }))
}

/// Read a cluster, with one full CloudTrail record of it.
#[utoipa::path(
    get, operation_id = "get_cluster", path = "/api/v1/clusters/{id}", tag = "clusters",
    params(("id" = Uuid, Path, description = "Cluster id")),
    responses(
        (status = 200, description = "The cluster", body = ClusterView),
        (status = 404, description = "No such cluster", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<ClusterView>> {
    let c = state.store.get_cluster(id).await?.ok_or_else(|| ApiError::not_found("cluster"))?;
    Ok(Json(c))
}

/// Access keys an inspection has seen, most recently active first.
#[utoipa::path(
    get, operation_id = "list_access_keys", path = "/api/v1/inspections/{id}/access-keys", tag = "clusters",
    params(("id" = Uuid, Path, description = "Inspection id"), PageParams),
    responses(
        (status = 200, description = "A page of access keys", body = AccessKeyPage),
        (status = 404, description = "No such inspection", body = ErrorBody),
    )
)]
pub async fn access_keys(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<AccessKeyPage>> {
    let limit = page.limit()?;
    let after: Option<AccessKeyKey> = page.after()?;
    require_inspection(&state, id).await?;
    let rows = state.store.list_access_keys(id, after, limit + 1).await?;
    let (items, next_cursor) = paginate(rows, limit, |k| (k.last_seen, k.access_key_id.clone()));
    Ok(Json(AccessKeyPage { items, next_cursor }))
}
