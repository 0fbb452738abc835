//! A model of how Envoy drives a network filter, for native tests, the fuzz loop and the benchmark: the
//! downstream buffer is kept while the filter pauses and grows with the next read; on `Continue` it goes
//! upstream whole (as `tcp_proxy` drains it). [`Sim`] owns everything a worker would lend the connection.

use crate::config::Amqp;
use crate::conn::{Connection, Env, Flow};
use crate::spans::{AmqpCounters, PublishMemory};
use ordertrace::ids::IdGenerator;
use ordertrace::metrics::Counters;
use ordertrace::otlp::SpanRecord;
use ordertrace::testing::SeededRandom;

pub struct Sim {
    pub conn: Connection,
    pub config: Amqp,
    pub sampling_ratio: f64,
    pub ids: IdGenerator<SeededRandom>,
    pub counters: Counters,
    pub amqp: AmqpCounters,
    pub memory: PublishMemory,
    pub now_ns: u64,
    pub spans: Vec<SpanRecord>,
    /// Downstream bytes Envoy holds because the filter paused.
    pub held: Vec<u8>,
    /// Client bytes that went on to the broker, as the broker receives them.
    pub upstream: Vec<u8>,
    /// Broker bytes that went on to the client.
    pub downstream: Vec<u8>,
    /// How many downstream callbacks returned `Pause`.
    pub pauses: usize,
}

impl Sim {
    pub fn new(config: Amqp) -> Sim {
        Sim {
            conn: Connection::new(),
            config,
            sampling_ratio: 1.0,
            ids: IdGenerator::new(SeededRandom(42)),
            counters: Counters::default(),
            amqp: AmqpCounters::default(),
            memory: PublishMemory::default(),
            now_ns: 1_700_000_000_000_000_000,
            spans: Vec::new(),
            held: Vec::new(),
            upstream: Vec::new(),
            downstream: Vec::new(),
            pauses: 0,
        }
    }

    /// A fresh connection on the same worker (ids, counters and publish memory carry over).
    pub fn reconnect(&mut self) {
        self.conn = Connection::new();
        self.held.clear();
    }

    fn with<T>(&mut self, f: impl FnOnce(&mut Connection, &mut Env<'_, SeededRandom>) -> T) -> T {
        let mut env = Env {
            config: &self.config,
            sampling_ratio: self.sampling_ratio,
            ids: &mut self.ids,
            counters: &mut self.counters,
            amqp: &mut self.amqp,
            memory: &mut self.memory,
            now_ns: self.now_ns,
            spans: &mut self.spans,
        };
        f(&mut self.conn, &mut env)
    }

    /// One downstream read of `bytes` (Envoy: `onData` with the held bytes plus these).
    pub fn client(&mut self, bytes: &[u8], end_of_stream: bool) -> Flow {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(bytes);
        if !self.conn.wants_data() {
            self.upstream.extend_from_slice(&buf);
            return Flow::Continue;
        }
        let v = self.with(|c, env| c.client_data(&buf, end_of_stream, env));
        if let Some(r) = v.replace {
            buf = r;
        }
        match v.flow {
            Flow::Continue => self.upstream.extend_from_slice(&buf),
            Flow::Pause => {
                self.pauses += 1;
                self.held = buf;
            }
        }
        v.flow
    }

    /// One upstream read (broker → client).
    pub fn broker(&mut self, bytes: &[u8]) {
        self.downstream.extend_from_slice(bytes);
        if self.conn.wants_data() {
            self.with(|c, env| c.broker_data(bytes, env));
        }
    }

    /// The connection closed (either side); held bytes are flushed as Envoy would on end of stream.
    pub fn close(&mut self) {
        if !self.held.is_empty() {
            let _ = self.client(&[], true);
        }
        self.with(|c, env| c.close(env));
    }

    /// Advances the clock.
    pub fn advance_ms(&mut self, ms: u64) {
        self.now_ns += ms * 1_000_000;
    }

    /// Finished spans so far, taken.
    pub fn take_spans(&mut self) -> Vec<SpanRecord> {
        std::mem::take(&mut self.spans)
    }
}
