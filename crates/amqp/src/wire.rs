//! Reading and writing the AMQP 0-9-1 primitive types: big-endian integers, short strings (one length
//! octet), long strings (four length octets). Every read is checked; a short input is a [`WireError`],
//! never a panic.

use std::fmt;

/// Why a piece of the wire could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The input ended inside a value.
    Short,
    /// A field table or array uses a type octet this decoder does not know.
    UnknownFieldType(u8),
    /// Tables or arrays nested deeper than [`crate::table::MAX_NESTING`].
    TooDeep,
    /// A value that is well formed but not allowed where it is (e.g. a second flag word).
    Unsupported,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Short => f.write_str("input ends inside a value"),
            WireError::UnknownFieldType(t) => write!(f, "unknown field type 0x{t:02x}"),
            WireError::TooDeep => f.write_str("field tables nested too deeply"),
            WireError::Unsupported => f.write_str("unsupported encoding"),
        }
    }
}

impl std::error::Error for WireError {}

/// A checked reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader {
            rest: bytes,
            pos: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(WireError::Short)?;
        self.rest = tail;
        self.pos += n;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array()?))
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn i8(&mut self) -> Result<i8, WireError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    pub fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A short string: one length octet, then that many bytes (not necessarily UTF-8).
    pub fn shortstr_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A short string, lossily decoded as UTF-8.
    pub fn shortstr(&mut self) -> Result<String, WireError> {
        Ok(String::from_utf8_lossy(self.shortstr_bytes()?).into_owned())
    }

    /// A long string: four length octets, then that many bytes.
    pub fn longstr(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()?;
        let n = usize::try_from(n).map_err(|_| WireError::Short)?;
        self.take(n)
    }
}

/// Appends a short string (truncated to 255 bytes, which never happens for the names written here).
pub fn put_shortstr(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len().min(255);
    out.push(n as u8);
    out.extend_from_slice(s.get(..n).unwrap_or_default());
}

/// Appends a long string.
pub fn put_longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked() {
        let mut r = Reader::new(&[0, 1, 2, b'a', b'b', 0, 0, 0, 1, b'z']);
        assert_eq!(r.u16().unwrap(), 1);
        assert_eq!(r.shortstr().unwrap(), "ab");
        assert_eq!(r.longstr().unwrap(), b"z");
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(WireError::Short));
        let mut r = Reader::new(&[5, b'a']);
        assert_eq!(r.shortstr(), Err(WireError::Short));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(r.longstr(), Err(WireError::Short));
    }

    #[test]
    fn writes_round_trip() {
        let mut out = Vec::new();
        put_shortstr(&mut out, b"key");
        put_longstr(&mut out, b"value");
        let mut r = Reader::new(&out);
        assert_eq!(r.shortstr().unwrap(), "key");
        assert_eq!(r.longstr().unwrap(), b"value");
        assert_eq!(r.position(), out.len());
    }
}
