//! A small, strict JSON parser (RFC 8259) for the plugin configuration: bytes in, a [`Value`] tree out.
//!
//! The configuration is parsed once, at load, so the parser is built for size and for clear errors rather
//! than speed: a recursive descent over the bytes, no generic code, no maps. [`json::read`] then takes
//! typed fields out of the tree by name.
//!
//! What it accepts is exactly RFC 8259, and nothing more:
//! - one value, optionally surrounded by whitespace (space, tab, LF, CR); no byte order mark, no comments,
//!   no trailing commas, no `NaN` or `Infinity`, no leading zeros (`01`), no leading `+`;
//! - strings are UTF-8 with the escapes `\" \\ \/ \b \f \n \r \t \uXXXX`; a `\uXXXX` pair encoding a
//!   UTF-16 surrogate pair is combined, a lone surrogate is an error, and so is a raw control character;
//! - objects keep their members in document order; a key that appears twice is an error (the two places
//!   could only disagree, and which one wins would be a guess);
//! - nesting deeper than [`MAX_DEPTH`] arrays and objects is an error (the parser recurses).
//!
//! Numbers keep their text as written, the `f64` nearest to it (see [`Number::as_f64`]), and the exact
//! integer when the text is one (no fraction, no exponent). Every error carries the line and column (1-based,
//! the column counted in bytes) where the parser stopped.
//!
//! [`json::read`]: crate::json::read

pub mod read;

use std::fmt;

/// The deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    /// Members in document order; keys are unique.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// What the value is, for error messages: `null`, `boolean true`, `number 1.5`, `string "x"`, `an
    /// array`, `an object`.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Number(n) => format!("number {}", n.text),
            Value::String(s) => {
                // Long strings are cut (at a character boundary) so a message stays one readable line.
                let cut: String = s.chars().take(40).collect();
                if cut.len() < s.len() {
                    format!("string {cut:?}...")
                } else {
                    format!("string {s:?}")
                }
            }
            Value::Array(_) => "an array".to_string(),
            Value::Object(_) => "an object".to_string(),
        }
    }
}

/// A JSON number.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    /// The text as written in the document.
    text: String,
    value: f64,
    /// `Some` when the text is an integer (no fraction, no exponent) whose magnitude fits in a `u64`.
    magnitude: Option<u64>,
    negative: bool,
}

impl Number {
    /// The text as written in the document (`-1.5e3`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The number as an `f64`. Correctly rounded when the significant digits fit in 2^53 and the decimal
    /// exponent is within ±22 (every number a configuration plausibly holds: `0.25`, `1e-3`); with more
    /// digits, within an ulp (the first 19 significant digits count); with a larger exponent, within a
    /// relative 1e-14 (the value is scaled in steps of 10^22).
    pub fn as_f64(&self) -> f64 {
        self.value
    }

    /// The exact value when the text is a non-negative integer (`0`, `42`; `-0` too, as 0), else `None`.
    pub fn as_u64(&self) -> Option<u64> {
        match self.magnitude {
            Some(m) if !self.negative || m == 0 => Some(m),
            _ => None,
        }
    }

    /// Whether the text is an integer (no fraction, no exponent), of any size or sign.
    pub fn is_integer(&self) -> bool {
        !self.text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
    }
}

/// Why a document is not valid JSON, and where the parser stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub message: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in bytes from the start of the line.
    pub column: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for JsonError {}

/// Parse a whole document.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut p = Parser { bytes, pos: 0 };
    let result = p.document();
    result.map_err(|message| {
        // The position is turned into a line and a column only on error: parsing keeps a single index.
        let before = bytes.get(..p.pos).unwrap_or(bytes);
        let line = 1 + before.iter().filter(|b| **b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        JsonError {
            message,
            line,
            column: 1 + p.pos.saturating_sub(line_start),
        }
    })
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type Res<T> = Result<T, String>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        if b.is_some() {
            self.pos += 1;
        }
        b
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// An error about the byte at the current position (or the end of the input).
    fn unexpected(&self, expected: &str) -> String {
        match self.peek() {
            None => format!("unexpected end of input, expected {expected}"),
            Some(b) if b.is_ascii_graphic() || b == b' ' => {
                format!("unexpected character '{}', expected {expected}", b as char)
            }
            Some(b) => format!("unexpected byte 0x{b:02x}, expected {expected}"),
        }
    }

    fn document(&mut self) -> Res<Value> {
        self.skip_ws();
        let v = self.value(0)?;
        self.skip_ws();
        if self.peek().is_some() {
            return Err(self.unexpected("the end of the document"));
        }
        Ok(v)
    }

    fn value(&mut self, depth: usize) -> Res<Value> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            _ => Err(self.unexpected("a value")),
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Res<Value> {
        for want in word.bytes() {
            if self.peek() != Some(want) {
                return Err(self.unexpected(&format!("`{word}`")));
            }
            self.pos += 1;
        }
        Ok(v)
    }

    fn enter(&self, depth: usize) -> Res<()> {
        if depth > MAX_DEPTH {
            return Err(format!("arrays and objects nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Res<Value> {
        self.enter(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Res<Value> {
        self.enter(depth)?;
        self.pos += 1; // '{'
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a key (a string)"));
            }
            let key_pos = self.pos;
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                self.pos = key_pos;
                return Err(format!("duplicate key {key:?}"));
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.unexpected("':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            members.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
    }

    fn string(&mut self) -> Res<String> {
        let start = self.pos;
        self.pos += 1; // '"'
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.next() else {
                return Err("unexpected end of input inside a string".to_string());
            };
            match b {
                b'"' => break,
                b'\\' => self.escape(&mut out)?,
                0x00..=0x1f => {
                    self.pos -= 1;
                    return Err(format!(
                        "control character 0x{b:02x} inside a string (write it as an escape)"
                    ));
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| {
            self.pos = start;
            "a string that is not valid UTF-8".to_string()
        })
    }

    /// After a backslash: one escape, appended to `out` as UTF-8.
    fn escape(&mut self, out: &mut Vec<u8>) -> Res<()> {
        let simple = match self.next() {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let c = self.unicode_escape()?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            None => return Err("unexpected end of input inside a string".to_string()),
            Some(_) => {
                self.pos -= 1;
                return Err(self.unexpected("an escape (one of \" \\ / b f n r t u)"));
            }
        };
        out.push(simple);
        Ok(())
    }

    /// After `\u`: four hex digits, and for a high surrogate the `\uXXXX` of its low surrogate.
    fn unicode_escape(&mut self) -> Res<char> {
        let hi = self.hex4()?;
        let code = match hi {
            0xd800..=0xdbff => {
                if self.peek() != Some(b'\\') || self.bytes.get(self.pos + 1) != Some(&b'u') {
                    return Err(format!(
                        "\\u{hi:04x} is a lone UTF-16 high surrogate (a low surrogate \\uDC00-\\uDFFF must follow)"
                    ));
                }
                self.pos += 2;
                let lo = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&lo) {
                    return Err(format!(
                        "\\u{hi:04x} is followed by \\u{lo:04x}, not by a low surrogate \\uDC00-\\uDFFF"
                    ));
                }
                0x10000 + ((u32::from(hi) - 0xd800) << 10) + (u32::from(lo) - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(format!("\\u{hi:04x} is a lone UTF-16 low surrogate")),
            _ => u32::from(hi),
        };
        char::from_u32(code).ok_or_else(|| format!("\\u escape of U+{code:X} is not a character"))
    }

    fn hex4(&mut self) -> Res<u16> {
        let mut v: u16 = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.unexpected("four hex digits after \\u")),
            };
            self.pos += 1;
            v = (v << 4) | u16::from(d);
        }
        Ok(v)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Res<Number> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err("a number must not have a leading zero".to_string());
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.unexpected("a digit")),
        }
        let int_end = self.pos;
        let mut frac = None;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let s = self.pos;
            if self.digits() == 0 {
                return Err(self.unexpected("a digit after the decimal point"));
            }
            frac = Some((s, self.pos));
        }
        let mut exp: i64 = 0;
        let mut has_exp = false;
        if let Some(b'e' | b'E') = self.peek() {
            has_exp = true;
            self.pos += 1;
            let exp_negative = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let s = self.pos;
            if self.digits() == 0 {
                return Err(self.unexpected("a digit in the exponent"));
            }
            for b in self.bytes.get(s..self.pos).unwrap_or_default() {
                // Saturates far beyond any exponent that changes the result (f64 spans 1e-324..1e308).
                exp = (exp * 10 + i64::from(b - b'0')).min(1_000_000);
            }
            if exp_negative {
                exp = -exp;
            }
        }
        let int_digits = self.bytes.get(int_start..int_end).unwrap_or_default();
        let frac_digits = frac
            .and_then(|(s, e)| self.bytes.get(s..e))
            .unwrap_or_default();
        let magnitude = if frac.is_none() && !has_exp {
            int_digits.iter().try_fold(0u64, |acc, b| {
                acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            })
        } else {
            None
        };
        let value = decimal_to_f64(int_digits, frac_digits, exp);
        if value.is_infinite() {
            self.pos = start;
            return Err("a number too large for a 64-bit float".to_string());
        }
        let text = String::from_utf8_lossy(self.bytes.get(start..self.pos).unwrap_or_default())
            .into_owned();
        Ok(Number {
            text,
            value: if negative { -value } else { value },
            magnitude,
            negative,
        })
    }
}

/// The most significant decimal digits kept: 19 always fit in a `u64`.
const MAX_SIG_DIGITS: usize = 19;

/// `0.int_digits frac_digits × 10^exp`, unsigned. Uses the first 19 significant digits (a later digit only
/// changes the result beyond an f64's precision, except in rare halfway cases).
fn decimal_to_f64(int_digits: &[u8], frac_digits: &[u8], exp: i64) -> f64 {
    let mut mantissa: u64 = 0;
    let mut kept = 0usize;
    // The power of ten of the last kept digit, relative to the units.
    let mut scale: i64 = exp;
    let mut seen_nonzero = false;
    for (i, b) in int_digits.iter().chain(frac_digits.iter()).enumerate() {
        let in_fraction = i >= int_digits.len();
        let d = u64::from(b - b'0');
        seen_nonzero |= d != 0;
        if kept < MAX_SIG_DIGITS {
            if seen_nonzero {
                mantissa = mantissa * 10 + d;
                kept += 1;
            }
            if in_fraction {
                scale -= 1;
            }
        } else if !in_fraction {
            // A dropped digit of the integer part still multiplies by ten.
            scale += 1;
        }
    }
    scale_by_pow10(mantissa, scale)
}

/// Powers of ten that are exact in an f64: 10^0 ..= 10^22.
fn exact_pow10(n: u32) -> f64 {
    let mut p = 1.0f64;
    for _ in 0..n.min(22) {
        p *= 10.0;
    }
    p
}

/// `m × 10^e`: one correctly rounded multiplication or division when both operands are exact (m ≤ 2^53,
/// |e| ≤ 22), else repeated steps of 10^22.
fn scale_by_pow10(m: u64, e: i64) -> f64 {
    if m == 0 {
        return 0.0;
    }
    let mut f = m as f64;
    let mut e = e;
    while e > 22 {
        f *= exact_pow10(22);
        e -= 22;
        if f.is_infinite() {
            return f;
        }
    }
    while e < -22 {
        f /= exact_pow10(22);
        e += 22;
        if f == 0.0 {
            return f;
        }
    }
    let p = exact_pow10(e.unsigned_abs() as u32);
    if e >= 0 {
        f * p
    } else {
        f / p
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
