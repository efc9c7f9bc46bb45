//! Inspections: what to watch and how, their sealed credentials and their trigger ids.
//!
//! Each inspection has a registration in Guance (a row of `guance_checkers`) kept up to date
//! by the outbox's sync worker: every write here that changes what Guance shows queues that
//! registration again, in the same transaction. Changes the sync worker adopts from Guance
//! studio are written here too ([`InspectionStore::adopt_from_guance`]), without queueing a
//! push: they came from Guance.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::keyset::Dir::Asc;
use super::keyset::{Order, TimeKey};
use super::runs::parse_status;
use super::sql::map_unique;
use super::{PgStore, SqliteStore, StoreError, StoreResult};
use crate::crypto::{Sealed, SecretBox};
use crate::model::Secret;
use crate::model::event::{GuanceChange, GuanceSync};
use crate::model::inspection::{
    AwsSecrets, Inspection, InspectionDraft, InspectionSettings, guance_ref_key, new_trigger_id, trigger_id_hash,
};
use crate::model::run::RunSummary;
use crate::model::time;

#[derive(Debug, Clone, Default)]
pub struct InspectionFilter {
    pub enabled: Option<bool>,
    pub name_contains: Option<String>,
}

#[async_trait]
pub trait InspectionStore: Send + Sync {
    /// Stores a new inspection with a new trigger id, which the returned inspection carries
    /// (the one time it is shown: only its hash is stored).
    async fn create_inspection(&self, id: Uuid, draft: &InspectionDraft, now: DateTime<Utc>)
    -> StoreResult<Inspection>;
    async fn get_inspection(&self, id: Uuid) -> StoreResult<Option<Inspection>>;
    /// Up to `limit` inspections after `after`, oldest first.
    async fn list_inspections(
        &self,
        filter: &InspectionFilter,
        after: Option<TimeKey>,
        limit: i64,
    ) -> StoreResult<Vec<Inspection>>;
    async fn update_inspection(
        &self,
        id: Uuid,
        draft: &InspectionDraft,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Inspection>>;
    async fn delete_inspection(&self, id: Uuid) -> StoreResult<bool>;
    /// The keys (by key id) that sealed stored credentials and that this store's cipher does
    /// not hold, each with how many inspections it sealed: what a lost key file costs.
    async fn unknown_sealing_keys(&self) -> StoreResult<Vec<(String, u64)>>;
    /// The inspection whose trigger id has this [`trigger_id_hash`].
    async fn inspection_by_trigger_hash(&self, hash: &str) -> StoreResult<Option<Inspection>>;
    /// Replaces an inspection's trigger id; the old one stops working at once. Only its hash is
    /// stored: the returned inspection carries the new id, the one time it is shown.
    async fn rotate_trigger_id(
        &self,
        id: Uuid,
        trigger_id: &Secret,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Inspection>>;
    /// Adopts changes made in Guance studio: the inspection takes `enabled` and `settings`,
    /// and its registration notes `change`, unless the inspection changed here since
    /// `expected_updated_at` (then nothing is written and the result is None; the next sync
    /// decides again with both changes in view).
    async fn adopt_from_guance(
        &self,
        id: Uuid,
        expected_updated_at: DateTime<Utc>,
        enabled: bool,
        settings: &InspectionSettings,
        change: &GuanceChange,
    ) -> StoreResult<Option<Inspection>>;
    /// Registers an inspection in Guance again (after its checker was deleted there): its
    /// registration forgets the checker and is queued. False when there is no inspection.
    async fn request_guance_registration(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<bool>;
}

/// An inspection with what the API shows beside it: its last run and its Guance registration.
const INSPECTION_SELECT: &str = "select i.id, i.name, i.description, i.enabled, i.settings, i.secrets, \
     i.created_at, i.updated_at, r.id as lr_id, r.status as lr_status, r.finished_at as lr_finished_at, \
     r.clusters_new as lr_clusters_new, g.state as gs_state, g.checker_id as gs_checker_id, \
     g.error as gs_error, g.synced_at as gs_synced_at, g.last_pulled_at as gs_last_pulled_at, \
     g.last_change as gs_last_change \
     from inspections i left join runs r on r.id = i.last_run_id left join guance_checkers g on g.inspection_id = i.id";

/// Oldest first, so a listing in pages sees the inspections in the order they were made.
const INSPECTION_ORDER: Order = Order(&[("i.created_at", Asc), ("i.id", Asc)]);

#[derive(sqlx::FromRow)]
struct InspectionRow {
    id: Uuid,
    name: String,
    description: String,
    enabled: bool,
    settings: Json<InspectionSettings>,
    secrets: Json<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    lr_id: Option<Uuid>,
    lr_status: Option<String>,
    lr_finished_at: Option<DateTime<Utc>>,
    lr_clusters_new: Option<i64>,
    gs_state: Option<String>,
    gs_checker_id: Option<String>,
    gs_error: Option<String>,
    gs_synced_at: Option<DateTime<Utc>>,
    gs_last_pulled_at: Option<DateTime<Utc>>,
    gs_last_change: Option<Json<serde_json::Value>>,
}

/// How the `secrets` column holds credentials: sealed (see [`crate::crypto`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecrets {
    sealed: Sealed,
}

/// Seals an inspection's credentials for its row; no credentials are stored as `{}`.
fn seal_secrets(cipher: &SecretBox, id: Uuid, secrets: &AwsSecrets) -> Json<serde_json::Value> {
    if *secrets == AwsSecrets::default() {
        return Json(serde_json::json!({}));
    }
    let plain = serde_json::to_vec(secrets).expect("secrets serialize");
    let stored = StoredSecrets { sealed: cipher.seal(id.as_bytes(), &plain) };
    Json(serde_json::to_value(stored).expect("sealed secrets serialize"))
}

/// Opens a row's credentials. A row that cannot be opened (a lost key) still lists, with the
/// reason on the inspection, rather than breaking every listing.
fn open_secrets(cipher: &SecretBox, id: Uuid, stored: serde_json::Value) -> (AwsSecrets, Option<String>) {
    if stored.as_object().is_some_and(|o| o.is_empty()) {
        return (AwsSecrets::default(), None);
    }
    let result = serde_json::from_value::<StoredSecrets>(stored)
        .map_err(|e| format!("unreadable secrets column: {e}"))
        .and_then(|s| cipher.open(id.as_bytes(), &s.sealed).map_err(|e| e.to_string()))
        .and_then(|plain| serde_json::from_slice::<AwsSecrets>(&plain).map_err(|e| e.to_string()));
    match result {
        Ok(secrets) => (secrets, None),
        Err(e) => {
            tracing::error!(inspection_id = %id, error = %e, "stored credentials cannot be decrypted");
            (AwsSecrets::default(), Some(format!("stored credentials cannot be decrypted: {e}")))
        }
    }
}

/// Counts the sealed values whose key `cipher` does not hold, by key id.
fn unknown_keys(cipher: &SecretBox, stored: impl Iterator<Item = serde_json::Value>) -> Vec<(String, u64)> {
    let mut unknown = std::collections::BTreeMap::<String, u64>::new();
    for value in stored {
        if let Ok(s) = serde_json::from_value::<StoredSecrets>(value) {
            if !cipher.holds(&s.sealed.kid) {
                *unknown.entry(s.sealed.kid).or_default() += 1;
            }
        }
    }
    unknown.into_iter().collect()
}

impl InspectionRow {
    fn into_model(self, cipher: &SecretBox) -> Result<Inspection, StoreError> {
        let (secrets, secrets_error) = open_secrets(cipher, self.id, self.secrets.0);
        let last_run = match (self.lr_id, self.lr_status) {
            (Some(id), Some(status)) => Some(RunSummary {
                id,
                status: parse_status(&status)?,
                finished_at: self.lr_finished_at,
                clusters_new: self.lr_clusters_new.unwrap_or(0),
            }),
            _ => None,
        };
        Ok(Inspection {
            id: self.id,
            name: self.name,
            description: self.description,
            enabled: self.enabled,
            settings: self.settings.0,
            secrets,
            secrets_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_run,
            // Only its hash is stored: create and rotate put the new id on what they return.
            trigger_id: None,
            guance: GuanceSync {
                state: self.gs_state.unwrap_or_else(|| "pending".into()),
                checker_id: self.gs_checker_id,
                ref_key: guance_ref_key(self.id),
                error: self.gs_error,
                synced_at: self.gs_synced_at,
                last_pulled_at: self.gs_last_pulled_at,
                // A note this version cannot read is not worth failing the inspection over.
                last_change: self.gs_last_change.and_then(|c| serde_json::from_value(c.0).ok()),
            },
        })
    }
}

/// Escapes `%`, `_` and `\` for a `like … escape '\'` pattern.
fn like_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// [`InspectionStore`] for a store over one sqlx backend, and the migrations' backfill.
macro_rules! inspection_store {
    ($store:ident, $db:ty) => {
        #[async_trait]
        impl InspectionStore for $store {
            async fn create_inspection(
                &self,
                id: Uuid,
                draft: &InspectionDraft,
                now: DateTime<Utc>,
            ) -> StoreResult<Inspection> {
                let trigger_id = new_trigger_id();
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "insert into inspections (id, name, description, enabled, settings, secrets, created_at, updated_at, \
                     trigger_id_hash) values ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
                )
                .bind(id)
                .bind(&draft.name)
                .bind(&draft.description)
                .bind(draft.enabled)
                .bind(Json(&draft.settings))
                .bind(seal_secrets(&self.cipher, id, &draft.secrets))
                .bind(now)
                .bind(trigger_id_hash(trigger_id.expose()))
                .execute(&mut *tx)
                .await
                .map_err(map_unique)?;
                // Registered in Guance by the sync worker, soon.
                sqlx::query(
                    "insert into guance_checkers (ref_key, inspection_id, state, next_attempt_at, updated_at) \
                     values ($1, $2, 'pending', $3, $3)",
                )
                .bind(guance_ref_key(id))
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                let mut created = self
                    .get_inspection(id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("inspection vanished after insert".into()))?;
                created.trigger_id = Some(trigger_id);
                Ok(created)
            }

            async fn get_inspection(&self, id: Uuid) -> StoreResult<Option<Inspection>> {
                let sql = format!("{INSPECTION_SELECT} where i.id = $1");
                let row = sqlx::query_as::<$db, InspectionRow>(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.map(|r| r.into_model(&self.cipher)).transpose()
            }

            async fn list_inspections(
                &self,
                filter: &InspectionFilter,
                after: Option<TimeKey>,
                limit: i64,
            ) -> StoreResult<Vec<Inspection>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(INSPECTION_SELECT);
                qb.push(" where 1 = 1");
                if let Some(enabled) = filter.enabled {
                    qb.push(" and i.enabled = ").push_bind(enabled);
                }
                if let Some(name) = &filter.name_contains {
                    qb.push(" and lower(i.name) like ").push_bind(like_pattern(name)).push(" escape '\\'");
                }
                INSPECTION_ORDER.push_page(&mut qb, after, limit);
                let rows = qb.build_query_as::<InspectionRow>().fetch_all(&self.pool).await?;
                rows.into_iter().map(|r| r.into_model(&self.cipher)).collect()
            }

            async fn update_inspection(
                &self,
                id: Uuid,
                draft: &InspectionDraft,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<Inspection>> {
                let mut tx = self.pool.begin().await?;
                let update = sqlx::query(
                    "update inspections set name = $2, description = $3, enabled = $4, settings = $5, \
                     updated_at = $6 where id = $1",
                )
                .bind(id)
                .bind(&draft.name)
                .bind(&draft.description)
                .bind(draft.enabled)
                .bind(Json(&draft.settings))
                .bind(now);
                let done = update.execute(&mut *tx).await.map_err(map_unique)?;
                // Credentials that could not be opened stay exactly as stored.
                if !draft.keep_sealed_secrets {
                    sqlx::query("update inspections set secrets = $2 where id = $1")
                        .bind(id)
                        .bind(seal_secrets(&self.cipher, id, &draft.secrets))
                        .execute(&mut *tx)
                        .await?;
                }
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                // Guance's copy (title, configs, alert policies, enabled) follows the change;
                // a checker deleted in Guance stays deleted until registering it is asked for.
                sqlx::query(
                    "insert into guance_checkers (ref_key, inspection_id, state, next_attempt_at, updated_at) \
                     values ($1, $2, 'pending', $3, $3) on conflict (ref_key) do update set \
                     state = case when guance_checkers.state = 'deleted_in_guance' then guance_checkers.state \
                     else 'pending' end, attempts = 0, next_attempt_at = excluded.next_attempt_at, \
                     updated_at = excluded.updated_at",
                )
                .bind(guance_ref_key(id))
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                self.get_inspection(id).await
            }

            async fn delete_inspection(&self, id: Uuid) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                // The registration stays behind, ownerless, until Guance's copy is deleted too.
                sqlx::query(
                    "update guance_checkers set inspection_id = null, state = 'pending', attempts = 0, \
                     next_attempt_at = $2, updated_at = $2 where inspection_id = $1",
                )
                .bind(id)
                .bind(time::now())
                .execute(&mut *tx)
                .await?;
                let done = sqlx::query("delete from inspections where id = $1").bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn unknown_sealing_keys(&self) -> StoreResult<Vec<(String, u64)>> {
                let rows: Vec<(Json<serde_json::Value>,)> =
                    sqlx::query_as("select secrets from inspections").fetch_all(&self.pool).await?;
                Ok(unknown_keys(&self.cipher, rows.into_iter().map(|(v,)| v.0)))
            }

            async fn inspection_by_trigger_hash(&self, hash: &str) -> StoreResult<Option<Inspection>> {
                let sql = format!("{INSPECTION_SELECT} where i.trigger_id_hash = $1");
                let row = sqlx::query_as::<$db, InspectionRow>(&sql).bind(hash).fetch_optional(&self.pool).await?;
                row.map(|r| r.into_model(&self.cipher)).transpose()
            }

            async fn rotate_trigger_id(
                &self,
                id: Uuid,
                trigger_id: &Secret,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<Inspection>> {
                let done = sqlx::query("update inspections set trigger_id_hash = $2, updated_at = $3 where id = $1")
                    .bind(id)
                    .bind(trigger_id_hash(trigger_id.expose()))
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                let rotated = self.get_inspection(id).await?;
                Ok(rotated.map(|i| Inspection { trigger_id: Some(trigger_id.clone()), ..i }))
            }

            async fn adopt_from_guance(
                &self,
                id: Uuid,
                expected_updated_at: DateTime<Utc>,
                enabled: bool,
                settings: &InspectionSettings,
                change: &GuanceChange,
            ) -> StoreResult<Option<Inspection>> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "update inspections set enabled = $2, settings = $3, updated_at = $4 \
                     where id = $1 and updated_at = $5",
                )
                .bind(id)
                .bind(enabled)
                .bind(Json(settings))
                .bind(change.at)
                .bind(expected_updated_at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                sqlx::query("update guance_checkers set last_change = $2 where inspection_id = $1")
                    .bind(id)
                    .bind(Json(change))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.get_inspection(id).await
            }

            async fn request_guance_registration(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
                let done = sqlx::query(
                    "update guance_checkers set state = 'pending', checker_id = null, sync_memory = null, \
                     error = null, attempts = 0, next_attempt_at = $2, updated_at = $2 where inspection_id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }
        }

        impl $store {
            /// Inspections created before Guance registration existed get their pending
            /// registration job, as every inspection created since has.
            pub(super) async fn backfill_guance_checkers(&self) -> anyhow::Result<()> {
                let ids: Vec<(Uuid,)> = sqlx::query_as(
                    "select id from inspections i where not exists \
                     (select 1 from guance_checkers g where g.inspection_id = i.id)",
                )
                .fetch_all(&self.pool)
                .await?;
                let now = time::now();
                for (id,) in ids {
                    sqlx::query(
                        "insert into guance_checkers (ref_key, inspection_id, state, next_attempt_at, updated_at) \
                         values ($1, $2, 'pending', $3, $3) on conflict (ref_key) do nothing",
                    )
                    .bind(guance_ref_key(id))
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                }
                Ok(())
            }
        }
    };
}

inspection_store!(PgStore, sqlx::Postgres);
inspection_store!(SqliteStore, sqlx::Sqlite);
