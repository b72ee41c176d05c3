//! `pivotd sim`: the simulator on its own, for a person or a test to drive.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpServer};
use anyhow::Context;
use pivot_switch::sim::{SimConfig, Simulator};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the event socket listens (FreeSWITCH's default is 127.0.0.1:8021).
    #[arg(long, default_value = "127.0.0.1:8021")]
    esl: SocketAddr,
    /// Where the HTTP API (`/sim/calls`) listens.
    #[arg(long, default_value = "127.0.0.1:8090")]
    http: SocketAddr,
    /// The event socket password.
    #[arg(long, default_value = "ClueCon")]
    password: String,
    /// Multiplies every simulated duration: 1.0 is real time, 0 is instant.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

pub fn run(args: Args) -> ExitCode {
    match actix_web::rt::System::new().block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pivotd sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.time_scale.is_finite() && args.time_scale >= 0.0,
        "--time-scale must be a number >= 0, got {}",
        args.time_scale
    );
    let sim = Simulator::start(SimConfig {
        esl_listen: args.esl,
        password: args.password,
        time_scale: args.time_scale,
        heartbeat_interval: Duration::from_secs(20),
        hostname: "pivot-sim".into(),
        ..SimConfig::default()
    })
    .await
    .with_context(|| format!("cannot listen for ESL on {}", args.esl))?;
    let server = {
        let sim = sim.clone();
        HttpServer::new(move || App::new().configure(crate::sim_api::configure(sim.clone())))
            .workers(1)
            .bind(args.http)
            .with_context(|| format!("cannot listen for HTTP on {}", args.http))?
    };
    // Printed for people and for tests that start it on port 0.
    println!(
        "pivot simulator: esl {} http {}",
        sim.esl_addr(),
        server
            .addrs()
            .first()
            .map_or_else(|| args.http.to_string(), ToString::to_string)
    );
    server.run().await.context("HTTP server")?;
    sim.shutdown().await;
    Ok(())
}
