//! One CloudTrail record, read in a single borrowed pass.
//!
//! Only the dozen fields the engine looks at are deserialized; every other field is skipped with
//! `IgnoredAny`, which serde_json walks iteratively, so huge or deeply nested request/response
//! payloads cost a scan and never a stack frame per level. Strings borrow from the input unless
//! they contain escapes.
//!
//! That serde reader is the reference; [`parse_record`] first tries the faster hand-written
//! scanner in `fast.rs`, which answers only when it gives the same result.
//!
//! Only `eventTime`, `eventSource` and `eventName` must be right for a record to be read. Any
//! other field the engine reads as text but that holds a number, boolean, list or object is
//! read as its JSON text (`12345`, `["a","b"]`), and a `userIdentity` that is not an object is
//! dropped; the record is then marked [`Record::repaired`] and counted as a warning, never
//! lost. CloudTrail Insights events (`eventType: "AwsCloudTrailInsight"`) have neither
//! `eventSource` nor `eventName`: they are read as [`Insight`]s by [`parse_event`].

mod fast;
mod split;

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

pub(super) use fast::{scan_record, scan_record_into};
pub use split::{Split, split_records};

/// `userIdentity`: who made the call. Every field is optional because service-initiated and
/// anonymous events carry only some of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity<'a> {
    pub type_: Option<Cow<'a, str>>,
    pub arn: Option<Cow<'a, str>>,
    pub access_key_id: Option<Cow<'a, str>>,
    pub principal_id: Option<Cow<'a, str>>,
    pub account_id: Option<Cow<'a, str>>,
    pub invoked_by: Option<Cow<'a, str>>,
    pub user_name: Option<Cow<'a, str>>,
}

/// The fields of a CloudTrail record that error clustering and key tracking need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub event_time: DateTime<Utc>,
    pub event_id: Option<Cow<'a, str>>,
    pub event_source: Cow<'a, str>,
    pub event_name: Cow<'a, str>,
    pub aws_region: Option<Cow<'a, str>>,
    pub recipient_account_id: Option<Cow<'a, str>>,
    pub error_code: Option<Cow<'a, str>>,
    pub error_message: Option<Cow<'a, str>>,
    /// `sourceIPAddress`.
    pub source_ip: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    /// `userIdentity`; all `None` when absent or null.
    pub identity: Identity<'a>,
    /// `responseElements.ConsoleLogin`, the only place a failed console sign-in shows.
    pub console_login: Option<Cow<'a, str>>,
    /// The first field that had to be repaired to read the record (a wrong type), if any.
    pub repaired: Option<&'static str>,
}

/// A CloudTrail Insights event: AWS's own finding that the rate of calls to an API, or of its
/// errors, left its baseline. It starts (`state: "Start"`) and later ends (`"End"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Insight {
    pub event_time: DateTime<Utc>,
    pub event_id: String,
    pub account_id: String,
    pub region: String,
    /// `insightDetails.state`: `Start` or `End`.
    pub state: String,
    /// The API the finding is about (`insightDetails.eventSource` and `.eventName`).
    pub event_source: String,
    pub event_name: String,
    /// `ApiCallRateInsight` or `ApiErrorRateInsight`.
    pub insight_type: String,
    /// The error code an `ApiErrorRateInsight` is about, else empty.
    pub error_code: String,
    /// Calls (or errors) per minute: the usual rate, and the rate during the finding.
    pub baseline_average: Option<f64>,
    pub insight_average: Option<f64>,
}

/// One raw record, read: an API call (or sign-in), or an Insights event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    Call(Record<'a>),
    Insight(Insight),
}

/// `eventType` of CloudTrail Insights events.
pub const INSIGHT_EVENT_TYPE: &str = "AwsCloudTrailInsight";

/// Error kind given to failed console sign-ins, which CloudTrail records without an errorCode.
pub const CONSOLE_LOGIN_FAILURE: &str = "ConsoleLoginFailure";

fn non_empty<'s>(v: &'s Option<Cow<'_, str>>) -> Option<&'s str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl Record<'_> {
    /// "ConsoleLoginFailure" for a failed console sign-in, else the errorCode; None if not an error.
    ///
    /// An errorCode that is a plain 2xx or 3xx HTTP status (Amazon Managed Grafana records
    /// successful calls with `"errorCode": "200"`) is not an error.
    pub fn error_kind(&self) -> Option<&str> {
        if self.event_name == "ConsoleLogin"
            && (self.console_login.as_deref() == Some("Failure")
                || self.error_message.as_deref() == Some("Failed authentication"))
        {
            return Some(CONSOLE_LOGIN_FAILURE);
        }
        non_empty(&self.error_code).filter(|c| !is_success_status(c))
    }

    /// recipientAccountId, else userIdentity.accountId, else "".
    pub fn account_id(&self) -> &str {
        non_empty(&self.recipient_account_id).or_else(|| non_empty(&self.identity.account_id)).unwrap_or("")
    }

    /// awsRegion or "".
    pub fn region(&self) -> &str {
        self.aws_region.as_deref().unwrap_or("")
    }

    /// The most specific name of the caller: userIdentity.arn; else its userName, then its
    /// principalId, said as `<type> userName=<name>` (failed console sign-ins carry no ARN,
    /// and their target must not merge with other users'); else invokedBy, else type, else "".
    pub fn principal(&self) -> Cow<'_, str> {
        if let Some(p) = self.named_principal() {
            return p;
        }
        Cow::Borrowed(non_empty(&self.identity.invoked_by).or_else(|| non_empty(&self.identity.type_)).unwrap_or(""))
    }

    /// userIdentity.arn, else `<type> userName=<name>`, else `<type> principalId=<id>`: who
    /// holds an access key, for the access-key view. None when the record names nobody.
    pub fn named_principal(&self) -> Option<Cow<'_, str>> {
        if let Some(arn) = non_empty(&self.identity.arn) {
            return Some(Cow::Borrowed(arn));
        }
        let (field, value) = match (non_empty(&self.identity.user_name), non_empty(&self.identity.principal_id)) {
            (Some(name), _) => ("userName", name),
            (None, Some(id)) => ("principalId", id),
            (None, None) => return None,
        };
        Some(Cow::Owned(match non_empty(&self.identity.type_) {
            Some(t) => format!("{t} {field}={value}"),
            None => format!("{field}={value}"),
        }))
    }
}

/// `200`, `304`: a three-digit HTTP status of success or redirection.
pub fn is_success_status(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 3 && matches!(b[0], b'2' | b'3') && b.iter().all(u8::is_ascii_digit)
}

/// Why a raw record could not be read. Deep nesting and bad UTF-8 are reported as `NotJson`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NotJson,
    NotObject,
    MissingField(&'static str),
    WrongType(&'static str),
    BadTime,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotJson => f.write_str("not valid JSON"),
            ParseError::NotObject => f.write_str("not a JSON object"),
            ParseError::MissingField(n) => write!(f, "missing field {n}"),
            ParseError::WrongType(n) => write!(f, "field {n} has the wrong type"),
            ParseError::BadTime => f.write_str("eventTime is not a recognised timestamp"),
        }
    }
}

impl std::error::Error for ParseError {}

static ERROR_CODE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"errorCode\""));
static CONSOLE_LOGIN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("ConsoleLogin"));

/// Cheap check (memchr::memmem) that a record could be an error: contains `"errorCode"` or
/// `ConsoleLogin`. False means certainly not an error, so most records are never parsed.
/// (A key spelled with JSON escapes would slip past; CloudTrail never writes one.)
pub fn might_be_error(raw: &[u8]) -> bool {
    ERROR_CODE.find(raw).is_some() || CONSOLE_LOGIN.find(raw).is_some()
}

/// RFC 3339, and "YYYY-MM-DD HH:MM:SS[.f{1,9}]" taken as UTC (the form some exporters and
/// Logs Insights write).
pub fn parse_event_time(s: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_canonical_time(s.as_bytes()) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    parse_space_time(s.as_bytes())
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form CloudTrail writes, read without chrono's general RFC 3339
/// parser (a tenth of the cost). None for anything else, leap seconds included, which then
/// go through chrono.
fn parse_canonical_time(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |v, &c| c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if sec > 59 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some(date.and_hms_opt(hour, min, sec)?.and_utc())
}

fn parse_space_time(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut nanos = 0u32;
    if b.len() > 19 {
        let frac = &b[20..];
        if b[19] != b'.' || frac.is_empty() || frac.len() > 9 {
            return None;
        }
        nanos = num(20..b.len())? * 10u32.pow(9 - frac.len() as u32);
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some(date.and_hms_nano_opt(hour, min, sec, nanos)?.and_utc())
}

/// Reads one raw record. Bad UTF-8 is `NotJson`; trailing bytes after the object are `NotJson`.
/// An Insights event is not a call: `MissingField("eventSource")` here, an [`Insight`] from
/// [`parse_event`].
pub fn parse_record(raw: &[u8]) -> Result<Record<'_>, ParseError> {
    call(parse_event(raw)?)
}

/// Reads one raw record, an API call or an Insights event.
///
/// Tries the hand-written scanner (`fast.rs`) first, which is several times faster on
/// well-formed records, and falls back to [`parse_event_serde`] whenever the scanner is not
/// sure, so the result is always the serde reader's.
#[inline]
pub fn parse_event(raw: &[u8]) -> Result<Event<'_>, ParseError> {
    match scan_record(raw) {
        Some(r) => Ok(Event::Call(r)),
        None => parse_event_serde(raw),
    }
}

/// [`parse_event_serde`] for calls only, as [`parse_record`] answers.
pub fn parse_record_serde(raw: &[u8]) -> Result<Record<'_>, ParseError> {
    call(parse_event_serde(raw)?)
}

fn call(e: Event<'_>) -> Result<Record<'_>, ParseError> {
    match e {
        Event::Call(r) => Ok(r),
        Event::Insight(_) => Err(ParseError::MissingField("eventSource")),
    }
}

/// The reference reader: serde_json with a visitor that reads the dozen fields we need.
/// [`parse_event`] uses it for whatever the fast scanner leaves; tests compare the two.
pub fn parse_event_serde(raw: &[u8]) -> Result<Event<'_>, ParseError> {
    let text = std::str::from_utf8(raw).map_err(|_| ParseError::NotJson)?;
    let cx = Cx { field: Cell::new(None), repaired: Cell::new(None) };
    let mut de = serde_json::Deserializer::from_str(text);
    let mut fields = match (RecordSeed { cx: &cx }).deserialize(&mut de) {
        Ok(f) => f,
        Err(e) => {
            return Err(match (e.classify(), cx.field.get()) {
                (serde_json::error::Category::Data, Some(name)) => ParseError::WrongType(name),
                (serde_json::error::Category::Data, None) => ParseError::NotObject,
                _ => ParseError::NotJson,
            });
        }
    };
    de.end().map_err(|_| ParseError::NotJson)?;
    fields.repaired = cx.repaired.get();
    fields.into_event()
}

/// What the serde reader keeps track of while it reads: the field being read (so that a type
/// error can name it), and the first field it had to repair.
struct Cx {
    field: Cell<Option<&'static str>>,
    repaired: Cell<Option<&'static str>>,
}

impl Cx {
    fn repair(&self, name: &'static str) {
        if self.repaired.get().is_none() {
            self.repaired.set(Some(name));
        }
    }
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CowStrVisitor)
    }
}

struct CowStrVisitor;

impl<'de> Visitor<'de> for CowStrVisitor {
    type Value = CowStr<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(CowStr(Cow::Owned(v)))
    }
}

/// Reads a string field the record cannot do without, naming it in `field` so that a type
/// error can say which one.
fn opt_str<'de, A: MapAccess<'de>>(
    map: &mut A,
    cx: &Cx,
    name: &'static str,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    cx.field.set(Some(name));
    let v = map.next_value::<Option<CowStr<'de>>>()?;
    cx.field.set(None);
    Ok(v.map(|c| c.0))
}

/// Reads a field the engine reads as text but can do without: a string or null as they are,
/// anything else as its JSON text, noted as a repair.
fn lenient_str<'de, A: MapAccess<'de>>(
    map: &mut A,
    cx: &Cx,
    name: &'static str,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(match map.next_value_seed(LenientStr)? {
        Lenient::Text(s) => Some(s),
        Lenient::Null => None,
        Lenient::Json(text) => {
            cx.repair(name);
            Some(Cow::Owned(text))
        }
    })
}

enum Lenient<'a> {
    Text(Cow<'a, str>),
    Null,
    /// Another JSON value, as compact JSON text.
    Json(String),
}

/// Any JSON value, for [`lenient_str`].
struct LenientStr;

impl<'de> DeserializeSeed<'de> for LenientStr {
    type Value = Lenient<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LenientStr {
    type Value = Lenient<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Lenient::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Lenient::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Lenient::Text(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Lenient::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Lenient::Json(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Lenient::Json(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Lenient::Json(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Lenient::Json(serde_json::Value::from(v).to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Lenient::Json(v.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Lenient::Json(v.to_string()))
    }
}

/// The fields a record is read for, as either reader (serde here, the scanner in
/// [`super::scan`]) finds them.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) event_time: Option<Cow<'a, str>>,
    pub(super) event_id: Option<Cow<'a, str>>,
    pub(super) event_source: Option<Cow<'a, str>>,
    pub(super) event_name: Option<Cow<'a, str>>,
    pub(super) event_type: Option<Cow<'a, str>>,
    pub(super) aws_region: Option<Cow<'a, str>>,
    pub(super) recipient_account_id: Option<Cow<'a, str>>,
    pub(super) error_code: Option<Cow<'a, str>>,
    pub(super) error_message: Option<Cow<'a, str>>,
    pub(super) source_ip: Option<Cow<'a, str>>,
    pub(super) user_agent: Option<Cow<'a, str>>,
    pub(super) identity: Option<Identity<'a>>,
    pub(super) console_login: Option<Cow<'a, str>>,
    /// `insightDetails`, read by the serde reader only (the scanner leaves Insights to it).
    pub(super) insight: Option<serde_json::Value>,
    pub(super) repaired: Option<&'static str>,
}

impl<'a> Fields<'a> {
    #[inline]
    pub(super) fn into_event(self) -> Result<Event<'a>, ParseError> {
        let time = self.event_time.as_deref().ok_or(ParseError::MissingField("eventTime"))?;
        let event_time = parse_event_time(time).ok_or(ParseError::BadTime)?;
        if self.event_type.as_deref() == Some(INSIGHT_EVENT_TYPE) {
            return Ok(Event::Insight(self.into_insight(event_time)));
        }
        let event_source = self.event_source.ok_or(ParseError::MissingField("eventSource"))?;
        let event_name = self.event_name.ok_or(ParseError::MissingField("eventName"))?;
        Ok(Event::Call(Record {
            event_time,
            event_id: self.event_id,
            event_source,
            event_name,
            aws_region: self.aws_region,
            recipient_account_id: self.recipient_account_id,
            error_code: self.error_code,
            error_message: self.error_message,
            source_ip: self.source_ip,
            user_agent: self.user_agent,
            identity: self.identity.unwrap_or_default(),
            console_login: self.console_login,
            repaired: self.repaired,
        }))
    }

    fn into_insight(self, event_time: DateTime<Utc>) -> Insight {
        let details = self.insight.unwrap_or_default();
        let text = |v: &serde_json::Value, key: &str| match v.get(key) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let stats = &details["insightContext"]["statistics"];
        let owned = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned).unwrap_or_default();
        Insight {
            event_time,
            event_id: owned(self.event_id),
            account_id: owned(self.recipient_account_id),
            region: owned(self.aws_region),
            state: text(&details, "state"),
            event_source: text(&details, "eventSource"),
            event_name: text(&details, "eventName"),
            insight_type: text(&details, "insightType"),
            error_code: text(&details, "errorCode"),
            baseline_average: stats["baseline"]["average"].as_f64(),
            insight_average: stats["insight"]["average"].as_f64(),
        }
    }
}

/// The keys we read (top-level, then `userIdentity`'s and `responseElements`'); everything
/// else is `Other` and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    EventTime,
    EventId,
    EventSource,
    EventName,
    EventType,
    AwsRegion,
    RecipientAccountId,
    ErrorCode,
    ErrorMessage,
    SourceIp,
    UserAgent,
    UserIdentity,
    ResponseElements,
    InsightDetails,
    // userIdentity members
    Type,
    Arn,
    AccessKeyId,
    PrincipalId,
    AccountId,
    InvokedBy,
    UserName,
    // responseElements member
    ConsoleLogin,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "eventTime" => Key::EventTime,
            "eventID" => Key::EventId,
            "eventSource" => Key::EventSource,
            "eventName" => Key::EventName,
            "eventType" => Key::EventType,
            "awsRegion" => Key::AwsRegion,
            "recipientAccountId" => Key::RecipientAccountId,
            "errorCode" => Key::ErrorCode,
            "errorMessage" => Key::ErrorMessage,
            "sourceIPAddress" => Key::SourceIp,
            "userAgent" => Key::UserAgent,
            "userIdentity" => Key::UserIdentity,
            "responseElements" => Key::ResponseElements,
            "insightDetails" => Key::InsightDetails,
            "type" => Key::Type,
            "arn" => Key::Arn,
            "accessKeyId" => Key::AccessKeyId,
            "principalId" => Key::PrincipalId,
            "accountId" => Key::AccountId,
            "invokedBy" => Key::InvokedBy,
            "userName" => Key::UserName,
            "ConsoleLogin" => Key::ConsoleLogin,
            _ => Key::Other,
        })
    }
}

struct RecordSeed<'c> {
    cx: &'c Cx,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Fields<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudTrail record object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Fields::default();
        let cx = self.cx;
        // Duplicate keys: the last one wins, as in most JSON readers.
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::EventTime => out.event_time = opt_str(&mut map, cx, "eventTime")?,
                Key::EventSource => out.event_source = opt_str(&mut map, cx, "eventSource")?,
                Key::EventName => out.event_name = opt_str(&mut map, cx, "eventName")?,
                Key::EventId => out.event_id = lenient_str(&mut map, cx, "eventID")?,
                Key::EventType => out.event_type = lenient_str(&mut map, cx, "eventType")?,
                Key::AwsRegion => out.aws_region = lenient_str(&mut map, cx, "awsRegion")?,
                Key::RecipientAccountId => out.recipient_account_id = lenient_str(&mut map, cx, "recipientAccountId")?,
                Key::ErrorCode => out.error_code = lenient_str(&mut map, cx, "errorCode")?,
                Key::ErrorMessage => out.error_message = lenient_str(&mut map, cx, "errorMessage")?,
                Key::SourceIp => out.source_ip = lenient_str(&mut map, cx, "sourceIPAddress")?,
                Key::UserAgent => out.user_agent = lenient_str(&mut map, cx, "userAgent")?,
                Key::UserIdentity => {
                    cx.field.set(Some("userIdentity"));
                    out.identity = map.next_value_seed(OptIdentitySeed { cx })?;
                    cx.field.set(None);
                }
                Key::ResponseElements => {
                    out.console_login = map.next_value_seed(ResponseElementsSeed)?;
                }
                Key::InsightDetails => {
                    // Only Insights events have it, and they are rare: a Value is simple.
                    cx.field.set(Some("insightDetails"));
                    out.insight = Some(map.next_value::<serde_json::Value>()?);
                    cx.field.set(None);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// `userIdentity`: an object, or null; anything else is dropped as a repair.
struct OptIdentitySeed<'c> {
    cx: &'c Cx,
}

impl<'de> DeserializeSeed<'de> for OptIdentitySeed<'_> {
    type Value = Option<Identity<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl OptIdentitySeed<'_> {
    fn dropped<T, E>(&self) -> Result<Option<T>, E> {
        self.cx.repair("userIdentity");
        Ok(None)
    }
}

impl<'de> Visitor<'de> for OptIdentitySeed<'_> {
    type Value = Option<Identity<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a userIdentity object or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.dropped()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.dropped()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.dropped()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.dropped()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        self.dropped()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.dropped()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = Identity::default();
        let cx = self.cx;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Type => id.type_ = lenient_str(&mut map, cx, "userIdentity.type")?,
                Key::Arn => id.arn = lenient_str(&mut map, cx, "userIdentity.arn")?,
                Key::AccessKeyId => id.access_key_id = lenient_str(&mut map, cx, "userIdentity.accessKeyId")?,
                Key::PrincipalId => id.principal_id = lenient_str(&mut map, cx, "userIdentity.principalId")?,
                Key::AccountId => id.account_id = lenient_str(&mut map, cx, "userIdentity.accountId")?,
                Key::InvokedBy => id.invoked_by = lenient_str(&mut map, cx, "userIdentity.invokedBy")?,
                Key::UserName => id.user_name = lenient_str(&mut map, cx, "userIdentity.userName")?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(id))
    }
}

/// `responseElements` may be anything; only an object with a string `ConsoleLogin` yields a value.
struct ResponseElementsSeed;

impl<'de> DeserializeSeed<'de> for ResponseElementsSeed {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(LenientVisitor { look_for_console_login: true })
    }
}

/// Accepts any JSON value. At the `responseElements` level it looks inside an object for
/// `ConsoleLogin`; at the `ConsoleLogin` level it keeps a string and drops anything else.
struct LenientVisitor {
    look_for_console_login: bool,
}

impl<'de> de::DeserializeSeed<'de> for LenientVisitor {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok((!self.look_for_console_login).then_some(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((!self.look_for_console_login).then(|| Cow::Owned(v.to_owned())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Key>()? {
            if self.look_for_console_login && matches!(key, Key::ConsoleLogin) {
                found = map.next_value_seed(LenientVisitor { look_for_console_login: false })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ns: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + chrono::Duration::nanoseconds(ns.into())
    }

    #[test]
    fn event_time_formats() {
        let cases: &[(&str, Option<DateTime<Utc>>)] = &[
            ("2023-07-10T12:07:57Z", Some(utc(2023, 7, 10, 12, 7, 57, 0))),
            ("2023-07-10T14:07:57+02:00", Some(utc(2023, 7, 10, 12, 7, 57, 0))),
            ("2023-07-10T12:07:57.123Z", Some(utc(2023, 7, 10, 12, 7, 57, 123_000_000))),
            ("2024-06-02 19:41:40.000000000", Some(utc(2024, 6, 2, 19, 41, 40, 0))),
            ("2022-03-16 19:17:41", Some(utc(2022, 3, 16, 19, 17, 41, 0))),
            ("2021-01-24 04:55:45.000", Some(utc(2021, 1, 24, 4, 55, 45, 0))),
            ("2021-01-24 04:55:45.5", Some(utc(2021, 1, 24, 4, 55, 45, 500_000_000))),
            ("2021-01-24 04:55:45.123456789", Some(utc(2021, 1, 24, 4, 55, 45, 123_456_789))),
            ("2021-01-24 04:55:45.1234567890", None),
            ("2021-01-24 04:55:45.", None),
            ("2021-01-24 04:55:45Z", Some(utc(2021, 1, 24, 4, 55, 45, 0))), // RFC 3339 allows the space
            ("2021-02-30 04:55:45", None),
            ("2021-01-24 25:55:45", None),
            ("2021-01-24T04:55:45", None),
            ("redacted", None),
            ("...", None),
            ("", None),
            ("2021-01-24 04:5a:45", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_event_time(s), *want, "{s:?}");
        }
    }

    /// The canonical-form shortcut must agree with chrono on every input it accepts.
    #[test]
    fn canonical_time_agrees_with_chrono() {
        let mut rng = crate::synth::SplitMix64::new(3);
        let mut checked = 0;
        for _ in 0..200_000 {
            let mut s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                rng.below(10_000),
                rng.below(14),
                rng.below(33),
                rng.below(26),
                rng.below(62),
                rng.below(62)
            )
            .into_bytes();
            if rng.below(4) == 0 {
                let at = rng.below(s.len() as u64) as usize;
                s[at] = b"0123456789-:TZtz ."[rng.below(18) as usize];
            }
            let s = String::from_utf8(s).unwrap();
            let chrono = DateTime::parse_from_rfc3339(&s).ok().map(|t| t.with_timezone(&Utc));
            if let Some(fast) = parse_canonical_time(s.as_bytes()) {
                assert_eq!(Some(fast), chrono, "{s}");
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
        assert_eq!(parse_canonical_time(b"2016-12-31T23:59:60Z"), None);
        assert!(parse_event_time("2016-12-31T23:59:60Z").is_some());
    }

    const BASE: &str =
        r#"{"eventTime":"2023-07-10T12:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeVpcs""#;

    fn rec(extra: &str) -> String {
        format!("{BASE}{extra}}}")
    }

    #[test]
    fn parse_errors() {
        let cases: Vec<(Vec<u8>, ParseError)> = vec![
            (b"not json".to_vec(), ParseError::NotJson),
            (b"".to_vec(), ParseError::NotJson),
            (b"[]".to_vec(), ParseError::NotObject),
            (b"\"errorCode\"".to_vec(), ParseError::NotObject),
            (b"42".to_vec(), ParseError::NotObject),
            (b"null".to_vec(), ParseError::NotObject),
            (b"{\"eventSource\":1}".to_vec(), ParseError::WrongType("eventSource")),
            (b"{\"eventSource\":\"s\",\"eventName\":\"n\"".to_vec(), ParseError::NotJson),
            (rec("").into_bytes()[..40].to_vec(), ParseError::NotJson),
            (format!("{} x", rec("")).into_bytes(), ParseError::NotJson),
            (b"{\"eventSource\":\"s\",\"eventName\":\"n\",\"errorCode\":\"\xff\"}".to_vec(), ParseError::NotJson),
            (b"{\"eventSource\":\"s\",\"eventName\":\"n\"}".to_vec(), ParseError::MissingField("eventTime")),
            (
                b"{\"eventTime\":null,\"eventSource\":\"s\",\"eventName\":\"n\"}".to_vec(),
                ParseError::MissingField("eventTime"),
            ),
            (b"{\"eventTime\":\"redacted\",\"eventSource\":\"s\",\"eventName\":\"n\"}".to_vec(), ParseError::BadTime),
            (
                b"{\"eventTime\":1,\"eventSource\":\"s\",\"eventName\":\"n\"}".to_vec(),
                ParseError::WrongType("eventTime"),
            ),
            (
                b"{\"eventTime\":\"2023-07-10T12:00:00Z\",\"eventName\":\"n\"}".to_vec(),
                ParseError::MissingField("eventSource"),
            ),
            (
                b"{\"eventTime\":\"2023-07-10T12:00:00Z\",\"eventSource\":null,\"eventName\":\"n\"}".to_vec(),
                ParseError::MissingField("eventSource"),
            ),
            (
                b"{\"eventTime\":\"2023-07-10T12:00:00Z\",\"eventSource\":\"s\"}".to_vec(),
                ParseError::MissingField("eventName"),
            ),
            (rec(r#","eventName":["DescribeVpcs"]"#).into_bytes(), ParseError::WrongType("eventName")),
            (rec(r#","eventSource":{"a":1}"#).into_bytes(), ParseError::WrongType("eventSource")),
            // Broken JSON inside a field that is otherwise repaired is still broken JSON.
            (rec(r#","errorMessage":["a",]"#).into_bytes(), ParseError::NotJson),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_record(&raw).err(), Some(want.clone()), "{}", String::from_utf8_lossy(&raw));
        }
    }

    /// Fields the engine can do without are read whatever their type, and the record says so.
    #[test]
    fn wrong_types_are_repaired() {
        type Check = fn(&Record) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            (r#","errorCode":5"#, "errorCode", |r| r.error_kind() == Some("5")),
            (r#","errorCode":"X","errorMessage":["a","b"]"#, "errorMessage", |r| {
                r.error_message.as_deref() == Some(r#"["a","b"]"#)
            }),
            (r#","errorMessage":{"a":{"b":[1,null,true]}}"#, "errorMessage", |r| {
                r.error_message.as_deref() == Some(r#"{"a":{"b":[1,null,true]}}"#)
            }),
            (r#","userIdentity":{"accessKeyId":12345,"arn":"a"}"#, "userIdentity.accessKeyId", |r| {
                r.identity.access_key_id.as_deref() == Some("12345") && r.identity.arn.as_deref() == Some("a")
            }),
            (r#","userIdentity":{"arn":true}"#, "userIdentity.arn", |r| r.identity.arn.as_deref() == Some("true")),
            (r#","userIdentity":"root""#, "userIdentity", |r| r.identity == Identity::default()),
            (r#","userIdentity":[1,{"a":[]}],"errorCode":"X""#, "userIdentity", |r| {
                r.identity == Identity::default() && r.error_kind() == Some("X")
            }),
            (r#","sourceIPAddress":1.5,"userAgent":false"#, "sourceIPAddress", |r| {
                r.source_ip.as_deref() == Some("1.5") && r.user_agent.as_deref() == Some("false")
            }),
            (r#","awsRegion":-2,"eventID":{}"#, "awsRegion", |r| {
                r.aws_region.as_deref() == Some("-2") && r.event_id.as_deref() == Some("{}")
            }),
            // A string or null is never a repair.
            (r#","errorMessage":null,"userIdentity":null"#, "", |r| r.error_message.is_none()),
        ];
        for (extra, field, check) in cases {
            let raw = rec(extra);
            let r = parse_record(raw.as_bytes()).unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert_eq!(r.repaired, Some(*field).filter(|f| !f.is_empty()), "{extra}");
            assert!(check(&r), "{extra}: {r:?}");
        }
    }

    #[test]
    fn success_statuses_are_not_errors() {
        for (code, error) in
            [("200", false), ("204", false), ("304", false), ("400", true), ("2000", true), ("20", true), ("OK", true)]
        {
            let raw = rec(&format!(r#","errorCode":"{code}""#));
            assert_eq!(parse_record(raw.as_bytes()).unwrap().error_kind().is_some(), error, "{code}");
        }
        // As a number too (read as its text).
        assert_eq!(parse_record(rec(r#","errorCode":200"#).as_bytes()).unwrap().error_kind(), None);
    }

    /// Real failed sign-ins name their target by userName only.
    #[test]
    fn principals_without_an_arn() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (r#"{"type":"IAMUser","userName":"alice"}"#, "IAMUser userName=alice", Some("IAMUser userName=alice")),
            (
                r#"{"accessKeyId":"","accountId":"111122223333","principalId":"AIDACKCEVSQ6C2EXAMPLE","type":"IAMUser","userName":"anaya"}"#,
                "IAMUser userName=anaya",
                Some("IAMUser userName=anaya"),
            ),
            (
                r#"{"type":"IAMUser","principalId":"AIDACKCEVSQ6C2EXAMPLE","userName":""}"#,
                "IAMUser principalId=AIDACKCEVSQ6C2EXAMPLE",
                Some("IAMUser principalId=AIDACKCEVSQ6C2EXAMPLE"),
            ),
            (r#"{"principalId":"p"}"#, "principalId=p", Some("principalId=p")),
            (
                r#"{"arn":"arn:aws:iam::1:user/a","userName":"a","type":"IAMUser"}"#,
                "arn:aws:iam::1:user/a",
                Some("arn:aws:iam::1:user/a"),
            ),
            (r#"{"type":"AWSService","invokedBy":"ec2.amazonaws.com"}"#, "ec2.amazonaws.com", None),
            (r#"{"type":"Root"}"#, "Root", None),
        ];
        for (identity, principal, named) in cases {
            let raw = rec(&format!(r#","userIdentity":{identity}"#));
            let r = parse_record(raw.as_bytes()).unwrap();
            assert_eq!(r.principal(), *principal, "{identity}");
            assert_eq!(r.named_principal().as_deref(), *named, "{identity}");
        }
    }

    /// An Insights event in the shape the CloudTrail User Guide documents ("CloudTrail record
    /// contents for Insights events for trails"), values of our own.
    #[test]
    fn insights_events() {
        let raw = r#"{"eventVersion":"1.08","eventTime":"2023-10-03T22:18:00Z","awsRegion":"us-east-1","eventID":"96c47e2a-9128-4aa1-b1ba-5f8ba5bb6f54","eventType":"AwsCloudTrailInsight","recipientAccountId":"123456789012","sharedEventID":"c2806063-d85b-4b50-ab09-e1e6ed0ab7c5","insightDetails":{"state":"Start","eventSource":"ssm.amazonaws.com","eventName":"SendCommand","insightType":"ApiErrorRateInsight","errorCode":"AccessDeniedException","insightContext":{"statistics":{"baseline":{"average":0.0},"insight":{"average":5.0},"insightDuration":1,"baselineDuration":10079},"attributions":[{"attribute":"userIdentityArn","insight":[{"value":"arn:aws:sts::123456789012:assumed-role/Admin/Session","average":5.0}],"baseline":[]}]}},"eventCategory":"Insight"}"#;
        let Event::Insight(i) = parse_event(raw.as_bytes()).unwrap() else { panic!("not an insight") };
        assert_eq!(
            i,
            Insight {
                event_time: utc(2023, 10, 3, 22, 18, 0, 0),
                event_id: "96c47e2a-9128-4aa1-b1ba-5f8ba5bb6f54".into(),
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                state: "Start".into(),
                event_source: "ssm.amazonaws.com".into(),
                event_name: "SendCommand".into(),
                insight_type: "ApiErrorRateInsight".into(),
                error_code: "AccessDeniedException".into(),
                baseline_average: Some(0.0),
                insight_average: Some(5.0),
            }
        );
        // Not a call: parse_record says what it lacks, as it did before Insights were read.
        assert_eq!(parse_record(raw.as_bytes()), Err(ParseError::MissingField("eventSource")));
        // Details of another shape are read as far as they go.
        let odd = r#"{"eventTime":"2023-10-03T22:18:00Z","eventType":"AwsCloudTrailInsight","insightDetails":[1]}"#;
        let Event::Insight(i) = parse_event(odd.as_bytes()).unwrap() else { panic!("not an insight") };
        assert_eq!((i.state.as_str(), i.baseline_average), ("", None));
        // Still needs a time.
        let untimed = r#"{"eventType":"AwsCloudTrailInsight","insightDetails":{}}"#;
        assert_eq!(parse_event(untimed.as_bytes()), Err(ParseError::MissingField("eventTime")));
    }

    #[test]
    fn error_kind_and_accessors() {
        // (extra fields, event name override, error_kind, account_id, region, principal)
        let cases: &[(&str, Option<&str>, &str, &str, &str)] = &[
            ("", None, "", "", ""),
            (r#","errorCode":null"#, None, "", "", ""),
            (r#","errorCode":"""#, None, "", "", ""),
            (r#","errorCode":"AccessDenied","awsRegion":"eu-west-1""#, Some("AccessDenied"), "", "eu-west-1", ""),
            (
                r#","recipientAccountId":"111","userIdentity":{"accountId":"222","type":"Root"}"#,
                None,
                "111",
                "",
                "Root",
            ),
            (
                r#","recipientAccountId":"","userIdentity":{"accountId":"222","invokedBy":"x.amazonaws.com","type":"AWSService"}"#,
                None,
                "222",
                "",
                "x.amazonaws.com",
            ),
            (
                r#","userIdentity":{"arn":"arn:aws:iam::1:user/a","invokedBy":"b","type":"IAMUser"}"#,
                None,
                "",
                "",
                "arn:aws:iam::1:user/a",
            ),
            (r#","userIdentity":null"#, None, "", "", ""),
            (r#","responseElements":null,"errorCode":"X""#, Some("X"), "", "", ""),
        ];
        for (extra, kind, acct, region, principal) in cases {
            let raw = rec(extra);
            let r = parse_record(raw.as_bytes()).unwrap();
            assert_eq!(r.error_kind(), *kind, "{extra}");
            assert_eq!(r.account_id(), *acct, "{extra}");
            assert_eq!(r.region(), *region, "{extra}");
            assert_eq!(r.principal(), *principal, "{extra}");
        }
    }

    #[test]
    fn console_login_failures() {
        let login = |extra: &str| {
            format!(
                r#"{{"eventTime":"2023-07-10T12:00:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin"{extra}}}"#
            )
        };
        let cases: &[(&str, Option<&str>)] = &[
            (r#","responseElements":{"ConsoleLogin":"Failure"}"#, Some("ConsoleLoginFailure")),
            (r#","responseElements":{"ConsoleLogin":"Success"}"#, None),
            (r#","errorMessage":"Failed authentication""#, Some("ConsoleLoginFailure")),
            (
                r#","responseElements":{"ConsoleLogin":"Success"},"errorMessage":"Failed authentication""#,
                Some("ConsoleLoginFailure"),
            ),
            (r#","responseElements":null"#, None),
            (r#","responseElements":"Failure""#, None),
            (r#","responseElements":["Failure"]"#, None),
            (r#","responseElements":{"ConsoleLogin":1}"#, None),
            (r#","responseElements":{"ConsoleLogin":{"x":"Failure"}}"#, None),
            (r#","responseElements":{"x":{"ConsoleLogin":"Failure"}}"#, None),
            (r#","responseElements":{"ConsoleLogin":"Fail\u0075re"}"#, Some("ConsoleLoginFailure")),
            (r#","responseElements":{"ConsoleLogin":"Failure"},"errorCode":"Other""#, Some("ConsoleLoginFailure")),
        ];
        for (extra, want) in cases {
            let raw = login(extra);
            assert!(might_be_error(raw.as_bytes()));
            let r = parse_record(raw.as_bytes()).unwrap();
            assert_eq!(r.error_kind(), *want, "{extra}");
        }
        // The same response on another API is not a sign-in failure.
        let other = rec(r#","responseElements":{"ConsoleLogin":"Failure"}"#);
        assert_eq!(parse_record(other.as_bytes()).unwrap().error_kind(), None);
    }

    #[test]
    fn borrows_unescaped_strings() {
        let raw = rec(
            r#","errorCode":"AccessDenied","errorMessage":"it\"s","userIdentity":{"arn":"a","sessionContext":{"x":[1,{"y":null}]}},"requestParameters":{"a":[[[]]]}"#,
        );
        let r = parse_record(raw.as_bytes()).unwrap();
        assert!(matches!(r.error_code, Some(Cow::Borrowed("AccessDenied"))));
        assert!(matches!(r.event_source, Cow::Borrowed("ec2.amazonaws.com")));
        assert!(matches!(&r.error_message, Some(Cow::Owned(s)) if s == "it\"s"));
        assert_eq!(r.identity.arn.as_deref(), Some("a"));
        assert_eq!(r.event_time, utc(2023, 7, 10, 12, 0, 0, 0));
    }

    #[test]
    fn hostile_sizes_and_nesting() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let raw = rec(&format!(r#","errorCode":"X","requestParameters":{deep}"#));
        assert_eq!(parse_record(raw.as_bytes()).unwrap().error_kind(), Some("X"));
        let raw = rec(&format!(r#","errorCode":"X","responseElements":{{"ConsoleLogin":{deep}}}"#));
        assert_eq!(parse_record(raw.as_bytes()).unwrap().error_kind(), Some("X"));
        let raw = rec(&format!(r#","errorCode":"X","userIdentity":{{"sessionContext":{deep}}}"#));
        assert_eq!(parse_record(raw.as_bytes()).unwrap().error_kind(), Some("X"));
        // Unbalanced nesting is simply not JSON.
        let raw = rec(&format!(r#","errorCode":"X","requestParameters":{}"#, "[".repeat(10_000)));
        assert_eq!(parse_record(raw.as_bytes()), Err(ParseError::NotJson));
        let big = "a".repeat(5 << 20);
        let raw = rec(&format!(r#","errorCode":"X","errorMessage":"{big}""#));
        assert_eq!(parse_record(raw.as_bytes()).unwrap().error_message.unwrap().len(), 5 << 20);
    }

    #[test]
    fn might_be_error_prefilter() {
        let cases: &[(&[u8], bool)] = &[
            (br#"{"errorCode":"X"}"#, true),
            (br#"{"responseElements":{"ConsoleLogin":"Failure"}}"#, true),
            (br#"{"eventName":"ConsoleLogin"}"#, true),
            (br#"{"eventName":"DescribeVpcs","errorCodeX":1}"#, false),
            (br#"{"eventName":"DescribeVpcs"}"#, false),
            (b"", false),
        ];
        for (raw, want) in cases {
            assert_eq!(might_be_error(raw), *want, "{}", String::from_utf8_lossy(raw));
        }
    }
}
