//! The web console through the router: who may see which page (sessions, share links, the
//! open console of a token-less service), the headers every page carries, the cookie's
//! attributes, and hostile CloudTrail text shown as text on every page. `browser.rs` loads
//! the same pages in Chromium.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use cloudtrail_inspector::http::{AppState, HttpSettings};
use cloudtrail_inspector::model::Secret;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::fake_cwl::FakeCwl;
use crate::common::{BACKENDS, Backend, TestApp, inspection_body};

pub const TOKEN: &str = "console-test-token-0123456789";
const GROUP: &str = "console-trail";

/// CloudTrail fields anyone making a call controls, carrying markup and script.
pub const HOSTILE_AGENT: &str = "<img src=x onerror=alert(1)>";
pub const HOSTILE_ARN: &str = "arn:aws:iam::111122223333:user/<script>alert(1)</script>";
pub const HOSTILE_MESSAGE: &str = "denied </pre><script>alert(2)</script> \"><svg onload=alert(3)>";

fn at() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::minutes(20)).duration_trunc(TimeDelta::seconds(1)).unwrap()
}

fn record(error_code: &str, fields: Value) -> String {
    let mut r = json!({"eventTime": at().format("%Y-%m-%dT%H:%M:%SZ").to_string(), "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject", "awsRegion": "us-east-1", "recipientAccountId": "111122223333",
        "errorCode": error_code, "errorMessage": "Access Denied", "sourceIPAddress": "203.0.113.9",
        "userAgent": "aws-cli/2.15", "eventID": uuid::Uuid::new_v4().to_string(),
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/alice", "accessKeyId": "AKIACONSOLE000000001"}});
    for (k, v) in fields.as_object().unwrap() {
        r[k] = v.clone();
    }
    r.to_string()
}

/// An inspection that ran once over ordinary and hostile records, with what it left.
pub struct Seeded {
    pub app: TestApp,
    pub inspection_id: String,
    pub run_id: String,
    pub cluster_ids: Vec<String>,
    pub event_ids: Vec<String>,
    /// Kept alive for the app's inspection.
    pub _fake: FakeCwl,
}

pub async fn seed(backend: Backend) -> Seeded {
    let fake = FakeCwl::start().await;
    let t = at().timestamp_millis();
    let records = [
        record("AccessDenied", json!({})),
        record("AccessDenied", json!({})),
        record(
            "Client.UnauthorizedOperation",
            json!({"eventSource": "ec2.amazonaws.com", "eventName": "DescribeInstances", "userAgent": HOSTILE_AGENT,
                "errorMessage": HOSTILE_MESSAGE,
                "userIdentity": {"type": "IAMUser", "arn": HOSTILE_ARN, "accessKeyId": "AKIACONSOLE000000002"}}),
        ),
        record("StopLoggingDenied", json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging"})),
    ];
    fake.put_events(GROUP, "s", records.iter().map(|r| (t, r.clone())));
    let app = TestApp::new(backend).await;
    let mut body = inspection_body("console <b>demo</b>", &[GROUP], &fake.endpoint());
    body["baseline_days"] = json!(0);
    let insp = app.create_inspection(body).await;
    let inspection_id = insp["id"].as_str().unwrap().to_string();
    let (status, run) = app.post(&format!("/api/v1/inspections/{inspection_id}/runs"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["id"].as_str().unwrap().to_string();
    let (_, clusters) = app.get(&format!("/api/v1/inspections/{inspection_id}/clusters")).await;
    let cluster_ids: Vec<String> =
        clusters["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(cluster_ids.len(), 3, "{clusters}");
    let (_, events) = app.get(&format!("/api/v1/inspections/{inspection_id}/events")).await;
    let event_ids: Vec<String> =
        events["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert!(!event_ids.is_empty(), "a run with new clusters records an event, Guance or not: {events}");
    Seeded { app, inspection_id, run_id, cluster_ids, event_ids, _fake: fake }
}

/// The same service with an API token: the console then asks for it.
pub fn locked(state: &AppState) -> axum::Router {
    let settings = HttpSettings {
        api_tokens: cloudtrail_inspector::http::auth::Tokens::new(&[Secret::new(TOKEN)]),
        ..(*state.settings).clone()
    };
    cloudtrail_inspector::http::router(AppState { settings: Arc::new(settings), ..state.clone() })
}

pub async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let res = router.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn get_with_cookie(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
}

/// A console link from an event's markdown message: `(…/console/<kind>/…?exp=…&sig=…)`.
pub fn message_link(message: &str, kind: &str) -> String {
    let start = message.find(&format!("/console/{kind}/")).unwrap_or_else(|| panic!("no {kind} link in {message}"));
    let end = start + message[start..].find(')').unwrap();
    message[start..end].to_string()
}

pub async fn event_message(app: &TestApp, event_id: &str) -> String {
    let (_, e) = app.get(&format!("/api/v1/events/{event_id}")).await;
    e["event"]["message"].as_str().unwrap().to_string()
}

fn assert_no_markup_from_records(page: &str, uri: &str) {
    for raw in ["<script", "<img", "<svg onload", "onerror=alert(1)>", "</pre><script>"] {
        assert!(!page.contains(raw), "{uri}: record text became markup ({raw}):\n{page}");
    }
}

#[tokio::test]
async fn every_page_shows_record_text_as_text_with_strict_headers() {
    for backend in BACKENDS {
        let s = seed(backend).await;
        let mut pages = vec![
            "/console".to_string(),
            format!("/console/inspections/{}", s.inspection_id),
            format!("/console/runs/{}", s.run_id),
            "/console/events".to_string(),
            format!("/console/events?inspection={}&account=111122223333", s.inspection_id),
        ];
        pages.extend(s.cluster_ids.iter().map(|c| format!("/console/clusters/{c}")));
        pages.extend(s.event_ids.iter().map(|e| format!("/console/events/{e}")));
        let mut seen_hostile = 0;
        for uri in &pages {
            let (status, headers, page) = send(&s.app.router, get(uri)).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} {uri}: {page}");
            assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"), "{uri}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'none'") && csp.contains("frame-ancestors 'none'"), "{uri}: {csp}");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{uri}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{uri}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{uri}");
            assert_no_markup_from_records(&page, uri);
            assert!(!page.contains(" style="), "{uri}: no inline style (the CSP forbids it)");
            assert!(page.contains("console &lt;b&gt;demo&lt;/b&gt;") || uri.starts_with("/console/events/"), "{uri}");
            if page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") {
                seen_hostile += 1;
            }
        }
        assert!(seen_hostile >= 3, "{backend:?}: the hostile principal is shown, as text, on several pages");

        let (_, _, overview) = send(&s.app.router, get("/console")).await;
        assert!(overview.contains(">succeeded</span>"), "{overview}");
        assert!(
            overview.contains(" ago</time>") || overview.contains(">just now</time>"),
            "the last run's age: {overview}"
        );
        let (_, _, inspection) = send(&s.app.router, get(&format!("/console/inspections/{}", s.inspection_id))).await;
        assert!(
            inspection.contains("<svg") && inspection.matches("<rect").count() >= 2,
            "the runs chart: {inspection}"
        );
        assert!(inspection.contains("CloudWatch.5"), "StopLogging matches CIS CloudWatch.5: {inspection}");
        let hostile = s.cluster_ids.iter().find(|_| true).unwrap();
        let mut found_record = false;
        for c in &s.cluster_ids {
            let (_, _, page) = send(&s.app.router, get(&format!("/console/clusters/{c}"))).await;
            if page.contains("&lt;img src=x onerror=alert(1)&gt;") {
                found_record = true;
                assert!(page.contains("&quot;userAgent&quot;: &quot;&lt;img"), "the record, pretty-printed: {page}");
            }
        }
        assert!(found_record, "{backend:?}: the hostile record is shown on its cluster ({hostile})");

        let (status, headers, _) = send(&s.app.router, get("/")).await;
        assert_eq!((status, headers[header::LOCATION].to_str().unwrap()), (StatusCode::TEMPORARY_REDIRECT, "/console"));
        let (status, _, page) =
            send(&s.app.router, get("/console/clusters/00000000-0000-0000-0000-000000000000")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
        assert!(page.contains("There is no such cluster"), "an HTML page, not JSON: {page}");
        let (status, _, _) = send(&s.app.router, get("/console/runs/not-a-uuid")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn with_a_token_the_console_asks_to_sign_in_and_keeps_a_session() {
    let s = seed(Backend::Sqlite).await;
    let router = locked(&s.app.state);
    let run_page = format!("/console/runs/{}", s.run_id);
    let (status, headers, _) = send(&router, get(&run_page)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let to = headers[header::LOCATION].to_str().unwrap();
    assert_eq!(to, format!("/console/sign-in?next=%2Fconsole%2Fruns%2F{}", s.run_id));
    let (status, headers, form) = send(&router, get(to)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains("type=\"password\"") && form.contains(&format!("value=\"/console/runs/{}\"", s.run_id)));
    assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));

    let sign_in = |token: &str, proto: Option<&str>| {
        let body = serde_urlencoded::to_string([("token", token), ("next", run_page.as_str())]).unwrap();
        let mut req =
            Request::post("/console/sign-in").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        req.body(Body::from(body)).unwrap()
    };
    let (status, headers, page) = send(&router, sign_in("wrong-token", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("That token is not valid"), "{page}");
    assert!(!headers.contains_key(header::SET_COOKIE));

    let (status, headers, _) = send(&router, sign_in(TOKEN, None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION].to_str().unwrap(), run_page);
    let set = headers[header::SET_COOKIE].to_str().unwrap().to_string();
    for attr in ["cti_session=v1.", "; Path=/console", "; HttpOnly", "; SameSite=Strict", "; Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    assert!(!set.contains(TOKEN), "the token is not in the cookie: {set}");
    let (_, headers, _) = send(&router, sign_in(TOKEN, Some("https"))).await;
    assert!(headers[header::SET_COOKIE].to_str().unwrap().ends_with("; Secure"), "behind https");

    let cookie = set.split(';').next().unwrap().to_string();
    let (status, _, page) = send(&router, get_with_cookie(&run_page, &cookie)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Sign out") && !page.contains("Shared link"), "{page}");
    let (status, _, _) = send(&router, get_with_cookie("/console", &cookie)).await;
    assert_eq!(status, StatusCode::OK);
    // A cookie signed by another key (a rotated one) is refused.
    let forged = format!("{}x", &cookie[..cookie.len() - 1]);
    let (status, _, _) = send(&router, get_with_cookie(&run_page, &forged)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The session opens the console only: the API still wants the bearer token.
    let (status, _, body) = send(&router, get_with_cookie("/api/v1/inspections", &cookie)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let out = Request::builder().method(Method::POST).uri("/console/sign-out").header(header::COOKIE, &cookie);
    let (status, headers, _) = send(&router, out.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cleared = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("cti_session=;") && cleared.contains("Max-Age=0"), "{cleared}");

    // Only console pages are places to return to after signing in.
    let body = serde_urlencoded::to_string([("token", TOKEN), ("next", "https://evil.example/")]).unwrap();
    let req = Request::post("/console/sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let (_, headers, _) = send(&router, req).await;
    assert_eq!(headers[header::LOCATION], "/console");
}

#[tokio::test]
async fn share_links_in_events_open_their_page_only_until_they_expire() {
    for backend in BACKENDS {
        let s = seed(backend).await;
        let router = locked(&s.app.state);
        let message = event_message(&s.app, &s.event_ids[0]).await;
        let cluster_link = message_link(&message, "clusters");
        let run_link = message_link(&message, "runs");
        assert!(cluster_link.contains("?exp=") && cluster_link.contains("&sig="), "{cluster_link}");
        assert!(run_link.starts_with(&format!("/console/runs/{}?exp=", s.run_id)), "{run_link}");
        // The links expire after SHARE_LINK_DAYS (30 by default).
        let exp: i64 = cluster_link.split("exp=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
        let days = (exp - Utc::now().timestamp()) as f64 / 86_400.0;
        assert!((29.9..=30.0).contains(&days), "{days}");

        for link in [&cluster_link, &run_link] {
            let (status, headers, page) = send(&router, get(link)).await;
            assert_eq!(status, StatusCode::OK, "{backend:?} {link}: {page}");
            assert!(page.contains("Shared link: this page only"), "{page}");
            assert!(!page.contains("Sign out"));
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "the signature is not passed on");
            assert_no_markup_from_records(&page, link);
        }

        // The signature covers the page: another cluster with this signature does not open.
        let (path, query) = cluster_link.split_once('?').unwrap();
        let other = s.cluster_ids.iter().find(|c| !path.ends_with(c.as_str())).unwrap();
        let moved = format!("/console/clusters/{other}?{query}");
        let (status, _, page) = send(&router, get(&moved)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        assert!(page.contains("not valid"), "{page}");
        // A changed signature or expiry does not open either.
        let mut tampered = cluster_link.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let longer = cluster_link.replace(&format!("exp={exp}"), &format!("exp={}", exp + 86_400));
        for bad in [&tampered, &longer] {
            let (status, _, _) = send(&router, get(bad)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{bad}");
        }
        // An expired link says so.
        let key = &s.app.state.settings.console.key;
        let expired = key.sign_link(path, Utc::now() - TimeDelta::seconds(1));
        let (status, _, page) = send(&router, get(&expired)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(page.contains("this link has expired"), "{page}");
        // A link signed with another key (the key was rotated) is revoked.
        let rotated =
            cloudtrail_inspector::share::ShareKey::ephemeral().sign_link(path, Utc::now() + TimeDelta::days(1));
        let (status, _, _) = send(&router, get(&rotated)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // A share link is no way into the API.
        let api = format!("/api/v1/clusters/{}?{query}", path.rsplit('/').next().unwrap());
        let (status, _, _) = send(&router, get(&api)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
