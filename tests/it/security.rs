//! Credentials at rest: sealed in the database, opened only with the right key, rotatable,
//! and never shown by the configuration's `Debug`.

use std::sync::Arc;

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
