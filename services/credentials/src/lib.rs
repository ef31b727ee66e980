//! The TURN credential service: time-limited coturn credentials (TURN REST API) and
//! hosted providers' logins behind one set of endpoints, secret rotation with overlap in
//! coturn's Redis userdb, and TURN allocation monitoring from coturn's redis-statsdb.
//! `main.rs` only wires; `app.rs` connects the parts.

pub mod amqp;
pub mod app;
pub mod auth;
pub mod config;
pub mod http;
pub mod ice;
pub mod keyring;
pub mod metrics;
pub mod monitor;
pub mod providers;
pub mod redis;
pub mod source;
pub mod stats;
pub mod turn;

pub use app::{App, RunningApp, Service};
pub use config::CredentialsConfig;
