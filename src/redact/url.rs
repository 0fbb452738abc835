//! Structured strings: `url.path` (per segment), `url.query` (per parameter) and the `baggage` header.
//!
//! In these, a piece that trips a detector is replaced whole (`/users/[email]/orders`, `email=[redacted]`,
//! `q=[phone]`): a segment or a parameter value is short and has no meaning once part of it is gone, and a
//! whole replacement needs no re-encoding. Percent-encoded pieces are also checked decoded
//! (`john%40example.com`, `%2B7%20916%20123-45-67`).

use std::borrow::Cow;

use super::{detectors, KeyAction, Redactor, REDACTED};

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode (`%XX`; `+` as a space when `plus_is_space`, as in query strings), lossy UTF-8.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let escaped = match (
            c,
            b.get(i + 1).copied().and_then(hex_val),
            b.get(i + 2).copied().and_then(hex_val),
        ) {
            (b'%', Some(hi), Some(lo)) => Some(hi << 4 | lo),
            _ => None,
        };
        match escaped {
            Some(x) => {
                out.push(x);
                i += 3;
            }
            None => {
                out.push(if c == b'+' && plus_is_space { b' ' } else { c });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn needs_decoding(s: &str, plus_is_space: bool) -> bool {
    s.bytes().any(|c| c == b'%' || (plus_is_space && c == b'+'))
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Lazily rebuilt joined string: stays borrowed until the first piece changes.
struct Joiner<'a> {
    src: &'a str,
    sep: char,
    out: Option<String>,
}

impl<'a> Joiner<'a> {
    fn new(src: &'a str, sep: char) -> Self {
        Joiner {
            src,
            sep,
            out: None,
        }
    }

    /// Piece `index`, which starts at byte `start` of the source, is `piece` or is replaced by `repl`.
    fn piece(&mut self, index: usize, start: usize, piece: &str, repl: Option<String>) {
        match (&mut self.out, repl) {
            (None, None) => {}
            (None, Some(r)) => {
                let mut s = String::with_capacity(self.src.len() + r.len());
                s.push_str(self.src.get(..start).unwrap_or_default());
                s.push_str(&r);
                self.out = Some(s);
            }
            (Some(o), r) => {
                if index > 0 {
                    o.push(self.sep);
                }
                o.push_str(r.as_deref().unwrap_or(piece));
            }
        }
    }

    fn finish(self) -> Cow<'a, str> {
        match self.out {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(self.src),
        }
    }
}

impl Redactor {
    /// The replacement of a whole piece (path segment, query value, baggage value) when it trips a detector,
    /// as written or percent-decoded: the mask of the first match, its pseudonym under `hash`, or
    /// `[redacted]` under `drop`.
    fn whole_replacement(&self, s: &str, plus_is_space: bool) -> Option<String> {
        let raw = s.as_bytes();
        if let Some(h) = detectors::first(raw, self.on) {
            return Some(self.replacement(h.kind, raw.get(h.start..h.end).unwrap_or_default()));
        }
        if !needs_decoding(s, plus_is_space) {
            return None;
        }
        let d = percent_decode(s, plus_is_space);
        let db = d.as_bytes();
        let h = detectors::first(db, self.on)?;
        Some(self.replacement(h.kind, db.get(h.start..h.end).unwrap_or_default()))
    }

    /// `url.path`: the segments are the pieces of `path.split('/')`, numbered from 0, so the empty piece
    /// before a leading `/` is segment 0 and `/api/orders/{order_id}` has the order id at 3 (the numbering of
    /// `template.split('/')`). Segments for which `keep(index)` is true (template variables: order ids) are
    /// kept verbatim; any other segment that trips a detector (as written or percent-decoded) is replaced
    /// whole by its mask.
    pub fn url_path<'a>(&self, path: &'a str, keep: &dyn Fn(usize) -> bool) -> Cow<'a, str> {
        if !self.enabled || self.on.is_empty() {
            return Cow::Borrowed(path);
        }
        let mut j = Joiner::new(path, '/');
        let mut start = 0;
        for (i, seg) in path.split('/').enumerate() {
            let repl = if seg.is_empty() || keep(i) {
                None
            } else {
                self.whole_replacement(seg, false)
            };
            j.piece(i, start, seg, repl);
            start += seg.len() + 1;
        }
        j.finish()
    }

    /// `url.query` (without the `?`): parameters split on `&`. A parameter whose name trips a detector
    /// becomes `[mask]=[redacted]`. Otherwise the name (percent-decoded) goes through the key rules: an
    /// allowed name keeps its value; a denied name's value becomes `[redacted]` (`email=[redacted]`); a
    /// pseudonymised name's value (decoded) becomes its pseudonym; any other value that trips a detector
    /// (as written or decoded, `+` as space) is replaced whole by the mask of the first match (or
    /// `[redacted]` under `drop`).
    pub fn url_query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        if !self.enabled {
            return Cow::Borrowed(query);
        }
        let mut j = Joiner::new(query, '&');
        let mut start = 0;
        for (i, param) in query.split('&').enumerate() {
            let repl = self.query_param(param);
            j.piece(i, start, param, repl);
            start += param.len() + 1;
        }
        j.finish()
    }

    fn query_param(&self, param: &str) -> Option<String> {
        if param.is_empty() {
            return None;
        }
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (param, None),
        };
        if let Some(r) = self.whole_replacement(name, true) {
            return Some(match value {
                Some(_) => format!("{r}={REDACTED}"),
                None => r,
            });
        }
        let value = value?;
        let rule = if needs_decoding(name, true) {
            self.keys
                .lookup(&percent_decode(name, true))
                .map(|r| r.action)
        } else {
            self.keys.lookup(name).map(|r| r.action)
        };
        match rule {
            Some(KeyAction::Allow) => None,
            Some(KeyAction::Deny) => {
                (!value.is_empty() && value != REDACTED).then(|| format!("{name}={REDACTED}"))
            }
            Some(KeyAction::Pseudonymise) => {
                let v = if needs_decoding(value, true) {
                    Cow::Owned(percent_decode(value, true))
                } else {
                    Cow::Borrowed(value)
                };
                match self.pseudonymise_value(&v) {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(p) => Some(format!("{name}={p}")),
                }
            }
            Some(KeyAction::Detect) | None => self
                .whole_replacement(value, true)
                .map(|r| format!("{name}={r}")),
        }
    }

    /// The inbound `baggage` header at a public edge: keeps only the members whose key is in
    /// `redaction.baggage.public_allow` (exact key, ASCII case-insensitive) and whose value (as written and
    /// percent-decoded) trips no detector; member properties (`;…`) and empty members are removed. Returns
    /// the new header value, or None when nothing is left (remove the header). With redaction disabled the
    /// header is returned unchanged.
    pub fn filter_baggage(&self, header: &str) -> Option<String> {
        if !self.enabled {
            return Some(header.to_string());
        }
        let mut out = String::new();
        for member in header.split(',') {
            let kv = member.split(';').next().unwrap_or_default();
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim_matches(is_ows), v.trim_matches(is_ows));
            if k.is_empty() || v.is_empty() {
                continue;
            }
            if !self.baggage_allow.iter().any(|a| a.eq_ignore_ascii_case(k)) {
                continue;
            }
            if self.whole_replacement(v, false).is_some() {
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        (!out.is_empty()).then_some(out)
    }
}
