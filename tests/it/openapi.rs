//! The committed OpenAPI document is the one the code generates, and the service serves it
//! and Swagger UI without any network access.

use std::path::Path;

use crate::common::{Backend, TestApp};
use axum::http::StatusCode;

fn generated() -> String {
    cloudtrail_inspector::http::openapi().to_pretty_json().expect("document serializes") + "\n"
}

#[test]
fn committed_openapi_document_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    let fresh = generated();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).expect("write openapi/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "openapi/openapi.json is stale; regenerate it with `UPDATE_OPENAPI=1 cargo test --test it openapi`"
    );
}

#[test]
fn every_route_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in [
        "/api/v1/inspections",
        "/api/v1/inspections/{id}",
        "/api/v1/inspections/{id}/runs",
        "/api/v1/inspections/{id}/clusters",
        "/api/v1/inspections/{id}/access-keys",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/clusters",
        "/api/v1/clusters/{id}",
        "/healthz",
        "/readyz",
        "/api/v1/inspections/{id}/trigger-id/rotate",
        "/api/v1/al/{trigger_id}",
        "/api/v1/al/{trigger_id}/{format}",
        "/api/v1/bat/{trigger_id}",
        "/api/v1/bat/{trigger_id}/{format}",
    ] {
        assert!(paths.contains(&p), "{p} missing from the OpenAPI document");
    }
    let text = doc.to_string();
    assert!(!text.contains("secret_access_key_set\":{\"type\":\"string"), "flags are booleans");
}

#[tokio::test]
async fn swagger_ui_and_the_document_are_served_offline() {
    let app = TestApp::new(Backend::Sqlite).await;
    let (status, doc) = app.get("/api-docs/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, serde_json::from_str::<serde_json::Value>(&generated()).unwrap());

    let req = axum::http::Request::get("/swagger-ui/").body(axum::body::Body::empty()).unwrap();
    let (status, _, body) = app.send(req).await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // The UI's script is bundled in the binary, not fetched from a CDN.
    let req = axum::http::Request::get("/swagger-ui/swagger-ui-bundle.js").body(axum::body::Body::empty()).unwrap();
    let (status, _, body) = app.send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.len() > 500_000, "bundle is {} bytes", body.len());
    assert!(!html.contains("https://"), "the page loads nothing from the internet");
}
