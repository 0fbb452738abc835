//! Shared helpers for the integration tests (`mod support;`, then `use support::*;`): the basics here
//! (repository root, free ports, temp dirs, polling, child processes), the rest by concern:
//!
//! - `envoy`: a real Envoy process, the shipped Envoy configs with their demo ports substituted,
//!   `envoy --mode validate`, and [`Edge`] (an Envoy with its own OTLP receiver and upstream);
//! - `otlp`: in-process OTLP/HTTP receivers and the spans they decoded;
//! - `upstream`: an in-process recording upstream, a small HTTP client, traceparent parsing;
//! - `prom`: the Prometheus text format, parsed;
//! - `cli`: running the `ordertrace` CLI, and its reference API.
//!
//! Every public item of those modules is re-exported here, so tests name them `support::Envoy` etc.
//!
//! Nothing here skips: a missing `.venv/bin/envoy` or `dist/ordertrace.wasm` is a test failure that
//! says which make target to run.
#![allow(dead_code)]

#[path = "../../crates/cli/src/httpd.rs"]
pub mod httpd;

mod cli;
mod envoy;
mod otlp;
mod prom;
mod upstream;

// A test crate that uses none of a module's items would see its re-export as an unused import.
#[allow(unused_imports)]
pub use {cli::*, envoy::*, otlp::*, prom::*, upstream::*};

use std::collections::HashSet;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use httpd::hex;

/// The repository root (where `cargo test` and `make` run).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

// ---------------------------------------------------------------------------------------------
// Ports and temp dirs

/// A port that was free a moment ago and that no other caller in this process has been given.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

/// A fresh directory under the system temp dir, removed on drop unless the test is failing.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ordertrace-e2e-{}-{}-{label}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    poll(timeout, || {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .ok()
            .map(|_| ())
    })
    .is_some()
}

/// A child process killed on drop (the CLI's sink and refapi).
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
    pub output: PathBuf,
}

impl ChildGuard {
    /// Runs `ordertrace <args>` with its output in `output`.
    pub fn cli(name: &str, args: &[&str], output: &Path) -> ChildGuard {
        let out = fs::File::create(output).unwrap();
        let child = Command::new(cli_bin())
            .current_dir(repo_root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting ordertrace {args:?}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
            output: output.to_path_buf(),
        }
    }

    pub fn output_text(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.output_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
