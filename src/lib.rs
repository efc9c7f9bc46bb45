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
//! - [`store`]: the database (Postgres or SQLite), one portable SQL implementation.
//! - [`model`]: the domain types the layers share; [`config`]: flags and environment.

pub mod config;
pub mod engine;
pub mod http;
pub mod model;
pub mod runner;
pub mod source;
pub mod store;
pub mod synth;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::ServeArgs;
use crate::http::{AppState, HttpSettings};
use crate::runner::Runner;
use crate::source::cloudwatch::CloudWatchFactory;
use crate::store::DynStore;

/// Builds the application state from parts that tests can also supply.
pub fn build_state(store: DynStore, runner_settings: config::RunnerSettings, http: HttpSettings) -> AppState {
    let sources = Arc::new(CloudWatchFactory::new(runner_settings.clone()));
    let runner = Runner::new(store.clone(), sources, runner_settings);
    AppState { store, runner, settings: Arc::new(http) }
}

/// `cloudtrail-inspector serve`: open the store, migrate, listen until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let db = args.database()?;
    let store = store::connect(&db.database_url, db.database_max_connections).await?;
    store.migrate().await?;
    tracing::info!(backend = store.backend(), "database ready");
    let http = HttpSettings {
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        run_wait_timeout: Duration::from_secs(args.run_wait_timeout_secs),
        max_body_bytes: args.max_body_bytes,
        public_url: args.public_url(),
    };
    let state = build_state(store, args.runner(), http);
    state.runner.housekeeping().await;
    let _housekeeping = state.runner.spawn_housekeeping();
    let app = http::router(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, "listening; Swagger UI at /swagger-ui/");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
