//! `esptun inspect`: every IKE message in a capture, decoded, and with the SA keys
//! decrypted (fragments reassembled) and integrity-checked.
//!
//! Each datagram on UDP 500/4500 becomes one JSON record; the text output is
//! rendered from the same records, so both always show the same facts.

mod describe;
pub mod keylog;
pub mod pcap;
mod render;

pub use keylog::KeyLog;
pub use pcap::{CaptureError, UdpDatagram, udp_datagrams};
pub use render::text;

use crate::crypto::Secret;
use crate::crypto::fragment::Reassembly;
use crate::crypto::sk::SkKey;
use crate::crypto::suite::{Encr, Integ};
use crate::wire::payload::{Payload, SaPayload, decode_chain};
use crate::wire::{ExchangeType, Header, IkeSpi, Message, NON_ESP_MARKER, Reader};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The IKE port (RFC 7296 §2).
const IKE_PORT: u16 = 500;
/// The NAT-T port, shared by IKE after a marker and by ESP (RFC 3948).
const NAT_T_PORT: u16 = 4500;

/// Payloads as the JSON that `inspect --json` prints, for the daemon's verbose log.
pub fn describe_payloads(payloads: &[Payload]) -> Value {
    Value::Array(payloads.iter().map(describe::payload).collect())
}

/// Inspects every datagram of a capture sent to or from the IKE ports, in file order.
pub fn inspect(capture: &[u8], keys: Option<&KeyLog>) -> Result<Vec<Value>, CaptureError> {
    let datagrams = udp_datagrams(capture)?;
    let start = datagrams.first().map_or(0, |d| d.timestamp_ns);
    let mut inspector = Inspector {
        keys,
        ..Inspector::default()
    };
    Ok(datagrams
        .iter()
        .filter_map(|d| inspector.datagram(d, start))
        .collect())
}

/// The protection of one direction of an IKE SA.
type SkSuite = (Encr, Option<Integ>);

/// What the inspector remembers across the messages of a capture.
#[derive(Default)]
struct Inspector<'k> {
    keys: Option<&'k KeyLog>,
    /// Suites seen chosen in IKE_SA_INIT responses, by SPI pair.
    suites: HashMap<(IkeSpi, IkeSpi), SkSuite>,
    /// Fragments collected per message: SPIs, sent by the initiator, message ID.
    fragments: HashMap<(IkeSpi, IkeSpi, bool, u32), Reassembly>,
}

impl Inspector<'_> {
    fn datagram(&mut self, d: &UdpDatagram, start_ns: u64) -> Option<Value> {
        let mut record = json!({
            "frame": d.frame,
            "time": d.timestamp_ns.saturating_sub(start_ns) as f64 / 1e9,
            "src": d.src.to_string(),
            "dst": d.dst.to_string(),
        });
        let ports = [d.src.port(), d.dst.port()];
        let ike = if ports.contains(&NAT_T_PORT) {
            match d.payload.as_slice() {
                [0xff] => {
                    record["protocol"] = "NAT-keepalive".into();
                    return Some(record);
                }
                [m0, m1, m2, m3, ike @ ..] if [*m0, *m1, *m2, *m3] == NON_ESP_MARKER => ike,
                esp => {
                    record["protocol"] = "ESP".into();
                    record["length"] = esp.len().into();
                    match esp {
                        [s0, s1, s2, s3, q0, q1, q2, q3, ..] => {
                            record["spi"] = hex::encode([*s0, *s1, *s2, *s3]).into();
                            record["seq"] = u32::from_be_bytes([*q0, *q1, *q2, *q3]).into();
                        }
                        _ => record["error"] = "shorter than an ESP header".into(),
                    }
                    return Some(record);
                }
            }
        } else if ports.contains(&IKE_PORT) {
            &d.payload
        } else {
            return None;
        };
        record["protocol"] = "IKE".into();
        self.message(ike, &mut record);
        Some(record)
    }

    fn message(&mut self, bytes: &[u8], record: &mut Value) {
        record["length"] = bytes.len().into();
        let message = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                record["error"] = e.to_string().into();
                return;
            }
        };
        let h = &message.header;
        record["exchange"] = h.exchange.to_string().into();
        record["message"] = if h.flags.response() {
            "response"
        } else {
            "request"
        }
        .into();
        record["sender"] = if h.flags.initiator() {
            "initiator"
        } else {
            "responder"
        }
        .into();
        record["message_id"] = h.message_id.into();
        record["spi_i"] = h.spi_i.to_string().into();
        record["spi_r"] = h.spi_r.to_string().into();
        record["summary"] = message.summary().into();
        if h.exchange == ExchangeType::IKE_SA_INIT && h.flags.response() {
            self.learn_suite(h, &message.payloads);
        }
        let payloads = message
            .payloads
            .iter()
            .map(|p| self.payload(h, bytes, p))
            .collect();
        record["payloads"] = Value::Array(payloads);
    }

    fn payload(&mut self, h: &Header, datagram: &[u8], p: &Payload) -> Value {
        let mut v = describe::payload(p);
        let (first_payload, body_len) = match p {
            Payload::Sk(sk) => (sk.first_payload, sk.data.len()),
            Payload::Skf(skf) => (skf.first_payload, skf.data.len()),
            _ => return v,
        };
        let plaintext = match self.open(h, datagram, body_len) {
            Ok(plain) => plain,
            Err(e) => {
                v["error"] = e.into();
                return v;
            }
        };
        let (first_payload, plaintext) = match p {
            Payload::Skf(skf) => {
                let id = (h.spi_i, h.spi_r, h.flags.initiator(), h.message_id);
                match self.fragments.entry(id).or_default().add(skf, plaintext) {
                    Ok(Some(whole)) => {
                        self.fragments.remove(&id);
                        v["reassembled"] = true.into();
                        (whole.first_payload, whole.plaintext)
                    }
                    Ok(None) => {
                        v["integrity"] = "ok".into();
                        return v;
                    }
                    Err(e) => {
                        v["error"] = e.to_string().into();
                        return v;
                    }
                }
            }
            _ => (first_payload, plaintext),
        };
        v["integrity"] = "ok".into();
        match decode_chain(first_payload, &mut Reader::new(&plaintext)) {
            Ok(inner) => {
                v["summary"] = crate::wire::message::summarize(&inner).into();
                v["decrypted"] = describe_payloads(&inner);
            }
            Err(e) => v["error"] = format!("decrypted payloads: {e}").into(),
        }
        v
    }

    fn learn_suite(&mut self, h: &Header, payloads: &[Payload]) {
        let chosen = payloads.iter().find_map(|p| match p {
            Payload::Sa(SaPayload { proposals }) => proposals.first(),
            _ => None,
        });
        if let Some(suite) =
            chosen.and_then(|p| crate::crypto::suite::IkeSuite::from_proposal(p).ok())
        {
            self.suites
                .insert((h.spi_i, h.spi_r), (suite.encr, suite.integ));
        }
    }

    /// Verifies and decrypts the SK or SKF body that ends `datagram`.
    fn open(&mut self, h: &Header, datagram: &[u8], body_len: usize) -> Result<Vec<u8>, String> {
        let keys = self.keys.ok_or("encrypted; no keys given")?;
        let sa = keys
            .ike_sa(h.spi_i, h.spi_r)
            .ok_or("encrypted; the key file has no keys for this IKE SA")?;
        let (sk_e, sk_a) = if h.flags.initiator() {
            (&sa.sk_ei, &sa.sk_ai)
        } else {
            (&sa.sk_er, &sa.sk_ar)
        };
        // A rekeyed IKE SA's suite was chosen inside an encrypted CREATE_CHILD_SA;
        // rather than track that, try every suite the key lengths allow.
        let candidates = match self.suites.get(&(h.spi_i, h.spi_r)) {
            Some(known) => vec![*known],
            None => suites_for_key_lengths(sk_e, sk_a),
        };
        let mut error = format!(
            "no supported suite has {}-byte SK_e and {}-byte SK_a keys",
            sk_e.len(),
            sk_a.len()
        );
        for (encr, integ) in candidates {
            let Ok(key) = SkKey::new(encr, integ, sk_e, sk_a) else {
                continue;
            };
            match key.open(datagram, body_len) {
                Ok(plain) => {
                    self.suites.insert((h.spi_i, h.spi_r), (encr, integ));
                    return Ok(plain);
                }
                Err(e) => error = e.to_string(),
            }
        }
        Err(error)
    }
}

/// The SK suites whose key sizes match SK_e and SK_a.
fn suites_for_key_lengths(sk_e: &Secret, sk_a: &Secret) -> Vec<SkSuite> {
    let integ = [
        Integ::HmacSha1,
        Integ::HmacSha256,
        Integ::HmacSha384,
        Integ::HmacSha512,
    ]
    .into_iter()
    .find(|i| i.key_len() == sk_a.len());
    let encrs = [
        Encr::AesGcm16 { key_len: 16 },
        Encr::AesGcm16 { key_len: 32 },
        Encr::ChaCha20Poly1305,
        Encr::AesCbc { key_len: 16 },
        Encr::AesCbc { key_len: 32 },
    ];
    encrs
        .into_iter()
        .filter(|e| e.key_material_len() == sk_e.len())
        .filter_map(|e| match (e.is_aead(), sk_a.is_empty(), integ) {
            (true, true, _) => Some((e, None)),
            (false, false, Some(i)) => Some((e, Some(i))),
            _ => None,
        })
        .collect()
}
