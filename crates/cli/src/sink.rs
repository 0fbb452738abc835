//! `ordertrace sink`: a local OTLP/HTTP receiver (protobuf, `POST /v1/traces`) that prints one
//! readable line per span and can append every span as one JSON object per line (`--jsonl`).
//! Output is flushed after every export request so `tail -f` and the demo see spans at once.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use prost::Message;
use serde_json::{json, Map, Value};

use super::httpd::{self, Limits, Response, Server};
use super::otlp_in::{self, attr};

/// Largest export request accepted by default (the filter sends batches far below this).
const DEFAULT_MAX_BODY: u64 = 64 * 1024 * 1024;

/// `ordertrace sink`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to serve OTLP/HTTP on (POST /v1/traces)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318")]
    listen: String,
    /// Also append every span to FILE, one JSON object per line
    #[arg(long, value_name = "FILE")]
    jsonl: Option<String>,
    /// Do not print the readable line per span
    #[arg(short, long)]
    quiet: bool,
    /// Largest export request accepted (413 beyond)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY)]
    max_body: u64,
    /// Copy every accepted export request to http://HOST:PORT[/PATH], best effort (e.g. to a watch)
    #[arg(long, value_name = "URL", value_parser = parse_forward)]
    forward: Option<Forward>,
}

/// Where a copy of every accepted export request goes (e.g. `ordertrace watch`), best effort.
#[derive(Clone)]
struct Forward {
    addr: String,
    path: String,
}

/// `--forward`'s URL; the path defaults to `/v1/traces`.
fn parse_forward(url: &str) -> Result<Forward, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (addr, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/v1/traces"),
    };
    if addr.is_empty() {
        return Err("no host:port".into());
    }
    Ok(Forward {
        addr: addr.to_string(),
        path: path.to_string(),
    })
}

/// POST the bytes as they came (one connection per request; failures are logged, never fatal).
fn forward(f: &Forward, bytes: &[u8]) {
    use std::io::{Read, Write};
    let result = (|| -> std::io::Result<String> {
        let mut conn = std::net::TcpStream::connect(&f.addr)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            f.path,
            f.addr,
            bytes.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(bytes)?;
        let mut answer = Vec::new();
        conn.take(64 * 1024).read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    })();
    match result {
        Ok(status) if status.contains(" 2") => {}
        Ok(status) => eprintln!("ordertrace sink: forward to {}{}: {status}", f.addr, f.path),
        Err(e) => eprintln!("ordertrace sink: forward to {}{}: {e}", f.addr, f.path),
    }
}

/// Where decoded spans go.
struct Output {
    quiet: bool,
    jsonl: Option<BufWriter<File>>,
    forward: Option<Forward>,
}

pub fn run(opts: Args) -> Result<(), String> {
    let jsonl = match &opts.jsonl {
        Some(path) => Some(BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--jsonl {path}: {e}"))?,
        )),
        None => None,
    };
    let out = Arc::new(Mutex::new(Output {
        quiet: opts.quiet,
        jsonl,
        forward: opts.forward.clone(),
    }));
    let server = Server::bind(
        opts.listen.as_str(),
        Limits {
            max_body: opts.max_body,
        },
        move |req, body| handle(req, body, &out),
    )
    .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    eprintln!(
        "ordertrace sink: listening on http://{}/v1/traces{}",
        server.local_addr(),
        opts.jsonl
            .as_deref()
            .map(|p| format!(", appending spans to {p}"))
            .unwrap_or_default()
    );
    server.run().map_err(|e| e.to_string())
}

fn handle(req: &httpd::Request, body: &mut httpd::Body<'_>, out: &Mutex<Output>) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/" | "/healthz") => return Response::text(200, "ordertrace sink\n"),
        ("POST", "/v1/traces") => {}
        (_, "/v1/traces") => {
            return Response::text(405, "only POST /v1/traces").with_header("allow", "POST")
        }
        _ => return Response::text(404, "this sink only serves POST /v1/traces"),
    }
    let ctype = req
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ctype.is_empty()
        && !ctype.starts_with("application/x-protobuf")
        && !ctype.starts_with("application/protobuf")
    {
        return Response::text(
            415,
            "only OTLP protobuf (application/x-protobuf) is supported",
        );
    }
    if let Some(enc) = req
        .header("content-encoding")
        .filter(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Response::text(415, &format!("content-encoding {enc} is not supported"));
    }
    // The server already enforces --max-body.
    let bytes = match body.read_to_vec(usize::MAX) {
        Ok(b) => b,
        Err(e) => return Response::text(e.status(), &e.to_string()),
    };
    let export = match otlp_in::decode(&bytes) {
        Ok(r) => {
            let target = out.lock().ok().and_then(|o| o.forward.clone());
            if let Some(f) = target {
                forward(&f, &bytes);
            }
            r
        }
        Err(e) => {
            eprintln!(
                "ordertrace sink: undecodable export request ({} bytes): {e}",
                bytes.len()
            );
            return Response::text(400, &format!("not an ExportTraceServiceRequest: {e}"));
        }
    };
    let now = now_nanos();
    let mut guard = out.lock().unwrap_or_else(PoisonError::into_inner);
    let output = &mut *guard;
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    for r in otlp_in::spans(&export) {
        if !output.quiet {
            let _ = writeln!(stdout, "{}", span_line(r.resource, r.span));
        }
        if let Some(file) = output.jsonl.as_mut() {
            let _ = writeln!(file, "{}", span_json(r.resource, r.scope, r.span, now));
        }
    }
    let _ = stdout.flush();
    if let Some(file) = output.jsonl.as_mut() {
        if let Err(e) = file.flush() {
            eprintln!("ordertrace sink: writing the JSONL file: {e}");
        }
    }
    drop(guard);
    Response::bytes(
        200,
        "application/x-protobuf",
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// A short text form of a value, for the readable line.
fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => any_json(v).to_string(),
    }
}

fn attr_text(attrs: &[KeyValue], key: &str) -> Option<String> {
    attr(attrs, key).map(value_text)
}

/// One readable line: time, service, span name, order id, status, http status, duration, trace id.
fn span_line(resource: &[KeyValue], sp: &Span) -> String {
    let service = attr_text(resource, "service.name").unwrap_or_else(|| "-".into());
    let order = attr_text(&sp.attributes, "order.id").unwrap_or_else(|| "-".into());
    let status = match (
        attr_text(&sp.attributes, "order.status"),
        attr_text(&sp.attributes, "order.status.attempted"),
    ) {
        (Some(s), _) => s,
        (None, Some(a)) => format!("attempted {a}"),
        (None, None) => "-".into(),
    };
    let http = attr_text(&sp.attributes, "http.response.status_code").unwrap_or_else(|| "-".into());
    let error = if status_code(sp) == "ERROR" {
        let ty = attr_text(&sp.attributes, "error.type").unwrap_or_default();
        format!(" ERROR {ty}").trim_end().to_string()
    } else {
        String::new()
    };
    format!(
        "{time}  {service:<10} {name:<16} order={order:<10} {status:<34} http={http:<3} {dur:>9.1}ms  trace={trace}{error}",
        time = rfc3339(sp.start_time_unix_nano),
        name = sp.name,
        dur = duration_ms(sp),
        trace = httpd::hex(&sp.trace_id),
    )
}

fn duration_ms(sp: &Span) -> f64 {
    sp.end_time_unix_nano
        .saturating_sub(sp.start_time_unix_nano) as f64
        / 1e6
}

fn status_code(sp: &Span) -> &'static str {
    match sp
        .status
        .as_ref()
        .map(|s| status::StatusCode::try_from(s.code))
    {
        Some(Ok(status::StatusCode::Ok)) => "OK",
        Some(Ok(status::StatusCode::Error)) => "ERROR",
        _ => "UNSET",
    }
}

fn kind_name(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Internal) => "INTERNAL",
        Ok(span::SpanKind::Server) => "SERVER",
        Ok(span::SpanKind::Client) => "CLIENT",
        Ok(span::SpanKind::Producer) => "PRODUCER",
        Ok(span::SpanKind::Consumer) => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

/// An OTLP value as JSON (bytes as lower-case hex).
fn any_json(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_json).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => attrs_json(&l.values),
        Some(any_value::Value::BytesValue(b)) => Value::String(httpd::hex(b)),
        Some(any_value::Value::StringValueStrindex(i)) => json!({ "string_table_index": i }),
    }
}

fn attrs_json(attrs: &[KeyValue]) -> Value {
    Value::Object(
        attrs
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map(any_json).unwrap_or(Value::Null),
                )
            })
            .collect::<Map<String, Value>>(),
    )
}

fn span_json(
    resource: &[KeyValue],
    scope: Option<&InstrumentationScope>,
    sp: &Span,
    received: u64,
) -> Value {
    json!({
        "time": rfc3339(sp.start_time_unix_nano),
        "received_at": rfc3339(received),
        "service": attr_text(resource, "service.name"),
        "name": sp.name,
        "kind": kind_name(sp.kind),
        "trace_id": httpd::hex(&sp.trace_id),
        "span_id": httpd::hex(&sp.span_id),
        "parent_span_id": httpd::hex(&sp.parent_span_id),
        "trace_state": sp.trace_state,
        "flags": sp.flags,
        "start_time_unix_nano": sp.start_time_unix_nano,
        "end_time_unix_nano": sp.end_time_unix_nano,
        "duration_ms": duration_ms(sp),
        "status": {
            "code": status_code(sp),
            "message": sp.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
        },
        "attributes": attrs_json(&sp.attributes),
        "resource": attrs_json(resource),
        "scope": {
            "name": scope.map(|s| s.name.clone()).unwrap_or_default(),
            "version": scope.map(|s| s.version.clone()).unwrap_or_default(),
        },
        "events": sp.events.iter().map(|e| json!({
            "name": e.name,
            "time": rfc3339(e.time_unix_nano),
            "time_unix_nano": e.time_unix_nano,
            "attributes": attrs_json(&e.attributes),
        })).collect::<Vec<_>>(),
        "links": sp.links.iter().map(|l| json!({
            "trace_id": httpd::hex(&l.trace_id),
            "span_id": httpd::hex(&l.span_id),
            "trace_state": l.trace_state,
            "flags": l.flags,
            "attributes": attrs_json(&l.attributes),
        })).collect::<Vec<_>>(),
    })
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `2026-05-01T10:00:00.123Z` for nanoseconds since the Unix epoch (UTC, milliseconds).
fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let millis = (unix_nanos % 1_000_000_000) / 1_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (the "days from civil" inverse).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn sample(attempted: bool) -> ExportTraceServiceRequest {
        let mut attrs = vec![
            kv("order.id", s("ORD-1001")),
            kv(
                "http.response.status_code",
                any_value::Value::IntValue(if attempted { 500 } else { 201 }),
            ),
        ];
        attrs.push(kv(
            if attempted {
                "order.status.attempted"
            } else {
                "order.status"
            },
            s("INITIATED"),
        ));
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("shop-api"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "ordertrace".into(),
                        ..Default::default()
                    }),
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        name: "shop.create".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_012_500_000,
                        attributes: attrs,
                        status: Some(Status {
                            code: if attempted { 2 } else { 0 },
                            message: String::new(),
                        }),
                        events: vec![span::Event {
                            name: "order.status_changed".into(),
                            time_unix_nano: 1_700_000_000_012_000_000,
                            attributes: vec![kv("order.status", s("INITIATED"))],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn readable_line_has_the_fields() {
        let req = sample(false);
        let r = otlp_in::spans(&req).next().unwrap();
        let line = span_line(r.resource, r.span);
        for want in [
            "2023-11-14T22:13:20.000Z",
            "shop-api",
            "shop.create",
            "order=ORD-1001",
            "INITIATED",
            "http=201",
            "12.5ms",
            &"ab".repeat(16),
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        let req = sample(true);
        let r = otlp_in::spans(&req).next().unwrap();
        let line = span_line(r.resource, r.span);
        assert!(
            line.contains("attempted INITIATED") && line.contains("ERROR"),
            "{line}"
        );
    }

    #[test]
    fn json_has_ids_in_hex_and_everything_else() {
        let req = sample(false);
        let r = otlp_in::spans(&req).next().unwrap();
        let v = span_json(r.resource, r.scope, r.span, 0);
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["span_id"], "0101010101010101");
        assert_eq!(v["parent_span_id"], "");
        assert_eq!(v["kind"], "SERVER");
        assert_eq!(v["attributes"]["order.id"], "ORD-1001");
        assert_eq!(v["attributes"]["http.response.status_code"], 201);
        assert_eq!(v["resource"]["service.name"], "shop-api");
        assert_eq!(v["scope"]["name"], "ordertrace");
        assert_eq!(v["events"][0]["attributes"]["order.status"], "INITIATED");
        assert_eq!(v["status"]["code"], "UNSET");
    }

    #[test]
    fn serves_protobuf_and_rejects_garbage() {
        use std::io::{Read, Write};
        let out = Arc::new(Mutex::new(Output {
            quiet: true,
            jsonl: None,
            forward: None,
        }));
        let srv = Server::bind("127.0.0.1:0", Limits::default(), move |req, body| {
            handle(req, body, &out)
        })
        .unwrap()
        .spawn();
        let post = |body: &[u8]| {
            let mut c = std::net::TcpStream::connect(srv.local_addr()).unwrap();
            let head = format!(
                "POST /v1/traces HTTP/1.1\r\ncontent-type: application/x-protobuf\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            c.write_all(head.as_bytes()).unwrap();
            c.write_all(body).unwrap();
            let mut resp = Vec::new();
            c.read_to_end(&mut resp).unwrap();
            String::from_utf8_lossy(&resp).into_owned()
        };
        let ok = post(&sample(false).encode_to_vec());
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("application/x-protobuf") && ok.contains("content-length: 0"),
            "{ok}"
        );
        let bad = post(b"\xff\xff\xff\xff not protobuf");
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    }
}
