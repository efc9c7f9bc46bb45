//! Unit tests of the fake's filter pattern engine.

use crate::common::fake_cwl::filter_pattern::*;

const SERVICE: &str = r#"{ ($.errorCode = "*") || (($.eventName = "ConsoleLogin") && (($.responseElements.ConsoleLogin = "Failure") || ($.errorMessage = "Failed authentication"))) }"#;

fn m(p: &str, msg: &str) -> bool {
    FilterPattern::parse(p).unwrap().matches(msg)
}

#[test]
fn service_pattern() {
    assert!(m(SERVICE, r#"{"errorCode":"AccessDenied"}"#));
    assert!(m(SERVICE, r#"{"errorCode":""}"#));
    assert!(m(SERVICE, r#"{"errorCode":5}"#));
    assert!(!m(SERVICE, r#"{"errorCode":null}"#));
    assert!(!m(SERVICE, r#"{"errorCode":{"a":1}}"#));
    assert!(m(SERVICE, r#"{"eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Failure"}}"#));
    assert!(m(SERVICE, r#"{"eventName":"ConsoleLogin","errorMessage":"Failed authentication"}"#));
    assert!(!m(SERVICE, r#"{"eventName":"ConsoleLogin","responseElements":{"ConsoleLogin":"Success"}}"#));
    assert!(!m(SERVICE, r#"{"eventName":"Other","errorMessage":"Failed authentication"}"#));
    assert!(!m(SERVICE, "errorCode = AccessDenied"));
    assert!(!m(SERVICE, r#"["errorCode"]"#));
}

#[test]
fn wildcards_and_operators() {
    assert!(m(r#"{ $.e = "Access*" }"#, r#"{"e":"AccessDenied"}"#));
    assert!(!m(r#"{ $.e = "Access*" }"#, r#"{"e":"NoAccess"}"#));
    assert!(m(r#"{ $.e = "*Denied" }"#, r#"{"e":"AccessDenied"}"#));
    assert!(m(r#"{ $.e = *ss* }"#, r#"{"e":"AccessDenied"}"#));
    assert!(!m(r#"{ $.e = "Ac*ied" }"#, r#"{"e":"AccessDenied"}"#));
    assert!(m(r#"{ $.e = "Ac*ied" }"#, r#"{"e":"Ac*ied"}"#));
    assert!(m(r#"{ $.ip != 123.123.* }"#, r#"{"ip":"10.0.0.1"}"#));
    assert!(!m(r#"{ $.ip != 123.123.* }"#, r#"{"ip":"123.123.0.1"}"#));
    assert!(!m(r#"{ $.ip != 1 }"#, r#"{}"#));
    assert!(m(r#"{ $.n >= 500 }"#, r#"{"n":500}"#));
    assert!(!m(r#"{ $.n > 500 }"#, r#"{"n":500}"#));
    assert!(m(r#"{ $.n < 10e3 }"#, r#"{"n":9999.5}"#));
    assert!(m(r#"{ $.acct = 123456789012 }"#, r#"{"acct":"123456789012"}"#));
    assert!(m(r#"{ $.a[1].id = 2 }"#, r#"{"a":[{"id":1},{"id":2}]}"#));
    assert!(!m(r#"{ $.a = 1 }"#, r#"{"a":[1]}"#));
    assert!(!m(r#"{ $.a != 1 }"#, r#"{"a":[1]}"#));
    assert!(m(r#"{ $.x IS NULL }"#, r#"{"x":null}"#));
    assert!(!m(r#"{ $.x IS NULL }"#, r#"{}"#));
    assert!(m(r#"{ $.x NOT EXISTS }"#, r#"{}"#));
    assert!(!m(r#"{ $.x NOT EXISTS }"#, r#"{"x":null}"#));
    assert!(m(r#"{ $.f IS TRUE }"#, r#"{"f":true}"#));
    assert!(m(r#"{ $.f IS FALSE }"#, r#"{"f":false}"#));
}

#[test]
fn precedence() {
    let doc = r#"{"user":{"id":1,"email":"John.Stiles@example.com"},"actions":["GET","PUT","DELETE"],"coordinates":[[0,1,2]]}"#;
    assert!(m(
        r#"{ $.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch && $.actions[2] = nomatch }"#,
        doc
    ));
    assert!(!m(
        r#"{ ($.user.email = "John.Stiles@example.com" || $.coordinates[0][1] = nonmatch) && $.actions[2] = nomatch }"#,
        doc
    ));
}

#[test]
fn terms() {
    assert!(m("", "anything"));
    assert!(m("ERROR", "[ERROR] boom"));
    assert!(!m("ERROR", "error"));
    assert!(m("ERROR Exception", "ERROR: Exception"));
    assert!(!m("ERROR Exception", "ERROR only"));
    assert!(m("?ERROR ?WARN", "WARN x"));
    assert!(m("ERROR -WARN", "ERROR x"));
    assert!(!m("ERROR -WARN", "ERROR WARN"));
    assert!(!m(r#""ERROR" - "Exiting""#, "ERROR Exiting"));
    assert!(m(r#""Failed to process""#, "x Failed to process y"));
}

#[test]
fn rejects() {
    for p in [
        "{",
        "{ }",
        "{ $.a = }",
        "{ $.a = \"x\" ",
        "{ $.a == \"x\" }",
        "{ $. = 1 }",
        "{ a = 1 }",
        "{ $.a < \"x\" }",
        "{ $.a = x } extra",
        "{ $.a = x & $.b = y }",
        "{ ($.a = x }",
        "{ $.a EXISTS }",
        "{ $.a = @x }",
        "[a, b]",
        "%ERR%",
        "\"unterminated",
        "a=b",
        "?",
    ] {
        assert!(FilterPattern::parse(p).is_err(), "{p} should not parse");
    }
}
