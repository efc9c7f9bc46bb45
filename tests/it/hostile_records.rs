//! Malformed and adversarial CloudTrail records, served by the fake CloudWatch Logs and from
//! files: huge fields, deep nesting, wrong types, lone surrogates and raw invalid UTF-8, NUL
//! and other control characters, injection attempts. A run counts and skips what it cannot
//! use, repairs what it can do without (counted as warned), clusters the rest, stores it on both backends (Postgres refuses NUL in text and
//! jsonb) and shows it back as valid JSON.

use axum::http::StatusCode;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::fake_cwl::FakeCwl;
use crate::common::{BACKENDS, TestApp, inspection_body};

const GROUP: &str = "hostile-trail";

fn at() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(30)).duration_trunc(TimeDelta::seconds(1)).unwrap()
}

fn record(fields: Value) -> Value {
    let mut r = json!({"eventTime": at().format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject", "awsRegion": "us-east-1", "recipientAccountId": "111122223333",
        "errorCode": "AccessDenied", "errorMessage": "Access Denied",
        "userIdentity": {"arn": "arn:aws:iam::111122223333:user/alice", "accessKeyId": "AKIAHOSTILE000000001"}});
    for (k, v) in fields.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// Records the engine must accept (and render safely), and records it must skip.
fn hostile() -> (Vec<String>, Vec<String>) {
    let nul_and_controls = "denied\u{0}\u{7}\u{1b}[2J\r\nDROP TABLE runs; -- \u{202e}gnp.exe";
    let usable = vec![
        // A 200 KB message (CloudWatch's event limit is 256 KB).
        record(json!({"errorCode": "HugeMessage", "errorMessage": "x".repeat(200_000)})).to_string(),
        // NUL, bell, escape sequences, CR/LF, SQL and bidi overrides in every shown field.
        record(
            json!({"errorCode": "Nul\u{0}Code", "eventName": "Get\u{0}Object\n## x", "errorMessage": nul_and_controls,
            "sourceIPAddress": "1.2.3.4\u{0}", "userAgent": "ua\u{0}\u{1b}",
            "userIdentity": {"arn": "arn:aws:iam::111122223333:user/\u{0}evil", "accessKeyId": "AKIA\u{0}NUL"},
            "requestParameters": {"bucket\u{0}": "\u{0}"}}),
        )
        .to_string(),
        // Markdown and line-protocol metacharacters in the message.
        record(
            json!({"errorCode": "Inject", "errorMessage": "`a` | b=1,c=\"d\" \\ [x](javascript:alert(1)) <script>"}),
        )
        .to_string(),
        // Deep but legal nesting in a field the engine does not read.
        record(json!({"errorCode": "Nested", "requestParameters": nested(100)})).to_string(),
        // A wrong type where the engine can do without it: read as its text, and warned.
        record(json!({"errorCode": 42})).to_string(),
    ];
    let skipped = vec![
        // Nesting far past any parser's limit.
        format!(
            r#"{{"eventTime":"{}","eventSource":"s3.amazonaws.com","eventName":"GetObject","errorCode":"Deep","requestParameters":{}{}}}"#,
            at().format("%Y-%m-%dT%H:%M:%SZ"),
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        // Wrong types where the engine cannot do without the field.
        record(json!({"eventName": {"a": 1}, "eventSource": ["x"]})).to_string(),
        record(json!({"eventTime": 1234})).to_string(),
        // A lone surrogate escape: valid JSON syntax, not a valid string.
        r#"{"eventTime":"2026-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","errorCode":"AccessDenied","errorMessage":"\ud800"}"#
            .replace("2026-01-01T00:00:00Z", &at().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        // Not a record at all.
        r#"{"errorCode": "AccessDenied""#.to_string(),
        r#"["errorCode", "AccessDenied"]"#.to_string(),
        "null".to_string(),
    ];
    (usable, skipped)
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!({ "n": inner }))
}

async fn all_clusters(app: &TestApp, run_id: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/api/v1/runs/{run_id}/clusters?limit=200")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn hostile_records_from_cloudwatch_are_counted_skipped_or_stored_safely() {
    let (usable, skipped) = hostile();
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        let t = at().timestamp_millis();
        fake.put_events(GROUP, "s", usable.iter().chain(&skipped).map(|m| (t, m.clone())));
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("hostile", &[GROUP], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let (status, run) =
            app.post(&format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {run}");
        assert_eq!(run["status"], "succeeded", "{backend:?}: hostile records never fail a run: {run}");
        assert_eq!(run["error_records"], usable.len() as i64, "{backend:?}: {run}");
        // The filter pattern keeps some of the broken ones on AWS's side (no string
        // errorCode); every record that did arrive is either clustered or counted as skipped.
        let malformed = run["malformed_records"].as_i64().unwrap();
        assert!(malformed >= 2, "{backend:?}: {run}");
        assert_eq!(run["warned_records"], 1, "{backend:?}: the numeric errorCode");
        assert_eq!(run["records_scanned"].as_i64().unwrap(), usable.len() as i64 + malformed, "{backend:?}: {run}");

        let clusters = all_clusters(&app, run["id"].as_str().unwrap()).await;
        assert_eq!(clusters.len(), usable.len(), "{backend:?}: {clusters:?}");
        for c in &clusters {
            let text = c.to_string();
            assert!(text.len() < 64 * 1024, "{backend:?}: shown clusters stay small ({} bytes)", text.len());
            let (status, full) = app.get(&format!("/api/v1/clusters/{}", c["cluster_id"].as_str().unwrap())).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: {full}");
        }
        let huge = clusters.iter().find(|c| c["error_code"] == "HugeMessage").unwrap();
        assert!(huge["template"].as_str().unwrap().len() <= 2048 * 4, "{backend:?}");
        let nul = clusters.iter().find(|c| c["error_code"].as_str().unwrap().starts_with("Nul")).unwrap();
        let shown = nul.to_string();
        assert!(!nul["template"].as_str().unwrap().chars().any(char::is_control), "{backend:?}: {nul}");
        assert!(shown.contains("DROP TABLE runs"), "text is kept as text: {shown}");

        // The report and the event computed from it are intact JSON too.
        let (status, stored) = app.get(&format!("/api/v1/runs/{}", run["id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stored["report"]["new_clusters"].as_array().unwrap().len(), usable.len());
    }
}

#[tokio::test]
async fn raw_invalid_utf8_in_files_is_repaired_and_the_rest_read() {
    let dir = tempfile::tempdir().unwrap();
    let good = record(json!({"errorCode": "GoodOne"})).to_string();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(good.as_bytes());
    bytes.push(b'\n');
    // A record whose message holds bytes that are not UTF-8, and a line of pure garbage.
    let bad = record(json!({"errorCode": "BadBytes", "errorMessage": "MARK"})).to_string();
    let (head, tail) = bad.split_once("MARK").unwrap();
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    bytes.extend_from_slice(tail.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&[0x80, 0x81, 0x00, b'\n']);
    std::fs::write(dir.path().join("records.jsonl"), bytes).unwrap();

    let http =
        cloudtrail_inspector::http::HttpSettings { files_root: Some(dir.path().to_path_buf()), ..Default::default() };
    for backend in BACKENDS {
        let app = TestApp::with_settings(backend, crate::common::test_runner_settings(), http.clone()).await;
        let insp = app
            .create_inspection(
                json!({"name": "files", "source": {"kind": "files", "path": dir.path().display().to_string()},
                "aws": {"region": "us-east-1"}, "baseline_days": 0, "log_groups": ["files"]}),
            )
            .await;
        let window = json!({"window_start": (at() - TimeDelta::hours(1)).to_rfc3339(), "window_end": (at() + TimeDelta::minutes(1)).to_rfc3339()});
        let (status, run) =
            app.post(&format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap()), window).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {run}");
        assert_ne!(run["status"], "failed", "{backend:?}: {run}");
        let codes: Vec<String> = all_clusters(&app, run["id"].as_str().unwrap())
            .await
            .iter()
            .map(|c| c["error_code"].as_str().unwrap().to_string())
            .collect();
        assert!(codes.contains(&"GoodOne".to_string()), "{backend:?}: {codes:?} {run}");
        // The record with bad bytes in its message is kept, its bytes replaced by U+FFFD; the
        // line of garbage is the one malformed record.
        assert!(codes.contains(&"BadBytes".to_string()), "{backend:?}: {codes:?}");
        assert_eq!(
            (run["warned_records"].as_i64(), run["malformed_records"].as_i64()),
            (Some(1), Some(1)),
            "{backend:?}"
        );
    }
}
