//! Black-box tests of a pivot node: the real `pivotd` binary with its embedded simulator, real
//! local pivot apps (wiremock servers), and its HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Node, Sim, events, spoken};
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The embedded default's demo account (the account of number 3004).
const DEMO_ACCOUNT: &str = "4a2c1b4e5d6f47a8b9c0d1e2f3a4b5c6";
const ACCOUNT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ACCOUNT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const ADMIN: &str = "admin-secret";
const TOKEN_A: &str = "token-a";
const TOKEN_B: &str = "token-b";

fn config(time_scale: f64, extra: &str) -> String {
    format!(
        r#"
[node]
id = "node-a"

[api]
listen = "127.0.0.1:0"
admin_token = "{ADMIN}"
tokens = [{{ token = "{TOKEN_A}", account_id = "{ACCOUNT_A}" }}, {{ token = "{TOKEN_B}", account_id = "{ACCOUNT_B}" }}]

[switch]
kind = "sim"
sim = {{ esl_listen = "127.0.0.1:0", time_scale = {time_scale:.1} }}

[webhook]
allow_cidrs = ["127.0.0.1/32"]
max_body_bytes = 4096

[[accounts]]
id = "{ACCOUNT_A}"

[[accounts]]
id = "{ACCOUNT_B}"
{extra}
"#
    )
}

/// Stores a callflow for `number` in account A (admin token).
fn callflow(node: &Node, number: &str, flow: Value) {
    let body = json!({"data": {"numbers": [number], "flow": flow}});
    let (status, body) = node.send(
        "PUT",
        &format!("/v2/accounts/{ACCOUNT_A}/callflows"),
        &body.to_string(),
        Some(ADMIN),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
}

fn pivot(url: &str, format: &str, fallback: Option<&str>) -> Value {
    let mut node = json!({"module": "pivot", "data": {"voice_url": url, "req_format": format, "req_timeout_ms": 1000}});
    if let Some(text) = fallback {
        node["children"] = json!({"_": {"module": "tts", "data": {"text": text}}});
    }
    node
}

fn twiml(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/xml")
        .set_body_string(body)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- the embedded default ------------------------------------------------------------------

#[test]
fn the_embedded_default_answers_3004_and_tells_the_time() {
    let node = Node::embedded(&[]);
    let call = node.call("3004", json!([{"at_ms": 1000, "dtmf": "2"}]));
    let view = node.finished(&call);
    let said = spoken(&view);
    assert!(said[0].starts_with("Welcome to pivot"), "{said:?}");
    assert!(said[1].starts_with("The time is"), "{said:?}");
    // Back to the menu, no choice this time: the Gather falls through to the goodbye.
    assert!(said[2].starts_with("Welcome to pivot"), "{said:?}");
    assert_eq!(said.last().unwrap(), "We did not get your choice. Goodbye.");
    assert_eq!(node.metric("pivot_calls_active"), 0.0);
}

#[test]
fn the_embedded_default_records_a_message() {
    let node = Node::embedded(&[]);
    let call = node.call(
        "3004",
        json!([{"at_ms": 1000, "dtmf": "1"}, {"at_ms": 12000, "dtmf": "#"}]),
    );
    let view = node.finished(&call);
    let said = spoken(&view);
    assert!(said[1].starts_with("Leave your message"), "{said:?}");
    assert_eq!(events(&view, "recorded").len(), 1, "{view:#}");
    assert!(
        said.last()
            .unwrap()
            .starts_with("Thank you. Your message of"),
        "{said:?}"
    );
}

#[test]
fn pivotd_call_prints_what_the_caller_hears() {
    let node = Node::embedded(&[]);
    let output = Command::new(env!("CARGO_BIN_EXE_pivotd"))
        .args(["call", "3004", "--digits", "2@1000", "--api", &node.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("Welcome to pivot"), "{stdout}");
    assert!(stdout.contains("The time is"), "{stdout}");
    assert!(stdout.contains("hung up"), "{stdout}");
}

#[test]
fn the_demo_call_leaves_debug_records_in_the_seeds_shape() {
    let node = Node::embedded(&[]);
    // No choice: the welcome Gather falls through to the goodbye, one request in all.
    let call = node.call("3004", json!([]));
    node.finished(&call);
    // The embedded default has no tokens: the API is open on loopback.
    let list = node.json(&format!("/v2/accounts/{DEMO_ACCOUNT}/pivot/debug"), None);
    let listed: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["call_id"] == call.as_str())
        .collect();
    assert_eq!(listed.len(), 1, "{list:#}");
    let summary = listed[0];
    assert_eq!(summary["node"], node.node_id.as_str(), "{summary:#}");
    assert_eq!(summary["iteration"], 1, "{summary:#}");
    assert_eq!(summary["has_errors"], false, "{summary:#}");
    assert_eq!(summary["status_code"], "200", "{summary:#}");
    assert!(
        summary["uri"].as_str().unwrap().contains("/demo/ivr?"),
        "{summary:#}"
    );

    let entries = node.json(
        &format!("/v2/accounts/{DEMO_ACCOUNT}/pivot/debug/{call}"),
        None,
    );
    let entries = entries["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let (request, response) = (&entries[0], &entries[1]);
    for key in [
        "call_id",
        "id",
        "method",
        "req_body",
        "req_headers",
        "uri",
        "iteration",
    ] {
        assert!(
            request.get(key).is_some(),
            "request lacks {key}: {request:#}"
        );
    }
    assert_eq!(request["call_id"], call.as_str());
    assert_eq!(request["method"], "get");
    assert_eq!(request["iteration"], 1);
    assert_eq!(request["req_body"], "");
    let uri = request["uri"].as_str().unwrap();
    assert!(uri.contains(&format!("CallSid={call}")), "{uri}");
    assert_eq!(
        request["req_headers"]["user-agent"],
        concat!("pivot/", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        request["req_headers"]["accept"]
            .as_str()
            .unwrap()
            .contains("text/xml"),
        "{request:#}"
    );
    for key in [
        "call_id",
        "id",
        "resp_status_code",
        "resp_headers",
        "resp_body",
        "iteration",
    ] {
        assert!(
            response.get(key).is_some(),
            "response lacks {key}: {response:#}"
        );
    }
    assert_eq!(response["call_id"], call.as_str());
    assert_eq!(response["resp_status_code"], "200");
    assert_eq!(response["iteration"], 1);
    assert!(
        response["resp_body"].as_str().unwrap().contains("<Gather"),
        "{response:#}"
    );
    assert!(
        response["resp_headers"]["content-type"]
            .as_str()
            .unwrap()
            .contains("xml"),
        "{response:#}"
    );
    assert_ne!(request["id"], response["id"]);
}

#[test]
fn json_logs_carry_the_call_span_fields() {
    let node = Node::embedded_capturing_stderr(&[
        ("PIVOT_LOG__FORMAT", "json"),
        ("PIVOT_LOG__FILTER", "pivot_engine=debug,info"),
    ]);
    // Hanging up during the welcome logs "caller hung up" (debug) inside the call's span.
    let call = node.call("3004", json!([{"at_ms": 500, "hangup": true}]));
    node.finished(&call);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = node.stderr_lines();
        let in_span: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["call_id"] == call.as_str())
            .collect();
        if let Some(line) = in_span.first() {
            // The call span's fields are lifted to the top level, beside the event's own.
            assert_eq!(line["account_id"], DEMO_ACCOUNT, "{line:#}");
            assert_eq!(line["node"], node.node_id.as_str(), "{line:#}");
            assert!(line["message"].is_string(), "{line:#}");
            assert!(line.get("span").is_none(), "{line:#}");
            assert!(line["level"].is_string() && line["target"].is_string());
            assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON line in the call's span:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every line is JSON, not just the call's.
    let lines = node.stderr_lines();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drives_an_esl_peer_it_did_not_start() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/peer"))
        .and(query_param("To", "6101"))
        .respond_with(twiml(
            "<Response><Say>hello from the peer</Say><Hangup/></Response>",
        ))
        .mount(&app)
        .await;
    let sim = Sim::start();
    let toml = format!(
        r#"
[node]
id = "node-fs"

[api]
listen = "127.0.0.1:0"
admin_token = "{ADMIN}"

[switch]
kind = "freeswitch"

[[switch.freeswitch]]
name = "fs1"
address = "{}"
password = "ClueCon"

[webhook]
allow_cidrs = ["127.0.0.1/32"]

[[accounts]]
id = "{ACCOUNT_A}"
"#,
        sim.esl
    );
    let node = Node::serve(&toml, &[]);
    assert_eq!(node.metric("pivot_switch_connected{switch=\"fs1\"}"), 1.0);
    // The node has no simulator of its own.
    assert_eq!(node.get("/sim/calls", None).0, 404);
    callflow(
        &node,
        "6101",
        pivot(&format!("{}/peer", app.uri()), "twiml", None),
    );
    let call = sim.call("6101", json!([]));
    let view = sim.finished(&call);
    assert_eq!(spoken(&view), vec!["hello from the peer"], "{view:#}");
    assert_eq!(view["hangup_cause"], "NORMAL_CLEARING", "{view:#}");
    // Driven by this node's first lease on the call: `<call>:1:<seq>`.
    let spoke = &events(&view, "spoke")[0];
    let uuid = spoke["app_uuid"].as_str().unwrap();
    assert!(uuid.starts_with(&format!("{call}:1:")), "{uuid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.metric("pivot_calls_total{result=\"completed\"}") != 1.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(node.metric("pivot_calls_active"), 0.0);
}

// ---- failures take the `_` branch ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_cause_takes_the_underscore_branch_within_the_bound() {
    let app = MockServer::start().await;
    let respond = |p: &str, template: ResponseTemplate| {
        Mock::given(path(p.to_owned())).respond_with(template)
    };
    respond(
        "/timeout",
        twiml("<Response/>").set_delay(Duration::from_secs(3)),
    )
    .mount(&app)
    .await;
    respond("/status", ResponseTemplate::new(500))
        .mount(&app)
        .await;
    respond(
        "/type",
        ResponseTemplate::new(200).set_body_raw(b"GIF89a".to_vec(), "image/gif"),
    )
    .mount(&app)
    .await;
    respond(
        "/empty",
        ResponseTemplate::new(200).set_body_raw(Vec::new(), "application/json"),
    )
    .mount(&app)
    .await;
    respond(
        "/large",
        ResponseTemplate::new(200).set_body_raw(
            format!(
                r#"{{"module":"tts","data":{{"text":"{}"}}}}"#,
                "x".repeat(8000)
            ),
            "application/json",
        ),
    )
    .mount(&app)
    .await;
    respond(
        "/parse",
        ResponseTemplate::new(200).set_body_raw(b"{not json".to_vec(), "application/json"),
    )
    .mount(&app)
    .await;
    respond(
        "/invalid",
        ResponseTemplate::new(200).set_body_raw(
            br#"{"module":"pivot","data":{"method":"get"}}"#.to_vec(),
            "application/json",
        ),
    )
    .mount(&app)
    .await;
    let port = app.address().port();
    let closed = free_port();
    let cases = [
        ("dns", "http://no-such-host.invalid/app".to_owned()),
        ("connect", format!("http://127.0.0.1:{closed}/app")),
        ("tls", format!("https://127.0.0.1:{port}/app")),
        ("timeout", format!("{}/timeout", app.uri())),
        ("http_status", format!("{}/status", app.uri())),
        ("content_type", format!("{}/type", app.uri())),
        ("empty_body", format!("{}/empty", app.uri())),
        ("too_large", format!("{}/large", app.uri())),
        ("parse", format!("{}/parse", app.uri())),
        ("invalid_flow", format!("{}/invalid", app.uri())),
        // Loopback, but not the one allowed address: the guard refuses it.
        (
            "blocked_destination",
            format!("http://127.0.0.2:{port}/app"),
        ),
    ];
    let node = Node::serve(&config(0.0, ""), &[]);
    for (n, (cause, url)) in cases.iter().enumerate() {
        let number = format!("50{n:02}");
        callflow(
            &node,
            &number,
            pivot(url, "kazoo", Some(&format!("fallback {cause}"))),
        );
        let started = Instant::now();
        let call = node.call(&number, json!([]));
        // The `_` branch is heard within req_timeout_ms (1000) + 1 s.
        loop {
            let view = node.json(&format!("/sim/calls/{call}"), None);
            if !spoken(&view).is_empty() {
                assert_eq!(spoken(&view), vec![format!("fallback {cause}")]);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_millis(2000),
                "{cause}: no fallback after {:?}: {view:#}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        node.finished(&call);
        assert_eq!(
            node.metric(&format!(
                "pivot_webhook_failures_total{{cause=\"{cause}\"}}"
            )),
            1.0,
            "{cause}"
        );
        let debug = node.json(
            &format!("/v2/accounts/{ACCOUNT_A}/pivot/debug/{call}"),
            Some(TOKEN_A),
        );
        let errors: Vec<&Value> = debug["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["error"] == *cause)
            .collect();
        assert_eq!(errors.len(), 1, "{cause}: {debug:#}");
    }
}

// ---- flows end to end ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twiml_ivr_gathers_records_and_hangs_up() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ivr"))
        .respond_with(twiml(
            r#"<Response><Gather numDigits="1" action="/chosen"><Say>Press 1 to record</Say></Gather></Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/chosen"))
        .and(body_string_contains("Digits=1"))
        .respond_with(twiml(
            r#"<Response><Say>Speak now</Say><Record maxLength="10" action="/recorded"/></Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/recorded"))
        .and(body_string_contains("RecordingDuration="))
        .respond_with(twiml("<Response><Say>Bye</Say><Hangup/></Response>"))
        .mount(&app)
        .await;
    let node = Node::serve(&config(0.0, ""), &[]);
    callflow(
        &node,
        "6001",
        pivot(&format!("{}/ivr", app.uri()), "twiml", None),
    );
    let call = node.call("6001", json!([{"at_ms": 500, "dtmf": "1"}]));
    let view = node.finished(&call);
    assert_eq!(spoken(&view), vec!["Press 1 to record", "Speak now", "Bye"]);
    assert_eq!(events(&view, "recorded").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flows_run_and_a_nested_pivot_continues() {
    let app = MockServer::start().await;
    // The seed's say → record_caller document, served as a pivot response.
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/seed-say-record.json"
    ))
    .unwrap();
    Mock::given(path("/seed"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(seed, "application/json"))
        .mount(&app)
        .await;
    // A KAZOO document whose `_` child is a nested pivot.
    Mock::given(path("/outer"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "module": "tts", "data": {"text": "outer"},
            "children": {"_": {"module": "pivot", "data": {"voice_url": format!("{}/inner", app.uri())}}}
        })))
        .mount(&app)
        .await;
    Mock::given(path("/inner"))
        .and(query_param("Request", "6004"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "module": "tts", "data": {"text": "inner"}
        })))
        .mount(&app)
        .await;
    let node = Node::serve(&config(0.0, ""), &[]);
    callflow(
        &node,
        "6002",
        pivot(&format!("{}/seed", app.uri()), "kazoo", None),
    );
    let view = node.finished(&node.call("6002", json!([])));
    assert_eq!(
        spoken(&view),
        vec!["Please leave your message after the beep"]
    );
    assert_eq!(events(&view, "recorded").len(), 1, "{view:#}");

    // The seed's pivot callflow: its server is unreachable, so its `_` play runs.
    let seed_callflow: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/seed-pivot-callflow.json"
        ))
        .unwrap(),
    )
    .unwrap();
    callflow(&node, "6003", seed_callflow);
    let view = node.finished(&node.call("6003", json!([])));
    let played: Vec<String> = events(&view, "played")
        .iter()
        .filter_map(|e| e["file"].as_str().map(str::to_owned))
        .collect();
    assert!(
        played
            .iter()
            .any(|f| f.contains("sorry-we-are-unavailable.wav")),
        "{view:#}"
    );

    callflow(
        &node,
        "6004",
        pivot(&format!("{}/outer", app.uri()), "kazoo", None),
    );
    let view = node.finished(&node.call("6004", json!([])));
    assert_eq!(spoken(&view), vec!["outer", "inner"]);
}

// ---- live calls and the API ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_calls_are_listed_redirected_and_hung_up_through_the_api() {
    let app = MockServer::start().await;
    Mock::given(path("/long"))
        .respond_with(twiml(
            "<Response><Play>tone_stream://%(20000,0,440)</Play></Response>",
        ))
        .mount(&app)
        .await;
    Mock::given(path("/new"))
        .respond_with(twiml(
            r#"<Response><Say>redirected</Say><Pause length="20"/></Response>"#,
        ))
        .mount(&app)
        .await;
    let node = Node::serve(&config(1.0, ""), &[]);
    callflow(
        &node,
        "7001",
        pivot(&format!("{}/long", app.uri()), "twiml", None),
    );
    let call = node.call("7001", json!([]));
    let channel = format!("/v2/accounts/{ACCOUNT_A}/channels/{call}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.get(&channel, Some(TOKEN_A)).0 != 200 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = node.json(&format!("/v2/accounts/{ACCOUNT_A}/channels"), Some(TOKEN_A));
    assert_eq!(list["data"][0]["call_id"], call.as_str());
    assert_eq!(list["data"][0]["node"], "node-a");
    // Another account neither sees nor controls it.
    assert_eq!(node.get(&channel, Some(TOKEN_B)).0, 404);
    assert_eq!(
        node.get(&format!("/v2/accounts/{ACCOUNT_A}/channels"), Some(TOKEN_B))
            .0,
        404
    );
    // A malformed body names the field.
    let (status, body) = node.send(
        "POST",
        &channel,
        r#"{"data":{"action":"fly"}}"#,
        Some(TOKEN_A),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("data.action"), "{body}");

    let redirect = json!({"data": {"action": "redirect", "url": format!("{}/new", app.uri()), "method": "get"}});
    let (status, body) = node.send("POST", &channel, &redirect.to_string(), Some(TOKEN_A));
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = node.json(&format!("/sim/calls/{call}"), None);
        if spoken(&view) == vec!["redirected"] {
            break;
        }
        assert!(Instant::now() < deadline, "{view:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = node.send(
        "POST",
        &channel,
        r#"{"data":{"action":"hangup"}}"#,
        Some(TOKEN_A),
    );
    assert_eq!(status, 202);
    node.finished(&call);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.metric("pivot_calls_active") != 0.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(node.get(&channel, Some(TOKEN_A)).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_hanging_up_mid_request_and_mid_playback_leave_nothing_behind() {
    let app = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(
            twiml("<Response><Say>late</Say></Response>").set_delay(Duration::from_millis(700)),
        )
        .mount(&app)
        .await;
    Mock::given(path("/long"))
        .respond_with(twiml(
            "<Response><Play>tone_stream://%(20000,0,440)</Play><Say>never</Say></Response>",
        ))
        .mount(&app)
        .await;
    let node = Node::serve(&config(1.0, ""), &[]);
    callflow(
        &node,
        "7002",
        pivot(&format!("{}/slow", app.uri()), "twiml", None),
    );
    callflow(
        &node,
        "7003",
        pivot(&format!("{}/long", app.uri()), "twiml", None),
    );
    let mid_request = node.call("7002", json!([{"at_ms": 200, "hangup": true}]));
    let mid_playback = node.call("7003", json!([{"at_ms": 1500, "hangup": true}]));
    let view = node.finished(&mid_request);
    assert!(spoken(&view).is_empty(), "{view:#}");
    let view = node.finished(&mid_playback);
    assert_eq!(events(&view, "played").len(), 1);
    assert!(spoken(&view).is_empty());
    // Nothing reaches either call after its hangup (the late answer included).
    std::thread::sleep(Duration::from_millis(800));
    for call in [&mid_request, &mid_playback] {
        let view = node.json(&format!("/sim/calls/{call}"), None);
        let last = view["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["kind"], "hangup", "{view:#}");
    }
    assert_eq!(node.metric("pivot_calls_active"), 0.0);
    assert_eq!(
        node.metric("pivot_calls_total{result=\"caller_hangup\"}"),
        2.0
    );
}

#[test]
fn the_api_checks_tokens_accounts_and_bodies() {
    let node = Node::serve(&config(0.0, ""), &[]);
    let callflows = format!("/v2/accounts/{ACCOUNT_A}/callflows");
    assert_eq!(node.get(&callflows, None).0, 401);
    assert_eq!(node.get(&callflows, Some("wrong")).0, 401);
    assert_eq!(node.get(&callflows, Some(TOKEN_B)).0, 404);
    assert_eq!(node.get(&callflows, Some(TOKEN_A)).0, 200);
    // A path-named validation error from the flow parser.
    let bad = json!({"data": {"numbers": ["8001"], "flow": {"module": "pivot", "data": {"voice_url": 5}}}});
    let (status, body) = node.send("PUT", &callflows, &bad.to_string(), Some(TOKEN_A));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("data.flow.data.voice_url"), "{body}");
    // A body that is not the right shape names the field.
    let (status, body) = node.send(
        "PUT",
        &callflows,
        r#"{"data":{"numbers":"8001"}}"#,
        Some(TOKEN_A),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("numbers"), "{body}");
    // Numbers are unique across accounts.
    let good =
        json!({"data": {"numbers": ["8002"], "flow": {"module": "tts", "data": {"text": "hi"}}}});
    assert_eq!(
        node.send("PUT", &callflows, &good.to_string(), Some(TOKEN_A))
            .0,
        201
    );
    let other = format!("/v2/accounts/{ACCOUNT_B}/callflows");
    assert_eq!(
        node.send("PUT", &other, &good.to_string(), Some(TOKEN_B)).0,
        409
    );
    // Debug logs of another account's calls are not found.
    let call = node.call("8002", json!([]));
    node.finished(&call);
    assert_eq!(
        node.get(
            &format!("/v2/accounts/{ACCOUNT_A}/pivot/debug/{call}"),
            Some(TOKEN_B)
        )
        .0,
        404
    );
}

#[test]
fn metrics_parse_and_name_every_series_of_the_design() {
    let node = Node::embedded(&[]);
    node.finished(&node.call("3004", json!([])));
    let (status, body) = node.get("/metrics", None);
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "pivot_webhook_request_duration_seconds",
        "pivot_webhook_failures_total",
        "pivot_calls_active",
        "pivot_calls_total",
        "pivot_call_setup_seconds",
        "pivot_flow_steps_total",
        "pivot_switch_commands_total",
        "pivot_switch_connected",
        "pivot_cluster_claims_total",
        "pivot_cdr_posts_total",
        "pivot_build_info",
    ] {
        assert!(names.contains(name), "{name} missing from:\n{body}");
    }
    assert_eq!(node.metric("pivot_switch_connected{switch=\"sim\"}"), 1.0);
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut node = Node::embedded(&[]);
    let (took, status) = node.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
