//! Bearer-token authentication of the management API.
//!
//! Tokens are compared as SHA-256 digests in constant time, so neither the content nor the
//! length of a configured token leaks through response timing. With no token configured the
//! API is open, which `serve` allows only on a loopback address.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::model::Secret;

/// Digests of the accepted tokens.
#[derive(Clone, Default)]
pub struct Tokens(Vec<[u8; 32]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

/// Shortest token accepted on a listener beyond loopback: 16 characters of a random token are
/// out of reach of guessing through the network; shorter ones are often words.
pub const MIN_TOKEN_CHARS: usize = 16;

impl Tokens {
    /// The configured tokens, trimmed: `API_TOKEN="tokA, tokB"` means `tokA` and `tokB` (a
    /// client never sends the space, so an untrimmed `" tokB"` could never match).
    pub fn new(tokens: &[Secret]) -> Self {
        Tokens(
            tokens
                .iter()
                .map(|t| t.expose().trim())
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        )
    }

    /// Why these tokens are too weak to guard a listener beyond loopback, if they are.
    pub fn weakness(tokens: &[Secret]) -> Option<String> {
        let short = tokens
            .iter()
            .map(|t| t.expose().trim())
            .filter(|t| !t.is_empty())
            .any(|t| t.chars().count() < MIN_TOKEN_CHARS);
        short.then(|| {
            format!(
                "an API token is shorter than {MIN_TOKEN_CHARS} characters; use random ones (`openssl rand -hex 24`)"
            )
        })
    }

    /// The SHA-256 digests of the tokens (the console fingerprints its sessions with them).
    pub fn digests(&self) -> &[[u8; 32]] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens; every configured token is compared.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.iter().fold(subtle::Choice::from(0), |ok, t| ok | t.ct_eq(&digest)).into()
    }
}

pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let tokens = &state.settings.api_tokens;
    if tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
    match presented {
        Some(t) if tokens.accepts(t) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is
/// case-insensitive (RFC 7235 §2.1), so `BEARER` and `bearer` are the same scheme.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("BeArEr   abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("Bearer", None),
        ] {
            assert_eq!(bearer_token(value), token, "{value}");
        }
    }

    #[test]
    fn configured_tokens_are_trimmed_and_weak_ones_named() {
        // `API_TOKEN="tokA, tokB"`, split on the comma.
        let t = Tokens::new(&[Secret::new("tokA-0123456789ab"), Secret::new(" tokB-0123456789ab")]);
        assert!(t.accepts("tokB-0123456789ab"), "the second token of a rotation works");
        assert!(!t.accepts(" tokB-0123456789ab"));
        assert_eq!(Tokens::weakness(&[Secret::new(" 0123456789abcdef ")]), None);
        let weak = Tokens::weakness(&[Secret::new("0123456789abcdef"), Secret::new("tiny")]).unwrap();
        assert!(weak.contains("16") && !weak.contains("tiny"), "the token itself is not shown: {weak}");
    }

    #[test]
    fn tokens_match_exactly() {
        let t = Tokens::new(&[Secret::new("alpha-token"), Secret::new("beta-token"), Secret::new("")]);
        assert!(t.accepts("alpha-token"));
        assert!(t.accepts("beta-token"));
        assert!(!t.accepts("alpha-toke"));
        assert!(!t.accepts(""), "an empty configured token never opens the API");
        assert!(!format!("{t:?}").contains("alpha"));
    }
}
