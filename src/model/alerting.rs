//! How an inspection alerts: the levels it notifies on, its silence, and the severity rules
//! that give each new cluster a level. These are settings of an inspection; the Guance
//! layer reads them to render and decide events.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::validation::FieldErrors;
use crate::engine::rules::{self, glob_match};

/// Severity levels an alert policy can notify on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyLevel {
    Critical,
    Error,
    Warning,
    Info,
}

/// Who hears about new clusters, as Guance alert policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPolicy {
    /// Guance alert policy UUIDs (`altpl_…`) attached to this inspection's events: Guance
    /// notifies (or silences) by them.
    #[serde(default)]
    pub guance_alert_policy_uuids: Vec<String>,
    /// Event levels that notify; events of other levels are written silent
    /// (`df_is_silent = "true"`). Applies when `local_silencing` is on.
    #[serde(default = "default_notify_levels")]
    pub notify_levels: Vec<NotifyLevel>,
    /// After an event for a dimension, further events within this many minutes are written
    /// silent, unless more severe. Applies when `local_silencing` is on.
    #[serde(default = "default_silence_minutes")]
    pub silence_minutes: u32,
    /// Whether `notify_levels` and `silence_minutes` mark events silent here. Default (null):
    /// on without `guance_alert_policy_uuids`, off with them — Guance's policies then decide
    /// who is notified and when, and silencing here as well would silence twice. Silent or
    /// not, every event is written to Guance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_silencing: Option<bool>,
}

fn default_notify_levels() -> Vec<NotifyLevel> {
    vec![NotifyLevel::Critical, NotifyLevel::Error, NotifyLevel::Warning]
}

fn default_silence_minutes() -> u32 {
    60
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            guance_alert_policy_uuids: Vec::new(),
            notify_levels: default_notify_levels(),
            silence_minutes: default_silence_minutes(),
            local_silencing: None,
        }
    }
}

impl AlertPolicy {
    /// Whether this service marks events silent by `notify_levels` and `silence_minutes`:
    /// as asked, else only when no Guance alert policy is attached.
    pub fn silences_locally(&self) -> bool {
        self.local_silencing.unwrap_or(self.guance_alert_policy_uuids.is_empty())
    }

    /// Adds a message per bad field, under `alert_policy`.
    pub fn validate(&self, errors: &mut FieldErrors) {
        let p = self;
        if p.guance_alert_policy_uuids.len() > 20 {
            errors.add("alert_policy.guance_alert_policy_uuids", "must have at most 20 entries");
        }
        for (i, u) in p.guance_alert_policy_uuids.iter().enumerate() {
            let ok = u.starts_with("altpl_")
                && u.len() <= 64
                && u.len() > 6
                && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                errors.add(
                    format!("alert_policy.guance_alert_policy_uuids[{i}]"),
                    "must be a Guance alert policy UUID (`altpl_…`)",
                );
            }
        }
        if p.notify_levels.is_empty() {
            errors.add("alert_policy.notify_levels", "must name at least one level");
        }
        let distinct: BTreeSet<_> = p.notify_levels.iter().collect();
        if distinct.len() != p.notify_levels.len() {
            errors.add("alert_policy.notify_levels", "lists a level twice");
        }
        if p.silence_minutes > 10080 {
            errors.add("alert_policy.silence_minutes", "must be between 0 and 10080");
        }
    }
}

/// One severity rule: clusters matching any listed CIS rule id or any error-code glob get
/// `level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeverityRule {
    /// CIS rule ids, `CloudWatch.1` … `CloudWatch.14`.
    #[serde(default)]
    pub rule_ids: Vec<String>,
    /// Error-code globs (`*` any run of chars, `?` one), e.g. `AccessDenied*`;
    /// `ConsoleLoginFailure` names failed console sign-ins.
    #[serde(default)]
    pub error_codes: Vec<String>,
    pub level: NotifyLevel,
}

/// How an inspection turns new clusters into an event level: the first rule that matches a
/// cluster gives its level (so order matters, as in a firewall), `default_level` applies to
/// the others, and the event takes the most severe level of its clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeverityRules {
    #[serde(default = "default_severity_rules")]
    pub rules: Vec<SeverityRule>,
    #[serde(default = "default_level")]
    pub default_level: NotifyLevel,
}

fn default_severity_rules() -> Vec<SeverityRule> {
    let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    vec![
        SeverityRule {
            rule_ids: ids(&["CloudWatch.1", "CloudWatch.5", "CloudWatch.6", "CloudWatch.7"]),
            error_codes: Vec::new(),
            level: NotifyLevel::Critical,
        },
        SeverityRule { rule_ids: ids(&["CloudWatch.2"]), error_codes: Vec::new(), level: NotifyLevel::Error },
    ]
}

fn default_level() -> NotifyLevel {
    NotifyLevel::Warning
}

impl Default for SeverityRules {
    /// `critical` for root use, trail changes, console authentication failures and KMS key
    /// disabling/deletion (CloudWatch.1/5/6/7); `error` for unauthorized calls
    /// (CloudWatch.2); `warning` for any other new cluster.
    fn default() -> Self {
        SeverityRules { rules: default_severity_rules(), default_level: default_level() }
    }
}

impl NotifyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyLevel::Critical => "critical",
            NotifyLevel::Error => "error",
            NotifyLevel::Warning => "warning",
            NotifyLevel::Info => "info",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "critical" => NotifyLevel::Critical,
            "error" => NotifyLevel::Error,
            "warning" => NotifyLevel::Warning,
            "info" => NotifyLevel::Info,
            _ => return None,
        })
    }

    /// The level of a cluster no severity rule matches, under the default rules.
    pub fn unmatched() -> Self {
        default_level()
    }

    /// Severity as a number, higher = more severe (`NotifyLevel` orders critical first).
    pub fn rank(self) -> u8 {
        match self {
            NotifyLevel::Info => 1,
            NotifyLevel::Warning => 2,
            NotifyLevel::Error => 3,
            NotifyLevel::Critical => 4,
        }
    }
}

impl SeverityRules {
    /// The level of one cluster, from the CIS rules it matches and its error code.
    pub fn level_of(&self, matched_rules: &[String], error_code: &str) -> NotifyLevel {
        self.rules
            .iter()
            .find(|r| {
                r.rule_ids.iter().any(|id| matched_rules.contains(id))
                    || r.error_codes.iter().any(|g| glob_match(g, error_code))
            })
            .map_or(self.default_level, |r| r.level)
    }

    /// Adds a message per bad field, under `field` (e.g. `severity_rules`).
    pub fn validate(&self, field: &str, errors: &mut FieldErrors) {
        if self.rules.len() > 50 {
            errors.add(format!("{field}.rules"), "must have at most 50 rules");
            return;
        }
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("{field}.rules[{i}]");
            if r.rule_ids.is_empty() && r.error_codes.is_empty() {
                errors.add(&at, "needs `rule_ids` or `error_codes`");
            }
            for (j, id) in r.rule_ids.iter().enumerate() {
                if rules::rule(id).is_none() {
                    errors.add(format!("{at}.rule_ids[{j}]"), "must be one of CloudWatch.1 … CloudWatch.14");
                }
            }
            for (j, g) in r.error_codes.iter().enumerate() {
                if g.is_empty() || g.chars().count() > 128 || g.chars().any(char::is_control) {
                    errors.add(format!("{at}.error_codes[{j}]"), "must be 1–128 printable characters");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn guance_policies_turn_local_silencing_off_unless_asked() {
        let mut p = AlertPolicy::default();
        assert!(p.silences_locally(), "no Guance policy: silence here");
        p.guance_alert_policy_uuids = vec!["altpl_x".into()];
        assert!(!p.silences_locally(), "Guance's policy silences; not twice");
        p.local_silencing = Some(true);
        assert!(p.silences_locally());
        p.guance_alert_policy_uuids.clear();
        p.local_silencing = Some(false);
        assert!(!p.silences_locally());
    }

    #[test]
    fn default_severity_follows_the_cis_rules() {
        let r = SeverityRules::default();
        for (rules, code, want) in [
            (vec!["CloudWatch.1"], "NoSuchKey", NotifyLevel::Critical),
            (vec!["CloudWatch.5", "CloudWatch.2"], "AccessDenied", NotifyLevel::Critical),
            (vec!["CloudWatch.6"], "ConsoleLoginFailure", NotifyLevel::Critical),
            (vec!["CloudWatch.7"], "NotFoundException", NotifyLevel::Critical),
            (vec!["CloudWatch.2"], "AccessDenied", NotifyLevel::Error),
            (vec!["CloudWatch.10"], "InvalidGroup.NotFound", NotifyLevel::Warning),
            (vec![], "ThrottlingException", NotifyLevel::Warning),
        ] {
            assert_eq!(r.level_of(&ids(&rules), code), want, "{rules:?} {code}");
        }
    }

    #[test]
    fn severity_rules_can_be_overridden_first_match_wins() {
        let r: SeverityRules = serde_json::from_value(json!({
            "rules": [
                {"error_codes": ["Throttling*"], "level": "info"},
                {"rule_ids": ["CloudWatch.2"], "error_codes": ["NoSuch*"], "level": "critical"}
            ],
            "default_level": "error"
        }))
        .unwrap();
        assert_eq!(r.level_of(&ids(&["CloudWatch.2"]), "ThrottlingException"), NotifyLevel::Info);
        assert_eq!(r.level_of(&ids(&["CloudWatch.2"]), "AccessDenied"), NotifyLevel::Critical);
        assert_eq!(r.level_of(&[], "NoSuchBucket"), NotifyLevel::Critical);
        assert_eq!(r.level_of(&[], "ValidationException"), NotifyLevel::Error);
        // Omitted parts take the defaults.
        assert_eq!(serde_json::from_value::<SeverityRules>(json!({})).unwrap(), SeverityRules::default());
        assert!(serde_json::from_value::<SeverityRules>(json!({"rulez": []})).is_err());
    }

    #[test]
    fn severity_rules_are_validated() {
        let r: SeverityRules = serde_json::from_value(json!({"rules": [
            {"level": "error"},
            {"rule_ids": ["CloudWatch.15", "CloudWatch.2"], "error_codes": ["", "ok*"], "level": "warning"}
        ]}))
        .unwrap();
        let mut e = FieldErrors::default();
        r.validate("severity_rules", &mut e);
        assert_eq!(
            e.fields().keys().collect::<Vec<_>>(),
            vec![
                "severity_rules.rules[0]",
                "severity_rules.rules[1].error_codes[0]",
                "severity_rules.rules[1].rule_ids[0]"
            ]
        );
        let mut e = FieldErrors::default();
        SeverityRules::default().validate("severity_rules", &mut e);
        assert!(e.is_empty());
    }

    #[test]
    fn levels_read_back_as_written() {
        for l in [NotifyLevel::Critical, NotifyLevel::Error, NotifyLevel::Warning, NotifyLevel::Info] {
            assert_eq!(NotifyLevel::parse(l.as_str()), Some(l));
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
        }
        assert_eq!(NotifyLevel::parse("fatal"), None);
    }

    #[test]
    fn levels_rank_by_severity() {
        let mut v = vec![NotifyLevel::Warning, NotifyLevel::Critical, NotifyLevel::Info, NotifyLevel::Error];
        v.sort_by_key(|l| l.rank());
        assert_eq!(v, [NotifyLevel::Info, NotifyLevel::Warning, NotifyLevel::Error, NotifyLevel::Critical]);
    }
}
