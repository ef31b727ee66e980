//! The node's settings, read from the environment (names in README.md's table),
//! validated before anything binds a port.

use std::net::IpAddr;
use std::time::Duration;

use config::{ConfigError, Secret, Settings};
use protocol::{DisplayName, Limits, NodeId, RoomId};
use telemetry::LogFormat;

#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// HOST; default 0.0.0.0.
    pub host: IpAddr,
    /// PORT; 0 = any free port (tests). Default 8080.
    pub port: u16,
    /// REDIS_URL; None = the in-process backend (a single node).
    pub redis_url: Option<Secret>,
    /// NODE_ID; default random. Must be unique in the cluster.
    pub node_id: NodeId,
    pub limits: Limits,
    /// ROOM_CAPACITY: most members in one room.
    pub room_capacity: usize,
    /// PRESENCE_LIMIT: beyond this many members a room is quiet: members hear of
    /// hosts only (see docs/protocol.md, "Large rooms").
    pub presence_limit: usize,
    /// ROOMS_PER_PEER: most rooms one connection may be in.
    pub rooms_per_peer: usize,
    /// OUTBOUND_QUEUE: events queued for one connection before it counts as too slow
    /// and is disconnected.
    pub outbound_queue: usize,
    /// BUS_BUFFER: bus messages the Redis subscriber may hold for the node while it is
    /// busy; beyond this (plus a 16 Ki inbox) a burst is lost and counted. Each slot costs
    /// about 600 bytes of resident memory (fred keeps several channels of this size).
    pub bus_buffer: usize,
    /// RATE_LIMIT_PER_SEC / RATE_LIMIT_BURST: client messages per connection.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// CLIENT_HEARTBEAT_MS: what `welcome` asks clients to ping at; a connection silent
    /// for twice this is closed.
    pub client_heartbeat: Duration,
    /// HEARTBEAT_INTERVAL_MS / NODE_TTL_MS: node liveness in Redis. A dead node's peers
    /// are announced as lost at most TTL + one interval after it stops.
    pub heartbeat_interval: Duration,
    pub node_ttl: Duration,
    /// DRAIN_TIMEOUT_MS: how long a stopping node waits for its sessions to close.
    pub drain_timeout: Duration,
    /// DRAIN_SPREAD_MS: on SIGTERM, clients are told to reconnect at random moments over
    /// this long (0: all at once), so the other nodes do not take them all in one burst.
    pub drain_spread: Duration,
    /// RESUME_GRACE_MS: how long the member of a dropped native connection stays in its
    /// rooms, away, for its client to resume it on any node (0: no resume).
    pub resume_grace: Duration,
    /// RELOAD_GRACE_MS: how long the member of a page that closed with 4001 `reloading`
    /// (the node's meeting page does on `pagehide`) stays for the reloaded page to
    /// resume it; a closed tab leaves when it runs out. At most RESUME_GRACE_MS.
    pub reload_grace: Duration,
    /// RECONNECT_AFTER_MS: the delay `reconnect` suggests to clients of a draining node.
    pub reconnect_after: Duration,
    /// ALLOWED_ORIGINS: comma-separated browser origins allowed to open /ws; `*` = any.
    pub allowed_origins: Vec<String>,
    /// PLAIN_PATH: where the plain-JSON dialect's WebSocket is served (the S4 server's
    /// clients connect to the root URL); a plain GET there still answers. Default `/`.
    pub plain_path: String,
    /// LOG_FORMAT: text (default) or json.
    pub log_format: LogFormat,
    /// Identity and rooms created ahead: docs/rooms-and-auth.md.
    pub admission: AdmissionConfig,
    /// STATUS_TOKEN: protects `/api/health` and `GET /api/rooms`; unset: they are off.
    pub status_token: Option<Secret>,
    pub abuse: AbuseLimits,
    /// HTTP_HEADER_TIMEOUT_MS, HTTP_MAX_HEADER_BYTES, HTTP_MAX_HEADERS, MAX_CONNECTIONS,
    /// HTTP_MAX_BODY_BYTES: slow, idle and excess connections (edge::serve).
    pub http: edge::HttpLimits,
    pub web: WebClientConfig,
    /// TURN credentials answered on the node's own origin (`/turn-credentials` and the
    /// credential service's other credential routes), by the credential service's own
    /// code: on when TURN_SECRET or TURN_SOURCE is set, as the single-process servers
    /// this replaces served them. Otherwise those paths belong to the credential
    /// service (through the load balancer).
    pub turn: Option<Box<credentials::CredentialsConfig>>,
}

/// Whether a setting of the node's environment is one the embedded credential routes
/// take: the TURN source and ICE layout, the identity checks both services share, and
/// the routes' own limits. Not the credential service's REDIS_URL (the node's is its
/// own store), nor its statistics, event log, rotation, administration or listener.
fn embedded_turn_setting(name: &str) -> bool {
    const PREFIXES: [&str; 7] = ["TURN_", "TWILIO_", "XIRSYS_", "CLOUDFLARE_", "JWT_", "RATE_LIMIT_", "API_KEY"];
    const NAMES: [&str; 7] = [
        "STUN_URLS",
        "ICE_CANDIDATE_POOL_SIZE",
        "STRICT_SECRETS",
        "PROVIDER_TIMEOUT_MS",
        "AUTH_MODE",
        "TRUSTED_PROXY_HOPS",
        "ALLOWED_ORIGINS",
    ];
    const NOT_HERE: [&str; 7] = [
        "TURN_STATSDB_URL",
        "TURN_STATS",
        "TURN_EVENTS_STREAM",
        "TURN_EVENTS_MAXLEN",
        "TURN_SECRET_ROTATE_SECS",
        "TURN_SECRET_RETIRE_GRACE_SECS",
        "TURN_SECRET_REFRESH_SECS",
    ];
    (PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)) && !NOT_HERE.contains(&name)
}

/// The embedded credential routes' settings, when TURN_SECRET or TURN_SOURCE asks for
/// them; their problems are the node's.
fn read_embedded_turn(s: &mut Settings) -> Option<Box<credentials::CredentialsConfig>> {
    // A TURN source is named, or its settings name one (as the credential service
    // infers it).
    const SOURCES: [&str; 6] = [
        "TURN_SOURCE",
        "TURN_USERNAME",
        "XIRSYS_USERNAME",
        "TWILIO_ACCOUNT_SID",
        "XIRSYS_IDENT",
        "CLOUDFLARE_TURN_KEY_ID",
    ];
    if s.secret("TURN_SECRET").is_none() && SOURCES.iter().all(|name| s.string(name).is_none()) {
        return None;
    }
    let own = s.subset(embedded_turn_setting).with("TURN_STATS", "false");
    match credentials::CredentialsConfig::from_settings(own) {
        Ok(config) => Some(Box::new(config)),
        Err(e) => {
            for problem in e.problems {
                s.problem(format!("{problem} (TURN credentials on the node)"));
            }
            None
        }
    }
}

/// The web client the node serves at `/` and `/meeting/{id}` (services/signal/web).
#[derive(Debug, Clone)]
pub struct WebClientConfig {
    /// WEB_CLIENT: serve it (default true).
    pub enabled: bool,
    /// WEB_ICE_URL: where the page gets its ICE servers, an endpoint of the credential
    /// service answering `{"iceServers": [...]}` (default `/api/turn/config`, the same
    /// origin through the load balancer). Without an answer the call uses host
    /// candidates only.
    pub ice_url: String,
    /// WEB_ICE_POLICY: `all` (default) or `relay` (media only through TURN).
    pub ice_policy: IcePolicy,
    /// STATIC_DIR: a built single-page app to serve instead of the web client (its
    /// files, and its index.html for every other GET, as S0/S1 served theirs). It must
    /// hold an index.html.
    pub static_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcePolicy {
    All,
    Relay,
}

impl IcePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IcePolicy::All => "all",
            IcePolicy::Relay => "relay",
        }
    }
}

impl std::str::FromStr for IcePolicy {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(IcePolicy::All),
            "relay" => Ok(IcePolicy::Relay),
            _ => Err("expected all or relay"),
        }
    }
}

/// Per-address and per-connection limits (docs/rooms-and-auth.md, "Limits").
#[derive(Debug, Clone)]
pub struct AbuseLimits {
    /// TRUSTED_PROXY_HOPS: proxies in front that append to X-Forwarded-For (0: the
    /// socket's address is the client's).
    pub trusted_proxy_hops: usize,
    /// IP_CONNECTS_PER_SEC / IP_CONNECTS_BURST: new connections per address (0: no
    /// limit, the default: a load test or a large office behind one NAT is one address).
    pub ip_connects_per_sec: u32,
    pub ip_connects_burst: u32,
    /// IP_MAX_CONNECTIONS: open connections per address (0: no cap, the default).
    pub ip_max_connections: usize,
    /// JOINS_PER_MINUTE: joins per connection.
    pub joins_per_minute: u32,
    /// API_RATE_LIMIT / API_RATE_WINDOW_SECS: HTTP API requests per address per window
    /// (S1's 100 per 15 minutes).
    pub api_requests: u32,
    pub api_window: Duration,
}

/// Who may connect and join: AUTH_MODE, the JWT_* verification settings, the cluster's
/// own anonymous tokens (ANON_*), and the room registry (ROOM_*).
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// AUTH_MODE: `open` (anonymous clients allowed; a token, when presented, must be
    /// valid) or `jwt` (a valid token is required before anything but ping).
    pub mode: AuthMode,
    pub jwt: Option<auth::JwtConfig>,
    /// ANON_TOKEN_SECRET (HS256, at least 32 bytes, the same on every node) or
    /// ANON_TOKEN_KEY_FILE (a PKCS#8 PEM P-256 key: ES256, its public key published at
    /// /.well-known/jwks.json).
    pub anon_key: Option<AnonKey>,
    /// ANON_TOKEN_TTL_SECS: lifetime of anonymous tokens. Default 3600.
    pub anon_ttl: Duration,
    /// TOKEN_ISSUER / TOKEN_AUDIENCE: `iss` and `aud` of the cluster's own tokens.
    pub token_issuer: String,
    pub token_audience: String,
    /// ROOM_TTL_SECS: lifetime of a created room unless the request says otherwise.
    /// Default 7200 (S4's two hours).
    pub room_ttl: Duration,
    /// ROOMS_REQUIRE_CREATE: only rooms created through the API may be joined.
    pub require_created: bool,
    /// ROOM_EXPIRY: `close` (default: members are told and removed when a created room
    /// expires) or `finish` (they stay until they leave).
    pub close_on_expiry: bool,
    /// FRONTEND_URL (or S3's APP_URL): the base of the meeting URL `POST /api/rooms`
    /// answers with.
    pub frontend_url: Option<String>,
    /// ROLE_DENY: actions denied to roles (`observer:offer,answer,candidate`).
    pub role_rules: crate::core::roles::RoleRules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Open,
    Jwt,
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(AuthMode::Open),
            "jwt" => Ok(AuthMode::Jwt),
            other => Err(format!("unknown mode {other:?}; use open or jwt")),
        }
    }
}

#[derive(Debug, Clone)]
pub enum AnonKey {
    Hs256(Secret),
    Es256Pem(std::path::PathBuf),
}

fn read_admission(s: &mut Settings) -> AdmissionConfig {
    let mode = s.parse("AUTH_MODE", AuthMode::Open);
    let jwt = auth::settings::read_jwt(s);
    let anon_key = match (s.secret("ANON_TOKEN_SECRET"), s.string("ANON_TOKEN_KEY_FILE")) {
        (Some(secret), None) => {
            if secret.expose().len() < 32 {
                s.problem("ANON_TOKEN_SECRET: at least 32 bytes");
            }
            Some(AnonKey::Hs256(secret))
        }
        (None, Some(path)) => Some(AnonKey::Es256Pem(path.into())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            s.problem("set only one of ANON_TOKEN_SECRET and ANON_TOKEN_KEY_FILE");
            None
        }
    };
    if mode == AuthMode::Jwt && jwt.is_none() && anon_key.is_none() {
        s.problem("AUTH_MODE=jwt needs a way to verify tokens: JWT_HS256_SECRET, JWT_JWKS_FILE, JWT_JWKS_URL, or the cluster's own ANON_TOKEN_SECRET / ANON_TOKEN_KEY_FILE");
    }
    AdmissionConfig {
        mode,
        jwt,
        anon_key,
        anon_ttl: Duration::from_secs(s.ranged("ANON_TOKEN_TTL_SECS", 3600, 60, 30 * 86_400)),
        token_issuer: s.string("TOKEN_ISSUER").unwrap_or_else(|| "signal".into()),
        token_audience: s.string("TOKEN_AUDIENCE").unwrap_or_else(|| "signal".into()),
        room_ttl: Duration::from_secs(s.ranged("ROOM_TTL_SECS", 7200, 1, 365 * 86_400)),
        require_created: s.parse("ROOMS_REQUIRE_CREATE", false),
        close_on_expiry: match s.string("ROOM_EXPIRY").as_deref() {
            None | Some("close") => true,
            Some("finish") => false,
            Some(other) => {
                s.problem(format!("ROOM_EXPIRY={other:?}: use close or finish"));
                true
            }
        },
        // APP_URL: S3's name for it.
        frontend_url: s
            .string("FRONTEND_URL")
            .or_else(|| s.string("APP_URL"))
            .map(|u| u.trim_end_matches('/').to_owned()),
        role_rules: match crate::core::roles::RoleRules::parse(&s.string("ROLE_DENY").unwrap_or_default()) {
            Ok(rules) => rules,
            Err(e) => {
                s.problem(format!("ROLE_DENY: {e}"));
                Default::default()
            }
        },
    }
}

impl SignalConfig {
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

    fn from_settings(mut s: Settings) -> Result<Self, ConfigError> {
        let defaults = Limits::default();
        let ms = |v: u64| Duration::from_millis(v);
        let node_id = match s.string("NODE_ID") {
            None => NodeId::random(),
            Some(raw) => NodeId::parse(&raw).unwrap_or_else(|e| {
                s.problem(format!("NODE_ID={raw:?}: {e}"));
                NodeId::random()
            }),
        };
        let redis_url = s.secret("REDIS_URL");
        if let Some(url) = &redis_url {
            let scheme_ok = [
                "redis://",
                "rediss://",
                "redis-cluster://",
                "rediss-cluster://",
                "redis-sentinel://",
                "rediss-sentinel://",
                "redis+unix://",
            ]
            .iter()
            .any(|p| url.expose().starts_with(p));
            if !scheme_ok {
                s.problem("REDIS_URL: must start with redis://, rediss://, redis-cluster://, redis-sentinel:// or redis+unix://");
            }
        }
        let config = SignalConfig {
            host: s.parse("HOST", IpAddr::from([0, 0, 0, 0])),
            port: s.parse("PORT", 8080),
            redis_url,
            node_id,
            limits: Limits {
                frame_bytes: s.ranged("FRAME_BYTES", defaults.frame_bytes, 1024, 16 * 1024 * 1024),
                room_id_chars: s.ranged("ROOM_ID_CHARS", defaults.room_id_chars, 1, RoomId::LARGEST_MAX_CHARS),
                name_chars: s.ranged("NAME_CHARS", defaults.name_chars, 1, DisplayName::LARGEST_MAX_CHARS),
                meta_bytes: s.ranged("META_BYTES", defaults.meta_bytes, 2, 1024 * 1024),
            },
            room_capacity: s.ranged("ROOM_CAPACITY", 1000, 2, 100_000),
            presence_limit: s.ranged("PRESENCE_LIMIT", 1000, 2, 100_000),
            rooms_per_peer: s.ranged("ROOMS_PER_PEER", 16, 1, 1000),
            outbound_queue: s.ranged("OUTBOUND_QUEUE", 1024, 8, 1_000_000),
            bus_buffer: s.ranged("BUS_BUFFER", 32_768, 64, 1_048_576),
            rate_per_sec: s.ranged("RATE_LIMIT_PER_SEC", 1000, 1, 1_000_000),
            rate_burst: s.ranged("RATE_LIMIT_BURST", 2000, 1, 1_000_000),
            client_heartbeat: ms(s.ranged("CLIENT_HEARTBEAT_MS", 25_000, 1_000, 600_000)),
            heartbeat_interval: ms(s.ranged("HEARTBEAT_INTERVAL_MS", 2_000, 100, 60_000)),
            node_ttl: ms(s.ranged("NODE_TTL_MS", 6_000, 300, 600_000)),
            drain_timeout: ms(s.ranged("DRAIN_TIMEOUT_MS", 10_000, 0, 600_000)),
            drain_spread: ms(s.ranged("DRAIN_SPREAD_MS", 0, 0, 600_000)),
            reconnect_after: ms(s.ranged("RECONNECT_AFTER_MS", 1_000, 0, 600_000)),
            resume_grace: ms(s.ranged("RESUME_GRACE_MS", 15_000, 0, 3_600_000)),
            reload_grace: ms(s.ranged("RELOAD_GRACE_MS", 700, 0, 60_000)),
            allowed_origins: s
                .string("ALLOWED_ORIGINS")
                .unwrap_or_else(|| "*".into())
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            log_format: s.parse("LOG_FORMAT", LogFormat::Text),
            plain_path: s.string("PLAIN_PATH").unwrap_or_else(|| "/".into()),
            admission: read_admission(&mut s),
            status_token: s.secret("STATUS_TOKEN"),
            abuse: AbuseLimits {
                trusted_proxy_hops: s.ranged("TRUSTED_PROXY_HOPS", 0usize, 0, 10),
                ip_connects_per_sec: s.ranged("IP_CONNECTS_PER_SEC", 0u32, 0, 1_000_000),
                ip_connects_burst: s.ranged("IP_CONNECTS_BURST", 100u32, 1, 1_000_000),
                ip_max_connections: s.ranged("IP_MAX_CONNECTIONS", 0usize, 0, 10_000_000),
                joins_per_minute: s.ranged("JOINS_PER_MINUTE", 600u32, 1, 1_000_000),
                api_requests: s.ranged("API_RATE_LIMIT", 100u32, 1, 1_000_000),
                api_window: Duration::from_secs(s.ranged("API_RATE_WINDOW_SECS", 900u64, 1, 86_400)),
            },
            http: edge::HttpLimits::read(&mut s),
            turn: read_embedded_turn(&mut s),
            web: WebClientConfig {
                enabled: s.parse("WEB_CLIENT", true),
                ice_url: s.string("WEB_ICE_URL").unwrap_or_else(|| "/api/turn/config".into()),
                ice_policy: s.parse("WEB_ICE_POLICY", IcePolicy::All),
                static_dir: s.string("STATIC_DIR").map(std::path::PathBuf::from),
            },
        };
        if let Some(dir) = &config.web.static_dir {
            if !dir.join("index.html").is_file() {
                s.problem(format!("STATIC_DIR={}: must be a directory holding index.html", dir.display()));
            }
        }
        const TAKEN: [&str; 14] = [
            "/meeting",
            "/app",
            "/delete-peers-and-room",
            "/health",
            "/ready",
            "/ws",
            "/healthz",
            "/readyz",
            "/metrics",
            "/socket.io",
            "/api",
            "/anonymous-signin",
            "/create-room",
            "/.well-known",
        ];
        if !config.plain_path.starts_with('/') || TAKEN.iter().any(|p| config.plain_path.starts_with(p)) {
            s.problem(format!(
                "PLAIN_PATH={:?}: must start with / and not be one of {}",
                config.plain_path,
                TAKEN.join(", ")
            ));
        }
        let ice_url = &config.web.ice_url;
        if !["/", "http://", "https://"].iter().any(|p| ice_url.starts_with(p)) || ice_url.contains(['"', '<', '>']) {
            s.problem(format!("WEB_ICE_URL={ice_url:?}: must be a path (/...) or an http(s) URL"));
        }
        if config.drain_spread >= config.drain_timeout && !config.drain_spread.is_zero() {
            s.problem("DRAIN_SPREAD_MS must be shorter than DRAIN_TIMEOUT_MS, or the last clients are cut off before they are told to reconnect");
        }
        if config.node_ttl < config.heartbeat_interval * 2 {
            s.problem(
                "NODE_TTL_MS must be at least twice HEARTBEAT_INTERVAL_MS, or a slow beat looks like a dead node",
            );
        }
        s.finish()?;
        Ok(config)
    }

    /// Whether a browser `Origin` header may open a WebSocket. Non-browser clients
    /// send no Origin and are always allowed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => self.allowed_origins.iter().any(|a| a == "*" || a == o.trim_end_matches('/')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let c = SignalConfig::from_pairs(&[]).unwrap();
        assert_eq!(c.port, 8080);
        assert!(c.redis_url.is_none());
        assert_eq!(c.limits, Limits::default());
        assert!(c.origin_allowed(Some("https://anything.example")));
        assert!(c.turn.is_none(), "no TURN source: the credential routes are the service's");
    }

    #[test]
    fn s3_names_are_read_as_ours() {
        let c = SignalConfig::from_pairs(&[("APP_URL", "https://meet.example.org/")]).unwrap();
        assert_eq!(c.admission.frontend_url.as_deref(), Some("https://meet.example.org"));
        let c = SignalConfig::from_pairs(&[
            ("TURN_USERNAME", "meet"),
            ("TURN_PASSWORD", "static-password-0123"),
            ("TURN_SERVER_URL", "turn:turn.example.com:3478"),
            ("REDIS_URL", "redis://127.0.0.1:6390"),
        ])
        .unwrap();
        let turn = c.turn.expect("a static TURN login is a TURN source");
        assert_eq!(turn.source.name(), "static");
        assert!(turn.redis_url.is_none(), "the node's REDIS_URL is its own store, not coturn's userdb");
    }

    #[test]
    fn every_bad_setting_is_reported_at_once() {
        let err = SignalConfig::from_pairs(&[
            ("PORT", "http"),
            ("NODE_ID", "has.dot"),
            ("REDIS_URL", "localhost:6379"),
            ("FRAME_BYTES", "1"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
    }

    #[test]
    fn the_plain_dialect_path_may_not_shadow_the_nodes_own_routes() {
        assert_eq!(SignalConfig::from_pairs(&[]).unwrap().plain_path, "/");
        assert_eq!(SignalConfig::from_pairs(&[("PLAIN_PATH", "/signal")]).unwrap().plain_path, "/signal");
        for bad in ["/ws", "/healthz", "/socket.io/x", "/meeting", "/app/x", "relative"] {
            let err = SignalConfig::from_pairs(&[("PLAIN_PATH", bad)]).unwrap_err();
            assert!(err.to_string().contains("PLAIN_PATH"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_web_client_settings_are_checked() {
        let web = SignalConfig::from_pairs(&[]).unwrap().web;
        assert!(web.enabled);
        assert_eq!((web.ice_url.as_str(), web.ice_policy), ("/api/turn/config", IcePolicy::All));
        let web =
            SignalConfig::from_pairs(&[("WEB_ICE_URL", "https://creds.example.com/api/turn/config")]).unwrap().web;
        assert_eq!(web.ice_url, "https://creds.example.com/api/turn/config");
        for (name, bad) in [("WEB_ICE_URL", "javascript:alert(1)"), ("WEB_ICE_POLICY", "some"), ("WEB_CLIENT", "maybe")]
        {
            let err = SignalConfig::from_pairs(&[(name, bad)]).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={bad}: {err}");
        }
    }

    #[test]
    fn the_redis_url_never_shows_in_debug_output() {
        let c = SignalConfig::from_pairs(&[("REDIS_URL", "redis://:s3cret@127.0.0.1:6379")]).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn origins_are_matched_exactly_when_listed() {
        let c = SignalConfig::from_pairs(&[("ALLOWED_ORIGINS", "https://a.example, https://b.example/")]).unwrap();
        assert!(c.origin_allowed(Some("https://b.example")));
        assert!(!c.origin_allowed(Some("https://evil.example")));
        assert!(c.origin_allowed(None));
    }

    #[test]
    fn a_ttl_shorter_than_two_beats_is_refused() {
        let err = SignalConfig::from_pairs(&[("HEARTBEAT_INTERVAL_MS", "1000"), ("NODE_TTL_MS", "1500")]).unwrap_err();
        assert!(err.to_string().contains("NODE_TTL_MS"));
    }

    #[test]
    fn the_drain_spread_must_fit_in_the_drain() {
        let err = SignalConfig::from_pairs(&[("DRAIN_TIMEOUT_MS", "5000"), ("DRAIN_SPREAD_MS", "5000")]).unwrap_err();
        assert!(err.to_string().contains("DRAIN_SPREAD_MS"), "{err}");
        let ok = SignalConfig::from_pairs(&[("DRAIN_TIMEOUT_MS", "5000"), ("DRAIN_SPREAD_MS", "4000")]).unwrap();
        assert_eq!(ok.drain_spread, Duration::from_secs(4));
    }
}
