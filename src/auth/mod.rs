//! Authentication of IKE peers: the AUTH payload over the signed octets of
//! RFC 7296 §2.15, by pre-shared key or by signature.
//!
//! Verification returns a [`Verified`] proof that only this module can create,
//! so code that needs an authenticated peer cannot be reached without one.

pub mod identity;
pub mod private_key;
pub mod signature;
pub mod x509;

use crate::crypto::{Prf, Secret};
use crate::wire::payload::{AuthPayload, IdPayload};
use crate::wire::{AuthMethod, DecodeError};
use signature::{Hash, KeyKind, PublicKey, SignatureScheme};
use subtle::ConstantTimeEq;

/// The fixed key pad of RFC 7296 §2.15 for shared-key AUTH.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// Why a peer's AUTH payload was not accepted (all answered with AUTHENTICATION_FAILED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The AUTH method is not one we verify.
    #[error("unsupported authentication method {0}")]
    UnsupportedMethod(AuthMethod),
    /// The signature or key algorithm is not one we verify.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The method needs a different credential than the one configured.
    #[error("method {method} does not match the configured credential")]
    WrongCredential {
        /// The method the peer used.
        method: AuthMethod,
    },
    /// The scheme cannot be used with this kind of key.
    #[error("{scheme} signature does not fit a {kind:?} key")]
    KeyMismatch {
        /// The key the certificate holds.
        kind: KeyKind,
        /// The scheme the peer claims.
        scheme: SignatureScheme,
    },
    /// The signature uses SHA-1, which RFC 8247 §3.2 forbids (the AUTH method 1,
    /// RSA PKCS#1 v1.5 with SHA-1, as well as RFC 7427 signatures with SHA-1).
    #[error(
        "{0} signature refused: SHA-1 is forbidden (RFC 8247); the peer must use RFC 7427 with SHA-2"
    )]
    Sha1Refused(SignatureScheme),
    /// The signature did not verify.
    #[error("{0} signature does not verify")]
    BadSignature(SignatureScheme),
    /// The shared-key MAC did not match.
    #[error("pre-shared key AUTH does not match")]
    PskMismatch,
    /// Our private key could not be read or used.
    #[error("private key: {0}")]
    BadKey(String),
    /// The peer's certificate chain does not lead to a trusted CA, or is not valid now.
    #[error("certificate not trusted: {0}")]
    UntrustedChain(String),
    /// The identity the peer claims is not in its certificate.
    #[error("identity {id} does not match the certificate ({certificate})")]
    IdMismatch {
        /// The claimed identity.
        id: String,
        /// The certificate's subject and alternative names.
        certificate: String,
    },
    /// A certificate could not be used.
    #[error("certificate: {0}")]
    BadCertificate(String),
    /// The AUTH data itself was malformed.
    #[error("malformed AUTH data: {0}")]
    Malformed(#[from] DecodeError),
}

/// A PEM reader's error in words: rustls-pki-types prints the label or line it means
/// as a byte array ("missing section end marker: [67, 69, …]").
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim_end().to_string();
    match e {
        Error::MissingSectionEnd { end_marker } => {
            let label = text(end_marker);
            format!("truncated: the {label} block has no \"-----END {label}-----\" line")
        }
        Error::IllegalSectionStart { line } => format!("malformed line {:?}", text(line)),
        Error::Base64Decode(why) => format!("a block is not valid base64 ({why})"),
        other => other.to_string(),
    }
}

/// Proof that a peer's AUTH payload verified.
#[derive(Debug)]
pub struct Verified {
    method: AuthMethod,
}

impl Verified {
    /// The method the peer authenticated with.
    pub fn method(&self) -> AuthMethod {
        self.method
    }
}

/// What we hold to check a peer's AUTH payload.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// The pre-shared key, used with the IKE SA's PRF.
    Psk(&'a Secret),
    /// The public key from the peer's (already validated) certificate.
    PublicKey(&'a PublicKey),
}

/// The octets an AUTH payload covers (RFC 7296 §2.15): the sender's first message
/// (IKE_SA_INIT request or response), the other side's nonce, and
/// prf(SK_px, RestOfIDPayload) of the sender's ID.
pub fn signed_octets(
    first_message: &[u8],
    peer_nonce: &[u8],
    prf: Prf,
    sk_p: &Secret,
    id: &IdPayload,
) -> Vec<u8> {
    let maced_id = prf.compute(sk_p.expose(), &[&id.body()]);
    [first_message, peer_nonce, maced_id.expose()].concat()
}

/// `AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)`.
pub fn psk_auth_data(prf: Prf, psk: &Secret, signed_octets: &[u8]) -> Secret {
    let key = prf.compute(psk.expose(), &[KEY_PAD]);
    prf.compute(key.expose(), &[signed_octets])
}

/// Checks a peer's AUTH payload over its signed octets with our credential for it.
pub fn verify(
    auth: &AuthPayload,
    signed_octets: &[u8],
    prf: Prf,
    credential: Credential<'_>,
) -> Result<Verified, AuthError> {
    let method = auth.method;
    let wrong = || AuthError::WrongCredential { method };
    match (method, credential) {
        (AuthMethod::SHARED_KEY_MIC, Credential::Psk(psk)) => {
            let expected = psk_auth_data(prf, psk, signed_octets);
            if !bool::from(expected.expose().ct_eq(&auth.data)) {
                return Err(AuthError::PskMismatch);
            }
        }
        (AuthMethod::SHARED_KEY_MIC, _) => return Err(wrong()),
        (_, Credential::PublicKey(key)) => {
            let (scheme, sig) = match method {
                // RSA PKCS#1 v1.5 with SHA-1 (RFC 7296 §3.8), which `PublicKey::verify` refuses.
                AuthMethod::RSA_SIG => (SignatureScheme::RsaPkcs1(Hash::Sha1), &auth.data[..]),
                AuthMethod::ECDSA_SHA256_P256 => {
                    (SignatureScheme::EcdsaFixed(Hash::Sha256), &auth.data[..])
                }
                AuthMethod::ECDSA_SHA384_P384 => {
                    (SignatureScheme::EcdsaFixed(Hash::Sha384), &auth.data[..])
                }
                AuthMethod::ECDSA_SHA512_P521 => {
                    (SignatureScheme::EcdsaFixed(Hash::Sha512), &auth.data[..])
                }
                AuthMethod::DIGITAL_SIGNATURE => {
                    let ds = auth.parse_digital_signature()?;
                    (
                        SignatureScheme::from_algorithm_identifier(ds.algorithm)?,
                        ds.signature,
                    )
                }
                other => return Err(AuthError::UnsupportedMethod(other)),
            };
            key.verify(scheme, signed_octets, sig)?;
        }
        (_, Credential::Psk(_)) => return Err(wrong()),
    }
    Ok(Verified { method })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::payload::Identity;

    #[test]
    fn psk_auth_round_trips_and_rejects_other_keys() {
        let id = IdPayload {
            id: Identity::Fqdn("left.example".into()),
        };
        let octets = signed_octets(
            b"message-1",
            b"nonce-r",
            Prf::HmacSha256,
            &Secret::from_slice(b"sk_pi"),
            &id,
        );
        let psk = Secret::from_slice(b"correct horse");
        let auth = AuthPayload {
            method: AuthMethod::SHARED_KEY_MIC,
            data: psk_auth_data(Prf::HmacSha256, &psk, &octets)
                .expose()
                .to_vec(),
        };
        assert!(verify(&auth, &octets, Prf::HmacSha256, Credential::Psk(&psk)).is_ok());
        let other = Secret::from_slice(b"battery staple");
        assert_eq!(
            verify(&auth, &octets, Prf::HmacSha256, Credential::Psk(&other)).unwrap_err(),
            AuthError::PskMismatch
        );
    }

    #[test]
    fn signed_octets_follow_rfc7296() {
        let id = IdPayload {
            id: Identity::Fqdn("r".into()),
        };
        let sk_pr = Secret::from_slice(b"k");
        let octets = signed_octets(b"M2", b"Ni", Prf::HmacSha256, &sk_pr, &id);
        let mac = Prf::HmacSha256.compute(b"k", &[&[2, 0, 0, 0, b'r']]);
        assert_eq!(octets, [&b"M2Ni"[..], mac.expose()].concat());
    }

    /// An RSA-2048 public key (SubjectPublicKeyInfo) and its owner's PKCS#1 v1.5
    /// signatures over [`MESSAGE`] with SHA-1 and SHA-256, made with
    /// `openssl dgst -sha1 -sign` and `-sha256 -sign`.
    const RSA_SPKI: &str = concat!(
        "30820122300d06092a864886f70d01010105000382010f003082010a028201010098e6051bbbe35479001e8137ddb25e2ba9f8cedd652a3f7414e0b56db377c0",
        "89bb0c0bf5f8114a5138df6186df45b7fb3d42d328391e3de667af64671863019cb6d8fc546addf1f6e89fe25407c92523206987ef6872bce9d2fef5d9d05e8e",
        "1d2bb416c87c25c267673ad36ac2283a688dfc480dcf46b43388c82e6d7574c05d0c50ef46110aba4a86914ff89afe5e6809e11f86098cf44b20db19e8e04c6d",
        "b06fd6cb67ada04125b042a2315823a6da41647ef6c285a595c0fda161001ce25afb12d1a88cc5599a1939da09f9045943eb5a384169a6ea00bc4bb8647de52b",
        "40a826d7b6ae18f3c96d9cf0d09f81b6cb90ca399afcc64ecc50a03334ac83f7fd0203010001",
    );
    const SIG_SHA1: &str = concat!(
        "3cd3fadf25aa626ba9249851e29f6a7b0b93569d2da2add2772a41aa2ea291ba8fa4efb2de7924f65c0e80ac3f7684a3665fe5bf231f59ba35bea70f0d2333aa",
        "4b83075991f212de2da1643ed4d3434408bd218502aa212dc1c420a1e2eb1faaf35db33a895a6870716a6f1f1bcc9f8f8478887d82c51a44b048ffbdc6434962",
        "6339e7831a4143455ecfce34fbe67b2675cb32d3ec7042a2c7eb3cc6d41c36da68a107cee907abe9b52094865979f23af7c5c619c9caf4ec4481aec744b22cd7",
        "a89bc1789287c5fc3fca0d123c3d76ff3992ec162958d13e91e60a610543b275ce689d6a8e975e76c8deadf97b228c86e72553933bd20a05c6a2cd9f4687e8e0",
    );
    const SIG_SHA256: &str = concat!(
        "2ef952073674cfa2dedae3f6a2f840d3a57077a7c0d06701262b36707a93e23aaa6c60bde143b93e55c25afb1d46264bfb12573b508eca19289e672499f39b09",
        "52cf36163a961afb7f06a928a40818fdee8a9565c6a499ab884a673852f8516ad4fd575cffd60a7d45f2a2b2090c4525b5a82d04b34d2c2db035bb1b6a45bd05",
        "913ce9c90941b9bf65bf98a9c21c6ceaaa0c5159bd23cbf98d6d755161940c35c8ed37924de9f4235213715783a430ac9b27889510c3e4e167180bd1b33b8cf9",
        "61a360fd705fcfb959f59ad37225439ae79cdea3f9a9aaba49a53a3a6d8414d873aba4d3fe3e47fad060d0f4fd2ee6e68180dcc855e7837558752d127ab65c5d",
    );
    const MESSAGE: &[u8] = b"signed octets of an IKE_AUTH";
    /// sha1WithRSAEncryption and sha256WithRSAEncryption as RFC 7427 AlgorithmIdentifiers.
    const SHA1_WITH_RSA: &str = "300d06092a864886f70d0101050500";
    const SHA256_WITH_RSA: &str = "300d06092a864886f70d01010b0500";

    #[test]
    fn sha1_signatures_are_refused_even_when_valid() {
        use x509_parser::prelude::FromDer;
        let spki = hex::decode(RSA_SPKI).unwrap();
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        let key = PublicKey::from_spki(&info).unwrap();
        let (sha1, sha256) = (
            hex::decode(SIG_SHA1).unwrap(),
            hex::decode(SIG_SHA256).unwrap(),
        );
        let check = |auth: AuthPayload| {
            verify(&auth, MESSAGE, Prf::HmacSha256, Credential::PublicKey(&key)).map(|v| v.method())
        };
        let refused = Err(AuthError::Sha1Refused(SignatureScheme::RsaPkcs1(
            Hash::Sha1,
        )));
        // AUTH method 1 is RSA PKCS#1 v1.5 with SHA-1 (RFC 7296 §3.8): refused entirely.
        let method_1 = AuthPayload {
            method: AuthMethod::RSA_SIG,
            data: sha1.clone(),
        };
        assert_eq!(check(method_1), refused);
        let rfc7427_sha1 =
            AuthPayload::digital_signature(&hex::decode(SHA1_WITH_RSA).unwrap(), &sha1);
        assert_eq!(check(rfc7427_sha1), refused);
        // The same key with SHA-256, as strongSwan signs when we announce SHA-2.
        let rfc7427_sha256 =
            AuthPayload::digital_signature(&hex::decode(SHA256_WITH_RSA).unwrap(), &sha256);
        assert_eq!(check(rfc7427_sha256), Ok(AuthMethod::DIGITAL_SIGNATURE));
        assert!(
            AuthError::Sha1Refused(SignatureScheme::RsaPkcs1(Hash::Sha1))
                .to_string()
                .contains("RFC 8247")
        );
    }
}
