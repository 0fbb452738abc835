//! The AMQP network filter as built (`dist/ordertrace-amqp.wasm`) in the contract host, driven through the
//! network-filter side of the proxy-wasm ABI the way Envoy's `envoy.filters.network.wasm` in front of
//! `tcp_proxy` drives it: a realistic session (tests/amqp_support `wire_session`) replayed whole, cut at
//! every byte boundary of every read in both directions, and one byte at a time. Every run is a fresh
//! instance of the one compiled module with the same `random_get` seed and clock, so ids and times are
//! the same in every run and everything is compared exactly:
//!
//! - the bytes that reach the broker: the input, except a `traceparent` appended to the headers of the
//!   content-header frames of messages that had none (checked frame by frame on the whole run), and the
//!   same bytes at every cut;
//! - the bytes that reach the client: the broker's, untouched;
//! - the spans exported over OTLP (decoded protobuf: names, kinds, ids, parents, links, attributes,
//!   events, status, times) and the AMQP counters.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "contract/host.rs"]
mod host;

mod amqp_support;

use std::path::PathBuf;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;

use amqp_support::*;
use host::{Action, Host, HostOptions, Net};
use ordertrace::tracecontext::parse_traceparent;
use ordertrace_amqp::frame::{parse_content_header, FRAME_HEADER};
use ordertrace_amqp::table::FieldValue;

const CLUSTER: &str = "otlp_collector";

fn filter_wasm() -> PathBuf {
    let path =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("dist/ordertrace-amqp.wasm");
    assert!(
        path.exists(),
        "dist/ordertrace-amqp.wasm is missing: run `make wasm`"
    );
    path
}

fn plugin_config() -> String {
    format!(
        r#"{{"service":"crm-api","collector":{{"cluster":"{CLUSTER}"}},
            "redaction":{{"hmac_key":"contract-test-hmac-key-not-secret"}},"amqp":{CFG}}}"#
    )
}

fn options() -> HostOptions {
    HostOptions {
        node_id: "amqp-edge-1".into(),
        clusters: vec![CLUSTER.into()],
        seed: 11,
        ..HostOptions::default()
    }
}

const COUNTERS: [&str; 5] = [
    "ordertrace_amqp_connections",
    "ordertrace_amqp_injected",
    "ordertrace_amqp_inject_skipped",
    "ordertrace_amqp_unconfirmed",
    "ordertrace_amqp_requeues",
];

/// What one run of a session through the built filter produced.
#[derive(Debug, PartialEq)]
struct Observed {
    net: NetBytes,
    spans: Vec<Span>,
    counters: Vec<(&'static str, Option<i64>)>,
}

#[derive(Debug, PartialEq)]
struct NetBytes {
    to_broker: Vec<u8>,
    to_client: Vec<u8>,
}

/// Runs `steps` cut by `cuts` through a fresh instance; returns what it observed and how many data
/// callbacks answered Pause.
fn run_wasm(steps: &[Step], cuts: Cuts) -> (Observed, usize) {
    let mut host = Host::configured(filter_wasm(), options(), &plugin_config()).unwrap();
    let c = host.new_connection().unwrap();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Client(b) => {
                for r in reads(cuts, i, b) {
                    host.downstream_data(c, r, false).unwrap();
                }
            }
            Step::Broker(b) => {
                for r in reads(cuts, i, b) {
                    let action = host.upstream_data(c, r, false).unwrap();
                    assert_eq!(action, Action::Continue, "broker data is never held");
                }
            }
            Step::AdvanceMs(ms) => host.advance_clock(*ms),
            Step::Close => host.close_connection(c).unwrap(),
        }
    }
    let net: Net = host.connection(c).unwrap().clone();
    assert_eq!(
        net.downstream_received,
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Client(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    );
    let spans = export(&mut host);
    assert!(
        host.violations().is_empty(),
        "calls Envoy would refuse: {:?}",
        host.violations()
    );
    assert!(host.unimplemented_imports().is_empty());
    let counters = COUNTERS.iter().map(|n| (*n, host.counter(n))).collect();
    (
        Observed {
            net: NetBytes {
                to_broker: net.forwarded_upstream,
                to_client: net.forwarded_downstream,
            },
            spans,
            counters,
        },
        net.pauses,
    )
}

/// Ticks the root context until every queued span went out in an OTLP export (answered 200).
fn export(host: &mut Host) -> Vec<Span> {
    let mut spans = Vec::new();
    for _ in 0..100 {
        host.advance_clock(1000);
        host.tick().unwrap();
        let pending = host.pending_http_calls();
        if pending.is_empty() {
            return spans;
        }
        for call in pending {
            assert_eq!(call.cluster, CLUSTER);
            let req = ExportTraceServiceRequest::decode(call.body.as_slice()).unwrap();
            spans.extend(
                req.resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans),
            );
            host.respond_http_call(call.token, 200, &[], b"").unwrap();
        }
    }
    panic!("the export never drains");
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|kv| kv.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The broker received `input` except for `traceparent` headers appended to content headers that had
/// none; returns those `traceparent` values in order.
fn only_traceparents_added(sent: &[u8], input: &[u8]) -> Vec<String> {
    let sent_frames = frames(sent);
    let input_frames = frames(input);
    assert_eq!(sent_frames.len(), input_frames.len(), "frame count changed");
    assert_eq!(sent[..8], input[..8], "protocol header changed");
    let mut added = Vec::new();
    for (a, b) in sent_frames.iter().zip(&input_frames) {
        if a == b {
            continue;
        }
        assert_eq!((a.0, a.1), (b.0, b.1), "frame type or channel changed");
        assert_eq!(a.0, FRAME_HEADER, "only content headers may change");
        let got = parse_content_header(&a.2).unwrap();
        let orig = parse_content_header(&b.2).unwrap();
        let mut table = orig.properties.headers.clone().unwrap_or_default();
        assert!(
            table.get("traceparent").is_none(),
            "a traceparent was replaced"
        );
        let tp = got
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .and_then(|v| v.as_bytes())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .expect("the changed header carries a traceparent");
        table
            .0
            .push(("traceparent".into(), FieldValue::LongStr(tp.clone().into())));
        assert_eq!(got.properties.headers.as_ref(), Some(&table));
        let mut props = got.properties.clone();
        props.headers = None;
        let mut orig_props = orig.properties.clone();
        orig_props.headers = None;
        assert_eq!(props, orig_props, "another property changed");
        assert_eq!(got.body_size, orig.body_size);
        added.push(tp);
    }
    added
}

fn client_bytes(steps: &[Step]) -> Vec<u8> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Client(b) => Some(b.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .concat()
}

fn broker_bytes(steps: &[Step]) -> Vec<u8> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Broker(b) => Some(b.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .concat()
}

/// The whole session once: what the built filter does with it, asserted in detail.
fn check_whole_run(steps: &[Step], whole: &Observed) {
    let added = only_traceparents_added(&whole.net.to_broker, &client_bytes(steps));
    assert_eq!(
        whole.net.to_client,
        broker_bytes(steps),
        "broker bytes changed"
    );
    let spans = &whole.spans;
    let summary: Vec<(&str, i32, Option<String>)> = spans
        .iter()
        .map(|s| (s.name.as_str(), s.kind, attr(s, "error.type")))
        .collect();
    let producer = SpanKind::Producer as i32;
    let consumer = SpanKind::Consumer as i32;
    let internal = SpanKind::Internal as i32;
    let e = |x: &str| Some(x.to_string());
    assert_eq!(
        summary,
        [
            ("publish orders", producer, None),
            ("publish orders", producer, None),
            ("publish orders", producer, None),
            ("process mes.submitted", consumer, None),
            ("process mes.submitted", consumer, e("nack")),
            ("process mes.submitted", consumer, e("reject")),
            ("publish orders", producer, e("NO_ROUTE")),
            ("connection.blocked", internal, e("blocked")),
            ("cancel mes.submitted", internal, e("consumer_cancelled")),
            ("publish orders", producer, e("unconfirmed")),
        ]
    );
    for s in spans {
        let error = attr(s, "error.type").is_some();
        let code = s.status.as_ref().map_or(0, |st| st.code);
        let want = if error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
        assert_eq!(code, want as i32, "{}: status", s.name);
        assert_eq!(attr(s, "messaging.system").as_deref(), Some("rabbitmq"));
    }
    // The injected traceparents name the producer spans that had none: A, the JSON one, nowhere, Z.
    let tp_of = |s: &Span| format!("00-{}-{}-01", hex(&s.trace_id), hex(&s.span_id));
    let injected: Vec<String> = [0, 1, 6, 9].iter().map(|i| tp_of(&spans[*i])).collect();
    assert_eq!(added, injected);
    // A message that carried one continues its trace.
    let incoming = parse_traceparent(TP.as_bytes()).unwrap();
    assert_eq!(spans[2].trace_id, incoming.trace_id.0.to_vec());
    assert_eq!(spans[2].parent_span_id, incoming.parent_id.0.to_vec());
    assert_eq!(attr(&spans[2], "order.id").as_deref(), Some("B"));
    assert_eq!(
        attr(&spans[0], "messaging.rabbitmq.confirm").as_deref(),
        Some("ack")
    );
    assert_eq!(attr(&spans[1], "order.id").as_deref(), Some("ORD-2"));
    assert_eq!(attr(&spans[1], "mes.polygon_count").as_deref(), Some("7"));
    assert_eq!(
        attr(&spans[1], "order.status").as_deref(),
        Some("PRICE_CALCULATED")
    );
    // Consumers link to the producer context in the message, when there is one.
    assert_eq!(spans[3].links.len(), 1);
    assert_eq!(spans[3].links[0].trace_id, incoming.trace_id.0.to_vec());
    assert_eq!(spans[3].links[0].span_id, incoming.parent_id.0.to_vec());
    assert!(spans[4].links.is_empty());
    assert_eq!(
        attr(&spans[3], "messaging.rabbitmq.outcome").as_deref(),
        Some("ack")
    );
    assert_eq!(
        attr(&spans[4], "messaging.rabbitmq.requeue").as_deref(),
        Some("true")
    );
    assert_eq!(
        attr(&spans[5], "messaging.rabbitmq.message.redelivered").as_deref(),
        Some("true")
    );
    assert!(spans[6]
        .events
        .iter()
        .any(|e| e.name == "messaging.rabbitmq.returned"));
    assert_eq!(
        attr(&spans[7], "messaging.rabbitmq.blocked.reason").as_deref(),
        Some("low on memory")
    );
    assert_eq!(
        attr(&spans[8], "messaging.rabbitmq.consumer_tag").as_deref(),
        Some("amq.ctag-1")
    );
    assert!(spans[9]
        .events
        .iter()
        .any(|e| e.name == "messaging.rabbitmq.connection.blocked"));
    assert_eq!(
        whole.counters,
        [
            ("ordertrace_amqp_connections", Some(1)),
            ("ordertrace_amqp_injected", Some(4)),
            ("ordertrace_amqp_inject_skipped", Some(0)),
            ("ordertrace_amqp_unconfirmed", Some(1)),
            ("ordertrace_amqp_requeues", Some(1)),
        ]
    );
}

#[test]
fn frames_split_at_every_byte_boundary_give_the_same_spans_and_bytes_in_the_built_filter() {
    let started = Instant::now();
    let steps = wire_session();
    let (whole, whole_pauses) = run_wasm(&steps, Cuts::Whole);
    check_whole_run(&steps, &whole);
    assert_eq!(whole_pauses, 0);

    let (bytewise, pauses) = run_wasm(&steps, Cuts::Bytewise);
    assert_eq!(bytewise, whole, "one-byte reads");
    assert!(
        pauses > 0,
        "one-byte reads cut content headers: the filter must hold them"
    );

    let mut runs = 2;
    for (i, step) in steps.iter().enumerate() {
        let len = match step {
            Step::Client(b) | Step::Broker(b) => b.len(),
            _ => continue,
        };
        for at in 1..len {
            let (got, _) = run_wasm(&steps, Cuts::SplitStep { step: i, at });
            assert!(
                got == whole,
                "step {i} cut at byte {at}: {:#?}",
                first_difference(&got, &whole)
            );
            runs += 1;
        }
    }
    eprintln!("{runs} runs of the built filter in {:?}", started.elapsed());
}

/// The part of two observations that differs, for a readable failure.
fn first_difference(got: &Observed, want: &Observed) -> String {
    if got.net != want.net {
        let at = got
            .net
            .to_broker
            .iter()
            .zip(&want.net.to_broker)
            .position(|(a, b)| a != b);
        return format!(
            "bytes differ (to broker: {} vs {} bytes, first difference at {at:?}; to client equal: {})",
            got.net.to_broker.len(),
            want.net.to_broker.len(),
            got.net.to_client == want.net.to_client
        );
    }
    if got.counters != want.counters {
        return format!("counters {:?} vs {:?}", got.counters, want.counters);
    }
    for (a, b) in got.spans.iter().zip(&want.spans) {
        if a != b {
            return format!("span {a:#?}\nexpected {b:#?}");
        }
    }
    format!("{} spans vs {}", got.spans.len(), want.spans.len())
}

#[test]
fn network_buffers_exist_only_during_their_callback_and_rewrites_replace_the_read() {
    // A publish whose content header arrives in two reads: the first read is held (Pause), the second
    // gets the held bytes plus the new ones and leaves with the injected header.
    let steps = wire_session();
    let mut host = Host::configured(filter_wasm(), options(), &plugin_config()).unwrap();
    let c = host.new_connection().unwrap();
    let Step::Broker(hello) = &steps[0] else {
        panic!("the session starts with the broker")
    };
    host.upstream_data(c, hello, false).unwrap();
    let Step::Client(open) = &steps[1] else {
        panic!("then the client opens")
    };
    assert_eq!(
        host.downstream_data(c, open, false).unwrap(),
        Action::Continue
    );
    let msg = submitted("A");
    let header_at = frames(&msg)[0].2.len() + 8 + 4;
    let (x, y) = msg.split_at(header_at);
    assert_eq!(host.downstream_data(c, x, false).unwrap(), Action::Pause);
    let net = host.connection(c).unwrap();
    assert_eq!(net.forwarded_upstream, *open);
    assert_eq!(net.downstream_sizes.last(), Some(&x.len()));
    assert_eq!(host.downstream_data(c, y, false).unwrap(), Action::Continue);
    let net = host.connection(c).unwrap();
    assert_eq!(net.downstream_sizes.last(), Some(&msg.len()));
    let sent = &net.forwarded_upstream[open.len()..];
    assert_eq!(only_traceparents_added(sent, &msg).len(), 1);
    assert!(host.violations().is_empty(), "{:?}", host.violations());
}

/// Wasm instructions (wasmtime fuel, exact and deterministic) per message through the built filter: a
/// 1 KiB message published and confirmed, then delivered and acknowledged, both spans exported, as
/// `make bench-amqp` sends them. Printed for docs/amqp.md; the bound catches a regression.
#[test]
fn fuel_per_message() {
    const N: u64 = 400;
    let opts = HostOptions {
        fuel: true,
        ..options()
    };
    let mut host = Host::configured(filter_wasm(), opts, &plugin_config()).unwrap();
    let c = host.new_connection().unwrap();
    host.upstream_data(c, &broker_hello(true), false).unwrap();
    let consume = m(
        1,
        ordertrace_amqp::frame::Method::BasicConsume {
            queue: "mes.submitted".into(),
            consumer_tag: "c1".into(),
            no_ack: false,
        },
    );
    host.downstream_data(c, &[client_hello(true), consume].concat(), false)
        .unwrap();
    let pad = "p".repeat(1000);
    // (publish, its confirm, the delivery, its ack)
    let messages: Vec<[Vec<u8>; 4]> = (1..=N)
        .map(|i| {
            let body = format!(r#"{{"orderId":"ORD-{i}","pad":"{pad}"}}"#);
            let ack = |tag| {
                m(
                    1,
                    ordertrace_amqp::frame::Method::BasicAck {
                        delivery_tag: tag,
                        multiple: false,
                    },
                )
            };
            [
                publish(
                    1,
                    "orders",
                    "order.submitted",
                    &ordertrace_amqp::frame::Properties::default(),
                    body.as_bytes(),
                ),
                ack(i),
                deliver(
                    1,
                    "c1",
                    i,
                    false,
                    "orders",
                    "order.submitted",
                    &headers(&[("traceparent", TP)]),
                    body.as_bytes(),
                ),
                ack(i),
            ]
        })
        .collect();
    host.reset_fuel();
    let mut exported = 0;
    for (i, [publish, confirm, delivery, ack]) in messages.iter().enumerate() {
        host.downstream_data(c, publish, false).unwrap();
        host.upstream_data(c, confirm, false).unwrap();
        host.upstream_data(c, delivery, false).unwrap();
        host.downstream_data(c, ack, false).unwrap();
        if (i + 1) % 100 == 0 {
            exported += export(&mut host).len();
        }
    }
    let per_message = host.fuel_consumed() / N;
    assert_eq!(exported as u64, 2 * N);
    assert_eq!(host.counter("ordertrace_amqp_injected"), Some(N as i64));
    eprintln!("wasm instructions per message (publish+confirm, deliver+ack, 2 spans exported): {per_message}");
    // 223 319 with the size-tuned release profile (136 821 at opt-level 3) when this was written.
    assert!(
        per_message < 300_000,
        "{per_message} instructions per message"
    );
}
