//! Run lists stay light: a page of runs leaves out each run's report (kilobytes of keys and
//! clusters), which `GET /api/v1/runs/{id}` has.

use serde_json::json;

use crate::common::fake_cwl::FakeCwl;
use crate::common::{BACKENDS, TestApp, inspection_body};

#[tokio::test]
async fn lists_leave_reports_out_and_a_single_run_has_its_report() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        fake.create_log_group("trail");
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("lists", &["trail"], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let id = insp["id"].as_str().unwrap();
        let (_, run) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert!(run["report"].is_object(), "{run}");

        let (_, page) = app.get(&format!("/api/v1/runs?inspection_id={id}")).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["id"], run["id"]);
        assert_eq!(items[0]["status"], "succeeded");
        assert_eq!(items[0]["log_groups"], run["log_groups"]);
        assert!(items[0]["report"].is_null(), "{backend:?}: {}", items[0]);

        let (_, one) = app.get(&format!("/api/v1/runs/{}", run["id"].as_str().unwrap())).await;
        assert_eq!(one["report"], run["report"], "{backend:?}");
    }
}
