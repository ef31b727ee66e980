//! Faults done for real: kill -9 a node, SIGTERM a node, FLUSHALL, restart Redis,
//! kill the node's pub/sub connection. Each asserts what a client sees.
