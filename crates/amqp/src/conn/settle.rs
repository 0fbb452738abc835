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

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::frame::{Close, Method, Properties};
    use crate::sim::Sim;
    use ordertrace::otlp::StatusCode;

    /// Deliveries `tags` to a consumer of `q` that acks.
    fn delivered(tags: &[u64]) -> Sim {
        let mut sim = open("{}", false);
        consume(&mut sim, "q", "c1", false);
        for tag in tags {
            sim.broker(&deliver("c1", *tag, &Properties::default(), b"x"));
        }
        sim
    }

    fn tag_of(span: &ordertrace::otlp::SpanRecord) -> String {
        attr(span, "messaging.rabbitmq.message.delivery_tag").unwrap()
    }

    fn outcome(span: &ordertrace::otlp::SpanRecord) -> Option<String> {
        attr(span, "messaging.rabbitmq.outcome")
    }

    #[test]
    fn ack_multiple_settles_up_to_its_tag_and_close_ends_the_rest_unsettled() {
        let mut sim = delivered(&[1, 2, 3]);
        let ack = Method::BasicAck {
            delivery_tag: 2,
            multiple: true,
        };
        sim.client(&method(1, ack), false);
        let spans = sim.take_spans();
        assert_eq!(spans.iter().map(tag_of).collect::<Vec<_>>(), ["1", "2"]);
        assert!(spans.iter().all(|s| outcome(s).as_deref() == Some("ack")));
        assert!(spans.iter().all(|s| s.status == StatusCode::Unset));
        sim.close();
        let spans = sim.take_spans();
        assert_eq!(spans.iter().map(tag_of).collect::<Vec<_>>(), ["3"]);
        assert_eq!(outcome(&spans[0]).as_deref(), Some("not_settled"));
        assert_eq!(
            attr(&spans[0], "error.type").as_deref(),
            Some("not_settled")
        );
        assert_eq!(sim.amqp.requeues, 1);
    }

    #[test]
    fn nack_reject_and_recover_are_errors_and_count_requeues() {
        let mut sim = delivered(&[1, 2, 3, 4]);
        let nack = Method::BasicNack {
            delivery_tag: 2,
            multiple: false,
            requeue: true,
        };
        let reject = Method::BasicReject {
            delivery_tag: 1,
            requeue: false,
        };
        sim.client(&[method(1, nack), method(1, reject)].concat(), false);
        sim.client(&method(1, Method::BasicRecover { requeue: true }), false);
        let spans = sim.take_spans();
        let seen: Vec<(String, Option<String>, Option<String>)> = spans
            .iter()
            .map(|s| (tag_of(s), outcome(s), attr(s, "messaging.rabbitmq.requeue")))
            .collect();
        let want =
            |t: &str, o: &str, r: &str| (t.to_string(), Some(o.to_string()), Some(r.to_string()));
        assert_eq!(
            seen,
            [
                want("2", "nack", "true"),
                want("1", "reject", "false"),
                want("3", "recover", "true"),
                want("4", "recover", "true"),
            ]
        );
        assert!(spans.iter().all(|s| s.status == StatusCode::Error));
        assert_eq!(
            spans[1].status_message,
            "discarded (or dead-lettered) by the consumer"
        );
        assert_eq!(sim.amqp.requeues, 3);
    }

    #[test]
    fn confirms_end_publishes_by_sequence_number() {
        let mut sim = open("{}", true);
        for rk in ["a", "b", "c"] {
            sim.client(&publish("orders", rk, &Properties::default(), b"x"), false);
        }
        let nack = Method::BasicNack {
            delivery_tag: 2,
            multiple: false,
            requeue: false,
        };
        sim.broker(&method(1, nack));
        let ack_all = Method::BasicAck {
            delivery_tag: 0,
            multiple: true,
        };
        sim.broker(&method(1, ack_all));
        let spans = sim.take_spans();
        let seen: Vec<(Option<String>, Option<String>)> = spans
            .iter()
            .map(|s| {
                (
                    attr(s, "messaging.rabbitmq.destination.routing_key"),
                    attr(s, "messaging.rabbitmq.confirm"),
                )
            })
            .collect();
        let want = |rk: &str, c: &str| (Some(rk.to_string()), Some(c.to_string()));
        assert_eq!(
            seen,
            [want("b", "nack"), want("a", "ack"), want("c", "ack")]
        );
        assert_eq!(attr(&spans[0], "error.type").as_deref(), Some("nack"));
        assert_eq!(spans[1].status, StatusCode::Unset);
    }

    fn returned(exchange: &str, routing_key: &str, props: &Properties) -> Vec<u8> {
        let m = Method::BasicReturn {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        };
        content(1, m, props, b"xy")
    }

    #[test]
    fn with_confirms_a_return_becomes_the_error_of_the_waiting_publish() {
        let mut sim = open("{}", true);
        let m = publish_method("orders", "nowhere", true);
        sim.client(&content(1, m, &Properties::default(), b"xy"), false);
        sim.broker(&returned("orders", "nowhere", &Properties::default()));
        assert!(
            sim.spans.is_empty(),
            "the publish still waits for its confirm"
        );
        let ack = Method::BasicAck {
            delivery_tag: 1,
            multiple: false,
        };
        sim.broker(&method(1, ack));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish orders"]);
        assert_eq!(spans[0].status, StatusCode::Error);
        assert_eq!(spans[0].status_message, "NO_ROUTE");
        assert_eq!(attr(&spans[0], "error.type").as_deref(), Some("NO_ROUTE"));
        assert_eq!(spans[0].events[0].name, "messaging.rabbitmq.returned");
    }

    #[test]
    fn without_confirms_a_return_is_a_span_in_the_returned_messages_trace() {
        let mut sim = open("{}", false);
        let m = publish_method("orders", "nowhere", true);
        sim.client(
            &content(1, m, &headers(&[("traceparent", TP)]), b"xy"),
            false,
        );
        sim.take_spans();
        sim.broker(&returned(
            "orders",
            "nowhere",
            &headers(&[("traceparent", TP)]),
        ));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["return orders"]);
        assert_eq!(spans[0].trace_id, tp().trace_id);
        assert_eq!(spans[0].parent_span_id, Some(tp().parent_id));
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.reply_code").as_deref(),
            Some("312")
        );
        assert_eq!(
            attr(&spans[0], "messaging.message.body.size").as_deref(),
            Some("2")
        );
        assert_eq!(attr(&spans[0], "error.type").as_deref(), Some("NO_ROUTE"));
    }

    #[test]
    fn tx_commit_and_rollback_end_their_own_publishes_in_order() {
        let mut sim = open("{}", false);
        sim.client(&method(1, Method::TxSelect), false);
        sim.client(&publish("orders", "a", &Properties::default(), b"x"), false);
        sim.client(&method(1, Method::TxCommit), false);
        sim.client(&publish("orders", "b", &Properties::default(), b"x"), false);
        sim.client(&method(1, Method::TxRollback), false);
        sim.client(&publish("orders", "c", &Properties::default(), b"x"), false);
        assert!(sim.spans.is_empty());
        sim.broker(&method(1, Method::TxCommitOk));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish orders"]);
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.tx").as_deref(),
            Some("commit")
        );
        assert_eq!(spans[0].status, StatusCode::Unset);
        sim.broker(&method(1, Method::TxRollbackOk));
        let spans = sim.take_spans();
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.tx").as_deref(),
            Some("rollback")
        );
        assert_eq!(
            attr(&spans[0], "error.type").as_deref(),
            Some("rolled_back")
        );
        // The third waits for a commit that never comes.
        sim.close();
        let spans = sim.take_spans();
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.destination.routing_key").as_deref(),
            Some("c")
        );
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.tx").as_deref(),
            Some("not_committed")
        );
        assert_eq!(sim.amqp.unconfirmed, 1);
    }

    #[test]
    fn a_channel_the_client_closes_requeues_its_unsettled_deliveries() {
        let mut sim = delivered(&[1, 2]);
        let close = Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        };
        sim.client(&method(1, Method::ChannelClose(close)), false);
        let spans = sim.take_spans();
        assert_eq!(spans.iter().map(tag_of).collect::<Vec<_>>(), ["1", "2"]);
        assert!(spans
            .iter()
            .all(|s| outcome(s).as_deref() == Some("channel_closed")));
        assert_eq!(sim.amqp.requeues, 2);
        sim.broker(&method(1, Method::ChannelCloseOk));
        sim.close();
        assert!(sim.spans.is_empty(), "nothing is left to end");
    }

    #[test]
    fn close_ok_ends_the_channels_unconfirmed_publishes() {
        let mut sim = open("{}", true);
        sim.client(&publish("orders", "a", &Properties::default(), b"x"), false);
        sim.broker(&method(1, Method::ChannelCloseOk));
        let spans = sim.take_spans();
        assert_eq!(names(&spans), ["publish orders"]);
        assert_eq!(
            attr(&spans[0], "error.type").as_deref(),
            Some("unconfirmed")
        );
        assert_eq!(
            attr(&spans[0], "messaging.rabbitmq.confirm").as_deref(),
            Some("none")
        );
        assert_eq!(sim.amqp.unconfirmed, 1);
    }
}
