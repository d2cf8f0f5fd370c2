//! Signature schemes (RFC 7427 algorithm identifiers, RFC 4754 fixed-size ECDSA,
//! RFC 7296 RSA) and verification with a certificate's public key.

use super::AuthError;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use std::fmt;
use x509_parser::der_parser::oid::Oid;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_HASH_SHA1, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_NIST_HASH_SHA256, OID_NIST_HASH_SHA384, OID_NIST_HASH_SHA512, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA1WITHRSA, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_SIG_ECDSA_WITH_SHA512, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// id-mgf1 (RFC 8017 appendix B.2.1), the only mask generation function defined.
const OID_MGF1: Oid<'static> = x509_parser::der_parser::oid!(1.2.840.113549.1.1.8);

/// The hash a signature scheme uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// SHA-1: recognised only to be refused (RFC 8247), never verified or announced.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Hash {
    fn from_oid(oid: &Oid<'_>) -> Option<Self> {
        Some(if *oid == OID_NIST_HASH_SHA256 {
            Self::Sha256
        } else if *oid == OID_NIST_HASH_SHA384 {
            Self::Sha384
        } else if *oid == OID_NIST_HASH_SHA512 {
            Self::Sha512
        } else if *oid == OID_HASH_SHA1 {
            Self::Sha1
        } else {
            return None;
        })
    }

    /// The RFC 7427 hash algorithm number (SIGNATURE_HASH_ALGORITHMS).
    pub fn rfc7427_id(self) -> u16 {
        match self {
            Self::Sha1 => 1,
            Self::Sha256 => 2,
            Self::Sha384 => 3,
            Self::Sha512 => 4,
        }
    }

    /// The hash for an RFC 7427 number; None for unknown ones and for 5 ("Identity").
    pub fn from_rfc7427_id(id: u16) -> Option<Self> {
        Some(match id {
            1 => Self::Sha1,
            2 => Self::Sha256,
            3 => Self::Sha384,
            4 => Self::Sha512,
            _ => return None,
        })
    }

    fn output_len(self) -> u32 {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// How a signature was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// ECDSA with a DER-encoded signature (RFC 7427).
    EcdsaDer(Hash),
    /// ECDSA with r | s of fixed size (RFC 4754, AUTH methods 9-11).
    EcdsaFixed(Hash),
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Hash),
    /// RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash.
    RsaPss(Hash),
    /// Ed25519 (RFC 8420).
    Ed25519,
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaDer(h) => write!(f, "ECDSA-{h:?}"),
            Self::EcdsaFixed(h) => write!(f, "ECDSA-{h:?} (RFC 4754)"),
            Self::RsaPkcs1(h) => write!(f, "RSA-PKCS1-{h:?}"),
            Self::RsaPss(h) => write!(f, "RSA-PSS-{h:?}"),
            Self::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

impl SignatureScheme {
    /// The hash it signs with.
    pub fn hash(self) -> Option<Hash> {
        match self {
            Self::EcdsaDer(h) | Self::EcdsaFixed(h) | Self::RsaPkcs1(h) | Self::RsaPss(h) => {
                Some(h)
            }
            Self::Ed25519 => None,
        }
    }

    /// The scheme named by a DER AlgorithmIdentifier from an RFC 7427 AUTH payload.
    pub fn from_algorithm_identifier(der: &[u8]) -> Result<Self, AuthError> {
        let unsupported = |what: String| AuthError::UnsupportedAlgorithm(what);
        let (rest, alg) = AlgorithmIdentifier::from_der(der).map_err(|_| {
            unsupported(format!(
                "undecodable AlgorithmIdentifier {}",
                hex::encode(der)
            ))
        })?;
        if !rest.is_empty() {
            return Err(unsupported(
                "trailing bytes after AlgorithmIdentifier".into(),
            ));
        }
        let oid = &alg.algorithm;
        let scheme = [
            (OID_SIG_ECDSA_WITH_SHA256, Self::EcdsaDer(Hash::Sha256)),
            (OID_SIG_ECDSA_WITH_SHA384, Self::EcdsaDer(Hash::Sha384)),
            (OID_SIG_ECDSA_WITH_SHA512, Self::EcdsaDer(Hash::Sha512)),
            (OID_PKCS1_SHA256WITHRSA, Self::RsaPkcs1(Hash::Sha256)),
            (OID_PKCS1_SHA384WITHRSA, Self::RsaPkcs1(Hash::Sha384)),
            (OID_PKCS1_SHA512WITHRSA, Self::RsaPkcs1(Hash::Sha512)),
            (OID_PKCS1_SHA1WITHRSA, Self::RsaPkcs1(Hash::Sha1)),
            (OID_SIG_ED25519, Self::Ed25519),
        ]
        .into_iter()
        .find_map(|(o, s)| (o == *oid).then_some(s));
        if let Some(scheme) = scheme {
            return Ok(scheme);
        }
        if *oid != OID_PKCS1_RSASSAPSS {
            return Err(unsupported(format!("signature algorithm {oid}")));
        }
        let params = alg
            .parameters
            .as_ref()
            .and_then(|p| RsaSsaPssParams::try_from(p).ok())
            .ok_or_else(|| unsupported("RSASSA-PSS without parameters".into()))?;
        let hash = Hash::from_oid(params.hash_algorithm_oid())
            .filter(|h| *h != Hash::Sha1)
            .ok_or_else(|| {
                unsupported(format!("RSASSA-PSS hash {}", params.hash_algorithm_oid()))
            })?;
        let mgf_hash = params
            .mask_gen_algorithm()
            .ok()
            .filter(|m| m.mgf == OID_MGF1)
            .and_then(|m| Hash::from_oid(&m.hash));
        if mgf_hash != Some(hash) || params.salt_length() != hash.output_len() {
            return Err(unsupported(format!(
                "RSASSA-PSS with MGF1 {:?} and salt {} for {hash:?}",
                mgf_hash,
                params.salt_length()
            )));
        }
        Ok(Self::RsaPss(hash))
    }
}

/// The kind of a public key, with its curve for EC keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA of any size from 2048 bits.
    Rsa,
    /// ECDSA over P-256.
    EcP256,
    /// ECDSA over P-384.
    EcP384,
    /// ECDSA over P-521.
    EcP521,
    /// Ed25519.
    Ed25519,
}

/// A peer's public key, as found in its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    /// PKCS#1 RSAPublicKey, the uncompressed EC point, or the raw Ed25519 key.
    bytes: Vec<u8>,
}

impl PublicKey {
    /// The public key of a DER certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Self, AuthError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| AuthError::BadCertificate(format!("undecodable: {e}")))?;
        Self::from_spki(cert.public_key())
    }

    /// The key of a SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, AuthError> {
        let alg = &spki.algorithm.algorithm;
        let kind = if *alg == OID_PKCS1_RSAENCRYPTION {
            KeyKind::Rsa
        } else if *alg == OID_SIG_ED25519 {
            KeyKind::Ed25519
        } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| AuthError::BadCertificate("EC key without named curve".into()))?;
            if curve == OID_EC_P256 {
                KeyKind::EcP256
            } else if curve == OID_NIST_EC_P384 {
                KeyKind::EcP384
            } else if curve == OID_NIST_EC_P521 {
                KeyKind::EcP521
            } else {
                return Err(AuthError::UnsupportedAlgorithm(format!("EC curve {curve}")));
            }
        } else {
            return Err(AuthError::UnsupportedAlgorithm(format!(
                "public key algorithm {alg}"
            )));
        };
        Ok(Self {
            kind,
            bytes: spki.subject_public_key.data.to_vec(),
        })
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key as the signature algorithms take it.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Checks `signature` over `message` made with `scheme` by this key's owner;
    /// a SHA-1 scheme is refused whatever the signature.
    pub fn verify(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        use Hash::*;
        use KeyKind::*;
        use SignatureScheme::*;
        if scheme.hash() == Some(Sha1) {
            return Err(AuthError::Sha1Refused(scheme));
        }
        let alg: &'static dyn VerificationAlgorithm = match (self.kind, scheme) {
            (EcP256, EcdsaDer(Sha256)) => &signature::ECDSA_P256_SHA256_ASN1,
            (EcP256, EcdsaDer(Sha384)) => &signature::ECDSA_P256_SHA384_ASN1,
            (EcP256, EcdsaDer(Sha512)) => &signature::ECDSA_P256_SHA512_ASN1,
            (EcP384, EcdsaDer(Sha256)) => &signature::ECDSA_P384_SHA256_ASN1,
            (EcP384, EcdsaDer(Sha384)) => &signature::ECDSA_P384_SHA384_ASN1,
            (EcP384, EcdsaDer(Sha512)) => &signature::ECDSA_P384_SHA512_ASN1,
            (EcP521, EcdsaDer(Sha256)) => &signature::ECDSA_P521_SHA256_ASN1,
            (EcP521, EcdsaDer(Sha384)) => &signature::ECDSA_P521_SHA384_ASN1,
            (EcP521, EcdsaDer(Sha512)) => &signature::ECDSA_P521_SHA512_ASN1,
            (EcP256, EcdsaFixed(Sha256)) => &signature::ECDSA_P256_SHA256_FIXED,
            (EcP384, EcdsaFixed(Sha384)) => &signature::ECDSA_P384_SHA384_FIXED,
            (EcP521, EcdsaFixed(Sha512)) => &signature::ECDSA_P521_SHA512_FIXED,
            (Rsa, RsaPkcs1(Sha256)) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Rsa, RsaPkcs1(Sha384)) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Rsa, RsaPkcs1(Sha512)) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (Rsa, RsaPss(Sha256)) => &signature::RSA_PSS_2048_8192_SHA256,
            (Rsa, RsaPss(Sha384)) => &signature::RSA_PSS_2048_8192_SHA384,
            (Rsa, RsaPss(Sha512)) => &signature::RSA_PSS_2048_8192_SHA512,
            (KeyKind::Ed25519, SignatureScheme::Ed25519) => &signature::ED25519,
            (kind, scheme) => return Err(AuthError::KeyMismatch { kind, scheme }),
        };
        UnparsedPublicKey::new(alg, &self.bytes)
            .verify(message, signature)
            .map_err(|_| AuthError::BadSignature(scheme))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_algorithm_identifiers() {
        let ecdsa256 = hex::decode("300a06082a8648ce3d040302").unwrap();
        assert_eq!(
            SignatureScheme::from_algorithm_identifier(&ecdsa256).unwrap(),
            SignatureScheme::EcdsaDer(Hash::Sha256)
        );
        let rsa384 = hex::decode("300d06092a864886f70d01010c0500").unwrap();
        assert_eq!(
            SignatureScheme::from_algorithm_identifier(&rsa384).unwrap(),
            SignatureScheme::RsaPkcs1(Hash::Sha384)
        );
        // RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 (as strongSwan sends it).
        let pss = hex::decode(
            "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120",
        )
        .unwrap();
        assert_eq!(
            SignatureScheme::from_algorithm_identifier(&pss).unwrap(),
            SignatureScheme::RsaPss(Hash::Sha256)
        );
    }

    #[test]
    fn rejects_unknown_or_malformed_identifiers() {
        assert!(
            SignatureScheme::from_algorithm_identifier(&[0x30, 0x03, 0x06, 0x01, 0x00]).is_err()
        );
        assert!(SignatureScheme::from_algorithm_identifier(&[0x30, 0x09]).is_err());
        // PSS with salt 20 for SHA-256 is not something we verify.
        let pss_salt20 = hex::decode(
            "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020114",
        )
        .unwrap();
        assert!(SignatureScheme::from_algorithm_identifier(&pss_salt20).is_err());
    }
}
