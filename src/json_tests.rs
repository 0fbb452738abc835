//! The configuration parser: valid documents, every kind of malformed input with where it is reported, and
//! a property loop (a small xorshift generator) that mutates documents and checks the parser never panics.

use super::*;

fn ok(s: &str) -> Value {
    parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn err(s: &[u8]) -> JsonError {
    match parse(s) {
        Ok(v) => panic!("{:?} accepted as {v:?}", String::from_utf8_lossy(s)),
        Err(e) => e,
    }
}

fn num(s: &str) -> Number {
    match ok(s) {
        Value::Number(n) => n,
        v => panic!("{s}: {v:?}"),
    }
}

#[test]
fn scalars_and_containers() {
    assert_eq!(ok("null"), Value::Null);
    assert_eq!(ok(" true "), Value::Bool(true));
    assert_eq!(ok("\t\r\nfalse\n"), Value::Bool(false));
    assert_eq!(ok(r#""a""#), Value::String("a".into()));
    assert_eq!(ok("[]"), Value::Array(vec![]));
    assert_eq!(ok("{}"), Value::Object(vec![]));
    assert_eq!(
        ok(r#"{"b":[1,{"c":null}],"a":"x"}"#),
        Value::Object(vec![
            (
                "b".into(),
                Value::Array(vec![
                    Value::Number(num("1")),
                    Value::Object(vec![("c".into(), Value::Null)])
                ])
            ),
            ("a".into(), Value::String("x".into())),
        ])
    );
}

#[test]
fn numbers_keep_text_float_and_exact_integer() {
    let cases: &[(&str, f64, Option<u64>)] = &[
        ("0", 0.0, Some(0)),
        ("-0", -0.0, Some(0)),
        ("42", 42.0, Some(42)),
        ("-7", -7.0, None),
        (
            "18446744073709551615",
            18446744073709551615.0,
            Some(u64::MAX),
        ),
        ("18446744073709551616", 18446744073709551616.0, None),
        ("1.0", 1.0, None),
        ("1e3", 1000.0, None),
        ("0.25", 0.25, None),
        ("0.1", 0.1, None),
        ("0.001", 0.001, None),
        ("1E-3", 0.001, None),
        ("2.5e+2", 250.0, None),
        ("0.3333333333333333", 0.3333333333333333, None),
        ("1e-400", 0.0, None),
        ("0e999999999999", 0.0, None),
    ];
    for (text, f, int) in cases {
        let n = num(text);
        assert_eq!(n.as_str(), *text);
        assert_eq!(n.as_f64(), *f, "{text}");
        assert_eq!(
            n.as_f64().is_sign_negative(),
            f.is_sign_negative(),
            "{text}"
        );
        assert_eq!(n.as_u64(), *int, "{text}");
    }
    // More than 2^53 in the significant digits: within an ulp of the correctly rounded value.
    for text in [
        "123456789012345678901234",
        "9007199254740993",
        "0.12345678901234567890123",
    ] {
        let (got, want) = (num(text).as_f64(), text.parse::<f64>().unwrap());
        assert!(
            got.to_bits().abs_diff(want.to_bits()) <= 1,
            "{text}: {got} vs {want}"
        );
    }
    // Exponents beyond ±22: a few roundings, far below any precision a configuration cares about.
    for text in [
        "1.7976931348623157e308",
        "1.2345678901234567890123e-30",
        "7e300",
        "5e-320",
    ] {
        let (got, want) = (num(text).as_f64(), text.parse::<f64>().unwrap());
        assert!(
            (got - want).abs() <= want.abs() * 1e-14,
            "{text}: {got} vs {want}"
        );
    }
    assert!(num("12").is_integer() && !num("1.5").is_integer() && !num("1e2").is_integer());
}

#[test]
fn simple_decimals_are_correctly_rounded() {
    // Everything with up to 15 significant digits and a small exponent matches the standard library.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mantissa = x % 1_000_000_000_000_000;
        let exp = (x >> 50) as i64 % 30 - 15;
        let text = format!("{mantissa}e{exp}");
        assert_eq!(num(&text).as_f64(), text.parse::<f64>().unwrap(), "{text}");
        let text = format!("0.{mantissa:015}");
        assert_eq!(num(&text).as_f64(), text.parse::<f64>().unwrap(), "{text}");
    }
}

#[test]
fn string_escapes() {
    let cases: &[(&str, &str)] = &[
        (r#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{c}\n\r\t"),
        (r#""\u0041\u00e9\u20AC""#, "Aé€"),
        (r#""\ud83d\ude00""#, "😀"),
        (r#""\uD834\uDD1E x""#, "𝄞 x"),
        (r#""\u0000""#, "\0"),
        ("\"h\u{e9}llo \u{1F600}\"", "héllo 😀"),
    ];
    for (json, want) in cases {
        assert_eq!(ok(json), Value::String((*want).to_string()), "{json}");
    }
}

#[test]
fn malformed_documents_are_errors_with_a_position() {
    // (input, message fragment, line, column)
    let cases: &[(&[u8], &str, usize, usize)] = &[
        (b"", "end of input", 1, 1),
        (b"   ", "end of input", 1, 4),
        (b"{", "end of input", 1, 2),
        (b"{\"a\"", "end of input", 1, 5),
        (b"{\"a\":", "end of input", 1, 6),
        (b"[1,", "end of input", 1, 4),
        (b"\"abc", "inside a string", 1, 5),
        (b"{\"a\":1,}", "a key", 1, 8),
        (b"[1,]", "a value", 1, 4),
        (b"[1 2]", "',' or ']'", 1, 4),
        (b"{\"a\" 1}", "':'", 1, 6),
        (b"{a:1}", "a key", 1, 2),
        (b"{\"a\":1 \"b\":2}", "',' or '}'", 1, 8),
        (b"{\"a\":1}x", "end of the document", 1, 8),
        (b"{}{}", "end of the document", 1, 3),
        (b"nul", "`null`", 1, 4),
        (b"tru", "`true`", 1, 4),
        (b"True", "a value", 1, 1),
        (b"NaN", "a value", 1, 1),
        (b"Infinity", "a value", 1, 1),
        (b"+1", "a value", 1, 1),
        (b"01", "leading zero", 1, 2),
        (b"-", "a digit", 1, 2),
        (b"-a", "a digit", 1, 2),
        (b"1.", "after the decimal point", 1, 3),
        (b".5", "a value", 1, 1),
        (b"1e", "exponent", 1, 3),
        (b"1e+", "exponent", 1, 4),
        (b"1e999", "too large", 1, 1),
        (b"-1e999", "too large", 1, 1),
        (b"\"\\x\"", "an escape", 1, 3),
        (b"\"\\u12\"", "four hex digits", 1, 6),
        (b"\"\\uZZZZ\"", "four hex digits", 1, 4),
        (b"\"\\ud800\"", "lone UTF-16 high surrogate", 1, 8),
        (b"\"\\ud800x\"", "lone UTF-16 high surrogate", 1, 8),
        (b"\"\\ud800\\u0041\"", "not by a low surrogate", 1, 14),
        (b"\"\\udc00\"", "lone UTF-16 low surrogate", 1, 8),
        (b"\"a\nb\"", "control character 0x0a", 1, 3),
        (b"\"\t\"", "control character 0x09", 1, 2),
        (b"\"\xff\"", "not valid UTF-8", 1, 1),
        (b"\"\xc3\"", "not valid UTF-8", 1, 1),
        (b"\xef\xbb\xbf{}", "byte 0xef", 1, 1),
        (b"{\"a\":1,\n \"a\":2}", "duplicate key \"a\"", 2, 2),
        (b"[1,\n2,\n  x]", "unexpected character 'x'", 3, 3),
        (b"{\"a\":1} // c", "end of the document", 1, 9),
        (b"[1,2,]", "a value", 1, 6),
        (b"\x00", "byte 0x00", 1, 1),
    ];
    for (input, msg, line, column) in cases {
        let e = err(input);
        assert!(
            e.message.contains(msg),
            "{:?}: {e} (wanted {msg:?})",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            (e.line, e.column),
            (*line, *column),
            "{:?}: {e}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(
        err(b"{\n  \"a\": tru }").to_string(),
        "unexpected character ' ', expected `true` at line 2 column 11"
    );
}

#[test]
fn depth_is_limited() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(parse(nested(MAX_DEPTH).as_bytes()).is_ok());
    let e = err(nested(MAX_DEPTH + 1).as_bytes());
    assert!(e.message.contains("deeper than 64"), "{e}");
    let objects = format!(
        "{}1{}",
        r#"{"a":"#.repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    assert!(err(objects.as_bytes()).message.contains("deeper"));
    // Far deeper input fails the same way, without exhausting the stack.
    assert!(parse(nested(100_000).as_bytes()).is_err());
}

#[test]
fn describe_names_the_kind() {
    assert_eq!(ok("null").describe(), "null");
    assert_eq!(ok("true").describe(), "boolean true");
    assert_eq!(ok("-1.5e3").describe(), "number -1.5e3");
    assert_eq!(ok(r#""a\"b""#).describe(), r#"string "a\"b""#);
    assert_eq!(ok("[]").describe(), "an array");
    assert_eq!(ok("{}").describe(), "an object");
    let long = format!("\"{}\"", "é".repeat(100));
    assert!(ok(&long).describe().ends_with("\"..."));
}

/// Mutations of a realistic configuration (bytes dropped, replaced, duplicated, truncated): the parser
/// returns Ok or Err, never panics, and whatever it accepts has a well-formed error-free re-parse of its
/// parts. Run in debug builds, so an arithmetic overflow would panic here too.
#[test]
fn property_mutated_documents_never_panic() {
    let seeds: [&[u8]; 4] = [
        br#"{"service":"shop-api","collector":{"cluster":"otlp","flush_interval_ms":1000},
            "sampling":{"ratio":0.25},"routes":[{"method":["PUT","PATCH"],"path":"/a/{order_id}",
            "status":{"request_body":"/status"},"attributes":{"x":"\u00e9\ud83d\ude00\n"}}]}"#,
        b"[1,-0.5e-7,true,false,null,\"\\\"\",[[],{}],{\"a\":{\"b\":[0]}}]",
        b"\"\\uD834\\uDD1E\"",
        b"123456789012345678901234567890e-10",
    ];
    let alphabet = b"{}[]\",:\\u0123456789abcdefEe.-+ \n\ttrue\xff\xc3";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    let mut accepted = 0;
    for round in 0..30_000 {
        let mut doc = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + rnd(4) {
            if doc.is_empty() {
                break;
            }
            let at = rnd(doc.len());
            match rnd(5) {
                0 => {
                    doc.remove(at);
                }
                1 => doc[at] = alphabet[rnd(alphabet.len())],
                2 => doc.insert(at, alphabet[rnd(alphabet.len())]),
                3 => doc.truncate(at),
                _ => {
                    let end = (at + rnd(8)).min(doc.len());
                    let piece = doc[at..end].to_vec();
                    doc.splice(at..at, piece);
                }
            }
        }
        if let Ok(v) = parse(&doc) {
            accepted += 1;
            walk(&v, 0);
        } else {
            let e = parse(&doc).unwrap_err();
            assert!(e.line >= 1 && e.column >= 1);
            assert!(e.column <= doc.len() + 1, "{e}");
        }
    }
    assert!(
        accepted > 100,
        "the mutations should leave some documents valid"
    );
}

fn walk(v: &Value, depth: usize) {
    assert!(depth <= MAX_DEPTH);
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, depth + 1)),
        Value::Object(members) => {
            for (i, (k, m)) in members.iter().enumerate() {
                assert!(members[..i].iter().all(|(p, _)| p != k), "duplicate {k}");
                walk(m, depth + 1);
            }
        }
        Value::Number(n) => assert!(n.as_f64().is_finite()),
        _ => {}
    }
}
