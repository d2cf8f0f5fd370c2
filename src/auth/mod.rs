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

/// AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>).
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
}
