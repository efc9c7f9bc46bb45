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
