//! The Guance events of an inspection's runs: what was sent (or held back, and why), when,
//! and how delivery went.

use axum::Json;
use axum::extract::State;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::{AppState, PageParams, page_type, paginate};
use crate::model::event::EventView;
use crate::store::TimeKey;

page_type!(EventPage, EventView);

/// Events of an inspection, newest first: status, anomaly and recovery time, duration,
/// silenced or not, delivery state and attempts.
#[utoipa::path(
    get, operation_id = "list_inspection_events", path = "/api/v1/inspections/{id}/events", tag = "events",
    params(("id" = Uuid, Path, description = "Inspection id"), PageParams),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 404, description = "No such inspection", body = ErrorBody),
    )
)]
pub async fn list_for_inspection(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<EventPage>> {
    let limit = page.limit()?;
    let after: Option<TimeKey> = page.after()?;
    if state.store.get_inspection(id).await?.is_none() {
        return Err(ApiError::not_found("inspection"));
    }
    let rows = state.store.list_events(id, after, limit + 1).await?;
    let (items, next_cursor) = paginate(rows, limit, |e| (e.created_at, e.id));
    Ok(Json(EventPage { items, next_cursor }))
}

/// One event with everything it carries: the `df_*` fields and the markdown message.
#[utoipa::path(
    get, operation_id = "get_event", path = "/api/v1/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "Event id (the row's, not `df_event_id`)")),
    responses(
        (status = 200, description = "The event", body = EventView),
        (status = 404, description = "No such event", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<EventView>> {
    let e = state.store.get_event(id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Json(e))
}
