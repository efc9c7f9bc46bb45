//! A fake S3 server on 127.0.0.1 speaking S3's REST/XML protocol, path-style, so tests can
//! drive the real `aws-sdk-s3` client against seeded buckets and injected faults.
//!
//! Wire protocol: `GET /<bucket>?list-type=2` is ListObjectsV2 (`prefix`, `delimiter`,
//! `max-keys`, `continuation-token`, `start-after`; `encoding-type=url` encodes keys and
//! prefixes in the answer); `GET /<bucket>/<key>` is GetObject, `HEAD /<bucket>/<key>`
//! HeadObject. Keys come percent-decoded from the path. A page holds at most `max-keys`
//! entries (objects and common prefixes alike, capped at [`FakeS3Config::max_keys`], AWS's
//! 1,000); `NextContinuationToken` names the last entry returned, so paging resumes exactly.
//! Errors are S3's `<Error><Code>…</Code><Message>…</Message></Error>` with its status:
//! 404 `NoSuchBucket` and `NoSuchKey`, 403 `AccessDenied`, 503 `SlowDown`. A request without
//! an `Authorization` header gets 403 `AccessDenied`, as an anonymous call to a private
//! bucket does.
//!
//! Faults a test can inject: any operation's next calls fail ([`FakeS3::fail_next`]), a bucket
//! answers every call with one error ([`FakeS3::fail_bucket`]), and an object's body ends
//! before its `Content-Length` ([`FakeS3::cut_body`]: the connection is dropped mid-body, as
//! a broken transfer does).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

/// Knobs; `Default` matches AWS.
#[derive(Debug, Clone)]
pub struct FakeS3Config {
    /// Entries per ListObjectsV2 page at most (AWS: 1,000).
    pub max_keys: usize,
    /// Delay added to every answer.
    pub latency: Duration,
}

impl Default for FakeS3Config {
    fn default() -> Self {
        FakeS3Config { max_keys: 1000, latency: Duration::ZERO }
    }
}

/// A failure to inject, as S3 answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Fault {
    /// 503 `SlowDown` "Please reduce your request rate.".
    SlowDown,
    /// 403 `AccessDenied` "Access Denied".
    AccessDenied,
    /// 500 `InternalError`.
    InternalError,
    /// 404 `NoSuchKey`: the object was deleted after it was listed.
    NoSuchKey,
}

impl S3Fault {
    fn answer(&self) -> (u16, &'static str, &'static str) {
        match self {
            S3Fault::SlowDown => (503, "SlowDown", "Please reduce your request rate."),
            S3Fault::AccessDenied => (403, "AccessDenied", "Access Denied"),
            S3Fault::InternalError => (500, "InternalError", "We encountered an internal error. Please try again."),
            S3Fault::NoSuchKey => (404, "NoSuchKey", "The specified key does not exist."),
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Call {
    /// `ListObjectsV2`, `GetObject`, `HeadObject` or what was not understood.
    pub operation: String,
    pub bucket: String,
    /// The key of a GetObject, the prefix of a listing.
    pub target: String,
    /// The status sent; 206 marks a GetObject whose body was cut short (200 on the wire).
    pub status: u16,
    pub response_bytes: usize,
}

struct Object {
    body: Arc<Vec<u8>>,
    last_modified: DateTime<Utc>,
    /// Bytes sent before the connection is dropped, and for how many more GetObjects.
    cut: Option<(usize, usize)>,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<String, BTreeMap<String, Object>>,
    bucket_faults: HashMap<String, S3Fault>,
    next_faults: Vec<(String, usize, S3Fault)>,
    calls: Vec<S3Call>,
}

struct Shared {
    cfg: FakeS3Config,
    addr: SocketAddr,
    state: Mutex<State>,
}

/// The fake server; clones share it and it stops when the last is dropped.
#[derive(Clone)]
pub struct FakeS3 {
    shared: Arc<Shared>,
    _stop: Arc<Stop>,
}

struct Stop(Mutex<Option<oneshot::Sender<()>>>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.0).take() {
            let _ = tx.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeS3 {
    pub async fn start() -> Self {
        Self::start_with(FakeS3Config::default()).await
    }

    pub async fn start_with(cfg: FakeS3Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared { cfg, addr, state: Mutex::new(State::default()) });
        let app = Router::new()
            .route("/{bucket}", get(bucket_get))
            .route("/{bucket}/", get(bucket_get))
            .route("/{bucket}/{*key}", get(object_get).head(object_get))
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        FakeS3 { shared, _stop: Arc::new(Stop(Mutex::new(Some(tx)))) }
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.state().buckets.entry(bucket.to_string()).or_default();
    }

    /// Stores an object (creating the bucket), delivered at `last_modified`.
    pub fn put(&self, bucket: &str, key: &str, body: Vec<u8>, last_modified: DateTime<Utc>) {
        let object = Object { body: Arc::new(body), last_modified, cut: None };
        self.state().buckets.entry(bucket.to_string()).or_default().insert(key.to_string(), object);
    }

    /// Stores CloudTrail's delivery file of `records`: `{"Records": [...]}`, gzipped.
    pub fn put_trail_file(&self, bucket: &str, key: &str, records: &[serde_json::Value], at: DateTime<Utc>) {
        self.put(bucket, key, gzip_records(records), at);
    }

    /// The next `times` GetObjects of `key` send only `bytes` of its body, then drop the
    /// connection.
    pub fn cut_body(&self, bucket: &str, key: &str, bytes: usize, times: usize) {
        if let Some(o) = self.state().buckets.get_mut(bucket).and_then(|b| b.get_mut(key)) {
            o.cut = Some((bytes, times));
        }
    }

    /// The next `times` calls of `operation` (`"*"`: any) fail with `fault`.
    pub fn fail_next(&self, operation: &str, times: usize, fault: S3Fault) {
        self.state().next_faults.push((operation.to_string(), times, fault));
    }

    /// Every call on `bucket` fails with `fault` until [`FakeS3::clear_faults`].
    pub fn fail_bucket(&self, bucket: &str, fault: S3Fault) {
        self.state().bucket_faults.insert(bucket.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        let mut st = self.state();
        st.bucket_faults.clear();
        st.next_faults.clear();
    }

    pub fn calls(&self) -> Vec<S3Call> {
        self.state().calls.clone()
    }

    pub fn call_count(&self, operation: &str) -> usize {
        self.state().calls.iter().filter(|c| c.operation == operation).count()
    }

    /// GetObjects of `key` answered 200 so far.
    pub fn gets_of(&self, key: &str) -> usize {
        self.state().calls.iter().filter(|c| c.operation == "GetObject" && c.target == key && c.status == 200).count()
    }
}

/// `{"Records": [...]}`, gzipped, as CloudTrail writes a delivery file.
pub fn gzip_records(records: &[serde_json::Value]) -> Vec<u8> {
    let doc = serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&doc).unwrap();
    gz.finish().unwrap()
}

/// CloudTrail's key for a delivery file of `account` and `region` stamped `at`.
pub fn trail_key(prefix: &str, org: Option<&str>, account: &str, region: &str, at: DateTime<Utc>, n: u32) -> String {
    let org = org.map(|o| format!("{o}/")).unwrap_or_default();
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    format!(
        "{prefix}AWSLogs/{org}{account}/CloudTrail/{region}/{}/{account}_CloudTrail_{region}_{}_{n:04}abcdEFGH.json.gz",
        at.format("%Y/%m/%d"),
        at.format("%Y%m%dT%H%MZ"),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn error(status: u16, code: &str, message: &str, resource: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><Resource>{}</Resource>\
         <RequestId>FAKE0000REQUEST</RequestId><HostId>fake-s3</HostId></Error>",
        xml_escape(message),
        xml_escape(resource)
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .header("x-amz-request-id", "FAKE0000REQUEST")
        .body(Body::from(body))
        .unwrap()
}

impl Shared {
    /// The fault this call gets, if any, and the call recorded.
    fn fault(&self, st: &mut State, operation: &str, bucket: &str) -> Option<S3Fault> {
        if let Some(f) = st.bucket_faults.get(bucket) {
            return Some(f.clone());
        }
        let i = st.next_faults.iter().position(|(op, n, _)| *n > 0 && (op == operation || op == "*"))?;
        st.next_faults[i].1 -= 1;
        Some(st.next_faults[i].2.clone())
    }

    fn record(&self, operation: &str, bucket: &str, target: &str, status: u16, bytes: usize) {
        lock(&self.state).calls.push(S3Call {
            operation: operation.into(),
            bucket: bucket.into(),
            target: target.into(),
            status,
            response_bytes: bytes,
        });
    }

    /// Checks what every call must pass: a signature, and no injected fault.
    fn admit(&self, headers: &HeaderMap, operation: &str, bucket: &str, target: &str) -> Result<(), Box<Response>> {
        let refused = if !headers.contains_key(header::AUTHORIZATION) {
            Some(S3Fault::AccessDenied)
        } else {
            self.fault(&mut lock(&self.state), operation, bucket)
        };
        match refused {
            None => Ok(()),
            Some(f) => {
                let (status, code, message) = f.answer();
                self.record(operation, bucket, target, status, 0);
                Err(Box::new(error(status, code, message, &format!("/{bucket}"))))
            }
        }
    }
}

async fn bucket_get(
    AxState(shared): AxState<Arc<Shared>>,
    Path(bucket): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(shared.cfg.latency).await;
    if q.get("list-type").map(String::as_str) != Some("2") {
        shared.record("ListObjects", &bucket, "", 501, 0);
        return error(501, "NotImplemented", "Only ListObjectsV2 is implemented", &format!("/{bucket}"));
    }
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    if let Err(r) = shared.admit(&headers, "ListObjectsV2", &bucket, &prefix) {
        return *r;
    }
    let delimiter = q.get("delimiter").cloned().filter(|d| !d.is_empty());
    let max_keys = q.get("max-keys").and_then(|m| m.parse::<usize>().ok()).unwrap_or(1000).min(shared.cfg.max_keys);
    let token = q.get("continuation-token").cloned();
    let after = match &token {
        Some(t) => match hex::decode(t).ok().and_then(|b| String::from_utf8(b).ok()) {
            Some(a) => Some(a),
            None => {
                shared.record("ListObjectsV2", &bucket, &prefix, 400, 0);
                return error(400, "InvalidArgument", "The continuation token provided is incorrect", &bucket);
            }
        },
        None => q.get("start-after").cloned(),
    };
    let encode = q.get("encoding-type").map(String::as_str) == Some("url");
    let enc = |s: &str| if encode { url_encode(s) } else { xml_escape(s) };

    let st = lock(&shared.state);
    let Some(objects) = st.buckets.get(&bucket) else {
        drop(st);
        shared.record("ListObjectsV2", &bucket, &prefix, 404, 0);
        return error(404, "NoSuchBucket", "The specified bucket does not exist", &bucket);
    };
    // Entries in key order: objects, and common prefixes standing for all keys under them.
    let mut entries: Vec<(String, Option<&Object>)> = Vec::new();
    let mut truncated = false;
    for (key, o) in objects.range(prefix.clone()..) {
        if !key.starts_with(&prefix) {
            break;
        }
        let entry = match &delimiter {
            Some(d) => match key[prefix.len()..].find(d.as_str()) {
                Some(i) => (key[..prefix.len() + i + d.len()].to_string(), None),
                None => (key.clone(), Some(o)),
            },
            None => (key.clone(), Some(o)),
        };
        if after
            .as_ref()
            .is_some_and(|a| entry.0.as_str() <= a.as_str() || (entry.1.is_none() && a.starts_with(&entry.0)))
        {
            continue;
        }
        if entries.last().is_some_and(|(last, o)| o.is_none() && *last == entry.0) {
            continue;
        }
        if entries.len() == max_keys {
            truncated = true;
            break;
        }
        entries.push(entry);
    }
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    xml += &format!("<Name>{}</Name><Prefix>{}</Prefix>", xml_escape(&bucket), enc(&prefix));
    xml += &format!("<KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys>", entries.len());
    if let Some(d) = &delimiter {
        xml += &format!("<Delimiter>{}</Delimiter>", enc(d));
    }
    if encode {
        xml += "<EncodingType>url</EncodingType>";
    }
    xml += &format!("<IsTruncated>{truncated}</IsTruncated>");
    if let Some(t) = &token {
        xml += &format!("<ContinuationToken>{}</ContinuationToken>", xml_escape(t));
    }
    if truncated {
        let last = &entries.last().expect("a truncated page holds entries").0;
        xml += &format!("<NextContinuationToken>{}</NextContinuationToken>", hex::encode(last));
    }
    for (key, o) in &entries {
        match o {
            Some(o) => {
                xml += &format!(
                    "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{:x}&quot;</ETag>\
                     <Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                    enc(key),
                    o.last_modified.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    o.body.len(),
                    o.body.len()
                );
            }
            None => xml += &format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", enc(key)),
        }
    }
    xml += "</ListBucketResult>";
    drop(st);
    shared.record("ListObjectsV2", &bucket, &prefix, 200, xml.len());
    Response::builder().status(200).header(header::CONTENT_TYPE, "application/xml").body(Body::from(xml)).unwrap()
}

async fn object_get(
    AxState(shared): AxState<Arc<Shared>>,
    Path((bucket, key)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    tokio::time::sleep(shared.cfg.latency).await;
    let operation = if method == Method::HEAD { "HeadObject" } else { "GetObject" };
    if let Err(r) = shared.admit(&headers, operation, &bucket, &key) {
        return *r;
    }
    let found = {
        let mut st = lock(&shared.state);
        match st.buckets.get_mut(&bucket) {
            None => Err((404, "NoSuchBucket", "The specified bucket does not exist")),
            Some(b) => match b.get_mut(&key) {
                None => Err((404, "NoSuchKey", "The specified key does not exist.")),
                Some(o) => {
                    let cut = match &mut o.cut {
                        Some((bytes, times)) if *times > 0 && operation == "GetObject" => {
                            *times -= 1;
                            Some(*bytes)
                        }
                        _ => None,
                    };
                    Ok((o.body.clone(), o.last_modified, cut))
                }
            },
        }
    };
    let (body, modified, cut) = match found {
        Ok(f) => f,
        Err((status, code, message)) => {
            shared.record(operation, &bucket, &key, status, 0);
            return error(status, code, message, &format!("/{bucket}/{key}"));
        }
    };
    let builder = Response::builder()
        .status(200)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::LAST_MODIFIED, modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .header(header::ETAG, format!("\"{:x}\"", body.len()));
    if operation == "HeadObject" {
        shared.record(operation, &bucket, &key, 200, 0);
        return builder.body(Body::empty()).unwrap();
    }
    match cut {
        None => {
            shared.record(operation, &bucket, &key, 200, body.len());
            builder.body(Body::from(body.as_ref().clone())).unwrap()
        }
        Some(n) => {
            // The promised length, then fewer bytes and a dropped connection.
            shared.record(operation, &bucket, &key, 206, n);
            let part = axum::body::Bytes::copy_from_slice(&body[..n.min(body.len())]);
            // The head and the first bytes go out before the connection drops.
            let stream = futures::stream::unfold(Some(part), |part| async move {
                match part {
                    Some(p) => Some((Ok::<_, std::io::Error>(p), None)),
                    None => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut short")), None))
                    }
                }
            });
            builder.body(Body::from_stream(stream)).unwrap()
        }
    }
}
