//! The service's settings, read from the environment (docs/credentials.md lists them),
//! validated before anything binds a port; every problem is reported at once.

use std::net::IpAddr;
use std::time::Duration;

use config::{ConfigError, Secret, Settings};
use telemetry::LogFormat;

use auth::settings::read_jwt;
use auth::JwtConfig;

use crate::auth::AuthMode;
use crate::ice::{IceLayout, TurnHost};
use crate::providers::{Cloudflare, Provider, Twilio, Xirsys};
use crate::source::StaticLogin;

/// Bounds for credential lifetimes: long enough for a call to set up, short enough
/// that a leaked credential dies the same day.
pub const MIN_TTL: u64 = 60;
pub const MAX_TTL: u64 = 172_800;

#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// TURN_SOURCE=rest (default): minted REST credentials, secret from TURN_SECRET
    /// and/or the Redis userdb.
    Rest { realm: String, secret: Option<Secret>, layout: IceLayout },
    /// TURN_SOURCE=static: TURN_USERNAME / TURN_PASSWORD for everyone.
    Static(StaticLogin),
    /// TURN_SOURCE=twilio, xirsys or cloudflare.
    Provider(Provider),
}

impl SourceConfig {
    pub fn name(&self) -> &'static str {
        match self {
            SourceConfig::Rest { .. } => "rest",
            SourceConfig::Static(_) => "static",
            SourceConfig::Provider(provider) => provider.name(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CredentialsConfig {
    pub host: IpAddr,
    /// PORT; default 8090, 0 = any free port (tests).
    pub port: u16,
    pub log_format: LogFormat,
    pub source: SourceConfig,
    /// TURN_TTL: default lifetime of a credential; TURN_TTL_MAX: the most a client may
    /// ask for with `?ttl=` (and what rotation waits for before retiring a secret).
    pub ttl: Duration,
    pub ttl_max: Duration,
    /// REDIS_URL: the coturn userdb holding the secret set. None = static TURN_SECRET.
    pub redis_url: Option<Secret>,
    /// TURN_STATSDB_URL (default REDIS_URL): where coturn publishes allocation events.
    pub statsdb_url: Option<Secret>,
    /// TURN_STATS: subscribe to allocation events (default on when a statsdb is known).
    pub stats: bool,
    pub events_stream: String,
    pub events_max_len: u64,
    /// AMQP_URL and friends: the TURN event log on RabbitMQ, off when unset.
    pub amqp: Option<crate::amqp::AmqpSettings>,
    /// TURN_SECRET_ROTATE_SECS: rotate automatically when the newest secret is this old.
    pub rotate_every: Option<Duration>,
    /// TURN_SECRET_RETIRE_GRACE_SECS: added to TURN_TTL_MAX before an old secret goes.
    pub retire_grace: Duration,
    /// How often replicas re-read the secret set (and retire what is due).
    pub secret_refresh: Duration,
    pub auth_mode: AuthMode,
    /// API_KEYS: `name:key` or bare keys, comma-separated.
    pub api_keys: Vec<(String, Secret)>,
    pub api_key_header: String,
    pub jwt: Option<JwtConfig>,
    /// ALLOWED_ORIGINS: browser origins allowed cross-origin; `*` = any; empty = none.
    pub allowed_origins: Vec<String>,
    pub rate_ip: (u32, u32),
    pub rate_subject: (u32, u32),
    /// TRUSTED_PROXY_HOPS: proxies in front that append to X-Forwarded-For (0 = use the
    /// socket address).
    pub trusted_proxy_hops: usize,
    /// HTTP_HEADER_TIMEOUT_MS, HTTP_MAX_HEADER_BYTES, HTTP_MAX_HEADERS, MAX_CONNECTIONS,
    /// HTTP_MAX_BODY_BYTES: slow, idle and excess connections (edge::serve).
    pub http: edge::HttpLimits,
    pub admin_token: Option<Secret>,
    pub status_token: Option<Secret>,
    /// ICE_CANDIDATE_POOL_SIZE: the `iceCandidatePoolSize` of S3's webrtc-config (10).
    pub ice_candidate_pool_size: u8,
    /// STUN_URLS: extra STUN servers (`stun:stun.l.google.com:19302`), listed first in
    /// every iceServers answer, as S0, S1 and S3 listed theirs.
    pub stun_urls: Vec<String>,
    pub provider_timeout: Duration,
    pub drain_timeout: Duration,
    /// What the service starts with but logs loudly at start (weak secrets).
    pub warnings: Vec<String>,
}

impl CredentialsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_settings(Settings::from_env())
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_settings(Settings::from_pairs(pairs))
    }

    /// Like [`Self::from_pairs`], and the names among `pairs` that were never read
    /// (deployment files are checked with it: a typo there is silently ignored).
    pub fn from_pairs_listing_unread(pairs: &[(&str, &str)]) -> (Result<Self, ConfigError>, Vec<String>) {
        let settings = Settings::from_pairs(pairs);
        let reads = settings.reads();
        let config = Self::from_settings(settings);
        (config, reads.unread())
    }

    /// From any settings (a signal node passes on the ones of its environment that
    /// concern the credential routes it answers itself).
    pub fn from_settings(mut s: Settings) -> Result<Self, ConfigError> {
        let secs = Duration::from_secs;
        let host = s.parse("HOST", IpAddr::from([0, 0, 0, 0]));
        let port = s.parse("PORT", 8090u16);
        let log_format = s.parse("LOG_FORMAT", LogFormat::Text);
        let ttl = s.ranged("TURN_TTL", 3600u64, MIN_TTL, MAX_TTL);
        let ttl_max = s.ranged("TURN_TTL_MAX", ttl, MIN_TTL, MAX_TTL);
        if ttl_max < ttl {
            s.problem(format!("TURN_TTL_MAX={ttl_max}: must be at least TURN_TTL ({ttl})"));
        }
        let redis_url = s.secret("REDIS_URL");
        let statsdb_own = s.secret("TURN_STATSDB_URL");
        for (name, url) in [("REDIS_URL", &redis_url), ("TURN_STATSDB_URL", &statsdb_own)] {
            if let Some(url) = url {
                if !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://")) {
                    s.problem(format!("{name}: must start with redis:// or rediss:// (coturn's userdb and statsdb are standalone Redis)"));
                }
            }
        }
        let statsdb_url = statsdb_own.or_else(|| redis_url.clone());
        let stats = s.parse("TURN_STATS", statsdb_url.is_some());
        if stats && statsdb_url.is_none() {
            s.problem("TURN_STATS=true needs TURN_STATSDB_URL or REDIS_URL");
        }
        // STRICT_SECRETS=true refuses weak secrets instead of warning (production).
        let strict_secrets = s.parse("STRICT_SECRETS", false);
        let source = read_source(&mut s, &redis_url, strict_secrets);
        let rotate_every = match s.parse("TURN_SECRET_ROTATE_SECS", 0u64) {
            0 => None,
            n if n < MIN_TTL => {
                s.problem(format!("TURN_SECRET_ROTATE_SECS={n}: must be 0 (off) or at least {MIN_TTL}"));
                None
            }
            n => Some(secs(n)),
        };
        if rotate_every.is_some() && redis_url.is_none() {
            s.problem("TURN_SECRET_ROTATE_SECS needs REDIS_URL: rotated secrets live in coturn's Redis userdb");
        }
        let retire_grace = secs(s.ranged("TURN_SECRET_RETIRE_GRACE_SECS", 300u64, 10, 86_400));
        let secret_refresh = secs(s.ranged("TURN_SECRET_REFRESH_SECS", 5u64, 1, 300));

        let auth_mode = s.parse("AUTH_MODE", AuthMode::Open);
        let api_keys = read_api_keys(&mut s);
        if auth_mode == AuthMode::ApiKey && api_keys.is_empty() {
            s.problem("AUTH_MODE=api-key needs API_KEYS (comma-separated `name:key` or keys)");
        }
        let api_key_header = s.string("API_KEY_HEADER").unwrap_or_else(|| "x-api-key".into()).to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(api_key_header.as_bytes()).is_err() {
            s.problem(format!("API_KEY_HEADER={api_key_header:?}: not a valid header name"));
        }
        let jwt = read_jwt(&mut s);
        if auth_mode == AuthMode::Jwt && jwt.is_none() {
            s.problem("AUTH_MODE=jwt needs one of JWT_HS256_SECRET, JWT_JWKS_FILE or JWT_JWKS_URL");
        }
        let allowed_origins: Vec<String> = s
            .string("ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect()
            })
            .unwrap_or_default();
        for origin in &allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                s.problem(format!("ALLOWED_ORIGINS: {origin:?} is not an origin like https://app.example.com"));
            }
        }
        let rate_ip = (
            s.ranged("RATE_LIMIT_IP_PER_MIN", 60u32, 1, 1_000_000),
            s.ranged("RATE_LIMIT_IP_BURST", 20u32, 1, 1_000_000),
        );
        let rate_subject = (
            s.ranged("RATE_LIMIT_SUBJECT_PER_MIN", 30u32, 1, 1_000_000),
            s.ranged("RATE_LIMIT_SUBJECT_BURST", 10u32, 1, 1_000_000),
        );
        let trusted_proxy_hops = s.ranged("TRUSTED_PROXY_HOPS", 0usize, 0, 10);
        let http = edge::HttpLimits::read(&mut s);
        let admin_token = token(&mut s, "ADMIN_TOKEN", strict_secrets);
        let status_token = token(&mut s, "STATUS_TOKEN", strict_secrets);
        // S3 answered 10: browsers gather that many candidates before a call starts.
        let ice_candidate_pool_size = s.parse("ICE_CANDIDATE_POOL_SIZE", 10u8);
        let stun_urls = read_stun_urls(&mut s);
        let provider_timeout = Duration::from_millis(s.ranged("PROVIDER_TIMEOUT_MS", 5_000u64, 100, 60_000));
        let drain_timeout = Duration::from_millis(s.ranged("DRAIN_TIMEOUT_MS", 10_000u64, 0, 600_000));
        let events_stream = s.string("TURN_EVENTS_STREAM").unwrap_or_else(|| "turn:events".into());
        let events_max_len = s.ranged("TURN_EVENTS_MAXLEN", 100_000u64, 100, 100_000_000);
        let amqp_queue = s.string("AMQP_QUEUE").unwrap_or_else(|| "webrtc_events".into());
        let amqp_buffer = s.ranged("AMQP_BUFFER", 10_000usize, 1, 1_000_000);
        let amqp = s.secret("AMQP_URL").map(|url| {
            if !(url.expose().starts_with("amqp://") || url.expose().starts_with("amqps://")) {
                s.problem("AMQP_URL: must start with amqp:// or amqps://");
            }
            if !stats {
                s.problem("AMQP_URL publishes coturn's events: it needs TURN_STATS (TURN_STATSDB_URL or REDIS_URL)");
            }
            if amqp_queue.is_empty() || amqp_queue.len() > 255 {
                s.problem("AMQP_QUEUE: 1 to 255 bytes");
            }
            crate::amqp::AmqpSettings { url, queue: amqp_queue.clone(), buffer: amqp_buffer }
        });
        let warnings = s.take_warnings();
        s.finish()?;
        Ok(Self {
            host,
            port,
            log_format,
            source,
            ttl: secs(ttl),
            ttl_max: secs(ttl_max),
            redis_url,
            statsdb_url,
            stats,
            events_stream,
            events_max_len,
            amqp,
            rotate_every,
            retire_grace,
            secret_refresh,
            auth_mode,
            api_keys,
            api_key_header,
            jwt,
            allowed_origins,
            rate_ip,
            rate_subject,
            trusted_proxy_hops,
            http,
            admin_token,
            status_token,
            ice_candidate_pool_size,
            stun_urls,
            provider_timeout,
            drain_timeout,
            warnings,
        })
    }

    /// How long an old secret stays valid after a newer one replaced it.
    pub fn retire_after(&self) -> Duration {
        self.ttl_max + self.retire_grace
    }
}

/// What `credentials rotate` needs: the userdb, the realm and the overlap. Read on its
/// own so the command works without the serving settings (hosts, auth).
#[derive(Debug, Clone)]
pub struct KeyringConfig {
    pub redis_url: Secret,
    pub realm: String,
    pub retire_after: Duration,
}

impl KeyringConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut s = Settings::from_env();
        let redis_url = s.secret("REDIS_URL");
        if redis_url.is_none() {
            s.problem("REDIS_URL: required to rotate (the secrets live in coturn's Redis userdb)");
        }
        let realm = required(&mut s, "TURN_REALM", "to find the secret set turn/realm/<realm>/secret");
        let ttl = s.ranged("TURN_TTL", 3600u64, MIN_TTL, MAX_TTL);
        let ttl_max = s.ranged("TURN_TTL_MAX", ttl, MIN_TTL, MAX_TTL);
        let grace = s.ranged("TURN_SECRET_RETIRE_GRACE_SECS", 300u64, 10, 86_400);
        s.finish()?;
        Ok(Self {
            redis_url: redis_url.unwrap_or_else(|| Secret::new("")),
            realm,
            retire_after: Duration::from_secs(ttl_max.max(ttl) + grace),
        })
    }
}

fn token(s: &mut Settings, name: &str, strict: bool) -> Option<Secret> {
    let t = s.secret(name)?;
    check_length(s, name, t.expose().len(), strict);
    Some(t)
}

/// Secrets of fewer than this many characters are weak.
const SECRET_MIN_CHARS: usize = 16;

/// A secret shorter than [`SECRET_MIN_CHARS`]: refused with STRICT_SECRETS=true (the
/// Helm chart and production values set it), else accepted with a loud warning at
/// start, as the servers this replaces accepted theirs (S1's example: `secretkey123`).
fn check_length(s: &mut Settings, name: &str, len: usize, strict: bool) {
    if len >= SECRET_MIN_CHARS {
        return;
    }
    if strict {
        s.problem(format!("{name}: at least {SECRET_MIN_CHARS} characters (STRICT_SECRETS=true)"));
    } else {
        s.warning(format!(
            "{name} is shorter than {SECRET_MIN_CHARS} characters: it can be guessed; use a long random one, and STRICT_SECRETS=true to refuse weak secrets"
        ));
    }
}

fn required(s: &mut Settings, name: &str, why: &str) -> String {
    s.string(name).unwrap_or_else(|| {
        s.problem(format!("{name}: required {why}"));
        String::new()
    })
}

/// STUN_URLS: comma-separated `stun:` or `stuns:` URLs.
fn read_stun_urls(s: &mut Settings) -> Vec<String> {
    let Some(list) = s.string("STUN_URLS") else { return Vec::new() };
    let urls: Vec<String> = list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    for url in &urls {
        let valid = (url.starts_with("stun:") || url.starts_with("stuns:"))
            && url.len() <= 256
            && !url.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>'));
        if !valid {
            s.problem(format!("STUN_URLS: {url:?} is not a stun: or stuns: URL"));
        }
    }
    urls
}

/// Where clients reach TURN: TURN_HOSTS or TURN_HOST (S3's TURN_SERVER_HOST is read
/// as TURN_HOST), or URLs given whole (`url_names`, the first set: S3's TURN_SERVER_URL
/// or TWILIO_TURN_SERVER_URL, or XIRSYS_TURN_SERVER_URL for a static Xirsys login).
fn read_layout_with(s: &mut Settings, url_names: &[&str]) -> IceLayout {
    let host = s.string("TURN_HOST").or_else(|| s.string("TURN_SERVER_HOST"));
    let given_urls = url_names.iter().find_map(|name| s.string(name).map(|urls| (*name, urls)));
    let specs: Vec<String> = match (s.string("TURN_HOSTS"), host, &given_urls) {
        (Some(list), _, _) => list.split(',').map(str::to_owned).collect(),
        (None, Some(one), _) => vec![one],
        (None, None, Some(_)) => Vec::new(),
        (None, None, None) => {
            s.problem("TURN_HOST (or TURN_HOSTS, comma-separated, optionally region=host): required, the address clients reach coturn at");
            Vec::new()
        }
    };
    let given_urls: Vec<String> = match given_urls {
        Some((name, urls)) if specs.is_empty() => {
            let urls: Vec<String> =
                urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
            for url in &urls {
                if !(url.starts_with("turn:") || url.starts_with("turns:")) || url.contains(char::is_whitespace) {
                    s.problem(format!("{name}: {url:?} is not a turn: or turns: URL"));
                }
            }
            urls
        }
        _ => Vec::new(),
    };
    let mut hosts = Vec::new();
    for spec in specs.iter().filter(|h| !h.trim().is_empty()) {
        match TurnHost::parse(spec) {
            Ok(h) => hosts.push(h),
            Err(e) => s.problem(format!("TURN_HOSTS: {e}")),
        }
    }
    let transports = s.string("TURN_TRANSPORTS").unwrap_or_else(|| "udp,tcp,tls".into());
    let mut layout = IceLayout {
        hosts,
        port: s.parse("TURN_PORT", 3478u16),
        tls_port: s.parse("TURN_TLS_PORT", 5349u16),
        stun: s.parse("TURN_STUN", true),
        udp: false,
        tcp: false,
        tls: false,
        given_urls,
    };
    for t in transports.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t {
            "udp" => layout.udp = true,
            "tcp" => layout.tcp = true,
            "tls" => layout.tls = true,
            other => s.problem(format!("TURN_TRANSPORTS: unknown transport {other:?}; use udp, tcp, tls")),
        }
    }
    if !(layout.udp || layout.tcp || layout.tls) {
        s.problem("TURN_TRANSPORTS: name at least one of udp, tcp, tls");
    }
    layout
}

fn read_layout(s: &mut Settings) -> IceLayout {
    read_layout_with(s, &["TURN_SERVER_URL", "TWILIO_TURN_SERVER_URL"])
}

/// TURN_SOURCE, or, when it is unset, the source the other settings name (S3 chose
/// its source this way): a static login, a static Xirsys login, a provider's account,
/// else REST credentials.
fn source_kind(s: &mut Settings) -> String {
    if let Some(kind) = s.string("TURN_SOURCE") {
        return kind;
    }
    let set = |s: &mut Settings, name: &str| s.string(name).is_some();
    let kind = if set(s, "TURN_SECRET") || set(s, "TURN_SECRET_FILE") {
        "rest"
    } else if set(s, "TURN_USERNAME") && set(s, "TURN_PASSWORD") {
        "static"
    } else if set(s, "XIRSYS_USERNAME") && set(s, "XIRSYS_CREDENTIAL") {
        "xirsys-static"
    } else if set(s, "TWILIO_ACCOUNT_SID") {
        "twilio"
    } else if set(s, "XIRSYS_IDENT") {
        "xirsys"
    } else if set(s, "CLOUDFLARE_TURN_KEY_ID") {
        "cloudflare"
    } else {
        "rest"
    };
    kind.to_owned()
}

fn read_source(s: &mut Settings, redis_url: &Option<Secret>, strict: bool) -> SourceConfig {
    let kind = source_kind(s);
    match kind.as_str() {
        // S3's static Xirsys login: the username and credential Xirsys issued, at
        // XIRSYS_TURN_SERVER_URL.
        "xirsys-static" => SourceConfig::Static(StaticLogin {
            username: required(s, "XIRSYS_USERNAME", "for a static Xirsys login"),
            password: Secret::new(required(s, "XIRSYS_CREDENTIAL", "for a static Xirsys login")),
            realm: None,
            layout: read_layout_with(s, &["XIRSYS_TURN_SERVER_URL", "TURN_SERVER_URL"]),
        }),
        "rest" => {
            let realm = required(
                s,
                "TURN_REALM",
                "with TURN_SOURCE=rest: coturn's use-auth-secret needs a realm (its `realm=` line)",
            );
            if realm.contains('/') || realm.contains(char::is_whitespace) {
                s.problem(format!("TURN_REALM={realm:?}: no '/' or spaces (it is part of coturn's Redis keys)"));
            }
            let secret = s.secret("TURN_SECRET");
            if let Some(secret) = &secret {
                check_length(s, "TURN_SECRET", secret.expose().len(), strict);
            }
            if secret.is_none() && redis_url.is_none() {
                s.problem("TURN_SOURCE=rest needs TURN_SECRET (coturn's static-auth-secret) or REDIS_URL (coturn's redis-userdb, for rotation)");
            }
            SourceConfig::Rest { realm, secret, layout: read_layout(s) }
        }
        "static" => SourceConfig::Static(StaticLogin {
            username: required(s, "TURN_USERNAME", "with TURN_SOURCE=static"),
            password: Secret::new(required(s, "TURN_PASSWORD", "with TURN_SOURCE=static")),
            realm: s.string("TURN_REALM"),
            layout: read_layout(s),
        }),
        "twilio" => {
            let account_sid = required(s, "TWILIO_ACCOUNT_SID", "with TURN_SOURCE=twilio");
            let (key_sid, secret) = match s.string("TWILIO_API_KEY_SID") {
                Some(key) => (key, required(s, "TWILIO_API_KEY_SECRET", "with TWILIO_API_KEY_SID")),
                None => {
                    (account_sid.clone(), required(s, "TWILIO_AUTH_TOKEN", "with TURN_SOURCE=twilio (or an API key)"))
                }
            };
            SourceConfig::Provider(Provider::Twilio(Twilio {
                base_url: base_url(s, "TWILIO_BASE_URL", "https://api.twilio.com"),
                account_sid,
                key_sid,
                secret: Secret::new(secret),
            }))
        }
        "xirsys" => SourceConfig::Provider(Provider::Xirsys(Xirsys {
            base_url: base_url(s, "XIRSYS_BASE_URL", "https://global.xirsys.net"),
            ident: required(s, "XIRSYS_IDENT", "with TURN_SOURCE=xirsys"),
            secret: Secret::new(required(s, "XIRSYS_SECRET", "with TURN_SOURCE=xirsys")),
            channel: required(s, "XIRSYS_CHANNEL", "with TURN_SOURCE=xirsys"),
        })),
        "cloudflare" => SourceConfig::Provider(Provider::Cloudflare(Cloudflare {
            base_url: base_url(s, "CLOUDFLARE_BASE_URL", "https://rtc.live.cloudflare.com"),
            key_id: required(s, "CLOUDFLARE_TURN_KEY_ID", "with TURN_SOURCE=cloudflare"),
            api_token: Secret::new(required(s, "CLOUDFLARE_TURN_API_TOKEN", "with TURN_SOURCE=cloudflare")),
        })),
        other => {
            s.problem(format!("TURN_SOURCE={other:?}: use rest, static, twilio, xirsys or cloudflare"));
            SourceConfig::Rest { realm: String::new(), secret: None, layout: read_layout(s) }
        }
    }
}

fn base_url(s: &mut Settings, name: &str, default: &str) -> String {
    let url = s.string(name).unwrap_or_else(|| default.to_owned());
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        s.problem(format!("{name}={url:?}: must be an http(s) URL"));
    }
    url
}

fn read_api_keys(s: &mut Settings) -> Vec<(String, Secret)> {
    let Some(raw) = s.secret("API_KEYS") else { return Vec::new() };
    let mut keys = Vec::new();
    for (i, entry) in raw.expose().split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let (name, key) = match entry.split_once(':') {
            Some((name, key)) => (name.trim().to_owned(), key.trim()),
            None => (format!("api-key-{}", i + 1), entry),
        };
        if key.len() < 16 {
            s.problem(format!("API_KEYS: the key named {name:?} is shorter than 16 characters"));
        }
        keys.push((name, Secret::new(key)));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[(&str, &str)] =
        &[("TURN_REALM", "example.org"), ("TURN_SECRET", "0123456789abcdef0123"), ("TURN_HOST", "turn.example.org")];

    #[test]
    fn a_minimal_rest_setup_loads_with_defaults() {
        let c = CredentialsConfig::from_pairs(OK).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(3600));
        assert_eq!(c.auth_mode, AuthMode::Open);
        assert!(!c.stats);
        assert!(matches!(c.source, SourceConfig::Rest { ref realm, .. } if realm == "example.org"));
    }

    #[test]
    fn use_auth_secret_without_a_realm_is_a_clear_error() {
        let err =
            CredentialsConfig::from_pairs(&[("TURN_SECRET", "0123456789abcdef0123"), ("TURN_HOST", "h")]).unwrap_err();
        assert!(err.to_string().contains("TURN_REALM: required"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_and_no_secret_is_echoed() {
        let err = CredentialsConfig::from_pairs(&[
            ("TURN_SECRET", "short-s3cret"),
            ("STRICT_SECRETS", "true"),
            ("TURN_TTL", "5"),
            ("AUTH_MODE", "jwt"),
            ("TURN_TRANSPORTS", "carrier-pigeon"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for expected in
            ["TURN_REALM", "TURN_HOST", "TURN_SECRET: at least 16", "TURN_TTL=5", "AUTH_MODE=jwt", "carrier-pigeon"]
        {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains("short-s3cret"));
    }

    #[test]
    fn a_short_secret_starts_with_a_warning_unless_secrets_are_strict() {
        let s1 = [("TURN_REALM", "example.org"), ("TURN_HOST", "h"), ("TURN_SECRET", "secretkey123")];
        let config = CredentialsConfig::from_pairs(&s1).expect("S1's example secret starts");
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].contains("TURN_SECRET") && !config.warnings[0].contains("secretkey123"));
        let strict = [s1.as_slice(), &[("STRICT_SECRETS", "true")]].concat();
        let err = CredentialsConfig::from_pairs(&strict).unwrap_err();
        assert!(err.to_string().contains("TURN_SECRET: at least 16"), "{err}");
        let long = CredentialsConfig::from_pairs(&[
            ("TURN_REALM", "example.org"),
            ("TURN_HOST", "h"),
            ("TURN_SECRET", "0123456789abcdef0123"),
        ])
        .unwrap();
        assert!(long.warnings.is_empty());
    }

    #[test]
    fn extra_stun_servers_are_read_and_checked_and_the_pool_size_is_s3s() {
        let base = [("TURN_REALM", "example.org"), ("TURN_HOST", "h"), ("TURN_SECRET", "0123456789abcdef0123")];
        let config = CredentialsConfig::from_pairs(&base).unwrap();
        assert_eq!((config.stun_urls.len(), config.ice_candidate_pool_size), (0, 10));
        let google =
            [base.as_slice(), &[("STUN_URLS", "stun:stun.l.google.com:19302, stun:stun1.l.google.com:19302")]].concat();
        let config = CredentialsConfig::from_pairs(&google).unwrap();
        assert_eq!(config.stun_urls, ["stun:stun.l.google.com:19302", "stun:stun1.l.google.com:19302"]);
        let bad = [base.as_slice(), &[("STUN_URLS", "http://stun.example.com")]].concat();
        assert!(CredentialsConfig::from_pairs(&bad).unwrap_err().to_string().contains("STUN_URLS"));
    }

    #[test]
    fn s3_names_are_read_and_pick_the_source_when_turn_source_is_unset() {
        let c = CredentialsConfig::from_pairs(&[
            ("TURN_USERNAME", "meet"),
            ("TURN_PASSWORD", "static-password-0123"),
            ("TURN_SERVER_URL", "turn:turn.example.com:3478"),
        ])
        .unwrap();
        let SourceConfig::Static(login) = &c.source else { panic!("{:?}", c.source) };
        assert_eq!(login.layout.turn_urls(None), ["turn:turn.example.com:3478"]);
        let c = CredentialsConfig::from_pairs(&[
            ("XIRSYS_USERNAME", "xu"),
            ("XIRSYS_CREDENTIAL", "xc"),
            ("XIRSYS_TURN_SERVER_URL", "turn:global.xirsys.net:80?transport=udp"),
        ])
        .unwrap();
        let SourceConfig::Static(login) = &c.source else { panic!("{:?}", c.source) };
        assert_eq!((login.username.as_str(), login.password.expose()), ("xu", "xc"));
        assert_eq!(login.layout.turn_urls(None), ["turn:global.xirsys.net:80?transport=udp"]);
        let c = CredentialsConfig::from_pairs(&[
            ("TURN_SECRET", "0123456789abcdef0123"),
            ("TURN_REALM", "example.org"),
            ("TURN_SERVER_HOST", "turn.example.org"),
        ])
        .unwrap();
        let SourceConfig::Rest { layout, .. } = &c.source else { panic!("{:?}", c.source) };
        assert_eq!(layout.hosts[0].host, "turn.example.org", "TURN_SERVER_HOST is TURN_HOST");
        let c = CredentialsConfig::from_pairs(&[("TWILIO_ACCOUNT_SID", "AC1"), ("TWILIO_AUTH_TOKEN", "t")]).unwrap();
        assert_eq!(c.source.name(), "twilio");
        let c = CredentialsConfig::from_pairs(&[
            ("TURN_USERNAME", "meet"),
            ("TURN_PASSWORD", "static-password-0123"),
            ("TWILIO_TURN_SERVER_URL", "turn:global.turn.twilio.com:3478?transport=udp"),
        ])
        .unwrap();
        let SourceConfig::Static(login) = &c.source else { panic!("{:?}", c.source) };
        assert_eq!(login.layout.turn_urls(None), ["turn:global.turn.twilio.com:3478?transport=udp"]);
        let err = CredentialsConfig::from_pairs(&[
            ("TURN_USERNAME", "meet"),
            ("TURN_PASSWORD", "p"),
            ("TURN_SERVER_URL", "http://nope"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("TURN_SERVER_URL"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let c = CredentialsConfig::from_pairs(&[
            ("TURN_REALM", "example.org"),
            ("TURN_SECRET", "turn-secret-0123456789"),
            ("TURN_HOST", "h"),
            ("REDIS_URL", "redis://:redis-password@127.0.0.1:6379"),
            ("AUTH_MODE", "api-key"),
            ("API_KEYS", "web:api-key-0123456789abc"),
            ("JWT_HS256_SECRET", "jwt-secret-0123456789-0123456789-012"),
            ("ADMIN_TOKEN", "admin-token-0123456789"),
            ("STATUS_TOKEN", "status-token-0123456789"),
        ])
        .unwrap();
        let text = format!("{c:?}");
        for secret in ["turn-secret", "redis-password", "api-key-0123", "jwt-secret", "admin-token", "status-token"] {
            assert!(!text.contains(secret), "{secret} visible in {text}");
        }
    }

    #[test]
    fn providers_need_their_account_settings() {
        let err = CredentialsConfig::from_pairs(&[("TURN_SOURCE", "cloudflare")]).unwrap_err();
        assert!(err.to_string().contains("CLOUDFLARE_TURN_KEY_ID"));
        assert!(err.to_string().contains("CLOUDFLARE_TURN_API_TOKEN"));
        let ok = CredentialsConfig::from_pairs(&[
            ("TURN_SOURCE", "twilio"),
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "token"),
        ])
        .unwrap();
        assert!(matches!(ok.source, SourceConfig::Provider(Provider::Twilio(ref t)) if t.key_sid == "AC123"));
    }
}
