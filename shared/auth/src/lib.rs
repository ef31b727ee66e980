//! Identity, shared by the signal node and the credential service.
//!
//! - [`jwt`]: verifying tokens from an identity provider (or from this cluster).
//! - [`issuer`]: the cluster's own short-lived tokens for anonymous users.
//! - [`settings`]: the `JWT_*` and `ANON_*` settings both services read.
//! - [`bearer`], [`token_matches`]: reading and comparing bearer tokens.

pub mod issuer;
pub mod jwt;
pub mod settings;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

pub use issuer::TokenIssuer;
pub use jwt::{Identity, JwksCache, JwksLocation, JwtVerifier, KeySource};
pub use settings::{JwtConfig, JwtKeys};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("credentials required: {0}")]
    Missing(&'static str),
    #[error("invalid credentials: {0}")]
    Invalid(String),
    #[error("this endpoint needs JWT verification, which is not configured")]
    NotConfigured,
    #[error("the key set used to verify tokens is unavailable")]
    KeysUnavailable,
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The token of an `Authorization` header: `Bearer <token>`, or a bare token with no
/// scheme, as S4's clients sent it (its server stripped an optional `Bearer `).
pub fn bearer_or_bare(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    match value.split_once(' ') {
        Some(_) => bearer(headers),
        None => Some(value).filter(|t| !t.is_empty()),
    }
}

/// Compares a presented token with a configured one in constant time (over their
/// SHA-256, so lengths leak nothing either).
pub fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    let Some(presented) = presented else { return false };
    let (a, b): ([u8; 32], [u8; 32]) = (Sha256::digest(presented).into(), Sha256::digest(expected).into());
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn a_bare_token_is_read_where_s4_clients_send_one() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("eyJ.abc.def"));
        assert_eq!((bearer(&h), bearer_or_bare(&h)), (None, Some("eyJ.abc.def")));
        h.insert("authorization", HeaderValue::from_static("Bearer eyJ.abc.def"));
        assert_eq!(bearer_or_bare(&h), Some("eyJ.abc.def"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_or_bare(&h), None, "another scheme is not a bare token");
        h.insert("authorization", HeaderValue::from_static(""));
        assert_eq!(bearer_or_bare(&h), None);
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches(Some("t0ken"), "t0ken"));
        assert!(!token_matches(Some("t0ken "), "t0ken"));
        assert!(!token_matches(None, "t0ken"));
    }
}
