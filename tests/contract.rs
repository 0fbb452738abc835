//! Contract tests: the built filter `dist/ordertrace.wasm` driven by our own proxy-wasm host
//! (tests/contract/host.rs, which documents how to drive it) exactly as Envoy drives it.
//! `make wasm` produces the module; without it every test fails and says so.
//!
//! * the dual-run tables (tests/contract/cases.rs, run by tests/contract/dual.rs): every case
//!   natively and in wasm, same upstream headers, spans and counters;
//! * contract cases: configuration rejected with the field named, ticks, batch boundaries,
//!   collector failures and retries, the bounded queue and flat guest memory over 100 000
//!   requests, no request-header reads in response callbacks, untouched headers, body limits.

// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "contract/cases.rs"]
mod cases;
#[path = "contract/dual.rs"]
mod dual;
#[path = "contract/host.rs"]
mod host;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ordertrace::config::Config;

use cases::{filter_wasm, host_options, padded_json, req, Case, Cfg, Exchange, CLUSTER};
use dual::{attr, drain_exports, drive, spans_of};
use host::{Action, CallState, Host, HostOptions};

/// A small valid plugin configuration (redaction off so no secret is needed).
const CONFIG: &str = r#"{
  "service": "shop-api",
  "collector": {"cluster": "otlp_collector", "authority": "otlp_collector", "path": "/v1/traces",
                "flush_interval_ms": 1000, "timeout_ms": 5000},
  "redaction": {"enabled": false},
  "lifecycle": {"enabled": false},
  "routes": [
    {"name": "shop.create", "method": "POST", "path": "/api/orders",
     "order_id": {"response_body": "/id"}, "status": "INITIATED"}
  ]
}"#;

fn options() -> HostOptions {
    HostOptions {
        node_id: "edge-1".into(),
        clusters: vec!["otlp_collector".into()],
        ..HostOptions::default()
    }
}

fn configured(opts: HostOptions) -> Host {
    Host::configured(filter_wasm(), opts, CONFIG).unwrap()
}

/// A host configured with `cfg` (the case tables' routes).
fn configured_with(cfg: &Cfg) -> Host {
    Host::configured(filter_wasm(), host_options(), &cfg.json()).unwrap()
}

/// POST /api/orders with a JSON body, answered 201 with the order id.
fn create_order(host: &mut Host) -> host::StreamId {
    host.exchange(
        &[
            (":method", "POST"),
            (":path", "/api/orders"),
            (":authority", "shop.example"),
            ("content-type", "application/json"),
        ],
        &[br#"{"item":"gear","qty":2}"#],
        &[(":status", "201"), ("content-type", "application/json")],
        &[br#"{"id":"o-1"}"#],
    )
    .unwrap()
}

/// A path-only request for order `id` (one span, `order.id` = id).
fn upload(id: &str) -> Exchange {
    req("PUT", &format!("/api/orders/{id}/model"))
}

fn assert_clean(host: &Host) {
    assert!(host.violations().is_empty(), "{:?}", host.violations());
    assert!(host.crashed().is_none(), "{:?}", host.crashed());
}

// ---------------------------------------------------------------------------------------------
// Host smoke tests

#[test]
fn vm_starts_and_every_import_is_implemented() {
    let mut host = Host::new(filter_wasm(), options()).unwrap();
    assert_eq!(
        host.unimplemented_imports(),
        &[] as &[String],
        "the filter imports functions this host (and maybe Envoy) does not provide"
    );
    assert!(host.start_vm(b"").unwrap());
    assert!(host.violations().is_empty(), "{:?}", host.violations());
}

#[test]
fn configure_accepts_a_valid_configuration() {
    let mut host = Host::new(filter_wasm(), options()).unwrap();
    assert!(host.start_vm(b"").unwrap());
    assert!(host.configure(CONFIG).unwrap(), "logs: {:?}", host.logs());
    assert_eq!(
        host.tick_period_ms(),
        1000,
        "flush_interval_ms drives the tick"
    );
    assert!(host.violations().is_empty(), "{:?}", host.violations());
}

#[test]
fn configure_rejects_an_invalid_configuration() {
    let mut host = Host::new(filter_wasm(), options()).unwrap();
    assert!(host.start_vm(b"").unwrap());
    assert!(!host.configure("{ not json").unwrap());
    assert_eq!(host.counter("ordertrace_config_errors"), Some(1));
    assert!(
        !host
            .logs_containing("invalid plugin configuration")
            .is_empty(),
        "logs: {:?}",
        host.logs()
    );
    assert!(host.violations().is_empty(), "{:?}", host.violations());
}

#[test]
fn one_request_gets_traceparent_and_is_otherwise_untouched() {
    let mut host = configured(options());
    let s = create_order(&mut host);
    let stream = host.stream(s).unwrap();

    let sent = stream.request.forwarded_headers.as_ref().unwrap();
    let traceparent = sent.get("traceparent").expect("traceparent sent upstream");
    assert_eq!(traceparent.len(), 55, "{traceparent}");
    assert!(traceparent.starts_with("00-"), "{traceparent}");
    let received = stream.request.headers.as_ref().unwrap();
    assert_eq!(
        sent.without(&["traceparent"]).as_strs(),
        received.without(&["traceparent"]).as_strs()
    );
    assert_eq!(stream.request.forwarded_body, stream.request.received_body);
    assert_eq!(
        stream.response.forwarded_body,
        stream.response.received_body
    );
    assert!(stream.deleted);

    assert!(host.request_map_access_in_response_phase().is_empty());
    assert_clean(&host);
}

#[test]
fn tick_dispatches_the_export_to_the_collector() {
    let mut host = configured(options());
    create_order(&mut host);
    host.advance_clock(1000);
    host.tick().unwrap();

    let calls = host.pending_http_calls();
    assert_eq!(calls.len(), 1, "one export request");
    let call = &calls[0];
    assert_eq!(call.cluster, "otlp_collector");
    assert_eq!(call.headers.get(":method"), Some("POST"));
    assert_eq!(call.headers.get(":path"), Some("/v1/traces"));
    assert_eq!(call.timeout_ms, 5000);
    assert!(!call.body.is_empty());

    host.respond_http_call(call.token, 200, &[], b"").unwrap();
    assert!(matches!(
        host.http_calls()[0].state,
        CallState::Answered { status: 200 }
    ));
    host.advance_clock(1000);
    host.tick().unwrap();
    assert_eq!(host.counter("ordertrace_spans_exported"), Some(1));
    assert!(host.pending_http_calls().is_empty());
    assert_clean(&host);
}

#[test]
fn fuel_per_request_is_deterministic() {
    let measure = || {
        let mut host = configured(HostOptions {
            fuel: true,
            ..options()
        });
        create_order(&mut host); // warm up lazily initialised state
        host.reset_fuel();
        create_order(&mut host);
        (host.fuel_consumed(), host.memory_bytes())
    };
    let (fuel, memory) = measure();
    assert!(fuel > 0);
    assert_eq!((fuel, memory), measure());
}

#[test]
fn headers_callback_continues() {
    let mut host = configured(options());
    let s = host.new_http_stream().unwrap();
    let action = host
        .request_headers(s, &[(":method", "GET"), (":path", "/health")], true)
        .unwrap();
    assert_eq!(
        action,
        Action::Continue,
        "a tracing filter never holds a request"
    );
}

// ---------------------------------------------------------------------------------------------
// Dual-run tables

/// Every row of `cases::dual_run_cases()`, natively and in wasm. All rows run; the failure lists
/// every row that failed (each row's own message is printed above it). `CASE=<name>` runs one;
/// `DUMP=1` prints the agreed upstream headers and spans (with `-- --nocapture`).
#[test]
fn dual_run_tables_agree() {
    let only = std::env::var("CASE").ok();
    let mut failed = Vec::new();
    let mut ran = 0;
    for case in cases::dual_run_cases() {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        ran += 1;
        let result = catch_unwind(AssertUnwindSafe(|| dual::check_case(&case)));
        match &result {
            Ok((native, _)) if std::env::var_os("DUMP").is_some() => {
                println!(
                    "ok   {}\n{:#?}\n{:#?}",
                    case.name, native.upstream, native.spans
                )
            }
            Ok((native, _)) => println!("ok   {} ({} spans)", case.name, native.spans.len()),
            Err(_) => println!("FAIL {}", case.name),
        }
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            failed.push(format!(
                "{}: {}",
                case.name,
                msg.lines().next().unwrap_or("")
            ));
        }
    }
    assert!(ran > 0, "no case named {only:?}");
    assert!(
        failed.is_empty(),
        "{} of {ran} dual-run cases failed:\n  {}",
        failed.len(),
        failed.join("\n  ")
    );
}

/// The case names are unique (CASE=<name> picks one) and the table covers what issue 3 names.
#[test]
fn dual_run_table_covers_every_rule_source() {
    let all = cases::dual_run_cases();
    let names: HashSet<&str> = all.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), all.len(), "duplicate case names");
    for source in [
        r#"{"path": "id"}"#,
        "/{order_id}/",
        r#"{"header": "#,
        r#"{"query": "#,
        r#"{"request_body": "#,
        r#"{"response_body": "#,
        r#""status": "INITIATED""#,
        r#""order.source": "storefront""#,
    ] {
        assert!(cases::ROUTES.contains(source), "ROUTES lacks {source}");
    }
    let attrs: HashSet<&str> = all
        .iter()
        .flat_map(|c| c.expect.attrs.iter().map(|(k, _)| k.as_str()))
        .collect();
    for key in [
        "order.id",         // path variables, header, query, request and response body
        "order.partner_id", // header
        "order.channel",    // query
        "operator.id",      // request body
        "order.source",     // literal attribute
        "order.status",     // literal and request-body status
        "order.status.attempted",
    ] {
        assert!(attrs.contains(key), "no case checks {key}");
    }
    assert!(all
        .iter()
        .any(|c| c.cfg.redaction && !c.expect.forbidden.is_empty()));
    assert!(all.iter().any(|c| c.cfg.lifecycle));
}

/// Body chunking never changes the span: 1-byte chunks give exactly the span of one chunk.
#[test]
fn one_byte_chunks_give_the_same_span_as_one_chunk() {
    let body = br#"{"status":"PACKAGING","operatorId":"op-17"}"#;
    let created = br#"{"id":"ORD-5"}"#;
    let pairs: [(Exchange, Exchange); 2] = [
        (
            req("PUT", "/api/orders/ORD-4/status").json(body),
            req("PUT", "/api/orders/ORD-4/status")
                .json(body)
                .request_chunked(1),
        ),
        (
            req("POST", "/api/orders")
                .json(br#"{"note":"n"}"#)
                .status(201)
                .respond_json(created),
            req("POST", "/api/orders")
                .json(br#"{"note":"n"}"#)
                .request_chunked(1)
                .status(201)
                .respond_json(created)
                .response_chunked(1),
        ),
    ];
    for (one, split) in pairs {
        let a = Case::new("one_chunk", Cfg::default(), one);
        let b = Case::new("one_byte_chunks", Cfg::default(), split);
        for (side, run) in [
            ("native", dual::run_native as fn(&Case) -> dual::Observed),
            ("wasm", dual::run_wasm),
        ] {
            let (x, y) = (run(&a), run(&b));
            assert_eq!(x.spans.len(), 1, "{side}");
            assert_eq!(x.spans, y.spans, "{side}: chunking changed the span");
            assert_eq!(x.counters, y.counters, "{side}");
            assert!(attr(&x.raw_spans[0], "order.status").is_some(), "{side}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Invalid configurations are refused at load (`proxy_on_configure` answers false), the critical
/// log names the field, `ordertrace_config_errors` counts it, and the native loader names the same
/// field.
#[test]
fn config_rejected_at_load_names_the_field() {
    let valid = Cfg::default().json();
    let redaction_on = Cfg::default().redaction().json();
    let cases: Vec<(String, &str)> = vec![
        (
            valid.replacen(r#""path": "/api/orders","#, r#""path": "api/orders","#, 1),
            "routes[0].path",
        ),
        (
            valid.replace(
                "/api/orders/{order_id}/model",
                "/api/orders/{order_id}/{order_id}",
            ),
            "routes[1].path",
        ),
        (
            valid.replacen(r#""method": "PUT""#, r#""method": "put""#, 1),
            "routes[1].method",
        ),
        (
            valid.replace(
                r#"{"request_body": "/status"}"#,
                r#"{"request_body": "status"}"#,
            ),
            "routes[3].status.request_body",
        ),
        (
            valid.replace(r#"{"path": "id"}"#, r#"{"path": "order"}"#),
            "routes[4].order_id.path",
        ),
        (
            valid.replace(r#""max_batch_spans": 512"#, r#""max_batch_spans": 9000"#),
            "collector.max_batch_spans",
        ),
        (
            valid.replace(r#""ratio": 1.0"#, r#""ratio": 2.0"#),
            "sampling.ratio",
        ),
        (
            redaction_on.replace(cases::HMAC_KEY, "short"),
            "redaction.hmac_key",
        ),
        (
            valid.replace(r#""redaction": {"enabled": false}"#, r#""redaction": {}"#),
            "redaction.hmac_key",
        ),
        (
            valid.replace(
                r#""lifecycle": {"enabled": false}"#,
                r#""lifecycle": {"namespace": ""}"#,
            ),
            "lifecycle.namespace",
        ),
        (
            valid.replacen(
                r#""name": "shop.create","#,
                r#""name": "shop.create", "colour": 1,"#,
                1,
            ),
            "routes[0]",
        ),
    ];
    for (config, field) in cases {
        assert_ne!(config, valid, "the mutation for {field} did not apply");
        let native = Config::from_json(config.as_bytes())
            .err()
            .unwrap_or_else(|| panic!("native loader accepted the config for {field}"));
        assert!(
            native.field.starts_with(field),
            "native error for {field} names {:?}: {native}",
            native.field
        );

        let mut host = Host::new(filter_wasm(), host_options()).unwrap();
        assert!(host.start_vm(b"").unwrap());
        assert!(
            !host.configure(&config).unwrap(),
            "{field}: the filter accepted the configuration"
        );
        let logs = host.logs_containing("invalid plugin configuration");
        assert_eq!(logs.len(), 1, "{field}: logs {:?}", host.logs());
        assert!(
            logs[0].message.contains(field),
            "{field}: the log line does not name the field: {}",
            logs[0].message
        );
        assert_eq!(logs[0].level, host::LogLevel::Critical);
        assert_eq!(host.counter("ordertrace_config_errors"), Some(1), "{field}");
        assert_eq!(
            host.tick_period_ms(),
            0,
            "{field}: no tick without a config"
        );
        assert_clean(&host);
    }
}

// ---------------------------------------------------------------------------------------------
// Export: ticks, batches, failures

#[test]
fn tick_with_empty_queue_sends_nothing() {
    let mut host = configured_with(&Cfg::default());
    for _ in 0..5 {
        host.advance_clock(cases::FLUSH_MS);
        host.tick().unwrap();
    }
    // An unsampled request produces no span either.
    drive(
        &mut host,
        "unsampled",
        &upload("ORD-1").header("traceparent", cases::TP_UNSAMPLED),
    );
    for _ in 0..3 {
        host.advance_clock(cases::FLUSH_MS);
        host.tick().unwrap();
    }
    assert!(host.http_calls().is_empty(), "{:?}", host.http_calls());
    assert_eq!(host.counter("ordertrace_export_requests"), Some(0));
    assert_eq!(host.gauge("ordertrace_queue_spans"), Some(0));
    assert_clean(&host);
}

fn order_ids(body: &[u8]) -> Vec<String> {
    spans_of(body)
        .iter()
        .map(|s| attr(s, "order.id").unwrap_or_default())
        .collect()
}

fn ids(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("ORD-{i}")).collect()
}

/// `max_batch_spans` spans make one request; one more makes two.
#[test]
fn batch_boundaries() {
    let cfg = Cfg::default().batch(4, 100);
    let mut host = configured_with(&cfg);
    for i in 0..4 {
        drive(&mut host, "batch", &upload(&format!("ORD-{i}")));
    }
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    let calls = host.pending_http_calls();
    assert_eq!(calls.len(), 1, "exactly max_batch_spans: one request");
    assert_eq!(order_ids(&calls[0].body), ids(0, 4));
    host.respond_http_call(calls[0].token, 200, &[], b"")
        .unwrap();
    assert!(host.pending_http_calls().is_empty());
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    assert!(host.pending_http_calls().is_empty());

    for i in 4..9 {
        drive(&mut host, "batch", &upload(&format!("ORD-{i}")));
    }
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    let first = host.pending_http_calls();
    assert_eq!(first.len(), 1, "one request in flight at a time");
    assert_eq!(order_ids(&first[0].body), ids(4, 8));
    host.respond_http_call(first[0].token, 200, &[], b"")
        .unwrap();
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    let second = host.pending_http_calls();
    assert_eq!(second.len(), 1, "one more span: a second request");
    assert_eq!(order_ids(&second[0].body), ids(8, 9));
    host.respond_http_call(second[0].token, 200, &[], b"")
        .unwrap();
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    assert!(host.pending_http_calls().is_empty());
    assert_eq!(host.http_calls().len(), 3);
    assert_eq!(host.counter("ordertrace_export_requests"), Some(3));
    assert_eq!(host.counter("ordertrace_spans_exported"), Some(9));

    // Two full batches waiting: the second goes out as soon as the first is answered.
    for i in 9..17 {
        drive(&mut host, "batch", &upload(&format!("ORD-{i}")));
    }
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    let a = host.pending_http_calls();
    assert_eq!(order_ids(&a[0].body), ids(9, 13));
    host.respond_http_call(a[0].token, 200, &[], b"").unwrap();
    let b = host.pending_http_calls();
    assert_eq!(
        b.len(),
        1,
        "a full batch is sent without waiting for the tick"
    );
    assert_eq!(order_ids(&b[0].body), ids(13, 17));
    host.respond_http_call(b[0].token, 200, &[], b"").unwrap();
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    assert_eq!(host.counter("ordertrace_spans_exported"), Some(17));
    assert_clean(&host);
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    Status503,
    Timeout,
    Reset,
}

/// The collector answers 503, then 200: every span is delivered exactly once, in order, spans
/// queued meanwhile after the retried ones. The same when Envoy times the first call out (504).
#[test]
fn collector_503_then_200_delivers_once_in_order() {
    failure_then_200(Failure::Status503);
    failure_then_200(Failure::Timeout);
}

/// The connection to the collector is reset (Envoy calls `proxy_on_http_call_response` with no
/// headers; reading `:status` is then BadArgument): the batch is retried like any failure, and the
/// VM survives.
#[test]
fn collector_reset_then_200_delivers_once_in_order() {
    failure_then_200(Failure::Reset);
}

fn failure_then_200(failure: Failure) {
    let mut host = configured_with(&Cfg::default());
    for i in 0..3 {
        drive(&mut host, "retry", &upload(&format!("ORD-{i}")));
    }
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    let first = host.pending_http_calls();
    assert_eq!(first.len(), 1);
    let token = first[0].token;
    match failure {
        Failure::Status503 => host.respond_http_call(token, 503, &[], b"busy").unwrap(),
        Failure::Timeout => {
            host.advance_clock(5000);
            host.timeout_http_call(token).unwrap();
        }
        Failure::Reset => host.fail_http_call(token).unwrap(),
    }
    // Spans arriving during the backoff queue behind the failed batch.
    for i in 3..5 {
        drive(&mut host, "retry", &upload(&format!("ORD-{i}")));
    }
    host.tick().unwrap(); // backoff (one flush interval) not over yet
    assert!(
        host.pending_http_calls().is_empty(),
        "{failure:?}: retried before the backoff"
    );
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    let retry = host.pending_http_calls();
    assert_eq!(retry.len(), 1, "{failure:?}");
    let first_spans = spans_of(&first[0].body);
    let retry_spans = spans_of(&retry[0].body);
    assert_eq!(
        retry_spans[..3],
        first_spans[..],
        "{failure:?}: the failed batch is resent as it was"
    );
    assert_eq!(order_ids(&retry[0].body), ids(0, 5), "{failure:?}");
    host.respond_http_call(retry[0].token, 200, &[], b"")
        .unwrap();
    host.advance_clock(cases::FLUSH_MS);
    host.tick().unwrap();
    assert!(host.pending_http_calls().is_empty(), "{failure:?}");

    let delivered: Vec<Vec<u8>> = retry_spans.iter().map(|s| s.span_id.clone()).collect();
    let unique: HashSet<&Vec<u8>> = delivered.iter().collect();
    assert_eq!(unique.len(), 5, "{failure:?}: duplicates delivered");
    assert_eq!(host.counter("ordertrace_spans_exported"), Some(5));
    assert_eq!(host.counter("ordertrace_export_failures"), Some(1));
    assert_eq!(host.counter("ordertrace_export_requests"), Some(2));
    assert_eq!(host.counter("ordertrace_spans_dropped"), Some(0));
    assert_eq!(host.gauge("ordertrace_queue_spans"), Some(0));
    assert_clean(&host);
}

/// The collector never answers; Envoy times each export out (504 after `timeout_ms`). Over
/// 100 000 requests the queue stays within `max_queue_spans`, every span beyond it is counted in
/// `ordertrace_spans_dropped`, and guest memory after 100 000 requests equals memory after 10 000
/// (the queue is full long before 10 000 requests; from then on every request frees what it
/// allocates, and linear memory, which never shrinks, does not grow by a single page).
#[test]
fn collector_never_answers_queue_bounded_and_memory_flat() {
    never_answers(true);
}

/// The same without even Envoy's timeout: the one export stays in flight forever, the queue is
/// full, every later span is dropped and counted, memory stays flat.
#[test]
fn collector_call_never_completes_queue_bounded_and_memory_flat() {
    never_answers(false);
}

fn never_answers(envoy_times_out: bool) {
    const MAX_QUEUE: usize = 1000;
    const TOTAL: usize = 100_000;
    const PER_TICK: usize = 1000;
    let cfg = Cfg::default().batch(100, MAX_QUEUE);
    let mut host = configured_with(&cfg);
    let body = br#"{"status":"PACKAGING","operatorId":"op-17"}"#;
    let exchanges: Vec<Exchange> = vec![
        upload("ORD-1"),
        req("PUT", "/api/orders/ORD-2/status").json(body),
        req("POST", "/api/orders")
            .json(br#"{"note":"n"}"#)
            .status(201)
            .respond_json(br#"{"id":"ORD-3"}"#),
        req("GET", "/health").header("traceparent", cases::TP_SAMPLED),
        req("POST", "/api/orders/ORD-4/submit").status(503),
    ];
    let mut memory_at_10k = 0;
    let mut max_gauge = 0;
    for n in 1..=TOTAL {
        let ex = &exchanges[n % exchanges.len()];
        let s = drive(&mut host, "never-answers", ex);
        host.forget_stream(s);
        if n % PER_TICK == 0 {
            host.advance_clock(cases::FLUSH_MS);
            // Envoy's async client gives up on calls older than the timeout.
            let now = host.now_ns();
            for call in host.pending_http_calls() {
                if envoy_times_out && now - call.dispatched_at_ns >= cfg.timeout_ms * 1_000_000 {
                    host.timeout_http_call(call.token).unwrap();
                }
            }
            host.tick().unwrap();
            let gauge = host.gauge("ordertrace_queue_spans").unwrap();
            assert!(
                gauge <= MAX_QUEUE as i64,
                "queue {gauge} > max_queue_spans after {n} requests"
            );
            max_gauge = max_gauge.max(gauge);
            assert!(host.pending_http_calls().len() <= 1, "one call in flight");
        }
        if n == 10_000 {
            memory_at_10k = host.memory_bytes();
        }
    }
    let memory_at_100k = host.memory_bytes();
    let queued = host.gauge("ordertrace_queue_spans").unwrap();
    let dropped = host.counter("ordertrace_spans_dropped").unwrap();
    assert_eq!(
        max_gauge, MAX_QUEUE as i64,
        "the queue filled up to its bound"
    );
    assert_eq!(host.counter("ordertrace_spans_exported"), Some(0));
    assert_eq!(
        dropped + queued,
        TOTAL as i64,
        "every span is either queued or counted as dropped"
    );
    if envoy_times_out {
        assert!(host.counter("ordertrace_export_failures").unwrap() > 0);
    } else {
        assert_eq!(host.http_calls().len(), 1, "one call, never answered");
        assert_eq!(host.counter("ordertrace_export_failures"), Some(0));
    }
    println!(
        "timeouts {envoy_times_out}: guest memory: {memory_at_10k} bytes after 10 000 requests, {memory_at_100k} after 100 000; \
         queue {queued}, dropped {dropped}, export attempts {}",
        host.http_calls().len()
    );
    assert_eq!(
        memory_at_10k, memory_at_100k,
        "guest memory grew between 10 000 and 100 000 requests"
    );
    assert_clean(&host);
}

// ---------------------------------------------------------------------------------------------
// Per-request contract

/// Envoy no longer holds the request headers after `on_request_headers` returned Continue; a read
/// in a response callback is BadArgument there (the SDK then panics). No case may do it, even the
/// routes that read request headers and response bodies.
#[test]
fn response_callbacks_never_read_request_headers() {
    let mut host = configured_with(&Cfg::default().lifecycle().redaction());
    for case in cases::dual_run_cases() {
        for ex in &case.exchanges {
            let s = drive(&mut host, case.name, ex);
            host.forget_stream(s);
        }
    }
    drain_exports(&mut host, |_| {});
    assert!(
        host.request_map_access_in_response_phase().is_empty(),
        "{:?}",
        host.request_map_access_in_response_phase()
    );
    assert_clean(&host);
}

/// A request no route matches goes upstream exactly as received, plus `traceparent`.
#[test]
fn unknown_route_leaves_headers_untouched_except_traceparent() {
    let received: &[(&str, &str)] = &[
        (":method", "GET"),
        (":path", "/unknown/thing?x=1"),
        (":authority", "shop.example"),
        ("x-partner", "p-1"),
        ("x-order-id", "ORD-1"),
        ("tracestate", "vendor=abc"),
        ("baggage", "user.id=42"),
        ("cookie", "session=1"),
        ("x-dup", "a"),
        ("x-dup", "b"),
        ("content-type", "application/json"),
    ];
    for incoming in [None, Some(cases::TP_SAMPLED)] {
        let mut host = configured_with(&Cfg::default().redaction());
        let mut headers = received.to_vec();
        if let Some(tp) = incoming {
            headers.push(("traceparent", tp));
        }
        let s = host
            .exchange(
                &headers,
                &[br#"{"order":{"id":"ORD-1"}}"#],
                &[(":status", "200"), ("x-resp", "1")],
                &[b"ok"],
            )
            .unwrap();
        let stream = host.stream(s).unwrap();
        let sent = stream.request.forwarded_headers.as_ref().unwrap();
        let got = stream.request.headers.as_ref().unwrap();
        assert_eq!(
            sent.without(&["traceparent"]).as_strs(),
            got.without(&["traceparent"]).as_strs(),
            "only traceparent may change"
        );
        let tps = sent.get_all("traceparent");
        assert_eq!(tps.len(), 1);
        if let Some(tp) = incoming {
            assert_eq!(&tps[0][..36], &tp[..36], "same version and trace id");
            assert_ne!(tps[0], tp, "a new parent id: the edge span");
        }
        assert_eq!(stream.request.forwarded_body, stream.request.received_body);
        assert_eq!(stream.response.forwarded_headers, stream.response.headers);
        assert_eq!(
            stream.response.forwarded_body,
            stream.response.received_body
        );
        assert_clean(&host);
    }
}

/// A request body far bigger than `body.max_bytes` streams on whole and untouched; the filter
/// inspects only the prefix (fields there are found) and counts one limit hit.
#[test]
fn request_body_bigger_than_the_limit() {
    let mut host = configured_with(&Cfg::default().max_body(1024));
    let body = padded_json(r#""order":{"id":"ORD-55"}"#, 256 * 1024, false);
    let ex = req("POST", "/api/notify")
        .json(&body)
        .request_chunked(16 * 1024);
    assert_eq!(ex.request_chunks.len(), 16);
    let memory_before = host.memory_bytes();
    let s = drive(&mut host, "big body", &ex);
    let stream = host.stream(s).unwrap();
    assert_eq!(stream.request.forwarded_body, body, "the body passes whole");
    assert_eq!(stream.request.body_sizes.len(), 16, "no buffering");
    assert!(
        host.memory_bytes() - memory_before < 256 * 1024,
        "the guest copied the whole body: memory {} -> {}",
        memory_before,
        host.memory_bytes()
    );
    let mut spans = Vec::new();
    drain_exports(&mut host, |b| spans.extend(spans_of(b)));
    assert_eq!(spans.len(), 1);
    assert_eq!(attr(&spans[0], "order.id").as_deref(), Some("ORD-55"));
    assert_eq!(host.counter("ordertrace_body_limit_hits"), Some(1));
    assert_clean(&host);
}

/// The exported batch says who sent it: resource and scope.
#[test]
fn export_request_carries_resource_and_scope() {
    let mut host = configured_with(&Cfg::default());
    drive(&mut host, "resource", &upload("ORD-1"));
    let mut bodies = Vec::new();
    drain_exports(&mut host, |b| bodies.push(b.to_vec()));
    assert_eq!(bodies.len(), 1);
    let req = dual::decode_export(&bodies[0]);
    let rs = &req.resource_spans[0];
    let resource = rs.resource.as_ref().unwrap();
    let get = |k: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| dual::text(&kv.value))
    };
    assert_eq!(get("service.name").as_deref(), Some("shop-api"));
    assert_eq!(get("service.instance.id").as_deref(), Some(cases::NODE_ID));
    assert_eq!(get("telemetry.sdk.name").as_deref(), Some("ordertrace"));
    assert_eq!(
        rs.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()),
        Some("ordertrace")
    );
    assert_eq!(host.http_calls()[0].cluster, CLUSTER);
}

/// The collector cluster does not exist in Envoy (`proxy_http_call` answers BadArgument): the
/// export counts as failed, the spans stay queued (bounded), and the VM lives on.
#[test]
fn unknown_collector_cluster_is_a_counted_failure() {
    let opts = HostOptions {
        clusters: vec!["some_other_cluster".into()],
        ..host_options()
    };
    let mut host = Host::configured(filter_wasm(), opts, &Cfg::default().json()).unwrap();
    for i in 0..3 {
        drive(&mut host, "no cluster", &upload(&format!("ORD-{i}")));
    }
    for _ in 0..3 {
        host.advance_clock(60_000);
        host.tick().unwrap();
    }
    assert!(host.http_calls().is_empty());
    assert_eq!(host.counter("ordertrace_export_failures"), Some(3));
    assert_eq!(host.counter("ordertrace_export_requests"), Some(0));
    assert_eq!(host.gauge("ordertrace_queue_spans"), Some(3));
    assert!(
        !host.logs_containing("not sent").is_empty(),
        "{:?}",
        host.logs()
    );
    assert!(host
        .violations()
        .iter()
        .all(|v| v.import == "proxy_http_call"));
    assert!(host.crashed().is_none());
}

/// Streams of one VM interleave in Envoy; each keeps its own state: the spans are those of the
/// same requests run one after the other.
#[test]
fn interleaved_streams_give_the_same_spans_as_sequential() {
    let a = req("PUT", "/api/orders/ORD-A/status")
        .json(br#"{"status":"PACKAGING","operatorId":"op-1"}"#)
        .request_chunked(8);
    let b = req("POST", "/api/orders?channel=web")
        .json(br#"{"note":"b"}"#)
        .status(201)
        .respond_json(br#"{"id":"ORD-B"}"#)
        .response_chunked(4);
    let summary = |host: &mut Host| {
        let mut spans = Vec::new();
        drain_exports(host, |body| spans.extend(spans_of(body)));
        let mut out: Vec<(String, Vec<String>)> = spans
            .iter()
            .map(|s| {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={:?}", kv.key, dual::text(&kv.value)))
                    .collect();
                (s.name.clone(), attrs)
            })
            .collect();
        out.sort();
        out
    };

    let mut sequential = configured_with(&Cfg::default());
    for ex in [&a, &b] {
        let s = sequential.exchange(
            &ex.request_headers_str(),
            &ex.request_chunks
                .iter()
                .map(Vec::as_slice)
                .collect::<Vec<_>>(),
            &ex.response_headers_str().unwrap(),
            &ex.response_chunks
                .iter()
                .map(Vec::as_slice)
                .collect::<Vec<_>>(),
        );
        s.unwrap();
    }

    let mut host = configured_with(&Cfg::default());
    let sa = host.new_http_stream().unwrap();
    let sb = host.new_http_stream().unwrap();
    host.request_headers(sa, &a.request_headers_str(), false)
        .unwrap();
    host.request_headers(sb, &b.request_headers_str(), false)
        .unwrap();
    let (ra, rb) = (&a.request_chunks, &b.request_chunks);
    for i in 0..ra.len().max(rb.len()) {
        if let Some(c) = ra.get(i) {
            host.request_body(sa, c, i + 1 == ra.len()).unwrap();
        }
        if let Some(c) = rb.get(i) {
            host.request_body(sb, c, i + 1 == rb.len()).unwrap();
        }
    }
    host.response_headers(sb, &b.response_headers_str().unwrap(), false)
        .unwrap();
    host.response_headers(sa, &a.response_headers_str().unwrap(), true)
        .unwrap();
    let rb = &b.response_chunks;
    for (i, c) in rb.iter().enumerate() {
        host.response_body(sb, c, i + 1 == rb.len()).unwrap();
    }
    host.finish(sb).unwrap();
    host.finish(sa).unwrap();

    let (x, y) = (summary(&mut sequential), summary(&mut host));
    assert_eq!(x.len(), 2);
    assert_eq!(x, y);
    assert_clean(&host);
}

/// Beyond the hand-written rows: the whole cross product of routes, trace contexts, response
/// statuses, body chunkings and configurations (2 025 combinations, ~10 s), natively and in wasm.
/// Only agreement (and the per-run invariants of `dual::run_wasm`) is checked.
#[test]
fn dual_run_combinations_agree() {
    let status_body = br#"{"status":"SHIPPED","operatorId":"op-9","note":"call +7 999 123-45-67"}"#;
    let requests: Vec<Exchange> = vec![
        req("GET", "/health?x=1"),
        upload("ORD-C1"),
        req("POST", "/api/orders/ORD-C2/submit?channel=web").header("x-partner", "p-3"),
        req("PATCH", "/api/orders/ORD-C3/status").json(status_body),
        req("GET", "/api/orders/ORD-C4/invoice").header("accept", "application/pdf"),
        req("GET", "/api/lookup?order=ORD-C5&email=a%40b.co"),
        req("POST", "/api/notify").json(br#"{"order":{"id":"ORD-C6"},"contact":"x@y.org"}"#),
        req("DELETE", "/api/orders/ORD-C7").header("x-order-id", "ORD-C7"),
        req("POST", "/api/orders")
            .json(br#"{"note":"n"}"#)
            .respond_json(br#"{"id":"ORD-C8"}"#),
    ];
    let traceparents = [
        None,
        Some(cases::TP_SAMPLED),
        Some(cases::TP_UNSAMPLED),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra"),
    ];
    let statuses = [Some(200u16), Some(201), Some(404), Some(500), None];
    let chunkings = [0usize, 1, 5];
    let configs = [
        Cfg::default(),
        Cfg::default().redaction().lifecycle(),
        Cfg::default().max_body(16).public_edge(),
    ];
    let dims = [
        requests.len(),
        traceparents.len(),
        statuses.len(),
        chunkings.len(),
        configs.len(),
    ];
    let total: usize = dims.iter().product();
    let mut failed = Vec::new();
    for k in 0..total {
        let mut i = k;
        let mut pick = [0usize; 5];
        for (p, d) in pick.iter_mut().zip(dims) {
            *p = i % d;
            i /= d;
        }
        let mut ex = requests[pick[0]].clone();
        if let Some(tp) = traceparents[pick[1]] {
            ex = ex.header("traceparent", tp);
        }
        ex = match statuses[pick[2]] {
            Some(s) => ex.status(s),
            None => ex.no_response("upstream_reset_before_response_started{remote_reset}"),
        };
        if chunkings[pick[3]] > 0 {
            let n = chunkings[pick[3]];
            ex = ex.request_chunked(n).response_chunked(n);
        }
        let case = Case::new("combination", configs[pick[4]].clone(), ex);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let native = dual::run_native(&case);
            let wasm = dual::run_wasm(&case);
            dual::check_agreement(&case, &native, &wasm);
        }));
        if result.is_err() {
            failed.push(format!("{pick:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} combinations disagree (indices request, traceparent, status, chunking, config): {}",
        failed.len(),
        failed.join(", ")
    );
}
