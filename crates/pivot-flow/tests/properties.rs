//! Properties that must hold for every input: no bytes make a parser panic, and every flow
//! survives Flow → JSON → Flow unchanged.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arbitrary::{Arbitrary, Unstructured};
use pivot_flow::{Flow, Format, Limits, Node, Step, parse, parse_response};
use proptest::prelude::*;

/// Tokens that reach deep into the TwiML parser far more often than uniform bytes do.
const XML_TOKENS: &[&str] = &[
    "<?xml version=\"1.0\"?>",
    "<Response>",
    "</Response>",
    "<Say",
    "</Say>",
    "<Play",
    "</Play>",
    "<Gather",
    "</Gather>",
    "<Dial",
    "</Dial>",
    "<Number",
    "</Number>",
    "<Sip>",
    "</Sip>",
    "<Conference",
    "</Conference>",
    "<Record",
    "<Redirect",
    "</Redirect>",
    "<Variable",
    "<Set>",
    "</Set>",
    "<Pause",
    "<Hangup",
    "<Reject",
    "<Connect>",
    "<break time=\"1s\"/>",
    "/>",
    ">",
    " numDigits=\"",
    " timeout=\"",
    " finishOnKey=\"",
    " action=\"",
    " method=\"",
    " loop=\"",
    " length=\"",
    " voice=\"",
    " reason=\"",
    " key=\"",
    " value=\"",
    " digits=\"",
    "\"",
    "1",
    "0",
    "-3",
    "99999999999",
    "#",
    "busy",
    "POST",
    "/next",
    "+1 (415) 886-7900",
    "sip:a@b",
    "hello",
    "&amp;",
    "&bogus;",
    "<![CDATA[x]]>",
    "<!-- c -->",
    "<!DOCTYPE x>",
    " ",
    "\n",
    "é",
];

/// Fragments that reach deep into the KAZOO parser.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"module\"",
    "\"data\"",
    "\"children\"",
    "\"_\"",
    "\"1\"",
    "\"timeout\"",
    "\"tts\"",
    "\"say\"",
    "\"play\"",
    "\"pivot\"",
    "\"menu\"",
    "\"collect_dtmf\"",
    "\"record_caller\"",
    "\"text\"",
    "\"voice_url\"",
    "\"http://x/\"",
    "\"id\"",
    "\"time_limit\"",
    "\"terminators\"",
    "\"req_timeout\"",
    "\"5\"",
    "0",
    "1",
    "-1",
    "1e400",
    "true",
    "null",
    "\"\\u0000\"",
    "\"\\ud800\"",
    " ",
];

fn tokens(vocabulary: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vocabulary), 0..64)
        .prop_map(|parts| parts.concat().into_bytes())
}

fn exercise(body: &[u8]) {
    let limits = Limits::default();
    let _ = parse(Format::Kazoo, body, &limits);
    let _ = parse(Format::Twiml, body, &limits);
    for content_type in [
        None,
        Some("application/json"),
        Some("text/xml"),
        Some("text/plain"),
    ] {
        let _ = parse_response(content_type, body, &limits);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&body);
    }

    #[test]
    fn twiml_like_bytes_never_panic(body in tokens(XML_TOKENS)) {
        exercise(&body);
    }

    #[test]
    fn json_like_bytes_never_panic(body in tokens(JSON_TOKENS)) {
        exercise(&body);
    }

    #[test]
    fn arbitrary_flows_round_trip_through_json(seed in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut u = Unstructured::new(&seed);
        if let Ok(flow) = Flow::arbitrary(&mut u) {
            // Flows deeper than the parse limit are outside the domain (and arbitrary's
            // recursion can build them).
            prop_assume!(depth(&flow) <= Limits::default().max_depth);
            let json = flow.to_json();
            let back = Flow::from_json(&json).map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
            prop_assert_eq!(back, flow);
        }
    }
}

#[test]
fn parsed_documents_round_trip_through_json() {
    let limits = Limits::default();
    let documents: [(Format, &[u8]); 3] = [
        (
            Format::Kazoo,
            include_bytes!("../benches/fixtures/kazoo-1k.json"),
        ),
        (
            Format::Twiml,
            include_bytes!("../benches/fixtures/twiml-1k.xml"),
        ),
        (
            Format::Twiml,
            include_bytes!("../benches/fixtures/twiml-10k.xml"),
        ),
    ];
    for (format, body) in documents {
        let flow = parse(format, body, &limits).unwrap().flow;
        assert_eq!(Flow::from_json(&flow.to_json()).unwrap(), flow);
    }
}

fn depth(flow: &Flow) -> usize {
    fn node_depth(node: &Node) -> usize {
        1 + node.children.values().map(node_depth).max().unwrap_or(0)
    }
    fn step_depth(step: &Step) -> usize {
        match step {
            Step::Gather(g) => 1 + g.prompts.iter().map(step_depth).max().unwrap_or(0),
            _ => 1,
        }
    }
    match flow {
        Flow::Kazoo { root } => node_depth(root),
        Flow::Twiml { steps } => steps.iter().map(step_depth).max().unwrap_or(0),
    }
}
