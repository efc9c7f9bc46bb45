//! cloudtrail-inspector watches AWS CloudTrail — in the CloudWatch Logs log groups that
//! receive it, or in CloudTrail's files — for new kinds of errors: denied and unauthorized
//! calls, failed console sign-ins, error codes nobody has seen before. It keeps the history of
//! what it found and raises it as Guance events.
//!
//! # A tour, from the bottom layer up
//!
//! - [`engine`]: pure logic. CloudTrail record parsing (a fast hand-written reader and a serde
//!   one), error selection, message templates, fingerprints and clusters, CIS rules,
//!   access-key activity. No I/O, no clock, no database.
//! - [`model`]: the domain types the layers share — inspections and their settings (alert
//!   policy and severity rules among them), runs, clusters, events, schedules, validation —
//!   and time at stored precision ([`model::time`]).
//! - [`synth`]: a deterministic generator of realistic CloudTrail records for benchmarks, the
//!   bundled sample and the `generate` command.
//! - [`crypto`]: sealing of the credentials inspections hold; [`metrics`]: this instance's
//!   Prometheus counters; [`share`]: the signed share links (and sessions) of the web console.
//! - [`store`]: the database (Postgres or SQLite), one portable SQL implementation.
//! - [`source`]: where records come from: CloudWatch Logs through the AWS SDK
//!   ([`source::cloudwatch`]), CloudTrail files on disk ([`source::files`]), or the files in
//!   a trail's S3 bucket ([`source::s3`]), windows selecting them by delivery time.
//! - [`guance`]: Guance's OpenAPI and OpenWay clients, event rendering (markdown, `df_*`
//!   fields, line protocol) and the alerting state machine. Pure rendering and a client.
//! - [`outbox`]: from runs to Guance: the events a finished run records, and the workers that
//!   deliver them and keep each inspection and its registration in Guance in sync, both ways
//!   (edits made in Guance studio are adopted).
//! - [`runner`]: turns a trigger into a run: plans each log group's window, reads it through
//!   a source, lets the engine cluster it, tells new clusters from known ones, and stores the
//!   result and its events in one transaction.
//! - [`scheduler`]: starts inspections on their cron schedule, each slot once across instances.
//! - [`http`]: the REST API (axum), the Func-style trigger routes, OpenAPI and Swagger UI,
//!   and the web console ([`http::console`]): server-rendered pages of the same history.
//! - [`config`]: every flag and environment variable; [`server`]: the process — wiring,
//!   serving, draining on a stop signal, key rotation; [`scan`]: the `scan` command, one run
//!   without a server. [`instance`] and [`telemetry`]: who this process is, and its logs.
//!
//! # Architecture invariants
//!
//! - **Layers point one way.** A module uses only modules listed before it above:
//!   engine ← model ← store; guance ← model, engine; runner, outbox and scheduler on top of
//!   those; http on top of them; config, server and scan at the very top. There are no
//!   import cycles between modules (`tests/it/architecture.rs` checks the `crate::` paths of
//!   every file outside test code against this order).
//! - **The engine and guance do no I/O of their own kind.** The engine never touches a
//!   file, socket, clock or database: callers hand it bytes and times, which is why it can be
//!   benchmarked and fuzzed alone. Guance code talks HTTP to Guance and nothing else: it
//!   never reads or writes the database.
//! - **The database holds what must hold across instances.** One active run per
//!   inspection, a cluster's identity, one claim per schedule slot: constraints in the
//!   schema, not locks in memory.
//! - **A finished run is one transaction**: its counters, clusters, access keys, watermarks
//!   and outgoing events commit together or not at all; network I/O happens before it opens.
//! - **Secrets never leave**: credentials are [`model::Secret`]s (no `Debug`/`Display` of
//!   the value), sealed at rest, write-only in the API.

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
pub mod share;
pub mod source;
pub mod store;
pub mod synth;
pub mod telemetry;
