//! Time at the precision the store keeps.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// Truncates to microseconds, the precision both backends keep, so a value reads back equal.
pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// Now, at stored precision.
pub fn now() -> DateTime<Utc> {
    micros(Utc::now())
}
