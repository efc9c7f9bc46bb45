//! How runs read CloudWatch Logs at volume: FilterLogEvents windows cut into time slices,
//! throttling that outlasts the ordinary retry budget, and Logs Insights windows cut by their
//! matched records and queried concurrently. Counts and outcomes only, never timings.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::fake_cwl::{FakeConfig, FakeCwl, Fault};
use crate::common::{Backend, TestApp, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-busy";

/// The default window of a first run started now: `[end − 60 min, end)`, end = now − 10 min.
fn window_end() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap()
}

fn record(i: usize, error: bool) -> String {
    let mut r = json!({
        "eventVersion": "1.08",
        "eventTime": "2026-01-01T00:00:00Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "awsRegion": "us-east-1",
        "recipientAccountId": "123456789012",
        "eventID": format!("00000000-0000-0000-0000-{i:012}"),
        "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::123456789012:user/u{}", i % 7)},
        "sourceIPAddress": format!("203.0.113.{}", i % 200),
    });
    if error {
        r["errorCode"] = json!("Client.UnauthorizedOperation");
        // Each message distinct, so Insights gives one row per record.
        r["errorMessage"] = json!(format!("You are not authorized to perform this operation. Request {i}"));
    }
    r.to_string()
}

/// `errors` error records (and as many other records) over the default window of a first
/// run, in bunches sharing one millisecond so that pages end inside a bunch.
fn load(fake: &FakeCwl, errors: usize) -> usize {
    let start = (window_end() - TimeDelta::minutes(59)).timestamp_millis();
    let span = 58 * 60 * 1000;
    let bunches = errors.div_ceil(7);
    let mut events = Vec::new();
    for i in 0..errors {
        let ts = start + (i / 7) as i64 * span / bunches as i64;
        events.push((ts, record(i, true)));
        events.push((ts, record(errors + i, false)));
    }
    fake.put_events(GROUP, "123456789012_CloudTrail_us-east-1", events);
    errors
}

async fn run(app: &TestApp, strategy: &str, fake: &FakeCwl) -> Value {
    let mut body = inspection_body(strategy, &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["strategy"] = json!(strategy);
    let insp = app.create_inspection(body).await;
    let (status, r) = app.post(&format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{r}");
    r
}

#[tokio::test]
async fn filter_log_events_slices_a_long_read_and_reads_every_record_once() {
    // 20 events a page: 1,000 errors need 50 pages. The test settings set no pace, so any
    // call is slower than the pace and slicing pays.
    let fake = FakeCwl::start_with(FakeConfig { max_page_events: 20, ..FakeConfig::default() }).await;
    let errors = load(&fake, 1_000);
    let app = TestApp::new(Backend::Sqlite).await;
    let r = run(&app, "filter_log_events", &fake).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["error_records"], errors as i64, "no error record lost or read twice at a slice boundary");
    assert_eq!(r["records_scanned"], errors as i64);
    let pages = fake.call_count("FilterLogEvents");
    let least = errors.div_ceil(20);
    // Each of the slices may end with a part-filled page; nothing else costs extra.
    let slices = cloudtrail_inspector::source::cloudwatch::FILTER_SLICES;
    assert!(pages >= least && pages <= least + slices + 1, "{pages} pages for {least} full ones");
}

#[tokio::test]
async fn a_short_read_is_not_sliced() {
    let fake = FakeCwl::start_with(FakeConfig { max_page_events: 20, ..FakeConfig::default() }).await;
    let errors = load(&fake, 50);
    let app = TestApp::new(Backend::Sqlite).await;
    let r = run(&app, "filter_log_events", &fake).await;
    assert_eq!(r["error_records"], errors as i64);
    assert_eq!(fake.call_count("FilterLogEvents"), 3, "50 errors in pages of 20, one chain");
}

#[tokio::test]
async fn throttling_past_the_ordinary_retry_budget_does_not_fail_the_run() {
    let fake = FakeCwl::start().await;
    let errors = load(&fake, 30);
    // The test settings allow 4 attempts for 5xx and timeouts; throttles have their own budget.
    fake.fail_next("FilterLogEvents", 9, Fault::Throttling);
    fake.fail_next(
        "StartQuery",
        3,
        Fault::Custom {
            status: 400,
            type_name: "LimitExceededException".into(),
            message: "Account maximum query concurrency limit of [30] reached.".into(),
        },
    );
    let app = TestApp::new(Backend::Sqlite).await;
    let r = run(&app, "filter_log_events", &fake).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["error_records"], errors as i64);
    assert_eq!(fake.throttled_count(), 9);
    assert_eq!(fake.call_count("FilterLogEvents"), 10);
    assert_eq!(fake.call_count("StartQuery"), 4, "too many running queries is waited out too");
    assert!(r["report"]["access_keys"].as_array().is_some());
}

#[tokio::test]
async fn server_errors_still_give_up_after_the_ordinary_budget() {
    let fake = FakeCwl::start().await;
    load(&fake, 30);
    fake.fail_next("FilterLogEvents", 100, Fault::ServerError);
    let app = TestApp::new(Backend::Sqlite).await;
    let r = run(&app, "filter_log_events", &fake).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["log_groups"][0]["error"].as_str().unwrap().contains("gave up after 4 attempts"), "{r}");
    assert_eq!(fake.call_count("FilterLogEvents"), 4);
}

#[tokio::test]
async fn insights_cuts_a_capped_window_by_its_matched_records_and_queries_the_parts_at_once() {
    let fake = FakeCwl::start_with(FakeConfig {
        max_query_rows: 40,
        query_duration: std::time::Duration::from_millis(200),
        ..FakeConfig::default()
    })
    .await;
    // 600 distinct error rows: the first answer is capped at 40 with 600 records matched.
    let errors = load(&fake, 600);
    let mut settings = crate::common::test_runner_settings();
    settings.cloudwatch.insights_max_rows = 40;
    let app = TestApp::with_settings(Backend::Sqlite, settings, Default::default()).await;
    let r = run(&app, "logs_insights", &fake).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["error_records"], errors as i64, "no row lost to the cap");
    // 600 matched / (40 / 2) = 30 parts at once: about 20 records, so ≤ 40 rows, each. By
    // halving it would take 1 + 2 + 4 + 8 + 16 + 32 queries, scanning the window 6 times.
    let error_queries =
        fake.calls().iter().filter(|c| c.query.as_deref().is_some_and(|q| q.contains("errorCode"))).count();
    assert!((31..=40).contains(&error_queries), "{error_queries} error queries");
    assert!(fake.max_running_queries() > 1, "the parts ran concurrently");
    assert!(fake.max_running_queries() <= cloudtrail_inspector::source::cloudwatch::QUERY_CONCURRENCY);
}

/// An answer whose rows lack the fields the queries compute (an emulator without `stats`,
/// a changed schema) is not a window without errors or keys: each group says so and the run
/// is partial, under either strategy.
#[tokio::test]
async fn insights_rows_without_the_asked_fields_are_not_a_silent_success() {
    let omit = vec!["ct_count".to_string(), "ct_last".to_string()];
    let fake = FakeCwl::start_with(FakeConfig { omit_result_fields: omit, ..FakeConfig::default() }).await;
    let errors = load(&fake, 30);
    let at = (window_end() - TimeDelta::minutes(30)).timestamp_millis();
    let keyed = (0..3).map(|i| {
        let mut r: Value = serde_json::from_str(&record(10_000 + i, false)).unwrap();
        r["userIdentity"]["accessKeyId"] = json!(format!("AKIAKEYKEYKEY000000{i}"));
        (at, r.to_string())
    });
    fake.put_events(GROUP, "keys", keyed);
    let app = TestApp::new(Backend::Sqlite).await;

    let r = run(&app, "logs_insights", &fake).await;
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(r["error_records"], 0, "nothing could be counted: {r}");
    let warnings = r["log_groups"][0]["warnings"].as_array().unwrap();
    let rows =
        format!("{errors} of {errors} Logs Insights rows lacked the fields the query asked for (ct_count, ct_last)");
    assert!(warnings.iter().any(|w| w.as_str().unwrap().starts_with(&rows)), "{warnings:?}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains(&format!("{errors} Logs Insights rows lacked the fields the query asked for")), "{error}");
    assert!(error.contains("access-key activity could not be read: 3 of 3 Logs Insights rows lacked"), "{error}");

    // FilterLogEvents reads the errors whole; only the key query's rows are short.
    let r = run(&app, "filter_log_events", &fake).await;
    assert_eq!((&r["status"], &r["error_records"]), (&json!("partial"), &json!(errors)), "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.starts_with("access-key activity could not be read: 3 of 3 Logs Insights rows lacked the fields the query asked for (ct_last)"), "{error}");
}
