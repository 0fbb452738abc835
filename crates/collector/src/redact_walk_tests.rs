use super::*;
use crate::process::find;
use crate::test_support::*;
use crate::{process_traces, CollectorConfig, Processor};
use opentelemetry_proto::tonic::common::v1::KeyValueList;
use opentelemetry_proto::tonic::trace::v1::{span, status, Status};

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
