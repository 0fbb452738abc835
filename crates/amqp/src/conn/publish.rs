//! Client publishes: a `basic.publish` and its content header start a producer span (continuing the
//! message's `traceparent`, or a new trace), the header frame is rewritten to carry the span's
//! `traceparent` when `inject` is on, and once the body is complete the publish either ends (no confirms,
//! no transaction) or waits on its channel for a confirm or the end of its transaction (see
//! [`settle`](super::settle)).

use crate::config::MessageKey;
use crate::decoder::FrameSpan;
use crate::frame::{add_string_header, encode_frame, ContentHeader, Properties, FRAME_HEADER};
use crate::spans::{Msg, Outcome};
use crate::wire::WireError;
use ordertrace::host::RandomSource;
use ordertrace::otlp::{AttrValue, Kind};
use ordertrace::tracecontext::{parse_traceparent, SpanId, TraceId, TraceParent};

use super::{
    apply_rule, destination, header_traceparent, int_attr, message_attrs, new_flags, push, Channel,
    Connection, EditCtx, Env, TRACEPARENT,
};

/// A publish in flight: its span, and what a confirm, a return or a transaction needs to find it.
pub(super) struct Publish {
    pub(super) msg: Msg,
    pub(super) seq: u64,
    pub(super) exchange: String,
    pub(super) routing_key: String,
    pub(super) mandatory: bool,
    pub(super) props: Option<Properties>,
    /// On a channel in tx mode: `Some(0)` until a `tx.commit` / `tx.rollback` takes it, then the number
    /// of that commit or rollback. `None` outside transactions.
    pub(super) tx: Option<u64>,
}

/// A `basic.publish` joined with its content-header frame, as decoded.
pub(super) struct PublishStart {
    pub(super) channel: u16,
    pub(super) exchange: String,
    pub(super) routing_key: String,
    pub(super) mandatory: bool,
    pub(super) header: Result<ContentHeader, WireError>,
    pub(super) frame: FrameSpan,
    pub(super) payload: Vec<u8>,
}

impl Connection {
    /// The content header of a publish: the producer span starts, and the header frame gets a
    /// `traceparent` if it has none (and `inject` is on).
    pub(super) fn on_publish_header<R: RandomSource>(
        &mut self,
        p: PublishStart,
        env: &mut Env<'_, R>,
        ctx: &mut EditCtx,
        buf: &[u8],
    ) {
        let props = p.header.ok().map(|h: ContentHeader| h.properties);
        let parsed = props.is_some();
        let has_header = props
            .as_ref()
            .and_then(|p| p.headers.as_ref())
            .is_some_and(|t| t.get(TRACEPARENT).is_some());
        let (trace_id, parent, flags) = publish_trace(props.as_ref(), has_header, env);
        let span_id = env.ids.span_id();
        let ctx_out = TraceParent {
            trace_id,
            parent_id: span_id,
            flags,
        };
        // The span the message carries on: the incoming parent, or this span once injected.
        let mut carried = parent;
        if env.config.inject && !has_header {
            let injected =
                parsed && self.inject(p.channel, p.frame, &p.payload, &ctx_out, ctx, buf);
            if injected {
                env.amqp.injected += 1;
                carried = Some(span_id);
            } else {
                env.amqp.inject_skipped += 1;
            }
        }
        if let Some(c) = carried {
            env.memory.remember(c, env.now_ns);
        }
        let msg = self.producer_msg(
            &ctx_out,
            parent,
            &p.exchange,
            &p.routing_key,
            props.as_ref(),
            env,
        );
        let publish = Publish {
            msg,
            seq: 0,
            exchange: p.exchange,
            routing_key: p.routing_key,
            mandatory: p.mandatory,
            props,
            tx: None,
        };
        if let Some(ch) = self.channel(p.channel) {
            ch.publishing = Some(publish);
        }
    }

    /// The producer span of a publish (`ctx`: its own trace id, span id and flags).
    fn producer_msg<R: RandomSource>(
        &self,
        ctx: &TraceParent,
        parent: Option<SpanId>,
        exchange: &str,
        routing_key: &str,
        props: Option<&Properties>,
        env: &Env<'_, R>,
    ) -> Msg {
        let dest = destination(exchange).to_string();
        let mut msg = Msg {
            trace_id: ctx.trace_id,
            span_id: ctx.parent_id,
            parent,
            flags: ctx.flags,
            link: None,
            name: format!("publish {dest}"),
            kind: Kind::Producer,
            start_ns: env.now_ns,
            attributes: Vec::with_capacity(12),
            events: Vec::new(),
            order_id: None,
            status: None,
            error: None,
        };
        msg.str_attr("messaging.system", "rabbitmq");
        msg.str_attr("messaging.operation.type", "send");
        msg.str_attr("messaging.operation.name", "publish");
        msg.str_attr("messaging.destination.name", &dest);
        if !routing_key.is_empty() {
            msg.str_attr("messaging.rabbitmq.destination.routing_key", routing_key);
        }
        message_attrs(&mut msg, props);
        if let Some(v) = &self.vhost {
            msg.str_attr("messaging.rabbitmq.vhost", v);
        }
        if let Some(reason) = &self.blocked_reason {
            msg.event(
                "messaging.rabbitmq.connection.blocked",
                env.now_ns,
                vec![(
                    "messaging.rabbitmq.blocked.reason".into(),
                    AttrValue::Str(reason.clone()),
                )],
            );
        }
        msg
    }

    /// Rewrites the content-header frame with a `traceparent` header; false when it cannot.
    fn inject(
        &self,
        channel: u16,
        at: FrameSpan,
        payload: &[u8],
        tp: &TraceParent,
        ctx: &mut EditCtx,
        buf: &[u8],
    ) -> bool {
        let Ok(payload) = add_string_header(payload, TRACEPARENT, tp.format().as_bytes()) else {
            return false;
        };
        let frame = encode_frame(FRAME_HEADER, channel, &payload);
        if self.frame_max != 0 && frame.len() as u64 > u64::from(self.frame_max) {
            return false;
        }
        ctx.replace(at, frame, buf)
    }

    /// The body of a publish is complete: the rule applies, then the publish ends or waits.
    pub(super) fn on_publish_body<R: RandomSource>(
        &mut self,
        channel: u16,
        prefix: &[u8],
        body_size: u64,
        env: &mut Env<'_, R>,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(mut p) = ch.publishing.take() else {
            return;
        };
        p.msg
            .attr("messaging.message.body.size", int_attr(body_size));
        let key = MessageKey {
            publish: true,
            exchange: &p.exchange,
            routing_key: &p.routing_key,
            queue: None,
        };
        apply_rule(&mut p.msg, env, &key, p.props.as_ref(), prefix, body_size);
        ch.last_publish = Some(p.msg.context());
        await_outcome(ch, p, env);
    }
}

/// The trace a publish joins: the message's valid `traceparent`, else a new trace (counting a created or
/// a malformed `traceparent`). `has_header`: the headers hold a `traceparent` entry of any type.
fn publish_trace<R: RandomSource>(
    props: Option<&Properties>,
    has_header: bool,
    env: &mut Env<'_, R>,
) -> (TraceId, Option<SpanId>, u8) {
    match header_traceparent(props).map(parse_traceparent) {
        Some(Ok(tp)) => (tp.trace_id, Some(tp.parent_id), tp.flags),
        other => {
            if matches!(other, Some(Err(_))) || has_header {
                env.counters.traceparent_malformed += 1;
            } else {
                env.counters.traceparent_created += 1;
            }
            let t = env.ids.trace_id();
            (t, None, new_flags(env.sampling_ratio, &t))
        }
    }
}

/// A complete publish: in confirm mode it gets the next sequence number and waits for the broker's
/// ack/nack; in tx mode it waits for the next commit or rollback; otherwise it ends now. Past
/// `max_pending` waiting publishes it ends now too, marked `untracked`.
fn await_outcome<R: RandomSource>(ch: &mut Channel, mut p: Publish, env: &mut Env<'_, R>) {
    if ch.confirm {
        ch.publish_seq += 1;
        p.seq = ch.publish_seq;
    } else if ch.tx {
        p.tx = Some(0);
    } else {
        push(env, p.msg.finish(env.now_ns, Outcome::Ok));
        return;
    }
    if ch.unconfirmed.len() >= env.config.max_pending {
        env.amqp.pending_overflow += 1;
        p.msg.str_attr("messaging.rabbitmq.confirm", "untracked");
        push(env, p.msg.finish(env.now_ns, Outcome::Ok));
        return;
    }
    ch.unconfirmed.push_back(p);
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::frame::{Method, Properties};
    use ordertrace::otlp::{Kind, StatusCode};
    use ordertrace::tracecontext::parse_traceparent;

    /// The `traceparent` the broker received in the (only) publish's header frame.
    fn sent_traceparent(upstream: &[u8]) -> Option<String> {
        let needle = b"traceparent";
        let at = upstream.windows(needle.len()).position(|w| w == needle)?;
        // name, then 'S' and a 4-byte length, then the 55-character value.
        let value = upstream.get(at + needle.len() + 5..at + needle.len() + 5 + 55)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }

    #[test]
    fn a_publish_without_confirms_ends_at_its_body_carrying_its_own_traceparent() {
        let mut sim = open("{}", false);
        let bytes = publish(
            "orders",
            "order.submitted",
            &Properties::default(),
            br#"{"a":1}"#,
        );
        sim.client(&bytes, false);
        assert_eq!((sim.amqp.injected, sim.amqp.inject_skipped), (1, 0));
        assert_eq!(sim.counters.traceparent_created, 1);
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish orders"]);
        let span = &spans[0];
        assert_eq!(span.kind, Kind::Producer);
        assert_eq!(span.parent_span_id, None);
        assert_eq!(span.status, StatusCode::Unset);
        assert_eq!(
            attr(span, "messaging.operation.name").as_deref(),
            Some("publish")
        );
        assert_eq!(
            attr(span, "messaging.rabbitmq.destination.routing_key").as_deref(),
            Some("order.submitted")
        );
        assert_eq!(
            attr(span, "messaging.message.body.size").as_deref(),
            Some("7")
        );
        assert_eq!(attr(span, "messaging.rabbitmq.vhost").as_deref(), Some("/"));
        let sent = sent_traceparent(&sim.upstream).expect("a traceparent header was added");
        let sent = parse_traceparent(sent.as_bytes()).unwrap();
        assert_eq!(
            (sent.trace_id, sent.parent_id),
            (span.trace_id, span.span_id)
        );
    }

    #[test]
    fn an_incoming_traceparent_is_continued_and_the_bytes_are_left_alone() {
        let mut sim = open("{}", false);
        let bytes = publish("", "q", &headers(&[("traceparent", TP)]), b"x");
        let before = sim.upstream.len();
        sim.client(&bytes, false);
        assert_eq!(&sim.upstream[before..], bytes.as_slice());
        assert_eq!((sim.amqp.injected, sim.amqp.inject_skipped), (0, 0));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish amq.default"]);
        assert_eq!(spans[0].trace_id, tp().trace_id);
        assert_eq!(spans[0].parent_span_id, Some(tp().parent_id));
    }

    #[test]
    fn a_malformed_traceparent_is_counted_and_neither_continued_nor_replaced() {
        let mut sim = open("{}", false);
        let bytes = publish("orders", "k", &headers(&[("traceparent", "garbage")]), b"x");
        let before = sim.upstream.len();
        sim.client(&bytes, false);
        assert_eq!(&sim.upstream[before..], bytes.as_slice());
        assert_eq!(sim.counters.traceparent_malformed, 1);
        assert_eq!(sim.counters.traceparent_created, 0);
        assert_eq!((sim.amqp.injected, sim.amqp.inject_skipped), (0, 0));
        let spans = sim.take_spans();
        assert_ne!(spans[0].trace_id, tp().trace_id);
        assert_eq!(spans[0].parent_span_id, None);
    }

    #[test]
    fn a_header_frame_that_would_pass_frame_max_is_not_rewritten() {
        let mut sim = open("{}", false);
        // The header frame is the largest frame of this publish, and frame-max exactly its size: the
        // decoder follows it, the rewritten one would not fit.
        let props = Properties {
            message_id: Some("m".repeat(64)),
            ..Properties::default()
        };
        let frame_max = header_frame(1, &props, 1).len() as u32;
        let tune = Method::ConnectionTuneOk {
            channel_max: 2047,
            frame_max,
            heartbeat: 60,
        };
        sim.client(&method(0, tune), false);
        let bytes = publish("orders", "k", &props, b"x");
        let before = sim.upstream.len();
        sim.client(&bytes, false);
        assert_eq!(&sim.upstream[before..], bytes.as_slice());
        assert_eq!((sim.amqp.injected, sim.amqp.inject_skipped), (0, 1));
        assert_eq!(names(&sim.spans), ["publish orders"]);
    }

    #[test]
    fn with_confirms_publishes_wait_and_past_max_pending_end_untracked() {
        let mut sim = open(r#"{"max_pending":1}"#, true);
        sim.client(&publish("orders", "a", &Properties::default(), b"x"), false);
        assert!(
            sim.spans.is_empty(),
            "the first publish waits for its confirm"
        );
        sim.client(&publish("orders", "b", &Properties::default(), b"x"), false);
        assert_eq!(sim.amqp.pending_overflow, 1);
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish orders"]);
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.confirm").as_deref(),
            Some("untracked")
        );
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.destination.routing_key").as_deref(),
            Some("b")
        );
        // The waiting one is confirm number 1.
        let ack = Method::BasicAck {
            delivery_tag: 1,
            multiple: false,
        };
        sim.broker(&method(1, ack));
        let spans = sim.take_spans();
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.destination.routing_key").as_deref(),
            Some("a")
        );
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.confirm").as_deref(),
            Some("ack")
        );
    }

    #[test]
    fn the_rule_of_the_exchange_reads_the_body() {
        let json = r#"{"rules":[{"exchange":"orders","order_id":{"body":"/orderId"},"status":"SUBMITTED"}]}"#;
        let mut sim = open(json, false);
        sim.client(
            &publish(
                "orders",
                "k",
                &Properties::default(),
                br#"{"orderId":"A-1"}"#,
            ),
            false,
        );
        sim.client(
            &publish(
                "other",
                "k",
                &Properties::default(),
                br#"{"orderId":"B-2"}"#,
            ),
            false,
        );
        assert_eq!(sim.counters.rule_matches, 1);
        let spans = sim.take_spans();
        assert_eq!(attr(&spans[0], "order.id").as_deref(), Some("A-1"));
        assert_eq!(attr(&spans[1], "order.id"), None);
    }
}
