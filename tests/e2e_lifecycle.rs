//! The order lifecycle end to end: the shipped Shop, CRM and MES edges (`envoy/*-edge.yaml`, demo ports
//! substituted) in front of the reference API (`ordertrace refapi`), all three exporting to one OTLP
//! receiver. One order goes through the whole reference lifecycle; its lifecycle trace (the id that
//! `ordertrace trace-id` prints) must hold every transition in order, each linked to its request span,
//! with the previous status and stage duration of what one edge saw in a row; an unexpected transition
//! is flagged; each edge's `/stats/prometheus` carries the labelled metrics that deploy/prometheus/
//! uses. The config checks at the bottom keep envoy/, the lifecycle config and the Prometheus rules in
//! step. Nothing here skips: a missing Envoy or `.wasm` fails with the make target to run.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use ordertrace::order::REFERENCE_STATUSES;
use serde_json::{json, Value};
use support::*;

const WAIT: Duration = Duration::from_secs(20);
/// Envoy merges histograms into `/stats/prometheus` on its stats flush (every 5 s by default).
const METRICS_WAIT: Duration = Duration::from_secs(30);
/// Pause between two status changes, so stage durations are well above the clock's noise.
const GAP: Duration = Duration::from_millis(250);
/// How far Envoy's end of a stream (when the filter records it) may lie from what the client saw.
const SLACK_MS: i64 = 200;

/// The reference lifecycle (docs/lifecycle.md) one order goes through: CANCELLED aside.
fn reference_chain() -> Vec<&'static str> {
    REFERENCE_STATUSES
        .into_iter()
        .filter(|s| *s != "CANCELLED")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Three edges, three reference APIs, one OTLP receiver

struct EdgeUnderTest {
    name: &'static str,
    service: &'static str,
    envoy: Envoy,
    port: u16,
    _api: ChildGuard,
}

struct Stack {
    otlp: OtlpReceiver,
    shop: EdgeUnderTest,
    crm: EdgeUnderTest,
    mes: EdgeUnderTest,
    dir: TempDir,
}

impl Stack {
    fn start() -> Stack {
        let dir = TempDir::new("lifecycle");
        let otlp = OtlpReceiver::start(OtlpMode::Ok);
        let edge = |name: &'static str, service: &'static str| {
            let (api, api_port) = start_refapi(name, &dir);
            let ports = EdgePorts {
                listener: free_port(),
                upstream: api_port,
                collector: otlp.port(),
                admin: free_port(),
            };
            let cfg = EdgeConfig::load(name).ports(&ports).flush_interval_ms(100);
            EdgeUnderTest {
                name,
                service,
                envoy: Envoy::start(cfg.yaml()),
                port: ports.listener,
                _api: api,
            }
        };
        let shop = edge("shop", "shop-api");
        let crm = edge("crm", "crm-api");
        let mes = edge("mes", "mes-api");
        Stack {
            otlp,
            shop,
            crm,
            mes,
            dir,
        }
    }

    fn edge(&self, service: &str) -> &EdgeUnderTest {
        [&self.shop, &self.crm, &self.mes]
            .into_iter()
            .find(|e| e.service == service)
            .unwrap()
    }
}

/// One status change as the test drove it.
#[derive(Debug)]
struct Step {
    status: &'static str,
    service: &'static str,
    /// Client-side times around the request.
    sent: Instant,
    answered: Instant,
}

/// Sends one request and checks its status code; returns the step and the response.
fn drive(
    edge: &EdgeUnderTest,
    status: &'static str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
    expect: u16,
) -> (Step, HttpResponse) {
    std::thread::sleep(GAP);
    let sent = Instant::now();
    let resp = match body {
        Some(b) => http_json(edge.port, method, target, headers, b),
        None => http(edge.port, method, target, headers, b""),
    };
    let answered = Instant::now();
    assert_eq!(
        resp.status,
        expect,
        "{method} {target} through the {} edge: {}",
        edge.name,
        resp.text()
    );
    (
        Step {
            status,
            service: edge.service,
            sent,
            answered,
        },
        resp,
    )
}

fn status_body(status: &str) -> Value {
    json!({"status": status, "operatorId": "op-17"})
}

/// `ordertrace trace-id ID --config <the edge's plugin JSON>`: (trace id, root span id, URL line).
fn cli_trace_id(order_id: &str, edge: &str, dir: &TempDir) -> (String, String, String) {
    let path = dir.join(&format!("{edge}-plugin.json"));
    std::fs::write(&path, EdgeConfig::load(edge).plugin_json().to_string()).unwrap();
    let (ok, out, err) = run_cli(&["trace-id", order_id, "--config", path.to_str().unwrap()]);
    assert!(ok, "ordertrace trace-id failed: {out}{err}");
    parse_trace_id_output(&out)
}

fn parse_trace_id_output(out: &str) -> (String, String, String) {
    let mut lines = out.lines();
    let first: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let after = |word: &str| {
        first
            .iter()
            .position(|w| *w == word)
            .and_then(|i| first.get(i + 1))
            .map(|w| w.trim_end_matches(',').to_string())
            .unwrap_or_else(|| panic!("no `{word} <id>` in `ordertrace trace-id` output {out:?}"))
    };
    let trace = after("trace");
    let root = after("span");
    let url = lines.next().unwrap_or("").trim().to_string();
    (trace, root, url)
}

fn attr_bool(s: &ReceivedSpan, key: &str) -> Option<bool> {
    match s.attr(key)?.value {
        Some(any_value::Value::BoolValue(b)) => Some(b),
        _ => None,
    }
}

fn is_internal(s: &ReceivedSpan) -> bool {
    s.span.kind == SpanKind::Internal as i32
}

fn ms_between_ends(a: &ReceivedSpan, b: &ReceivedSpan) -> i64 {
    ((b.span.end_time_unix_nano - a.span.end_time_unix_nano) / 1_000_000) as i64
}

// ---------------------------------------------------------------------------------------------
// The reference lifecycle through three edges

#[test]
fn one_order_through_three_edges_is_one_lifecycle_trace_with_labelled_metrics() {
    let st = Stack::start();
    let (shop, crm, mes) = (&st.shop, &st.crm, &st.mes);
    let mut steps: Vec<Step> = Vec::new();

    // Shop: the id is only in the response body of the create.
    let (step, created) = drive(
        shop,
        "INITIATED",
        "POST",
        "/api/orders",
        &[],
        Some(
            &json!({"product": "ring", "material": "gold-750", "partnerId": "p-17",
                     "email": "ann@example.com"}),
        ),
        201,
    );
    steps.push(step);
    let id = created.json()["id"].as_str().unwrap().to_string();
    let model: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::thread::sleep(GAP);
    let sent = Instant::now();
    let up = http(
        shop.port,
        "PUT",
        &format!("/api/orders/{id}/model"),
        &[("content-type", "model/stl")],
        &model,
    );
    assert_eq!(up.status, 200, "model upload: {}", up.text());
    steps.push(Step {
        status: "FILE_UPLOADED",
        service: shop.service,
        sent,
        answered: Instant::now(),
    });
    let submit = format!("/api/orders/{id}/submit");
    steps.push(drive(shop, "SUBMITTED", "POST", &submit, &[], None, 200).0);
    // A failed read on the Shop edge: counted as a route error, not a transition.
    drive(
        shop,
        "-",
        "GET",
        &format!("/api/orders/{id}"),
        &[("x-demo-fail", "503")],
        None,
        503,
    );

    // MES starts the price calculation (202). The reference API has no route that sets
    // PRICE_CALCULATED (in production it arrives as the `order.price_calculated` message), so it is
    // set like the operators' statuses, through MES `PUT /api/orders/{id}/status`.
    let price = format!("/api/orders/{id}/price");
    let status = format!("/api/orders/{id}/status");
    steps.push(
        drive(
            mes,
            "PRICE_CALCULATION_STARTED",
            "POST",
            &price,
            &[],
            None,
            202,
        )
        .0,
    );
    let body = status_body("PRICE_CALCULATED");
    steps.push(
        drive(
            mes,
            "PRICE_CALCULATED",
            "PUT",
            &status,
            &[],
            Some(&body),
            200,
        )
        .0,
    );

    // CRM approves.
    let approve = format!("/api/orders/{id}/approve");
    let body = json!({"managerId": "m-7"});
    steps.push(
        drive(
            crm,
            "MANUFACTURING_APPROVED",
            "POST",
            &approve,
            &[],
            Some(&body),
            200,
        )
        .0,
    );

    // MES operators; the first PACKAGING attempt fails (500) and is retried.
    for s in [
        "MANUFACTURING_STARTED",
        "MANUFACTURING_COMPLETED",
        "PACKAGING",
        "SHIPPED",
    ] {
        let body = status_body(s);
        if s == "PACKAGING" {
            let fail = [("x-demo-fail", "500")];
            drive(mes, "-", "PUT", &status, &fail, Some(&body), 500);
        }
        steps.push(drive(mes, s, "PUT", &status, &[], Some(&body), 200).0);
    }

    // CRM closes.
    let close = format!("/api/orders/{id}/close");
    steps.push(drive(crm, "CLOSED", "POST", &close, &[], None, 200).0);
    assert_eq!(
        steps.iter().map(|s| s.status).collect::<Vec<_>>(),
        reference_chain()
    );

    // A second order, moved SHIPPED right after MANUFACTURING_STARTED on MES: not allowed.
    let (_, created2) = drive(
        shop,
        "INITIATED",
        "POST",
        "/api/orders",
        &[],
        Some(&json!({"product": "pendant"})),
        201,
    );
    let id2 = created2.json()["id"].as_str().unwrap().to_string();
    assert_ne!(id, id2);
    let status2 = format!("/api/orders/{id2}/status");
    let body = status_body("MANUFACTURING_STARTED");
    drive(
        mes,
        "MANUFACTURING_STARTED",
        "PUT",
        &status2,
        &[],
        Some(&body),
        200,
    );
    let body = status_body("SHIPPED");
    drive(mes, "SHIPPED", "PUT", &status2, &[], Some(&body), 200);

    check_lifecycle_trace(&st, &id, &steps);
    check_unexpected_transition(&st, &id2);
    check_metrics(&st);
}

/// The order's lifecycle trace: the id of `ordertrace trace-id`, one root, every transition in order,
/// each a child of the root linked to its request span, previous status and stage duration where the
/// same edge saw the previous transition.
fn check_lifecycle_trace(st: &Stack, id: &str, steps: &[Step]) {
    let (trace_id, root_id, url) = cli_trace_id(id, "shop", &st.dir);
    for edge in ["crm", "mes"] {
        assert_eq!(
            cli_trace_id(id, edge, &st.dir),
            (trace_id.clone(), root_id.clone(), url.clone()),
            "envoy/{edge}-edge.yaml must share the Shop edge's lifecycle namespace and trace_url"
        );
    }
    assert_eq!(url, format!("http://localhost:16686/trace/{trace_id}"));
    let (ok, default_ns, _) = run_cli(&["trace-id", id]);
    assert!(ok);
    assert_ne!(
        parse_trace_id_output(&default_ns).0,
        trace_id,
        "the edges' namespace is the configured one, not the CLI's default"
    );

    let chain = reference_chain();
    let expected = chain.len() + 1; // the root `order.lifecycle` and one span per transition
    let spans = st
        .otlp
        .wait_for_spans_where(expected, WAIT, |s| s.trace_id() == trace_id);
    let all: Vec<String> = spans.iter().map(ReceivedSpan::describe).collect();
    assert_eq!(
        spans.len(),
        expected,
        "lifecycle trace {trace_id} of {id} must hold the root and {} transitions: {all:#?}",
        chain.len()
    );
    assert!(spans.iter().all(is_internal), "{all:#?}");

    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name() == "order.lifecycle")
        .collect();
    assert_eq!(roots.len(), 1, "one root span: {all:#?}");
    let root = roots[0];
    assert_eq!(
        root.span_id(),
        root_id,
        "root span id = `ordertrace trace-id`"
    );
    assert!(
        root.span.parent_span_id.is_empty(),
        "the root has no parent"
    );
    assert_eq!(root.attr_str("order.id").as_deref(), Some(id));
    assert_eq!(
        root.resource_str("service.name").as_deref(),
        Some("shop-api")
    );

    let mut changes: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name() != "order.lifecycle")
        .collect();
    changes.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.end_time_unix_nano));
    let names: Vec<&str> = changes.iter().map(|s| s.name()).collect();
    let want: Vec<String> = chain.iter().map(|s| format!("order {s}")).collect();
    assert_eq!(names, want, "transitions in order");

    let requests: Vec<ReceivedSpan> = st
        .otlp
        .spans()
        .into_iter()
        .filter(|s| s.is_server() && s.attr_str("order.id").as_deref() == Some(id))
        .collect();
    for (i, (span, step)) in changes.iter().zip(steps).enumerate() {
        let status = step.status;
        let ctx = || format!("transition {status}: {}", span.describe());
        assert_eq!(span.parent_span_id(), root_id, "{}", ctx());
        assert_ne!(span.span_id(), root_id, "{}", ctx());
        assert_eq!(span.attr_str("order.id").as_deref(), Some(id), "{}", ctx());
        assert_eq!(
            span.attr_str("order.status").as_deref(),
            Some(status),
            "{}",
            ctx()
        );
        assert_eq!(
            span.attr_str("service.name").as_deref(),
            Some(step.service),
            "{}",
            ctx()
        );
        assert_eq!(
            span.resource_str("service.name").as_deref(),
            Some(step.service),
            "{}",
            ctx()
        );
        assert_eq!(
            attr_bool(span, "order.transition.unexpected"),
            None,
            "{}",
            ctx()
        );

        // The link to the request span that made the change.
        assert_eq!(span.span.links.len(), 1, "{}", ctx());
        let link = &span.span.links[0];
        let link_kind = link
            .attributes
            .iter()
            .find(|kv| kv.key == "ordertrace.link");
        assert_eq!(
            link_kind
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                }),
            Some("request"),
            "{}",
            ctx()
        );
        let request = requests
            .iter()
            .find(|r| r.span.trace_id == link.trace_id && r.span.span_id == link.span_id)
            .unwrap_or_else(|| {
                panic!(
                    "{}: the link {}/{} is no exported request span of {id}",
                    ctx(),
                    hex(&link.trace_id),
                    hex(&link.span_id)
                )
            });
        assert_ne!(
            request.trace_id(),
            trace_id,
            "request spans keep their own trace"
        );
        assert_eq!(
            request.attr_str("order.status").as_deref(),
            Some(status),
            "{}",
            ctx()
        );
        assert_eq!(
            request.resource_str("service.name").as_deref(),
            Some(step.service)
        );
        assert_eq!(
            span.span.start_time_unix_nano,
            request.span.start_time_unix_nano
        );
        assert_eq!(
            span.span.end_time_unix_nano,
            request.span.end_time_unix_nano
        );

        // Previous status and stage duration: only when the same edge saw the previous transition.
        let previous = (0..i)
            .rev()
            .find(|&j| steps[j].service == step.service)
            .map(|j| (j, steps[j].status));
        let got_prev = span.attr_str("order.status.previous");
        let got_ms = span.attr_int("order.stage.duration_ms");
        match previous {
            None => {
                assert_eq!(got_prev, None, "{}: first transition on its edge", ctx());
                assert_eq!(got_ms, None, "{}", ctx());
            }
            Some((j, prev)) => {
                assert_eq!(got_prev.as_deref(), Some(prev), "{}", ctx());
                let ms = got_ms.unwrap_or_else(|| panic!("{}: no order.stage.duration_ms", ctx()));
                // Exactly the time between the two changes as the edge recorded them...
                assert_eq!(ms, ms_between_ends(changes[j], span), "{}", ctx());
                // ...which is what the client saw, give or take when Envoy logs a finished stream.
                let low = step.sent.duration_since(steps[j].answered).as_millis() as i64;
                let high = step.answered.duration_since(steps[j].sent).as_millis() as i64;
                assert!(
                    ms + SLACK_MS >= low && ms <= high + SLACK_MS,
                    "{}: stage {prev} -> {status} took {ms} ms, the client saw {low}..{high} ms",
                    ctx()
                );
                assert!(ms + SLACK_MS >= GAP.as_millis() as i64, "{}", ctx());
            }
        }
        // The request span carries the same annotations.
        assert_eq!(
            request.attr_str("order.status.previous"),
            got_prev,
            "{}",
            ctx()
        );
        assert_eq!(
            request.attr_int("order.stage.duration_ms"),
            got_ms,
            "{}",
            ctx()
        );
    }
}

/// SHIPPED right after MANUFACTURING_STARTED on MES is flagged on the lifecycle span and the request span.
fn check_unexpected_transition(st: &Stack, id: &str) {
    let (trace_id, root_id, _) = cli_trace_id(id, "mes", &st.dir);
    // The root and INITIATED (Shop), MANUFACTURING_STARTED and SHIPPED (MES).
    let spans = st
        .otlp
        .wait_for_spans_where(4, WAIT, |s| s.trace_id() == trace_id);
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("no {name} in the lifecycle trace of {id}: {spans:#?}"))
    };
    let started = find("order MANUFACTURING_STARTED");
    assert_eq!(
        attr_bool(started, "order.transition.unexpected"),
        None,
        "first on MES: {}",
        started.describe()
    );
    assert_eq!(started.attr_str("order.status.previous"), None);
    let shipped = find("order SHIPPED");
    assert_eq!(shipped.parent_span_id(), root_id);
    assert_eq!(
        attr_bool(shipped, "order.transition.unexpected"),
        Some(true),
        "MANUFACTURING_STARTED -> SHIPPED is not an allowed transition: {}",
        shipped.describe()
    );
    assert_eq!(
        shipped.attr_str("order.status.previous").as_deref(),
        Some("MANUFACTURING_STARTED")
    );
    assert!(shipped.attr_int("order.stage.duration_ms").is_some());
    let link = &shipped.span.links[0];
    let request = st
        .otlp
        .spans()
        .into_iter()
        .find(|r| r.is_server() && r.span.span_id == link.span_id)
        .expect("the flagged transition links to its request span");
    assert_eq!(
        attr_bool(&request, "order.transition.unexpected"),
        Some(true),
        "{}",
        request.describe()
    );
    assert_eq!(request.attr_str("order.id").as_deref(), Some(id));
}

/// Each edge's `/stats/prometheus`: the labelled metrics with exactly the labels deploy/prometheus/
/// uses, no `envoy_` prefix, no label left glued in a metric name.
fn check_metrics(st: &Stack) {
    type Want = (&'static str, Vec<(&'static str, &'static str)>, f64);
    let c =
        |name, labels: &[(&'static str, &'static str)], v| -> Want { (name, labels.to_vec(), v) };
    let tr = |service, status, v| {
        c(
            "ordertrace_status_transitions",
            &[("service", service), ("status", status)],
            v,
        )
    };
    let rq = |route, v| c("ordertrace_route_requests", &[("route", route)], v);
    let er = |route, v| c("ordertrace_route_errors", &[("route", route)], v);
    let rd = |route, v| c("ordertrace_route_duration_ms_count", &[("route", route)], v);
    let sd = |from, to, v| {
        c(
            "ordertrace_stage_duration_ms_count",
            &[("from", from), ("to", to)],
            v,
        )
    };
    let plain = |name, v| c(name, &[], v);
    let wants: Vec<(&str, Vec<Want>)> = vec![
        (
            "shop-api",
            vec![
                tr("shop-api", "INITIATED", 2.0),
                tr("shop-api", "FILE_UPLOADED", 1.0),
                tr("shop-api", "SUBMITTED", 1.0),
                rq("shop_create", 2.0),
                rq("shop_upload", 1.0),
                rq("shop_submit", 1.0),
                rq("shop_get", 1.0),
                er("shop_get", 1.0),
                rd("shop_create", 2.0),
                rd("shop_get", 1.0),
                sd("INITIATED", "FILE_UPLOADED", 1.0),
                sd("FILE_UPLOADED", "SUBMITTED", 1.0),
                plain("ordertrace_transitions", 4.0),
                plain("ordertrace_transitions_unexpected", 0.0),
                plain("ordertrace_spans_dropped", 0.0),
            ],
        ),
        (
            "crm-api",
            vec![
                tr("crm-api", "MANUFACTURING_APPROVED", 1.0),
                tr("crm-api", "CLOSED", 1.0),
                rq("crm_approve", 1.0),
                rq("crm_close", 1.0),
                sd("MANUFACTURING_APPROVED", "CLOSED", 1.0),
                plain("ordertrace_transitions_unexpected", 0.0),
                plain("ordertrace_spans_dropped", 0.0),
            ],
        ),
        (
            "mes-api",
            vec![
                tr("mes-api", "PRICE_CALCULATION_STARTED", 1.0),
                tr("mes-api", "PRICE_CALCULATED", 1.0),
                tr("mes-api", "MANUFACTURING_STARTED", 2.0),
                tr("mes-api", "MANUFACTURING_COMPLETED", 1.0),
                tr("mes-api", "PACKAGING", 1.0),
                tr("mes-api", "SHIPPED", 2.0),
                rq("mes_price", 1.0),
                rq("mes_status", 8.0),
                er("mes_status", 1.0),
                rd("mes_status", 8.0),
                sd("PRICE_CALCULATION_STARTED", "PRICE_CALCULATED", 1.0),
                sd("PRICE_CALCULATED", "MANUFACTURING_STARTED", 1.0),
                sd("MANUFACTURING_STARTED", "MANUFACTURING_COMPLETED", 1.0),
                sd("MANUFACTURING_COMPLETED", "PACKAGING", 1.0),
                sd("PACKAGING", "SHIPPED", 1.0),
                sd("MANUFACTURING_STARTED", "SHIPPED", 1.0),
                // The price calculation SLA (30 min) is a bucket bound: the alert's p95 is exact.
                c(
                    "ordertrace_stage_duration_ms_bucket",
                    &[
                        ("from", "PRICE_CALCULATION_STARTED"),
                        ("to", "PRICE_CALCULATED"),
                        ("le", "1800000"),
                    ],
                    1.0,
                ),
                plain("ordertrace_transitions_unexpected", 1.0),
                plain("ordertrace_spans_dropped", 0.0),
            ],
        ),
    ];

    let mut seen_names: Vec<String> = Vec::new();
    for (service, wanted) in &wants {
        let edge = st.edge(service);
        let mut last = String::new();
        let samples = poll(METRICS_WAIT, || {
            last = edge.envoy.prometheus();
            let samples = parse_prometheus(&last);
            wanted
                .iter()
                .all(|(name, labels, v)| prom_value(&samples, name, labels) == Some(*v))
                .then_some(samples)
        })
        .unwrap_or_else(|| {
            let ours: Vec<&str> = last.lines().filter(|l| l.starts_with("ordertrace_")).collect();
            let missing: Vec<String> = {
                let samples = parse_prometheus(&last);
                wanted
                    .iter()
                    .filter(|(name, labels, v)| prom_value(&samples, name, labels) != Some(*v))
                    .map(|(name, labels, v)| {
                        format!("{name}{labels:?} = {v} (got {:?})", prom_value(&samples, name, labels))
                    })
                    .collect()
            };
            panic!(
                "{} edge /stats/prometheus lacks {missing:#?} within {METRICS_WAIT:?}; its ordertrace lines:\n{}",
                edge.name,
                ours.join("\n")
            )
        });

        for s in &samples {
            // Envoy exports its `wasmcustom.*` stats without `envoy_` and without the namespace.
            assert!(
                !s.name.contains("wasmcustom") && !s.name.starts_with("envoy_ordertrace"),
                "the filter's metrics are exported as `ordertrace_*`: {s:?}"
            );
            for base in [
                "ordertrace_route_requests",
                "ordertrace_route_errors",
                "ordertrace_route_duration_ms",
                "ordertrace_status_transitions",
                "ordertrace_stage_duration_ms",
            ] {
                if let Some(rest) = s.name.strip_prefix(base) {
                    assert!(
                        ["", "_bucket", "_sum", "_count"].contains(&rest),
                        "a label is still glued in the metric name: {s:?} (stats_tags in envoy/{}-edge.yaml)",
                        edge.name
                    );
                }
            }
        }
        // Envoy's own stats keep their default tags.
        assert!(
            samples
                .iter()
                .any(|s| s.name == "envoy_cluster_upstream_rq_total"
                    && s.labels.get("envoy_cluster_name").map(String::as_str)
                        == Some("otlp_collector")),
            "use_all_default_tags: Envoy's own stats must keep their labels"
        );
        seen_names.extend(samples.into_iter().map(|s| s.name));
    }

    // Every edge metric the Prometheus rules read exists under that name.
    for file in ["recording-rules.yml", "alert-rules.yml"] {
        let text =
            std::fs::read_to_string(repo_root().join("deploy/prometheus").join(file)).unwrap();
        for name in metric_names_in(&text) {
            assert!(
                seen_names.contains(&name),
                "deploy/prometheus/{file} reads `{name}`, which no edge exports"
            );
        }
    }
}

/// `ordertrace_*` metric names in a text (recording rule names, `ordertrace:…`, are not metrics).
fn metric_names_in(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("ordertrace_") {
        let start = i + pos;
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        let before_ok = start == 0 || !ident(bytes[start - 1]);
        let name = &text[start..end];
        if before_ok && !name.contains(':') && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The configs: envoy/, the lifecycle and deploy/prometheus/ agree

fn lifecycle_of(edge: &str) -> Value {
    EdgeConfig::load(edge).plugin_json()["lifecycle"].clone()
}

#[test]
fn shipped_lifecycle_configs_pass_ordertrace_check_and_agree() {
    let dir = TempDir::new("check");
    for edge in ["shop", "crm", "mes"] {
        let path = dir.join(&format!("{edge}.json"));
        std::fs::write(&path, EdgeConfig::load(edge).plugin_json().to_string()).unwrap();
        let (ok, out, err) = run_cli(&["check", path.to_str().unwrap()]);
        assert!(
            ok,
            "ordertrace check refuses envoy/{edge}-edge.yaml's plugin JSON:\n{out}{err}"
        );
        assert!(out.trim_end().ends_with("OK"), "{out}");
    }
    let shop = lifecycle_of("shop");
    let statuses: Vec<&str> = shop["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let chain = reference_chain();
    assert_eq!(&statuses[..chain.len()], chain);
    assert_eq!(shop["sla"]["PRICE_CALCULATION_STARTED"], "30m");
    assert_eq!(shop["sla"]["PRICE_CALCULATED"], "1d", "approval");
    assert_eq!(shop["sla"]["MANUFACTURING_STARTED"], "7d", "manufacturing");
    assert_eq!(shop["trace_url"], "http://localhost:16686/trace/{trace_id}");
    for edge in ["crm", "mes"] {
        let mut other = lifecycle_of(edge);
        let mut same = shop.clone();
        // Transitions are what each edge sees in a row; everything else is shared.
        other.as_object_mut().unwrap().remove("transitions");
        same.as_object_mut().unwrap().remove("transitions");
        assert_eq!(
            other, same,
            "envoy/{edge}-edge.yaml's lifecycle differs from the Shop edge's"
        );
    }
}

fn stats_config_block(edge: &str) -> String {
    let text =
        std::fs::read_to_string(repo_root().join(format!("envoy/{edge}-edge.yaml"))).unwrap();
    let start = text
        .find("\nstats_config:\n")
        .unwrap_or_else(|| panic!("envoy/{edge}-edge.yaml has no stats_config"));
    let end = text[start + 1..]
        .find("\nstatic_resources:")
        .map(|e| e + start + 1)
        .unwrap();
    text[start..end].to_string()
}

/// Bucket bounds of the stage duration histogram in `stats_config`.
fn stage_buckets(block: &str) -> Vec<u64> {
    let at = block
        .find("buckets: [")
        .expect("histogram_bucket_settings buckets")
        + "buckets: [".len();
    let end = block[at..].find(']').unwrap() + at;
    block[at..end]
        .split(',')
        .map(|b| b.trim().parse().unwrap())
        .collect()
}

fn duration_ms(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "ms" | "" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        u => panic!("unknown unit {u:?} in {s:?}"),
    }
}

#[test]
fn stats_config_is_the_same_on_every_edge() {
    let shop = stats_config_block("shop");
    assert!(shop.contains("tag_name: route") && shop.contains("tag_name: status"));
    for edge in ["crm", "mes"] {
        assert_eq!(
            stats_config_block(edge),
            shop,
            "envoy/{edge}-edge.yaml stats_config"
        );
    }
}

/// `ordertrace:stage_sla_ms` in recording-rules.yml = the lifecycle SLAs of the statuses from `from` up
/// to `to`, every value a bucket bound of the stage histogram, every stage one an edge measures.
#[test]
fn prometheus_stage_slas_follow_the_lifecycle_config() {
    let lc = lifecycle_of("mes");
    let statuses: Vec<String> = lc["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let index = |s: &str| {
        statuses
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} is no status"))
    };
    let buckets = stage_buckets(&stats_config_block("mes"));
    let rules =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/recording-rules.yml")).unwrap();
    let lines: Vec<&str> = rules.lines().map(str::trim).collect();
    let mut found = 0;
    for (i, line) in lines.iter().enumerate() {
        if *line != "- record: ordertrace:stage_sla_ms" {
            continue;
        }
        let value: u64 = lines[i + 1]
            .strip_prefix("expr: vector(")
            .and_then(|v| v.strip_suffix(')'))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("expected `expr: vector(N)` after line {}", i + 1));
        let labels = lines[i + 2]
            .strip_prefix("labels: {")
            .and_then(|v| v.strip_suffix('}'))
            .unwrap();
        let label: BTreeMap<&str, &str> = labels
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once(':').unwrap();
                (k.trim(), v.trim())
            })
            .collect();
        let (from, to) = (label["from"], label["to"]);
        let sum: u64 = statuses[index(from)..index(to)]
            .iter()
            .map(|s| {
                lc["sla"][s.as_str()]
                    .as_str()
                    .map(duration_ms)
                    .unwrap_or_else(|| panic!("no lifecycle.sla.{s} for the stage {from} -> {to}"))
            })
            .sum();
        assert_eq!(
            value, sum,
            "ordertrace:stage_sla_ms{{from={from},to={to}}} vs lifecycle.sla"
        );
        assert!(
            buckets.contains(&value),
            "{value} ms ({from} -> {to}) is not a bucket bound: {buckets:?}"
        );
        let measured = ["shop", "crm", "mes"].iter().any(|e| {
            lifecycle_of(e)["transitions"][from]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == to))
        });
        assert!(
            measured,
            "no edge sees {from} -> {to} in a row: no histogram to compare"
        );
        found += 1;
    }
    assert!(found >= 5, "found {found} stage SLAs");
    // The price calculation alert compares against the 30 min of the config.
    assert_eq!(
        duration_ms(lc["sla"]["PRICE_CALCULATION_STARTED"].as_str().unwrap()),
        1_800_000
    );
}
