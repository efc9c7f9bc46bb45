//! HTTP front end and the operations. All state changes happen under one lock and no lock is
//! held across an await, so slow (hanging) calls never block other calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Map, Value, json};

use super::filter_pattern::FilterPattern;
use super::insights::{EventRef, Query};
use super::{ACCOUNT_ID, CallRecord, FakeConfig, Fault, QueryState, REGION, Shared, State, StoredEvent, lock};

const TARGET_PREFIX: &str = "Logs_20140328.";
const OPERATIONS: [&str; 7] = [
    "FilterLogEvents",
    "StartQuery",
    "GetQueryResults",
    "StopQuery",
    "CreateLogGroup",
    "DeleteLogGroup",
    "DescribeLogGroups",
];
/// AWS's hard caps, which config can lower but not raise.
const MAX_EVENTS_PER_PAGE: usize = 10_000;
const MAX_QUERY_ROWS: usize = 10_000;
const MAX_QUERY_GROUPS: usize = 50;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", post(handle))
        .fallback(|| async {
            respond(
                404,
                &error_body("UnknownOperationException", "No such endpoint"),
                Some("UnknownOperationException"),
            )
        })
        .with_state(shared)
}

/// An AWS error answer.
#[derive(Debug)]
struct ApiError {
    status: u16,
    type_name: String,
    message: String,
}

impl ApiError {
    fn new(status: u16, type_name: &str, message: impl Into<String>) -> Self {
        ApiError { status, type_name: type_name.to_string(), message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterException", message)
    }

    fn serialization(message: impl Into<String>) -> Self {
        Self::new(400, "SerializationException", message)
    }

    fn group_not_found() -> Self {
        Self::new(400, "ResourceNotFoundException", "The specified log group does not exist.")
    }

    fn from_fault(fault: &Fault, operation: &str, groups: &[String]) -> Self {
        match fault {
            Fault::Throttling => Self::new(400, "ThrottlingException", "Rate exceeded"),
            Fault::ServerError => {
                Self::new(500, "ServiceUnavailableException", "The service cannot complete the request.")
            }
            Fault::AccessDenied => Self::new(
                400,
                "AccessDeniedException",
                format!(
                    "User: arn:aws:iam::{ACCOUNT_ID}:user/test is not authorized to perform: \
                     logs:{operation} on resource: {}",
                    groups.first().map_or("*".to_string(), |g| group_arn(g))
                ),
            ),
            Fault::ExpiredToken => {
                Self::new(400, "ExpiredTokenException", "The security token included in the request is expired")
            }
            Fault::ResourceNotFound => Self::group_not_found(),
            Fault::Custom { status, type_name, message } => Self::new(*status, type_name, message.clone()),
            Fault::Hang(_) => unreachable!("Hang is not an error"),
        }
    }
}

fn error_body(type_name: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"__type": type_name, "message": message})).expect("json")
}

fn respond(status: u16, body: &[u8], error_type: Option<&str>) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.1")
        .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string());
    if let Some(t) = error_type {
        b = b.header("x-amzn-ErrorType", t);
    }
    b.body(Body::from(body.to_vec())).expect("response")
}

fn group_arn(name: &str) -> String {
    format!("arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}")
}

/// A log group identifier may be a name or an ARN (with or without the trailing `:*`).
fn group_name(identifier: &str) -> String {
    match identifier.find(":log-group:") {
        Some(idx) if identifier.starts_with("arn:") => {
            let rest = &identifier[idx + ":log-group:".len()..];
            rest.strip_suffix(":*").unwrap_or(rest).to_string()
        }
        _ => identifier.to_string(),
    }
}

fn opt_str(req: &Value, key: &str) -> Result<Option<String>, ApiError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::serialization(format!("{key} must be a string"))),
    }
}

fn opt_i64(req: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| ApiError::serialization(format!("{key} must be an integer"))),
    }
}

fn opt_str_list(req: &Value, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::serialization(format!("{key} must hold strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::serialization(format!("{key} must be a list"))),
    }
}

/// Log group names a request touches, for records and per-group faults.
fn touched_groups(st: &State, operation: &str, req: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["logGroupName", "logGroupIdentifier"] {
        if let Ok(Some(s)) = opt_str(req, key) {
            out.push(group_name(&s));
        }
    }
    for key in ["logGroupNames", "logGroupIdentifiers"] {
        if let Ok(Some(list)) = opt_str_list(req, key) {
            out.extend(list.iter().map(|s| group_name(s)));
        }
    }
    if matches!(operation, "GetQueryResults" | "StopQuery") {
        let query = opt_str(req, "queryId").ok().flatten().and_then(|id| st.queries.get(&id));
        out.extend(query.into_iter().flat_map(|q| q.log_groups.iter().cloned()));
    }
    out
}

impl State {
    /// The injected fault for this call, if any; consumes one use of a `fail_next` rule.
    fn take_fault(&mut self, operation: &str, groups: &[String]) -> Option<Fault> {
        if let Some(rule) =
            self.next_faults.iter_mut().find(|r| r.remaining > 0 && (r.operation == operation || r.operation == "*"))
        {
            rule.remaining -= 1;
            let fault = rule.fault.clone();
            self.next_faults.retain(|r| r.remaining > 0);
            return Some(fault);
        }
        groups.iter().find_map(|g| self.group_faults.get(g).cloned())
    }
}

async fn handle(AxState(shared): AxState<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, body, error_type, hang) = process(&shared, &headers, &body);
    let latency = match shared.cfg.latency_max {
        Some(max) if max > shared.cfg.latency => {
            let spread = (max - shared.cfg.latency).as_secs_f64();
            shared.cfg.latency + Duration::from_secs_f64(rand::random::<f64>() * spread)
        }
        _ => shared.cfg.latency,
    };
    let delay = latency + hang;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    respond(status, &body, error_type.as_deref())
}

/// Answers and records one request; returns the answer and how long to hang before sending.
fn process(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> (u16, Vec<u8>, Option<String>, Duration) {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(target).to_string();
    let parsed: Option<Value> =
        if body.is_empty() { Some(Value::Object(Map::new())) } else { serde_json::from_slice(body).ok() };
    let req = parsed.clone().unwrap_or(Value::Null);

    let mut hang = Duration::ZERO;
    let mut st = lock(&shared.state);
    let log_groups = touched_groups(&st, &operation, &req);
    let result = if !headers.contains_key(header::AUTHORIZATION) {
        Err(ApiError::new(403, "MissingAuthenticationTokenException", "Missing Authentication Token"))
    } else if !target.starts_with(TARGET_PREFIX) || !OPERATIONS.contains(&operation.as_str()) {
        Err(ApiError::new(400, "UnknownOperationException", format!("Unknown operation {target}")))
    } else if !parsed.as_ref().is_some_and(Value::is_object) {
        Err(ApiError::serialization("Request body is not a JSON object"))
    } else {
        match st.take_fault(&operation, &log_groups) {
            Some(Fault::Hang(d)) => {
                hang = d;
                run_operation(&mut st, &shared.cfg, &operation, &req, &log_groups)
            }
            Some(f) => Err(ApiError::from_fault(&f, &operation, &log_groups)),
            None => run_operation(&mut st, &shared.cfg, &operation, &req, &log_groups),
        }
    };

    let (status, body, error_type) = match result {
        Ok(v) => (200, serde_json::to_vec(&v).expect("json"), None),
        Err(e) => (e.status, error_body(&e.type_name, &e.message), Some(e.type_name)),
    };
    if error_type.as_deref() == Some("ThrottlingException") {
        st.throttled += 1;
    }
    if status == 200 && operation == "FilterLogEvents" {
        for g in &log_groups {
            let gone = st.delete_after_pages.get_mut(g).is_some_and(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
            if gone {
                st.delete_after_pages.remove(g);
                st.groups.remove(g);
            }
        }
    }
    let field = |op: &str, key: &str| (operation == op).then(|| opt_str(&req, key).ok().flatten()).flatten();
    let record = CallRecord {
        operation: operation.clone(),
        log_groups,
        status,
        response_bytes: body.len(),
        filter_pattern: field("FilterLogEvents", "filterPattern"),
        query: field("StartQuery", "queryString"),
    };
    st.calls.push(record);
    st.call_times.push(Instant::now());
    (status, body, error_type, hang)
}

/// The quota check, then the operation itself.
fn run_operation(
    st: &mut State,
    cfg: &FakeConfig,
    operation: &str,
    req: &Value,
    log_groups: &[String],
) -> Result<Value, ApiError> {
    let over_quota = operation == "FilterLogEvents" && st.bucket.as_mut().is_some_and(|b| !b.take());
    if over_quota {
        return Err(ApiError::from_fault(&Fault::Throttling, operation, log_groups));
    }
    dispatch(st, cfg, operation, req)
}

fn dispatch(st: &mut State, cfg: &FakeConfig, operation: &str, req: &Value) -> Result<Value, ApiError> {
    match operation {
        "FilterLogEvents" => filter_log_events(st, cfg, req),
        "StartQuery" => start_query(st, cfg, req),
        "GetQueryResults" => get_query_results(st, cfg, req),
        "StopQuery" => stop_query(st, req),
        "CreateLogGroup" => create_log_group(st, req),
        "DeleteLogGroup" => delete_log_group(st, req),
        "DescribeLogGroups" => describe_log_groups(st, req),
        _ => unreachable!("checked against OPERATIONS"),
    }
}

fn encode_token(ts: i64, seq: u64) -> String {
    format!("{:016x}{:016x}", ts as u64, seq)
}

fn decode_token(token: &str) -> Option<(i64, u64)> {
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ts = u64::from_str_radix(&token[..16], 16).ok()? as i64;
    let seq = u64::from_str_radix(&token[16..], 16).ok()?;
    Some((ts, seq))
}

fn filter_log_events(st: &mut State, cfg: &FakeConfig, req: &Value) -> Result<Value, ApiError> {
    let name = opt_str(req, "logGroupName")?;
    let ident = opt_str(req, "logGroupIdentifier")?;
    let group = match (name, ident) {
        (Some(n), None) => n,
        (None, Some(i)) => group_name(&i),
        _ => {
            return Err(ApiError::invalid("You must include either logGroupIdentifier or logGroupName, but not both."));
        }
    };
    let stream_names = opt_str_list(req, "logStreamNames")?.filter(|l| !l.is_empty());
    let stream_prefix = opt_str(req, "logStreamNamePrefix")?;
    if stream_names.is_some() && stream_prefix.is_some() {
        return Err(ApiError::invalid("logStreamNames and logStreamNamePrefix cannot both be specified."));
    }
    let start = opt_i64(req, "startTime")?;
    let end = opt_i64(req, "endTime")?;
    if start.is_some_and(|t| t < 0) || end.is_some_and(|t| t < 0) {
        return Err(ApiError::invalid("startTime and endTime must not be negative."));
    }
    let (start, end) = (start.unwrap_or(0), end.unwrap_or(i64::MAX));
    if start > end {
        return Err(ApiError::invalid("endTime must not be before startTime."));
    }
    let limit = opt_i64(req, "limit")?.unwrap_or(MAX_EVENTS_PER_PAGE as i64);
    if !(1..=MAX_EVENTS_PER_PAGE as i64).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: \
             Member must have value between 1 and 10000"
        )));
    }
    let pattern_text = opt_str(req, "filterPattern")?.unwrap_or_default();
    let pattern =
        FilterPattern::parse(&pattern_text).map_err(|e| ApiError::invalid(format!("Invalid filter pattern: {e}")))?;
    let resume = match opt_str(req, "nextToken")? {
        None => None,
        Some(t) => Some(decode_token(&t).ok_or_else(|| ApiError::invalid("The specified nextToken is invalid."))?),
    };
    let matcher = pattern.matcher();
    let g = st.groups.get_mut(&group).ok_or_else(ApiError::group_not_found)?;
    g.index_by_time();
    let index = g.order.as_ref().expect("indexed");
    let stored: Vec<&Vec<StoredEvent>> = g.streams.values().collect();
    // Events in (timestamp, storage order) across streams: the first one inside the range
    // and after the resume point, then onwards.
    let mut from = index.slots.partition_point(|s| s.timestamp < start);
    if let Some(r) = resume {
        from = from.max(index.slots.partition_point(|s| (s.timestamp, s.seq) <= r));
    }
    let stream_ok: Vec<bool> = index
        .streams
        .iter()
        .map(|s| {
            stream_names.as_ref().is_none_or(|names| names.contains(s))
                && stream_prefix.as_ref().is_none_or(|p| s.starts_with(p.as_str()))
        })
        .collect();

    let page_max = (limit as usize).min(cfg.max_page_events).max(1);
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut last = None;
    let mut next_token = None;
    for slot in &index.slots[from..] {
        if slot.timestamp > end {
            break;
        }
        if !stream_ok[slot.stream as usize] {
            continue;
        }
        let stream = index.streams[slot.stream as usize].as_str();
        let e = &stored[slot.stream as usize][slot.index as usize];
        if !matcher.matches(&e.message) {
            continue;
        }
        let full = events.len() >= page_max || (!events.is_empty() && bytes + e.message.len() > cfg.max_page_bytes);
        if full {
            next_token = last.map(|(ts, seq)| encode_token(ts, seq));
            break;
        }
        bytes += e.message.len();
        last = Some((e.timestamp, e.seq));
        events.push(json!({
            "logStreamName": stream,
            "timestamp": e.timestamp,
            "message": e.message,
            "ingestionTime": e.ingestion_time,
            "eventId": format!("{:056}", e.seq),
        }));
    }
    let mut out = json!({"events": events, "searchedLogStreams": []});
    if let Some(t) = next_token {
        out["nextToken"] = json!(t);
    }
    Ok(out)
}

fn start_query(st: &mut State, cfg: &FakeConfig, req: &Value) -> Result<Value, ApiError> {
    let single = opt_str(req, "logGroupName")?;
    let names = opt_str_list(req, "logGroupNames")?;
    let idents = opt_str_list(req, "logGroupIdentifiers")?;
    let given = [single.is_some(), names.is_some(), idents.is_some()].iter().filter(|b| **b).count();
    if given != 1 {
        return Err(ApiError::invalid(
            "A StartQuery operation must include exactly one of the following parameters: \
             logGroupName, logGroupNames, or logGroupIdentifiers.",
        ));
    }
    let mut groups: Vec<String> = match (single, names, idents) {
        (Some(s), _, _) => vec![s],
        (_, Some(l), _) => l,
        (_, _, Some(l)) => l.iter().map(|s| group_name(s)).collect(),
        _ => unreachable!(),
    };
    if groups.is_empty() || groups.len() > MAX_QUERY_GROUPS {
        return Err(ApiError::invalid(format!("A query can include between 1 and {MAX_QUERY_GROUPS} log groups.")));
    }
    let start = opt_i64(req, "startTime")?.ok_or_else(|| ApiError::invalid("startTime is required."))?;
    let end = opt_i64(req, "endTime")?.ok_or_else(|| ApiError::invalid("endTime is required."))?;
    if start < 0 || end < 0 {
        return Err(ApiError::invalid("startTime and endTime must not be negative."));
    }
    if end < start {
        return Err(ApiError::invalid("End time should not be before the start time."));
    }
    let query_string = opt_str(req, "queryString")?.ok_or_else(|| ApiError::invalid("queryString is required."))?;
    if query_string.len() > 10_000 {
        return Err(ApiError::invalid("queryString must be at most 10000 characters."));
    }
    let limit = match opt_i64(req, "limit")? {
        None => MAX_QUERY_ROWS,
        Some(l) if (1..=MAX_QUERY_ROWS as i64).contains(&l) => l as usize,
        Some(l) => {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{l}' at 'limit' failed to satisfy \
                 constraint: Member must have value between 1 and 10000"
            )));
        }
    };
    let query = Query::parse(&query_string).map_err(|e| ApiError::new(400, "MalformedQueryException", e))?;
    groups.dedup();
    if groups.iter().any(|g| !st.groups.contains_key(g)) {
        return Err(ApiError::group_not_found());
    }
    let now = Instant::now();
    let running = st.queries.values().filter(|q| q.running(now)).count();
    if running >= cfg.max_concurrent_queries {
        return Err(ApiError::new(
            400,
            "LimitExceededException",
            format!("Account maximum query concurrency limit of [{}] reached.", cfg.max_concurrent_queries),
        ));
    }

    let lo = start.saturating_mul(1000);
    let hi = end.saturating_mul(1000).saturating_add(999);
    let logs: Vec<String> = groups.iter().map(|g| format!("{ACCOUNT_ID}:{g}")).collect();
    let in_range = |e: &&StoredEvent| e.timestamp >= lo && e.timestamp <= hi;
    let mut scanned = 0u64;
    let mut bytes = 0u64;
    for g in &groups {
        for e in st.groups[g].streams.values().flat_map(|evs| evs.iter().filter(in_range)) {
            scanned += 1;
            bytes += e.message.len() as u64;
        }
    }
    // Streamed: a busy hour has millions of events, and the query keeps only what it needs.
    let events = groups.iter().zip(&logs).flat_map(|(g, log)| {
        st.groups[g].streams.iter().flat_map(move |(stream, evs)| {
            evs.iter().filter(in_range).map(move |e| EventRef {
                timestamp: e.timestamp,
                ingestion_time: e.ingestion_time,
                seq: e.seq,
                message: &e.message,
                log_stream: stream,
                log,
            })
        })
    });
    let mut output = query.run(events);
    output.rows.truncate(limit.min(cfg.max_query_rows).min(MAX_QUERY_ROWS));
    let scan_time =
        cfg.query_scan_bytes_per_sec.map_or(Duration::ZERO, |rate| Duration::from_secs_f64(bytes as f64 / rate));

    let id = uuid::Uuid::new_v4().to_string();
    st.max_running_queries = st.max_running_queries.max(running + 1);
    st.queries.insert(
        id.clone(),
        QueryState {
            log_groups: groups,
            complete_at: now + cfg.query_duration + scan_time,
            cancelled: false,
            rows: output.rows,
            records_matched: output.records_matched,
            records_scanned: scanned,
            bytes_scanned: bytes,
        },
    );
    Ok(json!({ "queryId": id }))
}

fn query_id(req: &Value) -> Result<String, ApiError> {
    opt_str(req, "queryId")?.ok_or_else(|| ApiError::invalid("queryId is required."))
}

fn unknown_query() -> ApiError {
    ApiError::new(400, "ResourceNotFoundException", "The specified query does not exist.")
}

fn get_query_results(st: &State, cfg: &FakeConfig, req: &Value) -> Result<Value, ApiError> {
    let q = st.queries.get(&query_id(req)?).ok_or_else(unknown_query)?;
    let now = Instant::now();
    let (status, done) = if q.cancelled {
        ("Cancelled", false)
    } else if q.running(now) {
        ("Running", false)
    } else {
        ("Complete", true)
    };
    let results: Vec<Value> = if done {
        q.rows
            .iter()
            .map(|row| {
                let kept = row.iter().filter(|(f, _)| !cfg.omit_result_fields.iter().any(|o| o == f));
                Value::Array(kept.map(|(f, v)| json!({"field": f, "value": v})).collect())
            })
            .collect()
    } else {
        Vec::new()
    };
    let (m, s, b) = if done { (q.records_matched, q.records_scanned, q.bytes_scanned) } else { (0, 0, 0) };
    Ok(json!({
        "status": status,
        "results": results,
        "statistics": {
            "recordsMatched": m as f64,
            "recordsScanned": s as f64,
            "bytesScanned": b as f64,
        },
    }))
}

fn stop_query(st: &mut State, req: &Value) -> Result<Value, ApiError> {
    let now = Instant::now();
    let q = st.queries.get_mut(&query_id(req)?).ok_or_else(unknown_query)?;
    let stopped = q.running(now);
    if stopped {
        q.cancelled = true;
    }
    Ok(json!({ "success": stopped }))
}

fn required_group_name(req: &Value) -> Result<String, ApiError> {
    opt_str(req, "logGroupName")?.ok_or_else(|| ApiError::invalid("logGroupName is required."))
}

fn create_log_group(st: &mut State, req: &Value) -> Result<Value, ApiError> {
    let name = required_group_name(req)?;
    if st.groups.contains_key(&name) {
        return Err(ApiError::new(400, "ResourceAlreadyExistsException", "The specified log group already exists"));
    }
    st.ensure_group(&name);
    Ok(json!({}))
}

fn delete_log_group(st: &mut State, req: &Value) -> Result<Value, ApiError> {
    let name = required_group_name(req)?;
    st.groups.remove(&name).map(|_| json!({})).ok_or_else(ApiError::group_not_found)
}

fn describe_log_groups(st: &State, req: &Value) -> Result<Value, ApiError> {
    let prefix = opt_str(req, "logGroupNamePrefix")?.unwrap_or_default();
    let limit = opt_i64(req, "limit")?.unwrap_or(50);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 50."));
    }
    let after = opt_str(req, "nextToken")?;
    let mut matching = st
        .groups
        .iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .filter(|(n, _)| after.as_ref().is_none_or(|a| n.as_str() > a.as_str()));
    let page: Vec<_> = matching.by_ref().take(limit as usize).collect();
    let more = matching.next().is_some();
    let groups: Vec<Value> = page
        .iter()
        .map(|(n, g)| {
            let stored: usize = g.streams.values().flat_map(|s| s.iter().map(|e| e.message.len())).sum();
            json!({
                "logGroupName": n,
                "creationTime": g.creation_time,
                "arn": format!("{}:*", group_arn(n)),
                "logGroupArn": group_arn(n),
                "storedBytes": stored,
                "metricFilterCount": 0,
                "logGroupClass": "STANDARD",
            })
        })
        .collect();
    let mut out = json!({ "logGroups": groups });
    if let (true, Some((n, _))) = (more, page.last()) {
        out["nextToken"] = json!(n);
    }
    Ok(out)
}
