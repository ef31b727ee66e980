//! A native client frame: decoding never panics, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Limits;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = protocol::native::decode(text, &Limits::default());
    }
});
