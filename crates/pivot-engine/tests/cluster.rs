//! Several engines (nodes) in one process sharing one simulator and one in-memory cluster:
//! each call is driven by exactly one node, a node that dies has its calls resumed by a
//! survivor, a node that drains hands its calls over. The same engine code runs against Redis
//! in pivotd's black-box tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pivot_cluster::{
    Callflow, CallflowStore, DebugLimits, MemoryCallflows, MemoryDebugStore, MemoryNodes,
    MemoryOwnership, Ownership,
};
use pivot_engine::{ClusterSettings, Engine, EngineConfig, Metrics, Services};
use pivot_switch::sim::{CallView, NewCall, SimConfig, Simulator};
use pivot_switch::{OutboundConfig, OutboundServer, Switch, SwitchClient, SwitchConfig};
use pivot_webhook::{ClientConfig, WebhookClient};
use serde_json::json;
use tokio::sync::mpsc;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const LEASE: Duration = Duration::from_millis(800);

struct Cluster {
    sim: Simulator,
    nodes: Vec<Option<Engine>>,
    ownership: Arc<MemoryOwnership>,
    /// Each node's outbound socket listener, when the calls come in that way.
    outbound: Vec<SocketAddr>,
}

/// How calls reach the nodes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Every node connects to the simulator's event socket and sees every call.
    Inbound,
    /// Every node listens for the simulator's `socket` connections; a call reaches one node.
    Outbound,
}

async fn cluster(count: usize, time_scale: f64, app: &str) -> Cluster {
    cluster_with(
        count,
        time_scale,
        app,
        Way::Inbound,
        Duration::from_millis(150),
    )
    .await
}

async fn cluster_with(
    count: usize,
    time_scale: f64,
    app: &str,
    way: Way,
    claim_grace: Duration,
) -> Cluster {
    cluster_of(count, time_scale, app, way, claim_grace, &[]).await
}

/// `full`: nodes started with no room for calls (`max_calls` 0).
async fn cluster_of(
    count: usize,
    time_scale: f64,
    app: &str,
    way: Way,
    claim_grace: Duration,
    full: &[usize],
) -> Cluster {
    let sim = Simulator::start(SimConfig {
        time_scale,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ownership = Arc::new(MemoryOwnership::new(100_000));
    let registry = Arc::new(MemoryNodes::new(16));
    let callflows = Arc::new(MemoryCallflows::new(10));
    callflows
        .put(Callflow {
            id: String::new(),
            account_id: "0123456789abcdef0123456789abcdef".into(),
            name: None,
            numbers: vec!["3004".into()],
            patterns: vec![],
            flow: json!({"module": "pivot", "data": {"voice_url": app, "req_format": "twiml"}}),
        })
        .await
        .unwrap();
    let debug = Arc::new(MemoryDebugStore::new(DebugLimits::default()));
    let mut nodes = Vec::new();
    let mut outbound = Vec::new();
    for n in 0..count {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let switch = match way {
            Way::Inbound => Switch::Inbound(SwitchClient::start(
                SwitchConfig::new("sim", sim.esl_addr().to_string(), "ClueCon"),
                tx,
            )),
            Way::Outbound => {
                // One name on every node, as one config deployed to every node gives.
                let config = OutboundConfig::new("outbound", "127.0.0.1:0".parse().unwrap());
                let server = OutboundServer::bind(config, tx).await.unwrap();
                outbound.push(server.local_addr());
                Switch::Outbound(server)
            }
        };
        let engine = Engine::start(
            EngineConfig {
                node_id: format!("node-{n}"),
                arbiters: 1,
                max_calls: if full.contains(&n) { 0 } else { 10_000 },
                cluster: ClusterSettings {
                    lease: LEASE,
                    claim_grace,
                    advertise: format!("http://node-{n}"),
                },
                ..EngineConfig::default()
            },
            Services {
                ownership: ownership.clone(),
                nodes: registry.clone(),
                callflows: callflows.clone(),
                debug: debug.clone(),
                webhook: WebhookClient::new(ClientConfig {
                    allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
                    ..ClientConfig::default()
                })
                .unwrap(),
                metrics: Metrics::new().unwrap(),
            },
            vec![switch],
            rx,
        );
        nodes.push(Some(engine));
    }
    // Every node connected and seen live by the others (a few heartbeats).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.iter().flatten().all(Engine::switches_connected) {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(LEASE / 2).await;
    Cluster {
        sim,
        nodes,
        ownership,
        outbound,
    }
}

fn new_call() -> NewCall {
    NewCall {
        to: "3004".into(),
        from: "caller".into(),
        caller_id_name: "Caller".into(),
        caller_id_number: "+15550000000".into(),
        ..NewCall::default()
    }
}

impl Cluster {
    fn call(&self) -> String {
        self.sim.place_call(new_call())
    }

    /// A call whose dialplan is `socket <node n's listener> async full`.
    fn socket_call(&self, node: usize) -> String {
        self.sim.place_socket_call(new_call(), self.outbound[node])
    }

    async fn finished(&self, calls: &[String], within: Duration) -> Vec<CallView> {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<CallView> = calls.iter().map(|c| self.sim.call(c).unwrap()).collect();
            if views.iter().all(|v| v.state == "hungup") {
                return views;
            }
            assert!(
                Instant::now() < deadline,
                "{} calls still up",
                views.iter().filter(|v| v.state != "hungup").count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// For each call: the (connection, epoch) pairs its executes came from.
    fn drivers(&self) -> BTreeMap<String, BTreeSet<(u64, u64)>> {
        let mut drivers: BTreeMap<String, BTreeSet<(u64, u64)>> = BTreeMap::new();
        for command in self.sim.command_log() {
            let (Some(call), Some(uuid)) = (command.call_id, command.event_uuid) else {
                continue;
            };
            let epoch = uuid
                .split(':')
                .rev()
                .nth(1)
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            drivers
                .entry(call)
                .or_default()
                .insert((command.connection, epoch));
        }
        drivers
    }
}

fn spoken(view: &CallView) -> Vec<String> {
    view.events
        .iter()
        .filter(|e| e.kind == "spoke")
        .filter_map(|e| e.text.clone())
        .collect()
}

fn twiml(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/xml")
        .set_body_string(body)
}

#[actix_rt::test]
async fn each_call_is_driven_by_exactly_one_of_three_nodes() {
    let app = MockServer::start().await;
    Mock::given(path("/ivr"))
        .respond_with(twiml("<Response><Say>hello</Say></Response>"))
        .mount(&app)
        .await;
    let cluster = cluster(3, 0.0, &format!("{}/ivr", app.uri())).await;
    let calls: Vec<String> = (0..300).map(|_| cluster.call()).collect();
    let views = cluster.finished(&calls, Duration::from_secs(30)).await;
    for view in &views {
        assert_eq!(spoken(view), vec!["hello"], "{view:#?}");
    }
    let drivers = cluster.drivers();
    let mut per_connection: BTreeMap<u64, usize> = BTreeMap::new();
    for call in &calls {
        let set = &drivers[call];
        assert_eq!(set.len(), 1, "call {call} driven by {set:?}");
        *per_connection
            .entry(set.iter().next().unwrap().0)
            .or_default() += 1;
    }
    // Rendezvous hashing spreads the calls over every node.
    assert_eq!(per_connection.len(), 3, "{per_connection:?}");
}

#[actix_rt::test]
async fn a_full_node_leaves_calls_to_its_peers_and_a_full_cluster_refuses_them() {
    let app = MockServer::start().await;
    Mock::given(path("/ivr"))
        .respond_with(twiml("<Response><Say>hello</Say></Response>"))
        .mount(&app)
        .await;
    let url = format!("{}/ivr", app.uri());
    let grace = Duration::from_millis(100);
    // One of three nodes has no room: every call is still driven, by the others.
    let cluster = cluster_of(3, 0.0, &url, Way::Inbound, grace, &[1]).await;
    let calls: Vec<String> = (0..60).map(|_| cluster.call()).collect();
    for view in cluster.finished(&calls, Duration::from_secs(30)).await {
        assert_eq!(spoken(&view), vec!["hello"], "{view:#?}");
    }
    drop(cluster);
    // Every node full: each call is refused once, with congestion, after the grace.
    let cluster = cluster_of(2, 0.0, &url, Way::Inbound, grace, &[0, 1]).await;
    let calls: Vec<String> = (0..10).map(|_| cluster.call()).collect();
    for view in cluster.finished(&calls, Duration::from_secs(10)).await {
        assert_eq!(
            view.hangup_cause.as_deref(),
            Some("SWITCH_CONGESTION"),
            "{view:#?}"
        );
        assert!(spoken(&view).is_empty(), "{view:#?}");
    }
}

#[actix_rt::test]
async fn a_dead_nodes_calls_are_resumed_by_survivors_within_the_lease_and_two_seconds() {
    let app = MockServer::start().await;
    Mock::given(path("/ivr"))
        .respond_with(twiml(
            "<Response><Play>tone_stream://%(2500,0,440)</Play><Say>done</Say></Response>",
        ))
        .mount(&app)
        .await;
    let mut cluster = cluster(3, 1.0, &format!("{}/ivr", app.uri())).await;
    let calls: Vec<String> = (0..30).map(|_| cluster.call()).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Every call is in its playback; node-0 dies without a word (its actors and heartbeat stop).
    let victim = cluster.nodes[0].take().unwrap();
    let victims_calls = victim.channels(None).len();
    assert!(victims_calls > 0, "node-0 drove no call");
    victim.shutdown();
    let killed = Instant::now();
    let views = cluster.finished(&calls, Duration::from_secs(15)).await;
    for view in &views {
        assert_eq!(spoken(view), vec!["done"], "{view:#?}");
    }
    let drivers = cluster.drivers();
    let resumed: Vec<&String> = calls.iter().filter(|c| drivers[*c].len() > 1).collect();
    assert_eq!(resumed.len(), victims_calls, "{drivers:?}");
    for call in &resumed {
        let epochs: BTreeSet<u64> = drivers[*call].iter().map(|d| d.1).collect();
        assert_eq!(epochs.len(), 2, "one epoch per owner: {:?}", drivers[*call]);
    }
    // Resumed within lease + 2 s: the replayed playback (2.5 s) plus the Say ended in time.
    assert!(
        killed.elapsed() < LEASE + Duration::from_secs(2) + Duration::from_millis(3_500),
        "{:?}",
        killed.elapsed()
    );
}

#[actix_rt::test]
async fn a_draining_node_hands_its_calls_over_and_none_is_lost() {
    let app = MockServer::start().await;
    Mock::given(path("/ivr"))
        .respond_with(twiml(
            "<Response><Play>tone_stream://%(2000,0,440)</Play><Say>done</Say></Response>",
        ))
        .mount(&app)
        .await;
    let mut cluster = cluster(2, 1.0, &format!("{}/ivr", app.uri())).await;
    let calls: Vec<String> = (0..20).map(|_| cluster.call()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaving = cluster.nodes[0].take().unwrap();
    assert!(!leaving.channels(None).is_empty());
    let handed_over = leaving.drain(Duration::ZERO).await;
    assert!(handed_over > 0);
    assert_eq!(leaving.active_calls(), 0);
    leaving.shutdown();
    let views = cluster.finished(&calls, Duration::from_secs(10)).await;
    for view in &views {
        assert_eq!(spoken(view), vec!["done"], "{view:#?}");
    }
}

#[actix_rt::test]
async fn outbound_calls_are_driven_by_the_node_they_reach_and_end_with_it() {
    let app = MockServer::start().await;
    Mock::given(path("/ivr"))
        .respond_with(twiml(
            "<Response><Play>tone_stream://%(2500,0,440)</Play><Say>done</Say></Response>",
        ))
        .mount(&app)
        .await;
    // A claim grace far above the test's waits: a node that ranked itself after its peer (as
    // it would for about half of inbound calls) would not have answered in time.
    let mut cluster = cluster_with(
        2,
        1.0,
        &format!("{}/ivr", app.uri()),
        Way::Outbound,
        Duration::from_secs(5),
    )
    .await;
    let calls: Vec<String> = (0..6).map(|_| cluster.socket_call(0)).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Every call is in its playback on node-0, claimed at once; node-1 never saw them.
    let victim = cluster.nodes[0].take().unwrap();
    assert_eq!(victim.channels(None).len(), calls.len());
    assert!(calls.iter().all(|c| {
        let view = cluster.sim.call(c).unwrap();
        view.events.iter().any(|e| e.kind == "played") || view.state == "answered"
    }));
    let survivor = cluster.nodes[1].as_ref().unwrap();
    assert_eq!(survivor.active_calls(), 0);
    // node-0 dies: its connections close with it, and FreeSWITCH, with nothing after `socket`
    // in the dialplan, hangs each call up.
    victim.shutdown();
    let views = cluster.finished(&calls, Duration::from_secs(5)).await;
    for view in &views {
        assert_eq!(
            view.hangup_cause.as_deref(),
            Some("NORMAL_CLEARING"),
            "{view:#?}"
        );
        assert!(spoken(view).is_empty(), "{view:#?}");
    }
    // Once node-0's lease has run out, node-1 adopts its records, finds no connection for any
    // of them and finishes them: nothing is left to adopt again, nothing was commanded.
    let deadline = Instant::now() + LEASE * 4 + Duration::from_secs(2);
    loop {
        let left = cluster.ownership.calls(None, 100).await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "records left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivor = cluster.nodes[1].as_ref().unwrap();
    assert_eq!(survivor.active_calls(), 0);
    // Finished at adoption, before any actor ran for them.
    assert_eq!(survivor.metrics().cluster_takeovers.get(), 0);
    let drivers = cluster.drivers();
    for call in &calls {
        assert_eq!(drivers[call].len(), 1, "call {call}: {:?}", drivers[call]);
        assert!(drivers[call].iter().all(|(_, epoch)| *epoch == 1));
    }
    // A fresh call to the survivor still runs to its end there.
    let fresh = cluster.socket_call(1);
    let view = &cluster.finished(&[fresh], Duration::from_secs(10)).await[0];
    assert_eq!(spoken(view), vec!["done"], "{view:#?}");
}

#[actix_rt::test]
async fn a_draining_node_refuses_outbound_calls_rather_than_leave_them_silent() {
    let app = MockServer::start().await;
    Mock::given(path("/ivr"))
        .respond_with(twiml("<Response><Say>hello</Say></Response>"))
        .mount(&app)
        .await;
    let cluster = cluster_with(
        1,
        0.0,
        &format!("{}/ivr", app.uri()),
        Way::Outbound,
        Duration::from_millis(150),
    )
    .await;
    let before = cluster.socket_call(0);
    let view = &cluster.finished(&[before], Duration::from_secs(10)).await[0];
    assert_eq!(spoken(view), vec!["hello"], "{view:#?}");
    let node = cluster.nodes[0].as_ref().unwrap();
    node.drain(Duration::ZERO).await;
    // No peer will ever see this call: it is refused at once, as at max_calls.
    let during = cluster.socket_call(0);
    let view = &cluster.finished(&[during], Duration::from_secs(5)).await[0];
    assert_eq!(
        view.hangup_cause.as_deref(),
        Some("SWITCH_CONGESTION"),
        "{view:#?}"
    );
    assert!(spoken(view).is_empty(), "{view:#?}");
    node.shutdown();
}
