//! Access-key activity: which keys were used, by whom, and when last.
//!
//! The newest event wins for the `last_*` fields and counts add up. When two events share a
//! timestamp, the one with the greater (event name, source IP, principal, account) wins, so the
//! result does not depend on the order in which records or partial trackers arrive.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::record::Record;

/// Activity of one access key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyActivity {
    pub access_key_id: String,
    /// Oldest event time seen for the key.
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub principal_arn: String,
    pub account_id: String,
    pub last_event_name: String,
    pub last_source_ip: String,
    pub count: u64,
}

/// Accumulates [`KeyActivity`] per access key id.
#[derive(Debug, Clone, Default)]
pub struct KeyTracker {
    /// Looked up once per record that carries a key: foldhash, seeded per process, costs a
    /// fraction of SipHash on these short strings and still resists chosen collisions.
    keys: HashMap<String, KeyActivity, foldhash::fast::RandomState>,
}

/// The comparable "latest event" part of an activity.
struct Latest<'s> {
    time: DateTime<Utc>,
    event_name: &'s str,
    source_ip: &'s str,
    principal_arn: &'s str,
    account_id: &'s str,
}

impl Latest<'_> {
    fn newer_than(&self, k: &KeyActivity) -> bool {
        (self.time, self.event_name, self.source_ip, self.principal_arn, self.account_id)
            > (
                k.last_seen,
                k.last_event_name.as_str(),
                k.last_source_ip.as_str(),
                k.principal_arn.as_str(),
                k.account_id.as_str(),
            )
    }

    fn write_into(&self, k: &mut KeyActivity) {
        k.last_seen = self.time;
        assign(&mut k.last_event_name, self.event_name);
        assign(&mut k.last_source_ip, self.source_ip);
        assign(&mut k.principal_arn, self.principal_arn);
        assign(&mut k.account_id, self.account_id);
    }
}

/// Overwrites `dst` reusing its allocation: keys are seen over and over.
fn assign(dst: &mut String, src: &str) {
    if dst != src {
        dst.clear();
        dst.push_str(src);
    }
}

impl KeyTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one record if it carries a non-empty `userIdentity.accessKeyId`.
    pub fn observe(&mut self, r: &Record) {
        let Some(key) = r.identity.access_key_id.as_deref().filter(|k| !k.is_empty()) else {
            return;
        };
        let account = r.identity.account_id.as_deref().filter(|a| !a.is_empty());
        // Who holds the key: the ARN, else the user name or principal id the record gives.
        let principal = r.named_principal();
        let latest = Latest {
            time: r.event_time,
            event_name: &r.event_name,
            source_ip: r.source_ip.as_deref().unwrap_or(""),
            principal_arn: principal.as_deref().unwrap_or(""),
            account_id: account.unwrap_or_else(|| r.account_id()),
        };
        self.add(key, &latest, 1);
    }

    /// Adds a pre-aggregated activity row (e.g. from a Logs Insights query).
    pub fn observe_activity(&mut self, k: KeyActivity) {
        if k.access_key_id.is_empty() {
            return;
        }
        match self.keys.get_mut(&k.access_key_id) {
            Some(cur) => {
                cur.count += k.count;
                cur.first_seen = cur.first_seen.min(k.first_seen);
                let latest = Latest {
                    time: k.last_seen,
                    event_name: &k.last_event_name,
                    source_ip: &k.last_source_ip,
                    principal_arn: &k.principal_arn,
                    account_id: &k.account_id,
                };
                if latest.newer_than(cur) {
                    latest.write_into(cur);
                }
            }
            None => {
                self.keys.insert(k.access_key_id.clone(), k);
            }
        }
    }

    fn add(&mut self, key: &str, latest: &Latest, count: u64) {
        if let Some(cur) = self.keys.get_mut(key) {
            cur.count += count;
            cur.first_seen = cur.first_seen.min(latest.time);
            if latest.newer_than(cur) {
                latest.write_into(cur);
            }
            return;
        }
        self.keys.insert(
            key.to_owned(),
            KeyActivity {
                access_key_id: key.to_owned(),
                first_seen: latest.time,
                last_seen: latest.time,
                principal_arn: latest.principal_arn.to_owned(),
                account_id: latest.account_id.to_owned(),
                last_event_name: latest.event_name.to_owned(),
                last_source_ip: latest.source_ip.to_owned(),
                count,
            },
        );
    }

    pub fn merge(&mut self, other: KeyTracker) {
        for (_, k) in other.keys {
            self.observe_activity(k);
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys, most recently used first (ties by key id, for a stable order).
    pub fn into_vec(self) -> Vec<KeyActivity> {
        let mut v: Vec<KeyActivity> = self.keys.into_values().collect();
        v.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.access_key_id.cmp(&b.access_key_id)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::parse_record;
    use chrono::TimeZone;

    fn raw(time: &str, key: &str, name: &str, ip: &str) -> String {
        format!(
            r#"{{"eventTime":"{time}","eventSource":"iam.amazonaws.com","eventName":"{name}","sourceIPAddress":"{ip}","recipientAccountId":"111","userIdentity":{{"arn":"arn:aws:iam::222:user/u","accountId":"222","accessKeyId":"{key}"}}}}"#
        )
    }

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2023, 7, 10, 12, 0, s).unwrap()
    }

    #[test]
    fn newest_wins_and_counts_add() {
        let records = [
            raw("2023-07-10T12:00:05Z", "AKIA1", "GetUser", "1.1.1.1"),
            raw("2023-07-10T12:00:09Z", "AKIA1", "ListUsers", "2.2.2.2"),
            raw("2023-07-10T12:00:01Z", "AKIA1", "ListRoles", "3.3.3.3"),
            raw("2023-07-10T12:00:03Z", "ASIA2", "GetUser", "4.4.4.4"),
            raw("2023-07-10T12:00:03Z", "", "GetUser", "4.4.4.4"),
            r#"{"eventTime":"2023-07-10T12:00:03Z","eventSource":"s","eventName":"n"}"#.to_owned(),
        ];
        let mut kt = KeyTracker::new();
        for r in &records {
            kt.observe(&parse_record(r.as_bytes()).unwrap());
        }
        assert_eq!(kt.len(), 2);
        let want = vec![
            KeyActivity {
                access_key_id: "AKIA1".into(),
                first_seen: t(1),
                last_seen: t(9),
                principal_arn: "arn:aws:iam::222:user/u".into(),
                account_id: "222".into(),
                last_event_name: "ListUsers".into(),
                last_source_ip: "2.2.2.2".into(),
                count: 3,
            },
            KeyActivity {
                access_key_id: "ASIA2".into(),
                first_seen: t(3),
                last_seen: t(3),
                principal_arn: "arn:aws:iam::222:user/u".into(),
                account_id: "222".into(),
                last_event_name: "GetUser".into(),
                last_source_ip: "4.4.4.4".into(),
                count: 1,
            },
        ];
        assert_eq!(kt.into_vec(), want);
    }

    #[test]
    fn merge_is_order_independent() {
        let a = raw("2023-07-10T12:00:05Z", "AKIA1", "A", "1.1.1.1");
        let b = raw("2023-07-10T12:00:05Z", "AKIA1", "B", "1.1.1.1");
        let (mut x, mut y) = (KeyTracker::new(), KeyTracker::new());
        x.observe(&parse_record(a.as_bytes()).unwrap());
        y.observe(&parse_record(b.as_bytes()).unwrap());
        let (mut xy, mut yx) = (x.clone(), y.clone());
        xy.merge(y);
        yx.merge(x);
        let (xy, yx) = (xy.into_vec(), yx.into_vec());
        assert_eq!(xy, yx);
        assert_eq!(xy[0].last_event_name, "B");
        assert_eq!(xy[0].count, 2);
    }

    #[test]
    fn observe_activity_rows() {
        let mut kt = KeyTracker::new();
        let row = |key: &str, s: u32, n: u64| KeyActivity {
            access_key_id: key.into(),
            first_seen: t(s),
            last_seen: t(s),
            principal_arn: "p".into(),
            account_id: "1".into(),
            last_event_name: format!("E{s}"),
            last_source_ip: "ip".into(),
            count: n,
        };
        kt.observe_activity(row("K", 4, 10));
        kt.observe_activity(row("K", 2, 5));
        kt.observe_activity(row("", 9, 5));
        kt.observe_activity(row("J", 7, 1));
        let v = kt.into_vec();
        assert_eq!(
            v.iter().map(|k| (k.access_key_id.as_str(), k.count, k.last_event_name.as_str())).collect::<Vec<_>>(),
            vec![("J", 1, "E7"), ("K", 15, "E4")]
        );
    }
}
