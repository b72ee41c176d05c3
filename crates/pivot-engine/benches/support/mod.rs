//! What the engine benchmarks share: the loopback pivot app, a node (engine + switch client)
//! on either cluster backend, a simulated call, a child process that dies with the benchmark.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use pivot_cluster::{
    Callflow, CallflowStore, DebugLimits, MemoryCallflows, MemoryDebugStore, MemoryNodes,
    MemoryOwnership, Nodes, Ownership, RedisCluster, RedisOptions,
};
use pivot_engine::{ClusterSettings, Engine, EngineConfig, Metrics, Services, SetupObserver};
use pivot_switch::sim::NewCall;
use pivot_switch::{Switch, SwitchClient, SwitchConfig};
use pivot_webhook::{ClientConfig, WebhookClient};
use tokio::sync::mpsc;

/// Which cluster backend a node uses.
#[derive(Debug, Clone)]
pub enum Backend {
    Memory,
    /// `redis://…`
    Redis(String),
}

/// The pivot app: a one-verb TwiML document, and one that plays forever (for holding calls).
pub fn start_app() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = HttpServer::new(|| {
                App::new()
                    .route(
                        "/say",
                        web::to(|| async {
                            HttpResponse::Ok()
                                .content_type("application/xml")
                                .body("<Response><Say>Hello</Say></Response>")
                        }),
                    )
                    .route(
                        "/hold",
                        web::to(|| async {
                            HttpResponse::Ok()
                                .content_type("application/xml")
                                .body("<Response><Play>silence_stream://-1</Play></Response>")
                        }),
                    )
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

pub struct Node {
    pub engine: Engine,
    pub metrics: Metrics,
    pub setups: Arc<Mutex<Vec<Duration>>>,
}

pub async fn node(app: &str, path: &str, esl: String, max_calls: usize) -> Node {
    node_on(
        app,
        path,
        esl,
        max_calls,
        "pivot-1",
        &Backend::Memory,
        Duration::from_secs(5),
    )
    .await
}

/// A node named `id` on `backend`, with a node lease of `lease`.
pub async fn node_on(
    app: &str,
    path: &str,
    esl: String,
    max_calls: usize,
    id: &str,
    backend: &Backend,
    lease: Duration,
) -> Node {
    let (tx, rx) = mpsc::channel(64 * 1024);
    let switch = SwitchClient::start(SwitchConfig::new("sim", esl, "ClueCon"), tx);
    let (ownership, nodes, callflows): (
        Arc<dyn Ownership>,
        Arc<dyn Nodes>,
        Arc<dyn CallflowStore>,
    ) = match backend {
        Backend::Memory => (
            Arc::new(MemoryOwnership::new(max_calls)),
            Arc::new(MemoryNodes::new(16)),
            Arc::new(MemoryCallflows::new(10)),
        ),
        Backend::Redis(url) => {
            let redis = Arc::new(
                RedisCluster::connect(
                    url,
                    RedisOptions {
                        lease,
                        ..RedisOptions::default()
                    },
                )
                .await
                .unwrap(),
            );
            (redis.clone(), redis.clone(), redis)
        }
    };
    callflows
        .put(Callflow {
            id: String::new(),
            account_id: "0123456789abcdef0123456789abcdef".into(),
            name: None,
            numbers: vec!["3004".into()],
            patterns: vec![],
            flow: serde_json::json!({"module": "pivot", "data": {
                "voice_url": format!("{app}{path}"), "req_format": "twiml"}}),
        })
        .await
        // A second node on the same Redis finds the number taken: the callflow is there.
        .ok();
    let metrics = Metrics::new().unwrap();
    let setups = Arc::new(Mutex::new(Vec::new()));
    let observer = {
        let setups = Arc::clone(&setups);
        SetupObserver(Arc::new(move |d| setups.lock().unwrap().push(d)))
    };
    let engine = Engine::start(
        EngineConfig {
            node_id: id.to_owned(),
            arbiters: 2,
            max_calls,
            cluster: ClusterSettings {
                lease,
                ..ClusterSettings::default()
            },
            setup_observer: Some(observer),
            ..EngineConfig::default()
        },
        Services {
            ownership,
            nodes,
            callflows,
            debug: Arc::new(MemoryDebugStore::new(DebugLimits::default())),
            webhook: WebhookClient::new(ClientConfig {
                allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
                pool_idle_per_host: 256,
                ..ClientConfig::default()
            })
            .unwrap(),
            metrics: metrics.clone(),
        },
        vec![Switch::Inbound(switch)],
        rx,
    );
    while !engine.switches_connected() || !engine.is_accepting() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Node {
        engine,
        metrics,
        setups,
    }
}

pub fn new_call() -> NewCall {
    NewCall {
        to: "3004".into(),
        from: "bench".into(),
        caller_id_name: "Bench".into(),
        caller_id_number: "+15550000000".into(),
        ..NewCall::default()
    }
}

/// Kills the simulator child however the benchmark ends (a panic included), so it never
/// outlives the run holding the output pipe open.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
