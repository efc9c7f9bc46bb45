//! The Guance parts on their own: the client against the fake Guance, the line-protocol
//! encoder against the fake's strict parser, and a whole account event built from real
//! CloudTrail records, written, parsed back and read.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

use cloudtrail_inspector::engine::{Clusterer, ClustererConfig};
use cloudtrail_inspector::guance::alerting::{Action, DimensionState};
use cloudtrail_inspector::guance::client::{
    CheckerSpec, ClientOptions, GuanceClient, GuanceError, ModifyParts, RefFuncInfo,
};
use cloudtrail_inspector::guance::event::{self, AccountRun, EventCluster, EventContext, EventStatus, ExecMode};
use cloudtrail_inspector::guance::lineproto::{FieldValue, Point, encode_lines};
use cloudtrail_inspector::guance::{GuanceNode, GuanceSettings};
use cloudtrail_inspector::model::Secret;
use cloudtrail_inspector::model::alerting::{AlertPolicy, SeverityRules};
use cloudtrail_inspector::model::cluster::AccessKeyView;

use crate::common::fake_guance::lineproto::{self as strict, ParsedPoint};
use crate::common::fake_guance::{API_KEY, API_KEY_ID, FakeGuance, Fault, Side, WORKSPACE_TOKEN};

fn settings(fake: &FakeGuance, token: Option<&str>) -> GuanceSettings {
    GuanceSettings {
        node: GuanceNode::Private,
        openapi_url: Some(fake.url()),
        openway_url: Some(fake.url()),
        api_key_id: Secret::new(API_KEY_ID),
        api_key: Secret::new(API_KEY),
        workspace_token: token.map(Secret::new),
    }
}

fn client(fake: &FakeGuance) -> GuanceClient {
    client_with(fake, None, Duration::from_secs(5))
}

fn client_with(fake: &FakeGuance, token: Option<&str>, timeout: Duration) -> GuanceClient {
    let options = ClientOptions { connect_timeout: Duration::from_secs(2), timeout };
    GuanceClient::new(&settings(fake, token), options).expect("valid settings")
}

/// Asserts no credential appears in an error's Display or Debug.
fn assert_no_secrets(e: &GuanceError) {
    let text = format!("{e} {e:?}");
    for s in [API_KEY_ID, API_KEY, WORKSPACE_TOKEN] {
        assert!(!text.contains(s), "{s} leaked into {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Line protocol: encoder ↔ strict parser
// ---------------------------------------------------------------------------------------------

#[test]
fn strict_parser_table() {
    let ok: Vec<(&str, usize)> = vec![
        ("m f=1i 1", 1),
        ("m,t=v f=\"x\" 1\n", 1),
        ("m f=1i 1\n\n# comment\nm f=2i 2", 2),
        ("m f=\"two\nlines\",g=t 1\nm f=F 2", 2),
        ("m f=-1.5e3,g=3,h=7u,i=TRUE 1", 1),
        (r"m\ x\,y,t\=k=v\ w f\,=1i -7", 1),
        (r"m,t=a\b f=1i 1", 1),
        (r#"m f="\"\\" 1"#, 1),
    ];
    for (body, n) in ok {
        let points = strict::parse(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(points.len(), n, "{body:?}");
    }
    let bad = [
        ("m f=1 ", "bad timestamp"),
        ("m f=1i", "expected one space before the timestamp"),
        ("m f=1i 1 ", "after the timestamp"),
        ("m f=1i 1\r\n", "after the timestamp"),
        ("m  f=1i 1", "empty field key"),
        ("m,t= f=1i 1", "empty tag value"),
        ("m,=v f=1i 1", "empty tag key"),
        ("m,t=a=b f=1i 1", "unescaped '='"),
        ("m,t=v,t=w f=1i 1", "given twice"),
        ("m f=1i,f=2i 1", "given twice"),
        ("m,f=v f=1i 1", "both a tag and a field"),
        ("m f=\"open 1", "unterminated string"),
        (r#"m f="a\nb" 1"#, "invalid escape"),
        ("m f=abc 1", "bad field value"),
        ("m f=1.5i 1", "bad field value"),
        ("m f=+1i 1", "bad field value"),
        ("m f=NaN 1", "bad field value"),
        ("m f=inf 1", "bad field value"),
        ("m f= 1", "bad field value"),
        ("m,t=a\nb f=1i 1", "control character"),
        ("m,t=ends\\ f=1i 1", "unescaped '='"),
        ("m\\", "backslash at the end"),
        ("m 1", "expected '='"),
        (" m f=1i 1", "empty measurement"),
    ];
    for (body, want) in bad {
        let err = strict::parse(body).expect_err(body);
        assert!(err.message.contains(want), "{body:?}: got {err}, want {want:?}");
    }
    let err = strict::parse("m f=1i 1\nm f=\"a\nb\" 2\nm g=x 3").unwrap_err();
    assert_eq!((err.line, err.column), (4, 5), "positions count lines inside strings: {err}");
}

/// Characters line protocol treats specially, or that are easy to get wrong.
const HOSTILE: &[&str] = &[" ", ",", "=", "\"", "\\", "\n", "\r", "\t", "#", "\u{202e}", "\0", "\u{7f}"];
/// Ordinary characters, some multi-byte.
const PLAIN: &[&str] = &["a", "Z", "0", "é", "日本", "🚀", "`", "|", ".", "{", "}", "'", "i", "t", "-", "_"];

/// `min..=max` characters, one in five hostile.
fn hostile(rng: &mut StdRng, min: usize, max: usize) -> String {
    let n = rng.random_range(min..=max);
    (0..n)
        .map(|_| {
            if rng.random_range(0..5) == 0 {
                HOSTILE[rng.random_range(0..HOSTILE.len())]
            } else {
                PLAIN[rng.random_range(0..PLAIN.len())]
            }
        })
        .collect()
}

/// Whether a name or tag value can be written exactly, by the rules the encoder documents.
fn name_ok(s: &str, specials: &[char], max: usize, quote_ok: bool) -> bool {
    let chars: Vec<char> = s.chars().collect();
    !s.is_empty()
        && s.len() <= max
        && !chars.iter().any(|c| c.is_control())
        && (quote_ok || !s.contains('"'))
        && chars.iter().enumerate().all(|(i, c)| *c != '\\' || chars.get(i + 1).is_some_and(|n| !specials.contains(n)))
}

fn expected_encodable(m: &str, tags: &BTreeMap<String, String>, fields: &[(String, FieldValue)]) -> bool {
    let names = [',', '=', ' '];
    let mut keys: Vec<&str> = tags.keys().map(String::as_str).collect();
    keys.extend(fields.iter().map(|(k, _)| k.as_str()));
    let mut dedup = keys.clone();
    dedup.sort();
    dedup.dedup();
    !m.starts_with('#')
        && name_ok(m, &[',', ' '], usize::MAX, false)
        && tags.iter().all(|(k, v)| name_ok(k, &names, 256, false) && name_ok(v, &names, 1024, true))
        && !fields.is_empty()
        && fields
            .iter()
            .all(|(k, v)| name_ok(k, &names, 256, false) && !matches!(v, FieldValue::Float(x) if !x.is_finite()))
        && dedup.len() == keys.len()
}

fn same(point: &Point, parsed: &ParsedPoint) -> bool {
    let fields: BTreeMap<String, strict::Value> = point
        .fields()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                FieldValue::Str(s) => strict::Value::Str(s.clone()),
                FieldValue::Int(n) => strict::Value::Int(*n),
                FieldValue::Float(x) => strict::Value::Float(*x),
                FieldValue::Bool(b) => strict::Value::Bool(*b),
            };
            (k.clone(), v)
        })
        .collect();
    parsed.measurement == point.measurement()
        && &parsed.tags == point.tags()
        && parsed.fields == fields
        && parsed.field_order == point.fields().iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
        && parsed.timestamp == point.timestamp_ns()
}

/// For thousands of random points made of hostile characters: the encoder accepts exactly the
/// points its documented rules allow, and the strict parser reads every accepted one back
/// unchanged, alone and as part of a multi-line body.
#[test]
fn encoder_round_trips_through_the_strict_parser() {
    let mut rng = StdRng::seed_from_u64(0x6775_616e_6365);
    let (mut accepted, mut rejected) = (0, 0);
    let mut batch = Vec::new();
    for _ in 0..20_000 {
        // Names are empty one time in twenty.
        let name_min = |rng: &mut StdRng| usize::from(rng.random_range(0..20) != 0);
        let min = name_min(&mut rng);
        let m = hostile(&mut rng, min, 6);
        let mut p = Point::new(m.clone(), rng.random_range(i64::MIN..i64::MAX));
        let mut tags = BTreeMap::new();
        for _ in 0..rng.random_range(0..3) {
            let (kmin, vmin) = (name_min(&mut rng), name_min(&mut rng));
            let (k, v) = (hostile(&mut rng, kmin, 4), hostile(&mut rng, vmin, 6));
            tags.insert(k.clone(), v.clone());
            p = p.tag(k, v);
        }
        let mut fields = Vec::new();
        let field_count = if rng.random_range(0..20) == 0 { 0 } else { rng.random_range(1..4) };
        for _ in 0..field_count {
            let kmin = name_min(&mut rng);
            let k = hostile(&mut rng, kmin, 4);
            let v = match rng.random_range(0..5) {
                0 => FieldValue::Str(hostile(&mut rng, 0, 12)),
                1 => FieldValue::Int(rng.random()),
                2 => FieldValue::Float(f64::from_bits(rng.random())),
                3 => FieldValue::Float(rng.random_range(-1e6..1e6)),
                _ => FieldValue::Bool(rng.random()),
            };
            fields.push((k.clone(), v.clone()));
            p = p.field(k, v);
        }
        let want = expected_encodable(&m, &tags, &fields);
        match p.encode() {
            Ok(line) => {
                assert!(want, "encoded something the rules forbid: {p:?} as {line:?}");
                let parsed = strict::parse(&line).unwrap_or_else(|e| panic!("{line:?} does not parse: {e}"));
                assert_eq!(parsed.len(), 1, "{line:?}");
                assert!(same(&p, &parsed[0]), "{p:?}\n{line:?}\n{:?}", parsed[0]);
                accepted += 1;
                if batch.len() < 200 {
                    batch.push(p);
                }
            }
            Err(e) => {
                assert!(!want, "rejected an encodable point ({e}): {p:?}");
                rejected += 1;
            }
        }
    }
    assert!(accepted > 2_000 && rejected > 2_000, "accepted {accepted}, rejected {rejected}");
    let body = encode_lines(&batch).unwrap();
    let parsed = strict::parse(&body).unwrap();
    assert_eq!(parsed.len(), batch.len());
    for (p, q) in batch.iter().zip(&parsed) {
        assert!(same(p, q), "{p:?} vs {q:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Client ↔ fake Guance
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_workspace_token_is_fetched_once() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    assert_eq!(c.workspace_token().await.unwrap().expose(), WORKSPACE_TOKEN);
    assert_eq!(c.workspace_token().await.unwrap().expose(), WORKSPACE_TOKEN);
    assert_eq!(fake.count("/api/v1/workspace/get"), 1);
    assert!(!format!("{c:?}").contains(WORKSPACE_TOKEN));
}

#[tokio::test]
async fn a_failed_token_fetch_is_not_cached() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    fake.fail_next(Side::OpenApi, 1, Fault::Status(502));
    let e = c.workspace_token().await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(c.workspace_token().await.unwrap().expose(), WORKSPACE_TOKEN);
    assert_eq!(fake.count("/api/v1/workspace/get"), 2);
}

#[tokio::test]
async fn a_configured_token_needs_no_openapi_call() {
    let fake = FakeGuance::start().await;
    let c = client_with(&fake, Some("tkn_configured"), Duration::from_secs(5));
    assert_eq!(c.workspace_token().await.unwrap().expose(), "tkn_configured");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_wrong_api_key_is_permanent_and_names_guances_error() {
    let fake = FakeGuance::start().await;
    let mut s = settings(&fake, None);
    s.api_key_id = Secret::new("wsak_wrong_key_id_value");
    let c = GuanceClient::new(&s, ClientOptions::default()).unwrap();
    let e = c.workspace_token().await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(e.status(), Some(401));
    match &e {
        GuanceError::Api { error_code, message, trace_id, .. } => {
            assert_eq!(error_code, "ft.InvalidApiKey");
            assert!(message.contains("DF-API-KEY"), "{message}");
            assert_eq!(trace_id.as_deref(), Some("TRACE-FAKE"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{e} {e:?}").contains("wsak_wrong_key_id_value"));
}

#[tokio::test]
async fn the_api_key_pair_can_be_checked() {
    let fake = FakeGuance::start().await;
    assert!(client(&fake).check_api_key().await.unwrap());
    let mut s = settings(&fake, None);
    s.api_key = Secret::new("not-the-key");
    assert!(!GuanceClient::new(&s, ClientOptions::default()).unwrap().check_api_key().await.unwrap());
}

fn spec(ref_key: &str) -> CheckerSpec {
    CheckerSpec {
        ref_key: ref_key.to_owned(),
        title: "AWS CloudTrail anomalous event inspection (prod)".into(),
        ref_func_info: RefFuncInfo {
            func_id: "cloudtrail_inspector.inspect".into(),
            description: "Reports new kinds of CloudTrail errors".into(),
            definition: "inspect(configs)".into(),
            category: "bot_obs".into(),
            args: vec!["configs".into()],
            kwargs: json!({"configs": "aws-cloudtrail-logs\nsecond-group"}),
        },
        alert_policy_uuids: vec!["altpl_one".into()],
        is_disabled: false,
    }
}

#[tokio::test]
async fn the_checker_registry_lifecycle() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    assert_eq!(c.get_checker("cti-1").await.unwrap(), None);

    let created = c.create_checker(&spec("cti-1")).await.unwrap();
    assert!(created.uuid.starts_with("rul_"), "{created:?}");
    assert_eq!(created.ref_key, "cti-1");
    assert_eq!(created.alert_policy_infos[0].uuid, "altpl_one");
    let sent = fake.requests().into_iter().find(|r| r.path == "/api/v1/self_built_checker/create").unwrap();
    assert_eq!(
        sent.body.unwrap(),
        json!({
            "refKey": "cti-1",
            "title": "AWS CloudTrail anomalous event inspection (prod)",
            "refFuncInfo": {
                "funcId": "cloudtrail_inspector.inspect",
                "description": "Reports new kinds of CloudTrail errors",
                "definition": "inspect(configs)",
                "category": "bot_obs",
                "args": ["configs"],
                "kwargs": {"configs": "aws-cloudtrail-logs\nsecond-group"}
            },
            "alertPolicyUUIDs": ["altpl_one"],
            "isDisabled": false
        })
    );

    let e = c.create_checker(&spec("cti-1")).await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(
        matches!(&e, GuanceError::Api { status: 400, error_code, .. } if error_code == "Checker.RefKeyExists"),
        "{e:?}"
    );

    let mut changed = spec("cti-1");
    changed.title = "renamed".into();
    changed.alert_policy_uuids = vec!["altpl_two".into(), "altpl_three".into()];
    c.modify_checker(&changed).await.unwrap();
    let got = c.get_checker("cti-1").await.unwrap().unwrap();
    assert_eq!(got.raw["jsonScript"]["title"], "renamed");
    assert_eq!(
        got.alert_policy_infos.iter().map(|p| p.uuid.as_str()).collect::<Vec<_>>(),
        ["altpl_two", "altpl_three"]
    );

    assert_eq!(got.configs().as_deref(), Some("aws-cloudtrail-logs\nsecond-group"));
    assert_eq!(got.alert_policy_uuids(), Some(vec!["altpl_two".to_string(), "altpl_three".to_string()]));

    c.disable_checker("cti-1").await.unwrap();
    assert_eq!(c.get_checker("cti-1").await.unwrap().unwrap().is_disabled(), Some(true));
    c.enable_checker("cti-1").await.unwrap();
    assert_eq!(c.get_checker("cti-1").await.unwrap().unwrap().is_disabled(), Some(false));

    // Only the parts asked for are sent, and only they change.
    let mut partial = changed.clone();
    partial.title = "only the title".into();
    partial.alert_policy_uuids = vec!["altpl_ignored".into()];
    let title_only = ModifyParts { title: true, func_info: false, alert_policies: false };
    c.modify_checker_parts(&partial, title_only).await.unwrap();
    let sent = fake.requests().into_iter().rfind(|r| r.path == "/api/v1/self_built_checker/modify").unwrap();
    assert_eq!(sent.body.unwrap(), json!({"refKey": "cti-1", "title": "only the title"}));
    let got = c.get_checker("cti-1").await.unwrap().unwrap();
    assert_eq!(got.alert_policy_uuids(), Some(vec!["altpl_two".to_string(), "altpl_three".to_string()]));

    let mut disabled = changed.clone();
    disabled.is_disabled = true;
    let rec = c.upsert_checker(&disabled).await.unwrap();
    assert_eq!(rec.is_disabled(), Some(true));
    let rec = c.upsert_checker(&spec("cti-2")).await.unwrap();
    assert_eq!(rec.ref_key, "cti-2");
    assert_eq!(fake.checkers().len(), 2);

    c.delete_checker("cti-1").await.unwrap();
    c.delete_checker("cti-1").await.unwrap();
    assert_eq!(c.get_checker("cti-1").await.unwrap(), None);
    let e = c.enable_checker("cti-1").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(!e.is_retryable());
}

fn line(event_id: &str, message: &str) -> String {
    Point::new("monitor", 1_700_000_000_000_000_000)
        .tag("account_id", "123456789012")
        .field("df_event_id", event_id)
        .field("df_status", "warning")
        .field("df_message", message)
        .encode()
        .unwrap()
}

#[tokio::test]
async fn events_are_written_with_the_workspace_token() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    let token = c.workspace_token().await.unwrap();
    let body = [line("event-a", "one\ntwo"), line("event-b", "\"quoted\" \\ back")].join("\n");
    c.write_keyevents(&token, &body).await.unwrap();
    let events = fake.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].str("df_message"), Some("one\ntwo"));
    assert_eq!(events[1].str("df_message"), Some("\"quoted\" \\ back"));
    assert_eq!(events[1].tags["account_id"], "123456789012");
    let write = fake.requests().into_iter().find(|r| r.path == "/v1/write/keyevent").unwrap();
    assert_eq!(write.query, format!("token={WORKSPACE_TOKEN}"));
}

#[tokio::test]
async fn server_errors_are_retryable_until_they_stop() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    let token = Secret::new(WORKSPACE_TOKEN);
    fake.fail_next(Side::OpenWay, 3, Fault::Status(503));
    for _ in 0..3 {
        let e = c.write_keyevents(&token, &line("event-a", "m")).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert_eq!(e.status(), Some(503));
        assert_no_secrets(&e);
    }
    c.write_keyevents(&token, &line("event-a", "m")).await.unwrap();
    assert_eq!(fake.events().len(), 1);
    fake.fail_next(Side::OpenWay, 1, Fault::Status(429));
    assert!(c.write_keyevents(&token, &line("event-b", "m")).await.unwrap_err().is_retryable());
}

#[tokio::test]
async fn guance_down_for_a_while_then_back() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    let token = Secret::new(WORKSPACE_TOKEN);
    fake.down_for(Duration::from_millis(400)).await;
    let e = c.write_keyevents(&token, &line("event-a", "m")).await.unwrap_err();
    assert!(matches!(e, GuanceError::Connect { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_no_secrets(&e);
    let e = c.get_checker("x").await.unwrap_err();
    assert!(matches!(e, GuanceError::Connect { .. }), "{e:?}");
    fake.wait_up().await;
    c.write_keyevents(&token, &line("event-a", "m")).await.unwrap();
    assert_eq!(fake.events().len(), 1);
}

#[tokio::test]
async fn a_bad_token_is_permanent_and_never_shown() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    let token = c.workspace_token().await.unwrap();
    fake.set_token("tkn_rotated_elsewhere");
    let e = c.write_keyevents(&token, &line("event-a", "m")).await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(e.status(), Some(401));
    // The fake echoes the token in its message; the client must not pass it on.
    assert!(e.to_string().contains("token not found: ***"), "{e}");
    assert_no_secrets(&e);
    assert!(fake.events().is_empty());
}

#[tokio::test]
async fn slow_answers_time_out_and_can_be_retried() {
    let fake = FakeGuance::start().await;
    let c = client_with(&fake, Some(WORKSPACE_TOKEN), Duration::from_millis(200));
    fake.fail_next(Side::OpenWay, 1, Fault::Hang(Duration::from_millis(600)));
    let e = c.write_keyevents(&Secret::new(WORKSPACE_TOKEN), &line("event-a", "m")).await.unwrap_err();
    assert!(matches!(e, GuanceError::Timeout { .. }), "{e:?}");
    assert!(e.is_retryable());
    fake.set_latency(Duration::from_millis(500));
    assert!(matches!(c.get_checker("x").await.unwrap_err(), GuanceError::Timeout { .. }));
    fake.set_latency(Duration::ZERO);
    assert_eq!(c.get_checker("x").await.unwrap(), None);
}

#[tokio::test]
async fn a_malformed_body_is_refused_whole() {
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    let body = format!("{}\nmonitor df_status=warning 1", line("event-a", "fine"));
    let e = c.write_keyevents(&Secret::new(WORKSPACE_TOKEN), &body).await.unwrap_err();
    assert!(!e.is_retryable());
    match &e {
        GuanceError::Api { status: 400, error_code, message, .. } => {
            assert_eq!(error_code, "datakit.invalidLinePoint");
            assert!(message.contains("line 2") && message.contains("bad field value"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(fake.events().is_empty(), "nothing of a bad body is kept");
}

// ---------------------------------------------------------------------------------------------
// A whole account event from real records
// ---------------------------------------------------------------------------------------------

fn invictus_run() -> (Vec<EventCluster>, Vec<AccessKeyView>, DateTime<Utc>, DateTime<Utc>) {
    let records = crate::common::data::invictus();
    let mut c = Clusterer::new(ClustererConfig { track_keys: true, ..ClustererConfig::default() });
    for r in &records {
        c.ingest(&serde_json::to_vec(r).unwrap());
    }
    let analysis = c.finish();
    let clusters: Vec<EventCluster> =
        analysis.clusters.iter().map(|cl| EventCluster::from_cluster(cl, Some(Uuid::now_v7()))).collect();
    let keys: Vec<AccessKeyView> = analysis
        .keys
        .iter()
        .map(|k| AccessKeyView {
            access_key_id: k.access_key_id.clone(),
            principal_arn: k.principal_arn.clone(),
            account_id: k.account_id.clone(),
            first_seen: k.first_seen,
            last_seen: k.last_seen,
            last_event_name: k.last_event_name.clone(),
            last_source_ip: k.last_source_ip.clone(),
            total_events: k.count as i64,
            active_in_window: true,
        })
        .collect();
    let times: Vec<DateTime<Utc>> = records.iter().filter_map(crate::common::data::event_time).collect();
    (clusters, keys, *times.iter().min().unwrap(), *times.iter().max().unwrap())
}

fn context(start: DateTime<Utc>, end: DateTime<Utc>) -> EventContext {
    EventContext {
        inspection_id: Uuid::from_u128(0x1234),
        inspection_name: "invictus".into(),
        run_id: Uuid::from_u128(0x5678),
        ref_key: "cloudtrail-inspector-invictus".into(),
        checker_name: "AWS CloudTrail anomalous event inspection".into(),
        checker_id: None,
        func_id: "cloudtrail_inspector.inspect".into(),
        region: "us-east-1".into(),
        log_groups: vec!["aws-cloudtrail-logs-123837392027".into()],
        window_start: start,
        window_end: end,
        exec_mode: ExecMode::Manual,
        alert_policy_ids: vec!["altpl_security".into()],
        public_url: "http://127.0.0.1:8080".into(),
        share: None,
        severity_rules: SeverityRules::default(),
    }
}

#[tokio::test]
async fn an_account_event_from_real_records_is_written_and_reads_back() {
    let (clusters, keys, start, end) = invictus_run();
    // One per (code, source, API): the three user names of DeleteLoginProfile are masked.
    assert_eq!(clusters.len(), 44);
    let accounts: Vec<&str> = {
        let mut a: Vec<&str> = clusters.iter().map(|c| c.identity.account_id.as_str()).collect();
        a.sort();
        a.dedup();
        a
    };
    assert_eq!(accounts, ["123837392027"]);
    let matched: BTreeMap<&str, usize> =
        clusters.iter().flat_map(|c| c.rules.iter()).fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.as_str()).or_default() += 1;
            m
        });
    assert!(matched.get("CloudWatch.2").copied().unwrap_or(0) >= 2, "{matched:?}");

    let account = AccountRun {
        account_id: "123837392027".into(),
        new_error_records: clusters.iter().map(|c| c.count).sum(),
        error_records: clusters.iter().map(|c| c.count).sum(),
        new_clusters: clusters.clone(),
        access_keys: keys.clone(),
    };
    let ctx = context(start, end);
    let now = end + chrono::Duration::minutes(10);
    let out = event::evaluate(&ctx, &account, &DimensionState::default(), &AlertPolicy::default(), true, now);
    assert_eq!(out.decision.action, Action::Send);
    let want_status =
        if matched.keys().any(|r| ["CloudWatch.1", "CloudWatch.5", "CloudWatch.6", "CloudWatch.7"].contains(r)) {
            EventStatus::Critical
        } else {
            EventStatus::Error
        };
    let ev = out.event.expect("an event");
    assert_eq!(ev.status, want_status);

    let fake = FakeGuance::start().await;
    let c = client(&fake);
    let token = c.workspace_token().await.unwrap();
    c.write_keyevents(&token, &ev.to_line_protocol().unwrap()).await.unwrap();
    let got = fake.events();
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(p.measurement, "monitor");
    assert_eq!(p.timestamp, now.timestamp_nanos_opt().unwrap());
    assert_eq!(
        p.tags,
        BTreeMap::from([
            ("account_id".to_owned(), "123837392027".to_owned()),
            ("inspection_id".to_owned(), ctx.inspection_id.to_string()),
            ("region".to_owned(), "us-east-1".to_owned()),
        ])
    );
    let s = |k: &str| p.str(k).unwrap_or_else(|| panic!("no string field {k}"));
    assert_eq!(s("df_source"), "monitor");
    assert_eq!(s("df_monitor_type"), "bot_obs");
    assert_eq!(s("df_status"), want_status.as_str());
    assert_eq!(s("df_event_id"), event::event_id(ctx.inspection_id, ctx.run_id, "123837392027"));
    assert_eq!(s("df_fault_id"), s("df_event_id"));
    assert_eq!(s("df_fault_status"), "fault");
    assert_eq!(s("df_is_silent"), "false");
    assert_eq!(s("df_crontab_exec_mode"), "manual");
    assert_eq!(s("df_monitor_ref_key"), "cloudtrail-inspector-invictus");
    assert_eq!(s("df_monitor_checker_name"), "AWS CloudTrail anomalous event inspection");
    assert_eq!(s("df_title"), ev.title);
    assert_eq!(p.int("df_check_range_start"), Some(start.timestamp()));
    assert_eq!(p.int("df_check_range_end"), Some(end.timestamp()));
    assert_eq!(p.int("df_fault_start_time"), Some(now.timestamp()));
    assert_eq!(p.int("df_fault_duration"), Some(0));
    assert_eq!(p.json("df_alert_policy_ids"), Some(json!(["altpl_security"])));
    assert_eq!(
        p.json("df_dimension_tags"),
        Some(json!({"account_id": "123837392027", "inspection_id": ctx.inspection_id, "region": "us-east-1"}))
    );
    assert_eq!(s("df_sub_status"), want_status.as_str());
    assert_eq!(s("inspection_name"), "invictus");
    assert_eq!(s("df_monitor_checker_event_ref").len(), 32);
    // The report: the original's four parts, each cluster with its links.
    let report = p.json("df_event_report").unwrap();
    assert_eq!(report["cloudtrail"]["new_error_records"], 300);
    assert_eq!(report["cloudtrail"]["new_clusters"], clusters.len());
    assert_eq!(report["access_keys"].as_array().unwrap().len(), keys.len());
    assert_eq!(report["new_errors"].as_array().unwrap().len(), clusters.len());
    assert!(report["new_errors"].as_array().unwrap().iter().all(|c| {
        c["links"]["details"].as_str().is_some_and(|u| u.starts_with("http://127.0.0.1:8080/console/clusters/"))
    }));
    let detail = p.json("df_event_detail").unwrap();
    assert_eq!(detail["new_clusters"].as_array().unwrap().len(), 44);
    assert_eq!(detail["new_error_records"], 300);
    assert_eq!(detail["access_keys"].as_array().unwrap().len(), keys.len());

    // The message: the original's three parts, with the busiest key and the biggest cluster.
    let msg = s("df_message");
    assert_eq!(msg, ev.message, "the message survives the line protocol byte for byte");
    assert!(msg.contains("**300** new CloudTrail error records in **44** new error clusters"), "{msg}");
    assert!(msg.contains("#### Access keys"));
    assert!(msg.contains(
        "`AKIATFQR7NSC8Q4X20BJ` last active 2023-07-10 12:29:09 UTC by `arn:aws:iam::123837392027:user/bert-jan` from `192.168.10.20` (`DescribeDBInstances`), 2104 events"
    ), "{msg}");
    assert!(msg.contains("#### New error clusters"));
    let biggest = &clusters[0];
    assert!(
        msg.contains(&format!(
            "on `{}` `{}`: {} records",
            biggest.identity.event_source, biggest.identity.event_name, biggest.count
        )),
        "{msg}"
    );
    // The most severe clusters come first.
    let first = msg.split("#### New error clusters").nth(1).unwrap().lines().find(|l| l.starts_with("- ")).unwrap();
    assert!(first.contains(&format!("level **{}**", want_status.as_str())), "{first}");
    assert!(msg.contains("[Cluster details](http://127.0.0.1:8080/console/clusters/"));
    assert!(msg.contains("[Records in CloudWatch Logs Insights](https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:logs-insights$3FqueryDetail$3D~("));
    assert!(msg.contains("Top principals: `arn:aws:iam::123837392027:"));
    assert!(msg.contains("CloudWatch.2 Unauthorized API calls"));
}

/// Three runs of one account: a new AccessDenied cluster (sent, `error`), another within the
/// silence (sent silent, `df_is_silent = "true"`), then a quiet run (the `ok` recovery, same
/// fault, with the silenced cluster and the fault's duration).
#[tokio::test]
async fn silence_and_recovery_reach_guance_as_expected() {
    let (clusters, _, start, end) = invictus_run();
    let denied: Vec<EventCluster> =
        clusters.iter().filter(|c| c.identity.error_code == "AccessDenied").take(2).cloned().collect();
    assert_eq!(denied.len(), 2);
    let fake = FakeGuance::start().await;
    let c = client(&fake);
    let token = c.workspace_token().await.unwrap();
    let policy = AlertPolicy::default();
    let mut state = DimensionState::default();
    let mut sent = Vec::new();
    let runs: [(i64, Vec<EventCluster>); 3] =
        [(0, vec![denied[0].clone()]), (30, vec![denied[1].clone()]), (95, vec![])];
    for (i, (minute, new)) in runs.into_iter().enumerate() {
        let mut ctx = context(start, end);
        ctx.run_id = Uuid::from_u128(i as u128 + 1);
        let account = AccountRun {
            account_id: "123837392027".into(),
            new_error_records: new.iter().map(|c| c.count).sum(),
            error_records: 0,
            new_clusters: new,
            access_keys: vec![],
        };
        let now = end + chrono::Duration::minutes(minute);
        let out = event::evaluate(&ctx, &account, &state, &policy, true, now);
        state = out.decision.next.clone();
        let ev = out.event.expect("every run here records an event");
        sent.push((out.decision.action, ev.deliver));
        if ev.deliver {
            c.write_keyevents(&token, &ev.to_line_protocol().unwrap()).await.unwrap();
        }
    }
    assert_eq!(sent, vec![(Action::Send, true), (Action::RecordSilent, true), (Action::Recover, true)]);
    let got = fake.events();
    assert_eq!(got.len(), 3, "Guance's history has every event, the silent one too");
    let (first, silent, recovery) = (&got[0], &got[1], &got[2]);
    assert_eq!(first.str("df_is_silent"), Some("false"));
    assert_eq!(silent.str("df_is_silent"), Some("true"));
    assert_eq!(silent.str("df_fault_id"), first.str("df_event_id"), "the silent event belongs to the fault");
    assert_eq!(recovery.str("df_is_silent"), Some("false"));
    assert_eq!(recovery.str("df_sub_status"), Some("ok"));
    assert_eq!(
        recovery.str("df_monitor_checker_event_ref"),
        first.str("df_monitor_checker_event_ref"),
        "one checker, one dimension: one ref for the unrecovered-events view"
    );
    assert_eq!(first.str("df_status"), Some("error"));
    assert_eq!(recovery.str("df_status"), Some("ok"));
    assert_eq!(recovery.str("df_fault_status"), Some("ok"));
    assert_eq!(recovery.str("df_fault_id"), first.str("df_event_id"));
    assert_ne!(recovery.str("df_event_id"), first.str("df_event_id"));
    assert_eq!(recovery.int("df_fault_start_time"), first.int("df_fault_start_time"));
    assert_eq!(recovery.int("df_fault_duration"), Some(95 * 60));
    let msg = recovery.str("df_message").unwrap();
    assert!(msg.contains("lasted 1h 35m"), "{msg}");
    assert!(msg.contains("#### Clusters from silenced events"), "{msg}");
    assert!(msg.contains(&format!("`{}`", denied[1].identity.event_name)), "{msg}");
    assert!(state.fault.is_none() && state.carried.is_empty());
}

/// Records whose text is hostile to markdown and to line protocol still make an event that
/// parses back exactly.
#[tokio::test]
async fn hostile_records_make_a_well_formed_event() {
    let evil =
        "Denied \"quoted\" \\ back` slash\n# not a heading\r\n| a | b |\u{202e} [x](javascript:alert(1)) <b>x</b>";
    let record = json!({
        "eventVersion": "1.08",
        "eventTime": "2024-05-01T10:00:00Z",
        "eventID": "evil-1",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "awsRegion": "us-east-1",
        "recipientAccountId": "111122223333",
        "errorCode": "AccessDenied",
        "errorMessage": evil,
        "sourceIPAddress": "203.0.113.9\n# injected",
        "userAgent": evil,
        "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::111122223333:user/{evil}"), "accessKeyId": "AKIA\"EVIL,KEY=1 x"},
    });
    let mut cl = Clusterer::new(ClustererConfig { track_keys: true, ..ClustererConfig::default() });
    cl.ingest(&serde_json::to_vec(&record).unwrap());
    let analysis = cl.finish();
    assert_eq!(analysis.clusters.len(), 1);
    let clusters = vec![EventCluster::from_cluster(&analysis.clusters[0], Some(Uuid::now_v7()))];
    let k = &analysis.keys[0];
    let keys = vec![AccessKeyView {
        access_key_id: k.access_key_id.clone(),
        principal_arn: k.principal_arn.clone(),
        account_id: k.account_id.clone(),
        first_seen: k.first_seen,
        last_seen: k.last_seen,
        last_event_name: k.last_event_name.clone(),
        last_source_ip: k.last_source_ip.clone(),
        total_events: k.count as i64,
        active_in_window: true,
    }];
    let t = crate::common::data::event_time(&record).unwrap();
    let mut ctx = context(t, t + chrono::Duration::hours(1));
    ctx.inspection_name = "team \\ \"prod\", eu=1".into();
    let account = AccountRun {
        account_id: "111122223333".into(),
        new_error_records: 1,
        error_records: 1,
        new_clusters: clusters,
        access_keys: keys,
    };
    let out = event::evaluate(&ctx, &account, &DimensionState::default(), &AlertPolicy::default(), true, t);
    let ev = out.event.unwrap();
    let line = ev.to_line_protocol().unwrap();
    let fake = FakeGuance::start().await;
    client(&fake).write_keyevents(&Secret::new(WORKSPACE_TOKEN), &line).await.unwrap();
    let got = fake.events();
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(p.str("df_message"), Some(ev.message.as_str()));
    assert_eq!(p.str("df_title"), Some(ev.title.as_str()));
    assert_eq!(p.tags["inspection_id"], ctx.inspection_id.to_string());
    assert_eq!(p.str("inspection_name"), Some("team \\ \"prod\", eu=1"), "a field keeps the exact name");
    assert_eq!(p.json("df_event_report").unwrap()["overview"]["inspection"]["name"], "team \\ \"prod\", eu=1");
    let detail = p.json("df_event_detail").unwrap();
    assert_eq!(detail["new_clusters"][0]["sample_message"], Value::String(evil.to_owned()));
    // In the markdown every piece of record text is a one-line code span.
    let msg = p.str("df_message").unwrap();
    assert!(!msg.contains('\u{202e}') && !msg.contains('\r'));
    for l in msg.lines() {
        assert!(!l.starts_with("# not") && !l.starts_with("| a"), "{l}");
    }
    assert!(msg.contains("`` AKIA\"EVIL,KEY=1 x ``") || msg.contains("`AKIA\"EVIL,KEY=1 x`"), "{msg}");
}
