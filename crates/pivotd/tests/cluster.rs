//! Black-box tests of a pivot cluster (DESIGN §7) with real processes: a `redis-server` per test
//! (a Sentinel and a replica for one), a standalone `pivotd sim` that the nodes reach over ESL
//! exactly as they would FreeSWITCH, several `pivotd serve` nodes sharing it through Redis, and
//! the pivot apps as local wiremock servers.
//!
//! Calls are placed and read through the simulator's HTTP API. Every transcript event caused by
//! an executed app carries its `Event-UUID` (`<call>:<epoch>:<seq>`), so a transcript proves which
//! lease drove each step: one epoch means one owner; epochs that never go back mean no two owners
//! commanded the call at once.
//!
//! The tests run one at a time (a file-wide lock): each starts several processes and the
//! machines that run them may have two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{Node, Sim, http, place_call, spoken};
use pivot_redis_test::{RedisServer, Sentinel};
use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "cccccccccccccccccccccccccccccccc";
const ADMIN: &str = "admin-secret";
/// The node lease of the tests that fail something: short, so that failures are noticed quickly.
const LEASE_MS: u64 = 1000;
/// The default claim grace.
const GRACE_MS: u64 = 300;
/// A prompt, then the word that proves the flow ran to its end.
const TONE_THEN_DONE: &str =
    "<Response><Play>tone_stream://%(3000,0,440)</Play><Say>done</Say></Response>";

// ---- the pieces ---------------------------------------------------------------------------

/// One test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pivot app answering `body` (TwiML) at `/app`, on its own server thread.
struct App {
    server: MockServer,
    _runtime: tokio::runtime::Runtime,
}

impl App {
    fn twiml(body: &str) -> App {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(async {
            let server = MockServer::start().await;
            Mock::given(path("/app"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .insert_header("content-type", "application/xml")
                        .set_body_string(body),
                )
                .mount(&server)
                .await;
            server
        });
        App {
            server,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("{}/app", self.server.uri())
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `pivotd serve` node of the cluster: the simulator as its FreeSWITCH, Redis at `redis_url`,
/// advertising the API port it listens on (chosen here; chosen again if another process took
/// it meanwhile).
fn start_node(id: &str, sim: &Sim, redis_url: &str, lease_ms: u64, grace_ms: u64) -> Node {
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port();
        let toml = format!(
            r#"
[node]
id = "{id}"
advertise = "http://127.0.0.1:{port}"

[api]
listen = "127.0.0.1:{port}"
admin_token = "{ADMIN}"

[switch]
kind = "freeswitch"

[[switch.freeswitch]]
name = "fs1"
address = "{esl}"
password = "ClueCon"

[cluster]
backend = "redis"
redis_url = "{redis_url}"
lease_ms = {lease_ms}
claim_grace_ms = {grace_ms}

[webhook]
allow_cidrs = ["127.0.0.1/32"]

[[accounts]]
id = "{ACCOUNT}"
"#,
            esl = sim.esl
        );
        match Node::try_serve_capturing(&toml, &[]) {
            Ok(node) => return node,
            Err(error) if error.contains("cannot listen") => last_error = error,
            Err(error) => panic!("node {id} did not start: {error}"),
        }
    }
    panic!("node {id} found no free port: {last_error}");
}

fn start_nodes(count: usize, sim: &Sim, redis_url: &str, grace_ms: u64) -> Vec<Node> {
    (1..=count)
        .map(|i| start_node(&format!("node-{i}"), sim, redis_url, LEASE_MS, grace_ms))
        .collect()
}

/// Stores `number` → the pivot app, through one node (Redis shares it with every node).
fn store_callflow(node: &Node, number: &str, app: &App) {
    let flow = json!({"module": "pivot", "data": {"voice_url": app.url(), "req_format": "twiml", "req_timeout_ms": 3000}});
    let body = json!({"data": {"numbers": [number], "flow": flow}});
    let (status, body) = node.send(
        "PUT",
        &format!("/v2/accounts/{ACCOUNT}/callflows"),
        &body.to_string(),
        Some(ADMIN),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
}

fn place(sim: &Sim, number: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| place_call(&sim.http, number, json!([])))
        .collect()
}

/// Every call the simulator knows, by id.
fn views(sim: &Sim) -> HashMap<String, Value> {
    let (status, body) = http(&sim.http, "GET", "/sim/calls", None, None);
    assert_eq!(status, 200, "{body}");
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    list.into_iter()
        .map(|v| (v["call_id"].as_str().unwrap().to_owned(), v))
        .collect()
}

/// Polls until `done` holds for every one of `calls`; returns their views.
fn wait_calls(
    sim: &Sim,
    calls: &[String],
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + within;
    loop {
        let all = views(sim);
        let pending: Vec<&String> = calls
            .iter()
            .filter(|c| !all.get(*c).is_some_and(&done))
            .collect();
        if pending.is_empty() {
            return calls.iter().map(|c| (c.clone(), all[c].clone())).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} calls not {what} within {within:?}; first: {:#}",
            pending.len(),
            calls.len(),
            all.get(pending[0]).cloned().unwrap_or(Value::Null)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hung_up(view: &Value) -> bool {
    view["state"] == "hungup"
}

fn playing(view: &Value) -> bool {
    view["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["kind"] == "played"))
}

/// The epochs of the transcript's events that an executed app caused, in transcript order.
fn epochs(view: &Value) -> Vec<u64> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["app_uuid"].as_str())
        .map(|uuid| {
            let mut parts = uuid.rsplitn(3, ':');
            let _seq = parts.next();
            parts
                .next()
                .and_then(|e| e.parse().ok())
                .unwrap_or_else(|| panic!("app_uuid {uuid:?} is not <call>:<epoch>:<seq>"))
        })
        .collect()
}

/// Never two owners at once: once an epoch-N event is in the transcript, no event of an older
/// epoch follows it.
fn assert_one_owner_at_a_time(view: &Value) {
    let epochs = epochs(view);
    assert!(!epochs.is_empty(), "no app drove the call: {view:#}");
    assert!(
        epochs.windows(2).all(|w| w[0] <= w[1]),
        "an older owner commanded the call after a newer one (epochs {epochs:?}): {view:#}"
    );
}

/// The flow ran to its end: `done` was the last thing said, and the call was hung up normally.
fn assert_done(view: &Value) {
    assert_eq!(
        spoken(view).last().map(String::as_str),
        Some("done"),
        "{view:#}"
    );
    assert_eq!(view["hangup_cause"], "NORMAL_CLEARING", "{view:#}");
}

/// Which node lists each live call of the account in its channels (each call on one node).
fn owners(nodes: &[&Node]) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for node in nodes {
        let list = node.json(&format!("/v2/accounts/{ACCOUNT}/channels"), Some(ADMIN));
        for channel in list["data"].as_array().unwrap() {
            assert_eq!(channel["node"], node.node_id.as_str(), "{channel}");
            let call = channel["call_id"].as_str().unwrap().to_owned();
            if let Some(other) = owners.insert(call.clone(), node.node_id.clone()) {
                panic!("{call} is listed by {other} and {}", node.node_id);
            }
        }
    }
    owners
}

fn wait_readiness(node: &Node, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (now, body) = node.get("/readyz", None);
        if now == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{}: /readyz still {now} ({body}) after {within:?}, expected {status}",
            node.node_id
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn completed(node: &Node) -> f64 {
    node.metric("pivot_calls_total{result=\"completed\"}")
}

/// A TCP proxy in front of Redis for one node: [`Proxy::cut`] drops every proxied connection
/// and refuses new ones (accepted and closed at once), as a network partition would.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
        };
        let (cut, stop, connections) = (
            Arc::clone(&proxy.cut),
            Arc::clone(&proxy.stop),
            Arc::clone(&proxy.connections),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                {
                    let mut open = connections.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` → `to` until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

// ---- claims --------------------------------------------------------------------------------

#[test]
fn racing_claims_give_every_call_exactly_one_owner() {
    let _serial = serial();
    let started = Instant::now();
    let redis = RedisServer::start();
    let sim = Sim::start_scaled(0.0);
    let app = App::twiml("<Response><Say>hi</Say></Response>");
    // No grace: every node claims every call at once, so the claims really race. The default
    // lease (5 s, so Redis operations may take up to 1 s): nothing fails here, and a debug build
    // on a busy machine can be slow.
    let nodes: Vec<Node> = (1..=3)
        .map(|i| start_node(&format!("node-{i}"), &sim, &redis.url(), 5000, 0))
        .collect();
    store_callflow(&nodes[0], "5001", &app);

    // Offered at a steady 200 calls/s (debug builds of four processes share two cores here).
    let offered = Instant::now();
    let calls: Vec<String> = (0..1000)
        .map(|i| {
            let due = offered + Duration::from_millis(5 * i);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            place_call(&sim.http, "5001", json!([]))
        })
        .collect();
    let placed = offered.elapsed();
    // The nodes' counters first: cheap to poll, where a 1 000-call transcript list is not.
    let deadline = Instant::now() + Duration::from_secs(20);
    let counts = loop {
        let counts: Vec<f64> = nodes.iter().map(completed).collect();
        if counts.iter().sum::<f64>() >= 1000.0 || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let views = wait_calls(&sim, &calls, Duration::from_secs(5), "hung up", hung_up);
    for view in views.values() {
        assert_eq!(spoken(view), vec!["hi"], "{view:#}");
        assert_eq!(view["hangup_cause"], "NORMAL_CLEARING", "{view:#}");
        // One claim won at epoch 1, and nothing else ever commanded the call.
        let epochs = epochs(view);
        assert!(
            !epochs.is_empty() && epochs.iter().all(|e| *e == 1),
            "{view:#}"
        );
    }
    // Spread over the three nodes, each call counted once.
    assert_eq!(counts.iter().sum::<f64>(), 1000.0, "{counts:?}");
    assert!(counts.iter().all(|c| *c > 0.0), "{counts:?}");
    for node in &nodes {
        for result in ["failed", "caller_hangup", "handed_over"] {
            let series = format!("pivot_calls_total{{result=\"{result}\"}}");
            assert_eq!(node.metric(&series), 0.0, "{}: {series}", node.node_id);
        }
    }
    println!(
        "1000 calls over 3 nodes: {counts:?} completed; placed in {placed:?}, test took {:?}",
        started.elapsed()
    );
}

// ---- a node dies ---------------------------------------------------------------------------

#[test]
fn a_killed_nodes_calls_are_resumed_by_survivors_within_lease_plus_two_seconds() {
    let _serial = serial();
    let started = Instant::now();
    let redis = RedisServer::start();
    let sim = Sim::start_scaled(1.0);
    let app = App::twiml(TONE_THEN_DONE);
    let mut nodes = start_nodes(3, &sim, &redis.url(), GRACE_MS);
    store_callflow(&nodes[0], "5002", &app);

    let calls = place(&sim, "5002", 30);
    wait_calls(&sim, &calls, Duration::from_secs(10), "playing", playing);
    let owners = owners(&nodes.iter().collect::<Vec<_>>());
    assert_eq!(owners.len(), calls.len(), "{owners:?}");
    let victim = (0..nodes.len())
        .max_by_key(|i| owners.values().filter(|n| **n == nodes[*i].node_id).count())
        .unwrap();
    let victim_id = nodes[victim].node_id.clone();
    let orphans: Vec<String> = owners
        .iter()
        .filter(|(_, node)| **node == victim_id)
        .map(|(call, _)| call.clone())
        .collect();
    assert!(!orphans.is_empty());

    nodes[victim].kill();
    let killed = Instant::now();
    // When each orphan's first event of a newer epoch shows up in its transcript.
    let mut resumed: HashMap<String, Duration> = HashMap::new();
    while resumed.len() < orphans.len() {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "resumed only {resumed:?} of {orphans:?}"
        );
        let all = views(&sim);
        for call in &orphans {
            if !resumed.contains_key(call) && epochs(&all[call]).iter().any(|e| *e > 1) {
                resumed.insert(call.clone(), killed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let slowest = resumed.values().max().copied().unwrap();
    assert!(
        slowest <= Duration::from_millis(LEASE_MS + 2000),
        "resumed after {slowest:?}: {resumed:?}"
    );

    let views = wait_calls(&sim, &calls, Duration::from_secs(20), "hung up", hung_up);
    for (call, view) in &views {
        assert_done(view);
        assert_one_owner_at_a_time(view);
        let newest = *epochs(view).last().unwrap();
        if orphans.contains(call) {
            assert!(newest > 1, "{view:#}");
        } else {
            // The survivors' own calls were never taken from them.
            assert_eq!(newest, 1, "{view:#}");
        }
    }
    println!(
        "{} calls of {victim_id} resumed within {slowest:?} of its SIGKILL (lease {LEASE_MS} ms); \
         test took {:?}",
        orphans.len(),
        started.elapsed()
    );
}

// ---- a node is rolled ------------------------------------------------------------------------

#[test]
fn sigterm_under_load_loses_no_call_and_exits_within_the_grace() {
    let _serial = serial();
    let started = Instant::now();
    let redis = RedisServer::start();
    let sim = Sim::start_scaled(1.0);
    let app = App::twiml(TONE_THEN_DONE);
    let mut nodes = start_nodes(3, &sim, &redis.url(), GRACE_MS);
    store_callflow(&nodes[0], "5003", &app);

    let mut calls = place(&sim, "5003", 30);
    wait_calls(&sim, &calls, Duration::from_secs(10), "playing", playing);
    let owners = owners(&nodes.iter().collect::<Vec<_>>());
    let leaving = (0..nodes.len())
        .max_by_key(|i| owners.values().filter(|n| **n == nodes[*i].node_id).count())
        .unwrap();
    let leaving_id = nodes[leaving].node_id.clone();
    let its_calls: Vec<String> = owners
        .iter()
        .filter(|(_, node)| **node == leaving_id)
        .map(|(call, _)| call.clone())
        .collect();
    assert!(!its_calls.is_empty());

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &nodes[leaving].child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_readiness(&nodes[leaving], 503, Duration::from_secs(2));
    // Calls keep coming while it drains: the other nodes take them.
    calls.extend(place(&sim, "5003", 10));
    let exit = loop {
        if let Some(exit) = nodes[leaving].child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "{leaving_id} did not exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    assert!(exit.success(), "{leaving_id} exited with {exit:?}");

    let views = wait_calls(&sim, &calls, Duration::from_secs(20), "hung up", hung_up);
    let mut handed_over = 0;
    for view in views.values() {
        assert_done(view);
        assert_one_owner_at_a_time(view);
    }
    for call in &its_calls {
        // Finished on the leaving node, or handed over (a newer epoch finished it).
        if epochs(&views[call]).iter().any(|e| *e > 1) {
            handed_over += 1;
        }
    }
    let mut adopted = 0.0;
    for (i, node) in nodes.iter().enumerate() {
        if i != leaving {
            wait_readiness(node, 200, Duration::from_secs(1));
            // A rollout is not a failure: hand-overs are counted apart from takeovers, which
            // page someone.
            assert_eq!(node.metric("pivot_cluster_takeovers_total"), 0.0);
            adopted += node.metric("pivot_cluster_handovers_total");
        }
    }
    assert_eq!(
        adopted,
        f64::from(handed_over),
        "hand-overs adopted by the survivors"
    );
    println!(
        "{leaving_id} left {took:?} after SIGTERM with {} calls ({handed_over} handed over); \
         test took {:?}",
        its_calls.len(),
        started.elapsed()
    );
}

// ---- Redis fails -------------------------------------------------------------------------------

#[test]
fn a_redis_restart_mid_load_leaves_every_node_ready_and_taking_calls() {
    let _serial = serial();
    let started = Instant::now();
    // Persisted on every write, as a production Redis would be configured.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let sim = Sim::start_scaled(1.0);
    let app = App::twiml(TONE_THEN_DONE);
    let mut nodes = start_nodes(3, &sim, &redis.url(), GRACE_MS);
    store_callflow(&nodes[0], "5004", &app);

    let before = place(&sim, "5004", 15);
    wait_calls(&sim, &before, Duration::from_secs(10), "playing", playing);
    redis.kill();
    std::thread::sleep(Duration::from_secs(1));
    redis.restart();
    let restarted = Instant::now();
    for node in &mut nodes {
        assert!(node.is_running(), "{} crashed", node.node_id);
    }
    for node in &nodes {
        wait_readiness(node, 200, Duration::from_secs(10));
    }
    let ready_after = restarted.elapsed();

    let after = place(&sim, "5004", 15);
    let views = wait_calls(&sim, &after, Duration::from_secs(15), "hung up", hung_up);
    for view in views.values() {
        assert_done(view);
        assert_one_owner_at_a_time(view);
    }
    // The calls that were running when Redis went away never had two owners at once either.
    let views = wait_calls(&sim, &before, Duration::from_secs(15), "hung up", hung_up);
    for view in views.values() {
        assert_done(view);
        assert_one_owner_at_a_time(view);
    }
    for node in &mut nodes {
        assert!(node.is_running(), "{} crashed", node.node_id);
    }
    println!(
        "all nodes ready {ready_after:?} after the restart; test took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_node_cut_off_from_redis_fences_itself_and_its_calls_are_adopted() {
    let _serial = serial();
    let started = Instant::now();
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port());
    let sim = Sim::start_scaled(1.0);
    let app =
        App::twiml("<Response><Play>tone_stream://%(4000,0,440)</Play><Say>done</Say></Response>");
    let mut nodes = vec![
        start_node("node-1", &sim, &redis.url(), LEASE_MS, GRACE_MS),
        start_node("node-2", &sim, &redis.url(), LEASE_MS, GRACE_MS),
        start_node("node-3", &sim, &proxy.url(), LEASE_MS, GRACE_MS),
    ];
    store_callflow(&nodes[0], "5005", &app);

    let calls = place(&sim, "5005", 30);
    wait_calls(&sim, &calls, Duration::from_secs(10), "playing", playing);
    let owners = owners(&nodes.iter().collect::<Vec<_>>());
    let cut_off: Vec<String> = owners
        .iter()
        .filter(|(_, node)| *node == "node-3")
        .map(|(call, _)| call.clone())
        .collect();
    assert!(!cut_off.is_empty(), "node-3 owns none of {owners:?}");

    proxy.cut();
    let fenced_after = wait_readiness(&nodes[2], 503, Duration::from_millis(LEASE_MS + 2000));
    let views = wait_calls(&sim, &calls, Duration::from_secs(20), "hung up", hung_up);
    for (call, view) in &views {
        assert_done(view);
        assert_one_owner_at_a_time(view);
        if cut_off.contains(call) {
            assert!(*epochs(view).last().unwrap() > 1, "not adopted: {view:#}");
        }
    }
    // Back on the network, it proves its lease again and takes calls.
    proxy.restore();
    wait_readiness(&nodes[2], 200, Duration::from_secs(10));
    for node in &mut nodes {
        assert!(node.is_running(), "{} crashed", node.node_id);
    }
    println!(
        "node-3 not ready {fenced_after:?} after the cut; its {} calls adopted; test took {:?}",
        cut_off.len(),
        started.elapsed()
    );
}

// ---- Sentinel ------------------------------------------------------------------------------------

/// Waits until the replica has everything the primary had written: a write of ours, then
/// `WAIT` for one replica to acknowledge it (the replication stream is one ordered log, so every
/// earlier write of every client is acknowledged with it).
fn wait_replicated(primary: &RedisServer) {
    let mut stream = TcpStream::connect(("127.0.0.1", primary.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"SET pivot-test:sync 1\r\nWAIT 1 5000\r\n")
        .unwrap();
    let mut reply = String::new();
    let mut buffer = [0u8; 256];
    while reply.lines().count() < 2 {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "the primary closed the connection: {reply:?}");
        reply.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert_eq!(reply, "+OK\r\n:1\r\n", "the replica did not acknowledge");
}

/// The number in a RESP reply (`:N`, or a bulk string holding one).
fn resp_number(reply: &str) -> Option<u64> {
    reply
        .lines()
        .find_map(|l| l.trim_start_matches(':').parse().ok())
}

/// The server's clock, in ms (what it scores leases with).
fn server_time_ms(server: &RedisServer) -> u64 {
    let reply = server.ask("TIME").unwrap();
    let numbers: Vec<u64> = reply
        .lines()
        .filter(|l| !l.starts_with(['*', '$']))
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    numbers[0] * 1000 + numbers[1] / 1000
}

#[test]
fn calls_go_on_through_a_sentinel_failover() {
    let _serial = serial();
    let started = Instant::now();
    let primary = RedisServer::start();
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
    let Some(sentinel) = Sentinel::start(primary.port()) else {
        return;
    };
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let sim = Sim::start_scaled(1.0);
    let app = App::twiml(TONE_THEN_DONE);
    let nodes = start_nodes(3, &sim, &url, GRACE_MS);
    store_callflow(&nodes[0], "5007", &app);

    // The Sentinel learns of the replica from the primary's INFO (every 10 s): the calls are
    // placed once it could fail over, so that the failover happens while they run.
    let replica_port = replica.port().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sentinel
        .ask("SENTINEL REPLICAS mymaster")
        .unwrap_or_default()
        .contains(&replica_port)
    {
        assert!(
            Instant::now() < deadline,
            "the Sentinel never saw the replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = place(&sim, "5007", 15);
    wait_calls(&sim, &before, Duration::from_secs(10), "playing", playing);
    // Replication is asynchronous: fail over once the replica has the claims.
    wait_replicated(&primary);
    // Forced failover: no quorum needed, only a replica the Sentinel knows.
    let failover = Instant::now();
    loop {
        let answer = sentinel
            .ask("SENTINEL FAILOVER mymaster")
            .unwrap_or_default();
        if answer.starts_with("+OK") {
            break;
        }
        assert!(
            failover.elapsed() < Duration::from_secs(20),
            "the Sentinel would not fail over: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while !sentinel
        .ask("SENTINEL get-master-addr-by-name mymaster")
        .unwrap_or_default()
        .contains(&replica_port)
    {
        assert!(
            failover.elapsed() < Duration::from_secs(30),
            "no new master"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The Sentinel demotes the old primary when its next INFO round notices it (up to 10 s);
    // doing it now is the same step, sooner.
    let demote = format!("REPLICAOF 127.0.0.1 {replica_port}");
    assert!(primary.ask(&demote).unwrap().starts_with("+OK"));
    let promoted = failover.elapsed();
    let demoted_ms = server_time_ms(&replica);
    let all = views(&sim);
    let across = before.iter().filter(|c| !hung_up(&all[*c])).count();
    assert!(across > 0, "every call ended before the failover did");

    let views = wait_calls(&sim, &before, Duration::from_secs(20), "hung up", hung_up);
    for view in views.values() {
        assert_done(view);
        assert_one_owner_at_a_time(view);
    }
    // Every node follows the failover: it renews its heartbeat on the new master (a lease
    // expiring later than one renewed before the demotion could).
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in &nodes {
        let key = format!("ZSCORE pivot:nodes {}", node.node_id);
        while resp_number(&replica.ask(&key).unwrap_or_default())
            .is_none_or(|expiry| expiry < demoted_ms + LEASE_MS)
        {
            assert!(
                Instant::now() < deadline,
                "{} never renewed its lease on the new master",
                node.node_id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_readiness(node, 200, Duration::from_secs(10));
    }
    let after = place(&sim, "5007", 15);
    let views = wait_calls(&sim, &after, Duration::from_secs(15), "hung up", hung_up);
    for view in views.values() {
        assert_done(view);
        assert_one_owner_at_a_time(view);
    }
    assert!(
        replica
            .ask("INFO replication")
            .unwrap()
            .contains("role:master")
    );
    println!(
        "failover in {promoted:?}; {across} calls across it and {} after completed; test took {:?}",
        after.len(),
        started.elapsed()
    );
}

// ---- owner routing -------------------------------------------------------------------------

#[test]
fn every_node_answers_the_same_about_a_live_call_and_any_node_hangs_it_up() {
    let _serial = serial();
    let started = Instant::now();
    let redis = RedisServer::start();
    let sim = Sim::start_scaled(1.0);
    let app =
        App::twiml("<Response><Play>tone_stream://%(20000,0,440)</Play><Say>done</Say></Response>");
    let nodes = start_nodes(3, &sim, &redis.url(), GRACE_MS);
    store_callflow(&nodes[0], "5006", &app);

    let calls = place(&sim, "5006", 3);
    wait_calls(&sim, &calls, Duration::from_secs(10), "playing", playing);
    let owners = owners(&nodes.iter().collect::<Vec<_>>());
    for call in &calls {
        let channel = format!("/v2/accounts/{ACCOUNT}/channels/{call}");
        let answers: Vec<Value> = nodes
            .iter()
            .map(|n| n.json(&channel, Some(ADMIN)))
            .collect();
        for (node, answer) in nodes.iter().zip(&answers) {
            assert_eq!(answer["data"]["call_id"], call.as_str(), "{}", node.node_id);
            assert_eq!(
                answer["data"]["node"],
                owners[call].as_str(),
                "{} answered {answer}",
                node.node_id
            );
        }
    }
    // Hang each call up through a node that does not own it.
    for call in &calls {
        let stranger = nodes.iter().find(|n| n.node_id != owners[call]).unwrap();
        let channel = format!("/v2/accounts/{ACCOUNT}/channels/{call}");
        let (status, body) = stranger.send(
            "POST",
            &channel,
            r#"{"data":{"action":"hangup"}}"#,
            Some(ADMIN),
        );
        assert_eq!(status, 202, "{body}");
    }
    let views = wait_calls(&sim, &calls, Duration::from_secs(5), "hung up", hung_up);
    for view in views.values() {
        assert!(spoken(view).is_empty(), "{view:#}");
        assert_eq!(view["hangup_cause"], "NORMAL_CLEARING", "{view:#}");
    }
    println!("test took {:?}", started.elapsed());
}
