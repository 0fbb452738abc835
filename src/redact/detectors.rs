//! Hand-written PII detectors: one left-to-right scan over the bytes, no regex, no allocation.
//!
//! The scan only looks for a match where a token starts: at the beginning of the text, after a byte that is
//! not a "word" byte (ASCII letter or digit, `_`, or any byte of a non-ASCII character), or right after a
//! previous match. Every match also ends before a non-word byte (or at the end). So a card number inside a
//! longer digit run, or a phone number glued to letters (`ORD89161234567`), is not a match, and a
//! replacement (`[phone]`, `h:…`) never merges with its neighbours into something new: that is what makes
//! redaction idempotent.
//!
//! The rules of each detector are documented on its function and in docs/redaction.md; the vectors (with
//! the reason for each) are in the tests at the bottom of this file.

/// A value detector. Its name is the key under `redaction.detectors` in the plugin configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    Email,
    Phone,
    Card,
    Iban,
    Inn,
    Snils,
    Ip,
    Jwt,
    Bearer,
}

impl Detector {
    /// Every detector, in the order `describe()` lists them.
    pub const ALL: [Detector; 9] = [
        Detector::Email,
        Detector::Phone,
        Detector::Card,
        Detector::Iban,
        Detector::Inn,
        Detector::Snils,
        Detector::Ip,
        Detector::Jwt,
        Detector::Bearer,
    ];

    /// The configuration name (`redaction.detectors.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::Inn => "inn",
            Detector::Snils => "snils",
            Detector::Ip => "ip",
            Detector::Jwt => "jwt",
            Detector::Bearer => "bearer",
        }
    }

    /// What the `mask` action writes in place of a match.
    pub fn mask(self) -> &'static str {
        match self {
            Detector::Email => "[email]",
            Detector::Phone => "[phone]",
            Detector::Card => "[card]",
            Detector::Iban => "[iban]",
            Detector::Inn => "[inn]",
            Detector::Snils => "[snils]",
            Detector::Ip => "[ip]",
            Detector::Jwt => "[jwt]",
            Detector::Bearer => "[token]",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of enabled detectors (a bit per detector).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DetectorSet(u16);

impl DetectorSet {
    pub(crate) fn with(self, d: Detector) -> Self {
        DetectorSet(self.0 | d.bit())
    }

    pub(crate) fn has(self, d: Detector) -> bool {
        self.0 & d.bit() != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn numeric(self) -> bool {
        self.has(Detector::Phone)
            || self.has(Detector::Card)
            || self.has(Detector::Inn)
            || self.has(Detector::Snils)
            || self.has(Detector::Ip)
    }
}

/// One match: bytes `start..end` of the scanned text are PII of kind `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub kind: Detector,
}

/// The byte at `i`, or 0 (a boundary byte) past the end.
#[inline]
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// A byte that belongs to a word: a match cannot start right after one nor end right before one.
#[inline]
pub(crate) fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

#[inline]
fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

#[inline]
fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// Is `v` exactly a pseudonym as this module writes them (`h:` and 16 lowercase hex digits)?
pub(crate) fn is_pseudonym(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 18 && b.starts_with(b"h:") && b.iter().skip(2).all(|c| is_lower_hex(*c))
}

enum Step {
    Hit(Hit),
    /// A token that must be left alone (a pseudonym, a UUID): continue after it.
    Skip(usize),
}

/// The first match at or after `from`. `cut` says that `from` follows a match (or a replacement): the
/// bytes before it are treated as a boundary, exactly as the replacement's brackets would be on a second pass.
pub(crate) fn find(s: &[u8], from: usize, cut: bool, on: DetectorSet) -> Option<Hit> {
    if on.is_empty() {
        return None;
    }
    let mut i = from;
    // Bytes before `floor` belong to a match or a skipped token and are not looked at as context.
    let mut floor = if cut { from } else { 0 };
    while i < s.len() {
        let prev = if i > floor { at(s, i - 1) } else { 0 };
        if !is_word(prev) {
            let prev2 = if i > floor + 1 { at(s, i - 2) } else { 0 };
            match check_at(s, i, prev, prev2, on) {
                Some(Step::Hit(h)) => return Some(h),
                Some(Step::Skip(end)) if end > i => {
                    i = end;
                    floor = end;
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Does any enabled detector match somewhere in `s`?
pub(crate) fn first(s: &[u8], on: DetectorSet) -> Option<Hit> {
    find(s, 0, false, on)
}

fn check_at(s: &[u8], i: usize, prev: u8, prev2: u8, on: DetectorSet) -> Option<Step> {
    let c = at(s, i);
    let hit = |start, end, kind| Some(Step::Hit(Hit { start, end, kind }));
    if c == b'h' {
        if let Some(end) = pseudonym_at(s, i) {
            return Some(Step::Skip(end));
        }
    }
    if on.has(Detector::Bearer) && (c | 0x20) == b'b' {
        if let Some((start, end)) = bearer_at(s, i) {
            return hit(start, end, Detector::Bearer);
        }
    }
    if on.has(Detector::Jwt) && c == b'e' && !matches!(prev, b'.' | b'-') {
        if let Some(end) = jwt_at(s, i) {
            return hit(i, end, Detector::Jwt);
        }
    }
    if on.has(Detector::Email) && is_local(c) && !is_local(prev) {
        if let Some(end) = email_at(s, i) {
            return hit(i, end, Detector::Email);
        }
    }
    if is_hex(c) {
        if let Some(end) = uuid_at(s, i) {
            return Some(Step::Skip(end));
        }
    }
    if on.has(Detector::Iban) && c.is_ascii_alphabetic() {
        if let Some(end) = iban_at(s, i) {
            return hit(i, end, Detector::Iban);
        }
    }
    // A digit right after `.`, `-` or `:` that follows a digit continues a dotted/dashed number (a date, a
    // version, an address, `ORD-2024-000123`): that number had its chance where it started.
    let continues_number = matches!(prev, b'.' | b'-' | b':') && prev2.is_ascii_digit();
    if on.numeric() && matches!(c, b'0'..=b'9' | b'+' | b'(' | b'%') && !continues_number {
        if let Some((end, kind)) = numeric_at(s, i, on) {
            return hit(i, end, kind);
        }
    }
    if on.has(Detector::Ip) && (is_hex(c) || c == b':') && !matches!(prev, b':' | b'.') {
        if let Some(end) = ipv6_at(s, i) {
            return hit(i, end, Detector::Ip);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Tokens left alone

/// `h:` and 16 lowercase hex digits: a pseudonym written by an earlier pass.
fn pseudonym_at(s: &[u8], i: usize) -> Option<usize> {
    let end = i + 18;
    let ok = at(s, i) == b'h'
        && at(s, i + 1) == b':'
        && (i + 2..end).all(|j| is_lower_hex(at(s, j)))
        && !is_word(at(s, end));
    ok.then_some(end)
}

/// A UUID (8-4-4-4-12 hex digits): request and order ids, never PII, and its all-digit groups must not
/// be mistaken for numbers.
fn uuid_at(s: &[u8], i: usize) -> Option<usize> {
    let mut pos = i;
    for (n, len) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if n > 0 {
            if at(s, pos) != b'-' {
                return None;
            }
            pos += 1;
        }
        if !(pos..pos + len).all(|j| is_hex(at(s, j))) {
            return None;
        }
        pos += len;
    }
    (!is_word(at(s, pos))).then_some(pos)
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens and JWTs

fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// `Bearer <token>` (scheme case-insensitive, one or more spaces/tabs, an RFC 6750 token of at least 8
/// characters). The match is the token only, so the text keeps `Bearer [token]`.
fn bearer_at(s: &[u8], i: usize) -> Option<(usize, usize)> {
    let word_ok = s
        .get(i..i + 6)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"));
    if !word_ok || !matches!(at(s, i + 6), b' ' | b'\t') {
        return None;
    }
    let mut pos = i + 6;
    while matches!(at(s, pos), b' ' | b'\t') {
        pos += 1;
    }
    let start = pos;
    while is_token68(at(s, pos)) {
        pos += 1;
    }
    let core = pos - start;
    while at(s, pos) == b'=' {
        pos += 1;
    }
    (core >= 8 && !is_word(at(s, pos))).then_some((start, pos))
}

/// A JWT (JWS or JWE compact form): base64url parts joined by dots, 3 to 5 parts, the first starting with
/// `eyJ` (base64 of `{"`) and at least 10 characters long. An empty last part (unsigned JWT) is accepted.
fn jwt_at(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i..i + 3) != Some(b"eyJ".as_slice()) {
        return None;
    }
    let mut pos = i;
    let mut parts = 0;
    loop {
        let start = pos;
        while is_b64url(at(s, pos)) {
            pos += 1;
        }
        parts += 1;
        if parts == 1 && pos - start < 10 {
            return None;
        }
        if parts < 3 {
            if at(s, pos) != b'.' {
                return None;
            }
            pos += 1;
        } else if parts < 5 && at(s, pos) == b'.' && is_b64url(at(s, pos + 1)) {
            pos += 1;
        } else {
            break;
        }
    }
    (!is_word(at(s, pos))).then_some(pos)
}

// ---------------------------------------------------------------------------------------------
// E-mail

/// Characters of the local part (what comes before `@`). Non-ASCII is accepted (internationalised mail).
fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') || c >= 0x80
}

fn is_domain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80
}

/// `local@domain.tld`: a non-empty local part, `@` (or `%40`, its percent-encoding in URLs), at least two
/// domain labels, and a top-level label of 2+ letters (or non-ASCII, or `xn--` punycode). The match ends
/// at the last label that qualifies, so a trailing dot (end of a sentence) or a `.123` is not part of it.
fn email_at(s: &[u8], i: usize) -> Option<usize> {
    let mut pos = i;
    let at_len = loop {
        match at(s, pos) {
            b'@' => break 1,
            b'%' if at(s, pos + 1) == b'4' && at(s, pos + 2) == b'0' => break 3,
            c if is_local(c) => pos += 1,
            _ => return None,
        }
    };
    if pos == i {
        return None;
    }
    let mut p = pos + at_len;
    let mut labels = 0;
    // The end of the longest run of labels whose last one is a valid top-level label
    // (`john@example.com.7707083893` is the e-mail `john@example.com` followed by a number).
    let mut end = None;
    loop {
        let start = p;
        while is_domain(at(s, p)) {
            p += 1;
        }
        if p == start {
            break;
        }
        labels += 1;
        if labels >= 2 && s.get(start..p).is_some_and(tld_ok) {
            end = Some(p);
        }
        if at(s, p) == b'.' && is_domain(at(s, p + 1)) {
            p += 1;
        } else {
            break;
        }
    }
    end
}

/// A top-level label: 2+ ASCII letters, or non-ASCII (`рф`), or punycode (`xn--…`).
fn tld_ok(tld: &[u8]) -> bool {
    tld.len() >= 2
        && (tld.iter().all(|c| c.is_ascii_alphabetic())
            || tld.iter().any(|c| *c >= 0x80)
            || tld
                .get(..4)
                .is_some_and(|x| x.eq_ignore_ascii_case(b"xn--")))
}

// ---------------------------------------------------------------------------------------------
// IBAN

/// ISO 3166 codes of the countries in the IBAN registry (and a few non-registry adopters).
const IBAN_COUNTRIES: &[u8] = b"ADAEALATAZBABEBGBHBIBRBYCHCRCYCZDEDJDKDOEEEGESFIFKFOFRGBGEGIGLGRGTHRHUIEILIQISITJOKWKZLBLCLILTLULVLYMCMDMEMKMNMRMTMUNINLNOOMPKPLPSPTQARORSRUSASCSDSESISKSMSOSTSVTLTNTRUAVAVGXKYE";

fn iban_country(a: u8, b: u8) -> bool {
    IBAN_COUNTRIES
        .chunks_exact(2)
        .any(|c| c == [a.to_ascii_uppercase(), b.to_ascii_uppercase()])
}

/// ISO 13616 mod-97 check over the compact form (letters uppercase).
fn iban_mod97(compact: &[u8]) -> bool {
    let mut rem: u32 = 0;
    for c in compact.iter().skip(4).chain(compact.iter().take(4)) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// An IBAN: a registry country code, two check digits, then the BBAN; 15 to 34 characters, either compact
/// (`DE89370400440532013000`) or in groups of four separated by single spaces (`DE89 3704 0044 0532 0130
/// 00`); letters in either case; valid mod-97 check.
fn iban_at(s: &[u8], i: usize) -> Option<usize> {
    if !(iban_country(at(s, i), at(s, i + 1))
        && at(s, i + 2).is_ascii_digit()
        && at(s, i + 3).is_ascii_digit())
    {
        return None;
    }
    let mut buf = [0u8; 34];
    let mut n = 0;
    let mut pos = i;
    while at(s, pos).is_ascii_alphanumeric() && n <= 34 {
        if let Some(slot) = buf.get_mut(n) {
            *slot = at(s, pos).to_ascii_uppercase();
        }
        n += 1;
        pos += 1;
    }
    let compact_ok = |buf: &[u8; 34], n: usize, end: usize| {
        (15..=34).contains(&n) && !is_word(at(s, end)) && buf.get(..n).is_some_and(iban_mod97)
    };
    if n != 4 {
        return compact_ok(&buf, n, pos).then_some(pos);
    }
    // Grouped by four: collect the possible ends (after each group), try the longest first.
    let mut ends = [(0usize, 0usize); 8];
    let mut ne = 0;
    while at(s, pos) == b' ' && at(s, pos + 1).is_ascii_alphanumeric() && ne < ends.len() {
        let mut p = pos + 1;
        let mut g = 0;
        while at(s, p).is_ascii_alphanumeric() && g < 5 {
            if let Some(slot) = buf.get_mut(n + g) {
                *slot = at(s, p).to_ascii_uppercase();
            }
            g += 1;
            p += 1;
        }
        if g > 4 || n + g > 34 {
            break;
        }
        n += g;
        pos = p;
        if let Some(slot) = ends.get_mut(ne) {
            *slot = (n, pos);
        }
        ne += 1;
        if g < 4 {
            break;
        }
    }
    ends.iter()
        .take(ne)
        .rev()
        .find(|(n, end)| compact_ok(&buf, *n, *end))
        .map(|(_, end)| *end)
}

// ---------------------------------------------------------------------------------------------
// Numbers: phones, cards, SNILS, INN, IPv4

const MAX_GROUPS: usize = 8;

/// One group of digits of a number written with separators (`8 (916) 123-45-67` has five).
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    /// Byte offset just after the group (after `)` for a bracketed group).
    end: usize,
    /// Number of digits (saturates at 255).
    digits: u8,
    /// Written in brackets: `(916)`.
    paren: bool,
    /// The separator before this group: `b' '`, `b'-'`, `b'.'`, or 0 for none (first group, or a group
    /// glued to a bracket).
    sep: u8,
    /// Its first digit.
    first: u8,
    /// Its second digit (0 when the group has one digit).
    second: u8,
}

/// A run of digit groups starting at a token boundary, optionally after a leading `+` (or `%2B`).
struct Seq {
    plus: bool,
    groups: [Group; MAX_GROUPS],
    n: usize,
}

impl Seq {
    fn group(&self, k: usize) -> Group {
        self.groups.get(k).copied().unwrap_or_default()
    }

    fn groups(&self) -> impl Iterator<Item = &Group> + '_ {
        self.groups.iter().take(self.n)
    }

    /// Digits in groups `0..=k`.
    fn digits_upto(&self, k: usize) -> usize {
        self.groups()
            .take(k + 1)
            .map(|g| usize::from(g.digits))
            .sum()
    }

    fn any_paren_upto(&self, k: usize) -> bool {
        self.groups().take(k + 1).any(|g| g.paren)
    }

    /// The digit counts of groups `0..=k` are exactly `shape`.
    fn shape_is(&self, shape: &[u8]) -> bool {
        self.n >= shape.len()
            && self
                .groups()
                .zip(shape.iter())
                .all(|(g, d)| g.digits == *d && !g.paren)
    }
}

fn parse_seq(s: &[u8], i: usize) -> Option<Seq> {
    let mut pos = i;
    let mut plus = false;
    if at(s, pos) == b'+' {
        plus = true;
        pos += 1;
    } else if at(s, pos) == b'%' && at(s, pos + 1) == b'2' && (at(s, pos + 2) | 0x20) == b'b' {
        plus = true;
        pos += 3;
    }
    if plus && !at(s, pos).is_ascii_digit() {
        return None;
    }
    let mut seq = Seq {
        plus,
        groups: [Group::default(); MAX_GROUPS],
        n: 0,
    };
    let mut sep = 0u8;
    loop {
        let paren = at(s, pos) == b'(';
        let ds = if paren { pos + 1 } else { pos };
        let mut p = ds;
        while at(s, p).is_ascii_digit() {
            p += 1;
        }
        let nd = p - ds;
        if nd == 0 || (paren && at(s, p) != b')') {
            break;
        }
        let end = if paren { p + 1 } else { p };
        let second = if nd > 1 { at(s, ds + 1) } else { 0 };
        if let Some(slot) = seq.groups.get_mut(seq.n) {
            *slot = Group {
                end,
                digits: u8::try_from(nd).unwrap_or(u8::MAX),
                paren,
                sep,
                first: at(s, ds),
                second,
            };
        }
        seq.n += 1;
        // Longer than any number we look for: nothing after it can be part of a match.
        if seq.n == MAX_GROUPS || nd > 19 {
            break;
        }
        pos = end;
        let c = at(s, pos);
        let next = at(s, pos + 1);
        if matches!(c, b' ' | b'-' | b'.') && (next.is_ascii_digit() || next == b'(') {
            sep = c;
            pos += 1;
        } else if c == b'(' || (paren && c.is_ascii_digit()) {
            sep = 0;
        } else {
            break;
        }
    }
    (seq.n > 0).then_some(seq)
}

/// A match may end after group `k` only if the next byte is not a word byte and the number does not
/// continue as a decimal (`.5`).
fn clean_end(s: &[u8], end: usize) -> bool {
    let c = at(s, end);
    let decimal = c == b'.' && at(s, end + 1).is_ascii_digit();
    !is_word(c) && !decimal
}

fn digits_of(s: &[u8], start: usize, end: usize) -> impl DoubleEndedIterator<Item = u32> + '_ {
    s.get(start..end)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.is_ascii_digit())
        .map(|c| u32::from(c - b'0'))
}

fn numeric_at(s: &[u8], i: usize, on: DetectorSet) -> Option<(usize, Detector)> {
    if on.has(Detector::Ip) {
        if let Some(end) = ipv4_at(s, i) {
            return Some((end, Detector::Ip));
        }
    }
    let seq = parse_seq(s, i)?;
    if on.has(Detector::Card) {
        if let Some(end) = card(s, i, &seq) {
            return Some((end, Detector::Card));
        }
    }
    if on.has(Detector::Snils) {
        if let Some(end) = snils_grouped(s, i, &seq) {
            return Some((end, Detector::Snils));
        }
    }
    if on.has(Detector::Phone) {
        if let Some(end) = phone(s, &seq) {
            return Some((end, Detector::Phone));
        }
    }
    // Bare runs: a single group, no `+`, no brackets.
    let g = seq.group(0);
    if seq.plus || g.paren || !clean_end(s, g.end) {
        return None;
    }
    if on.has(Detector::Snils) && g.digits == 11 && snils_ok(s, i, g.end) {
        return Some((g.end, Detector::Snils));
    }
    if on.has(Detector::Inn) && matches!(g.digits, 10 | 12) && inn_ok(s, i, g.end) {
        return Some((g.end, Detector::Inn));
    }
    None
}

/// Luhn check over the digits of `start..end`.
fn luhn(s: &[u8], start: usize, end: usize) -> bool {
    let mut sum = 0;
    for (n, d) in digits_of(s, start, end).rev().enumerate() {
        sum += if n % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    sum % 10 == 0
}

/// A payment card: 13–19 digits, first digit 2–6 (Mir, Visa, Mastercard, Amex, Discover, UnionPay, JCB;
/// this also keeps epoch timestamps in ms/µs/ns, which start with 1, from matching), Luhn-valid. Either
/// one run of digits, or groups separated by spaces or dashes: a first group of 4 digits, middle groups
/// of 4–6, a last group of 1–6 (`4111 1111 1111 1111`, `3782 822463 10005`). The longest candidate wins.
fn card(s: &[u8], i: usize, seq: &Seq) -> Option<usize> {
    if seq.plus {
        return None;
    }
    for k in (0..seq.n).rev() {
        let g = seq.group(k);
        let digits = seq.digits_upto(k);
        if !(13..=19).contains(&digits) || !clean_end(s, g.end) || seq.any_paren_upto(k) {
            continue;
        }
        if !(b'2'..=b'6').contains(&seq.group(0).first) {
            return None;
        }
        let shape_ok = k == 0
            || seq.groups().take(k + 1).enumerate().all(|(n, g)| {
                let d = g.digits;
                let sep_ok = n == 0 || matches!(g.sep, b' ' | b'-');
                sep_ok
                    && if n == 0 {
                        d == 4
                    } else if n == k {
                        (1..=6).contains(&d)
                    } else {
                        (4..=6).contains(&d)
                    }
            });
        if shape_ok && luhn(s, i, g.end) {
            return Some(g.end);
        }
    }
    None
}

/// SNILS check digits: the first 9 digits weighted 9..1; a sum below 100 is the check, 100 and 101 give
/// 00, above that the sum mod 101 (100 again giving 00). Numbers up to 001-001-998 have no check.
fn snils_ok(s: &[u8], start: usize, end: usize) -> bool {
    let mut body = 0u32;
    let mut sum = 0u32;
    let mut check = 0u32;
    let mut n = 0u32;
    for d in digits_of(s, start, end) {
        if n < 9 {
            body = body * 10 + d;
            sum += d * (9 - n);
        } else {
            check = check * 10 + d;
        }
        n += 1;
    }
    if n != 11 || body <= 1_001_998 {
        return false;
    }
    let expected = match sum {
        0..=99 => sum,
        100 | 101 => 0,
        _ => match sum % 101 {
            100 => 0,
            r => r,
        },
    };
    check == expected
}

/// SNILS written `112-233-445 95` (groups 3-3-3-2 separated by dashes or spaces).
fn snils_grouped(s: &[u8], i: usize, seq: &Seq) -> Option<usize> {
    let g = seq.group(3);
    let seps_ok = seq
        .groups()
        .skip(1)
        .take(3)
        .all(|g| matches!(g.sep, b' ' | b'-'));
    (!seq.plus
        && seq.shape_is(&[3, 3, 3, 2])
        && seps_ok
        && clean_end(s, g.end)
        && snils_ok(s, i, g.end))
    .then_some(g.end)
}

/// INN check digits: 10 digits (organisations) or 12 digits (individuals), weighted sums mod 11 mod 10.
fn inn_ok(s: &[u8], start: usize, end: usize) -> bool {
    const W10: [u32; 9] = [2, 4, 10, 3, 5, 9, 4, 6, 8];
    const W11: [u32; 10] = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8];
    const W12: [u32; 11] = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8];
    let mut d = [0u32; 12];
    let mut n = 0;
    for x in digits_of(s, start, end) {
        if let Some(slot) = d.get_mut(n) {
            *slot = x;
        }
        n += 1;
    }
    let check = |w: &[u32], at: usize| {
        let sum: u32 = w.iter().zip(d.iter()).map(|(w, d)| w * d).sum();
        d.get(at) == Some(&(sum % 11 % 10))
    };
    match n {
        10 => check(&W10, 9),
        12 => check(&W11, 10) && check(&W12, 11),
        _ => false,
    }
}

/// Phone numbers. A number needs a phone *shape*, so order numbers and other ids are not caught:
/// - `+` (or `%2B`) then 10–15 digits with any of the separators (E.164 and its printed forms); the
///   shortest such prefix that ends cleanly is the match (`+7 916 123-45-67`, `+1-202-555-0143`);
/// - a lone trunk digit `7` or `8`, a separator or bracket, 11 digits in all (`8 (916) 123-45-67`,
///   `8-916-123-45-67`, `8 916 1234567`);
/// - a bracketed area code of 3–5 digits and 10 digits in all (`(495) 123-45-67`, `(202) 555-0143`);
/// - groups 3-3-2-2 separated by spaces or dashes (`916 123-45-67`);
/// - groups 3-3-4 separated by dashes or dots (`202-555-0143`);
/// - one bare run of 11 digits starting `79` or `89` (a Russian mobile: `89161234567`).
fn phone(s: &[u8], seq: &Seq) -> Option<usize> {
    let g0 = seq.group(0);
    let end_if = |k: usize| {
        let g = seq.group(k);
        clean_end(s, g.end).then_some(g.end)
    };
    if seq.plus {
        return (0..seq.n)
            .filter(|k| (10..=15).contains(&seq.digits_upto(*k)))
            .find_map(end_if);
    }
    if !g0.paren && g0.digits == 1 && matches!(g0.first, b'7' | b'8') && seq.n > 1 {
        return (1..seq.n)
            .find(|k| seq.digits_upto(*k) == 11)
            .and_then(end_if);
    }
    if g0.paren && (3..=5).contains(&g0.digits) {
        return (1..seq.n)
            .find(|k| seq.digits_upto(*k) == 10)
            .and_then(end_if);
    }
    let seps = |k: usize, allowed: &[u8]| {
        seq.groups()
            .skip(1)
            .take(k)
            .all(|g| allowed.contains(&g.sep))
    };
    if seq.shape_is(&[3, 3, 2, 2]) && seps(3, b" -") {
        if let Some(end) = end_if(3) {
            return Some(end);
        }
    }
    if seq.shape_is(&[3, 3, 4]) && (seps(2, b"-") || seps(2, b".")) {
        if let Some(end) = end_if(2) {
            return Some(end);
        }
    }
    if g0.digits == 11 && !g0.paren && matches!(g0.first, b'7' | b'8') && g0.second == b'9' {
        return end_if(0);
    }
    None
}

/// Dotted-quad IPv4 (each part 0–255, 1–3 digits), not part of a longer dotted number.
fn ipv4_at(s: &[u8], i: usize) -> Option<usize> {
    let mut pos = i;
    for part in 0..4 {
        if part > 0 {
            if at(s, pos) != b'.' {
                return None;
            }
            pos += 1;
        }
        let start = pos;
        let mut v = 0u32;
        while at(s, pos).is_ascii_digit() && pos - start < 4 {
            v = v * 10 + u32::from(at(s, pos) - b'0');
            pos += 1;
        }
        if pos == start || pos - start > 3 || v > 255 {
            return None;
        }
    }
    clean_end(s, pos).then_some(pos)
}

/// IPv6: hex groups of 1–4 digits separated by `:`, either 8 groups or fewer with one `::`, optionally
/// ending in a dotted IPv4 (`::ffff:192.0.2.1`). At least one group (a bare `::` is not matched).
fn ipv6_at(s: &[u8], i: usize) -> Option<usize> {
    let mut pos = i;
    let mut groups = 0;
    let mut compressed = false;
    if at(s, pos) == b':' {
        if at(s, pos + 1) != b':' {
            return None;
        }
        compressed = true;
        pos += 2;
    }
    loop {
        let start = pos;
        while is_hex(at(s, pos)) && pos - start < 5 {
            pos += 1;
        }
        let len = pos - start;
        if len == 0 {
            break;
        }
        if at(s, pos) == b'.' {
            pos = ipv4_at(s, start)?;
            groups += 2;
            break;
        }
        if len > 4 {
            return None;
        }
        groups += 1;
        if at(s, pos) == b':' && at(s, pos + 1) == b':' {
            if compressed {
                return None;
            }
            compressed = true;
            pos += 2;
        } else if at(s, pos) == b':' && is_hex(at(s, pos + 1)) {
            pos += 1;
        } else {
            break;
        }
    }
    let valid = groups >= 1 && if compressed { groups <= 7 } else { groups == 8 };
    (valid && !is_word(at(s, pos)) && at(s, pos) != b':').then_some(pos)
}

// ---------------------------------------------------------------------------------------------
// Normalisation before hashing

/// The canonical form of a match that the `hash` action pseudonymises, so that the same e-mail or phone
/// written differently gets the same pseudonym: e-mail lowercased with `%40` as `@`; phones as digits with
/// a Russian trunk `8` (or a missing country code before a `9xx` mobile) written as `7`; cards, INN and
/// SNILS as digits; IBAN as uppercase letters and digits; IPs lowercased; tokens as written.
pub(crate) fn normalise(kind: Detector, m: &[u8]) -> Vec<u8> {
    match kind {
        Detector::Email => {
            let mut out = Vec::with_capacity(m.len());
            let mut i = 0;
            while let Some(&c) = m.get(i) {
                if c == b'%' && m.get(i + 1) == Some(&b'4') && m.get(i + 2) == Some(&b'0') {
                    out.push(b'@');
                    i += 3;
                } else {
                    out.push(c.to_ascii_lowercase());
                    i += 1;
                }
            }
            out
        }
        Detector::Phone => {
            // `%2B` carries the digits `2` and `B`: drop the escape before collecting digits.
            let body = if m.first() == Some(&b'%') {
                m.get(3..).unwrap_or_default()
            } else {
                m
            };
            let mut d: Vec<u8> = body.iter().copied().filter(u8::is_ascii_digit).collect();
            let plus = m.first().is_some_and(|c| matches!(c, b'+' | b'%'));
            if !plus && d.len() == 11 && d.first() == Some(&b'8') {
                if let Some(first) = d.first_mut() {
                    *first = b'7';
                }
            } else if !plus && d.len() == 10 && d.first() == Some(&b'9') {
                d.insert(0, b'7');
            }
            d
        }
        Detector::Card | Detector::Inn | Detector::Snils => {
            m.iter().copied().filter(u8::is_ascii_digit).collect()
        }
        Detector::Iban => m
            .iter()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(u8::to_ascii_uppercase)
            .collect(),
        Detector::Ip => m.to_ascii_lowercase(),
        Detector::Jwt | Detector::Bearer => m.to_vec(),
    }
}

#[cfg(test)]
#[path = "detectors_tests.rs"]
mod tests;
