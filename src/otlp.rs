//! Spans as the core builds them, and their OTLP protobuf encoding.
//!
//! A finished span is redacted ([`crate::redact::encode_span`]), then encoded once into the bytes of an OTLP `Span` message and queued as
//! such; an export request is then framed around the queued bytes without re-encoding anything
//! (`ExportTraceServiceRequest { resource_spans: [ { resource, scope_spans: [ { scope, spans } ] } ] }`).

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

// Hand-written protobuf encoding of the OTLP messages the filter sends. The generated types would build a
// tree of owned Strings and Vecs per span only to serialise it once; writing the wire format straight
// from the record is a fraction of the instructions and of the code size. Field numbers are those of
// opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto; the tests decode the bytes with
// the generated types.

const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_FIXED32: u8 = 5;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// Length of a length-delimited field holding `len` bytes.
fn len_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WT_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// proto3: empty strings and zero scalars are not written.
fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

fn str_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field_len(field, s.len())
    }
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_key(out, field, WT_FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed64_len(field: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(field) + 8
    }
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        put_key(out, field, WT_FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32_len(field: u32, v: u32) -> usize {
    if v == 0 {
        0
    } else {
        key_len(field) + 4
    }
}

fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_key(out, field, WT_VARINT);
        put_varint(out, v);
    }
}

fn uint_len(field: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(field) + varint_len(v)
    }
}

/// `AnyValue` body: string_value = 1, bool_value = 2, int_value = 3 (a oneof: written even when zero).
fn any_value_len(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => len_field_len(1, s.len()),
        AttrValue::Bool(_) => 2,
        AttrValue::Int(i) => 1 + varint_len(*i as u64),
    }
}

fn put_any_value(out: &mut Vec<u8>, v: &AttrValue) {
    match v {
        AttrValue::Str(s) => put_bytes(out, 1, s.as_bytes()),
        AttrValue::Bool(b) => {
            put_key(out, 2, WT_VARINT);
            out.push(u8::from(*b));
        }
        AttrValue::Int(i) => {
            put_key(out, 3, WT_VARINT);
            put_varint(out, *i as u64);
        }
    }
}

/// `KeyValue` body: key = 1, value = 2 (AnyValue).
fn kv_len(k: &str, v: &AttrValue) -> usize {
    str_len(1, k) + len_field_len(2, any_value_len(v))
}

fn put_kv(out: &mut Vec<u8>, field: u32, k: &str, v: &AttrValue) {
    put_key(out, field, WT_LEN);
    put_varint(out, kv_len(k, v) as u64);
    put_str(out, 1, k);
    put_key(out, 2, WT_LEN);
    put_varint(out, any_value_len(v) as u64);
    put_any_value(out, v);
}

fn attrs_len(field: u32, attrs: &[(String, AttrValue)]) -> usize {
    attrs
        .iter()
        .map(|(k, v)| len_field_len(field, kv_len(k, v)))
        .sum()
}

fn put_attrs(out: &mut Vec<u8>, field: u32, attrs: &[(String, AttrValue)]) {
    for (k, v) in attrs {
        put_kv(out, field, k, v);
    }
}

/// `Span.Event` body: time_unix_nano = 1, name = 2, attributes = 3.
fn event_len(e: &EventRecord) -> usize {
    fixed64_len(1, e.time_ns) + str_len(2, &e.name) + attrs_len(3, &e.attributes)
}

/// `Span.Link` body: trace_id = 1, span_id = 2, attributes = 4, flags = 6.
fn link_len(l: &LinkRecord) -> usize {
    len_field_len(1, 16)
        + len_field_len(2, 8)
        + attrs_len(4, &l.attributes)
        + fixed32_len(6, link_flags(l))
}

/// Bits 0-7 are the W3C trace flags; bit 8 says "has_is_remote_mask", bit 9 whether the parent is remote.
fn span_flags(s: &SpanRecord) -> u32 {
    u32::from(s.trace_flags)
        | if s.parent_span_id.is_some() {
            0x300
        } else {
            0x100
        }
}

fn link_flags(l: &LinkRecord) -> u32 {
    u32::from(l.flags) | 0x300
}

fn kind_value(k: Kind) -> u64 {
    // SpanKind: INTERNAL = 1, SERVER = 2, CLIENT = 3, PRODUCER = 4, CONSUMER = 5.
    match k {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    }
}

/// `Status` body: message = 2, code = 3 (OK = 1, ERROR = 2); None when unset.
fn status_body(s: &SpanRecord) -> Option<(&str, u64)> {
    match s.status {
        StatusCode::Unset => None,
        StatusCode::Ok => Some(("", 1)),
        StatusCode::Error => Some((s.status_message.as_str(), 2)),
    }
}

/// The bytes of the OTLP `Span` message for a (redacted) record: trace_id = 1, span_id = 2,
/// parent_span_id = 4, name = 5, kind = 6, start = 7, end = 8, attributes = 9, events = 11, links = 13,
/// status = 15, flags = 16.
/// The bytes of one OTLP `Span` message, as the record is. Crate-private: outside the core a span is
/// encoded only through [`crate::redact::encode_span`], which redacts first.
pub(crate) fn encode_record(s: &SpanRecord) -> Vec<u8> {
    let end_ns = s.end_ns.max(s.start_ns);
    let status = status_body(s);
    let status_len = status.map(|(m, c)| str_len(2, m) + uint_len(3, c));
    let len = len_field_len(1, 16)
        + len_field_len(2, 8)
        + s.parent_span_id.map_or(0, |_| len_field_len(4, 8))
        + str_len(5, &s.name)
        + uint_len(6, kind_value(s.kind))
        + fixed64_len(7, s.start_ns)
        + fixed64_len(8, end_ns)
        + attrs_len(9, &s.attributes)
        + s.events
            .iter()
            .map(|e| len_field_len(11, event_len(e)))
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| len_field_len(13, link_len(l)))
            .sum::<usize>()
        + status_len.map_or(0, |n| len_field_len(15, n))
        + fixed32_len(16, span_flags(s));
    let mut out = Vec::with_capacity(len);
    put_bytes(&mut out, 1, &s.trace_id.0);
    put_bytes(&mut out, 2, &s.span_id.0);
    if let Some(p) = &s.parent_span_id {
        put_bytes(&mut out, 4, &p.0);
    }
    put_str(&mut out, 5, &s.name);
    put_uint(&mut out, 6, kind_value(s.kind));
    put_fixed64(&mut out, 7, s.start_ns);
    put_fixed64(&mut out, 8, end_ns);
    put_attrs(&mut out, 9, &s.attributes);
    for e in &s.events {
        put_key(&mut out, 11, WT_LEN);
        put_varint(&mut out, event_len(e) as u64);
        put_fixed64(&mut out, 1, e.time_ns);
        put_str(&mut out, 2, &e.name);
        put_attrs(&mut out, 3, &e.attributes);
    }
    for l in &s.links {
        put_key(&mut out, 13, WT_LEN);
        put_varint(&mut out, link_len(l) as u64);
        put_bytes(&mut out, 1, &l.trace_id.0);
        put_bytes(&mut out, 2, &l.span_id.0);
        put_attrs(&mut out, 4, &l.attributes);
        put_fixed32(&mut out, 6, link_flags(l));
    }
    if let (Some((message, code)), Some(n)) = (status, status_len) {
        put_key(&mut out, 15, WT_LEN);
        put_varint(&mut out, n as u64);
        put_str(&mut out, 2, message);
        put_uint(&mut out, 3, code);
    }
    put_fixed32(&mut out, 16, span_flags(s));
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

impl BatchFrame {
    pub fn new(service: &str, instance_id: &str) -> BatchFrame {
        let mut attrs: Vec<(String, AttrValue)> =
            vec![("service.name".into(), AttrValue::Str(service.to_string()))];
        if !instance_id.is_empty() {
            attrs.push((
                "service.instance.id".into(),
                AttrValue::Str(instance_id.to_string()),
            ));
        }
        for (k, v) in [
            ("telemetry.sdk.name", "ordertrace"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", crate::VERSION),
        ] {
            attrs.push((k.into(), AttrValue::Str(v.to_string())));
        }
        // Resource { attributes = 1 }; InstrumentationScope { name = 1, version = 2 }.
        let mut resource = Vec::new();
        put_attrs(&mut resource, 1, &attrs);
        let mut resource_field = Vec::new();
        put_bytes(&mut resource_field, 1, &resource);
        let mut scope = Vec::new();
        put_str(&mut scope, 1, "ordertrace");
        put_str(&mut scope, 2, crate::VERSION);
        let mut scope_field = Vec::new();
        put_bytes(&mut scope_field, 1, &scope);
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
        let spans_len: usize = spans.clone().map(|s| len_field_len(2, s.len())).sum();
        let scope_spans_len = self.scope_field.len() + spans_len;
        let resource_spans_len = self.resource_field.len() + len_field_len(2, scope_spans_len);
        let total = len_field_len(1, resource_spans_len);
        let mut out = Vec::with_capacity(total);
        put_key(&mut out, 1, WT_LEN); // ExportTraceServiceRequest.resource_spans
        put_varint(&mut out, resource_spans_len as u64);
        out.extend_from_slice(&self.resource_field); // ResourceSpans.resource
        put_key(&mut out, 2, WT_LEN); // ResourceSpans.scope_spans
        put_varint(&mut out, scope_spans_len as u64);
        out.extend_from_slice(&self.scope_field); // ScopeSpans.scope
        for s in spans {
            put_bytes(&mut out, 2, s); // ScopeSpans.spans
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{encode_span, Redactor};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;

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

    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};

    /// The reference: the same span built with the generated types and encoded by prost.
    fn prost_encoded(s: &SpanRecord) -> Vec<u8> {
        let kvs = |attrs: &[(String, AttrValue)]| -> Vec<KeyValue> {
            attrs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(AnyValue {
                        value: Some(match v {
                            AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
                            AttrValue::Int(i) => any_value::Value::IntValue(*i),
                            AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
                        }),
                    }),
                    ..Default::default()
                })
                .collect()
        };
        Span {
            trace_id: s.trace_id.0.to_vec(),
            span_id: s.span_id.0.to_vec(),
            trace_state: String::new(),
            parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
            flags: span_flags(s),
            name: s.name.clone(),
            kind: kind_value(s.kind) as i32,
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
                    flags: link_flags(l),
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
        .encode_to_vec()
    }

    #[test]
    fn hand_encoding_is_byte_identical_to_prost() {
        let mut rich = sample(7);
        rich.attributes.extend([
            ("neg".to_string(), AttrValue::Int(-5)),
            ("zero".to_string(), AttrValue::Int(0)),
            ("big".to_string(), AttrValue::Int(i64::MAX)),
            ("t".to_string(), AttrValue::Bool(true)),
            ("f".to_string(), AttrValue::Bool(false)),
            ("empty".to_string(), AttrValue::Str(String::new())),
            ("long".to_string(), AttrValue::Str("x".repeat(300))),
            (String::new(), AttrValue::Str("no key".into())),
        ]);
        rich.events.push(EventRecord {
            name: "e".into(),
            time_ns: 15,
            attributes: vec![("a".into(), AttrValue::Str("b".into()))],
        });
        rich.events.push(EventRecord {
            name: String::new(),
            time_ns: 0,
            attributes: vec![],
        });
        rich.links.push(LinkRecord {
            trace_id: TraceId([3; 16]),
            span_id: SpanId([4; 8]),
            flags: 0,
            attributes: vec![("ordertrace.link".into(), AttrValue::Str("caller".into()))],
        });
        let mut variants = vec![sample(1), rich.clone()];
        for (status, message) in [
            (StatusCode::Error, "boom"),
            (StatusCode::Error, ""),
            (StatusCode::Ok, "ignored"),
        ] {
            let mut s = rich.clone();
            s.status = status;
            s.status_message = message.into();
            variants.push(s);
        }
        let mut root = sample(2);
        root.parent_span_id = None;
        root.start_ns = 0;
        root.end_ns = 0;
        root.name = String::new();
        root.kind = Kind::Internal;
        variants.push(root);
        let mut backwards = sample(3);
        backwards.end_ns = 1; // before start: clamped to start, like before
        variants.push(backwards);
        for kind in [Kind::Client, Kind::Producer, Kind::Consumer] {
            let mut s = sample(4);
            s.kind = kind;
            variants.push(s);
        }
        for s in &variants {
            assert_eq!(encode_record(s), prost_encoded(s), "{s:?}");
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
