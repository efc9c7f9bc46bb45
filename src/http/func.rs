//! DataFlux Func's calling contract, so Func callers (crontab configs, scripts, anything that
//! called the original inspection's "auth link" or "batch" URL) can call this service instead.
//!
//! - `GET|POST /api/v1/al/{trigger_id}[/{format}]`: run and wait (Func's Sync API, formerly
//!   auth link). `GET|POST /api/v1/bat/{trigger_id}[/{format}]`: start and answer at once
//!   with the run id as the task id (Async API, formerly batch).
//! - The trigger id in the URL is the credential: it is looked up by its hash and compared in
//!   constant time, never logged.
//! - Requests, answers and error codes are Func's (`server/controllers/mainAPICtrl.js`,
//!   `server/utils/serverError.js`, `toolkit.initRet`): `{"kwargs", "options"}` bodies (JSON
//!   text in GET queries), the simplified format where the body or query *is* the kwargs,
//!   unboxed results by default, `{"ok": false, "error": 404.41, "reason": …}` errors whose
//!   HTTP status is the code's integer part.
//! - The result is the finished run exactly as `GET /api/v1/runs/{id}` shows it.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::model::inspection::{Inspection, parse_configs, trigger_id_hash};
use crate::model::run::{Run, RunRequest, RunStatus, Trigger};
use crate::runner::TriggerError;

/// Func's trace id header, read from the caller and echoed on every answer.
const TRACE_HEADER: &str = "x-trace-id";
/// Func's request cost header (milliseconds).
const COST_HEADER: &str = "x-request-cost";
/// The kwargs these routes accept; any other is an error, as a Python signature would make it.
const KWARGS: [&str; 6] = ["configs", "lookback_minutes", "window_start", "window_end", "dry_run", "fail_on_partial"];
const RETURN_TYPES: [&str; 2] = ["raw", "jsonDumps"];
const FORMATS: [&str; 3] = ["normal", "s", "simplified"];
/// Func's `timeout` bounds (`DFF.API(timeout=…)`).
const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// Longest `lookback_minutes`: the longest explicit window a run may read (31 days).
const MAX_LOOKBACK_MINUTES: i64 = 31 * 24 * 60;

/// Func's error reasons this service answers with, and their codes (`server/const.yaml`).
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
    message: String,
    detail: Value,
}

impl FuncError {
    fn new(reason: Reason, message: impl Into<String>, detail: Value) -> Self {
        FuncError { reason, message: message.into(), detail }
    }

    fn bad_request(message: impl Into<String>, detail: Value) -> Self {
        Self::new(Reason::EClientBadRequest, message, detail)
    }

    fn bad_kwarg(field: &str, message: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("Invalid kwargs, `{field}` {message}"), json!({ "kwargsField": field }))
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

    fn from_trigger(e: TriggerError, inspection: &Inspection) -> Self {
        match e {
            TriggerError::NotFound => Self::not_found(),
            TriggerError::Disabled => Self::new(
                Reason::EBizCondition,
                "The inspection is disabled; enable it to run it",
                json!({ "inspection_id": inspection.id, "inspection": inspection.name }),
            ),
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

/// Facts Func attaches to every answer: the trace id and the request's timing.
struct Call {
    trace_id: String,
    req_time: DateTime<Utc>,
    started: Instant,
}

impl Call {
    /// Keeps the caller's `X-Trace-Id` (so one trace spans Func and this service), or makes
    /// one as Func does: `TRACE-` and an upper-case UUID.
    fn new(headers: &HeaderMap) -> Self {
        let upstream = headers
            .get(TRACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 256);
        let trace_id = match upstream {
            Some(t) => t.to_string(),
            None => format!("TRACE-{}", uuid::Uuid::new_v4().to_string().to_uppercase()),
        };
        Call { trace_id, req_time: Utc::now(), started: Instant::now() }
    }

    fn cost_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// `traceId`, `reqTime`, `respTime`, `reqCost`, as Func's `_appendReqInfo`.
    fn info(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("traceId".into(), json!(self.trace_id));
        m.insert("reqTime".into(), json!(iso(self.req_time)));
        m.insert("respTime".into(), json!(iso(Utc::now())));
        m.insert("reqCost".into(), json!(self.cost_ms()));
        m
    }

    fn respond(&self, status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
        let mut res = Response::new(Body::from(body));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&self.trace_id) {
            h.insert(TRACE_HEADER, v);
        }
        h.insert(COST_HEADER, HeaderValue::from(self.cost_ms()));
        res
    }

    /// A Func envelope: `body` plus the request info.
    fn json(&self, status: StatusCode, mut body: Map<String, Value>) -> Response {
        body.extend(self.info());
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
        self.respond(status, "application/json; charset=utf-8", bytes)
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

    fn error(&self, e: FuncError) -> Response {
        let mut body = Map::new();
        body.insert("ok".into(), json!(false));
        body.insert("error".into(), json!(e.reason.code()));
        body.insert("reason".into(), json!(e.reason.name()));
        body.insert("message".into(), json!(e.message));
        body.insert("detail".into(), e.detail);
        body.insert("status".into(), json!(e.reason.status().as_u16()));
        self.json(e.reason.status(), body)
    }
}

/// JavaScript's `Date.toISOString()`: milliseconds and `Z`.
fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run and wait (`/al/`).
    Sync,
    /// Start and answer at once (`/bat/`).
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
    /// Seconds to wait for the run (1–3600); default the inspection's `timeout_seconds`.
    pub timeout: Option<u32>,
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

/// A boxed answer: `options.unbox = false`, and every `/bat/` answer.
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
    /// e.g. `EClientNotFound`, `EFuncTimeout`
    pub reason: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub detail: Value,
    pub status: u16,
    #[serde(rename = "traceId")]
    pub trace_id: String,
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
    /// EClientBadRequest 400.43: bad JSON, unknown kwarg, bad option or format
    #[response(status = 400)]
    BadRequest(FuncErrorBody),
    /// EBizCondition 403.21: the inspection is disabled
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
        let call = Call::new(req.headers());
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_owned);
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await?;
        Ok(FuncRequest { call, method, query, headers, body })
    }
}

/// One URL family of Func's calling contract: `{prefix}/{trigger_id}` and
/// `{prefix}/{trigger_id}/{format}`, each answering GET and POST in one [`Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub prefix: &'static str,
    pub mode: Mode,
}

/// The families this service answers: Func's auth link (`/al/`) and batch (`/bat/`) URLs.
pub const FAMILIES: [Family; 2] =
    [Family { prefix: "/api/v1/al", mode: Mode::Sync }, Family { prefix: "/api/v1/bat", mode: Mode::Async }];

/// The routes of every family, with their documentation.
pub fn routes() -> OpenApiRouter<AppState> {
    FAMILIES.iter().fold(OpenApiRouter::new(), |router, family| router.merge(family.routes()))
}

impl Family {
    /// This family's routes under its prefix. `method(get, post)` gives both methods the
    /// handler's operation id, and handlers are shared between families of one mode, so each
    /// operation is named here after the family (the prefix's last segment), the path's shape
    /// and the method: `al_get`, `bat_format_post`, …
    pub fn routes(&self) -> OpenApiRouter<AppState> {
        let handlers = match self.mode {
            Mode::Sync => OpenApiRouter::new().routes(routes!(run_and_wait)).routes(routes!(run_and_wait_in_format)),
            Mode::Async => OpenApiRouter::new().routes(routes!(start_run)).routes(routes!(start_run_in_format)),
        };
        let mut router = OpenApiRouter::new().nest(self.prefix, handlers);
        let name = self.prefix.rsplit('/').next().unwrap_or(self.prefix);
        for (path, item) in router.get_openapi_mut().paths.paths.iter_mut() {
            let shape = if path.ends_with("/{format}") { "_format" } else { "" };
            for (method, operation) in [("get", &mut item.get), ("post", &mut item.post)] {
                if let Some(operation) = operation {
                    operation.operation_id = Some(format!("{name}{shape}_{method}"));
                }
            }
        }
        router
    }
}

/// Run an inspection and wait (Func Sync API / auth link).
///
/// GET reads `?kwargs=<JSON>&options=<JSON>`; POST reads the body `{"kwargs": {...},
/// "options": {"returnType", "unbox", "timeout"}}`. Waits up to the inspection's
/// `timeout_seconds`; past it the answer is EFuncTimeout while the run goes on and is recorded.
#[utoipa::path(
    method(get, post), path = "/{trigger_id}", tag = "func", security(()),
    params(
        ("trigger_id" = String, Path, description = "The inspection's `trigger_id`"),
        ("kwargs" = Option<String>, Query, description = "GET: the kwargs as JSON text"),
        ("options" = Option<String>, Query, description = "GET: the options as JSON text"),
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
/// the body (GET: the query) itself as kwargs.
#[utoipa::path(
    method(get, post), path = "/{trigger_id}/{format}", tag = "func", security(()),
    params(
        ("trigger_id" = String, Path, description = "The inspection's `trigger_id`"),
        ("format" = inline(FuncFormat), Path, description = "`normal`, `s` or `simplified`"),
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

/// Start an inspection run and answer at once (Func Async API / batch).
///
/// Reads the call as `/al/` does. Answers `{"ok": true, "data": {"id": "<run id>"}, …}`;
/// follow the run at `/api/v1/runs/{id}`.
#[utoipa::path(
    method(get, post), path = "/{trigger_id}", tag = "func", security(()),
    params(
        ("trigger_id" = String, Path, description = "The inspection's `trigger_id`"),
        ("kwargs" = Option<String>, Query, description = "GET: the kwargs as JSON text"),
        ("options" = Option<String>, Query, description = "GET: the options as JSON text"),
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

const SYNC_RESULT: &str = "Unboxed: the finished run (`GET /api/v1/runs/{id}`), or its JSON text with \
    `returnType: jsonDumps`. Boxed (`unbox: false`): `FuncBoxed` with the run as `data.result`";
const ASYNC_RESULT: &str = "The run started: `FuncBoxed` with the run id as `data.id`";

/// Answers a call, in Func's shape whether it succeeded or not.
async fn serve(state: &AppState, mode: Mode, trigger_id: &str, format: Option<&str>, request: FuncRequest) -> Response {
    match serve_call(state, mode, trigger_id, format, &request).await {
        Ok(res) => res,
        Err(e) => request.call.error(e),
    }
}

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
    let data = if request.method == Method::GET {
        parse_query(request.query.as_deref())?
    } else {
        parse_body(&request.headers, &request.body)?
    };
    let (kwargs, options) = if simplified { (data, Options::default()) } else { split_normal(data)? };
    let fail_on_partial = match kwargs.get("fail_on_partial").filter(|v| !v.is_null()) {
        Some(v) => bool_kwarg("fail_on_partial", v)?,
        None => false,
    };
    let asked = run_request(kwargs, &inspection, Utc::now())?;

    let started = state
        .runner
        .trigger(inspection.id, Trigger::Func, asked, Some(call.trace_id.clone()))
        .await
        .map_err(|e| FuncError::from_trigger(e, &inspection))?;
    let run_id = started.run.id;
    tracing::info!(inspection = %inspection.name, %run_id, trace_id = %call.trace_id, "func call started a run");
    if mode == Mode::Async {
        return Ok(call.boxed(json!({ "id": run_id })));
    }

    let secs = options.timeout.unwrap_or(u64::from(inspection.settings.timeout_seconds));
    let run = wait_for(started.done, run_id, secs).await?;
    match run.status {
        RunStatus::Partial if fail_on_partial => Err(failed(&run)),
        RunStatus::Succeeded | RunStatus::Partial => Ok(result(call, &run, options)),
        RunStatus::Failed => Err(failed(&run)),
        RunStatus::Interrupted | RunStatus::Queued | RunStatus::Running => Err(no_response(run.id)),
    }
}

/// The finished run, or the Func error for a wait that gave none. The run is its own task:
/// when this wait ends it still finishes and is recorded.
async fn wait_for(done: tokio::task::JoinHandle<Option<Run>>, run_id: uuid::Uuid, secs: u64) -> Result<Run, FuncError> {
    match tokio::time::timeout(Duration::from_secs(secs), done).await {
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

/// The inspection a trigger id names. Looked up by the id's hash, then compared in constant
/// time, so neither step's timing depends on how much of a guess was right.
async fn find_inspection(state: &AppState, trigger_id: &str) -> Result<Inspection, FuncError> {
    if trigger_id.is_empty() || trigger_id.len() > 256 {
        return Err(FuncError::not_found());
    }
    let found = state.store.inspection_by_trigger_hash(&trigger_id_hash(trigger_id)).await.map_err(FuncError::db)?;
    match found {
        Some(i) if bool::from(i.trigger_id.expose().as_bytes().ct_eq(trigger_id.as_bytes())) => Ok(i),
        _ => Err(FuncError::not_found()),
    }
}

/// An integer as Func reads one (parseInt): a number, or a string holding one ("60").
fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
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

/// A POST's body as an object (Express's `req.body`): JSON, or a form.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, FuncError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if content_type == "application/x-www-form-urlencoded" {
        return parse_query(Some(std::str::from_utf8(body).unwrap_or("")));
    }
    if !(content_type.is_empty() || content_type == "application/json" || content_type.ends_with("+json")) {
        return Err(FuncError::bad_request(
            "Invalid body, send JSON (Content-Type: application/json)",
            json!({ "contentType": content_type }),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FuncError::bad_request("Invalid body, a JSON object is expected", json!({}))),
        Err(e) => Err(FuncError::bad_request("Invalid body, bad JSON format", json!({ "error": e.to_string() }))),
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

/// Splits a normal-format request into kwargs and options. Other top-level keys are ignored,
/// as Func ignores them.
fn split_normal(data: Map<String, Value>) -> Result<(Map<String, Value>, Options), FuncError> {
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
    match raw.get("timeout") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let secs = int_of(v)
                .ok_or_else(|| FuncError::bad_request("Invalid options, timeout should be an integer", json!({})))?;
            if secs < *TIMEOUT_RANGE.start() as i64 {
                return Err(FuncError::bad_request(
                    "Invalid options, timeout is too small",
                    json!({ "min": TIMEOUT_RANGE.start() }),
                ));
            }
            if secs > *TIMEOUT_RANGE.end() as i64 {
                return Err(FuncError::bad_request(
                    "Invalid options, timeout is too large",
                    json!({ "max": TIMEOUT_RANGE.end() }),
                ));
            }
            options.timeout = Some(secs as u64);
        }
    }
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
        let made = Call::new(&h).trace_id;
        assert!(made.starts_with("TRACE-") && made.len() == 42, "{made}");
        assert_eq!(made, made.to_uppercase());
        h.insert(TRACE_HEADER, HeaderValue::from_static("TRACE-FROM-FUNC"));
        assert_eq!(Call::new(&h).trace_id, "TRACE-FROM-FUNC");
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
    }

    #[test]
    fn iso_times_have_milliseconds() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T08:00:01.234567Z").unwrap().with_timezone(&Utc);
        assert_eq!(iso(t), "2026-03-01T08:00:01.234Z");
    }
}
