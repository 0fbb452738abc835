//! The order domain: what a status named by a request or message means, whether it is a transition, and
//! the spans of the order's own lifecycle trace. HTTP (`crates/edge`), AMQP (`crates/amqp`) and the
//! Collector plugin (`crates/collector`) all decide through this module, so the three report the same
//! transition with the same attributes.
//!
//! - [`StatusMark`]: the core rule. A status named by a request or message that succeeded (a 2xx, a
//!   confirmed publish, an acked delivery) is the order's new status: `order.status` and an
//!   `order.status_changed` event. Otherwise it is only `order.status.attempted`.
//! - [`Lifecycle::judge`]: is it a transition (not the same status again), from which status, after how
//!   long, and is it one the lifecycle allows.
//! - [`lifecycle_spans`]: the `order.lifecycle` root (first status only) and the `order {STATUS}` span in
//!   the order's deterministic trace.

pub mod attrs;
pub mod lifecycle;

pub use lifecycle::{
    ids_from_digest, lifecycle_ids, LastStatus, Lifecycle, RawLifecycle, REFERENCE_STATUSES,
};

use crate::otlp::{AttrValue, EventRecord, Kind, LinkRecord, SpanRecord, StatusCode};
use crate::tracecontext::{SpanId, TraceId, FLAG_SAMPLED};

/// How a span reports the status its request or message named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMark {
    /// The request or message succeeded: the order now has this status.
    Changed,
    /// It did not: the status was only attempted.
    Attempted,
}

impl StatusMark {
    pub fn of(succeeded: bool) -> StatusMark {
        if succeeded {
            StatusMark::Changed
        } else {
            StatusMark::Attempted
        }
    }

    /// The attribute that carries the status.
    pub fn key(self) -> &'static str {
        match self {
            StatusMark::Changed => attrs::ORDER_STATUS,
            StatusMark::Attempted => attrs::ORDER_STATUS_ATTEMPTED,
        }
    }

    /// Adds the status attribute, and for a change the `order.status_changed` event at `at_ns` (no
    /// attributes of its own: the span carries the order id and status).
    pub fn apply(
        self,
        status: String,
        at_ns: u64,
        attributes: &mut Vec<(String, AttrValue)>,
        events: &mut Vec<EventRecord>,
    ) {
        attributes.push((self.key().into(), AttrValue::Str(status)));
        if self == StatusMark::Changed {
            events.push(EventRecord {
                name: attrs::STATUS_CHANGED_EVENT.into(),
                time_ns: at_ns,
                attributes: Vec::new(),
            });
        }
    }
}

/// What a status change is, judged against the order's previous status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The previous status and how long the order stayed in it, when known.
    pub previous: Option<(String, u64)>,
    /// Not a transition the lifecycle allows, or a status it does not know.
    pub unexpected: bool,
    /// The status as a metric label: itself when the lifecycle knows it, else `other` (bounded labels).
    pub label: String,
}

impl Judgement {
    /// `order.status.previous`, `order.stage.duration_ms` and `order.transition.unexpected`, in that
    /// order, for the request's span and the lifecycle span alike.
    pub fn attributes(&self) -> Vec<(String, AttrValue)> {
        let mut out = Vec::with_capacity(3);
        if let Some((status, ms)) = &self.previous {
            out.push((
                attrs::ORDER_STATUS_PREVIOUS.into(),
                AttrValue::Str(status.clone()),
            ));
            out.push((
                attrs::ORDER_STAGE_DURATION_MS.into(),
                AttrValue::Int(i64::try_from(*ms).unwrap_or(i64::MAX)),
            ));
        }
        if self.unexpected {
            out.push((
                attrs::ORDER_TRANSITION_UNEXPECTED.into(),
                AttrValue::Bool(true),
            ));
        }
        out
    }

    /// The stage that ended, as `(from, to)` metric labels, when both ends are known statuses.
    pub fn stage(&self, lc: &Lifecycle) -> Option<(&str, &str, u64)> {
        let (from, ms) = self.previous.as_ref()?;
        lc.is_known(from)
            .then_some((from.as_str(), self.label.as_str(), *ms))
    }
}

impl Lifecycle {
    /// Judges `status` reached at `at_ns` against the order's `previous` entry of the last-status table
    /// (an entry of another order, as a table slot may hold, counts as none). `None`: the same status
    /// again (a retry, a duplicate, two reports of one request), which is not a transition.
    pub fn judge(
        &self,
        order_id: &str,
        previous: Option<&LastStatus>,
        status: &str,
        at_ns: u64,
    ) -> Option<Judgement> {
        let previous = previous.filter(|p| p.order_id == order_id);
        if previous.is_some_and(|p| p.status == status) {
            return None;
        }
        let known = self.is_known(status);
        let mut unexpected = !known;
        let previous = previous.map(|p| {
            unexpected |= !self.allowed(&p.status, status);
            (p.status.clone(), at_ns.saturating_sub(p.at_ns) / 1_000_000)
        });
        Some(Judgement {
            previous,
            unexpected,
            label: if known {
                status.to_string()
            } else {
                "other".to_string()
            },
        })
    }
}

/// Where a transition was seen: the span of the request or message that made it.
#[derive(Debug, Clone, Copy)]
pub struct Cause {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: u8,
    /// What that span is to the lifecycle span (`request`, `message`).
    pub role: &'static str,
}

/// The spans of one transition in the order's lifecycle trace: the `order.lifecycle` root when `status`
/// is the lifecycle's first status, then `order {STATUS}` under it, linked to its cause, carrying the
/// order id, the status, the service and the judgement's attributes. Lifecycle spans are always sampled.
#[allow(clippy::too_many_arguments)]
pub fn lifecycle_spans(
    lc: &Lifecycle,
    digest: &[u8; 32],
    order_id: &str,
    status: &str,
    service: &str,
    judgement: &Judgement,
    cause: Cause,
    span_id: SpanId,
    start_ns: u64,
    end_ns: u64,
) -> (Option<SpanRecord>, SpanRecord) {
    let (trace_id, root_id) = ids_from_digest(digest);
    let first = lc.statuses.first().is_some_and(|f| f == status);
    let root = first.then(|| SpanRecord {
        trace_id,
        span_id: root_id,
        parent_span_id: None,
        trace_flags: FLAG_SAMPLED,
        name: attrs::LIFECYCLE_ROOT_SPAN.into(),
        kind: Kind::Internal,
        start_ns,
        end_ns,
        attributes: vec![(attrs::ORDER_ID.into(), AttrValue::Str(order_id.into()))],
        events: Vec::new(),
        links: Vec::new(),
        status: StatusCode::Unset,
        status_message: String::new(),
    });
    let mut attributes = vec![
        (attrs::ORDER_ID.into(), AttrValue::Str(order_id.into())),
        (attrs::ORDER_STATUS.into(), AttrValue::Str(status.into())),
        (attrs::SERVICE_NAME.into(), AttrValue::Str(service.into())),
    ];
    attributes.extend(judgement.attributes());
    let change = SpanRecord {
        trace_id,
        span_id,
        parent_span_id: Some(root_id),
        trace_flags: FLAG_SAMPLED,
        name: format!("order {status}"),
        kind: Kind::Internal,
        start_ns,
        end_ns,
        attributes,
        events: Vec::new(),
        links: vec![LinkRecord {
            trace_id: cause.trace_id,
            span_id: cause.span_id,
            flags: cause.flags,
            attributes: vec![(attrs::LINK_ROLE.into(), AttrValue::Str(cause.role.into()))],
        }],
        status: StatusCode::Unset,
        status_message: String::new(),
    };
    (root, change)
}

#[cfg(test)]
mod tests;
