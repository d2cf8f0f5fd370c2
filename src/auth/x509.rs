//! X.509 for IKE: the peer's chain validated against configured CAs at a time passed
//! in (rustls-webpki), the identity it claims matched against its certificate, and
//! CERTREQ hashes of our CAs (RFC 7296 §3.6-§3.7).

use super::AuthError;
use super::signature::PublicKey;
use crate::wire::payload::Identity;
use aws_lc_rs::digest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;
use webpki::{
    EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter, KeyUsage,
    RequiredEkuNotFoundContext,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// id-kp-serverAuth, id-kp-clientAuth and id-kp-ipsecIKE (RFC 4945 §5.1.3.12), as OID bytes.
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const IPSEC_IKE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11];

/// Accepts certificates without extended key usage or with one IKE peers use.
struct IkeKeyPurpose;

impl ExtendedKeyUsageValidator for IkeKeyPurpose {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for purpose in iter {
            let purpose = purpose?;
            if [SERVER_AUTH, CLIENT_AUTH, IPSEC_IKE]
                .iter()
                .any(|ok| KeyPurposeId::new(ok) == purpose)
            {
                return Ok(());
            }
            present.push(purpose.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(
            RequiredEkuNotFoundContext {
                required: KeyUsage::required(IPSEC_IKE),
                present,
            },
        ))
    }
}

/// The CA certificates configured for a peer.
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
    certreq_hashes: Vec<u8>,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustAnchors({} CAs)", self.anchors.len())
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, AuthError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| AuthError::BadCertificate(format!("undecodable: {e}")))
}

impl TrustAnchors {
    /// Takes DER CA certificates.
    pub fn new(ca_certs: Vec<Vec<u8>>) -> Result<Self, AuthError> {
        let mut anchors = Vec::new();
        let mut certreq_hashes = Vec::new();
        for der in ca_certs {
            let cert = parse(&der)?;
            let spki_hash =
                digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert.public_key().raw);
            certreq_hashes.extend_from_slice(spki_hash.as_ref());
            let subject = cert.subject().to_string();
            let der = CertificateDer::from(der.as_slice());
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| AuthError::BadCertificate(format!("CA {subject}: {e:?}")))?;
            anchors.push(anchor.to_owned());
        }
        Ok(Self {
            anchors,
            certreq_hashes,
        })
    }

    /// The CERTREQ "Certification Authority" field: SHA-1 of each CA's DER SubjectPublicKeyInfo.
    pub fn certreq_hashes(&self) -> Vec<u8> {
        self.certreq_hashes.clone()
    }
}

/// Validates `leaf` with `intermediates` up to one of `anchors` at `now_unix`
/// (seconds since the Unix epoch); returns the leaf's public key.
pub fn validate_chain(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &TrustAnchors,
    now_unix: u64,
) -> Result<PublicKey, AuthError> {
    let cert = parse(leaf)?;
    let subject = cert.subject().to_string();
    let leaf_der = CertificateDer::from(leaf);
    let end_entity = EndEntityCert::try_from(&leaf_der)
        .map_err(|e| AuthError::BadCertificate(format!("{subject}: {e:?}")))?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors.anchors,
            &intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(now_unix)),
            IkeKeyPurpose,
            None,
            None,
        )
        .map_err(|e| {
            let why = match e {
                webpki::Error::UnknownIssuer => format!(
                    "not issued by a trusted CA: none of ours is, nor any certificate it sent, \
                     the issuer {}",
                    missing_issuer(&cert, &intermediates)
                ),
                e => describe(&e),
            };
            AuthError::UntrustedChain(format!("{subject}: {why}"))
        })?;
    // webpki leaves the leaf's key usage alone; AUTH is a signature, so it must allow one.
    if let Ok(Some(usage)) = cert.key_usage()
        && !usage.value.digital_signature()
        && !usage.value.non_repudiation()
    {
        return Err(AuthError::UntrustedChain(format!(
            "{subject}: key usage {} does not allow signatures",
            usage.value
        )));
    }
    PublicKey::from_spki(cert.public_key())
}

/// The issuer the chain from `leaf` up through `intermediates` (as sent, in any
/// order) stops at: the name a trusted CA would need.
fn missing_issuer(leaf: &X509Certificate<'_>, intermediates: &[CertificateDer<'_>]) -> String {
    let parsed: Vec<X509Certificate<'_>> = intermediates
        .iter()
        .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, c)| c))
        .collect();
    let mut issuer = leaf.issuer();
    // Each step must reach a new certificate: a loop of intermediates ends it.
    for _ in 0..parsed.len() {
        match parsed
            .iter()
            .find(|c| c.subject() == issuer && c.issuer() != issuer)
        {
            Some(next) => issuer = next.issuer(),
            None => break,
        }
    }
    issuer.to_string()
}

fn describe(e: &webpki::Error) -> String {
    match e {
        webpki::Error::CertExpired { time, not_after } => format!(
            "expired at {} (now {})",
            not_after.as_secs(),
            time.as_secs()
        ),
        webpki::Error::CertNotValidYet { time, not_before } => format!(
            "not valid before {} (now {})",
            not_before.as_secs(),
            time.as_secs()
        ),
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "extended key usage allows neither serverAuth, clientAuth nor ipsecIKE".into()
        }
        other => format!("{other:?}"),
    }
}

/// Checks that `id` names the owner of `leaf`: FQDN and RFC822 against the SAN
/// (ignoring ASCII case), IP addresses against SAN iPAddress, a DN against the subject.
pub fn check_identity(id: &Identity, leaf: &[u8]) -> Result<(), AuthError> {
    let cert = parse(leaf)?;
    let names: Vec<GeneralName<'_>> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        _ => Vec::new(),
    };
    let matches = match id {
        Identity::Fqdn(want) => names
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(want))),
        Identity::Rfc822(want) => names
            .iter()
            .any(|n| matches!(n, GeneralName::RFC822Name(m) if m.eq_ignore_ascii_case(want))),
        Identity::Ipv4(a) => has_ip(&names, IpAddr::V4(*a)),
        Identity::Ipv6(a) => has_ip(&names, IpAddr::V6(*a)),
        Identity::DerDn(der) => {
            der.as_slice() == cert.subject().as_raw()
                || X509Name::from_der(der).is_ok_and(|(_, n)| same_name(&n, cert.subject()))
        }
        _ => false,
    };
    if matches {
        return Ok(());
    }
    let sans: Vec<String> = names.iter().map(ToString::to_string).collect();
    Err(AuthError::IdMismatch {
        id: id.to_string(),
        certificate: format!("subject {}, SAN [{}]", cert.subject(), sans.join(", ")),
    })
}

fn has_ip(names: &[GeneralName<'_>], want: IpAddr) -> bool {
    names.iter().any(|n| match (n, want) {
        (GeneralName::IPAddress(b), IpAddr::V4(a)) => *b == a.octets(),
        (GeneralName::IPAddress(b), IpAddr::V6(a)) => *b == a.octets(),
        _ => false,
    })
}

/// DNs are equal when their RDNs carry the same attributes with the same text,
/// whatever string type each side encoded them with.
fn same_name(a: &X509Name<'_>, b: &X509Name<'_>) -> bool {
    let attrs = |n: &X509Name<'_>| {
        n.iter()
            .flat_map(|rdn| rdn.iter())
            .map(|attr| {
                (
                    attr.attr_type().to_id_string(),
                    attr.as_str().map(str::to_owned).ok(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (x, y) = (attrs(a), attrs(b));
    x.iter().all(|(_, v)| v.is_some()) && x == y
}

/// Reads certificates from PEM (any number of CERTIFICATE blocks) or one DER certificate.
pub fn read_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, AuthError> {
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(bytes) {
        let cert =
            cert.map_err(|e| AuthError::BadCertificate(format!("PEM: {}", super::pem_error(&e))))?;
        certs.push(cert.as_ref().to_vec());
    }
    if certs.is_empty() && bytes.first() == Some(&0x30) {
        certs.push(bytes.to_vec());
    }
    if certs.is_empty() {
        return Err(AuthError::BadCertificate(
            "no PEM CERTIFICATE block and not DER".into(),
        ));
    }
    for der in &certs {
        parse(der)?;
    }
    Ok(certs)
}
