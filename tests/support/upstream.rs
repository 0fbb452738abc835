//! An in-process recording upstream, a small HTTP client (one request per connection), and
//! W3C traceparent parsing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::hex;
use super::httpd::{Limits, Response, Server, ServerHandle};

// ---------------------------------------------------------------------------------------------
// A small HTTP client (one request per connection)

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }
}

fn write_head(
    stream: &mut TcpStream,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    len: Option<u64>,
) -> std::io::Result<()> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = len {
        head.push_str(&format!("content-length: {len}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())
}

fn read_response(stream: TcpStream) -> Result<HttpResponse, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)
            .map_err(|e| format!("reading the status line: {e}"))?;
        if line.is_empty() {
            return Err("connection closed before a response".into());
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).map_err(|e| e.to_string())?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        if (100..200).contains(&status) {
            continue; // interim (100 Continue)
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| e.to_string())?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {size:?}"))?;
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
        } else {
            r.read_to_end(&mut body).map_err(|e| e.to_string())?;
        }
        return Ok(HttpResponse {
            status,
            headers,
            body,
        });
    }
}

/// One request to 127.0.0.1:`port` (`connection: close`; `host` defaults to `127.0.0.1:<port>`).
pub fn http(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s =
        TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect {port}: {e}"));
    let len = if body.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE") {
        None
    } else {
        Some(body.len() as u64)
    };
    write_head(&mut s, port, method, target, headers, len).unwrap();
    // A write error (the server answered early and closed) still leaves a response to read.
    let _ = s.write_all(body);
    read_response(s).unwrap_or_else(|e| panic!("{method} {target} on port {port}: {e}"))
}

/// A JSON request (`content-type: application/json`).
pub fn http_json(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> HttpResponse {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    http(port, method, target, &h, body.to_string().as_bytes())
}

/// Deterministic pseudo-random bytes (xorshift64*), so large bodies need not be stored.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.max(1))
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Streams a `len`-byte body (from `body`, called with 64 KiB buffers to fill) with
/// `Content-Length`; returns the response and the sha256 of what was sent.
pub fn http_stream(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    len: u64,
    mut body: impl FnMut(&mut [u8]),
) -> (HttpResponse, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write_head(&mut s, port, method, target, headers, Some(len)).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        body(&mut buf[..n]);
        hasher.update(&buf[..n]);
        if let Err(e) = s.write_all(&buf[..n]) {
            eprintln!("upload to {target} stopped after {} bytes: {e}", len - left);
            break;
        }
        left -= n as u64;
    }
    let resp = read_response(s).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    (resp, hex(&hasher.finalize()))
}

pub(super) fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    write_head(&mut s, port, "GET", path, &[], None).map_err(|e| e.to_string())?;
    let r = read_response(s)?;
    Ok((r.status, r.text()))
}

// ---------------------------------------------------------------------------------------------
// W3C traceparent helpers

/// (trace id, parent id, flags) of a `00-…` traceparent, or None.
pub fn parse_traceparent(v: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let ok = parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts[1..].iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16);
    ok.then(|| {
        (
            parts[1].to_string(),
            parts[2].to_string(),
            parts[3].to_string(),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// In-process recording upstream

/// A request as it reached the upstream.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha256: String,
    /// The first 64 KiB of the body.
    pub body_prefix: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            body: body.to_string().into_bytes(),
        }
    }

    pub fn raw(status: u16, content_type: &str, body: &[u8]) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body: body.to_vec(),
        }
    }
}

/// An upstream that records every request and answers what a responder says.
pub struct Upstream {
    server: ServerHandle,
    records: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    /// Starts on a free port; `respond` sees the recorded request (body already consumed).
    pub fn start(respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream::start_on(0, respond)
    }

    pub fn start_on(
        port: u16,
        respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let records = Arc::new(Mutex::new(Vec::new()));
        let recs = Arc::clone(&records);
        let server = Server::bind(
            ("127.0.0.1", port),
            Limits { max_body: 1 << 34 },
            move |req, body| {
                let mut hasher = Sha256::new();
                let mut prefix = Vec::new();
                let len = match body.for_each_chunk(|c| {
                    hasher.update(c);
                    let room = (64 * 1024usize).saturating_sub(prefix.len());
                    prefix.extend(c.iter().take(room));
                }) {
                    Ok(n) => n,
                    Err(e) => return Response::text(e.status(), &e.to_string()),
                };
                let rec = Recorded {
                    method: req.method.clone(),
                    target: req.target.clone(),
                    path: req.path.clone(),
                    headers: req.headers.clone(),
                    body_len: len,
                    body_sha256: hex(&hasher.finalize()),
                    body_prefix: prefix,
                };
                let reply = respond(&rec);
                recs.lock().unwrap().push(rec);
                Response::bytes(reply.status, &reply.content_type, reply.body)
            },
        )
        .unwrap()
        .spawn();
        Upstream { server, records }
    }

    /// Answers every request with `status` and `body`.
    pub fn fixed(status: u16, body: Value) -> Upstream {
        Upstream::start(move |_| Reply::json(status, &body))
    }

    /// Answers by (method, path); anything else gets 200 `{}`.
    pub fn scripted(script: Vec<(&'static str, &'static str, u16, Value)>) -> Upstream {
        Upstream::start(move |r| {
            script
                .iter()
                .find(|(m, p, ..)| *m == r.method && *p == r.path)
                .map(|(_, _, s, b)| Reply::json(*s, b))
                .unwrap_or_else(|| Reply::json(200, &serde_json::json!({})))
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }

    /// The last recorded request whose path is `path`.
    pub fn last_to(&self, path: &str) -> Recorded {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path == path)
            .unwrap_or_else(|| {
                panic!(
                    "no request to {path} reached the upstream; got {:?}",
                    self.paths()
                )
            })
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }
}
