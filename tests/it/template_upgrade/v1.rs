//! The template rules of version 1, frozen: what the service stored before template rules
//! were versioned. A database made by that version is built with them in
//! `template_upgrade`, to check that an upgrade re-templates it and finds nothing new.
//! Never change this file; a later version of the rules freezes its own copy.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Messages are cut to this many chars before templating; the tail of a longer message is
/// nearly always a payload (encoded message, policy) rather than the error's wording.
const MAX_MESSAGE_CHARS: usize = 2048;

/// The prefix of `message` that [`template`] looks at: at most [`MAX_MESSAGE_CHARS`] chars.
fn truncate_message(message: &str) -> &str {
    // No more bytes than the limit means no more chars: skip the char walk.
    if message.len() <= MAX_MESSAGE_CHARS {
        return message;
    }
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => &message[..i],
        None => message,
    }
}

/// The errorMessage with its variable parts masked, by the rules of version 1.
pub fn template_v1(message: &str) -> String {
    let norm = normalize(truncate_message(message));
    let chars: Vec<char> = norm.chars().collect();
    let mut out = String::with_capacity(norm.len());
    let mut text = String::new();
    let closers = Closers::new(&chars);
    let mut next_single = 0;
    let mut next_double = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = if i == 0 { None } else { Some(chars[i - 1]) };
        if (c == '\'' || c == '"') && matches!(prev, None | Some(' ' | '(' | '=' | ':')) {
            let (list, cursor) =
                if c == '\'' { (&closers.single, &mut next_single) } else { (&closers.double, &mut next_double) };
            // Closers are visited in increasing order, so one cursor per quote keeps this linear.
            while *cursor < list.len() && list[*cursor] < i + 2 {
                *cursor += 1;
            }
            if let Some(&j) = list.get(*cursor) {
                mask_tokens(&text, &mut out);
                text.clear();
                out.push(c);
                out.push_str("<*>");
                out.push(c);
                i = j + 1;
                continue;
            }
        }
        if c == '(' && matches!(prev, None | Some(' ')) {
            if let Some(j) = paren_single_token(&chars, i) {
                mask_tokens(&text, &mut out);
                text.clear();
                out.push_str("(<*>)");
                i = j + 1;
                continue;
            }
        }
        text.push(c);
        i += 1;
    }
    mask_tokens(&text, &mut out);
    out
}

/// Control chars → space, whitespace runs → one space, ends trimmed.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

fn ends_span(next: Option<&char>) -> bool {
    match next {
        None => true,
        Some(&c) => c == ' ' || c.is_ascii_punctuation(),
    }
}

/// Positions of quotes that may close a span (followed by end, space or punctuation).
struct Closers {
    single: Vec<usize>,
    double: Vec<usize>,
}

impl Closers {
    fn new(chars: &[char]) -> Self {
        let mut single = Vec::new();
        let mut double = Vec::new();
        for (i, &c) in chars.iter().enumerate() {
            if (c == '\'' || c == '"') && ends_span(chars.get(i + 1)) {
                if c == '\'' { single.push(i) } else { double.push(i) }
            }
        }
        Closers { single, double }
    }
}

/// `(token)` with no space or parenthesis inside: returns the index of the `)`.
fn paren_single_token(chars: &[char], open: usize) -> Option<usize> {
    let mut j = open + 1;
    while j < chars.len() && !matches!(chars[j], ' ' | '(' | ')') {
        j += 1;
    }
    (j > open + 1 && chars.get(j) == Some(&')') && ends_span(chars.get(j + 1))).then_some(j)
}

/// Classifies each space-separated token of `text` and appends the result to `out`.
fn mask_tokens(text: &str, out: &mut String) {
    for (n, token) in text.split(' ').enumerate() {
        if n > 0 {
            out.push(' ');
        }
        mask_token(token, out);
    }
}

const LEADING: &[char] = &['(', '[', '{', '\'', '"'];
const TRAILING: &[char] = &['.', ',', ';', ':', ')', ']', '\'', '"'];

fn mask_token(token: &str, out: &mut String) {
    let body = token.trim_start_matches(LEADING);
    let lead = &token[..token.len() - body.len()];
    let core = body.trim_end_matches(TRAILING);
    let trail = &body[core.len()..];
    out.push_str(lead);
    if let Some(p) = classify_whole(core) {
        out.push_str(p);
    } else {
        // Split at ':' and '=' so that `service:Action` and `key=value` are judged part by part.
        let mut rest = core;
        while let Some(pos) = rest.find([':', '=']) {
            push_part(&rest[..pos], out);
            out.push_str(&rest[pos..pos + 1]);
            rest = &rest[pos + 1..];
        }
        push_part(rest, out);
    }
    out.push_str(trail);
}

fn push_part(part: &str, out: &mut String) {
    match classify_part(part) {
        Some(p) => out.push_str(p),
        None => out.push_str(part),
    }
}

fn classify_whole(core: &str) -> Option<&'static str> {
    if core.is_empty() {
        return None;
    }
    if core.starts_with("arn:") {
        return Some("<ARN>");
    }
    if core.contains('@') && is_email(core) {
        return Some("<EMAIL>");
    }
    classify_common(core)
}

fn classify_part(part: &str) -> Option<&'static str> {
    if part.is_empty() {
        return None;
    }
    classify_common(part).or_else(|| is_id(part).then_some("<ID>"))
}

fn classify_common(s: &str) -> Option<&'static str> {
    if is_uuid(s) {
        Some("<UUID>")
    } else if is_ip(s) {
        Some("<IP>")
    } else if is_numeric(s) {
        Some("<NUM>")
    } else {
        None
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_ip(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    addr.parse::<Ipv4Addr>().is_ok() || (addr.contains(':') && addr.parse::<Ipv6Addr>().is_ok())
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let ok = |c: char| c.is_alphanumeric() || "._%+-".contains(c);
    !local.is_empty()
        && local.chars().all(ok)
        && !domain.contains('@')
        && domain.chars().all(ok)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|l| !l.is_empty())
}

fn is_numeric(s: &str) -> bool {
    s.bytes().any(|c| c.is_ascii_digit()) && !s.chars().any(char::is_alphabetic)
}

fn is_id(s: &str) -> bool {
    is_resource_id(s) || is_access_key(s) || is_mixed(s)
}

/// `i-0abc…`, `sg-…`, `eni-attach-…`: lowercase words, `-`, then ≥ 8 hex digits.
fn is_resource_id(s: &str) -> bool {
    let Some((prefix, hex)) = s.rsplit_once('-') else {
        return false;
    };
    hex.len() >= 8
        && hex.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && !prefix.is_empty()
        && prefix.split('-').all(|w| !w.is_empty() && w.bytes().all(|c| c.is_ascii_lowercase()))
}

fn is_access_key(s: &str) -> bool {
    (s.starts_with("AKIA") || s.starts_with("ASIA"))
        && (16..=128).contains(&s.len())
        && s.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn is_mixed(s: &str) -> bool {
    s.chars().count() >= 4 && s.bytes().any(|c| c.is_ascii_digit()) && s.chars().any(char::is_alphabetic)
}
