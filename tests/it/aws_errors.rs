//! What a run says when CloudWatch Logs cannot be read: one sentence on the run and on the
//! log group naming what failed and what to set or check — never the SDK's debug text. Each
//! failure as it happens: no credentials at all, credentials AWS refuses, an endpoint nobody
//! answers at, a log group that does not exist, access denied.

use std::process::Command;

use axum::http::StatusCode;
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::{FakeCwl, Fault};
use crate::common::{Backend, TestApp, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";

/// One sentence a person can act on: no SDK debug text, no line breaks, bounded, and saying
/// each of `wants`.
fn assert_actionable(message: &str, wants: &[&str]) {
    for debug in ["DispatchFailure", "ConnectorError", "{", "}", "\n", "Some(", ", source:"] {
        assert!(!message.contains(debug), "debug text {debug:?} in {message:?}");
    }
    assert!(message.chars().count() < 700, "{message}");
    for want in wants {
        assert!(message.contains(want), "{want:?} missing from {message:?}");
    }
}

/// A failed run's message and its one log group's, after asserting both are actionable.
fn messages(run: &Value, wants: &[&str]) -> (String, String) {
    assert_eq!(run["status"], "failed", "{run}");
    let group = run["log_groups"][0]["error"].as_str().unwrap_or_else(|| panic!("no group error: {run}")).to_string();
    let whole = run["error"].as_str().unwrap_or_else(|| panic!("no run error: {run}")).to_string();
    assert_actionable(&group, wants);
    assert_actionable(&whole, wants);
    assert!(whole.starts_with("1 of 1 log groups could not be read: "), "{whole}");
    (whole, group)
}

async fn fake_with_records() -> FakeCwl {
    let fake = FakeCwl::start().await;
    let end = (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), end - TimeDelta::minutes(58)));
    fake
}

async fn run_once(app: &TestApp, body: Value) -> Value {
    let insp = app.create_inspection(body).await;
    let (status, run) =
        app.post(&format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let (_, stored) = app.get(&format!("/api/v1/runs/{}", run["id"].as_str().unwrap())).await;
    assert_eq!(stored["error"], run["error"]);
    stored
}

fn no_baseline(mut body: Value) -> Value {
    body["baseline_days"] = json!(0);
    body
}

#[tokio::test]
async fn a_log_group_that_does_not_exist_is_named_with_its_region() {
    let fake = fake_with_records().await;
    let app = TestApp::new(Backend::Sqlite).await;
    let run = run_once(&app, no_baseline(inspection_body("unknown", &["no-such-trail"], &fake.endpoint()))).await;
    let (_, group) = messages(&run, &["log group no-such-trail does not exist in region us-east-1", "check"]);
    assert!(group.contains("ResourceNotFoundException"), "AWS's own code stays searchable: {group}");
}

#[tokio::test]
async fn access_denied_names_the_group_and_the_permissions_to_grant() {
    let fake = fake_with_records().await;
    fake.fail_log_group(GROUP, Fault::AccessDenied);
    let app = TestApp::new(Backend::Postgres).await;
    let run = run_once(&app, no_baseline(inspection_body("denied", &[GROUP], &fake.endpoint()))).await;
    messages(
        &run,
        &[
            &format!("access denied to log group {GROUP}"),
            "is not authorized to perform: logs:FilterLogEvents",
            "allow the credentials logs:FilterLogEvents, logs:StartQuery and logs:GetQueryResults",
        ],
    );
}

#[tokio::test]
async fn credentials_aws_refuses_are_said_to_be_wrong() {
    let fake = fake_with_records().await;
    fake.fail_log_group(
        GROUP,
        Fault::Custom {
            status: 400,
            type_name: "UnrecognizedClientException".into(),
            message: "The security token included in the request is invalid.".into(),
        },
    );
    let app = TestApp::new(Backend::Sqlite).await;
    let run = run_once(&app, no_baseline(inspection_body("wrong-keys", &[GROUP], &fake.endpoint()))).await;
    messages(
        &run,
        &["AWS refused the credentials", "security token included in the request is invalid", "secret access key"],
    );
    assert!(!run.to_string().contains("test-secret-do-not-leak"));
}

#[tokio::test]
async fn an_endpoint_nobody_answers_at_is_named_after_the_retries() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let app = TestApp::new(Backend::Sqlite).await;
    let run = run_once(&app, no_baseline(inspection_body("unreachable", &[GROUP], &endpoint))).await;
    messages(
        &run,
        &[&format!("could not reach CloudWatch Logs at {endpoint}"), "gave up after 4 attempts", "aws.endpoint_url"],
    );
}

/// `scan` with no credentials anywhere the default chain looks: the environment is cleared,
/// `HOME` has no `~/.aws`, instance metadata is off.
fn scan_without_credentials(args: &[&str], home: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .arg("scan")
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run scan")
}

#[tokio::test]
async fn no_credentials_at_all_says_where_they_were_looked_for() {
    let fake = fake_with_records().await;
    let home = tempfile::tempdir().unwrap();
    let state = format!("sqlite://{}", home.path().join("state.db").display());
    let endpoint = fake.endpoint();
    let target = format!("cloudwatch://us-east-1/{GROUP}");
    let out = {
        let (home, state) = (home.path().to_path_buf(), state.clone());
        tokio::task::spawn_blocking(move || {
            scan_without_credentials(
                &["--endpoint-url", &endpoint, "--state", &state, "--format", "json", "--no-progress", &target],
                &home,
            )
        })
        .await
        .unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "nothing could be read: {stderr}");
    assert_eq!(fake.calls().len(), 0, "no call is sent unsigned");
    let wants = [
        "no AWS credentials found for region us-east-1",
        "AWS_ACCESS_KEY_ID",
        "~/.aws/credentials",
        "profile default",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "instance metadata",
        "aws.access_key_id",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(lines[0].starts_with(&format!("error: {GROUP}: no AWS credentials found")), "{stderr}");
    assert_actionable(lines[0], &wants);

    // The stored run says the same.
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, group) = messages(&run["run"], &wants);
    use sqlx::Connection;
    let mut db = sqlx::SqliteConnection::connect(&state).await.unwrap();
    let (error, log_groups): (String, String) =
        sqlx::query_as("select error, log_groups from runs").fetch_one(&mut db).await.unwrap();
    assert_eq!(error, run["run"]["error"].as_str().unwrap());
    let log_groups: Value = serde_json::from_str(&log_groups).unwrap();
    assert_eq!(log_groups[0]["error"], group.as_str());
}
