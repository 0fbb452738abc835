//! In-process OTLP/HTTP receivers: [`OtlpReceiver`] (decoded spans, scripted answers) and
//! [`RawOtlpReceiver`] (the request bodies exactly as received).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::httpd::{Limits, Response, Server, ServerHandle};
use super::{hex, poll};

// ---------------------------------------------------------------------------------------------
// In-process OTLP/HTTP receiver

/// How the receiver answers export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpMode {
    /// 200 with an empty ExportTraceServiceResponse.
    Ok,
    /// Always this status (spans are not kept).
    Status(u16),
    /// `status` for the first `times` requests, then Ok.
    StatusThenOk { status: u16, times: usize },
    /// Reads the request and never answers (until the receiver is dropped).
    NeverAnswer,
}

/// A span as received, with its resource and scope.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub scope_name: String,
    pub scope_version: String,
    pub span: Span,
}

fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn value_string(v: &AnyValue) -> Option<String> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

impl ReceivedSpan {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn attr(&self, key: &str) -> Option<&AnyValue> {
        find_attr(&self.span.attributes, key)
    }

    pub fn has_attr(&self, key: &str) -> bool {
        self.attr(key).is_some()
    }

    /// A string attribute (None when absent or not a string).
    pub fn attr_str(&self, key: &str) -> Option<String> {
        self.attr(key).and_then(value_string)
    }

    /// An int attribute (None when absent or not an int).
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attr(key)?.value {
            Some(any_value::Value::IntValue(i)) => Some(i),
            _ => None,
        }
    }

    pub fn resource_str(&self, key: &str) -> Option<String> {
        find_attr(&self.resource, key).and_then(value_string)
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A SERVER span: the one span per proxied request.
    pub fn is_server(&self) -> bool {
        self.span.kind == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    }

    /// `0` unset, `1` ok, `2` error.
    pub fn status_code(&self) -> i32 {
        self.span.status.as_ref().map_or(0, |s| s.code)
    }

    pub fn event(&self, name: &str) -> Option<&opentelemetry_proto::tonic::trace::v1::span::Event> {
        self.span.events.iter().find(|e| e.name == name)
    }

    /// Every attribute as `key=value` (for assertion messages).
    pub fn describe(&self) -> String {
        let attrs: Vec<String> = self
            .span
            .attributes
            .iter()
            .map(|kv| {
                format!(
                    "{}={:?}",
                    kv.key,
                    kv.value.as_ref().and_then(|v| v.value.clone())
                )
            })
            .collect();
        format!(
            "{} [{}] status={}",
            self.span.name,
            attrs.join(", "),
            self.status_code()
        )
    }
}

/// One export request as received (whatever the answer was).
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub spans: usize,
    pub answered: u16,
}

#[derive(Default)]
struct OtlpState {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<Vec<ExportRequest>>,
    changed: Condvar,
    stop: AtomicBool,
    seen: AtomicUsize,
}

/// An OTLP/HTTP protobuf receiver on a free port, in this process.
pub struct OtlpReceiver {
    server: ServerHandle,
    state: Arc<OtlpState>,
}

impl OtlpReceiver {
    pub fn start(mode: OtlpMode) -> OtlpReceiver {
        OtlpReceiver::start_on(0, mode)
    }

    /// On a given port (0 for any).
    pub fn start_on(port: u16, mode: OtlpMode) -> OtlpReceiver {
        let state = Arc::new(OtlpState::default());
        let st = Arc::clone(&state);
        let server = Server::bind(("127.0.0.1", port), Limits::default(), move |req, body| {
            let n = st.seen.fetch_add(1, Ordering::SeqCst);
            let bytes = match body.read_to_vec(64 << 20) {
                Ok(b) => b,
                Err(e) => return Response::text(e.status(), &e.to_string()),
            };
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice());
            let answer = match (mode, &decoded) {
                (_, Err(_)) => 400,
                (OtlpMode::Ok, _) => 200,
                (OtlpMode::Status(s), _) => s,
                (OtlpMode::StatusThenOk { status, times }, _) if n < times => status,
                (OtlpMode::StatusThenOk { .. }, _) => 200,
                (OtlpMode::NeverAnswer, _) => 0,
            };
            let mut spans = Vec::new();
            if let Ok(export) = &decoded {
                for rs in &export.resource_spans {
                    let resource = rs
                        .resource
                        .as_ref()
                        .map(|r| r.attributes.clone())
                        .unwrap_or_default();
                    for ss in &rs.scope_spans {
                        for sp in &ss.spans {
                            spans.push(ReceivedSpan {
                                resource: resource.clone(),
                                scope_name: ss
                                    .scope
                                    .as_ref()
                                    .map(|s| s.name.clone())
                                    .unwrap_or_default(),
                                scope_version: ss
                                    .scope
                                    .as_ref()
                                    .map(|s| s.version.clone())
                                    .unwrap_or_default(),
                                span: sp.clone(),
                            });
                        }
                    }
                }
            }
            st.requests.lock().unwrap().push(ExportRequest {
                path: req.path.clone(),
                headers: req.headers.clone(),
                body_len: bytes.len(),
                spans: spans.len(),
                answered: answer,
            });
            if answer == 0 {
                st.changed.notify_all();
                while !st.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Response::text(503, "receiver stopping");
            }
            if (200..300).contains(&answer) {
                st.spans.lock().unwrap().extend(spans);
            }
            st.changed.notify_all();
            if answer == 400 {
                return Response::text(400, "not an ExportTraceServiceRequest");
            }
            if (200..300).contains(&answer) {
                Response::bytes(
                    answer,
                    "application/x-protobuf",
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            } else {
                Response::text(answer, "scripted failure")
            }
        })
        .unwrap()
        .spawn();
        OtlpReceiver { server, state }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Spans accepted so far (answered 2xx).
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Every export request so far, accepted or not.
    pub fn requests(&self) -> Vec<ExportRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` spans were accepted; panics with what arrived otherwise.
    /// Counts every span, including the filter's order-lifecycle spans (INTERNAL kind); to count
    /// one span per request use [`OtlpReceiver::wait_for_server_spans`].
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        self.wait_for_spans_where(n, timeout, |_| true)
    }

    /// Waits until at least `n` SERVER spans (one per proxied request) arrived; returns those.
    pub fn wait_for_server_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        self.wait_for_spans_where(n, timeout, ReceivedSpan::is_server)
    }

    /// Waits until at least `n` accepted spans match `pred`; returns the matching ones.
    pub fn wait_for_spans_where(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        let mut spans = self.state.spans.lock().unwrap();
        loop {
            let matching: Vec<ReceivedSpan> = spans.iter().filter(|s| pred(s)).cloned().collect();
            if matching.len() >= n {
                return matching;
            }
            let now = Instant::now();
            if now >= deadline {
                let got: Vec<String> = spans.iter().map(ReceivedSpan::describe).collect();
                panic!(
                    "expected {n} matching spans within {timeout:?}, {} match; all received: {got:#?}\nexport requests: {:?}",
                    matching.len(),
                    self.state.requests.lock().unwrap()
                );
            }
            spans = self
                .state
                .changed
                .wait_timeout(spans, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits for a span matching `pred`.
    pub fn wait_for_span(
        &self,
        timeout: Duration,
        pred: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        poll(timeout, || self.spans().into_iter().find(|s| pred(s))).unwrap_or_else(|| {
            let got: Vec<String> = self.spans().iter().map(ReceivedSpan::describe).collect();
            panic!("no matching span within {timeout:?}; received: {got:#?}")
        })
    }

    /// Waits for the span named `name` whose `key` attribute is `value`.
    pub fn wait_for_span_with(
        &self,
        name: &str,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> ReceivedSpan {
        self.wait_for_span(timeout, |s| {
            s.name() == name && s.attr_str(key).as_deref() == Some(value)
        })
    }

    /// Waits until at least `n` export requests arrived (whatever the answer).
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ExportRequest> {
        poll(timeout, || {
            let r = self.requests();
            (r.len() >= n).then_some(r)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} export requests within {timeout:?}, got {:?}",
                self.requests()
            )
        })
    }

    pub fn find_by_name(&self, name: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.name() == name)
            .collect()
    }

    pub fn find_by_attr(&self, key: &str, value: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.attr_str(key).as_deref() == Some(value))
            .collect()
    }

    pub fn find_by_trace_id(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.server.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// An OTLP receiver that keeps the raw request bodies (for byte-level scans, e.g. tests/e2e_pii.rs)

/// An OTLP/HTTP receiver that answers 200 and keeps every request body exactly as received.
pub struct RawOtlpReceiver {
    server: ServerHandle,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawOtlpReceiver {
    pub fn start() -> RawOtlpReceiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        let server = Server::bind(("127.0.0.1", 0), Limits::default(), move |_req, body| {
            let bytes = match body.read_to_vec(64 << 20) {
                Ok(b) => b,
                Err(e) => return Response::text(e.status(), &e.to_string()),
            };
            if ExportTraceServiceRequest::decode(bytes.as_slice()).is_err() {
                return Response::text(400, "not an ExportTraceServiceRequest");
            }
            kept.lock().unwrap().push(bytes);
            Response::bytes(
                200,
                "application/x-protobuf",
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        })
        .unwrap()
        .spawn();
        RawOtlpReceiver { server, bodies }
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The raw bodies of the export requests accepted so far, as received.
    pub fn raw_bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }

    /// The accepted export requests, decoded (every body decoded when it arrived).
    pub fn decoded(&self) -> Vec<ExportTraceServiceRequest> {
        self.raw_bodies()
            .iter()
            .map(|b| ExportTraceServiceRequest::decode(b.as_slice()).unwrap())
            .collect()
    }
}

impl Drop for RawOtlpReceiver {
    fn drop(&mut self) {
        self.server.stop();
    }
}
