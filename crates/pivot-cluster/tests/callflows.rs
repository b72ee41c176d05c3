//! Callflows on the in-memory backend: the shared behaviour cases, plus parsing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod cases;

use pivot_cluster::Callflow;
use serde_json::json;

callflow_cases!(cases::Memory::new());

#[test]
fn callflows_read_kazoo_shaped_json() {
    let parsed: Callflow = serde_json::from_value(json!({
        "account_id": "acct",
        "numbers": ["+15551234567"],
        "patterns": ["^\\+?1?(\\d{10})$"],
        "flow": {"module": "pivot", "data": {"voice_url": "https://app.example/"}}
    }))
    .unwrap();
    assert_eq!(parsed.id, "");
    assert_eq!(parsed.name, None);
    assert_eq!(parsed.patterns, ["^\\+?1?(\\d{10})$"]);
}
