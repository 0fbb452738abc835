//! The `ordertrace` command line as a user meets it: help and version on stdout with exit 0, usage
//! errors on stderr with exit 2 and the reason on the first line, failures of a command with exit 1.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Command, Stdio};

use ordertrace::order::lifecycle_ids;

mod support;

const SUBCOMMANDS: [&str; 7] = [
    "check", "sink", "refapi", "trace-id", "watch", "journey", "stuck",
];

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(support::cli_bin())
        .args(args)
        .env_remove("ORDERTRACE_CLOCK_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running ordertrace {args:?}: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Help: exit 0, usage on stdout ending with a newline, nothing on stderr.
fn assert_help(args: &[&str], usage: &str) -> String {
    let r = run(args);
    assert_eq!(r.code, Some(0), "ordertrace {args:?}: {}", r.stderr);
    assert!(
        r.stdout.contains(usage),
        "ordertrace {args:?}: no {usage:?} in\n{}",
        r.stdout
    );
    assert!(
        r.stdout.ends_with('\n'),
        "ordertrace {args:?}: no final newline"
    );
    assert_eq!(r.stderr, "", "ordertrace {args:?}");
    r.stdout
}

/// A usage error: exit 2, nothing on stdout, the reason on stderr's first line.
fn assert_usage_error(args: &[&str], reason: &str) {
    let r = run(args);
    assert_eq!(
        r.code,
        Some(2),
        "ordertrace {args:?}: {}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "", "ordertrace {args:?}");
    let first = r.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains(reason),
        "ordertrace {args:?}: first line {first:?} does not say {reason:?}\n{}",
        r.stderr
    );
}

#[test]
fn top_level_help_lists_every_command() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = assert_help(args, "Usage: ordertrace <COMMAND>");
        for cmd in SUBCOMMANDS {
            assert!(
                out.lines().any(|l| l.trim_start().starts_with(cmd)),
                "{cmd} missing in\n{out}"
            );
        }
    }
}

#[test]
fn every_command_has_help() {
    for cmd in SUBCOMMANDS {
        let usage = format!("Usage: ordertrace {cmd}");
        assert_help(&[cmd, "--help"], &usage);
        assert_help(&[cmd, "-h"], &usage);
        assert_help(&["help", cmd], &usage);
    }
    let watch = assert_help(&["watch", "--help"], "--config <CONFIG.json>");
    for flag in [
        "--db <FILE>",
        "--listen <ADDR>",
        "[default: 127.0.0.1:4319]",
        "--max-body <BYTES>",
        "--retain-closed-days <N>",
        "--retain-aggregate-days <N>",
        "--sweep-interval-ms <MS>",
        "--clock-file <FILE>",
    ] {
        assert!(watch.contains(flag), "{flag} missing in\n{watch}");
    }
    assert_help(&["check", "-h"], "<CONFIG.json>");
}

#[test]
fn version_is_the_crate_version() {
    let r = run(&["--version"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let want = format!("ordertrace {}", env!("CARGO_PKG_VERSION"));
    assert!(r.stdout.starts_with(&want), "{:?}", r.stdout);
    assert!(r.stdout.ends_with('\n') && r.stdout.lines().count() == 1);
    assert_eq!(run(&["-V"]).stdout, r.stdout);
}

#[test]
fn no_arguments_prints_help_on_stderr_and_exits_2() {
    let r = run(&[]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.contains("Usage: ordertrace <COMMAND>"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.ends_with('\n'));
}

#[test]
fn usage_errors_exit_2_with_the_reason_first() {
    assert_usage_error(&["--bogus"], "'--bogus'");
    assert_usage_error(&["watch", "--bogus"], "'--bogus'");
    assert_usage_error(&["check", "a.json", "--bogus"], "'--bogus'");
    assert_usage_error(&["frobnicate"], "'frobnicate'");
    assert_usage_error(&["check"], "required");
    assert_usage_error(&["check", "a.json", "b.json"], "'b.json'");
    assert_usage_error(&["watch", "--db", "x.db"], "required");
    assert_usage_error(&["sink", "--listen"], "'--listen <ADDR>'");
    assert_usage_error(&["sink", "--max-body", "lots"], "'--max-body <BYTES>'");
    assert_usage_error(&["sink", "--forward", "https://x/v1"], "only http://");
    assert_usage_error(&["refapi", "--service", "erp"], "'erp'");
    assert_usage_error(&["refapi"], "required");
    assert_usage_error(&["stuck", "--db", "x.db", "--listen", "a"], "'--listen'");
    assert_usage_error(
        &[
            "trace-id",
            "ORD-1",
            "--config",
            "c.json",
            "--namespace",
            "ns",
        ],
        "cannot be used with",
    );
}

#[test]
fn a_failing_command_exits_1_with_its_reason() {
    let r = run(&["check", "/nonexistent/ordertrace-config.json"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .starts_with("ordertrace: /nonexistent/ordertrace-config.json: "),
        "{}",
        r.stderr
    );
    let r = run(&["stuck", "--db", "/nonexistent/watch.db"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("no such store"), "{}", r.stderr);
}

#[test]
fn trace_id_flags_in_any_order_and_repeated_flags_last_wins() {
    let want = lifecycle_ids("orders-v1", "ORD-1").0.to_hex();
    for args in [
        &["trace-id", "ORD-1", "--namespace", "orders-v1"][..],
        &["trace-id", "--namespace", "orders-v1", "ORD-1"],
        &[
            "trace-id",
            "--namespace",
            "x",
            "--namespace",
            "orders-v1",
            "ORD-1",
        ],
    ] {
        let r = run(args);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert!(r.stdout.contains(&want), "{args:?}: {}", r.stdout);
    }
    let r = run(&[
        "trace-id",
        "ORD-1",
        "--namespace",
        "orders-v1",
        "--url",
        "http://127.0.0.1:16686/trace/{trace_id}",
    ]);
    assert!(
        r.stdout
            .ends_with(&format!("http://127.0.0.1:16686/trace/{want}\n")),
        "{}",
        r.stdout
    );
}

#[test]
fn check_accepts_a_config_and_describes_it() {
    let path = std::env::temp_dir().join(format!("ordertrace-cli-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"service": "shop-api", "collector": {"cluster": "otlp_collector"},
            "redaction": {"enabled": false}}"#,
    )
    .unwrap();
    let r = run(&["check", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.starts_with("service: shop-api\n"), "{}", r.stdout);
    assert!(r.stdout.ends_with(": OK\n"), "{}", r.stdout);
}
