//! Nodes on a real redis-server: the same behaviour cases as the memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;
mod support;

node_cases!(support::RedisBackend::start());
