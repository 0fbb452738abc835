//! What the core needs from its host, as traits. The proxy-wasm glue implements them over Envoy's ABI;
//! native tests implement them with plain structs. Keeping the list short keeps host calls (the dominant
//! cost of a filter in Envoy) visible: every method here is at most one host call.

/// One HTTP stream as the filter sees it. Each method is one host call in the proxy-wasm glue.
pub trait StreamHost {
    /// All request headers, read once in the request-headers callback (names are lowercase).
    fn request_headers(&mut self) -> Vec<(String, Vec<u8>)>;
    /// Set (replace) one request header before the request goes upstream.
    fn set_request_header(&mut self, name: &str, value: &[u8]);
    /// Remove one request header before the request goes upstream.
    fn remove_request_header(&mut self, name: &str);
    /// One response header (the response-headers callback only; `:status` included).
    fn response_header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// Bytes `[start, start+len)` of the request body chunk of the current body callback.
    fn request_body(&mut self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Bytes `[start, start+len)` of the response body chunk of the current body callback.
    fn response_body(&mut self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Wall clock, nanoseconds since the Unix epoch.
    fn now_nanos(&mut self) -> u64;
    /// Why the upstream exchange failed (Envoy's response flags or code details); read only for failed requests.
    fn upstream_failure(&mut self) -> Option<String>;
    /// A value of the per-Envoy shared data (shared by all workers) and its compare-and-swap token.
    fn shared_get(&mut self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Store a shared-data value if its CAS token is still `cas` (0: unconditionally); false on a lost race.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool;
}

/// Randomness for trace and span ids. The glue fills from WASI `random_get`.
pub trait RandomSource {
    fn fill(&mut self, buf: &mut [u8]);
}
