//! proxy-wasm glue of the AMQP network filter: Envoy's `envoy.filters.network.wasm` callbacks in, the pure
//! core ([`crate::Connection`]) out. Thin on purpose; every decision is in `amqp::conn`, which is
//! tested natively through the same buffer model (`amqp::sim`).
//!
//! Envoy semantics this relies on:
//! - `on_downstream_data(size)` sees the whole downstream buffer. Returning `Action::Pause`
//!   (`StopIteration`) keeps the bytes in Envoy's read buffer; the next read appends to it and calls us
//!   again with all of it. The core pauses only while a content-header frame is cut at the end of the
//!   buffer, and never beyond `MAX_HOLD_BYTES` (below Envoy's default 1 MiB per-connection buffer limit,
//!   past which Envoy would stop reading and the frame would never complete).
//! - `set_buffer(DownstreamData, 0, size, bytes)` drains `size` bytes and prepends `bytes`: the only way to
//!   change bytes inside the buffer, so a rewrite replaces the whole buffer.
//! - Upstream (broker → client) data is only read, never held or changed.
//!
//! The root context (configuration, export, the core's metrics) is `ordertrace-proxy`'s; this module's
//! plugin compiles the `amqp` section, flushes the AMQP counters on the tick and makes the connections.
//!
//! Host calls per callback: one buffer read, plus one buffer write when a `traceparent` was added, plus one
//! clock read while the connection is decoded. Nothing at all once the connection is passed through.
//! AMQP counters live in this VM's memory and are flushed by the root context's tick ([`flush_counters`]).

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MetricType, PeerType};

use ordertrace::config::{Config, ConfigError};
use ordertrace::host::RandomSource;
use ordertrace::worker::Worker;
use ordertrace_proxy::{now_nanos, Plugin, Shared};

use crate::{Amqp, AmqpCounters, Connection, Env, Flow, PublishMemory, AMQP_COUNTER_NAMES};

proxy_wasm::main! {{
    ordertrace_proxy::start::<AmqpPlugin>();
}}

/// The AMQP network filter as a plugin of the shared root context: the compiled `amqp` section.
struct AmqpPlugin {
    config: Rc<Amqp>,
}

impl Plugin for AmqpPlugin {
    const CONTEXT_TYPE: ContextType = ContextType::StreamContext;

    fn configure(config: &Config) -> Result<Self, ConfigError> {
        Ok(AmqpPlugin {
            config: Rc::new(Amqp::from_config(config)?),
        })
    }

    fn on_tick(&mut self) {
        flush_counters();
    }

    fn stream_context(
        plugin: Option<&Self>,
        worker: Option<Shared>,
    ) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(AmqpStream {
            worker,
            config: plugin.map(|p| p.config.clone()),
            conn: Connection::new(),
        }))
    }
}

/// What the AMQP connections of one VM share besides the worker.
#[derive(Default)]
struct VmState {
    counters: AmqpCounters,
    memory: PublishMemory,
    metric_ids: Vec<Option<u32>>,
    flushed: [u64; 8],
}

thread_local! {
    static VM: RefCell<VmState> = RefCell::new(VmState::default());
}

/// Called from the root context's tick: defines the AMQP metrics once, then sends what grew.
fn flush_counters() {
    VM.with(|vm| {
        let Ok(mut vm) = vm.try_borrow_mut() else {
            return;
        };
        if vm.metric_ids.is_empty() {
            vm.metric_ids = AMQP_COUNTER_NAMES
                .iter()
                .map(|n| hostcalls::define_metric(MetricType::Counter, n).ok())
                .collect();
        }
        let values = vm.counters.values();
        for (i, v) in values.iter().enumerate() {
            let sent = vm.flushed.get(i).copied().unwrap_or(0);
            if *v > sent {
                if let Some(Some(id)) = vm.metric_ids.get(i) {
                    let delta = i64::try_from(*v - sent).unwrap_or(i64::MAX);
                    let _ = hostcalls::increment_metric(*id, delta);
                }
                if let Some(slot) = vm.flushed.get_mut(i) {
                    *slot = *v;
                }
            }
        }
    });
}

/// One TCP connection. Without a worker or configuration (the configuration failed) it passes everything.
struct AmqpStream<R: RandomSource> {
    worker: Option<Rc<RefCell<Worker<R>>>>,
    config: Option<Rc<Amqp>>,
    conn: Connection,
}

impl<R: RandomSource> AmqpStream<R> {
    /// Runs one core call with the worker and the VM state borrowed; finished spans are redacted, encoded
    /// and queued for the root context's export. `None` when either is unavailable (then nothing happens).
    fn with<T>(&mut self, f: impl FnOnce(&mut Connection, &mut Env<'_, R>) -> T) -> Option<T> {
        let shared = self.worker.as_ref()?;
        let mut guard = shared.try_borrow_mut().ok()?;
        let w = &mut *guard;
        let conn = &mut self.conn;
        VM.with(|vm| {
            let mut vm = vm.try_borrow_mut().ok()?;
            let vm = &mut *vm;
            let config = self.config.as_deref()?;
            let mut spans = Vec::new();
            let result = {
                let mut env = Env {
                    config,
                    sampling_ratio: w.config.sampling_ratio,
                    ids: &mut w.ids,
                    counters: &mut w.counters,
                    amqp: &mut vm.counters,
                    memory: &mut vm.memory,
                    now_ns: now_nanos(),
                    spans: &mut spans,
                };
                f(conn, &mut env)
            };
            for s in spans {
                w.export(s);
            }
            Some(result)
        })
    }

    fn count_failure(&self) {
        if let Some(shared) = &self.worker {
            if let Ok(mut w) = shared.try_borrow_mut() {
                w.counters.request_failures += 1;
            }
        }
    }
}

impl<R: RandomSource> Context for AmqpStream<R> {}

impl<R: RandomSource> StreamContext for AmqpStream<R> {
    fn on_new_connection(&mut self) -> Action {
        Action::Continue
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        if !self.conn.wants_data() {
            return Action::Continue;
        }
        let buf = match hostcalls::get_buffer(BufferType::DownstreamData, 0, data_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => {
                self.count_failure();
                let _ = self.with(|c, env| c.abandon(env));
                return Action::Continue;
            }
        };
        let Some(verdict) = self.with(|c, env| c.client_data(&buf, end_of_stream, env)) else {
            return Action::Continue;
        };
        if let Some(bytes) = &verdict.replace {
            if hostcalls::set_buffer(BufferType::DownstreamData, 0, data_size, bytes).is_err() {
                // The broker gets the original bytes; the decoder's view of the buffer is now wrong.
                self.count_failure();
                let _ = self.with(|c, env| c.abandon(env));
                return Action::Continue;
            }
        }
        match verdict.flow {
            Flow::Continue => Action::Continue,
            Flow::Pause => Action::Pause,
        }
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        let _ = self.with(|c, env| c.close(env));
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        if !self.conn.wants_data() {
            return Action::Continue;
        }
        match hostcalls::get_buffer(BufferType::UpstreamData, 0, data_size) {
            Ok(b) => {
                let buf = b.unwrap_or_default();
                let _ = self.with(|c, env| c.broker_data(&buf, env));
            }
            Err(_) => {
                self.count_failure();
                let _ = self.with(|c, env| c.abandon(env));
            }
        }
        Action::Continue
    }

    fn on_upstream_close(&mut self, _peer_type: PeerType) {
        let _ = self.with(|c, env| c.close(env));
    }

    fn on_log(&mut self) {
        let _ = self.with(|c, env| c.close(env));
    }
}
