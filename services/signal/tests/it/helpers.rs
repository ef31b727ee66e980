//! Every start-up detail of the integration tests: nodes and clients here; Redis
//! servers, ports and waits come from the shared `testkit` crate.

pub mod client;
pub mod nodes;
pub mod socketio;

pub use client::Client;
pub use nodes::{Backend, NodeProcess, TestCluster};
pub use testkit::{free_port, wait_until, TestRedis, TestRedisCluster};
