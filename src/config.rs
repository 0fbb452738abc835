//! Plugin configuration: JSON ([`crate::json`]) read into raw structs by [`crate::json::read`] (unknown keys rejected,
//! defaults filled in), then compiled once into a validated [`Config`]. Every error names the field it is
//! about (`routes[2].status.request_body`), and the same code backs the filter's `on_configure` and
//! `ordertrace check`.

use crate::json::read::{self, Object};
use crate::json::{self, Value};
use crate::jsonscan::JsonPointer;
use crate::order::{attrs, Lifecycle, RawLifecycle};
use crate::redact::{RawRedaction, Redactor};
use crate::template::PathTemplate;

pub use crate::error::{ConfigError, ConfigErrorKind};

// ---------------------------------------------------------------------------------------------
// Raw shape: the JSON as written, read by `from_value` (unknown keys rejected, defaults filled in)

#[derive(Debug)]
pub struct RawConfig {
    pub service: String,
    pub public_edge: bool,
    pub collector: RawCollector,
    pub sampling: RawSampling,
    pub body: RawBody,
    pub redaction: RawRedaction,
    pub lifecycle: RawLifecycle,
    pub routes: Vec<RawRoute>,
    /// Present when this plugin instance is the AMQP network filter (`envoy.filters.network.wasm`).
    /// The AMQP module's section, read and compiled by `ordertrace-amqp` (the HTTP module refuses it).
    pub amqp: Option<Value>,
}

impl RawConfig {
    /// The whole configuration object (`v` is the document).
    pub fn from_value(v: Value, path: &str) -> Result<RawConfig, ConfigError> {
        let mut o = Object::new(v, path, TOP_LEVEL_KEYS)?;
        let raw = RawConfig {
            service: o.req_string("service")?,
            public_edge: o.bool_or("public_edge", false)?,
            collector: {
                let (v, path) = o.required("collector")?;
                RawCollector::from_value(v, &path)?
            },
            sampling: o.or_else("sampling", RawSampling::default, RawSampling::from_value)?,
            body: o.or_else("body", RawBody::default, RawBody::from_value)?,
            redaction: o.or_else("redaction", RawRedaction::default, RawRedaction::from_value)?,
            lifecycle: o.or_else("lifecycle", RawLifecycle::default, RawLifecycle::from_value)?,
            routes: o.or_else("routes", Vec::new, |v, path| {
                read::array(v, path)?
                    .into_iter()
                    .map(|(v, path)| RawRoute::from_value(v, &path))
                    .collect()
            })?,
            amqp: o.or_else(
                "amqp",
                || None,
                |v, path| match v {
                    Value::Object(_) => Ok(Some(v)),
                    _ => Err(read::invalid_type(&v, path, "an object")),
                },
            )?,
        };
        o.finish()?;
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawCollector {
    pub cluster: String,
    pub authority: Option<String>,
    /// Default `/v1/traces`.
    pub path: String,
    /// Default 1000.
    pub flush_interval_ms: u64,
    /// Default 512.
    pub max_batch_spans: usize,
    /// Default 8192.
    pub max_queue_spans: usize,
    /// Default 5000.
    pub timeout_ms: u64,
}

impl RawCollector {
    pub fn from_value(v: Value, path: &str) -> Result<RawCollector, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "cluster",
                "authority",
                "path",
                "flush_interval_ms",
                "max_batch_spans",
                "max_queue_spans",
                "timeout_ms",
            ],
        )?;
        let raw = RawCollector {
            cluster: o.req_string("cluster")?,
            authority: o.opt_string("authority")?,
            path: o.string_or("path", "/v1/traces")?,
            flush_interval_ms: o.u64_or("flush_interval_ms", 1000)?,
            max_batch_spans: o.usize_or("max_batch_spans", 512)?,
            max_queue_spans: o.usize_or("max_queue_spans", 8192)?,
            timeout_ms: o.u64_or("timeout_ms", 5000)?,
        };
        o.finish()?;
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawSampling {
    /// Default 1.0.
    pub ratio: f64,
}

impl Default for RawSampling {
    fn default() -> Self {
        RawSampling { ratio: 1.0 }
    }
}

impl RawSampling {
    pub fn from_value(v: Value, path: &str) -> Result<RawSampling, ConfigError> {
        let mut o = Object::new(v, path, &["ratio"])?;
        let raw = RawSampling {
            ratio: o.f64_or("ratio", 1.0)?,
        };
        o.finish()?;
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawBody {
    /// Default 65536.
    pub max_bytes: usize,
}

impl Default for RawBody {
    fn default() -> Self {
        RawBody { max_bytes: 65536 }
    }
}

impl RawBody {
    pub fn from_value(v: Value, path: &str) -> Result<RawBody, ConfigError> {
        let mut o = Object::new(v, path, &["max_bytes"])?;
        let raw = RawBody {
            max_bytes: o.usize_or("max_bytes", RawBody::default().max_bytes)?,
        };
        o.finish()?;
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawRoute {
    pub name: Option<String>,
    pub method: Option<RawMethods>,
    pub path: String,
    pub order_id: Option<RawSource>,
    pub status: Option<RawSource>,
    /// Sorted by name.
    pub attributes: Vec<(String, RawSource)>,
}

impl RawRoute {
    pub fn from_value(v: Value, path: &str) -> Result<RawRoute, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &["name", "method", "path", "order_id", "status", "attributes"],
        )?;
        let raw = RawRoute {
            name: o.opt_string("name")?,
            method: o.opt("method", RawMethods::from_value)?,
            path: o.req_string("path")?,
            order_id: o.opt("order_id", RawSource::from_value)?,
            status: o.opt("status", RawSource::from_value)?,
            attributes: o.or_else("attributes", Vec::new, |v, path| {
                read::map(v, path, RawSource::from_value)
            })?,
        };
        o.finish()?;
        Ok(raw)
    }
}

/// `"POST"` or `["PUT", "PATCH"]`.
#[derive(Debug)]
pub enum RawMethods {
    One(String),
    Many(Vec<String>),
}

impl RawMethods {
    pub fn from_value(v: Value, path: &str) -> Result<RawMethods, ConfigError> {
        match v {
            Value::String(s) => Ok(RawMethods::One(s)),
            Value::Array(_) => read::strings(v, path).map(RawMethods::Many),
            other => Err(read::invalid_type(
                &other,
                path,
                "a method name or an array of method names",
            )),
        }
    }
}

/// Where a value comes from: a literal string, or exactly one of the keyed sources.
#[derive(Debug)]
pub enum RawSource {
    Literal(String),
    From(RawFrom),
}

impl RawSource {
    pub fn from_value(v: Value, path: &str) -> Result<RawSource, ConfigError> {
        match v {
            Value::String(s) => Ok(RawSource::Literal(s)),
            Value::Object(_) => RawFrom::from_value(v, path).map(RawSource::From),
            other => Err(read::invalid_type(
                &other,
                path,
                "a literal string or an object such as {\"header\": \"x-order-id\"}",
            )),
        }
    }
}

#[derive(Debug)]
pub struct RawFrom {
    pub path: Option<String>,
    pub header: Option<String>,
    pub query: Option<String>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

impl RawFrom {
    pub fn from_value(v: Value, path: &str) -> Result<RawFrom, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &["path", "header", "query", "request_body", "response_body"],
        )?;
        let raw = RawFrom {
            path: o.opt_string("path")?,
            header: o.opt_string("header")?,
            query: o.opt_string("query")?,
            request_body: o.opt_string("request_body")?,
            response_body: o.opt_string("response_body")?,
        };
        o.finish()?;
        Ok(raw)
    }
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
    /// The `amqp` section as written (an object), for the AMQP module to compile.
    pub amqp: Option<Value>,
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
    /// Indices of the template's `{variable}` segments, which `url.path` keeps unredacted (computed once
    /// here rather than per request).
    pub var_segments: Vec<usize>,
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
        let redactor = Redactor::compile(&raw.redaction)?.with_hot_keys(attrs::emitted());
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
        Ok(Config {
            amqp: raw.amqp.clone(),
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
const TOP_LEVEL_KEYS: &[&str] = &[
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

/// Parse the JSON into the raw shape; an error carries the path of the field (`collector.flush_ms`).
pub fn parse_raw(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let value = json::parse(bytes)
        .map_err(|e| ConfigError::at("", ConfigErrorKind::NotJson(e.to_string())))?;
    if !matches!(value, Value::Object(_)) {
        return Err(ConfigError::new(
            "",
            "the configuration must be a JSON object",
        ));
    }
    RawConfig::from_value(value, "")
}

fn compile_route(i: usize, r: &RawRoute) -> Result<Route, ConfigError> {
    let at = |f: &str| format!("routes[{i}].{f}");
    let template = PathTemplate::parse(&r.path)
        .map_err(|e| ConfigError::at(at("path"), ConfigErrorKind::Template(e)))?;
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
                        .map_err(|e| ConfigError::at(format!("{field}.request_body"), ConfigErrorKind::Pointer(e)))?;
                    request_pointers.push(ptr);
                    return Ok(Source::RequestBody(request_pointers.len() - 1));
                }
                if let Some(p) = &f.response_body {
                    let ptr = JsonPointer::parse(p)
                        .map_err(|e| ConfigError::at(format!("{field}.response_body"), ConfigErrorKind::Pointer(e)))?;
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
        if attrs::reserved_by_edge(name) {
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
    let var_segments = template.var_segments();
    Ok(Route {
        span_name,
        methods,
        template,
        var_segments,
        order_id,
        status,
        attributes,
        request_pointers,
        response_pointers,
    })
}

#[cfg(test)]
mod tests {
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
            // Types and shapes: the error names the field itself, not its section.
            (
                r#"{"service":"s","collector":{"cluster":"c","flush_interval_ms":-5}}"#,
                "collector.flush_interval_ms",
                "invalid value: -5, expected a non-negative integer",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c","timeout_ms":1.5}}"#,
                "collector.timeout_ms",
                "invalid value: 1.5, expected a whole number",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c","max_queue_spans":1e3}}"#,
                "collector.max_queue_spans",
                "whole number",
            ),
            (
                r#"{"service":"s","collector":{"cluster":5}}"#,
                "collector.cluster",
                "invalid type: number 5, expected a string",
            ),
            (
                r#"{"service":"s","collector":{}}"#,
                "collector.cluster",
                "missing field `cluster`",
            ),
            (
                r#"{"service":"s"}"#,
                "collector",
                "missing field `collector`",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"public_edge":null}"#,
                "public_edge",
                "invalid type: null, expected a boolean",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"sampling":{"ratio":"0.5"}}"#,
                "sampling.ratio",
                "expected a number",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"sampling":{"ratio":-0.1}}"#,
                "sampling.ratio",
                "between",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"body":{"max_bytes":"64k"}}"#,
                "body.max_bytes",
                "invalid type: string \"64k\"",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":{}}"#,
                "routes",
                "expected an array",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a"},{"name":"x"}]}"#,
                "routes[1].path",
                "missing field `path`",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","method":["GET",1]}]}"#,
                "routes[0].method[1]",
                "expected a string",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","method":7}]}"#,
                "routes[0].method",
                "method name",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","status":5}]}"#,
                "routes[0].status",
                "invalid type: number 5, expected a literal string or an object",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","status":{"header":"x","colour":1}}]}"#,
                "routes[0].status.colour",
                "unknown field `colour`",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"routes":[{"path":"/a","attributes":{"a.b":{"query":5}}}]}"#,
                "routes[0].attributes.a.b.query",
                "expected a string",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"lifecycle":{"sla":{"SUBMITTED":30}}}"#,
                "lifecycle.sla.SUBMITTED",
                "expected a string",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"lifecycle":{"table_size":-1}}"#,
                "lifecycle.table_size",
                "non-negative",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"amqp":null}"#,
                "amqp",
                "expected an object",
            ),
            (
                r#"{"service":"s","collector":{"cluster":"c"},"redaction":{"enabled":false},"service":"t"}"#,
                "",
                "not valid JSON: duplicate key \"service\" at line 1 column 74",
            ),
        ];
        for (json, field, msg) in cases {
            match Config::from_json(json.as_bytes()) {
                Ok(_) => panic!("accepted: {json}"),
                Err(e) => {
                    assert_eq!(&e.field, field, "field for {json}: {e}");
                    assert!(e.message().contains(msg), "message for {json}: {e}");
                }
            }
        }
    }

    #[test]
    fn errors_carry_a_kind_tests_can_match() {
        let base = r#""service":"s","collector":{"cluster":"c"},"redaction":{"enabled":false}"#;
        let kind = |extra: &str| {
            Config::from_json(format!("{{{base}{extra}}}").as_bytes())
                .err()
                .unwrap()
                .kind
        };
        assert!(matches!(
            kind(r#","colour":1"#),
            ConfigErrorKind::UnknownField { key, .. } if key == "colour"
        ));
        assert!(matches!(
            kind(r#","body":{"max_bytes":"x"}"#),
            ConfigErrorKind::InvalidType { .. }
        ));
        assert!(matches!(
            kind(r#","body":{"max_bytes":1.5}"#),
            ConfigErrorKind::InvalidValue { .. }
        ));
        assert!(matches!(
            kind(r#","routes":[{"name":"r","path":"/a/{id"}]"#),
            ConfigErrorKind::Template(_)
        ));
        assert!(matches!(
            kind(r#","routes":[{"name":"r","path":"/a","order_id":{"request_body":"x"}}]"#),
            ConfigErrorKind::Pointer(_)
        ));
        assert!(matches!(
            Config::from_json(b"{").err().unwrap().kind,
            ConfigErrorKind::NotJson(_)
        ));
        assert!(matches!(
            Config::from_json(br#"{"service":"s"}"#).err().unwrap().kind,
            ConfigErrorKind::MissingField(f) if f == "collector"
        ));
    }

    #[test]
    fn not_json_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"{", b"\xff\xfe", b"[]", b"null"] {
            assert!(Config::from_json(bad).is_err());
        }
        let e = Config::from_json(
            b"{\n  \"service\": \"s\",\n  \"collector\": {\"cluster\": \"c\"},\n}",
        )
        .err()
        .unwrap();
        assert_eq!(e.field, "");
        assert_eq!(
            e.message(),
            "not valid JSON: unexpected character '}', expected a key (a string) at line 4 column 1"
        );
        assert_eq!(
            Config::from_json(b"[]").err().unwrap().message(),
            "the configuration must be a JSON object"
        );
    }

    #[test]
    fn defaults_nulls_and_attribute_order() {
        // Optional fields may be null; attributes come out sorted by name whatever the document order.
        let c = Config::from_json(
            br#"{"service":"s","collector":{"cluster":"otlp","authority":null},"sampling":{"ratio":0.25},
                "redaction":{"enabled":false},
                "routes":[{"path":"/a","name":null,"attributes":{"z.last":"1","a.first":"2","m.mid":{"header":"X-M"}}}]}"#,
        )
        .unwrap();
        assert_eq!(c.sampling_ratio, 0.25);
        assert_eq!(c.collector.authority, "otlp");
        assert_eq!(c.collector.path, "/v1/traces");
        assert_eq!(c.collector.flush_interval_ms, 1000);
        assert_eq!(c.collector.max_queue_spans, 8192);
        assert_eq!(c.collector.timeout_ms, 5000);
        assert_eq!(c.body_max_bytes, 65536);
        assert!(!c.public_edge);
        assert!(c.amqp.is_none());
        let names: Vec<&str> = c.routes[0]
            .attributes
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["a.first", "m.mid", "z.last"]);
        assert_eq!(c.routes[0].span_name, "/a");
        let c = cfg(r#","sampling":{"ratio":0},"body":{"max_bytes":0}"#).unwrap();
        assert_eq!((c.sampling_ratio, c.body_max_bytes), (0.0, 0));
        let c = cfg(r#","sampling":{"ratio":1}"#).unwrap();
        assert_eq!(c.sampling_ratio, 1.0);
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
