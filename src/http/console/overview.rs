//! The overview: every inspection, whether it is working (its last run and how long ago),
//! when it runs next, what it found in the last day, and its registration in Guance.

use axum::Extension;
use axum::extract::{Query, State};
use chrono::{Duration, Utc};
use maud::html;
use serde::Deserialize;

use super::view::{self, badge, maybe_when, num, when};
use super::{Access, PageResult};
use crate::http::AppState;
use crate::model::inspection::Inspection;
use crate::store::{InspectionFilter, TimeKey, decode_cursor, encode_cursor};

/// Inspections per page.
const PAGE: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct Params {
    cursor: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Query(params): Query<Params>,
) -> PageResult {
    let now = Utc::now();
    let after: Option<TimeKey> = params.cursor.as_deref().and_then(decode_cursor);
    let mut inspections = state.store.list_inspections(&InspectionFilter::default(), after, PAGE + 1).await?;
    let more = inspections.len() as i64 > PAGE;
    inspections.truncate(PAGE as usize);
    let ids: Vec<uuid::Uuid> = inspections.iter().map(|i| i.id).collect();
    let new_24h = state.store.new_cluster_counts(&ids, now - Duration::hours(24)).await?;
    let failing = inspections
        .iter()
        .filter(|i| i.last_run.as_ref().is_some_and(|r| matches!(r.status.as_str(), "failed" | "partial")))
        .count();
    let next_cursor = more.then(|| inspections.last().map(|i| encode_cursor(&(i.created_at, i.id)))).flatten();
    let guance_state = |i: &Inspection| {
        if state.settings.guance_configured { i.guance.state.clone() } else { "not_configured".into() }
    };
    let body = html! {
        h1 { "Inspections" }
        p.summary {
            (inspections.len()) " inspections, " (inspections.iter().filter(|i| i.enabled).count()) " enabled"
            @if failing > 0 { ", " span.bad-text { (failing) " whose last run failed or was partial" } }
            ". New clusters: " (num(new_24h.values().sum::<i64>())) " in the last 24 hours."
        }
        @if inspections.is_empty() {
            p { "No inspections yet. Register one with " code { "POST /api/v1/inspections" } " (see " a href="/swagger-ui/" { "the API" } ")." }
        } @else {
            table.list {
                thead { tr {
                    th { "Inspection" } th { "Enabled" } th { "Schedule" } th { "Last run" } th { "Next run" }
                    th.n { "New clusters (24 h)" } th { "Guance" }
                } }
                tbody {
                    @for i in &inspections {
                        tr {
                            td { a href={ "/console/inspections/" (i.id) } { (i.name) } }
                            td { @if i.enabled { (badge("enabled")) } @else { (badge("disabled")) } }
                            td { code { (i.settings.schedule) } " " span.muted { (i.settings.schedule_timezone) } }
                            td.last-run {
                                @match &i.last_run {
                                    Some(r) => {
                                        a href={ "/console/runs/" (r.id) } { (badge(r.status.as_str())) }
                                        " "
                                        @match r.finished_at {
                                            Some(t) => (when(now, t)),
                                            None => span.muted { "in progress" },
                                        }
                                    }
                                    None => span.muted { "never run" },
                                }
                            }
                            td { (maybe_when(now, crate::scheduler::next_run_at(i, state.settings.schedule, now))) }
                            td.n { (num(new_24h.get(&i.id).copied().unwrap_or(0))) }
                            td { (badge(&guance_state(i))) }
                        }
                    }
                }
            }
            @if let Some(c) = next_cursor { p { a href={ "/console?cursor=" (c) } { "More inspections →" } } }
        }
    };
    Ok(view::page("Overview", &access, body))
}
