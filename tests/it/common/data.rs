//! The real CloudTrail records in `tests/data/cloudtrail` (sources and licenses in its
//! PROVENANCE.md), and helpers to move them in time.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub fn records_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cloudtrail")
}

/// Every record of the invictus-ir set (one real account, about an hour), in file order.
pub fn invictus() -> Vec<Value> {
    let dir = records_dir().join("invictus-ir/CloudTrail");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("invictus dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        out.extend(doc["Records"].as_array().expect("Records").iter().cloned());
    }
    out
}

/// The panther-analysis rule fixtures, one record a line (odd values included).
pub fn panther() -> Vec<Value> {
    let text = std::fs::read_to_string(records_dir().join("panther-analysis/events.jsonl")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The stratus-red-team detonation logs (JSON arrays).
pub fn stratus() -> Vec<Value> {
    let dir = records_dir().join("stratus-red-team");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|f| {
            let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            v.as_array().cloned().unwrap_or_default()
        })
        .collect()
}

pub fn event_time(r: &Value) -> Option<DateTime<Utc>> {
    r["eventTime"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|d| d.with_timezone(&Utc))
}

/// Moves records in time so the earliest lands on `start`, keeping their spacing; returns
/// CloudWatch Logs events (timestamp = eventTime, as CloudTrail delivers them).
pub fn shift_to(records: &[Value], start: DateTime<Utc>) -> Vec<(i64, String)> {
    let earliest = records.iter().filter_map(event_time).min().expect("records with times");
    let delta = start - earliest;
    records
        .iter()
        .filter_map(|r| {
            let t = event_time(r)? + delta;
            let mut r = r.clone();
            r["eventTime"] = Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            Some((t.timestamp_millis(), serde_json::to_string(&r).unwrap()))
        })
        .collect()
}

/// Whether a record is an error record by the service's definition (errorCode, or a failed
/// console sign-in), computed independently of the engine.
pub fn is_error(r: &Value) -> bool {
    r["errorCode"].as_str().is_some_and(|c| !c.is_empty())
        || (r["eventName"] == "ConsoleLogin"
            && (r["responseElements"]["ConsoleLogin"] == "Failure" || r["errorMessage"] == "Failed authentication"))
}
