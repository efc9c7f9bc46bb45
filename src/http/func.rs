//! DataFlux Func's calling contract, so Func callers (crontab configs, scripts, anything that
//! called the original inspection's Func URLs) can call this service instead.
//!
//! - `GET|POST /api/v1/sync/{trigger_id}[/{format}[/…]]`: run and wait (Func's Sync API).
//!   `GET|POST /api/v1/async/{trigger_id}[/{format}[/…]]`: start and answer at once with the
//!   run id as the task id (Async API). `/api/v1/al/…` and `/api/v1/bat/…` are the same two,
//!   under the names older Func versions gave them (auth link, batch), which current Func
//!   still serves as deprecated aliases (`server/route.yaml`: `callSyncAPIBy*`,
//!   `callAsyncAPIBy*`, `callAuthLinkBy*`, `callBatchBy*`).
//! - The trigger id in the URL is the credential: it is looked up by its hash (the store
//!   keeps nothing else of it), never logged.
//! - Requests, answers and error codes are Func's (`server/controllers/mainAPICtrl.js`,
//!   `server/utils/serverError.js`, `server/utils/responseInitialize.js`, `toolkit.initRet`,
//!   codes from `const.yaml`): `{"kwargs", "options"}` bodies (JSON text in GET queries), the
//!   simplified format where the body or query *is* the kwargs, unboxed results by default,
//!   `{"ok": false, "error": 404.41, "reason": …}` errors whose HTTP status is the code's
//!   integer part, and Func's request-info headers and fields on every answer.
//! - Any other path or method under these prefixes answers as Func's router does: 404.41
//!   "No such router" (`server/app.js`, `gen404Error`).
//! - The result is the finished run exactly as `GET /api/v1/runs/{id}` shows it.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::model::inspection::{Inspection, parse_configs, trigger_id_hash};
use crate::model::run::{ExecMode, Run, RunRequest, RunStatus, Trigger};
use crate::runner::TriggerError;

/// Func's request-info headers (`config.yaml`: `_WEB_TRACE_ID_HEADER`,
/// `_WEB_CLIENT_TIME_HEADER`, `_WEB_REQUEST_TIME_HEADER`, `_WEB_RESPONSE_TIME_HEADER`,
/// `_WEB_REQUEST_COST_HEADER`), set on every answer by `_appendReqInfo`.
const TRACE_HEADER: &str = "x-trace-id";
const CLIENT_TIME_HEADER: &str = "x-client-time";
const REQUEST_TIME_HEADER: &str = "x-request-time";
const RESPONSE_TIME_HEADER: &str = "x-response-time";
const COST_HEADER: &str = "x-request-cost";
/// How a Func wrapper says a call comes from a crontab config (see [`exec_mode_of`]).
pub const EXEC_MODE_HEADER: &str = "x-crontab-exec-mode";
/// The kwargs these routes accept; any other is an error, as a Python signature would make it.
const KWARGS: [&str; 6] = ["configs", "lookback_minutes", "window_start", "window_end", "dry_run", "fail_on_partial"];
const RETURN_TYPES: [&str; 2] = ["raw", "jsonDumps"];
const FORMATS: [&str; 3] = ["normal", "s", "simplified"];
/// Func's `timeout` bounds (`config.yaml`: `_FUNC_TASK_TIMEOUT_MIN`/`_MAX`).
const TIMEOUT_RANGE: std::ops::RangeInclusive<i64> = 1..=3600;
/// Func's `expires` bounds (`_FUNC_TASK_EXPIRES_MIN`/`_MAX`).
const EXPIRES_RANGE: std::ops::RangeInclusive<i64> = 1..=86400;
/// Func's queues (`createFuncRunnerTaskReq`: "queue should be an integer between 1 and 9").
const QUEUE_RANGE: std::ops::RangeInclusive<i64> = 1..=9;
/// Longest `lookback_minutes`: the longest explicit window a run may read (31 days).
const MAX_LOOKBACK_MINUTES: i64 = 31 * 24 * 60;
/// Func's message for a path or method no route has (`server/app.js`, `gen404Error`).
const NO_SUCH_ROUTER: &str =
    "No such router. Please make sure that the METHOD is correct and no spelling missing in the URL";

/// Func's error reasons this service answers with, and their codes (`const.yaml`,
/// `respCodeMap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    EClientNotFound,
    EClientBadRequest,
    EBizCondition,
    EBizRequestConflict,
    EFuncFailed,
    EFuncTimeout,
    EFuncResultParsingFailed,
    EWorkerNoResponse,
    ESys,
    ESysDB,
}

impl Reason {
    pub fn code(self) -> f64 {
        match self {
            Reason::EClientNotFound => 404.41,
            Reason::EClientBadRequest => 400.43,
            Reason::EBizCondition => 403.21,
            Reason::EBizRequestConflict => 409.25,
            Reason::EFuncFailed => 599.10,
            Reason::EFuncTimeout => 599.20,
            Reason::EFuncResultParsingFailed => 599.98,
            Reason::EWorkerNoResponse => 599.99,
            Reason::ESys => 500.50,
            Reason::ESysDB => 500.52,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reason::EClientNotFound => "EClientNotFound",
            Reason::EClientBadRequest => "EClientBadRequest",
            Reason::EBizCondition => "EBizCondition",
            Reason::EBizRequestConflict => "EBizRequestConflict",
            Reason::EFuncFailed => "EFuncFailed",
            Reason::EFuncTimeout => "EFuncTimeout",
            Reason::EFuncResultParsingFailed => "EFuncResultParsingFailed",
            Reason::EWorkerNoResponse => "EWorkerNoResponse",
            Reason::ESys => "ESys",
            Reason::ESysDB => "ESysDB",
        }
    }

    /// The HTTP status: the code's integer part, as Func answers.
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.code().trunc() as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A Func-shaped error.
#[derive(Debug)]
pub struct FuncError {
    reason: Reason,
    /// Func's sub-reason, written after a dot (`EBizCondition.SyncAPIDisabled`); the code is
    /// the main reason's.
    sub: Option<&'static str>,
    message: String,
    detail: Value,
}

impl FuncError {
    fn new(reason: Reason, message: impl Into<String>, detail: Value) -> Self {
        FuncError { reason, sub: None, message: message.into(), detail }
    }

    fn bad_request(message: impl Into<String>, detail: Value) -> Self {
        Self::new(Reason::EClientBadRequest, message, detail)
    }

    fn bad_kwarg(field: &str, message: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("Invalid kwargs, `{field}` {message}"), json!({ "kwargsField": field }))
    }

    /// The reason as Func writes it: `EBizCondition` or `EBizCondition.SyncAPIDisabled`.
    fn reason_name(&self) -> String {
        match self.sub {
            Some(sub) => format!("{}.{sub}", self.reason.name()),
            None => self.reason.name().to_string(),
        }
    }

    /// The database failed under a call: logged here, once, and answered as Func's ESysDB.
    fn db(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "func call: the database failed");
        Self::new(Reason::ESysDB, "The database is unavailable; try again shortly", json!({}))
    }

    fn not_found() -> Self {
        Self::new(
            Reason::EClientNotFound,
            "No such inspection trigger; the trigger id is unknown or was rotated",
            json!({}),
        )
    }

    /// A disabled inspection, as Func answers for a disabled Sync or Async API
    /// (`callSyncAPI`: `EBizCondition.SyncAPIDisabled`, `callAsyncAPI`:
    /// `EBizCondition.AsyncAPIDisabled`).
    fn disabled(mode: Mode, inspection: &Inspection) -> Self {
        let (sub, what) = match mode {
            Mode::Sync => ("SyncAPIDisabled", "This Sync API is disabled"),
            Mode::Async => ("AsyncAPIDisabled", "This Async API is disabled"),
        };
        FuncError {
            reason: Reason::EBizCondition,
            sub: Some(sub),
            message: format!("{what}: the inspection is disabled; enable it to run it"),
            detail: json!({ "inspection_id": inspection.id, "inspection": inspection.name }),
        }
    }

    fn from_trigger(e: TriggerError, mode: Mode, inspection: &Inspection) -> Self {
        match e {
            TriggerError::NotFound => Self::not_found(),
            TriggerError::Disabled => Self::disabled(mode, inspection),
            TriggerError::Active { run_id } => Self::new(
                Reason::EBizRequestConflict,
                format!("Run {run_id} of this inspection is still in progress"),
                json!({ "run_id": run_id, "run": format!("/api/v1/runs/{run_id}") }),
            ),
            TriggerError::Invalid(fields) => {
                // The runner names the run request's fields; callers here know them as kwargs.
                let fields: Map<String, Value> = fields
                    .into_map()
                    .into_iter()
                    .map(|(k, v)| (k.replacen("log_groups", "configs", 1), json!(v)))
                    .collect();
                Self::bad_request("Invalid kwargs", json!({ "fields": fields }))
            }
            TriggerError::Store(e) => Self::db(e),
        }
    }
}

/// Facts Func attaches to every answer: the trace id, the caller's clock, and the request's
/// timing.
struct Call {
    trace_id: String,
    /// The caller's `X-Client-Time`, echoed as Func echoes it.
    client_time: Option<String>,
    req_time: DateTime<Utc>,
    started: Instant,
    /// Method and path for Func's `reqDump`, with the trigger id masked.
    method: Method,
    path: String,
}

impl Call {
    /// Keeps the caller's `X-Trace-Id` (so one trace spans Func and this service), or makes
    /// one as Func does: `TRACE-` and an upper-case UUID.
    fn new(method: &Method, path: &str, headers: &HeaderMap) -> Self {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 256)
                .map(str::to_owned)
        };
        let trace_id = header(TRACE_HEADER)
            .unwrap_or_else(|| format!("TRACE-{}", uuid::Uuid::new_v4().to_string().to_uppercase()));
        Call {
            trace_id,
            client_time: header(CLIENT_TIME_HEADER),
            req_time: Utc::now(),
            started: Instant::now(),
            method: method.clone(),
            path: super::loggable_path(path).into_owned(),
        }
    }

    fn cost_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// `traceId`, `clientTime`, `reqTime`, `respTime`, `reqCost`, as Func's `_appendReqInfo`.
    fn info(&self, resp_time: DateTime<Utc>, cost: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("traceId".into(), json!(self.trace_id));
        m.insert("clientTime".into(), json!(self.client_time));
        m.insert("reqTime".into(), json!(iso(self.req_time)));
        m.insert("respTime".into(), json!(iso(resp_time)));
        m.insert("reqCost".into(), json!(cost));
        m
    }

    /// An answer with Func's request-info headers; `body` gets the same times and cost.
    fn respond_with(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: impl FnOnce(DateTime<Utc>, u64) -> Vec<u8>,
    ) -> Response {
        let (resp_time, cost) = (Utc::now(), self.cost_ms());
        let mut res = Response::new(Body::from(body(resp_time, cost)));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&self.trace_id) {
            h.insert(TRACE_HEADER, v);
        }
        if let Some(v) = self.client_time.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            h.insert(CLIENT_TIME_HEADER, v);
        }
        for (name, t) in [(REQUEST_TIME_HEADER, self.req_time), (RESPONSE_TIME_HEADER, resp_time)] {
            if let Ok(v) = HeaderValue::from_str(&iso(t)) {
                h.insert(name, v);
            }
        }
        h.insert(COST_HEADER, HeaderValue::from(cost));
        res
    }

    fn respond(&self, status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
        self.respond_with(status, content_type, |_, _| body)
    }

    /// A Func envelope: `body` plus the request info.
    fn json(&self, status: StatusCode, body: Map<String, Value>) -> Response {
        self.respond_with(status, "application/json; charset=utf-8", |resp_time, cost| {
            let mut body = body;
            body.extend(self.info(resp_time, cost));
            serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
        })
    }

    /// `toolkit.initRet(data)` plus the request info.
    fn boxed(&self, data: Value) -> Response {
        let mut body = Map::new();
        body.insert("ok".into(), json!(true));
        body.insert("error".into(), json!(200));
        body.insert("message".into(), json!(""));
        body.insert("data".into(), data);
        self.json(StatusCode::OK, body)
    }

    /// `ServerError.toJSON()` plus Func's `reqDump` (method and URL; never the body, which
    /// Func echoes but which may hold what the caller did not mean to see logged back).
    fn error(&self, e: FuncError) -> Response {
        let mut body = Map::new();
        body.insert("ok".into(), json!(false));
        body.insert("error".into(), json!(e.reason.code()));
        body.insert("reason".into(), json!(e.reason_name()));
        body.insert("message".into(), json!(e.message));
        body.insert("detail".into(), e.detail);
        body.insert("status".into(), json!(e.reason.status().as_u16()));
        body.insert("reqDump".into(), json!({ "method": self.method.as_str(), "url": self.path }));
        self.json(e.reason.status(), body)
    }
}

/// JavaScript's `Date.toISOString()`: milliseconds and `Z`.
fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run and wait (Sync API: `/sync/`, `/al/`).
    Sync,
    /// Start and answer at once (Async API: `/async/`, `/bat/`).
    Async,
}

/// Execution options of the normal format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Options {
    json_dumps: bool,
    unbox: bool,
    timeout: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        // Func unboxes by default for every origin but direct calls.
        Options { json_dumps: false, unbox: true, timeout: None }
    }
}

/// Body of a normal-format POST. In a GET, `kwargs` and `options` are query parameters
/// holding the same objects as JSON text.
#[derive(Debug, Serialize, ToSchema)]
pub struct FuncCall {
    pub kwargs: Option<FuncKwargs>,
    pub options: Option<FuncOptions>,
}

/// The arguments a call may pass. In the simplified format they are the body (or query)
/// itself; query values are text and are read as the argument's type.
#[derive(Debug, Serialize, ToSchema)]
pub struct FuncKwargs {
    /// Log groups for this run only, one per line (the original inspection's `configs`).
    pub configs: Option<String>,
    /// Read the window `[now − delivery_delay − lookback, now − delivery_delay)` instead of
    /// from the watermark (1–44640). Explicit windows do not move the watermark.
    pub lookback_minutes: Option<u32>,
    /// Start of an explicit window (RFC 3339), with `window_end`.
    pub window_start: Option<DateTime<Utc>>,
    /// End of an explicit window (RFC 3339, exclusive).
    pub window_end: Option<DateTime<Utc>>,
    /// Record the result but learn nothing (no cluster becomes known, no watermark moves).
    pub dry_run: Option<bool>,
    /// Answer a `partial` run (some log groups could not be read) as EFuncFailed 599.10
    /// instead of a result, for callers that only see success or failure (cron with
    /// `curl -f`, a CronJob). Sync calls only.
    pub fail_on_partial: Option<bool>,
}

/// Func's execution options.
#[derive(Debug, Serialize, ToSchema)]
pub struct FuncOptions {
    /// `raw` (default) or `jsonDumps` (the result becomes its JSON text).
    #[serde(rename = "returnType")]
    pub return_type: Option<String>,
    /// Answer with the result itself (default true) or boxed in `data.result`.
    pub unbox: Option<bool>,
    /// Seconds to wait for the run (1–3600), counted from the request's arrival; default the
    /// inspection's `timeout_seconds`.
    pub timeout: Option<u32>,
    /// Func's task queue (1–9): checked as Func checks it, then ignored (runs here share the
    /// service's run slots).
    pub queue: Option<u32>,
    /// Seconds a queued Func task may wait (1–86400): checked as Func checks it, then ignored
    /// (a run here starts at once or waits for a run slot).
    pub expires: Option<u32>,
}

// The `{format}` of a call's URL: how its kwargs are given. For the document only: the
// handler reads the segment as text, so that any other value gets Func's own 400.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
enum FuncFormat {
    /// `{"kwargs": {...}, "options": {...}}` (GET: `?kwargs=<JSON>&options=<JSON>`).
    Normal,
    /// Short for `simplified`.
    S,
    /// The body (GET: the query) is the kwargs.
    Simplified,
}

/// What a sync call answers for a finished run in JSON: the run itself (unboxed, the
/// default) or Func's envelope with the run as `data.result` (`options.unbox = false`).
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(ToSchema)]
#[serde(untagged)]
enum FuncSyncResult {
    Run(Run),
    Boxed(FuncBoxed),
}

/// A boxed answer: `options.unbox = false`, and every Async API answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct FuncBoxed {
    pub ok: bool,
    /// 200
    pub error: u16,
    pub message: String,
    /// `{"result": <run>}` (sync) or `{"id": "<run id>"}` (async).
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(rename = "traceId")]
    pub trace_id: String,
    /// The caller's `X-Client-Time`, or null.
    #[serde(rename = "clientTime")]
    pub client_time: Option<String>,
    #[serde(rename = "reqTime")]
    pub req_time: String,
    #[serde(rename = "respTime")]
    pub resp_time: String,
    /// Milliseconds.
    #[serde(rename = "reqCost")]
    pub req_cost: u64,
}

/// A Func error; the HTTP status is the integer part of `error`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FuncErrorBody {
    pub ok: bool,
    /// e.g. 404.41, 400.43, 403.21, 409.25, 599.1, 599.2
    pub error: f64,
    /// e.g. `EClientNotFound`, `EBizCondition.SyncAPIDisabled`, `EFuncTimeout`
    pub reason: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub detail: Value,
    pub status: u16,
    /// `{"method", "url"}` of the request (the trigger id masked).
    #[serde(rename = "reqDump")]
    #[schema(value_type = Object)]
    pub req_dump: Value,
    #[serde(rename = "traceId")]
    pub trace_id: String,
    #[serde(rename = "clientTime")]
    pub client_time: Option<String>,
    #[serde(rename = "reqTime")]
    pub req_time: String,
    #[serde(rename = "respTime")]
    pub resp_time: String,
    #[serde(rename = "reqCost")]
    pub req_cost: u64,
}

/// The answers to a call that did not give a result, for the OpenAPI document: they are built
/// by [`Call::error`], never from this type.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
enum FuncErrors {
    /// EClientBadRequest 400.43: bad JSON, unknown kwarg, bad option or format, a body that holds no kwargs
    #[response(status = 400)]
    BadRequest(FuncErrorBody),
    /// EBizCondition.SyncAPIDisabled (or .AsyncAPIDisabled) 403.21: the inspection is disabled
    #[response(status = 403)]
    Disabled(FuncErrorBody),
    /// EClientNotFound 404.41: unknown or rotated trigger id
    #[response(status = 404)]
    NotFound(FuncErrorBody),
    /// EBizRequestConflict 409.25: a run is in progress (`detail.run_id`)
    #[response(status = 409)]
    Conflict(FuncErrorBody),
    /// EFuncFailed 599.10, EFuncTimeout 599.20, EFuncResultParsingFailed 599.98, EWorkerNoResponse 599.99
    #[response(status = 599)]
    Failed(FuncErrorBody),
}

/// A Func call as it arrived, whatever its method and format: the parts [`serve`] reads, and
/// the trace every answer carries. Taking it whole keeps the handlers one line each.
pub struct FuncRequest {
    call: Call,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for FuncRequest {
    type Rejection = BytesRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let call = Call::new(req.method(), req.uri().path(), req.headers());
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_owned);
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await?;
        Ok(FuncRequest { call, method, query, headers, body })
    }
}

/// One URL family of Func's calling contract: `{prefix}/{trigger_id}`,
/// `{prefix}/{trigger_id}/{format}` and `{prefix}/{trigger_id}/{format}/*`, each answering GET
/// and POST in one [`Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub prefix: &'static str,
    pub mode: Mode,
    /// A name older Func versions used, which current Func still serves for old callers.
    pub deprecated: bool,
}

/// The families this service answers, as current Func serves them (`server/route.yaml`):
/// the Sync and Async APIs, and their deprecated aliases, auth link and batch.
pub const FAMILIES: [Family; 4] = [
    Family { prefix: "/api/v1/sync", mode: Mode::Sync, deprecated: false },
    Family { prefix: "/api/v1/async", mode: Mode::Async, deprecated: false },
    Family { prefix: "/api/v1/al", mode: Mode::Sync, deprecated: true },
    Family { prefix: "/api/v1/bat", mode: Mode::Async, deprecated: true },
];

/// The routes of every family, with their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    FAMILIES.iter().fold(OpenApiRouter::new(), |router, family| router.merge(family.routes()))
}

/// The family a path lies under, if any: `{prefix}` itself or anything below it.
pub fn family_of(path: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| path.strip_prefix(f.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

impl Family {
    /// This family's routes under its prefix. `method(get, post)` gives both methods the
    /// handler's operation id, and handlers are shared between families of one mode, so each
    /// operation is named here after the family (the prefix's last segment), the path's shape
    /// and the method: `sync_get`, `bat_format_post`, … The `/{format}/*` tail is served but
    /// not documented (OpenAPI has no wildcard paths); a method other than GET and POST on
    /// these paths answers Func's 404.41, as Func's router does.
    pub fn routes(&self) -> OpenApiRouter<AppState> {
        let handlers = match self.mode {
            Mode::Sync => OpenApiRouter::new()
                .routes(routes!(run_and_wait))
                .routes(routes!(run_and_wait_in_format))
                .route("/{trigger_id}/{format}/{*tail}", get(run_and_wait_with_tail).post(run_and_wait_with_tail)),
            Mode::Async => OpenApiRouter::new()
                .routes(routes!(start_run))
                .routes(routes!(start_run_in_format))
                .route("/{trigger_id}/{format}/{*tail}", get(start_run_with_tail).post(start_run_with_tail)),
        };
        let mut router = OpenApiRouter::new().nest(self.prefix, handlers);
        let name = self.prefix.rsplit('/').next().unwrap_or(self.prefix);
        for (path, item) in router.get_openapi_mut().paths.paths.iter_mut() {
            let shape = if path.ends_with("/{format}") { "_format" } else { "" };
            for (method, operation) in [("get", &mut item.get), ("post", &mut item.post)] {
                if let Some(operation) = operation {
                    operation.operation_id = Some(format!("{name}{shape}_{method}"));
                    if self.deprecated {
                        operation.deprecated = Some(utoipa::openapi::Deprecated::True);
                    }
                }
            }
        }
        router
    }
}

/// Func's answer to a path or method it has no route for: 404.41 "No such router", with the
/// method and URL (trigger id masked) as its detail. Everything under the families' prefixes
/// that no handler takes ends here.
pub async fn no_such_router(req: Request) -> Response {
    let call = Call::new(req.method(), req.uri().path(), req.headers());
    let detail = json!({ "method": call.method.as_str(), "url": call.path });
    call.error(FuncError::new(Reason::EClientNotFound, NO_SUCH_ROUTER, detail))
}

/// Run an inspection and wait (Func Sync API).
///
/// GET reads `?kwargs=<JSON>&options=<JSON>`; POST reads the body `{"kwargs": {...},
/// "options": {"returnType", "unbox", "timeout", "queue", "expires"}}`. Waits up to the
/// inspection's `timeout_seconds` (or `options.timeout`); past it the answer is EFuncTimeout
/// while the run goes on and is recorded.
#[utoipa::path(
    method(get, post), path = "/{trigger_id}", tag = "func", security(()),
    params(
        ("trigger_id" = String, Path, description = "The inspection's `trigger_id`"),
        ("kwargs" = Option<String>, Query, description = "GET: the kwargs as JSON text"),
        ("options" = Option<String>, Query, description = "GET: the options as JSON text"),
        ("x-crontab-exec-mode" = Option<String>, Header, description = EXEC_MODE_DOC),
    ),
    request_body(content = FuncCall, description = "POST: `{\"kwargs\": {...}, \"options\": {...}}`"),
    responses((status = 200, description = SYNC_RESULT,
        content((FuncSyncResult = "application/json"), (String = "text/plain"))), FuncErrors)
)]
pub async fn run_and_wait(
    State(state): State<AppState>,
    Path(trigger_id): Path<String>,
    request: FuncRequest,
) -> Response {
    serve(&state, Mode::Sync, &trigger_id, None, request).await
}

/// Run an inspection and wait, in a given format.
///
/// `normal` reads `{"kwargs", "options"}` (GET: `?kwargs=&options=`); `s`/`simplified` read
/// the body (GET: the query) itself as kwargs. Anything after the format (`/{format}/…`) is
/// accepted and ignored, as Func does.
#[utoipa::path(
    method(get, post), path = "/{trigger_id}/{format}", tag = "func", security(()),
    params(
        ("trigger_id" = String, Path, description = "The inspection's `trigger_id`"),
        ("format" = inline(FuncFormat), Path, description = "`normal`, `s` or `simplified`"),
        ("x-crontab-exec-mode" = Option<String>, Header, description = EXEC_MODE_DOC),
    ),
    request_body(content = FuncCall, description = "Normal format; in the simplified format the body is the kwargs"),
    responses((status = 200, description = SYNC_RESULT,
        content((FuncSyncResult = "application/json"), (String = "text/plain"))), FuncErrors)
)]
pub async fn run_and_wait_in_format(
    State(state): State<AppState>,
    Path((trigger_id, format)): Path<(String, String)>,
    request: FuncRequest,
) -> Response {
    serve(&state, Mode::Sync, &trigger_id, Some(&format), request).await
}

/// `/{trigger_id}/{format}/*` of the Sync API: the tail is Func's, and means nothing.
async fn run_and_wait_with_tail(
    State(state): State<AppState>,
    Path((trigger_id, format, _tail)): Path<(String, String, String)>,
    request: FuncRequest,
) -> Response {
    serve(&state, Mode::Sync, &trigger_id, Some(&format), request).await
}

/// Start an inspection run and answer at once (Func Async API).
///
/// Reads the call as the Sync API does. Answers `{"ok": true, "data": {"id": "<run id>"}, …}`;
/// follow the run at `/api/v1/runs/{id}`.
#[utoipa::path(
    method(get, post), path = "/{trigger_id}", tag = "func", security(()),
    params(
        ("trigger_id" = String, Path, description = "The inspection's `trigger_id`"),
        ("kwargs" = Option<String>, Query, description = "GET: the kwargs as JSON text"),
        ("options" = Option<String>, Query, description = "GET: the options as JSON text"),
        ("x-crontab-exec-mode" = Option<String>, Header, description = EXEC_MODE_DOC),
    ),
    request_body(content = FuncCall, description = "POST: `{\"kwargs\": {...}, \"options\": {...}}`"),
    responses((status = 200, description = ASYNC_RESULT, body = FuncBoxed), FuncErrors)
)]
pub async fn start_run(
    State(state): State<AppState>,
    Path(trigger_id): Path<String>,
    request: FuncRequest,
) -> Response {
    serve(&state, Mode::Async, &trigger_id, None, request).await
}

/// Start an inspection run and answer at once, in a given format.
#[utoipa::path(
    method(get, post), path = "/{trigger_id}/{format}", tag = "func", security(()),
    params(
        ("trigger_id" = String, Path, description = "The inspection's `trigger_id`"),
        ("format" = inline(FuncFormat), Path, description = "`normal`, `s` or `simplified`"),
        ("x-crontab-exec-mode" = Option<String>, Header, description = EXEC_MODE_DOC),
    ),
    request_body(content = FuncCall, description = "Normal format; in the simplified format the body is the kwargs"),
    responses((status = 200, description = ASYNC_RESULT, body = FuncBoxed), FuncErrors)
)]
pub async fn start_run_in_format(
    State(state): State<AppState>,
    Path((trigger_id, format)): Path<(String, String)>,
    request: FuncRequest,
) -> Response {
    serve(&state, Mode::Async, &trigger_id, Some(&format), request).await
}

/// `/{trigger_id}/{format}/*` of the Async API.
async fn start_run_with_tail(
    State(state): State<AppState>,
    Path((trigger_id, format, _tail)): Path<(String, String, String)>,
    request: FuncRequest,
) -> Response {
    serve(&state, Mode::Async, &trigger_id, Some(&format), request).await
}

const SYNC_RESULT: &str = "Unboxed: the finished run (`GET /api/v1/runs/{id}`), or its JSON text with \
    `returnType: jsonDumps`. Boxed (`unbox: false`): `FuncBoxed` with the run as `data.result`";
const ASYNC_RESULT: &str = "The run started: `FuncBoxed` with the run id as `data.id`";
const EXEC_MODE_DOC: &str = "`crontab` (or Func's `cronJob`) when a Func crontab config (cron job) makes \
    the call, so the run's Guance events say `df_crontab_exec_mode=crontab`; `manual` or absent otherwise";

/// Answers a call, in Func's shape whether it succeeded or not.
async fn serve(state: &AppState, mode: Mode, trigger_id: &str, format: Option<&str>, request: FuncRequest) -> Response {
    match serve_call(state, mode, trigger_id, format, &request).await {
        Ok(res) => res,
        Err(e) => request.call.error(e),
    }
}

/// A call in Func's order (`callSyncAPI`): the API must exist, then be enabled, and only
/// then are its kwargs and options read.
async fn serve_call(
    state: &AppState,
    mode: Mode,
    trigger_id: &str,
    format: Option<&str>,
    request: &FuncRequest,
) -> Result<Response, FuncError> {
    let call = &request.call;
    let simplified = match format.unwrap_or("normal") {
        "normal" => false,
        "s" | "simplified" => true,
        other => {
            return Err(FuncError::bad_request("Invalid format", json!({ "format": other, "allowed": FORMATS })));
        }
    };
    let inspection = find_inspection(state, trigger_id).await?;
    let inspection = refreshed(state, inspection).await?;
    if !inspection.enabled {
        return Err(FuncError::disabled(mode, &inspection));
    }
    let exec_mode = exec_mode_of(&request.headers)?;
    let data = if request.method == Method::GET {
        RequestData::Fields(parse_query(request.query.as_deref())?)
    } else {
        parse_body(&request.headers, &request.body)?
    };
    let (kwargs, options) = if simplified { (data.into_kwargs(), Options::default()) } else { split_normal(data)? };
    let fail_on_partial = match kwargs.get("fail_on_partial").filter(|v| !v.is_null()) {
        Some(v) => bool_kwarg("fail_on_partial", v)?,
        None => false,
    };
    let mut asked = run_request(kwargs, &inspection, Utc::now())?;
    asked.exec_mode = exec_mode;

    let started = state
        .runner
        .trigger(inspection.id, Trigger::Func, asked, Some(call.trace_id.clone()))
        .await
        .map_err(|e| FuncError::from_trigger(e, mode, &inspection))?;
    let run_id = started.run.id;
    tracing::info!(inspection = %inspection.name, %run_id, trace_id = %call.trace_id, "func call started a run");
    if mode == Mode::Async {
        return Ok(call.boxed(json!({ "id": run_id })));
    }

    let secs = options.timeout.unwrap_or(u64::from(inspection.settings.timeout_seconds));
    let run = wait_for(started.done, run_id, secs, call.started).await?;
    match run.status {
        RunStatus::Partial if fail_on_partial => Err(failed(&run)),
        RunStatus::Succeeded | RunStatus::Partial => Ok(result(call, &run, options)),
        RunStatus::Failed => Err(failed(&run)),
        RunStatus::Interrupted | RunStatus::Queued | RunStatus::Running => Err(no_response(run.id)),
    }
}

/// The inspection as Guance studio last left it: its settings are read back from Guance
/// first (when Guance is configured), so a checker disabled or re-configured there is
/// disabled or re-configured here before the call is judged.
async fn refreshed(state: &AppState, inspection: Inspection) -> Result<Inspection, FuncError> {
    if !state.runner.pull_from_guance(inspection.id).await {
        return Ok(inspection);
    }
    match state.store.get_inspection(inspection.id).await.map_err(FuncError::db)? {
        Some(fresh) => Ok(fresh),
        None => Err(FuncError::not_found()),
    }
}

/// `df_crontab_exec_mode` of the run, from the wrapper's [`EXEC_MODE_HEADER`]: Func gives a
/// function run by a crontab config `_DFF_CRON_JOB_EXEC_MODE = "cronJob"` (older versions:
/// `_DFF_CRONTAB_EXEC_MODE = "crontab"`), and `"manual"` when the config is run by hand
/// (`worker/tasks/cron_job_starter.py`).
fn exec_mode_of(headers: &HeaderMap) -> Result<Option<ExecMode>, FuncError> {
    let Some(value) = headers.get(EXEC_MODE_HEADER) else { return Ok(None) };
    match value.to_str().map(str::trim) {
        Ok("crontab" | "cronJob" | "cron_job") => Ok(Some(ExecMode::Crontab)),
        Ok("manual" | "") => Ok(Some(ExecMode::Manual)),
        _ => Err(FuncError::bad_request(
            format!("Invalid header, `{EXEC_MODE_HEADER}` must be `crontab`, `cronJob` or `manual`"),
            json!({ "header": EXEC_MODE_HEADER, "allowed": ["crontab", "cronJob", "manual"] }),
        )),
    }
}

/// The finished run, or the Func error for a wait that gave none. The wait ends `secs` after
/// the request arrived (not after the run started), so a caller that allows a little more
/// than `secs` always gets this answer rather than its own timeout. The run is its own task:
/// when this wait ends it still finishes and is recorded.
async fn wait_for(
    done: tokio::task::JoinHandle<Option<Run>>,
    run_id: uuid::Uuid,
    secs: u64,
    arrived: Instant,
) -> Result<Run, FuncError> {
    let deadline = tokio::time::Instant::from_std(arrived + Duration::from_secs(secs));
    match tokio::time::timeout_at(deadline, done).await {
        Ok(Ok(Some(run))) => Ok(run),
        Ok(Ok(None)) => Err(FuncError::new(
            Reason::EFuncResultParsingFailed,
            "Cannot parse task result",
            json!({ "run_id": run_id, "error": "the finished run could not be read back" }),
        )),
        Ok(Err(join)) => {
            tracing::error!(%run_id, error = %join, "run task ended abnormally");
            Err(no_response(run_id))
        }
        Err(_) => Err(FuncError::new(
            Reason::EFuncTimeout,
            "Func task timeout",
            json!({
                "run_id": run_id,
                "run": format!("/api/v1/runs/{run_id}"),
                "timeout": secs,
                "exception": format!("the run did not finish within {secs} s; it goes on and is recorded"),
                "traceback": null,
            }),
        )),
    }
}

fn no_response(run_id: uuid::Uuid) -> FuncError {
    FuncError::new(
        Reason::EWorkerNoResponse,
        "Worker no response, please check the status of this system",
        json!({ "run_id": run_id }),
    )
}

/// EFuncFailed with the run's error as `exception` and each log group's as `traceback` lines.
fn failed(run: &Run) -> FuncError {
    let traceback: Vec<String> =
        run.log_groups.iter().filter_map(|g| g.error.as_ref().map(|e| format!("log group {}: {e}", g.name))).collect();
    FuncError::new(
        Reason::EFuncFailed,
        "Func task failed",
        json!({
            "exception": run.error.clone().unwrap_or_else(|| match run.status {
                RunStatus::Partial => "the run was partial: some log groups could not be read".into(),
                _ => "the run failed".into(),
            }),
            "traceback": if traceback.is_empty() { Value::Null } else { json!(traceback.join("\n")) },
            "run_id": run.id,
            "run": format!("/api/v1/runs/{}", run.id),
        }),
    )
}

/// The answer for a finished run, shaped by `returnType` and `unbox` as Func's `_doAPIResponse`.
fn result(call: &Call, run: &Run, options: Options) -> Response {
    let value = serde_json::to_value(run).unwrap_or(Value::Null);
    let value = if options.json_dumps { Value::String(value.to_string()) } else { value };
    if !options.unbox {
        return call.boxed(json!({ "result": value }));
    }
    match value {
        // Func sends a string as it is. Plain text rather than Express's default text/html:
        // the text holds CloudTrail messages, which must never render as a page.
        Value::String(text) => call.respond(StatusCode::OK, "text/plain; charset=utf-8", text.into_bytes()),
        other => call.respond(
            StatusCode::OK,
            "application/json; charset=utf-8",
            serde_json::to_vec(&other).unwrap_or_default(),
        ),
    }
}

/// The inspection a trigger id names, looked up by the id's hash (all the store keeps), so no
/// comparison runs over the secret itself and the lookup's timing says nothing about how much
/// of a guess was right.
async fn find_inspection(state: &AppState, trigger_id: &str) -> Result<Inspection, FuncError> {
    if trigger_id.is_empty() || trigger_id.len() > 256 {
        return Err(FuncError::not_found());
    }
    let found = state.store.inspection_by_trigger_hash(&trigger_id_hash(trigger_id)).await.map_err(FuncError::db)?;
    found.ok_or_else(FuncError::not_found)
}

/// An integer as Func reads one (parseInt): a number, or a string holding one ("60").
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// What a request carries, as Func's body parsers leave it in `req.body` / `req.query`
/// (`server/app.js`: urlencoded, json, text, then raw for any other type).
#[derive(Debug)]
enum RequestData {
    /// A JSON object, a form or a query string.
    Fields(Map<String, Value>),
    /// A `text/plain` body: Func reads it as `{"text": <body>}`.
    Text(String),
    /// Any other body (octet-stream, XML, …): Func reads it as `{"base64": <body>}`.
    Binary(usize),
}

impl RequestData {
    /// The kwargs of the simplified format: the data itself, as Func takes it.
    fn into_kwargs(self) -> Map<String, Value> {
        match self {
            RequestData::Fields(m) => m,
            RequestData::Text(t) => Map::from_iter([("text".to_string(), Value::String(t))]),
            RequestData::Binary(n) => Map::from_iter([("base64".to_string(), json!(format!("<{n} bytes>")))]),
        }
    }
}

/// A GET's query as an object of strings (Express's `req.query`).
fn parse_query(query: Option<&str>) -> Result<Map<String, Value>, FuncError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| FuncError::bad_request("Invalid query string", json!({ "error": e.to_string() })))?;
    let mut map = Map::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), Value::String(v)).is_some() {
            return Err(FuncError::bad_request(
                format!("Invalid query string, `{k}` is given twice"),
                json!({ "field": k }),
            ));
        }
    }
    Ok(map)
}

/// A POST's body as Func's parsers read it. JSON that does not parse is Func's
/// "Invalid request body" (`server/app.js`); a JSON value that is not an object is refused
/// too, since no kwargs can be read from it. A body without a content type is read as JSON
/// when it is a JSON object (Func would take it as raw bytes and run without kwargs).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<RequestData, FuncError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RequestData::Fields(Map::new()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let json = content_type == "application/json" || content_type.ends_with("+json");
    if content_type == "application/x-www-form-urlencoded" {
        return parse_query(Some(std::str::from_utf8(body).unwrap_or(""))).map(RequestData::Fields);
    }
    if content_type == "text/plain" {
        return Ok(RequestData::Text(String::from_utf8_lossy(body).into_owned()));
    }
    if !json {
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) if content_type.is_empty() => Ok(RequestData::Fields(map)),
            _ => Ok(RequestData::Binary(body.len())),
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(RequestData::Fields(map)),
        Ok(_) => Err(FuncError::bad_request("Invalid request body, a JSON object is expected", json!({}))),
        Err(e) => Err(FuncError::bad_request("Invalid request body", json!({ "error": e.to_string() }))),
    }
}

/// `kwargs` or `options` of the normal format: an object, or JSON text of one (always text in
/// a GET). Absent and null mean empty, as Func's `notNothing`.
fn json_object(data: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, FuncError> {
    let value = match data.get(key) {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|e| {
            FuncError::bad_request(format!("Invalid {key}, bad JSON format"), json!({ "error": e.to_string() }))
        })?,
        Some(v) => v.clone(),
    };
    match value {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map),
        _ => Err(FuncError::bad_request(format!("Invalid {key}, a JSON object is expected"), json!({}))),
    }
}

/// Whether Func's `toolkit.notNothing` holds: not null, not an empty string, list or object.
fn is_something(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    })
}

/// An integer option within Func's bounds, with Func's messages (`createFuncRunnerTaskReq`):
/// "too small" with `{min}`, "too large" with `{max}`. A value that is not an integer at all
/// (where Func's `parseInt` gives NaN and lets it pass) is refused as such.
fn bounded_option(
    raw: &Map<String, Value>,
    key: &str,
    range: &std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, FuncError> {
    let Some(v) = is_something(raw.get(key)) else { return Ok(None) };
    let n = int_of(v)
        .ok_or_else(|| FuncError::bad_request(format!("Invalid options, {key} should be an integer"), json!({})))?;
    if n < *range.start() {
        return Err(FuncError::bad_request(
            format!("Invalid options, {key} is too small"),
            json!({ "min": range.start() }),
        ));
    }
    if n > *range.end() {
        return Err(FuncError::bad_request(
            format!("Invalid options, {key} is too large"),
            json!({ "max": range.end() }),
        ));
    }
    Ok(Some(n))
}

/// Splits a normal-format request into kwargs and options. Other top-level keys are ignored,
/// as Func ignores them. A body Func reads as `{"text"}` or `{"base64"}` carries no kwargs at
/// all; Func would run with none, which for an inspection means a run nobody asked for, so
/// such a body is refused.
fn split_normal(data: RequestData) -> Result<(Map<String, Value>, Options), FuncError> {
    let data = match data {
        RequestData::Fields(m) => m,
        RequestData::Text(_) | RequestData::Binary(_) => {
            return Err(FuncError::bad_request(
                "Invalid request body: it is not JSON, so it holds no `kwargs` (Func reads a text body as \
                 `{\"text\": …}` and other bodies as `{\"base64\": …}`); send `{\"kwargs\": {...}}` with \
                 Content-Type: application/json, or use the simplified format",
                json!({}),
            ));
        }
    };
    let kwargs = json_object(&data, "kwargs")?;
    let raw = json_object(&data, "options")?;
    let mut options = Options::default();
    match raw.get("returnType") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "raw" => {}
        Some(Value::String(t)) if t == "jsonDumps" => options.json_dumps = true,
        Some(_) => {
            return Err(FuncError::bad_request(
                "Invalid options, invalid returnType",
                json!({ "allowed": RETURN_TYPES }),
            ));
        }
    }
    match raw.get("unbox") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => options.unbox = *b,
        Some(_) => return Err(FuncError::bad_request("Invalid options, unbox should be a boolean", json!({}))),
    }
    options.timeout = bounded_option(&raw, "timeout", &TIMEOUT_RANGE)?.map(|s| s as u64);
    // Checked as Func checks them, then without effect: see `FuncOptions`.
    if let Some(v) = is_something(raw.get("queue")) {
        let queue = int_of(v).filter(|q| QUEUE_RANGE.contains(q));
        if queue.is_none() {
            return Err(FuncError::bad_request(
                "Invalid options, queue should be an integer between 1 and 9",
                json!({ "min": QUEUE_RANGE.start(), "max": QUEUE_RANGE.end() }),
            ));
        }
    }
    bounded_option(&raw, "expires", &EXPIRES_RANGE)?;
    Ok((kwargs, options))
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

/// Turns kwargs into a run request. Text is read as the argument's type, since a simplified
/// GET can only send text.
fn run_request(
    kwargs: Map<String, Value>,
    inspection: &Inspection,
    now: DateTime<Utc>,
) -> Result<RunRequest, FuncError> {
    if let Some(unknown) = kwargs.keys().find(|k| !KWARGS.contains(&k.as_str())) {
        return Err(FuncError::bad_request(
            format!("Invalid kwargs, unknown argument `{unknown}`"),
            json!({ "kwargsField": unknown, "allowed": KWARGS }),
        ));
    }
    let get = |k: &str| kwargs.get(k).filter(|v| !v.is_null());
    let mut request = RunRequest::default();

    match get("configs") {
        None => {}
        Some(Value::String(text)) => {
            let groups = parse_configs(text);
            // An empty `configs` (a crontab config's blank argument) means the inspection's own.
            if !groups.is_empty() {
                request.log_groups = Some(groups);
            }
        }
        Some(Value::Array(items)) => {
            let groups: Option<Vec<String>> = items.iter().map(|v| v.as_str().map(str::to_string)).collect();
            request.log_groups =
                Some(groups.ok_or_else(|| FuncError::bad_kwarg("configs", "must be text, one log group per line"))?);
        }
        Some(_) => return Err(FuncError::bad_kwarg("configs", "must be text, one log group per line")),
    }

    let time = |k: &str| -> Result<Option<DateTime<Utc>>, FuncError> {
        match get(k) {
            None => Ok(None),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| FuncError::bad_kwarg(k, "must be an RFC 3339 time such as 2026-01-31T08:00:00Z")),
            Some(_) => Err(FuncError::bad_kwarg(k, "must be an RFC 3339 time such as 2026-01-31T08:00:00Z")),
        }
    };
    request.window_start = time("window_start")?;
    request.window_end = time("window_end")?;

    if let Some(v) = get("lookback_minutes") {
        let minutes = int_of(v).filter(|m| (1..=MAX_LOOKBACK_MINUTES).contains(m)).ok_or_else(|| {
            FuncError::bad_kwarg("lookback_minutes", format!("must be 1–{MAX_LOOKBACK_MINUTES} minutes"))
        })?;
        if request.window_start.is_some() || request.window_end.is_some() {
            return Err(FuncError::bad_request(
                "Invalid kwargs, give either `lookback_minutes` or `window_start` and `window_end`",
                json!({ "kwargsField": "lookback_minutes" }),
            ));
        }
        // The same delivery delay as the inspection's own windows: the newest minutes of
        // CloudTrail have not all arrived yet.
        let end = whole_seconds(now - TimeDelta::minutes(i64::from(inspection.settings.delivery_delay_minutes)));
        request.window_start = Some(end - TimeDelta::minutes(minutes));
        request.window_end = Some(end);
    }

    if let Some(v) = get("dry_run") {
        request.dry_run = bool_kwarg("dry_run", v)?;
    }
    Ok(request)
}

/// A boolean kwarg as Func callers send one: JSON true/false, 1/0, or that as text.
fn bool_kwarg(name: &str, v: &Value) -> Result<bool, FuncError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(FuncError::bad_kwarg(name, "must be true or false")),
        },
        _ => Err(FuncError::bad_kwarg(name, "must be true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_funcs() {
        for (reason, code, status) in [
            (Reason::EClientNotFound, 404.41, 404),
            (Reason::EClientBadRequest, 400.43, 400),
            (Reason::EBizCondition, 403.21, 403),
            (Reason::EBizRequestConflict, 409.25, 409),
            (Reason::EFuncFailed, 599.10, 599),
            (Reason::EFuncTimeout, 599.20, 599),
            (Reason::EFuncResultParsingFailed, 599.98, 599),
            (Reason::EWorkerNoResponse, 599.99, 599),
        ] {
            assert_eq!(reason.code(), code);
            assert_eq!(reason.status().as_u16(), status, "{}", reason.name());
        }
    }

    #[test]
    fn trace_ids_come_from_the_caller_or_look_like_funcs() {
        let mut h = HeaderMap::new();
        let call = |h: &HeaderMap| Call::new(&Method::GET, "/api/v1/sync/secret", h);
        let made = call(&h).trace_id;
        assert!(made.starts_with("TRACE-") && made.len() == 42, "{made}");
        assert_eq!(made, made.to_uppercase());
        assert_eq!(call(&h).client_time, None);
        h.insert(TRACE_HEADER, HeaderValue::from_static("TRACE-FROM-FUNC"));
        h.insert(CLIENT_TIME_HEADER, HeaderValue::from_static("2026-03-01T08:00:00.000Z"));
        let c = call(&h);
        assert_eq!(c.trace_id, "TRACE-FROM-FUNC");
        assert_eq!(c.client_time.as_deref(), Some("2026-03-01T08:00:00.000Z"));
        assert_eq!(c.path, "/api/v1/sync/***", "the trigger id never goes into an answer's reqDump");
    }

    #[test]
    fn paths_belong_to_their_family() {
        for (path, prefix) in [
            ("/api/v1/sync", Some("/api/v1/sync")),
            ("/api/v1/sync/x/s/tail", Some("/api/v1/sync")),
            ("/api/v1/async/x", Some("/api/v1/async")),
            ("/api/v1/al/x", Some("/api/v1/al")),
            ("/api/v1/bat", Some("/api/v1/bat")),
            ("/api/v1/synchronous", None),
            ("/api/v1/alpha/x", None),
            ("/api/v1/runs", None),
        ] {
            assert_eq!(family_of(path).map(|f| f.prefix), prefix, "{path}");
        }
    }

    #[test]
    fn options_are_checked_as_func_checks_them() {
        let opts = |v: Value| split_normal(RequestData::Fields(json!({ "options": v }).as_object().unwrap().clone()));
        for ok in [
            json!({"queue": 1}),
            json!({"queue": "9"}),
            json!({"queue": null, "expires": ""}),
            json!({"expires": 86400}),
            json!({"expires": "1", "timeout": 3600}),
        ] {
            assert!(opts(ok.clone()).is_ok(), "{ok}");
        }
        for (bad, message, detail) in [
            (json!({"queue": 0}), "queue should be an integer between 1 and 9", json!({"min": 1, "max": 9})),
            (json!({"queue": 10}), "queue should be an integer between 1 and 9", json!({"min": 1, "max": 9})),
            (json!({"queue": "fast"}), "queue should be an integer between 1 and 9", json!({"min": 1, "max": 9})),
            (json!({"expires": 0}), "expires is too small", json!({"min": 1})),
            (json!({"expires": 86401}), "expires is too large", json!({"max": 86400})),
            (json!({"expires": "soon"}), "expires should be an integer", json!({})),
            (json!({"timeout": 0}), "timeout is too small", json!({"min": 1})),
        ] {
            let e = opts(bad.clone()).unwrap_err();
            assert_eq!(e.reason, Reason::EClientBadRequest, "{bad}");
            assert!(e.message.contains(message), "{bad}: {}", e.message);
            assert_eq!(e.detail, detail, "{bad}");
        }
        let (_, o) = opts(json!({"timeout": "30", "queue": 3, "expires": 60})).unwrap();
        assert_eq!(o.timeout, Some(30));
    }

    #[test]
    fn bodies_are_read_as_funcs_parsers_read_them() {
        let h = |ct: &str| {
            let mut h = HeaderMap::new();
            if !ct.is_empty() {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            }
            h
        };
        let kwargs = |d: RequestData| Value::Object(d.into_kwargs());
        let body = parse_body(&h("application/json; charset=utf-8"), br#"{"kwargs": {}}"#).unwrap();
        assert_eq!(kwargs(body), json!({"kwargs": {}}));
        let body = parse_body(&h("text/plain"), b"trail-a").unwrap();
        assert_eq!(kwargs(body), json!({"text": "trail-a"}));
        let body = parse_body(&h("application/octet-stream"), b"\x00\x01").unwrap();
        assert_eq!(kwargs(body).as_object().unwrap().keys().collect::<Vec<_>>(), ["base64"]);
        let body = parse_body(&h(""), br#"{"dry_run": true}"#).unwrap();
        assert_eq!(kwargs(body), json!({"dry_run": true}), "no content type: a JSON object is still read");
        let body = parse_body(&h("application/x-www-form-urlencoded"), b"dry_run=1").unwrap();
        assert_eq!(kwargs(body), json!({"dry_run": "1"}));
        let e = parse_body(&h("application/json"), b"{").unwrap_err();
        assert_eq!(e.message, "Invalid request body");
        // The normal format cannot take kwargs from a body that has none.
        for data in [RequestData::Text("x".into()), RequestData::Binary(3)] {
            let e = split_normal(data).unwrap_err();
            assert!(e.message.starts_with("Invalid request body: it is not JSON"), "{}", e.message);
        }
    }

    #[test]
    fn the_exec_mode_header_says_whether_a_crontab_config_called() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(EXEC_MODE_HEADER, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(exec_mode_of(&HeaderMap::new()).unwrap(), None);
        for (v, want) in [("cronJob", ExecMode::Crontab), ("crontab", ExecMode::Crontab), ("manual", ExecMode::Manual)]
        {
            assert_eq!(exec_mode_of(&h(v)).unwrap(), Some(want), "{v}");
        }
        assert_eq!(exec_mode_of(&h("hourly")).unwrap_err().reason, Reason::EClientBadRequest);
    }

    #[test]
    fn sub_reasons_are_written_after_a_dot() {
        let mut e = FuncError::new(Reason::EBizCondition, "x", json!({}));
        assert_eq!(e.reason_name(), "EBizCondition");
        e.sub = Some("SyncAPIDisabled");
        assert_eq!(e.reason_name(), "EBizCondition.SyncAPIDisabled");
        assert_eq!(e.reason.code(), 403.21);
    }

    #[test]
    fn each_family_documents_get_and_post_under_ids_of_their_own() {
        let (_, doc) = routes().split_for_parts();
        let mut ids = Vec::new();
        for family in FAMILIES {
            for path in
                [format!("{}/{{trigger_id}}", family.prefix), format!("{}/{{trigger_id}}/{{format}}", family.prefix)]
            {
                let item = doc.paths.paths.get(&path).unwrap_or_else(|| panic!("{path} is not documented"));
                for operation in [&item.get, &item.post] {
                    ids.push(operation.as_ref().and_then(|o| o.operation_id.clone()).expect("named"));
                }
            }
        }
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        assert_eq!(ids.len(), FAMILIES.len() * 4);
        // The old names are marked as Func marks them: still served, use the new ones.
        for family in FAMILIES {
            let item = &doc.paths.paths[&format!("{}/{{trigger_id}}", family.prefix)];
            let deprecated = item.get.as_ref().unwrap().deprecated == Some(utoipa::openapi::Deprecated::True);
            assert_eq!(deprecated, family.deprecated, "{}", family.prefix);
        }
    }

    #[test]
    fn iso_times_have_milliseconds() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T08:00:01.234567Z").unwrap().with_timezone(&Utc);
        assert_eq!(iso(t), "2026-03-01T08:00:01.234Z");
    }
}
