//! OTLP/HTTP protobuf → the lifecycle transitions it carries. Everything else (request spans, the
//! `order.lifecycle` root) is ignored.

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use ordertrace::order::lifecycle::lifecycle_ids;

use super::super::otlp_in::{self, attr};
use super::hex;

/// One status change of one order, as an edge recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub order_id: String,
    pub status: String,
    /// When the change happened (the end of the request that made it), Unix nanoseconds.
    pub at_ns: u64,
    pub service: String,
    /// The previous status as the edge knew it (it may not know).
    pub edge_previous: Option<String>,
    /// Hex ids of the lifecycle span itself.
    pub trace_id: String,
    pub span_id: String,
    /// Hex ids of the request span the change belongs to (the span link).
    pub request_trace_id: Option<String>,
    pub request_span_id: Option<String>,
}

/// What one export request held.
#[derive(Debug, Default)]
pub struct Decoded {
    pub transitions: Vec<Transition>,
    /// Spans that are not lifecycle transitions.
    pub ignored: u64,
}

/// Decodes an `ExportTraceServiceRequest`; `Err` for bytes that are not one.
pub fn decode(bytes: &[u8], namespace: &str) -> Result<Decoded, String> {
    let req = otlp_in::decode(bytes)?;
    let mut out = Decoded::default();
    for r in otlp_in::spans(&req) {
        match transition(r.resource, r.span, namespace) {
            Some(t) => out.transitions.push(t),
            None => out.ignored += 1,
        }
    }
    Ok(out)
}

fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)?.value.as_ref()? {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A lifecycle transition: `order.id` and `order.status`, and either the span name `order {STATUS}`
/// or the order's lifecycle trace id (so request spans, which carry the same attributes, are not).
fn transition(resource: &[KeyValue], sp: &Span, namespace: &str) -> Option<Transition> {
    let order_id = attr_str(&sp.attributes, "order.id")?;
    let status = attr_str(&sp.attributes, "order.status")?;
    let trace_id = hex(&sp.trace_id);
    let lifecycle_trace = lifecycle_ids(namespace, &order_id).0.to_hex();
    if !(sp.name == format!("order {status}") || trace_id == lifecycle_trace) {
        return None;
    }
    if order_id.len() > 256 || status.len() > 128 {
        return None;
    }
    let at_ns = if sp.end_time_unix_nano > 0 {
        sp.end_time_unix_nano
    } else {
        sp.start_time_unix_nano
    };
    if at_ns == 0 {
        return None;
    }
    let service = attr_str(&sp.attributes, "service.name")
        .or_else(|| attr_str(resource, "service.name"))
        .unwrap_or_default();
    let link = sp
        .links
        .iter()
        .find(|l| attr_str(&l.attributes, "ordertrace.link").as_deref() == Some("request"))
        .or_else(|| sp.links.first());
    Some(Transition {
        order_id,
        status,
        at_ns,
        service,
        edge_previous: attr_str(&sp.attributes, "order.status.previous"),
        trace_id,
        span_id: hex(&sp.span_id),
        request_trace_id: link.map(|l| hex(&l.trace_id)).filter(|s| !s.is_empty()),
        request_span_id: link.map(|l| hex(&l.span_id)).filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::{span::Link, ResourceSpans, ScopeSpans};
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_lifecycle_spans_only() {
        let lc = lifecycle_ids("ns", "ORD-1").0 .0.to_vec();
        let span = |name: &str, trace: Vec<u8>| Span {
            name: name.into(),
            trace_id: trace,
            span_id: vec![1; 8],
            end_time_unix_nano: 5,
            attributes: vec![kv("order.id", "ORD-1"), kv("order.status", "SUBMITTED")],
            links: vec![Link {
                trace_id: vec![2; 16],
                span_id: vec![3; 8],
                attributes: vec![kv("ordertrace.link", "request")],
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![kv("service.name", "shop-api")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span("order SUBMITTED", lc.clone()),
                        span("shop.submit", vec![9; 16]),
                        span("custom", lc),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let d = decode(&req.encode_to_vec(), "ns").unwrap();
        assert_eq!(d.transitions.len(), 2);
        assert_eq!(d.ignored, 1);
        let t = &d.transitions[0];
        assert_eq!(t.service, "shop-api");
        assert_eq!(
            t.request_trace_id.as_deref(),
            Some("02".repeat(16).as_str())
        );
        assert_eq!(t.at_ns, 5);
        assert!(decode(b"\xff\xff\xff", "ns").is_err());
    }
}
