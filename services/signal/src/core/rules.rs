//! Room rules as pure functions over data the core has already fetched.

use sha2::{Digest, Sha256};

use super::CoreError;

/// Whether a peer may join one more room.
pub fn may_join(already_member: bool, rooms_held: usize, rooms_per_peer: usize) -> Result<(), CoreError> {
    if already_member {
        return Err(CoreError::AlreadyInRoom);
    }
    if rooms_held >= rooms_per_peer {
        return Err(CoreError::TooManyRooms(rooms_per_peer));
    }
    Ok(())
}

/// Only peers that share a room may signal each other.
pub fn may_signal(sender_in_room: bool, target_in_room: bool) -> Result<(), CoreError> {
    if !sender_in_room {
        return Err(CoreError::NotInRoom);
    }
    if !target_in_room {
        return Err(CoreError::NoSuchPeer);
    }
    Ok(())
}

/// Rooms store a hash of their token, never the token.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_outside_the_room_may_not_signal_and_may_not_be_signalled() {
        assert!(may_signal(true, true).is_ok());
        assert!(matches!(may_signal(false, true), Err(CoreError::NotInRoom)));
        assert!(matches!(may_signal(true, false), Err(CoreError::NoSuchPeer)));
    }

    #[test]
    fn joining_twice_or_beyond_the_room_limit_is_refused() {
        assert!(may_join(false, 0, 1).is_ok());
        assert!(matches!(may_join(true, 0, 5), Err(CoreError::AlreadyInRoom)));
        assert!(matches!(may_join(false, 5, 5), Err(CoreError::TooManyRooms(5))));
    }

    #[test]
    fn token_hash_is_sha256_hex() {
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
