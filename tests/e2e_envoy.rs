//! End to end against the real Envoy (`.venv/bin/envoy`, `make setup`) running the built
//! `dist/ordertrace.wasm` (`make build`), with the shipped `envoy/*.yaml` (demo ports substituted),
//! an in-process upstream that records what reached it and an in-process OTLP receiver that decodes
//! the protobuf. Each test starts its own Envoy, so they run in parallel.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;

/// How long to wait for spans or metrics (flush interval in tests: 100 ms).
const WAIT: Duration = Duration::from_secs(15);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const STATUS_ERROR: i32 = 2;

fn upstream_ok() -> Upstream {
    Upstream::fixed(200, json!({"ok": true}))
}

/// An upstream that answers the status given in `x-test-status` (default 200) with a JSON body.
fn upstream_scripted_by_header() -> Upstream {
    Upstream::start(|r| {
        let status = r
            .header("x-test-status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        Reply::json(status, &json!({"status": status}))
    })
}

fn prepend_route(cfg: &mut Value, route: Value) {
    cfg["routes"].as_array_mut().unwrap().insert(0, route);
}

// ---------------------------------------------------------------------------------------------
// W3C trace context

#[test]
fn incoming_trace_is_continued_and_the_edge_span_is_the_upstream_parent() {
    let edge = Edge::start("shop", |_| {}, OtlpMode::Ok, upstream_ok());
    let tp = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let r = http(
        edge.port(),
        "POST",
        "/api/orders/ORD-42/submit",
        &[("traceparent", &tp), ("tracestate", tracestate)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let up = edge.upstream.last_to("/api/orders/ORD-42/submit");
    assert_eq!(up.headers_named("traceparent").len(), 1, "{:?}", up.headers);
    let sent = up.header("traceparent").unwrap();
    let (trace_id, parent_id, flags) = parse_traceparent(sent)
        .unwrap_or_else(|| panic!("upstream got an invalid traceparent {sent:?}"));
    assert_eq!(trace_id, TRACE_ID, "the incoming trace id must be kept");
    assert_ne!(
        parent_id, PARENT_ID,
        "the upstream's parent must be the edge span, not the caller"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        up.header("tracestate"),
        Some(tracestate),
        "tracestate passes through untouched"
    );

    let span = edge
        .otlp
        .wait_for_span_with("shop.submit", "order.id", "ORD-42", WAIT);
    assert_eq!(span.trace_id(), TRACE_ID);
    assert_eq!(
        span.span_id(),
        parent_id,
        "exported span id = the parent id sent upstream"
    );
    assert_eq!(
        span.parent_span_id(),
        PARENT_ID,
        "exported span's parent = the inbound span id"
    );
    assert_eq!(span.span.kind, SpanKind::Server as i32);
    assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    assert!(
        span.span.start_time_unix_nano > 1_600_000_000_000_000_000,
        "start time is Unix nanos"
    );

    // What the filter sent to the collector.
    let export = &edge.otlp.requests()[0];
    assert_eq!(export.path, "/v1/traces");
    let ctype = export
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        ctype,
        Some("application/x-protobuf"),
        "{:?}",
        export.headers
    );
}

#[test]
fn no_traceparent_starts_a_new_trace() {
    let edge = Edge::start("shop", |_| {}, OtlpMode::Ok, upstream_ok());
    let r = http(edge.port(), "POST", "/api/orders/ORD-43/submit", &[], b"");
    assert_eq!(r.status, 200);
    let up = edge.upstream.last_to("/api/orders/ORD-43/submit");
    let (trace_id, parent_id, flags) = parse_traceparent(up.header("traceparent").unwrap_or(""))
        .unwrap_or_else(|| panic!("upstream must get a valid traceparent: {:?}", up.headers));
    assert_eq!(flags, "01", "sampling ratio 1.0 samples new roots");
    let span = edge
        .otlp
        .wait_for_span_with("shop.submit", "order.id", "ORD-43", WAIT);
    assert_eq!(span.trace_id(), trace_id);
    assert_eq!(span.span_id(), parent_id);
    assert_eq!(span.parent_span_id(), "", "a new root has no parent");
    assert!(
        edge.envoy
            .wait_for_stat("ordertrace_traceparent_created", 1, WAIT)
            >= 1
    );
    assert_eq!(
        edge.envoy
            .ordertrace_stat("ordertrace_traceparent_malformed"),
        0
    );
}

#[test]
fn malformed_traceparent_starts_a_new_trace_and_is_counted() {
    let edge = Edge::start("shop", |_| {}, OtlpMode::Ok, upstream_ok());
    let vectors = [
        ("missing flags", format!("00-{TRACE_ID}-{PARENT_ID}")),
        (
            "all-zero trace id",
            format!("00-{}-{PARENT_ID}-01", "0".repeat(32)),
        ),
        (
            "all-zero parent id",
            format!("00-{TRACE_ID}-{}-01", "0".repeat(16)),
        ),
        (
            "uppercase hex",
            format!("00-{}-{PARENT_ID}-01", TRACE_ID.to_uppercase()),
        ),
        (
            "version ff is forbidden",
            format!("ff-{TRACE_ID}-{PARENT_ID}-01"),
        ),
        (
            "short trace id",
            format!("00-{}-{PARENT_ID}-01", &TRACE_ID[1..]),
        ),
        ("not hex", format!("00-{}-{PARENT_ID}-01", "g".repeat(32))),
        ("garbage", "hello".to_string()),
    ];
    for (i, (reason, tp)) in vectors.iter().enumerate() {
        let path = format!("/api/orders/MAL-{i}/submit");
        let r = http(edge.port(), "POST", &path, &[("traceparent", tp)], b"");
        assert_eq!(r.status, 200, "{reason}: the request goes on untouched");
        let up = edge.upstream.last_to(&path);
        let sent = up.header("traceparent").unwrap_or("");
        let (trace_id, parent_id, _) = parse_traceparent(sent).unwrap_or_else(|| {
            panic!("{reason}: upstream must get a fresh valid traceparent, got {sent:?}")
        });
        assert_ne!(
            trace_id, TRACE_ID,
            "{reason}: a malformed traceparent must not be continued"
        );
        let span =
            edge.otlp
                .wait_for_span_with("shop.submit", "order.id", &format!("MAL-{i}"), WAIT);
        assert_eq!(span.trace_id(), trace_id, "{reason}");
        assert_eq!(span.span_id(), parent_id, "{reason}");
        assert_eq!(span.parent_span_id(), "", "{reason}: new root");
    }
    let n = vectors.len() as i64;
    edge.envoy
        .wait_for_stat("ordertrace_traceparent_malformed", n, WAIT);
    assert_eq!(
        edge.envoy
            .ordertrace_stat("ordertrace_traceparent_malformed"),
        n,
        "one count per malformed traceparent: {:?}",
        edge.envoy.ordertrace_stats()
    );
}

#[test]
fn unsampled_parent_is_propagated_but_not_exported() {
    let edge = Edge::start("shop", |_| {}, OtlpMode::Ok, upstream_ok());
    let unsampled = "11111111111111111111111111111111";
    let r = http(
        edge.port(),
        "POST",
        "/api/orders/ORD-U/submit",
        &[("traceparent", &format!("00-{unsampled}-{PARENT_ID}-00"))],
        b"",
    );
    assert_eq!(r.status, 200);
    let up = edge.upstream.last_to("/api/orders/ORD-U/submit");
    let (trace_id, _, flags) = parse_traceparent(up.header("traceparent").unwrap_or("")).unwrap();
    assert_eq!(
        (trace_id.as_str(), flags.as_str()),
        (unsampled, "00"),
        "parent-based sampling"
    );
    // A sampled request afterwards: once its span is in, the unsampled one would have been too.
    http(
        edge.port(),
        "POST",
        "/api/orders/ORD-S/submit",
        &[("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01"))],
        b"",
    );
    edge.otlp
        .wait_for_span_with("shop.submit", "order.id", "ORD-S", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        edge.otlp.find_by_trace_id(unsampled).is_empty(),
        "a span of an unsampled trace was exported"
    );
}

// ---------------------------------------------------------------------------------------------
// order.id, order.status and the HTTP attributes

#[test]
fn order_id_from_path_status_from_request_body_and_http_attributes() {
    let edge = Edge::start("mes", |_| {}, OtlpMode::Ok, upstream_ok());
    let r = http_json(
        edge.port(),
        "PUT",
        "/api/orders/ORD-77/status?source=dashboard",
        &[("host", "mes.example.test")],
        &json!({"status": "PACKAGING", "operatorId": "op-17"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let span = edge
        .otlp
        .wait_for_span_with("mes.status", "order.id", "ORD-77", WAIT);
    let d = span.describe();
    assert_eq!(
        span.attr_str("order.status").as_deref(),
        Some("PACKAGING"),
        "{d}"
    );
    assert!(!span.has_attr("order.status.attempted"), "{d}");
    assert_eq!(
        span.attr_str("http.request.method").as_deref(),
        Some("PUT"),
        "{d}"
    );
    assert_eq!(
        span.attr_str("url.path").as_deref(),
        Some("/api/orders/ORD-77/status"),
        "{d}"
    );
    assert_eq!(
        span.attr_str("url.query").as_deref(),
        Some("source=dashboard"),
        "{d}"
    );
    assert_eq!(
        span.attr_str("http.route").as_deref(),
        Some("/api/orders/{order_id}/status"),
        "{d}"
    );
    assert_eq!(span.attr_int("http.response.status_code"), Some(200), "{d}");
    assert_eq!(
        span.attr_str("server.address").as_deref(),
        Some("mes.example.test"),
        "{d}"
    );
    assert!(span.has_attr("operator.id"), "configured attribute: {d}");
    assert_ne!(span.status_code(), STATUS_ERROR, "{d}");
    let ev = span
        .event("order.status_changed")
        .unwrap_or_else(|| panic!("no order.status_changed event: {:?}", span.span.events));
    // The event marks when the status took effect; the order id and status are the span's own
    // attributes and are not repeated on it (they would be 53 more bytes per span).
    assert!(ev.attributes.is_empty(), "{:?}", ev.attributes);
    assert!(
        ev.time_unix_nano >= span.span.start_time_unix_nano
            && ev.time_unix_nano <= span.span.end_time_unix_nano
    );
    assert!(edge.envoy.wait_for_stat("ordertrace_rule_matches", 1, WAIT) >= 1);
}

#[test]
fn order_id_from_request_body_even_past_the_body_limit() {
    let edge = Edge::start(
        "crm",
        |c| {
            c["body"]["max_bytes"] = json!(1024);
            prepend_route(
                c,
                json!({"name": "crm.assign", "method": "POST", "path": "/api/assignments",
                       "order_id": {"request_body": "/order/id"}, "status": "MANUFACTURING_APPROVED"}),
            );
        },
        OtlpMode::Ok,
        upstream_ok(),
    );
    let padding = "x".repeat(200_000);
    // 1. The id lies in the first max_bytes of a 200 KB body: found by the prefix scan.
    // Written by hand: serde_json sorts object keys, and "order" must come before the padding.
    let body = format!(r#"{{"order":{{"id":"ORD-555","managerId":"m-7"}},"note":"{padding}"}}"#);
    let (r, sha) = http_stream(
        edge.port(),
        "POST",
        "/api/assignments?n=1",
        &[("content-type", "application/json")],
        body.len() as u64,
        {
            let mut off = 0;
            let bytes = body.clone().into_bytes();
            move |buf: &mut [u8]| {
                buf.copy_from_slice(&bytes[off..off + buf.len()]);
                off += buf.len();
            }
        },
    );
    assert_eq!(r.status, 200);
    let up = edge
        .upstream
        .requests()
        .into_iter()
        .find(|q| q.target == "/api/assignments?n=1")
        .unwrap();
    assert_eq!(
        (up.body_len, up.body_sha256.as_str()),
        (body.len() as u64, sha.as_str()),
        "body byte-identical"
    );
    let span = edge
        .otlp
        .wait_for_span_with("crm.assign", "order.id", "ORD-555", WAIT);
    assert_eq!(
        span.attr_str("order.status").as_deref(),
        Some("MANUFACTURING_APPROVED")
    );

    // 2. The id lies beyond max_bytes: no order.id, request unaffected.
    let body = format!(r#"{{"note":"{padding}","order":{{"id":"ORD-556"}}}}"#);
    let r = http(
        edge.port(),
        "POST",
        "/api/assignments?n=2",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    // 3. Not JSON by content type: the body is not inspected.
    let body = json!({"order": {"id": "ORD-557"}}).to_string();
    let r = http(
        edge.port(),
        "POST",
        "/api/assignments?n=3",
        &[("content-type", "text/plain")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);

    let spans = edge.otlp.wait_for_server_spans(3, WAIT);
    let by_query = |q: &str| {
        spans
            .iter()
            .find(|s| s.attr_str("url.query").as_deref() == Some(q))
            .unwrap_or_else(|| panic!("no span with url.query={q}"))
    };
    assert_eq!(
        by_query("n=2").attr_str("order.id"),
        None,
        "{}",
        by_query("n=2").describe()
    );
    assert_eq!(
        by_query("n=3").attr_str("order.id"),
        None,
        "{}",
        by_query("n=3").describe()
    );
    assert!(
        edge.envoy
            .wait_for_stat("ordertrace_body_limit_hits", 1, WAIT)
            >= 1
    );
}

#[test]
fn order_id_from_response_body_and_attribute_from_request_body() {
    let upstream = Upstream::scripted(vec![(
        "POST",
        "/api/orders",
        201,
        json!({"id": "ORD-1001", "status": "INITIATED", "product": "ring"}),
    )]);
    let edge = Edge::start("shop", |_| {}, OtlpMode::Ok, upstream);
    let r = http_json(
        edge.port(),
        "POST",
        "/api/orders",
        &[],
        &json!({"email": "ann@example.com", "phone": "+100", "partnerId": "p-9", "product": "ring"}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json(),
        json!({"id": "ORD-1001", "status": "INITIATED", "product": "ring"}),
        "response untouched"
    );
    let span = edge
        .otlp
        .wait_for_span_with("shop.create", "order.id", "ORD-1001", WAIT);
    let d = span.describe();
    assert_eq!(
        span.attr_str("order.status").as_deref(),
        Some("INITIATED"),
        "{d}"
    );
    // Partner ids are pseudonymised by default (keyed HMAC, `h:<16 hex>`), never exported raw.
    let partner = span.attr_str("order.partner_id").unwrap_or_default();
    assert!(
        partner.starts_with("h:") && partner.len() == 18,
        "order.partner_id must be pseudonymised: {d}"
    );
    assert_eq!(span.attr_int("http.response.status_code"), Some(201), "{d}");
    assert_eq!(
        span.attr_str("http.route").as_deref(),
        Some("/api/orders"),
        "{d}"
    );
    assert!(
        !d.contains("ann@example.com") && !d.contains("+100"),
        "PII in the span: {d}"
    );
}

#[test]
fn order_status_only_on_2xx_otherwise_attempted() {
    let edge = Edge::start("shop", |_| {}, OtlpMode::Ok, upstream_scripted_by_header());
    let call = |path: &str, status: &str| {
        let method = if path.ends_with("/model") {
            "PUT"
        } else {
            "POST"
        };
        let r = http(
            edge.port(),
            method,
            path,
            &[("x-test-status", status)],
            b"model bytes",
        );
        assert_eq!(
            r.status.to_string(),
            status,
            "the edge passes the upstream status through"
        );
    };
    call("/api/orders/ORD-500/submit", "500");
    call("/api/orders/ORD-409/submit", "409");
    call("/api/orders/ORD-200/model", "200");

    let s500 = edge
        .otlp
        .wait_for_span_with("shop.submit", "order.id", "ORD-500", WAIT);
    let d = s500.describe();
    assert_eq!(s500.attr_str("order.status"), None, "{d}");
    assert_eq!(
        s500.attr_str("order.status.attempted").as_deref(),
        Some("SUBMITTED"),
        "{d}"
    );
    assert!(s500.event("order.status_changed").is_none(), "{d}");
    assert_eq!(s500.status_code(), STATUS_ERROR, "5xx is an error: {d}");
    assert_eq!(s500.attr_str("error.type").as_deref(), Some("500"), "{d}");
    assert_eq!(s500.attr_int("http.response.status_code"), Some(500), "{d}");

    let s409 = edge
        .otlp
        .wait_for_span_with("shop.submit", "order.id", "ORD-409", WAIT);
    let d = s409.describe();
    assert_eq!(s409.attr_str("order.status"), None, "{d}");
    assert_eq!(
        s409.attr_str("order.status.attempted").as_deref(),
        Some("SUBMITTED"),
        "{d}"
    );
    assert!(s409.event("order.status_changed").is_none(), "{d}");
    assert_ne!(
        s409.status_code(),
        STATUS_ERROR,
        "4xx is not a server error: {d}"
    );

    let s200 = edge
        .otlp
        .wait_for_span_with("shop.upload", "order.id", "ORD-200", WAIT);
    let d = s200.describe();
    assert_eq!(
        s200.attr_str("order.status").as_deref(),
        Some("FILE_UPLOADED"),
        "{d}"
    );
    assert!(!s200.has_attr("order.status.attempted"), "{d}");
    assert!(s200.event("order.status_changed").is_some(), "{d}");
}

#[test]
fn upstream_failure_is_an_error_span_and_the_request_is_answered_by_envoy() {
    let otlp = OtlpReceiver::start(OtlpMode::Ok);
    let dead = free_port(); // nothing listens there
    let ports = EdgePorts {
        listener: free_port(),
        upstream: dead,
        collector: otlp.port(),
        admin: free_port(),
    };
    let envoy = Envoy::start(
        EdgeConfig::load("shop")
            .ports(&ports)
            .flush_interval_ms(100)
            .yaml(),
    );
    let r = http(
        ports.listener,
        "POST",
        "/api/orders/ORD-UF/submit",
        &[],
        b"",
    );
    assert_eq!(r.status, 503, "{}", r.text());
    let span = otlp.wait_for_span_with("shop.submit", "order.id", "ORD-UF", WAIT);
    let d = span.describe();
    assert_eq!(span.status_code(), STATUS_ERROR, "{d}");
    assert!(span.has_attr("error.type"), "{d}");
    assert_eq!(
        span.attr_str("order.status.attempted").as_deref(),
        Some("SUBMITTED"),
        "{d}"
    );
    assert_eq!(span.attr_str("order.status"), None, "{d}");
    drop(envoy);
}

#[test]
fn span_name_from_the_route_else_method_and_template_never_the_raw_path() {
    let edge = Edge::start(
        "shop",
        |c| {
            prepend_route(
                c,
                json!({"method": "GET", "path": "/api/things/{order_id}/*"}),
            )
        },
        OtlpMode::Ok,
        upstream_ok(),
    );
    assert_eq!(
        http(edge.port(), "GET", "/api/orders/ORD-1", &[], b"").status,
        200
    );
    assert_eq!(
        http(edge.port(), "GET", "/api/things/ORD-2/parts", &[], b"").status,
        200
    );
    assert_eq!(
        http(edge.port(), "GET", "/some/ORD-3/unknown?q=1", &[], b"").status,
        200
    );
    let spans = edge.otlp.wait_for_server_spans(3, WAIT);
    let names: Vec<&str> = spans.iter().map(|s| s.name()).collect();

    let named = spans
        .iter()
        .find(|s| s.name() == "shop.get")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(named.attr_str("order.id").as_deref(), Some("ORD-1"));

    let unnamed = spans
        .iter()
        .find(|s| s.name() == "GET /api/things/{order_id}/*")
        .unwrap_or_else(|| panic!("fallback name `METHOD /template` missing: {names:?}"));
    assert_eq!(unnamed.attr_str("order.id").as_deref(), Some("ORD-2"));

    let unmatched = spans
        .iter()
        .find(|s| s.attr_str("url.path").as_deref() == Some("/some/ORD-3/unknown"))
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(
        unmatched.name(),
        "GET",
        "unmatched requests are named by the method only"
    );
    assert!(
        !unmatched.has_attr("http.route"),
        "{}",
        unmatched.describe()
    );
    assert!(!unmatched.has_attr("order.id"), "{}", unmatched.describe());
    assert!(
        names.iter().all(|n| !n.contains("ORD-")),
        "a raw path leaked into a span name: {names:?}"
    );
}

#[test]
fn resource_attributes_and_metrics() {
    let edge = Edge::start("crm", |_| {}, OtlpMode::Ok, upstream_ok());
    let r = http_json(
        edge.port(),
        "POST",
        "/api/orders/ORD-9/approve",
        &[],
        &json!({"managerId": "m-7"}),
    );
    assert_eq!(r.status, 200);
    let span = edge
        .otlp
        .wait_for_span_with("crm.approve", "order.id", "ORD-9", WAIT);
    assert_eq!(
        span.attr_str("order.status").as_deref(),
        Some("MANUFACTURING_APPROVED")
    );
    assert_eq!(
        span.resource_str("service.name").as_deref(),
        Some("crm-api")
    );
    assert_eq!(
        span.resource_str("telemetry.sdk.name").as_deref(),
        Some("ordertrace")
    );
    assert!(span
        .resource_str("telemetry.sdk.version")
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(span.scope_name, "ordertrace");

    edge.envoy
        .wait_for_stat("ordertrace_spans_exported", 1, WAIT);
    let stats = edge.envoy.ordertrace_stats();
    assert!(
        stats
            .get("wasmcustom.ordertrace_export_requests")
            .is_some_and(|v| *v >= 1),
        "{stats:?}"
    );
    assert!(
        stats
            .get("wasmcustom.ordertrace_rule_matches")
            .is_some_and(|v| *v >= 1),
        "{stats:?}"
    );
    for zero in [
        "spans_dropped",
        "export_failures",
        "config_errors",
        "traceparent_malformed",
    ] {
        assert_eq!(
            stats
                .get(&format!("wasmcustom.ordertrace_{zero}"))
                .copied()
                .unwrap_or(0),
            0,
            "{stats:?}"
        );
    }
    assert!(
        stats.contains_key("wasmcustom.ordertrace_queue_spans"),
        "gauge defined: {stats:?}"
    );
    // Last, so the checks above still run when this one fails.
    assert_eq!(
        span.resource_str("service.instance.id").as_deref(),
        Some(edge.envoy.node_id.as_str()),
        "service.instance.id = the Envoy node id (--service-node)"
    );
}

// ---------------------------------------------------------------------------------------------
// Bodies: large uploads stream through

/// Growth of Envoy's peak RSS allowed while 50 MB pass through (buffering the body would add ≥ 50 MB).
const MAX_PEAK_GROWTH_KIB: u64 = 24 * 1024;

#[test]
fn fifty_megabyte_upload_is_byte_identical_with_flat_memory() {
    let edge = Edge::start("shop", |_| {}, OtlpMode::Ok, upstream_ok());
    // Warm up (first request compiles paths in V8 and opens upstream connections).
    http(
        edge.port(),
        "PUT",
        "/api/orders/WARM/model",
        &[("content-type", "application/octet-stream")],
        &[1; 100_000],
    );
    let (_, hwm_before) = edge.envoy.memory_kib();
    let len = 50 * 1024 * 1024;
    let mut noise = Noise::new(42);
    let started = Instant::now();
    let (r, sha) = http_stream(
        edge.port(),
        "PUT",
        "/api/orders/ORD-BIG/model",
        &[("content-type", "application/octet-stream")],
        len,
        |buf: &mut [u8]| noise.fill(buf),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let up = edge.upstream.last_to("/api/orders/ORD-BIG/model");
    assert_eq!(up.body_len, len);
    assert_eq!(up.body_sha256, sha, "the upload must arrive byte-identical");
    let (_, hwm_after) = edge.envoy.memory_kib();
    assert!(
        hwm_after.saturating_sub(hwm_before) < MAX_PEAK_GROWTH_KIB,
        "Envoy peak RSS grew by {} KiB during a 50 MB upload (before {hwm_before}, after {hwm_after})",
        hwm_after.saturating_sub(hwm_before)
    );
    let span = edge
        .otlp
        .wait_for_span_with("shop.upload", "order.id", "ORD-BIG", WAIT);
    assert_eq!(
        span.attr_str("order.status").as_deref(),
        Some("FILE_UPLOADED")
    );
    eprintln!("50 MB through the edge in {:?}", started.elapsed());
}

#[test]
fn large_json_body_on_a_body_route_streams_and_is_still_scanned() {
    let edge = Edge::start("mes", |_| {}, OtlpMode::Ok, upstream_ok());
    http_json(
        edge.port(),
        "PUT",
        "/api/orders/WARM/status",
        &[],
        &json!({"status": "PACKAGING"}),
    );
    let (_, hwm_before) = edge.envoy.memory_kib();
    let head = br#"{"status":"SHIPPED","operatorId":"op-3","blob":""#.to_vec();
    let tail = br#""}"#.to_vec();
    let len = 20 * 1024 * 1024u64;
    let filler = len - head.len() as u64 - tail.len() as u64;
    let mut pos = 0u64;
    let (r, sha) = http_stream(
        edge.port(),
        "PUT",
        "/api/orders/ORD-JSON/status",
        &[("content-type", "application/json")],
        len,
        |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                *b = if pos < head.len() as u64 {
                    head[pos as usize]
                } else if pos < head.len() as u64 + filler {
                    b'a'
                } else {
                    tail[(pos - head.len() as u64 - filler) as usize]
                };
                pos += 1;
            }
        },
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let up = edge.upstream.last_to("/api/orders/ORD-JSON/status");
    assert_eq!(
        (up.body_len, up.body_sha256.clone()),
        (len, sha),
        "byte-identical"
    );
    let (_, hwm_after) = edge.envoy.memory_kib();
    assert!(
        hwm_after.saturating_sub(hwm_before) < MAX_PEAK_GROWTH_KIB,
        "Envoy peak RSS grew by {} KiB for a 20 MB JSON body",
        hwm_after.saturating_sub(hwm_before)
    );
    let span = edge
        .otlp
        .wait_for_span_with("mes.status", "order.id", "ORD-JSON", WAIT);
    assert_eq!(
        span.attr_str("order.status").as_deref(),
        Some("SHIPPED"),
        "{}",
        span.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// The collector misbehaves: requests are never affected, failures and drops are counted

fn small_queue(c: &mut Value) {
    c["collector"]["max_queue_spans"] = json!(4);
    c["collector"]["max_batch_spans"] = json!(2);
    c["collector"]["timeout_ms"] = json!(300);
}

fn fire_requests(edge_port: u16, n: usize) {
    for i in 0..n {
        let started = Instant::now();
        let r = http(
            edge_port,
            "POST",
            &format!("/api/orders/ORD-C{i}/submit"),
            &[],
            b"",
        );
        assert_eq!(
            r.status, 200,
            "request {i} must not be affected by the collector"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn collector_down_requests_succeed_and_drops_are_counted() {
    let upstream = upstream_ok();
    let ports = EdgePorts {
        listener: free_port(),
        upstream: upstream.port(),
        collector: free_port(),
        admin: free_port(),
    };
    let envoy = Envoy::start(
        EdgeConfig::load("shop")
            .ports(&ports)
            .flush_interval_ms(100)
            .with_plugin(small_queue)
            .yaml(),
    );
    fire_requests(ports.listener, 20);
    assert_eq!(upstream.requests().len(), 20);
    // Give the flush timer a few ticks.
    std::thread::sleep(Duration::from_millis(500));
    envoy.wait_for_stat("ordertrace_export_failures", 1, WAIT);
    envoy.wait_for_stat("ordertrace_spans_dropped", 1, WAIT);
    assert_eq!(
        envoy.ordertrace_stat("ordertrace_spans_exported"),
        0,
        "{:?}",
        envoy.ordertrace_stats()
    );
    let queued = envoy.ordertrace_stat("ordertrace_queue_spans");
    assert!(
        queued <= 4,
        "the queue is bounded by max_queue_spans: {queued}"
    );
}

#[test]
fn collector_that_never_answers_does_not_slow_requests() {
    let edge = Edge::start("shop", small_queue, OtlpMode::NeverAnswer, upstream_ok());
    fire_requests(edge.port(), 10);
    edge.otlp.wait_for_requests(1, WAIT);
    edge.envoy
        .wait_for_stat("ordertrace_export_failures", 1, WAIT);
    fire_requests(edge.port(), 10);
    edge.envoy
        .wait_for_stat("ordertrace_spans_dropped", 1, WAIT);
}

#[test]
fn collector_errors_are_retried_and_spans_delivered() {
    let edge = Edge::start(
        "shop",
        |_| {},
        OtlpMode::StatusThenOk {
            status: 503,
            times: 2,
        },
        upstream_ok(),
    );
    fire_requests(edge.port(), 3);
    let spans = edge.otlp.wait_for_server_spans(3, Duration::from_secs(30));
    for i in 0..3 {
        let id = format!("ORD-C{i}");
        assert!(
            spans
                .iter()
                .any(|s| s.attr_str("order.id").as_deref() == Some(id.as_str())),
            "span of {id} lost after collector errors"
        );
    }
    assert!(
        edge.envoy
            .wait_for_stat("ordertrace_export_failures", 2, WAIT)
            >= 2
    );
    assert!(
        edge.envoy
            .wait_for_stat("ordertrace_spans_exported", 3, WAIT)
            >= 3
    );
    assert_eq!(edge.envoy.ordertrace_stat("ordertrace_spans_dropped"), 0);
}

// ---------------------------------------------------------------------------------------------
// Configs

#[test]
fn shipped_configs_pass_envoy_validate() {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    for name in names {
        if let Err(out) = envoy_validate(EdgeConfig::load(&name).yaml()) {
            panic!("envoy/{name}.yaml does not validate:\n{out}");
        }
    }
}

#[test]
fn bad_plugin_config_is_rejected_naming_the_field() {
    let cfg =
        EdgeConfig::load("shop").with_plugin(|c| c["collector"]["flush_interval_ms"] = json!(1));
    let err = envoy_validate(cfg.yaml())
        .expect_err("Envoy must refuse a plugin config the filter rejects");
    assert!(
        err.contains("flush_interval_ms"),
        "the error must name the field:\n{err}"
    );
    let cfg = EdgeConfig::load("shop").with_plugin(|c| c["routes"][0]["colour"] = json!("red"));
    let err = envoy_validate(cfg.yaml()).expect_err("unknown keys are refused");
    assert!(
        err.contains("colour"),
        "the error must name the unknown key:\n{err}"
    );
}

#[test]
fn each_module_refuses_the_others_configuration() {
    // The HTTP module with an `amqp` section: refused, naming the section and the module to use.
    let cfg = EdgeConfig::load("shop").with_plugin(|c| c["amqp"] = json!({"rules": []}));
    let err = envoy_validate(cfg.yaml()).expect_err("the HTTP module must refuse `amqp`");
    assert!(
        err.contains("amqp: is for the AMQP module"),
        "the error must name the field and the module:\n{err}"
    );
    // The shipped AMQP edge pointed at the HTTP module: the same refusal.
    let yaml = EdgeConfig::load("amqp-crm")
        .yaml()
        .replace("dist/ordertrace-amqp.wasm", "dist/ordertrace.wasm");
    let err = envoy_validate(&yaml).expect_err("the HTTP module is no network filter");
    assert!(err.contains("amqp: is for the AMQP module"), "{err}");
    // The AMQP module without its section: refused, naming it.
    let cfg = EdgeConfig::load("amqp-crm").with_plugin(|c| {
        c.as_object_mut().unwrap().remove("amqp");
    });
    let err = envoy_validate(cfg.yaml()).expect_err("the AMQP module needs `amqp`");
    assert!(err.contains("amqp: missing"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The demo's pieces: shipped config + `ordertrace refapi --record` + `ordertrace sink --jsonl`

#[test]
fn shipped_shop_edge_with_cli_refapi_and_sink() {
    let dir = TempDir::new("cli");
    let (api_port, sink_port) = (free_port(), free_port());
    let record = dir.join("record.jsonl");
    let spans_file = dir.join("spans.jsonl");
    let _api = ChildGuard::cli(
        "refapi",
        &[
            "refapi",
            "--service",
            "shop",
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--record",
            record.to_str().unwrap(),
        ],
        &dir.join("refapi.out"),
    );
    let sink = ChildGuard::cli(
        "sink",
        &[
            "sink",
            "--listen",
            &format!("127.0.0.1:{sink_port}"),
            "--jsonl",
            spans_file.to_str().unwrap(),
        ],
        &dir.join("sink.out"),
    );
    assert!(
        wait_for_port(api_port, WAIT) && wait_for_port(sink_port, WAIT),
        "CLI servers did not start"
    );
    let ports = EdgePorts {
        listener: free_port(),
        upstream: api_port,
        collector: sink_port,
        admin: free_port(),
    };
    let envoy = Envoy::start(
        EdgeConfig::load("shop")
            .ports(&ports)
            .flush_interval_ms(100)
            .yaml(),
    );

    let created = http_json(
        ports.listener,
        "POST",
        "/api/orders",
        &[],
        &json!({"email": "ann@example.com", "customerName": "Ann", "partnerId": "p-1", "product": "ring"}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_string();
    let model: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let up = http(
        ports.listener,
        "PUT",
        &format!("/api/orders/{id}/model"),
        &[],
        &model,
    );
    assert_eq!(
        up.json()["sha256"],
        hex(&Sha256::digest(&model)),
        "refapi saw the model byte-identical"
    );
    let sub = http(
        ports.listener,
        "POST",
        &format!("/api/orders/{id}/submit"),
        &[("x-demo-fail", "500")],
        b"",
    );
    assert_eq!(sub.status, 500);
    let sub = http(
        ports.listener,
        "POST",
        &format!("/api/orders/{id}/submit"),
        &[],
        b"",
    );
    assert_eq!(sub.status, 200);

    // One SERVER span per request (the filter may add INTERNAL order-lifecycle spans as well).
    let lines: Vec<Value> = poll(WAIT, || {
        let text = std::fs::read_to_string(&spans_file).unwrap_or_default();
        let v: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let server = v.iter().filter(|l| l["kind"] == "SERVER").count();
        (server >= 4).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "sink JSONL did not get 4 SERVER spans: {}",
            std::fs::read_to_string(&spans_file).unwrap_or_default()
        )
    });
    let all = serde_json::to_string(&lines).unwrap();
    assert!(
        !all.contains("ann@example.com") && !all.contains("Ann"),
        "PII reached the sink"
    );
    let find = |name: &str, status_key: &str| {
        lines
            .iter()
            .find(|l| {
                l["kind"] == "SERVER"
                    && l["name"] == name
                    && l["attributes"].get(status_key).is_some()
            })
            .unwrap_or_else(|| panic!("no {name} span with {status_key}: {lines:#?}"))
    };
    let create = find("shop.create", "order.status");
    assert_eq!(create["attributes"]["order.id"], id.as_str());
    assert_eq!(create["attributes"]["order.status"], "INITIATED");
    assert_eq!(create["resource"]["service.name"], "shop-api");
    assert_eq!(
        find("shop.upload", "order.status")["attributes"]["order.status"],
        "FILE_UPLOADED"
    );
    assert_eq!(
        find("shop.submit", "order.status.attempted")["status"]["code"],
        "ERROR"
    );
    assert_eq!(
        find("shop.submit", "order.status")["attributes"]["order.status"],
        "SUBMITTED"
    );

    // What reached the upstream: each request carries the edge span as its parent.
    let recorded: Vec<Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recorded.len(), 4, "{recorded:#?}");
    for rec in &recorded {
        let tp = rec["headers"]["traceparent"].as_str().unwrap_or("");
        let (trace_id, parent_id, _) =
            parse_traceparent(tp).unwrap_or_else(|| panic!("bad traceparent in {rec}"));
        assert!(
            lines
                .iter()
                .any(|l| l["trace_id"] == trace_id.as_str() && l["span_id"] == parent_id.as_str()),
            "no exported span is the parent of the upstream request {rec}"
        );
    }
    assert_eq!(recorded[1]["body_len"], model.len());
    let out = poll(WAIT, || {
        let t = sink.output_text();
        t.contains(&format!("order={id}")).then_some(t)
    });
    assert!(
        out.is_some(),
        "sink printed no readable line for {id}: {}",
        sink.output_text()
    );
    assert_eq!(
        create["resource"]["service.instance.id"],
        envoy.node_id.as_str(),
        "service.instance.id = the Envoy node id (--service-node)"
    );
}
