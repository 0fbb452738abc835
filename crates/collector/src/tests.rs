use super::*;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
use ordertrace::text::MAX_VALUE_BYTES;

const KEY: &str = r#""hmac_key":"ordertrace-test-key-not-secret""#;

fn config(extra: &str) -> CollectorConfig {
    let json = format!(r#"{{"redaction":{{{KEY}}}{extra}}}"#);
    CollectorConfig::from_json(json.as_bytes()).unwrap()
}

const ROUTES: &str = r#","routes":[
  {"name":"shop.submit","method":"POST","path":"/api/orders/{order_id}/submit","status":"SUBMITTED",
   "attributes":{"order.partner_id":{"header":"X-Partner"},"order.channel":{"query":"channel"}}},
  {"name":"crm.approve","method":"POST","path":"/api/orders/{order_id}/approve","status":"MANUFACTURING_APPROVED"}],
 "messages":[
  {"name":"price","destination":"orders","routing_key":"order.price_calculated","kind":"consumer",
   "order_id":{"attribute":"app.order_id"},"status":"PRICE_CALCULATED"}]"#;

fn s(k: &str, v: &str) -> KeyValue {
    string_kv(k.into(), v.into())
}

fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn span(name: &str, kind: span::SpanKind, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 2_000_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn batch(scope: &str, spans: Vec<Span>) -> Vec<u8> {
    TracesData {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "shop-api")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn spans_of(bytes: &[u8]) -> Vec<Span> {
    TracesData::decode(bytes)
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

fn get<'a>(sp: &'a Span, k: &str) -> Option<&'a Value> {
    find(&sp.attributes, k).and_then(|v| v.value.as_ref())
}

fn gets(sp: &Span, k: &str) -> Option<String> {
    match get(sp, k) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

fn submit_span(order: &str, code: i64) -> Span {
    span(
        "POST /api/orders/{id}/submit",
        span::SpanKind::Server,
        vec![
            s("http.request.method", "POST"),
            s("url.path", &format!("/api/orders/{order}/submit")),
            s("url.query", "channel=web&email=ivan%40example.com"),
            s("http.route", "/api/orders/{id}/submit"),
            i("http.response.status_code", code),
            KeyValue {
                key: "http.request.header.x-partner".into(),
                value: Some(AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::StringValue("p-9".into())),
                        }],
                    })),
                }),
                ..Default::default()
            },
        ],
    )
}

#[test]
fn http_span_is_enriched_and_redacted() {
    let c = config(ROUTES);
    let out = process_traces(
        &c,
        &batch(
            "io.opentelemetry.tomcat",
            vec![submit_span("ORD-1001", 200)],
        ),
    )
    .unwrap();
    let sp = &spans_of(&out)[0];
    assert_eq!(gets(sp, "order.id").as_deref(), Some("ORD-1001"));
    assert_eq!(gets(sp, "order.status").as_deref(), Some("SUBMITTED"));
    // `order.partner_id` ends in the pseudonymised key `partner.id`: a configured attribute is redacted too.
    assert_eq!(gets(sp, "order.partner_id"), c.redactor.pseudonym("p-9"));
    assert_eq!(gets(sp, "order.channel").as_deref(), Some("web"));
    assert_eq!(
        gets(sp, "url.query").as_deref(),
        Some("channel=web&email=[redacted]")
    );
    assert_eq!(
        gets(sp, "url.path").as_deref(),
        Some("/api/orders/ORD-1001/submit")
    );
    let ev = &sp.events[0];
    assert_eq!(ev.name, "order.status_changed");
    assert_eq!(ev.time_unix_nano, sp.end_time_unix_nano);
    // The first status of an order in this table is not unexpected (SUBMITTED is known).
    assert_eq!(get(sp, "order.transition.unexpected"), None);
}

#[test]
fn failed_request_records_the_attempt_only() {
    let c = config(ROUTES);
    let out = process_traces(&c, &batch("x", vec![submit_span("ORD-1", 409)])).unwrap();
    let sp = &spans_of(&out)[0];
    assert_eq!(gets(sp, "order.status"), None);
    assert_eq!(
        gets(sp, "order.status.attempted").as_deref(),
        Some("SUBMITTED")
    );
    assert!(sp.events.is_empty());
}

#[test]
fn numeric_order_id_in_the_path_is_kept_only_under_a_template() {
    // 100200300491 passes the INN checksum: as a bare segment it is masked, as a template variable kept.
    let c = config(ROUTES);
    let out = process_traces(&c, &batch("x", vec![submit_span("100200300491", 200)])).unwrap();
    assert_eq!(
        gets(&spans_of(&out)[0], "url.path").as_deref(),
        Some("/api/orders/100200300491/submit")
    );
    let other = span(
        "GET",
        span::SpanKind::Server,
        vec![
            s("http.request.method", "GET"),
            s("url.path", "/x/100200300491"),
        ],
    );
    let out = process_traces(&c, &batch("x", vec![other])).unwrap();
    assert_eq!(
        gets(&spans_of(&out)[0], "url.path").as_deref(),
        Some("/x/[inn]")
    );
}

#[test]
fn route_shape_without_a_path() {
    let c = config(ROUTES);
    let sp = span(
        "POST /api/orders/:id/approve",
        span::SpanKind::Server,
        vec![
            s("http.method", "POST"),
            s("http.route", "/api/orders/:id/approve"),
            i("http.status_code", 204),
        ],
    );
    let out = process_traces(&c, &batch("x", vec![sp])).unwrap();
    let sp = &spans_of(&out)[0];
    assert_eq!(
        gets(sp, "order.status").as_deref(),
        Some("MANUFACTURING_APPROVED")
    );
    assert_eq!(gets(sp, "order.id"), None);
    let t = PathTemplate::parse("/a/{x}/b").unwrap();
    for (route, ok) in [
        ("/a/{id}/b", true),
        ("/a/:id/b", true),
        ("/a/*/b", true),
        ("/a/x/b", false),
        ("/a/{id}", false),
        ("/a/{id}/b/c", false),
    ] {
        assert_eq!(route_shape_matches(&t, route), ok, "{route}");
    }
}

#[test]
fn client_spans_are_not_matched_by_default_but_their_url_is_redacted() {
    let c = config(ROUTES);
    let sp = span(
        "POST",
        span::SpanKind::Client,
        vec![
            s("http.request.method", "POST"),
            s(
                "url.full",
                "https://bob:pw@mes.local/api/orders/ORD-1/submit?contact=%2B79161234567#frag",
            ),
            i("http.response.status_code", 200),
        ],
    );
    let out = process_traces(&c, &batch("x", vec![sp])).unwrap();
    let sp = &spans_of(&out)[0];
    assert_eq!(gets(sp, "order.id"), None);
    assert_eq!(
        gets(sp, "url.full").as_deref(),
        Some("https://REDACTED:REDACTED@mes.local/api/orders/ORD-1/submit?contact=[phone]#frag")
    );
}

#[test]
fn messaging_rule_uses_attributes_and_span_status() {
    let c = config(ROUTES);
    let mk = |err: bool| {
        let mut sp = span(
            "orders process",
            span::SpanKind::Consumer,
            vec![
                s("messaging.system", "rabbitmq"),
                s("messaging.destination.name", "orders"),
                s(
                    "messaging.rabbitmq.destination.routing_key",
                    "order.price_calculated",
                ),
                s("app.order_id", "ORD-7"),
            ],
        );
        if err {
            sp.status = Some(Status {
                message: "nack".into(),
                code: status::StatusCode::Error as i32,
            });
        }
        sp
    };
    let out = process_traces(&c, &batch("x", vec![mk(false), mk(true)])).unwrap();
    let spans = spans_of(&out);
    assert_eq!(gets(&spans[0], "order.id").as_deref(), Some("ORD-7"));
    assert_eq!(
        gets(&spans[0], "order.status").as_deref(),
        Some("PRICE_CALCULATED")
    );
    assert_eq!(
        gets(&spans[1], "order.status.attempted").as_deref(),
        Some("PRICE_CALCULATED")
    );
    // A PRODUCER span does not match a consumer rule.
    let mut p = mk(false);
    p.kind = span::SpanKind::Producer as i32;
    let input = batch("x", vec![p]);
    assert_eq!(process_traces(&c, &input).unwrap(), input);
}

#[test]
fn spans_with_order_id_are_not_enriched_again() {
    let c = config(ROUTES);
    let mut sp = submit_span("ORD-1", 200);
    sp.attributes
        .retain(|kv| kv.key != "url.query" && !kv.key.starts_with("http.request.header"));
    sp.attributes.push(s("order.id", "ORD-1"));
    let input = batch("x", vec![sp]);
    let mut p = Processor::new(c);
    let (out, stats) = p.process(&input);
    assert_eq!(out.unwrap(), Processed::Unchanged);
    assert_eq!(stats.spans_with_order_id, 1);
    assert_eq!(stats.spans_enriched, 0);
}

#[test]
fn output_is_a_fixed_point() {
    let c = config(ROUTES);
    let input = batch(
        "x",
        vec![submit_span("ORD-1", 200), submit_span("ORD-2", 500)],
    );
    let once = process_traces(&c, &input).unwrap();
    assert_ne!(once, input);
    let twice = process_traces(&c, &once).unwrap();
    assert_eq!(twice, once);
}

#[test]
fn lifecycle_attributes_follow_end_time_across_batches() {
    let c = config(ROUTES);
    let mut p = Processor::new(c);
    let mut approve = span(
        "POST",
        span::SpanKind::Server,
        vec![
            s("http.request.method", "POST"),
            s("url.path", "/api/orders/ORD-5/approve"),
            i("http.response.status_code", 200),
        ],
    );
    approve.end_time_unix_nano = 9_000_000_000;
    let mut submit = submit_span("ORD-5", 200);
    submit.end_time_unix_nano = 4_000_000_000;
    // In one batch, out of order: SUBMITTED (t=4 s) is applied before MANUFACTURING_APPROVED (t=9 s).
    let (out, stats) = p.process(&batch("x", vec![approve.clone(), submit]));
    assert_eq!(stats.transitions, 2);
    let spans = spans_of(&out.unwrap().into_bytes(Vec::new()));
    assert_eq!(
        gets(&spans[0], "order.status.previous").as_deref(),
        Some("SUBMITTED")
    );
    assert_eq!(
        get(&spans[0], "order.stage.duration_ms"),
        Some(&Value::IntValue(5000))
    );
    // SUBMITTED -> MANUFACTURING_APPROVED skips the price calculation: unexpected.
    assert_eq!(
        get(&spans[0], "order.transition.unexpected"),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(gets(&spans[1], "order.status.previous"), None);
    // The same status again in a later batch is a duplicate, not a transition.
    let (_, stats) = p.process(&batch("x", vec![approve]));
    assert_eq!(stats.transitions, 0);
    assert_eq!(p.table().len(), 1);
}

#[test]
fn lifecycle_off_adds_nothing() {
    let c = config(&format!(r#"{ROUTES},"lifecycle":{{"enabled":false}}"#));
    let mut p = Processor::new(c);
    let (_, stats) = p.process(&batch("x", vec![submit_span("ORD-1", 200)]));
    assert_eq!(stats.transitions, 0);
    assert!(p.table().is_empty());
}

#[test]
fn edge_spans_keep_their_route_variables_and_pass_unchanged() {
    let c = config("");
    let sp = span(
        "shop.submit",
        span::SpanKind::Server,
        vec![
            s("http.request.method", "POST"),
            s("url.path", "/api/orders/100200300491/submit"),
            s("http.route", "/api/orders/{order_id}/submit"),
            s("order.id", "100200300491"),
            s("order.status", "SUBMITTED"),
            s("user.id", "h:0123456789abcdef"),
        ],
    );
    let input = batch(EDGE_SCOPE, vec![sp.clone()]);
    let mut p = Processor::new(c.clone());
    let (out, stats) = p.process(&input);
    assert_eq!(out.unwrap(), Processed::Unchanged);
    assert_eq!(stats.transitions, 1, "edge transitions feed the table");
    // The same span from another scope: its http.route is not trusted, the id segment is masked.
    let out = process_traces(&c, &batch("io.opentelemetry.tomcat", vec![sp])).unwrap();
    assert_eq!(
        gets(&spans_of(&out)[0], "url.path").as_deref(),
        Some("/api/orders/[inn]/submit")
    );
}

#[test]
fn values_of_every_type_and_place_are_redacted() {
    let c = config("");
    let mut sp = span(
        "call +7 916 123-45-67",
        span::SpanKind::Internal,
        vec![
            s("customer.email", "ivan@example.com"),
            s("note", "write to ivan@example.com"),
            i("customer.phone", 79161234567),
            i("payment.ref", 4111111111111111),
            i("user.id", 42),
            i("thread.id", 77),
            s("thread.name", "http-nio-8080-exec-1"),
            KeyValue {
                key: "customer".into(),
                value: Some(AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![s("email", "a@b.cc"), s("tier", "gold")],
                    })),
                }),
                ..Default::default()
            },
        ],
    );
    sp.events.push(span::Event {
        name: "payment".into(),
        attributes: vec![s("detail", "card 4111 1111 1111 1111")],
        ..Default::default()
    });
    sp.links.push(span::Link {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        attributes: vec![s("password", "hunter2")],
        ..Default::default()
    });
    sp.status = Some(Status {
        message: "failed for ivan@example.com".into(),
        code: status::StatusCode::Error as i32,
    });
    let mut p = Processor::new(c);
    let (out, stats) = p.process(&batch("x", vec![sp]));
    let sp = &spans_of(&out.unwrap().into_bytes(Vec::new()))[0];
    assert_eq!(sp.name, "call [phone]");
    assert_eq!(gets(sp, "customer.email"), None);
    assert_eq!(gets(sp, "note").as_deref(), Some("write to [email]"));
    assert_eq!(gets(sp, "customer.phone"), None, "denied key, any type");
    assert_eq!(gets(sp, "payment.ref").as_deref(), Some("[card]"));
    assert!(gets(sp, "user.id").unwrap().starts_with("h:"));
    assert_eq!(get(sp, "thread.id"), Some(&Value::IntValue(77)));
    assert_eq!(
        gets(sp, "thread.name").as_deref(),
        Some("http-nio-8080-exec-1")
    );
    match get(sp, "customer") {
        Some(Value::KvlistValue(l)) => {
            assert_eq!(l.values.len(), 1);
            assert_eq!(l.values[0].key, "tier");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        gets_ev(&sp.events[0].attributes, "detail").as_deref(),
        Some("card [card]")
    );
    assert!(sp.links[0].attributes.is_empty());
    assert_eq!(sp.links[0].dropped_attributes_count, 1);
    assert_eq!(sp.status.as_ref().unwrap().message, "failed for [email]");
    assert_eq!(sp.dropped_attributes_count, 2);
    assert_eq!(stats.attributes_dropped, 3);
}

fn gets_ev(attrs: &[KeyValue], k: &str) -> Option<String> {
    match find(attrs, k).and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

#[test]
fn redaction_disabled_changes_nothing() {
    let c = CollectorConfig::from_json(br#"{"redaction":{"enabled":false}}"#).unwrap();
    let input = batch("x", vec![submit_span("ORD-1", 200)]);
    assert_eq!(process_traces(&c, &input).unwrap(), input);
}

#[test]
fn malformed_input_is_an_error() {
    let c = config("");
    for bad in [
        &b"\x0a\xff\xff\xff\xff\x0f"[..],
        b"\xff",
        b"\x0a\x05abc",
        b"garbage!",
    ] {
        let mut p = Processor::new(c.clone());
        let (out, stats) = p.process(bad);
        assert!(matches!(out, Err(ProcessError::Malformed(_))), "{bad:?}");
        assert_eq!(stats.batches_malformed, 1);
    }
    // The empty message is a valid, empty batch.
    assert_eq!(process_traces(&c, b"").unwrap(), Vec::<u8>::new());
}

#[test]
fn config_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("{", "", "not valid JSON: unexpected end of input"),
        (r#"{"service":"x"}"#, "service", "unknown field"),
        ("{}", "redaction.hmac_key", ""),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"api"}]}"#,
            "routes[0].path",
            "",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","method":"get"}]}"#,
            "routes[0].method",
            "uppercase",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a/{id}","order_id":{"path":"x"}}]}"#,
            "routes[0].order_id.path",
            "not a variable",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","order_id":{"response_body":"/id"}}]}"#,
            "routes[0].order_id.response_body",
            "not bodies",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","status":{"header":"x","attribute":"y"}}]}"#,
            "routes[0].status",
            "exactly one",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","kind":"sideways"}]}"#,
            "routes[0].kind",
            "unknown variant",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","attributes":{"order.status.previous":"x"}}]}"#,
            "routes[0].attributes.order.status.previous",
            "set by ordertrace",
        ),
        (
            r#"{"redaction":{"enabled":false},"messages":[{"name":"m"}]}"#,
            "messages[0]",
            "destination or routing_key",
        ),
        (
            r#"{"redaction":{"enabled":false},"messages":[{"destination":"o","order_id":{"path":"id"}}]}"#,
            "messages[0].order_id.path",
            "only routes",
        ),
        (
            r#"{"redaction":{"enabled":false},"messages":[{"destination":"o","status":{"attribute":""}}]}"#,
            "messages[0].status.attribute",
            "",
        ),
        (
            r#"{"redaction":{"enabled":false},"lifecycle":{"table_size":0}}"#,
            "lifecycle.table_size",
            "",
        ),
    ];
    for (json, field, msg) in cases {
        match CollectorConfig::from_json(json.as_bytes()) {
            Ok(_) => panic!("accepted: {json}"),
            Err(e) => {
                assert_eq!(&e.field, field, "field for {json}: {e}");
                assert!(e.message().contains(msg), "message for {json}: {e}");
            }
        }
    }
}

#[test]
fn key_from_the_environment_through_the_resolver() {
    let c = CollectorConfig::from_json_with_key_resolver(
        br#"{"redaction":{"hmac_key_env":"OT_KEY"}}"#,
        &mut |src| match src {
            HmacKeySource::Env("OT_KEY") => Ok("0123456789abcdef0123".into()),
            _ => Err("no".into()),
        },
    );
    assert!(c.is_ok());
    let e = CollectorConfig::from_json_with_key_resolver(
        br#"{"redaction":{"hmac_key_env":"OT_KEY"}}"#,
        &mut |_| Err("not set".into()),
    )
    .unwrap_err();
    assert_eq!(e.field, "redaction.hmac_key_env");
}

#[test]
fn urls_split_into_their_parts() {
    let u = split_url("https://u:p@h:8080/a/b?x=1#f");
    assert_eq!(
        (u.scheme, u.userinfo, u.host, u.path, u.query, u.fragment),
        (
            "https://",
            Some("u:p"),
            "h:8080",
            "/a/b",
            Some("x=1"),
            Some("f")
        )
    );
    let u = split_url("http://h?q");
    assert_eq!((u.host, u.path, u.query), ("h", "", Some("q")));
    let u = split_url("/only/path");
    assert_eq!((u.scheme, u.host, u.path), ("", "", "/only/path"));
}

#[test]
fn values_are_cut_at_a_char_boundary() {
    let long = "é".repeat(200);
    let c = cut(long);
    assert!(c.len() <= MAX_VALUE_BYTES && c.is_char_boundary(c.len()));
}

#[test]
#[ignore = "profiling aid: cargo test --release --lib collector::tests::phase_costs -- --ignored --nocapture"]
fn phase_costs() {
    let c = config(ROUTES);
    let mut spans = Vec::new();
    for n in 0..1000 {
        let mut sp = submit_span(&format!("ORD-{n}"), 200);
        if n % 2 == 0 {
            sp.attributes.retain(|kv| kv.key != "url.query");
            sp.attributes[1] = s("url.path", "/actuator/health");
        }
        sp.attributes.extend([
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
            s("url.scheme", "http"),
        ]);
        spans.push(sp);
    }
    let input = batch("x", spans);
    let time = |label: &str, f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        let rounds = 20;
        for _ in 0..rounds {
            f();
        }
        let per_span = t.elapsed().as_nanos() as f64 / (rounds * 1000) as f64;
        println!("{label:<40} {per_span:>8.0} ns/span");
    };
    time("decode", &mut || {
        std::hint::black_box(TracesData::decode(input.as_slice()).unwrap());
    });
    let data = TracesData::decode(input.as_slice()).unwrap();
    time("encode", &mut || {
        std::hint::black_box(data.encode_to_vec());
    });
    time("key_rule per attribute key", &mut || {
        for sp in &data.resource_spans[0].scope_spans[0].spans {
            for kv in &sp.attributes {
                std::hint::black_box(c.redactor.key_rule(&kv.key));
            }
        }
    });
    time("text per string value", &mut || {
        for sp in &data.resource_spans[0].scope_spans[0].spans {
            for kv in &sp.attributes {
                if let Some(Value::StringValue(v)) =
                    kv.value.as_ref().and_then(|v| v.value.as_ref())
                {
                    std::hint::black_box(c.redactor.text(v));
                }
            }
        }
    });
    time("plan per span", &mut || {
        for sp in &data.resource_spans[0].scope_spans[0].spans {
            std::hint::black_box(plan_span(&c, sp, true).add.len());
        }
    });
    let mut p = Processor::new(c.clone());
    time("process (all)", &mut || {
        std::hint::black_box(p.process(&input).0.unwrap());
    });
}
