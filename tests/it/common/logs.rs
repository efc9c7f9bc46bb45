//! Captures the log lines a test's own code emits, as the JSON objects `LOG_FORMAT=json`
//! writes, to check what is logged and how often.
//!
//! The capture is the process-wide subscriber, installed once per test binary, so tests
//! pick their own lines by the ids they know (request ids, run ids). A thread-local one is
//! not enough: tracing caches per call site whether anyone listens, and a test on another
//! thread without the capture can make that answer "no" for a call site both tests hit.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self.0.clone())
    }
}

impl Logs {
    /// The capture of this test binary, installed on first use.
    pub fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "info,aws_smithy_runtime=warn,aws_config=warn,sqlx=warn",
                ))
                .with_writer(logs.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");
            logs
        })
        .clone()
    }

    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Lines at `level` (`ERROR`, `WARN`, …).
    pub fn at(&self, level: &str) -> Vec<Value> {
        self.lines().into_iter().filter(|l| l["level"] == level).collect()
    }
}

/// The value of `field` on the line itself or on any span it was logged in.
pub fn field<'a>(line: &'a Value, field: &str) -> Option<&'a Value> {
    line.get(field).or_else(|| line["spans"].as_array()?.iter().rev().find_map(|s| s.get(field)))
}
