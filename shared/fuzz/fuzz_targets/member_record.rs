//! A member record read from Redis (the same MessagePack as on the bus): decoding never
//! panics, and what decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::MemberInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(member) = MemberInfo::decode(data) {
        let again = MemberInfo::decode(&member.encode()).expect("a re-encoded record decodes");
        assert_eq!(again, member);
    }
});
