//! `cloudtrail-inspector scan` and file sources, run as users run them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use axum::http::StatusCode;
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::FakeCwl;
use crate::common::{Backend, TestApp};

fn scan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector"))
        .arg("scan")
        .args(args)
        .env_remove("DATABASE_URL")
        .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST0001")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run scan")
}

fn invictus_dir() -> std::path::PathBuf {
    data::records_dir().join("invictus-ir/CloudTrail")
}

/// The invictus files, gzipped into CloudTrail's S3 layout, plus two files that cannot be read.
fn delivered_tree(dir: &Path) {
    let day = dir.join("AWSLogs/123837392027/CloudTrail/us-east-1/2023/07/10");
    std::fs::create_dir_all(&day).unwrap();
    for entry in std::fs::read_dir(invictus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(day.join(format!("{name}.gz"))).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(&std::fs::read(&path).unwrap()).unwrap();
        gz.finish().unwrap();
    }
    // A truncated gzip and a file that is not JSON.
    let good = std::fs::read(std::fs::read_dir(&day).unwrap().next().unwrap().unwrap().path()).unwrap();
    std::fs::write(day.join("truncated.json.gz"), &good[..good.len() / 2]).unwrap();
    std::fs::write(day.join("notes.json"), b"this is not JSON").unwrap();
}

#[test]
fn scan_prints_the_clusters_of_real_files_and_reports_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    delivered_tree(dir.path());
    let out = scan(&["--no-progress", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "new clusters → exit 3\n{stdout}\n{stderr}");
    assert!(stdout.contains("window: all records\n"), "no --since/--until: the whole files: {stdout}");
    assert!(stdout.contains("records: 2,900 · error records: 300"), "{stdout}");
    assert!(stdout.contains("NEW ERROR CLUSTERS"), "{stdout}");
    assert!(stdout.contains("The routeTable ID '<*>' does not exist"));
    assert!(stdout.contains("ACCESS KEYS"));
    assert!(stdout.contains("status: partial"), "bad files make the run partial: {stdout}");
    assert!(stderr.contains("truncated.json.gz: bad gzip"), "{stderr}");
    assert!(stderr.contains("notes.json: not JSON"), "{stderr}");
}

#[test]
fn state_remembers_known_clusters_between_scans() {
    let dir = tempfile::tempdir().unwrap();
    let state = format!("sqlite://{}", dir.path().join("state.db").display());
    let target = invictus_dir();
    let first = scan(&["--state", &state, "--format", "json", target.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["run"]["clusters_new"], v["run"]["clusters_total"]);
    assert_eq!(v["run"]["error_records"], 300);
    assert_eq!(v["clusters"].as_array().unwrap().len() as i64, v["run"]["clusters_total"].as_i64().unwrap());
    assert_eq!(v["access_keys"].as_array().unwrap().len(), 50);

    let second = scan(&["--state", &state, target.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "nothing new → exit 0\n{stdout}");
    assert!(stdout.contains("NEW ERROR CLUSTERS (0)"), "{stdout}");
    assert!(stdout.contains("known"));
}

#[test]
fn windows_select_records_by_event_time() {
    let target = invictus_dir();
    let out = scan(&[
        "--format",
        "json",
        "--since",
        "2023-07-10T12:00:00Z",
        "--until",
        "2023-07-10T12:10:00Z",
        target.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = data::invictus()
        .iter()
        .filter(|r| data::is_error(r))
        .filter(|r| {
            let t = r["eventTime"].as_str().unwrap();
            ("2023-07-10T12:00:00Z".."2023-07-10T12:10:00Z").contains(&t)
        })
        .count();
    assert_eq!(v["run"]["error_records"], expected as i64);
    assert_eq!(expected, 144);

    let table = scan(&["--no-progress", "--until", "2023-07-10T12:10:00Z", target.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(stdout.contains("window: all records before 2023-07-10 12:10:00Z\n"), "{stdout}");
}

#[test]
fn markdown_output_and_ignored_codes() {
    let out =
        scan(&["--format", "markdown", "--ignore-error-code", "ThrottlingException", invictus_dir().to_str().unwrap()]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.starts_with("# CloudTrail scan of"), "{md}");
    assert!(md.contains("## New error clusters"));
    assert!(md.contains("| Count | Account |"));
    assert!(!md.contains("ThrottlingException"), "ignored codes are left out");
    assert!(md.contains("ignored: 102"), "{md}");
}

#[test]
fn bad_arguments_fail_clearly() {
    let out = scan(&["/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /definitely/not/here"));
    let out = scan(&["--since", "tomorrowish", invictus_dir().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a time"));
}

#[tokio::test]
async fn scan_reads_a_cloudwatch_log_group() {
    let fake = FakeCwl::start().await;
    let end = (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    fake.put_events("trail", "s", data::shift_to(&data::invictus(), end - TimeDelta::minutes(58)));
    let endpoint = fake.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        scan(&["--endpoint-url", &endpoint, "--format", "json", "cloudwatch://us-east-1/trail"])
    })
    .await
    .unwrap();
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["run"]["status"], "succeeded", "{v}");
    assert_eq!(v["run"]["error_records"], 300);
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn inspections_can_read_files_under_the_files_root_only() {
    let root = tempfile::tempdir().unwrap();
    delivered_tree(root.path());
    let http =
        cloudtrail_inspector::http::HttpSettings { files_root: Some(root.path().to_path_buf()), ..Default::default() };
    let app = TestApp::with_settings(Backend::Sqlite, crate::common::test_runner_settings(), http).await;
    let (status, v) =
        app.post("/api/v1/inspections", json!({"name": "outside", "source": {"kind": "files", "path": "/etc"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["source.path"][0].as_str().unwrap().contains("files root"));
    let (status, _) = app
        .post(
            "/api/v1/inspections",
            json!({"name": "sneaky", "source": {"kind": "files", "path": "AWSLogs/../../../etc"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let insp = app.create_inspection(json!({"name": "files", "source": {"kind": "files", "path": "AWSLogs"}})).await;
    assert!(insp["source"]["path"].as_str().unwrap().ends_with("/AWSLogs"));
    let (status, r) = app
        .post(
            &format!("/api/v1/inspections/{}/runs", insp["id"].as_str().unwrap()),
            json!({"window_start": "2023-07-10T00:00:00Z", "window_end": "2023-07-11T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "partial");
    assert_eq!(r["error_records"], 300);
    assert_eq!(r["log_groups"][0]["warnings"].as_array().unwrap().len(), 2);
    let (_, keys) =
        app.get(&format!("/api/v1/inspections/{}/access-keys?limit=200", insp["id"].as_str().unwrap())).await;
    assert_eq!(keys["items"].as_array().unwrap().len(), 133, "keys come from the same pass");

    // Without a files root, the service refuses file sources altogether.
    let closed = TestApp::new(Backend::Sqlite).await;
    let (status, v) =
        closed.post("/api/v1/inspections", json!({"name": "f", "source": {"kind": "files", "path": "/tmp"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"]["fields"]["source.path"][0].as_str().unwrap().contains("--files-root"));
}

/// Decompressed contents of every file under `dir`, by relative path.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for f in cloudtrail_inspector::source::files::list_files(dir).unwrap() {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap()), &mut bytes)
            .unwrap();
        out.insert(f.strip_prefix(dir).unwrap().display().to_string(), bytes);
    }
    out
}

#[test]
fn the_bundled_sample_is_what_the_generator_writes_and_the_first_command_reports_it() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/cloudtrail");
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_cloudtrail-inspector")).arg("generate").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (tree(&shipped), tree(dir.path()));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "regenerate with `cloudtrail-inspector generate samples/cloudtrail`"
    );
    assert!(a == b, "samples/cloudtrail differs from the generator's output");

    // README's first command.
    let out = scan(&["--no-progress", shipped.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("records: 2,000"), "{stdout}");
    assert!(stdout.contains("ConsoleLoginFailure"), "failed sign-ins are in the sample: {stdout}");
    assert!(stdout.contains("AccessDenied"), "{stdout}");
}
