//! The binary as a person first meets it: where settings come from, what its errors say,
//! what it writes to a terminal or a file, and the files it leaves.

use std::path::Path;
use std::process::{Command, Output};

use crate::common;

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"));
    for var in ["DATABASE_URL", "DATA_DIR", "LOG_FORMAT", "RUST_LOG", "NO_COLOR", "RUST_BACKTRACE"] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

#[tokio::test]
async fn a_wrong_database_url_names_the_server_and_the_cause() {
    let admin = common::pg_admin_url();
    let refused = format!("postgres://postgres:hunter2@127.0.0.1:{}/x", free_port());
    let wrong_password = admin.replacen("://postgres:postgres@", "://postgres:hunter2@", 1);
    assert_ne!(wrong_password, admin, "TEST_DATABASE_URL is expected to log in as postgres:postgres");
    let base = admin.rsplit_once('/').unwrap().0;
    let unknown_database = format!("{base}/no_such_database_{}", uuid::Uuid::new_v4().simple());
    for (url, cause) in [
        (refused.as_str(), "connection refused"),
        (wrong_password.as_str(), "wrong password for user \"postgres\""),
        (unknown_database.as_str(), "does not exist"),
    ] {
        let e = cloudtrail_inspector::store::connect(url, 2, common::test_cipher()).await.err().expect("fails");
        let text = format!("{e:#}");
        let host = url.split('@').nth(1).unwrap().split('/').next().unwrap();
        assert!(text.contains(&format!("at {host}")), "{text}");
        assert!(text.contains(cause), "{url}: {text}");
        assert!(!text.contains("pool timed out"), "{text}");
        assert!(!text.contains("hunter2"), "the password never shows: {text}");
    }
}

#[test]
fn settings_come_from_dotenv_under_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "# as in .env.example\nDATA_DIR=./from-dotenv\nLOG_FORMAT=json\n").unwrap();
    let (out, stderr) = run(binary().arg("migrate").current_dir(dir.path()));
    assert!(out.status.success(), "{stderr}");
    assert!(dir.path().join("from-dotenv/cloudtrail-inspector.db").is_file(), "DATA_DIR came from .env");
    assert!(stderr.lines().all(|l| l.starts_with('{')), "LOG_FORMAT came from .env: {stderr}");

    let (out, stderr) = run(binary().arg("migrate").current_dir(dir.path()).env("DATA_DIR", "./from-env"));
    assert!(out.status.success(), "{stderr}");
    assert!(dir.path().join("from-env/cloudtrail-inspector.db").is_file(), "the environment wins over .env");

    std::fs::write(dir.path().join(".env"), "DATA_DIR='unterminated\n").unwrap();
    let (out, stderr) = run(binary().arg("migrate").current_dir(dir.path()));
    assert!(!out.status.success() && stderr.contains(".env"), "a broken .env is reported: {stderr}");

    for args in [&["--help"][..], &["serve", "--help"], &["scan", "--help"]] {
        let (out, _) = run(binary().args(args));
        assert!(String::from_utf8_lossy(&out.stdout).contains("`.env` file in the working directory"), "{args:?}");
    }
}

#[test]
fn logs_in_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (out, stderr) = run(binary().args(["migrate", "--data-dir"]).arg(dir.path()).env("LOG_FORMAT", "pretty"));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a file: {stderr:?}");
}

#[test]
fn generate_adds_to_a_directory_with_files_only_when_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("trail");
    let generate = |extra: &[&str]| run(binary().arg("generate").arg(&out_dir).args(["--records", "50"]).args(extra));
    let (out, stderr) = generate(&[]);
    assert!(out.status.success(), "an absent directory is fine: {stderr}");
    let before = count_files(&out_dir);

    let (out, stderr) = generate(&["--seed", "2"]);
    assert!(!out.status.success(), "refused");
    assert!(stderr.contains("is not empty") && stderr.contains("--force"), "{stderr}");
    assert_eq!(count_files(&out_dir), before, "nothing written");

    let (out, stderr) = generate(&["--seed", "2", "--force"]);
    assert!(out.status.success(), "{stderr}");
    assert!(count_files(&out_dir) > before, "added to");
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        n += if path.is_dir() { count_files(&path) } else { 1 };
    }
    n
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Rows of `table` in the SQLite file at `path`, opened alone: what a copy of that one file
/// holds (without its `-wal`).
async fn rows_in_file_alone(path: &Path, table: &str) -> i64 {
    use sqlx::Connection;
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(path, &copy).unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", copy.display())).await.unwrap();
    sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(&mut conn).await.unwrap_or(-1)
}

fn samples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

#[tokio::test]
async fn scan_state_is_whole_in_its_file_when_the_scan_ends() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let (out, stderr) = run(binary()
        .arg("scan")
        .arg(samples().join("cloudtrail"))
        .args(["--format", "json", "--state"])
        .arg(format!("sqlite://{}", state.display())));
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(rows_in_file_alone(&state, "clusters").await > 0, "a copy of state.db alone holds the clusters");
    let wal = dir.path().join("state.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "nothing left in the write-ahead log");
}

/// The service, started in a data directory of its own over the bundled sample.
struct Service {
    child: std::process::Child,
    base: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    async fn start(data_dir: &Path) -> Service {
        let port = free_port();
        let child = binary()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--scheduler", "off", "--files-root"])
            .arg(samples())
            .env("DATA_DIR", data_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let service = Service { child, base: format!("http://127.0.0.1:{port}") };
        for _ in 0..200 {
            if reqwest::get(format!("{}/readyz", service.base)).await.is_ok_and(|r| r.status().is_success()) {
                return service;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the service did not become ready");
    }

    /// An inspection of the sample with one run over its hour.
    async fn inspect_the_sample(&self) {
        let client = reqwest::Client::new();
        let created: serde_json::Value = client
            .post(format!("{}/api/v1/inspections", self.base))
            .json(&serde_json::json!({"name": "sample", "log_groups": ["sample"],
                "source": {"kind": "files", "path": "cloudtrail"}, "aws": {"region": "us-east-1"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let run = client
            .post(format!("{}/api/v1/inspections/{}/runs", self.base, created["id"].as_str().unwrap()))
            .json(&serde_json::json!({"window_start": "2026-01-15T08:00:00Z", "window_end": "2026-01-15T09:05:00Z"}))
            .send()
            .await
            .unwrap();
        assert_eq!(run.status(), 200);
    }

    async fn stop(mut self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the service did not stop");
    }
}

#[tokio::test]
async fn a_clean_stop_leaves_the_database_whole_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    service.inspect_the_sample().await;
    service.stop().await;
    let db = dir.path().join("cloudtrail-inspector.db");
    assert_eq!(rows_in_file_alone(&db, "inspections").await, 1);
    assert!(rows_in_file_alone(&db, "clusters").await > 0);
}

#[tokio::test]
async fn backup_copies_the_database_while_the_service_runs() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    service.inspect_the_sample().await;
    let copy = dir.path().join("backup.db");
    let backup = || run(binary().arg("backup").arg(&copy).env("DATA_DIR", dir.path()));
    let (out, stderr) = backup();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(rows_in_file_alone(&copy, "inspections").await, 1);
    assert_eq!(rows_in_file_alone(&copy, "runs").await, 1);
    assert!(rows_in_file_alone(&copy, "clusters").await > 0);
    // The service goes on.
    assert!(reqwest::get(format!("{}/readyz", service.base)).await.unwrap().status().is_success());

    let (out, stderr) = backup();
    assert!(!out.status.success() && stderr.contains("exists"), "never overwrites: {stderr}");
    let (out, stderr) =
        run(binary().arg("backup").arg(dir.path().join("x.db")).env("DATA_DIR", dir.path().join("none")));
    assert!(!out.status.success() && stderr.contains("no SQLite database at"), "{stderr}");
    let (out, stderr) =
        run(binary().arg("backup").arg(dir.path().join("pg.db")).env("DATABASE_URL", common::pg_admin_url()));
    assert!(!out.status.success() && stderr.contains("pg_dump"), "Postgres: names its tool: {stderr}");
    assert!(!stderr.contains(":postgres@"), "no credentials in the message: {stderr}");
}
