//! The collector plugin's core: redact and enrich a batch of OTLP spans (the `TracesData` protobuf bytes an
//! OpenTelemetry Collector hands a processor), with the edge filter's redactor, path templates and lifecycle
//! model. Pure: no I/O, no host calls. Two thin glue layers expose it: `component` (the WIT component
//! `ordertrace:collector/span-processor`, wit/ordertrace.wit) and `otelwasm` (the otelwasm ABI).
//!
//! Per span, in this order (docs/collector.md has the full rules and the configuration):
//! 1. **Match** (on the span as received): an HTTP rule (`routes`) against `http.request.method` and
//!    `url.path` (or `http.target`, or the path of `url.full`; with no path, the shape of `http.route`), or
//!    a messaging rule (`messages`) against `messaging.system`, `messaging.destination.name` and the
//!    RabbitMQ routing key. A span that already has `order.id` (an edge span, or one the service
//!    annotated) is matched only to know which `url.path` segments to keep; it is never enriched again.
//! 2. **Redact** every string of the span with the same [`Redactor`] as the edge: the span name and event
//!    names (free text), attribute values of the span, its events and links (key rules, then detectors),
//!    `url.path` / `url.query` / `http.target` / `url.full` per segment and parameter, and the status
//!    message. Resource and scope attributes of the batch are redacted too. `url.path` keeps verbatim only
//!    the variable segments of the matched rule's template (or, for a span of an ordertrace edge, of its
//!    `http.route`, which the edge set from its own template); with no template nothing is kept.
//! 3. **Enrich** a matched span without `order.id`: `order.id`, `order.status` (HTTP: 2xx
//!    `http.response.status_code`; messaging: span status not ERROR) with an `order.status_changed` event
//!    at the span's end, else `order.status.attempted`, and the rule's configured attributes.
//! 4. **Lifecycle** (unless `lifecycle.enabled` is false): every span of the batch with `order.id` and
//!    `order.status` is a transition; in end-time order, each is compared with the last status this
//!    processor saw for the order (a table of `lifecycle.table_size` slots, like the edge's); a span this
//!    processor enriched gets `order.status.previous`, `order.stage.duration_ms` and
//!    `order.transition.unexpected`, as the edge adds them.
//!
//! Redaction is idempotent (`text(text(x)) == text(x)`, a pseudonym is never hashed again), so a span that
//! an edge already redacted passes unchanged. A batch in which nothing changed is reported as
//! [`Processed::Unchanged`]: the glue returns the input bytes themselves. When something changed, the batch
//! is re-encoded with prost, whose encoding is canonical: unchanged spans of a canonically encoded input
//! (what prost, the Go collector's pdata and the OpenTelemetry SDKs write) come out byte for byte the same.
//! Unknown protobuf fields are not kept in a re-encoded batch.
//!
//! Where things are: `config` (the configuration as written and compiled), `process` (the [`Processor`],
//! the per-span match, plan and enrichment, the lifecycle table), `redact_walk` (the redaction of OTLP
//! attributes and values: key decisions and the walk), `stats` (the counters).
//!
//! [`Redactor`]: ordertrace::redact::Redactor

mod config;
mod process;
mod redact_walk;
mod stats;

pub use config::{
    CollectorConfig, Enrich, HttpRule, KindFilter, MessageRule, RawCollectorConfig, RawHttpRule,
    RawMessageRule, RawSpanFrom, RawSpanKind, RawSpanSource, SpanSource,
};
pub use process::{process_traces, LifecycleTable, ProcessError, Processed, Processor, EDGE_SCOPE};
pub use redact_walk::{split_url, KeyCache, UrlParts, COLLECTOR_SEMCONV_KEYS};
pub use stats::Stats;

#[cfg(all(feature = "component", target_arch = "wasm32"))]
mod component;
#[cfg(all(feature = "otelwasm", target_arch = "wasm32"))]
mod otelwasm;

#[cfg(test)]
mod test_support;
