//! An inspection: its settings in brief, its runs over time as a chart, the clusters it
//! knows (newest discoveries first, with level and CIS rules), its access keys and events.

use axum::Extension;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::chart::{self, Bar};
use super::view::{self, api, badge, counted, cut, level_badge, maybe_when, num, rule_list, stored_rules, when};
use super::{Access, PageError, PageResult, parse_id};
use crate::http::AppState;
use crate::model::cluster::ClusterView;
use crate::model::event::EventView;
use crate::model::inspection::{Inspection, SourceSettings, s3_url};
use crate::model::run::Run;
use crate::store::{ClusterFilter, RunFilter, TimeKey, decode_cursor, encode_cursor};

/// Runs drawn in the chart.
const CHART_RUNS: i64 = 120;
/// Runs listed under the chart.
const LISTED_RUNS: usize = 15;
const CLUSTERS: i64 = 50;
const KEYS: i64 = 25;
const EVENTS: i64 = 10;

#[derive(Debug, Deserialize)]
pub struct Params {
    /// Page of the cluster list.
    clusters: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> PageResult {
    let now = Utc::now();
    let id = parse_id(&id, "inspection")?;
    let store = &state.store;
    let i = store.get_inspection(id).await?.ok_or(PageError::NotFound("inspection"))?;
    let runs =
        store.list_runs(&RunFilter { inspection_id: Some(id), ..RunFilter::default() }, None, CHART_RUNS).await?;
    let after: Option<TimeKey> = params.clusters.as_deref().and_then(decode_cursor);
    let mut clusters = store.list_clusters(id, &ClusterFilter::default(), after, CLUSTERS + 1).await?;
    let more_clusters = clusters.len() as i64 > CLUSTERS;
    clusters.truncate(CLUSTERS as usize);
    let next = more_clusters.then(|| clusters.last().map(|c| encode_cursor(&(c.discovered_at, c.id)))).flatten();
    let keys = store.list_access_keys(id, None, KEYS).await?;
    let events = store.list_events(id, None, EVENTS).await?;
    let next_run = crate::scheduler::next_run_at(&i, state.settings.schedule, now);
    let guance = if state.settings.guance_configured { i.guance.state.as_str() } else { "not_configured" };

    let body = html! {
        h1 { (i.name) " " @if i.enabled { (badge("enabled")) } @else { (badge("disabled")) } }
        @if !i.description.is_empty() { p { (i.description) } }
        (facts(&i, now, next_run, guance))
        section {
            h2 { "Runs over time" }
            (run_charts(&runs))
            (run_table(&runs, now))
        }
        section {
            h2 { "Clusters" }
            (cluster_table(&clusters, now))
            @if let Some(c) = next { p { a href={ "/console/inspections/" (id) "?clusters=" (c) } { "Older clusters →" } } }
        }
        section {
            h2 { "Access keys" }
            (keys_table(&keys, now))
        }
        section {
            h2 { "Events" }
            (event_table(&events, now))
            p { a href={ "/console/events?inspection=" (id) } { "All events of this inspection →" } }
        }
    };
    Ok(view::page(&i.name, &access, body))
}

fn facts(i: &Inspection, now: DateTime<Utc>, next_run: Option<DateTime<Utc>>, guance: &str) -> Markup {
    let s = &i.settings;
    html! {
        dl.facts {
            dt { "Reads" }
            dd {
                @match &s.source {
                    SourceSettings::Files { path } => { "files under " code { (path) } }
                    SourceSettings::S3 { bucket, prefix, .. } => { "CloudTrail's files in " code { (s3_url(bucket, prefix)) } }
                    SourceSettings::CloudwatchLogs => { "log groups " @for g in &s.log_groups { code { (g) } " " } }
                }
                " in " code { (s.aws.region) }
            }
            dt { "Schedule" } dd { code { (s.schedule) } " " span.muted { (s.schedule_timezone) } }
            dt { "Last run" }
            dd {
                @match &i.last_run {
                    Some(r) => {
                        a href={ "/console/runs/" (r.id) } { (badge(r.status.as_str())) } " "
                        (maybe_when(now, r.finished_at))
                    }
                    None => span.muted { "never run" },
                }
            }
            dt { "Next run" } dd { (maybe_when(now, next_run)) }
            dt { "Guance" }
            dd {
                (badge(guance))
                @if let Some(c) = &i.guance.checker_id { " " code { (c) } }
                @if let Some(e) = &i.guance.error { " " span.bad-text { (e) } }
            }
        }
    }
}

fn run_charts(runs: &[Run]) -> Markup {
    if runs.is_empty() {
        return html! { p.muted { "No runs yet." } };
    }
    // Oldest first, left to right.
    let ordered: Vec<&Run> = runs.iter().rev().collect();
    let label = |r: &Run| r.window_end.unwrap_or(r.created_at).format("%Y-%m-%d %H:%M").to_string();
    let first = label(ordered[0]);
    let last = label(ordered[ordered.len() - 1]);
    let bar = |r: &Run, value: i64, what: &str| Bar {
        value,
        tip: format!("{}: {} {what} ({})", label(r), num(value), r.status.as_str()),
        href: Some(format!("/console/runs/{}", r.id)),
        class: matches!(r.status.as_str(), "failed" | "partial" | "interrupted").then_some("failed"),
    };
    let errors: Vec<Bar> = ordered.iter().map(|r| bar(r, r.error_records, "error records")).collect();
    let new: Vec<Bar> = ordered.iter().map(|r| bar(r, r.clusters_new, "new clusters")).collect();
    html! {
        (chart::bars(&format!("Error records per run (last {} runs)", ordered.len()), &errors, &first, &last))
        (chart::bars("New clusters per run", &new, &first, &last))
    }
}

fn run_table(runs: &[Run], now: DateTime<Utc>) -> Markup {
    html! {
        @if !runs.is_empty() {
            table.list {
                thead { tr {
                    th { "Run" } th { "Status" } th { "Finished" } th { "Window" } th.n { "Records" }
                    th.n { "Error records" } th.n { "New clusters" }
                } }
                tbody {
                    @for r in runs.iter().take(LISTED_RUNS) {
                        tr {
                            td { a href={ "/console/runs/" (r.id) } { code { (view::short_id(r.id)) } } }
                            td { (badge(r.status.as_str())) }
                            td { (maybe_when(now, r.finished_at)) }
                            td { (window(r.window_start, r.window_end)) }
                            td.n { (num(r.records_scanned)) }
                            td.n { (num(r.error_records)) }
                            td.n { (num(r.clusters_new)) }
                        }
                    }
                }
            }
        }
    }
}

pub fn window(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Markup {
    let fmt = |t: Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%d %H:%M").to_string()).unwrap_or("…".into());
    html! { span.nowrap { (fmt(start)) " – " (fmt(end)) } }
}

fn cluster_table(clusters: &[ClusterView], now: DateTime<Utc>) -> Markup {
    html! {
        @if clusters.is_empty() { p.muted { "No clusters yet." } }
        @else {
            table.list {
                thead { tr {
                    th { "Discovered" } th { "Level" } th { "CIS rules" } th { "Error" } th { "API" } th { "Account" }
                    th { "Template" } th.n { "Count" } th { "First seen" } th { "Last seen" }
                } }
                tbody {
                    @for c in clusters {
                        @let (level, rules) = (c.level, stored_rules(&c.cis_rules));
                        tr {
                            td {
                                (when(now, c.discovered_at))
                                @if c.baseline { " " span.tag { "baseline" } } @else { " " span.tag.new { "new" } }
                            }
                            td { (level_badge(level)) }
                            td { (rule_list(&rules)) }
                            td { a href={ "/console/clusters/" (c.id) } { code { (c.identity.error_code) } } }
                            td { (api(&c.identity)) }
                            td { code { (c.identity.account_id) } " " span.muted { (c.identity.region) } }
                            td.template { (cut(&c.identity.template, 120)) }
                            td.n { (num(c.total_count)) }
                            td { (when(now, c.first_seen)) }
                            td { (when(now, c.last_seen)) }
                        }
                    }
                }
            }
        }
    }
}

pub fn keys_table(keys: &[crate::model::cluster::AccessKeyView], now: DateTime<Utc>) -> Markup {
    html! {
        @if keys.is_empty() { p.muted { "No access key activity seen." } }
        @else {
            table.list {
                thead { tr {
                    th { "Access key" } th { "Principal" } th { "Last activity" } th { "Last call" }
                    th { "From" } th.n { "Events" }
                } }
                tbody {
                    @for k in keys {
                        tr {
                            td { code { (k.access_key_id) } }
                            td { code { (k.principal_arn) } }
                            td { (when(now, k.last_seen)) }
                            td { code { (k.last_event_name) } }
                            td { code { (k.last_source_ip) } }
                            td.n { (num(k.total_events)) }
                        }
                    }
                }
            }
        }
    }
}

pub fn event_table(events: &[EventView], now: DateTime<Utc>) -> Markup {
    html! {
        @if events.is_empty() { p.muted { "No events." } }
        @else {
            table.list {
                thead { tr {
                    th { "Created" } th { "Status" } th { "Account" } th { "Title" } th { "Anomaly since" }
                    th { "Recovered" } th { "Duration" } th { "Silenced" } th { "Delivery" }
                } }
                tbody {
                    @for e in events {
                        tr {
                            td { a href={ "/console/events/" (e.id) } { (when(now, e.created_at)) } }
                            td { (badge(&e.status)) }
                            td { code { (e.account_id) } }
                            td { (cut(&e.title, 140)) }
                            td { (maybe_when(now, e.anomaly_time)) }
                            td { (maybe_when(now, e.recovery_time)) }
                            td { @if let Some(d) = e.duration_secs { (view::duration(d)) } @else { span.muted { "—" } } }
                            td { @if e.is_silent { "silenced" } @else { span.muted { "no" } } }
                            td { (badge(e.delivery_state.as_str())) }
                        }
                    }
                }
            }
        }
    }
}

/// Top principals and source IPs side by side.
pub fn tops(principals: &[crate::model::cluster::Counted], ips: &[crate::model::cluster::Counted]) -> Markup {
    html! {
        div.cols {
            div { h3 { "Top principals" } (counted(principals)) }
            div { h3 { "Top source IPs" } (counted(ips)) }
        }
    }
}
