//! The HTTP API: routes, shared state, middleware and the OpenAPI document.

pub mod auth;
pub mod clusters;
pub mod conn;
pub mod console;
pub mod error;
pub mod events;
pub mod examples;
pub mod extract;
pub mod func;
pub mod health;
pub mod inspections;
pub mod metrics;
pub mod runs;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::runner::Runner;
use crate::store::{DynStore, decode_cursor, encode_cursor};
use error::{ApiError, ErrorBody, REQUEST_ID};

/// Where `/` sends a browser: the page a person starts from, the console's overview.
pub const HOME: &str = console::HOME;

/// Everything handlers need, built once at start-up.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub runner: Arc<Runner>,
    pub settings: Arc<HttpSettings>,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    pub run_wait_timeout: Duration,
    pub max_body_bytes: usize,
    /// Longest time a request's body may take to arrive, on every route: a run may take long,
    /// a client's bytes may not.
    pub body_read_timeout: Duration,
    /// Base URL for links (no trailing slash).
    pub public_url: String,
    /// Where file sources may read; None refuses them.
    pub files_root: Option<std::path::PathBuf>,
    /// Bearer tokens of the management API; empty leaves it open (loopback only).
    pub api_tokens: auth::Tokens,
    /// Whether a Guance workspace is configured (else registrations show `not_configured`).
    pub guance_configured: bool,
    /// The built-in scheduler, for `next_run_at`.
    pub schedule: crate::scheduler::ScheduleSettings,
    /// Whether `aws.endpoint_url` may point at link-local or cloud metadata addresses.
    pub allow_metadata_endpoints: bool,
    /// The web console's share links and sessions.
    pub console: console::ConsoleSettings,
}

impl HttpSettings {
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_RUN_WAIT_TIMEOUT: Duration = Duration::from_secs(900);
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            run_wait_timeout: Self::DEFAULT_RUN_WAIT_TIMEOUT,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            public_url: crate::outbox::EventSettings::DEFAULT_PUBLIC_URL.into(),
            files_root: None,
            api_tokens: auth::Tokens::default(),
            guance_configured: false,
            schedule: crate::scheduler::ScheduleSettings::default(),
            allow_metadata_endpoints: false,
            console: console::ConsoleSettings::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloudtrail-inspector",
        description = "Watches AWS CloudTrail (through CloudWatch Logs) for new kinds of errors: \
            denied and unauthorized API calls, failed sign-ins, errors nobody has seen before. \
            Register inspections, trigger runs, read the history.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "inspections", description = "What to watch and how"),
        (name = "runs", description = "Inspections of a time window, and their history"),
        (name = "clusters", description = "Error clusters and access-key activity"),
        (name = "events", description = "Guance events of runs and their delivery"),
        (name = "health", description = "Liveness and readiness"),
        (name = "func", description = "DataFlux Func's calling contract: run an inspection by its trigger id, \
            as Func's Sync API and Async API are called (also under their former names, auth link and batch)"),
    ),
    components(schemas(ErrorBody, func::FuncBoxed, func::FuncErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer-token scheme the management API requires (see `http::auth`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("One of the service's API_TOKEN values"))
                    .build(),
            ),
        );
    }
}

/// Routes under the management timeout.
fn managed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(inspections::list, inspections::create))
        .routes(routes!(inspections::get, inspections::update, inspections::delete))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::clusters))
        .routes(routes!(clusters::list_for_inspection))
        .routes(routes!(clusters::get))
        .routes(routes!(clusters::access_keys))
        .routes(routes!(inspections::rotate_trigger_id))
        .routes(routes!(inspections::register_in_guance))
        .routes(routes!(events::list_for_inspection))
        .routes(routes!(events::get))
}

/// Routes open to anyone: probes and metrics.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
}

/// Routes that wait for a run and so have their own, longer, limit.
fn run_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(runs::trigger))
}

/// DataFlux Func-style triggers: they wait for runs like `run_routes`, and the trigger id in
/// their URL is their credential, so no bearer token is asked for.
fn func_routes() -> OpenApiRouter<AppState> {
    func::routes()
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = managed_routes().split_for_parts();
    for part in [run_routes(), func_routes(), public_routes()] {
        doc.merge(part.split_for_parts().1);
    }
    document_common_errors(&mut doc);
    optional_bodies_are_absent(&mut doc);
    examples::add(&mut doc);
    doc
}

/// utoipa writes an optional body (`content = Option<T>`) as a required choice between
/// `null` and `T`; what the API takes is `T` or no body at all. Swagger UI, which fills a
/// body from the first choice, would offer `null`.
fn optional_bodies_are_absent(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{Schema, Type};
    use utoipa::openapi::{RefOr, Required};
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.post, &mut item.patch, &mut item.put].into_iter().flatten() {
            let Some(body) = op.request_body.as_mut() else { continue };
            for content in body.content.values_mut() {
                let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else { continue };
                let is_null =
                    |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == Type::Null.into());
                if let [a, b] = &one_of.items[..] {
                    let other = if is_null(a) {
                        b
                    } else if is_null(b) {
                        a
                    } else {
                        continue;
                    };
                    content.schema = Some(other.clone());
                    body.required = Some(Required::False);
                }
            }
        }
    }
}

/// Declares the answers every management operation can give besides its own, all with the
/// [`ErrorBody`] shape: 400 for a malformed path id, query or body, 401 without a valid
/// token, 413 and 415 for bodies too large or not JSON, 408 past the request timeout, 503
/// while the database is unreachable. They come from extractors and layers shared by all
/// routes, so they are added here once instead of on each handler. The probes and the
/// Func-style routes (which answer in Func's own shape) document theirs themselves.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |text: &str| {
        ResponseBuilder::new()
            .description(text)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        for op in
            [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put].into_iter().flatten()
        {
            let tags = op.tags.as_deref().unwrap_or_default();
            if tags.iter().any(|t| t == "func" || t == "health") {
                continue;
            }
            let answers = &mut op.responses.responses;
            let mut add = |code: &str, text: &str| {
                answers.entry(code.to_string()).or_insert_with(|| error(text).into());
            };
            add("400", "Malformed path id, query parameter or JSON body");
            add("401", "Missing or wrong bearer token");
            add(
                "408",
                "The request took longer than REQUEST_TIMEOUT_SECS, or its body longer than BODY_READ_TIMEOUT_SECS",
            );
            add("503", "The database is unreachable, or the service serves MAX_CONNECTIONS already; try again shortly");
            if op.request_body.is_some() {
                add("413", "The body is larger than MAX_BODY_BYTES");
                add("415", "The body is not `application/json`");
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let (managed, _) = managed_routes().split_for_parts();
    let (runs, _) = run_routes().split_for_parts();
    let (public, _) = public_routes().split_for_parts();
    // Func answers a wrong method as it answers a wrong path (404.41), not with a 405.
    let (func, _) = func_routes().split_for_parts();
    let func = func.method_not_allowed_fallback(func::no_such_router);
    let authenticated = middleware::from_fn_with_state(state.clone(), auth::require_token);
    let managed = managed
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.request_timeout))
        .route_layer(authenticated.clone());
    let runs = runs.route_layer(authenticated);
    let console = console::routes(state.clone())
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.request_timeout));
    let x_request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(managed)
        .merge(runs)
        .merge(func)
        .merge(public)
        .merge(console)
        .merge(SwaggerUi::new("/swagger-ui").url("/api-docs/openapi.json", openapi()))
        // Temporary: browsers must not remember where `/` led once the page moves.
        .route("/", axum::routing::get(|| async { axum::response::Redirect::temporary(HOME) }))
        .fallback(no_route)
        .layer(middleware::from_fn(json_errors))
        // `read_body` enforces MAX_BODY_BYTES; axum's own 2 MB default must not add a second limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(settings.clone(), read_body))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn(scope_request_id))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path = %loggable_path(req.uri().path()), request_id = %id)
                })
                // A 5xx is logged once, with its cause, where it is made (`ApiError`);
                // the trace layer's own line would say it a second time without the cause.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::count_requests))
        .with_state(state)
}

/// A path no route takes: under the Func-style prefixes Func's 404.41, elsewhere this API's
/// own `not_found`.
async fn no_route(req: Request) -> Response {
    if func::family_of(req.uri().path()).is_some() {
        return func::no_such_router(req).await;
    }
    ApiError::NotFound("no such route".into()).into_response()
}

/// The path as logs may show it: the trigger id in Func-style URLs is a credential.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    for family in func::FAMILIES {
        if let Some(rest) = path.strip_prefix(family.prefix).and_then(|p| p.strip_prefix('/')) {
            let tail = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
            return format!("{}/***{tail}", family.prefix).into();
        }
    }
    path.into()
}

/// Reads every request's body before routing, within the size limit and the body-read
/// deadline, on every route: the Func routes wait long for a run, never for a client's
/// bytes, and a client trickling a body must not hold a connection and its buffers for as
/// long as it likes. A declared length over the limit is refused before a byte is read.
/// Handlers then read a body that is already there. Answers are the API's JSON errors.
async fn read_body(State(settings): State<Arc<HttpSettings>>, req: Request, next: Next) -> Response {
    use axum::body::{Body, HttpBody};
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let (parts, body) = req.into_parts();
    let limit = settings.max_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    if body.size_hint().exact() == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let bytes = match tokio::time::timeout(settings.body_read_timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ApiError::PayloadTooLarge.into_response();
        }
        Ok(Err(_)) => return ApiError::BadRequest("the request body could not be read".into()).into_response(),
        Err(_) => return ApiError::BodyTimeout.into_response(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Makes the request id visible to error bodies built deep in handlers.
async fn scope_request_id(req: Request, next: Next) -> Response {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    REQUEST_ID.scope(id, next.run(req)).await
}

/// Layers below the handlers (timeout, body limit, method routing) answer errors with empty
/// or plain-text bodies; give them the API's JSON error shape too. The console's HTML error
/// pages stay as they are.
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json_or_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !status.is_client_error() && !status.is_server_error() || is_json_or_page {
        return res;
    }
    let mut out = ApiError::from_status(status).into_response();
    if let Some(allow) = res.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// Keyset pagination parameters shared by every list.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        Ok(limit)
    }

    pub fn after<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        match &self.cursor {
            None => Ok(None),
            Some(c) if c.is_empty() => Ok(None),
            Some(c) => decode_cursor(c).map(Some).ok_or_else(|| ApiError::BadRequest("invalid cursor".into())),
        }
    }
}

/// Cuts a page fetched with `limit + 1` rows and computes the cursor of the next one.
pub fn paginate<T, K: Serialize>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|r| encode_cursor(&key(r))) } else { None };
    (rows, next)
}

/// Declares a page type for a list endpoint (utoipa needs concrete schema names).
macro_rules! page_type {
    ($name:ident, $item:ty) => {
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; null on the last page.
            pub next_cursor: Option<String>,
        }
    };
}
pub(crate) use page_type;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    /// What a layer's bare answer becomes: status, `code`, and the `Allow` header kept.
    async fn answer(app: Router, req: Request) -> (StatusCode, String, Option<String>) {
        let res = app.layer(middleware::from_fn(json_errors)).oneshot(req).await.unwrap();
        let status = res.status();
        let allow = res.headers().get(header::ALLOW).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, v["error"]["code"].as_str().unwrap().to_string(), allow)
    }

    #[tokio::test(start_paused = true)]
    async fn layer_answers_get_the_code_of_what_they_mean() {
        let slow = Router::new()
            .route("/slow", get(|| tokio::time::sleep(Duration::from_secs(3600))))
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(1)));
        let req = Request::get("/slow").body(Body::empty()).unwrap();
        assert_eq!(answer(slow.clone(), req).await, (StatusCode::REQUEST_TIMEOUT, "timeout".into(), None));

        let req = Request::delete("/slow").body(Body::empty()).unwrap();
        let (status, code, allow) = answer(slow, req).await;
        assert_eq!((status, code.as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
        assert!(allow.is_some_and(|a| a.contains("GET")));

        let bare = |status: StatusCode| Router::new().route("/", get(move || async move { status }));
        for (status, code) in [
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            (StatusCode::BAD_REQUEST, "bad_request"),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        ] {
            let req = Request::get("/").body(Body::empty()).unwrap();
            assert_eq!(answer(bare(status), req).await, (status, code.to_string(), None));
        }
    }

    #[test]
    fn trigger_ids_never_reach_the_logs() {
        for (path, logged) in [
            ("/api/v1/al/0123abcd", "/api/v1/al/***"),
            ("/api/v1/al/0123abcd/simplified", "/api/v1/al/***/simplified"),
            ("/api/v1/bat/0123abcd", "/api/v1/bat/***"),
            ("/api/v1/sync/0123abcd/s/any/tail", "/api/v1/sync/***/s/any/tail"),
            ("/api/v1/async/0123abcd", "/api/v1/async/***"),
            ("/api/v1/runs/42", "/api/v1/runs/42"),
        ] {
            assert_eq!(loggable_path(path), logged);
        }
    }
}
