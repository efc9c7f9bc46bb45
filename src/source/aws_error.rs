//! What a failed CloudWatch Logs call means, for retrying and for the person who has to fix
//! it. The SDK reports a missing credential, a refused connection and a throttle through the
//! same few error types, whose `Debug` runs to kilobytes; a run shows instead one sentence
//! naming what failed and what to set or check.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};

use super::SourceErrorKind;

/// Longest piece of someone else's text (an AWS message, an I/O error) put in a sentence.
const MAX_QUOTED_CHARS: usize = 300;

/// What went wrong with one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// CloudWatch Logs answered with an error.
    Service {
        code: String,
        message: String,
    },
    /// No credentials could be had to sign the call; it was never sent.
    Credentials {
        problem: CredentialsProblem,
        detail: String,
    },
    /// The endpoint could not be reached (DNS, connection refused, TLS).
    Unreachable {
        cause: String,
    },
    TimedOut,
    /// Something answered, but not as CloudWatch Logs does.
    BadAnswer {
        cause: String,
    },
    Other {
        cause: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsProblem {
    /// The default chain found none.
    NotLoaded,
    TimedOut,
    InvalidConfiguration,
    /// A provider failed: assuming a role, reading a profile's source.
    ProviderFailed,
}

/// A classified failure: whether to try again, whether it was a throttle, and its meaning.
#[derive(Debug, Clone)]
pub struct CallError {
    pub retryable: bool,
    pub throttled: bool,
    pub kind: SourceErrorKind,
    pub failure: Failure,
}

/// Error codes meaning the account's quota, not a fault of the call. LimitExceededException:
/// too many Insights queries running in the account.
fn is_throttle(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "SlowDown"
    )
}

fn is_server_error(code: &str) -> bool {
    matches!(code, "ServiceUnavailableException" | "InternalFailure" | "InternalServerError" | "InternalError")
        || code.contains("ServiceUnavailable")
}

/// Codes saying the credentials themselves were refused.
fn is_bad_credentials(code: &str) -> bool {
    matches!(
        code,
        "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "MissingAuthenticationTokenException"
            | "MissingAuthenticationToken"
    )
}

fn is_expired(code: &str) -> bool {
    matches!(code, "ExpiredTokenException" | "ExpiredToken")
}

fn is_clock_skew(code: &str) -> bool {
    matches!(code, "RequestExpired" | "RequestTimeTooSkewed" | "InvalidSignatureException.Skew")
}

fn is_denied(code: &str) -> bool {
    matches!(code, "AccessDeniedException" | "AccessDenied")
}

/// Classifies an SDK error.
pub fn classify<E, R>(err: SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("UnknownError").to_string();
            let message = se.err().message().unwrap_or("").to_string();
            let throttled = is_throttle(&code);
            let server = is_server_error(&code);
            let kind = if code == "ResourceNotFoundException" || code == "NoSuchBucket" {
                SourceErrorKind::NotFound
            } else if is_denied(&code) || is_bad_credentials(&code) || is_expired(&code) || is_clock_skew(&code) {
                SourceErrorKind::Denied
            } else if throttled || server {
                SourceErrorKind::Unavailable
            } else {
                SourceErrorKind::Other
            };
            CallError { retryable: throttled || server, throttled, kind, failure: Failure::Service { code, message } }
        }
        SdkError::TimeoutError(_) => CallError {
            retryable: true,
            throttled: false,
            kind: SourceErrorKind::Unavailable,
            failure: Failure::TimedOut,
        },
        SdkError::DispatchFailure(d) => {
            if let Some(c) = find::<CredentialsError>(&err) {
                let problem = match c {
                    CredentialsError::CredentialsNotLoaded(_) => CredentialsProblem::NotLoaded,
                    CredentialsError::ProviderTimedOut(_) => CredentialsProblem::TimedOut,
                    CredentialsError::InvalidConfiguration(_) => CredentialsProblem::InvalidConfiguration,
                    _ => CredentialsProblem::ProviderFailed,
                };
                let failure = Failure::Credentials { problem, detail: chain(c) };
                return CallError { retryable: false, throttled: false, kind: SourceErrorKind::Denied, failure };
            }
            let retryable = d.is_io() || d.is_timeout();
            let failure =
                if d.is_timeout() { Failure::TimedOut } else { Failure::Unreachable { cause: root_cause(&err) } };
            let kind = if retryable { SourceErrorKind::Unavailable } else { SourceErrorKind::Other };
            CallError { retryable, throttled: false, kind, failure }
        }
        SdkError::ResponseError(_) => CallError {
            retryable: true,
            throttled: false,
            kind: SourceErrorKind::Unavailable,
            failure: Failure::BadAnswer { cause: root_cause(&err) },
        },
        _ => CallError {
            retryable: false,
            throttled: false,
            kind: SourceErrorKind::Other,
            failure: Failure::Other { cause: chain(&err) },
        },
    }
}

/// The first error of type `T` in `err`'s chain of sources.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// The innermost error of the chain, where the cause is (`Connection refused (os error
/// 111)`, a DNS failure), rather than the layers that wrapped it.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut last = err;
    while let Some(e) = last.source() {
        last = e;
    }
    quoted(&last.to_string())
}

/// Every layer's own text, outermost first, each once: what `Display` says without `Debug`.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    quoted(&parts.join(": "))
}

/// Someone else's text as a part of our sentence: one line, bounded, no closing period.
fn quoted(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut t = one_line.trim().trim_end_matches('.').to_string();
    if t.chars().count() > MAX_QUOTED_CHARS {
        t = t.chars().take(MAX_QUOTED_CHARS - 1).collect::<String>() + "…";
    }
    t
}

/// Where a call went and for what: what a sentence about its failure names.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub operation: &'a str,
    /// The log groups the call read.
    pub groups: &'a [String],
    pub region: &'a str,
    /// The endpoint called, and whether it is the inspection's own (`aws.endpoint_url`).
    pub endpoint: &'a str,
    pub custom_endpoint: bool,
    pub role_arn: Option<&'a str>,
    /// Attempts made, when the call was retried.
    pub attempts: Option<u32>,
}

impl CallContext<'_> {
    fn groups_phrase(&self) -> String {
        match self.groups {
            [] => "the log group".into(),
            [one] => format!("log group {one}"),
            many => format!("log groups {}", many.join(", ")),
        }
    }

    fn gave_up(&self) -> String {
        self.attempts.map_or(String::new(), |n| format!(", gave up after {n} attempts"))
    }
}

/// One sentence: what failed, and what to set or check.
pub fn explain(failure: &Failure, ctx: &CallContext) -> String {
    match failure {
        Failure::Service { code, message } => explain_service(code, &quoted(message), ctx),
        Failure::Credentials { problem, detail } => explain_credentials(*problem, detail, ctx),
        Failure::Unreachable { .. } | Failure::TimedOut | Failure::BadAnswer { .. } => {
            explain_transport(failure, "CloudWatch Logs", "CloudWatch Logs'", ctx)
        }
        Failure::Other { cause } => format!("{} on {} failed ({cause})", ctx.operation, ctx.groups_phrase()),
    }
}

/// A call that got no usable answer from `service` (`owned`: its possessive), alike for every
/// service: where it was sent, and what to check.
fn explain_transport(failure: &Failure, service: &str, owned: &str, ctx: &CallContext) -> String {
    match failure {
        Failure::Unreachable { cause } => {
            let check = if ctx.custom_endpoint {
                format!(
                    "check the endpoint URL (aws.endpoint_url, --endpoint-url or AWS_ENDPOINT_URL) and that {service} answers there"
                )
            } else {
                "check this machine's network, DNS and proxy settings (HTTPS_PROXY)".to_string()
            };
            format!("could not reach {service} at {} ({cause}{}): {check}", ctx.endpoint, ctx.gave_up())
        }
        Failure::TimedOut => format!(
            "{service} at {} did not answer {} in time (timed out{}): check the network path to it and try again",
            ctx.endpoint,
            ctx.operation,
            ctx.gave_up()
        ),
        Failure::BadAnswer { cause } => format!(
            "the answer to {} from {} was not {owned} ({cause}{}): check that the endpoint is {service}",
            ctx.operation,
            ctx.endpoint,
            ctx.gave_up()
        ),
        // Answers from the service are explained by its own explainer; a plain sentence if not.
        _ => format!("{} to {service} at {} failed", ctx.operation, ctx.endpoint),
    }
}

/// One sentence about a failed S3 call on `bucket` (`ctx.groups` holds the `s3://` place
/// read): what failed, and what to set or check.
pub fn explain_s3(failure: &Failure, bucket: &str, ctx: &CallContext) -> String {
    let place = ctx.groups.first().map_or(bucket, String::as_str);
    match failure {
        Failure::Service { code, message } => {
            let message = quoted(message);
            let aws = if message.is_empty() { code.to_string() } else { format!("{code}: {message}") };
            if code == "NoSuchBucket" {
                format!(
                    "bucket {bucket} does not exist ({aws}): check the bucket's name (source.bucket) and the \
                     account the credentials belong to"
                )
            } else if is_denied(code) || code == "AllAccessDisabled" {
                format!(
                    "access denied to {place} on {} ({aws}): allow the credentials s3:ListBucket on the bucket (with \
                     the trail's prefix), s3:GetObject on its objects, and kms:Decrypt on the trail's key when it \
                     is encrypted with SSE-KMS",
                    ctx.operation
                )
            } else if code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || code == "301" {
                format!(
                    "bucket {bucket} is not in region {} ({aws}): set aws.region to the bucket's region",
                    ctx.region
                )
            } else if is_throttle(code) {
                format!(
                    "S3 kept throttling {} on {place} ({aws}{}): other readers share the bucket's request rate; try \
                     again later",
                    ctx.operation,
                    ctx.gave_up()
                )
            } else if is_server_error(code) {
                format!("S3 failed {} on {place} ({aws}{}): try again later", ctx.operation, ctx.gave_up())
            } else if is_bad_credentials(code) || code == "InvalidAccessKeyId" {
                format!(
                    "AWS refused the credentials ({aws}): check the access key id and secret access key (the \
                     inspection's aws settings, or the environment and profile the default chain reads)"
                )
            } else if is_expired(code) {
                format!(
                    "the AWS credentials have expired ({aws}): renew the session token, or use a role or profile \
                     that renews itself"
                )
            } else if is_clock_skew(code) {
                format!("AWS refused the request's time ({aws}): set this machine's clock right (NTP)")
            } else {
                format!("S3 refused {} on {place} ({aws})", ctx.operation)
            }
        }
        Failure::Credentials { problem, detail } => explain_credentials(*problem, detail, ctx),
        Failure::Unreachable { .. } | Failure::TimedOut | Failure::BadAnswer { .. } => {
            explain_transport(failure, "S3", "S3's", ctx)
        }
        Failure::Other { cause } => format!("{} on {place} failed ({cause})", ctx.operation),
    }
}

fn explain_service(code: &str, message: &str, ctx: &CallContext) -> String {
    let aws = if message.is_empty() { code.to_string() } else { format!("{code}: {message}") };
    let groups = ctx.groups_phrase();
    if code == "ResourceNotFoundException" && ctx.operation == "GetQueryResults" {
        format!("Logs Insights no longer knows the query on {groups} ({aws}): run again")
    } else if code == "ResourceNotFoundException" {
        let which = if ctx.groups.len() > 1 { format!("one of the {groups}") } else { groups };
        format!("{which} does not exist in region {} ({aws}): check the log group's name and the region", ctx.region)
    } else if is_denied(code) {
        format!(
            "access denied to {groups} ({aws}): allow the credentials logs:FilterLogEvents, logs:StartQuery and \
             logs:GetQueryResults on it"
        )
    } else if is_bad_credentials(code) {
        format!(
            "AWS refused the credentials ({aws}): check the access key id and secret access key (the inspection's \
             aws settings, or the environment and profile the default chain reads)"
        )
    } else if is_expired(code) {
        format!(
            "the AWS credentials have expired ({aws}): renew the session token, or use a role or profile that renews itself"
        )
    } else if is_clock_skew(code) {
        format!("AWS refused the request's time ({aws}): set this machine's clock right (NTP)")
    } else if is_throttle(code) {
        format!(
            "CloudWatch Logs kept throttling {} on {groups} ({aws}{}): other tools share the account's quota; \
             try again later or lower FILTER_LOG_EVENTS_RPS",
            ctx.operation,
            ctx.gave_up()
        )
    } else if is_server_error(code) {
        format!("CloudWatch Logs failed {} on {groups} ({aws}{}): try again later", ctx.operation, ctx.gave_up())
    } else {
        format!("CloudWatch Logs refused {} on {groups} ({aws})", ctx.operation)
    }
}

fn explain_credentials(problem: CredentialsProblem, detail: &str, ctx: &CallContext) -> String {
    match (problem, ctx.role_arn) {
        (CredentialsProblem::NotLoaded, None) => {
            let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
            format!(
                "no AWS credentials found for region {}: the default chain looked in the environment \
                 (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), in ~/.aws/credentials and ~/.aws/config (profile \
                 {profile}), for a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE) and at the ECS and EC2 instance \
                 metadata endpoints; set one of these, or the inspection's aws.access_key_id and aws.secret_access_key",
                ctx.region
            )
        }
        (_, Some(role)) => format!(
            "could not assume role {role} ({detail}): the credentials of the default chain must be allowed \
             sts:AssumeRole on it, and its trust policy (and aws.external_id) must accept them"
        ),
        (CredentialsProblem::TimedOut, None) => format!(
            "loading AWS credentials timed out ({detail}): the instance metadata or container credentials endpoint \
             did not answer; check that it is reachable, or set credentials in the environment"
        ),
        (CredentialsProblem::InvalidConfiguration, None) => {
            format!(
                "the AWS credentials configuration is invalid ({detail}): fix ~/.aws/config or the profile AWS_PROFILE names"
            )
        }
        (CredentialsProblem::ProviderFailed, None) => {
            format!("AWS credentials could not be loaded ({detail}): check the environment, ~/.aws and AWS_PROFILE")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(groups: &'a [String]) -> CallContext<'a> {
        CallContext {
            operation: "FilterLogEvents",
            groups,
            region: "eu-west-1",
            endpoint: "https://logs.eu-west-1.amazonaws.com",
            custom_endpoint: false,
            role_arn: None,
            attempts: None,
        }
    }

    /// One sentence: no line breaks, no `Debug` text, no second sentence after a period.
    fn assert_one_sentence(s: &str) {
        assert!(!s.contains('\n') && !s.contains(" { ") && !s.contains("Error {"), "{s}");
        assert!(!s.contains(". "), "one sentence: {s}");
        assert!(s.chars().count() < 700, "{s}");
    }

    #[test]
    fn each_failure_says_what_to_fix() {
        let g = vec!["trail".to_string()];
        let service = |code: &str, message: &str| Failure::Service { code: code.into(), message: message.into() };
        for (failure, wanted) in [
            (
                service("ResourceNotFoundException", "The specified log group does not exist."),
                "log group trail does not exist in region eu-west-1 (ResourceNotFoundException: The specified log group does not exist): check",
            ),
            (
                service(
                    "AccessDeniedException",
                    "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: logs:FilterLogEvents on resource: arn:aws:logs:eu-west-1:123456789012:log-group:trail",
                ),
                "access denied to log group trail (AccessDeniedException: User: arn:aws:iam::123456789012:user/ci is not authorized",
            ),
            (
                service("UnrecognizedClientException", "The security token included in the request is invalid."),
                "AWS refused the credentials",
            ),
            (
                service("ExpiredTokenException", "The security token included in the request is expired"),
                "the AWS credentials have expired",
            ),
            (
                Failure::Credentials { problem: CredentialsProblem::NotLoaded, detail: "x".into() },
                "no AWS credentials found for region eu-west-1",
            ),
            (
                Failure::Unreachable { cause: "Connection refused (os error 111)".into() },
                "could not reach CloudWatch Logs at https://logs.eu-west-1.amazonaws.com (Connection refused (os error 111))",
            ),
            (
                Failure::TimedOut,
                "CloudWatch Logs at https://logs.eu-west-1.amazonaws.com did not answer FilterLogEvents in time",
            ),
        ] {
            let s = explain(&failure, &ctx(&g));
            assert!(s.starts_with(wanted), "{s}");
            assert_one_sentence(&s);
        }
    }

    #[test]
    fn retries_and_roles_and_endpoints_are_named() {
        let g = vec!["a".to_string(), "b".to_string()];
        let mut c = ctx(&g);
        c.attempts = Some(4);
        c.custom_endpoint = true;
        c.endpoint = "http://127.0.0.1:1";
        let s = explain(&Failure::Unreachable { cause: "Connection refused".into() }, &c);
        assert!(s.contains("gave up after 4 attempts") && s.contains("aws.endpoint_url"), "{s}");
        let s = explain(&Failure::Service { code: "ResourceNotFoundException".into(), message: String::new() }, &c);
        assert!(s.starts_with("one of the log groups a, b does not exist"), "{s}");
        c.role_arn = Some("arn:aws:iam::123456789012:role/reader");
        let s = explain(
            &Failure::Credentials { problem: CredentialsProblem::ProviderFailed, detail: "AccessDenied".into() },
            &c,
        );
        assert!(s.starts_with("could not assume role arn:aws:iam::123456789012:role/reader (AccessDenied)"), "{s}");
        assert_one_sentence(&s);
    }

    #[test]
    fn s3_failures_say_what_to_fix() {
        let g = vec!["s3://trail-bucket/org".to_string()];
        let mut c = ctx(&g);
        c.operation = "ListObjectsV2";
        c.endpoint = "https://s3.eu-west-1.amazonaws.com";
        let service = |code: &str, message: &str| Failure::Service { code: code.into(), message: message.into() };
        for (failure, wanted) in [
            (service("NoSuchBucket", "The specified bucket does not exist"), "bucket trail-bucket does not exist"),
            (service("AccessDenied", "Access Denied"), "access denied to s3://trail-bucket/org on ListObjectsV2"),
            (service("SlowDown", "Please reduce your request rate."), "S3 kept throttling ListObjectsV2"),
            (service("PermanentRedirect", ""), "bucket trail-bucket is not in region eu-west-1"),
            (Failure::TimedOut, "S3 at https://s3.eu-west-1.amazonaws.com did not answer ListObjectsV2 in time"),
        ] {
            let s = explain_s3(&failure, "trail-bucket", &c);
            assert!(s.starts_with(wanted), "{s}");
            assert_one_sentence(&s);
        }
        assert!(explain_s3(&service("AccessDenied", ""), "b", &c).contains("kms:Decrypt"));
    }

    #[test]
    fn quoted_text_is_one_bounded_line() {
        assert_eq!(quoted("The specified log group does not exist.\n"), "The specified log group does not exist");
        assert_eq!(quoted(&"x".repeat(1000)).chars().count(), MAX_QUOTED_CHARS);
    }
}
