//! FilterLogEvents through the real SDK: paging, time ranges, filter patterns on CloudTrail
//! data, validation errors and the request quota.

use std::collections::HashSet;
use std::time::Duration;

use super::helpers::*;
use crate::common::fake_cwl::{FakeConfig, FakeCwl};
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::operation::filter_log_events::builders::FilterLogEventsFluentBuilder;
use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;
use serde_json::Value;

/// Follows nextToken to the end; returns each page's events.
async fn all_pages(req: FilterLogEventsFluentBuilder) -> Vec<Vec<FilteredLogEvent>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = req.clone().set_next_token(token.clone()).send().await.expect("filter_log_events");
        pages.push(out.events().to_vec());
        match out.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return pages,
        }
        assert!(pages.len() < 1000, "runaway paging");
    }
}

fn flatten(pages: &[Vec<FilteredLogEvent>]) -> Vec<FilteredLogEvent> {
    pages.iter().flatten().cloned().collect()
}

fn filter(client: &Client, group: &str) -> FilterLogEventsFluentBuilder {
    client.filter_log_events().log_group_name(group)
}

#[tokio::test]
async fn pages_stop_at_10000_events_and_resume_exactly() {
    let fake = FakeCwl::start().await;
    // Three streams with interleaved timestamps, so order across streams matters.
    for s in 0..3i64 {
        fake.put_events(
            "g",
            &format!("stream-{s}"),
            (0..8_334i64).map(move |i| (1_000 + i * 3 + s, format!("s{s} e{i}"))),
        );
    }
    let client = client(&fake);
    let pages = all_pages(filter(&client, "g")).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10_000, 10_000, 5_002]);
    let events = flatten(&pages);
    let ids: HashSet<_> = events.iter().map(|e| e.event_id().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 25_002, "no event twice");
    let ts: Vec<i64> = events.iter().map(|e| e.timestamp().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "timestamp order across streams");
    let first = &events[0];
    assert_eq!(first.log_stream_name(), Some("stream-0"));
    assert_eq!(first.message(), Some("s0 e0"));
    assert!(first.ingestion_time().is_some());
    assert_eq!(fake.call_count("FilterLogEvents"), 3);
    // The SDK's own paginator follows the tokens too.
    let pages = filter(&client, "g").into_paginator().send().collect::<Vec<_>>().await;
    let total: usize = pages.into_iter().map(|p| p.expect("page").events().len()).sum();
    assert_eq!(total, 25_002);
}

#[tokio::test]
async fn pages_stop_before_one_megabyte_of_messages() {
    let fake = FakeCwl::start().await;
    let msg = |i: i64| format!("{i:06}{}", "x".repeat(494)); // 500 bytes
    fake.put_events("g", "s", (0..5_000i64).map(|i| (i, msg(i))));
    let client = client(&fake);
    let pages = all_pages(filter(&client, "g")).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    // 1,048,576 / 500 = 2,097.15: the 2,098th event would pass 1 MB.
    assert_eq!(sizes, [2_097, 2_097, 806]);
    for p in &pages {
        let bytes: usize = p.iter().map(|e| e.message().unwrap().len()).sum();
        assert!(bytes <= 1_048_576);
    }
    let events = flatten(&pages);
    assert!(events.iter().enumerate().all(|(i, e)| e.message() == Some(msg(i as i64).as_str())));
    let sizes: Vec<usize> = fake.calls().iter().map(|c| c.response_bytes).collect();
    assert!(sizes.iter().all(|b| *b < 1_048_576 + 2_097 * 200), "{sizes:?}");
}

#[tokio::test]
async fn page_size_follows_limit_and_config() {
    let fake =
        FakeCwl::start_with(FakeConfig { max_page_events: 40, max_page_bytes: 1_000, ..FakeConfig::default() }).await;
    fake.put_events("g", "s", (0..100i64).map(|i| (i, format!("m{i:03}"))));
    let client = client(&fake);
    let sizes: Vec<usize> = all_pages(filter(&client, "g").limit(7)).await.iter().map(Vec::len).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(sizes[..sizes.len() - 1].iter().all(|s| *s == 7));
    let sizes: Vec<usize> = all_pages(filter(&client, "g")).await.iter().map(Vec::len).collect();
    assert_eq!(sizes, [40, 40, 20]);
    // 100-byte messages: the byte cap (10 per page) bites before the event cap (40).
    fake.put_events("h", "s", (0..95i64).map(|i| (i, format!("{i:0100}"))));
    let sizes: Vec<usize> = all_pages(filter(&client, "h").limit(10_000)).await.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
    let err = filter(&client, "g").limit(10_001).send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_parameter_exception());
}

#[tokio::test]
async fn time_range_is_inclusive_at_both_ends() {
    let fake = FakeCwl::start().await;
    fake.put_events("g", "s", [999, 1_000, 1_500, 2_000, 2_001].map(|t| (t, format!("at {t}"))));
    let client = client(&fake);
    let out = filter(&client, "g").start_time(1_000).end_time(2_000).send().await.unwrap();
    let ts: Vec<i64> = out.events().iter().map(|e| e.timestamp().unwrap()).collect();
    assert_eq!(ts, [1_000, 1_500, 2_000]);
    assert!(out.next_token().is_none());
    let out = filter(&client, "g").start_time(2_000).end_time(2_000).send().await.unwrap();
    assert_eq!(out.events().len(), 1);
}

#[tokio::test]
async fn stream_names_and_group_arn() {
    let fake = FakeCwl::start().await;
    fake.put_events("g", "a", [(3, "a3".to_string()), (1, "a1".to_string())]);
    fake.put_events("g", "b", [(2, "b2".to_string())]);
    fake.put_events("g", "c", [(0, "c0".to_string())]);
    let client = client(&fake);
    let out = client
        .filter_log_events()
        .log_group_identifier("arn:aws:logs:us-east-1:123456789012:log-group:g:*")
        .log_stream_names("a")
        .log_stream_names("b")
        .send()
        .await
        .unwrap();
    let msgs: Vec<&str> = out.events().iter().map(|e| e.message().unwrap()).collect();
    assert_eq!(msgs, ["a1", "b2", "a3"]);
    assert_eq!(fake.calls()[0].log_groups, ["g"]);
    let err = client.filter_log_events().log_group_name("g").log_group_identifier("g").send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_parameter_exception());
}

/// What the service's pattern means, computed straight from a record.
fn service_pattern_matches(r: &Value) -> bool {
    let value_node = |v: Option<&Value>| matches!(v, Some(Value::String(_) | Value::Number(_) | Value::Bool(_)));
    value_node(r.get("errorCode"))
        || (get_str(r, "eventName").as_deref() == Some("ConsoleLogin")
            && (get_str(r, "responseElements.ConsoleLogin").as_deref() == Some("Failure")
                || get_str(r, "errorMessage").as_deref() == Some("Failed authentication")))
}

#[tokio::test]
async fn service_pattern_on_invictus_records() {
    let fake = FakeCwl::start().await;
    let records = seed_invictus(&fake, "trail");
    assert_eq!(records.len(), 2_900);
    let expected: HashSet<String> =
        records.iter().filter(|r| service_pattern_matches(r)).map(|r| get_str(r, "eventID").unwrap()).collect();
    assert_eq!(expected.len(), 300);

    let client = client(&fake);
    let events = flatten(&all_pages(filter(&client, "trail").filter_pattern(SERVICE_PATTERN)).await);
    let got: HashSet<String> = events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e.message().unwrap()).unwrap();
            get_str(&v, "eventID").unwrap()
        })
        .collect();
    assert_eq!(events.len(), 300);
    assert_eq!(got, expected);
    assert_eq!(fake.calls()[0].filter_pattern.as_deref(), Some(SERVICE_PATTERN));
}

#[tokio::test]
async fn service_pattern_on_panther_records_finds_failed_console_logins() {
    let fake = FakeCwl::start().await;
    let records = panther_records();
    assert_eq!(records.len(), 453);
    // Rule fixtures carry placeholder times; the pattern test needs none.
    fake.put_events(
        "trail",
        "s",
        records.iter().enumerate().map(|(i, r)| (1_700_000_000_000 + i as i64, r.to_string())),
    );
    let failed_logins: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            get_str(r, "eventName").as_deref() == Some("ConsoleLogin")
                && r.get("errorCode").is_none()
                && service_pattern_matches(r)
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed_logins.len(), 5);
    let expected: Vec<usize> = (0..records.len()).filter(|i| service_pattern_matches(&records[*i])).collect();
    // 67 records carry errorCode (one of them ""), plus the 5 failed sign-ins.
    assert_eq!(expected.len(), 72);

    let client = client(&fake);
    let events = flatten(&all_pages(filter(&client, "trail").filter_pattern(SERVICE_PATTERN)).await);
    let got: Vec<usize> = events.iter().map(|e| (e.timestamp().unwrap() - 1_700_000_000_000) as usize).collect();
    assert_eq!(got, expected);
    assert!(failed_logins.iter().all(|i| got.contains(i)));
}

#[tokio::test]
async fn json_pattern_never_matches_non_json_and_terms_work() {
    let fake = FakeCwl::start().await;
    fake.put_events(
        "g",
        "s",
        [
            (1, r#"{"errorCode":"AccessDenied"}"#.to_string()),
            (2, "errorCode = AccessDenied ERROR".to_string()),
            (3, r#"{"level":"ERROR","errorCode":null}"#.to_string()),
        ],
    );
    let client = client(&fake);
    let count = |p: &'static str| {
        let c = client.clone();
        async move { flatten(&all_pages(filter(&c, "g").filter_pattern(p)).await).len() }
    };
    assert_eq!(count(r#"{ $.errorCode = "*" }"#).await, 1);
    assert_eq!(count(r#"{ $.errorCode IS NULL }"#).await, 1);
    assert_eq!(count(r#"{ $.errorCode NOT EXISTS }"#).await, 0);
    assert_eq!(count("ERROR").await, 2);
    assert_eq!(count("?AccessDenied ?level").await, 3);
    assert_eq!(count("ERROR -AccessDenied").await, 1);
    assert_eq!(count("").await, 3);
}

#[tokio::test]
async fn unparsable_patterns_are_invalid_parameter() {
    let fake = FakeCwl::start().await;
    fake.put_events("g", "s", [(1, "{}".to_string())]);
    let client = client(&fake);
    for p in [
        r#"{ $.errorCode = "*" "#,
        r#"{ ($.errorCode = "*") || }"#,
        r#"{ $.errorCode == "x" }"#,
        "{ errorCode = x }",
        "[ip, user]",
        "%ERR.*%",
    ] {
        let err = filter(&client, "g").filter_pattern(p).send().await.unwrap_err();
        let status = err.raw_response().map(|r| r.status().as_u16());
        let se = err.into_service_error();
        assert!(se.is_invalid_parameter_exception(), "{p}: {se:?}");
        assert_eq!(status, Some(400));
    }
}

#[tokio::test]
async fn unknown_group_is_resource_not_found() {
    let fake = FakeCwl::start().await;
    let client = client(&fake);
    let err = filter(&client, "nope").send().await.unwrap_err();
    let se = err.into_service_error();
    assert!(se.is_resource_not_found_exception(), "{se:?}");
    assert_eq!(se.message(), Some("The specified log group does not exist."));
    fake.create_log_group("made");
    let out = filter(&client, "made").send().await.unwrap();
    assert!(out.events().is_empty() && out.next_token().is_none());
    fake.delete_log_group("made");
    let err = filter(&client, "made").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn quota_answers_throttling_that_the_sdk_sees_as_such() {
    let fake = FakeCwl::start_with(FakeConfig { filter_rps: Some(5.0), ..FakeConfig::default() }).await;
    fake.create_log_group("g");
    let client = client(&fake); // retries disabled
    let mut ok = 0;
    let mut throttled = 0;
    for _ in 0..10 {
        match filter(&client, "g").send().await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
                let se = e.into_service_error();
                assert_eq!(se.code(), Some("ThrottlingException"));
                assert_eq!(se.message(), Some("Rate exceeded"));
                throttled += 1;
            }
        }
    }
    // A burst of 5, then 5 per second: a slow machine may earn a token back meanwhile.
    assert!((5..=7).contains(&ok), "{ok} calls passed");
    assert_eq!(ok + throttled, 10);
    assert_eq!(fake.throttled_count(), throttled);
    tokio::time::sleep(Duration::from_millis(450)).await;
    filter(&client, "g").send().await.expect("refilled after 0.2 s per token");
    // Other operations are not under the FilterLogEvents quota.
    for _ in 0..10 {
        client.describe_log_groups().send().await.unwrap();
    }
}
