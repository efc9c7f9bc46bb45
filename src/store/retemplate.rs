//! Clusters made by older template rules, re-templated when the service starts.
//!
//! A cluster's template is part of its fingerprint, and a fingerprint the store does not
//! know is a new error. New rules would then announce every known error again. So each
//! cluster records the version of the rules that made it, and [`Backend::migrate`] brings
//! older ones to the current rules: the template is made again from the cluster's sample
//! message (the whole `errorMessage` of its sample record when that is the same message),
//! and the cluster keeps its id, its discovery and its baseline mark under the new
//! fingerprint. Clusters that the new rules make one (a name now masked) become one: the
//! first discovered absorbs the others' counts, top lists and runs.
//!
//! A cluster that the new rules would split keeps the template of its sample; the other
//! errors it held are new the next time they are seen, as they are to a new rule set.
//!
//! [`Backend::migrate`]: super::Backend::migrate

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::INSERT_CHUNK;
use super::{PgStore, SqliteStore};
use crate::engine::ClusterKey;
use crate::engine::template::{TEMPLATE_VERSION, template};
use crate::model::cluster::{Counted, merge_counted};

/// Old clusters read per statement: each may hold a sample record of up to 64 KiB.
const PAGE: i64 = 200;

/// A stored cluster, as far as re-templating it needs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stored {
    pub id: Uuid,
    pub inspection_id: Uuid,
    pub key: ClusterKey,
    pub total_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub discovered_at: DateTime<Utc>,
    pub last_run_id: Option<Uuid>,
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
    /// The message to template: for a cluster of the current rules, unused.
    pub message: String,
}

/// The new state of a cluster that stays.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Keep {
    pub id: Uuid,
    pub fingerprint: String,
    pub template: String,
    pub total_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub last_run_id: Option<Uuid>,
    pub top_principals: Vec<Counted>,
    pub top_source_ips: Vec<Counted>,
}

/// What re-templating does: clusters to rewrite, and clusters merged into another (`from`
/// is deleted once its runs point to `into`).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    pub keep: Vec<Keep>,
    pub merged: Vec<(Uuid, Uuid)>,
}

/// The message a cluster is templated from: the sample record's `errorMessage` when the
/// sample message is its beginning (samples are cut to 1 KiB, templates look at 2,048
/// chars), else the sample message.
pub(super) fn message_of(sample_message: String, sample_record: Option<&serde_json::Value>) -> String {
    match sample_record.and_then(|r| r.get("errorMessage")).and_then(|m| m.as_str()) {
        Some(full) if full.starts_with(&sample_message) => full.to_owned(),
        _ => sample_message,
    }
}

/// Re-templates `old` clusters. `current` are clusters of the current rules already stored
/// under the fingerprints the old ones get; they take part in merges and are otherwise left
/// alone. In a group that becomes one, the first discovered stays (ties: the lower id): its
/// discovery and baseline mark are when the error became known.
pub(super) fn plan(old: Vec<Stored>, current: Vec<Stored>) -> Plan {
    let mut groups: BTreeMap<(Uuid, String), Vec<Stored>> = BTreeMap::new();
    for mut c in old {
        c.key.template = template(&c.message);
        groups.entry((c.inspection_id, c.key.fingerprint())).or_default().push(c);
    }
    for c in current {
        if let Some(g) = groups.get_mut(&(c.inspection_id, c.key.fingerprint())) {
            g.push(c);
        }
    }
    let mut out = Plan::default();
    for ((_, fingerprint), mut group) in groups {
        group.sort_by_key(|c| (c.discovered_at, c.id));
        let mut rest = group.into_iter();
        let first = rest.next().expect("a group has a member");
        let keep_len = first.top_principals.len().max(first.top_source_ips.len());
        let mut keep = Keep {
            id: first.id,
            fingerprint,
            template: first.key.template,
            total_count: first.total_count,
            first_seen: first.first_seen,
            last_seen: first.last_seen,
            last_run_id: first.last_run_id,
            top_principals: first.top_principals,
            top_source_ips: first.top_source_ips,
        };
        for other in rest {
            keep.total_count += other.total_count;
            keep.first_seen = keep.first_seen.min(other.first_seen);
            if other.last_seen > keep.last_seen {
                keep.last_seen = other.last_seen;
                keep.last_run_id = other.last_run_id.or(keep.last_run_id);
            }
            let len = keep_len.max(other.top_principals.len()).max(other.top_source_ips.len());
            keep.top_principals = merge_counted(&keep.top_principals, &other.top_principals, len);
            keep.top_source_ips = merge_counted(&keep.top_source_ips, &other.top_source_ips, len);
            out.merged.push((other.id, keep.id));
        }
        out.keep.push(keep);
    }
    out
}

/// What re-templating did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retemplated {
    /// Clusters of older rules found.
    pub clusters: usize,
    /// Of those, how many merged into another.
    pub merged: usize,
}

/// Says what re-templating did, when it did anything.
pub(super) fn log(r: Retemplated) {
    if r.clusters > 0 {
        tracing::info!(
            clusters = r.clusters,
            merged = r.merged,
            template_version = TEMPLATE_VERSION,
            "re-templated clusters made by older template rules; known errors stay known"
        );
    }
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    id: Uuid,
    inspection_id: Uuid,
    account_id: String,
    region: String,
    event_source: String,
    event_name: String,
    error_code: String,
    template: String,
    total_count: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    discovered_at: DateTime<Utc>,
    last_run_id: Option<Uuid>,
    top_principals: Json<Vec<Counted>>,
    top_source_ips: Json<Vec<Counted>>,
    sample_message: String,
    #[sqlx(default)]
    sample_record: Option<Json<serde_json::Value>>,
}

impl From<StoredRow> for Stored {
    fn from(r: StoredRow) -> Self {
        Stored {
            id: r.id,
            inspection_id: r.inspection_id,
            key: ClusterKey {
                account_id: r.account_id,
                region: r.region,
                event_source: r.event_source,
                event_name: r.event_name,
                error_code: r.error_code,
                template: r.template,
            },
            total_count: r.total_count,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            discovered_at: r.discovered_at,
            last_run_id: r.last_run_id,
            top_principals: r.top_principals.0,
            top_source_ips: r.top_source_ips.0,
            message: message_of(r.sample_message, r.sample_record.as_ref().map(|j| &j.0)),
        }
    }
}

const STORED_COLUMNS: &str = "id, inspection_id, account_id, region, event_source, event_name, error_code, \
     template, total_count, first_seen, last_seen, discovered_at, last_run_id, top_principals, top_source_ips, \
     sample_message";

/// Re-templating for a store over one sqlx backend.
macro_rules! retemplate_store {
    ($store:ident, $db:ty) => {
        impl $store {
            /// Brings clusters made by older template rules to the current ones, in one
            /// transaction: all of them or none.
            pub(super) async fn retemplate_clusters(&self) -> anyhow::Result<Retemplated> {
                let mut tx = self.pool.begin().await?;
                let mut old: Vec<Stored> = Vec::new();
                let mut after = Uuid::nil();
                loop {
                    let sql = format!(
                        "select {STORED_COLUMNS}, sample_record from clusters \
                         where template_version < $1 and id > $2 order by id limit $3{}",
                        Self::LOCK_ROWS
                    );
                    let rows: Vec<StoredRow> =
                        sqlx::query_as(&sql).bind(TEMPLATE_VERSION).bind(after).bind(PAGE).fetch_all(&mut *tx).await?;
                    let Some(last) = rows.last() else { break };
                    after = last.id;
                    old.extend(rows.into_iter().map(Stored::from));
                }
                if old.is_empty() {
                    return Ok(Retemplated::default());
                }
                // Out of the way of the fingerprints they get: `~` is no hex digit, so no
                // current cluster has one of these.
                sqlx::query("update clusters set fingerprint = '~' || fingerprint where template_version < $1")
                    .bind(TEMPLATE_VERSION)
                    .execute(&mut *tx)
                    .await?;
                let mut wanted: HashMap<Uuid, Vec<String>> = HashMap::new();
                for c in &old {
                    let mut key = c.key.clone();
                    key.template = template(&c.message);
                    wanted.entry(c.inspection_id).or_default().push(key.fingerprint());
                }
                let mut current: Vec<Stored> = Vec::new();
                for (inspection_id, fingerprints) in &wanted {
                    for chunk in fingerprints.chunks(INSERT_CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                            "select {STORED_COLUMNS} from clusters where inspection_id = "
                        ));
                        qb.push_bind(*inspection_id).push(" and fingerprint in (");
                        let mut sep = qb.separated(", ");
                        for fp in chunk {
                            sep.push_bind(fp);
                        }
                        qb.push(")");
                        let rows = qb.build_query_as::<StoredRow>().fetch_all(&mut *tx).await?;
                        current.extend(rows.into_iter().map(Stored::from));
                    }
                }
                let figures = Retemplated { clusters: old.len(), merged: 0 };
                let plan = plan(old, current);
                for (from, into) in &plan.merged {
                    sqlx::query("update run_clusters set cluster_id = $2 where cluster_id = $1")
                        .bind(from)
                        .bind(into)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("delete from clusters where id = $1").bind(from).execute(&mut *tx).await?;
                }
                for k in &plan.keep {
                    sqlx::query(
                        "update clusters set fingerprint = $2, template = $3, template_version = $4, \
                         total_count = $5, first_seen = $6, last_seen = $7, last_run_id = $8, \
                         top_principals = $9, top_source_ips = $10 where id = $1",
                    )
                    .bind(k.id)
                    .bind(&k.fingerprint)
                    .bind(&k.template)
                    .bind(TEMPLATE_VERSION)
                    .bind(k.total_count)
                    .bind(k.first_seen)
                    .bind(k.last_seen)
                    .bind(k.last_run_id)
                    .bind(Json(&k.top_principals))
                    .bind(Json(&k.top_source_ips))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Retemplated { merged: plan.merged.len(), ..figures })
            }
        }
    };
}

retemplate_store!(PgStore, sqlx::Postgres);
retemplate_store!(SqliteStore, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 1, 0, minute, 0).unwrap()
    }

    fn counted(pairs: &[(&str, u64)]) -> Vec<Counted> {
        pairs.iter().map(|(v, c)| Counted { value: v.to_string(), count: *c }).collect()
    }

    fn stored(n: u128, inspection: u128, message: &str, template: &str, discovered: u32) -> Stored {
        Stored {
            id: Uuid::from_u128(n),
            inspection_id: Uuid::from_u128(inspection),
            key: ClusterKey {
                account_id: "111111111111".into(),
                region: "us-east-1".into(),
                event_source: "iam.amazonaws.com".into(),
                event_name: "DeleteLoginProfile".into(),
                error_code: "NoSuchEntityException".into(),
                template: template.into(),
            },
            total_count: n as i64,
            first_seen: at(discovered),
            last_seen: at(discovered + 1),
            discovered_at: at(discovered + 2),
            last_run_id: Some(Uuid::from_u128(100 + n)),
            top_principals: counted(&[("alice", n as u64)]),
            top_source_ips: counted(&[("10.0.0.1", n as u64)]),
            message: message.into(),
        }
    }

    #[test]
    fn names_that_are_now_masked_merge_into_the_first_discovered() {
        let old = vec![
            stored(
                2,
                1,
                "Login Profile for User alice cannot be found.",
                "Login Profile for User alice cannot be found.",
                5,
            ),
            stored(
                3,
                1,
                "Login Profile for User bob cannot be found.",
                "Login Profile for User bob cannot be found.",
                1,
            ),
            // Another inspection keeps its own.
            stored(
                4,
                9,
                "Login Profile for User carol cannot be found.",
                "Login Profile for User carol cannot be found.",
                3,
            ),
        ];
        let plan = plan(old, Vec::new());
        assert_eq!(plan.merged, [(Uuid::from_u128(2), Uuid::from_u128(3))]);
        assert_eq!(plan.keep.len(), 2);
        let three = plan.keep.iter().find(|k| k.id == Uuid::from_u128(3)).unwrap();
        assert_eq!(three.template, "Login Profile for User <NAME> cannot be found.");
        assert_eq!(three.total_count, 5);
        assert_eq!((three.first_seen, three.last_seen), (at(1), at(6)));
        assert_eq!(three.last_run_id, Some(Uuid::from_u128(102)), "the run that saw it last");
        assert_eq!(three.top_principals, counted(&[("alice", 5)]));
        let mut key = stored(3, 1, "", "Login Profile for User <NAME> cannot be found.", 0).key;
        assert_eq!(three.fingerprint, key.fingerprint());
        key.template = "Login Profile for User bob cannot be found.".into();
        assert_ne!(three.fingerprint, key.fingerprint());
    }

    #[test]
    fn unchanged_templates_keep_their_fingerprint() {
        let msg = "The user with name 123 cannot be found.";
        let old = stored(1, 1, msg, "The user with name <NUM> cannot be found.", 0);
        let fingerprint = old.key.fingerprint();
        let plan = plan(vec![old], Vec::new());
        assert!(plan.merged.is_empty());
        assert_eq!(plan.keep[0].fingerprint, fingerprint);
        assert_eq!(plan.keep[0].total_count, 1);
    }

    #[test]
    fn a_current_cluster_of_the_same_error_takes_part() {
        let msg = "Login Profile for User alice cannot be found.";
        let current = stored(7, 1, "", "Login Profile for User <NAME> cannot be found.", 9);
        let unrelated = stored(8, 1, "", "Something else", 0);
        let plan = plan(vec![stored(2, 1, msg, msg, 4)], vec![current, unrelated]);
        // The older one was known first: it stays, the current one merges into it.
        assert_eq!(plan.merged, [(Uuid::from_u128(7), Uuid::from_u128(2))]);
        assert_eq!(plan.keep.len(), 1);
        assert_eq!(plan.keep[0].total_count, 9);
        assert_eq!(plan.keep[0].top_principals, counted(&[("alice", 9)]));
    }

    #[test]
    fn the_sample_record_gives_the_whole_message() {
        let long = format!("Denied: {}", "x".repeat(3000));
        let record = serde_json::json!({"errorMessage": long});
        let cut = long[..1024].to_string();
        assert_eq!(message_of(cut.clone(), Some(&record)), long);
        // A record that is not the sample message's: the sample message.
        let other = serde_json::json!({"errorMessage": "something else"});
        assert_eq!(message_of(cut.clone(), Some(&other)), cut);
        assert_eq!(message_of(cut.clone(), Some(&serde_json::json!({"errorMessage": 5}))), cut);
        assert_eq!(message_of(cut.clone(), None), cut);
    }
}
