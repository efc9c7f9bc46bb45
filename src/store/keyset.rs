//! Keyset pagination: the opaque cursor the API hands out, and the SQL that resumes a list
//! after it.
//!
//! Every list is ordered by a key whose last column is unique, so the order is total and "the
//! page after a cursor" is exactly "the rows whose key comes after the cursor's key". Unlike
//! `offset`, that stays right while rows are added or deleted between two pages, and it is an
//! index range scan however deep the page.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

/// Sort key of time-ordered lists (inspections, runs, clusters, events).
pub type TimeKey = (DateTime<Utc>, Uuid);
/// Sort key of a run's clusters: new first, then larger, then by fingerprint.
pub type RunClusterKey = (bool, i64, String);
/// Sort key of access keys: most recently active first.
pub type AccessKeyKey = (DateTime<Utc>, String);

/// An opaque keyset-pagination position: the sort key of the last item, as base64url JSON.
pub fn encode_cursor<T: Serialize>(key: &T) -> String {
    let json = serde_json::to_vec(key).expect("cursor keys serialize");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> Option<T> {
    if cursor.len() > 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Asc,
    Desc,
}

/// A list's order: its columns, most significant first, the last one unique.
pub(super) struct Order(pub(super) &'static [(&'static str, Dir)]);

/// One value of a sort key, as it is bound into a statement.
#[derive(Debug, Clone)]
pub(super) enum KeyValue {
    Bool(bool),
    Int(i64),
    Text(String),
    Time(DateTime<Utc>),
    Id(Uuid),
}

impl From<bool> for KeyValue {
    fn from(v: bool) -> Self {
        KeyValue::Bool(v)
    }
}

impl From<i64> for KeyValue {
    fn from(v: i64) -> Self {
        KeyValue::Int(v)
    }
}

impl From<String> for KeyValue {
    fn from(v: String) -> Self {
        KeyValue::Text(v)
    }
}

impl From<DateTime<Utc>> for KeyValue {
    fn from(v: DateTime<Utc>) -> Self {
        KeyValue::Time(v)
    }
}

impl From<Uuid> for KeyValue {
    fn from(v: Uuid) -> Self {
        KeyValue::Id(v)
    }
}

/// The values of one row's sort key, in the order's column order.
pub(super) trait SortKey {
    fn into_values(self) -> Vec<KeyValue>;
}

impl<A: Into<KeyValue>, B: Into<KeyValue>> SortKey for (A, B) {
    fn into_values(self) -> Vec<KeyValue> {
        vec![self.0.into(), self.1.into()]
    }
}

impl<A: Into<KeyValue>, B: Into<KeyValue>, C: Into<KeyValue>> SortKey for (A, B, C) {
    fn into_values(self) -> Vec<KeyValue> {
        vec![self.0.into(), self.1.into(), self.2.into()]
    }
}

/// A backend that can bind every kind of [`KeyValue`] (both of ours can). A trait rather than
/// a `where` clause so that the functions below need one bound instead of five each.
pub(super) trait BindKey<'a>: Database {
    fn bind_key(qb: &mut QueryBuilder<'a, Self>, value: KeyValue);
}

impl<'a, DB> BindKey<'a> for DB
where
    DB: Database,
    bool: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    DateTime<Utc>: Encode<'a, DB> + Type<DB>,
    Uuid: Encode<'a, DB> + Type<DB>,
{
    fn bind_key(qb: &mut QueryBuilder<'a, Self>, value: KeyValue) {
        match value {
            KeyValue::Bool(v) => qb.push_bind(v),
            KeyValue::Int(v) => qb.push_bind(v),
            KeyValue::Text(v) => qb.push_bind(v),
            KeyValue::Time(v) => qb.push_bind(v),
            KeyValue::Id(v) => qb.push_bind(v),
        };
    }
}

impl Order {
    /// Ends a query whose `where` clause is open: `and` the rows after `after` when there is
    /// a cursor, then the order and the limit.
    pub(super) fn push_page<'a, DB: BindKey<'a>>(
        &self,
        qb: &mut QueryBuilder<'a, DB>,
        after: Option<impl SortKey>,
        limit: i64,
    ) {
        if let Some(key) = after {
            qb.push(" and ");
            self.push_after(qb, key.into_values());
        }
        qb.push(" order by ");
        for (i, (column, dir)) in self.0.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(column);
            if *dir == Dir::Desc {
                qb.push(" desc");
            }
        }
        qb.push(" limit ");
        DB::bind_key(qb, KeyValue::Int(limit));
    }

    /// The rows after `key`. When every column runs one way this is a row comparison,
    /// `(a, b) < ($1, $2)`, which both databases answer with an index range scan. Mixed
    /// directions have no row-value form and expand, column by column, to
    /// `(a < $1 or (a = $2 and b > $3))`.
    fn push_after<'a, DB: BindKey<'a>>(&self, qb: &mut QueryBuilder<'a, DB>, key: Vec<KeyValue>) {
        let columns = self.0;
        assert_eq!(columns.len(), key.len(), "a sort key has one value per column of its order");
        let op = |dir: Dir| if dir == Dir::Desc { " < " } else { " > " };
        let first = columns[0].1;
        if columns.iter().all(|(_, dir)| *dir == first) {
            let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
            qb.push(format_args!("({}){}(", names.join(", "), op(first)));
            for (i, value) in key.into_iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                DB::bind_key(qb, value);
            }
            qb.push(")");
            return;
        }
        let last = columns.len() - 1;
        qb.push("(");
        for (i, ((column, dir), value)) in columns.iter().zip(key).enumerate() {
            qb.push(column).push(op(*dir));
            if i == last {
                DB::bind_key(qb, value);
                break;
            }
            DB::bind_key(qb, value.clone());
            qb.push(" or (").push(column).push(" = ");
            DB::bind_key(qb, value);
            qb.push(if i + 1 < last { " and (" } else { " and " });
        }
        // Each column but the last opened two: its own `(` and the `or (` of its tie.
        qb.push(")".repeat(2 * last));
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Postgres, Row, Sqlite, SqlitePool};

    use super::*;

    const NEWEST: Order = Order(&[("created_at", Dir::Desc), ("id", Dir::Desc)]);
    const OLDEST: Order = Order(&[("created_at", Dir::Asc), ("id", Dir::Asc)]);
    const RUN_CLUSTERS: Order = Order(&[("is_new", Dir::Desc), ("count", Dir::Desc), ("fingerprint", Dir::Asc)]);

    fn sql(order: &Order, after: Option<impl SortKey>) -> String {
        let mut qb = QueryBuilder::<Postgres>::new("select * from t where 1 = 1");
        order.push_page(&mut qb, after, 50);
        qb.into_sql()
    }

    #[test]
    fn without_a_cursor_only_the_order_and_limit() {
        assert_eq!(
            sql(&NEWEST, None::<TimeKey>),
            "select * from t where 1 = 1 order by created_at desc, id desc limit $1"
        );
        assert_eq!(sql(&OLDEST, None::<TimeKey>), "select * from t where 1 = 1 order by created_at, id limit $1");
    }

    #[test]
    fn one_direction_is_a_row_comparison() {
        let key: TimeKey = (Utc::now(), Uuid::nil());
        assert_eq!(
            sql(&NEWEST, Some(key)),
            "select * from t where 1 = 1 and (created_at, id) < ($1, $2) order by created_at desc, id desc limit $3"
        );
        assert_eq!(
            sql(&OLDEST, Some(key)),
            "select * from t where 1 = 1 and (created_at, id) > ($1, $2) order by created_at, id limit $3"
        );
    }

    #[test]
    fn mixed_directions_expand_column_by_column() {
        assert_eq!(
            sql(&RUN_CLUSTERS, Some((true, 3i64, "fp".to_string()))),
            "select * from t where 1 = 1 and (is_new < $1 or (is_new = $2 and (count < $3 or (count = $4 \
             and fingerprint > $5)))) order by is_new desc, count desc, fingerprint limit $6"
        );
        let keys = Order(&[("last_seen", Dir::Desc), ("access_key_id", Dir::Asc)]);
        assert_eq!(
            sql(&keys, Some((Utc::now(), "AKIA".to_string()))),
            "select * from t where 1 = 1 and (last_seen < $1 or (last_seen = $2 and access_key_id > $3)) \
             order by last_seen desc, access_key_id limit $4"
        );
    }

    #[test]
    #[should_panic(expected = "one value per column")]
    fn a_key_of_the_wrong_length_is_a_bug() {
        sql(&RUN_CLUSTERS, Some((true, 3i64)));
    }

    /// Pages through table `t` two rows at a time and returns what the pages held, in order.
    async fn page_through(pool: &SqlitePool, order: &Order) -> Vec<(bool, i64, String)> {
        let mut seen = Vec::new();
        let mut after: Option<RunClusterKey> = None;
        loop {
            let mut qb = QueryBuilder::<Sqlite>::new("select is_new, count, fingerprint from t where 1 = 1");
            order.push_page(&mut qb, after.clone(), 2);
            let page: Vec<(bool, i64, String)> =
                qb.build().fetch_all(pool).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            seen.extend(page);
        }
        seen
    }

    #[tokio::test]
    async fn pages_of_a_mixed_order_hold_every_row_once_in_order() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("create table t (is_new boolean not null, count integer not null, fingerprint text not null)")
            .execute(&pool)
            .await
            .unwrap();
        // Ties on the first and on the first two columns, on both sides of page boundaries.
        let rows = [
            (true, 5, "b"),
            (false, 9, "a"),
            (true, 5, "a"),
            (true, 7, "c"),
            (false, 9, "c"),
            (false, 1, "a"),
            (true, 5, "c"),
        ];
        for (is_new, count, fp) in rows {
            sqlx::query("insert into t values ($1, $2, $3)")
                .bind(is_new)
                .bind(count as i64)
                .bind(fp)
                .execute(&pool)
                .await
                .unwrap();
        }
        let mut want: Vec<(bool, i64, String)> = rows.iter().map(|(n, c, f)| (*n, *c as i64, f.to_string())).collect();
        want.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        assert_eq!(page_through(&pool, &RUN_CLUSTERS).await, want);

        let all_desc = Order(&[("is_new", Dir::Desc), ("count", Dir::Desc), ("fingerprint", Dir::Desc)]);
        want.sort_by(|a, b| b.cmp(a));
        assert_eq!(page_through(&pool, &all_desc).await, want);
    }
}
