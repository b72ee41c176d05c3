//! # pivot-webhook
//!
//! The HTTP exchange with a customer's pivot app (DESIGN §4): a call's state and a `pivot`
//! node become a request; the answer becomes a parsed [`pivot_flow::Document`] or exactly one
//! [`FailureCause`] — fast, bounded by one deadline, and safe against hostile servers.
//!
//! Layout:
//! - [`params`]: the request parameters of both formats (`kazoo`, `twiml`) and follow-ups;
//! - [`encode`]: KAZOO's query/form encoder, JSON bodies, GET URLs, RFC 3986 resolution;
//! - [`sign`]: `X-Pivot-Signature` and the Twilio-compatible `X-Twilio-Signature`;
//! - [`guard`]: the destination guard (no loopback, private, link-local or metadata targets);
//! - [`client`]: the exchange itself, redirects, bounded bodies, debug records, CDR posts;
//! - [`failure`]: the failure causes, their metric labels and Twilio error codes.
//!
//! **Invariant:** an exchange never outlives its deadline and never reads more than
//! `max_body_bytes` of a body; every failure carries exactly one cause.

pub mod client;
pub mod encode;
pub mod failure;
pub mod guard;
pub mod params;
pub mod sign;

pub use client::{
    CdrOutcome, ClientConfig, DebugRecord, Exchange, PivotRequest, RetryPolicy, USER_AGENT,
    WebhookClient,
};
pub use failure::{Failure, FailureCause};
pub use guard::DestinationGuard;
pub use params::{CallInfo, ParamValue, Params, Progress};
