//! Helpers of the fake server's own tests: SDK clients pointed at the fake, the CloudTrail
//! sample data, and the exact filter pattern and queries the service sends.
#![allow(dead_code)]

use std::time::Duration;

use crate::common::data::records_dir;
use crate::common::fake_cwl::FakeCwl;
use aws_config::BehaviorVersion;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::retry::RetryConfig;
use aws_sdk_cloudwatchlogs::config::timeout::TimeoutConfig;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use aws_sdk_cloudwatchlogs::operation::get_query_results::GetQueryResultsOutput;
use aws_sdk_cloudwatchlogs::types::QueryStatus;
use serde_json::Value;

pub use cloudtrail_inspector::source::cloudwatch::ERROR_FILTER_PATTERN as SERVICE_PATTERN;

pub use cloudtrail_inspector::source::cloudwatch::ERROR_QUERY as ERRORS_QUERY;

pub use cloudtrail_inspector::source::cloudwatch::KEY_QUERY as ACCESS_KEYS_QUERY;

pub fn client(fake: &FakeCwl) -> Client {
    client_with(fake, RetryConfig::disabled(), None)
}

pub fn client_with(fake: &FakeCwl, retry: RetryConfig, attempt_timeout: Option<Duration>) -> Client {
    let mut timeouts = TimeoutConfig::builder();
    if let Some(t) = attempt_timeout {
        timeouts = timeouts.operation_attempt_timeout(t);
    }
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(fake.endpoint())
        .retry_config(retry)
        .timeout_config(timeouts.build())
        .build();
    Client::from_conf(conf)
}

/// invictus-ir records, file by file (sorted by name), each file's records in order.
pub fn invictus_files() -> Vec<(String, Vec<Value>)> {
    let dir = records_dir().join("invictus-ir/CloudTrail");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("invictus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, v["Records"].as_array().expect("Records").clone())
        })
        .collect()
}

pub fn panther_records() -> Vec<Value> {
    let text = std::fs::read_to_string(records_dir().join("panther-analysis/events.jsonl")).expect("read");
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("json line")).collect()
}

pub fn event_time_ms(rec: &Value) -> i64 {
    let t = rec["eventTime"].as_str().expect("eventTime");
    chrono::DateTime::parse_from_rfc3339(t).expect("rfc3339").timestamp_millis()
}

/// Seeds `group` with every invictus record, one stream per file, timestamped by eventTime.
/// Returns the records in storage order.
pub fn seed_invictus(fake: &FakeCwl, group: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for (stream, recs) in invictus_files() {
        fake.put_events(group, &stream, recs.iter().map(|r| (event_time_ms(r), r.to_string())));
        all.extend(recs);
    }
    all
}

/// Follows a JSON path of object keys; None when missing or null.
pub fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    (!cur.is_null()).then_some(cur)
}

pub fn get_str(v: &Value, path: &str) -> Option<String> {
    get(v, path).map(|x| match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Starts a query and polls until it is no longer running.
pub async fn run_query(
    client: &Client,
    groups: &[&str],
    start_s: i64,
    end_s: i64,
    query: &str,
    limit: Option<i32>,
) -> GetQueryResultsOutput {
    let started = client
        .start_query()
        .set_log_group_names(Some(groups.iter().map(|g| g.to_string()).collect()))
        .start_time(start_s)
        .end_time(end_s)
        .query_string(query)
        .set_limit(limit)
        .send()
        .await
        .expect("start_query");
    let id = started.query_id().expect("queryId").to_string();
    for _ in 0..200 {
        let out = client.get_query_results().query_id(&id).send().await.expect("get_query_results");
        if !matches!(out.status(), Some(QueryStatus::Running | QueryStatus::Scheduled)) {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("query {id} never finished");
}

/// A result row as (field, value) pairs.
pub fn row_map(row: &[aws_sdk_cloudwatchlogs::types::ResultField]) -> Vec<(String, String)> {
    row.iter().map(|f| (f.field().unwrap_or_default().to_string(), f.value().unwrap_or_default().to_string())).collect()
}

pub fn field<'a>(row: &'a [(String, String)], name: &str) -> Option<&'a str> {
    row.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub fn format_ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}
