//! Nonce payload (RFC 7296 §3.9): 16 to 256 octets of random data.

use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};

/// Shortest nonce RFC 7296 §3.9 allows.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce RFC 7296 §3.9 allows.
pub const MAX_NONCE_LEN: usize = 256;

/// A nonce (Ni or Nr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoncePayload {
    /// The nonce bytes.
    pub data: Vec<u8>,
}

impl NoncePayload {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.remaining();
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&len) {
            return Err(r.error(
                "Nonce payload",
                DecodeErrorKind::BadLength {
                    length: len,
                    min: MIN_NONCE_LEN,
                    max: MAX_NONCE_LEN,
                },
            ));
        }
        Ok(Self {
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_rfc_length_bounds() {
        for len in [0, 15, 257] {
            let data = vec![0; len];
            let e = NoncePayload::decode(&mut Reader::new(&data)).unwrap_err();
            assert!(matches!(e.kind, DecodeErrorKind::BadLength { .. }), "{len}");
        }
        for len in [16, 32, 256] {
            let data = vec![0; len];
            assert_eq!(
                NoncePayload::decode(&mut Reader::new(&data))
                    .unwrap()
                    .data
                    .len(),
                len
            );
        }
    }
}
