//! The built-in scheduler with an injected clock: each slot starts once, also with two
//! instances on one Postgres; missed slots give one catch-up run; busy slots are skipped;
//! start times are spread; `next_run_at` says when the next run starts.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fake_cwl::{FakeConfig, FakeCwl};
use crate::common::{BACKENDS, Backend, TestApp, inspection_body, wait_for_run};
use cloudtrail_inspector::http::HttpSettings;
use cloudtrail_inspector::model::schedule::spread_offset;
use cloudtrail_inspector::scheduler::ScheduleSettings;
use cloudtrail_inspector::scheduler::Scheduler;
use cloudtrail_inspector::store::SlotOutcome;

const SETTINGS: ScheduleSettings = ScheduleSettings { enabled: true, spread: Duration::from_secs(60) };

fn scheduler(app: &TestApp) -> Arc<Scheduler> {
    Scheduler::new(app.state.store.clone(), app.state.runner.clone(), SETTINGS)
}

async fn inspection(app: &TestApp, fake: &FakeCwl, name: &str) -> Value {
    let mut body = inspection_body(name, &["g"], &fake.endpoint());
    body["baseline_days"] = json!(0);
    app.create_inspection(body).await
}

fn next_run_at(insp: &Value) -> DateTime<Utc> {
    insp["next_run_at"].as_str().expect("next_run_at").parse().unwrap()
}

fn id(insp: &Value) -> Uuid {
    insp["id"].as_str().unwrap().parse().unwrap()
}

async fn runs(app: &TestApp, insp: &Value) -> Vec<Value> {
    let (_, page) = app.get(&format!("/api/v1/runs?inspection_id={}", insp["id"].as_str().unwrap())).await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn two_instances_on_one_database_start_a_slot_once() {
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(100), ..FakeConfig::default() }).await;
    fake.create_log_group("g");
    let a = TestApp::new(Backend::Postgres).await;
    let (state_b, _) = crate::common::second_instance(&a).await;
    let insp = inspection(&a, &fake, "shared-schedule").await;
    let due = next_run_at(&insp);

    let sa = scheduler(&a);
    let sb = Scheduler::new(state_b.store.clone(), state_b.runner.clone(), SETTINGS);
    // Just before its start nothing is due; at its start both instances tick, several times.
    assert!(sa.tick(due - TimeDelta::seconds(1)).await.unwrap().is_empty());
    let ticks = (0..4).flat_map(|_| [sa.tick(due), sb.tick(due)]);
    let results = futures::future::join_all(ticks).await;
    let actions: Vec<_> = results.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].outcome, SlotOutcome::Started);
    assert_eq!(actions[0].slot + spread_offset(id(&insp), 60), due);

    let slots = a.store().schedule_slots(id(&insp), 10).await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].outcome, SlotOutcome::Started);
    assert_eq!(slots[0].run_id, actions[0].run_id);
    let run = wait_for_run(&a, &actions[0].run_id.unwrap().to_string()).await;
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["trace_id"].as_str().unwrap().starts_with("SCHEDULE-"));
    assert_eq!(runs(&a, &insp).await.len(), 1);

    // Later ticks within the same slot start nothing, on either instance.
    assert!(sa.tick(due + TimeDelta::minutes(30)).await.unwrap().is_empty());
    assert!(sb.tick(due + TimeDelta::minutes(30)).await.unwrap().is_empty());
    // The next slot starts once more.
    let next = due + TimeDelta::hours(1);
    let (ra, rb) = tokio::join!(sa.tick(next), sb.tick(next));
    assert_eq!(ra.unwrap().len() + rb.unwrap().len(), 1);
}

#[tokio::test]
async fn missed_slots_produce_one_catch_up_run() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        fake.create_log_group("g");
        let app = TestApp::new(backend).await;
        let insp = inspection(&app, &fake, "downtime").await;
        let s = scheduler(&app);
        let offset = spread_offset(id(&insp), 60);

        // The service was down for five slots: one run, for the newest slot.
        let back = next_run_at(&insp) + TimeDelta::hours(5) + TimeDelta::minutes(7);
        let actions = s.tick(back).await.unwrap();
        assert_eq!(actions.len(), 1, "{actions:?}");
        let slot = actions[0].slot;
        assert_eq!((slot.minute(), slot.second()), (0, 0));
        assert!(slot + offset <= back && back - (slot + offset) < TimeDelta::hours(1), "the newest due slot: {slot}");
        wait_for_run(&app, &actions[0].run_id.unwrap().to_string()).await;
        // The older slots are never replayed, however often it ticks.
        for dt in [0, 1, 60, 600] {
            assert!(s.tick(back + TimeDelta::seconds(dt)).await.unwrap().is_empty());
        }
        // A fresh scheduler (a restarted process) agrees: the database remembers the claim.
        assert!(scheduler(&app).tick(back).await.unwrap().is_empty());
        assert_eq!(app.store().schedule_slots(id(&insp), 10).await.unwrap().len(), 1);
        assert_eq!(runs(&app, &insp).await.len(), 1, "{backend:?}");
    }
}

#[tokio::test]
async fn a_slot_that_finds_a_run_in_progress_is_skipped() {
    for backend in BACKENDS {
        let fake =
            FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(300), ..FakeConfig::default() }).await;
        fake.create_log_group("g");
        let app = TestApp::new(backend).await;
        let insp = inspection(&app, &fake, "busy-slot").await;
        let due = next_run_at(&insp);
        let (status, running) =
            app.post(&format!("/api/v1/inspections/{}/runs?wait=false", insp["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED);

        let actions = scheduler(&app).tick(due).await.unwrap();
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].outcome, SlotOutcome::Skipped);
        assert_eq!(actions[0].run_id, None);
        let slots = app.store().schedule_slots(id(&insp), 10).await.unwrap();
        assert_eq!(slots[0].outcome, SlotOutcome::Skipped);
        assert!(slots[0].detail.as_deref().unwrap().contains(running["id"].as_str().unwrap()), "{slots:?}");
        wait_for_run(&app, running["id"].as_str().unwrap()).await;
        assert_eq!(runs(&app, &insp).await.len(), 1, "the skipped slot started nothing");
    }
}

#[tokio::test]
async fn disabled_and_new_inspections_are_not_started_early() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        fake.create_log_group("g");
        let app = TestApp::new(backend).await;
        let on = inspection(&app, &fake, "on").await;
        let off = inspection(&app, &fake, "off").await;
        let (_, off) =
            app.patch(&format!("/api/v1/inspections/{}", off["id"].as_str().unwrap()), json!({"enabled": false})).await;
        assert_eq!(off["next_run_at"], Value::Null, "a disabled inspection has no next run");
        let s = scheduler(&app);
        // Created after the current slot started: nothing is due until next_run_at.
        assert!(s.tick(Utc::now()).await.unwrap().is_empty());
        let later = next_run_at(&on).max(Utc::now()) + TimeDelta::hours(2);
        let actions = s.tick(later).await.unwrap();
        assert_eq!(actions.len(), 1, "only the enabled one: {actions:?}");
        assert_eq!(actions[0].inspection_id, id(&on));
        wait_for_run(&app, &actions[0].run_id.unwrap().to_string()).await;
        assert!(app.store().schedule_slots(id(&off), 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn start_times_are_spread_and_next_run_at_shows_them() {
    for backend in BACKENDS {
        let app = TestApp::new(backend).await;
        let mut offsets = std::collections::BTreeSet::new();
        for n in 0..12 {
            let insp =
                app.create_inspection(inspection_body(&format!("hourly-{n}"), &["g"], "http://127.0.0.1:9")).await;
            let next = next_run_at(&insp);
            let offset = spread_offset(id(&insp), 60);
            assert!((0..60).contains(&offset.num_seconds()));
            // The top of an hour, plus this inspection's own offset, in the future.
            let slot = next - offset;
            assert_eq!((slot.minute(), slot.second(), slot.nanosecond()), (0, 0, 0), "{next}");
            assert!(next > Utc::now() && next - Utc::now() <= TimeDelta::minutes(61));
            // Reading it again gives the same time: the offset is stable.
            let (_, again) = app.get(&format!("/api/v1/inspections/{}", insp["id"].as_str().unwrap())).await;
            assert_eq!(again["next_run_at"], insp["next_run_at"]);
            offsets.insert(offset.num_seconds());
        }
        assert!(offsets.len() > 4, "a dozen inspections do not share a second: {offsets:?}");

        // A daily schedule in another zone: 08:00 in Shanghai is 00:00 UTC.
        let mut body = inspection_body("daily-shanghai", &["g"], "http://127.0.0.1:9");
        body["schedule"] = json!("0 8 * * *");
        body["schedule_timezone"] = json!("Asia/Shanghai");
        let insp = app.create_inspection(body).await;
        let slot = next_run_at(&insp) - spread_offset(id(&insp), 60);
        assert_eq!((slot.hour(), slot.minute()), (0, 0), "{slot}");
        assert!(next_run_at(&insp) - Utc::now() <= TimeDelta::hours(24) + TimeDelta::minutes(1));
    }
}

#[tokio::test]
async fn without_spread_or_scheduler() {
    let http = HttpSettings {
        schedule: ScheduleSettings { enabled: true, spread: Duration::ZERO },
        ..HttpSettings::default()
    };
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    let insp = app.create_inspection(inspection_body("no-spread", &["g"], "http://127.0.0.1:9")).await;
    let next = next_run_at(&insp);
    assert_eq!((next.minute(), next.second()), (0, 0), "no spread: the top of the hour");

    let http = HttpSettings {
        schedule: ScheduleSettings { enabled: false, spread: Duration::from_secs(60) },
        ..HttpSettings::default()
    };
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    let insp = app.create_inspection(inspection_body("no-scheduler", &["g"], "http://127.0.0.1:9")).await;
    assert_eq!(insp["next_run_at"], Value::Null, "the scheduler is off: an outside caller runs it");
    assert_eq!(insp["schedule"], "0 * * * *");
}
