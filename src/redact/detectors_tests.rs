//! Vectors for every detector: positives (the exact substring that must match) and negatives, each with the
//! reason it is there.

use super::*;

fn all() -> DetectorSet {
    Detector::ALL
        .iter()
        .fold(DetectorSet::default(), |s, d| s.with(*d))
}

/// Every match in `s` with every detector on, as (kind, matched text).
fn hits(s: &str) -> Vec<(Detector, String)> {
    hits_with(s, all())
}

fn hits_with(s: &str, on: DetectorSet) -> Vec<(Detector, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut cut = false;
    while let Some(h) = find(b, pos, cut, on) {
        assert!(
            h.start >= pos && h.end > h.start && h.end <= b.len(),
            "{s:?}: {h:?}"
        );
        assert!(
            s.is_char_boundary(h.start) && s.is_char_boundary(h.end),
            "{s:?}: {h:?}"
        );
        out.push((h.kind, s[h.start..h.end].to_string()));
        pos = h.end;
        cut = true;
    }
    out
}

/// Positive vectors: (text, detector, the substring that must be matched, reason).
fn check_positives(cases: &[(&str, Detector, &str, &str)]) {
    for (text, kind, want, why) in cases {
        let got = hits(text);
        assert!(
            got.iter().any(|(k, m)| k == kind && m == want),
            "{text:?} should match {kind:?} {want:?} ({why}); got {got:?}"
        );
    }
}

/// Negative vectors: (text, reason): nothing at all may match (every detector on).
fn check_negatives(cases: &[(&str, &str)]) {
    for (text, why) in cases {
        let got = hits(text);
        assert!(
            got.is_empty(),
            "{text:?} must not match ({why}); got {got:?}"
        );
    }
}

#[test]
fn redact_email_vectors() {
    check_positives(&[
        (
            "john.doe@example.com",
            Detector::Email,
            "john.doe@example.com",
            "plain",
        ),
        (
            "contact: JOHN+tag@Mail.Example.CO.UK.",
            Detector::Email,
            "JOHN+tag@Mail.Example.CO.UK",
            "plus tag, mixed case, trailing full stop",
        ),
        (
            "<anna_1@sub-domain.example.org>",
            Detector::Email,
            "anna_1@sub-domain.example.org",
            "angle brackets, underscore, dash",
        ),
        (
            "mailto:anna@example.com",
            Detector::Email,
            "anna@example.com",
            "scheme before",
        ),
        (
            "{\"email\":\"ivan@yandex.ru\"}",
            Detector::Email,
            "ivan@yandex.ru",
            "inside JSON",
        ),
        (
            "иван@почта.рф",
            Detector::Email,
            "иван@почта.рф",
            "internationalised local part and domain",
        ),
        (
            "/users/john%40example.com/orders",
            Detector::Email,
            "john%40example.com",
            "percent-encoded @ in a URL",
        ),
        (
            "79161234567@mail.ru",
            Detector::Email,
            "79161234567@mail.ru",
            "digits local part: e-mail, not phone",
        ),
        (
            "https://user:secret@shop.example.com/x",
            Detector::Email,
            "secret@shop.example.com",
            "URL userinfo password is caught",
        ),
        (
            "a@xn--80ak6aa92e.com",
            Detector::Email,
            "a@xn--80ak6aa92e.com",
            "punycode label",
        ),
        (
            "john@example.com.7707083893",
            Detector::Email,
            "john@example.com",
            "ends at the last valid top-level label",
        ),
    ]);
    check_negatives(&[
        ("foo@bar", "no dot in the domain"),
        ("user@localhost", "single-label domain"),
        ("@example.com", "empty local part"),
        ("john@", "no domain"),
        ("a@b.c", "one-letter top-level domain"),
        ("x@1.2", "numeric top-level domain"),
        ("@@@ @. .@", "punctuation only"),
        ("ORD-1001", "order id"),
    ]);
}

#[test]
fn redact_phone_vectors() {
    check_positives(&[
        ("+79161234567", Detector::Phone, "+79161234567", "E.164"),
        (
            "tel +7 916 123-45-67",
            Detector::Phone,
            "+7 916 123-45-67",
            "E.164 printed with spaces and dashes",
        ),
        (
            "+7 (916) 123-45-67",
            Detector::Phone,
            "+7 (916) 123-45-67",
            "E.164 with bracketed code",
        ),
        (
            "8 (916) 123-45-67",
            Detector::Phone,
            "8 (916) 123-45-67",
            "Russian trunk 8, brackets",
        ),
        (
            "8(916)1234567",
            Detector::Phone,
            "8(916)1234567",
            "no spaces",
        ),
        (
            "8-916-123-45-67",
            Detector::Phone,
            "8-916-123-45-67",
            "dashes",
        ),
        (
            "8 916 123 45 67",
            Detector::Phone,
            "8 916 123 45 67",
            "spaces",
        ),
        ("7 916 1234567", Detector::Phone, "7 916 1234567", "trunk 7"),
        (
            "+1-202-555-0143",
            Detector::Phone,
            "+1-202-555-0143",
            "US with country code",
        ),
        (
            "+44 20 7946 0958",
            Detector::Phone,
            "+44 20 7946 0958",
            "UK, 12 digits",
        ),
        (
            "(495) 123-45-67",
            Detector::Phone,
            "(495) 123-45-67",
            "bracketed area code, 10 digits",
        ),
        (
            "(202) 555-0143",
            Detector::Phone,
            "(202) 555-0143",
            "US bracketed",
        ),
        (
            "916 123-45-67",
            Detector::Phone,
            "916 123-45-67",
            "3-3-2-2 without trunk",
        ),
        (
            "202-555-0143",
            Detector::Phone,
            "202-555-0143",
            "3-3-4 dashes",
        ),
        (
            "phone=89161234567&x=1",
            Detector::Phone,
            "89161234567",
            "bare Russian mobile (89…)",
        ),
        (
            "79161234567",
            Detector::Phone,
            "79161234567",
            "bare Russian mobile (79…)",
        ),
        (
            "%2B79161234567",
            Detector::Phone,
            "%2B79161234567",
            "percent-encoded plus",
        ),
        (
            "+7 916 123-45-67 1001",
            Detector::Phone,
            "+7 916 123-45-67",
            "shortest prefix: the trailing number is not eaten",
        ),
        (
            "8-916-123-45-67,8-916-765-43-21",
            Detector::Phone,
            "8-916-765-43-21",
            "second of a comma list",
        ),
    ]);
    check_negatives(&[
        ("ORD-1001", "order id"),
        (
            "ORD-2024-000123",
            "dated order id: 4-6 groups have no phone shape",
        ),
        ("order 100200300400", "12 digits, no phone shape"),
        (
            "80012345678",
            "11 digits starting 80: not a mobile (and not a SNILS)",
        ),
        ("ORD89161234567", "glued to letters: not a token"),
        ("89161234567x", "glued to a letter after"),
        ("2024-05-01T12:00:00+03:00", "ISO timestamp with offset"),
        ("2024-05-01 12:00:00.123", "timestamp with space"),
        ("v1.0.3", "version"),
        ("HTTP 503", "status code"),
        ("localhost:8080", "host and port"),
        ("took 1500ms", "duration"),
        ("8080", "port"),
        ("+1500", "signed amount, too short"),
        ("1 2 3 4 5 6 7 8 9 10 11", "list of small numbers"),
        ("12.50 RUB", "price"),
        ("89161234567.5", "a decimal number"),
    ]);
}

#[test]
fn redact_card_vectors() {
    check_positives(&[
        (
            "4111111111111111",
            Detector::Card,
            "4111111111111111",
            "Visa test number",
        ),
        (
            "card 4111 1111 1111 1111 exp 12/27",
            Detector::Card,
            "4111 1111 1111 1111",
            "spaces",
        ),
        (
            "4111-1111-1111-1111",
            Detector::Card,
            "4111-1111-1111-1111",
            "dashes",
        ),
        (
            "5500 0000 0000 0004",
            Detector::Card,
            "5500 0000 0000 0004",
            "Mastercard",
        ),
        (
            "2200000000000004",
            Detector::Card,
            "2200000000000004",
            "Mir",
        ),
        (
            "378282246310005",
            Detector::Card,
            "378282246310005",
            "Amex, 15 digits",
        ),
        (
            "3782 822463 10005",
            Detector::Card,
            "3782 822463 10005",
            "Amex 4-6-5 grouping",
        ),
        (
            "6011111111111117",
            Detector::Card,
            "6011111111111117",
            "Discover",
        ),
        (
            "4222222222222",
            Detector::Card,
            "4222222222222",
            "13 digits",
        ),
        (
            "6000000000000000004",
            Detector::Card,
            "6000000000000000004",
            "19 digits",
        ),
        (
            "4111 1111 1111 1111 123",
            Detector::Card,
            "4111 1111 1111 1111",
            "longest Luhn-valid prefix (CVV after)",
        ),
        (
            "\"pan\":\"4111111111111111\"",
            Detector::Card,
            "4111111111111111",
            "inside JSON",
        ),
    ]);
    check_negatives(&[
        ("4111111111111112", "Luhn fails"),
        ("41111111111111110000", "20 digits: longer than a card"),
        (
            "123441111111111111114321",
            "a card inside a longer digit run is not a card",
        ),
        (
            "1716000000000",
            "epoch milliseconds (Luhn-valid, but starts with 1)",
        ),
        ("x4111111111111111", "glued to a letter"),
        ("4111111111111111_x", "glued to an underscore"),
        (
            "41 11 11 11 11 11 11 11",
            "groups of two: not a card layout",
        ),
        ("4111111111111111.25", "a decimal number"),
    ]);
}

#[test]
fn redact_iban_vectors() {
    check_positives(&[
        (
            "DE89370400440532013000",
            Detector::Iban,
            "DE89370400440532013000",
            "compact",
        ),
        (
            "IBAN: DE89 3704 0044 0532 0130 00.",
            Detector::Iban,
            "DE89 3704 0044 0532 0130 00",
            "grouped by four",
        ),
        (
            "GB82WEST12345698765432",
            Detector::Iban,
            "GB82WEST12345698765432",
            "letters in the BBAN",
        ),
        (
            "fr1420041010050500013m02606",
            Detector::Iban,
            "fr1420041010050500013m02606",
            "lowercase",
        ),
        (
            "NL91 ABNA 0417 1643 00",
            Detector::Iban,
            "NL91 ABNA 0417 1643 00",
            "grouped, 18",
        ),
        (
            "NO9386011117947",
            Detector::Iban,
            "NO9386011117947",
            "shortest (15)",
        ),
        (
            "RU0204452560040702810412345678901",
            Detector::Iban,
            "RU0204452560040702810412345678901",
            "Russia, 33",
        ),
        (
            "DE89 3704 0044 0532 0130 00 1234",
            Detector::Iban,
            "DE89 3704 0044 0532 0130 00",
            "number after the IBAN",
        ),
    ]);
    check_negatives(&[
        ("DE89370400440532013001", "check digits wrong"),
        ("XX89370400440532013000", "not an IBAN country"),
        ("ORDE89370400440532013000", "glued to letters"),
        ("DE89", "too short"),
        ("DE89 3704 0044", "too short, grouped"),
    ]);
}

#[test]
fn redact_inn_vectors() {
    check_positives(&[
        (
            "7707083893",
            Detector::Inn,
            "7707083893",
            "10 digits (organisation)",
        ),
        (
            "ИНН 500100732259",
            Detector::Inn,
            "500100732259",
            "12 digits (individual)",
        ),
        (
            "inn=500100732259&x",
            Detector::Inn,
            "500100732259",
            "query value",
        ),
    ]);
    let inn_only = DetectorSet::default().with(Detector::Inn);
    for (text, why) in [
        ("7707083894", "10 digits, check digit wrong"),
        ("500100732250", "12 digits, check digit wrong"),
        ("100200300400", "12-digit order number (check fails)"),
        ("77070838931", "11 digits"),
        ("x7707083893", "glued to a letter"),
        ("ORD-2024-7707083893", "continues a dashed number"),
        ("7707-083893", "grouped: INN is written in one run"),
    ] {
        assert!(hits_with(text, inn_only).is_empty(), "{text:?} ({why})");
    }
}

#[test]
fn redact_snils_vectors() {
    check_positives(&[
        (
            "112-233-445 95",
            Detector::Snils,
            "112-233-445 95",
            "canonical layout",
        ),
        (
            "СНИЛС 112 233 445 95",
            Detector::Snils,
            "112 233 445 95",
            "spaces",
        ),
        (
            "112-233-445-95",
            Detector::Snils,
            "112-233-445-95",
            "all dashes",
        ),
        (
            "11223344595",
            Detector::Snils,
            "11223344595",
            "11 digits in one run",
        ),
    ]);
    let snils_only = DetectorSet::default().with(Detector::Snils);
    for (text, why) in [
        ("112-233-445 96", "check digits wrong"),
        ("11223344596", "check digits wrong, one run"),
        (
            "001-001-998 00",
            "below the first issued number: no check, not matched",
        ),
        ("112-233-44 595", "wrong grouping"),
        ("x11223344595", "glued to a letter"),
    ] {
        assert!(hits_with(text, snils_only).is_empty(), "{text:?} ({why})");
    }
}

#[test]
fn redact_ip_vectors() {
    check_positives(&[
        (
            "client 192.168.0.1 said",
            Detector::Ip,
            "192.168.0.1",
            "IPv4",
        ),
        (
            "10.0.0.1:8080",
            Detector::Ip,
            "10.0.0.1",
            "IPv4 with port: the port stays",
        ),
        (
            "2001:db8::1",
            Detector::Ip,
            "2001:db8::1",
            "IPv6 compressed",
        ),
        (
            "[::1]:8080",
            Detector::Ip,
            "::1",
            "IPv6 loopback in brackets",
        ),
        (
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            Detector::Ip,
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "IPv6 full",
        ),
        (
            "::ffff:192.0.2.1",
            Detector::Ip,
            "::ffff:192.0.2.1",
            "IPv4-mapped",
        ),
        (
            "fe80::1ff:fe23:4567:890a",
            Detector::Ip,
            "fe80::1ff:fe23:4567:890a",
            "link-local",
        ),
    ]);
    check_negatives(&[
        ("1.0.3", "version"),
        ("256.1.1.1", "octet over 255"),
        ("1.2.3.4.5", "five parts"),
        ("12:00:00", "time"),
        ("aa:bb:cc:dd:ee:ff", "MAC address"),
        ("std::fmt::Display", "Rust path"),
        ("a :: b", "bare ::"),
        ("1:2:3:4:5:6:7:8:9", "nine groups"),
    ]);
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

#[test]
fn redact_jwt_and_bearer_vectors() {
    let bearer_jwt = format!("Authorization: Bearer {JWT}");
    let in_text = format!("token={JWT}&x=1");
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
    check_positives(&[
        (
            &bearer_jwt,
            Detector::Bearer,
            JWT,
            "bearer wins over the JWT inside it",
        ),
        (&in_text, Detector::Jwt, JWT, "JWT in a query"),
        (
            unsigned,
            Detector::Jwt,
            unsigned,
            "unsigned JWT, empty signature",
        ),
        (
            "bearer abcdefgh12345678",
            Detector::Bearer,
            "abcdefgh12345678",
            "lowercase scheme",
        ),
        (
            "BEARER\tabc.def-ghi_jkl~mno+p/q==",
            Detector::Bearer,
            "abc.def-ghi_jkl~mno+p/q==",
            "token68 alphabet and padding",
        ),
    ]);
    check_negatives(&[
        ("Bearer short", "token under 8 characters"),
        ("Bearer [token]", "already masked"),
        ("bearer token expired", "prose"),
        ("Bearer", "no token"),
        ("eyJhbGciOiJIUzI1NiJ9", "a JWT header alone"),
        ("eyJhb.x.y", "first part too short"),
        (
            "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "glued to a letter",
        ),
    ]);
}

#[test]
fn redact_tokens_left_alone() {
    check_negatives(&[
        ("550e8400-e29b-41d4-a716-446655440000", "UUID"),
        (
            "12345678-1234-1234-1234-123456789012",
            "all-digit UUID: its groups are not numbers",
        ),
        ("h:1234567890123456", "an all-digit pseudonym is not a card"),
        ("h:0123456789abcdef", "pseudonym"),
        (
            "ORD-1001 ORD-2024-000123 INITIATED",
            "order ids and a status",
        ),
        ("POST /api/orders/{order_id}/submit", "span name"),
        (
            "2024-05-01T12:00:00.123456789Z",
            "ISO timestamp, nanoseconds",
        ),
        ("duration 2.5s, 1500ms, PT30M", "durations"),
        ("status 200 201 404 500 503", "status codes"),
        ("", "empty"),
    ]);
}

#[test]
fn redact_boundaries_after_a_match() {
    // A match glued to the end of another is still found, so a second pass finds nothing new.
    assert_eq!(
        hits("john@x.com+79161234567"),
        vec![
            (Detector::Email, "john@x.com".to_string()),
            (Detector::Phone, "+79161234567".to_string())
        ]
    );
    assert_eq!(
        hits("8-916-123-45-67-7707083893"),
        vec![
            (Detector::Phone, "8-916-123-45-67".to_string()),
            (Detector::Inn, "7707083893".to_string())
        ]
    );
}

#[test]
fn redact_checksums() {
    let luhn_ok = |s: &str| luhn(s.as_bytes(), 0, s.len());
    assert!(luhn_ok("79927398713"));
    assert!(!luhn_ok("79927398710"));
    assert!(iban_mod97(b"GB82WEST12345698765432"));
    assert!(!iban_mod97(b"GB82WEST12345698765433"));
    assert!(!iban_mod97(b"GB82-EST12345698765432"));
    let inn = |s: &str| inn_ok(s.as_bytes(), 0, s.len());
    assert!(inn("7707083893") && inn("500100732259") && inn("100200300491"));
    assert!(!inn("7707083890") && !inn("500100732258") && !inn("123"));
    let snils = |s: &str| snils_ok(s.as_bytes(), 0, s.len());
    assert!(snils("112-233-445 95"));
    assert!(!snils("112-233-445 59"));
}

#[test]
fn redact_normalise_for_hash() {
    let n = |k, s: &str| String::from_utf8(normalise(k, s.as_bytes())).unwrap();
    assert_eq!(
        n(Detector::Email, "John.Doe%40Example.COM"),
        "john.doe@example.com"
    );
    for p in [
        "+7 916 123-45-67",
        "8 (916) 123-45-67",
        "89161234567",
        "916 123-45-67",
        "%2B79161234567",
    ] {
        assert_eq!(n(Detector::Phone, p), "79161234567", "{p}");
    }
    assert_eq!(n(Detector::Card, "4111-1111 1111 1111"), "4111111111111111");
    assert_eq!(
        n(Detector::Iban, "de89 3704 0044 0532 0130 00"),
        "DE89370400440532013000"
    );
}
