//! cloudtrail-inspector watches AWS CloudTrail, through the CloudWatch Logs log groups that
//! receive it, for new kinds of errors — denied and unauthorized calls, failed console
//! sign-ins, error codes nobody has seen before — and keeps the history of what it found.
//!
//! A tour, in the direction data flows:
//! - [`http`]: the REST API (axum), its OpenAPI document and Swagger UI.
//! - [`runner`]: turns a trigger into a run: picks each log group's window, reads it, tells
//!   new clusters from known ones, stores the result in one transaction.
//! - [`source`]: where records come from ([`source::cloudwatch`] through the AWS SDK).
//! - [`engine`]: pure logic: CloudTrail record parsing, error selection, message templates,
//!   fingerprints and clusters, access-key activity. No I/O.
//! - [`scheduler`]: starts inspections on their cron schedule, each slot once across instances.
//! - [`store`]: the database (Postgres or SQLite), one portable SQL implementation.
//! - [`guance`]: Guance OpenAPI/OpenWay clients, event rendering, alerting state.
//! - [`model`]: the domain types the layers share; [`config`]: flags and environment.

pub mod config;
pub mod crypto;
pub mod engine;
pub mod guance;
pub mod http;
pub mod instance;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod runner;
pub mod scan;
pub mod scheduler;
pub mod server;
pub mod source;
pub mod store;
pub mod synth;
pub mod telemetry;
