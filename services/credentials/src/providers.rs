//! Hosted TURN providers' REST APIs, each normalised to a list of [`IceServer`]s. Every
//! base URL is configurable (tests point them at a local server answering in the
//! provider's documented shape). Upstream error bodies are never passed on: they could
//! echo account details.

use std::time::Duration;

use config::Secret;
use serde::Deserialize;
use serde_json::json;

use crate::ice::IceServer;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider} could not be reached: {reason}")]
    Unreachable { provider: &'static str, reason: String },
    #[error("{provider} answered HTTP {status}")]
    Status { provider: &'static str, status: u16 },
    #[error("{provider} answered in an unexpected shape: {reason}")]
    Shape { provider: &'static str, reason: String },
}

impl ProviderError {
    /// The failure's kind, as a metrics label.
    /// Every `reason`, for metrics that show each from the start.
    pub const REASONS: [&'static str; 3] = ["unreachable", "status", "shape"];

    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::Unreachable { .. } => Self::REASONS[0],
            ProviderError::Status { .. } => Self::REASONS[1],
            ProviderError::Shape { .. } => Self::REASONS[2],
        }
    }
}

/// `urls` is a string or a list in RTCIceServer; providers use both.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// An ICE server as providers write it (Twilio adds a deprecated `url`).
#[derive(Debug, Deserialize)]
struct WireIceServer {
    #[serde(default)]
    urls: Option<OneOrMany>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    credential: Option<String>,
}

impl WireIceServer {
    fn normalise(self) -> Option<IceServer> {
        let urls = match (self.urls, self.url) {
            (Some(OneOrMany::One(u)), _) => vec![u],
            (Some(OneOrMany::Many(us)), _) => us,
            (None, Some(u)) => vec![u],
            (None, None) => return None,
        };
        (!urls.is_empty()).then_some(IceServer { urls, username: self.username, credential: self.credential })
    }
}

/// A single server or a list: Xirsys and Cloudflare's older endpoint answer one object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ServerOrList {
    One(WireIceServer),
    Many(Vec<WireIceServer>),
}

impl ServerOrList {
    fn normalise(self) -> Vec<IceServer> {
        match self {
            ServerOrList::One(s) => s.normalise().into_iter().collect(),
            ServerOrList::Many(list) => list.into_iter().filter_map(WireIceServer::normalise).collect(),
        }
    }
}

/// Twilio Network Traversal Service: `POST /2010-04-01/Accounts/{AccountSid}/Tokens.json`
/// with HTTP basic auth (account SID or API key SID, and auth token or API key secret)
/// and form field `Ttl`. Answers `{username, password, ttl, ice_servers: [...]}`.
#[derive(Debug, Clone)]
pub struct Twilio {
    pub base_url: String,
    pub account_sid: String,
    /// The API key SID when set, else the account SID.
    pub key_sid: String,
    pub secret: Secret,
}

/// Xirsys: `PUT /_turn/{channel}` with basic auth (ident, secret) and `{"format":"urls"}`.
/// Answers `{"s":"ok","v":{"iceServers":{urls, username, credential}}}`.
#[derive(Debug, Clone)]
pub struct Xirsys {
    pub base_url: String,
    pub ident: String,
    pub secret: Secret,
    pub channel: String,
}

/// Cloudflare Realtime TURN: `POST /v1/turn/keys/{key id}/credentials/generate-ice-servers`
/// with `Authorization: Bearer <API token>` and `{"ttl": N}`. Answers `{"iceServers": [...]}`.
#[derive(Debug, Clone)]
pub struct Cloudflare {
    pub base_url: String,
    pub key_id: String,
    pub api_token: Secret,
}

#[derive(Debug, Clone)]
pub enum Provider {
    Twilio(Twilio),
    Xirsys(Xirsys),
    Cloudflare(Cloudflare),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Twilio(_) => "twilio",
            Provider::Xirsys(_) => "xirsys",
            Provider::Cloudflare(_) => "cloudflare",
        }
    }

    /// Asks the provider for servers valid for `ttl`.
    pub async fn fetch(&self, http: &reqwest::Client, ttl: Duration) -> Result<Vec<IceServer>, ProviderError> {
        let provider = self.name();
        let request = match self {
            Provider::Twilio(t) => http
                .post(format!("{}/2010-04-01/Accounts/{}/Tokens.json", trim(&t.base_url), t.account_sid))
                .basic_auth(&t.key_sid, Some(t.secret.expose()))
                .form(&[("Ttl", ttl.as_secs().to_string())]),
            Provider::Xirsys(x) => http
                .put(format!("{}/_turn/{}", trim(&x.base_url), x.channel))
                .basic_auth(&x.ident, Some(x.secret.expose()))
                .json(&json!({ "format": "urls" })),
            Provider::Cloudflare(c) => http
                .post(format!("{}/v1/turn/keys/{}/credentials/generate-ice-servers", trim(&c.base_url), c.key_id))
                .bearer_auth(c.api_token.expose())
                .json(&json!({ "ttl": ttl.as_secs() })),
        };
        let response = request.send().await.map_err(|e| ProviderError::Unreachable {
            provider,
            // Without the URL: it can carry account ids.
            reason: e.without_url().to_string(),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProviderError::Status { provider, status: status.as_u16() });
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| ProviderError::Shape { provider, reason: e.without_url().to_string() })?;
        let servers = parse(self, body).map_err(|reason| ProviderError::Shape { provider, reason })?;
        if servers.is_empty() {
            return Err(ProviderError::Shape { provider, reason: "no ICE servers in the answer".into() });
        }
        Ok(servers)
    }
}

fn trim(base: &str) -> &str {
    base.trim_end_matches('/')
}

/// Reads a provider's answer (pure, so each documented shape has a unit test).
fn parse(provider: &Provider, body: serde_json::Value) -> Result<Vec<IceServer>, String> {
    let field = |value: &serde_json::Value, name: &str| -> Result<ServerOrList, String> {
        let v = value.get(name).ok_or_else(|| format!("no {name:?} field"))?;
        serde_json::from_value(v.clone()).map_err(|e| format!("{name}: {e}"))
    };
    match provider {
        Provider::Twilio(_) => Ok(field(&body, "ice_servers")?.normalise()),
        Provider::Xirsys(_) => {
            if body.get("s").and_then(|s| s.as_str()) != Some("ok") {
                return Err("status is not \"ok\"".into());
            }
            let v = body.get("v").ok_or("no \"v\" field")?;
            Ok(field(v, "iceServers")?.normalise())
        }
        Provider::Cloudflare(_) => Ok(field(&body, "iceServers")?.normalise()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twilio() -> Provider {
        Provider::Twilio(Twilio {
            base_url: String::new(),
            account_sid: "AC1".into(),
            key_sid: "AC1".into(),
            secret: Secret::new("x"),
        })
    }

    #[test]
    fn twilio_token_shape_keeps_urls_and_drops_the_deprecated_url() {
        let body = json!({
            "username": "u", "password": "p", "ttl": "3600", "account_sid": "AC1",
            "ice_servers": [
                {"url": "stun:global.stun.twilio.com:3478", "urls": "stun:global.stun.twilio.com:3478"},
                {"url": "turn:global.turn.twilio.com:3478?transport=udp", "urls": "turn:global.turn.twilio.com:3478?transport=udp", "username": "u", "credential": "p"}
            ]
        });
        let servers = parse(&twilio(), body).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].urls, ["turn:global.turn.twilio.com:3478?transport=udp"]);
        assert_eq!(servers[1].credential.as_deref(), Some("p"));
    }

    #[test]
    fn xirsys_single_object_and_error_status() {
        let x = Provider::Xirsys(Xirsys {
            base_url: String::new(),
            ident: "i".into(),
            secret: Secret::new("s"),
            channel: "c".into(),
        });
        let ok = json!({"s": "ok", "v": {"iceServers": {"username": "u", "credential": "p",
            "urls": ["stun:fr-turn1.xirsys.com", "turn:fr-turn1.xirsys.com:80?transport=udp"]}}});
        let servers = parse(&x, ok).unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls.len(), 2);
        assert!(parse(&x, json!({"s": "error", "v": "unauthorized"})).is_err());
    }

    #[test]
    fn cloudflare_list_shape() {
        let c = Provider::Cloudflare(Cloudflare {
            base_url: String::new(),
            key_id: "k".into(),
            api_token: Secret::new("t"),
        });
        let body = json!({"iceServers": [
            {"urls": ["stun:stun.cloudflare.com:3478"]},
            {"urls": ["turn:turn.cloudflare.com:3478?transport=udp"], "username": "u", "credential": "p"}
        ]});
        let servers = parse(&c, body).unwrap();
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("u"));
        assert!(parse(&c, json!({"result": []})).is_err());
    }
}
