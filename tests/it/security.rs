//! Credentials at rest: sealed in the database, opened only with the right key, rotatable,
//! kept when their key is lost (and never replaced by the service's own identity), and never
//! shown by the configuration's `Debug`.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine;
use clap::Parser;
use serde_json::json;
use sqlx::Connection;

use crate::common::{BACKENDS, Backend, TestApp};
use cloudtrail_inspector::crypto::SecretBox;
use cloudtrail_inspector::store;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// The raw `secrets` column of every inspection, read past the store.
async fn raw_secrets(app: &TestApp) -> Vec<String> {
    match app.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.guard.url).await.unwrap();
            let rows: Vec<(serde_json::Value,)> =
                sqlx::query_as("select secrets from inspections").fetch_all(&mut c).await.unwrap();
            rows.into_iter().map(|r| r.0.to_string()).collect()
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.guard.url).await.unwrap();
            let rows: Vec<(String,)> =
                sqlx::query_as("select secrets from inspections").fetch_all(&mut c).await.unwrap();
            rows.into_iter().map(|r| r.0).collect()
        }
    }
}

fn body(name: &str) -> serde_json::Value {
    json!({"name": name, "log_groups": ["g"], "aws": {"region": "us-east-1", "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": SECRET, "session_token": "FwoGZXIvYXdzEXAMPLETOKEN"}})
}

#[tokio::test]
async fn credentials_are_sealed_in_the_database() {
    for backend in BACKENDS {
        let app = TestApp::new(backend).await;
        let created = app.create_inspection(body("sealed")).await;
        let raw = raw_secrets(&app).await;
        assert_eq!(raw.len(), 1);
        assert!(!raw[0].contains("wJalrXUtnFEMI") && !raw[0].contains("FwoGZXIvYXdz"), "{}", raw[0]);
        assert!(raw[0].contains("\"sealed\""));
        // The store opens them again for the runner.
        let id = created["id"].as_str().unwrap().parse().unwrap();
        let insp = app.store().get_inspection(id).await.unwrap().unwrap();
        assert_eq!(insp.secrets.secret_access_key.unwrap().expose(), SECRET);
        assert_eq!(insp.secrets_error, None);
        // An inspection without credentials seals nothing.
        app.create_inspection(json!({"name": "plain", "log_groups": ["g"], "aws": {"region": "us-east-1"}})).await;
        assert!(raw_secrets(&app).await.contains(&"{}".to_string()));
    }
}

#[tokio::test]
async fn a_wrong_key_is_reported_and_rotation_keeps_credentials() {
    let app = TestApp::new(Backend::Sqlite).await;
    let created = app.create_inspection(body("rotating")).await;
    let id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();

    // Another key cannot open them: the inspection still lists, with the reason, and its runs
    // fail with it instead of calling AWS with empty credentials.
    let stranger = store::connect(&app.guard.url, 2, Arc::new(SecretBox::new(&[1; 32], &[]))).await.unwrap();
    let insp = stranger.get_inspection(id).await.unwrap().unwrap();
    assert!(insp.secrets_error.as_deref().unwrap().contains("OLD_ENCRYPTION_KEYS"), "{:?}", insp.secrets_error);
    assert!(insp.secrets.secret_access_key.is_none());

    // Rotation: new key current, the test key as old; rewrite; then the new key alone opens them.
    let rotated = store::connect(&app.guard.url, 2, Arc::new(SecretBox::new(&[7; 32], &[[42; 32]]))).await.unwrap();
    assert_eq!(cloudtrail_inspector::server::rotate_secrets(&rotated).await.unwrap(), 1);
    let only_new = store::connect(&app.guard.url, 2, Arc::new(SecretBox::new(&[7; 32], &[]))).await.unwrap();
    let insp = only_new.get_inspection(id).await.unwrap().unwrap();
    assert_eq!(insp.secrets.secret_access_key.unwrap().expose(), SECRET);
    assert_eq!(insp.secrets.session_token.unwrap().expose(), "FwoGZXIvYXdzEXAMPLETOKEN");
    // Rotation without the key that sealed them stops with a clear error rather than losing them.
    let lost = store::connect(&app.guard.url, 2, Arc::new(SecretBox::new(&[8; 32], &[]))).await.unwrap();
    let err = cloudtrail_inspector::server::rotate_secrets(&lost).await.unwrap_err().to_string();
    assert!(err.contains("OLD_ENCRYPTION_KEYS"), "{err}");
}

#[test]
fn configuration_debug_never_shows_keys() {
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let cli = cloudtrail_inspector::config::Cli::parse_from([
        "cloudtrail-inspector",
        "serve",
        "--encryption-key",
        &key,
        "--old-encryption-keys",
        "b2xkLWtleS1vbmUtb2xkLWtleS1vbmUtb2xkLWtleS0=",
        "--database-url",
        "postgres://u:s3cr3tpw@h/db",
    ]);
    let shown = format!("{cli:?}");
    assert!(!shown.contains(&key), "{shown}");
    assert!(!shown.contains("b2xkLWtleS1v"), "{shown}");
    assert!(!shown.contains("s3cr3tpw"), "database URLs carry passwords: {shown}");
}

/// An app over the database of `app`, whose store holds `cipher`'s keys instead of the test key.
fn with_keys(app: &TestApp, store: cloudtrail_inspector::store::DynStore) -> TestApp {
    TestApp::over(store, &app.guard.url, app.backend, crate::common::test_runner_settings(), Default::default())
}

#[tokio::test]
async fn credentials_sealed_with_a_lost_key_are_kept_and_never_replaced_by_another_identity() {
    use crate::common::fake_cwl::FakeCwl;
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        let app = TestApp::new(backend).await;
        let mut input = body("lost-key");
        input["aws"]["endpoint_url"] = json!(fake.endpoint());
        let created = app.create_inspection(input).await;
        let id = created["id"].as_str().unwrap().to_string();
        let sealed = raw_secrets(&app).await;

        // The service restarted with another key (the key file was lost).
        let stranger = store::connect(&app.guard.url, 2, Arc::new(SecretBox::new(&[1; 32], &[]))).await.unwrap();
        let unknown = stranger.unknown_sealing_keys().await.unwrap();
        let test_kid = SecretBox::new(&[42; 32], &[]).current_kid().to_string();
        assert_eq!(unknown, vec![(test_kid.clone(), 1)], "{backend:?}");
        let lost = with_keys(&app, stranger);
        let (status, shown) = lost.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(shown["aws"]["credentials_error"].as_str().unwrap().contains(&test_kid), "{shown}");

        // A change that does not replace them leaves them sealed as they were.
        let (status, v) = lost.patch(&format!("/api/v1/inspections/{id}"), json!({"description": "edited"})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (status, v) =
            lost.patch(&format!("/api/v1/inspections/{id}"), json!({"aws": {"region": "eu-west-1"}})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(raw_secrets(&app).await, sealed, "{backend:?}: the sealed credentials were rewritten");
        // Half a replacement would drop the other secret unseen.
        let (status, v) =
            lost.patch(&format!("/api/v1/inspections/{id}"), json!({"aws": {"secret_access_key": "new-secret"}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["error"]["fields"]["aws"][0].as_str().unwrap().contains("together"), "{v}");

        // Its runs fail with the reason, and call nobody with any other credentials.
        let (status, run) = lost.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["status"], "failed", "{run}");
        assert!(run["error"].as_str().unwrap().contains(&test_kid), "{run}");
        assert!(fake.calls().is_empty(), "{backend:?}: a run called AWS without its own credentials");

        // The key back: nothing was lost.
        let (_, back) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(back["description"], "edited");
        assert_eq!(back["aws"]["secret_access_key_set"], true, "{back}");
        assert!(back["aws"].get("credentials_error").is_none_or(|e| e.is_null()), "{back}");
        let insp = app.store().get_inspection(id.parse().unwrap()).await.unwrap().unwrap();
        assert_eq!(insp.secrets.secret_access_key.unwrap().expose(), SECRET);

        // Replacing both secrets while the key is lost is a fresh start for them.
        let (status, v) = lost
            .patch(
                &format!("/api/v1/inspections/{id}"),
                json!({"aws": {"secret_access_key": "replaced-secret", "session_token": null}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["aws"]["secret_access_key_set"], true, "{v}");
    }
}

#[tokio::test]
async fn an_access_key_without_its_secret_never_falls_back_to_the_default_credentials() {
    use crate::common::fake_cwl::FakeCwl;
    let fake = FakeCwl::start().await;
    let app = TestApp::new(Backend::Sqlite).await;
    let mut input = body("emptied");
    input["aws"]["endpoint_url"] = json!(fake.endpoint());
    let created = app.create_inspection(input).await;
    let id = created["id"].as_str().unwrap();
    // What an earlier release left after a PATCH under a lost key: the secrets column emptied.
    let mut c = sqlx::SqliteConnection::connect(&app.guard.url).await.unwrap();
    sqlx::query("update inspections set secrets = '{}'").execute(&mut c).await.unwrap();
    let (_, run) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("secret access key"), "{run}");
    assert!(fake.calls().is_empty(), "the run called AWS with the service's own identity");
}

/// The binary on `data_dir` (SQLite there), until it is ready or exits.
async fn start_binary(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<(std::process::Child, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("DATABASE_URL")
        .env_remove("ENCRYPTION_KEY")
        .env("DATA_DIR", data_dir)
        .env("SCHEDULER", "off")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return Err(format!("{status}: {err}"));
        }
        if reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status().is_success()) {
            return Ok((child, base));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("the service neither started nor stopped");
}

#[tokio::test]
async fn a_lost_key_file_stops_the_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_binary(dir.path(), &[]).await.unwrap();
    let res =
        reqwest::Client::new().post(format!("{base}/api/v1/inspections")).json(&body("keyed")).send().await.unwrap();
    assert_eq!(res.status(), 201);
    child.kill().unwrap();
    child.wait().unwrap();
    let key_file = dir.path().join("encryption.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    let kid = SecretBox::new(&cloudtrail_inspector::crypto::parse_key(&key).unwrap(), &[]).current_kid().to_string();

    std::fs::remove_file(&key_file).unwrap();
    let err = start_binary(dir.path(), &[]).await.expect_err("started without the key that sealed the credentials");
    assert!(err.contains(&kid) && err.contains("ALLOW_UNREADABLE_SECRETS"), "{err}");
    assert!(!key_file.exists(), "a new key file would take the lost one's place");

    // Gone for good: the operator says so, and the credentials stay sealed as they were.
    let (mut child, base) = start_binary(dir.path(), &[("ALLOW_UNREADABLE_SECRETS", "true")]).await.unwrap();
    let list: serde_json::Value =
        reqwest::get(format!("{base}/api/v1/inspections")).await.unwrap().json().await.unwrap();
    assert!(list["items"][0]["aws"]["credentials_error"].as_str().unwrap().contains(&kid), "{list}");
    child.kill().unwrap();
    child.wait().unwrap();

    // Found again: everything opens.
    std::fs::write(&key_file, key).unwrap();
    let (mut child, base) = start_binary(dir.path(), &[]).await.unwrap();
    let list: serde_json::Value =
        reqwest::get(format!("{base}/api/v1/inspections")).await.unwrap().json().await.unwrap();
    assert_eq!(list["items"][0]["aws"]["secret_access_key_set"], true, "{list}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let url = format!("sqlite://{}", db.display());
    let s = store::connect(&url, 2, crate::common::test_cipher()).await.unwrap();
    s.migrate().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    // A file an earlier release left readable by everyone is tightened when opened.
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    store::connect(&format!("sqlite://{}", old.display()), 1, crate::common::test_cipher()).await.unwrap();
    assert_eq!(mode(&old), 0o600);
}

/// A CloudTrail file of one error record with `code`, at a time inside the last hour.
fn trail_file(code: &str) -> String {
    let at = chrono::Utc::now() - chrono::TimeDelta::minutes(30);
    json!({"Records": [{"eventVersion": "1.08", "eventTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1",
        "recipientAccountId": "123456789012", "errorCode": code, "errorMessage": "Access Denied"}]})
    .to_string()
}

/// Runs inspection `id` over the last two hours and returns the finished run.
async fn run_files(app: &TestApp, id: &str) -> serde_json::Value {
    let now = chrono::Utc::now();
    let window =
        json!({"window_start": (now - chrono::TimeDelta::hours(2)).to_rfc3339(), "window_end": now.to_rfc3339()});
    let (status, run) = app.post(&format!("/api/v1/inspections/{id}/runs"), window).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run
}

#[cfg(unix)]
#[tokio::test]
async fn the_files_root_is_checked_at_every_read_and_links_are_not_followed() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("trail")).unwrap();
    std::fs::write(root.path().join("trail/a.json"), trail_file("InsideRoot")).unwrap();
    std::fs::write(outside.path().join("secret.json"), trail_file("OutsideRoot")).unwrap();
    // A link planted beside a real file is passed over, not followed.
    std::os::unix::fs::symlink(outside.path().join("secret.json"), root.path().join("trail/b.json")).unwrap();

    let http =
        cloudtrail_inspector::http::HttpSettings { files_root: Some(root.path().to_path_buf()), ..Default::default() };
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    let created = app
        .create_inspection(json!({"name": "files", "source": {"kind": "files", "path": "trail"}, "baseline_days": 0}))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let run = run_files(&app, &id).await;
    assert_eq!((run["status"].as_str(), run["records_scanned"].as_i64()), (Some("succeeded"), Some(1)), "{run}");

    // Paths outside the root get one answer, whether they exist or not.
    let mut answers = std::collections::BTreeSet::new();
    for path in [
        outside.path().join("secret.json").display().to_string(),
        outside.path().join("missing.json").display().to_string(),
        "../outside".to_string(),
        "trail/b.json".to_string(),
        "trail/missing.json".to_string(),
    ] {
        let (status, v) = app
            .post(
                "/api/v1/inspections",
                json!({"name": format!("f-{path}"), "source": {"kind": "files", "path": path}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {v}");
        answers.insert(v["error"]["fields"]["source.path"].to_string());
    }
    assert_eq!(answers.len(), 1, "{answers:?}");

    // The validated directory replaced by a link to outside the root: the next run reads nothing there.
    std::fs::rename(root.path().join("trail"), root.path().join("trail.old")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("trail")).unwrap();
    let run = run_files(&app, &id).await;
    assert_eq!(run["records_scanned"], 0, "{run}");
    assert_ne!(run["status"], "succeeded", "{run}");
    let error = run["log_groups"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("files root") && !error.contains("secret"), "{run}");

    // Restarted without a files root: saved file inspections read nothing.
    std::fs::remove_file(root.path().join("trail")).unwrap();
    std::fs::rename(root.path().join("trail.old"), root.path().join("trail")).unwrap();
    let store = store::connect(&app.guard.url, 2, crate::common::test_cipher()).await.unwrap();
    let unrooted = TestApp::over(
        store,
        &app.guard.url,
        Backend::Sqlite,
        crate::common::test_runner_settings(),
        Default::default(),
    );
    let run = run_files(&unrooted, &id).await;
    assert_eq!(run["records_scanned"], 0, "{run}");
    assert!(run.to_string().contains("--files-root"), "{run}");
}

#[tokio::test]
async fn credentials_are_never_logged_even_at_trace() {
    use crate::common::data;
    use crate::common::fake_cwl::FakeCwl;
    const GROUP: &str = "aws-cloudtrail-logs-123837392027";
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLETOKEN";
    let fake = FakeCwl::start().await;
    let now = chrono::Utc::now();
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), now - chrono::TimeDelta::minutes(57)));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("service.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("DATABASE_URL")
        .env("DATA_DIR", dir.path())
        .env("SCHEDULER", "off")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut input = body("traced");
    input["log_groups"] = json!([GROUP]);
    input["baseline_days"] = json!(0);
    input["aws"]["endpoint_url"] = json!(fake.endpoint());
    let created: serde_json::Value =
        client.post(format!("{base}/api/v1/inspections")).json(&input).send().await.unwrap().json().await.unwrap();
    let trigger_id = created["trigger_id"].as_str().unwrap().to_string();
    let run: serde_json::Value = client
        .post(format!("{base}/api/v1/inspections/{}/runs", created["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(fake.call_count("FilterLogEvents") > 0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("\"level\":\"DEBUG\"") && l.contains("aws_smithy_runtime")),
        "the AWS SDK's own lines are there, at debug"
    );
    for secret in [TOKEN, SECRET, "wJalrXUtnFEMI", &trigger_id] {
        assert!(!text.contains(secret), "{secret} is in the trace log");
    }
}
