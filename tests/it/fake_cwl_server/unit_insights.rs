//! Unit tests of the fake's insights engine.

use crate::common::fake_cwl::insights::*;

fn run(q: &str, msgs: &[(i64, &str)]) -> Vec<Vec<(String, String)>> {
    let q = Query::parse(q).unwrap();
    q.run(msgs.iter().enumerate().map(|(i, (ts, m))| EventRef {
        timestamp: *ts,
        ingestion_time: *ts,
        seq: i as u64,
        message: m,
        log_stream: "s",
        log: "123456789012:g",
    }))
    .rows
}

fn get<'a>(row: &'a [(String, String)], f: &str) -> Option<&'a str> {
    row.iter().find(|(k, _)| k == f).map(|(_, v)| v.as_str())
}

#[test]
fn stats_by_and_coalesce() {
    let rows = run(
        r#"fields coalesce(a, b, "") as x | stats count(*) as n, min(@timestamp) as lo, latest(c) as c by x | sort n desc, x desc"#,
        &[
            (1_000, r#"{"a":"A","c":"1"}"#),
            (3_000, r#"{"a":"A","c":"2"}"#),
            (2_000, r#"{"b":"B"}"#),
            (4_000, r#"{"a":""}"#),
            (5_000, "not json"),
        ],
    );
    assert_eq!(rows.len(), 3);
    assert_eq!(get(&rows[0], "x"), Some("A"));
    assert_eq!(get(&rows[0], "n"), Some("2"));
    assert_eq!(get(&rows[0], "lo"), Some("1970-01-01 00:00:01.000"));
    assert_eq!(get(&rows[0], "c"), Some("2"));
    let empty: Vec<_> = rows.iter().filter(|r| get(r, "x") == Some("")).collect();
    assert_eq!(empty.len(), 1);
    assert_eq!(get(empty[0], "n"), Some("2"));
    assert_eq!(get(empty[0], "c"), None);
    assert_eq!(rows[0][0].0, "x");
}

#[test]
fn missing_by_field_groups_as_absent() {
    let rows = run("stats count(*) as n by k", &[(1, r#"{"k":"v"}"#), (2, r#"{}"#), (3, r#"{"k":null}"#)]);
    assert_eq!(rows.len(), 2);
    let absent = rows.iter().find(|r| get(r, "k").is_none()).unwrap();
    assert_eq!(get(absent, "n"), Some("2"));
}

#[test]
fn filter_logic() {
    let q = r#"filter ispresent(errorCode) or (eventName = "ConsoleLogin" and (responseElements.ConsoleLogin = "Failure" or errorMessage = "Failed authentication")) | fields eventName"#;
    let rows = run(
        q,
        &[
            (1, r#"{"eventName":"A","errorCode":"X"}"#),
            (2, r#"{"eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Failure"}}"#),
            (3, r#"{"eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Success"}}"#),
            (4, r#"{"eventName":"ConsoleLogin","errorMessage":"Failed authentication"}"#),
            (5, r#"{"eventName":"B"}"#),
        ],
    );
    assert_eq!(rows.len(), 3);
    let rows =
        run("filter not ispresent(a) and b != \"x\"", &[(1, r#"{"b":"y"}"#), (2, r#"{"a":1,"b":"y"}"#), (3, "{}")]);
    assert_eq!(rows.len(), 1);
}

#[test]
fn default_columns_newest_first_and_limit() {
    let rows = run("limit 2", &[(1, "a"), (3, "c"), (2, "b")]);
    assert_eq!(rows.len(), 2);
    assert_eq!(get(&rows[0], "@message"), Some("c"));
    assert_eq!(get(&rows[1], "@message"), Some("b"));
    assert_eq!(get(&rows[0], "@log"), Some("123456789012:g"));
}

#[test]
fn natural_sort() {
    let rows = run(
        "fields v | sort v asc",
        &[(1, r#"{"v":"a10"}"#), (2, r#"{"v":"a9"}"#), (3, r#"{"v":"5"}"#), (4, r#"{"v":"b"}"#)],
    );
    let order: Vec<_> = rows.iter().map(|r| get(r, "v").unwrap()).collect();
    assert_eq!(order, ["a9", "a10", "b", "5"]);
}

#[test]
fn rejects() {
    for q in [
        "filter",
        "filter a",
        "filter a = ",
        "fields abs(a)",
        "parse @message \"*\" as x",
        "stats count(*) by",
        "stats foo(a)",
        "stats max(*)",
        "limit 0",
        "limit 10001",
        "filter a =~ /x/",
        "fields a |",
        "fields a | | fields b",
        "filter (a = \"x\"",
        "filter a like /x/",
        "sort a sideways",
    ] {
        assert!(Query::parse(q).is_err(), "{q} should not parse");
    }
}
