//! A deterministic corpus of realistic order records full of personal data, for tests/e2e_pii.rs.
//!
//! Everything is generated from a seed with a small xorshift generator; the check digits are
//! computed for real (Luhn for cards, ISO 13616 mod-97 for IBANs, the INN and SNILS algorithms), so
//! each value is something the redactor's detectors must recognise, not a lookalike they may skip.
#![allow(dead_code)]

/// xorshift64* (deterministic, no dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 11) % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn digits(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.below(10) as u8).collect()
    }
}

fn to_str(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

pub fn digits_only(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

// ---------------------------------------------------------------------------------------------
// Check digits

/// The Luhn check digit for `body` (the digits without the check digit).
pub fn luhn_check_digit(body: &[u8]) -> u8 {
    let mut sum = 0u32;
    // From the right, the digit next to the check digit is doubled.
    for (i, d) in body.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    ((10 - sum % 10) % 10) as u8
}

pub fn luhn_valid(number: &str) -> bool {
    let d: Vec<u8> = digits_only(number).bytes().map(|b| b - b'0').collect();
    match d.split_last() {
        Some((check, body)) => luhn_check_digit(body) == *check,
        None => false,
    }
}

/// ISO 13616 mod 97 of an IBAN-like string (country+check moved to the end, letters as 10..35).
fn mod97(s: &str) -> u32 {
    let mut rem = 0u32;
    for c in s.chars() {
        let v = if c.is_ascii_digit() {
            c as u32 - '0' as u32
        } else {
            c.to_ascii_uppercase() as u32 - 'A' as u32 + 10
        };
        if v >= 10 {
            rem = (rem * 100 + v) % 97;
        } else {
            rem = (rem * 10 + v) % 97;
        }
    }
    rem
}

/// A compact IBAN with valid check digits.
pub fn iban(country: &str, bban: &str) -> String {
    let r = mod97(&format!("{bban}{country}00"));
    format!("{country}{:02}{bban}", 98 - r)
}

pub fn iban_valid(iban: &str) -> bool {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    let (head, rest) = compact.split_at(4);
    mod97(&format!("{rest}{head}")) == 1
}

fn inn_digit(d: &[u8], weights: &[u32]) -> u8 {
    let s: u32 = d.iter().zip(weights).map(|(a, w)| u32::from(*a) * w).sum();
    ((s % 11) % 10) as u8
}

/// A 10-digit (organisation) INN with a valid check digit.
pub fn inn10(rng: &mut Rng) -> String {
    let mut d = vec![7, 7];
    d.extend(rng.digits(7));
    d.push(inn_digit(&d, &[2, 4, 10, 3, 5, 9, 4, 6, 8]));
    to_str(&d)
}

/// A 12-digit (individual) INN with valid check digits, starting with `prefix`.
pub fn inn12_with(rng: &mut Rng, prefix: &[u8]) -> String {
    let mut d = prefix.to_vec();
    d.extend(rng.digits(10 - prefix.len()));
    d.push(inn_digit(&d, &[7, 2, 4, 10, 3, 5, 9, 4, 6, 8]));
    d.push(inn_digit(&d, &[3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]));
    to_str(&d)
}

pub fn inn_valid(inn: &str) -> bool {
    let d: Vec<u8> = inn.bytes().map(|b| b - b'0').collect();
    match d.len() {
        10 => inn_digit(&d[..9], &[2, 4, 10, 3, 5, 9, 4, 6, 8]) == d[9],
        12 => {
            inn_digit(&d[..10], &[7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) == d[10]
                && inn_digit(&d[..11], &[3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) == d[11]
        }
        _ => false,
    }
}

/// SNILS check number of the 9-digit body.
pub fn snils_check(d: &[u8]) -> u32 {
    let s: u32 = d
        .iter()
        .enumerate()
        .map(|(i, x)| u32::from(*x) * (9 - i as u32))
        .sum();
    let c = if s < 100 {
        s
    } else if s <= 101 {
        0
    } else {
        s % 101
    };
    if c == 100 {
        0
    } else {
        c
    }
}

// ---------------------------------------------------------------------------------------------
// Base64url (for JWTs)

pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (for URLs).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Records

/// (Cyrillic, Latin) first names: male, female.
const RU_MALE: &[(&str, &str)] = &[
    ("Иван", "Ivan"),
    ("Алексей", "Aleksei"),
    ("Дмитрий", "Dmitrii"),
    ("Сергей", "Sergei"),
    ("Андрей", "Andrei"),
    ("Михаил", "Mikhail"),
    ("Николай", "Nikolai"),
    ("Пётр", "Petr"),
    ("Артём", "Artem"),
    ("Юрий", "Iurii"),
];
const RU_FEMALE: &[(&str, &str)] = &[
    ("Анна", "Anna"),
    ("Мария", "Mariia"),
    ("Елена", "Elena"),
    ("Ольга", "Olga"),
    ("Татьяна", "Tatiana"),
    ("Наталья", "Natalia"),
    ("Екатерина", "Ekaterina"),
    ("Юлия", "Iuliia"),
    ("Светлана", "Svetlana"),
];
/// Male surnames; the female form adds `а` / `a`.
const RU_SURNAMES: &[(&str, &str)] = &[
    ("Иванов", "Ivanov"),
    ("Смирнов", "Smirnov"),
    ("Кузнецов", "Kuznetsov"),
    ("Попов", "Popov"),
    ("Васильев", "Vasilev"),
    ("Соколов", "Sokolov"),
    ("Михайлов", "Mikhailov"),
    ("Новиков", "Novikov"),
    ("Фёдоров", "Fedorov"),
    ("Морозов", "Morozov"),
    ("Волков", "Volkov"),
    ("Лебедев", "Lebedev"),
    ("Кравцов", "Kravtsov"),
    ("Зайцев", "Zaitsev"),
];
const RU_PATRONYMICS_M: &[&str] = &["Сергеевич", "Андреевич", "Викторович", "Олегович"];
const RU_PATRONYMICS_F: &[&str] = &["Сергеевна", "Андреевна", "Викторовна", "Олеговна"];
const INTL_NAMES: &[(&str, &str)] = &[
    ("John", "Smith"),
    ("María", "García"),
    ("Ahmed", "Hassan"),
    ("Wei", "Zhang"),
    ("Priya", "Sharma"),
    ("Olivia", "Brown"),
    ("Lukas", "Müller"),
    ("Chloé", "Dubois"),
    ("Kenji", "Tanaka"),
    ("Fatima", "Zahra"),
    ("Giulia", "Rossi"),
    ("Mehmet", "Yılmaz"),
    ("Siobhan", "O'Connor"),
    ("Björn", "Lindqvist"),
];
const RU_DOMAINS: &[&str] = &[
    "mail.ru",
    "yandex.ru",
    "bk.ru",
    "inbox.ru",
    "list.ru",
    "rambler.ru",
];
const INTL_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "example.org",
    "company.co.uk",
    "web.de",
    "proton.me",
];
const RU_CITIES: &[(&str, &str)] = &[
    ("101000", "г. Москва"),
    ("190000", "г. Санкт-Петербург"),
    ("420111", "г. Казань"),
    ("620014", "г. Екатеринбург"),
    ("630099", "г. Новосибирск"),
];
const RU_STREETS: &[&str] = &[
    "ул. Тверская",
    "Невский пр-т",
    "ул. Баумана",
    "ул. Малышева",
    "Красный пр-т",
    "ул. Ленина",
];
const INTL_ADDRESSES: &[&str] = &[
    "{n} Baker Street, London NW1 6XE, United Kingdom",
    "{n} Amphitheatre Pkwy, Mountain View, CA 94043, USA",
    "Unter den Linden {n}, 10117 Berlin, Germany",
    "{n} rue de Rivoli, 75001 Paris, France",
    "Via del Corso {n}, 00186 Roma, Italy",
    "Calle de Alcalá {n}, 28014 Madrid, Spain",
];
/// (country, BBAN layout: `n` digit, `a` upper-case letter)
const IBAN_LAYOUTS: &[(&str, &str)] = &[
    ("DE", "nnnnnnnnnnnnnnnnnn"),
    ("GB", "aaaannnnnnnnnnnnnn"),
    ("FR", "nnnnnnnnnnnnnnnnnnnnnnn"),
    ("NL", "aaaannnnnnnnnn"),
    ("ES", "nnnnnnnnnnnnnnnnnnnn"),
    ("IT", "annnnnnnnnnnnnnnnnnnnnn"),
    ("CH", "nnnnnnnnnnnnnnnnn"),
    ("KZ", "nnnnnnnnnnnnnnnn"),
];

/// One PII value as sent, and the forms that must never appear in the exported bytes.
#[derive(Debug, Clone)]
pub struct Pii {
    pub kind: &'static str,
    pub value: String,
    pub forms: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub n: usize,
    /// As written by the customer (Cyrillic or Latin).
    pub full_name: String,
    /// Latin (for a header value).
    pub latin_name: String,
    pub email: String,
    /// As typed (one of many formats).
    pub phone: String,
    /// E.164 digits (`7916…`), for the digits-only check.
    pub phone_e164: String,
    pub address: String,
    /// With separators (or not), as typed.
    pub card: String,
    /// As typed: compact or in groups of four.
    pub iban: String,
    pub inn: String,
    pub snils: String,
    pub jwt: String,
    /// An opaque bearer token (`Authorization: Bearer <token>`).
    pub bearer: String,
    pub operator_id: String,
    pub manager_id: String,
    /// A 12-digit factory order number (some pass the INN-12 check on purpose).
    pub order_number: String,
    pub comment: String,
}

fn email_local(rng: &mut Rng, first: &str, last: &str) -> String {
    let f = first.to_lowercase();
    let l = last.to_lowercase();
    let initial: String = f.chars().take(1).collect();
    match rng.below(5) {
        0 => format!("{f}.{l}"),
        1 => format!("{initial}.{l}{}", 70 + rng.below(30)),
        2 => format!("{l}_{f}"),
        3 => format!("{f}{l}{}", rng.below(1000)),
        _ => format!("{l}.{initial}"),
    }
}

fn ascii_fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'á' => 'a',
            'í' => 'i',
            'é' => 'e',
            'ü' => 'u',
            'ö' => 'o',
            'ı' => 'i',
            '\'' => '-',
            c => c,
        })
        .collect()
}

fn phone(rng: &mut Rng, russian: bool) -> (String, String) {
    if russian {
        let code = if rng.below(5) == 0 {
            *rng.pick(&[495u32, 812, 843, 343])
        } else {
            900 + rng.below(100) as u32
        };
        let a = 100 + rng.below(900);
        let b = rng.below(100);
        let c = rng.below(100);
        let e164 = format!("7{code}{a}{b:02}{c:02}");
        let typed = match rng.below(8) {
            0 => format!("+7 {code} {a}-{b:02}-{c:02}"),
            1 => format!("8 ({code}) {a}-{b:02}-{c:02}"),
            2 => format!("+7{code}{a}{b:02}{c:02}"),
            3 => format!("8-{code}-{a}-{b:02}-{c:02}"),
            4 => format!("+7 ({code}) {a}-{b:02}-{c:02}"),
            5 if code >= 900 => format!("8{code}{a}{b:02}{c:02}"),
            6 => format!("8 {code} {a}{b:02}{c:02}"),
            _ => format!("+7-{code}-{a}-{b:02}-{c:02}"),
        };
        (typed, e164)
    } else {
        match rng.below(6) {
            0 => {
                let (a, b) = (1000 + rng.below(9000), 1000 + rng.below(9000));
                (format!("+44 20 {a} {b}"), format!("4420{a}{b}"))
            }
            1 => {
                let (a, b) = (200 + rng.below(800), rng.below(100));
                (format!("+1-{a}-555-01{b:02}"), format!("1{a}55501{b:02}"))
            }
            2 => {
                let a = 1_000_000 + rng.below(9_000_000);
                (format!("+49 30 {a}"), format!("4930{a}"))
            }
            3 => {
                let (a, b, c, d) = (
                    10 + rng.below(90),
                    10 + rng.below(90),
                    10 + rng.below(90),
                    10 + rng.below(90),
                );
                (format!("+33 6 {a} {b} {c} {d}"), format!("336{a}{b}{c}{d}"))
            }
            4 => {
                let (a, b) = (100 + rng.below(900), 1000 + rng.below(9000));
                (format!("+380 44 {a} {b}"), format!("38044{a}{b}"))
            }
            _ => {
                let (a, b, c) = (100 + rng.below(900), rng.below(100), rng.below(100));
                (
                    format!("+375 29 {a}-{b:02}-{c:02}"),
                    format!("37529{a}{b:02}{c:02}"),
                )
            }
        }
    }
}

fn card(rng: &mut Rng) -> String {
    // (prefix, length)
    let (prefix, len): (Vec<u8>, usize) = match rng.below(7) {
        0 => (vec![4], 16),
        1 => (vec![5, 1 + rng.below(5) as u8], 16),
        2 => (vec![2, 2, 0, rng.below(5) as u8], 16), // Mir
        3 => (vec![3, *rng.pick(&[4u8, 7])], 15),     // Amex
        4 => (vec![2, 2, 2, 1 + rng.below(9) as u8], 16),
        5 => (vec![6, 2], 19), // UnionPay 19
        _ => (vec![4], 13),
    };
    let mut d = prefix;
    while d.len() < len - 1 {
        d.push(rng.below(10) as u8);
    }
    d.push(luhn_check_digit(&d));
    let s = to_str(&d);
    let sep = match rng.below(3) {
        0 => "",
        1 => " ",
        _ => "-",
    };
    let groups: Vec<usize> = match len {
        15 => vec![4, 6, 5],
        16 => vec![4, 4, 4, 4],
        19 => vec![4, 4, 4, 4, 3],
        _ => vec![13],
    };
    let mut out = String::new();
    let mut at = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&s[at..at + g]);
        at += g;
    }
    out
}

fn iban_typed(rng: &mut Rng) -> String {
    let (country, layout) = *rng.pick(IBAN_LAYOUTS);
    let bban: String = layout
        .chars()
        .map(|c| {
            if c == 'a' {
                char::from(b'A' + rng.below(26) as u8)
            } else {
                char::from(b'0' + rng.below(10) as u8)
            }
        })
        .collect();
    let compact = iban(country, &bban);
    if rng.below(2) == 0 {
        compact
    } else {
        let chars: Vec<char> = compact.chars().collect();
        chars
            .chunks(4)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn snils(rng: &mut Rng) -> String {
    let mut d = vec![1 + rng.below(8) as u8];
    d.extend(rng.digits(8));
    let c = snils_check(&d);
    let s = to_str(&d);
    if rng.below(3) == 0 {
        format!("{s}{c:02}")
    } else {
        format!("{}-{}-{} {c:02}", &s[0..3], &s[3..6], &s[6..9])
    }
}

fn token(rng: &mut Rng, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| char::from(A[rng.below(A.len() as u64) as usize]))
        .collect()
}

fn jwt(rng: &mut Rng, email: &str, n: usize) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let iat = 1_760_000_000 + n as u64 * 37;
    let payload = b64url(
        format!(
            r#"{{"sub":"cust-{n}","email":"{email}","iat":{iat},"exp":{}}}"#,
            iat + 3600
        )
        .as_bytes(),
    );
    let sig: Vec<u8> = (0..32).map(|_| rng.below(256) as u8).collect();
    format!("{header}.{payload}.{}", b64url(&sig))
}

/// Operators on the factory floor (MES) and in the CRM: few, so each is seen many times.
pub const OPERATORS: &[&str] = &[
    "emp-40213",
    "emp-40877",
    "emp-51002",
    "emp-51990",
    "emp-60314",
    "emp-72245",
    "a.smirnova@factory.example.ru",
    "p.volkov@factory.example.ru",
    "OP-7731-KZN",
    "OP-8802-EKB",
    "emp-90001",
    "emp-90417",
];
pub const MANAGERS: &[&str] = &[
    "mgr.sokolova",
    "mgr.kravtsov",
    "mgr.lebedeva",
    "mgr.o.brien",
    "mgr.zaitsev",
];

/// `n` records from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<Record> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| record(&mut rng, i)).collect()
}

fn record(rng: &mut Rng, n: usize) -> Record {
    let russian = rng.below(3) != 0;
    let (full_name, latin_name, latin_first, latin_last) = if russian {
        let female = rng.below(2) == 0;
        let (f, lf) = if female {
            *rng.pick(RU_FEMALE)
        } else {
            *rng.pick(RU_MALE)
        };
        let (s, ls) = *rng.pick(RU_SURNAMES);
        let (s, ls) = if female {
            (format!("{s}а"), format!("{ls}a"))
        } else {
            (s.to_string(), ls.to_string())
        };
        let full = match rng.below(3) {
            0 => format!("{f} {s}"),
            1 => format!(
                "{s} {f} {}",
                if female {
                    rng.pick(RU_PATRONYMICS_F)
                } else {
                    rng.pick(RU_PATRONYMICS_M)
                }
            ),
            _ => format!("{s} {f}"),
        };
        (full, format!("{lf} {ls}"), lf.to_string(), ls)
    } else {
        let (f, l) = *rng.pick(INTL_NAMES);
        (
            format!("{f} {l}"),
            ascii_fold(&format!("{f} {l}")),
            ascii_fold(f),
            ascii_fold(l),
        )
    };
    let local = email_local(rng, &latin_first, &latin_last);
    let email = match rng.below(12) {
        0 if russian => {
            // An internationalised address.
            let first: String = full_name.split(' ').next().unwrap_or("").to_lowercase();
            format!("{first}{}@почта.рф", rng.below(100))
        }
        1 => {
            // Mixed case, as people type it.
            let mut c = latin_first.clone();
            c.push('.');
            c.push_str(&latin_last);
            format!("{c}@{}", if russian { "Mail.Ru" } else { "Gmail.com" })
        }
        _ => format!(
            "{local}@{}",
            if russian {
                rng.pick(RU_DOMAINS)
            } else {
                rng.pick(INTL_DOMAINS)
            }
        ),
    };
    let ru_phone = russian || rng.below(4) == 0;
    let (phone, phone_e164) = phone(rng, ru_phone);
    let address = if russian {
        let (zip, city) = *rng.pick(RU_CITIES);
        format!(
            "{zip}, {city}, {}, д. {}, кв. {}",
            rng.pick(RU_STREETS),
            1 + rng.below(120),
            1 + rng.below(300)
        )
    } else {
        rng.pick(INTL_ADDRESSES)
            .replace("{n}", &(1 + rng.below(400)).to_string())
    };
    let card = card(rng);
    let iban = iban_typed(rng);
    let inn = if rng.below(4) == 0 {
        inn10(rng)
    } else {
        inn12_with(rng, &[7, 7])
    };
    let snils = snils(rng);
    let jwt = jwt(rng, &email, n);
    let bearer = token(rng, 40);
    let operator_id = rng.pick(OPERATORS).to_string();
    let manager_id = rng.pick(MANAGERS).to_string();
    // 12-digit order numbers; every other one passes the INN-12 check on purpose.
    let order_number = if n % 2 == 0 {
        inn12_with(rng, &[2, 0, 2, 5])
    } else {
        format!("2025{}", to_str(&rng.digits(8)))
    };
    let comment = match rng.below(4) {
        0 => format!("Позвоните перед доставкой: {phone}, или пишите на {email}"),
        1 => format!("Call me at {phone} before delivery, e-mail {email}"),
        2 => format!("Оплата картой {card}, чек на {email}"),
        _ => format!("Refund to {iban} please; contact {email} / {phone}"),
    };
    Record {
        n,
        full_name,
        latin_name,
        email,
        phone,
        phone_e164,
        address,
        card,
        iban,
        inn,
        snils,
        jwt,
        bearer,
        operator_id,
        manager_id,
        order_number,
        comment,
    }
}

fn push(out: &mut Vec<Pii>, kind: &'static str, value: &str, extra: &[String]) {
    let mut forms = vec![value.to_string()];
    for f in extra {
        if !forms.contains(f) {
            forms.push(f.clone());
        }
    }
    let enc = pct(value);
    if !forms.contains(&enc) {
        forms.push(enc);
    }
    out.push(Pii {
        kind,
        value: value.to_string(),
        forms,
    });
}

impl Record {
    /// Every PII value of the record with the forms to look for.
    pub fn pii(&self) -> Vec<Pii> {
        let mut out = Vec::new();
        push(&mut out, "name", &self.full_name, &[]);
        push(&mut out, "name", &self.latin_name, &[]);
        push(&mut out, "address", &self.address, &[]);
        push(&mut out, "email", &self.email, &[self.email.to_lowercase()]);
        push(
            &mut out,
            "phone",
            &self.phone,
            &[digits_only(&self.phone), self.phone_e164.clone()],
        );
        push(&mut out, "card", &self.card, &[digits_only(&self.card)]);
        push(&mut out, "iban", &self.iban, &[self.iban.replace(' ', "")]);
        push(&mut out, "inn", &self.inn, &[]);
        push(&mut out, "snils", &self.snils, &[digits_only(&self.snils)]);
        let payload = self.jwt.split('.').nth(1).unwrap_or("").to_string();
        push(&mut out, "jwt", &self.jwt, &[payload]);
        push(&mut out, "bearer", &self.bearer, &[]);
        push(&mut out, "comment", &self.comment, &[]);
        out
    }
}
