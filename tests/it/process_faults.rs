//! The real binary stopped under a run: SIGKILL (the run is `interrupted` as soon as the
//! instance starts again, no event is sent twice, the next run reads the window) and SIGTERM
//! (no new connections, runs in progress finish within the grace period or are marked
//! `interrupted`, the process exits in bounded time).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::fake_cwl::{FakeConfig, FakeCwl};
use crate::common::fake_guance::{self, FakeGuance};
use crate::common::{data, inspection_body};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";
const TOKEN: &str = "process-faults-token";

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

impl Server {
    async fn start(data_dir: &Path, port: u16, env: &[(&str, String)]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("DATABASE_URL")
            .env("DATA_DIR", data_dir)
            .env("API_TOKEN", TOKEN)
            .env("SCHEDULER", "off")
            .env("LOG_FORMAT", "json")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("service.log")).unwrap())
            .spawn()
            .expect("start the binary");
        let server = Server { child, base: format!("http://127.0.0.1:{port}") };
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{}/readyz", server.base)).await {
                if r.status().is_success() {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service did not become ready");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn run_status_becomes(&self, run_id: &str, wanted: &str) -> Value {
        for _ in 0..200 {
            let (_, run) = self.call(reqwest::Method::GET, &format!("/api/v1/runs/{run_id}"), None).await;
            if run["status"] == wanted {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {run_id} never became {wanted}");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns how long it took, or None past `limit`. Polls
    /// asynchronously: the fake servers answer from this test's runtime meanwhile.
    async fn exited_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().expect("try_wait").is_some() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn guance_env(g: &FakeGuance) -> Vec<(&'static str, String)> {
    vec![
        ("GUANCE_NODE", "private".into()),
        ("GUANCE_OPENAPI_URL", g.url()),
        ("GUANCE_OPENWAY_URL", g.url()),
        ("GUANCE_API_KEY_ID", fake_guance::API_KEY_ID.into()),
        ("GUANCE_API_KEY", fake_guance::API_KEY.into()),
    ]
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An inspection over the fake with no delivery delay and no baseline, so tests control
/// every window.
async fn create_inspection(server: &Server, fake: &FakeCwl) -> String {
    let mut body = inspection_body("killed", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    body["delivery_delay_minutes"] = json!(0);
    // Every new finding is sent: no silence after the first event.
    body["alert_policy"] = json!({"silence_minutes": 0});
    let (status, v) = server.call(reqwest::Method::POST, "/api/v1/inspections", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Starts a run without waiting for it and returns once it is running.
async fn start_run(server: &Server, inspection: &str) -> Value {
    let (status, v) =
        server.call(reqwest::Method::POST, &format!("/api/v1/inspections/{inspection}/runs?wait=false"), None).await;
    assert_eq!(status, 202, "{v}");
    server.run_status_becomes(v["id"].as_str().unwrap(), "running").await
}

async fn wait_for_events(g: &FakeGuance, n: usize) {
    for _ in 0..200 {
        if g.events().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Guance received {} events, expected {n}", g.events().len());
}

#[tokio::test]
async fn a_run_killed_with_sigkill_is_interrupted_at_start_up_and_its_window_read_once() {
    // Every CloudWatch answer takes a while, so the kill lands in the middle of a run.
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(700), ..FakeConfig::default() }).await;
    let guance = FakeGuance::start().await;
    let now = Utc::now();
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), now - TimeDelta::minutes(57)));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port, &guance_env(&guance)).await;
    let inspection = create_inspection(&server, &fake).await;

    // A first run sets the watermark and sends its one event.
    let (status, first) =
        server.call(reqwest::Method::POST, &format!("/api/v1/inspections/{inspection}/runs"), None).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("succeeded")), "{first}");
    wait_for_events(&guance, 1).await;

    // A new kind of error after the watermark; the run that would find it is killed.
    let end: DateTime<Utc> = first["window_end"].as_str().unwrap().parse().unwrap();
    let record = json!({"eventTime": rfc3339(end), "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey",
        "awsRegion": "us-east-1", "recipientAccountId": "123837392027", "errorCode": "LimitExceeded",
        "errorMessage": "Cannot exceed quota for AccessKeysPerUser: 2"});
    fake.put_events(GROUP, "late", [(end.timestamp_millis() + 200, record.to_string())]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let killed = start_run(&server, &inspection).await;
    let killed_id = killed["id"].as_str().unwrap().to_string();
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    // The same instance starts again: the run it left is interrupted right away, not after
    // the two-minute heartbeat timeout, so the inspection is not blocked.
    let server = Server::start(dir.path(), port, &guance_env(&guance)).await;
    let (_, after) = server.call(reqwest::Method::GET, &format!("/api/v1/runs/{killed_id}"), None).await;
    assert_eq!(after["status"], "interrupted", "{after}");
    assert!(after["error"].as_str().unwrap().contains("stopped"), "{after}");

    let (status, next) =
        server.call(reqwest::Method::POST, &format!("/api/v1/inspections/{inspection}/runs"), None).await;
    assert_eq!((status, next["status"].as_str()), (200, Some("succeeded")), "{next}");
    assert_eq!(next["window_start"], killed["window_start"], "the interrupted window is read by the next run");
    assert_eq!(next["window_start"], first["window_end"]);
    assert_eq!(next["clusters_new"], 1, "{next}");

    // One event per run that found something: the first, and the one after the kill.
    wait_for_events(&guance, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = guance.events();
    assert_eq!(events.len(), 2, "no event is sent twice");
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e.str("df_event_id").unwrap().to_string()).collect();
    assert_eq!(ids.len(), 2);
}

#[tokio::test]
async fn sigterm_stops_accepting_and_lets_a_run_in_progress_finish() {
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(600), ..FakeConfig::default() }).await;
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), Utc::now() - TimeDelta::minutes(57)));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port, &[("SHUTDOWN_GRACE_SECS", "30".into())]).await;
    let inspection = create_inspection(&server, &fake).await;
    let run = start_run(&server, &inspection).await;

    server.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the listener is closed while the run finishes"
    );
    let took = server.exited_within(Duration::from_secs(30)).await.expect("the process exits once the run is done");
    assert!(server.child.try_wait().unwrap().unwrap().success());
    assert!(took < Duration::from_secs(20), "{took:?}");

    let stored = stored_run(dir.path(), run["id"].as_str().unwrap()).await;
    assert_eq!(stored.status.as_str(), "succeeded", "the run in progress was allowed to finish: {stored:?}");
}

#[tokio::test]
async fn sigterm_marks_runs_still_going_after_the_grace_period_interrupted_and_exits() {
    // Each call takes 3 s: the run cannot finish within a one-second grace period.
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_secs(3), ..FakeConfig::default() }).await;
    fake.put_events(GROUP, "s", data::shift_to(&data::invictus(), Utc::now() - TimeDelta::minutes(57)));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port, &[("SHUTDOWN_GRACE_SECS", "1".into())]).await;
    let inspection = create_inspection(&server, &fake).await;
    let run = start_run(&server, &inspection).await;

    server.signal("-TERM");
    let took = server.exited_within(Duration::from_secs(10)).await.expect("the process exits");
    assert!(took < Duration::from_millis(3500), "grace 1 s, exited after {took:?}");
    assert!(server.child.try_wait().unwrap().unwrap().success());

    let stored = stored_run(dir.path(), run["id"].as_str().unwrap()).await;
    assert_eq!(stored.status.as_str(), "interrupted", "{stored:?}");
    assert!(stored.error.as_deref().unwrap_or("").contains("grace period"), "{stored:?}");
}

/// Reads a run from the stopped service's SQLite file.
async fn stored_run(data_dir: &Path, id: &str) -> cloudtrail_inspector::model::run::Run {
    let url = format!("sqlite://{}", data_dir.join("cloudtrail-inspector.db").display());
    let store =
        cloudtrail_inspector::store::connect(&url, 1, crate::common::test_cipher()).await.expect("open the database");
    store.get_run(id.parse().unwrap()).await.expect("read").expect("the run exists")
}

#[tokio::test]
async fn sigterm_exits_within_half_a_second_after_the_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Nothing running, a keep-alive connection open (a load balancer's): the process exits at once.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port, &[("SHUTDOWN_GRACE_SECS", "2".into())]).await;
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let _ = idle.read(&mut [0u8; 1024]).await.unwrap();
    server.signal("-TERM");
    let took = server.exited_within(Duration::from_secs(10)).await.expect("the process exits");
    assert!(took < Duration::from_millis(500), "nothing to wait for, exited after {took:?}");

    // A run that cannot finish, and a request waiting for another: the grace period, then
    // half a second at most.
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_secs(60), ..FakeConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Server::start(dir.path(), port, &[("SHUTDOWN_GRACE_SECS", "2".into())]).await;
    let first = create_inspection(&server, &fake).await;
    let (status, second) = server
        .call(reqwest::Method::POST, "/api/v1/inspections", Some(inspection_body("waited", &[GROUP], &fake.endpoint())))
        .await;
    assert_eq!(status, 201, "{second}");
    start_run(&server, &first).await;
    let waiting = format!("{}/api/v1/inspections/{}/runs", server.base, second["id"].as_str().unwrap());
    let waiter = tokio::spawn(async move { reqwest::Client::new().post(waiting).bearer_auth(TOKEN).send().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal("-TERM");
    let took = server.exited_within(Duration::from_secs(10)).await.expect("the process exits");
    // The bound the README gives: the grace period plus half a second, exit included.
    assert!(took < Duration::from_millis(2500), "grace 2 s, exited after {took:?}");
    assert!(waiter.await.unwrap().is_err(), "the waiting request got no answer: its run was interrupted");
}
