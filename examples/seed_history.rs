//! Fills a store with a long history, for the API load benchmark (`scripts/bench-api.sh`):
//! inspections created through the store, then runs, their clusters and the inspections'
//! known clusters written with multi-row SQL inserts in large transactions (the service's
//! own write path stores one run per transaction, which would take an hour here).
//!
//! ```sh
//! cargo run --release --example seed_history -- DATABASE_URL [INSPECTIONS RUNS_PER_INSPECTION
//!     CLUSTERS_PER_RUN CLUSTERS_PER_INSPECTION]
//! ```
//!
//! Defaults: 100 inspections × 1,000 hourly runs (100,000 runs), 10 clusters per run
//! (1,000,000 run cluster rows) and 10,000 known clusters per inspection (1,000,000 cluster
//! rows). Shapes follow what runs store: the JSON report (accounts, ten access keys, the
//! new clusters of the one run in ten that has any), per-log-group outcomes, top principals
//! and IPs, sample ids and messages, and a full CloudTrail record per known cluster.
//!
//! Prints `seed inspection_id=… run_id=… runs=… run_clusters=… clusters=… seconds=…`: an
//! inspection and one of its runs for the load test to ask for.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cloudtrail_inspector::crypto::SecretBox;
use cloudtrail_inspector::model::alerting::SeverityRules;
use cloudtrail_inspector::model::cluster::{self, AccessKeyView, ClusterIdentity, ClusterSummary, Counted};
use cloudtrail_inspector::model::inspection::{InspectionDraft, NewInspection};
use cloudtrail_inspector::model::run::{AccountSummary, LogGroupOutcome, RunReport, RunRequest};
use cloudtrail_inspector::store;
use cloudtrail_inspector::synth::{Synth, SynthConfig};
use sqlx::types::Json;
use uuid::Uuid;

/// Rows per INSERT statement: under both backends' limits on bound parameters.
const CHUNK: usize = 500;
/// Rows per transaction.
const TX_ROWS: usize = 20_000;

const ACCOUNTS: [&str; 3] = ["123456789012", "210987654321", "555566667777"];
const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];
const APIS: [(&str, &str, &str, &str); 6] = [
    (
        "ec2.amazonaws.com",
        "DescribeInstances",
        "Client.UnauthorizedOperation",
        "You are not authorized to perform this operation. Encoded authorization failure message: <*>",
    ),
    ("s3.amazonaws.com", "GetObject", "NoSuchKey", "The specified key does not exist."),
    (
        "iam.amazonaws.com",
        "GetRole",
        "AccessDenied",
        "User: <*> is not authorized to perform: iam:GetRole on resource: role <*>",
    ),
    (
        "sts.amazonaws.com",
        "AssumeRole",
        "AccessDenied",
        "User: <*> is not authorized to perform: sts:AssumeRole on resource: <*>",
    ),
    (
        "kms.amazonaws.com",
        "Decrypt",
        "AccessDeniedException",
        "The ciphertext refers to a customer master key that does not exist",
    ),
    ("signin.amazonaws.com", "ConsoleLogin", "ConsoleLoginFailure", "Failed authentication"),
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn counted(rng: &mut Rng, prefix: &str, n: usize) -> Vec<Counted> {
    (0..n).map(|i| Counted { value: format!("{prefix}{}", rng.below(50)), count: 50 - i as u64 * 7 }).collect()
}

fn principals(rng: &mut Rng) -> Vec<Counted> {
    (0..3)
        .map(|i| Counted {
            value: format!("arn:aws:iam::{}:user/user{}", ACCOUNTS[i % 3], rng.below(40)),
            count: 20 - i as u64 * 5,
        })
        .collect()
}

fn cluster_summary(rng: &mut Rng, i: usize, at: DateTime<Utc>, cluster_id: Option<Uuid>) -> ClusterSummary {
    let (source, name, code, template) = APIS[i % APIS.len()];
    let identity = ClusterIdentity {
        fingerprint: format!("{:016x}", rng.next()),
        account_id: ACCOUNTS[i % 3].into(),
        region: REGIONS[(i / 3) % 3].into(),
        event_source: source.into(),
        event_name: name.into(),
        error_code: code.into(),
        template: template.into(),
    };
    let top_principals = principals(rng);
    let (cis_rules, level) = cluster::rate(&identity, &top_principals, None, &SeverityRules::default());
    ClusterSummary {
        cluster_id,
        identity,
        is_new: false,
        level,
        cis_rules,
        count: 1 + rng.below(400) as i64,
        first_seen: at - Duration::minutes(55),
        last_seen: at - Duration::minutes(2),
        top_principals,
        top_source_ips: counted(rng, "203.0.113.", 3),
        sample_event_ids: (0..5).map(|_| Uuid::from_u128(u128::from(rng.next()) << 64 | 7).to_string()).collect(),
        sample_message: template.replace("<*>", "arn:aws:iam::123456789012:role/app-runner"),
    }
}

fn report(rng: &mut Rng, inspection: (Uuid, &str), window: (DateTime<Utc>, DateTime<Utc>), new: usize) -> RunReport {
    let keys = (0..10)
        .map(|k| AccessKeyView {
            access_key_id: format!("AKIA{:016X}", k * 7919 + 13),
            principal_arn: format!("arn:aws:iam::{}:user/user{k}", ACCOUNTS[k % 3]),
            account_id: ACCOUNTS[k % 3].into(),
            first_seen: window.0 - Duration::days(30),
            last_seen: window.1 - Duration::seconds(rng.below(3600) as i64),
            last_event_name: "DescribeInstances".into(),
            last_source_ip: format!("198.51.100.{}", rng.below(250)),
            total_events: rng.below(100_000) as i64,
            active_in_window: k < 6,
        })
        .collect();
    let new_clusters: Vec<ClusterSummary> = (0..new)
        .map(|i| ClusterSummary { is_new: true, ..cluster_summary(rng, i, window.1, Some(Uuid::now_v7())) })
        .collect();
    RunReport {
        inspection_id: inspection.0,
        inspection: inspection.1.to_string(),
        window_start: Some(window.0),
        window_end: Some(window.1),
        new_error_records: new_clusters.iter().map(|c| c.count).sum(),
        accounts: ACCOUNTS
            .iter()
            .map(|a| AccountSummary {
                account_id: a.to_string(),
                new_error_records: 0,
                new_clusters: 0,
                error_records: rng.below(5_000) as i64,
            })
            .collect(),
        access_keys_active: 10,
        access_keys_truncated: false,
        access_keys: keys,
        new_clusters,
        new_clusters_truncated: false,
        insights: Vec::new(),
        events: Vec::new(),
        events_note: Some("Guance is not configured".into()),
        warnings: Vec::new(),
    }
}

macro_rules! seed_with {
    ($pool:expr, $db:ty, $inspections:expr, $runs_per:expr, $per_run:expr, $per_insp:expr) => {{
        let pool = $pool;
        let (inspections, runs_per, per_run, per_insp): (&[(Uuid, String)], usize, usize, usize) =
            ($inspections, $runs_per, $per_run, $per_insp);
        let mut rng = Rng(42);
        let hour0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut sample = Synth::new(SynthConfig { error_ratio: 1.0, ..SynthConfig::default() });
        let mut buf = Vec::new();
        let mut picked = None;
        let (mut n_runs, mut n_rc, mut n_cl) = (0usize, 0usize, 0usize);
        for (ii, (insp_id, insp_name)) in inspections.iter().enumerate() {
            // Runs, hourly, oldest first; ids are v7-like so they sort with time.
            let mut run_ids = Vec::with_capacity(runs_per);
            let mut rows = Vec::with_capacity(TX_ROWS);
            for r in 0..runs_per {
                let end = hour0 + Duration::hours(r as i64) + Duration::minutes(ii as i64 % 60);
                let start = end - Duration::hours(1);
                let created = end + Duration::minutes(10);
                let id = Uuid::from_u128((created.timestamp_millis() as u128) << 80 | (ii as u128) << 32 | r as u128);
                run_ids.push((id, created));
                let new = if rng.below(10) == 0 { 1 + rng.below(3) as usize } else { 0 };
                let outcomes = vec![LogGroupOutcome {
                    name: "aws-cloudtrail-logs".into(),
                    status: "succeeded".into(),
                    records_scanned: 2_000 + rng.below(5_000),
                    error_records: 2_000 + rng.below(5_000),
                    window_start: Some(start),
                    baseline_read: false,
                    error: None,
                    warnings: Vec::new(),
                }];
                rows.push((
                    id,
                    start,
                    end,
                    created,
                    new,
                    report(&mut rng, (*insp_id, insp_name), (start, end), new),
                    outcomes,
                ));
                if rows.len() == TX_ROWS || r + 1 == runs_per {
                    let mut tx = pool.begin().await?;
                    for chunk in rows.chunks(CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "insert into runs (id, inspection_id, status, trigger, trace_id, owner, dry_run, \
                             explicit_window, request, window_start, window_end, created_at, started_at, finished_at, \
                             heartbeat_at, records_scanned, error_records, malformed_records, ignored_records, \
                             clusters_total, clusters_new, new_error_records, baseline_clusters, aws_api_calls, \
                             log_groups, error, report) ",
                        );
                        qb.push_values(chunk, |mut b, (id, start, end, created, new, rep, outcomes)| {
                            let errors = outcomes[0].error_records as i64;
                            b.push_bind(*id)
                                .push_bind(*insp_id)
                                .push_bind("succeeded")
                                .push_bind("schedule")
                                .push_bind(format!("SCHEDULE-{}", end.format("%Y-%m-%dT%H:%M:%SZ")))
                                .push_bind("bench/1")
                                .push_bind(false)
                                .push_bind(false)
                                .push_bind(Json(RunRequest::default()))
                                .push_bind(*start)
                                .push_bind(*end)
                                .push_bind(*created)
                                .push_bind(*created)
                                .push_bind(*created + Duration::seconds(3))
                                .push_bind(*created + Duration::seconds(3))
                                .push_bind(errors)
                                .push_bind(errors)
                                .push_bind(0i64)
                                .push_bind(0i64)
                                .push_bind(per_run as i64)
                                .push_bind(*new as i64)
                                .push_bind(rep.new_error_records)
                                .push_bind(0i64)
                                .push_bind(3i64)
                                .push_bind(Json(outcomes))
                                .push_bind(None::<String>)
                                .push_bind(Json(rep));
                        });
                        qb.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    n_runs += rows.len();
                    rows.clear();
                }
            }
            // The inspection's known clusters, discovered over its history (before the runs'
            // clusters, which refer to them).
            let mut cl = Vec::with_capacity(TX_ROWS);
            for c in 0..per_insp {
                let (run_id, created) = run_ids[c * run_ids.len() / per_insp.max(1)];
                buf.clear();
                sample.next_into(&mut buf);
                let record: serde_json::Value = serde_json::from_slice(&buf).unwrap_or_default();
                let id = Uuid::from_u128((created.timestamp_millis() as u128) << 80 | (ii as u128) << 40 | c as u128);
                cl.push((id, run_id, created, cluster_summary(&mut rng, c, created, None), record));
                if cl.len() == TX_ROWS || c + 1 == per_insp {
                    let mut tx = pool.begin().await?;
                    for chunk in cl.chunks(CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "insert into clusters (id, inspection_id, fingerprint, account_id, region, event_source, \
                             event_name, error_code, template, total_count, first_seen, last_seen, baseline, \
                             discovered_at, discovered_run_id, last_run_id, top_principals, top_source_ips, \
                             sample_event_ids, sample_message, sample_record, level, cis_rules, \
                             template_version) ",
                        );
                        qb.push_values(chunk, |mut b, (id, run_id, created, s, record)| {
                            b.push_bind(*id)
                                .push_bind(*insp_id)
                                .push_bind(s.identity.fingerprint.clone())
                                .push_bind(s.identity.account_id.clone())
                                .push_bind(s.identity.region.clone())
                                .push_bind(s.identity.event_source.clone())
                                .push_bind(s.identity.event_name.clone())
                                .push_bind(s.identity.error_code.clone())
                                .push_bind(s.identity.template.clone())
                                .push_bind(s.count * 20)
                                .push_bind(s.first_seen)
                                .push_bind(s.last_seen)
                                .push_bind(false)
                                .push_bind(*created)
                                .push_bind(Some(*run_id))
                                .push_bind(Some(*run_id))
                                .push_bind(Json(s.top_principals.clone()))
                                .push_bind(Json(s.top_source_ips.clone()))
                                .push_bind(Json(s.sample_event_ids.clone()))
                                .push_bind(s.sample_message.clone())
                                .push_bind(Json(record.clone()))
                                .push_bind(s.level.as_str())
                                .push_bind(Json(s.cis_rules.clone()))
                                .push_bind(cloudtrail_inspector::engine::template::TEMPLATE_VERSION);
                        });
                        qb.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    n_cl += cl.len();
                    cl.clear();
                }
            }
            // The id of the inspection's k-th known cluster (written below), so that each run's
            // clusters point at known ones as a service's do: the database's statistics then
            // see a cluster's few runs, not a million rows without one.
            let known_cluster_id = |k: usize| {
                let (_, created) = run_ids[k * run_ids.len() / per_insp];
                Uuid::from_u128((created.timestamp_millis() as u128) << 80 | (ii as u128) << 40 | k as u128)
            };
            // Each run's clusters.
            let mut rc = Vec::with_capacity(TX_ROWS);
            for (ri, (run_id, created)) in run_ids.iter().enumerate() {
                for c in 0..per_run {
                    let known = (per_insp > 0).then(|| known_cluster_id((ri * per_run + c) % per_insp));
                    let mut s = cluster_summary(&mut rng, c, *created, known);
                    s.is_new = c == 0 && ri % 10 == 0;
                    rc.push((*run_id, s));
                }
                if rc.len() >= TX_ROWS || ri + 1 == run_ids.len() {
                    let mut tx = pool.begin().await?;
                    for chunk in rc.chunks(CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "insert into run_clusters (run_id, fingerprint, cluster_id, is_new, account_id, region, \
                             event_source, event_name, error_code, template, count, first_seen, last_seen, \
                             top_principals, top_source_ips, sample_event_ids, sample_message, level, cis_rules) ",
                        );
                        qb.push_values(chunk, |mut b, (run_id, s)| {
                            b.push_bind(*run_id)
                                .push_bind(s.identity.fingerprint.clone())
                                .push_bind(s.cluster_id)
                                .push_bind(s.is_new)
                                .push_bind(s.identity.account_id.clone())
                                .push_bind(s.identity.region.clone())
                                .push_bind(s.identity.event_source.clone())
                                .push_bind(s.identity.event_name.clone())
                                .push_bind(s.identity.error_code.clone())
                                .push_bind(s.identity.template.clone())
                                .push_bind(s.count)
                                .push_bind(s.first_seen)
                                .push_bind(s.last_seen)
                                .push_bind(Json(s.top_principals.clone()))
                                .push_bind(Json(s.top_source_ips.clone()))
                                .push_bind(Json(s.sample_event_ids.clone()))
                                .push_bind(s.sample_message.clone())
                                .push_bind(s.level.as_str())
                                .push_bind(Json(s.cis_rules.clone()));
                        });
                        qb.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    n_rc += rc.len();
                    rc.clear();
                }
            }
            let (last_id, _) = *run_ids.last().expect("at least one run");
            sqlx::query("update inspections set last_run_id = $1 where id = $2")
                .bind(last_id)
                .bind(*insp_id)
                .execute(pool)
                .await?;
            if ii == inspections.len() / 2 {
                picked = Some((*insp_id, run_ids[run_ids.len() / 2].0));
            }
            eprintln!(
                "# inspection {}/{}: {n_runs} runs, {n_rc} run clusters, {n_cl} clusters",
                ii + 1,
                inspections.len()
            );
        }
        (picked.expect("at least one inspection"), n_runs, n_rc, n_cl)
    }};
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().cloned().ok_or_else(|| anyhow::anyhow!("usage: seed_history DATABASE_URL [N ...]"))?;
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n_insp, runs_per, per_run, per_insp) = (num(1, 100), num(2, 1_000), num(3, 10), num(4, 10_000));
    let t = Instant::now();

    // The inspections hold no credentials (they name a role), so any key will do.
    let db = store::connect(&url, 4, Arc::new(SecretBox::new(&[7; 32], &[]))).await?;
    db.migrate().await?;
    let mut inspections = Vec::new();
    for i in 0..n_insp {
        let new: NewInspection = serde_json::from_value(serde_json::json!({
            "name": format!("account-{i:04}"),
            "log_groups": ["aws-cloudtrail-logs"],
            "aws": {"region": "us-east-1", "role_arn": format!("arn:aws:iam::{:012}:role/cloudtrail-reader", 100_000_000_000u64 + i as u64)},
        }))?;
        let draft = InspectionDraft::from_new(new).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let created = Utc.with_ymd_and_hms(2025, 12, 31, 0, 0, 0).unwrap() + Duration::seconds(i as i64);
        let insp = db.create_inspection(Uuid::now_v7(), &draft, created).await?;
        inspections.push((insp.id, insp.name));
    }
    drop(db);

    let ((insp, run), n_runs, n_rc, n_cl) = if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&url).await?;
        let out = seed_with!(&pool, sqlx::Postgres, &inspections, runs_per, per_run, per_insp);
        sqlx::query("analyze").execute(&pool).await?;
        out
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await?;
        let out = seed_with!(&pool, sqlx::Sqlite, &inspections, runs_per, per_run, per_insp);
        sqlx::query("analyze").execute(&pool).await?;
        out
    };
    println!(
        "seed inspection_id={insp} run_id={run} runs={n_runs} run_clusters={n_rc} clusters={n_cl} seconds={:.0}",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
