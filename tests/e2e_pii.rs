//! PII never leaves the proxy (issue 4, item 6): a corpus of realistic order records full of personal
//! data (tests/pii_corpus) driven through the real Envoy edges (the shipped `envoy/*-edge.yaml`, ports
//! substituted, routes extended with attributes that pull PII out of bodies, headers and queries), then
//! a scan of what the filter exported: the raw OTLP request bodies as received and every string of the
//! decoded requests. No PII form may appear; every order id and status must.
// Helpers too: clippy.toml's allow-*-in-tests exempts only #[test] fns and #[cfg(test)] items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod pii_corpus;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use pii_corpus::{pct, Pii, Record};
use serde_json::{json, Value};
use support::*;

const CORPUS_SEED: u64 = 0x0bad_c0de_5eed_2025;
const CORPUS_SIZE: usize = 220;
/// The same key on every edge (64 hex characters, as `openssl rand -hex 32` prints).
const HMAC_KEY: &str = "5f0c1e9a7b3d4c2e8f6a1b0c9d8e7f60a1b2c3d4e5f60718293a4b5c6d7e8f90";
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Edges with a raw-bytes OTLP receiver

struct PiiEdge {
    envoy: Envoy,
    otlp: RawOtlpReceiver,
    upstream: Upstream,
    port: u16,
}

fn start_edge(config: &str, upstream: Upstream, edit: impl FnOnce(&mut Value)) -> PiiEdge {
    let otlp = RawOtlpReceiver::start();
    let ports = EdgePorts {
        listener: free_port(),
        upstream: upstream.port(),
        collector: otlp.port(),
        admin: free_port(),
    };
    let cfg = EdgeConfig::load(config)
        .ports(&ports)
        .flush_interval_ms(100)
        .with_plugin(edit);
    let envoy = Envoy::start(cfg.yaml());
    PiiEdge {
        envoy,
        otlp,
        upstream,
        port: ports.listener,
    }
}

impl PiiEdge {
    /// Every span of every accepted export request, with the request's resource/scope left to the scan.
    fn spans(&self) -> Vec<Span> {
        self.otlp
            .decoded()
            .into_iter()
            .flat_map(|r| r.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect()
    }

    fn server_spans(&self) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.kind == SpanKind::Server as i32)
            .collect()
    }

    /// Waits until `n` SERVER spans were exported.
    fn wait_server_spans(&self, n: usize) -> Vec<Span> {
        poll(WAIT, || {
            let s = self.server_spans();
            (s.len() >= n).then_some(s)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} SERVER spans, got {}; stats {:?}\n{}",
                self.server_spans().len(),
                self.envoy.ordertrace_stats(),
                self.envoy.log_tail(30)
            )
        })
    }
}

fn route_mut<'a>(cfg: &'a mut Value, name: &str) -> &'a mut Value {
    cfg["routes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn add_attrs(cfg: &mut Value, route: &str, attrs: Value) {
    let r = route_mut(cfg, route);
    if r.get("attributes").is_none() {
        r["attributes"] = json!({});
    }
    for (k, v) in attrs.as_object().unwrap() {
        r["attributes"][k] = v.clone();
    }
}

/// The string value of attribute `key`.
fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

fn describe(s: &Span) -> String {
    let attrs: Vec<String> = s
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
    format!("{} [{}]", s.name, attrs.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Every string of an export request

fn any_strings(v: &AnyValue, out: &mut Vec<(String, String)>, path: &str) {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => out.push((path.to_string(), s.clone())),
        Some(any_value::Value::BytesValue(b)) => {
            out.push((path.to_string(), String::from_utf8_lossy(b).into_owned()))
        }
        Some(any_value::Value::ArrayValue(a)) => {
            for (i, x) in a.values.iter().enumerate() {
                any_strings(x, out, &format!("{path}[{i}]"));
            }
        }
        Some(any_value::Value::KvlistValue(kv)) => kv_strings(&kv.values, out, path),
        _ => {}
    }
}

fn kv_strings(kvs: &[KeyValue], out: &mut Vec<(String, String)>, path: &str) {
    for kv in kvs {
        let p = format!("{path}.{}", kv.key);
        out.push((format!("{p} (key)"), kv.key.clone()));
        if let Some(v) = &kv.value {
            any_strings(v, out, &p);
        }
    }
}

/// (where, string) for every string in the request: resource, scope, span names, attributes,
/// events, links, trace states, status messages.
fn all_strings(req: &ExportTraceServiceRequest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        if let Some(r) = &rs.resource {
            kv_strings(&r.attributes, &mut out, "resource");
        }
        out.push(("resource.schema_url".into(), rs.schema_url.clone()));
        for ss in &rs.scope_spans {
            if let Some(sc) = &ss.scope {
                out.push(("scope.name".into(), sc.name.clone()));
                out.push(("scope.version".into(), sc.version.clone()));
                kv_strings(&sc.attributes, &mut out, "scope");
            }
            out.push(("scope.schema_url".into(), ss.schema_url.clone()));
            for sp in &ss.spans {
                let at = format!("span {:?}", sp.name);
                out.push((format!("{at} name"), sp.name.clone()));
                out.push((format!("{at} trace_state"), sp.trace_state.clone()));
                kv_strings(&sp.attributes, &mut out, &at);
                for e in &sp.events {
                    out.push((format!("{at} event name"), e.name.clone()));
                    kv_strings(&e.attributes, &mut out, &format!("{at} event {}", e.name));
                }
                for l in &sp.links {
                    out.push((format!("{at} link trace_state"), l.trace_state.clone()));
                    kv_strings(&l.attributes, &mut out, &format!("{at} link"));
                }
                if let Some(st) = &sp.status {
                    out.push((format!("{at} status.message"), st.message.clone()));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Needle search: every needle against a haystack, indexed by the needle's first four bytes

struct Needles {
    by_prefix: HashMap<[u8; 4], Vec<usize>>,
    /// (form, label)
    items: Vec<(Vec<u8>, String)>,
}

impl Needles {
    fn new(items: Vec<(String, String)>) -> Needles {
        let mut by_prefix: HashMap<[u8; 4], Vec<usize>> = HashMap::new();
        let items: Vec<(Vec<u8>, String)> = items
            .into_iter()
            .map(|(f, l)| (f.into_bytes(), l))
            .collect();
        for (i, (f, l)) in items.iter().enumerate() {
            assert!(f.len() >= 5, "needle too short to scan for: {l}");
            by_prefix
                .entry([f[0], f[1], f[2], f[3]])
                .or_default()
                .push(i);
        }
        Needles { by_prefix, items }
    }

    /// Indices of the needles found in `hay`.
    fn find(&self, hay: &[u8]) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        for (at, w) in hay.windows(4).enumerate() {
            if let Some(cands) = self.by_prefix.get(&[w[0], w[1], w[2], w[3]]) {
                for &i in cands {
                    if hay[at..].starts_with(&self.items[i].0) {
                        found.insert(i);
                    }
                }
            }
        }
        found
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Every leak in what `edge` exported: (needle label, where).
fn leaks(name: &str, edge: &PiiEdge, needles: &Needles) -> Vec<String> {
    let mut out = Vec::new();
    for (i, body) in edge.otlp.raw_bodies().iter().enumerate() {
        for n in needles.find(body) {
            out.push(format!(
                "{name}: raw export request #{i} contains {}",
                needles.items[n].1
            ));
        }
    }
    for req in edge.otlp.decoded() {
        for (place, s) in all_strings(&req) {
            for n in needles.find(s.as_bytes()) {
                out.push(format!(
                    "{name}: decoded {place} = {s:?} contains {}",
                    needles.items[n].1
                ));
            }
        }
    }
    out
}

fn is_pseudonym(s: &str) -> bool {
    s.len() == 18
        && s.starts_with("h:")
        && s[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------------------------
// The configs: the shipped routes, plus attributes that pull PII out of every place a rule can read

fn shop_config(c: &mut Value) {
    c["redaction"] = json!({"hmac_key": HMAC_KEY});
    // Attribute names whose last word is denied (`email`, `phone`, `name`, `address`, `card`, `inn`):
    // the key rules must drop them. Neutral names (`contact`, `callback`, `instrument`, `tax_ref`, ...):
    // only the value detectors stand between the PII and the collector.
    add_attrs(
        c,
        "shop.create",
        json!({
            "customer.email": {"request_body": "/customer/email"},
            "customer.contact": {"request_body": "/customer/email"},
            "customer.phone": {"request_body": "/customer/phone"},
            "customer.callback": {"request_body": "/customer/phone"},
            "customer.name": {"request_body": "/customer/name"},
            "shipping.address": {"request_body": "/shipping/address"},
            "customer.inn": {"request_body": "/customer/inn"},
            "customer.tax_ref": {"request_body": "/customer/inn"},
            "customer.pension_ref": {"request_body": "/customer/snils"},
            "payment.card": {"request_body": "/payment/card"},
            "payment.instrument": {"request_body": "/payment/card"},
            "payment.account_ref": {"request_body": "/payment/iban"},
            "order.note": {"request_body": "/comment"},
            "request.customer_email": {"header": "x-customer-email"},
            "request.contact_hint": {"header": "x-customer-email"},
            "request.callback": {"header": "x-customer-phone"},
            "request.customer_name": {"header": "x-customer-name"},
            "request.auth": {"header": "authorization"},
            "request.session": {"header": "x-api-session"},
            "lookup.email": {"query": "email"},
            "lookup.hint": {"query": "email"},
            "lookup.ref": {"query": "ref"},
            "lookup.reach": {"query": "phone"},
            "resp.contact": {"response_body": "/customer/email"},
            "resp.phone": {"response_body": "/customer/phone"}
        }),
    );
    add_attrs(
        c,
        "shop.submit",
        json!({"request.auth": {"header": "authorization"}, "request.session": {"header": "x-api-session"}}),
    );
    add_attrs(
        c,
        "shop.get",
        json!({"lookup.contact": {"query": "contact"}}),
    );
}

fn mes_config(c: &mut Value) {
    c["redaction"] = json!({"hmac_key": HMAC_KEY});
    add_attrs(
        c,
        "mes.status",
        json!({
            "customer.callback": {"request_body": "/customer/phone"},
            "inspector.contact": {"request_body": "/inspector/email"},
            "qc.note": {"request_body": "/comment"},
            "resp.customer_contact": {"response_body": "/customer/email"}
        }),
    );
    add_attrs(
        c,
        "mes.list",
        json!({"mes.filter.customer": {"query": "customer"}}),
    );
}

fn crm_config(c: &mut Value) {
    c["redaction"] = json!({"hmac_key": HMAC_KEY, "pseudonymise_keys": ["manager.id"]});
    add_attrs(
        c,
        "crm.approve",
        json!({
            "operator.id": {"request_body": "/operatorId"},
            "manager.id": {"request_body": "/managerId"},
            "customer.contact": {"request_body": "/customer/email"},
            "customer.name": {"request_body": "/customer/name"},
            "approval.note": {"request_body": "/comment"}
        }),
    );
    add_attrs(
        c,
        "crm.close",
        json!({"operator.id": {"request_body": "/operatorId"}, "close.reason": {"request_body": "/reason"}}),
    );
}

// ---------------------------------------------------------------------------------------------
// Upstreams: they answer like the reference API (order ids `ORD-1001`…) and echo customer data back

fn shop_upstream() -> Upstream {
    let next = Arc::new(AtomicUsize::new(0));
    Upstream::start(move |r| {
        if r.method == "POST" && r.path == "/api/orders" {
            let body: Value = serde_json::from_slice(&r.body_prefix).unwrap_or(json!({}));
            let n = next.fetch_add(1, Ordering::SeqCst);
            Reply::json(
                201,
                &json!({"id": format!("ORD-{}", 1001 + n), "status": "INITIATED",
                        "customer": {"email": body["customer"]["email"], "phone": body["customer"]["phone"]}}),
            )
        } else {
            Reply::json(200, &json!({"ok": true}))
        }
    })
}

fn echo_upstream() -> Upstream {
    Upstream::start(|r| {
        let body: Value = serde_json::from_slice(&r.body_prefix).unwrap_or(json!({}));
        Reply::json(
            200,
            &json!({"ok": true, "status": body["status"], "customer": body["customer"]}),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Driving the corpus

/// (edge, order id, status or None): what must be found in the spans afterwards.
type Expect = (&'static str, String, Option<&'static str>);

const MES_STATUSES: &[&str] = &[
    "PRICE_CALCULATED",
    "MANUFACTURING_STARTED",
    "MANUFACTURING_COMPLETED",
    "PACKAGING",
    "SHIPPED",
];

fn ok(r: &HttpResponse, what: &str) {
    assert!(
        (200..300).contains(&r.status),
        "{what}: {} {}",
        r.status,
        r.text()
    );
}

/// Shop: create (PII in body, query, headers), submit, a GET by 12-digit order number, and GETs on
/// paths that carry PII in segments that are not template variables. Returns the order ids.
fn drive_shop(port: u16, records: &[Record], exp: &mut Vec<Expect>) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut requests = 0;
    for r in records {
        let q = format!(
            "/api/orders?email={}&phone={}&name={}&ref={}&address={}&utm_source=newsletter",
            pct(&r.email),
            pct(&r.phone),
            pct(&r.full_name),
            pct(&r.card),
            pct(&r.address)
        );
        let auth = if r.n % 2 == 0 {
            format!("Bearer {}", r.bearer)
        } else {
            format!("Bearer {}", r.jwt)
        };
        let body = json!({
            "customer": {"name": r.full_name, "email": r.email, "phone": r.phone,
                         "inn": r.inn, "snils": r.snils},
            "shipping": {"address": r.address},
            "payment": {"card": r.card, "iban": r.iban},
            "comment": r.comment,
            "partnerId": format!("partner-{}", r.n % 7),
            "items": [{"sku": format!("SKU-{}", 100 + r.n % 13), "qty": 1 + r.n % 3}]
        });
        let resp = http_json(
            port,
            "POST",
            &q,
            &[
                ("x-customer-email", &r.email),
                ("x-customer-phone", &r.phone),
                ("x-customer-name", &r.latin_name),
                ("authorization", &auth),
                ("x-api-session", &r.jwt),
            ],
            &body,
        );
        ok(&resp, "shop create");
        let id = resp.json()["id"].as_str().unwrap().to_string();
        exp.push(("shop", id.clone(), Some("INITIATED")));

        let resp = http(
            port,
            "POST",
            &format!("/api/orders/{id}/submit"),
            &[
                ("authorization", &format!("Bearer {}", r.jwt)),
                ("x-api-session", &r.jwt),
            ],
            b"",
        );
        ok(&resp, "shop submit");
        exp.push(("shop", id.clone(), Some("SUBMITTED")));

        let resp = http(
            port,
            "GET",
            &format!("/api/orders/{}?contact={}", r.order_number, pct(&r.email)),
            &[],
            b"",
        );
        ok(&resp, "shop get by number");
        exp.push(("shop", r.order_number.clone(), None));

        // PII in path segments that no template claims (unmatched routes).
        let paths = [
            format!("/api/customers/{}/orders", pct(&r.email)),
            format!("/api/customers/{}/history", pct(&r.phone)),
            format!("/api/payments/{}/verify", pct(&r.card)),
            format!("/api/accounts/{}/statement", r.iban.replace(' ', "")),
            format!("/api/tax/{}/check", r.inn),
            format!("/api/pension/{}", pct(&r.snils)),
        ];
        for k in [r.n % 6, (r.n + 3) % 6] {
            let resp = http(port, "GET", &paths[k], &[], b"");
            ok(&resp, &paths[k]);
        }
        requests += 5;
        ids.push(id);
    }
    (ids, requests)
}

fn drive_mes(port: u16, records: &[Record], ids: &[String], exp: &mut Vec<Expect>) -> usize {
    let mut requests = 0;
    for (r, ord) in records.iter().zip(ids) {
        let id = if r.n % 2 == 0 {
            ord.clone()
        } else {
            r.order_number.clone()
        };
        if r.n % 4 == 0 {
            let resp = http(port, "POST", &format!("/api/orders/{id}/price"), &[], b"");
            ok(&resp, "mes price");
            exp.push(("mes", id.clone(), Some("PRICE_CALCULATION_STARTED")));
            requests += 1;
        }
        let status = MES_STATUSES[r.n % MES_STATUSES.len()];
        let body = json!({"status": status, "operatorId": r.operator_id,
                          "customer": {"phone": r.phone, "email": r.email},
                          "inspector": {"email": r.email}, "comment": r.comment});
        let resp = http_json(port, "PUT", &format!("/api/orders/{id}/status"), &[], &body);
        ok(&resp, "mes status");
        exp.push(("mes", id.clone(), Some(status)));
        requests += 1;
        if r.n % 5 == 0 {
            let resp = http(
                port,
                "GET",
                &format!(
                    "/api/orders?status=PACKAGING&page=2&customer={}&phone={}",
                    pct(&r.email),
                    pct(&r.phone)
                ),
                &[],
                b"",
            );
            ok(&resp, "mes list");
            requests += 1;
        }
    }
    requests
}

fn drive_crm(port: u16, records: &[Record], ids: &[String], exp: &mut Vec<Expect>) -> usize {
    let mut requests = 0;
    for (r, id) in records.iter().zip(ids) {
        let body = json!({"operatorId": r.operator_id, "managerId": r.manager_id,
                          "customer": {"email": r.email, "name": r.full_name},
                          "comment": r.comment});
        let resp = http_json(
            port,
            "POST",
            &format!("/api/orders/{id}/approve"),
            &[],
            &body,
        );
        ok(&resp, "crm approve");
        exp.push(("crm", id.clone(), Some("MANUFACTURING_APPROVED")));
        requests += 1;
        if r.n % 3 == 0 {
            let body = json!({"operatorId": r.operator_id,
                              "reason": format!("Клиент отказался, звонить на {}", r.phone)});
            let resp = http_json(port, "POST", &format!("/api/orders/{id}/close"), &[], &body);
            ok(&resp, "crm close");
            exp.push(("crm", id.clone(), Some("CLOSED")));
            requests += 1;
        }
    }
    requests
}

// ---------------------------------------------------------------------------------------------
// The corpus test

#[test]
fn pii_corpus_through_three_edges_leaves_no_pii_and_keeps_every_order_id_and_status() {
    let records = pii_corpus::generate(CORPUS_SEED, CORPUS_SIZE);
    assert!(records.len() >= 200);
    // The generator's check digits are real.
    for r in &records {
        assert!(pii_corpus::luhn_valid(&r.card), "{}", r.card);
        assert!(pii_corpus::iban_valid(&r.iban), "{}", r.iban);
        assert!(pii_corpus::inn_valid(&r.inn), "{}", r.inn);
        assert_eq!(r.order_number.len(), 12);
        if r.n % 2 == 0 {
            assert!(pii_corpus::inn_valid(&r.order_number), "{}", r.order_number);
        }
    }

    // Three edges, started one after the other on this thread. Not from helper threads: Envoy sets
    // PR_SET_PDEATHSIG(SIGTERM), and the kernel sends it when the *thread* that forked Envoy exits, so
    // an Envoy started from a short-lived thread shuts down right after it became ready.
    let shop = start_edge("shop", shop_upstream(), shop_config);
    let mes = start_edge("mes", echo_upstream(), mes_config);
    let crm = start_edge("crm", echo_upstream(), crm_config);

    let mut expect = Vec::new();
    let (ids, shop_requests) = drive_shop(shop.port, &records, &mut expect);
    let (mut mes_exp, mut crm_exp) = (Vec::new(), Vec::new());
    let (mes_requests, crm_requests) = std::thread::scope(|s| {
        let m = s.spawn(|| drive_mes(mes.port, &records, &ids, &mut mes_exp));
        let c = s.spawn(|| drive_crm(crm.port, &records, &ids, &mut crm_exp));
        (m.join().unwrap(), c.join().unwrap())
    });
    expect.extend(mes_exp);
    expect.extend(crm_exp);

    let shop_spans = shop.wait_server_spans(shop_requests);
    let mes_spans = mes.wait_server_spans(mes_requests);
    let crm_spans = crm.wait_server_spans(crm_requests);
    // Let a last flush with lifecycle spans land too.
    std::thread::sleep(Duration::from_millis(300));

    // ---- every order id and status is still there
    let by_edge = |e: &str| match e {
        "shop" => &shop_spans,
        "mes" => &mes_spans,
        _ => &crm_spans,
    };
    let mut missing = Vec::new();
    for (edge, id, status) in &expect {
        let spans = by_edge(edge);
        let found = spans.iter().any(|s| {
            attr(&s.attributes, "order.id").as_deref() == Some(id.as_str())
                && match status {
                    None => {
                        attr(&s.attributes, "url.path").as_deref()
                            == Some(format!("/api/orders/{id}").as_str())
                    }
                    Some(st) => {
                        attr(&s.attributes, "order.status").as_deref() == Some(*st)
                            && s.events.iter().any(|e| e.name == "order.status_changed")
                    }
                }
        });
        if !found {
            missing.push(format!("{edge}: {id} {status:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} order ids/statuses lost: {:#?}",
        missing.len(),
        expect.len(),
        &missing[..missing.len().min(20)]
    );

    // ---- the redactor really acted on the extracted attributes (they were extracted, then masked)
    let creates: Vec<&Span> = shop_spans
        .iter()
        .filter(|s| s.name == "shop.create")
        .collect();
    assert_eq!(creates.len(), records.len());
    let rec_by_order: HashMap<&str, &Record> = records
        .iter()
        .zip(&ids)
        .map(|(r, id)| (id.as_str(), r))
        .collect();
    for s in &creates {
        let order = attr(&s.attributes, "order.id").unwrap();
        let r = rec_by_order[order.as_str()];
        // docs/redaction.md: a bare run of 11 digits starting `79`/`89` is a Russian mobile number, and
        // the phone detector runs before the bare-SNILS one: such a SNILS is masked, as `[phone]`.
        let snils_mask =
            if r.snils.len() == 11 && (r.snils.starts_with("79") || r.snils.starts_with("89")) {
                "[phone]"
            } else {
                "[snils]"
            };
        for (key, mask) in [
            ("customer.contact", "[email]"),
            ("customer.callback", "[phone]"),
            ("customer.tax_ref", "[inn]"),
            ("customer.pension_ref", snils_mask),
            ("payment.instrument", "[card]"),
            ("payment.account_ref", "[iban]"),
            ("request.contact_hint", "[email]"),
            ("request.callback", "[phone]"),
            ("request.session", "[jwt]"),
            ("lookup.hint", "[email]"),
            ("lookup.ref", "[card]"),
            ("lookup.reach", "[phone]"),
            ("resp.contact", "[email]"),
        ] {
            let v = attr(&s.attributes, key)
                .unwrap_or_else(|| panic!("{key} was not extracted: {}", describe(s)));
            assert!(
                v.contains(mask),
                "{key} = {v:?}, expected {mask}: {}",
                describe(s)
            );
        }
        for denied in [
            "customer.email",
            "customer.phone",
            "customer.name",
            "shipping.address",
            "customer.inn",
            "payment.card",
            "request.customer_email",
            "request.customer_name",
            "lookup.email",
            "resp.phone",
        ] {
            assert!(
                attr(&s.attributes, denied).is_none(),
                "{denied} must be dropped: {}",
                describe(s)
            );
        }
    }

    // ---- pseudonymised operator and manager ids: h:<16 hex>, stable across requests and edges
    let rec_by_id: HashMap<&str, &Record> = records
        .iter()
        .zip(&ids)
        .flat_map(|(r, id)| [(id.as_str(), r), (r.order_number.as_str(), r)])
        .collect();
    // raw id -> edge -> pseudonyms
    let mut seen: BTreeMap<String, BTreeMap<&str, BTreeSet<String>>> = BTreeMap::new();
    let mut pseudonyms_checked = 0;
    for (edge, spans, key) in [
        ("mes", &mes_spans, "operator.id"),
        ("crm", &crm_spans, "operator.id"),
        ("crm", &crm_spans, "manager.id"),
    ] {
        for s in spans.iter() {
            let (Some(id), Some(p)) = (attr(&s.attributes, "order.id"), attr(&s.attributes, key))
            else {
                continue;
            };
            let r = rec_by_id[id.as_str()];
            let raw = if key == "manager.id" {
                &r.manager_id
            } else {
                &r.operator_id
            };
            assert!(is_pseudonym(&p), "{edge} {key} = {p:?} is not h:+16 hex");
            seen.entry(raw.clone())
                .or_default()
                .entry(edge)
                .or_default()
                .insert(p);
            pseudonyms_checked += 1;
        }
    }
    let mut all_pseudonyms = BTreeMap::new();
    let mut on_both = 0;
    for (raw, edges) in &seen {
        let union: BTreeSet<&String> = edges.values().flatten().collect();
        assert_eq!(union.len(), 1, "{raw} has several pseudonyms: {edges:?}");
        let p = union.into_iter().next().unwrap().clone();
        assert_eq!(
            p,
            ordertrace::redact::hmac_pseudonym(HMAC_KEY.as_bytes(), raw),
            "{raw}: the pseudonym is HMAC-SHA256 under the configured key"
        );
        if let Some(other) = all_pseudonyms.insert(p.clone(), raw.clone()) {
            panic!("{raw} and {other} share the pseudonym {p}");
        }
        if edges.len() == 2 {
            on_both += 1;
        }
    }
    assert_eq!(
        seen.len(),
        pii_corpus::OPERATORS.len() + pii_corpus::MANAGERS.len(),
        "every operator and manager seen: {seen:?}"
    );
    assert_eq!(
        on_both,
        pii_corpus::OPERATORS.len(),
        "every operator seen on MES and CRM with the same pseudonym"
    );

    // ---- no PII, in the raw bytes or in any decoded string
    let mut items = Vec::new();
    let mut values = 0;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        for Pii { kind, value, forms } in r.pii() {
            values += 1;
            *kinds.entry(kind).or_default() += 1;
            for f in forms {
                items.push((
                    f.clone(),
                    format!("record {} {kind} {value:?} as {f:?}", r.n),
                ));
            }
        }
    }
    for raw in pii_corpus::OPERATORS.iter().chain(pii_corpus::MANAGERS) {
        values += 1;
        *kinds.entry("operator/manager id").or_default() += 1;
        items.push((raw.to_string(), format!("raw operator/manager id {raw:?}")));
        items.push((pct(raw), format!("raw operator/manager id {raw:?} encoded")));
    }
    items.sort();
    items.dedup_by(|a, b| a.0 == b.0);
    // A needle inside something that must be kept would be a corpus bug, not a leak.
    let kept: Vec<&String> = ids
        .iter()
        .chain(records.iter().map(|r| &r.order_number))
        .collect();
    for (f, l) in &items {
        assert!(
            !kept.iter().any(|k| k.contains(f.as_str())),
            "corpus bug: {l} is inside an order id"
        );
    }
    let needles = Needles::new(items);
    let mut found = Vec::new();
    found.extend(leaks("shop", &shop, &needles));
    found.extend(leaks("mes", &mes, &needles));
    found.extend(leaks("crm", &crm, &needles));
    let bytes: usize = [&shop, &mes, &crm]
        .iter()
        .flat_map(|e| e.otlp.raw_bodies())
        .map(|b| b.len())
        .sum();
    let spans = shop.spans().len() + mes.spans().len() + crm.spans().len();
    eprintln!(
        "PII corpus: {} records, {values} PII values ({kinds:?}), {} distinct needle forms; \
         requests shop {shop_requests} mes {mes_requests} crm {crm_requests}; {spans} spans, \
         {bytes} OTLP bytes scanned; {} order ids/statuses checked; {pseudonyms_checked} pseudonyms checked",
        records.len(),
        needles.len(),
        expect.len()
    );
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "{} PII leaks, first ones: {:#?}",
        found.len(),
        &found[..found.len().min(40)]
    );
}

// ---------------------------------------------------------------------------------------------
// Public edge: inbound baggage

#[test]
fn public_edge_filters_inbound_baggage_and_spans_never_carry_it() {
    let edge = start_edge("shop", shop_upstream(), |c| {
        c["public_edge"] = json!(true);
        c["redaction"] = json!({"hmac_key": HMAC_KEY});
    });
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "/api/orders/ORD-1/submit",
            "order.id=ORD-1,email=a@b.c",
            Some("order.id=ORD-1"),
        ),
        (
            "/api/orders/ORD-2/submit",
            "email=ivan.petrov@mail.ru, order.id=ORD-2;source=web, phone=%2B79161234567",
            Some("order.id=ORD-2"),
        ),
        (
            "/api/orders/ORD-3/submit",
            "user.id=cust-881,card=4111111111111111,name=Ivan%20Petrov",
            None,
        ),
        (
            "/api/orders/ORD-4/submit",
            "order.id=olga.smirnova@yandex.ru",
            None,
        ),
    ];
    for (path, baggage, _) in cases {
        let r = http(edge.port, "POST", path, &[("baggage", baggage)], b"");
        ok(&r, path);
    }
    for (path, baggage, want) in cases {
        let up = edge.upstream.last_to(path);
        assert_eq!(
            up.header("baggage"),
            *want,
            "baggage {baggage:?} at a public edge: upstream got {:?}",
            up.headers
        );
    }
    let spans = edge.wait_server_spans(cases.len());
    for (i, id) in ["ORD-1", "ORD-2", "ORD-3", "ORD-4"].iter().enumerate() {
        assert!(
            spans
                .iter()
                .any(|s| attr(&s.attributes, "order.id").as_deref() == Some(id)
                    && attr(&s.attributes, "order.status").as_deref() == Some("SUBMITTED")),
            "case {i}: {id} SUBMITTED must be exported"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let needles = Needles::new(
        [
            "email=a@b.c",
            "a@b.c",
            "ivan.petrov@mail.ru",
            "ivan.petrov%40mail.ru",
            "79161234567",
            "4111111111111111",
            "Ivan%20Petrov",
            "olga.smirnova@yandex.ru",
            "cust-881",
        ]
        .iter()
        .map(|s| (s.to_string(), format!("baggage value {s:?}")))
        .collect(),
    );
    let found = leaks("public shop", &edge, &needles);
    assert!(found.is_empty(), "baggage leaked into spans: {found:#?}");
}
