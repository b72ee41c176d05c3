//! Flow → JSON → Flow is the identity, and reading JSON back never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pivot_flow::Flow;

fuzz_target!(|flow: Flow| {
    let json = flow.to_json();
    if let Ok(back) = Flow::from_json(&json) {
        assert_eq!(back, flow);
    }
});
