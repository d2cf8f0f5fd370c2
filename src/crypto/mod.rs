//! IKE cryptography: PRFs and prf+, SKEYSEED and KEYMAT, key exchange groups,
//! and the SK payload protection suites. Backed by aws-lc-rs; MODP arithmetic by
//! crypto-bigint in constant time.
//!
//! Nothing here reads the OS RNG: randomness comes in through [`Random`].

pub mod cipher;
pub mod fragment;
pub mod kex;
pub mod keys;
mod modp;
pub mod prf;
pub mod sk;
pub mod suite;

pub use kex::{KeyExchange, PeerValue};
pub use keys::{ChildKeys, IkeKeys};
pub use prf::Prf;
pub use sk::SkKey;
pub use suite::{Encr, IkeSuite, Integ};

use aws_lc_rs::hmac;
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A source of random bytes, injected so the protocol core stays deterministic in tests.
pub trait Random {
    /// Fills `out` with random bytes.
    fn fill(&mut self, out: &mut [u8]);
}

/// A deterministic generator (HMAC-SHA-256 in counter mode over a seed), for tests
/// and simulations that must replay exactly. Never use it for real keys.
pub struct SeededRandom {
    key: hmac::Key,
    counter: u64,
}

impl SeededRandom {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &seed.to_be_bytes()),
            counter: 0,
        }
    }
}

impl Random for SeededRandom {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            self.counter += 1;
            let block = hmac::sign(&self.key, &self.counter.to_be_bytes());
            chunk.copy_from_slice(&block.as_ref()[..chunk.len()]);
        }
    }
}

/// Key material: zeroized on drop, compared in constant time, never printed.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Copies `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret bytes, to be filled in place (a key derived into it leaves no copy
    /// outside).
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a zero-length secret (e.g. SK_a with an AEAD suite).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The algorithm or group is not implemented.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// The peer's key exchange value failed validation (RFC 6989).
    #[error("invalid public key exchange value for {0}")]
    InvalidPublicValue(crate::wire::KeGroup),
    /// prf+ cannot produce that much output (RFC 7296 §2.13: 255 blocks).
    #[error("prf+ output of {0} bytes exceeds 255 blocks")]
    PrfPlusTooLong(usize),
    /// A key of the wrong length was supplied.
    #[error("{what} key is {actual} bytes, expected {expected}")]
    KeyLength {
        /// Which key.
        what: &'static str,
        /// Its length.
        actual: usize,
        /// The length the algorithm needs.
        expected: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_random_is_deterministic_per_seed() {
        let (mut a, mut b, mut c) = (
            SeededRandom::new(1),
            SeededRandom::new(1),
            SeededRandom::new(2),
        );
        let (mut x, mut y, mut z) = ([0u8; 70], [0u8; 70], [0u8; 70]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn secrets_compare_by_value_and_never_print() {
        assert_eq!(Secret::from_slice(b"k"), Secret::from_slice(b"k"));
        assert_ne!(Secret::from_slice(b"k"), Secret::from_slice(b"j"));
        assert_eq!(
            format!("{:?}", Secret::from_slice(b"key")),
            "Secret(3 bytes)"
        );
    }
}
