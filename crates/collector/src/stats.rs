//! The counters of a batch, and of all the batches of a processor.

/// Counts of one batch (or, in [`Processor::totals`](crate::Processor::totals), of all batches).
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

    pub(crate) fn add(&mut self, o: &Stats) {
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
