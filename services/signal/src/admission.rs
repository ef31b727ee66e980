//! Who may connect, and as whom: verifies identity tokens (an identity provider's
//! JWTs, and the cluster's own anonymous tokens), issues anonymous tokens, and holds
//! the room registry's settings. One value per node, shared by every dialect's
//! sessions and the HTTP API. docs/rooms-and-auth.md describes the settings.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use auth::{AuthError, Identity, JwtVerifier, TokenIssuer};

use crate::config::{AdmissionConfig, AnonKey, AuthMode};

pub struct Admission {
    pub mode: AuthMode,
    /// The identity provider's verifier (JWT_*), if configured.
    external: Option<JwtVerifier>,
    /// The cluster's own tokens, if it issues any.
    issuer: Option<TokenIssuer>,
    own: Option<JwtVerifier>,
    pub room_ttl: Duration,
    pub require_created: bool,
    /// ROOM_EXPIRY=close: members of a created room are told and removed when it
    /// expires; `finish` lets them stay (nobody new gets in).
    pub close_on_expiry: bool,
    pub frontend_url: Option<String>,
    /// ROLE_DENY: what each role may not do.
    pub role_rules: crate::core::roles::RoleRules,
}

impl fmt::Debug for Admission {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("mode", &self.mode)
            .field("external", &self.external.is_some())
            .field("issuer", &self.issuer.is_some())
            .field("require_created", &self.require_created)
            .finish()
    }
}

impl Admission {
    /// From the node's settings; a JWKS file is read now. `embedded`: a single node on
    /// the in-process backend, which may sign anonymous tokens with a key of its own
    /// when none is configured (no other node needs to verify them).
    pub async fn from_config(config: &AdmissionConfig, embedded: bool) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client for the JWKS")?;
        let external = match &config.jwt {
            Some(jwt) => Some(jwt.verifier(&http).await.map_err(anyhow::Error::msg).context("JWT_JWKS_FILE")?),
            None => None,
        };
        let (issuer, audience, ttl) = (&config.token_issuer, &config.token_audience, config.anon_ttl);
        let issuer = match &config.anon_key {
            Some(AnonKey::Hs256(secret)) => Some(TokenIssuer::hs256(secret.expose().as_bytes(), issuer, audience, ttl)),
            Some(AnonKey::Es256Pem(path)) => {
                let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let issuer = TokenIssuer::es256_from_pem(&pem, issuer, audience, ttl)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("ANON_TOKEN_KEY_FILE {}", path.display()))?;
                Some(issuer)
            }
            None if embedded => {
                let secret: [u8; 32] = rand::random();
                Some(TokenIssuer::hs256(&secret, issuer, audience, ttl))
            }
            None => None,
        };
        let own = issuer.as_ref().map(|i| i.verifier(Duration::from_secs(30)));
        Ok(Self {
            mode: config.mode,
            external,
            issuer,
            own,
            room_ttl: config.room_ttl,
            require_created: config.require_created,
            close_on_expiry: config.close_on_expiry,
            frontend_url: config.frontend_url.clone(),
            role_rules: config.role_rules.clone(),
        })
    }

    /// Open admission with no verification at all (unit tests of other parts).
    pub fn open() -> Self {
        Self {
            mode: AuthMode::Open,
            external: None,
            issuer: None,
            own: None,
            room_ttl: Duration::from_secs(7200),
            require_created: false,
            close_on_expiry: true,
            frontend_url: None,
            role_rules: Default::default(),
        }
    }

    /// Verifies an identity token: the cluster's own first when it has a signer (they
    /// are cheap to tell apart: a wrong key fails at once), then the identity
    /// provider's. The provider's refusal is the one reported.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let mut refusal = AuthError::NotConfigured;
        if let Some(own) = &self.own {
            match own.verify(token).await {
                Ok(identity) => return Ok(identity),
                Err(e) => refusal = e,
            }
        }
        if let Some(external) = &self.external {
            return external.verify(token).await;
        }
        Err(refusal)
    }

    /// The signer of anonymous tokens, if the cluster issues them.
    pub fn issuer(&self) -> Option<&TokenIssuer> {
        self.issuer.as_ref()
    }

    pub fn requires_identity(&self) -> bool {
        self.mode == AuthMode::Jwt
    }
}
