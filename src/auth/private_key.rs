//! Our signing key and the AUTH payloads it makes: RFC 7427 digital signatures when
//! the peer announced the hashes it accepts, the legacy methods (RFC 7296, RFC 4754)
//! otherwise.

use super::AuthError;
use super::signature::{Hash, KeyKind, PublicKey};
use crate::crypto::Secret;
use crate::wire::AuthMethod;
use crate::wire::payload::AuthPayload;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RsaEncoding, RsaKeyPair,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::fmt;

/// RFC 7427 appendix A AlgorithmIdentifiers: ecdsa-with-SHA256/384/512.
const ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const ECDSA_SHA512: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];
/// sha256/384/512WithRSAEncryption, with the NULL parameters RFC 4055 asks for.
const RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
const RSA_SHA384: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
const RSA_SHA512: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];

/// Our private key: its DER (PKCS#8, SEC1 or PKCS#1), kept zeroizing, and its kind.
pub struct PrivateKey {
    der: Secret,
    kind: KeyKind,
    public: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({:?})", self.kind)
    }
}

fn ecdsa_alg(kind: KeyKind, hash: Hash, fixed: bool) -> Option<&'static EcdsaSigningAlgorithm> {
    use Hash::*;
    use KeyKind::*;
    Some(match (kind, hash, fixed) {
        (EcP256, Sha256, false) => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        (EcP384, Sha384, false) => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        (EcP521, Sha256, false) => &signature::ECDSA_P521_SHA256_ASN1_SIGNING,
        (EcP521, Sha384, false) => &signature::ECDSA_P521_SHA384_ASN1_SIGNING,
        (EcP521, Sha512, false) => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        (EcP256, Sha256, true) => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        (EcP384, Sha384, true) => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        (EcP521, Sha512, true) => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        _ => return None,
    })
}

/// The hash that matches a curve's strength (RFC 4754 pairs them the same way).
fn natural_hash(kind: KeyKind) -> Hash {
    match kind {
        KeyKind::EcP384 => Hash::Sha384,
        KeyKind::EcP521 => Hash::Sha512,
        _ => Hash::Sha256,
    }
}

impl PrivateKey {
    /// Reads a PEM (PKCS#8 "PRIVATE KEY", SEC1 "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY")
    /// or a DER PKCS#8 key.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, AuthError> {
        let der = match PrivateKeyDer::from_pem_slice(bytes) {
            Ok(key) => Secret::from_slice(key.secret_der()),
            Err(_) if bytes.first() == Some(&0x30) => Secret::from_slice(bytes),
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(AuthError::BadKey(
                    "no PEM private key block and not DER".into(),
                ));
            }
            Err(e) => return Err(AuthError::BadKey(format!("PEM: {}", super::pem_error(&e)))),
        };
        for kind in [KeyKind::EcP256, KeyKind::EcP384, KeyKind::EcP521] {
            let alg = ecdsa_alg(kind, natural_hash(kind), false)
                .ok_or_else(|| AuthError::BadKey("no ECDSA algorithm".into()))?;
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(alg, der.expose()) {
                let public = pair.public_key().as_ref().to_vec();
                return Ok(Self { der, kind, public });
            }
        }
        let rsa =
            RsaKeyPair::from_pkcs8(der.expose()).or_else(|_| RsaKeyPair::from_der(der.expose()));
        match rsa {
            Ok(pair) => {
                let public = pair.public_key().as_ref().to_vec();
                Ok(Self {
                    der,
                    kind: KeyKind::Rsa,
                    public,
                })
            }
            Err(e) => Err(AuthError::BadKey(format!(
                "not an ECDSA (P-256/384/521) or RSA key: {e}"
            ))),
        }
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// True when `cert_der` holds this key's public half.
    pub fn matches_certificate(&self, cert_der: &[u8]) -> bool {
        PublicKey::from_certificate(cert_der)
            .is_ok_and(|p| p.kind() == self.kind && p.bytes() == self.public)
    }

    /// Makes our AUTH payload over `signed_octets`: RFC 7427 (method 14) with a hash
    /// from `peer_hashes` when the peer announced some, else RSA (1) or ECDSA (9-11).
    pub fn sign(
        &self,
        signed_octets: &[u8],
        peer_hashes: Option<&[Hash]>,
    ) -> Result<AuthPayload, AuthError> {
        let Some(accepted) = peer_hashes else {
            return self.sign_legacy(signed_octets);
        };
        let preferred = natural_hash(self.kind);
        let hash = [preferred, Hash::Sha256, Hash::Sha384, Hash::Sha512]
            .into_iter()
            // aws-lc-rs signs P-256 only with SHA-256 and P-384 only with SHA-384.
            .find(|&h| {
                accepted.contains(&h)
                    && (self.kind == KeyKind::Rsa || ecdsa_alg(self.kind, h, false).is_some())
            })
            .ok_or_else(|| {
                AuthError::UnsupportedAlgorithm(format!(
                    "the peer accepts none of the hashes a {:?} key signs with",
                    self.kind
                ))
            })?;
        let (algorithm, signature) = match self.kind {
            KeyKind::Rsa => {
                let (encoding, id): (&'static dyn RsaEncoding, _) = match hash {
                    Hash::Sha384 => (&signature::RSA_PKCS1_SHA384, RSA_SHA384),
                    Hash::Sha512 => (&signature::RSA_PKCS1_SHA512, RSA_SHA512),
                    _ => (&signature::RSA_PKCS1_SHA256, RSA_SHA256),
                };
                (id, self.sign_rsa(encoding, signed_octets)?)
            }
            kind => {
                let id = match hash {
                    Hash::Sha384 => ECDSA_SHA384,
                    Hash::Sha512 => ECDSA_SHA512,
                    _ => ECDSA_SHA256,
                };
                (
                    id,
                    self.sign_ecdsa(ecdsa_alg(kind, hash, false), signed_octets)?,
                )
            }
        };
        Ok(AuthPayload::digital_signature(algorithm, &signature))
    }

    fn sign_legacy(&self, signed_octets: &[u8]) -> Result<AuthPayload, AuthError> {
        let method = match self.kind {
            KeyKind::EcP256 => AuthMethod::ECDSA_SHA256_P256,
            KeyKind::EcP384 => AuthMethod::ECDSA_SHA384_P384,
            KeyKind::EcP521 => AuthMethod::ECDSA_SHA512_P521,
            // aws-lc-rs signs RSA with SHA-2 only; method 1 means SHA-1.
            kind => {
                return Err(AuthError::UnsupportedAlgorithm(format!(
                    "{kind:?} key for a peer without RFC 7427 signature hashes"
                )));
            }
        };
        let data = self.sign_ecdsa(
            ecdsa_alg(self.kind, natural_hash(self.kind), true),
            signed_octets,
        )?;
        Ok(AuthPayload { method, data })
    }

    #[allow(
        clippy::disallowed_types,
        reason = "aws-lc-rs ignores this argument (AWS-LC draws ECDSA nonces itself) but its signature demands one"
    )]
    fn sign_ecdsa(
        &self,
        alg: Option<&'static EcdsaSigningAlgorithm>,
        message: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        let alg = alg
            .ok_or_else(|| AuthError::UnsupportedAlgorithm(format!("{:?} signature", self.kind)))?;
        let pair = EcdsaKeyPair::from_private_key_der(alg, self.der.expose())
            .map_err(|e| AuthError::BadKey(e.to_string()))?;
        let sig = pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
            .map_err(|_| AuthError::BadKey("ECDSA signing failed".into()))?;
        Ok(sig.as_ref().to_vec())
    }

    #[allow(
        clippy::disallowed_types,
        reason = "aws-lc-rs ignores this argument (PKCS#1 v1.5 is deterministic) but its signature demands one"
    )]
    fn sign_rsa(
        &self,
        encoding: &'static dyn RsaEncoding,
        message: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        let pair = RsaKeyPair::from_pkcs8(self.der.expose())
            .or_else(|_| RsaKeyPair::from_der(self.der.expose()))
            .map_err(|e| AuthError::BadKey(e.to_string()))?;
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            encoding,
            &aws_lc_rs::rand::SystemRandom::new(),
            message,
            &mut sig,
        )
        .map_err(|_| AuthError::BadKey("RSA signing failed".into()))?;
        Ok(sig)
    }
}
