//! What operators see: `/metrics` in Prometheus' text format (open, counting runs, records,
//! AWS calls and throttles, HTTP requests by route template, and the shared outbox), and
//! logs where each run's lines carry its id and each failure is one line.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::fake_cwl::{FakeCwl, Fault};
use crate::common::logs::{Logs, field};
use crate::common::{Backend, TestApp, data, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";

async fn metrics(app: &TestApp) -> String {
    let (status, headers, body) = app.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    String::from_utf8(body).unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_runs_records_aws_calls_and_requests_by_route_template() {
    let fake = FakeCwl::start().await;
    let end = (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), end - TimeDelta::minutes(58)));
    let http = cloudtrail_inspector::http::HttpSettings {
        api_tokens: cloudtrail_inspector::http::auth::Tokens::new(&[cloudtrail_inspector::model::Secret::new("t0ken")]),
        ..Default::default()
    };
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    let authed = |req: axum::http::request::Builder| req.header("authorization", "Bearer t0ken");

    // Open without a token, like the probes.
    let before = metrics(&app).await;
    assert_eq!(value(&before, "cloudtrail_inspector_runs_total{status=\"succeeded\"}"), 0.0);
    assert_eq!(value(&before, "cloudtrail_inspector_store_up"), 1.0);

    let mut body = inspection_body("metrics", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let req = authed(Request::post("/api/v1/inspections"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, _, created) = app.send(req).await;
    assert_eq!(status, StatusCode::CREATED);
    let insp: Value = serde_json::from_slice(&created).unwrap();
    let id = insp["id"].as_str().unwrap();
    let trigger_id = insp["trigger_id"].as_str().unwrap();

    fake.fail_next("FilterLogEvents", 1, Fault::Throttling);
    let req = authed(Request::post(format!("/api/v1/inspections/{id}/runs"))).body(Body::empty()).unwrap();
    let (status, _, run) = app.send(req).await;
    assert_eq!(status, StatusCode::OK);
    let run: Value = serde_json::from_slice(&run).unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");
    // A Func-style call (its URL holds a credential) and an unknown path.
    app.send(Request::get(format!("/api/v1/al/{trigger_id}/s?dry_run=true")).body(Body::empty()).unwrap()).await;
    app.send(Request::get(format!("/api/v1/no/such/{trigger_id}")).body(Body::empty()).unwrap()).await;
    app.send(Request::get("/api/v1/inspections").body(Body::empty()).unwrap()).await; // 401

    let text = metrics(&app).await;
    assert_eq!(value(&text, "cloudtrail_inspector_runs_total{status=\"succeeded\"}"), 2.0, "the run and the Func call");
    assert_eq!(value(&text, "cloudtrail_inspector_run_duration_seconds_count"), 2.0);
    // The Func call's window starts where the first run's ended: nothing more to read.
    assert_eq!(value(&text, "cloudtrail_inspector_records_scanned_total"), 300.0, "{text}");
    assert_eq!(value(&text, "cloudtrail_inspector_aws_throttles_total"), 1.0);
    let calls = fake.call_count("FilterLogEvents") + fake.call_count("StartQuery") + fake.call_count("GetQueryResults");
    let by_call: f64 = text
        .lines()
        .filter(|l| l.starts_with("cloudtrail_inspector_aws_calls_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(by_call, calls as f64, "every call counted once, by operation and outcome");
    let throttled = r#"cloudtrail_inspector_aws_calls_total{operation="FilterLogEvents",outcome="throttled"}"#;
    assert_eq!(value(&text, throttled), 1.0);
    let duration = r#"cloudtrail_inspector_http_request_duration_seconds_count{method="POST",route="/api/v1/inspections/{id}/runs"}"#;
    assert_eq!(value(&text, duration), 1.0, "durations by method and route");
    let last_success =
        format!("cloudtrail_inspector_inspection_last_success_timestamp_seconds{{inspection_id=\"{id}\"}}");
    let finished = chrono::DateTime::parse_from_rfc3339(run["finished_at"].as_str().unwrap()).unwrap();
    assert!((value(&text, &last_success) - finished.timestamp_millis() as f64 / 1000.0).abs() < 1.0, "{text}");
    assert_eq!(value(&text, "cloudtrail_inspector_outbox_backlog"), 0.0);
    assert_eq!(value(&text, "cloudtrail_inspector_active_runs"), 0.0);
    assert!(value(&text, "cloudtrail_inspector_events{delivery_state=\"not_sent\"}") >= 1.0, "{text}");
    for series in [
        r#"cloudtrail_inspector_http_requests_total{method="POST",route="/api/v1/inspections",status="201"}"#,
        r#"cloudtrail_inspector_http_requests_total{method="POST",route="/api/v1/inspections/{id}/runs",status="200"}"#,
        r#"cloudtrail_inspector_http_requests_total{method="GET",route="/api/v1/al/{trigger_id}/{format}",status="200"}"#,
        r#"cloudtrail_inspector_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"cloudtrail_inspector_http_requests_total{method="GET",route="/api/v1/inspections",status="401"}"#,
    ] {
        assert_eq!(value(&text, series), 1.0, "{series}");
    }
    assert!(!text.contains(trigger_id), "routes are templates, never credentials");
    assert!(
        text.lines().filter(|l| l.contains(id)).all(|l| l.starts_with(&last_success)),
        "an inspection's id is a label of its own series only"
    );
    // Every sample line is `name{labels} number`, as Prometheus parses it.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test]
async fn each_run_logs_with_its_id_and_each_failure_once() {
    let logs = Logs::capture();
    let fake = FakeCwl::start().await;
    let mut settings = crate::common::test_runner_settings();
    settings.cloudwatch.max_attempts = 2;
    let app = TestApp::with_settings(Backend::Sqlite, settings, Default::default()).await;
    let mut body = inspection_body("logged", &[GROUP, "missing-group"], &fake.endpoint());
    body["baseline_days"] = json!(0);
    fake.create_log_group(GROUP);
    let insp = app.create_inspection(body).await;
    fake.fail_log_group(GROUP, Fault::ServerError);
    let (status, run) =
        app.post(&format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "failed", "{run}");
    let run_id = run["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mine: Vec<Value> =
        logs.lines().into_iter().filter(|l| field(l, "run_id").and_then(Value::as_str) == Some(run_id)).collect();
    let messages: Vec<&str> = mine.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in ["run started", "log group could not be read", "run finished"] {
        assert!(messages.contains(&expected), "{expected:?} carries the run id: {messages:?}");
    }
    // Two log groups failed: one line each, and nothing else at warning or above.
    let problems: Vec<&Value> = mine.iter().filter(|l| l["level"] == "WARN" || l["level"] == "ERROR").collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    let groups: Vec<&str> = problems.iter().filter_map(|l| l["log_group"].as_str()).collect();
    assert_eq!(groups.len(), 2);
    assert!(groups.contains(&GROUP) && groups.contains(&"missing-group"));
    // Other tests of this binary log too: an error line about this inspection must carry
    // the run id.
    let insp_id = insp["id"].as_str().unwrap();
    let unattributed: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|l| l["level"] == "ERROR" && l.to_string().contains(insp_id) && field(l, "run_id").is_none())
        .collect();
    assert!(unattributed.is_empty(), "{unattributed:?}");
}
