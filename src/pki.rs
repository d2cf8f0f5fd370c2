//! `esptun pki`: a CA and host certificates good enough for a tunnel (rcgen), the
//! files they are kept in, a description of any certificate (`pki show`), and PKCS#12
//! bundles for devices to import (`pki export`).
//! Host certificates carry their names as subject alternative names (the first also
//! as subject CN), the key usage IKE signatures need, and the extended key usages of
//! their [`Profile`]. Time comes in as an argument, like everywhere outside the
//! drivers.

pub mod p12;

use crate::auth::identity;
use crate::auth::private_key::PrivateKey;
use crate::auth::signature::{KeyKind, PublicKey};
use crate::auth::x509::read_certificates;
use crate::crypto::{Random, Secret};
use crate::wire::payload::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Where `esptun pki` writes when no directory is given, relative to the current
/// directory.
pub const DEFAULT_DIR: &str = "certs";

/// id-kp-ipsecIKE (RFC 4945 §5.1.3.12), 1.3.6.1.5.5.7.3.17.
const IPSEC_IKE: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 17];

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

/// What a host certificate is for, which decides its extended key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Either end of a tunnel: serverAuth and clientAuth (ipsecIKE when asked).
    #[default]
    Host,
    /// A gateway that Windows, macOS/iOS and Android clients dial: serverAuth and
    /// ipsecIKE, and the first name a DNS name or an IP address, which those clients
    /// compare with the server they were told to connect to.
    Gateway,
    /// A road-warrior client: clientAuth and ipsecIKE.
    Client,
}

/// What a host certificate names and allows.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its subject alternative names: each an IP address, an e-mail address
    /// (`user@domain`) or else a DNS name, as strongSwan's `pki --san` reads them. The
    /// first is also the subject CN. At least one.
    pub sans: Vec<String>,
    /// The key algorithm.
    pub kind: KeyType,
    /// Validity in days from the start of today.
    pub days: u32,
    /// Add id-kp-ipsecIKE to serverAuth and clientAuth: some IKE peers (older Windows
    /// and macOS clients) insist on it. The gateway and client profiles always have it.
    pub ipsec_ike: bool,
    /// The extended key usages (and, for a gateway, the names) it must have.
    pub profile: Profile,
}

/// Why a certificate could not be made, stored or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A name does not parse or cannot name a host certificate.
    #[error("identity: {0}")]
    Identity(String),
    /// rcgen refused.
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A certificate or key file holds something else.
    #[error("{}: {why}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The file exists: a key may be the only copy of one that certificates in use
    /// depend on, so it is replaced only when asked.
    #[error("{}: exists (--force replaces it)", .0.display())]
    Exists(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
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
fn date(unix_secs: i64) -> (i32, u8, u8) {
    let days = unix_secs.div_euclid(86_400) + 719_468;
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

/// A Unix time as `YYYY-MM-DD hh:mm:ss UTC`.
fn utc(unix_secs: i64) -> String {
    let (y, m, d) = date(unix_secs);
    let secs = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Valid from the start of today (so clocks a little behind still accept it) for `days`.
fn params(cn: &str, now_unix: u64, days: u32) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::OrganizationName, "esptun");
    p.distinguished_name.push(DnType::CommonName, cn);
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX / 2);
    let (y, m, d) = date(now);
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = date(now + i64::from(days) * 86_400);
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

/// A subject alternative name read as an IKE identity (FQDN, e-mail or IP address).
fn san(name: &str) -> Result<SanType, PkiError> {
    let bad = |why: String| PkiError::Identity(why);
    Ok(
        match identity::parse(name).map_err(|e| bad(e.to_string()))? {
            Identity::Fqdn(name) => SanType::DnsName(name.as_str().try_into()?),
            Identity::Rfc822(mail) => SanType::Rfc822Name(mail.as_str().try_into()?),
            Identity::Ipv4(a) => SanType::IpAddress(a.into()),
            Identity::Ipv6(a) => SanType::IpAddress(a.into()),
            other => return Err(bad(format!("{other} cannot name a host certificate"))),
        },
    )
}

/// A host certificate, signed by the CA.
pub fn make_host(ca: &Issued, host: &Host, now_unix: u64) -> Result<Issued, PkiError> {
    let first = host
        .sans
        .first()
        .ok_or_else(|| PkiError::Identity("a host certificate needs a name".into()))?;
    let mut p = params(first, now_unix, host.days)?;
    p.subject_alt_names = host
        .sans
        .iter()
        .map(|name| san(name))
        .collect::<Result<_, _>>()?;
    if host.profile == Profile::Gateway
        && let Some(SanType::Rfc822Name(_)) = p.subject_alt_names.first()
    {
        return Err(PkiError::Identity(format!(
            "--profile gateway: the first --san must be the DNS name or IP address the \
             clients dial (they check the gateway's certificate against it), not the \
             e-mail address {first}"
        )));
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let ipsec_ike = ExtendedKeyUsagePurpose::Other(IPSEC_IKE.to_vec());
    p.extended_key_usages = match host.profile {
        Profile::Host => {
            let mut usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            if host.ipsec_ike {
                usages.push(ipsec_ike);
            }
            usages
        }
        Profile::Gateway => vec![ExtendedKeyUsagePurpose::ServerAuth, ipsec_ike],
        Profile::Client => vec![ExtendedKeyUsagePurpose::ClientAuth, ipsec_ike],
    };
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = key(host.kind)?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads DIR/ca.crt and DIR/ca.key, checked with the readers the daemon uses, so a
/// damaged file is reported in the same words, and the key must belong to the
/// certificate.
pub fn load_ca(dir: &Path) -> Result<Issued, PkiError> {
    let read = |name: &str| {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(PkiError::Unreadable {
                why: format!("{e} (esptun pki ca --out {} makes a CA)", dir.display()),
                path,
            }),
            Err(e) => Err(io_error(&path)(e)),
        }
    };
    let unreadable = |path: &Path, why: String| PkiError::Unreadable {
        path: path.to_owned(),
        why,
    };
    let (cert_path, cert_pem) = read("ca.crt")?;
    let (key_path, key_pem) = read("ca.key")?;
    let ders = read_certificates(cert_pem.as_bytes())
        .map_err(|e| unreadable(&cert_path, e.to_string()))?;
    let key = PrivateKey::from_pem_or_der(key_pem.as_bytes())
        .map_err(|e| unreadable(&key_path, e.to_string()))?;
    if !key.matches_certificate(&ders[0]) {
        return Err(unreadable(
            &key_path,
            format!("not the key of {}", cert_path.display()),
        ));
    }
    Ok(Issued { cert_pem, key_pem })
}

/// Creates `dir` (and its parents) readable by its owner only, when it is missing.
pub fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

/// Writes `issued` as DIR/NAME.crt (mode 0644) and DIR/NAME.key (0600), creating DIR
/// (0700) when missing. Neither file is replaced unless `force`; a replaced key gets
/// mode 0600 whatever the old file's was. Returns both paths.
pub fn store(
    dir: &Path,
    name: &str,
    issued: &Issued,
    force: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    create_dir(dir)?;
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    for path in [&cert, &key] {
        match std::fs::symlink_metadata(path) {
            Ok(_) if !force => return Err(PkiError::Exists(path.clone())),
            Ok(_) => std::fs::remove_file(path).map_err(io_error(path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
    let write = |path: &Path, mode: u32, text: &str| {
        // create_new: nothing that appeared since the check above is overwritten.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io_error(path))
    };
    write(&key, 0o600, &issued.key_pem)?;
    write(&cert, 0o644, &issued.cert_pem)?;
    Ok((cert, key))
}

/// The characters of a generated password: no 0/O, 1/l/I, so that it can be read
/// off a screen and typed on a phone. 32 of them, so a byte's low 5 bits pick one
/// without bias.
const PASSWORD_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A random password of 20 characters (100 bits) for a PKCS#12 bundle.
pub fn random_password(rng: &mut dyn Random) -> String {
    let mut bytes = [0u8; 20];
    rng.fill(&mut bytes);
    let password = bytes
        .iter()
        .map(|b| char::from(PASSWORD_ALPHABET[usize::from(b & 31)]))
        .collect();
    bytes.fill(0);
    password
}

/// The password in `path`: its first line, without the line end. Empty is refused,
/// since some importers cannot take a bundle without one.
pub fn read_password(path: &Path) -> Result<String, PkiError> {
    let unreadable = |why: &str| PkiError::Unreadable {
        path: path.to_owned(),
        why: why.into(),
    };
    let bytes = Secret::new(std::fs::read(path).map_err(io_error(path))?);
    let text = std::str::from_utf8(bytes.expose()).map_err(|_| unreadable("not UTF-8 text"))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(unreadable(
            "empty: the password is its first line, and an empty one is refused",
        ));
    }
    Ok(line.to_owned())
}

/// Bundles DIR/NAME.crt (with any chain after it), DIR/NAME.key and DIR/ca.crt into a
/// PKCS#12 file `out` (mode 0600) for a device to import, protected by `password`.
/// The key must be PKCS#8 (as `pki issue` writes it) and belong to the certificate.
/// `out` is replaced only when `force`. Returns the number of certificates bundled.
pub fn export(
    dir: &Path,
    name: &str,
    out: &Path,
    password: &str,
    force: bool,
    rng: &mut dyn Random,
) -> Result<usize, PkiError> {
    let unreadable = |path: &Path, why: String| PkiError::Unreadable {
        path: path.to_owned(),
        why,
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => unreadable(
                path,
                format!(
                    "{e} (esptun pki issue --dir {} --san {name} makes it)",
                    dir.display()
                ),
            ),
            _ => io_error(path)(e),
        })
    };
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    let ca_path = dir.join("ca.crt");
    let mut certs =
        read_certificates(&read(&cert_path)?).map_err(|e| unreadable(&cert_path, e.to_string()))?;
    let ca =
        read_certificates(&read(&ca_path)?).map_err(|e| unreadable(&ca_path, e.to_string()))?;
    let key_bytes = Secret::new(read(&key_path)?);
    let key = PrivateKey::from_pem_or_der(key_bytes.expose())
        .map_err(|e| unreadable(&key_path, e.to_string()))?;
    if !key.matches_certificate(&certs[0]) {
        return Err(unreadable(
            &key_path,
            format!("not the key of {}", cert_path.display()),
        ));
    }
    let pkcs8 = pkcs8_der(key_bytes.expose()).ok_or_else(|| {
        unreadable(
            &key_path,
            "not a PKCS#8 key, which PKCS#12 carries (openssl pkcs8 -topk8 -nocrypt converts it)"
                .into(),
        )
    })?;
    let leaf = certs.remove(0);
    for c in ca {
        if c != leaf && !certs.contains(&c) {
            certs.push(c);
        }
    }
    let bundle = p12::encode(name, &leaf, &pkcs8, &certs, password, rng).map_err(|e| {
        PkiError::Unreadable {
            path: out.to_owned(),
            why: e.to_string(),
        }
    })?;
    match std::fs::symlink_metadata(out) {
        Ok(_) if !force => return Err(PkiError::Exists(out.to_owned())),
        Ok(_) => std::fs::remove_file(out).map_err(io_error(out))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(out)(e)),
    }
    // It holds the key, sealed only by the password: its owner's alone.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| f.write_all(&bundle))
        .map_err(io_error(out))?;
    Ok(1 + certs.len())
}

/// The PKCS#8 DER of a PEM "PRIVATE KEY" block or of DER PKCS#8.
fn pkcs8_der(bytes: &[u8]) -> Option<Secret> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(PrivateKeyDer::Pkcs8(key)) => Some(Secret::from_slice(key.secret_pkcs8_der())),
        Ok(_) => None,
        // DER: PKCS#8 starts SEQUENCE { INTEGER 0, SEQUENCE { OID ...
        Err(_) => {
            let der = Secret::from_slice(bytes);
            let looks_pkcs8 = bytes.len() > 8 && bytes[0] == 0x30 && {
                let at = if bytes[1] & 0x80 != 0 {
                    2 + usize::from(bytes[1] & 0x7f)
                } else {
                    2
                };
                // version 0 (RFC 5208) or 1 (RFC 5958)
                matches!(bytes.get(at..at + 4), Some([0x02, 0x01, 0x00 | 0x01, 0x30]))
            };
            looks_pkcs8.then_some(der)
        }
    }
}

/// A subject alternative name as `DNS:`, `IP:` or `email:` and the value.
fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::RFC822Name(mail) => format!("email:{mail}"),
        GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
            Ok(v4) => format!("IP:{}", IpAddr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP:{}", IpAddr::from(v6)),
                Err(_) => format!("IP:{}", hex::encode(bytes)),
            },
        },
        other => other.to_string(),
    }
}

/// One certificate in words: subject, issuer, serial, validity, key, alternative
/// names, key usage, extended key usage, whether it is a CA, SHA-256 fingerprint of
/// `der`, its encoding.
fn describe(cert: &X509Certificate<'_>, der: &[u8]) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<15}{value}");
    };
    line("subject:", cert.subject().to_string());
    line("issuer:", cert.issuer().to_string());
    line("serial:", cert.raw_serial_as_string());
    line("not before:", utc(cert.validity().not_before.timestamp()));
    line("not after:", utc(cert.validity().not_after.timestamp()));
    let bits = cert.public_key().parsed().map_or(0, |k| k.key_size());
    line(
        "key:",
        match PublicKey::from_spki(cert.public_key()).map(|k| k.kind()) {
            Ok(KeyKind::Rsa) => format!("RSA-{bits}"),
            Ok(KeyKind::EcP256) => "ECDSA P-256".into(),
            Ok(KeyKind::EcP384) => "ECDSA P-384".into(),
            Ok(KeyKind::EcP521) => "ECDSA P-521".into(),
            Ok(KeyKind::Ed25519) => "Ed25519".into(),
            Err(e) => e.to_string(),
        },
    );
    let none = || "(none)".to_string();
    let sans = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .map(general_name)
            .collect::<Vec<_>>()
            .join(", "),
        Ok(None) => none(),
        Err(e) => format!("undecodable: {e}"),
    };
    line("alt names:", sans);
    let usage = match cert.key_usage() {
        Ok(Some(usage)) => usage.value.to_string(),
        Ok(None) => none(),
        Err(e) => format!("undecodable: {e}"),
    };
    line("key usage:", usage);
    let eku = match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            let e = &eku.value;
            let known = [
                (e.any, "any"),
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
            ];
            let mut names: Vec<String> = known
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, name)| (*name).to_string())
                .collect();
            names.extend(e.other.iter().map(|oid| {
                let dotted = oid.to_id_string();
                if dotted == "1.3.6.1.5.5.7.3.17" {
                    "ipsecIKE".into()
                } else {
                    dotted
                }
            }));
            names.join(", ")
        }
        Ok(None) => none(),
        Err(e) => format!("undecodable: {e}"),
    };
    line("ext key usage:", eku);
    line("CA:", if cert.is_ca() { "yes" } else { "no" }.into());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    line("SHA-256:", fingerprint.join(":"));
    out
}

/// Every certificate in a PEM or DER file, described, separated by blank lines.
pub fn show(path: &Path) -> Result<String, PkiError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let ders = read_certificates(&bytes).map_err(|e| PkiError::Unreadable {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    let mut texts = Vec::new();
    for der in &ders {
        // read_certificates decoded each one already.
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Unreadable {
            path: path.to_owned(),
            why: format!("undecodable certificate: {e}"),
        })?;
        texts.push(describe(&cert, der));
    }
    Ok(texts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(date(0), (1970, 1, 1));
        assert_eq!(date(1_780_272_000), (2026, 6, 1));
        assert_eq!(date(951_782_400), (2000, 2, 29));
        assert_eq!(date(-1), (1969, 12, 31));
        assert_eq!(utc(1_780_272_000 + 3723), "2026-06-01 01:02:03 UTC");
    }
}
