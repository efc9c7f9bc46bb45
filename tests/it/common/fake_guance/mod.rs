//! A fake Guance on 127.0.0.1: the OpenAPI endpoints this service calls and the OpenWay
//! keyevent write, with a strict line-protocol parser ([`lineproto`]) and injectable failures.
//!
//! OpenAPI (`DF-API-KEY` must equal [`API_KEY_ID`], else 401): `GET /api/v1/workspace/get`
//! (`content.token`), `GET /api/v1/workspace/accesskey/list`, and
//! `/api/v1/self_built_checker/{create,modify,get,list,enable,disable,delete}`. Answers use
//! Guance's envelope `{code, content, errorCode, message, success, traceId}`. Bodies are
//! checked against the documented fields: unknown fields, missing required ones and wrong
//! types are 400s, so a renamed field in the client fails here. Unknown `refKey`/`ruleUUID`
//! is a 404 with `errorCode` `Checker.NotFound`; a second create with the same `refKey` is a
//! 400 `Checker.RefKeyExists`.
//!
//! Checkers are held as state, in the shape of the documented list answer: `jsonScript`
//! (`title`, `refFuncInfo`, `callKwargs`), `alertPolicyInfos`, `status` (0 enabled, 2
//! disabled), `createAt`/`updateAt` in Unix seconds, bumped by every change. Guance studio is
//! played by [`FakeGuance::edit_in_studio`] (an edit of `configs`, the alert policies or the
//! switch, stored where studio stores call arguments) and [`FakeGuance::delete_in_studio`].
//!
//! OpenWay: `POST /v1/write/keyevent?token=…`. A wrong or missing token is a 401
//! `{"error_code": "dataway.tokenNotFound", "message": "token not found: <token>"}` (the
//! message echoes the token, so tests can check the client scrubs it). A body that does not
//! parse, or has a `.` in a key (DataKit would rename it), is a 400
//! `{"error_code": "datakit.invalidLinePoint", …}` and nothing of it is stored: unlike DataKit,
//! which keeps the good lines, so a test never passes on half a write.
//!
//! Failures: [`FakeGuance::fail_next`] (a status for the next N calls of a side),
//! [`FakeGuance::down_for`] (the port refuses connections for a while),
//! [`FakeGuance::set_latency`]. Every answer carries `Connection: close`, so "down" really
//! means refused connections rather than a pooled connection that keeps working.

#![allow(dead_code)]

pub mod lineproto;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use self::lineproto::ParsedPoint;

/// The API key id the fake accepts in `DF-API-KEY`.
pub const API_KEY_ID: &str = "wsak_fake0123456789";
/// The API key paired with [`API_KEY_ID`] in `accesskey/list`.
pub const API_KEY: &str = "fake-api-key-secret-value";
/// The workspace token OpenWay accepts.
pub const WORKSPACE_TOKEN: &str = "tkn_fake0123456789abcdef";

/// Which half of Guance a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    OpenApi,
    OpenWay,
    Any,
}

/// An injected failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// This status with Guance's error body (`errorCode` `Fake.Injected`).
    Status(u16),
    /// Sleep this long, then answer normally.
    Hang(Duration),
}

/// An edit made in Guance studio ([`FakeGuance::edit_in_studio`]); unset parts stay.
#[derive(Debug, Clone, Default)]
pub struct StudioEdit {
    /// The `configs` argument, one log group per line.
    pub configs: Option<String>,
    pub alert_policies: Option<Vec<String>>,
    pub disabled: Option<bool>,
    /// The `updateAt` the edit leaves; now when unset.
    pub update_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Now, as Guance's record times are: Unix seconds.
pub(crate) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// The JSON body of an OpenAPI call.
    pub body: Option<Value>,
}

#[derive(Clone)]
pub struct FakeGuance {
    shared: Arc<Shared>,
}

struct Shared {
    addr: SocketAddr,
    state: Mutex<State>,
    server: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    checkers: BTreeMap<String, Value>,
    events: Vec<ParsedPoint>,
    bodies: Vec<String>,
    requests: Vec<Request>,
    faults: Vec<(Side, usize, Fault)>,
    latency: Duration,
    down_until: Option<Instant>,
    token: String,
    next_rule: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.server).take() {
            h.abort();
        }
    }
}

impl FakeGuance {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            addr,
            state: Mutex::new(State {
                checkers: BTreeMap::new(),
                events: Vec::new(),
                bodies: Vec::new(),
                requests: Vec::new(),
                faults: Vec::new(),
                latency: Duration::ZERO,
                down_until: None,
                token: WORKSPACE_TOKEN.to_owned(),
                next_rule: 1,
            }),
            server: Mutex::new(None),
        });
        let handle = server::spawn(Arc::downgrade(&shared), listener);
        *lock(&shared.server) = Some(handle);
        FakeGuance { shared }
    }

    /// Base URL for both the OpenAPI and the OpenWay side.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Points accepted by `/v1/write/keyevent`, in order.
    pub fn events(&self) -> Vec<ParsedPoint> {
        self.state().events.clone()
    }

    /// Raw bodies of accepted writes.
    pub fn bodies(&self) -> Vec<String> {
        self.state().bodies.clone()
    }

    /// Registered inspections by `refKey`.
    pub fn checkers(&self) -> BTreeMap<String, Value> {
        self.state().checkers.clone()
    }

    /// Edits a checker as a user does in Guance studio. Panics on an unknown `refKey`.
    pub fn edit_in_studio(&self, ref_key: &str, edit: StudioEdit) {
        let mut st = self.state();
        let rec = st.checkers.get_mut(ref_key).unwrap_or_else(|| panic!("no checker {ref_key}"));
        if let Some(c) = edit.configs {
            rec["jsonScript"]["callKwargs"]["configs"] = Value::String(c);
        }
        if let Some(p) = edit.alert_policies {
            rec["alertPolicyInfos"] = server::policy_infos(&p);
        }
        if let Some(d) = edit.disabled {
            rec["status"] = serde_json::json!(if d { 2 } else { 0 });
        }
        rec["updateAt"] = serde_json::json!(edit.update_at.map_or_else(now_secs, |t| t.timestamp()));
    }

    /// Deletes a checker as a user does in Guance studio.
    pub fn delete_in_studio(&self, ref_key: &str) {
        self.state().checkers.remove(ref_key);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Requests to `path`, whatever their answer.
    pub fn count(&self, path: &str) -> usize {
        self.state().requests.iter().filter(|r| r.path == path).count()
    }

    /// The next `times` requests to `side` get `fault`; rules apply in the order added.
    pub fn fail_next(&self, side: Side, times: usize, fault: Fault) {
        self.state().faults.push((side, times, fault));
    }

    /// Delay added to every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Changes the token OpenWay accepts (the old one becomes "wrong").
    pub fn set_token(&self, token: &str) {
        self.state().token = token.to_owned();
    }

    /// Stops listening now (connections are refused) and listens again on the same port
    /// after `duration`.
    pub async fn down_for(&self, duration: Duration) {
        let handle = lock(&self.shared.server).take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
        self.state().down_until = Some(Instant::now() + duration);
        let weak = Arc::downgrade(&self.shared);
        let addr = self.shared.addr;
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            loop {
                let Some(shared) = weak.upgrade() else { return };
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(listener) => {
                        let h = server::spawn(Arc::downgrade(&shared), listener);
                        *lock(&shared.server) = Some(h);
                        lock(&shared.state).down_until = None;
                        return;
                    }
                    Err(_) => {
                        drop(shared);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }

    /// Whether the fake is listening again after [`FakeGuance::down_for`].
    pub fn is_up(&self) -> bool {
        self.state().down_until.is_none()
    }

    /// Waits until the fake listens again.
    pub async fn wait_up(&self) {
        while !self.is_up() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
