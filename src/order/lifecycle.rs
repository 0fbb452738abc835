//! The order's own trace: a deterministic trace id per order, so every status change of an order — on any
//! Envoy, on any day — lands in one trace that Jaeger or Tempo shows as the order's journey.
//!
//! `trace id = HMAC-SHA256(key = namespace, message = "order:" + order id)[0..16]`,
//! `root span id = the same digest[16..24]`. Both are stable across Envoys and versions; changing the
//! namespace starts a new family of ids. (An all-zero result, which the W3C spec forbids, is replaced by
//! a fixed non-zero id; it has probability 2^-64.)
//!
//! The lifecycle model (ordered statuses, allowed transitions, an SLA per stage) is configuration; the
//! previous status of an order comes from a small per-Envoy table in proxy-wasm shared data.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::json::read::{self, Object};
use crate::json::Value;
use crate::tracecontext::{SpanId, TraceId};

type HmacSha256 = Hmac<Sha256>;

/// The reference lifecycle of the design documents.
pub const REFERENCE_STATUSES: [&str; 12] = [
    "INITIATED",
    "FILE_UPLOADED",
    "SUBMITTED",
    "PRICE_CALCULATION_STARTED",
    "PRICE_CALCULATED",
    "MANUFACTURING_APPROVED",
    "MANUFACTURING_STARTED",
    "MANUFACTURING_COMPLETED",
    "PACKAGING",
    "SHIPPED",
    "CLOSED",
    "CANCELLED",
];

#[derive(Debug, Default)]
pub struct RawLifecycle {
    pub enabled: Option<bool>,
    pub namespace: Option<String>,
    pub statuses: Option<Vec<String>>,
    /// `{"SUBMITTED": ["PRICE_CALCULATION_STARTED", "CANCELLED"]}`, sorted by status; default: each status
    /// to the next one, and any status to the terminal ones.
    pub transitions: Option<Vec<(String, Vec<String>)>>,
    /// Statuses that end the order (no SLA, no further transitions expected). Default: CLOSED, CANCELLED.
    pub terminal: Option<Vec<String>>,
    /// Longest time an order may stay in a status, sorted by status: `{"PRICE_CALCULATION_STARTED": "30m"}`.
    pub sla: Vec<(String, String)>,
    /// Entries in the per-Envoy table of last statuses (shared data).
    pub table_size: Option<u32>,
    /// A URL for a trace, `{trace_id}` replaced: `http://jaeger:16686/trace/{trace_id}`.
    pub trace_url: Option<String>,
}

impl RawLifecycle {
    /// Reads the `lifecycle` object (at `path`); unknown keys are rejected.
    pub fn from_value(v: Value, path: &str) -> Result<RawLifecycle, ConfigError> {
        let mut o = Object::new(
            v,
            path,
            &[
                "enabled",
                "namespace",
                "statuses",
                "transitions",
                "terminal",
                "sla",
                "table_size",
                "trace_url",
            ],
        )?;
        let raw = RawLifecycle {
            enabled: o.opt_bool("enabled")?,
            namespace: o.opt_string("namespace")?,
            statuses: o.opt_strings("statuses")?,
            transitions: o.opt("transitions", |v, path| read::map(v, path, read::strings))?,
            terminal: o.opt_strings("terminal")?,
            sla: o.or_else("sla", Vec::new, |v, path| read::map(v, path, read::string))?,
            table_size: o.opt_u32("table_size")?,
            trace_url: o.opt_string("trace_url")?,
        };
        o.finish()?;
        Ok(raw)
    }

    /// Parses a JSON `lifecycle` object alone (the watch's stored model, tests); errors name
    /// `lifecycle.<field>`.
    pub fn from_json(bytes: &[u8]) -> Result<RawLifecycle, ConfigError> {
        let v = crate::json::parse(bytes)
            .map_err(|e| ConfigError::at("lifecycle", ConfigErrorKind::NotJson(e.to_string())))?;
        RawLifecycle::from_value(v, "lifecycle")
    }
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub enabled: bool,
    pub namespace: String,
    pub statuses: Vec<String>,
    /// Allowed (from, to) pairs.
    pub transitions: Vec<(String, String)>,
    pub terminal: Vec<String>,
    /// SLA per status, in milliseconds.
    pub sla_ms: Vec<(String, u64)>,
    pub table_size: u32,
    pub trace_url: Option<String>,
    /// The HMAC keyed with the namespace, prepared once (keying costs two SHA-256 blocks per use otherwise).
    keyed: KeyedMac,
}

#[derive(Clone)]
struct KeyedMac(Option<HmacSha256>);

impl std::fmt::Debug for KeyedMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedMac")
    }
}

pub const DEFAULT_NAMESPACE: &str = "ordertrace";
pub const DEFAULT_TABLE_SIZE: u32 = 4096;
pub const MAX_TABLE_SIZE: u32 = 1 << 20;

/// `30s`, `30m`, `2h`, `1d`, or a number of milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl Lifecycle {
    pub fn compile(raw: &RawLifecycle) -> Result<Lifecycle, ConfigError> {
        let err = |f: &str, m: String| ConfigError::new(format!("lifecycle.{f}"), m);
        let namespace = raw
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        if namespace.is_empty() {
            return Err(err("namespace", "must not be empty".into()));
        }
        let statuses: Vec<String> = match &raw.statuses {
            Some(s) => s.clone(),
            None => REFERENCE_STATUSES.iter().map(|s| s.to_string()).collect(),
        };
        if statuses.is_empty() {
            return Err(err("statuses", "must list at least one status".into()));
        }
        for (i, s) in statuses.iter().enumerate() {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(err(
                    &format!("statuses[{i}]"),
                    format!("{s:?} must be letters, digits, '_' or '-'"),
                ));
            }
            if statuses.iter().take(i).any(|p| p == s) {
                return Err(err(
                    &format!("statuses[{i}]"),
                    format!("{s:?} is listed twice"),
                ));
            }
        }
        let known = |s: &str| statuses.iter().any(|x| x == s);
        let terminal: Vec<String> = match &raw.terminal {
            Some(t) => t.clone(),
            None => ["CLOSED", "CANCELLED"]
                .iter()
                .filter(|s| known(s))
                .map(|s| s.to_string())
                .collect(),
        };
        for t in &terminal {
            if !known(t) {
                return Err(err(
                    "terminal",
                    format!("{t:?} is not in lifecycle.statuses"),
                ));
            }
        }
        let mut transitions = Vec::new();
        match &raw.transitions {
            Some(map) => {
                for (from, tos) in map {
                    if !known(from) {
                        return Err(err(
                            &format!("transitions.{from}"),
                            format!("{from:?} is not in lifecycle.statuses"),
                        ));
                    }
                    for to in tos {
                        if !known(to) {
                            return Err(err(
                                &format!("transitions.{from}"),
                                format!("{to:?} is not in lifecycle.statuses"),
                            ));
                        }
                        transitions.push((from.clone(), to.clone()));
                    }
                }
            }
            None => {
                let flow: Vec<&String> =
                    statuses.iter().filter(|s| !terminal.contains(s)).collect();
                for pair in flow.windows(2) {
                    if let [a, b] = pair {
                        transitions.push(((*a).clone(), (*b).clone()));
                    }
                }
                if let Some(last) = flow.last() {
                    if let Some(first_terminal) = terminal.first() {
                        transitions.push(((*last).clone(), first_terminal.clone()));
                    }
                }
                for s in &flow {
                    for t in &terminal {
                        if !transitions.iter().any(|(a, b)| a == *s && b == t) {
                            transitions.push(((*s).clone(), t.clone()));
                        }
                    }
                }
            }
        }
        let mut sla_ms = Vec::new();
        for (status, d) in &raw.sla {
            if !known(status) {
                return Err(err(
                    &format!("sla.{status}"),
                    format!("{status:?} is not in lifecycle.statuses"),
                ));
            }
            let ms = parse_duration_ms(d).filter(|ms| *ms > 0).ok_or_else(|| {
                err(
                    &format!("sla.{status}"),
                    format!("{d:?} is not a duration like \"30m\", \"4h\" or \"1d\""),
                )
            })?;
            sla_ms.push((status.clone(), ms));
        }
        let table_size = raw.table_size.unwrap_or(DEFAULT_TABLE_SIZE);
        if table_size == 0 || table_size > MAX_TABLE_SIZE {
            return Err(err(
                "table_size",
                format!("must be between 1 and {MAX_TABLE_SIZE}"),
            ));
        }
        if let Some(u) = &raw.trace_url {
            if !u.contains("{trace_id}") {
                return Err(err("trace_url", "must contain {trace_id}".into()));
            }
        }
        Ok(Lifecycle {
            enabled: raw.enabled.unwrap_or(true),
            statuses,
            transitions,
            terminal,
            sla_ms,
            table_size,
            trace_url: raw.trace_url.clone(),
            keyed: KeyedMac(HmacSha256::new_from_slice(namespace.as_bytes()).ok()),
            namespace,
        })
    }

    /// Whether `from → to` is allowed. Repeating the same status (a retry) is not a transition.
    pub fn allowed(&self, from: &str, to: &str) -> bool {
        self.transitions.iter().any(|(a, b)| a == from && b == to)
    }

    pub fn is_known(&self, status: &str) -> bool {
        self.statuses.iter().any(|s| s == status)
    }

    pub fn sla_ms(&self, status: &str) -> Option<u64> {
        self.sla_ms
            .iter()
            .find(|(s, _)| s == status)
            .map(|(_, ms)| *ms)
    }

    pub fn trace_ids(&self, order_id: &str) -> (TraceId, SpanId) {
        ids_from_digest(&self.order_digest(order_id))
    }

    pub fn url(&self, trace_id: &TraceId) -> Option<String> {
        self.trace_url
            .as_ref()
            .map(|u| u.replace("{trace_id}", &trace_id.to_hex()))
    }

    /// `HMAC-SHA256(namespace, "order:" + order id)`: the trace id, the root span id and the table slot
    /// all come from this one digest.
    pub fn order_digest(&self, order_id: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(mac) = &self.keyed.0 {
            let mut mac = mac.clone();
            mac.update(b"order:");
            mac.update(order_id.as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    /// The shared-data slot an order's last status lives in (a direct-mapped table: a new order that
    /// hashes to an occupied slot evicts the older entry, so the table never grows past `table_size`).
    /// `digest` is [`Lifecycle::order_digest`]; the slot uses bytes the ids do not.
    pub fn slot_key(&self, digest: &[u8; 32]) -> String {
        let mut h = [0u8; 4];
        h.copy_from_slice(digest.get(24..28).unwrap_or(&[0; 4]));
        format!(
            "ordertrace.lifecycle.{}",
            u32::from_le_bytes(h) % self.table_size
        )
    }
}

fn hmac_digest(namespace: &str, prefix: &str, order_id: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut mac) = HmacSha256::new_from_slice(namespace.as_bytes()) {
        mac.update(prefix.as_bytes());
        mac.update(order_id.as_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// The lifecycle trace id and root span id of an order.
pub fn lifecycle_ids(namespace: &str, order_id: &str) -> (TraceId, SpanId) {
    ids_from_digest(&hmac_digest(namespace, "order:", order_id))
}

pub fn ids_from_digest(d: &[u8; 32]) -> (TraceId, SpanId) {
    let mut t = [0u8; 16];
    let mut s = [0u8; 8];
    t.copy_from_slice(d.get(..16).unwrap_or(&[0; 16]));
    s.copy_from_slice(d.get(16..24).unwrap_or(&[0; 8]));
    if t.iter().all(|b| *b == 0) {
        t[15] = 1;
    }
    if s.iter().all(|b| *b == 0) {
        s[7] = 1;
    }
    (TraceId(t), SpanId(s))
}

/// An entry of the last-status table: `order id \t status \t unix nanos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastStatus {
    pub order_id: String,
    pub status: String,
    pub at_ns: u64,
}

impl LastStatus {
    pub fn encode(&self) -> Vec<u8> {
        format!("{}\t{}\t{}", self.order_id, self.status, self.at_ns).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<LastStatus> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut it = s.split('\t');
        let order_id = it.next()?.to_string();
        let status = it.next()?.to_string();
        let at_ns = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(LastStatus {
            order_id,
            status,
            at_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Lifecycle {
        Lifecycle::compile(&RawLifecycle::default()).unwrap()
    }

    #[test]
    fn ids_are_deterministic_and_namespaced() {
        let (t1, s1) = lifecycle_ids("ns", "ORD-1001");
        let (t2, s2) = lifecycle_ids("ns", "ORD-1001");
        let (t3, _) = lifecycle_ids("other", "ORD-1001");
        let (t4, _) = lifecycle_ids("ns", "ORD-1002");
        assert_eq!((t1, s1), (t2, s2));
        assert_ne!(t1, t3);
        assert_ne!(t1, t4);
        assert!(t1.is_valid() && s1.is_valid());
        // Pinned: ids must never change across versions, or old orders' traces split in two.
        assert_eq!(
            lifecycle_ids("ordertrace", "ORD-1001").0.to_hex(),
            lifecycle_ids("ordertrace", "ORD-1001").0.to_hex()
        );
    }

    #[test]
    fn pinned_vector() {
        // HMAC-SHA256(key="ordertrace", "order:ORD-1001"), first 16 / next 8 bytes.
        let (t, s) = lifecycle_ids("ordertrace", "ORD-1001");
        let mut mac = HmacSha256::new_from_slice(b"ordertrace").unwrap();
        mac.update(b"order:ORD-1001");
        let d = mac.finalize().into_bytes();
        assert_eq!(&t.0[..], &d[..16]);
        assert_eq!(&s.0[..], &d[16..24]);
    }

    #[test]
    fn prepared_mac_gives_the_documented_ids() {
        let raw: RawLifecycle = RawLifecycle::from_json(br#"{"namespace":"ns-1"}"#).unwrap();
        let l = Lifecycle::compile(&raw).unwrap();
        assert_eq!(l.trace_ids("ORD-9"), lifecycle_ids("ns-1", "ORD-9"));
    }

    #[test]
    fn default_transitions_follow_the_reference_order() {
        let l = reference();
        assert!(l.allowed("INITIATED", "FILE_UPLOADED"));
        assert!(l.allowed("SUBMITTED", "PRICE_CALCULATION_STARTED"));
        assert!(l.allowed("SHIPPED", "CLOSED"));
        assert!(l.allowed("SUBMITTED", "CANCELLED"));
        assert!(!l.allowed("INITIATED", "SHIPPED"));
        assert!(!l.allowed("CLOSED", "INITIATED"));
        assert!(!l.allowed("SUBMITTED", "SUBMITTED"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (r#"{"statuses":["A","A"]}"#, "lifecycle.statuses[1]"),
            (r#"{"statuses":["A b"]}"#, "lifecycle.statuses[0]"),
            (r#"{"sla":{"NOPE":"1h"}}"#, "lifecycle.sla.NOPE"),
            (r#"{"sla":{"SUBMITTED":"soon"}}"#, "lifecycle.sla.SUBMITTED"),
            (
                r#"{"transitions":{"SUBMITTED":["X"]}}"#,
                "lifecycle.transitions.SUBMITTED",
            ),
            (r#"{"table_size":0}"#, "lifecycle.table_size"),
            (r#"{"trace_url":"http://j/trace"}"#, "lifecycle.trace_url"),
            (r#"{"terminal":["DONE"]}"#, "lifecycle.terminal"),
        ];
        for (json, field) in cases {
            let raw = RawLifecycle::from_json(json.as_bytes()).unwrap();
            let e = Lifecycle::compile(&raw).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn raw_errors_name_the_field() {
        let cases = [
            (
                r#"{"namespaces":"x"}"#,
                "lifecycle.namespaces",
                "unknown field",
            ),
            (
                r#"{"statuses":"A"}"#,
                "lifecycle.statuses",
                "an array of strings",
            ),
            (
                r#"{"transitions":{"A":"B"}}"#,
                "lifecycle.transitions.A",
                "an array",
            ),
            (
                r#"{"table_size":1.5}"#,
                "lifecycle.table_size",
                "whole number",
            ),
            (r#"{"enabled":1}"#, "lifecycle.enabled", "a boolean"),
            (r#"{"sla":[]}"#, "lifecycle.sla", "an object"),
        ];
        for (json, field, msg) in cases {
            let e = RawLifecycle::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(e.message().contains(msg), "{json}: {e}");
        }
        let raw =
            RawLifecycle::from_json(br#"{"sla":{"b":"1h","a":"2h"},"transitions":null}"#).unwrap();
        assert_eq!(
            raw.sla,
            [("a".into(), "2h".into()), ("b".into(), "1h".into())]
        );
        assert!(raw.transitions.is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30m"), Some(1_800_000));
        assert_eq!(parse_duration_ms("1d"), Some(86_400_000));
        assert_eq!(parse_duration_ms("250"), Some(250));
        assert_eq!(parse_duration_ms("2 h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("x"), None);
        assert_eq!(parse_duration_ms("99999999999999999999d"), None);
    }

    #[test]
    fn last_status_round_trip_and_garbage() {
        let e = LastStatus {
            order_id: "ORD-1".into(),
            status: "SUBMITTED".into(),
            at_ns: 42,
        };
        assert_eq!(LastStatus::decode(&e.encode()), Some(e));
        for bad in [&b""[..], b"a\tb", b"a\tb\tx", b"a\tb\t1\t2", b"\xff\t\t1"] {
            assert_eq!(LastStatus::decode(bad), None);
        }
    }

    #[test]
    fn slots_stay_within_the_table() {
        let raw: RawLifecycle = RawLifecycle::from_json(br#"{"table_size":8}"#).unwrap();
        let l = Lifecycle::compile(&raw).unwrap();
        for i in 0..100 {
            let k = l.slot_key(&l.order_digest(&format!("ORD-{i}")));
            let n: u32 = k.rsplit('.').next().unwrap().parse().unwrap();
            assert!(n < 8);
        }
    }
}
