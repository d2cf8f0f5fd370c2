//! `esptun pki`: a CA and host certificates good enough for a tunnel (rcgen).
//! Host certificates carry the identity as subject CN and as alternative name, the
//! key usage IKE signatures need, and serverAuth/clientAuth. Time comes in as an
//! argument, like everywhere outside the drivers.

use crate::auth::identity;
use crate::wire::payload::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The key algorithm of a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA over P-256 with SHA-256.
    EcdsaP256,
    /// RSA-3072 with SHA-256.
    Rsa3072,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its PKCS#8 private key.
    pub key_pem: String,
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The identity does not parse or cannot name a host certificate.
    #[error("identity: {0}")]
    Identity(String),
    /// rcgen refused.
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
}

fn key(kind: KeyType) -> Result<KeyPair, rcgen::Error> {
    match kind {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::Rsa3072 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
    }
}

/// The civil date (year, month, day) of a Unix time (Howard Hinnant's algorithm).
fn date(unix_secs: u64) -> (i32, u8, u8) {
    let days = (unix_secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// Valid from the start of today (so clocks a little behind still accept it) for `days`.
fn params(cn: &str, now_unix: u64, days: u32) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::OrganizationName, "esptun");
    p.distinguished_name.push(DnType::CommonName, cn);
    let (y, m, d) = date(now_unix);
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = date(now_unix + u64::from(days) * 86_400);
    p.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(p)
}

/// A self-signed CA.
pub fn make_ca(cn: &str, kind: KeyType, now_unix: u64, days: u32) -> Result<Issued, PkiError> {
    let mut p = params(cn, now_unix, days)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = key(kind)?;
    let cert = p.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A host certificate for `id` (FQDN, e-mail or IP address), signed by the CA.
pub fn make_host(
    ca: &Issued,
    id: &str,
    kind: KeyType,
    now_unix: u64,
    days: u32,
) -> Result<Issued, PkiError> {
    let bad = |why: String| PkiError::Identity(why);
    let san = match identity::parse(id).map_err(|e| bad(e.to_string()))? {
        Identity::Fqdn(name) => SanType::DnsName(name.as_str().try_into()?),
        Identity::Rfc822(mail) => SanType::Rfc822Name(mail.as_str().try_into()?),
        Identity::Ipv4(a) => SanType::IpAddress(a.into()),
        Identity::Ipv6(a) => SanType::IpAddress(a.into()),
        other => return Err(bad(format!("{other} cannot name a host certificate"))),
    };
    let mut p = params(id, now_unix, days)?;
    p.subject_alt_names = vec![san];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = key(kind)?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(date(0), (1970, 1, 1));
        assert_eq!(date(1_780_272_000), (2026, 6, 1));
        assert_eq!(date(951_782_400), (2000, 2, 29));
    }
}
