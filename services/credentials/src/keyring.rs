//! The TURN shared secrets: one static secret from the environment, or coturn's Redis
//! userdb set `turn/realm/<realm>/secret`, which coturn re-reads (SMEMBERS) on every new
//! login and whose every member it accepts.
//!
//! Rotation with overlap: a rotation adds a new secret and we mint with the newest at
//! once; an older secret is removed only when `retire_after` (the longest TTL we issue,
//! plus a grace for replicas that still cache it and for clock skew) has passed since a
//! newer one replaced it. So no credential we issued stops working before it expires.
//! When each secret was added lives beside the set in a hash of our own; both change in
//! one Lua script, so concurrent replicas (and automatic rotation on all of them) agree.

use std::sync::RwLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use config::Secret;
use fred::prelude::*;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::metrics::SecretAges;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("the secret store in Redis is unavailable: {0}")]
    Unavailable(String),
    #[error("no TURN secret is known yet")]
    Empty,
    #[error("rotation needs the Redis secret store (REDIS_URL); a static TURN_SECRET is changed by redeploying")]
    Static,
}

/// coturn's userdb key for the REST secrets of `realm`.
pub fn secret_set_key(realm: &str) -> String {
    format!("turn/realm/{realm}/secret")
}

/// Our bookkeeping beside it: secret -> unix ms when it was added.
pub fn secret_meta_key(realm: &str) -> String {
    format!("credentials:turn-secrets:{{{realm}}}:added")
}

/// A fresh secret: 32 random bytes, base64url (43 characters, safe in any coturn config).
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// Names a secret without revealing it: the first 12 hex digits of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// What operators see of one secret (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub fingerprint: String,
    pub added_at_ms: u64,
    /// When a newer secret replaced it; None for the newest (the one we mint with).
    pub superseded_at_ms: Option<u64>,
    /// When it becomes eligible for removal.
    pub retires_at_ms: Option<u64>,
    pub current: bool,
}

/// The outcome of one rotate / retire / revoke step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyringReport {
    pub rotated: bool,
    pub retired: usize,
    /// The set was empty (a fresh deployment, or Redis lost it) and was seeded.
    pub seeded: bool,
    pub secrets: Vec<SecretInfo>,
}

/// One script for every step, so each is atomic against the others. ARGV: mode, now,
/// retire_after, new secret (rotate), min_age (rotate), seed (written when the set is
/// empty). Returns `{rotated, retired, seeded, secret1, added1, ...}` oldest first.
const KEYRING_SCRIPT: &str = r#"
local set, meta = KEYS[1], KEYS[2]
local mode, now, retire_after = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local live = {}
for _, s in ipairs(redis.call('SMEMBERS', set)) do
  -- a secret added by hand counts as added now
  redis.call('HSETNX', meta, s, now)
  live[#live + 1] = {s, tonumber(redis.call('HGET', meta, s))}
end
for _, s in ipairs(redis.call('HKEYS', meta)) do
  if redis.call('SISMEMBER', set, s) == 0 then redis.call('HDEL', meta, s) end
end
local seeded = 0
if #live == 0 and ARGV[6] ~= '' then
  redis.call('SADD', set, ARGV[6])
  redis.call('HSET', meta, ARGV[6], now)
  live[1] = {ARGV[6], now}
  seeded = 1
end
local function by_age(a, b) if a[2] == b[2] then return a[1] < b[1] end return a[2] < b[2] end
table.sort(live, by_age)
local rotated = 0
if mode == 'rotate' then
  local min_age = tonumber(ARGV[5])
  local newest = live[#live]
  if newest == nil or min_age <= 0 or now - newest[2] >= min_age then
    local added = now
    if newest ~= nil and newest[2] >= now then added = newest[2] + 1 end
    redis.call('SADD', set, ARGV[4])
    redis.call('HSET', meta, ARGV[4], added)
    live[#live + 1] = {ARGV[4], added}
    rotated = 1
  end
end
local retired = 0
if mode ~= 'current' then
  local keep = {}
  for i, s in ipairs(live) do
    local newer = live[i + 1]
    if newer ~= nil and (mode == 'revoke' or now - newer[2] >= retire_after) then
      redis.call('SREM', set, s[1])
      redis.call('HDEL', meta, s[1])
      retired = retired + 1
    else
      keep[#keep + 1] = s
    end
  end
  live = keep
end
local out = {rotated, retired, seeded}
for _, s in ipairs(live) do
  out[#out + 1] = s[1]
  out[#out + 1] = tostring(s[2])
end
return out
"#;

/// The secrets coturn accepts, kept in its Redis userdb.
pub struct RedisKeyring {
    client: Client,
    set_key: String,
    meta_key: String,
    retire_after: Duration,
    /// The newest secret, refreshed by [`RedisKeyring::refresh`]; minting reads only this.
    current: RwLock<Option<Secret>>,
    /// When the newest and the oldest secret were added, as of the last refresh.
    ages: RwLock<Option<SecretAges>>,
}

impl RedisKeyring {
    pub fn new(client: Client, realm: &str, retire_after: Duration) -> Self {
        Self {
            client,
            set_key: secret_set_key(realm),
            meta_key: secret_meta_key(realm),
            retire_after,
            current: RwLock::new(None),
            ages: RwLock::new(None),
        }
    }

    pub fn retire_after(&self) -> Duration {
        self.retire_after
    }

    /// The secret to mint with, as of the last refresh.
    pub fn current(&self) -> Option<Secret> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The secrets' ages, as of the last refresh.
    pub fn ages(&self) -> Option<SecretAges> {
        *self.ages.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the set. When it is empty, seeds it with `seed` or a generated secret,
    /// so a fresh deployment works without a manual step.
    pub async fn refresh(&self, now_ms: u64, seed: Option<&Secret>) -> Result<KeyringReport, KeyringError> {
        let seed = seed.cloned().unwrap_or_else(generate_secret);
        self.run(Step::Read, now_ms, Some(&seed)).await
    }

    /// Adds `new` (or a generated secret) if the newest is at least `min_age` old
    /// (zero: always), then retires what is due.
    pub async fn rotate(
        &self,
        now_ms: u64,
        new: Option<Secret>,
        min_age: Duration,
    ) -> Result<KeyringReport, KeyringError> {
        let new = new.unwrap_or_else(generate_secret);
        self.run(Step::Rotate { new: &new, min_age }, now_ms, self.current().as_ref()).await
    }

    /// Describes the secrets without changing anything (beyond adopting secrets added
    /// by hand, and restoring the current one if the set was lost).
    pub async fn list(&self, now_ms: u64) -> Result<KeyringReport, KeyringError> {
        self.run(Step::Read, now_ms, self.current().as_ref()).await
    }

    /// An operator's rotation: a generated secret now; with `revoke_previous`, every
    /// older secret is removed at once instead of after the overlap.
    pub async fn rotate_now(&self, now_ms: u64, revoke_previous: bool) -> Result<KeyringReport, KeyringError> {
        let rotated = self.rotate(now_ms, None, Duration::ZERO).await?;
        if !revoke_previous {
            return Ok(rotated);
        }
        let revoked = self.revoke_previous(now_ms).await?;
        Ok(KeyringReport { retired: rotated.retired + revoked.retired, secrets: revoked.secrets, ..rotated })
    }

    /// Removes every secret whose overlap has passed.
    pub async fn retire_due(&self, now_ms: u64) -> Result<KeyringReport, KeyringError> {
        self.run(Step::Retire, now_ms, self.current().as_ref()).await
    }

    /// Removes every secret but the newest at once (a leaked secret): credentials
    /// issued with the others stop working for new logins immediately.
    pub async fn revoke_previous(&self, now_ms: u64) -> Result<KeyringReport, KeyringError> {
        self.run(Step::Revoke, now_ms, self.current().as_ref()).await
    }

    /// Runs one step. `seed` is written if the set is empty: the secret we mint with,
    /// so credentials already issued keep working after Redis lost the set.
    async fn run(&self, step: Step<'_>, now_ms: u64, seed: Option<&Secret>) -> Result<KeyringReport, KeyringError> {
        let (mode, new, min_age) = match step {
            Step::Read => ("current", None, Duration::ZERO),
            Step::Rotate { new, min_age } => ("rotate", Some(new), min_age),
            Step::Retire => ("retire", None, Duration::ZERO),
            Step::Revoke => ("revoke", None, Duration::ZERO),
        };
        let expose = |s: Option<&Secret>| s.map(|s| s.expose().to_owned()).unwrap_or_default();
        let args: Vec<String> = vec![
            mode.to_owned(),
            now_ms.to_string(),
            (self.retire_after.as_millis() as u64).to_string(),
            expose(new),
            (min_age.as_millis() as u64).to_string(),
            expose(seed),
        ];
        let out: Vec<String> = self
            .client
            .eval(KEYRING_SCRIPT, vec![self.set_key.clone(), self.meta_key.clone()], args)
            .await
            .map_err(|e| KeyringError::Unavailable(e.kind().to_str().to_owned()))?;
        let number = |i: usize| out.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let secrets: Vec<(String, u64)> = out
            .get(3..)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].parse().unwrap_or(0)))
            .collect();
        if let (Some((newest, newest_added_ms)), Some((_, oldest_added_ms))) = (secrets.last(), secrets.first()) {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Secret::new(newest.clone()));
            *self.ages.write().unwrap_or_else(|e| e.into_inner()) =
                Some(SecretAges { newest_added_ms: *newest_added_ms, oldest_added_ms: *oldest_added_ms });
        }
        Ok(KeyringReport {
            rotated: number(0) == 1,
            retired: number(1) as usize,
            seeded: number(2) == 1,
            secrets: self.describe(&secrets),
        })
    }

    /// What operators see of each secret, oldest first.
    fn describe(&self, secrets: &[(String, u64)]) -> Vec<SecretInfo> {
        let retire_after = self.retire_after.as_millis() as u64;
        secrets
            .iter()
            .enumerate()
            .map(|(i, (secret, added))| {
                let superseded = secrets.get(i + 1).map(|(_, at)| *at);
                SecretInfo {
                    fingerprint: fingerprint(secret),
                    added_at_ms: *added,
                    superseded_at_ms: superseded,
                    retires_at_ms: superseded.map(|at| at + retire_after),
                    current: i + 1 == secrets.len(),
                }
            })
            .collect()
    }
}

/// One keyring step (the script's mode).
enum Step<'a> {
    Read,
    Rotate { new: &'a Secret, min_age: Duration },
    Retire,
    Revoke,
}

/// Where minting gets its secret.
pub enum Keyring {
    /// TURN_SECRET without Redis: the same secret as `static-auth-secret` in turnserver.conf.
    Static(Secret),
    Redis(RedisKeyring),
}

impl Keyring {
    pub fn current(&self) -> Result<Secret, KeyringError> {
        match self {
            Keyring::Static(secret) => Ok(secret.clone()),
            Keyring::Redis(ring) => ring.current().ok_or(KeyringError::Empty),
        }
    }

    pub fn redis(&self) -> Result<&RedisKeyring, KeyringError> {
        match self {
            Keyring::Static(_) => Err(KeyringError::Static),
            Keyring::Redis(ring) => Ok(ring),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_coturns_userdb_layout() {
        assert_eq!(secret_set_key("example.org"), "turn/realm/example.org/secret");
        assert_eq!(secret_meta_key("example.org"), "credentials:turn-secrets:{example.org}:added");
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn fingerprints_are_stable_and_do_not_contain_the_secret() {
        assert_eq!(fingerprint("s3cret"), fingerprint("s3cret"));
        assert_eq!(fingerprint("s3cret").len(), 12);
        assert_ne!(fingerprint("s3cret"), fingerprint("s3cret2"));
    }
}
