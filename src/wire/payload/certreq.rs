//! Certificate Request payload (RFC 7296 §3.7).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Cert Encoding |                                               |
//! +-+-+-+-+-+-+-+-+                                               |
//! ~                    Certification Authority                    ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::CertEncoding;
use crate::wire::reader::{DecodeError, Reader, Writer};

/// Length of one trust-anchor hash: SHA-1 of the CA's SubjectPublicKeyInfo.
pub const CA_HASH_LEN: usize = 20;

/// A request for certificates issued under some trust anchors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertReqPayload {
    /// The encoding of the requested certificates.
    pub encoding: CertEncoding,
    /// For X.509, concatenated SHA-1 hashes of trusted CA public keys.
    pub authorities: Vec<u8>,
}

impl CertReqPayload {
    /// The whole CA hashes in the request; a ragged tail is ignored.
    pub fn ca_hashes(&self) -> impl Iterator<Item = &[u8]> {
        self.authorities.chunks_exact(CA_HASH_LEN)
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let encoding = CertEncoding(r.u8("CERTREQ payload encoding")?);
        Ok(Self {
            encoding,
            authorities: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u8(self.encoding.0);
        w.bytes(&self.authorities);
    }
}
