//! Rules for errors the operator already knows about and does not want clustered.
//!
//! Globs are matched by a small iterative matcher (the classic "remember the last `*`"
//! algorithm): worst case O(pattern × text), never exponential, and no regex dependency.

use std::collections::HashSet;

use super::record::Record;

/// Longest accepted principal glob, in chars: ARNs are far shorter, and it bounds match cost.
pub const MAX_GLOB_CHARS: usize = 512;

/// Errors to leave out of clustering. `Default` ignores nothing.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    error_codes: HashSet<String>,
    event_sources: HashSet<String>,
    principal_globs: Vec<Glob>,
}

impl IgnoreRules {
    /// `error_codes` match `Record::error_kind()` exactly (so "ConsoleLoginFailure" works),
    /// `event_sources` match exactly, and `principal_arn_globs` match `userIdentity.arn` with
    /// `*` = any run of chars (including `/` and `:`) and `?` = exactly one char.
    pub fn new(
        error_codes: &[String],
        event_sources: &[String],
        principal_arn_globs: &[String],
    ) -> Result<Self, String> {
        let principal_globs = principal_arn_globs.iter().map(|g| Glob::new(g)).collect::<Result<Vec<_>, _>>()?;
        Ok(IgnoreRules {
            error_codes: error_codes.iter().cloned().collect(),
            event_sources: event_sources.iter().cloned().collect(),
            principal_globs,
        })
    }

    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.error_codes.is_empty() && self.event_sources.is_empty() && self.principal_globs.is_empty()
    }

    /// Whether an error record is to be ignored.
    pub fn matches(&self, r: &Record) -> bool {
        self.matches_parts(r.error_kind().unwrap_or(""), &r.event_source, r.identity.arn.as_deref())
    }

    /// The same test on bare fields, for pre-aggregated rows that have no `Record`.
    pub fn matches_parts(&self, error_kind: &str, event_source: &str, principal_arn: Option<&str>) -> bool {
        if self.is_empty() {
            return false;
        }
        (!error_kind.is_empty() && self.error_codes.contains(error_kind))
            || self.event_sources.contains(event_source)
            || principal_arn.is_some_and(|arn| self.principal_globs.iter().any(|g| g.matches(arn)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    AnyChar,
    Lit(char),
}

/// A compiled `*` / `?` glob.
#[derive(Debug, Clone)]
struct Glob {
    toks: Vec<Tok>,
}

impl Glob {
    fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty principal glob".to_owned());
        }
        if pattern.chars().count() > MAX_GLOB_CHARS {
            return Err(format!("principal glob longer than {MAX_GLOB_CHARS} chars"));
        }
        let mut toks: Vec<Tok> = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let t = match c {
                '*' => Tok::Star,
                '?' => Tok::AnyChar,
                c => Tok::Lit(c),
            };
            // Consecutive stars are one star; keeping them would only slow matching.
            if !(t == Tok::Star && toks.last() == Some(&Tok::Star)) {
                toks.push(t);
            }
        }
        Ok(Glob { toks })
    }

    fn matches(&self, text: &str) -> bool {
        let toks = &self.toks;
        let mut p = 0;
        let mut t = 0;
        // (token index after the last star, text position that star currently absorbs up to)
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            let c = next_char(text, t);
            match toks.get(p) {
                Some(Tok::Star) => {
                    p += 1;
                    backtrack = Some((p, t));
                    continue;
                }
                Some(Tok::AnyChar) => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                Some(Tok::Lit(l)) if *l == c => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last star absorb one more char and retry after it.
            match backtrack {
                Some((bp, bt)) => {
                    let nt = bt + next_char(text, bt).len_utf8();
                    backtrack = Some((bp, nt));
                    p = bp;
                    t = nt;
                }
                None => return false,
            }
        }
        toks[p..].iter().all(|t| *t == Tok::Star)
    }
}

fn next_char(s: &str, at: usize) -> char {
    s[at..].chars().next().unwrap_or('\0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::parse_record;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn glob_matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("arn:aws:iam::*:user/bert-jan", "arn:aws:iam::123837392027:user/bert-jan", true),
            ("arn:aws:iam::*:user/bert-jan", "arn:aws:iam::123837392027:user/bert-jane", false),
            ("*", "", true),
            ("*", "anything/at:all", true),
            (
                "arn:aws:sts::*:assumed-role/stratus-*",
                "arn:aws:sts::1:assumed-role/stratus-red-team-leave-org-role/aws-go-sdk-1",
                true,
            ),
            ("arn:aws:sts::*:assumed-role/stratus-*", "arn:aws:iam::1:role/stratus-x", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("a*b*c", "a-b-x-c", true),
            ("a*b*c", "a-b-x-d", false),
            ("a**b", "ab", true),
            ("*x", "yyyx", true),
            ("x*", "yx", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*a*a*a*a*a*a*a*b", &"a".repeat(5000), false),
        ];
        for (pat, text, want) in cases {
            assert_eq!(Glob::new(pat).unwrap().matches(text), *want, "{pat} vs {text}");
        }
    }

    #[test]
    fn glob_limits() {
        assert_eq!(IgnoreRules::new(&[], &[], &s(&[""])).err(), Some("empty principal glob".to_owned()));
        let long = "a".repeat(513);
        assert_eq!(IgnoreRules::new(&[], &[], &[long]).err(), Some("principal glob longer than 512 chars".to_owned()));
        assert!(IgnoreRules::new(&[], &[], &["é".repeat(512)]).is_ok());
    }

    #[test]
    fn rules() {
        let rules = IgnoreRules::new(
            &s(&["ThrottlingException", "ConsoleLoginFailure"]),
            &s(&["s3.amazonaws.com"]),
            &s(&["arn:aws:iam::*:user/ci-*"]),
        )
        .unwrap();
        assert!(!rules.is_empty());
        assert!(IgnoreRules::default().is_empty());
        let rec = |extra: &str| {
            format!(
                r#"{{"eventTime":"2023-07-10T12:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"X"{extra}}}"#
            )
        };
        let cases: &[(String, bool)] = &[
            (rec(r#","errorCode":"ThrottlingException""#), true),
            (rec(r#","errorCode":"AccessDenied""#), false),
            (rec(r#","errorCode":"AccessDenied","userIdentity":{"arn":"arn:aws:iam::1:user/ci-bot"}"#), true),
            (rec(r#","errorCode":"AccessDenied","userIdentity":{"arn":"arn:aws:iam::1:user/alice"}"#), false),
            (rec(r#","errorCode":"AccessDenied","userIdentity":{"type":"Root"}"#), false),
            (
                r#"{"eventTime":"2023-07-10T12:00:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Failure"}}"#.to_owned(),
                true,
            ),
            (
                r#"{"eventTime":"2023-07-10T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetBucketCors","errorCode":"NoSuchCORSConfiguration"}"#.to_owned(),
                true,
            ),
        ];
        for (raw, want) in cases {
            let r = parse_record(raw.as_bytes()).unwrap();
            assert_eq!(rules.matches(&r), *want, "{raw}");
            assert!(!IgnoreRules::default().matches(&r));
        }
        assert!(rules.matches_parts("X", "s3.amazonaws.com", None));
        assert!(!rules.matches_parts("", "ec2.amazonaws.com", Some("arn:aws:iam::1:user/bob")));
    }
}
