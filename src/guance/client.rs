//! Calls to Guance: the OpenAPI (workspace token, self-built inspection registry) and the
//! OpenWay event write.
//!
//! Each method makes one attempt. Retrying belongs to the caller (the delivery worker keeps
//! an outbox and backs off), which is why every failure says whether a retry can help:
//! [`GuanceError::is_retryable`] is true for 5xx answers, 408/429, timeouts and connection
//! failures, and false for other 4xx answers, which carry Guance's `errorCode` and `message`.
//!
//! Secrets stay out of errors and logs: reqwest errors are stripped of their URL (the OpenWay
//! URL holds the workspace token in its query string), messages echoed from Guance are
//! scrubbed of the token and key values, and [`redact_url`] masks `token=` in any URL shown.
//!
//! OpenAPI answers use the envelope `{code, content, errorCode, message, success, traceId}`;
//! a 2xx answer with `success: false` is treated as a permanent failure. Two behaviours the
//! public docs do not pin down, and what this client does:
//! - `self_built_checker/get` for an unknown `refKey`: a 404, or a success whose `content` is
//!   null or empty, both mean "not registered" (`Ok(None)`).
//! - `self_built_checker/modify`, `enable`, `disable` and `delete` are addressed by `refKey`
//!   (the docs list it beside `ruleUUID`), since the `refKey` is what this service derives
//!   from an inspection and never changes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{Endpoints, GuanceSettings};
use crate::model::Secret;

/// Longest part of an error body kept in an error message.
const MAX_ERROR_BODY: usize = 1024;

/// A failed Guance call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuanceError {
    /// Guance answered with an error status (or a 2xx envelope with `success: false`).
    #[error("Guance {op} failed with HTTP {status}: {error_code} {message}")]
    Api { op: &'static str, status: u16, error_code: String, message: String, trace_id: Option<String> },
    /// No answer: connection refused or reset, DNS, TLS.
    #[error("could not reach Guance for {op}: {detail}")]
    Connect { op: &'static str, detail: String },
    /// No answer in time.
    #[error("Guance {op} timed out")]
    Timeout { op: &'static str },
    /// An answer this client cannot read.
    #[error("Guance {op} answered something unexpected: {detail}")]
    BadResponse { op: &'static str, detail: String },
    /// Settings that cannot work (e.g. a URL that does not parse).
    #[error("Guance is misconfigured: {0}")]
    Config(String),
}

impl GuanceError {
    /// Whether trying again later can succeed.
    ///
    /// 408 and 429 are 4xx but say "not now" rather than "never"; a 2xx that cannot be read is
    /// most often a proxy's error page, so it is retried too.
    pub fn is_retryable(&self) -> bool {
        match self {
            GuanceError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            GuanceError::Connect { .. } | GuanceError::Timeout { .. } | GuanceError::BadResponse { .. } => true,
            GuanceError::Config(_) => false,
        }
    }

    /// The HTTP status Guance answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GuanceError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `refFuncInfo` of a self-built inspection: which function Guance shows as its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefFuncInfo {
    pub func_id: String,
    pub description: String,
    pub definition: String,
    pub category: String,
    pub args: Vec<String>,
    pub kwargs: Value,
}

/// A self-built inspection ("自建巡检") as registered in Guance.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckerSpec {
    /// Stable key of the inspection (cannot change after creation).
    pub ref_key: String,
    pub title: String,
    pub ref_func_info: RefFuncInfo,
    pub alert_policy_uuids: Vec<String>,
    pub is_disabled: bool,
}

/// Body of `self_built_checker/create`, field names exactly as the OpenAPI takes them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    ref_key: &'a str,
    title: &'a str,
    ref_func_info: &'a RefFuncInfo,
    #[serde(rename = "alertPolicyUUIDs")]
    alert_policy_uuids: &'a [String],
    is_disabled: bool,
}

/// Body of `self_built_checker/modify`: `refFuncInfo` without `funcId`, and no `isDisabled`,
/// as the modify endpoint documents them (enabling is its own call). Every part is optional
/// there, so a sync sends only what changed here and never overwrites an edit made in Guance.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModifyBody<'a> {
    ref_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ref_func_info: Option<ModifyFuncInfo<'a>>,
    #[serde(rename = "alertPolicyUUIDs", skip_serializing_if = "Option::is_none")]
    alert_policy_uuids: Option<&'a [String]>,
}

/// Which parts of a registration `self_built_checker/modify` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModifyParts {
    pub title: bool,
    /// `refFuncInfo`, which holds the `configs` argument.
    pub func_info: bool,
    pub alert_policies: bool,
}

impl ModifyParts {
    pub const ALL: ModifyParts = ModifyParts { title: true, func_info: true, alert_policies: true };

    pub fn any(self) -> bool {
        self.title || self.func_info || self.alert_policies
    }
}

#[derive(Serialize)]
struct ModifyFuncInfo<'a> {
    description: &'a str,
    definition: &'a str,
    category: &'a str,
    args: &'a [String],
    kwargs: &'a Value,
}

/// An alert policy attached to a registered inspection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AlertPolicyInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uuid: String,
}

/// A registered inspection as Guance returns it. `raw` keeps the whole record.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckerRecord {
    /// `rul_…`.
    pub uuid: String,
    pub ref_key: String,
    pub alert_policy_infos: Vec<AlertPolicyInfo>,
    pub raw: Value,
}

impl CheckerRecord {
    /// The `configs` argument as Guance holds it: what studio set for the call
    /// (`jsonScript.callKwargs.configs`), else the registered default
    /// (`refFuncInfo.kwargs.configs.default`, in `jsonScript` or at the top level; a plain
    /// string there is read too). None when the record has neither.
    pub fn configs(&self) -> Option<String> {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("default").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        let script = self.raw.get("jsonScript");
        let called = script
            .and_then(|j| j.pointer("/callKwargs/configs"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty());
        if let Some(c) = called {
            return Some(c.to_owned());
        }
        [script.and_then(|j| j.pointer("/refFuncInfo/kwargs/configs")), self.raw.pointer("/refFuncInfo/kwargs/configs")]
            .into_iter()
            .flatten()
            .find_map(text)
    }

    /// The alert policies: `alertPolicyUUIDs` when the record has it, else the uuids of
    /// `alertPolicyInfos` (the list endpoint's example has only the latter). None when it has
    /// neither.
    pub fn alert_policy_uuids(&self) -> Option<Vec<String>> {
        if let Some(Value::Array(a)) = self.raw.get("alertPolicyUUIDs") {
            return Some(a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
        }
        self.raw
            .get("alertPolicyInfos")
            .is_some()
            .then(|| self.alert_policy_infos.iter().map(|p| p.uuid.clone()).filter(|u| !u.is_empty()).collect())
    }

    /// Whether the checker is disabled: `isDisabled` when the record has it, else `status`
    /// (0 in the docs' examples of enabled checkers; any other value is taken as disabled).
    pub fn is_disabled(&self) -> Option<bool> {
        if let Some(d) = self.raw.get("isDisabled").and_then(Value::as_bool) {
            return Some(d);
        }
        self.raw.get("status").and_then(Value::as_i64).map(|s| s != 0)
    }

    /// `updateAt`: when the checker last changed in Guance (Unix seconds in the docs'
    /// examples; milliseconds are recognised by their size).
    pub fn update_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let v = self.raw.get("updateAt")?;
        let n = v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()))?;
        let secs = if n > 1e11 { n / 1000.0 } else { n };
        chrono::DateTime::from_timestamp(secs as i64, 0)
    }

    fn from_value(op: &'static str, v: Value) -> Result<Self, GuanceError> {
        let uuid = v.get("uuid").and_then(Value::as_str).unwrap_or_default().to_owned();
        let ref_key = v.get("refKey").and_then(Value::as_str).unwrap_or_default().to_owned();
        if uuid.is_empty() && ref_key.is_empty() {
            return Err(GuanceError::BadResponse { op, detail: "the record has neither `uuid` nor `refKey`".into() });
        }
        let alert_policy_infos = v
            .get("alertPolicyInfos")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| GuanceError::BadResponse { op, detail: format!("alertPolicyInfos: {e}") })?
            .unwrap_or_default();
        Ok(CheckerRecord { uuid, ref_key, alert_policy_infos, raw: v })
    }
}

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { connect_timeout: Duration::from_secs(5), timeout: Duration::from_secs(30) }
    }
}

/// The Guance client. Cheap to share behind an `Arc`; the workspace token, when fetched, is
/// cached for the client's lifetime.
pub struct GuanceClient {
    http: reqwest::Client,
    endpoints: Endpoints,
    api_key_id: Secret,
    api_key: Secret,
    token: OnceCell<Secret>,
}

impl std::fmt::Debug for GuanceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuanceClient")
            .field("openapi", &self.endpoints.openapi)
            .field("openway", &self.endpoints.openway)
            .field("token_known", &self.token.initialized())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    trace_id: Option<String>,
}

impl GuanceClient {
    /// Validates the settings and builds the HTTP client.
    pub fn new(settings: &GuanceSettings, options: ClientOptions) -> Result<Self, GuanceError> {
        let endpoints = settings.validate().map_err(|e| {
            let fields: Vec<String> = e.into_map().into_iter().map(|(k, v)| format!("{k} {}", v.join(", "))).collect();
            GuanceError::Config(fields.join("; "))
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .user_agent(concat!("cloudtrail-inspector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GuanceError::Config(format!("could not build the HTTP client: {}", e.without_url())))?;
        let token = OnceCell::new_with(settings.workspace_token.clone());
        Ok(GuanceClient {
            http,
            endpoints,
            api_key_id: settings.api_key_id.clone(),
            api_key: settings.api_key.clone(),
            token,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The workspace token for OpenWay writes: the configured one, else fetched once through
    /// `GET /api/v1/workspace/get` (`content.token`) and kept. A failed fetch is not cached.
    pub async fn workspace_token(&self) -> Result<Secret, GuanceError> {
        self.token.get_or_try_init(|| self.fetch_workspace_token()).await.cloned()
    }

    /// Asks Guance for the workspace token, bypassing the cache.
    pub async fn fetch_workspace_token(&self) -> Result<Secret, GuanceError> {
        const OP: &str = "workspace/get";
        let content = self.openapi(OP, Method::GET, "/api/v1/workspace/get", &[], None).await?;
        match content.get("token").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            Some(t) => Ok(Secret::new(t)),
            // Asking again will not make a token appear (an API key without the right to see
            // it): say what to do instead.
            None => Err(GuanceError::Config(
                "workspace/get answered without `content.token`; set the workspace token explicitly".into(),
            )),
        }
    }

    /// Whether the API key id and key belong together, as DataFlux Func checks it: the pair
    /// must be listed by `GET /api/v1/workspace/accesskey/list`.
    pub async fn check_api_key(&self) -> Result<bool, GuanceError> {
        const OP: &str = "workspace/accesskey/list";
        let content = self.openapi(OP, Method::GET, "/api/v1/workspace/accesskey/list", &[], None).await?;
        let list = content.get("data").unwrap_or(&content);
        let Some(items) = list.as_array() else {
            return Err(GuanceError::BadResponse { op: OP, detail: "`content` is not a list".into() });
        };
        Ok(items.iter().any(|d| {
            d.get("ak").and_then(Value::as_str) == Some(self.api_key_id.expose())
                && d.get("sk").and_then(Value::as_str) == Some(self.api_key.expose())
        }))
    }

    /// Registers an inspection.
    pub async fn create_checker(&self, spec: &CheckerSpec) -> Result<CheckerRecord, GuanceError> {
        const OP: &str = "self_built_checker/create";
        let body = CreateBody {
            ref_key: &spec.ref_key,
            title: &spec.title,
            ref_func_info: &spec.ref_func_info,
            alert_policy_uuids: &spec.alert_policy_uuids,
            is_disabled: spec.is_disabled,
        };
        let body = serde_json::to_value(&body).expect("plain data serializes");
        let content = self.openapi(OP, Method::POST, "/api/v1/self_built_checker/create", &[], Some(&body)).await?;
        match content {
            Value::Object(_) => CheckerRecord::from_value(OP, content),
            // Some deployments answer `true`; the record is then read back.
            _ => self.get_checker(&spec.ref_key).await?.ok_or_else(|| GuanceError::BadResponse {
                op: OP,
                detail: "created, but the record cannot be read back".into(),
            }),
        }
    }

    /// Updates title, function info and alert policies of a registered inspection.
    pub async fn modify_checker(&self, spec: &CheckerSpec) -> Result<(), GuanceError> {
        self.modify_checker_parts(spec, ModifyParts::ALL).await
    }

    /// Updates the given parts of a registered inspection; the others stay as Guance has them.
    pub async fn modify_checker_parts(&self, spec: &CheckerSpec, parts: ModifyParts) -> Result<(), GuanceError> {
        const OP: &str = "self_built_checker/modify";
        let f = &spec.ref_func_info;
        let body = ModifyBody {
            ref_key: &spec.ref_key,
            title: parts.title.then_some(spec.title.as_str()),
            ref_func_info: parts.func_info.then_some(ModifyFuncInfo {
                description: &f.description,
                definition: &f.definition,
                category: &f.category,
                args: &f.args,
                kwargs: &f.kwargs,
            }),
            alert_policy_uuids: parts.alert_policies.then_some(spec.alert_policy_uuids.as_slice()),
        };
        let body = serde_json::to_value(&body).expect("plain data serializes");
        self.openapi(OP, Method::POST, "/api/v1/self_built_checker/modify", &[], Some(&body)).await?;
        Ok(())
    }

    /// The registered inspection with this `refKey`, or `None`.
    pub async fn get_checker(&self, ref_key: &str) -> Result<Option<CheckerRecord>, GuanceError> {
        const OP: &str = "self_built_checker/get";
        match self.openapi(OP, Method::GET, "/api/v1/self_built_checker/get", &[("refKey", ref_key)], None).await {
            Ok(Value::Null) => Ok(None),
            Ok(Value::Object(m)) if m.is_empty() => Ok(None),
            Ok(v) => CheckerRecord::from_value(OP, v).map(Some),
            Err(GuanceError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn enable_checker(&self, ref_key: &str) -> Result<(), GuanceError> {
        self.by_ref_key("self_built_checker/enable", "/api/v1/self_built_checker/enable", ref_key).await
    }

    pub async fn disable_checker(&self, ref_key: &str) -> Result<(), GuanceError> {
        self.by_ref_key("self_built_checker/disable", "/api/v1/self_built_checker/disable", ref_key).await
    }

    /// Removes a registered inspection; one that is already gone (404) counts as removed.
    pub async fn delete_checker(&self, ref_key: &str) -> Result<(), GuanceError> {
        match self.by_ref_key("self_built_checker/delete", "/api/v1/self_built_checker/delete", ref_key).await {
            Err(GuanceError::Api { status: 404, .. }) => Ok(()),
            other => other,
        }
    }

    /// Brings Guance's registration in line with `spec`: create it if missing, else modify it
    /// and set its enabled state. Safe to repeat.
    pub async fn upsert_checker(&self, spec: &CheckerSpec) -> Result<CheckerRecord, GuanceError> {
        match self.get_checker(&spec.ref_key).await? {
            None => self.create_checker(spec).await,
            Some(existing) => {
                self.modify_checker(spec).await?;
                if spec.is_disabled {
                    self.disable_checker(&spec.ref_key).await?;
                } else {
                    self.enable_checker(&spec.ref_key).await?;
                }
                Ok(self.get_checker(&spec.ref_key).await?.unwrap_or(existing))
            }
        }
    }

    async fn by_ref_key(&self, op: &'static str, path: &str, ref_key: &str) -> Result<(), GuanceError> {
        let body = serde_json::json!({ "refKey": ref_key });
        self.openapi(op, Method::POST, path, &[], Some(&body)).await?;
        Ok(())
    }

    /// Writes events: `POST {openway}/v1/write/keyevent?token=…` with line-protocol `lines`.
    /// Any 2xx is success; the body is not read.
    pub async fn write_keyevents(&self, token: &Secret, lines: &str) -> Result<(), GuanceError> {
        const OP: &str = "write/keyevent";
        let url = format!("{}/v1/write/keyevent", self.endpoints.openway);
        let res = self
            .http
            .post(&url)
            .query(&[("token", token.expose())])
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(lines.to_owned())
            .send()
            .await
            .map_err(|e| self.transport_error(OP, e, Some(token)))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let text = res.text().await.unwrap_or_default();
        // DataWay/DataKit errors are `{"error_code", "message"}`; fall back to the raw text.
        let (code, message) = match serde_json::from_str::<Value>(&text) {
            Ok(v) => (
                v.get("error_code").or_else(|| v.get("errorCode")).and_then(Value::as_str).unwrap_or("").to_owned(),
                v.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| text.clone()),
            ),
            Err(_) => (String::new(), text),
        };
        Err(GuanceError::Api {
            op: OP,
            status: status.as_u16(),
            error_code: self.scrub_with(&code, Some(token)),
            message: self.scrub_with(&message, Some(token)),
            trace_id: None,
        })
    }

    /// One OpenAPI call; returns the envelope's `content`.
    async fn openapi(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, GuanceError> {
        let url = format!("{}{}", self.endpoints.openapi, path);
        let mut req = self.http.request(method, &url).header("DF-API-KEY", self.api_key_id.expose());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| self.transport_error(op, e, None))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| self.transport_error(op, e, None))?;
        let envelope: Option<Envelope> = serde_json::from_slice(&bytes).ok();
        match (status.is_success(), envelope) {
            (true, Some(env)) if env.success != Some(false) => Ok(env.content),
            (true, None) => Err(GuanceError::BadResponse {
                op,
                detail: format!("HTTP {} with a body that is not Guance's JSON envelope", status.as_u16()),
            }),
            (_, Some(env)) if env.error_code.is_empty() && env.message.is_empty() => Err(GuanceError::Api {
                op,
                status: status.as_u16(),
                error_code: String::new(),
                message: self.scrub(&String::from_utf8_lossy(&bytes)),
                trace_id: env.trace_id,
            }),
            (_, Some(env)) => Err(GuanceError::Api {
                op,
                // A 2xx that says `success: false` reports its real status in `code`.
                status: if status.is_success() {
                    env.code.and_then(|c| u16::try_from(c).ok()).filter(|c| *c >= 400).unwrap_or(400)
                } else {
                    status.as_u16()
                },
                error_code: self.scrub(&env.error_code),
                message: self.scrub(&env.message),
                trace_id: env.trace_id,
            }),
            (false, None) => Err(GuanceError::Api {
                op,
                status: status.as_u16(),
                error_code: String::new(),
                message: self.scrub(&String::from_utf8_lossy(&bytes)),
                trace_id: None,
            }),
        }
    }

    fn transport_error(&self, op: &'static str, e: reqwest::Error, token: Option<&Secret>) -> GuanceError {
        if e.is_timeout() {
            return GuanceError::Timeout { op };
        }
        let e = e.without_url();
        // The source chain says why (refused, reset, DNS); Display of the top error does not.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        if e.is_decode() || e.is_body() {
            return GuanceError::BadResponse { op, detail: self.scrub_with(&detail, token) };
        }
        GuanceError::Connect { op, detail: self.scrub_with(&detail, token) }
    }

    /// Removes every credential this client knows from text that may be shown or logged, and
    /// bounds its length.
    fn scrub(&self, text: &str) -> String {
        self.scrub_with(text, None)
    }

    /// [`Self::scrub`], also removing a token the caller passed in (it may differ from the
    /// cached one).
    fn scrub_with(&self, text: &str, extra: Option<&Secret>) -> String {
        let mut out = redact_url(text);
        let secrets = [Some(&self.api_key_id), Some(&self.api_key), self.token.get(), extra];
        for secret in secrets.into_iter().flatten().map(Secret::expose).filter(|s| s.len() >= 4) {
            out = out.replace(secret, "***");
        }
        truncate(&out, MAX_ERROR_BODY)
    }
}

/// Masks the value of every `token=` query parameter in `text` (URLs in messages).
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("token=") {
        let (head, tail) = rest.split_at(i + "token=".len());
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Whether a status code from Guance is worth retrying; for callers that only have a status.
pub fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guance::GuanceNode;

    #[test]
    fn urls_lose_their_tokens() {
        for (input, want) in [
            (
                "https://openway.guance.com/v1/write/keyevent?token=tkn_abc",
                "https://openway.guance.com/v1/write/keyevent?token=***",
            ),
            ("a?token=tkn_abc&x=1 and b?token=tkn_def", "a?token=***&x=1 and b?token=***"),
            ("no secrets here", "no secrets here"),
            ("token=", "token="),
            ("\"token=tkn_x\"", "\"token=***\""),
        ] {
            assert_eq!(redact_url(input), want);
        }
    }

    #[test]
    fn retry_classes() {
        let api = |status| GuanceError::Api {
            op: "x",
            status,
            error_code: String::new(),
            message: String::new(),
            trace_id: None,
        };
        for (e, want) in [
            (api(500), true),
            (api(503), true),
            (api(429), true),
            (api(408), true),
            (api(400), false),
            (api(401), false),
            (api(403), false),
            (api(404), false),
            (GuanceError::Timeout { op: "x" }, true),
            (GuanceError::Connect { op: "x", detail: String::new() }, true),
            (GuanceError::BadResponse { op: "x", detail: String::new() }, true),
            (GuanceError::Config(String::new()), false),
        ] {
            assert_eq!(e.is_retryable(), want, "{e:?}");
        }
        assert!(retryable_status(StatusCode::BAD_GATEWAY));
        assert!(!retryable_status(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn bodies_serialize_with_guance_field_names() {
        let spec = CheckerSpec {
            ref_key: "cti-0190".into(),
            title: "prod".into(),
            ref_func_info: RefFuncInfo {
                func_id: "cloudtrail_inspector.run".into(),
                description: "d".into(),
                definition: "def".into(),
                category: "bot_obs".into(),
                args: vec!["configs".into()],
                kwargs: serde_json::json!({"configs": "a\nb"}),
            },
            alert_policy_uuids: vec!["altpl_1".into()],
            is_disabled: true,
        };
        let create = serde_json::to_value(CreateBody {
            ref_key: &spec.ref_key,
            title: &spec.title,
            ref_func_info: &spec.ref_func_info,
            alert_policy_uuids: &spec.alert_policy_uuids,
            is_disabled: spec.is_disabled,
        })
        .unwrap();
        assert_eq!(
            create,
            serde_json::json!({
                "refKey": "cti-0190",
                "title": "prod",
                "refFuncInfo": {
                    "funcId": "cloudtrail_inspector.run",
                    "description": "d",
                    "definition": "def",
                    "category": "bot_obs",
                    "args": ["configs"],
                    "kwargs": {"configs": "a\nb"}
                },
                "alertPolicyUUIDs": ["altpl_1"],
                "isDisabled": true
            })
        );
    }

    #[test]
    fn records_are_read_in_every_documented_shape() {
        let rec = |v: Value| CheckerRecord::from_value("x", v).unwrap();
        // The list endpoint's example: `jsonScript` with `callKwargs` and the argument
        // defaults, `alertPolicyInfos`, `status`, `updateAt` in seconds.
        let listed = rec(serde_json::json!({
            "uuid": "rul_1", "refKey": "k", "status": 0, "updateAt": 1710760853,
            "alertPolicyInfos": [{"name": "a", "uuid": "altpl_a"}, {"name": "b", "uuid": "altpl_b"}],
            "jsonScript": {"callKwargs": {}, "refFuncInfo": {"kwargs": {"configs": {"default": "g1\ng2"}}}}
        }));
        assert_eq!(listed.configs().as_deref(), Some("g1\ng2"));
        assert_eq!(listed.alert_policy_uuids(), Some(vec!["altpl_a".to_string(), "altpl_b".to_string()]));
        assert_eq!(listed.is_disabled(), Some(false));
        assert_eq!(listed.update_at().unwrap().timestamp(), 1710760853);
        // An argument set in studio wins over the default; a disabled checker.
        let edited = rec(serde_json::json!({
            "uuid": "rul_1", "status": 2, "updateAt": 1710760900123i64,
            "jsonScript": {"callKwargs": {"configs": "edited"}, "refFuncInfo": {"kwargs": {"configs": {"default": "g1"}}}}
        }));
        assert_eq!(edited.configs().as_deref(), Some("edited"));
        assert_eq!(edited.is_disabled(), Some(true));
        assert_eq!(edited.update_at().unwrap().timestamp(), 1710760900, "milliseconds are recognised");
        assert_eq!(edited.alert_policy_uuids(), None, "not in the answer: unknown, not empty");
        // The create payload's shape, read back as it was sent.
        let created = rec(serde_json::json!({
            "refKey": "k", "isDisabled": true, "status": 0, "alertPolicyUUIDs": ["altpl_x"],
            "refFuncInfo": {"kwargs": {"configs": "plain"}}
        }));
        assert_eq!(created.configs().as_deref(), Some("plain"));
        assert_eq!(created.is_disabled(), Some(true), "isDisabled wins over status");
        assert_eq!(created.alert_policy_uuids(), Some(vec!["altpl_x".to_string()]));
        let bare = rec(serde_json::json!({"uuid": "rul_2"}));
        assert_eq!((bare.configs(), bare.is_disabled(), bare.update_at()), (None, None, None));
    }

    #[test]
    fn modify_sends_only_the_parts_asked_for() {
        let info = RefFuncInfo {
            func_id: "f".into(),
            description: "d".into(),
            definition: "def".into(),
            category: "c".into(),
            args: vec![],
            kwargs: serde_json::json!({}),
        };
        let body = ModifyBody { ref_key: "k", title: None, ref_func_info: None, alert_policy_uuids: Some(&[]) };
        assert_eq!(serde_json::to_value(&body).unwrap(), serde_json::json!({"refKey": "k", "alertPolicyUUIDs": []}));
        let body = ModifyBody {
            ref_key: "k",
            title: Some("t"),
            ref_func_info: Some(ModifyFuncInfo {
                description: &info.description,
                definition: &info.definition,
                category: &info.category,
                args: &info.args,
                kwargs: &info.kwargs,
            }),
            alert_policy_uuids: None,
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["title"], "t");
        assert!(v.get("alertPolicyUUIDs").is_none() && v["refFuncInfo"].get("funcId").is_none());
    }

    #[test]
    fn client_debug_and_config_errors_hide_credentials() {
        let settings = GuanceSettings {
            node: GuanceNode::Private,
            openapi_url: None,
            openway_url: None,
            api_key_id: Secret::new("wsak_secret_id"),
            api_key: Secret::new("secret_key_value"),
            workspace_token: Some(Secret::new("tkn_secret_token")),
        };
        let err = GuanceClient::new(&settings, ClientOptions::default()).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("guance_openapi_url"), "{err}");
        let settings = GuanceSettings { node: GuanceNode::Default, ..settings };
        let client = GuanceClient::new(&settings, ClientOptions::default()).unwrap();
        let d = format!("{client:?}");
        for s in ["wsak_secret_id", "secret_key_value", "tkn_secret_token"] {
            assert!(!d.contains(s), "{d}");
            assert!(!client.scrub(&format!("echo {s} back")).contains(s));
        }
    }
}
