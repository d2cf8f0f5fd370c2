//! The keyed ciphers that IKE's SK payloads and ESP share: an AEAD with its salt
//! (AES-GCM-16, ChaCha20-Poly1305) or AES-CBC with an HMAC-SHA-2 key. Each protocol
//! frames, pads and chooses IVs its own way; the keying is the same.

use super::suite::{AEAD_ICV_LEN, Encr, Integ};
use super::{CryptoError, Secret};
use aws_lc_rs::aead::{self, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, AES_256, DecryptingKey, EncryptingKey, UnboundCipherKey};
use aws_lc_rs::hmac;

/// One direction's keys.
pub enum Cipher {
    /// AES-GCM-16 or ChaCha20-Poly1305; the salt is the key material's last 4 bytes.
    Aead {
        /// The AEAD key.
        key: LessSafeKey,
        /// The nonce's fixed part.
        salt: [u8; 4],
    },
    /// AES-CBC, authenticated by HMAC. Boxed: its keys take 2 KiB, which inline made
    /// every Cipher that size, AEAD ones too (two per IKE SA, two per Child SA).
    Cbc(Box<CbcKeys>),
}

/// AES-CBC's keys both ways and the HMAC's.
pub struct CbcKeys {
    /// AES-CBC encryption.
    pub encrypt: EncryptingKey,
    /// AES-CBC decryption.
    pub decrypt: DecryptingKey,
    /// Which HMAC, for the ICV length.
    pub integ: Integ,
    /// The HMAC key.
    pub mac: hmac::Key,
}

impl Cipher {
    /// Keys `encr` from `encryption` (salt last for AEAD) and, for CBC, `integ` from
    /// `integrity`.
    pub fn new(
        encr: Encr,
        integ: Option<Integ>,
        encryption: &Secret,
        integrity: &Secret,
    ) -> Result<Self, CryptoError> {
        let bad = |what: &str| CryptoError::Unsupported(format!("{encr} {what}"));
        match (encr, integ) {
            (Encr::AesCbc { key_len }, Some(integ)) => {
                let alg = if key_len == 16 { &AES_128 } else { &AES_256 };
                let unbound =
                    || UnboundCipherKey::new(alg, encryption.expose()).map_err(|_| bad("key"));
                Ok(Self::Cbc(Box::new(CbcKeys {
                    encrypt: EncryptingKey::cbc(unbound()?).map_err(|_| bad("key"))?,
                    decrypt: DecryptingKey::cbc(unbound()?).map_err(|_| bad("key"))?,
                    integ,
                    mac: hmac::Key::new(integ.algorithm(), integrity.expose()),
                })))
            }
            (Encr::AesCbc { .. }, None) => Err(bad("without integrity")),
            (aead_encr, _) => {
                let alg = match aead_encr {
                    Encr::AesGcm16 { key_len: 16 } => &aead::AES_128_GCM,
                    Encr::AesGcm16 { .. } => &aead::AES_256_GCM,
                    _ => &aead::CHACHA20_POLY1305,
                };
                let (key, salt) = encryption
                    .expose()
                    .split_at(encryption.len().saturating_sub(4));
                Ok(Self::Aead {
                    key: LessSafeKey::new(UnboundKey::new(alg, key).map_err(|_| bad("key"))?),
                    salt: salt.try_into().map_err(|_| bad("salt"))?,
                })
            }
        }
    }

    /// Bytes of the ICV (the AEAD tag, or the truncated HMAC).
    pub fn icv_len(&self) -> usize {
        match self {
            Self::Aead { .. } => AEAD_ICV_LEN,
            Self::Cbc(cbc) => cbc.integ.icv_len(),
        }
    }
}

/// The AEAD nonce: salt, then the 8-byte IV (RFC 4106 §4, RFC 5282, RFC 7634).
pub fn nonce(salt: &[u8; 4], iv: &[u8]) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(iv);
    Nonce::assume_unique_for_key(n)
}
