//! One error type for the HTTP layer and one JSON body shape for every error.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::validation::FieldErrors;
use crate::store::StoreError;

tokio::task_local! {
    /// The request id of the request being handled, so error bodies can carry it.
    pub static REQUEST_ID: String;
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String, details: Option<serde_json::Value> },
    #[error("request validation failed")]
    Unprocessable(FieldErrors),
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    InvalidBody { status: StatusCode, message: String, field: Option<String> },
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// `{"error": {...}}`: the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `not_found`, `conflict`, `validation_failed`,
    /// `malformed_json`, `invalid_body`, `bad_request`, `unavailable`, `internal`, …
    pub code: String,
    pub message: String,
    /// Field path → problems, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, Vec<String>>>,
    /// Extra facts, e.g. the id of the run that is already in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    /// Present on 5xx answers: quote it when reporting a problem; the logs have the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody { status, .. } => *status,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::Unprocessable(_) => "validation_failed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidBody { status, .. } if *status == StatusCode::BAD_REQUEST => "malformed_json",
            ApiError::InvalidBody { status, .. } if *status == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "unsupported_media_type"
            }
            ApiError::InvalidBody { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() { ApiError::Unavailable(e) } else { ApiError::Internal(e.into()) }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        ApiError::Unprocessable(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let request_id = REQUEST_ID.try_with(Clone::clone).ok();
        let mut detail = ErrorDetail {
            code: self.code().to_string(),
            message: self.to_string(),
            fields: None,
            details: None,
            request_id: None,
        };
        match self {
            ApiError::Unprocessable(fields) => {
                detail.message = "request validation failed".into();
                detail.fields = Some(fields.into_map());
            }
            ApiError::InvalidBody { field: Some(field), ref message, .. } => {
                detail.fields = Some(BTreeMap::from([(field, vec![message.clone()])]));
            }
            ApiError::Conflict { details, .. } => detail.details = details,
            ApiError::Unavailable(e) => {
                tracing::error!(error = %e, "database unavailable");
                detail.message = "the database is unavailable; try again shortly".into();
                detail.request_id = request_id;
            }
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                detail.request_id = request_id;
            }
            _ => {}
        }
        let mut res = (status, Json(ErrorBody { error: detail })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
