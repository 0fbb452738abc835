//! proxy-wasm glue: Envoy's callbacks in, the pure core out. Thin on purpose — every decision lives in
//! `filter`, `export` and `config`, which are tested natively; this file only moves bytes across the ABI.
//!
//! Host calls per traced request: 1 header-map read, 1 header write, 2 clock reads, 1 `:status` read,
//! plus body reads only for routes whose rules need a JSON body. Metrics and export run on the tick.
//!
//! The SDK's `hostcalls` functions are used directly because they return `Result`; the trait helpers
//! unwrap and would trap the VM on an unexpected status.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use crate::config::Config;
use crate::export::Next;
use crate::filter::{RequestState, Worker};
use crate::host::{HeaderMap, RandomSource, StreamHost};
use crate::metrics::{FlushState, Labelled, COUNTER_NAMES, QUEUE_GAUGE_NAME};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

// The raw header-map read: the SDK's wrapper copies every header into a String and a Vec; the core
// searches the host's buffer in place instead (a measurable share of a request's instructions).
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}
const MAP_HTTP_REQUEST_HEADERS: u32 = 0;

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> i32;
}

/// Randomness from WASI `random_get` (Envoy serves it from its own CSPRNG).
struct WasiRandom;

impl RandomSource for WasiRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for the duration of the call.
        let errno = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
        if errno != 0 {
            log(LogLevel::Warn, "random_get failed; ids come from the clock");
            let t = now_nanos();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (t >> ((i % 8) * 8)) as u8 ^ (i as u8);
            }
        }
    }
}

type Shared = Rc<RefCell<Worker<WasiRandom>>>;

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Default)]
struct Root {
    worker: Option<Shared>,
    counter_ids: Vec<Option<u32>>,
    gauge_id: Option<u32>,
    flush: FlushState,
    /// Envoy metric ids of labelled metrics, defined on first use (their number is bounded by the config).
    labelled_ids: std::collections::HashMap<Labelled, Option<u32>>,
}

impl Root {
    fn define_metrics(&mut self) {
        if !self.counter_ids.is_empty() {
            return;
        }
        self.counter_ids = COUNTER_NAMES
            .iter()
            .map(|n| hostcalls::define_metric(MetricType::Counter, n).ok())
            .collect();
        self.gauge_id = hostcalls::define_metric(MetricType::Gauge, QUEUE_GAUGE_NAME).ok();
    }

    fn flush_metrics(&mut self) {
        let Some(shared) = &self.worker else { return };
        let Ok(w) = shared.try_borrow() else { return };
        for (i, delta) in self.flush.deltas(&w.counters) {
            if let Some(Some(id)) = self.counter_ids.get(i) {
                let _ = hostcalls::increment_metric(*id, i64::try_from(delta).unwrap_or(i64::MAX));
            }
        }
        if let Some(id) = self.gauge_id {
            let _ = hostcalls::record_metric(id, w.queue.len() as u64);
        }
        drop(w);
        let Ok(mut w) = shared.try_borrow_mut() else {
            return;
        };
        let (counters, samples) = w.labelled.drain();
        drop(w);
        for (m, delta) in counters {
            if let Some(id) = self.labelled_id(&m) {
                let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
            }
        }
        for (m, value) in samples {
            if let Some(id) = self.labelled_id(&m) {
                let _ = hostcalls::record_metric(id, value);
            }
        }
    }

    fn labelled_id(&mut self, m: &Labelled) -> Option<u32> {
        if let Some(id) = self.labelled_ids.get(m) {
            return *id;
        }
        let kind = if m.is_histogram() {
            MetricType::Histogram
        } else {
            MetricType::Counter
        };
        let id = hostcalls::define_metric(kind, &m.name()).ok();
        self.labelled_ids.insert(m.clone(), id);
        id
    }

    /// Send the next export request if one is due. Only the root context dispatches: a call made from an
    /// HTTP context's `on_log` never gets its response in Envoy.
    fn export(&self) {
        let Some(shared) = &self.worker else { return };
        let Ok(mut w) = shared.try_borrow_mut() else {
            return;
        };
        let now = now_nanos();
        let w = &mut *w;
        let Next::Send(body) = w.queue.poll(now, &w.frame) else {
            return;
        };
        let c = &w.config.collector;
        let headers = vec![
            (":method", "POST"),
            (":path", c.path.as_str()),
            (":authority", c.authority.as_str()),
            ("content-type", "application/x-protobuf"),
        ];
        let timeout = Duration::from_millis(c.timeout_ms);
        match hostcalls::dispatch_http_call(&c.cluster, headers, Some(&body), vec![], timeout) {
            Ok(token) => w.queue.sent(token, &mut w.counters),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!(
                        "ordertrace: export to cluster {:?} not sent: {status:?}",
                        c.cluster
                    ),
                );
                w.queue.dispatch_failed(now, &mut w.counters);
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        // A reset or connect failure arrives with no headers at all; reading them then is a BadArgument
        // (and a trap in the SDK), so only look when there is something to read.
        let status = if num_headers == 0 {
            None
        } else {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
                .and_then(|s| {
                    std::str::from_utf8(&s)
                        .ok()
                        .and_then(|s| s.trim().parse::<u16>().ok())
                })
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        let more = {
            let Some(shared) = &self.worker else { return };
            let Ok(mut w) = shared.try_borrow_mut() else {
                return;
            };
            let w = &mut *w;
            w.queue
                .response_status(token_id, status, now_nanos(), &mut w.counters);
            ok && w.queue.has_full_batch()
        };
        if more {
            // Under load, do not wait for the next tick while full batches are waiting.
            self.export();
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log(
            LogLevel::Info,
            &format!(
                "ordertrace {} ({}) started",
                crate::VERSION,
                env!("ORDERTRACE_GIT_HASH")
            ),
        );
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.define_metrics();
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(Some(b)) => b,
            _ => Vec::new(),
        };
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("ordertrace: invalid plugin configuration: {e}"),
                );
                if let Some(Some(id)) = COUNTER_NAMES
                    .iter()
                    .position(|n| *n == "ordertrace_config_errors")
                    .and_then(|i| self.counter_ids.get(i))
                {
                    let _ = hostcalls::increment_metric(*id, 1);
                }
                return false;
            }
        };
        // Read once: the node id never changes while the VM lives.
        let node_id = ["node", "xds"]
            .iter()
            .find_map(|root| {
                // Envoy 1.40 serves the node under `xds.node`; older builds under `node`.
                let path = if *root == "xds" {
                    vec!["xds", "node", "id"]
                } else {
                    vec!["node", "id"]
                };
                hostcalls::get_property(path)
                    .ok()
                    .flatten()
                    .filter(|b| !b.is_empty())
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let interval = Duration::from_millis(config.collector.flush_interval_ms);
        log(
            LogLevel::Info,
            &format!(
                "ordertrace: service {:?}, {} routes, node {:?}",
                config.service,
                config.routes.len(),
                node_id
            ),
        );
        // Define every labelled metric the config can produce now, so each series starts at 0 and the
        // first error or transition after a restart is seen by rate() (a series born at 1 is not).
        let mut labelled: Vec<Labelled> = Vec::new();
        for r in &config.routes {
            labelled.push(Labelled::RouteRequests(r.span_name.clone()));
            labelled.push(Labelled::RouteErrors(r.span_name.clone()));
            labelled.push(Labelled::RouteDurationMs(r.span_name.clone()));
        }
        if config.lifecycle.enabled {
            for st in config
                .lifecycle
                .statuses
                .iter()
                .cloned()
                .chain(std::iter::once("other".to_string()))
            {
                labelled.push(Labelled::Transitions {
                    service: config.service.clone(),
                    status: st,
                });
            }
        }
        for m in &labelled {
            self.labelled_id(m);
        }
        self.worker = Some(Rc::new(RefCell::new(Worker::new(
            config, WasiRandom, &node_id,
        ))));
        let _ = hostcalls::set_tick_period(interval);
        true
    }

    fn on_tick(&mut self) {
        self.export();
        self.flush_metrics();
        crate::amqp_glue::on_tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            worker: self.worker.clone(),
            state: RequestState::default(),
        }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(crate::amqp_glue::new_stream(self.worker.clone()))
    }

    fn get_type(&self) -> Option<ContextType> {
        // An `amqp` section makes this plugin instance the network filter of a TCP proxy.
        let amqp = self
            .worker
            .as_ref()
            .and_then(|w| w.try_borrow().ok().map(|w| w.config.amqp.is_some()))
            .unwrap_or(false);
        Some(if amqp {
            ContextType::StreamContext
        } else {
            ContextType::HttpContext
        })
    }
}

/// One HTTP stream. Without a worker (configuration failed) it passes everything through untouched.
struct Stream {
    worker: Option<Shared>,
    state: RequestState,
}

/// The `StreamHost` over Envoy's ABI; counts host calls that failed.
#[derive(Default)]
struct Envoy {
    failures: u64,
}

impl Envoy {
    fn ok<T>(&mut self, r: Result<T, proxy_wasm::types::Status>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(_) => {
                self.failures += 1;
                None
            }
        }
    }
}

impl StreamHost for Envoy {
    fn request_headers(&mut self) -> HeaderMap {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer to a buffer it allocated through our
        // `proxy_on_memory_allocate` (a leaked Vec<u8> of exactly `size` bytes), which we now own.
        let status =
            unsafe { proxy_get_header_map_pairs(MAP_HTTP_REQUEST_HEADERS, &mut data, &mut size) };
        if status != 0 {
            self.failures += 1;
            return HeaderMap::default();
        }
        if data.is_null() || size == 0 {
            return HeaderMap::default();
        }
        // SAFETY: see above; ownership of the allocation passes to the Vec.
        HeaderMap::from_wire(unsafe { Vec::from_raw_parts(data, size, size) })
    }
    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        let r = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value));
        self.ok(r);
    }
    fn remove_request_header(&mut self, name: &str) {
        let r = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
        self.ok(r);
    }
    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        let r = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name);
        self.ok(r).flatten()
    }
    fn request_body(&mut self, start: usize, len: usize) -> Option<Vec<u8>> {
        let r = hostcalls::get_buffer(BufferType::HttpRequestBody, start, len);
        self.ok(r).flatten()
    }
    fn response_body(&mut self, start: usize, len: usize) -> Option<Vec<u8>> {
        let r = hostcalls::get_buffer(BufferType::HttpResponseBody, start, len);
        self.ok(r).flatten()
    }
    fn now_nanos(&mut self) -> u64 {
        now_nanos()
    }
    fn upstream_failure(&mut self) -> Option<String> {
        let r = hostcalls::get_property(vec!["response", "code_details"]);
        self.ok(r)
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
    fn shared_get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), cas)) => Some((v, cas.unwrap_or(0))),
            Ok((None, _)) => None,
            Err(_) => {
                self.failures += 1;
                None
            }
        }
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        let cas = if cas == 0 { None } else { Some(cas) };
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => true,
            Err(proxy_wasm::types::Status::CasMismatch) => false,
            Err(_) => {
                self.failures += 1;
                false
            }
        }
    }
}

impl Stream {
    /// Run one core callback with the worker borrowed; if it is unavailable the stream is left alone.
    fn with(&mut self, f: impl FnOnce(&mut RequestState, &mut Worker<WasiRandom>, &mut Envoy)) {
        let Some(shared) = &self.worker else { return };
        let Ok(mut w) = shared.try_borrow_mut() else {
            return;
        };
        let mut host = Envoy::default();
        f(&mut self.state, &mut w, &mut host);
        w.counters.request_failures += host.failures;
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.with(|s, w, h| s.on_request_headers(w, h, end_of_stream));
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(|s, w, h| s.on_request_body(w, h, body_size, end_of_stream));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.with(|s, w, h| s.on_response_headers(w, h, end_of_stream));
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(|s, w, h| s.on_response_body(w, h, body_size, end_of_stream));
        Action::Continue
    }

    fn on_log(&mut self) {
        self.with(|s, w, h| s.on_log(w, h));
    }
}
