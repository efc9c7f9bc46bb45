//! Planning: which window of each log group a run reads, and whether a run request is
//! acceptable at all. Pure: the store's read positions and the clock come in as arguments.
//!
//! A log group is read from where it was last read completely (its watermark) to
//! `now − delivery_delay`, so consecutive runs neither overlap nor leave gaps and late
//! CloudTrail deliveries are still seen. A group never read before starts at
//! `end − lookback`. A pause longer than `max_catch_up_minutes` is not caught up: the gap is
//! recorded on the run instead. Explicit windows move no watermark.
//!
//! Whatever its window, default or explicit, a group whose baseline was never read first
//! reads the `baseline_days` before that window, so the first look at a group never reports
//! its old errors as new.

use std::collections::HashMap;

use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};

use crate::model::inspection::{Inspection, validate_log_groups};
use crate::model::run::RunRequest;
use crate::model::validation::FieldErrors;
use crate::source::Window;
use crate::store::LogGroupState;

/// The longest explicit window a caller may ask for.
const MAX_EXPLICIT_WINDOW_DAYS: i64 = 31;

/// What one run reads: a plan per log group and the span they cover together, which is the
/// run's window as stored and shown.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    pub groups: Vec<GroupPlan>,
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// The union of the groups' skipped spans.
    pub skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl RunPlan {
    /// Plans each of `groups` from its stored read position. Without groups the window is
    /// empty, at `now`.
    pub fn new(
        inspection: &Inspection,
        request: &RunRequest,
        groups: &[String],
        states: &HashMap<String, LogGroupState>,
        now: DateTime<Utc>,
    ) -> RunPlan {
        let groups: Vec<GroupPlan> =
            groups.iter().map(|g| plan_group(inspection, request, g, states.get(g), now)).collect();
        let start = groups.iter().map(|p| p.window.start).min().unwrap_or(now);
        let end = groups.iter().map(|p| p.window.end).max().unwrap_or(now);
        let skipped = groups.iter().filter_map(|p| p.skipped).reduce(|a, s| (a.0.min(s.0), a.1.max(s.1)));
        RunPlan { groups, window: (start, end), skipped }
    }

    /// Where the earliest baseline read starts, if any group reads one.
    pub fn baseline_start(&self) -> Option<DateTime<Utc>> {
        self.groups.iter().filter_map(|p| p.baseline.map(|b| b.start)).min()
    }
}

/// What to read for one log group in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub group: String,
    pub window: Window,
    /// The span to read first so old errors become known, not new.
    pub baseline: Option<Window>,
    pub skipped: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Whether a successful read moves the group's watermark (default windows only; any
    /// window records that the group's baseline was read).
    pub moves_state: bool,
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

/// Decides the window of one log group. Pure, so the rules are tested directly.
pub fn plan_group(
    inspection: &Inspection,
    request: &RunRequest,
    group: &str,
    state: Option<&LogGroupState>,
    now: DateTime<Utc>,
) -> GroupPlan {
    let s = &inspection.settings;
    let group = group.to_string();
    // The first look at a group, whatever its window, learns what the days before it held.
    let baseline_due = s.baseline_days > 0 && state.is_none_or(|st| st.baseline_until.is_none());
    let baseline_before =
        |start| baseline_due.then(|| Window { start: start - TimeDelta::days(s.baseline_days as i64), end: start });
    if let (Some(start), Some(end)) = (request.window_start, request.window_end) {
        let window = Window { start: whole_seconds(start), end: whole_seconds(end) };
        return GroupPlan { group, window, baseline: baseline_before(window.start), skipped: None, moves_state: false };
    }
    let end = whole_seconds(now - TimeDelta::minutes(s.delivery_delay_minutes as i64));
    let cap = TimeDelta::minutes(s.max_catch_up_minutes as i64);
    let mut skipped = None;
    let mut start = match state.and_then(|st| st.watermark) {
        Some(w) => w.min(end),
        None => end - TimeDelta::minutes(s.lookback_minutes as i64),
    };
    if end - start > cap {
        skipped = Some((start, end - cap));
        start = end - cap;
    }
    GroupPlan { group, window: Window { start, end }, baseline: baseline_before(start), skipped, moves_state: true }
}

/// Checks a run request on its own terms; the inspection's rules apply to `log_groups`.
pub fn validate_request(request: RunRequest, now: DateTime<Utc>, limits: bool) -> Result<RunRequest, FieldErrors> {
    let mut errors = FieldErrors::default();
    match (request.window_start, request.window_end) {
        (Some(start), Some(end)) => {
            if start >= end {
                errors.add("window_end", "must be after window_start");
            } else if limits && end - start > TimeDelta::days(MAX_EXPLICIT_WINDOW_DAYS) {
                errors.add("window_end", format!("a window can span at most {MAX_EXPLICIT_WINDOW_DAYS} days"));
            }
            if limits && end > now + TimeDelta::minutes(5) {
                errors.add("window_end", "must not be in the future");
            }
        }
        (Some(_), None) => errors.add("window_end", "is required with window_start"),
        (None, Some(_)) => errors.add("window_start", "is required with window_end"),
        (None, None) => {}
    }
    if let Some(groups) = &request.log_groups {
        validate_log_groups("log_groups", groups, &mut errors);
    }
    errors.into_result(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fixtures::{at, base, inspection};

    fn state(watermark: Option<DateTime<Utc>>, baseline_until: Option<DateTime<Utc>>) -> LogGroupState {
        LogGroupState { log_group: "g".into(), watermark, baseline_until, ..LogGroupState::default() }
    }

    #[test]
    fn first_run_reads_lookback_before_the_delivery_delay_and_a_baseline() {
        let p = plan_group(&base(), &RunRequest::default(), "g", None, at(12, 30, 15) + TimeDelta::milliseconds(700));
        assert_eq!(p.window, Window { start: at(11, 20, 15), end: at(12, 20, 15) });
        assert_eq!(p.baseline, Some(Window { start: at(11, 20, 15) - TimeDelta::days(7), end: at(11, 20, 15) }));
        assert!(p.moves_state);
        assert_eq!(p.skipped, None);
    }

    #[test]
    fn later_runs_start_at_the_watermark() {
        let st = state(Some(at(12, 0, 0)), Some(at(11, 0, 0)));
        let p = plan_group(&base(), &RunRequest::default(), "g", Some(&st), at(13, 10, 0));
        assert_eq!(p.window, Window { start: at(12, 0, 0), end: at(13, 0, 0) });
        assert_eq!(p.baseline, None);
    }

    #[test]
    fn a_long_pause_is_capped_and_the_gap_recorded() {
        let st = state(Some(at(0, 0, 0) - TimeDelta::days(3)), Some(at(0, 0, 0)));
        let p = plan_group(&base(), &RunRequest::default(), "g", Some(&st), at(12, 10, 0));
        assert_eq!(p.window, Window { start: at(12, 0, 0) - TimeDelta::hours(24), end: at(12, 0, 0) });
        assert_eq!(p.skipped, Some((at(0, 0, 0) - TimeDelta::days(3), at(12, 0, 0) - TimeDelta::hours(24))));
    }

    #[test]
    fn explicit_windows_move_no_watermark_but_read_a_baseline_first() {
        let req =
            RunRequest { window_start: Some(at(1, 0, 0)), window_end: Some(at(2, 0, 0)), ..RunRequest::default() };
        let p = plan_group(&base(), &req, "g", None, at(12, 0, 0));
        assert_eq!(p.window, Window { start: at(1, 0, 0), end: at(2, 0, 0) });
        assert!(!p.moves_state);
        assert_eq!(
            p.baseline,
            Some(Window { start: at(1, 0, 0) - TimeDelta::days(7), end: at(1, 0, 0) }),
            "a group never read learns the days before its first window, explicit or not"
        );

        // Once a group's baseline was read (by any window), explicit windows read only themselves.
        let read = state(None, Some(at(0, 30, 0)));
        assert_eq!(plan_group(&base(), &req, "g", Some(&read), at(12, 0, 0)).baseline, None);
        let default_read = state(Some(at(11, 0, 0)), Some(at(10, 0, 0)));
        assert_eq!(plan_group(&base(), &req, "g", Some(&default_read), at(12, 0, 0)).baseline, None);
    }

    #[test]
    fn a_group_that_failed_its_first_window_still_gets_its_baseline() {
        let st = state(Some(at(11, 0, 0)), None);
        let p = plan_group(&base(), &RunRequest::default(), "g", Some(&st), at(12, 10, 0));
        assert_eq!(p.window.start, at(11, 0, 0));
        assert_eq!(p.baseline.unwrap().end, at(11, 0, 0));
    }

    #[test]
    fn no_baseline_when_baseline_days_is_zero() {
        let i = inspection(
            serde_json::json!({"name": "n", "log_groups": ["g"], "aws": {"region": "us-east-1"}, "baseline_days": 0}),
        );
        assert_eq!(plan_group(&i, &RunRequest::default(), "g", None, at(12, 0, 0)).baseline, None);
    }

    #[test]
    fn a_run_spans_its_groups_windows_and_their_skipped_spans() {
        let now = at(12, 10, 0);
        let states = HashMap::from([
            ("a".to_string(), LogGroupState { log_group: "a".into(), ..state(Some(at(11, 30, 0)), Some(at(0, 0, 0))) }),
            (
                "b".to_string(),
                LogGroupState {
                    log_group: "b".into(),
                    ..state(Some(at(0, 0, 0) - TimeDelta::days(2)), Some(at(0, 0, 0)))
                },
            ),
            (
                "c".to_string(),
                LogGroupState {
                    log_group: "c".into(),
                    ..state(Some(at(0, 0, 0) - TimeDelta::days(3)), Some(at(0, 0, 0)))
                },
            ),
        ]);
        let groups = ["a".to_string(), "b".to_string(), "c".to_string(), "new".to_string()];
        let plan = RunPlan::new(&base(), &RunRequest::default(), &groups, &states, now);
        assert_eq!(plan.groups.iter().map(|p| p.group.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "new"]);
        let capped = at(12, 0, 0) - TimeDelta::hours(24);
        assert_eq!(plan.window, (capped, at(12, 0, 0)), "from the earliest start to the latest end");
        assert_eq!(plan.skipped, Some((at(0, 0, 0) - TimeDelta::days(3), capped)), "the union of the gaps");
        assert_eq!(plan.baseline_start(), Some(at(11, 0, 0) - TimeDelta::days(7)), "only the new group's");

        let none = RunPlan::new(&base(), &RunRequest::default(), &[], &states, now);
        assert_eq!((none.window, none.skipped, none.baseline_start()), ((now, now), None, None));
    }

    #[test]
    fn run_requests_are_checked() {
        let now = at(12, 0, 0);
        let ok = RunRequest { window_start: Some(at(1, 0, 0)), window_end: Some(at(2, 0, 0)), ..RunRequest::default() };
        assert!(validate_request(ok, now, true).is_ok());
        let future =
            RunRequest { window_start: Some(at(1, 0, 0)), window_end: Some(at(13, 0, 0)), ..RunRequest::default() };
        assert!(validate_request(future.clone(), now, true).unwrap_err().fields().contains_key("window_end"));
        assert!(validate_request(future, now, false).is_ok(), "scans may end in the future");
        let long = RunRequest {
            window_start: Some(at(1, 0, 0) - TimeDelta::days(40)),
            window_end: Some(at(1, 0, 0)),
            ..RunRequest::default()
        };
        assert!(validate_request(long, now, true).is_err());
    }
}
