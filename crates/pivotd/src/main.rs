//! `pivotd`: the pivot call controller.
//!
//! With no arguments it runs the embedded default (a simulated switch, an in-memory cluster,
//! the API on 127.0.0.1:8080 and a demo IVR on number 3004); `serve` runs a node from a config
//! file; `call` places a simulated call and prints what the caller hears; `sim` runs the
//! FreeSWITCH look-alike alone; `check` validates a pivot document.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: a node's work is many small short-lived
/// allocations (ESL events, requests, checkpoints), which glibc's malloc serves at about a
/// sixth of the call-lifecycle benchmark's CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
mod call;
mod check;
mod config;
mod demo;
mod logging;
mod serve;
mod sim;
mod sim_api;

#[derive(Debug, Parser)]
#[command(
    name = "pivotd",
    version,
    about = "pivot: a clustered call controller for KAZOO pivot apps",
    long_about = "pivot: a clustered call controller for KAZOO pivot apps.\n\nWith no command, \
                  runs the embedded default: a simulated switch, an in-memory cluster, the API \
                  on 127.0.0.1:8080 and a demo IVR on number 3004 (try `pivotd call 3004`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node from a config file (every key: deploy/config.example.toml).
    Serve(serve::ServeArgs),
    /// Place a simulated call through a running node and print what the caller hears.
    Call(call::Args),
    /// Validate a KAZOO callflow JSON or TwiML document.
    ///
    /// Prints the parsed flow as JSON on stdout (warnings on stderr) and exits 0 when the
    /// document is valid; prints every error, one per line, on stdout and exits 1 when it is
    /// not; exits 2 when the file cannot be read.
    Check(check::Args),
    /// Run a standalone FreeSWITCH look-alike: nodes connect to its event socket exactly as to
    /// FreeSWITCH; its HTTP API places simulated calls and shows what the caller heard.
    Sim(sim::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve::run_embedded(),
        Some(Command::Serve(args)) => serve::run_serve(args),
        Some(Command::Call(args)) => call::run(args),
        Some(Command::Check(args)) => check::run(&args),
        Some(Command::Sim(args)) => sim::run(args),
    }
}
