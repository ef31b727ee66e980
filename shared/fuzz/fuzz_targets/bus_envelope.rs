//! A bus envelope from Redis pub/sub: decoding and classifying never panic, and what
//! decodes re-encodes to an envelope that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Envelope, EventClass};

fuzz_target!(|data: &[u8]| {
    let _ = EventClass::of_envelope(data);
    if let Ok(envelope) = Envelope::decode(data) {
        let again = Envelope::decode(&envelope.encode()).expect("a re-encoded envelope decodes");
        assert_eq!(again, envelope);
    }
});
