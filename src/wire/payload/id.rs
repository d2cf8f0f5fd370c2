//! Identification payloads IDi and IDr (RFC 7296 §3.5, RFC 7619 for ID_NULL).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   ID Type     |                 RESERVED                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                   Identification Data                         ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::IdType;
use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An identity as carried in IDi/IDr.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_FQDN: an ASCII domain name.
    Fqdn(String),
    /// ID_RFC822_ADDR: an ASCII e-mail address.
    Rfc822(String),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_DER_ASN1_DN: a DER X.500 distinguished name.
    DerDn(Vec<u8>),
    /// ID_DER_ASN1_GN: a DER GeneralName.
    DerGn(Vec<u8>),
    /// ID_KEY_ID: opaque bytes.
    KeyId(Vec<u8>),
    /// ID_NULL (RFC 7619): no identity.
    Null,
    /// Any other ID type, kept as received.
    Other {
        /// The ID type number.
        id_type: IdType,
        /// The identification data.
        data: Vec<u8>,
    },
}

/// The payload body of IDi or IDr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPayload {
    /// The identity.
    pub id: Identity,
}

impl Identity {
    /// The ID type this identity is encoded with.
    pub fn id_type(&self) -> IdType {
        match self {
            Self::Ipv4(_) => IdType::IPV4_ADDR,
            Self::Fqdn(_) => IdType::FQDN,
            Self::Rfc822(_) => IdType::RFC822_ADDR,
            Self::Ipv6(_) => IdType::IPV6_ADDR,
            Self::DerDn(_) => IdType::DER_ASN1_DN,
            Self::DerGn(_) => IdType::DER_ASN1_GN,
            Self::KeyId(_) => IdType::KEY_ID,
            Self::Null => IdType::NULL,
            Self::Other { id_type, .. } => *id_type,
        }
    }

    /// The identification data as sent on the wire.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Self::Ipv4(a) => a.octets().to_vec(),
            Self::Ipv6(a) => a.octets().to_vec(),
            Self::Fqdn(s) | Self::Rfc822(s) => s.as_bytes().to_vec(),
            Self::DerDn(d) | Self::DerGn(d) | Self::KeyId(d) | Self::Other { data: d, .. } => {
                d.clone()
            }
            Self::Null => Vec::new(),
        }
    }

    fn decode(id_type: IdType, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let data = r.rest();
        let wrong_len = |expected: usize| DecodeError {
            offset: at,
            what: "ID payload address",
            kind: DecodeErrorKind::Mismatch {
                declared: expected,
                actual: data.len(),
            },
        };
        // §3.5: FQDN and RFC822 identities are ASCII without terminators.
        let ascii = || match std::str::from_utf8(data) {
            Ok(s) if s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => Ok(s.to_owned()),
            _ => Err(DecodeError {
                offset: at,
                what: "ID payload string",
                kind: DecodeErrorKind::BadValue {
                    value: id_type.0.into(),
                },
            }),
        };
        Ok(match id_type {
            IdType::IPV4_ADDR => {
                Self::Ipv4(<[u8; 4]>::try_from(data).map_err(|_| wrong_len(4))?.into())
            }
            IdType::IPV6_ADDR => Self::Ipv6(
                <[u8; 16]>::try_from(data)
                    .map_err(|_| wrong_len(16))?
                    .into(),
            ),
            IdType::FQDN => Self::Fqdn(ascii()?),
            IdType::RFC822_ADDR => Self::Rfc822(ascii()?),
            IdType::DER_ASN1_DN => Self::DerDn(data.to_vec()),
            IdType::DER_ASN1_GN => Self::DerGn(data.to_vec()),
            IdType::KEY_ID => Self::KeyId(data.to_vec()),
            IdType::NULL if data.is_empty() => Self::Null,
            IdType::NULL => return Err(wrong_len(0)),
            id_type => Self::Other {
                id_type,
                data: data.to_vec(),
            },
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(a) => a.fmt(f),
            Self::Ipv6(a) => a.fmt(f),
            Self::Fqdn(s) | Self::Rfc822(s) => f.write_str(s),
            Self::DerDn(d) => {
                match <x509_parser::x509::X509Name as x509_parser::prelude::FromDer<_>>::from_der(d)
                {
                    Ok((_, name)) => name.fmt(f),
                    Err(_) => write!(f, "DN:{}", hex::encode(d)),
                }
            }
            Self::DerGn(d) => write!(f, "GN:{}", hex::encode(d)),
            Self::KeyId(d) => write!(f, "KEYID:{}", hex::encode(d)),
            Self::Null => f.write_str("(null)"),
            Self::Other { id_type, data } => write!(f, "{id_type}:{}", hex::encode(data)),
        }
    }
}

impl IdPayload {
    /// The payload body (ID type, reserved, data): "RestOfIDPayload" in the
    /// AUTH computation of RFC 7296 §2.15.
    pub fn body(&self) -> Vec<u8> {
        let mut body = vec![self.id.id_type().0, 0, 0, 0];
        body.extend_from_slice(&self.id.data());
        body
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id_type = IdType(r.u8("ID payload type")?);
        r.bytes(3, "ID payload")?;
        Ok(Self {
            id: Identity::decode(id_type, r)?,
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.body());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Identity, DecodeError> {
        IdPayload::decode(&mut Reader::new(bytes)).map(|p| p.id)
    }

    #[test]
    fn decodes_every_id_type() {
        assert_eq!(
            decode(&[1, 0, 0, 0, 192, 0, 2, 1]).unwrap(),
            Identity::Ipv4([192, 0, 2, 1].into())
        );
        assert_eq!(
            decode(b"\x02\0\0\0left.example").unwrap(),
            Identity::Fqdn("left.example".into())
        );
        assert_eq!(
            decode(b"\x03\0\0\0a@b.example").unwrap(),
            Identity::Rfc822("a@b.example".into())
        );
        let mut v6 = vec![5, 0, 0, 0];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(decode(&v6).unwrap(), Identity::Ipv6(Ipv6Addr::LOCALHOST));
        assert_eq!(
            decode(&[9, 0, 0, 0, 0x30, 0]).unwrap(),
            Identity::DerDn(vec![0x30, 0])
        );
        assert_eq!(
            decode(&[10, 0, 0, 0, 0x82, 0]).unwrap(),
            Identity::DerGn(vec![0x82, 0])
        );
        assert_eq!(decode(&[11, 0, 0, 0, 7]).unwrap(), Identity::KeyId(vec![7]));
        assert_eq!(decode(&[13, 0, 0, 0]).unwrap(), Identity::Null);
        assert_eq!(
            decode(&[12, 0, 0, 0, 1]).unwrap(),
            Identity::Other {
                id_type: IdType::FC_NAME,
                data: vec![1]
            }
        );
    }

    #[test]
    fn rejects_malformed_identities() {
        assert!(decode(&[1, 0, 0, 0, 192, 0, 2]).is_err());
        assert!(decode(&[5, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(decode(b"\x02\0\0\0bad\0name").is_err());
        assert!(decode(&[2, 0, 0, 0, 0xc3, 0xa9]).is_err());
        assert!(decode(&[13, 0, 0, 0, 1]).is_err());
        assert!(decode(&[2, 0, 0]).is_err());
    }

    #[test]
    fn body_is_rest_of_id_payload() {
        let p = IdPayload {
            id: Identity::Fqdn("x.example".into()),
        };
        assert_eq!(p.body(), b"\x02\0\0\0x.example");
    }
}
