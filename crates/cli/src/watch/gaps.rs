//! The journey of one order (its transitions in event-time order) and the gaps in it, against the
//! lifecycle model. Pure: no store, no clock.

use ordertrace::order::lifecycle::Lifecycle;
use serde_json::{json, Value};

use super::ingest::Transition;
use super::{fmt_ms, rfc3339};

/// Whether `from → to` is a move the watch accepts. The watch sees an order's whole journey (all edges
/// together), so besides `lifecycle.transitions` (which on an edge lists only what that edge sees) the
/// order of `lifecycle.statuses` counts: each non-terminal status may move to the next non-terminal one,
/// and anything may move to a terminal status.
pub fn allowed(lc: &Lifecycle, from: &str, to: &str) -> bool {
    if lc.allowed(from, to) || lc.terminal.iter().any(|t| t == to) {
        return true;
    }
    let flow: Vec<&String> = lc
        .statuses
        .iter()
        .filter(|s| !lc.terminal.contains(s))
        .collect();
    flow.windows(2)
        .any(|w| matches!(w, [a, b] if a.as_str() == from && b.as_str() == to))
}

/// The statuses between `from` and `to` in the lifecycle order (those a forward jump skipped).
pub fn skipped(lc: &Lifecycle, from: &str, to: &str) -> Vec<String> {
    let idx = |s: &str| lc.statuses.iter().position(|x| x == s);
    match (idx(from), idx(to)) {
        (Some(a), Some(b)) if a < b => lc
            .statuses
            .iter()
            .skip(a + 1)
            .take(b - a - 1)
            .filter(|s| !lc.terminal.contains(s))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// One transition of the journey, with what it says about the stage it ended.
#[derive(Debug, Clone)]
pub struct Step {
    pub t: Transition,
    /// The same status again right after itself (another Envoy, a retried request): not a transition.
    pub repeat: bool,
    pub previous: Option<String>,
    /// How long the order stayed in `previous`.
    pub stage_ms: Option<u64>,
    /// The SLA of `previous`.
    pub stage_sla_ms: Option<u64>,
    pub over_sla: bool,
    /// Required statuses this move jumped over.
    pub skipped: Vec<String>,
    /// A move the model does not allow (other than a forward skip), or an unknown status.
    pub unexpected: bool,
}

fn status_index(lc: &Lifecycle, s: &str) -> usize {
    lc.statuses
        .iter()
        .position(|x| x == s)
        .unwrap_or(usize::MAX)
}

/// Orders the transitions by event time (ties by lifecycle order) and derives the stages.
pub fn journey(lc: &Lifecycle, mut ts: Vec<Transition>) -> Vec<Step> {
    ts.sort_by(|a, b| {
        (a.at_ns, status_index(lc, &a.status), &a.span_id).cmp(&(
            b.at_ns,
            status_index(lc, &b.status),
            &b.span_id,
        ))
    });
    let mut steps: Vec<Step> = Vec::with_capacity(ts.len());
    let mut current: Option<(String, u64)> = None;
    for t in ts {
        let mut step = Step {
            repeat: false,
            previous: None,
            stage_ms: None,
            stage_sla_ms: None,
            over_sla: false,
            skipped: Vec::new(),
            unexpected: !lc.is_known(&t.status),
            t,
        };
        match &current {
            Some((s, _)) if *s == step.t.status => step.repeat = true,
            Some((s, since)) => {
                let ms = step.t.at_ns.saturating_sub(*since) / 1_000_000;
                step.previous = Some(s.clone());
                step.stage_ms = Some(ms);
                step.stage_sla_ms = lc.sla_ms(s);
                step.over_sla = step.stage_sla_ms.is_some_and(|sla| ms > sla);
                if !allowed(lc, s, &step.t.status) {
                    step.skipped = skipped(lc, s, &step.t.status);
                    step.unexpected |= step.skipped.is_empty();
                }
            }
            None => {}
        }
        if !step.repeat {
            current = Some((step.t.status.clone(), step.t.at_ns));
        }
        steps.push(step);
    }
    steps
}

/// The current status of a journey and since when (the latest transition by event time).
pub fn current(steps: &[Step]) -> Option<(&str, u64)> {
    steps
        .iter()
        .rev()
        .find(|s| !s.repeat)
        .map(|s| (s.t.status.as_str(), s.t.at_ns))
}

/// A recorded gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// `sla` (a stage outlived its SLA) or `skipped` (required statuses were jumped over).
    pub kind: String,
    /// The stage (for `sla`) or the status reached by skipping (for `skipped`).
    pub status: String,
    /// When that stage started (for `sla`) or the skipping transition happened (for `skipped`).
    pub since_ns: u64,
    pub detail: String,
    pub detected_ns: u64,
    pub resolved_ns: Option<u64>,
}

impl Gap {
    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "status": self.status,
            "since_ns": self.since_ns,
            "since": rfc3339(self.since_ns),
            "detail": self.detail,
            "detected_ns": self.detected_ns,
            "detected": rfc3339(self.detected_ns),
            "resolved_ns": self.resolved_ns,
            "open": self.resolved_ns.is_none(),
        })
    }
}

/// An order currently stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub order_id: String,
    /// The stage it is stuck in (its current status).
    pub status: String,
    pub since_ns: u64,
    pub age_ms: u64,
    pub sla_ms: Option<u64>,
    /// `sla` or `skipped`.
    pub reason: String,
    pub detail: String,
}

impl Stuck {
    pub fn to_json(&self, trace_url: Option<String>) -> Value {
        json!({
            "order_id": self.order_id,
            "status": self.status,
            "since_ns": self.since_ns,
            "since": rfc3339(self.since_ns),
            "age_ms": self.age_ms,
            "age": fmt_ms(self.age_ms),
            "sla_ms": self.sla_ms,
            "sla": self.sla_ms.map(fmt_ms),
            "reason": self.reason,
            "detail": self.detail,
            "trace_url": trace_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordertrace::order::lifecycle::RawLifecycle;

    fn lc() -> Lifecycle {
        // The MES edge's transitions: the watch still accepts the whole reference chain.
        let raw = RawLifecycle::from_json(
            br#"{"transitions":{"PRICE_CALCULATION_STARTED":["PRICE_CALCULATED"]},
                "sla":{"PRICE_CALCULATION_STARTED":"30m"}}"#,
        )
        .unwrap();
        Lifecycle::compile(&raw).unwrap()
    }

    fn t(status: &str, at_ms: u64) -> Transition {
        Transition {
            order_id: "O".into(),
            status: status.into(),
            at_ns: at_ms * 1_000_000,
            service: "s".into(),
            edge_previous: None,
            trace_id: String::new(),
            span_id: format!("{status}{at_ms}"),
            request_trace_id: None,
            request_span_id: None,
        }
    }

    #[test]
    fn chain_skips_repeats_and_event_time() {
        let l = lc();
        assert!(allowed(&l, "INITIATED", "FILE_UPLOADED"));
        assert!(allowed(&l, "SUBMITTED", "CANCELLED"));
        assert!(!allowed(&l, "SUBMITTED", "PRICE_CALCULATED"));
        assert_eq!(
            skipped(&l, "SUBMITTED", "PRICE_CALCULATED"),
            vec!["PRICE_CALCULATION_STARTED"]
        );
        let steps = journey(
            &l,
            vec![
                t("PRICE_CALCULATED", 4_000_000),
                t("SUBMITTED", 1000),
                t("INITIATED", 0),
                t("SUBMITTED", 2000),
                t("SUBMITTED", 1000),
            ],
        );
        let names: Vec<_> = steps
            .iter()
            .map(|s| (s.t.status.as_str(), s.repeat))
            .collect();
        assert_eq!(
            names,
            vec![
                ("INITIATED", false),
                ("SUBMITTED", false),
                ("SUBMITTED", true),
                ("SUBMITTED", true),
                ("PRICE_CALCULATED", false)
            ]
        );
        // INITIATED → SUBMITTED skips FILE_UPLOADED.
        assert_eq!(steps[1].skipped, vec!["FILE_UPLOADED"]);
        assert_eq!(steps[4].stage_ms, Some(4_000_000 - 1000));
        assert_eq!(steps[4].skipped, vec!["PRICE_CALCULATION_STARTED"]);
        assert_eq!(
            current(&steps),
            Some(("PRICE_CALCULATED", 4_000_000_000_000))
        );
        let back = journey(&l, vec![t("SHIPPED", 0), t("SUBMITTED", 1)]);
        assert!(back[1].unexpected && back[1].skipped.is_empty());
    }
}
