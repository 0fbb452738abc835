//! `ordertrace refapi`: the reference API of DESIGN.md (Shop, CRM or MES) with in-memory orders,
//! the upstream behind the edges in the demo and the tests.
//!
//! - every request body is streamed (64 KiB chunks), counted and hashed, never held whole;
//! - `x-demo-fail: 500` (any 400..=599) answers that status with a JSON error, so a step can fail;
//! - `x-demo-delay-ms: N` waits N ms (at most 30 s) before answering;
//! - `--record FILE` appends one JSON line per request: method, path, headers, body length and
//!   sha256, status (what reached the upstream, for tests and for the curious);
//! - unknown order ids are accepted: the services are independent in the demo.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ordertrace::order::lifecycle::REFERENCE_STATUSES;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::httpd::{self, Body, BodyError, Limits, Request, Response, Server};

/// JSON bodies are parsed from at most this many leading bytes.
const JSON_PREFIX: usize = 1024 * 1024;
/// Uploads may be huge: they are streamed, so the limit only guards against runaway clients.
const MAX_BODY: u64 = 16 * 1024 * 1024 * 1024;
const PAGE_SIZE: usize = 20;
const MAX_DELAY_MS: u64 = 30_000;

/// Lifecycle statuses accepted by MES `PUT /api/orders/{id}/status`: the reference lifecycle without
/// CANCELLED (the reference API has no cancellation; a request setting it gets 422).
fn settable_status(status: &str) -> bool {
    status != "CANCELLED" && REFERENCE_STATUSES.contains(&status)
}

/// Request fields never echoed back (customer PII).
const PII_KEY_PARTS: &[&str] = &["email", "phone", "name", "address", "customer"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Shop,
    Crm,
    Mes,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Shop => "shop",
            Service::Crm => "crm",
            Service::Mes => "mes",
        }
    }

    fn default_listen(self) -> &'static str {
        match self {
            Service::Shop => "127.0.0.1:18000",
            Service::Crm => "127.0.0.1:18001",
            Service::Mes => "127.0.0.1:18002",
        }
    }
}

#[derive(Debug, Clone)]
struct Order {
    status: String,
    updated_ms: u64,
    /// Non-PII fields given at creation.
    fields: Map<String, Value>,
}

/// One reference API instance.
pub struct RefApi {
    service: Service,
    orders: Mutex<HashMap<String, Order>>,
    next_id: AtomicU64,
    record: Option<Mutex<File>>,
    quiet: bool,
}

/// The body as the handlers see it: length, hash and the leading bytes for JSON.
struct Consumed {
    len: u64,
    sha256: String,
    prefix: Vec<u8>,
}

impl Consumed {
    /// The body as a JSON object; an empty body is `{}`.
    fn json_object(&self) -> Result<Map<String, Value>, Response> {
        if self.prefix.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        if self.len > self.prefix.len() as u64 {
            return Err(error(
                413,
                &format!("JSON body larger than {JSON_PREFIX} bytes"),
            ));
        }
        match serde_json::from_slice::<Value>(&self.prefix) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(error(400, "the body must be a JSON object")),
            Err(e) => Err(error(400, &format!("the body is not JSON: {e}"))),
        }
    }
}

fn consume(body: &mut Body<'_>) -> Result<Consumed, BodyError> {
    let mut hasher = Sha256::new();
    let mut prefix = Vec::new();
    let len = body.for_each_chunk(|chunk| {
        hasher.update(chunk);
        let room = JSON_PREFIX.saturating_sub(prefix.len());
        prefix.extend(chunk.iter().take(room));
    })?;
    Ok(Consumed {
        len,
        sha256: httpd::hex(&hasher.finalize()),
        prefix,
    })
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({"error": message, "status": status}))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn is_pii(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    PII_KEY_PARTS.iter().any(|p| k.contains(p))
}

impl RefApi {
    pub fn new(service: Service, record: Option<File>, quiet: bool) -> RefApi {
        RefApi {
            service,
            orders: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1001),
            record: record.map(Mutex::new),
            quiet,
        }
    }

    /// Serves one request (the `httpd` handler).
    pub fn handle(&self, req: &Request, body: &mut Body<'_>) -> Response {
        let consumed = consume(body);
        let resp = match &consumed {
            Ok(c) => self.respond(req, c),
            Err(e) => error(e.status(), &e.to_string()),
        };
        self.log(req, consumed.as_ref().ok(), resp.status);
        resp
    }

    fn respond(&self, req: &Request, body: &Consumed) -> Response {
        if let Some(ms) = req
            .header("x-demo-delay-ms")
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(Duration::from_millis(ms.min(MAX_DELAY_MS)));
        }
        if let Some(v) = req.header("x-demo-fail") {
            return match v.trim().parse::<u16>() {
                Ok(code @ 400..=599) => Response::json(
                    code,
                    &json!({"error": "demo failure requested with x-demo-fail", "status": code,
                            "service": self.service.name(), "path": req.path}),
                ),
                _ => error(
                    400,
                    &format!("x-demo-fail: {v:?} is not a status code in 400..=599"),
                ),
            };
        }
        let segments = req.segments();
        let method = req.method.as_str();
        match (self.service, method, segments.as_slice()) {
            (_, "GET", ["healthz"]) => {
                Response::json(200, &json!({"ok": true, "service": self.service.name()}))
            }
            (_, "GET", ["api", "orders", id]) => self.show(id),
            (Service::Shop, "POST", ["api", "orders"]) => self.create(body),
            (Service::Shop, "PUT", ["api", "orders", id, "model"]) => {
                let mut r = self.transition(id, "FILE_UPLOADED", Map::new());
                extend(&mut r, json!({"bytes": body.len, "sha256": body.sha256}));
                Response::json(200, &r)
            }
            (Service::Shop, "POST", ["api", "orders", id, "submit"]) => {
                Response::json(200, &self.transition(id, "SUBMITTED", Map::new()))
            }
            (Service::Crm, "POST", ["api", "orders", id, "approve"]) => match body.json_object() {
                Ok(b) => {
                    let mut extra = Map::new();
                    if let Some(m) = b.get("managerId") {
                        extra.insert("managerId".into(), m.clone());
                    }
                    Response::json(200, &self.transition(id, "MANUFACTURING_APPROVED", extra))
                }
                Err(r) => r,
            },
            (Service::Crm, "POST", ["api", "orders", id, "close"]) => {
                Response::json(200, &self.transition(id, "CLOSED", Map::new()))
            }
            (Service::Mes, "GET", ["api", "orders"]) => self.list(req),
            (Service::Mes, "POST", ["api", "orders", id, "price"]) => Response::json(
                202,
                &self.transition(id, "PRICE_CALCULATION_STARTED", Map::new()),
            ),
            (Service::Mes, "PUT" | "PATCH", ["api", "orders", id, "status"]) => {
                self.set_status(id, body)
            }
            _ if self.known_path(&segments) => {
                error(405, &format!("{method} is not allowed on {}", req.path))
            }
            _ => error(
                404,
                &format!(
                    "no route for {method} {} on {}",
                    req.path,
                    self.service.name()
                ),
            ),
        }
    }

    fn known_path(&self, segments: &[&str]) -> bool {
        matches!(
            (self.service, segments),
            (_, ["healthz"] | ["api", "orders"] | ["api", "orders", _])
                | (Service::Shop, ["api", "orders", _, "model" | "submit"])
                | (Service::Crm, ["api", "orders", _, "approve" | "close"])
                | (Service::Mes, ["api", "orders", _, "price" | "status"])
        )
    }

    fn orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Order>> {
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create(&self, body: &Consumed) -> Response {
        let fields = match body.json_object() {
            Ok(m) => m,
            Err(r) => return r,
        };
        let fields: Map<String, Value> = fields.into_iter().filter(|(k, _)| !is_pii(k)).collect();
        let id = format!("ORD-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let order = Order {
            status: "INITIATED".into(),
            updated_ms: now_ms(),
            fields,
        };
        let view = order_view(&id, &order);
        self.orders().insert(id, order);
        Response::json(201, &view)
    }

    fn show(&self, id: &str) -> Response {
        match self.orders().get(id) {
            Some(o) => Response::json(200, &order_view(id, o)),
            None => error(
                404,
                &format!("order {id} is unknown to {}", self.service.name()),
            ),
        }
    }

    /// Moves `id` (created on the fly when unknown) to `status`; returns the response body.
    fn transition(&self, id: &str, status: &str, extra: Map<String, Value>) -> Value {
        let mut orders = self.orders();
        let order = orders.entry(id.to_string()).or_insert_with(|| Order {
            status: String::new(),
            updated_ms: 0,
            fields: Map::new(),
        });
        let previous = std::mem::replace(&mut order.status, status.to_string());
        order.updated_ms = now_ms();
        let mut view = order_view(id, order);
        if !previous.is_empty() {
            extend(&mut view, json!({ "previous": previous }));
        }
        extend(&mut view, Value::Object(extra));
        view
    }

    fn set_status(&self, id: &str, body: &Consumed) -> Response {
        let b = match body.json_object() {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(status) = b.get("status").and_then(Value::as_str) else {
            return error(400, "the body needs a string field \"status\"");
        };
        if !settable_status(status) {
            return error(422, &format!("unknown status {status:?}"));
        }
        let mut extra = Map::new();
        if let Some(op) = b.get("operatorId") {
            extra.insert("operatorId".into(), op.clone());
        }
        Response::json(200, &self.transition(id, status, extra))
    }

    fn list(&self, req: &Request) -> Response {
        let page = match req.query_param("page").map(|p| p.parse::<usize>()) {
            None => 1,
            Some(Ok(p)) if p >= 1 => p,
            Some(_) => return error(400, "page must be a number >= 1"),
        };
        let wanted = req.query_param("status");
        let orders = self.orders();
        let mut matching: Vec<(&String, &Order)> = orders
            .iter()
            .filter(|(_, o)| {
                wanted
                    .as_deref()
                    .is_none_or(|w| w == o.status || w == "NEW")
            })
            .collect();
        matching.sort_by(|a, b| a.0.cmp(b.0));
        let total = matching.len();
        let items: Vec<Value> = matching
            .into_iter()
            .skip(page.saturating_sub(1).saturating_mul(PAGE_SIZE))
            .take(PAGE_SIZE)
            .map(|(id, o)| order_view(id, o))
            .collect();
        Response::json(
            200,
            &json!({"page": page, "pageSize": PAGE_SIZE, "total": total, "status": wanted, "orders": items}),
        )
    }

    fn log(&self, req: &Request, body: Option<&Consumed>, status: u16) {
        if !self.quiet {
            eprintln!(
                "refapi {}: {} {} -> {status} ({} body bytes)",
                self.service.name(),
                req.method,
                req.target,
                body.map_or(0, |b| b.len)
            );
        }
        let Some(record) = &self.record else {
            return;
        };
        let mut headers: BTreeMap<&str, String> = BTreeMap::new();
        for (k, v) in &req.headers {
            headers
                .entry(k.as_str())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        let line = json!({
            "ts_ms": now_ms(),
            "service": self.service.name(),
            "method": req.method,
            "target": req.target,
            "path": req.path,
            "query": req.query,
            "headers": headers,
            "body_len": body.map(|b| b.len),
            "body_sha256": body.map(|b| b.sha256.clone()),
            "status": status,
        });
        let mut file = record.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
            eprintln!("refapi: writing the record file: {e}");
        }
    }
}

fn order_view(id: &str, o: &Order) -> Value {
    let mut v = json!({"id": id, "status": o.status, "updatedAtMs": o.updated_ms});
    extend(&mut v, Value::Object(o.fields.clone()));
    v
}

/// Adds the fields of `extra` that `base` does not have yet.
fn extend(base: &mut Value, extra: Value) {
    if let (Value::Object(b), Value::Object(e)) = (base, extra) {
        for (k, v) in e {
            b.entry(k).or_insert(v);
        }
    }
}

/// `ordertrace refapi --service shop|crm|mes`.
#[derive(clap::Args)]
#[command(
    after_help = "Request headers: `x-demo-fail: 500` (any 400..=599) answers that status, \
                  `x-demo-delay-ms: N` waits N ms (at most 30 s)."
)]
pub struct Args {
    /// Which API to serve
    #[arg(long, value_enum)]
    service: Service,
    /// Address to listen on [default: 127.0.0.1:18000 shop, :18001 crm, :18002 mes]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Append one JSON line per request to FILE: method, path, headers, body length and sha256, status
    #[arg(long, value_name = "FILE")]
    record: Option<String>,
    /// Do not log one line per request on stderr
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<(), String> {
    let Args {
        service,
        listen,
        record,
        quiet,
    } = args;
    let listen = listen.unwrap_or_else(|| service.default_listen().to_string());
    let record_file = match &record {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--record {path}: {e}"))?,
        ),
        None => None,
    };
    let api = Arc::new(RefApi::new(service, record_file, quiet));
    let server = Server::bind(
        listen.as_str(),
        Limits { max_body: MAX_BODY },
        move |req, body| api.handle(req, body),
    )
    .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!(
        "ordertrace refapi: {} API on http://{}{}",
        service.name(),
        server.local_addr(),
        record
            .map(|p| format!(", recording requests to {p}"))
            .unwrap_or_default()
    );
    server.run().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct Client(std::net::SocketAddr);

    impl Client {
        fn call(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> (u16, Value) {
            let mut c = std::net::TcpStream::connect(self.0).unwrap();
            let mut head = format!("{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            c.write_all(head.as_bytes()).unwrap();
            c.write_all(body).unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            let status = out[9..12].parse().unwrap();
            let body = out.split("\r\n\r\n").nth(1).unwrap();
            (status, serde_json::from_str(body).unwrap())
        }
    }

    fn start(service: Service, record: Option<File>) -> (httpd::ServerHandle, Client) {
        let api = Arc::new(RefApi::new(service, record, true));
        let srv = Server::bind("127.0.0.1:0", Limits { max_body: MAX_BODY }, move |r, b| {
            api.handle(r, b)
        })
        .unwrap()
        .spawn();
        let addr = srv.local_addr();
        (srv, Client(addr))
    }

    #[test]
    fn shop_lifecycle_without_pii_echo() {
        let (_srv, c) = start(Service::Shop, None);
        let (s, v) = c.call(
            "POST",
            "/api/orders",
            &[("content-type", "application/json")],
            br#"{"email":"a@b.c","customerName":"Ann","phone":"1","product":"ring","partnerId":"p-1"}"#,
        );
        assert_eq!(
            (s, v["id"].as_str(), v["status"].as_str()),
            (201, Some("ORD-1001"), Some("INITIATED"))
        );
        assert_eq!(v["product"], "ring");
        assert!(
            v.get("email").is_none() && v.get("customerName").is_none() && v.get("phone").is_none()
        );
        let model = vec![7u8; 300_000];
        let (s, v) = c.call("PUT", "/api/orders/ORD-1001/model", &[], &model);
        assert_eq!(
            (s, v["status"].as_str(), v["bytes"].as_u64()),
            (200, Some("FILE_UPLOADED"), Some(300_000))
        );
        assert_eq!(v["sha256"], httpd::hex(&Sha256::digest(&model)));
        let (s, v) = c.call("POST", "/api/orders/ORD-1001/submit", &[], b"");
        assert_eq!(
            (s, v["status"].as_str(), v["previous"].as_str()),
            (200, Some("SUBMITTED"), Some("FILE_UPLOADED"))
        );
        let (s, v) = c.call(
            "POST",
            "/api/orders/ORD-1001/submit",
            &[("x-demo-fail", "409")],
            b"",
        );
        assert_eq!((s, v["status"].as_u64()), (409, Some(409)));
        let (s, _) = c.call("POST", "/api/orders/ORD-1001/approve", &[], b"");
        assert_eq!(s, 404);
        let (s, _) = c.call("DELETE", "/api/orders/ORD-1001/submit", &[], b"");
        assert_eq!(s, 405);
        let (s, _) = c.call("POST", "/api/orders", &[], b"[1]");
        assert_eq!(s, 400);
    }

    #[test]
    fn crm_and_mes_accept_unknown_ids() {
        let (_crm, c) = start(Service::Crm, None);
        let (s, v) = c.call(
            "POST",
            "/api/orders/ORD-9/approve",
            &[],
            br#"{"managerId":"m-7"}"#,
        );
        assert_eq!(
            (s, v["status"].as_str(), v["managerId"].as_str()),
            (200, Some("MANUFACTURING_APPROVED"), Some("m-7"))
        );
        let (s, v) = c.call("POST", "/api/orders/ORD-9/close", &[], b"");
        assert_eq!((s, v["status"].as_str()), (200, Some("CLOSED")));

        let (_mes, m) = start(Service::Mes, None);
        let (s, v) = m.call("POST", "/api/orders/ORD-9/price", &[], b"");
        assert_eq!(
            (s, v["status"].as_str()),
            (202, Some("PRICE_CALCULATION_STARTED"))
        );
        let (s, v) = m.call(
            "PUT",
            "/api/orders/ORD-9/status",
            &[],
            br#"{"status":"PACKAGING","operatorId":"op-17"}"#,
        );
        assert_eq!(
            (s, v["status"].as_str(), v["operatorId"].as_str()),
            (200, Some("PACKAGING"), Some("op-17"))
        );
        let (s, _) = m.call(
            "PUT",
            "/api/orders/ORD-9/status",
            &[],
            br#"{"status":"DANCING"}"#,
        );
        assert_eq!(s, 422);
        let (s, _) = m.call(
            "PUT",
            "/api/orders/ORD-9/status",
            &[],
            br#"{"status":"CANCELLED"}"#,
        );
        assert_eq!(s, 422, "the reference API has no cancellation");
        for status in REFERENCE_STATUSES.iter().filter(|s| **s != "CANCELLED") {
            let (s, v) = m.call(
                "PUT",
                "/api/orders/ORD-10/status",
                &[],
                format!(r#"{{"status":"{status}"}}"#).as_bytes(),
            );
            assert_eq!((s, v["status"].as_str()), (200, Some(*status)));
        }
        let (s, v) = m.call("GET", "/api/orders?status=PACKAGING&page=1", &[], b"");
        assert_eq!(
            (s, v["total"].as_u64(), v["orders"][0]["id"].as_str()),
            (200, Some(1), Some("ORD-9"))
        );
        let (s, _) = m.call("GET", "/api/orders?page=0", &[], b"");
        assert_eq!(s, 400);
    }

    #[test]
    fn record_file_gets_one_line_per_request() {
        let path = std::env::temp_dir().join(format!("refapi-record-{}.jsonl", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap();
        let (_srv, c) = start(Service::Shop, Some(file));
        c.call(
            "PUT",
            "/api/orders/ORD-1/model",
            &[("traceparent", "00-abc")],
            b"hello",
        );
        c.call(
            "POST",
            "/api/orders/ORD-1/submit",
            &[("x-demo-fail", "500")],
            b"",
        );
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["method"], "PUT");
        assert_eq!(lines[0]["path"], "/api/orders/ORD-1/model");
        assert_eq!(lines[0]["headers"]["traceparent"], "00-abc");
        assert_eq!(lines[0]["body_len"], 5);
        assert_eq!(
            lines[0]["body_sha256"],
            httpd::hex(&Sha256::digest(b"hello"))
        );
        assert_eq!(lines[1]["status"], 500);
    }
}
