//! proxy-wasm ABI 0.2.1 vocabulary: status codes, enum decoding, the header-map wire format,
//! and bounds-checked access to guest memory.
//!
//! Facts here were checked against the Rust SDK 0.2.5 (`hostcalls.rs`, `types.rs`) and against
//! Envoy's host (`proxy-wasm-cpp-host` `exports.cc`, Envoy `source/extensions/common/wasm/context.cc`).

use std::fmt;

use wasmtime::{Caller, Memory, Result};

use super::state::HostState;

/// `proxy_wasm::types::Status` / cpp-host `WasmResult`: the value every `proxy_*` import returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    pub fn code(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}({})", self.code())
    }
}

/// Log levels of `proxy_log` (same numbering as spdlog, which Envoy relies on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }
}

/// `proxy_wasm::types::MapType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpRequestTrailers = 1,
    HttpResponseHeaders = 2,
    HttpResponseTrailers = 3,
    GrpcReceiveInitialMetadata = 4,
    GrpcReceiveTrailingMetadata = 5,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

impl MapType {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::HttpRequestHeaders,
            1 => Self::HttpRequestTrailers,
            2 => Self::HttpResponseHeaders,
            3 => Self::HttpResponseTrailers,
            4 => Self::GrpcReceiveInitialMetadata,
            5 => Self::GrpcReceiveTrailingMetadata,
            6 => Self::HttpCallResponseHeaders,
            7 => Self::HttpCallResponseTrailers,
            _ => return None,
        })
    }

    /// True for the two maps of the downstream request.
    pub fn is_request(self) -> bool {
        matches!(self, Self::HttpRequestHeaders | Self::HttpRequestTrailers)
    }
}

/// `proxy_wasm::types::BufferType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    DownstreamData = 2,
    UpstreamData = 3,
    HttpCallResponseBody = 4,
    GrpcReceiveBuffer = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
    CallData = 8,
}

impl BufferType {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::HttpRequestBody,
            1 => Self::HttpResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::HttpCallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            _ => return None,
        })
    }
}

/// `proxy_wasm::types::StreamType` (argument of `proxy_continue_stream` / `proxy_close_stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamType {
    HttpRequest = 0,
    HttpResponse = 1,
    Downstream = 2,
    Upstream = 3,
}

impl StreamType {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::HttpRequest,
            1 => Self::HttpResponse,
            2 => Self::Downstream,
            3 => Self::Upstream,
            _ => return None,
        })
    }
}

/// `proxy_wasm::types::MetricType`; Envoy keeps the type in the low two bits of the metric id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            _ => return None,
        })
    }
}

/// Serialises header pairs in the proxy-wasm map format: `u32 count`, then `count` pairs of
/// `(u32 key_len, u32 value_len)`, then every `key\0value\0`; all integers little-endian.
pub fn serialize_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut size = 4;
    for (k, v) in pairs {
        size += 8 + k.as_ref().len() + 1 + v.as_ref().len() + 1;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len_u32(k.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.as_ref().len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses the proxy-wasm map format; `None` when the bytes are not a well-formed map.
/// An empty input is an empty map (the SDK sends 4 zero bytes, but tolerate nothing at all).
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let (count, mut rest) = take_u32(bytes)?;
    let count = usize::try_from(count).ok()?;
    let mut lens = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let (k, r) = take_u32(rest)?;
        let (v, r) = take_u32(r)?;
        lens.push((usize::try_from(k).ok()?, usize::try_from(v).ok()?));
        rest = r;
    }
    let mut pairs = Vec::with_capacity(lens.len());
    for (klen, vlen) in lens {
        let (key, r) = rest.split_at_checked(klen)?;
        let (nul, r) = r.split_first()?;
        if *nul != 0 {
            return None;
        }
        let (value, r) = r.split_at_checked(vlen)?;
        let (nul, r) = r.split_first()?;
        if *nul != 0 {
            return None;
        }
        pairs.push((key.to_vec(), value.to_vec()));
        rest = r;
    }
    Some(pairs)
}

/// Splits a `proxy_get_property` path (segments separated by `\0`) into its segments.
pub fn split_property_path(path: &[u8]) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    path.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_at_checked(4)?;
    let arr: [u8; 4] = head.try_into().ok()?;
    Some((u32::from_le_bytes(arr), rest))
}

/// Lengths on the wire are u32; anything a test can build fits.
pub fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// Guest memory.

fn memory(caller: &Caller<'_, HostState>) -> Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the guest module exports no `memory`"))
}

/// Copies `len` bytes at `ptr` out of guest memory; `None` when out of bounds.
pub fn read(caller: &Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Option<Vec<u8>>> {
    let mem = memory(caller)?;
    let start = ptr as usize;
    let Some(end) = start.checked_add(len as usize) else {
        return Ok(None);
    };
    Ok(mem.data(caller).get(start..end).map(<[u8]>::to_vec))
}

/// Writes `bytes` at `ptr`; false when out of bounds.
pub fn write(caller: &mut Caller<'_, HostState>, ptr: u32, bytes: &[u8]) -> Result<bool> {
    let mem = memory(caller)?;
    let start = ptr as usize;
    let Some(end) = start.checked_add(bytes.len()) else {
        return Ok(false);
    };
    match mem.data_mut(caller).get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(true)
        }
        None => Ok(false),
    }
}

pub fn write_u32(caller: &mut Caller<'_, HostState>, ptr: u32, v: u32) -> Result<bool> {
    write(caller, ptr, &v.to_le_bytes())
}

pub fn write_u64(caller: &mut Caller<'_, HostState>, ptr: u32, v: u64) -> Result<bool> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the guest the way Envoy does (`copyToPointerSize`): memory for a non-empty
/// value is allocated by calling the guest's allocator (`malloc` if exported, else
/// `proxy_on_memory_allocate`), the guest owns it afterwards (the SDK frees it with
/// `Vec::from_raw_parts`); an empty value is reported as pointer 0, size 0 without allocating.
pub fn copy_to_guest(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> Result<Status> {
    let mut addr = 0u32;
    if !bytes.is_empty() {
        let alloc = caller.data().allocator.clone().ok_or_else(|| {
            wasmtime::Error::msg(
                "the guest exports neither `malloc` nor `proxy_on_memory_allocate`",
            )
        })?;
        addr = alloc.call(&mut *caller, len_u32(bytes.len()))?;
        if addr == 0 || !write(caller, addr, bytes)? {
            return Ok(Status::InvalidMemoryAccess);
        }
    }
    if !write_u32(caller, ptr_ptr, addr)? || !write_u32(caller, size_ptr, len_u32(bytes.len()))? {
        return Ok(Status::InvalidMemoryAccess);
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_matches_the_sdk_layout() {
        let bytes = serialize_pairs(&[(":method", "GET"), ("x", "")]);
        // count, (7,3), (1,0), ":method\0GET\0x\0\0"
        let mut expected = vec![2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b":method\0GET\0x\0\0");
        assert_eq!(bytes, expected);
        let back = deserialize_pairs(&bytes).unwrap();
        assert_eq!(
            back,
            vec![
                (b":method".to_vec(), b"GET".to_vec()),
                (b"x".to_vec(), vec![])
            ]
        );
    }

    #[test]
    fn malformed_pairs_are_rejected() {
        assert_eq!(deserialize_pairs(&[]), Some(vec![]));
        assert_eq!(deserialize_pairs(&[0, 0, 0, 0]), Some(vec![]));
        // count says one pair but the lengths are missing
        assert_eq!(deserialize_pairs(&[1, 0, 0, 0]), None);
        // missing NUL terminator
        assert_eq!(
            deserialize_pairs(&[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'a', b'b', 0]),
            None
        );
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(split_property_path(b"node\0id"), vec!["node", "id"]);
        assert_eq!(split_property_path(b""), Vec::<String>::new());
    }
}
