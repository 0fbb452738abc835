//! The edge filter's per-request logic, host-agnostic: trace context in, rules applied, one SERVER span out.
//!
//! Envoy drives an HTTP stream through these callbacks, in order, each optional after the first:
//! `on_request_headers` → `on_request_body`* → `on_response_headers` → `on_response_body`* → `on_log`.
//! Nothing here ever blocks the stream: every callback returns after copying what it needs, and any failure
//! leaves the request as it was (fail open).

use crate::config::{Config, Route, Source};
use crate::export::ExportQueue;
use crate::host::{HeaderMap, RandomSource, StreamHost};
use crate::ids::IdGenerator;
use crate::jsonscan;
use crate::lifecycle::LastStatus;
use crate::metrics::{Counters, Labelled, LabelledMetrics};
use crate::otlp::{
    self, AttrValue, BatchFrame, EventRecord, Kind, LinkRecord, SpanRecord, StatusCode,
};
use crate::template;
use crate::tracecontext::{
    parse_traceparent, sampling_decision, SpanId, TraceId, TraceParent, FLAG_RANDOM, FLAG_SAMPLED,
    TRACEPARENT_LEN,
};

/// Values longer than this are cut (at a character boundary) before they become attributes.
pub const MAX_VALUE_BYTES: usize = 256;

/// Everything one worker (one Envoy worker thread, one wasm VM) shares between its streams.
pub struct Worker<R: RandomSource> {
    pub config: Config,
    pub ids: IdGenerator<R>,
    pub counters: Counters,
    /// Per-route and per-status metrics with labels, flushed on tick.
    pub labelled: LabelledMetrics,
    pub queue: ExportQueue,
    pub frame: BatchFrame,
    digests: DigestCache,
}

/// The lifecycle digests (an HMAC-SHA256 each) of the last few orders this worker saw. An order's
/// requests come in runs — retries, polling, the calls of one step — and the HMAC is the largest single
/// cost of a traced request's transition check, so a small round-robin cache pays for itself.
#[derive(Default)]
struct DigestCache {
    entries: Vec<(String, [u8; 32])>,
    next: usize,
}

const DIGEST_CACHE_ENTRIES: usize = 8;

impl DigestCache {
    fn get(&mut self, lc: &crate::lifecycle::Lifecycle, order_id: &str) -> [u8; 32] {
        if let Some((_, d)) = self.entries.iter().find(|(id, _)| id == order_id) {
            return *d;
        }
        let d = lc.order_digest(order_id);
        let entry = (order_id.to_string(), d);
        if self.entries.len() < DIGEST_CACHE_ENTRIES {
            self.entries.push(entry);
        } else if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = entry;
        }
        self.next = (self.next + 1) % DIGEST_CACHE_ENTRIES;
        d
    }
}

impl<R: RandomSource> Worker<R> {
    pub fn new(config: Config, random: R, instance_id: &str) -> Self {
        let queue = ExportQueue::new(
            config.collector.max_queue_spans,
            config.collector.max_batch_spans,
            config.collector.flush_interval_ms,
        );
        let frame = BatchFrame::new(&config.service, instance_id);
        let labelled =
            LabelledMetrics::with_routes(config.routes.iter().map(|r| r.span_name.clone()));
        Worker {
            config,
            ids: IdGenerator::new(random),
            counters: Counters::default(),
            labelled,
            queue,
            frame,
            digests: DigestCache::default(),
        }
    }
}

/// Per-stream state. `Default` is the state before the request headers arrive.
#[derive(Default)]
pub struct RequestState {
    active: Option<Box<Active>>,
}

/// A stream that will produce a span.
struct Active {
    /// The request span is exported; an unsampled stream is only kept for its lifecycle transition.
    sampled: bool,
    route: Option<usize>,
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    flags: u8,
    /// The caller's context at a public edge, which starts a new trace linked to it.
    link: Option<TraceParent>,
    start_ns: u64,
    method: String,
    path: String,
    authority: String,
    /// Percent-decoded values of the matched template's variables, by variable index.
    path_vars: Vec<String>,
    /// Header values some source of the matched route reads: (lowercase name, value).
    header_values: Vec<(String, String)>,
    request_body: Capture,
    response_body: Capture,
    status_code: u16,
}

/// A bounded copy of a body's first bytes.
#[derive(Default)]
struct Capture {
    wanted: bool,
    done: bool,
    buf: Vec<u8>,
}

impl Capture {
    /// Copy what fits of a chunk of `size` bytes; `read(start, len)` fetches it from the host.
    fn take(
        &mut self,
        size: usize,
        end_of_stream: bool,
        max: usize,
        counters: &mut Counters,
        read: impl FnOnce(usize) -> Option<Vec<u8>>,
    ) {
        if !self.wanted || self.done {
            return;
        }
        let room = max.saturating_sub(self.buf.len());
        let want = size.min(room);
        if want > 0 {
            if let Some(bytes) = read(want) {
                let n = bytes.len().min(want);
                self.buf
                    .extend_from_slice(bytes.get(..n).unwrap_or_default());
            }
        }
        if size > room {
            // The rest of the body streams on uninspected; fields in the prefix are still found.
            counters.body_limit_hits += 1;
            self.done = true;
        }
        if end_of_stream {
            self.done = true;
        }
    }
}

fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence.ends_with("+json")
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE_BYTES {
        let mut end = MAX_VALUE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get(name)
}

impl RequestState {
    pub fn is_traced(&self) -> bool {
        self.active.is_some()
    }

    pub fn on_request_headers<R: RandomSource>(
        &mut self,
        w: &mut Worker<R>,
        host: &mut impl StreamHost,
        end_of_stream: bool,
    ) {
        let headers = host.request_headers();
        let cfg = &w.config;

        // Trace context: continue a valid incoming one, else start a new trace.
        let incoming = header(&headers, "traceparent").map(parse_traceparent);
        let (trace_id, parent, flags, link) = match incoming {
            Some(Ok(tp)) if !cfg.public_edge => {
                // Reserved flag bits must be zero when sending (W3C): keep only sampled and random.
                (
                    tp.trace_id,
                    Some(tp.parent_id),
                    tp.flags & (FLAG_SAMPLED | FLAG_RANDOM),
                    None,
                )
            }
            Some(Ok(tp)) => {
                let t = w.ids.trace_id();
                (t, None, sample_flags(cfg.sampling_ratio, &t), Some(tp))
            }
            Some(Err(_)) => {
                w.counters.traceparent_malformed += 1;
                // A tracestate that came with an unusable traceparent belongs to no trace we continue.
                if header(&headers, "tracestate").is_some() {
                    host.remove_request_header("tracestate");
                }
                let t = w.ids.trace_id();
                (t, None, sample_flags(cfg.sampling_ratio, &t), None)
            }
            None => {
                w.counters.traceparent_created += 1;
                let t = w.ids.trace_id();
                (t, None, sample_flags(cfg.sampling_ratio, &t), None)
            }
        };
        let span_id = w.ids.span_id();
        let out = TraceParent {
            trace_id,
            parent_id: span_id,
            flags,
        };
        let mut value = [0u8; TRACEPARENT_LEN];
        out.write_into(&mut value);
        host.set_request_header("traceparent", &value);

        if cfg.public_edge {
            if let Some(b) = header(&headers, "baggage") {
                let original = String::from_utf8_lossy(b);
                match cfg.redactor.filter_baggage(&original) {
                    Some(kept) if kept == original => {}
                    Some(kept) => {
                        w.counters.baggage_filtered += 1;
                        host.set_request_header("baggage", kept.as_bytes());
                    }
                    None => {
                        w.counters.baggage_filtered += 1;
                        host.remove_request_header("baggage");
                    }
                }
            }
        }

        let sampled = flags & FLAG_SAMPLED != 0;
        let method = header(&headers, ":method")
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .unwrap_or_default();
        let path = header(&headers, ":path")
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let authority = header(&headers, ":authority")
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();

        let mut route = None;
        let mut path_vars = Vec::new();
        let mut header_values = Vec::new();
        let mut request_body = Capture::default();
        if let Some((i, r, caps)) = cfg.find_route(&method, &path) {
            let records_transition = cfg.lifecycle.enabled && r.status.is_some();
            if !sampled && !records_transition {
                return; // not sampled and no lifecycle transition to record: propagate only
            }
            w.counters.rule_matches += 1;
            route = Some(i);
            path_vars = (0..r.template.variables().len())
                .map(|v| {
                    caps.get(v)
                        .map(|s| template::percent_decode(s).into_owned())
                        .unwrap_or_default()
                })
                .collect();
            for s in route_sources(r) {
                if let Source::Header(h) = s {
                    if let Some(v) = header(&headers, h) {
                        header_values.push((h.clone(), String::from_utf8_lossy(v).into_owned()));
                    }
                }
            }
            request_body.wanted = r.needs_request_body()
                && !end_of_stream
                && is_json(header(&headers, "content-type"));
        } else if !sampled {
            return;
        }

        self.active = Some(Box::new(Active {
            sampled,
            route,
            trace_id,
            span_id,
            parent,
            flags,
            link,
            start_ns: host.now_nanos(),
            method,
            path,
            authority,
            path_vars,
            header_values,
            request_body,
            response_body: Capture::default(),
            status_code: 0,
        }));
    }

    pub fn on_request_body<R: RandomSource>(
        &mut self,
        w: &mut Worker<R>,
        host: &mut impl StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let max = w.config.body_max_bytes;
        a.request_body
            .take(body_size, end_of_stream, max, &mut w.counters, |n| {
                host.request_body(0, n)
            });
    }

    pub fn on_response_headers<R: RandomSource>(
        &mut self,
        w: &mut Worker<R>,
        host: &mut impl StreamHost,
        end_of_stream: bool,
    ) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        // Only response headers here: reading request headers now is a BadArgument in Envoy.
        a.status_code = host
            .response_header(":status")
            .and_then(|s| {
                std::str::from_utf8(&s)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            })
            .unwrap_or(0);
        let wants_body = a
            .route
            .and_then(|i| w.config.routes.get(i))
            .is_some_and(Route::needs_response_body);
        if wants_body && !end_of_stream {
            a.response_body.wanted = is_json(host.response_header("content-type").as_deref());
        }
    }

    pub fn on_response_body<R: RandomSource>(
        &mut self,
        w: &mut Worker<R>,
        host: &mut impl StreamHost,
        body_size: usize,
        end_of_stream: bool,
    ) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let max = w.config.body_max_bytes;
        a.response_body
            .take(body_size, end_of_stream, max, &mut w.counters, |n| {
                host.response_body(0, n)
            });
    }

    /// The stream is over: build, redact, encode and queue its span.
    pub fn on_log<R: RandomSource>(&mut self, w: &mut Worker<R>, host: &mut impl StreamHost) {
        let Some(a) = self.active.take() else { return };
        let end_ns = host.now_nanos();
        let failed = a.status_code == 0 || a.status_code >= 500;
        let failure = if failed {
            host.upstream_failure()
        } else {
            None
        };
        let mut span = build_span(&w.config, &a, end_ns, failure);
        if let Some(route) = a.route {
            let ms = end_ns.saturating_sub(a.start_ns) / 1_000_000;
            w.labelled.route_request(route, failed, ms);
        }
        if w.config.lifecycle.enabled {
            record_transition(w, host, &mut span, a.start_ns, end_ns);
        }
        if a.sampled {
            let bytes = otlp::encode_span(&w.config.redactor, span);
            w.queue.push(bytes, &mut w.counters);
        }
    }
}

/// A successful status change: look up the order's previous status in the per-Envoy table, annotate the
/// request span, and emit the lifecycle span (and, for the first status, the lifecycle root) into the
/// order's own trace. Lifecycle spans are exported whatever the sampling decision.
fn record_transition<R: RandomSource>(
    w: &mut Worker<R>,
    host: &mut impl StreamHost,
    span: &mut SpanRecord,
    start_ns: u64,
    end_ns: u64,
) {
    let (Some(AttrValue::Str(order_id)), Some(AttrValue::Str(status))) = (
        span.attr("order.id").cloned(),
        span.attr("order.status").cloned(),
    ) else {
        return;
    };
    let lc = &w.config.lifecycle;
    let digest = w.digests.get(lc, &order_id);
    let key = lc.slot_key(&digest);
    let mut previous: Option<LastStatus> = None;
    // Compare-and-swap: another worker may update the same slot between our read and write.
    for _ in 0..3 {
        let current = host.shared_get(&key);
        let cas = current.as_ref().map_or(0, |(_, c)| *c);
        previous = current
            .and_then(|(v, _)| LastStatus::decode(&v))
            .filter(|p| p.order_id == order_id);
        if previous.as_ref().is_some_and(|p| p.status == status) {
            return; // the same status again (a retry or a duplicate): not a transition
        }
        let record = LastStatus {
            order_id: order_id.clone(),
            status: status.clone(),
            at_ns: end_ns,
        };
        if host.shared_set(&key, &record.encode(), cas) {
            break;
        }
    }
    w.counters.transitions += 1;
    let status_label = if lc.is_known(&status) {
        status.clone()
    } else {
        "other".to_string()
    };
    w.labelled.count(Labelled::Transitions {
        service: w.config.service.clone(),
        status: status_label.clone(),
    });
    let mut extra: Vec<(String, AttrValue)> = Vec::new();
    if let Some(p) = &previous {
        extra.push((
            "order.status.previous".into(),
            AttrValue::Str(p.status.clone()),
        ));
        let ms = end_ns.saturating_sub(p.at_ns) / 1_000_000;
        if lc.is_known(&p.status) {
            w.labelled.sample(
                Labelled::StageDurationMs {
                    from: p.status.clone(),
                    to: status_label,
                },
                ms,
            );
        }
        extra.push((
            "order.stage.duration_ms".into(),
            AttrValue::Int(i64::try_from(ms).unwrap_or(i64::MAX)),
        ));
        if !lc.allowed(&p.status, &status) {
            w.counters.transitions_unexpected += 1;
            extra.push(("order.transition.unexpected".into(), AttrValue::Bool(true)));
        }
    }
    if !lc.is_known(&status) {
        w.counters.transitions_unexpected += 1;
        extra.push(("order.transition.unexpected".into(), AttrValue::Bool(true)));
    }
    span.attributes.extend(extra.iter().cloned());

    let (trace_id, root_id) = crate::lifecycle::ids_from_digest(&digest);
    let link = LinkRecord {
        trace_id: span.trace_id,
        span_id: span.span_id,
        flags: span.trace_flags,
        attributes: vec![("ordertrace.link".into(), AttrValue::Str("request".into()))],
    };
    let mut attributes = vec![
        ("order.id".to_string(), AttrValue::Str(order_id.clone())),
        ("order.status".to_string(), AttrValue::Str(status.clone())),
        (
            "service.name".to_string(),
            AttrValue::Str(w.config.service.clone()),
        ),
    ];
    attributes.extend(extra);
    let first = lc.statuses.first().is_some_and(|f| *f == status);
    if first {
        let root = SpanRecord {
            trace_id,
            span_id: root_id,
            parent_span_id: None,
            trace_flags: FLAG_SAMPLED,
            name: "order.lifecycle".into(),
            kind: Kind::Internal,
            start_ns,
            end_ns,
            attributes: vec![("order.id".to_string(), AttrValue::Str(order_id.clone()))],
            events: Vec::new(),
            links: Vec::new(),
            status: StatusCode::Unset,
            status_message: String::new(),
        };
        let bytes = otlp::encode_span(&w.config.redactor, root);
        w.queue.push(bytes, &mut w.counters);
    }
    let change = SpanRecord {
        trace_id,
        span_id: w.ids.span_id(),
        parent_span_id: Some(root_id),
        trace_flags: FLAG_SAMPLED,
        name: format!("order {status}"),
        kind: Kind::Internal,
        start_ns,
        end_ns,
        attributes,
        events: Vec::new(),
        links: vec![link],
        status: StatusCode::Unset,
        status_message: String::new(),
    };
    let bytes = otlp::encode_span(&w.config.redactor, change);
    w.queue.push(bytes, &mut w.counters);
}

fn sample_flags(ratio: f64, trace_id: &TraceId) -> u8 {
    u8::from(sampling_decision(ratio, trace_id))
}

fn route_sources(r: &Route) -> impl Iterator<Item = &Source> {
    r.order_id
        .iter()
        .chain(r.status.iter())
        .chain(r.attributes.iter().map(|(_, s)| s))
}

/// Resolved values of a route's sources for one request.
struct Resolved<'a> {
    a: &'a Active,
    query: Option<&'a str>,
    request: Vec<Option<String>>,
    response: Vec<Option<String>>,
}

impl Resolved<'_> {
    fn get(&self, s: &Source) -> Option<String> {
        let v = match s {
            Source::Literal(l) => Some(l.clone()),
            Source::PathVar(i) => self.a.path_vars.get(*i).filter(|v| !v.is_empty()).cloned(),
            Source::Header(h) => self
                .a
                .header_values
                .iter()
                .find(|(k, _)| k == h)
                .map(|(_, v)| v.clone()),
            Source::Query(q) => self.query.and_then(|qs| template::query_param(qs, q)),
            Source::RequestBody(i) => self.request.get(*i).cloned().flatten(),
            Source::ResponseBody(i) => self.response.get(*i).cloned().flatten(),
        };
        v.filter(|v| !v.is_empty()).map(cut)
    }
}

fn build_span(cfg: &Config, a: &Active, end_ns: u64, failure: Option<String>) -> SpanRecord {
    let route = a.route.and_then(|i| cfg.routes.get(i));
    let (path_only, query) = template::split_path_query(&a.path);
    let mut attributes: Vec<(String, AttrValue)> = Vec::with_capacity(12);
    let mut events = Vec::new();
    attributes.push((
        "http.request.method".into(),
        AttrValue::Str(a.method.clone()),
    ));

    // url.path keeps the matched template's variable segments (order ids) and redacts every other segment.
    let var_segments: &[usize] = route.map_or(&[], |r| r.var_segments.as_slice());
    let url_path = cfg
        .redactor
        .url_path(path_only, &|i| var_segments.contains(&i))
        .into_owned();
    attributes.push(("url.path".into(), AttrValue::Str(url_path)));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        attributes.push((
            "url.query".into(),
            AttrValue::Str(cfg.redactor.url_query(q).into_owned()),
        ));
    }
    if !a.authority.is_empty() {
        let (host, port) = split_authority(&a.authority);
        attributes.push(("server.address".into(), AttrValue::Str(host.to_string())));
        if let Some(p) = port {
            attributes.push(("server.port".into(), AttrValue::Int(i64::from(p))));
        }
    }
    if a.status_code > 0 {
        attributes.push((
            "http.response.status_code".into(),
            AttrValue::Int(i64::from(a.status_code)),
        ));
    }

    let name = match route {
        Some(r) => {
            attributes.push((
                "http.route".into(),
                AttrValue::Str(r.template.as_str().to_string()),
            ));
            let request = scan_capture(&a.request_body, &r.request_pointers);
            let response = scan_capture(&a.response_body, &r.response_pointers);
            let resolved = Resolved {
                a,
                query,
                request,
                response,
            };
            if let Some(id) = r.order_id.as_ref().and_then(|s| resolved.get(s)) {
                attributes.push(("order.id".into(), AttrValue::Str(id)));
            }
            if let Some(status) = r.status.as_ref().and_then(|s| resolved.get(s)) {
                if (200..300).contains(&a.status_code) {
                    attributes.push(("order.status".into(), AttrValue::Str(status)));
                    // When the change took effect. The order id and status are the span's own
                    // attributes; repeating them here cost 53 bytes per exported span.
                    events.push(EventRecord {
                        name: "order.status_changed".into(),
                        time_ns: end_ns,
                        attributes: Vec::new(),
                    });
                } else {
                    attributes.push(("order.status.attempted".into(), AttrValue::Str(status)));
                }
            }
            for (k, s) in &r.attributes {
                if let Some(v) = resolved.get(s) {
                    attributes.push((k.clone(), AttrValue::Str(v)));
                }
            }
            r.span_name.clone()
        }
        None if a.method.is_empty() => "HTTP".to_string(),
        None => a.method.clone(),
    };

    let failed = a.status_code == 0 || a.status_code >= 500;
    let mut status_message = String::new();
    if failed {
        let code = if a.status_code == 0 {
            "no_response".to_string()
        } else {
            a.status_code.to_string()
        };
        attributes.push(("error.type".into(), AttrValue::Str(code)));
        if let Some(f) = failure.filter(|f| !f.is_empty() && f != "-") {
            status_message = cut(f.clone());
            attributes.push(("envoy.response_flags".into(), AttrValue::Str(cut(f))));
        }
    }
    let links = a
        .link
        .map(|tp| {
            vec![LinkRecord {
                trace_id: tp.trace_id,
                span_id: tp.parent_id,
                flags: tp.flags,
                attributes: vec![("ordertrace.link".into(), AttrValue::Str("caller".into()))],
            }]
        })
        .unwrap_or_default();
    SpanRecord {
        trace_id: a.trace_id,
        span_id: a.span_id,
        parent_span_id: a.parent,
        trace_flags: a.flags,
        name,
        kind: Kind::Server,
        start_ns: a.start_ns,
        end_ns,
        attributes,
        events,
        links,
        status: if failed {
            StatusCode::Error
        } else {
            StatusCode::Unset
        },
        status_message,
    }
}

/// `host:port` → (host, port); IPv6 literals keep their brackets (`[::1]:80` → `[::1]`, 80).
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some((host, port)) = authority.rsplit_once(':') {
        if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) {
            if let Ok(p) = port.parse::<u16>() {
                return (host, Some(p));
            }
        }
    }
    (authority, None)
}

fn scan_capture(c: &Capture, pointers: &[jsonscan::JsonPointer]) -> Vec<Option<String>> {
    if pointers.is_empty() || c.buf.is_empty() {
        return vec![None; pointers.len()];
    }
    let refs: Vec<&jsonscan::JsonPointer> = pointers.iter().collect();
    jsonscan::scan(&c.buf, &refs)
}

/// Indices (in `path.split('/')`, the leading empty segment being 0) of a template's `{variable}` segments.
pub fn template_var_segments(template: &str) -> Vec<usize> {
    template
        .split('/')
        .enumerate()
        .filter(|(_, s)| s.starts_with('{'))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
