//! Authentication payload (RFC 7296 §3.8) and the RFC 7427 signature encoding.
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Auth Method   |                RESERVED                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                      Authentication Data                      ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Authentication Data for method 14 (RFC 7427 §3):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | ASN.1 Length  | AlgorithmIdentifier ASN.1 object              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                         Signature Value                       ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::AuthMethod;
use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};

/// Proof of identity: a MAC over the signed octets, or a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPayload {
    /// How `data` was produced.
    pub method: AuthMethod,
    /// The MAC or signature (for method 14, prefixed by its algorithm).
    pub data: Vec<u8>,
}

/// The parts of RFC 7427 Authentication Data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitalSignature<'a> {
    /// DER AlgorithmIdentifier naming the signature scheme.
    pub algorithm: &'a [u8],
    /// The signature value.
    pub signature: &'a [u8],
}

impl AuthPayload {
    /// An RFC 7427 payload: method 14 with the algorithm identifier in front.
    pub fn digital_signature(algorithm: &[u8], signature: &[u8]) -> Self {
        let mut data = Vec::with_capacity(1 + algorithm.len() + signature.len());
        // RFC 7427 algorithm identifiers are far below 256 octets; a longer one is
        // a programming error that would produce an unverifiable payload anyway.
        data.push(u8::try_from(algorithm.len()).unwrap_or(u8::MAX));
        data.extend_from_slice(algorithm);
        data.extend_from_slice(signature);
        Self {
            method: AuthMethod::DIGITAL_SIGNATURE,
            data,
        }
    }

    /// Splits method-14 data into algorithm and signature.
    pub fn parse_digital_signature(&self) -> Result<DigitalSignature<'_>, DecodeError> {
        let mut r = Reader::new(&self.data);
        let len = r.u8("RFC 7427 ASN.1 length")?;
        if len == 0 {
            return Err(r.error(
                "RFC 7427 ASN.1 length",
                DecodeErrorKind::BadLength {
                    length: 0,
                    min: 1,
                    max: 255,
                },
            ));
        }
        let algorithm = r.bytes(len.into(), "RFC 7427 AlgorithmIdentifier")?;
        Ok(DigitalSignature {
            algorithm,
            signature: r.rest(),
        })
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let method = AuthMethod(r.u8("AUTH payload method")?);
        r.bytes(3, "AUTH payload")?;
        Ok(Self {
            method,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u8(self.method.0);
        w.bytes(&[0; 3]);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digital_signature_splits_and_joins() {
        let alg = [0x30, 0x0a, 6, 8, 0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2];
        let p = AuthPayload::digital_signature(&alg, &[1, 2, 3]);
        let ds = p.parse_digital_signature().unwrap();
        assert_eq!(ds.algorithm, alg);
        assert_eq!(ds.signature, [1, 2, 3]);
    }

    #[test]
    fn digital_signature_with_overlong_algorithm_is_rejected() {
        let p = AuthPayload {
            method: AuthMethod::DIGITAL_SIGNATURE,
            data: vec![20, 1, 2],
        };
        assert!(p.parse_digital_signature().is_err());
    }
}
