//! Wire types shared by the nodes, the tests and the load-test harness.
//!
//! What clients ask, in any dialect ([`command`]); the native protocol v1 (JSON text
//! frames between a client and its node, [`native`]); and the bus [`envelope`]
//! (MessagePack between nodes).
//! This crate knows no tokio, axum or Redis: it only says what the bytes mean.

pub mod batch;
pub mod command;
pub mod envelope;
pub mod ids;
pub mod native;
pub mod payload;
pub mod socketio;

pub use command::{Command, DecodeError, ErrorCode, LeftReason, Limits, Request, RequestId, Traceparent};
pub use envelope::{BusEvent, CloseReason, Envelope, EnvelopeError, EventClass, Held, MemberInfo, ENVELOPE_VERSION};
pub use ids::{DisplayName, IdError, NodeId, PeerId, Role, RoomId, SignalKind};
pub use native::ServerMsg;
pub use payload::Payload;
