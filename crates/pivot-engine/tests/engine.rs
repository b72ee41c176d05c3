//! The engine end to end with real parts: the simulator over ESL, the real switch client, real
//! HTTP pivot apps (wiremock), the in-memory cluster. What the caller heard is read from the
//! simulator's transcript.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pivot_cluster::{
    Callflow, CallflowStore, DebugLimits, DebugStore, MemoryCallflows, MemoryDebugStore,
    MemoryOwnership,
};
use pivot_engine::{Engine, EngineConfig, Metrics, Services};
use pivot_switch::sim::{CallView, NewCall, ScriptStep, SimConfig, Simulator};
use pivot_switch::{SwitchClient, SwitchConfig};
use pivot_webhook::{ClientConfig, WebhookClient};
use serde_json::json;
use tokio::sync::mpsc;
use wiremock::matchers::{body_string_contains, method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";

struct Harness {
    sim: Simulator,
    engine: Engine,
    callflows: Arc<MemoryCallflows>,
    debug: Arc<MemoryDebugStore>,
}

impl Harness {
    async fn start(config: EngineConfig) -> Harness {
        Harness::start_scaled(config, 0.0).await
    }

    /// With the simulator at `time_scale` (1.0: media takes real time).
    async fn start_scaled(config: EngineConfig, time_scale: f64) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let sim = Simulator::start(SimConfig {
            time_scale,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let (tx, rx) = mpsc::channel(4096);
        let switch = SwitchClient::start(
            SwitchConfig::new("sim", sim.esl_addr().to_string(), "ClueCon"),
            tx,
        );
        let callflows = Arc::new(MemoryCallflows::new(1000));
        let debug = Arc::new(MemoryDebugStore::new(DebugLimits::default()));
        let webhook = WebhookClient::new(ClientConfig {
            allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
            ..ClientConfig::default()
        })
        .unwrap();
        let services = Services {
            ownership: Arc::new(MemoryOwnership::new(10_000)),
            callflows: callflows.clone(),
            debug: debug.clone(),
            webhook,
            metrics: Metrics::new().unwrap(),
        };
        let engine = Engine::start(config, services, vec![switch], rx);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !engine.switches_connected() {
            assert!(Instant::now() < deadline, "switch never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Harness {
            sim,
            engine,
            callflows,
            debug,
        }
    }

    async fn callflow(&self, number: &str, flow: serde_json::Value) {
        self.callflows
            .put(Callflow {
                id: String::new(),
                account_id: ACCOUNT.into(),
                name: None,
                numbers: vec![number.into()],
                patterns: vec![],
                flow,
            })
            .await
            .unwrap();
    }

    fn call(&self, to: &str, script: Vec<ScriptStep>) -> String {
        self.sim.place_call(NewCall {
            to: to.into(),
            from: "user_sov2kt".into(),
            caller_id_name: "JoeFromIT".into(),
            caller_id_number: "+15551230000".into(),
            script,
            ..NewCall::default()
        })
    }

    /// Waits until the call hung up and the engine forgot it.
    async fn finished(&self, call_id: &str) -> CallView {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let view = self.sim.call(call_id).unwrap();
            if view.state == "hungup" && self.engine.channel(call_id).is_none() {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "call did not end: {:#?}",
                view.events
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn spoken(view: &CallView) -> Vec<String> {
    view.events
        .iter()
        .filter(|e| e.kind == "spoke")
        .filter_map(|e| e.text.clone())
        .collect()
}

fn pivot_node(url: &str, format: &str, fallback_text: Option<&str>) -> serde_json::Value {
    let mut node = json!({"module": "pivot", "data": {"voice_url": url, "req_format": format, "req_timeout_ms": 1000}});
    if let Some(text) = fallback_text {
        node["children"] = json!({"_": {"module": "tts", "data": {"text": text}}});
    }
    node
}

fn dtmf(at_ms: u64, digits: &str) -> ScriptStep {
    ScriptStep {
        at_ms,
        dtmf: Some(digits.into()),
        ..ScriptStep::default()
    }
}

fn twiml(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/xml")
        .set_body_string(body)
}

#[actix_rt::test]
async fn a_twiml_ivr_gathers_digits_and_follows_its_action() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ivr"))
        .respond_with(twiml(
            r#"<Response><Gather numDigits="1" action="/choice"><Say>Press 1 for sales</Say></Gather><Say>No choice</Say></Response>"#,
        ))
        .mount(&app)
        .await;
    // Twilio's default action method is POST: the digits come in the form body.
    Mock::given(method("POST"))
        .and(path("/choice"))
        .and(body_string_contains("Digits=1"))
        .respond_with(twiml(
            "<Response><Say>Sales it is</Say><Hangup/></Response>",
        ))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "3004",
            pivot_node(&format!("{}/ivr", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("3004", vec![dtmf(500, "1")]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["Press 1 for sales", "Sales it is"]);
    assert_eq!(harness.engine.active_calls(), 0);
    let metrics = harness.engine.metrics().render();
    assert!(metrics.contains("pivot_calls_active 0"), "{metrics}");
}

#[actix_rt::test]
async fn a_failed_pivot_request_takes_the_underscore_branch_within_the_bound() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "3005",
            pivot_node(
                &format!("{}/down", app.uri()),
                "kazoo",
                Some("Sorry, try later"),
            ),
        )
        .await;
    let started = Instant::now();
    let call = harness.call("3005", vec![]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["Sorry, try later"]);
    assert!(started.elapsed() < Duration::from_secs(2));
    let metrics = harness.engine.metrics().render();
    assert!(
        metrics.contains(r#"pivot_webhook_failures_total{cause="http_status"} 1"#),
        "{metrics}"
    );
    let entries = harness
        .debug
        .entries(ACCOUNT, &call)
        .await
        .unwrap()
        .unwrap();
    assert!(
        entries.iter().any(|e| e.record.get("error").is_some()),
        "{entries:?}"
    );
}

#[actix_rt::test]
async fn a_slow_server_times_out_into_the_failure_branch() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            twiml("<Response><Say>late</Say></Response>").set_delay(Duration::from_secs(5)),
        )
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "3006",
            pivot_node(&format!("{}/slow", app.uri()), "twiml", Some("Fallback")),
        )
        .await;
    let started = Instant::now();
    let call = harness.call("3006", vec![]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["Fallback"]);
    // req_timeout_ms is 1000: the branch is taken within it plus a second.
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
}

#[actix_rt::test]
async fn a_kazoo_menu_branches_on_digits_and_collect_dtmf_reaches_the_next_request() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "module": "menu",
            "data": {"media": {"greeting": "tts://Press 2 for support"}, "retries": 2, "max_extension_length": 1},
            "children": {
                "2": {"module": "collect_dtmf", "data": {"collection_name": "pin", "max_digits": 4},
                      "children": {"_": {"module": "pivot", "data": {"voice_url": format!("{}/pin", app.uri())}}}},
                "max_retries": {"module": "tts", "data": {"text": "Goodbye"}}
            }
        })))
        .mount(&app)
        .await;
    Mock::given(method("GET"))
        .and(path("/pin"))
        .and(query_param("Digits[pin]", "1234"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "module": "tts", "data": {"text": "PIN accepted"}
        })))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "3007",
            pivot_node(&format!("{}/start", app.uri()), "kazoo", None),
        )
        .await;
    let call = harness.call("3007", vec![dtmf(500, "2"), dtmf(2000, "1234")]);
    let view = harness.finished(&call).await;
    assert_eq!(
        spoken(&view),
        vec!["Press 2 for support", "PIN accepted"],
        "{:#?}",
        view.events
    );
}

#[actix_rt::test]
async fn a_redirect_loop_is_cut_and_the_call_hung_up() {
    let app = MockServer::start().await;
    Mock::given(path_regex("^/(loop|again)$"))
        .respond_with(twiml("<Response><Redirect>/again</Redirect></Response>"))
        .mount(&app)
        .await;
    let config = EngineConfig {
        max_requests_without_media: 5,
        ..EngineConfig::default()
    };
    let harness = Harness::start(config).await;
    harness
        .callflow(
            "3008",
            pivot_node(&format!("{}/loop", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("3008", vec![]);
    harness.finished(&call).await;
    let requests = app.received_requests().await.unwrap();
    assert_eq!(requests.len(), 5);
    let metrics = harness.engine.metrics().render();
    assert!(
        metrics.contains("pivot_flow_request_loops_cut_total 1"),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn a_caller_hanging_up_mid_request_ends_the_call_cleanly() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            twiml("<Response><Say>too late</Say></Response>").set_delay(Duration::from_millis(800)),
        )
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "3009",
            pivot_node(&format!("{}/slow", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("3009", vec![]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(harness.engine.channel(&call).is_some());
    assert!(harness.sim.hangup(&call));
    let view = harness.finished(&call).await;
    assert!(spoken(&view).is_empty());
    tokio::time::sleep(Duration::from_millis(900)).await;
    // No stray command after the hangup: nothing was sent for the call at all.
    let stray: Vec<_> = harness
        .sim
        .command_log()
        .into_iter()
        .filter(|c| c.call_id.as_deref() == Some(call.as_str()))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    assert_eq!(harness.engine.active_calls(), 0);
}

#[actix_rt::test]
async fn a_panic_in_one_call_restarts_it_from_its_checkpoint_and_spares_the_others() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/panic"))
        .respond_with(twiml(
            "<Response><Say>before</Say><Say>PANIC</Say><Say>after</Say></Response>",
        ))
        .mount(&app)
        .await;
    Mock::given(method("GET"))
        .and(path("/calm"))
        .respond_with(twiml("<Response><Say>calm</Say></Response>"))
        .mount(&app)
        .await;
    let config = EngineConfig {
        panic_marker: Some("PANIC".into()),
        ..EngineConfig::default()
    };
    let harness = Harness::start(config).await;
    harness
        .callflow(
            "4001",
            pivot_node(&format!("{}/panic", app.uri()), "twiml", None),
        )
        .await;
    harness
        .callflow(
            "4002",
            pivot_node(&format!("{}/calm", app.uri()), "twiml", None),
        )
        .await;
    let calm = harness.call("4002", vec![]);
    let panicky = harness.call("4001", vec![]);
    let view = harness.finished(&panicky).await;
    // Resumed from the checkpoint before the step that panicked: the step is re-issued.
    assert_eq!(spoken(&view), vec!["before", "PANIC", "after"]);
    assert_eq!(spoken(&harness.finished(&calm).await), vec!["calm"]);
    let metrics = harness.engine.metrics().render();
    assert!(
        metrics.contains("pivot_engine_actor_restarts_total 1"),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn a_live_call_is_redirected_and_hung_up_through_the_engine() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/long"))
        .respond_with(twiml(
            r#"<Response><Play>tone_stream://%(20000,0,440)</Play></Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("GET"))
        .and(path("/new"))
        .respond_with(twiml(
            "<Response><Say>redirected</Say><Pause length=\"30\"/></Response>",
        ))
        .mount(&app)
        .await;
    let harness = Harness::start_scaled(EngineConfig::default(), 1.0).await;
    harness
        .callflow(
            "4003",
            pivot_node(&format!("{}/long", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("4003", vec![]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while harness.engine.channel(&call).map(|c| c.state) != Some("play".into()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    harness
        .engine
        .redirect(
            &call,
            &format!("{}/new", app.uri()),
            pivot_flow::HttpMethod::Get,
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !spoken(&harness.sim.call(&call).unwrap()).contains(&"redirected".to_owned()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    harness.engine.hangup(&call).unwrap();
    harness.finished(&call).await;
    assert!(harness.engine.hangup(&call).is_err());
}
