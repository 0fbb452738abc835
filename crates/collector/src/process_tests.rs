use super::*;
use crate::test_support::*;
use opentelemetry_proto::tonic::trace::v1::Status;
use ordertrace::text::MAX_VALUE_BYTES;

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
fn values_are_cut_at_a_char_boundary() {
    let long = "é".repeat(200);
    let c = cut(long);
    assert!(c.len() <= MAX_VALUE_BYTES && c.is_char_boundary(c.len()));
}

#[test]
#[ignore = "profiling aid: cargo test --release -p ordertrace-collector --lib process::tests::phase_costs -- --ignored --nocapture"]
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
