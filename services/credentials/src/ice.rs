//! The `iceServers` list a browser passes to `new RTCPeerConnection({iceServers})`:
//! STUN, TURN over UDP and TCP and TURNS over TLS, for one or several TURN hosts
//! (regions). Pure code: the layout comes from configuration, the login from a source.

use serde::{Deserialize, Serialize};

/// One entry of `iceServers`, in the WebRTC `RTCIceServer` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A TURN host, optionally tagged with a region (`TURN_HOSTS=eu=turn-eu.example.com,...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnHost {
    pub region: Option<String>,
    pub host: String,
}

impl TurnHost {
    /// `host` or `region=host`.
    pub fn parse(spec: &str) -> Result<TurnHost, String> {
        let (region, host) = match spec.split_once('=') {
            Some((region, host)) => (Some(region.trim().to_owned()), host.trim()),
            None => (None, spec.trim()),
        };
        let valid = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        };
        if !valid(host) {
            return Err(format!("{spec:?} is not a host name or IP address"));
        }
        if region.as_deref().is_some_and(|r| r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(format!("{spec:?}: a region is letters, digits and '-'"));
        }
        Ok(TurnHost { region, host: host.trim_matches(['[', ']']).to_owned() })
    }

    /// The host as it appears in a URI: IPv6 addresses in brackets.
    fn uri_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Which URLs to offer for each host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceLayout {
    pub hosts: Vec<TurnHost>,
    /// TURN_PORT: STUN and TURN over UDP/TCP (default 3478).
    pub port: u16,
    /// TURN_TLS_PORT: TURNS (default 5349).
    pub tls_port: u16,
    pub stun: bool,
    pub udp: bool,
    pub tcp: bool,
    pub tls: bool,
    /// TURN URLs given whole (S3's TURN_SERVER_URL), offered as they are instead of the
    /// hosts' (and with no STUN of their own).
    pub given_urls: Vec<String>,
}

impl IceLayout {
    /// The hosts of `region`, or every host when no region is asked for or none matches
    /// (a client with a stale region name still gets working servers).
    pub fn hosts_for(&self, region: Option<&str>) -> Vec<&TurnHost> {
        let matching: Vec<&TurnHost> =
            self.hosts.iter().filter(|h| region.is_some() && h.region.as_deref() == region).collect();
        if matching.is_empty() {
            self.hosts.iter().collect()
        } else {
            matching
        }
    }

    pub fn turn_urls(&self, region: Option<&str>) -> Vec<String> {
        if !self.given_urls.is_empty() {
            return self.given_urls.clone();
        }
        let mut urls = Vec::new();
        for host in self.hosts_for(region) {
            let h = host.uri_host();
            if self.udp {
                urls.push(format!("turn:{h}:{}?transport=udp", self.port));
            }
            if self.tcp {
                urls.push(format!("turn:{h}:{}?transport=tcp", self.port));
            }
            if self.tls {
                urls.push(format!("turns:{h}:{}?transport=tcp", self.tls_port));
            }
        }
        urls
    }

    fn stun_urls(&self, region: Option<&str>) -> Vec<String> {
        self.hosts_for(region).iter().map(|host| format!("stun:{}:{}", host.uri_host(), self.port)).collect()
    }

    /// STUN first (no login), then one entry holding every TURN URL with the login.
    pub fn ice_servers(&self, region: Option<&str>, username: &str, credential: &str) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if self.stun && !self.hosts.is_empty() {
            servers.push(IceServer { urls: self.stun_urls(region), username: None, credential: None });
        }
        let turn = self.turn_urls(region);
        if !turn.is_empty() {
            servers.push(IceServer {
                urls: turn,
                username: Some(username.to_owned()),
                credential: Some(credential.to_owned()),
            });
        }
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(hosts: &[&str]) -> IceLayout {
        IceLayout {
            hosts: hosts.iter().map(|h| TurnHost::parse(h).unwrap()).collect(),
            port: 3478,
            tls_port: 5349,
            stun: true,
            udp: true,
            tcp: true,
            tls: true,
            given_urls: Vec::new(),
        }
    }

    #[test]
    fn one_host_gives_stun_and_every_turn_transport() {
        let servers = layout(&["turn.example.com"]).ice_servers(None, "u", "p");
        assert_eq!(servers[0].urls, ["stun:turn.example.com:3478"]);
        assert_eq!(servers[0].username, None);
        assert_eq!(
            servers[1].urls,
            [
                "turn:turn.example.com:3478?transport=udp",
                "turn:turn.example.com:3478?transport=tcp",
                "turns:turn.example.com:5349?transport=tcp"
            ]
        );
        assert_eq!((servers[1].username.as_deref(), servers[1].credential.as_deref()), (Some("u"), Some("p")));
    }

    #[test]
    fn regions_select_their_hosts_and_unknown_regions_get_all() {
        let l = layout(&["eu=turn-eu.example.com", "us=turn-us.example.com"]);
        assert_eq!(l.turn_urls(Some("us")).len(), 3);
        assert!(l.turn_urls(Some("us")).iter().all(|u| u.contains("turn-us")));
        assert_eq!(l.turn_urls(Some("mars")).len(), 6);
        assert_eq!(l.turn_urls(None).len(), 6);
    }

    #[test]
    fn ipv6_hosts_are_bracketed_and_transports_can_be_dropped() {
        let mut l = layout(&["::1"]);
        l.stun = false;
        l.tls = false;
        let servers = l.ice_servers(None, "u", "p");
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls, ["turn:[::1]:3478?transport=udp", "turn:[::1]:3478?transport=tcp"]);
    }

    #[test]
    fn urls_given_whole_are_offered_as_they_are() {
        let mut l = layout(&[]);
        l.given_urls = vec!["turn:global.turn.example.net:80?transport=udp".into()];
        let servers = l.ice_servers(None, "u", "p");
        assert_eq!(servers.len(), 1, "no STUN without a host");
        assert_eq!(servers[0].urls, ["turn:global.turn.example.net:80?transport=udp"]);
    }

    #[test]
    fn bad_host_specs_are_refused() {
        assert!(TurnHost::parse("").is_err());
        assert!(TurnHost::parse("turn example").is_err());
        assert!(TurnHost::parse("=host").is_err());
        assert_eq!(TurnHost::parse("eu=h.example").unwrap().region.as_deref(), Some("eu"));
    }
}
