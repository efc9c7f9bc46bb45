//! What the runner's unit tests share: inspections as the API would create them, and times.

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::model::inspection::{AwsSecrets, Inspection, InspectionDraft, NewInspection};

/// An inspection from the JSON a client would post, validated as the API validates it.
pub fn inspection(json: serde_json::Value) -> Inspection {
    let input: NewInspection = serde_json::from_value(json).unwrap();
    let d = InspectionDraft::from_new(input).unwrap();
    Inspection {
        id: Uuid::nil(),
        name: d.name,
        description: d.description,
        enabled: d.enabled,
        settings: d.settings,
        secrets: AwsSecrets::default(),
        secrets_error: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        last_run: None,
        trigger_id: None,
        guance: crate::model::event::GuanceSync {
            state: "pending".into(),
            checker_id: None,
            ref_key: String::new(),
            error: None,
            synced_at: None,
            last_pulled_at: None,
            last_change: None,
        },
    }
}

/// An inspection of log group `g` with every other setting at its default.
pub fn base() -> Inspection {
    inspection(serde_json::json!({"name": "n", "log_groups": ["g"], "aws": {"region": "us-east-1"}}))
}

/// A time on the day the tests happen on.
pub fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
}
