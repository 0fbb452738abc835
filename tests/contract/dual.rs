//! The dual run: one [`Case`] through the pure core natively (`Worker` + `RequestState` +
//! `MockStream`, export via `worker.queue.poll`) and through `dist/ordertrace.wasm` in the test
//! host (stream callbacks, `tick()`, the dispatched export answered 200), each reduced to an
//! [`Observed`] that the two runs must agree on:
//!
//! * request headers sent upstream (sorted; `traceparent` with its ids replaced by labels),
//! * every exported span (decoded from the OTLP protobuf; ids replaced by labels given in order of
//!   first appearance, so "parent id sent upstream = exported span id" is part of the comparison),
//! * the resource and scope of every export request, the number of export requests,
//! * the Envoy counters after the export vs `Worker.counters`, and the queue gauge.
//!
//! Incoming ids are labelled up front (`in0.trace`, `in0.parent`), so continuing a trace shows.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use ordertrace::config::Config;
use ordertrace::export::Next;
use ordertrace::metrics::{COUNTER_NAMES, QUEUE_GAUGE_NAME};
use ordertrace::order::lifecycle_ids;
use ordertrace::testing::MockStream;
use ordertrace::testing::SeededRandom;
use ordertrace::tracecontext::parse_traceparent;
use ordertrace::worker::Worker;
use ordertrace_edge::filter::RequestState;

use crate::cases::{
    filter_wasm, host_options, Case, Parent, FLUSH_MS, GAP_MS, LIFECYCLE_NS, NODE_ID, SEED,
    START_NS, TP_PARENT, TP_TRACE, UPSTREAM_MS,
};
use crate::host::{Action, Host};

/// Protobuf `SpanKind::Server`.
pub const KIND_SERVER: i32 = 2;
/// Protobuf `StatusCode::Error`.
pub const STATUS_ERROR: i32 = 2;

/// Ids replaced by stable names: `T1`, `S1`, ... in order of first appearance.
#[derive(Default)]
struct Labels {
    known: HashMap<Vec<u8>, String>,
    traces: usize,
    spans: usize,
}

impl Labels {
    fn seed(&mut self, id: &[u8], label: String) {
        self.known.entry(id.to_vec()).or_insert(label);
    }

    fn of(&mut self, id: &[u8]) -> String {
        if id.is_empty() {
            return "-".into();
        }
        if let Some(l) = self.known.get(id) {
            return l.clone();
        }
        let label = if id.len() == 16 {
            self.traces += 1;
            format!("T{}", self.traces)
        } else {
            self.spans += 1;
            format!("S{}", self.spans)
        };
        self.known.insert(id.to_vec(), label.clone());
        label
    }
}

/// Attributes as (key, value rendered with its protobuf type).
pub type Attrs = Vec<(String, String)>;
/// An event: (name, time, attributes).
pub type NormEvent = (String, u64, Attrs);
/// A link: (trace label, span label, flags, attributes).
pub type NormLink = (String, String, u32, Attrs);
/// An export request's frame: (resource attributes, scope name, scope version, span count).
pub type Frame = (Attrs, String, String, usize);

/// A span with its ids labelled and its values rendered with their protobuf type.
#[derive(Debug, PartialEq, Eq)]
pub struct NormSpan {
    pub name: String,
    pub kind: i32,
    pub trace: String,
    pub span: String,
    pub parent: String,
    pub flags: u32,
    pub trace_state: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Attrs,
    pub events: Vec<NormEvent>,
    pub links: Vec<NormLink>,
    /// (code, message)
    pub status: Option<(i32, String)>,
    pub dropped: (u32, u32, u32),
}

fn typed(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(v) => format!("{v:?}"),
        None => "None".into(),
    }
}

fn typed_attrs(kvs: &[KeyValue]) -> Attrs {
    kvs.iter()
        .map(|kv| (kv.key.clone(), typed(&kv.value)))
        .collect()
}

/// An attribute value as plain text (string, integer, boolean), for the expectations.
pub fn text(v: &Option<AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(&kv.value))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes an export request body; panics (test failure) on anything but valid OTLP.
pub fn decode_export(body: &[u8]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(body)
        .unwrap_or_else(|e| panic!("export body is not an ExportTraceServiceRequest: {e}"))
}

/// Every span of an export request, in order.
pub fn spans_of(body: &[u8]) -> Vec<Span> {
    decode_export(body)
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

/// What one run produced.
#[derive(Default)]
pub struct Observed {
    labels: Labels,
    /// Per exchange: the request headers sent upstream, sorted, `traceparent` labelled.
    pub upstream: Vec<Vec<(String, String)>>,
    /// Per exchange: the raw `traceparent` sent upstream.
    pub upstream_traceparent: Vec<Option<String>>,
    pub spans: Vec<NormSpan>,
    pub raw_spans: Vec<Span>,
    /// Per export request: resource attributes, scope name and version, and its span count.
    pub frames: Vec<Frame>,
    pub export_bodies: Vec<Vec<u8>>,
    pub counters: BTreeMap<String, i64>,
    pub queue_gauge: i64,
}

impl Observed {
    fn new(case: &Case) -> Self {
        let mut obs = Self::default();
        for (i, ex) in case.exchanges.iter().enumerate() {
            let tp = ex
                .request_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"));
            if let Some(Ok(tp)) = tp.map(|(_, v)| parse_traceparent(v.as_bytes())) {
                obs.labels.seed(&tp.trace_id.0, format!("in{i}.trace"));
                obs.labels.seed(&tp.parent_id.0, format!("in{i}.parent"));
            }
        }
        obs
    }

    fn push_upstream(&mut self, headers: Vec<(String, String)>) {
        let mut out = Vec::with_capacity(headers.len());
        let mut raw_tp = None;
        for (k, v) in headers {
            if k == "traceparent" {
                raw_tp = Some(v.clone());
                let v = match parse_traceparent(v.as_bytes()) {
                    Ok(tp) => format!(
                        "00-{}-{}-{:02x}",
                        self.labels.of(&tp.trace_id.0),
                        self.labels.of(&tp.parent_id.0),
                        tp.flags
                    ),
                    Err(e) => format!("UNPARSABLE({v}): {e:?}"),
                };
                out.push((k, v));
            } else {
                out.push((k, v));
            }
        }
        out.sort();
        self.upstream.push(out);
        self.upstream_traceparent.push(raw_tp);
    }

    fn push_export(&mut self, body: &[u8]) {
        let req = decode_export(body);
        for rs in &req.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| typed_attrs(&r.attributes))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                let (name, version) = ss
                    .scope
                    .as_ref()
                    .map(|s| (s.name.clone(), s.version.clone()))
                    .unwrap_or_default();
                self.frames
                    .push((resource.clone(), name, version, ss.spans.len()));
                for s in &ss.spans {
                    let norm = self.normalise(s);
                    self.spans.push(norm);
                    self.raw_spans.push(s.clone());
                }
            }
        }
        self.export_bodies.push(body.to_vec());
    }

    fn normalise(&mut self, s: &Span) -> NormSpan {
        let trace = self.labels.of(&s.trace_id);
        let span = self.labels.of(&s.span_id);
        let parent = self.labels.of(&s.parent_span_id);
        let links = s
            .links
            .iter()
            .map(|l| {
                (
                    self.labels.of(&l.trace_id),
                    self.labels.of(&l.span_id),
                    l.flags,
                    typed_attrs(&l.attributes),
                )
            })
            .collect();
        NormSpan {
            name: s.name.clone(),
            kind: s.kind,
            trace,
            span,
            parent,
            flags: s.flags,
            trace_state: s.trace_state.clone(),
            start_ns: s.start_time_unix_nano,
            end_ns: s.end_time_unix_nano,
            attrs: typed_attrs(&s.attributes),
            events: s
                .events
                .iter()
                .map(|e| (e.name.clone(), e.time_unix_nano, typed_attrs(&e.attributes)))
                .collect(),
            links,
            status: s.status.as_ref().map(|st| (st.code, st.message.clone())),
            dropped: (
                s.dropped_attributes_count,
                s.dropped_events_count,
                s.dropped_links_count,
            ),
        }
    }

    /// The request span of the last exchange (the last SERVER span), if one was exported.
    pub fn server_span(&self) -> Option<&Span> {
        self.raw_spans.iter().rev().find(|s| s.kind == KIND_SERVER)
    }

    pub fn span_names(&self) -> Vec<&str> {
        self.spans.iter().map(|s| s.name.as_str()).collect()
    }
}

fn lowercase(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Native run

pub fn run_native(case: &Case) -> Observed {
    let config = Config::from_json(case.config.as_bytes())
        .unwrap_or_else(|e| panic!("{}: native config rejected: {e}", case.name));
    let mut w = Worker::new(config, SeededRandom(SEED), NODE_ID);
    let mut obs = Observed::new(case);
    let mut clock = START_NS;
    let mut shared: HashMap<String, (Vec<u8>, u32)> = case
        .shared
        .iter()
        .map(|(k, v)| (k.clone(), (v.clone(), 1)))
        .collect();
    for ex in &case.exchanges {
        let headers = ex.request_headers_str();
        let mut h = MockStream::new(&headers);
        h.clock_ns = clock;
        h.shared = std::mem::take(&mut shared);
        h.code_details = ex.code_details.clone();
        let mut s = RequestState::default();
        s.on_request_headers(&mut w, &mut h, ex.request_chunks.is_empty());
        obs.push_upstream(
            h.request_headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        );
        for (i, chunk) in ex.request_chunks.iter().enumerate() {
            h.chunk = chunk.clone();
            let last = ex.request_chunk_ends_stream(i);
            s.on_request_body(&mut w, &mut h, chunk.len(), last);
        }
        // Request trailers: the core has no trailers callback (the SDK answers Continue).
        h.clock_ns += UPSTREAM_MS * 1_000_000;
        if let Some(response) = &ex.response_headers {
            h.response_headers = lowercase(response)
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            s.on_response_headers(&mut w, &mut h, ex.response_chunks.is_empty());
            for (i, chunk) in ex.response_chunks.iter().enumerate() {
                h.chunk = chunk.clone();
                let last = i + 1 == ex.response_chunks.len();
                s.on_response_body(&mut w, &mut h, chunk.len(), last);
            }
        }
        s.on_log(&mut w, &mut h);
        shared = h.shared;
        clock = h.clock_ns + GAP_MS * 1_000_000;
    }
    let now = clock + FLUSH_MS * 1_000_000;
    let mut token = 0;
    loop {
        match w.queue.poll(now, &w.frame) {
            Next::Idle => break,
            Next::Send(body) => {
                token += 1;
                obs.push_export(&body);
                w.queue.sent(token, &mut w.counters);
                assert!(w.queue.response(token, true, now, &mut w.counters));
            }
        }
        assert!(token < 1000, "{}: the native queue never drains", case.name);
    }
    for (name, value) in COUNTER_NAMES.iter().zip(w.counters.values()) {
        obs.counters
            .insert((*name).to_string(), i64::try_from(value).unwrap());
    }
    obs.queue_gauge = i64::try_from(w.queue.len()).unwrap();
    obs
}

// ---------------------------------------------------------------------------------------------
// Wasm run

/// Drives one exchange through the host as Envoy would; every callback must answer Continue.
pub fn drive(host: &mut Host, case: &str, ex: &crate::cases::Exchange) -> crate::host::StreamId {
    let s = host.new_http_stream().unwrap();
    if let Some(d) = &ex.code_details {
        host.set_stream_property(s, &["response", "code_details"], d.as_bytes().to_vec());
    }
    let headers = ex.request_headers_str();
    let a = host
        .request_headers(s, &headers, ex.request_chunks.is_empty())
        .unwrap();
    assert_eq!(a, Action::Continue, "{case}: request headers");
    for (i, chunk) in ex.request_chunks.iter().enumerate() {
        let last = ex.request_chunk_ends_stream(i);
        let a = host.request_body(s, chunk, last).unwrap();
        assert_eq!(a, Action::Continue, "{case}: request body chunk {i}");
    }
    if !ex.request_trailers.is_empty() {
        let trailers: Vec<(&str, &str)> = ex
            .request_trailers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let a = host.request_trailers(s, &trailers).unwrap();
        assert_eq!(a, Action::Continue, "{case}: request trailers");
    }
    host.advance_clock(UPSTREAM_MS);
    if let Some(response) = ex.response_headers_str() {
        let a = host
            .response_headers(s, &response, ex.response_chunks.is_empty())
            .unwrap();
        assert_eq!(a, Action::Continue, "{case}: response headers");
        for (i, chunk) in ex.response_chunks.iter().enumerate() {
            let last = i + 1 == ex.response_chunks.len();
            let a = host.response_body(s, chunk, last).unwrap();
            assert_eq!(a, Action::Continue, "{case}: response body chunk {i}");
        }
    }
    host.finish(s).unwrap();
    s
}

/// Ticks and answers every export with 200 until nothing is pending; the last tick flushes the
/// metrics. Calls `on_body` with each export request body.
pub fn drain_exports(host: &mut Host, mut on_body: impl FnMut(&[u8])) {
    host.advance_clock(FLUSH_MS);
    host.tick().unwrap();
    for _ in 0..1000 {
        let pending = host.pending_http_calls();
        if pending.is_empty() {
            return;
        }
        for call in pending {
            on_body(&call.body);
            host.respond_http_call(call.token, 200, &[], b"").unwrap();
        }
        host.advance_clock(FLUSH_MS);
        host.tick().unwrap();
    }
    panic!("the export never drains");
}

pub fn run_wasm(case: &Case) -> Observed {
    let mut host = Host::configured(filter_wasm(), host_options(), &case.config)
        .unwrap_or_else(|e| panic!("{}: wasm config rejected: {e}", case.name));
    let mut obs = Observed::new(case);
    for (key, value) in &case.shared {
        host.set_shared_data(key, value);
    }
    for ex in &case.exchanges {
        let s = drive(&mut host, case.name, ex);
        let stream = host.stream(s).unwrap();
        let sent = stream
            .request
            .forwarded_headers
            .as_ref()
            .expect("request headers forwarded");
        let upstream: Vec<(String, String)> = sent.pairs().to_vec();
        // Bodies and responses pass untouched.
        assert_eq!(
            stream.request.forwarded_body, stream.request.received_body,
            "{}: request body changed",
            case.name
        );
        assert_eq!(
            stream.request.forwarded_trailers, stream.request.trailers,
            "{}: request trailers changed",
            case.name
        );
        assert_eq!(
            stream.response.forwarded_headers, stream.response.headers,
            "{}: response headers changed",
            case.name
        );
        assert_eq!(
            stream.response.forwarded_body, stream.response.received_body,
            "{}: response body changed",
            case.name
        );
        obs.push_upstream(upstream);
        host.advance_clock(GAP_MS);
    }
    let mut bodies = Vec::new();
    drain_exports(&mut host, |b| bodies.push(b.to_vec()));
    for b in &bodies {
        obs.push_export(b);
    }
    for call in host.http_calls() {
        assert_eq!(call.cluster, crate::cases::CLUSTER);
        assert_eq!(call.headers.get(":path"), Some("/v1/traces"));
        assert_eq!(
            call.headers.get("content-type"),
            Some("application/x-protobuf")
        );
    }
    for name in COUNTER_NAMES {
        let v = host
            .counter(name)
            .unwrap_or_else(|| panic!("{}: counter {name} not defined", case.name));
        obs.counters.insert(name.to_string(), v);
    }
    obs.queue_gauge = host.gauge(QUEUE_GAUGE_NAME).unwrap_or(-1);
    assert!(
        host.request_map_access_in_response_phase().is_empty(),
        "{}: request headers read in a response callback: {:?}",
        case.name,
        host.request_map_access_in_response_phase()
    );
    assert!(
        host.violations().is_empty(),
        "{}: calls Envoy refuses: {:?}",
        case.name,
        host.violations()
    );
    assert!(host.crashed().is_none());
    obs
}

// ---------------------------------------------------------------------------------------------
// Checks

/// The case's own expectations, on one run (`side` names it in messages).
pub fn check_expect(case: &Case, obs: &Observed, side: &str) {
    let name = case.name;
    let e = &case.expect;
    assert_eq!(
        obs.span_names(),
        e.spans.iter().map(String::as_str).collect::<Vec<_>>(),
        "{name} ({side}): exported spans"
    );
    for (k, v) in &e.counters {
        assert_eq!(obs.counters.get(k), Some(v), "{name} ({side}): counter {k}");
    }
    let server = obs.server_span();
    if !e.attrs.is_empty() || e.events.is_some() || e.parent != Parent::Any {
        assert!(server.is_some(), "{name} ({side}): no SERVER span exported");
    }
    if let Some(span) = server {
        for (k, v) in &e.attrs {
            assert_eq!(
                attr(span, k).as_ref(),
                v.as_ref(),
                "{name} ({side}): attribute {k} of {}",
                span.name
            );
        }
        if let Some(events) = &e.events {
            let got: Vec<&str> = span.events.iter().map(|ev| ev.name.as_str()).collect();
            assert_eq!(got, *events, "{name} ({side}): events");
        }
        let error = span.status.as_ref().is_some_and(|s| s.code == STATUS_ERROR);
        assert_eq!(error, e.error, "{name} ({side}): span status ERROR");
        match e.parent {
            Parent::Any => {}
            Parent::Incoming => {
                assert_eq!(hex(&span.trace_id), TP_TRACE, "{name} ({side}): trace id");
                assert_eq!(
                    hex(&span.parent_span_id),
                    TP_PARENT,
                    "{name} ({side}): parent"
                );
            }
            Parent::NewTrace => {
                assert_ne!(hex(&span.trace_id), TP_TRACE, "{name} ({side}): new trace");
                assert!(
                    span.parent_span_id.is_empty(),
                    "{name} ({side}): a new trace has no parent"
                );
            }
        }
        // The edge span is the upstream's parent.
        let tp = obs
            .upstream_traceparent
            .last()
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{name} ({side}): no traceparent sent upstream"));
        let tp = parse_traceparent(tp.as_bytes()).unwrap();
        assert_eq!(tp.trace_id.0.to_vec(), span.trace_id, "{name} ({side})");
        assert_eq!(
            tp.parent_id.0.to_vec(),
            span.span_id,
            "{name} ({side}): upstream parent = exported span"
        );
        assert_eq!(u32::from(tp.flags), span.flags & 0xff, "{name} ({side})");
    }
    // Upstream: untouched except traceparent (and the headers the case lets the filter remove).
    for (i, (ex, sent)) in case.exchanges.iter().zip(&obs.upstream).enumerate() {
        let mut want: Vec<(String, String)> = lowercase(&ex.request_headers)
            .into_iter()
            .filter(|(k, _)| k != "traceparent" && !e.removed.contains(k))
            .collect();
        want.sort();
        let got: Vec<(String, String)> = sent
            .iter()
            .filter(|(k, _)| k != "traceparent")
            .cloned()
            .collect();
        assert_eq!(got, want, "{name} ({side}): exchange {i} headers upstream");
        assert_eq!(
            sent.iter().filter(|(k, _)| k == "traceparent").count(),
            1,
            "{name} ({side}): exactly one traceparent upstream"
        );
    }
    let tp = obs.upstream_traceparent.last().cloned().flatten();
    let tp = parse_traceparent(tp.unwrap_or_default().as_bytes())
        .unwrap_or_else(|err| panic!("{name} ({side}): traceparent upstream: {err:?}"));
    assert_eq!(
        tp.sampled(),
        e.upstream_sampled,
        "{name} ({side}): sampled flag upstream"
    );
    for bad in &e.forbidden {
        for body in &obs.export_bodies {
            assert!(
                !body.windows(bad.len()).any(|w| w == bad.as_bytes()),
                "{name} ({side}): {bad:?} leaked into the export"
            );
        }
    }
    // Lifecycle spans live in the order's deterministic trace.
    for s in &obs.raw_spans {
        if s.name == "order.lifecycle" || s.name.starts_with("order ") {
            let order = attr(s, "order.id").expect("lifecycle span has order.id");
            let (trace, root) = lifecycle_ids(LIFECYCLE_NS, &order);
            assert_eq!(s.trace_id, trace.0.to_vec(), "{name} ({side}): {}", s.name);
            if s.name == "order.lifecycle" {
                assert_eq!(s.span_id, root.0.to_vec());
                assert!(s.parent_span_id.is_empty());
            } else {
                assert_eq!(s.parent_span_id, root.0.to_vec(), "{name} ({side})");
            }
        }
    }
    assert_eq!(obs.queue_gauge, 0, "{name} ({side}): queue drained");
}

/// Both runs must agree on everything observable.
pub fn check_agreement(case: &Case, native: &Observed, wasm: &Observed) {
    let name = case.name;
    assert_eq!(
        native.upstream, wasm.upstream,
        "{name}: headers sent upstream differ (left native, right wasm)"
    );
    assert_eq!(
        native.spans.len(),
        wasm.spans.len(),
        "{name}: span count differs: native {:?} wasm {:?}",
        native.span_names(),
        wasm.span_names()
    );
    for (i, (n, w)) in native.spans.iter().zip(&wasm.spans).enumerate() {
        assert_eq!(n, w, "{name}: span {i} differs (left native, right wasm)");
    }
    assert_eq!(
        native.frames, wasm.frames,
        "{name}: export requests (resource, scope, spans per request) differ"
    );
    assert_eq!(
        native.counters, wasm.counters,
        "{name}: counters differ (left native Worker.counters, right Envoy metrics)"
    );
    assert_eq!(native.queue_gauge, wasm.queue_gauge, "{name}: queue gauge");
}

/// The whole row: run both, check the expectations on each, then their agreement.
pub fn check_case(case: &Case) -> (Observed, Observed) {
    let native = run_native(case);
    let wasm = run_wasm(case);
    check_expect(case, &native, "native");
    check_expect(case, &wasm, "wasm");
    check_agreement(case, &native, &wasm);
    (native, wasm)
}
