//! Why a pivot request failed: one cause per failure, used as the metric label
//! (`pivot_webhook_failures_total{cause}`), in debug records and in logs.

use std::fmt;

use pivot_flow::{Diagnostic, ErrorKind, ParseError};
use serde::{Deserialize, Serialize};

/// The failure causes of DESIGN §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The host name did not resolve.
    Dns,
    /// No TCP connection, or it broke before a whole response arrived.
    Connect,
    /// The TLS handshake failed (plaintext port, bad certificate, ...).
    Tls,
    /// `req_timeout_ms` passed before the whole response was read.
    Timeout,
    /// Anything but 2xx, after following redirects (GET) up to their limit.
    HttpStatus,
    /// The body is neither JSON nor XML by Content-Type or first byte.
    ContentType,
    /// A 2xx with nothing in it.
    EmptyBody,
    /// The body, or the document in it, is over its limit.
    TooLarge,
    /// Not well-formed JSON or XML.
    Parse,
    /// Well-formed, but not a valid flow.
    InvalidFlow,
    /// The destination resolves to an address the guard refuses.
    BlockedDestination,
}

impl FailureCause {
    /// Every cause, e.g. to pre-register metric label values.
    pub const ALL: [FailureCause; 11] = [
        FailureCause::Dns,
        FailureCause::Connect,
        FailureCause::Tls,
        FailureCause::Timeout,
        FailureCause::HttpStatus,
        FailureCause::ContentType,
        FailureCause::EmptyBody,
        FailureCause::TooLarge,
        FailureCause::Parse,
        FailureCause::InvalidFlow,
        FailureCause::BlockedDestination,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::Dns => "dns",
            FailureCause::Connect => "connect",
            FailureCause::Tls => "tls",
            FailureCause::Timeout => "timeout",
            FailureCause::HttpStatus => "http_status",
            FailureCause::ContentType => "content_type",
            FailureCause::EmptyBody => "empty_body",
            FailureCause::TooLarge => "too_large",
            FailureCause::Parse => "parse",
            FailureCause::InvalidFlow => "invalid_flow",
            FailureCause::BlockedDestination => "blocked_destination",
        }
    }

    /// The Twilio error code a fallback URL receives as `ErrorCode`, so that fallback handlers
    /// written for Twilio understand it.
    pub fn twilio_error_code(self) -> u16 {
        match self {
            // 11200 HTTP retrieval failure.
            FailureCause::HttpStatus => 11200,
            // 11205 HTTP connection failure.
            FailureCause::Connect | FailureCause::Timeout => 11205,
            // 11210 HTTP bad host name.
            FailureCause::Dns | FailureCause::BlockedDestination => 11210,
            // 11220 SSL/TLS handshake error.
            FailureCause::Tls => 11220,
            // 12300 Invalid Content-Type.
            FailureCause::ContentType => 12300,
            // 11750 TwiML response body too large.
            FailureCause::TooLarge => 11750,
            // 12100 Document parse failure.
            FailureCause::EmptyBody | FailureCause::Parse => 12100,
            // 12200 Schema validation warning.
            FailureCause::InvalidFlow => 12200,
        }
    }

    fn from_parse(kind: ErrorKind) -> FailureCause {
        match kind {
            ErrorKind::Empty => FailureCause::EmptyBody,
            ErrorKind::TooLarge => FailureCause::TooLarge,
            ErrorKind::UnknownFormat => FailureCause::ContentType,
            ErrorKind::Syntax => FailureCause::Parse,
            ErrorKind::Invalid => FailureCause::InvalidFlow,
        }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed pivot request: its cause, what happened in words, and the document's diagnostics
/// when the body was read but refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{cause}: {message}")]
pub struct Failure {
    pub cause: FailureCause,
    pub message: String,
    /// The HTTP status of the last response, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

impl Failure {
    pub fn new(cause: FailureCause, message: impl Into<String>) -> Failure {
        Failure {
            cause,
            message: message.into(),
            status: None,
            diagnostics: Vec::new(),
        }
    }

    pub(crate) fn with_status(mut self, status: u16) -> Failure {
        self.status = Some(status);
        self
    }
}

impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Failure {
        Failure {
            cause: FailureCause::from_parse(e.kind),
            message: e.to_string(),
            status: None,
            diagnostics: e.diagnostics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_design_names() {
        let labels: Vec<&str> = FailureCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            labels,
            [
                "dns",
                "connect",
                "tls",
                "timeout",
                "http_status",
                "content_type",
                "empty_body",
                "too_large",
                "parse",
                "invalid_flow",
                "blocked_destination"
            ]
        );
        for cause in FailureCause::ALL {
            let json = serde_json::to_string(&cause).unwrap_or_default();
            assert_eq!(json, format!("\"{cause}\""));
        }
    }

    #[test]
    fn parse_errors_map_to_their_causes() {
        let limits = pivot_flow::Limits::default();
        let cases: [(&[u8], Option<&str>, FailureCause); 5] = [
            (b"", None, FailureCause::EmptyBody),
            (b"hello", Some("text/html"), FailureCause::ContentType),
            (b"{", Some("application/json"), FailureCause::Parse),
            (
                b"<Response><Connect/></Response>",
                None,
                FailureCause::InvalidFlow,
            ),
            (b"<Response/>", None, FailureCause::Dns),
        ];
        for (body, content_type, cause) in &cases[..4] {
            let err = pivot_flow::parse_response(*content_type, body, &limits)
                .err()
                .map(Failure::from);
            assert_eq!(err.map(|f| f.cause), Some(*cause), "{body:?}");
        }
        let tiny = pivot_flow::Limits {
            max_body_bytes: 2,
            ..limits
        };
        let err = pivot_flow::parse_response(None, cases[4].0, &tiny)
            .err()
            .map(Failure::from);
        assert_eq!(err.map(|f| f.cause), Some(FailureCause::TooLarge));
    }
}
