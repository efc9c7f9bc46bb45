//! When an inspection runs by itself: a 5-field cron expression read in an IANA time zone, as
//! DataFlux Func's `fixed_crontab`, plus a per-inspection offset that spreads start times.
//!
//! A *slot* is one time the expression names (in UTC, seconds zero). The built-in scheduler
//! starts the slot at `slot + offset`; the offset comes from the inspection id, so it is the
//! same on every instance and after every restart, and a hundred hourly inspections start
//! spread over the first minute of the hour rather than in its first second.

use std::str::FromStr;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A parsed `schedule` and `schedule_timezone`.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("must be a 5-field cron expression (minute hour day-of-month month day-of-week), e.g. `0 * * * *`: {0}")]
    Cron(String),
    #[error("never matches a date (e.g. 30 February)")]
    Never,
    #[error("must be an IANA time zone name such as `UTC` or `Asia/Shanghai`")]
    TimeZone,
}

impl ScheduleError {
    /// The inspection field the problem is in.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Cron(_) | ScheduleError::Never => "schedule",
            ScheduleError::TimeZone => "schedule_timezone",
        }
    }
}

impl Schedule {
    /// Validates a schedule as written by a user: [`Self::compile`], and it must fire.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let schedule = Self::compile(expression, timezone)?;
        // `0 0 30 2 *` parses but never fires; say so now rather than never run.
        if schedule.next_slot_after(Utc::now()).is_none() {
            return Err(ScheduleError::Never);
        }
        Ok(schedule)
    }

    /// Reads a schedule without asking whether it ever fires: for schedules already
    /// validated and stored, read on every scheduler tick and for every listed inspection.
    pub fn compile(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz = Tz::from_str(timezone.trim()).map_err(|_| ScheduleError::TimeZone)?;
        let expression = expression.trim();
        // Func's crontab has no seconds and no years; a sixth field is a mistake, not a wish.
        if expression.split_whitespace().count() != 5 && !expression.starts_with('@') {
            return Err(ScheduleError::Cron(format!("it has {} fields", expression.split_whitespace().count())));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| ScheduleError::Cron(e.to_string()))?;
        Ok(Schedule { cron, tz })
    }

    /// The first slot strictly after `t`.
    pub fn next_slot_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_next_occurrence(&local, false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The last slot at or before `t`.
    pub fn last_slot_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron.find_previous_occurrence(&local, true).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The slot due at `now` for an inspection with this `offset`: the newest slot whose start
    /// (`slot + offset`) has come. Older missed slots are never returned: one run covers
    /// everything since the last through the watermark.
    pub fn due_slot(&self, offset: TimeDelta, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.last_slot_at_or_before(now - offset)
    }

    /// When the next slot starts: the first `slot + offset` strictly after `now`.
    pub fn next_start_after(&self, offset: TimeDelta, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_slot_after(now - offset).map(|s| s + offset)
    }
}

/// The stable offset in `[0, spread)` whole seconds of one inspection's start times.
pub fn spread_offset(inspection_id: Uuid, spread_secs: u64) -> TimeDelta {
    if spread_secs == 0 {
        return TimeDelta::zero();
    }
    let digest = Sha256::digest(inspection_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    TimeDelta::seconds((u64::from_be_bytes(first) % spread_secs) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, s).unwrap()
    }

    #[test]
    fn expressions_and_zones_are_validated() {
        for (expr, tz, ok) in [
            ("0 * * * *", "UTC", Ok(())),
            ("*/15 8-18 * * mon-fri", "Asia/Shanghai", Ok(())),
            ("@hourly", "UTC", Ok(())),
            ("0 0 1 * *", "America/New_York", Ok(())),
            ("0 * * *", "UTC", Err("schedule")),
            ("0 0 * * * *", "UTC", Err("schedule")),
            ("61 * * * *", "UTC", Err("schedule")),
            ("hourly", "UTC", Err("schedule")),
            ("", "UTC", Err("schedule")),
            ("0 0 30 2 *", "UTC", Err("schedule")),
            ("0 * * * *", "Mars/Olympus", Err("schedule_timezone")),
            ("0 * * * *", "", Err("schedule_timezone")),
        ] {
            let got = Schedule::parse(expr, tz).map(|_| ()).map_err(|e| e.field());
            assert_eq!(got, ok, "{expr:?} in {tz:?}");
        }
    }

    #[test]
    fn the_due_slot_is_the_newest_started_one() {
        let hourly = Schedule::parse("0 * * * *", "UTC").unwrap();
        let off = TimeDelta::seconds(17);
        // Before the offset has passed, the previous hour is still the due one.
        assert_eq!(hourly.due_slot(off, at(1, 10, 0, 16)), Some(at(1, 9, 0, 0)));
        assert_eq!(hourly.due_slot(off, at(1, 10, 0, 17)), Some(at(1, 10, 0, 0)));
        assert_eq!(hourly.due_slot(off, at(1, 10, 59, 59)), Some(at(1, 10, 0, 0)));
        // After five hours down, only the newest slot is due.
        assert_eq!(hourly.due_slot(off, at(1, 15, 30, 0)), Some(at(1, 15, 0, 0)));
        assert_eq!(hourly.next_start_after(off, at(1, 10, 0, 16)), Some(at(1, 10, 0, 17)));
        assert_eq!(hourly.next_start_after(off, at(1, 10, 0, 17)), Some(at(1, 11, 0, 17)));
        // Sub-second times do not shift slots.
        let t = at(1, 10, 0, 17) + TimeDelta::milliseconds(400);
        assert_eq!(hourly.due_slot(off, t), Some(at(1, 10, 0, 0)));
    }

    #[test]
    fn schedules_are_read_in_their_time_zone() {
        // 08:00 in Shanghai is 00:00 UTC.
        let daily = Schedule::parse("0 8 * * *", "Asia/Shanghai").unwrap();
        assert_eq!(daily.next_slot_after(at(1, 12, 0, 0)), Some(at(2, 0, 0, 0)));
        assert_eq!(daily.last_slot_at_or_before(at(1, 12, 0, 0)), Some(at(1, 0, 0, 0)));
    }

    #[test]
    fn offsets_are_stable_and_within_the_spread() {
        let ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        let offsets: Vec<i64> = ids.iter().map(|id| spread_offset(*id, 60).num_seconds()).collect();
        assert!(offsets.iter().all(|o| (0..60).contains(o)));
        assert_eq!(offsets, ids.iter().map(|id| spread_offset(*id, 60).num_seconds()).collect::<Vec<_>>());
        let distinct: std::collections::BTreeSet<i64> = offsets.iter().copied().collect();
        assert!(distinct.len() > 40, "200 inspections use most of a minute: {}", distinct.len());
        assert_eq!(spread_offset(ids[0], 0), TimeDelta::zero());
        assert_eq!(spread_offset(ids[0], 1), TimeDelta::zero());
    }
}
