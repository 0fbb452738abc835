//! W3C Trace Context: the `traceparent` header (levels 1 and 2), strictly validated.
//!
//! Parsing follows the "traceparent Header Field Values" and "Versioning of traceparent" sections of the
//! W3C Trace Context recommendation:
//!
//! - version `00`: exactly 55 characters `vv-<32 hex>-<16 hex>-<2 hex>`, lowercase hex only (uppercase is
//!   invalid), all-zero trace id or parent id invalid, nothing after the flags.
//! - version `ff`: invalid.
//! - a higher version (`01`..`fe`): the header must be at least 55 characters, the first 55 must parse under
//!   the `00` rules, and character 56 (if any) must be `-`; everything after it is ignored. Only the
//!   `sampled` bit of such a header's flags is kept ([`FLAG_SAMPLED`]): the spec says to parse only that bit
//!   for a higher version, and the other bits are "reserved, MUST be set to zero" in version `00`, the
//!   version we re-emit.
//! - version `00` keeps its flags byte exactly as received in [`TraceParent::flags`] (so level-2 flags such as
//!   [`FLAG_RANDOM`] stay visible); [`TraceParent::format`] always emits version `00` and `flags` verbatim.
//!   Callers building the *outgoing* header choose its flags themselves (normally their own sampling
//!   decision, optionally `| (incoming & FLAG_RANDOM)`).
//!
//! Whitespace: `traceparent` is an HTTP field, and an HTTP field value never includes leading or trailing
//! whitespace (RFC 9110 §5.5, OWS = SP / HTAB). Hosts usually strip it, but not all do, and the W3C test
//! suite (`test_traceparent_ows_handling`) expects a value surrounded by spaces/tabs to be accepted. So
//! leading and trailing SP/HTAB are trimmed before parsing; whitespace anywhere inside is invalid.

use std::fmt;

/// Length of a version-`00` `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;
/// The `sampled` trace flag (bit 0).
pub const FLAG_SAMPLED: u8 = 0x01;
/// The level-2 `random-trace-id` trace flag (bit 1).
pub const FLAG_RANDOM: u8 = 0x02;

/// A 16-byte trace id. All zeroes is the invalid id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id. All zeroes is the invalid id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// The caller's span id (`parent-id` on the wire).
    pub parent_id: SpanId,
    /// Version 00: the flags byte as received. Higher versions: only [`FLAG_SAMPLED`] is kept.
    pub flags: u8,
}

/// Why a `traceparent` value was rejected. One variant per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceParentError {
    /// Shorter than 55 characters (after trimming OWS).
    Length,
    /// The version is not two hex digits.
    Version,
    /// Version `ff` is forbidden.
    VersionFf,
    /// A `-` is missing where a field ends (positions 2, 35, 52).
    Delimiter,
    /// A field contains a character that is not a hex digit.
    Hex,
    /// A field contains an uppercase hex digit; only lowercase is allowed.
    Uppercase,
    /// The trace id is all zeroes.
    ZeroTraceId,
    /// The parent id is all zeroes.
    ZeroParentId,
    /// Version `00` with data after the trace flags (longer than 55 characters).
    TrailingData,
    /// A higher version whose trace flags are followed by something other than `-`.
    FutureVersionFormat,
}

impl TraceParentError {
    /// Short human text, suitable for a log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Length => "shorter than 55 characters",
            Self::Version => "version is not two lowercase hex digits",
            Self::VersionFf => "version ff is forbidden",
            Self::Delimiter => "missing '-' between fields",
            Self::Hex => "non-hex character in a field",
            Self::Uppercase => "uppercase hex digit (only lowercase is allowed)",
            Self::ZeroTraceId => "trace id is all zeroes",
            Self::ZeroParentId => "parent id is all zeroes",
            Self::TrailingData => "version 00 must be exactly 55 characters",
            Self::FutureVersionFormat => {
                "higher version: trace flags must be followed by '-' or the end"
            }
        }
    }
}

impl fmt::Display for TraceParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid traceparent: {}", self.reason())
    }
}

impl std::error::Error for TraceParentError {}

/// Parses a `traceparent` header value (see the module docs for the exact rules).
pub fn parse_traceparent(value: &[u8]) -> Result<TraceParent, TraceParentError> {
    let value = trim_ows(value);
    let (version_hex, rest) = value.split_at_checked(2).ok_or(TraceParentError::Length)?;
    let mut version = [0u8; 1];
    decode_hex(version_hex, &mut version).map_err(|e| match e {
        HexError::Uppercase => TraceParentError::Uppercase,
        HexError::NotHex => TraceParentError::Version,
    })?;
    let [version] = version;
    if version == 0xff {
        return Err(TraceParentError::VersionFf);
    }
    // Everything after the first 55 characters; `rest` continues "-" trace(32) "-" parent(16) "-" flags(2).
    let (_, tail) = value
        .split_at_checked(TRACEPARENT_LEN)
        .ok_or(TraceParentError::Length)?;
    let (sep, rest) = split_first(rest)?;
    expect_dash(sep)?;
    let (trace_hex, rest) = rest.split_at_checked(32).ok_or(TraceParentError::Length)?;
    let (sep, rest) = split_first(rest)?;
    expect_dash(sep)?;
    let (parent_hex, rest) = rest.split_at_checked(16).ok_or(TraceParentError::Length)?;
    let (sep, rest) = split_first(rest)?;
    expect_dash(sep)?;
    let (flags_hex, _) = rest.split_at_checked(2).ok_or(TraceParentError::Length)?;

    let mut trace_id = TraceId::default();
    decode_field(trace_hex, &mut trace_id.0)?;
    let mut parent_id = SpanId::default();
    decode_field(parent_hex, &mut parent_id.0)?;
    let mut flags = [0u8; 1];
    decode_field(flags_hex, &mut flags)?;
    let [mut flags] = flags;

    if !trace_id.is_valid() {
        return Err(TraceParentError::ZeroTraceId);
    }
    if !parent_id.is_valid() {
        return Err(TraceParentError::ZeroParentId);
    }
    if version == 0 {
        if !tail.is_empty() {
            return Err(TraceParentError::TrailingData);
        }
    } else {
        if let Some(&next) = tail.first() {
            if next != b'-' {
                return Err(TraceParentError::FutureVersionFormat);
            }
        }
        flags &= FLAG_SAMPLED;
    }
    Ok(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn split_first(v: &[u8]) -> Result<(u8, &[u8]), TraceParentError> {
    match v {
        [first, rest @ ..] => Ok((*first, rest)),
        [] => Err(TraceParentError::Length),
    }
}

fn expect_dash(b: u8) -> Result<(), TraceParentError> {
    if b == b'-' {
        Ok(())
    } else {
        Err(TraceParentError::Delimiter)
    }
}

fn decode_field(src: &[u8], out: &mut [u8]) -> Result<(), TraceParentError> {
    decode_hex(src, out).map_err(|e| match e {
        HexError::Uppercase => TraceParentError::Uppercase,
        HexError::NotHex => TraceParentError::Hex,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HexError {
    NotHex,
    Uppercase,
}

fn nibble_value(c: u8) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Err(HexError::Uppercase),
        _ => Err(HexError::NotHex),
    }
}

/// Decodes exactly `2 * out.len()` lowercase hex digits into `out`.
fn decode_hex(src: &[u8], out: &mut [u8]) -> Result<(), HexError> {
    if src.len() != out.len() * 2 {
        return Err(HexError::NotHex);
    }
    for (slot, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let [hi, lo] = pair else {
            return Err(HexError::NotHex);
        };
        *slot = (nibble_value(*hi)? << 4) | nibble_value(*lo)?;
    }
    Ok(())
}

fn nibble_char(n: u8) -> u8 {
    let n = n & 0x0f;
    if n < 10 {
        b'0' + n
    } else {
        b'a' + (n - 10)
    }
}

fn hex_bytes(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    bytes
        .iter()
        .flat_map(|&b| [nibble_char(b >> 4), nibble_char(b)])
}

/// Appends the lowercase hex form of `bytes` to `out`.
pub fn hex_lower(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    out.extend(hex_bytes(bytes).map(char::from));
}

impl TraceParent {
    /// Whether the caller set the `sampled` flag.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The version-`00` header value (55 characters), flags emitted as stored.
    pub fn format(&self) -> String {
        let mut buf = [0u8; TRACEPARENT_LEN];
        self.write_into(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Writes the version-`00` header value into `out` without allocating. Straight-line on purpose: this
    /// runs for every request, and an iterator chain here cost thousands of wasm instructions.
    pub fn write_into(&self, out: &mut [u8; TRACEPARENT_LEN]) {
        let (version, rest) = out.split_at_mut(3);
        version.copy_from_slice(b"00-");
        let (trace, rest) = rest.split_at_mut(32);
        write_hex(&self.trace_id.0, trace);
        let (dash, rest) = rest.split_at_mut(1);
        dash.fill(b'-');
        let (parent, rest) = rest.split_at_mut(16);
        write_hex(&self.parent_id.0, parent);
        let (dash, flags) = rest.split_at_mut(1);
        dash.fill(b'-');
        write_hex(&[self.flags], flags);
    }
}

/// Lowercase hex of `bytes` into `out` (two characters per byte; stops at the shorter of the two).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = DIGITS.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            *lo = DIGITS.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0');
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; TRACEPARENT_LEN];
        self.write_into(&mut buf);
        // The buffer is ASCII by construction.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

macro_rules! hex_id {
    ($ty:ident, $len:literal) => {
        impl $ty {
            /// False for the all-zero (invalid) id.
            pub fn is_valid(&self) -> bool {
                self.0.iter().any(|&b| b != 0)
            }

            /// Lowercase hex form.
            pub fn to_hex(&self) -> String {
                let mut s = String::with_capacity($len * 2);
                hex_lower(&self.0, &mut s);
                s
            }

            /// Parses the lowercase hex form (exactly two digits per byte; uppercase is rejected, as on
            /// the wire). The all-zero id parses; check [`Self::is_valid`].
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut id = [0u8; $len];
                decode_hex(s.as_bytes(), &mut id).ok()?;
                Some(Self(id))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for c in hex_bytes(&self.0) {
                    fmt::Write::write_char(f, char::from(c))?;
                }
                Ok(())
            }
        }
    };
}

hex_id!(TraceId, 16);
hex_id!(SpanId, 8);

/// 2^63 as f64 (exact).
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Head sampling for a new root trace, deterministic on the trace id (the same rule as OpenTelemetry's
/// `TraceIdRatioBased` sampler): the lower 8 bytes of the trace id, read big-endian and shifted right by one,
/// are compared against `ratio * 2^63`. `ratio >= 1` always samples; `ratio <= 0` or NaN never does.
pub fn sampling_decision(ratio: f64, trace_id: &TraceId) -> bool {
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    if ratio >= 1.0 {
        return true;
    }
    // In [0, 2^63): the float-to-int conversion saturates and cannot overflow.
    let threshold = (ratio * TWO_POW_63) as u64;
    let lower = trace_id
        .0
        .iter()
        .skip(8)
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    (lower >> 1) < threshold
}

#[cfg(test)]
mod tests {

    use super::*;

    const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PID: &str = "00f067aa0ba902b7";

    /// (input, trace id, parent id, flags, what the vector shows)
    const VALID: &[(&str, &str, &str, u8, &str)] = &[
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TID,
            PID,
            0x01,
            "spec example, sampled",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            TID,
            PID,
            0x00,
            "spec example, not sampled",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
            TID,
            PID,
            0x09,
            "unknown flag bits are kept as received for version 00",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            TID,
            PID,
            0x03,
            "level-2 random flag kept",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
            TID,
            PID,
            0xff,
            "all flags set is syntactically valid",
        ),
        (
            "00-00000000000000000000000000000001-0000000000000001-01",
            "00000000000000000000000000000001",
            "0000000000000001",
            0x01,
            "ids with a single non-zero bit are valid",
        ),
        (
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TID,
            PID,
            0x01,
            "leading space (OWS) trimmed",
        ),
        (
            "\t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TID,
            PID,
            0x01,
            "leading tab (OWS) trimmed",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 \t ",
            TID,
            PID,
            0x01,
            "trailing OWS trimmed",
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TID,
            PID,
            0x01,
            "higher version, exactly 55 characters",
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
            TID,
            PID,
            0x01,
            "higher version, extra fields after '-' ignored",
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0b-xyz",
            TID,
            PID,
            0x01,
            "higher version keeps only the sampled bit",
        ),
        (
            "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",
            TID,
            PID,
            0x00,
            "highest allowed version, unsampled",
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            TID,
            PID,
            0x01,
            "higher version, lone trailing '-'",
        ),
    ];

    /// (input, expected error, reason the vector is invalid)
    const INVALID: &[(&str, TraceParentError, &str)] = &[
        ("", TraceParentError::Length, "empty value"),
        ("   ", TraceParentError::Length, "whitespace only"),
        ("0", TraceParentError::Length, "one character"),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            TraceParentError::Length,
            "trace flags one hex digit (54 chars)",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            TraceParentError::Length,
            "trace flags missing",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
            TraceParentError::TrailingData,
            "trace flags three hex digits",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            TraceParentError::TrailingData,
            "version 00 with a trailing '-'",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            TraceParentError::TrailingData,
            "version 00 with an extra field",
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceParentError::VersionFf,
            "version ff is forbidden",
        ),
        (
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceParentError::Version,
            "version not hex",
        ),
        (
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceParentError::Uppercase,
            "version uppercase",
        ),
        (
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            TraceParentError::Delimiter,
            "three-digit version",
        ),
        (
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceParentError::Delimiter,
            "wrong first delimiter",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            TraceParentError::Delimiter,
            "wrong second delimiter",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7.01",
            TraceParentError::Delimiter,
            "wrong third delimiter",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            TraceParentError::Delimiter,
            "trace id one digit short",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
            TraceParentError::Delimiter,
            "parent id one digit short",
        ),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            TraceParentError::Uppercase,
            "trace id uppercase",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            TraceParentError::Uppercase,
            "parent id uppercase",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            TraceParentError::Uppercase,
            "trace flags uppercase",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473.-00f067aa0ba902b7-01",
            TraceParentError::Hex,
            "trace id with '.'",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            TraceParentError::Hex,
            "trace id with 'g'",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b.-01",
            TraceParentError::Hex,
            "parent id with '.'",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.0",
            TraceParentError::Hex,
            "trace flags with '.'",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0 ",
            TraceParentError::Length,
            "trace flags '0 ': trailing space trimmed leaves 54 chars",
        ),
        (
            "00-4bf92f3577b34da6a3ce929 0e0e4736-00f067aa0ba902b7-01",
            TraceParentError::Hex,
            "space inside the trace id",
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            TraceParentError::ZeroTraceId,
            "all-zero trace id",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            TraceParentError::ZeroParentId,
            "all-zero parent id",
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future-will-not-be-like",
            TraceParentError::FutureVersionFormat,
            "higher version, flags followed by '.'",
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            TraceParentError::FutureVersionFormat,
            "higher version, three-digit flags",
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            TraceParentError::Length,
            "higher version shorter than 55",
        ),
        (
            "cc-00000000000000000000000000000000-00f067aa0ba902b7-01-x",
            TraceParentError::ZeroTraceId,
            "higher version with all-zero trace id",
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01-x",
            TraceParentError::Uppercase,
            "higher version with uppercase parent id",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r",
            TraceParentError::TrailingData,
            "CR is not OWS",
        ),
        (
            "\u{a0}00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            TraceParentError::Version,
            "non-ASCII whitespace is not OWS",
        ),
    ];

    #[test]
    fn valid_vectors() {
        for (input, tid, pid, flags, why) in VALID {
            let tp = parse_traceparent(input.as_bytes())
                .unwrap_or_else(|e| panic!("{why}: {input:?} rejected: {e}"));
            assert_eq!(tp.trace_id.to_hex(), *tid, "{why}");
            assert_eq!(tp.parent_id.to_hex(), *pid, "{why}");
            assert_eq!(tp.flags, *flags, "{why}");
            assert_eq!(tp.sampled(), flags & 1 == 1, "{why}");
        }
    }

    #[test]
    fn invalid_vectors() {
        for (input, want, why) in INVALID {
            match parse_traceparent(input.as_bytes()) {
                Ok(tp) => panic!("{why}: {input:?} accepted as {tp:?}"),
                Err(got) => assert_eq!(got, *want, "{why}: {input:?}"),
            }
        }
    }

    #[test]
    fn vector_count() {
        assert!(VALID.len() + INVALID.len() >= 25);
    }

    #[test]
    fn reasons_are_distinct_and_displayed() {
        let all = [
            TraceParentError::Length,
            TraceParentError::Version,
            TraceParentError::VersionFf,
            TraceParentError::Delimiter,
            TraceParentError::Hex,
            TraceParentError::Uppercase,
            TraceParentError::ZeroTraceId,
            TraceParentError::ZeroParentId,
            TraceParentError::TrailingData,
            TraceParentError::FutureVersionFormat,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            assert!(seen.insert(e.reason()), "duplicate reason {e:?}");
            assert_eq!(
                e.to_string(),
                format!("invalid traceparent: {}", e.reason())
            );
        }
    }

    #[test]
    fn format_round_trip() {
        for (input, ..) in VALID {
            let tp = parse_traceparent(input.as_bytes()).unwrap();
            let s = tp.format();
            assert_eq!(s.len(), TRACEPARENT_LEN);
            assert!(s.starts_with("00-"), "always emitted as version 00: {s}");
            assert_eq!(parse_traceparent(s.as_bytes()).unwrap(), tp);
            assert_eq!(tp.to_string(), s);
        }
        let tp =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            tp.format(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let future =
            parse_traceparent(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-rest")
                .unwrap();
        assert_eq!(
            future.format(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn write_into_fills_whole_buffer() {
        let tp = TraceParent {
            trace_id: TraceId([0xab; 16]),
            parent_id: SpanId([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]),
            flags: 0x0f,
        };
        let mut buf = [b'?'; TRACEPARENT_LEN];
        tp.write_into(&mut buf);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            "00-abababababababababababababababab-0123456789abcdef-0f"
        );
    }

    #[test]
    fn id_hex_helpers() {
        let t = TraceId::from_hex(TID).unwrap();
        assert!(t.is_valid());
        assert_eq!(t.to_hex(), TID);
        assert_eq!(t.to_string(), TID);
        let s = SpanId::from_hex(PID).unwrap();
        assert!(s.is_valid());
        assert_eq!(s.to_hex(), PID);
        assert_eq!(s.to_string(), PID);

        let zero = TraceId::from_hex("00000000000000000000000000000000").unwrap();
        assert!(!zero.is_valid());
        assert!(!SpanId::default().is_valid());

        // (input, reason it is rejected)
        let bad_trace: &[(&str, &str)] = &[
            ("", "empty"),
            ("4bf92f3577b34da6a3ce929d0e0e473", "31 digits"),
            ("4bf92f3577b34da6a3ce929d0e0e47360", "33 digits"),
            ("4BF92F3577B34DA6A3CE929D0E0E4736", "uppercase"),
            ("4bf92f3577b34da6a3ce929d0e0e473g", "non-hex"),
            ("4bf92f3577b34da6a3ce929d0e0e473é", "non-ASCII"),
        ];
        for (input, why) in bad_trace {
            assert_eq!(TraceId::from_hex(input), None, "{why}");
        }
        let bad_span: &[(&str, &str)] = &[
            ("00f067aa0ba902b", "15 digits"),
            ("00f067aa0ba902b77", "17 digits"),
            ("00F067AA0BA902B7", "uppercase"),
            ("00f067aa-ba902b7", "dash"),
        ];
        for (input, why) in bad_span {
            assert_eq!(SpanId::from_hex(input), None, "{why}");
        }

        let mut out = String::from("x=");
        hex_lower(&[0x00, 0x0f, 0xf0, 0xff, 0x5a], &mut out);
        assert_eq!(out, "x=000ff0ff5a");
    }

    #[test]
    fn sampling_ratio_edges() {
        let ids = [
            TraceId([0; 16]),
            TraceId([0xff; 16]),
            TraceId::from_hex(TID).unwrap(),
        ];
        for id in &ids {
            assert!(sampling_decision(1.0, id));
            assert!(sampling_decision(2.0, id));
            assert!(sampling_decision(f64::INFINITY, id));
            assert!(!sampling_decision(0.0, id));
            assert!(!sampling_decision(-1.0, id));
            assert!(!sampling_decision(f64::NAN, id));
            assert!(!sampling_decision(f64::NEG_INFINITY, id));
        }
    }

    #[test]
    fn sampling_uses_lower_eight_bytes() {
        let mut low = [0u8; 16];
        low[15] = 1; // lower half = 1 -> (1 >> 1) = 0 < any positive threshold
        assert!(sampling_decision(1e-12, &TraceId(low)));
        // lower half = u64::MAX -> (>> 1) = 2^63 - 1, not below any threshold < 1.
        assert!(!sampling_decision(0.999, &TraceId([0xff; 16])));
        // Upper 8 bytes do not matter.
        let a = TraceId([0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        let b = TraceId([
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0,
        ]);
        for ratio in [0.1, 0.25, 0.2501, 0.5, 0.9] {
            assert_eq!(sampling_decision(ratio, &a), sampling_decision(ratio, &b));
        }
        // lower = 0x4000.. -> >>1 = 0x2000.. = 2^61 = 0.25 * 2^63: sampled strictly above 0.25.
        assert!(!sampling_decision(0.25, &a));
        assert!(sampling_decision(0.2501, &a));
    }

    #[test]
    fn sampling_ratio_is_roughly_respected() {
        // xorshift64 pseudo-random ids
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for ratio in [0.01, 0.1, 0.5, 0.9] {
            let n = 20_000;
            let mut hits = 0;
            for _ in 0..n {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&next().to_be_bytes());
                id[8..].copy_from_slice(&next().to_be_bytes());
                if sampling_decision(ratio, &TraceId(id)) {
                    hits += 1;
                }
            }
            let got = f64::from(hits) / f64::from(n);
            assert!((got - ratio).abs() < 0.02, "ratio {ratio}: got {got}");
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut s: u64 = 0x1234_5678_9abc_def1;
        let base = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for _ in 0..5000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let mut v = base.to_vec();
            let len = (s % 70) as usize;
            v.resize(len, b'-');
            let pos = ((s >> 8) % 70) as usize;
            if let Some(b) = v.get_mut(pos) {
                *b = (s >> 16) as u8;
            }
            let _ = parse_traceparent(&v);
        }
    }
}
