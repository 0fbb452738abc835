//! The AMQP network filter against a real RabbitMQ (Debian `rabbitmq-server`, a private node per test) behind
//! the real Envoy (`envoy/amqp-crm.yaml`, ports substituted) running `dist/ordertrace-amqp.wasm`, with a Rust
//! AMQP client (amiquip) publishing and consuming through Envoy, and the OTLP the filter exports decoded
//! in-process. Nothing skips: a missing broker, Envoy or wasm fails with the make target to run.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod amqp_support;
#[path = "amqp_support/rabbit.rs"]
mod rabbit;
#[path = "amqp_support/raw.rs"]
mod raw;
mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use amiquip::{
    AmqpProperties, AmqpValue, Channel, Confirm, ConsumerMessage, ConsumerOptions, Exchange,
    ExchangeDeclareOptions, ExchangeType, FieldTable, Publish, QueueDeclareOptions,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use ordertrace_amqp::frame::{Method, Properties};
use rabbit::Rabbit;
use raw::RawClient;
use support::*;

const WAIT: Duration = Duration::from_secs(20);
const STATUS_ERROR: i32 = 2;

/// A broker, Envoy in front of it with the AMQP filter, and the OTLP receiver.
struct Rig {
    // Field order is drop order: Envoy first, then the broker.
    envoy: Envoy,
    otlp: OtlpReceiver,
    rabbit: Rabbit,
    listener: u16,
}

fn envoy_yaml(name: &str, listener: u16, admin: u16, broker: u16, collector: u16) -> String {
    if name == "amqp-baseline-noplugin" {
        let path = repo_root().join("envoy").join(format!("{name}.yaml"));
        let yaml = fs::read_to_string(&path).unwrap();
        return yaml
            .replace("port_value: 10019 ", &format!("port_value: {listener} "))
            .replace("port_value: 9919 ", &format!("port_value: {admin} "))
            .replace("port_value: 5672 ", &format!("port_value: {broker} "));
    }
    let path = repo_root().join("envoy").join(format!("{name}.yaml"));
    let mut yaml = fs::read_to_string(&path).unwrap();
    for (from, to) in [
        (
            "filename: dist/ordertrace-amqp.wasm".to_string(),
            format!("filename: {}", amqp_wasm_path().display()),
        ),
        (
            "port_value: 10011 ".to_string(),
            format!("port_value: {listener} "),
        ),
        (
            "port_value: 9911 ".to_string(),
            format!("port_value: {admin} "),
        ),
        (
            "port_value: 5672 ".to_string(),
            format!("port_value: {broker} "),
        ),
        (
            "port_value: 4318 ".to_string(),
            format!("port_value: {collector} "),
        ),
        (
            "\"flush_interval_ms\": 1000".to_string(),
            "\"flush_interval_ms\": 100".to_string(),
        ),
    ] {
        assert!(yaml.contains(&from), "envoy/{name}.yaml has no `{from}`");
        yaml = yaml.replace(&from, &to);
    }
    yaml
}

impl Rig {
    fn start() -> Rig {
        Rig::start_with(OtlpMode::Ok)
    }

    fn start_with(mode: OtlpMode) -> Rig {
        let rabbit = Rabbit::start();
        let otlp = OtlpReceiver::start(mode);
        let listener = free_port();
        let yaml = envoy_yaml("amqp-crm", listener, free_port(), rabbit.port, otlp.port());
        let envoy = Envoy::start(&yaml);
        assert!(wait_for_port(listener, Duration::from_secs(10)));
        Rig {
            envoy,
            otlp,
            rabbit,
            listener,
        }
    }

    fn connect(&self) -> amiquip::Connection {
        let url = format!("amqp://guest:guest@127.0.0.1:{}", self.listener);
        amiquip::Connection::insecure_open(&url).unwrap_or_else(|e| {
            panic!("connecting through Envoy: {e}\n{}", self.envoy.log_tail(40))
        })
    }

    fn span(&self, name: &str, order: &str) -> ReceivedSpan {
        self.otlp.wait_for_span(WAIT, |s| {
            s.name() == name && s.attr_str("order.id").as_deref() == Some(order)
        })
    }

    fn spans(&self, name: &str, order: &str, n: usize) -> Vec<ReceivedSpan> {
        poll(WAIT, || {
            let v: Vec<ReceivedSpan> = self
                .otlp
                .spans()
                .into_iter()
                .filter(|s| s.name() == name && s.attr_str("order.id").as_deref() == Some(order))
                .collect();
            (v.len() >= n).then_some(v)
        })
        .unwrap_or_else(|| {
            let got: Vec<String> = self
                .otlp
                .spans()
                .iter()
                .map(ReceivedSpan::describe)
                .collect();
            panic!("fewer than {n} spans {name} for {order}; received: {got:#?}")
        })
    }
}

fn declare(ch: &Channel) -> Exchange<'_> {
    let ex = ch
        .exchange_declare(
            ExchangeType::Topic,
            "orders",
            ExchangeDeclareOptions::default(),
        )
        .unwrap();
    for (q, rk) in [
        ("mes.submitted", "order.submitted"),
        ("crm.prices", "order.price_calculated"),
    ] {
        let queue = ch.queue_declare(q, QueueDeclareOptions::default()).unwrap();
        queue.bind(&ex, rk, FieldTable::default()).unwrap();
    }
    ex
}

fn header_str(props: &AmqpProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.get(key)? {
        AmqpValue::LongString(s) => Some(s.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn next_delivery(consumer: &amiquip::Consumer<'_>) -> amiquip::Delivery {
    match consumer.receiver().recv_timeout(WAIT) {
        Ok(ConsumerMessage::Delivery(d)) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[test]
fn publish_consume_confirm_and_failures_through_envoy() {
    let rig = Rig::start();
    let mut conn = rig.connect();
    let ch = conn.open_channel(None).unwrap();
    let ex = declare(&ch);
    let confirms = ch.listen_for_publisher_confirms().unwrap();
    let returns = ch.listen_for_returns().unwrap();
    ch.enable_publisher_confirms().unwrap();
    let confirm = || match confirms.recv_timeout(WAIT) {
        Ok(Confirm::Ack(_)) => {}
        other => panic!("expected a publisher ack, got {other:?}"),
    };

    // 1. A message without traceparent, larger than a frame: the consumer gets the injected header, the
    //    other headers and the body unchanged; the consumer span links to the producer span.
    let pad = "x".repeat(300 * 1024);
    let body = format!(r#"{{"orderId":"ORD-1001","pad":"{pad}"}}"#).into_bytes();
    let mut headers = FieldTable::default();
    headers.insert("x-app".into(), AmqpValue::LongString("crm".into()));
    headers.insert("x-attempt".into(), AmqpValue::LongInt(3));
    let props = AmqpProperties::default()
        .with_headers(headers.clone())
        .with_message_id("m-1001".into())
        .with_content_type("application/json".into());
    ex.publish(Publish::with_properties(&body, "order.submitted", props))
        .unwrap();
    confirm();

    let mut conn2 = rig.connect();
    let ch2 = conn2.open_channel(None).unwrap();
    let q = ch2
        .queue_declare("mes.submitted", QueueDeclareOptions::default())
        .unwrap();
    let consumer = q.consume(ConsumerOptions::default()).unwrap();
    let d = next_delivery(&consumer);
    assert_eq!(d.body, body, "body must reach the consumer byte-identical");
    assert_eq!(header_str(&d.properties, "x-app").as_deref(), Some("crm"));
    assert_eq!(
        d.properties.headers().as_ref().unwrap().get("x-attempt"),
        Some(&AmqpValue::LongInt(3))
    );
    assert_eq!(
        d.properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .as_deref(),
        Some("m-1001")
    );
    let injected = header_str(&d.properties, "traceparent").expect("traceparent injected");
    consumer.ack(d).unwrap();

    let producer = rig.span("publish orders", "ORD-1001");
    assert_eq!(producer.span.kind, SpanKind::Producer as i32);
    assert_eq!(
        producer.attr_str("messaging.system").as_deref(),
        Some("rabbitmq")
    );
    assert_eq!(
        producer.attr_str("messaging.destination.name").as_deref(),
        Some("orders")
    );
    assert_eq!(
        producer
            .attr_str("messaging.rabbitmq.destination.routing_key")
            .as_deref(),
        Some("order.submitted")
    );
    assert_eq!(
        producer.attr_str("messaging.message.id").as_deref(),
        Some("m-1001")
    );
    assert_eq!(
        producer.attr_int("messaging.message.body.size"),
        Some(body.len() as i64)
    );
    assert_eq!(
        producer.attr_str("messaging.rabbitmq.confirm").as_deref(),
        Some("ack")
    );
    assert_eq!(
        injected,
        format!("00-{}-{}-01", producer.trace_id(), producer.span_id())
    );
    let consumer_span = rig.span("process mes.submitted", "ORD-1001");
    assert_eq!(consumer_span.span.kind, SpanKind::Consumer as i32);
    assert_eq!(consumer_span.span.links.len(), 1);
    assert_eq!(
        hex(&consumer_span.span.links[0].span_id),
        producer.span_id()
    );
    assert_eq!(
        hex(&consumer_span.span.links[0].trace_id),
        producer.trace_id()
    );
    assert_eq!(
        consumer_span
            .attr_str("messaging.rabbitmq.outcome")
            .as_deref(),
        Some("ack")
    );
    assert_eq!(
        consumer_span
            .attr_str("messaging.rabbitmq.delivery_latency_source")
            .as_deref(),
        Some("producer_span")
    );

    // 2. nack with requeue, then the redelivery is acked: a failed attempt and a retry.
    ex.publish(Publish::new(br#"{"orderId":"ORD-2"}"#, "order.submitted"))
        .unwrap();
    confirm();
    let d = next_delivery(&consumer);
    consumer.nack(d, true).unwrap();
    let d = next_delivery(&consumer);
    assert!(d.redelivered);
    consumer.ack(d).unwrap();
    let attempts = rig.spans("process mes.submitted", "ORD-2", 2);
    let failed = attempts
        .iter()
        .find(|s| s.span.status.as_ref().map(|st| st.code) == Some(STATUS_ERROR))
        .unwrap();
    assert_eq!(failed.attr_str("error.type").as_deref(), Some("nack"));
    assert_eq!(
        failed
            .attr("messaging.rabbitmq.requeue")
            .and_then(|v| v.value.clone()),
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true))
    );
    let retried = attempts
        .iter()
        .find(|s| s.attr_str("messaging.rabbitmq.outcome").as_deref() == Some("ack"))
        .unwrap();
    assert_eq!(
        retried
            .attr("messaging.rabbitmq.message.redelivered")
            .and_then(|v| v.value.clone()),
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true))
    );
    // Both deliveries link to the same producer span.
    assert_eq!(
        attempts[0].span.links[0].span_id,
        attempts[1].span.links[0].span_id
    );

    // 3. reject without requeue.
    ex.publish(Publish::new(br#"{"orderId":"ORD-3"}"#, "order.submitted"))
        .unwrap();
    confirm();
    let d = next_delivery(&consumer);
    consumer.reject(d, false).unwrap();
    let rejected = rig.span("process mes.submitted", "ORD-3");
    assert_eq!(rejected.attr_str("error.type").as_deref(), Some("reject"));

    // 4. basic.get of a price result: rules read the JSON body on both sides.
    ex.publish(Publish::new(
        br#"{"orderId":"ORD-4","price":120.5,"polygonCount":48210,"complexityClass":"B"}"#,
        "order.price_calculated",
    ))
    .unwrap();
    confirm();
    let got = poll(WAIT, || ch2.basic_get("crm.prices", false).unwrap()).expect("basic.get");
    got.ack(&ch2).unwrap();
    let p = rig.span("publish orders", "ORD-4");
    assert_eq!(
        p.attr_str("order.status").as_deref(),
        Some("PRICE_CALCULATED")
    );
    assert_eq!(p.attr_str("mes.polygon_count").as_deref(), Some("48210"));
    let g = rig.span("process crm.prices", "ORD-4");
    assert_eq!(
        g.attr_str("messaging.operation.name").as_deref(),
        Some("get"),
        "{}",
        g.describe()
    );
    assert_eq!(
        g.attr_str("order.status").as_deref(),
        Some("PRICE_CALCULATED")
    );
    assert!(g.event("order.status_changed").is_some());

    // 5. An unroutable mandatory message: returned, then confirmed; the publish span is the error.
    let mut publish = Publish::new(br#"{"orderId":"ORD-5"}"#, "order.nowhere");
    publish.mandatory = true;
    ex.publish(publish).unwrap();
    let ret = returns.recv_timeout(WAIT).expect("basic.return");
    assert_eq!(ret.reply_code, 312);
    confirm();
    // No rule matches `order.nowhere`: the span is found by its routing key.
    let unroutable = rig.otlp.wait_for_span(WAIT, |s| {
        s.name() == "publish orders"
            && s.attr_str("messaging.rabbitmq.destination.routing_key")
                .as_deref()
                == Some("order.nowhere")
    });
    assert_eq!(unroutable.status_code(), STATUS_ERROR);
    assert_eq!(
        unroutable.attr_str("error.type").as_deref(),
        Some("NO_ROUTE")
    );
    assert!(unroutable.event("messaging.rabbitmq.returned").is_some());

    // 6. A publish to a missing exchange: the broker closes the channel (404), an error span in the
    //    publish's trace names the failing method.
    let ch3 = conn.open_channel(None).unwrap();
    ch3.basic_publish("nope", Publish::new(b"lost", "k"))
        .unwrap();
    let close = rig
        .otlp
        .wait_for_span(WAIT, |s| s.name() == "channel.close");
    let lost = rig.otlp.wait_for_span(WAIT, |s| s.name() == "publish nope");
    assert_eq!(close.attr_str("error.type").as_deref(), Some("NOT_FOUND"));
    assert_eq!(
        close
            .attr_str("messaging.rabbitmq.failed_method")
            .as_deref(),
        Some("basic.publish")
    );
    assert_eq!(close.trace_id(), lost.trace_id());
    assert_eq!(close.parent_span_id(), lost.span_id());

    // 7. Not AMQP 0-9-1 (a TLS client hello): passed through untouched and counted.
    let mut raw = TcpStream::connect(("127.0.0.1", rig.listener)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
    ])
    .unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    // The broker either answers a bad protocol header with its own (`AMQP 0 0 9 1`) or, in versions that
    // recognise a TLS ClientHello on a plain port, closes at once; either way Envoy delivered the bytes and
    // the broker's answer came back untouched (nothing else may arrive).
    assert!(
        reply.is_empty() || reply.starts_with(b"AMQP"),
        "broker reply {reply:?}"
    );
    rig.envoy
        .wait_for_stat("ordertrace_amqp_passthrough", 1, WAIT);
    assert!(rig.envoy.ordertrace_stat("ordertrace_amqp_injected") >= 6);

    drop(consumer);
    let _ = conn2.close();
    let _ = conn.close();
}

#[test]
fn disk_alarm_and_broker_restart_through_envoy() {
    let mut rig = Rig::start();
    let mut conn = rig.connect();
    let blocked = conn.listen_for_connection_blocked().unwrap();
    let ch = conn.open_channel(None).unwrap();
    let ex = declare(&ch);
    let confirms = ch.listen_for_publisher_confirms().unwrap();
    ch.enable_publisher_confirms().unwrap();
    ex.publish(Publish::new(br#"{"orderId":"ORD-10"}"#, "order.submitted"))
        .unwrap();
    assert!(matches!(confirms.recv_timeout(WAIT), Ok(Confirm::Ack(_))));

    // Disk alarm: the broker blocks the publishing connection (connection.blocked), then unblocks it.
    rig.rabbit.ctl(&["set_disk_free_limit", "1000000GB"]);
    ex.publish(Publish::new(br#"{"orderId":"ORD-11"}"#, "order.submitted"))
        .unwrap();
    let note = blocked.recv_timeout(WAIT).expect("connection.blocked");
    assert!(format!("{note:?}").contains("disk"), "{note:?}");
    rig.rabbit.ctl(&["set_disk_free_limit", "1MB"]);
    assert!(matches!(confirms.recv_timeout(WAIT), Ok(Confirm::Ack(_))));
    let b = rig
        .otlp
        .wait_for_span(WAIT, |s| s.name() == "connection.blocked");
    assert_eq!(b.status_code(), STATUS_ERROR);
    assert!(b
        .attr_str("messaging.rabbitmq.blocked.reason")
        .unwrap()
        .contains("disk"));
    let delayed = rig.span("publish orders", "ORD-11");
    assert!(
        delayed
            .event("messaging.rabbitmq.connection.blocked")
            .is_some(),
        "{}",
        delayed.describe()
    );
    assert_eq!(
        delayed.attr_str("messaging.rabbitmq.confirm").as_deref(),
        Some("ack")
    );

    // Broker restart with publishes waiting for their confirms (held by a new alarm): they are reported
    // unconfirmed — the "lost on publish" case.
    rig.rabbit.ctl(&["set_disk_free_limit", "1000000GB"]);
    for id in ["ORD-12", "ORD-13"] {
        ex.publish(Publish::new(
            format!(r#"{{"orderId":"{id}"}}"#).as_bytes(),
            "order.submitted",
        ))
        .unwrap();
    }
    let _ = blocked.recv_timeout(WAIT);
    rig.rabbit.restart();
    for id in ["ORD-12", "ORD-13"] {
        let s = rig.span("publish orders", id);
        assert_eq!(s.status_code(), STATUS_ERROR, "{}", s.describe());
        assert_eq!(
            s.attr_str("error.type").as_deref(),
            Some("unconfirmed"),
            "{}",
            s.describe()
        );
    }
    rig.envoy
        .wait_for_stat("ordertrace_amqp_unconfirmed", 2, WAIT);
    drop(ch);
    drop(conn);

    // After the restart the same Envoy traces a new connection.
    let mut conn = rig.connect();
    let ch = conn.open_channel(None).unwrap();
    let ex = declare(&ch);
    let confirms = ch.listen_for_publisher_confirms().unwrap();
    ch.enable_publisher_confirms().unwrap();
    ex.publish(Publish::new(br#"{"orderId":"ORD-14"}"#, "order.submitted"))
        .unwrap();
    assert!(matches!(confirms.recv_timeout(WAIT), Ok(Confirm::Ack(_))));
    let ok = rig.span("publish orders", "ORD-14");
    assert_eq!(
        ok.attr_str("messaging.rabbitmq.confirm").as_deref(),
        Some("ack")
    );
    let _ = conn.close();
}

#[test]
fn transactions_and_a_consumer_cancelled_by_the_broker_through_envoy() {
    let rig = Rig::start();
    let mut conn = rig.connect();
    let ch = conn.open_channel(None).unwrap();
    declare(&ch);
    ch.queue_purge("mes.submitted").unwrap();

    // Transactions (amiquip has none: a raw client). Two publishes committed, one rolled back, one left
    // open when the connection closes.
    let order = |id: &str| {
        amqp_support::publish(
            1,
            "orders",
            "order.submitted",
            &Properties::default(),
            format!(r#"{{"orderId":"{id}"}}"#).as_bytes(),
        )
    };
    let mut raw = RawClient::open(rig.listener);
    raw.method(1, Method::TxSelect);
    raw.expect(1, |m| matches!(m, Method::TxSelectOk));
    raw.send(&[order("ORD-40"), order("ORD-41")].concat());
    raw.method(1, Method::TxCommit);
    raw.expect(1, |m| matches!(m, Method::TxCommitOk));
    raw.send(&order("ORD-42"));
    raw.method(1, Method::TxRollback);
    raw.expect(1, |m| matches!(m, Method::TxRollbackOk));
    raw.send(&order("ORD-43"));
    raw.close();

    for id in ["ORD-40", "ORD-41"] {
        let s = rig.span("publish orders", id);
        assert_ne!(s.status_code(), STATUS_ERROR, "{}", s.describe());
        assert_eq!(
            s.attr_str("messaging.rabbitmq.tx").as_deref(),
            Some("commit")
        );
    }
    let rolled_back = rig.span("publish orders", "ORD-42");
    assert_eq!(rolled_back.status_code(), STATUS_ERROR);
    assert_eq!(
        rolled_back.attr_str("error.type").as_deref(),
        Some("rolled_back")
    );
    let open = rig.span("publish orders", "ORD-43");
    assert_eq!(open.attr_str("error.type").as_deref(), Some("unconfirmed"));
    assert_eq!(
        open.attr_str("messaging.rabbitmq.tx").as_deref(),
        Some("not_committed")
    );
    // What the spans say is what the broker did: only the committed messages are in the queue, and
    // they carry the injected traceparent.
    let q = ch
        .queue_declare("mes.submitted", QueueDeclareOptions::default())
        .unwrap();
    let mut got = Vec::new();
    while let Some(g) = q.get(true).unwrap() {
        assert!(header_str(&g.delivery.properties, "traceparent").is_some());
        got.push(String::from_utf8(g.delivery.body).unwrap());
    }
    assert_eq!(got, [r#"{"orderId":"ORD-40"}"#, r#"{"orderId":"ORD-41"}"#]);

    // A consumer whose queue is deleted: the broker sends basic.cancel (amiquip announces
    // consumer_cancel_notify), the filter reports it.
    let mut conn2 = rig.connect();
    let ch2 = conn2.open_channel(None).unwrap();
    let doomed = ch2
        .queue_declare("crm.doomed", QueueDeclareOptions::default())
        .unwrap();
    let consumer = doomed.consume(ConsumerOptions::default()).unwrap();
    ch.queue_delete("crm.doomed", Default::default()).unwrap();
    match consumer.receiver().recv_timeout(WAIT) {
        Ok(ConsumerMessage::ServerCancelled) => {}
        other => panic!("expected the broker to cancel the consumer, got {other:?}"),
    }
    let cancel = rig
        .otlp
        .wait_for_span(WAIT, |s| s.name() == "cancel crm.doomed");
    assert_eq!(cancel.status_code(), STATUS_ERROR);
    assert_eq!(
        cancel.attr_str("error.type").as_deref(),
        Some("consumer_cancelled")
    );
    assert_eq!(
        cancel.attr_str("messaging.destination.name").as_deref(),
        Some("crm.doomed")
    );
    assert!(cancel
        .attr_str("messaging.rabbitmq.consumer_tag")
        .is_some_and(|t| t.starts_with("amq.ctag")));
    drop(consumer);
    let _ = conn2.close();
    let _ = conn.close();
}

/// Regenerates `fuzz/corpus/` from a real broker: a recording TCP relay between amiquip and RabbitMQ
/// (`cargo test -p ordertrace-tests --test amqp_broker capture_fuzz_corpus -- --ignored`). Each file is a sequence of reads:
/// `C|B` (client or broker), a u32 big-endian length, the bytes.
#[test]
#[ignore = "maintenance: rewrites fuzz/corpus from a live broker"]
fn capture_fuzz_corpus() {
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    /// Reads seen by the relay: direction (`C`/`B`) and bytes.
    type Recording = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

    let rabbit = Rabbit::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Recording = Arc::default();
    let relay_log = log.clone();
    let broker = rabbit.port;
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let upstream = TcpStream::connect(("127.0.0.1", broker)).unwrap();
            for (mut from, mut to, dir) in [
                (
                    client.try_clone().unwrap(),
                    upstream.try_clone().unwrap(),
                    b'C',
                ),
                (upstream, client, b'B'),
            ] {
                let log = relay_log.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                log.lock().unwrap().push((dir, buf[..n].to_vec()));
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    let url = format!("amqp://guest:guest@127.0.0.1:{port}");
    let write = |name: &str, log: &Recording| {
        std::thread::sleep(Duration::from_millis(300));
        let mut out = Vec::new();
        for (dir, bytes) in log.lock().unwrap().drain(..) {
            out.push(dir);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        let dir = repo_root().join("fuzz/corpus");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), out).unwrap();
    };

    // Session 1: confirms, headers, a multi-frame body, a return and a missing exchange.
    {
        let mut conn = amiquip::Connection::insecure_open(&url).unwrap();
        let ch = conn.open_channel(None).unwrap();
        let ex = declare(&ch);
        let confirms = ch.listen_for_publisher_confirms().unwrap();
        let returns = ch.listen_for_returns().unwrap();
        ch.enable_publisher_confirms().unwrap();
        let mut headers = FieldTable::default();
        headers.insert("x-order-id".into(), AmqpValue::LongString("ORD-1".into()));
        headers.insert("x-n".into(), AmqpValue::LongLongInt(-5));
        headers.insert("x-b".into(), AmqpValue::Boolean(true));
        let props = AmqpProperties::default()
            .with_headers(headers)
            .with_content_type("application/json".into())
            .with_timestamp(1_700_000_000)
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into());
        let body = format!(r#"{{"orderId":"ORD-1","pad":"{}"}}"#, "y".repeat(140_000));
        ex.publish(Publish::with_properties(
            body.as_bytes(),
            "order.submitted",
            props,
        ))
        .unwrap();
        let _ = confirms.recv_timeout(WAIT);
        let mut p = Publish::new(b"{}", "order.nowhere");
        p.mandatory = true;
        ex.publish(p).unwrap();
        let _ = returns.recv_timeout(WAIT);
        let _ = confirms.recv_timeout(WAIT);
        let ch2 = conn.open_channel(None).unwrap();
        ch2.basic_publish("nope", Publish::new(b"x", "k")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        ch.queue_purge("mes.submitted").unwrap();
        let _ = conn.close();
    }
    write("publish-confirm-return.amqp", &log);

    // Session 2: consume, nack with requeue, ack, reject, basic.get, auto-ack consumer.
    {
        let mut conn = amiquip::Connection::insecure_open(&url).unwrap();
        let ch = conn.open_channel(None).unwrap();
        let ex = declare(&ch);
        for i in 0..3 {
            ex.publish(Publish::new(
                format!(r#"{{"orderId":"ORD-{i}"}}"#).as_bytes(),
                "order.submitted",
            ))
            .unwrap();
        }
        ex.publish(Publish::new(
            br#"{"orderId":"ORD-9","price":1.5}"#,
            "order.price_calculated",
        ))
        .unwrap();
        let q = ch
            .queue_declare("mes.submitted", QueueDeclareOptions::default())
            .unwrap();
        let consumer = q.consume(ConsumerOptions::default()).unwrap();
        let d = next_delivery(&consumer);
        consumer.nack(d, true).unwrap();
        let d = next_delivery(&consumer);
        consumer.ack(d).unwrap();
        let d = next_delivery(&consumer);
        consumer.reject(d, false).unwrap();
        let d = next_delivery(&consumer);
        consumer.ack(d).unwrap();
        if let Some(g) = poll(WAIT, || ch.basic_get("crm.prices", false).unwrap()) {
            g.ack(&ch).unwrap();
        }
        drop(consumer);
        let _ = conn.close();
    }
    write("consume-get-nack.amqp", &log);
}

/// Publish (with confirms) and consume (with acks) rates straight to the broker, through Envoy's TCP proxy
/// without the filter, and through it with the filter (`make bench-amqp`; `AMQP_BENCH_MESSAGES`, default
/// 20 000 messages of 1 KiB). Prints a table and writes `target/amqp-bench.json`.
#[test]
#[ignore = "benchmark: run with `make bench-amqp`"]
fn bench_amqp_throughput() {
    use std::time::Instant;
    let n: usize = std::env::var("AMQP_BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rounds: usize = std::env::var("AMQP_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // The collector answers 200 without decoding: on this machine it shares the cores with Envoy and the
    // broker, and decoding 100 000s of spans in-process would bill the benchmark for the collector's work.
    let rig = Rig::start_with(OtlpMode::Status(200));
    let plain_port = free_port();
    let plain = Envoy::start(&envoy_yaml(
        "amqp-baseline-noplugin",
        plain_port,
        free_port(),
        rig.rabbit.port,
        0,
    ));
    assert!(wait_for_port(plain_port, Duration::from_secs(10)));
    let pad = "p".repeat(1000);
    let body = |i: usize| format!(r#"{{"orderId":"ORD-{i}","pad":"{pad}"}}"#).into_bytes();

    let run = |port: u16| -> (f64, f64) {
        let mut conn =
            amiquip::Connection::insecure_open(&format!("amqp://guest:guest@127.0.0.1:{port}"))
                .unwrap();
        let ch = conn.open_channel(None).unwrap();
        let ex = declare(&ch);
        ch.queue_purge("mes.submitted").unwrap();
        let confirms = ch.listen_for_publisher_confirms().unwrap();
        ch.enable_publisher_confirms().unwrap();
        let t = Instant::now();
        for i in 0..n {
            ex.publish(Publish::new(&body(i), "order.submitted"))
                .unwrap();
        }
        let mut smoother = amiquip::ConfirmSmoother::new();
        let mut confirmed = 0;
        while confirmed < n {
            let c = confirms
                .recv_timeout(Duration::from_secs(60))
                .expect("confirm");
            confirmed += smoother.process(c).count();
        }
        let publish_rate = n as f64 / t.elapsed().as_secs_f64();
        let q = ch
            .queue_declare("mes.submitted", QueueDeclareOptions::default())
            .unwrap();
        ch.qos(0, 500, false).unwrap();
        let consumer = q.consume(ConsumerOptions::default()).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            let d = next_delivery(&consumer);
            consumer.ack(d).unwrap();
        }
        let consume_rate = n as f64 / t.elapsed().as_secs_f64();
        drop(consumer);
        let _ = conn.close();
        (publish_rate, consume_rate)
    };
    let targets = [
        ("broker (no Envoy)", rig.rabbit.port),
        ("Envoy tcp_proxy", plain_port),
        ("Envoy + ordertrace", rig.listener),
    ];
    let mut results: Vec<(&str, Vec<(f64, f64)>)> = targets
        .iter()
        .map(|(name, _)| (*name, Vec::new()))
        .collect();
    let _ = run(rig.listener); // warm-up (VM, broker)
    for _ in 0..rounds {
        for (i, (_, port)) in targets.iter().enumerate() {
            results[i].1.push(run(*port));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    println!("\nAMQP throughput, {n} messages of ~1 KiB, median of {rounds} rounds (msg/s):");
    println!(
        "{:<22} {:>12} {:>12}",
        "path", "publish+confirm", "consume+ack"
    );
    for (name, runs) in &results {
        let p = median(runs.iter().map(|r| r.0).collect());
        let c = median(runs.iter().map(|r| r.1).collect());
        println!("{name:<22} {p:>12.0} {c:>12.0}");
        rows.push(serde_json::json!({"path": name, "publish_per_s": p.round(), "consume_per_s": c.round()}));
    }
    let ratio_p =
        rows[2]["publish_per_s"].as_f64().unwrap() / rows[1]["publish_per_s"].as_f64().unwrap();
    let ratio_c =
        rows[2]["consume_per_s"].as_f64().unwrap() / rows[1]["consume_per_s"].as_f64().unwrap();
    println!(
        "\nAMQP ratio, Envoy + ordertrace / Envoy tcp_proxy alone (1.0 = no cost): \
         publish+confirm {ratio_p:.3}, consume+ack {ratio_c:.3}"
    );
    let exported = rig.envoy.ordertrace_stat("ordertrace_spans_exported");
    let dropped = rig.envoy.ordertrace_stat("ordertrace_spans_dropped");
    println!("spans exported: {exported}, dropped (queue full): {dropped}");
    let out = serde_json::json!({"messages": n, "rounds": rounds, "results": rows,
        "ratio_publish": ratio_p, "ratio_consume": ratio_c});
    let _ = fs::create_dir_all(repo_root().join("target"));
    fs::write(
        repo_root().join("target/amqp-bench.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
    drop(plain);
}
