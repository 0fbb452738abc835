//! Test scaffolding, built only with the `testing` feature (and in the core's own tests).
//!
//! A scriptable in-memory [`StreamHost`] for native tests of the core (and the native side of the dual-run
//! contract tables). It records what the filter did to the request headers and counts host calls.

use crate::host::{RandomSource, SharedData, StreamHost};

#[derive(Debug, Default, Clone)]
pub struct MockStream {
    /// Request headers as the filter will find them (names lowercase); updated by set/remove.
    pub request_headers: Vec<(String, Vec<u8>)>,
    pub response_headers: Vec<(String, Vec<u8>)>,
    /// The body chunk of the current body callback.
    pub chunk: Vec<u8>,
    pub clock_ns: u64,
    pub code_details: Option<String>,
    /// Headers the filter set or removed, in order: (name, Some(value)) or (name, None).
    pub header_writes: Vec<(String, Option<Vec<u8>>)>,
    /// Host calls made, for cost assertions.
    pub calls: u64,
    /// The shared data of the Envoy (key → value, cas); tests share it between streams by moving it.
    pub shared: std::collections::HashMap<String, (Vec<u8>, u32)>,
}

impl MockStream {
    pub fn new(headers: &[(&str, &str)]) -> Self {
        MockStream {
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
            clock_ns: 1_700_000_000_000_000_000,
            ..MockStream::default()
        }
    }

    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

impl StreamHost for MockStream {
    fn request_headers(&mut self) -> crate::host::HeaderMap {
        self.calls += 1;
        crate::host::HeaderMap::from_pairs(&self.request_headers)
    }
    fn set_request_header(&mut self, name: &str, value: &[u8]) {
        self.calls += 1;
        self.header_writes
            .push((name.to_string(), Some(value.to_vec())));
        self.request_headers.retain(|(k, _)| k != name);
        self.request_headers
            .push((name.to_string(), value.to_vec()));
    }
    fn remove_request_header(&mut self, name: &str) {
        self.calls += 1;
        self.header_writes.push((name.to_string(), None));
        self.request_headers.retain(|(k, _)| k != name);
    }
    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.calls += 1;
        self.response_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn request_body(&mut self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.calls += 1;
        let end = start.saturating_add(len).min(self.chunk.len());
        self.chunk.get(start..end).map(<[u8]>::to_vec)
    }
    fn response_body(&mut self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.request_body(start, len)
    }
    fn now_nanos(&mut self) -> u64 {
        self.calls += 1;
        self.clock_ns
    }
    fn upstream_failure(&mut self) -> Option<String> {
        self.calls += 1;
        self.code_details.clone()
    }
}

impl SharedData for MockStream {
    fn shared_get(&mut self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.calls += 1;
        self.shared.get(key).cloned()
    }
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        self.calls += 1;
        let current = self.shared.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return false;
        }
        self.shared
            .insert(key.to_string(), (value.to_vec(), current + 1));
        true
    }
}

/// A deterministic source for tests and benchmarks (xorshift64*).
pub struct SeededRandom(pub u64);

impl RandomSource for SeededRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            let mut x = self.0 | 1;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            *b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}
