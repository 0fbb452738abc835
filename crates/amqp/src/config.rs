//! The `amqp` section of the plugin configuration: read into [`RawAmqp`] (unknown keys rejected), then
//! compiled once into [`Amqp`]. Errors name the field (`amqp.rules[0].routing_key`).
//!
//! ```json
//! "amqp": {
//!   "inject": true,
//!   "body": {"max_bytes": 65536},
//!   "max_frame_bytes": 1048576,
//!   "max_pending": 10000,
//!   "rules": [
//!     {"name": "price.calculated", "on": "both", "exchange": "orders",
//!      "routing_key": "order.price_calculated",
//!      "order_id": {"body": "/orderId"}, "status": "PRICE_CALCULATED",
//!      "attributes": {"mes.polygon_count": {"body": "/polygonCount"}}},
//!     {"on": "consume", "queue": "mes.submitted", "order_id": {"header": "x-order-id"}}]}
//! ```

use ordertrace::config::{Config, ConfigError, ConfigErrorKind};
use ordertrace::json::read::{self, Object};
use ordertrace::json::Value;
use ordertrace::jsonscan::JsonPointer;

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

// ---------------------------------------------------------------------------------------------
// Raw shape: the JSON as written, read by `from_value` (unknown keys rejected, defaults filled in)

#[derive(Debug)]
pub struct RawAmqp {
    /// Add a `traceparent` header to published messages that have none. Default true.
    pub inject: bool,
    pub body: RawAmqpBody,
    /// Frames larger than this (or than the negotiated frame-max) make the decoder give up. Default 1 MiB.
    pub max_frame_bytes: u32,
    /// Unconfirmed publishes and unacknowledged deliveries tracked per connection. Default 10000.
    pub max_pending: usize,
    pub rules: Vec<RawAmqpRule>,
}

impl RawAmqp {
    /// Reads the `amqp` object (at `path`, `amqp` in a plugin configuration); unknown keys are rejected.
    pub fn from_value(v: Value, path: &str) -> Result<RawAmqp, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &["inject", "body", "max_frame_bytes", "max_pending", "rules"],
        )?;
        let raw = RawAmqp {
            inject: o.bool_or("inject", true)?,
            body: o.or_else("body", RawAmqpBody::default, RawAmqpBody::from_value)?,
            max_frame_bytes: o.u32_or("max_frame_bytes", 1024 * 1024)?,
            max_pending: o.usize_or("max_pending", 10_000)?,
            rules: o.or_else("rules", Vec::new, |v, path| {
                read::array(v, path)?
                    .into_iter()
                    .map(|(v, path)| RawAmqpRule::from_value(v, &path))
                    .collect()
            })?,
        };
        o.finish()?;
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawAmqpBody {
    /// Default 65536.
    pub max_bytes: usize,
}

impl Default for RawAmqpBody {
    fn default() -> Self {
        RawAmqpBody { max_bytes: 65536 }
    }
}

impl RawAmqpBody {
    pub fn from_value(v: Value, path: &str) -> Result<RawAmqpBody, ConfigError> {
        let mut o = Object::new(v, path, &["max_bytes"])?;
        let raw = RawAmqpBody {
            max_bytes: o.usize_or("max_bytes", RawAmqpBody::default().max_bytes)?,
        };
        o.finish()?;
        Ok(raw)
    }
}

#[derive(Debug)]
pub struct RawAmqpRule {
    pub name: Option<String>,
    /// `publish`, `consume` or `both` (default).
    pub on: Option<String>,
    /// Exact exchange name (`""` is the default exchange); absent matches any.
    pub exchange: Option<String>,
    /// A topic pattern (`*` one word, `#` zero or more words); absent matches any.
    pub routing_key: Option<String>,
    /// Exact queue name, consume side only; absent matches any.
    pub queue: Option<String>,
    pub order_id: Option<RawAmqpSource>,
    pub status: Option<RawAmqpSource>,
    /// Sorted by name.
    pub attributes: Vec<(String, RawAmqpSource)>,
}

impl RawAmqpRule {
    pub fn from_value(v: Value, path: &str) -> Result<RawAmqpRule, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "name",
                "on",
                "exchange",
                "routing_key",
                "queue",
                "order_id",
                "status",
                "attributes",
            ],
        )?;
        let raw = RawAmqpRule {
            name: o.opt_string("name")?,
            on: o.opt_string("on")?,
            exchange: o.opt_string("exchange")?,
            routing_key: o.opt_string("routing_key")?,
            queue: o.opt_string("queue")?,
            order_id: o.opt("order_id", RawAmqpSource::from_value)?,
            status: o.opt("status", RawAmqpSource::from_value)?,
            attributes: o.or_else("attributes", Vec::new, |v, path| {
                read::map(v, path, RawAmqpSource::from_value)
            })?,
        };
        o.finish()?;
        Ok(raw)
    }
}

/// A literal string, or exactly one of the keyed sources.
#[derive(Debug)]
pub enum RawAmqpSource {
    Literal(String),
    From(RawAmqpFrom),
}

impl RawAmqpSource {
    pub fn from_value(v: Value, path: &str) -> Result<RawAmqpSource, ConfigError> {
        match v {
            Value::String(s) => Ok(RawAmqpSource::Literal(s)),
            Value::Object(_) => RawAmqpFrom::from_value(v, path).map(RawAmqpSource::From),
            other => Err(read::invalid_type(
                &other,
                path,
                "a literal string or an object such as {\"header\": \"x-order-id\"}",
            )),
        }
    }
}

#[derive(Debug)]
pub struct RawAmqpFrom {
    /// A message header (headers table key, exact case).
    pub header: Option<String>,
    /// A basic property: `message_id`, `correlation_id`, `type`, `app_id`, `user_id`, `reply_to`,
    /// `content_type`.
    pub property: Option<String>,
    /// A JSON pointer into the message body.
    pub body: Option<String>,
    /// A dot-separated word of the routing key, counted from 0.
    pub routing_key_word: Option<usize>,
}

impl RawAmqpFrom {
    pub fn from_value(v: Value, path: &str) -> Result<RawAmqpFrom, ConfigError> {
        let mut o = Object::new(v, path, &["header", "property", "body", "routing_key_word"])?;
        let raw = RawAmqpFrom {
            header: o.opt_string("header")?,
            property: o.opt_string("property")?,
            body: o.opt_string("body")?,
            routing_key_word: o.opt_usize("routing_key_word")?,
        };
        o.finish()?;
        Ok(raw)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled shape

/// The validated `amqp` section.
#[derive(Debug, Clone)]
pub struct Amqp {
    pub inject: bool,
    pub body_max_bytes: usize,
    pub max_frame_bytes: u32,
    pub max_pending: usize,
    pub rules: Vec<AmqpRule>,
    /// Bytes of a body worth keeping: `body_max_bytes` when some rule reads the body, else 0.
    pub capture_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Publish,
    Consume,
    Both,
}

#[derive(Debug, Clone)]
pub struct AmqpRule {
    pub name: Option<String>,
    pub on: On,
    pub exchange: Option<String>,
    pub routing_key: Option<TopicPattern>,
    pub queue: Option<String>,
    pub order_id: Option<AmqpSource>,
    pub status: Option<AmqpSource>,
    pub attributes: Vec<(String, AmqpSource)>,
    /// `AmqpSource::Body(i)` indexes this list.
    pub pointers: Vec<JsonPointer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    MessageId,
    CorrelationId,
    Type,
    AppId,
    UserId,
    ReplyTo,
    ContentType,
}

impl Property {
    fn parse(s: &str) -> Option<Property> {
        Some(match s {
            "message_id" => Property::MessageId,
            "correlation_id" => Property::CorrelationId,
            "type" => Property::Type,
            "app_id" => Property::AppId,
            "user_id" => Property::UserId,
            "reply_to" => Property::ReplyTo,
            "content_type" => Property::ContentType,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmqpSource {
    Literal(String),
    Header(String),
    Property(Property),
    Body(usize),
    RoutingKeyWord(usize),
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct MessageKey<'a> {
    pub publish: bool,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// The queue a delivery came from, when known.
    pub queue: Option<&'a str>,
}

impl AmqpRule {
    pub fn matches(&self, k: &MessageKey<'_>) -> bool {
        let side = match self.on {
            On::Both => true,
            On::Publish => k.publish,
            On::Consume => !k.publish,
        };
        side && self.exchange.as_deref().is_none_or(|e| e == k.exchange)
            && self
                .routing_key
                .as_ref()
                .is_none_or(|p| p.matches(k.routing_key))
            && self
                .queue
                .as_deref()
                .is_none_or(|q| !k.publish && k.queue == Some(q))
    }

    pub fn needs_body(&self) -> bool {
        !self.pointers.is_empty()
    }
}

pub const MAX_RULES: usize = 1024;
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

impl Amqp {
    /// Parses and compiles a JSON `amqp` section alone (as tests do); field names in errors start with
    /// `amqp.`.
    pub fn from_json(bytes: &[u8]) -> Result<Amqp, ConfigError> {
        let value = ordertrace::json::parse(bytes)
            .map_err(|e| ConfigError::at("amqp", ConfigErrorKind::NotJson(e.to_string())))?;
        Amqp::compile(&RawAmqp::from_value(value, "amqp")?)
    }

    /// The `amqp` section of a plugin configuration, which the AMQP module requires.
    pub fn from_config(config: &Config) -> Result<Amqp, ConfigError> {
        let Some(section) = &config.amqp else {
            return Err(ConfigError::new(
                "amqp",
                "missing: the AMQP module needs an `amqp` section (rules may be empty)",
            ));
        };
        Amqp::compile(&RawAmqp::from_value(section.clone(), "amqp")?)
    }

    pub fn compile(raw: &RawAmqp) -> Result<Amqp, ConfigError> {
        if raw.body.max_bytes > MAX_BODY_BYTES {
            return Err(err(
                "amqp.body.max_bytes",
                format!("must be at most {MAX_BODY_BYTES}"),
            ));
        }
        if !(4096..=16 * 1024 * 1024).contains(&raw.max_frame_bytes) {
            return Err(err(
                "amqp.max_frame_bytes",
                "must be between 4096 (the AMQP minimum) and 16777216",
            ));
        }
        if !(1..=1_000_000).contains(&raw.max_pending) {
            return Err(err("amqp.max_pending", "must be between 1 and 1000000"));
        }
        if raw.rules.len() > MAX_RULES {
            return Err(err("amqp.rules", format!("at most {MAX_RULES} rules")));
        }
        let rules = raw
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| compile_rule(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let capture_bytes = if rules.iter().any(AmqpRule::needs_body) {
            raw.body.max_bytes
        } else {
            0
        };
        Ok(Amqp {
            inject: raw.inject,
            body_max_bytes: raw.body.max_bytes,
            max_frame_bytes: raw.max_frame_bytes,
            max_pending: raw.max_pending,
            rules,
            capture_bytes,
        })
    }

    /// The first rule matching the message.
    pub fn find_rule(&self, k: &MessageKey<'_>) -> Option<&AmqpRule> {
        self.rules.iter().find(|r| r.matches(k))
    }
}

fn compile_rule(i: usize, r: &RawAmqpRule) -> Result<AmqpRule, ConfigError> {
    let at = |f: &str| format!("amqp.rules[{i}].{f}");
    let on = match r.on.as_deref() {
        None | Some("both") => On::Both,
        Some("publish") => On::Publish,
        Some("consume") => On::Consume,
        Some(other) => {
            return Err(err(
                at("on"),
                format!("{other:?} is not one of \"publish\", \"consume\", \"both\""),
            ))
        }
    };
    if let Some(n) = &r.name {
        if n.trim().is_empty() {
            return Err(err(at("name"), "must not be empty"));
        }
    }
    if let Some(e) = &r.exchange {
        if e.len() > 255 {
            return Err(err(at("exchange"), "an exchange name is at most 255 bytes"));
        }
    }
    let routing_key = match &r.routing_key {
        Some(p) => Some(TopicPattern::parse(p).map_err(|m| err(at("routing_key"), m))?),
        None => None,
    };
    if let Some(q) = &r.queue {
        if q.is_empty() || q.len() > 255 {
            return Err(err(at("queue"), "a queue name is 1 to 255 bytes"));
        }
        if on == On::Publish {
            return Err(err(
                at("queue"),
                "a publish never knows its queue; use \"on\": \"consume\" or drop \"queue\"",
            ));
        }
    }
    let mut pointers = Vec::new();
    let mut source = |field: String, raw: &RawAmqpSource, literal_ok: bool| {
        compile_source(field, raw, literal_ok, &mut pointers)
    };
    let order_id = match &r.order_id {
        Some(s) => Some(source(at("order_id"), s, false)?),
        None => None,
    };
    let status = match &r.status {
        Some(s) => Some(source(at("status"), s, true)?),
        None => None,
    };
    let mut attributes = Vec::with_capacity(r.attributes.len());
    for (name, s) in &r.attributes {
        let field = format!("amqp.rules[{i}].attributes.{name}");
        if name.is_empty() || name.len() > 128 {
            return Err(err(field, "an attribute name is 1 to 128 bytes"));
        }
        if ordertrace::order::attrs::reserved_by_amqp(name) {
            return Err(err(
                field,
                "is set by the filter itself; use order_id / status instead",
            ));
        }
        attributes.push((name.clone(), source(field, s, true)?));
    }
    Ok(AmqpRule {
        name: r.name.clone(),
        on,
        exchange: r.exchange.clone(),
        routing_key,
        queue: r.queue.clone(),
        order_id,
        status,
        attributes,
        pointers,
    })
}

fn compile_source(
    field: String,
    raw: &RawAmqpSource,
    literal_ok: bool,
    pointers: &mut Vec<JsonPointer>,
) -> Result<AmqpSource, ConfigError> {
    let f = match raw {
        RawAmqpSource::Literal(s) if literal_ok => {
            if s.is_empty() {
                return Err(err(field, "a literal must not be empty"));
            }
            return Ok(AmqpSource::Literal(s.clone()));
        }
        RawAmqpSource::Literal(_) => {
            return Err(err(
                field,
                "expects one of {\"header\"|\"property\"|\"body\"|\"routing_key_word\": ...}",
            ))
        }
        RawAmqpSource::From(f) => f,
    };
    let set = [
        f.header.is_some(),
        f.property.is_some(),
        f.body.is_some(),
        f.routing_key_word.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err(err(
            field,
            "exactly one of header, property, body, routing_key_word must be set",
        ));
    }
    if let Some(h) = &f.header {
        if h.is_empty() || h.len() > 255 {
            return Err(err(
                format!("{field}.header"),
                "a header name is 1 to 255 bytes",
            ));
        }
        return Ok(AmqpSource::Header(h.clone()));
    }
    if let Some(p) = &f.property {
        return Property::parse(p).map(AmqpSource::Property).ok_or_else(|| {
            err(
                format!("{field}.property"),
                format!("{p:?} is not one of message_id, correlation_id, type, app_id, user_id, reply_to, content_type"),
            )
        });
    }
    if let Some(p) = &f.body {
        let ptr = JsonPointer::parse(p)
            .map_err(|e| ConfigError::at(format!("{field}.body"), ConfigErrorKind::Pointer(e)))?;
        pointers.push(ptr);
        return Ok(AmqpSource::Body(pointers.len() - 1));
    }
    if let Some(w) = f.routing_key_word {
        if w > 127 {
            return Err(err(
                format!("{field}.routing_key_word"),
                "must be at most 127",
            ));
        }
        return Ok(AmqpSource::RoutingKeyWord(w));
    }
    Err(err(field, "no source set"))
}

/// A routing-key pattern with the topic-exchange wildcards: words are separated by `.`, `*` matches exactly
/// one word and `#` zero or more words. A pattern without wildcards is an exact match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    source: String,
    words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Exact(String),
    One,
    Any,
}

impl TopicPattern {
    pub fn parse(s: &str) -> Result<TopicPattern, String> {
        if s.len() > 255 {
            return Err("a routing key is at most 255 bytes".to_string());
        }
        let words: Vec<Word> = s
            .split('.')
            .map(|w| match w {
                "*" => Word::One,
                "#" => Word::Any,
                w => Word::Exact(w.to_string()),
            })
            .collect();
        for w in &words {
            if let Word::Exact(x) = w {
                if x.contains('*') || x.contains('#') {
                    return Err(format!(
                        "{s:?}: '*' and '#' must be whole words (between dots)"
                    ));
                }
            }
        }
        Ok(TopicPattern {
            source: s.to_string(),
            words,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, key: &str) -> bool {
        let key: Vec<&str> = key.split('.').collect();
        // can[j]: the pattern prefix seen so far matches the first j words of the key.
        let mut can = vec![false; key.len() + 1];
        if let Some(c) = can.first_mut() {
            *c = true;
        }
        for w in &self.words {
            let mut next = vec![false; key.len() + 1];
            match w {
                Word::Any => {
                    let mut reachable = false;
                    for (j, slot) in next.iter_mut().enumerate() {
                        reachable |= can.get(j).copied().unwrap_or(false);
                        *slot = reachable;
                    }
                }
                Word::One | Word::Exact(_) => {
                    for (j, word) in key.iter().enumerate() {
                        let ok = match w {
                            Word::Exact(x) => x == word,
                            _ => true,
                        };
                        if ok && can.get(j).copied().unwrap_or(false) {
                            if let Some(slot) = next.get_mut(j + 1) {
                                *slot = true;
                            }
                        }
                    }
                }
            }
            can = next;
        }
        can.last().copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        // (pattern, key, matches)
        let cases: &[(&str, &str, bool)] = &[
            ("order.submitted", "order.submitted", true),
            ("order.submitted", "order.submitted.x", false),
            ("order.*", "order.submitted", true),
            ("order.*", "order", false),
            ("order.*", "order.a.b", false),
            ("order.#", "order", true),
            ("order.#", "order.a.b", true),
            ("#", "", true),
            ("#", "a.b.c", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("#.price_calculated", "order.price_calculated", true),
            ("#.price_calculated", "price_calculated", true),
            ("*.*.done", "a.b.done", true),
            ("*.*.done", "a.done", false),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
        ];
        for (p, k, m) in cases {
            assert_eq!(TopicPattern::parse(p).unwrap().matches(k), *m, "{p} vs {k}");
        }
        assert!(TopicPattern::parse("order.sub*").is_err());
        // Many '#' do not blow up.
        let p = TopicPattern::parse(&vec!["#"; 100].join(".")).unwrap();
        assert!(p.matches(&vec!["w"; 120].join(".")));
    }

    #[test]
    fn reference_section_compiles() {
        let a = Amqp::from_json(
            br#"{"rules":[
              {"name":"price.calculated","exchange":"orders","routing_key":"order.price_calculated",
               "order_id":{"body":"/orderId"},"status":"PRICE_CALCULATED",
               "attributes":{"mes.polygon_count":{"body":"/polygonCount"},"app":{"property":"app_id"}}},
              {"on":"consume","queue":"mes.submitted","order_id":{"header":"x-order-id"},"status":{"header":"x-status"}},
              {"on":"publish","exchange":"orders","routing_key":"order.*.status","order_id":{"routing_key_word":1}}]}"#,
        )
        .unwrap();
        assert!(a.inject);
        assert_eq!(a.capture_bytes, 65536);
        assert_eq!(a.rules.len(), 3);
        assert_eq!(a.rules[0].order_id, Some(AmqpSource::Body(0)));
        assert_eq!(
            a.rules[0].attributes,
            vec![
                ("app".to_string(), AmqpSource::Property(Property::AppId)),
                ("mes.polygon_count".to_string(), AmqpSource::Body(1)),
            ]
        );
        assert_eq!(a.rules[1].on, On::Consume);
        let k = MessageKey {
            publish: false,
            exchange: "orders",
            routing_key: "order.submitted",
            queue: Some("mes.submitted"),
        };
        assert_eq!(
            a.find_rule(&k).unwrap().queue.as_deref(),
            Some("mes.submitted")
        );
        let k = MessageKey {
            publish: true,
            exchange: "orders",
            routing_key: "order.ORD-7.status",
            queue: None,
        };
        assert_eq!(
            a.find_rule(&k).unwrap().order_id,
            Some(AmqpSource::RoutingKeyWord(1))
        );
        // No body rules: nothing is captured.
        let a = Amqp::from_json(br#"{"inject":false}"#).unwrap();
        assert_eq!(a.capture_bytes, 0);
        assert!(!a.inject);
    }

    #[test]
    fn the_module_reads_the_section_of_a_plugin_configuration() {
        let base = r#"{"service":"s","collector":{"cluster":"c"},"redaction":{"enabled":false}"#;
        let ok =
            Config::from_json(format!(r#"{base},"amqp":{{"rules":[]}}}}"#).as_bytes()).unwrap();
        assert!(Amqp::from_config(&ok).unwrap().rules.is_empty());
        let missing = Config::from_json(format!("{base}}}").as_bytes()).unwrap();
        assert_eq!(Amqp::from_config(&missing).unwrap_err().field, "amqp");
        let bad =
            Config::from_json(format!(r#"{base},"amqp":{{"rules":[{{"on":1}}]}}}}"#).as_bytes())
                .unwrap();
        let e = Amqp::from_config(&bad).unwrap_err();
        assert_eq!(e.field, "amqp.rules[0].on");
        assert!(e.message().contains("expected a string"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"bogus":1}"#, "amqp.bogus", "unknown field"),
            (
                r#"{"rules":[{"exchange":"x","color":"red"}]}"#,
                "amqp.rules[0].color",
                "unknown field",
            ),
            (
                r#"{"rules":[{"on":"sometimes"}]}"#,
                "amqp.rules[0].on",
                "not one of",
            ),
            (
                r#"{"rules":[{"routing_key":"a.b*"}]}"#,
                "amqp.rules[0].routing_key",
                "whole words",
            ),
            (
                r#"{"rules":[{"on":"publish","queue":"q"}]}"#,
                "amqp.rules[0].queue",
                "never knows",
            ),
            (
                r#"{"rules":[{"queue":""}]}"#,
                "amqp.rules[0].queue",
                "1 to 255",
            ),
            (
                r#"{"rules":[{"order_id":"ORD-1"}]}"#,
                "amqp.rules[0].order_id",
                "expects one of",
            ),
            (
                r#"{"rules":[{"status":{"header":"a","body":"/b"}}]}"#,
                "amqp.rules[0].status",
                "exactly one",
            ),
            (
                r#"{"rules":[{"status":{"body":"status"}}]}"#,
                "amqp.rules[0].status.body",
                "",
            ),
            (
                r#"{"rules":[{"status":{"property":"color"}}]}"#,
                "amqp.rules[0].status.property",
                "not one of",
            ),
            (
                r#"{"rules":[{},{"attributes":{"order.id":"x"}}]}"#,
                "amqp.rules[1].attributes.order.id",
                "set by the filter",
            ),
            (
                r#"{"rules":[{"attributes":{"messaging.system":"x"}}]}"#,
                "amqp.rules[0].attributes.messaging.system",
                "set by the filter",
            ),
            (r#"{"rules":[{"name":" "}]}"#, "amqp.rules[0].name", "empty"),
            (r#"{"max_frame_bytes":100}"#, "amqp.max_frame_bytes", "4096"),
            (r#"{"max_pending":0}"#, "amqp.max_pending", "between"),
            (
                r#"{"body":{"max_bytes":999999999}}"#,
                "amqp.body.max_bytes",
                "at most",
            ),
            (r#"{"inject":"yes"}"#, "amqp.inject", "invalid type"),
            (
                r#"{"rules":[{"order_id":{"routing_key_word":-1}}]}"#,
                "amqp.rules[0].order_id.routing_key_word",
                "non-negative",
            ),
            (r#"{"rules":{}}"#, "amqp.rules", "expected an array"),
            (
                r#"{"max_frame_bytes":5000000000}"#,
                "amqp.max_frame_bytes",
                "at most 4294967295",
            ),
            (
                r#"{"rules":[{"status":{"body":"/s","colour":1}}]}"#,
                "amqp.rules[0].status.colour",
                "unknown field `colour`",
            ),
            (
                r#"{"rules":[{"status":[]}]}"#,
                "amqp.rules[0].status",
                "invalid type: an array",
            ),
            (r#"{"inject":true"#, "amqp", "not valid JSON"),
        ];
        for (json, field, msg) in cases {
            match Amqp::from_json(json.as_bytes()) {
                Ok(_) => panic!("accepted: {json}"),
                Err(e) => {
                    assert_eq!(&e.field, field, "field for {json}: {e}");
                    assert!(e.message().contains(msg), "message for {json}: {e}");
                }
            }
        }
    }
}
