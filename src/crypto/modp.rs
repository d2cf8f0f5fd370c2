//! Finite-field Diffie-Hellman over the RFC 3526 MODP groups 14, 15 and 16, and the
//! RFC 2409 group 2 that Windows' built-in client proposes by default (configuration
//! allows it only with `legacy_windows_proposals`), with constant-time exponentiation
//! (crypto-bigint Montgomery form).

use super::{Random, Secret};
use crate::wire::KeGroup;
use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U512, Uint};
use zeroize::Zeroize;

/// One of the supported MODP groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModpGroup {
    Modp1024,
    Modp2048,
    Modp3072,
    Modp4096,
}

impl ModpGroup {
    pub(super) fn from_group(group: KeGroup) -> Option<Self> {
        Some(match group {
            KeGroup::MODP_1024 => Self::Modp1024,
            KeGroup::MODP_2048 => Self::Modp2048,
            KeGroup::MODP_3072 => Self::Modp3072,
            KeGroup::MODP_4096 => Self::Modp4096,
            _ => return None,
        })
    }

    /// Length of the prime, and so of public values and shared secrets.
    pub(super) fn len(self) -> usize {
        match self {
            Self::Modp1024 => 128,
            Self::Modp2048 => 256,
            Self::Modp3072 => 384,
            Self::Modp4096 => 512,
        }
    }

    /// Private exponent size: twice the group's security strength (NIST SP 800-56A
    /// rev. 3 §5.6.1.1.1: 112, 128 and 152 bits for the RFC 3526 primes; 80 for the
    /// 1024-bit one).
    fn exponent_bits(self) -> u32 {
        match self {
            Self::Modp1024 => 160,
            Self::Modp2048 => 224,
            Self::Modp3072 => 256,
            Self::Modp4096 => 304,
        }
    }

    /// A random nonzero private exponent.
    pub(super) fn generate_exponent(self, rng: &mut dyn Random) -> Secret {
        let mut x = vec![0u8; self.exponent_bits() as usize / 8];
        loop {
            rng.fill(&mut x);
            if x.iter().any(|&b| b != 0) {
                return Secret::new(x);
            }
        }
    }

    /// g^x mod p.
    pub(super) fn public_value(self, exponent: &Secret) -> Vec<u8> {
        let mut generator = vec![0u8; self.len()];
        generator[self.len() - 1] = 2;
        self.pow(&generator, exponent).expose().to_vec()
    }

    /// True for a public value of the group's length with 1 < value < p-1 (RFC 6989 §2.1).
    pub(super) fn is_valid_public(self, peer: &[u8]) -> bool {
        peer.len() == self.len() && self.in_range(peer)
    }

    /// peer^x mod p, after checking the peer's value.
    pub(super) fn shared_secret(self, exponent: &Secret, peer: &[u8]) -> Option<Secret> {
        self.is_valid_public(peer).then(|| self.pow(peer, exponent))
    }

    fn in_range(self, y: &[u8]) -> bool {
        match self {
            Self::Modp1024 => in_range::<16>(MODP_1024_HEX, y),
            Self::Modp2048 => in_range::<32>(MODP_2048_HEX, y),
            Self::Modp3072 => in_range::<48>(MODP_3072_HEX, y),
            Self::Modp4096 => in_range::<64>(MODP_4096_HEX, y),
        }
    }

    fn pow(self, base: &[u8], exponent: &Secret) -> Secret {
        let mut padded = [0u8; 64];
        let x = exponent.expose();
        padded[64 - x.len()..].copy_from_slice(x);
        let mut e = U512::from_be_slice(&padded);
        padded.zeroize();
        let bits = self.exponent_bits();
        let out = match self {
            Self::Modp1024 => pow::<16>(MODP_1024_HEX, base, &e, bits),
            Self::Modp2048 => pow::<32>(MODP_2048_HEX, base, &e, bits),
            Self::Modp3072 => pow::<48>(MODP_3072_HEX, base, &e, bits),
            Self::Modp4096 => pow::<64>(MODP_4096_HEX, base, &e, bits),
        };
        e.zeroize();
        out
    }
}

fn in_range<const L: usize>(prime_hex: &str, y: &[u8]) -> bool {
    let p = Uint::<L>::from_be_hex(prime_hex);
    let y = Uint::<L>::from_be_slice(y);
    y > Uint::ONE && y < p.wrapping_sub(&Uint::ONE)
}

fn pow<const L: usize>(prime_hex: &str, base: &[u8], exponent: &U512, bits: u32) -> Secret {
    let p = Odd::new(Uint::<L>::from_be_hex(prime_hex))
        .into_option()
        .expect("RFC 2409 and RFC 3526 primes are odd");
    let params = FixedMontyParams::new(p);
    let base = Uint::<L>::from_be_slice(base);
    let mut result = FixedMontyForm::new(&base, &params)
        .pow_bounded_exp(exponent, bits)
        .retrieve();
    let out = Secret::from_slice(&result.to_be_bytes());
    result.zeroize();
    out
}

/// The 1024-bit MODP prime of RFC 2409 §6.2 (the Second Oakley Group).
const MODP_1024_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
);

/// The 2048-bit MODP prime of RFC 3526.
const MODP_2048_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
);

/// The 3072-bit MODP prime of RFC 3526.
const MODP_3072_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
);

/// The 4096-bit MODP prime of RFC 3526.
const MODP_4096_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;

    #[test]
    fn both_sides_agree_in_every_group() {
        let mut rng = SeededRandom::new(7);
        for g in [
            ModpGroup::Modp1024,
            ModpGroup::Modp2048,
            ModpGroup::Modp3072,
            ModpGroup::Modp4096,
        ] {
            let (a, b) = (g.generate_exponent(&mut rng), g.generate_exponent(&mut rng));
            let (ya, yb) = (g.public_value(&a), g.public_value(&b));
            assert_eq!(ya.len(), g.len());
            let s1 = g.shared_secret(&a, &yb).unwrap();
            let s2 = g.shared_secret(&b, &ya).unwrap();
            assert_eq!(s1, s2, "{g:?}");
        }
    }

    #[test]
    fn small_exponent_gives_known_power_of_two() {
        // 2^10 = 1024 (no reduction).
        let g = ModpGroup::Modp2048;
        let y = g.public_value(&Secret::from_slice(&[0x0a]));
        assert_eq!(&y[254..], &[0x04, 0x00]);
        assert!(y[..254].iter().all(|&b| b == 0));
    }

    #[test]
    fn rejects_degenerate_and_misencoded_peer_values() {
        let g = ModpGroup::Modp2048;
        let x = Secret::from_slice(&[5]);
        let mut value = vec![0u8; 256];
        assert!(g.shared_secret(&x, &value).is_none()); // 0
        value[255] = 1;
        assert!(g.shared_secret(&x, &value).is_none()); // 1
        let mut p_minus_1 = hex::decode(MODP_2048_HEX).unwrap();
        p_minus_1[255] -= 1;
        assert!(g.shared_secret(&x, &p_minus_1).is_none());
        let p = hex::decode(MODP_2048_HEX).unwrap();
        assert!(g.shared_secret(&x, &p).is_none());
        assert!(g.shared_secret(&x, &[2]).is_none()); // not padded to the prime length
        value[255] = 2;
        assert!(g.shared_secret(&x, &value).is_some());
    }
}
