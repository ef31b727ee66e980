//! Who may ask for credentials (AUTH_MODE): anyone (`open`, rate-limited per client IP),
//! holders of a static API key (`api-key`), or bearers of a JWT (`jwt`: HS256 with a
//! shared secret, or RS256/ES256 against a JWKS file or URL, cached). The caller's
//! subject becomes the TURN user id and the per-subject rate-limit key.
//!
//! Error messages say what is wrong with the request, never why a key failed to match
//! in detail, and never echo a token.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

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
        let subject = verifier.verify(token).await?;
        Ok(Caller { subject: Some(subject) })
    }
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Compares a presented bearer token with a configured one in constant time.
pub fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    let Some(presented) = presented else { return false };
    let (a, b): ([u8; 32], [u8; 32]) = (Sha256::digest(presented).into(), Sha256::digest(expected).into());
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where verification keys come from.
pub enum KeySource {
    /// JWT_HS256_SECRET.
    Hs256(DecodingKey),
    /// JWT_JWKS_FILE or JWT_JWKS_URL, re-read every `ttl` and on an unknown `kid`.
    Jwks(JwksCache),
}

pub struct JwtVerifier {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// The token's subject if its signature, algorithm, expiry, issuer and audience hold.
    pub async fn verify(&self, token: &str) -> Result<String, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed token".into()))?;
        let key = match &self.keys {
            KeySource::Hs256(key) => {
                if header.alg != Algorithm::HS256 {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
                }
                key.clone()
            }
            KeySource::Jwks(cache) => {
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
                }
                cache.key_for(header.kid.as_deref(), header.alg).await?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind::*;
            AuthError::Invalid(
                match e.kind() {
                    ExpiredSignature => "token expired",
                    InvalidIssuer => "wrong issuer",
                    InvalidAudience => "wrong audience",
                    InvalidSignature => "bad signature",
                    MissingRequiredClaim(_) => "a required claim (exp, sub) is missing",
                    ImmatureSignature => "token not valid yet",
                    _ => "token rejected",
                }
                .into(),
            )
        })?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty subject".into()));
        }
        Ok(data.claims.sub)
    }
}

#[derive(Debug, Clone)]
pub enum JwksLocation {
    File(PathBuf),
    Url(String),
}

/// A JWKS, fetched lazily and kept for `ttl`. An unknown `kid` triggers an early
/// refetch (key rollover at the issuer). Fetches are attempted at most every
/// `min_refetch`, so neither unknown kids nor an identity provider that is down turn
/// every request into a fetch; meanwhile a stale set keeps serving.
pub struct JwksCache {
    location: JwksLocation,
    http: reqwest::Client,
    ttl: Duration,
    min_refetch: Duration,
    state: RwLock<Option<(JwkSet, Instant)>>,
    last_attempt: std::sync::Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(location: JwksLocation, http: reqwest::Client, ttl: Duration) -> Self {
        Self {
            location,
            http,
            ttl,
            min_refetch: Duration::from_secs(10),
            state: RwLock::new(None),
            last_attempt: std::sync::Mutex::new(None),
        }
    }

    /// Loads the set now (start-up check); the error says what is wrong with it.
    pub async fn load(&self) -> Result<usize, String> {
        let set = self.fetch().await?;
        let n = set.keys.len();
        *self.state.write().await = Some((set, Instant::now()));
        Ok(n)
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let text = match &self.location {
            JwksLocation::File(path) => {
                tokio::fs::read_to_string(path).await.map_err(|e| format!("reading {}: {e}", path.display()))?
            }
            JwksLocation::Url(url) => {
                let response = self.http.get(url).send().await.map_err(|e| format!("fetching the JWKS: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("fetching the JWKS: HTTP {}", response.status()));
                }
                response.text().await.map_err(|e| format!("reading the JWKS: {e}"))?
            }
        };
        serde_json::from_str(&text).map_err(|e| format!("the JWKS is not a valid key set: {e}"))
    }

    /// True at most once every `min_refetch` (and always the first time).
    fn may_attempt_fetch(&self) -> bool {
        let mut last = self.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let cached = self.state.read().await.as_ref().map(|(set, at)| (find(set, kid, alg), at.elapsed()));
        if let Some((Some(key), age)) = cached {
            if age < self.ttl {
                return Ok(key);
            }
        }
        if self.may_attempt_fetch() {
            match self.fetch().await {
                Ok(set) => *self.state.write().await = Some((set, Instant::now())),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh failed");
                    // Keep serving from a stale set rather than failing every request.
                }
            }
        }
        let state = self.state.read().await;
        let (set, _) = state.as_ref().ok_or(AuthError::KeysUnavailable)?;
        find(set, kid, alg).ok_or_else(|| AuthError::Invalid("no key for this token's kid".into()))
    }
}

/// The key named by `kid`, or the only key usable for `alg` when the token has no kid.
fn find(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let usable = |jwk: &&jsonwebtoken::jwk::Jwk| {
        let alg_ok = jwk.common.key_algorithm.is_none_or(|a| format!("{a:?}") == format!("{alg:?}"));
        alg_ok
            && matches!(
                (&jwk.algorithm, alg),
                (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), Algorithm::RS256)
                    | (jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
            )
    };
    let jwk = match kid {
        Some(kid) => set.keys.iter().filter(usable).find(|k| k.common.key_id.as_deref() == Some(kid)),
        None => {
            let mut candidates = set.keys.iter().filter(usable);
            let first = candidates.next();
            if candidates.next().is_some() {
                None
            } else {
                first
            }
        }
    }?;
    DecodingKey::from_jwk(jwk).ok()
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
    fn token_comparison() {
        assert!(token_matches(Some("t0ken"), "t0ken"));
        assert!(!token_matches(Some("t0ken "), "t0ken"));
        assert!(!token_matches(None, "t0ken"));
    }

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
