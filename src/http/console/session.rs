//! Signing in to the console with an API token, and the session cookie that follows.
//!
//! The cookie is `v1.<expiry>.<token fingerprint>.<nonce>.<signature>`: signed with the
//! share key, it needs no server-side storage, and every instance with the key accepts it.
//! The fingerprint is a keyed hash of the token's digest, so the cookie does not hold the
//! token (nor anything to guess it from), and removing a token from `API_TOKEN` ends the
//! sessions signed in with it. Signing out removes the cookie from the browser; rotating the
//! share key ends every session at once.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::super::{AppState, HttpSettings};
use super::{HOME, view};

pub const COOKIE: &str = "cti_session";
const PURPOSE: &str = "console-session";

/// The keyed fingerprint of an API token's digest.
fn fingerprint(settings: &HttpSettings, digest: &[u8; 32]) -> String {
    hex::encode(&settings.console.key.tag("api-token", digest)[..8])
}

/// A new session cookie's value for a token that was accepted.
pub fn issue(settings: &HttpSettings, token: &str, now: DateTime<Utc>) -> String {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let ttl = chrono::Duration::from_std(settings.console.session_ttl).unwrap_or(chrono::Duration::hours(12));
    let body = format!("v1.{}.{}.{}", (now + ttl).timestamp(), fingerprint(settings, &digest), hex::encode(nonce));
    let tag = settings.console.key.tag(PURPOSE, body.as_bytes());
    format!("{body}.{}", B64URL.encode(tag))
}

/// Whether a session cookie's value is signed, unexpired and of a token still configured.
pub fn verify(settings: &HttpSettings, value: &str, now: DateTime<Utc>) -> bool {
    let Some((body, tag)) = value.rsplit_once('.') else { return false };
    let Ok(tag) = B64URL.decode(tag) else { return false };
    if tag.len() != 32 || !settings.console.key.check(PURPOSE, body.as_bytes(), &tag) {
        return false;
    }
    let parts: Vec<&str> = body.split('.').collect();
    let [version, exp, fp, _nonce] = parts[..] else { return false };
    let unexpired = exp.parse::<i64>().is_ok_and(|e| e > now.timestamp());
    let token_kept = settings.api_tokens.digests().iter().any(|d| fingerprint(settings, d) == fp);
    version == "v1" && unexpired && token_kept
}

/// The session cookie of a request, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

pub fn is_valid(headers: &HeaderMap, settings: &HttpSettings, now: DateTime<Utc>) -> bool {
    cookie(headers).is_some_and(|v| verify(settings, v, now))
}

/// `Secure` when the service is reached over https (its public URL, or a proxy that says so).
fn secure(settings: &HttpSettings, headers: &HeaderMap) -> bool {
    settings.public_url.starts_with("https://")
        || headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .expect("cookie values are ASCII")
}

/// The sign-in page's URL, to come back to `next` afterwards.
pub fn sign_in_url(next: &str) -> String {
    format!("/console/sign-in?{}", serde_urlencoded::to_string([("next", next)]).unwrap_or_default())
}

/// Where to go after signing in: a console page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console") && !n.contains("//") && !n.contains('\\') => n,
        _ => HOME,
    }
}

#[derive(Debug, Deserialize)]
pub struct FormQuery {
    next: Option<String>,
}

fn form_page(next: &str, failed: bool) -> maud::Markup {
    view::bare(
        "Sign in",
        html! {
            form.sign-in method="post" action="/console/sign-in" {
                @if failed { p.error { "That token is not valid." } }
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
                p.hint { "One of the service's " code { "API_TOKEN" } " values, the same token the API takes." }
            }
        },
    )
}

pub async fn form(State(state): State<AppState>, Query(q): Query<FormQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if state.settings.api_tokens.is_empty() {
        return Redirect::to(next).into_response();
    }
    form_page(next, false).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
    next: Option<String>,
}

pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, Form(input): Form<SignIn>) -> Response {
    let settings = &state.settings;
    let next = safe_next(input.next.as_deref());
    let token = input.token.trim();
    if settings.api_tokens.is_empty() {
        return Redirect::to(next).into_response();
    }
    if !settings.api_tokens.accepts(token) {
        tracing::info!("console sign-in refused: wrong token");
        return (StatusCode::UNAUTHORIZED, form_page(next, true)).into_response();
    }
    let value = issue(settings, token, Utc::now());
    let cookie = set_cookie(&value, settings.console.session_ttl.as_secs(), secure(settings, &headers));
    tracing::info!("console sign-in");
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let cookie = set_cookie("", 0, secure(&state.settings, &headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console/sign-in")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::Tokens;
    use crate::model::Secret;

    fn settings(tokens: &[&str]) -> HttpSettings {
        let tokens: Vec<Secret> = tokens.iter().map(|t| Secret::new(*t)).collect();
        HttpSettings { api_tokens: Tokens::new(&tokens), ..HttpSettings::default() }
    }

    #[test]
    fn a_session_lasts_its_time_and_its_token() {
        let s = settings(&["alpha-token", "beta-token"]);
        let now = Utc::now();
        let v = issue(&s, "alpha-token", now);
        assert!(!v.contains("alpha"), "the token is not in the cookie");
        assert!(verify(&s, &v, now));
        assert!(!verify(&s, &v, now + chrono::Duration::hours(13)), "expired");
        let without_alpha = HttpSettings { api_tokens: Tokens::new(&[Secret::new("beta-token")]), ..s.clone() };
        assert!(!verify(&without_alpha, &v, now), "removing the token ends its sessions");
        let rotated = HttpSettings { console: Default::default(), ..s.clone() };
        assert!(!verify(&rotated, &v, now), "a new key ends every session");
        let (body, tag) = v.rsplit_once('.').unwrap();
        let later = body.replacen(&body[3..13], "9999999999", 1);
        assert!(!verify(&s, &format!("{later}.{tag}"), now), "the expiry is signed");
        assert!(!verify(&s, "v1.1.2.3", now));
        assert!(!verify(&s, "", now));
    }

    #[test]
    fn sign_in_only_leads_back_into_the_console() {
        assert_eq!(safe_next(Some("/console/runs/1?x=2")), "/console/runs/1?x=2");
        for bad in ["https://evil.example", "//evil.example", "/console//evil", "/api/v1/runs", "/console\\x"] {
            assert_eq!(safe_next(Some(bad)), HOME, "{bad}");
        }
        assert_eq!(sign_in_url("/console/runs/1?a=b&c"), "/console/sign-in?next=%2Fconsole%2Fruns%2F1%3Fa%3Db%26c");
    }
}
