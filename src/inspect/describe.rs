//! Payloads described as JSON values: the one model both the text and the JSON
//! output of `inspect` are rendered from.

use crate::auth::signature::SignatureScheme;
use crate::wire::payload::{
    CertReqPayload, CpPayload, EapPayload, Identity, NotifyPayload, Payload, Proposal,
    TrafficSelector, Transform,
};
use crate::wire::{
    AuthMethod, CertEncoding, CfgAttrType, EncrId, EsnId, HashAlgorithm, IntegId, KeGroup,
    NotifyType, PrfId, ProtocolId, TransformType,
};
use serde_json::{Map, Value, json};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest byte string shown in full; longer ones are cut, with their length given.
const MAX_HEX_BYTES: usize = 32;

/// Hex of `bytes`, shortened to a prefix and `…` past [`MAX_HEX_BYTES`].
pub(super) fn short_hex(bytes: &[u8]) -> String {
    if bytes.len() <= MAX_HEX_BYTES {
        hex::encode(bytes)
    } else {
        format!("{}…", hex::encode(&bytes[..MAX_HEX_BYTES]))
    }
}

/// Describes one payload, headed by its strongSwan-style short name.
pub(super) fn payload(p: &Payload) -> Value {
    let mut out = Map::new();
    // Notify and SKF details are fields of their own, not part of the head.
    let head = match p {
        Payload::Notify(_) => "N".to_owned(),
        Payload::Skf(_) => "SKF".to_owned(),
        other => crate::wire::message::short_name(other),
    };
    out.insert("payload".into(), head.into());
    let body = match p {
        Payload::Sa(sa) => {
            json!({ "proposals": sa.proposals.iter().map(proposal).collect::<Vec<_>>() })
        }
        Payload::Ke(ke) => {
            json!({ "group": ke.group.to_string(), "length": ke.data.len(), "data": short_hex(&ke.data) })
        }
        Payload::IdI(id) | Payload::IdR(id) => identity(&id.id),
        Payload::Cert(c) => {
            let mut v = json!({ "encoding": c.encoding.to_string(), "length": c.data.len() });
            if c.encoding == CertEncoding::X509_CERT_SIG {
                merge(&mut v, certificate(&c.data));
            }
            v
        }
        Payload::CertReq(c) => cert_req(c),
        Payload::Auth(a) => {
            let mut v = json!({ "method": a.method.to_string(), "length": a.data.len() });
            if a.method == AuthMethod::DIGITAL_SIGNATURE {
                let scheme = a
                    .parse_digital_signature()
                    .map_err(|e| e.to_string())
                    .and_then(|ds| {
                        SignatureScheme::from_algorithm_identifier(ds.algorithm)
                            .map_err(|e| e.to_string())
                    });
                v["signature"] = match scheme {
                    Ok(s) => s.to_string().into(),
                    Err(e) => format!("unreadable: {e}").into(),
                };
            }
            v
        }
        Payload::Nonce(n) => json!({ "length": n.data.len(), "data": short_hex(&n.data) }),
        Payload::Notify(n) => notify(n),
        Payload::Delete(d) => json!({
            "protocol": d.protocol.to_string(),
            "spis": d.spis.iter().map(hex::encode).collect::<Vec<_>>(),
        }),
        Payload::Vendor(v) => vendor(&v.id),
        Payload::TsI(ts) | Payload::TsR(ts) => {
            json!({ "selectors": ts.selectors.iter().map(selector).collect::<Vec<_>>() })
        }
        Payload::Cp(cp) => config(cp),
        Payload::Eap(eap) => eap_message(eap),
        Payload::Sk(sk) => json!({ "next": sk.first_payload.to_string(), "length": sk.data.len() }),
        Payload::Skf(f) => json!({
            "fragment": f.fragment_number,
            "of": f.total_fragments,
            "next": f.first_payload.to_string(),
            "length": f.data.len(),
        }),
        Payload::Unknown(u) => json!({
            "type": u.payload_type.0,
            "length": u.body.len(),
            "data": short_hex(&u.body),
        }),
    };
    if let Value::Object(fields) = body {
        out.extend(fields);
    }
    Value::Object(out)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

fn proposal(p: &Proposal) -> Value {
    let mut v = json!({ "number": p.number, "protocol": p.protocol.to_string() });
    if !p.spi.is_empty() {
        v["spi"] = hex::encode(&p.spi).into();
    }
    v["transforms"] = p.transforms.iter().map(transform).collect();
    v
}

/// A transform as strongSwan-ish text, e.g. `ENCR_AES_GCM_16/128`.
fn transform(t: &Transform) -> Value {
    let name = match t.kind {
        TransformType::ENCR => EncrId(t.id).to_string(),
        TransformType::PRF => PrfId(t.id).to_string(),
        TransformType::INTEG => IntegId(t.id).to_string(),
        TransformType::KE => KeGroup(t.id).to_string(),
        TransformType::ESN => EsnId(t.id).to_string(),
        other => format!("{other}:{}", t.id),
    };
    match t.key_length() {
        Some(bits) => format!("{name}/{bits}").into(),
        None => name.into(),
    }
}

fn identity(id: &Identity) -> Value {
    json!({ "type": id.id_type().to_string(), "id": id.to_string() })
}

/// The fields of an X.509 certificate a reader of a capture cares about.
fn certificate(der: &[u8]) -> Value {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let mut v = json!({
                "subject": cert.subject().to_string(),
                "issuer": cert.issuer().to_string(),
                "not_before": cert.validity().not_before.to_string(),
                "not_after": cert.validity().not_after.to_string(),
            });
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                v["san"] = san
                    .value
                    .general_names
                    .iter()
                    .map(|n| Value::from(n.to_string()))
                    .collect();
            }
            v
        }
        Err(e) => json!({ "error": format!("not an X.509 certificate: {e}") }),
    }
}

fn cert_req(c: &CertReqPayload) -> Value {
    let mut v = json!({ "encoding": c.encoding.to_string() });
    if c.encoding == CertEncoding::X509_CERT_SIG && c.authorities.len().is_multiple_of(20) {
        v["ca_key_hashes"] = c.ca_hashes().map(|h| Value::from(hex::encode(h))).collect();
    } else {
        v["data"] = short_hex(&c.authorities).into();
    }
    v
}

fn notify(n: &NotifyPayload) -> Value {
    let mut v = json!({ "type": n.notify_type.to_string() });
    if n.protocol != ProtocolId(0) {
        v["protocol"] = n.protocol.to_string().into();
    }
    if !n.spi.is_empty() {
        v["spi"] = hex::encode(&n.spi).into();
    }
    let u16s = || {
        n.data
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    };
    match n.notify_type {
        _ if n.data.is_empty() => {}
        NotifyType::SIGNATURE_HASH_ALGORITHMS if n.data.len().is_multiple_of(2) => {
            v["hashes"] = u16s()
                .map(|h| Value::from(HashAlgorithm(h).to_string()))
                .collect();
        }
        NotifyType::INVALID_KE_PAYLOAD if n.data.len() == 2 => {
            v["group"] = u16s()
                .map(|g| KeGroup(g).to_string())
                .collect::<String>()
                .into();
        }
        _ => v["data"] = short_hex(&n.data).into(),
    }
    v
}

fn vendor(id: &[u8]) -> Value {
    let mut v = json!({ "id": short_hex(id) });
    if !id.is_empty() && id.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        v["text"] = String::from_utf8_lossy(id).into();
    }
    v
}

fn selector(ts: &TrafficSelector) -> Value {
    match ts {
        TrafficSelector::Range(r) => {
            let mut v = json!({ "addresses": r.addrs.to_string() });
            if r.ip_protocol != 0 {
                v["protocol"] = r.ip_protocol.into();
            }
            if (r.start_port, r.end_port) != (0, u16::MAX) {
                v["ports"] = format!("{}-{}", r.start_port, r.end_port).into();
            }
            v
        }
        TrafficSelector::Other { ts_type, body, .. } => {
            json!({ "type": ts_type.to_string(), "data": short_hex(body) })
        }
    }
}

fn config(cp: &CpPayload) -> Value {
    let attrs: Vec<Value> = cp
        .attributes
        .iter()
        .map(|a| {
            let value = match (a.kind, a.value.len()) {
                (_, 0) => String::new(),
                (
                    CfgAttrType::INTERNAL_IP4_ADDRESS
                    | CfgAttrType::INTERNAL_IP4_NETMASK
                    | CfgAttrType::INTERNAL_IP4_DNS
                    | CfgAttrType::INTERNAL_IP4_NBNS
                    | CfgAttrType::INTERNAL_IP4_DHCP,
                    4,
                ) => Ipv4Addr::from(<[u8; 4]>::try_from(&a.value[..]).unwrap_or_default())
                    .to_string(),
                (CfgAttrType::INTERNAL_IP4_SUBNET, 8) => {
                    let ip = |at: usize| {
                        Ipv4Addr::new(
                            a.value[at],
                            a.value[at + 1],
                            a.value[at + 2],
                            a.value[at + 3],
                        )
                    };
                    format!("{}/{}", ip(0), ip(4))
                }
                (CfgAttrType::INTERNAL_IP6_ADDRESS | CfgAttrType::INTERNAL_IP6_SUBNET, 17) => {
                    let addr = <[u8; 16]>::try_from(&a.value[..16]).unwrap_or_default();
                    format!("{}/{}", Ipv6Addr::from(addr), a.value[16])
                }
                (CfgAttrType::INTERNAL_IP6_DNS | CfgAttrType::INTERNAL_IP6_DHCP, 16) => {
                    Ipv6Addr::from(<[u8; 16]>::try_from(&a.value[..]).unwrap_or_default())
                        .to_string()
                }
                _ => short_hex(&a.value),
            };
            if value.is_empty() {
                a.kind.to_string().into()
            } else {
                format!("{}={value}", a.kind).into()
            }
        })
        .collect();
    json!({ "type": cp.cfg_type.to_string(), "attributes": attrs })
}

fn eap_message(eap: &EapPayload) -> Value {
    let code = match eap.code() {
        1 => "request".to_owned(),
        2 => "response".to_owned(),
        3 => "success".to_owned(),
        4 => "failure".to_owned(),
        other => format!("code {other}"),
    };
    let mut v =
        json!({ "code": code, "identifier": eap.identifier(), "length": eap.message.len() });
    if let Some(t) = eap.eap_type() {
        v["eap_type"] = t.into();
    }
    v
}
