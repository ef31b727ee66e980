//! Integration tests for the signaling node: real redis-server processes on free
//! loopback ports, in-process nodes and real node processes, real WebSocket clients.

mod helpers;

mod bad_input;
mod bursts;
mod bus;
mod cluster;
mod dashboards;
mod edge;
mod failover;
mod faults;
mod ghosts;
mod goodbyes;
mod limits;
mod metrics;
mod node_index;
mod plain;
mod plain_resume;
mod protocol_suite;
mod resume;
mod rolling;
mod rooms_auth;
mod socketio;
mod socketio_recovery;
mod traces;
mod turn;
mod upgrade;
mod web;
