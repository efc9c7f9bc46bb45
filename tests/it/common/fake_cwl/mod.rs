//! A fake CloudWatch Logs server on 127.0.0.1 speaking AWS JSON 1.1, so tests can drive the
//! real `aws-sdk-cloudwatchlogs` client against seeded data, quotas and injected faults.
//!
//! Wire protocol: `POST /` with `X-Amz-Target: Logs_20140328.<Operation>`; answers are
//! `application/x-amz-json-1.1`. Errors carry `{"__type": Name, "message": …}` plus the
//! `x-amzn-ErrorType` header, which is what the SDK reads to pick the typed error (the header
//! wins over the body). Errors the service model does not list for an operation (e.g.
//! `ThrottlingException` on `FilterLogEvents`) reach the SDK as its `Unhandled` variant with
//! that `code()`; the SDK's retry classifier still treats `ThrottlingException` as throttling.
//! A request without an `Authorization` header gets 403 `MissingAuthenticationTokenException`.
//!
//! Operations: `FilterLogEvents`, `StartQuery`, `GetQueryResults`, `StopQuery`,
//! `CreateLogGroup`, `DeleteLogGroup`, `DescribeLogGroups`; others get 400
//! `UnknownOperationException`.
//!
//! `FilterLogEvents`: `startTime`/`endTime` are inclusive milliseconds (the API reference:
//! events "before"/"later than" them are not returned). Events come in (timestamp, storage
//! order) order across streams. A page ends at `limit` (default and max 10,000),
//! `FakeConfig::max_page_events`, or before the event that would take the page's message
//! bytes past `FakeConfig::max_page_bytes` (a page always holds at least one event). The
//! `nextToken` names the last event returned, so paging resumes exactly; the last page has none.
//! Filter patterns: see [`filter_pattern`].
//!
//! Insights: `startTime`/`endTime` are epoch seconds and both inclusive, so an event counts if
//! its millisecond timestamp lies in `[start*1000, end*1000 + 999]`. The query runs when it is
//! started (a snapshot); it reports `Running` (no results yet) for
//! `FakeConfig::query_duration`, then `Complete`. `Scheduled` is never reported. Rows are
//! capped at the smallest of the `limit` parameter (default 10,000),
//! `FakeConfig::max_query_rows` and 10,000. Queries still running count against
//! `max_concurrent_queries`; one more gets `LimitExceededException`. Query language: see
//! [`insights`].
//!
//! Realism at volume, for benchmarks: `FakeConfig::latency_max` makes each call's delay vary,
//! `FakeConfig::query_scan_bytes_per_sec` makes a query's running time grow with the bytes it
//! scans, and the server keeps up with an hour of a busy account (10^7 records): paging uses
//! a time index instead of sorting the group on every call, queries stream their records
//! (a `stats` query holds only its groups), records are built with only the fields a query
//! names, and messages that cannot match a filter are skipped unparsed (see [`prefilter`]).
//! None of this changes an answer.

#![allow(dead_code)]

pub mod filter_pattern;
pub mod insights;
pub mod prefilter;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Account id used in ARNs and in Insights' `@log` field.
pub const ACCOUNT_ID: &str = "123456789012";
/// Region used in ARNs.
pub const REGION: &str = "us-east-1";

/// Knobs for quotas and timing; `Default` matches AWS's documented limits and no delays.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Events per `FilterLogEvents` page at most (AWS: 10,000).
    pub max_page_events: usize,
    /// Message bytes per `FilterLogEvents` page at most (AWS: 1 MB).
    pub max_page_bytes: usize,
    /// Delay added to every answer.
    pub latency: Duration,
    /// When set, each answer is delayed by a uniformly random time between `latency` and
    /// this, as real calls vary.
    pub latency_max: Option<Duration>,
    /// `FilterLogEvents` calls per second; `None` means no quota. A token bucket with a burst
    /// of `ceil(rps)`; calls over it get 400 `ThrottlingException` "Rate exceeded".
    pub filter_rps: Option<f64>,
    /// How long a started query reports `Running` before `Complete`.
    pub query_duration: Duration,
    /// When set, a query also runs for the bytes it scans divided by this rate, so a query
    /// over a busy hour takes longer than one over a quiet minute.
    pub query_scan_bytes_per_sec: Option<f64>,
    /// Insights rows per query at most (AWS: 10,000).
    pub max_query_rows: usize,
    /// Queries running at once at most; one more gets `LimitExceededException`.
    pub max_concurrent_queries: usize,
    /// Fields left out of every Insights result row, as an emulator that does not compute
    /// them, or a changed schema, would answer.
    pub omit_result_fields: Vec<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            max_page_events: 10_000,
            max_page_bytes: 1_048_576,
            latency: Duration::ZERO,
            latency_max: None,
            filter_rps: None,
            query_duration: Duration::ZERO,
            query_scan_bytes_per_sec: None,
            max_query_rows: 10_000,
            max_concurrent_queries: 30,
            omit_result_fields: Vec::new(),
        }
    }
}

/// A failure to inject, as AWS would answer it.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 400 `ThrottlingException` "Rate exceeded".
    Throttling,
    /// 500 `ServiceUnavailableException`.
    ServerError,
    /// 400 `AccessDeniedException`.
    AccessDenied,
    /// 400 `ExpiredTokenException`.
    ExpiredToken,
    /// 400 `ResourceNotFoundException` "The specified log group does not exist.".
    ResourceNotFound,
    /// Any status and error type.
    Custom { status: u16, type_name: String, message: String },
    /// Sleep this long, then answer normally: for client timeouts.
    Hang(Duration),
}

/// One request as the server saw it, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The operation from `X-Amz-Target` (as sent, even if unknown).
    pub operation: String,
    /// Log group names the call touched (ARNs reduced to names).
    pub log_groups: Vec<String>,
    pub status: u16,
    /// Size of the response body.
    pub response_bytes: usize,
    /// `filterPattern` of a `FilterLogEvents` call.
    pub filter_pattern: Option<String>,
    /// `queryString` of a `StartQuery` call.
    pub query: Option<String>,
}

/// The fake server. Clones share it; the server stops when the last clone is dropped or on
/// [`FakeCwl::shutdown`].
#[derive(Clone)]
pub struct FakeCwl {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
    }
}

/// State shared between the test-facing handle and the server task.
struct Shared {
    cfg: FakeConfig,
    addr: SocketAddr,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    groups: BTreeMap<String, LogGroup>,
    /// Pending `fail_next` rules, first match wins.
    next_faults: Vec<NextFault>,
    group_faults: HashMap<String, Fault>,
    /// Groups deleted right after this many more `FilterLogEvents` pages were served.
    delete_after_pages: HashMap<String, usize>,
    calls: Vec<CallRecord>,
    /// When each of `calls` arrived.
    call_times: Vec<Instant>,
    throttled: usize,
    bucket: Option<TokenBucket>,
    queries: HashMap<String, QueryState>,
    /// The most queries that were running at once.
    max_running_queries: usize,
    /// Storage order of events; also their `eventId`.
    seq: u64,
}

struct NextFault {
    operation: String,
    remaining: usize,
    fault: Fault,
}

struct LogGroup {
    creation_time: i64,
    streams: BTreeMap<String, Vec<StoredEvent>>,
    /// Every event in `(timestamp, seq)` order, for paging without sorting the group on each
    /// call; rebuilt after events are added.
    order: Option<TimeIndex>,
}

/// Positions of a group's events in `(timestamp, seq)` order.
struct TimeIndex {
    /// Stream names in `streams` order; `Slot::stream` indexes them.
    streams: Vec<String>,
    slots: Vec<Slot>,
}

#[derive(Clone, Copy)]
struct Slot {
    timestamp: i64,
    seq: u64,
    stream: u32,
    index: u32,
}

impl LogGroup {
    /// Builds the time index if events were added since it was last built.
    fn index_by_time(&mut self) {
        if self.order.is_none() {
            let mut slots = Vec::with_capacity(self.streams.values().map(Vec::len).sum());
            for (si, events) in self.streams.values().enumerate() {
                for (ei, e) in events.iter().enumerate() {
                    slots.push(Slot { timestamp: e.timestamp, seq: e.seq, stream: si as u32, index: ei as u32 });
                }
            }
            slots.sort_unstable_by_key(|s| (s.timestamp, s.seq));
            self.order = Some(TimeIndex { streams: self.streams.keys().cloned().collect(), slots });
        }
    }
}

struct StoredEvent {
    timestamp: i64,
    ingestion_time: i64,
    seq: u64,
    message: String,
}

struct QueryState {
    log_groups: Vec<String>,
    complete_at: Instant,
    cancelled: bool,
    rows: Vec<Vec<(String, String)>>,
    records_matched: u64,
    records_scanned: u64,
    bytes_scanned: u64,
}

impl QueryState {
    fn running(&self, now: Instant) -> bool {
        !self.cancelled && now < self.complete_at
    }
}

struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let burst = rate.ceil().max(1.0);
        TokenBucket { rate, burst, tokens: burst, last: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Poison-tolerant lock: a panicking test thread must not wedge the server for other tests.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl FakeCwl {
    /// Starts a server with the default config.
    pub async fn start() -> Self {
        Self::start_with(FakeConfig::default()).await
    }

    pub async fn start_with(cfg: FakeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let bucket = cfg.filter_rps.map(TokenBucket::new);
        let shared = Arc::new(Shared { cfg, addr, state: Mutex::new(State { bucket, ..State::default() }) });
        let (tx, rx) = oneshot::channel::<()>();
        let app = server::router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        FakeCwl { handle: Arc::new(Handle { shared, shutdown: Mutex::new(Some(tx)) }) }
    }

    /// Stops accepting connections now, for every clone.
    pub fn shutdown(&self) {
        if let Some(tx) = lock(&self.handle.shutdown).take() {
            let _ = tx.send(());
        }
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.handle.shared.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.handle.shared.state)
    }

    /// Creates the group if it does not exist.
    pub fn create_log_group(&self, name: &str) {
        self.state().ensure_group(name);
    }

    pub fn delete_log_group(&self, name: &str) {
        self.state().groups.remove(name);
    }

    /// Deletes `name` right after `pages` more `FilterLogEvents` pages of it were answered:
    /// a log group deleted in the middle of a run's paging.
    pub fn delete_log_group_after_pages(&self, name: &str, pages: usize) {
        self.state().delete_after_pages.insert(name.to_string(), pages.max(1));
    }

    /// Stores events in a stream, creating the group and stream as needed. Events keep the
    /// order given among equal timestamps.
    pub fn put_events(&self, group: &str, stream: &str, events: impl IntoIterator<Item = (i64, String)>) {
        let ingestion_time = now_ms();
        let mut st = self.state();
        let mut seq = st.seq;
        let g = st.ensure_group(group);
        g.order = None;
        let s = g.streams.entry(stream.to_string()).or_default();
        for (timestamp, message) in events {
            seq += 1;
            s.push(StoredEvent { timestamp, ingestion_time, seq, message });
        }
        st.seq = seq;
    }

    /// The next `times` calls of `operation` (or of any operation, with `"*"`) fail with
    /// `fault`. Rules are used in the order they were added.
    pub fn fail_next(&self, operation: &str, times: usize, fault: Fault) {
        self.state().next_faults.push(NextFault { operation: operation.to_string(), remaining: times, fault });
    }

    /// Every call touching `group` fails with `fault` until [`FakeCwl::clear_faults`].
    pub fn fail_log_group(&self, group: &str, fault: Fault) {
        self.state().group_faults.insert(group.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.next_faults.clear();
        st.group_faults.clear();
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.state().calls.clone()
    }

    pub fn call_count(&self, operation: &str) -> usize {
        self.state().calls.iter().filter(|c| c.operation == operation).count()
    }

    /// Answers that were `ThrottlingException`, from the quota or injected.
    pub fn throttled_count(&self) -> usize {
        self.state().throttled
    }

    /// Forgets queries that completed more than `ago` ago (AWS keeps results for days; a
    /// long benchmark would otherwise hold every answer in memory).
    pub fn forget_queries_completed(&self, ago: Duration) {
        let now = Instant::now();
        self.state().queries.retain(|_, q| q.cancelled || q.complete_at + ago > now);
    }

    /// The most calls of `operation` that arrived within any one second (a sliding window).
    pub fn max_calls_per_second(&self, operation: &str) -> usize {
        let st = self.state();
        let times: Vec<Instant> =
            st.calls.iter().zip(&st.call_times).filter(|(c, _)| c.operation == operation).map(|(_, t)| *t).collect();
        let mut best = 0;
        let mut from = 0;
        for (i, t) in times.iter().enumerate() {
            while t.duration_since(times[from]) >= Duration::from_secs(1) {
                from += 1;
            }
            best = best.max(i + 1 - from);
        }
        best
    }

    /// Time from the first to the last call of `operation` that arrived since call number
    /// `from` (an index into [`FakeCwl::calls`]); zero with fewer than two.
    pub fn span_of(&self, operation: &str, from: usize) -> Duration {
        let st = self.state();
        let times: Vec<Instant> = st
            .calls
            .iter()
            .zip(&st.call_times)
            .skip(from)
            .filter(|(c, _)| c.operation == operation)
            .map(|(_, t)| *t)
            .collect();
        match (times.first(), times.last()) {
            (Some(a), Some(b)) => b.duration_since(*a),
            _ => Duration::ZERO,
        }
    }

    /// The most Insights queries that were running at once so far.
    pub fn max_running_queries(&self) -> usize {
        self.state().max_running_queries
    }

    /// Response bytes of every call so far.
    pub fn response_bytes(&self) -> usize {
        self.state().calls.iter().map(|c| c.response_bytes).sum()
    }
}

impl State {
    fn ensure_group(&mut self, name: &str) -> &mut LogGroup {
        self.groups.entry(name.to_string()).or_insert_with(|| LogGroup {
            creation_time: now_ms(),
            streams: BTreeMap::new(),
            order: None,
        })
    }
}
