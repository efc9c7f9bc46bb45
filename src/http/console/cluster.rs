//! A cluster: what the error is (template, error code, API), its level and CIS rules, its
//! counts run after run, who made the calls and from where, and one full CloudTrail record.

use axum::Extension;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::chart::{self, Bar};
use super::inspection::tops;
use super::view::{self, api, level_badge, maybe_when, num, stored_rules, when};
use super::{Access, PageError, PageResult, parse_id};
use crate::http::AppState;
use crate::model::cluster::ClusterView;
use crate::model::inspection::Inspection;

/// Runs drawn in the counts chart.
const OCCURRENCES: i64 = 120;

pub async fn page(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> PageResult {
    let now = Utc::now();
    let id = parse_id(&id, "cluster")?;
    let c = state.store.get_cluster(id).await?.ok_or(PageError::NotFound("cluster"))?;
    let inspection = state.store.get_inspection(c.inspection_id).await?;
    let (level, rules) = (c.level, stored_rules(&c.cis_rules));
    let occurrences = state.store.cluster_occurrences(id, OCCURRENCES).await?;
    let bars: Vec<Bar> = occurrences
        .iter()
        .rev()
        .map(|o| Bar {
            value: o.count,
            tip: format!(
                "{}: {} records",
                o.window_end.unwrap_or(o.run_created_at).format("%Y-%m-%d %H:%M"),
                num(o.count)
            ),
            href: Some(format!("/console/runs/{}", o.run_id)),
            class: None,
        })
        .collect();
    let label = |o: Option<&crate::store::ClusterOccurrence>| {
        o.map(|o| o.window_end.unwrap_or(o.run_created_at).format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default()
    };
    let record = c.sample_record.as_ref().map(|r| serde_json::to_string_pretty(r).unwrap_or_default());
    let title = format!("{} on {} {}", c.identity.error_code, c.identity.event_source, c.identity.event_name);
    let body = html! {
        h1 { code { (c.identity.error_code) } " on " (api(&c.identity)) " " (level_badge(level)) }
        p.template { code { (c.identity.template) } }
        (facts(&c, inspection.as_ref(), &rules, now))
        section {
            h2 { "Counts over time" }
            @if bars.is_empty() { p.muted { "No run has recorded this cluster's counts." } }
            @else {
                (chart::bars(&format!("Records per run (last {} runs that found it)", bars.len()), &bars, &label(occurrences.last()), &label(occurrences.first())))
            }
        }
        section { h2 { "Who and from where" } (tops(&c.top_principals, &c.top_source_ips)) }
        section {
            h2 { "Sample" }
            p { "Message: " code { (c.sample_message) } }
            @if !c.sample_event_ids.is_empty() {
                p { "Event ids: " @for e in &c.sample_event_ids { code { (e) } " " } }
            }
            @match &record {
                Some(r) => { h3 { "One full CloudTrail record" } pre.record { (r) } }
                None => p.muted { "No full record is kept for this cluster (Logs Insights runs keep none)." },
            }
        }
    };
    Ok(view::page(&title, &access, body))
}

fn facts(
    c: &ClusterView,
    inspection: Option<&Inspection>,
    rules: &[&'static crate::engine::rules::Rule],
    now: DateTime<Utc>,
) -> Markup {
    html! {
        dl.facts {
            dt { "Inspection" }
            dd {
                @match inspection {
                    Some(i) => a href={ "/console/inspections/" (i.id) } { (i.name) },
                    None => span.muted { "(deleted)" },
                }
            }
            dt { "CIS rules" }
            dd {
                @if rules.is_empty() { span.muted { "none" } }
                ul.plain { @for r in rules { li { span.rule { (r.id) } " " (r.title) } } }
            }
            dt { "Account, region" } dd { code { (c.identity.account_id) } " " code { (c.identity.region) } }
            dt { "Records" } dd { (num(c.total_count)) " across all runs" }
            dt { "First seen" } dd { (when(now, c.first_seen)) " (" (view::utc(c.first_seen)) ")" }
            dt { "Last seen" } dd { (when(now, c.last_seen)) " (" (view::utc(c.last_seen)) ")" }
            dt { "Discovered" }
            dd {
                (when(now, c.discovered_at))
                @if c.baseline { " from the baseline read" }
                @if let Some(r) = c.discovered_run_id { " by run " a href={ "/console/runs/" (r) } { code { (view::short_id(r)) } } }
            }
            dt { "Last run" }
            dd {
                @match c.last_run_id {
                    Some(r) => a href={ "/console/runs/" (r) } { code { (view::short_id(r)) } },
                    None => (maybe_when(now, None)),
                }
            }
            dt { "Fingerprint" } dd { code { (c.identity.fingerprint) } }
        }
    }
}
