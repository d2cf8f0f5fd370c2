//! IKEv2 payloads (RFC 7296 §3.2-§3.16, RFC 7383 §2.5) and the generic payload chain.
//!
//! ```text
//!                      1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Payload  |C|  RESERVED   |         Payload Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Each payload type lives in its own file and decodes only its body; this module
//! walks the chain of generic headers. An unknown payload with the critical bit set
//! fails the decode (so the caller can answer UNSUPPORTED_CRITICAL_PAYLOAD); without
//! it, the payload is kept as [`UnknownPayload`] and encoded back unchanged.

mod auth;
mod cert;
mod certreq;
mod cp;
mod delete;
mod eap;
mod id;
mod ke;
mod nonce;
mod notify;
mod sa;
mod sk;
mod skf;
mod ts;
mod vendor;

pub use auth::{AuthPayload, DigitalSignature};
pub use cert::CertPayload;
pub use certreq::CertReqPayload;
pub use cp::{CfgAttribute, CpPayload};
pub use delete::DeletePayload;
pub use eap::EapPayload;
pub use id::{IdPayload, Identity};
pub use ke::KePayload;
pub use nonce::NoncePayload;
pub use notify::NotifyPayload;
pub use sa::{AttrValue, Proposal, SaPayload, Transform, TransformAttribute};
pub use sk::SkPayload;
pub use skf::SkfPayload;
pub use ts::{AddrRange, TrafficSelector, TsPayload, TsRange};
pub use vendor::VendorPayload;

use super::enums::PayloadType;
use super::reader::{DecodeError, DecodeErrorKind, Reader, Writer};

/// Length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;
const CRITICAL: u8 = 0x80;

/// One decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Security Association.
    Sa(SaPayload),
    /// Key Exchange.
    Ke(KePayload),
    /// Identification - Initiator.
    IdI(IdPayload),
    /// Identification - Responder.
    IdR(IdPayload),
    /// Certificate.
    Cert(CertPayload),
    /// Certificate Request.
    CertReq(CertReqPayload),
    /// Authentication.
    Auth(AuthPayload),
    /// Nonce.
    Nonce(NoncePayload),
    /// Notify.
    Notify(NotifyPayload),
    /// Delete.
    Delete(DeletePayload),
    /// Vendor ID.
    Vendor(VendorPayload),
    /// Traffic Selector - Initiator.
    TsI(TsPayload),
    /// Traffic Selector - Responder.
    TsR(TsPayload),
    /// Encrypted and Authenticated; always the last payload.
    Sk(SkPayload),
    /// Configuration.
    Cp(CpPayload),
    /// Extensible Authentication.
    Eap(EapPayload),
    /// Encrypted and Authenticated Fragment; always the only payload.
    Skf(SkfPayload),
    /// A payload type this codec does not know, without the critical bit.
    Unknown(UnknownPayload),
}

/// A non-critical payload of an unknown type, kept so it can be logged and re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPayload {
    /// Its payload type number.
    pub payload_type: PayloadType,
    /// Its body, after the generic header.
    pub body: Vec<u8>,
}

impl Payload {
    /// The payload type number this payload is encoded with.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::SA,
            Self::Ke(_) => PayloadType::KE,
            Self::IdI(_) => PayloadType::IDI,
            Self::IdR(_) => PayloadType::IDR,
            Self::Cert(_) => PayloadType::CERT,
            Self::CertReq(_) => PayloadType::CERTREQ,
            Self::Auth(_) => PayloadType::AUTH,
            Self::Nonce(_) => PayloadType::NONCE,
            Self::Notify(_) => PayloadType::NOTIFY,
            Self::Delete(_) => PayloadType::DELETE,
            Self::Vendor(_) => PayloadType::VENDOR_ID,
            Self::TsI(_) => PayloadType::TSI,
            Self::TsR(_) => PayloadType::TSR,
            Self::Sk(_) => PayloadType::SK,
            Self::Cp(_) => PayloadType::CP,
            Self::Eap(_) => PayloadType::EAP,
            Self::Skf(_) => PayloadType::SKF,
            Self::Unknown(u) => u.payload_type,
        }
    }

    /// The Next Payload value the generic header of an SK or SKF payload carries:
    /// the type of the first payload inside it.
    fn inner_first(&self) -> Option<PayloadType> {
        match self {
            Self::Sk(sk) => Some(sk.first_payload),
            Self::Skf(skf) => Some(skf.first_payload),
            _ => None,
        }
    }

    fn encode_body(&self, w: &mut Writer) {
        match self {
            Self::Sa(p) => p.encode(w),
            Self::Ke(p) => p.encode(w),
            Self::IdI(p) | Self::IdR(p) => p.encode(w),
            Self::Cert(p) => p.encode(w),
            Self::CertReq(p) => p.encode(w),
            Self::Auth(p) => p.encode(w),
            Self::Nonce(p) => p.encode(w),
            Self::Notify(p) => p.encode(w),
            Self::Delete(p) => p.encode(w),
            Self::Vendor(p) => p.encode(w),
            Self::TsI(p) | Self::TsR(p) => p.encode(w),
            Self::Sk(p) => p.encode(w),
            Self::Cp(p) => p.encode(w),
            Self::Eap(p) => p.encode(w),
            Self::Skf(p) => p.encode(w),
            Self::Unknown(p) => w.bytes(&p.body),
        }
    }
}

/// A short name for error reports about a payload of type `t`.
fn payload_name(t: PayloadType) -> &'static str {
    match t {
        PayloadType::SA => "SA payload",
        PayloadType::KE => "KE payload",
        PayloadType::IDI => "IDi payload",
        PayloadType::IDR => "IDr payload",
        PayloadType::CERT => "CERT payload",
        PayloadType::CERTREQ => "CERTREQ payload",
        PayloadType::AUTH => "AUTH payload",
        PayloadType::NONCE => "Nonce payload",
        PayloadType::NOTIFY => "Notify payload",
        PayloadType::DELETE => "Delete payload",
        PayloadType::VENDOR_ID => "Vendor ID payload",
        PayloadType::TSI => "TSi payload",
        PayloadType::TSR => "TSr payload",
        PayloadType::SK => "SK payload",
        PayloadType::CP => "CP payload",
        PayloadType::EAP => "EAP payload",
        PayloadType::SKF => "SKF payload",
        _ => "unknown payload",
    }
}

/// Decodes the chain of payloads that starts with type `first` and fills all of `r`.
///
/// An SK or SKF payload ends the chain: its Next Payload names the first payload
/// inside it, and nothing may follow it.
pub fn decode_chain(first: PayloadType, r: &mut Reader<'_>) -> Result<Vec<Payload>, DecodeError> {
    let mut payloads = Vec::new();
    let mut this = first;
    while this != PayloadType::NONE {
        let start = r.offset();
        let what = payload_name(this);
        let next = PayloadType(r.u8(what)?);
        let critical = r.u8(what)? & CRITICAL != 0;
        let length = r.u16(what)?;
        let mut body = r.body_by_length(length, GENERIC_HEADER_LEN, what)?;
        let payload = match this {
            PayloadType::SA => Payload::Sa(SaPayload::decode(&mut body)?),
            PayloadType::KE => Payload::Ke(KePayload::decode(&mut body)?),
            PayloadType::IDI => Payload::IdI(IdPayload::decode(&mut body)?),
            PayloadType::IDR => Payload::IdR(IdPayload::decode(&mut body)?),
            PayloadType::CERT => Payload::Cert(CertPayload::decode(&mut body)?),
            PayloadType::CERTREQ => Payload::CertReq(CertReqPayload::decode(&mut body)?),
            PayloadType::AUTH => Payload::Auth(AuthPayload::decode(&mut body)?),
            PayloadType::NONCE => Payload::Nonce(NoncePayload::decode(&mut body)?),
            PayloadType::NOTIFY => Payload::Notify(NotifyPayload::decode(&mut body)?),
            PayloadType::DELETE => Payload::Delete(DeletePayload::decode(&mut body)?),
            PayloadType::VENDOR_ID => Payload::Vendor(VendorPayload::decode(&mut body)),
            PayloadType::TSI => Payload::TsI(TsPayload::decode(&mut body)?),
            PayloadType::TSR => Payload::TsR(TsPayload::decode(&mut body)?),
            PayloadType::SK => Payload::Sk(SkPayload::decode(next, &mut body)),
            PayloadType::CP => Payload::Cp(CpPayload::decode(&mut body)?),
            PayloadType::EAP => Payload::Eap(EapPayload::decode(&mut body)?),
            PayloadType::SKF => Payload::Skf(SkfPayload::decode(next, &mut body)?),
            unknown if critical => {
                return Err(DecodeError {
                    offset: start,
                    what,
                    kind: DecodeErrorKind::UnsupportedCritical(unknown),
                });
            }
            unknown => Payload::Unknown(UnknownPayload {
                payload_type: unknown,
                body: body.rest().to_vec(),
            }),
        };
        body.finish(what)?;
        let ends_chain = payload.inner_first().is_some();
        payloads.push(payload);
        if ends_chain {
            break;
        }
        this = next;
    }
    r.finish("payload chain")?;
    Ok(payloads)
}

/// The Next Payload value that introduces `payloads`.
pub fn first_type(payloads: &[Payload]) -> PayloadType {
    payloads
        .first()
        .map_or(PayloadType::NONE, Payload::payload_type)
}

/// Encodes `payloads` as a chain, each generic header naming the payload after it.
pub fn encode_chain(payloads: &[Payload], w: &mut Writer) {
    for (i, payload) in payloads.iter().enumerate() {
        let next = payload.inner_first().unwrap_or_else(|| {
            payloads
                .get(i + 1)
                .map_or(PayloadType::NONE, Payload::payload_type)
        });
        let start = w.len();
        w.u8(next.0);
        w.u8(0);
        let mark = w.length16(start);
        payload.encode_body(w);
        w.end(mark, payload_name(payload.payload_type()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CertEncoding, NotifyType};

    fn decode(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, DecodeError> {
        decode_chain(first, &mut Reader::new(bytes))
    }

    #[test]
    fn unknown_noncritical_payload_is_kept_and_reencoded() {
        let bytes = [0, 0, 0, 7, 0xaa, 0xbb, 0xcc];
        let payloads = decode(PayloadType(200), &bytes).unwrap();
        assert_eq!(
            payloads,
            [Payload::Unknown(UnknownPayload {
                payload_type: PayloadType(200),
                body: vec![0xaa, 0xbb, 0xcc]
            })]
        );
        let mut w = Writer::new();
        encode_chain(&payloads, &mut w);
        assert_eq!(w.finish().unwrap(), bytes);
    }

    #[test]
    fn unknown_critical_payload_maps_to_unsupported_critical_payload() {
        let bytes = [0, 0x80, 0, 4];
        let e = decode(PayloadType(200), &bytes).unwrap_err();
        assert_eq!(
            e.kind,
            DecodeErrorKind::UnsupportedCritical(PayloadType(200))
        );
        assert_eq!(
            e.notify(),
            (NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![200])
        );
    }

    #[test]
    fn payload_length_beyond_buffer_is_truncation() {
        let bytes = [0, 0, 0, 9, 1, 2];
        let e = decode(PayloadType::VENDOR_ID, &bytes).unwrap_err();
        assert_eq!(e.what, "Vendor ID payload");
        assert!(matches!(
            e.kind,
            DecodeErrorKind::Truncated { needed: 5, .. }
        ));
    }

    #[test]
    fn bytes_after_last_payload_are_rejected() {
        let bytes = [0, 0, 0, 4, 9];
        let e = decode(PayloadType::VENDOR_ID, &bytes).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Trailing { count: 1 });
    }

    #[test]
    fn sk_payload_must_be_last() {
        // SK whose next payload (IDi) is the inner first type, followed by junk.
        let bytes = [35, 0, 0, 6, 1, 2, 0, 0, 0, 4];
        let e = decode(PayloadType::SK, &bytes).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Trailing { count: 4 });
        let ok = decode(PayloadType::SK, &bytes[..6]).unwrap();
        assert_eq!(
            ok,
            [Payload::Sk(SkPayload {
                first_payload: PayloadType::IDI,
                data: vec![1, 2]
            })]
        );
    }

    /// Every decoded payload type with the smallest body it accepts.
    const MIN_BODIES: [(PayloadType, usize); 17] = [
        (PayloadType::SA, 8),
        (PayloadType::KE, 4),
        (PayloadType::IDI, 4),
        (PayloadType::IDR, 4),
        (PayloadType::CERT, 1),
        (PayloadType::CERTREQ, 1),
        (PayloadType::AUTH, 4),
        (PayloadType::NONCE, 16),
        (PayloadType::NOTIFY, 4),
        (PayloadType::DELETE, 4),
        (PayloadType::VENDOR_ID, 0),
        (PayloadType::TSI, 4),
        (PayloadType::TSR, 4),
        (PayloadType::SK, 0),
        (PayloadType::CP, 4),
        (PayloadType::EAP, 4),
        (PayloadType::SKF, 4),
    ];

    fn with_header(body: &[u8], length: u16) -> Vec<u8> {
        let mut bytes = vec![0, 0];
        bytes.extend(length.to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn every_payload_rejects_bad_lengths_and_short_bodies_by_name() {
        for (t, min) in MIN_BODIES {
            let name = payload_name(t);
            // A length below the generic header's own four octets.
            let e = decode(t, &with_header(&[], 3)).unwrap_err();
            assert!(
                matches!(e.kind, DecodeErrorKind::BadLength { length: 3, .. }),
                "{name}: {e}"
            );
            assert_eq!(e.what, name);
            // A length past the end of the datagram.
            let e = decode(t, &with_header(&[0; 4], 9)).unwrap_err();
            assert!(
                matches!(e.kind, DecodeErrorKind::Truncated { .. }),
                "{name}: {e}"
            );
            // A body one octet shorter than the payload's fixed part.
            if min > 0 {
                let body = vec![0; min - 1];
                let e = decode(t, &with_header(&body, 4 + body.len() as u16));
                assert!(e.is_err(), "{name} accepted a {}-octet body", min - 1);
            }
        }
    }

    #[test]
    fn cert_certreq_and_vendor_keep_their_bytes() {
        let cases = [
            (PayloadType::CERT, vec![4, 0x30, 0x82]),
            (PayloadType::CERTREQ, vec![4, 1, 2, 3]),
            (PayloadType::VENDOR_ID, vec![b'x'; 3]),
        ];
        for (t, body) in cases {
            let bytes = with_header(&body, 4 + body.len() as u16);
            let payloads = decode(t, &bytes).unwrap();
            assert_eq!(payloads[0].payload_type(), t);
            let mut w = Writer::new();
            encode_chain(&payloads, &mut w);
            assert_eq!(w.finish().unwrap(), bytes);
        }
        let cert = decode(PayloadType::CERT, &with_header(&[4, 0x30], 6)).unwrap();
        assert_eq!(
            cert,
            [Payload::Cert(CertPayload {
                encoding: CertEncoding::X509_CERT_SIG,
                data: vec![0x30]
            })]
        );
    }
}
