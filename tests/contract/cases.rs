//! The case tables of the contract suite: plugin configurations, request/response exchanges, and
//! what each case must produce. `tests/contract/dual.rs` runs every [`Case`] twice, natively
//! (`Worker` + `RequestState` + `MockStream`) and against `dist/ordertrace.wasm` in the test host,
//! and requires the same observable results; `tests/fuel.rs` reuses the configurations.
//!
//! Every rule source of a route (path variable, header, query, request body, response body,
//! literal) appears in [`ROUTES`] and in at least one case of [`dual_run_cases`].

#![allow(dead_code)] // Each test binary uses its own subset.

use std::path::PathBuf;

use crate::host::HostOptions;

/// Envoy's node id (the spans' `service.instance.id`), the same in both runs.
pub const NODE_ID: &str = "edge-1";
/// The collector cluster the configurations name (the host refuses calls to other clusters).
pub const CLUSTER: &str = "otlp_collector";
/// Wall clock at the first request of a case, in both runs (2025-01-01T00:00:00Z).
pub const START_NS: u64 = 1_735_689_600_000_000_000;
/// Upstream time of every exchange: the clock moves this much between request and response.
pub const UPSTREAM_MS: u64 = 5;
/// Clock between two exchanges of a case.
pub const GAP_MS: u64 = 20;
/// `collector.flush_interval_ms` of every configuration.
pub const FLUSH_MS: u64 = 1000;
/// Seed of the native `SeededRandom` and of the host's `random_get` (ids differ anyway: the
/// tables compare them structurally).
pub const SEED: u64 = 7;
/// `redaction.hmac_key` when redaction is on (>= 16 bytes; public test value).
pub const HMAC_KEY: &str = "contract-test-hmac-key-not-secret";
/// `lifecycle.namespace` when the lifecycle is on.
pub const LIFECYCLE_NS: &str = "contract";

/// A valid `traceparent` (sampled) and its parts.
pub const TP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const TP_PARENT: &str = "00f067aa0ba902b7";
pub const TP_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
pub const TP_UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

/// The filter under test. Missing is a failure, never a skip.
pub fn filter_wasm() -> PathBuf {
    let path =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("dist/ordertrace.wasm");
    assert!(
        path.exists(),
        "dist/ordertrace.wasm is missing: run `make wasm` (or `make build`)"
    );
    path
}

/// The host as every case sees it: node id, the collector cluster, the start time, the seed.
pub fn host_options() -> HostOptions {
    HostOptions {
        node_id: NODE_ID.into(),
        clusters: vec![CLUSTER.into()],
        start_time_ns: START_NS,
        seed: SEED,
        ..HostOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Configurations

/// The routes of every configuration. Together they use every value source:
/// path variable (implicit `{order_id}` and explicit `{"path": "id"}`), header, query,
/// request body, response body and literal (status and attribute).
pub const ROUTES: &str = r#"[
  {"name": "shop.create", "method": "POST", "path": "/api/orders",
   "order_id": {"response_body": "/id"}, "status": "INITIATED",
   "attributes": {"order.channel": {"query": "channel"}, "order.source": "storefront",
                  "order.note": {"request_body": "/note"}}},
  {"name": "shop.upload", "method": "PUT", "path": "/api/orders/{order_id}/model",
   "status": "FILE_UPLOADED"},
  {"name": "shop.submit", "method": "POST", "path": "/api/orders/{order_id}/submit",
   "status": "SUBMITTED",
   "attributes": {"order.partner_id": {"header": "x-partner"}, "order.channel": {"query": "channel"}}},
  {"name": "mes.status", "method": ["PUT", "PATCH"], "path": "/api/orders/{order_id}/status",
   "status": {"request_body": "/status"},
   "attributes": {"operator.id": {"request_body": "/operatorId"}}},
  {"name": "shop.invoice", "method": "GET", "path": "/api/orders/{id}/invoice",
   "order_id": {"path": "id"}, "attributes": {"invoice.format": {"header": "accept"}}},
  {"name": "shop.lookup", "method": "GET", "path": "/api/lookup", "order_id": {"query": "order"}},
  {"name": "crm.notify", "method": "POST", "path": "/api/notify",
   "order_id": {"request_body": "/order/id"},
   "attributes": {"order.contact": {"request_body": "/contact"}}},
  {"method": "DELETE", "path": "/api/orders/{order_id}", "order_id": {"header": "x-order-id"},
   "status": "CANCELLED"}
]"#;

/// The knobs the cases turn; [`Cfg::json`] renders the plugin configuration.
#[derive(Clone, Debug)]
pub struct Cfg {
    pub redaction: bool,
    pub lifecycle: bool,
    pub public_edge: bool,
    pub ratio: f64,
    pub max_body: usize,
    pub max_batch: usize,
    pub max_queue: usize,
    pub timeout_ms: u64,
}

impl Default for Cfg {
    /// Redaction and lifecycle off (each case that wants them says so).
    fn default() -> Self {
        Self {
            redaction: false,
            lifecycle: false,
            public_edge: false,
            ratio: 1.0,
            max_body: 65536,
            max_batch: 512,
            max_queue: 8192,
            timeout_ms: 5000,
        }
    }
}

impl Cfg {
    pub fn redaction(mut self) -> Self {
        self.redaction = true;
        self
    }
    pub fn lifecycle(mut self) -> Self {
        self.lifecycle = true;
        self
    }
    pub fn public_edge(mut self) -> Self {
        self.public_edge = true;
        self
    }
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
    pub fn batch(mut self, max_batch: usize, max_queue: usize) -> Self {
        self.max_batch = max_batch;
        self.max_queue = max_queue;
        self
    }

    pub fn json(&self) -> String {
        let redaction = if self.redaction {
            format!(r#"{{"hmac_key": "{HMAC_KEY}"}}"#)
        } else {
            r#"{"enabled": false}"#.to_string()
        };
        let lifecycle = if self.lifecycle {
            format!(r#"{{"namespace": "{LIFECYCLE_NS}"}}"#)
        } else {
            r#"{"enabled": false}"#.to_string()
        };
        format!(
            r#"{{"service": "shop-api", "public_edge": {public_edge},
 "collector": {{"cluster": "{CLUSTER}", "authority": "{CLUSTER}", "path": "/v1/traces",
               "flush_interval_ms": {FLUSH_MS}, "max_batch_spans": {max_batch},
               "max_queue_spans": {max_queue}, "timeout_ms": {timeout}}},
 "sampling": {{"ratio": {ratio:?}}},
 "body": {{"max_bytes": {max_body}}},
 "redaction": {redaction},
 "lifecycle": {lifecycle},
 "routes": {ROUTES}}}"#,
            public_edge = self.public_edge,
            max_batch = self.max_batch,
            max_queue = self.max_queue,
            timeout = self.timeout_ms,
            ratio = self.ratio,
            max_body = self.max_body,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Exchanges

/// One HTTP exchange as Envoy delivers it to the filter.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub request_headers: Vec<(String, String)>,
    /// Request body chunks; empty = the headers carry end_of_stream.
    pub request_chunks: Vec<Vec<u8>>,
    /// Request trailers (gRPC style); non-empty = the last body chunk does not end the stream,
    /// the trailers do.
    pub request_trailers: Vec<(String, String)>,
    /// `None`: no response at all (upstream reset); otherwise includes `:status`.
    pub response_headers: Option<Vec<(String, String)>>,
    pub response_chunks: Vec<Vec<u8>>,
    /// Envoy's `response.code_details` property (read by the filter for failed requests).
    pub code_details: Option<String>,
}

/// A request: `:method`, `:path`, `:authority`, `:scheme`, a user agent; answered 200 without body.
pub fn req(method: &str, path: &str) -> Exchange {
    Exchange {
        request_headers: vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
            (":authority".into(), "shop.example".into()),
            (":scheme".into(), "http".into()),
            ("user-agent".into(), "contract/1".into()),
        ],
        request_chunks: Vec::new(),
        request_trailers: Vec::new(),
        response_headers: Some(vec![(":status".into(), "200".into())]),
        response_chunks: Vec::new(),
        code_details: None,
    }
}

impl Exchange {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request_headers.push((name.into(), value.into()));
        self
    }

    /// A JSON request body in one chunk (adds `content-type: application/json`).
    pub fn json(self, body: &[u8]) -> Self {
        self.header("content-type", "application/json")
            .body(vec![body.to_vec()])
    }

    /// Request body chunks as given (no content type added).
    pub fn body(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.request_chunks = chunks;
        self
    }

    /// Re-splits the request body into chunks of `n` bytes.
    pub fn request_chunked(mut self, n: usize) -> Self {
        self.request_chunks = rechunk(&self.request_chunks, n);
        self
    }

    /// Ends the request with trailers instead of the last body chunk.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.request_trailers.push((name.into(), value.into()));
        self
    }

    /// Whether body chunk `i` carries end_of_stream.
    pub fn request_chunk_ends_stream(&self, i: usize) -> bool {
        i + 1 == self.request_chunks.len() && self.request_trailers.is_empty()
    }

    /// Answers with `status` instead of 200.
    pub fn status(mut self, status: u16) -> Self {
        let mut headers = self.response_headers.take().unwrap_or_default();
        headers.retain(|(k, _)| k != ":status");
        headers.insert(0, (":status".into(), status.to_string()));
        self.response_headers = Some(headers);
        self
    }

    /// A JSON response body in one chunk (adds `content-type: application/json`).
    pub fn respond_json(mut self, body: &[u8]) -> Self {
        let mut headers = self
            .response_headers
            .take()
            .unwrap_or_else(|| vec![(":status".into(), "200".into())]);
        headers.push(("content-type".into(), "application/json".into()));
        self.response_headers = Some(headers);
        self.response_chunks = vec![body.to_vec()];
        self
    }

    /// Re-splits the response body into chunks of `n` bytes.
    pub fn response_chunked(mut self, n: usize) -> Self {
        self.response_chunks = rechunk(&self.response_chunks, n);
        self
    }

    /// No response: the upstream failed (`details` is Envoy's `response.code_details`).
    pub fn no_response(mut self, details: &str) -> Self {
        self.response_headers = None;
        self.response_chunks = Vec::new();
        self.code_details = Some(details.into());
        self
    }

    pub fn details(mut self, details: &str) -> Self {
        self.code_details = Some(details.into());
        self
    }

    pub fn request_headers_str(&self) -> Vec<(&str, &str)> {
        pairs(&self.request_headers)
    }

    pub fn response_headers_str(&self) -> Option<Vec<(&str, &str)>> {
        self.response_headers.as_deref().map(pairs)
    }

    /// The request body, all chunks joined.
    pub fn request_body(&self) -> Vec<u8> {
        self.request_chunks.concat()
    }
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn rechunk(chunks: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    chunks
        .concat()
        .chunks(n.max(1))
        .map(<[u8]>::to_vec)
        .collect()
}

/// A JSON object `{"<fields>", "pad": "xxx…"}` of exactly `size` bytes with `fields` (already
/// JSON, without braces) placed first or last.
pub fn padded_json(fields: &str, size: usize, fields_last: bool) -> Vec<u8> {
    let frame = if fields_last {
        r#"{"pad":"","#.len() + fields.len() + 1
    } else {
        fields.len() + r#"{,"pad":""}"#.len()
    };
    let pad = "x".repeat(size.saturating_sub(frame));
    let body = if fields_last {
        format!(r#"{{"pad":"{pad}",{fields}}}"#)
    } else {
        format!(r#"{{{fields},"pad":"{pad}"}}"#)
    };
    assert_eq!(body.len(), size.max(frame), "padded_json size");
    body.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Cases

/// What the trace context of the request span must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    /// Not checked.
    Any,
    /// The incoming `traceparent`: same trace id, parent = incoming span id.
    Incoming,
    /// A new trace (no parent).
    NewTrace,
}

/// What a case must produce (checked on both runs, on top of their agreement).
#[derive(Clone, Debug)]
pub struct Expect {
    /// Names of the exported spans, in export order.
    pub spans: Vec<String>,
    /// Attributes of the last exported SERVER span: value rendered as text, `None` = absent.
    pub attrs: Vec<(String, Option<String>)>,
    /// Event names of the last SERVER span (`None`: not checked).
    pub events: Option<Vec<String>>,
    /// Span status ERROR on the last SERVER span.
    pub error: bool,
    pub parent: Parent,
    /// Envoy counters after the export.
    pub counters: Vec<(String, i64)>,
    /// The `traceparent` sent upstream (last exchange) has the sampled flag.
    pub upstream_sampled: bool,
    /// Request headers the filter may remove (besides rewriting `traceparent`).
    pub removed: Vec<String>,
    /// Text that must appear nowhere in the export requests (PII).
    pub forbidden: Vec<String>,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            spans: Vec::new(),
            attrs: Vec::new(),
            events: None,
            error: false,
            parent: Parent::Any,
            counters: Vec::new(),
            upstream_sampled: true,
            removed: Vec::new(),
            forbidden: Vec::new(),
        }
    }
}

/// One row of the dual-run table.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub cfg: Cfg,
    pub config: String,
    /// Run in order on one worker / one VM (lifecycle cases need two).
    pub exchanges: Vec<Exchange>,
    /// Shared data present before the first exchange (written by another worker / VM).
    pub shared: Vec<(String, Vec<u8>)>,
    pub expect: Expect,
}

impl Case {
    pub fn new(name: &'static str, cfg: Cfg, exchange: Exchange) -> Self {
        Self::seq(name, cfg, vec![exchange])
    }

    pub fn seq(name: &'static str, cfg: Cfg, exchanges: Vec<Exchange>) -> Self {
        Self {
            name,
            config: cfg.json(),
            cfg,
            exchanges,
            shared: Vec::new(),
            expect: Expect::default(),
        }
    }

    /// Another worker recorded `status` for `order` `ago_ms` before the case starts.
    pub fn recorded_status(mut self, order: &str, status: &str, ago_ms: u64) -> Self {
        let config = ordertrace::config::Config::from_json(self.config.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let record = ordertrace::order::LastStatus {
            order_id: order.into(),
            status: status.into(),
            at_ns: START_NS - ago_ms * 1_000_000,
        };
        self.shared.push((
            config
                .lifecycle
                .slot_key(&config.lifecycle.order_digest(order)),
            record.encode(),
        ));
        self
    }

    pub fn spans(mut self, names: &[&str]) -> Self {
        self.expect.spans = names.iter().map(|s| (*s).to_string()).collect();
        self
    }
    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.expect.attrs.push((key.into(), Some(value.into())));
        self
    }
    pub fn no_attr(mut self, key: &str) -> Self {
        self.expect.attrs.push((key.into(), None));
        self
    }
    pub fn events(mut self, names: &[&str]) -> Self {
        self.expect.events = Some(names.iter().map(|s| (*s).to_string()).collect());
        self
    }
    pub fn error(mut self) -> Self {
        self.expect.error = true;
        self
    }
    pub fn parent(mut self, parent: Parent) -> Self {
        self.expect.parent = parent;
        self
    }
    pub fn counter(mut self, name: &str, value: i64) -> Self {
        self.expect.counters.push((name.into(), value));
        self
    }
    pub fn unsampled(mut self) -> Self {
        self.expect.upstream_sampled = false;
        self
    }
    pub fn removes(mut self, header: &str) -> Self {
        self.expect.removed.push(header.into());
        self
    }
    pub fn forbid(mut self, text: &str) -> Self {
        self.expect.forbidden.push(text.into());
        self
    }
}

const STATUS_BODY: &[u8] = br#"{"status":"PACKAGING","operatorId":"op-17"}"#;
const CREATED_BODY: &[u8] = br#"{"id":"ORD-5","status":"INITIATED"}"#;
const EMAIL: &str = "jane.doe@example.com";

fn notify_body_with_pii() -> Vec<u8> {
    format!(r#"{{"order":{{"id":"ORD-8"}},"contact":"write to {EMAIL} please"}}"#).into_bytes()
}

/// The dual-run table: every rule source, status on 2xx vs attempted on 4xx/5xx, unmatched routes,
/// trace-context variants, body chunking and limits, content types, redaction, lifecycle.
pub fn dual_run_cases() -> Vec<Case> {
    let off = Cfg::default;
    vec![
        // -- rule sources -------------------------------------------------------------------
        Case::new(
            "path_variable_implicit_order_id",
            off(),
            req("POST", "/api/orders/ORD-1/submit").header("traceparent", TP_SAMPLED),
        )
        .spans(&["shop.submit"])
        .attr("order.id", "ORD-1")
        .attr("order.status", "SUBMITTED")
        .attr("http.route", "/api/orders/{order_id}/submit")
        .attr("http.response.status_code", "200")
        .attr("server.address", "shop.example")
        .no_attr("order.partner_id")
        .no_attr("order.channel")
        .events(&["order.status_changed"])
        .parent(Parent::Incoming)
        .counter("ordertrace_rule_matches", 1)
        .counter("ordertrace_spans_exported", 1)
        .counter("ordertrace_export_requests", 1),
        Case::new(
            "path_variable_explicit_and_percent_decoded",
            off(),
            req("GET", "/api/orders/ORD%2D2/invoice"),
        )
        .spans(&["shop.invoice"])
        .attr("order.id", "ORD-2")
        .attr("url.path", "/api/orders/ORD%2D2/invoice")
        .no_attr("invoice.format")
        .no_attr("order.status")
        .events(&[]),
        Case::new(
            "header_source",
            off(),
            req("POST", "/api/orders/ORD-1/submit").header("x-partner", "p-9"),
        )
        .spans(&["shop.submit"])
        .attr("order.partner_id", "p-9")
        .parent(Parent::NewTrace)
        .counter("ordertrace_traceparent_created", 1),
        Case::new(
            "header_source_explicit_order_id",
            off(),
            req("DELETE", "/api/orders/ORD-in-path").header("x-order-id", "ORD-from-header"),
        )
        .spans(&["DELETE /api/orders/{order_id}"])
        .attr("order.id", "ORD-from-header")
        .attr("order.status", "CANCELLED"),
        Case::new(
            "query_source_attribute",
            off(),
            req("POST", "/api/orders/ORD-3/submit?channel=web&x=1"),
        )
        .spans(&["shop.submit"])
        .attr("order.channel", "web")
        .attr("url.path", "/api/orders/ORD-3/submit")
        .attr("url.query", "channel=web&x=1"),
        Case::new(
            "query_source_order_id",
            off(),
            req("GET", "/api/lookup?order=ORD-31"),
        )
        .spans(&["shop.lookup"])
        .attr("order.id", "ORD-31")
        .attr("http.route", "/api/lookup"),
        Case::new(
            "request_body_source_one_chunk",
            off(),
            req("PUT", "/api/orders/ORD-4/status").json(STATUS_BODY),
        )
        .spans(&["mes.status"])
        .attr("order.id", "ORD-4")
        .attr("order.status", "PACKAGING")
        .attr("operator.id", "op-17")
        .events(&["order.status_changed"]),
        Case::new(
            "request_body_source_one_byte_chunks",
            off(),
            req("PATCH", "/api/orders/ORD-4/status")
                .json(STATUS_BODY)
                .request_chunked(1),
        )
        .spans(&["mes.status"])
        .attr("order.status", "PACKAGING")
        .attr("operator.id", "op-17")
        .counter("ordertrace_body_limit_hits", 0),
        Case::new(
            "response_body_source_and_literals",
            off(),
            req("POST", "/api/orders?channel=app")
                .json(br#"{"note":"gift wrap"}"#)
                .status(201)
                .respond_json(CREATED_BODY),
        )
        .spans(&["shop.create"])
        .attr("order.id", "ORD-5")
        .attr("order.status", "INITIATED")
        .attr("order.source", "storefront")
        .attr("order.note", "gift wrap")
        .attr("order.channel", "app")
        .attr("http.response.status_code", "201"),
        Case::new(
            "response_body_source_one_byte_chunks",
            off(),
            req("POST", "/api/orders")
                .json(br#"{"note":"gift wrap"}"#)
                .request_chunked(1)
                .status(201)
                .respond_json(CREATED_BODY)
                .response_chunked(1),
        )
        .spans(&["shop.create"])
        .attr("order.id", "ORD-5")
        .attr("order.note", "gift wrap"),
        // -- status: 2xx vs 4xx / 5xx / no response ------------------------------------------
        Case::new(
            "client_error_records_attempted_status",
            off(),
            req("POST", "/api/orders/ORD-7/submit").status(409),
        )
        .spans(&["shop.submit"])
        .attr("order.status.attempted", "SUBMITTED")
        .no_attr("order.status")
        .no_attr("error.type")
        .events(&[]),
        Case::new(
            "server_error_is_an_error_span",
            off(),
            req("POST", "/api/orders/ORD-7/submit")
                .status(503)
                .details("via_upstream"),
        )
        .spans(&["shop.submit"])
        .attr("order.status.attempted", "SUBMITTED")
        .attr("error.type", "503")
        .no_attr("order.status")
        .events(&[])
        .error(),
        Case::new(
            "no_response_is_an_error_span",
            off(),
            req("PUT", "/api/orders/ORD-7/model")
                .no_response("upstream_reset_before_response_started{connection_failure}"),
        )
        .spans(&["shop.upload"])
        .attr("error.type", "no_response")
        .attr(
            "envoy.response_flags",
            "upstream_reset_before_response_started{connection_failure}",
        )
        .no_attr("http.response.status_code")
        .error(),
        // -- unmatched routes -------------------------------------------------------------------
        Case::new(
            "unmatched_route_is_named_by_method",
            off(),
            req("GET", "/health?verbose=1")
                .header("traceparent", TP_SAMPLED)
                .header("tracestate", "vendor=abc,other=1")
                .header("x-partner", "p-1"),
        )
        .spans(&["GET"])
        .no_attr("http.route")
        .no_attr("order.id")
        .attr("url.path", "/health")
        .parent(Parent::Incoming)
        .counter("ordertrace_rule_matches", 0),
        Case::new(
            "method_mismatch_is_unmatched",
            off(),
            req("GET", "/api/orders"),
        )
        .spans(&["GET"])
        .no_attr("http.route"),
        // -- trace context ------------------------------------------------------------------------
        Case::new(
            "valid_traceparent_continues_the_trace",
            off(),
            req("PUT", "/api/orders/ORD-1/model")
                .header("traceparent", TP_SAMPLED)
                .header("tracestate", "vendor=abc"),
        )
        .spans(&["shop.upload"])
        .parent(Parent::Incoming)
        .counter("ordertrace_traceparent_created", 0)
        .counter("ordertrace_traceparent_malformed", 0),
        Case::new(
            "malformed_traceparent_starts_a_new_trace",
            off(),
            req("PUT", "/api/orders/ORD-1/model")
                .header("traceparent", "00-xyz")
                .header("tracestate", "vendor=abc"),
        )
        .spans(&["shop.upload"])
        .parent(Parent::NewTrace)
        .removes("tracestate")
        .counter("ordertrace_traceparent_malformed", 1)
        .counter("ordertrace_traceparent_created", 0),
        Case::new(
            "uppercase_traceparent_is_malformed",
            off(),
            req("GET", "/health").header("traceparent", &TP_SAMPLED.to_uppercase()),
        )
        .spans(&["GET"])
        .parent(Parent::NewTrace)
        .counter("ordertrace_traceparent_malformed", 1),
        Case::new(
            "missing_traceparent_starts_a_new_trace",
            off(),
            req("PUT", "/api/orders/ORD-1/model"),
        )
        .spans(&["shop.upload"])
        .parent(Parent::NewTrace)
        .counter("ordertrace_traceparent_created", 1),
        Case::new(
            "unsampled_parent_propagates_without_a_span",
            off(),
            req("POST", "/api/orders/ORD-1/submit").header("traceparent", TP_UNSAMPLED),
        )
        .spans(&[])
        .unsampled()
        .counter("ordertrace_spans_exported", 0)
        .counter("ordertrace_export_requests", 0),
        Case::new(
            "ratio_zero_samples_no_new_root",
            off().ratio(0.0),
            req("GET", "/health"),
        )
        .spans(&[])
        .unsampled(),
        Case::new(
            "public_edge_links_the_caller",
            off().public_edge(),
            req("POST", "/api/orders/ORD-1/submit").header("traceparent", TP_SAMPLED),
        )
        .spans(&["shop.submit"])
        .parent(Parent::NewTrace),
        // -- bodies ---------------------------------------------------------------------------------
        Case::new(
            "request_body_larger_than_max_bytes_field_in_prefix",
            off().max_body(256),
            req("POST", "/api/notify")
                .json(&padded_json(r#""order":{"id":"ORD-55"}"#, 10_000, false))
                .request_chunked(1000),
        )
        .spans(&["crm.notify"])
        .attr("order.id", "ORD-55")
        .counter("ordertrace_body_limit_hits", 1),
        Case::new(
            "request_body_larger_than_max_bytes_field_beyond",
            off().max_body(256),
            req("POST", "/api/notify").json(&padded_json(r#""order":{"id":"ORD-56"}"#, 4096, true)),
        )
        .spans(&["crm.notify"])
        .no_attr("order.id")
        .counter("ordertrace_body_limit_hits", 1),
        Case::new(
            "request_body_larger_than_max_bytes_in_one_byte_chunks",
            off().max_body(256),
            req("POST", "/api/notify")
                .json(&padded_json(r#""order":{"id":"ORD-57"}"#, 2048, false))
                .request_chunked(1),
        )
        .spans(&["crm.notify"])
        .attr("order.id", "ORD-57")
        .counter("ordertrace_body_limit_hits", 1),
        Case::new(
            "non_json_content_type_is_not_read",
            off(),
            req("PUT", "/api/orders/ORD-9/status")
                .header("content-type", "text/plain")
                .body(vec![STATUS_BODY.to_vec()]),
        )
        .spans(&["mes.status"])
        .attr("order.id", "ORD-9")
        .no_attr("order.status")
        .no_attr("order.status.attempted")
        .no_attr("operator.id"),
        Case::new(
            "json_suffix_content_type_is_read",
            off(),
            req("PUT", "/api/orders/ORD-9/status")
                .header(
                    "content-type",
                    "application/merge-patch+json; charset=utf-8",
                )
                .body(vec![STATUS_BODY.to_vec()]),
        )
        .spans(&["mes.status"])
        .attr("order.status", "PACKAGING"),
        Case::new(
            "request_body_ended_by_trailers",
            off(),
            req("PATCH", "/api/orders/ORD-T/status")
                .json(STATUS_BODY)
                .request_chunked(10)
                .trailer("grpc-status", "0"),
        )
        .spans(&["mes.status"])
        .attr("order.status", "PACKAGING")
        .attr("operator.id", "op-17"),
        Case::new(
            "body_route_without_body",
            off(),
            req("PUT", "/api/orders/ORD-9/status"),
        )
        .spans(&["mes.status"])
        .no_attr("order.status"),
        // -- redaction ------------------------------------------------------------------------------
        Case::new(
            "redaction_masks_pii_from_the_body",
            off().redaction(),
            req("POST", "/api/notify?email=jane.doe%40example.com")
                .json(&notify_body_with_pii())
                .request_chunked(7),
        )
        .spans(&["crm.notify"])
        .attr("order.id", "ORD-8")
        .attr("order.contact", "write to [email] please")
        .forbid(EMAIL)
        .forbid("jane.doe%40example.com"),
        Case::new(
            "redaction_pseudonymises_operator_id",
            off().redaction(),
            req("PUT", "/api/orders/ORD-4/status").json(STATUS_BODY),
        )
        .spans(&["mes.status"])
        .attr("order.status", "PACKAGING")
        .forbid("op-17"),
        // -- lifecycle ------------------------------------------------------------------------------
        Case::seq(
            "lifecycle_create_then_submit",
            off().lifecycle(),
            vec![
                req("POST", "/api/orders")
                    .json(b"{}")
                    .status(201)
                    .respond_json(br#"{"id":"ORD-LC"}"#),
                req("POST", "/api/orders/ORD-LC/submit"),
            ],
        )
        .spans(&[
            "order.lifecycle",
            "order INITIATED",
            "shop.create",
            "order SUBMITTED",
            "shop.submit",
        ])
        .attr("order.status.previous", "INITIATED")
        .attr("order.transition.unexpected", "true")
        .counter("ordertrace_transitions", 2)
        .counter("ordertrace_spans_exported", 5),
        Case::seq(
            "lifecycle_repeat_is_not_a_transition",
            off().lifecycle(),
            vec![
                req("PUT", "/api/orders/ORD-R/status").json(STATUS_BODY),
                req("PUT", "/api/orders/ORD-R/status").json(STATUS_BODY),
            ],
        )
        .spans(&["order PACKAGING", "mes.status", "mes.status"])
        .counter("ordertrace_transitions", 1),
        Case::new(
            "lifecycle_previous_status_from_another_worker",
            off().lifecycle(),
            req("PUT", "/api/orders/ORD-W/model"),
        )
        .recorded_status("ORD-W", "INITIATED", 60_000)
        .spans(&["order FILE_UPLOADED", "shop.upload"])
        .attr("order.status.previous", "INITIATED")
        .attr("order.stage.duration_ms", "60005")
        .no_attr("order.transition.unexpected")
        .counter("ordertrace_transitions", 1)
        .counter("ordertrace_transitions_unexpected", 0),
        Case::new(
            "lifecycle_on_unsampled_request",
            off().lifecycle().ratio(0.0),
            req("POST", "/api/orders/ORD-U/submit"),
        )
        .spans(&["order SUBMITTED"])
        .unsampled(),
    ]
}
