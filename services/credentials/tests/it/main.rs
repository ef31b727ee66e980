//! Integration tests for the credential service: the service in-process on a free
//! loopback port, real coturn (turnserver + turnutils_uclient), private redis-servers,
//! local HTTP stubs for the hosted providers and the JWKS URL.

mod helpers;

mod amqp;
mod api;
mod auth;
mod coturn;
mod dashboards;
mod edge;
mod monitoring;
mod providers;
mod rotation;
