//! What the core needs from its host, as traits. The proxy-wasm glue implements them over Envoy's ABI;
//! native tests implement them with plain structs. Keeping the list short keeps host calls (the dominant
//! cost of a filter in Envoy) visible: every method here is at most one host call.

/// One HTTP stream as the filter sees it. Each method is one host call in the proxy-wasm glue.
pub trait StreamHost: SharedData {
    /// All request headers, read once in the request-headers callback (names are lowercase).
    fn request_headers(&mut self) -> HeaderMap;
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
}

/// The per-Envoy shared data (shared by all workers): the order's last-status table lives there.
pub trait SharedData {
    /// A value and its compare-and-swap token.
    fn shared_get(&mut self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Store a value if its CAS token is still `cas` (0: unconditionally); false on a lost race.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> bool;
}

/// Randomness for trace and span ids. The glue fills from WASI `random_get`.
pub trait RandomSource {
    fn fill(&mut self, buf: &mut [u8]);
}

/// A header map in the proxy-wasm wire format, kept as the host returned it and searched in place:
/// `u32 count`, then `count` pairs of `(u32 name_len, u32 value_len)`, then every name and value, each
/// followed by a NUL byte (all integers little-endian). Reading a header allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    buf: Vec<u8>,
}

fn le_u32(buf: &[u8], at: usize) -> Option<usize> {
    let b = buf.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    usize::try_from(u32::from_le_bytes(a)).ok()
}

impl HeaderMap {
    /// Wrap bytes in the wire format (from the host). Malformed input just finds no headers.
    pub fn from_wire(buf: Vec<u8>) -> Self {
        HeaderMap { buf }
    }

    /// Encode pairs into the wire format (for tests and mock hosts).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (k, v) in pairs {
            buf.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
            buf.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            buf.extend_from_slice(k.as_ref().as_bytes());
            buf.push(0);
            buf.extend_from_slice(v.as_ref());
            buf.push(0);
        }
        HeaderMap { buf }
    }

    /// Every (name, value) pair, in order; stops at the first malformed entry.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let count = le_u32(&self.buf, 0).unwrap_or(0);
        let data_start = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .unwrap_or(usize::MAX);
        let mut data = data_start;
        (0..count).map_while(move |i| {
            let lens = 4 + i * 8;
            let (kl, vl) = (le_u32(&self.buf, lens)?, le_u32(&self.buf, lens + 4)?);
            let k = self.buf.get(data..data.checked_add(kl)?)?;
            let v_start = data.checked_add(kl)?.checked_add(1)?;
            let v = self.buf.get(v_start..v_start.checked_add(vl)?)?;
            data = v_start.checked_add(vl)?.checked_add(1)?;
            Some((k, v))
        })
    }

    /// The first value of `name` (lowercase, as Envoy keeps header names).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trip_and_lookup() {
        let m =
            HeaderMap::from_pairs(&[(":path", &b"/a"[..]), ("x", b""), ("traceparent", b"00-1")]);
        assert_eq!(m.get(":path"), Some(&b"/a"[..]));
        assert_eq!(m.get("x"), Some(&b""[..]));
        assert_eq!(m.get("traceparent"), Some(&b"00-1"[..]));
        assert_eq!(m.get("missing"), None);
        assert_eq!(m.iter().count(), 3);
    }

    #[test]
    fn malformed_maps_find_nothing_and_never_panic() {
        let good = HeaderMap::from_pairs(&[("a", "b"), ("c", "d")]).buf;
        for cut in 0..good.len() {
            let m = HeaderMap::from_wire(good.get(..cut).unwrap().to_vec());
            let _ = m.get("c");
            assert!(m.iter().count() <= 2);
        }
        let m = HeaderMap::from_wire(vec![0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0]);
        assert_eq!(m.get("a"), None);
    }
}
