//! A pivot app's response end to end: Content-Type dispatch (KAZOO's test vectors, Appendix B of
//! the reference), the limits of DESIGN §3, and errors that say where they are.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pivot_flow::{ErrorKind, Flow, Limits, Location, Step, parse_response};

const TWIML: &[u8] = b"<?xml version=\"1.0\"?><Response><Say>Hello</Say></Response>";
const KAZOO: &[u8] = br#"{"module":"tts","data":{"text":"Hello"}}"#;

fn format_of(content_type: Option<&str>, body: &[u8]) -> Result<&'static str, ErrorKind> {
    parse_response(content_type, body, &Limits::default())
        .map(|doc| match doc.flow {
            Flow::Kazoo { .. } => "kazoo",
            Flow::Twiml { .. } => "twiml",
        })
        .map_err(|e| e.kind)
}

#[test]
fn text_xml_with_charset_is_twiml_only() {
    assert_eq!(
        format_of(Some("text/xml; charset=utf-8"), TWIML),
        Ok("twiml")
    );
    // A declared XML type never falls back to the JSON parser.
    assert_eq!(
        format_of(Some("text/xml; charset=utf-8"), KAZOO),
        Err(ErrorKind::Syntax)
    );
}

#[test]
fn missing_content_type_is_sniffed() {
    assert_eq!(format_of(None, TWIML), Ok("twiml"));
    // KAZOO would try TwiML only and fail; sniffing the first byte is a deliberate improvement.
    assert_eq!(format_of(None, KAZOO), Ok("kazoo"));
}

#[test]
fn application_json_is_kazoo_only() {
    assert_eq!(format_of(Some("application/json"), KAZOO), Ok("kazoo"));
    assert_eq!(
        format_of(Some("Application/JSON; charset=UTF-8"), KAZOO),
        Ok("kazoo")
    );
    assert_eq!(
        format_of(Some("application/json"), TWIML),
        Err(ErrorKind::Syntax)
    );
}

#[test]
fn text_plain_with_a_json_body_is_kazoo() {
    assert_eq!(format_of(Some("text/plain"), KAZOO), Ok("kazoo"));
    // KAZOO's defect: TwiML served as text/html was aborted by the JSON candidate. Not here.
    assert_eq!(format_of(Some("text/html"), TWIML), Ok("twiml"));
}

#[test]
fn html_error_pages_are_a_content_type_failure() {
    let err = parse_response(Some("text/html"), b"Internal error", &Limits::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownFormat);
    assert_eq!(err.kind.cause(), "content_type");
}

#[test]
fn empty_bodies_are_refused() {
    for body in [&b""[..], b"   \r\n"] {
        let err = parse_response(Some("application/json"), body, &Limits::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Empty);
        assert_eq!(err.kind.cause(), "empty_body");
    }
}

#[test]
fn bodies_over_the_limit_are_refused_before_parsing() {
    let limits = Limits::default();
    let mut big = b"<Response><Say>".to_vec();
    big.resize(limits.max_body_bytes + 1, b'a');
    let err = parse_response(Some("text/xml"), &big, &limits).unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
    assert_eq!(err.diagnostics[0].location, Location::Document);
    assert!(err.to_string().contains("1048577 bytes"), "{err}");
    // The limit is configurable.
    let small = Limits {
        max_body_bytes: 16,
        ..limits
    };
    assert_eq!(
        parse_response(None, TWIML, &small).unwrap_err().kind,
        ErrorKind::TooLarge
    );
}

#[test]
fn json_nesting_beyond_the_limit_is_too_large_not_a_crash() {
    let mut body = String::new();
    for _ in 0..10_000 {
        body.push_str(r#"{"module":"noop","data":{},"children":{"_":"#);
    }
    let err = parse_response(
        Some("application/json"),
        body.as_bytes(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
}

#[test]
fn a_valid_response_parses_to_steps() {
    let doc = parse_response(Some("text/xml"), TWIML, &Limits::default()).unwrap();
    let Flow::Twiml { steps } = doc.flow else {
        panic!("not TwiML")
    };
    assert!(matches!(&steps[..], [Step::Say(say)] if say.text == "Hello"));
}
