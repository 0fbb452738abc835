//! What the test host (playing Envoy) knows: streams and their header maps and bodies, properties,
//! shared data, metrics, timers, outgoing HTTP calls, logs, and the ABI violations it saw.
//! Pure Rust, no wasmtime calls: `imports.rs` translates guest calls into these operations.

use std::collections::BTreeMap;

use wasmtime::{Memory, TypedFunc};

use super::abi::{BufferType, LogLevel, MapType, MetricKind, Status};

/// Which guest callback the host is running (the Envoy phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Callback {
    /// No guest code running (between host calls).
    Idle,
    /// `_initialize` (WASI reactor constructors, `proxy_wasm::main!`).
    Initialize,
    ContextCreate,
    VmStart,
    Configure,
    Tick,
    HttpCallResponse,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    Log,
    Done,
    Delete,
    /// Network filter (`envoy.filters.network.wasm`) callbacks.
    NewConnection,
    DownstreamData,
    UpstreamData,
    DownstreamClose,
    UpstreamClose,
}

impl Callback {
    /// The response-path callbacks, during which Envoy no longer holds the request header map.
    pub fn is_response_phase(self) -> bool {
        matches!(
            self,
            Self::ResponseHeaders | Self::ResponseBody | Self::ResponseTrailers
        )
    }
}

/// A header map as Envoy holds it: keys lowercased, order kept, duplicates allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    pairs: Vec<(String, String)>,
}

impl HeaderMap {
    /// Builds a map the way Envoy's codecs do (keys lowercased).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut map = Self::default();
        for (k, v) in pairs {
            map.add(k, v);
        }
        map
    }

    pub(crate) fn from_bytes_pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let mut map = Self::default();
        for (k, v) in pairs {
            map.add(&String::from_utf8_lossy(&k), &String::from_utf8_lossy(&v));
        }
        map
    }

    /// First value of `name` (case-insensitive), as `proxy_get_header_map_value` returns it.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.pairs
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The pairs as `(&str, &str)`, handy for `assert_eq!` against a literal.
    pub fn as_strs(&self) -> Vec<(&str, &str)> {
        self.pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The map without the named headers (case-insensitive), to compare "untouched except".
    pub fn without(&self, names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        Self {
            pairs: self
                .pairs
                .iter()
                .filter(|(k, _)| !names.contains(k))
                .cloned()
                .collect(),
        }
    }

    /// Envoy `addCopy`.
    pub(crate) fn add(&mut self, key: &str, value: &str) {
        self.pairs
            .push((key.to_ascii_lowercase(), value.to_string()));
    }

    /// Envoy `setCopy`: the first entry takes the value, later duplicates go, absent keys are added.
    pub(crate) fn replace(&mut self, key: &str, value: &str) {
        let key = key.to_ascii_lowercase();
        let mut seen = false;
        self.pairs.retain_mut(|(k, v)| {
            if *k != key {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            *v = value.to_string();
            true
        });
        if !seen {
            self.pairs.push((key, value.to_string()));
        }
    }

    /// Envoy `remove`: every entry of the key.
    pub(crate) fn remove(&mut self, key: &str) {
        let key = key.to_ascii_lowercase();
        self.pairs.retain(|(k, _)| *k != key);
    }

    /// Envoy `setHeaderMapPairs`: the whole map is replaced.
    pub(crate) fn set_all(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) {
        *self = Self::from_bytes_pairs(pairs);
    }
}

/// One direction of an HTTP stream (request or response) as Envoy's filter chain sees it.
#[derive(Clone, Debug, Default)]
pub struct Half {
    /// The header map Envoy holds (including the filter's changes). `None` before headers arrive.
    pub headers: Option<HeaderMap>,
    /// Trailers, once received (or added by the filter in the last body callback).
    pub trailers: Option<HeaderMap>,
    /// Headers as passed on (upstream for the request, downstream for the response): a snapshot
    /// taken when the filter let them through.
    pub forwarded_headers: Option<HeaderMap>,
    /// Body bytes passed on so far.
    pub forwarded_body: Vec<u8>,
    /// Trailers as passed on.
    pub forwarded_trailers: Option<HeaderMap>,
    /// Body bytes the test delivered, in order (to compare with `forwarded_body`).
    pub received_body: Vec<u8>,
    /// Number of body callbacks the guest saw, and the `body_size` it was told each time.
    pub body_sizes: Vec<usize>,
    /// Bytes Envoy holds for this filter (current chunk, plus earlier ones while the filter
    /// returned Pause = `StopIterationAndBuffer`).
    pub(crate) buffer: Vec<u8>,
    /// Envoy's `request_headers_` / `response_headers_` pointer is set (the filter may read and
    /// modify the map). Cleared when the headers callback returns Continue.
    pub(crate) headers_live: bool,
    pub(crate) trailers_live: bool,
    /// `request_body_buffer_` set: the current body chunk is readable.
    pub(crate) body_live: bool,
    /// The last body callback returned Pause: Envoy accumulates the body for the filter.
    pub(crate) buffering: bool,
    /// The headers callback returned Pause (Envoy converts it to StopAllIteration): no body or
    /// trailer callbacks until the filter resumes the stream.
    pub(crate) stopped_all: bool,
    /// Body bytes held by Envoy while `stopped_all`.
    pub(crate) held_body: Vec<u8>,
    pub(crate) held_end_of_stream: bool,
    /// The end of stream was seen (headers with end_of_stream, last body chunk, or trailers).
    pub end_of_stream: bool,
    /// The filter resumed this direction with `proxy_continue_stream`.
    pub resumed: bool,
}

impl Half {
    /// Passes the headers on if they have not been yet.
    pub(crate) fn forward_headers(&mut self) {
        if self.forwarded_headers.is_none() {
            self.forwarded_headers = self.headers.clone();
        }
    }

    /// Passes on whatever Envoy holds (headers, buffered body).
    pub(crate) fn forward_buffer(&mut self) {
        self.forward_headers();
        self.forwarded_body.append(&mut self.buffer);
        self.body_live = false;
        self.buffering = false;
    }
}

/// One TCP connection as a network filter in front of `tcp_proxy` sees it (a [`Stream`] whose
/// context is a proxy-wasm `StreamContext`).
///
/// Envoy semantics: the downstream read buffer is handed to the filter whole; Continue lets
/// `tcp_proxy` drain all of it upstream, Pause (StopIteration) leaves it in the read buffer, and
/// the next read appends to it and calls the filter again with all of it. Upstream data (the
/// write path towards the client) works the same way here. Outside the data callbacks the
/// buffers do not exist (`proxy_get_buffer_bytes` answers NotFound).
#[derive(Clone, Debug, Default)]
pub struct Net {
    /// Client bytes the test delivered, in order.
    pub downstream_received: Vec<u8>,
    /// Server bytes the test delivered, in order.
    pub upstream_received: Vec<u8>,
    /// Client bytes passed on to the upstream (what the server receives).
    pub forwarded_upstream: Vec<u8>,
    /// Server bytes passed on to the client.
    pub forwarded_downstream: Vec<u8>,
    /// `data_size` of every downstream / upstream data callback.
    pub downstream_sizes: Vec<usize>,
    pub upstream_sizes: Vec<usize>,
    /// Data callbacks that answered Pause.
    pub pauses: usize,
    /// Both close callbacks were delivered.
    pub closed: bool,
    /// Bytes Envoy holds for the filter in each direction (current read plus what a Pause kept).
    pub(crate) downstream_buffer: Vec<u8>,
    pub(crate) upstream_buffer: Vec<u8>,
    /// Set only during the matching data callback (Envoy's `network_*_data_buffer_`).
    pub(crate) downstream_live: bool,
    pub(crate) upstream_live: bool,
}

/// A local reply the filter asked for with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
    pub grpc_status: i32,
}

/// One HTTP stream (one proxy-wasm HTTP context).
#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub context_id: u32,
    pub request: Half,
    pub response: Half,
    pub local_response: Option<LocalResponse>,
    /// `proxy_close_stream` calls (the stream types the filter reset).
    pub closed: Vec<u32>,
    /// Properties visible only while this stream is the current context (and those the guest set
    /// with `proxy_set_property`).
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    pub logged: bool,
    /// The guest's answer to `proxy_on_done`, once called.
    pub done: Option<bool>,
    pub deleted: bool,
    /// Set for a network connection ([`Net`]); `None` for an HTTP stream.
    pub net: Option<Net>,
}

impl Stream {
    pub(crate) fn half(&self, request: bool) -> &Half {
        if request {
            &self.request
        } else {
            &self.response
        }
    }

    pub(crate) fn half_mut(&mut self, request: bool) -> &mut Half {
        if request {
            &mut self.request
        } else {
            &mut self.response
        }
    }
}

/// A custom metric the guest defined.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counter or gauge value.
    pub value: i64,
    /// Every value recorded on a histogram.
    pub samples: Vec<u64>,
}

/// What became of an outgoing HTTP call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallState {
    Pending,
    Answered {
        status: u32,
    },
    /// Reset (`fail_http_call`): `proxy_on_http_call_response` with no headers and no body.
    Failed,
}

/// An HTTP call the guest dispatched with `proxy_http_call`.
#[derive(Clone, Debug)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    pub timeout_ms: u32,
    /// The context that was current (effective) when it was dispatched.
    pub dispatched_from: u32,
    /// Host clock when dispatched.
    pub dispatched_at_ns: u64,
    pub state: CallState,
}

/// The response the guest can read during `proxy_on_http_call_response`.
#[derive(Clone, Debug)]
pub struct CallResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// A captured `proxy_log` (or stdout/stderr line, which Envoy logs at info/error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    pub message: String,
    pub context_id: u32,
    pub callback: Callback,
}

/// A guest call that Envoy would answer with BadArgument or InvalidMemoryAccess (in Envoy these
/// usually end in an SDK panic, i.e. a crashed VM). Tests assert there are none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub callback: Callback,
    pub context_id: u32,
    /// The import that was called, e.g. `proxy_get_header_map_value`.
    pub import: &'static str,
    pub status: Status,
    /// The map involved, for header-map calls.
    pub map: Option<MapType>,
    pub detail: String,
}

/// The store data: everything the host functions see.
pub struct HostState {
    pub(crate) memory: Option<Memory>,
    pub(crate) allocator: Option<TypedFunc<u32, u32>>,
    pub(crate) rng: u64,
    pub(crate) realtime_ns: u64,
    pub(crate) monotonic_ns: u64,
    pub(crate) log_level: LogLevel,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) clusters: Vec<String>,
    pub(crate) root_id: u32,
    pub(crate) next_context_id: u32,
    /// The context the host called into.
    pub(crate) callee: u32,
    /// Set by `proxy_set_effective_context`; 0 = the callee.
    pub(crate) effective: u32,
    pub(crate) callback: Callback,
    pub(crate) vm_config: Vec<u8>,
    /// Only during `proxy_on_configure` (Envoy's `temp_plugin_`).
    pub(crate) plugin_config: Option<Vec<u8>>,
    pub(crate) streams: BTreeMap<u32, Stream>,
    pub(crate) properties: BTreeMap<Vec<String>, Vec<u8>>,
    pub(crate) shared: BTreeMap<String, (Vec<u8>, u32)>,
    pub(crate) next_cas: u32,
    pub(crate) queues: Vec<(String, Vec<Vec<u8>>)>,
    pub(crate) metrics: Vec<Metric>,
    /// Metric id (as handed to the guest) -> index in `metrics`.
    pub(crate) metric_ids: BTreeMap<u32, usize>,
    pub(crate) next_metric: u32,
    pub(crate) tick_period_ms: u32,
    pub(crate) calls: Vec<HttpCall>,
    pub(crate) next_token: u32,
    pub(crate) call_response: Option<CallResponse>,
    pub(crate) status: (u32, String),
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) violations: Vec<Violation>,
    pub(crate) unknown_called: Vec<String>,
    pub(crate) grpc_attempts: u32,
    pub(crate) done_calls: u32,
    /// Actions Envoy defers until the guest call returns (`addAfterVmCallAction`).
    pub(crate) after_call: Vec<AfterCall>,
}

/// Deferred effects of guest calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterCall {
    Resume { context_id: u32, request: bool },
}

/// Per-test seedable generator for `random_get` (SplitMix64: tiny, and deterministic).
pub(crate) fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl HostState {
    pub(crate) fn new(
        seed: u64,
        start_time_ns: u64,
        log_level: LogLevel,
        env: Vec<(String, String)>,
        clusters: Vec<String>,
        properties: BTreeMap<Vec<String>, Vec<u8>>,
    ) -> Self {
        Self {
            memory: None,
            allocator: None,
            rng: seed,
            realtime_ns: start_time_ns,
            monotonic_ns: 1_000_000_000,
            log_level,
            env,
            clusters,
            root_id: 1,
            next_context_id: 2,
            callee: 0,
            effective: 0,
            callback: Callback::Idle,
            vm_config: Vec::new(),
            plugin_config: None,
            streams: BTreeMap::new(),
            properties,
            shared: BTreeMap::new(),
            next_cas: 1,
            queues: Vec::new(),
            metrics: Vec::new(),
            metric_ids: BTreeMap::new(),
            next_metric: 1,
            tick_period_ms: 0,
            calls: Vec::new(),
            next_token: 1,
            call_response: None,
            status: (0, String::new()),
            logs: Vec::new(),
            violations: Vec::new(),
            unknown_called: Vec::new(),
            grpc_attempts: 0,
            done_calls: 0,
            after_call: Vec::new(),
        }
    }

    /// The context the guest's host calls act on (Envoy's `contextOrEffectiveContext`).
    pub(crate) fn current_context(&self) -> u32 {
        if self.effective != 0 {
            self.effective
        } else {
            self.callee
        }
    }

    pub(crate) fn context_exists(&self, id: u32) -> bool {
        id == self.root_id || self.streams.get(&id).is_some_and(|s| !s.deleted)
    }

    fn current_stream(&self) -> Option<&Stream> {
        self.streams.get(&self.current_context())
    }

    fn current_stream_mut(&mut self) -> Option<&mut Stream> {
        let id = self.current_context();
        self.streams.get_mut(&id)
    }

    /// True when the current context is the stream being logged (Envoy's access-log phase).
    fn in_log_phase(&self) -> bool {
        self.callback == Callback::Log && self.current_context() == self.callee
    }

    pub(crate) fn violation(
        &mut self,
        import: &'static str,
        status: Status,
        map: Option<MapType>,
        detail: String,
    ) -> Status {
        self.violations.push(Violation {
            callback: self.callback,
            context_id: self.current_context(),
            import,
            status,
            map,
            detail,
        });
        status
    }

    // -- header maps (Envoy getConstMap / getMap) ----------------------------------------------

    /// The map for reading, or `None` when Envoy has no such map right now.
    pub(crate) fn map_for_read(&self, ty: MapType) -> Option<HeaderMap> {
        match ty {
            MapType::HttpCallResponseHeaders => {
                return self.call_response.as_ref().map(|r| r.headers.clone())
            }
            MapType::HttpCallResponseTrailers => {
                return self.call_response.as_ref().map(|r| r.trailers.clone())
            }
            MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => {
                return None
            }
            _ => {}
        }
        let log_phase = self.in_log_phase();
        let stream = self.current_stream()?;
        match ty {
            MapType::HttpRequestHeaders if log_phase => stream.request.headers.clone(),
            MapType::HttpRequestTrailers if log_phase => None,
            MapType::HttpResponseHeaders if log_phase => {
                Some(stream.response.headers.clone().unwrap_or_default())
            }
            MapType::HttpResponseTrailers if log_phase => {
                Some(stream.response.trailers.clone().unwrap_or_default())
            }
            MapType::HttpRequestHeaders | MapType::HttpResponseHeaders => {
                let half = stream.half(ty == MapType::HttpRequestHeaders);
                if half.headers_live {
                    half.headers.clone()
                } else {
                    None
                }
            }
            MapType::HttpRequestTrailers | MapType::HttpResponseTrailers => {
                let half = stream.half(ty == MapType::HttpRequestTrailers);
                if half.trailers_live {
                    half.trailers.clone()
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Whether a read of `ty` in the log phase with no map answers NotFound (Envoy) rather than
    /// BadArgument.
    pub(crate) fn absent_map_is_not_found(&self) -> bool {
        self.in_log_phase()
    }

    /// The map for writing (Envoy `getMap`): only the four HTTP maps, only while Envoy holds them.
    /// In the last body callback a trailers map is created on demand (`addDecodedTrailers`).
    pub(crate) fn map_for_write(&mut self, ty: MapType) -> Option<&mut HeaderMap> {
        let request = match ty {
            MapType::HttpRequestHeaders | MapType::HttpRequestTrailers => true,
            MapType::HttpResponseHeaders | MapType::HttpResponseTrailers => false,
            _ => return None,
        };
        let trailers = matches!(
            ty,
            MapType::HttpRequestTrailers | MapType::HttpResponseTrailers
        );
        let half = self.current_stream_mut()?.half_mut(request);
        if trailers {
            if !half.trailers_live
                && half.trailers.is_none()
                && half.body_live
                && half.end_of_stream
            {
                half.trailers = Some(HeaderMap::default());
                half.trailers_live = true;
            }
            if half.trailers_live {
                half.trailers.as_mut()
            } else {
                None
            }
        } else if half.headers_live {
            half.headers.as_mut()
        } else {
            None
        }
    }

    // -- buffers (Envoy getBuffer) ---------------------------------------------------------------

    /// The buffer content, or `None` when Envoy answers NotFound.
    pub(crate) fn buffer_for_read(&self, ty: BufferType) -> Option<Vec<u8>> {
        match ty {
            BufferType::VmConfiguration => Some(self.vm_config.clone()),
            BufferType::PluginConfiguration => self.plugin_config.clone(),
            BufferType::HttpCallResponseBody => self.call_response.as_ref().map(|r| r.body.clone()),
            BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
                let request = ty == BufferType::HttpRequestBody;
                // Envoy always has a buffer object here; it is empty outside body callbacks.
                Some(
                    self.current_stream()
                        .map(|s| s.half(request))
                        .filter(|h| h.body_live || h.buffering)
                        .map(|h| h.buffer.clone())
                        .unwrap_or_default(),
                )
            }
            BufferType::DownstreamData | BufferType::UpstreamData => {
                let net = self.current_stream()?.net.as_ref()?;
                match ty {
                    BufferType::DownstreamData if net.downstream_live => {
                        Some(net.downstream_buffer.clone())
                    }
                    BufferType::UpstreamData if net.upstream_live => {
                        Some(net.upstream_buffer.clone())
                    }
                    _ => None,
                }
            }
            BufferType::GrpcReceiveBuffer | BufferType::CallData => Some(Vec::new()),
        }
    }

    /// The live network data buffer of the current connection, for writing.
    fn net_buffer_mut(&mut self, ty: BufferType) -> Option<&mut Vec<u8>> {
        let net = self.current_stream_mut()?.net.as_mut()?;
        match ty {
            BufferType::DownstreamData if net.downstream_live => Some(&mut net.downstream_buffer),
            BufferType::UpstreamData if net.upstream_live => Some(&mut net.upstream_buffer),
            _ => None,
        }
    }

    /// Envoy `Buffer::copyFrom` on a body or network data buffer: `start == 0` replaces the
    /// first `length` bytes with `data` (drain, then prepend); `start >= size` appends; anything
    /// else is BadArgument. Network data buffers exist only during their data callback.
    pub(crate) fn buffer_write(
        &mut self,
        ty: BufferType,
        start: usize,
        length: usize,
        data: &[u8],
    ) -> Status {
        let buffer = match ty {
            BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
                let request = ty == BufferType::HttpRequestBody;
                let Some(half) = self.current_stream_mut().map(|s| s.half_mut(request)) else {
                    return Status::BadArgument;
                };
                if !(half.body_live || half.buffering) {
                    return Status::BadArgument;
                }
                &mut half.buffer
            }
            BufferType::DownstreamData | BufferType::UpstreamData => {
                match self.net_buffer_mut(ty) {
                    Some(b) => b,
                    None => return Status::NotFound,
                }
            }
            BufferType::VmConfiguration
            | BufferType::PluginConfiguration
            | BufferType::HttpCallResponseBody => return Status::BadArgument,
            _ => return Status::NotFound,
        };
        let size = buffer.len();
        if start == 0 {
            let drain = length.min(size);
            buffer.drain(..drain);
            let mut next = data.to_vec();
            next.append(buffer);
            *buffer = next;
            Status::Ok
        } else if start >= size {
            buffer.extend_from_slice(data);
            Status::Ok
        } else {
            Status::BadArgument
        }
    }

    // -- properties -------------------------------------------------------------------------------

    pub(crate) fn property(&self, path: &[String]) -> Option<Vec<u8>> {
        if let Some(v) = self.current_stream().and_then(|s| s.properties.get(path)) {
            return Some(v.clone());
        }
        self.properties.get(path).cloned()
    }

    pub(crate) fn set_property(&mut self, path: Vec<String>, value: Vec<u8>) -> Status {
        match self.current_stream_mut() {
            Some(stream) => {
                stream.properties.insert(path, value);
                Status::Ok
            }
            // Envoy: no stream info on a root context.
            None => Status::NotFound,
        }
    }

    // -- shared data --------------------------------------------------------------------------

    fn take_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        cas
    }

    pub(crate) fn shared_set(&mut self, key: String, value: Vec<u8>, cas: u32) -> Status {
        let next = self.take_cas();
        match self.shared.get_mut(&key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Status::CasMismatch;
                }
                *entry = (value, next);
            }
            None => {
                self.shared.insert(key, (value, next));
            }
        }
        Status::Ok
    }

    // -- metrics ------------------------------------------------------------------------------

    pub(crate) fn define_metric(&mut self, kind: MetricKind, name: &str) -> u32 {
        let index = match self
            .metrics
            .iter()
            .position(|m| m.name == name && m.kind == kind)
        {
            Some(i) => i,
            None => {
                self.metrics.push(Metric {
                    name: name.to_string(),
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
                self.metrics.len() - 1
            }
        };
        let id = (self.next_metric << 2) | kind as u32;
        self.next_metric += 1;
        self.metric_ids.insert(id, index);
        id
    }

    pub(crate) fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let index = *self.metric_ids.get(&id)?;
        self.metrics.get_mut(index)
    }
}
