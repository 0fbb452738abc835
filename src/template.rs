//! Path templates (`/api/orders/{order_id}/status`), compiled once at config load and matched per request,
//! plus the small URL helpers the rules need (query splitting, form decoding, percent-decoding).
//!
//! Template grammar: the template starts with `/` and is split on `/` into segments. Each segment is one of
//! - a literal, compared exactly (case-sensitive) with the raw (still percent-encoded) request segment;
//! - `{name}` with `name` = `[A-Za-z_][A-Za-z0-9_]*`: captures exactly one non-empty segment;
//! - `*`: exactly one non-empty segment, not captured;
//! - `**`: the rest of the path, zero or more segments; only allowed as the last segment.
//!
//! Variables must be whole segments (`/v{n}` is an error), names are unique, at most [`MAX_VARIABLES`]
//! per template, and empty segments are errors (`/a//b`, `/a/`), except for the root template `/`.
//! Literals may not contain `{`, `}`, `*`, `?`, `#`, spaces or control characters (write literals as they
//! appear on the wire, percent-encoded).
//!
//! Matching: the request path must start with `/`; anything from the first `?` or `#` on is ignored; one
//! trailing `/` is ignored (`/api/orders/` matches `/api/orders`). Captured values are the raw segments;
//! callers percent-decode them ([`percent_decode`]) if they need to.

use std::borrow::Cow;
use std::fmt;

/// The most variables one template may have (keeps [`Captures`] a small fixed array).
pub const MAX_VARIABLES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// Index into `variables`.
    Variable(usize),
    /// `*`
    Any,
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    variables: Vec<String>,
    /// The template ends in `**`.
    rest: bool,
}

/// A template that failed to compile; `template` is the input as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub template: String,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "path template {:?}: {}", self.template, self.message)
    }
}

impl std::error::Error for TemplateError {}

/// Indices (in `path.split('/')`, the leading empty segment being 0) of a template's `{variable}`
/// segments; also used on routes as SDKs report them (`/api/orders/{id}/submit`).
pub fn var_segments(template: &str) -> Vec<usize> {
    template
        .split('/')
        .enumerate()
        .filter(|(_, s)| s.starts_with('{'))
        .map(|(i, _)| i)
        .collect()
}

/// The raw segments captured by a match, by variable index. No allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captures<'p> {
    values: [&'p str; MAX_VARIABLES],
    len: usize,
}

impl<'p> Captures<'p> {
    /// The raw (not percent-decoded) segment captured for variable `var_index`
    /// (see [`PathTemplate::variable_index`]).
    pub fn get(&self, var_index: usize) -> Option<&'p str> {
        if var_index < self.len {
            self.values.get(var_index).copied()
        } else {
            None
        }
    }

    /// Number of captured variables (= the template's variable count).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the template has no variables.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl PathTemplate {
    /// Compiles `template` (grammar in the module docs).
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let err = |message: String| TemplateError {
            template: template.to_string(),
            message,
        };
        let Some(body) = template.strip_prefix('/') else {
            return Err(err(if template.is_empty() {
                "is empty; it must start with '/'".to_string()
            } else {
                "must start with '/'".to_string()
            }));
        };
        let mut out = PathTemplate {
            source: template.to_string(),
            segments: Vec::new(),
            variables: Vec::new(),
            rest: false,
        };
        if body.is_empty() {
            return Ok(out);
        }
        let count = body.split('/').count();
        for (i, seg) in body.split('/').enumerate() {
            let number = i + 1;
            let last = number == count;
            if out.rest {
                return Err(err("\"**\" must be the last segment".to_string()));
            }
            if seg.is_empty() {
                return Err(err(if last {
                    "must not end with '/' (a trailing '/' on the request path is ignored anyway)"
                        .to_string()
                } else {
                    format!("segment {number} is empty (\"//\")")
                }));
            }
            if let Some(bad) = seg.chars().find(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(format!(
                    "segment {seg:?} contains {bad:?}; write it percent-encoded, as it appears on the wire"
                )));
            }
            if seg.contains(['?', '#']) {
                return Err(err(format!(
                    "segment {seg:?} contains '?' or '#'; a template matches the path only (use a \
                     {{\"query\": ...}} source for query parameters)"
                )));
            }
            match seg {
                "**" => out.rest = true,
                "*" => out.segments.push(Segment::Any),
                _ if seg.contains('*') => {
                    return Err(err(format!(
                        "segment {seg:?}: '*' and '**' must be a whole segment"
                    )))
                }
                _ => {
                    if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        if inner.contains(['{', '}']) {
                            return Err(err(format!(
                                "segment {seg:?}: one variable per segment, like \"/{{name}}\""
                            )));
                        }
                        if inner.is_empty() {
                            return Err(err(format!("segment {seg:?}: empty variable name")));
                        }
                        if !is_valid_name(inner) {
                            return Err(err(format!(
                                "variable name {inner:?} is invalid: use ASCII letters, digits and '_', \
                                 not starting with a digit"
                            )));
                        }
                        if out.variables.iter().any(|v| v == inner) {
                            return Err(err(format!("variable {inner:?} appears twice")));
                        }
                        if out.variables.len() >= MAX_VARIABLES {
                            return Err(err(format!("more than {MAX_VARIABLES} variables")));
                        }
                        out.segments.push(Segment::Variable(out.variables.len()));
                        out.variables.push(inner.to_string());
                    } else if seg.contains(['{', '}']) {
                        let open = seg.matches('{').count();
                        let close = seg.matches('}').count();
                        return Err(err(if open != close {
                            format!("segment {seg:?}: unbalanced '{{' / '}}'")
                        } else {
                            format!(
                                "segment {seg:?}: a variable must be a whole segment, like \"/{{name}}\" \
                                 (no prefix or suffix)"
                            )
                        }));
                    } else {
                        out.segments.push(Segment::Literal(seg.to_string()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The template as written.
    /// Indices (in `path.split('/')`, the leading empty segment being 0) of the `{variable}` segments.
    pub fn var_segments(&self) -> Vec<usize> {
        var_segments(self.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Variable names in order of appearance; a name's position is its variable index.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }

    /// The index of variable `name`, if the template has it.
    pub fn variable_index(&self, name: &str) -> Option<usize> {
        self.variables.iter().position(|v| v == name)
    }

    /// Matches the request path (query and fragment ignored; one trailing `/` ignored).
    pub fn matches<'p>(&self, path: &'p str) -> Option<Captures<'p>> {
        let (path, _) = split_path_query(path);
        let body = path.strip_prefix('/')?;
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut parts = (!body.is_empty())
            .then(|| body.split('/'))
            .into_iter()
            .flatten();
        let mut caps = Captures {
            values: [""; MAX_VARIABLES],
            len: self.variables.len(),
        };
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(lit) => {
                    if lit != part {
                        return None;
                    }
                }
                Segment::Any => {
                    if part.is_empty() {
                        return None;
                    }
                }
                Segment::Variable(i) => {
                    if part.is_empty() {
                        return None;
                    }
                    *caps.values.get_mut(*i)? = part;
                }
            }
        }
        if self.rest || parts.next().is_none() {
            Some(caps)
        } else {
            None
        }
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Splits a request path into the path and the query (without `?`). A fragment (`#...`) is dropped; a `?`
/// inside the fragment does not start a query. `"/a?"` gives `("/a", Some(""))`.
pub fn split_path_query(path: &str) -> (&str, Option<&str>) {
    let (before_fragment, _) = path.split_once('#').unwrap_or((path, ""));
    match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    }
}

/// The first value of `name` in an `application/x-www-form-urlencoded` query (without the leading `?`):
/// pairs split on `&`, name and value split on the first `=` (a pair without `=` has the empty value), both
/// percent-decoded with `+` as space; invalid escapes are kept literally, invalid UTF-8 is replaced (lossy).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key_matches = if k.contains(['%', '+']) {
            decode_to_string(k, true) == name
        } else {
            k == name
        };
        if key_matches {
            return Some(decode_to_string(v, true));
        }
    }
    None
}

/// Percent-decodes `s` (`%XX`, either case of hex; `+` is left alone). Invalid escapes are kept literally;
/// invalid UTF-8 in the result is replaced with U+FFFD. Borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(decode_to_string(s, false))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_to_string(s: &str, plus_as_space: bool) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let [b, tail @ ..] = rest {
        match (*b, tail) {
            (b'%', [hi, lo, after @ ..]) => match (hex_value(*hi), hex_value(*lo)) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    rest = after;
                }
                _ => {
                    out.push(b'%');
                    rest = tail;
                }
            },
            (b'+', _) if plus_as_space => {
                out.push(b' ');
                rest = tail;
            }
            (other, _) => {
                out.push(other);
                rest = tail;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// (template, request path, expected captures or None for no match)
    const MATCHES: &[(&str, &str, Option<&[&str]>)] = &[
        ("/", "/", Some(&[])),
        ("/", "", None),
        ("/", "/?x=1", Some(&[])),
        ("/", "/a", None),
        ("/", "//", Some(&[])), // one trailing '/' ignored
        ("/api/orders", "/api/orders", Some(&[])),
        ("/api/orders", "/api/orders/", Some(&[])),
        ("/api/orders", "/api/orders//", None),
        ("/api/orders", "/api/orders?status=NEW&page=2", Some(&[])),
        ("/api/orders", "/api/orders#frag", Some(&[])),
        ("/api/orders", "/api/Orders", None),
        ("/api/orders", "/api/orders/1", None),
        ("/api/orders", "/api", None),
        ("/api/orders", "api/orders", None),
        ("/api/orders", "/api/ordersx", None),
        (
            "/api/orders/{order_id}/status",
            "/api/orders/ORD-1001/status",
            Some(&["ORD-1001"]),
        ),
        (
            "/api/orders/{order_id}/status",
            "/api/orders/ORD-1001/status/",
            Some(&["ORD-1001"]),
        ),
        ("/api/orders/{order_id}/status", "/api/orders//status", None),
        (
            "/api/orders/{order_id}/status",
            "/api/orders/ORD%2F1/status?x",
            Some(&["ORD%2F1"]),
        ),
        ("/api/orders/{order_id}/status", "/api/orders/1", None),
        ("/api/orders/{order_id}", "/api/orders/", None),
        ("/api/orders/{order_id}", "/api/orders", None),
        ("/api/orders/{order_id}", "/api/orders/1/x", None),
        ("/{a}/{b}", "/x/y", Some(&["x", "y"])),
        ("/{a}/x/{b}", "/1/x/2", Some(&["1", "2"])),
        ("/{a}/x/{b}", "/1/y/2", None),
        ("/models/*/model.stl", "/models/42/model.stl", Some(&[])),
        ("/models/*/model.stl", "/models//model.stl", None),
        ("/models/{order_id}/**", "/models/42", Some(&["42"])),
        ("/models/{order_id}/**", "/models/42/", Some(&["42"])),
        (
            "/models/{order_id}/**",
            "/models/42/a/b/c.stl",
            Some(&["42"]),
        ),
        ("/models/{order_id}/**", "/models", None),
        ("/static/**", "/static", Some(&[])),
        ("/static/**", "/static/a//b", Some(&[])),
        ("/static/**", "/staticx", None),
        ("/**", "/", Some(&[])),
        ("/**", "/anything/at/all", Some(&[])),
        ("/**", "*", None),
        ("/a%20b/{x}", "/a%20b/1", Some(&["1"])),
        ("/a%20b/{x}", "/a b/1", None),
        ("/ü/{x}", "/ü/é", Some(&["é"])),
    ];

    #[test]
    fn match_table() {
        for (template, path, want) in MATCHES {
            let t = PathTemplate::parse(template)
                .unwrap_or_else(|e| panic!("{template:?} should compile: {e}"));
            let got = t.matches(path);
            match (want, got) {
                (None, None) => {}
                (Some(want), Some(caps)) => {
                    assert_eq!(caps.len(), want.len(), "{template:?} {path:?}");
                    for (i, w) in want.iter().enumerate() {
                        assert_eq!(caps.get(i), Some(*w), "{template:?} {path:?} var {i}");
                    }
                    assert_eq!(caps.get(want.len()), None);
                }
                (want, got) => panic!("{template:?} vs {path:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    /// (template, substring of the error message, reason the template is invalid)
    const INVALID: &[(&str, &str, &str)] = &[
        ("", "must start with '/'", "empty template"),
        ("api/orders", "must start with '/'", "relative template"),
        ("/api//orders", "segment 2 is empty", "empty middle segment"),
        ("//", "segment 1 is empty", "only a double slash"),
        ("/api/", "must not end with '/'", "trailing slash"),
        (
            "/a{b}",
            "must be a whole segment",
            "prefix before a variable",
        ),
        (
            "/{b}c",
            "must be a whole segment",
            "suffix after a variable",
        ),
        (
            "/{a}{b}",
            "one variable per segment",
            "two variables in one segment",
        ),
        ("/{}", "empty variable name", "empty braces"),
        ("/{1a}", "is invalid", "name starts with a digit"),
        ("/{a-b}", "is invalid", "dash in a name"),
        ("/{ä}", "is invalid", "non-ASCII name"),
        ("/{a", "unbalanced", "unclosed brace"),
        ("/a}", "unbalanced", "unopened brace"),
        ("/{a}/{a}", "appears twice", "duplicate variable"),
        ("/**/x", "must be the last segment", "'**' not last"),
        ("/**/**", "must be the last segment", "two '**'"),
        ("/a*", "whole segment", "partial '*'"),
        ("/***", "whole segment", "three stars"),
        ("/a?b=1", "'?' or '#'", "query in the template"),
        ("/a#b", "'?' or '#'", "fragment in the template"),
        ("/a b", "percent-encoded", "space in a literal"),
        ("/a\tb", "percent-encoded", "control character"),
        (
            "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}",
            "more than 8 variables",
            "too many variables",
        ),
    ];

    #[test]
    fn parse_errors() {
        for (template, want, why) in INVALID {
            match PathTemplate::parse(template) {
                Ok(t) => panic!("{why}: {template:?} compiled to {t:?}"),
                Err(e) => {
                    assert_eq!(e.template, *template, "{why}");
                    assert!(
                        e.message.contains(want),
                        "{why}: {template:?}: message {:?} lacks {want:?}",
                        e.message
                    );
                    assert_eq!(
                        e.to_string(),
                        format!("path template {:?}: {}", template, e.message)
                    );
                }
            }
        }
    }

    #[test]
    fn accessors() {
        let t = PathTemplate::parse("/api/{tenant}/orders/{order_id}/**").unwrap();
        assert_eq!(t.as_str(), "/api/{tenant}/orders/{order_id}/**");
        assert_eq!(t.to_string(), t.as_str());
        assert_eq!(
            t.variables(),
            ["tenant".to_string(), "order_id".to_string()]
        );
        assert_eq!(t.variable_index("order_id"), Some(1));
        assert_eq!(t.variable_index("tenant"), Some(0));
        assert_eq!(t.variable_index("missing"), None);
        let caps = t.matches("/api/acme/orders/ORD-1/x/y").unwrap();
        assert_eq!(
            caps.get(t.variable_index("order_id").unwrap()),
            Some("ORD-1")
        );
        assert!(!caps.is_empty());

        let max = PathTemplate::parse("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}").unwrap();
        let caps = max.matches("/1/2/3/4/5/6/7/8").unwrap();
        assert_eq!(caps.get(7), Some("8"));
        assert_eq!(caps.get(8), None);
        assert!(PathTemplate::parse("/").unwrap().variables().is_empty());
    }

    /// (path, expected path part, expected query)
    const SPLITS: &[(&str, &str, Option<&str>)] = &[
        ("/a", "/a", None),
        ("/a?b=1", "/a", Some("b=1")),
        ("/a?", "/a", Some("")),
        ("/a?b=1?c=2", "/a", Some("b=1?c=2")),
        ("/a?b=1#frag", "/a", Some("b=1")),
        ("/a#frag?x=1", "/a", None),
        ("/a#", "/a", None),
        ("", "", None),
        ("?x", "", Some("x")),
    ];

    #[test]
    fn split_table() {
        for (input, path, query) in SPLITS {
            assert_eq!(split_path_query(input), (*path, *query), "{input:?}");
        }
    }

    /// (query, name, expected value)
    const QUERIES: &[(&str, &str, Option<&str>)] = &[
        ("status=NEW&page=2", "status", Some("NEW")),
        ("status=NEW&page=2", "page", Some("2")),
        ("status=NEW&page=2", "pag", None),
        ("status=NEW&status=OLD", "status", Some("NEW")),
        ("a=1&&b=2", "b", Some("2")),
        ("flag&x=1", "flag", Some("")),
        ("flag=&x=1", "flag", Some("")),
        ("q=a+b%20c", "q", Some("a b c")),
        ("q=100%", "q", Some("100%")),
        ("q=%zz%4", "q", Some("%zz%4")),
        ("q=%E2%82%AC", "q", Some("€")),
        ("q=%ff", "q", Some("\u{fffd}")),
        ("q=a=b", "q", Some("a=b")),
        ("order%5Fid=7", "order_id", Some("7")),
        ("my+key=v", "my key", Some("v")),
        ("", "x", None),
        ("=v", "", Some("v")),
        ("x=1;y=2", "y", None),
    ];

    #[test]
    fn query_table() {
        for (query, name, want) in QUERIES {
            assert_eq!(
                query_param(query, name).as_deref(),
                *want,
                "{query:?} {name:?}"
            );
        }
    }

    /// (input, expected output, borrowed?)
    const DECODES: &[(&str, &str, bool)] = &[
        ("plain", "plain", true),
        ("a+b", "a+b", true),
        ("ORD%2D1", "ORD-1", false),
        ("%2f%2F", "//", false),
        ("%", "%", false),
        ("%4", "%4", false),
        ("%g0x", "%g0x", false),
        ("%%41", "%A", false),
        ("%C3%A9", "é", false),
        ("%C3", "\u{fffd}", false),
        ("é%20", "é ", false),
    ];

    #[test]
    fn percent_decode_table() {
        for (input, want, borrowed) in DECODES {
            let got = percent_decode(input);
            assert_eq!(got, *want, "{input:?}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), *borrowed, "{input:?}");
        }
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        let alphabet: &[char] = &[
            '/', '{', '}', '*', 'a', '_', '1', '?', '#', '%', '+', '=', '&', 'é',
        ];
        let mut s: u64 = 0xdead_beef_cafe_f00d;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let fixed = PathTemplate::parse("/a/{x}/*/**").unwrap();
        for _ in 0..3000 {
            let len = (next() % 12) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(t) = PathTemplate::parse(&text) {
                let _ = t.matches(&text);
            }
            let _ = fixed.matches(&text);
            let _ = query_param(&text, "a");
            let _ = percent_decode(&text);
            let _ = split_path_query(&text);
        }
    }
}
