//! ordertrace's HTTP filter for Envoy: `dist/ordertrace.wasm`, loaded as `envoy.filters.http.wasm`.
//!
//! - [`filter`]: one HTTP stream from request headers to `on_log`: trace context, route rules, body
//!   capture, the request span and the order's transition. Pure; tested natively with the core's mock host.
//! - `glue` (wasm32 only): Envoy's callbacks in, [`filter`] out, over the proxy-wasm ABI.

pub mod filter;

#[cfg(target_arch = "wasm32")]
mod glue;
