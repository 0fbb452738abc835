//! Building AMQP 0-9-1 traffic for the tests (`mod amqp_support;`): frames, whole exchanges, scripted
//! sessions run through the Envoy buffer model ([`ordertrace_amqp::sim::Sim`]).
#![allow(dead_code)]

use ordertrace::otlp::{AttrValue, SpanRecord};
use ordertrace_amqp::config::Amqp;
use ordertrace_amqp::frame::{
    encode_content_header, encode_frame, encode_method, Close, Method, Properties, FRAME_BODY,
    FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER,
};
use ordertrace_amqp::sim::Sim;
use ordertrace_amqp::table::{FieldValue, Table};

pub const FRAME_MAX: u32 = 131_072;

pub fn m(channel: u16, method: Method) -> Vec<u8> {
    encode_frame(FRAME_METHOD, channel, &encode_method(&method))
}

pub fn heartbeat() -> Vec<u8> {
    encode_frame(FRAME_HEARTBEAT, 0, &[])
}

pub fn headers(entries: &[(&str, &str)]) -> Properties {
    Properties {
        headers: Some(Table(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), FieldValue::LongStr(v.as_bytes().to_vec())))
                .collect(),
        )),
        ..Properties::default()
    }
}

/// A content-bearing method, its header and its body in frames of at most `frame_max`.
pub fn content(
    channel: u16,
    method: Method,
    props: &Properties,
    body: &[u8],
    frame_max: u32,
) -> Vec<u8> {
    let mut out = m(channel, method);
    out.extend(encode_frame(
        FRAME_HEADER,
        channel,
        &encode_content_header(body.len() as u64, props),
    ));
    let per = (frame_max as usize).saturating_sub(8).max(1);
    for chunk in body.chunks(per) {
        out.extend(encode_frame(FRAME_BODY, channel, chunk));
    }
    out
}

pub fn publish(channel: u16, exchange: &str, rk: &str, props: &Properties, body: &[u8]) -> Vec<u8> {
    content(
        channel,
        Method::BasicPublish {
            exchange: exchange.into(),
            routing_key: rk.into(),
            mandatory: false,
            immediate: false,
        },
        props,
        body,
        FRAME_MAX,
    )
}

pub fn publish_mandatory(
    channel: u16,
    exchange: &str,
    rk: &str,
    props: &Properties,
    body: &[u8],
) -> Vec<u8> {
    content(
        channel,
        Method::BasicPublish {
            exchange: exchange.into(),
            routing_key: rk.into(),
            mandatory: true,
            immediate: false,
        },
        props,
        body,
        FRAME_MAX,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn deliver(
    channel: u16,
    consumer_tag: &str,
    tag: u64,
    redelivered: bool,
    exchange: &str,
    rk: &str,
    props: &Properties,
    body: &[u8],
) -> Vec<u8> {
    content(
        channel,
        Method::BasicDeliver {
            consumer_tag: consumer_tag.into(),
            delivery_tag: tag,
            redelivered,
            exchange: exchange.into(),
            routing_key: rk.into(),
        },
        props,
        body,
        FRAME_MAX,
    )
}

pub fn close_frame(channel: u16, code: u16, text: &str, class_id: u16, method_id: u16) -> Vec<u8> {
    let c = Close {
        reply_code: code,
        reply_text: text.into(),
        class_id,
        method_id,
    };
    if channel == 0 {
        m(0, Method::ConnectionClose(c))
    } else {
        m(channel, Method::ChannelClose(c))
    }
}

/// Client side up to an open channel 1 (and confirm.select when `confirms`).
pub fn client_hello(confirms: bool) -> Vec<u8> {
    let mut b = PROTOCOL_HEADER.to_vec();
    b.extend(m(
        0,
        Method::ConnectionStartOk {
            client_properties: Table(vec![(
                "product".into(),
                FieldValue::LongStr(b"test".to_vec()),
            )]),
            mechanism: "PLAIN".into(),
        },
    ));
    b.extend(m(
        0,
        Method::ConnectionTuneOk {
            channel_max: 2047,
            frame_max: FRAME_MAX,
            heartbeat: 60,
        },
    ));
    b.extend(m(0, Method::ConnectionOpen { vhost: "/".into() }));
    b.extend(m(1, Method::ChannelOpen));
    if confirms {
        b.extend(m(1, Method::ConfirmSelect { nowait: false }));
    }
    b
}

/// Broker side up to channel 1 open (and confirm.select-ok when `confirms`).
pub fn broker_hello(confirms: bool) -> Vec<u8> {
    let mut b = m(
        0,
        Method::ConnectionStart {
            server_properties: Table(vec![(
                "product".into(),
                FieldValue::LongStr(b"RabbitMQ".to_vec()),
            )]),
        },
    );
    b.extend(m(
        0,
        Method::ConnectionTune {
            channel_max: 2047,
            frame_max: FRAME_MAX,
            heartbeat: 60,
        },
    ));
    b.extend(m(0, Method::ConnectionOpenOk));
    b.extend(m(1, Method::ChannelOpenOk));
    if confirms {
        b.extend(m(1, Method::ConfirmSelectOk));
    }
    b
}

/// One step of a scripted session.
#[derive(Debug, Clone)]
pub enum Step {
    Client(Vec<u8>),
    Broker(Vec<u8>),
    AdvanceMs(u64),
    Close,
}

/// How each step's bytes are cut into reads.
#[derive(Debug, Clone, Copy)]
pub enum Cuts {
    Whole,
    /// Step `step` is read in two parts, the first `at` bytes long.
    SplitStep {
        step: usize,
        at: usize,
    },
    /// Every step is read one byte at a time.
    Bytewise,
}

pub fn config(json: &str) -> Amqp {
    Amqp::from_json(json.as_bytes()).unwrap()
}

/// The reads step `i` (its bytes `b`) is delivered in.
pub fn reads(cuts: Cuts, i: usize, b: &[u8]) -> Vec<&[u8]> {
    match cuts {
        Cuts::Whole => vec![b],
        Cuts::SplitStep { step, at } if step == i => {
            let (x, y) = b.split_at(at.min(b.len()));
            vec![x, y]
        }
        Cuts::SplitStep { .. } => vec![b],
        Cuts::Bytewise => b.chunks(1).collect(),
    }
}

/// Runs a script and returns the simulator (spans, upstream bytes, counters).
pub fn run(config: &Amqp, steps: &[Step], cuts: Cuts) -> Sim {
    let mut sim = Sim::new(config.clone());
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Client(b) | Step::Broker(b) => {
                let reads = reads(cuts, i, b);
                for r in reads {
                    if matches!(s, Step::Client(_)) {
                        sim.client(r, false);
                    } else {
                        sim.broker(r);
                    }
                }
            }
            Step::AdvanceMs(ms) => sim.advance_ms(*ms),
            Step::Close => sim.close(),
        }
    }
    sim
}

pub fn s(span: &SpanRecord, key: &str) -> Option<String> {
    match span.attr(key) {
        Some(AttrValue::Str(v)) => Some(v.clone()),
        Some(AttrValue::Int(i)) => Some(i.to_string()),
        Some(AttrValue::Bool(b)) => Some(b.to_string()),
        None => None,
    }
}

pub fn named<'a>(spans: &'a [SpanRecord], name: &str) -> Vec<&'a SpanRecord> {
    spans.iter().filter(|s| s.name == name).collect()
}

pub fn one<'a>(spans: &'a [SpanRecord], name: &str) -> &'a SpanRecord {
    let v = named(spans, name);
    assert_eq!(
        v.len(),
        1,
        "expected one span {name:?}, got {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    v[0]
}

// ---------------------------------------------------------------------------------------------
// Shared fixtures: the rules, a message, and whole sessions.

pub const CFG: &str = r#"{"rules":[
  {"exchange":"orders","routing_key":"order.submitted","order_id":{"header":"x-order-id"},"status":"SUBMITTED"},
  {"exchange":"orders","routing_key":"order.price_calculated","order_id":{"body":"/orderId"},"status":"PRICE_CALCULATED",
   "attributes":{"mes.polygon_count":{"body":"/polygonCount"}}}]}"#;

pub const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Frames of a client stream: (type, channel, payload).
pub fn frames(mut b: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
    if b.starts_with(&PROTOCOL_HEADER) {
        b = &b[8..];
    }
    let mut out = Vec::new();
    while b.len() >= 8 {
        let size = u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize;
        out.push((
            b[0],
            u16::from_be_bytes([b[1], b[2]]),
            b[7..7 + size].to_vec(),
        ));
        assert_eq!(b[7 + size], 0xCE);
        b = &b[8 + size..];
    }
    assert!(b.is_empty(), "trailing bytes");
    out
}

pub fn submitted(order: &str) -> Vec<u8> {
    publish(
        1,
        "orders",
        "order.submitted",
        &headers(&[("x-order-id", order)]),
        br#"{"orderId":"ORD-1001"}"#,
    )
}

/// A session touching every span path, for the split tests.
pub fn full_session() -> Vec<Step> {
    let mut steps = vec![Step::Broker(broker_hello(true))];
    steps.push(Step::Client(
        [
            client_hello(true),
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
    ));
    steps.push(Step::Broker(m(
        1,
        Method::BasicConsumeOk {
            consumer_tag: "amq.ctag-1".into(),
        },
    )));
    steps.push(Step::Client(
        [
            submitted("A"),
            heartbeat(),
            publish(
                1,
                "orders",
                "order.price_calculated",
                &Properties::default(),
                br#"{"orderId":"ORD-2","polygonCount":7}"#,
            ),
        ]
        .concat(),
    ));
    steps.push(Step::AdvanceMs(3));
    steps.push(Step::Broker(
        [
            m(
                1,
                Method::BasicAck {
                    delivery_tag: 2,
                    multiple: true,
                },
            ),
            deliver(
                1,
                "amq.ctag-1",
                1,
                false,
                "orders",
                "order.submitted",
                &headers(&[("traceparent", TP), ("x-order-id", "ORD-5")]),
                b"{}",
            ),
        ]
        .concat(),
    ));
    steps.push(Step::Client(
        [
            m(
                1,
                Method::BasicNack {
                    delivery_tag: 1,
                    multiple: false,
                    requeue: true,
                },
            ),
            publish_mandatory(1, "orders", "nowhere", &headers(&[("a", "b")]), b"x"),
        ]
        .concat(),
    ));
    steps.push(Step::Broker(m(
        0,
        Method::ConnectionBlocked {
            reason: "low on memory".into(),
        },
    )));
    steps.push(Step::Client(submitted("Z")));
    steps.push(Step::Close);
    steps
}

/// A realistic conversation for the split tests on the built filter: one channel in confirm mode that
/// publishes (with and without `traceparent`, a JSON body rule, a mandatory message the broker returns)
/// and consumes (a delivery with `traceparent`, one without, one redelivered), settled with ack, nack
/// (requeue) and reject; then the broker blocks the connection, one more publish waits for its confirm,
/// the broker unblocks, cancels the consumer (its queue was deleted), and the client goes away before
/// the confirm.
pub fn wire_session() -> Vec<Step> {
    let consume = m(
        1,
        Method::BasicConsume {
            queue: "mes.submitted".into(),
            consumer_tag: "".into(),
            no_ack: false,
        },
    );
    let ack = |tag: u64, multiple: bool| {
        m(
            1,
            Method::BasicAck {
                delivery_tag: tag,
                multiple,
            },
        )
    };
    let mut returned = m(
        1,
        Method::BasicReturn {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: "orders".into(),
            routing_key: "nowhere".into(),
        },
    );
    returned.extend(encode_frame(
        FRAME_HEADER,
        1,
        &encode_content_header(1, &headers(&[("a", "b")])),
    ));
    returned.extend(encode_frame(FRAME_BODY, 1, b"x"));
    vec![
        Step::Broker(broker_hello(true)),
        Step::Client([client_hello(true), consume].concat()),
        Step::Broker(m(
            1,
            Method::BasicConsumeOk {
                consumer_tag: "amq.ctag-1".into(),
            },
        )),
        Step::Client(
            [
                submitted("A"),
                heartbeat(),
                publish(
                    1,
                    "orders",
                    "order.price_calculated",
                    &Properties::default(),
                    br#"{"orderId":"ORD-2","polygonCount":7}"#,
                ),
                publish(
                    1,
                    "orders",
                    "order.submitted",
                    &headers(&[("traceparent", TP), ("x-order-id", "B")]),
                    b"{}",
                ),
            ]
            .concat(),
        ),
        Step::AdvanceMs(3),
        Step::Broker(
            [
                ack(2, true),
                ack(3, false),
                deliver(
                    1,
                    "amq.ctag-1",
                    1,
                    false,
                    "orders",
                    "order.submitted",
                    &headers(&[("traceparent", TP), ("x-order-id", "ORD-5")]),
                    b"{}",
                ),
                deliver(
                    1,
                    "amq.ctag-1",
                    2,
                    false,
                    "orders",
                    "order.submitted",
                    &Properties::default(),
                    br#"{"orderId":"ORD-6"}"#,
                ),
                deliver(
                    1,
                    "amq.ctag-1",
                    3,
                    true,
                    "orders",
                    "order.submitted",
                    &headers(&[("x-order-id", "ORD-7")]),
                    b"{}",
                ),
            ]
            .concat(),
        ),
        Step::AdvanceMs(2),
        Step::Client(
            [
                ack(1, false),
                m(
                    1,
                    Method::BasicNack {
                        delivery_tag: 2,
                        multiple: false,
                        requeue: true,
                    },
                ),
                m(
                    1,
                    Method::BasicReject {
                        delivery_tag: 3,
                        requeue: false,
                    },
                ),
                publish_mandatory(1, "orders", "nowhere", &headers(&[("a", "b")]), b"x"),
            ]
            .concat(),
        ),
        Step::AdvanceMs(1),
        Step::Broker([returned, ack(4, false)].concat()),
        Step::Broker(m(
            0,
            Method::ConnectionBlocked {
                reason: "low on memory".into(),
            },
        )),
        Step::Client(submitted("Z")),
        Step::AdvanceMs(4),
        Step::Broker(m(0, Method::ConnectionUnblocked)),
        Step::Broker(m(
            1,
            Method::BasicCancel {
                consumer_tag: "amq.ctag-1".into(),
            },
        )),
        Step::Close,
    ]
}
