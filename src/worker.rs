//! What one Envoy worker (one wasm VM) shares between its streams or connections: the compiled
//! configuration, the id generator, the counters, the export queue, and the order digests it computed
//! last. Both Envoy modules (HTTP and AMQP) hold one; the glue keeps it in the root context.

use crate::config::Config;
use crate::export::ExportQueue;
use crate::host::{RandomSource, SharedData};
use crate::ids::IdGenerator;
use crate::metrics::{Counters, Labelled, LabelledMetrics};
use crate::order::{self, attrs, Cause, LastStatus, Lifecycle};
use crate::otlp::{AttrValue, BatchFrame, SpanRecord};
use crate::redact;

/// Everything one worker (one Envoy worker thread, one wasm VM) shares between its streams.
pub struct Worker<R: RandomSource> {
    pub config: Config,
    pub ids: IdGenerator<R>,
    pub counters: Counters,
    /// Per-route and per-status metrics with labels, flushed on tick.
    pub labelled: LabelledMetrics,
    pub queue: ExportQueue,
    pub frame: BatchFrame,
    digests: DigestCache,
}

/// The lifecycle digests (an HMAC-SHA256 each) of the last few orders this worker saw. An order's
/// requests come in runs — retries, polling, the calls of one step — and the HMAC is the largest single
/// cost of a traced request's transition check, so a small round-robin cache pays for itself.
#[derive(Default)]
struct DigestCache {
    entries: Vec<(String, [u8; 32])>,
    next: usize,
}

const DIGEST_CACHE_ENTRIES: usize = 8;

impl DigestCache {
    fn get(&mut self, lc: &Lifecycle, order_id: &str) -> [u8; 32] {
        if let Some((_, d)) = self.entries.iter().find(|(id, _)| id == order_id) {
            return *d;
        }
        let d = lc.order_digest(order_id);
        let entry = (order_id.to_string(), d);
        if self.entries.len() < DIGEST_CACHE_ENTRIES {
            self.entries.push(entry);
        } else if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = entry;
        }
        self.next = (self.next + 1) % DIGEST_CACHE_ENTRIES;
        d
    }
}

impl<R: RandomSource> Worker<R> {
    pub fn new(config: Config, random: R, instance_id: &str) -> Self {
        let queue = ExportQueue::new(
            config.collector.max_queue_spans,
            config.collector.max_batch_spans,
            config.collector.flush_interval_ms,
        );
        let frame = BatchFrame::new(&config.service, instance_id);
        let labelled =
            LabelledMetrics::with_routes(config.routes.iter().map(|r| r.span_name.clone()));
        Worker {
            config,
            ids: IdGenerator::new(random),
            counters: Counters::default(),
            labelled,
            queue,
            frame,
            digests: DigestCache::default(),
        }
    }

    /// Encodes (redacting first) and queues one span for export.
    pub fn export(&mut self, span: SpanRecord) {
        let bytes = redact::encode_span(&self.config.redactor, span);
        self.queue.push(bytes, &mut self.counters);
    }

    /// A successful status change seen on `span` (which carries `order.id` and `order.status`): looks up
    /// the order's previous status in the per-Envoy table, annotates `span` with the judgement, counts
    /// it, and queues the order's lifecycle spans (exported whatever the span's own sampling decision).
    /// `role` says what `span` is to the lifecycle span (`request`, `message`).
    pub fn record_transition(
        &mut self,
        shared: &mut impl SharedData,
        span: &mut SpanRecord,
        role: &'static str,
        start_ns: u64,
        end_ns: u64,
    ) {
        let (Some(AttrValue::Str(order_id)), Some(AttrValue::Str(status))) = (
            span.attr(attrs::ORDER_ID).cloned(),
            span.attr(attrs::ORDER_STATUS).cloned(),
        ) else {
            return;
        };
        let lc = &self.config.lifecycle;
        let digest = self.digests.get(lc, &order_id);
        let key = lc.slot_key(&digest);
        let mut judgement = None;
        // Compare-and-swap: another worker may update the same slot between our read and write.
        for _ in 0..3 {
            let current = shared.shared_get(&key);
            let cas = current.as_ref().map_or(0, |(_, c)| *c);
            let previous = current.and_then(|(v, _)| LastStatus::decode(&v));
            let Some(j) = lc.judge(&order_id, previous.as_ref(), &status, end_ns) else {
                return; // the same status again (a retry or a duplicate): not a transition
            };
            judgement = Some(j);
            let record = LastStatus {
                order_id: order_id.clone(),
                status: status.clone(),
                at_ns: end_ns,
            };
            if shared.shared_set(&key, &record.encode(), cas) {
                break;
            }
        }
        let Some(judgement) = judgement else { return };
        self.counters.transitions += 1;
        if judgement.unexpected {
            self.counters.transitions_unexpected += 1;
        }
        self.labelled.count(Labelled::Transitions {
            service: self.config.service.clone(),
            status: judgement.label.clone(),
        });
        if let Some((from, to, ms)) = judgement.stage(lc) {
            let stage = Labelled::StageDurationMs {
                from: from.to_string(),
                to: to.to_string(),
            };
            self.labelled.sample(stage, ms);
        }
        span.attributes.extend(judgement.attributes());
        let cause = Cause {
            trace_id: span.trace_id,
            span_id: span.span_id,
            flags: span.trace_flags,
            role,
        };
        let span_id = self.ids.span_id();
        let (root, change) = order::lifecycle_spans(
            lc,
            &digest,
            &order_id,
            &status,
            &self.config.service,
            &judgement,
            cause,
            span_id,
            start_ns,
            end_ns,
        );
        if let Some(root) = root {
            self.export(root);
        }
        self.export(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_cache_never_mixes_orders() {
        let json = r#"{"service":"s","collector":{"cluster":"otlp"},"redaction":{"enabled":false},"lifecycle":{}}"#;
        let cfg = Config::from_json(json.as_bytes()).unwrap();
        let lc = &cfg.lifecycle;
        assert_ne!(lc.order_digest("ORD-0"), lc.order_digest("ORD-1"));
        let mut cache = DigestCache::default();
        // More orders than entries, revisited in an order that forces evictions and hits.
        let ids: Vec<String> = (0..3 * DIGEST_CACHE_ENTRIES)
            .map(|i| format!("ORD-{i}"))
            .collect();
        for round in 0..3 {
            for (i, id) in ids.iter().enumerate() {
                if (i + round) % 2 == 0 {
                    assert_eq!(cache.get(lc, id), lc.order_digest(id), "{id}");
                    assert_eq!(cache.get(lc, id), lc.order_digest(id), "{id} (hit)");
                }
            }
        }
        assert!(cache.entries.len() <= DIGEST_CACHE_ENTRIES);
    }
}
