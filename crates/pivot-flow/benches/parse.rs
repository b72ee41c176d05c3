//! `make bench`: parse throughput of pivot-flow beside a baseline measured in the same run on the
//! same bytes — `serde_json::Value` for KAZOO JSON, a bare quick-xml event loop for TwiML.
//!
//! Each round times a batch of the baseline, then a batch of pivot-flow, so that both see the
//! same machine state; the figures are medians over the rounds. Target: pivot-flow within 3× of
//! its baseline.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pivot_flow::Limits;
use quick_xml::Reader;
use quick_xml::events::Event;

const ROUNDS: usize = 31;
const ROUND_TIME: Duration = Duration::from_millis(40);

struct Case {
    name: &'static str,
    body: &'static [u8],
    baseline_name: &'static str,
    baseline: fn(&[u8]) -> usize,
    subject: fn(&[u8]) -> usize,
}

fn main() {
    let cases = [
        Case {
            name: "KAZOO JSON 1 KB",
            body: include_bytes!("fixtures/kazoo-1k.json"),
            baseline_name: "serde_json::Value",
            baseline: serde_value,
            subject: pivot_kazoo,
        },
        Case {
            name: "TwiML 1 KB",
            body: include_bytes!("fixtures/twiml-1k.xml"),
            baseline_name: "quick-xml events",
            baseline: xml_events,
            subject: pivot_twiml,
        },
        Case {
            name: "TwiML 10 KB",
            body: include_bytes!("fixtures/twiml-10k.xml"),
            baseline_name: "quick-xml events",
            baseline: xml_events,
            subject: pivot_twiml,
        },
    ];
    println!(
        "{:<16} {:>7}  {:<18} {:>10} {:>9}  {:>10} {:>9}  {:>6}",
        "document", "bytes", "baseline", "base µs", "base MB/s", "pivot µs", "pivot MB/s", "ratio"
    );
    for case in &cases {
        // Both must accept the document, or the comparison measures an early exit.
        assert!(
            (case.subject)(case.body) > 0,
            "{} does not parse",
            case.name
        );
        let (base, pivot) = measure(case);
        let mbps = |t: f64| case.body.len() as f64 / t / 1e6;
        println!(
            "{:<16} {:>7}  {:<18} {:>10.2} {:>9.1}  {:>10.2} {:>9.1}  {:>5.2}x",
            case.name,
            case.body.len(),
            case.baseline_name,
            base * 1e6,
            mbps(base),
            pivot * 1e6,
            mbps(pivot),
            pivot / base
        );
    }
}

/// Median seconds per parse of the baseline and of pivot-flow.
fn measure(case: &Case) -> (f64, f64) {
    let iterations = calibrate(case);
    let mut base = Vec::with_capacity(ROUNDS);
    let mut pivot = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        base.push(time(case.baseline, case.body, iterations));
        pivot.push(time(case.subject, case.body, iterations));
    }
    (median(&mut base), median(&mut pivot))
}

/// Iterations that make one batch of pivot-flow last about `ROUND_TIME`.
fn calibrate(case: &Case) -> u32 {
    let mut iterations = 16u32;
    loop {
        let start = Instant::now();
        for _ in 0..iterations {
            black_box((case.subject)(black_box(case.body)));
        }
        if start.elapsed() >= ROUND_TIME / 4 || iterations >= 1 << 24 {
            return iterations.saturating_mul(4);
        }
        iterations = iterations.saturating_mul(2);
    }
}

fn time(f: fn(&[u8]) -> usize, body: &[u8], iterations: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f(black_box(body)));
    }
    start.elapsed().as_secs_f64() / f64::from(iterations)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn serde_value(body: &[u8]) -> usize {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => map.len(),
        _ => 0,
    }
}

fn xml_events(body: &[u8]) -> usize {
    let mut reader = Reader::from_reader(body);
    let mut events = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Eof) | Err(_) => return events,
            Ok(_) => events += 1,
        }
    }
}

fn pivot_kazoo(body: &[u8]) -> usize {
    pivot_flow::parse_kazoo(body, &Limits::default()).map_or(0, |doc| doc.warnings.len() + 1)
}

fn pivot_twiml(body: &[u8]) -> usize {
    pivot_flow::parse_twiml(body, &Limits::default()).map_or(0, |doc| doc.warnings.len() + 1)
}
