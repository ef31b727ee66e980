//! The signaling node. `main.rs` only wires; everything lives here so integration
//! tests can run nodes in-process.
//!
//! A message's way down the layers, and who owns what:
//!
//! - [`app`]: build, bind, serve, drain. The one place that connects the parts and
//!   owns the store handle, the task trackers and the listener.
//! - [`http`]: the routes. Upgrades WebSockets and Engine.IO polling into connections;
//!   the HTTP API (rooms, status) goes through [`core::RoomRegistry`], never the store.
//!   With a TURN source set, the credential routes are the `credentials` crate's own;
//!   with STATIC_DIR, a customer's app answers what no route takes.
//! - [`connection`]: drives one connection of any dialect from welcome to close; decides
//!   what a connection does when (drain, overflow, keep-alive, which ends are held).
//! - [`transport`]: frames in and out. A `Transport` moves text frames (WebSocket,
//!   polling); a `Dialect` (native, plain, Socket.IO) turns them into requests and
//!   renders replies and events.
//! - [`session`]: one connection's state (peer id, rooms, limits, resume key); runs its
//!   requests one at a time, which keeps one sender's signals in order.
//! - [`core`]: rooms, authorization and routing, with no sockets and no JSON; a front
//!   over its parts (room directory, resumes, liveness, relay) and the only user of the store.
//! - [`admission`], [`config`], [`metrics`]: identity and room rules, settings, the
//!   node's Prometheus metrics (including the store's timings).

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
