//! The span processing: a [`Processor`] (the configuration, the lifecycle table, the key cache and the
//! running totals) decodes a batch, matches each span against the rules and plans what to add, has the
//! span redacted (`redact_walk`), enriches it, then applies the batch's status changes to the lifecycle
//! table in end-time order, and re-encodes the batch only when something changed.

use std::collections::BTreeMap;
use std::fmt;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, TracesData};
use prost::Message;

use ordertrace::order::{LastStatus, Lifecycle, StatusMark};
use ordertrace::otlp::AttrValue;
use ordertrace::redact::Redacted;
use ordertrace::template::{self, var_segments as template_var_segments, PathTemplate};
use ordertrace::text::cut;

use crate::config::{CollectorConfig, Enrich, SpanSource};
use crate::redact_walk::{split_url, Ctx, KeyCache, NO_KEEP};
use crate::stats::Stats;

/// The instrumentation scope name of the spans an ordertrace edge exports.
pub const EDGE_SCOPE: &str = "ordertrace";

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

pub(crate) fn string_kv(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

pub(crate) fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
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

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
