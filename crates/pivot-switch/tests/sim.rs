//! The simulator over real TCP, driven by a raw ESL client built on the frame codec: every
//! test checks what a client of FreeSWITCH would see (shapes and orders from the captures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use pivot_switch::esl::{Direction, EslEvent, Frame, FrameDecoder};
use pivot_switch::sim::{DialAnswer, NewCall, ScriptStep, SimConfig, Simulator};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

const WAIT: Duration = Duration::from_secs(5);

async fn sim(scale: f64) -> Simulator {
    Simulator::start(SimConfig {
        time_scale: scale,
        heartbeat_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn new_call(script: Vec<ScriptStep>, dial_answer: DialAnswer) -> NewCall {
    NewCall {
        to: "3004".into(),
        from: "user_sov2kt".into(),
        caller_id_name: "JoeFromIT".into(),
        caller_id_number: "+15551230000".into(),
        account_id: Some("acct-1".into()),
        script,
        dial_answer,
    }
}

struct Client {
    read: FramedRead<OwnedReadHalf, FrameDecoder>,
    write: OwnedWriteHalf,
    events: VecDeque<EslEvent>,
}

impl Client {
    async fn connect(sim: &Simulator) -> Client {
        let stream = TcpStream::connect(sim.esl_addr()).await.unwrap();
        let (r, w) = stream.into_split();
        let mut c = Client {
            read: FramedRead::new(r, FrameDecoder::new(Direction::FromServer)),
            write: w,
            events: VecDeque::new(),
        };
        let first = c.frame().await.unwrap();
        assert_eq!(first.content_type(), Some("auth/request"));
        c
    }

    async fn authed(sim: &Simulator) -> Client {
        let mut c = Client::connect(sim).await;
        assert_eq!(c.cmd("auth ClueCon").await, "+OK accepted");
        c
    }

    async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.read.next())
            .await
            .expect("timed out waiting for a frame")
            .map(|r| r.unwrap())
    }

    async fn send(&mut self, raw: &str) {
        self.write.write_all(raw.as_bytes()).await.unwrap();
    }

    /// The next reply; events read on the way are kept for `event`.
    async fn reply(&mut self) -> Frame {
        loop {
            let f = self.frame().await.expect("connection closed");
            if f.is_reply() {
                return f;
            }
            if let Some(ev) = parse_event(&f) {
                self.events.push_back(ev);
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\n\n")).await;
        self.reply().await.reply_text().unwrap().to_owned()
    }

    async fn api(&mut self, line: &str) -> String {
        self.send(&format!("api {line}\n\n")).await;
        let f = self.reply().await;
        assert_eq!(f.content_type(), Some("api/response"));
        String::from_utf8(f.body.to_vec()).unwrap()
    }

    async fn execute(
        &mut self,
        uuid: &str,
        app: &str,
        arg: &str,
        event_uuid: &str,
        lock: bool,
    ) -> String {
        let mut msg = format!(
            "sendmsg {uuid}\ncall-command: execute\nexecute-app-name: {app}\nEvent-UUID: {event_uuid}\n"
        );
        if !arg.is_empty() {
            msg.push_str(&format!("execute-app-arg: {arg}\n"));
        }
        if lock {
            msg.push_str("event-lock: true\n");
        }
        msg.push('\n');
        self.send(&msg).await;
        self.reply().await.reply_text().unwrap().to_owned()
    }

    async fn next_event(&mut self) -> EslEvent {
        if let Some(ev) = self.events.pop_front() {
            return ev;
        }
        loop {
            let f = self.frame().await.expect("connection closed");
            if let Some(ev) = parse_event(&f) {
                return ev;
            }
        }
    }

    /// Events up to and including the first that satisfies `stop`.
    async fn events_until(&mut self, stop: impl Fn(&EslEvent) -> bool) -> Vec<EslEvent> {
        let mut seen = Vec::new();
        loop {
            let ev = self.next_event().await;
            let done = stop(&ev);
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }
}

fn parse_event(f: &Frame) -> Option<EslEvent> {
    if f.content_type() != Some("text/event-json") {
        return None;
    }
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&f.body).unwrap();
    let mut body = None;
    let headers = v
        .into_iter()
        .filter_map(|(k, v)| {
            let s = v.as_str().unwrap_or_default().to_owned();
            if k == "_body" {
                body = Some(s);
                None
            } else {
                Some((k, s))
            }
        })
        .collect();
    Some(EslEvent::from_parts(headers, body))
}

fn is(ev: &EslEvent, name: &str) -> bool {
    ev.name() == Some(name)
}

fn names(evs: &[EslEvent]) -> Vec<String> {
    evs.iter()
        .map(|e| e.name().unwrap_or("").to_owned())
        .collect()
}

fn pos(evs: &[EslEvent], pred: impl Fn(&EslEvent) -> bool) -> usize {
    evs.iter().position(pred).expect("event not found")
}

/// A parked call with the client subscribed to everything.
async fn parked(sim: &Simulator, call: NewCall) -> (Client, String) {
    let mut c = Client::authed(sim).await;
    assert_eq!(
        c.cmd("event json ALL").await,
        "+OK event listener enabled json"
    );
    let id = sim.place_call(call);
    let evs = c.events_until(|e| is(e, "CHANNEL_PARK")).await;
    assert_eq!(evs.last().unwrap().unique_id(), Some(id.as_str()));
    (c, id)
}

#[tokio::test]
async fn auth_failure_matches_capture_00a_and_basics_match_00b() {
    let sim = sim(0.0).await;
    let mut c = Client::connect(&sim).await;
    assert_eq!(c.cmd("api status").await, "-ERR command not found");
    c.send("auth WrongPassword\n\n").await;
    let r = c.frame().await.unwrap();
    assert_eq!(r.reply_text(), Some("-ERR invalid"));
    let notice = c.frame().await.unwrap();
    assert_eq!(notice.content_type(), Some("text/disconnect-notice"));
    assert_eq!(
        &notice.body[..],
        b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    );
    assert!(
        c.frame().await.is_none(),
        "socket closed after a failed auth"
    );

    let mut c = Client::authed(&sim).await;
    assert_eq!(
        c.cmd("event json NOT_AN_EVENT").await,
        "-ERR no keywords supplied"
    );
    assert_eq!(c.cmd("noevents").await, "-ERR not listening for events");
    assert_eq!(
        c.cmd("events plain ALL").await,
        "+OK event listener enabled plain"
    );
    assert_eq!(c.cmd("nixevent HEARTBEAT").await, "+OK events nixed");
    assert_eq!(
        c.cmd("noevents").await,
        "+OK no longer listening for events"
    );
    assert_eq!(
        c.cmd("filter Event-Name CHANNEL_CREATE").await,
        "+OK filter added. [Event-Name]=[CHANNEL_CREATE]"
    );
    assert_eq!(
        c.cmd("filter delete Event-Name CHANNEL_CREATE").await,
        "+OK filter deleted. [Event-Name][CHANNEL_CREATE]"
    );
    assert_eq!(c.cmd("linger").await, "-ERR not controlling a session");
    assert_eq!(c.cmd("not_a_command").await, "-ERR command not found");
    assert_eq!(
        c.api("no_such_command foo").await,
        "-ERR no_such_command Command not found!\n"
    );
    assert_eq!(
        c.api("uuid_exists 00000000-0000-0000-0000-000000000000")
            .await,
        "false"
    );
    assert_eq!(c.api("show channels as json").await, "{\"row_count\": 0}\n");
    let r = c
        .cmd("sendmsg 00000000-0000-0000-0000-000000000000\ncall-command: hangup")
        .await;
    assert_eq!(
        r,
        "-ERR invalid session id [00000000-0000-0000-0000-000000000000]"
    );
    c.send("exit\n\n").await;
    assert_eq!(c.frame().await.unwrap().reply_text(), Some("+OK bye"));
    assert_eq!(
        c.frame().await.unwrap().content_type(),
        Some("text/disconnect-notice")
    );
    assert!(c.frame().await.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn placed_call_parks_with_freeswitch_headers() {
    let sim = sim(0.0).await;
    let mut c = Client::authed(&sim).await;
    assert_eq!(
        c.cmd("event json CHANNEL_CREATE CHANNEL_PARK").await,
        "+OK event listener enabled json"
    );
    let id = sim.place_call(new_call(vec![], DialAnswer::Answer));
    let create = c.next_event().await;
    assert!(is(&create, "CHANNEL_CREATE"));
    let park = c.next_event().await;
    assert!(is(&park, "CHANNEL_PARK"));
    let seq = |e: &EslEvent| e.get("Event-Sequence").unwrap().parse::<u64>().unwrap();
    assert!(seq(&park) > seq(&create));
    for (h, v) in [
        ("Unique-ID", id.as_str()),
        ("Core-UUID", sim.core_uuid().as_str()),
        ("Channel-State", "CS_EXECUTE"),
        ("Channel-Call-State", "RINGING"),
        ("Answer-State", "ringing"),
        ("Call-Direction", "inbound"),
        ("Caller-Caller-ID-Name", "JoeFromIT"),
        ("Caller-Caller-ID-Number", "+15551230000"),
        ("Caller-Destination-Number", "3004"),
        ("Caller-Username", "user_sov2kt"),
        ("variable_sip_from_user", "user_sov2kt"),
        ("variable_sip_to_user", "3004"),
        ("variable_sip_req_user", "3004"),
        ("variable_pivot_account_id", "acct-1"),
        ("variable_current_application", "park"),
    ] {
        assert_eq!(park.get(h), Some(v), "{h}");
    }
    for h in [
        "FreeSWITCH-Hostname",
        "FreeSWITCH-Switchname",
        "Event-Date-Timestamp",
        "variable_sip_from_host",
        "variable_sip_to_host",
    ] {
        assert!(park.get(h).is_some(), "{h} missing");
    }
    let view = sim.call(&id).unwrap();
    assert_eq!(view.state, "parked");
    assert_eq!(view.events[0].kind, "parked");
    sim.shutdown().await;
}

#[tokio::test]
async fn answer_and_playback_complete_with_their_application_uuid() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    assert_eq!(
        c.execute(&id, "answer", "", &format!("{id}:1:1"), true)
            .await,
        "+OK"
    );
    assert_eq!(
        c.execute(
            &id,
            "playback",
            "tone_stream://%(500,500,440);loops=2",
            &format!("{id}:1:2"),
            true
        )
        .await,
        "+OK"
    );
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application") == Some("playback")
        })
        .await;
    let order: Vec<String> = names(&evs)
        .into_iter()
        .filter(|n| n != "CHANNEL_CALLSTATE" && n != "CHANNEL_STATE")
        .collect();
    assert_eq!(
        order,
        [
            "CHANNEL_EXECUTE",
            "CHANNEL_ANSWER",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_EXECUTE",
            "PLAYBACK_START",
            "PLAYBACK_STOP",
            "CHANNEL_EXECUTE_COMPLETE"
        ]
    );
    let exec = &evs[pos(&evs, |e| {
        is(e, "CHANNEL_EXECUTE") && e.get("Application") == Some("playback")
    })];
    let done = evs.last().unwrap();
    assert_eq!(
        exec.get("Application-UUID"),
        Some(format!("{id}:1:2").as_str())
    );
    assert_eq!(
        done.get("Application-UUID"),
        Some(format!("{id}:1:2").as_str())
    );
    assert_eq!(done.get("Application-Response"), Some("FILE PLAYED"));
    assert_eq!(done.get("variable_playback_ms"), Some("2000"));
    let stop = &evs[pos(&evs, |e| is(e, "PLAYBACK_STOP"))];
    assert_eq!(stop.get("Playback-Status"), Some("done"));
    assert_eq!(
        stop.get("Playback-File-Path"),
        Some("tone_stream://%(500,500,440);loops=2")
    );
    assert!(
        stop.get("Application-UUID").is_none(),
        "PLAYBACK_* carry no Application-UUID"
    );

    c.execute(
        &id,
        "speak",
        "flite|kal|Hello there",
        &format!("{id}:1:3"),
        true,
    )
    .await;
    let evs = c.events_until(|e| is(e, "CHANNEL_EXECUTE_COMPLETE")).await;
    assert_eq!(
        evs.last().unwrap().get("Application-Response"),
        Some("_none_")
    );
    assert!(
        !evs.iter().any(|e| is(e, "PLAYBACK_START")),
        "speak sends no PLAYBACK_*"
    );

    c.send(&format!(
        "sendmsg {id}\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
    ))
    .await;
    assert_eq!(c.reply().await.reply_text(), Some("+OK"));
    let evs = c.events_until(|e| is(e, "CHANNEL_DESTROY")).await;
    let order: Vec<String> = names(&evs)
        .into_iter()
        .filter(|n| n != "CHANNEL_CALLSTATE" && n != "CHANNEL_STATE")
        .collect();
    assert_eq!(
        order,
        [
            "CHANNEL_HANGUP",
            "CHANNEL_UNPARK",
            "CHANNEL_EXECUTE_COMPLETE",
            "CHANNEL_HANGUP_COMPLETE",
            "CHANNEL_DESTROY"
        ]
    );
    let complete = &evs[pos(&evs, |e| is(e, "CHANNEL_HANGUP_COMPLETE"))];
    assert_eq!(
        complete.get("variable_hangup_cause"),
        Some("NORMAL_CLEARING")
    );
    assert!(complete.get("variable_billsec").is_some());

    let view = sim.call(&id).unwrap();
    assert_eq!(view.state, "hungup");
    let kinds: Vec<&str> = view.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["parked", "answered", "played", "spoke", "hangup"]);
    assert_eq!(
        view.events[1].app_uuid.as_deref(),
        Some(format!("{id}:1:1").as_str())
    );
    assert_eq!(view.events[2].duration_ms, Some(2000));
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["events"][3]["text"], "Hello there");
    assert_eq!(json["events"][2]["app_uuid"], format!("{id}:1:2"));
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_dtmf_fills_play_and_get_digits() {
    let sim = sim(0.0).await;
    let script = vec![ScriptStep {
        at_ms: 500,
        dtmf: Some("42#".into()),
        hangup: false,
        after_prompt: None,
    }];
    let (mut c, id) = parked(&sim, new_call(script, DialAnswer::Answer)).await;
    c.execute(&id, "answer", "", "a1", true).await;
    c.execute(
        &id,
        "play_and_get_digits",
        "1 4 3 5000 # tone_stream://%(1000,0,440) silence_stream://100 pin \\d+ 3000",
        "a2",
        true,
    )
    .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("a2")
        })
        .await;
    let digits: Vec<&str> = evs
        .iter()
        .filter(|e| is(e, "DTMF"))
        .map(|e| e.get("DTMF-Digit").unwrap())
        .collect();
    assert_eq!(digits, ["4", "2", "#"]);
    let done = evs.last().unwrap();
    assert_eq!(done.get("variable_pin"), Some("42"));
    assert_eq!(done.get("variable_read_result"), Some("success"));
    assert_eq!(done.get("variable_read_terminator_used"), Some("#"));
    assert_eq!(done.get("Application-Response"), Some("_none_"));

    // A second read with no input fails and never shows the first read's digits.
    c.execute(
        &id,
        "play_and_get_digits",
        "1 4 1 1000 # silence_stream://100 silence_stream://100 pin \\d+",
        "a3",
        true,
    )
    .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("a3")
        })
        .await;
    let done = evs.last().unwrap();
    assert_eq!(done.get("variable_read_result"), Some("failure"));
    assert_eq!(done.get("variable_pin"), None);

    let view = sim.call(&id).unwrap();
    let collected: Vec<_> = view
        .events
        .iter()
        .filter(|e| e.kind == "collected")
        .collect();
    assert_eq!(collected[0].digits.as_deref(), Some("42"));
    assert_eq!(collected[0].app_uuid.as_deref(), Some("a2"));
    assert_eq!(collected[1].result.as_deref(), Some("failure"));
    assert!(view.events.iter().any(|e| e.kind == "dtmf"));
    sim.shutdown().await;
}

#[tokio::test]
async fn caller_hangup_during_playback_is_hangup_then_playback_error() {
    let sim = sim(0.0).await;
    let script = vec![ScriptStep {
        at_ms: 1000,
        dtmf: None,
        hangup: true,
        after_prompt: None,
    }];
    let (mut c, id) = parked(&sim, new_call(script, DialAnswer::Answer)).await;
    c.execute(&id, "answer", "", "b1", true).await;
    c.execute(
        &id,
        "playback",
        "tone_stream://%(1000,0,350,440);loops=30",
        "b2",
        true,
    )
    .await;
    let evs = c.events_until(|e| is(e, "CHANNEL_DESTROY")).await;
    let hangup = pos(&evs, |e| is(e, "CHANNEL_HANGUP"));
    let stop = pos(&evs, |e| is(e, "PLAYBACK_STOP"));
    let done = pos(&evs, |e| {
        is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("b2")
    });
    assert!(hangup < stop && stop < done, "{:?}", names(&evs));
    assert_eq!(evs[hangup].get("Hangup-Cause"), Some("NORMAL_CLEARING"));
    assert_eq!(
        evs[done].get("Application-Response"),
        Some("PLAYBACK ERROR")
    );
    assert_eq!(evs[done].get("variable_playback_ms"), Some("1000"));
    // Capture 07: the dead uuid afterwards.
    let r = c.cmd(&format!("sendmsg {id}\ncall-command: hangup")).await;
    assert_eq!(r, format!("-ERR invalid session id [{id}]"));
    assert_eq!(
        c.api(&format!("uuid_kill {id}")).await,
        "-ERR No such channel!\n"
    );
    assert_eq!(c.api(&format!("uuid_exists {id}")).await, "false");
    let view = sim.call(&id).unwrap();
    assert_eq!(view.hangup_cause.as_deref(), Some("NORMAL_CLEARING"));
    assert_eq!(view.events.last().unwrap().kind, "hangup");
    sim.shutdown().await;
}

#[tokio::test]
async fn uuid_break_all_discards_the_queued_execute() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    c.execute(&id, "answer", "", "c1", true).await;
    // An endless tone, then a second playback queued behind it (event-lock).
    c.execute(
        &id,
        "playback",
        "tone_stream://%(1000,0,350);loops=-1",
        "c2",
        true,
    )
    .await;
    c.execute(&id, "playback", "tone_stream://%(1000,0,350)", "c3", true)
        .await;
    c.events_until(|e| is(e, "PLAYBACK_START")).await;
    assert_eq!(c.api(&format!("uuid_break {id} all")).await, "+OK\n");
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("c2")
        })
        .await;
    let stop = &evs[pos(&evs, |e| is(e, "PLAYBACK_STOP"))];
    assert_eq!(stop.get("Playback-Status"), Some("break"));
    assert_eq!(
        evs.last().unwrap().get("Application-Response"),
        Some("FILE PLAYED")
    );
    c.execute(&id, "playback", "silence_stream://10", "c4", true)
        .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("c4")
        })
        .await;
    assert!(
        !evs.iter().any(|e| e.get("Application-UUID") == Some("c3")),
        "the flushed execute never runs"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unlocked_executes_nest_and_complete_lifo() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    // The first blocks forever until broken; the second arrives while it runs.
    c.execute(
        &id,
        "playback",
        "tone_stream://%(1000,0,400);loops=-1",
        "n1",
        false,
    )
    .await;
    c.events_until(|e| is(e, "PLAYBACK_START")).await;
    c.execute(&id, "playback", "silence_stream://300", "n2", false)
        .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("n2")
        })
        .await;
    assert!(
        evs.iter()
            .any(|e| is(e, "CHANNEL_EXECUTE") && e.get("Application-UUID") == Some("n2"))
    );
    assert_eq!(c.api(&format!("uuid_break {id}")).await, "+OK\n");
    c.events_until(|e| {
        is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("n1")
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_app_hangs_up_without_execute_events() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    c.execute(&id, "no_such_app", "", "d1", true).await;
    let evs = c.events_until(|e| is(e, "CHANNEL_DESTROY")).await;
    assert!(!evs.iter().any(|e| e.get("Application-UUID") == Some("d1")));
    let hangup = &evs[pos(&evs, |e| is(e, "CHANNEL_HANGUP"))];
    assert_eq!(hangup.get("Hangup-Cause"), Some("DESTINATION_OUT_OF_ORDER"));
    assert_eq!(
        sim.call(&id).unwrap().hangup_cause.as_deref(),
        Some("DESTINATION_OUT_OF_ORDER")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn busy_bridge_without_continue_on_fail_hangs_up_a_first() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Busy)).await;
    c.execute(
        &id,
        "bridge",
        "sofia/external/2001@127.0.0.1:5091",
        "e1",
        true,
    )
    .await;
    let evs = c
        .events_until(|e| is(e, "CHANNEL_DESTROY") && e.unique_id() == Some(id.as_str()))
        .await;
    let a_hangup = pos(&evs, |e| {
        is(e, "CHANNEL_HANGUP") && e.unique_id() == Some(id.as_str())
    });
    let done = pos(&evs, |e| {
        is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("e1")
    });
    assert!(
        a_hangup < done,
        "06a: A's HANGUP before the bridge COMPLETE"
    );
    assert_eq!(evs[a_hangup].get("Hangup-Cause"), Some("USER_BUSY"));
    assert_eq!(
        evs[done].get("variable_originate_disposition"),
        Some("USER_BUSY")
    );
    assert_eq!(evs[done].get("variable_DIALSTATUS"), Some("BUSY"));
    assert!(
        evs.iter()
            .any(|e| is(e, "CHANNEL_HANGUP") && e.unique_id() != Some(id.as_str())),
        "the B-leg's own hangup is visible"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn busy_bridge_with_continue_on_fail_keeps_a_up() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Busy)).await;
    c.execute(&id, "set", "continue_on_fail=true", "f1", true)
        .await;
    c.execute(
        &id,
        "bridge",
        "sofia/external/2001@127.0.0.1:5091",
        "f2",
        true,
    )
    .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("f2")
        })
        .await;
    assert!(
        !evs.iter()
            .any(|e| is(e, "CHANNEL_HANGUP") && e.unique_id() == Some(id.as_str()))
    );
    let done = evs.last().unwrap();
    assert_eq!(
        done.get("variable_originate_disposition"),
        Some("USER_BUSY")
    );
    assert_eq!(done.get("Answer-State"), Some("ringing"));
    assert_eq!(c.api(&format!("uuid_exists {id}")).await, "true");
    let view = sim.call(&id).unwrap();
    let dialed = view.events.iter().find(|e| e.kind == "dialed").unwrap();
    assert_eq!(dialed.result.as_deref(), Some("busy"));
    assert_eq!(dialed.app_uuid.as_deref(), Some("f2"));
    sim.shutdown().await;
}

#[tokio::test]
async fn answered_bridge_bridges_then_unbridges() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    c.execute(
        &id,
        "bridge",
        "{origination_caller_id_number=1005}sofia/gateway/gw/15550001",
        "g1",
        true,
    )
    .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("g1")
        })
        .await;
    let bridge = pos(&evs, |e| is(e, "CHANNEL_BRIDGE"));
    let unbridge = pos(&evs, |e| is(e, "CHANNEL_UNBRIDGE"));
    assert!(bridge < unbridge);
    assert_eq!(evs[bridge].get("Bridge-A-Unique-ID"), Some(id.as_str()));
    assert_eq!(
        evs.last().unwrap().get("variable_last_bridge_hangup_cause"),
        Some("NORMAL_CLEARING")
    );
    let kinds: Vec<&str> = sim
        .call(&id)
        .unwrap()
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        ["parked", "dialed", "answered", "bridged", "unbridged"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bgapi_with_client_job_uuid_reports_background_job() {
    let sim = sim(0.0).await;
    let mut c = Client::authed(&sim).await;
    c.cmd("event json BACKGROUND_JOB").await;
    c.send("bgapi uuid_kill 00000000-0000-0000-0000-000000000000\nJob-UUID: my-job-1\n\n")
        .await;
    let r = c.reply().await;
    assert_eq!(r.reply_text(), Some("+OK Job-UUID: my-job-1"));
    assert_eq!(r.header("Job-UUID"), Some("my-job-1"));
    let ev = c.next_event().await;
    assert!(is(&ev, "BACKGROUND_JOB"));
    assert_eq!(ev.get("Job-UUID"), Some("my-job-1"));
    assert_eq!(ev.get("Job-Command"), Some("uuid_kill"));
    assert_eq!(ev.body(), Some("-ERR No such channel!\n"));

    // originate: a parked outbound leg with the chosen uuid.
    c.cmd("event json CHANNEL_PARK BACKGROUND_JOB").await;
    c.send("bgapi originate {origination_uuid=leg-1}sofia/external/2000@127.0.0.1 &park()\nJob-UUID: job-2\n\n")
        .await;
    c.reply().await;
    let evs = c.events_until(|e| is(e, "CHANNEL_PARK")).await;
    let job = evs.iter().find(|e| is(e, "BACKGROUND_JOB")).unwrap();
    assert_eq!(job.body(), Some("+OK leg-1\n"));
    assert_eq!(evs.last().unwrap().unique_id(), Some("leg-1"));
    assert_eq!(evs.last().unwrap().get("Call-Direction"), Some("outbound"));
    assert_eq!(
        c.api("originate sofia/external/busy-target &park()").await,
        "-ERR USER_BUSY\n"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn show_channels_as_json_lists_live_calls() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    let out = c.api("show channels as json").await;
    assert!(out.ends_with('\n'));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["row_count"], 1);
    let row = &v["rows"][0];
    assert_eq!(row["uuid"], id.as_str());
    assert_eq!(row["direction"], "inbound");
    assert_eq!(row["dest"], "3004");
    assert_eq!(row["cid_num"], "+15551230000");
    assert_eq!(row["cid_name"], "JoeFromIT");
    assert_eq!(row["state"], "CS_EXECUTE");
    assert_eq!(row["callstate"], "RINGING");
    assert!(
        row["created_epoch"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert!(row["name"].as_str().unwrap().starts_with("sofia/"));
    sim.shutdown().await;
}

#[tokio::test]
async fn hash_insert_ifempty_has_exactly_one_winner() {
    let sim = sim(0.0).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(Client::authed(&sim).await);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                c.api(&format!("hash insert_ifempty/esl_owner/call-1/node-{i}"))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap().as_str() {
            "+OK\n" => wins += 1,
            "-ERR key already exists\n" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    let mut c = Client::authed(&sim).await;
    let owner = c.api("hash select/esl_owner/call-1").await;
    assert!(owner.starts_with("node-"));
    assert_eq!(
        c.api("hash delete_ifmatch/esl_owner/call-1/nobody").await,
        "-ERR Doesn't match\n"
    );
    assert_eq!(
        c.api(&format!("hash delete_ifmatch/esl_owner/call-1/{owner}"))
            .await,
        "+OK\n"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn filters_narrow_and_command_log_records_owners() {
    let sim = sim(0.0).await;
    let mut c = Client::authed(&sim).await;
    c.cmd("event json CHANNEL_PARK HEARTBEAT").await;
    let first = sim.place_call(new_call(vec![], DialAnswer::Answer));
    c.events_until(|e| is(e, "CHANNEL_PARK")).await;
    c.cmd("filter variable_pivot_account_id acct-2").await;
    sim.place_call(new_call(vec![], DialAnswer::Answer));
    let mut other = new_call(vec![], DialAnswer::Answer);
    other.account_id = Some("acct-2".into());
    let second = sim.place_call(other);
    let ev = c.next_event().await;
    assert_eq!(
        ev.unique_id(),
        Some(second.as_str()),
        "only the filtered account"
    );

    c.execute(&first, "answer", "", &format!("{first}:7:1"), true)
        .await;
    c.api(&format!("uuid_break {first}")).await;
    let log = sim.command_log();
    let sent = log.iter().find(|l| l.kind == "sendmsg").unwrap();
    assert_eq!(sent.call_id.as_deref(), Some(first.as_str()));
    assert_eq!(
        sent.event_uuid.as_deref(),
        Some(format!("{first}:7:1").as_str())
    );
    assert_eq!(sent.app, "answer");
    let api = log.iter().find(|l| l.kind == "api").unwrap();
    assert_eq!(api.app, "uuid_break");
    assert_eq!(api.call_id.as_deref(), Some(first.as_str()));
    assert_eq!(api.connection, sent.connection);
    sim.shutdown().await;
}

#[tokio::test]
async fn restart_changes_core_uuid_and_drops_calls_and_connections() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    let before = sim.core_uuid();
    sim.drop_connections();
    assert!(c.frame().await.is_none(), "connection cut");
    let mut c = Client::authed(&sim).await;
    assert_eq!(
        c.api(&format!("uuid_exists {id}")).await,
        "true",
        "calls stay parked"
    );
    sim.restart();
    assert!(c.frame().await.is_none());
    assert_ne!(sim.core_uuid(), before);
    let mut c = Client::authed(&sim).await;
    assert_eq!(c.api(&format!("uuid_exists {id}")).await, "false");
    assert_eq!(sim.call(&id).unwrap().state, "hungup");
    sim.shutdown().await;
}

#[tokio::test]
async fn real_time_scale_sends_dtmf_and_heartbeats() {
    let sim = Simulator::start(SimConfig {
        time_scale: 0.01,
        heartbeat_interval: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    c.events_until(|e| is(e, "HEARTBEAT")).await;
    c.execute(&id, "set", "playback_terminators=5", "h0", true)
        .await;
    c.execute(
        &id,
        "playback",
        "tone_stream://%(1000,0,350);loops=-1",
        "h1",
        true,
    )
    .await;
    c.events_until(|e| is(e, "PLAYBACK_START")).await;
    assert!(sim.send_dtmf(&id, "5"));
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("h1")
        })
        .await;
    let stop = &evs[pos(&evs, |e| is(e, "PLAYBACK_STOP"))];
    assert_eq!(stop.get("Playback-Status"), Some("break"));
    assert_eq!(
        evs.last().unwrap().get("variable_playback_terminator_used"),
        Some("5")
    );
    assert!(sim.hangup(&id));
    let evs = c.events_until(|e| is(e, "CHANNEL_HANGUP")).await;
    // Media flowed (the playback pre-answered): a plain caller hang-up.
    assert_eq!(
        evs.last().unwrap().get("Hangup-Cause"),
        Some("NORMAL_CLEARING")
    );
    assert!(!sim.hangup(&id), "already over");

    // A call that only rang: the caller's hang-up is a CANCEL (capture 14).
    let other = sim.place_call(new_call(vec![], DialAnswer::Answer));
    c.events_until(|e| is(e, "CHANNEL_PARK") && e.unique_id() == Some(other.as_str()))
        .await;
    assert!(sim.hangup(&other));
    let evs = c
        .events_until(|e| is(e, "CHANNEL_HANGUP_COMPLETE") && e.unique_id() == Some(other.as_str()))
        .await;
    let done = evs.last().unwrap();
    assert_eq!(done.get("Hangup-Cause"), Some("ORIGINATOR_CANCEL"));
    assert_eq!(
        done.get("variable_sip_hangup_disposition"),
        Some("recv_cancel")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_digits_wait_for_the_next_app_instead_of_an_idle_park() {
    let sim = sim(0.01).await;
    let script = vec![ScriptStep {
        at_ms: 0,
        dtmf: Some("7#".into()),
        hangup: false,
        after_prompt: None,
    }];
    let (mut c, id) = parked(&sim, new_call(script, DialAnswer::Answer)).await;
    // The controller is slow: the digits are long due when the read starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.execute(
        &id,
        "read",
        "1 3 silence_stream://100 lab_read 6000 #",
        "r1",
        true,
    )
    .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application-UUID") == Some("r1")
        })
        .await;
    let done = evs.last().unwrap();
    assert_eq!(done.get("variable_lab_read"), Some("7"));
    assert_eq!(done.get("variable_read_result"), Some("success"));
    sim.shutdown().await;
}

#[test]
fn new_call_json_shape_matches_design() {
    let call: NewCall = serde_json::from_str(
        r#"{"to":"3004","from":"user_sov2kt","caller_id_name":"JoeFromIT",
        "caller_id_number":"+15551230000","script":[{"at_ms":1500,"dtmf":"1#"},
        {"at_ms":9000,"hangup":true}],"dial_answer":"no-answer"}"#,
    )
    .unwrap();
    assert_eq!(call.dial_answer, DialAnswer::NoAnswer);
    assert_eq!(call.script.len(), 2);
    assert!(call.script[1].hangup);
    assert!(call.account_id.is_none());
    let _ = Bytes::new();
}

/// Answers and records `secs` seconds to `path` on the call; the `record_ms` it reports.
async fn record_on(c: &mut Client, id: &str, path: &str, secs: u32) -> u64 {
    c.execute(id, "answer", "", &format!("{id}:r:1"), true)
        .await;
    c.execute(
        id,
        "record",
        &format!("{path} {secs}"),
        &format!("{id}:r:2"),
        true,
    )
    .await;
    let evs = c
        .events_until(|e| {
            is(e, "CHANNEL_EXECUTE_COMPLETE") && e.get("Application") == Some("record")
        })
        .await;
    evs.last()
        .unwrap()
        .get("variable_record_ms")
        .unwrap()
        .parse()
        .unwrap()
}

/// A one-shot HTTP server on a free port: reads one request (head and `Content-Length` body),
/// answers `response`, and hands back what it read.
async fn http_server(response: &'static str) -> (u16, tokio::task::JoinHandle<(String, Vec<u8>)>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(buf.len() < 64 * 1024, "request head too long");
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the end of the head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let len: usize = header(&head, "Content-Length").unwrap().parse().unwrap();
        assert!(len <= 2 << 20, "body too large: {len}");
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the end of the body");
            body.extend_from_slice(&chunk[..n]);
        }
        s.write_all(response.as_bytes()).await.unwrap();
        (head, body)
    });
    (port, task)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[tokio::test]
async fn http_put_uploads_a_wav_of_the_recording() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    let path = "/tmp/pivot-sim/rec-1.wav";
    let record_ms = record_on(&mut c, &id, path, 3).await;
    assert_eq!(record_ms, 3_000);

    let (port, server) = http_server("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n").await;
    let url = format!("http://127.0.0.1:{port}/rec.wav");
    c.send(&format!("bgapi http_put {url} {path}\nJob-UUID: up-1\n\n"))
        .await;
    assert_eq!(c.reply().await.reply_text(), Some("+OK Job-UUID: up-1"));
    let evs = c
        .events_until(|e| is(e, "BACKGROUND_JOB") && e.get("Job-UUID") == Some("up-1"))
        .await;
    let job = evs.last().unwrap();
    assert_eq!(job.get("Job-Command"), Some("http_put"));
    assert_eq!(job.body(), Some("+OK 201\n"));

    let (head, body) = server.await.unwrap();
    assert!(head.starts_with("PUT /rec.wav HTTP/1.1\r\n"), "{head}");
    assert_eq!(
        header(&head, "Host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(
        header(&head, "Content-Type"),
        Some("application/octet-stream")
    );
    let len: usize = header(&head, "Content-Length").unwrap().parse().unwrap();
    assert_eq!(body.len(), len);
    assert_eq!(&body[0..4], b"RIFF");
    assert_eq!(&body[8..16], b"WAVEfmt ");
    assert_eq!(le_u32(&body, 4) as usize, len - 8);
    assert_eq!(le_u32(&body, 24), 8_000, "8 kHz");
    assert_eq!(&body[36..40], b"data");
    // 16-bit mono at 8 kHz: 16 bytes per ms.
    assert_eq!(le_u32(&body, 40) as u64, record_ms * 16);
    assert_eq!(len as u64, 44 + record_ms * 16);
    assert!(body[44..].iter().all(|b| *b == 0), "silence");

    let view = sim.call(&id).unwrap();
    let up = view.events.iter().find(|e| e.kind == "uploaded").unwrap();
    assert_eq!(up.target.as_deref(), Some(url.as_str()));
    assert_eq!(up.result.as_deref(), Some("201"));
    assert_eq!(up.file.as_deref(), Some(path));
    let logged = sim
        .command_log()
        .into_iter()
        .find(|l| l.app == "http_put")
        .unwrap();
    assert_eq!(logged.kind, "bgapi");
    assert_eq!(logged.arg, format!("{url} {path}"));

    // The blocking `api` form answers the same way.
    let (port, server) = http_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(
        c.api(&format!(
            "http_put http://localhost:{port}/x/y.wav?k=v {path}"
        ))
        .await,
        "+OK 200\n"
    );
    let (head, _) = server.await.unwrap();
    assert!(head.starts_with("PUT /x/y.wav?k=v HTTP/1.1\r\n"), "{head}");
    sim.shutdown().await;
}

#[tokio::test]
async fn http_put_failures_are_refused_through_the_client() {
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    let path = "/tmp/pivot-sim/rec-2.wav";
    record_on(&mut c, &id, path, 1).await;

    let (tx, mut events) = tokio::sync::mpsc::channel(1024);
    let mut config = pivot_switch::SwitchConfig::new("fs1", sim.esl_addr().to_string(), "ClueCon");
    config.reply_timeout = Duration::from_secs(15);
    let client = pivot_switch::SwitchClient::start(config, tx);
    loop {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(ev, pivot_switch::SwitchEvent::SwitchUp { .. }) {
            break;
        }
    }
    let refused = |r: Result<String, pivot_switch::SwitchError>| match r {
        Err(pivot_switch::SwitchError::Refused(text)) => text,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let (port, server) =
        http_server("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
    let text = refused(
        client
            .bgapi(&format!("http_put http://127.0.0.1:{port}/rec.wav {path}"))
            .await,
    );
    assert_eq!(text, "-ERR 500 Internal Server Error");
    server.await.unwrap();
    let view = sim.call(&id).unwrap();
    let up = view.events.iter().find(|e| e.kind == "uploaded").unwrap();
    assert_eq!(up.result.as_deref(), Some("500"));

    let text = refused(
        client
            .bgapi("http_put http://127.0.0.1:9/rec.wav /tmp/pivot-sim/never-recorded.wav")
            .await,
    );
    assert_eq!(
        text,
        "-ERR 0 /tmp/pivot-sim/never-recorded.wav does not exist"
    );

    let text = refused(
        client
            .bgapi(&format!("http_put https://127.0.0.1/rec.wav {path}"))
            .await,
    );
    assert!(
        text.starts_with("-ERR 0 ") && text.contains("plain http"),
        "{text}"
    );

    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let text = refused(
        client
            .bgapi(&format!(
                "http_put http://127.0.0.1:{closed}/rec.wav {path}"
            ))
            .await,
    );
    assert!(text.starts_with("-ERR 0 connect to 127.0.0.1:"), "{text}");

    let text = refused(client.api("http_put only-one-argument").await);
    assert!(text.starts_with("-ERR USAGE:"), "{text}");
    client.shutdown();
    sim.shutdown().await;
}

#[tokio::test]
async fn a_blocking_http_put_stalls_only_its_own_connection() {
    use tokio::io::AsyncReadExt;
    let sim = sim(0.0).await;
    let (mut c, id) = parked(&sim, new_call(vec![], DialAnswer::Answer)).await;
    let path = "/tmp/pivot-sim/rec-3.wav";
    record_on(&mut c, &id, path, 1).await;

    // A server that takes the request and then hangs up without a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut chunk = [0u8; 4096];
        let _ = s.read(&mut chunk).await.unwrap();
        released.await.unwrap();
    });
    c.send(&format!(
        "api http_put http://127.0.0.1:{port}/rec.wav {path}\n\n"
    ))
    .await;

    let mut other = Client::authed(&sim).await;
    assert_eq!(other.api("uuid_exists nope").await, "false");
    assert_eq!(sim.call(&id).unwrap().state, "answered");

    release.send(()).unwrap();
    server.await.unwrap();
    let reply = c.reply().await;
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    assert!(text.starts_with("-ERR 0 "), "{text}");
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
    sim.shutdown().await;
}
