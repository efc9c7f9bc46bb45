//! CloudWatch Logs failing in ways runs must survive: calls that hang past their timeout, and
//! a log group deleted while a run pages through it. Each ends the group's read with the
//! reason, retries a bounded number of times, keeps the watermark where the unread window
//! starts, and lets the next run read that window.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::{FakeConfig, FakeCwl, Fault};
use crate::common::{Backend, TestApp, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";
const OTHER: &str = "other-trail";

fn first_window_end() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap()
}

/// The invictus records (300 errors among 2,900) shifted into a first run's window.
fn invictus_events() -> Vec<(i64, String)> {
    data::shift_to(&data::invictus(), first_window_end() - TimeDelta::minutes(58))
}

async fn run(app: &TestApp, id: &str) -> Value {
    let (status, v) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "run failed: {v}");
    v
}

fn group<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["log_groups"].as_array().unwrap().iter().find(|g| g["name"] == name).unwrap()
}

fn calls_for(fake: &FakeCwl, operation: &str, group: &str) -> usize {
    fake.calls().iter().filter(|c| c.operation == operation && c.log_groups.iter().any(|g| g == group)).count()
}

#[tokio::test]
async fn calls_that_hang_time_out_a_bounded_number_of_times_and_the_window_is_read_later() {
    let fake = FakeCwl::start().await;
    fake.put_events(GROUP, "s", invictus_events());
    let mut settings = crate::common::test_runner_settings();
    // Long enough for an answered call on a loaded machine (the second run below), far
    // shorter than a hanging one.
    settings.cloudwatch.call_timeout = Duration::from_millis(2000);
    settings.cloudwatch.max_attempts = 3;
    let app = TestApp::with_settings(Backend::Sqlite, settings, Default::default()).await;
    let mut body = inspection_body("hanging", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let insp = app.create_inspection(body).await;
    let id = insp["id"].as_str().unwrap();

    // Each call hangs 20 s and would then be answered: without the timeouts the run would
    // succeed after a minute. The status and the error say the calls were cut short.
    fake.fail_log_group(GROUP, Fault::Hang(Duration::from_secs(20)));
    let started = std::time::Instant::now();
    let first = run(&app, id).await;
    assert!(started.elapsed() < Duration::from_secs(20), "timeouts cut the hanging calls short");
    assert_eq!(first["status"], "failed", "{first}");
    let err = group(&first, GROUP)["error"].as_str().unwrap();
    assert!(err.contains("timed out") && err.contains("gave up after 3 attempts"), "{err}");
    assert_eq!(calls_for(&fake, "FilterLogEvents", GROUP), 3, "retries are bounded");

    // CloudWatch answers again: the next run reads the same window, and finds everything.
    fake.clear_faults();
    let second = run(&app, id).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(group(&second, GROUP)["window_start"], group(&first, GROUP)["window_start"]);
    assert_eq!(second["error_records"], 300);
}

#[tokio::test]
async fn a_log_group_deleted_between_pages_keeps_its_window_for_the_next_run() {
    for backend in crate::common::BACKENDS {
        // 300 error records in pages of 40: the group disappears after the second page.
        let fake = FakeCwl::start_with(FakeConfig { max_page_events: 40, ..FakeConfig::default() }).await;
        fake.put_events(GROUP, "s", invictus_events());
        let at = first_window_end() - TimeDelta::minutes(5);
        let other = json!({"eventTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "kms.amazonaws.com",
            "eventName": "Decrypt", "awsRegion": "us-east-1", "recipientAccountId": "123837392027",
            "errorCode": "AccessDenied", "errorMessage": "not allowed"});
        fake.put_events(OTHER, "s", [(at.timestamp_millis(), other.to_string())]);
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("deleted", &[GROUP, OTHER], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let id = insp["id"].as_str().unwrap();

        fake.delete_log_group_after_pages(GROUP, 2);
        let first = run(&app, id).await;
        assert_eq!(first["status"], "partial", "{first}");
        let g = group(&first, GROUP);
        assert_eq!(g["status"], "failed");
        assert!(g["error"].as_str().unwrap().contains("ResourceNotFoundException"), "{g}");
        assert_eq!(g["records_scanned"], 0, "pages read before the failure are not half-counted");
        assert_eq!(first["error_records"], 1, "only the intact group counts");
        assert_eq!(calls_for(&fake, "FilterLogEvents", GROUP), 3, "a missing group is not retried");
        assert!(first["error"].as_str().unwrap().contains("1 of 2 log groups"), "{first}");

        // The group comes back (recreated, CloudTrail delivering again): its unread window is
        // read by the next run, while the intact group moves on.
        fake.put_events(GROUP, "s", invictus_events());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = run(&app, id).await;
        assert_eq!(second["status"], "succeeded", "{second}");
        assert_eq!(group(&second, GROUP)["window_start"], g["window_start"], "the unread window is read again");
        assert_eq!(group(&second, GROUP)["error_records"], 300);
        assert_eq!(group(&second, OTHER)["window_start"], first["window_end"]);
    }
}
