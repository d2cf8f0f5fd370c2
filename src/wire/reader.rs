//! Bounded reading and length-patching writing of network-order fields.
//!
//! Every read is checked against the bytes that remain, so a hostile length can
//! at worst produce a [`DecodeError`]; nothing here allocates.

use super::enums::{NotifyType, PayloadType};
use std::fmt;

/// Why and where a datagram failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at offset {offset}: {kind}")]
pub struct DecodeError {
    /// Offset from the start of the decoded buffer where the problem was found.
    pub offset: usize,
    /// The field or structure being decoded.
    pub what: &'static str,
    /// What was wrong with it.
    pub kind: DecodeErrorKind,
}

/// The cause of a [`DecodeError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Fewer bytes remain than the field needs.
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A length field is outside what the structure allows.
    BadLength {
        /// The length the field declares.
        length: usize,
        /// The smallest length allowed.
        min: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// A count or length disagrees with the bytes actually present.
    Mismatch {
        /// What the count or length field says.
        declared: usize,
        /// What the bytes hold.
        actual: usize,
    },
    /// A field holds a value the RFC forbids.
    BadValue {
        /// The forbidden value.
        value: u64,
    },
    /// Bytes follow the last structure where none may.
    Trailing {
        /// How many bytes are left over.
        count: usize,
    },
    /// An unknown payload has the critical bit set (RFC 7296 §2.5).
    UnsupportedCritical(PayloadType),
    /// The header's major version is not 2.
    UnsupportedVersion {
        /// The major version the header carries.
        major: u8,
    },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, available } => {
                write!(f, "truncated: needs {needed} bytes, {available} left")
            }
            Self::BadLength { length, min, max } => {
                write!(f, "length {length} outside {min}..={max}")
            }
            Self::Mismatch { declared, actual } => {
                write!(f, "declares {declared} but {actual} present")
            }
            Self::BadValue { value } => write!(f, "invalid value {value}"),
            Self::Trailing { count } => write!(f, "{count} unexpected trailing bytes"),
            Self::UnsupportedCritical(t) => write!(f, "unsupported critical payload {t}"),
            Self::UnsupportedVersion { major } => write!(f, "unsupported major version {major}"),
        }
    }
}

impl DecodeError {
    /// The notify RFC 7296 prescribes in answer to a request that failed this way,
    /// with its notification data.
    pub fn notify(&self) -> (NotifyType, Vec<u8>) {
        match self.kind {
            // §3.10.1: the data is the one-octet type of the unsupported payload.
            DecodeErrorKind::UnsupportedCritical(t) => {
                (NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![t.0])
            }
            // §3.10.1: the data is the highest major version we support.
            DecodeErrorKind::UnsupportedVersion { .. } => (
                NotifyType::INVALID_MAJOR_VERSION,
                vec![super::IKE_MAJOR_VERSION],
            ),
            _ => (NotifyType::INVALID_SYNTAX, Vec::new()),
        }
    }
}

/// A cursor over a byte slice that never reads past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data[0]` in the outermost buffer, for error reports.
    origin: usize,
}

impl<'a> Reader<'a> {
    /// A reader over all of `data`, reporting offsets from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Self::at(data, 0)
    }

    /// A reader over `data`, which starts at `origin` in the buffer errors refer to.
    pub fn at(data: &'a [u8], origin: usize) -> Self {
        Self {
            data,
            pos: 0,
            origin,
        }
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.origin + self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// True when everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// An error located at the next unread byte.
    pub fn error(&self, what: &'static str, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.offset(),
            what,
            kind,
        }
    }

    /// Takes `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(
                what,
                DecodeErrorKind::Truncated {
                    needed: n,
                    available: self.remaining(),
                },
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    /// Reads one octet.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Reads a big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// Reads a big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.data[self.pos..];
        self.pos = self.data.len();
        out
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let origin = self.offset();
        Ok(Reader::at(self.bytes(n, what)?, origin))
    }

    /// Reads a length field that counts its own structure (whose `header_len` bytes
    /// were already read, including the length) and returns a reader over the body.
    pub fn body_by_length(
        &mut self,
        length: u16,
        header_len: usize,
        what: &'static str,
    ) -> Result<Reader<'a>, DecodeError> {
        let length = usize::from(length);
        if length < header_len {
            return Err(DecodeError {
                // The length field ends the header; point at the structure's start.
                offset: self.offset() - header_len,
                what,
                kind: DecodeErrorKind::BadLength {
                    length,
                    min: header_len,
                    max: header_len + self.remaining(),
                },
            });
        }
        self.sub(length - header_len, what)
    }

    /// Fails unless everything has been read.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(
                what,
                DecodeErrorKind::Trailing {
                    count: self.remaining(),
                },
            ))
        }
    }
}

/// Why a structure could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {length} bytes, more than its length field can hold ({max})")]
pub struct EncodeError {
    /// The structure whose length overflowed.
    pub what: &'static str,
    /// Its length in bytes.
    pub length: usize,
    /// The largest length its field can express.
    pub max: usize,
}

/// An append-only buffer whose length fields are patched once their extent is known.
///
/// Overflowing a length field does not fail the call that did it; the first
/// overflow is remembered and reported by [`Writer::finish`], so encoders stay simple.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    overflow: Option<EncodeError>,
}

/// A reserved length field: its position and the start of the structure it measures.
#[must_use = "a reserved length must be patched with Writer::end"]
#[derive(Debug, Clone, Copy)]
pub struct LengthMark {
    field: usize,
    start: usize,
    width: u8,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True before anything was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends one octet.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Reserves a 16-bit length field for a structure that began at `start`.
    pub fn length16(&mut self, start: usize) -> LengthMark {
        let field = self.buf.len();
        self.u16(0);
        LengthMark {
            field,
            start,
            width: 2,
        }
    }

    /// Reserves a 32-bit length field for a structure that began at `start`.
    pub fn length32(&mut self, start: usize) -> LengthMark {
        let field = self.buf.len();
        self.u32(0);
        LengthMark {
            field,
            start,
            width: 4,
        }
    }

    /// Writes the length of everything from the mark's start to here into its field.
    pub fn end(&mut self, mark: LengthMark, what: &'static str) {
        let length = self.buf.len() - mark.start;
        match mark.width {
            2 => match u16::try_from(length) {
                Ok(v) => self.buf[mark.field..mark.field + 2].copy_from_slice(&v.to_be_bytes()),
                Err(_) => self.note_overflow(what, length, u16::MAX.into()),
            },
            _ => match u32::try_from(length) {
                Ok(v) => self.buf[mark.field..mark.field + 4].copy_from_slice(&v.to_be_bytes()),
                Err(_) => self.note_overflow(what, length, u32::MAX as usize),
            },
        }
    }

    /// Appends a one-octet count, recording an overflow if it does not fit.
    pub fn count8(&mut self, count: usize, what: &'static str) {
        match u8::try_from(count) {
            Ok(v) => self.u8(v),
            Err(_) => {
                self.u8(0);
                self.note_overflow(what, count, u8::MAX.into());
            }
        }
    }

    /// Appends a 16-bit count or length, recording an overflow if it does not fit.
    pub fn count16(&mut self, count: usize, what: &'static str) {
        match u16::try_from(count) {
            Ok(v) => self.u16(v),
            Err(_) => {
                self.u16(0);
                self.note_overflow(what, count, u16::MAX.into());
            }
        }
    }

    fn note_overflow(&mut self, what: &'static str, length: usize, max: usize) {
        self.overflow
            .get_or_insert(EncodeError { what, length, max });
    }

    /// The encoded bytes, or the first length that did not fit its field.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        match self.overflow {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a").unwrap(), 0x0102);
        let e = r.u16("b").unwrap_err();
        assert_eq!(e.offset, 2);
        assert_eq!(
            e.kind,
            DecodeErrorKind::Truncated {
                needed: 2,
                available: 1
            }
        );
    }

    #[test]
    fn sub_reader_reports_absolute_offsets() {
        let data = [0u8; 10];
        let mut r = Reader::new(&data);
        r.bytes(4, "skip").unwrap();
        let mut s = r.sub(3, "sub").unwrap();
        s.u16("x").unwrap();
        assert_eq!(s.u16("y").unwrap_err().offset, 6);
        assert_eq!(r.offset(), 7);
    }

    #[test]
    fn body_by_length_rejects_length_below_header() {
        let mut r = Reader::new(&[0, 0, 0, 3, 9, 9]);
        r.bytes(4, "hdr").unwrap();
        let e = r.body_by_length(3, 4, "payload").unwrap_err();
        assert_eq!(e.offset, 0);
        assert!(matches!(
            e.kind,
            DecodeErrorKind::BadLength { length: 3, .. }
        ));
    }

    #[test]
    fn writer_patches_lengths_and_reports_overflow() {
        let mut w = Writer::new();
        let mark = w.length16(0);
        w.bytes(&[7; 5]);
        w.end(mark, "thing");
        assert_eq!(w.finish().unwrap(), [0, 7, 7, 7, 7, 7, 7]);

        let mut w = Writer::new();
        let mark = w.length16(0);
        w.bytes(&vec![0; 70_000]);
        w.end(mark, "big");
        let e = w.finish().unwrap_err();
        assert_eq!((e.what, e.length), ("big", 70_002));
    }
}
