//! The HTTP side of `ordertrace watch`: OTLP ingest, `/metrics`, the JSON API and the HTML pages
//! (rendered on the server: no script, no external asset, works offline).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use super::super::httpd::{self, percent_decode, Response};
use super::gaps::Stuck;
use super::store::BUCKETS_MS;
use super::{fmt_ms, ingest, journey_view, rfc3339, stuck_json, trace_url, JourneyView, State};

const PAGE: &str = include_str!("page.html");

fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub fn handle(req: &httpd::Request, body: &mut httpd::Body<'_>, st: &State) -> Response {
    let segs = req.segments();
    match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["v1", "traces"]) => ingest_request(req, body, st),
        (_, ["v1", "traces"]) => Response::text(405, "only POST").with_header("allow", "POST"),
        ("GET", ["healthz"]) => Response::text(200, "ok\n"),
        ("GET", ["metrics"]) => metrics(st),
        ("GET", ["api", "stuck"]) => {
            let now = st.clock.now_ns();
            let mut store = st.store();
            if let Err(e) = store.sweep(&st.lc, now) {
                return Response::text(500, &e);
            }
            match store.stuck(&st.lc, now) {
                Ok(s) => Response::json(200, &stuck_json(&st.lc, &s)),
                Err(e) => Response::text(500, &e),
            }
        }
        ("GET", ["api", "orders", id]) => {
            let id = percent_decode(id);
            let now = st.clock.now_ns();
            let store = st.store();
            match journey_view(&store, &st.lc, &id, now) {
                Ok(Some(v)) => Response::json(200, &v.to_json(&st.lc)),
                Ok(None) => Response::json(404, &serde_json::json!({"error": "no such order"})),
                Err(e) => Response::text(500, &e),
            }
        }
        ("GET", []) => stuck_page(st),
        ("GET", ["orders", id]) => order_page(st, &percent_decode(id)),
        _ => Response::text(404, "not found"),
    }
}

fn ingest_request(req: &httpd::Request, body: &mut httpd::Body<'_>, st: &State) -> Response {
    let c = &st.counters;
    let ctype = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ctype.is_empty()
        && !ctype.starts_with("application/x-protobuf")
        && !ctype.starts_with("application/protobuf")
    {
        inc(&c.requests_bad, 1);
        return Response::text(415, "only OTLP protobuf (application/x-protobuf)");
    }
    if req
        .header("content-encoding")
        .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
    {
        inc(&c.requests_bad, 1);
        return Response::text(415, "content-encoding is not supported");
    }
    let declared = req
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > st.max_body) {
        inc(&c.requests_too_large, 1);
        return Response::text(
            413,
            &format!("request body larger than {} bytes", st.max_body),
        );
    }
    let limit = usize::try_from(st.max_body).unwrap_or(usize::MAX);
    let bytes = match body.read_to_vec(limit) {
        Ok(b) => b,
        Err(e) => {
            if e.status() == 413 {
                inc(&c.requests_too_large, 1);
            } else {
                inc(&c.requests_bad, 1);
            }
            return Response::text(e.status(), &e.to_string());
        }
    };
    let decoded = match ingest::decode(&bytes, &st.lc.namespace) {
        Ok(d) => d,
        Err(e) => {
            inc(&c.requests_bad, 1);
            return Response::text(400, &format!("not an ExportTraceServiceRequest: {e}"));
        }
    };
    inc(&c.spans_ignored, decoded.ignored);
    let now = st.clock.now_ns();
    match st.store().ingest(&st.lc, &decoded.transitions, now) {
        Ok(r) => {
            inc(&c.requests_ok, 1);
            inc(&c.transitions_stored, r.stored);
            inc(&c.transitions_duplicate, r.duplicates);
            inc(&c.transitions_purged, r.purged);
            Response::bytes(
                200,
                "application/x-protobuf",
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(e) => {
            inc(&c.requests_failed, 1);
            eprintln!("ordertrace watch: {e}");
            // 503: the exporter retries.
            Response::text(503, &e)
        }
    }
}

/// The periodic sweep: record SLA gaps, apply retention.
pub fn sweep(st: &State, closed_days: u64, aggregate_days: u64) {
    let now = st.clock.now_ns();
    let mut store = st.store();
    let r = store
        .sweep(&st.lc, now)
        .and_then(|_| store.retention(now, closed_days, aggregate_days));
    inc(&st.counters.sweeps, 1);
    match r {
        Ok(n) => inc(&st.counters.orders_purged, n),
        Err(e) => {
            inc(&st.counters.sweep_errors, 1);
            eprintln!("ordertrace watch: sweep: {e}");
        }
    }
}

/// (name, help, [(labels, value)]) of one counter family.
type CounterFamily = (&'static str, &'static str, Vec<(&'static str, u64)>);

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metrics(st: &State) -> Response {
    let now = st.clock.now_ns();
    let mut store = st.store();
    let data = store.sweep(&st.lc, now).and_then(|_| {
        Ok((
            store.orders_per_status()?,
            store.stuck(&st.lc, now)?,
            store.stage_histograms()?,
            store.gap_counts()?,
        ))
    });
    drop(store);
    let (per_status, stuck, hist, gap_counts) = match data {
        Ok(d) => d,
        Err(e) => return Response::text(500, &e),
    };
    let mut m = String::new();
    let _ = writeln!(m, "# HELP ordertrace_watch_orders Orders per current status (closed orders until retention removes them).\n# TYPE ordertrace_watch_orders gauge");
    let mut statuses: Vec<String> = st.lc.statuses.clone();
    for (s, _) in &per_status {
        if !statuses.contains(s) {
            statuses.push(s.clone());
        }
    }
    for s in &statuses {
        let n = per_status
            .iter()
            .find(|(x, _)| x == s)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(m, "ordertrace_watch_orders{{status=\"{}\"}} {n}", label(s));
    }
    let _ = writeln!(m, "# HELP ordertrace_watch_stuck_orders Orders stuck now, by the stage they are stuck in (over SLA or a skipped status).\n# TYPE ordertrace_watch_stuck_orders gauge");
    for s in st
        .lc
        .statuses
        .iter()
        .filter(|s| !st.lc.terminal.contains(s))
    {
        for reason in ["sla", "skipped"] {
            let n = stuck
                .iter()
                .filter(|x| &x.status == s && x.reason == reason)
                .count();
            let _ = writeln!(
                m,
                "ordertrace_watch_stuck_orders{{status=\"{}\",reason=\"{reason}\"}} {n}",
                label(s)
            );
        }
    }
    let _ = writeln!(m, "# HELP ordertrace_watch_stage_duration_ms Time orders spent in `from` before moving to `to`, across services (kept orders).\n# TYPE ordertrace_watch_stage_duration_ms histogram");
    for h in &hist {
        let l = format!("from=\"{}\",to=\"{}\"", label(&h.from), label(&h.to));
        for (b, c) in BUCKETS_MS.iter().zip(&h.cumulative) {
            let _ = writeln!(
                m,
                "ordertrace_watch_stage_duration_ms_bucket{{{l},le=\"{b}\"}} {c}"
            );
        }
        let _ = writeln!(
            m,
            "ordertrace_watch_stage_duration_ms_bucket{{{l},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            m,
            "ordertrace_watch_stage_duration_ms_sum{{{l}}} {}",
            h.sum_ms
        );
        let _ = writeln!(
            m,
            "ordertrace_watch_stage_duration_ms_count{{{l}}} {}",
            h.count
        );
    }
    let _ = writeln!(m, "# HELP ordertrace_watch_gaps Gaps recorded in the store, by kind and state.\n# TYPE ordertrace_watch_gaps gauge");
    for kind in ["sla", "skipped"] {
        let (all, open) = gap_counts
            .iter()
            .find(|(k, _, _)| k == kind)
            .map_or((0, 0), |(_, a, o)| (*a, *o));
        let _ = writeln!(
            m,
            "ordertrace_watch_gaps{{kind=\"{kind}\",state=\"open\"}} {open}"
        );
        let _ = writeln!(
            m,
            "ordertrace_watch_gaps{{kind=\"{kind}\",state=\"resolved\"}} {}",
            all.saturating_sub(open)
        );
    }
    let c = &st.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let counters: [CounterFamily; 5] = [
        (
            "ordertrace_watch_export_requests_total",
            "OTLP export requests by result (bad = 400/415, too_large = 413, failed = store error).",
            vec![
                ("result=\"ok\"", get(&c.requests_ok)),
                ("result=\"bad\"", get(&c.requests_bad)),
                ("result=\"too_large\"", get(&c.requests_too_large)),
                ("result=\"failed\"", get(&c.requests_failed)),
            ],
        ),
        (
            "ordertrace_watch_transitions_total",
            "Lifecycle transitions received, by outcome.",
            vec![
                ("outcome=\"stored\"", get(&c.transitions_stored)),
                ("outcome=\"duplicate\"", get(&c.transitions_duplicate)),
                ("outcome=\"purged_order\"", get(&c.transitions_purged)),
            ],
        ),
        (
            "ordertrace_watch_spans_ignored_total",
            "Received spans that are not lifecycle transitions.",
            vec![("", get(&c.spans_ignored))],
        ),
        (
            "ordertrace_watch_sweeps_total",
            "Periodic sweeps (gaps, retention) by result.",
            vec![
                ("result=\"ok\"", get(&c.sweeps).saturating_sub(get(&c.sweep_errors))),
                ("result=\"error\"", get(&c.sweep_errors)),
            ],
        ),
        (
            "ordertrace_watch_orders_purged_total",
            "Closed orders whose transitions retention removed.",
            vec![("", get(&c.orders_purged))],
        ),
    ];
    for (name, help, series) in counters {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter");
        for (l, v) in series {
            if l.is_empty() {
                let _ = writeln!(m, "{name} {v}");
            } else {
                let _ = writeln!(m, "{name}{{{l}}} {v}");
            }
        }
    }
    Response::bytes(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        m.into_bytes(),
    )
}

pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes an order id for a path segment.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn page(title: &str, body: &str, now_ns: u64) -> Response {
    let html = PAGE
        .replace("{{title}}", &esc(title))
        .replace("{{now}}", &esc(&format!("now {}", rfc3339(now_ns))))
        .replace("{{body}}", body);
    Response::bytes(200, "text/html; charset=utf-8", html.into_bytes())
}

fn stuck_page(st: &State) -> Response {
    let now = st.clock.now_ns();
    let mut store = st.store();
    let data = store
        .sweep(&st.lc, now)
        .and_then(|_| Ok((store.stuck(&st.lc, now)?, store.orders_per_status()?)));
    drop(store);
    let (stuck, per_status) = match data {
        Ok(d) => d,
        Err(e) => return Response::text(500, &e),
    };
    let mut b = String::from("<h1>Stuck orders</h1>\n");
    let _ = writeln!(
        b,
        "<p class=\"muted\" id=\"summary\">{} stuck · orders by status: {}</p>",
        stuck.len(),
        per_status
            .iter()
            .map(|(s, n)| format!("{} {n}", esc(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if stuck.is_empty() {
        b.push_str("<p id=\"none\">No order is stuck.</p>\n");
    }
    let mut groups: Vec<(&str, Vec<&Stuck>)> = Vec::new();
    for s in &stuck {
        match groups.iter_mut().find(|(k, _)| *k == s.status) {
            Some((_, v)) => v.push(s),
            None => groups.push((&s.status, vec![s])),
        }
    }
    for (stage, items) in groups {
        let _ = writeln!(
            b,
            "<section class=\"stage\" data-stage=\"{0}\"><h2>{0} <span class=\"badge stuck\">{1} stuck</span></h2>\n<table><tr><th>order</th><th>in stage for</th><th>SLA</th><th>reason</th><th>since</th><th>trace</th></tr>",
            esc(stage),
            items.len()
        );
        for s in items {
            let trace = trace_url(&st.lc, &st.lc.trace_ids(&s.order_id).0.to_hex())
                .map(|u| format!("<a href=\"{}\">lifecycle trace</a>", esc(&u)))
                .unwrap_or_default();
            let _ = writeln!(
                b,
                "<tr class=\"stuck-order\" data-order=\"{0}\"><td><a href=\"/orders/{1}\">{0}</a></td><td>{2}</td><td>{3}</td><td>{4}: {5}</td><td>{6}</td><td>{7}</td></tr>",
                esc(&s.order_id),
                esc(&path_segment(&s.order_id)),
                esc(&fmt_ms(s.age_ms)),
                esc(&s.sla_ms.map(fmt_ms).unwrap_or_else(|| "-".into())),
                esc(&s.reason),
                esc(&s.detail),
                esc(&rfc3339(s.since_ns)),
                trace
            );
        }
        b.push_str("</table></section>\n");
    }
    page("ordertrace · stuck orders", &b, now)
}

fn bar(ms: u64, sla: Option<u64>) -> String {
    let scale = sla.map_or(ms, |s| ms.max(s.saturating_mul(5) / 4)).max(1);
    let pct = |v: u64| (v.min(scale) as f64) * 100.0 / (scale as f64);
    let over = sla.is_some_and(|s| ms > s);
    let mut out = format!(
        "<div class=\"bar\"><div class=\"fill{}\" style=\"width:{:.1}%\"></div>",
        if over { " over" } else { "" },
        pct(ms)
    );
    if let Some(s) = sla {
        let _ = write!(
            out,
            "<div class=\"sla\" title=\"SLA {}\" style=\"left:{:.1}%\"></div>",
            esc(&fmt_ms(s)),
            pct(s)
        );
    }
    out.push_str("</div>");
    out
}

fn order_page(st: &State, id: &str) -> Response {
    let now = st.clock.now_ns();
    let store = st.store();
    let view = journey_view(&store, &st.lc, id, now);
    drop(store);
    let v: JourneyView = match view {
        Ok(Some(v)) => v,
        Ok(None) => {
            let mut r = page(
                "ordertrace · unknown order",
                &format!(
                    "<h1>No order {}</h1><p><a href=\"/\">stuck orders</a></p>",
                    esc(id)
                ),
                now,
            );
            r.status = 404;
            return r;
        }
        Err(e) => return Response::text(500, &e),
    };
    let lc = &st.lc;
    let mut b = format!(
        "<p><a href=\"/\">← stuck orders</a></p>\n<h1>Order <span id=\"order-id\">{}</span></h1>\n",
        esc(&v.order.order_id)
    );
    let state = if v.order.terminal {
        "<span class=\"badge ok\">terminal</span>".to_string()
    } else if v.stuck.is_empty() {
        "<span class=\"badge ok\">on time</span>".to_string()
    } else {
        format!(
            "<span class=\"badge stuck\" id=\"stuck\">stuck: {}</span>",
            esc(&v
                .stuck
                .iter()
                .map(|s| s.detail.clone())
                .collect::<Vec<_>>()
                .join("; "))
        )
    };
    let _ = writeln!(
        b,
        "<p>Current status <b id=\"current-status\">{}</b> since {} ({}{}) {state}</p>",
        esc(&v.order.status),
        esc(&rfc3339(v.order.since_ns)),
        esc(&fmt_ms(v.age_ms)),
        v.sla_ms
            .map(|s| format!(", SLA {}", esc(&fmt_ms(s))))
            .unwrap_or_default()
    );
    let lt = match trace_url(lc, &v.lifecycle_trace_id) {
        Some(u) => format!(
            "<a href=\"{}\"><code>{}</code></a>",
            esc(&u),
            esc(&v.lifecycle_trace_id)
        ),
        None => format!("<code>{}</code>", esc(&v.lifecycle_trace_id)),
    };
    let _ = writeln!(
        b,
        "<p class=\"muted\">Lifecycle trace {lt}</p>\n<h2>Journey</h2>\n<ol class=\"timeline\">"
    );
    let last = v.steps.iter().rposition(|s| !s.repeat);
    for (k, s) in v.steps.iter().enumerate() {
        let cls = if s.repeat {
            "repeat"
        } else if Some(k) == last && !v.order.terminal {
            "current"
        } else {
            ""
        };
        let _ = write!(
            b,
            "<li class=\"step {cls}\" data-status=\"{0}\"><b>{0}</b> <span class=\"muted\">{1} · {2}</span>",
            esc(&s.t.status),
            esc(&rfc3339(s.t.at_ns)),
            esc(&s.t.service)
        );
        if s.repeat {
            b.push_str(" <span class=\"badge\">repeat</span>");
        }
        if let (Some(p), Some(ms)) = (&s.previous, s.stage_ms) {
            let _ = write!(
                b,
                "<div class=\"stage-duration\">{} in {}{}{}</div>{}",
                esc(&fmt_ms(ms)),
                esc(p),
                s.stage_sla_ms
                    .map(|x| format!(" · SLA {}", esc(&fmt_ms(x))))
                    .unwrap_or_default(),
                if s.over_sla {
                    " <span class=\"badge over\">over SLA</span>"
                } else {
                    ""
                },
                bar(ms, s.stage_sla_ms)
            );
        }
        if !s.skipped.is_empty() {
            let _ = write!(
                b,
                "<div><span class=\"badge over\">skipped {}</span></div>",
                esc(&s.skipped.join(", "))
            );
        } else if s.unexpected {
            b.push_str("<div><span class=\"badge over\">unexpected transition</span></div>");
        }
        if let Some(t) = &s.t.request_trace_id {
            let link = match s
                .t
                .request_trace_id
                .as_deref()
                .and_then(|t| trace_url(lc, t))
            {
                Some(u) => format!(
                    "<a class=\"request-trace\" href=\"{}\">request trace <code>{}</code></a>",
                    esc(&u),
                    esc(t)
                ),
                None => format!("request trace <code>{}</code>", esc(t)),
            };
            let _ = write!(b, "<div>{link}</div>");
        }
        b.push_str("</li>\n");
    }
    if !v.order.terminal {
        let _ = writeln!(
            b,
            "<li class=\"step current-stage\"><i>in {} for {}</i>{}</li>",
            esc(&v.order.status),
            esc(&fmt_ms(v.age_ms)),
            bar(v.age_ms, v.sla_ms)
        );
    }
    b.push_str("</ol>\n");
    if !v.gaps.is_empty() {
        b.push_str("<h2>Gaps</h2>\n<table><tr><th>kind</th><th>status</th><th>detail</th><th>detected</th><th>state</th></tr>\n");
        for g in &v.gaps {
            let _ = writeln!(
                b,
                "<tr class=\"gap\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&g.kind),
                esc(&g.status),
                esc(&g.detail),
                esc(&rfc3339(g.detected_ns)),
                if g.resolved_ns.is_some() {
                    "resolved"
                } else {
                    "open"
                }
            );
        }
        b.push_str("</table>\n");
    }
    page(&format!("ordertrace · order {}", v.order.order_id), &b, now)
}
