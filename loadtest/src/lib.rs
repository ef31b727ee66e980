//! The load-test harness as a library, so its own tests reach every part; the
//! binary (`main.rs`) only parses the command line and prints.

pub mod cli;
pub mod distributed;
pub mod driver;
pub mod kube;
pub mod metrics;
pub mod order;
pub mod pacer;
pub mod payload;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod server;
pub mod slo;
pub mod usage;
