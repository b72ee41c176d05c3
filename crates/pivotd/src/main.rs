//! `pivotd`: the pivot call controller.
//!
//! Today it validates pivot documents (`pivotd check`) and runs the FreeSWITCH look-alike
//! simulator (`pivotd sim`); the engine, the node's HTTP API and the embedded default arrive
//! with their issues (see ARCHITECTURE.md).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
#[allow(dead_code)]
mod config;
mod sim;
mod sim_api;

#[derive(Debug, Parser)]
#[command(
    name = "pivotd",
    version,
    about = "pivot: a clustered call controller for KAZOO pivot apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        Command::Check(args) => check::run(&args),
        Command::Sim(args) => sim::run(args),
    }
}
