//! Certificate payload (RFC 7296 §3.6).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Cert Encoding |                                               |
//! +-+-+-+-+-+-+-+-+                                               |
//! ~                       Certificate Data                        ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::CertEncoding;
use crate::wire::reader::{DecodeError, Reader, Writer};

/// One certificate (or CRL, or hash and URL) in some encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPayload {
    /// How `data` is encoded; 4 is a DER X.509 certificate.
    pub encoding: CertEncoding,
    /// The certificate data.
    pub data: Vec<u8>,
}

impl CertPayload {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let encoding = CertEncoding(r.u8("CERT payload encoding")?);
        Ok(Self {
            encoding,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u8(self.encoding.0);
        w.bytes(&self.data);
    }
}
