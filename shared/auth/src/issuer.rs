//! The cluster's own short-lived tokens, for users without an identity provider
//! (`POST /anonymous-signin`). Signed with HS256 (a secret shared by the nodes) or
//! ES256 (a P-256 private key; its public half is published as a JWKS at
//! `/.well-known/jwks.json`, so other services can verify the tokens without a secret).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;
use serde_json::{json, Value};

use crate::jwt::{JwtVerifier, KeySource};

pub struct TokenIssuer {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
    /// The public key, for verification here and in the JWKS (ES256 only).
    public: Option<(DecodingKey, Value)>,
    secret: Option<Vec<u8>>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    /// Tells these tokens apart from an identity provider's.
    anonymous: bool,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenIssuer {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str, ttl: Duration) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            alg: Algorithm::HS256,
            kid: None,
            public: None,
            secret: Some(secret.to_vec()),
            issuer: issuer.into(),
            audience: audience.into(),
            ttl,
        }
    }

    /// From a PKCS#8 PEM P-256 private key (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256`).
    pub fn es256_from_pem(pem: &str, issuer: &str, audience: &str, ttl: Duration) -> Result<Self, String> {
        let der = pem_body(pem).ok_or("not a PEM PRIVATE KEY")?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &ring::rand::SystemRandom::new())
            .map_err(|_| "not a PKCS#8 P-256 private key")?;
        // The public key is the uncompressed point 0x04 || X || Y.
        let point = pair.public_key().as_ref();
        let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..65]));
        let kid = URL_SAFE_NO_PAD.encode(&ring::digest::digest(&ring::digest::SHA256, point).as_ref()[..12]);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
        Ok(Self {
            key: EncodingKey::from_ec_der(&der),
            alg: Algorithm::ES256,
            kid: Some(kid),
            public: Some((decoding, jwk)),
            secret: None,
            issuer: issuer.into(),
            audience: audience.into(),
            ttl,
        })
    }

    /// A token for `subject`, shown as `name`; and its expiry (Unix seconds).
    pub fn issue(&self, subject: &str, name: &str) -> (String, u64) {
        let iat = now();
        let exp = iat + self.ttl.as_secs();
        let claims = Claims { sub: subject, name, iss: &self.issuer, aud: &self.audience, iat, exp, anonymous: true };
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        let token = jsonwebtoken::encode(&header, &claims, &self.key).expect("the claims serialise and the key signs");
        (token, exp)
    }

    /// The public key set to publish, for ES256.
    pub fn jwks(&self) -> Option<Value> {
        self.public.as_ref().map(|(_, jwk)| json!({"keys": [jwk]}))
    }

    /// A verifier for the tokens this issuer signs.
    pub fn verifier(&self, leeway: Duration) -> JwtVerifier {
        let keys = match (&self.public, &self.secret) {
            (Some((key, _)), _) => KeySource::Es256(key.clone()),
            (None, Some(secret)) => KeySource::Hs256(DecodingKey::from_secret(secret)),
            (None, None) => unreachable!("an issuer has a secret or a key pair"),
        };
        JwtVerifier { keys, issuer: Some(self.issuer.clone()), audience: Some(self.audience.clone()), leeway }
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(body).ok().filter(|der| !der.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key made for these tests only.
    pub const TEST_P256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgsSb/DAIVfzst6Ctv
6lVJvLa0+VZG2vtoOO8nmJyF896hRANCAAQysE9exBSZpXWLCiXNqieZwoWFZyuy
HMP4QudkdnfDaLfLkscHp3epmUJ4HrdRPMZ7TRSaJEXZyRtnlBtHos3D
-----END PRIVATE KEY-----";

    #[tokio::test]
    async fn hs256_tokens_verify_with_the_issuers_own_verifier_and_carry_the_name() {
        let issuer = TokenIssuer::hs256(&[7u8; 32], "signal", "signal-clients", Duration::from_secs(60));
        let (token, exp) = issuer.issue("anon-1", "Guest 1");
        let id = issuer.verifier(Duration::ZERO).verify(&token).await.unwrap();
        assert_eq!((id.subject.as_str(), id.name.as_deref(), id.expires_at), ("anon-1", Some("Guest 1"), exp));
        assert!(issuer.jwks().is_none(), "a shared secret is never published");
        let other = TokenIssuer::hs256(&[8u8; 32], "signal", "signal-clients", Duration::from_secs(60));
        assert!(other.verifier(Duration::ZERO).verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn es256_tokens_verify_and_the_public_key_is_published() {
        let issuer = TokenIssuer::es256_from_pem(TEST_P256_PEM, "signal", "aud", Duration::from_secs(60)).unwrap();
        let (token, _) = issuer.issue("anon-2", "Guest 2");
        assert_eq!(issuer.verifier(Duration::ZERO).verify(&token).await.unwrap().subject, "anon-2");
        let jwks = issuer.jwks().unwrap();
        assert_eq!((&jwks["keys"][0]["kty"], &jwks["keys"][0]["crv"]), (&json!("EC"), &json!("P-256")));
        assert!(jwks["keys"][0].get("d").is_none(), "the private part is never published");
        assert!(TokenIssuer::es256_from_pem("not a key", "i", "a", Duration::from_secs(1)).is_err());
    }
}
