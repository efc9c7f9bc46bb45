//! The fake CloudWatch Logs server that the service's tests talk to, tested on its own with
//! the real AWS SDK client: if the fake drifts from AWS's behaviour, the service's tests
//! would prove nothing.

mod faults;
mod filter_log_events;
mod helpers;
mod insights;
mod unit_filter_pattern;
mod unit_insights;
