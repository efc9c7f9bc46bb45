//! Grouping error records into clusters.
//!
//! A cluster is every error with the same [`ClusterKey`]: account, region, API (event source
//! and name), error kind and message template. Its fingerprint is a hash of that key, so the
//! same kind of error gets the same id across runs, hosts and versions.
//!
//! Memory per cluster is bounded: top principals and source IPs are counted for at most
//! [`TOP_TRACKED`] distinct values each, chosen by a fixed hash of the value (not by arrival,
//! so the choice is the same whatever order files are read in). Other values only add to the
//! cluster's total, so with more distinct values than that a frequent one may be missing
//! from the top list, while the counts of the values that are listed are exact.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

// foldhash, seeded per process: a fraction of SipHash's cost on these short keys, and still
// no collisions an attacker can choose.
use foldhash::fast::RandomState;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ignore::IgnoreRules;
use super::keys::{KeyActivity, KeyTracker};
use super::record::{
    Event, Insight, ParseError, Record, is_success_status, might_be_error, parse_event, parse_event_serde,
    scan_record_into,
};
use super::template::{template, truncate_message};

/// Distinct values counted per top list of a cluster.
pub const TOP_TRACKED: usize = 64;
/// Distinct raw messages whose template is remembered; the cache is emptied when full.
pub const TEMPLATE_CACHE_ENTRIES: usize = 10_000;
/// Longest `sample_message`, in bytes.
pub const SAMPLE_MESSAGE_BYTES: usize = 1024;
/// Longest raw record kept as `sample_record`, in bytes.
pub const SAMPLE_RECORD_BYTES: usize = 64 * 1024;
/// Insights events kept for the report (the earliest); all of them are counted.
pub const MAX_INSIGHTS: usize = 100;

/// What makes two errors "the same error".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterKey {
    pub account_id: String,
    pub region: String,
    pub event_source: String,
    pub event_name: String,
    pub error_code: String,
    pub template: String,
}

impl ClusterKey {
    fn parts(&self) -> [&str; 6] {
        [&self.account_id, &self.region, &self.event_source, &self.event_name, &self.error_code, &self.template]
    }

    /// 32 lowercase hex chars: the first 16 bytes of SHA-256 over the six fields joined by
    /// `\x1f`. Stored and compared across runs, so it must never change.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (i, part) in self.parts().iter().enumerate() {
            if i > 0 {
                h.update([0x1f]);
            }
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// A value (a principal, a source IP) and how many errors of the cluster had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counted {
    pub value: String,
    pub count: u64,
}

/// One cluster as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub fingerprint: String,
    pub key: ClusterKey,
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// At most `top_k`, count descending then value ascending.
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
    /// At most `max_samples` distinct event ids, earliest by event time (then by id).
    pub sample_event_ids: Vec<String>,
    /// The errorMessage of the earliest record, cut to 1 KiB on a char boundary.
    pub sample_message: String,
    /// Raw JSON of the earliest record; None if over 64 KiB or not known (aggregate rows).
    pub sample_record: Option<String>,
}

/// A pre-aggregated row from CloudWatch Logs Insights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateRow {
    pub account_id: String,
    pub region: String,
    pub event_source: String,
    pub event_name: String,
    pub error_code: String,
    pub error_message: String,
    pub principal: String,
    pub source_ip: String,
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub sample_event_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ClustererConfig {
    pub ignore: IgnoreRules,
    /// `[start, end)` by eventTime; errors outside are counted as `out_of_window` and skipped.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Parse every record (not only likely errors) to collect access-key activity.
    pub track_keys: bool,
    pub top_k: usize,
    pub max_samples: usize,
}

impl Default for ClustererConfig {
    fn default() -> Self {
        ClustererConfig { ignore: IgnoreRules::default(), window: None, track_keys: false, top_k: 5, max_samples: 5 }
    }
}

/// Counters of one run. `error_records` is the number of errors that went into clusters (the
/// sum of cluster counts); ignored and out-of-window errors are counted apart. Aggregate rows
/// add their count to `records_scanned` as well, so every other counter stays within it.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub records_scanned: u64,
    pub error_records: u64,
    pub ignored_records: u64,
    pub malformed_records: u64,
    pub out_of_window: u64,
    /// Records read with a repair: a field of the wrong type read as its JSON text or
    /// dropped, or text that was not valid UTF-8 decoded lossily. They are not malformed.
    #[serde(default)]
    pub warned_records: u64,
    /// CloudTrail Insights events in the window (not errors, not malformed).
    #[serde(default)]
    pub insight_events: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.records_scanned += o.records_scanned;
        self.error_records += o.error_records;
        self.ignored_records += o.ignored_records;
        self.malformed_records += o.malformed_records;
        self.out_of_window += o.out_of_window;
        self.warned_records += o.warned_records;
        self.insight_events += o.insight_events;
    }
}

/// What [`Clusterer::ingest`] did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NotError,
    Clustered,
    Ignored,
    OutOfWindow,
    Malformed(ParseError),
    /// A CloudTrail Insights event (counted when in the window).
    Insight,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Analysis {
    /// Count descending, then fingerprint.
    pub clusters: Vec<Cluster>,
    /// Most recently used first.
    pub keys: Vec<KeyActivity>,
    pub stats: Stats,
    /// The earliest [`MAX_INSIGHTS`] Insights events of the window, by time.
    #[serde(skip)]
    pub insights: Vec<Insight>,
    /// What was repaired in `stats.warned_records`, by field (or `invalid UTF-8`), with counts.
    pub repairs: Vec<(String, u64)>,
}

/// Bounded counts of distinct values: the [`TOP_TRACKED`] values of smallest rank (a fixed hash
/// of the value) among all those seen. Which values are kept depends on the values alone, never
/// on the order records come in, so clusterers fed in parallel merge into exactly what one fed
/// in sequence holds. A kept value was never dropped (values only join), so its count is exact.
#[derive(Debug, Clone, Default)]
struct TopCounter {
    /// value → (rank, count)
    counts: HashMap<String, (u64, u64), RandomState>,
    /// The highest rank kept once full: a value ranked above it is passed over at once.
    ceiling: u64,
}

/// The same for every clusterer of a process (fixed keys), unlike the index's hasher.
fn rank(value: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl TopCounter {
    fn add(&mut self, value: &str, n: u64) {
        if value.is_empty() {
            return;
        }
        if let Some(c) = self.counts.get_mut(value) {
            c.1 += n;
        } else {
            self.admit(rank(value), value, n);
        }
    }

    fn admit(&mut self, r: u64, value: &str, n: u64) {
        if self.counts.len() < TOP_TRACKED {
            self.counts.insert(value.to_owned(), (r, n));
            if self.counts.len() == TOP_TRACKED {
                self.ceiling = self.counts.values().map(|c| c.0).max().unwrap_or(u64::MAX);
            }
            return;
        }
        if r > self.ceiling {
            return;
        }
        // Ties of rank go to the smaller value, so the order stays total.
        let Some(highest) =
            self.counts.iter().max_by(|a, b| (a.1.0, a.0).cmp(&(b.1.0, b.0))).map(|(v, c)| (v.clone(), c.0))
        else {
            return;
        };
        if (r, value) < (highest.1, highest.0.as_str()) {
            self.counts.remove(&highest.0);
            self.counts.insert(value.to_owned(), (r, n));
            self.ceiling = self.counts.values().map(|c| c.0).max().unwrap_or(u64::MAX);
        }
    }

    fn merge(&mut self, other: TopCounter) {
        for (value, (r, n)) in other.counts {
            if let Some(c) = self.counts.get_mut(&value) {
                c.1 += n;
            } else {
                self.admit(r, &value, n);
            }
        }
    }

    fn top(&self, k: usize) -> Vec<Counted> {
        let mut v: Vec<(&String, u64)> = self.counts.iter().map(|(v, c)| (v, c.1)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.into_iter().take(k).map(|(value, count)| Counted { value: value.clone(), count }).collect()
    }
}

/// One observation to add to a cluster: a record, or an aggregate row standing for `count`.
struct Obs<'r> {
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    event_id: Option<&'r str>,
    principal: &'r str,
    source_ip: &'r str,
    message: &'r str,
    raw: Option<&'r [u8]>,
    count: u64,
}

impl Obs<'_> {
    fn order(&self) -> (DateTime<Utc>, &str) {
        (self.first, self.event_id.unwrap_or(""))
    }

    /// Last tie-break between records with the same time and event id (hand-made data reuses
    /// ids), so the "earliest" record is the same whatever the ingestion or merge order. The
    /// hasher has fixed keys, so all clusterers of a process agree.
    fn tiebreak(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        match self.raw {
            Some(raw) => raw.hash(&mut h),
            None => self.message.hash(&mut h),
        }
        h.finish()
    }
}

#[derive(Debug, Clone)]
struct ClusterState {
    key: ClusterKey,
    fingerprint: String,
    count: u64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    principals: TopCounter,
    source_ips: TopCounter,
    /// Sorted by (time, id), distinct ids, at most `max_samples`.
    samples: Vec<(DateTime<Utc>, String)>,
    /// (time, event id, tie-break) of the record the sample message and record come from.
    earliest: (DateTime<Utc>, String, u64),
    sample_message: String,
    sample_record: Option<String>,
    /// `sample_record` holds exactly the bytes the tie-break was hashed from (no whitespace
    /// was trimmed), so a record with those same bytes is known to tie without hashing it:
    /// CloudTrail delivers some records twice, and hashing kilobytes for each copy showed.
    sample_is_raw: bool,
}

fn cut_message(m: &str) -> String {
    let mut end = m.len().min(SAMPLE_MESSAGE_BYTES);
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    m[..end].to_owned()
}

fn raw_sample(raw: Option<&[u8]>) -> Option<String> {
    let raw = raw?.trim_ascii();
    if raw.len() > SAMPLE_RECORD_BYTES {
        return None;
    }
    std::str::from_utf8(raw).ok().map(str::to_owned)
}

/// Whether `sample` is `raw` byte for byte (nothing trimmed, nothing dropped).
fn is_raw_sample(sample: Option<&str>, raw: Option<&[u8]>) -> bool {
    sample.is_some_and(|s| raw.is_some_and(|r| r.len() == s.len()))
}

impl ClusterState {
    fn new(key: ClusterKey, obs: &Obs, max_samples: usize) -> Self {
        let fingerprint = key.fingerprint();
        let mut c = ClusterState {
            key,
            fingerprint,
            count: 0,
            first_seen: obs.first,
            last_seen: obs.last,
            principals: TopCounter::default(),
            source_ips: TopCounter::default(),
            samples: Vec::new(),
            earliest: (obs.first, obs.event_id.unwrap_or("").to_owned(), obs.tiebreak()),
            sample_message: cut_message(obs.message),
            sample_record: raw_sample(obs.raw),
            sample_is_raw: false,
        };
        c.sample_is_raw = is_raw_sample(c.sample_record.as_deref(), obs.raw);
        c.observe(obs, max_samples);
        c
    }

    fn observe(&mut self, obs: &Obs, max_samples: usize) {
        self.count += obs.count;
        self.first_seen = self.first_seen.min(obs.first);
        self.last_seen = self.last_seen.max(obs.last);
        self.principals.add(obs.principal, obs.count);
        self.source_ips.add(obs.source_ip, obs.count);
        if let Some(id) = obs.event_id {
            add_sample(&mut self.samples, obs.first, id, max_samples);
        }
        let earlier = match obs.order().cmp(&(self.earliest.0, self.earliest.1.as_str())) {
            Ordering::Less => Some(obs.tiebreak()),
            Ordering::Equal if self.sample_is_raw && self.sample_record.as_deref().map(str::as_bytes) == obs.raw => {
                None
            }
            Ordering::Equal => Some(obs.tiebreak()).filter(|t| *t < self.earliest.2),
            Ordering::Greater => None,
        };
        if let Some(tiebreak) = earlier {
            self.earliest = (obs.first, obs.event_id.unwrap_or("").to_owned(), tiebreak);
            self.sample_message = cut_message(obs.message);
            self.sample_record = raw_sample(obs.raw);
            self.sample_is_raw = is_raw_sample(self.sample_record.as_deref(), obs.raw);
        }
    }

    fn merge(&mut self, other: ClusterState, max_samples: usize) {
        self.count += other.count;
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.principals.merge(other.principals);
        self.source_ips.merge(other.source_ips);
        for (t, id) in &other.samples {
            add_sample(&mut self.samples, *t, id, max_samples);
        }
        if other.earliest < self.earliest {
            self.earliest = other.earliest;
            self.sample_message = other.sample_message;
            self.sample_record = other.sample_record;
            self.sample_is_raw = other.sample_is_raw;
        }
    }

    fn into_cluster(self, top_k: usize) -> Cluster {
        Cluster {
            top_principals: self.principals.top(top_k),
            top_source_ips: self.source_ips.top(top_k),
            fingerprint: self.fingerprint,
            key: self.key,
            count: self.count,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            sample_event_ids: self.samples.into_iter().map(|(_, id)| id).collect(),
            sample_message: self.sample_message,
            sample_record: self.sample_record,
        }
    }
}

/// Keeps the `max` earliest distinct ids; allocates only when a sample is actually kept.
fn add_sample(samples: &mut Vec<(DateTime<Utc>, String)>, t: DateTime<Utc>, id: &str, max: usize) {
    // The "not earlier than the latest kept" test first: it is what rejects nearly every
    // record of a busy cluster, with one comparison instead of one per kept id.
    if max == 0 || (samples.len() >= max && samples.last().is_some_and(|(lt, lid)| (t, id) >= (*lt, lid.as_str()))) {
        return;
    }
    if samples.iter().any(|(_, s)| s == id) {
        return;
    }
    let pos = samples.partition_point(|(st, sid)| (*st, sid.as_str()) < (t, id));
    samples.insert(pos, (t, id.to_owned()));
    samples.truncate(max);
}

/// (truncated message, its template)
type CachedTemplate = (Box<str>, Box<str>);

/// Message → template, keyed by a hash of the (truncated) message so a hit costs one hash and
/// one comparison, with no allocation. Emptied when full: simple, and a working set that fits
/// refills at once.
#[derive(Debug, Clone)]
struct TemplateCache {
    map: HashMap<u64, Vec<CachedTemplate>, RandomState>,
    len: usize,
    cap: usize,
    hasher: RandomState,
}

impl TemplateCache {
    fn new(cap: usize) -> Self {
        TemplateCache { map: HashMap::default(), len: 0, cap, hasher: RandomState::default() }
    }

    fn get(&mut self, message: &str) -> &str {
        let msg = truncate_message(message);
        let h = self.hasher.hash_one(msg);
        let found = self.map.get(&h).and_then(|b| b.iter().position(|(m, _)| &**m == msg));
        let idx = match found {
            Some(i) => i,
            None => {
                if self.len >= self.cap {
                    self.map.clear();
                    self.len = 0;
                }
                let bucket = self.map.entry(h).or_default();
                bucket.push((msg.into(), template(msg).into()));
                self.len += 1;
                bucket.len() - 1
            }
        };
        &self.map[&h][idx].1
    }
}

/// Clusters error records. One per log group or shard; combine them with [`Clusterer::merge`].
#[derive(Debug, Clone)]
pub struct Clusterer {
    cfg: ClustererConfig,
    clusters: Vec<ClusterState>,
    /// Hash of the borrowed key fields → indexes into `clusters`, so a known cluster is found
    /// without building an owned key.
    index: HashMap<u64, Vec<usize>, RandomState>,
    hasher: RandomState,
    templates: TemplateCache,
    keys: KeyTracker,
    stats: Stats,
    insights: Vec<Insight>,
    repairs: std::collections::BTreeMap<&'static str, u64>,
}

impl Clusterer {
    pub fn new(cfg: ClustererConfig) -> Self {
        Clusterer {
            cfg,
            clusters: Vec::new(),
            index: HashMap::default(),
            hasher: RandomState::default(),
            templates: TemplateCache::new(TEMPLATE_CACHE_ENTRIES),
            keys: KeyTracker::new(),
            stats: Stats::default(),
            insights: Vec::new(),
            repairs: Default::default(),
        }
    }

    /// An empty clusterer with this one's configuration: one per worker of a parallel read,
    /// merged back with [`Clusterer::merge`].
    pub fn empty_like(&self) -> Clusterer {
        Clusterer::new(self.cfg.clone())
    }

    fn in_window(&self, first: DateTime<Utc>, last: DateTime<Utc>) -> bool {
        match self.cfg.window {
            None => true,
            Some((start, end)) => last >= start && first < end,
        }
    }

    /// Reads one raw record. Every call counts in `records_scanned`; records that cannot be
    /// errors are skipped unparsed unless keys are tracked. A record the scanner can read
    /// goes straight on; the rest are scrubbed of escaped NULs, parsed by serde, and repaired
    /// where their text was not valid.
    pub fn ingest(&mut self, raw: &[u8]) -> Outcome {
        self.stats.records_scanned += 1;
        // The prefilter looks for `"errorCode"` and `ConsoleLogin`, which the scrub can neither
        // make nor break, so it runs on the raw bytes and only records it lets through are scrubbed.
        if !self.cfg.track_keys && !might_be_error(raw) {
            return Outcome::NotError;
        }
        // The scanner answers only for a well-formed record without an escaped NUL, which the
        // scrub would leave as it is; every other record takes the general path below.
        let mut rec = Record::default();
        if scan_record_into(raw, &mut rec).is_some() {
            return self.ingest_call(raw, &rec, false);
        }
        let scrubbed = scrub_nul_escapes(raw);
        // The scanner has declined these bytes, so serde reads them; a scrubbed copy is new
        // text, which the scanner may read.
        let rescan = matches!(scrubbed, std::borrow::Cow::Owned(_));
        let raw = &*scrubbed;
        let parsed = if rescan { parse_event(raw) } else { parse_event_serde(raw) };
        // Text that was not UTF-8, or held a lone surrogate, costs its bad characters only.
        let fixed = if parsed.is_err() { repair_text(raw) } else { None };
        let (raw, event, lossy) = match (parsed, &fixed) {
            (Ok(e), _) => (raw, e, false),
            (Err(e), fixed) => match fixed.as_deref().map(|f| (f, parse_event(f))) {
                Some((f, Ok(e))) => (f, e, true),
                _ => {
                    self.stats.malformed_records += 1;
                    return Outcome::Malformed(e);
                }
            },
        };
        match event {
            Event::Call(rec) => self.ingest_call(raw, &rec, lossy),
            Event::Insight(insight) => {
                if self.in_window(insight.event_time, insight.event_time) {
                    self.stats.insight_events += 1;
                    add_insight(&mut self.insights, insight);
                }
                Outcome::Insight
            }
        }
    }

    /// The rest of [`Self::ingest`] for an API call read from `raw` (`lossy` when its text had
    /// to be repaired to be read).
    fn ingest_call(&mut self, raw: &[u8], rec: &Record<'_>, lossy: bool) -> Outcome {
        let repair = if lossy { Some(INVALID_TEXT) } else { rec.repaired };
        if let Some(field) = repair {
            self.stats.warned_records += 1;
            *self.repairs.entry(field).or_default() += 1;
        }
        let in_window = self.in_window(rec.event_time, rec.event_time);
        if self.cfg.track_keys && in_window {
            self.keys.observe(rec);
        }
        let Some(kind) = rec.error_kind() else {
            return Outcome::NotError;
        };
        if !in_window {
            self.stats.out_of_window += 1;
            return Outcome::OutOfWindow;
        }
        if self.cfg.ignore.matches(rec) {
            self.stats.ignored_records += 1;
            return Outcome::Ignored;
        }
        let message = rec.error_message.as_deref().unwrap_or("");
        let principal = rec.principal();
        let obs = Obs {
            first: rec.event_time,
            last: rec.event_time,
            event_id: rec.event_id.as_deref().filter(|s| !s.is_empty()),
            principal: &principal,
            source_ip: rec.source_ip.as_deref().unwrap_or(""),
            message,
            raw: Some(raw),
            count: 1,
        };
        self.add([rec.account_id(), rec.region(), &rec.event_source, &rec.event_name, kind], message, &obs);
        self.stats.error_records += 1;
        Outcome::Clustered
    }

    /// Adds a row that stands for `row.count` error records already selected server-side.
    /// Ignore rules apply to its code, source and principal; rows entirely outside the window
    /// are skipped. The row's principal is matched against the principal globs.
    pub fn ingest_aggregate(&mut self, row: &AggregateRow) {
        if row.count == 0 {
            return;
        }
        self.stats.records_scanned += row.count;
        // Selected by errorCode, as records are, so the same codes are not errors.
        if is_success_status(&row.error_code) {
            return;
        }
        if !self.in_window(row.first_seen, row.last_seen) {
            self.stats.out_of_window += row.count;
            return;
        }
        let principal = Some(row.principal.as_str()).filter(|p| !p.is_empty());
        if self.cfg.ignore.matches_parts(&row.error_code, &row.event_source, principal) {
            self.stats.ignored_records += row.count;
            return;
        }
        let obs = Obs {
            first: row.first_seen.min(row.last_seen),
            last: row.last_seen.max(row.first_seen),
            event_id: row.sample_event_id.as_deref().filter(|s| !s.is_empty()),
            principal: &row.principal,
            source_ip: &row.source_ip,
            message: &row.error_message,
            raw: None,
            count: row.count,
        };
        self.add(
            [&row.account_id, &row.region, &row.event_source, &row.event_name, &row.error_code],
            &row.error_message,
            &obs,
        );
        self.stats.error_records += row.count;
    }

    /// Adds a key-activity row from an aggregate query.
    pub fn observe_key(&mut self, k: KeyActivity) {
        self.keys.observe_activity(k);
    }

    fn add(&mut self, fields: [&str; 5], message: &str, obs: &Obs) {
        let Clusterer { cfg, clusters, index, hasher, templates, .. } = self;
        let tpl = templates.get(message);
        let [account, region, source, name, code] = fields;
        let parts = [account, region, source, name, code, tpl];
        let slot = index.entry(hasher.hash_one(parts)).or_default();
        for &i in slot.iter() {
            if clusters[i].key.parts() == parts {
                clusters[i].observe(obs, cfg.max_samples);
                return;
            }
        }
        let key = ClusterKey {
            account_id: account.to_owned(),
            region: region.to_owned(),
            event_source: source.to_owned(),
            event_name: name.to_owned(),
            error_code: code.to_owned(),
            template: tpl.to_owned(),
        };
        slot.push(clusters.len());
        clusters.push(ClusterState::new(key, obs, cfg.max_samples));
    }

    /// Combines per-log-group clusterers: counts add, first/last take min/max, top lists are
    /// re-ranked, the earliest samples are kept. `self`'s configuration is kept.
    pub fn merge(&mut self, other: Clusterer) {
        self.stats.add(&other.stats);
        self.keys.merge(other.keys);
        for i in other.insights {
            add_insight(&mut self.insights, i);
        }
        for (field, n) in other.repairs {
            *self.repairs.entry(field).or_default() += n;
        }
        for c in other.clusters {
            let h = self.hasher.hash_one(c.key.parts());
            let slot = self.index.entry(h).or_default();
            match slot.iter().copied().find(|&i| self.clusters[i].key == c.key) {
                Some(i) => self.clusters[i].merge(c, self.cfg.max_samples),
                None => {
                    slot.push(self.clusters.len());
                    let mut c = c;
                    c.samples.truncate(self.cfg.max_samples);
                    self.clusters.push(c);
                }
            }
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// A sentence on the records read with a repair so far, by what was repaired; None when
    /// there were none.
    pub fn repair_summary(&self) -> Option<String> {
        if self.repairs.is_empty() {
            return None;
        }
        let parts: Vec<String> = self.repairs.iter().map(|(field, n)| format!("{field} ({n})")).collect();
        Some(format!(
            "{} records were read with a repair, not dropped: {}",
            self.stats.warned_records,
            parts.join(", ")
        ))
    }

    /// Number of clusters so far.
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    pub fn finish(self) -> Analysis {
        let top_k = self.cfg.top_k;
        let mut clusters: Vec<Cluster> = self.clusters.into_iter().map(|c| c.into_cluster(top_k)).collect();
        clusters.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
        let repairs = self.repairs.into_iter().map(|(f, n)| (f.to_owned(), n)).collect();
        Analysis { clusters, keys: self.keys.into_vec(), stats: self.stats, insights: self.insights, repairs }
    }
}

/// Keeps the earliest [`MAX_INSIGHTS`] by (time, id), whatever the order they come in.
fn add_insight(kept: &mut Vec<Insight>, i: Insight) {
    let key = |x: &Insight| (x.event_time, x.event_id.clone());
    let pos = kept.partition_point(|k| key(k) <= key(&i));
    if pos < MAX_INSIGHTS {
        kept.insert(pos, i);
        kept.truncate(MAX_INSIGHTS);
    }
}

/// The name [`Stats::warned_records`] gives to text that had to be decoded lossily.
pub const INVALID_TEXT: &str = "invalid UTF-8 or escape";

/// A raw record with its broken text repaired, when it has some: bytes that are not UTF-8
/// become U+FFFD, as do `\u` escapes of lone surrogates (which JSON allows and serde_json,
/// like Rust strings, refuses). None when there was nothing to repair.
fn repair_text(raw: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(raw);
    let mut changed = matches!(text, std::borrow::Cow::Owned(_));
    let mut out = Vec::with_capacity(raw.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(cp) = hex4(b, i + 2).filter(|_| b.get(i + 1) == Some(&b'u')) {
                let high = (0xD800..0xDC00).contains(&cp);
                let low = (0xDC00..0xE000).contains(&cp);
                let paired = high
                    && b.get(i + 6) == Some(&b'\\')
                    && b.get(i + 7) == Some(&b'u')
                    && hex4(b, i + 8).is_some_and(|c| (0xDC00..0xE000).contains(&c));
                if paired {
                    out.extend_from_slice(&b[i..i + 12]);
                    i += 12;
                    continue;
                }
                if high || low {
                    out.extend_from_slice(b"\\ufffd");
                    i += 6;
                    changed = true;
                    continue;
                }
            }
            // Any other escape (a backslash included) is copied whole, so `\\u` stays text.
            out.extend_from_slice(&b[i..(i + 2).min(b.len())]);
            i += 2;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    changed.then_some(out)
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    std::str::from_utf8(digits)
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .filter(|_| digits.iter().all(u8::is_ascii_hexdigit))
}

/// NUL is legal in JSON strings (`\u0000`) and so in CloudTrail text an attacker controls,
/// but Postgres stores it neither in `text` nor in `jsonb`: one such record would make the
/// whole run unstorable. Each escaped NUL becomes U+FFFD before parsing, so every field, the
/// sample record included, is storable on both backends. An escape preceded by an odd number
/// of backslashes (`\\u0000`) is literal text and is left alone. Raw NUL bytes need no
/// care: JSON forbids them unescaped, so such a record is malformed anyway.
fn scrub_nul_escapes(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const NUL: &[u8] = b"\\u0000";
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(NUL));
    let mut found = FINDER.find_iter(raw).peekable();
    if found.peek().is_none() {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + 8);
    let mut last = 0;
    for at in found {
        let backslashes = raw[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            continue;
        }
        out.extend_from_slice(&raw[last..at]);
        out.extend_from_slice(b"\\ufffd");
        last = at + NUL.len();
    }
    out.extend_from_slice(&raw[last..]);
    std::borrow::Cow::Owned(out)
}

/// The same for text that arrives already decoded (Logs Insights rows): the CloudWatch source
/// applies it to every field it takes from a row.
pub fn scrub_nul(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{fffd}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::parse_record;
    use crate::engine::test_records_dir;
    use serde_json::value::RawValue;
    use std::path::PathBuf;

    #[test]
    fn escaped_nul_becomes_a_replacement_character_unless_it_is_literal_text() {
        for (raw, want) in [
            (r#"{"a":"x"}"#, r#"{"a":"x"}"#),
            (r#"{"a":"\u0000b\u0000"}"#, r#"{"a":"\ufffdb\ufffd"}"#),
            (r#"{"a":"\\u0000"}"#, r#"{"a":"\\u0000"}"#),
            (r#"{"a":"\\\u0000"}"#, r#"{"a":"\\\ufffd"}"#),
        ] {
            assert_eq!(std::str::from_utf8(&scrub_nul_escapes(raw.as_bytes())).unwrap(), want, "{raw}");
        }
        let mut s = "a\0b".to_string();
        scrub_nul(&mut s);
        assert_eq!(s, "a\u{fffd}b");
    }

    /// The scanner reads a record unscrubbed, which is right only because it declines every
    /// record the scrub would change: an escaped NUL anywhere, in a skipped field too, still
    /// reaches the stored sample as U+FFFD.
    #[test]
    fn records_the_scrub_would_change_are_not_read_unscrubbed() {
        let head = r#"{"eventTime":"2024-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","errorCode":"AccessDenied""#;
        for tail in [
            r#","requestParameters":{"key":"a\u0000b"}}"#,
            r#","requestParameters":{"k\u0000":1}}"#,
            r#","errorMessage":"x\u0000"}"#,
            r#","requestParameters":["\\\u0000"]}"#,
        ] {
            let raw = format!("{head}{tail}");
            assert!(crate::engine::record::scan_record(raw.as_bytes()).is_none(), "{raw}");
            let a = run(ClustererConfig::default(), [raw.as_bytes()]);
            let sample = a.clusters[0].sample_record.as_deref().unwrap();
            assert!(matches!(scrub_nul_escapes(sample.as_bytes()), std::borrow::Cow::Borrowed(_)), "{sample}");
            assert!(sample.contains(r"\ufffd"), "{sample}");
        }
        // Literal text is not a NUL: the scanner reads it, and the sample keeps it.
        let raw = format!(r#"{head},"requestParameters":{{"key":"\\u0000"}}}}"#);
        assert!(crate::engine::record::scan_record(raw.as_bytes()).is_some());
        let a = run(ClustererConfig::default(), [raw.as_bytes()]);
        assert!(a.clusters[0].sample_record.as_deref().unwrap().contains(r#""key":"\\u0000""#));
    }

    #[test]
    fn text_repairs() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (br#"{"a":"b"}"#, None),
            (br#"{"a":"\ud83d\ude00 \u00e9 \\ud800"}"#, None),
            (b"{\"a\":\"caf\xe9\"}", Some("{\"a\":\"caf\u{fffd}\"}".as_bytes())),
            (br#"{"a":"x\ud800y"}"#, Some(br#"{"a":"x\ufffdy"}"#)),
            (br#"{"a":"x\uDC00"}"#, Some(br#"{"a":"x\ufffd"}"#)),
            (br#"{"a":"\ud800\u0041"}"#, Some(br#"{"a":"\ufffd\u0041"}"#)),
            (br#"{"a":"\\\ud800"}"#, Some(br#"{"a":"\\\ufffd"}"#)),
            (br#"{"a":"\u12"}"#, None),
        ];
        for (raw, want) in cases {
            assert_eq!(repair_text(raw).as_deref(), *want, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// Raw records of every `*.json` file in `dir`, files in name order. A file is either a
    /// JSON array of records or `{"Records": [...]}` as CloudTrail writes to S3.
    fn json_records(dir: &str) -> Vec<Box<RawValue>> {
        #[derive(Deserialize)]
        struct Delivery {
            #[serde(rename = "Records")]
            records: Vec<Box<RawValue>>,
        }
        let mut paths: Vec<PathBuf> = std::fs::read_dir(test_records_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap();
            // RawValue cannot sit under an untagged enum, so look at the first byte instead.
            if text.trim_start().starts_with('[') {
                out.extend(serde_json::from_str::<Vec<Box<RawValue>>>(&text).unwrap());
            } else {
                out.extend(serde_json::from_str::<Delivery>(&text).unwrap().records);
            }
        }
        out
    }

    fn invictus() -> Vec<Box<RawValue>> {
        json_records("invictus-ir/CloudTrail")
    }

    fn stratus() -> Vec<Box<RawValue>> {
        json_records("stratus-red-team")
    }

    fn panther() -> Vec<Vec<u8>> {
        let text = std::fs::read(test_records_dir().join("panther-analysis/events.jsonl")).unwrap();
        text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
    }

    fn run<'a>(cfg: ClustererConfig, raws: impl IntoIterator<Item = &'a [u8]>) -> Analysis {
        let mut c = Clusterer::new(cfg);
        for r in raws {
            c.ingest(r);
        }
        c.finish()
    }

    fn raws(v: &[Box<RawValue>]) -> impl Iterator<Item = &[u8]> {
        v.iter().map(|r| r.get().as_bytes())
    }

    fn utc(s: &str) -> DateTime<Utc> {
        crate::engine::record::parse_event_time(s).unwrap()
    }

    fn counted(v: &[(&str, u64)]) -> Vec<Counted> {
        v.iter().map(|(value, count)| Counted { value: (*value).to_owned(), count: *count }).collect()
    }

    /// The key a record is expected to land under, computed from the public pieces.
    fn key_of(raw: &[u8]) -> Option<ClusterKey> {
        let r = parse_record(raw).ok()?;
        let kind = r.error_kind()?;
        Some(ClusterKey {
            account_id: r.account_id().to_owned(),
            region: r.region().to_owned(),
            event_source: r.event_source.to_string(),
            event_name: r.event_name.to_string(),
            error_code: kind.to_owned(),
            template: template(r.error_message.as_deref().unwrap_or("")),
        })
    }

    #[test]
    fn invictus_counts() {
        let inv = invictus();
        let mut c = Clusterer::new(ClustererConfig { track_keys: true, ..Default::default() });
        let mut outcomes: HashMap<String, u64> = HashMap::new();
        for raw in raws(&inv) {
            *outcomes.entry(format!("{:?}", c.ingest(raw))).or_default() += 1;
        }
        let a = c.finish();
        assert_eq!(
            a.stats,
            Stats {
                records_scanned: 2900,
                error_records: 300,
                ignored_records: 0,
                malformed_records: 0,
                out_of_window: 0,
                ..Stats::default()
            }
        );
        assert_eq!(outcomes, HashMap::from([("Clustered".to_owned(), 300), ("NotError".to_owned(), 2600)]));
        assert_eq!(a.clusters.iter().map(|c| c.count).sum::<u64>(), 300);
        let codes: std::collections::BTreeSet<&str> = a.clusters.iter().map(|c| c.key.error_code.as_str()).collect();
        assert_eq!(codes.len(), 32);
        // One per (code, source, API): no error is split by the names in its messages.
        assert_eq!(a.clusters.len(), 44);
        // Sorted by count, then fingerprint.
        assert!(a.clusters.windows(2).all(|w| (w[1].count, &w[0].fingerprint) <= (w[0].count, &w[1].fingerprint)));
        let top: Vec<(u64, &str)> = a.clusters[..3].iter().map(|c| (c.count, c.key.event_name.as_str())).collect();
        assert_eq!(top, vec![(39, "DescribeParameters"), (38, "DeleteParameter"), (29, "GetPasswordData")]);
        // Key activity: PROVENANCE counts 133 access key ids.
        assert_eq!(a.keys.len(), 133);
        assert_eq!(a.keys.iter().map(|k| k.count).sum::<u64>(), 2815);
        let busiest = a.keys.iter().max_by_key(|k| k.count).unwrap();
        assert_eq!(
            busiest,
            &KeyActivity {
                access_key_id: "AKIATFQR7NSC8Q4X20BJ".into(),
                first_seen: utc("2023-07-10T11:54:33Z"),
                last_seen: utc("2023-07-10T12:29:09Z"),
                principal_arn: "arn:aws:iam::123837392027:user/bert-jan".into(),
                account_id: "123837392027".into(),
                last_event_name: "DescribeDBInstances".into(),
                last_source_ip: "192.168.10.20".into(),
                count: 2104,
            }
        );
        assert!(a.keys.windows(2).all(|w| w[0].last_seen >= w[1].last_seen));
    }

    #[test]
    fn clusters_never_mix_codes_or_apis() {
        let inv = invictus();
        let a = run(ClustererConfig::default(), raws(&inv));
        let mut by_fp: HashMap<String, std::collections::BTreeSet<(String, String, String)>> = HashMap::new();
        for raw in raws(&inv) {
            if let Some(k) = key_of(raw) {
                by_fp.entry(k.fingerprint()).or_default().insert((k.error_code, k.event_source, k.event_name));
            }
        }
        assert_eq!(by_fp.len(), a.clusters.len());
        assert!(by_fp.values().all(|s| s.len() == 1));
        for c in &a.clusters {
            assert_eq!(c.fingerprint, c.key.fingerprint());
            assert!(by_fp.contains_key(&c.fingerprint));
        }
        // 44 (code, source, API) triples make 44 clusters. NoSuchEntityException on
        // DeleteLoginProfile names three users without digits; the names are masked after
        // `User`, so it is one cluster (template version 1 made three).
        let triples: std::collections::BTreeSet<_> = by_fp.values().flatten().collect();
        assert_eq!(triples.len(), 44);
        let login: Vec<&str> = a
            .clusters
            .iter()
            .filter(|c| c.key.event_name == "DeleteLoginProfile")
            .map(|c| c.key.template.as_str())
            .collect();
        assert_eq!(login, ["Login Profile for User <NAME> cannot be found."]);
    }

    #[test]
    fn encoded_authorization_messages_collapse() {
        let inv = invictus();
        let distinct_messages: std::collections::HashSet<String> = raws(&inv)
            .filter_map(|r| {
                parse_record(r).ok().filter(|r| r.event_name == "GetPasswordData" && r.error_code.is_some())
            })
            .map(|r| r.error_message.unwrap().into_owned())
            .collect();
        assert_eq!(distinct_messages.len(), 29);
        let a = run(ClustererConfig::default(), raws(&inv));
        // 29 records, 29 different encoded messages, one account, region, API and code: the
        // encoded blob is a single mixed letter/digit token, so all share one template.
        let gpd: Vec<&Cluster> = a.clusters.iter().filter(|c| c.key.event_name == "GetPasswordData").collect();
        assert_eq!(gpd.len(), 1);
        let c = gpd[0];
        assert_eq!(c.count, 29);
        assert_eq!(c.key.error_code, "Client.UnauthorizedOperation");
        assert_eq!(
            c.key.template,
            "You are not authorized to perform this operation. Encoded authorization failure message: <ID>"
        );
        assert_eq!(c.first_seen, utc("2023-07-10T11:54:47Z"));
        assert_eq!(c.last_seen, utc("2023-07-10T11:54:50Z"));
        assert_eq!(
            c.top_principals,
            counted(&[(
                "arn:aws:sts::123837392027:assumed-role/stratus-red-team-ec2-get-password-data-role/aws-go-sdk-1688990082523310002",
                29
            )])
        );
        assert_eq!(c.top_source_ips, counted(&[("192.168.10.20", 29)]));
        assert_eq!(
            c.sample_event_ids,
            vec![
                "00d955a7-4797-46c4-ba50-ed0c81867020",
                "2ec37c12-94b8-4df5-813b-98bca0fb0edb",
                "97178d6a-6cf7-49f9-b116-a189a06c3295",
                "ae9a706f-d8a4-4e50-9043-22b2a03f481c",
                "00d3d82b-5ed2-4044-9eeb-172cbb1a0e15",
            ]
        );
        let sample = c.sample_record.as_deref().unwrap();
        assert!(sample.contains("00d955a7-4797-46c4-ba50-ed0c81867020"));
        assert!(c.sample_message.starts_with("You are not authorized to perform this operation. Encoded"));
        assert!(c.sample_message.len() <= SAMPLE_MESSAGE_BYTES);
        let dia: Vec<u64> =
            a.clusters.iter().filter(|c| c.key.event_name == "DescribeInstanceAttribute").map(|c| c.count).collect();
        assert_eq!(dia, vec![15]);
    }

    #[test]
    fn route_tables_and_assume_role() {
        let inv = invictus();
        let a = run(ClustererConfig::default(), raws(&inv));
        let find = |name: &str| -> Vec<&Cluster> { a.clusters.iter().filter(|c| c.key.event_name == name).collect() };
        // 13 records naming 9 different route tables.
        let rt = find("DescribeRouteTables");
        assert_eq!(rt.len(), 1);
        assert_eq!((rt[0].count, rt[0].key.template.as_str()), (13, "The routeTable ID '<*>' does not exist"));
        assert_eq!(rt[0].fingerprint, "b6037b60fff6fae7e57103cb123fe619");
        // 13 AssumeRole denials on 5 different roles.
        let ar = find("AssumeRole");
        assert_eq!(ar.len(), 1);
        assert_eq!(ar[0].count, 13);
        let assume_template = "User: <ARN> is not authorized to perform: sts:AssumeRole on resource: <ARN>";
        assert_eq!(ar[0].key.template, assume_template);
        // The other user (christophe, in stratus-red-team's accounts) gets the same template;
        // the clusters differ only because the accounts do.
        let st = stratus();
        let b = run(ClustererConfig::default(), raws(&st));
        let other: Vec<(&str, &str, u64)> = b
            .clusters
            .iter()
            .filter(|c| c.key.event_name == "AssumeRole")
            .map(|c| (c.key.account_id.as_str(), c.key.template.as_str(), c.count))
            .collect();
        assert_eq!(other, vec![("457448411975", assume_template, 2), ("321848314756", assume_template, 2)]);
        // A different action is a different template.
        let leave = find("LeaveOrganization");
        assert_eq!(leave.len(), 1);
        assert_ne!(leave[0].key.template, assume_template);
        assert_eq!(b.stats, Stats { records_scanned: 310, error_records: 52, ..Stats::default() });
        assert_eq!(b.clusters.len(), 7);
    }

    #[test]
    fn panther_console_logins() {
        let lines = panther();
        let mut c = Clusterer::new(ClustererConfig::default());
        let outcomes: Vec<Outcome> = lines.iter().map(|l| c.ingest(l)).collect();
        // (ConsoleLogin value or errorMessage, has a usable eventTime) → outcome, per line.
        let mut seen: std::collections::BTreeMap<(String, bool, String), u64> = Default::default();
        for (line, outcome) in lines.iter().zip(&outcomes) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            if v["eventName"] != "ConsoleLogin" {
                continue;
            }
            let result = v["responseElements"]["ConsoleLogin"].as_str().unwrap_or("-").to_owned();
            let failed_auth = v["errorMessage"] == "Failed authentication";
            let timed = v["eventTime"].is_string();
            let label = format!("{result}{}", if failed_auth { "+Failed authentication" } else { "" });
            *seen.entry((label, timed, format!("{outcome:?}"))).or_default() += 1;
        }
        let want: Vec<((&str, bool, &str), u64)> = vec![
            (("-", false, "Malformed(MissingField(\"eventTime\"))"), 1),
            (("-", true, "NotError"), 1),
            (("Failure", false, "Malformed(MissingField(\"eventTime\"))"), 2),
            (("Failure", true, "Clustered"), 2),
            (("Failure+Failed authentication", true, "Clustered"), 1),
            (("Success", false, "Malformed(MissingField(\"eventTime\"))"), 1),
            (("Success", true, "NotError"), 16),
        ];
        let got: Vec<((&str, bool, &str), u64)> =
            seen.iter().map(|((a, b, c), n)| ((a.as_str(), *b, c.as_str()), *n)).collect();
        assert_eq!(got, want);
        let a = c.finish();
        let failures: Vec<(&str, u64, &str)> = a
            .clusters
            .iter()
            .filter(|c| c.key.error_code == "ConsoleLoginFailure")
            .map(|c| (c.key.account_id.as_str(), c.count, c.key.template.as_str()))
            .collect();
        assert_eq!(failures, vec![("123456789012", 2, ""), ("111122223333", 1, "Failed authentication")]);
        assert_eq!(
            a.stats,
            Stats {
                records_scanned: 453,
                error_records: 68,
                ignored_records: 0,
                malformed_records: 5,
                out_of_window: 0,
                ..Stats::default()
            }
        );
        assert_eq!(a.clusters.len(), 61);
        // Parsing every line to track keys also finds the malformed lines that cannot be errors.
        let b = run(ClustererConfig { track_keys: true, ..Default::default() }, lines.iter().map(|l| l.as_slice()));
        assert_eq!(b.stats.malformed_records, 17);
        assert_eq!(b.stats.error_records, 68);
        assert_eq!(b.clusters, a.clusters);
    }

    #[test]
    fn malformed_inputs_never_panic() {
        let good = r#"{"eventTime":"2023-07-10T12:00:00Z","eventID":"e1","eventSource":"ec2.amazonaws.com","eventName":"DescribeVpcs","errorCode":"Client.InvalidVpcID.NotFound","errorMessage":"The vpc ID 'vpc-0fa94f40db415f317' does not exist""#;
        let with_s = |extra: &str| format!("{good}{extra}}}");
        let with = |extra: &str| with_s(extra).into_bytes();
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut bad_utf8 = with("");
        let at = bad_utf8.len() - 10;
        bad_utf8[at] = 0xff;
        let huge = format!(
            r#"{{"eventTime":"2023-07-10T12:00:01Z","eventSource":"s","eventName":"n","errorCode":"X","errorMessage":"{}"}}"#,
            "é".repeat(2_500_000)
        );
        let cases: Vec<(Vec<u8>, Outcome, Outcome)> = vec![
            // (raw, outcome without key tracking, outcome with it)
            (b"not json".to_vec(), Outcome::NotError, Outcome::Malformed(ParseError::NotJson)),
            (
                b"not json \"errorCode\"".to_vec(),
                Outcome::Malformed(ParseError::NotJson),
                Outcome::Malformed(ParseError::NotJson),
            ),
            (b"[]".to_vec(), Outcome::NotError, Outcome::Malformed(ParseError::NotObject)),
            (
                b"[\"errorCode\"]".to_vec(),
                Outcome::Malformed(ParseError::NotObject),
                Outcome::Malformed(ParseError::NotObject),
            ),
            (
                b"{\"eventSource\":1}".to_vec(),
                Outcome::NotError,
                Outcome::Malformed(ParseError::WrongType("eventSource")),
            ),
            (
                b"{\"eventSource\":1,\"errorCode\":\"X\"}".to_vec(),
                Outcome::Malformed(ParseError::WrongType("eventSource")),
                Outcome::Malformed(ParseError::WrongType("eventSource")),
            ),
            (
                with("")[..200].to_vec(),
                Outcome::Malformed(ParseError::NotJson),
                Outcome::Malformed(ParseError::NotJson),
            ),
            // Repaired, not lost: a bad byte, a lone surrogate, a wrong type.
            (bad_utf8, Outcome::Clustered, Outcome::Clustered),
            (with(r#","userAgent":"a\ud800b \\ud800""#), Outcome::Clustered, Outcome::Clustered),
            (with(r#","errorCode":7"#), Outcome::Clustered, Outcome::Clustered),
            (
                with_s(&format!(r#","requestParameters":{{"x":{deep}}}"#))
                    .replace("12:00:00Z", "11:59:59Z")
                    .into_bytes(),
                Outcome::Clustered,
                Outcome::Clustered,
            ),
            (huge.clone().into_bytes(), Outcome::Clustered, Outcome::Clustered),
            (with(""), Outcome::Clustered, Outcome::Clustered),
        ];
        for track_keys in [false, true] {
            let mut c = Clusterer::new(ClustererConfig { track_keys, ..Default::default() });
            for (raw, plain, tracked) in &cases {
                let want = if track_keys { tracked } else { plain };
                assert_eq!(&c.ingest(raw), want, "{}", String::from_utf8_lossy(&raw[..raw.len().min(80)]));
            }
            let malformed = if track_keys { 7 } else { 4 };
            assert_eq!(
                c.stats(),
                Stats {
                    records_scanned: 13,
                    error_records: 6,
                    ignored_records: 0,
                    malformed_records: malformed,
                    out_of_window: 0,
                    warned_records: 3,
                    insight_events: 0,
                }
            );
            let a = c.finish();
            assert_eq!(a.repairs, vec![("errorCode".to_string(), 1), (INVALID_TEXT.to_string(), 2)]);
            // The bad byte is in the message, so its record has a template of its own.
            assert_eq!(a.clusters.len(), 4);
            let vpc = a
                .clusters
                .iter()
                .find(|c| c.key.event_name == "DescribeVpcs" && c.key.template.ends_with("does not exist"))
                .unwrap();
            assert_eq!(vpc.count, 3);
            let odd = a.clusters.iter().find(|c| c.key.error_code == "7").unwrap();
            assert_eq!(odd.count, 1);
            let lossy = a.clusters.iter().find(|c| c.key.template.contains('\u{fffd}')).unwrap();
            assert!(lossy.sample_record.as_deref().unwrap().contains('\u{fffd}'));
            // The deeply nested record is 20 KB, under the sample limit, and is the earliest.
            assert!(vpc.sample_record.as_deref().unwrap().contains("requestParameters"));
            let big = a.clusters.iter().find(|c| c.key.event_name == "n").unwrap();
            assert_eq!(big.sample_record, None);
            assert_eq!(big.sample_message, "é".repeat(512));
            assert_eq!(big.key.template, "é".repeat(2048));
        }
    }

    #[test]
    fn merge_of_parts_equals_whole() {
        let (inv, st, pa) = (invictus(), stratus(), panther());
        let all: Vec<&[u8]> = raws(&inv).chain(raws(&st)).chain(pa.iter().map(|l| l.as_slice())).collect();
        let cfg = ClustererConfig { track_keys: true, ..Default::default() };
        let whole = run(cfg.clone(), all.iter().copied());
        // (name, does record i of n go to the left part?)
        type Split = fn(usize, usize) -> bool;
        let splits: [(&str, Split); 3] =
            [("halves", |i, n| i < n / 2), ("interleaved", |i, _| i % 2 == 0), ("reversed halves", |i, n| i >= n / 2)];
        for (name, left) in &splits {
            let mut a = Clusterer::new(cfg.clone());
            let mut b = Clusterer::new(cfg.clone());
            for (i, raw) in all.iter().enumerate() {
                let part = if left(i, all.len()) { &mut a } else { &mut b };
                part.ingest(raw);
            }
            let mut ab = a.clone();
            ab.merge(b.clone());
            assert_eq!(ab.finish(), whole, "{name}");
            b.merge(a);
            assert_eq!(b.finish(), whole, "{name}, merged the other way");
        }
        assert_eq!(whole.stats.records_scanned, 3663);
        assert_eq!(whole.stats.error_records, 420);
    }

    #[test]
    fn fingerprint_is_stable() {
        let key = ClusterKey {
            account_id: "123837392027".into(),
            region: "us-east-1".into(),
            event_source: "ec2.amazonaws.com".into(),
            event_name: "DescribeRouteTables".into(),
            error_code: "Client.InvalidRouteTableID.NotFound".into(),
            template: "The routeTable ID '<*>' does not exist".into(),
        };
        assert_eq!(key.fingerprint(), "b6037b60fff6fae7e57103cb123fe619");
        let empty = ClusterKey {
            account_id: String::new(),
            region: String::new(),
            event_source: String::new(),
            event_name: String::new(),
            error_code: String::new(),
            template: String::new(),
        };
        // SHA-256 of five 0x1f bytes.
        assert_eq!(empty.fingerprint(), "de2d1aa0509a80c5446acd90700fbcd6");
    }

    #[test]
    fn window_is_half_open() {
        let inv = invictus();
        let window = Some((utc("2023-07-10T12:00:00Z"), utc("2023-07-10T12:10:00Z")));
        let mut c = Clusterer::new(ClustererConfig { window, ..Default::default() });
        let mut n = (0, 0);
        for raw in raws(&inv) {
            match c.ingest(raw) {
                Outcome::Clustered => n.0 += 1,
                Outcome::OutOfWindow => n.1 += 1,
                _ => {}
            }
        }
        assert_eq!(n, (144, 156));
        assert_eq!(c.stats().out_of_window, 156);
        let rec = |t: &str, code: &str| {
            format!(r#"{{"eventTime":"{t}","eventSource":"s","eventName":"n"{code}}}"#).into_bytes()
        };
        let cases: &[(&str, &str, Outcome)] = &[
            ("2023-07-10T12:00:00Z", r#","errorCode":"X""#, Outcome::Clustered),
            ("2023-07-10T11:59:59.999999999Z", r#","errorCode":"X""#, Outcome::OutOfWindow),
            ("2023-07-10T12:09:59.999999999Z", r#","errorCode":"X""#, Outcome::Clustered),
            ("2023-07-10T12:10:00Z", r#","errorCode":"X""#, Outcome::OutOfWindow),
            ("2023-07-10 12:10:00", r#","errorCode":"X""#, Outcome::OutOfWindow),
            ("2023-07-10T14:05:00+02:00", r#","errorCode":"X""#, Outcome::Clustered),
            ("2023-07-10T13:00:00Z", r#","errorCode":null"#, Outcome::NotError),
        ];
        for track_keys in [false, true] {
            let mut c = Clusterer::new(ClustererConfig { window, track_keys, ..Default::default() });
            for (t, code, want) in cases {
                assert_eq!(&c.ingest(&rec(t, code)), want, "{t}");
            }
        }
    }

    #[test]
    fn ignore_rules_apply() {
        let inv = invictus();
        let ignore = IgnoreRules::new(
            &["ThrottlingException".to_owned()],
            &["s3.amazonaws.com".to_owned()],
            &["arn:aws:sts::*:assumed-role/stratus-red-team-*".to_owned()],
        )
        .unwrap();
        let a = run(ClustererConfig { ignore, track_keys: true, ..Default::default() }, raws(&inv));
        assert_eq!(
            a.stats,
            Stats {
                records_scanned: 2900,
                error_records: 68,
                ignored_records: 232,
                malformed_records: 0,
                out_of_window: 0,
                ..Stats::default()
            }
        );
        assert!(a.clusters.iter().all(|c| c.key.error_code != "ThrottlingException"
            && c.key.event_source != "s3.amazonaws.com"
            && c.key.event_name != "GetPasswordData"));
        // Ignored records still count as key activity.
        assert_eq!(a.keys.len(), 133);
        assert_eq!(a.keys.iter().map(|k| k.count).sum::<u64>(), 2815);
    }

    fn err_record(t: &str, id: &str, principal: &str, ip: &str, msg: &str) -> Vec<u8> {
        format!(
            r#"{{"eventTime":"{t}","eventID":"{id}","eventSource":"s","eventName":"n","errorCode":"E","errorMessage":"{msg}","sourceIPAddress":"{ip}","userIdentity":{{"arn":"{principal}"}}}}"#
        )
        .into_bytes()
    }

    /// Records that tie on time and id choose the same sample whatever their order: copies,
    /// copies padded with whitespace (same sample text, another tie-break) and another record.
    #[test]
    fn ties_choose_the_same_sample_in_any_order() {
        let t = "2023-07-10T12:00:00Z";
        let a = err_record(t, "e1", "p-a", "1.1.1.1", "Denied");
        let padded = [b" ".as_slice(), &a, b"\n"].concat();
        let b = err_record(t, "e1", "p-b", "1.1.1.1", "Denied");
        let recs = [a.clone(), padded, b, a];
        let mut seen = None;
        for n in 0..4u32.pow(4) {
            let order: Vec<usize> = (0..4).map(|d| (n / 4u32.pow(d) % 4) as usize).collect();
            if (0..4).any(|i| !order.contains(&i)) {
                continue;
            }
            let mut c = Clusterer::new(ClustererConfig::default());
            for &i in &order {
                assert_eq!(c.ingest(&recs[i]), Outcome::Clustered);
            }
            let cluster = c.finish().clusters.remove(0);
            assert_eq!(cluster.count, 4);
            let sample = cluster.sample_record.expect("a sample");
            match &seen {
                None => seen = Some(sample),
                Some(first) => assert_eq!(&sample, first, "{order:?}"),
            }
        }
        assert!(seen.is_some());
    }

    #[test]
    fn tops_and_samples() {
        let mut c = Clusterer::new(ClustererConfig { top_k: 3, max_samples: 2, ..Default::default() });
        let recs = [
            err_record("2023-07-10T12:00:05Z", "e5", "p-b", "1.1.1.1", "Denied for req0001"),
            err_record("2023-07-10T12:00:03Z", "e3", "p-a", "1.1.1.1", "Denied for req0002"),
            err_record("2023-07-10T12:00:09Z", "e9", "p-b", "2.2.2.2", "Denied for req0003"),
            err_record("2023-07-10T12:00:03Z", "e3", "p-c", "", "Denied for req0004"),
            err_record("2023-07-10T12:00:01Z", "e1", "p-c", "", "Denied for req0005"),
            err_record("2023-07-10T12:00:02Z", "e2", "p-d", "3.3.3.3", "Denied for req0006"),
        ];
        for r in &recs {
            assert_eq!(c.ingest(r), Outcome::Clustered);
        }
        let a = c.finish();
        assert_eq!(a.clusters.len(), 1);
        let k = &a.clusters[0];
        assert_eq!(k.count, 6);
        assert_eq!(k.key.template, "Denied for <ID>");
        assert_eq!(k.top_principals, counted(&[("p-b", 2), ("p-c", 2), ("p-a", 1)]));
        assert_eq!(k.top_source_ips, counted(&[("1.1.1.1", 2), ("2.2.2.2", 1), ("3.3.3.3", 1)]));
        assert_eq!(k.sample_event_ids, vec!["e1", "e2"]);
        assert_eq!(k.sample_message, "Denied for req0005");
        assert!(k.sample_record.as_deref().unwrap().contains("\"e1\""));
        assert_eq!((k.first_seen, k.last_seen), (utc("2023-07-10T12:00:01Z"), utc("2023-07-10T12:00:09Z")));

        // Only 64 distinct values are counted, the same ones whatever the order; the others
        // only add to the total.
        let top = |order: &mut dyn Iterator<Item = usize>| {
            let mut c = Clusterer::new(ClustererConfig { top_k: 100, ..Default::default() });
            for i in order {
                c.ingest(&err_record("2023-07-10T12:00:00Z", &format!("e{i}"), &format!("p{i:02}"), "ip", "m"));
            }
            c.ingest(&err_record("2023-07-10T12:00:00Z", "x", "p69", "ip", "m"));
            c.finish().clusters.remove(0)
        };
        let k = top(&mut (0..70));
        assert_eq!(k.count, 71);
        assert_eq!(k.top_principals.len(), TOP_TRACKED);
        assert_eq!(
            k.top_principals.iter().map(|p| p.count).sum::<u64>(),
            64 + u64::from(k.top_principals.iter().any(|p| p.value == "p69"))
        );
        assert_eq!(k.top_source_ips, counted(&[("ip", 71)]));
        assert_eq!(top(&mut (0..70).rev()).top_principals, k.top_principals);
        let (mut a, mut b) = (
            Clusterer::new(ClustererConfig { top_k: 100, ..Default::default() }),
            Clusterer::new(ClustererConfig { top_k: 100, ..Default::default() }),
        );
        for i in 0..70 {
            let c = if i % 3 == 0 { &mut a } else { &mut b };
            c.ingest(&err_record("2023-07-10T12:00:00Z", &format!("e{i}"), &format!("p{i:02}"), "ip", "m"));
        }
        b.ingest(&err_record("2023-07-10T12:00:00Z", "x", "p69", "ip", "m"));
        a.merge(b);
        assert_eq!(a.finish().clusters[0].top_principals, k.top_principals);

        // The sample message is cut to 1 KiB on a char boundary.
        let long = format!("a{}", "é".repeat(600));
        let mut c = Clusterer::new(ClustererConfig::default());
        c.ingest(&err_record("2023-07-10T12:00:00Z", "e", "p", "ip", &long));
        let k = &c.finish().clusters[0];
        assert_eq!(k.sample_message, format!("a{}", "é".repeat(511)));
    }

    #[test]
    fn aggregate_rows() {
        let ignore = IgnoreRules::new(&[], &[], &["arn:aws:iam::*:user/ci".to_owned()]).unwrap();
        let window = Some((utc("2023-07-10T12:00:00Z"), utc("2023-07-10T13:00:00Z")));
        let mut c = Clusterer::new(ClustererConfig { ignore, window, ..Default::default() });
        let row = |principal: &str, count: u64, first: &str, last: &str, id: Option<&str>| AggregateRow {
            account_id: "123837392027".into(),
            region: "us-east-1".into(),
            event_source: "ec2.amazonaws.com".into(),
            event_name: "DescribeRouteTables".into(),
            error_code: "Client.InvalidRouteTableID.NotFound".into(),
            error_message: format!("The routeTable ID 'rtb-0{count}' does not exist"),
            principal: principal.into(),
            source_ip: "10.0.0.1".into(),
            count,
            first_seen: utc(first),
            last_seen: utc(last),
            sample_event_id: id.map(str::to_owned),
        };
        c.ingest_aggregate(&row(
            "arn:aws:iam::1:user/a",
            10,
            "2023-07-10T12:10:00Z",
            "2023-07-10T12:20:00Z",
            Some("agg-1"),
        ));
        c.ingest_aggregate(&row("arn:aws:iam::1:user/b", 5, "2023-07-10T11:50:00Z", "2023-07-10T12:05:00Z", None));
        c.ingest_aggregate(&row("arn:aws:iam::1:user/ci", 7, "2023-07-10T12:10:00Z", "2023-07-10T12:20:00Z", None));
        c.ingest_aggregate(&row("arn:aws:iam::1:user/a", 4, "2023-07-10T13:00:00Z", "2023-07-10T13:30:00Z", None));
        c.ingest_aggregate(&row("arn:aws:iam::1:user/a", 0, "2023-07-10T12:10:00Z", "2023-07-10T12:20:00Z", None));
        // A raw record of the same error joins the same cluster.
        let raw = r#"{"eventTime":"2023-07-10T12:30:00Z","eventID":"raw-1","eventSource":"ec2.amazonaws.com","eventName":"DescribeRouteTables","awsRegion":"us-east-1","recipientAccountId":"123837392027","errorCode":"Client.InvalidRouteTableID.NotFound","errorMessage":"The routeTable ID 'rtb-06711e8f3a624506d' does not exist","userIdentity":{"arn":"arn:aws:iam::1:user/a"}}"#;
        assert_eq!(c.ingest(raw.as_bytes()), Outcome::Clustered);
        c.observe_key(KeyActivity {
            access_key_id: "AKIAEXAMPLE".into(),
            first_seen: utc("2023-07-10T12:30:00Z"),
            last_seen: utc("2023-07-10T12:30:00Z"),
            principal_arn: "arn:aws:iam::1:user/a".into(),
            account_id: "1".into(),
            last_event_name: "DescribeRouteTables".into(),
            last_source_ip: "10.0.0.1".into(),
            count: 3,
        });
        let a = c.finish();
        assert_eq!(
            a.stats,
            Stats {
                records_scanned: 27,
                error_records: 16,
                ignored_records: 7,
                malformed_records: 0,
                out_of_window: 4,
                ..Stats::default()
            }
        );
        assert_eq!(a.clusters.len(), 1);
        let k = &a.clusters[0];
        assert_eq!(k.fingerprint, "b6037b60fff6fae7e57103cb123fe619");
        assert_eq!(k.count, 16);
        assert_eq!((k.first_seen, k.last_seen), (utc("2023-07-10T11:50:00Z"), utc("2023-07-10T12:30:00Z")));
        assert_eq!(k.top_principals, counted(&[("arn:aws:iam::1:user/a", 11), ("arn:aws:iam::1:user/b", 5)]));
        assert_eq!(k.top_source_ips, counted(&[("10.0.0.1", 15)]));
        assert_eq!(k.sample_event_ids, vec!["agg-1", "raw-1"]);
        assert_eq!(k.sample_message, "The routeTable ID 'rtb-05' does not exist");
        assert_eq!(k.sample_record, None);
        assert_eq!(a.keys.len(), 1);
        assert_eq!(a.keys[0].count, 3);
    }

    #[test]
    fn template_cache_is_bounded() {
        let mut cache = TemplateCache::new(2);
        let msgs = ["id 'a'", "user 123", "plain", "id 'b'", "user 123"];
        for m in msgs {
            assert_eq!(cache.get(m), template(m));
            assert!(cache.len <= 2);
        }
        let long = format!("x{}", "y".repeat(5000));
        assert_eq!(cache.get(&long), template(&long));
        assert!(cache.map.values().flatten().all(|(m, _)| m.chars().count() <= 2048));
    }

    #[test]
    fn clusterer_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Clusterer>();
        assert_send::<Analysis>();
    }
}
