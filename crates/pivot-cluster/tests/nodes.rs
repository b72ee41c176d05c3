//! The node registry on the in-memory backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;

node_cases!(cases::Memory::new());
