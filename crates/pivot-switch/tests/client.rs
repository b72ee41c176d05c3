//! The ESL client against the simulator, end to end over TCP: the same code path as against
//! FreeSWITCH. Calls, commands and their outcomes, caller behaviour, disconnects, reconnects,
//! restarts and several switches at once.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pivot_switch::sim::{DialAnswer, NewCall, ScriptStep, SimConfig, Simulator};
use pivot_switch::{
    CallInfo, Command, CommandId, Outcome, ReadResult, SwitchClient, SwitchConfig, SwitchError,
    SwitchEvent,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

async fn simulator(time_scale: f64) -> Simulator {
    Simulator::start(SimConfig {
        esl_listen: "127.0.0.1:0".parse().unwrap(),
        password: "ClueCon".into(),
        time_scale,
        heartbeat_interval: Duration::from_secs(20),
        hostname: "sim".into(),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

struct Harness {
    sim: Simulator,
    client: SwitchClient,
    events: mpsc::Receiver<SwitchEvent>,
}

impl Harness {
    async fn new(time_scale: f64) -> Harness {
        let sim = simulator(time_scale).await;
        let (tx, events) = mpsc::channel(1024);
        let client = SwitchClient::start(config("fs1", &sim), tx);
        let mut harness = Harness {
            sim,
            client,
            events,
        };
        let up = harness
            .next(|e| matches!(e, SwitchEvent::SwitchUp { .. }))
            .await;
        assert!(matches!(
            up,
            SwitchEvent::SwitchUp {
                restarted: false,
                ..
            }
        ));
        harness
    }

    /// The next event matching `want`, skipping others (heartbeats, answers...).
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

    async fn call(&mut self, call: NewCall) -> CallInfo {
        let id = self.sim.place_call(call);
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
        self.client.execute(call_id, &id, &command).await.unwrap();
        self.completion(&id).await
    }
}

fn config(name: &str, sim: &Simulator) -> SwitchConfig {
    let mut config = SwitchConfig::new(name, sim.esl_addr().to_string(), "ClueCon");
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config.reply_timeout = Duration::from_secs(5);
    config
}

fn caller(script: Vec<ScriptStep>) -> NewCall {
    NewCall {
        to: "3004".into(),
        from: "user_sov2kt".into(),
        caller_id_name: "JoeFromIT".into(),
        caller_id_number: "+15551230000".into(),
        account_id: Some("acc-1".into()),
        script,
        dial_answer: DialAnswer::Answer,
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

fn dtmf_at(at_ms: u64, digits: &str) -> ScriptStep {
    ScriptStep {
        at_ms,
        dtmf: Some(digits.into()),
        hangup: false,
        after_prompt: None,
    }
}

fn hangup_at(at_ms: u64) -> ScriptStep {
    ScriptStep {
        at_ms,
        dtmf: None,
        hangup: true,
        after_prompt: None,
    }
}

#[tokio::test]
async fn a_parked_call_is_offered_with_who_called_whom() {
    let mut h = Harness::new(0.0).await;
    let info = h.call(caller(vec![])).await;
    assert_eq!(info.switch, "fs1");
    assert_eq!(info.to_user, "3004");
    assert_eq!(info.from_user, "user_sov2kt");
    assert_eq!(info.caller_id_name, "JoeFromIT");
    assert_eq!(info.caller_id_number, "+15551230000");
    assert_eq!(info.core_uuid, h.sim.core_uuid());
    assert_eq!(
        info.variables.get("account_id").map(String::as_str),
        Some("acc-1")
    );
    assert!(!info.answered);
}

#[tokio::test]
async fn answer_play_speak_and_hangup_complete_in_order_with_their_ids() {
    let mut h = Harness::new(0.0).await;
    let call = h.call(caller(vec![])).await.call_id;
    assert_eq!(h.run(&call, 1, Command::Answer).await, Outcome::Done);
    assert_eq!(
        h.run(&call, 2, play("tone_stream://%(100,100,440)")).await,
        Outcome::Done
    );
    assert_eq!(
        h.run(&call, 3, speak("Welcome to pivot")).await,
        Outcome::Done
    );
    h.client.hangup(&call, "NORMAL_CLEARING").await.unwrap();
    let cause = match h.next(|e| matches!(e, SwitchEvent::Hangup { .. })).await {
        SwitchEvent::Hangup { cause, .. } => cause,
        _ => unreachable!(),
    };
    assert_eq!(cause, "NORMAL_CLEARING");
    // The simulator saw each execute with the Event-UUID that fences it.
    let ids: Vec<String> = h
        .sim
        .command_log()
        .into_iter()
        .filter_map(|c| c.event_uuid)
        .filter(|id| id.starts_with(&call) && !id.contains('/'))
        .collect();
    assert_eq!(ids, [1, 2, 3].map(|s| format!("{call}:1:{s}")));
}

#[tokio::test]
async fn digits_come_from_play_and_get_digits() {
    let mut h = Harness::new(0.01).await;
    let call = h.call(caller(vec![dtmf_at(200, "42#")])).await.call_id;
    let outcome = h
        .run(
            &call,
            1,
            Command::Collect {
                prompt: "silence_stream://100".into(),
                min_digits: 1,
                max_digits: 4,
                tries: 1,
                timeout_ms: 5000,
                digit_timeout_ms: 3000,
                terminators: "#".into(),
                variable: "pivot_digits_1".into(),
            },
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Digits {
            digits: "42".into(),
            terminator: Some('#'),
            result: ReadResult::Success
        }
    );
}

#[tokio::test]
async fn a_caller_hanging_up_during_playback_completes_it_as_hung_up() {
    let mut h = Harness::new(1.0).await;
    let call = h.call(caller(vec![hangup_at(300)])).await.call_id;
    let outcome = h
        .run(
            &call,
            1,
            play("http_cache://https://media.example.com/long.wav"),
        )
        .await;
    assert!(matches!(outcome, Outcome::HungUp { .. }), "{outcome:?}");
    let event = h.next(|e| matches!(e, SwitchEvent::Hangup { .. })).await;
    assert!(matches!(event, SwitchEvent::Hangup { ref cause, .. } if cause == "NORMAL_CLEARING"));
}

#[tokio::test]
async fn break_all_interrupts_the_prompt_and_discards_what_is_queued() {
    let mut h = Harness::new(1.0).await;
    let call = h.call(caller(vec![])).await.call_id;
    let first = CommandId::new(&call, 1, 1);
    let queued = CommandId::new(&call, 1, 2);
    h.client
        .execute(&call, &first, &play("https://media.example.com/a.wav"))
        .await
        .unwrap();
    h.client
        .execute(&call, &queued, &play("https://media.example.com/b.wav"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.client.break_all(&call).await.unwrap();
    assert_eq!(
        h.completion(&first).await,
        Outcome::Interrupted { key: None }
    );
    // The queued execute never runs: only the hangup resolves it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.client.hangup(&call, "NORMAL_CLEARING").await.unwrap();
    assert_eq!(
        h.completion(&queued).await,
        Outcome::HungUp {
            cause: "NORMAL_CLEARING".into()
        }
    );
}

#[tokio::test]
async fn a_busy_bridge_hangs_up_the_caller_unless_continue_on_fail() {
    for continue_on_fail in [false, true] {
        let mut h = Harness::new(0.0).await;
        let mut call = caller(vec![]);
        call.dial_answer = DialAnswer::Busy;
        let call = h.call(call).await.call_id;
        let dial = Command::Dial {
            targets: vec!["sofia/external/2000@127.0.0.1:5091".into()],
            sequential: false,
            timeout_s: 20,
            caller_id_number: None,
            caller_id_name: None,
            time_limit_s: None,
            continue_on_fail,
        };
        let outcome = h.run(&call, 1, dial).await;
        if continue_on_fail {
            assert_eq!(
                outcome,
                Outcome::DialFailed {
                    cause: "USER_BUSY".into()
                }
            );
            assert!(
                h.client
                    .api(&format!("uuid_exists {call}"))
                    .await
                    .unwrap()
                    .starts_with("true")
            );
        } else {
            assert_eq!(
                outcome,
                Outcome::HungUp {
                    cause: "USER_BUSY".into()
                }
            );
        }
    }
}

#[tokio::test]
async fn api_and_bgapi_results_and_refusals() {
    let h = Harness::new(0.0).await;
    assert_eq!(
        h.client.api("uuid_exists nope").await.unwrap().trim(),
        "false"
    );
    let err = h.client.api("uuid_kill nope").await.unwrap_err();
    assert!(
        matches!(err, SwitchError::Refused(ref t) if t.contains("No such channel")),
        "{err}"
    );
    let listing = h.client.bgapi("show channels as json").await.unwrap();
    assert!(listing.contains("row_count"), "{listing}");
}

#[tokio::test]
async fn a_dropped_connection_fails_what_is_pending_then_reconnects_and_resyncs() {
    let mut h = Harness::new(1.0).await;
    let call = h.call(caller(vec![])).await.call_id;
    h.sim.drop_connections();
    let down = h
        .next(|e| matches!(e, SwitchEvent::SwitchDown { .. }))
        .await;
    assert!(matches!(down, SwitchEvent::SwitchDown { ref switch, .. } if switch == "fs1"));
    let err = h.client.api("status").await;
    assert!(err.is_err(), "a request while disconnected fails at once");
    match h.next(|e| matches!(e, SwitchEvent::SwitchUp { .. })).await {
        SwitchEvent::SwitchUp {
            restarted,
            channels,
            ..
        } => {
            assert!(!restarted);
            assert!(channels.iter().any(|c| c.call_id == call), "{channels:?}");
        }
        _ => unreachable!(),
    }
    // The call is still driven after the reconnect.
    assert_eq!(h.run(&call, 9, Command::Answer).await, Outcome::Done);
}

#[tokio::test]
async fn a_switch_restart_is_noticed_by_its_core_uuid() {
    let mut h = Harness::new(0.0).await;
    let before = h.sim.core_uuid();
    h.call(caller(vec![])).await;
    h.sim.restart();
    match h.next(|e| matches!(e, SwitchEvent::SwitchUp { .. })).await {
        SwitchEvent::SwitchUp {
            restarted,
            channels,
            core_uuid,
            ..
        } => {
            assert!(restarted);
            assert!(channels.is_empty());
            assert_ne!(core_uuid, before);
            assert_eq!(h.client.core_uuid(), Some(core_uuid));
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn several_switches_feed_one_engine() {
    let sims = [simulator(0.0).await, simulator(0.0).await];
    let (tx, mut events) = mpsc::channel(1024);
    let clients: Vec<SwitchClient> = sims
        .iter()
        .enumerate()
        .map(|(i, sim)| SwitchClient::start(config(&format!("fs{i}"), sim), tx.clone()))
        .collect();
    let mut ups = 0;
    let mut parked = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while parked.len() < 2 {
        match tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            SwitchEvent::SwitchUp { .. } => {
                ups += 1;
                if ups == 2 {
                    for sim in &sims {
                        sim.place_call(caller(vec![]));
                    }
                }
            }
            SwitchEvent::Parked(info) => parked.push(info.switch),
            _ => {}
        }
    }
    parked.sort();
    assert_eq!(parked, ["fs0", "fs1"]);
    assert!(clients.iter().all(SwitchClient::is_connected));
}

#[tokio::test]
async fn a_wrong_password_keeps_retrying_without_connecting() {
    let sim = simulator(0.0).await;
    let (tx, mut events) = mpsc::channel(16);
    let mut cfg = config("fs1", &sim);
    cfg.password = "wrong".into();
    let client = SwitchClient::start(cfg, tx);
    let got = tokio::time::timeout(Duration::from_millis(500), events.recv()).await;
    assert!(got.is_err(), "no SwitchUp with a wrong password: {got:?}");
    assert!(!client.is_connected());
    assert!(matches!(
        client.api("status").await,
        Err(SwitchError::NotConnected(_))
    ));
    client.shutdown();
}

#[tokio::test]
async fn a_command_pending_across_a_disconnect_still_completes_after_the_reconnect() {
    let mut h = Harness::new(1.0).await;
    let call = h.call(caller(vec![])).await.call_id;
    let id = CommandId::new(&call, 1, 1);
    // Three seconds of prompt: the connection drops while it plays.
    h.client
        .execute(&call, &id, &play("https://media.example.com/long.wav"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.sim.drop_connections();
    h.next(|e| matches!(e, SwitchEvent::SwitchDown { .. }))
        .await;
    h.next(|e| matches!(e, SwitchEvent::SwitchUp { .. })).await;
    // FreeSWITCH does not replay events, but the app's completion comes after the reconnect,
    // and the tracker still knows the command.
    assert_eq!(h.completion(&id).await, Outcome::Done);
}

#[tokio::test]
async fn replies_in_flight_when_the_connection_drops_fail_as_disconnected() {
    let h = Harness::new(0.0).await;
    // Mixed commands, so that a reply given to the wrong waiter would show.
    let requests: Vec<_> = (0..200)
        .map(|i| {
            let client = h.client.clone();
            tokio::spawn(async move {
                let command = if i % 2 == 0 {
                    "version"
                } else {
                    "uuid_exists nope"
                };
                (i, client.api(command).await)
            })
        })
        .collect();
    h.sim.drop_connections();
    for request in requests {
        // Nothing hangs: every request ends well before the reply timeout.
        let (i, result) = tokio::time::timeout(Duration::from_secs(2), request)
            .await
            .expect("a request hung across the disconnect")
            .unwrap();
        match result {
            Ok(text) if i % 2 == 0 => assert!(text.starts_with("FreeSWITCH Version"), "{text}"),
            Ok(text) => assert_eq!(text.trim(), "false"),
            Err(SwitchError::Disconnected(_)) | Err(SwitchError::NotConnected(_)) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}

#[tokio::test]
async fn a_caller_scripted_to_hang_up_after_two_prompts_does() {
    let mut h = Harness::new(0.0).await;
    let script = vec![ScriptStep {
        at_ms: 0,
        dtmf: None,
        hangup: true,
        after_prompt: Some(2),
    }];
    let call = h.call(caller(script)).await.call_id;
    assert_eq!(h.run(&call, 1, speak("One")).await, Outcome::Done);
    // Not yet: one prompt heard.
    assert_eq!(h.run(&call, 2, Command::Answer).await, Outcome::Done);
    assert_eq!(
        h.run(&call, 3, play("tone_stream://%(100,0,440)")).await,
        Outcome::Done
    );
    let event = h.next(|e| matches!(e, SwitchEvent::Hangup { .. })).await;
    assert!(matches!(event, SwitchEvent::Hangup { ref cause, .. } if cause == "NORMAL_CLEARING"));
    let view = h.sim.call(&call).unwrap();
    let kinds: Vec<&str> = view.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.last(), Some(&"hangup"), "{kinds:?}");
}
