//! The alerting state of one dimension (one inspection × one cloud account) and the decision
//! each run makes about it. Pure: no clock, no I/O; the caller stores [`DimensionState`].
//!
//! Every event is written to Guance: an alert policy silences notifications, not the event
//! history. What this machine decides is whether an event is *silent* (`df_is_silent =
//! "true"`: in the history, nobody notified). When the inspection silences locally
//! ([`AlertPolicy::silences_locally`]: by default only without Guance alert policies, which
//! otherwise do the silencing), the rules, in the order they apply to a run with new
//! clusters, are:
//! 1. A level the inspection does not notify on (`notify_levels`) is silent.
//! 2. While a fault is open and a notifying event went out less than `silence_minutes` ago, a
//!    further event is silent — unless it is more severe than the last notifying event of the
//!    fault: a root sign-in must not wait out the silence a warning started.
//! 3. Otherwise the event notifies. The first notifying event opens the fault; its event id
//!    becomes the fault id (Guance: "`df_fault_id` is the `df_event_id` of the first fault
//!    event").
//!
//! Without local silencing every event with new clusters notifies (Guance's policies decide).
//!
//! Clusters of silent events are carried in the state and included in the next event that
//! notifies (or in the recovery), so whoever is notified hears of them. The carry list is
//! bounded by [`MAX_CARRIED`]; clusters beyond it are counted, not kept.
//!
//! A run without new clusters recovers an open fault: an `ok` event with the fault's id, its
//! start time and its duration. A run that could not read its data ([`RunOutcome::Inconclusive`])
//! changes nothing — silence about a failed read is not a recovery.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::event::{EventCluster, EventStatus};
use crate::model::alerting::{AlertPolicy, NotifyLevel};

/// Most clusters carried between events.
pub const MAX_CARRIED: usize = 100;

/// What is remembered about a dimension between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DimensionState {
    /// The fault in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<OpenFault>,
    /// Clusters of recorded-but-unsent events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<EventCluster>,
    /// Carried clusters that did not fit in `carried`.
    #[serde(default)]
    pub carried_omitted: u64,
}

/// A fault in progress: opened by the first sent event, closed by a recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenFault {
    /// The event id of the event that opened it.
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// When the last event of this fault was sent, and its status.
    pub last_sent_at: DateTime<Utc>,
    pub last_sent_status: EventStatus,
}

/// What a run found for the dimension.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// New clusters, at this level (from the inspection's severity rules).
    NewClusters { level: NotifyLevel, clusters: Vec<EventCluster> },
    /// The data was read and held no new cluster.
    Quiet,
    /// The data could not be read (failed run); nothing can be concluded.
    Inconclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Write the event; it notifies.
    Send,
    /// Write the event with `df_is_silent = "true"`: in the history, nobody notified.
    RecordSilent,
    /// Write the `ok` event that closes the fault.
    Recover,
    /// No event.
    Nothing,
}

/// Why an event is silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum SilentReason {
    /// Within the silence period after the last sent event.
    Silenced { until: DateTime<Utc> },
    /// The inspection does not notify on this level.
    LevelNotNotified { level: NotifyLevel },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultStatus {
    Fault,
    Ok,
}

impl FaultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultStatus::Fault => "fault",
            FaultStatus::Ok => "ok",
        }
    }
}

/// The `df_fault_*` fields of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultFields {
    pub id: String,
    pub status: FaultStatus,
    pub start_time: DateTime<Utc>,
    /// Seconds from the fault's start to this event.
    pub duration_secs: i64,
}

/// What to do for one dimension after one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// `df_status` of the event (`ok` for a recovery and for `Nothing`).
    pub status: EventStatus,
    pub silent_reason: Option<SilentReason>,
    pub fault: Option<FaultFields>,
    /// Clusters of earlier unsent events to include in this event.
    pub carried: Vec<EventCluster>,
    pub carried_omitted: u64,
    /// The state to store for the next run.
    pub next: DimensionState,
}

impl Decision {
    /// Whether an event is to be written (to the store, and to Guance).
    pub fn records_event(&self) -> bool {
        self.action != Action::Nothing
    }

    pub fn is_silent(&self) -> bool {
        self.action == Action::RecordSilent
    }
}

/// Decides what a run means for a dimension. `event_id` is the id the event of this run would
/// get ([`super::event::event_id`]); it becomes the fault id when this run opens a fault.
///
/// Long because it is the whole state machine in one match (outcome × fault × silence), so
/// that every transition can be read side by side with the table tests below.
pub fn decide(
    prev: &DimensionState,
    outcome: RunOutcome,
    policy: &AlertPolicy,
    event_id: &str,
    now: DateTime<Utc>,
) -> Decision {
    match outcome {
        RunOutcome::Inconclusive => nothing(prev.clone()),
        RunOutcome::Quiet => match &prev.fault {
            None => nothing(prev.clone()),
            Some(f) => Decision {
                action: Action::Recover,
                status: EventStatus::Ok,
                silent_reason: None,
                fault: Some(FaultFields {
                    id: f.id.clone(),
                    status: FaultStatus::Ok,
                    start_time: f.started_at,
                    duration_secs: seconds_between(f.started_at, now),
                }),
                carried: prev.carried.clone(),
                carried_omitted: prev.carried_omitted,
                next: DimensionState::default(),
            },
        },
        RunOutcome::NewClusters { level, clusters } => {
            let status = EventStatus::from(level);
            let silent_reason = if !policy.silences_locally() {
                None
            } else if !policy.notify_levels.contains(&level) {
                Some(SilentReason::LevelNotNotified { level })
            } else {
                prev.fault.as_ref().and_then(|f| {
                    let until = f.last_sent_at + Duration::minutes(i64::from(policy.silence_minutes));
                    let escalates = status > f.last_sent_status;
                    (now < until && !escalates).then_some(SilentReason::Silenced { until })
                })
            };
            match silent_reason {
                Some(reason) => {
                    let mut next = prev.clone();
                    carry(&mut next, clusters, now);
                    Decision {
                        action: Action::RecordSilent,
                        status,
                        silent_reason: Some(reason),
                        fault: prev.fault.as_ref().map(|f| FaultFields {
                            id: f.id.clone(),
                            status: FaultStatus::Fault,
                            start_time: f.started_at,
                            duration_secs: seconds_between(f.started_at, now),
                        }),
                        carried: Vec::new(),
                        carried_omitted: 0,
                        next,
                    }
                }
                None => {
                    let (id, started_at) = match &prev.fault {
                        Some(f) => (f.id.clone(), f.started_at),
                        None => (event_id.to_owned(), now),
                    };
                    Decision {
                        action: Action::Send,
                        status,
                        silent_reason: None,
                        fault: Some(FaultFields {
                            id: id.clone(),
                            status: FaultStatus::Fault,
                            start_time: started_at,
                            duration_secs: seconds_between(started_at, now),
                        }),
                        carried: prev.carried.clone(),
                        carried_omitted: prev.carried_omitted,
                        next: DimensionState {
                            fault: Some(OpenFault { id, started_at, last_sent_at: now, last_sent_status: status }),
                            carried: Vec::new(),
                            carried_omitted: 0,
                        },
                    }
                }
            }
        }
    }
}

fn nothing(next: DimensionState) -> Decision {
    Decision {
        action: Action::Nothing,
        status: EventStatus::Ok,
        silent_reason: None,
        fault: None,
        carried: Vec::new(),
        carried_omitted: 0,
        next,
    }
}

/// Adds a silenced event's clusters to the carry list: one entry per fingerprint (the first
/// recording wins), at most [`MAX_CARRIED`], the rest counted.
fn carry(state: &mut DimensionState, clusters: Vec<EventCluster>, now: DateTime<Utc>) {
    for mut c in clusters {
        if state.carried.iter().any(|k| k.identity.fingerprint == c.identity.fingerprint) {
            continue;
        }
        if state.carried.len() >= MAX_CARRIED {
            state.carried_omitted += 1;
            continue;
        }
        c.carried_from.get_or_insert(now);
        state.carried.push(c);
    }
}

/// Whole seconds from `start` to `end`; 0 if the clock went backwards.
/// Whole seconds as the event shows them: `df_fault_start_time` and the event time are both
/// cut to the second, so the duration is their difference (not the exact interval floored,
/// which can be one less than what a reader of the event computes).
fn seconds_between(start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    (end.timestamp() - start.timestamp()).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::ClusterIdentity;
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap() + Duration::minutes(min)
    }

    fn cluster(fp: &str) -> EventCluster {
        EventCluster {
            cluster_id: None,
            identity: ClusterIdentity {
                fingerprint: fp.to_owned(),
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                event_source: "s3.amazonaws.com".into(),
                event_name: "GetObject".into(),
                error_code: "AccessDenied".into(),
                template: "Access Denied".into(),
            },
            count: 3,
            first_seen: t(0),
            last_seen: t(1),
            top_principals: Vec::new(),
            top_source_ips: Vec::new(),
            sample_message: "Access Denied".into(),
            rules: vec!["CloudWatch.2".into()],
            carried_from: None,
        }
    }

    fn new(level: NotifyLevel, fps: &[&str]) -> RunOutcome {
        RunOutcome::NewClusters { level, clusters: fps.iter().map(|f| cluster(f)).collect() }
    }

    fn policy(levels: &[NotifyLevel], silence: u32) -> AlertPolicy {
        AlertPolicy {
            guance_alert_policy_uuids: Vec::new(),
            notify_levels: levels.to_vec(),
            silence_minutes: silence,
            local_silencing: None,
        }
    }

    fn default_policy() -> AlertPolicy {
        AlertPolicy::default()
    }

    /// Runs a sequence of (minute, outcome) through the machine, returning every decision.
    fn play(policy: &AlertPolicy, steps: Vec<(i64, RunOutcome)>) -> Vec<Decision> {
        let mut state = DimensionState::default();
        let mut out = Vec::new();
        for (i, (min, outcome)) in steps.into_iter().enumerate() {
            let d = decide(&state, outcome, policy, &format!("event-{i}"), t(min));
            state = d.next.clone();
            out.push(d);
        }
        out
    }

    fn actions(ds: &[Decision]) -> Vec<Action> {
        ds.iter().map(|d| d.action).collect()
    }

    #[test]
    fn quiet_without_a_fault_does_nothing() {
        let d = decide(&DimensionState::default(), RunOutcome::Quiet, &default_policy(), "event-a", t(0));
        assert_eq!(d.action, Action::Nothing);
        assert!(!d.records_event());
        assert_eq!(d.next, DimensionState::default());
    }

    #[test]
    fn first_event_opens_a_fault_named_after_itself() {
        let d = decide(&DimensionState::default(), new(NotifyLevel::Error, &["a"]), &default_policy(), "event-a", t(5));
        assert_eq!(d.action, Action::Send);
        assert!(d.records_event() && !d.is_silent());
        assert_eq!(d.status, EventStatus::Error);
        assert_eq!(
            d.fault,
            Some(FaultFields { id: "event-a".into(), status: FaultStatus::Fault, start_time: t(5), duration_secs: 0 })
        );
        assert_eq!(
            d.next.fault,
            Some(OpenFault {
                id: "event-a".into(),
                started_at: t(5),
                last_sent_at: t(5),
                last_sent_status: EventStatus::Error
            })
        );
    }

    #[test]
    fn recovery_keeps_the_fault_id_start_and_measures_the_duration() {
        let ds = play(&default_policy(), vec![(0, new(NotifyLevel::Error, &["a"])), (60, RunOutcome::Quiet)]);
        assert_eq!(actions(&ds), vec![Action::Send, Action::Recover]);
        let r = &ds[1];
        assert!(r.records_event());
        assert_eq!(r.status, EventStatus::Ok);
        assert_eq!(
            r.fault,
            Some(FaultFields { id: "event-0".into(), status: FaultStatus::Ok, start_time: t(0), duration_secs: 3600 })
        );
        assert_eq!(r.next, DimensionState::default());
    }

    #[test]
    fn within_the_silence_period_events_are_recorded_and_carried() {
        let ds = play(
            &policy(&[NotifyLevel::Critical, NotifyLevel::Error, NotifyLevel::Warning], 60),
            vec![
                (0, new(NotifyLevel::Error, &["a"])),
                (20, new(NotifyLevel::Error, &["b"])),
                (40, new(NotifyLevel::Warning, &["c", "b"])),
                (61, new(NotifyLevel::Warning, &["d"])),
            ],
        );
        assert_eq!(actions(&ds), vec![Action::Send, Action::RecordSilent, Action::RecordSilent, Action::Send]);
        assert_eq!(ds[1].silent_reason, Some(SilentReason::Silenced { until: t(60) }));
        assert!(ds[1].is_silent() && ds[1].records_event());
        // The silent events still carry the fault's fields.
        let f = ds[2].fault.clone().unwrap();
        assert_eq!((f.id.as_str(), f.status, f.duration_secs), ("event-0", FaultStatus::Fault, 2400));
        // b and c are carried (b once), with the time they were first recorded.
        let carried: Vec<(&str, Option<DateTime<Utc>>)> =
            ds[2].next.carried.iter().map(|c| (c.identity.fingerprint.as_str(), c.carried_from)).collect();
        assert_eq!(carried, vec![("b", Some(t(20))), ("c", Some(t(40)))]);
        // The next sent event brings them along and the carry list empties.
        let send = &ds[3];
        assert_eq!(send.carried.iter().map(|c| c.identity.fingerprint.as_str()).collect::<Vec<_>>(), vec!["b", "c"]);
        assert!(send.next.carried.is_empty());
        assert_eq!(send.fault.as_ref().unwrap().id, "event-0", "same fault continues");
        assert_eq!(send.next.fault.as_ref().unwrap().last_sent_at, t(61));
    }

    #[test]
    fn silence_restarts_from_the_last_sent_event() {
        let ds = play(
            &policy(&[NotifyLevel::Error], 30),
            vec![
                (0, new(NotifyLevel::Error, &["a"])),
                (29, new(NotifyLevel::Error, &["b"])),
                (30, new(NotifyLevel::Error, &["c"])),
                (59, new(NotifyLevel::Error, &["d"])),
                (60, new(NotifyLevel::Error, &["e"])),
            ],
        );
        assert_eq!(
            actions(&ds),
            vec![Action::Send, Action::RecordSilent, Action::Send, Action::RecordSilent, Action::Send]
        );
    }

    #[test]
    fn zero_silence_sends_every_event() {
        let ds = play(
            &policy(&[NotifyLevel::Warning], 0),
            vec![(0, new(NotifyLevel::Warning, &["a"])), (0, new(NotifyLevel::Warning, &["b"]))],
        );
        assert_eq!(actions(&ds), vec![Action::Send, Action::Send]);
    }

    #[test]
    fn a_more_severe_event_breaks_through_the_silence() {
        let ds = play(
            &default_policy(),
            vec![
                (0, new(NotifyLevel::Warning, &["a"])),
                (10, new(NotifyLevel::Warning, &["b"])),
                (20, new(NotifyLevel::Critical, &["root"])),
                (30, new(NotifyLevel::Error, &["c"])),
            ],
        );
        assert_eq!(actions(&ds), vec![Action::Send, Action::RecordSilent, Action::Send, Action::RecordSilent]);
        assert_eq!(ds[2].status, EventStatus::Critical);
        assert_eq!(ds[2].carried.len(), 1, "the silenced warning rides along");
        assert_eq!(ds[2].fault.as_ref().unwrap().id, "event-0");
    }

    #[test]
    fn levels_not_notified_are_recorded_and_do_not_open_a_fault() {
        let ds = play(
            &policy(&[NotifyLevel::Critical, NotifyLevel::Error], 60),
            vec![
                (0, new(NotifyLevel::Warning, &["w1"])),
                (10, RunOutcome::Quiet),
                (20, new(NotifyLevel::Error, &["e1"])),
            ],
        );
        assert_eq!(actions(&ds), vec![Action::RecordSilent, Action::Nothing, Action::Send]);
        assert_eq!(ds[0].silent_reason, Some(SilentReason::LevelNotNotified { level: NotifyLevel::Warning }));
        assert_eq!(ds[0].fault, None);
        assert_eq!(ds[1].next.carried.len(), 1, "a quiet run keeps what is carried");
        assert_eq!(ds[2].carried.iter().map(|c| c.identity.fingerprint.as_str()).collect::<Vec<_>>(), vec!["w1"]);
        assert_eq!(ds[2].fault.as_ref().unwrap().id, "event-2");
    }

    #[test]
    fn with_guance_policies_nothing_is_silenced_here_unless_asked() {
        let mut p = policy(&[NotifyLevel::Critical], 60);
        p.guance_alert_policy_uuids = vec!["altpl_x".into()];
        let steps = || vec![(0, new(NotifyLevel::Warning, &["a"])), (10, new(NotifyLevel::Warning, &["b"]))];
        let ds = play(&p, steps());
        assert_eq!(actions(&ds), vec![Action::Send, Action::Send], "Guance's policy silences, not this one");
        assert!(ds.iter().all(|d| d.silent_reason.is_none()));
        p.local_silencing = Some(true);
        let ds = play(&p, steps());
        assert_eq!(actions(&ds), vec![Action::RecordSilent, Action::RecordSilent]);
        assert!(ds.iter().all(|d| d.records_event()), "silent events are still written");
    }

    #[test]
    fn recovery_brings_the_silenced_clusters() {
        let ds = play(
            &default_policy(),
            vec![(0, new(NotifyLevel::Error, &["a"])), (10, new(NotifyLevel::Error, &["b"])), (70, RunOutcome::Quiet)],
        );
        assert_eq!(actions(&ds), vec![Action::Send, Action::RecordSilent, Action::Recover]);
        assert_eq!(ds[2].carried.iter().map(|c| c.identity.fingerprint.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(ds[2].fault.as_ref().unwrap().duration_secs, 70 * 60);
    }

    #[test]
    fn a_new_fault_after_recovery_gets_a_new_id_and_no_silence() {
        let ds = play(
            &default_policy(),
            vec![(0, new(NotifyLevel::Error, &["a"])), (5, RunOutcome::Quiet), (6, new(NotifyLevel::Error, &["b"]))],
        );
        assert_eq!(actions(&ds), vec![Action::Send, Action::Recover, Action::Send]);
        let f = ds[2].fault.as_ref().unwrap();
        assert_eq!((f.id.as_str(), f.start_time), ("event-2", t(6)));
    }

    #[test]
    fn inconclusive_runs_change_nothing() {
        let ds = play(
            &default_policy(),
            vec![
                (0, new(NotifyLevel::Error, &["a"])),
                (10, RunOutcome::Inconclusive),
                (20, RunOutcome::Inconclusive),
                (30, RunOutcome::Quiet),
            ],
        );
        assert_eq!(actions(&ds), vec![Action::Send, Action::Nothing, Action::Nothing, Action::Recover]);
        assert_eq!(ds[1].next, ds[0].next);
        assert_eq!(ds[3].fault.as_ref().unwrap().duration_secs, 1800);
    }

    #[test]
    fn the_carry_list_is_bounded_and_counts_the_rest() {
        let mut state = DimensionState::default();
        let p = policy(&[NotifyLevel::Critical], 60);
        let fps: Vec<String> = (0..MAX_CARRIED + 7).map(|i| format!("fp{i}")).collect();
        let refs: Vec<&str> = fps.iter().map(String::as_str).collect();
        let d = decide(&state, new(NotifyLevel::Warning, &refs), &p, "event-x", t(0));
        state = d.next;
        assert_eq!((state.carried.len(), state.carried_omitted), (MAX_CARRIED, 7));
        let d = decide(&state, new(NotifyLevel::Critical, &["crit"]), &p, "event-y", t(1));
        assert_eq!((d.carried.len(), d.carried_omitted), (MAX_CARRIED, 7));
        assert_eq!((d.next.carried.len(), d.next.carried_omitted), (0, 0));
    }

    #[test]
    fn a_clock_going_backwards_gives_zero_duration() {
        let ds = play(&default_policy(), vec![(10, new(NotifyLevel::Error, &["a"])), (5, RunOutcome::Quiet)]);
        assert_eq!(ds[1].fault.as_ref().unwrap().duration_secs, 0);
    }

    #[test]
    fn state_round_trips_through_json() {
        let ds =
            play(&default_policy(), vec![(0, new(NotifyLevel::Error, &["a"])), (5, new(NotifyLevel::Error, &["b"]))]);
        let json = serde_json::to_string(&ds[1].next).unwrap();
        let back: DimensionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ds[1].next);
        assert_eq!(serde_json::from_str::<DimensionState>("{}").unwrap(), DimensionState::default());
    }
}
