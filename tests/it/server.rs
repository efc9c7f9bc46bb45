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

/// Reads what the server sends until it closes the connection or `limit` passes; None if it
/// was still open then.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` on a new connection to `server`.
async fn connect_and_send(server: &Server, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer head: {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}")))
}

#[tokio::test]
async fn slow_clients_are_cut_off_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[("HEADER_READ_TIMEOUT_SECS", "1"), ("BODY_READ_TIMEOUT_SECS", "1"), ("SCHEDULER", "off")],
    )
    .await;
    // Part of a request head, and nothing at all: closed after the header deadline.
    let mut partial = connect_and_send(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    let mut silent = connect_and_send(&server, b"").await;
    for stream in [&mut partial, &mut silent] {
        assert!(read_until_closed(stream, Duration::from_secs(5)).await.is_some(), "still open");
    }
    // A body trickling in, on a Func route (which may wait long for a run, never for a client)
    // and on a management route: 408 once the body deadline passes.
    let trigger = "0".repeat(64);
    for route in [format!("/api/v1/al/{trigger}"), "/api/v1/inspections".to_string()] {
        let head = format!(
            "POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kw"
        );
        let mut slow = connect_and_send(&server, head.as_bytes()).await;
        let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await.expect("the slow body was held");
        let (status, body) = parse_answer(&answer);
        assert_eq!((status, body["error"]["code"].as_str()), (408, Some("body_timeout")), "{route}: {body}");
    }
    // A client that keeps its pace is served as before.
    assert_eq!(reqwest::get(format!("{}/healthz", server.base)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_and_the_service_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(&["--data-dir", dir.path().to_str().unwrap()], &[("MAX_CONNECTIONS", "4")]).await;
    // The readiness probe's connection is gone by now (its client was dropped).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_and_send(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = connect_and_send(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut fifth, Duration::from_secs(5)).await.expect("answered and closed");
    let (status, body) = parse_answer(&answer);
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("too_many_connections")), "{body}");
    for stream in &held {
        let mut buf = [0u8; 1];
        let waiting = stream.try_read(&mut buf).is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(waiting, "the four within the cap are being served, not refused");
    }
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if reqwest::get(format!("{}/healthz", server.base)).await.is_ok_and(|r| r.status() == 200) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the service answers again once connections close");
}

#[tokio::test]
async fn answers_of_the_connection_itself_are_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(&["--data-dir", dir.path().to_str().unwrap()], &[]).await;
    let long_uri = format!("GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let big_body = "POST /api/v1/inspections HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
        Content-Length: 100000000\r\n\r\n";
    for (request, status, code) in [
        (long_uri.into_bytes(), 414, "uri_too_long"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Odd: a\x1bb\r\n\r\n".to_vec(), 400, "bad_request"),
        (big_body.as_bytes().to_vec(), 413, "payload_too_large"),
    ] {
        let mut stream = connect_and_send(&server, &request).await;
        let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await.expect("answered and closed");
        let (got, body) = parse_answer(&answer);
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn accepting_goes_on_after_the_descriptors_run_out() {
    // A low open-file limit for this process only, and a cap above it, so accept(2) fails.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new("sh")
        .args(["-c", r#"ulimit -n 128 && exec "$0" serve --listen "$1" --data-dir "$2""#])
        .arg(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env("MAX_CONNECTIONS", "1000")
        .env("SCHEDULER", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "the service answers again once descriptors are free");
}

#[cfg(target_os = "linux")]
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn memory_goes_back_after_a_burst_of_slow_clients() {
    // One descriptor per connection on this side too.
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(1 << 20);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) });
    let connections = 3000.min(hard.saturating_sub(1024) as usize);
    assert!(connections >= 1000, "open-file limit {hard} too low for this test");
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[("HEADER_READ_TIMEOUT_SECS", "2"), ("SCHEDULER", "off")],
    )
    .await;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mb(pid);
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        held.push(connect_and_send(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let peak = rss_mb(pid);
    // The header deadline closes them all; then the memory they held must be given back.
    for stream in &mut held {
        assert!(read_until_closed(stream, Duration::from_secs(30)).await.is_some(), "still open");
    }
    drop(held);
    let grown = peak - before;
    assert!(grown > 15.0, "the burst should have used memory: {before:.1} MB -> {peak:.1} MB");
    let bound = before + 8.0_f64.max(grown / 5.0);
    let mut after = rss_mb(pid);
    for _ in 0..120 {
        if after <= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = rss_mb(pid);
    }
    assert!(
        after <= bound,
        "RSS {before:.1} MB before, {peak:.1} MB with {connections} connections, {after:.1} MB 60 s after"
    );
}
