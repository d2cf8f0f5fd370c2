//! Protection of the SK and SKF payloads: AES-CBC with HMAC-SHA-2 (RFC 7296 §3.14),
//! AES-GCM-16 (RFC 5282) and ChaCha20-Poly1305 (RFC 7634).
//!
//! The authenticated part of a message is everything in front of the IV (header,
//! the SK/SKF generic header and, for SKF, the fragment numbers): the AEAD's
//! associated data, or, with CBC, the start of what the ICV covers (which goes on
//! through IV and ciphertext).

use super::cipher::{CbcKeys, Cipher, nonce};
use super::suite::{Encr, Integ};
use super::{CryptoError, Random, Secret};
use crate::wire::payload::{Payload, SkPayload, decode_chain, encode_chain, first_type};
use crate::wire::{DecodeError, EncodeError, Header, Message, Reader, Writer};
use aws_lc_rs::aead::Aad;
use aws_lc_rs::cipher::{DecryptionContext, EncryptionContext};
use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

/// Why an SK or SKF payload could not be built or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    /// Too short to hold IV, one cipher block (or the pad length) and ICV.
    #[error("encrypted payload of {0} bytes is too short")]
    Truncated(usize),
    /// The ciphertext is not a whole number of cipher blocks.
    #[error("ciphertext of {0} bytes is not a multiple of the block size")]
    NotBlockAligned(usize),
    /// ICV or AEAD tag did not verify.
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    /// The pad length points before the start of the plaintext.
    #[error("pad length {0} exceeds the decrypted data")]
    BadPadding(u8),
    /// The decrypted payloads did not decode.
    #[error("decrypted payloads: {0}")]
    Decode(#[from] DecodeError),
    /// The message was too large to encode.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The cipher could not be keyed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The keys protecting one direction of an IKE SA (SK_e and SK_a of one side).
pub struct SkKey {
    encr: Encr,
    cipher: Cipher,
    /// AEAD IVs are a counter: unique per key, which is all RFC 5282 §3.1 asks.
    next_iv: u64,
}

impl SkKey {
    /// Keys one direction from SK_e (salt included for AEAD) and SK_a (empty for AEAD).
    pub fn new(
        encr: Encr,
        integ: Option<Integ>,
        sk_e: &Secret,
        sk_a: &Secret,
    ) -> Result<Self, CryptoError> {
        let expect = |what, key: &Secret, expected: usize| {
            if key.len() == expected {
                Ok(())
            } else {
                Err(CryptoError::KeyLength {
                    what,
                    actual: key.len(),
                    expected,
                })
            }
        };
        expect("encryption", sk_e, encr.key_material_len())?;
        if let Some(integ) = integ.filter(|_| !encr.is_aead()) {
            expect("integrity", sk_a, integ.key_len())?;
        }
        let cipher = Cipher::new(encr, integ, sk_e, sk_a)?;
        Ok(Self {
            encr,
            cipher,
            next_iv: 0,
        })
    }

    fn icv_len(&self) -> usize {
        self.cipher.icv_len()
    }

    /// Padding plus the pad-length octet needed after `plain_len` bytes of payloads.
    fn padding_len(&self, plain_len: usize) -> usize {
        let block = self.encr.block_len();
        block - plain_len % block
    }

    /// IV + padded ciphertext + ICV for `plain_len` bytes of payloads.
    pub fn sealed_len(&self, plain_len: usize) -> usize {
        self.encr.iv_len() + plain_len + self.padding_len(plain_len) + self.icv_len()
    }

    /// The largest payload chunk whose sealed form fits in `available` bytes (0 if none).
    pub fn max_plain_len(&self, available: usize) -> usize {
        let room = available.saturating_sub(self.encr.iv_len() + self.icv_len());
        let block = self.encr.block_len();
        (room - room % block).saturating_sub(1)
    }

    /// The SK body (IV, payloads, padding, pad length, ICV) for `plain`, not yet sealed.
    fn unsealed_body(&self, plain: &[u8]) -> Vec<u8> {
        let iv_len = self.encr.iv_len();
        let pad = self.padding_len(plain.len());
        let mut body = vec![0u8; self.sealed_len(plain.len())];
        body[iv_len..iv_len + plain.len()].copy_from_slice(plain);
        // Padding octets stay zero; the last one counts them.
        body[iv_len + plain.len() + pad - 1] = (pad - 1) as u8;
        body
    }

    /// Encrypts in place the body that starts at `body_start` and runs to the end of
    /// `msg` (as laid out by [`SkKey::sealed_len`]), filling in IV and ICV.
    pub fn seal_in_place(
        &mut self,
        msg: &mut [u8],
        body_start: usize,
        rng: &mut dyn Random,
    ) -> Result<(), CryptoError> {
        let icv_len = self.icv_len();
        let iv_len = self.encr.iv_len();
        let icv_start = msg.len() - icv_len;
        let failed = || CryptoError::Unsupported(format!("{} encryption", self.encr));
        match &self.cipher {
            Cipher::Aead { key, salt } => {
                let iv = self.next_iv.to_be_bytes();
                self.next_iv += 1;
                let (aad, rest) = msg.split_at_mut(body_start);
                let (iv_slot, rest) = rest.split_at_mut(iv_len);
                iv_slot.copy_from_slice(&iv);
                let (plain, icv) = rest.split_at_mut(rest.len() - icv_len);
                let tag = key
                    .seal_in_place_separate_tag(nonce(salt, &iv), Aad::from(&*aad), plain)
                    .map_err(|_| failed())?;
                icv.copy_from_slice(tag.as_ref());
            }
            Cipher::Cbc(cbc) => {
                let CbcKeys { encrypt, mac, .. } = &**cbc;
                let mut iv = [0u8; 16];
                rng.fill(&mut iv);
                msg[body_start..body_start + iv_len].copy_from_slice(&iv);
                encrypt
                    .less_safe_encrypt(
                        &mut msg[body_start + iv_len..icv_start],
                        EncryptionContext::Iv128(iv.into()),
                    )
                    .map_err(|_| failed())?;
                let tag = hmac::sign(mac, &msg[..icv_start]);
                msg[icv_start..].copy_from_slice(&tag.as_ref()[..icv_len]);
            }
        }
        Ok(())
    }

    /// Verifies and decrypts the body of the last `body_len` bytes of `msg`; returns
    /// the payload bytes without padding.
    pub fn open(&self, msg: &[u8], body_len: usize) -> Result<Vec<u8>, SkError> {
        let iv_len = self.encr.iv_len();
        let icv_len = self.icv_len();
        let block = self.encr.block_len();
        if body_len > msg.len() || body_len < iv_len + block + icv_len {
            return Err(SkError::Truncated(body_len));
        }
        let body_start = msg.len() - body_len;
        let icv_start = msg.len() - icv_len;
        let iv = &msg[body_start..body_start + iv_len];
        let ciphertext = &msg[body_start + iv_len..icv_start];
        let mut plain = match &self.cipher {
            Cipher::Aead { key, salt } => {
                let mut in_out = msg[body_start + iv_len..].to_vec();
                let iv: [u8; 8] = iv.try_into().map_err(|_| SkError::Truncated(body_len))?;
                let len = key
                    .open_in_place(nonce(salt, &iv), Aad::from(&msg[..body_start]), &mut in_out)
                    .map_err(|_| SkError::IntegrityCheckFailed)?
                    .len();
                in_out.truncate(len);
                in_out
            }
            Cipher::Cbc(cbc) => {
                let CbcKeys { decrypt, mac, .. } = &**cbc;
                if !ciphertext.len().is_multiple_of(block) {
                    return Err(SkError::NotBlockAligned(ciphertext.len()));
                }
                let tag = hmac::sign(mac, &msg[..icv_start]);
                if !bool::from(tag.as_ref()[..icv_len].ct_eq(&msg[icv_start..])) {
                    return Err(SkError::IntegrityCheckFailed);
                }
                let iv: [u8; 16] = iv.try_into().map_err(|_| SkError::Truncated(body_len))?;
                let mut in_out = ciphertext.to_vec();
                decrypt
                    .decrypt(&mut in_out, DecryptionContext::Iv128(iv.into()))
                    .map_err(|_| SkError::IntegrityCheckFailed)?;
                in_out
            }
        };
        let pad = plain.last().copied().ok_or(SkError::Truncated(body_len))?;
        let keep = plain
            .len()
            .checked_sub(usize::from(pad) + 1)
            .ok_or(SkError::BadPadding(pad))?;
        plain.truncate(keep);
        Ok(plain)
    }
}

/// Encodes a payload chain on its own, as the plaintext of SK or SKF.
pub(super) fn encode_inner(inner: &[Payload]) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::new();
    encode_chain(inner, &mut w);
    w.finish()
}

/// Builds `HDR, SK {inner}` and encrypts it.
pub fn seal_message(
    key: &mut SkKey,
    header: &Header,
    inner: &[Payload],
    rng: &mut dyn Random,
) -> Result<Vec<u8>, SkError> {
    let first_payload = first_type(inner);
    seal_plain(key, header, &encode_inner(inner)?, rng, |data| {
        Payload::Sk(SkPayload {
            first_payload,
            data,
        })
    })
}

/// Builds `HDR` and the SK or SKF payload that `payload` makes around the unsealed
/// body of the encoded payloads `plain`, then encrypts it. `plain` need not decode,
/// so tests and fuzz targets can protect any bytes.
pub fn seal_plain(
    key: &mut SkKey,
    header: &Header,
    plain: &[u8],
    rng: &mut dyn Random,
    payload: impl FnOnce(Vec<u8>) -> Payload,
) -> Result<Vec<u8>, SkError> {
    let body = key.unsealed_body(plain);
    let body_len = body.len();
    let message = Message {
        header: header.clone(),
        payloads: vec![payload(body)],
    };
    let mut bytes = message.encode()?;
    let body_start = bytes.len() - body_len;
    key.seal_in_place(&mut bytes, body_start, rng)?;
    Ok(bytes)
}

/// Verifies and decrypts the SK payload that ends `datagram`, then decodes the
/// payloads inside it.
pub fn open_message(key: &SkKey, datagram: &[u8], sk: &SkPayload) -> Result<Vec<Payload>, SkError> {
    let plain = key.open(datagram, sk.data.len())?;
    Ok(decode_chain(sk.first_payload, &mut Reader::new(&plain))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;
    use crate::wire::payload::{NotifyPayload, VendorPayload};
    use crate::wire::{ExchangeType, Flags, IkeSpi, NotifyType};

    fn header() -> Header {
        Header {
            spi_i: IkeSpi(1),
            spi_r: IkeSpi(2),
            minor_version: 0,
            exchange: ExchangeType::INFORMATIONAL,
            flags: Flags::new(true, false),
            message_id: 5,
        }
    }

    fn inner() -> Vec<Payload> {
        vec![
            Payload::Notify(NotifyPayload::new(NotifyType::INITIAL_CONTACT, vec![])),
            Payload::Vendor(VendorPayload {
                id: b"esptun".to_vec(),
            }),
        ]
    }

    fn keys(encr: Encr, integ: Option<Integ>) -> (SkKey, SkKey) {
        let e = Secret::new((0..encr.key_material_len() as u8).collect());
        let a = Secret::new(vec![7; integ.map_or(0, Integ::key_len)]);
        (
            SkKey::new(encr, integ, &e, &a).unwrap(),
            SkKey::new(encr, integ, &e, &a).unwrap(),
        )
    }

    fn suites() -> Vec<(Encr, Option<Integ>)> {
        vec![
            (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha1)),
            (Encr::AesCbc { key_len: 16 }, Some(Integ::HmacSha256)),
            (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha384)),
            (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha512)),
            (Encr::AesGcm16 { key_len: 16 }, None),
            (Encr::AesGcm16 { key_len: 32 }, None),
            (Encr::ChaCha20Poly1305, None),
        ]
    }

    #[test]
    fn every_suite_round_trips_and_detects_tampering() {
        let mut rng = SeededRandom::new(1);
        for (encr, integ) in suites() {
            let (mut tx, rx) = keys(encr, integ);
            let bytes = seal_message(&mut tx, &header(), &inner(), &mut rng).unwrap();
            let msg = Message::decode(&bytes).unwrap();
            let Payload::Sk(sk) = &msg.payloads[0] else {
                panic!("no SK")
            };
            assert_eq!(open_message(&rx, &bytes, sk).unwrap(), inner(), "{encr}");
            for at in [0, 17, 30, bytes.len() / 2, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[at] ^= 0x40;
                assert_eq!(
                    rx.open(&bad, sk.data.len()),
                    Err(SkError::IntegrityCheckFailed),
                    "{encr} byte {at}"
                );
            }
        }
    }

    /// Windows' default IKE suite: the ICV is HMAC-SHA-1 over everything up to it
    /// (header, SK header, IV, ciphertext), truncated to 12 octets (RFC 2404, RFC 7296
    /// §3.14).
    #[test]
    fn hmac_sha1_96_icv_is_twelve_octets_over_the_whole_message() {
        let mut rng = SeededRandom::new(5);
        let (mut tx, rx) = keys(Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha1));
        let bytes = seal_message(&mut tx, &header(), &inner(), &mut rng).unwrap();
        let msg = Message::decode(&bytes).unwrap();
        let Payload::Sk(sk) = &msg.payloads[0] else {
            panic!("no SK")
        };
        // IV 16, ciphertext in whole blocks, ICV 12.
        assert_eq!((sk.data.len() - 16 - 12) % 16, 0);
        let (covered, icv) = bytes.split_at(bytes.len() - 12);
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[7; 20]),
            covered,
        );
        assert_eq!(icv, &mac.as_ref()[..12]);
        assert_eq!(open_message(&rx, &bytes, sk).unwrap(), inner());
    }

    #[test]
    fn aead_ivs_never_repeat() {
        let mut rng = SeededRandom::new(1);
        let (mut tx, _) = keys(Encr::AesGcm16 { key_len: 16 }, None);
        let a = seal_message(&mut tx, &header(), &inner(), &mut rng).unwrap();
        let b = seal_message(&mut tx, &header(), &inner(), &mut rng).unwrap();
        assert_ne!(a[32..40], b[32..40]);
        assert_ne!(a, b);
    }

    #[test]
    fn short_and_misaligned_bodies_are_rejected() {
        let (_, rx) = keys(Encr::AesCbc { key_len: 16 }, Some(Integ::HmacSha256));
        let msg = vec![0u8; 100];
        assert_eq!(rx.open(&msg, 40), Err(SkError::Truncated(40)));
        assert_eq!(rx.open(&msg, 200), Err(SkError::Truncated(200)));
        assert_eq!(
            rx.open(&msg, 16 + 17 + 16),
            Err(SkError::NotBlockAligned(17))
        );
    }

    #[test]
    fn wrong_key_lengths_are_refused() {
        let e = Secret::new(vec![0; 16]);
        assert!(matches!(
            SkKey::new(Encr::AesGcm16 { key_len: 16 }, None, &e, &Secret::default()),
            Err(CryptoError::KeyLength { expected: 20, .. })
        ));
    }

    #[test]
    fn max_plain_len_fits_exactly() {
        for (encr, integ) in suites() {
            let (k, _) = keys(encr, integ);
            for available in [64, 100, 1000, 1219] {
                let n = k.max_plain_len(available);
                assert!(k.sealed_len(n) <= available, "{encr} {available}");
                assert!(k.sealed_len(n + 1) > available, "{encr} {available}");
            }
        }
    }

    /// Opens `aad | iv | ciphertext | tag` as an SK payload after `aad`. The SK
    /// format reads the last plaintext octet as the pad length, so the vector's
    /// plaintext comes back without its last `pad + 1` octets.
    fn open_aead_vector(
        encr: Encr,
        key_salt: &str,
        aad: &str,
        iv: &str,
        ct_tag: &str,
        plain: &[u8],
    ) {
        let key = SkKey::new(
            encr,
            None,
            &Secret::new(hex::decode(key_salt).unwrap()),
            &Secret::default(),
        )
        .unwrap();
        let msg = hex::decode(format!("{aad}{iv}{ct_tag}")).unwrap();
        let body_len = msg.len() - aad.len() / 2;
        let pad = usize::from(*plain.last().unwrap());
        assert_eq!(
            key.open(&msg, body_len).unwrap(),
            plain[..plain.len() - pad - 1]
        );
        let mut tampered = msg.clone();
        tampered[0] ^= 1; // the AAD is authenticated too
        assert_eq!(
            key.open(&tampered, body_len),
            Err(SkError::IntegrityCheckFailed)
        );
    }

    #[test]
    fn chacha20_poly1305_rfc8439_aead_vector() {
        // RFC 8439 §2.8.2; its 12-octet nonce is the RFC 7634 salt (4) and IV (8).
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        open_aead_vector(
            Encr::ChaCha20Poly1305,
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f07000000",
            "50515253c0c1c2c3c4c5c6c7",
            "4041424344454647",
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b61161ae10b594f09e26a7e902ecbd0600691",
            plain,
        );
    }

    #[test]
    fn aes_gcm_vectors_from_the_gcm_specification() {
        // McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 4 (AES-128)
        // and 16 (AES-256): 60-octet plaintext, 20-octet AAD, 96-bit IV = salt | IV.
        let plain = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let aad = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
        open_aead_vector(
            Encr::AesGcm16 { key_len: 16 },
            "feffe9928665731c6d6a8f9467308308cafebabe",
            aad,
            "facedbaddecaf888",
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e0915bc94fbc3221a5db94fae95ae7121a47",
            &plain,
        );
        open_aead_vector(
            Encr::AesGcm16 { key_len: 32 },
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308cafebabe",
            aad,
            "facedbaddecaf888",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f66276fc6ece0f4e1768cddf8853bb2d551b",
            &plain,
        );
    }
}
