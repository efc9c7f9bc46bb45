//! Postgres restarted under a running service: while it is down every request that needs it
//! gets 503 with the JSON error body (logged once), probes and metrics say so, and when it is
//! back requests succeed again without restarting the service. A throwaway cluster on its own
//! port is stopped and started, so other tests' database is never touched.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::logs::{Logs, field};
use crate::common::pg_cluster::PgCluster;
use crate::common::{Backend, TestApp, test_cipher, test_runner_settings};

#[tokio::test]
async fn requests_fail_cleanly_while_postgres_is_down_and_work_again_when_it_is_back() {
    let Some(pg) = PgCluster::start() else {
        eprintln!("skipped: Postgres 15 binaries are not installed");
        return;
    };
    let logs = Logs::capture();
    let store = cloudtrail_inspector::store::connect(&pg.url(), 4, test_cipher()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let app = TestApp::over(store, &pg.url(), Backend::Postgres, test_runner_settings(), Default::default());
    let body = json!({"name": "survives", "log_groups": ["g"], "aws": {"region": "us-east-1"}});
    let created = app.create_inspection(body).await;

    pg.stop();
    let mut request_ids = Vec::new();
    for (method, uri, body) in [
        (Method::GET, "/api/v1/inspections".to_string(), None),
        (Method::GET, format!("/api/v1/inspections/{}", created["id"].as_str().unwrap()), None),
        (
            Method::POST,
            "/api/v1/inspections".to_string(),
            Some(json!({"name": "later", "log_groups": ["g"], "aws": {"region": "us-east-1"}})),
        ),
    ] {
        let (status, headers, v) = app.call(method, &uri, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {v}");
        assert_eq!(v["error"]["code"], "unavailable", "{v}");
        assert_eq!(v["error"]["message"], "the database is unavailable; try again shortly");
        let id = headers["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(v["error"]["request_id"], id.as_str(), "the body names the request, for the logs");
        request_ids.push(id);
    }
    let (status, v) = app.get("/readyz").await;
    assert_eq!((status, v["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
    let (status, _, metrics) = app.send(axum::http::Request::get("/metrics").body(Default::default()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "metrics never depend on the database");
    assert!(String::from_utf8_lossy(&metrics).lines().any(|l| l == "cloudtrail_inspector_store_up 0"));

    // One error line per failed request, carrying its request id.
    let errors = logs.at("ERROR");
    for id in &request_ids {
        let mine: Vec<_> =
            errors.iter().filter(|l| field(l, "request_id").and_then(|v| v.as_str()) == Some(id.as_str())).collect();
        assert_eq!(mine.len(), 1, "request {id} logged {} error lines: {mine:?}", mine.len());
    }

    pg.start_again();
    let mut back = false;
    for _ in 0..40 {
        if app.get("/api/v1/inspections").await.0 == StatusCode::OK {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(back, "requests succeed again without restarting the service");
    let (status, v) = app.get("/api/v1/inspections").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["items"][0]["name"], "survives");
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);

    // A quick restart between two requests: the pool's stale connections are noticed and
    // replaced, so the next request simply works.
    pg.stop();
    pg.start_again();
    let (status, v) = app.get("/api/v1/inspections").await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// A statement in flight when Postgres goes down fails with the server's own error
/// ("terminating connection due to administrator command", SQLSTATE 57P01), not a socket
/// error: that too is the database being unavailable, a 503, not an internal error.
#[tokio::test]
async fn a_statement_cut_by_a_shutdown_is_unavailable_not_internal() {
    use cloudtrail_inspector::http::error::ApiError;
    use cloudtrail_inspector::store::StoreError;
    use sqlx::Connection;

    let Some(pg) = PgCluster::start() else {
        eprintln!("skipped: Postgres 15 binaries are not installed");
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.expect("connect");
    let slow = tokio::spawn(async move { sqlx::query("select pg_sleep(30)").execute(&mut conn).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop();
    let err = StoreError::from(slow.await.unwrap().expect_err("the statement was cut"));
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(ApiError::from(err).status_code(), StatusCode::SERVICE_UNAVAILABLE);
}

/// Postgres goes away while a run reads and is back a few seconds later: the run keeps what it
/// read, records its outcome once the database answers, and ends `succeeded`, not `running`
/// until another process calls it `interrupted`.
#[tokio::test]
async fn a_run_records_its_outcome_when_the_database_is_back() {
    use crate::common::data;
    use crate::common::fake_cwl::{FakeConfig, FakeCwl};
    use chrono::{TimeDelta, Utc};
    const GROUP: &str = "aws-cloudtrail-logs-123837392027";
    let Some(pg) = PgCluster::start() else {
        eprintln!("skipped: Postgres 15 binaries are not installed");
        return;
    };
    let logs = Logs::capture();
    // Every AWS answer takes a while, so the database goes away in the middle of the reading.
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(700), ..FakeConfig::default() }).await;
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), Utc::now() - TimeDelta::minutes(57)));
    let store = cloudtrail_inspector::store::connect(&pg.url(), 4, test_cipher()).await.expect("connect");
    store.migrate().await.expect("migrate");
    // Nobody may call the run dead meanwhile: only its own outcome may end it.
    let mut settings = test_runner_settings();
    settings.stale_after = Duration::from_secs(600);
    let app = TestApp::over(store, &pg.url(), Backend::Postgres, settings, Default::default());
    let mut body = crate::common::inspection_body("outage", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["delivery_delay_minutes"] = json!(0);
    let created = app.create_inspection(body).await;
    let (status, run) =
        app.post(&format!("/api/v1/inspections/{}/runs?wait=false", created["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        if app.get(&format!("/api/v1/runs/{run_id}")).await.1["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    pg.stop();
    // Down until the run has finished reading and found the database gone.
    let waiting = |l: &serde_json::Value| {
        field(l, "run_id").and_then(|v| v.as_str()) == Some(run_id.as_str())
            && l["message"].as_str().is_some_and(|m| m.contains("recorded when it is back"))
    };
    let mut found = false;
    for _ in 0..300 {
        if logs.at("WARN").iter().any(waiting) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the run never found the database gone");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start_again();

    let mut last = serde_json::Value::Null;
    for _ in 0..120 {
        let (status, run) = app.get(&format!("/api/v1/runs/{run_id}")).await;
        if status == StatusCode::OK && !matches!(run["status"].as_str(), Some("queued" | "running")) {
            last = run;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(last["status"], "succeeded", "{last}");
    assert!(last["records_scanned"].as_i64().unwrap() > 0, "{last}");
    let (status, _) = app.get(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK);
}
