//! Prometheus metrics, kept by hand in atomics and rendered in the text exposition format.
//!
//! A dozen series do not justify a metrics framework and its global registry: one
//! [`Metrics`] per service instance (so tests running several apps in one process do not
//! mix their counts), passed to the runner and the HTTP layer. Gauges that describe shared
//! state — the outbox backlog, events by delivery state — are read from the store at scrape
//! time, so every instance sharing a database reports the same truth.
//!
//! Label values are a closed set chosen here (run statuses, route templates, status codes),
//! never request text: a raw path would carry trigger ids, which are credentials.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::event::DeliveryState;
use crate::model::run::RunStatus;

/// Upper bounds (seconds) of the run duration buckets: a run takes from under a second (a
/// quiet hour) to the better part of an hour (a busy account catching up a day).
const RUN_SECONDS_BUCKETS: [f64; 12] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// Upper bounds (seconds) of the HTTP request duration buckets.
const HTTP_SECONDS_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            if secs <= *bound {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}", n.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// One HTTP series: method, route template, status.
type HttpKey = (String, String, u16);

/// One AWS series: the CloudWatch Logs operation and how the call ended.
pub type AwsCallKey = (&'static str, AwsOutcome);

/// How an AWS call ended, as a label: a closed set, so every series exists from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AwsOutcome {
    Ok,
    Throttled,
    Error,
}

impl AwsOutcome {
    pub const ALL: [AwsOutcome; 3] = [AwsOutcome::Ok, AwsOutcome::Throttled, AwsOutcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            AwsOutcome::Ok => "ok",
            AwsOutcome::Throttled => "throttled",
            AwsOutcome::Error => "error",
        }
    }
}

/// The CloudWatch Logs operations runs make, reported at 0 before their first call.
pub const AWS_OPERATIONS: [&str; 3] = ["FilterLogEvents", "StartQuery", "GetQueryResults"];

const DELIVERY_STATES: [DeliveryState; 5] = [
    DeliveryState::Pending,
    DeliveryState::Sent,
    DeliveryState::Failed,
    DeliveryState::Expired,
    DeliveryState::NotSent,
];

/// The metrics of one service instance.
#[derive(Debug)]
pub struct Metrics {
    runs: Mutex<BTreeMap<&'static str, u64>>,
    run_seconds: Histogram,
    records_scanned: AtomicU64,
    error_records: AtomicU64,
    malformed_records: AtomicU64,
    aws_calls: Mutex<BTreeMap<AwsCallKey, u64>>,
    aws_throttles: AtomicU64,
    http: Mutex<BTreeMap<HttpKey, u64>>,
    /// By method and route template.
    http_seconds: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            runs: Mutex::new(BTreeMap::new()),
            run_seconds: Histogram::new(&RUN_SECONDS_BUCKETS),
            records_scanned: AtomicU64::new(0),
            error_records: AtomicU64::new(0),
            malformed_records: AtomicU64::new(0),
            aws_calls: Mutex::new(
                AWS_OPERATIONS.iter().flat_map(|op| AwsOutcome::ALL.map(|o| ((*op, o), 0))).collect(),
            ),
            aws_throttles: AtomicU64::new(0),
            http: Mutex::new(BTreeMap::new()),
            http_seconds: Mutex::new(BTreeMap::new()),
        }
    }
}

/// What a finished run adds to the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFigures {
    pub records_scanned: u64,
    pub error_records: u64,
    pub malformed_records: u64,
}

/// Gauges read from the store at scrape time; `None` when the store did not answer.
#[derive(Debug, Clone, Default)]
pub struct StoreGauges {
    pub up: bool,
    pub outbox_backlog: Option<i64>,
    pub events_by_state: Vec<(String, i64)>,
    pub active_runs: Option<i64>,
    /// Each enabled inspection and when its newest successful run finished.
    pub last_successes: Option<Vec<(Uuid, Option<DateTime<Utc>>)>>,
}

impl Metrics {
    /// A run ended (in this process) with `status` after `elapsed`.
    pub fn run_finished(&self, status: RunStatus, elapsed: Duration, figures: RunFigures) {
        *self.runs.lock().unwrap_or_else(|e| e.into_inner()).entry(status.as_str()).or_default() += 1;
        self.run_seconds.observe(elapsed);
        self.records_scanned.fetch_add(figures.records_scanned, Ordering::Relaxed);
        self.error_records.fetch_add(figures.error_records, Ordering::Relaxed);
        self.malformed_records.fetch_add(figures.malformed_records, Ordering::Relaxed);
    }

    /// AWS calls a run made (retries included) by operation and outcome.
    pub fn aws_calls(&self, calls: &BTreeMap<AwsCallKey, u64>) {
        let mut all = self.aws_calls.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in calls {
            *all.entry(*key).or_default() += n;
            if key.1 == AwsOutcome::Throttled {
                self.aws_throttles.fetch_add(*n, Ordering::Relaxed);
            }
        }
    }

    /// Runs this process declared interrupted (its own at start-up or shutdown, or other
    /// processes' stale ones).
    pub fn runs_interrupted(&self, n: u64) {
        if n > 0 {
            *self.runs.lock().unwrap_or_else(|e| e.into_inner()).entry(RunStatus::Interrupted.as_str()).or_default() +=
                n;
        }
    }

    /// An HTTP request was answered. `route` must be a route template, never the raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (method.to_string(), route.to_string(), status);
        *self.http.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
        let mut histograms = self.http_seconds.lock().unwrap_or_else(|e| e.into_inner());
        let key = (method.to_string(), route.to_string());
        histograms.entry(key).or_insert_with(|| Histogram::new(&HTTP_SECONDS_BUCKETS)).observe(elapsed);
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self, gauges: &StoreGauges) -> String {
        let mut out = String::with_capacity(4096);
        let p = "cloudtrail_inspector";
        help(&mut out, &format!("{p}_build_info"), "gauge", "Always 1; the labels say which build answers.");
        let _ = writeln!(out, "{p}_build_info{{version=\"{}\"}} 1", escape(env!("CARGO_PKG_VERSION")));
        process::render(&mut out);
        self.render_runs(&mut out);
        self.render_http(&mut out);
        render_store(&mut out, gauges);
        out
    }

    fn render_runs(&self, out: &mut String) {
        let p = "cloudtrail_inspector";
        help(out, &format!("{p}_runs_total"), "counter", "Runs that ended in this process, by final status.");
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for status in ["succeeded", "partial", "failed", "interrupted"] {
            let n = runs.get(status).copied().unwrap_or(0);
            let _ = writeln!(out, "{p}_runs_total{{status=\"{status}\"}} {n}");
        }

        help(out, &format!("{p}_run_duration_seconds"), "histogram", "Time from a run's start to its end.");
        self.run_seconds.render(out, &format!("{p}_run_duration_seconds"), "");

        for (name, help_text, v) in [
            ("records_scanned_total", "CloudTrail records read by runs.", &self.records_scanned),
            ("error_records_total", "Error records among them.", &self.error_records),
            ("malformed_records_total", "Records that could not be parsed and were skipped.", &self.malformed_records),
            ("aws_throttles_total", "CloudWatch Logs calls answered with throttling.", &self.aws_throttles),
        ] {
            help(out, &format!("{p}_{name}"), "counter", help_text);
            let _ = writeln!(out, "{p}_{name} {}", v.load(Ordering::Relaxed));
        }
        help(
            out,
            &format!("{p}_aws_calls_total"),
            "counter",
            "CloudWatch Logs API calls made by runs, retries included, by operation and outcome (ok, throttled, error).",
        );
        for ((operation, outcome), n) in self.aws_calls.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "{p}_aws_calls_total{{operation=\"{}\",outcome=\"{}\"}} {n}",
                escape(operation),
                outcome.as_str()
            );
        }
    }

    fn render_http(&self, out: &mut String) {
        let p = "cloudtrail_inspector";
        help(
            out,
            &format!("{p}_http_requests_total"),
            "counter",
            "HTTP requests by method, route template and status.",
        );
        for ((method, route, status), n) in self.http.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "{p}_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        help(
            out,
            &format!("{p}_http_request_duration_seconds"),
            "histogram",
            "Time to answer HTTP requests, by method and route template.",
        );
        for ((method, route), h) in self.http_seconds.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels = format!("method=\"{}\",route=\"{}\"", escape(method), escape(route));
            h.render(out, &format!("{p}_http_request_duration_seconds"), &labels);
        }
    }
}

/// The gauges read from the database at this scrape.
fn render_store(out: &mut String, gauges: &StoreGauges) {
    let p = "cloudtrail_inspector";
    help(out, &format!("{p}_store_up"), "gauge", "1 when the database answered this scrape.");
    let _ = writeln!(out, "{p}_store_up {}", u8::from(gauges.up));
    if let Some(n) = gauges.outbox_backlog {
        help(out, &format!("{p}_outbox_backlog"), "gauge", "Guance events waiting for delivery (all instances).");
        let _ = writeln!(out, "{p}_outbox_backlog {n}");
    }
    if gauges.up {
        help(out, &format!("{p}_events"), "gauge", "Guance events recorded, by delivery state (all instances).");
        // Every state, 0 when no event is in it: a series that appears only once it is
        // non-zero cannot be alerted on by its rate or absence.
        let mut states: BTreeMap<&str, i64> = DELIVERY_STATES.iter().map(|s| (s.as_str(), 0)).collect();
        for (state, n) in &gauges.events_by_state {
            states.insert(state, *n);
        }
        for (state, n) in states {
            let _ = writeln!(out, "{p}_events{{delivery_state=\"{}\"}} {n}", escape(state));
        }
    }
    if let Some(n) = gauges.active_runs {
        help(out, &format!("{p}_active_runs"), "gauge", "Runs queued or running (all instances).");
        let _ = writeln!(out, "{p}_active_runs {n}");
    }
    if let Some(rows) = &gauges.last_successes {
        help(
            out,
            &format!("{p}_inspection_last_success_timestamp_seconds"),
            "gauge",
            "When each enabled inspection's newest successful run finished (Unix time; 0: never). \
                 Alert on time() minus this (all instances).",
        );
        for (id, at) in rows {
            let secs = at.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
            let _ = writeln!(out, "{p}_inspection_last_success_timestamp_seconds{{inspection_id=\"{id}\"}} {secs}");
        }
    }
}

/// The process' own series under their conventional names (`process_*`, as every Prometheus
/// client library writes them), read from `/proc` at scrape time. Only on Linux; elsewhere
/// they are left out.
mod process {
    use std::fmt::Write;

    #[cfg(target_os = "linux")]
    pub fn render(out: &mut String) {
        let Some(s) = read() else { return };
        for (name, kind, text, value) in [
            ("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", s.cpu_seconds),
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", s.resident_bytes),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", s.virtual_bytes),
            ("process_open_fds", "gauge", "Open file descriptors.", s.open_fds),
            ("process_max_fds", "gauge", "Limit of open file descriptors.", s.max_fds),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                s.start_time,
            ),
        ] {
            super::help(out, name, kind, text);
            let _ = writeln!(out, "{name} {value}");
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn render(_out: &mut String) {}

    #[cfg(target_os = "linux")]
    struct Stats {
        cpu_seconds: f64,
        resident_bytes: f64,
        virtual_bytes: f64,
        open_fds: f64,
        max_fds: f64,
        start_time: f64,
    }

    #[cfg(target_os = "linux")]
    fn read() -> Option<Stats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses: fields are counted
        // after its closing parenthesis, from field 3 on.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as f64;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok()))?;
        let max_fds = std::fs::read_to_string("/proc/self/limits").ok()?.lines().find_map(|l| {
            let rest = l.strip_prefix("Max open files")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })?;
        Some(Stats {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
            max_fds,
            start_time: boot_time + field(22)? / ticks,
        })
    }
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape backslash, quote and newline (the exposition format's rule).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_series_render() {
        let m = Metrics::default();
        m.run_finished(
            RunStatus::Partial,
            Duration::from_millis(700),
            RunFigures { records_scanned: 10, ..Default::default() },
        );
        m.aws_calls(&BTreeMap::from([
            (("FilterLogEvents", AwsOutcome::Ok), 2),
            (("FilterLogEvents", AwsOutcome::Throttled), 1),
        ]));
        m.run_finished(RunStatus::Succeeded, Duration::from_secs(20), RunFigures::default());
        m.runs_interrupted(2);
        m.http_request("GET", "/api/v1/runs/{id}", 200, Duration::from_millis(3));
        let text = m.render(&StoreGauges {
            up: true,
            outbox_backlog: Some(4),
            events_by_state: vec![("pending".into(), 4)],
            active_runs: Some(0),
            last_successes: Some(vec![
                (Uuid::nil(), None),
                (Uuid::from_u128(1), DateTime::from_timestamp_millis(1_768_464_000_500)),
            ]),
        });
        for line in [
            "cloudtrail_inspector_runs_total{status=\"partial\"} 1",
            "cloudtrail_inspector_runs_total{status=\"interrupted\"} 2",
            "cloudtrail_inspector_run_duration_seconds_bucket{le=\"0.5\"} 0",
            "cloudtrail_inspector_run_duration_seconds_bucket{le=\"1\"} 1",
            "cloudtrail_inspector_run_duration_seconds_bucket{le=\"30\"} 2",
            "cloudtrail_inspector_run_duration_seconds_bucket{le=\"+Inf\"} 2",
            "cloudtrail_inspector_run_duration_seconds_count 2",
            "cloudtrail_inspector_records_scanned_total 10",
            "cloudtrail_inspector_aws_throttles_total 1",
            "cloudtrail_inspector_aws_calls_total{operation=\"FilterLogEvents\",outcome=\"ok\"} 2",
            "cloudtrail_inspector_aws_calls_total{operation=\"FilterLogEvents\",outcome=\"throttled\"} 1",
            "cloudtrail_inspector_aws_calls_total{operation=\"StartQuery\",outcome=\"error\"} 0",
            "cloudtrail_inspector_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/runs/{id}\",le=\"0.005\"} 1",
            "cloudtrail_inspector_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/runs/{id}\"} 1",
            "cloudtrail_inspector_events{delivery_state=\"sent\"} 0",
            "cloudtrail_inspector_inspection_last_success_timestamp_seconds{inspection_id=\"00000000-0000-0000-0000-000000000000\"} 0",
            "cloudtrail_inspector_inspection_last_success_timestamp_seconds{inspection_id=\"00000000-0000-0000-0000-000000000001\"} 1768464000.5",
            "cloudtrail_inspector_http_requests_total{method=\"GET\",route=\"/api/v1/runs/{id}\",status=\"200\"} 1",
            "cloudtrail_inspector_outbox_backlog 4",
            "cloudtrail_inspector_events{delivery_state=\"pending\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let build = format!("cloudtrail_inspector_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(text.lines().any(|l| l == build), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
