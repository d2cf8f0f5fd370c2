//! Golden tests against real strongSwan 5.9.8 captures (tests/vectors/README.md):
//! the codec reproduces every message byte for byte, key derivation reproduces
//! every key strongSwan logged, every SK payload opens with the keys we derive,
//! and every AUTH payload verifies against the certificates that signed it.

use esptun::auth::{self, Credential, signature::PublicKey};
use esptun::crypto::Secret;
use esptun::crypto::keys::{ChildKeys, IkeKeys, rekey_skeyseed, skeyseed};
use esptun::crypto::sk::SkKey;
use esptun::crypto::suite::{Encr, IkeSuite, Integ};
use esptun::inspect::keylog::{ChildSaKeys, IkeSaKeys};
use esptun::inspect::{KeyLog, udp_datagrams};
use esptun::wire::payload::{IdPayload, Payload, Proposal, decode_chain, encode_chain};
use esptun::wire::{
    EncrId, ExchangeType, IkeSpi, IntegId, Message, NON_ESP_MARKER, NotifyType, ProtocolId, Reader,
    TransformType, Writer,
};
use std::path::PathBuf;

const PROFILES: [&str; 3] = ["gcm", "gcm-pfs", "cbc"];

fn vector_path(profile: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(profile)
        .join(file)
}

/// One IKE message of a capture: its bytes (after any non-ESP marker), decoded.
struct Captured {
    frame: usize,
    bytes: Vec<u8>,
    message: Message,
}

fn ike_messages(profile: &str) -> Vec<Captured> {
    let capture = std::fs::read(vector_path(profile, "capture.pcap")).unwrap();
    udp_datagrams(&capture)
        .unwrap()
        .into_iter()
        .filter_map(|d| {
            let bytes = match (d.src.port(), d.payload.strip_prefix(&NON_ESP_MARKER)) {
                (500, _) => d.payload,
                (4500, Some(ike)) => ike.to_vec(),
                _ => return None, // ESP
            };
            let message = Message::decode(&bytes)
                .unwrap_or_else(|e| panic!("{profile} frame {}: {e}", d.frame));
            Some(Captured {
                frame: d.frame,
                bytes,
                message,
            })
        })
        .collect()
}

fn key_log(profile: &str) -> KeyLog {
    let path = vector_path(profile, "keys.json");
    KeyLog::parse(
        &path.display().to_string(),
        &std::fs::read_to_string(&path).unwrap(),
    )
    .unwrap()
}

fn nonce(payloads: &[Payload]) -> Vec<u8> {
    payloads
        .iter()
        .find_map(|p| match p {
            Payload::Nonce(n) => Some(n.data.clone()),
            _ => None,
        })
        .expect("a Nonce payload")
}

fn first_proposal(payloads: &[Payload]) -> Option<&Proposal> {
    payloads.iter().find_map(|p| match p {
        Payload::Sa(sa) => sa.proposals.first(),
        _ => None,
    })
}

fn ke_data(payloads: &[Payload]) -> Option<&[u8]> {
    payloads.iter().find_map(|p| match p {
        Payload::Ke(ke) => Some(&ke.data[..]),
        _ => None,
    })
}

/// An IKE SA as the test reconstructs it from the capture and g^ir alone.
struct IkeSa {
    spi_i: IkeSpi,
    spi_r: IkeSpi,
    suite: IkeSuite,
    keys: IkeKeys,
}

impl IkeSa {
    fn derive(
        suite: IkeSuite,
        skeyseed: &Secret,
        ni: &[u8],
        nr: &[u8],
        spi_i: IkeSpi,
        spi_r: IkeSpi,
    ) -> Self {
        let keys = IkeKeys::derive(&suite, skeyseed, ni, nr, spi_i, spi_r).unwrap();
        Self {
            spi_i,
            spi_r,
            suite,
            keys,
        }
    }

    /// Opens the SK payload of a message of this SA with the keys derived here.
    fn open(&self, m: &Captured) -> Vec<Payload> {
        let from_initiator = m.message.header.flags.initiator();
        let (sk_e, sk_a) = if from_initiator {
            (&self.keys.sk_ei, &self.keys.sk_ai)
        } else {
            (&self.keys.sk_er, &self.keys.sk_ar)
        };
        let key = SkKey::new(self.suite.encr, self.suite.integ, sk_e, sk_a).unwrap();
        let Some(Payload::Sk(sk)) = m.message.payloads.last() else {
            panic!(
                "frame {}: no SK payload in {}",
                m.frame,
                m.message.summary()
            );
        };
        let plain = key
            .open(&m.bytes, sk.data.len())
            .unwrap_or_else(|e| panic!("frame {}: {e}", m.frame));
        let inner = decode_chain(sk.first_payload, &mut Reader::new(&plain))
            .unwrap_or_else(|e| panic!("frame {}: {e}", m.frame));
        // The inner chain re-encodes to exactly the decrypted bytes.
        let mut w = Writer::new();
        encode_chain(&inner, &mut w);
        assert_eq!(
            w.finish().unwrap(),
            plain,
            "frame {}: inner re-encoding",
            m.frame
        );
        inner
    }

    fn assert_matches(&self, logged: &IkeSaKeys, skeyseed_logged: &Secret, skeyseed: &Secret) {
        assert_eq!((self.spi_i, self.spi_r), (logged.spi_i, logged.spi_r));
        assert_eq!(skeyseed, skeyseed_logged, "SKEYSEED");
        let k = &self.keys;
        assert_eq!(k.sk_d, logged.sk_d, "SK_d");
        assert_eq!(k.sk_ai, logged.sk_ai, "SK_ai");
        assert_eq!(k.sk_ar, logged.sk_ar, "SK_ar");
        assert_eq!(k.sk_ei, logged.sk_ei, "SK_ei");
        assert_eq!(k.sk_er, logged.sk_er, "SK_er");
        assert_eq!(k.sk_pi, logged.sk_pi, "SK_pi");
        assert_eq!(k.sk_pr, logged.sk_pr, "SK_pr");
    }
}

/// The ESP algorithms of a chosen Child SA proposal.
fn esp_suite(p: &Proposal) -> (Encr, Option<Integ>) {
    let t = |kind| p.transforms.iter().find(|t| t.kind == kind);
    let encr = t(TransformType::ENCR).unwrap();
    let encr = Encr::from_transform(EncrId(encr.id), encr.key_length()).unwrap();
    let integ = t(TransformType::INTEG).and_then(|t| Integ::from_id(IntegId(t.id)));
    (encr, integ)
}

fn esp_spi(p: &Proposal) -> u32 {
    u32::from_be_bytes(p.spi[..].try_into().unwrap())
}

/// Checks a Child SA's KEYMAT and SPIs against the log; `request`/`response` are
/// the (decrypted) payloads of the exchange that created it.
fn assert_child(
    ike: &IkeSa,
    logged: &ChildSaKeys,
    nonces: (&[u8], &[u8]),
    request: &[Payload],
    response: &[Payload],
) {
    let chosen = first_proposal(response).unwrap();
    assert_eq!(chosen.protocol, ProtocolId::ESP);
    let (encr, integ) = esp_suite(chosen);
    let pfs = (!logged.pfs_g_ir.is_empty()).then_some(&logged.pfs_g_ir);
    assert_eq!(
        pfs.is_some(),
        ke_data(response).is_some(),
        "PFS iff a KE payload"
    );
    let keys = ChildKeys::derive(
        ike.suite.prf,
        &ike.keys.sk_d,
        encr,
        integ,
        pfs,
        nonces.0,
        nonces.1,
    )
    .unwrap();
    for (what, ours, expected) in [
        (
            "ESP encryption key i->r",
            &keys.encr_i,
            &logged.encryption_initiator,
        ),
        (
            "ESP encryption key r->i",
            &keys.encr_r,
            &logged.encryption_responder,
        ),
        (
            "ESP integrity key i->r",
            &keys.integ_i,
            &logged.integrity_initiator,
        ),
        (
            "ESP integrity key r->i",
            &keys.integ_r,
            &logged.integrity_responder,
        ),
    ] {
        assert_eq!(ours, expected, "{what}");
    }
    // Each side names the SPI it receives on: the responder's is left-to-right.
    let offered = request
        .iter()
        .find_map(|p| match p {
            Payload::Sa(sa) => sa.proposals.iter().find(|p| p.number == chosen.number),
            _ => None,
        })
        .unwrap();
    assert_eq!(esp_spi(chosen), logged.spi_left_to_right);
    assert_eq!(esp_spi(offered), logged.spi_right_to_left);
}

fn pem_certificate(profile: &str, name: &str) -> Vec<u8> {
    let pem = std::fs::read(vector_path(profile, &format!("pki/{name}.crt"))).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    pem.contents
}

/// Walks the whole capture the way a peer would: derives each IKE SA's keys,
/// checks them against keys.json, opens every encrypted message with them, checks
/// each Child SA's keys and both AUTH payloads. Returns the number of messages opened.
fn replay(profile: &str) -> usize {
    let log = key_log(profile);
    let messages = ike_messages(profile);
    let mut opened = 0;

    let [init_req, init_resp] = &messages[..2] else {
        unreachable!()
    };
    assert_eq!(init_req.message.header.exchange, ExchangeType::IKE_SA_INIT);
    let (ni, nr) = (
        nonce(&init_req.message.payloads),
        nonce(&init_resp.message.payloads),
    );
    let suite =
        IkeSuite::from_proposal(first_proposal(&init_resp.message.payloads).unwrap()).unwrap();
    let logged = &log.ike_sas[0];
    let seed = skeyseed(suite.prf, &ni, &nr, &logged.g_ir);
    let h = &init_resp.message.header;
    let mut sas = vec![IkeSa::derive(suite, &seed, &ni, &nr, h.spi_i, h.spi_r)];
    sas[0].assert_matches(logged, &logged.skeyseed, &seed);

    let mut children = log.child_sas.iter();
    let mut pending: Option<(&Captured, Vec<Payload>)> = None;
    for m in &messages[2..] {
        let h = &m.message.header;
        let sa = sas
            .iter()
            .find(|sa| (sa.spi_i, sa.spi_r) == (h.spi_i, h.spi_r))
            .unwrap_or_else(|| panic!("frame {}: unknown IKE SA", m.frame));
        let inner = sa.open(m);
        opened += 1;
        if !h.flags.response() {
            pending = Some((m, inner));
            continue;
        }
        let (request, req_inner) = pending.take().expect("a response follows its request");
        assert_eq!(request.message.header.message_id, h.message_id);
        match h.exchange {
            ExchangeType::IKE_AUTH => {
                verify_auth(profile, sa, init_req, &nr, "left", &req_inner, true);
                verify_auth(profile, sa, init_resp, &ni, "right", &inner, false);
                assert_child(sa, children.next().unwrap(), (&ni, &nr), &req_inner, &inner);
            }
            ExchangeType::CREATE_CHILD_SA => {
                let (cni, cnr) = (nonce(&req_inner), nonce(&inner));
                let chosen = first_proposal(&inner).unwrap();
                if chosen.protocol == ProtocolId::IKE {
                    let logged = &log.ike_sas[sas.len()];
                    let suite = IkeSuite::from_proposal(chosen).unwrap();
                    let seed =
                        rekey_skeyseed(sa.suite.prf, &sa.keys.sk_d, &logged.g_ir, &cni, &cnr);
                    let offered = first_proposal(&req_inner).unwrap();
                    let spi =
                        |p: &Proposal| IkeSpi(u64::from_be_bytes(p.spi[..].try_into().unwrap()));
                    let new = IkeSa::derive(suite, &seed, &cni, &cnr, spi(offered), spi(chosen));
                    new.assert_matches(logged, &logged.skeyseed, &seed);
                    sas.push(new);
                } else {
                    assert!(req_inner.iter().any(
                        |p| matches!(p, Payload::Notify(n) if n.notify_type == NotifyType::REKEY_SA)
                    ));
                    assert_child(
                        sa,
                        children.next().unwrap(),
                        (&cni, &cnr),
                        &req_inner,
                        &inner,
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(sas.len(), log.ike_sas.len(), "every logged IKE SA seen");
    assert!(children.next().is_none(), "every logged Child SA seen");
    opened
}

/// Verifies the AUTH payload in `inner` (IKE_AUTH) over the signed octets of RFC
/// 7296 §2.15, with the public key of `pki/<cert>.crt`.
fn verify_auth(
    profile: &str,
    sa: &IkeSa,
    first_message: &Captured,
    peer_nonce: &[u8],
    cert: &str,
    inner: &[Payload],
    from_initiator: bool,
) {
    let id: &IdPayload = inner
        .iter()
        .find_map(|p| match p {
            Payload::IdI(id) if from_initiator => Some(id),
            Payload::IdR(id) if !from_initiator => Some(id),
            _ => None,
        })
        .unwrap();
    let auth = inner
        .iter()
        .find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        })
        .unwrap();
    let sent_cert = inner
        .iter()
        .find_map(|p| match p {
            Payload::Cert(c) => Some(&c.data),
            _ => None,
        })
        .unwrap();
    let der = pem_certificate(profile, cert);
    assert_eq!(sent_cert, &der, "the CERT payload carries pki/{cert}.crt");
    let sk_p = if from_initiator {
        &sa.keys.sk_pi
    } else {
        &sa.keys.sk_pr
    };
    let octets = auth::signed_octets(&first_message.bytes, peer_nonce, sa.suite.prf, sk_p, id);
    let key = PublicKey::from_certificate(&der).unwrap();
    let verified = auth::verify(auth, &octets, sa.suite.prf, Credential::PublicKey(&key));
    assert!(verified.is_ok(), "{profile}: {cert}'s AUTH: {verified:?}");
    // The same signature over other octets must not verify.
    let mut tampered = octets.clone();
    tampered[0] ^= 1;
    assert!(auth::verify(auth, &tampered, sa.suite.prf, Credential::PublicKey(&key)).is_err());
    let other = PublicKey::from_certificate(&pem_certificate(
        profile,
        if from_initiator { "right" } else { "left" },
    ))
    .unwrap();
    assert!(auth::verify(auth, &octets, sa.suite.prf, Credential::PublicKey(&other)).is_err());
}

#[test]
fn every_ike_message_re_encodes_byte_identically() {
    for profile in PROFILES {
        let messages = ike_messages(profile);
        assert_eq!(messages.len(), 20, "{profile}: IKE messages in the capture");
        for m in &messages {
            assert_eq!(
                m.message.encode().unwrap(),
                m.bytes,
                "{profile} frame {}",
                m.frame
            );
        }
    }
}

#[test]
fn derived_keys_match_strongswan_and_open_every_message() {
    for profile in PROFILES {
        // 20 messages, 2 of them IKE_SA_INIT in clear.
        assert_eq!(replay(profile), 18, "{profile}");
    }
}

#[test]
fn rekeyed_child_sa_uses_pfs_only_in_the_pfs_profile() {
    assert!(
        key_log("gcm")
            .child_sas
            .iter()
            .all(|c| c.pfs_g_ir.is_empty())
    );
    assert!(!key_log("gcm-pfs").child_sas[1].pfs_g_ir.is_empty());
    assert!(!key_log("cbc").child_sas[1].pfs_g_ir.is_empty());
}

#[test]
fn our_responder_choice_matches_strongswans() {
    use esptun::ike::proposal;
    for (profile, configured) in [
        ("gcm", "aes128gcm16-prfsha256-x25519"),
        ("gcm-pfs", "aes128gcm16-prfsha256-x25519"),
        ("cbc", "aes256-sha256-modp2048"),
    ] {
        let messages = ike_messages(profile);
        let offered = match &messages[0].message.payloads[0] {
            Payload::Sa(sa) => &sa.proposals,
            other => panic!("{profile}: IKE_SA_INIT starts with {other:?}"),
        };
        let ours = proposal::parse_all(&[configured.to_owned()], ProtocolId::IKE).unwrap();
        let mut ours_chosen = proposal::select(&ours, offered).expect("a common proposal");
        let mut theirs_chosen = first_proposal(&messages[1].message.payloads)
            .unwrap()
            .clone();
        assert_eq!(ours_chosen.number, theirs_chosen.number, "{profile}");
        ours_chosen.transforms.sort_by_key(|t| (t.kind, t.id));
        theirs_chosen.transforms.sort_by_key(|t| (t.kind, t.id));
        assert_eq!(ours_chosen, theirs_chosen, "{profile}");
    }
}

#[test]
fn strongswan_certificates_validate_and_its_certreq_names_our_ca_hash() {
    use esptun::auth::x509::{TrustAnchors, check_identity, validate_chain};

    // 2027-01-01: inside the validity of the captures' test PKI (issued 2026-11-22).
    const NOW: u64 = 1_798_761_600;
    for profile in ["gcm", "gcm-pfs", "cbc"] {
        let anchors = TrustAnchors::new(vec![pem_certificate(profile, "ca")]).unwrap();
        for (name, id) in [("left", "left.example"), ("right", "right.example")] {
            let leaf = pem_certificate(profile, name);
            assert!(
                validate_chain(&leaf, &[], &anchors, NOW).is_ok(),
                "{profile} {name}"
            );
            let id = esptun::auth::identity::parse(id).unwrap();
            assert!(check_identity(&id, &leaf).is_ok(), "{profile} {name}");
        }
        let messages = ike_messages(profile);
        let certreq = messages[1]
            .message
            .payloads
            .iter()
            .find_map(|p| match p {
                Payload::CertReq(c) => Some(c),
                _ => None,
            })
            .expect("CERTREQ in the IKE_SA_INIT response");
        assert_eq!(certreq.authorities, anchors.certreq_hashes(), "{profile}");
    }
}

#[test]
fn every_esp_frame_of_the_captures_opens_with_the_logged_keys() {
    use esptun::esp::{InboundSa, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, SaKeys};
    for profile in PROFILES {
        let keys = key_log(profile);
        let capture = std::fs::read(vector_path(profile, "capture.pcap")).unwrap();
        let mut sas: std::collections::HashMap<u32, InboundSa> = std::collections::HashMap::new();
        let mut opened = 0;
        for d in udp_datagrams(&capture).unwrap() {
            let is_esp = d.src.port() == 4500
                && d.payload.len() > 8
                && !d.payload.starts_with(&NON_ESP_MARKER);
            if !is_esp {
                continue;
            }
            let spi = u32::from_be_bytes(d.payload[..4].try_into().unwrap());
            let child = keys
                .child_sas
                .iter()
                .find(|c| c.spi_left_to_right == spi || c.spi_right_to_left == spi)
                .unwrap_or_else(|| panic!("{profile}: no keys for SPI {spi:08x}"));
            let (encr, integ) = if child.integrity_initiator.is_empty() {
                let key_len = child.encryption_initiator.len() - 4;
                (Encr::AesGcm16 { key_len }, None)
            } else {
                let key_len = child.encryption_initiator.len();
                (Encr::AesCbc { key_len }, Some(Integ::HmacSha256))
            };
            // The log names keys by the CREATE_CHILD_SA initiator; find which side sent this SA.
            let sa = sas.entry(spi).or_insert_with(|| {
                let make = |(encryption, integrity): (&Secret, &Secret)| {
                    let keys = SaKeys {
                        spi,
                        encr,
                        integ,
                        esn: false,
                        encryption,
                        integrity,
                    };
                    InboundSa::new(&keys, 1024).unwrap()
                };
                [
                    (&child.encryption_initiator, &child.integrity_initiator),
                    (&child.encryption_responder, &child.integrity_responder),
                ]
                .into_iter()
                // A throw-away SA per candidate, so probing leaves no trace in the window.
                .find(|&keys| make(keys).open(&mut d.payload.clone()).is_ok())
                .map(make)
                .unwrap_or_else(|| panic!("{profile}: neither key opens SPI {spi:08x}"))
            });
            let mut packet = d.payload.clone();
            let (range, next_header, seq) = sa
                .open(&mut packet)
                .unwrap_or_else(|e| panic!("{profile} frame {}: {e}", d.frame));
            assert!(seq >= 1);
            let inner = &packet[range];
            let version = inner[0] >> 4;
            match next_header {
                NEXT_HEADER_IPV4 => assert_eq!(version, 4),
                NEXT_HEADER_IPV6 => assert_eq!(version, 6),
                other => panic!("{profile}: next header {other}"),
            }
            assert!(
                etherparse::SlicedPacket::from_ip(inner).is_ok(),
                "{profile} frame {}",
                d.frame
            );
            // The same frame again is a replay.
            let mut again = d.payload.clone();
            assert!(sa.open(&mut again).is_err());
            opened += 1;
        }
        assert!(opened >= 4, "{profile}: {opened} ESP frames");
    }
}
