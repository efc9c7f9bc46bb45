//! What the SQL of every resource file shares.
//!
//! Each statement is written once and runs on both backends, so it keeps to portable SQL:
//! `$n` placeholders (SQLite reads them positionally too), row-value keyset comparisons,
//! `on conflict … do update`, `case` instead of `least`/`greatest`, timestamps and JSON
//! bound from Rust rather than computed by the database. The one difference, skipping
//! locked rows when claiming, is a constant of each store type (`SKIP_LOCKED`).

use super::StoreError;

/// Rows per multi-row insert: well under both backends' limits on bound parameters.
pub(super) const INSERT_CHUNK: usize = 400;

/// Maps a unique violation to the constraint it hit, whatever the backend's wording.
pub(super) fn map_unique(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            let msg = db.message();
            let constraint = db.constraint().unwrap_or("");
            if constraint == "inspections_name_key" || msg.contains("inspections.name") {
                return StoreError::Conflict("inspections_name_key");
            }
            if constraint == "runs_one_active_idx" || msg.contains("runs.inspection_id") {
                return StoreError::Conflict("runs_one_active_idx");
            }
        }
    }
    StoreError::Database(e)
}
