//! The fast path of [`parse_record`](super::parse_record): one hand-written pass over the
//! bytes that reads the same fields as the serde reader, for the records it can be sure of.
//!
//! With key tracking on, every record is read, so reading is most of the engine's cost. This
//! scanner validates the whole record as strictly as serde_json does (JSON grammar, string
//! escapes, control characters, trailing bytes) while skipping what we do not need, and
//! returns `None` — "ask serde" — whenever it is not certain to give the same answer:
//! escapes in a key or in a string we keep, numbers where serde would convert them
//! (`responseElements` itself, `ConsoleLogin`), an object as `ConsoleLogin`, nesting deeper
//! than [`MAX_DEPTH`], a missing field, a timestamp it does not know, an escaped NUL (which
//! the general path scrubs first), and every malformed input (the serde reader then names the
//! error). So the result, when there is one, equals the serde reader's, which the tests check
//! over the real records, generated ones, and mutations of both.
//!
//! Where the time goes, per record: UTF-8 is checked with `simdutf8`; string bodies, most of
//! the bytes, are crossed 16 at a time with vector compares (`wide`, SSE2 or NEON, no
//! `unsafe` here); key names are told apart by length, first byte and one or two word
//! compares; keys are read as bytes; and the record is built where the caller holds it. What
//! remains is the walk itself, a few instructions a token and some 150 tokens a record.
//!
//! `accessKeyId` is read from the top-level `userIdentity` object only; the same key nested in
//! `requestParameters` or `responseElements` (CreateAccessKey, AssumeRole) is skipped.

use std::borrow::Cow;

use super::{INSIGHT_EVENT_TYPE, Identity, Key, Record, parse_event_time};

/// Nesting handled inside skipped values; deeper input goes to the serde reader.
pub const MAX_DEPTH: usize = 64;

/// The record, when the scanner is sure it equals `parse_record`'s; None when unsure.
#[inline]
pub fn scan_record(raw: &[u8]) -> Option<Record<'_>> {
    let mut r = Record::default();
    scan_record_into(raw, &mut r)?;
    Some(r)
}

/// [`scan_record`] into a record the caller holds, which spares moving the record (some
/// 400 bytes) out to it. On None, `r` holds whatever had been read and is not a record.
pub fn scan_record_into<'a>(raw: &'a [u8], r: &mut Record<'a>) -> Option<()> {
    let text = simdutf8::basic::from_utf8(raw).ok()?;
    let mut s = Scanner { s: text, b: text.as_bytes(), i: 0 };
    let [time, source, name, kind] = s.record(r)?;
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    // Insights events are the serde reader's: it reads their details.
    if kind == Some(INSIGHT_EVENT_TYPE) {
        return None;
    }
    r.event_time = parse_event_time(time?)?;
    r.event_source = Cow::Borrowed(source?);
    r.event_name = Cow::Borrowed(name?);
    Some(())
}

/// `a == b` for the short keys of a record without a call to `memcmp`: two or three
/// overlapping loads of 8 bytes (or two of 4) compare strings of 4 to 24 bytes, and three
/// bytes those of 1 to 3.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let w8 = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let w4 = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        17..=24 => w8(a, 0) == w8(b, 0) && w8(a, 8) == w8(b, 8) && w8(a, n - 8) == w8(b, n - 8),
        _ => a == b,
    }
}

/// Top-level keys we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Top {
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
    Other,
}

/// Classifies a top-level key with a couple of byte tests and one comparison: a `match` on
/// the strings compares against every name of the same length, and records have ~20 keys.
fn top_key(b: &[u8]) -> Top {
    let (cand, name) = match (b.len(), b.first().copied().unwrap_or(0)) {
        (7, b'e') => (Top::EventId, "eventID"),
        (9, b'e') => match (b[1], b[6]) {
            (b'v', b'i') => (Top::EventTime, "eventTime"),
            (b'v', b'y') => (Top::EventType, "eventType"),
            (b'v', b'a') => (Top::EventName, "eventName"),
            _ => (Top::ErrorCode, "errorCode"),
        },
        (9, b'a') => (Top::AwsRegion, "awsRegion"),
        (9, b'u') => (Top::UserAgent, "userAgent"),
        (11, b'e') => (Top::EventSource, "eventSource"),
        (12, b'e') => (Top::ErrorMessage, "errorMessage"),
        (12, b'u') => (Top::UserIdentity, "userIdentity"),
        (15, b's') => (Top::SourceIp, "sourceIPAddress"),
        (16, b'r') => (Top::ResponseElements, "responseElements"),
        (18, b'r') => (Top::RecipientAccountId, "recipientAccountId"),
        _ => return Top::Other,
    };
    if same(b, name.as_bytes()) { cand } else { Top::Other }
}

/// Classifies a key of `userIdentity` as [`top_key`] does the record's, into the serde
/// reader's names for them.
fn identity_key(key: &[u8]) -> Option<Key> {
    let (cand, name) = match (key.len(), key.first().copied().unwrap_or(0)) {
        (4, b't') => (Key::Type, "type"),
        (3, b'a') => (Key::Arn, "arn"),
        (11, b'a') => (Key::AccessKeyId, "accessKeyId"),
        (11, b'p') => (Key::PrincipalId, "principalId"),
        (9, b'a') => (Key::AccountId, "accountId"),
        (9, b'i') => (Key::InvokedBy, "invokedBy"),
        (8, b'u') => (Key::UserName, "userName"),
        _ => return None,
    };
    same(key, name.as_bytes()).then_some(cand)
}

#[derive(Clone, Copy)]
struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

/// The index of the first quote, backslash or control byte of `b` at or after `i` (or the
/// end): where the plain run of a string body stops, 16 bytes at a time. The last few bytes
/// are copied into a block padded with a byte that stops nothing.
#[inline(always)]
pub(super) fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    use wide::u8x16;
    // A quote is 0x22 and control bytes are 0x00 to 0x1f: flipping bit 1 maps exactly those
    // to 0x00..=0x20, so one unsigned comparison finds both.
    let (flip, quote_or_ctrl, backslash) = (u8x16::splat(2), u8x16::splat(0x20), u8x16::splat(b'\\'));
    let special = |block: [u8; 16]| {
        let v = u8x16::new(block);
        let x = v ^ flip;
        let m = x.min(quote_or_ctrl).cmp_eq(x) | v.cmp_eq(backslash);
        m.move_mask() as u32
    };
    while let Some(chunk) = b.get(i..i + 16) {
        let mask = special(chunk.try_into().unwrap_or([0; 16]));
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    let rest = b.get(i..).unwrap_or(&[]);
    let mut block = [b'a'; 16];
    block[..rest.len()].copy_from_slice(rest);
    match special(block) {
        0 => b.len(),
        mask => i + mask.trailing_zeros() as usize,
    }
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips whitespace. CloudTrail writes compact JSON, so the usual answer is "none here":
    /// every JSON whitespace byte is at most a space, and one comparison says so.
    fn ws(&mut self) {
        if self.b.get(self.i).is_none_or(|&c| c > b' ') {
            return;
        }
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte that is not whitespace, the cursor moved to it. Compact JSON has none, and
    /// the byte that is read anyway says so with one comparison.
    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if c > b' ' {
            return Some(c);
        }
        self.ws();
        self.peek()
    }

    /// Steps over `c`, after any whitespace.
    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then(|| self.i += 1)
    }

    /// Moves to the next quote, backslash or control byte of a string body (or the end).
    fn skip_plain(&mut self) {
        self.i = plain_run_end(self.b, self.i);
    }

    /// A string without escapes, borrowed; None for escapes, control characters or EOF.
    /// The cursor is on the opening quote.
    #[inline(always)]
    fn plain_str(&mut self) -> Option<&'a str> {
        let (start, end) = self.plain_span()?;
        self.s.get(start..end)
    }

    /// [`Self::plain_str`] as bytes, for keys: told apart byte by byte, they need not be cut
    /// from the text at char boundaries (which `str` checks at both ends).
    #[inline(always)]
    fn plain_key(&mut self) -> Option<&'a [u8]> {
        let (start, end) = self.plain_span()?;
        self.b.get(start..end)
    }

    /// Where the body of the plain string at the cursor starts and ends; the cursor moves past
    /// its closing quote.
    #[inline(always)]
    fn plain_span(&mut self) -> Option<(usize, usize)> {
        self.i += 1;
        let start = self.i;
        self.skip_plain();
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        Some((start, self.i - 1))
    }

    /// Skips a string, validating escapes as serde_json does when it ignores one (a `\u`
    /// needs four hex digits; surrogates are not checked). The cursor is on the opening quote.
    #[inline(always)]
    fn skip_str(&mut self) -> Option<()> {
        self.i += 1;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            // An escaped NUL is scrubbed before reading (see `Clusterer::ingest`).
                            if !hex.iter().all(u8::is_ascii_hexdigit) || hex == b"0000" {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn skip_number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn skip_lit(&mut self, lit: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + lit.len())? != lit {
            return None;
        }
        self.i += lit.len();
        Some(())
    }

    /// `"key"` then `:`, skipping the key (any valid string).
    #[inline(always)]
    fn skip_key(&mut self) -> Option<()> {
        if self.next()? != b'"' {
            return None;
        }
        self.skip_str()?;
        self.eat(b':')
    }

    /// Skips the value of a member we do not read: most are strings, skipped here without
    /// the machinery [`Self::skip_value`] sets up for nested values.
    #[inline(always)]
    fn skip_member(&mut self) -> Option<()> {
        if self.peek() == Some(b'"') { self.skip_str() } else { self.skip_value() }
    }

    /// Skips any value, iteratively (no stack frame per level), validating it.
    fn skip_value(&mut self) -> Option<()> {
        // On a copy, which can live in registers: `self` is the caller's, in memory.
        let mut s = *self;
        s.skip_value_here()?;
        self.i = s.i;
        Some(())
    }

    /// The body of [`Self::skip_value`].
    #[inline(always)]
    fn skip_value_here(&mut self) -> Option<()> {
        // One bit per open container: 1 = object, 0 = array.
        let mut bits = 0u64;
        let mut depth = 0usize;
        loop {
            match self.next()? {
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.next()? == close {
                        self.i += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        let bit = 1u64 << depth;
                        if open == b'{' {
                            bits |= bit
                        } else {
                            bits &= !bit
                        }
                        depth += 1;
                        if open == b'{' {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                b'"' => self.skip_str()?,
                b't' => self.skip_lit(b"true")?,
                b'f' => self.skip_lit(b"false")?,
                b'n' => self.skip_lit(b"null")?,
                b'-' | b'0'..=b'9' => self.skip_number()?,
                _ => return None,
            }
            // A value is complete: close containers until one continues or none is open.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let top = depth - 1;
                let is_object = bits & (1u64 << top) != 0;
                match self.next()? {
                    b',' => {
                        self.i += 1;
                        if is_object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    b'}' if is_object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    b']' if !is_object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// A string or null, as serde reads `Option<&str>`; anything else is for serde to judge.
    /// [`Self::opt_str`] in the form [`Record`] holds.
    #[inline(always)]
    fn opt_cow(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.opt_str().map(|v| v.map(Cow::Borrowed))
    }

    #[inline(always)]
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'"' => self.plain_str().map(Some),
            b'n' => self.skip_lit(b"null").map(|_| None),
            _ => None,
        }
    }

    /// Calls `f(scanner, key)` on the value of each member of the object at the cursor;
    /// keys must be plain strings. Ends after the closing brace.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.next()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.next()? != b'"' {
                return None;
            }
            let key = self.plain_key()?;
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            match self.next()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Reads the record's fields into `r` in place, and returns `eventTime`, `eventSource`,
    /// `eventName` and `eventType` for [`scan_record`] to check: building the record where it
    /// is returned spares copying it (it is some 400 bytes) from one frame to the next.
    fn record(&mut self, r: &mut Record<'a>) -> Option<[Option<&'a str>; 4]> {
        let [mut time, mut source, mut name, mut kind] = [None; 4];
        // Duplicate keys: the last one wins, as in the serde reader.
        self.members(|s, key| {
            match top_key(key) {
                Top::EventTime => time = s.opt_str()?,
                Top::EventId => r.event_id = s.opt_cow()?,
                Top::EventSource => source = s.opt_str()?,
                Top::EventName => name = s.opt_str()?,
                Top::EventType => kind = s.opt_str()?,
                Top::AwsRegion => r.aws_region = s.opt_cow()?,
                Top::RecipientAccountId => r.recipient_account_id = s.opt_cow()?,
                Top::ErrorCode => r.error_code = s.opt_cow()?,
                Top::ErrorMessage => r.error_message = s.opt_cow()?,
                Top::SourceIp => r.source_ip = s.opt_cow()?,
                Top::UserAgent => r.user_agent = s.opt_cow()?,
                Top::UserIdentity => s.identity(&mut r.identity)?,
                Top::ResponseElements => r.console_login = s.response_elements()?.map(Cow::Borrowed),
                Top::Other => s.skip_member()?,
            }
            Some(())
        })?;
        Some([time, source, name, kind])
    }

    /// Reads `userIdentity` into `id` in place (a later duplicate replaces it whole; null
    /// leaves every field empty, as an absent identity does).
    fn identity(&mut self, id: &mut Identity<'a>) -> Option<()> {
        if self.peek()? == b'n' {
            self.skip_lit(b"null")?;
            *id = Identity::default();
            return Some(());
        }
        if self.peek()? != b'{' {
            return None;
        }
        *id = Identity::default();
        let cow = |v: Option<&'a str>| v.map(Cow::Borrowed);
        self.members(|s, key| {
            let field = match identity_key(key) {
                Some(Key::Type) => &mut id.type_,
                Some(Key::Arn) => &mut id.arn,
                Some(Key::AccessKeyId) => &mut id.access_key_id,
                Some(Key::PrincipalId) => &mut id.principal_id,
                Some(Key::AccountId) => &mut id.account_id,
                Some(Key::InvokedBy) => &mut id.invoked_by,
                Some(Key::UserName) => &mut id.user_name,
                _ => return s.skip_member(),
            };
            *field = cow(s.opt_str()?);
            Some(())
        })
    }

    /// `responseElements.ConsoleLogin` when it is a plain string; any other value of
    /// `responseElements` yields None, except numbers, which serde converts (and may reject).
    fn response_elements(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'{' => {}
            b'-' | b'0'..=b'9' => return None,
            _ => return self.skip_value().map(|_| None),
        }
        let mut found = None;
        self.members(|s, key| {
            if same(key, b"ConsoleLogin") {
                found = match s.peek()? {
                    b'"' => Some(s.plain_str()?),
                    // serde converts numbers, and reads (validates) the keys of an object
                    // here more strictly than it does when skipping.
                    b'-' | b'0'..=b'9' | b'{' => return None,
                    _ => {
                        s.skip_value()?;
                        None
                    }
                };
                Some(())
            } else {
                s.skip_value()
            }
        })?;
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::parse_record_serde;
    use crate::engine::test_records_dir;
    use crate::synth::{SplitMix64, Synth, SynthConfig};
    use serde_json::value::RawValue;

    /// The contract: whenever the scanner answers, serde gives the same record.
    fn check(raw: &[u8]) -> bool {
        let fast = scan_record(raw);
        if let Some(r) = &fast {
            match parse_record_serde(raw) {
                Ok(slow) => assert_eq!(r, &slow, "{}", String::from_utf8_lossy(raw)),
                Err(e) => panic!("scanner accepted what serde rejects ({e}): {}", String::from_utf8_lossy(raw)),
            }
        }
        fast.is_some()
    }

    #[derive(serde::Deserialize)]
    struct Delivery {
        #[serde(rename = "Records")]
        records: Vec<Box<RawValue>>,
    }

    /// Every raw record of the sample sets (files as delivered, arrays, and JSON lines).
    pub(crate) fn real_records() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack = vec![test_records_dir()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let recs: Vec<Box<RawValue>> = if text.trim_start().starts_with('[') {
                        serde_json::from_str(&text).unwrap()
                    } else {
                        serde_json::from_str::<Delivery>(&text).unwrap().records
                    };
                    out.extend(recs.iter().map(|r| r.get().as_bytes().to_vec()));
                } else if p.file_name().is_some_and(|n| n == "events.jsonl") {
                    let text = std::fs::read(&p).unwrap();
                    out.extend(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
                }
            }
        }
        out
    }

    #[test]
    fn real_records_agree_and_mostly_take_the_fast_path() {
        let recs = real_records();
        assert_eq!(recs.len(), 3663);
        let fast = recs.iter().filter(|r| check(r)).count();
        let parsed = recs.iter().filter(|r| parse_record_serde(r).is_ok()).count();
        // The rest carry escapes in a field we keep, or are malformed; serde reads those.
        assert!(fast * 100 >= parsed * 95, "fast path took {fast} of {parsed}");
    }

    /// Whitespace between every token (records re-written by tools, or pretty-printed files)
    /// is stepped over wherever JSON allows it, and the record read as the compact one is.
    #[test]
    fn pretty_printed_records_are_read_as_compact_ones() {
        let mut read = 0;
        for raw in real_records().iter().step_by(5) {
            let Some(compact) = scan_record(raw) else { continue };
            let value: serde_json::Value = serde_json::from_slice(raw).unwrap();
            for spaced in [serde_json::to_vec_pretty(&value).unwrap(), spaced_out(raw)] {
                assert!(check(&spaced), "{}", String::from_utf8_lossy(&spaced));
                assert_eq!(scan_record(&spaced).unwrap(), compact);
            }
            read += 1;
        }
        assert!(read > 500, "{read}");
    }

    /// `raw` with a space, tab, line break or carriage return around each structural byte
    /// outside strings.
    fn spaced_out(raw: &[u8]) -> Vec<u8> {
        const WS: &[u8] = b" \t\n\r";
        let (mut out, mut in_str, mut escaped) = (Vec::new(), false, false);
        for (n, &c) in raw.iter().enumerate() {
            let structural = !in_str && matches!(c, b'{' | b'}' | b'[' | b']' | b':' | b',');
            if structural {
                out.push(WS[n % 4]);
            }
            out.push(c);
            if structural {
                out.push(WS[(n + 1) % 4]);
            }
            if in_str && !escaped && c == b'\\' {
                escaped = true;
                continue;
            }
            if c == b'"' && !escaped {
                in_str = !in_str;
            }
            escaped = false;
        }
        out
    }

    #[test]
    fn generated_records_all_take_the_fast_path() {
        let mut s = Synth::new(SynthConfig { seed: 11, ..Default::default() });
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            buf.clear();
            s.next_into(&mut buf);
            assert!(check(&buf), "{}", String::from_utf8_lossy(&buf));
        }
    }

    const BASE: &str =
        r#"{"eventTime":"2023-07-10T12:00:00Z","eventSource":"iam.amazonaws.com","eventName":"CreateAccessKey""#;

    fn rec(extra: &str) -> Vec<u8> {
        format!("{BASE}{extra}}}").into_bytes()
    }

    /// (raw, does the scanner answer?)
    fn adversarial() -> Vec<(Vec<u8>, bool)> {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut latin = rec("");
        latin.truncate(latin.len() - 1);
        latin.extend_from_slice(b",\"errorCode\":\"caf\xc3\xa9\"}");
        let mut bad_utf8 = rec("");
        bad_utf8.truncate(bad_utf8.len() - 1);
        bad_utf8.extend_from_slice(b",\"requestParameters\":\"\xff\"}");
        vec![
            // accessKeyId outside userIdentity is never the caller's key.
            (
                rec(
                    r#","requestParameters":{"accessKeyId":"AKIAREQ"},"responseElements":{"accessKey":{"accessKeyId":"AKIARESP"}},"userIdentity":{"accessKeyId":"AKIACALLER"}"#,
                ),
                true,
            ),
            (rec(r#","userIdentity":{"sessionContext":{"accessKeyId":"AKIANESTED"}},"accessKeyId":"AKIATOP""#), true),
            (rec(r#","userIdentity":{"accessKeyId":"AKIA1"},"userIdentity":{"arn":"a"}"#), true),
            (rec(r#","userIdentity":{"accessKeyId":"AKIA1"},"userIdentity":null"#), true),
            (rec(r#","userIdentity":{"accessKeyId":"AKIA1","accessKeyId":null}"#), true),
            (rec(r#","userIdentity":{"accessKeyId":"AKI\u0041"}"#), false),
            (rec(r#","userIdentity":{"access\u004beyId":"AKIA"}"#), false),
            (rec(r#","user\u0049dentity":{"accessKeyId":"AKIA"}"#), false),
            (rec(r#","userIdentity":"root""#), false),
            (rec(r#","userIdentity":{"accessKeyId":7}"#), false),
            (rec(r#","errorCode":"X","errorMessage":"it\"s""#), false),
            (rec(r#","errorCode":"X","requestParameters":{"m":"it\"s \u00e9 \ud800 \n \/"}"#), true),
            (rec(r#","responseElements":{"ConsoleLogin":"Failure"}"#), true),
            (rec(r#","responseElements":{"ConsoleLogin":"Failure","ConsoleLogin":[1,{"a":2}]}"#), true),
            (rec(r#","responseElements":{"ConsoleLogin":{"\ud800":1}}"#), false),
            (rec(r#","responseElements":{"ConsoleLogin":1e999}"#), false),
            (rec(r#","responseElements":1e999"#), false),
            (rec(r#","responseElements":"Failure""#), true),
            (rec(r#","responseElements":[{"ConsoleLogin":"Failure"}]"#), true),
            (rec(r#","responseElements":{"x":-0.5e+7,"y":[true,false,null,{}],"z":{}}"#), true),
            (rec(&format!(r#","requestParameters":{}"#, deep(MAX_DEPTH))), true),
            // The innermost `[]` is closed on sight and never pushed.
            (rec(&format!(r#","requestParameters":{}"#, deep(MAX_DEPTH + 1))), true),
            (rec(&format!(r#","requestParameters":{}"#, deep(MAX_DEPTH + 2))), false),
            (rec(&format!(r#","requestParameters":{}"#, "[".repeat(10))), false),
            (rec(r#","requestParameters":[1,]"#), false),
            (rec(r#","requestParameters":{"a":1,}"#), false),
            (rec(r#","requestParameters":{"a" 1}"#), false),
            (rec(r#","requestParameters":{1:1}"#), false),
            (rec(r#","requestParameters":01"#), false),
            (rec(r#","requestParameters":1."#), false),
            (rec(r#","requestParameters":1e"#), false),
            (rec(r#","requestParameters":-"#), false),
            (rec(r#","requestParameters":+1"#), false),
            (rec(r#","requestParameters":tru"#), false),
            (rec(r#","requestParameters":"\x""#), false),
            (rec(r#","requestParameters":"\u12G4""#), false),
            (rec(",\"requestParameters\":\"a\tb\""), false),
            (rec(",\"errorMessage\":\"a\u{1}b\""), false),
            (rec(" \n\t\r,\"requestParameters\" : { \"a\" : [ 1 , 2 ] } "), true),
            (format!("{} \n ", String::from_utf8(rec("")).unwrap()).into_bytes(), true),
            (format!("{} x", String::from_utf8(rec("")).unwrap()).into_bytes(), false),
            // An escaped NUL is the general path's, which scrubs it; `\\u0000` is text.
            (rec(r#","requestParameters":{"k":"a\u0000"}"#), false),
            (rec(r#","requestParameters":{"k":"a\\u0000"}"#), true),
            (rec(r#","requestParameters":{"k":"a\u00001"}"#), false),
            (rec(r#","eventTime":"redacted""#), false),
            (rec(r#","eventTime":"2023-07-10 12:00:00""#), true),
            (rec(r#","eventTime":"2016-12-31T23:59:60Z""#), true),
            (rec(r#","eventName":null"#), false),
            (b"[]".to_vec(), false),
            (b"".to_vec(), false),
            (b"{}".to_vec(), false),
            (latin, true),
            (bad_utf8, false),
        ]
    }

    #[test]
    fn top_keys() {
        let names = [
            "eventTime",
            "eventID",
            "eventSource",
            "eventName",
            "eventType",
            "awsRegion",
            "recipientAccountId",
            "errorCode",
            "errorMessage",
            "sourceIPAddress",
            "userAgent",
            "userIdentity",
            "responseElements",
        ];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            assert_ne!(top_key(n.as_bytes()), Top::Other, "{n}");
            assert!(seen.insert(top_key(n.as_bytes())), "{n}");
        }
        for other in [
            "",
            "e",
            "eventTimE",
            "evantTime",
            "eventTypo",
            "errorCodes",
            "eventVersion",
            "requestParameters",
            "ConsoleLogin",
        ] {
            assert_eq!(top_key(other.as_bytes()), Top::Other, "{other}");
        }
    }

    #[test]
    fn identity_keys() {
        let names = ["type", "arn", "accessKeyId", "principalId", "accountId", "invokedBy", "userName"];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            assert!(seen.insert(identity_key(n.as_bytes()).unwrap_or_else(|| panic!("{n}"))), "{n}");
        }
        for other in [
            "",
            "typ",
            "types",
            "arN",
            "accessKeyID",
            "principalID",
            "accountID",
            "invokedby",
            "userNames",
            "sessionContext",
        ] {
            assert_eq!(identity_key(other.as_bytes()), None, "{other}");
        }
    }

    /// Against a byte-at-a-time search: every length around the 16-byte steps, each special
    /// byte at each position, from every start, and none at all.
    #[test]
    fn plain_run_end_finds_the_first_special_byte() {
        let naive = |b: &[u8], i: usize| {
            i + b[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(b.len() - i)
        };
        for n in 0..50 {
            let mut cases = vec![vec![b'x'; n]];
            for at in 0..n {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut b = vec![0xc3; n];
                    b[at] = special;
                    cases.push(b);
                }
            }
            for b in &cases {
                for i in 0..=n {
                    assert_eq!(plain_run_end(b, i), naive(b, i), "{b:?} from {i}");
                }
            }
        }
    }

    /// `same` against `==` for every length it treats apart, equal and differing at each byte.
    #[test]
    fn same_is_equality() {
        for n in 0..=30 {
            let a: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(same(a.as_bytes(), a.clone().as_bytes()), "{a}");
            assert!(!same(a.as_bytes(), format!("{a}x").as_bytes()), "{a}");
            for at in 0..n {
                let mut b = a.clone().into_bytes();
                b[at] = b'Z';
                assert!(!same(a.as_bytes(), &b), "{a} {b:?}");
            }
        }
    }

    #[test]
    fn adversarial_records() {
        for (raw, answers) in adversarial() {
            assert_eq!(check(&raw), answers, "{}", String::from_utf8_lossy(&raw));
        }
        let cases = adversarial();
        let r = scan_record(&cases[0].0).unwrap();
        assert_eq!(r.identity.access_key_id.as_deref(), Some("AKIACALLER"));
        let r = scan_record(&cases[1].0).unwrap();
        assert_eq!(r.identity.access_key_id, None);
    }

    /// Random edits of real, generated and adversarial records: wherever the scanner answers,
    /// it must agree with serde.
    #[test]
    fn mutations_agree_with_serde() {
        let mut bases: Vec<Vec<u8>> = real_records().into_iter().step_by(7).collect();
        let mut s = Synth::new(SynthConfig { seed: 5, ..Default::default() });
        for _ in 0..300 {
            let mut buf = Vec::new();
            s.next_into(&mut buf);
            bases.push(buf);
        }
        bases.extend(adversarial().into_iter().map(|(r, _)| r));
        const ALPHABET: &[u8] = b"{}[]\":,\\ \t\n0123456789-+.eEtrufalsn\x01\x7f\xc3\xa9u";
        let mut rng = SplitMix64::new(42);
        let (mut answered, mut total) = (0, 0);
        for base in &bases {
            for _ in 0..40 {
                let mut m = base.clone();
                for _ in 0..1 + rng.below(3) {
                    if m.is_empty() {
                        break;
                    }
                    let at = rng.below(m.len() as u64) as usize;
                    let c = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
                    match rng.below(4) {
                        0 => {
                            m.remove(at);
                        }
                        1 => m.insert(at, c),
                        2 => m[at] = c,
                        _ => {
                            let end = (at + 1 + rng.below(16) as usize).min(m.len());
                            let piece = m[at..end].to_vec();
                            m.splice(at..at, piece);
                        }
                    }
                }
                total += 1;
                answered += usize::from(check(&m));
            }
        }
        // Many edits land in skipped payload and keep the record valid; those must still agree.
        assert!(answered > total / 10, "{answered} of {total}");
    }
}
