//! EAP payload (RFC 7296 §3.16): one EAP message (RFC 3748 §4).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Code      | Identifier    |           Length              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      | Type_Data...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};

/// EAP Request.
pub const EAP_REQUEST: u8 = 1;
/// EAP Response.
pub const EAP_RESPONSE: u8 = 2;

/// An EAP message whose own length field matches the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EapPayload {
    /// The whole EAP message, code through type data.
    pub message: Vec<u8>,
}

impl EapPayload {
    /// EAP code: request, response, success or failure.
    pub fn code(&self) -> u8 {
        self.message[0]
    }

    /// EAP identifier, matching responses to requests.
    pub fn identifier(&self) -> u8 {
        self.message[1]
    }

    /// EAP method type, present in requests and responses only.
    pub fn eap_type(&self) -> Option<u8> {
        match self.code() {
            EAP_REQUEST | EAP_RESPONSE => self.message.get(4).copied(),
            _ => None,
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let actual = r.remaining();
        let mut hdr = r.clone();
        let code = hdr.u8("EAP code")?;
        hdr.u8("EAP identifier")?;
        let declared = usize::from(hdr.u16("EAP length")?);
        let min = if matches!(code, EAP_REQUEST | EAP_RESPONSE) {
            5
        } else {
            4
        };
        if declared != actual || declared < min {
            return Err(DecodeError {
                offset: at + 2,
                what: "EAP length",
                kind: DecodeErrorKind::Mismatch { declared, actual },
            });
        }
        Ok(Self {
            message: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eap_length_must_match_payload() {
        let ok = EapPayload::decode(&mut Reader::new(&[1, 7, 0, 6, 1, b'x'])).unwrap();
        assert_eq!((ok.code(), ok.identifier(), ok.eap_type()), (1, 7, Some(1)));
        assert!(EapPayload::decode(&mut Reader::new(&[1, 7, 0, 9, 1, b'x'])).is_err());
        assert!(EapPayload::decode(&mut Reader::new(&[1, 7, 0, 4])).is_err());
        assert!(EapPayload::decode(&mut Reader::new(&[3, 7, 0, 4])).is_ok());
        assert!(EapPayload::decode(&mut Reader::new(&[3, 7])).is_err());
    }
}
