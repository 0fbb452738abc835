//! proxy-wasm glue of the HTTP filter: Envoy's callbacks in, [`crate::filter`] out. Thin on purpose —
//! every decision lives in the filter and the core, which are tested natively; this file only moves bytes
//! across the ABI. The root context (configuration, export, metrics) is `ordertrace-proxy`'s.
//!
//! Host calls per traced request: 1 header-map read, 1 header write, 2 clock reads, 1 `:status` read,
//! plus body reads only for routes whose rules need a JSON body. Metrics and export run on the tick.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

use ordertrace::config::{Config, ConfigError};
use ordertrace::host::{HeaderMap, SharedData, StreamHost};
use ordertrace::metrics::Labelled;
use ordertrace::worker::Worker;
use ordertrace_proxy::{now_nanos, Plugin, Shared, WasiRandom};

use crate::filter::RequestState;

proxy_wasm::main! {{
    ordertrace_proxy::start::<Http>();
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

/// The HTTP filter as a plugin of the shared root context.
struct Http;

impl Plugin for Http {
    const CONTEXT_TYPE: ContextType = ContextType::HttpContext;

    fn configure(config: &Config) -> Result<Self, ConfigError> {
        if config.amqp.is_some() {
            return Err(ConfigError::new(
                "amqp",
                "is for the AMQP module (dist/ordertrace-amqp.wasm, envoy.filters.network.wasm); \
                 this is the HTTP module",
            ));
        }
        Ok(Http)
    }

    fn labelled_metrics(&self, config: &Config) -> Vec<Labelled> {
        let mut labelled = Vec::with_capacity(config.routes.len() * 3);
        for r in &config.routes {
            labelled.push(Labelled::RouteRequests(r.span_name.clone()));
            labelled.push(Labelled::RouteErrors(r.span_name.clone()));
            labelled.push(Labelled::RouteDurationMs(r.span_name.clone()));
        }
        labelled
    }

    fn http_context(
        _plugin: Option<&Self>,
        worker: Option<Shared>,
    ) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            worker,
            state: RequestState::default(),
        }))
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
}

impl SharedData for Envoy {
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
