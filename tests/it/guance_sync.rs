//! Guance studio as a place to configure inspections: edits made there (the `configs`
//! filter, the alert policies, the enabled switch) reach the inspection before its next run
//! and on the periodic read-back; both sides edited, the later edit wins; only what changed
//! here is pushed; a checker deleted in Guance leaves the inspection alone until it is
//! registered again. Against the stateful fake Guance.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::fake_cwl::FakeCwl;
use crate::common::fake_guance::{FakeGuance, StudioEdit};
use crate::common::{BACKENDS, Backend, TestApp};
use crate::guance::{GROUP, access_denied_events, app, inspection, run, worker};
use cloudtrail_inspector::outbox::Guance;
use cloudtrail_inspector::scheduler::{ScheduleSettings, Scheduler};
use cloudtrail_inspector::store::SlotOutcome;

/// A worker that reads every registration back on each pass and before every run.
fn sync_worker(fake: &FakeGuance) -> Arc<Guance> {
    let mut g = worker(fake);
    g.pull_interval = Duration::ZERO;
    g.pull_fresh = Duration::ZERO;
    Arc::new(g)
}

/// An app with Guance attached to its runner and an inspection registered there; returns
/// the worker, the inspection id and its `refKey`.
async fn registered(app: &TestApp, fake: &FakeGuance, cwl: &FakeCwl, name: &str) -> (Arc<Guance>, String, String) {
    let g = sync_worker(fake);
    app.state.runner.attach_guance(g.clone());
    let id = inspection(app, cwl, name, json!({})).await;
    g.sync_once(app.store()).await.unwrap();
    let ref_key = format!("cloudtrail-inspector-{id}");
    assert!(fake.checkers().contains_key(&ref_key));
    (g, id, ref_key)
}

async fn shown(app: &TestApp, id: &str) -> Value {
    let (status, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

fn modify_bodies(fake: &FakeGuance) -> Vec<Value> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/self_built_checker/modify")
        .filter_map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn configs_edited_in_guance_are_the_log_groups_of_the_next_run() {
    for backend in BACKENDS {
        let cwl = FakeCwl::start().await;
        cwl.create_log_group(GROUP);
        cwl.put_events("edited-in-studio", "s", access_denied_events());
        let fake = FakeGuance::start().await;
        let app = app(backend, true).await;
        let (_, id, ref_key) = registered(&app, &fake, &cwl, "studio-configs").await;
        let before = shown(&app, &id).await;
        assert_eq!(before["guance"]["last_change"], Value::Null);

        fake.edit_in_studio(&ref_key, StudioEdit { configs: Some("edited-in-studio\n".into()), ..Default::default() });
        // No sync pass in between: the run itself reads the inspection back first.
        let r = run(&app, &id).await;
        let groups: Vec<&str> =
            r["log_groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(groups, ["edited-in-studio"], "{r}");
        assert_eq!(r["error_records"], 13);

        let after = shown(&app, &id).await;
        assert_eq!(after["log_groups"], json!(["edited-in-studio"]));
        let change = &after["guance"]["last_change"];
        assert_eq!(change["changed_by"], "guance", "{after}");
        assert_eq!(change["fields"], json!(["configs"]));
        assert!(change["guance_updated_at"].is_string());
        assert!(
            after["guance"]["last_pulled_at"].as_str().unwrap() > before["guance"]["last_pulled_at"].as_str().unwrap()
        );
        assert_eq!(after["guance"]["state"], "synced");
        assert!(modify_bodies(&fake).is_empty(), "a change that came from Guance is not pushed back");
    }
}

#[tokio::test]
async fn disabled_in_guance_the_scheduler_skips_it_and_func_answers_403_21() {
    for backend in BACKENDS {
        let cwl = FakeCwl::start().await;
        cwl.create_log_group(GROUP);
        let fake = FakeGuance::start().await;
        let app = app(backend, true).await;
        let (_, id, ref_key) = registered(&app, &fake, &cwl, "studio-off").await;
        // A trigger id is shown only when made: make one to call with.
        let (status, rotated) = app.post(&format!("/api/v1/inspections/{id}/trigger-id/rotate"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let tid = rotated["trigger_id"].as_str().unwrap().to_string();
        let insp = shown(&app, &id).await;
        let due: chrono::DateTime<Utc> = insp["next_run_at"].as_str().unwrap().parse().unwrap();

        fake.edit_in_studio(&ref_key, StudioEdit { disabled: Some(true), ..Default::default() });
        let settings = ScheduleSettings::default();
        let scheduler = Scheduler::new(app.state.store.clone(), app.state.runner.clone(), settings);
        let actions = scheduler.tick(due).await.unwrap();
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert_eq!(actions[0].outcome, SlotOutcome::Skipped);
        assert_eq!(actions[0].run_id, None);
        let off = shown(&app, &id).await;
        assert_eq!(off["enabled"], false);
        assert_eq!(off["guance"]["last_change"]["fields"], json!(["enabled"]));
        let (_, runs) = app.get(&format!("/api/v1/runs?inspection_id={id}")).await;
        assert_eq!(runs["items"], json!([]));

        // Func's disabled API answer, before the (bad) kwargs are even read.
        for (prefix, reason) in [("sync", "EBizCondition.SyncAPIDisabled"), ("async", "EBizCondition.AsyncAPIDisabled")]
        {
            let req = Request::post(format!("/api/v1/{prefix}/{tid}"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"kwargs": {"no_such_kwarg": 1}}"#))
                .unwrap();
            let (status, _, bytes) = app.send(req).await;
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                (status, v["error"].as_f64(), v["reason"].as_str()),
                (StatusCode::FORBIDDEN, Some(403.21), Some(reason))
            );
        }

        // Enabled again there: a Func call runs.
        fake.edit_in_studio(&ref_key, StudioEdit { disabled: Some(false), ..Default::default() });
        let req = Request::post(format!("/api/v1/sync/{tid}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"kwargs": {"dry_run": true}}"#))
            .unwrap();
        let (status, _, bytes) = app.send(req).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(shown(&app, &id).await["enabled"], true);
    }
}

#[tokio::test]
async fn edited_on_both_sides_the_later_edit_wins() {
    for backend in BACKENDS {
        let cwl = FakeCwl::start().await;
        let fake = FakeGuance::start().await;
        let app = app(backend, true).await;
        let (g, id, ref_key) = registered(&app, &fake, &cwl, "both-sides").await;

        // Ours first, Guance's a minute later: Guance's stands.
        app.patch(&format!("/api/v1/inspections/{id}"), json!({"configs": "ours-first"})).await;
        let later = StudioEdit {
            configs: Some("theirs-later".into()),
            update_at: Some(Utc::now() + TimeDelta::minutes(1)),
            ..Default::default()
        };
        fake.edit_in_studio(&ref_key, later);
        g.sync_once(app.store()).await.unwrap();
        let v = shown(&app, &id).await;
        assert_eq!(v["log_groups"], json!(["theirs-later"]), "{v}");
        assert_eq!(v["guance"]["last_change"]["fields"], json!(["configs"]));

        // Guance's an hour ago, ours now: ours stands and is pushed.
        let earlier = StudioEdit {
            configs: Some("theirs-earlier".into()),
            update_at: Some(Utc::now() - TimeDelta::hours(1)),
            ..Default::default()
        };
        fake.edit_in_studio(&ref_key, earlier);
        tokio::time::sleep(Duration::from_millis(10)).await;
        app.patch(&format!("/api/v1/inspections/{id}"), json!({"configs": "ours-now"})).await;
        g.sync_once(app.store()).await.unwrap();
        let v = shown(&app, &id).await;
        assert_eq!(v["log_groups"], json!(["ours-now"]), "{v}");
        let checker = &fake.checkers()[&ref_key];
        assert_eq!(checker["jsonScript"]["refFuncInfo"]["kwargs"]["configs"]["default"], "ours-now");
        assert_eq!(v["guance"]["state"], "synced");

        // Different fields edited on each side: both edits stand.
        app.patch(
            &format!("/api/v1/inspections/{id}"),
            json!({"alert_policy": {"guance_alert_policy_uuids": ["altpl_ours"]}}),
        )
        .await;
        fake.edit_in_studio(&ref_key, StudioEdit { disabled: Some(true), ..Default::default() });
        g.sync_once(app.store()).await.unwrap();
        let v = shown(&app, &id).await;
        assert_eq!(v["enabled"], false);
        assert_eq!(v["alert_policy"]["guance_alert_policy_uuids"], json!(["altpl_ours"]));
        let checker = &fake.checkers()[&ref_key];
        assert_eq!(checker["alertPolicyInfos"][0]["uuid"], "altpl_ours");
        assert_eq!(checker["status"], 2);
        // Nothing left to do: another pass changes neither side.
        let requests = modify_bodies(&fake).len();
        g.sync_once(app.store()).await.unwrap();
        assert_eq!(modify_bodies(&fake).len(), requests);
        assert_eq!(shown(&app, &id).await["log_groups"], json!(["ours-now"]));
    }
}

#[tokio::test]
async fn only_what_changed_here_is_pushed() {
    let cwl = FakeCwl::start().await;
    let fake = FakeGuance::start().await;
    let app = app(Backend::Sqlite, true).await;
    let (g, id, ref_key) = registered(&app, &fake, &cwl, "push-less").await;
    fake.edit_in_studio(
        &ref_key,
        StudioEdit { alert_policies: Some(vec!["altpl_studio".into()]), ..Default::default() },
    );
    app.patch(&format!("/api/v1/inspections/{id}"), json!({"name": "renamed-here"})).await;
    g.sync_once(app.store()).await.unwrap();
    let bodies = modify_bodies(&fake);
    assert_eq!(bodies, vec![json!({"refKey": ref_key, "title": "renamed-here"})], "the title only");
    let checker = &fake.checkers()[&ref_key];
    assert_eq!(checker["jsonScript"]["title"], "renamed-here");
    assert_eq!(checker["alertPolicyInfos"][0]["uuid"], "altpl_studio", "Guance's edit is not overwritten");
    let v = shown(&app, &id).await;
    assert_eq!(v["alert_policy"]["guance_alert_policy_uuids"], json!(["altpl_studio"]));
    assert_eq!(v["name"], "renamed-here");
}

#[tokio::test]
async fn an_edit_in_guance_that_cannot_be_used_is_reported_not_adopted() {
    let cwl = FakeCwl::start().await;
    let fake = FakeGuance::start().await;
    let app = app(Backend::Sqlite, true).await;
    let (g, id, ref_key) = registered(&app, &fake, &cwl, "bad-edit").await;
    let edit = StudioEdit { configs: Some("has spaces in it".into()), disabled: Some(true), ..Default::default() };
    fake.edit_in_studio(&ref_key, edit);
    g.sync_once(app.store()).await.unwrap();
    let v = shown(&app, &id).await;
    assert_eq!(v["log_groups"], json!([GROUP]), "the bad configs are not adopted");
    assert_eq!(v["enabled"], false, "the good edit is");
    assert_eq!(v["guance"]["state"], "synced");
    assert!(v["guance"]["error"].as_str().unwrap().contains("not adopted: configs"), "{v}");
    // It is not judged again until it changes.
    g.sync_once(app.store()).await.unwrap();
    assert_eq!(shown(&app, &id).await["log_groups"], json!([GROUP]));
}

#[tokio::test]
async fn a_checker_deleted_in_guance_keeps_the_inspection_until_registered_again() {
    for backend in BACKENDS {
        let cwl = FakeCwl::start().await;
        cwl.put_events(GROUP, "s", access_denied_events());
        let fake = FakeGuance::start().await;
        let app = app(backend, true).await;
        let (g, id, ref_key) = registered(&app, &fake, &cwl, "deleted-there").await;
        let old_uuid = fake.checkers()[&ref_key]["uuid"].clone();

        fake.delete_in_studio(&ref_key);
        g.sync_once(app.store()).await.unwrap();
        let v = shown(&app, &id).await;
        assert_eq!(v["guance"]["state"], "deleted_in_guance", "{v}");
        assert!(v["guance"]["error"].as_str().unwrap().contains("/guance/register"), "{v}");
        // The inspection lives on: it runs, and a change here does not recreate the checker.
        assert_eq!(run(&app, &id).await["status"], "succeeded");
        app.patch(&format!("/api/v1/inspections/{id}"), json!({"description": "still here"})).await;
        g.sync_once(app.store()).await.unwrap();
        assert!(!fake.checkers().contains_key(&ref_key));
        assert_eq!(shown(&app, &id).await["guance"]["state"], "deleted_in_guance");

        // Registered again when asked.
        let (status, _, v) = app.call(Method::POST, &format!("/api/v1/inspections/{id}/guance/register"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["guance"]["state"], "pending");
        g.sync_once(app.store()).await.unwrap();
        let checker = fake.checkers()[&ref_key].clone();
        assert_ne!(checker["uuid"], old_uuid, "a new checker");
        let v = shown(&app, &id).await;
        assert_eq!(v["guance"]["state"], "synced");
        assert_eq!(v["guance"]["checker_id"], checker["uuid"]);

        let (status, v) =
            app.post("/api/v1/inspections/00000000-0000-7000-8000-000000000000/guance/register", json!({})).await;
        assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    }
}

#[tokio::test]
async fn registrations_are_read_back_on_their_interval_and_before_each_run() {
    let cwl = FakeCwl::start().await;
    cwl.create_log_group(GROUP);
    cwl.create_log_group("edited");
    let fake = FakeGuance::start().await;
    let app = app(Backend::Sqlite, true).await;
    let mut g = worker(&fake);
    g.pull_fresh = Duration::ZERO;
    let g = Arc::new(g); // the default interval: 5 minutes
    app.state.runner.attach_guance(g.clone());
    let id = inspection(&app, &cwl, "interval", json!({})).await;
    g.sync_once(app.store()).await.unwrap();
    let ref_key = format!("cloudtrail-inspector-{id}");
    fake.edit_in_studio(&ref_key, StudioEdit { configs: Some("edited".into()), ..Default::default() });

    // Read back less than an interval ago: a pass leaves it alone.
    let reads = fake.count("/api/v1/self_built_checker/get");
    assert_eq!(g.sync_once(app.store()).await.unwrap(), 0);
    assert_eq!(fake.count("/api/v1/self_built_checker/get"), reads);
    assert_eq!(shown(&app, &id).await["log_groups"], json!([GROUP]));
    // A run reads it back first, whatever the interval.
    let r = run(&app, &id).await;
    assert_eq!(r["log_groups"][0]["name"], "edited");
}

#[tokio::test]
async fn a_run_goes_on_when_guance_cannot_be_read() {
    let cwl = FakeCwl::start().await;
    cwl.put_events(GROUP, "s", access_denied_events());
    let fake = FakeGuance::start().await;
    let app = app(Backend::Sqlite, true).await;
    let (g, id, _) = registered(&app, &fake, &cwl, "guance-down").await;
    fake.fail_next(crate::common::fake_guance::Side::OpenApi, 1, crate::common::fake_guance::Fault::Status(503));
    let r = run(&app, &id).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let v = shown(&app, &id).await;
    assert_eq!(v["guance"]["state"], "failed");
    assert!(v["guance"]["error"].as_str().unwrap().contains("503"), "{v}");
    // The next pass after the back-off brings it back.
    for _ in 0..100 {
        g.sync_once(app.store()).await.unwrap();
        if shown(&app, &id).await["guance"]["state"] == "synced" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the registration did not recover");
}
