//! ordertrace: order-level distributed tracing that lives in the proxy.
//!
//! The crate is a pure core (every module below except the glue) plus thin glue layers:
//! - `proxy_glue` (feature `edge`): the proxy-wasm ABI for Envoy, built as `dist/ordertrace.wasm`.
//!
//! The core never imports `proxy_wasm` or `wit_bindgen`; it talks to its host through the traits in
//! [`host`], so it is tested natively with a mock host.

pub mod amqp;
pub mod collector;
pub mod config;
pub mod export;
pub mod filter;
pub mod host;
pub mod ids;
pub mod json;
pub mod jsonscan;
pub mod lifecycle;
pub mod metrics;
pub mod mock_host;
pub mod otlp;
pub mod redact;
pub mod template;
pub mod tracecontext;

#[cfg(all(feature = "collector", target_arch = "wasm32"))]
mod collector_glue;
#[cfg(all(feature = "otelwasm", target_arch = "wasm32"))]
mod otelwasm_glue;
#[cfg(all(feature = "edge", target_arch = "wasm32"))]
mod proxy_glue;

#[cfg(all(feature = "edge", target_arch = "wasm32"))]
mod amqp_glue;

/// Version stamped into spans (`telemetry.sdk.version`) and logged on VM start.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
