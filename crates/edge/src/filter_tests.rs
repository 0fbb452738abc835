//! Native tests of the per-request logic with the mock host.

use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use ordertrace::testing::{MockStream, SeededRandom};
use ordertrace::text::MAX_VALUE_BYTES;
use prost::Message;

const CONFIG: &str = r#"{"service":"shop-api","collector":{"cluster":"otlp","max_batch_spans":100},
 "body":{"max_bytes":64},
 "redaction":{"enabled":false},
 "lifecycle":{"enabled":false},
 "routes":[
  {"name":"shop.create","method":"POST","path":"/api/orders","order_id":{"response_body":"/id"},"status":"INITIATED"},
  {"name":"shop.submit","method":"POST","path":"/api/orders/{order_id}/submit","status":"SUBMITTED",
   "attributes":{"order.partner_id":{"header":"x-partner"},"order.channel":{"query":"channel"}}},
  {"name":"mes.status","method":["PUT","PATCH"],"path":"/api/orders/{order_id}/status","status":{"request_body":"/status"}},
  {"name":"crm.by_body","method":"POST","path":"/api/notify","order_id":{"request_body":"/order/id"}}]}"#;

fn worker(json: &str) -> Worker<SeededRandom> {
    Worker::new(
        Config::from_json(json.as_bytes()).unwrap(),
        SeededRandom(42),
        "node-a",
    )
}

struct Case<'a> {
    headers: &'a [(&'a str, &'a str)],
    request_chunks: &'a [&'a [u8]],
    status: &'a str,
    response_headers: &'a [(&'a str, &'a str)],
    response_chunks: &'a [&'a [u8]],
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            headers: &[],
            request_chunks: &[],
            status: "200",
            response_headers: &[],
            response_chunks: &[],
        }
    }
}

/// Drive one stream through every callback; returns the host (to inspect headers sent upstream).
fn drive(w: &mut Worker<SeededRandom>, c: &Case) -> MockStream {
    let mut h = MockStream::new(c.headers);
    let mut s = RequestState::default();
    s.on_request_headers(w, &mut h, c.request_chunks.is_empty());
    for (i, chunk) in c.request_chunks.iter().enumerate() {
        h.chunk = chunk.to_vec();
        s.on_request_body(w, &mut h, chunk.len(), i + 1 == c.request_chunks.len());
    }
    h.response_headers = vec![(":status".into(), c.status.as_bytes().to_vec())];
    for (k, v) in c.response_headers {
        h.response_headers
            .push((k.to_string(), v.as_bytes().to_vec()));
    }
    h.clock_ns += 5_000_000;
    s.on_response_headers(w, &mut h, c.response_chunks.is_empty());
    for (i, chunk) in c.response_chunks.iter().enumerate() {
        h.chunk = chunk.to_vec();
        s.on_response_body(w, &mut h, chunk.len(), i + 1 == c.response_chunks.len());
    }
    s.on_log(w, &mut h);
    h
}

fn exported(w: &mut Worker<SeededRandom>) -> Vec<Span> {
    match w.queue.poll(u64::MAX, &w.frame) {
        ordertrace::export::Next::Idle => Vec::new(),
        ordertrace::export::Next::Send(body) => {
            w.queue.sent(1, &mut w.counters);
            w.queue.response(1, true, 0, &mut w.counters);
            let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
            req.resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
                .collect()
        }
    }
}

fn one_span(w: &mut Worker<SeededRandom>) -> Span {
    let mut spans = exported(w);
    assert_eq!(spans.len(), 1, "expected one span");
    spans.remove(0)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            _ => None,
        }
    })
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn submit_headers<'a>(path: &'a str, tp: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "shop.local"),
        ("traceparent", tp),
    ]
}

#[test]
fn continues_a_valid_trace_and_sends_the_edge_span_upstream() {
    let mut w = worker(CONFIG);
    let headers = submit_headers("/api/orders/ORD-1001/submit", TP);
    let h = drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    let upstream = parse_traceparent(h.request_header("traceparent").unwrap().as_bytes()).unwrap();
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(upstream.trace_id.0.to_vec(), span.trace_id);
    assert_eq!(
        upstream.parent_id.0.to_vec(),
        span.span_id,
        "upstream's parent is the edge span"
    );
    assert!(upstream.sampled());
    assert_eq!(span.name, "shop.submit");
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(attr(&span, "order.id").as_deref(), Some("ORD-1001"));
    assert_eq!(attr(&span, "order.status").as_deref(), Some("SUBMITTED"));
    assert_eq!(
        attr(&span, "http.route").as_deref(),
        Some("/api/orders/{order_id}/submit")
    );
    assert_eq!(
        attr(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(&span, "server.address").as_deref(), Some("shop.local"));
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "order.status_changed");
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        5_000_000
    );
    assert_eq!(w.counters.rule_matches, 1);
    // Only traceparent was touched.
    assert_eq!(h.header_writes.len(), 1);
    assert_eq!(h.header_writes[0].0, "traceparent");
}

#[test]
fn failed_transition_records_attempted_status_and_error() {
    let mut w = worker(CONFIG);
    let headers = submit_headers("/api/orders/ORD-7/submit", TP);
    drive(
        &mut w,
        &Case {
            headers: &headers,
            status: "503",
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    assert_eq!(attr(&span, "order.status"), None);
    assert_eq!(
        attr(&span, "order.status.attempted").as_deref(),
        Some("SUBMITTED")
    );
    assert_eq!(attr(&span, "error.type").as_deref(), Some("503"));
    assert_eq!(span.status.unwrap().code, 2, "ERROR");
    assert!(span.events.is_empty());

    drive(
        &mut w,
        &Case {
            headers: &headers,
            status: "409",
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    assert_eq!(
        attr(&span, "order.status.attempted").as_deref(),
        Some("SUBMITTED")
    );
    assert!(
        span.status.is_none(),
        "4xx is the client's error, not the server span's"
    );
}

#[test]
fn missing_or_malformed_traceparent_starts_a_new_trace() {
    for (tp, malformed) in [
        (None, false),
        (Some("00-xyz"), true),
        (Some(&TP.to_uppercase()[..]), true),
    ] {
        let mut w = worker(CONFIG);
        let mut headers = vec![
            (":method", "GET"),
            (":path", "/health"),
            ("tracestate", "a=b"),
        ];
        if let Some(tp) = tp {
            headers.push(("traceparent", tp));
        }
        let h = drive(
            &mut w,
            &Case {
                headers: &headers,
                ..Case::default()
            },
        );
        let span = one_span(&mut w);
        assert!(span.parent_span_id.is_empty());
        assert_ne!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(w.counters.traceparent_malformed, u64::from(malformed));
        assert_eq!(w.counters.traceparent_created, u64::from(!malformed));
        assert_eq!(
            h.request_header("tracestate").is_some(),
            !malformed,
            "tracestate kept only with a valid parent"
        );
        assert_eq!(
            span.name, "GET",
            "unmatched: the method, never the raw path"
        );
        assert_eq!(attr(&span, "http.route"), None);
    }
}

#[test]
fn tracestate_passes_through_untouched() {
    let mut w = worker(CONFIG);
    let mut headers = submit_headers("/api/orders/ORD-1/submit", TP);
    headers.push(("tracestate", "vendor=abc,other=1"));
    let h = drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    assert_eq!(h.request_header("tracestate"), Some("vendor=abc,other=1"));
    assert!(h.header_writes.iter().all(|(k, _)| k == "traceparent"));
}

#[test]
fn unsampled_parent_is_propagated_without_a_span() {
    let mut w = worker(CONFIG);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let headers = submit_headers("/api/orders/ORD-1/submit", tp);
    let h = drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    assert!(exported(&mut w).is_empty());
    let up = parse_traceparent(h.request_header("traceparent").unwrap().as_bytes()).unwrap();
    assert!(!up.sampled());
    assert_eq!(hex(&up.trace_id.0), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn ratio_zero_samples_no_new_roots() {
    let cfg = CONFIG.replace(r#""body":"#, r#""sampling":{"ratio":0.0},"body":"#);
    let mut w = worker(&cfg);
    let h = drive(
        &mut w,
        &Case {
            headers: &[(":method", "GET"), (":path", "/x")],
            ..Case::default()
        },
    );
    assert!(exported(&mut w).is_empty());
    assert!(h.request_header("traceparent").unwrap().ends_with("-00"));
}

#[test]
fn order_id_from_response_body() {
    let mut w = worker(CONFIG);
    let headers = [
        (":method", "POST"),
        (":path", "/api/orders"),
        ("content-type", "application/json"),
    ];
    let body = br#"{"id":"ORD-1001","status":"INITIATED"}"#;
    drive(
        &mut w,
        &Case {
            headers: &headers,
            request_chunks: &[br#"{"email":"a@b.c"}"#],
            status: "201",
            response_headers: &[("content-type", "application/json; charset=utf-8")],
            response_chunks: &[body],
        },
    );
    let span = one_span(&mut w);
    assert_eq!(attr(&span, "order.id").as_deref(), Some("ORD-1001"));
    assert_eq!(attr(&span, "order.status").as_deref(), Some("INITIATED"));
}

#[test]
fn request_body_in_one_byte_chunks_gives_the_same_span() {
    let body = br#"{"status":"PACKAGING","operatorId":"op-17"}"#;
    let headers = [
        (":method", "PUT"),
        (":path", "/api/orders/ORD-9/status"),
        ("content-type", "application/json"),
    ];
    let mut w1 = worker(CONFIG);
    drive(
        &mut w1,
        &Case {
            headers: &headers,
            request_chunks: &[body],
            ..Case::default()
        },
    );
    let one = one_span(&mut w1);
    let chunks: Vec<&[u8]> = body.chunks(1).collect();
    let mut w2 = worker(CONFIG);
    drive(
        &mut w2,
        &Case {
            headers: &headers,
            request_chunks: &chunks,
            ..Case::default()
        },
    );
    let split = one_span(&mut w2);
    assert_eq!(attr(&one, "order.status").as_deref(), Some("PACKAGING"));
    assert_eq!(one.attributes, split.attributes);
    assert_eq!(one.events, split.events);
}

#[test]
fn body_longer_than_the_limit_still_yields_fields_in_the_prefix() {
    let mut w = worker(CONFIG); // body.max_bytes = 64
    let mut body = br#"{"order":{"id":"ORD-55"},"pad":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 10_000));
    body.extend_from_slice(br#""}"#);
    let chunks: Vec<&[u8]> = body.chunks(1000).collect();
    let headers = [
        (":method", "POST"),
        (":path", "/api/notify"),
        ("content-type", "application/json"),
    ];
    drive(
        &mut w,
        &Case {
            headers: &headers,
            request_chunks: &chunks,
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    assert_eq!(attr(&span, "order.id").as_deref(), Some("ORD-55"));
    assert_eq!(w.counters.body_limit_hits, 1);
}

#[test]
fn non_json_bodies_are_not_read() {
    let mut w = worker(CONFIG);
    let headers = [
        (":method", "PUT"),
        (":path", "/api/orders/ORD-9/status"),
        ("content-type", "text/plain"),
    ];
    let h = drive(
        &mut w,
        &Case {
            headers: &headers,
            request_chunks: &[br#"{"status":"X"}"#],
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    assert_eq!(attr(&span, "order.status"), None);
    assert_eq!(attr(&span, "order.id").as_deref(), Some("ORD-9"));
    // headers read, traceparent set, 2 clock reads, :status
    assert_eq!(h.calls, 5, "no body reads");
}

#[test]
fn header_and_query_attributes() {
    let mut w = worker(CONFIG);
    let headers = [
        (":method", "POST"),
        (":path", "/api/orders/ORD%2D3/submit?channel=web&x=1"),
        ("x-partner", "p-9"),
    ];
    drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    assert_eq!(
        attr(&span, "order.id").as_deref(),
        Some("ORD-3"),
        "path variables are percent-decoded"
    );
    assert_eq!(attr(&span, "order.partner_id").as_deref(), Some("p-9"));
    assert_eq!(attr(&span, "order.channel").as_deref(), Some("web"));
    assert_eq!(
        attr(&span, "url.path").as_deref(),
        Some("/api/orders/ORD%2D3/submit")
    );
    assert_eq!(attr(&span, "url.query").as_deref(), Some("channel=web&x=1"));
}

#[test]
fn upstream_failure_is_an_error_span() {
    let mut w = worker(CONFIG);
    let mut h = MockStream::new(&[(":method", "GET"), (":path", "/x")]);
    h.code_details = Some("upstream_reset_before_response_started{connection_failure}".into());
    let mut s = RequestState::default();
    s.on_request_headers(&mut w, &mut h, true);
    s.on_log(&mut w, &mut h); // no response at all
    let span = one_span(&mut w);
    assert_eq!(attr(&span, "error.type").as_deref(), Some("no_response"));
    assert!(attr(&span, "envoy.response_flags")
        .unwrap()
        .contains("connection_failure"));
    assert_eq!(span.status.unwrap().code, 2);
}

#[test]
fn public_edge_starts_a_new_trace_linked_to_the_caller() {
    let cfg = CONFIG.replace(
        r#""service":"shop-api","#,
        r#""service":"shop-api","public_edge":true,"#,
    );
    let mut w = worker(&cfg);
    let headers = submit_headers("/api/orders/ORD-1/submit", TP);
    let h = drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    assert_ne!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(span.parent_span_id.is_empty());
    assert_eq!(span.links.len(), 1);
    assert_eq!(
        hex(&span.links[0].trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(!h
        .request_header("traceparent")
        .unwrap()
        .contains("4bf92f3577b34da6a3ce929d0e0e4736"));
}

#[test]
fn long_values_are_cut_at_a_char_boundary() {
    let mut w = worker(CONFIG);
    let long = format!("/api/orders/{}/submit", "é".repeat(300));
    let headers = [(":method", "POST"), (":path", long.as_str())];
    drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    let span = one_span(&mut w);
    let id = attr(&span, "order.id").unwrap();
    assert!(id.len() <= MAX_VALUE_BYTES && id.chars().all(|c| c == 'é'));
}

#[test]
fn host_calls_per_path_only_request() {
    let mut w = worker(CONFIG);
    let headers = submit_headers("/api/orders/ORD-1/submit", TP);
    let h = drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    // 1 header map read, 1 traceparent write, 2 clock reads, 1 :status read.
    assert_eq!(h.calls, 5);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- lifecycle trace -------------------------------------------------------------------------------

fn lifecycle_worker() -> Worker<SeededRandom> {
    worker(&CONFIG.replace(
        r#""lifecycle":{"enabled":false}"#,
        r#""lifecycle":{"namespace":"test-ns"}"#,
    ))
}

/// Drive a case with a shared-data table carried over from earlier streams.
fn drive_shared(
    w: &mut Worker<SeededRandom>,
    shared: &mut std::collections::HashMap<String, (Vec<u8>, u32)>,
    c: &Case,
    clock_ns: u64,
) {
    let mut h = MockStream::new(c.headers);
    h.clock_ns = clock_ns;
    h.shared = std::mem::take(shared);
    let mut s = RequestState::default();
    s.on_request_headers(w, &mut h, c.request_chunks.is_empty());
    for (i, chunk) in c.request_chunks.iter().enumerate() {
        h.chunk = chunk.to_vec();
        s.on_request_body(w, &mut h, chunk.len(), i + 1 == c.request_chunks.len());
    }
    h.response_headers = vec![(":status".into(), c.status.as_bytes().to_vec())];
    for (k, v) in c.response_headers {
        h.response_headers
            .push((k.to_string(), v.as_bytes().to_vec()));
    }
    s.on_response_headers(w, &mut h, c.response_chunks.is_empty());
    for (i, chunk) in c.response_chunks.iter().enumerate() {
        h.chunk = chunk.to_vec();
        s.on_response_body(w, &mut h, chunk.len(), i + 1 == c.response_chunks.len());
    }
    s.on_log(w, &mut h);
    *shared = h.shared;
}

#[test]
fn transitions_land_in_the_orders_lifecycle_trace() {
    let mut w = lifecycle_worker();
    let mut shared = std::collections::HashMap::new();
    let create = [
        (":method", "POST"),
        (":path", "/api/orders"),
        ("content-type", "application/json"),
    ];
    let t0 = 1_700_000_000_000_000_000u64;
    drive_shared(
        &mut w,
        &mut shared,
        &Case {
            headers: &create,
            request_chunks: &[b"{}"],
            status: "201",
            response_headers: &[("content-type", "application/json")],
            response_chunks: &[br#"{"id":"ORD-1001"}"#],
        },
        t0,
    );
    let submit = [
        (":method", "POST"),
        (":path", "/api/orders/ORD-1001/submit"),
    ];
    drive_shared(
        &mut w,
        &mut shared,
        &Case {
            headers: &submit,
            ..Case::default()
        },
        t0 + 90_000_000_000,
    );
    let spans = exported(&mut w);
    let (lt, root) = ordertrace::order::lifecycle_ids("test-ns", "ORD-1001");
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "order.lifecycle",
            "order INITIATED",
            "shop.create",
            "order SUBMITTED",
            "shop.submit"
        ]
    );
    for s in spans.iter().filter(|s| s.name.starts_with("order")) {
        assert_eq!(
            s.trace_id,
            lt.0.to_vec(),
            "{} is in the order's trace",
            s.name
        );
    }
    assert_eq!(spans[0].span_id, root.0.to_vec());
    assert!(spans[0].parent_span_id.is_empty());
    assert_eq!(spans[1].parent_span_id, root.0.to_vec());
    assert_eq!(spans[3].parent_span_id, root.0.to_vec());
    // linked to the request span
    assert_eq!(spans[3].links[0].span_id, spans[4].span_id);
    assert_eq!(spans[3].links[0].trace_id, spans[4].trace_id);
    // previous status and stage duration on the second transition
    assert_eq!(
        attr(&spans[4], "order.status.previous").as_deref(),
        Some("INITIATED")
    );
    assert_eq!(
        attr(&spans[4], "order.stage.duration_ms").as_deref(),
        Some("90000")
    );
    assert_eq!(
        attr(&spans[3], "order.status.previous").as_deref(),
        Some("INITIATED")
    );
    // The reference lifecycle goes INITIATED → FILE_UPLOADED → SUBMITTED: skipping the upload is flagged.
    assert_eq!(
        attr(&spans[4], "order.transition.unexpected").as_deref(),
        Some("true")
    );
    assert_eq!(attr(&spans[1], "order.transition.unexpected"), None);
    assert_eq!(w.counters.transitions, 2);
}

#[test]
fn unexpected_transitions_are_flagged_and_repeats_are_not_transitions() {
    let mut w = lifecycle_worker();
    let mut shared = std::collections::HashMap::new();
    let status = |s: &'static str| -> Vec<u8> { format!("{{\"status\":\"{s}\"}}").into_bytes() };
    let headers = [
        (":method", "PUT"),
        (":path", "/api/orders/ORD-5/status"),
        ("content-type", "application/json"),
    ];
    let b1 = status("MANUFACTURING_STARTED");
    let b2 = status("SHIPPED");
    drive_shared(
        &mut w,
        &mut shared,
        &Case {
            headers: &headers,
            request_chunks: &[&b1],
            ..Case::default()
        },
        1,
    );
    drive_shared(
        &mut w,
        &mut shared,
        &Case {
            headers: &headers,
            request_chunks: &[&b1],
            ..Case::default()
        },
        2,
    );
    drive_shared(
        &mut w,
        &mut shared,
        &Case {
            headers: &headers,
            request_chunks: &[&b2],
            ..Case::default()
        },
        3,
    );
    let spans = exported(&mut w);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "order MANUFACTURING_STARTED",
            "mes.status",
            "mes.status",
            "order SHIPPED",
            "mes.status"
        ],
        "the repeated status emits no second lifecycle span"
    );
    assert_eq!(
        attr(&spans[4], "order.transition.unexpected").as_deref(),
        Some("true")
    );
    assert_eq!(
        attr(&spans[4], "order.status.previous").as_deref(),
        Some("MANUFACTURING_STARTED")
    );
    assert_eq!(w.counters.transitions_unexpected, 1);
}

#[test]
fn lifecycle_spans_are_exported_even_when_the_request_is_not_sampled() {
    let cfg = CONFIG
        .replace(r#""lifecycle":{"enabled":false}"#, r#""lifecycle":{}"#)
        .replace(r#""body":"#, r#""sampling":{"ratio":0.0},"body":"#);
    let mut w = worker(&cfg);
    let headers = [(":method", "POST"), (":path", "/api/orders/ORD-1/submit")];
    drive(
        &mut w,
        &Case {
            headers: &headers,
            ..Case::default()
        },
    );
    let spans = exported(&mut w);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "order SUBMITTED");
    // a request without a status on an unsampled trace costs nothing
    drive(
        &mut w,
        &Case {
            headers: &[(":method", "GET"), (":path", "/x")],
            ..Case::default()
        },
    );
    assert!(exported(&mut w).is_empty());
}

#[test]
fn failed_requests_do_not_move_the_lifecycle() {
    let mut w = lifecycle_worker();
    let headers = [(":method", "POST"), (":path", "/api/orders/ORD-1/submit")];
    drive(
        &mut w,
        &Case {
            headers: &headers,
            status: "500",
            ..Case::default()
        },
    );
    let spans = exported(&mut w);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "shop.submit");
    assert_eq!(w.counters.transitions, 0);
}

#[test]
fn authority_splits_into_address_and_port() {
    for (auth, host, port) in [
        ("shop.local", "shop.local", None),
        ("127.0.0.1:8080", "127.0.0.1", Some(8080)),
        ("[::1]:443", "[::1]", Some(443)),
        ("[::1]", "[::1]", None),
        ("host:notaport", "host:notaport", None),
    ] {
        assert_eq!(split_authority(auth), (host, port), "{auth}");
    }
}
