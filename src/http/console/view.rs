//! The page shell and the small pieces every page shows the same way: times and ages,
//! statuses, levels, shortened ids.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::Access;
use crate::engine::rules;
use crate::model::alerting::NotifyLevel;
use crate::model::cluster::{ClusterIdentity, Counted};

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="no-referrer";
            title { (title) " · cloudtrail-inspector" }
            link rel="stylesheet" href="/console/static/console.css";
        }
    }
}

/// A console page: the top bar (with sign-out when signed in), a note on shared pages,
/// and the body.
pub fn page(title: &str, access: &Access, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/console" { "cloudtrail-inspector" }
                    nav {
                        a href="/console" { "Overview" }
                        a href="/console/events" { "Events" }
                        @if *access == Access::Session {
                            form.inline method="post" action="/console/sign-out" {
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                @if let Access::Shared { expires } = access {
                    p.banner {
                        "Shared link: this page only, read-only, until " (utc(*expires)) ". "
                        a href="/console/sign-in" { "Sign in" } " to see the rest."
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/console" { "cloudtrail-inspector" } }
                main.narrow { h1 { (title) } (body) }
            }
        }
    }
}

pub fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// "12 minutes ago", "in 3 hours": the age a person reads at a glance.
pub fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, unit) = match secs.unsigned_abs() {
        s if s < 45 => return if secs >= 0 { "just now".into() } else { "in a moment".into() },
        s if s < 90 * 60 => (s.div_ceil(60).max(1), "minute"),
        s if s < 36 * 3600 => ((s + 1800) / 3600, "hour"),
        s => ((s + 43_200) / 86_400, "day"),
    };
    let amount = format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if secs >= 0 { format!("{amount} ago") } else { format!("in {amount}") }
}

/// A time as its age, with the exact time on hover and for machines.
pub fn when(now: DateTime<Utc>, t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) title=(utc(t)) { (ago(now, t)) } }
}

pub fn maybe_when(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => when(now, t),
        None => html! { span.muted { "—" } },
    }
}

pub fn duration(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// A status word as a coloured badge (`succeeded`, `failed`, `critical`, `sent`, …).
pub fn badge(word: &str) -> Markup {
    let class = match word {
        "succeeded" | "ok" | "sent" | "synced" | "enabled" => "good",
        "partial" | "warning" | "pending" | "queued" | "running" | "info" => "warn",
        "failed" | "error" | "critical" | "expired" | "interrupted" => "bad",
        _ => "plain",
    };
    html! { span class={ "badge " (class) } { (word) } }
}

pub fn short_id(id: uuid::Uuid) -> String {
    id.to_string()[..8].to_string()
}

pub fn num(n: impl Into<i64>) -> String {
    let n: i64 = n.into();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn counted(items: &[Counted]) -> Markup {
    html! {
        @if items.is_empty() { span.muted { "—" } }
        ul.plain {
            @for c in items { li { code { (c.value) } " " span.muted { "(" (num(c.count as i64)) ")" } } }
        }
    }
}

/// The CIS rules a cluster was rated with (stored with it, as the API shows them), for
/// their titles.
pub fn stored_rules(ids: &[String]) -> Vec<&'static rules::Rule> {
    ids.iter().filter_map(|id| rules::rule(id)).collect()
}

pub fn level_badge(level: NotifyLevel) -> Markup {
    badge(crate::guance::event::EventStatus::from(level).as_str())
}

pub fn rule_list(matched: &[&'static rules::Rule]) -> Markup {
    html! {
        @if matched.is_empty() { span.muted { "—" } }
        @for r in matched { span.rule title=(r.title) { (r.id) } " " }
    }
}

/// The "API" of a cluster: `s3.amazonaws.com GetObject`.
pub fn api(id: &ClusterIdentity) -> Markup {
    html! { code { (id.event_source) } " " code { (id.event_name) } }
}

/// Text cut to `max` chars for a table cell; the whole text is on the detail page.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages_read_like_a_person_says_them() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let m = |n: i64| now - chrono::Duration::minutes(n);
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now, m(1)), "1 minute ago");
        assert_eq!(ago(now, m(12)), "12 minutes ago");
        assert_eq!(ago(now, m(89)), "89 minutes ago");
        assert_eq!(ago(now, m(180)), "3 hours ago");
        assert_eq!(ago(now, m(3 * 1440)), "3 days ago");
        assert_eq!(ago(now, m(-30)), "in 30 minutes");
        assert_eq!(duration(3725), "1h 2m");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(num(-1000), "-1,000");
        assert_eq!(cut("abcdef", 3), "abc…");
    }
}
