//! Proposals in strongSwan's keyword syntax (`aes128gcm16-prfsha256-x25519`,
//! `aes256-sha256-modp2048`) and the responder's choice among a peer's offers
//! (RFC 7296 §2.7, §3.3.6).

use crate::crypto::Encr;
use crate::wire::payload::{Proposal, Transform};
use crate::wire::{EncrId, EsnId, IntegId, KeGroup, PrfId, ProtocolId, TransformType};
use std::fmt;

/// Why a proposal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// A keyword names no algorithm esptun implements.
    #[error("unknown or unsupported algorithm keyword `{0}`")]
    UnknownKeyword(String),
    /// The keywords do not make a usable proposal.
    #[error("proposal `{text}`: {why}")]
    Incomplete {
        /// The proposal as written.
        text: String,
        /// What is missing or contradictory.
        why: &'static str,
    },
}

/// One keyword and the transform it stands for.
struct Keyword {
    name: &'static str,
    kind: TransformType,
    id: u16,
    key_bits: Option<u16>,
}

const fn kw(name: &'static str, kind: TransformType, id: u16, key_bits: Option<u16>) -> Keyword {
    Keyword {
        name,
        kind,
        id,
        key_bits,
    }
}

const ENCR: TransformType = TransformType::ENCR;
const PRF: TransformType = TransformType::PRF;
const INTEG: TransformType = TransformType::INTEG;
const KE: TransformType = TransformType::KE;
const ESN: TransformType = TransformType::ESN;

/// strongSwan's names for the algorithms esptun implements.
const KEYWORDS: &[Keyword] = &[
    kw("aes128", ENCR, EncrId::AES_CBC.0, Some(128)),
    kw("aes", ENCR, EncrId::AES_CBC.0, Some(128)),
    kw("aes256", ENCR, EncrId::AES_CBC.0, Some(256)),
    kw("aes128gcm16", ENCR, EncrId::AES_GCM_16.0, Some(128)),
    kw("aes128gcm128", ENCR, EncrId::AES_GCM_16.0, Some(128)),
    kw("aes128gcm", ENCR, EncrId::AES_GCM_16.0, Some(128)),
    kw("aes256gcm16", ENCR, EncrId::AES_GCM_16.0, Some(256)),
    kw("aes256gcm128", ENCR, EncrId::AES_GCM_16.0, Some(256)),
    kw("aes256gcm", ENCR, EncrId::AES_GCM_16.0, Some(256)),
    kw("chacha20poly1305", ENCR, EncrId::CHACHA20_POLY1305.0, None),
    kw("sha1", INTEG, IntegId::HMAC_SHA1_96.0, None),
    kw("sha", INTEG, IntegId::HMAC_SHA1_96.0, None),
    kw("sha256", INTEG, IntegId::HMAC_SHA2_256_128.0, None),
    kw("sha2_256", INTEG, IntegId::HMAC_SHA2_256_128.0, None),
    kw("sha384", INTEG, IntegId::HMAC_SHA2_384_192.0, None),
    kw("sha2_384", INTEG, IntegId::HMAC_SHA2_384_192.0, None),
    kw("sha512", INTEG, IntegId::HMAC_SHA2_512_256.0, None),
    kw("sha2_512", INTEG, IntegId::HMAC_SHA2_512_256.0, None),
    kw("prfsha1", PRF, PrfId::HMAC_SHA1.0, None),
    kw("prfsha256", PRF, PrfId::HMAC_SHA2_256.0, None),
    kw("prfsha384", PRF, PrfId::HMAC_SHA2_384.0, None),
    kw("prfsha512", PRF, PrfId::HMAC_SHA2_512.0, None),
    kw("modp1024", KE, KeGroup::MODP_1024.0, None),
    kw("modp2048", KE, KeGroup::MODP_2048.0, None),
    kw("modp3072", KE, KeGroup::MODP_3072.0, None),
    kw("modp4096", KE, KeGroup::MODP_4096.0, None),
    kw("ecp256", KE, KeGroup::ECP_256.0, None),
    kw("ecp384", KE, KeGroup::ECP_384.0, None),
    kw("ecp521", KE, KeGroup::ECP_521.0, None),
    kw("x25519", KE, KeGroup::CURVE25519.0, None),
    kw("curve25519", KE, KeGroup::CURVE25519.0, None),
    kw("esn", ESN, EsnId::ESN.0, None),
    kw("noesn", ESN, EsnId::NO_ESN.0, None),
];

/// The PRF strongSwan pairs with an integrity algorithm when none is named.
fn prf_for(integ: u16) -> Option<u16> {
    match IntegId(integ) {
        IntegId::HMAC_SHA1_96 => Some(PrfId::HMAC_SHA1.0),
        IntegId::HMAC_SHA2_256_128 => Some(PrfId::HMAC_SHA2_256.0),
        IntegId::HMAC_SHA2_384_192 => Some(PrfId::HMAC_SHA2_384.0),
        IntegId::HMAC_SHA2_512_256 => Some(PrfId::HMAC_SHA2_512.0),
        _ => None,
    }
}

fn transform(k: &Keyword) -> Transform {
    match k.key_bits {
        Some(bits) => Transform::with_key_length(k.kind, k.id, bits),
        None => Transform::new(k.kind, k.id),
    }
}

fn is_aead(t: &Transform) -> bool {
    Encr::from_transform(EncrId(t.id), t.key_length()).is_some_and(Encr::is_aead)
}

/// Parses one proposal in strongSwan's syntax for `protocol` (IKE or ESP).
///
/// IKE proposals need encryption, a PRF (named, or derived from the integrity
/// algorithms as strongSwan does) and a key exchange group; integrity iff not AEAD.
/// ESP proposals take no PRF, an optional group (PFS), and default to `noesn`.
pub fn parse(text: &str, protocol: ProtocolId) -> Result<Proposal, ProposalError> {
    let incomplete = |why| ProposalError::Incomplete {
        text: text.to_owned(),
        why,
    };
    let mut transforms: Vec<Transform> = Vec::new();
    for word in text.split('-') {
        let k = KEYWORDS
            .iter()
            .find(|k| k.name.eq_ignore_ascii_case(word))
            .ok_or_else(|| ProposalError::UnknownKeyword(word.to_owned()))?;
        let t = transform(k);
        if !transforms.contains(&t) {
            transforms.push(t);
        }
    }
    let of = |kind| transforms.iter().filter(move |t| t.kind == kind);
    let aead = of(ENCR).filter(|t| is_aead(t)).count();
    if of(ENCR).next().is_none() {
        return Err(incomplete("no encryption algorithm"));
    }
    if aead != 0 && aead != of(ENCR).count() {
        return Err(incomplete("AEAD and non-AEAD encryption in one proposal"));
    }
    let has_integ = of(INTEG).next().is_some();
    if aead > 0 && has_integ {
        return Err(incomplete("an AEAD algorithm takes no integrity algorithm"));
    }
    if aead == 0 && !has_integ {
        return Err(incomplete("no integrity algorithm"));
    }
    if protocol == ProtocolId::IKE {
        if of(ESN).next().is_some() {
            return Err(incomplete("ESN is for ESP proposals"));
        }
        if of(KE).next().is_none() {
            return Err(incomplete("no key exchange group"));
        }
        if of(PRF).next().is_none() {
            let derived: Vec<Transform> = of(INTEG)
                .filter_map(|t| prf_for(t.id))
                .map(|id| Transform::new(PRF, id))
                .collect();
            if derived.is_empty() {
                return Err(incomplete("no PRF (name one, e.g. prfsha256)"));
            }
            transforms.extend(derived);
        }
    } else {
        if of(PRF).next().is_some() {
            return Err(incomplete("a PRF is for IKE proposals"));
        }
        if of(ESN).next().is_none() {
            transforms.push(Transform::new(ESN, EsnId::NO_ESN.0));
        }
    }
    // The order RFC 7296 §3.3 shows: ENCR, PRF, INTEG, KE, ESN; keyword order within a type.
    transforms.sort_by_key(|t| match t.kind {
        ENCR => 0,
        PRF => 1,
        INTEG => 2,
        KE => 3,
        _ => 4,
    });
    Ok(Proposal {
        number: 1,
        protocol,
        spi: Vec::new(),
        transforms,
    })
}

/// The transforms of `p` that only Windows' built-in client still proposes by default
/// (HMAC-SHA-1-96, the 1024-bit MODP group), by name: a configuration may use them only
/// with `legacy_windows_proposals`. PRF_HMAC_SHA1, which `sha1` brings along, is named
/// with them when they come together; alone it was allowed before and still is.
pub fn legacy_transforms(p: &Proposal) -> Vec<String> {
    let weak = |t: &&Transform| {
        (t.kind == INTEG && t.id == IntegId::HMAC_SHA1_96.0)
            || (t.kind == KE && t.id == KeGroup::MODP_1024.0)
    };
    let mut names: Vec<String> = p
        .transforms
        .iter()
        .filter(weak)
        .map(|t| {
            Notation(&Proposal {
                transforms: vec![t.clone()],
                ..p.clone()
            })
            .to_string()
        })
        .collect();
    let sha1_prf = p
        .transforms
        .iter()
        .any(|t| t.kind == PRF && t.id == PrfId::HMAC_SHA1.0);
    if !names.is_empty() && sha1_prf {
        names.push(format!("PRF_{}", PrfId::HMAC_SHA1));
    }
    names
}

/// Parses a list of proposals, numbering them 1, 2, … as RFC 7296 §3.3.1 asks.
pub fn parse_all(texts: &[String], protocol: ProtocolId) -> Result<Vec<Proposal>, ProposalError> {
    texts
        .iter()
        .zip(1..)
        .map(|(text, number)| parse(text, protocol).map(|p| Proposal { number, ..p }))
        .collect()
}

/// Chooses, in our order of preference, the first of our proposals that one of
/// the peer's offers also allows; returns the answer to send back: the peer's
/// proposal number and SPI with one transform of each type.
///
/// A proposal matches when both name the same transform types and share at least
/// one transform of each; a transform the offer carries that we do not implement
/// is simply never chosen.
pub fn select(ours: &[Proposal], offered: &[Proposal]) -> Option<Proposal> {
    ours.iter().find_map(|mine| {
        offered
            .iter()
            .filter(|theirs| theirs.protocol == mine.protocol)
            .find_map(|theirs| choose(mine, theirs))
    })
}

/// True when `answer` is a choice `select` could make from `ours`: exactly one
/// transform of each type of one of our proposals, every one of them ours. An
/// answer naming more (or other) transforms than we offered is refused rather
/// than keyed with the first of each type; the order of its transforms is free.
pub fn allows(ours: &[Proposal], answer: &Proposal) -> bool {
    select(ours, std::slice::from_ref(answer)).is_some_and(|chosen| {
        chosen.transforms.len() == answer.transforms.len()
            && chosen
                .transforms
                .iter()
                .all(|t| answer.transforms.contains(t))
    })
}

fn choose(mine: &Proposal, theirs: &Proposal) -> Option<Proposal> {
    let mut kinds: Vec<TransformType> = mine.transforms.iter().map(|t| t.kind).collect();
    kinds.dedup();
    let offered_kinds_covered = theirs
        .transforms
        .iter()
        .all(|t| kinds.contains(&t.kind) || is_optional_none(t));
    if !offered_kinds_covered {
        return None;
    }
    let chosen = kinds
        .iter()
        .map(|&kind| {
            mine.transforms
                .iter()
                .filter(|t| t.kind == kind)
                .find(|t| theirs.transforms.contains(t))
                .cloned()
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Proposal {
        number: theirs.number,
        protocol: theirs.protocol,
        spi: theirs.spi.clone(),
        transforms: chosen,
    })
}

/// "No integrity" and "no group" may be offered alongside AEAD or without PFS.
fn is_optional_none(t: &Transform) -> bool {
    (t.kind == INTEG && t.id == IntegId::NONE.0) || (t.kind == KE && t.id == KeGroup::NONE.0)
}

/// True if `p` allows key exchange group `group`.
pub fn offers_group(p: &Proposal, group: KeGroup) -> bool {
    p.transforms.iter().any(|t| t.kind == KE && t.id == group.0)
}

/// The proposals that allow `group`, each reduced to it: what may be chosen without
/// INVALID_KE_PAYLOAD for a KE payload of that group, or offered again after one.
pub fn with_group(proposals: &[Proposal], group: KeGroup) -> Vec<Proposal> {
    proposals
        .iter()
        .filter(|p| offers_group(p, group))
        .map(|p| Proposal {
            transforms: p
                .transforms
                .iter()
                .filter(|t| t.kind != KE || t.id == group.0)
                .cloned()
                .collect(),
            ..p.clone()
        })
        .collect()
}

/// The key exchange group of a chosen proposal, if it has one.
pub fn group(p: &Proposal) -> Option<KeGroup> {
    p.transforms
        .iter()
        .find(|t| t.kind == KE && t.id != KeGroup::NONE.0)
        .map(|t| KeGroup(t.id))
}

/// A proposal in strongSwan's notation, for logs (`AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE25519`).
pub struct Notation<'a>(pub &'a Proposal);

impl fmt::Display for Notation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.transforms.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match t.kind {
                ENCR => write!(f, "{}", EncrId(t.id))?,
                PRF => write!(f, "PRF_{}", PrfId(t.id))?,
                INTEG => write!(f, "{}", IntegId(t.id))?,
                KE => write!(f, "{}", KeGroup(t.id))?,
                ESN => write!(f, "{}", EsnId(t.id))?,
                other => write!(f, "{other}:{}", t.id)?,
            }
            if let Some(bits) = t.key_length() {
                write!(f, "_{bits}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ike(text: &str) -> Proposal {
        parse(text, ProtocolId::IKE).unwrap()
    }

    fn esp(text: &str) -> Proposal {
        parse(text, ProtocolId::ESP).unwrap()
    }

    #[test]
    fn parses_the_interop_proposals() {
        let p = ike("aes128gcm16-prfsha256-x25519");
        assert_eq!(
            p.transforms,
            [
                Transform::with_key_length(ENCR, EncrId::AES_GCM_16.0, 128),
                Transform::new(PRF, PrfId::HMAC_SHA2_256.0),
                Transform::new(KE, KeGroup::CURVE25519.0),
            ]
        );
        let p = ike("aes256-sha256-modp2048");
        assert_eq!(
            Notation(&p).to_string(),
            "AES_CBC_256/PRF_HMAC_SHA2_256/HMAC_SHA2_256_128/MODP_2048"
        );
        let p = ike("chacha20poly1305-prfsha384-ecp384");
        assert_eq!(group(&p), Some(KeGroup::ECP_384));
        assert_eq!(
            Notation(&esp("aes128gcm16")).to_string(),
            "AES_GCM_16_128/NO_ESN"
        );
        assert_eq!(
            Notation(&esp("aes256-sha256-modp2048-esn")).to_string(),
            "AES_CBC_256/HMAC_SHA2_256_128/MODP_2048/ESN"
        );
    }

    #[test]
    fn refuses_incomplete_or_unknown_proposals() {
        for (text, protocol) in [
            ("aes128gcm16-x25519", ProtocolId::IKE), // AEAD without a PRF
            ("aes128-sha256", ProtocolId::IKE),      // no group
            ("aes128-x25519-prfsha256", ProtocolId::IKE), // CBC without integrity
            ("aes128gcm16-sha256-prfsha256-x25519", ProtocolId::IKE),
            ("aes128-aes128gcm16-sha256-x25519", ProtocolId::IKE),
            ("aes128gcm16-prfsha256", ProtocolId::ESP),
            ("aes128gcm16-prfsha256-x25519-esn", ProtocolId::IKE),
            ("sha256", ProtocolId::ESP),
        ] {
            assert!(
                matches!(parse(text, protocol), Err(ProposalError::Incomplete { .. })),
                "{text}"
            );
        }
        assert_eq!(
            parse("3des-sha1-modp1024", ProtocolId::IKE),
            Err(ProposalError::UnknownKeyword("3des".into()))
        );
    }

    #[test]
    fn windows_default_proposals_parse_and_are_named_as_legacy() {
        let p = ike("aes256-sha1-modp1024");
        assert_eq!(
            Notation(&p).to_string(),
            "AES_CBC_256/PRF_HMAC_SHA1/HMAC_SHA1_96/MODP_1024"
        );
        assert_eq!(
            legacy_transforms(&p),
            ["HMAC_SHA1_96", "MODP_1024", "PRF_HMAC_SHA1"]
        );
        let p = esp("aes256-sha1");
        assert_eq!(Notation(&p).to_string(), "AES_CBC_256/HMAC_SHA1_96/NO_ESN");
        assert_eq!(legacy_transforms(&p), ["HMAC_SHA1_96"]);
        assert_eq!(
            legacy_transforms(&ike("aes256-sha256-modp1024")),
            ["MODP_1024"]
        );
        // The strong proposals name nothing, nor does a SHA-1 PRF on its own.
        for text in [
            "aes128gcm16-prfsha256-x25519",
            "aes256-sha256-modp2048",
            "aes256gcm16-prfsha1-ecp256",
        ] {
            assert!(legacy_transforms(&ike(text)).is_empty(), "{text}");
        }
    }

    #[test]
    fn responder_takes_its_own_first_choice_among_the_offers() {
        let ours = parse_all(
            &[
                "aes256gcm16-prfsha384-ecp384".into(),
                "aes128gcm16-prfsha256-x25519".into(),
            ],
            ProtocolId::IKE,
        )
        .unwrap();
        let mut offered = parse_all(
            &[
                "aes128gcm16-prfsha256-x25519".into(),
                "aes256gcm16-aes128gcm16-prfsha384-prfsha256-ecp384-x25519".into(),
            ],
            ProtocolId::IKE,
        )
        .unwrap();
        offered[1].spi = vec![9; 8];
        let chosen = select(&ours, &offered).unwrap();
        assert_eq!(chosen.number, 2);
        assert_eq!(chosen.spi, [9; 8]);
        assert_eq!(
            Notation(&chosen).to_string(),
            "AES_GCM_16_256/PRF_HMAC_SHA2_384/ECP_384"
        );
    }

    #[test]
    fn no_common_proposal_selects_nothing() {
        let ours = [ike("aes128gcm16-prfsha256-x25519")];
        assert!(select(&ours, &[ike("aes256-sha256-modp2048")]).is_none());
        // Same algorithms but a transform type we did not configure (ESN for IKE is
        // nonsense, but a peer may send anything).
        let mut odd = ours[0].clone();
        odd.transforms.push(Transform::new(ESN, 0));
        assert!(select(&ours, &[odd]).is_none());
        // Other protocol.
        assert!(select(&ours, &[esp("aes128gcm16")]).is_none());
    }

    #[test]
    fn an_answer_is_allowed_only_if_it_is_one_of_our_choices() {
        let ours = [
            ike("aes256gcm16-prfsha384-ecp384"),
            ike("aes128-sha256-modp2048"),
        ];
        assert!(allows(&ours, &ike("aes128-sha256-modp2048")));
        let mut reordered = ike("aes128-sha256-modp2048");
        reordered.transforms.reverse();
        assert!(allows(&ours, &reordered));
        // Two encryption algorithms: an answer must name one.
        assert!(!allows(
            &ours,
            &ike("aes256gcm16-aes128gcm16-prfsha384-ecp384")
        ));
        // Mixed from two of our proposals.
        assert!(!allows(&ours, &ike("aes256gcm16-prfsha384-modp2048")));
        // Never offered.
        assert!(!allows(&ours, &ike("aes256-sha256-modp2048")));
    }

    #[test]
    fn esp_without_pfs_accepts_an_offer_naming_no_group() {
        let ours = [esp("aes128gcm16")];
        let mut offered = esp("aes128gcm16-aes256gcm16");
        offered.transforms.push(Transform::new(KE, KeGroup::NONE.0));
        let chosen = select(&ours, &[offered]).unwrap();
        assert_eq!(Notation(&chosen).to_string(), "AES_GCM_16_128/NO_ESN");
    }
}
