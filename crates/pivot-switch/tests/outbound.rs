//! Outbound socket mode against the simulator, end to end over TCP: the simulated FreeSWITCH
//! runs `socket <pivot> async full` and hands each call to the [`OutboundServer`] on its own
//! connection; the engine sees the same typed events as with the inbound client.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::BytesMut;
use pivot_switch::esl::{Direction, EslEvent, Frame, FrameDecoder};
use pivot_switch::sim::{NewCall, ScriptStep, SimConfig, Simulator};
use pivot_switch::{
    CallInfo, Command, CommandId, OutboundConfig, OutboundServer, Outcome, SwitchError, SwitchEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

struct Harness {
    sim: Simulator,
    server: OutboundServer,
    events: mpsc::Receiver<SwitchEvent>,
}

impl Harness {
    async fn new(time_scale: f64) -> Harness {
        let sim = Simulator::start(SimConfig {
            esl_listen: "127.0.0.1:0".parse().unwrap(),
            password: "ClueCon".into(),
            time_scale,
            heartbeat_interval: Duration::from_secs(20),
            hostname: "sim".into(),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let (tx, events) = mpsc::channel(1024);
        let mut config = OutboundConfig::new("out1", "127.0.0.1:0".parse().unwrap());
        config.reply_timeout = Duration::from_secs(5);
        let server = OutboundServer::bind(config, tx).await.unwrap();
        Harness {
            sim,
            server,
            events,
        }
    }

    /// The next event matching `want`, skipping others.
    async fn next(&mut self, want: impl Fn(&SwitchEvent) -> bool) -> SwitchEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("timed out waiting for an event")
                .expect("event channel closed");
            if want(&event) {
                return event;
            }
        }
    }

    /// Every event until `last` matches (included).
    async fn until(&mut self, last: impl Fn(&SwitchEvent) -> bool) -> Vec<SwitchEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("timed out waiting for an event")
                .expect("event channel closed");
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    async fn call(&mut self, call: NewCall) -> CallInfo {
        let id = self.sim.place_socket_call(call, self.server.local_addr());
        match self
            .next(|e| matches!(e, SwitchEvent::Parked(info) if info.call_id == id))
            .await
        {
            SwitchEvent::Parked(info) => info,
            _ => unreachable!(),
        }
    }

    async fn completion(&mut self, id: &CommandId) -> Outcome {
        match self
            .next(|e| matches!(e, SwitchEvent::Completed { command_id, .. } if command_id == id))
            .await
        {
            SwitchEvent::Completed { outcome, .. } => outcome,
            _ => unreachable!(),
        }
    }

    async fn run(&mut self, call_id: &str, seq: u64, command: Command) -> Outcome {
        let id = CommandId::new(call_id, 1, seq);
        self.server.execute(call_id, &id, &command).await.unwrap();
        self.completion(&id).await
    }

    async fn hangup_of(&mut self, call_id: &str) -> String {
        match self
            .next(|e| matches!(e, SwitchEvent::Hangup { call_id: c, .. } if c == call_id))
            .await
        {
            SwitchEvent::Hangup { cause, .. } => cause,
            _ => unreachable!(),
        }
    }

    /// Waits until no connection is open any more (the linger ran out and FreeSWITCH closed).
    async fn all_closed(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.server.connections() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "still connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn caller(script: Vec<ScriptStep>) -> NewCall {
    NewCall {
        to: "3004".into(),
        from: "user_sov2kt".into(),
        caller_id_name: "JoeFromIT".into(),
        caller_id_number: "+15551230000".into(),
        account_id: Some("acc-1".into()),
        script,
        dial_answer: Default::default(),
    }
}

fn play(media: &str) -> Command {
    Command::Play {
        media: media.into(),
        loops: 1,
        terminators: "#".into(),
    }
}

fn speak(text: &str) -> Command {
    Command::Speak {
        engine: "flite".into(),
        voice: "kal".into(),
        text: text.into(),
        terminators: String::new(),
    }
}

#[tokio::test]
async fn a_socket_call_is_offered_answered_spoken_and_hung_up() {
    let mut h = Harness::new(0.0).await;
    let info = h.call(caller(vec![])).await;
    assert_eq!(info.switch, "out1");
    assert_eq!(info.to_user, "3004");
    assert_eq!(info.from_user, "user_sov2kt");
    assert_eq!(info.caller_id_name, "JoeFromIT");
    assert_eq!(info.caller_id_number, "+15551230000");
    assert_eq!(info.direction, "inbound");
    assert_eq!(info.core_uuid, h.sim.core_uuid());
    assert_eq!(
        info.variables.get("account_id").map(String::as_str),
        Some("acc-1")
    );
    assert!(!info.answered);
    let call = info.call_id;
    assert_eq!(h.run(&call, 1, Command::Answer).await, Outcome::Done);
    assert_eq!(
        h.run(&call, 2, play("tone_stream://%(100,100,440)")).await,
        Outcome::Done
    );
    assert_eq!(
        h.run(&call, 3, speak("Outbound socket says hello")).await,
        Outcome::Done
    );
    // `api` and `bgapi` work on the call's connection (`full`), and its own BACKGROUND_JOB
    // reaches it.
    let account = h
        .server
        .api(&call, &format!("uuid_getvar {call} pivot_account_id"))
        .await
        .unwrap();
    assert_eq!(account, "acc-1");
    let exists = h
        .server
        .bgapi(&call, &format!("uuid_exists {call}"))
        .await
        .unwrap();
    assert_eq!(exists, "true");
    h.server.hangup(&call, "NORMAL_CLEARING").await.unwrap();
    assert_eq!(h.hangup_of(&call).await, "NORMAL_CLEARING");
    // Everything went on one connection, `sendmsg` without a uuid addressed the call.
    let log = h.sim.command_log();
    let sendmsgs: Vec<_> = log.iter().filter(|c| c.kind == "sendmsg").collect();
    // answer, set + playback, set + speak, hangup.
    assert_eq!(sendmsgs.len(), 6, "{log:?}");
    assert!(sendmsgs.iter().all(|c| c.call_id.as_deref() == Some(&call)));
    assert!(log.iter().all(|c| c.connection == log[0].connection));
    let ids: Vec<String> = sendmsgs
        .iter()
        .filter_map(|c| c.event_uuid.clone())
        .filter(|id| !id.contains('/'))
        .collect();
    assert_eq!(ids, [1, 2, 3].map(|s| format!("{call}:1:{s}")));
    h.all_closed().await;
    assert_eq!(h.sim.call(&call).unwrap().state, "hungup");
    // Once the connection closed, the call is unknown to the server.
    assert!(matches!(
        h.server.hangup(&call, "NORMAL_CLEARING").await,
        Err(SwitchError::NotConnected(_))
    ));
}

#[tokio::test]
async fn a_caller_hanging_up_during_playback_completes_it_as_hung_up() {
    let mut h = Harness::new(1.0).await;
    let hangup = ScriptStep {
        at_ms: 300,
        dtmf: None,
        hangup: true,
        after_prompt: None,
    };
    let call = h.call(caller(vec![hangup])).await.call_id;
    let id = CommandId::new(&call, 1, 1);
    h.server
        .execute(
            &call,
            &id,
            &play("http_cache://https://media.example.com/long.wav"),
        )
        .await
        .unwrap();
    let seen = h.until(|e| matches!(e, SwitchEvent::Hangup { .. })).await;
    let completed = seen.iter().find_map(|e| match e {
        SwitchEvent::Completed {
            command_id,
            outcome,
            ..
        } if *command_id == id => Some(outcome.clone()),
        _ => None,
    });
    assert_eq!(
        completed,
        Some(Outcome::HungUp {
            cause: "NORMAL_CLEARING".into()
        }),
        "{seen:?}"
    );
    assert!(matches!(
        seen.last(),
        Some(SwitchEvent::Hangup { cause, .. }) if cause == "NORMAL_CLEARING"
    ));
}

#[tokio::test]
async fn lingering_keeps_the_final_events_and_reports_the_hangup_once() {
    // time_scale 0.01: the 10 s linger lasts 100 ms.
    let mut h = Harness::new(0.01).await;
    let call = h.call(caller(vec![])).await.call_id;
    assert_eq!(h.run(&call, 1, Command::Answer).await, Outcome::Done);
    // Two prompts queued, then the hang-up: the first is cut, the second never runs; both
    // must still complete, before the Hangup, although FreeSWITCH said "linger" by then.
    let first = CommandId::new(&call, 1, 2);
    let second = CommandId::new(&call, 1, 3);
    // 30 s of tone: 300 ms at this scale.
    let long = play("tone_stream://%(1000,0,350,440);loops=30");
    h.server.execute(&call, &first, &long).await.unwrap();
    h.server.execute(&call, &second, &long).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A hang-up from the switch side now (a queued `sendmsg hangup` would wait its turn).
    h.server
        .api(&call, &format!("uuid_kill {call}"))
        .await
        .unwrap();
    let seen = h.until(|e| matches!(e, SwitchEvent::Hangup { .. })).await;
    for id in [&first, &second] {
        assert!(
            seen.iter().any(|e| matches!(
                e,
                SwitchEvent::Completed { command_id, outcome: Outcome::HungUp { .. }, .. }
                    if command_id == id
            )),
            "{id} not completed: {seen:?}"
        );
    }
    // During the linger the call is over for the engine: new commands are refused.
    let late = CommandId::new(&call, 1, 4);
    let refused = h.server.execute(&call, &late, &Command::Answer).await;
    assert!(refused.is_err(), "{refused:?}");
    h.all_closed().await;
    // Nothing more after the connection closed: no second Hangup, no stray completion.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(event) = h.events.try_recv() {
        assert!(
            !matches!(
                event,
                SwitchEvent::Hangup { .. } | SwitchEvent::Completed { .. }
            ),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn two_calls_run_on_two_connections_at_once() {
    let mut h = Harness::new(0.01).await;
    let a = h.call(caller(vec![])).await.call_id;
    let mut other = caller(vec![]);
    other.to = "3005".into();
    other.account_id = Some("acc-2".into());
    let b = h.call(other).await;
    assert_eq!(b.to_user, "3005");
    assert_eq!(
        b.variables.get("account_id").map(String::as_str),
        Some("acc-2")
    );
    let b = b.call_id;
    assert_ne!(a, b);
    assert_eq!(h.server.connections(), 2);
    let (ia, ib) = (CommandId::new(&a, 1, 1), CommandId::new(&b, 1, 1));
    h.server
        .execute(&a, &ia, &play("tone_stream://%(1000,0,440)"))
        .await
        .unwrap();
    h.server
        .execute(&b, &ib, &speak("the other call"))
        .await
        .unwrap();
    let mut done = Vec::new();
    while done.len() < 2 {
        if let SwitchEvent::Completed {
            call_id,
            command_id,
            outcome,
        } = h.next(|e| matches!(e, SwitchEvent::Completed { .. })).await
        {
            assert_eq!(outcome, Outcome::Done);
            assert!(command_id.as_str().starts_with(&call_id));
            done.push(call_id);
        }
    }
    done.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(done, both);
    // Each call's commands went on its own connection.
    let log = h.sim.command_log();
    let conn_of = |call: &str| {
        log.iter()
            .find(|c| c.call_id.as_deref() == Some(call))
            .map(|c| c.connection)
            .unwrap()
    };
    assert_ne!(conn_of(&a), conn_of(&b));
    h.server.hangup(&a, "NORMAL_CLEARING").await.unwrap();
    assert_eq!(h.hangup_of(&a).await, "NORMAL_CLEARING");
    // b is untouched by a's hang-up.
    assert_eq!(h.run(&b, 2, Command::Answer).await, Outcome::Done);
    h.sim.hangup(&b);
    assert_eq!(h.hangup_of(&b).await, "NORMAL_CLEARING");
    h.all_closed().await;
}

#[tokio::test]
async fn shutting_the_server_down_ends_its_calls() {
    let mut h = Harness::new(0.0).await;
    let call = h.call(caller(vec![])).await.call_id;
    let id = CommandId::new(&call, 1, 1);
    h.server
        .execute(&call, &id, &Command::Answer)
        .await
        .unwrap();
    assert_eq!(h.completion(&id).await, Outcome::Done);
    h.server.shutdown();
    assert_eq!(h.hangup_of(&call).await, "NORMAL_CLEARING");
    h.all_closed().await;
    // The simulated FreeSWITCH saw its controller go: `socket` returned, the call hung up.
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.sim.call(&call).unwrap().state != "hungup" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn nothing_listening_means_the_socket_app_returns_and_the_call_ends() {
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = free.local_addr().unwrap();
    drop(free);
    let call = sim.place_socket_call(caller(vec![]), target);
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.call(&call).unwrap().state != "hungup" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The simulator's side on the wire, read by a bare controller: nothing before `connect`; the
/// reply is the URL-encoded channel data; then, at hang-up with `linger`, the linger notice
/// after CHANNEL_HANGUP_COMPLETE, the disconnect notice, EOF — and never CHANNEL_DESTROY.
#[tokio::test]
async fn the_simulator_speaks_outbound_esl_like_capture_11() {
    let sim = Simulator::start(SimConfig {
        time_scale: 0.01,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let call = sim.place_socket_call(caller(vec![]), listener.local_addr().unwrap());
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut decoder = FrameDecoder::new(Direction::FromServer);
    let mut buf = BytesMut::new();
    // FreeSWITCH speaks only after `connect`.
    let mut probe = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await;
    assert!(early.is_err(), "nothing before connect");
    let mut frames = Vec::new();
    async fn next_frame(
        stream: &mut tokio::net::TcpStream,
        decoder: &mut FrameDecoder,
        buf: &mut BytesMut,
    ) -> Option<Frame> {
        loop {
            if let Some(frame) = decoder.decode(buf).unwrap() {
                return Some(frame);
            }
            let n = tokio::time::timeout(WAIT, stream.read_buf(buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }
    for command in ["connect", "myevents json", "linger 10"] {
        stream
            .write_all(format!("{command}\n\n").as_bytes())
            .await
            .unwrap();
        loop {
            let frame = next_frame(&mut stream, &mut decoder, &mut buf)
                .await
                .unwrap();
            let reply = frame.is_reply();
            frames.push(frame);
            if reply {
                break;
            }
        }
    }
    let connect = frames
        .iter()
        .find(|f| f.header("Socket-Mode").is_some())
        .unwrap();
    assert_eq!(connect.header("Reply-Text"), Some("%2BOK%0A"));
    assert_eq!(connect.header("Control"), Some("full"));
    assert_eq!(connect.headers.iter().last(), Some(("Control", "full")));
    let data = EslEvent::from_encoded_headers(&connect.headers).unwrap();
    assert_eq!(data.name(), Some("CHANNEL_DATA"));
    assert_eq!(data.unique_id(), Some(call.as_str()));
    assert_eq!(data.get("Caller-Caller-ID-Number"), Some("+15551230000"));
    assert_eq!(data.variable("current_application"), Some("socket"));
    let last = frames.last().unwrap();
    assert_eq!(last.reply_text(), Some("+OK will linger 10 seconds"));
    stream
        .write_all(b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n")
        .await
        .unwrap();
    let mut after = Vec::new();
    while let Some(frame) = next_frame(&mut stream, &mut decoder, &mut buf).await {
        after.push(frame);
    }
    let names: Vec<String> = after
        .iter()
        .map(|f| match EslEvent::from_frame(f).unwrap() {
            Some(event) => event.name().unwrap_or_default().to_owned(),
            None => format!(
                "{}:{}",
                f.content_type().unwrap_or_default(),
                f.header("Content-Disposition")
                    .or_else(|| f.reply_text())
                    .unwrap_or_default()
            ),
        })
        .collect();
    let at = |name: &str| names.iter().position(|n| n == name).unwrap();
    assert_eq!(names[0], "command/reply:+OK", "{names:?}");
    assert!(
        at("CHANNEL_HANGUP") < at("CHANNEL_HANGUP_COMPLETE"),
        "{names:?}"
    );
    assert_eq!(
        &names[names.len() - 2..],
        [
            "text/disconnect-notice:linger",
            "text/disconnect-notice:disconnect"
        ],
        "{names:?}"
    );
    assert_eq!(at("CHANNEL_HANGUP_COMPLETE"), names.len() - 3, "{names:?}");
    assert!(!names.iter().any(|n| n == "CHANNEL_DESTROY"), "{names:?}");
    // Only this channel's events came.
    for frame in &after {
        if let Some(event) = EslEvent::from_frame(frame).unwrap() {
            assert_eq!(event.unique_id(), Some(call.as_str()));
        }
    }
    let linger = &after[after.len() - 2];
    assert_eq!(linger.header("Linger-Time"), Some("10"));
    assert_eq!(
        linger.header("Controlled-Session-UUID"),
        Some(call.as_str())
    );
    // And the channel is destroyed once the connection is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.call(&call).unwrap().state != "hungup" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Against FreeSWITCH's own bytes (capture 11), delivered in a worse order than FreeSWITCH
/// uses: the `linger` notice first, then the hang-up events, then `disconnect`. The linger
/// notice must not end the call's processing: the pending command and the Hangup carry the
/// cause of the events that came after it.
#[tokio::test]
async fn events_after_the_linger_notice_are_not_lost() {
    const CAPTURE_11: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/esl-captures/11-outbound-socket-async-full.s2c.raw"
    );
    let raw = std::fs::read(CAPTURE_11).unwrap();
    let mut buf = BytesMut::from(&raw[..]);
    let mut decoder = FrameDecoder::new(Direction::FromServer);
    let mut captured = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        captured.push(frame);
    }
    let event_frame = |name: &str| {
        let mut frame = captured
            .iter()
            .find(|f| {
                EslEvent::from_frame(f)
                    .unwrap()
                    .is_some_and(|e| e.name() == Some(name))
            })
            .unwrap()
            .clone();
        let body = String::from_utf8(frame.body.to_vec()).unwrap();
        frame.body = body.replace("NORMAL_CLEARING", "USER_BUSY").into();
        frame
    };
    let notice = |disposition: &str| {
        captured
            .iter()
            .find(|f| f.header("Content-Disposition") == Some(disposition))
            .unwrap()
            .clone()
    };
    let connect_reply = captured[0].clone();
    let (linger, disconnect) = (notice("linger"), notice("disconnect"));
    let hangup = event_frame("CHANNEL_HANGUP");
    let hangup_complete = event_frame("CHANNEL_HANGUP_COMPLETE");

    let (tx, mut events) = mpsc::channel(64);
    let server = OutboundServer::bind(
        OutboundConfig::new("fs1", "127.0.0.1:0".parse().unwrap()),
        tx,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let fake_switch = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut decoder = FrameDecoder::new(Direction::FromClient);
        let mut buf = BytesMut::new();
        let mut commands = Vec::new();
        // connect, myevents, linger, event, sendmsg (the engine's answer).
        for _ in 0..5 {
            let command = loop {
                if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                    break frame;
                }
                assert!(stream.read_buf(&mut buf).await.unwrap() > 0);
            };
            let reply = if commands.is_empty() {
                connect_reply.to_bytes()
            } else {
                "Content-Type: command/reply\nReply-Text: +OK\n\n".into()
            };
            commands.push(command.line.unwrap_or_default());
            stream.write_all(&reply).await.unwrap();
        }
        for frame in [linger, hangup, hangup_complete, disconnect] {
            stream.write_all(&frame.to_bytes()).await.unwrap();
        }
        stream.shutdown().await.unwrap();
        commands
    });
    let SwitchEvent::Parked(info) = next_event(&mut events).await else {
        panic!("first event is not Parked");
    };
    let call = info.call_id;
    assert_eq!(call, "e3067e5e-e3fc-4e3f-a239-f7ffd5785d4f");
    let id = CommandId::new(&call, 1, 1);
    server.execute(&call, &id, &Command::Answer).await.unwrap();
    let commands = fake_switch.await.unwrap();
    assert_eq!(
        commands[..4],
        [
            "connect",
            "myevents json",
            "linger 10",
            "event json BACKGROUND_JOB CHANNEL_EXECUTE_COMPLETE PLAYBACK_START PLAYBACK_STOP \
             RECORD_START RECORD_STOP"
        ]
    );
    assert_eq!(commands[4], "sendmsg");
    let completed = next_event(&mut events).await;
    assert_eq!(
        completed,
        SwitchEvent::Completed {
            call_id: call.clone(),
            command_id: id,
            outcome: Outcome::HungUp {
                cause: "USER_BUSY".into()
            }
        }
    );
    assert_eq!(
        next_event(&mut events).await,
        SwitchEvent::Hangup {
            call_id: call,
            cause: "USER_BUSY".into()
        }
    );
}

async fn next_event(events: &mut mpsc::Receiver<SwitchEvent>) -> SwitchEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap()
}
