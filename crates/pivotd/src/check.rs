//! `pivotd check FILE`: what pivot would make of a document, before a caller hears it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pivot_flow::{Document, Format, Limits, ParseError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The document to check; `-` reads standard input.
    file: PathBuf,
    /// Which parser to use; `auto` goes by the file extension (.json, .xml), then the first byte.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Largest document accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    Auto,
    Kazoo,
    Twiml,
}

/// Exit codes: 0 valid, 1 invalid, 2 unreadable.
pub fn run(args: &Args) -> ExitCode {
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        ..Limits::default()
    };
    let body = match read_bounded(&args.file, limits.max_body_bytes) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("pivotd check: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let parsed = match args.format {
        FormatArg::Kazoo => pivot_flow::parse(Format::Kazoo, &body, &limits),
        FormatArg::Twiml => pivot_flow::parse(Format::Twiml, &body, &limits),
        FormatArg::Auto => {
            pivot_flow::parse_response(content_type_hint(&args.file), &body, &limits)
        }
    };
    report(parsed)
}

fn report(parsed: Result<Document, ParseError>) -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let written = match &parsed {
        Ok(doc) => {
            for warning in &doc.warnings {
                eprintln!("{warning}");
            }
            serde_json::to_string_pretty(&doc.flow)
                .map_err(io::Error::other)
                .and_then(|json| writeln!(out, "{json}"))
        }
        Err(err) => err
            .diagnostics
            .iter()
            .try_for_each(|d| writeln!(out, "{d}")),
    };
    match (parsed, written) {
        (_, Err(e)) => {
            eprintln!("pivotd check: cannot write the result: {e}");
            ExitCode::from(2)
        }
        (Ok(_), Ok(())) => ExitCode::SUCCESS,
        (Err(_), Ok(())) => ExitCode::from(1),
    }
}

/// Reads at most `limit + 1` bytes, so that an oversized file is reported as too large by the
/// parser without being read whole into memory.
fn read_bounded(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut body = Vec::new();
    if path == Path::new("-") {
        io::stdin().lock().take(cap).read_to_end(&mut body)?;
    } else {
        File::open(path)?.take(cap).read_to_end(&mut body)?;
    }
    Ok(body)
}

/// The extension stands in for a Content-Type; anything else is sniffed.
fn content_type_hint(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "json" => Some("application/json"),
        "xml" | "twiml" => Some("text/xml"),
        _ => None,
    }
}
