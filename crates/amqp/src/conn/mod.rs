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

use std::collections::{BTreeMap, VecDeque};

use crate::config::{Amqp, MessageKey};
use crate::decoder::{Decoder, Direction, Event, FrameSpan, GiveUp, Limits};
use crate::frame::{
    add_string_header, encode_frame, Close, ContentHeader, Method, Properties, FRAME_END,
    FRAME_HEADER,
};
use crate::spans::{
    method_name, reply_code_name, resolve, AmqpCounters, Msg, Outcome, PublishMemory,
};
use crate::wire::WireError;
use ordertrace::host::RandomSource;
use ordertrace::ids::IdGenerator;
use ordertrace::metrics::Counters;
use ordertrace::otlp::{AttrValue, Kind, SpanRecord};
use ordertrace::tracecontext::{parse_traceparent, sampling_decision, TraceParent, FLAG_SAMPLED};

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

struct Publish {
    msg: Msg,
    seq: u64,
    exchange: String,
    routing_key: String,
    mandatory: bool,
    props: Option<Properties>,
    /// On a channel in tx mode: `Some(0)` until a `tx.commit` / `tx.rollback` takes it, then the number
    /// of that commit or rollback. `None` outside transactions.
    tx: Option<u64>,
}

struct Delivery {
    msg: Msg,
    tag: u64,
    no_ack: bool,
    exchange: String,
    routing_key: String,
    queue: Option<String>,
    props: Option<Properties>,
}

struct Returned {
    reply_code: u16,
    reply_text: String,
    exchange: String,
    routing_key: String,
    props: Option<Properties>,
}

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
            let msgs = ch
                .publishing
                .into_iter()
                .chain(ch.unconfirmed)
                .map(|p| p.msg)
                .chain(ch.receiving.into_iter().chain(ch.unacked).map(|d| d.msg));
            for mut m in msgs {
                m.str_attr("messaging.rabbitmq.outcome", "unknown");
                m.str_attr("ordertrace.amqp.gave_up", why.as_str());
                push(env, m.finish(env.now_ns, Outcome::Ok));
            }
        }
        if let Some(b) = self.blocked.take() {
            push(
                env,
                b.finish(env.now_ns, blocked_outcome(&self.blocked_reason)),
            );
        }
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
            Method::ChannelClose(_) => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.closing = true;
                    let unacked: Vec<Delivery> = ch.unacked.drain(..).collect();
                    for d in unacked {
                        env.amqp.requeues += 1;
                        let mut m = d.msg;
                        m.str_attr("messaging.rabbitmq.outcome", "channel_closed");
                        push(
                            env,
                            m.finish(
                                env.now_ns,
                                Outcome::Error {
                                    kind: "channel_closed".into(),
                                    message: "channel closed before the ack; the broker requeues the message".into(),
                                },
                            ),
                        );
                    }
                }
            }
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
            Method::TxCommit | Method::TxRollback => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if ch.tx && ch.tx_waiting.len() < 256 {
                        ch.tx_sent += 1;
                        let n = ch.tx_sent;
                        for p in ch.unconfirmed.iter_mut().filter(|p| p.tx == Some(0)) {
                            p.tx = Some(n);
                        }
                        ch.tx_waiting
                            .push_back((n, matches!(method, Method::TxCommit)));
                    }
                }
            }
            Method::BasicCancel { consumer_tag } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.consumers.remove(&consumer_tag);
                }
            }
            Method::BasicConsume {
                queue,
                consumer_tag,
                no_ack,
            } => {
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
            Method::BasicGet { queue, no_ack } => {
                if let Some(ch) = self.channel(channel) {
                    if ch.pending_get.len() < 256 {
                        ch.pending_get.push_back((queue, no_ack));
                    }
                }
            }
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

    fn on_publish_header<R: RandomSource>(
        &mut self,
        p: PublishStart,
        env: &mut Env<'_, R>,
        ctx: &mut EditCtx,
        buf: &[u8],
    ) {
        let props = p.header.ok().map(|h: ContentHeader| h.properties);
        let parsed = props.is_some();
        let incoming = header_traceparent(props.as_ref()).map(parse_traceparent);
        let has_header = props
            .as_ref()
            .and_then(|p| p.headers.as_ref())
            .is_some_and(|t| t.get(TRACEPARENT).is_some());
        let (trace_id, parent, flags, carried) = match incoming {
            Some(Ok(tp)) => (
                tp.trace_id,
                Some(tp.parent_id),
                tp.flags,
                Some(tp.parent_id),
            ),
            other => {
                if matches!(other, Some(Err(_))) || has_header {
                    env.counters.traceparent_malformed += 1;
                } else {
                    env.counters.traceparent_created += 1;
                }
                let t = env.ids.trace_id();
                (t, None, new_flags(env.sampling_ratio, &t), None)
            }
        };
        let span_id = env.ids.span_id();
        let ctx_out = TraceParent {
            trace_id,
            parent_id: span_id,
            flags,
        };
        let mut carried = carried;
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
        let dest = destination(&p.exchange).to_string();
        let mut msg = Msg {
            trace_id,
            span_id,
            parent,
            flags,
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
        if !p.routing_key.is_empty() {
            msg.str_attr("messaging.rabbitmq.destination.routing_key", &p.routing_key);
        }
        message_attrs(&mut msg, props.as_ref());
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

    fn on_publish_body<R: RandomSource>(
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
        let Some(mut p) = ch.publishing.take() else {
            return;
        };
        p.msg.attr(
            "messaging.message.body.size",
            AttrValue::Int(i64::try_from(body_size).unwrap_or(i64::MAX)),
        );
        let key = MessageKey {
            publish: true,
            exchange: &p.exchange,
            routing_key: &p.routing_key,
            queue: None,
        };
        apply_rule(&mut p.msg, env, &key, p.props.as_ref(), prefix, body_size);
        ch.last_publish = Some(p.msg.context());
        if ch.confirm {
            ch.publish_seq += 1;
            p.seq = ch.publish_seq;
        } else if ch.tx {
            p.tx = Some(0);
        } else {
            push(env, p.msg.finish(env.now_ns, Outcome::Ok));
            return;
        }
        if ch.unconfirmed.len() >= max_pending {
            env.amqp.pending_overflow += 1;
            p.msg.str_attr("messaging.rabbitmq.confirm", "untracked");
            push(env, p.msg.finish(env.now_ns, Outcome::Ok));
            return;
        }
        ch.unconfirmed.push_back(p);
    }

    fn settle<R: RandomSource>(
        &mut self,
        channel: u16,
        tag: u64,
        multiple: bool,
        how: Settle,
        env: &mut Env<'_, R>,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let done: Vec<Delivery> = if multiple {
            let (settled, kept): (Vec<Delivery>, Vec<Delivery>) =
                ch.unacked.drain(..).partition(|d| tag == 0 || d.tag <= tag);
            ch.unacked = kept.into();
            settled
        } else {
            match ch.unacked.iter().position(|d| d.tag == tag) {
                Some(i) => ch.unacked.remove(i).into_iter().collect(),
                None => Vec::new(),
            }
        };
        for d in done {
            let mut m = d.msg;
            let outcome = match how {
                Settle::Ack => {
                    m.str_attr("messaging.rabbitmq.outcome", "ack");
                    Outcome::Ok
                }
                Settle::Nack(requeue) | Settle::Reject(requeue) | Settle::Recover(requeue) => {
                    let kind = match how {
                        Settle::Nack(_) => "nack",
                        Settle::Reject(_) => "reject",
                        _ => "recover",
                    };
                    m.str_attr("messaging.rabbitmq.outcome", kind);
                    m.attr("messaging.rabbitmq.requeue", AttrValue::Bool(requeue));
                    if requeue {
                        env.amqp.requeues += 1;
                    }
                    Outcome::Error {
                        kind: kind.into(),
                        message: if requeue {
                            "returned to the queue for redelivery".into()
                        } else {
                            "discarded (or dead-lettered) by the consumer".into()
                        },
                    }
                }
            };
            push(env, m.finish(env.now_ns, outcome));
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
                    Some(Method::BasicDeliver {
                        consumer_tag,
                        delivery_tag,
                        redelivered,
                        exchange,
                        routing_key,
                    }) => {
                        let (queue, no_ack) = self
                            .channels
                            .get(&channel)
                            .and_then(|ch| ch.consumers.get(&consumer_tag))
                            .map_or((None, false), |(q, n)| (Some(q.clone()), *n));
                        let d = DeliveryStart {
                            channel,
                            operation: "deliver",
                            tag: delivery_tag,
                            redelivered,
                            exchange,
                            routing_key,
                            queue,
                            no_ack,
                            props,
                        };
                        self.on_delivery_header(d, env);
                    }
                    Some(Method::BasicGetOk {
                        delivery_tag,
                        redelivered,
                        exchange,
                        routing_key,
                        ..
                    }) => {
                        let (queue, no_ack) = self
                            .channels
                            .get_mut(&channel)
                            .and_then(|ch| ch.pending_get.pop_front())
                            .map_or((None, false), |(q, n)| (Some(q), n));
                        let d = DeliveryStart {
                            channel,
                            operation: "get",
                            tag: delivery_tag,
                            redelivered,
                            exchange,
                            routing_key,
                            queue,
                            no_ack,
                            props,
                        };
                        self.on_delivery_header(d, env);
                    }
                    Some(Method::BasicReturn {
                        reply_code,
                        reply_text,
                        exchange,
                        routing_key,
                    }) => {
                        if let Some(ch) = self.channel(channel) {
                            ch.returning = Some(Returned {
                                reply_code,
                                reply_text,
                                exchange,
                                routing_key,
                                props,
                            });
                        }
                    }
                    _ => {}
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
            Method::ConnectionClose(close) => {
                if close.reply_code != 200 {
                    let mut m = self.standalone("connection.close", None, env);
                    close_attrs(&mut m, &close);
                    let outcome = Outcome::Error {
                        kind: reply_code_name(close.reply_code),
                        message: close.reply_text.clone(),
                    };
                    push(env, m.finish(env.now_ns, outcome));
                }
                let why = format!(
                    "connection closed by the broker ({} {}) before the outcome was known",
                    close.reply_code, close.reply_text
                );
                self.finish_all(env, &why);
            }
            Method::ConnectionBlocked { reason } => {
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
            Method::ConnectionUnblocked => {
                if let Some(b) = self.blocked.take() {
                    push(
                        env,
                        b.finish(env.now_ns, blocked_outcome(&self.blocked_reason)),
                    );
                }
                self.blocked_reason = None;
            }
            Method::ChannelClose(close) => {
                let last = self.channels.get(&channel).and_then(|c| c.last_publish);
                if close.reply_code != 200 {
                    let caused_by_publish = (close.class_id, close.method_id) == (60, 40);
                    let parent = if caused_by_publish { last } else { None };
                    let mut m = self.standalone("channel.close", parent, env);
                    close_attrs(&mut m, &close);
                    let outcome = Outcome::Error {
                        kind: reply_code_name(close.reply_code),
                        message: close.reply_text.clone(),
                    };
                    push(env, m.finish(env.now_ns, outcome));
                }
                if let Some(ch) = self.channels.remove(&channel) {
                    let kind = reply_code_name(close.reply_code);
                    let why = format!(
                        "channel closed by the broker ({} {}) before the outcome was known",
                        close.reply_code, close.reply_text
                    );
                    finish_channel(ch, env, &kind, &why);
                }
            }
            Method::ChannelCloseOk => {
                if let Some(ch) = self.channels.remove(&channel) {
                    finish_channel(
                        ch,
                        env,
                        "unconfirmed",
                        "channel closed before the broker confirmed the publish",
                    );
                }
            }
            Method::BasicConsumeOk { consumer_tag } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if let Some((queue, _, no_ack)) = ch.pending_consume.pop_front() {
                        if ch.consumers.len() < 4096 || ch.consumers.contains_key(&consumer_tag) {
                            ch.consumers.insert(consumer_tag, (queue, no_ack));
                        }
                    }
                }
            }
            Method::BasicGetEmpty => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.pending_get.pop_front();
                }
            }
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

    /// `tx.commit-ok` / `tx.rollback-ok`: the publishes of the oldest commit or rollback end, published
    /// (ok) or not (error `rolled_back`). The `-ok` answers them in order (AMQP: synchronous methods).
    fn tx_done<R: RandomSource>(&mut self, channel: u16, env: &mut Env<'_, R>) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some((n, commit)) = ch.tx_waiting.pop_front() else {
            return;
        };
        let (done, kept): (Vec<Publish>, Vec<Publish>) =
            ch.unconfirmed.drain(..).partition(|p| p.tx == Some(n));
        ch.unconfirmed = kept.into();
        for p in done {
            let mut m = p.msg;
            let outcome = if commit {
                m.str_attr("messaging.rabbitmq.tx", "commit");
                Outcome::Ok
            } else {
                m.str_attr("messaging.rabbitmq.tx", "rollback");
                Outcome::Error {
                    kind: "rolled_back".into(),
                    message: "the transaction was rolled back: the message was not published"
                        .into(),
                }
            };
            push(env, m.finish(env.now_ns, outcome));
        }
    }

    /// A `basic.cancel` from the broker: the consumer is gone (its queue was deleted, or the node that
    /// held it went down). An error span naming the consumer and its queue.
    fn consumer_cancelled<R: RandomSource>(
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

    fn confirm<R: RandomSource>(
        &mut self,
        channel: u16,
        tag: u64,
        multiple: bool,
        ack: bool,
        env: &mut Env<'_, R>,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let done: Vec<Publish> = if multiple {
            let (settled, kept): (Vec<Publish>, Vec<Publish>) = ch
                .unconfirmed
                .drain(..)
                .partition(|p| p.tx.is_none() && (tag == 0 || p.seq <= tag));
            ch.unconfirmed = kept.into();
            settled
        } else {
            match ch
                .unconfirmed
                .iter()
                .position(|p| p.tx.is_none() && p.seq == tag)
            {
                Some(i) => ch.unconfirmed.remove(i).into_iter().collect(),
                None => Vec::new(),
            }
        };
        for p in done {
            let mut m = p.msg;
            m.str_attr(
                "messaging.rabbitmq.confirm",
                if ack { "ack" } else { "nack" },
            );
            let outcome = if ack {
                Outcome::Ok
            } else {
                Outcome::Error {
                    kind: "nack".into(),
                    message: "the broker refused the message (basic.nack)".into(),
                }
            };
            push(env, m.finish(env.now_ns, outcome));
        }
    }

    fn on_delivery_header<R: RandomSource>(&mut self, d: DeliveryStart, env: &mut Env<'_, R>) {
        let link = match header_traceparent(d.props.as_ref()).map(parse_traceparent) {
            Some(Ok(tp)) => Some(tp),
            Some(Err(_)) => {
                env.counters.traceparent_malformed += 1;
                None
            }
            None => None,
        };
        let trace_id = env.ids.trace_id();
        let flags = match &link {
            Some(tp) if tp.sampled() => FLAG_SAMPLED,
            _ => new_flags(env.sampling_ratio, &trace_id),
        };
        let span_id = env.ids.span_id();
        let target = d
            .queue
            .clone()
            .filter(|q| !q.is_empty())
            .or_else(|| Some(d.routing_key.clone()).filter(|r| !r.is_empty()))
            .unwrap_or_else(|| destination(&d.exchange).to_string());
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
        msg.attr(
            "messaging.rabbitmq.message.delivery_tag",
            AttrValue::Int(i64::try_from(d.tag).unwrap_or(i64::MAX)),
        );
        msg.attr(
            "messaging.rabbitmq.message.redelivered",
            AttrValue::Bool(d.redelivered),
        );
        message_attrs(&mut msg, d.props.as_ref());
        if let Some(v) = &self.vhost {
            msg.str_attr("messaging.rabbitmq.vhost", v);
        }
        // publish → deliver latency: the producer span seen here, else the message's timestamp.
        let seen = link
            .as_ref()
            .and_then(|tp| env.memory.published_at(&tp.parent_id));
        let latency = match (seen, d.props.as_ref().and_then(|p| p.timestamp)) {
            (Some(at), _) => Some((env.now_ns.saturating_sub(at) / 1_000_000, "producer_span")),
            (None, Some(ts)) => Some((
                (env.now_ns / 1_000_000).saturating_sub(ts.saturating_mul(1000)),
                "timestamp",
            )),
            _ => None,
        };
        if let Some((ms, source)) = latency {
            msg.attr(
                "messaging.rabbitmq.delivery_latency_ms",
                AttrValue::Int(i64::try_from(ms).unwrap_or(i64::MAX)),
            );
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

    fn on_broker_body<R: RandomSource>(
        &mut self,
        channel: u16,
        prefix: &[u8],
        body_size: u64,
        env: &mut Env<'_, R>,
    ) {
        let max_pending = env.config.max_pending;
        let returning = self
            .channels
            .get_mut(&channel)
            .and_then(|ch| ch.returning.take());
        if let Some(r) = returning {
            self.on_return(channel, r, prefix, body_size, env);
            return;
        }
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(mut d) = ch.receiving.take() else {
            return;
        };
        d.msg.attr(
            "messaging.message.body.size",
            AttrValue::Int(i64::try_from(body_size).unwrap_or(i64::MAX)),
        );
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

    fn on_return<R: RandomSource>(
        &mut self,
        channel: u16,
        r: Returned,
        prefix: &[u8],
        body_size: u64,
        env: &mut Env<'_, R>,
    ) {
        let kind = reply_code_name(r.reply_code);
        let ev_attrs = vec![
            (
                "messaging.rabbitmq.reply_code".to_string(),
                AttrValue::Int(i64::from(r.reply_code)),
            ),
            (
                "messaging.rabbitmq.reply_text".to_string(),
                AttrValue::Str(r.reply_text.clone()),
            ),
        ];
        // With confirms, the publish is still waiting: the return becomes its error.
        if let Some(ch) = self.channels.get_mut(&channel) {
            let pending = ch.unconfirmed.iter_mut().find(|p| {
                p.mandatory
                    && p.msg.error.is_none()
                    && p.exchange == r.exchange
                    && p.routing_key == r.routing_key
            });
            if let Some(p) = pending {
                p.msg
                    .event("messaging.rabbitmq.returned", env.now_ns, ev_attrs);
                p.msg.error = Some((kind, r.reply_text));
                return;
            }
        }
        // Otherwise an error span of its own, in the trace the returned message carries.
        let parent = match header_traceparent(r.props.as_ref()).map(parse_traceparent) {
            Some(Ok(tp)) => Some(tp),
            _ => None,
        };
        let dest = destination(&r.exchange).to_string();
        let mut m = self.standalone(&format!("return {dest}"), parent, env);
        m.str_attr("messaging.operation.name", "return");
        m.str_attr("messaging.destination.name", &dest);
        if !r.routing_key.is_empty() {
            m.str_attr("messaging.rabbitmq.destination.routing_key", &r.routing_key);
        }
        m.attr(
            "messaging.message.body.size",
            AttrValue::Int(i64::try_from(body_size).unwrap_or(i64::MAX)),
        );
        message_attrs(&mut m, r.props.as_ref());
        for (k, v) in ev_attrs {
            m.attr(&k, v);
        }
        let key = MessageKey {
            publish: true,
            exchange: &r.exchange,
            routing_key: &r.routing_key,
            queue: None,
        };
        apply_rule(&mut m, env, &key, r.props.as_ref(), prefix, body_size);
        push(
            env,
            m.finish(
                env.now_ns,
                Outcome::Error {
                    kind,
                    message: r.reply_text,
                },
            ),
        );
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

    fn finish_all<R: RandomSource>(&mut self, env: &mut Env<'_, R>, why: &str) {
        let channels = std::mem::take(&mut self.channels);
        for (_, ch) in channels {
            finish_channel(ch, env, "unconfirmed", why);
        }
        if let Some(b) = self.blocked.take() {
            push(
                env,
                b.finish(env.now_ns, blocked_outcome(&self.blocked_reason)),
            );
        }
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

/// Ends everything a closing channel still holds: publishes are unconfirmed (error `kind`), deliveries
/// were never settled (the broker requeues them).
fn finish_channel<R: RandomSource>(ch: Channel, env: &mut Env<'_, R>, kind: &str, why: &str) {
    let publishes = ch.publishing.into_iter().chain(ch.unconfirmed);
    for p in publishes {
        env.amqp.unconfirmed += 1;
        let mut m = p.msg;
        if p.tx.is_some() {
            m.str_attr("messaging.rabbitmq.tx", "not_committed");
        } else {
            m.str_attr("messaging.rabbitmq.confirm", "none");
        }
        push(
            env,
            m.finish(
                env.now_ns,
                Outcome::Error {
                    kind: kind.to_string(),
                    message: why.to_string(),
                },
            ),
        );
    }
    for d in ch.receiving.into_iter().chain(ch.unacked) {
        env.amqp.requeues += 1;
        let mut m = d.msg;
        m.str_attr("messaging.rabbitmq.outcome", "not_settled");
        push(
            env,
            m.finish(
                env.now_ns,
                Outcome::Error {
                    kind: "not_settled".into(),
                    message: format!("{why}; the broker requeues the message"),
                },
            ),
        );
    }
}

fn close_attrs(m: &mut Msg, close: &Close) {
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

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Nack(bool),
    Reject(bool),
    Recover(bool),
}

struct PublishStart {
    channel: u16,
    exchange: String,
    routing_key: String,
    mandatory: bool,
    header: Result<ContentHeader, WireError>,
    frame: FrameSpan,
    payload: Vec<u8>,
}

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
