//! KAZOO callflow JSON parser: any bytes, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = pivot_flow::parse_kazoo(body, &pivot_flow::Limits::default());
});
