//! A strict line-protocol parser: what the fake OpenWay accepts.
//!
//! It reads like InfluxDB 1.x's parser, which DataKit and DataWay use, but stricter wherever
//! the real one would guess, so that an encoder bug shows up as a 400 instead of as quietly
//! different data:
//! - Lines end at `\n` outside double quotes; a newline inside a quoted string field is part of
//!   the string. Empty lines and lines starting with `#` are skipped.
//! - Measurement: `\,` and `\ ` are escapes. Tag keys, tag values, field keys: `\,`, `\=` and
//!   `\ `. A backslash before any other character is kept together with that character (as
//!   InfluxDB's scanner skips the byte after a backslash); a backslash at the end is an error.
//! - Control characters in names and tag values, empty names or tag values, an unescaped `=`
//!   inside a tag value, duplicate keys and a key used as both tag and field are errors.
//! - String fields allow only `\"` and `\\` as escapes. Integers need the `i` suffix
//!   (`u` for unsigned), floats must be finite, booleans are `t`/`T`/`true`/`True`/`TRUE` and
//!   the `f` equivalents.
//! - The timestamp is required: an integer (nanoseconds) after exactly one space, then the end
//!   of the line. No trailing spaces, no `\r`.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

/// One parsed point.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPoint {
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub fields: BTreeMap<String, Value>,
    /// Field keys in the order they appeared.
    pub field_order: Vec<String>,
    pub timestamp: i64,
}

impl ParsedPoint {
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.fields.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.fields.get(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    /// A string field that holds JSON, parsed.
    pub fn json(&self, key: &str) -> Option<serde_json::Value> {
        self.str(key).and_then(|s| serde_json::from_str(s).ok())
    }
}

/// Where and why a body was rejected. Lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole request body.
pub fn parse(body: &str) -> Result<Vec<ParsedPoint>, ParseError> {
    let mut p = Parser { chars: body.chars().collect(), pos: 0, line: 1, line_start: 0 };
    let mut out = Vec::new();
    while !p.at_end() {
        match p.peek() {
            Some('\n') => {
                p.newline();
            }
            Some('#') => {
                while !p.at_end() && p.peek() != Some('\n') {
                    p.pos += 1;
                }
            }
            _ => {
                out.push(p.point()?);
                match p.peek() {
                    None => {}
                    Some('\n') => p.newline(),
                    Some(c) => return Err(p.err(format!("unexpected {c:?} after the timestamp"))),
                }
            }
        }
    }
    Ok(out)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    line_start: usize,
}

const MEASUREMENT_ESCAPES: &[char] = &[',', ' '];
const NAME_ESCAPES: &[char] = &[',', '=', ' '];

#[derive(Clone, Copy, PartialEq)]
enum Name {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn newline(&mut self) {
        self.pos += 1;
        self.line += 1;
        self.line_start = self.pos;
    }

    fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError { line: self.line, column: self.pos - self.line_start + 1, message: message.into() }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected {what}, found {:?}", self.peek())))
        }
    }

    fn point(&mut self) -> Result<ParsedPoint, ParseError> {
        let measurement = self.name(Name::Measurement)?;
        let mut tags = BTreeMap::new();
        while self.peek() == Some(',') {
            self.pos += 1;
            let k = self.name(Name::TagKey)?;
            self.expect('=', "'=' after a tag key")?;
            let v = self.name(Name::TagValue)?;
            if tags.insert(k.clone(), v).is_some() {
                return Err(self.err(format!("tag {k:?} given twice")));
            }
        }
        self.expect(' ', "one space before the fields")?;
        let mut fields = BTreeMap::new();
        let mut field_order = Vec::new();
        loop {
            let k = self.name(Name::FieldKey)?;
            self.expect('=', "'=' after a field key")?;
            let v = self.field_value()?;
            if tags.contains_key(&k) {
                return Err(self.err(format!("{k:?} is both a tag and a field")));
            }
            if fields.insert(k.clone(), v).is_some() {
                return Err(self.err(format!("field {k:?} given twice")));
            }
            field_order.push(k);
            if self.peek() == Some(',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.expect(' ', "one space before the timestamp")?;
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        let timestamp = text.parse::<i64>().map_err(|_| self.err(format!("bad timestamp {text:?}")))?;
        Ok(ParsedPoint { measurement, tags, fields, field_order, timestamp })
    }

    /// A measurement, key or tag value, unescaped.
    fn name(&mut self, kind: Name) -> Result<String, ParseError> {
        let (escapes, stops): (&[char], &[char]) = match kind {
            Name::Measurement => (MEASUREMENT_ESCAPES, &[',', ' ']),
            Name::TagKey | Name::FieldKey => (NAME_ESCAPES, &[',', '=', ' ']),
            Name::TagValue => (NAME_ESCAPES, &[',', ' ']),
        };
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                break;
            }
            if c == '\\' {
                match self.chars.get(self.pos + 1).copied() {
                    None => return Err(self.err("backslash at the end")),
                    Some(n) if n.is_control() => return Err(self.err("control character after a backslash")),
                    Some(n) if escapes.contains(&n) => out.push(n),
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                }
                self.pos += 2;
                continue;
            }
            if c.is_control() {
                return Err(self.err(format!("control character {c:?} in a name or tag value")));
            }
            if kind == Name::TagValue && c == '=' {
                return Err(self.err("unescaped '=' in a tag value"));
            }
            out.push(c);
            self.pos += 1;
        }
        if out.is_empty() {
            return Err(self.err(match kind {
                Name::Measurement => "empty measurement",
                Name::TagKey => "empty tag key",
                Name::TagValue => "empty tag value",
                Name::FieldKey => "empty field key",
            }));
        }
        Ok(out)
    }

    fn field_value(&mut self) -> Result<Value, ParseError> {
        if self.peek() == Some('"') {
            self.pos += 1;
            let mut s = String::new();
            loop {
                match self.peek() {
                    None => return Err(self.err("unterminated string")),
                    Some('"') => {
                        self.pos += 1;
                        return Ok(Value::Str(s));
                    }
                    Some('\\') => match self.chars.get(self.pos + 1).copied() {
                        Some(c @ ('"' | '\\')) => {
                            s.push(c);
                            self.pos += 2;
                        }
                        other => return Err(self.err(format!("invalid escape \\{other:?} in a string"))),
                    },
                    Some('\n') => {
                        s.push('\n');
                        // Still the same point; keep line numbers right for later errors.
                        self.pos += 1;
                        self.line += 1;
                        self.line_start = self.pos;
                    }
                    Some(c) => {
                        s.push(c);
                        self.pos += 1;
                    }
                }
            }
        }
        let start = self.pos;
        while self.peek().is_some_and(|c| !matches!(c, ',' | ' ' | '\n')) {
            self.pos += 1;
        }
        let token: String = self.chars[start..self.pos].iter().collect();
        let bad = |p: &Parser| ParseError {
            line: p.line,
            column: start - p.line_start + 1,
            message: format!("bad field value {token:?}"),
        };
        match token.as_str() {
            "t" | "T" | "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
            "f" | "F" | "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
            "" => return Err(bad(self)),
            _ => {}
        }
        if let Some(n) = token.strip_suffix('i') {
            return n.parse::<i64>().ok().filter(|_| !n.starts_with('+')).map(Value::Int).ok_or_else(|| bad(self));
        }
        if let Some(n) = token.strip_suffix('u') {
            return n.parse::<u64>().ok().filter(|_| !n.starts_with('+')).map(Value::UInt).ok_or_else(|| bad(self));
        }
        let numeric = token.chars().all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | 'e' | 'E' | '+'))
            && token.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-');
        match token.parse::<f64>() {
            Ok(x) if numeric && x.is_finite() => Ok(Value::Float(x)),
            _ => Err(bad(self)),
        }
    }
}
