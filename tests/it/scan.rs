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
    // Each cluster's level and CIS rules: StopLogging of a missing trail is CIS CloudWatch.5.
    let stop = stdout.lines().find(|l| l.contains("cloudtrail StopLogging")).expect("the StopLogging cluster");
    assert!(stop.contains(" critical ") && stop.trim_end().ends_with("CloudWatch.5"), "{stop}");
    assert!(stdout.contains("LEVEL") && stdout.contains(" CIS"), "{stdout}");
    assert!(stdout.contains("ACCESS KEYS (50 of 133 shown; 133 active in this window;"), "{stdout}");
    assert!(stdout.contains("status: partial"), "bad files make the run partial: {stdout}");
    assert!(stderr.contains("truncated.json.gz: bad gzip"), "{stderr}");
    assert!(stderr.contains("notes.json: not JSON"), "{stderr}");
}

#[test]
fn exit_codes_tell_a_pipeline_what_was_and_was_not_read() {
    let dir = tempfile::tempdir().unwrap();
    delivered_tree(dir.path());
    let state = format!("sqlite://{}", dir.path().join("state.db").display());
    let tree = dir.path().to_str().unwrap();
    let first = scan(&["--no-progress", "--state", &state, tree]);
    assert_eq!(first.status.code(), Some(3), "new clusters, though two files could not be read");
    // Nothing new among what could be read, but two files were not: not a clean 0.
    let second = scan(&["--no-progress", "--state", &state, tree]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("none among what could be read"), "{stdout}");
    assert!(String::from_utf8_lossy(&second.stderr).contains("truncated.json.gz: bad gzip"));

    // A single file that cannot be read: nothing was read, and the warning names the file.
    let day = dir.path().join("AWSLogs/123837392027/CloudTrail/us-east-1/2023/07/10");
    for (name, problem) in [("notes.json", "not JSON"), ("truncated.json.gz", "bad gzip")] {
        let file = day.join(name);
        let out = scan(&["--no-progress", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("{}: {problem}", file.display())), "{stderr}");
        assert!(!stderr.contains(": : "), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("nothing could be read"));
    }

    // A directory without CloudTrail files.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README.txt"), "no records here").unwrap();
    let out = scan(&["--no-progress", empty.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no CloudTrail files in"), "{stderr}");
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
    let denied = v["clusters"].as_array().unwrap().iter().find(|c| c["event_name"] == "AssumeRole").unwrap();
    assert_eq!((&denied["level"], &denied["cis_rules"]), (&json!("error"), &json!(["CloudWatch.2"])), "{denied}");
    assert_eq!(v["access_keys"].as_array().unwrap().len(), 50);
    // invictus holds 133 access keys, all active in the scan's window: how many, and that
    // the list is cut, are said.
    assert_eq!((&v["access_keys_total"], &v["access_keys_active"]), (&json!(133), &json!(133)), "{}", v["run"]);
    assert_eq!(v["access_keys_truncated"], true);
    assert_eq!(v["run"]["report"]["access_keys_active"], 133);
    assert_eq!(v["run"]["report"]["access_keys_truncated"], true);

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

/// A first scan lists each cluster once; the window shown is the one asked for, not the
/// internal bound a day past now; the JSON says who ran it and which version of itself it is.
#[test]
fn scan_output_says_each_thing_once_and_plainly() {
    let target = invictus_dir();
    let out = scan(&["--no-progress", "--since", "2023-07-10T12:00:00Z", target.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("window: all records since 2023-07-10 12:00:00Z\n"), "{stdout}");
    assert!(stdout.contains("KNOWN ERROR CLUSTERS (0)") && !stdout.contains("ALL CLUSTERS"), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("ec2 ") || l.contains("iam ")).collect();
    assert!(!rows.is_empty(), "{stdout}");
    let distinct: std::collections::HashSet<&&str> = rows.iter().collect();
    assert_eq!(distinct.len(), rows.len(), "a cluster is printed once: {stdout}");

    let json = scan(&["--format", "json", "--since", "2023-07-10T12:00:00Z", target.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["run"]["trigger"], "cli");
    assert_eq!(v["window"], json!({"start": "2023-07-10T12:00:00Z", "end": null}), "{}", v["window"]);
    assert_eq!(v["target"], target.canonicalize().unwrap().display().to_string());
}

#[test]
fn markdown_output_and_ignored_codes() {
    let out =
        scan(&["--format", "markdown", "--ignore-error-code", "ThrottlingException", invictus_dir().to_str().unwrap()]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.starts_with("# CloudTrail scan of"), "{md}");
    assert!(md.contains("## New error clusters"));
    assert!(md.contains("| Count | Level | Account |"), "{md}");
    let stop = md.lines().find(|l| l.contains("StopLogging")).expect("the StopLogging cluster");
    assert!(stop.contains("| critical |") && stop.contains("CloudWatch.5"), "{stop}");
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
