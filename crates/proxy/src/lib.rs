//! The proxy-wasm side both Envoy modules share: the root context. It loads and compiles the plugin
//! configuration (fail closed: a bad one refuses the filter, logged with the field), defines the metrics,
//! and on every tick sends the next export batch and flushes counters. What differs between the HTTP and
//! the AMQP module — their own configuration section, their stream contexts, their extra metrics — is a
//! [`Plugin`].
//!
//! Only the root context dispatches export calls: a call made from an HTTP context's `on_log` never gets
//! its response in Envoy. The SDK's `hostcalls` functions are used directly because they return `Result`;
//! the trait helpers unwrap and would trap the VM on an unexpected status.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType, MetricType};

use ordertrace::config::{Config, ConfigError};
use ordertrace::export::Next;
use ordertrace::host::RandomSource;
use ordertrace::metrics::{FlushState, Labelled, COUNTER_NAMES, QUEUE_GAUGE_NAME};
use ordertrace::worker::Worker;

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> i32;
}

/// Randomness from WASI `random_get` (Envoy serves it from its own CSPRNG).
pub struct WasiRandom;

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

/// The worker of this VM, shared by the root context and every stream or connection context.
pub type Shared = Rc<RefCell<Worker<WasiRandom>>>;

pub fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

pub fn now_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What one Envoy module adds to the shared root context.
pub trait Plugin: Sized + 'static {
    /// `HttpContext` for the HTTP filter, `StreamContext` for a network filter.
    const CONTEXT_TYPE: ContextType;

    /// Compiles the module's own part of the configuration; an error names the field and refuses the
    /// filter, like any other configuration error.
    fn configure(config: &Config) -> Result<Self, ConfigError>;

    /// Labelled metrics to define at load, so each series starts at 0 and the first error or transition
    /// after a restart is seen by `rate()` (a series born at 1 is not).
    fn labelled_metrics(&self, _config: &Config) -> Vec<Labelled> {
        Vec::new()
    }

    /// Called on every tick after the export and the core's metrics.
    fn on_tick(&mut self) {}

    /// A new HTTP stream. `plugin` and `worker` are `None` when the configuration failed: the context
    /// must then pass everything through (the SDK traps on a context it was not given).
    fn http_context(
        _plugin: Option<&Self>,
        _worker: Option<Shared>,
    ) -> Option<Box<dyn HttpContext>> {
        None
    }

    /// A new TCP connection; as [`Plugin::http_context`].
    fn stream_context(
        _plugin: Option<&Self>,
        _worker: Option<Shared>,
    ) -> Option<Box<dyn StreamContext>> {
        None
    }
}

/// The root context of a module whose streams are `P`'s.
pub struct Root<P: Plugin> {
    worker: Option<Shared>,
    plugin: Option<P>,
    counter_ids: Vec<Option<u32>>,
    gauge_id: Option<u32>,
    flush: FlushState,
    /// Envoy metric ids of labelled metrics, defined on first use (their number is bounded by the config).
    labelled_ids: HashMap<Labelled, Option<u32>>,
}

impl<P: Plugin> Default for Root<P> {
    fn default() -> Self {
        Root {
            worker: None,
            plugin: None,
            counter_ids: Vec::new(),
            gauge_id: None,
            flush: FlushState::default(),
            labelled_ids: HashMap::new(),
        }
    }
}

/// Installs `Root<P>` as the module's root context; call from `proxy_wasm::main!`.
pub fn start<P: Plugin>() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::<P>::default()) });
}

impl<P: Plugin> Root<P> {
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

impl<P: Plugin> Context for Root<P> {
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

impl<P: Plugin> RootContext for Root<P> {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log(
            LogLevel::Info,
            &format!(
                "ordertrace {} ({}) started",
                ordertrace::VERSION,
                ordertrace::GIT_HASH
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
        let loaded = Config::from_json(&bytes).and_then(|c| P::configure(&c).map(|p| (c, p)));
        let (config, plugin) = match loaded {
            Ok(v) => v,
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
        let mut labelled = plugin.labelled_metrics(&config);
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
        self.plugin = Some(plugin);
        self.worker = Some(Rc::new(RefCell::new(Worker::new(
            config, WasiRandom, &node_id,
        ))));
        let _ = hostcalls::set_tick_period(interval);
        true
    }

    fn on_tick(&mut self) {
        self.export();
        self.flush_metrics();
        if let Some(p) = &mut self.plugin {
            p.on_tick();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        P::http_context(self.plugin.as_ref(), self.worker.clone())
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        P::stream_context(self.plugin.as_ref(), self.worker.clone())
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(P::CONTEXT_TYPE)
    }
}
