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

impl Tokens {
    pub fn new(tokens: &[Secret]) -> Self {
        Tokens(
            tokens
                .iter()
                .filter(|t| !t.expose().is_empty())
                .map(|t| Sha256::digest(t.expose().as_bytes()).into())
                .collect(),
        )
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
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        Some(t) if tokens.accepts(t) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
