//! Transports translate between a dialect's frames and the dialect-free session:
//! [`native`] is protocol v1 over WebSocket at `/ws`.

pub mod native;
