//! The engine end to end with real parts: the simulator over ESL, the real switch client, real
//! HTTP pivot apps (wiremock), the in-memory cluster. What the caller heard is read from the
//! simulator's transcript.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pivot_cluster::{
    Callflow, CallflowStore, DebugLimits, DebugStore, MemoryCallflows, MemoryDebugStore,
    MemoryNodes, MemoryOwnership,
};
use pivot_engine::{AccountSettings, Engine, EngineConfig, Metrics, Services};
use pivot_switch::sim::{CallView, DialAnswer, NewCall, ScriptStep, SimConfig, Simulator};
use pivot_switch::{Switch, SwitchClient, SwitchConfig};
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
            nodes: Arc::new(MemoryNodes::new(16)),
            callflows: callflows.clone(),
            debug: debug.clone(),
            webhook,
            metrics: Metrics::new().unwrap(),
        };
        let engine = Engine::start(config, services, vec![Switch::Inbound(switch)], rx);
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
        self.call_dialling(to, script, DialAnswer::Answer)
    }

    /// A call whose dialled legs (`<Dial>`, `bridge`) behave as `dial_answer` says.
    fn call_dialling(&self, to: &str, script: Vec<ScriptStep>, dial_answer: DialAnswer) -> String {
        self.sim.place_call(NewCall {
            to: to.into(),
            from: "user_sov2kt".into(),
            caller_id_name: "JoeFromIT".into(),
            caller_id_number: "+15551230000".into(),
            script,
            dial_answer,
            ..NewCall::default()
        })
    }

    /// Waits until the engine drives `count` calls.
    async fn active(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.engine.active_calls() != count {
            assert!(
                Instant::now() < deadline,
                "{} active calls, expected {count}",
                self.engine.active_calls()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

/// The parameters of each request `app` received at `at`, in order: a GET's query, a POST's
/// form body.
async fn params_at(app: &MockServer, at: &str) -> Vec<Vec<(String, String)>> {
    app.received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == at)
        .map(|r| {
            if r.method.as_str() == "GET" {
                r.url.query_pairs().into_owned().collect()
            } else {
                url::form_urlencoded::parse(&r.body).into_owned().collect()
            }
        })
        .collect()
}

/// Every value of `key` (a repeated key would show as several).
fn values<'a>(params: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The one request `app` received at `at`.
async fn only_request(app: &MockServer, at: &str) -> Vec<(String, String)> {
    let mut requests = params_at(app, at).await;
    assert_eq!(requests.len(), 1, "requests to {at}: {requests:?}");
    requests.remove(0)
}

/// A metric's value in the engine's scrape (`None`: no such series).
fn metric(harness: &Harness, series: &str) -> Option<f64> {
    harness
        .engine
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
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

// ---- parameters of follow-up requests -----------------------------------------------------

#[actix_rt::test]
async fn a_key_pressed_during_a_say_is_sent_as_digits_on_the_next_request_only() {
    let app = MockServer::start().await;
    // ~70 simulated ms per character: about 7 s of speech, the key lands in its middle.
    let long = "This sentence is long enough to be still playing when the caller presses a key.";
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(twiml(&format!(
            "<Response><Say>{long}</Say><Redirect>/next</Redirect></Response>"
        )))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/next"))
        .respond_with(twiml(
            "<Response><Say>ok</Say><Redirect>/last</Redirect></Response>",
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/last"))
        .respond_with(twiml("<Response><Hangup/></Response>"))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "4101",
            pivot_node(&format!("{}/start", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("4101", vec![dtmf(3000, "7")]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec![long, "ok"], "{:#?}", view.events);
    let next = only_request(&app, "/next").await;
    assert_eq!(values(&next, "Digits"), vec!["7"], "{next:?}");
    // Digits never leak into a later request.
    let last = only_request(&app, "/last").await;
    assert!(values(&last, "Digits").is_empty(), "{last:?}");
}

#[actix_rt::test]
async fn a_key_that_ended_one_gather_is_not_read_again_by_the_next() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/first"))
        .respond_with(twiml(
            r#"<Response><Gather numDigits="1" action="/second"><Say>first menu</Say></Gather></Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/second"))
        .respond_with(twiml(
            r#"<Response><Say>you chose</Say><Gather numDigits="1" timeout="1" action="/third"><Say>second menu</Say></Gather><Say>no choice</Say></Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/third"))
        .respond_with(twiml("<Response><Say>wrong</Say></Response>"))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "4114",
            pivot_node(&format!("{}/first", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("4114", vec![dtmf(500, "4")]);
    let view = harness.finished(&call).await;
    assert_eq!(
        spoken(&view),
        vec!["first menu", "you chose", "second menu", "no choice"],
        "{:#?}",
        view.events
    );
    assert_eq!(
        values(&only_request(&app, "/second").await, "Digits"),
        vec!["4"]
    );
    assert!(params_at(&app, "/third").await.is_empty());
}

#[actix_rt::test]
async fn user_variables_reach_every_later_request_and_never_override_base_parameters() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(twiml(
            r#"<Response>
                 <Set><Variable key="flavor" value="mint"/><Variable key="From" value="spoofed"/></Set>
                 <Say>one</Say>
                 <Redirect>/second</Redirect>
               </Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/second"))
        .respond_with(twiml(
            r#"<Response><Say>two</Say><Redirect>/third<Variable key="step" value="2"/></Redirect></Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/third"))
        .respond_with(twiml("<Response><Say>three</Say></Response>"))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "4102",
            pivot_node(&format!("{}/start", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("4102", vec![]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["one", "two", "three"]);
    let first = only_request(&app, "/start").await;
    assert_eq!(values(&first, "From"), vec!["user_sov2kt"]);
    assert!(values(&first, "flavor").is_empty());
    let second = only_request(&app, "/second").await;
    assert_eq!(values(&second, "flavor"), vec!["mint"], "{second:?}");
    assert_eq!(values(&second, "From"), vec!["user_sov2kt"], "{second:?}");
    assert!(values(&second, "step").is_empty(), "{second:?}");
    let third = only_request(&app, "/third").await;
    assert_eq!(values(&third, "flavor"), vec!["mint"], "{third:?}");
    assert_eq!(values(&third, "step"), vec!["2"], "{third:?}");
    assert_eq!(values(&third, "From"), vec!["user_sov2kt"], "{third:?}");
}

#[actix_rt::test]
async fn a_skipped_module_continues_with_underscore_and_custom_application_vars_are_sent() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "module": "tts", "data": {"text": "skipped", "skip_module": true},
            "children": {"_": {
                "module": "set_variables", "data": {"custom_application_vars": {"tier": "gold"}},
                "children": {"_": {
                    "module": "pivot", "data": {"voice_url": format!("{}/next", app.uri())}
                }}
            }}
        })))
        .mount(&app)
        .await;
    Mock::given(method("GET"))
        .and(path("/next"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "module": "tts", "data": {"text": "gold service"}
        })))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "4103",
            pivot_node(&format!("{}/start", app.uri()), "kazoo", None),
        )
        .await;
    let call = harness.call("4103", vec![]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["gold service"], "{:#?}", view.events);
    let next = only_request(&app, "/next").await;
    assert_eq!(
        values(&next, "Custom-Application-Vars[tier]"),
        vec!["gold"],
        "{next:?}"
    );
    let first = only_request(&app, "/start").await;
    assert!(
        !first
            .iter()
            .any(|(k, _)| k.starts_with("Custom-Application-Vars")),
        "{first:?}"
    );
}

// ---- deadlines -------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_stalled_step_takes_the_failure_path() {
    let app = MockServer::start().await;
    // A source that never ends on the switch.
    Mock::given(method("GET"))
        .respond_with(twiml(
            "<Response><Play>silence_stream://-1</Play><Say>after</Say></Response>",
        ))
        .mount(&app)
        .await;
    let config = EngineConfig {
        max_prompt: Duration::from_millis(500),
        command_margin: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let harness = Harness::start(config).await;
    harness
        .callflow(
            "4104",
            pivot_node(&format!("{}/stall", app.uri()), "twiml", None),
        )
        .await;
    let started = Instant::now();
    let call = harness.call("4104", vec![]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["after"], "{:#?}", view.events);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let played: Vec<_> = view
        .events
        .iter()
        .filter(|e| e.kind == "played")
        .filter_map(|e| e.file.clone())
        .collect();
    assert_eq!(played, vec!["silence_stream://-1"]);
    assert_eq!(
        metric(
            &harness,
            r#"pivot_engine_stalled_steps_total{app="playback"}"#
        ),
        Some(1.0)
    );
}

#[actix_rt::test]
async fn the_maximum_call_duration_hangs_the_call_up() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(twiml(r#"<Response><Pause length="30"/></Response>"#))
        .mount(&app)
        .await;
    let config = EngineConfig {
        max_call_duration: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let harness = Harness::start_scaled(config, 1.0).await;
    harness
        .callflow(
            "4105",
            pivot_node(&format!("{}/pause", app.uri()), "twiml", None),
        )
        .await;
    let started = Instant::now();
    let call = harness.call("4105", vec![]);
    let view = harness.finished(&call).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(view.hangup_cause.as_deref(), Some("ALLOTTED_TIMEOUT"));
    assert_eq!(
        metric(&harness, r#"pivot_calls_total{result="failed"}"#),
        Some(1.0)
    );
}

// ---- end of call and failures of follow-ups ------------------------------------------------

#[actix_rt::test]
async fn a_cdr_is_posted_once_per_call_in_either_format() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/kazoo"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "module": "tts", "data": {"text": "kazoo"}
        })))
        .mount(&app)
        .await;
    Mock::given(method("GET"))
        .and(path("/twiml"))
        .respond_with(twiml("<Response><Say>twiml</Say></Response>"))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/cdr"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    let cdr_url = format!("{}/cdr", app.uri());
    for (number, format) in [("4106", "kazoo"), ("4107", "twiml")] {
        let mut node = pivot_node(&format!("{}/{format}", app.uri()), format, None);
        node["data"]["cdr_url"] = json!(cdr_url);
        harness.callflow(number, node).await;
    }
    let kazoo = harness.call("4106", vec![]);
    let twiml_call = harness.call("4107", vec![]);
    assert_eq!(spoken(&harness.finished(&kazoo).await), vec!["kazoo"]);
    assert_eq!(spoken(&harness.finished(&twiml_call).await), vec!["twiml"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&harness, r#"pivot_cdr_posts_total{outcome="delivered"}"#) != Some(2.0) {
        assert!(
            Instant::now() < deadline,
            "{}",
            harness.engine.metrics().render()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cdrs = params_at(&app, "/cdr").await;
    assert_eq!(cdrs.len(), 2, "{cdrs:?}");
    let by_call = |key: &str, call: &str| {
        let found: Vec<_> = cdrs
            .iter()
            .filter(|p| values(p, key) == vec![call])
            .collect();
        assert_eq!(found.len(), 1, "{key}={call} in {cdrs:?}");
        found[0].clone()
    };
    for cdr in [by_call("Call-ID", &kazoo), by_call("CallSid", &twiml_call)] {
        let duration = values(&cdr, "CallDuration");
        assert_eq!(duration.len(), 1, "{cdr:?}");
        // Instant media: the call lasted well under a second.
        assert_eq!(duration[0], "0", "{cdr:?}");
    }
    assert_eq!(
        metric(&harness, r#"pivot_cdr_posts_total{outcome="failed"}"#).unwrap_or(0.0),
        0.0
    );
}

async fn broken_follow_up_app() -> MockServer {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(twiml(
            "<Response><Say>first</Say><Redirect>/broken</Redirect></Response>",
        ))
        .mount(&app)
        .await;
    Mock::given(path("/broken"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/fallback"))
        .respond_with(twiml("<Response><Say>fallback</Say></Response>"))
        .mount(&app)
        .await;
    app
}

#[actix_rt::test]
async fn a_failed_follow_up_requests_the_account_fallback_url() {
    let app = broken_follow_up_app().await;
    let mut config = EngineConfig::default();
    config.accounts.insert(
        ACCOUNT.to_owned(),
        AccountSettings {
            fallback_url: Some(format!("{}/fallback", app.uri())),
            ..AccountSettings::default()
        },
    );
    let harness = Harness::start(config).await;
    harness
        .callflow(
            "4108",
            pivot_node(&format!("{}/start", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("4108", vec![]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["first", "fallback"]);
    let fallback = only_request(&app, "/fallback").await;
    // Twilio's code for an HTTP error status of the app.
    assert_eq!(
        values(&fallback, "ErrorCode"),
        vec!["11200"],
        "{fallback:?}"
    );
    assert_eq!(
        values(&fallback, "ErrorUrl"),
        vec![format!("{}/broken", app.uri())],
        "{fallback:?}"
    );
    assert_eq!(values(&fallback, "CallSid"), vec![call.as_str()]);
}

#[actix_rt::test]
async fn a_failed_follow_up_without_a_fallback_hangs_up_cleanly() {
    let app = broken_follow_up_app().await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "4109",
            pivot_node(&format!("{}/start", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("4109", vec![]);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["first"]);
    assert_eq!(view.hangup_cause.as_deref(), Some("NORMAL_CLEARING"));
    assert!(params_at(&app, "/fallback").await.is_empty());
    assert_eq!(params_at(&app, "/broken").await.len(), 1);
    assert_eq!(
        metric(
            &harness,
            r#"pivot_webhook_failures_total{cause="http_status"}"#
        ),
        Some(1.0)
    );
}

// ---- dial ------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_busy_dial_reports_busy_to_its_action() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/start"))
        .respond_with(twiml(
            r#"<Response><Dial action="/after"><Number>123</Number></Dial><Say>not reached</Say></Response>"#,
        ))
        .mount(&app)
        .await;
    Mock::given(method("POST"))
        .and(path("/after"))
        .respond_with(twiml("<Response><Say>line busy</Say></Response>"))
        .mount(&app)
        .await;
    let harness = Harness::start(EngineConfig::default()).await;
    harness
        .callflow(
            "4110",
            pivot_node(&format!("{}/start", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call_dialling("4110", vec![], DialAnswer::Busy);
    let view = harness.finished(&call).await;
    assert_eq!(spoken(&view), vec!["line busy"], "{:#?}", view.events);
    let dialed: Vec<_> = view
        .events
        .iter()
        .filter(|e| e.kind == "dialed")
        .filter_map(|e| e.target.clone())
        .collect();
    assert_eq!(dialed.len(), 1, "{:#?}", view.events);
    assert!(dialed[0].contains("123"), "{dialed:?}");
    let after = only_request(&app, "/after").await;
    assert_eq!(values(&after, "DialCallStatus"), vec!["busy"], "{after:?}");
}

// ---- the switch and the node's limits ------------------------------------------------------

#[actix_rt::test]
async fn an_api_hangup_ends_a_call_in_the_middle_of_a_long_step_at_once() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(twiml(
            r#"<Response><Say>hello</Say><Pause length="30"/></Response>"#,
        ))
        .mount(&app)
        .await;
    let harness = Harness::start_scaled(EngineConfig::default(), 1.0).await;
    harness
        .callflow(
            "4113",
            pivot_node(&format!("{}/pause", app.uri()), "twiml", None),
        )
        .await;
    let call = harness.call("4113", vec![]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while harness.engine.channel(&call).map(|c| c.state) != Some("pause".into()) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    harness.engine.hangup(&call).unwrap();
    let view = harness.finished(&call).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(view.hangup_cause.as_deref(), Some("NORMAL_CLEARING"));
    assert_eq!(spoken(&view), vec!["hello"]);
}

#[actix_rt::test]
async fn a_switch_restart_ends_the_calls_the_engine_was_driving() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(twiml(r#"<Response><Pause length="30"/></Response>"#))
        .mount(&app)
        .await;
    let harness = Harness::start_scaled(EngineConfig::default(), 1.0).await;
    harness
        .callflow(
            "4111",
            pivot_node(&format!("{}/pause", app.uri()), "twiml", None),
        )
        .await;
    let calls = [harness.call("4111", vec![]), harness.call("4111", vec![])];
    for call in &calls {
        let deadline = Instant::now() + Duration::from_secs(5);
        while harness.engine.channel(call).map(|c| c.state) != Some("pause".into()) {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                harness.engine.channel(call)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    harness.sim.restart();
    harness.active(0).await;
    for call in &calls {
        assert!(harness.engine.channel(call).is_none());
    }
    assert_eq!(metric(&harness, "pivot_calls_active"), Some(0.0));
}

#[actix_rt::test]
async fn a_call_beyond_max_calls_is_refused_with_congestion() {
    let app = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(twiml(r#"<Response><Pause length="30"/></Response>"#))
        .mount(&app)
        .await;
    let config = EngineConfig {
        max_calls: 1,
        ..EngineConfig::default()
    };
    let harness = Harness::start_scaled(config, 1.0).await;
    harness
        .callflow(
            "4112",
            pivot_node(&format!("{}/pause", app.uri()), "twiml", None),
        )
        .await;
    let first = harness.call("4112", vec![]);
    harness.active(1).await;
    let second = harness.call("4112", vec![]);
    let view = harness.finished(&second).await;
    assert_eq!(view.hangup_cause.as_deref(), Some("SWITCH_CONGESTION"));
    assert!(!view.events.iter().any(|e| e.kind == "answered"));
    assert_eq!(
        metric(&harness, r#"pivot_calls_total{result="rejected"}"#),
        Some(1.0)
    );
    // The first call is untouched.
    assert_ne!(harness.sim.call(&first).unwrap().state, "hungup");
    assert!(harness.engine.channel(&first).is_some());
    assert!(harness.sim.hangup(&first));
    harness.finished(&first).await;
}
