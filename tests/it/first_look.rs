//! "New" means one thing everywhere: the first look at a log group, whatever its window,
//! learns the days before it, so old errors are known and only errors nobody saw are new —
//! in runs, in `new_since`, and in the counts a run reports.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::FakeCwl;
use crate::common::{BACKENDS, TestApp, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";

fn window_end() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap()
}

/// The account's errors as they were two days ago and again this hour (the invictus records
/// twice), and one error nobody saw before: a stratus-red-team record, this hour.
fn recurring_errors(fake: &FakeCwl) -> Value {
    let end = window_end();
    let invictus = data::invictus();
    fake.put_events(GROUP, "old", data::shift_to(&invictus, end - TimeDelta::days(2)));
    fake.put_events(GROUP, "now", data::shift_to(&invictus, end - TimeDelta::minutes(58)));
    let novel = data::stratus()
        .into_iter()
        .find(|r| r["eventName"] == "LeaveOrganization" && r["errorCode"] == "AccessDenied")
        .expect("stratus-red-team's organizations-leave record");
    fake.put_events(GROUP, "now", data::shift_to(std::slice::from_ref(&novel), end - TimeDelta::minutes(20)));
    novel
}

async fn func_call(app: &TestApp, trigger_id: &str, kwargs: Value) -> Value {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/al/{trigger_id}"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&json!({"kwargs": kwargs})).unwrap()))
        .unwrap();
    let (status, _, body) = app.send(req).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn the_first_func_call_with_a_lookback_reads_the_baseline_first() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        let novel = recurring_errors(&fake);
        let app = TestApp::new(backend).await;
        let insp = app.create_inspection(inspection_body("func-first-look", &[GROUP], &fake.endpoint())).await;
        let trigger_id = insp["trigger_id"].as_str().unwrap();

        // Func's `lookback_minutes` is an explicit window; it is still the group's first look.
        let first = func_call(&app, trigger_id, json!({"lookback_minutes": 70})).await;
        assert_eq!(first["status"], "succeeded", "{first}");
        assert_eq!(first["explicit_window"], true);
        assert_eq!(first["log_groups"][0]["baseline_read"], true, "{first}");
        assert_eq!(first["error_records"], 301);
        assert_eq!(first["clusters_new"], 1, "only the error nobody saw before is new: {first}");
        let new = &first["report"]["new_clusters"][0];
        assert_eq!(new["event_name"], novel["eventName"]);
        assert_eq!(new["error_code"], "AccessDenied");
        assert_eq!(first["new_error_records"], 1);

        // The baseline is read once: later calls, explicit or not, read only their window.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = func_call(&app, trigger_id, json!({"lookback_minutes": 70})).await;
        assert_eq!(second["log_groups"][0]["baseline_read"], false, "{second}");
        assert_eq!(second["clusters_new"], 0);
        let id = insp["id"].as_str().unwrap();
        let (status, third) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{third}");
        assert_eq!(third["log_groups"][0]["baseline_read"], false, "{third}");
        assert_eq!(third["clusters_new"], 0, "{third}");
        assert_eq!(third["explicit_window"], false);
    }
}

#[tokio::test]
async fn an_explicit_window_of_the_api_on_a_new_group_reads_the_baseline_that_ends_where_it_starts() {
    let fake = FakeCwl::start().await;
    recurring_errors(&fake);
    let app = TestApp::new(crate::common::Backend::Sqlite).await;
    let insp = app.create_inspection(inspection_body("api-first-look", &[GROUP], &fake.endpoint())).await;
    let id = insp["id"].as_str().unwrap();
    let end = window_end();
    let start = end - TimeDelta::minutes(70);
    let body = json!({"window_start": start.to_rfc3339(), "window_end": end.to_rfc3339(), "dry_run": true});

    // A dry run reads the baseline too, and learns nothing: the next look reads it again.
    for _ in 0..2 {
        let (status, dry) = app.post(&format!("/api/v1/inspections/{id}/runs"), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{dry}");
        assert_eq!(dry["log_groups"][0]["baseline_read"], true, "{dry}");
        assert_eq!(dry["clusters_new"], 1, "{dry}");
    }
    let (_, known) = app.get(&format!("/api/v1/inspections/{id}/clusters")).await;
    assert_eq!(known["items"].as_array().unwrap().len(), 0, "dry runs learn nothing");

    let body = json!({"window_start": start.to_rfc3339(), "window_end": end.to_rfc3339()});
    let (_, run) = app.post(&format!("/api/v1/inspections/{id}/runs"), body).await;
    assert_eq!(run["log_groups"][0]["baseline_read"], true, "{run}");
    assert_eq!(run["clusters_new"], 1, "{run}");
    // The baseline ended where the window starts: what it saw is known, and counted once.
    let (_, known) = app.get(&format!("/api/v1/inspections/{id}/clusters?limit=200")).await;
    let total: i64 = known["items"].as_array().unwrap().iter().map(|c| c["total_count"].as_i64().unwrap()).sum();
    assert_eq!(total, 300 + 300 + 1, "two days ago, this hour, and the novel error");
}

#[tokio::test]
async fn new_since_lists_only_what_was_reported_new_and_the_baseline_counts_all_it_taught() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        recurring_errors(&fake);
        let app = TestApp::new(backend).await;
        let insp = app.create_inspection(inspection_body("new-since", &[GROUP], &fake.endpoint())).await;
        let id = insp["id"].as_str().unwrap();
        let (status, run) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["clusters_new"], 1, "{run}");
        let total = run["clusters_total"].as_i64().unwrap();
        // The baseline saw every invictus cluster; the window saw them again and one more.
        assert_eq!(run["baseline_clusters"], total - 1, "{run}");

        let since = run["created_at"].as_str().unwrap().replace('+', "%2B");
        let (_, fresh) = app.get(&format!("/api/v1/inspections/{id}/clusters?new_since={since}&limit=200")).await;
        let fresh = fresh["items"].as_array().unwrap();
        assert_eq!(fresh.len(), 1, "only the cluster reported new: {fresh:?}");
        assert_eq!(fresh[0]["event_name"], "LeaveOrganization");
        assert_eq!(fresh[0]["baseline"], false);

        let (_, all) = app.get(&format!("/api/v1/inspections/{id}/clusters?limit=200")).await;
        let all = all["items"].as_array().unwrap();
        assert_eq!(all.len() as i64, total);
        let learned = all.iter().filter(|c| c["baseline"] == true).count() as i64;
        assert_eq!(learned, run["baseline_clusters"].as_i64().unwrap(), "what the baseline taught is marked so");
    }
}
