//! Key derivation: SKEYSEED and the IKE SA keys (RFC 7296 §2.14), IKE SA rekeying
//! (§2.18), and Child SA KEYMAT (§2.17).

use super::suite::{Encr, IkeSuite, Integ};
use super::{CryptoError, Prf, Secret};
use crate::wire::IkeSpi;

/// SKEYSEED = prf(Ni | Nr, g^ir).
pub fn skeyseed(prf: Prf, ni: &[u8], nr: &[u8], g_ir: &Secret) -> Secret {
    let key = Secret::new([ni, nr].concat());
    prf.compute(key.expose(), &[g_ir.expose()])
}

/// SKEYSEED of a rekeyed IKE SA = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF.
pub fn rekey_skeyseed(
    old_prf: Prf,
    old_sk_d: &Secret,
    g_ir: &Secret,
    ni: &[u8],
    nr: &[u8],
) -> Secret {
    old_prf.compute(old_sk_d.expose(), &[g_ir.expose(), ni, nr])
}

/// The seven keys of an IKE SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeKeys {
    /// Derives Child SA keys and the next SKEYSEED.
    pub sk_d: Secret,
    /// Integrity key for the initiator's messages (empty with AEAD).
    pub sk_ai: Secret,
    /// Integrity key for the responder's messages (empty with AEAD).
    pub sk_ar: Secret,
    /// Encryption key (with salt for AEAD) for the initiator's messages.
    pub sk_ei: Secret,
    /// Encryption key (with salt for AEAD) for the responder's messages.
    pub sk_er: Secret,
    /// Keys the initiator's AUTH payload.
    pub sk_pi: Secret,
    /// Keys the responder's AUTH payload.
    pub sk_pr: Secret,
}

impl IkeKeys {
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    pub fn derive(
        suite: &IkeSuite,
        skeyseed: &Secret,
        ni: &[u8],
        nr: &[u8],
        spi_i: IkeSpi,
        spi_r: IkeSpi,
    ) -> Result<Self, CryptoError> {
        let prf_len = suite.prf.output_len();
        let integ_len = suite.integ.map_or(0, Integ::key_len);
        let encr_len = suite.encr.key_material_len();
        let lens = [
            prf_len, integ_len, integ_len, encr_len, encr_len, prf_len, prf_len,
        ];
        let total = lens.iter().sum();
        let spi_i = spi_i.0.to_be_bytes();
        let spi_r = spi_r.0.to_be_bytes();
        let stream = suite
            .prf
            .prf_plus(skeyseed.expose(), &[ni, nr, &spi_i, &spi_r], total)?;
        let [sk_d, sk_ai, sk_ar, sk_ei, sk_er, sk_pi, sk_pr] = split(&stream, lens);
        Ok(Self {
            sk_d,
            sk_ai,
            sk_ar,
            sk_ei,
            sk_er,
            sk_pi,
            sk_pr,
        })
    }
}

/// The keys of a Child SA, by direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildKeys {
    /// Encryption key (with salt for AEAD) for initiator-to-responder traffic.
    pub encr_i: Secret,
    /// Integrity key for initiator-to-responder traffic (empty with AEAD).
    pub integ_i: Secret,
    /// Encryption key for responder-to-initiator traffic.
    pub encr_r: Secret,
    /// Integrity key for responder-to-initiator traffic.
    pub integ_r: Secret,
}

impl ChildKeys {
    /// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), split as encr_i | integ_i | encr_r | integ_r.
    pub fn derive(
        prf: Prf,
        sk_d: &Secret,
        encr: Encr,
        integ: Option<Integ>,
        pfs_g_ir: Option<&Secret>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<Self, CryptoError> {
        let encr_len = encr.key_material_len();
        let integ_len = integ.map_or(0, Integ::key_len);
        let lens = [encr_len, integ_len, encr_len, integ_len];
        let g_ir = pfs_g_ir.map_or(&[][..], Secret::expose);
        let stream = prf.prf_plus(sk_d.expose(), &[g_ir, ni, nr], lens.iter().sum())?;
        let [encr_i, integ_i, encr_r, integ_r] = split(&stream, lens);
        Ok(Self {
            encr_i,
            integ_i,
            encr_r,
            integ_r,
        })
    }
}

/// Cuts a key stream into consecutive pieces of the given lengths.
fn split<const N: usize>(stream: &Secret, lens: [usize; N]) -> [Secret; N] {
    let mut at = 0;
    lens.map(|len| {
        let piece = Secret::from_slice(&stream.expose()[at..at + len]);
        at += len;
        piece
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::KeGroup;

    #[test]
    fn ike_keys_are_consecutive_prf_plus_pieces() {
        let suite = IkeSuite {
            encr: Encr::AesCbc { key_len: 16 },
            integ: Some(Integ::HmacSha256),
            prf: Prf::HmacSha256,
            group: KeGroup::MODP_2048,
        };
        let seed = Secret::from_slice(b"skeyseed");
        let keys = IkeKeys::derive(&suite, &seed, b"ni", b"nr", IkeSpi(1), IkeSpi(2)).unwrap();
        let spis = [1u64.to_be_bytes(), 2u64.to_be_bytes()].concat();
        let stream = Prf::HmacSha256
            .prf_plus(b"skeyseed", &[b"ninr", &spis], 32 * 5 + 16 * 2)
            .unwrap();
        let s = stream.expose();
        assert_eq!(keys.sk_d.expose(), &s[..32]);
        assert_eq!(keys.sk_ar.expose(), &s[64..96]);
        assert_eq!(keys.sk_ei.expose(), &s[96..112]);
        assert_eq!(keys.sk_pr.expose(), &s[160..]);
    }

    #[test]
    fn child_keys_with_pfs_prepend_g_ir() {
        let sk_d = Secret::from_slice(b"sk_d");
        let g = Secret::from_slice(b"g_ir");
        let gcm = Encr::AesGcm16 { key_len: 16 };
        let with =
            ChildKeys::derive(Prf::HmacSha256, &sk_d, gcm, None, Some(&g), b"n1", b"n2").unwrap();
        let stream = Prf::HmacSha256
            .prf_plus(b"sk_d", &[b"g_irn1n2"], 40)
            .unwrap();
        assert_eq!(with.encr_i.expose(), &stream.expose()[..20]);
        assert_eq!(with.encr_r.expose(), &stream.expose()[20..]);
        assert!(with.integ_i.is_empty());
        let without =
            ChildKeys::derive(Prf::HmacSha256, &sk_d, gcm, None, None, b"n1", b"n2").unwrap();
        assert_ne!(with.encr_i, without.encr_i);
    }
}
