//! A line-protocol encoder for what this service writes to Guance (DataWay/OpenWay).
//!
//! `measurement[,tag=value…] field=value[,field=value…] timestamp_ns`, one point per line.
//! The escaping follows DataKit's API reference (`/v1/write/:category`), which is InfluxDB 1.x
//! line protocol, and Guance's own DataWay Python SDK:
//!
//! - measurement: `,` and space are escaped with a backslash;
//! - tag keys, tag values and field keys: `,`, `=` and space are escaped;
//! - string field values are double-quoted, with `"` and `\` escaped;
//! - integers carry an `i` suffix, floats none, booleans are `true`/`false`;
//! - the timestamp is in nanoseconds.
//!
//! Newlines: DataKit's reference says measurement, tag keys, tag values and field keys must not
//! contain `\n`, while "newlines in field values do not need to be escaped": the parser
//! (InfluxDB's `scanLine`) does not end a line inside a quoted string. So a newline inside a
//! string field is written as is; this is what keeps a markdown `df_message` multi-line (an
//! escaped `\n` would be shown literally, the parser does not unescape it). Everywhere else a
//! newline — or any other control character — cannot be represented and is rejected.
//!
//! Backslashes in names and tag values are not escapable: InfluxDB's scanner treats `\` as
//! "skip the next byte" and its unescaper only undoes `\,`, `\=` and `\ `. A backslash followed by
//! an ordinary character survives unchanged, but one at the end of a name or value, or right
//! before a character that gets escaped, would be read back differently; those are rejected.
//!
//! Other limits that Guance enforces by silently truncating (DataKit's point constraints) are
//! rejected here instead, so a point is either written exactly or not at all: tag values over
//! 1024 bytes, keys over 256 bytes, string fields over 32 MiB, a key used twice or used as both
//! a tag and a field, non-finite floats, empty keys and empty tag values, a point without fields.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Longest tag value DataKit keeps, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 1024;
/// Longest tag or field key DataKit keeps, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest string field value DataKit keeps, in bytes.
pub const MAX_STRING_FIELD_BYTES: usize = 32 * 1024 * 1024;

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(v.to_owned())
    }
}

impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(v)
    }
}

impl From<i64> for FieldValue {
    fn from(v: i64) -> Self {
        FieldValue::Int(v)
    }
}

impl From<f64> for FieldValue {
    fn from(v: f64) -> Self {
        FieldValue::Float(v)
    }
}

impl From<bool> for FieldValue {
    fn from(v: bool) -> Self {
        FieldValue::Bool(v)
    }
}

/// Which part of a point a rejected name or value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
    FieldValue,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Measurement => "measurement",
            Part::TagKey => "tag key",
            Part::TagValue => "tag value",
            Part::FieldKey => "field key",
            Part::FieldValue => "field value",
        })
    }
}

/// Why a point cannot be encoded. Names are reported (they are ours, not secrets); values
/// are not, since they may be long or carry record text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the {part} {name:?} is empty")]
    Empty { part: Part, name: String },
    #[error("the {part} of {name:?} contains a control character (line protocol cannot carry it)")]
    ControlChar { part: Part, name: String },
    #[error("the {part} of {name:?} has a backslash that would be read back differently")]
    Backslash { part: Part, name: String },
    #[error("the {part} of {name:?} contains a double quote")]
    Quote { part: Part, name: String },
    #[error("the measurement starts with '#', which makes the line a comment")]
    CommentMeasurement,
    #[error("the {part} of {name:?} is {len} bytes, over the {max}-byte limit")]
    TooLong { part: Part, name: String, len: usize, max: usize },
    #[error("the key {0:?} is used twice")]
    DuplicateKey(String),
    #[error("the field {0:?} is not a finite number")]
    NonFinite(String),
    #[error("a point needs at least one field")]
    NoFields,
}

/// One point. Tags are kept sorted by key (the order InfluxDB recommends and Guance's SDK
/// writes); fields keep the order they were added in.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: Vec<(String, FieldValue)>,
    timestamp_ns: i64,
}

impl Point {
    pub fn new(measurement: impl Into<String>, timestamp_ns: i64) -> Self {
        Point { measurement: measurement.into(), tags: BTreeMap::new(), fields: Vec::new(), timestamp_ns }
    }

    /// Adds (or replaces) a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Adds a field. Adding the same key twice makes [`Point::encode`] fail rather than
    /// silently keeping one of them.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.fields.push((key.into(), value.into()));
        self
    }

    pub fn measurement(&self) -> &str {
        &self.measurement
    }

    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    pub fn fields(&self) -> &[(String, FieldValue)] {
        &self.fields
    }

    /// The value of a field, if present.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn timestamp_ns(&self) -> i64 {
        self.timestamp_ns
    }

    /// The point as one line (without the trailing newline).
    pub fn encode(&self) -> Result<String, EncodeError> {
        let mut out = String::with_capacity(64 + self.fields.iter().map(|(k, _)| k.len() + 16).sum::<usize>());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    fn encode_into(&self, out: &mut String) -> Result<(), EncodeError> {
        if self.measurement.starts_with('#') {
            return Err(EncodeError::CommentMeasurement);
        }
        check_name(Part::Measurement, &self.measurement, &self.measurement, &[',', ' '], usize::MAX)?;
        escape_name(out, &self.measurement, &[',', ' ']);
        for (k, v) in &self.tags {
            check_name(Part::TagKey, k, k, NAME_SPECIALS, MAX_KEY_BYTES)?;
            check_name(Part::TagValue, k, v, NAME_SPECIALS, MAX_TAG_VALUE_BYTES)?;
            out.push(',');
            escape_name(out, k, NAME_SPECIALS);
            out.push('=');
            escape_name(out, v, NAME_SPECIALS);
        }
        if self.fields.is_empty() {
            return Err(EncodeError::NoFields);
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            check_name(Part::FieldKey, k, k, NAME_SPECIALS, MAX_KEY_BYTES)?;
            if self.tags.contains_key(k) || self.fields[..i].iter().any(|(p, _)| p == k) {
                return Err(EncodeError::DuplicateKey(k.clone()));
            }
            out.push(if i == 0 { ' ' } else { ',' });
            escape_name(out, k, NAME_SPECIALS);
            out.push('=');
            match v {
                FieldValue::Str(s) => {
                    if s.len() > MAX_STRING_FIELD_BYTES {
                        return Err(EncodeError::TooLong {
                            part: Part::FieldValue,
                            name: k.clone(),
                            len: s.len(),
                            max: MAX_STRING_FIELD_BYTES,
                        });
                    }
                    out.push('"');
                    for c in s.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
                FieldValue::Int(n) => {
                    let _ = write!(out, "{n}i");
                }
                FieldValue::Float(x) => {
                    if !x.is_finite() {
                        return Err(EncodeError::NonFinite(k.clone()));
                    }
                    // Rust prints f64 without an exponent and with the shortest digits that
                    // read back to the same value, which InfluxDB's parser accepts.
                    let _ = write!(out, "{x}");
                }
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            }
        }
        let _ = write!(out, " {}", self.timestamp_ns);
        Ok(())
    }
}

/// Characters escaped in tag keys, tag values and field keys.
const NAME_SPECIALS: &[char] = &[',', '=', ' '];

fn check_name(part: Part, name: &str, text: &str, specials: &[char], max: usize) -> Result<(), EncodeError> {
    let err_name = || name.to_owned();
    if text.is_empty() {
        return Err(EncodeError::Empty { part, name: err_name() });
    }
    if text.len() > max {
        return Err(EncodeError::TooLong { part, name: err_name(), len: text.len(), max });
    }
    if text.chars().any(char::is_control) {
        return Err(EncodeError::ControlChar { part, name: err_name() });
    }
    // A quote in a key can flip InfluxDB's quote tracking for the rest of the line.
    if part != Part::TagValue && text.contains('"') {
        return Err(EncodeError::Quote { part, name: err_name() });
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                None => return Err(EncodeError::Backslash { part, name: err_name() }),
                Some(n) if specials.contains(n) => {
                    return Err(EncodeError::Backslash { part, name: err_name() });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn escape_name(out: &mut String, text: &str, specials: &[char]) {
    for c in text.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Encodes points as a request body: one line each, separated by `\n`.
pub fn encode_lines<'p>(points: impl IntoIterator<Item = &'p Point>) -> Result<String, EncodeError> {
    let mut out = String::new();
    for (i, p) in points.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        p.encode_into(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Point {
        Point::new("monitor", 1_700_000_000_000_000_000)
    }

    #[test]
    fn encodes_every_type_and_escape() {
        let cases: Vec<(Point, &str)> = vec![
            (p().field("f", 1i64), "monitor f=1i 1700000000000000000"),
            (p().field("f", -42i64), "monitor f=-42i 1700000000000000000"),
            (p().field("f", 0.5), "monitor f=0.5 1700000000000000000"),
            (p().field("f", 3.0), "monitor f=3 1700000000000000000"),
            (p().field("f", true).field("g", false), "monitor f=true,g=false 1700000000000000000"),
            (p().field("f", ""), "monitor f=\"\" 1700000000000000000"),
            (p().field("f", "say \"hi\""), r#"monitor f="say \"hi\"" 1700000000000000000"#),
            (p().field("f", r"C:\dir\"), r#"monitor f="C:\\dir\\" 1700000000000000000"#),
            (p().field("f", "a,b=c d"), "monitor f=\"a,b=c d\" 1700000000000000000"),
            // A newline inside a string field stays a newline: the parser is quote-aware.
            (p().field("f", "line1\nline2"), "monitor f=\"line1\nline2\" 1700000000000000000"),
            (
                p().field("f", "tab\there\r\n#not a comment"),
                "monitor f=\"tab\there\r\n#not a comment\" 1700000000000000000",
            ),
            (p().field("f", "日本語 🚀"), "monitor f=\"日本語 🚀\" 1700000000000000000"),
            (
                p().tag("b", "2").tag("a", "x y,z=w").field("f", 1i64),
                r"monitor,a=x\ y\,z\=w,b=2 f=1i 1700000000000000000",
            ),
            (p().tag("k", r#"quote"in"tag"#).field("f", 1i64), r#"monitor,k=quote"in"tag f=1i 1700000000000000000"#),
            (p().tag("k", r"a\b").field("f", 1i64), r"monitor,k=a\b f=1i 1700000000000000000"),
            (p().tag("k", r"a\\b").field("f", 1i64), r"monitor,k=a\\b f=1i 1700000000000000000"),
            (Point::new(r"m\=x", 1).field("f", 1i64), r"m\=x f=1i 1"),
            (p().field("key with space,comma=eq", 1i64), r"monitor key\ with\ space\,comma\=eq=1i 1700000000000000000"),
            (Point::new("my meas,x=y", 5).field("f", 1i64), r"my\ meas\,x=y f=1i 5"),
            (Point::new("m", -5).field("f", 1i64), "m f=1i -5"),
            (p().field("z", 1i64).field("a", 2i64), "monitor z=1i,a=2i 1700000000000000000"),
        ];
        for (point, want) in cases {
            assert_eq!(point.encode().unwrap(), want, "{point:?}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_encoded() {
        use EncodeError as E;
        let long_tag = "x".repeat(MAX_TAG_VALUE_BYTES + 1);
        let cases: Vec<(Point, E)> = vec![
            (Point::new("", 0).field("f", 1i64), E::Empty { part: Part::Measurement, name: String::new() }),
            (Point::new("#comment", 0).field("f", 1i64), E::CommentMeasurement),
            (Point::new("a\nb", 0).field("f", 1i64), E::ControlChar { part: Part::Measurement, name: "a\nb".into() }),
            (p(), E::NoFields),
            (p().field("", 1i64), E::Empty { part: Part::FieldKey, name: String::new() }),
            (p().field("f\n", 1i64), E::ControlChar { part: Part::FieldKey, name: "f\n".into() }),
            (p().field("f\"", 1i64), E::Quote { part: Part::FieldKey, name: "f\"".into() }),
            (p().field("f", f64::NAN), E::NonFinite("f".into())),
            (p().field("f", f64::INFINITY), E::NonFinite("f".into())),
            (p().field("f", 1i64).field("f", 2i64), E::DuplicateKey("f".into())),
            (p().tag("f", "x").field("f", 1i64), E::DuplicateKey("f".into())),
            (p().tag("k", "").field("f", 1i64), E::Empty { part: Part::TagValue, name: "k".into() }),
            (p().tag("", "v").field("f", 1i64), E::Empty { part: Part::TagKey, name: String::new() }),
            (p().tag("k", "two\nlines").field("f", 1i64), E::ControlChar { part: Part::TagValue, name: "k".into() }),
            (p().tag("k", "cr\r").field("f", 1i64), E::ControlChar { part: Part::TagValue, name: "k".into() }),
            (p().tag("k", "nul\0").field("f", 1i64), E::ControlChar { part: Part::TagValue, name: "k".into() }),
            (p().tag("k", r"ends\").field("f", 1i64), E::Backslash { part: Part::TagValue, name: "k".into() }),
            (p().tag("k", r"a\,b").field("f", 1i64), E::Backslash { part: Part::TagValue, name: "k".into() }),
            (p().tag("k", r"a\ b").field("f", 1i64), E::Backslash { part: Part::TagValue, name: "k".into() }),
            (p().tag("k", r"a\\,b").field("f", 1i64), E::Backslash { part: Part::TagValue, name: "k".into() }),
            (p().tag(r"k\=", "v").field("f", 1i64), E::Backslash { part: Part::TagKey, name: r"k\=".into() }),
            (p().field(r"key\", 1i64), E::Backslash { part: Part::FieldKey, name: r"key\".into() }),
            (
                p().tag("k", long_tag).field("f", 1i64),
                E::TooLong { part: Part::TagValue, name: "k".into(), len: 1025, max: 1024 },
            ),
            (
                p().field("k".repeat(257), 1i64),
                E::TooLong { part: Part::FieldKey, name: "k".repeat(257), len: 257, max: 256 },
            ),
        ];
        for (point, want) in cases {
            assert_eq!(point.encode(), Err(want), "{point:?}");
        }
    }

    #[test]
    fn errors_name_the_key_not_the_value() {
        let secretish = "value that should not be echoed\nback";
        let err = p().tag("account_id", secretish).field("f", 1i64).encode().unwrap_err();
        assert!(!err.to_string().contains("echoed"), "{err}");
        assert!(err.to_string().contains("account_id"), "{err}");
    }

    #[test]
    fn lines_are_joined_by_newlines() {
        let a = p().field("f", 1i64);
        let b = Point::new("other", 7).field("s", "x\ny");
        assert_eq!(encode_lines([&a, &b]).unwrap(), "monitor f=1i 1700000000000000000\nother s=\"x\ny\" 7");
        assert_eq!(encode_lines(std::iter::empty::<&Point>()).unwrap(), "");
        assert!(encode_lines([&a, &p()]).is_err());
    }
}
