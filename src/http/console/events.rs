//! The history of events: every event the runs recorded, sent to Guance or not (so it is
//! there with or without Guance), filtered by inspection, cloud account and time range; and
//! one event with its message and the events related to it.

use axum::Extension;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::inspection::event_table;
use super::run::urlencode;
use super::view::{self, badge, maybe_when, when};
use super::{Access, PageError, PageResult, parse_id};
use crate::http::AppState;
use crate::model::event::EventView;
use crate::store::{EventFilter, TimeKey, decode_cursor, encode_cursor};

const PAGE: i64 = 100;
/// Related events listed per kind.
const RELATED: i64 = 50;
/// The range related events are looked for in, either side of the event, unless chosen.
const RELATED_DAYS: i64 = 7;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    inspection: Option<String>,
    account: Option<String>,
    /// `YYYY-MM-DDTHH:MM` (a datetime-local input) or RFC 3339, UTC.
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
}

/// A time from a form field, read as UTC.
fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let s = s?.trim();
    if s.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .or_else(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
            .map(|t| t.and_utc())
    })
}

fn input_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%dT%H:%M").to_string()).unwrap_or_default()
}

/// The range form: plain GET fields, so it works without script.
/// `with_account`: whether the account is chosen here (the list) or given (an event's page).
fn range_form(
    action: &str,
    p: &Params,
    with_account: bool,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            @if let Some(i) = &p.inspection { input type="hidden" name="inspection" value=(i); }
            @if with_account {
                label { "Account " input type="text" name="account" value=(p.account.clone().unwrap_or_default()) size="14"; }
            }
            label { "From (UTC) " input type="datetime-local" name="since" value=(input_time(since)); }
            label { "To (UTC) " input type="datetime-local" name="until" value=(input_time(until)); }
            button type="submit" { "Show" }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Query(p): Query<Params>,
) -> PageResult {
    let now = Utc::now();
    let inspection_id = match p.inspection.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_id(s, "inspection")?),
        None => None,
    };
    let inspection = match inspection_id {
        Some(id) => Some(state.store.get_inspection(id).await?.ok_or(PageError::NotFound("inspection"))?),
        None => None,
    };
    let (since, until) = (parse_time(p.since.as_deref()), parse_time(p.until.as_deref()));
    let account = p.account.clone().filter(|a| !a.trim().is_empty()).map(|a| a.trim().to_string());
    let filter = EventFilter { inspection_id, account_id: account, since, until };
    let after: Option<TimeKey> = p.cursor.as_deref().and_then(decode_cursor);
    let mut events = state.store.search_events(&filter, after, PAGE + 1).await?;
    let more = events.len() as i64 > PAGE;
    events.truncate(PAGE as usize);
    let next = more.then(|| events.last().map(|e| encode_cursor(&(e.created_at, e.id)))).flatten();
    let next_href = next.map(|c| {
        let mut q: Vec<(&str, String)> = vec![("cursor", c)];
        for (k, v) in [("inspection", &p.inspection), ("account", &p.account), ("since", &p.since), ("until", &p.until)]
        {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        format!("/console/events?{}", serde_urlencoded::to_string(&q).unwrap_or_default())
    });
    let body = html! {
        h1 {
            "Events"
            @if let Some(i) = &inspection { " of " a href={ "/console/inspections/" (i.id) } { (i.name) } }
        }
        p.muted {
            "Every event the runs recorded: sent to Guance, or recorded only (silenced, a level not notified, "
            "a dry run, or no Guance configured). Newest first."
        }
        (range_form("/console/events", &p, true, since, until))
        (event_table(&events, now))
        @if let Some(href) = next_href { p { a href=(href) { "Older events →" } } }
    };
    Ok(view::page("Events", &access, body))
}

pub async fn page(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    Query(p): Query<Params>,
) -> PageResult {
    let now = Utc::now();
    let id = parse_id(&id, "event")?;
    let e = state.store.get_event(id).await?.ok_or(PageError::NotFound("event"))?;
    let inspection = state.store.get_inspection(e.inspection_id).await?;
    let since = parse_time(p.since.as_deref()).unwrap_or(e.created_at - Duration::days(RELATED_DAYS));
    let until = parse_time(p.until.as_deref()).unwrap_or(e.created_at + Duration::days(RELATED_DAYS));
    let dimension = EventFilter {
        inspection_id: Some(e.inspection_id),
        account_id: Some(e.account_id.clone()),
        since: Some(since),
        until: Some(until),
    };
    let same_dimension = related(&state, &dimension, e.id).await?;
    let account = EventFilter { inspection_id: None, ..dimension };
    let same_account: Vec<EventView> =
        related(&state, &account, e.id).await?.into_iter().filter(|r| r.inspection_id != e.inspection_id).collect();
    let message = e.event.as_ref().and_then(|v| v["message"].as_str()).unwrap_or_default().to_string();
    let name = inspection.as_ref().map(|i| i.name.clone()).unwrap_or_else(|| "(deleted inspection)".into());
    let form_params = Params { account: None, inspection: None, ..p };
    let body = html! {
        h1 { (badge(&e.status)) " " (e.title) }
        dl.facts {
            dt { "Inspection" } dd { a href={ "/console/inspections/" (e.inspection_id) } { (name) } }
            dt { "Run" } dd { a href={ "/console/runs/" (e.run_id) } { code { (view::short_id(e.run_id)) } } }
            dt { "Account" } dd { code { (e.account_id) } }
            dt { "Created" } dd { (when(now, e.created_at)) " (" (view::utc(e.created_at)) ")" }
            dt { "Anomaly since" } dd { (maybe_when(now, e.anomaly_time)) }
            dt { "Recovered" } dd { (maybe_when(now, e.recovery_time)) }
            dt { "Duration" } dd { @if let Some(d) = e.duration_secs { (view::duration(d)) } @else { span.muted { "—" } } }
            dt { "Silenced" } dd { @if e.is_silent { "yes: recorded within a silence, not sent" } @else { "no" } }
            dt { "Delivery" }
            dd {
                (badge(e.delivery_state.as_str()))
                @if let Some(n) = &e.delivery_note { " " (n) }
                " · " (e.attempts) " attempts"
                @if let Some(t) = e.sent_at { " · sent " (when(now, t)) }
                @if let Some(err) = &e.last_error { p.bad-text { (err) } }
            }
            @if let Some(f) = &e.fault_id { dt { "Fault" } dd { code { (f) } } }
            dt { "Event id" } dd { code { (e.event_id) } }
        }
        section {
            h2 { "Message" }
            p.muted { "As written to Guance (markdown)." }
            pre.message { (message) }
        }
        section {
            h2 { "Related events" }
            (range_form(&format!("/console/events/{}", e.id), &form_params, false, Some(since), Some(until)))
            h3 { "Same inspection and account" }
            (event_table(&same_dimension, now))
            h3 { "Same account, other inspections" }
            (event_table(&same_account, now))
            p {
                a href={ "/console/events?account=" (urlencode(&e.account_id)) "&since=" (input_time(Some(since))) "&until=" (input_time(Some(until))) } {
                    "All events of this account in this range →"
                }
            }
        }
    };
    Ok(view::page(&e.title, &access, body))
}

async fn related(state: &AppState, filter: &EventFilter, except: Uuid) -> Result<Vec<EventView>, PageError> {
    let rows = state.store.search_events(filter, None, RELATED + 1).await?;
    Ok(rows.into_iter().filter(|r| r.id != except).take(RELATED as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_forms_are_utc() {
        let want = "2026-01-02T03:04:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(parse_time(Some("2026-01-02T03:04")), Some(want));
        assert_eq!(parse_time(Some("2026-01-02T04:04:00+01:00")), Some(want));
        assert_eq!(parse_time(Some("2026-01-02")), Some(want - Duration::minutes(184)));
        assert_eq!(parse_time(Some("yesterday")), None);
        assert_eq!(parse_time(Some("")), None);
    }
}
