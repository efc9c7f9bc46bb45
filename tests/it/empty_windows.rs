//! A log group that yields no CloudTrail record at all for a window, not even a non-error
//! one, is said to be so on the group and the run's report — the trail may have stopped
//! delivering — and then kept quiet once the group is known to be idle.

use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::FakeCwl;
use crate::common::{Backend, TestApp, inspection_body};

const SILENT: &str = "aws-cloudtrail-logs-silent";
const BUSY: &str = "aws-cloudtrail-logs-123837392027";
const WARNING: &str = "no CloudTrail records in this window: is the trail delivering where this reads (log group, bucket prefix or directory)?";

async fn run(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, r) = app.post(&format!("/api/v1/inspections/{id}/runs"), body).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    r
}

fn group<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["log_groups"].as_array().unwrap().iter().find(|g| g["name"] == name).unwrap()
}

#[tokio::test]
async fn an_empty_window_is_said_until_the_group_is_known_to_be_idle() {
    let fake = FakeCwl::start().await;
    fake.create_log_group(SILENT);
    let end = (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    fake.put_events(BUSY, "s", data::shift_to(&data::invictus(), end - TimeDelta::minutes(58)));
    let app = TestApp::new(Backend::Postgres).await;
    let mut body = inspection_body("two groups", &[BUSY, SILENT], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let id = app.create_inspection(body).await["id"].as_str().unwrap().to_string();

    let first = run(&app, &id, json!({})).await;
    assert_eq!(first["status"], "succeeded", "a warning, not a failure: {first}");
    assert_eq!(group(&first, SILENT)["warnings"], json!([WARNING]), "{first}");
    assert_eq!(group(&first, BUSY)["warnings"], json!([]), "{first}");
    assert_eq!(first["report"]["warnings"], json!([format!("{SILENT}: {WARNING}")]));

    // The next default windows (a second or so each) are empty too: said on the next two,
    // then quiet, as the group is now known to be idle.
    let mut said = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = run(&app, &id, json!({})).await;
        said.push(group(&r, SILENT)["warnings"].as_array().unwrap().len());
        if said.len() == 2 {
            let w = group(&r, SILENT)["warnings"][0].as_str().unwrap().to_string();
            assert!(w.ends_with("(3 windows in a row; said once a day while it stays so)"), "{w}");
        }
    }
    assert_eq!(said, [1, 1, 0], "warned on the first three empty windows only");

    // An explicit window is always said, as someone asked about it.
    let window = json!({
        "window_start": (end - TimeDelta::hours(3)).to_rfc3339(),
        "window_end": (end - TimeDelta::hours(2)).to_rfc3339(),
    });
    let explicit = run(&app, &id, window).await;
    assert_eq!(group(&explicit, SILENT)["warnings"], json!([WARNING]), "{explicit}");
}

#[tokio::test]
async fn scan_of_an_empty_log_group_warns_on_stderr() {
    let fake = FakeCwl::start().await;
    fake.create_log_group(SILENT);
    let endpoint = fake.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
            .args(["scan", "--endpoint-url", &endpoint, "--no-progress", "--baseline-days", "0"])
            .arg(format!("cloudwatch://us-east-1/{SILENT}"))
            .env_remove("DATABASE_URL")
            .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST0001")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "a warning is not a failure: {stderr}");
    assert!(stderr.contains(&format!("warning: {WARNING}")), "{stderr}");
}
