//! `/api/v1/inspections`: register, list, read, change and remove inspections.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use uuid::Uuid;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{AppState, PageParams, page_type, paginate};
use crate::model::inspection::{
    Inspection, InspectionDraft, InspectionPatch, InspectionView, NewInspection, SourceSettings, is_metadata_endpoint,
    new_trigger_id, parse_endpoint_url,
};
use crate::model::time;
use crate::model::validation::FieldErrors;
use crate::store::{InspectionFilter, StoreError, TimeKey};

page_type!(InspectionPage, InspectionView);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only enabled (true) or disabled (false) inspections.
    pub enabled: Option<bool>,
    /// Only inspections whose name contains this text (case-insensitive).
    pub name: Option<String>,
}

/// The API's view of an inspection, with when the scheduler runs it next.
fn view(state: &AppState, inspection: &Inspection) -> InspectionView {
    let mut v = InspectionView::from(inspection);
    v.next_run_at = crate::scheduler::next_run_at(inspection, state.settings.schedule, time::now());
    if !state.settings.guance_configured {
        v.guance.state = "not_configured".into();
    }
    v
}

fn name_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict("inspections_name_key") => ApiError::Conflict {
            code: "name_taken",
            message: "an inspection with this name already exists".into(),
            details: None,
        },
        other => other.into(),
    }
}

/// A file source may only read under the configured root: the API must not become a way to
/// read any file of the machine. Checked here as a run reads (and again at every run); one
/// answer for every refusal, so the API says nothing of paths outside the root. The stored
/// path is absolute.
fn check_file_source(state: &AppState, draft: &mut InspectionDraft) -> ApiResult<()> {
    let Some(path) = draft.settings.source.files_path() else { return Ok(()) };
    let bad = |msg: &str| ApiError::Unprocessable(FieldErrors::single("source.path", msg));
    let Some(root) = &state.settings.files_root else {
        return Err(bad("file sources are disabled on this service; start it with --files-root <dir>"));
    };
    let resolved = crate::source::files::resolve_under(root, path).map_err(bad)?;
    draft.settings.source = SourceSettings::Files { path: resolved.to_string_lossy().into_owned() };
    Ok(())
}

/// An endpoint at a cloud's metadata service would have the service fetch the machine's own
/// credentials on an API caller's behalf: refused unless the operator allows it.
fn check_endpoint(state: &AppState, draft: &InspectionDraft) -> ApiResult<()> {
    let Some(raw) = &draft.settings.aws.endpoint_url else { return Ok(()) };
    let metadata = parse_endpoint_url(raw).is_ok_and(|url| is_metadata_endpoint(&url));
    if metadata && !state.settings.allow_metadata_endpoints {
        return Err(ApiError::Unprocessable(FieldErrors::single(
            "aws.endpoint_url",
            "must not point at a link-local or cloud metadata address (the service's ALLOW_METADATA_ENDPOINTS \
             allows it)",
        )));
    }
    Ok(())
}

/// Register an inspection.
#[utoipa::path(
    post, operation_id = "create_inspection", path = "/api/v1/inspections", tag = "inspections",
    request_body = NewInspection,
    responses(
        (status = 201, description = "Created", body = InspectionView,
            headers(("Location" = String, description = "URL of the new inspection"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Name already taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<NewInspection>,
) -> ApiResult<impl IntoResponse> {
    let mut draft = InspectionDraft::from_new(input)?;
    check_file_source(&state, &mut draft)?;
    check_endpoint(&state, &draft)?;
    let id = Uuid::now_v7();
    let created = state.store.create_inspection(id, &draft, time::now()).await.map_err(name_conflict)?;
    tracing::info!(inspection_id = %id, name = %created.name, "inspection created");
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/api/v1/inspections/{id}"))], Json(view(&state, &created))))
}

/// List inspections, oldest first.
#[utoipa::path(
    get, operation_id = "list_inspections", path = "/api/v1/inspections", tag = "inspections",
    params(ListParams),
    responses(
        (status = 200, description = "A page of inspections", body = InspectionPage),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<InspectionPage>> {
    let page = PageParams { limit: params.limit, cursor: params.cursor };
    let limit = page.limit()?;
    let after: Option<TimeKey> = page.after()?;
    if params.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::BadRequest("name filter must be at most 200 characters".into()));
    }
    // Names are stored in NFC; a filter typed in another form finds them too.
    let name = params.name.map(|n| unicode_normalization::UnicodeNormalization::nfc(n.as_str()).collect());
    let filter = InspectionFilter { enabled: params.enabled, name_contains: name };
    let rows = state.store.list_inspections(&filter, after, limit + 1).await?;
    let (rows, next_cursor) = paginate(rows, limit, |i| (i.created_at, i.id));
    Ok(Json(InspectionPage { items: rows.iter().map(|i| view(&state, i)).collect(), next_cursor }))
}

/// Read an inspection.
#[utoipa::path(
    get, operation_id = "get_inspection", path = "/api/v1/inspections/{id}", tag = "inspections",
    params(("id" = Uuid, Path, description = "Inspection id")),
    responses(
        (status = 200, description = "The inspection", body = InspectionView),
        (status = 404, description = "No such inspection", body = ErrorBody),
    )
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<InspectionView>> {
    let found = state.store.get_inspection(id).await?.ok_or_else(|| ApiError::not_found("inspection"))?;
    Ok(Json(view(&state, &found)))
}

/// Change an inspection: fields present replace the stored ones.
#[utoipa::path(
    patch, operation_id = "update_inspection", path = "/api/v1/inspections/{id}", tag = "inspections",
    params(("id" = Uuid, Path, description = "Inspection id")),
    request_body = NewInspection,
    responses(
        (status = 200, description = "The changed inspection", body = InspectionView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such inspection", body = ErrorBody),
        (status = 409, description = "Name already taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<InspectionPatch>,
) -> ApiResult<Json<InspectionView>> {
    let current = state.store.get_inspection(id).await?.ok_or_else(|| ApiError::not_found("inspection"))?;
    let mut draft = InspectionDraft::patch(&current, patch)?;
    if draft.settings.source != current.settings.source {
        check_file_source(&state, &mut draft)?;
    }
    if draft.settings.aws.endpoint_url != current.settings.aws.endpoint_url {
        check_endpoint(&state, &draft)?;
    }
    let updated = state
        .store
        .update_inspection(id, &draft, time::now())
        .await
        .map_err(name_conflict)?
        .ok_or_else(|| ApiError::not_found("inspection"))?;
    tracing::info!(inspection_id = %id, name = %updated.name, enabled = updated.enabled, "inspection updated");
    Ok(Json(view(&state, &updated)))
}

/// Remove an inspection with its runs, clusters and key activity.
#[utoipa::path(
    delete, operation_id = "delete_inspection", path = "/api/v1/inspections/{id}", tag = "inspections",
    params(("id" = Uuid, Path, description = "Inspection id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such inspection", body = ErrorBody),
    )
)]
pub async fn delete(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    if state.store.delete_inspection(id).await? {
        tracing::info!(inspection_id = %id, "inspection deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("inspection"))
    }
}

/// Give an inspection a new trigger id.
///
/// The old id stops working at once: Func-style calls with it get 404 (EClientNotFound).
#[utoipa::path(
    post, operation_id = "rotate_trigger_id", path = "/api/v1/inspections/{id}/trigger-id/rotate", tag = "inspections",
    params(("id" = Uuid, Path, description = "Inspection id")),
    responses(
        (status = 200, description = "The inspection with its new `trigger_id`", body = InspectionView),
        (status = 404, description = "No such inspection", body = ErrorBody),
    )
)]
pub async fn rotate_trigger_id(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<InspectionView>> {
    let rotated = state
        .store
        .rotate_trigger_id(id, &new_trigger_id(), time::now())
        .await?
        .ok_or_else(|| ApiError::not_found("inspection"))?;
    tracing::info!(inspection_id = %id, "trigger id rotated");
    Ok(Json(view(&state, &rotated)))
}

/// Register an inspection in Guance again.
///
/// For an inspection whose self-built checker was deleted in Guance (`guance.state:
/// "deleted_in_guance"`): deleting it there does not delete the inspection, nor is it
/// registered again on its own. This queues a fresh registration; `guance.state` is
/// `pending` until the sync worker has created the checker.
#[utoipa::path(
    post, path = "/api/v1/inspections/{id}/guance/register", tag = "inspections",
    params(("id" = Uuid, Path, description = "Inspection id")),
    responses(
        (status = 202, description = "The inspection, its registration queued", body = InspectionView),
        (status = 404, description = "No such inspection", body = ErrorBody),
    )
)]
pub async fn register_in_guance(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<InspectionView>)> {
    if !state.store.request_guance_registration(id, time::now()).await? {
        return Err(ApiError::not_found("inspection"));
    }
    let inspection = state.store.get_inspection(id).await?.ok_or_else(|| ApiError::not_found("inspection"))?;
    tracing::info!(inspection_id = %id, "registration in Guance requested");
    Ok((StatusCode::ACCEPTED, Json(view(&state, &inspection))))
}
