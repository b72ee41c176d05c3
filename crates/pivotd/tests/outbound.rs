//! Black-box tests of FreeSWITCH's outbound socket mode as a node's way in: a standalone
//! `pivotd sim` plays FreeSWITCH running `socket <node>:<port> async full`, and the real
//! `pivotd serve` node drives each call on the connection it accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Node, Sim, events, spoken};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ADMIN: &str = "admin-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node whose only way in is an outbound socket listener on `listen`: kind = "freeswitch"
/// with no `[[switch.freeswitch]]` box at all.
fn outbound_only_node(listen: &str) -> Node {
    let toml = format!(
        r#"
[node]
id = "node-out"

[api]
listen = "127.0.0.1:0"
admin_token = "{ADMIN}"

[switch]
kind = "freeswitch"

[switch.outbound]
listen = "{listen}"
name = "fs-out"
linger_s = 1

[webhook]
allow_cidrs = ["127.0.0.1/32"]

[[accounts]]
id = "{ACCOUNT}"
"#
    );
    Node::serve(&toml, &[])
}

fn callflow(node: &Node, number: &str, url: &str) {
    let flow = json!({"module": "pivot", "data": {"voice_url": url, "req_format": "twiml"}});
    let body = json!({"data": {"numbers": [number], "flow": flow}});
    let (status, body) = node.send(
        "PUT",
        &format!("/v2/accounts/{ACCOUNT}/callflows"),
        &body.to_string(),
        Some(ADMIN),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
}

fn twiml(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/xml")
        .set_body_string(body)
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_only_an_outbound_socket_is_ready_and_drives_the_call() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/socket"))
        .and(query_param("To", "6201"))
        .respond_with(twiml(
            "<Response><Say>hello over the socket</Say><Hangup/></Response>",
        ))
        .mount(&app)
        .await;
    let sim = Sim::start();
    let listen = format!("127.0.0.1:{}", free_port());
    // `Node::serve` has waited for /readyz 200: the listener alone makes the node ready.
    let node = outbound_only_node(&listen);
    assert_eq!(node.get("/readyz", None).0, 200);
    assert_eq!(
        node.metric("pivot_switch_connected{switch=\"fs-out\"}"),
        1.0
    );
    callflow(&node, "6201", &format!("{}/socket", app.uri()));

    let call = sim.socket_call("6201", json!([]), &listen);
    let view = sim.finished(&call);
    assert_eq!(spoken(&view), vec!["hello over the socket"], "{view:#}");
    assert_eq!(view["hangup_cause"], "NORMAL_CLEARING", "{view:#}");
    assert_eq!(events(&view, "answered").len(), 1, "{view:#}");
    // Driven by this node's first (and only) lease on the call: `<call>:1:<seq>`.
    let spoke = &events(&view, "spoke")[0];
    let uuid = spoke["app_uuid"].as_str().unwrap();
    assert!(uuid.starts_with(&format!("{call}:1:")), "{uuid}");
    wait_for(
        "the call is never counted completed",
        Duration::from_secs(5),
        || node.metric("pivot_calls_total{result=\"completed\"}") == 1.0,
    );
    assert_eq!(node.metric("pivot_calls_active"), 0.0);
    assert_eq!(node.metric("pivot_calls_total{result=\"rejected\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_takes_its_outbound_calls_down_as_freeswitch_does() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/long"))
        .respond_with(twiml(
            "<Response><Say>before</Say><Pause length=\"30\"/><Say>never</Say></Response>",
        ))
        .mount(&app)
        .await;
    // Real time, so the call is still in its pause when the node dies.
    let sim = Sim::start_scaled(1.0);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut node = outbound_only_node(&listen);
    callflow(&node, "6202", &format!("{}/long", app.uri()));

    let call = sim.socket_call("6202", json!([]), &listen);
    let view_of = |sim: &Sim| -> Value {
        let (status, body) =
            common::http(&sim.http, "GET", &format!("/sim/calls/{call}"), None, None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_for(
        "the call never heard its first Say",
        Duration::from_secs(10),
        || spoken(&view_of(&sim)) == ["before"],
    );
    assert_eq!(node.metric("pivot_calls_active"), 1.0);
    assert_ne!(view_of(&sim)["state"], "hungup");

    // SIGKILL: nothing is said; the connection closes with the process. FreeSWITCH's `socket`
    // app returns, nothing follows it in the dialplan, and the call is hung up.
    let killed = Instant::now();
    node.kill();
    let view = sim.finished(&call);
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "hung up {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(view["hangup_cause"], "NORMAL_CLEARING", "{view:#}");
    assert_eq!(spoken(&view), vec!["before"], "{view:#}");
}
