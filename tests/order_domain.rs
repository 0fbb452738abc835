//! One order rule, three paths: the HTTP filter, the AMQP filter and the Collector plugin report the same
//! status outcome and the same transition with the same attributes, because all three decide through the
//! core's order domain (`ordertrace::order`). Run natively on the crates' logic; the built modules are
//! held to the native logic by the contract tests.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod amqp_support;

use std::collections::BTreeMap;

use amqp_support::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, TracesData};
use ordertrace::config::Config;
use ordertrace::export::Next;
use ordertrace::otlp::{AttrValue, SpanRecord};
use ordertrace::testing::{MockStream, SeededRandom};
use ordertrace::worker::Worker;
use ordertrace_amqp::frame::Method;
use ordertrace_collector::{CollectorConfig, Processor};
use ordertrace_edge::filter::RequestState;
use prost::Message;

/// What the order domain decides, as a span shows it: the `order.*` attributes and the event names.
#[derive(Debug, PartialEq, Eq)]
struct OrderView {
    attributes: BTreeMap<String, String>,
    events: Vec<String>,
}

fn any_text(v: &AnyValue) -> String {
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn view_of_otlp(sp: &Span) -> OrderView {
    OrderView {
        attributes: sp
            .attributes
            .iter()
            .filter(|kv| kv.key.starts_with("order."))
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map(any_text).unwrap_or_default(),
                )
            })
            .collect(),
        events: sp.events.iter().map(|e| e.name.clone()).collect(),
    }
}

fn view_of_record(sp: &SpanRecord) -> OrderView {
    OrderView {
        attributes: sp
            .attributes
            .iter()
            .filter(|(k, _)| k.starts_with("order."))
            .map(|(k, v)| {
                let v = match v {
                    AttrValue::Str(s) => s.clone(),
                    AttrValue::Int(i) => i.to_string(),
                    AttrValue::Bool(b) => b.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        events: sp.events.iter().map(|e| e.name.clone()).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: the edge filter's logic with the mock host

const EDGE: &str = r#"{"service":"crm-api","collector":{"cluster":"otlp"},
 "redaction":{"enabled":false},"lifecycle":{"namespace":"orders-v1"},
 "routes":[
  {"name":"shop.submit","method":"POST","path":"/api/orders/{order_id}/submit","status":"SUBMITTED"},
  {"name":"crm.approve","method":"POST","path":"/api/orders/{order_id}/approve","status":"MANUFACTURING_APPROVED"}]}"#;

/// Each request `(path, status code, end time in ms)` through one worker (sharing the last-status
/// table); the SERVER spans exported, in request order.
fn http(requests: &[(&str, u16, u64)]) -> Vec<Span> {
    let mut w = Worker::new(
        Config::from_json(EDGE.as_bytes()).unwrap(),
        SeededRandom(7),
        "n",
    );
    let mut shared = Default::default();
    for (path, code, end_ms) in requests {
        let mut h = MockStream::new(&[(":method", "POST"), (":path", path), (":authority", "crm")]);
        h.shared = std::mem::take(&mut shared);
        h.clock_ns = (end_ms - 10) * 1_000_000;
        let mut s = RequestState::default();
        s.on_request_headers(&mut w, &mut h, true);
        h.response_headers = vec![(":status".into(), code.to_string().into_bytes())];
        s.on_response_headers(&mut w, &mut h, true);
        h.clock_ns = end_ms * 1_000_000;
        s.on_log(&mut w, &mut h);
        shared = h.shared;
    }
    let mut out = Vec::new();
    let mut token = 0;
    while let Next::Send(body) = w.queue.poll(u64::MAX / 2, &w.frame) {
        token += 1;
        w.queue.sent(token, &mut w.counters);
        assert!(w.queue.response(token, true, u64::MAX / 2, &mut w.counters));
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                out.extend(
                    ss.spans
                        .into_iter()
                        .filter(|s| s.kind == span::SpanKind::Server as i32),
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Collector: the plugin's processor over SDK spans

const COLLECTOR: &str = r#"{"redaction":{"enabled":false},"lifecycle":{"namespace":"orders-v1"},
 "routes":[
  {"name":"shop.submit","method":"POST","path":"/api/orders/{order_id}/submit","status":"SUBMITTED"},
  {"name":"crm.approve","method":"POST","path":"/api/orders/{order_id}/approve","status":"MANUFACTURING_APPROVED"}]}"#;

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// Each request `(path, status code, end time in ms)` as an SDK's SERVER span, through one processor
/// (sharing its last-status table); the processed spans, in request order.
fn collector(requests: &[(&str, u16, u64)]) -> Vec<Span> {
    let mut p = Processor::new(CollectorConfig::from_json(COLLECTOR.as_bytes()).unwrap());
    let mut out = Vec::new();
    for (path, code, end_ms) in requests {
        let sp = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "POST".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: (end_ms - 10) * 1_000_000,
            end_time_unix_nano: end_ms * 1_000_000,
            attributes: vec![
                kv(
                    "http.request.method",
                    any_value::Value::StringValue("POST".into()),
                ),
                kv("url.path", any_value::Value::StringValue(path.to_string())),
                kv(
                    "http.response.status_code",
                    any_value::Value::IntValue(i64::from(*code)),
                ),
            ],
            ..Default::default()
        };
        let input = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("crm-api".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![sp],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        let (result, _) = p.process(&input);
        let bytes = result.unwrap().into_bytes(input);
        let data = TracesData::decode(bytes.as_slice()).unwrap();
        out.extend(
            data.resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// AMQP: the network filter's logic through the Envoy buffer model

/// One confirmed publish of `order.submitted` for `order`, acked or nacked by the broker.
fn amqp_publish(order: &str, ack: bool) -> SpanRecord {
    let cfg = config(CFG);
    let settle = if ack {
        Method::BasicAck {
            delivery_tag: 1,
            multiple: false,
        }
    } else {
        Method::BasicNack {
            delivery_tag: 1,
            multiple: false,
            requeue: false,
        }
    };
    let steps = vec![
        Step::Broker(broker_hello(true)),
        Step::Client([client_hello(true), submitted(order)].concat()),
        Step::AdvanceMs(5),
        Step::Broker(m(1, settle)),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    one(&sim.spans, "publish orders").clone()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_succeeded_status_reads_the_same_on_http_amqp_and_the_collector() {
    let http = view_of_otlp(&http(&[("/api/orders/ORD-1/submit", 200, 1_000)])[0]);
    let amqp = view_of_record(&amqp_publish("ORD-1", true));
    let collector = view_of_otlp(&collector(&[("/api/orders/ORD-1/submit", 200, 1_000)])[0]);
    let want = OrderView {
        attributes: BTreeMap::from([
            ("order.id".to_string(), "ORD-1".to_string()),
            ("order.status".to_string(), "SUBMITTED".to_string()),
        ]),
        events: vec!["order.status_changed".to_string()],
    };
    assert_eq!(http, want, "HTTP");
    assert_eq!(amqp, want, "AMQP");
    assert_eq!(collector, want, "collector");
}

#[test]
fn a_failed_status_is_only_attempted_on_all_three() {
    let http = view_of_otlp(&http(&[("/api/orders/ORD-1/submit", 409, 1_000)])[0]);
    let amqp = view_of_record(&amqp_publish("ORD-1", false));
    let collector = view_of_otlp(&collector(&[("/api/orders/ORD-1/submit", 409, 1_000)])[0]);
    let want = OrderView {
        attributes: BTreeMap::from([
            ("order.id".to_string(), "ORD-1".to_string()),
            (
                "order.status.attempted".to_string(),
                "SUBMITTED".to_string(),
            ),
        ]),
        events: vec![],
    };
    assert_eq!(http, want, "HTTP");
    assert_eq!(amqp, want, "AMQP");
    assert_eq!(collector, want, "collector");
}

#[test]
fn a_transition_is_judged_the_same_at_the_edge_and_in_the_collector() {
    // SUBMITTED, then MANUFACTURING_APPROVED 5 s later: the price calculation was skipped, which the
    // reference lifecycle does not allow.
    let requests = [
        ("/api/orders/ORD-5/submit", 200, 4_000),
        ("/api/orders/ORD-5/approve", 200, 9_000),
    ];
    let http = view_of_otlp(&http(&requests)[1]);
    let collector = view_of_otlp(&collector(&requests)[1]);
    let want = BTreeMap::from([
        ("order.id".to_string(), "ORD-5".to_string()),
        (
            "order.status".to_string(),
            "MANUFACTURING_APPROVED".to_string(),
        ),
        ("order.status.previous".to_string(), "SUBMITTED".to_string()),
        ("order.stage.duration_ms".to_string(), "5000".to_string()),
        (
            "order.transition.unexpected".to_string(),
            "true".to_string(),
        ),
    ]);
    assert_eq!(http.attributes, want, "HTTP");
    assert_eq!(collector.attributes, want, "collector");
}
