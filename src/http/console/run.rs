//! A run: its window, each log group's outcome and warnings, its counters, and the parts of
//! its report (accounts, access keys, new clusters, events), then every cluster it found.

use axum::Extension;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::inspection::{keys_table, window};
use super::view::{self, api, badge, cut, level_badge, maybe_when, num, rule_list, stored_rules, when};
use super::{Access, PageError, PageResult, parse_id};
use crate::http::AppState;
use crate::model::cluster::ClusterSummary;
use crate::model::run::{Run, RunReport};

/// Clusters of the run listed (new first, then the largest).
const CLUSTERS: i64 = 100;

pub async fn page(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> PageResult {
    let now = Utc::now();
    let id = parse_id(&id, "run")?;
    let run = state.store.get_run(id).await?.ok_or(PageError::NotFound("run"))?;
    let inspection = state.store.get_inspection(run.inspection_id).await?;
    let name = inspection.as_ref().map(|i| i.name.clone()).unwrap_or_else(|| "(deleted inspection)".into());
    let clusters = state.store.run_clusters(id, None, CLUSTERS).await?;
    let title = format!("Run {} of {name}", view::short_id(run.id));
    let body = html! {
        h1 {
            "Run " code { (view::short_id(run.id)) } " of "
            a href={ "/console/inspections/" (run.inspection_id) } { (name) } " " (badge(run.status.as_str()))
        }
        (facts(&run, now))
        @if let Some(e) = &run.error { p.error { (e) } }
        section { h2 { "Counters" } (counters(&run)) }
        section { h2 { "Log groups" } (log_groups(&run)) }
        @if let Some(report) = &run.report { (report_parts(report, now)) }
        section {
            h2 { "All clusters of this run" }
            (cluster_rows(&clusters, now))
            @if clusters.len() as i64 == CLUSTERS { p.muted { "The first " (CLUSTERS) " are shown: new ones first, then the largest." } }
        }
    };
    Ok(view::page(&title, &access, body))
}

fn facts(r: &Run, now: DateTime<Utc>) -> Markup {
    let took = r.started_at.zip(r.finished_at).map(|(s, f)| view::duration((f - s).num_seconds()));
    html! {
        dl.facts {
            dt { "Window" } dd { (window(r.window_start, r.window_end)) @if r.explicit_window { " " span.tag { "explicit" } } }
            @if let (Some(s), Some(e)) = (r.skipped_start, r.skipped_end) {
                dt { "Skipped" } dd.bad-text { (window(Some(s), Some(e))) " (past the catch-up limit)" }
            }
            dt { "Started by" } dd { (r.trigger.as_str()) @if r.dry_run { " " span.tag { "dry run" } } }
            dt { "Created" } dd { (when(now, r.created_at)) }
            dt { "Finished" } dd { (maybe_when(now, r.finished_at)) @if let Some(t) = took { " after " (t) } }
            @if let Some(t) = &r.trace_id { dt { "Trace id" } dd { code { (t) } } }
        }
    }
}

fn counters(r: &Run) -> Markup {
    let items = [
        ("Records scanned", r.records_scanned),
        ("Error records", r.error_records),
        ("New error records", r.new_error_records),
        ("Clusters", r.clusters_total),
        ("New clusters", r.clusters_new),
        ("Baseline clusters", r.baseline_clusters),
        ("Malformed records", r.malformed_records),
        ("Ignored records", r.ignored_records),
        ("AWS API calls", r.aws_api_calls),
    ];
    html! {
        div.counters { @for (label, n) in items { div.counter { span.value { (num(n)) } span.label { (label) } } } }
    }
}

fn log_groups(r: &Run) -> Markup {
    html! {
        table.list {
            thead { tr {
                th { "Log group" } th { "Outcome" } th.n { "Records" } th.n { "Error records" } th { "Read from" }
                th { "Problems" }
            } }
            tbody {
                @for g in &r.log_groups {
                    tr {
                        td { code { (g.name) } @if g.baseline_read { " " span.tag { "baseline read" } } }
                        td { (badge(&g.status)) }
                        td.n { (num(g.records_scanned as i64)) }
                        td.n { (num(g.error_records as i64)) }
                        td { @if let Some(t) = g.window_start { (view::utc(t)) } }
                        td {
                            @if let Some(e) = &g.error { p.bad-text { (e) } }
                            @if !g.warnings.is_empty() { ul.plain { @for w in &g.warnings { li.warn-text { (w) } } } }
                        }
                    }
                }
            }
        }
    }
}

fn report_parts(report: &RunReport, now: DateTime<Utc>) -> Markup {
    html! {
        section {
            h2 { "Report" }
            p { strong { (num(report.new_error_records)) } " new error records in " strong { (report.new_clusters.len()) } " new clusters." }
            h3 { "Accounts" }
            table.list {
                thead { tr { th { "Account" } th.n { "Error records" } th.n { "New error records" } th.n { "New clusters" } th { } } }
                tbody {
                    @for a in &report.accounts {
                        tr {
                            td { code { (a.account_id) } }
                            td.n { (num(a.error_records)) }
                            td.n { (num(a.new_error_records)) }
                            td.n { (num(a.new_clusters)) }
                            td { a href={ "/console/events?inspection=" (report.inspection_id) "&account=" (urlencode(&a.account_id)) } { "events" } }
                        }
                    }
                }
            }
            h3 { "Access keys" }
            (keys_table(&report.access_keys, now))
            h3 { "New clusters" }
            (cluster_rows(&report.new_clusters, now))
            @if report.new_clusters_truncated { p.muted { "More new clusters than the report keeps: all are listed below." } }
            h3 { "Events" }
            @if let Some(note) = &report.events_note { p.muted { (note) } }
            @if report.events.is_empty() { p.muted { "This run recorded no event." } }
            @else {
                table.list {
                    thead { tr { th { "Event" } th { "Account" } th { "Status" } th { "Silenced" } th { "Delivery (when the run ended)" } th { "Note" } } }
                    tbody {
                        @for e in &report.events {
                            tr {
                                td { code { (e.event_id) } }
                                td { code { (e.account_id) } }
                                td { (badge(&e.status)) }
                                td { @if e.is_silent { "silenced" } @else { span.muted { "no" } } }
                                td { (badge(e.delivery_state.as_str())) }
                                td { @if let Some(n) = &e.note { (n) } }
                            }
                        }
                    }
                }
                p { a href={ "/console/events?inspection=" (report.inspection_id) } { "Events of this inspection, with their delivery now →" } }
            }
        }
    }
}

fn cluster_rows(clusters: &[ClusterSummary], now: DateTime<Utc>) -> Markup {
    html! {
        @if clusters.is_empty() { p.muted { "None." } }
        @else {
            table.list {
                thead { tr {
                    th { } th { "Level" } th { "CIS rules" } th { "Error" } th { "API" } th { "Account" } th { "Template" }
                    th.n { "Count" } th { "First seen" } th { "Last seen" }
                } }
                tbody {
                    @for c in clusters {
                        @let (level, rules) = (c.level, stored_rules(&c.cis_rules));
                        tr {
                            td { @if c.is_new { span.tag.new { "new" } } }
                            td { (level_badge(level)) }
                            td { (rule_list(&rules)) }
                            td {
                                @match c.cluster_id {
                                    Some(id) => a href={ "/console/clusters/" (id) } { code { (c.identity.error_code) } },
                                    None => code { (c.identity.error_code) },
                                }
                            }
                            td { (api(&c.identity)) }
                            td { code { (c.identity.account_id) } " " span.muted { (c.identity.region) } }
                            td.template { (cut(&c.identity.template, 120)) }
                            td.n { (num(c.count)) }
                            td { (when(now, c.first_seen)) }
                            td { (when(now, c.last_seen)) }
                        }
                    }
                }
            }
        }
    }
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap_or_default().trim_start_matches('=').to_string()
}
