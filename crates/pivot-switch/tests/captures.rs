//! Replays every real FreeSWITCH 1.10.12 capture in `shared/reference/esl-captures` through the
//! streaming [`FrameDecoder`] and [`EslEvent::from_frame`], and checks the result against the
//! frames the capture tool parsed (`*.frames.jsonl`).
//!
//! Each capture is fed three ways: with the real `recv()` boundaries (`*.chunks.jsonl`), split at
//! random points many times (chunk sizes from 1 byte to 64 KiB, a small deterministic PRNG so a
//! failure reproduces), and one byte at a time for the small captures. Every feeding must give
//! exactly the recorded frames: same count, outer headers, body bytes, and for event frames the
//! same decoded event.
//!
//! The captures live beside the repository (`/work/shared` next to `/work/main`, and the same
//! layout in CI), not inside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use pivot_switch::esl::{Direction, EslEvent, Frame, FrameDecoder};
use serde_json::Value;

const CAPTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/reference/esl-captures"
);

/// Random feedings per capture, cycling through the chunk-size caps below.
const RANDOM_RUNS: u64 = 200;
const MAX_CHUNK: [usize; 5] = [1 << 3, 1 << 6, 1 << 9, 1 << 12, 1 << 16];
/// Captures at most this big are also fed one byte at a time.
const BYTEWISE_LIMIT: usize = 64 * 1024;

/// One frame as the capture tool recorded it.
struct Expected {
    seq: u64,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// The decoded event headers (without `_body` and the body's framing `Content-Length`) and
    /// body, for event frames.
    event: Option<(BTreeMap<String, String>, Option<String>)>,
}

struct Capture {
    name: String,
    s2c: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    frames: Vec<Expected>,
}

fn captures_dir() -> PathBuf {
    let dir = PathBuf::from(CAPTURES);
    assert!(
        dir.is_dir(),
        "the ESL captures are missing: expected {} (shared/ must sit beside the repository \
         checkout, as /work/shared sits beside /work/main)",
        dir.display()
    );
    dir
}

/// The capture tool writes bytes as latin-1 text: one char per byte.
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 text holds only chars below U+0100"))
        .collect()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .expect("a JSON object")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                // No capture has array headers; if one appears, compare in our `ARRAY::` form.
                Value::Array(items) => format!(
                    "ARRAY::{}",
                    items
                        .iter()
                        .map(|i| i.as_str().expect("array of strings"))
                        .collect::<Vec<_>>()
                        .join("|:")
                ),
                other => panic!("header {k} is not a string: {other}"),
            };
            (k.clone(), v)
        })
        .collect()
}

fn load(stem: &Path) -> Capture {
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
    let s2c = std::fs::read(with("s2c.raw")).unwrap();
    let chunks: Vec<Vec<u8>> = std::fs::read_to_string(with("chunks.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        // The EOF marker and the client's sends are not server bytes.
        .filter(|c| c["dir"] == "s2c")
        .map(|c| {
            let data = latin1(c["data"].as_str().unwrap());
            assert_eq!(data.len() as u64, c["len"].as_u64().unwrap());
            data
        })
        .collect();
    let frames = std::fs::read_to_string(with("frames.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Value = serde_json::from_str(l).unwrap();
            let event = match &f["event"] {
                Value::Null => None,
                ev => {
                    let mut headers = string_map(ev);
                    // The tool keeps the event body as `_body`, next to the `Content-Length`
                    // FreeSWITCH frames it with (plain inner header, JSON key; XML keeps its
                    // length outside the headers). We drop that framing header, so drop it here.
                    let body = headers.remove("_body");
                    if body.is_some() {
                        headers.remove("Content-Length");
                    }
                    Some((headers, body))
                }
            };
            Expected {
                seq: f["seq"].as_u64().unwrap(),
                headers: string_map(&f["headers"]),
                body: latin1(f["body"].as_str().unwrap()),
                event,
            }
        })
        .collect();
    Capture {
        name: stem.file_name().unwrap().to_string_lossy().into_owned(),
        s2c,
        chunks,
        frames,
    }
}

fn all_captures() -> Vec<Capture> {
    let dir = captures_dir();
    let mut stems: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let stem = name.strip_suffix(".s2c.raw")?;
            Some(dir.join(stem))
        })
        .collect();
    stems.sort();
    assert!(stems.len() >= 19, "only {} captures found", stems.len());
    stems.iter().map(|s| load(s)).collect()
}

/// Feeds the chunks in order, decoding after each, and returns every frame.
fn decode<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new(Direction::FromServer);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

/// Frames and events equal what the capture tool recorded.
fn check(capture: &Capture, how: &str, frames: &[Frame], with_events: bool) {
    let ctx = |seq: u64| format!("{} frame {seq} ({how})", capture.name);
    assert_eq!(
        frames.len(),
        capture.frames.len(),
        "{}: frame count ({how})",
        capture.name
    );
    for (frame, want) in frames.iter().zip(&capture.frames) {
        let headers: BTreeMap<String, String> = frame
            .headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(headers.len(), frame.headers.len(), "{}", ctx(want.seq));
        assert_eq!(headers, want.headers, "{}: headers", ctx(want.seq));
        assert_eq!(&frame.body[..], &want.body[..], "{}: body", ctx(want.seq));
        let ct = frame.content_type();
        assert_eq!(
            frame.is_reply(),
            matches!(ct, Some("command/reply" | "api/response")),
            "{}",
            ctx(want.seq)
        );
        if !with_events {
            continue;
        }
        let event =
            EslEvent::from_frame(frame).unwrap_or_else(|e| panic!("{}: {e}", ctx(want.seq)));
        match (&event, &want.event) {
            (None, None) => {}
            (Some(ev), Some((want_headers, want_body))) => {
                // Real events repeat headers (CHANNEL_HANGUP_COMPLETE carries `Hangup-Cause`
                // twice, CODEC the write-codec pair); we keep every occurrence, the tool's dict
                // keeps the last, so compare with last-wins.
                let got: BTreeMap<String, String> = ev
                    .headers()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect();
                assert_eq!(&got, want_headers, "{}: event headers", ctx(want.seq));
                assert_eq!(
                    ev.body(),
                    want_body.as_deref(),
                    "{}: event body",
                    ctx(want.seq)
                );
            }
            (got, _) => panic!(
                "{}: event {} but the capture says {}",
                ctx(want.seq),
                if got.is_some() {
                    "decoded"
                } else {
                    "not decoded"
                },
                if want.event.is_some() {
                    "it is one"
                } else {
                    "it is not"
                }
            ),
        }
    }
}

/// xorshift64*: small, deterministic, good enough to pick split points.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // A zero state would stay zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_chunks<'a>(bytes: &'a [u8], rng: &mut Rng, max_chunk: usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (1 + rng.below(max_chunk)).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

#[test]
fn real_chunk_boundaries() {
    for capture in all_captures() {
        assert_eq!(
            capture.chunks.concat(),
            capture.s2c,
            "{}: chunks.jsonl does not add up to s2c.raw",
            capture.name
        );
        let frames = decode(capture.chunks.iter().map(Vec::as_slice));
        check(&capture, "real chunks", &frames, true);
    }
}

#[test]
fn random_split_points() {
    for (index, capture) in all_captures().iter().enumerate() {
        for run in 0..RANDOM_RUNS {
            let seed = (index as u64) << 32 | run;
            let max_chunk = MAX_CHUNK[run as usize % MAX_CHUNK.len()];
            let chunks = random_chunks(&capture.s2c, &mut Rng::new(seed), max_chunk);
            let frames = decode(chunks);
            // Events are decoded from the frames alone, so once the frames match, event
            // decoding is the same as in the other tests; checking it on a few runs per chunk
            // size keeps this test fast in debug builds.
            let with_events = run < 2 * MAX_CHUNK.len() as u64;
            check(
                capture,
                &format!("random split, seed {seed}, chunks ≤ {max_chunk}"),
                &frames,
                with_events,
            );
        }
    }
}

#[test]
fn one_byte_at_a_time() {
    let mut fed = 0;
    for capture in all_captures() {
        if capture.s2c.len() > BYTEWISE_LIMIT {
            continue;
        }
        let frames = decode(capture.s2c.chunks(1));
        check(&capture, "1-byte chunks", &frames, true);
        fed += 1;
    }
    assert!(
        fed >= 4,
        "only {fed} captures small enough for 1-byte feeding"
    );
}

#[test]
fn outbound_connect_reply_and_auth_failure() {
    let captures = all_captures();
    let find = |prefix: &str| {
        captures
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("capture {prefix} missing"))
    };
    for prefix in ["11-", "12a-", "12b-"] {
        let capture = find(prefix);
        let frames = decode([capture.s2c.as_slice()]);
        // The connect reply: one header block, URL-encoded, Content-Type near the end.
        let connect = &frames[0];
        assert!(connect.is_reply(), "{}", capture.name);
        assert_ne!(
            connect.headers.iter().next().map(|(n, _)| n),
            Some("Content-Type")
        );
        assert!(connect.body.is_empty());
        assert_eq!(EslEvent::from_frame(connect).unwrap(), None);
        let event = EslEvent::from_encoded_headers(&connect.headers).unwrap();
        assert_eq!(event.get("Reply-Text"), Some("+OK\n"));
        assert_eq!(event.name(), Some("CHANNEL_DATA"));
        assert!(event.unique_id().is_some());
        assert!(event.get("Socket-Mode").is_some());
    }
    let capture = find("00a-");
    let frames = decode([capture.s2c.as_slice()]);
    let kinds: Vec<_> = frames.iter().map(|f| f.content_type().unwrap()).collect();
    assert_eq!(
        kinds,
        ["auth/request", "command/reply", "text/disconnect-notice"]
    );
    assert_eq!(frames[1].reply_text(), Some("-ERR invalid"));
    assert_eq!(frames[2].body.len(), 67);
}

#[test]
fn events_reencode_to_what_freeswitch_sent() {
    // Plain and XML: our encoder must write FreeSWITCH's bytes exactly (checked on 02 and 13
    // and the sendevent frames of 00b). JSON: same bytes too, as cJSON writes in header order.
    let mut checked = 0;
    for capture in all_captures() {
        for frame in decode([capture.s2c.as_slice()]) {
            let Some(event) = EslEvent::from_frame(&frame).unwrap() else {
                continue;
            };
            let format =
                pivot_switch::esl::EventFormat::from_content_type(frame.content_type().unwrap())
                    .unwrap();
            let again = event.to_frame(format);
            assert_eq!(
                String::from_utf8_lossy(&again.body),
                String::from_utf8_lossy(&frame.body),
                "{}: {format:?} re-encoding differs",
                capture.name
            );
            assert_eq!(
                again.header("Content-Length"),
                frame.header("Content-Length")
            );
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} events");
}
