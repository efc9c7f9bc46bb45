//! A mini CloudWatch Logs Insights engine: enough of the query language to run the queries a
//! CloudTrail reader sends, and strict about the rest (anything else is a parse error, which the
//! server answers with `MalformedQueryException`).
//!
//! Supported: stages separated by `|` (and `#` comments); `filter` with `and`/`or`/`not`,
//! parentheses, `ispresent(f)`, `isempty(f)`, `isblank(f)`, `=`, `!=`, `<`, `<=`, `>`, `>=`,
//! `like "substring"`; `fields` and `display`; `stats` with `count(*)`, `count(f)`,
//! `count_distinct(f)`, `min`, `max`, `sum`, `avg`, `earliest`, `latest` and `by f1, f2`;
//! `sort f [asc|desc], …`; `limit N`. Value expressions are a field, a string or number literal,
//! or `coalesce(a, b, …)`. Names with characters other than letters, digits, `_`, `.`, `@`
//! need backticks, as in Insights.
//!
//! Records: `@timestamp`, `@ingestionTime`, `@message`, `@logStream`, `@log`
//! (`account-id:log-group`), plus the fields of a JSON-object message flattened with dots
//! (`userIdentity.arn`, arrays as `items.0.id`), as the "Supported logs and discovered fields"
//! page describes. JSON `null` is not a field (it has no value to show). Numbers and booleans
//! become their JSON text. All output values are strings; `@timestamp`, `@ingestionTime` and
//! `min`/`max`/`earliest`/`latest` of them are `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
//!
//! Semantics chosen (the AWS docs are silent or terse):
//! * `coalesce` returns its first argument that has a value ("first non-null value" in the
//!   docs); an empty string is a value, so it is returned, not skipped.
//! * A comparison with a missing operand is false, for `!=` too.
//! * `fields` adds computed fields to each record and chooses the output columns; later stages
//!   still see every discovered field.
//! * `stats … by f`: a record without `f` is kept, in the group whose `f` is absent; that row
//!   leaves `f` out. `count(f)`, `min`, `max`, `earliest`, `latest` skip records without `f`;
//!   `earliest`/`latest` pick by `@timestamp`, ties going to the event stored first/last.
//!   `stats` over no records gives no rows. Output columns: the `by` fields, then aggregates.
//! * Row order: events newest first unless sorted; `stats` groups in order of first appearance.
//!   `sort` defaults to ascending and uses the documented natural order (non-numbers before
//!   numbers, digit runs compared by length then value); missing values sort last.
//! * Without `fields`/`display`/`stats` the columns are `@timestamp`, `@message`,
//!   `@logStream`, `@log` (no `@ptr`).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::prefilter::{Needs, literal_needs};

/// A field value; timestamps keep their millisecond value so they sort and compare as time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Val {
    Str(String),
    Time(i64),
}

impl Val {
    pub fn render(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Time(ms) => format_timestamp(*ms),
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Val::Time(ms) => Some(*ms as f64),
            Val::Str(s) => parse_number(s),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC, the form Insights shows `@timestamp` in.
pub fn format_timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A value made only of a number (optional sign, digits, optional decimals).
fn parse_number(s: &str) -> Option<f64> {
    let t = s.strip_prefix('-').unwrap_or(s);
    let mut parts = t.splitn(2, '.');
    let int = parts.next()?;
    let frac = parts.next();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    s.parse().ok()
}

/// One log event as the engine sees it.
pub struct EventRef<'a> {
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub seq: u64,
    pub message: &'a str,
    pub log_stream: &'a str,
    /// `account-id:log-group-name`.
    pub log: &'a str,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOutput {
    pub rows: Vec<Vec<(String, String)>>,
    /// Records that passed the stages before the first `stats` (or all stages).
    pub records_matched: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    Filter(BoolExpr),
    Fields(Vec<(Expr, String)>),
    Display(Vec<String>),
    Stats { aggs: Vec<(Agg, String)>, by: Vec<(Expr, String)> },
    Sort(Vec<(Expr, bool)>),
    Limit(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Field(String),
    Lit(String),
    Coalesce(Vec<Expr>),
}

impl Expr {
    /// Like [`Expr::eval`], borrowing a field's value instead of copying it.
    fn eval_ref<'r>(&self, r: &'r Rec) -> Option<Cow<'r, Val>> {
        match self {
            Expr::Field(f) => r.fields.get(f).map(Cow::Borrowed),
            Expr::Lit(s) => Some(Cow::Owned(Val::Str(s.clone()))),
            Expr::Coalesce(args) => args.iter().find_map(|a| a.eval_ref(r)),
        }
    }

    fn eval(&self, r: &Rec) -> Option<Val> {
        match self {
            Expr::Field(f) => r.fields.get(f).cloned(),
            Expr::Lit(s) => Some(Val::Str(s.clone())),
            Expr::Coalesce(args) => args.iter().find_map(|a| a.eval(r)),
        }
    }

    /// The column name Insights gives an expression that has no `as` alias.
    fn canonical(&self) -> String {
        match self {
            Expr::Field(f) => f.clone(),
            Expr::Lit(s) => format!("\"{s}\""),
            Expr::Coalesce(args) => {
                format!("coalesce({})", args.iter().map(Expr::canonical).collect::<Vec<_>>().join(","))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum BoolExpr {
    Or(Box<BoolExpr>, Box<BoolExpr>),
    And(Box<BoolExpr>, Box<BoolExpr>),
    Not(Box<BoolExpr>),
    Cmp(Expr, CmpOp, Expr),
    Like(Expr, String),
    IsPresent(Expr),
    IsEmpty(Expr),
    IsBlank(Expr),
}

impl BoolExpr {
    fn eval(&self, r: &Rec) -> bool {
        match self {
            BoolExpr::Or(a, b) => a.eval(r) || b.eval(r),
            BoolExpr::And(a, b) => a.eval(r) && b.eval(r),
            BoolExpr::Not(a) => !a.eval(r),
            BoolExpr::Cmp(a, op, b) => match (a.eval(r), b.eval(r)) {
                (Some(x), Some(y)) => {
                    let ord = compare_values(&x, &y);
                    match op {
                        CmpOp::Eq => ord == Ordering::Equal,
                        CmpOp::Ne => ord != Ordering::Equal,
                        CmpOp::Lt => ord == Ordering::Less,
                        CmpOp::Le => ord != Ordering::Greater,
                        CmpOp::Gt => ord == Ordering::Greater,
                        CmpOp::Ge => ord != Ordering::Less,
                    }
                }
                _ => false,
            },
            BoolExpr::Like(a, s) => a.eval(r).is_some_and(|v| v.render().contains(s.as_str())),
            BoolExpr::IsPresent(e) => e.eval(r).is_some(),
            BoolExpr::IsEmpty(e) => e.eval(r).is_none_or(|v| v.render().is_empty()),
            BoolExpr::IsBlank(e) => e.eval(r).is_none_or(|v| v.render().trim().is_empty()),
        }
    }
}

/// Numeric when both sides are numbers (or times), else by text.
fn compare_values(a: &Val, b: &Val) -> Ordering {
    match (a.number(), b.number()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.render().cmp(&b.render()),
    }
}

/// The natural order the `sort` docs describe.
fn natural_cmp(a: &Val, b: &Val) -> Ordering {
    if let (Val::Time(x), Val::Time(y)) = (a, b) {
        return x.cmp(y);
    }
    match (a.number(), b.number()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => {
            let (ra, rb) = (a.render(), b.render());
            let (ca, cb) = (chunks(&ra), chunks(&rb));
            for (x, y) in ca.iter().zip(cb.iter()) {
                let both_digits = x.as_bytes()[0].is_ascii_digit() && y.as_bytes()[0].is_ascii_digit();
                let o = if both_digits { x.len().cmp(&y.len()).then_with(|| x.cmp(y)) } else { x.cmp(y) };
                if o != Ordering::Equal {
                    return o;
                }
            }
            ca.len().cmp(&cb.len())
        }
    }
}

fn chunks(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev: Option<bool> = None;
    for (i, c) in s.char_indices() {
        let d = c.is_ascii_digit();
        if prev.is_some_and(|p| p != d) {
            out.push(&s[start..i]);
            start = i;
        }
        prev = Some(d);
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AggFn {
    Count,
    CountDistinct,
    Min,
    Max,
    Sum,
    Avg,
    Earliest,
    Latest,
}

#[derive(Debug, Clone, PartialEq)]
struct Agg {
    func: AggFn,
    /// None for `count(*)` / `count()`.
    arg: Option<Expr>,
}

enum Acc {
    Count(u64),
    Distinct(HashSet<Val>),
    /// (value, timestamp, seq) of the pick so far: ties go to the newest event, the one
    /// seen first in the newest-first order Insights reads in.
    Min(Option<(Val, i64, u64)>),
    Max(Option<(Val, i64, u64)>),
    Sum(Option<f64>),
    Avg(f64, u64),
    /// (timestamp, seq, value) of the pick so far.
    Earliest(Option<(i64, u64, Val)>),
    Latest(Option<(i64, u64, Val)>),
}

impl Acc {
    fn new(f: AggFn) -> Self {
        match f {
            AggFn::Count => Acc::Count(0),
            AggFn::CountDistinct => Acc::Distinct(HashSet::new()),
            AggFn::Min => Acc::Min(None),
            AggFn::Max => Acc::Max(None),
            AggFn::Sum => Acc::Sum(None),
            AggFn::Avg => Acc::Avg(0.0, 0),
            AggFn::Earliest => Acc::Earliest(None),
            AggFn::Latest => Acc::Latest(None),
        }
    }

    /// Adds a record. Records may come in any order: every pick depends on values and
    /// `(timestamp, seq)` only (sums of fractions may round differently).
    fn add(&mut self, agg: &Agg, r: &Rec) {
        let Some(e) = &agg.arg else {
            if let Acc::Count(n) = self {
                *n += 1;
            }
            return;
        };
        let at = (r.ts, r.seq);
        match self {
            Acc::Count(n) => {
                if e.eval_ref(r).is_some() {
                    *n += 1;
                }
            }
            Acc::Distinct(set) => {
                if let Some(v) = e.eval_ref(r) {
                    if !set.contains(v.as_ref()) {
                        set.insert(v.into_owned());
                    }
                }
            }
            Acc::Min(cur) => pick(cur, e.eval_ref(r), Ordering::Less, at),
            Acc::Max(cur) => pick(cur, e.eval_ref(r), Ordering::Greater, at),
            Acc::Sum(s) => {
                if let Some(x) = e.eval_ref(r).and_then(|v| v.number()) {
                    *s = Some(s.unwrap_or(0.0) + x);
                }
            }
            Acc::Avg(s, n) => {
                if let Some(x) = e.eval_ref(r).and_then(|v| v.number()) {
                    *s += x;
                    *n += 1;
                }
            }
            Acc::Earliest(cur) => {
                if cur.as_ref().is_none_or(|(t, q, _)| at < (*t, *q)) {
                    if let Some(v) = e.eval_ref(r) {
                        *cur = Some((r.ts, r.seq, v.into_owned()));
                    }
                }
            }
            Acc::Latest(cur) => {
                if cur.as_ref().is_none_or(|(t, q, _)| at > (*t, *q)) {
                    if let Some(v) = e.eval_ref(r) {
                        *cur = Some((r.ts, r.seq, v.into_owned()));
                    }
                }
            }
        }
    }

    fn finish(self) -> Option<Val> {
        match self {
            Acc::Count(n) => Some(Val::Str(n.to_string())),
            Acc::Distinct(s) => Some(Val::Str(s.len().to_string())),
            Acc::Min(v) | Acc::Max(v) => v.map(|(v, _, _)| v),
            Acc::Sum(s) => s.map(|x| Val::Str(format_number(x))),
            Acc::Avg(s, n) => (n > 0).then(|| Val::Str(format_number(s / n as f64))),
            Acc::Earliest(p) | Acc::Latest(p) => p.map(|(_, _, v)| v),
        }
    }
}

/// Min or max: `v` replaces the pick when it orders `want` against it, or ties and is newer.
fn pick(cur: &mut Option<(Val, i64, u64)>, v: Option<Cow<'_, Val>>, want: Ordering, at: (i64, u64)) {
    let Some(v) = v else { return };
    let better = cur.as_ref().is_none_or(|(c, t, q)| {
        let o = compare_values(&v, c);
        o == want || (o == Ordering::Equal && at > (*t, *q))
    });
    if better {
        *cur = Some((v.into_owned(), at.0, at.1));
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

/// A record: its event's time and storage order (for `earliest`/`latest`), and its fields.
struct Rec {
    ts: i64,
    seq: u64,
    fields: HashMap<String, Val>,
}

/// Which discovered fields a query can look at: a field it never names cannot change its
/// answer, so records are built with only these (`None`: all of them).
struct Wanted {
    names: HashSet<String>,
    /// Every proper dotted prefix of a name: objects and arrays worth descending into.
    prefixes: HashSet<String>,
}

impl Wanted {
    fn new(names: HashSet<String>) -> Self {
        let mut prefixes = HashSet::new();
        for n in &names {
            let mut at = 0;
            while let Some(i) = n[at..].find('.') {
                prefixes.insert(n[..at + i].to_string());
                at += i + 1;
            }
        }
        Wanted { names, prefixes }
    }
}

/// An object's members as raw JSON, keys unescaped, in document order.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(32);
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The members whose names (`prefix` + key) are wanted, in key order, a repeated key keeping
/// its last value: the order `serde_json::Map` iterates in, so that when two paths flatten to
/// one name the same one wins as when the whole record was parsed.
fn wanted_members<'a>(
    text: &'a str,
    name: &mut String,
    wanted: &Wanted,
    top: bool,
) -> Vec<(Cow<'a, str>, &'a RawValue)> {
    let Ok(Members(all)) = serde_json::from_str::<Members>(text) else { return Vec::new() };
    let base = name.len();
    let mut keep: Vec<(Cow<'a, str>, &'a RawValue)> = all
        .into_iter()
        .filter(|(k, _)| {
            push_key(name, k, top);
            let hit = wanted.names.contains(name.as_str()) || wanted.prefixes.contains(name.as_str());
            name.truncate(base);
            hit
        })
        .collect();
    // Stable: among equal keys the last stays last; keep it.
    keep.sort_by(|a, b| a.0.cmp(&b.0));
    keep.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    keep
}

/// Appends a member's key to a field name: dotted below the top level, and a top-level key
/// starting with '@' gets another '@', as Insights shows discovered fields.
fn push_key(name: &mut String, key: &str, top: bool) {
    if top {
        if key.starts_with('@') {
            name.push('@');
        }
    } else {
        name.push('.');
    }
    name.push_str(key);
}

/// Adds the fields under `name` to `out`, as discovered fields are named: object keys and
/// array indexes joined with dots, `null` left out, numbers and booleans as their JSON text.
fn flatten_raw(name: &mut String, raw: &RawValue, wanted: &Wanted, out: &mut HashMap<String, Val>) {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            if !wanted.prefixes.contains(name.as_str()) {
                return;
            }
            let base = name.len();
            for (k, child) in wanted_members(text, name, wanted, false) {
                push_key(name, &k, false);
                flatten_raw(name, child, wanted, out);
                name.truncate(base);
            }
        }
        Some(b'[') => {
            if !wanted.prefixes.contains(name.as_str()) {
                return;
            }
            if let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(text) {
                let base = name.len();
                for (i, child) in items.iter().enumerate() {
                    name.push('.');
                    name.push_str(&i.to_string());
                    flatten_raw(name, child, wanted, out);
                    name.truncate(base);
                }
            }
        }
        _ if !wanted.names.contains(name.as_str()) => {}
        Some(b'"') => {
            if let Ok(s) = serde_json::from_str::<String>(text) {
                out.insert(name.clone(), Val::Str(s));
            }
        }
        Some(b'n') => {}
        _ => {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                out.insert(name.clone(), Val::Str(v.to_string()));
            }
        }
    }
}

fn build_record(e: &EventRef<'_>, wanted: &Wanted) -> Rec {
    let mut fields = HashMap::new();
    let mut name = String::with_capacity(64);
    for (k, child) in wanted_members(e.message, &mut name, wanted, true) {
        push_key(&mut name, &k, true);
        flatten_raw(&mut name, child, wanted, &mut fields);
        name.clear();
    }
    let mut synthetic = |field: &str, v: Val| {
        if wanted.names.contains(field) {
            fields.insert(field.to_string(), v);
        }
    };
    synthetic("@timestamp", Val::Time(e.timestamp));
    synthetic("@ingestionTime", Val::Time(e.ingestion_time));
    if wanted.names.contains("@message") {
        fields.insert("@message".into(), Val::Str(e.message.to_string()));
    }
    if wanted.names.contains("@logStream") {
        fields.insert("@logStream".into(), Val::Str(e.log_stream.to_string()));
    }
    if wanted.names.contains("@log") {
        fields.insert("@log".into(), Val::Str(e.log.to_string()));
    }
    Rec { ts: e.timestamp, seq: e.seq, fields }
}

const SYNTHETIC: [&str; 5] = ["@timestamp", "@ingestionTime", "@message", "@logStream", "@log"];

impl Expr {
    fn field_names<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Field(f) => out.push(f),
            Expr::Lit(_) => {}
            Expr::Coalesce(args) => args.iter().for_each(|a| a.field_names(out)),
        }
    }

    /// Raw text a message needs for this to have a value.
    fn needs(&self) -> Needs {
        match self {
            Expr::Lit(_) => Needs::Nothing,
            Expr::Coalesce(args) => args.iter().map(Expr::needs).reduce(Needs::or).unwrap_or(Needs::Nothing),
            Expr::Field(f) if SYNTHETIC.contains(&f.as_str()) => Needs::Nothing,
            // A discovered field's name is its keys joined with dots (and array indexes), so
            // each part that is not an index is part of a key the message spells out.
            Expr::Field(f) => f
                .split('.')
                .map(|p| p.trim_start_matches('@'))
                .filter(|p| !p.is_empty() && !p.bytes().all(|b| b.is_ascii_digit()))
                .max_by_key(|p| p.len())
                .map_or(Needs::Nothing, Needs::text),
        }
    }
}

impl BoolExpr {
    fn field_names<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            BoolExpr::Or(a, b) | BoolExpr::And(a, b) => {
                a.field_names(out);
                b.field_names(out);
            }
            BoolExpr::Not(a) => a.field_names(out),
            BoolExpr::Cmp(a, _, b) => {
                a.field_names(out);
                b.field_names(out);
            }
            BoolExpr::Like(e, _) | BoolExpr::IsPresent(e) | BoolExpr::IsEmpty(e) | BoolExpr::IsBlank(e) => {
                e.field_names(out)
            }
        }
    }

    /// Raw text a message needs for this to be true.
    fn needs(&self) -> Needs {
        match self {
            BoolExpr::Or(a, b) => Needs::or(a.needs(), b.needs()),
            BoolExpr::And(a, b) => Needs::and(a.needs(), b.needs()),
            BoolExpr::Not(_) | BoolExpr::IsEmpty(_) | BoolExpr::IsBlank(_) => Needs::Nothing,
            BoolExpr::Like(e, _) | BoolExpr::IsPresent(e) => e.needs(),
            BoolExpr::Cmp(a, op, b) => {
                // A comparison with a missing side is false; `=` against text that is not a
                // number compares text, which the message then holds as written.
                let sides = Needs::and(a.needs(), b.needs());
                match (op, a, b) {
                    (CmpOp::Eq, Expr::Field(_), Expr::Lit(s)) | (CmpOp::Eq, Expr::Lit(s), Expr::Field(_)) => {
                        Needs::and(sides, literal_needs(s))
                    }
                    _ => sides,
                }
            }
        }
    }
}

impl Query {
    /// The fields any stage names, and the default columns when no stage picks columns.
    fn wanted(&self) -> Wanted {
        let mut names: Vec<&str> = Vec::new();
        let mut picks_columns = false;
        for stage in &self.stages {
            match stage {
                Stage::Filter(b) => b.field_names(&mut names),
                Stage::Fields(items) => {
                    picks_columns = true;
                    items.iter().for_each(|(e, _)| e.field_names(&mut names));
                }
                Stage::Display(cols) => {
                    picks_columns = true;
                    names.extend(cols.iter().map(String::as_str));
                }
                Stage::Stats { aggs, by } => {
                    picks_columns = true;
                    aggs.iter().filter_map(|(a, _)| a.arg.as_ref()).for_each(|e| e.field_names(&mut names));
                    by.iter().for_each(|(e, _)| e.field_names(&mut names));
                }
                Stage::Sort(keys) => keys.iter().for_each(|(e, _)| e.field_names(&mut names)),
                Stage::Limit(_) => {}
            }
        }
        if !picks_columns {
            names.extend(DEFAULT_COLUMNS);
        }
        Wanted::new(names.into_iter().map(str::to_string).collect())
    }
}

const DEFAULT_COLUMNS: [&str; 4] = ["@timestamp", "@message", "@logStream", "@log"];

impl Query {
    /// Parses a query string; the error text goes into `MalformedQueryException`.
    pub fn parse(src: &str) -> Result<Self, String> {
        let toks = lex(src)?;
        let mut stages = Vec::new();
        for part in toks.split(|t| *t == Tok::Sym("|")) {
            if part.is_empty() {
                if toks.is_empty() {
                    break;
                }
                return Err("empty command between '|'".into());
            }
            stages.push(parse_stage(part)?);
        }
        Ok(Query { stages })
    }

    pub fn run<'a>(&self, events: impl IntoIterator<Item = EventRef<'a>>) -> QueryOutput {
        // Leading filters keep or drop each record on its own, so they run as records are
        // built and only the kept ones are held: a query may scan millions of events.
        let lead: Vec<&BoolExpr> = self
            .stages
            .iter()
            .map_while(|s| match s {
                Stage::Filter(b) => Some(b),
                _ => None,
            })
            .collect();
        let needs = lead.iter().fold(Needs::Nothing, |n, b| Needs::and(n, b.needs()));
        let wanted = self.wanted();
        let built = events
            .into_iter()
            .filter(|e| needs.may_match(e.message))
            .map(|e| build_record(&e, &wanted))
            .filter(|r| lead.iter().all(|b| b.eval(r)));
        // When only per-record stages come before the first `stats`, records are aggregated
        // as they come and never held; other queries collect them first.
        let rest = &self.stages[lead.len()..];
        let per_record = rest.iter().take_while(|s| matches!(s, Stage::Filter(_) | Stage::Fields(_))).count();
        let mut columns: Option<Vec<String>> = None;
        let mut matched: Option<u64> = None;
        let (mut recs, next) = match rest.get(per_record) {
            Some(Stage::Stats { aggs, by }) => {
                let mut agg = Aggregator::new(aggs, by);
                let mut n = 0u64;
                'records: for mut r in built {
                    for stage in &rest[..per_record] {
                        match stage {
                            Stage::Filter(b) if !b.eval(&r) => continue 'records,
                            Stage::Fields(items) => apply_fields(&mut r, items),
                            _ => {}
                        }
                    }
                    n += 1;
                    agg.add(&r);
                }
                matched = Some(n);
                columns = Some(by.iter().map(|(_, n)| n.clone()).chain(aggs.iter().map(|(_, n)| n.clone())).collect());
                (agg.finish(), lead.len() + per_record + 1)
            }
            _ => {
                let mut recs: Vec<Rec> = built.collect();
                recs.sort_by_key(|r| std::cmp::Reverse((r.ts, r.seq)));
                (recs, lead.len())
            }
        };
        for stage in &self.stages[next..] {
            match stage {
                Stage::Filter(b) => recs.retain(|r| b.eval(r)),
                Stage::Fields(items) => {
                    for r in recs.iter_mut() {
                        apply_fields(r, items);
                    }
                    let cols = columns.get_or_insert_with(Vec::new);
                    for (_, name) in items {
                        if !cols.contains(name) {
                            cols.push(name.clone());
                        }
                    }
                }
                Stage::Display(names) => columns = Some(names.clone()),
                Stage::Stats { aggs, by } => {
                    matched.get_or_insert(recs.len() as u64);
                    let mut agg = Aggregator::new(aggs, by);
                    recs.iter().for_each(|r| agg.add(r));
                    recs = agg.finish();
                    columns =
                        Some(by.iter().map(|(_, n)| n.clone()).chain(aggs.iter().map(|(_, n)| n.clone())).collect());
                }
                Stage::Sort(keys) => recs.sort_by(|a, b| {
                    for (e, desc) in keys {
                        let o = match (e.eval(a), e.eval(b)) {
                            (Some(x), Some(y)) => {
                                let o = natural_cmp(&x, &y);
                                if *desc { o.reverse() } else { o }
                            }
                            (Some(_), None) => Ordering::Less,
                            (None, Some(_)) => Ordering::Greater,
                            (None, None) => Ordering::Equal,
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    Ordering::Equal
                }),
                Stage::Limit(n) => recs.truncate(*n),
            }
        }
        let columns = columns.unwrap_or_else(|| DEFAULT_COLUMNS.iter().map(|s| s.to_string()).collect());
        let rows = recs
            .iter()
            .map(|r| columns.iter().filter_map(|c| r.fields.get(c).map(|v| (c.clone(), v.render()))).collect())
            .collect();
        QueryOutput { rows, records_matched: matched.unwrap_or(recs.len() as u64) }
    }
}

/// `fields`: computed fields replace (or, without a value, remove) the named ones.
fn apply_fields(r: &mut Rec, items: &[(Expr, String)]) {
    for (e, name) in items {
        match e.eval(r) {
            Some(v) => r.fields.insert(name.clone(), v),
            None => r.fields.remove(name),
        };
    }
}

/// A `stats` group: its key, its accumulators and its newest member's `(timestamp, seq)`.
type Group = (Vec<Option<Val>>, Vec<Acc>, (i64, u64));

/// `stats … by …`, fed one record at a time.
struct Aggregator<'q> {
    aggs: &'q [(Agg, String)],
    by: &'q [(Expr, String)],
    index: HashMap<Vec<Option<Val>>, usize>,
    groups: Vec<Group>,
}

impl<'q> Aggregator<'q> {
    fn new(aggs: &'q [(Agg, String)], by: &'q [(Expr, String)]) -> Self {
        Aggregator { aggs, by, index: HashMap::new(), groups: Vec::new() }
    }

    fn add(&mut self, r: &Rec) {
        let key: Vec<Option<Val>> = self.by.iter().map(|(e, _)| e.eval(r)).collect();
        let gi = match self.index.get(&key) {
            Some(&gi) => gi,
            None => {
                self.groups.push((
                    key.clone(),
                    self.aggs.iter().map(|(a, _)| Acc::new(a.func)).collect(),
                    (r.ts, r.seq),
                ));
                self.index.insert(key, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[gi];
        group.2 = group.2.max((r.ts, r.seq));
        for (acc, (agg, _)) in group.1.iter_mut().zip(self.aggs) {
            acc.add(agg, r);
        }
    }

    /// One record per group, in order of first appearance among events newest first: the
    /// order of their newest members.
    fn finish(self) -> Vec<Rec> {
        let mut groups = self.groups;
        groups.sort_by_key(|g| std::cmp::Reverse(g.2));
        groups
            .into_iter()
            .map(|(key, accs, _)| {
                let mut fields = HashMap::new();
                for ((_, name), v) in self.by.iter().zip(key) {
                    if let Some(v) = v {
                        fields.insert(name.clone(), v);
                    }
                }
                for ((_, name), acc) in self.aggs.iter().zip(accs) {
                    if let Some(v) = acc.finish() {
                        fields.insert(name.clone(), v);
                    }
                }
                Rec { ts: 0, seq: 0, fields }
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated {c}-quoted text")),
                    Some(&q) if q == c => break,
                    Some('\\') if c != '`' && i + 1 < chars.len() => {
                        s.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    Some(&ch) => s.push(ch),
                }
                i += 1;
            }
            i += 1;
            out.push(if c == '`' { Tok::Ident(s) } else { Tok::Str(s) });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '@' || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_.@$".contains(chars[i])) {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match two.as_str() {
                "!=" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push(Tok::Sym(s));
                i += 2;
                continue;
            }
            let sym = match c {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '|' => "|",
                '*' => "*",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                _ => return Err(format!("unsupported character '{c}' at offset {i}")),
            };
            out.push(Tok::Sym(sym));
            i += 1;
        }
    }
    Ok(out)
}

struct P<'t> {
    toks: &'t [Tok],
    pos: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn at_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn at_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        match self.next() {
            Some(Tok::Sym(x)) if x == s => Ok(()),
            other => Err(format!("expected '{s}', found {other:?}")),
        }
    }

    fn done(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            other => Err(format!("expected a field name, found {other:?}")),
        }
    }

    fn alias(&mut self, default: String) -> Result<String, String> {
        if self.at_keyword("as") {
            self.pos += 1;
            self.ident()
        } else {
            Ok(default)
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Expr::Lit(s)),
            Some(Tok::Num(n)) => Ok(Expr::Lit(n)),
            Some(Tok::Ident(name)) => {
                if self.at_sym("(") {
                    if !name.eq_ignore_ascii_case("coalesce") {
                        return Err(format!("unsupported function '{name}'"));
                    }
                    self.pos += 1;
                    let mut args = vec![self.expr()?];
                    while self.at_sym(",") {
                        self.pos += 1;
                        args.push(self.expr()?);
                    }
                    self.expect_sym(")")?;
                    Ok(Expr::Coalesce(args))
                } else {
                    Ok(Expr::Field(name))
                }
            }
            other => Err(format!("expected a field, literal or function, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<BoolExpr, String> {
        let mut e = self.and()?;
        while self.at_keyword("or") {
            self.pos += 1;
            e = BoolExpr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<BoolExpr, String> {
        let mut e = self.not()?;
        while self.at_keyword("and") {
            self.pos += 1;
            e = BoolExpr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<BoolExpr, String> {
        if self.at_keyword("not") {
            self.pos += 1;
            return Ok(BoolExpr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<BoolExpr, String> {
        if self.at_sym("(") {
            self.pos += 1;
            let e = self.or()?;
            self.expect_sym(")")?;
            return Ok(e);
        }
        if let Some(Tok::Ident(name)) = self.peek() {
            let lower = name.to_ascii_lowercase();
            if matches!(lower.as_str(), "ispresent" | "isempty" | "isblank")
                && self.toks.get(self.pos + 1) == Some(&Tok::Sym("("))
            {
                self.pos += 2;
                let e = self.expr()?;
                self.expect_sym(")")?;
                return Ok(match lower.as_str() {
                    "ispresent" => BoolExpr::IsPresent(e),
                    "isempty" => BoolExpr::IsEmpty(e),
                    _ => BoolExpr::IsBlank(e),
                });
            }
        }
        let lhs = self.expr()?;
        if self.at_keyword("like") {
            self.pos += 1;
            return match self.next() {
                Some(Tok::Str(s)) => Ok(BoolExpr::Like(lhs, s)),
                other => Err(format!("like needs a quoted string, found {other:?}")),
            };
        }
        let op = match self.next() {
            Some(Tok::Sym("=")) => CmpOp::Eq,
            Some(Tok::Sym("!=")) => CmpOp::Ne,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            other => return Err(format!("expected a comparison, found {other:?}")),
        };
        let rhs = self.expr()?;
        Ok(BoolExpr::Cmp(lhs, op, rhs))
    }

    fn agg(&mut self) -> Result<Agg, String> {
        let name = self.ident()?;
        let func = match name.to_ascii_lowercase().as_str() {
            "count" => AggFn::Count,
            "count_distinct" => AggFn::CountDistinct,
            "min" => AggFn::Min,
            "max" => AggFn::Max,
            "sum" => AggFn::Sum,
            "avg" => AggFn::Avg,
            "earliest" => AggFn::Earliest,
            "latest" => AggFn::Latest,
            _ => return Err(format!("unsupported aggregation '{name}'")),
        };
        self.expect_sym("(")?;
        let arg = if self.at_sym("*") || self.at_sym(")") {
            if func != AggFn::Count {
                return Err(format!("{name} needs a field"));
            }
            if self.at_sym("*") {
                self.pos += 1;
            }
            None
        } else {
            Some(self.expr()?)
        };
        self.expect_sym(")")?;
        Ok(Agg { func, arg })
    }
}

fn agg_name(a: &Agg) -> String {
    let f = match a.func {
        AggFn::Count => "count",
        AggFn::CountDistinct => "count_distinct",
        AggFn::Min => "min",
        AggFn::Max => "max",
        AggFn::Sum => "sum",
        AggFn::Avg => "avg",
        AggFn::Earliest => "earliest",
        AggFn::Latest => "latest",
    };
    format!("{f}({})", a.arg.as_ref().map_or("*".to_string(), Expr::canonical))
}

fn parse_stage(toks: &[Tok]) -> Result<Stage, String> {
    let mut p = P { toks, pos: 1 };
    let cmd = match &toks[0] {
        Tok::Ident(c) => c.to_ascii_lowercase(),
        t => return Err(format!("expected a command, found {t:?}")),
    };
    let stage = match cmd.as_str() {
        "filter" => Stage::Filter(p.or()?),
        "fields" => {
            let mut items = Vec::new();
            loop {
                let e = p.expr()?;
                let name = p.alias(e.canonical())?;
                items.push((e, name));
                if !p.at_sym(",") {
                    break;
                }
                p.pos += 1;
            }
            Stage::Fields(items)
        }
        "display" => {
            let mut names = vec![p.ident()?];
            while p.at_sym(",") {
                p.pos += 1;
                names.push(p.ident()?);
            }
            Stage::Display(names)
        }
        "stats" => {
            let mut aggs = Vec::new();
            loop {
                let a = p.agg()?;
                let name = p.alias(agg_name(&a))?;
                aggs.push((a, name));
                if !p.at_sym(",") {
                    break;
                }
                p.pos += 1;
            }
            let mut by = Vec::new();
            if p.at_keyword("by") {
                p.pos += 1;
                loop {
                    let e = p.expr()?;
                    let name = p.alias(e.canonical())?;
                    by.push((e, name));
                    if !p.at_sym(",") {
                        break;
                    }
                    p.pos += 1;
                }
            }
            Stage::Stats { aggs, by }
        }
        "sort" => {
            let mut keys = Vec::new();
            loop {
                let e = p.expr()?;
                let desc = if p.at_keyword("desc") {
                    p.pos += 1;
                    true
                } else {
                    if p.at_keyword("asc") {
                        p.pos += 1;
                    }
                    false
                };
                keys.push((e, desc));
                if !p.at_sym(",") {
                    break;
                }
                p.pos += 1;
            }
            Stage::Sort(keys)
        }
        "limit" => match p.next() {
            Some(Tok::Num(n)) => {
                let n: usize = n.parse().map_err(|_| format!("bad limit {n}"))?;
                if !(1..=10_000).contains(&n) {
                    return Err(format!("limit must be between 1 and 10000, got {n}"));
                }
                Stage::Limit(n)
            }
            other => return Err(format!("limit needs a number, found {other:?}")),
        },
        other => return Err(format!("unsupported command '{other}'")),
    };
    p.done()?;
    Ok(stage)
}
