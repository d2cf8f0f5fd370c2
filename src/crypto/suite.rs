//! Negotiated algorithms and the key sizes they need.

use super::CryptoError;
use super::prf::Prf;
use crate::wire::payload::{Proposal, Transform};
use crate::wire::{EncrId, IntegId, KeGroup, PrfId, TransformType};
use aws_lc_rs::hmac;
use std::fmt;

/// Salt taken from the key material by AES-GCM (RFC 4106/5282) and ChaCha20-Poly1305 (RFC 7634).
pub const AEAD_SALT_LEN: usize = 4;
/// Explicit IV sent with AEAD ciphers.
pub const AEAD_IV_LEN: usize = 8;
/// AES block and CBC IV size.
pub const AES_BLOCK_LEN: usize = 16;
/// ICV length of the 16-octet AEAD variants.
pub const AEAD_ICV_LEN: usize = 16;

/// A negotiated encryption transform (for IKE's SK payload and for ESP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encr {
    /// AES-CBC (RFC 3602), key of 16 or 32 bytes; needs an integrity transform.
    AesCbc {
        /// Key length in bytes.
        key_len: usize,
    },
    /// AES-GCM with a 16-octet ICV (RFC 4106, RFC 5282), key of 16 or 32 bytes plus salt.
    AesGcm16 {
        /// Key length in bytes, without the salt.
        key_len: usize,
    },
    /// ChaCha20-Poly1305 (RFC 7634): 32-byte key plus salt.
    ChaCha20Poly1305,
}

impl Encr {
    /// The algorithm for a transform ID and key-length attribute, if implemented.
    pub fn from_transform(id: EncrId, key_bits: Option<u16>) -> Option<Self> {
        let aes_key_len = || match key_bits {
            Some(128) => Some(16),
            Some(256) => Some(32),
            _ => None,
        };
        Some(match id {
            EncrId::AES_CBC => Self::AesCbc {
                key_len: aes_key_len()?,
            },
            EncrId::AES_GCM_16 => Self::AesGcm16 {
                key_len: aes_key_len()?,
            },
            // RFC 7634 §2: no key length attribute.
            EncrId::CHACHA20_POLY1305 if key_bits.is_none() => Self::ChaCha20Poly1305,
            _ => return None,
        })
    }

    /// The transform that offers this algorithm.
    pub fn transform(self) -> Transform {
        match self {
            Self::AesCbc { key_len } => Transform::with_key_length(
                TransformType::ENCR,
                EncrId::AES_CBC.0,
                (key_len * 8) as u16,
            ),
            Self::AesGcm16 { key_len } => Transform::with_key_length(
                TransformType::ENCR,
                EncrId::AES_GCM_16.0,
                (key_len * 8) as u16,
            ),
            Self::ChaCha20Poly1305 => {
                Transform::new(TransformType::ENCR, EncrId::CHACHA20_POLY1305.0)
            }
        }
    }

    /// Bytes of key material this transform takes from prf+, salt included.
    pub fn key_material_len(self) -> usize {
        match self {
            Self::AesCbc { key_len } => key_len,
            Self::AesGcm16 { key_len } => key_len + AEAD_SALT_LEN,
            Self::ChaCha20Poly1305 => 32 + AEAD_SALT_LEN,
        }
    }

    /// True for combined-mode ciphers, which take no integrity transform.
    pub fn is_aead(self) -> bool {
        !matches!(self, Self::AesCbc { .. })
    }

    /// Size of the IV sent in each message or packet.
    pub fn iv_len(self) -> usize {
        if self.is_aead() {
            AEAD_IV_LEN
        } else {
            AES_BLOCK_LEN
        }
    }

    /// The plaintext-plus-padding alignment the cipher needs (RFC 4303 §2.4 asks for 4 at least).
    pub fn block_len(self) -> usize {
        if self.is_aead() { 1 } else { AES_BLOCK_LEN }
    }
}

impl fmt::Display for Encr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AesCbc { key_len } => write!(f, "AES_CBC-{}", key_len * 8),
            Self::AesGcm16 { key_len } => write!(f, "AES_GCM_16-{}", key_len * 8),
            Self::ChaCha20Poly1305 => f.write_str("CHACHA20_POLY1305"),
        }
    }
}

/// A negotiated integrity transform: HMAC-SHA-2 truncated to half its output (RFC 4868),
/// or HMAC-SHA-1 truncated to 96 bits (RFC 2404) for Windows' default proposals, which
/// configuration allows only with `legacy_windows_proposals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integ {
    /// AUTH_HMAC_SHA1_96.
    HmacSha1,
    /// AUTH_HMAC_SHA2_256_128.
    HmacSha256,
    /// AUTH_HMAC_SHA2_384_192.
    HmacSha384,
    /// AUTH_HMAC_SHA2_512_256.
    HmacSha512,
}

impl Integ {
    /// The algorithm for a transform ID, if implemented.
    pub fn from_id(id: IntegId) -> Option<Self> {
        Some(match id {
            IntegId::HMAC_SHA1_96 => Self::HmacSha1,
            IntegId::HMAC_SHA2_256_128 => Self::HmacSha256,
            IntegId::HMAC_SHA2_384_192 => Self::HmacSha384,
            IntegId::HMAC_SHA2_512_256 => Self::HmacSha512,
            _ => return None,
        })
    }

    /// The transform ID.
    pub fn id(self) -> IntegId {
        match self {
            Self::HmacSha1 => IntegId::HMAC_SHA1_96,
            Self::HmacSha256 => IntegId::HMAC_SHA2_256_128,
            Self::HmacSha384 => IntegId::HMAC_SHA2_384_192,
            Self::HmacSha512 => IntegId::HMAC_SHA2_512_256,
        }
    }

    /// Key length: the full hash output (RFC 4868 §2.1.1, RFC 2404 §3).
    pub fn key_len(self) -> usize {
        self.algorithm().digest_algorithm().output_len()
    }

    /// Length of the truncated ICV: half the hash for SHA-2, 96 bits for SHA-1.
    pub fn icv_len(self) -> usize {
        match self {
            Self::HmacSha1 => 12,
            _ => self.key_len() / 2,
        }
    }

    pub(crate) fn algorithm(self) -> hmac::Algorithm {
        match self {
            Self::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::HmacSha256 => hmac::HMAC_SHA256,
            Self::HmacSha384 => hmac::HMAC_SHA384,
            Self::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

impl fmt::Display for Integ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.id().fmt(f)
    }
}

/// The algorithms of an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    /// SK payload encryption.
    pub encr: Encr,
    /// SK payload integrity, absent for AEAD.
    pub integ: Option<Integ>,
    /// The PRF for key derivation and AUTH.
    pub prf: Prf,
    /// The key exchange group.
    pub group: KeGroup,
}

impl IkeSuite {
    /// The suite of a chosen IKE proposal (one transform of each type).
    pub fn from_proposal(p: &Proposal) -> Result<Self, CryptoError> {
        let one = |kind: TransformType| {
            let mut it = p.transforms.iter().filter(|t| t.kind == kind);
            match (it.next(), it.next()) {
                (t, None) => Ok(t),
                _ => Err(CryptoError::Unsupported(format!(
                    "several {kind} transforms in a chosen proposal"
                ))),
            }
        };
        let unsupported = |t: &Transform| CryptoError::Unsupported(format!("{} {}", t.kind, t.id));
        let encr_t = one(TransformType::ENCR)?
            .ok_or(CryptoError::Unsupported("proposal without ENCR".into()))?;
        let encr = Encr::from_transform(EncrId(encr_t.id), encr_t.key_length())
            .ok_or_else(|| unsupported(encr_t))?;
        let prf_t = one(TransformType::PRF)?
            .ok_or(CryptoError::Unsupported("proposal without PRF".into()))?;
        let prf = Prf::from_id(PrfId(prf_t.id)).ok_or_else(|| unsupported(prf_t))?;
        let integ = match one(TransformType::INTEG)? {
            Some(t) if t.id == IntegId::NONE.0 => None,
            Some(t) => Some(Integ::from_id(IntegId(t.id)).ok_or_else(|| unsupported(t))?),
            None => None,
        };
        if encr.is_aead() == integ.is_some() {
            return Err(CryptoError::Unsupported(format!(
                "{encr} {} an integrity transform",
                if encr.is_aead() { "with" } else { "without" }
            )));
        }
        let group = KeGroup(one(TransformType::KE)?.map_or(0, |t| t.id));
        Ok(Self {
            encr,
            integ,
            prf,
            group,
        })
    }
}

impl fmt::Display for IkeSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encr)?;
        if let Some(integ) = self.integ {
            write!(f, "/{integ}")?;
        }
        write!(f, "/{}/{}", self.prf.id(), self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ProtocolId;

    fn proposal(transforms: Vec<Transform>) -> Proposal {
        Proposal {
            number: 1,
            protocol: ProtocolId::IKE,
            spi: vec![],
            transforms,
        }
    }

    #[test]
    fn suite_from_aead_and_cbc_proposals() {
        let gcm = proposal(vec![
            Encr::AesGcm16 { key_len: 16 }.transform(),
            Transform::new(TransformType::PRF, PrfId::HMAC_SHA2_256.0),
            Transform::new(TransformType::KE, KeGroup::CURVE25519.0),
        ]);
        let s = IkeSuite::from_proposal(&gcm).unwrap();
        assert_eq!(s.encr.key_material_len(), 20);
        assert_eq!(s.to_string(), "AES_GCM_16-128/HMAC_SHA2_256/CURVE25519");

        let cbc = proposal(vec![
            Encr::AesCbc { key_len: 32 }.transform(),
            Transform::new(TransformType::INTEG, IntegId::HMAC_SHA2_256_128.0),
            Transform::new(TransformType::PRF, PrfId::HMAC_SHA2_256.0),
            Transform::new(TransformType::KE, KeGroup::MODP_2048.0),
        ]);
        let s = IkeSuite::from_proposal(&cbc).unwrap();
        assert_eq!(
            (s.encr.key_material_len(), s.integ.unwrap().key_len()),
            (32, 32)
        );
    }

    /// RFC 2202 §3 test cases 1, 2 and 6 for HMAC-SHA-1, truncated to 96 bits as
    /// AUTH_HMAC_SHA1_96 sends them (RFC 2404 §2), with a 20-byte key where RFC 2202
    /// has one (RFC 2404 §3 keys it with 160 bits).
    #[test]
    fn hmac_sha1_96_matches_rfc2202() {
        let integ = Integ::from_id(IntegId::HMAC_SHA1_96).unwrap();
        assert_eq!((integ.key_len(), integ.icv_len()), (20, 12));
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
        ];
        for (key, data, full) in cases {
            let tag = hmac::sign(&hmac::Key::new(integ.algorithm(), key), data);
            assert_eq!(hex::encode(tag.as_ref()), full);
            assert_eq!(
                hex::encode(&tag.as_ref()[..integ.icv_len()]),
                full[..24],
                "truncated to 96 bits"
            );
        }
    }

    #[test]
    fn rejects_cbc_without_integrity_and_unknown_algorithms() {
        let cbc = proposal(vec![
            Encr::AesCbc { key_len: 16 }.transform(),
            Transform::new(TransformType::PRF, PrfId::HMAC_SHA2_256.0),
        ]);
        assert!(IkeSuite::from_proposal(&cbc).is_err());
        assert_eq!(Encr::from_transform(EncrId::AES_CBC, Some(100)), None);
        assert_eq!(
            Encr::from_transform(EncrId::CHACHA20_POLY1305, Some(256)),
            None
        );
    }
}
