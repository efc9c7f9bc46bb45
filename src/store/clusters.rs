//! Clusters and access keys: what runs learned about an inspection's errors and keys.
//!
//! A cluster's identity is the unique key `(inspection_id, fingerprint)`: a run that finds a
//! known kind of error merges into its row. Each run also keeps its own copy of the clusters
//! of its window (`run_clusters`), so a report stays what it was when later runs merge more.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::keyset::Dir::{Asc, Desc};
use super::keyset::{AccessKeyKey, Order, RunClusterKey, TimeKey};
use super::sql::INSERT_CHUNK;
use super::{FinishedRun, PgStore, SqliteStore, StoreResult};
use crate::engine::template::TEMPLATE_VERSION;
use crate::model::alerting::{NotifyLevel, SeverityRules};
use crate::model::cluster::{self, AccessKeyView, ClusterIdentity, ClusterSummary, ClusterView, Counted};

#[derive(Debug, Clone, Default)]
pub struct ClusterFilter {
    /// Clusters discovered (not from a baseline) at or after this time.
    pub new_since: Option<DateTime<Utc>>,
    pub error_code: Option<String>,
    pub event_source: Option<String>,
}

/// What the store knows of a cluster that a run found again.
#[derive(Debug, Clone)]
pub struct KnownCluster {
    pub id: Uuid,
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
    pub sample_event_ids: Vec<String>,
}

/// A cluster row to write: inserted when new, merged into the known one otherwise.
#[derive(Debug, Clone)]
pub struct ClusterWrite {
    pub id: Uuid,
    pub summary: ClusterSummary,
    /// The merged top lists and samples to keep on the known cluster.
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
    pub sample_event_ids: Vec<String>,
    pub baseline: bool,
    pub sample_record: Option<serde_json::Value>,
}

/// A run that found a known cluster, and how many of its records it counted then.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOccurrence {
    pub run_id: Uuid,
    pub run_created_at: DateTime<Utc>,
    pub window_end: Option<DateTime<Utc>>,
    pub count: i64,
}

#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// The known clusters among `fingerprints`.
    async fn known_clusters(
        &self,
        inspection_id: Uuid,
        fingerprints: &[String],
    ) -> StoreResult<HashMap<String, KnownCluster>>;
    /// Up to `limit` clusters of a run after `after`: new first, then larger.
    async fn run_clusters(
        &self,
        run_id: Uuid,
        after: Option<RunClusterKey>,
        limit: i64,
    ) -> StoreResult<Vec<ClusterSummary>>;
    /// Up to `limit` clusters of an inspection after `after`, newest first.
    async fn list_clusters(
        &self,
        inspection_id: Uuid,
        filter: &ClusterFilter,
        after: Option<TimeKey>,
        limit: i64,
    ) -> StoreResult<Vec<ClusterView>>;
    /// A cluster with its sample record.
    async fn get_cluster(&self, id: Uuid) -> StoreResult<Option<ClusterView>>;
    /// Up to `limit` access keys of an inspection after `after`, most recently active first.
    async fn list_access_keys(
        &self,
        inspection_id: Uuid,
        after: Option<AccessKeyKey>,
        limit: i64,
    ) -> StoreResult<Vec<AccessKeyView>>;
    /// How many access keys an inspection knows.
    async fn count_access_keys(&self, inspection_id: Uuid) -> StoreResult<i64>;
    /// How many clusters each of `inspection_ids` discovered (not from a baseline) at or
    /// after `since`; inspections with none are absent.
    async fn new_cluster_counts(
        &self,
        inspection_ids: &[Uuid],
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<Uuid, i64>>;
    /// The newest `limit` runs that found cluster `cluster_id`, newest first.
    async fn cluster_occurrences(&self, cluster_id: Uuid, limit: i64) -> StoreResult<Vec<ClusterOccurrence>>;
}

/// A cluster's columns but its sample record, which can be large: it is read for one
/// cluster at a time.
const CLUSTER_COLUMNS: &str = "id, inspection_id, fingerprint, account_id, region, event_source, \
     event_name, error_code, template, total_count, first_seen, last_seen, baseline, discovered_at, \
     discovered_run_id, last_run_id, top_principals, top_source_ips, sample_event_ids, sample_message, \
     level, cis_rules";

const RUN_CLUSTER_COLUMNS: &str = "cluster_id, fingerprint, is_new, account_id, region, event_source, \
     event_name, error_code, template, count, first_seen, last_seen, top_principals, top_source_ips, \
     sample_event_ids, sample_message, level, cis_rules";

const ACCESS_KEY_COLUMNS: &str = "access_key_id, principal_arn, account_id, first_seen, last_seen, \
     last_event_name, last_source_ip, total_events";

const CLUSTER_ORDER: Order = Order(&[("discovered_at", Desc), ("id", Desc)]);
const RUN_CLUSTER_ORDER: Order = Order(&[("is_new", Desc), ("count", Desc), ("fingerprint", Asc)]);
const ACCESS_KEY_ORDER: Order = Order(&[("last_seen", Desc), ("access_key_id", Asc)]);

#[derive(sqlx::FromRow)]
struct ClusterRow {
    id: Uuid,
    inspection_id: Uuid,
    fingerprint: String,
    account_id: String,
    region: String,
    event_source: String,
    event_name: String,
    error_code: String,
    template: String,
    total_count: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    baseline: bool,
    discovered_at: DateTime<Utc>,
    discovered_run_id: Option<Uuid>,
    last_run_id: Option<Uuid>,
    top_principals: Json<Vec<Counted>>,
    top_source_ips: Json<Vec<Counted>>,
    sample_event_ids: Json<Vec<String>>,
    sample_message: String,
    level: Option<String>,
    cis_rules: Option<Json<Vec<String>>>,
    /// Selected only for a single cluster: records can be large.
    #[sqlx(default)]
    sample_record: Option<Json<serde_json::Value>>,
}

impl From<ClusterRow> for ClusterView {
    fn from(r: ClusterRow) -> Self {
        let identity = ClusterIdentity {
            fingerprint: r.fingerprint,
            account_id: r.account_id,
            region: r.region,
            event_source: r.event_source,
            event_name: r.event_name,
            error_code: r.error_code,
            template: r.template,
        };
        let (level, cis_rules) = stored_rating(r.level, r.cis_rules, &identity, &r.top_principals.0);
        ClusterView {
            id: r.id,
            inspection_id: r.inspection_id,
            identity,
            total_count: r.total_count,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            level,
            cis_rules,
            baseline: r.baseline,
            discovered_at: r.discovered_at,
            discovered_run_id: r.discovered_run_id,
            last_run_id: r.last_run_id,
            top_principals: r.top_principals.0,
            top_source_ips: r.top_source_ips.0,
            sample_event_ids: r.sample_event_ids.0,
            sample_message: r.sample_message,
            sample_record: r.sample_record.map(|j| j.0),
        }
    }
}

#[derive(sqlx::FromRow)]
struct RunClusterRow {
    cluster_id: Option<Uuid>,
    fingerprint: String,
    is_new: bool,
    account_id: String,
    region: String,
    event_source: String,
    event_name: String,
    error_code: String,
    template: String,
    count: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    top_principals: Json<Vec<Counted>>,
    top_source_ips: Json<Vec<Counted>>,
    sample_event_ids: Json<Vec<String>>,
    sample_message: String,
    level: Option<String>,
    cis_rules: Option<Json<Vec<String>>>,
}

impl From<RunClusterRow> for ClusterSummary {
    fn from(r: RunClusterRow) -> Self {
        let identity = ClusterIdentity {
            fingerprint: r.fingerprint,
            account_id: r.account_id,
            region: r.region,
            event_source: r.event_source,
            event_name: r.event_name,
            error_code: r.error_code,
            template: r.template,
        };
        let (level, cis_rules) = stored_rating(r.level, r.cis_rules, &identity, &r.top_principals.0);
        ClusterSummary {
            cluster_id: r.cluster_id,
            identity,
            is_new: r.is_new,
            level,
            cis_rules,
            count: r.count,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            top_principals: r.top_principals.0,
            top_source_ips: r.top_source_ips.0,
            sample_event_ids: r.sample_event_ids.0,
            sample_message: r.sample_message,
        }
    }
}

/// A row's stored rating. Rows from before ratings were stored are rated at start-up
/// ([`Backend::migrate`](super::Backend::migrate)); one read before that is rated from what
/// the row holds, under the default severity rules.
fn stored_rating(
    level: Option<String>,
    cis_rules: Option<Json<Vec<String>>>,
    identity: &ClusterIdentity,
    top_principals: &[Counted],
) -> (NotifyLevel, Vec<String>) {
    match (level.as_deref().and_then(NotifyLevel::parse), cis_rules) {
        (Some(level), Some(rules)) => (level, rules.0),
        _ => {
            let (rules, level) = cluster::rate(identity, top_principals, None, &SeverityRules::default());
            (level, rules)
        }
    }
}

#[derive(sqlx::FromRow)]
struct AccessKeyRow {
    access_key_id: String,
    principal_arn: String,
    account_id: String,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    last_event_name: String,
    last_source_ip: String,
    total_events: i64,
}

impl From<AccessKeyRow> for AccessKeyView {
    fn from(r: AccessKeyRow) -> Self {
        AccessKeyView {
            access_key_id: r.access_key_id,
            principal_arn: r.principal_arn,
            account_id: r.account_id,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            last_event_name: r.last_event_name,
            last_source_ip: r.last_source_ip,
            total_events: r.total_events,
            active_in_window: false,
        }
    }
}

#[derive(sqlx::FromRow)]
struct KnownClusterRow {
    id: Uuid,
    fingerprint: String,
    top_principals: Json<Vec<Counted>>,
    top_source_ips: Json<Vec<Counted>>,
    sample_event_ids: Json<Vec<String>>,
}

/// Merges a run's clusters into the known ones: counts add up, first and last seen widen, the
/// top lists and samples are the run's merge of both, the first sample record stays.
const CLUSTER_MERGE: &str = " on conflict (inspection_id, fingerprint) do update set \
     total_count = clusters.total_count + excluded.total_count, \
     first_seen = case when excluded.first_seen < clusters.first_seen \
       then excluded.first_seen else clusters.first_seen end, \
     last_seen = case when excluded.last_seen > clusters.last_seen \
       then excluded.last_seen else clusters.last_seen end, \
     last_run_id = excluded.last_run_id, \
     top_principals = excluded.top_principals, \
     top_source_ips = excluded.top_source_ips, \
     sample_event_ids = excluded.sample_event_ids, \
     level = excluded.level, \
     cis_rules = excluded.cis_rules, \
     sample_record = coalesce(clusters.sample_record, excluded.sample_record)";

/// Merges a run's access-key activity into what is known of each key. The newest event
/// decides who used the key last and from where.
const ACCESS_KEY_MERGE: &str = " on conflict (inspection_id, access_key_id) do update set \
     principal_arn = case when excluded.last_seen >= access_keys.last_seen \
       then excluded.principal_arn else access_keys.principal_arn end, \
     account_id = case when excluded.last_seen >= access_keys.last_seen \
       then excluded.account_id else access_keys.account_id end, \
     last_event_name = case when excluded.last_seen >= access_keys.last_seen \
       then excluded.last_event_name else access_keys.last_event_name end, \
     last_source_ip = case when excluded.last_seen >= access_keys.last_seen \
       then excluded.last_source_ip else access_keys.last_source_ip end, \
     last_seen = case when excluded.last_seen > access_keys.last_seen \
       then excluded.last_seen else access_keys.last_seen end, \
     first_seen = case when excluded.first_seen < access_keys.first_seen \
       then excluded.first_seen else access_keys.first_seen end, \
     total_events = access_keys.total_events + excluded.total_events, \
     last_run_id = excluded.last_run_id";

/// A cluster row stored before ratings were: a known cluster (`key` its id) or a run's (`key`
/// its run id), with what rating it takes.
#[derive(sqlx::FromRow)]
struct UnratedRow {
    key: Uuid,
    inspection_id: Uuid,
    fingerprint: String,
    account_id: String,
    region: String,
    event_source: String,
    event_name: String,
    error_code: String,
    template: String,
    top_principals: Json<Vec<Counted>>,
    sample_record: Option<Json<serde_json::Value>>,
}

impl UnratedRow {
    fn rate(&self, severity: &SeverityRules) -> (Vec<String>, NotifyLevel) {
        let identity = ClusterIdentity {
            fingerprint: self.fingerprint.clone(),
            account_id: self.account_id.clone(),
            region: self.region.clone(),
            event_source: self.event_source.clone(),
            event_name: self.event_name.clone(),
            error_code: self.error_code.clone(),
            template: self.template.clone(),
        };
        cluster::rate(&identity, &self.top_principals.0, self.sample_record.as_ref().map(|j| &j.0), severity)
    }
}

/// Rows rated per statement when rating old rows.
const RATING_BATCH: i64 = 500;

/// Sets `level` and `cis_rules` of a report's new clusters from `ratings` (by fingerprint).
fn rate_report(report: &mut serde_json::Value, ratings: &HashMap<String, (Vec<String>, NotifyLevel)>) {
    let Some(clusters) = report.get_mut("new_clusters").and_then(|c| c.as_array_mut()) else { return };
    for c in clusters {
        let rating = c.get("fingerprint").and_then(|f| f.as_str()).and_then(|f| ratings.get(f));
        if let (Some((rules, level)), Some(obj)) = (rating, c.as_object_mut()) {
            obj.insert("level".into(), serde_json::json!(level));
            obj.insert("cis_rules".into(), serde_json::json!(rules));
        }
    }
}

/// [`ClusterStore`] for a store over one sqlx backend, the cluster and access-key writes of a
/// finished run, and the rating of clusters stored before ratings were.
macro_rules! cluster_store {
    ($store:ident, $db:ty) => {
        #[async_trait]
        impl ClusterStore for $store {
            async fn known_clusters(
                &self,
                inspection_id: Uuid,
                fingerprints: &[String],
            ) -> StoreResult<HashMap<String, KnownCluster>> {
                let mut out = HashMap::new();
                for chunk in fingerprints.chunks(INSERT_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "select id, fingerprint, top_principals, top_source_ips, sample_event_ids \
                         from clusters where inspection_id = ",
                    );
                    qb.push_bind(inspection_id).push(" and fingerprint in (");
                    let mut sep = qb.separated(", ");
                    for fp in chunk {
                        sep.push_bind(fp);
                    }
                    qb.push(")");
                    for r in qb.build_query_as::<KnownClusterRow>().fetch_all(&self.pool).await? {
                        let known = KnownCluster {
                            id: r.id,
                            top_principals: r.top_principals.0,
                            top_source_ips: r.top_source_ips.0,
                            sample_event_ids: r.sample_event_ids.0,
                        };
                        out.insert(r.fingerprint, known);
                    }
                }
                Ok(out)
            }

            async fn run_clusters(
                &self,
                run_id: Uuid,
                after: Option<RunClusterKey>,
                limit: i64,
            ) -> StoreResult<Vec<ClusterSummary>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "select {RUN_CLUSTER_COLUMNS} from run_clusters where run_id = "
                ));
                qb.push_bind(run_id);
                RUN_CLUSTER_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<RunClusterRow>().fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn list_clusters(
                &self,
                inspection_id: Uuid,
                filter: &ClusterFilter,
                after: Option<TimeKey>,
                limit: i64,
            ) -> StoreResult<Vec<ClusterView>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "select {CLUSTER_COLUMNS} from clusters where inspection_id = "
                ));
                qb.push_bind(inspection_id);
                if let Some(since) = filter.new_since {
                    qb.push(" and baseline = ").push_bind(false).push(" and discovered_at >= ").push_bind(since);
                }
                if let Some(code) = &filter.error_code {
                    qb.push(" and error_code = ").push_bind(code.clone());
                }
                if let Some(source) = &filter.event_source {
                    qb.push(" and event_source = ").push_bind(source.clone());
                }
                CLUSTER_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<ClusterRow>().fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn get_cluster(&self, id: Uuid) -> StoreResult<Option<ClusterView>> {
                let sql = format!("select {CLUSTER_COLUMNS}, sample_record from clusters where id = $1");
                let row = sqlx::query_as::<$db, ClusterRow>(&sql).bind(id).fetch_optional(&self.pool).await?;
                Ok(row.map(Into::into))
            }

            async fn list_access_keys(
                &self,
                inspection_id: Uuid,
                after: Option<AccessKeyKey>,
                limit: i64,
            ) -> StoreResult<Vec<AccessKeyView>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "select {ACCESS_KEY_COLUMNS} from access_keys where inspection_id = "
                ));
                qb.push_bind(inspection_id);
                ACCESS_KEY_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<AccessKeyRow>().fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn count_access_keys(&self, inspection_id: Uuid) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("select count(*) from access_keys where inspection_id = $1")
                    .bind(inspection_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn new_cluster_counts(
                &self,
                inspection_ids: &[Uuid],
                since: DateTime<Utc>,
            ) -> StoreResult<HashMap<Uuid, i64>> {
                let mut out = HashMap::new();
                for chunk in inspection_ids.chunks(INSERT_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "select inspection_id, count(*) from clusters where baseline = ",
                    );
                    qb.push_bind(false).push(" and discovered_at >= ").push_bind(since);
                    qb.push(" and inspection_id in (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(") group by inspection_id");
                    let rows: Vec<(Uuid, i64)> = qb.build_query_as().fetch_all(&self.pool).await?;
                    out.extend(rows);
                }
                Ok(out)
            }

            async fn cluster_occurrences(&self, cluster_id: Uuid, limit: i64) -> StoreResult<Vec<ClusterOccurrence>> {
                let rows: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>, i64)> = sqlx::query_as(
                    "select r.id, r.created_at, r.window_end, rc.count from run_clusters rc \
                     join runs r on r.id = rc.run_id where rc.cluster_id = $1 \
                     order by r.created_at desc, r.id desc limit $2",
                )
                .bind(cluster_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(run_id, run_created_at, window_end, count)| ClusterOccurrence {
                        run_id,
                        run_created_at,
                        window_end,
                        count,
                    })
                    .collect())
            }
        }

        impl $store {
            /// Rates the clusters stored before ratings were (migration 0007), as the runs that
            /// found them would have: each with its sample record, under its inspection's
            /// severity rules as they are now; a run's clusters with their known cluster's
            /// sample, and the new clusters of its report with them.
            pub(super) async fn backfill_cluster_ratings(&self) -> anyhow::Result<()> {
                let mut severity: HashMap<Uuid, SeverityRules> = HashMap::new();
                loop {
                    let rows: Vec<UnratedRow> = sqlx::query_as(
                        "select id as key, inspection_id, fingerprint, account_id, region, event_source, \
                         event_name, error_code, template, top_principals, sample_record \
                         from clusters where cis_rules is null limit $1",
                    )
                    .bind(RATING_BATCH)
                    .fetch_all(&self.pool)
                    .await?;
                    if rows.is_empty() {
                        break;
                    }
                    for r in rows {
                        let (rules, level) = r.rate(self.severity_rules(&mut severity, r.inspection_id).await?);
                        sqlx::query("update clusters set level = $2, cis_rules = $3 where id = $1")
                            .bind(r.key)
                            .bind(level.as_str())
                            .bind(Json(&rules))
                            .execute(&self.pool)
                            .await?;
                    }
                }
                loop {
                    let rows: Vec<UnratedRow> = sqlx::query_as(
                        "select rc.run_id as key, r.inspection_id, rc.fingerprint, rc.account_id, rc.region, \
                         rc.event_source, rc.event_name, rc.error_code, rc.template, rc.top_principals, \
                         c.sample_record from run_clusters rc join runs r on r.id = rc.run_id \
                         left join clusters c on c.id = rc.cluster_id where rc.cis_rules is null limit $1",
                    )
                    .bind(RATING_BATCH)
                    .fetch_all(&self.pool)
                    .await?;
                    if rows.is_empty() {
                        return Ok(());
                    }
                    let mut by_run: HashMap<Uuid, HashMap<String, (Vec<String>, NotifyLevel)>> = HashMap::new();
                    for r in rows {
                        let (rules, level) = r.rate(self.severity_rules(&mut severity, r.inspection_id).await?);
                        sqlx::query(
                            "update run_clusters set level = $3, cis_rules = $4 where run_id = $1 and fingerprint = $2",
                        )
                        .bind(r.key)
                        .bind(&r.fingerprint)
                        .bind(level.as_str())
                        .bind(Json(&rules))
                        .execute(&self.pool)
                        .await?;
                        by_run.entry(r.key).or_default().insert(r.fingerprint, (rules, level));
                    }
                    for (run_id, ratings) in by_run {
                        let report: Option<(Option<Json<serde_json::Value>>,)> =
                            sqlx::query_as("select report from runs where id = $1")
                                .bind(run_id)
                                .fetch_optional(&self.pool)
                                .await?;
                        let Some((Some(Json(mut report)),)) = report else { continue };
                        rate_report(&mut report, &ratings);
                        sqlx::query("update runs set report = $2 where id = $1")
                            .bind(run_id)
                            .bind(Json(&report))
                            .execute(&self.pool)
                            .await?;
                    }
                }
            }

            /// An inspection's severity rules as stored (the default ones when unreadable).
            async fn severity_rules<'a>(
                &self,
                cache: &'a mut HashMap<Uuid, SeverityRules>,
                inspection_id: Uuid,
            ) -> StoreResult<&'a SeverityRules> {
                if !cache.contains_key(&inspection_id) {
                    let settings: Option<(Json<serde_json::Value>,)> =
                        sqlx::query_as("select settings from inspections where id = $1")
                            .bind(inspection_id)
                            .fetch_optional(&self.pool)
                            .await?;
                    let rules = settings
                        .and_then(|(Json(s),)| s.get("severity_rules").cloned())
                        .and_then(|r| serde_json::from_value(r).ok())
                        .unwrap_or_default();
                    cache.insert(inspection_id, rules);
                }
                Ok(&cache[&inspection_id])
            }

            /// Inserts the run's new clusters and merges the ones it found again.
            pub(super) async fn write_clusters(
                conn: &mut <$db as sqlx::Database>::Connection,
                run: &FinishedRun,
            ) -> StoreResult<()> {
                for chunk in run.cluster_writes.chunks(INSERT_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "insert into clusters (id, inspection_id, fingerprint, account_id, region, event_source, \
                         event_name, error_code, template, total_count, first_seen, last_seen, baseline, \
                         discovered_at, discovered_run_id, last_run_id, top_principals, top_source_ips, \
                         sample_event_ids, sample_message, sample_record, level, cis_rules, template_version) ",
                    );
                    qb.push_values(chunk, |mut b, c| {
                        let s = &c.summary;
                        b.push_bind(c.id)
                            .push_bind(run.inspection_id)
                            .push_bind(&s.identity.fingerprint)
                            .push_bind(&s.identity.account_id)
                            .push_bind(&s.identity.region)
                            .push_bind(&s.identity.event_source)
                            .push_bind(&s.identity.event_name)
                            .push_bind(&s.identity.error_code)
                            .push_bind(&s.identity.template)
                            .push_bind(s.count)
                            .push_bind(s.first_seen)
                            .push_bind(s.last_seen)
                            .push_bind(c.baseline)
                            .push_bind(run.finished_at)
                            .push_bind(run.run_id)
                            .push_bind(run.run_id)
                            .push_bind(Json(&c.top_principals))
                            .push_bind(Json(&c.top_source_ips))
                            .push_bind(Json(&c.sample_event_ids))
                            .push_bind(&s.sample_message)
                            .push_bind(c.sample_record.as_ref().map(Json))
                            .push_bind(s.level.as_str())
                            .push_bind(Json(&s.cis_rules))
                            .push_bind(TEMPLATE_VERSION);
                    });
                    qb.push(CLUSTER_MERGE);
                    qb.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// The run's own copy of the clusters of its window.
            pub(super) async fn write_run_clusters(
                conn: &mut <$db as sqlx::Database>::Connection,
                run: &FinishedRun,
            ) -> StoreResult<()> {
                for chunk in run.run_clusters.chunks(INSERT_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "insert into run_clusters (run_id, cluster_id, fingerprint, is_new, account_id, region, \
                         event_source, event_name, error_code, template, count, first_seen, last_seen, \
                         top_principals, top_source_ips, sample_event_ids, sample_message, level, cis_rules) ",
                    );
                    qb.push_values(chunk, |mut b, s| {
                        b.push_bind(run.run_id)
                            .push_bind(s.cluster_id)
                            .push_bind(&s.identity.fingerprint)
                            .push_bind(s.is_new)
                            .push_bind(&s.identity.account_id)
                            .push_bind(&s.identity.region)
                            .push_bind(&s.identity.event_source)
                            .push_bind(&s.identity.event_name)
                            .push_bind(&s.identity.error_code)
                            .push_bind(&s.identity.template)
                            .push_bind(s.count)
                            .push_bind(s.first_seen)
                            .push_bind(s.last_seen)
                            .push_bind(Json(&s.top_principals))
                            .push_bind(Json(&s.top_source_ips))
                            .push_bind(Json(&s.sample_event_ids))
                            .push_bind(&s.sample_message)
                            .push_bind(s.level.as_str())
                            .push_bind(Json(&s.cis_rules));
                    });
                    qb.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Merges the run's access-key activity into each key's.
            pub(super) async fn write_access_keys(
                conn: &mut <$db as sqlx::Database>::Connection,
                run: &FinishedRun,
            ) -> StoreResult<()> {
                for chunk in run.key_writes.chunks(INSERT_CHUNK) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "insert into access_keys (inspection_id, access_key_id, principal_arn, account_id, \
                         first_seen, last_seen, last_event_name, last_source_ip, total_events, last_run_id) ",
                    );
                    qb.push_values(chunk, |mut b, k| {
                        b.push_bind(run.inspection_id)
                            .push_bind(&k.access_key_id)
                            .push_bind(&k.principal_arn)
                            .push_bind(&k.account_id)
                            .push_bind(k.first_seen)
                            .push_bind(k.last_seen)
                            .push_bind(&k.last_event_name)
                            .push_bind(&k.last_source_ip)
                            .push_bind(k.total_events)
                            .push_bind(run.run_id);
                    });
                    qb.push(ACCESS_KEY_MERGE);
                    qb.build().execute(&mut *conn).await?;
                }
                Ok(())
            }
        }
    };
}

cluster_store!(PgStore, sqlx::Postgres);
cluster_store!(SqliteStore, sqlx::Sqlite);
