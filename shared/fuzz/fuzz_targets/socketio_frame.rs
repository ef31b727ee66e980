//! Engine.IO / Socket.IO frames, several on one session (namespace connects, recovery
//! pids and joins change what the next frame may be): decoding never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Limits, NodeId, PeerId};
use signal::transport::socketio::SocketIo;
use signal::transport::{Dialect, Greeting};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let node = NodeId::parse("n1").unwrap();
    let peer = PeerId::new_on(&node);
    let mut dialect = SocketIo::over_websocket();
    let _ = dialect.welcome(&Greeting {
        peer: &peer,
        node: &node,
        heartbeat: std::time::Duration::from_secs(25),
        resume: Some("n1.fuzz.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    });
    for frame in text.split('\n') {
        let _ = dialect.decode(frame, &Limits::default());
    }
});
