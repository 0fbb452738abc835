//! The plugin configuration: the JSON as written (the `Raw*` structs, read with the edge's reader, unknown
//! keys rejected) and its compiled, validated form ([`CollectorConfig`]: the redactor, the lifecycle model,
//! the HTTP and messaging rules). A compile error names the field it is about.

use opentelemetry_proto::tonic::trace::v1::span;

use ordertrace::config::{ConfigError, ConfigErrorKind, RawMethods, MAX_ROUTES};
use ordertrace::json::read::{self, Object};
use ordertrace::json::{self, Value as JsonValue};
use ordertrace::order::{attrs, Lifecycle, RawLifecycle};
use ordertrace::redact::{HmacKeySource, RawRedaction, Redactor};
use ordertrace::template::{var_segments as template_var_segments, PathTemplate};

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

    pub(crate) fn accepts(self, kind: i32) -> bool {
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
