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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, DefaultHasher};

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, TracesData};
use prost::Message;

use ordertrace::config::{ConfigError, ConfigErrorKind, RawMethods, MAX_ROUTES};
use ordertrace::json::read::{self, Object};
use ordertrace::json::{self, Value as JsonValue};
use ordertrace::order::{attrs, LastStatus, Lifecycle, RawLifecycle, StatusMark};
use ordertrace::otlp::AttrValue;
use ordertrace::redact::{HmacKeySource, KeyAction, RawRedaction, Redacted, Redactor};
use ordertrace::template::{self, var_segments as template_var_segments, PathTemplate};
use ordertrace::text::cut;

/// The instrumentation scope name of the spans an ordertrace edge exports.
pub const EDGE_SCOPE: &str = "ordertrace";

/// Semantic-convention keys that the collector sees on SDK spans (the edge never emits them) and whose last
/// word is a built-in deny word (`name`). Their values are free text for the detectors instead of being
/// dropped. A configured `deny_keys` entry that matches still wins.
pub const COLLECTOR_SEMCONV_KEYS: &[&str] = &[
    "deployment.environment.name",
    "thread.name",
    "process.runtime.name",
    "telemetry.distro.name",
    "network.protocol.name",
    "db.name",
    "db.system.name",
    "db.collection.name",
    "db.operation.name",
    "code.function.name",
    "container.image.name",
    "container.runtime.name",
    "host.image.name",
    "k8s.cluster.name",
    "k8s.replicaset.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.job.name",
    "k8s.cronjob.name",
    "faas.name",
    "graphql.operation.name",
    "db.stored_procedure.name",
    "network.interface.name",
    "user_agent.name",
    "messaging.consumer.group.name",
    "messaging.operation.name",
    "messaging.destination_publish.name",
    "messaging.destination.subscription.name",
    "otel.library.name",
    "net.peer.name",
    "net.host.name",
    "source.address",
    "destination.address",
    "server.socket.address",
];

// ---------------------------------------------------------------------------------------------
// Configuration: the JSON as written, read by `from_value` with the edge's reader (unknown keys rejected)

/// The plugin configuration: a JSON object; every key is optional.
#[derive(Debug, Default)]
pub struct RawCollectorConfig {
    /// The same object as the edge's `redaction` (docs/redaction.md); `hmac_key_env` and `hmac_key_file`
    /// are read through the WASI environment and file system.
    pub redaction: RawRedaction,
    /// The same object as the edge's `lifecycle`.
    pub lifecycle: RawLifecycle,
    /// Rules over HTTP spans.
    pub routes: Vec<RawHttpRule>,
    /// Rules over messaging spans.
    pub messages: Vec<RawMessageRule>,
}

impl RawCollectorConfig {
    /// The whole configuration object (`v` is the document).
    pub fn from_value(v: JsonValue, path: &str) -> Result<RawCollectorConfig, ConfigError> {
        let mut o = Object::new(v, path, &["redaction", "lifecycle", "routes", "messages"])?;
        let raw = RawCollectorConfig {
            redaction: o.or_else("redaction", RawRedaction::default, RawRedaction::from_value)?,
            lifecycle: o.or_else("lifecycle", RawLifecycle::default, RawLifecycle::from_value)?,
            routes: o.or_else("routes", Vec::new, |v, path| {
                read::array(v, path)?
                    .into_iter()
                    .map(|(v, path)| RawHttpRule::from_value(v, &path))
                    .collect()
            })?,
            messages: o.or_else("messages", Vec::new, |v, path| {
                read::array(v, path)?
                    .into_iter()
                    .map(|(v, path)| RawMessageRule::from_value(v, &path))
                    .collect()
            })?,
        };
        o.finish()?;
        Ok(raw)
    }
}

/// A span kind a rule applies to (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSpanKind {
    Server,
    Client,
    Producer,
    Consumer,
    Internal,
    Any,
}

impl RawSpanKind {
    pub fn from_value(v: JsonValue, path: &str) -> Result<RawSpanKind, ConfigError> {
        read::variant(
            v,
            path,
            &[
                ("server", RawSpanKind::Server),
                ("client", RawSpanKind::Client),
                ("producer", RawSpanKind::Producer),
                ("consumer", RawSpanKind::Consumer),
                ("internal", RawSpanKind::Internal),
                ("any", RawSpanKind::Any),
            ],
        )
    }
}

/// `routes[i]`: the edge's route shape, over span attributes.
#[derive(Debug)]
pub struct RawHttpRule {
    pub name: Option<String>,
    pub method: Option<RawMethods>,
    pub path: String,
    /// Default `server`.
    pub kind: Option<RawSpanKind>,
    pub order_id: Option<RawSpanSource>,
    pub status: Option<RawSpanSource>,
    /// Sorted by name.
    pub attributes: Vec<(String, RawSpanSource)>,
}

impl RawHttpRule {
    pub fn from_value(v: JsonValue, path: &str) -> Result<RawHttpRule, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "name",
                "method",
                "path",
                "kind",
                "order_id",
                "status",
                "attributes",
            ],
        )?;
        let raw = RawHttpRule {
            name: o.opt_string("name")?,
            method: o.opt("method", RawMethods::from_value)?,
            path: o.req_string("path")?,
            kind: o.opt("kind", RawSpanKind::from_value)?,
            order_id: o.opt("order_id", RawSpanSource::from_value)?,
            status: o.opt("status", RawSpanSource::from_value)?,
            attributes: o.or_else("attributes", Vec::new, |v, path| {
                read::map(v, path, RawSpanSource::from_value)
            })?,
        };
        o.finish()?;
        Ok(raw)
    }
}

/// `messages[i]`: a rule over messaging spans (`messaging.*` attributes).
#[derive(Debug)]
pub struct RawMessageRule {
    pub name: Option<String>,
    /// `messaging.system` (`rabbitmq`).
    pub system: Option<String>,
    /// `messaging.destination.name` (the exchange or queue).
    pub destination: Option<String>,
    /// `messaging.rabbitmq.destination.routing_key`.
    pub routing_key: Option<String>,
    /// Default `any`.
    pub kind: Option<RawSpanKind>,
    pub order_id: Option<RawSpanSource>,
    pub status: Option<RawSpanSource>,
    /// Sorted by name.
    pub attributes: Vec<(String, RawSpanSource)>,
}

impl RawMessageRule {
    pub fn from_value(v: JsonValue, path: &str) -> Result<RawMessageRule, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "name",
                "system",
                "destination",
                "routing_key",
                "kind",
                "order_id",
                "status",
                "attributes",
            ],
        )?;
        let raw = RawMessageRule {
            name: o.opt_string("name")?,
            system: o.opt_string("system")?,
            destination: o.opt_string("destination")?,
            routing_key: o.opt_string("routing_key")?,
            kind: o.opt("kind", RawSpanKind::from_value)?,
            order_id: o.opt("order_id", RawSpanSource::from_value)?,
            status: o.opt("status", RawSpanSource::from_value)?,
            attributes: o.or_else("attributes", Vec::new, |v, path| {
                read::map(v, path, RawSpanSource::from_value)
            })?,
        };
        o.finish()?;
        Ok(raw)
    }
}

/// A value source: a literal, or exactly one keyed source.
#[derive(Debug)]
pub enum RawSpanSource {
    Literal(String),
    From(RawSpanFrom),
}

impl RawSpanSource {
    pub fn from_value(v: JsonValue, path: &str) -> Result<RawSpanSource, ConfigError> {
        match v {
            JsonValue::String(s) => Ok(RawSpanSource::Literal(s)),
            JsonValue::Object(_) => RawSpanFrom::from_value(v, path).map(RawSpanSource::From),
            other => Err(read::invalid_type(
                &other,
                path,
                "a literal string or an object such as {\"attribute\": \"order.id\"}",
            )),
        }
    }
}

#[derive(Debug)]
pub struct RawSpanFrom {
    pub path: Option<String>,
    pub header: Option<String>,
    pub query: Option<String>,
    pub attribute: Option<String>,
    /// Accepted by the parser only to explain that the collector has no bodies.
    pub request_body: Option<String>,
    /// Accepted by the parser only to explain that the collector has no bodies.
    pub response_body: Option<String>,
}

impl RawSpanFrom {
    pub fn from_value(v: JsonValue, path: &str) -> Result<RawSpanFrom, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "path",
                "header",
                "query",
                "attribute",
                "request_body",
                "response_body",
            ],
        )?;
        let raw = RawSpanFrom {
            path: o.opt_string("path")?,
            header: o.opt_string("header")?,
            query: o.opt_string("query")?,
            attribute: o.opt_string("attribute")?,
            request_body: o.opt_string("request_body")?,
            response_body: o.opt_string("response_body")?,
        };
        o.finish()?;
        Ok(raw)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled configuration

/// Which span kinds a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindFilter {
    Any,
    /// `span::SpanKind as i32`.
    Only(i32),
}

impl KindFilter {
    fn from_raw(k: RawSpanKind) -> KindFilter {
        let only = |k: span::SpanKind| KindFilter::Only(k as i32);
        match k {
            RawSpanKind::Server => only(span::SpanKind::Server),
            RawSpanKind::Client => only(span::SpanKind::Client),
            RawSpanKind::Producer => only(span::SpanKind::Producer),
            RawSpanKind::Consumer => only(span::SpanKind::Consumer),
            RawSpanKind::Internal => only(span::SpanKind::Internal),
            RawSpanKind::Any => KindFilter::Any,
        }
    }

    fn accepts(self, kind: i32) -> bool {
        match self {
            KindFilter::Any => true,
            KindFilter::Only(k) => k == kind,
        }
    }
}

/// A compiled value source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanSource {
    Literal(String),
    /// Index of the template variable (routes only).
    PathVar(usize),
    /// A query parameter of `url.query` (routes only).
    Query(String),
    /// A span attribute (`{"attribute": k}`; `{"header": h}` is `http.request.header.<h>` in a route,
    /// `messaging.header.<h>` in a message rule).
    Attribute(String),
}

/// What a matched rule adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrich {
    pub order_id: Option<SpanSource>,
    pub status: Option<SpanSource>,
    pub attributes: Vec<(String, SpanSource)>,
}

/// A compiled `routes[i]`.
#[derive(Debug, Clone)]
pub struct HttpRule {
    pub name: String,
    /// Uppercase; empty means any.
    pub methods: Vec<String>,
    pub template: PathTemplate,
    pub kind: KindFilter,
    pub enrich: Enrich,
    /// Indices of the template's variable segments in `path.split('/')`: kept verbatim in `url.path`.
    pub var_segments: Vec<usize>,
}

/// A compiled `messages[i]`.
#[derive(Debug, Clone)]
pub struct MessageRule {
    pub name: String,
    pub system: Option<String>,
    pub destination: Option<String>,
    pub routing_key: Option<String>,
    pub kind: KindFilter,
    pub enrich: Enrich,
}

/// The validated plugin configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub redactor: Redactor,
    pub lifecycle: Lifecycle,
    pub routes: Vec<HttpRule>,
    pub messages: Vec<MessageRule>,
}

fn cfg_err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

impl CollectorConfig {
    /// Parse and compile; `hmac_key_env` / `hmac_key_file` are read with the standard library (in the
    /// component: WASI environment and preopened files).
    pub fn from_json(bytes: &[u8]) -> Result<CollectorConfig, ConfigError> {
        Self::from_json_with_key_resolver(bytes, &mut |s| s.read_std())
    }

    /// Parse and compile with a caller-supplied reader for `hmac_key_env` / `hmac_key_file`.
    pub fn from_json_with_key_resolver(
        bytes: &[u8],
        resolve: &mut dyn FnMut(HmacKeySource<'_>) -> Result<String, String>,
    ) -> Result<CollectorConfig, ConfigError> {
        let value = json::parse(bytes)
            .map_err(|e| ConfigError::at("", ConfigErrorKind::NotJson(e.to_string())))?;
        let raw = RawCollectorConfig::from_value(value, "")?;
        Self::compile(&raw, resolve)
    }

    pub fn compile(
        raw: &RawCollectorConfig,
        resolve: &mut dyn FnMut(HmacKeySource<'_>) -> Result<String, String>,
    ) -> Result<CollectorConfig, ConfigError> {
        let redactor = Redactor::compile_with_key_resolver(&raw.redaction, resolve)?
            .with_hot_keys(attrs::emitted());
        let lifecycle = Lifecycle::compile(&raw.lifecycle)?;
        if raw.routes.len() > MAX_ROUTES {
            return Err(cfg_err("routes", format!("at most {MAX_ROUTES} rules")));
        }
        if raw.messages.len() > MAX_ROUTES {
            return Err(cfg_err("messages", format!("at most {MAX_ROUTES} rules")));
        }
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| compile_http_rule(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let messages = raw
            .messages
            .iter()
            .enumerate()
            .map(|(i, r)| compile_message_rule(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CollectorConfig {
            redactor,
            lifecycle,
            routes,
            messages,
        })
    }

    /// One line for the host's log on `init`.
    pub fn summary(&self) -> String {
        format!(
            "ordertrace collector plugin {}: {} route rule(s), {} message rule(s), redaction {}, lifecycle {}",
            ordertrace::VERSION,
            self.routes.len(),
            self.messages.len(),
            if self.redactor.is_enabled() { "on" } else { "off" },
            if self.lifecycle.enabled { "on" } else { "off" },
        )
    }
}

/// Where a source is compiled: a route (has a template) or a message rule.
struct SourceCtx<'a> {
    template: Option<&'a PathTemplate>,
    header_prefix: &'static str,
    lowercase_header: bool,
}

const SOURCE_KINDS: &str = "{\"path\"|\"query\"|\"header\"|\"attribute\": ...}";

fn compile_source(
    field: &str,
    raw: &RawSpanSource,
    literal_ok: bool,
    ctx: &SourceCtx<'_>,
) -> Result<SpanSource, ConfigError> {
    let f = match raw {
        RawSpanSource::Literal(s) if literal_ok => {
            return if s.is_empty() {
                Err(cfg_err(field, "a literal must not be empty"))
            } else {
                Ok(SpanSource::Literal(s.clone()))
            };
        }
        RawSpanSource::Literal(_) => {
            return Err(cfg_err(field, format!("expects one of {SOURCE_KINDS}")))
        }
        RawSpanSource::From(f) => f,
    };
    let set = [
        &f.path,
        &f.header,
        &f.query,
        &f.attribute,
        &f.request_body,
        &f.response_body,
    ]
    .iter()
    .filter(|o| o.is_some())
    .count();
    if set != 1 {
        return Err(cfg_err(
            field,
            "exactly one of path, query, header, attribute must be set",
        ));
    }
    for (name, v) in [
        ("request_body", &f.request_body),
        ("response_body", &f.response_body),
    ] {
        if v.is_some() {
            return Err(cfg_err(
                format!("{field}.{name}"),
                "the collector sees spans, not bodies: use {\"attribute\": \"...\"} for a value the \
                 service records as a span attribute",
            ));
        }
    }
    if let Some(var) = &f.path {
        let Some(t) = ctx.template else {
            return Err(cfg_err(
                format!("{field}.path"),
                "only routes have path variables",
            ));
        };
        return t
            .variable_index(var)
            .map(SpanSource::PathVar)
            .ok_or_else(|| {
                cfg_err(
                    format!("{field}.path"),
                    format!(
                        "{var:?} is not a variable of the path template {:?}",
                        t.as_str()
                    ),
                )
            });
    }
    if let Some(q) = &f.query {
        if ctx.template.is_none() {
            return Err(cfg_err(
                format!("{field}.query"),
                "only routes have a query",
            ));
        }
        if q.is_empty() {
            return Err(cfg_err(
                format!("{field}.query"),
                "must name a query parameter",
            ));
        }
        return Ok(SpanSource::Query(q.clone()));
    }
    if let Some(h) = &f.header {
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            return Err(cfg_err(
                format!("{field}.header"),
                format!("{h:?} is not a header name"),
            ));
        }
        let name = if ctx.lowercase_header {
            h.to_ascii_lowercase()
        } else {
            h.clone()
        };
        return Ok(SpanSource::Attribute(format!(
            "{}{name}",
            ctx.header_prefix
        )));
    }
    match &f.attribute {
        Some(k) if !k.is_empty() && k.len() <= 256 => Ok(SpanSource::Attribute(k.clone())),
        _ => Err(cfg_err(
            format!("{field}.attribute"),
            "must name a span attribute (1 to 256 bytes)",
        )),
    }
}

fn compile_enrich(
    at: &dyn Fn(&str) -> String,
    order_id: Option<&RawSpanSource>,
    status: Option<&RawSpanSource>,
    attributes: &[(String, RawSpanSource)],
    ctx: &SourceCtx<'_>,
) -> Result<Enrich, ConfigError> {
    let order_id = match order_id {
        Some(s) => Some(compile_source(&at("order_id"), s, false, ctx)?),
        None => ctx
            .template
            .and_then(|t| t.variable_index("order_id"))
            .map(SpanSource::PathVar),
    };
    let status = status
        .map(|s| compile_source(&at("status"), s, true, ctx))
        .transpose()?;
    let mut attrs = Vec::with_capacity(attributes.len());
    for (name, s) in attributes {
        let field = at(&format!("attributes.{name}"));
        if name.is_empty() || name.len() > 128 {
            return Err(cfg_err(
                at("attributes"),
                format!("attribute name {name:?} must be 1 to 128 bytes"),
            ));
        }
        if attrs::reserved_by_edge(name) {
            return Err(cfg_err(
                field,
                "is set by ordertrace itself; use order_id / status instead",
            ));
        }
        attrs.push((name.clone(), compile_source(&field, s, true, ctx)?));
    }
    Ok(Enrich {
        order_id,
        status,
        attributes: attrs,
    })
}

fn compile_name(
    field: String,
    name: &Option<String>,
    fallback: String,
) -> Result<String, ConfigError> {
    match name {
        Some(n) if n.trim().is_empty() => Err(cfg_err(field, "must not be empty")),
        Some(n) => Ok(n.clone()),
        None => Ok(fallback),
    }
}

fn compile_http_rule(i: usize, r: &RawHttpRule) -> Result<HttpRule, ConfigError> {
    let at = |f: &str| format!("routes[{i}].{f}");
    let template = PathTemplate::parse(&r.path)
        .map_err(|e| ConfigError::at(at("path"), ConfigErrorKind::Template(e)))?;
    let methods: Vec<String> = match &r.method {
        None => Vec::new(),
        Some(RawMethods::One(m)) if m == "*" => Vec::new(),
        Some(RawMethods::One(m)) => vec![m.clone()],
        Some(RawMethods::Many(ms)) => ms.clone(),
    };
    if let Some(m) = methods
        .iter()
        .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(cfg_err(
            at("method"),
            format!("{m:?} is not an uppercase HTTP method"),
        ));
    }
    let fallback = if methods.len() == 1 {
        format!("{} {}", methods.join(""), template.as_str())
    } else {
        template.as_str().to_string()
    };
    let name = compile_name(at("name"), &r.name, fallback)?;
    let ctx = SourceCtx {
        template: Some(&template),
        header_prefix: "http.request.header.",
        lowercase_header: true,
    };
    let enrich = compile_enrich(
        &at,
        r.order_id.as_ref(),
        r.status.as_ref(),
        &r.attributes,
        &ctx,
    )?;
    let var_segments = template_var_segments(template.as_str());
    Ok(HttpRule {
        name,
        methods,
        kind: KindFilter::from_raw(r.kind.unwrap_or(RawSpanKind::Server)),
        enrich,
        var_segments,
        template,
    })
}

fn compile_message_rule(i: usize, r: &RawMessageRule) -> Result<MessageRule, ConfigError> {
    let at = |f: &str| format!("messages[{i}].{f}");
    for (f, v) in [
        ("system", &r.system),
        ("destination", &r.destination),
        ("routing_key", &r.routing_key),
    ] {
        if v.as_deref().is_some_and(str::is_empty) {
            return Err(cfg_err(
                at(f),
                "must not be empty (leave it out to match any)",
            ));
        }
    }
    if r.destination.is_none() && r.routing_key.is_none() {
        return Err(cfg_err(
            format!("messages[{i}]"),
            "needs destination or routing_key (or both)",
        ));
    }
    let fallback = [r.destination.as_deref(), r.routing_key.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let name = compile_name(at("name"), &r.name, fallback)?;
    let ctx = SourceCtx {
        template: None,
        header_prefix: "messaging.header.",
        lowercase_header: false,
    };
    let enrich = compile_enrich(
        &at,
        r.order_id.as_ref(),
        r.status.as_ref(),
        &r.attributes,
        &ctx,
    )?;
    Ok(MessageRule {
        name,
        system: r.system.clone(),
        destination: r.destination.clone(),
        routing_key: r.routing_key.clone(),
        kind: KindFilter::from_raw(r.kind.unwrap_or(RawSpanKind::Any)),
        enrich,
    })
}

// ---------------------------------------------------------------------------------------------
// Processing

/// Why a batch could not be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessError {
    /// Not an OTLP `TracesData` protobuf message.
    Malformed(String),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Malformed(m) => write!(f, "not an OTLP TracesData message: {m}"),
        }
    }
}

impl std::error::Error for ProcessError {}

/// The result of processing a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Nothing needed a change: forward the input bytes as they are.
    Unchanged,
    /// The re-encoded batch.
    Changed(Vec<u8>),
}

impl Processed {
    /// The output bytes, given the input.
    pub fn into_bytes(self, input: Vec<u8>) -> Vec<u8> {
        match self {
            Processed::Unchanged => input,
            Processed::Changed(b) => b,
        }
    }
}

/// Counts of one batch (or, in [`Processor::totals`], of all batches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub batches: u64,
    pub batches_malformed: u64,
    pub spans: u64,
    /// Spans that came out different (redacted or enriched).
    pub spans_changed: u64,
    /// Spans a rule enriched.
    pub spans_enriched: u64,
    /// Spans that already had `order.id` (from an edge or the service): not enriched again.
    pub spans_with_order_id: u64,
    /// Attributes removed by the redactor (span, event, link, resource and scope attributes).
    pub attributes_dropped: u64,
    /// Strings the redactor changed (names, values, messages).
    pub values_redacted: u64,
    /// Status changes recorded in the lifecycle table.
    pub transitions: u64,
}

impl Stats {
    /// The counters as the host sees them (`counter-add` names).
    pub fn counters(&self) -> [(&'static str, u64); 9] {
        [
            ("ordertrace_collector_batches", self.batches),
            (
                "ordertrace_collector_batches_malformed",
                self.batches_malformed,
            ),
            ("ordertrace_collector_spans", self.spans),
            ("ordertrace_collector_spans_changed", self.spans_changed),
            ("ordertrace_collector_spans_enriched", self.spans_enriched),
            (
                "ordertrace_collector_spans_with_order_id",
                self.spans_with_order_id,
            ),
            (
                "ordertrace_collector_attributes_dropped",
                self.attributes_dropped,
            ),
            ("ordertrace_collector_values_redacted", self.values_redacted),
            ("ordertrace_collector_transitions", self.transitions),
        ]
    }

    fn add(&mut self, o: &Stats) {
        self.batches += o.batches;
        self.batches_malformed += o.batches_malformed;
        self.spans += o.spans;
        self.spans_changed += o.spans_changed;
        self.spans_enriched += o.spans_enriched;
        self.spans_with_order_id += o.spans_with_order_id;
        self.attributes_dropped += o.attributes_dropped;
        self.values_redacted += o.values_redacted;
        self.transitions += o.transitions;
    }
}

/// The last status seen per order: a direct-mapped table of `lifecycle.table_size` slots (the edge's
/// shared-data table, in the plugin's memory). A `BTreeMap`, so the plugin needs no random seed.
#[derive(Debug, Default, Clone)]
pub struct LifecycleTable {
    slots: BTreeMap<String, LastStatus>,
}

impl LifecycleTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// A configured processor with its lifecycle table and running totals. One per plugin instance.
#[derive(Debug, Clone)]
pub struct Processor {
    config: CollectorConfig,
    table: LifecycleTable,
    keys: KeyCache,
    totals: Stats,
}

impl Processor {
    pub fn new(config: CollectorConfig) -> Processor {
        Processor {
            config,
            table: LifecycleTable::default(),
            keys: KeyCache::default(),
            totals: Stats::default(),
        }
    }

    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    /// Counts since the processor was created.
    pub fn totals(&self) -> Stats {
        self.totals
    }

    pub fn table(&self) -> &LifecycleTable {
        &self.table
    }

    /// Process one batch; the second value counts this batch alone.
    pub fn process(&mut self, input: &[u8]) -> (Result<Processed, ProcessError>, Stats) {
        let mut stats = Stats::default();
        let out = process_batch(
            &self.config,
            &mut self.table,
            &mut self.keys,
            &mut stats,
            input,
        );
        self.totals.add(&stats);
        (out, stats)
    }
}

/// Process one batch with no lifecycle history (a fresh table): the output bytes.
pub fn process_traces(config: &CollectorConfig, bytes: &[u8]) -> Result<Vec<u8>, ProcessError> {
    let mut table = LifecycleTable::default();
    let mut stats = Stats::default();
    match process_batch(
        config,
        &mut table,
        &mut KeyCache::default(),
        &mut stats,
        bytes,
    )? {
        Processed::Unchanged => Ok(bytes.to_vec()),
        Processed::Changed(b) => Ok(b),
    }
}

/// A status change found in the batch, applied to the lifecycle table in end-time order.
struct Transition {
    at: (usize, usize, usize),
    order_id: String,
    status: String,
    end_ns: u64,
    /// This processor enriched the span: it gets the lifecycle attributes.
    annotate: bool,
}

/// Process one batch against `config`, reading and updating `table`, counting into `stats`.
fn process_batch(
    config: &CollectorConfig,
    table: &mut LifecycleTable,
    keys: &mut KeyCache,
    stats: &mut Stats,
    input: &[u8],
) -> Result<Processed, ProcessError> {
    stats.batches += 1;
    let mut data = match TracesData::decode(input) {
        Ok(d) => d,
        Err(e) => {
            stats.batches_malformed += 1;
            return Err(ProcessError::Malformed(e.to_string()));
        }
    };
    let mut cx = Ctx {
        r: &config.redactor,
        keys,
        stats,
    };
    let mut changed = false;
    let mut transitions = Vec::new();
    for (ri, rs) in data.resource_spans.iter_mut().enumerate() {
        if let Some(res) = rs.resource.as_mut() {
            changed |= cx.redact_kvs(
                &mut res.attributes,
                &mut res.dropped_attributes_count,
                &NO_KEEP,
            );
        }
        for (si, ss) in rs.scope_spans.iter_mut().enumerate() {
            let from_edge = ss.scope.as_ref().is_some_and(|s| s.name == EDGE_SCOPE);
            if let Some(scope) = ss.scope.as_mut() {
                changed |= cx.redact_kvs(
                    &mut scope.attributes,
                    &mut scope.dropped_attributes_count,
                    &NO_KEEP,
                );
            }
            for (pi, sp) in ss.spans.iter_mut().enumerate() {
                cx.stats.spans += 1;
                let (span_changed, t) = process_span(config, &mut cx, sp, from_edge);
                if span_changed {
                    cx.stats.spans_changed += 1;
                    changed = true;
                }
                if let Some((order_id, status, annotate)) = t {
                    transitions.push(Transition {
                        at: (ri, si, pi),
                        order_id,
                        status,
                        end_ns: sp.end_time_unix_nano,
                        annotate,
                    });
                }
            }
        }
    }
    if config.lifecycle.enabled && !transitions.is_empty() {
        changed |= apply_lifecycle(&config.lifecycle, table, &mut data, transitions, cx.stats);
    }
    Ok(if changed {
        Processed::Changed(data.encode_to_vec())
    } else {
        Processed::Unchanged
    })
}

const NO_KEEP: fn(usize) -> bool = |_| false;

/// What matching decided for a span, resolved into owned values before the span is changed.
struct Plan {
    keep: Vec<usize>,
    /// Attributes to add (before redaction), in order.
    add: Vec<(String, String)>,
    /// `(order id, status)` when the status is recorded (success).
    status_changed: Option<(Option<String>, String)>,
}

fn process_span(
    config: &CollectorConfig,
    cx: &mut Ctx<'_>,
    sp: &mut Span,
    from_edge: bool,
) -> (bool, Option<(String, String, bool)>) {
    let has_order_id = str_attr(&sp.attributes, "order.id").is_some();
    let mut plan = plan_span(config, sp, !has_order_id);
    if from_edge && plan.keep.is_empty() {
        if let Some(route) = str_attr(&sp.attributes, "http.route") {
            plan.keep = template_var_segments(route);
        }
    }
    if has_order_id {
        cx.stats.spans_with_order_id += 1;
    }
    let r = &config.redactor;
    let keep = |i: usize| plan.keep.contains(&i);
    let mut changed = cx.redact_text(&mut sp.name);
    changed |= cx.redact_kvs(&mut sp.attributes, &mut sp.dropped_attributes_count, &keep);
    for e in &mut sp.events {
        changed |= cx.redact_text(&mut e.name);
        changed |= cx.redact_kvs(&mut e.attributes, &mut e.dropped_attributes_count, &NO_KEEP);
    }
    for l in &mut sp.links {
        changed |= cx.redact_kvs(&mut l.attributes, &mut l.dropped_attributes_count, &NO_KEEP);
    }
    if let Some(st) = sp.status.as_mut() {
        changed |= cx.redact_text(&mut st.message);
    }

    if !plan.add.is_empty() || plan.status_changed.is_some() {
        cx.stats.spans_enriched += 1;
        changed = true;
        for (k, v) in plan.add {
            if let Redacted::Keep(v) = r.attribute(&k, &v) {
                sp.attributes.push(string_kv(k, v.into_owned()));
            }
        }
        if let Some((order_id, status)) = &plan.status_changed {
            let mut attributes = vec![string_kv("order.status".into(), status.clone())];
            if let Some(id) = order_id {
                attributes.push(string_kv("order.id".into(), id.clone()));
            }
            sp.events.push(span::Event {
                time_unix_nano: sp.end_time_unix_nano,
                name: "order.status_changed".into(),
                attributes,
                dropped_attributes_count: 0,
            });
        }
    }

    let transition = match (
        str_attr(&sp.attributes, "order.id"),
        str_attr(&sp.attributes, "order.status"),
    ) {
        (Some(id), Some(st)) if !id.is_empty() && !st.is_empty() => {
            Some((id.to_string(), st.to_string(), !has_order_id))
        }
        _ => None,
    };
    (changed, transition)
}

/// Match the span (as received) against the rules and resolve the values to add.
fn plan_span(config: &CollectorConfig, sp: &Span, enrich: bool) -> Plan {
    let mut plan = Plan {
        keep: Vec::new(),
        add: Vec::new(),
        status_changed: None,
    };
    let attrs = &sp.attributes;
    if let Some(method) =
        str_attr(attrs, "http.request.method").or_else(|| str_attr(attrs, "http.method"))
    {
        let (path, query) = span_path_query(attrs);
        let route = str_attr(attrs, "http.route");
        for rule in &config.routes {
            if !rule.kind.accepts(sp.kind)
                || !(rule.methods.is_empty() || rule.methods.iter().any(|m| m == method))
            {
                continue;
            }
            let vars: Vec<String> = match (path, route) {
                (Some(p), _) => match rule.template.matches(p) {
                    Some(caps) => (0..caps.len())
                        .map(|v| {
                            caps.get(v)
                                .map(|s| template::percent_decode(s).into_owned())
                                .unwrap_or_default()
                        })
                        .collect(),
                    None => continue,
                },
                (None, Some(rt)) if route_shape_matches(&rule.template, rt) => Vec::new(),
                _ => continue,
            };
            if path.is_some() {
                plan.keep = rule.var_segments.clone();
            }
            if enrich {
                let code = int_attr(attrs, "http.response.status_code")
                    .or_else(|| int_attr(attrs, "http.status_code"));
                let success = code.is_some_and(|c| (200..300).contains(&c));
                let resolve = |s: &SpanSource| resolve_source(s, attrs, &vars, query);
                fill_plan(&mut plan, &rule.enrich, success, &resolve);
            }
            return plan;
        }
        return plan;
    }
    if !enrich || config.messages.is_empty() {
        return plan;
    }
    let system = str_attr(attrs, "messaging.system");
    let destination = str_attr(attrs, "messaging.destination.name");
    if system.is_none() && destination.is_none() {
        return plan;
    }
    let routing_key = str_attr(attrs, "messaging.rabbitmq.destination.routing_key")
        .or_else(|| str_attr(attrs, "messaging.rabbitmq.routing_key"));
    let eq =
        |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| got == Some(w));
    let Some(rule) = config.messages.iter().find(|m| {
        m.kind.accepts(sp.kind)
            && eq(&m.system, system)
            && eq(&m.destination, destination)
            && eq(&m.routing_key, routing_key)
    }) else {
        return plan;
    };
    let failed = sp
        .status
        .as_ref()
        .is_some_and(|s| s.code == status::StatusCode::Error as i32);
    let resolve = |s: &SpanSource| resolve_source(s, attrs, &[], None);
    fill_plan(&mut plan, &rule.enrich, !failed, &resolve);
    plan
}

fn fill_plan(
    plan: &mut Plan,
    e: &Enrich,
    success: bool,
    resolve: &dyn Fn(&SpanSource) -> Option<String>,
) {
    let order_id = e.order_id.as_ref().and_then(resolve);
    if let Some(id) = &order_id {
        plan.add.push(("order.id".into(), id.clone()));
    }
    if let Some(status) = e.status.as_ref().and_then(resolve) {
        let mark = StatusMark::of(success);
        plan.add.push((mark.key().into(), status.clone()));
        if mark == StatusMark::Changed {
            plan.status_changed = Some((order_id, status));
        }
    }
    for (k, s) in &e.attributes {
        if let Some(v) = resolve(s) {
            plan.add.push((k.clone(), v));
        }
    }
}

fn resolve_source(
    s: &SpanSource,
    attrs: &[KeyValue],
    vars: &[String],
    query: Option<&str>,
) -> Option<String> {
    let v = match s {
        SpanSource::Literal(l) => Some(l.clone()),
        SpanSource::PathVar(i) => vars.get(*i).cloned(),
        SpanSource::Query(q) => query.and_then(|qs| template::query_param(qs, q)),
        SpanSource::Attribute(k) => find(attrs, k).and_then(value_text),
    };
    v.filter(|v| !v.is_empty()).map(cut)
}

/// `http.route` (as an SDK reports it: `/api/orders/{id}/submit`, `/api/orders/:id`, `/api/orders/*`)
/// has the shape of the template: the same literal segments, a variable where the template has one.
fn route_shape_matches(t: &PathTemplate, route: &str) -> bool {
    let is_var = |s: &str| s.starts_with('{') || s.starts_with(':') || s == "*";
    let mut ts = t.as_str().split('/');
    let mut rs = route.split('/');
    loop {
        match (ts.next(), rs.next()) {
            (None, None) => return true,
            (Some("**"), _) => return true,
            (Some(a), Some(b)) if is_var(a) && is_var(b) => {}
            (Some(a), Some(b)) if a == b && !is_var(a) => {}
            _ => return false,
        }
    }
}

/// The request path and query of an HTTP span: `url.path` + `url.query`, else `http.target`, else the
/// path and query of `url.full` / `http.url`.
fn span_path_query(attrs: &[KeyValue]) -> (Option<&str>, Option<&str>) {
    if let Some(p) = str_attr(attrs, "url.path") {
        return (Some(p), str_attr(attrs, "url.query"));
    }
    if let Some(t) = str_attr(attrs, "http.target") {
        let (p, q) = template::split_path_query(t);
        return (Some(p), q);
    }
    if let Some(full) = str_attr(attrs, "url.full").or_else(|| str_attr(attrs, "http.url")) {
        let parts = split_url(full);
        return (Some(parts.path), parts.query);
    }
    (None, None)
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

fn apply_lifecycle(
    lc: &Lifecycle,
    table: &mut LifecycleTable,
    data: &mut TracesData,
    mut transitions: Vec<Transition>,
    stats: &mut Stats,
) -> bool {
    transitions.sort_by_key(|t| t.end_ns);
    let mut changed = false;
    for t in transitions {
        let key = lc.slot_key(&lc.order_digest(&t.order_id));
        let previous = table.slots.get(&key).filter(|p| p.order_id == t.order_id);
        // A span older than what the table holds (a late batch) is not a transition.
        if previous.is_some_and(|p| p.at_ns > t.end_ns) {
            continue;
        }
        // Nor is the same status again (a retry, a duplicate, an edge span and the service's span of
        // the same request).
        let Some(judgement) = lc.judge(&t.order_id, previous, &t.status, t.end_ns) else {
            continue;
        };
        table.slots.insert(
            key,
            LastStatus {
                order_id: t.order_id.clone(),
                status: t.status.clone(),
                at_ns: t.end_ns,
            },
        );
        stats.transitions += 1;
        if !t.annotate {
            continue;
        }
        let extra: Vec<KeyValue> = judgement
            .attributes()
            .into_iter()
            .map(|(k, v)| attr_kv(k, v))
            .collect();
        let (ri, si, pi) = t.at;
        let sp = data
            .resource_spans
            .get_mut(ri)
            .and_then(|rs| rs.scope_spans.get_mut(si))
            .and_then(|ss| ss.spans.get_mut(pi));
        if let (Some(sp), false) = (sp, extra.is_empty()) {
            sp.attributes.extend(extra);
            changed = true;
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// Attributes

/// A core attribute as an OTLP key-value.
fn attr_kv(key: String, value: AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => Value::StringValue(s),
        AttrValue::Int(i) => Value::IntValue(i),
        AttrValue::Bool(b) => Value::BoolValue(b),
    };
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_kv(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attrs, key)?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match find(attrs, key)?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A value as text, for a source: strings, numbers and booleans; an array gives its first element
/// (captured headers are string arrays).
fn value_text(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        Value::ArrayValue(a) => a.values.first().and_then(value_text),
        _ => None,
    }
}

enum Verdict {
    Same,
    Changed,
    Drop,
}

/// What the key rules decide for an attribute key, as the collector applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyDecision {
    /// Allowed (`order.id`): the value is kept verbatim.
    Verbatim,
    /// Denied or pseudonymised: [`Redactor::attribute`] decides, whatever the value.
    Keyed,
    /// A [`COLLECTOR_SEMCONV_KEYS`] key: free text for the detectors.
    FreeText,
    /// No key rule: the detectors decide ([`Redactor::attribute`] when they find something).
    Detect,
}

/// The most keys remembered; later new keys are decided each time (a batch with endless distinct keys
/// cannot grow the plugin's memory).
const KEY_CACHE_MAX: usize = 4096;

/// Key decisions of the keys seen so far: SDK spans repeat the same few dozen keys, and a key rule lookup
/// costs more than scanning a short value. A deterministic hasher: the plugin needs no random seed.
#[derive(Debug, Default, Clone)]
pub struct KeyCache {
    map: HashMap<String, KeyDecision, BuildHasherDefault<DefaultHasher>>,
}

impl KeyCache {
    fn decide(&mut self, r: &Redactor, key: &str) -> KeyDecision {
        if let Some(d) = self.map.get(key) {
            return *d;
        }
        let d = match r.key_rule(key) {
            Some((KeyAction::Allow, _)) => KeyDecision::Verbatim,
            Some((KeyAction::Deny, rule))
                if (rule == "name" || rule == "address")
                    && COLLECTOR_SEMCONV_KEYS.contains(&key) =>
            {
                KeyDecision::FreeText
            }
            Some((KeyAction::Deny | KeyAction::Pseudonymise, _)) => KeyDecision::Keyed,
            Some((KeyAction::Detect, _)) | None => KeyDecision::Detect,
        };
        if self.map.len() < KEY_CACHE_MAX {
            self.map.insert(key.to_string(), d);
        }
        d
    }
}

/// What the redaction of one batch works with.
struct Ctx<'a> {
    r: &'a Redactor,
    keys: &'a mut KeyCache,
    stats: &'a mut Stats,
}

impl Ctx<'_> {
    /// Redact a list of attributes in place; a dropped attribute counts in `dropped`. True if anything
    /// changed.
    fn redact_kvs(
        &mut self,
        kvs: &mut Vec<KeyValue>,
        dropped: &mut u32,
        keep: &dyn Fn(usize) -> bool,
    ) -> bool {
        if !self.r.is_enabled() || kvs.is_empty() {
            return false;
        }
        let mut changed = false;
        let before = kvs.len();
        kvs.retain_mut(|kv| {
            let Some(v) = kv.value.as_mut() else {
                return true;
            };
            match self.redact_value(&kv.key, v, keep) {
                Verdict::Same => true,
                Verdict::Changed => {
                    self.stats.values_redacted += 1;
                    changed = true;
                    true
                }
                Verdict::Drop => false,
            }
        });
        let removed = before - kvs.len();
        if removed > 0 {
            self.stats.attributes_dropped += removed as u64;
            *dropped = dropped.saturating_add(u32::try_from(removed).unwrap_or(u32::MAX));
            changed = true;
        }
        changed
    }

    fn redact_value(
        &mut self,
        key: &str,
        v: &mut AnyValue,
        keep: &dyn Fn(usize) -> bool,
    ) -> Verdict {
        let Some(value) = v.value.as_mut() else {
            return Verdict::Same;
        };
        let decision = self.keys.decide(self.r, key);
        let text_form = match value {
            Value::StringValue(s) => return self.redact_string(key, decision, s, keep),
            Value::ArrayValue(a) => {
                let mut out = Verdict::Same;
                for e in &mut a.values {
                    match self.redact_value(key, e, &NO_KEEP) {
                        Verdict::Drop => return Verdict::Drop,
                        Verdict::Changed => out = Verdict::Changed,
                        Verdict::Same => {}
                    }
                }
                return out;
            }
            Value::KvlistValue(l) => {
                let before = l.values.len();
                let mut out = Verdict::Same;
                l.values.retain_mut(|kv| {
                    let Some(v) = kv.value.as_mut() else {
                        return true;
                    };
                    match self.redact_value(&kv.key, v, &NO_KEEP) {
                        Verdict::Drop => false,
                        Verdict::Changed => {
                            out = Verdict::Changed;
                            true
                        }
                        Verdict::Same => true,
                    }
                });
                return if l.values.len() != before {
                    Verdict::Changed
                } else {
                    out
                };
            }
            // A number can be a phone or a card; a key rule applies whatever the type. Numbers below
            // 10^9 have too few digits for any detector, so only their key decides.
            Value::IntValue(i) => match decision {
                KeyDecision::Keyed => i.to_string(),
                KeyDecision::Detect | KeyDecision::FreeText
                    if i.unsigned_abs() >= 1_000_000_000 =>
                {
                    i.to_string()
                }
                _ => return Verdict::Same,
            },
            Value::BoolValue(b) if decision == KeyDecision::Keyed => b.to_string(),
            Value::DoubleValue(d) if decision == KeyDecision::Keyed => d.to_string(),
            Value::BytesValue(_) if decision == KeyDecision::Keyed => String::new(),
            _ => return Verdict::Same,
        };
        let out = match decision {
            KeyDecision::FreeText => Redacted::Keep(self.r.text(&text_form)),
            _ => self.r.attribute(key, &text_form),
        };
        match out {
            Redacted::Drop => Verdict::Drop,
            Redacted::Keep(Cow::Borrowed(_)) => Verdict::Same,
            Redacted::Keep(Cow::Owned(s)) => {
                *value = Value::StringValue(s);
                Verdict::Changed
            }
        }
    }

    fn redact_string(
        &mut self,
        key: &str,
        decision: KeyDecision,
        s: &mut String,
        keep: &dyn Fn(usize) -> bool,
    ) -> Verdict {
        let r = self.r;
        let out = match (key, decision) {
            (_, KeyDecision::Verbatim) => return Verdict::Same,
            (_, KeyDecision::Keyed) => match r.attribute(key, s) {
                Redacted::Drop => return Verdict::Drop,
                Redacted::Keep(c) => c,
            },
            ("url.path", _) => r.url_path(s, keep),
            ("url.query", _) => r.url_query(s),
            ("http.target", _) => redact_target(r, s, keep),
            ("url.full" | "http.url", _) => redact_url(r, s, keep),
            (_, KeyDecision::FreeText) => r.text(s),
            // The detectors alone; when they find something, `attribute` gives the exact outcome (a
            // `drop` detector drops the attribute rather than the text).
            (_, KeyDecision::Detect) => match r.text(s) {
                Cow::Borrowed(_) => return Verdict::Same,
                Cow::Owned(_) => match r.attribute(key, s) {
                    Redacted::Drop => return Verdict::Drop,
                    Redacted::Keep(c) => c,
                },
            },
        };
        match out {
            Cow::Borrowed(_) => Verdict::Same,
            Cow::Owned(new) => {
                *s = new;
                Verdict::Changed
            }
        }
    }

    fn redact_text(&mut self, s: &mut String) -> bool {
        if s.is_empty() {
            return false;
        }
        match self.r.text(s) {
            Cow::Borrowed(_) => false,
            Cow::Owned(new) => {
                *s = new;
                self.stats.values_redacted += 1;
                true
            }
        }
    }
}

/// `http.target`: `path?query`.
fn redact_target<'a>(r: &Redactor, t: &'a str, keep: &dyn Fn(usize) -> bool) -> Cow<'a, str> {
    let (path, query) = template::split_path_query(t);
    let p = r.url_path(path, keep);
    let q = query.map(|q| r.url_query(q));
    if matches!(p, Cow::Borrowed(_)) && q.as_ref().is_none_or(|q| matches!(q, Cow::Borrowed(_))) {
        return Cow::Borrowed(t);
    }
    let mut out = p.into_owned();
    if let Some(q) = q {
        out.push('?');
        out.push_str(&q);
    }
    Cow::Owned(out)
}

/// The pieces of an absolute URL (`scheme://authority/path?query#fragment`); a string without `://` is
/// all path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `scheme://` (empty without one).
    pub scheme: &'a str,
    pub userinfo: Option<&'a str>,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

pub fn split_url(url: &str) -> UrlParts<'_> {
    let (scheme, after) = match url.find("://") {
        Some(i) => url.split_at_checked(i + 3).unwrap_or(("", url)),
        None => ("", url),
    };
    let (authority, rest) = if scheme.is_empty() {
        ("", after)
    } else {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        after.split_at_checked(end).unwrap_or((after, ""))
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    UrlParts {
        scheme,
        userinfo,
        host,
        path,
        query,
        fragment,
    }
}

/// `url.full` / `http.url`: credentials become `REDACTED:REDACTED` (as the semantic conventions ask), the
/// path per segment, the query per parameter, the fragment as free text.
fn redact_url<'a>(r: &Redactor, url: &'a str, keep: &dyn Fn(usize) -> bool) -> Cow<'a, str> {
    let u = split_url(url);
    let creds = u.userinfo.filter(|x| *x != "REDACTED:REDACTED").is_some();
    let path = r.url_path(u.path, keep);
    let query = u.query.map(|q| r.url_query(q));
    let fragment = u.fragment.map(|f| r.text(f));
    let borrowed =
        |c: &Option<Cow<'_, str>>| c.as_ref().is_none_or(|c| matches!(c, Cow::Borrowed(_)));
    if !creds && matches!(path, Cow::Borrowed(_)) && borrowed(&query) && borrowed(&fragment) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + 16);
    out.push_str(u.scheme);
    if u.userinfo.is_some() {
        out.push_str("REDACTED:REDACTED@");
    }
    out.push_str(u.host);
    out.push_str(&path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(&q);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&f);
    }
    Cow::Owned(out)
}

#[cfg(all(feature = "component", target_arch = "wasm32"))]
mod component;
#[cfg(all(feature = "otelwasm", target_arch = "wasm32"))]
mod otelwasm;

#[cfg(test)]
mod tests;
