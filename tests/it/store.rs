//! Store behaviour that must hold on both backends and across service instances: one active
//! run per inspection, takeover of a dead process's run, all-or-nothing results.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::common::fake_cwl::{FakeConfig, FakeCwl};
use crate::common::{BACKENDS, TestApp, inspection_body};
use cloudtrail_inspector::model::inspection::{InspectionDraft, NewInspection};
use cloudtrail_inspector::model::run::{RunRequest, RunStatus, Trigger};
use cloudtrail_inspector::model::time;
use cloudtrail_inspector::store::{self, DynStore, FinishedRun, LogGroupState, NewRun, QueueRefused};

async fn inspection(store: &DynStore, name: &str) -> Uuid {
    let input: NewInspection =
        serde_json::from_value(json!({"name": name, "log_groups": ["g"], "aws": {"region": "us-east-1"}})).unwrap();
    let draft = InspectionDraft::from_new(input).unwrap();
    let id = Uuid::now_v7();
    store.create_inspection(id, &draft, time::now()).await.unwrap();
    id
}

fn new_run(inspection_id: Uuid) -> NewRun {
    NewRun {
        id: Uuid::now_v7(),
        inspection_id,
        trigger: Trigger::Api,
        trace_id: None,
        request: RunRequest::default(),
        log_groups: vec!["g".into()],
        owner: "test".into(),
        created_at: time::now(),
    }
}

fn finished(run_id: Uuid, inspection_id: Uuid) -> FinishedRun {
    let now = time::now();
    FinishedRun {
        run_id,
        inspection_id,
        status: RunStatus::Succeeded,
        window_start: Some(now - TimeDelta::hours(1)),
        window_end: Some(now),
        skipped: None,
        finished_at: now,
        records_scanned: 1,
        error_records: 0,
        malformed_records: 0,
        ignored_records: 0,
        warned_records: 0,
        insight_events: 0,
        new_error_records: 0,
        baseline_clusters: 0,
        aws_api_calls: 1,
        log_groups: vec![],
        error: None,
        report: None,
        run_clusters: vec![],
        cluster_writes: vec![],
        key_writes: vec![],
        group_states: vec![LogGroupState {
            log_group: "g".into(),
            watermark: Some(now),
            baseline_until: Some(now),
            ..LogGroupState::default()
        }],
        events: vec![],
        dimensions: vec![],
    }
}

#[tokio::test]
async fn one_active_run_per_inspection() {
    for backend in BACKENDS {
        let (store, _guard) = crate::common::fresh_store(backend).await;
        let id = inspection(&store, "one").await;
        let long_ago = Utc::now() - TimeDelta::hours(1);
        let first = store.queue_run(&new_run(id), long_ago).await.unwrap().expect("queued");
        assert_eq!(first.status, RunStatus::Queued);
        let refused = store.queue_run(&new_run(id), long_ago).await.unwrap();
        assert_eq!(refused.unwrap_err(), QueueRefused::Active { run_id: first.id });
        // Another inspection is not affected.
        let other = inspection(&store, "two").await;
        assert!(store.queue_run(&new_run(other), long_ago).await.unwrap().is_ok());

        assert!(store.finish_run(&finished(first.id, id)).await.unwrap());
        let again = store.queue_run(&new_run(id), long_ago).await.unwrap();
        assert!(again.is_ok(), "a finished run frees the inspection");
        let missing = store.queue_run(&new_run(Uuid::now_v7()), long_ago).await.unwrap();
        assert_eq!(missing.unwrap_err(), QueueRefused::InspectionMissing);
    }
}

#[tokio::test]
async fn a_dead_process_run_is_taken_over_and_its_late_results_dropped() {
    for backend in BACKENDS {
        let (store, _guard) = crate::common::fresh_store(backend).await;
        let id = inspection(&store, "takeover").await;
        let dead = store.queue_run(&new_run(id), Utc::now() - TimeDelta::hours(1)).await.unwrap().unwrap();
        // Its heartbeat is older than "stale before now + 1s": the new trigger wins.
        let stale_before = Utc::now() + TimeDelta::seconds(1);
        let next = store.queue_run(&new_run(id), stale_before).await.unwrap().expect("takes over");
        let old = store.get_run(dead.id).await.unwrap().unwrap();
        assert_eq!(old.status, RunStatus::Interrupted);
        assert!(old.error.unwrap().contains("read again"));
        // The dead run's results, should its process wake up, are refused whole.
        assert!(!store.finish_run(&finished(dead.id, id)).await.unwrap());
        assert!(store.log_group_states(id).await.unwrap().is_empty(), "nothing of it was applied");
        assert!(store.finish_run(&finished(next.id, id)).await.unwrap());
        assert_eq!(store.log_group_states(id).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn stale_runs_are_marked_interrupted() {
    for backend in BACKENDS {
        let (store, _guard) = crate::common::fresh_store(backend).await;
        let a = inspection(&store, "a").await;
        let b = inspection(&store, "b").await;
        let ra = store.queue_run(&new_run(a), Utc::now()).await.unwrap().unwrap();
        let rb = store.queue_run(&new_run(b), Utc::now()).await.unwrap().unwrap();
        // b's process is alive and beats; a's is not.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cut = time::now();
        store.heartbeat(&[rb.id], time::now() + TimeDelta::seconds(1)).await.unwrap();
        assert_eq!(store.interrupt_stale_runs(cut, time::now()).await.unwrap(), 1);
        assert_eq!(store.get_run(ra.id).await.unwrap().unwrap().status, RunStatus::Interrupted);
        assert_eq!(store.get_run(rb.id).await.unwrap().unwrap().status, RunStatus::Queued);
    }
}

#[tokio::test]
async fn fifty_simultaneous_triggers_give_one_run() {
    for backend in BACKENDS {
        let fake =
            FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(200), ..FakeConfig::default() }).await;
        fake.create_log_group("g");
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("crowd", &["g"], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let uri = format!("/api/v1/inspections/{}/runs?wait=false", insp["id"].as_str().unwrap());
        let calls = (0..50).map(|_| app.post(&uri, json!({})));
        let answers = futures::future::join_all(calls).await;
        let accepted: Vec<_> = answers.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).collect();
        let conflicts: Vec<_> = answers.iter().filter(|(s, _)| *s == StatusCode::CONFLICT).collect();
        assert_eq!((accepted.len(), conflicts.len()), (1, 49), "{backend:?}");
        let run_id = &accepted[0].1["id"];
        assert!(conflicts.iter().all(|(_, v)| &v["error"]["details"]["run_id"] == run_id));
    }
}

#[tokio::test]
async fn two_instances_on_one_database_never_run_an_inspection_twice() {
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(300), ..FakeConfig::default() }).await;
    fake.create_log_group("g");
    let a = TestApp::new(crate::common::Backend::Postgres).await;
    // A second instance: its own runner and router over the same database.
    let store_b = store::connect(&a.guard.url, 4, crate::common::test_cipher()).await.unwrap();
    let state_b =
        cloudtrail_inspector::server::build_state(store_b, crate::common::test_runner_settings(), Default::default());
    let router_b = cloudtrail_inspector::http::router(state_b);

    let mut body = inspection_body("shared", &["g"], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let insp = a.create_inspection(body).await;
    let uri = format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap());
    let (status, run) = a.post(&format!("{uri}?wait=false"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    use tower::ServiceExt;
    let req = axum::http::Request::post(&uri).body(axum::body::Body::empty()).unwrap();
    let res = router_b.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["details"]["run_id"], run["id"]);
}

#[tokio::test]
async fn deleting_an_inspection_removes_its_history() {
    for backend in BACKENDS {
        let (store, _guard) = crate::common::fresh_store(backend).await;
        let id = inspection(&store, "gone").await;
        let run = store.queue_run(&new_run(id), Utc::now()).await.unwrap().unwrap();
        assert!(store.finish_run(&finished(run.id, id)).await.unwrap());
        assert!(store.delete_inspection(id).await.unwrap());
        assert!(store.get_run(run.id).await.unwrap().is_none());
        assert!(store.log_group_states(id).await.unwrap().is_empty());
    }
}
