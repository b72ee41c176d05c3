//! Diagnostics: what is wrong with a document, and exactly where.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many diagnostics one parse keeps; a hostile document cannot make the report unbounded.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Whether a diagnostic makes the document unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The document is rejected; the call takes the failure path.
    Error,
    /// The document runs; something in it is ignored or replaced by a default.
    Warning,
}

/// Where in a document a diagnostic points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// The document as a whole (empty body, size limit).
    Document,
    /// A JSON path such as `children._.children.1.data.voice_url`; empty for the root value.
    Path { path: String },
    /// A 1-based line and column in the text (XML documents and JSON syntax errors).
    Position { line: u32, column: u32 },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Document => f.write_str("document"),
            Location::Path { path } if path.is_empty() => f.write_str("document"),
            Location::Path { path } => f.write_str(path),
            Location::Position { line, column } => write!(f, "line {line}, column {column}"),
        }
    }
}

/// One finding about a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.location, self.message)
    }
}

/// Why a document was refused, in the terms of the webhook failure causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Nothing but whitespace (`empty_body`).
    Empty,
    /// Over the body size, depth, node or verb limit (`too_large`).
    TooLarge,
    /// Neither the Content-Type nor the first byte says JSON or XML (`content_type`).
    UnknownFormat,
    /// Not well-formed JSON or XML (`parse`).
    Syntax,
    /// Well-formed, but not a valid flow: bad field, unsupported verb (`invalid_flow`).
    Invalid,
}

impl ErrorKind {
    /// The failure-cause label this kind maps to (DESIGN §4).
    pub fn cause(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty_body",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UnknownFormat => "content_type",
            ErrorKind::Syntax => "parse",
            ErrorKind::Invalid => "invalid_flow",
        }
    }
}

/// A refused document: at least one error diagnostic, and any warnings found before giving up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub kind: ErrorKind,
    pub diagnostics: Vec<Diagnostic>,
}

impl ParseError {
    pub(crate) fn single(kind: ErrorKind, location: Location, message: impl Into<String>) -> Self {
        ParseError {
            kind,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                location,
                message: message.into(),
            }],
        }
    }

    /// The error diagnostics, without the warnings.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut errors = self.errors();
        match errors.next() {
            Some(first) => write!(f, "{}: {}", first.location, first.message)?,
            None => f.write_str("invalid document")?,
        }
        let more = errors.count();
        if more > 0 {
            write!(f, " (and {more} more)")?;
        }
        Ok(())
    }
}

/// Collects diagnostics during a parse, keeping at most [`MAX_DIAGNOSTICS`].
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    list: Vec<Diagnostic>,
    errors: usize,
    dropped: usize,
}

impl Diagnostics {
    pub(crate) fn error(&mut self, location: Location, message: impl Into<String>) {
        self.errors += 1;
        self.push(Severity::Error, location, message.into());
    }

    pub(crate) fn warning(&mut self, location: Location, message: impl Into<String>) {
        self.push(Severity::Warning, location, message.into());
    }

    fn push(&mut self, severity: Severity, location: Location, message: String) {
        if self.list.len() < MAX_DIAGNOSTICS {
            self.list.push(Diagnostic {
                severity,
                location,
                message,
            });
        } else {
            self.dropped += 1;
        }
    }

    /// Ends the parse: the warnings when there were no errors, or the refusal.
    pub(crate) fn finish(mut self, kind: ErrorKind) -> Result<Vec<Diagnostic>, ParseError> {
        if self.dropped > 0 {
            self.list.push(Diagnostic {
                severity: if self.errors > 0 {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                location: Location::Document,
                message: format!("{} more diagnostics not shown", self.dropped),
            });
        }
        if self.errors > 0 {
            Err(ParseError {
                kind,
                diagnostics: self.list,
            })
        } else {
            Ok(self.list)
        }
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
pub(crate) fn position_of(text: &[u8], offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Location::Position {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let text = b"ab\ncd\nef";
        assert_eq!(
            position_of(text, 0),
            Location::Position { line: 1, column: 1 }
        );
        assert_eq!(
            position_of(text, 4),
            Location::Position { line: 2, column: 2 }
        );
        assert_eq!(
            position_of(text, 100),
            Location::Position { line: 3, column: 3 }
        );
    }

    #[test]
    fn diagnostics_are_bounded() {
        let mut d = Diagnostics::default();
        for i in 0..(MAX_DIAGNOSTICS * 3) {
            d.error(Location::Document, format!("e{i}"));
        }
        let err = d.finish(ErrorKind::Invalid).unwrap_err();
        assert_eq!(err.diagnostics.len(), MAX_DIAGNOSTICS + 1);
        assert!(
            err.diagnostics
                .last()
                .unwrap()
                .message
                .contains("200 more diagnostics")
        );
    }

    #[test]
    fn error_display_names_location_and_count() {
        let mut d = Diagnostics::default();
        d.error(
            Location::Path {
                path: "data.voice_url".into(),
            },
            "required",
        );
        d.error(Location::Position { line: 2, column: 5 }, "bad");
        let err = d.finish(ErrorKind::Invalid).unwrap_err();
        assert_eq!(err.to_string(), "data.voice_url: required (and 1 more)");
    }
}
