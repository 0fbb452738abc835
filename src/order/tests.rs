//! The order domain's rules, table-driven: the status mark, the transition judgement, the lifecycle spans.

use super::*;

const MS: u64 = 1_000_000;

/// The reference lifecycle (its default statuses and transitions).
fn lifecycle() -> Lifecycle {
    Lifecycle::compile(&RawLifecycle::from_json(br#"{"namespace":"test-ns"}"#).unwrap()).unwrap()
}

fn last(order_id: &str, status: &str, at_ms: u64) -> LastStatus {
    LastStatus {
        order_id: order_id.into(),
        status: status.into(),
        at_ns: at_ms * MS,
    }
}

#[test]
fn a_status_is_the_new_status_only_when_its_request_or_message_succeeded() {
    let (mut attributes, mut events) = (Vec::new(), Vec::new());
    StatusMark::of(true).apply("SUBMITTED".into(), 42, &mut attributes, &mut events);
    assert_eq!(
        attributes,
        vec![(
            "order.status".to_string(),
            AttrValue::Str("SUBMITTED".into())
        )]
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "order.status_changed");
    assert_eq!(events[0].time_ns, 42);
    assert!(events[0].attributes.is_empty());

    let (mut attributes, mut events) = (Vec::new(), Vec::new());
    StatusMark::of(false).apply("SUBMITTED".into(), 42, &mut attributes, &mut events);
    assert_eq!(
        attributes,
        vec![(
            "order.status.attempted".to_string(),
            AttrValue::Str("SUBMITTED".into())
        )]
    );
    assert!(events.is_empty());
}

#[test]
fn judgement_table() {
    let lc = lifecycle();
    // (previous entry, new status, expected previous+ms, unexpected, label, why)
    type Row = (
        Option<LastStatus>,
        &'static str,
        Option<(&'static str, u64)>,
        bool,
        &'static str,
        &'static str,
    );
    let rows: Vec<Row> = vec![
        (
            None,
            "INITIATED",
            None,
            false,
            "INITIATED",
            "first status seen",
        ),
        (
            Some(last("ORD-1", "INITIATED", 1_000)),
            "FILE_UPLOADED",
            Some(("INITIATED", 4_000)),
            false,
            "FILE_UPLOADED",
            "an allowed step",
        ),
        (
            Some(last("ORD-1", "INITIATED", 1_000)),
            "SHIPPED",
            Some(("INITIATED", 4_000)),
            true,
            "SHIPPED",
            "a skipped stage is not allowed",
        ),
        (
            Some(last("ORD-1", "SUBMITTED", 1_000)),
            "TELEPORTED",
            Some(("SUBMITTED", 4_000)),
            true,
            "other",
            "an unknown status: unexpected once, bounded label",
        ),
        (
            Some(last("ORD-9", "INITIATED", 1_000)),
            "FILE_UPLOADED",
            None,
            false,
            "FILE_UPLOADED",
            "another order's entry in the slot counts as none",
        ),
        (
            Some(last("ORD-1", "SUBMITTED", 6_000)),
            "PRICE_CALCULATION_STARTED",
            Some(("SUBMITTED", 0)),
            false,
            "PRICE_CALCULATION_STARTED",
            "an entry newer than the change (clock skew): duration 0, not negative",
        ),
    ];
    for (previous, status, want_prev, unexpected, label, why) in rows {
        let j = lc
            .judge("ORD-1", previous.as_ref(), status, 5_000 * MS)
            .unwrap_or_else(|| panic!("not a transition: {why}"));
        assert_eq!(
            j.previous,
            want_prev.map(|(s, ms)| (s.to_string(), ms)),
            "{why}"
        );
        assert_eq!(j.unexpected, unexpected, "{why}");
        assert_eq!(j.label, label, "{why}");
    }
}

#[test]
fn the_same_status_again_is_not_a_transition() {
    let lc = lifecycle();
    let p = last("ORD-1", "SUBMITTED", 1_000);
    assert!(lc
        .judge("ORD-1", Some(&p), "SUBMITTED", 9_000 * MS)
        .is_none());
}

#[test]
fn judgement_attributes_come_in_a_fixed_order() {
    let j = Judgement {
        previous: Some(("SUBMITTED".into(), 1_500)),
        unexpected: true,
        label: "other".into(),
    };
    let keys: Vec<String> = j.attributes().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "order.status.previous",
            "order.stage.duration_ms",
            "order.transition.unexpected"
        ]
    );
    assert_eq!(j.attributes()[1].1, AttrValue::Int(1_500));
    let first = Judgement {
        previous: None,
        unexpected: false,
        label: "INITIATED".into(),
    };
    assert!(first.attributes().is_empty());
}

#[test]
fn stage_durations_are_labelled_only_between_known_statuses() {
    let lc = lifecycle();
    let known = lc
        .judge("o", Some(&last("o", "SUBMITTED", 0)), "CLOSED", 2_000 * MS)
        .unwrap();
    assert_eq!(known.stage(&lc), Some(("SUBMITTED", "CLOSED", 2_000)));
    let to_unknown = lc
        .judge("o", Some(&last("o", "SUBMITTED", 0)), "X", 2_000 * MS)
        .unwrap();
    assert_eq!(to_unknown.stage(&lc), Some(("SUBMITTED", "other", 2_000)));
    let from_unknown = lc
        .judge("o", Some(&last("o", "X", 0)), "CLOSED", 2_000 * MS)
        .unwrap();
    assert_eq!(from_unknown.stage(&lc), None);
}

#[test]
fn lifecycle_spans_live_in_the_orders_own_trace() {
    let lc = lifecycle();
    let digest = lc.order_digest("ORD-1");
    let (trace_id, root_id) = ids_from_digest(&digest);
    assert_eq!((trace_id, root_id), lifecycle_ids("test-ns", "ORD-1"));
    let cause = Cause {
        trace_id: TraceId([7; 16]),
        span_id: SpanId([8; 8]),
        flags: 0,
        role: "message",
    };
    let first = lc.judge("ORD-1", None, "INITIATED", 10).unwrap();
    let (root, change) = lifecycle_spans(
        &lc,
        &digest,
        "ORD-1",
        "INITIATED",
        "shop-api",
        &first,
        cause,
        SpanId([9; 8]),
        5,
        10,
    );
    let root = root.expect("the first status opens the lifecycle");
    assert_eq!(root.name, "order.lifecycle");
    assert_eq!((root.trace_id, root.span_id), (trace_id, root_id));
    assert_eq!(change.name, "order INITIATED");
    assert_eq!(change.trace_id, trace_id);
    assert_eq!(change.parent_span_id, Some(root_id));
    assert_eq!(change.trace_flags, FLAG_SAMPLED);
    assert_eq!(change.links.len(), 1);
    assert_eq!(change.links[0].span_id, SpanId([8; 8]));
    assert_eq!(
        change.links[0].attributes,
        vec![(
            "ordertrace.link".to_string(),
            AttrValue::Str("message".into())
        )]
    );
    assert_eq!(
        change.attr("service.name"),
        Some(&AttrValue::Str("shop-api".into()))
    );

    let later = lc
        .judge(
            "ORD-1",
            Some(&last("ORD-1", "INITIATED", 0)),
            "FILE_UPLOADED",
            10,
        )
        .unwrap();
    let (root, change) = lifecycle_spans(
        &lc,
        &digest,
        "ORD-1",
        "FILE_UPLOADED",
        "shop-api",
        &later,
        cause,
        SpanId([9; 8]),
        5,
        10,
    );
    assert!(root.is_none());
    assert_eq!(
        change.attr("order.status.previous"),
        Some(&AttrValue::Str("INITIATED".into()))
    );
}
