//! The real binary, started as users start it, answering over a real socket.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(database_url: &str) -> Server {
    start_with(&[], &[("DATABASE_URL", database_url)]).await
}

async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let server = Server { child, base: format!("http://127.0.0.1:{port}") };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not become ready");
}

#[tokio::test]
async fn the_binary_serves_the_api_over_http() {
    for backend in crate::common::BACKENDS {
        let (_store, guard) = crate::common::fresh_store(backend).await;
        let server = start(&guard.url).await;
        let client = reqwest::Client::new();
        let created = client
            .post(format!("{}/api/v1/inspections", server.base))
            .json(&json!({"name": "e2e", "configs": "trail-a\ntrail-b", "aws": {"region": "us-west-2"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        assert!(created.headers().get("x-request-id").is_some(), "every answer carries a request id");
        let body: serde_json::Value = created.json().await.unwrap();
        assert_eq!(body["log_groups"], json!(["trail-a", "trail-b"]));

        let list: serde_json::Value =
            client.get(format!("{}/api/v1/inspections", server.base)).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["items"][0]["id"], body["id"]);
        let ui = client.get(format!("{}/swagger-ui/", server.base)).send().await.unwrap();
        assert_eq!(ui.status(), 200);
        let gz = client
            .get(format!("{}/api-docs/openapi.json", server.base))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(gz.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    }
}

#[test]
fn help_documents_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in
        ["--listen", "LISTEN_ADDR", "--database-url", "DATABASE_URL", "--log-format", "LOG_FORMAT", "--run-concurrency"]
    {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector")).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("migrate") && help.contains("serve"), "{help}");
}

#[tokio::test]
async fn without_a_database_url_it_keeps_everything_in_an_embedded_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let server = start_with(&["--data-dir", data.to_str().unwrap()], &[]).await;
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", server.base)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["database"], "sqlite");
    assert!(data.join("cloudtrail-inspector.db").is_file(), "created on first start");
}
