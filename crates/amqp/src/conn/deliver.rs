//! What the client consumes: the consumers it registers (`basic.consume` / `consume-ok` / `cancel`) and
//! its `basic.get`s, the `basic.deliver` / `basic.get-ok` messages the broker sends it, and their consumer
//! spans (linked to the producer's `traceparent`, with the publish → deliver latency). A delivery that is
//! not auto-acked waits on its channel for the client to settle it (see [`settle`](super::settle)).

use crate::config::MessageKey;
use crate::frame::{Method, Properties};
use crate::spans::{Msg, Outcome};
use ordertrace::host::RandomSource;
use ordertrace::otlp::{AttrValue, Kind};
use ordertrace::tracecontext::{parse_traceparent, TraceParent, FLAG_SAMPLED};

use super::{
    apply_rule, destination, header_traceparent, int_attr, message_attrs, new_flags, push,
    Connection, Env,
};

/// A delivery in flight: its span, and what settling it and the rule engine need.
pub(super) struct Delivery {
    pub(super) msg: Msg,
    pub(super) tag: u64,
    pub(super) no_ack: bool,
    pub(super) exchange: String,
    pub(super) routing_key: String,
    pub(super) queue: Option<String>,
    pub(super) props: Option<Properties>,
}

/// A `basic.deliver` or `basic.get-ok` joined with its content header and the consumer or get it answers.
struct DeliveryStart {
    channel: u16,
    operation: &'static str,
    tag: u64,
    redelivered: bool,
    exchange: String,
    routing_key: String,
    queue: Option<String>,
    no_ack: bool,
    props: Option<Properties>,
}

impl Connection {
    /// `basic.consume` from the client: the consumer is known by its tag at once when the client chose
    /// it, else when `consume-ok` names it.
    pub(super) fn consume_sent(
        &mut self,
        channel: u16,
        queue: String,
        consumer_tag: String,
        no_ack: bool,
    ) {
        if let Some(ch) = self.channel(channel) {
            if !consumer_tag.is_empty() && ch.consumers.len() < 4096 {
                ch.consumers
                    .insert(consumer_tag.clone(), (queue.clone(), no_ack));
            }
            if ch.pending_consume.len() < 256 {
                ch.pending_consume.push_back((queue, consumer_tag, no_ack));
            }
        }
    }

    /// `basic.consume-ok`: answers the oldest `basic.consume` on the channel.
    pub(super) fn consume_ok(&mut self, channel: u16, consumer_tag: String) {
        if let Some(ch) = self.channels.get_mut(&channel) {
            if let Some((queue, _, no_ack)) = ch.pending_consume.pop_front() {
                if ch.consumers.len() < 4096 || ch.consumers.contains_key(&consumer_tag) {
                    ch.consumers.insert(consumer_tag, (queue, no_ack));
                }
            }
        }
    }

    /// `basic.cancel` from the client: the consumer is forgotten.
    pub(super) fn cancel_sent(&mut self, channel: u16, consumer_tag: &str) {
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.consumers.remove(consumer_tag);
        }
    }

    /// A `basic.cancel` from the broker: the consumer is gone (its queue was deleted, or the node that
    /// held it went down). An error span naming the consumer and its queue.
    pub(super) fn consumer_cancelled<R: RandomSource>(
        &mut self,
        channel: u16,
        consumer_tag: String,
        env: &mut Env<'_, R>,
    ) {
        let queue = self
            .channels
            .get_mut(&channel)
            .and_then(|ch| ch.consumers.remove(&consumer_tag))
            .map(|(q, _)| q);
        let name = match &queue {
            Some(q) if !q.is_empty() => format!("cancel {q}"),
            _ => "cancel".to_string(),
        };
        let mut m = self.standalone(&name, None, env);
        m.str_attr("messaging.operation.name", "cancel");
        if let Some(q) = queue.as_deref().filter(|q| !q.is_empty()) {
            m.str_attr("messaging.destination.name", q);
        }
        m.str_attr("messaging.rabbitmq.consumer_tag", &consumer_tag);
        push(
            env,
            m.finish(
                env.now_ns,
                Outcome::Error {
                    kind: "consumer_cancelled".into(),
                    message: "the broker cancelled the consumer (queue deleted or unavailable)"
                        .into(),
                },
            ),
        );
    }

    /// `basic.get` from the client: answered in order by `get-ok` or `get-empty`.
    pub(super) fn get_sent(&mut self, channel: u16, queue: String, no_ack: bool) {
        if let Some(ch) = self.channel(channel) {
            if ch.pending_get.len() < 256 {
                ch.pending_get.push_back((queue, no_ack));
            }
        }
    }

    /// `basic.get-empty`: the oldest `basic.get` got nothing.
    pub(super) fn get_empty(&mut self, channel: u16) {
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.pending_get.pop_front();
        }
    }

    /// The content header of a broker method other than `basic.return`: a `basic.deliver` (its queue and
    /// ack mode from the consumer) or a `basic.get-ok` (from the oldest `basic.get`) starts a consumer
    /// span; other methods are ignored.
    pub(super) fn on_delivery_header<R: RandomSource>(
        &mut self,
        channel: u16,
        method: Method,
        props: Option<Properties>,
        env: &mut Env<'_, R>,
    ) {
        let d = match method {
            Method::BasicDeliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
            } => {
                let (queue, no_ack) = self
                    .channels
                    .get(&channel)
                    .and_then(|ch| ch.consumers.get(&consumer_tag))
                    .map_or((None, false), |(q, n)| (Some(q.clone()), *n));
                DeliveryStart {
                    channel,
                    operation: "deliver",
                    tag: delivery_tag,
                    redelivered,
                    exchange,
                    routing_key,
                    queue,
                    no_ack,
                    props,
                }
            }
            Method::BasicGetOk {
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
                ..
            } => {
                let (queue, no_ack) = self
                    .channels
                    .get_mut(&channel)
                    .and_then(|ch| ch.pending_get.pop_front())
                    .map_or((None, false), |(q, n)| (Some(q), n));
                DeliveryStart {
                    channel,
                    operation: "get",
                    tag: delivery_tag,
                    redelivered,
                    exchange,
                    routing_key,
                    queue,
                    no_ack,
                    props,
                }
            }
            _ => return,
        };
        self.start_delivery(d, env);
    }

    fn start_delivery<R: RandomSource>(&mut self, d: DeliveryStart, env: &mut Env<'_, R>) {
        let link = delivery_link(d.props.as_ref(), env);
        let trace_id = env.ids.trace_id();
        let flags = match &link {
            Some(tp) if tp.sampled() => FLAG_SAMPLED,
            _ => new_flags(env.sampling_ratio, &trace_id),
        };
        let span_id = env.ids.span_id();
        let target = delivery_target(&d);
        let mut msg = Msg {
            trace_id,
            span_id,
            parent: None,
            flags,
            link,
            name: format!("process {target}"),
            kind: Kind::Consumer,
            start_ns: env.now_ns,
            attributes: Vec::with_capacity(14),
            events: Vec::new(),
            order_id: None,
            status: None,
            error: None,
        };
        msg.str_attr("messaging.system", "rabbitmq");
        msg.str_attr("messaging.operation.type", "process");
        msg.str_attr("messaging.operation.name", d.operation);
        msg.str_attr("messaging.destination.name", &target);
        msg.str_attr(
            "messaging.destination_publish.name",
            destination(&d.exchange),
        );
        if !d.routing_key.is_empty() {
            msg.str_attr("messaging.rabbitmq.destination.routing_key", &d.routing_key);
        }
        msg.attr("messaging.rabbitmq.message.delivery_tag", int_attr(d.tag));
        msg.attr(
            "messaging.rabbitmq.message.redelivered",
            AttrValue::Bool(d.redelivered),
        );
        message_attrs(&mut msg, d.props.as_ref());
        if let Some(v) = &self.vhost {
            msg.str_attr("messaging.rabbitmq.vhost", v);
        }
        if let Some((ms, source)) = delivery_latency(link.as_ref(), d.props.as_ref(), env) {
            msg.attr("messaging.rabbitmq.delivery_latency_ms", int_attr(ms));
            msg.str_attr("messaging.rabbitmq.delivery_latency_source", source);
        }
        let delivery = Delivery {
            msg,
            tag: d.tag,
            no_ack: d.no_ack,
            exchange: d.exchange,
            routing_key: d.routing_key,
            queue: d.queue,
            props: d.props,
        };
        if let Some(ch) = self.channel(d.channel) {
            ch.receiving = Some(delivery);
        }
    }

    /// The body of a delivery is complete: the rule applies; an auto-acked delivery ends now, others
    /// wait for the client's ack (past `max_pending` they end now, marked `untracked`).
    pub(super) fn on_delivery_body<R: RandomSource>(
        &mut self,
        channel: u16,
        prefix: &[u8],
        body_size: u64,
        env: &mut Env<'_, R>,
    ) {
        let max_pending = env.config.max_pending;
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(mut d) = ch.receiving.take() else {
            return;
        };
        d.msg
            .attr("messaging.message.body.size", int_attr(body_size));
        let key = MessageKey {
            publish: false,
            exchange: &d.exchange,
            routing_key: &d.routing_key,
            queue: d.queue.as_deref(),
        };
        apply_rule(&mut d.msg, env, &key, d.props.as_ref(), prefix, body_size);
        if d.no_ack {
            d.msg.str_attr("messaging.rabbitmq.outcome", "auto_ack");
            push(env, d.msg.finish(env.now_ns, Outcome::Ok));
            return;
        }
        if ch.unacked.len() >= max_pending {
            env.amqp.pending_overflow += 1;
            d.msg.str_attr("messaging.rabbitmq.outcome", "untracked");
            push(env, d.msg.finish(env.now_ns, Outcome::Ok));
            return;
        }
        ch.unacked.push_back(d);
    }
}

/// The producer context a delivered message carries (the span it is linked to); a malformed
/// `traceparent` is counted and ignored.
fn delivery_link<R: RandomSource>(
    props: Option<&Properties>,
    env: &mut Env<'_, R>,
) -> Option<TraceParent> {
    match header_traceparent(props).map(parse_traceparent) {
        Some(Ok(tp)) => Some(tp),
        Some(Err(_)) => {
            env.counters.traceparent_malformed += 1;
            None
        }
        None => None,
    }
}

/// What the consumer span is named after: the queue, else the routing key, else the exchange.
fn delivery_target(d: &DeliveryStart) -> String {
    d.queue
        .clone()
        .filter(|q| !q.is_empty())
        .or_else(|| Some(d.routing_key.clone()).filter(|r| !r.is_empty()))
        .unwrap_or_else(|| destination(&d.exchange).to_string())
}

/// Publish → deliver latency in ms and its source: the producer span seen on this worker, else the
/// message's `timestamp` property.
fn delivery_latency<R: RandomSource>(
    link: Option<&TraceParent>,
    props: Option<&Properties>,
    env: &Env<'_, R>,
) -> Option<(u64, &'static str)> {
    let seen = link.and_then(|tp| env.memory.published_at(&tp.parent_id));
    match (seen, props.and_then(|p| p.timestamp)) {
        (Some(at), _) => Some((env.now_ns.saturating_sub(at) / 1_000_000, "producer_span")),
        (None, Some(ts)) => Some((
            (env.now_ns / 1_000_000).saturating_sub(ts.saturating_mul(1000)),
            "timestamp",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::frame::{Method, Properties};
    use ordertrace::otlp::{Kind, StatusCode};

    fn ack(tag: u64) -> Vec<u8> {
        method(
            1,
            Method::BasicAck {
                delivery_tag: tag,
                multiple: false,
            },
        )
    }

    #[test]
    fn a_delivery_is_named_after_its_consumers_queue_linked_and_waits_for_the_ack() {
        let mut sim = open("{}", false);
        consume(&mut sim, "orders.q", "c1", false);
        sim.broker(&deliver("c1", 7, &headers(&[("traceparent", TP)]), b"{}"));
        assert!(
            sim.spans.is_empty(),
            "the delivery waits for the client's ack"
        );
        sim.advance_ms(2);
        sim.client(&ack(7), false);
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["process orders.q"]);
        let span = &spans[0];
        assert_eq!(span.kind, Kind::Consumer);
        assert_eq!(
            span.parent_span_id, None,
            "a new trace, linked to the producer"
        );
        assert_ne!(span.trace_id, tp().trace_id);
        assert_eq!(span.links.len(), 1);
        assert_eq!(span.links[0].trace_id, tp().trace_id);
        assert_eq!(span.links[0].span_id, tp().parent_id);
        assert_eq!(span.trace_flags & 1, 1, "sampled like its producer");
        assert_eq!(span.end_ns - span.start_ns, 2_000_000);
        assert_eq!(
            attr(span, "messaging.operation.name").as_deref(),
            Some("deliver")
        );
        assert_eq!(
            attr(span, "messaging.destination_publish.name").as_deref(),
            Some("orders")
        );
        assert_eq!(
            attr(span, "messaging.rabbitmq.message.delivery_tag").as_deref(),
            Some("7")
        );
        assert_eq!(
            attr(span, "messaging.rabbitmq.message.redelivered").as_deref(),
            Some("false")
        );
        assert_eq!(
            attr(span, "messaging.message.body.size").as_deref(),
            Some("2")
        );
        assert_eq!(
            attr(span, "messaging.rabbitmq.outcome").as_deref(),
            Some("ack")
        );
    }

    #[test]
    fn consume_ok_names_a_broker_chosen_consumer() {
        let mut sim = open("{}", false);
        consume(&mut sim, "orders.q", "", false);
        let ok = Method::BasicConsumeOk {
            consumer_tag: "amq.ctag-1".into(),
        };
        sim.broker(&method(1, ok));
        sim.broker(&deliver("amq.ctag-1", 1, &Properties::default(), b"{}"));
        sim.broker(&deliver("unknown", 2, &Properties::default(), b"{}"));
        sim.client(&ack(1), false);
        sim.client(&ack(2), false);
        // Without a known consumer the span is named after the routing key.
        assert_eq!(
            names(&sim.spans),
            ["process orders.q", "process order.submitted"]
        );
    }

    #[test]
    fn an_auto_acked_delivery_ends_at_its_body() {
        let mut sim = open("{}", false);
        consume(&mut sim, "q", "c1", true);
        sim.broker(&deliver("c1", 1, &Properties::default(), b"{}"));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["process q"]);
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.outcome").as_deref(),
            Some("auto_ack")
        );
        assert_eq!(spans[0].status, StatusCode::Unset);
    }

    #[test]
    fn get_ok_answers_the_oldest_get_not_emptied() {
        let mut sim = open("{}", false);
        for (queue, no_ack) in [("first", true), ("second", false)] {
            let get = Method::BasicGet {
                queue: queue.into(),
                no_ack,
            };
            sim.client(&method(1, get), false);
        }
        sim.broker(&method(1, Method::BasicGetEmpty));
        let get_ok = Method::BasicGetOk {
            delivery_tag: 3,
            redelivered: true,
            exchange: "".into(),
            routing_key: "second".into(),
            message_count: 0,
        };
        sim.broker(&content(1, get_ok, &Properties::default(), b"x"));
        assert!(sim.spans.is_empty(), "the second get is not auto-acked");
        sim.client(&ack(3), false);
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["process second"]);
        assert_eq!(
            attr(&spans[0], "messaging.operation.name").as_deref(),
            Some("get")
        );
        assert_eq!(
            attr(&spans[0], "messaging.destination_publish.name").as_deref(),
            Some("amq.default")
        );
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.message.redelivered").as_deref(),
            Some("true")
        );
    }

    #[test]
    fn latency_comes_from_the_producer_span_seen_here_else_from_the_timestamp() {
        let mut sim = open("{}", false);
        consume(&mut sim, "q", "c1", true);
        sim.client(
            &publish("orders", "k", &headers(&[("traceparent", TP)]), b"x"),
            false,
        );
        sim.advance_ms(7);
        sim.broker(&deliver("c1", 1, &headers(&[("traceparent", TP)]), b"x"));
        let now_s = sim.now_ns / 1_000_000_000;
        let stamped = Properties {
            timestamp: Some(now_s - 2),
            ..Properties::default()
        };
        sim.broker(&deliver("c1", 2, &stamped, b"x"));
        sim.broker(&deliver("c1", 3, &Properties::default(), b"x"));
        let spans = sim.take_spans();
        assert_eq!(
            names(&spans),
            ["publish orders", "process q", "process q", "process q"]
        );
        let latency = |i: usize| {
            (
                attr(&spans[i], "messaging.rabbitmq.delivery_latency_ms"),
                attr(&spans[i], "messaging.rabbitmq.delivery_latency_source"),
            )
        };
        assert_eq!(latency(1), (Some("7".into()), Some("producer_span".into())));
        let (ms, source) = latency(2);
        let ms: u64 = ms.unwrap().parse().unwrap();
        assert!((2000..3000).contains(&ms), "{ms}");
        assert_eq!(source.as_deref(), Some("timestamp"));
        assert_eq!(latency(3), (None, None));
    }

    #[test]
    fn a_malformed_traceparent_on_a_delivery_is_counted_and_not_linked() {
        let mut sim = open("{}", false);
        consume(&mut sim, "q", "c1", true);
        sim.broker(&deliver(
            "c1",
            1,
            &headers(&[("traceparent", "00-bad")]),
            b"x",
        ));
        assert_eq!(sim.counters.traceparent_malformed, 1);
        assert!(sim.spans[0].links.is_empty());
    }

    #[test]
    fn a_consumer_cancelled_by_the_broker_is_an_error_span_naming_its_queue() {
        let mut sim = open("{}", false);
        consume(&mut sim, "orders.q", "c1", false);
        let cancel = Method::BasicCancel {
            consumer_tag: "c1".into(),
        };
        sim.broker(&method(1, cancel.clone()));
        // Cancelled again (unknown by now): no queue to name.
        sim.broker(&method(1, cancel));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["cancel orders.q", "cancel"]);
        assert_eq!(spans[0].status, StatusCode::Error);
        assert_eq!(
            attr(&spans[0], "error.type").as_deref(),
            Some("consumer_cancelled")
        );
        assert_eq!(
            attr(&spans[0], "messaging.destination.name").as_deref(),
            Some("orders.q")
        );
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.consumer_tag").as_deref(),
            Some("c1")
        );
        assert_eq!(attr(&spans[1], "messaging.destination.name"), None);
    }

    #[test]
    fn a_consumer_cancelled_by_the_client_is_forgotten() {
        let mut sim = open("{}", false);
        consume(&mut sim, "orders.q", "c1", true);
        let cancel = Method::BasicCancel {
            consumer_tag: "c1".into(),
        };
        sim.client(&method(1, cancel), false);
        sim.broker(&deliver("c1", 1, &Properties::default(), b"x"));
        sim.client(&ack(1), false);
        // Not auto-acked any more (the consumer is unknown), named after the routing key.
        assert_eq!(names(&sim.spans), ["process order.submitted"]);
        assert_eq!(
            attr(&sim.spans[0], "messaging.rabbitmq.outcome").as_deref(),
            Some("ack")
        );
    }
}
