//! # A proxy-wasm host for contract tests (plays Envoy, runs on wasmtime)
//!
//! Loads a built filter (`dist/ordertrace.wasm`: `wasm32-wasip1` cdylib, proxy-wasm Rust SDK 0.2.5,
//! ABI `proxy_abi_version_0_2_1`) and drives it the way Envoy does, deterministically: a fixed
//! clock that only the test moves, `random_get` from a per-test seed, no network, no globals.
//! Every test builds its own [`Host`] (its own wasmtime `Store` and instance), so tests run in
//! parallel. Only the compiled `Module` is shared, cached per test binary.
//!
//! ## Driving it
//!
//! ```ignore
//! let mut host = Host::new(wasm_path, HostOptions { fuel: true, seed: 7, ..HostOptions::default() })?;
//! assert!(host.start_vm(b"")?);                       // proxy_on_context_create(root) + proxy_on_vm_start
//! assert!(host.configure(r#"{"service":"shop"}"#)?);  // proxy_on_configure; false = config rejected
//!
//! let s = host.new_http_stream()?;                    // proxy_on_context_create(stream, root)
//! host.request_headers(s, &[(":method", "POST"), (":path", "/api/orders")], false)?;
//! host.request_body(s, br#"{"status":"NEW"}"#, true)?;
//! host.response_headers(s, &[(":status", "201")], false)?;
//! host.response_body(s, br#"{"id":"o-1"}"#, true)?;
//! host.finish(s)?;                                    // proxy_on_log, proxy_on_done, proxy_on_delete
//!
//! let stream = host.stream(s).unwrap();
//! stream.request.forwarded_headers.as_ref().unwrap().get("traceparent");  // what went upstream
//! assert_eq!(stream.request.forwarded_body, stream.request.received_body); // body untouched
//!
//! host.advance_clock(1_000);                          // ms, moves both WASI clocks and proxy time
//! host.tick()?;                                       // proxy_on_tick (needs a tick period set)
//! let call = host.pending_http_calls()[0].clone();    // what proxy_http_call sent
//! host.respond_http_call(call.token, 200, &[], b"")?; // or 503, timeout_http_call, fail_http_call
//! assert_eq!(host.counter("ordertrace_spans_exported"), Some(1));
//! assert!(host.violations().is_empty());              // no call Envoy would have refused
//! ```
//!
//! Every driving method returns `Result<_, HostError>`. An error means the guest trapped (an SDK
//! `panic!` on an unexpected status, `unreachable`, out of fuel), called an import this host does
//! not implement, or the test misused the host. The message names the callback, the trap, the
//! last critical log (the SDK's panic hook logs the panic message there) and unknown imports.
//! After a trap the VM is dead, as in Envoy: every later call fails.
//!
//! ## Envoy behaviour reproduced (checked against Envoy `context.cc` and proxy-wasm-cpp-host)
//!
//! * Header maps: keys lowercased; `get` returns the first value. Envoy only holds a map while
//!   the filter may touch it: the request headers exist during `on_request_headers` and stay
//!   only if it returned Pause; once a headers callback returns Continue the map is gone.
//!   Reading a gone map with `proxy_get_header_map_value` answers **BadArgument** (the SDK then
//!   panics), `proxy_get_header_map_pairs` answers Ok with an **empty** map, and writes answer
//!   BadArgument. So reading request headers in a response callback (or even in a request body
//!   callback after headers returned Continue) fails. Each such call is recorded as a
//!   [`Violation`] (with the map and callback); `on_log` can read all maps (the access-log phase).
//! * Bodies: `body_size` is the bytes Envoy holds for the filter: the current chunk, or every
//!   chunk so far while the filter keeps returning Pause (buffering, Envoy >= 1.32). Continue
//!   passes the held bytes on (`forwarded_body`). Pause in a headers callback is StopAllIteration:
//!   body callbacks wait until `proxy_continue_stream`.
//! * `proxy_http_call` needs `:method`, `:path`, `:authority`, a timeout that fits an `int`, and a
//!   known cluster (when [`HostOptions::clusters`] is non-empty), else BadArgument. Responses are
//!   delivered to the root context (`proxy_on_http_call_response(root, token, headers, body,
//!   trailers)`); during that callback the call-response maps and body are readable. A reset
//!   ([`Host::fail_http_call`]) delivers 0 headers, 0 body, and then reading the response headers
//!   is BadArgument. A timeout in Envoy is a 504 from the async client ([`Host::timeout_http_call`]).
//! * Network filters (`envoy.filters.network.wasm` before `tcp_proxy`): [`Host::new_connection`]
//!   (`proxy_on_context_create` + `proxy_on_new_connection`), [`Host::downstream_data`] /
//!   [`Host::upstream_data`] (`proxy_on_downstream_data` / `proxy_on_upstream_data` with the size
//!   of everything Envoy holds), [`Host::close_connection`] (end of stream, both close callbacks,
//!   then log/done/delete). The `DownstreamData` / `UpstreamData` buffers exist only during their
//!   callback (NotFound otherwise); `proxy_set_buffer_bytes` on them works like on bodies
//!   (`start == 0`: drain `size`, prepend). Continue sends everything held on ([`Net`]'s
//!   `forwarded_*`), Pause (StopIteration) keeps it and the next read is appended to it.
//! * Metrics: ids carry the type in the low 2 bits; incrementing a counter by <= 0 is BadArgument;
//!   recording on a counter adds; histograms cannot be read.
//! * WASI: stdout/stderr become info/error logs; `clock_time_get` serves realtime (0) and
//!   monotonic (1) from the test clock; `random_get` is a SplitMix64 stream from the seed;
//!   `proc_exit` traps. Envoy does not derive `request.*` properties from the maps here: set the
//!   ones the filter reads with [`HostOptions::property`] or [`Host::set_stream_property`].
//!
//! ## Fuel
//!
//! With `fuel: true` the module is compiled with wasmtime fuel metering: every executed wasm
//! instruction costs 1 unit (a few, like `nop`/`block`, cost 0), host functions cost nothing,
//! but the guest allocator the host calls to return data is guest code and counts.
//! [`Host::fuel_consumed`] is exact and deterministic; [`Host::reset_fuel`] starts a new
//! measurement, e.g. around one request.

#![allow(dead_code)] // The API is broader than the cases written so far.

#[path = "host/abi.rs"]
mod abi;
#[path = "host/imports.rs"]
mod imports;
#[path = "host/state.rs"]
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use wasmtime::{Config, Engine, Instance, Module, Store, Trap, TypedFunc, WasmParams, WasmResults};

#[allow(unused_imports)] // Part of the API, used by some test files only.
pub use abi::{BufferType, LogLevel, MapType, MetricKind, Status, StreamType};
#[allow(unused_imports)]
pub use state::{
    CallResponse, CallState, Callback, Half, HeaderMap, HttpCall, LocalResponse, LogEntry, Metric,
    Net, Stream, Violation,
};

use state::{AfterCall, HostState};

/// What a filter callback answered (`proxy_wasm::types::Action`; Envoy maps Pause to
/// StopIteration / StopIterationAndBuffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
    /// Another ABI value (2 = StopAllIterationAndBuffer, 3 = ...AndWatermark ...).
    Other(u32),
}

impl Action {
    fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Continue,
            1 => Self::Pause,
            other => Self::Other(other),
        }
    }
}

/// Handle of an HTTP stream (its proxy-wasm context id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

/// How the host is set up. `HostOptions::default()` is a plain Envoy sidecar at a fixed time.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Meter fuel (exact executed-instruction count), see [`Host::fuel_consumed`].
    pub fuel: bool,
    /// Seed of `random_get` (trace and span ids of the guest come from here).
    pub seed: u64,
    /// Served as property `node.id` (Envoy's node id).
    pub node_id: String,
    /// More properties: path segments and the raw value (strings as UTF-8 bytes, integers as
    /// 8-byte little-endian, as Envoy serialises them).
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    /// Clusters `proxy_http_call` may target; empty = any name is accepted.
    pub clusters: Vec<String>,
    /// What `proxy_get_log_level` answers (Envoy's default is info). All logs are captured anyway.
    pub log_level: LogLevel,
    /// Initial wall clock in ns since the Unix epoch.
    pub start_time_ns: u64,
    /// Environment for `environ_get` (Envoy passes none by default).
    pub env: Vec<(String, String)>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            fuel: false,
            seed: 1,
            node_id: "test-node".into(),
            properties: Vec::new(),
            clusters: Vec::new(),
            log_level: LogLevel::Info,
            // 2025-01-01T00:00:00Z
            start_time_ns: 1_735_689_600_000_000_000,
            env: Vec::new(),
        }
    }
}

impl HostOptions {
    /// Adds a property, e.g. `.property(&["request", "id"], "r-1")`.
    pub fn property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((
            path.iter().map(|s| (*s).to_string()).collect(),
            value.into(),
        ));
        self
    }
}

/// Why a host call failed. The message says what happened and where; Debug prints it as is so
/// that `unwrap()` in a test shows a readable failure.
pub struct HostError {
    pub message: String,
    /// The guest trapped (as opposed to a misuse of the host).
    pub trapped: bool,
}

impl HostError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            trapped: false,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

/// Fuel given to the store; far more than any test uses, and never runs out in practice.
const FUEL_BUDGET: u64 = 1 << 60;

struct CachedModule {
    path: PathBuf,
    fuel: bool,
    stamp: (u64, Option<SystemTime>),
    engine: Engine,
    module: Module,
}

/// Compiled modules, shared by the tests of one binary (compiling is the slow part). Keyed by
/// path, fuel metering, and the file's size and mtime, so a rebuilt filter is recompiled.
fn compiled(path: &Path, fuel: bool) -> Result<(Engine, Module), HostError> {
    static CACHE: OnceLock<Mutex<Vec<CachedModule>>> = OnceLock::new();
    let meta = std::fs::metadata(path)
        .map_err(|e| HostError::usage(format!("{} cannot be read: {e}", path.display())))?;
    let stamp = (meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    // A test that panicked while holding the lock leaves a usable cache behind.
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = cache
        .iter()
        .find(|c| c.path == path && c.fuel == fuel && c.stamp == stamp)
    {
        return Ok((hit.engine.clone(), hit.module.clone()));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| HostError::usage(format!("{} cannot be read: {e}", path.display())))?;
    let mut config = Config::new();
    config.consume_fuel(fuel);
    let engine =
        Engine::new(&config).map_err(|e| HostError::usage(format!("wasmtime engine: {e:#}")))?;
    let module = Module::new(&engine, &bytes)
        .map_err(|e| HostError::usage(format!("{} does not compile: {e:#}", path.display())))?;
    cache.push(CachedModule {
        path: path.to_path_buf(),
        fuel,
        stamp,
        engine: engine.clone(),
        module: module.clone(),
    });
    Ok((engine, module))
}

/// The test's Envoy: one VM with one root context and any number of HTTP streams.
pub struct Host {
    store: Store<HostState>,
    instance: Instance,
    fuel: bool,
    fuel_mark: u64,
    unimplemented: Vec<String>,
    crashed: Option<String>,
    vm_started: bool,
}

impl Host {
    /// Compiles (once per binary) and instantiates the filter, links the host functions and runs
    /// the WASI reactor's `_initialize`. Fails when the module does not speak ABI 0.2.1.
    pub fn new(wasm: impl AsRef<Path>, opts: HostOptions) -> Result<Self, HostError> {
        let path = wasm.as_ref();
        if !path.exists() {
            return Err(HostError::usage(format!("{} is missing", path.display())));
        }
        let (engine, module) = compiled(path, opts.fuel)?;
        if module.get_export("proxy_abi_version_0_2_1").is_none() {
            let abis: Vec<String> = module
                .exports()
                .map(|e| e.name().to_string())
                .filter(|n| n.starts_with("proxy_abi_version"))
                .collect();
            return Err(HostError::usage(format!(
                "{} does not export proxy_abi_version_0_2_1 (ABI exports: {abis:?})",
                path.display()
            )));
        }
        let mut properties = BTreeMap::new();
        properties.insert(
            vec!["node".to_string(), "id".to_string()],
            opts.node_id.clone().into_bytes(),
        );
        for (k, v) in opts.properties {
            properties.insert(k, v);
        }
        let state = HostState::new(
            opts.seed,
            opts.start_time_ns,
            opts.log_level,
            opts.env,
            opts.clusters,
            properties,
        );
        let mut store = Store::new(&engine, state);
        if opts.fuel {
            store
                .set_fuel(FUEL_BUDGET)
                .map_err(|e| HostError::usage(format!("set_fuel: {e:#}")))?;
        }
        let (externs, unimplemented) =
            imports::resolve(&mut store, module.imports().collect()).map_err(HostError::usage)?;
        let instance = Instance::new(&mut store, &module, &externs)
            .map_err(|e| HostError::usage(format!("instantiating {}: {e:#}", path.display())))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| HostError::usage(format!("{} exports no memory", path.display())))?;
        let allocator = ["malloc", "proxy_on_memory_allocate"]
            .iter()
            .find_map(|name| instance.get_typed_func::<u32, u32>(&mut store, name).ok())
            .ok_or_else(|| {
                HostError::usage(format!(
                    "{} exports neither malloc nor proxy_on_memory_allocate (i32) -> i32",
                    path.display()
                ))
            })?;
        store.data_mut().memory = Some(memory);
        store.data_mut().allocator = Some(allocator);
        let mut host = Self {
            store,
            instance,
            fuel: opts.fuel,
            fuel_mark: FUEL_BUDGET,
            unimplemented,
            crashed: None,
            vm_started: false,
        };
        // cpp-host: `_initialize` for reactors, else `_start`.
        if host.export_exists("_initialize") {
            host.call::<(), ()>(Callback::Initialize, 0, "_initialize", ())?;
        } else if host.export_exists("_start") {
            host.call::<(), ()>(Callback::Initialize, 0, "_start", ())?;
        }
        Ok(host)
    }

    /// Creates the root context and calls `proxy_on_vm_start` with `vm_config` as the VM
    /// configuration buffer. Returns the guest's verdict.
    pub fn start_vm(&mut self, vm_config: &[u8]) -> Result<bool, HostError> {
        if self.vm_started {
            return Err(HostError::usage("start_vm called twice"));
        }
        self.store.data_mut().vm_config = vm_config.to_vec();
        let root = self.root_id();
        self.call::<(u32, u32), ()>(
            Callback::ContextCreate,
            root,
            "proxy_on_context_create",
            (root, 0),
        )?;
        self.vm_started = true;
        let size = abi::len_u32(vm_config.len());
        let ok = self
            .call_opt::<(u32, u32), u32>(
                Callback::VmStart,
                root,
                "proxy_on_vm_start",
                (root, size),
            )?
            .unwrap_or(1);
        Ok(ok != 0)
    }

    /// Calls `proxy_on_configure` with the plugin configuration. Returns the guest's verdict
    /// (false = Envoy rejects the configuration).
    pub fn configure(&mut self, plugin_config: &str) -> Result<bool, HostError> {
        self.require_vm()?;
        self.store.data_mut().plugin_config = Some(plugin_config.as_bytes().to_vec());
        let root = self.root_id();
        let size = abi::len_u32(plugin_config.len());
        let result = self.call_opt::<(u32, u32), u32>(
            Callback::Configure,
            root,
            "proxy_on_configure",
            (root, size),
        );
        self.store.data_mut().plugin_config = None;
        Ok(result?.unwrap_or(1) != 0)
    }

    /// New + start_vm + configure, failing unless both answered true.
    pub fn configured(
        wasm: impl AsRef<Path>,
        opts: HostOptions,
        plugin_config: &str,
    ) -> Result<Self, HostError> {
        let mut host = Self::new(wasm, opts)?;
        if !host.start_vm(b"")? {
            return Err(HostError::usage(format!(
                "proxy_on_vm_start returned false; logs: {:?}",
                host.logs()
            )));
        }
        if !host.configure(plugin_config)? {
            return Err(HostError::usage(format!(
                "proxy_on_configure returned false; logs: {:?}",
                host.logs()
            )));
        }
        Ok(host)
    }

    /// The root context id (Envoy allocates it first; here always 1).
    pub fn root_id(&self) -> u32 {
        self.store.data().root_id
    }

    // -- HTTP streams -------------------------------------------------------------------------

    /// Opens an HTTP stream: `proxy_on_context_create(id, root)`.
    pub fn new_http_stream(&mut self) -> Result<StreamId, HostError> {
        self.require_vm()?;
        let state = self.store.data_mut();
        let id = state.next_context_id;
        state.next_context_id += 1;
        state.streams.insert(
            id,
            Stream {
                context_id: id,
                ..Stream::default()
            },
        );
        let root = self.root_id();
        self.call::<(u32, u32), ()>(
            Callback::ContextCreate,
            id,
            "proxy_on_context_create",
            (id, root),
        )?;
        Ok(StreamId(id))
    }

    /// Delivers request headers: `proxy_on_request_headers(id, count, end_of_stream)`.
    pub fn request_headers(
        &mut self,
        s: StreamId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.headers(s, true, headers, end_of_stream)
    }

    /// Delivers one request body chunk: `proxy_on_request_body(id, body_size, end_of_stream)`.
    /// While the headers are stopped (Pause) the chunk is held and `Pause` is returned without
    /// calling the guest, as Envoy does.
    pub fn request_body(
        &mut self,
        s: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.body(s, true, chunk, end_of_stream)
    }

    /// Delivers request trailers: `proxy_on_request_trailers(id, count)`.
    pub fn request_trailers(
        &mut self,
        s: StreamId,
        trailers: &[(&str, &str)],
    ) -> Result<Action, HostError> {
        self.trailers(s, true, trailers)
    }

    /// Delivers response headers: `proxy_on_response_headers(id, count, end_of_stream)`.
    pub fn response_headers(
        &mut self,
        s: StreamId,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.headers(s, false, headers, end_of_stream)
    }

    /// Delivers one response body chunk: `proxy_on_response_body(id, body_size, end_of_stream)`.
    pub fn response_body(
        &mut self,
        s: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.body(s, false, chunk, end_of_stream)
    }

    /// Delivers response trailers: `proxy_on_response_trailers(id, count)`.
    pub fn response_trailers(
        &mut self,
        s: StreamId,
        trailers: &[(&str, &str)],
    ) -> Result<Action, HostError> {
        self.trailers(s, false, trailers)
    }

    /// The access-log phase: `proxy_on_log(id)`. All maps of the stream are readable here.
    pub fn log(&mut self, s: StreamId) -> Result<(), HostError> {
        let id = self.live_stream(s)?;
        self.call::<u32, ()>(Callback::Log, id, "proxy_on_log", id)?;
        if let Some(stream) = self.store.data_mut().streams.get_mut(&id) {
            stream.logged = true;
        }
        Ok(())
    }

    /// `proxy_on_done(id)`; returns the guest's answer.
    pub fn done(&mut self, s: StreamId) -> Result<bool, HostError> {
        let id = self.live_stream(s)?;
        let done = self
            .call_opt::<u32, u32>(Callback::Done, id, "proxy_on_done", id)?
            .unwrap_or(1)
            != 0;
        if let Some(stream) = self.store.data_mut().streams.get_mut(&id) {
            stream.done = Some(done);
        }
        Ok(done)
    }

    /// `proxy_on_delete(id)`. The stream's record stays readable through [`Host::stream`].
    pub fn delete(&mut self, s: StreamId) -> Result<(), HostError> {
        let id = self.live_stream(s)?;
        self.call::<u32, ()>(Callback::Delete, id, "proxy_on_delete", id)?;
        if let Some(stream) = self.store.data_mut().streams.get_mut(&id) {
            stream.deleted = true;
        }
        Ok(())
    }

    /// End of an HTTP stream in Envoy's order: access log, then filter destruction
    /// (`proxy_on_log`, `proxy_on_done`, `proxy_on_delete`).
    pub fn finish(&mut self, s: StreamId) -> Result<(), HostError> {
        self.log(s)?;
        self.done(s)?;
        self.delete(s)
    }

    /// A whole exchange in one call: request headers (+ body chunks), response headers (+ body
    /// chunks), then [`Host::finish`]. Empty chunk lists mean headers carry end_of_stream.
    pub fn exchange(
        &mut self,
        request: &[(&str, &str)],
        request_chunks: &[&[u8]],
        response: &[(&str, &str)],
        response_chunks: &[&[u8]],
    ) -> Result<StreamId, HostError> {
        let s = self.new_http_stream()?;
        self.request_headers(s, request, request_chunks.is_empty())?;
        for (i, chunk) in request_chunks.iter().enumerate() {
            self.request_body(s, chunk, i + 1 == request_chunks.len())?;
        }
        self.response_headers(s, response, response_chunks.is_empty())?;
        for (i, chunk) in response_chunks.iter().enumerate() {
            self.response_body(s, chunk, i + 1 == response_chunks.len())?;
        }
        self.finish(s)?;
        Ok(s)
    }

    // -- network connections (envoy.filters.network.wasm before tcp_proxy) --------------------

    /// Opens a TCP connection: `proxy_on_context_create(id, root)`, then
    /// `proxy_on_new_connection(id)` (Envoy's `onNewConnection`).
    pub fn new_connection(&mut self) -> Result<StreamId, HostError> {
        self.require_vm()?;
        let state = self.store.data_mut();
        let id = state.next_context_id;
        state.next_context_id += 1;
        state.streams.insert(
            id,
            Stream {
                context_id: id,
                net: Some(Net::default()),
                ..Stream::default()
            },
        );
        let root = self.root_id();
        self.call::<(u32, u32), ()>(
            Callback::ContextCreate,
            id,
            "proxy_on_context_create",
            (id, root),
        )?;
        self.call_opt::<u32, u32>(Callback::NewConnection, id, "proxy_on_new_connection", id)?;
        Ok(StreamId(id))
    }

    /// One read from the client: `proxy_on_downstream_data(id, size, end_of_stream)` where
    /// `size` is everything Envoy holds (earlier bytes kept by Pause, then these). Continue
    /// passes all of it upstream (`Net::forwarded_upstream`), Pause keeps it.
    pub fn downstream_data(
        &mut self,
        c: StreamId,
        bytes: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.net_data(c, true, bytes, end_of_stream)
    }

    /// One read from the server: `proxy_on_upstream_data(id, size, end_of_stream)`; Continue
    /// passes the bytes on to the client (`Net::forwarded_downstream`).
    pub fn upstream_data(
        &mut self,
        c: StreamId,
        bytes: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.net_data(c, false, bytes, end_of_stream)
    }

    /// The client closes: the end of stream reaches the filter with whatever Envoy still holds,
    /// then `proxy_on_downstream_connection_close(id, Remote)`, `tcp_proxy` closes the upstream
    /// (`proxy_on_upstream_connection_close(id, Local)`), and the filter is destroyed
    /// (`proxy_on_log`, `proxy_on_done`, `proxy_on_delete`).
    pub fn close_connection(&mut self, c: StreamId) -> Result<(), HostError> {
        const PEER_LOCAL: u32 = 1;
        const PEER_REMOTE: u32 = 2;
        self.downstream_data(c, &[], true)?;
        let id = self.live_stream(c)?;
        self.call_opt::<(u32, u32), ()>(
            Callback::DownstreamClose,
            id,
            "proxy_on_downstream_connection_close",
            (id, PEER_REMOTE),
        )?;
        self.call_opt::<(u32, u32), ()>(
            Callback::UpstreamClose,
            id,
            "proxy_on_upstream_connection_close",
            (id, PEER_LOCAL),
        )?;
        self.net_mut(id)?.closed = true;
        self.finish(c)
    }

    /// The connection's record (bytes in and out in both directions).
    pub fn connection(&self, c: StreamId) -> Option<&Net> {
        self.stream(c).and_then(|s| s.net.as_ref())
    }

    fn net_mut(&mut self, id: u32) -> Result<&mut Net, HostError> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id)
            .and_then(|s| s.net.as_mut())
            .ok_or_else(|| HostError::usage(format!("context {id} is not a network connection")))
    }

    fn net_data(
        &mut self,
        c: StreamId,
        downstream: bool,
        bytes: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let id = self.live_stream(c)?;
        let net = self.net_mut(id)?;
        if net.closed {
            return Err(HostError::usage(format!("connection {id} is closed")));
        }
        let size = if downstream {
            net.downstream_received.extend_from_slice(bytes);
            net.downstream_buffer.extend_from_slice(bytes);
            net.downstream_live = true;
            net.downstream_sizes.push(net.downstream_buffer.len());
            net.downstream_buffer.len()
        } else {
            net.upstream_received.extend_from_slice(bytes);
            net.upstream_buffer.extend_from_slice(bytes);
            net.upstream_live = true;
            net.upstream_sizes.push(net.upstream_buffer.len());
            net.upstream_buffer.len()
        };
        let (callback, export) = if downstream {
            (Callback::DownstreamData, "proxy_on_downstream_data")
        } else {
            (Callback::UpstreamData, "proxy_on_upstream_data")
        };
        let args = (id, abi::len_u32(size), u32::from(end_of_stream));
        let result = self.call_opt::<(u32, u32, u32), u32>(callback, id, export, args);
        let net = self.net_mut(id)?;
        net.downstream_live = false;
        net.upstream_live = false;
        let action = result?.map_or(Action::Continue, Action::from_u32);
        let (buffer, out) = if downstream {
            (&mut net.downstream_buffer, &mut net.forwarded_upstream)
        } else {
            (&mut net.upstream_buffer, &mut net.forwarded_downstream)
        };
        match action {
            Action::Continue => out.append(buffer),
            _ => net.pauses += 1,
        }
        Ok(action)
    }

    /// Everything the host knows about a stream (also after delete).
    pub fn stream(&self, s: StreamId) -> Option<&Stream> {
        self.store.data().streams.get(&s.0)
    }

    /// Drops the host's record of a deleted stream, so that long runs (100 000 requests) keep
    /// the test's own memory flat. Returns false if the stream is unknown or still live.
    pub fn forget_stream(&mut self, s: StreamId) -> bool {
        let streams = &mut self.store.data_mut().streams;
        if streams.get(&s.0).is_some_and(|st| st.deleted) {
            streams.remove(&s.0);
            true
        } else {
            false
        }
    }

    /// Sets a property visible while this stream is the current context (e.g.
    /// `["request", "path"]`, `["response", "code"]` as 8-byte LE int, `["response", "flags"]`).
    pub fn set_stream_property(&mut self, s: StreamId, path: &[&str], value: impl Into<Vec<u8>>) {
        if let Some(stream) = self.store.data_mut().streams.get_mut(&s.0) {
            stream.properties.insert(
                path.iter().map(|p| (*p).to_string()).collect(),
                value.into(),
            );
        }
    }

    /// Sets or replaces a VM-wide property.
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        self.store.data_mut().properties.insert(
            path.iter().map(|p| (*p).to_string()).collect(),
            value.into(),
        );
    }

    // -- timers and clock ---------------------------------------------------------------------

    /// `proxy_on_tick(root)`. Fails if the guest never set a tick period (Envoy would not tick).
    pub fn tick(&mut self) -> Result<(), HostError> {
        self.require_vm()?;
        if self.tick_period_ms() == 0 {
            return Err(HostError::usage(
                "tick(): the guest set no tick period, Envoy would never call proxy_on_tick",
            ));
        }
        let root = self.root_id();
        self.call::<u32, ()>(Callback::Tick, root, "proxy_on_tick", root)
    }

    /// The period the guest set with `proxy_set_tick_period_milliseconds` (0 = none).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    /// Moves the wall clock and the monotonic clock forward.
    pub fn advance_clock(&mut self, ms: u64) {
        let state = self.store.data_mut();
        let ns = ms.saturating_mul(1_000_000);
        state.realtime_ns = state.realtime_ns.saturating_add(ns);
        state.monotonic_ns = state.monotonic_ns.saturating_add(ns);
    }

    /// Wall clock, ns since the Unix epoch (what `proxy_get_current_time_nanoseconds` answers).
    pub fn now_ns(&self) -> u64 {
        self.store.data().realtime_ns
    }

    // -- outgoing HTTP calls -----------------------------------------------------------------

    /// Every HTTP call the guest dispatched, in order.
    pub fn http_calls(&self) -> &[HttpCall] {
        &self.store.data().calls
    }

    /// Calls not answered yet.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.http_calls()
            .iter()
            .filter(|c| c.state == CallState::Pending)
            .cloned()
            .collect()
    }

    /// Answers a call: `:status` plus `headers`, `body`; calls `proxy_on_http_call_response`.
    pub fn respond_http_call(
        &mut self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let mut map = HeaderMap::from_pairs(&[(":status", &status.to_string())]);
        for (k, v) in headers {
            map.add(k, v);
        }
        if !body.is_empty() && !map.contains("content-length") {
            map.add("content-length", &body.len().to_string());
        }
        self.deliver_call(
            token,
            Some(CallResponse {
                headers: map,
                body: body.to_vec(),
                trailers: HeaderMap::default(),
            }),
        )
    }

    /// What Envoy's async client delivers when the call's timeout fires: a local 504.
    pub fn timeout_http_call(&mut self, token: u32) -> Result<(), HostError> {
        self.respond_http_call(
            token,
            504,
            &[("content-type", "text/plain")],
            b"upstream request timeout",
        )
    }

    /// A reset call: `proxy_on_http_call_response(root, token, 0, 0, 0)` with no response
    /// (reading its headers is then BadArgument, its body NotFound).
    pub fn fail_http_call(&mut self, token: u32) -> Result<(), HostError> {
        self.deliver_call(token, None)
    }

    fn deliver_call(
        &mut self,
        token: u32,
        response: Option<CallResponse>,
    ) -> Result<(), HostError> {
        self.require_vm()?;
        let (headers, body, trailers) = match &response {
            Some(r) => (r.headers.len(), r.body.len(), r.trailers.len()),
            None => (0, 0, 0),
        };
        if imports::answer_call(self.store.data_mut(), token, response).is_none() {
            return Err(HostError::usage(format!(
                "no pending HTTP call with token {token}"
            )));
        }
        let root = self.root_id();
        let args = (
            root,
            token,
            abi::len_u32(headers),
            abi::len_u32(body),
            abi::len_u32(trailers),
        );
        let result = self.call::<(u32, u32, u32, u32, u32), ()>(
            Callback::HttpCallResponse,
            root,
            "proxy_on_http_call_response",
            args,
        );
        self.store.data_mut().call_response = None;
        result
    }

    // -- observations -------------------------------------------------------------------------

    pub fn logs(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    /// Log messages containing `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<&LogEntry> {
        self.logs()
            .iter()
            .filter(|l| l.message.contains(needle))
            .collect()
    }

    /// Guest calls Envoy would have refused (BadArgument, InvalidMemoryAccess) or answered with
    /// nothing because the map is gone. A well-behaved filter has none.
    pub fn violations(&self) -> &[Violation] {
        &self.store.data().violations
    }

    /// The Envoy trap this suite guards: request maps touched during response callbacks.
    pub fn request_map_access_in_response_phase(&self) -> Vec<&Violation> {
        self.violations()
            .iter()
            .filter(|v| v.callback.is_response_phase() && v.map.is_some_and(MapType::is_request))
            .collect()
    }

    /// Imports the module declares that this host does not implement (linked to trapping stubs).
    pub fn unimplemented_imports(&self) -> &[String] {
        &self.unimplemented
    }

    /// Metrics the guest defined.
    pub fn metrics(&self) -> &[Metric] {
        &self.store.data().metrics
    }

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics().iter().find(|m| m.name == name)
    }

    /// A counter's value (None when the guest never defined it).
    pub fn counter(&self, name: &str) -> Option<i64> {
        self.metrics()
            .iter()
            .find(|m| m.name == name && m.kind == MetricKind::Counter)
            .map(|m| m.value)
    }

    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.metrics()
            .iter()
            .find(|m| m.name == name && m.kind == MetricKind::Gauge)
            .map(|m| m.value)
    }

    pub fn histogram(&self, name: &str) -> Option<&[u64]> {
        self.metrics()
            .iter()
            .find(|m| m.name == name && m.kind == MetricKind::Histogram)
            .map(|m| m.samples.as_slice())
    }

    /// Shared data value and CAS.
    pub fn shared_data(&self, key: &str) -> Option<(&[u8], u32)> {
        self.store
            .data()
            .shared
            .get(key)
            .map(|(v, cas)| (v.as_slice(), *cas))
    }

    /// Sets shared data from the test (as another VM would).
    pub fn set_shared_data(&mut self, key: &str, value: &[u8]) {
        let _ = self
            .store
            .data_mut()
            .shared_set(key.to_string(), value.to_vec(), 0);
    }

    /// Times the guest called `proxy_done`.
    pub fn proxy_done_calls(&self) -> u32 {
        self.store.data().done_calls
    }

    /// gRPC calls the guest attempted (this host refuses them with InternalFailure).
    pub fn grpc_attempts(&self) -> u32 {
        self.store.data().grpc_attempts
    }

    /// Size of the guest's linear memory in bytes (it only grows).
    pub fn memory_bytes(&self) -> u64 {
        self.store
            .data()
            .memory
            .map(|m| m.data_size(&self.store) as u64)
            .unwrap_or(0)
    }

    /// Executed wasm instructions since the host was created or [`Host::reset_fuel`] was called.
    /// Always 0 without `fuel: true`.
    pub fn fuel_consumed(&self) -> u64 {
        if !self.fuel {
            return 0;
        }
        let left = self.store.get_fuel().unwrap_or(self.fuel_mark);
        self.fuel_mark.saturating_sub(left)
    }

    /// Starts a new fuel measurement.
    pub fn reset_fuel(&mut self) {
        if self.fuel {
            self.fuel_mark = self.store.get_fuel().unwrap_or(FUEL_BUDGET);
        }
    }

    /// Why the VM died, if it did.
    pub fn crashed(&self) -> Option<&str> {
        self.crashed.as_deref()
    }

    // -- internals ----------------------------------------------------------------------------

    fn require_vm(&self) -> Result<(), HostError> {
        if !self.vm_started {
            return Err(HostError::usage("start_vm() first"));
        }
        Ok(())
    }

    fn live_stream(&self, s: StreamId) -> Result<u32, HostError> {
        match self.stream(s) {
            Some(stream) if !stream.deleted => Ok(s.0),
            Some(_) => Err(HostError::usage(format!("stream {} was deleted", s.0))),
            None => Err(HostError::usage(format!("no stream {}", s.0))),
        }
    }

    fn export_exists(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    fn headers(
        &mut self,
        s: StreamId,
        request: bool,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let id = self.live_stream(s)?;
        let state = self.store.data_mut();
        let Some(half) = state.streams.get_mut(&id).map(|st| st.half_mut(request)) else {
            return Err(HostError::usage(format!("no stream {id}")));
        };
        if half.headers.is_some() {
            return Err(HostError::usage(format!(
                "stream {id}: {} headers delivered twice",
                direction(request)
            )));
        }
        half.headers = Some(HeaderMap::from_pairs(headers));
        half.headers_live = true;
        half.end_of_stream = end_of_stream;
        let (callback, export) = if request {
            (Callback::RequestHeaders, "proxy_on_request_headers")
        } else {
            (Callback::ResponseHeaders, "proxy_on_response_headers")
        };
        let count = abi::len_u32(headers.len());
        let action = self
            .call_opt::<(u32, u32, u32), u32>(
                callback,
                id,
                export,
                (id, count, u32::from(end_of_stream)),
            )?
            .map_or(Action::Continue, Action::from_u32);
        let half = self.half_mut(id, request)?;
        if action == Action::Continue {
            half.headers_live = false;
            half.forward_headers();
        } else if !half.resumed {
            half.stopped_all = true;
        }
        Ok(action)
    }

    fn body(
        &mut self,
        s: StreamId,
        request: bool,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let id = self.live_stream(s)?;
        let half = self.half_mut(id, request)?;
        if half.headers.is_none() {
            return Err(HostError::usage(format!(
                "stream {id}: {} body before headers",
                direction(request)
            )));
        }
        half.received_body.extend_from_slice(chunk);
        if half.stopped_all {
            half.held_body.extend_from_slice(chunk);
            half.held_end_of_stream = end_of_stream;
            return Ok(Action::Pause);
        }
        self.call_body(id, request, chunk.to_vec(), end_of_stream)
    }

    fn call_body(
        &mut self,
        id: u32,
        request: bool,
        chunk: Vec<u8>,
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let half = self.half_mut(id, request)?;
        half.buffer.extend_from_slice(&chunk);
        half.body_live = true;
        half.end_of_stream = end_of_stream;
        let size = half.buffer.len();
        half.body_sizes.push(size);
        let (callback, export) = if request {
            (Callback::RequestBody, "proxy_on_request_body")
        } else {
            (Callback::ResponseBody, "proxy_on_response_body")
        };
        let args = (id, abi::len_u32(size), u32::from(end_of_stream));
        let action = self
            .call_opt::<(u32, u32, u32), u32>(callback, id, export, args)?
            .map_or(Action::Continue, Action::from_u32);
        let half = self.half_mut(id, request)?;
        match action {
            Action::Continue => half.forward_buffer(),
            Action::Pause => {
                half.buffering = true;
                half.body_live = false;
            }
            Action::Other(_) => half.body_live = false,
        }
        Ok(action)
    }

    fn trailers(
        &mut self,
        s: StreamId,
        request: bool,
        trailers: &[(&str, &str)],
    ) -> Result<Action, HostError> {
        let id = self.live_stream(s)?;
        let half = self.half_mut(id, request)?;
        if half.headers.is_none() {
            return Err(HostError::usage(format!(
                "stream {id}: {} trailers before headers",
                direction(request)
            )));
        }
        half.trailers = Some(HeaderMap::from_pairs(trailers));
        half.trailers_live = true;
        half.end_of_stream = true;
        if half.stopped_all {
            return Ok(Action::Pause);
        }
        let (callback, export) = if request {
            (Callback::RequestTrailers, "proxy_on_request_trailers")
        } else {
            (Callback::ResponseTrailers, "proxy_on_response_trailers")
        };
        let args = (id, abi::len_u32(trailers.len()));
        let action = self
            .call_opt::<(u32, u32), u32>(callback, id, export, args)?
            .map_or(Action::Continue, Action::from_u32);
        let half = self.half_mut(id, request)?;
        if action == Action::Continue {
            half.trailers_live = false;
            half.forward_buffer();
            half.forwarded_trailers = half.trailers.clone();
        }
        Ok(action)
    }

    fn half_mut(&mut self, id: u32, request: bool) -> Result<&mut Half, HostError> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id)
            .map(|s| s.half_mut(request))
            .ok_or_else(|| HostError::usage(format!("no stream {id}")))
    }

    /// Runs what Envoy defers until the VM call returns: resuming a stopped stream passes the
    /// held headers and body on (calling the body callback with what was held).
    fn run_after_call(&mut self) -> Result<(), HostError> {
        let actions = std::mem::take(&mut self.store.data_mut().after_call);
        for action in actions {
            let AfterCall::Resume {
                context_id,
                request,
            } = action;
            let half = self.half_mut(context_id, request)?;
            half.stopped_all = false;
            half.forward_buffer();
            let held = std::mem::take(&mut half.held_body);
            let eos = half.held_end_of_stream;
            if !held.is_empty() {
                self.call_body(context_id, request, held, eos)?;
            }
        }
        Ok(())
    }

    fn call<P, R>(
        &mut self,
        callback: Callback,
        context: u32,
        export: &str,
        params: P,
    ) -> Result<R, HostError>
    where
        P: WasmParams,
        R: WasmResults,
    {
        self.call_opt(callback, context, export, params)?
            .ok_or_else(|| HostError::usage(format!("the module does not export `{export}`")))
    }

    /// Calls an export if the module has it (`Ok(None)` otherwise, which Envoy treats as the
    /// default answer), with the Envoy phase set for the host functions.
    fn call_opt<P, R>(
        &mut self,
        callback: Callback,
        context: u32,
        export: &str,
        params: P,
    ) -> Result<Option<R>, HostError>
    where
        P: WasmParams,
        R: WasmResults,
    {
        if let Some(why) = &self.crashed {
            return Err(HostError::usage(format!(
                "{export}: the VM crashed earlier: {why}"
            )));
        }
        let Some(func) = self.instance.get_func(&mut self.store, export) else {
            return Ok(None);
        };
        let typed: TypedFunc<P, R> = func.typed(&self.store).map_err(|e| {
            HostError::usage(format!(
                "export `{export}` has an unexpected signature: {e:#}"
            ))
        })?;
        {
            let state = self.store.data_mut();
            state.callback = callback;
            state.callee = context;
            state.effective = 0;
        }
        let result = typed.call(&mut self.store, params);
        {
            let state = self.store.data_mut();
            state.callback = Callback::Idle;
            state.callee = 0;
            state.effective = 0;
        }
        match result {
            Ok(value) => {
                self.run_after_call()?;
                Ok(Some(value))
            }
            Err(err) => {
                let message = self.describe_trap(callback, context, export, &err);
                self.crashed = Some(message.clone());
                Err(HostError {
                    message,
                    trapped: true,
                })
            }
        }
    }

    fn describe_trap(
        &self,
        callback: Callback,
        context: u32,
        export: &str,
        err: &wasmtime::Error,
    ) -> String {
        let mut message = format!("{export}(context {context}, {callback:?}) trapped");
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => message.push_str(": out of fuel"),
            Some(trap) => message.push_str(&format!(": {trap}")),
            None => message.push_str(&format!(": {err}")),
        }
        let state = self.store.data();
        if !state.unknown_called.is_empty() {
            message.push_str(&format!(
                "; it called imports the test host does not provide: {:?}",
                state.unknown_called
            ));
        }
        if let Some(last) = state
            .logs
            .iter()
            .rev()
            .find(|l| l.level == LogLevel::Critical)
        {
            message.push_str(&format!("; last critical log: {}", last.message));
        }
        if let Some(v) = state.violations.last() {
            message.push_str(&format!(
                "; last refused call: {} -> {} ({})",
                v.import, v.status, v.detail
            ));
        }
        message.push_str(&format!("\nwasm error: {err:?}"));
        message
    }
}

fn direction(request: bool) -> &'static str {
    if request {
        "request"
    } else {
        "response"
    }
}
