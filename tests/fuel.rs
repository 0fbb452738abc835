//! Fuel per request: the exact number of wasm instructions `dist/ordertrace.wasm` executes for one
//! request, as Envoy drives it (context create, request headers, body chunks, response headers and
//! body, log, done, delete), on the contract host with wasmtime fuel metering. Deterministic: the
//! same module and inputs always give the same figures, so they guard the filter's own cost
//! (Envoy's CPU is measured separately by `make bench`). Also: guest memory over 100 000 requests.
//!
//! `make bench-fuel` (= `cargo test -p ordertrace-tests --test fuel -- --nocapture`) prints the table recorded in
//! docs/benchmarks.md ("Fuel per request"). Fuel does not depend on how the test binary is built,
//! so the debug build is used.

// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "contract/cases.rs"]
mod cases;
#[allow(dead_code)]
#[path = "contract/dual.rs"]
mod dual;
#[path = "contract/host.rs"]
mod host;

use cases::{filter_wasm, host_options, padded_json, req, Cfg, Exchange};
use dual::{drain_exports, drive};
use host::{Host, HostOptions};

/// Requests measured per scenario (after the warm-up).
const MEASURED: usize = 64;
/// Requests run before measuring: lazily initialised state, first allocations, id pool refill.
const WARM_UP: usize = 8;
/// Drain the export queue every this many requests (the tick is measured separately).
const DRAIN_EVERY: usize = 16;

struct Scenario {
    name: String,
    cfg: Cfg,
    /// The exchange of request `i` (lets a scenario vary the order id).
    exchange: Box<dyn Fn(usize) -> Exchange>,
}

fn scenario(name: &str, cfg: Cfg, exchange: impl Fn(usize) -> Exchange + 'static) -> Scenario {
    Scenario {
        name: name.into(),
        cfg,
        exchange: Box::new(exchange),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Row {
    name: String,
    body_bytes: usize,
    mean: u64,
    min: u64,
    max: u64,
    /// Export cost per span: the ticks and 200 answers that shipped this scenario's spans,
    /// divided by the spans shipped.
    export_per_span: u64,
}

fn fuel_host(cfg: &Cfg) -> Host {
    let opts = HostOptions {
        fuel: true,
        ..host_options()
    };
    Host::configured(filter_wasm(), opts, &cfg.json()).unwrap()
}

fn measure(s: &Scenario) -> Row {
    let mut host = fuel_host(&s.cfg);
    for i in 0..WARM_UP {
        let id = drive(&mut host, &s.name, &(s.exchange)(i));
        host.forget_stream(id);
    }
    drain_exports(&mut host, |_| {});
    let mut samples = Vec::with_capacity(MEASURED);
    let mut export_fuel = 0;
    let mut spans = 0;
    for i in 0..MEASURED {
        let ex = (s.exchange)(WARM_UP + i);
        host.reset_fuel();
        let id = drive(&mut host, &s.name, &ex);
        samples.push(host.fuel_consumed());
        host.forget_stream(id);
        if (i + 1) % DRAIN_EVERY == 0 {
            host.reset_fuel();
            drain_exports(&mut host, |b| spans += dual::spans_of(b).len());
            export_fuel += host.fuel_consumed();
        }
    }
    assert!(host.violations().is_empty(), "{:?}", host.violations());
    let body_bytes = (s.exchange)(0).request_body().len();
    Row {
        name: s.name.clone(),
        body_bytes,
        mean: samples.iter().sum::<u64>() / samples.len() as u64,
        min: samples.iter().copied().min().unwrap_or(0),
        max: samples.iter().copied().max().unwrap_or(0),
        export_per_span: if spans == 0 {
            0
        } else {
            export_fuel / spans as u64
        },
    }
}

/// `{"status": ..., "operatorId": ...}` padded to `size` bytes, the fields last (the scanner
/// reads the whole body: the worst case for a body rule).
fn status_body(size: usize) -> Vec<u8> {
    padded_json(r#""status":"PACKAGING","operatorId":"op-17""#, size, true)
}

/// A notification whose `contact` carries an e-mail address (PII the redaction masks), padded
/// to `size` bytes, the fields last.
fn pii_body(size: usize) -> Vec<u8> {
    padded_json(
        r#""order":{"id":"ORD-8"},"contact":"write to jane.doe@example.com please""#,
        size,
        true,
    )
}

fn scenarios() -> Vec<Scenario> {
    let off = Cfg::default;
    let b1 = status_body(1024);
    let b16 = status_body(16 * 1024);
    let b16c = b16.clone();
    let p1 = pii_body(1024);
    let p16 = pii_body(16 * 1024);
    vec![
        scenario("no matching route (GET /health)", off(), |_| {
            req("GET", "/health")
        }),
        scenario(
            "no matching route, not sampled (ratio 0)",
            off().ratio(0.0),
            |_| req("GET", "/health"),
        ),
        scenario("path-only route (PUT .../{order_id}/model)", off(), |_| {
            req("PUT", "/api/orders/ORD-1001/model")
        }),
        scenario("path-only route, redaction on", off().redaction(), |_| {
            req("PUT", "/api/orders/ORD-1001/model")
        }),
        scenario(
            "path-only route, lifecycle on (new order each time)",
            off().lifecycle(),
            |i| req("PUT", &format!("/api/orders/ORD-{}/model", 100_000 + i)),
        ),
        scenario(
            "path-only route, redaction + lifecycle on (the defaults)",
            off().redaction().lifecycle(),
            // A new order each time: every request is a lifecycle transition.
            |i| req("PUT", &format!("/api/orders/ORD-{}/model", 100_000 + i)),
        ),
        scenario("1 KiB JSON request body (fields last)", off(), move |_| {
            req("PUT", "/api/orders/ORD-1001/status").json(&b1)
        }),
        scenario("16 KiB JSON request body, one chunk", off(), move |_| {
            req("PUT", "/api/orders/ORD-1001/status").json(&b16)
        }),
        scenario(
            "16 KiB JSON request body, 16 x 1 KiB chunks",
            off(),
            move |_| {
                req("PUT", "/api/orders/ORD-1001/status")
                    .json(&b16c)
                    .request_chunked(1024)
            },
        ),
        scenario(
            "1 KiB body with PII, redaction on",
            off().redaction(),
            move |_| req("POST", "/api/notify").json(&p1),
        ),
        scenario(
            "16 KiB body with PII, redaction on",
            off().redaction(),
            move |_| req("POST", "/api/notify").json(&p16),
        ),
    ]
}

/// Fuel per callback of one request without bodies (after the warm-up): where a request's
/// instructions go.
fn phases(cfg: &Cfg, ex: &Exchange) -> [u64; 5] {
    let mut host = fuel_host(cfg);
    for _ in 0..WARM_UP {
        let id = drive(&mut host, "phases", ex);
        host.forget_stream(id);
    }
    drain_exports(&mut host, |_| {});
    let mut out = [0u64; 5];
    host.reset_fuel();
    let s = host.new_http_stream().unwrap();
    out[0] = host.fuel_consumed();
    host.reset_fuel();
    host.request_headers(s, &ex.request_headers_str(), true)
        .unwrap();
    out[1] = host.fuel_consumed();
    host.reset_fuel();
    host.response_headers(s, &ex.response_headers_str().unwrap(), true)
        .unwrap();
    out[2] = host.fuel_consumed();
    host.reset_fuel();
    host.log(s).unwrap();
    out[3] = host.fuel_consumed();
    host.reset_fuel();
    host.done(s).unwrap();
    host.delete(s).unwrap();
    out[4] = host.fuel_consumed();
    out
}

/// Guest memory (linear memory size) after configure, 10 000 and 100 000 requests of a mix of
/// the scenarios above, the collector answering 200 every second of (host) time.
fn memory_over_100k() -> (u64, u64, u64) {
    let cfg = Cfg::default().redaction().lifecycle();
    let mut host = Host::configured(filter_wasm(), host_options(), &cfg.json()).unwrap();
    let start = host.memory_bytes();
    let mix: Vec<Exchange> = vec![
        req("GET", "/health"),
        req("PUT", "/api/orders/ORD-1001/model"),
        req("PUT", "/api/orders/ORD-1001/status").json(&status_body(1024)),
        req("POST", "/api/notify").json(&pii_body(1024)),
        req("POST", "/api/orders")
            .json(br#"{"note":"n"}"#)
            .status(201)
            .respond_json(br#"{"id":"ORD-2002"}"#),
    ];
    let mut at_10k = 0;
    for n in 1..=100_000 {
        let id = drive(&mut host, "memory", &mix[n % mix.len()]);
        host.forget_stream(id);
        if n % 1000 == 0 {
            drain_exports(&mut host, |_| {});
        }
        if n == 10_000 {
            at_10k = host.memory_bytes();
        }
    }
    assert!(host.violations().is_empty(), "{:?}", host.violations());
    assert_eq!(host.counter("ordertrace_spans_dropped"), Some(0));
    (start, at_10k, host.memory_bytes())
}

#[test]
fn fuel_per_request() {
    let rows: Vec<Row> = scenarios().iter().map(measure).collect();
    // Deterministic: measuring again gives the same figures.
    assert_eq!(rows[2], measure(&scenarios()[2]));

    println!();
    println!("Fuel per request (wasm instructions executed by dist/ordertrace.wasm; mean of {MEASURED} requests after {WARM_UP} warm-up)");
    println!();
    println!("| Scenario | Request body | Fuel / request (mean) | min | max | Export / span |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} B | {} | {} | {} | {} |",
            r.name, r.body_bytes, r.mean, r.min, r.max, r.export_per_span
        );
    }
    println!();
    println!("| Fuel per callback | context create | request headers | response headers | log (span built, encoded, queued) | done + delete |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, cfg, ex) in [
        (
            "no matching route, not sampled",
            Cfg::default().ratio(0.0),
            req("GET", "/health"),
        ),
        ("no matching route", Cfg::default(), req("GET", "/health")),
        (
            "path-only route",
            Cfg::default(),
            req("PUT", "/api/orders/ORD-1001/model"),
        ),
        (
            "path-only route, redaction + lifecycle on",
            Cfg::default().redaction().lifecycle(),
            req("PUT", "/api/orders/ORD-1001/model"),
        ),
    ] {
        let p = phases(&cfg, &ex);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            p[0], p[1], p[2], p[3], p[4]
        );
    }
    let (start, at_10k, at_100k) = memory_over_100k();
    println!();
    println!(
        "Guest memory: {start} B after configure, {at_10k} B after 10 000 requests, {at_100k} B after 100 000 requests ({} KiB)",
        at_100k / 1024
    );
    for r in &rows {
        assert!(r.mean > 0 && r.min <= r.mean && r.mean <= r.max, "{r:?}");
    }
    assert_eq!(at_10k, at_100k, "guest memory grew after 10 000 requests");
}
