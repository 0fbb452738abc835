//! `ordertrace`: the native command line. Subcommands:
//! - `check CONFIG`   validate a plugin config with the same code the filter uses;
//! - `sink`           a local OTLP/HTTP receiver printing one line per span;
//! - `refapi`         small reference upstreams (Shop, CRM, MES) for the demo and the tests;
//! - `trace-id`       the lifecycle trace id of an order.

mod check;
mod httpd;
mod otlp_in;
mod refapi;
mod sink;
mod traceid;
mod watch;

use std::process::ExitCode;

const USAGE: &str = "usage: ordertrace <command> [args]

commands:
  check CONFIG.json            validate a plugin config (the same code the filter runs at load)
  sink [--listen 127.0.0.1:4318] [--jsonl FILE] [--quiet] [--max-body BYTES]
                               local OTLP/HTTP receiver: one readable line per span
  refapi --service shop|crm|mes [--listen ADDR] [--record FILE] [--quiet]
                               reference API upstream used by the demo and the tests
                               (default ports 18000/18001/18002; x-demo-fail: 500 fails a request)
  trace-id ORDER_ID [--config CONFIG.json | --namespace NS] [--url TEMPLATE]
                               the order's lifecycle trace id (and its Jaeger/Tempo URL)
  watch --config CONFIG.json --db FILE [--listen 127.0.0.1:4319] [--retain-closed-days 14]
                               stuck-order detector: OTLP in, SQLite store, /metrics, API, page
  journey ORDER_ID --db FILE [--json]
                               one order's journey from the watch store
  stuck --db FILE [--json]     the orders stuck now, by stage
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "check" => check::run(rest),
        "sink" => sink::run(rest),
        "refapi" => refapi::run(rest),
        "trace-id" => traceid::run(rest),
        "watch" => watch::run(rest),
        "journey" => watch::run_journey(rest),
        "stuck" => watch::run_stuck(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ordertrace: {msg}");
            ExitCode::FAILURE
        }
    }
}
