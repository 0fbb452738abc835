//! Spans as the core builds them, their redaction, and their OTLP protobuf encoding.
//!
//! A finished span is redacted, then encoded once into the bytes of an OTLP `Span` message and queued as
//! such; an export request is then framed around the queued bytes without re-encoding anything
//! (`ExportTraceServiceRequest { resource_spans: [ { resource, scope_spans: [ { scope, spans } ] } ] }`).

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use crate::redact::{Redacted, Redactor};
use crate::tracecontext::{SpanId, TraceId};

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub name: String,
    pub time_ns: u64,
    pub attributes: Vec<(String, AttrValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
    pub attributes: Vec<(String, AttrValue)>,
}

/// A span before redaction and encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_flags: u8,
    pub name: String,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(String, AttrValue)>,
    pub events: Vec<EventRecord>,
    pub links: Vec<LinkRecord>,
    pub status: StatusCode,
    pub status_message: String,
}

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Attributes whose values the caller has already redacted with structure-aware rules (`url.path` keeps
/// template variables, `url.query` works per parameter); the generic pass leaves them alone.
pub const PRE_REDACTED: [&str; 2] = ["url.path", "url.query"];

fn redact_attrs(redactor: &Redactor, attrs: &mut Vec<(String, AttrValue)>) {
    attrs.retain_mut(|(k, v)| {
        if PRE_REDACTED.contains(&k.as_str()) {
            return true;
        }
        let AttrValue::Str(s) = v else { return true };
        match redactor.attribute(k, s) {
            Redacted::Drop => false,
            Redacted::Keep(std::borrow::Cow::Borrowed(_)) => true,
            Redacted::Keep(std::borrow::Cow::Owned(new)) => {
                *s = new;
                true
            }
        }
    });
}

fn redact_text(redactor: &Redactor, s: &mut String) {
    if let std::borrow::Cow::Owned(new) = redactor.text(s) {
        *s = new;
    }
}

/// Pass every string of the span through the redactor: span name, attribute values (by key rules and
/// detectors), event names and attributes, link attributes, the status message.
pub fn redact_span(redactor: &Redactor, span: &mut SpanRecord) {
    redact_text(redactor, &mut span.name);
    redact_attrs(redactor, &mut span.attributes);
    for e in &mut span.events {
        redact_text(redactor, &mut e.name);
        redact_attrs(redactor, &mut e.attributes);
    }
    for l in &mut span.links {
        redact_attrs(redactor, &mut l.attributes);
    }
    redact_text(redactor, &mut span.status_message);
}

fn kv(key: &str, value: &AttrValue) -> KeyValue {
    let v = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn kvs(attrs: &[(String, AttrValue)]) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| kv(k, v)).collect()
}

/// The protobuf `Span` message for a (redacted) record.
pub fn to_proto(s: &SpanRecord) -> Span {
    Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        // Bits 0-7 are the W3C trace flags; bit 8 says "has_is_remote_mask", bit 9 whether the parent is remote.
        flags: u32::from(s.trace_flags)
            | if s.parent_span_id.is_some() {
                0x300
            } else {
                0x100
            },
        name: s.name.clone(),
        kind: match s.kind {
            Kind::Internal => span::SpanKind::Internal,
            Kind::Server => span::SpanKind::Server,
            Kind::Client => span::SpanKind::Client,
            Kind::Producer => span::SpanKind::Producer,
            Kind::Consumer => span::SpanKind::Consumer,
        } as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns.max(s.start_ns),
        attributes: kvs(&s.attributes),
        dropped_attributes_count: 0,
        events: s
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.time_ns,
                name: e.name.clone(),
                attributes: kvs(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: s
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.0.to_vec(),
                span_id: l.span_id.0.to_vec(),
                trace_state: String::new(),
                attributes: kvs(&l.attributes),
                dropped_attributes_count: 0,
                flags: u32::from(l.flags) | 0x300,
            })
            .collect(),
        dropped_links_count: 0,
        status: match s.status {
            StatusCode::Unset => None,
            StatusCode::Ok => Some(Status {
                message: String::new(),
                code: status::StatusCode::Ok as i32,
            }),
            StatusCode::Error => Some(Status {
                message: s.status_message.clone(),
                code: status::StatusCode::Error as i32,
            }),
        },
    }
}

/// Redact, then encode: the bytes of one OTLP `Span` message. The only way the core turns a span into bytes.
pub fn encode_span(redactor: &Redactor, mut span: SpanRecord) -> Vec<u8> {
    redact_span(redactor, &mut span);
    to_proto(&span).encode_to_vec()
}

/// The parts of an export request that do not change between batches, encoded once per VM.
#[derive(Debug, Clone)]
pub struct BatchFrame {
    /// `resource` field (tag + length + Resource bytes) of ResourceSpans.
    resource_field: Vec<u8>,
    /// `scope` field (tag + length + InstrumentationScope bytes) of ScopeSpans.
    scope_field: Vec<u8>,
}

fn len_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

impl BatchFrame {
    pub fn new(service: &str, instance_id: &str) -> BatchFrame {
        let mut attrs = vec![
            kv("service.name", &AttrValue::Str(service.to_string())),
            kv(
                "telemetry.sdk.name",
                &AttrValue::Str("ordertrace".to_string()),
            ),
            kv(
                "telemetry.sdk.language",
                &AttrValue::Str("rust".to_string()),
            ),
            kv(
                "telemetry.sdk.version",
                &AttrValue::Str(crate::VERSION.to_string()),
            ),
        ];
        if !instance_id.is_empty() {
            attrs.insert(
                1,
                kv(
                    "service.instance.id",
                    &AttrValue::Str(instance_id.to_string()),
                ),
            );
        }
        let resource = Resource {
            attributes: attrs,
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "ordertrace".to_string(),
            version: crate::VERSION.to_string(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        };
        let mut resource_field = Vec::new();
        len_field(1, &resource.encode_to_vec(), &mut resource_field);
        let mut scope_field = Vec::new();
        len_field(1, &scope.encode_to_vec(), &mut scope_field);
        BatchFrame {
            resource_field,
            scope_field,
        }
    }

    /// An `ExportTraceServiceRequest` holding the given encoded spans, in order.
    pub fn export_request<'a, I>(&self, spans: I) -> Vec<u8>
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        let spans_len: usize = spans
            .clone()
            .map(|s| 1 + encoded_len_varint(s.len() as u64) + s.len())
            .sum();
        let scope_spans_len = self.scope_field.len() + spans_len;
        let resource_spans_len = self.resource_field.len()
            + 1
            + encoded_len_varint(scope_spans_len as u64)
            + scope_spans_len;
        let total = 1 + encoded_len_varint(resource_spans_len as u64) + resource_spans_len;
        let mut out = Vec::with_capacity(total);
        encode_key(1, WireType::LengthDelimited, &mut out); // ExportTraceServiceRequest.resource_spans
        encode_varint(resource_spans_len as u64, &mut out);
        out.extend_from_slice(&self.resource_field); // ResourceSpans.resource
        encode_key(2, WireType::LengthDelimited, &mut out); // ResourceSpans.scope_spans
        encode_varint(scope_spans_len as u64, &mut out);
        out.extend_from_slice(&self.scope_field); // ScopeSpans.scope
        for s in spans {
            len_field(2, s, &mut out); // ScopeSpans.spans
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    fn sample(n: u8) -> SpanRecord {
        SpanRecord {
            trace_id: TraceId([n; 16]),
            span_id: SpanId([n; 8]),
            parent_span_id: Some(SpanId([9; 8])),
            trace_flags: 1,
            name: format!("span-{n}"),
            kind: Kind::Server,
            start_ns: 10,
            end_ns: 20,
            attributes: vec![
                ("order.id".into(), AttrValue::Str("ORD-1".into())),
                ("http.response.status_code".into(), AttrValue::Int(200)),
            ],
            events: vec![],
            links: vec![],
            status: StatusCode::Unset,
            status_message: String::new(),
        }
    }

    #[test]
    fn framed_batch_decodes_as_export_request() {
        let frame = BatchFrame::new("shop-api", "node-1");
        let r = Redactor::disabled();
        let spans: Vec<Vec<u8>> = (1..=3).map(|n| encode_span(&r, sample(n))).collect();
        let bytes = frame.export_request(spans.iter().map(|s| s.as_slice()));
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        let attr = |k: &str| res.attributes.iter().find(|a| a.key == k).cloned().unwrap();
        assert_eq!(
            attr("service.name").value.unwrap().value,
            Some(any_value::Value::StringValue("shop-api".into()))
        );
        assert_eq!(
            attr("service.instance.id").value.unwrap().value,
            Some(any_value::Value::StringValue("node-1".into()))
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "ordertrace");
        let names: Vec<_> = ss.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["span-1", "span-2", "span-3"]);
        assert_eq!(ss.spans[0].parent_span_id, vec![9; 8]);
        assert_eq!(ss.spans[0].flags, 0x301);
    }

    #[test]
    fn empty_batch_is_valid() {
        let frame = BatchFrame::new("s", "");
        let bytes = frame.export_request(std::iter::empty());
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert!(req.resource_spans[0].scope_spans[0].spans.is_empty());
    }
}
