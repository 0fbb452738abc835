//! A tiny HTTP/1.1 server on std only, shared by `ordertrace sink`, `ordertrace refapi` and the
//! integration tests (which include this file with `#[path]`, so it uses no `crate::` paths).
//!
//! One thread per connection, keep-alive, request bodies with `Content-Length` or
//! `Transfer-Encoding: chunked`, a maximum body size, and `Expect: 100-continue`. The handler gets
//! the body as a stream ([`Body`] implements [`Read`]), so a 200 MB upload can be hashed in 64 KiB
//! chunks without ever being held in memory. Responses always carry `Content-Length`.
#![allow(dead_code)] // each user (sink, refapi, tests) uses a different part of the API

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The chunk size handlers should use when streaming a body.
pub const CHUNK: usize = 64 * 1024;
/// Longest request line or header line accepted.
const MAX_LINE: usize = 16 * 1024;
/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 128;
/// A keep-alive connection with no new request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A request's head; the body is read separately through [`Body`].
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The path without the query string.
    pub path: String,
    /// The query string without `?` (empty when there is none).
    pub query: String,
    pub version: String,
    /// Header names lower-cased, in arrival order, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// The path split into its non-empty segments.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }
}

/// A response; the body is small and held in memory.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Response::new(status)
            .with_header("content-type", content_type)
            .with_body(body)
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response::bytes(status, "application/json", body)
    }

    pub fn text(status: u16, text: &str) -> Self {
        Response::bytes(
            status,
            "text/plain; charset=utf-8",
            text.as_bytes().to_vec(),
        )
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the server's (or the caller's) limit.
    TooLarge {
        limit: u64,
    },
    /// Broken framing (bad chunk size, missing CRLF, early end of stream).
    Malformed(String),
    Io(io::Error),
}

impl BodyError {
    /// The status code a handler should answer with.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge { .. } => 413,
            BodyError::Malformed(_) | BodyError::Io(_) => 400,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "request body larger than {limit} bytes"),
            BodyError::Malformed(m) => write!(f, "malformed request body: {m}"),
            BodyError::Io(e) => write!(f, "reading the request body: {e}"),
        }
    }
}

impl From<BodyError> for io::Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` bytes left.
    Length(u64),
    /// Bytes left in the current chunk; `None` before the first chunk-size line.
    Chunked(Option<u64>),
    Done,
}

/// The request body as a stream. Reading past the server's maximum body size fails with
/// [`BodyError::TooLarge`]. Whatever the handler leaves unread is drained by the server.
pub struct Body<'a> {
    reader: &'a mut BufReader<TcpStream>,
    framing: Framing,
    read: u64,
    limit: u64,
    /// `Expect: 100-continue` seen and the interim response not yet sent.
    pending_continue: bool,
    failed: bool,
}

impl<'a> Body<'a> {
    /// Bytes of body read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Whether the whole body has been read.
    pub fn is_finished(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Reads the next piece of body into `buf`; `Ok(0)` at the end.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        if self.failed {
            return Err(BodyError::Malformed("body already failed".into()));
        }
        let r = self.read_inner(buf);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn send_continue(&mut self) -> Result<(), BodyError> {
        if self.pending_continue {
            self.pending_continue = false;
            let stream = self.reader.get_mut();
            stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| stream.flush())
                .map_err(BodyError::Io)?;
        }
        Ok(())
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, BodyError> {
        if buf.is_empty() || self.framing == Framing::Done {
            return Ok(0);
        }
        self.send_continue()?;
        loop {
            match self.framing {
                Framing::Done => return Ok(0),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(0);
                }
                Framing::Length(left) => {
                    let n = self.read_some(buf, left)?;
                    self.framing = Framing::Length(left.saturating_sub(n as u64));
                    return Ok(n);
                }
                Framing::Chunked(None) => {
                    let line = read_line(self.reader)
                        .map_err(BodyError::Io)?
                        .ok_or_else(|| {
                            BodyError::Malformed("end of stream before a chunk size".into())
                        })?;
                    let size_text = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size_text, 16).map_err(|_| {
                        BodyError::Malformed(format!("bad chunk size {size_text:?}"))
                    })?;
                    if size == 0 {
                        // Trailers until an empty line.
                        loop {
                            let t = read_line(self.reader).map_err(BodyError::Io)?.ok_or_else(
                                || BodyError::Malformed("end of stream in trailers".into()),
                            )?;
                            if t.is_empty() {
                                break;
                            }
                        }
                        self.framing = Framing::Done;
                        return Ok(0);
                    }
                    if self.read.saturating_add(size) > self.limit {
                        return Err(BodyError::TooLarge { limit: self.limit });
                    }
                    self.framing = Framing::Chunked(Some(size));
                }
                Framing::Chunked(Some(0)) => {
                    let crlf = read_line(self.reader).map_err(BodyError::Io)?;
                    if crlf.as_deref() != Some("") {
                        return Err(BodyError::Malformed("chunk not followed by CRLF".into()));
                    }
                    self.framing = Framing::Chunked(None);
                }
                Framing::Chunked(Some(left)) => {
                    let n = self.read_some(buf, left)?;
                    self.framing = Framing::Chunked(Some(left.saturating_sub(n as u64)));
                    return Ok(n);
                }
            }
        }
    }

    fn read_some(&mut self, buf: &mut [u8], left: u64) -> Result<usize, BodyError> {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let dst = buf.get_mut(..want).unwrap_or_default();
        let n = self.reader.read(dst).map_err(BodyError::Io)?;
        if n == 0 {
            return Err(BodyError::Malformed("end of stream inside the body".into()));
        }
        self.read = self.read.saturating_add(n as u64);
        Ok(n)
    }

    /// Reads the whole body into memory, failing when it is longer than `limit` bytes.
    /// Only for bodies known to be small (JSON); stream anything else.
    pub fn read_to_vec(&mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = self.read_chunk(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            if out.len().saturating_add(n) > limit {
                return Err(BodyError::TooLarge {
                    limit: limit as u64,
                });
            }
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
    }

    /// Streams the body through `f` in chunks of at most [`CHUNK`] bytes; returns the length.
    pub fn for_each_chunk(&mut self, mut f: impl FnMut(&[u8])) -> Result<u64, BodyError> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = self.read_chunk(&mut buf)?;
            if n == 0 {
                return Ok(self.read);
            }
            f(buf.get(..n).unwrap_or_default());
        }
    }

    /// Reads and discards the rest of the body. `false` when the connection cannot be reused.
    fn drain(&mut self) -> bool {
        if self.failed {
            return false;
        }
        // A client that waits for 100-continue and got a final answer instead will not send the body.
        if self.pending_continue {
            return false;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match self.read_chunk(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_chunk(buf).map_err(io::Error::from)
    }
}

/// What the server calls for every request.
pub type Handler = dyn Fn(&Request, &mut Body<'_>) -> Response + Send + Sync + 'static;

/// Server limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024 * 1024,
        }
    }
}

struct Shared {
    handler: Box<Handler>,
    limits: Limits,
    stopping: AtomicBool,
    next_conn: AtomicU64,
    /// Open connections, so `stop` can close them.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

/// A bound server. [`Server::spawn`] runs it in the background; [`Server::run`] in this thread.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `addr` (use port 0 for any free port).
    pub fn bind<A, F>(addr: A, limits: Limits, handler: F) -> io::Result<Server>
    where
        A: ToSocketAddrs,
        F: Fn(&Request, &mut Body<'_>) -> Response + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Server {
            listener,
            addr,
            shared: Arc::new(Shared {
                handler: Box::new(handler),
                limits,
                stopping: AtomicBool::new(false),
                next_conn: AtomicU64::new(0),
                conns: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves forever in the calling thread.
    pub fn run(self) -> io::Result<()> {
        accept_loop(&self.listener, &self.shared);
        Ok(())
    }

    /// Serves in a background thread until the handle is stopped or dropped.
    pub fn spawn(self) -> ServerHandle {
        let shared = Arc::clone(&self.shared);
        let addr = self.addr;
        let listener = self.listener;
        let thread = std::thread::Builder::new()
            .name(format!("httpd-{addr}"))
            .spawn(move || accept_loop(&listener, &shared))
            .ok();
        ServerHandle {
            addr,
            shared: self.shared,
            thread,
        }
    }
}

/// A running background server; stops (closing every connection) on [`ServerHandle::stop`] or drop.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let conns = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for stream in conns.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // EMFILE and friends: back off a little instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, clone);
        }
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("httpd-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, &shared);
                shared
                    .conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads one CRLF- (or LF-) terminated line without the terminator; `None` at a clean end of stream.
fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            if n > MAX_LINE {
                "line too long"
            } else {
                "end of stream inside a line"
            },
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not UTF-8"))
}

/// Why a request head was refused.
enum HeadError {
    /// Connection closed (cleanly or not) before a request started: just close.
    Closed,
    /// Answer this status and close.
    Bad(u16, String),
}

fn read_head(reader: &mut BufReader<TcpStream>, peer: SocketAddr) -> Result<Request, HeadError> {
    // Tolerate stray empty lines between requests (RFC 9112 2.2).
    let request_line = loop {
        match read_line(reader) {
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => break l,
            Ok(None) | Err(_) => return Err(HeadError::Closed),
        }
    };
    let mut parts = request_line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad(
            400,
            format!("bad request line {request_line:?}"),
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Bad(
            505,
            format!("unsupported version {version}"),
        ));
    }
    let mut headers = Vec::new();
    loop {
        let line = match read_line(reader) {
            Ok(Some(l)) => l,
            Ok(None) => return Err(HeadError::Closed),
            Err(e) => return Err(HeadError::Bad(431, e.to_string())),
        };
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HeadError::Bad(431, "too many headers".into()));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Bad(400, format!("bad header line {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        version: version.to_string(),
        headers,
        peer,
    })
}

fn framing_of(req: &Request) -> Result<Framing, (u16, String)> {
    let chunked = req
        .headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .any(|(_, v)| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return Ok(Framing::Chunked(None));
    }
    match req.header("content-length") {
        None => Ok(Framing::Length(0)),
        Some(v) => v
            .parse::<u64>()
            .map(Framing::Length)
            .map_err(|_| (400, format!("bad content-length {v:?}"))),
    }
}

fn wants_close(req: &Request) -> bool {
    let conn = req.header("connection").map(str::to_ascii_lowercase);
    match conn.as_deref() {
        Some(c) if c.contains("close") => true,
        Some(c) if c.contains("keep-alive") => false,
        _ => req.version == "HTTP/1.0",
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    close: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + resp.body.len());
    out.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).as_bytes(),
    );
    for (k, v) in &resp.headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("connection") {
            continue;
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n", resp.body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::with_capacity(CHUNK, stream);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_head(&mut reader, peer) {
            Ok(r) => r,
            Err(HeadError::Closed) => return,
            Err(HeadError::Bad(status, msg)) => {
                let _ = write_response(&mut writer, &Response::text(status, &msg), true, false);
                return;
            }
        };
        let framing = match framing_of(&req) {
            Ok(f) => f,
            Err((status, msg)) => {
                let _ = write_response(&mut writer, &Response::text(status, &msg), true, false);
                return;
            }
        };
        let limit = shared.limits.max_body;
        if let Framing::Length(n) = framing {
            if n > limit {
                let msg = format!("request body of {n} bytes is larger than {limit}");
                let _ = write_response(&mut writer, &Response::text(413, &msg), true, false);
                return;
            }
        }
        let expects_continue = req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let mut body = Body {
            reader: &mut reader,
            framing,
            read: 0,
            limit,
            pending_continue: expects_continue && framing != Framing::Length(0),
            failed: false,
        };
        let resp = (shared.handler)(&req, &mut body);
        let reusable = body.drain();
        let close = wants_close(&req) || !reusable || shared.stopping.load(Ordering::SeqCst);
        let head_only = req.method == "HEAD";
        if write_response(&mut writer, &resp, close, head_only).is_err() || close {
            let _ = writer.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// Decodes `%XX` escapes and `+` (as space); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn echo_server() -> ServerHandle {
        Server::bind("127.0.0.1:0", Limits { max_body: 1 << 20 }, |req, body| {
            let mut h = Sha256::new();
            match body.for_each_chunk(|c| h.update(c)) {
                Ok(n) => Response::json(
                    200,
                    &serde_json::json!({"method": req.method, "path": req.path, "query": req.query,
                        "len": n, "sha256": hex(&h.finalize())}),
                ),
                Err(e) => Response::text(e.status(), &e.to_string()),
            }
        })
        .unwrap()
        .spawn()
    }

    fn roundtrip(port: u16, raw: &[u8], responses: usize) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = String::new();
        let mut buf = [0u8; 4096];
        while out.matches("HTTP/1.1 ").count() < responses || !out.ends_with('\n') {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        out
    }

    #[test]
    fn content_length_chunked_and_keep_alive_on_one_connection() {
        let srv = echo_server();
        let raw = b"POST /a?x=1 HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nx-trailer: 1\r\n\r\n";
        let out = roundtrip(srv.port(), raw, 2);
        let want = hex(&Sha256::digest(b"hello"));
        assert_eq!(out.matches(&want).count(), 2, "{out}");
        assert!(
            out.contains(r#""path":"/a""#) && out.contains(r#""query":"x=1""#),
            "{out}"
        );
        assert!(out.contains(r#""path":"/b""#), "{out}");
    }

    #[test]
    fn too_large_bodies_get_413() {
        let srv = echo_server();
        let out = roundtrip(
            srv.port(),
            b"PUT /x HTTP/1.1\r\ncontent-length: 2000000\r\n\r\n",
            1,
        );
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        let out = roundtrip(
            srv.port(),
            b"PUT /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n200000\r\n",
            1,
        );
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    }

    #[test]
    fn expect_continue_and_bad_requests() {
        let srv = echo_server();
        let mut s = TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"PUT /m HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 25];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"abc").unwrap();
        let mut rest = [0u8; 12];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"HTTP/1.1 200");

        let out = roundtrip(srv.port(), b"garbage\r\n\r\n", 1);
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let out = roundtrip(
            srv.port(),
            b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            1,
        );
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }

    #[test]
    fn query_params_are_decoded() {
        let req = Request {
            method: "GET".into(),
            target: "/api/orders?status=NEW&page=2&q=a%20b+c".into(),
            path: "/api/orders".into(),
            query: "status=NEW&page=2&q=a%20b+c".into(),
            version: "HTTP/1.1".into(),
            headers: vec![("x-a".into(), "1".into())],
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        assert_eq!(req.query_param("page").as_deref(), Some("2"));
        assert_eq!(req.query_param("q").as_deref(), Some("a b c"));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(req.header("X-A"), Some("1"));
        assert_eq!(req.segments(), vec!["api", "orders"]);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
