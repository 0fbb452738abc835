//! `dist/ordertrace-amqp.wasm`: AMQP 0-9-1 at the wire. The pure core of the network filter that traces RabbitMQ traffic in Envoy's TCP
//! proxy (see `docs/amqp.md`).
//!
//! - [`wire`], [`table`], [`frame`]: primitive types, field tables, frames, methods and basic properties.
//! - [`decoder`]: one direction, fed incrementally, bounded, never failing on input.
//! - [`conn`]: one connection (both directions), the per-channel state, spans and the `traceparent`
//!   injection, driven by the glue (`glue`, proxy-wasm, wasm32 only) or by tests.
//! - [`spans`]: span building, the rule engine for messages, counters.
//! - [`config`]: the `amqp` configuration section.

pub mod config;
pub mod conn;
pub mod decoder;
pub mod frame;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
pub mod spans;
pub mod table;
pub mod wire;

pub use config::{Amqp, RawAmqp};

#[cfg(target_arch = "wasm32")]
mod glue;
pub use conn::{Connection, Env, Flow, Verdict};
pub use spans::{AmqpCounters, PublishMemory, AMQP_COUNTER_NAMES};
