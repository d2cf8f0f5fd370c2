//! Test certificate authorities and host certificates, made in-process with rcgen
//! at fixed validity dates so that tests pass a fixed "now".

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// 2026-06-01T00:00:00Z, inside every validity period below.
pub const NOW: u64 = 1_780_272_000;

/// The algorithm of a test key.
#[derive(Debug, Clone, Copy)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256.
    P256,
    /// ECDSA P-384 with SHA-384.
    P384,
    /// RSA-3072 with SHA-256.
    Rsa3072,
}

impl Alg {
    fn key(self) -> KeyPair {
        match self {
            Alg::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            Alg::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            Alg::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
                    .unwrap()
            }
        }
    }
}

/// A CA that can issue certificates.
pub struct Ca {
    /// Its certificate, DER.
    pub der: Vec<u8>,
    /// Its certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued host certificate.
pub struct Issued {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub pem: String,
    /// Its private key, PEM PKCS#8.
    pub key_pem: String,
}

/// How a host certificate should look.
pub struct Leaf<'a> {
    /// Subject common name.
    pub cn: &'a str,
    /// Subject alternative names.
    pub sans: Vec<SanType>,
    /// Extended key usages (empty: no extension).
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    /// Key usages (empty: no extension).
    pub key_usage: Vec<KeyUsagePurpose>,
    /// Validity as (year, month, day) pairs.
    pub valid: ((i32, u8, u8), (i32, u8, u8)),
    /// Key algorithm.
    pub alg: Alg,
}

impl Leaf<'_> {
    /// An end-entity certificate for `dns` with the usual extensions.
    pub fn host(dns: &str, alg: Alg) -> Leaf<'_> {
        Leaf {
            cn: dns,
            sans: vec![SanType::DnsName(dns.try_into().unwrap())],
            eku: Vec::new(),
            key_usage: vec![KeyUsagePurpose::DigitalSignature],
            valid: ((2025, 1, 1), (2035, 1, 1)),
            alg,
        }
    }
}

fn params(cn: &str, valid: ((i32, u8, u8), (i32, u8, u8))) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CountryName, "CH");
    p.distinguished_name
        .push(DnType::OrganizationName, "esptun tests");
    p.distinguished_name.push(DnType::CommonName, cn);
    let ((y0, m0, d0), (y1, m1, d1)) = valid;
    p.not_before = rcgen::date_time_ymd(y0, m0, d0);
    p.not_after = rcgen::date_time_ymd(y1, m1, d1);
    p
}

impl Ca {
    /// A self-signed root.
    pub fn root(cn: &str, alg: Alg) -> Self {
        let mut p = params(cn, ((2025, 1, 1), (2040, 1, 1)));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = alg.key();
        let cert = p.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, cn: &str, alg: Alg) -> Self {
        let mut p = params(cn, ((2025, 1, 1), (2039, 1, 1)));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = alg.key();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// Issues `leaf`.
    pub fn issue(&self, leaf: Leaf<'_>) -> Issued {
        let mut p = params(leaf.cn, leaf.valid);
        p.subject_alt_names = leaf.sans;
        p.extended_key_usages = leaf.eku;
        p.key_usages = leaf.key_usage;
        let key = leaf.alg.key();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Issued {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
