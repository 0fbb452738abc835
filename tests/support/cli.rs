//! The `ordertrace` CLI: its path, a run to completion, and its reference API on a free port.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, repo_root, wait_for_port, ChildGuard, TempDir};

/// The `ordertrace` CLI of this build profile (`target/debug/ordertrace` beside the test binary's `deps/`),
/// or a panic telling how to build it. The CLI is another package of the workspace, so cargo does not
/// build it for these tests by itself: `make test` does (`cargo build -p ordertrace-cli`).
pub fn cli_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let p = profile_dir.join("ordertrace");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build -p ordertrace-cli` (make test does)",
        p.display()
    );
    p
}

/// Runs `ordertrace <args>` to completion: (success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cli_bin())
        .current_dir(repo_root())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running ordertrace {args:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ordertrace refapi --service <service>` (shop, crm or mes) on a free port, accepting connections.
pub fn start_refapi(service: &str, dir: &TempDir) -> (ChildGuard, u16) {
    let port = free_port();
    let guard = ChildGuard::cli(
        &format!("refapi {service}"),
        &[
            "refapi",
            "--service",
            service,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &dir.join(&format!("refapi-{service}.out")),
    );
    assert!(
        wait_for_port(port, Duration::from_secs(30)),
        "ordertrace refapi --service {service} did not listen on {port}: {}",
        guard.output_text()
    );
    (guard, port)
}
