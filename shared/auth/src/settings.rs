//! The `JWT_*` settings, read the same way by both services, and the verifier they
//! build.

use std::path::PathBuf;
use std::time::Duration;

use config::{Secret, Settings};

use crate::jwt::{JwksCache, JwksLocation, JwtVerifier, KeySource};

/// Where verification keys come from.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// JWT_HS256_SECRET.
    Hs256(Secret),
    /// JWT_JWKS_FILE.
    JwksFile(PathBuf),
    /// JWT_JWKS_URL (Cognito: `https://cognito-idp.<region>.amazonaws.com/<pool id>/.well-known/jwks.json`).
    JwksUrl(String),
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub keys: JwtKeys,
    /// JWT_ISSUER (Cognito: the user pool's URL).
    pub issuer: Option<String>,
    /// JWT_AUDIENCE (Cognito ID tokens: the app client id).
    pub audience: Option<String>,
    /// JWT_LEEWAY_SECS: clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// JWT_JWKS_CACHE_SECS: how long a fetched key set is used before it is fetched again.
    pub jwks_cache: Duration,
}

/// Reads the `JWT_*` settings; None when no key source is set.
pub fn read_jwt(s: &mut Settings) -> Option<JwtConfig> {
    let hs = s.secret("JWT_HS256_SECRET");
    let file = s.string("JWT_JWKS_FILE");
    let url = s.string("JWT_JWKS_URL");
    let keys = match (hs, file, url) {
        (None, None, None) => return None,
        (Some(secret), None, None) => {
            if secret.expose().len() < 32 {
                s.problem("JWT_HS256_SECRET: at least 32 bytes (RFC 7518 §3.2)");
            }
            JwtKeys::Hs256(secret)
        }
        (None, Some(file), None) => JwtKeys::JwksFile(PathBuf::from(file)),
        (None, None, Some(url)) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                s.problem(format!("JWT_JWKS_URL={url:?}: must be an http(s) URL"));
            }
            JwtKeys::JwksUrl(url)
        }
        _ => {
            s.problem("set only one of JWT_HS256_SECRET, JWT_JWKS_FILE, JWT_JWKS_URL");
            return None;
        }
    };
    Some(JwtConfig {
        keys,
        issuer: s.string("JWT_ISSUER"),
        audience: s.string("JWT_AUDIENCE"),
        leeway: Duration::from_secs(s.ranged("JWT_LEEWAY_SECS", 30u64, 0, 300)),
        jwks_cache: Duration::from_secs(s.ranged("JWT_JWKS_CACHE_SECS", 300u64, 1, 86_400)),
    })
}

impl JwtConfig {
    /// The verifier; a JWKS is loaded now, so a wrong file or URL fails the start.
    pub async fn verifier(&self, http: &reqwest::Client) -> Result<JwtVerifier, String> {
        let keys = match &self.keys {
            JwtKeys::Hs256(secret) => {
                KeySource::Hs256(jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()))
            }
            JwtKeys::JwksFile(path) => {
                let cache = JwksCache::new(JwksLocation::File(path.clone()), http.clone(), self.jwks_cache);
                let n = cache.load().await?;
                tracing::info!(keys = n, file = %path.display(), "JWKS loaded");
                KeySource::Jwks(cache)
            }
            JwtKeys::JwksUrl(url) => {
                let cache = JwksCache::new(JwksLocation::Url(url.clone()), http.clone(), self.jwks_cache);
                match cache.load().await {
                    Ok(n) => tracing::info!(keys = n, %url, "JWKS loaded"),
                    // An identity provider that is down at start-up must not keep the
                    // service down: the cache fetches again on the first token.
                    Err(e) => tracing::warn!(error = %e, %url, "JWKS not loaded yet; retrying on demand"),
                }
                KeySource::Jwks(cache)
            }
        };
        if self.issuer.is_none() || self.audience.is_none() {
            tracing::warn!("JWT_ISSUER or JWT_AUDIENCE is unset: tokens from any issuer or for any audience signed by these keys are accepted");
        }
        Ok(JwtVerifier { keys, issuer: self.issuer.clone(), audience: self.audience.clone(), leeway: self.leeway })
    }
}
