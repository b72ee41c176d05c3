//! The FreeSWITCH event socket (ESL) wire format. Only this module knows it.

pub mod event;
pub mod frame;

pub use event::{EslEvent, EventFormat};
pub use frame::{CodecError, Direction, Frame, FrameDecoder, FrameEncoder, Headers};
