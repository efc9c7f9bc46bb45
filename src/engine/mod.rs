//! The pure-logic engine of cloudtrail-inspector: from raw CloudTrail records to error clusters.
//!
//! Pipeline, per raw record (one JSON object):
//! 1. [`might_be_error`] skips, unparsed, records that cannot be errors (most of them).
//! 2. [`parse_record`] reads the dozen fields we need in one borrowed pass: a hand-written
//!    scanner (`record/fast.rs`) for the records it is sure of, serde for the rest.
//! 3. [`Record::error_kind`] decides whether it is an error: an errorCode, or a failed console
//!    sign-in ("ConsoleLoginFailure").
//! 4. [`IgnoreRules`] drop errors the operator already knows about.
//! 5. [`template()`](fn@template) masks the variable parts of the errorMessage (rules in
//!    [`mod@template`]), and [`Clusterer`] groups errors by account, region, API, error kind
//!    and template ([`ClusterKey`]).
//! 6. [`KeyTracker`] follows access-key activity on the side.
//! 7. [`rules`] names what a cluster is in CIS terms (`CloudWatch.1` … `CloudWatch.14`).
//!
//! Per-log-group clusterers are combined with [`Clusterer::merge`]; pre-aggregated rows from
//! CloudWatch Logs Insights enter through [`Clusterer::ingest_aggregate`].

pub mod cluster;
pub mod ignore;
pub mod keys;
pub mod record;
pub mod rules;
pub mod template;

pub use cluster::{AggregateRow, Analysis, Cluster, ClusterKey, Clusterer, ClustererConfig, Counted, Outcome, Stats};
pub use ignore::IgnoreRules;
pub use keys::{KeyActivity, KeyTracker};
pub use record::{
    Event, Identity, Insight, ParseError, Record, Split, might_be_error, parse_event, parse_event_time, parse_record,
    parse_record_serde, split_records,
};
pub use template::template;

/// The real CloudTrail records the unit tests read: `tests/data/cloudtrail` in the checkout
/// (sources and licenses in its PROVENANCE.md), so they need nothing beside it.
#[cfg(test)]
pub(crate) fn test_records_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cloudtrail")
}
