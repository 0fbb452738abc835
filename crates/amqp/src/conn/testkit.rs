//! Hand-built AMQP traffic for the connection's unit tests: frames, a client past the handshake, and span
//! lookups. Sessions run through [`Sim`], the model of how Envoy drives the filter.

use crate::config::Amqp;
use crate::frame::{
    encode_content_header, encode_frame, encode_method, Method, Properties, FRAME_BODY,
    FRAME_HEADER, FRAME_METHOD, PROTOCOL_HEADER,
};
use crate::sim::Sim;
use crate::table::{FieldValue, Table};
use ordertrace::otlp::{AttrValue, SpanRecord};
use ordertrace::tracecontext::{parse_traceparent, TraceParent};

/// A sampled producer context, as a client library would send it.
pub(super) const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

pub(super) fn tp() -> TraceParent {
    parse_traceparent(TP.as_bytes()).unwrap()
}

pub(super) fn config(json: &str) -> Amqp {
    Amqp::from_json(json.as_bytes()).unwrap()
}

/// A method frame.
pub(super) fn method(channel: u16, m: Method) -> Vec<u8> {
    encode_frame(FRAME_METHOD, channel, &encode_method(&m))
}

/// The header frame of a content of `body_len` bytes.
pub(super) fn header_frame(channel: u16, props: &Properties, body_len: usize) -> Vec<u8> {
    encode_frame(
        FRAME_HEADER,
        channel,
        &encode_content_header(body_len as u64, props),
    )
}

/// A content-bearing method, its header frame and its body in one body frame.
pub(super) fn content(channel: u16, m: Method, props: &Properties, body: &[u8]) -> Vec<u8> {
    let mut out = method(channel, m);
    out.extend(header_frame(channel, props, body.len()));
    out.extend(encode_frame(FRAME_BODY, channel, body));
    out
}

pub(super) fn publish_method(exchange: &str, routing_key: &str, mandatory: bool) -> Method {
    Method::BasicPublish {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        mandatory,
        immediate: false,
    }
}

pub(super) fn publish(
    exchange: &str,
    routing_key: &str,
    props: &Properties,
    body: &[u8],
) -> Vec<u8> {
    content(1, publish_method(exchange, routing_key, false), props, body)
}

pub(super) fn deliver(consumer_tag: &str, tag: u64, props: &Properties, body: &[u8]) -> Vec<u8> {
    let m = Method::BasicDeliver {
        consumer_tag: consumer_tag.into(),
        delivery_tag: tag,
        redelivered: false,
        exchange: "orders".into(),
        routing_key: "order.submitted".into(),
    };
    content(1, m, props, body)
}

pub(super) fn headers(entries: &[(&str, &str)]) -> Properties {
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

/// A connection whose client has sent the protocol header, `connection.tune-ok` (frame-max 131072),
/// `connection.open` (vhost `/`) and opened channel 1, in confirm mode when `confirms`.
pub(super) fn open(json: &str, confirms: bool) -> Sim {
    let mut sim = Sim::new(config(json));
    let mut hello = PROTOCOL_HEADER.to_vec();
    hello.extend(method(
        0,
        Method::ConnectionTuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        },
    ));
    hello.extend(method(0, Method::ConnectionOpen { vhost: "/".into() }));
    hello.extend(method(1, Method::ChannelOpen));
    if confirms {
        hello.extend(method(1, Method::ConfirmSelect { nowait: false }));
    }
    sim.client(&hello, false);
    sim
}

/// `basic.consume` on channel 1 with a client-chosen tag.
pub(super) fn consume(sim: &mut Sim, queue: &str, consumer_tag: &str, no_ack: bool) {
    let m = Method::BasicConsume {
        queue: queue.into(),
        consumer_tag: consumer_tag.into(),
        no_ack,
    };
    sim.client(&method(1, m), false);
}

/// A string, integer or boolean attribute as text.
pub(super) fn attr(span: &SpanRecord, key: &str) -> Option<String> {
    match span.attr(key) {
        Some(AttrValue::Str(v)) => Some(v.clone()),
        Some(AttrValue::Int(i)) => Some(i.to_string()),
        Some(AttrValue::Bool(b)) => Some(b.to_string()),
        None => None,
    }
}

pub(super) fn names(spans: &[SpanRecord]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}
