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

/// A tree of many files for reading in parallel: the real records cut into small gzipped
/// delivery files, the panther and stratus sets, one cluster with more distinct principals
/// and source IPs than a top list tracks (spread over files, with ties of time and of event
/// id), Insights events with equal times, records with a repair and malformed ones, and more
/// bad files than a run lists.
fn many_files_tree(dir: &Path) {
    let day = dir.join("AWSLogs/o-a1b2c3d4e5/123837392027/CloudTrail/us-east-1/2023/07/10");
    std::fs::create_dir_all(&day).unwrap();
    let gz = |path: &Path, bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap();
    };
    let invictus = data::invictus();
    for (i, chunk) in invictus.chunks(37).enumerate() {
        let doc = json!({ "Records": chunk });
        gz(
            &day.join(format!("123837392027_CloudTrail_us-east-1_20230710T{i:04}Z_a{i:03}.json.gz")),
            doc.to_string().as_bytes(),
        );
    }
    let lines: Vec<String> = data::panther().iter().map(Value::to_string).collect();
    std::fs::write(dir.join("panther.jsonl"), lines.join("\n")).unwrap();
    std::fs::write(dir.join("stratus.json"), serde_json::to_vec(&data::stratus()).unwrap()).unwrap();

    let error = invictus.iter().find(|r| r.get("errorCode").is_some()).expect("an error record").clone();
    for f in 0..12 {
        let mut records = Vec::new();
        for i in 0..25 {
            let n = f * 25 + i;
            let mut r = error.clone();
            r["sourceIPAddress"] = json!(format!("198.51.{}.{}", n / 200, n % 200));
            r["userIdentity"]["arn"] = json!(format!("arn:aws:iam::123837392027:user/u{}", n % 90));
            r["userIdentity"]["accessKeyId"] = json!(format!("AKIAPARALLEL{:08}", n % 40));
            // Every fourth record shares its time; ids repeat across files.
            r["eventTime"] = json!(format!("2023-07-10T13:{:02}:{:02}Z", n % 7, (n / 4) % 60));
            r["eventID"] = json!(format!("dup-{}", n % 50));
            records.push(r);
        }
        gz(&dir.join(format!("spread-{f:02}.json.gz")), json!({ "Records": records }).to_string().as_bytes());
    }
    let insight = |id: &str, state: &str| {
        json!({"eventVersion": "1.08", "eventTime": "2023-07-10T12:05:00Z", "awsRegion": "us-east-1",
            "eventID": id, "eventType": "AwsCloudTrailInsight", "recipientAccountId": "123837392027",
            "insightDetails": {"state": state, "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
                "insightType": "ApiCallRateInsight"}, "eventCategory": "Insight"})
    };
    for f in 0..3 {
        let doc = json!({ "Records": [insight(&format!("i-{f}-a"), "Start"), insight(&format!("i-{f}-b"), "End")] });
        std::fs::write(dir.join(format!("insights-{f}.json")), doc.to_string()).unwrap();
    }
    // Half-good files: a malformed record, and text that is not UTF-8.
    let mut mixed = format!("{}\n{{\"eventTime\": oops}}\n{}\n", invictus[0], invictus[1]).into_bytes();
    let at = mixed.iter().position(|&b| b == b'"').unwrap() + 1;
    mixed[at + 1] = 0xff;
    std::fs::write(dir.join("mixed.jsonl"), &mixed).unwrap();
    let good = std::fs::read(day.join("123837392027_CloudTrail_us-east-1_20230710T0000Z_a000.json.gz")).unwrap();
    std::fs::write(day.join("truncated.json.gz"), &good[..good.len() / 2]).unwrap();
    for i in 0..130 {
        std::fs::write(dir.join(format!("bad-{i:03}.json")), b"this is not JSON").unwrap();
    }
}

async fn read_with_jobs(
    dir: &Path,
    jobs: usize,
) -> (cloudtrail_inspector::engine::Analysis, cloudtrail_inspector::source::ReadNotes) {
    use cloudtrail_inspector::engine::{Clusterer, ClustererConfig};
    use cloudtrail_inspector::source::LogSource;
    use cloudtrail_inspector::source::files::{FilesAccess, FilesSource, all_time};
    let source = FilesSource::new(FilesAccess::Anywhere).with_jobs(jobs);
    let mut c = Clusterer::new(ClustererConfig { track_keys: true, top_k: 100, max_samples: 5, ..Default::default() });
    let notes = source.read_errors(dir.to_str().unwrap(), all_time(Utc::now()), &mut c).await.unwrap();
    (c.finish(), notes)
}

/// Files read by several threads make exactly the result of one thread: clusters with their
/// counts, times, top lists, samples and sample records, access keys, Insights, counters,
/// repairs, and the bad files with the same ones listed in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_in_parallel_gives_the_one_thread_result() {
    let dir = tempfile::tempdir().unwrap();
    many_files_tree(dir.path());
    let (one, notes) = read_with_jobs(dir.path(), 1).await;
    assert_eq!(notes.bad_files, 131, "{:?}", notes.problems);
    assert_eq!(notes.problems.len(), 100);
    assert!(notes.problems[0].starts_with("AWSLogs/"), "{}", notes.problems[0]);
    assert!(notes.problems[1].starts_with("bad-000.json: not JSON"), "{}", notes.problems[1]);
    assert!(one.stats.malformed_records >= 1 && one.stats.warned_records >= 1, "{:?}", one.stats);
    assert_eq!(one.stats.insight_events, 6);
    let spread = one.clusters.iter().find(|c| c.count >= 300).expect("the spread cluster");
    assert_eq!(spread.top_source_ips.len(), cloudtrail_inspector::engine::cluster::TOP_TRACKED);
    assert_eq!(spread.top_principals.len(), cloudtrail_inspector::engine::cluster::TOP_TRACKED);
    assert!(one.keys.iter().any(|k| k.access_key_id == "AKIAPARALLEL00000039"));
    for jobs in [2, 3, 8, 64] {
        let (many, many_notes) = read_with_jobs(dir.path(), jobs).await;
        assert_eq!(many_notes, notes, "{jobs} jobs");
        assert_eq!(many.stats, one.stats, "{jobs} jobs");
        assert_eq!(many.clusters, one.clusters, "{jobs} jobs");
        assert_eq!(many.keys, one.keys, "{jobs} jobs");
        assert_eq!(many.insights, one.insights, "{jobs} jobs");
        assert_eq!(many, one, "{jobs} jobs");
    }
}

/// `--jobs` reaches the scan: one thread and four report the same.
#[test]
fn scan_jobs_do_not_change_the_report() {
    let dir = tempfile::tempdir().unwrap();
    many_files_tree(dir.path());
    let tree = dir.path().to_str().unwrap();
    let report = |jobs: &str| {
        let out = scan(&["--no-progress", "--format", "json", "--jobs", jobs, tree]);
        assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
        let mut doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let run = doc["run"].take();
        for c in doc["clusters"].as_array_mut().unwrap() {
            for volatile in ["cluster_id", "id", "run_id", "inspection_id", "created_at", "updated_at"] {
                c.as_object_mut().unwrap().remove(volatile);
            }
        }
        (
            doc,
            run["stats"].clone(),
            run["log_groups"][0]["warnings"].clone(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let one = report("1");
    let four = report("4");
    assert!(one.0["clusters"].as_array().unwrap().len() > 10);
    assert!(one.0["clusters"] == four.0["clusters"], "the clusters differ");
    assert!(one.0["access_keys"] == four.0["access_keys"], "the access keys differ");
    assert_eq!(one.1, four.1);
    assert_eq!(one.2, four.2);
    assert_eq!(one.3, four.3);
    let out = scan(&["--no-progress", "--jobs", "0", tree]);
    assert_eq!(out.status.code(), Some(2), "--jobs 0 is refused");
}
