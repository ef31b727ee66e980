//! Verifying JWTs: HS256 with a shared secret, or RS256/ES256 against a JWKS file or
//! URL, cached. Error messages say what is wrong with the token, never why a key failed
//! to match in detail, and never echo a token.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::AuthError;

/// Where verification keys come from.
pub enum KeySource {
    /// JWT_HS256_SECRET.
    Hs256(DecodingKey),
    /// One ES256 public key (the cluster's own anonymous tokens).
    Es256(DecodingKey),
    /// JWT_JWKS_FILE or JWT_JWKS_URL, re-read every `ttl` and on an unknown `kid`.
    Jwks(JwksCache),
}

pub struct JwtVerifier {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
}

/// The claims read from a verified token. Names and roles come from the claims the
/// common identity providers use: `name`, `preferred_username`, Cognito's
/// `cognito:username`; `role`, or Cognito's `custom:role`.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: u64,
    name: Option<String>,
    preferred_username: Option<String>,
    #[serde(rename = "cognito:username")]
    cognito_username: Option<String>,
    role: Option<String>,
    #[serde(rename = "custom:role")]
    custom_role: Option<String>,
}

/// Who a verified token says its bearer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub name: Option<String>,
    pub role: Option<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

impl JwtVerifier {
    /// The token's identity if its signature, algorithm, expiry, issuer and audience
    /// hold. Only the algorithm the key source is for is accepted (an HS256 secret
    /// never verifies an RS256 token's header, nor a JWKS an HS256 one), and `none`
    /// does not parse.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed token".into()))?;
        let key = match &self.keys {
            KeySource::Hs256(key) => {
                if header.alg != Algorithm::HS256 {
                    return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
                }
                key.clone()
            }
            KeySource::Es256(key) => {
                if header.alg != Algorithm::ES256 {
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
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty subject".into()));
        }
        let name = claims.name.or(claims.preferred_username).or(claims.cognito_username).filter(|n| !n.is_empty());
        let role = claims.role.or(claims.custom_role).filter(|r| !r.is_empty());
        Ok(Identity { subject: claims.sub, name, role, expires_at: claims.exp })
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
