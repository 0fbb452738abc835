//! Helpers shared by the modules' unit tests: a configuration, spans and batches, attribute lookups.

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message;

use crate::process::{find, string_kv};
use crate::CollectorConfig;

const KEY: &str = r#""hmac_key":"ordertrace-test-key-not-secret""#;

pub(crate) fn config(extra: &str) -> CollectorConfig {
    let json = format!(r#"{{"redaction":{{{KEY}}}{extra}}}"#);
    CollectorConfig::from_json(json.as_bytes()).unwrap()
}

pub(crate) const ROUTES: &str = r#","routes":[
  {"name":"shop.submit","method":"POST","path":"/api/orders/{order_id}/submit","status":"SUBMITTED",
   "attributes":{"order.partner_id":{"header":"X-Partner"},"order.channel":{"query":"channel"}}},
  {"name":"crm.approve","method":"POST","path":"/api/orders/{order_id}/approve","status":"MANUFACTURING_APPROVED"}],
 "messages":[
  {"name":"price","destination":"orders","routing_key":"order.price_calculated","kind":"consumer",
   "order_id":{"attribute":"app.order_id"},"status":"PRICE_CALCULATED"}]"#;

pub(crate) fn s(k: &str, v: &str) -> KeyValue {
    string_kv(k.into(), v.into())
}

pub(crate) fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

pub(crate) fn span(name: &str, kind: span::SpanKind, attrs: Vec<KeyValue>) -> Span {
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

pub(crate) fn batch(scope: &str, spans: Vec<Span>) -> Vec<u8> {
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

pub(crate) fn spans_of(bytes: &[u8]) -> Vec<Span> {
    TracesData::decode(bytes)
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

pub(crate) fn get<'a>(sp: &'a Span, k: &str) -> Option<&'a Value> {
    find(&sp.attributes, k).and_then(|v| v.value.as_ref())
}

pub(crate) fn gets(sp: &Span, k: &str) -> Option<String> {
    match get(sp, k) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

pub(crate) fn submit_span(order: &str, code: i64) -> Span {
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
