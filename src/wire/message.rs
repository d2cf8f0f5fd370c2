//! A whole IKE message: header plus payload chain.

use super::IKE_HEADER_LEN;
use super::enums::{NotifyType, PayloadType};
use super::header::Header;
use super::payload::{NotifyPayload, Payload, decode_chain, encode_chain, first_type};
use super::reader::{DecodeError, EncodeError, Reader, Writer};

/// A decoded IKE message; encrypted payloads are still inside their SK/SKF payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The IKE header.
    pub header: Header,
    /// The payloads in wire order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Decodes one IKE message that fills `datagram` exactly (without non-ESP marker).
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let (header, first) = Header::decode(datagram)?;
        let mut r = Reader::at(&datagram[IKE_HEADER_LEN..], IKE_HEADER_LEN);
        let payloads = decode_chain(first, &mut r)?;
        Ok(Self { header, payloads })
    }

    /// Encodes the message, deriving next-payload and length fields.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        let mark = self.header.encode(first_type(&self.payloads), &mut w);
        encode_chain(&self.payloads, &mut w);
        w.end(mark, "IKE message");
        w.finish()
    }

    /// The payload types in order, for one-line logs: `[SA KE No N(NATD_S_IP)]`.
    pub fn summary(&self) -> String {
        summarize(&self.payloads)
    }

    /// The notify payloads of the message.
    pub fn notifies(&self) -> impl Iterator<Item = &NotifyPayload> {
        notifies(&self.payloads)
    }
}

/// The notify payloads among `payloads`.
pub fn notifies(payloads: &[Payload]) -> impl Iterator<Item = &NotifyPayload> {
    payloads.iter().filter_map(|p| match p {
        Payload::Notify(n) => Some(n),
        _ => None,
    })
}

/// The first notify of type `t` among `payloads`.
pub fn find_notify(payloads: &[Payload], t: NotifyType) -> Option<&NotifyPayload> {
    notifies(payloads).find(|n| n.notify_type == t)
}

/// strongSwan-style one-line list of payloads, e.g. `[IDi CERT N(INIT_CONTACT) AUTH]`.
pub fn summarize(payloads: &[Payload]) -> String {
    let parts: Vec<String> = payloads.iter().map(short_name).collect();
    format!("[{}]", parts.join(" "))
}

/// strongSwan-style short name of one payload, e.g. `No` or `N(COOKIE)`.
pub fn short_name(p: &Payload) -> String {
    match p {
        Payload::Notify(n) => format!("N({})", n.notify_type),
        Payload::Skf(f) => format!("EF({}/{})", f.fragment_number, f.total_fragments),
        other => match other.payload_type() {
            PayloadType::SA => "SA".into(),
            PayloadType::KE => "KE".into(),
            PayloadType::IDI => "IDi".into(),
            PayloadType::IDR => "IDr".into(),
            PayloadType::CERT => "CERT".into(),
            PayloadType::CERTREQ => "CERTREQ".into(),
            PayloadType::AUTH => "AUTH".into(),
            PayloadType::NONCE => "No".into(),
            PayloadType::DELETE => "D".into(),
            PayloadType::VENDOR_ID => "V".into(),
            PayloadType::TSI => "TSi".into(),
            PayloadType::TSR => "TSr".into(),
            PayloadType::SK => "SK".into(),
            PayloadType::CP => "CP".into(),
            PayloadType::EAP => "EAP".into(),
            t => format!("UNKNOWN({})", t.0),
        },
    }
}
