//! # pivot-switch
//!
//! The switch boundary (DESIGN §5): typed call commands and events for the engine, the
//! FreeSWITCH event-socket (ESL) codec and client that implement them, and a FreeSWITCH
//! look-alike simulator that speaks the same ESL over TCP — so a test against the simulator
//! exercises the real adapter.
//!
//! Layout:
//! - [`esl`]: the wire format — framing ([`esl::frame`]) and events ([`esl::event`]);
//! - [`client`]: the inbound client (pivot connects to the switch);
//! - [`outbound`]: outbound socket mode (the switch's `socket` app connects to pivot, one
//!   connection per call), producing the same typed events;
//! - [`switch`]: [`Switch`], either of the two ways in, as the engine drives them;
//! - [`sim`]: the simulator: an ESL server with simulated calls and a scripted caller.

pub mod client;
pub mod commands;
pub mod esl;
pub mod events;
pub mod outbound;
pub mod sim;
pub mod switch;
mod tracker;

pub use client::{SwitchClient, SwitchConfig, SwitchError};
pub use commands::{Command, CommandId, Outcome, ReadResult};
pub use events::{CallInfo, ChannelSummary, SwitchEvent};
pub use outbound::{OutboundConfig, OutboundServer};
pub use switch::Switch;
