//! A bus message from Redis pub/sub (an envelope or a batch of them): splitting,
//! decoding and classifying never panic, and what decodes re-encodes to an envelope
//! that decodes to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Envelope, EventClass};

fuzz_target!(|data: &[u8]| {
    let _ = EventClass::of_envelope(data);
    let _ = EventClass::of_message(data);
    let _ = protocol::batch::len(data);
    for envelope in protocol::batch::envelopes(data).flatten() {
        let _ = Envelope::decode(envelope);
    }
    if let Ok(envelope) = Envelope::decode(data) {
        let again = Envelope::decode(&envelope.encode()).expect("a re-encoded envelope decodes");
        assert_eq!(again, envelope);
    }
});
