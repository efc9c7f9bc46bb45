//! `cloudtrail-inspector scan`: the main job once, without a server.
//!
//! A scan is an ordinary run of an ordinary inspection, kept in a throwaway in-memory SQLite
//! database, or in `--state` so that known clusters are remembered between scans. Everything
//! a served run does (selection, templates, clusters, new-vs-known, access keys) happens the
//! same way; this module only turns arguments into an inspection and prints the result.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::config::{OutputFormat, ScanArgs};
use crate::model::cluster::{AccessKeyView, ClusterSummary};
use crate::model::inspection::{InspectionDraft, NewInspection};
use crate::model::run::{Run, RunRequest, RunStatus};
use crate::model::time;
use crate::runner::{Runner, RunnerSettings};
use crate::source::Sources;
use crate::source::cloudwatch::CloudWatchFactory;
use crate::store::{self, DynStore, InspectionFilter};

/// Version of `scan --format json`'s document. Raised when a field is renamed, removed or
/// changes meaning; added fields keep it, so consumers check it and ignore what they do not
/// know.
pub const SCAN_JSON_SCHEMA_VERSION: u32 = 1;

/// Exit status when everything was read and no cluster is new.
pub const EXIT_NOTHING_NEW: i32 = 0;
/// Exit status when the scan could not be done: bad arguments, a target that is missing or
/// holds no CloudTrail files, or nothing of it could be read.
pub const EXIT_FAILED: i32 = 1;
/// Exit status when nothing new was found among what could be read, but some input could not
/// be read (a file, a log group, the access-key activity): "nothing new" is not proven.
pub const EXIT_PARTIAL: i32 = 2;
/// Exit status when the scan found clusters it had not seen before, whether or not all the
/// input could be read.
pub const EXIT_NEW_CLUSTERS: i32 = 3;

/// The exit status of a scan whose run ended so. New clusters are a finding even when some
/// input was missed; a partial read without them cannot claim that nothing is new.
pub fn exit_code(run: &Run) -> i32 {
    match run.status {
        RunStatus::Failed | RunStatus::Interrupted | RunStatus::Queued | RunStatus::Running => EXIT_FAILED,
        _ if run.clusters_new > 0 => EXIT_NEW_CLUSTERS,
        RunStatus::Partial => EXIT_PARTIAL,
        RunStatus::Succeeded => EXIT_NOTHING_NEW,
    }
}

/// What to scan.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Files(PathBuf),
    CloudWatch {
        region: String,
        log_group: String,
    },
    /// A trail's bucket and key prefix (the part before `AWSLogs/`), and the accounts and
    /// regions a longer URL names.
    S3 {
        bucket: String,
        prefix: String,
        accounts: Option<Vec<String>>,
        regions: Option<Vec<String>>,
    },
}

impl Target {
    pub fn parse(s: &str) -> anyhow::Result<Target> {
        if let Some(rest) = s.strip_prefix("cloudwatch://") {
            let Some((region, group)) = rest.split_once('/') else {
                bail!("expected cloudwatch://<region>/<log-group>, e.g. cloudwatch://us-east-1/aws-cloudtrail-logs");
            };
            if region.is_empty() || group.is_empty() {
                bail!("expected cloudwatch://<region>/<log-group>");
            }
            return Ok(Target::CloudWatch { region: region.to_string(), log_group: group.to_string() });
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            return parse_s3(rest);
        }
        let path = PathBuf::from(s);
        let path = std::fs::canonicalize(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Target::Files(path))
    }

    fn describe(&self) -> String {
        match self {
            Target::Files(p) => p.display().to_string(),
            Target::CloudWatch { region, log_group } => format!("cloudwatch://{region}/{log_group}"),
            Target::S3 { bucket, prefix, accounts, regions } => {
                let mut url = crate::model::inspection::s3_url(bucket, prefix);
                if let Some(a) = accounts {
                    url += &format!(" (accounts {})", a.join(", "));
                }
                if let Some(r) = regions {
                    url += &format!(" (regions {})", r.join(", "));
                }
                url
            }
        }
    }
}

/// `s3://bucket[/prefix]`, where the prefix is the trail's; a URL that goes on into
/// CloudTrail's layout (`…/AWSLogs/[o-org/]<account>[/CloudTrail/<region>]`) reads that
/// account, and region, only.
fn parse_s3(rest: &str) -> anyhow::Result<Target> {
    const EXPECTED: &str = "expected s3://<bucket>[/<prefix>], e.g. s3://my-trail-bucket/org-trail";
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("{EXPECTED}");
    }
    let path = path.trim_matches('/');
    let (prefix, layout) = if path == "AWSLogs" || path.starts_with("AWSLogs/") {
        ("", path.strip_prefix("AWSLogs").unwrap_or(""))
    } else {
        match path.split_once("/AWSLogs") {
            Some((p, l)) if l.is_empty() || l.starts_with('/') => (p, l),
            _ => (path, ""),
        }
    };
    let mut parts = layout.split('/').filter(|p| !p.is_empty()).peekable();
    if parts.peek().is_some_and(|p| p.starts_with("o-")) {
        parts.next();
    }
    let accounts = parts.next().map(|a| vec![a.to_string()]);
    let regions = match (parts.next(), parts.next()) {
        (Some("CloudTrail"), Some(region)) => Some(vec![region.to_string()]),
        (None, _) | (Some("CloudTrail"), None) => None,
        (Some(other), _) => {
            bail!("{EXPECTED}: {other:?} is not CloudTrail's layout (…/AWSLogs/<account>/CloudTrail/<region>)")
        }
    };
    Ok(Target::S3 { bucket: bucket.to_string(), prefix: prefix.to_string(), accounts, regions })
}

/// The region of `scan s3://…`'s calls, as the AWS CLI finds it (AWS_REGION, the profile),
/// or us-east-1, where S3 answers for every bucket's listing with a redirect at worst.
async fn default_region() -> String {
    aws_config::default_provider::region::DefaultRegionChain::builder()
        .build()
        .region()
        .await
        .map_or_else(|| "us-east-1".to_string(), |r| r.to_string())
}

/// RFC 3339, or an age before `now` such as `90s`, `30m`, `2h`, `7d`, `2w`.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    Ok(now - parse_age(s)?)
}

pub fn parse_age(s: &str) -> anyhow::Result<TimeDelta> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().with_context(|| format!("{s:?} is neither a time (RFC 3339) nor an age like 2h"))?;
    let d = match unit {
        "s" => TimeDelta::try_seconds(n),
        "m" | "min" => TimeDelta::try_minutes(n),
        "h" => TimeDelta::try_hours(n),
        "d" => TimeDelta::try_days(n),
        "w" => TimeDelta::try_weeks(n),
        _ => bail!("{s:?}: the unit must be s, m, h, d or w"),
    };
    d.with_context(|| format!("{s:?} is too long ago"))
}

pub async fn run(args: ScanArgs) -> i32 {
    match scan(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}

async fn scan(args: ScanArgs) -> anyhow::Result<i32> {
    let target = Target::parse(&args.target)?;
    let window = scan_window(&args, &target, time::now())?;

    let (url, connections) = match &args.state {
        Some(url) => (url.clone(), 4),
        None => ("sqlite::memory:".to_string(), 1),
    };
    // A scan's inspection holds no credentials (it uses the default AWS chain), so nothing
    // of its own is sealed; a key for this process alone will do.
    let store = store::connect(&url, connections, Arc::new(crate::crypto::SecretBox::ephemeral())).await?;
    store.migrate().await?;

    let bar = progress_bar(&args, &target);
    let runner_settings = RunnerSettings::default();
    let progress = bar.clone().map(|b| {
        Arc::new(move |done: u64, total: u64| {
            b.set_length(total);
            b.set_position(done);
        }) as crate::source::files::Progress
    });
    let sources = Sources {
        cloudwatch: CloudWatchFactory::new(runner_settings.cloudwatch.clone()),
        s3: crate::source::s3::S3Factory::new(
            runner_settings.s3.clone(),
            runner_settings.cloudwatch.allow_metadata_endpoints,
        )
        .with_progress(progress.clone()),
        file_progress: progress,
        files: crate::source::files::FilesAccess::Anywhere,
        file_jobs: args.jobs.map(usize::from),
    };
    let runner = Runner::new(store.clone(), Arc::new(sources), runner_settings);
    // Nothing comes before a window that starts at the beginning of time.
    let baseline_days = match window {
        Some((start, _)) if start.timestamp() <= 0 => 0,
        _ => args.baseline_days,
    };
    let inspection_id = prepare_inspection(&store, &target, &args, baseline_days).await?;

    // The run reads the baseline before its window, as any first look at a log group does.
    let request = match window {
        Some((s, u)) => RunRequest { window_start: Some(s), window_end: Some(u), ..RunRequest::default() },
        None => RunRequest::default(),
    };
    let started = runner.trigger_scan(inspection_id, request).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = started.done.await?.context("the run vanished")?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    print_report(&store, &args, &target, &run).await?;
    // The process exits right after: `--state` must be whole in its file by then.
    store.close().await;
    Ok(exit_code(&run))
}

/// The window the scan reads: `--since`/`--lookback` to `--until`; all the records of
/// files when neither is given; `None` leaves a log group to the inspection's own window.
fn scan_window(
    args: &ScanArgs,
    target: &Target,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    let until = args.until.as_deref().map(|u| parse_time(u, now)).transpose()?;
    let since = match (&args.since, &args.lookback) {
        (Some(s), _) => Some(parse_time(s, now)?),
        (None, Some(l)) => Some(now - parse_age(l)?),
        (None, None) => None,
    };
    let window = match (since, until, target) {
        (None, None, Target::CloudWatch { .. }) => None, // the inspection's default window
        // Files: everything they hold unless told otherwise.
        (s, u, _) => Some((s.unwrap_or(DateTime::<Utc>::UNIX_EPOCH), u.unwrap_or(now + TimeDelta::days(1)))),
    };
    if let Some((s, u)) = window {
        if s >= u {
            bail!("--since must be before --until");
        }
    }

    Ok(window)
}

/// The report on stdout in the format asked for, and each log group's problems on stderr.
async fn print_report(store: &DynStore, args: &ScanArgs, target: &Target, run: &Run) -> anyhow::Result<()> {
    let clusters = all_clusters(store, run.id).await?;
    let keys = KeyList::of(store, run).await?;
    let out = match args.format {
        OutputFormat::Table => render_table(target, run, &clusters, &keys),
        OutputFormat::Markdown => render_markdown(target, run, &clusters, &keys),
        OutputFormat::Json => {
            let (since, until) = open_ends(run);
            let doc = json!({
                "schema_version": SCAN_JSON_SCHEMA_VERSION,
                "target": target.describe(),
                "window": {"start": since, "end": until},
                "run": run,
                "clusters": clusters,
                "access_keys": keys.shown,
                "access_keys_total": keys.total,
                "access_keys_active": keys.active,
                "access_keys_truncated": keys.shown.len() < keys.total as usize,
            });
            serde_json::to_string_pretty(&doc)? + "\n"
        }
    };
    std::io::stdout().write_all(out.as_bytes())?;
    for g in &run.log_groups {
        if let Some(e) = &g.error {
            // Name the log group or file, once.
            let named = if e.contains(&g.name) { String::new() } else { format!("{}: ", g.name) };
            eprintln!("error: {}{}", sanitize(&named), sanitize(e));
        }
        for w in &g.warnings {
            eprintln!("warning: {}", sanitize(w));
        }
    }
    Ok(())
}

/// The access keys a report shows, and how many there are: the report lists 50, the
/// inspection may know hundreds.
pub struct KeyList {
    pub shown: Vec<AccessKeyView>,
    /// Keys the scan's inspection knows after the scan (with `--state`, earlier scans' too).
    pub total: i64,
    /// Keys active in the scan's window.
    pub active: i64,
}

impl KeyList {
    async fn of(store: &DynStore, run: &Run) -> anyhow::Result<KeyList> {
        let (shown, active) =
            run.report.as_ref().map(|r| (r.access_keys.clone(), r.access_keys_active)).unwrap_or_default();
        let total = store.count_access_keys(run.inspection_id).await?.max(shown.len() as i64);
        Ok(KeyList { shown, total, active })
    }

    /// `12`, or `50 of 401 shown` when cut, with how many were active.
    fn heading(&self) -> String {
        let count = if self.shown.len() as i64 >= self.total {
            self.total.to_string()
        } else {
            format!("{} of {} shown", self.shown.len(), thousands(self.total))
        };
        format!("{count}; {} active in this window", thousands(self.active))
    }
}

fn progress_bar(args: &ScanArgs, target: &Target) -> Option<indicatif::ProgressBar> {
    if args.no_progress || !std::io::stderr().is_terminal() || matches!(target, Target::CloudWatch { .. }) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template("{spinner} reading files {pos}/{len} [{bar:30}] {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// Creates the scan's inspection, or updates the one an earlier scan with the same target
/// left in `--state`, so its known clusters carry over.
async fn prepare_inspection(
    store: &DynStore,
    target: &Target,
    args: &ScanArgs,
    baseline_days: u32,
) -> anyhow::Result<Uuid> {
    let mut name = format!("scan {}", target.describe());
    if name.chars().count() > 200 {
        name = name.chars().take(200).collect();
    }
    let mut body = json!({
        "name": name,
        "baseline_days": baseline_days,
        "delivery_delay_minutes": 0,
        "ignore": {"error_codes": args.ignore_error_codes},
    });
    match target {
        Target::Files(path) => body["source"] = json!({"kind": "files", "path": path.display().to_string()}),
        Target::CloudWatch { region, log_group } => {
            body["log_groups"] = json!([log_group]);
            body["aws"] = json!({"region": region, "endpoint_url": args.endpoint_url});
            body["strategy"] = json!(args.strategy);
            body["delivery_delay_minutes"] = json!(10);
        }
        Target::S3 { bucket, prefix, accounts, regions } => {
            body["source"] = json!({"kind": "s3", "bucket": bucket, "prefix": prefix,
                "accounts": accounts, "regions": regions});
            body["aws"] = json!({"region": default_region().await, "endpoint_url": args.endpoint_url});
        }
    }
    let input: NewInspection = serde_json::from_value(body).context("scan options")?;
    let filter = InspectionFilter { enabled: None, name_contains: Some(name.clone()) };
    let existing = store.list_inspections(&filter, None, 50).await?.into_iter().find(|i| i.name == name);
    let now = time::now();
    match existing {
        Some(found) => {
            let draft = InspectionDraft::patch(&found, input)
                .map_err(|e| anyhow::anyhow!("invalid scan options: {:?}", e.fields()))?;
            store.update_inspection(found.id, &draft, now).await?;
            Ok(found.id)
        }
        None => {
            let draft = InspectionDraft::from_new(input)
                .map_err(|e| anyhow::anyhow!("invalid scan options: {:?}", e.fields()))?;
            let id = Uuid::now_v7();
            store.create_inspection(id, &draft, now).await?;
            Ok(id)
        }
    }
}

async fn all_clusters(store: &DynStore, run_id: Uuid) -> anyhow::Result<Vec<ClusterSummary>> {
    let mut out: Vec<ClusterSummary> = Vec::new();
    loop {
        let after = out.last().map(|c| (c.is_new, c.count, c.identity.fingerprint.clone()));
        let page = store.run_clusters(run_id, after, 500).await?;
        let done = page.len() < 500;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Record text is untrusted: control characters (terminal escapes) are shown, not obeyed.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

fn clip(s: &str, max: usize) -> String {
    let s = sanitize(s);
    if s.chars().count() <= max { s } else { s.chars().take(max.saturating_sub(1)).collect::<String>() + "…" }
}

fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The bounds of the window the scan was asked for, `None` where it is open: files are read
/// from the beginning of time when there is no `--since`, and up to a day past the scan's
/// start when there is no `--until` (records a little in the future still count), and
/// neither bound is one a person gave.
fn open_ends(run: &Run) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let start = run.window_start.filter(|s| s.timestamp() > 0);
    let end = run.window_end.filter(|e| *e <= run.created_at);
    (start, end)
}

fn summary_line(run: &Run) -> String {
    let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ");
    let window = match (run.window_start, open_ends(run)) {
        (None, _) => "-".into(),
        (_, (None, None)) => "all records".into(),
        (_, (None, Some(e))) => format!("all records before {}", at(e)),
        (_, (Some(s), None)) => format!("all records since {}", at(s)),
        (_, (Some(s), Some(e))) => format!("{} → {}", at(s), at(e)),
    };
    format!(
        "window: {window}\nrecords: {} · error records: {} · clusters: {} ({} new, {} new error records) · malformed: {} · repaired: {} · ignored: {} · insights events: {} · status: {}",
        thousands(run.records_scanned),
        thousands(run.error_records),
        thousands(run.clusters_total),
        thousands(run.clusters_new),
        thousands(run.new_error_records),
        thousands(run.malformed_records),
        thousands(run.warned_records),
        thousands(run.ignored_records),
        thousands(run.insight_events),
        run.status.as_str(),
    )
}

/// What an empty list of new clusters means, which depends on what could be read.
fn nothing_new(run: &Run) -> &'static str {
    match run.status {
        RunStatus::Failed | RunStatus::Interrupted => "none found: nothing could be read (see the errors on stderr)",
        RunStatus::Partial => "none among what could be read; some input could not be (see stderr)",
        _ if run.clusters_total == 0 => "none: no error records",
        _ => "none: every error cluster was seen before",
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// One line per Insights event of the report: AWS's own findings are worth a line each.
fn insight_lines(run: &Run) -> Vec<String> {
    let Some(report) = &run.report else { return Vec::new() };
    report
        .insights
        .iter()
        .map(|i| {
            let rates = match (i.baseline_average, i.insight_average) {
                (Some(b), Some(x)) => format!(", {x:.1}/min against {b:.1}/min usually"),
                _ => String::new(),
            };
            let code = if i.error_code.is_empty() { String::new() } else { format!(" {}", i.error_code) };
            sanitize(&format!(
                "{} {} {} {}{code} on {} {} in {} {}{rates}",
                i.event_time.format("%Y-%m-%d %H:%M:%SZ"),
                i.state,
                i.insight_type,
                i.account_id,
                i.event_source.trim_end_matches(".amazonaws.com"),
                i.event_name,
                i.region,
                i.event_id,
            ))
        })
        .collect()
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            s.push(' ');
            if i == 0 {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.push(' ');
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers);
    for r in rows {
        out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

fn cluster_rows(clusters: &[&ClusterSummary]) -> Vec<Vec<String>> {
    clusters
        .iter()
        .map(|c| {
            let id = &c.identity;
            vec![
                thousands(c.count),
                c.level.as_str().to_string(),
                clip(&id.account_id, 14),
                clip(&id.region, 14),
                clip(&format!("{} {}", id.event_source.trim_end_matches(".amazonaws.com"), id.event_name), 44),
                clip(&id.error_code, 36),
                clip(&id.template, 90),
                cis_list(&c.cis_rules),
            ]
        })
        .collect()
}

const CLUSTER_HEADERS: [&str; 8] = ["COUNT", "LEVEL", "ACCOUNT", "REGION", "API", "ERROR", "TEMPLATE", "CIS"];

/// Matched CIS rules, `-` for none.
fn cis_list(rules: &[String]) -> String {
    if rules.is_empty() { "-".into() } else { rules.join(",") }
}

pub fn render_table(target: &Target, run: &Run, clusters: &[ClusterSummary], keys: &KeyList) -> String {
    let mut out = format!("cloudtrail-inspector scan of {}\n{}\n", sanitize(&target.describe()), summary_line(run));
    let new: Vec<&ClusterSummary> = clusters.iter().filter(|c| c.is_new).collect();
    out.push_str(&format!("\nNEW ERROR CLUSTERS ({})\n", new.len()));
    if new.is_empty() {
        out.push_str(&format!("  {}\n", nothing_new(run)));
    } else {
        out.push_str(&table(&CLUSTER_HEADERS, &cluster_rows(&new)));
    }
    // Each cluster once: a first scan finds every cluster new, and listing them all again
    // doubled the report.
    let known: Vec<&ClusterSummary> = clusters.iter().filter(|c| !c.is_new).collect();
    out.push_str(&format!("\nKNOWN ERROR CLUSTERS ({})\n", known.len()));
    if !known.is_empty() {
        out.push_str(&table(&CLUSTER_HEADERS, &cluster_rows(&known)));
    }
    let insights = insight_lines(run);
    if !insights.is_empty() {
        out.push_str(&format!("\nCLOUDTRAIL INSIGHTS EVENTS ({})\n", insights.len()));
        for line in insights {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!("\nACCESS KEYS ({}; most recently active first)\n", keys.heading()));
    if !keys.shown.is_empty() {
        let rows: Vec<Vec<String>> = keys
            .shown
            .iter()
            .map(|k| {
                vec![
                    clip(&k.access_key_id, 24),
                    k.last_seen.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                    clip(&k.principal_arn, 60),
                    clip(&k.last_event_name, 32),
                    clip(&k.last_source_ip, 40),
                    thousands(k.total_events),
                ]
            })
            .collect();
        out.push_str(&table(&["KEY", "LAST ACTIVE", "PRINCIPAL", "LAST EVENT", "SOURCE IP", "EVENTS"], &rows));
    }
    out
}

/// Escapes text for a markdown table cell: nothing in a record can start markup or a new cell.
pub fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in sanitize(s).chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' | '~' | '(' | ')') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub fn render_markdown(target: &Target, run: &Run, clusters: &[ClusterSummary], keys: &KeyList) -> String {
    let mut out = format!("# CloudTrail scan of {}\n\n", md(&target.describe()));
    for line in summary_line(run).lines() {
        out.push_str(&format!("- {}\n", md(line)));
    }
    let new: Vec<&ClusterSummary> = clusters.iter().filter(|c| c.is_new).collect();
    out.push_str(&format!("\n## New error clusters ({})\n\n", new.len()));
    let cluster_table = |list: &[&ClusterSummary]| {
        let mut t = String::from(
            "| Count | Level | Account | Region | API | Error | Template | CIS rules | First seen | Last seen | Top principals |\n|---:|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for c in list {
            let principals: Vec<String> =
                c.top_principals.iter().map(|p| format!("{} ({})", md(&p.value), p.count)).collect();
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} {} | {} | {} | {} | {} | {} | {} |\n",
                c.count,
                c.level.as_str(),
                md(&c.identity.account_id),
                md(&c.identity.region),
                md(&c.identity.event_source),
                md(&c.identity.event_name),
                md(&c.identity.error_code),
                md(&c.identity.template),
                md(&cis_list(&c.cis_rules)),
                c.first_seen.format("%Y-%m-%d %H:%M:%SZ"),
                c.last_seen.format("%Y-%m-%d %H:%M:%SZ"),
                principals.join(", "),
            ));
        }
        t
    };
    if new.is_empty() {
        out.push_str(&format!("{}.\n", capitalized(nothing_new(run))));
    } else {
        out.push_str(&cluster_table(&new));
    }
    let known: Vec<&ClusterSummary> = clusters.iter().filter(|c| !c.is_new).collect();
    out.push_str(&format!("\n## Known error clusters ({})\n\n", known.len()));
    if !known.is_empty() {
        out.push_str(&cluster_table(&known));
    }
    let insights = insight_lines(run);
    if !insights.is_empty() {
        out.push_str(&format!("\n## CloudTrail Insights events ({})\n\n", insights.len()));
        for line in insights {
            out.push_str(&format!("- {}\n", md(&line)));
        }
    }
    out.push_str(&format!("\n## Access keys ({})\n\n", md(&keys.heading())));
    if !keys.shown.is_empty() {
        out.push_str("| Key | Last active | Principal | Last event | Source IP |\n|---|---|---|---|---|\n");
        for k in &keys.shown {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                md(&k.access_key_id),
                k.last_seen.format("%Y-%m-%d %H:%M:%SZ"),
                md(&k.principal_arn),
                md(&k.last_event_name),
                md(&k.last_source_ip)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_and_ages() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        assert_eq!(parse_time("2h", now).unwrap(), now - TimeDelta::hours(2));
        assert_eq!(parse_time("7d", now).unwrap(), now - TimeDelta::days(7));
        assert_eq!(
            parse_time("2026-04-30T00:00:00Z", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 4, 30, 0, 0, 0).unwrap()
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5y", now).is_err());
        assert!(parse_age("99999999999999d").is_err());
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("cloudwatch://us-east-1/aws-cloudtrail-logs").unwrap(),
            Target::CloudWatch { region: "us-east-1".into(), log_group: "aws-cloudtrail-logs".into() }
        );
        assert!(Target::parse("cloudwatch://us-east-1").is_err());
        assert!(Target::parse("/no/such/dir/anywhere").is_err());
    }

    #[test]
    fn s3_urls_name_a_trail_and_optionally_an_account_and_region() {
        let s3 = |bucket: &str, prefix: &str, account: Option<&str>, region: Option<&str>| Target::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
            accounts: account.map(|a| vec![a.to_string()]),
            regions: region.map(|r| vec![r.to_string()]),
        };
        for (url, wanted) in [
            ("s3://trail-bucket", s3("trail-bucket", "", None, None)),
            ("s3://trail-bucket/", s3("trail-bucket", "", None, None)),
            ("s3://trail-bucket/org/trail/", s3("trail-bucket", "org/trail", None, None)),
            ("s3://trail-bucket/AWSLogs/", s3("trail-bucket", "", None, None)),
            ("s3://b/p/AWSLogs/o-abc123/111122223333", s3("b", "p", Some("111122223333"), None)),
            (
                "s3://b/AWSLogs/111122223333/CloudTrail/eu-west-1/2024/03/",
                s3("b", "", Some("111122223333"), Some("eu-west-1")),
            ),
            ("s3://b/p/AWSLogsArchive", s3("b", "p/AWSLogsArchive", None, None)),
        ] {
            assert_eq!(Target::parse(url).unwrap(), wanted, "{url}");
        }
        assert!(Target::parse("s3://").is_err());
        assert!(Target::parse("s3:///prefix").is_err());
        assert!(Target::parse("s3://b/AWSLogs/111122223333/CloudTrail-Digest/eu-west-1").is_err());
    }

    fn run(status: RunStatus, clusters_new: i64) -> Run {
        let t = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        Run {
            id: Uuid::nil(),
            inspection_id: Uuid::nil(),
            status,
            trigger: crate::model::run::Trigger::Api,
            dry_run: false,
            explicit_window: true,
            window_start: Some(t),
            window_end: Some(t),
            skipped_start: None,
            skipped_end: None,
            created_at: t,
            started_at: Some(t),
            finished_at: Some(t),
            records_scanned: 0,
            error_records: 0,
            malformed_records: 0,
            warned_records: 0,
            ignored_records: 0,
            insight_events: 0,
            clusters_total: clusters_new,
            clusters_new,
            new_error_records: clusters_new,
            baseline_clusters: 0,
            aws_api_calls: 0,
            log_groups: Vec::new(),
            error: None,
            report: None,
            request: RunRequest::default(),
            trace_id: None,
        }
    }

    #[test]
    fn exit_codes_say_what_a_pipeline_can_rely_on() {
        for (status, new, code) in [
            (RunStatus::Succeeded, 0, EXIT_NOTHING_NEW),
            (RunStatus::Succeeded, 2, EXIT_NEW_CLUSTERS),
            (RunStatus::Partial, 0, EXIT_PARTIAL),
            (RunStatus::Partial, 2, EXIT_NEW_CLUSTERS),
            (RunStatus::Failed, 0, EXIT_FAILED),
            (RunStatus::Interrupted, 0, EXIT_FAILED),
        ] {
            assert_eq!(exit_code(&run(status, new)), code, "{status:?}, {new} new");
        }
        assert_eq!((EXIT_NOTHING_NEW, EXIT_FAILED, EXIT_PARTIAL, EXIT_NEW_CLUSTERS), (0, 1, 2, 3));
    }

    #[test]
    fn untrusted_text_cannot_escape() {
        assert_eq!(sanitize("a\u{1b}[31mred\n"), "a\u{FFFD}[31mred\u{FFFD}");
        assert_eq!(md("x | y [link](http://e) `c` <b>"), "x \\| y \\[link\\]\\(http://e\\) \\`c\\` \\<b\\>");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
