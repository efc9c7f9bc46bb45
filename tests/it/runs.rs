//! Runs end to end: the app, a real store, the real AWS SDK client and a fake CloudWatch Logs
//! server loaded with real CloudTrail records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data::{self, is_error};
use crate::common::fake_cwl::{FakeConfig, FakeCwl, Fault};
use crate::common::{BACKENDS, Backend, TestApp, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

/// The default window of a first run started now: `[end − 60 min, end)`, end = now − 10 min.
fn first_window_end() -> DateTime<Utc> {
    (Utc::now() - minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap()
}

/// A fake holding all invictus records, shifted to lie inside a first run's window.
async fn fake_with_invictus(cfg: FakeConfig) -> (FakeCwl, Vec<Value>) {
    let fake = FakeCwl::start_with(cfg).await;
    let records = data::invictus();
    // invictus spans 55.5 minutes; the window is 60.
    let events = data::shift_to(&records, first_window_end() - minutes(58));
    fake.put_events(GROUP, "123837392027_CloudTrail_us-east-1", events);
    (fake, records)
}

async fn run(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, v) = app.post(&format!("/api/v1/inspections/{id}/runs"), body).await;
    assert_eq!(status, StatusCode::OK, "run failed: {v}");
    v
}

async fn all_run_clusters(app: &TestApp, run_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app.get(&format!("/api/v1/runs/{run_id}/clusters?limit=7&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

/// (eventSource, eventName, error kind) → records, computed from the raw records alone.
fn expected_kinds(records: &[Value]) -> BTreeMap<(String, String, String), i64> {
    let mut m = BTreeMap::new();
    for r in records.iter().filter(|r| is_error(r)) {
        let code = r["errorCode"].as_str().filter(|c| !c.is_empty()).unwrap_or("ConsoleLoginFailure");
        let key = (
            r["eventSource"].as_str().unwrap().to_string(),
            r["eventName"].as_str().unwrap().to_string(),
            code.to_string(),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn first_run_clusters_the_real_records_and_a_second_finds_nothing_new() {
    for backend in BACKENDS {
        let (fake, records) = fake_with_invictus(FakeConfig::default()).await;
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("invictus", &[GROUP], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let id = insp["id"].as_str().unwrap();

        let first = run(&app, id, json!({})).await;
        assert_eq!(first["status"], "succeeded", "{first}");
        assert_eq!(first["trigger"], "api");
        // The filter pattern let only error records cross the wire: 300 of 2,900.
        assert_eq!(first["records_scanned"], 300);
        assert_eq!(first["error_records"], 300);
        assert_eq!(first["malformed_records"], 0);
        assert_eq!(first["clusters_new"], first["clusters_total"]);
        assert_eq!(first["new_error_records"], 300);
        assert_eq!(first["log_groups"][0]["status"], "succeeded");
        assert!(first["aws_api_calls"].as_i64().unwrap() >= 2, "FilterLogEvents + the key query");
        let window =
            (first["window_start"].as_str().unwrap().to_string(), first["window_end"].as_str().unwrap().to_string());
        let end: DateTime<Utc> = window.1.parse().unwrap();
        let start: DateTime<Utc> = window.0.parse().unwrap();
        assert_eq!(end - start, minutes(60));

        // Every cluster holds one (source, API, error) kind, and per kind the records add up.
        let clusters = all_run_clusters(&app, first["id"].as_str().unwrap()).await;
        assert_eq!(clusters.len() as i64, first["clusters_total"].as_i64().unwrap());
        let mut per_kind: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        for c in &clusters {
            assert_eq!(c["is_new"], true);
            let k = (
                c["event_source"].as_str().unwrap().into(),
                c["event_name"].as_str().unwrap().into(),
                c["error_code"].as_str().unwrap().into(),
            );
            *per_kind.entry(k).or_default() += c["count"].as_i64().unwrap();
        }
        assert_eq!(per_kind, expected_kinds(&records));
        // Same error on different resources merges: 13 DescribeRouteTables over 9 route tables.
        let rt: Vec<&Value> = clusters.iter().filter(|c| c["event_name"] == "DescribeRouteTables").collect();
        assert_eq!(rt.len(), 1);
        assert_eq!(rt[0]["count"], 13);
        assert_eq!(rt[0]["template"], "The routeTable ID '<*>' does not exist");
        // Encoded authorization messages differ record by record but are one kind of error.
        let gpd: Vec<&Value> = clusters.iter().filter(|c| c["event_name"] == "GetPasswordData").collect();
        assert_eq!(gpd.len(), 1);
        assert_eq!(gpd[0]["count"], 29);
        // Ordered new first, then by count.
        let counts: Vec<i64> = clusters.iter().map(|c| c["count"].as_i64().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

        // The report: 300 new error records, access keys with their last activity.
        let report = &first["report"];
        assert_eq!(report["new_error_records"], 300);
        assert_eq!(report["accounts"][0]["account_id"], "123837392027");
        assert_eq!(report["new_clusters"].as_array().unwrap().len() as i64, first["clusters_new"].as_i64().unwrap());
        let keys = report["access_keys"].as_array().unwrap();
        assert_eq!(keys.len(), 50, "the report lists the 50 most recently active keys");
        assert!(keys.iter().all(|k| k["active_in_window"] == true));

        // All 133 keys seen are kept, most recently active first.
        let mut seen = BTreeSet::new();
        let mut cursor = String::new();
        loop {
            let (status, page) =
                app.get(&format!("/api/v1/inspections/{id}/access-keys?limit=40&cursor={cursor}")).await;
            assert_eq!(status, StatusCode::OK);
            for k in page["items"].as_array().unwrap() {
                assert!(seen.insert(k["access_key_id"].as_str().unwrap().to_string()), "key listed twice");
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.into(),
                None => break,
            }
        }
        assert_eq!(seen.len(), 133);

        // The same window again: everything is known now.
        let again = run(&app, id, json!({"window_start": window.0, "window_end": window.1})).await;
        assert_eq!(again["status"], "succeeded");
        assert_eq!(again["explicit_window"], true);
        assert_eq!(again["clusters_total"], first["clusters_total"]);
        assert_eq!(again["clusters_new"], 0);
        assert_eq!(again["new_error_records"], 0);
        assert_eq!(again["report"]["new_clusters"], json!([]));

        // The inspection shows its last run; the history lists both, newest first.
        let (_, insp) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(insp["last_run"]["id"], again["id"]);
        let (_, runs) = app.get(&format!("/api/v1/runs?inspection_id={id}")).await;
        let ids: Vec<&Value> = runs["items"].as_array().unwrap().iter().map(|r| &r["id"]).collect();
        assert_eq!(ids, [&again["id"], &first["id"]]);
        assert!(!runs.to_string().contains("test-secret-do-not-leak"));
        let _ = backend;
    }
}

#[tokio::test]
async fn a_new_kind_of_error_is_reported_once() {
    let (fake, _) = fake_with_invictus(FakeConfig::default()).await;
    let app = TestApp::new(Backend::Postgres).await;
    let mut body = inspection_body("new-kind", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["delivery_delay_minutes"] = json!(0);
    body["lookback_minutes"] = json!(70);
    let insp = app.create_inspection(body).await;
    let id = insp["id"].as_str().unwrap();
    let first = run(&app, id, json!({})).await;
    let known = first["clusters_total"].as_i64().unwrap();
    assert_eq!(first["clusters_new"], known);
    let first_end: DateTime<Utc> = first["window_end"].as_str().unwrap().parse().unwrap();

    // After the first window: one more known error and one never seen before.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = first_end.timestamp_millis();
    let known_again = json!({"eventVersion": "1.08", "eventTime": first_end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "ec2.amazonaws.com", "eventName": "DescribeRouteTables", "awsRegion": "us-east-1",
        "recipientAccountId": "123837392027", "errorCode": "Client.InvalidRouteTableID.NotFound",
        "errorMessage": "The routeTable ID 'rtb-0aaaaaaaaaaaaaaaa' does not exist", "eventID": "known-1",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123837392027:user/someone-else"}});
    let brand_new = json!({"eventVersion": "1.08", "eventTime": first_end.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "kms.amazonaws.com", "eventName": "ScheduleKeyDeletion", "awsRegion": "us-east-1",
        "recipientAccountId": "123837392027", "errorCode": "AccessDeniedException",
        "errorMessage": "User: arn:aws:iam::123837392027:user/mallory is not authorized to perform: kms:ScheduleKeyDeletion on resource: arn:aws:kms:us-east-1:123837392027:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "eventID": "new-1", "sourceIPAddress": "203.0.113.7",
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123837392027:user/mallory", "accessKeyId": "AKIAMALLORY000000001"}});
    fake.put_events(GROUP, "s2", [(t, known_again.to_string()), (t, brand_new.to_string())]);

    let second = run(&app, id, json!({})).await;
    assert_eq!(second["window_start"], first["window_end"], "consecutive windows touch: no gap, no overlap");
    assert_eq!(second["records_scanned"], 2);
    assert_eq!(second["clusters_total"], 2);
    assert_eq!(second["clusters_new"], 1);
    assert_eq!(second["new_error_records"], 1);
    let new = &second["report"]["new_clusters"][0];
    assert_eq!(new["event_source"], "kms.amazonaws.com");
    assert_eq!(new["error_code"], "AccessDeniedException");
    assert_eq!(new["template"], "User: <ARN> is not authorized to perform: kms:ScheduleKeyDeletion on resource: <ARN>");
    assert_eq!(new["top_principals"][0]["value"], "arn:aws:iam::123837392027:user/mallory");
    assert_eq!(new["top_source_ips"][0]["value"], "203.0.113.7");
    assert_eq!(new["sample_event_ids"], json!(["new-1"]));
    // mallory's key is listed as active in this window; keys idle this hour still show.
    let keys = second["report"]["access_keys"].as_array().unwrap();
    assert_eq!(keys[0]["access_key_id"], "AKIAMALLORY000000001");
    assert_eq!(keys[0]["active_in_window"], true);
    assert!(keys.iter().skip(1).all(|k| k["active_in_window"] == false));
    assert!(keys.len() > 1);

    // The known cluster grew; the new one is listed with its discovering run.
    let (_, known_list) = app.get(&format!("/api/v1/inspections/{id}/clusters?event_source=ec2.amazonaws.com&error_code=Client.InvalidRouteTableID.NotFound")).await;
    let rt = &known_list["items"][0];
    assert_eq!(rt["total_count"], 14);
    assert_eq!(rt["discovered_run_id"], first["id"]);
    assert_eq!(rt["last_run_id"], second["id"]);
    let (_, fresh) = app
        .get(&format!(
            "/api/v1/inspections/{id}/clusters?new_since={}",
            urlencode(second["created_at"].as_str().unwrap())
        ))
        .await;
    let fresh = fresh["items"].as_array().unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["event_name"], "ScheduleKeyDeletion");
    let (status, one) = app.get(&format!("/api/v1/clusters/{}", fresh[0]["id"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["sample_record"]["eventID"], "new-1");

    // Nothing new after that.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = run(&app, id, json!({})).await;
    assert_eq!(third["window_start"], second["window_end"]);
    assert_eq!(third["clusters_new"], 0);
    assert_eq!(third["records_scanned"], 0);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn the_baseline_makes_old_errors_known() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        let end = first_window_end();
        let old = |name: &str, code: &str, at: DateTime<Utc>, id: &str| {
            json!({"eventTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "s3.amazonaws.com",
                "eventName": name, "awsRegion": "eu-west-1", "recipientAccountId": "111122223333", "errorCode": code,
                "errorMessage": "The bucket policy does not exist", "eventID": id,
                "userIdentity": {"arn": "arn:aws:iam::111122223333:user/a"}})
            .to_string()
        };
        let two_days_ago = end - TimeDelta::days(2);
        let in_window = end - minutes(30);
        fake.put_events(
            GROUP,
            "s",
            [
                (two_days_ago.timestamp_millis(), old("GetBucketPolicy", "NoSuchBucketPolicy", two_days_ago, "b1")),
                (two_days_ago.timestamp_millis(), old("GetBucketAcl", "AccessDenied", two_days_ago, "b2")),
                (in_window.timestamp_millis(), old("GetBucketPolicy", "NoSuchBucketPolicy", in_window, "w1")),
                (in_window.timestamp_millis(), old("PutBucketPolicy", "AccessDenied", in_window, "w2")),
            ],
        );
        let app = TestApp::new(backend).await;
        let insp = app.create_inspection(inspection_body("baseline", &[GROUP], &fake.endpoint())).await;
        let first = run(&app, insp["id"].as_str().unwrap(), json!({})).await;
        assert_eq!(first["status"], "succeeded");
        assert_eq!(first["log_groups"][0]["baseline_read"], true);
        assert_eq!(first["clusters_total"], 2);
        assert_eq!(first["clusters_new"], 1, "GetBucketPolicy was already failing before: not new");
        assert_eq!(first["report"]["new_clusters"][0]["event_name"], "PutBucketPolicy");
        assert_eq!(first["baseline_clusters"], 2, "GetBucketPolicy and GetBucketAcl were taught by the baseline");
        let (_, all) = app.get(&format!("/api/v1/inspections/{}/clusters", insp["id"].as_str().unwrap())).await;
        let all = all["items"].as_array().unwrap();
        assert_eq!(all.len(), 3);
        let acl = all.iter().find(|c| c["event_name"] == "GetBucketAcl").unwrap();
        assert_eq!(acl["baseline"], true);
        let policy = all.iter().find(|c| c["event_name"] == "GetBucketPolicy").unwrap();
        assert_eq!(policy["total_count"], 2, "baseline and window records both counted, once each");
        assert_eq!(policy["baseline"], true, "learned from the baseline, though the window saw it too");
        // The baseline is read once per log group.
        let second = run(&app, insp["id"].as_str().unwrap(), json!({})).await;
        assert_eq!(second["log_groups"][0]["baseline_read"], false);
    }
}

#[tokio::test]
async fn a_missing_log_group_makes_the_run_partial_and_keeps_its_window() {
    for backend in BACKENDS {
        let (fake, _) = fake_with_invictus(FakeConfig::default()).await;
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("partial", &[GROUP, "no-such-group"], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let id = insp["id"].as_str().unwrap();
        let first = run(&app, id, json!({})).await;
        assert_eq!(first["status"], "partial");
        assert_eq!(first["log_groups"][0]["status"], "succeeded");
        assert_eq!(first["log_groups"][1]["status"], "failed");
        let err = first["log_groups"][1]["error"].as_str().unwrap();
        assert!(err.contains("ResourceNotFoundException"), "{err}");
        assert!(first["error"].as_str().unwrap().contains("1 of 2 log groups"));
        assert_eq!(first["error_records"], 300, "the readable group still counts");

        // The good group moved on; the missing one is read from its first window again.
        fake.create_log_group("no-such-group");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = run(&app, id, json!({})).await;
        assert_eq!(second["status"], "succeeded");
        assert_eq!(second["log_groups"][0]["window_start"], first["window_end"]);
        assert_eq!(second["log_groups"][1]["window_start"], first["log_groups"][1]["window_start"]);
    }
}

#[tokio::test]
async fn throttling_is_retried_and_counted() {
    let (fake, _) = fake_with_invictus(FakeConfig::default()).await;
    let app = TestApp::new(Backend::Sqlite).await;
    let mut body = inspection_body("throttled", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let insp = app.create_inspection(body).await;
    fake.fail_next("FilterLogEvents", 2, Fault::Throttling);
    let r = run(&app, insp["id"].as_str().unwrap(), json!({})).await;
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["error_records"], 300);
    assert_eq!(fake.throttled_count(), 2);
    // 3 FilterLogEvents attempts (2 throttled) + StartQuery + GetQueryResults polls.
    assert_eq!(fake.call_count("FilterLogEvents"), 3);
    let expected =
        fake.call_count("FilterLogEvents") + fake.call_count("StartQuery") + fake.call_count("GetQueryResults");
    assert_eq!(r["aws_api_calls"], expected as i64);
}

#[tokio::test]
async fn a_log_group_that_keeps_failing_fails_the_run_without_moving_it() {
    let (fake, _) = fake_with_invictus(FakeConfig::default()).await;
    let app = TestApp::new(Backend::Postgres).await;
    let mut body = inspection_body("failing", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["delivery_delay_minutes"] = json!(0);
    let insp = app.create_inspection(body).await;
    let id = insp["id"].as_str().unwrap();
    let first = run(&app, id, json!({})).await;
    assert_eq!(first["status"], "succeeded");

    fake.fail_log_group(GROUP, Fault::ServerError);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let calls = fake.call_count("FilterLogEvents");
    let second = run(&app, id, json!({})).await;
    assert_eq!(second["status"], "failed");
    let err = second["log_groups"][0]["error"].as_str().unwrap();
    assert!(err.contains("gave up after 4 attempts"), "{err}");
    assert_eq!(fake.call_count("FilterLogEvents"), calls + 4, "retries are bounded");
    assert_eq!(second["window_start"], first["window_end"]);

    // Back again: the window the failed run could not read is read now.
    fake.clear_faults();
    let late = second["window_start"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let record = json!({"eventTime": late.format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "iam.amazonaws.com",
        "eventName": "CreateAccessKey", "awsRegion": "us-east-1", "recipientAccountId": "123837392027",
        "errorCode": "LimitExceeded", "errorMessage": "Cannot exceed quota for AccessKeysPerUser: 2"});
    fake.put_events(GROUP, "late", [(late.timestamp_millis(), record.to_string())]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = run(&app, id, json!({})).await;
    assert_eq!(third["status"], "succeeded");
    assert_eq!(third["window_start"], second["window_start"], "the unread window is read again");
    assert_eq!(third["clusters_new"], 1);
    assert_eq!(third["report"]["new_clusters"][0]["event_name"], "CreateAccessKey");

    // Expired credentials are not retried.
    fake.fail_log_group(GROUP, Fault::ExpiredToken);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = fake.call_count("FilterLogEvents");
    let fourth = run(&app, id, json!({})).await;
    assert_eq!(fourth["status"], "failed");
    assert!(fourth["log_groups"][0]["error"].as_str().unwrap().contains("ExpiredTokenException"));
    assert_eq!(fake.call_count("FilterLogEvents"), before + 1);
}

#[tokio::test]
async fn logs_insights_finds_the_same_clusters() {
    let (fake, _) = fake_with_invictus(FakeConfig::default()).await;
    let app = TestApp::new(Backend::Sqlite).await;
    let mut fingerprints = Vec::new();
    for strategy in ["filter_log_events", "logs_insights"] {
        let mut body = inspection_body(strategy, &[GROUP], &fake.endpoint());
        body["baseline_days"] = json!(0);
        body["strategy"] = json!(strategy);
        let insp = app.create_inspection(body).await;
        let r = run(&app, insp["id"].as_str().unwrap(), json!({})).await;
        assert_eq!(r["status"], "succeeded", "{strategy}: {r}");
        assert_eq!(r["error_records"], 300, "{strategy}");
        let clusters = all_run_clusters(&app, r["id"].as_str().unwrap()).await;
        let set: BTreeMap<String, i64> = clusters
            .iter()
            .map(|c| (c["fingerprint"].as_str().unwrap().to_string(), c["count"].as_i64().unwrap()))
            .collect();
        fingerprints.push(set);
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
}

#[tokio::test]
async fn logs_insights_splits_windows_at_the_row_cap() {
    let (fake, _) = fake_with_invictus(FakeConfig { max_query_rows: 40, ..FakeConfig::default() }).await;
    let mut settings = crate::common::test_runner_settings();
    settings.cloudwatch.insights_max_rows = 40;
    let app = TestApp::with_settings(Backend::Sqlite, settings, Default::default()).await;
    let mut body = inspection_body("split", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["strategy"] = json!("logs_insights");
    let insp = app.create_inspection(body).await;
    let r = run(&app, insp["id"].as_str().unwrap(), json!({})).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["error_records"], 300, "no row lost to the cap");
    assert!(fake.call_count("StartQuery") > 3, "the window was split: {} queries", fake.call_count("StartQuery"));
    let (_, keys) =
        app.get(&format!("/api/v1/inspections/{}/access-keys?limit=200", insp["id"].as_str().unwrap())).await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 133, "key rows past the cap are kept too");
}

#[tokio::test]
async fn failed_console_sign_ins_and_malformed_records() {
    let fake = FakeCwl::start().await;
    let at = first_window_end() - minutes(20);
    let panther = data::panther();
    let mut events = Vec::new();
    let mut expected_failures = 0;
    for r in &panther {
        if r["eventName"] == "ConsoleLogin" {
            let mut r = r.clone();
            let failed = is_error(&r);
            if failed && r["eventTime"].is_string() {
                expected_failures += 1;
            }
            if r["eventTime"].is_string() {
                r["eventTime"] = json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
            events.push((at.timestamp_millis(), r.to_string()));
        }
    }
    // Records that pass the filter pattern but are not CloudTrail records the engine can use.
    events.push((at.timestamp_millis(), r#"{"errorCode": "AccessDenied", "eventSource": 7}"#.to_string()));
    events.push((at.timestamp_millis(), r#"{"errorCode": "AccessDenied", "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "eventTime": "soon"}"#.to_string()));
    fake.put_events(GROUP, "s", events);
    let app = TestApp::new(Backend::Sqlite).await;
    let mut body = inspection_body("sign-ins", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let insp = app.create_inspection(body).await;
    let r = run(&app, insp["id"].as_str().unwrap(), json!({})).await;
    assert_eq!(r["status"], "succeeded", "bad records never fail a run");
    assert!(expected_failures >= 2);
    assert_eq!(r["error_records"], expected_failures);
    let clusters = all_run_clusters(&app, r["id"].as_str().unwrap()).await;
    assert!(clusters.iter().all(|c| c["error_code"] == "ConsoleLoginFailure" && c["event_name"] == "ConsoleLogin"));
    assert_eq!(clusters.iter().map(|c| c["count"].as_i64().unwrap()).sum::<i64>(), expected_failures);
    // two crafted records plus the failed sign-ins whose eventTime is null
    assert!(r["malformed_records"].as_i64().unwrap() >= 2, "{r}");
}

#[tokio::test]
async fn ignore_rules_and_dry_runs() {
    let (fake, records) = fake_with_invictus(FakeConfig::default()).await;
    let app = TestApp::new(Backend::Postgres).await;
    let mut body = inspection_body("ignoring", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["ignore"] = json!({"error_codes": ["ThrottlingException"], "event_sources": ["s3.amazonaws.com"]});
    let insp = app.create_inspection(body).await;
    let id = insp["id"].as_str().unwrap();
    let throttled = records.iter().filter(|r| r["errorCode"] == "ThrottlingException").count() as i64;
    let s3 = records
        .iter()
        .filter(|r| is_error(r) && r["eventSource"] == "s3.amazonaws.com" && r["errorCode"] != "ThrottlingException")
        .count() as i64;

    let dry = run(&app, id, json!({"dry_run": true})).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["ignored_records"], throttled + s3);
    assert_eq!(dry["error_records"], 300 - throttled - s3);
    let clusters = all_run_clusters(&app, dry["id"].as_str().unwrap()).await;
    assert!(
        clusters.iter().all(|c| c["error_code"] != "ThrottlingException" && c["event_source"] != "s3.amazonaws.com")
    );
    assert!(clusters.iter().all(|c| c["cluster_id"].is_null()), "a dry run records no cluster");
    let (_, known) = app.get(&format!("/api/v1/inspections/{id}/clusters")).await;
    assert_eq!(known["items"], json!([]));

    // A dry run learned nothing: the real run still finds every cluster new, same window.
    let real = run(&app, id, json!({})).await;
    assert_eq!(real["clusters_new"], dry["clusters_new"]);
    assert_eq!(real["clusters_new"], real["clusters_total"]);
}

#[tokio::test]
async fn one_run_at_a_time_and_async_triggers() {
    for backend in BACKENDS {
        let (fake, _) =
            fake_with_invictus(FakeConfig { latency: Duration::from_millis(300), ..FakeConfig::default() }).await;
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("busy", &[GROUP], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let id = insp["id"].as_str().unwrap();

        let (status, headers, started) =
            app.call(axum::http::Method::POST, &format!("/api/v1/inspections/{id}/runs?wait=false"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{started}");
        let run_id = started["id"].as_str().unwrap().to_string();
        assert_eq!(headers["location"], format!("/api/v1/runs/{run_id}").as_str());
        assert!(matches!(started["status"].as_str(), Some("queued" | "running")));

        let (status, conflict) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(conflict["error"]["code"], "run_in_progress");
        assert_eq!(conflict["error"]["details"]["run_id"], run_id.as_str());

        let mut finished = Value::Null;
        for _ in 0..100 {
            let (_, r) = app.get(&format!("/api/v1/runs/{run_id}")).await;
            if r["status"] == "succeeded" {
                finished = r;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(finished["status"], "succeeded");
        assert_eq!(finished["error_records"], 300);
        // Free again.
        let next = run(&app, id, json!({})).await;
        assert_eq!(next["status"], "succeeded");
    }
}

#[tokio::test]
async fn trigger_errors() {
    let app = TestApp::new(Backend::Sqlite).await;
    let insp = app.create_inspection(inspection_body("errs", &["g"], "http://127.0.0.1:9")).await;
    let id = insp["id"].as_str().unwrap();

    let (status, v) = app.post("/api/v1/inspections/00000000-0000-7000-8000-000000000000/runs", json!({})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let (status, v) =
        app.post(&format!("/api/v1/inspections/{id}/runs"), json!({"window_start": "2026-01-01T00:00:00Z"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["window_end"].is_array());
    let (status, v) = app
        .post(
            &format!("/api/v1/inspections/{id}/runs"),
            json!({"window_start": "2026-01-02T00:00:00Z", "window_end": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (status, v) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({"log_groups": ["bad group"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["log_groups[0]"].is_array());
    let (status, v) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({"dryrun": true})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown field"));
    let (status, v) = app.post(&format!("/api/v1/inspections/{id}/runs?wait=perhaps"), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // An unreachable endpoint fails the run with the reason, not the request.
    let r = run(&app, id, json!({})).await;
    assert_eq!(r["status"], "failed");
    assert!(r["log_groups"][0]["error"].as_str().unwrap().contains("could not reach CloudWatch Logs"), "{r}");

    app.patch(&format!("/api/v1/inspections/{id}"), json!({"enabled": false})).await;
    let (status, v) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("inspection_disabled")));

    for path in [
        "/api/v1/runs/00000000-0000-7000-8000-000000000000",
        "/api/v1/runs/00000000-0000-7000-8000-000000000000/clusters",
        "/api/v1/clusters/00000000-0000-7000-8000-000000000000",
        "/api/v1/inspections/00000000-0000-7000-8000-000000000000/clusters",
        "/api/v1/inspections/00000000-0000-7000-8000-000000000000/access-keys",
    ] {
        let (status, v) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(v["error"]["code"], "not_found");
    }
    let (status, _) = app.get("/api/v1/runs?status=exploded").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get("/api/v1/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
