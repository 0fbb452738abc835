//! OTLP batches shaped like what the OpenTelemetry Java agent exports for the Shop and CRM services, with
//! personal data in the places the plugin must clean, and the expected outcome per span.
//!
//! Every batch is built with prost (`TracesData::encode_to_vec`), so it is canonical protobuf: a span the
//! plugin does not change re-encodes to exactly the same bytes, and its encoding appears verbatim in the
//! output. (Real collectors hand the plugin pdata's encoding, also canonical for these fields.)

#![allow(dead_code)]

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::{Event, SpanKind},
    ResourceSpans, ScopeSpans, Span, Status, TracesData,
};
use prost::Message;

pub const TEST_KEY: &str = "ordertrace-test-key-not-secret";

/// The plugin configuration of the corpus: the reference API's routes and the price-calculated message.
pub fn config() -> String {
    format!(
        r#"{{
  "redaction": {{"hmac_key": "{TEST_KEY}"}},
  "routes": [
    {{"name": "shop.submit", "method": "POST", "path": "/api/orders/{{order_id}}/submit", "status": "SUBMITTED"}},
    {{"name": "shop.upload", "method": "PUT", "path": "/api/orders/{{order_id}}/model", "status": "FILE_UPLOADED"}},
    {{"name": "crm.approve", "method": "POST", "path": "/api/orders/{{order_id}}/approve",
      "status": "MANUFACTURING_APPROVED", "attributes": {{"crm.manager": {{"header": "X-Manager"}}}}}}
  ],
  "messages": [
    {{"name": "crm.price_calculated", "system": "rabbitmq", "destination": "orders",
      "routing_key": "order.price_calculated", "kind": "consumer",
      "order_id": {{"attribute": "app.order_id"}}, "status": "PRICE_CALCULATED"}}
  ]
}}"#
    )
}

/// What a span must look like after processing.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// Passes unchanged: its encoding must appear verbatim in the output.
    Untouched,
    /// Enriched: `order.id` and `order.status` (with the event) or `order.status.attempted`.
    Order {
        id: String,
        status: Option<String>,
        attempted: Option<String>,
        /// `order.status.previous` (the lifecycle table within the batch).
        previous: Option<String>,
    },
    /// Changed by redaction only (PII in its name, attributes or events).
    Redacted,
}

pub struct Batch {
    pub bytes: Vec<u8>,
    /// Strings that must not appear anywhere in the output bytes.
    pub pii: Vec<String>,
    /// Per span id: the expected outcome and the span's own encoding.
    pub spans: Vec<(Vec<u8>, Expect, Vec<u8>)>,
}

struct Person {
    first: &'static str,
    last: &'static str,
    domain: &'static str,
}

const PEOPLE: &[Person] = &[
    Person {
        first: "ivan",
        last: "petrov",
        domain: "yandex.ru",
    },
    Person {
        first: "anna",
        last: "smirnova",
        domain: "mail.ru",
    },
    Person {
        first: "john",
        last: "smith",
        domain: "example.com",
    },
    Person {
        first: "maria",
        last: "ivanova",
        domain: "gmail.com",
    },
];
const CARDS: &[&str] = &[
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "2200000000000004",
    "378282246310005",
];
const IBANS: &[&str] = &["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32"];

fn phone(n: usize) -> String {
    let sub = format!("{:07}", 1_234_567 + n * 7919 % 8_000_000);
    let (a, b, c) = (&sub[0..3], &sub[3..5], &sub[5..7]);
    let code = ["916", "903", "925", "985"][n % 4];
    match n % 4 {
        0 => format!("+7 {code} {a}-{b}-{c}"),
        1 => format!("8 ({code}) {a}-{b}-{c}"),
        2 => format!("+7{code}{sub}"),
        _ => format!("8-{code}-{a}-{b}-{c}"),
    }
}

pub fn s(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}

pub fn i(k: &str, v: i64) -> KeyValue {
    kv(k, Value::IntValue(v))
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn strings(k: &str, vs: &[&str]) -> KeyValue {
    kv(
        k,
        Value::ArrayValue(ArrayValue {
            values: vs
                .iter()
                .map(|v| AnyValue {
                    value: Some(Value::StringValue((*v).into())),
                })
                .collect(),
        }),
    )
}

fn resource(service: &str, pii: Option<&str>) -> Resource {
    let mut attributes = vec![
        s("service.name", service),
        s("service.version", "3.4.1"),
        s("deployment.environment.name", "prod"),
        s("host.name", &format!("{service}-7d9f")),
        s("host.arch", "amd64"),
        s("os.type", "linux"),
        s("os.description", "Linux 6.8.0-45-generic"),
        i("process.pid", 4242),
        s("process.executable.path", "/opt/java/openjdk/bin/java"),
        strings(
            "process.command_args",
            &["/opt/java/openjdk/bin/java", "-jar", "/app/app.jar"],
        ),
        s("process.runtime.name", "OpenJDK Runtime Environment"),
        s("process.runtime.version", "21.0.4+7-LTS"),
        s("telemetry.sdk.name", "opentelemetry"),
        s("telemetry.sdk.language", "java"),
        s("telemetry.sdk.version", "1.42.1"),
        s(
            "telemetry.distro.name",
            "opentelemetry-java-instrumentation",
        ),
        s("telemetry.distro.version", "2.8.0"),
    ];
    if let Some(p) = pii {
        // A maintainer's address someone put into OTEL_RESOURCE_ATTRIBUTES.
        attributes.push(s("service.owner.contact", p));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.into(),
        version: "2.8.0-alpha".into(),
        ..Default::default()
    }
}

/// Span factory with deterministic ids and times.
struct Gen {
    next: u64,
}

impl Gen {
    fn span(&mut self, order: usize, name: &str, kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
        self.next += 1;
        let start = 1_735_689_600_000_000_000u64 + self.next * 1_000_000;
        let mut trace_id = vec![0u8; 16];
        trace_id[..8].copy_from_slice(&(order as u64 + 1).to_be_bytes());
        trace_id[15] = 1;
        Span {
            trace_id,
            span_id: (self.next | 1 << 56).to_be_bytes().to_vec(),
            parent_span_id: Vec::new(),
            flags: 0x101,
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 750_000,
            attributes: attrs,
            ..Default::default()
        }
    }
}

fn server_attrs(method: &str, path: &str, route: &str, code: i64) -> Vec<KeyValue> {
    vec![
        s("http.request.method", method),
        s("url.scheme", "http"),
        s("url.path", path),
        s("http.route", route),
        i("http.response.status_code", code),
        s("server.address", "shop.example"),
        i("server.port", 8080),
        s("client.address", "10.1.2.3"),
        s("network.protocol.version", "1.1"),
        s(
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        ),
        i("thread.id", 41),
        s("thread.name", "http-nio-8080-exec-3"),
    ]
}

/// A batch of `n_spans` spans from the Shop and CRM services, orders numbered from `first_order`.
pub fn java_batch(n_spans: usize, first_order: usize) -> Batch {
    let mut g = Gen {
        next: first_order as u64 * 16,
    };
    let mut shop: Vec<Span> = Vec::new();
    let mut crm: Vec<Span> = Vec::new();
    let mut expect: Vec<(Vec<u8>, Expect)> = Vec::new();
    let mut pii: Vec<String> = Vec::new();
    let mut order = first_order;
    'orders: loop {
        let p = &PEOPLE[order % PEOPLE.len()];
        let id = format!("ORD-{}", 1000 + order);
        let email = format!("{}.{}{order}@{}", p.first, p.last, p.domain);
        let phone = phone(order);
        let card = CARDS[order % CARDS.len()];
        let iban = IBANS[order % IBANS.len()];
        pii.extend([
            email.clone(),
            email.replace('@', "%40"),
            phone.clone(),
            card.to_string(),
            iban.to_string(),
        ]);
        let rejected = order % 5 == 4;
        let mut spans: Vec<(bool, Span, Expect)> = Vec::new();

        // 1. SERVER: submit, with the customer's e-mail in an attribute and in the query.
        let mut attrs = server_attrs(
            "POST",
            &format!("/api/orders/{id}/submit"),
            "/api/orders/{id}/submit",
            if rejected { 409 } else { 200 },
        );
        attrs.push(s(
            "url.query",
            &format!("notify={}", email.replace('@', "%40")),
        ));
        attrs.push(s("app.customer.contact", &email));
        let submit = g.span(
            order,
            "POST /api/orders/{id}/submit",
            SpanKind::Server,
            attrs,
        );
        spans.push((
            true,
            submit,
            Expect::Order {
                id: id.clone(),
                status: (!rejected).then(|| "SUBMITTED".to_string()),
                attempted: rejected.then(|| "SUBMITTED".to_string()),
                previous: None,
            },
        ));

        // 2. INTERNAL: a phone number in the span name.
        let sms = g.span(
            order,
            &format!("SmsNotifier.send {phone}"),
            SpanKind::Internal,
            vec![
                s("code.function.name", "send"),
                s("code.namespace", "shop.notify.SmsNotifier"),
                i("thread.id", 41),
            ],
        );
        spans.push((true, sms, Expect::Redacted));

        // 3. INTERNAL: a card number in an event attribute, an IBAN in another.
        let mut pay = g.span(
            order,
            "PaymentService.charge",
            SpanKind::Internal,
            vec![s("code.function.name", "charge")],
        );
        pay.events = vec![
            Event {
                time_unix_nano: pay.start_time_unix_nano + 1000,
                name: "payment.authorised".into(),
                attributes: vec![s("payment.note", &format!("card {card} charged"))],
                dropped_attributes_count: 0,
            },
            Event {
                time_unix_nano: pay.start_time_unix_nano + 2000,
                name: "refund.prepared".into(),
                attributes: vec![s("refund.target", &format!("to {iban}"))],
                dropped_attributes_count: 0,
            },
        ];
        spans.push((true, pay, Expect::Redacted));

        // 4. CLIENT: the Shop calls the CRM. Not matched (routes apply to SERVER spans), no PII.
        let client = g.span(
            order,
            "POST",
            SpanKind::Client,
            vec![
                s("http.request.method", "POST"),
                s(
                    "url.full",
                    &format!("http://crm.internal:8080/api/orders/{id}/approve"),
                ),
                s("server.address", "crm.internal"),
                i("server.port", 8080),
                i("http.response.status_code", 200),
                s("network.protocol.version", "1.1"),
            ],
        );
        spans.push((true, client, Expect::Untouched));

        // 5. PRODUCER: the Shop publishes order.submitted. No rule for it, no PII.
        let publish = g.span(
            order,
            "orders publish",
            SpanKind::Producer,
            vec![
                s("messaging.system", "rabbitmq"),
                s("messaging.destination.name", "orders"),
                s(
                    "messaging.rabbitmq.destination.routing_key",
                    "order.submitted",
                ),
                s("messaging.operation.type", "send"),
                s("messaging.operation.name", "publish"),
                i("messaging.message.body.size", 412),
                s("app.order_id", &id),
            ],
        );
        spans.push((true, publish, Expect::Untouched));

        // 6. SERVER: the health check. Untouched.
        let health = g.span(
            order,
            "GET /actuator/health",
            SpanKind::Server,
            server_attrs("GET", "/actuator/health", "/actuator/health", 200),
        );
        spans.push((true, health, Expect::Untouched));

        // 7. CRM SERVER: approve, the manager from a captured header.
        let mut attrs = server_attrs(
            "POST",
            &format!("/api/orders/{id}/approve"),
            "/api/orders/{id}/approve",
            200,
        );
        attrs.push(strings("http.request.header.x-manager", &["m-7"]));
        let approve = g.span(
            order,
            "POST /api/orders/{id}/approve",
            SpanKind::Server,
            attrs,
        );
        spans.push((
            false,
            approve,
            Expect::Order {
                id: id.clone(),
                status: Some("MANUFACTURING_APPROVED".into()),
                attempted: None,
                previous: (!rejected).then(|| "SUBMITTED".to_string()),
            },
        ));

        // 8. CRM CONSUMER: the price arrives over RabbitMQ, after the submit.
        let consume = g.span(
            order,
            "orders process",
            SpanKind::Consumer,
            vec![
                s("messaging.system", "rabbitmq"),
                s("messaging.destination.name", "orders"),
                s(
                    "messaging.rabbitmq.destination.routing_key",
                    "order.price_calculated",
                ),
                s("messaging.operation.type", "process"),
                s("messaging.consumer.group.name", "crm-price"),
                s("app.order_id", &id),
            ],
        );
        spans.push((
            false,
            consume,
            Expect::Order {
                id: id.clone(),
                status: Some("PRICE_CALCULATED".into()),
                attempted: None,
                previous: Some("MANUFACTURING_APPROVED".into()),
            },
        ));

        for (from_shop, span, e) in spans {
            if shop.len() + crm.len() == n_spans {
                break 'orders;
            }
            expect.push((span.span_id.clone(), e));
            if from_shop {
                shop.push(span);
            } else {
                crm.push(span);
            }
        }
        order += 1;
    }
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = shop
        .iter()
        .chain(crm.iter())
        .map(|s| (s.span_id.clone(), s.encode_to_vec()))
        .collect();
    let data = TracesData {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource("shop-api", Some("ivan.petrov@yandex.ru"))),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("io.opentelemetry.tomcat-10.0")),
                    spans: shop,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            },
            ResourceSpans {
                resource: Some(resource("crm-api", None)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("io.opentelemetry.spring-webmvc-6.0")),
                    spans: crm,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            },
        ],
    };
    pii.push("ivan.petrov@yandex.ru".into());
    Batch {
        bytes: data.encode_to_vec(),
        pii,
        spans: expect
            .into_iter()
            .map(|(id, e)| {
                let enc = encoded
                    .iter()
                    .find(|(sid, _)| *sid == id)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id, e, enc)
            })
            .collect(),
    }
}

/// A batch whose spans all pass unchanged (no PII, no rule matches, clean resource).
pub fn clean_batch() -> Vec<u8> {
    let mut g = Gen { next: 1 };
    let spans = vec![
        g.span(
            0,
            "GET /actuator/health",
            SpanKind::Server,
            server_attrs("GET", "/actuator/health", "/actuator/health", 200),
        ),
        g.span(
            0,
            "orders publish",
            SpanKind::Producer,
            vec![
                s("messaging.system", "rabbitmq"),
                s("messaging.destination.name", "orders"),
                s(
                    "messaging.rabbitmq.destination.routing_key",
                    "order.submitted",
                ),
            ],
        ),
        {
            let mut sp = g.span(0, "SELECT orders", SpanKind::Client, vec![]);
            sp.attributes = vec![
                s("db.system.name", "postgresql"),
                s("db.namespace", "shop"),
                s("db.query.text", "SELECT * FROM orders WHERE id = ?"),
            ];
            sp.status = Some(Status {
                message: String::new(),
                code: 1,
            });
            sp
        },
    ];
    TracesData {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource("crm-api", None)),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope("io.opentelemetry.jdbc")),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// A span as an ordertrace edge exports it (scope `ordertrace`, already redacted and enriched).
pub fn edge_batch() -> Vec<u8> {
    let mut g = Gen { next: 900 };
    let sp = g.span(
        77,
        "shop.submit",
        SpanKind::Server,
        vec![
            s("http.request.method", "POST"),
            s("url.path", "/api/orders/ORD-77/submit"),
            s("url.query", "notify=[redacted]"),
            s("server.address", "shop.example"),
            i("http.response.status_code", 200),
            s("http.route", "/api/orders/{order_id}/submit"),
            s("order.id", "ORD-77"),
            s("order.status", "SUBMITTED"),
            s("user.id", "h:0123456789abcdef"),
        ],
    );
    TracesData {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "shop-api"),
                    s("service.instance.id", "edge-1"),
                    s("telemetry.sdk.name", "ordertrace"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "ordertrace".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans: vec![sp],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// All spans of an encoded batch.
pub fn spans_of(bytes: &[u8]) -> Vec<Span> {
    TracesData::decode(bytes)
        .expect("output decodes")
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

pub fn attr<'a>(sp: &'a Span, key: &str) -> Option<&'a Value> {
    sp.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn str_attr(sp: &Span, key: &str) -> Option<String> {
    match attr(sp, key) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
