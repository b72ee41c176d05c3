//! Debug logs on the in-memory backend (its clock injected and moved by the cases).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;

debug_cases!(cases::Memory::new());
