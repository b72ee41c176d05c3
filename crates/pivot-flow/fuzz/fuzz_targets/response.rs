//! Content-Type dispatch plus either parser: the first byte picks a Content-Type.
#![no_main]
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some("application/json"),
    Some("text/xml; charset=utf-8"),
    Some("text/plain"),
    Some("text/html"),
];

fuzz_target!(|input: &[u8]| {
    if let Some((&selector, body)) = input.split_first() {
        let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
        let _ = pivot_flow::parse_response(content_type, body, &pivot_flow::Limits::default());
    }
});
