//! `pivotd`: the pivot call controller.
//!
//! Today it validates pivot documents (`pivotd check`); the engine, the HTTP API, the switch
//! adapter and the embedded default arrive with their issues (see ARCHITECTURE.md).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
    }
}
