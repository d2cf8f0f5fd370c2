//! Configuration payload (RFC 7296 §3.15).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   CFG Type    |                    RESERVED                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                   Configuration Attributes                    ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Attribute:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|         Attribute Type      |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                             Value                             ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::{CfgAttrType, CfgType};
use crate::wire::reader::{DecodeError, Reader, Writer};

/// A configuration request, reply, set or acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpPayload {
    /// Request, reply, set or ack.
    pub cfg_type: CfgType,
    /// The attributes; an empty value in a request asks for any value.
    pub attributes: Vec<CfgAttribute>,
}

/// One configuration attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfgAttribute {
    /// The attribute type (15 bits; the reserved bit is ignored).
    pub kind: CfgAttrType,
    /// Its value.
    pub value: Vec<u8>,
}

impl CpPayload {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let cfg_type = CfgType(r.u8("CP payload type")?);
        r.bytes(3, "CP payload")?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let kind = CfgAttrType(r.u16("CP attribute")? & 0x7fff);
            let len = r.u16("CP attribute length")?;
            attributes.push(CfgAttribute {
                kind,
                value: r.bytes(len.into(), "CP attribute value")?.to_vec(),
            });
        }
        Ok(Self {
            cfg_type,
            attributes,
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u8(self.cfg_type.0);
        w.bytes(&[0; 3]);
        for attr in &self.attributes {
            w.u16(attr.kind.0 & 0x7fff);
            w.count16(attr.value.len(), "CP attribute");
            w.bytes(&attr.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_attributes_and_rejects_overrun() {
        let bytes = [1, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0];
        let cp = CpPayload::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(cp.cfg_type, CfgType::CFG_REQUEST);
        assert_eq!(cp.attributes.len(), 2);
        assert_eq!(cp.attributes[1].kind, CfgAttrType::INTERNAL_IP6_ADDRESS);
        assert!(CpPayload::decode(&mut Reader::new(&[1, 0, 0, 0, 0, 1, 0, 4, 10])).is_err());
    }
}
