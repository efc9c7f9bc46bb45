//! The service's process: wiring the parts together, serving until a stop signal, draining
//! runs within a grace period, and rotating the key that seals stored secrets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::ServeArgs;
use crate::http::conn::ServeSettings;
use crate::http::{AppState, HttpSettings};
use crate::runner::{Runner, RunnerSettings};
use crate::scheduler::ScheduleSettings;
use crate::source::Sources;
use crate::source::cloudwatch::CloudWatchFactory;
use crate::source::files::FilesAccess;
use crate::store::DynStore;

/// Builds the application state from parts that tests can also supply.
pub fn build_state(store: DynStore, runner_settings: RunnerSettings, http: HttpSettings) -> AppState {
    let files = match &http.files_root {
        Some(root) => FilesAccess::Under(root.clone()),
        None => FilesAccess::Nowhere,
    };
    let sources = Sources {
        cloudwatch: CloudWatchFactory::new(runner_settings.cloudwatch.clone()),
        s3: crate::source::s3::S3Factory::new(
            runner_settings.s3.clone(),
            runner_settings.cloudwatch.allow_metadata_endpoints,
        ),
        file_progress: None,
        files,
        file_jobs: None,
    };
    build_state_with(store, runner_settings, http, sources)
}

pub fn build_state_with(
    store: DynStore,
    runner_settings: RunnerSettings,
    http: HttpSettings,
    sources: Sources,
) -> AppState {
    let mut runner_settings = runner_settings;
    // Events link to console pages: sign them with the key the console checks them with.
    if runner_settings.events.share.is_none() {
        runner_settings.events.share =
            Some(crate::share::ShareLinks { key: http.console.key.clone(), ttl: http.console.share_ttl });
    }
    let runner = Runner::new(store.clone(), Arc::new(sources), runner_settings);
    AppState { store, runner, settings: Arc::new(http) }
}

/// `cloudtrail-inspector serve`: open the store, migrate, listen until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut http = HttpSettings::from(&args);
    if http.api_tokens.is_empty() && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without an API token: anyone who can reach it could read and change \
             inspections. Set API_TOKEN (or --api-token), or listen on 127.0.0.1",
            args.listen
        );
    }
    if !args.listen.ip().is_loopback() {
        if let Some(weakness) = crate::http::auth::Tokens::weakness(&args.api_token) {
            anyhow::bail!("refusing to listen on {}: {weakness}", args.listen);
        }
    }
    http.console.key = Arc::new(crate::share::ShareKey::from_config(args.share_key.as_ref(), &args.db.data_dir)?);
    let store = args.db.open_for_serving(args.db.allow_unreadable_secrets).await?;
    tracing::info!(backend = store.backend(), "database ready");
    let guance = guance_worker(&args)?;
    let identity = crate::instance::identity(args.instance_id.as_deref(), &args.db.data_dir)?;
    let mut runner_settings = RunnerSettings::from(&args);
    runner_settings.instance_id = Some(identity.id.clone());
    let state = build_state(store, runner_settings, http);
    tracing::info!(instance_id = %identity.id, "instance identified");
    // Before anything can start a run: what this instance left active died with its process.
    if let Err(e) = state.runner.recover_own_runs().await {
        tracing::warn!(error = %e, "could not check for runs left by this instance's previous process");
    }
    if let Some(g) = &guance {
        state.runner.attach_guance(g.clone());
    }
    let _guance_worker = guance.map(|g| g.spawn(state.store.clone()));
    state.runner.housekeeping().await;
    let _housekeeping = state.runner.spawn_housekeeping();
    let schedule = ScheduleSettings::from(&args);
    let scheduler = if schedule.enabled {
        let scheduler = crate::scheduler::Scheduler::new(state.store.clone(), state.runner.clone(), schedule);
        tracing::info!(spread_secs = args.schedule_spread_secs, "scheduler on");
        Some(scheduler.spawn())
    } else {
        tracing::info!("scheduler off: inspections run only when triggered");
        None
    };
    let runner = state.runner.clone();
    let store = state.store.clone();
    let app = crate::http::router(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    tracing::info!(address = %args.listen, "listening; console at /console, Swagger UI at /swagger-ui/");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(crate::http::conn::serve(listener, app, ServeSettings::from(&args), async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    tokio::select! {
        ended = &mut server => {
            ended.context("the HTTP server task failed")??;
            anyhow::bail!("the HTTP server stopped by itself");
        }
        () = shutdown_signal() => {}
    }
    drain(&runner, scheduler, stop_tx, server, Duration::from_secs(args.shutdown_grace_secs)).await;
    // Whatever still holds a connection (a delivery, housekeeping) gets a moment; the
    // database files are then left whole, so a copy of the SQLite file is a complete one.
    if tokio::time::timeout(Duration::from_secs(5), store.close()).await.is_err() {
        tracing::warn!("the database connections did not close within 5 s");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long after the grace period answers may still be written; the rest of the half second
/// the shutdown is documented to take after it is the process's exit.
const ANSWER_TIME: Duration = Duration::from_millis(300);

/// The Guance worker (delivery and two-way sync), when Guance is configured.
fn guance_worker(args: &ServeArgs) -> anyhow::Result<Option<Arc<crate::outbox::Guance>>> {
    let Some(settings) = args.guance.settings()? else {
        tracing::warn!("Guance is not configured: events are recorded on runs but not sent");
        return Ok(None);
    };
    let client = crate::guance::client::GuanceClient::new(&settings, Default::default())
        .map_err(|e| anyhow::anyhow!("Guance client: {e}"))?;
    tracing::info!(node = %settings.node, "Guance configured: inspections are registered and events delivered");
    let mut guance = crate::outbox::Guance::new(client, settings.workspace_token.clone(), args.public_url());
    guance.pull_interval = Duration::from_secs(args.guance.guance_sync_interval_secs);
    Ok(Some(Arc::new(guance)))
}

/// A bounded shutdown: close the listener and the scheduler so nothing new starts, let runs in
/// progress finish within `grace`, then mark the ones still going `interrupted` (their windows
/// are read again by the next run) and return, whatever HTTP requests still wait on them.
async fn drain(
    runner: &Arc<Runner>,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    stop_accepting: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + grace;
    let _ = stop_accepting.send(true);
    if let Some(s) = scheduler {
        s.abort();
    }
    let active = runner.active_runs();
    tracing::info!(runs_in_progress = active, grace_secs = grace.as_secs(), "shutting down: no new requests or runs");
    if tokio::time::timeout_at(deadline, runner.wait_idle()).await.is_err() {
        match runner.interrupt_own_runs().await {
            Ok(n) => tracing::warn!(runs = n, "shutdown grace period over: runs still in progress marked interrupted"),
            Err(e) => tracing::warn!(error = %e, "shutdown grace period over; could not mark the runs in progress \
                interrupted (the next start of this instance will)"),
        }
    }
    // Requests whose run just ended need a moment to write their answer; requests waiting on
    // an interrupted run do not get one. With the process's own exit, all of it within half a
    // second after the grace period, as documented.
    let answer_by = (deadline + ANSWER_TIME).max(tokio::time::Instant::now() + Duration::from_millis(50));
    if tokio::time::timeout_at(answer_by, server).await.is_err() {
        tracing::info!("connections still open at the end of the grace period were closed");
    }
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
    tracing::info!("stop signal received");
}

/// Seals every inspection's credentials again with the current key; returns how many
/// inspections were rewritten. Run after adding a new ENCRYPTION_KEY (with the former one in
/// OLD_ENCRYPTION_KEYS); afterwards the old key can be dropped.
pub async fn rotate_secrets(store: &DynStore) -> anyhow::Result<usize> {
    let mut after = None;
    let mut n = 0;
    loop {
        let page = store.list_inspections(&crate::store::InspectionFilter::default(), after, 200).await?;
        let Some(last) = page.last() else { return Ok(n) };
        after = Some((last.created_at, last.id));
        for i in &page {
            if let Some(e) = &i.secrets_error {
                anyhow::bail!(
                    "inspection {} ({}): {e}; add the key that sealed it to OLD_ENCRYPTION_KEYS",
                    i.id,
                    i.name
                );
            }
            let draft = crate::model::inspection::InspectionDraft::of(i);
            store.update_inspection(i.id, &draft, i.updated_at).await?;
            n += 1;
        }
    }
}
