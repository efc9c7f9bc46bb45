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

/// The metrics of one service instance.
#[derive(Debug)]
pub struct Metrics {
    runs: Mutex<BTreeMap<&'static str, u64>>,
    run_seconds: Histogram,
    records_scanned: AtomicU64,
    error_records: AtomicU64,
    malformed_records: AtomicU64,
    aws_calls: AtomicU64,
    aws_throttles: AtomicU64,
    http: Mutex<BTreeMap<HttpKey, u64>>,
    http_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            runs: Mutex::new(BTreeMap::new()),
            run_seconds: Histogram::new(&RUN_SECONDS_BUCKETS),
            records_scanned: AtomicU64::new(0),
            error_records: AtomicU64::new(0),
            malformed_records: AtomicU64::new(0),
            aws_calls: AtomicU64::new(0),
            aws_throttles: AtomicU64::new(0),
            http: Mutex::new(BTreeMap::new()),
            http_seconds: Histogram::new(&HTTP_SECONDS_BUCKETS),
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

    /// AWS calls a run made (retries included), and how many of them were throttled.
    pub fn aws_calls(&self, calls: u64, throttled: u64) {
        self.aws_calls.fetch_add(calls, Ordering::Relaxed);
        self.aws_throttles.fetch_add(throttled, Ordering::Relaxed);
    }

    /// Runs this process declared interrupted (its own at start-up or shutdown, or other
    /// processes' stale ones).
    pub fn runs_interrupted(&self, n: u64) {
        if n > 0 {
            *self.runs.lock().unwrap_or_else(|e| e.into_inner()).entry(RunStatus::Interrupted.as_str()).or_default() +=
                n;
        }
    }

    /// An HTTP request was answered. `route` must be a route template, never the raw path;
    /// the method is folded into [`method_label`]'s closed set here.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (method_label(method).to_string(), route.to_string(), status);
        *self.http.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
        self.http_seconds.observe(elapsed);
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self, gauges: &StoreGauges) -> String {
        let mut out = String::with_capacity(4096);
        let p = "cloudtrail_inspector";

        help(&mut out, &format!("{p}_runs_total"), "counter", "Runs that ended in this process, by final status.");
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for status in ["succeeded", "partial", "failed", "interrupted"] {
            let n = runs.get(status).copied().unwrap_or(0);
            let _ = writeln!(out, "{p}_runs_total{{status=\"{status}\"}} {n}");
        }

        help(&mut out, &format!("{p}_run_duration_seconds"), "histogram", "Time from a run's start to its end.");
        self.run_seconds.render(&mut out, &format!("{p}_run_duration_seconds"), "");

        for (name, help_text, v) in [
            ("records_scanned_total", "CloudTrail records read by runs.", &self.records_scanned),
            ("error_records_total", "Error records among them.", &self.error_records),
            ("malformed_records_total", "Records that could not be parsed and were skipped.", &self.malformed_records),
            ("aws_calls_total", "CloudWatch Logs API calls made by runs, retries included.", &self.aws_calls),
            ("aws_throttles_total", "CloudWatch Logs calls answered with throttling.", &self.aws_throttles),
        ] {
            help(&mut out, &format!("{p}_{name}"), "counter", help_text);
            let _ = writeln!(out, "{p}_{name} {}", v.load(Ordering::Relaxed));
        }

        help(
            &mut out,
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
        help(&mut out, &format!("{p}_http_request_duration_seconds"), "histogram", "Time to answer HTTP requests.");
        self.http_seconds.render(&mut out, &format!("{p}_http_request_duration_seconds"), "");

        help(&mut out, &format!("{p}_store_up"), "gauge", "1 when the database answered this scrape.");
        let _ = writeln!(out, "{p}_store_up {}", u8::from(gauges.up));
        if let Some(n) = gauges.outbox_backlog {
            help(
                &mut out,
                &format!("{p}_outbox_backlog"),
                "gauge",
                "Guance events waiting for delivery (all instances).",
            );
            let _ = writeln!(out, "{p}_outbox_backlog {n}");
        }
        if !gauges.events_by_state.is_empty() {
            help(
                &mut out,
                &format!("{p}_events"),
                "gauge",
                "Guance events recorded, by delivery state (all instances).",
            );
            for (state, n) in &gauges.events_by_state {
                let _ = writeln!(out, "{p}_events{{delivery_state=\"{}\"}} {n}", escape(state));
            }
        }
        if let Some(n) = gauges.active_runs {
            help(&mut out, &format!("{p}_active_runs"), "gauge", "Runs queued or running (all instances).");
            let _ = writeln!(out, "{p}_active_runs {n}");
        }
        out
    }
}

/// The label of a request method: one of HTTP's nine methods, or `OTHER`. A client may send
/// any token as a method (up to the whole request line); as a label each new one would be a
/// series kept, and rendered on every scrape, for the life of the process.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
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
        m.aws_calls(3, 1);
        m.run_finished(RunStatus::Succeeded, Duration::from_secs(20), RunFigures::default());
        m.runs_interrupted(2);
        m.http_request("GET", "/api/v1/runs/{id}", 200, Duration::from_millis(3));
        let text = m.render(&StoreGauges {
            up: true,
            outbox_backlog: Some(4),
            events_by_state: vec![("pending".into(), 4)],
            active_runs: Some(0),
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
            "cloudtrail_inspector_http_requests_total{method=\"GET\",route=\"/api/v1/runs/{id}\",status=\"200\"} 1",
            "cloudtrail_inspector_outbox_backlog 4",
            "cloudtrail_inspector_events{delivery_state=\"pending\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            m.http_request(&format!("M{i}{}", "x".repeat(1000)), "unmatched", 405, Duration::ZERO);
        }
        m.http_request("get", "unmatched", 405, Duration::ZERO);
        m.http_request("GET", "unmatched", 404, Duration::ZERO);
        let text = m.render(&StoreGauges::default());
        let series: Vec<&str> =
            text.lines().filter(|l| l.starts_with("cloudtrail_inspector_http_requests_total")).collect();
        assert_eq!(
            series,
            [
                "cloudtrail_inspector_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
                "cloudtrail_inspector_http_requests_total{method=\"OTHER\",route=\"unmatched\",status=\"405\"} 101",
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
