//! TURN REST credentials (draft-uberti-behave-turn-rest-00) exactly as coturn checks
//! them with `use-auth-secret`: pure code, no clock and no I/O, so every rule here is
//! tested against fixed values.
//!
//! username   = "<expiry unix time>:<user id>"
//! credential = base64(HMAC-SHA1(secret, username))

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Longest user id put into a username; longer subjects are cut.
pub const MAX_USER_ID: usize = 64;

/// One time-limited TURN login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredential {
    pub username: String,
    pub password: String,
    /// Unix seconds after which coturn refuses new allocations with it.
    pub expires_at: u64,
}

/// Mints the credential a coturn holding `secret` accepts until `now + ttl`.
pub fn mint(secret: &[u8], user_id: &str, now_unix: u64, ttl_secs: u64) -> RestCredential {
    let expires_at = now_unix + ttl_secs;
    let username = format!("{expires_at}:{user_id}");
    let password = rest_password(secret, &username);
    RestCredential { username, password, expires_at }
}

/// base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Makes a subject safe to embed in a TURN username: coturn's redis-statsdb channel is
/// `turn/realm/<realm>/user/<username>/allocation/...`, so `/` and spaces would break
/// every consumer that parses it, and `:` would blur the REST separator. Keeps
/// `[A-Za-z0-9._@-]`, maps anything else to `_`, and cuts at [`MAX_USER_ID`].
pub fn user_id_from_subject(subject: &str) -> String {
    subject
        .chars()
        .take(MAX_USER_ID)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202_test_case_2() {
        // RFC 2202 §3 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?")
        // = effcdf6ae5eb2fa2d27416d5f184df9c259a7c79, here in base64.
        assert_eq!(rest_password(b"Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn credential_matches_an_independently_computed_vector() {
        // printf '1700000000:alice' | openssl dgst -sha1 -hmac north-of-the-wall -binary | base64
        let c = mint(b"north-of-the-wall", "alice", 1_699_996_400, 3600);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.password, "DUc97LAZ4+61uBE+vszNmAGi1XA=");
        assert_eq!(c.expires_at, 1_700_000_000);
    }

    #[test]
    fn subjects_are_made_safe_for_usernames_and_channels() {
        assert_eq!(user_id_from_subject("alice@example.com"), "alice@example.com");
        assert_eq!(user_id_from_subject("auth0|12/34 x:y"), "auth0_12_34_x_y");
        assert_eq!(user_id_from_subject(&"z".repeat(200)).len(), MAX_USER_ID);
    }
}
