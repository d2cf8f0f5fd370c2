//! The IKE header (RFC 7296 §3.1).
//!
//! ```text
//!                      1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Initiator's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Responder's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Message ID                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            Length                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::IKE_MAJOR_VERSION;
use super::enums::{ExchangeType, PayloadType};
use super::reader::{DecodeError, DecodeErrorKind, LengthMark, Reader, Writer};
use std::fmt;

/// An IKE SA SPI, chosen by one side; zero means "not yet known".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IkeSpi(pub u64);

impl fmt::Display for IkeSpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for IkeSpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IkeSpi({self})")
    }
}

/// The header flags octet; bits RFC 7296 leaves reserved are kept as received.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// Set by a sender able to speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// Set in responses.
    pub const RESPONSE: u8 = 0x20;

    /// Flags for a message sent by the original initiator (or not), as request or response.
    pub fn new(initiator: bool, response: bool) -> Self {
        let mut v = 0;
        if initiator {
            v |= Self::INITIATOR;
        }
        if response {
            v |= Self::RESPONSE;
        }
        Self(v)
    }

    /// True if the sender is the IKE SA's original initiator.
    pub fn initiator(self) -> bool {
        self.0 & Self::INITIATOR != 0
    }

    /// True if the message is a response.
    pub fn response(self) -> bool {
        self.0 & Self::RESPONSE != 0
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Flags({:#04x}{}{})",
            self.0,
            if self.initiator() { " I" } else { "" },
            if self.response() { " R" } else { "" }
        )
    }
}

/// The semantic fields of an IKE header; next payload and length are derived on encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The initiator's IKE SA SPI.
    pub spi_i: IkeSpi,
    /// The responder's IKE SA SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: IkeSpi,
    /// Minor version; RFC 7296 senders use 0 and receivers ignore it.
    pub minor_version: u8,
    /// The exchange this message belongs to.
    pub exchange: ExchangeType,
    /// Initiator, version and response bits.
    pub flags: Flags,
    /// The message ID that pairs a request with its response.
    pub message_id: u32,
}

impl Header {
    /// Decodes the header of `datagram`, checking its length field against the
    /// datagram's size. Returns the header and the type of the first payload.
    pub fn decode(datagram: &[u8]) -> Result<(Self, PayloadType), DecodeError> {
        let mut r = Reader::new(datagram);
        let spi_i = IkeSpi(r.u64("IKE header")?);
        let spi_r = IkeSpi(r.u64("IKE header")?);
        let next_payload = PayloadType(r.u8("IKE header")?);
        let version = r.u8("IKE header")?;
        let exchange = ExchangeType(r.u8("IKE header")?);
        let flags = Flags(r.u8("IKE header")?);
        let message_id = r.u32("IKE header")?;
        let length = r.u32("IKE header length")? as usize;
        if version >> 4 != IKE_MAJOR_VERSION {
            return Err(DecodeError {
                offset: 17,
                what: "IKE header version",
                kind: DecodeErrorKind::UnsupportedVersion {
                    major: version >> 4,
                },
            });
        }
        if length != datagram.len() {
            return Err(DecodeError {
                offset: 24,
                what: "IKE header length",
                kind: DecodeErrorKind::Mismatch {
                    declared: length,
                    actual: datagram.len(),
                },
            });
        }
        let header = Self {
            spi_i,
            spi_r,
            minor_version: version & 0x0f,
            exchange,
            flags,
            message_id,
        };
        Ok((header, next_payload))
    }

    /// Writes the header at the start of `w`; the returned mark patches the message
    /// length once everything after it is written.
    pub fn encode(&self, next_payload: PayloadType, w: &mut Writer) -> LengthMark {
        w.u64(self.spi_i.0);
        w.u64(self.spi_r.0);
        w.u8(next_payload.0);
        w.u8((IKE_MAJOR_VERSION << 4) | (self.minor_version & 0x0f));
        w.u8(self.exchange.0);
        w.u8(self.flags.0);
        w.u32(self.message_id);
        w.length32(0)
    }

    /// True for requests, false for responses.
    pub fn is_request(&self) -> bool {
        !self.flags.response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let h = Header {
            spi_i: IkeSpi(0x0102030405060708),
            spi_r: IkeSpi(0),
            minor_version: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: Flags::new(true, false),
            message_id: 0,
        };
        let mut w = Writer::new();
        let mark = h.encode(PayloadType::NONE, &mut w);
        w.end(mark, "message");
        w.finish().unwrap()
    }

    #[test]
    fn round_trips() {
        let v = sample();
        let (h, next) = Header::decode(&v).unwrap();
        assert_eq!(next, PayloadType::NONE);
        assert_eq!(h.spi_i, IkeSpi(0x0102030405060708));
        assert!(h.flags.initiator() && h.is_request());
    }

    #[test]
    fn rejects_wrong_major_version() {
        let mut v = sample();
        v[17] = 0x10;
        let e = Header::decode(&v).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::UnsupportedVersion { major: 1 });
        assert_eq!(
            e.notify().0,
            super::super::NotifyType::INVALID_MAJOR_VERSION
        );
    }

    #[test]
    fn rejects_length_not_matching_datagram() {
        let mut v = sample();
        v.push(0);
        assert!(matches!(
            Header::decode(&v).unwrap_err().kind,
            DecodeErrorKind::Mismatch {
                declared: 28,
                actual: 29
            }
        ));
        assert!(Header::decode(&v[..27]).is_err());
    }
}
