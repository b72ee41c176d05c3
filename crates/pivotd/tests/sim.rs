//! Black-box tests of `pivotd sim`: the real binary, its HTTP API, and the real ESL client
//! connected to its event socket.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pivot_switch::{CommandId, Outcome, SwitchClient, SwitchConfig, SwitchEvent};

struct Sim {
    child: Child,
    esl: String,
    http: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim() -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pivotd"))
        .args([
            "sim",
            "--esl",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--time-scale",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "pivot simulator: esl 127.0.0.1:PORT http 127.0.0.1:PORT"
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(2), Some(&"esl"), "unexpected banner {line:?}");
    Sim {
        esl: words[3].to_owned(),
        http: words[5].to_owned(),
        child,
    }
}

/// A minimal HTTP/1.1 exchange: (status, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn next(events: &mut tokio::sync::mpsc::Receiver<SwitchEvent>) -> SwitchEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn a_call_placed_over_http_is_driven_over_esl_and_its_transcript_read_back() {
    let sim = start_sim();
    let (tx, mut events) = tokio::sync::mpsc::channel(64);
    let client = SwitchClient::start(SwitchConfig::new("sim", sim.esl.clone(), "ClueCon"), tx);
    assert!(matches!(
        next(&mut events).await,
        SwitchEvent::SwitchUp { .. }
    ));

    let (status, body) = http(
        &sim.http,
        "POST",
        "/sim/calls",
        Some(
            r#"{"to":"3004","from":"user_sov2kt","caller_id_name":"JoeFromIT","caller_id_number":"+15551230000","script":[{"at_ms":1500,"dtmf":"1#"}]}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let call_id = json(&body)["call_id"].as_str().unwrap().to_owned();

    let SwitchEvent::Parked(info) = next(&mut events).await else {
        panic!("expected a park")
    };
    assert_eq!(info.call_id, call_id);
    assert_eq!(info.to_user, "3004");

    let id = CommandId::new(&call_id, 1, 1);
    let speak = pivot_switch::Command::Speak {
        engine: "flite".into(),
        voice: "kal".into(),
        text: "Hello from pivot".into(),
        terminators: String::new(),
    };
    client.execute(&call_id, &id, &speak).await.unwrap();
    loop {
        if let SwitchEvent::Completed {
            command_id,
            outcome,
            ..
        } = next(&mut events).await
        {
            assert_eq!(command_id, id);
            assert_eq!(outcome, Outcome::Done);
            break;
        }
    }

    let (status, body) = http(&sim.http, "GET", &format!("/sim/calls/{call_id}"), None);
    assert_eq!(status, 200, "{body}");
    let view = json(&body);
    let spoke = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "spoke")
        .unwrap_or_else(|| panic!("no spoke event in {body}"));
    assert_eq!(spoke["app_uuid"], id.as_str());

    let (status, _) = http(
        &sim.http,
        "POST",
        &format!("/sim/calls/{call_id}/dtmf"),
        Some(r#"{"digits":"9"}"#),
    );
    assert_eq!(status, 202);
    let (status, _) = http(&sim.http, "DELETE", &format!("/sim/calls/{call_id}"), None);
    assert_eq!(status, 204);
    loop {
        if let SwitchEvent::Hangup { call_id: hung, .. } = next(&mut events).await {
            assert_eq!(hung, call_id);
            break;
        }
    }
    let (status, body) = http(&sim.http, "GET", "/sim/calls", None);
    assert_eq!(status, 200);
    assert!(body.contains(&call_id), "{body}");
    client.shutdown();
}

#[test]
fn bad_requests_get_400_naming_the_problem_and_unknown_calls_404() {
    let sim = start_sim();
    let (status, body) = http(&sim.http, "POST", "/sim/calls", Some(r#"{"to": 3004}"#));
    assert_eq!(status, 400, "{body}");
    let error = json(&body);
    assert_eq!(error["status"], "error");
    assert!(error["message"].as_str().unwrap().contains("to"), "{body}");
    let (status, body) = http(
        &sim.http,
        "POST",
        "/sim/calls/nope/dtmf",
        Some(r#"{"digits":"x"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("digits"), "{body}");
    let (status, _) = http(&sim.http, "GET", "/sim/calls/nope", None);
    assert_eq!(status, 404);
    let (status, _) = http(&sim.http, "DELETE", "/sim/calls/nope", None);
    assert_eq!(status, 404);
}
