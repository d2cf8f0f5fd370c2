//! Pseudorandom functions and prf+ (RFC 7296 §2.13).

use super::{CryptoError, Secret};
use crate::wire::PrfId;
use aws_lc_rs::hmac;

/// A negotiated PRF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA1 (RFC 2104).
    HmacSha1,
    /// PRF_HMAC_SHA2_256 (RFC 4868).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (RFC 4868).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (RFC 4868).
    HmacSha512,
}

impl Prf {
    /// The PRF for a transform ID, if implemented.
    pub fn from_id(id: PrfId) -> Option<Self> {
        Some(match id {
            PrfId::HMAC_SHA1 => Self::HmacSha1,
            PrfId::HMAC_SHA2_256 => Self::HmacSha256,
            PrfId::HMAC_SHA2_384 => Self::HmacSha384,
            PrfId::HMAC_SHA2_512 => Self::HmacSha512,
            _ => return None,
        })
    }

    /// The transform ID.
    pub fn id(self) -> PrfId {
        match self {
            Self::HmacSha1 => PrfId::HMAC_SHA1,
            Self::HmacSha256 => PrfId::HMAC_SHA2_256,
            Self::HmacSha384 => PrfId::HMAC_SHA2_384,
            Self::HmacSha512 => PrfId::HMAC_SHA2_512,
        }
    }

    /// Output size, which is also the preferred key size for SK_d, SK_pi and SK_pr.
    pub fn output_len(self) -> usize {
        self.algorithm().digest_algorithm().output_len()
    }

    pub(crate) fn algorithm(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// `prf(key, data[0] | data[1] | ...)`.
    pub fn compute(self, key: &[u8], data: &[&[u8]]) -> Secret {
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(self.algorithm(), key));
        for part in data {
            ctx.update(part);
        }
        Secret::from_slice(ctx.sign().as_ref())
    }

    /// prf+(key, seed) truncated to `len` bytes: T1 | T2 | ... with
    /// T1 = prf(K, S | 0x01) and Tn = prf(K, Tn-1 | S | n).
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Result<Secret, CryptoError> {
        let blocks = len.div_ceil(self.output_len());
        if blocks > 255 {
            return Err(CryptoError::PrfPlusTooLong(len));
        }
        let key = hmac::Key::new(self.algorithm(), key);
        let mut out = Secret::new(Vec::with_capacity(blocks * self.output_len()));
        let mut previous = Secret::default();
        for n in 1..=blocks as u8 {
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(previous.expose());
            for part in seed {
                ctx.update(part);
            }
            ctx.update(&[n]);
            previous = Secret::from_slice(ctx.sign().as_ref());
            out.0.extend_from_slice(previous.expose());
        }
        out.0.truncate(len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4231 test case 2 ("Jefe") for every SHA-2 size, and RFC 2202 for SHA-1.
    #[test]
    fn hmac_matches_rfc4231_and_rfc2202() {
        let data: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        let cases = [
            (Prf::HmacSha1, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
            (
                Prf::HmacSha256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                Prf::HmacSha384,
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
            ),
            (
                Prf::HmacSha512,
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
        ];
        for (prf, expected) in cases {
            assert_eq!(
                hex::encode(prf.compute(b"Jefe", data).expose()),
                expected,
                "{prf:?}"
            );
        }
    }

    // RFC 4231 test case 6: a key longer than the block size is hashed first.
    #[test]
    fn hmac_sha256_with_long_key_matches_rfc4231() {
        let key = [0xaa; 131];
        let out = Prf::HmacSha256.compute(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(out.expose()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn prf_plus_chains_blocks_as_rfc7296_defines() {
        let key = b"key";
        let seed: &[&[u8]] = &[b"se", b"ed"];
        let t1 = Prf::HmacSha256.compute(key, &[b"seed", &[1]]);
        let t2 = Prf::HmacSha256.compute(key, &[t1.expose(), b"seed", &[2]]);
        let out = Prf::HmacSha256.prf_plus(key, seed, 40).unwrap();
        assert_eq!(&out.expose()[..32], t1.expose());
        assert_eq!(&out.expose()[32..], &t2.expose()[..8]);
        assert!(Prf::HmacSha256.prf_plus(key, seed, 255 * 32).is_ok());
        assert_eq!(
            Prf::HmacSha256.prf_plus(key, seed, 255 * 32 + 1),
            Err(CryptoError::PrfPlusTooLong(255 * 32 + 1))
        );
    }
}
