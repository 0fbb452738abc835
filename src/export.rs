//! The per-worker export queue: encoded spans wait here until the root context's tick sends them as one
//! OTLP/HTTP request. Bounded in spans (in flight included); one request in flight at a time, so a failed
//! batch goes back to the front and spans are delivered in order, once, as far as the collector's answers
//! allow. Beyond the bound, new spans are dropped and counted.

use std::collections::VecDeque;

use crate::metrics::Counters;
use crate::otlp::BatchFrame;

/// Longest wait between retries after repeated failures.
pub const MAX_BACKOFF_MS: u64 = 30_000;

#[derive(Debug)]
pub struct ExportQueue {
    queued: VecDeque<Vec<u8>>,
    in_flight: Option<InFlight>,
    max_queue: usize,
    max_batch: usize,
    flush_interval_ms: u64,
    backoff_ms: u64,
    next_attempt_ns: u64,
}

#[derive(Debug)]
struct InFlight {
    token: Option<u32>,
    spans: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry,
    Rejected,
}

/// What the glue should do after a tick or a response.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Idle,
    /// Send this export request body; report the token with [`ExportQueue::sent`] or the failure with
    /// [`ExportQueue::dispatch_failed`].
    Send(Vec<u8>),
}

impl ExportQueue {
    pub fn new(max_queue: usize, max_batch: usize, flush_interval_ms: u64) -> Self {
        ExportQueue {
            queued: VecDeque::new(),
            in_flight: None,
            max_queue,
            max_batch,
            flush_interval_ms,
            backoff_ms: 0,
            next_attempt_ns: 0,
        }
    }

    /// Spans held, waiting or in flight.
    pub fn len(&self) -> usize {
        self.queued.len() + self.in_flight.as_ref().map_or(0, |f| f.spans.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Queue one encoded span; false (and counted) when the queue is full.
    pub fn push(&mut self, span: Vec<u8>, counters: &mut Counters) -> bool {
        if self.len() >= self.max_queue {
            counters.spans_dropped += 1;
            return false;
        }
        self.queued.push_back(span);
        true
    }

    /// A full batch is waiting: worth sending before the next tick.
    pub fn has_full_batch(&self) -> bool {
        self.queued.len() >= self.max_batch
    }

    /// Called on tick (and after a successful response): the next request to send, if any is due.
    pub fn poll(&mut self, now_ns: u64, frame: &BatchFrame) -> Next {
        if self.in_flight.is_some() || self.queued.is_empty() || now_ns < self.next_attempt_ns {
            return Next::Idle;
        }
        let n = self.queued.len().min(self.max_batch);
        let spans: Vec<Vec<u8>> = self.queued.drain(..n).collect();
        let body = frame.export_request(spans.iter().map(|s| s.as_slice()));
        self.in_flight = Some(InFlight { token: None, spans });
        Next::Send(body)
    }

    /// The host accepted the request under `token`.
    pub fn sent(&mut self, token: u32, counters: &mut Counters) {
        if let Some(f) = &mut self.in_flight {
            f.token = Some(token);
        }
        counters.export_requests += 1;
    }

    /// The host refused to send (e.g. unknown cluster): same as a failed response.
    pub fn dispatch_failed(&mut self, now_ns: u64, counters: &mut Counters) {
        self.fail(now_ns, counters);
    }

    /// The answer to request `token`: `ok` for a 2xx from the collector; anything else, including a timeout
    /// or a reset, is a failure and the batch goes back to the front of the queue.
    /// Returns false when the token is not the one in flight (a stale answer, ignored).
    pub fn response(&mut self, token: u32, ok: bool, now_ns: u64, counters: &mut Counters) -> bool {
        let outcome = if ok {
            Outcome::Delivered
        } else {
            Outcome::Retry
        };
        self.settle(token, outcome, now_ns, counters)
    }

    /// The answer to request `token` as the collector gave it: `None` when there was no HTTP answer
    /// (reset, connect failure). Per the OTLP/HTTP spec, 429, 502, 503 and 504 (and no answer) are
    /// retried; any other non-2xx means the collector will never take this batch, so it is dropped
    /// (counted) instead of blocking the queue behind it.
    pub fn response_status(
        &mut self,
        token: u32,
        status: Option<u16>,
        now_ns: u64,
        counters: &mut Counters,
    ) -> bool {
        let outcome = match status {
            Some(s) if (200..300).contains(&s) => Outcome::Delivered,
            None | Some(429 | 502 | 503 | 504) => Outcome::Retry,
            Some(_) => Outcome::Rejected,
        };
        self.settle(token, outcome, now_ns, counters)
    }

    fn settle(
        &mut self,
        token: u32,
        outcome: Outcome,
        now_ns: u64,
        counters: &mut Counters,
    ) -> bool {
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.token == Some(token));
        if !matches {
            return false;
        }
        match outcome {
            Outcome::Delivered => {
                if let Some(f) = self.in_flight.take() {
                    counters.spans_exported += f.spans.len() as u64;
                }
                self.backoff_ms = 0;
                self.next_attempt_ns = 0;
            }
            Outcome::Retry => self.fail(now_ns, counters),
            Outcome::Rejected => {
                counters.export_failures += 1;
                if let Some(f) = self.in_flight.take() {
                    counters.spans_dropped += f.spans.len() as u64;
                }
            }
        }
        true
    }

    fn fail(&mut self, now_ns: u64, counters: &mut Counters) {
        counters.export_failures += 1;
        if let Some(f) = self.in_flight.take() {
            for s in f.spans.into_iter().rev() {
                self.queued.push_front(s);
            }
        }
        // Spans that arrived while the batch was out may now exceed the bound: drop the newest.
        while self.queued.len() > self.max_queue {
            self.queued.pop_back();
            counters.spans_dropped += 1;
        }
        self.backoff_ms = if self.backoff_ms == 0 {
            self.flush_interval_ms
        } else {
            (self.backoff_ms * 2).min(MAX_BACKOFF_MS)
        };
        self.next_attempt_ns = now_ns.saturating_add(self.backoff_ms.saturating_mul(1_000_000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    fn frame() -> BatchFrame {
        BatchFrame::new("s", "n")
    }

    /// A valid encoded Span whose name is `n`.
    fn span(n: u32) -> Vec<u8> {
        opentelemetry_proto::tonic::trace::v1::Span {
            name: n.to_string(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn names(body: &[u8]) -> Vec<String> {
        let req = ExportTraceServiceRequest::decode(body).unwrap();
        req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    fn send(q: &mut ExportQueue, now: u64, c: &mut Counters) -> Option<Vec<String>> {
        match q.poll(now, &frame()) {
            Next::Idle => None,
            Next::Send(b) => {
                q.sent(1, c);
                Some(names(&b))
            }
        }
    }

    #[test]
    fn batches_respect_max_batch_and_order() {
        let mut c = Counters::default();
        let mut q = ExportQueue::new(100, 3, 1000);
        for i in 0..7 {
            assert!(q.push(span(i), &mut c));
        }
        assert_eq!(send(&mut q, 0, &mut c).unwrap(), ["0", "1", "2"]);
        assert_eq!(
            q.poll(0, &frame()),
            Next::Idle,
            "one request in flight at a time"
        );
        assert!(q.response(1, true, 0, &mut c));
        assert_eq!(send(&mut q, 0, &mut c).unwrap(), ["3", "4", "5"]);
        assert!(q.response(1, true, 0, &mut c));
        assert_eq!(send(&mut q, 0, &mut c).unwrap(), ["6"]);
        assert!(q.response(1, true, 0, &mut c));
        assert_eq!(c.spans_exported, 7);
        assert_eq!(c.export_requests, 3);
        assert!(q.is_empty());
    }

    #[test]
    fn failure_requeues_in_order_with_backoff() {
        let mut c = Counters::default();
        let mut q = ExportQueue::new(100, 10, 1000);
        for i in 0..3 {
            q.push(span(i), &mut c);
        }
        send(&mut q, 0, &mut c).unwrap();
        q.push(span(3), &mut c);
        assert!(q.response(1, false, 0, &mut c));
        assert_eq!(c.export_failures, 1);
        assert_eq!(
            q.poll(999_000_000, &frame()),
            Next::Idle,
            "backoff not over"
        );
        assert_eq!(
            send(&mut q, 1_000_000_000, &mut c).unwrap(),
            ["0", "1", "2", "3"]
        );
        assert!(q.response(1, true, 1_000_000_000, &mut c));
        assert_eq!(c.spans_exported, 4);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let mut c = Counters::default();
        let mut q = ExportQueue::new(2, 2, 1000);
        assert!(q.push(span(0), &mut c));
        assert!(q.push(span(1), &mut c));
        assert!(!q.push(span(2), &mut c));
        assert_eq!(c.spans_dropped, 1);
        send(&mut q, 0, &mut c).unwrap();
        assert!(
            !q.push(span(3), &mut c),
            "in-flight spans count toward the bound"
        );
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn permanent_rejections_drop_the_batch_and_retryable_ones_do_not() {
        let mut c = Counters::default();
        let mut q = ExportQueue::new(100, 2, 1000);
        for i in 0..4 {
            q.push(span(i), &mut c);
        }
        send(&mut q, 0, &mut c).unwrap();
        assert!(q.response_status(1, Some(400), 0, &mut c));
        assert_eq!((c.spans_dropped, c.export_failures), (2, 1));
        assert_eq!(
            send(&mut q, 0, &mut c).unwrap(),
            ["2", "3"],
            "the queue moves on at once"
        );
        for retryable in [None, Some(429), Some(502), Some(503), Some(504)] {
            assert!(q.response_status(1, retryable, 0, &mut c));
            assert_eq!(
                send(&mut q, u64::MAX / 2, &mut c).unwrap(),
                ["2", "3"],
                "{retryable:?} is retried"
            );
        }
        assert!(q.response_status(1, Some(200), 0, &mut c));
        assert_eq!(c.spans_exported, 2);
    }

    #[test]
    fn stale_tokens_are_ignored() {
        let mut c = Counters::default();
        let mut q = ExportQueue::new(10, 10, 1000);
        q.push(span(0), &mut c);
        send(&mut q, 0, &mut c).unwrap();
        assert!(!q.response(99, true, 0, &mut c));
        assert_eq!(c.spans_exported, 0);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut c = Counters::default();
        let mut q = ExportQueue::new(10, 10, 1000);
        q.push(span(0), &mut c);
        let mut now = 0u64;
        for _ in 0..10 {
            send(&mut q, now, &mut c).unwrap();
            q.response(1, false, now, &mut c);
            now += MAX_BACKOFF_MS * 1_000_000;
        }
        assert_eq!(q.backoff_ms, MAX_BACKOFF_MS);
        assert_eq!(q.len(), 1);
    }
}
