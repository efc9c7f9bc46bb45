//! An upgrade of the template rules finds no new error on unchanged traffic: a database whose
//! clusters were made by version 1 of the rules is re-templated when the service starts, and
//! a run over the same records then reports 0 new clusters.

mod v1;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::types::Json;
use uuid::Uuid;

use cloudtrail_inspector::engine::{Cluster, ClusterKey, Clusterer, ClustererConfig, Counted};
use cloudtrail_inspector::model::cluster::merge_counted;
use cloudtrail_inspector::store;

use crate::common::data;
use crate::common::fake_cwl::FakeCwl;
use crate::common::{BACKENDS, Backend, TestApp, inspection_body, test_cipher};

const GROUP: &str = "aws-cloudtrail-logs-123837392027";

/// A cluster as version 1 of the rules made it from the same records.
struct V1Cluster {
    id: Uuid,
    key: ClusterKey,
    count: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    top_principals: Vec<Counted>,
    top_source_ips: Vec<Counted>,
    sample_event_ids: Vec<String>,
    sample_message: String,
    sample_record: Option<Value>,
}

/// The clusters version 1 made of `events`: each error record is clustered on its own by the
/// engine (for its account, region, API and code), then grouped by its version-1 template.
fn v1_clusters(events: &[(i64, String)]) -> Vec<V1Cluster> {
    let mut by_key: BTreeMap<ClusterKey, V1Cluster> = BTreeMap::new();
    for (_, raw) in events {
        let mut one = Clusterer::new(ClustererConfig::default());
        one.ingest(raw.as_bytes());
        let Some(c): Option<Cluster> = one.finish().clusters.into_iter().next() else { continue };
        let record: Value = serde_json::from_str(raw).unwrap();
        let mut key = c.key.clone();
        key.template = v1::template_v1(record["errorMessage"].as_str().unwrap_or(""));
        let earliest = |v: &V1Cluster| (v.first_seen, v.sample_event_ids.first().cloned());
        match by_key.get_mut(&key) {
            Some(v) => {
                let earlier = (c.first_seen, c.sample_event_ids.first().cloned()) < earliest(v);
                v.count += c.count as i64;
                v.first_seen = v.first_seen.min(c.first_seen);
                v.last_seen = v.last_seen.max(c.last_seen);
                v.top_principals = merge_counted(&v.top_principals, &c.top_principals, 5);
                v.top_source_ips = merge_counted(&v.top_source_ips, &c.top_source_ips, 5);
                if earlier {
                    v.sample_message = c.sample_message;
                    v.sample_record = c.sample_record.map(|r| serde_json::from_str(&r).unwrap());
                }
                v.sample_event_ids.extend(c.sample_event_ids);
                v.sample_event_ids.sort();
                v.sample_event_ids.truncate(5);
            }
            None => {
                let v = V1Cluster {
                    id: Uuid::now_v7(),
                    key: key.clone(),
                    count: c.count as i64,
                    first_seen: c.first_seen,
                    last_seen: c.last_seen,
                    top_principals: c.top_principals,
                    top_source_ips: c.top_source_ips,
                    sample_event_ids: c.sample_event_ids,
                    sample_message: c.sample_message,
                    sample_record: c.sample_record.map(|r| serde_json::from_str(&r).unwrap()),
                };
                by_key.insert(key, v);
            }
        }
    }
    by_key.into_values().collect()
}

/// Replaces the inspection's clusters, and the run's copies of them, with `clusters` as
/// version 1 stored them.
macro_rules! store_as_v1 {
    ($pool:expr, $inspection:expr, $run:expr, $finished:expr, $clusters:expr) => {{
        let pool = $pool;
        sqlx::query("delete from run_clusters where run_id = $1").bind($run).execute(&pool).await.unwrap();
        sqlx::query("delete from clusters where inspection_id = $1").bind($inspection).execute(&pool).await.unwrap();
        for c in $clusters {
            let fingerprint = c.key.fingerprint();
            sqlx::query(
                "insert into clusters (id, inspection_id, fingerprint, account_id, region, event_source, \
                 event_name, error_code, template, total_count, first_seen, last_seen, baseline, discovered_at, \
                 discovered_run_id, last_run_id, top_principals, top_source_ips, sample_event_ids, sample_message, \
                 sample_record, template_version) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17, $18, $19, \
                 $20, 1)",
            )
            .bind(c.id)
            .bind($inspection)
            .bind(&fingerprint)
            .bind(&c.key.account_id)
            .bind(&c.key.region)
            .bind(&c.key.event_source)
            .bind(&c.key.event_name)
            .bind(&c.key.error_code)
            .bind(&c.key.template)
            .bind(c.count)
            .bind(c.first_seen)
            .bind(c.last_seen)
            .bind(false)
            .bind($finished)
            .bind($run)
            .bind(Json(&c.top_principals))
            .bind(Json(&c.top_source_ips))
            .bind(Json(&c.sample_event_ids))
            .bind(&c.sample_message)
            .bind(c.sample_record.as_ref().map(Json))
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "insert into run_clusters (run_id, cluster_id, fingerprint, is_new, account_id, region, \
                 event_source, event_name, error_code, template, count, first_seen, last_seen, top_principals, \
                 top_source_ips, sample_event_ids, sample_message) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .bind($run)
            .bind(c.id)
            .bind(&fingerprint)
            .bind(true)
            .bind(&c.key.account_id)
            .bind(&c.key.region)
            .bind(&c.key.event_source)
            .bind(&c.key.event_name)
            .bind(&c.key.error_code)
            .bind(&c.key.template)
            .bind(c.count)
            .bind(c.first_seen)
            .bind(c.last_seen)
            .bind(Json(&c.top_principals))
            .bind(Json(&c.top_source_ips))
            .bind(Json(&c.sample_event_ids))
            .bind(&c.sample_message)
            .execute(&pool)
            .await
            .unwrap();
        }
        let unlinked: i64 = sqlx::query_scalar("select count(*) from run_clusters where cluster_id is null")
            .fetch_one(&pool)
            .await
            .unwrap();
        let versions: Vec<(i32,)> =
            sqlx::query_as("select distinct template_version from clusters").fetch_all(&pool).await.unwrap();
        pool.close().await;
        (unlinked, versions)
    }};
}

async fn all_clusters(app: &TestApp, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app.get(&format!("/api/v1/inspections/{id}/clusters?limit=20&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

fn fingerprints(clusters: &[Value]) -> BTreeSet<String> {
    clusters.iter().map(|c| c["fingerprint"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn an_upgrade_of_the_rules_finds_nothing_new_on_unchanged_traffic() {
    for backend in BACKENDS {
        let fake = FakeCwl::start().await;
        let end = (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
        let events = data::shift_to(&data::invictus(), end - TimeDelta::minutes(58));
        fake.put_events(GROUP, "123837392027_CloudTrail_us-east-1", events.clone());
        let app = TestApp::new(backend).await;
        let mut body = inspection_body("upgrade", &[GROUP], &fake.endpoint());
        body["baseline_days"] = json!(0);
        let id = app.create_inspection(body).await["id"].as_str().unwrap().to_string();
        let (status, first) = app.post(&format!("/api/v1/inspections/{id}/runs"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["status"], "succeeded", "{first}");
        let current = all_clusters(&app, &id).await;
        assert_eq!(current.len() as i64, first["clusters_total"].as_i64().unwrap());

        // The same records as version 1 clustered them, stored as version 1 stored them.
        let old = v1_clusters(&events);
        assert_eq!(old.iter().map(|c| c.count).sum::<i64>(), 300);
        let old_fps: BTreeSet<String> = old.iter().map(|c| c.key.fingerprint()).collect();
        let changed = old_fps.difference(&fingerprints(&current)).count();
        // Version 1 kept user names: three clusters of DeleteLoginProfile where there is one.
        assert_eq!(old.len(), current.len() + 2);
        assert!(changed >= 3, "the rules changed these records' templates: {changed}");
        let inspection = Uuid::parse_str(&id).unwrap();
        let run = Uuid::parse_str(first["id"].as_str().unwrap()).unwrap();
        let finished: DateTime<Utc> = first["finished_at"].as_str().unwrap().parse().unwrap();
        let url = app.guard.url.clone();
        let (unlinked, versions) = match backend {
            Backend::Postgres => {
                store_as_v1!(sqlx::PgPool::connect(&url).await.unwrap(), inspection, run, finished, &old)
            }
            Backend::Sqlite => {
                store_as_v1!(sqlx::SqlitePool::connect(&url).await.unwrap(), inspection, run, finished, &old)
            }
        };
        assert_eq!((unlinked, versions), (0, vec![(1,)]));
        // Without the upgrade, the current rules would find these errors new.
        let current_fps: Vec<String> = fingerprints(&current).into_iter().collect();
        let known = app.store().known_clusters(inspection, &current_fps).await.unwrap();
        let still = current_fps.iter().filter(|f| old_fps.contains(*f)).count();
        assert_eq!(known.len(), still);
        assert!(still < current.len());

        // The new version starts: migrations, then re-templating.
        let upgraded = store::connect(&url, 2, test_cipher()).await.unwrap();
        upgraded.migrate().await.unwrap();
        upgraded.close().await;
        let after = all_clusters(&app, &id).await;
        assert_eq!(fingerprints(&after), fingerprints(&current), "{backend:?}: the current rules' clusters");
        let total: i64 = after.iter().map(|c| c["total_count"].as_i64().unwrap()).sum();
        assert_eq!(total, 300);
        let login: Vec<&Value> = after.iter().filter(|c| c["event_name"] == "DeleteLoginProfile").collect();
        assert_eq!(login.len(), 1);
        assert_eq!(login[0]["template"], "Login Profile for User <NAME> cannot be found.");
        let before: i64 = old.iter().filter(|c| c.key.event_name == "DeleteLoginProfile").map(|c| c.count).sum();
        assert_eq!(login[0]["total_count"], before, "the merged clusters' counts add up");
        assert!(after.iter().all(|c| c["baseline"] == false && c["discovered_run_id"] == first["id"]));
        // The first run's clusters still lead to a cluster: merged ones to the one they joined.
        let (status, page) = app.get(&format!("/api/v1/runs/{run}/clusters?limit=100")).await;
        assert_eq!(status, StatusCode::OK);
        let ids: BTreeSet<&str> =
            page["items"].as_array().unwrap().iter().map(|c| c["cluster_id"].as_str().unwrap()).collect();
        let kept: BTreeSet<&str> = after.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, kept);

        // Unchanged traffic, run again: nothing new.
        let window = json!({"window_start": first["window_start"], "window_end": first["window_end"]});
        let (status, again) = app.post(&format!("/api/v1/inspections/{id}/runs"), window).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["status"], "succeeded", "{again}");
        assert_eq!(again["clusters_total"], first["clusters_total"]);
        assert_eq!(again["clusters_new"], 0, "{backend:?}");
        assert_eq!(again["new_error_records"], 0);
        assert_eq!(all_clusters(&app, &id).await.len(), current.len());
        // A second start has nothing left to do.
        let again_store = store::connect(&url, 2, test_cipher()).await.unwrap();
        again_store.migrate().await.unwrap();
        again_store.close().await;
        assert_eq!(fingerprints(&all_clusters(&app, &id).await), fingerprints(&current));
    }
}

/// A database made by a build without migration 0006, whose later migrations are applied,
/// takes 0006 on upgrade: sqlx applies any migration it has not applied, in order.
#[tokio::test]
async fn the_migration_applies_after_later_ones() {
    for backend in BACKENDS {
        let guard = crate::common::empty_database(backend).await;
        macro_rules! without_0006 {
            ($migrator:expr, $pool:expr) => {{
                let full = $migrator;
                let older: Vec<_> = full.migrations.iter().filter(|m| m.version != 6).cloned().collect();
                assert!(older.len() + 1 == full.migrations.len() && older.iter().any(|m| m.version > 6));
                let mut migrator = sqlx::migrate::Migrator::DEFAULT;
                migrator.migrations = std::borrow::Cow::Owned(older);
                let pool = $pool;
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }};
        }
        match backend {
            Backend::Postgres => {
                without_0006!(sqlx::migrate!("./migrations/postgres"), sqlx::PgPool::connect(&guard.url).await.unwrap())
            }
            Backend::Sqlite => without_0006!(
                sqlx::migrate!("./migrations/sqlite"),
                sqlx::SqlitePool::connect_with(
                    guard.url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true)
                )
                .await
                .unwrap()
            ),
        }
        let s = store::connect(&guard.url, 2, test_cipher()).await.unwrap();
        s.migrate().await.unwrap_or_else(|e| panic!("{backend:?}: {e:#}"));
        s.close().await;
    }
}
