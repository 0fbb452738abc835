//! AMQP 0-9-1 at the wire: the pure core of the network filter that traces RabbitMQ traffic in Envoy's TCP
//! proxy (see `docs/amqp.md`).
//!
//! - [`wire`], [`table`], [`frame`]: primitive types, field tables, frames, methods and basic properties.
//! - [`decoder`]: one direction, fed incrementally, bounded, never failing on input.
//! - [`conn`]: one connection (both directions), the per-channel state, spans and the `traceparent`
//!   injection, driven by the glue (`amqp_glue`, proxy-wasm) or by tests.
//! - [`spans`]: span building, the rule engine for messages, counters.
//! - [`config`]: the `amqp` configuration section.

pub mod config;
pub mod conn;
pub mod decoder;
pub mod frame;
pub mod sim;
pub mod spans;
pub mod table;
pub mod wire;

pub use config::{Amqp, RawAmqp};
pub use conn::{Connection, Env, Flow, Verdict};
pub use spans::{AmqpCounters, PublishMemory, AMQP_COUNTER_NAMES};
