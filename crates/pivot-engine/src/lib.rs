//! # pivot-engine
//!
//! The engine (DESIGN §6): one actor per call owns the call's state machine — resolve the
//! callflow of the dialled number, ask the pivot app, run its document as switch commands,
//! follow up, end — and a supervisor around each actor enforces deadlines, contains panics
//! and restarts an actor from its last checkpoint.
//!
//! Layout:
//! - [`engine`]: the call registry, the event dispatcher, the supervisor and the handle the
//!   API uses ([`Engine`]);
//! - `actor`: one call's state machine and its step executor;
//! - [`state`]: the checkpointed call state;
//! - [`config`]: the engine's settings;
//! - [`metrics`]: the Prometheus metrics of DESIGN §9, one registry per process.
//!
//! **Invariants:** a call is commanded only by the actor holding its current lease (every
//! command id carries the lease's epoch, and a fenced checkpoint stops the actor); a call's
//! registry entry and its `pivot_calls_active` count live exactly as long as its supervisor,
//! whatever ends it; the engine sees only typed switch events and commands.

mod actor;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod state;
mod timed;

pub use cluster::ClusterSettings;
pub use config::{AccountSettings, EngineConfig, SetupObserver, TtsSettings};
pub use engine::{ChannelInfo, ControlError, Engine, Services};
pub use metrics::Metrics;
