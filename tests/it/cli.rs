//! The binary as a person first meets it: where settings come from, what its errors say,
//! what it writes to a terminal or a file, and the files it leaves.

use std::path::Path;
use std::process::{Command, Output};

use crate::common;

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"));
    for var in ["DATABASE_URL", "DATA_DIR", "LOG_FORMAT", "RUST_LOG", "NO_COLOR"] {
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
