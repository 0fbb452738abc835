//! Contract tests of the collector plugin: the same cases natively (`ordertrace_collector`), against the
//! WIT component `dist/ordertrace-collector.wasm` in a wasmtime host generated from wit/ordertrace.wit
//! (tests/collector/component.rs), and against the otelwasm build `dist/ordertrace-otelwasm.wasm` in a
//! small otelwasm host (tests/collector/otelwasm.rs). `make collector-wasm otelwasm-wasm` builds both.
//!
//! The batches (tests/collector/corpus.rs) are Java-agent-like OTLP spans built with prost, so canonical:
//! untouched spans must come out byte for byte, and all three runs must produce the same bytes.
//!
//! `make bench-collector` runs the ignored benchmark: spans per second through `process` per core.

// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "collector/compiled.rs"]
mod compiled;
#[path = "collector/component.rs"]
mod component;
#[path = "collector/corpus.rs"]
mod corpus;
#[path = "collector/otelwasm.rs"]
mod otelwasm;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use ordertrace_collector::{CollectorConfig, Processed, Processor};

use component::{ComponentHost, ComponentOptions, ProcessError};
use corpus::{attr, contains, spans_of, str_attr, Batch, Expect};
use otelwasm::{OtelwasmHost, OtelwasmOptions, STATUS_INVALID_ARGUMENT};

fn native(config: &str) -> Processor {
    Processor::new(CollectorConfig::from_json(config.as_bytes()).unwrap())
}

fn native_run(p: &mut Processor, input: &[u8]) -> Vec<u8> {
    p.process(input).0.unwrap().into_bytes(input.to_vec())
}

fn component(config: &str) -> ComponentHost {
    let mut h = ComponentHost::new(ComponentOptions::default()).unwrap();
    h.init(config).unwrap().unwrap();
    h
}

/// The three runs of one batch; all must agree byte for byte.
fn run_all(config: &str, input: &[u8]) -> Vec<u8> {
    let n = native_run(&mut native(config), input);
    let c = component(config).process(input).unwrap().unwrap();
    let mut o = OtelwasmHost::new(OtelwasmOptions::default()).unwrap();
    let w = o.process(config, input).unwrap().unwrap();
    assert!(n == c, "native and component outputs differ");
    assert!(n == w, "native and otelwasm outputs differ");
    n
}

fn check_batch(b: &Batch, out: &[u8], check_previous: bool) {
    for p in &b.pii {
        assert!(!contains(out, p.as_bytes()), "PII {p:?} in the output");
    }
    let spans = spans_of(out);
    assert_eq!(spans.len(), b.spans.len());
    for (id, expect, encoded) in &b.spans {
        let sp = spans.iter().find(|s| &s.span_id == id).expect("span kept");
        match expect {
            Expect::Untouched => assert!(
                contains(out, encoded),
                "untouched span {:?} is not byte-identical",
                sp.name
            ),
            Expect::Redacted => {
                assert!(
                    !contains(out, encoded),
                    "span {:?} was not redacted",
                    sp.name
                );
                assert_eq!(str_attr(sp, "order.id"), None);
            }
            Expect::Order {
                id,
                status,
                attempted,
                previous,
            } => {
                assert_eq!(str_attr(sp, "order.id").as_ref(), Some(id), "{}", sp.name);
                assert_eq!(&str_attr(sp, "order.status"), status, "{}", sp.name);
                assert_eq!(
                    &str_attr(sp, "order.status.attempted"),
                    attempted,
                    "{}",
                    sp.name
                );
                let events = sp
                    .events
                    .iter()
                    .filter(|e| e.name == "order.status_changed")
                    .count();
                assert_eq!(events, usize::from(status.is_some()), "{}", sp.name);
                if check_previous {
                    assert_eq!(
                        &str_attr(sp, "order.status.previous"),
                        previous,
                        "{}",
                        sp.name
                    );
                    if previous.is_some() {
                        assert!(matches!(
                            attr(sp, "order.stage.duration_ms"),
                            Some(Value::IntValue(_))
                        ));
                    }
                }
            }
        }
    }
}

#[test]
fn java_agent_batch_is_enriched_and_redacted_identically_in_all_builds() {
    let config = corpus::config();
    let b = corpus::java_batch(64, 0);
    let out = run_all(&config, &b.bytes);
    check_batch(&b, &out, true);

    // Specific values: the e-mail masked where it was, the url.path order id kept, the manager header.
    let spans = spans_of(&out);
    let submit = spans
        .iter()
        .find(|s| s.name == "POST /api/orders/{id}/submit")
        .unwrap();
    assert_eq!(
        str_attr(submit, "url.path").as_deref(),
        Some("/api/orders/ORD-1000/submit")
    );
    assert_eq!(
        str_attr(submit, "app.customer.contact").as_deref(),
        Some("[email]")
    );
    assert_eq!(
        str_attr(submit, "url.query").as_deref(),
        Some("notify=[email]")
    );
    let sms = spans
        .iter()
        .find(|s| s.name.starts_with("SmsNotifier"))
        .unwrap();
    assert_eq!(sms.name, "SmsNotifier.send [phone]");
    let approve = spans
        .iter()
        .find(|s| s.name == "POST /api/orders/{id}/approve")
        .unwrap();
    assert_eq!(str_attr(approve, "crm.manager").as_deref(), Some("m-7"));
    // Semantic-convention attributes ending in `name` survive; the PII resource attribute is masked.
    let data = <opentelemetry_proto::tonic::trace::v1::TracesData as prost::Message>::decode(
        out.as_slice(),
    )
    .unwrap();
    let res = data.resource_spans[0].resource.as_ref().unwrap();
    let rattr = |k: &str| {
        res.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(
        rattr("service.owner.contact"),
        Some(Value::StringValue("[email]".into()))
    );
    assert_eq!(
        rattr("process.runtime.name"),
        Some(Value::StringValue("OpenJDK Runtime Environment".into()))
    );
    assert_eq!(
        rattr("deployment.environment.name"),
        Some(Value::StringValue("prod".into()))
    );
}

#[test]
fn larger_batches_agree_and_leak_nothing() {
    let config = corpus::config();
    for (n, first) in [(300, 100), (1000, 1000)] {
        let b = corpus::java_batch(n, first);
        let out = run_all(&config, &b.bytes);
        // The lifecycle table is direct-mapped: in large batches two orders may share a slot, so
        // `previous` is only checked in the small batch above.
        check_batch(&b, &out, false);
    }
}

#[test]
fn a_batch_that_needs_no_change_comes_back_as_the_same_bytes() {
    let config = corpus::config();
    for input in [corpus::clean_batch(), corpus::edge_batch(), Vec::new()] {
        let mut p = native(&config);
        assert_eq!(p.process(&input).0.unwrap(), Processed::Unchanged);
        assert_eq!(run_all(&config, &input), input);
    }
}

#[test]
fn the_output_is_a_fixed_point() {
    let config = corpus::config();
    let b = corpus::java_batch(64, 0);
    let once = run_all(&config, &b.bytes);
    // A fresh processor: spans now carry order.id (not enriched again), redaction is idempotent.
    assert_eq!(run_all(&config, &once), once);
}

#[test]
fn bad_configuration_is_an_init_error_naming_the_field() {
    let cases = [
        // Not JSON: no field; the message gives the line and column where the document ends.
        ("{\"routes\":", ""),
        ("{}", "redaction.hmac_key"),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"api/orders"}]}"#,
            "routes[0].path",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a/{id}","order_id":{"response_body":"/id"}}]}"#,
            "routes[0].order_id.response_body",
        ),
        (
            r#"{"redaction":{"enabled":false},"messages":[{"destination":"orders","kind":"sideways"}]}"#,
            "messages[0].kind",
        ),
        (
            r#"{"redaction":{"enabled":false},"lifecycle":{"sla":{"NOPE":"1h"}}}"#,
            "lifecycle.sla.NOPE",
        ),
        (r#"{"service":"shop-api"}"#, "service"),
    ];
    let good = corpus::config();
    let input = corpus::java_batch(16, 0).bytes;
    for (json, field) in cases {
        let native_err = CollectorConfig::from_json(json.as_bytes()).unwrap_err();
        assert_eq!(native_err.field, field, "{json}");
        if field.is_empty() {
            assert!(
                native_err.message().ends_with("at line 1 column 11"),
                "{}",
                native_err.message()
            );
        }

        let mut h = ComponentHost::new(ComponentOptions::default()).unwrap();
        let e = h.init(json).unwrap().unwrap_err();
        assert_eq!(e.field, field, "{json}: {}", e.message);
        assert_eq!(e.message, native_err.message());
        assert!(h
            .state()
            .logs
            .iter()
            .any(|(l, m)| *l == component::Level::Error && m.contains("rejected")));
        // Never configured: every batch is refused, nothing traps.
        assert!(matches!(
            h.process(&input).unwrap(),
            Err(ProcessError::NotInitialized)
        ));
        // A bad configuration after a good one leaves the good one in force.
        h.init(&good).unwrap().unwrap();
        assert!(h.init(json).unwrap().is_err());
        assert!(h.process(&input).unwrap().is_ok());

        // otelwasm: the configuration is read with the first batch, which fails with the field named.
        let mut o = OtelwasmHost::new(OtelwasmOptions::default()).unwrap();
        for _ in 0..2 {
            let (status, reason) = o.process(json, &input).unwrap().unwrap_err();
            assert_eq!(status, STATUS_INVALID_ARGUMENT);
            assert!(
                reason.contains(&format!("{field}: ")) || field.is_empty(),
                "{reason}"
            );
        }
    }
}

#[test]
fn otelwasm_without_plugin_config_asks_for_the_hmac_key() {
    let mut o = OtelwasmHost::new(OtelwasmOptions::default()).unwrap();
    let (status, reason) = o
        .process("null", &corpus::clean_batch())
        .unwrap()
        .unwrap_err();
    assert_eq!(status, STATUS_INVALID_ARGUMENT);
    assert!(reason.contains("redaction.hmac_key"), "{reason}");
}

#[test]
fn malformed_protobuf_is_a_process_error_not_a_trap() {
    let config = corpus::config();
    let good = corpus::java_batch(16, 0).bytes;
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let bad: [&[u8]; 4] = [
        b"\xff\xff\xff",
        b"not protobuf at all",
        &truncated,
        b"\x0a\x80",
    ];
    let mut h = component(&config);
    let mut o = OtelwasmHost::new(OtelwasmOptions::default()).unwrap();
    for input in bad {
        assert!(native(&config).process(input).0.is_err());
        match h.process(input).unwrap() {
            Err(ProcessError::Malformed(m)) => assert!(!m.is_empty()),
            other => panic!("{other:?}"),
        }
        let (status, reason) = o.process(&config, input).unwrap().unwrap_err();
        assert_eq!(status, STATUS_INVALID_ARGUMENT);
        assert!(reason.contains("not an OTLP TracesData"), "{reason}");
        // Still usable.
        assert!(h.process(&good).unwrap().is_ok());
        assert!(o.process(&config, &good).unwrap().is_ok());
    }
    assert_eq!(h.counter("ordertrace_collector_batches_malformed"), 4);
}

#[test]
fn counters_and_logs_reach_the_host() {
    let config = corpus::config();
    let mut h = component(&config);
    let (level, line) = &h.state().logs[0];
    assert_eq!(*level, component::Level::Info);
    assert!(
        line.contains(ordertrace::VERSION) && line.contains("3 route rule(s)"),
        "{line}"
    );
    let b = corpus::java_batch(16, 0);
    h.process(&b.bytes).unwrap().unwrap();
    assert_eq!(h.counter("ordertrace_collector_batches"), 1);
    assert_eq!(h.counter("ordertrace_collector_spans"), 16);
    let enriched = b
        .spans
        .iter()
        .filter(|(_, e, _)| matches!(e, Expect::Order { .. }))
        .count() as u64;
    assert_eq!(h.counter("ordertrace_collector_spans_enriched"), enriched);
    assert!(h.counter("ordertrace_collector_values_redacted") > 0);
    assert!(h.counter("ordertrace_collector_transitions") > 0);
}

#[test]
fn hmac_key_from_the_environment() {
    let key = "a-key-from-the-environment-0123";
    let config = r#"{"redaction":{"hmac_key_env":"ORDERTRACE_HMAC_KEY"}}"#;
    let batch = {
        use corpus::s;
        use opentelemetry_proto::tonic::trace::v1::*;
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "op".into(),
                        attributes: vec![s("user.id", "u-42")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        prost::Message::encode_to_vec(&data)
    };
    let expected = ordertrace::redact::hmac_pseudonym(key.as_bytes(), "u-42");
    let env = vec![("ORDERTRACE_HMAC_KEY".to_string(), key.to_string())];

    let mut h = ComponentHost::new(ComponentOptions { env: env.clone() }).unwrap();
    h.init(config).unwrap().unwrap();
    let out = h.process(&batch).unwrap().unwrap();
    assert_eq!(
        str_attr(&spans_of(&out)[0], "user.id"),
        Some(expected.clone())
    );

    let mut o = OtelwasmHost::new(OtelwasmOptions {
        env,
        ..OtelwasmOptions::default()
    })
    .unwrap();
    let out = o.process(config, &batch).unwrap().unwrap();
    assert_eq!(str_attr(&spans_of(&out)[0], "user.id"), Some(expected));

    // Not set: the field is named, nothing traps.
    let mut h = ComponentHost::new(ComponentOptions::default()).unwrap();
    assert_eq!(
        h.init(config).unwrap().unwrap_err().field,
        "redaction.hmac_key_env"
    );
}

#[test]
fn otelwasm_reads_batches_larger_than_its_buffer_under_both_size_conventions() {
    let config = corpus::config();
    // Some 3 MB: more than the guest's first 1 MiB buffer.
    let b = corpus::java_batch(6000, 0);
    assert!(b.bytes.len() > 2 << 20, "{}", b.bytes.len());
    let expected = native_run(&mut native(&config), &b.bytes);
    // The Go host's convention: 0 when it does not fit. The guest grows its buffer 4x and retries.
    let mut o = OtelwasmHost::new(OtelwasmOptions::default()).unwrap();
    assert_eq!(o.process(&config, &b.bytes).unwrap().unwrap(), expected);
    assert_eq!(o.state().current_calls, 2);
    // The buffer stays grown.
    let again = corpus::java_batch(6000, 0);
    o.process(&config, &again.bytes).unwrap().unwrap();
    assert_eq!(o.state().current_calls, 1);
    // An empty batch (0 is also "empty"): probes up to the limit, answers empty, gives the memory back.
    assert_eq!(o.process(&config, b"").unwrap().unwrap(), Vec::<u8>::new());
    assert!(o.state().current_calls > 1);
    o.process(&config, &again.bytes).unwrap().unwrap();
    assert_eq!(o.state().current_calls, 1);
    // A host that reports the needed size: exactly one retry.
    let mut o = OtelwasmHost::new(OtelwasmOptions {
        report_size: true,
        ..OtelwasmOptions::default()
    })
    .unwrap();
    assert_eq!(o.process(&config, &b.bytes).unwrap().unwrap(), expected);
    assert_eq!(o.state().current_calls, 2);
}

#[test]
fn the_component_uses_no_wasi_beyond_its_declared_imports() {
    let imports = component::imports().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i == "ordertrace:collector/host@0.1.0"),
        "{imports:?}"
    );
    // Every case above ran with all of WASI except the environment trapping: record what is declared.
    eprintln!("component imports: {imports:?}");
    let modules = otelwasm::imports().unwrap();
    for want in [
        "opentelemetry.io/wasm::currentTraces",
        "opentelemetry.io/wasm::setResultTraces",
        "opentelemetry.io/wasm::getPluginConfig",
        "opentelemetry.io/wasm::setResultStatusReason",
    ] {
        assert!(
            modules.iter().any(|m| m == want),
            "{want} not in {modules:?}"
        );
    }
    assert!(
        modules
            .iter()
            .all(|m| m.starts_with("opentelemetry.io/wasm::")
                || m.starts_with("wasi_snapshot_preview1::")),
        "{modules:?}"
    );
}

#[test]
fn the_deployed_plugin_configuration_is_valid_in_both_builds() {
    let path = concat!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
        "/deploy/collector/plugin-config.json"
    );
    let config = std::fs::read_to_string(path).unwrap();
    let env = vec![(
        "ORDERTRACE_HMAC_KEY".to_string(),
        "a-deployment-key-0123456789".to_string(),
    )];
    let mut h = ComponentHost::new(ComponentOptions { env: env.clone() }).unwrap();
    h.init(&config).unwrap().unwrap();
    let b = corpus::java_batch(16, 0);
    let out = h.process(&b.bytes).unwrap().unwrap();
    for p in &b.pii {
        assert!(!contains(&out, p.as_bytes()), "PII {p:?} in the output");
    }
    let mut o = OtelwasmHost::new(OtelwasmOptions {
        env,
        ..OtelwasmOptions::default()
    })
    .unwrap();
    assert_eq!(o.process(&config, &b.bytes).unwrap().unwrap(), out);
    assert!(
        o.state().stderr.contains("4 route rule(s)"),
        "{}",
        o.state().stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Benchmark: `make bench-collector` (cargo test -p ordertrace-tests --test collector_contract -- --ignored --nocapture)

/// CPU time of this thread so far (Linux `/proc/thread-self/schedstat`), so that a busy machine does not
/// count as a slow plugin; wall time where it is unavailable.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Calls `f` until `min` of wall time has passed (after a warm-up): the fastest call (wall time) and the
/// mean CPU time per call.
fn time(min: Duration, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..3 {
        f();
    }
    let mut best = Duration::MAX;
    let mut calls = 0u32;
    let start = Instant::now();
    let cpu0 = thread_cpu();
    while start.elapsed() < min || calls < 10 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        calls += 1;
    }
    let cpu = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => start.elapsed(),
    };
    (best, cpu / calls)
}

#[test]
#[ignore = "benchmark: make bench-collector"]
fn bench_spans_per_second() {
    let config = corpus::config();
    let min = Duration::from_secs(3);
    println!(
        "spans/s through process on one core: fastest call (wall) / mean CPU time per call, {min:?} each"
    );
    println!(
        "{:<6} {:>6} {:>8} {:>18} {:>22} {:>22}",
        "batch", "spans", "bytes", "native", "component (wasmtime)", "otelwasm (wasmtime)"
    );
    for n in [100usize, 1000] {
        for (label, batch) in [
            ("java", corpus::java_batch(n, 0).bytes),
            ("clean", clean_of(n)),
        ] {
            let spans = spans_of(&batch).len();
            let rate = |d: Duration| spans as f64 / d.as_secs_f64();
            let cell = |(best, cpu): (Duration, Duration)| {
                format!("{:.0}k / {:.0}k", rate(best) / 1e3, rate(cpu) / 1e3)
            };
            let mut p = native(&config);
            let nat = time(min, || {
                std::hint::black_box(p.process(&batch).0.unwrap());
            });
            let mut h = component(&config);
            let comp = time(min, || {
                std::hint::black_box(h.process(&batch).unwrap().unwrap());
            });
            let mut o = OtelwasmHost::new(OtelwasmOptions::default()).unwrap();
            let ow = time(min, || {
                std::hint::black_box(o.process(&config, &batch).unwrap().unwrap());
            });
            println!(
                "{:<6} {:>6} {:>8} {:>18} {:>22} {:>22}",
                label,
                spans,
                batch.len(),
                cell(nat),
                cell(comp),
                cell(ow)
            );
        }
    }
}

/// `n` spans of the corpus that need no change (no PII, no rule; the common case), without resources.
fn clean_of(n: usize) -> Vec<u8> {
    use opentelemetry_proto::tonic::trace::v1::TracesData;
    let b = corpus::java_batch(n * 4, 0);
    let keep: Vec<Vec<u8>> = b
        .spans
        .iter()
        .filter(|(_, e, _)| *e == Expect::Untouched)
        .take(n)
        .map(|(id, _, _)| id.clone())
        .collect();
    let mut data = <TracesData as prost::Message>::decode(b.bytes.as_slice()).unwrap();
    for rs in &mut data.resource_spans {
        rs.resource = None;
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|s| keep.contains(&s.span_id));
        }
    }
    prost::Message::encode_to_vec(&data)
}
