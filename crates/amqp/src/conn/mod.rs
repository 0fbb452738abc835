//! One proxied AMQP 0-9-1 connection: both directions decoded, the per-channel state that turns frames into
//! spans, and the one rewrite (adding `traceparent` to a published message's headers).
//!
//! ## How the glue drives it (Envoy network filter semantics)
//! - [`Connection::client_data`] is called from `on_downstream_data` with the *whole* current downstream
//!   buffer. Envoy keeps the buffer of a read filter that returned `StopIteration` (proxy-wasm
//!   `Action::Pause`) and calls it again, when more bytes arrive, with the old bytes followed by the new
//!   ones. The connection remembers how many bytes at the head of the buffer it has already decoded
//!   (`held`), so each byte is decoded once.
//! - It returns a [`Verdict`]: `replace` is the new content of the whole buffer when a content-header frame
//!   was rewritten (Envoy's `set_buffer` on network data only supports replacing from offset 0 or
//!   appending, so the glue replaces `[0, len)`); `flow` is `Pause` only while a content-header frame is
//!   incomplete at the end of the buffer and `inject` is on — the frame must be whole before it can be
//!   rewritten, and the bytes before it must not leave ahead of it. Holding is bounded by [`MAX_HOLD_BYTES`]:
//!   past it, the buffer goes on unmodified and the message is counted in `inject_skipped`.
//! - [`Connection::broker_data`] is called from `on_upstream_data`; upstream data is only observed.
//! - [`Connection::close`] when either side closes: whatever is still waiting ends (unconfirmed publishes
//!   as errors).
//!
//! A stream the decoder cannot follow (TLS, AMQP 1.0, garbage, a frame over the limit) makes the
//! connection pass through untouched from that byte on, counted in `passthrough`.
//!
//! ## Where things are
//! - this module: the [`Connection`] type and its API, the buffer bookkeeping of the client direction
//!   (held bytes, frame rewrites), the dispatch of decoded events, and what belongs to the connection or
//!   a channel as a whole (tune, open, close, blocked);
//! - `publish`: client publishes — the producer span, the `traceparent` injection, and the publish
//!   waiting for its confirm or transaction;
//! - `deliver`: what the client consumes — consumers and `basic.get`, deliveries and `get-ok`s from the
//!   broker and their consumer spans;
//! - `settle`: how waiting publishes and deliveries end — acks, nacks, rejects and recovers, confirms,
//!   returns, transactions, and what a closing channel or connection still held.

mod deliver;
mod publish;
mod settle;
#[cfg(test)]
mod testkit;

use std::collections::{BTreeMap, VecDeque};

use crate::config::{Amqp, MessageKey};
use crate::decoder::{Decoder, Direction, Event, FrameSpan, GiveUp, Limits};
use crate::frame::{Close, Method, Properties, FRAME_END, FRAME_HEADER};
use crate::spans::{
    method_name, reply_code_name, resolve, AmqpCounters, Msg, Outcome, PublishMemory,
};
use ordertrace::host::RandomSource;
use ordertrace::ids::IdGenerator;
use ordertrace::metrics::Counters;
use ordertrace::otlp::{AttrValue, Kind, SpanRecord};
use ordertrace::tracecontext::{sampling_decision, TraceParent};

use self::deliver::Delivery;
use self::publish::{Publish, PublishStart};
use self::settle::{Returned, Settle};

/// The most client bytes held back (`Action::Pause`) while waiting for the rest of a content-header frame.
/// Envoy stops reading a connection whose buffer passes `per_connection_buffer_limit_bytes` (default
/// 1 MiB), so this must stay well below that limit.
pub const MAX_HOLD_BYTES: usize = 256 * 1024;

/// Channels with span state per connection; further channels are not traced.
pub const MAX_TRACED_CHANNELS: usize = 2048;

const TRACEPARENT: &str = "traceparent";

/// What the worker lends a connection for one callback.
pub struct Env<'a, R: RandomSource> {
    pub config: &'a Amqp,
    pub sampling_ratio: f64,
    pub ids: &'a mut IdGenerator<R>,
    pub counters: &'a mut Counters,
    pub amqp: &'a mut AmqpCounters,
    pub memory: &'a mut PublishMemory,
    pub now_ns: u64,
    /// Finished spans, to be redacted, encoded and queued by the caller.
    pub spans: &'a mut Vec<SpanRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub flow: Flow,
    /// The new content of the whole buffer (`[0, len)` of the buffer passed in), when something was rewritten.
    pub replace: Option<Vec<u8>>,
}

impl Verdict {
    fn pass() -> Verdict {
        Verdict {
            flow: Flow::Continue,
            replace: None,
        }
    }
}

/// What the connection follows on one channel.
#[derive(Default)]
struct Channel {
    confirm: bool,
    /// `tx.select` was sent: publishes wait for `tx.commit-ok` / `tx.rollback-ok` (in `unconfirmed`).
    tx: bool,
    /// Commits and rollbacks sent: the last number given out, and those awaiting their `-ok` (number,
    /// true for a commit).
    tx_sent: u64,
    tx_waiting: VecDeque<(u64, bool)>,
    publish_seq: u64,
    publishing: Option<Publish>,
    unconfirmed: VecDeque<Publish>,
    last_publish: Option<TraceParent>,
    receiving: Option<Delivery>,
    returning: Option<Returned>,
    unacked: VecDeque<Delivery>,
    /// consumer tag → (queue, no_ack)
    consumers: BTreeMap<String, (String, bool)>,
    pending_consume: VecDeque<(String, String, bool)>,
    pending_get: VecDeque<(String, bool)>,
    closing: bool,
}

/// Where the bytes of the current client buffer are, relative to the decoder's stream positions.
struct EditCtx {
    /// Buffer offset of the first byte fed in this call.
    held: usize,
    /// Decoder stream position of that byte.
    fed_before: u64,
    buf_len: usize,
    edits: Vec<(usize, usize, Vec<u8>)>,
}

impl EditCtx {
    /// Records a replacement for the whole frame at `frame`; false if it is not inside the buffer.
    fn replace(&mut self, frame: FrameSpan, bytes: Vec<u8>, buf: &[u8]) -> bool {
        let Some(start) = (self.held as u64 + frame.start).checked_sub(self.fed_before) else {
            return false;
        };
        let Ok(start) = usize::try_from(start) else {
            return false;
        };
        let Ok(len) = usize::try_from(frame.end.saturating_sub(frame.start)) else {
            return false;
        };
        let end = start.saturating_add(len);
        if end > self.buf_len {
            return false;
        }
        // The frame must be where the positions say (type octet first, frame-end octet last).
        let looks_right = buf.get(start) == Some(&FRAME_HEADER)
            && end
                .checked_sub(1)
                .and_then(|i| buf.get(i))
                .is_some_and(|b| *b == FRAME_END);
        if !looks_right {
            return false;
        }
        self.edits.push((start, end, bytes));
        true
    }
}

/// One proxied connection.
pub struct Connection {
    client: Decoder,
    broker: Decoder,
    passthrough: bool,
    counted: bool,
    closed: bool,
    held: usize,
    frame_max: u32,
    vhost: Option<String>,
    channels: BTreeMap<u16, Channel>,
    blocked: Option<Msg>,
    blocked_reason: Option<String>,
}

impl Default for Connection {
    fn default() -> Self {
        Connection::new()
    }
}

fn destination(exchange: &str) -> &str {
    if exchange.is_empty() {
        "amq.default"
    } else {
        exchange
    }
}

fn header_traceparent(props: Option<&Properties>) -> Option<&[u8]> {
    props
        .and_then(|p| p.headers.as_ref())
        .and_then(|t| t.get(TRACEPARENT))
        .and_then(|v| v.as_bytes())
}

fn new_flags(ratio: f64, trace_id: &ordertrace::tracecontext::TraceId) -> u8 {
    u8::from(sampling_decision(ratio, trace_id))
}

/// A count or size as a span attribute (saturating at `i64::MAX`).
fn int_attr(v: u64) -> AttrValue {
    AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Connection {
    pub fn new() -> Self {
        Connection {
            client: Decoder::new(Direction::Client),
            broker: Decoder::new(Direction::Broker),
            passthrough: false,
            counted: false,
            closed: false,
            held: 0,
            frame_max: 0,
            vhost: None,
            channels: BTreeMap::new(),
            blocked: None,
            blocked_reason: None,
        }
    }

    /// False once the connection is passed through (or closed): the glue need not read its data anymore.
    pub fn wants_data(&self) -> bool {
        !self.passthrough && !self.closed
    }

    pub fn is_passthrough(&self) -> bool {
        self.passthrough
    }

    fn limits<R: RandomSource>(env: &Env<'_, R>) -> Limits {
        Limits {
            max_frame: env.config.max_frame_bytes,
            capture: env.config.capture_bytes,
        }
    }

    fn count<R: RandomSource>(&mut self, env: &mut Env<'_, R>) {
        if !self.counted {
            self.counted = true;
            env.amqp.connections += 1;
        }
    }

    /// Client → broker bytes: `buf` is Envoy's whole downstream buffer for this callback.
    pub fn client_data<R: RandomSource>(
        &mut self,
        buf: &[u8],
        end_of_stream: bool,
        env: &mut Env<'_, R>,
    ) -> Verdict {
        self.count(env);
        if !self.wants_data() {
            self.held = 0;
            return Verdict::pass();
        }
        let Some(new) = buf.get(self.held..) else {
            self.held = 0;
            self.give_up(GiveUp::Resync, env);
            return Verdict::pass();
        };
        let mut ctx = EditCtx {
            held: self.held,
            fed_before: self.client.position(),
            buf_len: buf.len(),
            edits: Vec::new(),
        };
        let mut events = Vec::new();
        let limits = Self::limits(env);
        self.client.feed(new, &limits, &mut events);
        for ev in events {
            self.on_client_event(ev, env, &mut ctx, buf);
            if self.passthrough {
                break;
            }
        }
        let replace = if ctx.edits.is_empty() {
            None
        } else {
            Some(apply_edits(buf, &ctx.edits))
        };
        let len = replace.as_ref().map_or(buf.len(), Vec::len);
        let hold = env.config.inject
            && !self.passthrough
            && !end_of_stream
            && self.client.inside_header_frame();
        if hold && len <= MAX_HOLD_BYTES {
            self.held = len;
            Verdict {
                flow: Flow::Pause,
                replace,
            }
        } else {
            self.held = 0;
            Verdict {
                flow: Flow::Continue,
                replace,
            }
        }
    }

    /// Broker → client bytes (observed only): `buf` is the new upstream data.
    pub fn broker_data<R: RandomSource>(&mut self, buf: &[u8], env: &mut Env<'_, R>) {
        self.count(env);
        if !self.wants_data() {
            return;
        }
        let mut events = Vec::new();
        let limits = Self::limits(env);
        self.broker.feed(buf, &limits, &mut events);
        for ev in events {
            self.on_broker_event(ev, env);
            if self.passthrough {
                break;
            }
        }
    }

    /// Either side closed the TCP connection: everything still waiting ends now.
    pub fn close<R: RandomSource>(&mut self, env: &mut Env<'_, R>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.finish_all(env, "connection closed before the outcome was known");
    }

    /// The host could not read or write the buffer: stop decoding and pass the connection through.
    pub fn abandon<R: RandomSource>(&mut self, env: &mut Env<'_, R>) {
        self.give_up(GiveUp::Resync, env);
    }

    fn give_up<R: RandomSource>(&mut self, why: GiveUp, env: &mut Env<'_, R>) {
        if self.passthrough {
            return;
        }
        self.passthrough = true;
        self.client.stop();
        self.broker.stop();
        env.amqp.passthrough += 1;
        // What was in flight cannot be followed any further; end it without claiming an outcome.
        let channels = std::mem::take(&mut self.channels);
        for (_, ch) in channels {
            settle::give_up_channel(ch, env, why);
        }
        self.end_blocked(env);
    }

    fn channel(&mut self, id: u16) -> Option<&mut Channel> {
        if !self.channels.contains_key(&id) && self.channels.len() >= MAX_TRACED_CHANNELS {
            return None;
        }
        Some(self.channels.entry(id).or_default())
    }

    // -----------------------------------------------------------------------------------------
    // Client → broker

    fn on_client_event<R: RandomSource>(
        &mut self,
        ev: Event,
        env: &mut Env<'_, R>,
        ctx: &mut EditCtx,
        buf: &[u8],
    ) {
        match ev {
            Event::ProtocolHeader | Event::Heartbeat => {}
            Event::GaveUp(why) => self.give_up(why, env),
            Event::MalformedMethod { .. } => env.amqp.decode_errors += 1,
            Event::Method { channel, method } => self.on_client_method(channel, method, env),
            Event::Header {
                channel,
                method,
                header,
                frame,
                payload,
            } => {
                if header.is_err() {
                    env.amqp.decode_errors += 1;
                }
                if let Some(Method::BasicPublish {
                    exchange,
                    routing_key,
                    mandatory,
                    ..
                }) = method
                {
                    let p = PublishStart {
                        channel,
                        exchange,
                        routing_key,
                        mandatory,
                        header,
                        frame,
                        payload,
                    };
                    self.on_publish_header(p, env, ctx, buf);
                }
            }
            Event::Body {
                channel,
                prefix,
                body_size,
            } => self.on_publish_body(channel, &prefix, body_size, env),
        }
    }

    fn on_client_method<R: RandomSource>(
        &mut self,
        channel: u16,
        method: Method,
        env: &mut Env<'_, R>,
    ) {
        match method {
            Method::ConnectionTuneOk { frame_max, .. } => {
                self.frame_max = frame_max;
                self.broker.set_frame_max(frame_max);
            }
            Method::ConnectionOpen { vhost } => self.vhost = Some(vhost),
            Method::ConnectionClose(_) => self.finish_all(
                env,
                "connection closed by the client before the outcome was known",
            ),
            Method::ChannelOpen => {
                if let Some(ch) = self.channel(channel) {
                    *ch = Channel::default();
                }
            }
            Method::ChannelClose(_) => self.channel_close_sent(channel, env),
            Method::ConfirmSelect { .. } => {
                if let Some(ch) = self.channel(channel) {
                    ch.confirm = true;
                }
            }
            Method::TxSelect => {
                if let Some(ch) = self.channel(channel) {
                    ch.tx = true;
                }
            }
            Method::TxCommit => self.tx_end_sent(channel, true),
            Method::TxRollback => self.tx_end_sent(channel, false),
            Method::BasicCancel { consumer_tag } => self.cancel_sent(channel, &consumer_tag),
            Method::BasicConsume {
                queue,
                consumer_tag,
                no_ack,
            } => self.consume_sent(channel, queue, consumer_tag, no_ack),
            Method::BasicGet { queue, no_ack } => self.get_sent(channel, queue, no_ack),
            Method::BasicAck {
                delivery_tag,
                multiple,
            } => self.settle(channel, delivery_tag, multiple, Settle::Ack, env),
            Method::BasicNack {
                delivery_tag,
                multiple,
                requeue,
            } => self.settle(channel, delivery_tag, multiple, Settle::Nack(requeue), env),
            Method::BasicReject {
                delivery_tag,
                requeue,
            } => self.settle(channel, delivery_tag, false, Settle::Reject(requeue), env),
            Method::BasicRecover { requeue } | Method::BasicRecoverAsync { requeue } => {
                self.settle(channel, 0, true, Settle::Recover(requeue), env)
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------------------------
    // Broker → client

    fn on_broker_event<R: RandomSource>(&mut self, ev: Event, env: &mut Env<'_, R>) {
        match ev {
            Event::ProtocolHeader | Event::Heartbeat => {}
            Event::GaveUp(why) => self.give_up(why, env),
            Event::MalformedMethod { .. } => env.amqp.decode_errors += 1,
            Event::Method { channel, method } => self.on_broker_method(channel, method, env),
            Event::Header {
                channel,
                method,
                header,
                ..
            } => {
                if header.is_err() {
                    env.amqp.decode_errors += 1;
                }
                let props = header.ok().map(|h| h.properties);
                match method {
                    Some(Method::BasicReturn {
                        reply_code,
                        reply_text,
                        exchange,
                        routing_key,
                    }) => {
                        let r = Returned {
                            reply_code,
                            reply_text,
                            exchange,
                            routing_key,
                            props,
                        };
                        self.on_return_header(channel, r);
                    }
                    Some(method) => self.on_delivery_header(channel, method, props, env),
                    None => {}
                }
            }
            Event::Body {
                channel,
                prefix,
                body_size,
            } => self.on_broker_body(channel, &prefix, body_size, env),
        }
    }

    fn on_broker_method<R: RandomSource>(
        &mut self,
        channel: u16,
        method: Method,
        env: &mut Env<'_, R>,
    ) {
        match method {
            Method::ConnectionClose(close) => self.connection_closed_by_broker(&close, env),
            Method::ConnectionBlocked { reason } => self.blocked(reason, env),
            Method::ConnectionUnblocked => {
                self.end_blocked(env);
                self.blocked_reason = None;
            }
            Method::ChannelClose(close) => self.channel_closed_by_broker(channel, &close, env),
            Method::ChannelCloseOk => self.channel_close_ok(channel, env),
            Method::BasicConsumeOk { consumer_tag } => self.consume_ok(channel, consumer_tag),
            Method::BasicGetEmpty => self.get_empty(channel),
            Method::TxCommitOk | Method::TxRollbackOk => self.tx_done(channel, env),
            Method::BasicCancel { consumer_tag } => {
                self.consumer_cancelled(channel, consumer_tag, env)
            }
            Method::BasicAck {
                delivery_tag,
                multiple,
            } => self.confirm(channel, delivery_tag, multiple, true, env),
            Method::BasicNack {
                delivery_tag,
                multiple,
                ..
            } => self.confirm(channel, delivery_tag, multiple, false, env),
            _ => {}
        }
    }

    /// A body from the broker completes a returned message, else a delivery.
    fn on_broker_body<R: RandomSource>(
        &mut self,
        channel: u16,
        prefix: &[u8],
        body_size: u64,
        env: &mut Env<'_, R>,
    ) {
        let returning = self
            .channels
            .get_mut(&channel)
            .and_then(|ch| ch.returning.take());
        if let Some(r) = returning {
            self.on_return(channel, r, prefix, body_size, env);
            return;
        }
        self.on_delivery_body(channel, prefix, body_size, env);
    }

    // -----------------------------------------------------------------------------------------
    // The connection and its channels as a whole

    /// `connection.close` from the broker: an error span unless it is a normal close (200), then
    /// everything still waiting ends.
    fn connection_closed_by_broker<R: RandomSource>(
        &mut self,
        close: &Close,
        env: &mut Env<'_, R>,
    ) {
        if close.reply_code != 200 {
            let m = self.standalone("connection.close", None, env);
            push(env, close_span(m, close, env.now_ns));
        }
        let why = format!(
            "connection closed by the broker ({} {}) before the outcome was known",
            close.reply_code, close.reply_text
        );
        self.finish_all(env, &why);
    }

    /// `channel.close` from the broker: an error span unless it is a normal close (200) — a child of the
    /// channel's last publish when a `basic.publish` caused it — then the channel's waiting messages end.
    fn channel_closed_by_broker<R: RandomSource>(
        &mut self,
        channel: u16,
        close: &Close,
        env: &mut Env<'_, R>,
    ) {
        let last = self.channels.get(&channel).and_then(|c| c.last_publish);
        if close.reply_code != 200 {
            let caused_by_publish = (close.class_id, close.method_id) == (60, 40);
            let parent = if caused_by_publish { last } else { None };
            let m = self.standalone("channel.close", parent, env);
            push(env, close_span(m, close, env.now_ns));
        }
        if let Some(ch) = self.channels.remove(&channel) {
            let kind = reply_code_name(close.reply_code);
            let why = format!(
                "channel closed by the broker ({} {}) before the outcome was known",
                close.reply_code, close.reply_text
            );
            settle::finish_channel(ch, env, &kind, &why);
        }
    }

    /// `channel.close-ok` from the broker (the client closed the channel): what is still waiting ends.
    fn channel_close_ok<R: RandomSource>(&mut self, channel: u16, env: &mut Env<'_, R>) {
        if let Some(ch) = self.channels.remove(&channel) {
            settle::finish_channel(
                ch,
                env,
                "unconfirmed",
                "channel closed before the broker confirmed the publish",
            );
        }
    }

    /// `connection.blocked`: one span for the whole blocked period (until `connection.unblocked`), and an
    /// event on every publish in flight; publishes that start while blocked get the event too.
    fn blocked<R: RandomSource>(&mut self, reason: String, env: &mut Env<'_, R>) {
        if self.blocked.is_none() {
            let mut m = self.standalone("connection.blocked", None, env);
            m.str_attr("messaging.rabbitmq.blocked.reason", &reason);
            self.blocked = Some(m);
        }
        let ev_attrs = vec![(
            "messaging.rabbitmq.blocked.reason".to_string(),
            AttrValue::Str(reason.clone()),
        )];
        for ch in self.channels.values_mut() {
            for p in ch.publishing.iter_mut().chain(ch.unconfirmed.iter_mut()) {
                p.msg.event(
                    "messaging.rabbitmq.connection.blocked",
                    env.now_ns,
                    ev_attrs.clone(),
                );
            }
        }
        self.blocked_reason = Some(reason);
    }

    /// Ends the blocked span, if one is open (the reason stays until the caller clears it).
    fn end_blocked<R: RandomSource>(&mut self, env: &mut Env<'_, R>) {
        if let Some(b) = self.blocked.take() {
            push(
                env,
                b.finish(env.now_ns, blocked_outcome(&self.blocked_reason)),
            );
        }
    }

    /// A span for a connection-level happening: a child of `parent` when given, else a new trace.
    fn standalone<R: RandomSource>(
        &self,
        name: &str,
        parent: Option<TraceParent>,
        env: &mut Env<'_, R>,
    ) -> Msg {
        let (trace_id, parent_id, flags) = match parent {
            Some(tp) => (tp.trace_id, Some(tp.parent_id), tp.flags),
            None => {
                let t = env.ids.trace_id();
                (t, None, new_flags(env.sampling_ratio, &t))
            }
        };
        let mut m = Msg {
            trace_id,
            span_id: env.ids.span_id(),
            parent: parent_id,
            flags,
            link: None,
            name: name.to_string(),
            kind: Kind::Internal,
            start_ns: env.now_ns,
            attributes: Vec::with_capacity(8),
            events: Vec::new(),
            order_id: None,
            status: None,
            error: None,
        };
        m.str_attr("messaging.system", "rabbitmq");
        if let Some(v) = &self.vhost {
            m.str_attr("messaging.rabbitmq.vhost", v);
        }
        m
    }

    /// Every channel ends what it still holds (publishes as `unconfirmed`), and the blocked span ends.
    fn finish_all<R: RandomSource>(&mut self, env: &mut Env<'_, R>, why: &str) {
        let channels = std::mem::take(&mut self.channels);
        for (_, ch) in channels {
            settle::finish_channel(ch, env, "unconfirmed", why);
        }
        self.end_blocked(env);
    }
}

fn blocked_outcome(reason: &Option<String>) -> Outcome {
    Outcome::Error {
        kind: "blocked".into(),
        message: reason
            .clone()
            .unwrap_or_else(|| "the broker blocked publishing".into()),
    }
}

/// The error span of a `connection.close` / `channel.close` with an error code.
fn close_span(mut m: Msg, close: &Close, now_ns: u64) -> Option<SpanRecord> {
    m.attr(
        "messaging.rabbitmq.reply_code",
        AttrValue::Int(i64::from(close.reply_code)),
    );
    m.str_attr("messaging.rabbitmq.reply_text", &close.reply_text);
    if close.class_id != 0 {
        m.str_attr(
            "messaging.rabbitmq.failed_method",
            &method_name(close.class_id, close.method_id),
        );
    }
    let outcome = Outcome::Error {
        kind: reply_code_name(close.reply_code),
        message: close.reply_text.clone(),
    };
    m.finish(now_ns, outcome)
}

fn message_attrs(m: &mut Msg, props: Option<&Properties>) {
    let Some(p) = props else { return };
    if let Some(id) = p.message_id.as_deref().filter(|s| !s.is_empty()) {
        m.str_attr("messaging.message.id", id);
    }
    if let Some(id) = p.correlation_id.as_deref().filter(|s| !s.is_empty()) {
        m.str_attr("messaging.message.conversation_id", id);
    }
}

fn apply_rule<R: RandomSource>(
    m: &mut Msg,
    env: &mut Env<'_, R>,
    key: &MessageKey<'_>,
    props: Option<&Properties>,
    prefix: &[u8],
    body_size: u64,
) {
    let Some(rule) = env.config.find_rule(key) else {
        return;
    };
    env.counters.rule_matches += 1;
    if rule.needs_body()
        && body_size > prefix.len() as u64
        && prefix.len() >= env.config.capture_bytes
    {
        env.counters.body_limit_hits += 1;
    }
    let r = resolve(rule, props, key.routing_key, prefix);
    m.order_id = r.order_id;
    m.status = r.status;
    for (k, v) in r.attributes {
        m.attr(&k, AttrValue::Str(v));
    }
}

fn push<R: RandomSource>(env: &mut Env<'_, R>, span: Option<SpanRecord>) {
    if let Some(s) = span {
        env.spans.push(s);
    }
}

/// `buf` with each `(start, end, bytes)` range replaced (ranges ascending and disjoint).
pub fn apply_edits(buf: &[u8], edits: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
    let grow: usize = edits.iter().map(|(_, _, b)| b.len()).sum();
    let mut out = Vec::with_capacity(buf.len() + grow);
    let mut at = 0usize;
    for (start, end, bytes) in edits {
        if *start < at || end < start {
            continue;
        }
        out.extend_from_slice(buf.get(at..*start).unwrap_or_default());
        out.extend_from_slice(bytes);
        at = *end;
    }
    out.extend_from_slice(buf.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::{apply_edits, Flow};
    use crate::frame::{Close, Method, Properties};
    use ordertrace::otlp::StatusCode;

    #[test]
    fn a_connection_is_counted_once_whichever_side_speaks_first() {
        let mut sim = open("{}", false);
        sim.broker(&method(0, Method::ConnectionOpenOk));
        sim.client(&method(1, Method::TxSelect), false);
        assert_eq!(sim.amqp.connections, 1);
        sim.reconnect();
        sim.broker(&method(0, Method::ConnectionOpenOk));
        assert_eq!(sim.amqp.connections, 2);
    }

    #[test]
    fn a_stream_it_cannot_follow_passes_through_and_what_was_in_flight_ends_unknown() {
        let mut sim = open("{}", true);
        sim.client(
            &publish("orders", "k", &Properties::default(), b"{}"),
            false,
        );
        assert!(sim.spans.is_empty(), "the publish waits for its confirm");
        // A frame whose frame-end octet is wrong: the decoder gives up.
        let mut bad = method(1, Method::TxSelect);
        *bad.last_mut().unwrap() = 0;
        sim.client(&bad, false);
        assert!(sim.conn.is_passthrough());
        assert!(!sim.conn.wants_data());
        assert_eq!(sim.amqp.passthrough, 1);
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish orders"]);
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.outcome").as_deref(),
            Some("unknown")
        );
        assert!(attr(&spans[0], "ordertrace.amqp.gave_up").is_some());
        assert_eq!(spans[0].status, StatusCode::Unset);
        // From then on, bytes go on untouched and nothing more is traced.
        let before = sim.upstream.len();
        let more = publish("orders", "k", &Properties::default(), b"{}");
        sim.client(&more, false);
        assert_eq!(&sim.upstream[before..], more.as_slice());
        sim.close();
        assert!(sim.spans.is_empty());
        assert_eq!(sim.amqp.passthrough, 1);
    }

    #[test]
    fn a_header_frame_cut_by_the_read_is_held_until_whole_then_rewritten() {
        let mut sim = open("{}", false);
        let bytes = publish("orders", "k", &Properties::default(), b"{}");
        let method_len = method(1, publish_method("orders", "k", false)).len();
        let (first, rest) = bytes.split_at(method_len + 5);
        let sent = sim.upstream.len();
        assert_eq!(sim.client(first, false), Flow::Pause);
        assert_eq!(
            sim.upstream.len(),
            sent,
            "nothing leaves ahead of the header frame"
        );
        assert_eq!(sim.client(rest, false), Flow::Continue);
        assert!(sim.held.is_empty());
        assert_eq!(sim.amqp.injected, 1);
        assert!(sim.upstream.len() > sent + bytes.len());
        assert_eq!(names(&sim.spans), ["publish orders"]);
    }

    #[test]
    fn nothing_is_held_with_inject_off_or_at_end_of_stream() {
        let bytes = publish("orders", "k", &Properties::default(), b"{}");
        let cut = method(1, publish_method("orders", "k", false)).len() + 5;
        let mut off = open(r#"{"inject":false}"#, false);
        assert_eq!(off.client(&bytes[..cut], false), Flow::Continue);
        let mut eos = open("{}", false);
        assert_eq!(eos.client(&bytes[..cut], true), Flow::Continue);
    }

    #[test]
    fn a_broker_channel_close_caused_by_a_publish_is_a_child_of_that_publish() {
        let mut sim = open("{}", true);
        sim.client(
            &publish("orders", "k", &Properties::default(), b"{}"),
            false,
        );
        let close = Close {
            reply_code: 404,
            reply_text: "NOT_FOUND - no exchange 'orders'".into(),
            class_id: 60,
            method_id: 40,
        };
        sim.broker(&method(1, Method::ChannelClose(close)));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["channel.close", "publish orders"]);
        let (closed, publish) = (&spans[0], &spans[1]);
        assert_eq!(closed.trace_id, publish.trace_id);
        assert_eq!(closed.parent_span_id, Some(publish.span_id));
        assert_eq!(
            attr(closed, "messaging.rabbitmq.reply_code").as_deref(),
            Some("404")
        );
        assert_eq!(
            attr(closed, "messaging.rabbitmq.failed_method").as_deref(),
            Some("basic.publish")
        );
        assert_eq!(attr(publish, "error.type").as_deref(), Some("NOT_FOUND"));
        assert_eq!(
            attr(publish, "messaging.rabbitmq.confirm").as_deref(),
            Some("none")
        );
        assert_eq!(sim.amqp.unconfirmed, 1);
    }

    #[test]
    fn a_normal_connection_close_from_the_broker_is_no_span_but_ends_what_waits() {
        let mut sim = open("{}", true);
        sim.client(
            &publish("orders", "k", &Properties::default(), b"{}"),
            false,
        );
        let close = Close {
            reply_code: 200,
            reply_text: "Goodbye".into(),
            class_id: 0,
            method_id: 0,
        };
        sim.broker(&method(0, Method::ConnectionClose(close)));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish orders"]);
        assert!(spans[0].status_message.contains("(200 Goodbye)"));
    }

    #[test]
    fn the_blocked_span_covers_the_blocked_period_and_publishes_get_an_event() {
        let mut sim = open("{}", true);
        sim.client(
            &publish("orders", "a", &Properties::default(), b"{}"),
            false,
        );
        let blocked = Method::ConnectionBlocked {
            reason: "low on memory".into(),
        };
        sim.broker(&method(0, blocked));
        sim.advance_ms(5);
        sim.client(
            &publish("orders", "b", &Properties::default(), b"{}"),
            false,
        );
        sim.broker(&method(0, Method::ConnectionUnblocked));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["connection.blocked"]);
        assert_eq!(spans[0].end_ns - spans[0].start_ns, 5_000_000);
        assert_eq!(spans[0].status_message, "low on memory");
        sim.close();
        let publishes = sim.take_spans();
        assert_eq!(names(&publishes), ["publish orders", "publish orders"]);
        for p in &publishes {
            assert_eq!(p.events.len(), 1);
            assert_eq!(p.events[0].name, "messaging.rabbitmq.connection.blocked");
        }
    }

    #[test]
    fn apply_edits_replaces_ascending_ranges_and_skips_overlaps() {
        let buf = b"0123456789";
        let edits = vec![
            (1, 3, b"ab".to_vec()),
            (2, 4, b"zz".to_vec()),
            (5, 6, b"XYZ".to_vec()),
        ];
        assert_eq!(apply_edits(buf, &edits), b"0ab34XYZ6789");
        assert_eq!(apply_edits(buf, &[]), buf);
    }
}
