//! Identifier newtypes that validate themselves: a value of one of these types that
//! exists is valid, so no code past the edge checks lengths or characters again.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize};

/// Why an identifier was refused; the message is safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} contains a character outside {allowed}")]
    BadChar { what: &'static str, allowed: &'static str },
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.chars().count() > max {
        return Err(IdError::TooLong { what, max });
    }
    Ok(())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// URL-safe random text with `bytes` bytes of entropy (unpadded base64url alphabet).
fn random_token(bytes: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    // 6 bits per character; 16 bytes -> 22 characters carrying 128 bits.
    let mut out = String::with_capacity(bytes * 4 / 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            /// Deserialising reads what is already inside the cluster (the bus, Redis,
            /// server frames), so it accepts the largest size any node may be configured
            /// to allow; the configured limits apply where clients' input enters.
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse_within_cluster(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Names one signaling node: 1-32 characters of `[A-Za-z0-9_-]`. It is the routing
/// prefix of every peer id the node hands out, so it cannot contain a dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);
string_newtype!(NodeId);

impl NodeId {
    pub const MAX_CHARS: usize = 32;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("node id", s, Self::MAX_CHARS)?;
        if !s.chars().all(is_token_char) {
            return Err(IdError::BadChar { what: "node id", allowed: "A-Z a-z 0-9 - _" });
        }
        Ok(Self(s.to_owned()))
    }

    fn parse_within_cluster(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }

    /// A fresh random node id (12 characters, 72 bits) for nodes started without NODE_ID.
    pub fn random() -> Self {
        Self(random_token(9))
    }
}

/// A member's public id, the one its dialect shows to the others: 1 to 97 characters of
/// `[A-Za-z0-9_.:-]`. The node mints native ids as `<node id>.<22 random characters>`
/// (128 random bits, unguessable, naming their node); other dialects' clients choose
/// their own (`Worker-3108`), unique within a room. Routing never parses it: the
/// member's record names its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(String);
string_newtype!(PeerId);

impl PeerId {
    pub const MAX_CHARS: usize = NodeId::MAX_CHARS + 1 + 64;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("peer id", s, Self::MAX_CHARS)?;
        if !s.chars().all(|c| is_token_char(c) || c == '.' || c == ':') {
            return Err(IdError::BadChar { what: "peer id", allowed: "A-Z a-z 0-9 - _ . :" });
        }
        Ok(Self(s.to_owned()))
    }

    fn parse_within_cluster(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }

    /// A new peer id served by `node`.
    pub fn new_on(node: &NodeId) -> Self {
        Self(format!("{node}.{}", random_token(16)))
    }

    /// The node a native id names (its prefix); for a member record without a `node`.
    pub fn node(&self) -> NodeId {
        let (node, _) = self.0.split_once('.').unwrap_or((&self.0, ""));
        NodeId(node.to_owned())
    }

    /// Whether this id names `node` as a native id does, without allocating.
    pub fn is_on(&self, node: &NodeId) -> bool {
        self.0.split_once('.').is_some_and(|(n, _)| n == node.as_str())
    }
}

/// A room name chosen by clients: 1 to `max` characters (default 100), any printable
/// text except control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);
string_newtype!(RoomId);

impl RoomId {
    pub const DEFAULT_MAX_CHARS: usize = 100;
    /// The most ROOM_ID_CHARS may be set to.
    pub const LARGEST_MAX_CHARS: usize = 1000;

    fn parse_within_cluster(s: &str) -> Result<Self, IdError> {
        Self::parse_with_max(s, Self::LARGEST_MAX_CHARS)
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::parse_with_max(s, Self::DEFAULT_MAX_CHARS)
    }

    pub fn parse_with_max(s: &str, max: usize) -> Result<Self, IdError> {
        check_len("room", s, max)?;
        if s.chars().any(char::is_control) {
            return Err(IdError::BadChar { what: "room", allowed: "printable characters" });
        }
        Ok(Self(s.to_owned()))
    }
}

/// A member's display name: 1 to `max` characters (default 50), no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DisplayName(String);
string_newtype!(DisplayName);

impl DisplayName {
    pub const DEFAULT_MAX_CHARS: usize = 50;
    /// The most NAME_CHARS may be set to.
    pub const LARGEST_MAX_CHARS: usize = 1000;

    fn parse_within_cluster(s: &str) -> Result<Self, IdError> {
        Self::parse_with_max(s, Self::LARGEST_MAX_CHARS)
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::parse_with_max(s, Self::DEFAULT_MAX_CHARS)
    }

    pub fn parse_with_max(s: &str, max: usize) -> Result<Self, IdError> {
        check_len("name", s, max)?;
        if s.chars().any(char::is_control) {
            return Err(IdError::BadChar { what: "name", allowed: "printable characters" });
        }
        Ok(Self(s.to_owned()))
    }
}

/// What a signal or broadcast carries (`offer`, `answer`, `candidate`, `chat`, ...):
/// 1-32 characters of `[A-Za-z0-9_-]`. Roles use the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignalKind(String);
string_newtype!(SignalKind);

impl SignalKind {
    pub const MAX_CHARS: usize = 32;

    fn parse_within_cluster(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("kind", s, Self::MAX_CHARS)?;
        if !s.chars().all(is_token_char) {
            return Err(IdError::BadChar { what: "kind", allowed: "A-Z a-z 0-9 - _" });
        }
        Ok(Self(s.to_owned()))
    }
}

/// A member's role in a room (`host`, `participant`, `viewer`, ...): 1-32 characters of
/// `[A-Za-z0-9_-]`. The cluster stores and shows it; it grants nothing by itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Role(String);
string_newtype!(Role);

impl Role {
    pub const MAX_CHARS: usize = 32;

    fn parse_within_cluster(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len("role", s, Self::MAX_CHARS)?;
        if !s.chars().all(is_token_char) {
            return Err(IdError::BadChar { what: "role", allowed: "A-Z a-z 0-9 - _" });
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_peer_id_names_its_node_and_carries_128_random_bits() {
        let node = NodeId::parse("n1").unwrap();
        let peer = PeerId::new_on(&node);
        assert_eq!(peer.node(), node);
        assert!(peer.is_on(&node));
        let random = peer.as_str().split_once('.').unwrap().1;
        assert_eq!(random.len(), 22, "{peer}");
        assert_eq!(PeerId::parse(peer.as_str()).unwrap(), peer);
        assert_ne!(PeerId::new_on(&node), peer);
    }

    #[test]
    fn member_ids_are_short_tokens_chosen_freely_or_minted_by_a_node() {
        for good in ["Worker-3108", "n1.abc", "a", "user:42", "x_y.z"] {
            assert!(PeerId::parse(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a b", "n1.abc/def", "é", &"x".repeat(98)] {
            assert!(PeerId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn room_ids_are_limited_to_100_characters_by_default() {
        assert!(RoomId::parse(&"r".repeat(100)).is_ok());
        assert_eq!(RoomId::parse(&"r".repeat(101)), Err(IdError::TooLong { what: "room", max: 100 }));
        assert!(RoomId::parse("").is_err());
        assert!(RoomId::parse("a\nb").is_err());
        // Characters, not bytes: 100 multi-byte characters are fine.
        assert!(RoomId::parse(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn names_are_limited_to_50_characters_and_kinds_to_tokens() {
        assert!(DisplayName::parse(&"n".repeat(50)).is_ok());
        assert!(DisplayName::parse(&"n".repeat(51)).is_err());
        assert!(SignalKind::parse("ice-candidate").is_ok());
        assert!(SignalKind::parse("a b").is_err());
    }

    #[test]
    fn ids_read_from_inside_the_cluster_accept_the_largest_configurable_size() {
        let room = "r".repeat(RoomId::LARGEST_MAX_CHARS);
        let name = "n".repeat(DisplayName::LARGEST_MAX_CHARS);
        let back: RoomId = serde_json::from_str(&format!("{room:?}")).unwrap();
        assert_eq!(back.as_str(), room);
        let back: DisplayName = rmp_serde::from_slice(&rmp_serde::to_vec(&name).unwrap()).unwrap();
        assert_eq!(back.as_str(), name);
        assert!(serde_json::from_str::<RoomId>(&format!("{:?}", "r".repeat(1001))).is_err());
        // The edge still applies the default.
        assert!(RoomId::parse(&room).is_err());
    }

    #[test]
    fn node_ids_are_url_safe_tokens() {
        assert!(NodeId::parse("node-1_a").is_ok());
        assert!(NodeId::parse("a.b").is_err());
        assert!(NodeId::parse(&"n".repeat(33)).is_err());
        let random = NodeId::random();
        assert!(NodeId::parse(random.as_str()).is_ok());
    }
}
