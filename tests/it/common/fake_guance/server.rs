//! The fake's HTTP side. One fallback handler sees every request, so each is recorded and can
//! be failed the same way. No lock is held across an await.

use std::collections::HashMap;
use std::sync::Weak;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxState};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::lineproto;
use super::{API_KEY, API_KEY_ID, Fault, Request, Shared, Side, State, lock};

pub(super) fn spawn(shared: Weak<Shared>, listener: TcpListener) -> JoinHandle<()> {
    let app = Router::new().fallback(handle).with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn handle(
    AxState(weak): AxState<Weak<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(shared) = weak.upgrade() else {
        return respond(503, json!({"message": "fake is gone"}));
    };
    let path = uri.path().to_owned();
    let side = if path.starts_with("/v1/write/") { Side::OpenWay } else { Side::OpenApi };
    let (latency, fault) = {
        let mut st = lock(&shared.state);
        (st.latency, take_fault(&mut st, side))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (status, answer) = match fault {
        Some(Fault::Status(s)) => (s, error_body(side, s, "Fake.Injected", "injected failure")),
        Some(Fault::Hang(d)) => {
            tokio::time::sleep(d).await;
            dispatch(&mut lock(&shared.state), side, &method, &uri, &headers, &body)
        }
        None => dispatch(&mut lock(&shared.state), side, &method, &uri, &headers, &body),
    };
    lock(&shared.state).requests.push(Request {
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or("").to_owned(),
        status,
        body: if side == Side::OpenApi { serde_json::from_slice(&body).ok() } else { None },
    });
    respond(status, answer)
}

fn take_fault(st: &mut State, side: Side) -> Option<Fault> {
    let i = st.faults.iter().position(|(s, n, _)| *n > 0 && (*s == Side::Any || *s == side))?;
    st.faults[i].1 -= 1;
    let fault = st.faults[i].2.clone();
    if st.faults[i].1 == 0 {
        st.faults.remove(i);
    }
    Some(fault)
}

fn respond(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONNECTION, "close")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

fn ok(content: Value) -> (u16, Value) {
    (
        200,
        json!({"code": 200, "content": content, "errorCode": "", "message": "", "success": true, "traceId": "TRACE-FAKE"}),
    )
}

fn error_body(side: Side, status: u16, code: &str, message: &str) -> Value {
    match side {
        Side::OpenWay => json!({"error_code": code, "message": message}),
        _ => json!({
            "code": status, "content": null, "errorCode": code, "message": message,
            "success": false, "traceId": "TRACE-FAKE"
        }),
    }
}

fn fail(status: u16, code: &str, message: impl Into<String>) -> (u16, Value) {
    (status, error_body(Side::OpenApi, status, code, &message.into()))
}

fn dispatch(st: &mut State, side: Side, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> (u16, Value) {
    match side {
        Side::OpenWay => openway(st, method, uri, body),
        _ => openapi(st, method, uri, headers, body),
    }
}

fn openway(st: &mut State, method: &Method, uri: &Uri, body: &Bytes) -> (u16, Value) {
    let way = |status: u16, code: &str, message: String| (status, error_body(Side::OpenWay, status, code, &message));
    if uri.path() != "/v1/write/keyevent" || method != Method::POST {
        return way(404, "dataway.notFound", format!("no route {}", uri.path()));
    }
    let query: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let token = query.get("token").cloned().unwrap_or_default();
    if token != st.token {
        return way(401, "dataway.tokenNotFound", format!("token not found: {token}"));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return way(400, "datakit.invalidLinePoint", "body is not UTF-8".into());
    };
    let points = match lineproto::parse(text) {
        Ok(p) => p,
        Err(e) => return way(400, "datakit.invalidLinePoint", format!("invalid lineprotocol: {e}")),
    };
    if points.is_empty() {
        return way(400, "datakit.emptyPoints", "no points".into());
    }
    for p in &points {
        if let Some(k) = p.tags.keys().chain(p.fields.keys()).find(|k| k.contains('.')) {
            return way(400, "datakit.invalidLinePoint", format!("invalid key {k:?}: found '.'"));
        }
    }
    st.events.extend(points);
    st.bodies.push(text.to_owned());
    (200, json!({}))
}

fn openapi(st: &mut State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> (u16, Value) {
    if headers.get("DF-API-KEY").and_then(|v| v.to_str().ok()) != Some(API_KEY_ID) {
        return fail(401, "ft.InvalidApiKey", "DF-API-KEY is missing or unknown");
    }
    let query: HashMap<String, String> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let json_body = || -> Result<Map<String, Value>, (u16, Value)> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(fail(400, "ft.InvalidBody", "the body must be a JSON object")),
        }
    };
    let result = match (method.as_str(), uri.path()) {
        ("GET", "/api/v1/workspace/get") => {
            Ok(ok(json!({"uuid": "wksp_fake", "name": "fake workspace", "token": st.token})))
        }
        ("GET", "/api/v1/workspace/accesskey/list") => Ok(ok(json!([{"ak": API_KEY_ID, "sk": API_KEY}]))),
        ("POST", "/api/v1/self_built_checker/create") => json_body().and_then(|b| create(st, b)),
        ("POST", "/api/v1/self_built_checker/modify") => json_body().and_then(|b| modify(st, b)),
        ("GET", "/api/v1/self_built_checker/get") => {
            find(st, query.get("refKey").map(String::as_str), query.get("ruleUUID").map(String::as_str))
                .map(|k| ok(st.checkers[&k].clone()))
        }
        ("GET", "/api/v1/self_built_checker/list") => {
            let wanted: Vec<&str> = query.get("refKey").map(|s| s.split(',').collect()).unwrap_or_default();
            let list: Vec<Value> = st
                .checkers
                .iter()
                .filter(|(k, _)| wanted.is_empty() || wanted.contains(&k.as_str()))
                .map(|(_, v)| v.clone())
                .collect();
            // As documented: `content.data` holds the page.
            Ok(ok(json!({ "data": list })))
        }
        ("POST", "/api/v1/self_built_checker/enable") => json_body().and_then(|b| set_disabled(st, b, false)),
        ("POST", "/api/v1/self_built_checker/disable") => json_body().and_then(|b| set_disabled(st, b, true)),
        ("POST", "/api/v1/self_built_checker/delete") => json_body().and_then(|b| {
            only(&b, &["ruleUUID", "refKey"])?;
            let key = find(st, b.get("refKey").and_then(Value::as_str), b.get("ruleUUID").and_then(Value::as_str))?;
            st.checkers.remove(&key);
            Ok(ok(json!(true)))
        }),
        _ => Err(fail(404, "ft.RouteNotFound", format!("no route {} {}", method, uri.path()))),
    };
    result.unwrap_or_else(|e| e)
}

type Answer = Result<(u16, Value), (u16, Value)>;

fn only(b: &Map<String, Value>, allowed: &[&str]) -> Result<(), (u16, Value)> {
    match b.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(fail(400, "ft.ParamError", format!("unknown field `{k}`"))),
        None => Ok(()),
    }
}

fn non_empty_str<'a>(b: &'a Map<String, Value>, key: &str) -> Result<&'a str, (u16, Value)> {
    match b.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(fail(400, "ft.ParamError", format!("`{key}` must be a non-empty string"))),
    }
}

fn check_func_info(v: &Value, with_func_id: bool) -> Result<(), (u16, Value)> {
    let Value::Object(f) = v else {
        return Err(fail(400, "ft.ParamError", "`refFuncInfo` must be an object"));
    };
    let mut allowed = vec!["description", "definition", "category", "args", "kwargs"];
    if with_func_id {
        allowed.push("funcId");
        non_empty_str(f, "funcId")?;
    }
    only(f, &allowed)?;
    for k in ["description", "definition", "category"] {
        if f.get(k).is_some_and(|v| !v.is_string()) {
            return Err(fail(400, "ft.ParamError", format!("`refFuncInfo.{k}` must be a string")));
        }
    }
    if f.get("args").is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))) {
        return Err(fail(400, "ft.ParamError", "`refFuncInfo.args` must be a list of strings"));
    }
    if f.get("kwargs").is_some_and(|v| !v.is_object()) {
        return Err(fail(400, "ft.ParamError", "`refFuncInfo.kwargs` must be an object"));
    }
    Ok(())
}

fn check_policies(b: &Map<String, Value>) -> Result<Vec<String>, (u16, Value)> {
    match b.get("alertPolicyUUIDs") {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v.as_str() {
                Some(s) if s.starts_with("altpl_") => Ok(s.to_owned()),
                _ => Err(fail(400, "ft.ParamError", "`alertPolicyUUIDs` must hold `altpl_…` strings")),
            })
            .collect(),
        Some(_) => Err(fail(400, "ft.ParamError", "`alertPolicyUUIDs` must be a list")),
    }
}

pub(super) fn policy_infos(uuids: &[String]) -> Value {
    json!(uuids.iter().map(|u| json!({"name": format!("policy {u}"), "uuid": u})).collect::<Vec<_>>())
}

fn create(st: &mut State, b: Map<String, Value>) -> Answer {
    only(&b, &["refKey", "title", "refFuncInfo", "alertPolicyUUIDs", "isDisabled", "monitorUUID"])?;
    let ref_key = non_empty_str(&b, "refKey")?.to_owned();
    let title = non_empty_str(&b, "title")?.to_owned();
    let func = b.get("refFuncInfo").cloned().unwrap_or(Value::Null);
    check_func_info(&func, true)?;
    let policies = check_policies(&b)?;
    let disabled = match b.get("isDisabled") {
        None => false,
        Some(Value::Bool(d)) => *d,
        Some(_) => return Err(fail(400, "ft.ParamError", "`isDisabled` must be a boolean")),
    };
    if st.checkers.contains_key(&ref_key) {
        return Err(fail(400, "Checker.RefKeyExists", format!("refKey {ref_key} already exists")));
    }
    let uuid = format!("rul_{:032x}", st.next_rule);
    st.next_rule += 1;
    let now = super::now_secs();
    // The shape of the list endpoint's example record (guance-docs
    // `open-api/self-built-checker/list.md`): the function and its call arguments in
    // `jsonScript`, policies as `alertPolicyInfos`, the switch as `status`, times in seconds.
    let record = json!({
        "uuid": uuid,
        "refKey": ref_key,
        "type": "self_built_trigger",
        "status": if disabled { 2 } else { 0 },
        "createAt": now,
        "updateAt": now,
        "deleteAt": -1,
        "crontabInfo": {},
        "extend": {},
        "monitorUUID": "",
        "alertPolicyInfos": policy_infos(&policies),
        "jsonScript": {
            "type": "selfBuiltCheck",
            "name": title,
            "title": title,
            "refFuncInfo": func,
            "callKwargs": {},
        },
    });
    st.checkers.insert(ref_key, record.clone());
    Ok(ok(record))
}

/// The `refKey` of the checker named by `ref_key` or `rule_uuid`.
fn find(st: &State, ref_key: Option<&str>, rule_uuid: Option<&str>) -> Result<String, (u16, Value)> {
    let found = match (ref_key, rule_uuid) {
        (Some(k), _) => st.checkers.contains_key(k).then(|| k.to_owned()),
        (None, Some(u)) => st.checkers.iter().find(|(_, v)| v["uuid"] == u).map(|(k, _)| k.clone()),
        (None, None) => return Err(fail(400, "ft.ParamError", "give `refKey` or `ruleUUID`")),
    };
    found.ok_or_else(|| fail(404, "Checker.NotFound", "no such self-built inspection"))
}

fn modify(st: &mut State, b: Map<String, Value>) -> Answer {
    only(&b, &["ruleUUID", "refKey", "title", "refFuncInfo", "alertPolicyUUIDs", "monitorUUID"])?;
    let key = find(st, b.get("refKey").and_then(Value::as_str), b.get("ruleUUID").and_then(Value::as_str))?;
    if b.contains_key("title") {
        non_empty_str(&b, "title")?;
    }
    if let Some(f) = b.get("refFuncInfo") {
        check_func_info(f, false)?;
    }
    let policies = b.contains_key("alertPolicyUUIDs").then(|| check_policies(&b)).transpose()?;
    let rec = st.checkers.get_mut(&key).expect("found above");
    if let Some(t) = b.get("title") {
        rec["jsonScript"]["title"] = t.clone();
        rec["jsonScript"]["name"] = t.clone();
    }
    if let Some(Value::Object(f)) = b.get("refFuncInfo") {
        for (k, v) in f {
            rec["jsonScript"]["refFuncInfo"][k] = v.clone();
        }
    }
    if let Some(p) = policies {
        rec["alertPolicyInfos"] = policy_infos(&p);
    }
    rec["updateAt"] = json!(super::now_secs());
    Ok(ok(rec.clone()))
}

fn set_disabled(st: &mut State, b: Map<String, Value>, disabled: bool) -> Answer {
    only(&b, &["ruleUUIDs", "refKey"])?;
    let mut keys = Vec::new();
    if let Some(k) = b.get("refKey").and_then(Value::as_str) {
        keys.push(find(st, Some(k), None)?);
    }
    for u in b.get("ruleUUIDs").and_then(Value::as_array).into_iter().flatten() {
        keys.push(find(st, None, u.as_str())?);
    }
    if keys.is_empty() {
        return Err(fail(400, "ft.ParamError", "give `refKey` or `ruleUUIDs`"));
    }
    for k in keys {
        let rec = st.checkers.get_mut(&k).expect("found above");
        rec["status"] = json!(if disabled { 2 } else { 0 });
        rec["updateAt"] = json!(super::now_secs());
    }
    Ok(ok(json!(true)))
}
