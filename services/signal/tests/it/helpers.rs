//! Every start-up detail of the integration tests: nodes and clients here; Redis
//! servers, ports and waits come from the shared `testkit` crate.

pub mod client;
pub mod nodes;
/// The Socket.IO client agent lives in `testkit` (the deployment tests drive it too).
pub use testkit::socketio;

pub use client::Client;
pub use nodes::{Backend, InProcessNode, NodeProcess, TestCluster};
pub use testkit::{free_port, wait_until, TestRedis, TestRedisCluster};
