//! Necessary conditions on a message's raw text, checked before it is parsed.
//!
//! CloudWatch Logs evaluates filter patterns and Insights queries on AWS's machines; the fake
//! does it on ours, next to the client it serves. A benchmark hour holds ten times more
//! records than errors, so parsing every one as JSON would make the fake, not the client, the
//! thing measured. A [`Needs`] says which texts a message must contain to possibly match
//! (a key that must exist, a string value it must equal); a message without them is skipped
//! unparsed. It is only a shortcut: whatever passes is still evaluated in full, and a message
//! with a backslash (JSON escapes could spell a key or value differently) is never skipped.

use memchr::memmem::Finder;

/// A condition on the raw text that every matching message meets.
#[derive(Debug, Clone)]
pub enum Needs {
    /// No condition: every message may match.
    Nothing,
    /// The text must occur.
    Text(Box<Finder<'static>>),
    All(Vec<Needs>),
    Any(Vec<Needs>),
}

impl Needs {
    pub fn text(s: &str) -> Self {
        if s.is_empty() { Needs::Nothing } else { Needs::Text(Box::new(Finder::new(s.as_bytes()).into_owned())) }
    }

    /// Both conditions.
    pub fn and(a: Needs, b: Needs) -> Self {
        match (a, b) {
            (Needs::Nothing, x) | (x, Needs::Nothing) => x,
            (Needs::All(mut xs), Needs::All(ys)) => {
                xs.extend(ys);
                Needs::All(xs)
            }
            (Needs::All(mut xs), y) | (y, Needs::All(mut xs)) => {
                xs.push(y);
                Needs::All(xs)
            }
            (x, y) => Needs::All(vec![x, y]),
        }
    }

    /// Either condition; nothing is known if either side knows nothing.
    pub fn or(a: Needs, b: Needs) -> Self {
        match (a, b) {
            (Needs::Nothing, _) | (_, Needs::Nothing) => Needs::Nothing,
            (Needs::Any(mut xs), Needs::Any(ys)) => {
                xs.extend(ys);
                Needs::Any(xs)
            }
            (Needs::Any(mut xs), y) | (y, Needs::Any(mut xs)) => {
                xs.push(y);
                Needs::Any(xs)
            }
            (x, y) => Needs::Any(vec![x, y]),
        }
    }

    pub fn is_nothing(&self) -> bool {
        matches!(self, Needs::Nothing)
    }

    fn holds_raw(&self, m: &[u8]) -> bool {
        match self {
            Needs::Nothing => true,
            Needs::Text(f) => f.find(m).is_some(),
            Needs::All(xs) => xs.iter().all(|x| x.holds_raw(m)),
            Needs::Any(xs) => xs.iter().any(|x| x.holds_raw(m)),
        }
    }

    /// False only when `message` cannot match.
    pub fn may_match(&self, message: &str) -> bool {
        if self.is_nothing() {
            return true;
        }
        let m = message.as_bytes();
        memchr::memchr(b'\\', m).is_some() || self.holds_raw(m)
    }
}

/// A string literal's text can stand for the value's text when the value must be a string
/// (or `true`/`false`, which JSON writes as they print). Numbers may print differently
/// (`1e2` as `100`), so a literal that could be a number's text gives no condition.
pub fn literal_needs(core: &str) -> Needs {
    let numeric = core.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if numeric { Needs::Nothing } else { Needs::text(core) }
}
