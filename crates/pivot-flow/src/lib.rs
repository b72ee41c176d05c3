//! # pivot-flow
//!
//! What a customer's web server answers, understood: KAZOO callflow JSON and TwiML, each parsed
//! into the one typed [`Flow`] the engine executes.
//!
//! Layout:
//! - [`model`]: the `Flow`, its [`Node`]s and the shared [`Step`] vocabulary;
//! - `kazoo`: KAZOO callflow JSON (`{"module","data","children"}`) → `Flow::Kazoo`;
//! - `twiml`: TwiML (`<Response>`) → `Flow::Twiml`;
//! - [`classify`]: Content-Type and sniffing decide which of the two a body is;
//! - [`diag`]: diagnostics that name the JSON path or the line and column of every problem.
//!
//! **Invariant:** this crate does no IO, and no input — any bytes at all — makes it panic.
//! Every parse is bounded by [`Limits`].

pub mod classify;
pub mod diag;
mod json;
mod kazoo;
pub mod model;
mod twiml;

#[cfg(feature = "arbitrary")]
#[doc(hidden)]
pub mod arbitrary_json;

pub use classify::classify;
pub use diag::{Diagnostic, ErrorKind, Location, ParseError, Severity};
pub use model::*;

/// Bounds on what one document may cost (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Deepest KAZOO node nesting (the root is depth 1).
    pub max_depth: usize,
    /// Most KAZOO nodes in one document.
    pub max_nodes: usize,
    /// Most TwiML verbs and nouns in one document, nested ones included.
    pub max_verbs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_depth: 64,
            max_nodes: 10_000,
            max_verbs: 1_000,
        }
    }
}

/// A document that parsed: the flow, and what was ignored or defaulted on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub flow: Flow,
    pub warnings: Vec<Diagnostic>,
}

/// Parses a body as the given format.
pub fn parse(format: Format, body: &[u8], limits: &Limits) -> Result<Document, ParseError> {
    check_size(body, limits)?;
    match format {
        Format::Kazoo => kazoo::parse(body, limits),
        Format::Twiml => twiml::parse(body, limits),
    }
}

/// Parses KAZOO callflow JSON (one node).
pub fn parse_kazoo(body: &[u8], limits: &Limits) -> Result<Document, ParseError> {
    parse(Format::Kazoo, body, limits)
}

/// Parses a TwiML `<Response>` document.
pub fn parse_twiml(body: &[u8], limits: &Limits) -> Result<Document, ParseError> {
    parse(Format::Twiml, body, limits)
}

/// Parses a KAZOO node that is already JSON, e.g. the `flow` of a stored callflow; diagnostic
/// paths start with `base_path` (`"flow"` gives `flow.children._.data.voice_url`).
pub fn parse_kazoo_value(
    value: &serde_json::Value,
    base_path: &str,
    limits: &Limits,
) -> Result<Document, ParseError> {
    kazoo::parse_value(value, base_path, limits)
}

/// Parses a pivot app's response: classifies it by Content-Type and first byte, then parses it.
pub fn parse_response(
    content_type: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Document, ParseError> {
    check_size(body, limits)?;
    let format = classify(content_type, body)?;
    parse(format, body, limits)
}

fn check_size(body: &[u8], limits: &Limits) -> Result<(), ParseError> {
    if body.len() > limits.max_body_bytes {
        return Err(ParseError::single(
            ErrorKind::TooLarge,
            Location::Document,
            format!(
                "the body is {} bytes; the limit is {} bytes",
                body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    if classify::first_significant_byte(body).is_none() {
        return Err(ParseError::single(
            ErrorKind::Empty,
            Location::Document,
            "the body is empty",
        ));
    }
    Ok(())
}

impl Flow {
    /// The flow as JSON (what `pivotd check` prints and checkpoints store).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a flow written by [`Flow::to_json`].
    ///
    /// Deep flows nest deeper than serde_json's default recursion limit, so the limit is lifted,
    /// but only after a byte scan has bounded the nesting: hostile input cannot overflow the stack.
    pub fn from_json(text: &str) -> Result<Flow, ParseError> {
        json::read_bounded(text.as_bytes(), json::MAX_SERIALIZED_NESTING)
    }
}
