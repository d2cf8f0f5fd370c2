//! Security Association payload (RFC 7296 §3.3): proposals holding transforms.
//!
//! ```text
//! Proposal substructure:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Last Substruc |   RESERVED    |         Proposal Length       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Proposal Num  |  Protocol ID  |    SPI Size   |Num  Transforms|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                        SPI (variable)                         ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                        <Transforms>                           ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Transform substructure:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Last Substruc |   RESERVED    |        Transform Length       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Transform Type |   RESERVED    |          Transform ID         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                      Transform Attributes                     ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Attribute:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |A|       Attribute Type        |    AF=0  Attribute Length     |
//! |F|                             |    AF=1  Attribute Value      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   AF=0  Attribute Value                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::{ProtocolId, TransformAttrType, TransformType};
use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};

const LAST: u8 = 0;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;
const ATTR_TV: u16 = 0x8000;

/// A list of proposals, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPayload {
    /// The proposals, in the order sent.
    pub proposals: Vec<Proposal>,
}

/// One proposal: a protocol, an SPI and the transforms offered for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number, echoed by the responder to say which one it chose.
    pub number: u8,
    /// IKE, AH or ESP.
    pub protocol: ProtocolId,
    /// The sender's SPI: empty in IKE_SA_INIT, 8 octets for IKE rekeys, 4 for ESP/AH.
    pub spi: Vec<u8>,
    /// The transforms offered; several of one type are alternatives.
    pub transforms: Vec<Transform>,
}

/// One algorithm of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Which kind of algorithm (ENCR, PRF, INTEG, KE, ESN).
    pub kind: TransformType,
    /// The algorithm's ID in that type's registry.
    pub id: u16,
    /// Attributes, in practice only the key length.
    pub attributes: Vec<TransformAttribute>,
}

/// A transform attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformAttribute {
    /// Attribute type (14 is key length).
    pub kind: TransformAttrType,
    /// Its value, fixed (TV) or variable (TLV) format.
    pub value: AttrValue,
}

/// The two attribute formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// Type/value: a two-octet value (AF=1).
    Short(u16),
    /// Type/length/value (AF=0).
    Long(Vec<u8>),
}

impl Transform {
    /// A transform without attributes.
    pub fn new(kind: TransformType, id: u16) -> Self {
        Self {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with a key length attribute (bits).
    pub fn with_key_length(kind: TransformType, id: u16, bits: u16) -> Self {
        Self {
            kind,
            id,
            attributes: vec![TransformAttribute {
                kind: TransformAttrType::KEY_LENGTH,
                value: AttrValue::Short(bits),
            }],
        }
    }

    /// The key length attribute in bits, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            TransformAttribute {
                kind: TransformAttrType::KEY_LENGTH,
                value: AttrValue::Short(bits),
            } => Some(*bits),
            _ => None,
        })
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = TransformType(r.u8("transform")?);
        r.u8("transform")?;
        let id = r.u16("transform")?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let raw_type = r.u16("transform attribute")?;
            let value = if raw_type & ATTR_TV != 0 {
                AttrValue::Short(r.u16("transform attribute")?)
            } else {
                let len = r.u16("transform attribute")?;
                AttrValue::Long(r.bytes(len.into(), "transform attribute")?.to_vec())
            };
            attributes.push(TransformAttribute {
                kind: TransformAttrType(raw_type & !ATTR_TV),
                value,
            });
        }
        Ok(Self {
            kind,
            id,
            attributes,
        })
    }

    fn encode(&self, last: bool, w: &mut Writer) {
        let start = w.len();
        w.u8(if last { LAST } else { MORE_TRANSFORMS });
        w.u8(0);
        let mark = w.length16(start);
        w.u8(self.kind.0);
        w.u8(0);
        w.u16(self.id);
        for attr in &self.attributes {
            match &attr.value {
                AttrValue::Short(v) => {
                    w.u16(attr.kind.0 | ATTR_TV);
                    w.u16(*v);
                }
                AttrValue::Long(v) => {
                    w.u16(attr.kind.0 & !ATTR_TV);
                    w.count16(v.len(), "transform attribute");
                    w.bytes(v);
                }
            }
        }
        w.end(mark, "transform");
    }
}

impl Proposal {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let number = r.u8("proposal")?;
        let protocol = ProtocolId(r.u8("proposal")?);
        let spi_size = r.u8("proposal SPI size")?;
        let count = r.u8("proposal transform count")?;
        let spi = r.bytes(spi_size.into(), "proposal SPI")?.to_vec();
        let mut transforms = Vec::with_capacity(count.into());
        for i in 0..count {
            let at = r.offset();
            let last = r.u8("transform")?;
            let expected = if i + 1 == count {
                LAST
            } else {
                MORE_TRANSFORMS
            };
            if last != expected {
                return Err(bad_value(at, "transform last-substructure", last));
            }
            r.u8("transform")?;
            let length = r.u16("transform length")?;
            let mut body = r.body_by_length(length, 4, "transform")?;
            transforms.push(Transform::decode(&mut body)?);
        }
        r.finish("proposal (transform count)")?;
        Ok(Self {
            number,
            protocol,
            spi,
            transforms,
        })
    }

    fn encode(&self, last: bool, w: &mut Writer) {
        let start = w.len();
        w.u8(if last { LAST } else { MORE_PROPOSALS });
        w.u8(0);
        let mark = w.length16(start);
        w.u8(self.number);
        w.u8(self.protocol.0);
        w.count8(self.spi.len(), "proposal SPI");
        w.count8(self.transforms.len(), "proposal transforms");
        w.bytes(&self.spi);
        for (i, t) in self.transforms.iter().enumerate() {
            t.encode(i + 1 == self.transforms.len(), w);
        }
        w.end(mark, "proposal");
    }
}

impl SaPayload {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut proposals = Vec::new();
        loop {
            let at = r.offset();
            let last = r.u8("proposal")?;
            r.u8("proposal")?;
            let length = r.u16("proposal length")?;
            let mut body = r.body_by_length(length, 4, "proposal")?;
            proposals.push(Proposal::decode(&mut body)?);
            match (last, r.is_empty()) {
                (LAST, true) => break,
                (MORE_PROPOSALS, false) => {}
                // "More" with nothing after it, or "last" with more after it.
                _ => return Err(bad_value(at, "proposal last-substructure", last)),
            }
        }
        Ok(Self { proposals })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        for (i, p) in self.proposals.iter().enumerate() {
            p.encode(i + 1 == self.proposals.len(), w);
        }
    }
}

fn bad_value(offset: usize, what: &'static str, value: u8) -> DecodeError {
    DecodeError {
        offset,
        what,
        kind: DecodeErrorKind::BadValue {
            value: value.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::enums::{EncrId, KeGroup, PrfId};

    fn sample() -> SaPayload {
        SaPayload {
            proposals: vec![
                Proposal {
                    number: 1,
                    protocol: ProtocolId::IKE,
                    spi: vec![],
                    transforms: vec![
                        Transform::with_key_length(TransformType::ENCR, EncrId::AES_GCM_16.0, 128),
                        Transform::new(TransformType::PRF, PrfId::HMAC_SHA2_256.0),
                        Transform::new(TransformType::KE, KeGroup::CURVE25519.0),
                    ],
                },
                Proposal {
                    number: 2,
                    protocol: ProtocolId::ESP,
                    spi: vec![1, 2, 3, 4],
                    transforms: vec![Transform {
                        kind: TransformType(99),
                        id: 7,
                        attributes: vec![TransformAttribute {
                            kind: TransformAttrType(3),
                            value: AttrValue::Long(vec![9, 9, 9]),
                        }],
                    }],
                },
            ],
        }
    }

    fn encode(sa: &SaPayload) -> Vec<u8> {
        let mut w = Writer::new();
        sa.encode(&mut w);
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_with_both_attribute_formats() {
        let bytes = encode(&sample());
        let back = SaPayload::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(back, sample());
        assert_eq!(back.proposals[0].transforms[0].key_length(), Some(128));
    }

    #[test]
    fn rejects_wrong_last_substructure_markers() {
        let mut bytes = encode(&sample());
        bytes[0] = 0; // first proposal claims to be last
        let e = SaPayload::decode(&mut Reader::new(&bytes)).unwrap_err();
        assert_eq!(e.what, "proposal last-substructure");
        let mut bytes = encode(&sample());
        bytes[8] = 0; // first transform claims to be last
        let e = SaPayload::decode(&mut Reader::new(&bytes)).unwrap_err();
        assert_eq!(e.what, "transform last-substructure");
    }

    #[test]
    fn rejects_transform_count_not_matching_content() {
        let mut bytes = encode(&sample());
        bytes[7] = 2; // first proposal says two transforms, has three
        assert!(SaPayload::decode(&mut Reader::new(&bytes)).is_err());
        bytes[7] = 4;
        assert!(SaPayload::decode(&mut Reader::new(&bytes)).is_err());
    }

    #[test]
    fn rejects_truncation_anywhere() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(
                SaPayload::decode(&mut Reader::new(&bytes[..len])).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn rejects_attribute_overrunning_transform() {
        let sa = SaPayload {
            proposals: vec![Proposal {
                number: 1,
                protocol: ProtocolId::IKE,
                spi: vec![],
                transforms: vec![Transform::with_key_length(TransformType::ENCR, 12, 256)],
            }],
        };
        let mut bytes = encode(&sa);
        // Turn the TV attribute into a TLV claiming 256 bytes.
        bytes[16] &= 0x7f;
        let e = SaPayload::decode(&mut Reader::new(&bytes)).unwrap_err();
        assert!(matches!(
            e.kind,
            DecodeErrorKind::Truncated { needed: 256, .. }
        ));
    }
}
