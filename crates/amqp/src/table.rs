//! AMQP 0-9-1 field tables and arrays (message headers, `client-properties`, queue arguments).
//!
//! Field types follow what RabbitMQ reads and writes (its errata to the 0-9-1 grammar), which differs from
//! the original spec text in two places: `s` is a signed 16-bit integer (not a short string) and `l` is a
//! signed 64-bit integer. `U` (spec: signed 16-bit) and `L` (spec: 64-bit) are read as well, so every
//! value a peer may send keeps its size and the walk never loses its place.
//!
//! | octet | value | | octet | value |
//! |---|---|---|---|---|
//! | `t` | bool (1) | | `f` | f32 |
//! | `b` | i8 | | `d` | f64 |
//! | `B` | u8 | | `D` | decimal: scale u8 + u32 |
//! | `s`, `U` | i16 | | `S` | long string |
//! | `u` | u16 | | `x` | byte array (u32 length) |
//! | `I` | i32 | | `A` | array (u32 length, then values) |
//! | `i` | u32 | | `T` | timestamp u64 |
//! | `l` | i64 | | `F` | nested table |
//! | `L` | u64 | | `V` | void (no bytes) |

use crate::wire::{put_longstr, put_shortstr, Reader, WireError};

/// Tables and arrays nested deeper than this are rejected (bounds the recursion on hostile input).
pub const MAX_NESTING: usize = 32;

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    Decimal { scale: u8, value: u32 },
    LongStr(Vec<u8>),
    Bytes(Vec<u8>),
    Array(Vec<FieldValue>),
    Timestamp(u64),
    Table(Table),
    Void,
}

/// A field table: entries in wire order (duplicates kept as sent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table(pub Vec<(String, FieldValue)>);

impl Table {
    /// The first entry with this exact name.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FieldValue {
    /// The value as text, for attributes and rules: strings (lossy UTF-8) and scalars; `None` for
    /// tables, arrays, byte arrays and void.
    pub fn as_text(&self) -> Option<String> {
        Some(match self {
            FieldValue::Bool(b) => b.to_string(),
            FieldValue::I8(v) => v.to_string(),
            FieldValue::U8(v) => v.to_string(),
            FieldValue::I16(v) => v.to_string(),
            FieldValue::U16(v) => v.to_string(),
            FieldValue::I32(v) => v.to_string(),
            FieldValue::U32(v) => v.to_string(),
            FieldValue::I64(v) => v.to_string(),
            FieldValue::U64(v) => v.to_string(),
            FieldValue::F32(v) => v.to_string(),
            FieldValue::F64(v) => v.to_string(),
            FieldValue::Timestamp(v) => v.to_string(),
            FieldValue::Decimal { scale, value } => decimal_text(*scale, *value),
            FieldValue::LongStr(s) => String::from_utf8_lossy(s).into_owned(),
            FieldValue::Bytes(_)
            | FieldValue::Array(_)
            | FieldValue::Table(_)
            | FieldValue::Void => return None,
        })
    }

    /// The raw bytes of a string value (`S`), as sent.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::LongStr(s) => Some(s),
            _ => None,
        }
    }
}

fn decimal_text(scale: u8, value: u32) -> String {
    let digits = value.to_string();
    let scale = usize::from(scale);
    if scale == 0 {
        return digits;
    }
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    match padded.split_at_checked(padded.len().saturating_sub(scale)) {
        Some((int, frac)) => format!("{int}.{frac}"),
        None => padded,
    }
}

/// Reads a field table: a u32 byte length, then `name value` entries filling exactly that length.
pub fn read_table(r: &mut Reader<'_>) -> Result<Table, WireError> {
    read_table_at(r, 0)
}

fn read_table_at(r: &mut Reader<'_>, depth: usize) -> Result<Table, WireError> {
    if depth >= MAX_NESTING {
        return Err(WireError::TooDeep);
    }
    let body = r.longstr()?;
    let mut t = Reader::new(body);
    let mut entries = Vec::new();
    while !t.is_empty() {
        let name = t.shortstr()?;
        let value = read_value(&mut t, depth)?;
        entries.push((name, value));
    }
    Ok(Table(entries))
}

fn read_value(r: &mut Reader<'_>, depth: usize) -> Result<FieldValue, WireError> {
    let ty = r.u8()?;
    Ok(match ty {
        b't' => FieldValue::Bool(r.u8()? != 0),
        b'b' => FieldValue::I8(r.i8()?),
        b'B' => FieldValue::U8(r.u8()?),
        b's' | b'U' => FieldValue::I16(r.i16()?),
        b'u' => FieldValue::U16(r.u16()?),
        b'I' => FieldValue::I32(r.i32()?),
        b'i' => FieldValue::U32(r.u32()?),
        b'l' => FieldValue::I64(r.i64()?),
        b'L' => FieldValue::U64(r.u64()?),
        b'f' => FieldValue::F32(f32::from_bits(r.u32()?)),
        b'd' => FieldValue::F64(f64::from_bits(r.u64()?)),
        b'D' => FieldValue::Decimal {
            scale: r.u8()?,
            value: r.u32()?,
        },
        b'S' => FieldValue::LongStr(r.longstr()?.to_vec()),
        b'x' => FieldValue::Bytes(r.longstr()?.to_vec()),
        b'T' => FieldValue::Timestamp(r.u64()?),
        b'V' => FieldValue::Void,
        b'F' => FieldValue::Table(read_table_at(r, depth + 1)?),
        b'A' => {
            if depth + 1 >= MAX_NESTING {
                return Err(WireError::TooDeep);
            }
            let body = r.longstr()?;
            let mut a = Reader::new(body);
            let mut values = Vec::new();
            while !a.is_empty() {
                values.push(read_value(&mut a, depth + 1)?);
            }
            FieldValue::Array(values)
        }
        other => return Err(WireError::UnknownFieldType(other)),
    })
}

/// Appends a field table (length prefix included).
pub fn write_table(out: &mut Vec<u8>, table: &Table) {
    let mut body = Vec::new();
    for (k, v) in &table.0 {
        put_shortstr(&mut body, k.as_bytes());
        write_value(&mut body, v);
    }
    put_longstr(out, &body);
}

/// Appends one typed value (type octet included).
pub fn write_value(out: &mut Vec<u8>, v: &FieldValue) {
    match v {
        FieldValue::Bool(b) => out.extend_from_slice(&[b't', u8::from(*b)]),
        FieldValue::I8(x) => {
            out.push(b'b');
            out.extend_from_slice(&x.to_be_bytes());
        }
        FieldValue::U8(x) => out.extend_from_slice(&[b'B', *x]),
        FieldValue::I16(x) => {
            out.push(b's');
            out.extend_from_slice(&x.to_be_bytes());
        }
        FieldValue::U16(x) => {
            out.push(b'u');
            out.extend_from_slice(&x.to_be_bytes());
        }
        FieldValue::I32(x) => {
            out.push(b'I');
            out.extend_from_slice(&x.to_be_bytes());
        }
        FieldValue::U32(x) => {
            out.push(b'i');
            out.extend_from_slice(&x.to_be_bytes());
        }
        FieldValue::I64(x) => {
            out.push(b'l');
            out.extend_from_slice(&x.to_be_bytes());
        }
        FieldValue::U64(x) => {
            out.push(b'L');
            out.extend_from_slice(&x.to_be_bytes());
        }
        FieldValue::F32(x) => {
            out.push(b'f');
            out.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        FieldValue::F64(x) => {
            out.push(b'd');
            out.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        FieldValue::Decimal { scale, value } => {
            out.push(b'D');
            out.push(*scale);
            out.extend_from_slice(&value.to_be_bytes());
        }
        FieldValue::LongStr(s) => {
            out.push(b'S');
            put_longstr(out, s);
        }
        FieldValue::Bytes(s) => {
            out.push(b'x');
            put_longstr(out, s);
        }
        FieldValue::Array(values) => {
            out.push(b'A');
            let mut body = Vec::new();
            for v in values {
                write_value(&mut body, v);
            }
            put_longstr(out, &body);
        }
        FieldValue::Timestamp(t) => {
            out.push(b'T');
            out.extend_from_slice(&t.to_be_bytes());
        }
        FieldValue::Table(t) => {
            out.push(b'F');
            write_table(out, t);
        }
        FieldValue::Void => out.push(b'V'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> Table {
        Table(vec![
            ("bool".into(), FieldValue::Bool(true)),
            ("i8".into(), FieldValue::I8(-5)),
            ("u8".into(), FieldValue::U8(250)),
            ("i16".into(), FieldValue::I16(-30000)),
            ("u16".into(), FieldValue::U16(60000)),
            ("i32".into(), FieldValue::I32(-7)),
            ("u32".into(), FieldValue::U32(4_000_000_000)),
            ("i64".into(), FieldValue::I64(-1)),
            ("u64".into(), FieldValue::U64(u64::MAX)),
            ("f32".into(), FieldValue::F32(1.5)),
            ("f64".into(), FieldValue::F64(-2.25)),
            (
                "dec".into(),
                FieldValue::Decimal {
                    scale: 2,
                    value: 12345,
                },
            ),
            ("str".into(), FieldValue::LongStr(b"ORD-1001".to_vec())),
            ("bin".into(), FieldValue::Bytes(vec![0, 1, 255])),
            (
                "arr".into(),
                FieldValue::Array(vec![FieldValue::I32(1), FieldValue::LongStr(b"x".to_vec())]),
            ),
            ("ts".into(), FieldValue::Timestamp(1_700_000_000)),
            (
                "nested".into(),
                FieldValue::Table(Table(vec![("k".into(), FieldValue::Void)])),
            ),
            ("void".into(), FieldValue::Void),
        ])
    }

    #[test]
    fn every_field_type_round_trips() {
        let t = every_type();
        let mut bytes = Vec::new();
        write_table(&mut bytes, &t);
        let mut r = Reader::new(&bytes);
        assert_eq!(read_table(&mut r).unwrap(), t);
        assert!(r.is_empty());
    }

    #[test]
    fn rabbitmq_readings_of_ambiguous_octets() {
        // (type octet, value bytes, expected value, reason)
        let cases: &[(u8, &[u8], FieldValue, &str)] = &[
            (
                b's',
                &[0xff, 0xfe],
                FieldValue::I16(-2),
                "RabbitMQ: 's' is a signed short",
            ),
            (
                b'U',
                &[0x00, 0x02],
                FieldValue::I16(2),
                "spec: 'U' is a signed short",
            ),
            (
                b'l',
                &[0xff; 8],
                FieldValue::I64(-1),
                "RabbitMQ: 'l' is a signed long long",
            ),
            (
                b'L',
                &[0, 0, 0, 0, 0, 0, 0, 9],
                FieldValue::U64(9),
                "spec: 'L' is 8 bytes",
            ),
            (
                b'D',
                &[3, 0, 0, 0x30, 0x39],
                FieldValue::Decimal {
                    scale: 3,
                    value: 12345,
                },
                "decimal",
            ),
        ];
        for (ty, value, expected, reason) in cases {
            let mut entry = vec![1, b'k', *ty];
            entry.extend_from_slice(value);
            let mut bytes = (entry.len() as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&entry);
            let t = read_table(&mut Reader::new(&bytes)).unwrap();
            assert_eq!(t.get("k"), Some(expected), "{reason}");
        }
    }

    #[test]
    fn malformed_tables_are_errors() {
        // (bytes, expected error, reason)
        let cases: &[(&[u8], WireError, &str)] = &[
            (&[0, 0, 0], WireError::Short, "length cut"),
            (
                &[0, 0, 0, 5, 1, b'k'],
                WireError::Short,
                "body shorter than its length",
            ),
            (
                &[0, 0, 0, 3, 1, b'k', b'?'],
                WireError::UnknownFieldType(b'?'),
                "unknown type",
            ),
            (
                &[0, 0, 0, 3, 1, b'k', b'I'],
                WireError::Short,
                "value cut by the table length",
            ),
            (
                &[0, 0, 0, 2, 5, b'k'],
                WireError::Short,
                "name longer than the table",
            ),
        ];
        for (bytes, err, reason) in cases {
            assert_eq!(read_table(&mut Reader::new(bytes)), Err(*err), "{reason}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut t = Table::default();
        for _ in 0..MAX_NESTING + 2 {
            t = Table(vec![("n".into(), FieldValue::Table(t))]);
        }
        let mut bytes = Vec::new();
        write_table(&mut bytes, &t);
        assert_eq!(
            read_table(&mut Reader::new(&bytes)),
            Err(WireError::TooDeep)
        );
        let mut a = FieldValue::Void;
        for _ in 0..MAX_NESTING + 2 {
            a = FieldValue::Array(vec![a]);
        }
        let mut bytes = Vec::new();
        write_table(&mut bytes, &Table(vec![("a".into(), a)]));
        assert_eq!(
            read_table(&mut Reader::new(&bytes)),
            Err(WireError::TooDeep)
        );
    }

    #[test]
    fn values_as_text() {
        assert_eq!(
            FieldValue::LongStr(b"ORD-1".to_vec()).as_text().unwrap(),
            "ORD-1"
        );
        assert_eq!(FieldValue::I64(-3).as_text().unwrap(), "-3");
        assert_eq!(
            FieldValue::Decimal { scale: 2, value: 5 }
                .as_text()
                .unwrap(),
            "0.05"
        );
        assert_eq!(
            FieldValue::Decimal {
                scale: 1,
                value: 125
            }
            .as_text()
            .unwrap(),
            "12.5"
        );
        assert_eq!(FieldValue::Table(Table::default()).as_text(), None);
    }
}
