//! Find scalar values at JSON Pointers (RFC 6901) in a possibly truncated JSON prefix, in one pass.
//!
//! The proxy buffers at most `body.max_bytes` of a body, so the document may be cut anywhere. [`scan`] walks
//! the bytes once, left to right, without building a tree, and reports for each pointer the value at the
//! first place the document puts something at that pointer:
//!
//! - a string: unescaped (`\uXXXX` included; surrogate pairs are combined; a lone surrogate becomes
//!   U+FFFD, and so does invalid UTF-8 inside the string);
//! - a number: its literal text as written (`-1.5e3`); a number is only complete when a byte that ends it
//!   (whitespace, `,`, `}`, `]`) is inside the document, since `12` at the very end might be `123`;
//! - `true` / `false`: that text;
//! - `null`, an object or an array: `None` (the pointer is settled; a later duplicate key does not count).
//!
//! A value cut off by the end of the document is `None`, never a partial string. Malformed JSON stops the
//! scan at the error; what was found before it is kept. Nesting deeper than [`MAX_DEPTH`] stops the scan.
//! The scan ends as soon as every pointer is settled. A UTF-8 byte order mark and whitespace before the
//! document are skipped.
//!
//! Pointer rules: `""` (the whole document) is rejected, since a body value is always inside it; a token
//! matches an object member by exact (unescaped) name, and an array element when it is a decimal index
//! without leading zeros (`0`, `7`, `12`; not `01`). `-` ("past the end") never matches an array element;
//! like `01`, it can still match an object member of that name, as RFC 6901 says.
//!
//! Allocation: per scan, a few small vectors (results, per-pointer state, the container stack, one scratch
//! buffer); per token, nothing, except unescaping an *escaped* key into the reused scratch buffer when some
//! pointer needs that key compared, and the returned `String`s.

use std::fmt;

/// Containers nested deeper than this stop the scan.
pub const MAX_DEPTH: usize = 64;

/// A compiled JSON Pointer (RFC 6901) with at least one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    source: String,
    tokens: Vec<String>,
    /// `Some(i)` when the token is a canonical array index.
    indices: Vec<Option<usize>>,
}

/// A pointer that failed to compile; `pointer` is the input as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerError {
    pub pointer: String,
    pub message: String,
}

impl fmt::Display for PointerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON pointer {:?}: {}", self.pointer, self.message)
    }
}

impl std::error::Error for PointerError {}

fn array_index(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    match bytes {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ => bytes.iter().try_fold(0usize, |acc, &b| {
            if b.is_ascii_digit() {
                acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
            } else {
                None
            }
        }),
    }
}

impl JsonPointer {
    /// Compiles an RFC 6901 pointer such as `/items/0/id` (`~0` is `~`, `~1` is `/`).
    pub fn parse(s: &str) -> Result<Self, PointerError> {
        let err = |message: String| PointerError {
            pointer: s.to_string(),
            message,
        };
        if s.is_empty() {
            return Err(err(
                "must point into the document (\"\" is the whole document); e.g. \"/id\""
                    .to_string(),
            ));
        }
        let Some(body) = s.strip_prefix('/') else {
            return Err(err(if s.starts_with('#') {
                "must start with '/' (the URI fragment form \"#/...\" is not supported)".to_string()
            } else {
                format!("must start with '/', e.g. \"/{s}\"")
            }));
        };
        let mut tokens = Vec::new();
        for raw in body.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        other => {
                            let shown: String = std::iter::once('~').chain(other).collect();
                            return Err(err(format!(
                                "invalid escape {shown:?}: only \"~0\" ('~') and \"~1\" ('/') are allowed"
                            )));
                        }
                    }
                } else {
                    token.push(c);
                }
            }
            tokens.push(token);
        }
        if tokens.len() > MAX_DEPTH {
            return Err(err(format!(
                "has {} levels; values nested deeper than {MAX_DEPTH} are never scanned",
                tokens.len()
            )));
        }
        let indices = tokens.iter().map(|t| array_index(t)).collect();
        Ok(Self {
            source: s.to_string(),
            tokens,
            indices,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The unescaped reference tokens (never empty).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Scans `doc` once and returns, per pointer (same order), the first scalar at it (see the module docs).
pub fn scan(doc: &[u8], pointers: &[&JsonPointer]) -> Vec<Option<String>> {
    scan_with_end(doc, pointers).0
}

/// [`scan`] plus the byte offset where scanning stopped (for tests of the early exit).
fn scan_with_end(doc: &[u8], pointers: &[&JsonPointer]) -> (Vec<Option<String>>, usize) {
    let mut scanner = Scanner {
        doc,
        pos: 0,
        pointers,
        matched: vec![0; pointers.len()],
        settled: vec![false; pointers.len()],
        results: vec![None; pointers.len()],
        remaining: pointers.len(),
        stack: Vec::new(),
        scratch: Vec::new(),
    };
    if scanner.remaining > 0 {
        // Every way the walk ends (done, end of input, malformed, too deep) keeps what was found.
        let _ = scanner.run();
    }
    (scanner.results, scanner.pos)
}

/// Why the walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The document ended (truncated, or the root value is complete).
    End,
    /// Malformed JSON or nesting deeper than [`MAX_DEPTH`].
    Malformed,
    /// Every pointer is settled.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Value,
    AfterValue,
    Key,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Object,
    /// Index of the current element.
    Array(usize),
}

#[derive(Debug, Clone, Copy)]
enum Component<'a> {
    Key(&'a [u8]),
    Index(usize),
}

/// A string token: content bytes `start..end` (between the quotes), and whether it has escapes.
#[derive(Debug, Clone, Copy)]
struct StrSpan {
    start: usize,
    end: usize,
    escaped: bool,
}

struct Scanner<'d, 'p> {
    doc: &'d [u8],
    pos: usize,
    pointers: &'p [&'p JsonPointer],
    /// Per pointer: how many leading tokens match the current path (never more than the path length).
    matched: Vec<usize>,
    settled: Vec<bool>,
    results: Vec<Option<String>>,
    remaining: usize,
    stack: Vec<Frame>,
    /// Reused buffer for unescaping keys and string values.
    scratch: Vec<u8>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn ends_scalar(b: u8) -> bool {
    is_ws(b) || matches!(b, b',' | b'}' | b']')
}

fn hex4(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [a, b, c, d, ..] => [a, b, c, d].iter().try_fold(0u16, |acc, &&h| {
            let v = match h {
                b'0'..=b'9' => h - b'0',
                b'a'..=b'f' => h - b'a' + 10,
                b'A'..=b'F' => h - b'A' + 10,
                _ => return None,
            };
            Some((acc << 4) | u16::from(v))
        }),
        _ => None,
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Unescapes the content of a string token that `scan_string` validated. Never panics on other input:
/// anything unexpected is reported as malformed.
fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Stop> {
    out.clear();
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|&b| b == b'\\') {
        let (literal, escape) = rest.split_at_checked(i).ok_or(Stop::Malformed)?;
        out.extend_from_slice(literal);
        let [b'\\', kind, tail @ ..] = escape else {
            return Err(Stop::Malformed);
        };
        rest = tail;
        let simple = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = hex4(tail).ok_or(Stop::Malformed)?;
                rest = tail.get(4..).ok_or(Stop::Malformed)?;
                let c = match unit {
                    0xd800..=0xdbff => {
                        // A high surrogate: combine with an immediately following low surrogate.
                        let low = match rest {
                            [b'\\', b'u', more @ ..] => {
                                hex4(more).filter(|l| (0xdc00..=0xdfff).contains(l))
                            }
                            _ => None,
                        };
                        match low {
                            Some(low) => {
                                rest = rest.get(6..).ok_or(Stop::Malformed)?;
                                let cp = 0x10000
                                    + ((u32::from(unit) - 0xd800) << 10)
                                    + (u32::from(low) - 0xdc00);
                                char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER)
                            }
                            None => char::REPLACEMENT_CHARACTER,
                        }
                    }
                    0xdc00..=0xdfff => char::REPLACEMENT_CHARACTER,
                    _ => char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER),
                };
                push_char(out, c);
                continue;
            }
            _ => return Err(Stop::Malformed),
        };
        out.push(simple);
    }
    out.extend_from_slice(rest);
    Ok(())
}

/// Updates the per-pointer match depth when the path component at depth `k` (1-based) becomes `comp`.
fn enter_component(
    matched: &mut [usize],
    settled: &[bool],
    pointers: &[&JsonPointer],
    k: usize,
    comp: Component<'_>,
) {
    let parent = k.saturating_sub(1);
    for ((m, done), p) in matched.iter_mut().zip(settled).zip(pointers) {
        if *m < parent {
            continue;
        }
        let hit = !*done
            && match comp {
                Component::Key(key) => p.tokens.get(parent).is_some_and(|t| t.as_bytes() == key),
                Component::Index(i) => p.indices.get(parent).is_some_and(|t| *t == Some(i)),
            };
        *m = if hit { k } else { parent };
    }
}

impl Scanner<'_, '_> {
    fn run(&mut self) -> Result<(), Stop> {
        if self.doc.starts_with(b"\xEF\xBB\xBF") {
            self.pos = 3;
        }
        let mut state = State::Value;
        loop {
            state = match state {
                State::Value => self.value()?,
                State::AfterValue => self.after_value()?,
                State::Key => self.key()?,
            };
        }
    }

    fn peek(&self) -> Result<u8, Stop> {
        self.doc.get(self.pos).copied().ok_or(Stop::End)
    }

    fn skip_ws(&mut self) {
        while self.doc.get(self.pos).is_some_and(|&b| is_ws(b)) {
            self.pos += 1;
        }
    }

    /// Whether some unsettled pointer ends exactly at the value starting now (path length `depth`).
    fn has_targets(&self, depth: usize) -> bool {
        self.pointers
            .iter()
            .zip(&self.matched)
            .zip(&self.settled)
            .any(|((p, &m), &done)| !done && m == depth && p.tokens.len() == depth)
    }

    /// Settles every pointer that ends at the value at path length `depth`.
    fn settle(&mut self, depth: usize, value: Option<String>) -> Result<(), Stop> {
        for (((p, &m), done), slot) in self
            .pointers
            .iter()
            .zip(&self.matched)
            .zip(self.settled.iter_mut())
            .zip(self.results.iter_mut())
        {
            if !*done && m == depth && p.tokens.len() == depth {
                *done = true;
                *slot = value.clone();
                self.remaining = self.remaining.saturating_sub(1);
            }
        }
        if self.remaining == 0 {
            Err(Stop::Done)
        } else {
            Ok(())
        }
    }

    /// Whether some unsettled pointer needs the component at depth `k` compared (its first `k - 1`
    /// tokens match and it has a `k`-th token).
    fn needs_component(&self, k: usize) -> bool {
        let parent = k.saturating_sub(1);
        self.pointers
            .iter()
            .zip(&self.matched)
            .zip(&self.settled)
            .any(|((p, &m), &done)| !done && m >= parent && p.tokens.len() >= k)
    }

    fn value(&mut self) -> Result<State, Stop> {
        self.skip_ws();
        let depth = self.stack.len();
        match self.peek()? {
            open @ (b'{' | b'[') => {
                if self.has_targets(depth) {
                    self.settle(depth, None)?;
                }
                if depth >= MAX_DEPTH {
                    return Err(Stop::Malformed);
                }
                self.pos += 1;
                self.skip_ws();
                let close = if open == b'{' { b'}' } else { b']' };
                if self.peek()? == close {
                    self.pos += 1;
                    return Ok(State::AfterValue);
                }
                if open == b'{' {
                    self.stack.push(Frame::Object);
                    Ok(State::Key)
                } else {
                    self.stack.push(Frame::Array(0));
                    enter_component(
                        &mut self.matched,
                        &self.settled,
                        self.pointers,
                        depth + 1,
                        Component::Index(0),
                    );
                    Ok(State::Value)
                }
            }
            b'"' => {
                let span = self.scan_string()?;
                if self.has_targets(depth) {
                    let raw = self.doc.get(span.start..span.end).ok_or(Stop::Malformed)?;
                    let text = if span.escaped {
                        unescape_into(raw, &mut self.scratch)?;
                        String::from_utf8_lossy(&self.scratch).into_owned()
                    } else {
                        String::from_utf8_lossy(raw).into_owned()
                    };
                    self.settle(depth, Some(text))?;
                }
                Ok(State::AfterValue)
            }
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                self.scan_number()?;
                if !ends_scalar(self.peek()?) {
                    return Err(Stop::Malformed);
                }
                if self.has_targets(depth) {
                    let raw = self.doc.get(start..self.pos).ok_or(Stop::Malformed)?;
                    let text = std::str::from_utf8(raw).map_err(|_| Stop::Malformed)?;
                    self.settle(depth, Some(text.to_string()))?;
                }
                Ok(State::AfterValue)
            }
            b't' => self.literal(depth, b"true", true),
            b'f' => self.literal(depth, b"false", true),
            b'n' => self.literal(depth, b"null", false),
            _ => Err(Stop::Malformed),
        }
    }

    fn literal(&mut self, depth: usize, word: &'static [u8], scalar: bool) -> Result<State, Stop> {
        for (i, &want) in word.iter().enumerate() {
            let got = *self.doc.get(self.pos + i).ok_or(Stop::End)?;
            if got != want {
                return Err(Stop::Malformed);
            }
        }
        // Like a closed string, the word is complete even at the very end of the input (nothing can
        // extend it); anything glued to it is reported malformed by the next state, after settling.
        self.pos += word.len();
        if self.has_targets(depth) {
            let text = scalar.then(|| String::from_utf8_lossy(word).into_owned());
            self.settle(depth, text)?;
        }
        Ok(State::AfterValue)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.doc.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Consumes a number per the JSON grammar; `End` if the input ends inside it.
    fn scan_number(&mut self) -> Result<(), Stop> {
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return Err(Stop::Malformed),
        }
        if self.peek()? == b'.' {
            self.pos += 1;
            if self.digits() == 0 {
                self.peek()?;
                return Err(Stop::Malformed);
            }
        }
        if matches!(self.peek()?, b'e' | b'E') {
            self.pos += 1;
            if matches!(self.peek()?, b'+' | b'-') {
                self.pos += 1;
            }
            if self.digits() == 0 {
                self.peek()?;
                return Err(Stop::Malformed);
            }
        }
        Ok(())
    }

    /// Consumes a string token (at its opening quote), validating escapes and rejecting raw control
    /// characters. Does not allocate.
    fn scan_string(&mut self) -> Result<StrSpan, Stop> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = self.doc.get(self.pos..).ok_or(Stop::End)?;
            let offset = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or(Stop::End)?;
            self.pos += offset;
            match self.peek()? {
                b'"' => {
                    let end = self.pos;
                    self.pos += 1;
                    return Ok(StrSpan {
                        start,
                        end,
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    let kind = *self.doc.get(self.pos + 1).ok_or(Stop::End)?;
                    match kind {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 2,
                        b'u' => {
                            for i in 2..6 {
                                let h = *self.doc.get(self.pos + i).ok_or(Stop::End)?;
                                if !h.is_ascii_hexdigit() {
                                    return Err(Stop::Malformed);
                                }
                            }
                            self.pos += 6;
                        }
                        _ => return Err(Stop::Malformed),
                    }
                }
                _ => return Err(Stop::Malformed),
            }
        }
    }

    fn key(&mut self) -> Result<State, Stop> {
        self.skip_ws();
        if self.peek()? != b'"' {
            return Err(Stop::Malformed);
        }
        let span = self.scan_string()?;
        let k = self.stack.len();
        if self.needs_component(k) {
            let raw = self.doc.get(span.start..span.end).ok_or(Stop::Malformed)?;
            let key: &[u8] = if span.escaped {
                unescape_into(raw, &mut self.scratch)?;
                &self.scratch
            } else {
                raw
            };
            enter_component(
                &mut self.matched,
                &self.settled,
                self.pointers,
                k,
                Component::Key(key),
            );
        } else {
            // Nobody compares this key: only drop matches deeper than the parent.
            let parent = k.saturating_sub(1);
            for m in &mut self.matched {
                *m = (*m).min(parent);
            }
        }
        self.skip_ws();
        if self.peek()? != b':' {
            return Err(Stop::Malformed);
        }
        self.pos += 1;
        Ok(State::Value)
    }

    fn after_value(&mut self) -> Result<State, Stop> {
        if self.stack.is_empty() {
            // The root value is complete; whatever follows cannot hold a pointer's value.
            return Err(Stop::End);
        }
        self.skip_ws();
        let b = self.peek()?;
        let depth = self.stack.len();
        let Some(top) = self.stack.last_mut() else {
            return Err(Stop::End);
        };
        match (top, b) {
            (Frame::Object, b',') => {
                self.pos += 1;
                Ok(State::Key)
            }
            (Frame::Array(i), b',') => {
                self.pos += 1;
                *i += 1;
                let index = *i;
                enter_component(
                    &mut self.matched,
                    &self.settled,
                    self.pointers,
                    depth,
                    Component::Index(index),
                );
                Ok(State::Value)
            }
            (Frame::Object, b'}') | (Frame::Array(_), b']') => {
                self.pos += 1;
                self.stack.pop();
                let len = self.stack.len();
                for m in &mut self.matched {
                    *m = (*m).min(len);
                }
                Ok(State::AfterValue)
            }
            _ => Err(Stop::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn ptrs(list: &[&str]) -> Vec<JsonPointer> {
        list.iter()
            .map(|p| JsonPointer::parse(p).unwrap())
            .collect()
    }

    fn run(doc: &[u8], list: &[&str]) -> Vec<Option<String>> {
        let owned = ptrs(list);
        let refs: Vec<&JsonPointer> = owned.iter().collect();
        scan(doc, &refs)
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// (pointer, expected tokens)
    const POINTERS_OK: &[(&str, &[&str])] = &[
        ("/id", &["id"]),
        ("/", &[""]),
        ("//", &["", ""]),
        ("/a/0/b", &["a", "0", "b"]),
        ("/a~1b", &["a/b"]),
        ("/m~0n", &["m~n"]),
        ("/~01", &["~1"]),
        ("/~10", &["/0"]),
        ("/ä/€", &["ä", "€"]),
        ("/-", &["-"]),
        ("/ a ", &[" a "]),
    ];

    /// (pointer, substring of the message, reason it is invalid)
    const POINTERS_BAD: &[(&str, &str, &str)] = &[
        ("", "must point into the document", "whole document"),
        ("id", "must start with '/'", "no leading slash"),
        ("#/id", "URI fragment form", "URI fragment form"),
        ("/a~2", "invalid escape \"~2\"", "unknown escape"),
        ("/a~", "invalid escape \"~\"", "dangling tilde"),
        ("/~/x", "invalid escape", "tilde before slash"),
    ];

    #[test]
    fn pointer_parse_table() {
        for (input, tokens) in POINTERS_OK {
            let p = JsonPointer::parse(input).unwrap();
            assert_eq!(p.as_str(), *input);
            assert_eq!(p.to_string(), *input);
            assert_eq!(p.tokens(), *tokens, "{input:?}");
        }
        for (input, want, why) in POINTERS_BAD {
            let e = JsonPointer::parse(input).unwrap_err();
            assert_eq!(e.pointer, *input, "{why}");
            assert!(e.message.contains(want), "{why}: {:?}", e.message);
            assert_eq!(
                e.to_string(),
                format!("JSON pointer {:?}: {}", input, e.message)
            );
        }
        let deep = "/a".repeat(MAX_DEPTH + 1);
        assert!(JsonPointer::parse(&deep)
            .unwrap_err()
            .message
            .contains("levels"));
        assert!(JsonPointer::parse(&"/a".repeat(MAX_DEPTH)).is_ok());
    }

    #[test]
    fn array_index_tokens() {
        // (token, index, why)
        let table: &[(&str, Option<usize>, &str)] = &[
            ("0", Some(0), "zero"),
            ("7", Some(7), "digit"),
            ("12", Some(12), "two digits"),
            ("01", None, "leading zero"),
            ("00", None, "double zero"),
            ("-", None, "past-the-end marker"),
            ("-1", None, "negative"),
            ("+1", None, "plus sign"),
            ("1a", None, "trailing letter"),
            ("", None, "empty"),
            ("99999999999999999999999999", None, "overflows usize"),
        ];
        for (token, want, why) in table {
            assert_eq!(array_index(token), *want, "{why}");
        }
    }

    /// (document, pointers, expected values, what the case shows)
    type Case = (
        &'static str,
        &'static [&'static str],
        &'static [Option<&'static str>],
        &'static str,
    );
    const CASES: &[Case] = &[
        (
            r#"{"id":"ORD-1001","status":"INITIATED"}"#,
            &["/id", "/status"],
            &[Some("ORD-1001"), Some("INITIATED")],
            "flat object",
        ),
        (
            r#"{"id":"ORD-1001"}"#,
            &["/missing"],
            &[None],
            "missing key",
        ),
        (
            r#"{"a":{"b":{"c":"deep"}},"c":"top"}"#,
            &["/a/b/c", "/c", "/a/c"],
            &[Some("deep"), Some("top"), None],
            "nested objects; same key at other depths does not match",
        ),
        (
            r#"{"a":{"x":1},"b":{"a":{"x":2}}}"#,
            &["/a/x", "/b/a/x"],
            &[Some("1"), Some("2")],
            "same key names in sibling subtrees",
        ),
        (
            r#"{"items":[{"id":"a"},{"id":"b"},{"id":"c"}]}"#,
            &["/items/0/id", "/items/2/id", "/items/3/id"],
            &[Some("a"), Some("c"), None],
            "array indices",
        ),
        (
            r#"[10,[20,21],{"k":[30,31]}]"#,
            &["/0", "/1/1", "/2/k/1", "/1"],
            &[Some("10"), Some("21"), Some("31"), None],
            "root array; nested arrays",
        ),
        (
            r#"{"a":[1,2]}"#,
            &["/a/-", "/a/01", "/a/00"],
            &[None, None, None],
            "'-' and leading zeros never index an array",
        ),
        (
            r#"{"-":"dash","01":"zero-one"}"#,
            &["/-", "/01"],
            &[Some("dash"), Some("zero-one")],
            "'-' and '01' still name object members",
        ),
        (
            r#"{"0":"key zero"}"#,
            &["/0"],
            &[Some("key zero")],
            "index-like token matches an object key",
        ),
        (
            r#"[{"0":"x"}]"#,
            &["/0/0"],
            &[Some("x")],
            "index then key with the same token",
        ),
        (
            r#"{"a/b":1,"m~n":2,"":3}"#,
            &["/a~1b", "/m~0n", "/"],
            &[Some("1"), Some("2"), Some("3")],
            "escaped pointer tokens and the empty key",
        ),
        (
            r#"{"a\/b":"slash","\u0069d":"u-escape","k\"q":"quote"}"#,
            &["/a~1b", "/id", "/k\"q"],
            &[Some("slash"), Some("u-escape"), Some("quote")],
            "escaped keys are unescaped before comparing",
        ),
        (
            r#"{"s":"a\"b\\c\/d\b\f\n\r\t"}"#,
            &["/s"],
            &[Some("a\"b\\c/d\u{8}\u{c}\n\r\t")],
            "simple escapes",
        ),
        (
            r#"{"s":"\u00e9\u20AC\ud83d\ude00x"}"#,
            &["/s"],
            &[Some("é€😀x")],
            "\\u escapes with a surrogate pair",
        ),
        (
            r#"{"s":"\ud83dx","t":"\ude00","u":"\ud83d\u0041"}"#,
            &["/s", "/t", "/u"],
            &[Some("\u{fffd}x"), Some("\u{fffd}"), Some("\u{fffd}A")],
            "lone surrogates become U+FFFD",
        ),
        (
            r#"{"s":"raw é 😀"}"#,
            &["/s"],
            &[Some("raw é 😀")],
            "raw UTF-8",
        ),
        (
            r#"{"n":-12.5e+3,"z":0,"f":1.0E-2,"i":123}"#,
            &["/n", "/z", "/f", "/i"],
            &[Some("-12.5e+3"), Some("0"), Some("1.0E-2"), Some("123")],
            "numbers keep their literal text",
        ),
        (
            r#"{"t":true,"f":false,"n":null}"#,
            &["/t", "/f", "/n"],
            &[Some("true"), Some("false"), None],
            "literals; null is None",
        ),
        (
            r#"{"o":{"x":1},"a":[1]}"#,
            &["/o", "/a", "/o/x"],
            &[None, None, Some("1")],
            "containers are None but are still scanned into",
        ),
        (
            r#"{"o":{},"a":[],"b":"after"}"#,
            &["/o", "/a", "/b", "/o/x"],
            &[None, None, Some("after"), None],
            "empty containers",
        ),
        (
            r#"{"a":"first","a":"second"}"#,
            &["/a"],
            &[Some("first")],
            "duplicate key: the first wins",
        ),
        (
            r#"{"a":null,"a":"second"}"#,
            &["/a"],
            &[None],
            "duplicate key: a null first settles it",
        ),
        (
            r#"{"id":"x"}"#,
            &["/id", "/id"],
            &[Some("x"), Some("x")],
            "the same pointer twice",
        ),
        (
            "\u{feff}{\"id\":\"bom\"}",
            &["/id"],
            &[Some("bom")],
            "leading byte order mark",
        ),
        (
            " \n\t\r {\n \"id\" : \"ws\" \n}",
            &["/id"],
            &[Some("ws")],
            "whitespace everywhere",
        ),
        (
            r#"{"id":"ORD-1","status":"#,
            &["/id", "/status"],
            &[Some("ORD-1"), None],
            "truncated after the key",
        ),
        (
            r#"{"id":"ORD-1","status":"SUBMI"#,
            &["/id", "/status"],
            &[Some("ORD-1"), None],
            "truncated inside a string",
        ),
        (
            r#"{"n":123"#,
            &["/n"],
            &[None],
            "number at the very end may be longer",
        ),
        (
            r#"{"n":123 "#,
            &["/n"],
            &[Some("123")],
            "number ended by whitespace",
        ),
        (
            r#"{"t":true"#,
            &["/t"],
            &[Some("true")],
            "a complete literal at the end",
        ),
        (r#"{"t":tru"#, &["/t"], &[None], "truncated literal"),
        (r#"{"s":"a\u00"#, &["/s"], &[None], "truncated inside \\u"),
        (
            r#"{"s":"\ud83d"#,
            &["/s"],
            &[None],
            "truncated after a high surrogate",
        ),
        (
            r#"{"a":1,"b":tRue,"c":3}"#,
            &["/a", "/b", "/c"],
            &[Some("1"), None, None],
            "malformed literal stops the scan",
        ),
        (
            r#"{"a":1,,"c":3}"#,
            &["/a", "/c"],
            &[Some("1"), None],
            "double comma",
        ),
        (
            r#"{"a":1,}"#,
            &["/a"],
            &[Some("1")],
            "trailing comma after the value",
        ),
        (r#"{"a":01}"#, &["/a"], &[None], "leading zero in a number"),
        (r#"{"a":1.}"#, &["/a"], &[None], "fraction without digits"),
        (r#"{"a":-}"#, &["/a"], &[None], "lone minus"),
        (r#"{"a":1e}"#, &["/a"], &[None], "exponent without digits"),
        (
            r#"{"a":12x,"b":1}"#,
            &["/a", "/b"],
            &[None, None],
            "garbage glued to a number: 12 might be the start of a longer token",
        ),
        (
            r#"{"a":truex,"b":1}"#,
            &["/a", "/b"],
            &[Some("true"), None],
            "garbage glued to a literal: the literal was complete, the scan stops after it",
        ),
        (
            r#"{"a":"x"y,"b":1}"#,
            &["/a", "/b"],
            &[Some("x"), None],
            "garbage after a closed string",
        ),
        (r#"{"a":"x\qy"}"#, &["/a"], &[None], "invalid escape"),
        (r#"{"a":"\u12g4"}"#, &["/a"], &[None], "invalid \\u digits"),
        (
            "{\"a\":\"x\ny\"}",
            &["/a"],
            &[None],
            "raw control character in a string",
        ),
        (r#"{"a" "x"}"#, &["/a"], &[None], "missing colon"),
        (r#"{a:"x"}"#, &["/a"], &[None], "unquoted key"),
        (r#"{"a":'x'}"#, &["/a"], &[None], "single quotes"),
        (
            r#"{"a":[1}"#,
            &["/a/0"],
            &[Some("1")],
            "mismatched bracket after the value",
        ),
        (
            r#"{"a":1}]{"b":2}"#,
            &["/a", "/b"],
            &[Some("1"), None],
            "nothing after the root value counts",
        ),
        (r#""just a string""#, &["/a"], &[None], "scalar root"),
        ("", &["/a"], &[None], "empty document"),
        ("   ", &["/a"], &[None], "whitespace only"),
        (
            r#"{"a":{"b":[{"c":[{"d":"deep"}]}]}}"#,
            &["/a/b/0/c/0/d"],
            &[Some("deep")],
            "mixed nesting",
        ),
        (
            r#"{"a":[{"x":1},{"y":2}]}"#,
            &["/a/0/y", "/a/1/x", "/a/1/y"],
            &[None, None, Some("2")],
            "keys are per element",
        ),
    ];

    #[test]
    fn scan_table() {
        for (doc, pointers, want, why) in CASES {
            let got = run(doc.as_bytes(), pointers);
            let want: Vec<Option<String>> = want.iter().map(|w| w.map(str::to_string)).collect();
            assert_eq!(got, want, "{why}: {doc:?}");
        }
    }

    #[test]
    fn no_pointers() {
        assert!(scan(b"{\"a\":1}", &[]).is_empty());
    }

    #[test]
    fn values_after_huge_skipped_strings() {
        let big = "x".repeat(1 << 20);
        let escaped_big = "\\\"\\u00e9".repeat(50_000);
        let doc = format!(
            r#"{{"blob":"{big}","nested":{{"k":"{escaped_big}","arr":["{big}",{{"id":"inner"}}]}},"id":"ORD-9"}}"#
        );
        let got = run(doc.as_bytes(), &["/id", "/nested/arr/1/id", "/blob"]);
        assert_eq!(got[0].as_deref(), Some("ORD-9"));
        assert_eq!(got[1].as_deref(), Some("inner"));
        assert_eq!(got[2].as_deref(), Some(big.as_str()));
    }

    #[test]
    fn stops_once_everything_is_settled() {
        let doc = format!(r#"{{"id":"ORD-1","rest":"{}"}}"#, "y".repeat(10_000));
        let p = JsonPointer::parse("/id").unwrap();
        let (got, end) = scan_with_end(doc.as_bytes(), &[&p]);
        assert_eq!(got, vec![Some("ORD-1".to_string())]);
        assert!(end < 20, "stopped at {end}");
        // A null also settles a pointer.
        let q = JsonPointer::parse("/a").unwrap();
        let (got, end) = scan_with_end(b"{\"a\":null,\"b\":1}", &[&q]);
        assert_eq!(got, vec![None]);
        assert!(end <= 9, "stopped at {end}");
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}\"v\"{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let pointer = "/0".repeat(MAX_DEPTH);
        assert_eq!(run(ok.as_bytes(), &[&pointer]), vec![Some("v".to_string())]);

        // One level deeper stops the scan; a value before the deep part is still reported.
        let deep = format!(
            "{{\"a\":\"before\",\"d\":{}1{},\"z\":\"after\"}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(
            run(deep.as_bytes(), &["/a", "/z"]),
            vec![Some("before".to_string()), None]
        );
        // Very deep input does not recurse or blow up.
        let huge = "[".repeat(100_000);
        assert_eq!(run(huge.as_bytes(), &["/0"]), vec![None]);
    }

    const SAMPLE: &str = r#"{"id":"ORD-1001","status":"INITIATED","customer":{"email":"a@b.c","name":"Zoë \"Z\" \u00c5berg"},"items":[{"sku":"R-1","qty":2,"price":-12.50e1},{"sku":"R\/2","qty":10,"tags":[true,false,null]}],"n":0,"neg":-0.5,"t":true,"emoji":"\ud83d\udc8d","last":"end"}"#;
    const SAMPLE_POINTERS: &[&str] = &[
        "/id",
        "/status",
        "/customer/email",
        "/customer/name",
        "/items/0/sku",
        "/items/0/qty",
        "/items/0/price",
        "/items/1/sku",
        "/items/1/qty",
        "/items/1/tags/0",
        "/items/1/tags/1",
        "/items/1/tags/2",
        "/n",
        "/neg",
        "/t",
        "/emoji",
        "/last",
        "/missing",
        "/items",
    ];

    #[test]
    fn sample_full_document() {
        let got = run(SAMPLE.as_bytes(), SAMPLE_POINTERS);
        let want: &[Option<&str>] = &[
            Some("ORD-1001"),
            Some("INITIATED"),
            Some("a@b.c"),
            Some("Zoë \"Z\" Åberg"),
            Some("R-1"),
            Some("2"),
            Some("-12.50e1"),
            Some("R/2"),
            Some("10"),
            Some("true"),
            Some("false"),
            None,
            Some("0"),
            Some("-0.5"),
            Some("true"),
            Some("💍"),
            Some("end"),
            None,
            None,
        ];
        let want: Vec<Option<String>> = want.iter().map(|w| w.map(str::to_string)).collect();
        assert_eq!(got, want);
    }

    /// Every prefix gives, per pointer, either nothing or exactly the full document's value, and once a
    /// value is found in a prefix it stays found in every longer prefix.
    fn check_prefixes(doc: &[u8], pointers: &[&str]) {
        let owned = ptrs(pointers);
        let refs: Vec<&JsonPointer> = owned.iter().collect();
        let full = scan(doc, &refs);
        let mut found = vec![false; refs.len()];
        for cut in 0..=doc.len() {
            let got = scan(&doc[..cut], &refs);
            for (i, (g, f)) in got.iter().zip(&full).enumerate() {
                match g {
                    Some(_) => {
                        assert_eq!(
                            g,
                            f,
                            "prefix {cut} of {:?}, pointer {}",
                            String::from_utf8_lossy(doc),
                            pointers[i]
                        );
                        found[i] = true;
                    }
                    None => assert!(
                        !found[i],
                        "value for {} lost at prefix {cut} of {:?}",
                        pointers[i],
                        String::from_utf8_lossy(doc)
                    ),
                }
            }
        }
        assert_eq!(scan(doc, &refs), full);
    }

    #[test]
    fn every_prefix_is_complete_or_none() {
        check_prefixes(SAMPLE.as_bytes(), SAMPLE_POINTERS);
        for (doc, pointers, ..) in CASES {
            check_prefixes(doc.as_bytes(), pointers);
        }
        // Cut inside a multi-byte UTF-8 character and a BOM.
        check_prefixes(
            "\u{feff}{\"é\":\"ü😀\",\"k\":[1,{\"x\":\"€\"}]}".as_bytes(),
            &["/é", "/k/1/x", "/k/0"],
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let pointers = ptrs(&["/a", "/a/0", "/0", "/", "/a/b/c", "/~1", "/0/0/0/0"]);
        let refs: Vec<&JsonPointer> = pointers.iter().collect();
        let alphabet = b"{}[]\":,\\/u0123456789abcdefABCDEF-+.eE tnrulsx\xd8\xdc\xff\xef\xbb\xbf\n";
        for round in 0..4000 {
            let len = rng.below(64);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if round % 2 == 0 {
                        alphabet[rng.below(alphabet.len())]
                    } else {
                        rng.next() as u8
                    }
                })
                .collect();
            let got = scan(&bytes, &refs);
            assert_eq!(got.len(), refs.len());
        }
        // Single-byte mutations of a real document.
        let base = SAMPLE.as_bytes();
        let owned = ptrs(SAMPLE_POINTERS);
        let refs: Vec<&JsonPointer> = owned.iter().collect();
        for _ in 0..2000 {
            let mut doc = base.to_vec();
            let at = rng.below(doc.len());
            doc[at] = alphabet[rng.below(alphabet.len())];
            let cut = rng.below(doc.len() + 1);
            let _ = scan(&doc[..cut], &refs);
        }
    }

    /// Generates a random JSON document, recording for each value its pointer and the expected result.
    struct Gen {
        rng: XorShift,
        text: String,
        expected: Vec<(String, Option<String>)>,
    }

    impl Gen {
        fn random_string(&mut self) -> String {
            const CHARS: &[char] = &[
                'a', 'Z', '0', '/', '~', '"', '\\', '\n', '\u{1}', 'é', '€', '😀', ' ', '-',
            ];
            let len = self.rng.below(6);
            (0..len)
                .map(|_| CHARS[self.rng.below(CHARS.len())])
                .collect()
        }

        fn write_string(&mut self, s: &str) {
            self.text.push('"');
            for c in s.chars() {
                let escape_anyway = self.rng.below(4) == 0;
                match c {
                    '"' => self.text.push_str("\\\""),
                    '\\' => self.text.push_str("\\\\"),
                    '/' if escape_anyway => self.text.push_str("\\/"),
                    '\n' => self.text.push_str("\\n"),
                    c if (c as u32) < 0x20 || escape_anyway => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            if self.rng.below(2) == 0 {
                                self.text.push_str(&format!("\\u{u:04x}"));
                            } else {
                                self.text.push_str(&format!("\\u{u:04X}"));
                            }
                        }
                    }
                    c => self.text.push(c),
                }
            }
            self.text.push('"');
        }

        fn ws(&mut self) {
            const WS: &[&str] = &["", "", " ", "\n  ", "\t"];
            let w = WS[self.rng.below(WS.len())];
            self.text.push_str(w);
        }

        fn value(&mut self, pointer: &str, depth: usize) {
            self.ws();
            let kind = match depth {
                0 | 1 => self.rng.below(4),
                2..=4 => self.rng.below(8),
                _ => 2 + self.rng.below(6),
            };
            match kind {
                0 => {
                    self.expected.push((pointer.to_string(), None));
                    self.text.push('{');
                    let n = self.rng.below(6);
                    let mut keys: Vec<String> = Vec::new();
                    for i in 0..n {
                        let mut key = self.random_string();
                        while keys.contains(&key) {
                            key.push_str(&i.to_string());
                        }
                        keys.push(key.clone());
                        if i > 0 {
                            self.text.push(',');
                        }
                        self.ws();
                        self.write_string(&key);
                        self.ws();
                        self.text.push(':');
                        let escaped = key.replace('~', "~0").replace('/', "~1");
                        self.value(&format!("{pointer}/{escaped}"), depth + 1);
                    }
                    self.ws();
                    self.text.push('}');
                }
                1 => {
                    self.expected.push((pointer.to_string(), None));
                    self.text.push('[');
                    let n = self.rng.below(6);
                    for i in 0..n {
                        if i > 0 {
                            self.text.push(',');
                        }
                        self.value(&format!("{pointer}/{i}"), depth + 1);
                    }
                    self.ws();
                    self.text.push(']');
                }
                2 | 3 => {
                    let s = self.random_string();
                    self.write_string(&s);
                    self.expected.push((pointer.to_string(), Some(s)));
                }
                4 | 5 => {
                    const NUMS: &[&str] = &[
                        "0",
                        "-0",
                        "7",
                        "-12",
                        "3.25",
                        "1e9",
                        "-2.5E-3",
                        "10e+2",
                        "123456789012345678901234567890",
                    ];
                    let n = NUMS[self.rng.below(NUMS.len())];
                    self.text.push_str(n);
                    self.expected
                        .push((pointer.to_string(), Some(n.to_string())));
                }
                6 => {
                    let b = if self.rng.below(2) == 0 {
                        "true"
                    } else {
                        "false"
                    };
                    self.text.push_str(b);
                    self.expected
                        .push((pointer.to_string(), Some(b.to_string())));
                }
                _ => {
                    self.text.push_str("null");
                    self.expected.push((pointer.to_string(), None));
                }
            }
            self.ws();
        }
    }

    #[test]
    fn random_documents_agree_with_generator() {
        let (mut values, mut found, mut max_len) = (0usize, 0usize, 0usize);
        for seed in 1..=300u64 {
            let mut g = Gen {
                rng: XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                text: String::new(),
                expected: Vec::new(),
            };
            // Root is always a container so every recorded pointer is non-empty.
            g.text.push_str("{\"root\":");
            g.value("/root", 0);
            g.text.push_str(",\"second\":");
            g.value("/second", 0);
            g.text.push('}');
            let pointers: Vec<JsonPointer> = g
                .expected
                .iter()
                .map(|(p, _)| JsonPointer::parse(p).unwrap())
                .collect();
            let refs: Vec<&JsonPointer> = pointers.iter().collect();
            let got = scan(g.text.as_bytes(), &refs);
            for ((p, want), got) in g.expected.iter().zip(&got) {
                assert_eq!(got, want, "seed {seed}, pointer {p:?}, doc {}", g.text);
            }
            values += got.len();
            found += got.iter().filter(|v| v.is_some()).count();
            max_len = max_len.max(g.text.len());
            if seed <= 60 {
                let names: Vec<&str> = g.expected.iter().map(|(p, _)| p.as_str()).collect();
                check_prefixes(g.text.as_bytes(), &names);
            }
        }
        // The generator really produces sizeable, varied documents.
        assert!(
            values > 3000 && found > 1500 && max_len > 800,
            "{values} {found} {max_len}"
        );
    }
}
