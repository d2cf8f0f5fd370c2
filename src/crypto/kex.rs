//! Key exchange groups: MODP 14/15/16, ECP 19/20/21 (RFC 5903) and Curve25519 (RFC 8031),
//! and MODP 2 for Windows' default proposals (only with `legacy_windows_proposals`).
//!
//! Public values use the IKE encodings: the prime's length for MODP, x | y without
//! a point-format octet for ECP (RFC 5903 §7), 32 octets for Curve25519. Peer values
//! are validated as RFC 6989 asks: in range for MODP, on the curve for ECP, and a
//! non-zero shared secret for Curve25519.

use super::modp::ModpGroup;
use super::{CryptoError, Random, Secret};
use crate::wire::KeGroup;
use aws_lc_rs::agreement::{self, ParsedPublicKey, PrivateKey, UnparsedPublicKey};
use std::fmt;

/// The SEC1 prefix of an uncompressed point, absent from IKE's ECP encoding.
const UNCOMPRESSED_POINT: u8 = 0x04;

/// Our half of one key exchange: a private value and its public value.
pub struct KeyExchange {
    group: KeGroup,
    private: Private,
    public: Vec<u8>,
}

enum Private {
    Modp(ModpGroup, Secret),
    Ec(PrivateKey),
}

/// A peer's public value, validated (RFC 6989) without touching any private value:
/// the length for every group, the range for MODP, the curve for ECP. Checking it
/// costs next to nothing, so an IKE_SA_INIT whose KE fails is refused before any
/// exponentiation.
pub struct PeerValue {
    group: KeGroup,
    value: PeerKind,
}

enum PeerKind {
    Modp(Vec<u8>),
    Ec(ParsedPublicKey),
}

impl PeerValue {
    /// Checks `data` as a public value of `group`.
    pub fn parse(group: KeGroup, data: &[u8]) -> Result<Self, CryptoError> {
        let invalid = || CryptoError::InvalidPublicValue(group);
        if let Some(modp) = ModpGroup::from_group(group) {
            if !modp.is_valid_public(data) {
                return Err(invalid());
            }
            return Ok(Self {
                group,
                value: PeerKind::Modp(data.to_vec()),
            });
        }
        let alg = ec_algorithm(group).ok_or_else(|| CryptoError::Unsupported(group.to_string()))?;
        if Some(data.len()) != KeyExchange::public_len(group) {
            return Err(invalid());
        }
        let encoded = if group == KeGroup::CURVE25519 {
            data.to_vec()
        } else {
            [&[UNCOMPRESSED_POINT], data].concat()
        };
        // Decoding an uncompressed point checks that it lies on the curve.
        let parsed = ParsedPublicKey::try_from(UnparsedPublicKey::new(alg, encoded))
            .map_err(|_| invalid())?;
        Ok(Self {
            group,
            value: PeerKind::Ec(parsed),
        })
    }

    /// The group it belongs to.
    pub fn group(&self) -> KeGroup {
        self.group
    }
}

impl fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyExchange")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn ec_algorithm(group: KeGroup) -> Option<&'static agreement::Algorithm> {
    Some(match group {
        KeGroup::ECP_256 => &agreement::ECDH_P256,
        KeGroup::ECP_384 => &agreement::ECDH_P384,
        KeGroup::ECP_521 => &agreement::ECDH_P521,
        KeGroup::CURVE25519 => &agreement::X25519,
        _ => return None,
    })
}

/// Private scalar length and the mask for its first octet (P-521 has 521 bits in 66 octets).
fn ec_scalar(group: KeGroup) -> (usize, u8) {
    match group {
        KeGroup::ECP_384 => (48, 0xff),
        KeGroup::ECP_521 => (66, 0x01),
        _ => (32, 0xff),
    }
}

impl KeyExchange {
    /// True for the groups this module implements.
    pub fn is_supported(group: KeGroup) -> bool {
        ModpGroup::from_group(group).is_some() || ec_algorithm(group).is_some()
    }

    /// The length of a public value of `group` in a KE payload; None for groups
    /// this module does not implement.
    pub fn public_len(group: KeGroup) -> Option<usize> {
        if let Some(modp) = ModpGroup::from_group(group) {
            return Some(modp.len());
        }
        Some(match group {
            KeGroup::ECP_256 => 64,
            KeGroup::ECP_384 => 96,
            KeGroup::ECP_521 => 132,
            KeGroup::CURVE25519 => 32,
            _ => return None,
        })
    }

    /// Picks a private value with `rng` and computes the public value.
    pub fn generate(group: KeGroup, rng: &mut dyn Random) -> Result<Self, CryptoError> {
        if let Some(modp) = ModpGroup::from_group(group) {
            let exponent = modp.generate_exponent(rng);
            let public = modp.public_value(&exponent);
            return Ok(Self {
                group,
                private: Private::Modp(modp, exponent),
                public,
            });
        }
        let alg = ec_algorithm(group).ok_or_else(|| CryptoError::Unsupported(group.to_string()))?;
        let (len, mask) = ec_scalar(group);
        let mut scalar = Secret::new(vec![0; len]);
        // A scalar of zero or not below the group order is rejected; draw again.
        let key = loop {
            rng.fill(&mut scalar.0);
            scalar.0[0] &= mask;
            if let Ok(key) = PrivateKey::from_private_key(alg, scalar.expose()) {
                break key;
            }
        };
        let point = key
            .compute_public_key()
            .map_err(|_| CryptoError::Unsupported(format!("{group} public key")))?;
        let public = match point.as_ref() {
            [UNCOMPRESSED_POINT, xy @ ..] if group != KeGroup::CURVE25519 => xy.to_vec(),
            raw => raw.to_vec(),
        };
        Ok(Self {
            group,
            private: Private::Ec(key),
            public,
        })
    }

    /// The group.
    pub fn group(&self) -> KeGroup {
        self.group
    }

    /// Our public value, as sent in the KE payload.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir with the peer's public value, after validating it.
    pub fn shared_secret(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        self.agree(PeerValue::parse(self.group, peer)?)
    }

    /// The shared secret g^ir with an already validated public value of our group.
    pub fn agree(&self, peer: PeerValue) -> Result<Secret, CryptoError> {
        let invalid = || CryptoError::InvalidPublicValue(self.group);
        if peer.group != self.group {
            return Err(invalid());
        }
        match (&self.private, peer.value) {
            (Private::Modp(modp, exponent), PeerKind::Modp(value)) => {
                modp.shared_secret(exponent, &value).ok_or_else(invalid)
            }
            (Private::Ec(key), PeerKind::Ec(value)) => {
                agreement::agree(key, value, invalid(), |z| Ok(Secret::from_slice(z)))
            }
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;

    /// Hands out fixed bytes, to pin a private value from a test vector.
    struct Fixed(Vec<u8>);
    impl Random for Fixed {
        fn fill(&mut self, out: &mut [u8]) {
            out.copy_from_slice(&self.0[..out.len()]);
        }
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(char::is_whitespace, "")).unwrap()
    }

    /// RFC 5903 §8 and RFC 7748 §6.1: private values, public values and g^ir.
    fn check_vector(group: KeGroup, i: &str, gi: &str, r: &str, gr: &str, gir: &str) {
        let ki = KeyExchange::generate(group, &mut Fixed(h(i))).unwrap();
        let kr = KeyExchange::generate(group, &mut Fixed(h(r))).unwrap();
        assert_eq!(ki.public_value(), h(gi), "{group} g^i");
        assert_eq!(kr.public_value(), h(gr), "{group} g^r");
        assert_eq!(
            ki.shared_secret(&h(gr)).unwrap().expose(),
            h(gir),
            "{group} g^ir"
        );
        assert_eq!(
            kr.shared_secret(&h(gi)).unwrap().expose(),
            h(gir),
            "{group} g^ri"
        );
    }

    #[test]
    fn ecp256_matches_rfc5903() {
        check_vector(
            KeGroup::ECP_256,
            "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
            "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180
             5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
            "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
            "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63
             56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
            "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
        );
    }

    #[test]
    fn ecp384_matches_rfc5903() {
        check_vector(
            KeGroup::ECP_384,
            "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655
             E35B538041E649EE3FAEF896783AB194",
            "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6
             DE3AC808ACB4BDB4C88732AEE95F41AA9482ED1FC0EEB9CAFC4984625CCFC23F
             65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
            "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942
             E0308312916B8ED2960E4BD55A7448FC",
            "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D
             0D1AC43A0336DEF96FDA41D0774A3571DCFBEC7AACF3196472169E838430367F
             66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
            "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4
             D603135569B9E9D09CF5D4A270F59746",
        );
    }

    #[test]
    fn ecp521_matches_rfc5903() {
        check_vector(
            KeGroup::ECP_521,
            "0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A0
             95AA85A30FE1C2952C6771D937BA9777F5957B2639BAB072462F68C27A57382D
             4A52",
            "0015417E84DBF28C0AD3C278713349DC7DF153C897A1891BD98BAB4357C9ECBE
             E1E3BF42E00B8E380AEAE57C2D107564941885942AF5A7F4601723C4195D176C
             ED3E017CAE20B6641D2EEB695786D8C946146239D099E18E1D5A514C739D7CB4
             A10AD8A788015AC405D7799DC75E7B7D5B6CF2261A6A7F1507438BF01BEB6CA3
             926F9582",
            "0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E
             9C677D600B343757A3BDBF2A3163E4C2F869CCA7458AA4A4EFFC311F5CB15168
             5EB9",
            "00D0B3975AC4B799F5BEA16D5E13E9AF971D5E9B984C9F39728B5E5739735A21
             9B97C356436ADC6E95BB0352F6BE64A6C2912D4EF2D0433CED2B6171640012D9
             460F015C68226383956E3BD066E797B623C27CE0EAC2F551A10C2C724D985207
             7B87220B6536C5C408A1D2AEBB8E86D678AE49CB57091F4732296579AB44FCD1
             7F0FC56A",
            "01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04
             D1427E73CA4BAA240A34786859810C06B3C715A3A8CC3151F2BEE417996D19F3
             DDEA",
        );
    }

    #[test]
    fn curve25519_matches_rfc7748() {
        check_vector(
            KeGroup::CURVE25519,
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        );
    }

    #[test]
    fn every_group_agrees_with_itself() {
        let mut rng = SeededRandom::new(3);
        for g in [2, 14, 15, 16, 19, 20, 21, 31].map(KeGroup) {
            assert!(KeyExchange::is_supported(g));
            let a = KeyExchange::generate(g, &mut rng).unwrap();
            let b = KeyExchange::generate(g, &mut rng).unwrap();
            assert_eq!(
                a.shared_secret(b.public_value()).unwrap(),
                b.shared_secret(a.public_value()).unwrap(),
                "{g}"
            );
        }
        assert!(!KeyExchange::is_supported(KeGroup::MODP_1536));
        assert!(KeyExchange::generate(KeGroup::MODP_1536, &mut rng).is_err());
    }

    #[test]
    fn rejects_invalid_public_values_rfc6989() {
        let mut rng = SeededRandom::new(4);
        let p256 = KeyExchange::generate(KeGroup::ECP_256, &mut rng).unwrap();
        let mut off_curve = p256.public_value().to_vec();
        off_curve[63] ^= 1;
        assert_eq!(
            p256.shared_secret(&off_curve),
            Err(CryptoError::InvalidPublicValue(KeGroup::ECP_256))
        );
        assert!(p256.shared_secret(&[0; 64]).is_err());
        assert!(p256.shared_secret(&p256.public_value()[..63]).is_err());

        let x25519 = KeyExchange::generate(KeGroup::CURVE25519, &mut rng).unwrap();
        // Small-order points give an all-zero secret, which must be refused.
        assert!(x25519.shared_secret(&[0; 32]).is_err());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(x25519.shared_secret(&one).is_err());
    }

    #[test]
    fn peer_values_are_checked_before_any_private_value_is_used() {
        let mut rng = SeededRandom::new(5);
        for g in [2, 14, 15, 16, 19, 20, 21, 31].map(KeGroup) {
            let len = KeyExchange::public_len(g).unwrap();
            let ours = KeyExchange::generate(g, &mut rng).unwrap();
            assert_eq!(ours.public_value().len(), len, "{g}");
            let theirs = KeyExchange::generate(g, &mut rng).unwrap();
            let valid = PeerValue::parse(g, theirs.public_value()).unwrap();
            assert_eq!(valid.group(), g);
            assert_eq!(
                ours.agree(valid).unwrap(),
                theirs.shared_secret(ours.public_value()).unwrap()
            );
            for wrong in [0, 1, len - 1, len + 1] {
                assert_eq!(
                    PeerValue::parse(g, &vec![2; wrong]).err(),
                    Some(CryptoError::InvalidPublicValue(g)),
                    "{g} with {wrong} octets"
                );
            }
        }
        // MODP: 1 < y < p-1 (RFC 6989 §2.1).
        let p_minus_1 = {
            let mut v = vec![0xff; 256];
            v[255] = 0xfe;
            v
        };
        for y in [vec![0; 256], [vec![0; 255], vec![1]].concat(), p_minus_1] {
            assert!(PeerValue::parse(KeGroup::MODP_2048, &y).is_err());
        }
        // ECP: on the curve.
        let p256 = KeyExchange::generate(KeGroup::ECP_256, &mut rng).unwrap();
        let mut off_curve = p256.public_value().to_vec();
        off_curve[63] ^= 1;
        assert!(PeerValue::parse(KeGroup::ECP_256, &off_curve).is_err());
        // A value of one group is not used with another's private value.
        let x25519 = KeyExchange::generate(KeGroup::CURVE25519, &mut rng).unwrap();
        let peer = PeerValue::parse(KeGroup::CURVE25519, x25519.public_value()).unwrap();
        assert!(p256.agree(peer).is_err());
        assert!(PeerValue::parse(KeGroup::MODP_1536, &[2; 192]).is_err());
    }
}
