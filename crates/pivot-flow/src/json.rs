//! JSON reading with the nesting bounded before serde recurses into it.

use serde::de::DeserializeOwned;

use crate::diag::{ErrorKind, Location, ParseError, position_of};

/// Nesting allowed when reading back a serialized [`crate::Flow`]: a node of the deepest allowed
/// flow sits about three levels below its parent, plus its step's own objects.
pub(crate) const MAX_SERIALIZED_NESTING: usize = 64 * 4 + 16;

/// Byte offset of the first `[` or `{` that opens nesting level `limit + 1`, if any.
///
/// Strings are skipped with their escapes; the scan never fails, malformed input is left for
/// the real parser to report.
pub(crate) fn nesting_exceeds(bytes: &[u8], limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Some(offset);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Deserializes `bytes` once their nesting is known to be at most `max_nesting`.
pub(crate) fn read_bounded<T: DeserializeOwned>(
    bytes: &[u8],
    max_nesting: usize,
) -> Result<T, ParseError> {
    if let Some(offset) = nesting_exceeds(bytes, max_nesting) {
        return Err(ParseError::single(
            ErrorKind::TooLarge,
            position_of(bytes, offset),
            format!("JSON nests deeper than {max_nesting} levels"),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| syntax_error(&e))
}

/// A serde_json error as a diagnostic at its line and column.
pub(crate) fn syntax_error(e: &serde_json::Error) -> ParseError {
    let location = if e.line() == 0 {
        Location::Document
    } else {
        Location::Position {
            line: u32::try_from(e.line()).unwrap_or(u32::MAX),
            column: u32::try_from(e.column()).unwrap_or(u32::MAX),
        }
    };
    let kind = if e.is_data() {
        ErrorKind::Invalid
    } else {
        ErrorKind::Syntax
    };
    // serde_json appends " at line L column C"; the location already says that.
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    ParseError::single(kind, location, format!("invalid JSON: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_scan_ignores_brackets_in_strings() {
        assert_eq!(nesting_exceeds(br#"{"a":"{{{{[[[["}"#, 1), None);
        assert_eq!(nesting_exceeds(br#"{"a":"\"{{"}"#, 1), None);
        assert_eq!(nesting_exceeds(br#"{"a":{"b":[]}}"#, 2), Some(10));
    }

    #[test]
    fn deep_input_is_refused_before_parsing() {
        let deep = "[".repeat(100_000);
        let err = read_bounded::<serde_json::Value>(deep.as_bytes(), 300).unwrap_err();
        assert_eq!(err.kind, ErrorKind::TooLarge);
        assert_eq!(
            err.diagnostics[0].location,
            Location::Position {
                line: 1,
                column: 301
            }
        );
    }

    #[test]
    fn syntax_errors_carry_position() {
        let err = read_bounded::<serde_json::Value>(b"{\n  \"a\": tru }", 10).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Syntax);
        assert_eq!(
            err.diagnostics[0].location,
            Location::Position {
                line: 2,
                column: 11
            }
        );
    }
}
