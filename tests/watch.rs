//! `ordertrace watch` end to end: the service binary with a temp store and a file clock, OTLP batches
//! built with opentelemetry-proto (duplicates, out-of-order arrivals, restarts), the JSON API,
//! `/metrics`, the terminal commands, retention, and the pages in headless Chromium.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::Link, ResourceSpans, ScopeSpans, Span};
use ordertrace::order::{lifecycle_ids, REFERENCE_STATUSES};
use prost::Message;
use serde_json::Value;

const T0: u64 = 1_700_000_000_000; // ms
const MIN: u64 = 60_000;
const NS: &str = "orders-v1";

/// An edge config (MES transitions only: the watch still knows the whole chain from `statuses`).
const CONFIG: &str = r#"{
  "service": "mes-api",
  "collector": {"cluster": "otlp_collector"},
  "redaction": {"enabled": false},
  "lifecycle": {
    "namespace": "orders-v1",
    "transitions": {"PRICE_CALCULATION_STARTED": ["PRICE_CALCULATED", "CANCELLED"]},
    "sla": {"SUBMITTED": "15m", "PRICE_CALCULATION_STARTED": "30m", "PRICE_CALCULATED": "1d",
            "MANUFACTURING_APPROVED": "2d", "MANUFACTURING_STARTED": "7d",
            "MANUFACTURING_COMPLETED": "1d", "PACKAGING": "2d", "SHIPPED": "14d"},
    "trace_url": "http://localhost:16686/trace/{trace_id}"
  }
}"#;

/// The reference lifecycle one order goes through: CANCELLED aside.
fn chain() -> Vec<&'static str> {
    REFERENCE_STATUSES
        .into_iter()
        .filter(|s| *s != "CANCELLED")
        .collect()
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!(
            "ordertrace-watch-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("config.json"), CONFIG).unwrap();
        Dir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    fn set_clock(&self, ms: u64) {
        std::fs::write(self.path("clock"), ms.to_string()).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Watch {
    child: Child,
    port: u16,
}

impl Watch {
    fn start(dir: &Dir, extra: &[&str]) -> Watch {
        let mut child = Command::new(support::cli_bin())
            .arg("watch")
            .arg("--config")
            .arg(dir.path("config.json"))
            .arg("--db")
            .arg(dir.path("watch.db"))
            .args(["--listen", "127.0.0.1:0", "--clock-file"])
            .arg(dir.path("clock"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let port = line
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no listening line from the service: {line:?}"));
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            if !rest.is_empty() {
                eprint!("[watch] {rest}");
            }
        });
        Watch { child, port }
    }

    fn request(&self, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad response {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (status, body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "text/plain", b"")
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn post(&self, spans: Vec<Span>) {
        let (status, body) = self.request(
            "POST",
            "/v1/traces",
            "application/x-protobuf",
            &export(spans),
        );
        assert_eq!(status, 200, "{body}");
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// The request trace id the test gives a transition.
fn request_trace(order: &str, status: &str) -> Vec<u8> {
    let mut t = lifecycle_ids("requests", &format!("{order}/{status}"))
        .0
         .0
        .to_vec();
    t[0] = 0xab;
    t
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A lifecycle span as the edges emit it.
fn lifecycle_span(order: &str, status: &str, at_ms: u64, service: &str) -> Span {
    let (trace, root) = lifecycle_ids(NS, order);
    let at = at_ms * 1_000_000;
    Span {
        trace_id: trace.0.to_vec(),
        span_id: lifecycle_ids("span", &format!("{order}/{status}/{at_ms}"))
            .1
             .0
            .to_vec(),
        parent_span_id: root.0.to_vec(),
        name: format!("order {status}"),
        kind: 1,
        start_time_unix_nano: at - 5_000_000,
        end_time_unix_nano: at,
        attributes: vec![
            kv("order.id", order),
            kv("order.status", status),
            kv("service.name", service),
        ],
        links: vec![Link {
            trace_id: request_trace(order, status),
            span_id: vec![7; 8],
            attributes: vec![kv("ordertrace.link", "request")],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A request span (SERVER) with the same order attributes: must be ignored.
fn request_span(order: &str, status: &str, at_ms: u64) -> Span {
    Span {
        trace_id: request_trace(order, status),
        span_id: vec![7; 8],
        name: "mes.status".into(),
        kind: 2,
        start_time_unix_nano: at_ms * 1_000_000 - 5_000_000,
        end_time_unix_nano: at_ms * 1_000_000,
        attributes: vec![kv("order.id", order), kv("order.status", status)],
        ..Default::default()
    }
}

fn export(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "edge")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn service_of(status: &str) -> &'static str {
    match status {
        "INITIATED" | "FILE_UPLOADED" | "SUBMITTED" => "shop-api",
        "MANUFACTURING_APPROVED" | "CLOSED" => "crm-api",
        _ => "mes-api",
    }
}

/// Order B: the whole chain, one minute per stage, INITIATED at T0.
fn order_b() -> Vec<Span> {
    chain()
        .iter()
        .enumerate()
        .map(|(k, s)| lifecycle_span("ORD-B", s, T0 + k as u64 * MIN, service_of(s)))
        .collect()
}

fn statuses(journey: &Value) -> Vec<String> {
    journey["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["repeat"].as_bool().unwrap())
        .map(|t| t["status"].as_str().unwrap().to_string())
        .collect()
}

fn cli(dir: &Dir, args: &[&str]) -> String {
    let out = Command::new(support::cli_bin())
        .args(args)
        .arg("--db")
        .arg(dir.path("watch.db"))
        .arg("--clock-file")
        .arg(dir.path("clock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ordertrace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The DOM of a page after load, as headless Chromium renders it.
fn chromium_dom(dir: &Dir, url: &str) -> String {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "headless Chromium is required for the page test: install Debian's `chromium` \
                 (`apt-get update && apt-get install -y chromium`, or `make setup`)"
            )
        });
    let profile = dir.path("chromium-profile");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish rendering {url} in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = reader.join().unwrap();
    assert!(!dom.is_empty(), "chromium printed no DOM for {url}");
    dom
}

#[test]
fn journeys_gaps_restarts_cli_and_pages() {
    let dir = Dir::new("main");
    dir.set_clock(T0 + 4 * MIN);
    let w = Watch::start(&dir, &[]);

    // Order A, out of order: SUBMITTED before INITIATED, then PRICE_CALCULATION_STARTED; FILE_UPLOADED
    // comes last (after a restart).
    w.post(vec![
        lifecycle_span("ORD-A", "SUBMITTED", T0 + 2 * MIN, "shop-api"),
        request_span("ORD-A", "SUBMITTED", T0 + 2 * MIN),
        lifecycle_span("ORD-A", "INITIATED", T0, "shop-api"),
    ]);
    w.post(vec![lifecycle_span(
        "ORD-A",
        "PRICE_CALCULATION_STARTED",
        T0 + 3 * MIN,
        "mes-api",
    )]);
    // Order B in reverse, twice; order C skips PRICE_CALCULATION_STARTED.
    let mut b = order_b();
    b.reverse();
    w.post(b.clone());
    w.post(b);
    w.post(vec![
        lifecycle_span("ORD-C", "SUBMITTED", T0, "shop-api"),
        lifecycle_span("ORD-C", "PRICE_CALCULATED", T0 + 5 * MIN, "mes-api"),
    ]);

    let a = w.json("/api/orders/ORD-A");
    assert_eq!(a["status"], "PRICE_CALCULATION_STARTED");
    assert_eq!(
        statuses(&a),
        ["INITIATED", "SUBMITTED", "PRICE_CALCULATION_STARTED"]
    );
    // INITIATED → SUBMITTED skipped FILE_UPLOADED, for now.
    assert_eq!(a["gaps"][0]["kind"], "skipped");
    assert_eq!(a["gaps"][0]["open"], true);
    let stuck = w.json("/api/stuck");
    let ids: Vec<_> = stuck["stuck"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["order_id"].as_str().unwrap(),
                s["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("ORD-A", "skipped"), ("ORD-C", "skipped")]);

    // Restart in the middle; the late FILE_UPLOADED and a duplicate arrive at the new process.
    w.stop();
    let w = Watch::start(&dir, &[]);
    w.post(vec![
        lifecycle_span("ORD-A", "FILE_UPLOADED", T0 + MIN, "shop-api"),
        lifecycle_span("ORD-A", "SUBMITTED", T0 + 2 * MIN, "shop-api"),
        lifecycle_span("ORD-B", "PACKAGING", T0 + 8 * MIN, "mes-api"),
    ]);
    let a = w.json("/api/orders/ORD-A");
    assert_eq!(
        statuses(&a),
        [
            "INITIATED",
            "FILE_UPLOADED",
            "SUBMITTED",
            "PRICE_CALCULATION_STARTED"
        ]
    );
    assert_eq!(a["transitions"].as_array().unwrap().len(), 4, "{a}");
    assert_eq!(
        a["gaps"][0]["open"], false,
        "the late transition fills the skip"
    );
    for t in a["transitions"].as_array().unwrap().iter().skip(1) {
        assert_eq!(t["stage_duration_ms"], MIN);
        assert_eq!(t["over_sla"], false);
    }
    let t3 = &a["transitions"][3];
    assert_eq!(t3["service"], "mes-api");
    assert_eq!(t3["previous"], "SUBMITTED");
    assert_eq!(t3["stage_sla_ms"], 15 * MIN);
    let rt = hex(&request_trace("ORD-A", "PRICE_CALCULATION_STARTED"));
    assert_eq!(t3["request_trace_id"], rt.as_str());
    assert_eq!(
        t3["request_trace_url"],
        format!("http://localhost:16686/trace/{rt}").as_str()
    );
    assert_eq!(
        a["lifecycle_trace_id"],
        lifecycle_ids(NS, "ORD-A").0.to_hex().as_str()
    );
    let b = w.json("/api/orders/ORD-B");
    assert_eq!(b["status"], "CLOSED");
    assert_eq!(b["terminal"], true);
    assert_eq!(statuses(&b), chain());

    // 45 minutes into PRICE_CALCULATION_STARTED (SLA 30m).
    dir.set_clock(T0 + 48 * MIN);
    let stuck = w.json("/api/stuck");
    let items = stuck["stuck"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{stuck}");
    let sa = &items[0];
    assert_eq!(sa["order_id"], "ORD-A");
    assert_eq!(sa["status"], "PRICE_CALCULATION_STARTED");
    assert_eq!(sa["reason"], "sla");
    assert_eq!(sa["age_ms"], 45 * MIN);
    assert_eq!(sa["sla_ms"], 30 * MIN);
    assert_eq!(items[1]["order_id"], "ORD-C");
    assert_eq!(items[1]["status"], "PRICE_CALCULATED");
    assert_eq!(items[1]["reason"], "skipped");

    // The gap is recorded once: a restart and a later sweep neither lose nor re-raise it.
    w.stop();
    dir.set_clock(T0 + 50 * MIN);
    let w = Watch::start(&dir, &[]);
    let _ = w.json("/api/stuck");
    let a = w.json("/api/orders/ORD-A");
    let sla_gaps: Vec<_> = a["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kind"] == "sla")
        .collect();
    assert_eq!(sla_gaps.len(), 1, "{a}");
    assert_eq!(sla_gaps[0]["detected_ns"], (T0 + 48 * MIN) * 1_000_000);
    assert_eq!(sla_gaps[0]["open"], true);
    assert_eq!(a["stuck"], true);
    assert_eq!(a["age_ms"], 47 * MIN);

    // A duplicate after the restart is counted as such; metrics.
    w.post(vec![lifecycle_span(
        "ORD-B",
        "CLOSED",
        T0 + 10 * MIN,
        "crm-api",
    )]);
    let (status, m) = w.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "ordertrace_watch_orders{status=\"CLOSED\"} 1",
        "ordertrace_watch_orders{status=\"PRICE_CALCULATION_STARTED\"} 1",
        "ordertrace_watch_orders{status=\"PRICE_CALCULATED\"} 1",
        "ordertrace_watch_stuck_orders{status=\"PRICE_CALCULATION_STARTED\",reason=\"sla\"} 1",
        "ordertrace_watch_stuck_orders{status=\"PRICE_CALCULATED\",reason=\"skipped\"} 1",
        "ordertrace_watch_stuck_orders{status=\"SUBMITTED\",reason=\"sla\"} 0",
        "ordertrace_watch_stage_duration_ms_count{from=\"INITIATED\",to=\"FILE_UPLOADED\"} 2",
        "ordertrace_watch_stage_duration_ms_bucket{from=\"SUBMITTED\",to=\"PRICE_CALCULATED\",le=\"300000\"} 1",
        "ordertrace_watch_stage_duration_ms_bucket{from=\"SUBMITTED\",to=\"PRICE_CALCULATED\",le=\"60000\"} 0",
        "ordertrace_watch_transitions_total{outcome=\"duplicate\"} 1",
        "ordertrace_watch_gaps{kind=\"sla\",state=\"open\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }

    // The terminal commands print the same.
    let out = cli(&dir, &["stuck"]);
    assert!(out.contains("PRICE_CALCULATION_STARTED (1 stuck)"), "{out}");
    assert!(
        out.contains("ORD-A") && out.contains("47m 0s") && out.contains("30m 0s"),
        "{out}"
    );
    let out = cli(&dir, &["stuck", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stuck"][0]["age_ms"], 47 * MIN);
    let out = cli(&dir, &["journey", "ORD-A"]);
    assert!(
        out.contains("order ORD-A: PRICE_CALCULATION_STARTED"),
        "{out}"
    );
    assert!(out.contains("STUCK"), "{out}");
    assert!(
        out.contains("after 1m 0s in SUBMITTED (SLA 15m 0s)"),
        "{out}"
    );
    assert!(out.contains(&rt), "{out}");

    // The page, rendered by headless Chromium.
    let dom = chromium_dom(&dir, &format!("http://127.0.0.1:{}/", w.port));
    assert!(
        dom.contains("data-stage=\"PRICE_CALCULATION_STARTED\""),
        "{dom}"
    );
    assert!(dom.contains("data-order=\"ORD-A\""), "{dom}");
    assert!(dom.contains("47m 0s"), "{dom}");
    assert!(dom.contains("data-order=\"ORD-C\""), "{dom}");
    assert!(!dom.contains("data-order=\"ORD-B\""), "{dom}");
    let dom = chromium_dom(&dir, &format!("http://127.0.0.1:{}/orders/ORD-A", w.port));
    assert!(dom.contains("<span id=\"order-id\">ORD-A</span>"), "{dom}");
    assert!(
        dom.contains("<b id=\"current-status\">PRICE_CALCULATION_STARTED</b>"),
        "{dom}"
    );
    for s in ["INITIATED", "FILE_UPLOADED", "SUBMITTED"] {
        assert!(dom.contains(&format!("data-status=\"{s}\"")), "{s}: {dom}");
    }
    assert!(dom.contains("SLA 30m 0s"), "{dom}");
    assert!(
        dom.contains(&format!("href=\"http://localhost:16686/trace/{rt}\"")),
        "{dom}"
    );
    assert!(dom.contains("id=\"stuck\""), "{dom}");
}

#[test]
fn bad_payloads_limits_and_retention() {
    let dir = Dir::new("limits");
    dir.set_clock(T0 + 20 * MIN);
    let w = Watch::start(&dir, &["--max-body", "4096", "--sweep-interval-ms", "100"]);
    let (status, _) = w.request(
        "POST",
        "/v1/traces",
        "application/x-protobuf",
        b"\xff\xff\xff\xff",
    );
    assert_eq!(status, 400);
    let (status, _) = w.request(
        "POST",
        "/v1/traces",
        "application/x-protobuf",
        &[0u8; 10_000],
    );
    assert_eq!(status, 413);
    let (status, _) = w.request("POST", "/v1/traces", "application/json", b"{}");
    assert_eq!(status, 415);
    assert_eq!(w.get("/v1/traces").0, 405);
    assert_eq!(w.get("/api/orders/NOPE").0, 404);
    assert_eq!(w.get("/orders/NOPE").0, 404);
    w.post(order_b());
    w.post(vec![
        lifecycle_span("ORD-D", "SUBMITTED", T0, "shop-api"),
        lifecycle_span("ORD-E", "SUBMITTED", T0, "shop-api"),
        lifecycle_span("ORD-E", "CANCELLED", T0 + MIN, "shop-api"),
    ]);
    let (_, m) = w.get("/metrics");
    for line in [
        "ordertrace_watch_export_requests_total{result=\"bad\"} 2",
        "ordertrace_watch_export_requests_total{result=\"too_large\"} 1",
        "ordertrace_watch_export_requests_total{result=\"ok\"} 2",
        "ordertrace_watch_transitions_total{outcome=\"stored\"} 14",
        "ordertrace_watch_stuck_orders{status=\"SUBMITTED\",reason=\"sla\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    // A cancelled order is not watched.
    let stuck = w.json("/api/stuck");
    assert_eq!(stuck["count"], 1, "{stuck}");
    assert_eq!(stuck["stuck"][0]["order_id"], "ORD-D");

    // 13 days later nothing is purged; after 14 days the closed and cancelled orders' transitions go.
    dir.set_clock(T0 + 13 * 1440 * MIN);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        w.json("/api/orders/ORD-B")["transitions"]
            .as_array()
            .unwrap()
            .len(),
        11
    );
    dir.set_clock(T0 + 15 * 1440 * MIN);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = w.json("/api/orders/ORD-B");
        if b["purged"] == true {
            assert_eq!(b["transitions"].as_array().unwrap().len(), 0);
            break;
        }
        assert!(Instant::now() < deadline, "retention did not run: {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(w.json("/api/orders/ORD-E")["purged"], true);
    // The open order is kept; a late duplicate does not resurrect a purged one.
    assert_eq!(
        w.json("/api/orders/ORD-D")["transitions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    w.post(vec![lifecycle_span(
        "ORD-B",
        "SHIPPED",
        T0 + 9 * MIN,
        "mes-api",
    )]);
    let b = w.json("/api/orders/ORD-B");
    assert_eq!(b["transitions"].as_array().unwrap().len(), 0);
    assert_eq!(b["status"], "CLOSED");
    let (_, m) = w.get("/metrics");
    assert!(
        m.lines()
            .any(|l| l == "ordertrace_watch_transitions_total{outcome=\"purged_order\"} 1"),
        "{m}"
    );
}
