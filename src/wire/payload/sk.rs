//! Encrypted and Authenticated payload (RFC 7296 §3.14, RFC 5282 for AEAD).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Payload  |C|  RESERVED   |         Payload Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Initialization Vector                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                    Encrypted IKE Payloads                     ~
//! +               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               |             Padding (0-255 octets)            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                               |  Pad Length   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                    Integrity Checksum Data                    ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The codec keeps IV, ciphertext and ICV as one opaque block; `crypto::sk` splits
//! and opens it, since only the negotiated suite knows the IV and ICV sizes.

use crate::wire::enums::PayloadType;
use crate::wire::reader::{Reader, Writer};

/// The encrypted payloads of a message, still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkPayload {
    /// The type of the first payload inside (the SK header's Next Payload).
    pub first_payload: PayloadType,
    /// IV, ciphertext (with padding and pad length) and ICV.
    pub data: Vec<u8>,
}

impl SkPayload {
    pub(super) fn decode(first_payload: PayloadType, r: &mut Reader<'_>) -> Self {
        Self {
            first_payload,
            data: r.rest().to_vec(),
        }
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.data);
    }
}
