//! A private RabbitMQ broker for one test: Debian's `rabbitmq-server` started directly (not as the system
//! service) with its own node name, ports (AMQP, distribution, epmd), data and log directories and Erlang
//! cookie, all on 127.0.0.1; stopped (and its epmd killed) on drop.
//!
//! Nothing skips: a missing `rabbitmq-server` is a test failure that says to run `make setup`.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, wait_for_port, TempDir};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

pub struct Rabbit {
    pub dir: TempDir,
    pub port: u16,
    pub node: String,
    dist_port: u16,
    epmd_port: u16,
    child: Option<Child>,
}

fn require_installed() {
    assert!(
        Path::new(SERVER).is_file() && Path::new(CTL).is_file(),
        "{SERVER} is missing: run `make setup` (installs Debian's rabbitmq-server)"
    );
}

impl Rabbit {
    pub fn start() -> Rabbit {
        require_installed();
        let dir = TempDir::new("rabbit");
        let port = free_port();
        let dist_port = free_port();
        let epmd_port = free_port();
        let node = format!("ordertrace{}x{port}@localhost", std::process::id());
        for d in ["home", "mnesia", "log"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n\
                 disk_free_limit.absolute = 1MB\nlog.file.level = info\n"
            ),
        )
        .unwrap();
        let mut r = Rabbit {
            dir,
            port,
            node,
            dist_port,
            epmd_port,
            child: None,
        };
        r.boot();
        r
    }

    fn env(&self, cmd: &mut Command) {
        let d = |n: &str| -> PathBuf { self.dir.join(n) };
        cmd.env("HOME", d("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq"))
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env(
                "RABBITMQ_CTL_DIST_PORT_MIN",
                self.dist_port.saturating_add(1).to_string(),
            )
            .env(
                "RABBITMQ_CTL_DIST_PORT_MAX",
                self.dist_port.saturating_add(20).to_string(),
            );
    }

    fn boot(&mut self) {
        let out = fs::File::create(self.dir.join("server.out")).unwrap();
        let mut cmd = Command::new(SERVER);
        self.env(&mut cmd);
        cmd.current_dir(&self.dir.path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {SERVER}: {e}")),
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "rabbitmq-server exited during start-up ({status}):\n{}",
                    self.diagnostics()
                );
            }
            if wait_for_port(self.port, Duration::from_millis(500)) {
                let o = self.ctl_output(&["await_startup", "--timeout", "60"]);
                if o.status.success() {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!("RabbitMQ not ready within 90 s:\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn diagnostics(&self) -> String {
        let mut s = fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
        if let Ok(entries) = fs::read_dir(self.dir.join("log")) {
            for e in entries.flatten() {
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                s.push_str(&format!("\n--- {} (tail)\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }

    fn ctl_output(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(CTL);
        self.env(&mut cmd);
        cmd.arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {CTL}: {e}"))
    }

    /// `rabbitmqctl <args>` against this node; panics (with its output) when it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let o = self.ctl_output(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "rabbitmqctl {args:?} failed:\n{text}");
        text
    }

    /// Stops the node (its connections are closed with 320 CONNECTION_FORCED).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.ctl_output(&["stop"]);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the node again (same ports, same data).
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("RabbitMQ diagnostics:\n{}", self.diagnostics());
        }
        self.stop();
        // The epmd this node started (on its own port) goes too.
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
