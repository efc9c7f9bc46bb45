//! Two-way sync of an inspection with its self-built checker in Guance studio, decided here
//! and carried out by the outbox's sync worker. Pure: no clock, no I/O.
//!
//! Guance studio edits three things of a self-built checker ("在观测云中配置巡检", guance-docs
//! `monitoring/bot-obs/aws_ak_errorlog.md`): the `configs` filter, the alert policies and the
//! enabled switch. This service holds the same three on the inspection ([`Shared`]). Each sync
//! compares both sides with what the last sync left ([`Memory`]): a field changed on one side
//! only takes that side's value; a field changed on both takes the later change (Guance's
//! `updateAt` against the inspection's `updated_at`; a tie keeps this service's value). A
//! field changed nowhere is left alone even when the two differ, so a value this service
//! cannot overwrite in Guance never makes a sync loop.
//!
//! Where Guance keeps the edited values is not documented for the get/modify endpoints; the
//! list endpoint's example (guance-docs `open-api/self-built-checker/list.md`) shows a
//! checker's `jsonScript` with `callKwargs` (the call's arguments, `{}` when none) and
//! `refFuncInfo.kwargs` (each argument with its `default`). So `configs` is read from
//! `jsonScript.callKwargs.configs` when set, else from the registered default
//! ([`super::client::CheckerRecord::configs`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::client::CheckerRecord;

/// The fields both an inspection and its checker hold, and either side may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    /// Log groups (`configs`, one per line, in Guance).
    pub configs: Vec<String>,
    /// Guance alert policy uuids; compared as a set.
    pub alert_policy_uuids: Vec<String>,
    pub enabled: bool,
}

impl Shared {
    /// Takes `field`'s value from `other`.
    pub fn set(&mut self, field: Field, other: &Shared) {
        match field {
            Field::Configs => self.configs = other.configs.clone(),
            Field::AlertPolicies => self.alert_policy_uuids = other.alert_policy_uuids.clone(),
            Field::Enabled => self.enabled = other.enabled,
        }
    }
}

/// One of the [`Shared`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Configs,
    AlertPolicies,
    Enabled,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Configs => "configs",
            Field::AlertPolicies => "alert_policy",
            Field::Enabled => "enabled",
        }
    }
}

/// What the last sync left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// The values both sides agreed on, as the inspection held them.
    pub agreed: Shared,
    /// The title Guance was given last.
    pub title: String,
    /// Guance's copy, as read after the last sync.
    pub seen: Shared,
}

/// Guance's copy of the fields, read from a checker record. A field Guance did not answer
/// takes the value the last sync saw (or this service's), so an incomplete answer never
/// reads as a change.
pub fn remote_fields(record: &CheckerRecord, fallback: &Shared) -> Shared {
    let configs = record.configs().map(|c| crate::model::inspection::parse_configs(&c));
    Shared {
        configs: configs.unwrap_or_else(|| fallback.configs.clone()),
        alert_policy_uuids: record.alert_policy_uuids().unwrap_or_else(|| fallback.alert_policy_uuids.clone()),
        enabled: record.is_disabled().map(|d| !d).unwrap_or(fallback.enabled),
    }
}

/// What one sync does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Register the inspection (Guance has no checker for it, and never had one).
    pub create: bool,
    /// Guance had a checker for it and has none now: it was deleted there.
    pub deleted_in_guance: bool,
    /// Fields changed in Guance, to adopt into the inspection.
    pub adopt: Vec<Field>,
    /// Fields changed here, to push to Guance.
    pub push: Vec<Field>,
    /// Whether the title changed here (pushed with the others).
    pub push_title: bool,
    /// Each field's value once the sync is done.
    pub result: Option<Shared>,
}

impl Plan {
    pub fn pushes(&self) -> bool {
        !self.push.is_empty() || self.push_title
    }
}

/// The checker as Guance holds it now, for [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub fields: Shared,
    /// Guance's `updateAt`: when the checker last changed there (this service's pushes
    /// included).
    pub update_at: Option<DateTime<Utc>>,
}

/// This service's side, for [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local<'a> {
    pub fields: &'a Shared,
    pub title: &'a str,
    /// When the inspection last changed here.
    pub changed_at: DateTime<Utc>,
}

/// Decides one sync. `registered` says whether the inspection was known to Guance before
/// (a checker id or a memory): then a missing checker was deleted there, else it is new.
pub fn plan(local: &Local<'_>, memory: Option<&Memory>, remote: Option<&Remote>, registered: bool) -> Plan {
    let Some(remote) = remote else {
        return if registered {
            Plan { deleted_in_guance: true, ..Plan::default() }
        } else {
            Plan { create: true, result: Some(local.fields.clone()), ..Plan::default() }
        };
    };
    // Guance's times are whole seconds; a change here within the same second keeps ours.
    let remote_newer = remote.update_at.is_some_and(|r| r.timestamp() > local.changed_at.timestamp());
    let mut plan = Plan { push_title: memory.is_none_or(|m| m.title != local.title), ..Plan::default() };
    let (l, r) = (local.fields, &remote.fields);
    let (agreed, seen) = (memory.map(|m| &m.agreed), memory.map(|m| &m.seen));
    let mut result = l.clone();
    if let Some(adopt) = merge(
        Field::Configs,
        &l.configs,
        agreed.map(|a| &a.configs),
        seen.map(|s| &s.configs),
        &r.configs,
        remote_newer,
        &mut plan,
    ) {
        result.configs = adopt;
    }
    let (lp, rp) = (as_set(&l.alert_policy_uuids), as_set(&r.alert_policy_uuids));
    let (ap, sp) = (agreed.map(|a| as_set(&a.alert_policy_uuids)), seen.map(|s| as_set(&s.alert_policy_uuids)));
    if merge(Field::AlertPolicies, &lp, ap.as_ref(), sp.as_ref(), &rp, remote_newer, &mut plan).is_some() {
        result.alert_policy_uuids = r.alert_policy_uuids.clone();
    }
    if let Some(adopt) = merge(
        Field::Enabled,
        &l.enabled,
        agreed.map(|a| &a.enabled),
        seen.map(|s| &s.enabled),
        &r.enabled,
        remote_newer,
        &mut plan,
    ) {
        result.enabled = adopt;
    }
    plan.result = Some(result);
    plan
}

/// One field's three-way merge: the remote value when it is to be adopted (and the field
/// is noted in `plan.adopt`), else None (and the field is noted in `plan.push` when this
/// side's value is to be pushed).
fn merge<T: PartialEq + Clone>(
    field: Field,
    local: &T,
    agreed: Option<&T>,
    seen: Option<&T>,
    remote: &T,
    remote_newer: bool,
    plan: &mut Plan,
) -> Option<T> {
    if local == remote {
        return None;
    }
    // Without a memory this service's values are the ones to keep (first sync).
    let changed_here = agreed.is_none_or(|a| a != local);
    let changed_there = seen.is_some_and(|s| s != remote);
    if changed_there && (!changed_here || remote_newer) {
        plan.adopt.push(field);
        Some(remote.clone())
    } else {
        if changed_here {
            plan.push.push(field);
        }
        None
    }
}

fn as_set(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
    }

    fn shared(configs: &[&str], policies: &[&str], enabled: bool) -> Shared {
        Shared {
            configs: configs.iter().map(|s| (*s).to_owned()).collect(),
            alert_policy_uuids: policies.iter().map(|s| (*s).to_owned()).collect(),
            enabled,
        }
    }

    fn memory(agreed: &Shared) -> Memory {
        Memory { agreed: agreed.clone(), title: "prod".into(), seen: agreed.clone() }
    }

    fn local(fields: &Shared, changed_at: DateTime<Utc>) -> Local<'_> {
        Local { fields, title: "prod", changed_at }
    }

    fn remote(fields: Shared, update_at: i64) -> Remote {
        Remote { fields, update_at: Some(t(update_at)) }
    }

    #[test]
    fn new_inspections_are_created_and_vanished_checkers_are_not_recreated() {
        let l = shared(&["a"], &[], true);
        let p = plan(&local(&l, t(0)), None, None, false);
        assert!(p.create && !p.deleted_in_guance);
        let p = plan(&local(&l, t(0)), Some(&memory(&l)), None, true);
        assert!(p.deleted_in_guance && !p.create && !p.pushes() && p.adopt.is_empty());
    }

    #[test]
    fn a_change_on_one_side_goes_to_the_other() {
        let base = shared(&["a"], &["altpl_1"], true);
        // Edited in Guance: configs and the switch.
        let there = shared(&["b", "c"], &["altpl_1"], false);
        let p = plan(&local(&base, t(0)), Some(&memory(&base)), Some(&remote(there.clone(), 100)), true);
        assert_eq!(p.adopt, vec![Field::Configs, Field::Enabled]);
        assert!(!p.pushes());
        assert_eq!(p.result.unwrap(), there);
        // Edited here: the policies. Guance's copy did not change since (even if its updateAt
        // is newer, from an unrelated push).
        let here = shared(&["a"], &["altpl_2", "altpl_1"], true);
        let p = plan(&local(&here, t(0)), Some(&memory(&base)), Some(&remote(base.clone(), 100)), true);
        assert_eq!(p.push, vec![Field::AlertPolicies]);
        assert!(p.adopt.is_empty() && !p.push_title);
        assert_eq!(p.result.unwrap(), here);
    }

    #[test]
    fn both_sides_changed_the_later_wins() {
        let base = shared(&["a"], &[], true);
        let here = shared(&["here"], &[], true);
        let there = shared(&["there"], &[], true);
        let p = plan(&local(&here, t(50)), Some(&memory(&base)), Some(&remote(there.clone(), 100)), true);
        assert_eq!((p.adopt.clone(), p.push.clone()), (vec![Field::Configs], vec![]), "Guance's change is later");
        assert_eq!(p.result.unwrap().configs, ["there"]);
        let p = plan(&local(&here, t(150)), Some(&memory(&base)), Some(&remote(there.clone(), 100)), true);
        assert_eq!((p.adopt.clone(), p.push.clone()), (vec![], vec![Field::Configs]), "ours is later");
        let p = plan(&local(&here, t(100)), Some(&memory(&base)), Some(&remote(there, 100)), true);
        assert_eq!(p.push, vec![Field::Configs], "a tie keeps ours");
    }

    #[test]
    fn policies_compare_as_sets_and_agreement_needs_no_push() {
        let base = shared(&["a"], &["altpl_1", "altpl_2"], true);
        let reordered = shared(&["a"], &["altpl_2", "altpl_1"], true);
        let p = plan(&local(&base, t(0)), Some(&memory(&base)), Some(&remote(reordered, 100)), true);
        assert!(p.adopt.is_empty() && !p.pushes());
        // Both sides made the same change: nothing to do either way.
        let same = shared(&["z"], &["altpl_1", "altpl_2"], true);
        let p = plan(&local(&same, t(0)), Some(&memory(&base)), Some(&remote(same.clone(), 100)), true);
        assert!(p.adopt.is_empty() && !p.pushes());
    }

    #[test]
    fn a_difference_nobody_made_is_left_alone() {
        // Guance shows a value this service cannot overwrite (a call argument set in studio
        // before a change here was pushed): neither side changed since, so no loop.
        let agreed = shared(&["new"], &[], true);
        let stale = shared(&["old"], &[], true);
        let m = Memory { agreed: agreed.clone(), title: "prod".into(), seen: stale.clone() };
        let p = plan(&local(&agreed, t(0)), Some(&m), Some(&remote(stale, 100)), true);
        assert!(p.adopt.is_empty() && !p.pushes());
    }

    #[test]
    fn without_a_memory_this_services_values_win_and_are_pushed() {
        let here = shared(&["a"], &["altpl_1"], false);
        let there = shared(&["b"], &[], true);
        let p = plan(&local(&here, t(0)), None, Some(&remote(there, 100)), true);
        assert_eq!(p.push, vec![Field::Configs, Field::AlertPolicies, Field::Enabled]);
        assert!(p.push_title && p.adopt.is_empty());
    }

    #[test]
    fn a_renamed_inspection_pushes_its_title() {
        let base = shared(&["a"], &[], true);
        let l = Local { fields: &base, title: "renamed", changed_at: t(0) };
        let p = plan(&l, Some(&memory(&base)), Some(&remote(base.clone(), 0)), true);
        assert!(p.push_title && p.push.is_empty());
    }
}
