//! A deterministic generator of CloudTrail records, for benchmarks and volume tests.
//!
//! The public sample sets (a copy in `tests/data/cloudtrail`, for the tests) are real but small
//! (3,663 records), and volume cannot come from copies of them. So the generator carries a
//! compact model written in code ([`model`]): the API mix, the error-code mix (about one record
//! in ten is an error, as in the invictus-ir hour), the error-message forms with their variable
//! parts (ARNs, resource ids, encoded authorization messages, account numbers), failed console
//! sign-ins, and the record layout and field sets CloudTrail writes. [`calibrate`] can reweight
//! the model from the real files at run time when they are present.
//!
//! Records are produced one at a time from a seeded PRNG of our own (SplitMix64), so a seed
//! gives the same records on every platform and every version of every dependency, and 10^7
//! records never need to be in memory at once. [`files`] writes them the way CloudTrail
//! delivers them to S3, or as JSON lines.
//!
//! The number of distinct error clusters is bounded by the model and the configuration
//! (accounts × regions × error shapes, plus one template per user name for the few messages
//! that name a user), not by the number of records.

pub mod calibrate;
pub mod files;
pub mod model;

use chrono::{DateTime, TimeZone, Utc};

use model::{APIS, ERRORS, Ph, Piece, REGIONS, SERVICES, USER_AGENTS, USERS, WORDS};

pub use calibrate::{Calibration, calibrate_from_dir};
pub use files::{FilesSummary, OrgTrail, write_cloudtrail_files, write_jsonl, write_org_trail};

/// The public sample records for calibration: `CARGO_MANIFEST_DIR/../shared/data/cloudtrail`
/// beside the checkout, else the directory named by `CLOUDTRAIL_DATA_DIR`; None when neither
/// exists. Tests read their own copy, `tests/data/cloudtrail`, instead.
pub fn sample_data_dir() -> Option<std::path::PathBuf> {
    let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cloudtrail");
    if beside.is_dir() {
        return Some(beside);
    }
    std::env::var_os("CLOUDTRAIL_DATA_DIR").map(std::path::PathBuf::from).filter(|p| p.is_dir())
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub seed: u64,
    /// Distinct AWS accounts.
    pub accounts: usize,
    /// Regions used, taken from the front of [`model::REGIONS`] (at most its length).
    pub regions: usize,
    /// Principals (users, roles, services, root) per account.
    pub principals: usize,
    /// Share of records that are errors (error code or failed console sign-in).
    pub error_ratio: f64,
    /// Share of the errors that are failed console sign-ins.
    pub console_failure_share: f64,
    /// Share of the non-errors that are successful console sign-ins: they contain
    /// `ConsoleLogin` and so pass the engine's prefilter without being errors.
    pub console_success_ratio: f64,
    /// eventTime of the first record.
    pub start: DateTime<Utc>,
    /// Records per second of event time; sets how long a span a run covers.
    pub records_per_second: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            accounts: 3,
            regions: 3,
            principals: 12,
            error_ratio: 0.10,
            console_failure_share: 0.02,
            console_success_ratio: 0.002,
            start: Utc.with_ymd_and_hms(2023, 7, 10, 11, 0, 0).unwrap(),
            records_per_second: 300.0,
        }
    }
}

/// Relative weights of the model's tables; [`calibrate`] derives them from real files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthModel {
    /// One per [`model::APIS`] entry.
    pub api_weights: Vec<u32>,
    /// One per [`model::ERRORS`] entry.
    pub error_weights: Vec<u32>,
}

impl SynthModel {
    /// The weights written in [`model`].
    pub fn builtin() -> Self {
        SynthModel {
            api_weights: APIS.iter().map(|a| a.weight).collect(),
            error_weights: ERRORS.iter().map(|e| e.weight).collect(),
        }
    }
}

impl Default for SynthModel {
    fn default() -> Self {
        Self::builtin()
    }
}

/// SplitMix64: tiny, fast, and fixed forever, unlike `rand`'s `StdRng` whose stream may change
/// between versions. Not for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// Cumulative weights for picking an index in proportion to its weight.
#[derive(Debug, Clone)]
struct Weighted {
    cum: Vec<u64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut total = 0;
        let cum = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect::<Vec<_>>();
        assert!(total > 0, "all weights are zero");
        Weighted { cum }
    }

    fn pick(&self, rng: &mut SplitMix64) -> usize {
        let x = rng.below(*self.cum.last().unwrap_or(&1));
        self.cum.partition_point(|&c| c <= x)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    IamUser,
    AssumedRole,
    AwsService,
    Root,
}

#[derive(Debug, Clone)]
struct Principal {
    kind: Kind,
    /// User name, role name, or service name.
    name: String,
    /// Role session name (assumed roles).
    session: String,
    arn: String,
    principal_id: String,
    keys: Vec<String>,
    ips: Vec<String>,
    user_agent: usize,
    /// `invokedBy` on calls a service makes on the principal's behalf.
    invoked_by: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Account {
    id: String,
    principals: Vec<Principal>,
    pick: Weighted,
}

/// Where a generated record belongs: the S3 layout groups files by account and region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub account: usize,
    pub region: usize,
    /// eventTime, seconds since the Unix epoch.
    pub time: i64,
    pub is_error: bool,
}

/// The record generator. Also an iterator of records as JSON strings, one line each.
#[derive(Debug, Clone)]
pub struct Synth {
    cfg: SynthConfig,
    rng: SplitMix64,
    accounts: Vec<Account>,
    apis: Vec<Vec<Piece>>,
    api_resp: Vec<Vec<Piece>>,
    api_res: Vec<Vec<Piece>>,
    err_msgs: Vec<Vec<Piece>>,
    /// Index into [`APIS`] of each error shape's API.
    err_api: Vec<usize>,
    api_pick: Weighted,
    err_pick: Weighted,
    ua_pick: Weighted,
    start_ms: i64,
    n: u64,
}

/// Per-record values that placeholders refer to.
struct Ctx<'a> {
    acct: &'a str,
    region: &'a str,
    principal: &'a Principal,
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn push_random(out: &mut Vec<u8>, rng: &mut SplitMix64, alphabet: &[u8], n: usize) {
    out.extend((0..n).map(|_| alphabet[rng.index(alphabet.len())]));
}

fn random_string(rng: &mut SplitMix64, alphabet: &[u8], n: usize) -> String {
    let mut v = Vec::with_capacity(n);
    push_random(&mut v, rng, alphabet, n);
    String::from_utf8(v).unwrap_or_default()
}

fn push_digits(out: &mut Vec<u8>, rng: &mut SplitMix64, n: usize) {
    out.extend((0..n).map(|_| b'0' + rng.below(10) as u8));
}

fn push_uuid(out: &mut Vec<u8>, rng: &mut SplitMix64, upper: bool) {
    let hex: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { HEX };
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let nibbles = (0..16).map(|i| (a >> (i * 4)) & 15).chain((0..16).map(|i| (b >> (i * 4)) & 15));
    for (i, nib) in nibbles.enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push(b'-');
        }
        out.push(hex[nib as usize]);
    }
}

fn push_two(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// `YYYY-MM-DDTHH:MM:SSZ` without going through a formatter: this runs once per record.
fn push_time(out: &mut Vec<u8>, secs: i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    push_two(out, y / 100);
    push_two(out, y % 100);
    out.push(b'-');
    push_two(out, m);
    out.push(b'-');
    push_two(out, d);
    out.push(b'T');
    push_two(out, rem / 3600);
    out.push(b':');
    push_two(out, rem / 60 % 60);
    out.push(b':');
    push_two(out, rem % 60);
    out.push(b'Z');
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn compile_all(f: impl Fn(&model::ApiShape) -> &'static str) -> Vec<Vec<Piece>> {
    APIS.iter().map(|a| Piece::compile(f(a))).collect()
}

impl Synth {
    pub fn new(cfg: SynthConfig) -> Self {
        Self::with_model(cfg, &SynthModel::builtin())
    }

    /// A generator whose API and error mix follow `model` (e.g. one from [`calibrate`]).
    pub fn with_model(cfg: SynthConfig, model: &SynthModel) -> Self {
        let mut rng = SplitMix64::new(cfg.seed);
        let accounts = (0..cfg.accounts.max(1)).map(|_| Self::account(&cfg, &mut rng)).collect();
        let err_api = ERRORS
            .iter()
            .map(|e| {
                APIS.iter()
                    .position(|a| a.source == e.source && a.name == e.name)
                    .unwrap_or_else(|| panic!("error shape on unknown API {}", e.name))
            })
            .collect();
        Synth {
            apis: compile_all(|a| a.request),
            api_resp: compile_all(|a| a.response),
            api_res: compile_all(|a| a.resources),
            err_msgs: ERRORS.iter().map(|e| Piece::compile(e.message)).collect(),
            err_api,
            api_pick: Weighted::new(model.api_weights.iter().map(|&w| u64::from(w))),
            err_pick: Weighted::new(model.error_weights.iter().map(|&w| u64::from(w))),
            ua_pick: Weighted::new(USER_AGENTS.iter().map(|&(_, w)| u64::from(w))),
            start_ms: cfg.start.timestamp_millis(),
            accounts,
            rng,
            cfg,
            n: 0,
        }
    }

    fn account(cfg: &SynthConfig, rng: &mut SplitMix64) -> Account {
        let mut id = Vec::with_capacity(12);
        id.push(b'1' + rng.below(9) as u8);
        push_digits(&mut id, rng, 11);
        let id = String::from_utf8(id).unwrap_or_default();
        let mut principals = Vec::new();
        let mut has_root = false;
        for i in 0..cfg.principals.max(1) {
            let r = rng.unit();
            let kind = match r {
                _ if i == 0 => Kind::IamUser,
                r if r < 0.55 => Kind::IamUser,
                r if r < 0.85 => Kind::AssumedRole,
                r if r < 0.95 => Kind::AwsService,
                _ if !has_root => Kind::Root,
                _ => Kind::IamUser,
            };
            has_root |= kind == Kind::Root;
            principals.push(Self::principal(kind, &id, i, rng));
        }
        // Zipf-like: the first principals make most of the calls, as in real accounts.
        let pick = Weighted::new((0..principals.len()).map(|i| 10_000 / (i as u64 + 1)));
        Account { id, principals, pick }
    }

    fn principal(kind: Kind, acct: &str, i: usize, rng: &mut SplitMix64) -> Principal {
        let key = |rng: &mut SplitMix64, prefix: &str| format!("{prefix}{}", random_string(rng, UPPER_DIGITS, 16));
        let ip = |rng: &mut SplitMix64| {
            if rng.unit() < 0.1 {
                format!("2001:db8:{:x}:{:x}::{:x}", rng.below(65_536), rng.below(65_536), rng.below(65_536))
            } else {
                format!("{}.{}.{}.{}", 3 + rng.below(200), rng.below(256), rng.below(256), 1 + rng.below(254))
            }
        };
        let ips = (0..1 + rng.below(3)).map(|_| ip(rng)).collect();
        let user_agent = rng.index(USER_AGENTS.len());
        let invoked_by = (rng.unit() < 0.15).then(|| SERVICES[rng.index(SERVICES.len())]);
        let mut p = Principal {
            kind,
            name: String::new(),
            session: String::new(),
            arn: String::new(),
            principal_id: String::new(),
            keys: Vec::new(),
            ips,
            user_agent,
            invoked_by,
        };
        match kind {
            Kind::IamUser => {
                // Index-suffixed past the list, so names stay distinct in big accounts.
                let base = USERS[i % USERS.len()];
                p.name = if i < USERS.len() { base.to_owned() } else { format!("{base}-{}", WORDS[i % WORDS.len()]) };
                p.arn = format!("arn:aws:iam::{acct}:user/{}", p.name);
                p.principal_id = key(rng, "AIDA");
                p.keys = vec![key(rng, "AKIA"), key(rng, "ASIA"), key(rng, "ASIA")];
            }
            Kind::AssumedRole => {
                p.name = format!("{}-{}-role", WORDS[rng.index(WORDS.len())], WORDS[rng.index(WORDS.len())]);
                p.session = if rng.unit() < 0.5 {
                    format!("aws-go-sdk-{}", 1_688_990_000_000_000_000 + rng.below(1_000_000_000_000))
                } else {
                    USERS[rng.index(USERS.len())].to_owned()
                };
                p.arn = format!("arn:aws:sts::{acct}:assumed-role/{}/{}", p.name, p.session);
                p.principal_id = key(rng, "AROA");
                p.keys = (0..3).map(|_| key(rng, "ASIA")).collect();
            }
            Kind::AwsService => {
                p.name = SERVICES[rng.index(SERVICES.len())].to_owned();
                p.invoked_by = Some(SERVICES[rng.index(SERVICES.len())]);
            }
            Kind::Root => {
                p.name = "root".to_owned();
                p.arn = format!("arn:aws:iam::{acct}:root");
                p.principal_id = acct.to_owned();
                // Real root console activity carries an empty key id.
                p.keys = vec![String::new()];
            }
        }
        p
    }

    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    /// Starts a new stream of records (`stream` mixed into the seed) at `start_ms` with a new
    /// rate, keeping the accounts and principals: the days of a year in parallel, each its
    /// own stream, from the same organization.
    pub fn restart(&mut self, stream: u64, start_ms: i64, records_per_second: f64) {
        self.rng = SplitMix64::new(self.cfg.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.start_ms = start_ms;
        self.cfg.records_per_second = records_per_second;
        self.n = 0;
    }

    /// Records generated so far.
    pub fn generated(&self) -> u64 {
        self.n
    }

    /// The account ids, in the order [`RecordMeta::account`] indexes them.
    pub fn account_ids(&self) -> Vec<&str> {
        self.accounts.iter().map(|a| a.id.as_str()).collect()
    }

    /// The regions in use, in the order [`RecordMeta::region`] indexes them.
    pub fn regions(&self) -> &'static [&'static str] {
        &REGIONS[..self.cfg.regions.clamp(1, REGIONS.len())]
    }

    fn region(&mut self, source: &str) -> usize {
        let n = self.cfg.regions.clamp(1, REGIONS.len());
        // Global services log in us-east-1.
        if n == 1 || matches!(source, "iam.amazonaws.com" | "signin.amazonaws.com" | "organizations.amazonaws.com") {
            return 0;
        }
        if self.rng.unit() < 0.7 { 0 } else { 1 + self.rng.index(n - 1) }
    }

    /// Appends one record (compact JSON, no newline) to `out`.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> RecordMeta {
        let i = self.n;
        self.n += 1;
        let ms = self.start_ms + (i as f64 * 1000.0 / self.cfg.records_per_second.max(1e-9)) as i64;
        let time = ms.div_euclid(1000);
        let account = self.rng.index(self.accounts.len());
        let is_error = self.rng.unit() < self.cfg.error_ratio;
        let console = if is_error {
            self.rng.unit() < self.cfg.console_failure_share
        } else {
            self.rng.unit() < self.cfg.console_success_ratio
        };
        if console {
            let region = 0;
            self.console_login(out, account, time, !is_error);
            return RecordMeta { account, region, time, is_error };
        }
        let mut p = self.accounts[account].pick.pick(&mut self.rng);
        let (api, err) = if is_error {
            // Error messages quote the caller's ARN, so services do not make them here.
            if self.accounts[account].principals[p].kind == Kind::AwsService {
                p = 0;
            }
            let e = self.err_pick.pick(&mut self.rng);
            (self.err_api[e], Some(e))
        } else {
            (self.api_pick.pick(&mut self.rng), None)
        };
        let region = self.region(APIS[api].source);
        self.api_call(out, account, p, region, time, api, err);
        RecordMeta { account, region, time, is_error }
    }

    #[allow(clippy::too_many_arguments)]
    fn api_call(
        &mut self,
        out: &mut Vec<u8>,
        a: usize,
        p: usize,
        region: usize,
        time: i64,
        api: usize,
        err: Option<usize>,
    ) {
        let shape = &APIS[api];
        let accounts = std::mem::take(&mut self.accounts);
        let acct = &accounts[a];
        let pr = &acct.principals[p];
        let ctx = Ctx { acct: &acct.id, region: REGIONS[region], principal: pr };
        let key = if pr.keys.is_empty() { None } else { Some(pr.keys[self.rng.index(pr.keys.len())].as_str()) };
        out.extend_from_slice(br#"{"eventVersion":"1.08","userIdentity":"#);
        self.identity(out, &ctx, key, time);
        out.extend_from_slice(br#","eventTime":""#);
        push_time(out, time);
        for (k, v) in [("eventSource", shape.source), ("eventName", shape.name), ("awsRegion", ctx.region)] {
            out.extend_from_slice(b"\",\"");
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":\"");
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(br#"","sourceIPAddress":""#);
        let internal = pr.invoked_by.is_some() && self.rng.unit() < 0.5;
        match pr.invoked_by {
            Some(svc) if internal || pr.kind == Kind::AwsService => out.extend_from_slice(svc.as_bytes()),
            _ => out.extend_from_slice(pr.ips[self.rng.index(pr.ips.len())].as_bytes()),
        }
        out.extend_from_slice(br#"","userAgent":""#);
        let ua = if internal || pr.kind == Kind::AwsService {
            pr.invoked_by.unwrap_or("AWS Internal")
        } else if self.rng.unit() < 0.8 {
            USER_AGENTS[pr.user_agent].0
        } else {
            USER_AGENTS[self.ua_pick.pick(&mut self.rng)].0
        };
        out.extend_from_slice(ua.as_bytes());
        out.push(b'"');
        if let Some(e) = err {
            out.extend_from_slice(br#","errorCode":""#);
            out.extend_from_slice(ERRORS[e].code.as_bytes());
            out.push(b'"');
            if !ERRORS[e].message.is_empty() {
                out.extend_from_slice(br#","errorMessage":""#);
                let msg = std::mem::take(&mut self.err_msgs[e]);
                self.expand(out, &msg, &ctx);
                self.err_msgs[e] = msg;
                out.push(b'"');
            }
        }
        out.extend_from_slice(br#","requestParameters":"#);
        let req = std::mem::take(&mut self.apis[api]);
        self.expand(out, &req, &ctx);
        self.apis[api] = req;
        out.extend_from_slice(br#","responseElements":"#);
        if err.is_some() {
            out.extend_from_slice(b"null");
        } else {
            let resp = std::mem::take(&mut self.api_resp[api]);
            self.expand(out, &resp, &ctx);
            self.api_resp[api] = resp;
        }
        if shape.source == "s3.amazonaws.com" {
            out.extend_from_slice(
                br#","additionalEventData":{"SignatureVersion":"SigV4","CipherSuite":"ECDHE-RSA-AES128-GCM-SHA256","bytesTransferredIn":0,"AuthenticationMethod":"AuthHeader","x-amz-id-2":""#,
            );
            push_random(out, &mut self.rng, B64, 76);
            out.extend_from_slice(br#"=","bytesTransferredOut":"#);
            out.extend_from_slice((self.rng.below(2000)).to_string().as_bytes());
            out.push(b'}');
        }
        out.extend_from_slice(br#","requestID":""#);
        if shape.source == "s3.amazonaws.com" {
            push_random(out, &mut self.rng, UPPER_DIGITS, 16);
        } else {
            push_uuid(out, &mut self.rng, false);
        }
        out.extend_from_slice(br#"","eventID":""#);
        push_uuid(out, &mut self.rng, false);
        out.extend_from_slice(if shape.read_only { br#"","readOnly":true"# } else { br#"","readOnly":false"# });
        if !shape.resources.is_empty() {
            out.extend_from_slice(br#","resources":"#);
            let res = std::mem::take(&mut self.api_res[api]);
            self.expand(out, &res, &ctx);
            self.api_res[api] = res;
        }
        out.extend_from_slice(br#","eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":""#);
        out.extend_from_slice(ctx.acct.as_bytes());
        out.extend_from_slice(br#"","eventCategory":"Management""#);
        if !internal && pr.kind != Kind::AwsService {
            out.extend_from_slice(br#","tlsDetails":{"tlsVersion":"TLSv1.2","cipherSuite":"ECDHE-RSA-AES128-GCM-SHA256","clientProvidedHostHeader":""#);
            let svc = shape.source.trim_end_matches(".amazonaws.com");
            out.extend_from_slice(svc.as_bytes());
            out.push(b'.');
            out.extend_from_slice(ctx.region.as_bytes());
            out.extend_from_slice(br#".amazonaws.com"}"#);
        }
        if key.is_some_and(|k| k.starts_with("ASIA")) && pr.kind == Kind::IamUser {
            out.extend_from_slice(br#","sessionCredentialFromConsole":"true""#);
        }
        out.push(b'}');
        self.accounts = accounts;
    }

    fn identity(&mut self, out: &mut Vec<u8>, ctx: &Ctx, key: Option<&str>, time: i64) {
        let p = ctx.principal;
        let field = |out: &mut Vec<u8>, k: &str, v: &str| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":\"");
            out.extend_from_slice(v.as_bytes());
            out.push(b'"');
        };
        let kind = match p.kind {
            Kind::IamUser => "IAMUser",
            Kind::AssumedRole => "AssumedRole",
            Kind::AwsService => "AWSService",
            Kind::Root => "Root",
        };
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(kind.as_bytes());
        out.push(b'"');
        if p.kind == Kind::AwsService {
            field(out, "invokedBy", p.invoked_by.unwrap_or("AWS Internal"));
            out.push(b'}');
            return;
        }
        let pid = if p.kind == Kind::AssumedRole {
            format!("{}:{}", p.principal_id, p.session)
        } else {
            p.principal_id.clone()
        };
        field(out, "principalId", &pid);
        field(out, "arn", &p.arn);
        field(out, "accountId", ctx.acct);
        field(out, "accessKeyId", key.unwrap_or(""));
        match p.kind {
            Kind::IamUser => {
                field(out, "userName", &p.name);
                if key.is_some_and(|k| k.starts_with("ASIA")) {
                    out.extend_from_slice(br#","sessionContext":{"sessionIssuer":{},"webIdFederationData":{},"attributes":{"creationDate":""#);
                    push_time(out, time - 300);
                    out.extend_from_slice(br#"","mfaAuthenticated":"true"}}"#);
                }
            }
            Kind::AssumedRole => {
                out.extend_from_slice(br#","sessionContext":{"sessionIssuer":{"type":"Role","principalId":""#);
                out.extend_from_slice(p.principal_id.as_bytes());
                out.extend_from_slice(br#"","arn":"arn:aws:iam::"#);
                out.extend_from_slice(ctx.acct.as_bytes());
                out.extend_from_slice(b":role/");
                out.extend_from_slice(p.name.as_bytes());
                out.extend_from_slice(br#"","accountId":""#);
                out.extend_from_slice(ctx.acct.as_bytes());
                out.extend_from_slice(br#"","userName":""#);
                out.extend_from_slice(p.name.as_bytes());
                out.extend_from_slice(br#""},"webIdFederationData":{},"attributes":{"creationDate":""#);
                push_time(out, time - 600);
                out.extend_from_slice(br#"","mfaAuthenticated":"false"}}"#);
            }
            Kind::Root | Kind::AwsService => {}
        }
        if let Some(svc) = p.invoked_by {
            field(out, "invokedBy", svc);
        }
        out.push(b'}');
    }

    /// A console sign-in. Failures carry no errorCode: `responseElements.ConsoleLogin` is
    /// "Failure" and/or errorMessage is "Failed authentication", in the mixes seen in the
    /// panther-analysis fixtures.
    fn console_login(&mut self, out: &mut Vec<u8>, a: usize, time: i64, success: bool) {
        let acct = &self.accounts[a];
        let users: Vec<&Principal> = acct.principals.iter().filter(|p| p.kind == Kind::IamUser).collect();
        let p = users[self.rng.index(users.len())];
        let (acct_id, name, pid, arn) = (acct.id.clone(), p.name.clone(), p.principal_id.clone(), p.arn.clone());
        let ip = if self.rng.unit() < 0.7 {
            p.ips[self.rng.index(p.ips.len())].clone()
        } else {
            format!(
                "{}.{}.{}.{}",
                5 + self.rng.below(180),
                self.rng.below(256),
                self.rng.below(256),
                1 + self.rng.below(254)
            )
        };
        out.extend_from_slice(br#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","principalId":""#);
        let unknown_user = !success && self.rng.unit() < 0.2;
        if unknown_user {
            out.extend_from_slice(br#"","accountId":""#);
            out.extend_from_slice(acct_id.as_bytes());
            out.extend_from_slice(br#"","accessKeyId":"","userName":"HIDDEN_DUE_TO_SECURITY_REASONS"}"#);
        } else {
            out.extend_from_slice(pid.as_bytes());
            if success {
                out.extend_from_slice(br#"","arn":""#);
                out.extend_from_slice(arn.as_bytes());
            }
            out.extend_from_slice(br#"","accountId":""#);
            out.extend_from_slice(acct_id.as_bytes());
            out.extend_from_slice(br#"","accessKeyId":"","userName":""#);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        out.extend_from_slice(br#","eventTime":""#);
        push_time(out, time);
        out.extend_from_slice(br#"","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","awsRegion":"us-east-1","sourceIPAddress":""#);
        out.extend_from_slice(ip.as_bytes());
        out.extend_from_slice(br#"","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.5 Safari/605.1.15""#);
        // 0: both signs, 1: only responseElements, 2: only errorMessage.
        let form = if success { 1 } else { [0, 0, 0, 0, 0, 0, 0, 1, 1, 2][self.rng.index(10)] };
        if form != 1 {
            out.extend_from_slice(br#","errorMessage":"Failed authentication""#);
        }
        out.extend_from_slice(br#","requestParameters":null,"responseElements":"#);
        match (success, form) {
            (true, _) => out.extend_from_slice(br#"{"ConsoleLogin":"Success"}"#),
            (false, 2) => out.extend_from_slice(b"null"),
            (false, _) => out.extend_from_slice(br#"{"ConsoleLogin":"Failure"}"#),
        }
        out.extend_from_slice(br#","additionalEventData":{"LoginTo":"https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB_us-east-1_"#);
        push_random(out, &mut self.rng, HEX, 16);
        out.extend_from_slice(if success {
            br#"","MobileVersion":"No","MFAUsed":"Yes"},"eventID":""#
        } else {
            br#"","MobileVersion":"No","MFAUsed":"No"},"eventID":""#
        });
        push_uuid(out, &mut self.rng, false);
        out.extend_from_slice(
            br#"","readOnly":false,"eventType":"AwsConsoleSignIn","managementEvent":true,"recipientAccountId":""#,
        );
        out.extend_from_slice(acct_id.as_bytes());
        out.extend_from_slice(br#"","eventCategory":"Management","tlsDetails":{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"signin.aws.amazon.com"}}"#);
    }

    fn expand(&mut self, out: &mut Vec<u8>, pieces: &[Piece], ctx: &Ctx) {
        let rng = &mut self.rng;
        for piece in pieces {
            let ph = match piece {
                Piece::Lit(s) => {
                    out.extend_from_slice(s.as_bytes());
                    continue;
                }
                Piece::Ph(ph) => *ph,
            };
            match ph {
                Ph::Acct => out.extend_from_slice(ctx.acct.as_bytes()),
                Ph::Region => out.extend_from_slice(ctx.region.as_bytes()),
                Ph::Arn => out.extend_from_slice(ctx.principal.arn.as_bytes()),
                Ph::UserName => {
                    let p = ctx.principal;
                    let name = if p.kind == Kind::IamUser { p.name.as_str() } else { USERS[rng.index(USERS.len())] };
                    out.extend_from_slice(name.as_bytes());
                }
                Ph::Hex17 => push_random(out, rng, HEX, 17),
                Ph::Uuid => push_uuid(out, rng, false),
                Ph::UuidUpper => push_uuid(out, rng, true),
                Ph::Num => push_two(out, rng.below(60) as u32),
                Ph::Digits6 => push_digits(out, rng, 6),
                Ph::Digits19 => {
                    out.push(b'1');
                    push_digits(out, rng, 18);
                }
                Ph::Digits26 => {
                    out.extend_from_slice(b"2023");
                    push_digits(out, rng, 22);
                }
                Ph::Alnum6 => push_random(out, rng, ALNUM, 6),
                Ph::Alnum10 => push_random(out, rng, ALNUM, 10),
                Ph::Upper16 => push_random(out, rng, UPPER_DIGITS, 16),
                Ph::Word => out.extend_from_slice(WORDS[rng.index(WORDS.len())].as_bytes()),
                Ph::Bucket => {
                    out.extend_from_slice(WORDS[rng.index(WORDS.len())].as_bytes());
                    out.extend_from_slice(b"-bucket-");
                    push_random(out, rng, b"abcdefghijklmnopqrstuvwxyz0123456789", 12);
                }
                Ph::Blob => {
                    // Real encoded messages run from a few hundred to over a thousand chars;
                    // a letter first so the blob never starts with '-' or '_'.
                    out.push(b'A' + rng.below(26) as u8);
                    let n = 300 + rng.index(900);
                    push_random(out, rng, B64URL, n);
                }
                Ph::Akia => {
                    out.extend_from_slice(b"AKIA");
                    push_random(out, rng, UPPER_DIGITS, 16);
                }
                Ph::Asia => {
                    out.extend_from_slice(b"ASIA");
                    push_random(out, rng, UPPER_DIGITS, 16);
                }
                Ph::Token => {
                    out.extend_from_slice(b"IQoJb3JpZ2luX2Vj");
                    let n = 300 + rng.index(400);
                    push_random(out, rng, B64, n);
                }
            }
        }
    }
}

impl Iterator for Synth {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut buf = Vec::with_capacity(1536);
        self.next_into(&mut buf);
        // Everything written is ASCII or comes from the UTF-8 tables.
        String::from_utf8(buf).ok()
    }
}

#[cfg(test)]
mod tests;
