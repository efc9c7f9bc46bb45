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

    // A browser pointed at the service lands on the console (its own test opens it).
    let req = axum::http::Request::get("/").body(axum::body::Body::empty()).unwrap();
    let (status, headers, _) = app.send(req).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], cloudtrail_inspector::http::HOME);
}

/// Generated clients name their methods after operation ids: each must be there, unique,
/// and a snake_case verb phrase (`get_inspection`, `list_runs`), never a bare `get`.
#[test]
fn operation_ids_are_unique_and_say_what_they_do() {
    let doc: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                id.contains('_') && id.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{method} {path}: {id:?} is not a snake_case phrase"
            );
            if let Some(other) = seen.insert(id.to_string(), format!("{method} {path}")) {
                panic!("{id} names both {other} and {method} {path}");
            }
        }
    }
    for id in ["get_inspection", "list_inspections", "get_run", "list_runs", "trigger_run", "get_cluster"] {
        assert!(seen.contains_key(id), "{id} missing");
    }
}

/// What tools generate test data from: page sizes have their bounds, Func formats their values,
/// and the run trigger's body is optional (an absent body is the usual call).
#[test]
fn parameters_and_bodies_state_their_bounds() {
    let doc: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    let mut limits = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for op in item.as_object().unwrap().values() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["name"] == "limit" {
                    assert_eq!(p["schema"]["minimum"], 1, "{path}");
                    assert_eq!(p["schema"]["maximum"], cloudtrail_inspector::http::MAX_PAGE, "{path}");
                    limits += 1;
                }
                if p["name"] == "format" {
                    assert_eq!(p["schema"]["enum"], serde_json::json!(["normal", "s", "simplified"]), "{path}");
                }
            }
        }
    }
    assert!(limits >= 6, "every list has a limit ({limits} found)");
    let body = &doc["paths"]["/api/v1/inspections/{id}/runs"]["post"]["requestBody"];
    assert_eq!(body["required"], false, "{body}");
    assert_eq!(body["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/RunRequest");
    let runs = &doc["paths"]["/api/v1/runs"]["get"]["parameters"];
    let inspection_id = runs.as_array().unwrap().iter().find(|p| p["name"] == "inspection_id").expect("documented");
    assert!(inspection_id["description"].as_str().is_some_and(|d| !d.is_empty()), "{inspection_id}");
}

/// The bodies Swagger UI pre-fills (the operations' request examples) are accepted as they are.
#[tokio::test]
async fn request_examples_are_accepted_by_the_service() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let http = cloudtrail_inspector::http::HttpSettings { files_root: Some(samples), ..Default::default() };
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    let examples = cloudtrail_inspector::http::examples::request_examples();
    let mut tried = Vec::new();

    let created = app.create_inspection(examples["create_inspection"].clone()).await;
    tried.push("create_inspection");
    let id = created["id"].as_str().unwrap();
    let (status, body) = app.patch(&format!("/api/v1/inspections/{id}"), examples["update_inspection"].clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tried.push("update_inspection");

    // Runs read the bundled sample: an inspection with the example's AWS settings would
    // need AWS.
    let files = app
        .create_inspection(serde_json::json!({"name": "sample", "log_groups": ["sample"],
            "source": {"kind": "files", "path": "cloudtrail"}, "aws": {"region": "us-east-1"}}))
        .await;
    let files_id = files["id"].as_str().unwrap();
    let (status, run) =
        app.post(&format!("/api/v1/inspections/{files_id}/runs"), examples["trigger_run"].clone()).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["clusters_total"].as_i64().unwrap() > 0, "the example's window holds the sample: {run}");
    tried.push("trigger_run");

    let trigger = files["trigger_id"].as_str().unwrap();
    for (op, uri) in
        [("bat_post", format!("/api/v1/bat/{trigger}")), ("bat_format_post", format!("/api/v1/bat/{trigger}/normal"))]
    {
        let (status, body) = app.post(&uri, examples[op].clone()).await;
        assert_eq!(status, StatusCode::OK, "{op}: {body}");
        crate::common::wait_for_run(&app, body["data"]["id"].as_str().unwrap()).await;
        tried.push(op);
    }
    for (op, uri) in
        [("al_post", format!("/api/v1/al/{trigger}")), ("al_format_post", format!("/api/v1/al/{trigger}/normal"))]
    {
        let (status, body) = app.post(&uri, examples[op].clone()).await;
        assert_eq!(status, StatusCode::OK, "{op}: {body}");
        tried.push(op);
    }
    let untried: Vec<&String> = examples.keys().filter(|k| !tried.contains(&k.as_str())).collect();
    assert!(untried.is_empty(), "request examples no test sends: {untried:?}");
}
