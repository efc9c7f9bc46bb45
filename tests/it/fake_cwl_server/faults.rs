//! Injected faults, call records, authentication, unknown operations and server lifetime.

use std::time::{Duration, Instant};

use super::helpers::*;
use crate::common::fake_cwl::{CallRecord, FakeConfig, FakeCwl, Fault};
use aws_sdk_cloudwatchlogs::config::retry::RetryConfig;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn seeded() -> FakeCwl {
    let fake = FakeCwl::start().await;
    fake.put_events("g", "s", [(1, "hello".to_string())]);
    fake
}

#[tokio::test]
async fn each_fault_reaches_the_sdk_as_its_error() {
    let fake = seeded().await;
    let client = client(&fake);
    let cases = [
        (Fault::Throttling, 400, "ThrottlingException", "Rate exceeded"),
        (Fault::ServerError, 500, "ServiceUnavailableException", "The service cannot complete the request."),
        (Fault::AccessDenied, 400, "AccessDeniedException", ""),
        (Fault::ExpiredToken, 400, "ExpiredTokenException", "The security token included in the request is expired"),
        (Fault::ResourceNotFound, 400, "ResourceNotFoundException", "The specified log group does not exist."),
        (
            Fault::Custom { status: 503, type_name: "SomethingOdd".into(), message: "odd".into() },
            503,
            "SomethingOdd",
            "odd",
        ),
    ];
    for (fault, status, code, message) in cases {
        fake.fail_next("FilterLogEvents", 1, fault.clone());
        let err = client.filter_log_events().log_group_name("g").send().await.unwrap_err();
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(status), "{fault:?}");
        let se = err.into_service_error();
        assert_eq!(se.code(), Some(code), "{fault:?}");
        if !message.is_empty() {
            assert_eq!(se.message(), Some(message));
        }
        match fault {
            Fault::ServerError => assert!(se.is_service_unavailable_exception()),
            Fault::ResourceNotFound => assert!(se.is_resource_not_found_exception()),
            _ => {}
        }
        // The fault was used up: the next call succeeds.
        client.filter_log_events().log_group_name("g").send().await.unwrap();
    }
    assert_eq!(fake.throttled_count(), 1);
    assert_eq!(fake.call_count("FilterLogEvents"), 12);
}

#[tokio::test]
async fn hang_makes_the_sdk_time_out() {
    let fake = seeded().await;
    fake.fail_next("FilterLogEvents", 1, Fault::Hang(Duration::from_secs(2)));
    let client = client_with(&fake, RetryConfig::disabled(), Some(Duration::from_millis(300)));
    let started = Instant::now();
    let err = client.filter_log_events().log_group_name("g").send().await.unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The hung call is recorded, and other calls are not blocked by it.
    assert_eq!(fake.call_count("FilterLogEvents"), 1);
    client.filter_log_events().log_group_name("g").send().await.unwrap();
}

#[tokio::test]
async fn sdk_retries_server_errors_and_throttling() {
    let fake = seeded().await;
    fake.fail_next("FilterLogEvents", 1, Fault::ServerError);
    fake.fail_next("FilterLogEvents", 1, Fault::Throttling);
    let retry = RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(5));
    let client = client_with(&fake, retry, None);
    let out = client.filter_log_events().log_group_name("g").send().await.unwrap();
    assert_eq!(out.events().len(), 1);
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 400, 200]);
}

#[tokio::test]
async fn wildcard_faults_hit_every_operation_in_order() {
    let fake = seeded().await;
    let client = client(&fake);
    fake.fail_next("*", 2, Fault::AccessDenied);
    let e1 = client
        .start_query()
        .log_group_name("g")
        .start_time(0)
        .end_time(1)
        .query_string("fields @message")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e1.code(), Some("AccessDeniedException"));
    let e2 = client.describe_log_groups().send().await.unwrap_err();
    assert_eq!(e2.into_service_error().code(), Some("AccessDeniedException"));
    client.describe_log_groups().send().await.unwrap();

    fake.fail_next("GetQueryResults", 1, Fault::Throttling);
    let id = client
        .start_query()
        .log_group_name("g")
        .start_time(0)
        .end_time(1)
        .query_string("fields @message")
        .send()
        .await
        .unwrap()
        .query_id()
        .unwrap()
        .to_string();
    let e = client.get_query_results().query_id(&id).send().await.unwrap_err();
    assert_eq!(e.into_service_error().code(), Some("ThrottlingException"));
    client.get_query_results().query_id(&id).send().await.unwrap();
}

#[tokio::test]
async fn log_group_faults_last_until_cleared() {
    let fake = seeded().await;
    fake.put_events("other", "s", [(1, "x".to_string())]);
    fake.fail_log_group("g", Fault::ExpiredToken);
    let client = client(&fake);
    for _ in 0..3 {
        let e = client.filter_log_events().log_group_name("g").send().await.unwrap_err();
        assert_eq!(e.into_service_error().code(), Some("ExpiredTokenException"));
    }
    client.filter_log_events().log_group_name("other").send().await.unwrap();
    let e = client
        .start_query()
        .log_group_names("other")
        .log_group_names("g")
        .start_time(0)
        .end_time(1)
        .query_string("fields @message")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.into_service_error().code(), Some("ExpiredTokenException"));
    fake.clear_faults();
    client.filter_log_events().log_group_name("g").send().await.unwrap();
}

#[tokio::test]
async fn calls_are_recorded() {
    let fake = seeded().await;
    let client = client(&fake);
    client.filter_log_events().log_group_name("g").filter_pattern("hello").send().await.unwrap();
    client.filter_log_events().log_group_name("missing").send().await.unwrap_err();
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].operation, "FilterLogEvents");
    assert_eq!(calls[0].log_groups, ["g"]);
    assert_eq!(calls[0].status, 200);
    assert_eq!(calls[0].filter_pattern.as_deref(), Some("hello"));
    assert!(calls[0].response_bytes > "hello".len());
    assert_eq!(
        calls[1],
        CallRecord {
            operation: "FilterLogEvents".into(),
            log_groups: vec!["missing".into()],
            status: 400,
            response_bytes: calls[1].response_bytes,
            filter_pattern: None,
            query: None,
        }
    );
}

/// Sends one raw HTTP/1.1 request and returns (status, body).
async fn raw_post(endpoint: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test]
async fn unsigned_requests_and_unknown_operations_are_rejected() {
    let fake = seeded().await;
    let target = ("X-Amz-Target", "Logs_20140328.FilterLogEvents");
    let (status, body) = raw_post(&fake.endpoint(), &[target], r#"{"logGroupName":"g"}"#).await;
    assert_eq!(status, 403);
    assert!(body.contains(r#""__type":"MissingAuthenticationTokenException""#), "{body}");

    let auth = ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDTEST/x");
    let (status, body) =
        raw_post(&fake.endpoint(), &[("X-Amz-Target", "Logs_20140328.PutLogEvents"), auth], "{}").await;
    assert_eq!(status, 400);
    assert!(body.contains("UnknownOperationException"), "{body}");
    let (status, body) = raw_post(&fake.endpoint(), &[target, auth], r#"{"logGroupName":"g"}"#).await;
    assert_eq!(status, 200);
    assert!(body.contains("hello"));
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [403, 400, 200]);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let fake = FakeCwl::start_with(FakeConfig { latency: Duration::from_millis(200), ..FakeConfig::default() }).await;
    let client = client(&fake);
    let started = Instant::now();
    client.describe_log_groups().send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn server_stops_with_the_last_clone_or_on_shutdown() {
    let fake = seeded().await;
    let endpoint = fake.endpoint();
    let other = fake.clone();
    drop(fake);
    client(&other).describe_log_groups().send().await.expect("a clone is alive");
    drop(other);
    let addr = endpoint.trim_start_matches("http://").to_string();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener closed after the last clone dropped");

    let fake = FakeCwl::start().await;
    let addr = fake.endpoint().trim_start_matches("http://").to_string();
    fake.shutdown();
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener closed on shutdown()");
}

#[tokio::test]
async fn describe_and_create_log_groups() {
    let fake = seeded().await;
    let client = client(&fake);
    client.create_log_group().log_group_name("new").send().await.unwrap();
    let e = client.create_log_group().log_group_name("new").send().await.unwrap_err().into_service_error();
    assert!(e.is_resource_already_exists_exception());
    let out = client.describe_log_groups().limit(1).send().await.unwrap();
    assert_eq!(out.log_groups()[0].log_group_name(), Some("g"));
    let next = out.next_token().unwrap();
    let out = client.describe_log_groups().next_token(next).send().await.unwrap();
    let names: Vec<_> = out.log_groups().iter().map(|g| g.log_group_name().unwrap()).collect();
    assert_eq!(names, ["new"]);
    assert!(out.next_token().is_none());
}
