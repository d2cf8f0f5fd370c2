//! Encrypted and Authenticated Fragment payload (RFC 7383 §2.5).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Payload  |C|  RESERVED   |         Payload Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Fragment Number        |        Total Fragments        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Initialization Vector                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                      Encrypted content                        ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                    Integrity Checksum Data                    ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::PayloadType;
use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};

/// One fragment of an encrypted message, still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkfPayload {
    /// In fragment 1, the type of the first inner payload; zero in the others.
    pub first_payload: PayloadType,
    /// This fragment's number, from 1.
    pub fragment_number: u16,
    /// How many fragments the message was split into.
    pub total_fragments: u16,
    /// IV, ciphertext and ICV.
    pub data: Vec<u8>,
}

impl SkfPayload {
    pub(super) fn decode(
        first_payload: PayloadType,
        r: &mut Reader<'_>,
    ) -> Result<Self, DecodeError> {
        let at = r.offset();
        let fragment_number = r.u16("SKF fragment number")?;
        let total_fragments = r.u16("SKF total fragments")?;
        // §2.6: number 0, total 0, or number above total make the fragment invalid.
        if fragment_number == 0 || fragment_number > total_fragments {
            return Err(DecodeError {
                offset: at,
                what: "SKF fragment number",
                kind: DecodeErrorKind::BadValue {
                    value: fragment_number.into(),
                },
            });
        }
        Ok(Self {
            first_payload,
            fragment_number,
            total_fragments,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u16(self.fragment_number);
        w.u16(self.total_fragments);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_impossible_fragment_numbers() {
        for bytes in [[0, 0, 0, 1], [0, 2, 0, 1], [0, 1, 0, 0]] {
            assert!(SkfPayload::decode(PayloadType::NONE, &mut Reader::new(&bytes)).is_err());
        }
        let f = SkfPayload::decode(PayloadType::IDI, &mut Reader::new(&[0, 2, 0, 3, 9])).unwrap();
        assert_eq!(
            (f.fragment_number, f.total_fragments, f.data.as_slice()),
            (2, 3, &[9][..])
        );
    }
}
