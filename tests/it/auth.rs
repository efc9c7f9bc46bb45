//! The management API requires a bearer token when tokens are configured; probes and docs
//! stay open; a non-loopback listener without tokens is refused.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp};
use cloudtrail_inspector::http::HttpSettings;
use cloudtrail_inspector::http::auth::Tokens;
use cloudtrail_inspector::model::Secret;

async fn app() -> TestApp {
    let http = HttpSettings {
        api_tokens: Tokens::new(&[Secret::new("current-token"), Secret::new("previous-token")]),
        ..Default::default()
    };
    TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::get(uri);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn management_routes_need_a_valid_token() {
    let app = app().await;
    for (token, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (Some(""), StatusCode::UNAUTHORIZED),
        (Some("current-token"), StatusCode::OK),
        (Some("previous-token"), StatusCode::OK),
    ] {
        let (status, headers, body) = app.send(get("/api/v1/inspections", token)).await;
        assert_eq!(status, expected, "{token:?}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(headers["www-authenticate"], "Bearer");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    // Writes and run triggers too.
    let req = Request::post("/api/v1/inspections")
        .header("content-type", "application/json")
        .body(Body::from(json!({"name": "x"}).to_string()))
        .unwrap();
    assert_eq!(app.send(req).await.0, StatusCode::UNAUTHORIZED);
    let req =
        Request::post("/api/v1/inspections/00000000-0000-7000-8000-000000000000/runs").body(Body::empty()).unwrap();
    assert_eq!(app.send(req).await.0, StatusCode::UNAUTHORIZED);
    // A basic-auth header is not a bearer token.
    let req =
        Request::get("/api/v1/runs").header("authorization", "Basic Y3VycmVudC10b2tlbg==").body(Body::empty()).unwrap();
    assert_eq!(app.send(req).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn func_triggers_use_their_trigger_id_not_a_bearer_token() {
    let app = app().await;
    let (status, _, body) =
        app.send(get("/api/v1/al/0000000000000000000000000000000000000000000000000000000000000000", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "EClientNotFound", "{v}");
    let (_, doc) = app.get("/api-docs/openapi.json").await;
    assert_eq!(doc["paths"]["/api/v1/al/{trigger_id}"]["get"]["security"], json!([{}]));
}

#[tokio::test]
async fn probes_and_documentation_stay_open() {
    let app = app().await;
    for uri in ["/healthz", "/readyz", "/api-docs/openapi.json", "/swagger-ui/"] {
        assert_eq!(app.send(get(uri, None)).await.0, StatusCode::OK, "{uri}");
    }
    let (_, doc) = app.get("/api-docs/openapi.json").await;
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
}

#[test]
fn a_public_listener_without_a_token_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("API_TOKEN")
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without an API token"), "{err}");
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let app = app().await;
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        let req = Request::get("/api/v1/inspections")
            .header("authorization", format!("{scheme} current-token"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(req).await.0, StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn every_token_of_a_rotation_works_whatever_the_spaces() {
    use clap::Parser;
    // As a shell or a .env file writes it: a space after the comma.
    let cli = cloudtrail_inspector::config::Cli::parse_from([
        "cloudtrail-inspector",
        "--api-token",
        "tokA-0123456789abcdef, tokB-0123456789abcdef",
    ]);
    let http = HttpSettings::from(&cli.serve);
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    for token in ["tokA-0123456789abcdef", "tokB-0123456789abcdef"] {
        assert_eq!(app.send(get("/api/v1/inspections", Some(token))).await.0, StatusCode::OK, "{token}");
    }
}

#[test]
fn a_public_listener_with_a_short_token_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("API_TOKEN", "0123456789abcdefgh,secret")
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shorter than 16 characters"), "{err}");
    assert!(!err.contains("secret"), "the token itself is not shown: {err}");
}
