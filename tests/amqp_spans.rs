//! The AMQP network filter's core, natively: scripted client/broker sessions through the Envoy buffer model,
//! asserting on spans, counters and the bytes the broker receives.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod amqp_support;

use amqp_support::*;
use ordertrace::otlp::{Kind, StatusCode};
use ordertrace::tracecontext::parse_traceparent;
use ordertrace_amqp::frame::{parse_content_header, Method, Properties, FRAME_HEADER};
use ordertrace_amqp::table::FieldValue;
use ordertrace_amqp::Flow;

#[test]
fn publish_without_confirms_is_a_producer_span_and_gets_a_traceparent() {
    let cfg = config(CFG);
    let client = [client_hello(false), submitted("ORD-1001")].concat();
    let sim = run(
        &cfg,
        &[
            Step::Broker(broker_hello(false)),
            Step::Client(client.clone()),
        ],
        Cuts::Whole,
    );
    let span = one(&sim.spans, "publish orders");
    assert_eq!(span.kind, Kind::Producer);
    assert_eq!(span.status, StatusCode::Unset);
    assert_eq!(span.parent_span_id, None);
    for (k, v) in [
        ("messaging.system", "rabbitmq"),
        ("messaging.operation.type", "send"),
        ("messaging.destination.name", "orders"),
        (
            "messaging.rabbitmq.destination.routing_key",
            "order.submitted",
        ),
        ("messaging.message.body.size", "22"),
        ("order.id", "ORD-1001"),
        ("order.status", "SUBMITTED"),
    ] {
        assert_eq!(s(span, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "order.status_changed");
    assert_eq!(sim.amqp.injected, 1);
    assert_eq!(sim.counters.traceparent_created, 1);

    // The broker gets the same frames, except the content header, which has one more header entry.
    let sent = frames(&sim.upstream);
    let orig = frames(&client);
    assert_eq!(sent.len(), orig.len());
    for (a, b) in sent.iter().zip(&orig) {
        if a.0 == FRAME_HEADER {
            let h = parse_content_header(&a.2).unwrap();
            let o = parse_content_header(&b.2).unwrap();
            let mut expected = o.properties.headers.clone().unwrap();
            let tp = h
                .properties
                .headers
                .as_ref()
                .unwrap()
                .get("traceparent")
                .unwrap();
            let tp = parse_traceparent(tp.as_bytes().unwrap()).unwrap();
            assert_eq!(tp.trace_id, span.trace_id);
            assert_eq!(tp.parent_id, span.span_id);
            expected.0.push((
                "traceparent".into(),
                FieldValue::LongStr(tp.format().into_bytes()),
            ));
            assert_eq!(h.properties.headers.as_ref().unwrap(), &expected);
            assert_eq!(a.2.len(), b.2.len() + 72);
        } else {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn a_message_with_a_traceparent_is_left_byte_identical() {
    let cfg = config(CFG);
    let client = [
        client_hello(false),
        publish(
            1,
            "orders",
            "order.submitted",
            &headers(&[("traceparent", TP), ("x-order-id", "ORD-7")]),
            b"x",
        ),
    ]
    .concat();
    let sim = run(&cfg, &[Step::Client(client.clone())], Cuts::Whole);
    assert_eq!(sim.upstream, client);
    let span = one(&sim.spans, "publish orders");
    let tp = parse_traceparent(TP.as_bytes()).unwrap();
    assert_eq!(span.trace_id, tp.trace_id);
    assert_eq!(span.parent_span_id, Some(tp.parent_id));
    assert_eq!(sim.amqp.injected, 0);
    assert_eq!(sim.amqp.inject_skipped, 0);
}

#[test]
fn inject_off_changes_nothing() {
    let cfg = config(r#"{"inject":false}"#);
    let client = [client_hello(false), submitted("ORD-1")].concat();
    let sim = run(&cfg, &[Step::Client(client.clone())], Cuts::Bytewise);
    assert_eq!(sim.upstream, client);
    assert_eq!(sim.pauses, 0);
    assert_eq!(sim.spans.len(), 1);
}

#[test]
fn publisher_confirms_end_the_span() {
    let cfg = config(CFG);
    let steps = vec![
        Step::Broker(broker_hello(true)),
        Step::Client(
            [
                client_hello(true),
                submitted("A"),
                submitted("B"),
                submitted("C"),
            ]
            .concat(),
        ),
        Step::AdvanceMs(5),
        Step::Broker(m(
            1,
            Method::BasicAck {
                delivery_tag: 2,
                multiple: true,
            },
        )),
        Step::AdvanceMs(5),
        Step::Broker(m(
            1,
            Method::BasicNack {
                delivery_tag: 3,
                multiple: false,
                requeue: false,
            },
        )),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let spans = named(&sim.spans, "publish orders");
    assert_eq!(spans.len(), 3);
    let by_order = |id: &str| {
        *spans
            .iter()
            .find(|s| s.attr("order.id").is_some() && self::s(s, "order.id").as_deref() == Some(id))
            .unwrap()
    };
    let a = by_order("A");
    assert_eq!(a.status, StatusCode::Unset);
    assert_eq!(a.end_ns - a.start_ns, 5_000_000);
    assert_eq!(s(a, "messaging.rabbitmq.confirm").as_deref(), Some("ack"));
    assert_eq!(s(a, "order.status").as_deref(), Some("SUBMITTED"));
    let c = by_order("C");
    assert_eq!(c.status, StatusCode::Error);
    assert_eq!(s(c, "error.type").as_deref(), Some("nack"));
    assert_eq!(s(c, "order.status"), None);
    assert_eq!(s(c, "order.status.attempted").as_deref(), Some("SUBMITTED"));
    assert_eq!(c.end_ns - c.start_ns, 10_000_000);
}

#[test]
fn a_connection_closed_before_the_confirm_reports_unconfirmed() {
    let cfg = config(CFG);
    let steps = vec![
        Step::Broker(broker_hello(true)),
        Step::Client([client_hello(true), submitted("A"), submitted("B")].concat()),
        Step::Broker(m(
            1,
            Method::BasicAck {
                delivery_tag: 1,
                multiple: false,
            },
        )),
        Step::Broker(close_frame(
            0,
            320,
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
            0,
            0,
        )),
        Step::Close,
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let b = named(&sim.spans, "publish orders")
        .into_iter()
        .find(|s| s.status == StatusCode::Error)
        .unwrap();
    assert_eq!(s(b, "error.type").as_deref(), Some("unconfirmed"));
    assert!(b.status_message.contains("320"), "{}", b.status_message);
    let close = one(&sim.spans, "connection.close");
    assert_eq!(s(close, "error.type").as_deref(), Some("CONNECTION_FORCED"));
    assert_eq!(sim.amqp.unconfirmed, 1);
    // Closing again (TCP close after connection.close) ends nothing twice.
    assert_eq!(sim.spans.len(), 3);
}

#[test]
fn tcp_close_without_amqp_close_also_reports_unconfirmed() {
    let cfg = config(CFG);
    let steps = vec![
        Step::Broker(broker_hello(true)),
        Step::Client([client_hello(true), submitted("A")].concat()),
        Step::Close,
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let a = one(&sim.spans, "publish orders");
    assert_eq!(s(a, "error.type").as_deref(), Some("unconfirmed"));
}

fn consumer_steps(outcome: Vec<u8>) -> Vec<Step> {
    vec![
        Step::Broker(broker_hello(false)),
        Step::Client(
            [
                client_hello(false),
                m(
                    1,
                    Method::BasicConsume {
                        queue: "mes.submitted".into(),
                        consumer_tag: "".into(),
                        no_ack: false,
                    },
                ),
            ]
            .concat(),
        ),
        Step::Broker(m(
            1,
            Method::BasicConsumeOk {
                consumer_tag: "amq.ctag-1".into(),
            },
        )),
        Step::Broker(deliver(
            1,
            "amq.ctag-1",
            1,
            false,
            "orders",
            "order.submitted",
            &headers(&[("traceparent", TP), ("x-order-id", "ORD-5")]),
            b"{}",
        )),
        Step::AdvanceMs(7),
        Step::Client(outcome),
    ]
}

#[test]
fn deliveries_are_consumer_spans_linked_to_the_producer() {
    let cfg = config(CFG);
    let sim = run(
        &cfg,
        &consumer_steps(m(
            1,
            Method::BasicAck {
                delivery_tag: 1,
                multiple: false,
            },
        )),
        Cuts::Whole,
    );
    let span = one(&sim.spans, "process mes.submitted");
    assert_eq!(span.kind, Kind::Consumer);
    assert_eq!(span.status, StatusCode::Unset);
    assert_eq!(span.end_ns - span.start_ns, 7_000_000);
    let tp = parse_traceparent(TP.as_bytes()).unwrap();
    assert_eq!(span.links.len(), 1);
    assert_eq!(span.links[0].trace_id, tp.trace_id);
    assert_eq!(span.links[0].span_id, tp.parent_id);
    assert_ne!(span.trace_id, tp.trace_id, "a new trace, linked");
    for (k, v) in [
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "mes.submitted"),
        ("messaging.destination_publish.name", "orders"),
        (
            "messaging.rabbitmq.destination.routing_key",
            "order.submitted",
        ),
        ("messaging.rabbitmq.message.delivery_tag", "1"),
        ("messaging.rabbitmq.message.redelivered", "false"),
        ("messaging.rabbitmq.outcome", "ack"),
        ("order.id", "ORD-5"),
        ("order.status", "SUBMITTED"),
    ] {
        assert_eq!(s(span, k).as_deref(), Some(v), "{k}");
    }
}

#[test]
fn nack_reject_and_requeue_are_errors_and_retries() {
    let cfg = config(CFG);
    // (outcome frame, outcome, requeue, retries counted)
    let cases: Vec<(Vec<u8>, &str, &str, u64)> = vec![
        (
            m(
                1,
                Method::BasicNack {
                    delivery_tag: 1,
                    multiple: false,
                    requeue: true,
                },
            ),
            "nack",
            "true",
            1,
        ),
        (
            m(
                1,
                Method::BasicNack {
                    delivery_tag: 0,
                    multiple: true,
                    requeue: false,
                },
            ),
            "nack",
            "false",
            0,
        ),
        (
            m(
                1,
                Method::BasicReject {
                    delivery_tag: 1,
                    requeue: true,
                },
            ),
            "reject",
            "true",
            1,
        ),
        (
            m(1, Method::BasicRecover { requeue: true }),
            "recover",
            "true",
            1,
        ),
    ];
    for (frame, outcome, requeue, retries) in cases {
        let sim = run(&cfg, &consumer_steps(frame), Cuts::Whole);
        let span = one(&sim.spans, "process mes.submitted");
        assert_eq!(span.status, StatusCode::Error, "{outcome}");
        assert_eq!(s(span, "error.type").as_deref(), Some(outcome));
        assert_eq!(
            s(span, "messaging.rabbitmq.requeue").as_deref(),
            Some(requeue)
        );
        assert_eq!(
            s(span, "order.status.attempted").as_deref(),
            Some("SUBMITTED")
        );
        assert_eq!(sim.amqp.requeues, retries, "{outcome}");
    }
}

#[test]
fn auto_ack_and_basic_get() {
    let cfg = config(CFG);
    let steps = vec![
        Step::Broker(broker_hello(false)),
        Step::Client(
            [
                client_hello(false),
                m(
                    1,
                    Method::BasicConsume {
                        queue: "q1".into(),
                        consumer_tag: "mine".into(),
                        no_ack: true,
                    },
                ),
            ]
            .concat(),
        ),
        Step::Broker(m(
            1,
            Method::BasicConsumeOk {
                consumer_tag: "mine".into(),
            },
        )),
        Step::Broker(deliver(
            1,
            "mine",
            1,
            true,
            "",
            "q1",
            &Properties::default(),
            b"hello",
        )),
        Step::Client(m(
            1,
            Method::BasicGet {
                queue: "q2".into(),
                no_ack: false,
            },
        )),
        Step::Broker(content(
            1,
            Method::BasicGetOk {
                delivery_tag: 2,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q2".into(),
                message_count: 0,
            },
            &Properties::default(),
            b"",
            FRAME_MAX,
        )),
        Step::Client(m(
            1,
            Method::BasicAck {
                delivery_tag: 2,
                multiple: false,
            },
        )),
        Step::Client(m(
            1,
            Method::BasicGet {
                queue: "q3".into(),
                no_ack: false,
            },
        )),
        Step::Broker(m(1, Method::BasicGetEmpty)),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let auto = one(&sim.spans, "process q1");
    assert_eq!(
        s(auto, "messaging.rabbitmq.outcome").as_deref(),
        Some("auto_ack")
    );
    assert_eq!(
        s(auto, "messaging.rabbitmq.message.redelivered").as_deref(),
        Some("true")
    );
    assert_eq!(
        s(auto, "messaging.destination_publish.name").as_deref(),
        Some("amq.default")
    );
    assert!(auto.links.is_empty());
    let got = one(&sim.spans, "process q2");
    assert_eq!(s(got, "messaging.operation.name").as_deref(), Some("get"));
    assert_eq!(s(got, "messaging.rabbitmq.outcome").as_deref(), Some("ack"));
    assert_eq!(sim.spans.len(), 2);
}

#[test]
fn unroutable_mandatory_message() {
    let cfg = config(CFG);
    let returned = |ch| {
        content(
            ch,
            Method::BasicReturn {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "orders".into(),
                routing_key: "nowhere".into(),
            },
            &headers(&[("traceparent", TP)]),
            b"x",
            FRAME_MAX,
        )
    };
    // With confirms: the return marks the waiting publish, which ends at the ack.
    let steps = vec![
        Step::Broker(broker_hello(true)),
        Step::Client(
            [
                client_hello(true),
                publish_mandatory(1, "orders", "nowhere", &Properties::default(), b"x"),
            ]
            .concat(),
        ),
        Step::Broker(
            [
                returned(1),
                m(
                    1,
                    Method::BasicAck {
                        delivery_tag: 1,
                        multiple: false,
                    },
                ),
            ]
            .concat(),
        ),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let p = one(&sim.spans, "publish orders");
    assert_eq!(p.status, StatusCode::Error);
    assert_eq!(s(p, "error.type").as_deref(), Some("NO_ROUTE"));
    assert_eq!(p.events[0].name, "messaging.rabbitmq.returned");
    assert_eq!(sim.spans.len(), 1);

    // Without confirms: a `return` error span in the trace the returned message carries.
    let steps = vec![
        Step::Broker(broker_hello(false)),
        Step::Client(
            [
                client_hello(false),
                publish_mandatory(1, "orders", "nowhere", &Properties::default(), b"x"),
            ]
            .concat(),
        ),
        Step::Broker(returned(1)),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let r = one(&sim.spans, "return orders");
    assert_eq!(r.status, StatusCode::Error);
    assert_eq!(s(r, "error.type").as_deref(), Some("NO_ROUTE"));
    assert_eq!(
        s(r, "messaging.rabbitmq.reply_code").as_deref(),
        Some("312")
    );
    let tp = parse_traceparent(TP.as_bytes()).unwrap();
    assert_eq!(r.trace_id, tp.trace_id);
    assert_eq!(r.parent_span_id, Some(tp.parent_id));
}

#[test]
fn publish_to_a_missing_exchange() {
    let cfg = config(CFG);
    let steps = vec![
        Step::Broker(broker_hello(false)),
        Step::Client(
            [
                client_hello(false),
                publish(1, "nope", "k", &Properties::default(), b"x"),
            ]
            .concat(),
        ),
        Step::Broker(close_frame(
            1,
            404,
            "NOT_FOUND - no exchange 'nope' in vhost '/'",
            60,
            40,
        )),
        Step::Client(m(1, Method::ChannelCloseOk)),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let p = one(&sim.spans, "publish nope");
    let c = one(&sim.spans, "channel.close");
    assert_eq!(c.status, StatusCode::Error);
    assert_eq!(s(c, "error.type").as_deref(), Some("NOT_FOUND"));
    assert_eq!(
        s(c, "messaging.rabbitmq.failed_method").as_deref(),
        Some("basic.publish")
    );
    assert_eq!(c.trace_id, p.trace_id);
    assert_eq!(c.parent_span_id, Some(p.span_id));

    // With confirms, the waiting publish itself fails with the reply code.
    let steps = vec![
        Step::Broker(broker_hello(true)),
        Step::Client(
            [
                client_hello(true),
                publish(1, "nope", "k", &Properties::default(), b"x"),
            ]
            .concat(),
        ),
        Step::Broker(close_frame(
            1,
            404,
            "NOT_FOUND - no exchange 'nope' in vhost '/'",
            60,
            40,
        )),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let p = one(&sim.spans, "publish nope");
    assert_eq!(s(p, "error.type").as_deref(), Some("NOT_FOUND"));
    assert_eq!(sim.amqp.unconfirmed, 1);
}

#[test]
fn connection_blocked_is_an_error_span_and_an_event_on_waiting_publishes() {
    let cfg = config(CFG);
    let steps = vec![
        Step::Broker(broker_hello(true)),
        Step::Client([client_hello(true), submitted("A")].concat()),
        Step::Broker(m(
            0,
            Method::ConnectionBlocked {
                reason: "low on disk".into(),
            },
        )),
        Step::Client(submitted("B")),
        Step::AdvanceMs(100),
        Step::Broker(m(0, Method::ConnectionUnblocked)),
        Step::Broker(m(
            1,
            Method::BasicAck {
                delivery_tag: 2,
                multiple: true,
            },
        )),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    let b = one(&sim.spans, "connection.blocked");
    assert_eq!(b.status, StatusCode::Error);
    assert_eq!(
        s(b, "messaging.rabbitmq.blocked.reason").as_deref(),
        Some("low on disk")
    );
    assert_eq!(b.end_ns - b.start_ns, 100_000_000);
    for p in named(&sim.spans, "publish orders") {
        assert!(
            p.events
                .iter()
                .any(|e| e.name == "messaging.rabbitmq.connection.blocked"),
            "{p:?}"
        );
    }
}

#[test]
fn rules_read_the_json_body_and_latency_is_measured() {
    let cfg = config(CFG);
    let body =
        br#"{"orderId":"ORD-1001","price":120.5,"polygonCount":48210,"complexityClass":"B"}"#;
    let props = Properties {
        content_type: Some("application/json".into()),
        timestamp: Some(1_700_000_000 - 2),
        ..Properties::default()
    };
    let mut sim = run(
        &cfg,
        &[
            Step::Broker(broker_hello(false)),
            Step::Client(
                [
                    client_hello(false),
                    publish(1, "orders", "order.price_calculated", &props, body),
                ]
                .concat(),
            ),
        ],
        Cuts::Whole,
    );
    let p = one(&sim.spans, "publish orders").clone();
    assert_eq!(s(&p, "order.id").as_deref(), Some("ORD-1001"));
    assert_eq!(s(&p, "mes.polygon_count").as_deref(), Some("48210"));
    assert_eq!(s(&p, "order.status").as_deref(), Some("PRICE_CALCULATED"));
    // The consumer, on another connection of the same worker, gets the injected header back.
    let sent = frames(&sim.upstream);
    let header = sent.iter().find(|f| f.0 == FRAME_HEADER).unwrap();
    let injected_props = parse_content_header(&header.2).unwrap().properties;
    sim.reconnect();
    sim.advance_ms(40);
    sim.broker(&broker_hello(false));
    sim.client(
        &[
            client_hello(false),
            m(
                1,
                Method::BasicConsume {
                    queue: "crm.prices".into(),
                    consumer_tag: "c".into(),
                    no_ack: true,
                },
            ),
        ]
        .concat(),
        false,
    );
    sim.broker(&deliver(
        1,
        "c",
        1,
        false,
        "orders",
        "order.price_calculated",
        &injected_props,
        body,
    ));
    let c = sim
        .spans
        .iter()
        .find(|s| s.name == "process crm.prices")
        .unwrap();
    assert_eq!(c.links[0].span_id, p.span_id);
    assert_eq!(c.links[0].trace_id, p.trace_id);
    assert_eq!(
        s(c, "messaging.rabbitmq.delivery_latency_ms").as_deref(),
        Some("40")
    );
    assert_eq!(
        s(c, "messaging.rabbitmq.delivery_latency_source").as_deref(),
        Some("producer_span")
    );
    assert_eq!(s(c, "order.id").as_deref(), Some("ORD-1001"));

    // A message the worker did not see published falls back to its timestamp property (2 s old).
    let mut sim = run(&cfg, &[Step::Broker(broker_hello(false))], Cuts::Whole);
    sim.client(
        &[
            client_hello(false),
            m(
                1,
                Method::BasicConsume {
                    queue: "crm.prices".into(),
                    consumer_tag: "c".into(),
                    no_ack: true,
                },
            ),
        ]
        .concat(),
        false,
    );
    sim.broker(&deliver(
        1,
        "c",
        1,
        false,
        "orders",
        "order.price_calculated",
        &props,
        body,
    ));
    let c = one(&sim.spans, "process crm.prices");
    assert_eq!(
        s(c, "messaging.rabbitmq.delivery_latency_ms").as_deref(),
        Some("2000")
    );
    assert_eq!(
        s(c, "messaging.rabbitmq.delivery_latency_source").as_deref(),
        Some("timestamp")
    );
}

#[test]
fn what_is_not_amqp_passes_through_untouched() {
    let cfg = config(CFG);
    let tls = [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5].to_vec();
    let amqp10 = b"AMQP\x00\x01\x00\x00\x00\x00\x00\x21\x02\x00\x00\x00".to_vec();
    let garbage = (0..=255u8).collect::<Vec<u8>>();
    for (what, bytes) in [("tls", tls), ("amqp 1.0", amqp10), ("garbage", garbage)] {
        for cuts in [Cuts::Whole, Cuts::Bytewise] {
            let sim = run(
                &cfg,
                &[
                    Step::Client(bytes.clone()),
                    Step::Broker(b"AMQP\x00\x00\x09\x01".to_vec()),
                    Step::Client(bytes.clone()),
                ],
                cuts,
            );
            assert_eq!(
                sim.upstream,
                [bytes.clone(), bytes.clone()].concat(),
                "{what}"
            );
            assert_eq!(sim.amqp.passthrough, 1, "{what}");
            assert!(sim.spans.is_empty(), "{what}");
            assert!(!sim.conn.wants_data());
        }
    }
    // A frame over the limit mid-stream: pending spans end (outcome unknown), the rest passes through.
    let client = [client_hello(true), submitted("A")].concat();
    let mut huge = vec![3, 0, 1];
    huge.extend_from_slice(&(2_000_000u32).to_be_bytes());
    let sim = run(
        &cfg,
        &[
            Step::Broker(broker_hello(true)),
            Step::Client(client.clone()),
            Step::Client(huge.clone()),
        ],
        Cuts::Whole,
    );
    assert!(sim.upstream.ends_with(&huge));
    assert_eq!(sim.upstream.len(), client.len() + 72 + huge.len());
    assert_eq!(sim.amqp.passthrough, 1);
    let a = one(&sim.spans, "publish orders");
    assert_eq!(
        s(a, "messaging.rabbitmq.outcome").as_deref(),
        Some("unknown")
    );
}

#[test]
fn frames_split_at_every_byte_boundary_give_the_same_spans_and_bytes() {
    let cfg = config(CFG);
    let steps = full_session();
    let whole = run(&cfg, &steps, Cuts::Whole);
    let names: Vec<&str> = whole.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "publish orders",
            "publish orders",
            "process mes.submitted",
            "publish orders",
            "publish orders",
            "connection.blocked"
        ]
    );
    assert_eq!(whole.amqp.injected, 4);
    assert_eq!(whole.amqp.unconfirmed, 2);
    assert_eq!(whole.amqp.requeues, 1);
    let bytewise = run(&cfg, &steps, Cuts::Bytewise);
    assert_eq!(bytewise.spans, whole.spans);
    assert_eq!(bytewise.upstream, whole.upstream);
    assert!(bytewise.pauses > 0);
    for (i, step) in steps.iter().enumerate() {
        let len = match step {
            Step::Client(b) | Step::Broker(b) => b.len(),
            _ => continue,
        };
        for at in 0..=len {
            let sim = run(&cfg, &steps, Cuts::SplitStep { step: i, at });
            assert_eq!(sim.spans, whole.spans, "step {i} cut at {at}");
            assert_eq!(sim.upstream, whole.upstream, "step {i} cut at {at}");
            assert_eq!(sim.amqp, whole.amqp, "step {i} cut at {at}");
        }
    }
}

#[test]
fn holding_is_bounded_and_frame_max_is_respected() {
    let cfg = config(CFG);
    // A header frame split after more than MAX_HOLD_BYTES of other frames: not held, not rewritten.
    let big = vec![b'x'; 300 * 1024];
    let first = [
        client_hello(false),
        publish(1, "orders", "k", &Properties::default(), &big),
    ]
    .concat();
    let second = publish(1, "orders", "k", &Properties::default(), b"y");
    let cut = 9; // 9 bytes into the second message's header frame
    let method_frame_len =
        8 + u32::from_be_bytes([second[3], second[4], second[5], second[6]]) as usize;
    let (a, b) = second.split_at(method_frame_len + cut);
    let mut sim = ordertrace_amqp::sim::Sim::new(cfg.clone());
    assert_eq!(
        sim.client(&[first.clone(), a.to_vec()].concat(), false),
        Flow::Continue
    );
    assert_eq!(sim.client(b, false), Flow::Continue);
    assert_eq!(sim.amqp.injected, 1);
    assert_eq!(sim.amqp.inject_skipped, 1);
    assert_eq!(sim.spans.len(), 2);

    // A content header that would outgrow the negotiated frame-max is left alone.
    let mut small = client_hello(false);
    let tune_ok = m(
        0,
        Method::ConnectionTuneOk {
            channel_max: 1,
            frame_max: 4096,
            heartbeat: 0,
        },
    );
    small.extend(tune_ok);
    let pad = "p".repeat(4096 - 8 - 14 - 60);
    let props = headers(&[("pad", &pad)]);
    let msg = publish(1, "orders", "k", &props, b"");
    assert!(msg.len() < 4096 * 2);
    let sim = run(
        &cfg,
        &[Step::Client([small.clone(), msg.clone()].concat())],
        Cuts::Whole,
    );
    assert_eq!(sim.upstream, [small, msg].concat());
    assert_eq!(sim.amqp.inject_skipped, 1);
}

#[test]
fn unreadable_properties_are_counted_and_never_rewritten() {
    let cfg = config(CFG);
    let mut msg = publish(1, "orders", "k", &Properties::default(), b"abc");
    // Claim a headers table in the content header without providing it.
    let method_frame_len = 8 + u32::from_be_bytes([msg[3], msg[4], msg[5], msg[6]]) as usize;
    msg[method_frame_len + 7 + 12] = 0x20;
    let client = [client_hello(false), msg].concat();
    let sim = run(&cfg, &[Step::Client(client.clone())], Cuts::Whole);
    assert_eq!(sim.upstream, client);
    assert_eq!(sim.amqp.decode_errors, 1);
    assert_eq!(sim.amqp.inject_skipped, 1);
    assert_eq!(sim.spans.len(), 1);
}

#[test]
fn the_wire_session_gives_the_same_spans_and_bytes_at_every_split() {
    let cfg = config(CFG);
    let steps = wire_session();
    let whole = run(&cfg, &steps, Cuts::Whole);
    let got: Vec<(&str, Option<String>)> = whole
        .spans
        .iter()
        .map(|sp| (sp.name.as_str(), s(sp, "error.type")))
        .collect();
    let e = |x: &str| Some(x.to_string());
    assert_eq!(
        got,
        [
            ("publish orders", None),
            ("publish orders", None),
            ("publish orders", None),
            ("process mes.submitted", None),
            ("process mes.submitted", e("nack")),
            ("process mes.submitted", e("reject")),
            ("publish orders", e("NO_ROUTE")),
            ("connection.blocked", e("blocked")),
            ("cancel mes.submitted", e("consumer_cancelled")),
            ("publish orders", e("unconfirmed")),
        ]
    );
    assert_eq!(whole.amqp.injected, 4);
    let bytewise = run(&cfg, &steps, Cuts::Bytewise);
    assert_eq!(bytewise.spans, whole.spans);
    assert_eq!(bytewise.upstream, whole.upstream);
    for (i, step) in steps.iter().enumerate() {
        let len = match step {
            Step::Client(b) | Step::Broker(b) => b.len(),
            _ => continue,
        };
        for at in 0..=len {
            let sim = run(&cfg, &steps, Cuts::SplitStep { step: i, at });
            assert_eq!(sim.spans, whole.spans, "step {i} cut at {at}");
            assert_eq!(sim.upstream, whole.upstream, "step {i} cut at {at}");
        }
    }
}

fn tx_steps() -> Vec<Step> {
    let tx = |method: Method| m(1, method);
    vec![
        Step::Broker([broker_hello(false), tx(Method::TxSelectOk)].concat()),
        Step::Client(
            [
                client_hello(false),
                tx(Method::TxSelect),
                submitted("A"),
                submitted("B"),
                publish_mandatory(1, "orders", "nowhere", &headers(&[]), b"x"),
                tx(Method::TxCommit),
            ]
            .concat(),
        ),
        Step::AdvanceMs(4),
        Step::Broker(
            [
                m(
                    1,
                    Method::BasicReturn {
                        reply_code: 312,
                        reply_text: "NO_ROUTE".into(),
                        exchange: "orders".into(),
                        routing_key: "nowhere".into(),
                    },
                ),
                ordertrace_amqp::frame::encode_frame(
                    FRAME_HEADER,
                    1,
                    &ordertrace_amqp::frame::encode_content_header(1, &Properties::default()),
                ),
                ordertrace_amqp::frame::encode_frame(ordertrace_amqp::frame::FRAME_BODY, 1, b"x"),
                tx(Method::TxCommitOk),
            ]
            .concat(),
        ),
        Step::Client([submitted("C"), tx(Method::TxRollback)].concat()),
        Step::AdvanceMs(2),
        Step::Broker(tx(Method::TxRollbackOk)),
        Step::Client(submitted("D")),
        Step::Close,
    ]
}

#[test]
fn a_transaction_ends_its_publishes_on_commit_ok_or_rollback_ok() {
    let cfg = config(CFG);
    let steps = tx_steps();
    // Nothing ends before the broker answers the commit.
    let before = run(&cfg, &steps[..3], Cuts::Whole);
    assert!(before.spans.is_empty(), "{:?}", before.spans);

    let sim = run(&cfg, &steps, Cuts::Whole);
    let spans = named(&sim.spans, "publish orders");
    let summary: Vec<(Option<String>, Option<String>, Option<String>)> = spans
        .iter()
        .map(|sp| {
            (
                s(sp, "order.id").or_else(|| s(sp, "messaging.rabbitmq.destination.routing_key")),
                s(sp, "messaging.rabbitmq.tx"),
                s(sp, "error.type"),
            )
        })
        .collect();
    let o = |x: &str| Some(x.to_string());
    assert_eq!(
        summary,
        [
            (o("A"), o("commit"), None),
            (o("B"), o("commit"), None),
            (o("nowhere"), o("commit"), o("NO_ROUTE")),
            (o("C"), o("rollback"), o("rolled_back")),
            (o("D"), o("not_committed"), o("unconfirmed")),
        ]
    );
    // Committed: 4 ms after the publish, the status is set; rolled back: only attempted.
    assert_eq!(spans[0].end_ns - spans[0].start_ns, 4_000_000);
    assert_eq!(s(spans[0], "order.status").as_deref(), Some("SUBMITTED"));
    assert_eq!(spans[3].status, StatusCode::Error);
    assert_eq!(s(spans[3], "order.status"), None);
    assert_eq!(
        s(spans[3], "order.status.attempted").as_deref(),
        Some("SUBMITTED")
    );
    assert_eq!(s(spans[0], "messaging.rabbitmq.confirm"), None);
    assert_eq!(sim.amqp.unconfirmed, 1);
    // The same at every cut.
    for (i, step) in steps.iter().enumerate() {
        let len = match step {
            Step::Client(b) | Step::Broker(b) => b.len(),
            _ => continue,
        };
        for at in 0..=len {
            let cut = run(&cfg, &steps, Cuts::SplitStep { step: i, at });
            assert_eq!(cut.spans, sim.spans, "step {i} cut at {at}");
        }
    }
}

#[test]
fn pipelined_commits_end_in_order() {
    let cfg = config(CFG);
    let tx = |method: Method| m(1, method);
    let steps = vec![
        Step::Client(
            [
                client_hello(false),
                tx(Method::TxSelect),
                submitted("A"),
                tx(Method::TxCommit),
                submitted("B"),
                tx(Method::TxCommit),
            ]
            .concat(),
        ),
        Step::Broker(tx(Method::TxCommitOk)),
    ];
    let sim = run(&cfg, &steps, Cuts::Whole);
    assert_eq!(sim.spans.len(), 1);
    assert_eq!(s(&sim.spans[0], "order.id").as_deref(), Some("A"));
    let mut steps = steps;
    steps.push(Step::Broker(tx(Method::TxCommitOk)));
    let sim = run(&cfg, &steps, Cuts::Whole);
    assert_eq!(sim.spans.len(), 2);
    assert_eq!(s(&sim.spans[1], "order.id").as_deref(), Some("B"));
    assert_eq!(
        s(&sim.spans[1], "messaging.rabbitmq.tx").as_deref(),
        Some("commit")
    );
}

#[test]
fn a_consumer_cancelled_by_the_broker_is_an_error_span() {
    let cfg = config(CFG);
    let mut steps = consumer_steps(m(
        1,
        Method::BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    ));
    steps.push(Step::Broker(m(
        1,
        Method::BasicCancel {
            consumer_tag: "amq.ctag-1".into(),
        },
    )));
    // The client's own cancel of another consumer is not an error.
    steps.push(Step::Client(m(
        1,
        Method::BasicCancel {
            consumer_tag: "other".into(),
        },
    )));
    let sim = run(&cfg, &steps, Cuts::Whole);
    assert_eq!(sim.spans.len(), 2, "{:?}", sim.spans);
    let c = one(&sim.spans, "cancel mes.submitted");
    assert_eq!(c.kind, Kind::Internal);
    assert_eq!(c.status, StatusCode::Error);
    for (k, v) in [
        ("error.type", "consumer_cancelled"),
        ("messaging.system", "rabbitmq"),
        ("messaging.operation.name", "cancel"),
        ("messaging.destination.name", "mes.submitted"),
        ("messaging.rabbitmq.consumer_tag", "amq.ctag-1"),
    ] {
        assert_eq!(s(c, k).as_deref(), Some(v), "{k}");
    }
}

/// The per-message path of the filter outside Envoy: the core (`amqp::sim`) plus what the glue does with
/// every finished span (redaction and OTLP encoding), for 1 KiB messages published with confirms and
/// consumed with acks, as `make bench-amqp` sends them. Prints ns per message; run it under a profiler:
/// `cargo test --release --test amqp_spans per_message_cost -- --ignored --nocapture`.
#[test]
#[ignore = "profiling: run by hand"]
fn per_message_cost() {
    use std::time::Instant;
    let n: u64 = std::env::var("AMQP_PROFILE_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let plugin = format!(
        r#"{{"service":"crm-api","collector":{{"cluster":"otlp_collector"}},
            "redaction":{{"hmac_key":"profile-key-not-a-secret"}},"amqp":{}}}"#,
        r#"{"rules":[{"exchange":"orders","routing_key":"order.submitted","order_id":{"body":"/orderId"}}]}"#
    );
    let config = ordertrace::config::Config::from_json(plugin.as_bytes()).unwrap();
    let mut sim =
        ordertrace_amqp::sim::Sim::new(ordertrace_amqp::Amqp::from_config(&config).unwrap());
    sim.broker(&broker_hello(true));
    sim.client(&client_hello(true), false);
    sim.client(
        &m(
            1,
            Method::BasicConsume {
                queue: "mes.submitted".into(),
                consumer_tag: "c1".into(),
                no_ack: false,
            },
        ),
        false,
    );
    sim.broker(&m(
        1,
        Method::BasicConsumeOk {
            consumer_tag: "c1".into(),
        },
    ));
    let pad = "p".repeat(1000);
    let mut encoded = 0usize;
    let started = Instant::now();
    for i in 1..=n {
        let body = format!(r#"{{"orderId":"ORD-{i}","pad":"{pad}"}}"#);
        sim.client(
            &publish(
                1,
                "orders",
                "order.submitted",
                &Properties::default(),
                body.as_bytes(),
            ),
            false,
        );
        sim.broker(&m(
            1,
            Method::BasicAck {
                delivery_tag: i,
                multiple: false,
            },
        ));
        sim.broker(&deliver(
            1,
            "c1",
            i,
            false,
            "orders",
            "order.submitted",
            &headers(&[("traceparent", TP)]),
            body.as_bytes(),
        ));
        sim.client(
            &m(
                1,
                Method::BasicAck {
                    delivery_tag: i,
                    multiple: false,
                },
            ),
            false,
        );
        for span in sim.take_spans() {
            encoded += ordertrace::redact::encode_span(&config.redactor, span).len();
        }
        sim.upstream.clear();
        sim.downstream.clear();
    }
    let per = started.elapsed().as_nanos() as f64 / n as f64;
    eprintln!(
        "{n} messages published+confirmed and delivered+acked: {per:.0} ns per message (both spans), {} bytes of OTLP per message",
        encoded as u64 / n
    );
    assert_eq!(sim.amqp.injected, n);
}
