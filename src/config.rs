//! Plugin configuration: serde into raw structs (unknown keys rejected), then compiled once into a
//! validated [`Config`]. Every error names the field it is about (`routes[2].status.request_body`), and
//! the same code backs the filter's `on_configure` and `ordertrace check`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::jsonscan::JsonPointer;
use crate::lifecycle::{Lifecycle, RawLifecycle};
use crate::redact::{RawRedaction, Redactor};
use crate::template::PathTemplate;

/// A configuration error: the field (a path into the JSON config) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// Raw (serde) shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub service: String,
    #[serde(default)]
    pub public_edge: bool,
    pub collector: RawCollector,
    #[serde(default)]
    pub sampling: RawSampling,
    #[serde(default)]
    pub body: RawBody,
    #[serde(default)]
    pub redaction: RawRedaction,
    #[serde(default)]
    pub lifecycle: RawLifecycle,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Present when this plugin instance is the AMQP network filter (`envoy.filters.network.wasm`).
    #[serde(default)]
    pub amqp: Option<crate::amqp::RawAmqp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollector {
    pub cluster: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_collector_path")]
    pub path: String,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_max_batch_spans")]
    pub max_batch_spans: usize,
    #[serde(default = "default_max_queue_spans")]
    pub max_queue_spans: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_collector_path() -> String {
    "/v1/traces".to_string()
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_max_batch_spans() -> usize {
    512
}
fn default_max_queue_spans() -> usize {
    8192
}
fn default_timeout_ms() -> u64 {
    5000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampling {
    #[serde(default = "default_ratio")]
    pub ratio: f64,
}

impl Default for RawSampling {
    fn default() -> Self {
        RawSampling {
            ratio: default_ratio(),
        }
    }
}

fn default_ratio() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBody {
    #[serde(default = "default_body_max_bytes")]
    pub max_bytes: usize,
}

impl Default for RawBody {
    fn default() -> Self {
        RawBody {
            max_bytes: default_body_max_bytes(),
        }
    }
}

fn default_body_max_bytes() -> usize {
    65536
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub method: Option<RawMethods>,
    pub path: String,
    #[serde(default)]
    pub order_id: Option<RawSource>,
    #[serde(default)]
    pub status: Option<RawSource>,
    #[serde(default)]
    pub attributes: BTreeMap<String, RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawMethods {
    One(String),
    Many(Vec<String>),
}

/// Where a value comes from: a literal string, or exactly one of the keyed sources.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSource {
    Literal(String),
    From(RawFrom),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrom {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub request_body: Option<String>,
    #[serde(default)]
    pub response_body: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Compiled shape

/// The validated configuration the filter runs with.
pub struct Config {
    pub service: String,
    pub public_edge: bool,
    pub collector: Collector,
    pub sampling_ratio: f64,
    pub body_max_bytes: usize,
    pub routes: Vec<Route>,
    pub redactor: Redactor,
    /// The order lifecycle model: statuses, transitions, SLAs, the lifecycle trace namespace.
    pub lifecycle: Lifecycle,
    /// Lowercase names of every header some route reads, so the request-headers pass keeps only those.
    pub header_names: Vec<String>,
    /// The AMQP section: when present, the plugin runs as a network filter (one stream per TCP connection).
    pub amqp: Option<crate::amqp::Amqp>,
}

#[derive(Debug, Clone)]
pub struct Collector {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub flush_interval_ms: u64,
    pub max_batch_spans: usize,
    pub max_queue_spans: usize,
    pub timeout_ms: u64,
}

/// A compiled route.
pub struct Route {
    /// The span name: the route's `name`, or `METHOD /template`.
    pub span_name: String,
    /// Allowed methods (uppercase); empty means any.
    pub methods: Vec<String>,
    pub template: PathTemplate,
    pub order_id: Option<Source>,
    pub status: Option<Source>,
    pub attributes: Vec<(String, Source)>,
    /// JSON pointers into the request body; `Source::RequestBody(i)` indexes this list.
    pub request_pointers: Vec<JsonPointer>,
    /// JSON pointers into the response body; `Source::ResponseBody(i)` indexes this list.
    pub response_pointers: Vec<JsonPointer>,
}

/// A compiled value source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Literal(String),
    /// Index of the template variable.
    PathVar(usize),
    /// Lowercase header name.
    Header(String),
    Query(String),
    RequestBody(usize),
    ResponseBody(usize),
}

impl Route {
    pub fn matches_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
    pub fn needs_request_body(&self) -> bool {
        !self.request_pointers.is_empty()
    }
    pub fn needs_response_body(&self) -> bool {
        !self.response_pointers.is_empty()
    }
}

/// Limits that keep a misconfiguration from turning into unbounded memory in the proxy.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_QUEUE_SPANS: usize = 1_000_000;
pub const MAX_ROUTES: usize = 1024;

impl Config {
    /// Parse and compile a JSON plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        Config::compile(parse_raw(bytes)?)
    }

    pub fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.service.trim().is_empty() {
            return Err(ConfigError::new(
                "service",
                "must be a non-empty service name (it becomes service.name)",
            ));
        }
        let c = &raw.collector;
        if c.cluster.trim().is_empty() {
            return Err(ConfigError::new(
                "collector.cluster",
                "must name the Envoy cluster of the OTLP collector",
            ));
        }
        if !c.path.starts_with('/') {
            return Err(ConfigError::new(
                "collector.path",
                format!("must start with '/' (got {:?})", c.path),
            ));
        }
        if !(10..=60_000).contains(&c.flush_interval_ms) {
            return Err(ConfigError::new(
                "collector.flush_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        if !(100..=300_000).contains(&c.timeout_ms) {
            return Err(ConfigError::new(
                "collector.timeout_ms",
                "must be between 100 and 300000",
            ));
        }
        if c.max_queue_spans == 0 || c.max_queue_spans > MAX_QUEUE_SPANS {
            return Err(ConfigError::new(
                "collector.max_queue_spans",
                format!("must be between 1 and {MAX_QUEUE_SPANS}"),
            ));
        }
        if c.max_batch_spans == 0 || c.max_batch_spans > c.max_queue_spans {
            return Err(ConfigError::new(
                "collector.max_batch_spans",
                "must be at least 1 and at most collector.max_queue_spans",
            ));
        }
        let collector = Collector {
            cluster: c.cluster.clone(),
            authority: c.authority.clone().unwrap_or_else(|| c.cluster.clone()),
            path: c.path.clone(),
            flush_interval_ms: c.flush_interval_ms,
            max_batch_spans: c.max_batch_spans,
            max_queue_spans: c.max_queue_spans,
            timeout_ms: c.timeout_ms,
        };
        if !(0.0..=1.0).contains(&raw.sampling.ratio) || raw.sampling.ratio.is_nan() {
            return Err(ConfigError::new(
                "sampling.ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if raw.body.max_bytes > MAX_BODY_BYTES {
            return Err(ConfigError::new(
                "body.max_bytes",
                format!("must be at most {MAX_BODY_BYTES}"),
            ));
        }
        if raw.routes.len() > MAX_ROUTES {
            return Err(ConfigError::new(
                "routes",
                format!("at most {MAX_ROUTES} routes"),
            ));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.iter().enumerate() {
            routes.push(compile_route(i, r)?);
        }
        let redactor =
            Redactor::compile(&raw.redaction).map_err(|e| ConfigError::new(e.field, e.message))?;
        let lifecycle = Lifecycle::compile(&raw.lifecycle)?;
        let mut header_names: Vec<String> = Vec::new();
        for r in &routes {
            let sources = r
                .order_id
                .iter()
                .chain(r.status.iter())
                .chain(r.attributes.iter().map(|(_, s)| s));
            for s in sources {
                if let Source::Header(h) = s {
                    if !header_names.contains(h) {
                        header_names.push(h.clone());
                    }
                }
            }
        }
        let amqp = match &raw.amqp {
            Some(a) => Some(crate::amqp::Amqp::compile(a)?),
            None => None,
        };
        Ok(Config {
            amqp,
            service: raw.service,
            public_edge: raw.public_edge,
            collector,
            sampling_ratio: raw.sampling.ratio,
            body_max_bytes: raw.body.max_bytes,
            routes,
            redactor,
            lifecycle,
            header_names,
        })
    }

    /// The first route that matches `method` and `path` (query ignored), with its captures.
    pub fn find_route<'c, 'p>(
        &'c self,
        method: &str,
        path: &'p str,
    ) -> Option<(usize, &'c Route, crate::template::Captures<'p>)> {
        self.routes.iter().enumerate().find_map(|(i, r)| {
            if !r.matches_method(method) {
                return None;
            }
            r.template.matches(path).map(|caps| (i, r, caps))
        })
    }
}

/// Top-level keys of the configuration, in the order they are documented.
const TOP_LEVEL_KEYS: [&str; 9] = [
    "service",
    "public_edge",
    "collector",
    "sampling",
    "body",
    "redaction",
    "lifecycle",
    "routes",
    "amqp",
];

/// Parse the JSON into the raw shape, section by section, so an error carries the path of the field.
///
/// Sections are deserialized from a parsed `serde_json::Value` (rather than with a path-tracking
/// deserializer) because every `Deserialize` impl is then instantiated once: this keeps the filter small.
pub fn parse_raw(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ConfigError::new("", format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut top) = value else {
        return Err(ConfigError::new(
            "",
            "the configuration must be a JSON object",
        ));
    };
    if let Some(unknown) = top.keys().find(|k| !TOP_LEVEL_KEYS.contains(&k.as_str())) {
        return Err(ConfigError::new(
            unknown.clone(),
            format!(
                "unknown field `{unknown}`, expected one of {}",
                TOP_LEVEL_KEYS.join(", ")
            ),
        ));
    }
    fn take<T: serde::de::DeserializeOwned>(
        top: &mut serde_json::Map<String, serde_json::Value>,
        key: &str,
    ) -> Result<Option<T>, ConfigError> {
        match top.remove(key) {
            None => Ok(None),
            Some(v) => section(v, key).map(Some),
        }
    }
    let service: String = take(&mut top, "service")?
        .ok_or_else(|| ConfigError::new("service", "missing field `service`"))?;
    let collector: RawCollector = take(&mut top, "collector")?
        .ok_or_else(|| ConfigError::new("collector", "missing field `collector`"))?;
    let routes = match top.remove("routes") {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| section(v, &format!("routes[{i}]")))
            .collect::<Result<Vec<RawRoute>, _>>()?,
        Some(_) => return Err(ConfigError::new("routes", "must be an array of routes")),
    };
    Ok(RawConfig {
        service,
        public_edge: take(&mut top, "public_edge")?.unwrap_or(false),
        collector,
        sampling: take(&mut top, "sampling")?.unwrap_or_default(),
        body: take(&mut top, "body")?.unwrap_or_default(),
        redaction: take(&mut top, "redaction")?.unwrap_or_default(),
        lifecycle: take(&mut top, "lifecycle")?.unwrap_or_default(),
        routes,
        amqp: match top.remove("amqp") {
            None => None,
            Some(v) => Some(crate::amqp::config::raw_from_value(v)?),
        },
    })
}

/// Deserialize one section; an unknown or missing key is reported at its own path (`collector.flush_ms`).
pub fn section<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    path: &str,
) -> Result<T, ConfigError> {
    serde_json::from_value(v).map_err(|e| {
        let msg = e.to_string();
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| msg.strip_prefix(p))
            .and_then(|rest| rest.split('`').next());
        match named {
            Some(field) => ConfigError::new(format!("{path}.{field}"), msg),
            None => ConfigError::new(path, msg),
        }
    })
}

fn compile_route(i: usize, r: &RawRoute) -> Result<Route, ConfigError> {
    let at = |f: &str| format!("routes[{i}].{f}");
    let template =
        PathTemplate::parse(&r.path).map_err(|e| ConfigError::new(at("path"), e.message))?;
    let methods: Vec<String> = match &r.method {
        None => Vec::new(),
        Some(RawMethods::One(m)) if m == "*" => Vec::new(),
        Some(RawMethods::One(m)) => vec![m.clone()],
        Some(RawMethods::Many(ms)) => ms.clone(),
    };
    for m in &methods {
        let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
        if !valid {
            return Err(ConfigError::new(
                at("method"),
                format!("{m:?} is not an uppercase HTTP method"),
            ));
        }
    }
    let span_name = match &r.name {
        Some(n) if n.trim().is_empty() => {
            return Err(ConfigError::new(at("name"), "must not be empty"))
        }
        Some(n) => n.clone(),
        None if methods.len() == 1 => format!("{} {}", methods.join(""), template.as_str()),
        None => template.as_str().to_string(),
    };
    let mut request_pointers = Vec::new();
    let mut response_pointers = Vec::new();
    let mut compile_source = |field: String,
                              raw: &RawSource,
                              literal_ok: bool|
     -> Result<Source, ConfigError> {
        match raw {
            RawSource::Literal(s) if literal_ok => {
                if s.is_empty() {
                    Err(ConfigError::new(field, "a literal must not be empty"))
                } else {
                    Ok(Source::Literal(s.clone()))
                }
            }
            RawSource::Literal(_) => Err(ConfigError::new(
                field,
                "expects one of {\"path\"|\"header\"|\"query\"|\"request_body\"|\"response_body\": ...}",
            )),
            RawSource::From(f) => {
                let set = [&f.path, &f.header, &f.query, &f.request_body, &f.response_body]
                    .iter()
                    .filter(|o| o.is_some())
                    .count();
                if set != 1 {
                    return Err(ConfigError::new(
                        field,
                        "exactly one of path, header, query, request_body, response_body must be set",
                    ));
                }
                if let Some(var) = &f.path {
                    return template.variable_index(var).map(Source::PathVar).ok_or_else(|| {
                        ConfigError::new(
                            format!("{field}.path"),
                            format!("{var:?} is not a variable of the path template {:?}", template.as_str()),
                        )
                    });
                }
                if let Some(h) = &f.header {
                    let valid = !h.is_empty()
                        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
                    if !valid {
                        return Err(ConfigError::new(format!("{field}.header"), format!("{h:?} is not a header name")));
                    }
                    return Ok(Source::Header(h.to_ascii_lowercase()));
                }
                if let Some(q) = &f.query {
                    if q.is_empty() {
                        return Err(ConfigError::new(format!("{field}.query"), "must name a query parameter"));
                    }
                    return Ok(Source::Query(q.clone()));
                }
                if let Some(p) = &f.request_body {
                    let ptr = JsonPointer::parse(p)
                        .map_err(|e| ConfigError::new(format!("{field}.request_body"), e.message))?;
                    request_pointers.push(ptr);
                    return Ok(Source::RequestBody(request_pointers.len() - 1));
                }
                if let Some(p) = &f.response_body {
                    let ptr = JsonPointer::parse(p)
                        .map_err(|e| ConfigError::new(format!("{field}.response_body"), e.message))?;
                    response_pointers.push(ptr);
                    return Ok(Source::ResponseBody(response_pointers.len() - 1));
                }
                Err(ConfigError::new(field, "no source set"))
            }
        }
    };
    let order_id = match &r.order_id {
        Some(s) => Some(compile_source(at("order_id"), s, false)?),
        None => template.variable_index("order_id").map(Source::PathVar),
    };
    let status = match &r.status {
        Some(s) => Some(compile_source(at("status"), s, true)?),
        None => None,
    };
    let mut attributes = Vec::with_capacity(r.attributes.len());
    for (name, s) in &r.attributes {
        if name.is_empty() || name.len() > 128 {
            return Err(ConfigError::new(
                at("attributes"),
                format!("attribute name {name:?} must be 1 to 128 bytes"),
            ));
        }
        if RESERVED_ATTRIBUTES.contains(&name.as_str()) {
            return Err(ConfigError::new(
                format!("routes[{i}].attributes.{name}"),
                "is set by the filter itself; use order_id / status instead",
            ));
        }
        attributes.push((
            name.clone(),
            compile_source(format!("routes[{i}].attributes.{name}"), s, true)?,
        ));
    }
    Ok(Route {
        span_name,
        methods,
        template,
        order_id,
        status,
        attributes,
        request_pointers,
        response_pointers,
    })
}

/// Attributes the filter sets itself; a route may not configure them.
pub const RESERVED_ATTRIBUTES: &[&str] = &[
    "order.id",
    "order.status",
    "order.status.attempted",
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "url.path",
    "url.query",
    "server.address",
    "server.port",
    "error.type",
    "order.status.previous",
    "order.stage.duration_ms",
    "order.transition.unexpected",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    const BASE: &str =
        r#""service":"shop-api","collector":{"cluster":"otlp"},"redaction":{"enabled":false}"#;

    fn cfg(extra: &str) -> Result<Config, ConfigError> {
        Config::from_json(format!("{{{BASE}{extra}}}").as_bytes())
    }

    #[test]
    fn reference_config_compiles() {
        let c = cfg(r#","routes":[
            {"name":"shop.create","method":"POST","path":"/api/orders","order_id":{"response_body":"/id"},"status":"INITIATED"},
            {"name":"shop.submit","method":"POST","path":"/api/orders/{order_id}/submit","status":"SUBMITTED"},
            {"name":"mes.status","method":["PUT","PATCH"],"path":"/api/orders/{order_id}/status","status":{"request_body":"/status"},
             "attributes":{"operator.id":{"request_body":"/operatorId"},"order.partner_id":{"header":"X-Partner"}}}]"#)
        .unwrap();
        assert_eq!(c.routes.len(), 3);
        assert_eq!(c.routes[0].order_id, Some(Source::ResponseBody(0)));
        assert_eq!(c.routes[1].order_id, Some(Source::PathVar(0)));
        assert_eq!(c.routes[2].status, Some(Source::RequestBody(0)));
        assert_eq!(c.routes[2].methods, vec!["PUT", "PATCH"]);
        assert_eq!(c.header_names, vec!["x-partner"]);
        assert_eq!(c.collector.authority, "otlp");
        assert_eq!(c.collector.max_batch_spans, 512);
    }

    #[test]
    fn span_name_falls_back_to_method_and_template() {
        let c =
            cfg(r#","routes":[{"method":"GET","path":"/api/orders/{order_id}"},{"path":"/x/**"}]"#)
                .unwrap();
        assert_eq!(c.routes[0].span_name, "GET /api/orders/{order_id}");
        assert_eq!(c.routes[1].span_name, "/x/**");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"collector":{"cluster":"c"}}"#,
                "service",
                "missing field `service`",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"bogus":1}"#,
                "bogus",
                "unknown field `bogus`",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c","flush_ms":1}}"#,
                "collector.flush_ms",
                "unknown field `flush_ms`",
            ),
            (
                r#"{"service":"","collector":{"cluster":"c"}}"#,
                "service",
                "non-empty",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c","path":"v1"}}"#,
                "collector.path",
                "start with '/'",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c","max_batch_spans":0}}"#,
                "collector.max_batch_spans",
                "at least 1",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c","max_batch_spans":10,"max_queue_spans":5}}"#,
                "collector.max_batch_spans",
                "at most",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"sampling":{"ratio":1.5}}"#,
                "sampling.ratio",
                "between",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"body":{"max_bytes":999999999}}"#,
                "body.max_bytes",
                "at most",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"api"}]}"#,
                "routes[0].path",
                "",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","method":"get"}]}"#,
                "routes[0].method",
                "uppercase",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a/{id}","order_id":{"path":"order_id"}}]}"#,
                "routes[0].order_id.path",
                "not a variable",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","order_id":"ORD-1"}]}"#,
                "routes[0].order_id",
                "expects one of",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","status":{"header":"x","query":"y"}}]}"#,
                "routes[0].status",
                "exactly one",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","status":{"request_body":"status"}}]}"#,
                "routes[0].status.request_body",
                "",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","attributes":{"order.id":"x"}}]}"#,
                "routes[0].attributes.order.id",
                "set by the filter",
            ),
        ];
        for (json, field, msg) in cases {
            match Config::from_json(json.as_bytes()) {
                Ok(_) => panic!("accepted: {json}"),
                Err(e) => {
                    assert_eq!(&e.field, field, "field for {json}: {e}");
                    assert!(e.message.contains(msg), "message for {json}: {e}");
                }
            }
        }
    }

    #[test]
    fn not_json_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"{", b"\xff\xfe", b"[]", b"null"] {
            assert!(Config::from_json(bad).is_err());
        }
    }

    #[test]
    fn find_route_checks_method_then_template() {
        let c = cfg(r#","routes":[{"method":"POST","path":"/api/orders/{order_id}/submit"},{"path":"/api/**"}]"#).unwrap();
        let (i, _, caps) = c
            .find_route("POST", "/api/orders/ORD-1/submit?x=1")
            .unwrap();
        assert_eq!(i, 0);
        assert_eq!(caps.get(0), Some("ORD-1"));
        let (i, _, _) = c.find_route("GET", "/api/orders/ORD-1/submit").unwrap();
        assert_eq!(i, 1);
        assert!(c.find_route("GET", "/health").is_none());
    }
}
