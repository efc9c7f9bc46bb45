//! Logging set-up: human-readable or JSON lines, filtered by `RUST_LOG`, with the few targets
//! that log credentials capped whatever `RUST_LOG` asks for.

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The AWS SDK and sqlx are chatty at `info`; their warnings still show.
const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_cloudwatchlogs=warn,sqlx=warn";

/// Targets that write credentials in clear at `trace`, capped at `debug` whatever `RUST_LOG`
/// says, so that "never logged" holds at every level: the AWS SDK logs each signed request
/// with its headers (`x-amz-security-token`, the inspection's session token) and every
/// response body (an STS AssumeRole answer is a set of fresh credentials); SigV4 logs the
/// canonical request, token included; `aws-config` logs a `credential_process` command
/// unredacted; the HTTP clients below them see every header.
const CREDENTIAL_TARGETS: [&str; 10] = [
    "aws_sigv4",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_config",
    "aws_sdk_cloudwatchlogs",
    "aws_sdk_sts",
    "hyper_util",
    "hyper",
    "h2",
];

/// Everything at any level, but [`CREDENTIAL_TARGETS`] at `debug` at most.
fn credential_caps() -> Targets {
    CREDENTIAL_TARGETS
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, target| t.with_target(*target, LevelFilter::DEBUG))
}

/// Colours only where a person reads them: on a terminal, unless `NO_COLOR` is set. In a
/// file or a log collector escape codes are noise in every line.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    install(format, filter);
}

/// For one-shot commands whose output is the report: errors only, unless `RUST_LOG` says more.
/// The report itself names every log group or file that could not be read; the same warning
/// logged beside it would say it twice.
pub fn init_quiet() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    install(LogFormat::Pretty, filter);
}

fn install(format: LogFormat, filter: EnvFilter) {
    let filter = filter.and(credential_caps());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour());
    let layer = match format {
        LogFormat::Pretty => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_current_span(true).with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::Filter;

    #[test]
    fn credential_targets_are_capped_at_debug() {
        let caps = credential_caps();
        for (target, level, shown) in [
            ("aws_sigv4::http_request::sign", Level::TRACE, false),
            ("aws_smithy_runtime::client::orchestrator", Level::TRACE, false),
            ("aws_smithy_runtime::client::orchestrator", Level::DEBUG, true),
            ("cloudtrail_inspector::runner", Level::TRACE, true),
        ] {
            assert_eq!(caps.would_enable(target, &level), shown, "{target} {level}");
        }
        // `Filter` is what the layer uses; checked to be implemented for the combination.
        fn is_filter<F: Filter<tracing_subscriber::Registry>>(_: &F) {}
        is_filter(&EnvFilter::new("trace").and(caps));
    }
}
