//! The signaling node. `main.rs` only wires; everything lives here so integration
//! tests can run nodes in-process.

pub mod admission;
pub mod app;
pub mod config;
pub mod connection;
pub mod core;
pub mod http;
pub mod metrics;
pub mod session;
pub mod transport;

pub use app::{App, RunningApp};
pub use config::SignalConfig;
