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
    encode_record(&span)
}

// ---------------------------------------------------------------------------------------------
// Direct encoding. Building the prost `Span` copied every key and value into new `String`s (two
// allocations per attribute, a dozen attributes per span) before encoding them; writing the protobuf
// straight from the record gives the same bytes (checked against prost in the tests) without the copies.
// Fields are written in tag order and, as proto3 wants, only when not default, except oneof members
// (`AnyValue.value`) and set message fields (`KeyValue.value`, `Span.status`), which are always written.

fn varint_len(v: usize) -> usize {
    encoded_len_varint(v as u64)
}

/// Tag + length + payload of a length-delimited field whose payload is `len` bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len) + len
}

fn str_field_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(s.len())
    }
}

fn put_len(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    if !b.is_empty() {
        put_len(tag, b.len(), out);
        out.extend_from_slice(b);
    }
}

fn put_fixed64(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_fixed32(tag: u32, v: u32, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_uint(tag: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

fn any_len(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => field_len(s.len()),
        AttrValue::Int(i) => 1 + encoded_len_varint(*i as u64),
        AttrValue::Bool(_) => 2,
    }
}

fn kv_len(key: &str, v: &AttrValue) -> usize {
    str_field_len(key) + field_len(any_len(v))
}

fn attrs_len(tag_bytes: usize, attrs: &[(String, AttrValue)]) -> usize {
    attrs
        .iter()
        .map(|(k, v)| {
            let l = kv_len(k, v);
            tag_bytes + varint_len(l) + l
        })
        .sum()
}

fn put_attrs(tag: u32, attrs: &[(String, AttrValue)], out: &mut Vec<u8>) {
    for (k, v) in attrs {
        put_len(tag, kv_len(k, v), out);
        put_bytes(1, k.as_bytes(), out); // KeyValue.key
        put_len(2, any_len(v), out); // KeyValue.value
        match v {
            AttrValue::Str(s) => {
                put_len(1, s.len(), out); // AnyValue.string_value
                out.extend_from_slice(s.as_bytes());
            }
            AttrValue::Bool(b) => {
                encode_key(2, WireType::Varint, out); // AnyValue.bool_value
                out.push(u8::from(*b));
            }
            AttrValue::Int(i) => {
                encode_key(3, WireType::Varint, out); // AnyValue.int_value
                encode_varint(*i as u64, out);
            }
        }
    }
}

fn fixed64_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        9
    }
}

fn event_len(e: &EventRecord) -> usize {
    fixed64_len(e.time_ns) + str_field_len(&e.name) + attrs_len(1, &e.attributes)
}

fn link_len(l: &LinkRecord) -> usize {
    field_len(16) + field_len(8) + attrs_len(1, &l.attributes) + 5
}

fn status_len(s: &SpanRecord) -> Option<usize> {
    match s.status {
        StatusCode::Unset => None,
        StatusCode::Ok => Some(2),
        StatusCode::Error => Some(str_field_len(&s.status_message) + 2),
    }
}

fn kind_value(k: Kind) -> u64 {
    (match k {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
        Kind::Producer => span::SpanKind::Producer,
        Kind::Consumer => span::SpanKind::Consumer,
    }) as u64
}

/// The OTLP `Span` message of a record: the same bytes as `to_proto(s).encode_to_vec()`.
pub fn encode_record(s: &SpanRecord) -> Vec<u8> {
    let end = s.end_ns.max(s.start_ns);
    let kind = kind_value(s.kind);
    let flags = u32::from(s.trace_flags)
        | if s.parent_span_id.is_some() {
            0x300
        } else {
            0x100
        };
    let events: usize = s
        .events
        .iter()
        .map(|e| {
            let l = event_len(e);
            1 + varint_len(l) + l
        })
        .sum();
    let links: usize = s
        .links
        .iter()
        .map(|l| {
            let n = link_len(l);
            1 + varint_len(n) + n
        })
        .sum();
    let status = status_len(s);
    let capacity = field_len(16)
        + field_len(8)
        + s.parent_span_id.map_or(0, |_| field_len(8))
        + str_field_len(&s.name)
        + 1
        + encoded_len_varint(kind)
        + fixed64_len(s.start_ns)
        + fixed64_len(end)
        + attrs_len(1, &s.attributes)
        + events
        + links
        + status.map_or(0, field_len)
        + 6;
    let mut out = Vec::with_capacity(capacity);
    put_bytes(1, &s.trace_id.0, &mut out);
    put_bytes(2, &s.span_id.0, &mut out);
    if let Some(p) = &s.parent_span_id {
        put_bytes(4, &p.0, &mut out);
    }
    put_bytes(5, s.name.as_bytes(), &mut out);
    put_uint(6, kind, &mut out);
    put_fixed64(7, s.start_ns, &mut out);
    put_fixed64(8, end, &mut out);
    put_attrs(9, &s.attributes, &mut out);
    for e in &s.events {
        put_len(11, event_len(e), &mut out);
        put_fixed64(1, e.time_ns, &mut out);
        put_bytes(2, e.name.as_bytes(), &mut out);
        put_attrs(3, &e.attributes, &mut out);
    }
    for l in &s.links {
        put_len(13, link_len(l), &mut out);
        put_bytes(1, &l.trace_id.0, &mut out);
        put_bytes(2, &l.span_id.0, &mut out);
        put_attrs(4, &l.attributes, &mut out);
        put_fixed32(6, u32::from(l.flags) | 0x300, &mut out);
    }
    if let Some(len) = status {
        put_len(15, len, &mut out);
        if s.status == StatusCode::Error {
            put_bytes(2, s.status_message.as_bytes(), &mut out);
        }
        let code = if s.status == StatusCode::Error {
            status::StatusCode::Error
        } else {
            status::StatusCode::Ok
        };
        put_uint(3, code as u64, &mut out);
    }
    put_fixed32(16, flags, &mut out);
    out
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

    /// Spans exercising every field and every default the encoder must skip (or keep).
    fn varied() -> Vec<SpanRecord> {
        let mut out = vec![sample(1)];
        let mut s = sample(2);
        s.parent_span_id = None;
        s.trace_flags = 0;
        s.name = String::new();
        s.kind = Kind::Consumer;
        s.start_ns = 0;
        s.end_ns = 0;
        s.attributes = vec![
            (String::new(), AttrValue::Str(String::new())),
            ("zero".into(), AttrValue::Int(0)),
            ("negative".into(), AttrValue::Int(-5)),
            ("big".into(), AttrValue::Int(i64::MAX)),
            ("no".into(), AttrValue::Bool(false)),
            ("yes".into(), AttrValue::Bool(true)),
            ("long".into(), AttrValue::Str("x".repeat(300))),
        ];
        s.events = vec![
            EventRecord {
                name: "e".into(),
                time_ns: 0,
                attributes: vec![],
            },
            EventRecord {
                name: String::new(),
                time_ns: 5,
                attributes: vec![("k".into(), AttrValue::Str("v".repeat(200)))],
            },
        ];
        s.links = vec![LinkRecord {
            trace_id: TraceId([0; 16]),
            span_id: SpanId([3; 8]),
            flags: 1,
            attributes: vec![("ordertrace.link".into(), AttrValue::Str("producer".into()))],
        }];
        s.status = StatusCode::Error;
        out.push(s.clone());
        s.status_message = "nack: refused".into();
        s.kind = Kind::Producer;
        s.end_ns = 3;
        out.push(s.clone());
        s.status = StatusCode::Ok;
        s.kind = Kind::Internal;
        s.start_ns = 7;
        out.push(s.clone());
        s.kind = Kind::Client;
        s.attributes = (0..40)
            .map(|i| (format!("k{i}"), AttrValue::Int(i)))
            .collect();
        out.push(s);
        out
    }

    #[test]
    fn direct_encoding_gives_the_bytes_prost_gives() {
        for s in varied() {
            assert_eq!(encode_record(&s), to_proto(&s).encode_to_vec(), "{s:?}");
        }
    }

    #[test]
    fn empty_batch_is_valid() {
        let frame = BatchFrame::new("s", "");
        let bytes = frame.export_request(std::iter::empty());
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert!(req.resource_spans[0].scope_spans[0].spans.is_empty());
    }
}
