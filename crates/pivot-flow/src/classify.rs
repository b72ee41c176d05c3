//! Which parser a response body goes to: Content-Type first, then the first byte.

use crate::diag::{ErrorKind, Location, ParseError};
use crate::model::Format;

/// Decides the format of a response body (DESIGN §3).
///
/// `application/json` (any case, any parameters, and `+json` suffixes) is KAZOO JSON;
/// `text/xml`, `application/xml` (and `+xml`) is TwiML; anything else, or no Content-Type at all,
/// is sniffed from the first byte that is not whitespace or a byte-order mark: `<` is TwiML,
/// `{` is JSON. A declared type wins over the body: TwiML served as `application/json` is a
/// JSON syntax error, not a silent switch of parser.
pub fn classify(content_type: Option<&str>, body: &[u8]) -> Result<Format, ParseError> {
    if let Some(format) = content_type.and_then(declared_format) {
        return Ok(format);
    }
    match first_significant_byte(body) {
        Some(b'<') => Ok(Format::Twiml),
        Some(b'{') => Ok(Format::Kazoo),
        Some(_) => Err(ParseError::single(
            ErrorKind::UnknownFormat,
            Location::Document,
            format!(
                "Content-Type {} is neither JSON nor XML, and the body starts with neither '{{' nor '<'",
                content_type.map_or_else(|| "(none)".to_owned(), |t| format!("{t:?}"))
            ),
        )),
        None => Err(ParseError::single(
            ErrorKind::Empty,
            Location::Document,
            "the response body is empty",
        )),
    }
}

fn declared_format(content_type: &str) -> Option<Format> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let (kind, subtype) = essence.split_once('/')?;
    let subtype = subtype.trim();
    let is =
        |a: &str, b: &str| kind.trim().eq_ignore_ascii_case(a) && subtype.eq_ignore_ascii_case(b);
    let suffix = |s: &str| {
        subtype.len() > s.len() && subtype[subtype.len() - s.len()..].eq_ignore_ascii_case(s)
    };
    if is("application", "json") || suffix("+json") {
        Some(Format::Kazoo)
    } else if is("text", "xml") || is("application", "xml") || suffix("+xml") {
        Some(Format::Twiml)
    } else {
        None
    }
}

/// The first byte that is neither ASCII whitespace nor part of a UTF-8 byte-order mark.
pub(crate) fn first_significant_byte(body: &[u8]) -> Option<u8> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_win() {
        assert_eq!(
            classify(Some("application/json"), b"<Response/>"),
            Ok(Format::Kazoo)
        );
        assert_eq!(
            classify(Some("Application/JSON; charset=utf-8"), b"{}"),
            Ok(Format::Kazoo)
        );
        assert_eq!(
            classify(Some("application/vnd.kazoo+json"), b"{}"),
            Ok(Format::Kazoo)
        );
        assert_eq!(
            classify(Some("text/xml; charset=utf-8"), b"{}"),
            Ok(Format::Twiml)
        );
        assert_eq!(classify(Some("application/xml"), b""), Ok(Format::Twiml));
        assert_eq!(
            classify(Some("application/twiml+xml"), b""),
            Ok(Format::Twiml)
        );
    }

    #[test]
    fn other_types_are_sniffed() {
        assert_eq!(
            classify(Some("text/plain"), b" \n{\"module\":1}"),
            Ok(Format::Kazoo)
        );
        assert_eq!(
            classify(Some("text/html"), b"\xEF\xBB\xBF<Response/>"),
            Ok(Format::Twiml)
        );
        assert_eq!(
            classify(None, b"<?xml version=\"1.0\"?><Response/>"),
            Ok(Format::Twiml)
        );
        assert_eq!(classify(None, b"{}"), Ok(Format::Kazoo));
    }

    #[test]
    fn unknown_and_empty_bodies_are_refused() {
        let err = classify(Some("text/html"), b"hello").unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownFormat);
        assert!(err.to_string().contains("\"text/html\""));
        assert_eq!(
            classify(Some("text/plain"), b" \r\n\t").unwrap_err().kind,
            ErrorKind::Empty
        );
        assert_eq!(classify(None, b"").unwrap_err().kind, ErrorKind::Empty);
    }
}
