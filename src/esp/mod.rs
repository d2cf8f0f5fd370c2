//! Sans-IO ESP (RFC 4303) for tunnel mode: one SA per direction, sealing and opening
//! in place, or from where the packet is into another buffer. AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634) use the sequence
//! number as IV; AES-CBC (RFC 3602) with HMAC-SHA2 (RFC 4868) uses an IV that is the
//! sequence number encrypted under the SA's key (unpredictable without any RNG).
//!
//! ```text
//! | SPI (4) | Sequence (4) | IV | payload | padding | pad len | next header | ICV |
//! ```

pub mod replay;

use crate::crypto::cipher::{CbcKeys, Cipher, nonce};
use crate::crypto::{CryptoError, Encr, Integ, Secret};
use aws_lc_rs::aead::Aad;
use aws_lc_rs::cipher::{DecryptionContext, EncryptionContext};
use aws_lc_rs::hmac;
use replay::{Class, ReplayWindow};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use subtle::ConstantTimeEq;

/// SPI and sequence number.
pub const ESP_HEADER_LEN: usize = 8;
/// Room to leave in front of an inner packet so any suite's header and IV fit.
pub const HEADROOM: usize = ESP_HEADER_LEN + 16;
/// IP protocol numbers of the inner packet (the ESP next header).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// IPv6 in IPv6/IPv4 tunnels.
pub const NEXT_HEADER_IPV6: u8 = 41;

/// Why a packet was not sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EspError {
    /// Shorter than header, IV, trailer and ICV.
    #[error("packet too short")]
    Truncated,
    /// Not for this SA.
    #[error("SPI {0:08x} is not this SA's")]
    WrongSpi(u32),
    /// Already received, or behind the window.
    #[error("replayed sequence number {0}")]
    Replay(u64),
    /// The ICV did not verify.
    #[error("integrity check failed")]
    BadIcv,
    /// Pad length or padding bytes are wrong, or the ciphertext is not block-aligned.
    #[error("bad padding")]
    BadPadding,
    /// Every sequence number of this SA is used: it must be rekeyed (RFC 4303 §3.3.3).
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
    /// Not enough headroom in front of the packet.
    #[error("no headroom for the ESP header")]
    NoHeadroom,
    /// Not enough room after the packet for padding, trailer and ICV.
    #[error("no room after the packet for the ESP trailer and ICV")]
    NoRoom,
}

/// The IV length: the sequence number for AEAD, one AES block for CBC.
fn iv_len(cipher: &Cipher) -> usize {
    match cipher {
        Cipher::Aead { .. } => 8,
        Cipher::Cbc(_) => 16,
    }
}

/// Payload plus pad length and next header must fill whole blocks (4 bytes for AEAD).
fn align(cipher: &Cipher) -> usize {
    match cipher {
        Cipher::Aead { .. } => 4,
        Cipher::Cbc(_) => 16,
    }
}

/// What keys one direction of a Child SA.
#[derive(Debug, Clone, Copy)]
pub struct SaKeys<'a> {
    /// The SPI the receiver chose.
    pub spi: u32,
    /// Encryption algorithm.
    pub encr: Encr,
    /// Integrity algorithm, None for AEAD.
    pub integ: Option<Integ>,
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// Encryption key, with the salt for AEAD.
    pub encryption: &'a Secret,
    /// Integrity key, empty for AEAD.
    pub integrity: &'a Secret,
}

/// The AAD of AEAD ESP (RFC 4106 §5): SPI, then the high sequence bits with ESN, then the low.
/// On the stack: this runs for every packet.
fn aead_aad(esn: bool, header: &[u8], seq_hi: [u8; 4]) -> ([u8; 12], usize) {
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&header[..4]);
    if esn {
        aad[4..8].copy_from_slice(&seq_hi);
        aad[8..].copy_from_slice(&header[4..8]);
        (aad, 12)
    } else {
        aad[4..8].copy_from_slice(&header[4..8]);
        (aad, 8)
    }
}

/// An outbound SA: seals packets with consecutive sequence numbers.
/// Shared by every worker that sends on it: the sequence number is one atomic, so
/// sealing takes `&self` and no lock.
pub struct OutboundSa {
    spi: u32,
    esn: bool,
    next_seq: AtomicU64,
    cipher: Cipher,
}

/// An inbound SA: opens packets and rejects replays.
pub struct InboundSa {
    spi: u32,
    esn: bool,
    window: ReplayWindow,
    cipher: Cipher,
}

impl OutboundSa {
    /// Keys an outbound SA.
    pub fn new(keys: &SaKeys<'_>) -> Result<Self, CryptoError> {
        Ok(Self {
            spi: keys.spi,
            esn: keys.esn,
            next_seq: AtomicU64::new(1),
            cipher: Cipher::new(keys.encr, keys.integ, keys.encryption, keys.integrity)?,
        })
    }

    /// The largest inner packet whose ESP packet fits in `room` bytes.
    pub fn max_payload(&self, room: usize) -> usize {
        let blocks =
            room.saturating_sub(ESP_HEADER_LEN + iv_len(&self.cipher) + self.cipher.icv_len());
        (blocks - blocks % align(&self.cipher)).saturating_sub(2)
    }

    /// Seals the inner packet at `buf[start..start + len]` into ESP in place: the
    /// header and IV go into the headroom before `start`, padding, trailer and ICV
    /// after the packet, inside `buf` (nothing grows or is zeroed). Returns the ESP
    /// packet's range in `buf`.
    pub fn seal(
        &self,
        buf: &mut [u8],
        start: usize,
        len: usize,
        next_header: u8,
    ) -> Result<Range<usize>, EspError> {
        self.seal_into(None, buf, start, len, next_header)
    }

    /// Seals `inner` into ESP in `buf` as [`OutboundSa::seal`] lays it out with the
    /// inner packet at `start`. AEAD suites encrypt straight out of `inner` (a
    /// segment inside a super-packet) into `buf`: no copy of the plaintext first.
    pub fn seal_from(
        &self,
        inner: &[u8],
        buf: &mut [u8],
        start: usize,
        next_header: u8,
    ) -> Result<Range<usize>, EspError> {
        self.seal_into(Some(inner), buf, start, inner.len(), next_header)
    }

    /// Both seals: the inner packet is `source`, or `buf[start..start + len]` in place.
    fn seal_into(
        &self,
        source: Option<&[u8]>,
        buf: &mut [u8],
        start: usize,
        len: usize,
        next_header: u8,
    ) -> Result<Range<usize>, EspError> {
        let iv_len = iv_len(&self.cipher);
        let head = start
            .checked_sub(ESP_HEADER_LEN + iv_len)
            .ok_or(EspError::NoHeadroom)?;
        let align = align(&self.cipher);
        let pad = (align - (len + 2) % align) % align;
        let payload_end = start + len + pad + 2;
        let end = payload_end + self.cipher.icv_len();
        // Checked before a sequence number is spent on a packet that cannot go out.
        if end > buf.len() {
            return Err(EspError::NoRoom);
        }
        // Relaxed is enough: uniqueness comes from the atomic increment itself. The
        // counter cannot wrap: 2^64 packets take centuries at any line rate.
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let limit = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if seq > limit {
            return Err(EspError::SequenceExhausted);
        }
        // Padding (1, 2, 3, ...), pad length and next header: less than a block and two.
        let mut trailer = [0u8; 16 + 1];
        for (b, i) in trailer[..pad].iter_mut().zip(1u8..) {
            *b = i;
        }
        trailer[pad] = pad as u8;
        trailer[pad + 1] = next_header;
        let trailer = &trailer[..pad + 2];
        buf[head..head + 4].copy_from_slice(&self.spi.to_be_bytes());
        buf[head + 4..head + 8].copy_from_slice(&(seq as u32).to_be_bytes());
        let seq_hi = ((seq >> 32) as u32).to_be_bytes();
        match &self.cipher {
            Cipher::Aead { key, salt } => {
                let iv = seq.to_be_bytes();
                buf[head + 8..start].copy_from_slice(&iv);
                let (aad, aad_len) = aead_aad(self.esn, &buf[head..head + 8], seq_hi);
                let (nonce, aad) = (nonce(salt, &iv), Aad::from(&aad[..aad_len]));
                // The trailer is encrypted from the stack, after the packet.
                let (body, trailer_and_icv) = buf[start..end].split_at_mut(len);
                match source {
                    Some(inner) => key.seal_out_of_place_scatter(
                        nonce,
                        aad,
                        inner,
                        body,
                        trailer,
                        trailer_and_icv,
                    ),
                    None => key.seal_in_place_scatter(nonce, aad, body, trailer, trailer_and_icv),
                }
                .map_err(|_| EspError::BadIcv)?;
            }
            Cipher::Cbc(cbc) => {
                if let Some(inner) = source {
                    buf[start..start + len].copy_from_slice(inner);
                }
                buf[start + len..payload_end].copy_from_slice(trailer);
                let CbcKeys {
                    encrypt,
                    integ,
                    mac,
                    ..
                } = &**cbc;
                // The IV is the sequence number encrypted under the SA's own key (one
                // CBC block from a zero IV is the block cipher itself): unpredictable
                // and never repeated, as SP 800-38A appendix C recommends.
                let mut iv = [0u8; 16];
                iv[8..].copy_from_slice(&seq.to_be_bytes());
                encrypt
                    .less_safe_encrypt(&mut iv, EncryptionContext::Iv128([0; 16].into()))
                    .map_err(|_| EspError::BadPadding)?;
                buf[head + 8..start].copy_from_slice(&iv);
                encrypt
                    .less_safe_encrypt(
                        &mut buf[start..payload_end],
                        EncryptionContext::Iv128(iv.into()),
                    )
                    .map_err(|_| EspError::BadPadding)?;
                let mut ctx = hmac::Context::with_key(mac);
                ctx.update(&buf[head..payload_end]);
                if self.esn {
                    ctx.update(&seq_hi);
                }
                let icv = ctx.sign();
                buf[payload_end..end].copy_from_slice(&icv.as_ref()[..integ.icv_len()]);
            }
        }
        Ok(head..end)
    }
}

impl InboundSa {
    /// Keys an inbound SA with a replay window of at least `window` packets.
    pub fn new(keys: &SaKeys<'_>, window: u64) -> Result<Self, CryptoError> {
        Self::of_class(keys, window, Class::ALL)
    }

    /// Keys one worker's part of an SA spread over several: it opens the packets of
    /// sequence number class `class` and refuses the others as replays.
    pub fn of_class(keys: &SaKeys<'_>, window: u64, class: Class) -> Result<Self, CryptoError> {
        Ok(Self {
            spi: keys.spi,
            esn: keys.esn,
            window: ReplayWindow::of_class(window, class),
            cipher: Cipher::new(keys.encr, keys.integ, keys.encryption, keys.integrity)?,
        })
    }

    /// Verifies, decrypts in place and records an ESP packet; returns the range of the
    /// inner packet within `packet`, its next header and its sequence number.
    pub fn open(
        &mut self,
        packet: &mut [u8],
    ) -> Result<(std::ops::Range<usize>, u8, u64), EspError> {
        self.open_into(None, packet)
    }

    /// Opens the ESP packet `packet` as [`InboundSa::open`] does, decrypting into
    /// `out` (as long or longer) where it would have decrypted in place; AEAD suites
    /// read the ciphertext where it is (a datagram inside a GRO train): no copy first.
    /// The range returned is within `out`, whose header bytes are left as they were.
    pub fn open_from(
        &mut self,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<(std::ops::Range<usize>, u8, u64), EspError> {
        let out = out.get_mut(..packet.len()).ok_or(EspError::Truncated)?;
        if let Cipher::Cbc(_) = self.cipher {
            out.copy_from_slice(packet);
            return self.open_into(None, out);
        }
        self.open_into(Some(packet), out)
    }

    /// Both opens: the ESP packet is `source` (AEAD only), decrypted into `packet`,
    /// or `packet` itself, in place.
    fn open_into(
        &mut self,
        source: Option<&[u8]>,
        packet: &mut [u8],
    ) -> Result<(std::ops::Range<usize>, u8, u64), EspError> {
        let iv_len = iv_len(&self.cipher);
        let icv_len = self.cipher.icv_len();
        let esp: &[u8] = source.unwrap_or(packet);
        if esp.len() < ESP_HEADER_LEN + iv_len + 2 + icv_len {
            return Err(EspError::Truncated);
        }
        let spi = u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]]);
        if spi != self.spi {
            return Err(EspError::WrongSpi(spi));
        }
        let low = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
        let seq = if self.esn {
            self.window.infer_esn(low)
        } else {
            u64::from(low)
        };
        // Cheap check first; the window is only moved after authentication.
        if !self.window.check(seq) {
            return Err(EspError::Replay(seq));
        }
        let seq_hi = ((seq >> 32) as u32).to_be_bytes();
        let body = ESP_HEADER_LEN + iv_len;
        let end = match &self.cipher {
            Cipher::Aead { key, salt } => {
                let (aad, aad_len) = aead_aad(self.esn, &esp[..8], seq_hi);
                let (n, aad) = (nonce(salt, &esp[8..16]), Aad::from(&aad[..aad_len]));
                match source {
                    Some(esp) => {
                        let icv_start = esp.len() - icv_len;
                        key.open_separate_gather(
                            n,
                            aad,
                            &esp[body..icv_start],
                            &esp[icv_start..],
                            &mut packet[body..icv_start],
                        )
                        .map_err(|_| EspError::BadIcv)?;
                        icv_start
                    }
                    None => {
                        let plain = key
                            .open_in_place(n, aad, &mut packet[body..])
                            .map_err(|_| EspError::BadIcv)?;
                        body + plain.len()
                    }
                }
            }
            Cipher::Cbc(cbc) => {
                let CbcKeys { decrypt, mac, .. } = &**cbc;
                let icv_start = packet.len() - icv_len;
                let mut ctx = hmac::Context::with_key(mac);
                ctx.update(&packet[..icv_start]);
                if self.esn {
                    ctx.update(&seq_hi);
                }
                let icv = ctx.sign();
                if !bool::from(icv.as_ref()[..icv_len].ct_eq(&packet[icv_start..])) {
                    return Err(EspError::BadIcv);
                }
                if !(icv_start - body).is_multiple_of(16) {
                    return Err(EspError::BadPadding);
                }
                let iv: [u8; 16] = packet[8..body]
                    .try_into()
                    .map_err(|_| EspError::Truncated)?;
                decrypt
                    .decrypt(
                        &mut packet[body..icv_start],
                        DecryptionContext::Iv128(iv.into()),
                    )
                    .map_err(|_| EspError::BadPadding)?;
                icv_start
            }
        };
        if end < body + 2 {
            return Err(EspError::Truncated);
        }
        let next_header = packet[end - 1];
        let pad = usize::from(packet[end - 2]);
        let inner_end = (end - 2)
            .checked_sub(pad)
            .filter(|&e| e >= body)
            .ok_or(EspError::BadPadding)?;
        // RFC 4303 §2.4: padding bytes are 1, 2, 3, ...
        if packet[inner_end..end - 2]
            .iter()
            .zip(1u8..)
            .any(|(&b, want)| b != want)
        {
            return Err(EspError::BadPadding);
        }
        if !self.window.accept(seq) {
            return Err(EspError::Replay(seq));
        }
        Ok((body..inner_end, next_header, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(encr: Encr, integ: Option<Integ>, esn: bool) -> (OutboundSa, InboundSa) {
        let ek = Secret::new((0..encr.key_material_len() as u8).collect());
        let ik = Secret::new(vec![7; integ.map_or(0, Integ::key_len)]);
        let keys = SaKeys {
            spi: 0x1234,
            encr,
            integ,
            esn,
            encryption: &ek,
            integrity: &ik,
        };
        (
            OutboundSa::new(&keys).unwrap(),
            InboundSa::new(&keys, 1024).unwrap(),
        )
    }

    /// Room after an inner packet for any suite's padding, trailer and ICV.
    const TAILROOM: usize = 15 + 2 + 32;

    /// The ESP packet `out` makes of `inner`.
    fn sealed(out: &OutboundSa, inner: &[u8], next_header: u8) -> Vec<u8> {
        let mut buf = vec![0; HEADROOM + inner.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
        let esp = out
            .seal(&mut buf, HEADROOM, inner.len(), next_header)
            .unwrap();
        buf[esp].to_vec()
    }

    const SUITES: [(Encr, Option<Integ>); 6] = [
        (Encr::AesGcm16 { key_len: 16 }, None),
        (Encr::AesGcm16 { key_len: 32 }, None),
        (Encr::ChaCha20Poly1305, None),
        (Encr::AesCbc { key_len: 16 }, Some(Integ::HmacSha256)),
        (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha512)),
        (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha1)),
    ];

    /// Windows' default ESP suite, AES-CBC-256 with HMAC-SHA-1-96: the ICV is the
    /// first 12 octets of HMAC-SHA-1 over SPI, sequence number, IV and ciphertext
    /// (RFC 4303 §2.8, RFC 2404).
    #[test]
    fn hmac_sha1_96_icv_is_twelve_octets_over_header_iv_and_ciphertext() {
        let (out, mut inb) = pair(Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha1), false);
        let packet = sealed(&out, &[0x45; 60], NEXT_HEADER_IPV4);
        // SPI 4, sequence 4, IV 16, ciphertext in whole blocks, ICV 12.
        assert_eq!((packet.len() - 8 - 16 - 12) % 16, 0);
        let (covered, icv) = packet.split_at(packet.len() - 12);
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[7; 20]),
            covered,
        );
        assert_eq!(icv, &mac.as_ref()[..12]);
        let mut packet = packet;
        let (range, _, _) = inb.open(&mut packet).unwrap();
        assert_eq!(&packet[range], &[0x45; 60]);
    }

    #[test]
    fn every_suite_round_trips_in_place_and_rejects_replays_and_tampering() {
        for (encr, integ) in SUITES {
            for esn in [false, true] {
                let (out, mut inb) = pair(encr, integ, esn);
                for len in [0usize, 1, 20, 1400] {
                    let inner: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    let mut packet = sealed(&out, &inner, NEXT_HEADER_IPV4);
                    let mut copy = packet.clone();
                    let (range, nh, _) = inb.open(&mut packet).unwrap();
                    assert_eq!(&packet[range], &inner[..], "{encr} {esn}");
                    assert_eq!(nh, NEXT_HEADER_IPV4);
                    assert!(matches!(inb.open(&mut copy), Err(EspError::Replay(_))));
                }
                let mut packet = sealed(&out, &[0; 40], NEXT_HEADER_IPV6);
                let last = packet.len() - 1;
                packet[last] ^= 1;
                assert_eq!(
                    inb.open(&mut packet).unwrap_err(),
                    EspError::BadIcv,
                    "{encr}"
                );
                assert_eq!(inb.open(&mut [0u8; 10]).unwrap_err(), EspError::Truncated);
            }
        }
    }

    #[test]
    fn every_suite_seals_and_opens_from_elsewhere_as_in_place() {
        for (encr, integ) in SUITES {
            for esn in [false, true] {
                // Two SAs with the same keys spend the same sequence numbers.
                let ((in_place, mut inb_from), (from, mut inb)) =
                    (pair(encr, integ, esn), pair(encr, integ, esn));
                // Stale bytes where the ESP packet goes: none of them may show.
                let mut buf = vec![0xa5; HEADROOM + 1400 + TAILROOM];
                for len in [0usize, 1, 3, 20, 1400] {
                    let inner: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
                    let expected = sealed(&in_place, &inner, NEXT_HEADER_IPV6);
                    let esp = from
                        .seal_from(&inner, &mut buf, HEADROOM, NEXT_HEADER_IPV6)
                        .unwrap();
                    assert_eq!(buf[esp.clone()], expected, "{encr} esn {esn} len {len}");
                    let (range, nh, _) = inb.open(&mut buf[esp.clone()]).unwrap();
                    assert_eq!((&buf[esp][range], nh), (&inner[..], NEXT_HEADER_IPV6));
                    // Opened from where it is into stale bytes; tampered, replayed.
                    let mut out = vec![0x5a; expected.len() + 7];
                    let mut tampered = expected.clone();
                    tampered[expected.len() / 2] ^= 1;
                    let bad = inb_from.open_from(&tampered, &mut out);
                    assert_eq!(bad.unwrap_err(), EspError::BadIcv, "{encr}");
                    let (range, nh, _) = inb_from.open_from(&expected, &mut out).unwrap();
                    assert_eq!((&out[range], nh), (&inner[..], NEXT_HEADER_IPV6));
                    let again = inb_from.open_from(&expected, &mut out);
                    assert!(matches!(again, Err(EspError::Replay(_))));
                }
            }
        }
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        let (mut out, _) = pair(Encr::AesGcm16 { key_len: 16 }, None, false);
        out.next_seq = AtomicU64::new(u64::from(u32::MAX));
        let mut buf = vec![0; HEADROOM + 4 + TAILROOM];
        assert!(out.seal(&mut buf, HEADROOM, 4, 4).is_ok());
        for _ in 0..2 {
            assert_eq!(
                out.seal(&mut buf, HEADROOM, 4, 4).unwrap_err(),
                EspError::SequenceExhausted
            );
        }
    }

    #[test]
    fn max_payload_is_the_largest_packet_that_fits() {
        for (encr, integ) in [
            (Encr::AesGcm16 { key_len: 16 }, None),
            (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha512)),
        ] {
            let (out, _) = pair(encr, integ, false);
            for room in [1000, 1001, 1002, 1003, 1452] {
                let fits = out.max_payload(room);
                let sealed = |len: usize| sealed(&out, &vec![0; len], 4).len();
                assert!(sealed(fits) <= room, "{encr:?} {room}");
                assert!(sealed(fits + 1) > room, "{encr:?} {room}");
            }
        }
    }

    #[test]
    fn cbc_ivs_differ_per_packet_and_hide_the_counter() {
        let (out, _) = pair(Encr::AesCbc { key_len: 16 }, Some(Integ::HmacSha256), false);
        let iv = |_| sealed(&out, &[0; 32], 4)[8..24].to_vec();
        let ivs: Vec<Vec<u8>> = (0..3).map(iv).collect();
        assert_ne!(ivs[0], ivs[1]);
        assert_ne!(ivs[1], ivs[2]);
        let mut counter_block = [0u8; 16];
        counter_block[15] = 1;
        assert_ne!(ivs[0], counter_block);
    }

    #[test]
    fn too_little_headroom_is_an_error() {
        let (out, _) = pair(Encr::AesGcm16 { key_len: 16 }, None, false);
        assert_eq!(
            out.seal(&mut [0; 20], 4, 4, 4).unwrap_err(),
            EspError::NoHeadroom
        );
    }

    #[test]
    fn too_little_room_after_the_packet_is_an_error_and_spends_no_sequence_number() {
        for (encr, integ) in SUITES {
            let (out, mut inb) = pair(encr, integ, false);
            let esp = sealed(&out, &[0x45; 100], NEXT_HEADER_IPV4);
            let tail = esp.len() - ESP_HEADER_LEN - iv_len(&out.cipher) - 100;
            let mut buf = vec![0; HEADROOM + 100 + tail - 1];
            assert_eq!(
                out.seal(&mut buf, HEADROOM, 100, 4).unwrap_err(),
                EspError::NoRoom,
                "{encr}"
            );
            buf.push(0);
            let esp = out.seal(&mut buf, HEADROOM, 100, 4).unwrap();
            assert_eq!(esp.end, buf.len(), "{encr}: exactly fits");
            assert_eq!(inb.open(&mut buf[esp]).unwrap().2, 2, "{encr}");
        }
    }

    /// The data plane seals and opens every packet in the same few buffers, reused
    /// without clearing: leftovers of a longer packet must never leak into a shorter
    /// one, and nothing may depend on the buffer's size beyond the packet.
    #[test]
    fn one_buffer_serves_many_packets_of_any_size_without_clearing() {
        for (encr, integ) in SUITES {
            let (out, mut inb) = pair(encr, integ, true);
            let mut buf = vec![0xee; HEADROOM + 2000 + TAILROOM];
            let capacity = buf.len();
            for i in 0..500usize {
                let len = (i * 397) % 2000;
                let fill = i as u8;
                buf[HEADROOM..HEADROOM + len].fill(fill);
                let esp = out.seal(&mut buf, HEADROOM, len, 4).unwrap();
                assert!(esp.end <= capacity);
                let at = esp.start;
                let (inner, nh, seq) = inb.open(&mut buf[esp]).unwrap();
                assert_eq!((nh, seq, inner.len()), (4, i as u64 + 1, len), "{encr}");
                let inner = at + inner.start..at + inner.end;
                assert!(buf[inner].iter().all(|&b| b == fill), "{encr}");
            }
            assert_eq!(buf.len(), capacity);
        }
    }
}
