//! Error-message templates: the message with its variable parts masked, so that the same error
//! on different resources, users or requests falls into one cluster, and two different errors
//! never do. `tests/data/templates/golden.tsv` holds real AWS messages, each with its source,
//! its expected template and the error it is, and the tests check all three.
//!
//! The template is part of a cluster's identity (its fingerprint), so the rules are versioned
//! ([`TEMPLATE_VERSION`]): a database remembers which version made each cluster, and clusters
//! of an older version are re-templated from their sample message when the service starts, so
//! that a change of rules does not make known errors new. Version 1 had no name, URL or
//! parameter-path rules, and masked quoted ARNs as `'<*>'`.
//!
//! 1. Keep the first 2,048 chars (on a char boundary), turn control characters into spaces,
//!    collapse runs of whitespace into one space and trim both ends.
//! 2. Spans, scanned left to right:
//!    - A quote (`'` or `"`) opens a span when it stands at the start or after a space, `(`, `=`
//!      or `:`. The span closes at the next same quote that is followed by the end, a space or
//!      ASCII punctuation, and must hold at least one char. It becomes `'<*>'` / `"<*>"`, with
//!      two exceptions: a span holding an ARN or a URL becomes `<ARN>` / `<URL>` without its
//!      quotes (so quoted and bare ARNs agree), and a span after the word `at` that holds a
//!      parameter path (`Value null at 'tags.1.member.value'`) is kept, its numeric segments
//!      masked (`'tags.<NUM>.member.value'`): the parameter says which error it is. So the
//!      apostrophe in `doesn't` opens nothing, and `'it's here'` is one span.
//!    - `(` at the start or after a space, followed by one or more chars that are neither
//!      space nor parenthesis and then `)` followed by the end, a space or ASCII punctuation,
//!      becomes `(<*>)`: `Value (my-profile) for …`.
//! 3. The remaining text is split at spaces into tokens. Leading `([{'"` and trailing `.,;:)]'"`
//!    are set aside (and written back unchanged); the core is classified, first match wins:
//!    - `scheme://…` → `<URL>`
//!    - starts with `arn:` → `<ARN>`
//!    - 8-4-4-4-12 hex UUID → `<UUID>`
//!    - IPv4 or IPv6 address, optionally `/prefix` → `<IP>`
//!    - `local@domain.tld` → `<EMAIL>`
//!    - at least one digit and no letter (account ids, counts, dates, times) → `<NUM>`
//!    - an AWS resource id (lowercase prefix such as `i`, `sg`, `eni-attach`, then `-` and at
//!      least 8 hex digits) or an access key id (`AKIA`/`ASIA` and upper-case letters and
//!      digits) → `<ID>`
//!    - a name: the token after a word that names a resource (`name`, `named`, `id`, `user`,
//!      `role`, `group`, `policy`, `profile`, `bucket`, `function`, `table`, `stream`,
//!      `secret`, `stack`, `parameter`; any case, a trailing `:` allowed but for `id`) →
//!      `<NAME>`. After `name`, `named`, `id` and `user` any word but a common English one
//!      (`is`, `with`, `cannot`, `access`… see `COMMON_WORDS`) is a name (`User alice`); after
//!      the others only a token that looks like an identifier is (bracketed, or holding a
//!      digit, `-`, `_`, `.`, `/`, `@`, or an upper-case letter after a lower-case one:
//!      `CloudTrailRoleForCloudWatchLogs`), so `bucket policy` and `function cannot` stay
//!      words. After `parameter` only a path (`/app/db/password`) is a name: other tokens
//!      there name an API parameter (`for parameter iamInstanceProfile.name`), which is kept.
//!    - the value of `Value X at 'param'`, unless it is `null` → `<*>`
//!    - otherwise the core is cut at `:` and `=` (so `ec2:RunInstances` and `perform:` keep
//!      their words; a service prefix before an action, `ec2-instance-connect:SendSSHPublicKey`,
//!      is kept whole) and each part is classified:
//!      - a UUID, IP or numeric part as above;
//!      - at least 4 chars mixing letters and digits (request ids, generated names such as
//!        `terraform-20230710121504061500000001`, encoded authorization messages) → `<ID>`;
//!        words such as `IPv4` are masked too, which is harmless because they are masked
//!        everywhere;
//!      - anything else (words without digits, `sts:AssumeRole`, `iamInstanceProfile.name`)
//!        stays as it is.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The version of the rules below. Raise it with every change of a rule that changes any
/// template: the store re-templates clusters made by an older version when it starts.
pub const TEMPLATE_VERSION: i32 = 2;

/// Messages are cut to this many chars before templating; the tail of a longer message is
/// nearly always a payload (encoded message, policy) rather than the error's wording.
pub const MAX_MESSAGE_CHARS: usize = 2048;

/// The prefix of `message` that [`template`] looks at: at most [`MAX_MESSAGE_CHARS`] chars.
pub fn truncate_message(message: &str) -> &str {
    // No more bytes than the limit means no more chars: skip the char walk.
    if message.len() <= MAX_MESSAGE_CHARS {
        return message;
    }
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => &message[..i],
        None => message,
    }
}

/// The errorMessage with its variable parts masked; see the module doc for the rules.
pub fn template(message: &str) -> String {
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
                let after_at = text.trim_end().rsplit(' ').next() == Some("at");
                text.clear();
                let inner: String = chars[i + 1..j].iter().collect();
                push_span(c, &inner, after_at, &mut out);
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

/// A quoted span: an ARN or URL as its placeholder (whether quoted or not, it is the same
/// error); after `at`, a parameter path with its indexes masked; anything else `'<*>'`.
fn push_span(quote: char, inner: &str, after_at: bool, out: &mut String) {
    let inner = inner.trim();
    if let Some(p) = classify_link(inner) {
        out.push_str(p);
        return;
    }
    out.push(quote);
    if after_at && is_parameter_path(inner) {
        for (n, segment) in inner.split('.').enumerate() {
            if n > 0 {
                out.push('.');
            }
            out.push_str(if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                "<NUM>"
            } else {
                segment
            });
        }
    } else {
        out.push_str("<*>");
    }
    out.push(quote);
}

/// `tags.1.member.value`, `roleSessionName`: the member paths AWS's validation messages name.
fn is_parameter_path(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
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

/// Classifies each space-separated token of `text` and appends the result to `out`. A token
/// is judged with its neighbours: the word before it may say it is a name.
fn mask_tokens(text: &str, out: &mut String) {
    let tokens: Vec<&str> = text.split(' ').collect();
    for (n, token) in tokens.iter().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        let prev = n.checked_sub(1).map(|p| tokens[p]);
        mask_token(token, prev, tokens.get(n + 1).copied(), out);
    }
}

const LEADING: &[char] = &['(', '[', '{', '\'', '"'];
const TRAILING: &[char] = &['.', ',', ';', ':', ')', ']', '\'', '"'];

fn mask_token(token: &str, prev: Option<&str>, next: Option<&str>, out: &mut String) {
    let body = token.trim_start_matches(LEADING);
    let lead = &token[..token.len() - body.len()];
    let core = body.trim_end_matches(TRAILING);
    let trail = &body[core.len()..];
    out.push_str(lead);
    if let Some(p) = classify_whole(core) {
        out.push_str(p);
    } else if is_resource_id(core) || is_access_key(core) {
        out.push_str("<ID>");
    } else if prev.is_some_and(|p| names_next(p, core, !lead.is_empty())) {
        out.push_str("<NAME>");
    } else if prev == Some("Value") && next == Some("at") && core != "null" && !core.is_empty() {
        out.push_str("<*>");
    } else {
        // Split at ':' and '=' so that `service:Action` and `key=value` are judged part by part.
        let mut rest = core;
        while let Some(pos) = rest.find([':', '=']) {
            let part = &rest[..pos];
            if is_service_prefix(part, &rest[pos + 1..]) {
                out.push_str(part);
            } else {
                push_part(part, out);
            }
            out.push_str(&rest[pos..pos + 1]);
            rest = &rest[pos + 1..];
        }
        push_part(rest, out);
    }
    out.push_str(trail);
}

/// `ec2-instance-connect` in `ec2-instance-connect:SendSSHPublicKey`: a service prefix before
/// an action is a word, digits or not.
fn is_service_prefix(part: &str, after: &str) -> bool {
    part.len() > 1
        && part.starts_with(|c: char| c.is_ascii_lowercase())
        && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && after.starts_with(|c: char| c.is_ascii_uppercase() || c == '*')
}

/// Words after which a resource's name follows, and whether a plain lower-case word there is
/// a name (`User alice`) or not (`bucket policy`).
const NAME_WORDS: &[(&str, bool)] = &[
    ("name", true),
    ("named", true),
    ("id", true),
    ("user", true),
    ("role", false),
    ("group", false),
    ("policy", false),
    ("profile", false),
    ("bucket", false),
    ("function", false),
    ("table", false),
    ("stream", false),
    ("secret", false),
    ("stack", false),
    ("parameter", false),
];

/// Words that follow a [`NAME_WORDS`] word in AWS's messages without being a name.
const COMMON_WORDS: &str = "\
    a access account accounts agent all already an and any are arn arns as at attribute attributes be because \
    been but by can can't cannot character characters contain containing contains could credentials data \
    details did do does doesn't ending exceeds exist exists field for format from given group groups had has \
    have id identity ids if in information into is isn't it its key keys length limit may mfa might must name \
    names no none nor not of on only or over parameter parameters password pattern per policies policy pool \
    pools prefix profile provided quota request requested resource resources role roles session sessions \
    should space specified starting string supplied tag tags than that the then these this those to token too \
    type types under value values via was were when which while who whose will with without would you your";

fn is_common_word(word: &str) -> bool {
    COMMON_WORDS.split_ascii_whitespace().any(|w| w == word)
}

/// Whether `core` is a resource's name because of the word `prev` before it; `bracketed` when
/// the token opened with a bracket or quote.
fn names_next(prev: &str, core: &str, bracketed: bool) -> bool {
    let (word, colon) = match prev.strip_suffix(':') {
        Some(w) => (w, true),
        None => (prev, false),
    };
    let word = word.to_ascii_lowercase();
    let Some(&(_, plain_words)) = NAME_WORDS.iter().find(|(w, _)| *w == word) else { return false };
    if core.is_empty() || (word == "id" && colon) {
        return false;
    }
    if word == "parameter" {
        return core.starts_with('/');
    }
    if bracketed || looks_like_identifier(core) {
        return true;
    }
    plain_words && core.chars().all(|c| c.is_alphabetic() || c == '\'') && !is_common_word(&core.to_lowercase())
}

/// `my-bucket`, `db_1`, `CloudTrailRoleForCloudWatchLogs`: not an English word.
fn looks_like_identifier(s: &str) -> bool {
    let camel = s.as_bytes().windows(2).any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase());
    camel || s.bytes().any(|b| b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'@'))
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
    if let Some(p) = classify_link(core) {
        return Some(p);
    }
    if core.contains('@') && is_email(core) {
        return Some("<EMAIL>");
    }
    classify_common(core)
}

/// `<URL>` for `scheme://…`, `<ARN>` for `arn:…`.
fn classify_link(s: &str) -> Option<&'static str> {
    if s.starts_with("arn:") {
        return Some("<ARN>");
    }
    let (scheme, rest) = s.split_once("://")?;
    let scheme_ok =
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    (scheme_ok && !rest.is_empty()).then_some("<URL>")
}

fn classify_part(part: &str) -> Option<&'static str> {
    if part.is_empty() {
        return None;
    }
    classify_common(part).or_else(|| is_mixed(part).then_some("<ID>"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "User: arn:aws:iam::123837392027:user/bert-jan is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123837392027:role/stratus-red-team-get-usr-data-role",
                "User: <ARN> is not authorized to perform: sts:AssumeRole on resource: <ARN>",
            ),
            (
                "User: arn:aws:sts::307578594326:assumed-role/stratus-red-team-leave-org-role/aws-go-sdk-1722587398902687000 is not authorized to perform: organizations:LeaveOrganization on resource: * because no identity-based policy allows the organizations:LeaveOrganization action",
                "User: <ARN> is not authorized to perform: organizations:LeaveOrganization on resource: * because no identity-based policy allows the organizations:LeaveOrganization action",
            ),
            ("The routeTable ID 'rtb-06711e8f3a624506d' does not exist", "The routeTable ID '<*>' does not exist"),
            ("The volume 'vol-0fc2e34e74650e145' does not exist.", "The volume '<*>' does not exist."),
            (
                "You are not authorized to perform this operation. Encoded authorization failure message: ywUZb4ww98QmHKSEiQ7VqtRmMdV6CkT1XLV3jGM3Is9-imdtpnfhcna6KBI1pJpXY9kj4rf8QOUxiy8TPTGvMKpw_8sd5XQ8EUgfzgc3zjvFi7bVGsPvqhD_Yi5jUwqrd6qupTKY_AG5hPnC4LWLWH-f2ebTwvqIKf4qHO8m794GiLHYVy2joeBec07Wl5C_fZG_N05u_DpawDpFRa",
                "You are not authorized to perform this operation. Encoded authorization failure message: <ID>",
            ),
            (
                "You are not authorized to perform this operation. Encoded authorization failure message: -YB0t018A8td4dK1XH0kDEvcVmmbzcEjHF6wCpj4f8uYrBfLArGzwT2HKSSYYCbVdLtQogFZVU4hbWmtoxqGbJuGUTH0rgaVyshYr5ZZ0andpPh9aTvi4rjkn8kF1B_RvuBK_rio4a3l3V7u92rC8z1FKxlAbQe95yQVUDiZJueyYP9O_tgTjjpm8dRs4BQwYAq2Mpudy2DR1CMxKB",
                "You are not authorized to perform this operation. Encoded authorization failure message: <ID>",
            ),
            (
                "You are not authorized to perform this operation. User: arn:aws:sts::751353041310:assumed-role/stratus-red-team-ec2lui-role-idtzskbvtd/aws-go-sdk-1722511821294449000 is not authorized to perform: ec2:RunInstances on resource: arn:aws:ec2:ca-south-3r:751353041310:instance/* because no identity-based policy allows the ec2:RunInstances action. Encoded authorization failure message: T-kSWIRFn32_fxSgyNzoE36av...",
                "You are not authorized to perform this operation. User: <ARN> is not authorized to perform: ec2:RunInstances on resource: <ARN> because no identity-based policy allows the ec2:RunInstances action. Encoded authorization failure message: <ID>...",
            ),
            (
                "Unknown trail: arn:aws:cloudtrail:us-east-1:123837392027:trail/stratus-red-team-ct-stop-trail-qzbgnfqisx for the user: 123837392027",
                "Unknown trail: <ARN> for the user: <NUM>",
            ),
            (
                "Value (stratus-red-team-ec2-steal-credentials-instance) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
                "Value (<*>) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
            ),
            ("Rate exceeded", "Rate exceeded"),
            ("", ""),
            (
                "Instances [[i-05c30218156bcc246]] not in a valid state for account 123837392027",
                "Instances [[<ID>]] not in a valid state for account <NUM>",
            ),
            (
                "Instance terraform-20230710121504061500000001 is already being deleted.",
                "Instance <ID> is already being deleted.",
            ),
            (
                "Instance Profile stratus-red-team-ec2-enumerate-instance cannot be found.",
                "Instance Profile <NAME> cannot be found.",
            ),
            (
                "Login Profile for User stratus-red-team-login-profile-user cannot be found.",
                "Login Profile for User <NAME> cannot be found.",
            ),
            (
                "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
                "You have requested more vCPU capacity than your current vCPU limit of <NUM> allows for the instance bucket that the specified instance type belongs to. Please visit <URL> to request an adjustment to this limit.",
            ),
            (
                "The specified rule does not exist in this security group.",
                "The specified rule does not exist in this security group.",
            ),
            ("Failed authentication", "Failed authentication"),
        ];
        for (msg, want) in cases {
            assert_eq!(template(msg), *want, "{msg}");
        }
    }

    /// Every row of the golden table: its template, and one template per error.
    #[test]
    fn golden_table() {
        let table = include_str!("../../tests/data/templates/golden.tsv");
        let rows: Vec<Vec<&str>> =
            table.lines().filter(|l| !l.starts_with('#')).skip(1).map(|l| l.split('\t').collect()).collect();
        assert!(rows.len() >= 150, "{} rows", rows.len());
        let mut by_error: std::collections::HashMap<&str, &str> = Default::default();
        let mut by_code_template: std::collections::HashMap<(&str, &str), &str> = Default::default();
        let mut wrong = Vec::new();
        for row in &rows {
            let [error, code, message, want, source] = row[..] else { panic!("5 columns: {row:?}") };
            assert!(source.starts_with("https://"), "{source}");
            let got = template(message);
            if got != want {
                wrong.push(format!("{message}\n  want {want}\n  got  {got}"));
            }
            // One template per error...
            if let Some(other) = by_error.insert(error, want) {
                assert_eq!(other, want, "{error}: one error, two templates");
            }
            // ...and never two errors in one (within an error code, as clusters are).
            if let Some(other) = by_code_template.insert((code, want), error) {
                assert_eq!(other, error, "{code}: two errors share the template {want}");
            }
        }
        assert!(wrong.is_empty(), "{} of {} rows differ:\n{}", wrong.len(), rows.len(), wrong.join("\n"));
    }

    #[test]
    fn names_after_the_word_that_names_them() {
        let cases: &[(&str, &str)] = &[
            ("Login Profile for User alice cannot be found.", "Login Profile for User <NAME> cannot be found."),
            ("Login Profile for User bob-2 cannot be found.", "Login Profile for User <NAME> cannot be found."),
            (
                "The role with name CloudTrailRoleForCloudWatchLogs cannot be found.",
                "The role with name <NAME> cannot be found.",
            ),
            ("on resource: user grace with an explicit deny", "on resource: user <NAME> with an explicit deny"),
            (
                "Requested resource not found: Table: orders not found",
                "Requested resource not found: Table: orders not found",
            ),
            (
                "Requested resource not found: Table: orders-v2 not found",
                "Requested resource not found: Table: <NAME> not found",
            ),
            ("Stack [prod] does not exist", "Stack [<NAME>] does not exist"),
            ("Parameter /app/db/password not found.", "Parameter <NAME> not found."),
            // Words, not names.
            (
                "User is not authorized to perform: rds:CopyDBSnapshot",
                "User is not authorized to perform: rds:CopyDBSnapshot",
            ),
            ("IAM user access not activated", "IAM user access not activated"),
            ("The bucket policy does not exist", "The bucket policy does not exist"),
            ("The bucket you tried to delete is not empty", "The bucket you tried to delete is not empty"),
            (
                "The role defined for the function cannot be assumed by Lambda.",
                "The role defined for the function cannot be assumed by Lambda.",
            ),
            (
                "Bucket name should not contain uppercase characters",
                "Bucket name should not contain uppercase characters",
            ),
            // An API parameter's name says which error it is.
            (
                "Value (x) for parameter iamInstanceProfile.name is invalid.",
                "Value (<*>) for parameter iamInstanceProfile.name is invalid.",
            ),
            ("request id: 4442587FB7D0A2F9.", "request id: <ID>."),
            // Ids and ARNs keep their own placeholders.
            ("Policy arn:aws:iam::aws:policy/X does not exist", "Policy <ARN> does not exist"),
            ("for the user: 123837392027", "for the user: <NUM>"),
            ("group sg-0123456789abcdef0 is in use", "group <ID> is in use"),
        ];
        for (msg, want) in cases {
            assert_eq!(template(msg), *want, "{msg}");
        }
    }

    #[test]
    fn links_paths_and_services() {
        let cases: &[(&str, &str)] = &[
            // A quoted ARN and a bare one are the same error.
            ("Policy \"arn:aws:iam::1:policy/p\" is invalid", "Policy <ARN> is invalid"),
            ("Policy 'arn:aws:iam::1:policy/p' is invalid", "Policy <ARN> is invalid"),
            ("Policy arn:aws:iam::1:policy/p is invalid", "Policy <ARN> is invalid"),
            ("Please visit http://aws.amazon.com/contact-us/ec2-request to", "Please visit <URL> to"),
            ("Go to https://console.aws.amazon.com/iam/home?region=us-east-1#/x.", "Go to <URL>."),
            ("see 's3://bucket/key'", "see <URL>"),
            // The parameter after `at` is kept, its indexes masked; the value is masked.
            (
                "Value null at 'tags.1.member.value' failed to satisfy constraint",
                "Value null at 'tags.<NUM>.member.value' failed to satisfy constraint",
            ),
            ("Value 'x y' at 'roleSessionName' failed", "Value '<*>' at 'roleSessionName' failed"),
            ("Value PYTHON3.9 at 'runtime' failed", "Value <*> at 'runtime' failed"),
            ("Value foo at 'runtime' failed", "Value <*> at 'runtime' failed"),
            ("look at 'this one'", "look at '<*>'"),
            // A service prefix is a word, digits or not.
            ("perform: ec2-instance-connect:SendSSHPublicKey on", "perform: ec2-instance-connect:SendSSHPublicKey on"),
            ("perform: route53:ChangeResourceRecordSets on", "perform: route53:ChangeResourceRecordSets on"),
            ("key a1b2c3:value", "key <ID>:value"),
        ];
        for (msg, want) in cases {
            assert_eq!(template(msg), *want, "{msg}");
        }
    }

    #[test]
    fn placeholders() {
        let cases: &[(&str, &str)] = &[
            ("request 0f8fad5b-d9cb-469f-a165-70867728950e failed", "request <UUID> failed"),
            ("from 203.0.113.50, blocked", "from <IP>, blocked"),
            ("range 10.0.0.0/16 overlaps", "range <IP> overlaps"),
            ("from 2001:db8::1 and fe80::1ff:fe23:4567:890a/64.", "from <IP> and <IP>."),
            ("mail bob.ross+x@example.co.uk now", "mail <EMAIL> now"),
            ("not-an-email @ foo@bar", "not-an-email @ foo@bar"),
            ("sg-04cfb7a4712d75b00 eipalloc-08a083beb7e83dbc0 eni-attach-02aca13293a6fe1b9", "<ID> <ID> <ID>"),
            (
                "subnet-0afaf7ba acl-deadbeef igw-02a84e42 snap-0123456789abcdef0 ami-abcdefab",
                "<ID> <ID> <ID> <ID> <ID>",
            ),
            ("key AKIAIOSFODNNEXAMPLE and ASIAXXXXXXXXXXXXXXXX", "key <ID> and <ID>"),
            ("size 1024 of 2.5 at 2023-07-10 12:15:04 is 50%", "size <NUM> of <NUM> at <NUM> <NUM> is <NUM>"),
            ("s3 ec2 IPv4 x1y2 ab1", "s3 ec2 <ID> <ID> ab1"),
            ("perform: ec2:GetPasswordData name=abc12345 k=v", "perform: ec2:GetPasswordData name=<ID> k=v"),
            ("request id: 4442587FB7D0A2F9.", "request id: <ID>."),
        ];
        for (msg, want) in cases {
            assert_eq!(template(msg), *want, "{msg}");
        }
    }

    #[test]
    fn quotes_and_parens() {
        let cases: &[(&str, &str)] = &[
            ("it doesn't exist", "it doesn't exist"),
            ("The users' keys are gone", "The users' keys are gone"),
            ("Bucket 'my bucket' is gone", "Bucket '<*>' is gone"),
            ("name='abc' and id=\"x y\".", "name='<*>' and id=\"<*>\"."),
            ("key:'v1', other", "key:'<*>', other"),
            ("('inner') done", "(<*>) done"),
            ("f('inner') done", "f('<*>') done"),
            ("'it's here' now", "'<*>' now"),
            ("'unclosed quote here", "'unclosed quote here"),
            ("'' empty", "'' empty"),
            ("a 'b' 'c'", "a '<*>' '<*>'"),
            ("Value (my-profile) for parameter x", "Value (<*>) for parameter x"),
            ("(Service: AmazonS3; Status Code: 403)", "(Service: <ID>; Status Code: <NUM>)"),
            ("call(f1a2) and () and (x)y", "<ID>) and () and (x)y"),
            ("(abc).", "(<*>)."),
            ("'a\"b' \"c'd\"", "'<*>' \"<*>\""),
        ];
        for (msg, want) in cases {
            assert_eq!(template(msg), *want, "{msg}");
        }
    }

    #[test]
    fn whitespace_controls_and_truncation() {
        let cases: &[(&str, &str)] = &[("  a\t\tb\r\nc  ", "a b c"), ("a\u{0}b\u{7f}c", "a b c"), ("\n\n", "")];
        for (msg, want) in cases {
            assert_eq!(template(msg), *want, "{msg:?}");
        }
        // 2,048 chars are kept, counted in chars not bytes.
        let long = "é ".repeat(3000);
        let t = template(&long);
        assert_eq!(t.chars().count(), 2047); // 1,024 "é" + 1,023 spaces; the trailing space is trimmed
        assert_eq!(truncate_message(&long).chars().count(), 2048);
        assert_eq!(truncate_message("short"), "short");
        let huge = format!("Boom {}", "x".repeat(5 << 20));
        assert_eq!(template(&huge), format!("Boom {}", "x".repeat(2043)));
    }

    #[test]
    fn same_error_same_template() {
        let bert = "User: arn:aws:iam::123837392027:user/bert-jan is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123837392027:role/stratus-red-team-ec2-get-password-data-role";
        let christophe = "User: arn:aws:iam::457448411975:user/christophe is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::457448411975:role/stratus-red-team-ec2-get-password-data-role";
        let other_action = "User: arn:aws:iam::123837392027:user/bert-jan is not authorized to perform: sts:TagSession on resource: arn:aws:iam::123837392027:role/x";
        assert_eq!(template(bert), template(christophe));
        assert_ne!(template(bert), template(other_action));
        assert_eq!(
            template("The routeTable ID 'rtb-0906d1e2f52ebe9b0' does not exist"),
            template("The routeTable ID 'rtb-08cbc80e25a39c743' does not exist")
        );
        // Deterministic.
        assert_eq!(template(bert), template(bert));
    }

    #[test]
    fn adversarial_inputs_are_linear() {
        // Many openers without closers, many parens, long tokens: must return promptly.
        let openers = " 'a".repeat(600);
        assert_eq!(template(&openers), openers.trim());
        let parens = " (a".repeat(600);
        assert_eq!(template(&parens), parens.trim());
        // A stray quote at the end closes the first opener: the rule is positional, not balanced.
        assert_eq!(template(&format!("{} '", openers.trim())), "'<*>'");
        let token = "a1".repeat(1024);
        assert_eq!(template(&token), "<ID>");
    }
}
