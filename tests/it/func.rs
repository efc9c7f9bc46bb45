//! The Func-style trigger routes, as a DataFlux Func caller uses them: every request form and
//! option, every error code, on both backends, against the fake CloudWatch Logs server loaded
//! with real CloudTrail records.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::common::data;
use crate::common::fake_cwl::{FakeConfig, FakeCwl};
use crate::common::{BACKENDS, Backend, TestApp, inspection_body, wait_for_run};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";

/// A fake holding all invictus records inside a first run's default window.
async fn fake_with_invictus(cfg: FakeConfig) -> FakeCwl {
    let fake = FakeCwl::start_with(cfg).await;
    let end = (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    fake.put_events(
        GROUP,
        "123837392027_CloudTrail_us-east-1",
        data::shift_to(&data::invictus(), end - TimeDelta::minutes(58)),
    );
    fake
}

/// An app and an inspection of the fake's group; returns the inspection's JSON.
async fn setup(backend: Backend, fake: &FakeCwl, name: &str) -> (TestApp, Value) {
    let app = TestApp::new(backend).await;
    let mut body = inspection_body(name, &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let insp = app.create_inspection(body).await;
    (app, insp)
}

fn tid(insp: &Value) -> &str {
    insp["trigger_id"].as_str().expect("trigger_id")
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// Sends a request with optional JSON body and extra headers; returns status, headers, body.
async fn send(
    app: &TestApp,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&v).unwrap())
        }
        None => Body::empty(),
    };
    app.send(req.body(body).unwrap()).await
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// A Func error answer: status, code, reason, and the envelope's other fields.
fn assert_func_error(status: StatusCode, headers: &HeaderMap, body: &Value, code: f64, reason: &str) {
    assert_eq!(status.as_u16(), code.trunc() as u16, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["error"].as_f64(), Some(code), "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["detail"].is_object(), "{body}");
    assert!(body["reqDump"]["method"].is_string() && body["reqDump"]["url"].is_string(), "{body}");
    assert_request_info(headers, body);
}

/// Func's request info, on every answer: `X-Trace-Id`, `X-Request-Time`, `X-Response-Time`,
/// `X-Request-Cost` headers, and for JSON bodies the same as `traceId`, `clientTime`,
/// `reqTime`, `respTime`, `reqCost`.
fn assert_request_info(headers: &HeaderMap, body: &Value) {
    let trace = body["traceId"].as_str().expect("traceId");
    assert_eq!(headers["x-trace-id"], trace);
    assert!(body["reqTime"].is_string() && body["respTime"].is_string() && body["reqCost"].is_u64(), "{body}");
    assert!(body.get("clientTime").is_some(), "{body}");
    assert_eq!(headers["x-request-time"], body["reqTime"].as_str().unwrap());
    assert_eq!(headers["x-response-time"], body["respTime"].as_str().unwrap());
    assert_eq!(headers["x-request-cost"].to_str().unwrap().parse::<u64>().ok(), body["reqCost"].as_u64());
}

async fn run_count(app: &TestApp, inspection_id: &str) -> usize {
    let (_, runs) = app.get(&format!("/api/v1/runs?inspection_id={inspection_id}")).await;
    runs["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn post_normal_runs_and_answers_with_the_run_unboxed() {
    for backend in BACKENDS {
        let fake = fake_with_invictus(FakeConfig::default()).await;
        let (app, insp) = setup(backend, &fake, "func-post").await;
        let uri = format!("/api/v1/al/{}", tid(&insp));
        let (status, headers, body) = send(
            &app,
            Method::POST,
            &uri,
            Some(json!({"kwargs": {}, "options": {}})),
            &[("x-trace-id", "TRACE-FROM-FUNC-1")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
        assert_eq!(headers["x-trace-id"], "TRACE-FROM-FUNC-1");
        assert!(headers["x-request-cost"].to_str().unwrap().parse::<u64>().is_ok());
        let run = json_of(&body);
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["trigger"], "func");
        assert_eq!(run["trace_id"], "TRACE-FROM-FUNC-1");
        assert_eq!(run["error_records"], 300);
        assert_eq!(run["explicit_window"], false, "no kwargs: the window follows the watermark");
        // The result is the run exactly as the runs API shows it.
        let (_, stored) = app.get(&format!("/api/v1/runs/{}", run["id"].as_str().unwrap())).await;
        assert_eq!(run, stored);

        // The explicit `normal` format and an empty body behave the same.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _, body) = send(&app, Method::POST, &format!("{uri}/normal"), None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let second = json_of(&body);
        assert_eq!(second["window_start"], run["window_end"], "consecutive calls read consecutive windows");
        assert!(second["trace_id"].as_str().unwrap().starts_with("TRACE-"), "a trace id is made when none is sent");
    }
}

#[tokio::test]
async fn get_normal_reads_json_text_from_the_query_and_boxes_on_request() {
    for backend in BACKENDS {
        let fake = fake_with_invictus(FakeConfig::default()).await;
        let (app, insp) = setup(backend, &fake, "func-get").await;
        let q =
            query(&[("kwargs", r#"{"dry_run": true, "lookback_minutes": 70}"#), ("options", r#"{"unbox": false}"#)]);
        let (status, headers, body) =
            send(&app, Method::GET, &format!("/api/v1/al/{}?{q}", tid(&insp)), None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let boxed = json_of(&body);
        assert_eq!(boxed["ok"], true);
        assert_eq!(boxed["error"], 200);
        assert_eq!(boxed["message"], "");
        let trace = boxed["traceId"].as_str().unwrap();
        assert!(trace.starts_with("TRACE-"), "{trace}");
        assert_eq!(headers["x-trace-id"], trace);
        assert!(boxed["reqCost"].is_u64());
        for t in ["reqTime", "respTime"] {
            assert!(DateTime::parse_from_rfc3339(boxed[t].as_str().unwrap()).is_ok(), "{t}: {boxed}");
        }
        let run = &boxed["data"]["result"];
        assert_eq!(run["dry_run"], true);
        assert_eq!(run["explicit_window"], true);
        assert_eq!(run["trace_id"], trace, "the generated trace id is stored on the run");
        let start: DateTime<Utc> = run["window_start"].as_str().unwrap().parse().unwrap();
        let end: DateTime<Utc> = run["window_end"].as_str().unwrap().parse().unwrap();
        assert_eq!(end - start, TimeDelta::minutes(70));
        // The window ends a delivery delay (10 minutes) before now.
        let lag = Utc::now() - end;
        assert!(lag >= TimeDelta::minutes(10) && lag < TimeDelta::minutes(11), "{lag}");
        assert_eq!(run["error_records"], 300);
    }
}

#[tokio::test]
async fn the_simplified_format_takes_the_body_or_query_as_kwargs() {
    for backend in BACKENDS {
        let fake = fake_with_invictus(FakeConfig::default()).await;
        fake.create_log_group("other-group");
        let (app, insp) = setup(backend, &fake, "func-simple").await;
        let t = tid(&insp);

        // POST: JSON values; `configs` replaces the log groups for this run only.
        let (status, _, body) = send(
            &app,
            Method::POST,
            &format!("/api/v1/al/{t}/simplified"),
            Some(json!({"configs": format!("other-group\n{GROUP}\n"), "dry_run": true})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let run = json_of(&body);
        let groups: Vec<&str> =
            run["log_groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(groups, ["other-group", GROUP]);
        assert_eq!(run["dry_run"], true);
        assert_eq!(run["error_records"], 300);

        // GET `s`: every value is text, read as the argument's type.
        let q = query(&[("dry_run", "true"), ("lookback_minutes", "30")]);
        let (status, _, body) = send(&app, Method::GET, &format!("/api/v1/al/{t}/s?{q}"), None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let run = json_of(&body);
        assert_eq!(run["dry_run"], true);
        let start: DateTime<Utc> = run["window_start"].as_str().unwrap().parse().unwrap();
        let end: DateTime<Utc> = run["window_end"].as_str().unwrap().parse().unwrap();
        assert_eq!(end - start, TimeDelta::minutes(30));

        // Explicit windows by text.
        let (s, e) = (run["window_start"].as_str().unwrap(), run["window_end"].as_str().unwrap());
        let q = query(&[("window_start", s), ("window_end", e), ("dry_run", "1")]);
        let (status, _, body) = send(&app, Method::GET, &format!("/api/v1/al/{t}/simplified?{q}"), None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let again = json_of(&body);
        assert_eq!((&again["window_start"], &again["window_end"]), (&run["window_start"], &run["window_end"]));

        // In the simplified format `options` is just an unknown kwarg.
        let (status, headers, body) =
            send(&app, Method::POST, &format!("/api/v1/al/{t}/s"), Some(json!({"options": {"unbox": false}})), &[])
                .await;
        let body = json_of(&body);
        assert_func_error(status, &headers, &body, 400.43, "EClientBadRequest");
        assert_eq!(body["detail"]["kwargsField"], "options");
    }
}

#[tokio::test]
async fn return_type_json_dumps_gives_the_runs_json_text() {
    for backend in BACKENDS {
        let fake = fake_with_invictus(FakeConfig::default()).await;
        let (app, insp) = setup(backend, &fake, "func-dumps").await;
        let uri = format!("/api/v1/al/{}", tid(&insp));
        // Unboxed: the body is the text itself.
        let (status, headers, body) = send(
            &app,
            Method::POST,
            &uri,
            Some(json!({"kwargs": {"dry_run": true}, "options": {"returnType": "jsonDumps"}})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"), "never rendered as HTML");
        let run = json_of(&body);
        assert_eq!(run["trigger"], "func");
        // Boxed: data.result is a string holding the run's JSON.
        let (status, _, body) = send(
            &app,
            Method::POST,
            &uri,
            Some(json!({"kwargs": {"dry_run": true}, "options": {"returnType": "jsonDumps", "unbox": false}})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let boxed = json_of(&body);
        let text = boxed["data"]["result"].as_str().expect("a string result");
        let inner: Value = serde_json::from_str(text).unwrap();
        assert_eq!(inner["dry_run"], true);
        // returnType raw is the default spelled out.
        let (status, _, body) = send(
            &app,
            Method::POST,
            &uri,
            Some(json!({"kwargs": {"dry_run": true}, "options": {"returnType": "raw"}})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(json_of(&body).is_object());
    }
}

#[tokio::test]
async fn bad_requests_are_400_43_and_start_nothing() {
    for backend in BACKENDS {
        let app = TestApp::new(backend).await;
        let insp = app.create_inspection(inspection_body("func-bad", &["g"], "http://127.0.0.1:9")).await;
        let id = insp["id"].as_str().unwrap();
        let base = format!("/api/v1/al/{}", tid(&insp));
        let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
            (
                Method::GET,
                format!("{base}?{}", query(&[("kwargs", "{not json")])),
                None,
                "Invalid kwargs, bad JSON format",
            ),
            (Method::GET, format!("{base}?{}", query(&[("options", "[1,")])), None, "Invalid options, bad JSON format"),
            (
                Method::POST,
                base.clone(),
                Some(json!({"kwargs": "{\"dry_run\": tru"})),
                "Invalid kwargs, bad JSON format",
            ),
            (
                Method::POST,
                base.clone(),
                Some(json!({"options": {"returnType": "xml"}})),
                "Invalid options, invalid returnType",
            ),
            (
                Method::POST,
                base.clone(),
                Some(json!({"kwargs": {"regions": "us-east-1"}})),
                "unknown argument `regions`",
            ),
            (Method::POST, base.clone(), Some(json!({"kwargs": [1, 2]})), "Invalid kwargs, a JSON object is expected"),
            (Method::POST, base.clone(), Some(json!({"options": {"unbox": "no"}})), "unbox should be a boolean"),
            (Method::POST, base.clone(), Some(json!({"options": {"timeout": 3601}})), "timeout is too large"),
            (Method::POST, base.clone(), Some(json!({"options": {"timeout": 0}})), "timeout is too small"),
            (
                Method::POST,
                base.clone(),
                Some(json!({"kwargs": {"dry_run": "maybe"}})),
                "`dry_run` must be true or false",
            ),
            (
                Method::POST,
                base.clone(),
                Some(json!({"kwargs": {"lookback_minutes": 0}})),
                "`lookback_minutes` must be",
            ),
            (
                Method::POST,
                base.clone(),
                Some(json!({"kwargs": {"lookback_minutes": 5, "window_start": "2026-01-01T00:00:00Z"}})),
                "either `lookback_minutes` or",
            ),
            (Method::POST, base.clone(), Some(json!({"kwargs": {"window_start": "yesterday"}})), "RFC 3339"),
            (
                Method::POST,
                base.clone(),
                Some(json!({"kwargs": {"window_start": "2026-01-02T00:00:00Z", "window_end": "2026-01-01T00:00:00Z"}})),
                "Invalid kwargs",
            ),
            (Method::POST, base.clone(), Some(json!({"kwargs": {"configs": "bad group name"}})), "Invalid kwargs"),
            (Method::POST, format!("{base}/verbose"), Some(json!({})), "Invalid format"),
            (Method::POST, base.clone(), Some(json!([1])), "a JSON object is expected"),
        ];
        for (method, uri, body, message) in cases {
            let (status, headers, bytes) = send(&app, method.clone(), &uri, body.clone(), &[]).await;
            let v = json_of(&bytes);
            assert_func_error(status, &headers, &v, 400.43, "EClientBadRequest");
            assert!(v["message"].as_str().unwrap().contains(message), "{method} {uri} {body:?}: {v}");
        }
        // The details name what is wrong.
        let (_, _, bytes) = send(&app, Method::GET, &format!("{base}?{}", query(&[("kwargs", "{x")])), None, &[]).await;
        assert!(json_of(&bytes)["detail"]["error"].is_string());
        let (_, _, bytes) = send(&app, Method::POST, &base, Some(json!({"options": {"returnType": 1}})), &[]).await;
        assert_eq!(json_of(&bytes)["detail"]["allowed"], json!(["raw", "jsonDumps"]));
        let (_, _, bytes) = send(&app, Method::POST, &base, Some(json!({"kwargs": {"regions": "x"}})), &[]).await;
        assert_eq!(json_of(&bytes)["detail"]["kwargsField"], "regions");
        let (_, _, bytes) =
            send(&app, Method::POST, &base, Some(json!({"kwargs": {"configs": "bad group"}})), &[]).await;
        assert!(json_of(&bytes)["detail"]["fields"]["configs[0]"].is_array(), "validation names the kwarg");
        // A broken JSON body.
        let req = Request::post(&base).header("content-type", "application/json").body(Body::from("{")).unwrap();
        let (status, headers, bytes) = app.send(req).await;
        assert_func_error(status, &headers, &json_of(&bytes), 400.43, "EClientBadRequest");
        assert_eq!(run_count(&app, id).await, 0, "no bad request started a run");
    }
}

#[tokio::test]
async fn unknown_and_rotated_trigger_ids_are_404_41() {
    for backend in BACKENDS {
        let app = TestApp::new(backend).await;
        let insp = app.create_inspection(inspection_body("func-rotate", &["g"], "http://127.0.0.1:9")).await;
        let old = tid(&insp).to_string();
        assert_eq!(old.len(), 64);
        assert!(old.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{old}");

        for uri in [
            "/api/v1/al/0000000000000000000000000000000000000000000000000000000000000000".to_string(),
            format!("/api/v1/al/{}", &old[..63]),
            format!("/api/v1/bat/{}x", old),
            format!("/api/v1/al/{}/simplified", old.to_uppercase()),
        ] {
            let (status, headers, bytes) = send(&app, Method::POST, &uri, Some(json!({})), &[]).await;
            assert_func_error(status, &headers, &json_of(&bytes), 404.41, "EClientNotFound");
        }

        let id = insp["id"].as_str().unwrap();
        let (status, rotated) = app.post(&format!("/api/v1/inspections/{id}/trigger-id/rotate"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        let new = tid(&rotated).to_string();
        assert_ne!(new, old);
        // Shown once: the store keeps only its hash, so no later read has it.
        let (_, shown) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert!(shown.get("trigger_id").is_none(), "{shown}");
        let (_, listed) = app.get("/api/v1/inspections").await;
        assert!(!listed.to_string().contains(&new) && !listed.to_string().contains(&old), "{listed}");

        let (status, headers, bytes) =
            send(&app, Method::POST, &format!("/api/v1/bat/{old}"), Some(json!({"kwargs": {"dry_run": true}})), &[])
                .await;
        assert_func_error(status, &headers, &json_of(&bytes), 404.41, "EClientNotFound");
        let (status, _, bytes) =
            send(&app, Method::POST, &format!("/api/v1/bat/{new}"), Some(json!({"kwargs": {"dry_run": true}})), &[])
                .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        let run_id = json_of(&bytes)["data"]["id"].as_str().unwrap().to_string();
        wait_for_run(&app, &run_id).await;

        let (status, v) =
            app.post("/api/v1/inspections/00000000-0000-7000-8000-000000000000/trigger-id/rotate", json!({})).await;
        assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    }
}

#[tokio::test]
async fn a_disabled_inspection_is_403_21() {
    for backend in BACKENDS {
        let app = TestApp::new(backend).await;
        let insp = app.create_inspection(inspection_body("func-off", &["g"], "http://127.0.0.1:9")).await;
        let id = insp["id"].as_str().unwrap();
        app.patch(&format!("/api/v1/inspections/{id}"), json!({"enabled": false})).await;
        let t = tid(&insp);
        for (uri, reason) in [
            (format!("/api/v1/sync/{t}"), "EBizCondition.SyncAPIDisabled"),
            (format!("/api/v1/al/{t}/s"), "EBizCondition.SyncAPIDisabled"),
            (format!("/api/v1/async/{t}"), "EBizCondition.AsyncAPIDisabled"),
            (format!("/api/v1/bat/{t}"), "EBizCondition.AsyncAPIDisabled"),
        ] {
            // Checked before the kwargs are read, as Func does: these kwargs are bad.
            let (status, headers, bytes) =
                send(&app, Method::POST, &uri, Some(json!({"kwargs": {"no_such": 1}, "no_such": 1})), &[]).await;
            let v = json_of(&bytes);
            assert_func_error(status, &headers, &v, 403.21, reason);
            assert!(v["message"].as_str().unwrap().contains("disabled"), "{v}");
            assert_eq!(v["detail"]["inspection_id"], id);
        }
        assert_eq!(run_count(&app, id).await, 0);
    }
}

#[tokio::test]
async fn a_run_in_progress_is_409_25_naming_it_and_bat_answers_at_once() {
    for backend in BACKENDS {
        let fake =
            fake_with_invictus(FakeConfig { latency: Duration::from_millis(400), ..FakeConfig::default() }).await;
        let (app, insp) = setup(backend, &fake, "func-busy").await;
        let t = tid(&insp);

        // Async: answered before the run ends, boxed, with the run id as the task id.
        let q = query(&[("kwargs", r#"{"dry_run": false}"#)]);
        let (status, headers, bytes) =
            send(&app, Method::GET, &format!("/api/v1/bat/{t}?{q}"), None, &[("x-trace-id", "TRACE-BATCH-7")]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        let boxed = json_of(&bytes);
        assert_eq!((&boxed["ok"], &boxed["error"], &boxed["message"]), (&json!(true), &json!(200), &json!("")));
        assert_eq!(boxed["traceId"], "TRACE-BATCH-7");
        assert_eq!(headers["x-trace-id"], "TRACE-BATCH-7");
        let run_id = boxed["data"]["id"].as_str().unwrap().to_string();
        let (_, running) = app.get(&format!("/api/v1/runs/{run_id}")).await;
        assert!(matches!(running["status"].as_str(), Some("queued" | "running")), "{running}");

        // A second call while it runs: conflict, naming the run.
        for (method, uri) in [
            (Method::POST, format!("/api/v1/al/{t}")),
            (Method::GET, format!("/api/v1/al/{t}/s")),
            (Method::POST, format!("/api/v1/bat/{t}/normal")),
        ] {
            let (status, headers, bytes) = send(&app, method, &uri, None, &[]).await;
            let v = json_of(&bytes);
            assert_func_error(status, &headers, &v, 409.25, "EBizRequestConflict");
            assert_eq!(v["detail"]["run_id"], run_id.as_str());
            assert!(v["message"].as_str().unwrap().contains(&run_id));
        }

        let done = wait_for_run(&app, &run_id).await;
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["trigger"], "func");
        assert_eq!(done["trace_id"], "TRACE-BATCH-7");
        assert_eq!(done["error_records"], 300);
    }
}

#[tokio::test]
async fn a_failed_run_is_599_10_with_the_error() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("func-fail", &["no-such-group"], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let insp = app.create_inspection(body).await;
        let (status, headers, bytes) =
            send(&app, Method::POST, &format!("/api/v1/al/{}", tid(&insp)), Some(json!({})), &[]).await;
        let v = json_of(&bytes);
        assert_func_error(status, &headers, &v, 599.10, "EFuncFailed");
        assert_eq!(v["message"], "Func task failed");
        assert!(v["detail"]["exception"].as_str().unwrap().contains("1 of 1 log groups could not be read"), "{v}");
        assert!(v["detail"]["traceback"].as_str().unwrap().contains("ResourceNotFoundException"), "{v}");
        let (_, run) = app.get(&format!("/api/v1/runs/{}", v["detail"]["run_id"].as_str().unwrap())).await;
        assert_eq!(run["status"], "failed");
        assert_eq!(run["trigger"], "func");
    }
}

/// A partial run is a result, unless the caller asks otherwise with `fail_on_partial` (for
/// cron and CronJobs, which only see an HTTP status).
#[tokio::test]
async fn fail_on_partial_makes_a_partial_run_599_10() {
    let fake = fake_with_invictus(FakeConfig::default()).await;
    let app = TestApp::new(Backend::Sqlite).await;
    let mut body = inspection_body("func-partial", &[GROUP, "no-such-group"], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let insp = app.create_inspection(body).await;
    let uri = format!("/api/v1/al/{}", tid(&insp));

    let (status, _, bytes) = send(&app, Method::POST, &uri, Some(json!({"kwargs": {"dry_run": true}})), &[]).await;
    assert_eq!(status, StatusCode::OK, "without it, partial is a result");
    assert_eq!(json_of(&bytes)["status"], "partial");

    let kwargs = json!({"kwargs": {"dry_run": true, "fail_on_partial": true}});
    let (status, headers, bytes) = send(&app, Method::POST, &uri, Some(kwargs), &[]).await;
    let v = json_of(&bytes);
    assert_func_error(status, &headers, &v, 599.10, "EFuncFailed");
    assert!(v["detail"]["exception"].as_str().unwrap().contains("1 of 2 log groups could not be read"), "{v}");
    assert!(v["detail"]["traceback"].as_str().unwrap().contains("no-such-group"), "{v}");
    let (_, run) = app.get(&format!("/api/v1/runs/{}", v["detail"]["run_id"].as_str().unwrap())).await;
    assert_eq!(run["status"], "partial", "the run itself is recorded as it was");

    // As cron sends it: a simplified GET, the flag as text.
    let uri = format!("/api/v1/al/{}/s?{}", tid(&insp), query(&[("fail_on_partial", "true"), ("dry_run", "1")]));
    let (status, _, _) = send(&app, Method::GET, &uri, None, &[]).await;
    assert_eq!(status.as_u16(), 599);
    let uri = format!("/api/v1/al/{}/s?fail_on_partial=maybe", tid(&insp));
    let (status, headers, bytes) = send(&app, Method::GET, &uri, None, &[]).await;
    assert_func_error(status, &headers, &json_of(&bytes), 400.43, "EClientBadRequest");
}

#[tokio::test]
async fn past_the_timeout_the_answer_is_599_20_and_the_run_finishes() {
    for backend in BACKENDS {
        // Each call to the fake takes 1.5 s; the inspection allows 1 s.
        let fake =
            fake_with_invictus(FakeConfig { latency: Duration::from_millis(1500), ..FakeConfig::default() }).await;
        let (app, insp) = setup(backend, &fake, "func-slow").await;
        let id = insp["id"].as_str().unwrap();
        let (status, patched) = app.patch(&format!("/api/v1/inspections/{id}"), json!({"timeout_seconds": 1})).await;
        assert_eq!((status, &patched["timeout_seconds"]), (StatusCode::OK, &json!(1)));

        let started = std::time::Instant::now();
        let (status, headers, bytes) = send(
            &app,
            Method::POST,
            &format!("/api/v1/al/{}", tid(&insp)),
            Some(json!({"kwargs": {}})),
            &[("x-trace-id", "TRACE-SLOW")],
        )
        .await;
        let waited = started.elapsed();
        let v = json_of(&bytes);
        assert_func_error(status, &headers, &v, 599.20, "EFuncTimeout");
        assert_eq!(v["message"], "Func task timeout");
        assert_eq!(v["detail"]["timeout"], 1);
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(3), "{waited:?}");

        // The run goes on and is recorded.
        let run_id = v["detail"]["run_id"].as_str().unwrap();
        let done = wait_for_run(&app, run_id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["error_records"], 300);
        assert_eq!(done["trace_id"], "TRACE-SLOW");
        let (_, read) = app.get(&format!("/api/v1/inspections/{id}")).await;
        assert_eq!(read["last_run"]["id"], run_id);

        // options.timeout overrides the inspection's for one call.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _, bytes) = send(
            &app,
            Method::POST,
            &format!("/api/v1/al/{}", tid(&insp)),
            Some(json!({"kwargs": {"dry_run": true}, "options": {"timeout": "30"}})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(json_of(&bytes)["dry_run"], true);
    }
}

#[tokio::test]
async fn method_and_route_errors_keep_a_json_body() {
    let app = TestApp::new(Backend::Sqlite).await;
    let insp = app.create_inspection(inspection_body("func-routes", &["g"], "http://127.0.0.1:9")).await;
    // Func's router answers a wrong method as a wrong path: 404.41 "No such router".
    let (status, headers, bytes) = send(&app, Method::DELETE, &format!("/api/v1/al/{}", tid(&insp)), None, &[]).await;
    let v = json_of(&bytes);
    assert_func_error(status, &headers, &v, 404.41, "EClientNotFound");
    assert!(v["message"].as_str().unwrap().starts_with("No such router"), "{v}");
    // A form body is read like a query.
    let req = Request::post(format!("/api/v1/al/{}/s", tid(&insp)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("dry_run=maybe"))
        .unwrap();
    let (status, headers, bytes) = app.send(req).await;
    let v = json_of(&bytes);
    assert_func_error(status, &headers, &v, 400.43, "EClientBadRequest");
    assert_eq!(v["detail"]["kwargsField"], "dry_run");
}

#[tokio::test]
async fn sync_and_async_urls_as_current_func_serves_them() {
    for backend in BACKENDS {
        let fake = fake_with_invictus(FakeConfig::default()).await;
        let (app, insp) = setup(backend, &fake, "func-current").await;
        let t = tid(&insp);
        // The Sync API: normal, in a format, and with Func's `/{format}/*` tail.
        let (status, headers, bytes) = send(
            &app,
            Method::POST,
            &format!("/api/v1/sync/{t}"),
            Some(json!({"kwargs": {"dry_run": true}, "options": {"unbox": false}})),
            &[("x-client-time", "2026-03-01T08:00:00.000Z")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        let boxed = json_of(&bytes);
        assert_request_info(&headers, &boxed);
        assert_eq!(boxed["clientTime"], "2026-03-01T08:00:00.000Z");
        assert_eq!(headers["x-client-time"], "2026-03-01T08:00:00.000Z");
        assert_eq!(boxed["data"]["result"]["error_records"], 300);
        for uri in
            [format!("/api/v1/sync/{t}/s?dry_run=true"), format!("/api/v1/sync/{t}/simplified/any/tail?dry_run=1")]
        {
            let (status, headers, bytes) = send(&app, Method::GET, &uri, None, &[]).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&bytes));
            assert!(headers.contains_key("x-request-time") && headers.contains_key("x-response-time"));
            assert_eq!(json_of(&bytes)["dry_run"], true, "{uri}");
        }
        // The Async API answers at once with the run id, in every form.
        for (method, uri) in
            [(Method::POST, format!("/api/v1/async/{t}")), (Method::GET, format!("/api/v1/async/{t}/normal/x"))]
        {
            let (status, headers, bytes) = send(&app, method, &uri, None, &[]).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&bytes));
            let boxed = json_of(&bytes);
            assert_request_info(&headers, &boxed);
            assert_eq!(boxed["clientTime"], Value::Null);
            let run = wait_for_run(&app, boxed["data"]["id"].as_str().unwrap()).await;
            assert_eq!(run["trigger"], "func");
        }
    }
}

#[tokio::test]
async fn unknown_paths_under_the_func_prefixes_are_funcs_404_41() {
    let app = TestApp::new(Backend::Sqlite).await;
    let insp = app.create_inspection(inspection_body("func-404", &["g"], "http://127.0.0.1:9")).await;
    let t = tid(&insp);
    for (method, uri) in [
        (Method::GET, "/api/v1/sync".to_string()),
        (Method::POST, "/api/v1/async/".to_string()),
        (Method::PUT, format!("/api/v1/sync/{t}")),
        (Method::DELETE, format!("/api/v1/async/{t}/s")),
        (Method::PATCH, format!("/api/v1/bat/{t}/s/tail")),
    ] {
        let (status, headers, bytes) = send(&app, method.clone(), &uri, None, &[]).await;
        let v = json_of(&bytes);
        assert_func_error(status, &headers, &v, 404.41, "EClientNotFound");
        assert!(v["message"].as_str().unwrap().starts_with("No such router"), "{method} {uri}: {v}");
        assert_eq!(v["detail"]["method"], method.as_str());
        assert!(!bytes.windows(t.len()).any(|w| w == t.as_bytes()), "the trigger id is never echoed: {v}");
    }
    // Elsewhere the API's own shape stays.
    let (status, v) = app.get("/api/v1/synchronous").await;
    assert_eq!((status, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn queue_and_expires_are_checked_as_func_checks_them_then_ignored() {
    for backend in BACKENDS {
        let fake = fake_with_invictus(FakeConfig::default()).await;
        let (app, insp) = setup(backend, &fake, "func-options").await;
        let uri = format!("/api/v1/sync/{}", tid(&insp));
        let ok = json!({"kwargs": {"dry_run": true}, "options": {"queue": 3, "expires": "60", "timeout": 120}});
        let (status, _, bytes) = send(&app, Method::POST, &uri, Some(ok), &[]).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        for (options, message) in [
            (json!({"queue": 10}), "Invalid options, queue should be an integer between 1 and 9"),
            (json!({"queue": 0}), "Invalid options, queue should be an integer between 1 and 9"),
            (json!({"expires": 0}), "Invalid options, expires is too small"),
            (json!({"expires": 86401}), "Invalid options, expires is too large"),
        ] {
            let q = query(&[("options", &options.to_string())]);
            let (status, headers, bytes) = send(&app, Method::GET, &format!("{uri}?{q}"), None, &[]).await;
            let v = json_of(&bytes);
            assert_func_error(status, &headers, &v, 400.43, "EClientBadRequest");
            assert_eq!(v["message"], message, "{v}");
        }
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_are_read_as_func_reads_them_or_refused_clearly() {
    let app = TestApp::new(Backend::Sqlite).await;
    let insp = app.create_inspection(inspection_body("func-bodies", &["g"], "http://127.0.0.1:9")).await;
    let id = insp["id"].as_str().unwrap();
    let t = tid(&insp);
    let post = |uri: String, content_type: &str, body: &'static [u8]| {
        Request::post(uri).header("content-type", content_type).body(Body::from(body)).unwrap()
    };
    // Normal format: a body Func reads as `{"text"}` or `{"base64"}` holds no kwargs.
    for ct in ["text/plain", "application/octet-stream", "application/xml"] {
        let (status, headers, bytes) = app.send(post(format!("/api/v1/sync/{t}"), ct, b"configs=a")).await;
        let v = json_of(&bytes);
        assert_func_error(status, &headers, &v, 400.43, "EClientBadRequest");
        assert!(v["message"].as_str().unwrap().contains("it is not JSON"), "{ct}: {v}");
    }
    // Simplified format: the body is the kwargs, as Func reads it — which names no argument
    // of this function.
    for (ct, field) in [("text/plain", "text"), ("application/octet-stream", "base64")] {
        let (status, headers, bytes) = app.send(post(format!("/api/v1/sync/{t}/s"), ct, b"trail-a")).await;
        let v = json_of(&bytes);
        assert_func_error(status, &headers, &v, 400.43, "EClientBadRequest");
        assert_eq!(v["detail"]["kwargsField"], field, "{v}");
    }
    // Broken JSON: Func's own words.
    let (status, headers, bytes) =
        app.send(post(format!("/api/v1/async/{t}"), "application/json", b"{\"kwargs\":")).await;
    let v = json_of(&bytes);
    assert_func_error(status, &headers, &v, 400.43, "EClientBadRequest");
    assert_eq!(v["message"], "Invalid request body");
    assert_eq!(run_count(&app, id).await, 0);
}

#[tokio::test]
async fn a_call_from_a_crontab_config_says_so_in_its_events() {
    for backend in BACKENDS {
        let fake = fake_with_invictus(FakeConfig::default()).await;
        let (app, insp) = setup(backend, &fake, "func-crontab").await;
        let t = tid(&insp);
        // What the README's wrapper sends: Func's `_DFF_CRON_JOB_EXEC_MODE`.
        let (status, _, bytes) = send(
            &app,
            Method::POST,
            &format!("/api/v1/sync/{t}"),
            Some(json!({})),
            &[("x-crontab-exec-mode", "cronJob")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        let run = json_of(&bytes);
        assert_eq!(run["request"]["exec_mode"], "crontab");
        let (_, events) = app.get(&format!("/api/v1/inspections/{}/events", insp["id"].as_str().unwrap())).await;
        let event_id = events["items"][0]["id"].as_str().expect("an event");
        let (_, event) = app.get(&format!("/api/v1/events/{event_id}")).await;
        assert_eq!(event["event"]["exec_mode"], "crontab");
        // Without the header (or with `manual`, as a crontab config run by hand) it is manual.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _, bytes) = send(
            &app,
            Method::POST,
            &format!("/api/v1/al/{t}"),
            Some(json!({"kwargs": {"lookback_minutes": 70}})),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(json_of(&bytes)["request"].get("exec_mode"), None);
        let (status, headers, bytes) =
            send(&app, Method::POST, &format!("/api/v1/sync/{t}"), None, &[("x-crontab-exec-mode", "hourly")]).await;
        assert_func_error(status, &headers, &json_of(&bytes), 400.43, "EClientBadRequest");
    }
}
