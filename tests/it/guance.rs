//! Runs reaching Guance: events written with their run, delivered to a fake Guance that parses
//! line protocol strictly, silence, recovery, outages, refusals, restarts, several workers,
//! and the registration of inspections as self-built inspections.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::FakeCwl;
use crate::common::fake_guance::{self, FakeGuance, Side};
use crate::common::{BACKENDS, Backend, TestApp, inspection_body, wait_for_run};
use cloudtrail_inspector::guance::client::{ClientOptions, GuanceClient};
use cloudtrail_inspector::guance::{GuanceNode, GuanceSettings};
use cloudtrail_inspector::http::HttpSettings;
use cloudtrail_inspector::model::Secret;
use cloudtrail_inspector::outbox::{EventSettings, Guance};
use cloudtrail_inspector::scheduler::{ScheduleSettings, Scheduler};
use cloudtrail_inspector::store::DynStore;

pub(crate) const GROUP: &str = "trail";

pub(crate) fn worker(fake: &FakeGuance) -> Guance {
    worker_with_token(fake, None)
}

pub(crate) fn worker_with_token(fake: &FakeGuance, token: Option<&str>) -> Guance {
    let settings = GuanceSettings {
        node: GuanceNode::Private,
        openapi_url: Some(fake.url()),
        openway_url: Some(fake.url()),
        api_key_id: Secret::new(fake_guance::API_KEY_ID),
        api_key: Secret::new(fake_guance::API_KEY),
        workspace_token: None,
    };
    let opts = ClientOptions { connect_timeout: Duration::from_millis(500), timeout: Duration::from_secs(2) };
    let mut g = Guance::new(
        GuanceClient::new(&settings, opts).unwrap(),
        token.map(Secret::new),
        "http://inspector.test".into(),
    );
    g.retry_base = Duration::from_millis(20);
    g
}

pub(crate) async fn app(backend: Backend, configured: bool) -> TestApp {
    let mut runner = crate::common::test_runner_settings();
    runner.events = EventSettings {
        public_url: "http://inspector.test".into(),
        guance_configured: configured,
        expiry: Duration::from_secs(3600),
        share: None,
    };
    let http = HttpSettings { guance_configured: configured, ..Default::default() };
    TestApp::with_settings(backend, runner, http).await
}

pub(crate) fn now_s() -> DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap()
}

/// The invictus sts:AssumeRole AccessDenied records, moved to just before now.
pub(crate) fn access_denied_events() -> Vec<(i64, String)> {
    let denied: Vec<Value> = data::invictus()
        .into_iter()
        .filter(|r| r["errorCode"] == "AccessDenied" && r["eventName"] == "AssumeRole")
        .collect();
    assert_eq!(denied.len(), 13);
    data::shift_to(&denied, now_s() - TimeDelta::minutes(30))
}

pub(crate) async fn inspection(app: &TestApp, cwl: &FakeCwl, name: &str, extra: Value) -> String {
    let mut body = inspection_body(name, &[GROUP], &cwl.endpoint());
    body["baseline_days"] = json!(0);
    body["delivery_delay_minutes"] = json!(0);
    body["alert_policy"] = json!({"guance_alert_policy_uuids": ["altpl_0123abcd"], "notify_levels": ["critical", "error", "warning"], "silence_minutes": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_inspection(body).await["id"].as_str().unwrap().to_string()
}

pub(crate) async fn run(app: &TestApp, id: &str) -> Value {
    let (status, v) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

pub(crate) async fn drain(g: &Guance, store: &DynStore) {
    for _ in 0..200 {
        g.deliver_once(store).await.unwrap();
        if store.outbox_backlog().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("events still pending");
}

#[tokio::test]
async fn a_new_access_denied_cluster_is_one_error_event_and_a_quiet_run_recovers() {
    for backend in BACKENDS {
        let cwl = FakeCwl::start().await;
        cwl.put_events(GROUP, "s", access_denied_events());
        let fake = FakeGuance::start().await;
        let g = worker(&fake);
        let app = app(backend, true).await;
        let id = inspection(&app, &cwl, "denials", json!({})).await;

        let first = run(&app, &id).await;
        assert_eq!(first["status"], "succeeded", "{first}");
        let events = first["report"]["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{first}");
        assert_eq!(events[0]["status"], "error");
        assert_eq!(events[0]["delivery_state"], "pending");
        drain(&g, app.store()).await;

        let sent = fake.events();
        assert_eq!(sent.len(), 1);
        let e = &sent[0];
        assert_eq!(e.measurement, "monitor");
        for (k, v) in [
            ("df_source", "monitor"),
            ("df_monitor_type", "bot_obs"),
            ("df_status", "error"),
            ("df_crontab_exec_mode", "manual"),
            ("df_fault_status", "fault"),
            ("df_is_silent", "false"),
        ] {
            assert_eq!(e.str(k), Some(v), "{k}");
        }
        assert_eq!(e.str("df_monitor_ref_key"), Some(format!("cloudtrail-inspector-{id}").as_str()));
        assert_eq!(e.str("df_monitor_checker_name"), Some("denials"));
        assert_eq!(e.str("df_event_id"), events[0]["event_id"].as_str());
        assert_eq!(e.str("df_fault_id"), e.str("df_event_id"), "the first event opens the fault");
        let tags = e.json("df_dimension_tags").unwrap();
        assert_eq!(tags, json!({"account_id": "123837392027", "inspection_id": id, "region": "us-east-1"}));
        assert_eq!(e.str("inspection_name"), Some("denials"));
        assert_eq!(e.str("df_sub_status"), Some("error"));
        let event_ref = e.str("df_monitor_checker_event_ref").unwrap().to_string();
        let report = e.json("df_event_report").unwrap();
        assert_eq!(report["cloudtrail"]["new_error_records"], 13);
        assert!(report["new_errors"][0]["links"]["details"].as_str().unwrap().starts_with("http://inspector.test/"));
        assert_eq!(e.json("df_alert_policy_ids").unwrap(), json!(["altpl_0123abcd"]));
        assert!(e.fields.contains_key("df_check_range_start") && e.fields.contains_key("df_check_range_end"));
        assert!(e.fields.contains_key("df_fault_start_time") && e.fields.contains_key("df_fault_duration"));
        let detail = e.json("df_event_detail").unwrap();
        assert!(detail.to_string().contains("sts:AssumeRole"), "{detail}");
        let msg = e.str("df_message").unwrap();
        // The original's three parts: new error records, access keys, new clusters with links.
        assert!(msg.contains("**13** new CloudTrail error records"), "{msg}");
        assert!(msg.contains("#### Access keys"), "{msg}");
        assert!(msg.contains("User: <ARN> is not authorized to perform: sts:AssumeRole"), "{msg}");
        assert!(msg.contains("(http://inspector.test/console/clusters/"), "{msg}");
        assert!(msg.contains("&sig="), "console links are share links: {msg}");
        assert!(msg.contains("console.aws.amazon.com/cloudwatch"), "{msg}");
        assert!(msg.contains("CloudWatch.2"), "the matched CIS rule is shown: {msg}");

        // Renamed, then a quiet run: the fault recovers, same fault id and same dimension (the
        // name is not part of it), with its start and duration.
        let (status, _) = app.patch(&format!("/api/v1/inspections/{id}"), json!({"name": "denials renamed"})).await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let second = run(&app, &id).await;
        assert_eq!(second["clusters_new"], 0);
        assert_eq!(second["report"]["events"][0]["status"], "ok");
        drain(&g, app.store()).await;
        let sent = fake.events();
        assert_eq!(sent.len(), 2);
        let ok = &sent[1];
        assert_eq!(ok.str("df_status"), Some("ok"));
        assert_eq!(ok.str("df_fault_status"), Some("ok"));
        assert_eq!(ok.str("df_fault_id"), e.str("df_fault_id"));
        assert_eq!(ok.str("df_sub_status"), Some("ok"));
        assert_eq!(ok.str("df_monitor_checker_event_ref"), Some(event_ref.as_str()), "same checker, same dimension");
        assert_eq!(ok.json("df_dimension_tags").unwrap(), tags, "a rename starts no new dimension");
        assert_eq!(ok.str("df_monitor_checker_name"), Some("denials renamed"));
        assert_eq!(ok.str("inspection_name"), Some("denials renamed"));
        assert_eq!(ok.fields.get("df_fault_start_time"), e.fields.get("df_fault_start_time"));
        let start = e.int("df_fault_start_time").unwrap();
        let duration = ok.int("df_fault_duration").unwrap();
        assert_eq!(duration, ok.timestamp / 1_000_000_000 - start, "duration = recovery − start");
        assert!(duration >= 2, "{duration}");

        // The history says the same.
        let (_, list) = app.get(&format!("/api/v1/inspections/{id}/events")).await;
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["status"], "ok");
        assert_eq!(items[0]["delivery_state"], "sent");
        assert_eq!(items[0]["duration_secs"], duration);
        assert!(items[0]["recovery_time"].is_string());
        assert_eq!(items[1]["status"], "error");
        assert_eq!(items[1]["attempts"], 1);
        assert_eq!(items[0]["anomaly_time"], items[1]["anomaly_time"]);
        let (status, one) = app.get(&format!("/api/v1/events/{}", items[1]["id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["event"]["message"].as_str(), Some(msg));
        // A third quiet run: nothing more to say.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let third = run(&app, &id).await;
        assert_eq!(third["report"]["events"], json!([]));
    }
}

/// A new kind of error from the account, a second after `now`: `Client.UnauthorizedOperation`
/// on `ec2:DescribeInstances`.
fn put_describe_instances_denial(cwl: &FakeCwl) {
    let at = now_s() - TimeDelta::seconds(1);
    let rec = json!({"eventTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances", "awsRegion": "us-east-1", "recipientAccountId": "123837392027",
        "errorCode": "Client.UnauthorizedOperation", "errorMessage": "You are not authorized to perform this operation.",
        "userIdentity": {"arn": "arn:aws:iam::123837392027:user/carol"}});
    cwl.put_events(GROUP, "s2", [(at.timestamp_millis(), rec.to_string())]);
}

#[tokio::test]
async fn silenced_events_reach_guances_history_as_silent_and_their_clusters_ride_along() {
    for backend in BACKENDS {
        let cwl = FakeCwl::start().await;
        cwl.put_events(GROUP, "s", access_denied_events());
        let fake = FakeGuance::start().await;
        let g = worker(&fake);
        let app = app(backend, true).await;
        // Guance policies are attached; silencing here is asked for explicitly.
        let policy =
            json!({"guance_alert_policy_uuids": ["altpl_0123abcd"], "silence_minutes": 60, "local_silencing": true});
        let id = inspection(&app, &cwl, "silence", json!({"alert_policy": policy})).await;
        run(&app, &id).await;
        drain(&g, app.store()).await;
        assert_eq!(fake.events().len(), 1);

        // A new kind of error within the silence period: written to Guance, silent.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        put_describe_instances_denial(&cwl);
        let second = run(&app, &id).await;
        let ev = &second["report"]["events"][0];
        assert_eq!(ev["is_silent"], true);
        assert_eq!(ev["delivery_state"], "pending", "silent events are delivered too");
        assert!(ev["note"].as_str().unwrap().contains("silenced until"), "{ev}");
        drain(&g, app.store()).await;
        let sent = fake.events();
        assert_eq!(sent.len(), 2, "Guance's history has no gap");
        assert_eq!(sent[1].str("df_is_silent"), Some("true"));
        assert_eq!(sent[1].str("df_status"), Some("error"));
        assert_eq!(sent[1].str("df_fault_id"), sent[0].str("df_fault_id"));
        let (_, list) = app.get(&format!("/api/v1/inspections/{id}/events")).await;
        assert_eq!(
            (&list["items"][0]["is_silent"], &list["items"][0]["delivery_state"]),
            (&json!(true), &json!("sent"))
        );

        // The recovery carries the silenced cluster to whoever is notified.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let third = run(&app, &id).await;
        assert_eq!(third["report"]["events"][0]["status"], "ok");
        drain(&g, app.store()).await;
        let sent = fake.events();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[2].str("df_is_silent"), Some("false"));
        assert!(
            sent[2].str("df_message").unwrap().contains("DescribeInstances"),
            "{}",
            sent[2].str("df_message").unwrap()
        );
    }
}

#[tokio::test]
async fn with_guance_alert_policies_nothing_is_silenced_twice() {
    let cwl = FakeCwl::start().await;
    cwl.put_events(GROUP, "s", access_denied_events());
    let fake = FakeGuance::start().await;
    let g = worker(&fake);
    let app = app(Backend::Sqlite, true).await;
    // A long silence and a level filter that would silence the second event here; with a
    // Guance policy attached and `local_silencing` unset, neither applies.
    let policy =
        json!({"guance_alert_policy_uuids": ["altpl_0123abcd"], "silence_minutes": 600, "notify_levels": ["critical"]});
    let id = inspection(&app, &cwl, "guance-silences", json!({"alert_policy": policy})).await;
    let (_, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
    assert_eq!(v["alert_policy"].get("local_silencing"), None, "unset: the default applies");
    run(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_describe_instances_denial(&cwl);
    run(&app, &id).await;
    drain(&g, app.store()).await;
    let sent = fake.events();
    assert_eq!(sent.len(), 2);
    for e in &sent {
        assert_eq!(e.str("df_is_silent"), Some("false"), "Guance's policy does the silencing");
        assert_eq!(e.json("df_alert_policy_ids").unwrap(), json!(["altpl_0123abcd"]));
    }
    // Without a Guance policy the same settings silence here, and the event is still written.
    let app = self::app(Backend::Sqlite, true).await;
    let cwl = FakeCwl::start().await;
    cwl.put_events(GROUP, "s", access_denied_events());
    let fake = FakeGuance::start().await;
    let g = worker(&fake);
    let policy = json!({"guance_alert_policy_uuids": [], "notify_levels": ["critical"]});
    let id = inspection(&app, &cwl, "local-levels", json!({"alert_policy": policy})).await;
    let r = run(&app, &id).await;
    assert_eq!(r["report"]["events"][0]["is_silent"], true, "error is not a notify level here");
    drain(&g, app.store()).await;
    assert_eq!(fake.events().len(), 1);
    assert_eq!(fake.events()[0].str("df_is_silent"), Some("true"));
}

#[tokio::test]
async fn guance_down_then_back_every_event_once_and_in_order() {
    for backend in BACKENDS {
        let cwl = FakeCwl::start().await;
        cwl.put_events(GROUP, "s", access_denied_events());
        let fake = FakeGuance::start().await;
        let g = worker(&fake);
        let app = app(backend, true).await;
        let id = inspection(&app, &cwl, "outage", json!({})).await;
        // Guance is down for the first delivery attempts.
        fake.fail_next(Side::OpenWay, 3, fake_guance::Fault::Status(503));
        run(&app, &id).await;
        g.deliver_once(app.store()).await.unwrap();
        let (_, list) = app.get(&format!("/api/v1/inspections/{id}/events")).await;
        assert_eq!(list["items"][0]["delivery_state"], "pending");
        assert!(list["items"][0]["last_error"].as_str().unwrap().contains("503"), "{list}");

        // A recovery queues behind the undelivered fault event of the same dimension.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        run(&app, &id).await;
        fake.down_for(Duration::from_millis(300)).await;
        g.deliver_once(app.store()).await.unwrap();
        fake.wait_up().await;
        drain(&g, app.store()).await;
        let sent = fake.events();
        assert_eq!(sent.len(), 2, "each event once");
        assert_eq!(sent[0].str("df_status"), Some("error"), "in order per dimension");
        assert_eq!(sent[1].str("df_status"), Some("ok"));
        let (_, list) = app.get(&format!("/api/v1/inspections/{id}/events")).await;
        assert!(list["items"][1]["attempts"].as_i64().unwrap() >= 4, "{list}");
    }
}

#[tokio::test]
async fn a_refused_write_stops_retrying_with_the_reason() {
    let cwl = FakeCwl::start().await;
    cwl.put_events(GROUP, "s", access_denied_events());
    let fake = FakeGuance::start().await;
    // A workspace token that Guance no longer accepts (rotated there, not here).
    let g = worker_with_token(&fake, Some("tkn_revoked0123456789"));
    let app = app(Backend::Sqlite, true).await;
    let id = inspection(&app, &cwl, "refused", json!({})).await;
    run(&app, &id).await;
    g.deliver_once(app.store()).await.unwrap();
    let (_, list) = app.get(&format!("/api/v1/inspections/{id}/events")).await;
    let e = &list["items"][0];
    assert_eq!(e["delivery_state"], "failed");
    let why = e["last_error"].as_str().unwrap();
    assert!(why.contains("401"), "{why}");
    assert!(!why.contains("tkn_revoked0123456789"), "the token is scrubbed: {why}");
    let writes = fake.count("/v1/write/keyevent");
    g.deliver_once(app.store()).await.unwrap();
    assert_eq!(fake.count("/v1/write/keyevent"), writes, "not retried");
}

#[tokio::test]
async fn undelivered_events_survive_a_restart_and_two_workers_send_each_once() {
    let cwl = FakeCwl::start().await;
    cwl.put_events(GROUP, "s", access_denied_events());
    let app = app(Backend::Postgres, true).await;
    // Several inspections, so there are several dimensions to deliver at once.
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(inspection(&app, &cwl, &format!("restart-{n}"), json!({})).await);
    }
    for id in &ids {
        run(&app, id).await;
    }
    assert_eq!(app.store().outbox_backlog().await.unwrap(), 6);

    // "After a restart": other processes, new connections, same database.
    let fake = FakeGuance::start().await;
    let a = Arc::new(worker(&fake));
    let b = Arc::new(worker(&fake));
    let store_a = cloudtrail_inspector::store::connect(&app.guard.url, 4, crate::common::test_cipher()).await.unwrap();
    let store_b = cloudtrail_inspector::store::connect(&app.guard.url, 4, crate::common::test_cipher()).await.unwrap();
    fake.set_latency(Duration::from_millis(50));
    for _ in 0..20 {
        let (x, y) = tokio::join!(a.deliver_once(&store_a), b.deliver_once(&store_b));
        x.unwrap();
        y.unwrap();
        if store_a.outbox_backlog().await.unwrap() == 0 {
            break;
        }
    }
    let sent = fake.events();
    let ids_sent: BTreeSet<&str> = sent.iter().map(|e| e.str("df_event_id").unwrap()).collect();
    assert_eq!(sent.len(), 6, "each event exactly once");
    assert_eq!(ids_sent.len(), 6);
}

#[tokio::test]
async fn hostile_record_text_breaks_neither_the_line_protocol_nor_the_markdown() {
    let cwl = FakeCwl::start().await;
    let at = now_s() - TimeDelta::minutes(5);
    let hostile = "x\" y=1,z\\\n## owned\n[click](javascript:alert(1)) | `code` <img src=x> \u{1b}[31m \u{202e}evil";
    let rec = json!({"eventTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject", "awsRegion": "us-east-1", "recipientAccountId": "111122223333",
        "errorCode": "AccessDenied", "errorMessage": hostile, "sourceIPAddress": "1.2.3.4\n## ip",
        "userIdentity": {"arn": "arn:aws:iam::111122223333:user/a\"b,c=d e", "accessKeyId": "AKIA\\\"x y,z=1"}});
    cwl.put_events(GROUP, "s", [(at.timestamp_millis(), rec.to_string())]);
    let fake = FakeGuance::start().await;
    let g = worker(&fake);
    let app = app(Backend::Sqlite, true).await;
    let id = inspection(&app, &cwl, "hostile, \"name\" = yes", json!({})).await;
    run(&app, &id).await;
    drain(&g, app.store()).await;
    let sent = fake.events();
    assert_eq!(sent.len(), 1, "the strict parser accepted the write");
    let msg = sent[0].str("df_message").unwrap();
    assert!(!msg.lines().any(|l| l.starts_with("## owned") || l.starts_with("## ip")), "{msg}");
    // Record text sits inside code spans, where markdown makes no links.
    assert!(msg.contains("``x\" y=<ID> ## owned [click](javascript:"), "{msg}");
    assert!(!msg.contains('\u{1b}') && !msg.contains('\u{202e}'), "control characters removed");
    assert_eq!(sent[0].str("inspection_name"), Some("hostile, \"name\" = yes"));
}

#[tokio::test]
async fn inspections_are_registered_in_guance_and_kept_in_sync() {
    for backend in BACKENDS {
        let fake = FakeGuance::start().await;
        let g = worker(&fake);
        let app = app(backend, true).await;
        let cwl = FakeCwl::start().await;
        let id = inspection(&app, &cwl, "registered", json!({})).await;
        let ref_key = format!("cloudtrail-inspector-{id}");
        let (_, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(v["guance"]["state"], "pending");
        g.sync_once(app.store()).await.unwrap();
        let checker = fake.checkers()[&ref_key].clone();
        assert_eq!(checker["jsonScript"]["title"], "registered");
        assert_eq!(checker["status"], 0, "enabled");
        assert_eq!(checker["alertPolicyInfos"][0]["uuid"], "altpl_0123abcd");
        // Guance shows what is inspected: the real configs, as the argument's default.
        assert_eq!(checker["jsonScript"]["refFuncInfo"]["kwargs"]["configs"]["default"], GROUP);
        let (_, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(v["guance"]["state"], "synced", "{v}");
        assert!(v["guance"]["checker_id"].as_str().unwrap().starts_with("rul_"));

        // Guance is down while the inspection changes: the change waits and is retried.
        fake.fail_next(Side::OpenApi, 1, fake_guance::Fault::Status(502));
        app.patch(&format!("/api/v1/inspections/{id}"), json!({"enabled": false, "name": "renamed"})).await;
        g.sync_once(app.store()).await.unwrap();
        let (_, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(v["guance"]["state"], "failed");
        assert!(v["guance"]["error"].as_str().unwrap().contains("502"), "{v}");
        for _ in 0..100 {
            g.sync_once(app.store()).await.unwrap();
            if fake.checkers()[&ref_key]["jsonScript"]["title"] == "renamed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let checker = fake.checkers()[&ref_key].clone();
        assert_eq!(checker["jsonScript"]["title"], "renamed");
        assert_eq!(checker["status"], 2, "disabled");
        let (_, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(v["guance"]["state"], "synced");

        // Deleting the inspection deletes its registration.
        let (status, _, _) = app.call(Method::DELETE, &format!("/api/v1/inspections/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        g.sync_once(app.store()).await.unwrap();
        assert!(!fake.checkers().contains_key(&ref_key));
    }
}

#[tokio::test]
async fn without_guance_each_run_says_why_no_event_was_sent_and_dry_runs_never_send() {
    let cwl = FakeCwl::start().await;
    cwl.put_events(GROUP, "s", access_denied_events());
    let app = app(Backend::Sqlite, false).await;
    let id = inspection(&app, &cwl, "offline", json!({})).await;
    let r = run(&app, &id).await;
    assert!(r["report"]["events_note"].as_str().unwrap().contains("Guance is not configured"));
    assert_eq!(r["report"]["events"][0]["delivery_state"], "not_sent");
    assert_eq!(app.store().outbox_backlog().await.unwrap(), 0);
    let (_, v) = app.get(&format!("/api/v1/inspections/{id}")).await;
    assert_eq!(v["guance"]["state"], "not_configured");

    // With Guance: a dry run computes the event and sends nothing.
    let fake = FakeGuance::start().await;
    let g = worker(&fake);
    let app = self::app(Backend::Sqlite, true).await;
    let id = inspection(&app, &cwl, "dry", json!({})).await;
    let (_, r) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({"dry_run": true})).await;
    assert_eq!(r["report"]["events"][0]["status"], "error");
    assert_eq!(r["report"]["events"][0]["note"], "not sent: dry run");
    drain(&g, app.store()).await;
    assert!(fake.events().is_empty());
    // …and the dry run opened no fault: the real run's event is a fresh one.
    let real = run(&app, &id).await;
    assert_eq!(real["report"]["events"][0]["delivery_state"], "pending");
}

#[tokio::test]
async fn a_scheduled_runs_events_say_crontab() {
    let cwl = FakeCwl::start().await;
    cwl.put_events(GROUP, "s", access_denied_events());
    let fake = FakeGuance::start().await;
    let g = worker(&fake);
    let app = app(Backend::Sqlite, true).await;
    let id = inspection(&app, &cwl, "scheduled", json!({})).await;
    let (_, insp) = app.get(&format!("/api/v1/inspections/{id}")).await;
    let due: DateTime<Utc> = insp["next_run_at"].as_str().unwrap().parse().unwrap();
    let scheduler = Scheduler::new(app.state.store.clone(), app.state.runner.clone(), ScheduleSettings::default());
    let actions = scheduler.tick(due).await.unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    let run = wait_for_run(&app, &actions[0].run_id.unwrap().to_string()).await;
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["report"]["events"].as_array().map(Vec::len), Some(1), "{run}");
    drain(&g, app.store()).await;
    let sent = fake.events();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].str("df_crontab_exec_mode"), Some("crontab"), "the built-in scheduler is a crontab");
}
