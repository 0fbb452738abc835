//! Filter counters, kept in guest memory and flushed to Envoy's stats from the root context's tick:
//! a per-request `increment_metric` host call would cost more than the rest of the request's work.

/// Every counter the filter keeps. The names (with the `ordertrace_` prefix) are the Envoy metric names;
/// Envoy shows them as `wasmcustom.ordertrace_<name>`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub spans_exported: u64,
    pub spans_dropped: u64,
    pub export_failures: u64,
    pub export_requests: u64,
    pub traceparent_malformed: u64,
    pub traceparent_created: u64,
    pub rule_matches: u64,
    pub body_limit_hits: u64,
    pub config_errors: u64,
    pub request_failures: u64,
    pub baggage_filtered: u64,
    pub transitions: u64,
    pub transitions_unexpected: u64,
}

/// Counter names in a fixed order; the glue defines one Envoy metric per entry at configure time.
pub const COUNTER_NAMES: [&str; 13] = [
    "ordertrace_spans_exported",
    "ordertrace_spans_dropped",
    "ordertrace_export_failures",
    "ordertrace_export_requests",
    "ordertrace_traceparent_malformed",
    "ordertrace_traceparent_created",
    "ordertrace_rule_matches",
    "ordertrace_body_limit_hits",
    "ordertrace_config_errors",
    "ordertrace_request_failures",
    "ordertrace_baggage_filtered",
    "ordertrace_transitions",
    "ordertrace_transitions_unexpected",
];

/// The gauge of spans waiting in this worker's export queue.
pub const QUEUE_GAUGE_NAME: &str = "ordertrace_queue_spans";

impl Counters {
    /// Values in the order of [`COUNTER_NAMES`].
    pub fn values(&self) -> [u64; 13] {
        [
            self.spans_exported,
            self.spans_dropped,
            self.export_failures,
            self.export_requests,
            self.traceparent_malformed,
            self.traceparent_created,
            self.rule_matches,
            self.body_limit_hits,
            self.config_errors,
            self.request_failures,
            self.baggage_filtered,
            self.transitions,
            self.transitions_unexpected,
        ]
    }
}

/// Remembers what was already flushed so each tick sends only the increase.
#[derive(Debug, Default)]
pub struct FlushState {
    sent: [u64; 13],
}

impl FlushState {
    /// `(index, delta)` for every counter that grew since the last flush.
    pub fn deltas(&mut self, now: &Counters) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (i, (v, sent)) in now.values().iter().zip(self.sent.iter_mut()).enumerate() {
            if *v > *sent {
                out.push((i, *v - *sent));
                *sent = *v;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_report_only_growth() {
        let mut f = FlushState::default();
        let mut c = Counters {
            rule_matches: 3,
            ..Counters::default()
        };
        assert_eq!(f.deltas(&c), vec![(6, 3)]);
        assert!(f.deltas(&c).is_empty());
        c.rule_matches = 5;
        c.spans_dropped = 1;
        assert_eq!(f.deltas(&c), vec![(1, 1), (6, 2)]);
    }
}

// ---- labelled metrics ---------------------------------------------------------------------------------
//
// Envoy stats have no labels of their own; a label travels in the metric name as `.<label>.<value>` and
// the Envoy config's `stats_config.stats_tags` turns it back into a label (see envoy/*.yaml), so
// `/stats/prometheus` shows `ordertrace_route_requests{route="shop_submit"}`. Label values come only from
// the configuration (route names, lifecycle statuses, the service), never from a request, so their number
// is bounded by the config; an unknown status is counted as `other`.

/// Longest list of histogram samples kept between two ticks (beyond: not recorded, counted).
pub const MAX_PENDING_SAMPLES: usize = 4096;

/// A labelled Envoy metric, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Labelled {
    RouteRequests(String),
    RouteErrors(String),
    Transitions { service: String, status: String },
    RouteDurationMs(String),
    StageDurationMs { from: String, to: String },
}

impl Labelled {
    pub fn is_histogram(&self) -> bool {
        matches!(
            self,
            Labelled::RouteDurationMs(_) | Labelled::StageDurationMs { .. }
        )
    }

    /// The Envoy metric name.
    pub fn name(&self) -> String {
        match self {
            Labelled::RouteRequests(r) => format!("ordertrace_route_requests.route.{}", label(r)),
            Labelled::RouteErrors(r) => format!("ordertrace_route_errors.route.{}", label(r)),
            Labelled::Transitions { service, status } => {
                format!(
                    "ordertrace_status_transitions.service.{}.status.{}",
                    label(service),
                    label(status)
                )
            }
            Labelled::RouteDurationMs(r) => {
                format!("ordertrace_route_duration_ms.route.{}", label(r))
            }
            Labelled::StageDurationMs { from, to } => {
                format!(
                    "ordertrace_stage_duration_ms.from.{}.to.{}",
                    label(from),
                    label(to)
                )
            }
        }
    }
}

/// A label value safe inside a dotted Envoy stat name: `[A-Za-z0-9_-]`, anything else becomes `_`.
pub fn label(v: &str) -> String {
    let s: String = v
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "none".to_string()
    } else {
        s
    }
}

/// A labelled metric and a value (a counter increment or a histogram sample).
pub type Measure = (Labelled, u64);

/// Labelled counters and pending histogram samples, accumulated per request and flushed on tick.
///
/// The per-route metrics are kept by route index: they are touched on every traced request, and building
/// a keyed `Labelled` (three String clones and map lookups) there cost more than the counting itself.
#[derive(Debug, Default)]
pub struct LabelledMetrics {
    /// Sorted by metric, so a drain comes out in a stable order. A sorted vector rather than a `BTreeMap`:
    /// the series are few (bounded by the configuration) and the map's code costs the filter kilobytes.
    counters: Vec<(Labelled, u64)>,
    samples: Vec<(Labelled, u64)>,
    routes: Vec<RouteTally>,
    /// (route index, duration ms) since the last drain.
    route_samples: Vec<(usize, u64)>,
    pub samples_dropped: u64,
}

#[derive(Debug, Default)]
struct RouteTally {
    name: String,
    requests: u64,
    errors: u64,
}

impl LabelledMetrics {
    /// Per-route metrics for these route names (the span names, by route index).
    pub fn with_routes<I: IntoIterator<Item = String>>(names: I) -> Self {
        LabelledMetrics {
            routes: names
                .into_iter()
                .map(|name| RouteTally {
                    name,
                    ..RouteTally::default()
                })
                .collect(),
            ..LabelledMetrics::default()
        }
    }

    pub fn count(&mut self, m: Labelled) {
        match self.counters.binary_search_by(|(k, _)| k.cmp(&m)) {
            Ok(i) => {
                if let Some((_, n)) = self.counters.get_mut(i) {
                    *n += 1;
                }
            }
            Err(i) => self.counters.insert(i, (m, 1)),
        }
    }

    fn pending_samples(&self) -> usize {
        self.samples.len() + self.route_samples.len()
    }

    pub fn sample(&mut self, m: Labelled, value: u64) {
        if self.pending_samples() >= MAX_PENDING_SAMPLES {
            self.samples_dropped += 1;
            return;
        }
        self.samples.push((m, value));
    }

    /// One request of route `route` (an index into the names given to [`Self::with_routes`]).
    pub fn route_request(&mut self, route: usize, failed: bool, duration_ms: u64) {
        let Some(t) = self.routes.get_mut(route) else {
            return;
        };
        t.requests += 1;
        if failed {
            t.errors += 1;
        }
        if self.samples.len() + self.route_samples.len() >= MAX_PENDING_SAMPLES {
            self.samples_dropped += 1;
            return;
        }
        self.route_samples.push((route, duration_ms));
    }

    /// Counter increments since the last drain, and the pending samples.
    pub fn drain(&mut self) -> (Vec<Measure>, Vec<Measure>) {
        let mut counters = std::mem::take(&mut self.counters);
        for t in &mut self.routes {
            if t.requests > 0 {
                counters.push((Labelled::RouteRequests(t.name.clone()), t.requests));
            }
            if t.errors > 0 {
                counters.push((Labelled::RouteErrors(t.name.clone()), t.errors));
            }
            t.requests = 0;
            t.errors = 0;
        }
        let mut samples = std::mem::take(&mut self.samples);
        for (i, v) in std::mem::take(&mut self.route_samples) {
            if let Some(t) = self.routes.get(i) {
                samples.push((Labelled::RouteDurationMs(t.name.clone()), v));
            }
        }
        (counters, samples)
    }

    pub fn counter(&self, m: &Labelled) -> u64 {
        let route = |name: &str| self.routes.iter().find(|t| t.name == name);
        let by_index = match m {
            Labelled::RouteRequests(n) => route(n).map_or(0, |t| t.requests),
            Labelled::RouteErrors(n) => route(n).map_or(0, |t| t.errors),
            _ => 0,
        };
        by_index
            + self
                .counters
                .binary_search_by(|(k, _)| k.cmp(m))
                .ok()
                .and_then(|i| self.counters.get(i))
                .map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod labelled_tests {
    use super::*;

    #[test]
    fn names_carry_sanitised_labels() {
        assert_eq!(
            Labelled::RouteRequests("shop.submit".into()).name(),
            "ordertrace_route_requests.route.shop_submit"
        );
        assert_eq!(
            Labelled::Transitions {
                service: "mes-api".into(),
                status: "PACKAGING".into()
            }
            .name(),
            "ordertrace_status_transitions.service.mes-api.status.PACKAGING"
        );
        assert_eq!(
            Labelled::StageDurationMs {
                from: "SUBMITTED".into(),
                to: "PRICE_CALCULATED".into()
            }
            .name(),
            "ordertrace_stage_duration_ms.from.SUBMITTED.to.PRICE_CALCULATED"
        );
        assert_eq!(label("a b/{c}"), "a_b__c_");
        assert_eq!(label(""), "none");
    }

    #[test]
    fn samples_are_bounded_and_drain_resets() {
        let mut m = LabelledMetrics::default();
        for i in 0..(MAX_PENDING_SAMPLES as u64 + 10) {
            m.sample(Labelled::RouteDurationMs("r".into()), i);
        }
        m.count(Labelled::RouteRequests("r".into()));
        m.count(Labelled::RouteRequests("r".into()));
        assert_eq!(m.samples_dropped, 10);
        m.count(Labelled::RouteRequests("a".into()));
        assert_eq!(m.counter(&Labelled::RouteRequests("r".into())), 2);
        assert_eq!(m.counter(&Labelled::RouteRequests("x".into())), 0);
        let (c, s) = m.drain();
        assert_eq!(
            c,
            vec![
                (Labelled::RouteRequests("a".into()), 1),
                (Labelled::RouteRequests("r".into()), 2)
            ]
        );
        assert_eq!(s.len(), MAX_PENDING_SAMPLES);
        let (c, s) = m.drain();
        assert!(c.is_empty() && s.is_empty());
    }

    #[test]
    fn route_metrics_by_index_drain_as_labelled() {
        let mut m = LabelledMetrics::with_routes(["a".to_string(), "b".to_string()]);
        m.route_request(0, false, 3);
        m.route_request(1, true, 7);
        m.route_request(1, false, 9);
        m.route_request(5, true, 1); // no such route: ignored
        assert_eq!(m.counter(&Labelled::RouteRequests("b".into())), 2);
        assert_eq!(m.counter(&Labelled::RouteErrors("b".into())), 1);
        let (c, s) = m.drain();
        assert_eq!(
            c,
            vec![
                (Labelled::RouteRequests("a".into()), 1),
                (Labelled::RouteRequests("b".into()), 2),
                (Labelled::RouteErrors("b".into()), 1),
            ]
        );
        assert_eq!(
            s,
            vec![
                (Labelled::RouteDurationMs("a".into()), 3),
                (Labelled::RouteDurationMs("b".into()), 7),
                (Labelled::RouteDurationMs("b".into()), 9),
            ]
        );
        let (c, s) = m.drain();
        assert!(c.is_empty() && s.is_empty(), "drain resets");
        for _ in 0..MAX_PENDING_SAMPLES + 3 {
            m.route_request(0, false, 1);
        }
        assert_eq!(m.samples_dropped, 3, "samples are bounded");
        assert_eq!(
            m.counter(&Labelled::RouteRequests("a".into())),
            MAX_PENDING_SAMPLES as u64 + 3
        );
    }
}
