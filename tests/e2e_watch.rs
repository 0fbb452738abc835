//! Issue #9 end to end: a stuck order found by `ordertrace watch` behind the real Envoy edges.
//!
//! The shipped Shop, CRM and MES edges (`envoy/*-edge.yaml`, free ports substituted) run
//! `dist/ordertrace.wasm` in front of the reference API (`ordertrace refapi`), and export straight to
//! `ordertrace watch` — the "small install" of docs/watch.md: the edges' `otlp_collector` cluster
//! points at the watch, which keeps the lifecycle spans and ignores the request spans. The watch runs
//! with the Shop edge's own plugin config (the shipped SLAs: price calculation 30 min), a temporary
//! store and a clock file, so the test moves "now" instead of waiting half an hour.
//!
//! Two orders go through the edges: one all the way to CLOSED, one whose price calculation starts
//! (MES `POST /price`, PRICE_CALCULATION_STARTED) and never completes. 20 minutes later nothing is
//! stuck; 45 minutes later exactly the hung order is, at PRICE_CALCULATION_STARTED, with the age
//! between the edge's transition time and the watch's clock — in `/api/stuck`, in its journey
//! (`/api/orders/{id}`: every transition, the service it passed through, the request trace the
//! service saw) and in `ordertrace stuck` run against the same store. Nothing here skips: a missing
//! Envoy or `.wasm` fails with the make target to run.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ordertrace::order::{lifecycle_ids, REFERENCE_STATUSES};
use serde_json::{json, Value};
use support::*;

/// How long the edges (flushing every 100 ms) may take to deliver a transition to the watch.
const WAIT: Duration = Duration::from_secs(30);
/// Pause between two requests, so consecutive transitions have distinct, ordered times.
const GAP: Duration = Duration::from_millis(50);
/// How far the time the edge gives a transition (the end of the request's stream, recorded by the
/// filter once Envoy has finished the stream) may lie outside what the client saw around the request.
/// Envoy and the test read the same system clock, so this is scheduling on a busy 2-core machine plus
/// millisecond rounding; the e2e_lifecycle test measures stage durations with the same margin.
const SLACK_MS: u64 = 200;
const MIN_MS: u64 = 60_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `45m 0s`: how `ordertrace stuck` prints an age between a minute and an hour.
fn minutes_seconds(ms: u64) -> String {
    let s = ms / 1000;
    assert!((60..3600).contains(&s), "{ms} ms");
    format!("{}m {}s", s / 60, s % 60)
}

// ---------------------------------------------------------------------------------------------
// The watch, three reference APIs, three edges exporting to the watch

struct WatchProc {
    _guard: ChildGuard,
    port: u16,
    db: PathBuf,
    clock: PathBuf,
}

impl WatchProc {
    /// `ordertrace watch` on 127.0.0.1:0 (the port is read back from its first line), with `config`,
    /// a fresh store and the clock file set to `clock_ms`.
    fn start(dir: &TempDir, config: &Value, clock_ms: u64) -> WatchProc {
        let config_path = dir.join("watch-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let (db, clock) = (dir.join("watch.db"), dir.join("clock"));
        set_clock(&clock, clock_ms);
        let out = dir.join("watch.out");
        let mut guard = ChildGuard::cli(
            "ordertrace watch",
            &[
                "watch",
                "--config",
                config_path.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--clock-file",
                clock.to_str().unwrap(),
                "--sweep-interval-ms",
                "200",
            ],
            &out,
        );
        let port = poll(Duration::from_secs(30), || {
            if let Ok(Some(status)) = guard.child.try_wait() {
                panic!(
                    "ordertrace watch exited during start-up ({status}): {}",
                    guard.output_text()
                );
            }
            let text = guard.output_text();
            text.split("listening on http://127.0.0.1:")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u16>()
                .ok()
        })
        .unwrap_or_else(|| panic!("ordertrace watch did not listen: {}", guard.output_text()));
        WatchProc {
            _guard: guard,
            port,
            db,
            clock,
        }
    }

    fn set_clock(&self, ms: u64) {
        set_clock(&self.clock, ms);
    }

    fn get_json(&self, path: &str) -> Value {
        let r = http(self.port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "GET {path} on the watch: {}", r.text());
        r.json()
    }

    /// `ordertrace <args> --db <the store> --clock-file <the clock>`, which must succeed.
    fn cli(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend([
            "--db",
            self.db.to_str().unwrap(),
            "--clock-file",
            self.clock.to_str().unwrap(),
        ]);
        let (ok, out, err) = run_cli(&all);
        assert!(ok, "ordertrace {all:?} failed:\n{out}{err}");
        out
    }
}

/// Writes "now" for the watch; a rename, so it never reads a half-written file.
fn set_clock(path: &PathBuf, ms: u64) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, ms.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct EdgeUnderTest {
    service: &'static str,
    port: u16,
    record: PathBuf,
    // Dropped before the API, so the edge never sees its upstream go first.
    _envoy: Envoy,
    _api: ChildGuard,
}

struct Stack {
    shop: EdgeUnderTest,
    crm: EdgeUnderTest,
    mes: EdgeUnderTest,
    watch: WatchProc,
    _dir: TempDir,
}

impl Stack {
    /// Starts everything; Envoy on the calling (test) thread: it dies with the thread that started it.
    fn start(clock_ms: u64) -> Stack {
        envoy_bin();
        wasm_path();
        let dir = TempDir::new("watch-e2e");
        // The watch runs with the Shop edge's plugin config: the edges' own lifecycle and SLAs.
        let watch = WatchProc::start(&dir, &EdgeConfig::load("shop").plugin_json(), clock_ms);
        let edge = |name: &'static str, service: &'static str| {
            let api_port = free_port();
            let record = dir.join(&format!("requests-{name}.jsonl"));
            let api = ChildGuard::cli(
                &format!("refapi {name}"),
                &[
                    "refapi",
                    "--service",
                    name,
                    "--listen",
                    &format!("127.0.0.1:{api_port}"),
                    "--record",
                    record.to_str().unwrap(),
                ],
                &dir.join(&format!("refapi-{name}.out")),
            );
            assert!(
                wait_for_port(api_port, Duration::from_secs(30)),
                "ordertrace refapi --service {name} did not listen: {}",
                api.output_text()
            );
            let ports = EdgePorts {
                listener: free_port(),
                upstream: api_port,
                collector: watch.port,
                admin: free_port(),
            };
            let cfg = EdgeConfig::load(name).ports(&ports).flush_interval_ms(100);
            EdgeUnderTest {
                service,
                port: ports.listener,
                record,
                _envoy: Envoy::start(cfg.yaml()),
                _api: api,
            }
        };
        let shop = edge("shop", "shop-api");
        let crm = edge("crm", "crm-api");
        let mes = edge("mes", "mes-api");
        Stack {
            shop,
            crm,
            mes,
            watch,
            _dir: dir,
        }
    }
}

/// One status change as the client drove it.
#[derive(Debug, Clone)]
struct Step {
    status: &'static str,
    service: &'static str,
    method: &'static str,
    path: String,
    /// Wall-clock times (Unix ms) just before the request and just after the response.
    sent_ms: u64,
    answered_ms: u64,
}

/// Sends one status-changing request through an edge; it must succeed.
fn drive(
    edge: &EdgeUnderTest,
    status: &'static str,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> (Step, Value) {
    std::thread::sleep(GAP);
    let sent_ms = now_ms();
    let resp = match &body {
        Some(b) => http_json(edge.port, method, path, &[], b),
        None => http(edge.port, method, path, &[], b""),
    };
    let answered_ms = now_ms();
    assert!(
        (200..300).contains(&resp.status),
        "{method} {path} through the {} edge: {} {}",
        edge.service,
        resp.status,
        resp.text()
    );
    let answer = resp.json();
    assert_eq!(answer["status"], status, "{method} {path}: {answer}");
    let step = Step {
        status,
        service: edge.service,
        method,
        path: path.to_string(),
        sent_ms,
        answered_ms,
    };
    (step, answer)
}

/// Creates an order on the Shop edge, uploads its model and submits it.
fn create_and_submit(st: &Stack, product: &str) -> (String, Vec<Step>) {
    let (create, answer) = drive(
        &st.shop,
        "INITIATED",
        "POST",
        "/api/orders",
        Some(json!({"product": product, "email": "ann@example.com", "partnerId": "p-17"})),
    );
    let id = answer["id"].as_str().unwrap().to_string();
    let upload = {
        std::thread::sleep(GAP);
        let path = format!("/api/orders/{id}/model");
        let sent_ms = now_ms();
        let r = http(
            st.shop.port,
            "PUT",
            &path,
            &[("content-type", "model/stl")],
            &vec![7u8; 100_000],
        );
        let answered_ms = now_ms();
        assert_eq!(r.status, 200, "model upload: {}", r.text());
        Step {
            status: "FILE_UPLOADED",
            service: st.shop.service,
            method: "PUT",
            path,
            sent_ms,
            answered_ms,
        }
    };
    let submit = drive(
        &st.shop,
        "SUBMITTED",
        "POST",
        &format!("/api/orders/{id}/submit"),
        None,
    )
    .0;
    (id, vec![create, upload, submit])
}

/// Starts the price calculation on MES (202, PRICE_CALCULATION_STARTED).
fn start_price(st: &Stack, id: &str) -> Step {
    drive(
        &st.mes,
        "PRICE_CALCULATION_STARTED",
        "POST",
        &format!("/api/orders/{id}/price"),
        None,
    )
    .0
}

/// The rest of the reference lifecycle, after PRICE_CALCULATION_STARTED. PRICE_CALCULATED (in
/// production the `order.price_calculated` message) is set on MES like the operators' statuses.
fn finish(st: &Stack, id: &str) -> Vec<Step> {
    let status_path = format!("/api/orders/{id}/status");
    let mes_status = |s: &'static str| {
        drive(
            &st.mes,
            s,
            "PUT",
            &status_path,
            Some(json!({"status": s, "operatorId": "op-17"})),
        )
        .0
    };
    let mut steps = vec![mes_status("PRICE_CALCULATED")];
    steps.push(
        drive(
            &st.crm,
            "MANUFACTURING_APPROVED",
            "POST",
            &format!("/api/orders/{id}/approve"),
            Some(json!({"managerId": "m-7"})),
        )
        .0,
    );
    for s in [
        "MANUFACTURING_STARTED",
        "MANUFACTURING_COMPLETED",
        "PACKAGING",
        "SHIPPED",
    ] {
        steps.push(mes_status(s));
    }
    steps.push(
        drive(
            &st.crm,
            "CLOSED",
            "POST",
            &format!("/api/orders/{id}/close"),
            None,
        )
        .0,
    );
    steps
}

/// The order's journey once the watch holds `n` transitions of it.
fn wait_for_journey(w: &WatchProc, id: &str, n: usize) -> Value {
    let path = format!("/api/orders/{id}");
    let mut last = String::new();
    poll(WAIT, || {
        let r = http(w.port, "GET", &path, &[], b"");
        last = format!("{} {}", r.status, r.text());
        (r.status == 200)
            .then(|| r.json())
            .filter(|j| j["transitions"].as_array().map(Vec::len) == Some(n))
    })
    .unwrap_or_else(|| {
        panic!("the watch did not get the {n} transitions of {id} within {WAIT:?}: {last}")
    })
}

/// The trace id of the `traceparent` the upstream received with the `k`-th successful request
/// `method path` (from `ordertrace refapi --record`).
fn upstream_trace_id(edge: &EdgeUnderTest, method: &str, path: &str, k: usize) -> String {
    let text = std::fs::read_to_string(&edge.record).unwrap();
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| {
            r["method"] == method
                && r["path"] == path
                && r["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
        })
        .collect();
    let rec = recs.get(k).unwrap_or_else(|| {
        panic!(
            "no request #{k} {method} {path} at the {} upstream",
            edge.service
        )
    });
    let tp = rec["headers"]["traceparent"].as_str().unwrap_or_else(|| {
        panic!(
            "{method} {path} reached the {} upstream without traceparent: {rec}",
            edge.service
        )
    });
    parse_traceparent(tp)
        .unwrap_or_else(|| panic!("bad traceparent {tp:?}"))
        .0
}

/// The journey lists exactly `steps`, in order, each with the service it passed through, an event
/// time inside what the client saw, and a link to the request trace the upstream service received.
fn check_journey(st: &Stack, journey: &Value, steps: &[Step], earlier: &[Step]) {
    let id = journey["order_id"].as_str().unwrap();
    let ts = journey["transitions"].as_array().unwrap();
    let got: Vec<(&str, &str)> = ts
        .iter()
        .map(|t| {
            (
                t["status"].as_str().unwrap(),
                t["service"].as_str().unwrap(),
            )
        })
        .collect();
    let want: Vec<(&str, &str)> = steps.iter().map(|s| (s.status, s.service)).collect();
    assert_eq!(got, want, "journey of {id}: {journey:#}");
    let mut request_traces: Vec<&str> = Vec::new();
    for (i, (t, step)) in ts.iter().zip(steps).enumerate() {
        let ctx = || format!("{id} {}: {t}", step.status);
        assert_eq!(t["repeat"], false, "{}", ctx());
        assert_eq!(t["skipped"], json!([]), "{}", ctx());
        assert_eq!(t["unexpected"], false, "{}", ctx());
        if i > 0 {
            assert_eq!(t["previous"], steps[i - 1].status, "{}", ctx());
        }
        // The time the edge gave the transition.
        let at_ms = t["at_ns"].as_u64().unwrap() / 1_000_000;
        assert!(
            at_ms + SLACK_MS >= step.sent_ms && at_ms <= step.answered_ms + SLACK_MS,
            "{}: at {at_ms}, the client sent at {} and had the answer at {}",
            ctx(),
            step.sent_ms,
            step.answered_ms
        );
        // The request trace: the one whose traceparent the service itself received.
        let edge = [&st.shop, &st.crm, &st.mes]
            .into_iter()
            .find(|e| e.service == step.service)
            .unwrap();
        let k = earlier
            .iter()
            .chain(&steps[..i])
            .filter(|s| s.service == step.service && s.method == step.method && s.path == step.path)
            .count();
        let seen = upstream_trace_id(edge, step.method, &step.path, k);
        let rt = t["request_trace_id"].as_str().unwrap();
        assert_eq!(rt, seen, "{}", ctx());
        assert_eq!(
            t["request_trace_url"],
            format!("http://localhost:16686/trace/{rt}"),
            "{}",
            ctx()
        );
        request_traces.push(rt);
    }
    let mut distinct = request_traces.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        request_traces.len(),
        "one request trace per transition: {request_traces:?}"
    );
    // The order's own lifecycle trace, as every edge derives it.
    let ns = EdgeConfig::load("shop").plugin_json()["lifecycle"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        journey["lifecycle_trace_id"],
        lifecycle_ids(&ns, id).0.to_hex(),
        "{journey:#}"
    );
}

/// The reference lifecycle one order goes through: CANCELLED aside.
fn reference_chain() -> Vec<&'static str> {
    REFERENCE_STATUSES
        .into_iter()
        .filter(|s| *s != "CANCELLED")
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn an_order_whose_price_calculation_never_completes_is_stuck_with_its_age() {
    let t0 = now_ms();
    let st = Stack::start(t0);
    let w = &st.watch;

    // The hung order: created, uploaded, submitted, its price calculation started — and nothing more.
    let (hung, mut hung_steps) = create_and_submit(&st, "brooch");
    hung_steps.push(start_price(&st, &hung));
    let started = hung_steps.last().unwrap().clone();
    // The other order goes all the way.
    let (done, mut done_steps) = create_and_submit(&st, "ring");
    done_steps.push(start_price(&st, &done));
    done_steps.extend(finish(&st, &done));
    assert_ne!(hung, done);
    assert_eq!(
        done_steps.iter().map(|s| s.status).collect::<Vec<_>>(),
        reference_chain()
    );

    // Both journeys reach the watch, straight from the edges.
    let done_journey = wait_for_journey(w, &done, done_steps.len());
    let hung_journey = wait_for_journey(w, &hung, hung_steps.len());
    check_journey(&st, &hung_journey, &hung_steps, &[]);
    check_journey(&st, &done_journey, &done_steps, &hung_steps);
    assert_eq!(done_journey["status"], "CLOSED");
    assert_eq!(done_journey["terminal"], true);
    assert_eq!(hung_journey["status"], "PRICE_CALCULATION_STARTED");
    assert_eq!(hung_journey["terminal"], false);
    assert_eq!(
        hung_journey["since_ns"], hung_journey["transitions"][3]["at_ns"],
        "in the stage since the edge's PRICE_CALCULATION_STARTED"
    );
    let since_ns = hung_journey["since_ns"].as_u64().unwrap();
    let sla_ms = 30 * MIN_MS; // lifecycle.sla.PRICE_CALCULATION_STARTED of the shipped edges
    assert_eq!(
        EdgeConfig::load("shop").plugin_json()["lifecycle"]["sla"]["PRICE_CALCULATION_STARTED"],
        "30m"
    );
    assert_eq!(hung_journey["sla_ms"], sla_ms);

    // 20 minutes into the calculation: within its SLA, nothing is stuck.
    w.set_clock(started.answered_ms + 20 * MIN_MS);
    let stuck = w.get_json("/api/stuck");
    assert_eq!(stuck["count"], 0, "{stuck:#}");
    assert_eq!(w.cli(&["stuck"]).trim(), "no stuck orders");

    // 45 minutes in: the hung order, and only it, is stuck at PRICE_CALCULATION_STARTED.
    let now_ms = started.answered_ms + 45 * MIN_MS;
    w.set_clock(now_ms);
    let exact_age = (now_ms * 1_000_000 - since_ns) / 1_000_000;
    // Against the client's times: the edge's transition lies in [sent - slack, answered + slack].
    let (lo, hi) = (
        45 * MIN_MS - SLACK_MS,
        45 * MIN_MS + (started.answered_ms - started.sent_ms) + SLACK_MS,
    );
    assert!(
        (lo..=hi).contains(&exact_age),
        "age {exact_age} ms outside {lo}..={hi}"
    );

    let stuck = w.get_json("/api/stuck");
    assert_eq!(stuck["count"], 1, "{stuck:#}");
    let item = &stuck["stuck"][0];
    assert_eq!(item["order_id"], hung.as_str(), "{stuck:#}");
    assert_eq!(item["status"], "PRICE_CALCULATION_STARTED", "{stuck:#}");
    assert_eq!(item["reason"], "sla", "{stuck:#}");
    assert_eq!(item["since_ns"], since_ns, "{stuck:#}");
    assert_eq!(item["age_ms"], exact_age, "{stuck:#}");
    assert_eq!(item["sla_ms"], sla_ms, "{stuck:#}");
    assert_eq!(
        item["trace_url"],
        format!(
            "http://localhost:16686/trace/{}",
            hung_journey["lifecycle_trace_id"].as_str().unwrap()
        )
    );
    assert!(!stuck.to_string().contains(&done), "{stuck:#}");

    let j = w.get_json(&format!("/api/orders/{hung}"));
    assert_eq!(j["stuck"], true, "{j:#}");
    assert_eq!(j["stuck_reasons"], json!(["sla"]), "{j:#}");
    assert_eq!(j["age_ms"], exact_age, "{j:#}");
    assert_eq!(j["now_ns"], now_ms * 1_000_000, "{j:#}");
    let open: Vec<&Value> = j["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["open"] == true)
        .collect();
    assert_eq!(open.len(), 1, "{j:#}");
    assert_eq!(open[0]["kind"], "sla");
    assert_eq!(open[0]["status"], "PRICE_CALCULATION_STARTED");
    assert_eq!(open[0]["since_ns"], since_ns);
    let d = w.get_json(&format!("/api/orders/{done}"));
    assert_eq!(d["stuck"], false, "{d:#}");
    // The edges export independently, so a transition can reach the watch before the one that came
    // before it on another edge: a skip opened then and resolved by the late one. None stays open.
    for g in d["gaps"].as_array().unwrap() {
        assert_eq!(
            (&g["kind"], &g["open"]),
            (&json!("skipped"), &json!(false)),
            "{d:#}"
        );
    }

    // `ordertrace stuck` on the same store and clock prints the same.
    let out = w.cli(&["stuck"]);
    assert!(
        out.starts_with("PRICE_CALCULATION_STARTED (1 stuck)\n"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains(&hung))
        .unwrap_or_else(|| panic!("`ordertrace stuck` does not list {hung}:\n{out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], [hung.as_str(), "sla"], "{out}");
    let age = minutes_seconds(exact_age);
    assert!(line.contains(&format!("for {age}")), "age {age}: {out}");
    assert!(line.contains("SLA 30m 0s"), "{out}");
    assert!(!out.contains(&done), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let as_json: Value = serde_json::from_str(&w.cli(&["stuck", "--json"])).unwrap();
    assert_eq!(as_json, stuck, "`ordertrace stuck --json` = /api/stuck");
    let out = w.cli(&["journey", &hung]);
    assert!(
        out.starts_with(&format!("order {hung}: PRICE_CALCULATION_STARTED since ")),
        "{out}"
    );
    assert!(out.contains("STUCK"), "{out}");
    for s in ["INITIATED", "FILE_UPLOADED", "SUBMITTED"] {
        assert!(
            out.lines().any(|l| l.contains(s) && l.contains("shop-api")),
            "{s} on shop-api: {out}"
        );
    }

    // The watch kept every transition once and ignored the rest of what the edges sent.
    let r = http(w.port, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    let m = parse_prometheus(&r.text());
    let value = |name: &str, labels: &[(&str, &str)]| {
        prom_value(&m, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", r.text()))
    };
    assert_eq!(
        value(
            "ordertrace_watch_transitions_total",
            &[("outcome", "stored")]
        ),
        (hung_steps.len() + done_steps.len()) as f64
    );
    assert_eq!(
        value(
            "ordertrace_watch_transitions_total",
            &[("outcome", "duplicate")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "ordertrace_watch_stuck_orders",
            &[("status", "PRICE_CALCULATION_STARTED"), ("reason", "sla")]
        ),
        1.0
    );
    assert_eq!(
        value("ordertrace_watch_orders", &[("status", "CLOSED")]),
        1.0
    );
    assert_eq!(
        value(
            "ordertrace_watch_export_requests_total",
            &[("result", "bad")]
        ),
        0.0
    );
    assert!(
        value("ordertrace_watch_spans_ignored_total", &[])
            >= (hung_steps.len() + done_steps.len()) as f64,
        "the request spans reach the watch and are ignored: {}",
        r.text()
    );
}
