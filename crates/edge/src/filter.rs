//! The edge filter's per-request logic, host-agnostic: trace context in, rules applied, one SERVER span out.
//!
//! Envoy drives an HTTP stream through these callbacks, in order, each optional after the first:
//! `on_request_headers` → `on_request_body`* → `on_response_headers` → `on_response_body`* → `on_log`.
//! Nothing here ever blocks the stream: every callback returns after copying what it needs, and any failure
//! leaves the request as it was (fail open).

use ordertrace::config::{Config, Route, Source};
use ordertrace::host::{HeaderMap, RandomSource, StreamHost};
use ordertrace::jsonscan;
use ordertrace::metrics::Counters;
use ordertrace::order::{attrs, StatusMark};
use ordertrace::otlp::{AttrValue, Kind, LinkRecord, SpanRecord, StatusCode};
use ordertrace::template;
use ordertrace::text::cut;
use ordertrace::tracecontext::{
    parse_traceparent, sampling_decision, SpanId, TraceId, TraceParent, FLAG_RANDOM, FLAG_SAMPLED,
    TRACEPARENT_LEN,
};
use ordertrace::worker::Worker;

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
            w.record_transition(host, &mut span, "request", a.start_ns, end_ns);
        }
        if a.sampled {
            w.export(span);
        }
    }
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
                attributes.push((attrs::ORDER_ID.into(), AttrValue::Str(id)));
            }
            if let Some(status) = r.status.as_ref().and_then(|s| resolved.get(s)) {
                StatusMark::of((200..300).contains(&a.status_code)).apply(
                    status,
                    end_ns,
                    &mut attributes,
                    &mut events,
                );
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

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
