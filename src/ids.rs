//! Trace and span ids from a buffered random source: one `random_get` host call per 512 bytes instead
//! of one per id (a request needs 8 bytes, a new trace 24).

use crate::host::RandomSource;
use crate::tracecontext::{SpanId, TraceId};

const POOL: usize = 512;

pub struct IdGenerator<R: RandomSource> {
    source: R,
    pool: [u8; POOL],
    used: usize,
}

impl<R: RandomSource> IdGenerator<R> {
    pub fn new(source: R) -> Self {
        IdGenerator {
            source,
            pool: [0; POOL],
            used: POOL,
        }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // An all-zero id is invalid in W3C trace context; redraw in the (2^-64) case it happens.
        for _ in 0..4 {
            if self.used + N > POOL {
                self.source.fill(&mut self.pool);
                self.used = 0;
            }
            if let Some(chunk) = self.pool.get(self.used..self.used + N) {
                out.copy_from_slice(chunk);
            }
            self.used += N;
            if out.iter().any(|b| *b != 0) {
                return out;
            }
        }
        // The source returns zeros only when it is broken; a fixed non-zero id keeps the output valid.
        if let Some(last) = out.last_mut() {
            *last = 1;
        }
        out
    }

    pub fn trace_id(&mut self) -> TraceId {
        TraceId(self.take::<16>())
    }

    pub fn span_id(&mut self) -> SpanId {
        SpanId(self.take::<8>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Zeros;
    impl RandomSource for Zeros {
        fn fill(&mut self, buf: &mut [u8]) {
            buf.fill(0);
        }
    }

    #[test]
    fn ids_are_distinct_and_non_zero() {
        let mut g = IdGenerator::new(crate::testing::SeededRandom(7));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = g.span_id();
            assert!(s.0.iter().any(|b| *b != 0));
            assert!(seen.insert(s.0));
        }
        assert!(g.trace_id().0.iter().any(|b| *b != 0));
    }

    #[test]
    fn broken_source_still_gives_valid_ids() {
        let mut g = IdGenerator::new(Zeros);
        assert!(g.trace_id().0.iter().any(|b| *b != 0));
        assert!(g.span_id().0.iter().any(|b| *b != 0));
    }
}
