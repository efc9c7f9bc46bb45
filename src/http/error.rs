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

/// Every error the API answers, named by what went wrong; each has one status and one code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter, cursor or other input outside the body is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON, or could not be read at all.
    #[error("{0}")]
    MalformedJson(String),
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the request took too long")]
    Timeout,
    /// The client did not send its body within the body-read deadline.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The request is valid but clashes with the current state (a name taken, a run in
    /// progress); `code` says which clash.
    #[error("{message}")]
    Conflict { code: &'static str, message: String, details: Option<serde_json::Value> },
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("expected a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The body is JSON but does not fit the request's type: a wrong type or an unknown field.
    #[error("{message}")]
    InvalidBody { field: String, message: String },
    /// The body fits the type but its values break the rules; every bad field is listed.
    #[error("request validation failed")]
    Unprocessable(FieldErrors),
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
    /// Stable machine-readable code: `bad_request`, `malformed_json`, `unauthorized`,
    /// `not_found`, `method_not_allowed`, `timeout`, `body_timeout`, `name_taken`,
    /// `run_in_progress`, `inspection_disabled`, `payload_too_large`,
    /// `unsupported_media_type`, `invalid_body`, `validation_failed`, `unavailable`,
    /// `internal`; from the connection itself, before any route: `too_many_connections`,
    /// `uri_too_long`, `headers_too_large`.
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
            ApiError::BadRequest(_) | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout | ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidBody { .. } | ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable `code` of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Timeout => "timeout",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Conflict { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::Unprocessable(_) => "validation_failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    /// The error a layer meant by answering `status` without a body of the API's shape
    /// (method routing, the timeout, the body limit, axum's own rejections).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::NOT_FOUND => ApiError::NotFound("no such route".into()),
            s if s.is_client_error() => ApiError::BadRequest(s.canonical_reason().unwrap_or("bad request").into()),
            s => ApiError::Internal(anyhow::anyhow!("a layer answered {s} without a body")),
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
            ApiError::InvalidBody { field, message } => {
                detail.fields = Some(BTreeMap::from([(field, vec![message])]));
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
