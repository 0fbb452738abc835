//! `ordertrace`: the native command line. Each subcommand lives in its own module with its `Args`
//! (parsed by clap; the doc comments are the help text) and a `run` returning `Err(message)` on failure.
//!
//! Exit codes: 0 success (and `--help`, `--version`), 1 the command failed, 2 usage error.

mod check;
mod httpd;
mod otlp_in;
mod refapi;
mod sink;
mod traceid;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Order-level distributed tracing: the native tools around the proxy filter.
#[derive(Parser)]
#[command(
    name = "ordertrace",
    arg_required_else_help = true,
    args_override_self = true,
    after_help = "Run `ordertrace <COMMAND> --help` for a command's options."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a plugin config with the code the filter runs at load, and say what it will do
    Check(check::Args),
    /// Local OTLP/HTTP receiver: one readable line per span
    Sink(sink::Args),
    /// Reference API upstream (Shop, CRM or MES) for the demo and the tests
    Refapi(refapi::Args),
    /// The lifecycle trace id of an order (and its trace URL)
    TraceId(traceid::Args),
    /// Stuck-order detector: OTLP in, SQLite store, /metrics, JSON API and page
    Watch(watch::WatchArgs),
    /// One order's journey from the watch store
    Journey(watch::JourneyArgs),
    /// The orders stuck now, by stage, from the watch store
    Stuck(watch::StuckArgs),
}

/// The version, with the git commit the core's build script stamped (when it knew one).
fn version() -> &'static str {
    match Some(ordertrace::GIT_HASH).filter(|h| !h.is_empty() && *h != "unknown") {
        // Leaked once: clap keeps a `&'static str`, and the process parses its arguments once.
        Some(hash) => Box::leak(format!("{} ({hash})", env!("CARGO_PKG_VERSION")).into_boxed_str()),
        None => env!("CARGO_PKG_VERSION"),
    }
}

fn main() -> ExitCode {
    // Help and version go to stdout with 0; usage errors (and no arguments: help) to stderr with 2.
    let matches = Cli::command().version(version()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Check(a) => check::run(a),
        Command::Sink(a) => sink::run(a),
        Command::Refapi(a) => refapi::run(a),
        Command::TraceId(a) => traceid::run(a),
        Command::Watch(a) => watch::run(a),
        Command::Journey(a) => watch::run_journey(a),
        Command::Stuck(a) => watch::run_stuck(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ordertrace: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
