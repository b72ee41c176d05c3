//! Cluster benchmark (issue 7), all in one run against a real `redis-server`:
//! - call setup throughput with the Redis backend beside the in-memory backend (target ≥ 0.7×);
//! - Redis commands per call (target: claim + one write per step + release);
//! - the time survivors take to resume every call of a killed node (target ≤ lease + 2 s).
//!
//! Run with `cargo bench -p pivot-engine --bench cluster` (or `make bench`). Knobs (env):
//! `CLUSTER_SETUP_CALLS` (default 10 000), `TAKEOVER_CALLS` (default 10 000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pivot_switch::sim::{SimConfig, Simulator};
use support::{Backend, ChildGuard, new_call, node_on, start_app};

/// The allocator pivotd ships with (crates/pivotd/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LEASE: Duration = Duration::from_secs(2);

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let setup_calls = env_usize("CLUSTER_SETUP_CALLS", if quick { 300 } else { 10_000 });
    let takeover_calls = env_usize("TAKEOVER_CALLS", if quick { 300 } else { 10_000 });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (redis, redis_addr) = start_redis();
    let url = format!("redis://{redis_addr}");
    let app = start_app();
    actix_rt::System::new().block_on(async move {
        let (memory, _) = throughput(&app, &Backend::Memory, setup_calls).await;
        let before = redis_commands(&redis_addr);
        let (with_redis, ownership_ops) =
            throughput(&app, &Backend::Redis(url.clone()), setup_calls).await;
        let commands = redis_commands(&redis_addr) - before;
        println!("call setups, simulator at time_scale 0, loopback app, one node (same run):");
        println!("  in-memory backend   {memory:>8.0} setups/s ({setup_calls} calls)");
        println!(
            "  Redis backend       {with_redis:>8.0} setups/s   ratio {:.2}x (target ≥ 0.7x)",
            with_redis / memory
        );
        println!(
            "  ownership round trips per call: {ownership_ops:.2} (the claim, carrying the \
             checkpoint before the pivot request; a checkpoint before each later step — say, \
             hang up; finish; each one Lua script on a multiplexed connection that pipelines \
             all calls' requests), plus one callflow lookup"
        );
        println!(
            "  commands Redis executed per call, inside scripts included: {:.1}",
            commands as f64 / setup_calls as f64
        );
        if std::env::var_os("CLUSTER_COMMANDSTATS").is_some() {
            println!(
                "{}",
                redis_query(&redis_addr, "INFO commandstats").unwrap_or_default()
            );
        }
        // The takeover runs its own callflow for the same number.
        redis_query(&redis_addr, "FLUSHALL");
        let (first, resumed) = takeover(&app, &url, takeover_calls).await;
        println!(
            "takeover: {takeover_calls} calls in playback on a node that dies, lease {} s:",
            LEASE.as_secs()
        );
        println!(
            "  all resumed by the survivor {:.2} s after the kill (target ≤ lease + 2 s = {} s)",
            resumed.as_secs_f64(),
            LEASE.as_secs() + 2
        );
        println!(
            "  first resumed {:.2} s after the kill (the lease running out and being noticed), \
             then {:.0} calls/s adopted",
            first.as_secs_f64(),
            takeover_calls as f64 / (resumed - first).as_secs_f64().max(1e-3)
        );
    });
    drop(redis);
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_redis() -> (ChildGuard, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("pivot-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_query(&addr, "PING").is_none() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (ChildGuard(child), addr)
}

/// One inline command, its raw reply.
fn redis_query(addr: &str, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&reply);
                // A simple reply, or a bulk string once its announced length has arrived.
                if text.starts_with('+') && text.ends_with("\r\n") {
                    break;
                }
                if let Some(rest) = text.strip_prefix('$')
                    && let Some((len, body)) = rest.split_once("\r\n")
                    && body.len() >= len.parse::<usize>().unwrap_or(0)
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// Commands clients sent the server (`total_commands_processed`: a Lua script is one command,
/// whatever it does inside), minus the INFO itself.
fn redis_commands(addr: &str) -> u64 {
    redis_query(addr, "INFO stats")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(0, |n| n.saturating_sub(1))
}

/// Setups per second of one node on `backend`, 256 calls in flight.
async fn throughput(app: &str, backend: &Backend, calls: usize) -> (f64, f64) {
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let node = node_on(
        app,
        "/say",
        sim.esl_addr().to_string(),
        20_000,
        "bench-node",
        backend,
        LEASE,
    )
    .await;
    let completed = || {
        node.metrics
            .calls_total
            .with_label_values(&["completed"])
            .get() as usize
    };
    let started = Instant::now();
    let mut placed = 0;
    while completed() < calls {
        while placed < calls && placed - completed() < 256 {
            sim.place_call(new_call());
            placed += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let per_second = calls as f64 / started.elapsed().as_secs_f64();
    let ownership_ops: u64 = pivot_engine::metrics::OWNERSHIP_OPS
        .iter()
        .map(|op| {
            node.metrics
                .cluster_op_duration
                .with_label_values(&[op])
                .get_sample_count()
        })
        .sum();
    node.engine.shutdown();
    sim.shutdown().await;
    (per_second, ownership_ops as f64 / calls as f64)
}

/// A node takes `calls` calls into endless playback and dies; how long until a second node has
/// resumed every one of them.
/// When the first and the last call of the killed node were resumed, from the kill.
async fn takeover(app: &str, url: &str, calls: usize) -> (Duration, Duration) {
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0,
        max_calls: calls + 1_000,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let backend = Backend::Redis(url.to_owned());
    let esl = sim.esl_addr().to_string();
    let victim = node_on(
        app,
        "/hold",
        esl.clone(),
        calls + 1_000,
        "victim",
        &backend,
        LEASE,
    )
    .await;
    let playing =
        |node: &support::Node| node.metrics.flow_steps.with_label_values(&["play"]).get() as usize;
    for n in 0..calls {
        sim.place_call(new_call());
        // Below the node's setup rate, so the event socket never overflows.
        if n % 75 == 74 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while playing(&victim) < calls {
        assert!(
            Instant::now() < deadline,
            "{} of {calls} playing",
            playing(&victim)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivor = node_on(
        app,
        "/hold",
        esl,
        calls + 1_000,
        "survivor",
        &backend,
        LEASE,
    )
    .await;
    // Let the survivor see the victim alive (a few heartbeats), as in a running cluster.
    tokio::time::sleep(LEASE / 2).await;
    victim.engine.shutdown();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(120);
    let mut first = None;
    while survivor.metrics.cluster_takeovers.get() < calls as u64 {
        if first.is_none() && survivor.metrics.cluster_takeovers.get() > 0 {
            first = Some(killed.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "{} of {calls} resumed",
            survivor.metrics.cluster_takeovers.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed = killed.elapsed();
    survivor.engine.shutdown();
    sim.shutdown().await;
    (first.unwrap_or(resumed), resumed)
}
