//! IKE message fragmentation (RFC 7383): splitting an encrypted message into SKF
//! payloads, each sealed on its own, and putting the decrypted pieces back together.

use super::Random;
use super::sk::{SkError, SkKey, encode_inner, seal_plain};
use crate::wire::payload::{Payload, SkfPayload, first_type};
use crate::wire::{Header, PayloadType};

/// Most fragments accepted for one message: enough for 64 KiB in 1 KiB pieces.
pub const MAX_FRAGMENTS: u16 = 64;
/// Largest reassembled plaintext accepted.
pub const MAX_REASSEMBLED_LEN: usize = 64 * 1024;

/// Builds `HDR, SKF {...}` messages of at most `max_len` bytes each that together
/// carry `inner`.
pub fn seal_fragments(
    key: &mut SkKey,
    header: &Header,
    inner: &[Payload],
    max_len: usize,
    rng: &mut dyn Random,
) -> Result<Vec<Vec<u8>>, SkError> {
    // IKE header, SKF generic header, fragment number and total.
    const FRAME: usize = crate::wire::IKE_HEADER_LEN + 4 + 4;
    let plain = encode_inner(inner)?;
    let chunk = key.max_plain_len(max_len.saturating_sub(FRAME));
    if chunk == 0 {
        return Err(SkError::Truncated(max_len));
    }
    let chunks: Vec<&[u8]> = plain.chunks(chunk).collect();
    let total = u16::try_from(chunks.len()).map_err(|_| SkError::Truncated(max_len))?;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, piece) in chunks.iter().enumerate() {
        // §2.5: only the first fragment names the first inner payload.
        let first_payload = if i == 0 {
            first_type(inner)
        } else {
            PayloadType::NONE
        };
        out.push(seal_plain(key, header, piece, rng, |data| {
            Payload::Skf(SkfPayload {
                first_payload,
                fragment_number: i as u16 + 1,
                total_fragments: total,
                data,
            })
        })?);
    }
    Ok(out)
}

/// Why a fragment was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// More fragments than [`MAX_FRAGMENTS`] announced.
    #[error("{0} fragments announced, at most {MAX_FRAGMENTS} accepted")]
    TooManyFragments(u16),
    /// The pieces add up to more than [`MAX_REASSEMBLED_LEN`].
    #[error("reassembled message would exceed {MAX_REASSEMBLED_LEN} bytes")]
    TooLarge,
}

/// The decrypted fragments of one message, collected until all have arrived.
#[derive(Debug, Default)]
pub struct Reassembly {
    total: u16,
    first_payload: PayloadType,
    pieces: Vec<Option<Vec<u8>>>,
    size: usize,
}

/// The plaintext of a whole message, put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembled {
    /// Type of the first payload, from fragment 1.
    pub first_payload: PayloadType,
    /// The concatenated payload bytes.
    pub plaintext: Vec<u8>,
}

impl Reassembly {
    /// Adds the verified, decrypted content of `skf`. Returns the whole message once
    /// every fragment is in; duplicates and fragments of an older, smaller split are
    /// ignored, and a larger total starts over (RFC 7383 §2.6.2).
    pub fn add(
        &mut self,
        skf: &SkfPayload,
        plaintext: Vec<u8>,
    ) -> Result<Option<Reassembled>, FragmentError> {
        if skf.total_fragments > MAX_FRAGMENTS {
            return Err(FragmentError::TooManyFragments(skf.total_fragments));
        }
        if skf.total_fragments < self.total {
            return Ok(None);
        }
        if skf.total_fragments > self.total {
            *self = Self {
                total: skf.total_fragments,
                pieces: vec![None; skf.total_fragments.into()],
                ..Self::default()
            };
        }
        let slot = &mut self.pieces[usize::from(skf.fragment_number) - 1];
        if slot.is_some() {
            return Ok(None);
        }
        if self.size + plaintext.len() > MAX_REASSEMBLED_LEN {
            return Err(FragmentError::TooLarge);
        }
        self.size += plaintext.len();
        if skf.fragment_number == 1 {
            self.first_payload = skf.first_payload;
        }
        *slot = Some(plaintext);
        if self.pieces.iter().any(Option::is_none) {
            return Ok(None);
        }
        let plaintext = self
            .pieces
            .iter_mut()
            .filter_map(Option::take)
            .flatten()
            .collect();
        let first_payload = self.first_payload;
        *self = Self::default();
        Ok(Some(Reassembled {
            first_payload,
            plaintext,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::suite::{Encr, Integ};
    use crate::crypto::{Secret, SeededRandom};
    use crate::wire::Reader;
    use crate::wire::payload::{CertPayload, decode_chain};
    use crate::wire::{CertEncoding, ExchangeType, Flags, IkeSpi, Message};

    fn header() -> Header {
        Header {
            spi_i: IkeSpi(1),
            spi_r: IkeSpi(2),
            minor_version: 0,
            exchange: ExchangeType::IKE_AUTH,
            flags: Flags::new(true, false),
            message_id: 1,
        }
    }

    fn big_inner() -> Vec<Payload> {
        (0..3)
            .map(|i| {
                Payload::Cert(CertPayload {
                    encoding: CertEncoding::X509_CERT_SIG,
                    data: vec![i; 1500],
                })
            })
            .collect()
    }

    fn fragments_and_key(encr: Encr, integ: Option<Integ>) -> (Vec<Vec<u8>>, SkKey) {
        let e = Secret::new(vec![3; encr.key_material_len()]);
        let a = Secret::new(vec![4; integ.map_or(0, Integ::key_len)]);
        let mut tx = SkKey::new(encr, integ, &e, &a).unwrap();
        let rx = SkKey::new(encr, integ, &e, &a).unwrap();
        let mut rng = SeededRandom::new(9);
        (
            seal_fragments(&mut tx, &header(), &big_inner(), 1248, &mut rng).unwrap(),
            rx,
        )
    }

    fn open(rx: &SkKey, bytes: &[u8]) -> (SkfPayload, Vec<u8>) {
        let msg = Message::decode(bytes).unwrap();
        let Payload::Skf(skf) = &msg.payloads[0] else {
            panic!("no SKF")
        };
        (skf.clone(), rx.open(bytes, skf.data.len()).unwrap())
    }

    #[test]
    fn fragments_fit_and_reassemble_in_any_order() {
        for (encr, integ) in [
            (Encr::AesGcm16 { key_len: 16 }, None),
            (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha256)),
        ] {
            let (frags, rx) = fragments_and_key(encr, integ);
            assert_eq!(frags.len(), 4, "{encr}");
            assert!(frags.iter().all(|f| f.len() <= 1248));
            let mut r = Reassembly::default();
            let mut done = None;
            for i in [2, 0, 3, 0, 1] {
                let (skf, plain) = open(&rx, &frags[i]);
                if let Some(whole) = r.add(&skf, plain).unwrap() {
                    done = Some(whole);
                }
            }
            let whole = done.expect("complete");
            let payloads =
                decode_chain(whole.first_payload, &mut Reader::new(&whole.plaintext)).unwrap();
            assert_eq!(payloads, big_inner());
        }
    }

    #[test]
    fn missing_fragment_keeps_message_incomplete() {
        let (frags, rx) = fragments_and_key(Encr::ChaCha20Poly1305, None);
        let mut r = Reassembly::default();
        for f in &frags[..frags.len() - 1] {
            let (skf, plain) = open(&rx, f);
            assert_eq!(r.add(&skf, plain).unwrap(), None);
        }
    }

    #[test]
    fn rejects_oversized_reassembly() {
        let skf = |n: u16, total: u16| SkfPayload {
            first_payload: PayloadType::NONE,
            fragment_number: n,
            total_fragments: total,
            data: vec![],
        };
        let mut r = Reassembly::default();
        assert_eq!(
            r.add(&skf(1, 65), vec![]),
            Err(FragmentError::TooManyFragments(65))
        );
        assert_eq!(r.add(&skf(1, 3), vec![0; 40_000]), Ok(None));
        assert_eq!(
            r.add(&skf(2, 3), vec![0; 40_000]),
            Err(FragmentError::TooLarge)
        );
    }
}
