//! Where TURN logins come from (TURN_SOURCE), all normalised to one [`Grant`] from which
//! every response shape is cut: minted REST credentials for our coturn, a static
//! username/password, or a hosted provider.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config::Secret;

use crate::ice::{IceLayout, IceServer};
use crate::keyring::{Keyring, KeyringError};
use crate::providers::{Provider, ProviderError};
use crate::turn;

/// What one request gets, whatever the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub ice_servers: Vec<IceServer>,
    /// The TURN login; from the first server that has one for providers.
    pub username: Option<String>,
    pub credential: Option<String>,
    pub ttl: u64,
    pub realm: Option<String>,
}

impl Grant {
    /// With extra STUN servers (STUN_URLS) listed first, as S0, S1 and S3 listed theirs.
    pub fn with_stun_first(mut self, stun_urls: &[String]) -> Grant {
        if !stun_urls.is_empty() {
            let extra = IceServer { urls: stun_urls.to_vec(), username: None, credential: None };
            self.ice_servers.insert(0, extra);
        }
        self
    }

    /// The TURN/TURNS URLs (the draft's `uris`).
    pub fn turn_uris(&self) -> Vec<String> {
        self.ice_servers
            .iter()
            .flat_map(|s| s.urls.iter())
            .filter(|u| u.starts_with("turn:") || u.starts_with("turns:"))
            .cloned()
            .collect()
    }
}

/// One request's wishes, already validated and bounded.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// Goes into the REST username; a subject or a random id.
    pub user_id: String,
    pub ttl: Duration,
    pub region: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// A fixed TURN login and where to offer it.
#[derive(Debug, Clone)]
pub struct StaticLogin {
    pub username: String,
    pub password: Secret,
    pub realm: Option<String>,
    pub layout: IceLayout,
}

pub enum TurnSource {
    /// TURN REST credentials for our coturn (`use-auth-secret`).
    Rest {
        keyring: Keyring,
        realm: String,
        layout: IceLayout,
    },
    /// A fixed login (`user=` lines in turnserver.conf): the same for everyone.
    Static(StaticLogin),
    Provider {
        provider: Provider,
        http: reqwest::Client,
    },
}

impl TurnSource {
    pub async fn grant(&self, request: &GrantRequest) -> Result<Grant, SourceError> {
        let region = request.region.as_deref();
        match self {
            TurnSource::Rest { keyring, realm, layout } => {
                let secret = keyring.current()?;
                let cred = turn::mint(secret.expose().as_bytes(), &request.user_id, unix_now(), request.ttl.as_secs());
                Ok(Grant {
                    ice_servers: layout.ice_servers(region, &cred.username, &cred.password),
                    username: Some(cred.username),
                    credential: Some(cred.password),
                    ttl: request.ttl.as_secs(),
                    realm: Some(realm.clone()),
                })
            }
            TurnSource::Static(login) => Ok(Grant {
                ice_servers: login.layout.ice_servers(region, &login.username, login.password.expose()),
                username: Some(login.username.clone()),
                credential: Some(login.password.expose().to_owned()),
                ttl: request.ttl.as_secs(),
                realm: login.realm.clone(),
            }),
            TurnSource::Provider { provider, http } => {
                let ice_servers = provider.fetch(http, request.ttl).await?;
                let login = ice_servers.iter().find(|s| s.username.is_some() && s.credential.is_some());
                Ok(Grant {
                    username: login.and_then(|s| s.username.clone()),
                    credential: login.and_then(|s| s.credential.clone()),
                    ice_servers,
                    ttl: request.ttl.as_secs(),
                    realm: None,
                })
            }
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
