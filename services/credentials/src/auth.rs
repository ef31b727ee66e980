//! Who may ask for credentials (AUTH_MODE): anyone (`open`, rate-limited per client IP),
//! holders of a static API key (`api-key`), or bearers of a JWT (`jwt`, verified by the
//! shared `auth` crate: HS256 with a shared secret, or RS256/ES256 against a JWKS file
//! or URL, cached). The caller's subject becomes the TURN user id and the per-subject
//! rate-limit key.
//!
//! Error messages say what is wrong with the request, never why a key failed to match
//! in detail, and never echo a token.

use auth::{bearer, JwtVerifier};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

pub use auth::{token_matches, AuthError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Open,
    ApiKey,
    Jwt,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(AuthMode::Open),
            "api-key" => Ok(AuthMode::ApiKey),
            "jwt" => Ok(AuthMode::Jwt),
            other => Err(format!("unknown mode {other:?}; use open, api-key or jwt")),
        }
    }
}

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: Option<String>,
}

/// One configured API key: a name for logs and rate limits, and the SHA-256 of the key
/// (compared in constant time; the key itself is not kept).
pub struct ApiKey {
    pub name: String,
    digest: [u8; 32],
}

impl ApiKey {
    pub fn new(name: impl Into<String>, key: &str) -> Self {
        Self { name: name.into(), digest: Sha256::digest(key.as_bytes()).into() }
    }

    fn matches(&self, candidate: &[u8; 32]) -> bool {
        self.digest.iter().zip(candidate).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

pub struct Authenticator {
    pub mode: AuthMode,
    pub api_keys: Vec<ApiKey>,
    /// API_KEY_HEADER, lower case (default x-api-key).
    pub api_key_header: String,
    pub jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// Authenticates a request to the general credential endpoints.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        match self.mode {
            AuthMode::Open => Ok(Caller { subject: None }),
            AuthMode::ApiKey => {
                let key = headers
                    .get(self.api_key_header.as_str())
                    .and_then(|v| v.to_str().ok())
                    .ok_or(AuthError::Missing("send the API key in the configured header"))?;
                let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
                // Check every key so the time taken does not depend on which one matched.
                let found =
                    self.api_keys.iter().fold(None, |found, k| if k.matches(&digest) { Some(k) } else { found });
                found
                    .map(|k| Caller { subject: Some(k.name.clone()) })
                    .ok_or_else(|| AuthError::Invalid("unknown API key".into()))
            }
            AuthMode::Jwt => self.jwt_caller(headers).await,
        }
    }

    /// Requires a valid bearer JWT whatever the mode (`/api/meetings/webrtc-config`).
    pub async fn jwt_caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let verifier = self.jwt.as_ref().ok_or(AuthError::NotConfigured)?;
        let token = bearer(headers).ok_or(AuthError::Missing("send Authorization: Bearer <JWT>"))?;
        let identity = verifier.verify(token).await?;
        Ok(Caller { subject: Some(identity.subject) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test]
    async fn api_keys_name_the_caller() {
        let auth = Authenticator {
            mode: AuthMode::ApiKey,
            api_keys: vec![ApiKey::new("web", "k1"), ApiKey::new("bot", "k2")],
            api_key_header: "x-api-key".into(),
            jwt: None,
        };
        let mut h = HeaderMap::new();
        assert!(matches!(auth.caller(&h).await, Err(AuthError::Missing(_))));
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(auth.caller(&h).await.unwrap().subject.as_deref(), Some("bot"));
        h.insert("x-api-key", HeaderValue::from_static("k3"));
        assert!(matches!(auth.caller(&h).await, Err(AuthError::Invalid(_))));
        assert_eq!(auth.jwt_caller(&h).await, Err(AuthError::NotConfigured));
    }
}
