//! Logs Insights through the real SDK: the service's two queries on CloudTrail data (checked
//! against aggregates computed here from the records), caps, timing and limits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::helpers::*;
use crate::common::fake_cwl::{FakeConfig, FakeCwl};
use aws_sdk_cloudwatchlogs::types::QueryStatus;
use serde_json::Value;

/// Seconds covering every invictus record (both ends inclusive).
fn invictus_range(records: &[Value]) -> (i64, i64) {
    let ts: Vec<i64> = records.iter().map(event_time_ms).collect();
    (ts.iter().min().unwrap() / 1000, ts.iter().max().unwrap() / 1000)
}

fn coalesce(r: &Value, paths: &[&str], default: &str) -> String {
    paths.iter().find_map(|p| get_str(r, p)).unwrap_or_else(|| default.to_string())
}

#[derive(Debug, Default)]
struct Agg {
    count: u64,
    first: i64,
    last: i64,
    /// (timestamp, storage index, value) of the latest record with the field.
    latest: HashMap<&'static str, (i64, usize, String)>,
}

impl Agg {
    fn add(&mut self, ts: i64, idx: usize, r: &Value, latest_fields: &[&'static str]) {
        if self.count == 0 {
            self.first = ts;
            self.last = ts;
        }
        self.count += 1;
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
        for f in latest_fields {
            if let Some(v) = get_str(r, f) {
                let e = self.latest.entry(f).or_insert((ts, idx, v.clone()));
                if (ts, idx) >= (e.0, e.1) {
                    *e = (ts, idx, v);
                }
            }
        }
    }

    fn latest(&self, f: &str) -> Option<&str> {
        self.latest.get(f).map(|(_, _, v)| v.as_str())
    }
}

#[tokio::test]
async fn errors_query_matches_aggregates_of_the_records() {
    let fake = FakeCwl::start().await;
    let records = seed_invictus(&fake, "trail");
    let (start, end) = invictus_range(&records);

    type Key = (String, String, Option<String>, Option<String>, String, String, String, String);
    let mut expected: HashMap<Key, Agg> = HashMap::new();
    for (idx, r) in records.iter().enumerate() {
        let failed_login = get_str(r, "eventName").as_deref() == Some("ConsoleLogin")
            && (get_str(r, "responseElements.ConsoleLogin").as_deref() == Some("Failure")
                || get_str(r, "errorMessage").as_deref() == Some("Failed authentication"));
        if get(r, "errorCode").is_none() && !failed_login {
            continue;
        }
        let key = (
            coalesce(r, &["recipientAccountId", "userIdentity.accountId"], ""),
            coalesce(r, &["awsRegion"], ""),
            get_str(r, "eventSource"),
            get_str(r, "eventName"),
            coalesce(r, &["errorCode"], "ConsoleLoginFailure"),
            coalesce(r, &["errorMessage"], ""),
            coalesce(r, &["userIdentity.arn", "userIdentity.invokedBy", "userIdentity.type"], ""),
            coalesce(r, &["sourceIPAddress"], ""),
        );
        expected.entry(key).or_default().add(event_time_ms(r), idx, r, &["eventID"]);
    }
    assert_eq!(expected.values().map(|a| a.count).sum::<u64>(), 300);

    let client = client(&fake);
    let out = run_query(&client, &["trail"], start, end, ERRORS_QUERY, None).await;
    assert_eq!(out.status(), Some(&QueryStatus::Complete));
    let stats = out.statistics().unwrap();
    assert_eq!(stats.records_matched(), 300.0);
    assert_eq!(stats.records_scanned(), 2_900.0);
    let rows: Vec<_> = out.results().iter().map(|r| row_map(r)).collect();
    assert_eq!(rows.len(), expected.len());
    let mut total = 0;
    for row in &rows {
        let s = |f: &str| field(row, f).map(str::to_string);
        let key: Key = (
            s("ct_account").unwrap(),
            s("ct_region").unwrap(),
            s("eventSource"),
            s("eventName"),
            s("ct_error_code").unwrap(),
            s("ct_error_message").unwrap(),
            s("ct_principal").unwrap(),
            s("ct_source_ip").unwrap(),
        );
        let want = expected.get(&key).unwrap_or_else(|| panic!("unexpected group {key:?}"));
        let count: u64 = field(row, "ct_count").unwrap().parse().unwrap();
        assert_eq!(count, want.count, "{key:?}");
        assert_eq!(field(row, "ct_first"), Some(format_ts(want.first).as_str()));
        assert_eq!(field(row, "ct_last"), Some(format_ts(want.last).as_str()));
        assert_eq!(field(row, "ct_event_id"), want.latest("eventID"));
        total += count;
        // Columns: the `by` fields first, then the aggregates.
        assert_eq!(row[0].0, "ct_account");
        assert_eq!(row.last().unwrap().0, "ct_event_id");
    }
    assert_eq!(total, 300);
    assert_eq!(fake.calls()[0].query.as_deref(), Some(ERRORS_QUERY));
}

#[tokio::test]
async fn access_keys_query_matches_aggregates_of_the_records() {
    let fake = FakeCwl::start().await;
    let records = seed_invictus(&fake, "trail");
    let (start, end) = invictus_range(&records);
    let latest_fields = ["userIdentity.arn", "recipientAccountId", "eventName", "sourceIPAddress"];
    let mut expected: HashMap<String, Agg> = HashMap::new();
    for (idx, r) in records.iter().enumerate() {
        if let Some(k) = get_str(r, "userIdentity.accessKeyId") {
            expected.entry(k).or_default().add(event_time_ms(r), idx, r, &latest_fields);
        }
    }
    assert_eq!(expected.len(), 134, "133 key ids plus the empty string");

    let client = client(&fake);
    let out = run_query(&client, &["trail"], start, end, ACCESS_KEYS_QUERY, None).await;
    let rows: Vec<_> = out.results().iter().map(|r| row_map(r)).collect();
    assert_eq!(rows.len(), 134);
    for row in &rows {
        let key = field(row, "userIdentity.accessKeyId").expect("group field");
        let want = &expected[key];
        assert_eq!(field(row, "ct_count").unwrap().parse::<u64>().unwrap(), want.count);
        assert_eq!(field(row, "ct_last"), Some(format_ts(want.last).as_str()));
        assert_eq!(field(row, "ct_principal"), want.latest("userIdentity.arn"));
        assert_eq!(field(row, "ct_account"), want.latest("recipientAccountId"));
        assert_eq!(field(row, "ct_event_name"), want.latest("eventName"));
        assert_eq!(field(row, "ct_source_ip"), want.latest("sourceIPAddress"));
    }
    let total: u64 = expected.values().map(|a| a.count).sum();
    assert_eq!(out.statistics().unwrap().records_matched(), total as f64);
}

#[tokio::test]
async fn rows_are_capped_at_10000_and_at_the_limit_parameter() {
    let fake = FakeCwl::start().await;
    fake.put_events("g", "s", (0..12_000i64).map(|i| (1_000_000 + i, format!(r#"{{"k":"k{i}"}}"#))));
    let client = client(&fake);
    let out = run_query(&client, &["g"], 0, 2_000, "stats count(*) as n by k", None).await;
    assert_eq!(out.results().len(), 10_000);
    assert_eq!(out.statistics().unwrap().records_matched(), 12_000.0);
    let out = run_query(&client, &["g"], 0, 2_000, "fields k", Some(10_000)).await;
    assert_eq!(out.results().len(), 10_000);
    // Newest first when no sort is given.
    assert_eq!(field(&row_map(&out.results()[0]), "k"), Some("k11999"));
    let out = run_query(&client, &["g"], 0, 2_000, "fields k", Some(50)).await;
    assert_eq!(out.results().len(), 50);
    let out = run_query(&client, &["g"], 0, 2_000, "fields k | limit 20", None).await;
    assert_eq!(out.results().len(), 20);
    let err = client
        .start_query()
        .log_group_name("g")
        .start_time(0)
        .end_time(1)
        .query_string("fields k")
        .limit(10_001)
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_invalid_parameter_exception());

    let small = FakeCwl::start_with(FakeConfig { max_query_rows: 100, ..FakeConfig::default() }).await;
    small.put_events("g", "s", (0..500i64).map(|i| (i * 1000, format!("m{i}"))));
    let out = run_query(&self::client(&small), &["g"], 0, 1_000, "fields @message", None).await;
    assert_eq!(out.results().len(), 100);
}

#[tokio::test]
async fn time_range_is_inclusive_in_whole_seconds() {
    let fake = FakeCwl::start().await;
    fake.put_events("g", "s", [999, 1_000, 2_999, 3_000].map(|t| (t, format!("m{t}"))));
    let client = client(&fake);
    let out = run_query(&client, &["g"], 1, 2, "fields @timestamp, @message | sort @timestamp asc", None).await;
    let rows: Vec<_> = out.results().iter().map(|r| row_map(r)).collect();
    let msgs: Vec<_> = rows.iter().map(|r| field(r, "@message").unwrap()).collect();
    assert_eq!(msgs, ["m1000", "m2999"]);
    assert_eq!(field(&rows[0], "@timestamp"), Some("1970-01-01 00:00:01.000"));
}

#[tokio::test]
async fn query_runs_for_the_configured_time_then_completes() {
    let fake =
        FakeCwl::start_with(FakeConfig { query_duration: Duration::from_millis(800), ..FakeConfig::default() }).await;
    fake.put_events("g", "s", [(1_000, r#"{"a":"b"}"#.to_string())]);
    let client = client(&fake);
    let started = Instant::now();
    let id = client
        .start_query()
        .log_group_identifiers("arn:aws:logs:us-east-1:123456789012:log-group:g")
        .start_time(0)
        .end_time(10)
        .query_string("stats count(*) as n")
        .send()
        .await
        .unwrap()
        .query_id()
        .unwrap()
        .to_string();
    let out = client.get_query_results().query_id(&id).send().await.unwrap();
    assert_eq!(out.status(), Some(&QueryStatus::Running));
    assert!(out.results().is_empty());
    let done = loop {
        let out = client.get_query_results().query_id(&id).send().await.unwrap();
        if out.status() != Some(&QueryStatus::Running) {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(done.status(), Some(&QueryStatus::Complete));
    assert_eq!(field(&row_map(&done.results()[0]), "n"), Some("1"));
    let calls = fake.calls();
    assert_eq!(calls[0].log_groups, ["g"]);
    assert_eq!(calls[1].log_groups, ["g"], "GetQueryResults touches the query's groups");
}

#[tokio::test]
async fn concurrent_running_queries_are_limited() {
    let fake = FakeCwl::start_with(FakeConfig {
        query_duration: Duration::from_secs(30),
        max_concurrent_queries: 2,
        ..FakeConfig::default()
    })
    .await;
    fake.create_log_group("g");
    let client = client(&fake);
    let start =
        || client.start_query().log_group_name("g").start_time(0).end_time(10).query_string("fields @message").send();
    let first = start().await.unwrap().query_id().unwrap().to_string();
    start().await.unwrap();
    let err = start().await.unwrap_err().into_service_error();
    assert!(err.is_limit_exceeded_exception(), "{err:?}");

    let stopped = client.stop_query().query_id(&first).send().await.unwrap();
    assert!(stopped.success());
    let out = client.get_query_results().query_id(&first).send().await.unwrap();
    assert_eq!(out.status(), Some(&QueryStatus::Cancelled));
    start().await.expect("a slot is free again");
    let again = client.stop_query().query_id(&first).send().await.unwrap();
    assert!(!again.success(), "already stopped");
}

#[tokio::test]
async fn bad_queries_and_groups_are_rejected() {
    let fake = FakeCwl::start().await;
    fake.create_log_group("g");
    let client = client(&fake);
    for q in
        ["stats foo(x)", "filter ispresent(", r#"parse @message "* *" as a, b"#, "fields a | sort", "filter a =~ /x/"]
    {
        let err = client
            .start_query()
            .log_group_name("g")
            .start_time(0)
            .end_time(10)
            .query_string(q)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_malformed_query_exception(), "{q}: {err:?}");
    }
    let err = client
        .start_query()
        .log_group_names("g")
        .log_group_names("missing")
        .start_time(0)
        .end_time(10)
        .query_string("fields @message")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let many: Vec<String> = (0..51).map(|i| format!("g{i}")).collect();
    for g in &many {
        fake.create_log_group(g);
    }
    let err = client
        .start_query()
        .set_log_group_names(Some(many))
        .start_time(0)
        .end_time(10)
        .query_string("fields @message")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_parameter_exception(), "{err:?}");
    let err = client.get_query_results().query_id("no-such-query").send().await.unwrap_err().into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
}

#[tokio::test]
async fn queries_span_several_groups() {
    let fake = FakeCwl::start().await;
    fake.put_events("a", "s", [(1_000, r#"{"k":"x"}"#.to_string())]);
    fake.put_events("b", "s", [(2_000, r#"{"k":"x"}"#.to_string())]);
    let client = client(&fake);
    let out = run_query(
        &client,
        &["a", "b"],
        0,
        10,
        "stats count(*) as n, earliest(@log) as first_log, latest(@log) as last_log by k",
        None,
    )
    .await;
    let row = row_map(&out.results()[0]);
    assert_eq!(field(&row, "n"), Some("2"));
    assert_eq!(field(&row, "first_log"), Some("123456789012:a"));
    assert_eq!(field(&row, "last_log"), Some("123456789012:b"));
}
