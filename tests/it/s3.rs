//! CloudTrail's files read straight from S3 (`source.kind = "s3"`, `scan s3://…`), against the
//! fake S3 server: an organization trail's layout, delivery-time windows, listing pages, and
//! the faults S3 answers with.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_s3::{FakeS3, FakeS3Config, S3Fault, gzip_records, trail_key};
use crate::common::{Backend, TestApp};

const BUCKET: &str = "org-trail-bucket";
const PREFIX: &str = "trail";
const ORG: &str = "o-exampleorg1";
const ACCOUNTS: [&str; 2] = ["111111111111", "222222222222"];
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];

fn seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap()
}

/// An inspection of the fake's bucket with test keys; a first window of the last hour, no
/// delivery delay, no baseline unless a test sets one.
fn s3_body(name: &str, fake: &FakeS3, source: Value) -> Value {
    json!({
        "name": name,
        "source": source,
        "lookback_minutes": 60,
        "delivery_delay_minutes": 0,
        "baseline_days": 0,
        "aws": {
            "region": "us-east-1",
            "access_key_id": "AKIATESTTESTTEST0001",
            "secret_access_key": "test-secret-do-not-leak",
            "endpoint_url": fake.endpoint(),
        },
    })
}

fn org_source() -> Value {
    json!({"kind": "s3", "bucket": BUCKET, "prefix": PREFIX})
}

async fn run(app: &TestApp, id: &str) -> Value {
    let (status, r) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    r
}

/// The invictus records as one account and region of an organization: their identity and
/// place rewritten, their times moved to `start`.
fn records_of(records: &[Value], account: &str, region: &str, start: DateTime<Utc>) -> Vec<Value> {
    data::shift_to(records, start)
        .into_iter()
        .map(|(_, text)| {
            let mut r: Value = serde_json::from_str(&text).unwrap();
            r["recipientAccountId"] = json!(account);
            r["awsRegion"] = json!(region);
            if r["userIdentity"].get("accountId").is_some() {
                r["userIdentity"]["accountId"] = json!(account);
            }
            r
        })
        .collect()
}

/// An organization trail of 2 accounts × 2 regions, a quarter of the invictus hour in each,
/// delivered in files of 100 records between 50 and 10 minutes ago. Returns every record and
/// how many files hold them.
fn seed_org_trail(fake: &FakeS3) -> (Vec<Value>, usize) {
    let all = data::invictus();
    let now = seconds(Utc::now());
    let quarter = all.len().div_ceil(4);
    let mut seeded = Vec::new();
    let mut n = 0;
    for (i, (account, region)) in ACCOUNTS.iter().flat_map(|a| REGIONS.iter().map(move |r| (*a, *r))).enumerate() {
        let part = &all[i * quarter..((i + 1) * quarter).min(all.len())];
        let records = records_of(part, account, region, now - TimeDelta::minutes(55));
        for chunk in records.chunks(100) {
            n += 1;
            let delivered = now - TimeDelta::minutes(50) + TimeDelta::seconds(n * 30);
            let key = trail_key(PREFIX, Some(ORG), account, region, delivered - TimeDelta::minutes(3), n as u32);
            fake.put_trail_file(BUCKET, &key, chunk, delivered);
        }
        seeded.extend(records);
    }
    // What a trail's bucket also holds: digests, and a folder that is not an account.
    fake.put(BUCKET, &format!("{PREFIX}/AWSLogs/{ORG}/{}/CloudTrail-Digest/x.json.gz", ACCOUNTS[0]), vec![1], now);
    fake.put(BUCKET, &format!("{PREFIX}/AWSLogs/{ORG}/README.txt"), b"hello".to_vec(), now);
    (seeded, n as usize)
}

async fn clusters(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/api/v1/inspections/{id}/clusters?limit=200")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

type Tuple = (String, String, String, String, String);

fn tuple_of_record(r: &Value) -> Tuple {
    let code = r["errorCode"].as_str().unwrap_or("ConsoleLoginFailure").to_string();
    let s = |f: &Value| f.as_str().unwrap_or("").to_string();
    (s(&r["recipientAccountId"]), s(&r["awsRegion"]), s(&r["eventSource"]), s(&r["eventName"]), code)
}

fn tuple_of_cluster(c: &Value) -> Tuple {
    let s = |f: &str| c[f].as_str().unwrap().to_string();
    (s("account_id"), s("region"), s("event_source"), s("event_name"), s("error_code"))
}

#[tokio::test]
async fn an_organization_trail_of_two_accounts_in_two_regions_finds_the_expected_clusters() {
    let fake = FakeS3::start().await;
    let (seeded, files) = seed_org_trail(&fake);
    let app = TestApp::new(Backend::Postgres).await;
    let id = app.create_inspection(s3_body("org trail", &fake, org_source())).await["id"].as_str().unwrap().to_string();

    let r = run(&app, &id).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["log_groups"][0]["name"], format!("s3://{BUCKET}/{PREFIX}"), "one place, as the run's group");
    let errors: Vec<&Value> = seeded.iter().filter(|r| data::is_error(r)).collect();
    assert_eq!(r["records_scanned"], seeded.len() as i64, "every record of every file");
    assert_eq!(r["error_records"], errors.len() as i64);

    // The clusters are those of the records, told apart by account and region: computed
    // here from the records themselves.
    let found = clusters(&app, &id).await;
    let wanted: BTreeSet<Tuple> = errors.iter().map(|r| tuple_of_record(r)).collect();
    let got: BTreeSet<Tuple> = found.iter().map(tuple_of_cluster).collect();
    assert_eq!(got, wanted);
    let places: BTreeSet<(String, String)> = got.iter().map(|t| (t.0.clone(), t.1.clone())).collect();
    assert_eq!(places.len(), 4, "clusters in each account and region: {places:?}");
    let counted: i64 = found.iter().map(|c| c["total_count"].as_i64().unwrap()).sum();
    assert_eq!(counted, errors.len() as i64);
    assert_eq!(r["clusters_new"], r["clusters_total"]);

    // Only the day prefixes the window can hold were listed: each region's days from the one
    // before the window to today, never a region whole.
    let first_day = (Utc::now() - TimeDelta::minutes(61) - TimeDelta::days(1)).date_naive();
    for c in fake.calls().into_iter().filter(|c| c.operation == "ListObjectsV2") {
        let parts: Vec<&str> = c.target.trim_end_matches('/').split('/').collect();
        if parts.len() > 6 {
            let day = chrono::NaiveDate::parse_from_str(&parts[6..].join("-"), "%Y-%m-%d").expect(&c.target);
            assert!(day >= first_day && day <= Utc::now().date_naive(), "{}", c.target);
        } else {
            assert!(parts.len() <= 5, "no region is listed whole: {}", c.target);
        }
    }
    assert_eq!(fake.call_count("GetObject"), files, "each delivery file once");

    // The accounts and regions of the inspection narrow the read without listing them.
    let narrow = json!({"kind": "s3", "bucket": BUCKET, "prefix": PREFIX,
        "accounts": [ACCOUNTS[1]], "regions": ["us-east-1"]});
    let id2 = app.create_inspection(s3_body("one place", &fake, narrow)).await["id"].as_str().unwrap().to_string();
    let r = run(&app, &id2).await;
    let one: Vec<&&Value> =
        errors.iter().filter(|r| r["recipientAccountId"] == ACCOUNTS[1] && r["awsRegion"] == "us-east-1").collect();
    assert_eq!(r["error_records"], one.len() as i64, "{r}");
}

/// A file delivered after the run whose window its records' times fall in is read by the
/// next run, once; the runs after it do not read it again.
#[tokio::test]
async fn a_late_file_is_read_by_the_next_run_exactly_once() {
    let fake = FakeS3::start().await;
    let now = seconds(Utc::now());
    let invictus = data::invictus();
    let errors: Vec<Value> = invictus.iter().filter(|r| data::is_error(r)).cloned().collect();
    let (account, region) = (ACCOUNTS[0], REGIONS[1]);
    let with_code = |r: &Value, code: &str| {
        let mut r = r.clone();
        r["errorCode"] = json!(code);
        r
    };
    // Delivered three hours ago: the baseline's. Half an hour ago: the first window's.
    let old = records_of(&[with_code(&errors[0], "OldError")], account, region, now - TimeDelta::hours(3));
    fake.put_trail_file(
        BUCKET,
        &trail_key("", None, account, region, now - TimeDelta::hours(3), 1),
        &old,
        now - TimeDelta::hours(3),
    );
    let first = records_of(
        &[with_code(&errors[0], "OldError"), with_code(&errors[1], "FirstError")],
        account,
        region,
        now - TimeDelta::minutes(35),
    );
    let first_key = trail_key("", None, account, region, now - TimeDelta::minutes(33), 2);
    fake.put_trail_file(BUCKET, &first_key, &first, now - TimeDelta::minutes(30));

    let app = TestApp::new(Backend::Sqlite).await;
    let mut body = s3_body("late", &fake, json!({"kind": "s3", "bucket": BUCKET}));
    body["baseline_days"] = json!(1);
    let id = app.create_inspection(body).await["id"].as_str().unwrap().to_string();
    let r1 = run(&app, &id).await;
    assert_eq!(r1["status"], "succeeded", "{r1}");
    assert_eq!((r1["clusters_new"].as_i64(), r1["baseline_clusters"].as_i64()), (Some(1), Some(1)), "{r1}");

    // Stamped and timed 40 minutes ago, inside the first window, but delivered only now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = records_of(&[with_code(&errors[2], "LateError")], account, region, now - TimeDelta::minutes(40));
    let late_key = trail_key("", None, account, region, now - TimeDelta::minutes(40), 3);
    fake.put_trail_file(BUCKET, &late_key, &late, seconds(Utc::now()));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let r2 = run(&app, &id).await;
    assert_eq!(r2["status"], "succeeded", "{r2}");
    assert_eq!(r2["records_scanned"], 1, "the late file's record, though its eventTime is before the window: {r2}");
    assert_eq!(r2["clusters_new"], 1, "{r2}");
    let late_cluster = clusters(&app, &id).await.into_iter().find(|c| c["error_code"] == "LateError");
    assert!(late_cluster.is_some(), "the late file's error is a cluster");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r3 = run(&app, &id).await;
    assert_eq!((r3["records_scanned"].as_i64(), r3["clusters_new"].as_i64()), (Some(0), Some(0)), "{r3}");
    assert_eq!(fake.gets_of(&late_key), 1, "read by one run only");
    assert_eq!(fake.gets_of(&first_key), 1, "read by one run only");
}

/// Listing pages of two entries: every level of the layout pages through continuation
/// tokens, and nothing is read twice or missed.
#[tokio::test]
async fn listings_page_through_continuation_tokens() {
    let fake = FakeS3::start_with(FakeS3Config { max_keys: 2, ..FakeS3Config::default() }).await;
    let (seeded, files) = seed_org_trail(&fake);
    // Three more accounts outside the organization's folder: the root level pages too.
    let now = seconds(Utc::now());
    for (i, account) in ["333333333333", "444444444444", "555555555555"].iter().enumerate() {
        let records = records_of(&seeded[..10], account, "us-east-1", now - TimeDelta::minutes(20));
        let key = trail_key(PREFIX, None, account, "us-east-1", now - TimeDelta::minutes(20), i as u32);
        fake.put_trail_file(BUCKET, &key, &records, now - TimeDelta::minutes(15));
    }
    let app = TestApp::new(Backend::Sqlite).await;
    let id = app.create_inspection(s3_body("pages", &fake, org_source())).await["id"].as_str().unwrap().to_string();
    let r = run(&app, &id).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["records_scanned"], seeded.len() as i64 + 30, "{r}");
    assert_eq!(fake.call_count("GetObject"), files + 3, "each file once");
    let root = fake.calls().iter().filter(|c| c.operation == "ListObjectsV2" && c.target == "trail/AWSLogs/").count();
    assert_eq!(root, 2, "an organization and three accounts: two pages of two");
    assert!(fake.call_count("ListObjectsV2") >= files / 2, "days page too: {}", fake.call_count("ListObjectsV2"));
}

/// A trail of three files, delivered 20, 15 and 10 minutes ago; returns their keys.
fn three_files(fake: &FakeS3) -> Vec<String> {
    let now = seconds(Utc::now());
    let all = data::invictus();
    let mut keys = Vec::new();
    for i in 0..3 {
        let at = now - TimeDelta::minutes(20 - 5 * i);
        let records = records_of(&all[i as usize * 200..(i as usize + 1) * 200], ACCOUNTS[0], "us-east-1", at);
        let key = trail_key("", None, ACCOUNTS[0], "us-east-1", at, i as u32);
        fake.put_trail_file(BUCKET, &key, &records, at);
        keys.push(key);
    }
    keys
}

fn settings_with_few_throttles() -> cloudtrail_inspector::runner::RunnerSettings {
    let mut s = crate::common::test_runner_settings();
    s.s3.max_throttled_attempts = 5;
    s
}

#[tokio::test]
async fn faults_are_named_and_retried_as_a_user_would_expect() {
    let fake = FakeS3::start().await;
    let keys = three_files(&fake);
    let app = TestApp::with_settings(Backend::Sqlite, settings_with_few_throttles(), Default::default()).await;
    let body = |name: &str, bucket: &str| s3_body(name, &fake, json!({"kind": "s3", "bucket": bucket}));
    let explicit = json!({
        "window_start": (Utc::now() - TimeDelta::hours(1)).to_rfc3339(),
        "window_end": Utc::now().to_rfc3339(),
    });
    let run_window = |id: String| {
        let (app, explicit) = (&app, explicit.clone());
        async move {
            let (status, r) = app.post(&format!("/api/v1/inspections/{id}/runs"), explicit).await;
            assert_eq!(status, StatusCode::OK, "{r}");
            r
        }
    };
    let id = app.create_inspection(body("faults", BUCKET)).await["id"].as_str().unwrap().to_string();

    // A missing bucket: nothing to read, said plainly.
    let missing = app.create_inspection(body("missing", "no-such-bucket")).await["id"].as_str().unwrap().to_string();
    let r = run_window(missing).await;
    assert_eq!(r["status"], "failed", "{r}");
    let e = r["log_groups"][0]["error"].as_str().unwrap();
    assert!(e.starts_with("bucket no-such-bucket does not exist (NoSuchBucket"), "{e}");

    // Access denied: what the credentials must be allowed.
    fake.fail_bucket(BUCKET, S3Fault::AccessDenied);
    let r = run_window(id.clone()).await;
    let e = r["log_groups"][0]["error"].as_str().unwrap();
    assert!(e.starts_with(&format!("access denied to s3://{BUCKET} on ListObjectsV2 (AccessDenied")), "{e}");
    assert!(e.contains("s3:ListBucket") && e.contains("s3:GetObject") && e.contains("kms:Decrypt"), "{e}");
    assert!(!e.contains("test-secret-do-not-leak"));
    fake.clear_faults();

    // Throttling that stops: retried, and the run reads everything.
    fake.fail_next("*", 3, S3Fault::SlowDown);
    let r = run_window(id.clone()).await;
    assert_eq!((r["status"].as_str(), r["records_scanned"].as_i64()), (Some("succeeded"), Some(600)), "{r}");
    assert_eq!(fake.calls().iter().filter(|c| c.status == 503).count(), 3);

    // Throttling that never stops: given up after the budget, saying so.
    fake.fail_bucket(BUCKET, S3Fault::SlowDown);
    let r = run_window(id.clone()).await;
    assert_eq!(r["status"], "failed", "{r}");
    let e = r["log_groups"][0]["error"].as_str().unwrap();
    assert!(e.starts_with(&format!("S3 kept throttling ListObjectsV2 on s3://{BUCKET} (SlowDown")), "{e}");
    assert!(e.contains("gave up after 5 attempts"), "{e}");
    fake.clear_faults();

    // An object deleted between the listing and its download: named, the others read.
    fake.fail_next("GetObject", 1, S3Fault::NoSuchKey);
    let r = run_window(id.clone()).await;
    assert_eq!((r["status"].as_str(), r["records_scanned"].as_i64()), (Some("partial"), Some(400)), "{r}");
    let warnings = r["log_groups"][0]["warnings"].to_string();
    assert!(warnings.contains(": deleted since it was listed"), "{warnings}");
    fake.clear_faults();

    // A download cut short twice is fetched again and read whole.
    fake.cut_body(BUCKET, &keys[0], 40, 2);
    let r = run_window(id.clone()).await;
    assert_eq!((r["status"].as_str(), r["records_scanned"].as_i64()), (Some("succeeded"), Some(600)), "{r}");
    let cut = fake.calls().iter().filter(|c| c.target == keys[0] && c.status == 206).count();
    assert_eq!(cut, 2, "two downloads ended early");

    // One that always ends early, and an object whose gzip stream is cut short where it is
    // stored: each is named, and the other files are read.
    fake.cut_body(BUCKET, &keys[0], 40, 100);
    let gz = gzip_records(&records_of(&data::invictus()[..50], ACCOUNTS[0], "us-east-1", Utc::now()));
    fake.put(BUCKET, &keys[1], gz[..gz.len() / 2].to_vec(), seconds(Utc::now()) - TimeDelta::minutes(15));
    let r = run_window(id.clone()).await;
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(r["records_scanned"], 200, "the third file: {r}");
    let warnings: Vec<&str> =
        r["log_groups"][0]["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(
        warnings.iter().any(|w| w.starts_with(&format!("{}: the download kept ending before its", keys[0]))),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.starts_with(&format!("{}: bad gzip", keys[1]))), "{warnings:?}");
}

#[tokio::test]
async fn s3_sources_are_validated() {
    let app = TestApp::new(Backend::Sqlite).await;
    let fake = FakeS3::start().await;
    for (source, field, says) in [
        (json!({"kind": "s3", "bucket": "Bad_Bucket"}), "source.bucket", "must be an S3 bucket name"),
        (
            json!({"kind": "s3", "bucket": "ok-bucket", "prefix": "trail/AWSLogs"}),
            "source.prefix",
            "the part before `AWSLogs/`",
        ),
        (json!({"kind": "s3", "bucket": "ok-bucket", "accounts": ["1234"]}), "source.accounts", "12-digit"),
        (json!({"kind": "s3", "bucket": "ok-bucket", "accounts": []}), "source.accounts", "1–1000"),
        (json!({"kind": "s3", "bucket": "ok-bucket", "regions": ["Mars"]}), "source.regions", "region names"),
    ] {
        let (status, v) = app.post("/api/v1/inspections", s3_body("bad", &fake, source.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{source}: {v}");
        let said = v["error"]["fields"][field].to_string();
        assert!(said.contains(says), "{source}: {v}");
    }
    // S3 needs the bucket's region, not log groups.
    let (status, v) =
        app.post("/api/v1/inspections", json!({"name": "x", "source": {"kind": "s3", "bucket": "ok-bucket"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = v["error"]["fields"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["aws"]);
    // Slashes at the prefix's ends are not part of it.
    let created = app
        .create_inspection(s3_body("ok", &fake, json!({"kind": "s3", "bucket": "ok-bucket", "prefix": "/org/trail/"})))
        .await;
    assert_eq!(created["source"], json!({"kind": "s3", "bucket": "ok-bucket", "prefix": "org/trail"}));
    assert!(!created.to_string().contains("test-secret-do-not-leak"));
}

fn scan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .arg("scan")
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST0001")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .expect("run scan")
}

#[tokio::test]
async fn scan_reads_an_s3_url_as_the_aws_cli_would() {
    let fake = FakeS3::start().await;
    let (seeded, _) = seed_org_trail(&fake);
    let endpoint = fake.endpoint();
    let errors = seeded.iter().filter(|r| data::is_error(r)).count() as i64;
    let out = {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || {
            scan(&[
                "--no-progress",
                "--format",
                "json",
                "--endpoint-url",
                &endpoint,
                &format!("s3://{BUCKET}/{PREFIX}"),
            ])
        })
        .await
        .unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "new clusters\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["target"], format!("s3://{BUCKET}/{PREFIX}"));
    assert_eq!(
        (v["run"]["records_scanned"].as_i64(), v["run"]["error_records"].as_i64()),
        (Some(seeded.len() as i64), Some(errors))
    );

    // A URL into the layout reads that account only; the endpoint from AWS_ENDPOINT_URL.
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"));
        cmd.args(["scan", "--no-progress", "--format", "json"])
            .arg(format!("s3://{BUCKET}/{PREFIX}/AWSLogs/{ORG}/{}/", ACCOUNTS[1]))
            .env_remove("DATABASE_URL")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "eu-west-1")
            .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST0001")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let one = seeded.iter().filter(|r| r["recipientAccountId"] == ACCOUNTS[1] && data::is_error(r)).count() as i64;
    assert_eq!(v["run"]["error_records"].as_i64(), Some(one), "{v}");

    // A missing bucket fails the scan with the reason.
    let out = tokio::task::spawn_blocking(move || {
        scan(&["--no-progress", "--endpoint-url", &fake.endpoint(), "s3://missing-bucket"])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bucket missing-bucket does not exist"), "{stderr}");
}
