//! OTLP/HTTP protobuf in, shared by `ordertrace sink` and `ordertrace watch`: one decode of an
//! `ExportTraceServiceRequest` and one walk over its spans, each with the resource and scope it came in.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Decodes the body of a `POST /v1/traces`; `Err` (the decoder's reason) for bytes that are not an
/// `ExportTraceServiceRequest`.
pub fn decode(bytes: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    ExportTraceServiceRequest::decode(bytes).map_err(|e| e.to_string())
}

/// One span of an export request, with what it inherits from the enclosing messages.
#[derive(Debug, Clone, Copy)]
pub struct SpanRecord<'a> {
    /// The resource's attributes (`service.name`, ...); empty when the request has no resource.
    pub resource: &'a [KeyValue],
    pub scope: Option<&'a InstrumentationScope>,
    pub span: &'a Span,
}

/// Every span of the request, in the order it was sent.
pub fn spans(req: &ExportTraceServiceRequest) -> impl Iterator<Item = SpanRecord<'_>> {
    req.resource_spans.iter().flat_map(|rs| {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        rs.scope_spans.iter().flat_map(move |ss| {
            ss.spans.iter().map(move |span| SpanRecord {
                resource,
                scope: ss.scope.as_ref(),
                span,
            })
        })
    })
}

/// The value of the first attribute named `key`.
pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn span(name: &str) -> Span {
        Span {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn walks_every_span_with_its_resource_and_scope() {
        let service = KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("shop-api".into())),
            }),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![service],
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "ordertrace".into(),
                                ..Default::default()
                            }),
                            spans: vec![span("a"), span("b")],
                            ..Default::default()
                        },
                        ScopeSpans {
                            spans: vec![span("c")],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span("d")],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let req = decode(&req.encode_to_vec()).unwrap();
        let all: Vec<SpanRecord<'_>> = spans(&req).collect();
        let names: Vec<&str> = all.iter().map(|r| r.span.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert!(attr(all[2].resource, "service.name").is_some());
        assert!(all[3].resource.is_empty());
        assert_eq!(all[1].scope.map(|s| s.name.as_str()), Some("ordertrace"));
        assert!(all[2].scope.is_none());
        assert!(decode(b"\xff\xff\xff").is_err());
    }
}
