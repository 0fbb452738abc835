//! Building the AMQP spans: a message in flight ([`Msg`]) collects its attributes while its frames pass, and
//! becomes a [`SpanRecord`] when its outcome is known. Also the rule engine for messages (order id, status
//! and named attributes from headers, properties, routing key or the JSON body) and the per-worker memory of
//! recent publishes used for publish→deliver latency.

use std::collections::{HashMap, VecDeque};

use crate::config::{AmqpRule, AmqpSource, Property};
use crate::frame::Properties;
use ordertrace::jsonscan;
use ordertrace::order::{attrs, StatusMark};
use ordertrace::otlp::{AttrValue, EventRecord, Kind, LinkRecord, SpanRecord, StatusCode};
pub use ordertrace::text::cut;
use ordertrace::tracecontext::{SpanId, TraceId, TraceParent, FLAG_SAMPLED};

/// Counters of the AMQP side (flushed with the filter's other counters; Envoy names them
/// `wasmcustom.ordertrace_amqp_<name>`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AmqpCounters {
    /// Connections seen by the network filter.
    pub connections: u64,
    /// Connections the decoder gave up on (TLS, AMQP 1.0, garbage, limits); passed through untouched.
    pub passthrough: u64,
    /// `traceparent` headers added to published messages.
    pub injected: u64,
    /// Messages that had no `traceparent` but could not get one (frame split beyond the hold limit, frame-max,
    /// unreadable properties).
    pub inject_skipped: u64,
    /// Publishes whose confirm never came (connection or channel closed first).
    pub unconfirmed: u64,
    /// Deliveries the consumer gave back with requeue (nack/reject/recover): retries.
    pub requeues: u64,
    /// Frames that were well delimited but could not be read (malformed method or properties).
    pub decode_errors: u64,
    /// Publishes/deliveries not tracked because `max_pending` was reached.
    pub pending_overflow: u64,
}

/// Counter names in a fixed order (for the glue's metric definitions).
pub const AMQP_COUNTER_NAMES: [&str; 8] = [
    "ordertrace_amqp_connections",
    "ordertrace_amqp_passthrough",
    "ordertrace_amqp_injected",
    "ordertrace_amqp_inject_skipped",
    "ordertrace_amqp_unconfirmed",
    "ordertrace_amqp_requeues",
    "ordertrace_amqp_decode_errors",
    "ordertrace_amqp_pending_overflow",
];

impl AmqpCounters {
    /// Values in the order of [`AMQP_COUNTER_NAMES`].
    pub fn values(&self) -> [u64; 8] {
        [
            self.connections,
            self.passthrough,
            self.injected,
            self.inject_skipped,
            self.unconfirmed,
            self.requeues,
            self.decode_errors,
            self.pending_overflow,
        ]
    }
}

/// Recent producer contexts seen by this worker: the span id a message carries in its `traceparent`
/// (ours when injected) → when it was published. Bounded; the oldest entries go first.
#[derive(Debug)]
pub struct PublishMemory {
    at: HashMap<[u8; 8], u64>,
    order: VecDeque<[u8; 8]>,
    cap: usize,
}

impl Default for PublishMemory {
    fn default() -> Self {
        PublishMemory::new(4096)
    }
}

impl PublishMemory {
    pub fn new(cap: usize) -> Self {
        PublishMemory {
            at: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn remember(&mut self, span: SpanId, published_ns: u64) {
        if self.at.insert(span.0, published_ns).is_none() {
            self.order.push_back(span.0);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }

    pub fn published_at(&self, span: &SpanId) -> Option<u64> {
        self.at.get(&span.0).copied()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The name of an AMQP reply code (0-9-1 §1.9 constants), used as `error.type`.
pub fn reply_code_name(code: u16) -> String {
    let name = match code {
        200 => "REPLY_SUCCESS",
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        other => return other.to_string(),
    };
    name.to_string()
}

/// `class.method` for the ids a close names as its cause.
pub fn method_name(class_id: u16, method_id: u16) -> String {
    let name = match (class_id, method_id) {
        (10, 40) => "connection.open",
        (20, 10) => "channel.open",
        (40, 10) => "exchange.declare",
        (40, 20) => "exchange.delete",
        (40, 30) => "exchange.bind",
        (50, 10) => "queue.declare",
        (50, 20) => "queue.bind",
        (50, 30) => "queue.purge",
        (50, 40) => "queue.delete",
        (60, 10) => "basic.qos",
        (60, 20) => "basic.consume",
        (60, 40) => "basic.publish",
        (60, 70) => "basic.get",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (90, 10) => "tx.select",
        (90, 20) => "tx.commit",
        (90, 30) => "tx.rollback",
        _ => return format!("{class_id}.{method_id}"),
    };
    name.to_string()
}

/// How a message's span ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed, acknowledged, or ended without a confirm to wait for.
    Ok,
    /// Failed: `error.type` and a status message.
    Error { kind: String, message: String },
}

/// A message whose span is in progress.
#[derive(Debug, Clone)]
pub struct Msg {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub flags: u8,
    pub link: Option<TraceParent>,
    pub name: String,
    pub kind: Kind,
    pub start_ns: u64,
    pub attributes: Vec<(String, AttrValue)>,
    pub events: Vec<EventRecord>,
    pub order_id: Option<String>,
    pub status: Option<String>,
    /// An error already known before the outcome (e.g. the message was returned as unroutable).
    pub error: Option<(String, String)>,
}

impl Msg {
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    pub fn attr(&mut self, key: &str, value: AttrValue) {
        self.attributes.push((key.to_string(), value));
    }

    pub fn str_attr(&mut self, key: &str, value: &str) {
        self.attr(key, AttrValue::Str(cut(value.to_string())));
    }

    pub fn event(&mut self, name: &str, time_ns: u64, attributes: Vec<(String, AttrValue)>) {
        // Bounded: a span collects at most 32 events.
        if self.events.len() < 32 {
            self.events.push(EventRecord {
                name: name.to_string(),
                time_ns,
                attributes,
            });
        }
    }

    /// The context this message's span gives to what follows it.
    pub fn context(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: self.span_id,
            flags: self.flags,
        }
    }

    /// Ends the span; `None` when it is not sampled.
    pub fn finish(mut self, end_ns: u64, outcome: Outcome) -> Option<SpanRecord> {
        if !self.sampled() {
            return None;
        }
        let outcome = match (outcome, self.error.take()) {
            (Outcome::Ok, Some((kind, message))) => Outcome::Error { kind, message },
            (o, _) => o,
        };
        let mut attributes = std::mem::take(&mut self.attributes);
        if let Some(id) = &self.order_id {
            attributes.push((attrs::ORDER_ID.into(), AttrValue::Str(id.clone())));
        }
        let mut events = std::mem::take(&mut self.events);
        if let Some(status) = self.status.take() {
            StatusMark::of(outcome == Outcome::Ok).apply(
                status,
                end_ns,
                &mut attributes,
                &mut events,
            );
        }
        let (status, status_message) = match outcome {
            Outcome::Ok => (StatusCode::Unset, String::new()),
            Outcome::Error { kind, message } => {
                attributes.push(("error.type".into(), AttrValue::Str(kind)));
                (StatusCode::Error, cut(message))
            }
        };
        let links = self
            .link
            .map(|tp| {
                vec![LinkRecord {
                    trace_id: tp.trace_id,
                    span_id: tp.parent_id,
                    flags: tp.flags,
                    attributes: vec![("ordertrace.link".into(), AttrValue::Str("producer".into()))],
                }]
            })
            .unwrap_or_default();
        Some(SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent,
            trace_flags: self.flags,
            name: self.name,
            kind: self.kind,
            start_ns: self.start_ns,
            end_ns: end_ns.max(self.start_ns),
            attributes,
            events,
            links,
            status,
            status_message,
        })
    }
}

/// What a rule resolved to for one message.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolved {
    pub order_id: Option<String>,
    pub status: Option<String>,
    pub attributes: Vec<(String, String)>,
}

/// Applies a rule to a message: its properties, routing key and body prefix (scanned only when the rule
/// has body pointers).
pub fn resolve(
    rule: &AmqpRule,
    props: Option<&Properties>,
    routing_key: &str,
    body: &[u8],
) -> Resolved {
    let body_values: Vec<Option<String>> = if rule.pointers.is_empty() || body.is_empty() {
        vec![None; rule.pointers.len()]
    } else {
        let refs: Vec<&jsonscan::JsonPointer> = rule.pointers.iter().collect();
        jsonscan::scan(body, &refs)
    };
    let get = |s: &AmqpSource| -> Option<String> {
        let v = match s {
            AmqpSource::Literal(l) => Some(l.clone()),
            AmqpSource::Header(h) => props
                .and_then(|p| p.headers.as_ref())
                .and_then(|t| t.get(h))
                .and_then(|v| v.as_text()),
            AmqpSource::Property(p) => props.and_then(|props| property(props, *p)),
            AmqpSource::Body(i) => body_values.get(*i).cloned().flatten(),
            AmqpSource::RoutingKeyWord(i) => routing_key.split('.').nth(*i).map(str::to_string),
        };
        v.filter(|v| !v.is_empty()).map(cut)
    };
    Resolved {
        order_id: rule.order_id.as_ref().and_then(&get),
        status: rule.status.as_ref().and_then(&get),
        attributes: rule
            .attributes
            .iter()
            .filter_map(|(k, s)| get(s).map(|v| (k.clone(), v)))
            .collect(),
    }
}

fn property(p: &Properties, which: Property) -> Option<String> {
    match which {
        Property::MessageId => p.message_id.clone(),
        Property::CorrelationId => p.correlation_id.clone(),
        Property::Type => p.kind.clone(),
        Property::AppId => p.app_id.clone(),
        Property::UserId => p.user_id.clone(),
        Property::ReplyTo => p.reply_to.clone(),
        Property::ContentType => p.content_type.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Amqp;
    use crate::table::{FieldValue, Table};

    #[test]
    fn memory_is_bounded() {
        let mut m = PublishMemory::new(3);
        for i in 0..5u8 {
            m.remember(SpanId([i + 1; 8]), u64::from(i));
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.published_at(&SpanId([1; 8])), None);
        assert_eq!(m.published_at(&SpanId([5; 8])), Some(4));
    }

    #[test]
    fn rules_read_every_source() {
        let a = Amqp::from_json(
            br#"{"rules":[{"order_id":{"header":"x-order-id"},"status":{"body":"/status"},
               "attributes":{"a.msg":{"property":"message_id"},"a.word":{"routing_key_word":1},
                             "a.num":{"header":"x-count"},"a.lit":"fixed","a.missing":{"header":"nope"}}}]}"#,
        )
        .unwrap();
        let props = Properties {
            message_id: Some("m-1".into()),
            headers: Some(Table(vec![
                ("x-order-id".into(), FieldValue::LongStr(b"ORD-9".to_vec())),
                ("x-count".into(), FieldValue::I32(42)),
            ])),
            ..Properties::default()
        };
        let r = resolve(
            &a.rules[0],
            Some(&props),
            "order.ORD-9.status",
            br#"{"status":"PACKAGING"}"#,
        );
        assert_eq!(r.order_id.as_deref(), Some("ORD-9"));
        assert_eq!(r.status.as_deref(), Some("PACKAGING"));
        assert_eq!(
            r.attributes,
            vec![
                ("a.lit".to_string(), "fixed".to_string()),
                ("a.msg".to_string(), "m-1".to_string()),
                ("a.num".to_string(), "42".to_string()),
                ("a.word".to_string(), "ORD-9".to_string()),
            ]
        );
        // No properties, no body: only literals and the routing key remain.
        let r = resolve(&a.rules[0], None, "x", b"");
        assert_eq!(r.order_id, None);
        assert_eq!(
            r.attributes,
            vec![("a.lit".to_string(), "fixed".to_string())]
        );
    }

    #[test]
    fn reply_codes_have_names() {
        assert_eq!(reply_code_name(404), "NOT_FOUND");
        assert_eq!(reply_code_name(320), "CONNECTION_FORCED");
        assert_eq!(reply_code_name(999), "999");
        assert_eq!(method_name(60, 40), "basic.publish");
    }
}
