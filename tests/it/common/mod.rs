//! Shared test helpers: real stores (a throwaway Postgres database, a SQLite file), the app
//! called in-process, the real CloudTrail sample data, and the fake CloudWatch Logs and Guance
//! servers.
#![allow(dead_code)]

pub mod data;
pub mod fake_cwl;
pub mod fake_guance;
pub mod fake_s3;
pub mod logs;
pub mod pg_cluster;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::Connection;
use tower::ServiceExt;

use cloudtrail_inspector::http::{AppState, HttpSettings};
use cloudtrail_inspector::runner::RunnerSettings;
use cloudtrail_inspector::source::cloudwatch::CloudWatchSettings;
use cloudtrail_inspector::store::{self, DynStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub const BACKENDS: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

/// Where the tests' Postgres lives; `scripts/ensure-postgres.sh` starts one there.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_string())
}

/// The encryption key of every test store (a second store on the same database needs it).
pub fn test_cipher() -> Arc<cloudtrail_inspector::crypto::SecretBox> {
    Arc::new(cloudtrail_inspector::crypto::SecretBox::new(&[42; 32], &[]))
}

/// Keeps a test's database alive: the SQLite file's directory, or the Postgres database name.
pub struct StoreGuard {
    _dir: Option<tempfile::TempDir>,
    pub url: String,
}

/// A fresh, migrated store of the given backend (see [`empty_database`]).
pub async fn fresh_store(backend: Backend) -> (DynStore, StoreGuard) {
    let guard = empty_database(backend).await;
    let connections = match backend {
        Backend::Sqlite => 4,
        Backend::Postgres => 5,
    };
    let store = store::connect(&guard.url, connections, test_cipher()).await.expect("open the test database");
    store.migrate().await.expect("migrate the test database");
    (store, guard)
}

/// Timings shrunk for tests: fast retries, fast polls, no quota unless a test sets one.
pub fn test_runner_settings() -> RunnerSettings {
    RunnerSettings {
        run_concurrency: 4,
        log_group_concurrency: 4,
        cloudwatch: CloudWatchSettings {
            filter_log_events_rps: 0.0,
            insights_poll_interval: Duration::from_millis(20),
            max_attempts: 4,
            retry_base: Duration::from_millis(5),
            call_timeout: Duration::from_secs(5),
            insights_max_rows: 10_000,
            ..CloudWatchSettings::default()
        },
        s3: cloudtrail_inspector::source::s3::S3Settings {
            max_attempts: 4,
            max_throttled_attempts: 8,
            retry_base: Duration::from_millis(5),
            call_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        heartbeat_interval: Duration::from_millis(200),
        stale_after: Duration::from_secs(5),
        ..RunnerSettings::default()
    }
}

/// The app, called in-process through `oneshot`, over a real store.
pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub backend: Backend,
    pub guard: StoreGuard,
}

impl TestApp {
    pub async fn new(backend: Backend) -> Self {
        Self::with_settings(backend, test_runner_settings(), HttpSettings::default()).await
    }

    pub async fn with_settings(backend: Backend, runner: RunnerSettings, http: HttpSettings) -> Self {
        let (store, guard) = fresh_store(backend).await;
        let state = cloudtrail_inspector::server::build_state(store, runner, http);
        let router = cloudtrail_inspector::http::router(state.clone());
        TestApp { state, router, backend, guard }
    }

    /// The app over a store the test opened itself (a throwaway cluster, for instance).
    pub fn over(store: DynStore, url: &str, backend: Backend, runner: RunnerSettings, http: HttpSettings) -> Self {
        let state = cloudtrail_inspector::server::build_state(store, runner, http);
        let router = cloudtrail_inspector::http::router(state.clone());
        TestApp { state, router, backend, guard: StoreGuard { _dir: None, url: url.to_string() } }
    }

    pub fn store(&self) -> &DynStore {
        &self.state.store
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let res = self.router.clone().oneshot(req).await.expect("router never fails");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes().to_vec();
        (status, headers, body)
    }

    /// Sends a JSON request (or none) and parses the JSON answer (Null when empty).
    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        let (status, headers, bytes) = self.send(req.body(body).unwrap()).await;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{uri} answered {status} with non-JSON ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, headers, json)
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, uri, None).await;
        (s, v)
    }

    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::POST, uri, Some(body)).await;
        (s, v)
    }

    pub async fn patch(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::PATCH, uri, Some(body)).await;
        (s, v)
    }

    /// Creates an inspection and returns its JSON; panics unless 201.
    pub async fn create_inspection(&self, body: Value) -> Value {
        let (status, v) = self.post("/api/v1/inspections", body).await;
        assert_eq!(status, StatusCode::CREATED, "create failed: {v}");
        v
    }
}

/// An inspection body reading `groups` from the fake server at `endpoint` with test keys.
pub fn inspection_body(name: &str, groups: &[&str], endpoint: &str) -> Value {
    serde_json::json!({
        "name": name,
        "log_groups": groups,
        "aws": {
            "region": "us-east-1",
            "access_key_id": "AKIATESTTESTTEST0001",
            "secret_access_key": "test-secret-do-not-leak",
            "endpoint_url": endpoint,
        },
    })
}

pub type Shared<T> = Arc<T>;

/// An empty database of the given backend, not migrated. Postgres databases are named with
/// their creation time, and ones older than an hour (left by earlier runs) are dropped on the way.
pub async fn empty_database(backend: Backend) -> StoreGuard {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            StoreGuard { _dir: Some(dir), url }
        }
        Backend::Postgres => {
            let admin_url = pg_admin_url();
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!("cannot reach the test Postgres at {admin_url} ({e}); run scripts/ensure-postgres.sh or set TEST_DATABASE_URL")
            });
            let now = chrono::Utc::now().timestamp();
            let old: Vec<(String,)> = sqlx::query_as("select datname from pg_database where datname like 'cti_test_%'")
                .fetch_all(&mut admin)
                .await
                .unwrap_or_default();
            for (name,) in old {
                let created: i64 = name.split('_').nth(2).and_then(|s| s.parse().ok()).unwrap_or(now);
                if now - created > 3600 {
                    let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                        .execute(&mut admin)
                        .await;
                }
            }
            let name = format!("cti_test_{now}_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("create database \"{name}\"")).execute(&mut admin).await.expect("create database");
            let _ = admin.close().await;
            let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin_url);
            StoreGuard { _dir: None, url: format!("{base}/{name}") }
        }
    }
}

/// A second service instance (its own runner and router) over the database of `app`.
pub async fn second_instance(app: &TestApp) -> (AppState, Router) {
    let store = store::connect(&app.guard.url, 4, test_cipher()).await.expect("connect the shared database");
    let state = cloudtrail_inspector::server::build_state(store, test_runner_settings(), HttpSettings::default());
    let router = cloudtrail_inspector::http::router(state.clone());
    (state, router)
}

/// Polls `GET /api/v1/runs/{id}` until the run has ended, and returns it.
pub async fn wait_for_run(app: &TestApp, run_id: &str) -> Value {
    for _ in 0..300 {
        let (status, run) = app.get(&format!("/api/v1/runs/{run_id}")).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if !matches!(run["status"].as_str(), Some("queued" | "running")) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} did not end");
}
