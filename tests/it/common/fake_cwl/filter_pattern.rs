//! CloudWatch Logs filter patterns, as `FilterLogEvents` applies them.
//!
//! Two families are implemented, and anything else is a parse error (the server answers
//! `InvalidParameterException`) so a test never passes because a pattern silently matched
//! everything:
//!
//! * JSON patterns `{ <expr> }`: selectors `$.a.b`, `$.a[0].b`; `=`/`!=` against a quoted or bare
//!   string (a leading and/or trailing `*` is a wildcard, as the AWS docs say `Ev*ent` only
//!   matches the literal text); `=`, `!=`, `<`, `>`, `<=`, `>=` against a number; `IS NULL`,
//!   `IS TRUE`, `IS FALSE`, `NOT EXISTS`; `&&` binding tighter than `||`; parentheses.
//! * Term patterns: `ERROR`, `"quoted phrase"`, `ERROR Exception` (all terms), `?ERROR ?WARN`
//!   (any term), `ERROR -WARN` (exclusion); case-sensitive substring matches.
//!
//! Not supported (rejected): space-delimited `[a, b]` patterns, `%regex%`, bare `EXISTS`.
//!
//! Semantics chosen where the AWS docs ("Filter and Pattern Syntax") leave room:
//! * The docs say a selector "must point to a value node (string or number)"; pointing at an
//!   object or array makes both `=` and `!=` false. Here null and a missing field are false
//!   for `=` and `!=` too; only `IS NULL` / `NOT EXISTS` see them.
//! * `= "*"` matches any string (the empty string included: `*` matches "any text"), number or
//!   boolean; it is how the AWS CDK spells "field exists" (`FilterPattern.exists`).
//! * Numbers and booleans compare as their JSON text for string patterns; a numeric literal
//!   also matches a string holding that number (the docs compare `recipientAccountId`, a string
//!   in CloudTrail, with an unquoted number).
//! * A message that is not a JSON object never matches a JSON pattern, not even `NOT EXISTS`.

use serde_json::Value;

use super::prefilter::{Needs, literal_needs};

/// A parsed filter pattern; parse once per request, match per event.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterPattern {
    /// Empty or blank pattern: every event.
    All,
    /// `{ ... }` pattern over the message parsed as JSON.
    Json(JsonExpr),
    /// Unstructured term pattern.
    Terms(TermPattern),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TermPattern {
    /// `?a ?b`: any of these.
    pub any: Vec<String>,
    /// Plain terms: all of these.
    pub all: Vec<String>,
    /// `-term`: none of these.
    pub none: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonExpr {
    Or(Vec<JsonExpr>),
    And(Vec<JsonExpr>),
    Cond(Selector, Cond),
}

/// One step of a selector: an object key or an array index.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Index(usize),
}

pub type Selector = Vec<Step>;

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    StrEq(String),
    StrNe(String),
    Num(NumOp, f64),
    IsNull,
    IsTrue,
    IsFalse,
    NotExists,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl FilterPattern {
    /// Parses a pattern; the error text goes into the `InvalidParameterException` message.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim();
        if p.is_empty() {
            return Ok(FilterPattern::All);
        }
        if p.starts_with('{') {
            return JsonParser::new(p)?.parse().map(FilterPattern::Json);
        }
        if p.starts_with('[') {
            return Err("space-delimited filter patterns are not supported by this fake".into());
        }
        parse_terms(p).map(FilterPattern::Terms)
    }

    pub fn matches(&self, message: &str) -> bool {
        match self {
            FilterPattern::All => true,
            FilterPattern::Terms(t) => t.matches(message),
            FilterPattern::Json(expr) => match serde_json::from_str::<Value>(message) {
                Ok(v @ Value::Object(_)) => expr.eval(&v),
                _ => false,
            },
        }
    }
}

/// A parsed pattern with the text a message needs to match, for matching many messages.
#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: FilterPattern,
    needs: Needs,
}

impl Matcher {
    /// Same answer as [`FilterPattern::matches`], without parsing messages that cannot match.
    pub fn matches(&self, message: &str) -> bool {
        self.needs.may_match(message) && self.pattern.matches(message)
    }
}

impl FilterPattern {
    pub fn matcher(&self) -> Matcher {
        let needs = match self {
            FilterPattern::Json(expr) => expr.needs(),
            _ => Needs::Nothing,
        };
        Matcher { pattern: self.clone(), needs }
    }
}

impl JsonExpr {
    /// What the raw text must hold for this to be true: the key of every selector whose
    /// condition needs the field present, and the string an exact `=` compares with.
    fn needs(&self) -> Needs {
        match self {
            JsonExpr::Or(xs) => xs.iter().map(JsonExpr::needs).reduce(Needs::or).unwrap_or(Needs::Nothing),
            JsonExpr::And(xs) => xs.iter().map(JsonExpr::needs).fold(Needs::Nothing, Needs::and),
            JsonExpr::Cond(sel, cond) => {
                let key = match sel.iter().rev().find_map(|s| match s {
                    Step::Key(k) => Some(k),
                    Step::Index(_) => None,
                }) {
                    Some(k) => Needs::text(&format!("\"{k}\"")),
                    None => Needs::Nothing,
                };
                match cond {
                    Cond::NotExists => Needs::Nothing,
                    Cond::StrEq(p) if !p.chars().all(|c| c == '*') => {
                        let core = p.trim_start_matches('*');
                        let core = if p.len() > 1 { core.trim_end_matches('*') } else { core };
                        Needs::and(key, literal_needs(core))
                    }
                    _ => key,
                }
            }
        }
    }
}

impl TermPattern {
    fn matches(&self, message: &str) -> bool {
        if !self.any.is_empty() {
            return self.any.iter().any(|t| message.contains(t.as_str()));
        }
        self.all.iter().all(|t| message.contains(t.as_str())) && !self.none.iter().any(|t| message.contains(t.as_str()))
    }
}

impl JsonExpr {
    fn eval(&self, root: &Value) -> bool {
        match self {
            JsonExpr::Or(xs) => xs.iter().any(|x| x.eval(root)),
            JsonExpr::And(xs) => xs.iter().all(|x| x.eval(root)),
            JsonExpr::Cond(sel, cond) => eval_cond(resolve(root, sel), cond),
        }
    }
}

fn resolve<'a>(root: &'a Value, sel: &[Step]) -> Option<&'a Value> {
    let mut cur = root;
    for step in sel {
        cur = match (step, cur) {
            (Step::Key(k), Value::Object(m)) => m.get(k)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Text of a value node for string patterns; None for null, objects, arrays.
fn node_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn node_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if is_number_literal(s) => s.parse().ok(),
        _ => None,
    }
}

fn eval_cond(v: Option<&Value>, cond: &Cond) -> bool {
    match cond {
        Cond::NotExists => v.is_none(),
        Cond::IsNull => matches!(v, Some(Value::Null)),
        Cond::IsTrue => matches!(v, Some(Value::Bool(true))),
        Cond::IsFalse => matches!(v, Some(Value::Bool(false))),
        Cond::StrEq(p) => v.and_then(node_text).is_some_and(|t| wildcard_match(p, &t)),
        Cond::StrNe(p) => v.and_then(node_text).is_some_and(|t| !wildcard_match(p, &t)),
        Cond::Num(op, n) => v.and_then(node_number).is_some_and(|x| match op {
            NumOp::Eq => x == *n,
            NumOp::Ne => x != *n,
            NumOp::Lt => x < *n,
            NumOp::Gt => x > *n,
            NumOp::Le => x <= *n,
            NumOp::Ge => x >= *n,
        }),
    }
}

/// `*` is a wildcard only at the start and/or end of the pattern, per the AWS docs.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    if pattern.chars().all(|c| c == '*') && !pattern.is_empty() {
        return true;
    }
    let lead = pattern.starts_with('*');
    let trail = pattern.len() > 1 && pattern.ends_with('*');
    let core = &pattern[usize::from(lead)..pattern.len() - usize::from(trail)];
    match (lead, trail) {
        (true, true) => text.contains(core),
        (true, false) => text.ends_with(core),
        (false, true) => text.starts_with(core),
        (false, false) => text == core,
    }
}

/// The docs' NUMBER: optional sign, digits, optional decimals, optional exponent.
fn is_number_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == start {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s2 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s2 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s3 = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s3 {
            return false;
        }
    }
    i == b.len()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    And,
    Or,
    Op(&'static str),
    Selector(Selector),
    Quoted(String),
    Bare(String),
}

/// Characters that end a bare word in a JSON pattern.
fn is_json_delim(c: char) -> bool {
    c.is_whitespace() || "{}()&|=!<>\"".contains(c)
}

fn lex_json(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '{' | '}' | '(' | ')' | '=' => {
                out.push(match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Op("="),
                });
                i += 1;
            }
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(format!("expected '{c}{c}' at offset {i}"));
                }
                out.push(if c == '&' { Tok::And } else { Tok::Or });
                i += 2;
            }
            '!' | '<' | '>' => {
                let two = chars.get(i + 1) == Some(&'=');
                let op = match (c, two) {
                    ('!', true) => "!=",
                    ('<', true) => "<=",
                    ('>', true) => ">=",
                    ('<', false) => "<",
                    ('>', false) => ">",
                    _ => return Err(format!("unexpected '!' at offset {i}")),
                };
                out.push(Tok::Op(op));
                i += if two { 2 } else { 1 };
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(e @ ('"' | '\\')) => s.push(*e),
                                _ => return Err(format!("bad escape at offset {i}")),
                            }
                            i += 2;
                            continue;
                        }
                        Some(ch) => s.push(*ch),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Quoted(s));
            }
            '$' => {
                let (sel, next) = lex_selector(&chars, i)?;
                out.push(Tok::Selector(sel));
                i = next;
            }
            _ => {
                let start = i;
                while i < chars.len() && !is_json_delim(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if let Some(bad) = word.chars().find(|ch| "@$\\%[],'`".contains(*ch)) {
                    return Err(format!("character '{bad}' must be inside double quotes"));
                }
                out.push(Tok::Bare(word));
            }
        }
    }
    Ok(out)
}

fn lex_selector(chars: &[char], mut i: usize) -> Result<(Selector, usize), String> {
    let start = i;
    i += 1; // '$'
    let mut steps = Vec::new();
    loop {
        match chars.get(i) {
            Some('.') => {
                i += 1;
                let s = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '-') {
                    i += 1;
                }
                if i == s {
                    return Err(format!("empty property name in selector at offset {start}"));
                }
                steps.push(Step::Key(chars[s..i].iter().collect()));
            }
            Some('[') => {
                i += 1;
                let s = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                if i == s || chars.get(i) != Some(&']') {
                    return Err(format!("bad array index in selector at offset {start}"));
                }
                let idx: String = chars[s..i].iter().collect();
                steps.push(Step::Index(idx.parse().map_err(|_| "index too large")?));
                i += 1;
            }
            _ => break,
        }
    }
    if steps.is_empty() {
        return Err(format!("selector at offset {start} names no property"));
    }
    if let Some(c) = chars.get(i).filter(|c| !is_json_delim(**c)) {
        return Err(format!("unexpected '{c}' in selector at offset {i}"));
    }
    Ok((steps, i))
}

struct JsonParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl JsonParser {
    fn new(src: &str) -> Result<Self, String> {
        Ok(JsonParser { toks: lex_json(src)?, pos: 0 })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Tok) -> Result<(), String> {
        match self.next() {
            Some(ref t) if t == want => Ok(()),
            other => Err(format!("expected {want:?}, found {other:?}")),
        }
    }

    fn parse(mut self) -> Result<JsonExpr, String> {
        self.expect(&Tok::LBrace)?;
        let e = self.or()?;
        self.expect(&Tok::RBrace)?;
        if let Some(t) = self.peek() {
            return Err(format!("unexpected {t:?} after closing brace"));
        }
        Ok(e)
    }

    fn or(&mut self) -> Result<JsonExpr, String> {
        let mut xs = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            xs.push(self.and()?);
        }
        Ok(if xs.len() == 1 { xs.remove(0) } else { JsonExpr::Or(xs) })
    }

    fn and(&mut self) -> Result<JsonExpr, String> {
        let mut xs = vec![self.primary()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            xs.push(self.primary()?);
        }
        Ok(if xs.len() == 1 { xs.remove(0) } else { JsonExpr::And(xs) })
    }

    fn primary(&mut self) -> Result<JsonExpr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Selector(sel)) => {
                let cond = self.condition()?;
                Ok(JsonExpr::Cond(sel, cond))
            }
            other => Err(format!("expected a selector or '(', found {other:?}")),
        }
    }

    fn condition(&mut self) -> Result<Cond, String> {
        match self.next() {
            Some(Tok::Op(op)) => {
                let value = self.next();
                let numeric = match &value {
                    Some(Tok::Bare(w)) if is_number_literal(w) => {
                        Some(w.parse::<f64>().map_err(|e| format!("bad number {w}: {e}"))?)
                    }
                    _ => None,
                };
                let text = match value {
                    Some(Tok::Bare(w)) => w,
                    Some(Tok::Quoted(s)) => s,
                    other => return Err(format!("expected a value after '{op}', found {other:?}")),
                };
                match (op, numeric) {
                    (_, Some(n)) => Ok(Cond::Num(num_op(op), n)),
                    ("=", None) => Ok(Cond::StrEq(text)),
                    ("!=", None) => Ok(Cond::StrNe(text)),
                    _ => Err(format!("operator '{op}' needs a number, found {text:?}")),
                }
            }
            Some(Tok::Bare(w)) if w.eq_ignore_ascii_case("IS") => match self.next() {
                Some(Tok::Bare(v)) if v.eq_ignore_ascii_case("NULL") => Ok(Cond::IsNull),
                Some(Tok::Bare(v)) if v.eq_ignore_ascii_case("TRUE") => Ok(Cond::IsTrue),
                Some(Tok::Bare(v)) if v.eq_ignore_ascii_case("FALSE") => Ok(Cond::IsFalse),
                other => Err(format!("expected NULL, TRUE or FALSE after IS, found {other:?}")),
            },
            Some(Tok::Bare(w)) if w.eq_ignore_ascii_case("NOT") => match self.next() {
                Some(Tok::Bare(v)) if v.eq_ignore_ascii_case("EXISTS") => Ok(Cond::NotExists),
                other => Err(format!("expected EXISTS after NOT, found {other:?}")),
            },
            other => Err(format!("expected an operator after selector, found {other:?}")),
        }
    }
}

fn num_op(op: &str) -> NumOp {
    match op {
        "=" => NumOp::Eq,
        "!=" => NumOp::Ne,
        "<" => NumOp::Lt,
        ">" => NumOp::Gt,
        "<=" => NumOp::Le,
        _ => NumOp::Ge,
    }
}

fn parse_terms(p: &str) -> Result<TermPattern, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut t = TermPattern { any: vec![], all: vec![], none: vec![] };
    let mut i = 0;
    let mut pending_minus = false;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let mut prefix = None;
        if chars[i] == '?' || chars[i] == '-' {
            prefix = Some(chars[i]);
            i += 1;
            if i >= chars.len() || chars[i].is_whitespace() {
                if prefix == Some('-') {
                    // `"ERROR" - "Exiting"`: a lone minus applies to the next term.
                    pending_minus = true;
                    continue;
                }
                return Err("'?' must be followed by a term".into());
            }
        }
        if pending_minus {
            if prefix.is_some() {
                return Err("unexpected prefix after '-'".into());
            }
            prefix = Some('-');
            pending_minus = false;
        }
        let term = if chars[i] == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated quoted term".into()),
                    Some('"') => break,
                    Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\')) => {
                        s.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    Some(c) => s.push(*c),
                }
                i += 1;
            }
            i += 1;
            if i < chars.len() && !chars[i].is_whitespace() {
                return Err(format!("unexpected '{}' after quoted term", chars[i]));
            }
            s
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() {
                if "{}[]()\"%|&=<>!?*`".contains(chars[i]) {
                    return Err(format!("character '{}' in a term must be inside double quotes", chars[i]));
                }
                i += 1;
            }
            chars[start..i].iter().collect()
        };
        if term.is_empty() {
            return Err("empty term".into());
        }
        match prefix {
            Some('?') => t.any.push(term),
            Some(_) => t.none.push(term),
            None => t.all.push(term),
        }
    }
    if pending_minus {
        return Err("'-' must be followed by a term".into());
    }
    if !t.any.is_empty() && (!t.all.is_empty() || !t.none.is_empty()) {
        return Err("mixing '?term' with other terms is not supported by this fake".into());
    }
    Ok(t)
}
