//! Conformance of the simulator with real FreeSWITCH 1.10.12: every call-control scenario of
//! `shared/reference/esl-captures` is replayed against [`Simulator`], and what a controller sees
//! is compared with what the real controller saw.
//!
//! For each capture:
//! - the controller's commands are decoded from `*.c2s.raw` (through `*.chunks.jsonl`, which
//!   also tells how many server frames the controller had received before each command: that is
//!   the synchronisation point it waited for);
//! - the caller's behaviour (DTMF digits and their times, a caller hang-up or cancel, how the
//!   far end of a bridge answered) is derived from the capture's events and becomes the call's
//!   [`NewCall`] script;
//! - the commands are sent to the simulator in the same order, the capture's channel UUID
//!   replaced by the simulated call's, each one only once the simulator has produced as many
//!   replies and A-leg events as FreeSWITCH had at that point;
//! - the A-leg events pivot subscribes to (`SUBSCRIPTION` in `src/client.rs`), from the
//!   CHANNEL_PARK on, must have the same names in the same order, and the same values of the
//!   headers pivot reads; every command reply must have the same text.
//!
//! On failure a readable report lists expected vs got event names side by side, header
//! mismatches and reply mismatches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use pivot_switch::esl::{Direction, EslEvent, Frame, FrameDecoder};
use pivot_switch::sim::{DialAnswer, NewCall, ScriptStep, SimConfig, Simulator};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

const CAPTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/reference/esl-captures"
);

/// The events pivot subscribes to (`SUBSCRIPTION` in `src/client.rs`, HEARTBEAT aside: it has
/// no channel).
const SUBSCRIBED: &[&str] = &[
    "CHANNEL_PARK",
    "CHANNEL_ANSWER",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "DTMF",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "RECORD_START",
    "RECORD_STOP",
    "BACKGROUND_JOB",
];

/// Headers pivot reads whose values are deterministic: compared by value (after the capture's
/// UUIDs are replaced by the simulator's), and absent where the capture has them absent.
const VALUE_HEADERS: &[&str] = &[
    "Application",
    "Application-Data",
    "Application-Response",
    "Application-UUID",
    "Playback-Status",
    "Hangup-Cause",
    "Answer-State",
    "DTMF-Digit",
    "variable_read_result",
    "variable_read_terminator_used",
    // The digits variables the captures' play_and_get_digits / read use.
    "variable_lab_digits",
    "variable_lab_digits2",
    "variable_lab_read",
    "variable_playback_terminator_used",
    "variable_originate_disposition",
    // The bridged legs (the capture's B-leg UUID is replaced by the simulator's).
    "Bridge-A-Unique-ID",
    "Bridge-B-Unique-ID",
    // The call is placed with the capture's numbers, so these match by value too.
    "Caller-Destination-Number",
    "Caller-Caller-ID-Number",
];

/// Headers pivot reads whose values differ per run: compared by presence only.
const PRESENCE_HEADERS: &[&str] = &[
    "variable_record_seconds",
    "Core-UUID",
    "Unique-ID",
    "Event-Sequence",
    "Event-Date-Timestamp",
];

/// How long any one synchronisation point may take before the scenario is reported as stuck.
const WAIT: Duration = Duration::from_secs(5);
/// After the last expected event, how long to keep reading for unexpected extra ones.
const SETTLE: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Capture loading
// ---------------------------------------------------------------------------------------------

/// One frame FreeSWITCH sent, as the capture tool parsed it.
struct CapFrame {
    t: f64,
    /// `Reply-Text` of a `command/reply`, the body of an `api/response`.
    reply: Option<String>,
    /// The decoded event of an event frame.
    event: Option<BTreeMap<String, String>>,
}

/// One command the controller sent.
struct CapCommand {
    t: f64,
    frame: Frame,
    /// How many server frames the controller had received when it sent this.
    after_frames: usize,
}

struct Capture {
    name: String,
    frames: Vec<CapFrame>,
    commands: Vec<CapCommand>,
}

/// The capture tool writes bytes as latin-1 text: one char per byte.
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 text"))
        .collect()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .expect("a JSON object")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn load(prefix: &str) -> Capture {
    let dir = PathBuf::from(CAPTURES);
    assert!(
        dir.is_dir(),
        "the ESL captures are missing: expected {}",
        dir.display()
    );
    let stem = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find_map(|n| {
            n.strip_suffix(".frames.jsonl")
                .filter(|s| s.starts_with(&format!("{prefix}-")))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no capture {prefix}-*"));
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{stem}.{ext}"))).unwrap();

    let frames: Vec<CapFrame> = read("frames.jsonl")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let headers = string_map(&v["headers"]);
            let body = v["body"].as_str().unwrap_or_default().to_owned();
            let reply = match headers.get("Content-Type").map(String::as_str) {
                Some("command/reply") => headers.get("Reply-Text").cloned(),
                Some("api/response") => Some(body),
                _ => None,
            };
            let event = (!v["event"].is_null()).then(|| string_map(&v["event"]));
            CapFrame {
                t: v["t"].as_f64().unwrap(),
                reply,
                event,
            }
        })
        .collect();

    // Replay the real send/recv order: each command is tagged with the number of server frames
    // complete when it was sent.
    let mut c2s = FrameDecoder::new(Direction::FromClient);
    let mut s2c = FrameDecoder::new(Direction::FromServer);
    let (mut cbuf, mut sbuf) = (BytesMut::new(), BytesMut::new());
    let mut server_frames = 0;
    let mut commands = Vec::new();
    for line in read("chunks.jsonl").lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let data = latin1(v["data"].as_str().unwrap_or_default());
        let t = v["t"].as_f64().unwrap();
        match v["dir"].as_str() {
            Some("c2s") => {
                cbuf.extend_from_slice(&data);
                while let Some(frame) = c2s.decode(&mut cbuf).unwrap() {
                    commands.push(CapCommand {
                        t,
                        frame,
                        after_frames: server_frames,
                    });
                }
            }
            Some("s2c") => {
                sbuf.extend_from_slice(&data);
                while s2c.decode(&mut sbuf).unwrap().is_some() {
                    server_frames += 1;
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        server_frames,
        frames.len(),
        "{stem}: chunks and frames disagree"
    );
    Capture {
        name: stem,
        frames,
        commands,
    }
}

fn ev_name(ev: &BTreeMap<String, String>) -> &str {
    ev.get("Event-Name").map(String::as_str).unwrap_or("")
}

impl Capture {
    /// Index of the A-leg's CHANNEL_PARK frame.
    fn park_index(&self) -> usize {
        self.frames
            .iter()
            .position(|f| {
                f.event
                    .as_ref()
                    .is_some_and(|e| ev_name(e) == "CHANNEL_PARK")
            })
            .expect("the capture has a CHANNEL_PARK")
    }

    fn park(&self) -> &BTreeMap<String, String> {
        self.frames[self.park_index()].event.as_ref().unwrap()
    }

    fn a_leg(&self) -> String {
        self.park()["Unique-ID"].clone()
    }

    /// The A-leg's events of every name, in order.
    fn a_events(&self) -> impl Iterator<Item = (f64, &BTreeMap<String, String>)> {
        let a = self.a_leg();
        self.frames.iter().filter_map(move |f| {
            f.event
                .as_ref()
                .filter(|e| e.get("Unique-ID") == Some(&a))
                .map(|e| (f.t, e))
        })
    }

    /// Whether frame `i` is one the comparison counts: a subscribed A-leg event from the park on.
    fn counted(&self, i: usize) -> bool {
        let a = self.a_leg();
        i >= self.park_index()
            && self.frames[i]
                .event
                .as_ref()
                .is_some_and(|e| e.get("Unique-ID") == Some(&a) && SUBSCRIBED.contains(&ev_name(e)))
    }

    /// The counted events, in order.
    fn expected_events(&self) -> Vec<&BTreeMap<String, String>> {
        (0..self.frames.len())
            .filter(|&i| self.counted(i))
            .map(|i| self.frames[i].event.as_ref().unwrap())
            .collect()
    }

    fn expected_replies(&self) -> Vec<String> {
        self.frames.iter().filter_map(|f| f.reply.clone()).collect()
    }

    /// `(replies, counted events)` among the first `n` frames.
    fn counts_before(&self, n: usize) -> (usize, usize) {
        let replies = self.frames[..n]
            .iter()
            .filter(|f| f.reply.is_some())
            .count();
        let events = (0..n).filter(|&i| self.counted(i)).count();
        (replies, events)
    }

    /// The far end a `bridge` of the A-leg created, if any.
    fn b_leg(&self) -> Option<String> {
        let a = self.a_leg();
        self.frames
            .iter()
            .filter_map(|f| f.event.as_ref())
            .find(|e| {
                is_b_leg_of(
                    e.get("Unique-ID"),
                    e.get("Other-Leg-Unique-ID"),
                    e.get("Other-Type"),
                    &a,
                )
            })
            .map(|e| e["Unique-ID"].clone())
    }

    /// The B-leg's subscribed events, in order.
    fn expected_b_events(&self) -> Vec<&BTreeMap<String, String>> {
        let Some(b) = self.b_leg() else {
            return Vec::new();
        };
        self.frames
            .iter()
            .filter_map(|f| f.event.as_ref())
            .filter(|e| e.get("Unique-ID") == Some(&b) && SUBSCRIBED.contains(&ev_name(e)))
            .collect()
    }

    /// The `Application-UUID` FreeSWITCH gave the dialplan's `park`.
    fn park_app_uuid(&self) -> Option<String> {
        self.a_events()
            .find(|(_, e)| {
                ev_name(e) == "CHANNEL_EXECUTE"
                    && e.get("Application").map(String::as_str) == Some("park")
            })
            .and_then(|(_, e)| e.get("Application-UUID").cloned())
    }

    /// The caller as the capture shows it: its numbers, the digits it pressed and when, whether
    /// it hung up (BYE) or cancelled, and how the bridged far end answered.
    fn new_call(&self) -> NewCall {
        let park = self.park();
        let t0 = self.a_events().next().unwrap().0;
        let at = |t: f64| ((t - t0) * 1000.0).round() as u64;
        let mut script = Vec::new();
        for (t, e) in self.a_events() {
            if ev_name(e) == "DTMF" {
                script.push(ScriptStep {
                    at_ms: at(t),
                    dtmf: e.get("DTMF-Digit").cloned(),
                    hangup: false,
                    after_prompt: None,
                });
            }
        }
        let caller_hung_up = self.a_events().any(|(_, e)| {
            ev_name(e) == "CHANNEL_HANGUP_COMPLETE"
                && matches!(
                    e.get("variable_sip_hangup_disposition").map(String::as_str),
                    Some("recv_bye" | "recv_cancel")
                )
        });
        if caller_hung_up {
            let (t, _) = self
                .a_events()
                .find(|(_, e)| ev_name(e) == "CHANNEL_HANGUP")
                .unwrap();
            script.push(ScriptStep {
                at_ms: at(t),
                dtmf: None,
                hangup: true,
                after_prompt: None,
            });
        }
        let busy = self.a_events().any(|(_, e)| {
            e.get("variable_originate_disposition").map(String::as_str) == Some("USER_BUSY")
        });
        NewCall {
            to: park["Caller-Destination-Number"].clone(),
            from: park["Caller-Username"].clone(),
            caller_id_name: park["Caller-Caller-ID-Name"].clone(),
            caller_id_number: park["Caller-Caller-ID-Number"].clone(),
            account_id: None,
            script,
            dial_answer: if busy {
                DialAnswer::Busy
            } else {
                DialAnswer::Answer
            },
        }
    }
}

/// Whether an event of `unique_id` describes the far end of a bridge from `a`.
fn is_b_leg_of<S: AsRef<str>>(
    unique_id: Option<S>,
    other_leg: Option<S>,
    other_type: Option<S>,
    a: &str,
) -> bool {
    unique_id.is_some_and(|u| u.as_ref() != a)
        && other_leg.is_some_and(|o| o.as_ref() == a)
        && other_type.is_some_and(|t| t.as_ref() == "originator")
}

/// Replaces every `(from, to)` pair in `s`.
fn subst(s: &str, map: &[(String, String)]) -> String {
    map.iter()
        .fold(s.to_owned(), |acc, (from, to)| acc.replace(from, to))
}

fn subst_frame(frame: &Frame, map: &[(String, String)]) -> Frame {
    let mut out = frame.clone();
    out.line = frame.line.as_deref().map(|l| subst(l, map));
    out.headers = frame
        .headers
        .iter()
        .map(|(n, v)| (n.to_owned(), subst(v, map)))
        .collect();
    out
}

// ---------------------------------------------------------------------------------------------
// A raw ESL connection to the simulator, with a reply FIFO
// ---------------------------------------------------------------------------------------------

struct Conn {
    read: FramedRead<OwnedReadHalf, FrameDecoder>,
    write: OwnedWriteHalf,
    /// Reply texts, in arrival order (replies come back in command order).
    replies: Vec<String>,
    /// The A-leg once placed.
    a_leg: Option<String>,
    /// Every A-leg event, of every name, in order.
    a_all: Vec<EslEvent>,
    /// Whether the A-leg's CHANNEL_PARK has been seen.
    parked: bool,
    /// The counted A-leg events: subscribed names, from the park on.
    events: Vec<EslEvent>,
    /// The far end of the A-leg's bridge, once seen, and its subscribed events.
    b_leg: Option<String>,
    b_events: Vec<EslEvent>,
}

impl Conn {
    async fn connect(sim: &Simulator) -> Conn {
        let stream = TcpStream::connect(sim.esl_addr()).await.unwrap();
        let (r, w) = stream.into_split();
        let mut c = Conn {
            read: FramedRead::new(r, FrameDecoder::new(Direction::FromServer)),
            write: w,
            replies: Vec::new(),
            a_leg: None,
            a_all: Vec::new(),
            parked: false,
            events: Vec::new(),
            b_leg: None,
            b_events: Vec::new(),
        };
        let first = tokio::time::timeout(WAIT, c.read.next())
            .await
            .expect("no auth/request")
            .expect("closed")
            .unwrap();
        assert_eq!(first.content_type(), Some("auth/request"));
        c
    }

    async fn send(&mut self, frame: &Frame) {
        self.write.write_all(&frame.to_bytes()).await.unwrap();
    }

    fn take(&mut self, frame: Frame) {
        if frame.is_reply() {
            self.replies
                .push(frame.reply_text().unwrap_or_default().to_owned());
            return;
        }
        let Some(ev) = EslEvent::from_frame(&frame).expect("the simulator's event decodes") else {
            return;
        };
        let Some(a) = self.a_leg.as_deref() else {
            return;
        };
        if self.b_leg.is_none()
            && is_b_leg_of(
                ev.unique_id(),
                ev.get("Other-Leg-Unique-ID"),
                ev.get("Other-Type"),
                a,
            )
        {
            self.b_leg = ev.unique_id().map(str::to_owned);
        }
        if self.b_leg.is_some() && ev.unique_id() == self.b_leg.as_deref() {
            if SUBSCRIBED.contains(&ev.name().unwrap_or_default()) {
                self.b_events.push(ev);
            }
            return;
        }
        if ev.unique_id() != Some(a) {
            return;
        }
        let name = ev.name().unwrap_or_default().to_owned();
        if name == "CHANNEL_PARK" {
            self.parked = true;
        }
        if self.parked && SUBSCRIBED.contains(&name.as_str()) {
            self.events.push(ev.clone());
        }
        self.a_all.push(ev);
    }

    /// Reads one frame; `false` when nothing came before `until` or the socket closed.
    async fn pump(&mut self, until: tokio::time::Instant) -> bool {
        match tokio::time::timeout_at(until, self.read.next()).await {
            Ok(Some(frame)) => {
                self.take(frame.unwrap());
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    /// Reads until `replies` replies and `events` counted events have arrived.
    async fn wait_for(&mut self, replies: usize, events: usize) -> Result<(), String> {
        let until = tokio::time::Instant::now() + WAIT;
        while self.replies.len() < replies || self.events.len() < events {
            if !self.pump(until).await {
                return Err(format!(
                    "stuck waiting for {replies} replies / {events} events (got {} / {})",
                    self.replies.len(),
                    self.events.len()
                ));
            }
        }
        Ok(())
    }

    /// Keeps reading for `d`, to catch events that should not be there.
    async fn settle(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        while self.pump(until).await {}
    }

    fn park_app_uuid(&self) -> Option<String> {
        self.a_all
            .iter()
            .find(|e| e.name() == Some("CHANNEL_EXECUTE") && e.get("Application") == Some("park"))
            .and_then(|e| e.get("Application-UUID").map(str::to_owned))
    }
}

// ---------------------------------------------------------------------------------------------
// Replay and comparison
// ---------------------------------------------------------------------------------------------

/// A header of one expected event that the simulator is allowed to get wrong, because pivot
/// does not depend on it. Each use carries a `// KNOWN DIFFERENCE:` comment.
struct Known {
    /// Index in the expected (counted) event list.
    index: usize,
    header: &'static str,
}

struct Scenario {
    prefix: &'static str,
    time_scale: f64,
    known: Vec<Known>,
}

fn label(name: &str, app: Option<&str>, digit: Option<&str>) -> String {
    match (app, digit) {
        (Some(app), _) if name.starts_with("CHANNEL_EXECUTE") => format!("{name}({app})"),
        (_, Some(d)) if name == "DTMF" => format!("DTMF({d})"),
        _ => name.to_owned(),
    }
}

/// Expected vs got event names, side by side, mismatching rows marked.
fn names_diff(expected: &[String], got: &[String]) -> String {
    let mut out = String::new();
    let width = expected.iter().map(String::len).max().unwrap_or(8).max(8) + 2;
    writeln!(out, "   # {:width$}   got", "expected").unwrap();
    for i in 0..expected.len().max(got.len()) {
        let e = expected.get(i).map(String::as_str).unwrap_or("-");
        let g = got.get(i).map(String::as_str).unwrap_or("-");
        let mark = if e == g { "  " } else { "!=" };
        writeln!(out, "{i:4} {e:width$} {mark} {g}").unwrap();
    }
    out
}

async fn run(scenario: Scenario) {
    let cap = load(scenario.prefix);
    let sim = Simulator::start(SimConfig {
        time_scale: scenario.time_scale,
        heartbeat_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut conn = Conn::connect(&sim).await;
    let park_index = cap.park_index();
    let mut map: Vec<(String, String)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    let mut placed = false;
    // The call arrives once the controller has what it had before FreeSWITCH's first event of
    // the call (its `events` subscription acknowledged).
    let (pre_replies, _) = cap.counts_before(park_index);
    let place = async |conn: &mut Conn, map: &mut Vec<(String, String)>| {
        conn.wait_for(pre_replies, 0).await?;
        let id = sim.place_call(cap.new_call());
        map.push((cap.a_leg(), id.clone()));
        conn.a_leg = Some(id);
        Ok::<(), String>(())
    };
    for cmd in &cap.commands {
        if !placed && cmd.after_frames > park_index {
            if let Err(e) = place(&mut conn, &mut map).await {
                problems.push(format!("before placing the call: {e}"));
                break;
            }
            placed = true;
        }
        let (replies, events) = cap.counts_before(cmd.after_frames);
        if let Err(e) = conn.wait_for(replies, events).await {
            problems.push(format!(
                "before sending {:?}: {e}",
                cmd.frame.line.as_deref().unwrap_or_default()
            ));
            break;
        }
        if scenario.time_scale > 0.0 && cmd.after_frames > 0 {
            // The controller's own pause (e.g. "let it play 2 s, then uuid_break"), scaled.
            let gap = (cmd.t - cap.frames[cmd.after_frames - 1].t).max(0.0);
            let real = Duration::from_secs_f64(gap * scenario.time_scale);
            tokio::time::sleep(real.min(Duration::from_millis(200))).await;
        }
        conn.send(&subst_frame(&cmd.frame, &map)).await;
    }
    if !placed && let Err(e) = place(&mut conn, &mut map).await {
        problems.push(format!("before placing the call: {e}"));
    }
    let expected_events = cap.expected_events();
    let expected_replies = cap.expected_replies();
    if problems.is_empty()
        && let Err(e) = conn
            .wait_for(expected_replies.len(), expected_events.len())
            .await
    {
        problems.push(format!("after the last command: {e}"));
    }
    conn.settle(SETTLE).await;

    // The dialplan `park`'s random Application-UUID.
    if let (Some(from), Some(to)) = (cap.park_app_uuid(), conn.park_app_uuid()) {
        map.push((from, to));
    }
    if let (Some(from), Some(to)) = (cap.b_leg(), conn.b_leg.clone()) {
        map.push((from, to));
    }
    let a_id = conn.a_leg.clone().unwrap_or_default();

    // 1. Event names and order.
    let exp_labels: Vec<String> = expected_events
        .iter()
        .map(|e| {
            label(
                ev_name(e),
                e.get("Application").map(String::as_str),
                e.get("DTMF-Digit").map(String::as_str),
            )
        })
        .collect();
    let got_labels: Vec<String> = conn
        .events
        .iter()
        .map(|e| {
            label(
                e.name().unwrap_or_default(),
                e.get("Application"),
                e.get("DTMF-Digit"),
            )
        })
        .collect();
    let exp_names: Vec<&str> = expected_events.iter().map(|e| ev_name(e)).collect();
    let got_names: Vec<&str> = conn
        .events
        .iter()
        .map(|e| e.name().unwrap_or_default())
        .collect();
    if exp_names != got_names {
        problems.push(
            "event names differ (A-leg, subscribed events, from CHANNEL_PARK): see the table"
                .to_owned(),
        );
    }

    // 2. Headers pivot reads, on the events whose names line up.
    let core_uuid = sim.core_uuid();
    let mut last_seq = 0u64;
    for (i, (exp, got)) in expected_events.iter().zip(&conn.events).enumerate() {
        if ev_name(exp) != got.name().unwrap_or_default() {
            continue;
        }
        let known = |h: &str| scenario.known.iter().any(|k| k.index == i && k.header == h);
        for &h in VALUE_HEADERS {
            if known(h) {
                continue;
            }
            let want = exp.get(h).map(|v| subst(v, &map));
            let have = got.get(h).map(str::to_owned);
            if want != have {
                problems.push(format!(
                    "event #{i} {}: {h} expected {want:?}, got {have:?}",
                    exp_labels[i]
                ));
            }
        }
        for &h in PRESENCE_HEADERS {
            if known(h) {
                continue;
            }
            let (want, have) = (exp.contains_key(h), got.get(h).is_some());
            if want != have {
                problems.push(format!(
                    "event #{i} {}: {h} expected {}, got {}",
                    exp_labels[i],
                    if want { "present" } else { "absent" },
                    if have { "present" } else { "absent" },
                ));
            }
        }
        if got.unique_id() != Some(a_id.as_str()) || got.get("Core-UUID") != Some(&core_uuid) {
            problems.push(format!("event #{i}: wrong Unique-ID or Core-UUID"));
        }
        if let Some(seq) = got
            .get("Event-Sequence")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if seq <= last_seq {
                problems.push(format!(
                    "event #{i}: Event-Sequence {seq} not above {last_seq}"
                ));
            }
            last_seq = seq;
        }
    }

    // 3. The B-leg of a bridge: its subscribed events, who hung up and why.
    let expected_b = cap.expected_b_events();
    let exp_b: Vec<String> = expected_b
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                ev_name(e),
                e.get("Hangup-Cause").map(String::as_str).unwrap_or("")
            )
        })
        .collect();
    let got_b: Vec<String> = conn
        .b_events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.name().unwrap_or_default(),
                e.get("Hangup-Cause").unwrap_or("")
            )
        })
        .collect();
    if exp_b != got_b {
        problems.push(format!(
            "B-leg events (name, Hangup-Cause) differ:\n{}",
            names_diff(&exp_b, &got_b)
        ));
    }
    for (i, (exp, got)) in expected_b.iter().zip(&conn.b_events).enumerate() {
        for h in ["Answer-State", "Other-Leg-Unique-ID"] {
            let want = exp.get(h).map(|v| subst(v, &map));
            if want.as_deref() != got.get(h) {
                problems.push(format!(
                    "B-leg event #{i} {}: {h} expected {want:?}, got {:?}",
                    exp_b[i],
                    got.get(h)
                ));
            }
        }
    }

    // 4. Command replies.
    let want_replies: Vec<String> = expected_replies.iter().map(|r| subst(r, &map)).collect();
    if want_replies != conn.replies {
        problems.push(format!(
            "replies differ:\n{}",
            names_diff(
                &want_replies
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>(),
                &conn
                    .replies
                    .iter()
                    .map(|r| format!("{r:?}"))
                    .collect::<Vec<_>>()
            )
        ));
    }

    sim.shutdown().await;
    assert!(
        problems.is_empty(),
        "{}: the simulator differs from FreeSWITCH:\n\n{}\n\nexpected vs got events:\n{}",
        cap.name,
        problems.join("\n"),
        names_diff(&exp_labels, &got_labels)
    );
}

// ---------------------------------------------------------------------------------------------
// One test per scenario
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn c01_json_all_answer_playback_speak_sendmsg_hangup() {
    run(Scenario {
        prefix: "01",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c02_plain_events_hangup_app() {
    run(Scenario {
        prefix: "02",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c03_play_and_get_digits_then_no_input() {
    run(Scenario {
        prefix: "03",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c04_record_with_time_limit() {
    run(Scenario {
        prefix: "04",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c05_bridge_answered_b_leg_hangs_up() {
    run(Scenario {
        prefix: "05",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c06a_busy_bridge_hangs_up_a_leg() {
    run(Scenario {
        prefix: "06a",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c06b_busy_bridge_with_continue_on_fail() {
    run(Scenario {
        prefix: "06b",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c07_caller_hangs_up_during_playback_then_dead_uuid() {
    run(Scenario {
        prefix: "07",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c08_uuid_break_break_all_and_uuid_kill() {
    // Real (scaled) time: the breaks and the kill must land while a playback runs.
    run(Scenario {
        prefix: "08",
        time_scale: 0.05,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c10_executes_nest_without_event_lock_and_queue_with_it() {
    // Real (scaled) time: the unlocked executes must arrive while the first one plays.
    run(Scenario {
        prefix: "10",
        time_scale: 0.1,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c13_xml_events_dtmf_terminates_playback_then_read() {
    run(Scenario {
        prefix: "13",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c14_caller_cancels_before_answer() {
    run(Scenario {
        prefix: "14",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}

#[tokio::test]
async fn c15_missing_file_bad_voice_unknown_app() {
    run(Scenario {
        prefix: "15",
        time_scale: 0.0,
        known: vec![],
    })
    .await;
}
