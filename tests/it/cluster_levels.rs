//! Every view of a cluster shows its severity level and the CIS rules it matches, the same
//! ones its Guance event carries: a run's clusters, an inspection's, one cluster, and
//! clusters stored before ratings were, once the service has started again.

use axum::http::StatusCode;
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::FakeCwl;
use crate::common::{BACKENDS, Backend, TestApp, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";

/// The invictus records in a first run's window, and the failed console sign-ins of
/// panther-analysis: with MFA (CIS CloudWatch.6), and the root user's without (CloudWatch.1
/// and .3).
fn load(fake: &FakeCwl) {
    let end = (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), end - TimeDelta::minutes(58)));
    let panther = data::panther();
    let sign_ins: Vec<Value> = panther
        .iter()
        .filter(|r| r["eventName"] == "ConsoleLogin" && r["responseElements"]["ConsoleLogin"] == "Failure")
        .filter(|r| r["eventTime"].is_string())
        .cloned()
        .collect();
    assert_eq!(sign_ins.len(), 3, "panther-analysis's dated failed sign-ins");
    for (i, r) in sign_ins.iter().enumerate() {
        fake.put_events(GROUP, "s", data::shift_to(std::slice::from_ref(r), end - TimeDelta::minutes(30 + i as i64)));
    }
}

fn find<'a>(clusters: &'a [Value], event_name: &str, error_code: &str) -> &'a Value {
    clusters
        .iter()
        .find(|c| c["event_name"] == event_name && c["error_code"] == error_code)
        .unwrap_or_else(|| panic!("no {event_name} {error_code} cluster"))
}

fn rating(c: &Value) -> (String, Vec<String>) {
    let rules = c["cis_rules"].as_array().unwrap_or_else(|| panic!("cis_rules on {c}"));
    (
        c["level"].as_str().unwrap_or_else(|| panic!("level on {c}")).to_string(),
        rules.iter().map(|r| r.as_str().unwrap().to_string()).collect(),
    )
}

async fn run_clusters(app: &TestApp, run_id: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/api/v1/runs/{run_id}/clusters?limit=200")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

async fn inspection_clusters(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/api/v1/inspections/{id}/clusters?limit=200")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_cluster_view_shows_the_level_and_cis_rules_its_event_carries() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        load(&fake);
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("levels", &[GROUP], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let id = insp["id"].as_str().unwrap();
        let (status, run) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        let run_id = run["id"].as_str().unwrap();

        let of_run = run_clusters(&app, run_id).await;
        let known = inspection_clusters(&app, id).await;
        assert_eq!(of_run.len(), known.len());
        // Under the default severity rules: CIS CloudWatch.1/5/6/7 critical, .2 error, others warning.
        let denied = find(&of_run, "AssumeRole", "AccessDenied");
        assert_eq!(rating(denied), ("error".into(), vec!["CloudWatch.2".into()]));
        let unauthorized = find(&of_run, "DescribeInstanceAttribute", "Client.UnauthorizedOperation");
        assert_eq!(rating(unauthorized), ("error".into(), vec!["CloudWatch.2".into()]));
        let stop = find(&of_run, "StopLogging", "TrailNotFoundException");
        assert_eq!(rating(stop), ("critical".into(), vec!["CloudWatch.5".into()]), "someone tried to stop the trail");
        let missing = find(&of_run, "GetBucketPolicy", "NoSuchBucketPolicy");
        assert_eq!(rating(missing), ("warning".into(), vec![]));
        let sign_ins: Vec<(String, Vec<String>)> =
            of_run.iter().filter(|c| c["error_code"] == "ConsoleLoginFailure").map(rating).collect();
        assert!(sign_ins.contains(&("critical".into(), vec!["CloudWatch.6".into()])), "{sign_ins:?}");
        // CloudWatch.6 watches `errorMessage = "Failed authentication"`, which the root's lacks.
        let root = ("critical".to_string(), vec!["CloudWatch.1".to_string(), "CloudWatch.3".to_string()]);
        assert!(sign_ins.contains(&root), "the root user's, without MFA: {sign_ins:?}");

        // The inspection's clusters and each cluster alone say the same as the run.
        for c in &of_run {
            let fp = c["fingerprint"].as_str().unwrap();
            let k = known.iter().find(|k| k["fingerprint"] == fp).unwrap();
            assert_eq!(rating(k), rating(c), "{fp}");
            let (status, one) = app.get(&format!("/api/v1/clusters/{}", k["id"].as_str().unwrap())).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(rating(&one), rating(c), "{fp}");
        }
        // The report's new clusters too.
        for c in run["report"]["new_clusters"].as_array().unwrap() {
            let fp = c["fingerprint"].as_str().unwrap();
            assert_eq!(rating(c), rating(of_run.iter().find(|r| r["fingerprint"] == fp).unwrap()), "{fp}");
        }

        // The console's pages show the rating stored with the clusters, sample and all: the
        // root's sign-in without MFA (CloudWatch.3) is read from its sample record.
        for page in [format!("/console/inspections/{id}"), format!("/console/runs/{run_id}")] {
            let req = axum::http::Request::get(page.as_str()).body(axum::body::Body::empty()).unwrap();
            let (status, _, html) = crate::console::send(&app.router, req).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert!(html.contains(">CloudWatch.3<") && html.contains(">CloudWatch.6<"), "{page}: {html}");
        }

        // And the Guance event of the account, computed in the same place.
        let event_id = run["report"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["account_id"] == "123837392027")
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .expect("an event for the invictus account");
        let (_, events) = app.get(&format!("/api/v1/inspections/{id}/events?limit=200")).await;
        let event = events["items"].as_array().unwrap().iter().find(|e| e["event_id"] == event_id.as_str()).unwrap();
        let (_, event) = app.get(&format!("/api/v1/events/{}", event["id"].as_str().unwrap())).await;
        let detail = match &event["event"]["detail"] {
            Value::Object(_) => event["event"]["detail"].clone(),
            _ => serde_json::from_str(event["event"]["df_event_detail"].as_str().unwrap()).unwrap(),
        };
        let in_event = detail["new_clusters"].as_array().unwrap();
        assert!(!in_event.is_empty());
        for e in in_event {
            let fp = e["fingerprint"].as_str().unwrap();
            let c = of_run.iter().find(|c| c["fingerprint"] == fp).unwrap();
            assert_eq!(e["level"], c["level"], "{fp}");
            assert_eq!(e["rules"], c["cis_rules"], "{fp}");
        }
    }
}

#[tokio::test]
async fn an_inspections_own_severity_rules_give_the_levels() {
    let fake = FakeCwl::start().await;
    load(&fake);
    let app = TestApp::new(Backend::Sqlite).await;
    let mut body = inspection_body("own-levels", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["severity_rules"] =
        json!({"rules": [{"error_codes": ["NoSuch*"], "level": "critical"}], "default_level": "info"});
    let insp = app.create_inspection(body).await;
    let (_, run) = app.post(&format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap()), json!({})).await;
    let of_run = run_clusters(&app, run["id"].as_str().unwrap()).await;
    let missing = find(&of_run, "GetBucketPolicy", "NoSuchBucketPolicy");
    assert_eq!(rating(missing), ("critical".into(), vec![]));
    let denied = find(&of_run, "AssumeRole", "AccessDenied");
    assert_eq!(rating(denied), ("info".into(), vec!["CloudWatch.2".into()]), "the rules' default, CIS rules kept");
}

/// Clusters written before ratings were stored (their columns null) are rated when the
/// service starts again: known ones, a run's, and its report's.
#[tokio::test]
async fn clusters_stored_before_ratings_are_rated_at_start_up() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        load(&fake);
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("old-rows", &[GROUP], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let id = insp["id"].as_str().unwrap();
        let (_, run) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        let run_id = run["id"].as_str().unwrap();
        let before_run = run_clusters(&app, run_id).await;
        let before_known = inspection_clusters(&app, id).await;
        let (_, before_report) = app.get(&format!("/api/v1/runs/{run_id}")).await;

        // As an older version left them: no ratings anywhere.
        let url = &app.guard.url;
        exec(backend, url, "update clusters set level = null, cis_rules = null").await;
        exec(backend, url, "update run_clusters set level = null, cis_rules = null").await;
        let mut report = before_report["report"].clone();
        for c in report["new_clusters"].as_array_mut().unwrap() {
            let o = c.as_object_mut().unwrap();
            o.remove("level");
            o.remove("cis_rules");
        }
        let report_sql = format!("update runs set report = '{}'", report.to_string().replace('\'', "''"));
        exec(backend, url, &report_sql).await;

        app.store().migrate().await.expect("start-up again");
        assert_eq!(run_clusters(&app, run_id).await, before_run);
        assert_eq!(inspection_clusters(&app, id).await, before_known);
        let (_, after_report) = app.get(&format!("/api/v1/runs/{run_id}")).await;
        assert_eq!(after_report["report"]["new_clusters"], before_report["report"]["new_clusters"]);
    }
}

async fn exec(backend: Backend, url: &str, sql: &str) {
    use sqlx::Connection;
    match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let sql = sql.replace("set report = '", "set report = jsonb '");
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
}
