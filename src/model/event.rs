//! Guance events as the API shows them: what was (or would have been) sent, and how its
//! delivery went.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where an event is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// Guance accepted it.
    Sent,
    /// Guance refused it (a 4xx such as a bad token); not retried. See `last_error`.
    Failed,
    /// Still undelivered when it expired (Guance down longer than the expiry).
    Expired,
    /// Recorded only: a dry run, or Guance not configured. See `delivery_note`. (Silent
    /// events are sent: Guance keeps them in its history with `df_is_silent = "true"`.)
    NotSent,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
            DeliveryState::Expired => "expired",
            DeliveryState::NotSent => "not_sent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "sent" => DeliveryState::Sent,
            "failed" => DeliveryState::Failed,
            "expired" => DeliveryState::Expired,
            "not_sent" => DeliveryState::NotSent,
            _ => return None,
        })
    }
}

/// An event of a run for one cloud account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    /// `df_event_id`.
    pub event_id: String,
    pub inspection_id: Uuid,
    pub run_id: Uuid,
    pub account_id: String,
    /// `df_status`: `ok` (a recovery), `info`, `warning`, `error` or `critical`.
    pub status: String,
    pub title: String,
    /// `df_is_silent`: written to Guance's history without notifying (a silence period, a
    /// level not notified).
    pub is_silent: bool,
    pub delivery_state: DeliveryState,
    /// Why it was not sent (`not_sent`), or why it is silent.
    pub delivery_note: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `df_fault_id`: the fault this event belongs to.
    pub fault_id: Option<String>,
    /// When the fault began (the anomaly time).
    pub anomaly_time: Option<DateTime<Utc>>,
    /// When the fault ended, on a recovery (`ok`) event.
    pub recovery_time: Option<DateTime<Utc>>,
    /// Seconds from the fault's start to this event.
    pub duration_secs: Option<i64>,
    /// The whole event as sent (all `df_*` fields, the markdown message); only on
    /// `GET /api/v1/events/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event: Option<serde_json::Value>,
}

/// The registration of an inspection in Guance, kept in sync both ways: changes made here
/// are pushed, changes made in Guance studio (configs, alert policies, enabled) adopted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GuanceSync {
    /// `synced`, `pending` (waiting or retrying), `failed` (refused; see `error`),
    /// `deleted_in_guance` (the checker was deleted in Guance; the inspection stays, and is
    /// registered again by `POST /api/v1/inspections/{id}/guance/register`) or
    /// `not_configured` (the service has no Guance settings).
    pub state: String,
    /// `rul_…`: the self-built inspection's id in Guance.
    pub checker_id: Option<String>,
    /// The key the inspection is registered under (`refKey`).
    pub ref_key: String,
    pub error: Option<String>,
    pub synced_at: Option<DateTime<Utc>>,
    /// When Guance's copy was last read back (before each run, and periodically).
    #[serde(default)]
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// The last change made in Guance studio and adopted here.
    #[serde(default)]
    pub last_change: Option<GuanceChange>,
}

/// A change of an inspection that came from Guance studio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GuanceChange {
    /// When it was adopted here.
    pub at: DateTime<Utc>,
    /// Where the change was made: `guance`.
    pub changed_by: String,
    /// What changed: `configs`, `alert_policy`, `enabled`.
    pub fields: Vec<String>,
    /// Guance's `updateAt` of the checker when the change was read.
    pub guance_updated_at: Option<DateTime<Utc>>,
}
