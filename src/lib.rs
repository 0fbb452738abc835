//! ordertrace's pure core: everything the Envoy modules, the Collector plugin and the CLI share, with no
//! host ABI and no I/O. The glue lives in the workspace's other crates (`crates/edge`, `crates/amqp`,
//! `crates/collector`, `crates/cli`), which the compiler keeps out of here.
//!
//! Imports run one way (tests/architecture.rs checks it), leaves first: `tracecontext`, `template`,
//! `jsonscan`, `text`, `metrics`, `host` → `error` → `json` (with `json::read`) → `otlp` → `order` →
//! `redact` → `config` → `export`, `ids` → `worker`.
//! The core talks to its host through the traits in [`host`]; tests use the mock host in `testing`.

pub mod config;
pub mod error;
pub mod export;
pub mod host;
pub mod ids;
pub mod json;
pub mod jsonscan;
pub mod metrics;
pub mod order;
pub mod otlp;
pub mod redact;
pub mod template;
pub mod text;
pub mod tracecontext;
pub mod worker;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Version stamped into spans (`telemetry.sdk.version`) and logged on VM start.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the build came from (`unknown` outside a checkout), logged on VM start.
pub const GIT_HASH: &str = env!("ORDERTRACE_GIT_HASH");
