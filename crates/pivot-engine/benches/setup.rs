//! Call setup benchmark (issue 6): the whole node path — simulator over ESL at time_scale 0,
//! the real switch client, the engine, a loopback pivot app over real HTTP — beside the raw HTTP
//! round trip to the same app, measured in the same run; then 50 000 concurrent calls held in
//! playback and the engine process's RSS.
//!
//! Run with `cargo bench -p pivot-engine --bench setup` (or `make bench`). Knobs (env):
//! `SETUP_CALLS` (default 20 000), `HOLD_CALLS` (default 50 000).
//!
//! The RSS part runs the simulator in a child process (this same binary, re-executed with
//! `PIVOT_BENCH_ROLE=sim`) so that the figure is the engine's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pivot_switch::sim::{SimConfig, Simulator};

mod support;

use support::{ChildGuard, new_call, node, start_app};

/// The allocator pivotd ships with (crates/pivotd/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if std::env::var("PIVOT_BENCH_ROLE").as_deref() == Ok("sim") {
        return sim_child();
    }
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run passes nothing and
    // should stay quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let setup_calls = env_usize("SETUP_CALLS", if quick { 500 } else { 20_000 });
    let hold_calls = env_usize("HOLD_CALLS", if quick { 500 } else { 50_000 });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = start_app();
    actix_rt::System::new().block_on(async move {
        let raw = raw_round_trips(&format!("{app}/say"), 2_000).await;
        let setups = setups(&app, setup_calls).await;
        println!("call setup (park → first command), simulator at time_scale 0, loopback app:");
        println!(
            "  raw HTTP round trip   p50 {:>8.3} ms   p99 {:>8.3} ms   ({} requests)",
            ms(raw.p50),
            ms(raw.p99),
            raw.count
        );
        println!(
            "  one call at a time    p50 {:>8.3} ms   p99 {:>8.3} ms   ({} calls)",
            ms(setups.sequential.p50),
            ms(setups.sequential.p99),
            setups.sequential.count
        );
        println!(
            "  p50 setup − p50 raw round trip: {:+.3} ms (target ≤ +1 ms)",
            ms(setups.sequential.p50) - ms(raw.p50)
        );
        println!(
            "  throughput            {:>8.0} setups/s ({} calls, {} in flight; target ≥ 2 000/s)",
            setups.per_second, setups.calls, setups.in_flight
        );
        let hold = hold(&app, hold_calls).await;
        println!("concurrent calls in playback (engine process; simulator in a child process):");
        println!(
            "  {} calls live: RSS {:.0} MiB → {:.0} MiB, {:.1} KiB a call (target ≤ 20 KiB, ≤ 1 GiB total)",
            hold.calls,
            hold.rss_before as f64 / 1048576.0,
            hold.rss_after as f64 / 1048576.0,
            (hold.rss_after.saturating_sub(hold.rss_before)) as f64 / 1024.0 / hold.calls as f64
        );
    });
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Quantiles {
    p50: Duration,
    p99: Duration,
    count: usize,
}

fn quantiles(mut samples: Vec<Duration>) -> Quantiles {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Quantiles {
        p50: at(0.5),
        p99: at(0.99),
        count: samples.len(),
    }
}

async fn raw_round_trips(url: &str, count: usize) -> Quantiles {
    let client = reqwest::Client::new();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + 100 {
        let started = Instant::now();
        let body = client
            .get(format!("{url}?Call-ID={i}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(!body.is_empty());
        // The first hundred warm the connection pool up.
        if i >= 100 {
            samples.push(started.elapsed());
        }
    }
    quantiles(samples)
}

struct Setups {
    sequential: Quantiles,
    per_second: f64,
    calls: usize,
    in_flight: usize,
}

async fn setups(app: &str, calls: usize) -> Setups {
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let node = node(app, "/say", sim.esl_addr().to_string(), 20_000).await;
    let completed = || {
        node.metrics
            .calls_total
            .with_label_values(&["completed"])
            .get() as usize
    };

    // Latency: one call at a time, so queueing does not count.
    let sequential = (calls / 10).clamp(200, 2_000);
    for _ in 0..sequential + 50 {
        let before = completed();
        sim.place_call(new_call());
        while completed() == before {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let samples: Vec<Duration> = node.setups.lock().unwrap().drain(..).skip(50).collect();
    let sequential = quantiles(samples);

    // Throughput: keep `in_flight` calls going until `calls` have been set up.
    let in_flight = 256;
    let started = Instant::now();
    let base = completed();
    let mut placed = 0;
    while completed() - base < calls {
        while placed < calls && placed - (completed() - base) < in_flight {
            sim.place_call(new_call());
            placed += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let per_second = calls as f64 / started.elapsed().as_secs_f64();
    node.engine.shutdown();
    sim.shutdown().await;
    Setups {
        sequential,
        per_second,
        calls,
        in_flight,
    }
}

struct Hold {
    calls: usize,
    rss_before: u64,
    rss_after: u64,
}

async fn hold(app: &str, calls: usize) -> Hold {
    let mut child = ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .env("PIVOT_BENCH_ROLE", "sim")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let mut esl = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut esl).unwrap();
    let node = node(app, "/hold", esl.trim().to_owned(), calls + 1_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{calls}").unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let playing = || node.metrics.flow_steps.with_label_values(&["play"]).get() as usize;
    let mut last_report = Instant::now();
    while playing() < calls {
        assert!(
            Instant::now() < deadline,
            "only {} of {calls} calls reached playback",
            playing()
        );
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  … {} calls in playback, {} active, {} setups",
                playing(),
                node.engine.active_calls(),
                node.setups.lock().unwrap().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss();
    let active = node.engine.active_calls();
    node.engine.shutdown();
    drop(stdin);
    Hold {
        calls: active,
        rss_before,
        rss_after,
    }
}

/// Resident set size of this process, from /proc.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The child: a simulator that places the number of calls read from stdin.
fn sim_child() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sim = Simulator::start(SimConfig {
            time_scale: 0.0,
            max_calls: 100_000,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        println!("{}", sim.esl_addr());
        let mut line = String::new();
        let stdin = std::io::stdin();
        tokio::task::block_in_place(|| stdin.lock().read_line(&mut line)).unwrap();
        let calls: usize = line.trim().parse().unwrap_or(0);
        for n in 0..calls {
            sim.place_call(new_call());
            // Paced at about 1 500 calls/s, below the engine's setup rate: faster, parks queue
            // up on the event socket until the listener's queue overflows (FreeSWITCH drops
            // events for a slow listener too).
            if n % 75 == 74 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Hold until the parent kills us.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}
