//! `make bench`: the ESL client driving the simulator over TCP at `time_scale` 0.
//!
//! 1. Call lifecycles per second — park → answer → speak → hangup, many calls in flight —
//!    target ≥ 5 000/s on 2 cores.
//! 2. Commands per second on one connection, one at a time (each awaiting its reply, as a client
//!    with a single pending-reply slot such as freeswitch-esl-tokio must) beside pipelined (many
//!    awaiting at once, replies matched by the FIFO), in the same run: the measurement behind
//!    writing our own client (ARCHITECTURE.md).

/// The allocator pivotd ships with (see crates/pivotd/src/main.rs), so the figure is the
/// product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pivot_switch::sim::{DialAnswer, NewCall, SimConfig, Simulator};
use pivot_switch::{Command, CommandId, SwitchClient, SwitchConfig, SwitchEvent};
use tokio::sync::mpsc;

const CALLS: usize = 20_000;
const IN_FLIGHT: usize = 500;
const COMMANDS: usize = 20_000;
const WAVE: usize = 1_000;

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return eprintln!("cannot start the runtime: {e}"),
    };
    runtime.block_on(async {
        if let Err(e) = run().await {
            eprintln!("benchmark failed: {e}");
        }
    });
}

async fn run() -> Result<(), String> {
    let sim = Simulator::start(SimConfig {
        esl_listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        password: "ClueCon".into(),
        time_scale: 0.0,
        heartbeat_interval: Duration::from_secs(20),
        hostname: "bench".into(),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let (tx, mut events) = mpsc::channel(64 * 1024);
    let client = SwitchClient::start(
        SwitchConfig::new("bench", sim.esl_addr().to_string(), "ClueCon"),
        tx,
    );
    match events.recv().await {
        Some(SwitchEvent::SwitchUp { .. }) => {}
        other => return Err(format!("expected SwitchUp, got {other:?}")),
    }

    let lifecycles = lifecycles(&sim, &client, &mut events).await?;
    let (one_at_a_time, pipelined) = commands(&client).await?;

    println!("ESL client + simulator, time_scale 0, 2 worker threads");
    println!(
        "{:<44} {:>12.0} /s   ({CALLS} calls, {IN_FLIGHT} in flight)",
        "call lifecycles (park→answer→speak→hangup)", lifecycles
    );
    println!(
        "{:<44} {:>12.0} /s",
        "api commands, one awaited at a time", one_at_a_time
    );
    println!("{:<44} {:>12.0} /s", "api commands, pipelined", pipelined);
    println!(
        "{:<44} {:>11.2}x",
        "pipelined / one at a time",
        pipelined / one_at_a_time
    );
    client.shutdown();
    sim.shutdown().await;
    Ok(())
}

/// Drives calls from the event stream as a state machine: each event triggers the next
/// command; new calls are placed as others end, keeping `IN_FLIGHT` in progress.
async fn lifecycles(
    sim: &Simulator,
    client: &SwitchClient,
    events: &mut mpsc::Receiver<SwitchEvent>,
) -> Result<f64, String> {
    let new_call = || NewCall {
        to: "3004".into(),
        from: "bench".into(),
        caller_id_name: "Bench".into(),
        caller_id_number: "+15550000000".into(),
        account_id: None,
        script: Vec::new(),
        dial_answer: DialAnswer::Answer,
    };
    let started = Instant::now();
    let mut placed = 0;
    let mut done = 0;
    let mut steps: HashMap<String, u64> = HashMap::new();
    while placed < IN_FLIGHT.min(CALLS) {
        sim.place_call(new_call());
        placed += 1;
    }
    while done < CALLS {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .map_err(|_| format!("stalled after {done} calls"))?
            .ok_or("event channel closed")?;
        let (call_id, next) = match event {
            SwitchEvent::Parked(info) => (info.call_id, 1),
            SwitchEvent::Completed { call_id, .. } => {
                let step = steps.get(&call_id).copied().unwrap_or(0);
                (call_id, step + 1)
            }
            SwitchEvent::Hangup { call_id, .. } => {
                steps.remove(&call_id);
                done += 1;
                if placed < CALLS {
                    sim.place_call(new_call());
                    placed += 1;
                }
                continue;
            }
            _ => continue,
        };
        steps.insert(call_id.clone(), next);
        let client = client.clone();
        tokio::spawn(async move {
            let id = CommandId::new(&call_id, 1, next);
            let result = match next {
                1 => client.execute(&call_id, &id, &Command::Answer).await,
                2 => {
                    let speak = Command::Speak {
                        engine: "flite".into(),
                        voice: "kal".into(),
                        text: "Welcome".into(),
                        terminators: String::new(),
                    };
                    client.execute(&call_id, &id, &speak).await
                }
                _ => client.hangup(&call_id, "NORMAL_CLEARING").await,
            };
            if let Err(e) = result {
                eprintln!("{call_id}: {e}");
            }
        });
    }
    Ok(CALLS as f64 / started.elapsed().as_secs_f64())
}

/// Commands per second, sequential and pipelined, on the same connection.
async fn commands(client: &SwitchClient) -> Result<(f64, f64), String> {
    let started = Instant::now();
    for _ in 0..COMMANDS {
        client
            .api("uuid_exists 00000000-0000-0000-0000-000000000000")
            .await
            .map_err(|e| e.to_string())?;
    }
    let sequential = COMMANDS as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    // In waves, so the number of replies awaited stays under the client's bound.
    for _ in 0..COMMANDS / WAVE {
        let mut tasks = Vec::with_capacity(WAVE);
        for _ in 0..WAVE {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .api("uuid_exists 00000000-0000-0000-0000-000000000000")
                    .await
            }));
        }
        for task in tasks {
            task.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
    }
    let pipelined = COMMANDS as f64 / started.elapsed().as_secs_f64();
    Ok((sequential, pipelined))
}
