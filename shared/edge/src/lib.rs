//! The HTTP edge both services share: who the caller is at the network level
//! ([`client_ip`]), how often it may come ([`ratelimit`]), how many connections it may
//! hold at once ([`caps`]), and the server itself with its limits on slow, idle and
//! excess connections ([`serve`]).

pub mod caps;
pub mod ratelimit;
pub mod serve;

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

pub use caps::{ConnectionCaps, Held};
pub use ratelimit::{retry_after_secs, RateLimiter};
pub use serve::{json_payload_too_large, limit_bodies, serve, ConnectionGate, HttpLimits};

/// The caller's address: the socket peer, or with `hops` trusted proxies in front, the
/// address the outermost of them saw (X-Forwarded-For, counted from the right, so a
/// client cannot spoof it by sending its own header).
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, hops: usize) -> IpAddr {
    if hops == 0 {
        return peer.ip();
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    chain.len().checked_sub(hops).and_then(|i| chain.get(i).copied()).unwrap_or(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_for_is_trusted_only_for_configured_hops() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.7"));
        assert_eq!(client_ip(peer, &h, 0), "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &h, 1), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &h, 2), "6.6.6.6".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &h, 3), "10.0.0.9".parse::<IpAddr>().unwrap(), "too short a chain: the socket");
    }
}
