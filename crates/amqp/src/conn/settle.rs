//! How waiting publishes and deliveries end:
//!
//! - deliveries: the client's `basic.ack` / `nack` / `reject` / `recover`; a channel the client closes
//!   before settling them (the broker requeues them);
//! - publishes: the broker's confirm (`basic.ack` / `nack`), a `basic.return` of a mandatory message (an
//!   error on the waiting publish, or a span of its own), `tx.commit` / `tx.rollback` answered by their
//!   `-ok`;
//! - both: a channel or connection that closes first ([`finish_channel`]), or a stream the decoder gave up
//!   on ([`give_up_channel`]).

use crate::config::MessageKey;
use crate::decoder::GiveUp;
use crate::frame::Properties;
use crate::spans::{reply_code_name, Outcome};
use ordertrace::host::RandomSource;
use ordertrace::otlp::AttrValue;
use ordertrace::tracecontext::parse_traceparent;

use super::deliver::Delivery;
use super::publish::Publish;
use super::{
    apply_rule, destination, header_traceparent, int_attr, message_attrs, push, Channel,
    Connection, Env,
};

/// How the client settles deliveries.
#[derive(Debug, Clone, Copy)]
pub(super) enum Settle {
    Ack,
    Nack(bool),
    Reject(bool),
    Recover(bool),
}

/// A `basic.return` joined with its content header, waiting for its body.
pub(super) struct Returned {
    pub(super) reply_code: u16,
    pub(super) reply_text: String,
    pub(super) exchange: String,
    pub(super) routing_key: String,
    pub(super) props: Option<Properties>,
}

impl Connection {
    /// The client settles deliveries: `tag` (or up to `tag` when `multiple`; everything when 0).
    pub(super) fn settle<R: RandomSource>(
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
            let outcome = settle_outcome(&mut m, how, env);
            push(env, m.finish(env.now_ns, outcome));
        }
    }

    /// `channel.close` from the client: its unsettled deliveries go back to the queue.
    pub(super) fn channel_close_sent<R: RandomSource>(
        &mut self,
        channel: u16,
        env: &mut Env<'_, R>,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
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
                        message: "channel closed before the ack; the broker requeues the message"
                            .into(),
                    },
                ),
            );
        }
    }

    /// The broker confirms publishes: `tag` (or up to `tag` when `multiple`; everything when 0), with an
    /// ack or a nack. Publishes of a transaction are not confirmed this way.
    pub(super) fn confirm<R: RandomSource>(
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

    /// `tx.commit` / `tx.rollback` from the client (`commit`: which): the publishes waiting for the next
    /// one get its number, and it waits for its `-ok`.
    pub(super) fn tx_end_sent(&mut self, channel: u16, commit: bool) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.tx && ch.tx_waiting.len() < 256 {
            ch.tx_sent += 1;
            let n = ch.tx_sent;
            for p in ch.unconfirmed.iter_mut().filter(|p| p.tx == Some(0)) {
                p.tx = Some(n);
            }
            ch.tx_waiting.push_back((n, commit));
        }
    }

    /// `tx.commit-ok` / `tx.rollback-ok`: the publishes of the oldest commit or rollback end, published
    /// (ok) or not (error `rolled_back`). The `-ok` answers them in order (AMQP: synchronous methods).
    pub(super) fn tx_done<R: RandomSource>(&mut self, channel: u16, env: &mut Env<'_, R>) {
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

    /// The content header of a `basic.return`: the returned message waits for its body.
    pub(super) fn on_return_header(&mut self, channel: u16, r: Returned) {
        if let Some(ch) = self.channel(channel) {
            ch.returning = Some(r);
        }
    }

    /// A returned message is complete. With confirms, the mandatory publish it matches is still waiting
    /// and the return becomes its error (an event now, the error when the confirm comes); otherwise an
    /// error span of its own, in the trace the returned message carries.
    pub(super) fn on_return<R: RandomSource>(
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
        m.attr("messaging.message.body.size", int_attr(body_size));
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
}

/// The outcome of a settled delivery (and its `outcome` / `requeue` attributes); a requeue is counted.
fn settle_outcome<R: RandomSource>(
    m: &mut crate::spans::Msg,
    how: Settle,
    env: &mut Env<'_, R>,
) -> Outcome {
    let requeue = match how {
        Settle::Ack => {
            m.str_attr("messaging.rabbitmq.outcome", "ack");
            return Outcome::Ok;
        }
        Settle::Nack(requeue) | Settle::Reject(requeue) | Settle::Recover(requeue) => requeue,
    };
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

/// Ends everything a closing channel still holds: publishes are unconfirmed (error `kind`), deliveries
/// were never settled (the broker requeues them).
pub(super) fn finish_channel<R: RandomSource>(
    ch: Channel,
    env: &mut Env<'_, R>,
    kind: &str,
    why: &str,
) {
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

/// The decoder gave up on the connection: what the channel had in flight ends without claiming an
/// outcome (`unknown`, and why the decoder gave up).
pub(super) fn give_up_channel<R: RandomSource>(ch: Channel, env: &mut Env<'_, R>, why: GiveUp) {
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
