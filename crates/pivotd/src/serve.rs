//! A node: `pivotd` (the embedded default) and `pivotd serve --config FILE`. Wires the switch
//! clients (or the embedded simulator) and the outbound socket listener, the cluster backend,
//! the engine and the HTTP API, and owns the process's signals: SIGTERM drains (readiness off,
//! no new calls, live calls finish or are handed over) before the process exits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use pivot_cluster::{
    Callflow, CallflowStore, DebugLimits, DebugStore, MemoryCallflows, MemoryDebugStore,
    MemoryNodes, MemoryOwnership, Nodes, Ownership, RedisCluster, RedisOptions,
};
use pivot_engine::{
    AccountSettings, ClusterSettings, Engine, EngineConfig, Metrics, Services, TtsSettings,
};
use pivot_switch::sim::{SimConfig, Simulator};
use pivot_switch::{
    OutboundConfig, OutboundServer, Switch, SwitchClient, SwitchConfig, SwitchEvent,
};
use pivot_webhook::{ClientConfig, WebhookClient};
use tokio::sync::mpsc;

use crate::api::{ApiState, Auth};
use crate::config::{ClusterBackend, Config, DEMO_ACCOUNT_ID, SIM_SWITCH_NAME, SwitchKind};

/// Switch events buffered between the clients and the engine's dispatcher.
const EVENT_QUEUE: usize = 16 * 1024;
/// Callflows one node's memory store holds.
const MAX_CALLFLOWS: usize = 100_000;
/// Nodes one in-memory registry tracks (a single node uses one).
const MAX_NODES: usize = 64;
/// How long live calls may take to finish on SIGTERM before they are handed over.

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The TOML config file (every key: deploy/config.example.toml); `PIVOT_*` variables
    /// override it.
    #[arg(long, short, env = "PIVOT_CONFIG")]
    config: PathBuf,
}

/// `pivotd` with no arguments.
pub fn run_embedded() -> ExitCode {
    match Config::load_embedded(std::env::vars()) {
        Ok(config) => run(config, true),
        Err(error) => {
            eprintln!("pivotd: {error}");
            ExitCode::from(2)
        }
    }
}

/// `pivotd serve --config FILE`.
pub fn run_serve(args: ServeArgs) -> ExitCode {
    match Config::load(Some(&args.config), std::env::vars()) {
        Ok(config) => run(config, false),
        Err(error) => {
            eprintln!("pivotd: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(config: Config, demo: bool) -> ExitCode {
    crate::logging::init(&config.log);
    match actix_web::rt::System::new().block_on(node(config, demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "pivotd stopped");
            eprintln!("pivotd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn node(config: Config, demo: bool) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("metrics")?;
    let (events_tx, events_rx) = mpsc::channel::<SwitchEvent>(EVENT_QUEUE);

    let mut simulator = None;
    let mut switches = match config.switch.kind {
        SwitchKind::Sim => {
            let sim_config = &config.switch.sim;
            let esl_listen: SocketAddr = sim_config
                .esl_listen
                .parse()
                .context("switch.sim.esl_listen")?;
            let sim = Simulator::start(SimConfig {
                esl_listen,
                password: sim_config.password.clone(),
                time_scale: sim_config.time_scale,
                heartbeat_interval: Duration::from_secs(20),
                hostname: config.node.id.clone(),
                max_calls: config.engine.max_calls,
            })
            .await
            .with_context(|| format!("cannot start the simulator on {esl_listen}"))?;
            let client = SwitchClient::start(
                SwitchConfig::new(
                    SIM_SWITCH_NAME,
                    sim.esl_addr().to_string(),
                    &sim_config.password,
                ),
                events_tx.clone(),
            );
            simulator = Some(sim);
            vec![Switch::Inbound(client)]
        }
        SwitchKind::Freeswitch => config
            .switch
            .freeswitch
            .iter()
            .map(|fs| {
                Switch::Inbound(SwitchClient::start(
                    SwitchConfig::new(fs.effective_name(), &fs.address, &fs.password),
                    events_tx.clone(),
                ))
            })
            .collect(),
    };
    let outbound = outbound_server(&config, events_tx.clone()).await?;
    if let Some(server) = &outbound {
        switches.push(Switch::Outbound(server.clone()));
    }
    drop(events_tx);
    for switch in &switches {
        // An inbound client reports itself connected with its first SwitchUp; an outbound
        // server is a listener, up from here on (see `Switch::is_connected`).
        metrics
            .switch_connected
            .with_label_values(&[switch.name()])
            .set(i64::from(switch.is_outbound()));
    }

    let stores = match config.cluster.backend {
        ClusterBackend::Memory => Stores::memory(&config),
        ClusterBackend::Redis => Stores::redis(&config).await?,
    };
    let limits = pivot_flow::Limits {
        max_body_bytes: config.webhook.max_body_bytes,
        ..pivot_flow::Limits::default()
    };
    let webhook = WebhookClient::new(ClientConfig {
        allow_cidrs: config.allow_cidrs(),
        limits,
        max_redirects: config.webhook.max_redirects,
        debug_body_bytes: config.webhook.debug_body_bytes,
        ..ClientConfig::default()
    })
    .context("webhook client")?;

    let engine = Engine::start(
        engine_config(&config, limits),
        Services {
            ownership: Arc::clone(&stores.ownership),
            nodes: Arc::clone(&stores.nodes),
            callflows: Arc::clone(&stores.callflows),
            debug: Arc::clone(&stores.debug),
            webhook,
            metrics: metrics.clone(),
        },
        switches,
        events_rx,
    );

    let draining = Arc::new(AtomicBool::new(false));
    let state = web::Data::new(ApiState {
        live: Arc::new(engine.clone()),
        callflows: Arc::clone(&stores.callflows),
        debug: Arc::clone(&stores.debug),
        auth: auth(&config),
        limits,
        metrics: metrics.clone(),
        draining: Arc::clone(&draining),
        forwarder: (config.cluster.backend == ClusterBackend::Redis)
            .then(|| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .no_proxy()
                    .build()
                    .ok()
            })
            .flatten(),
    });
    let listen: SocketAddr = config.api.listen.parse().context("api.listen")?;
    if state.auth.open() && !listen.ip().is_loopback() {
        anyhow::bail!(
            "api.listen is {listen} but no api.admin_token or api.tokens are configured: an open \
             API only listens on loopback"
        );
    }
    let server = {
        let simulator = simulator.clone();
        HttpServer::new(move || {
            let mut app = App::new()
                .configure(crate::api::configure(state.clone()))
                .configure(crate::demo::configure);
            if let Some(sim) = &simulator {
                app = app.configure(crate::sim_api::configure(sim.clone()));
            }
            app
        })
        .disable_signals()
        .shutdown_timeout(5)
        .bind(listen)
        .with_context(|| format!("cannot listen for HTTP on {listen}"))?
    };
    let bound = server.addrs().first().copied().unwrap_or(listen);
    let server = server.run();
    let handle = server.handle();
    let server_task = actix_web::rt::spawn(server);

    if demo {
        install_demo(&*stores.callflows, bound).await?;
    }
    // One line for people and for tests that start pivotd on port 0.
    println!(
        "pivotd {} node {} listening on http://{bound}{}{}",
        env!("CARGO_PKG_VERSION"),
        config.node.id,
        simulator
            .as_ref()
            .map(|s| format!(" (simulator: esl {})", s.esl_addr()))
            .unwrap_or_default(),
        outbound
            .as_ref()
            .map(|o| format!(" (outbound socket: {})", o.local_addr()))
            .unwrap_or_default()
    );
    tracing::info!(
        node = %config.node.id,
        api = %bound,
        advertise = %config.advertise_url(),
        outbound = outbound.as_ref().map(|o| o.local_addr().to_string()),
        "pivotd started"
    );

    wait_for_signal().await;
    tracing::info!(node = %config.node.id, "draining: readiness off, no new calls");
    draining.store(true, Ordering::Release);
    let handed_over = engine
        .drain(Duration::from_secs(config.node.drain_grace_s))
        .await;
    if handed_over > 0 {
        tracing::warn!(calls = handed_over, "calls handed over at shutdown");
    }
    handle.stop(true).await;
    let _ = server_task.await;
    engine.shutdown();
    if let Some(sim) = simulator {
        sim.shutdown().await;
    }
    tracing::info!(node = %config.node.id, "pivotd stopped");
    Ok(())
}

/// The outbound socket listener of `[switch.outbound]`, when it is configured.
async fn outbound_server(
    config: &Config,
    events: mpsc::Sender<SwitchEvent>,
) -> anyhow::Result<Option<OutboundServer>> {
    let section = &config.switch.outbound;
    if !section.enabled() {
        return Ok(None);
    }
    let listen: SocketAddr = section
        .listen
        .trim()
        .parse()
        .context("switch.outbound.listen")?;
    let mut outbound = OutboundConfig::new(&section.name, listen);
    outbound.linger_s = section.linger_s;
    outbound.max_connections = section.max_connections;
    let server = OutboundServer::bind(outbound, events)
        .await
        .with_context(|| format!("cannot listen for outbound socket connections on {listen}"))?;
    Ok(Some(server))
}

/// The cluster backend's four services.
struct Stores {
    ownership: Arc<dyn Ownership>,
    nodes: Arc<dyn Nodes>,
    callflows: Arc<dyn CallflowStore>,
    debug: Arc<dyn DebugStore>,
}

impl Stores {
    fn memory(config: &Config) -> Stores {
        Stores {
            ownership: Arc::new(MemoryOwnership::new(config.engine.max_calls)),
            nodes: Arc::new(MemoryNodes::new(MAX_NODES)),
            callflows: Arc::new(MemoryCallflows::new(MAX_CALLFLOWS)),
            debug: Arc::new(MemoryDebugStore::new(debug_limits(config))),
        }
    }

    /// Redis, connected lazily: a node started while its Redis is down runs, is not ready
    /// (its heartbeat fails, so it claims nothing) and reconnects with backoff — no crash loop.
    async fn redis(config: &Config) -> anyhow::Result<Stores> {
        let lease = Duration::from_millis(config.cluster.lease_ms);
        let defaults = RedisOptions::default();
        let options = RedisOptions {
            lease,
            // A node fences itself when a heartbeat fails 0.6 lease after its last renewal;
            // every Redis operation must fail well within the rest of the lease, so that it
            // is silent before a peer can see its lease expire (and a short lease, valid from
            // 500 ms, must not be refused for being no longer than the default timeout).
            op_timeout: defaults.op_timeout.min(lease / 4),
            debug: debug_limits(config),
            ..defaults
        };
        let cluster = Arc::new(
            RedisCluster::connect_lazy(&config.cluster.redis_url, options)
                .await
                .context("cluster.redis_url")?,
        );
        Ok(Stores {
            ownership: cluster.clone(),
            nodes: cluster.clone(),
            callflows: cluster.clone(),
            debug: cluster,
        })
    }
}

fn debug_limits(config: &Config) -> DebugLimits {
    DebugLimits {
        retention: Duration::from_secs(config.debug.retention_s),
        max_entries_per_call: config.debug.max_entries_per_call,
        max_calls: config.debug.max_calls,
        ..DebugLimits::default()
    }
}

fn engine_config(config: &Config, limits: pivot_flow::Limits) -> EngineConfig {
    let accounts: HashMap<String, AccountSettings> = config
        .accounts
        .iter()
        .map(|a| {
            (
                a.id.clone(),
                AccountSettings {
                    signing_secret: a.signing_secret.clone(),
                    custom_request_headers: a.custom_request_headers.clone(),
                    fallback_url: a.fallback_url.clone(),
                },
            )
        })
        .collect();
    let engine = &config.engine;
    EngineConfig {
        node_id: config.node.id.clone(),
        arbiters: engine.arbiters,
        max_calls: engine.max_calls,
        max_call_duration: Duration::from_secs(engine.max_call_duration_s),
        max_requests_without_media: engine.max_requests_without_media,
        command_margin: Duration::from_millis(engine.command_margin_ms),
        max_prompt: Duration::from_secs(engine.max_prompt_s),
        recordings_dir: engine.recordings_dir.clone(),
        number_dial_template: engine.number_dial_template.clone(),
        tts: TtsSettings {
            engine: config.tts.engine.clone(),
            default_voice: config.tts.default_voice.clone(),
            voices: config
                .tts
                .voices
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        },
        accounts,
        limits,
        default_request_timeout: Duration::from_millis(config.webhook.default_timeout_ms),
        max_restarts: engine.max_restarts,
        panic_marker: std::env::var("PIVOT_TEST_PANIC_MARKER").ok(),
        cluster: ClusterSettings {
            lease: Duration::from_millis(config.cluster.lease_ms),
            claim_grace: Duration::from_millis(config.cluster.claim_grace_ms),
            advertise: config.advertise_url(),
        },
        ..EngineConfig::default()
    }
}

fn auth(config: &Config) -> Auth {
    Auth {
        admin_token: Some(config.api.admin_token.clone()).filter(|t| !t.is_empty()),
        tokens: config
            .api
            .tokens
            .iter()
            .map(|t| (t.token.clone(), t.account_id.clone()))
            .collect(),
    }
}

/// The demo account's callflow: number 3004 → the demo app on this node's own listener.
async fn install_demo(callflows: &dyn CallflowStore, bound: SocketAddr) -> anyhow::Result<()> {
    let base = format!("http://{bound}");
    callflows
        .put(Callflow {
            id: String::new(),
            account_id: DEMO_ACCOUNT_ID.to_owned(),
            name: Some("pivot demo IVR".to_owned()),
            numbers: vec![crate::demo::DEMO_NUMBER.to_owned()],
            patterns: Vec::new(),
            flow: crate::demo::callflow(&base),
        })
        .await
        .context("installing the demo callflow")?;
    Ok(())
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
