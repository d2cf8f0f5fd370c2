//! PKCS#12 (RFC 7292) bundles of a certificate, its private key and the CA, as
//! `openssl pkcs12 -export` writes them in OpenSSL 3: certificates and key each under
//! PBES2 (PBKDF2 with HMAC-SHA-256, AES-256-CBC), the whole under an HMAC-SHA-256 MAC
//! keyed by the PKCS#12 KDF. That is the layout Windows, macOS/iOS and Android import
//! without "legacy" options. Built on aws-lc-rs and a few lines of DER, and read back by
//! [`decode`], which knows only this layout.

use crate::crypto::{Random, Secret};
use crate::wire::der::tlv;
use aws_lc_rs::cipher::{
    AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;
use subtle::ConstantTimeEq;

/// PBKDF2 and MAC iterations: OpenSSL 3's default (PKCS12_DEFAULT_ITER). Importers
/// take it everywhere; the bundle's strength rests on the password, which esptun
/// makes random (100 bits) unless given one.
const ITERATIONS: u32 = 2048;
/// PBKDF2 and MAC salt length, as OpenSSL writes it.
const SALT_LEN: usize = 8;

/// Object identifiers, as the arcs RFC 7292, RFC 8018 and RFC 5652 give them.
mod oid {
    pub const DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
    pub const ENCRYPTED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 6];
    pub const PBES2: &[u64] = &[1, 2, 840, 113549, 1, 5, 13];
    pub const PBKDF2: &[u64] = &[1, 2, 840, 113549, 1, 5, 12];
    pub const HMAC_SHA256: &[u64] = &[1, 2, 840, 113549, 2, 9];
    pub const AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
    pub const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
    pub const KEY_BAG_SHROUDED: &[u64] = &[1, 2, 840, 113549, 1, 12, 10, 1, 2];
    pub const CERT_BAG: &[u64] = &[1, 2, 840, 113549, 1, 12, 10, 1, 3];
    pub const X509_CERTIFICATE: &[u64] = &[1, 2, 840, 113549, 1, 9, 22, 1];
    pub const FRIENDLY_NAME: &[u64] = &[1, 2, 840, 113549, 1, 9, 20];
    pub const LOCAL_KEY_ID: &[u64] = &[1, 2, 840, 113549, 1, 9, 21];
}

/// Why a bundle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum P12Error {
    /// The DER is damaged or not PKCS#12.
    #[error("not a PKCS#12 file: {0}")]
    Malformed(&'static str),
    /// A layout other than the one esptun writes.
    #[error("unsupported PKCS#12 layout: {0}")]
    Unsupported(&'static str),
    /// The MAC does not verify: the password is wrong or the file was changed.
    #[error("wrong password or damaged file (the MAC does not verify)")]
    BadMac,
    /// Decryption failed although the MAC verified.
    #[error("cannot decrypt: {0}")]
    Decrypt(&'static str),
}

/// What a bundle holds.
#[derive(Debug, Default)]
pub struct Contents {
    /// The certificates, in file order.
    pub certs: Vec<CertEntry>,
    /// The private keys.
    pub keys: Vec<KeyEntry>,
}

/// A certificate of a bundle.
#[derive(Debug)]
pub struct CertEntry {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The name an importing device shows (friendlyName).
    pub name: Option<String>,
    /// The id that pairs it with its key (localKeyId).
    pub key_id: Option<Vec<u8>>,
}

/// A private key of a bundle.
#[derive(Debug)]
pub struct KeyEntry {
    /// The key, PKCS#8 DER.
    pub pkcs8: Secret,
    /// The id that pairs it with its certificate (localKeyId).
    pub key_id: Option<Vec<u8>>,
}

// --- DER writing --------------------------------------------------------------------

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A SET OF, its elements in DER order.
fn set(parts: &[&[u8]]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    tlv(0x31, &sorted.concat())
}

fn octets(content: &[u8]) -> Vec<u8> {
    tlv(0x04, content)
}

fn explicit0(content: &[u8]) -> Vec<u8> {
    tlv(0xa0, content)
}

fn integer(n: u32) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    let mut content = bytes[skip..].to_vec();
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut base128 = |mut v: u64| {
        let mut chunk = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            chunk.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        chunk.reverse();
        out.extend(chunk);
    };
    base128(arcs[0] * 40 + arcs[1]);
    arcs[2..].iter().for_each(|&a| base128(a));
    out
}

fn oid(arcs: &[u64]) -> Vec<u8> {
    tlv(0x06, &oid_content(arcs))
}

/// An AlgorithmIdentifier with NULL parameters.
fn algorithm_null(arcs: &[u64]) -> Vec<u8> {
    seq(&[&oid(arcs), &[0x05, 0x00]])
}

fn bmp_string(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

// --- the algorithms -------------------------------------------------------------------

fn pbkdf2_key(password: &[u8], salt: &[u8], iterations: u32) -> Result<Secret, P12Error> {
    let iterations = NonZeroU32::new(iterations).ok_or(P12Error::Malformed("zero iterations"))?;
    let mut key = Secret::new(vec![0; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        key.expose_mut(),
    );
    Ok(key)
}

/// PBES2's parameters: PBKDF2 (salt, iterations, HMAC-SHA-256) and AES-256-CBC's IV.
fn pbes2_algorithm(salt: &[u8], iv: &[u8]) -> Vec<u8> {
    let kdf = seq(&[
        &oid(oid::PBKDF2),
        &seq(&[
            &octets(salt),
            &integer(ITERATIONS),
            &algorithm_null(oid::HMAC_SHA256),
        ]),
    ]);
    let cipher = seq(&[&oid(oid::AES256_CBC), &octets(iv)]);
    seq(&[&oid(oid::PBES2), &seq(&[&kdf, &cipher])])
}

/// PBES2-encrypts `plain`: the AlgorithmIdentifier and the ciphertext.
fn pbes2_encrypt(
    plain: &[u8],
    password: &[u8],
    rng: &mut dyn Random,
) -> Result<(Vec<u8>, Vec<u8>), P12Error> {
    let mut salt = [0; SALT_LEN];
    let mut iv = [0; 16];
    rng.fill(&mut salt);
    rng.fill(&mut iv);
    let key = pbkdf2_key(password, &salt, ITERATIONS)?;
    let bad = |_| P12Error::Decrypt("AES-256-CBC key");
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, key.expose()).map_err(bad)?,
    )
    .map_err(bad)?;
    let mut data = plain.to_vec();
    key.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| P12Error::Decrypt("AES-256-CBC encryption"))?;
    Ok((pbes2_algorithm(&salt, &iv), data))
}

/// The PKCS#12 key derivation (RFC 7292 appendix B.2) with SHA-256: `len` bytes for
/// purpose `id` (3: MAC key) from the password as a NUL-terminated BMPString.
fn pkcs12_kdf(id: u8, password: &str, salt: &[u8], iterations: u32, len: usize) -> Secret {
    const U: usize = 32;
    const V: usize = 64;
    let mut pass = bmp_string(password);
    pass.extend([0, 0]);
    let stretch = |s: &[u8]| -> Vec<u8> {
        if s.is_empty() {
            return Vec::new();
        }
        s.iter()
            .copied()
            .cycle()
            .take(V * s.len().div_ceil(V))
            .collect()
    };
    let mut i_block = [stretch(salt), stretch(&pass)].concat();
    let d = [id; V];
    let mut out = Vec::with_capacity(len.div_ceil(U) * U);
    while out.len() < len {
        let mut a = digest::digest(&digest::SHA256, &[&d[..], &i_block].concat());
        for _ in 1..iterations {
            a = digest::digest(&digest::SHA256, a.as_ref());
        }
        out.extend_from_slice(a.as_ref());
        let b: Vec<u8> = a.as_ref().iter().copied().cycle().take(V).collect();
        for chunk in i_block.chunks_mut(V) {
            // chunk = (chunk + b + 1) mod 2^(8V)
            let mut carry = 1u16;
            for (x, y) in chunk.iter_mut().zip(&b).rev() {
                let sum = u16::from(*x) + u16::from(*y) + carry;
                *x = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    pass.iter_mut().for_each(|b| *b = 0);
    out.truncate(len);
    Secret::new(out)
}

fn mac(password: &str, salt: &[u8], iterations: u32, data: &[u8]) -> hmac::Tag {
    let key = pkcs12_kdf(3, password, salt, iterations, 32);
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key.expose()), data)
}

// --- encoding ---------------------------------------------------------------------------

/// The attributes OpenSSL gives the key and its certificate: a name the importing
/// device shows, and the id that pairs them.
fn bag_attributes(name: &str, key_id: &[u8]) -> Vec<u8> {
    let friendly = seq(&[
        &oid(oid::FRIENDLY_NAME),
        &set(&[&tlv(0x1e, &bmp_string(name))]),
    ]);
    let id = seq(&[&oid(oid::LOCAL_KEY_ID), &set(&[&octets(key_id)])]);
    set(&[&friendly, &id])
}

fn cert_bag(der: &[u8], attributes: Option<&[u8]>) -> Vec<u8> {
    let value = seq(&[&oid(oid::X509_CERTIFICATE), &explicit0(&octets(der))]);
    seq(&[
        &oid(oid::CERT_BAG),
        &explicit0(&value),
        attributes.unwrap_or_default(),
    ])
}

/// A PKCS#12 file with `cert` (DER) and its PKCS#8 `key` under `name`, and the
/// certificates of `chain` (intermediates and the CA, DER), protected by `password`.
pub fn encode(
    name: &str,
    cert: &[u8],
    key_pkcs8: &Secret,
    chain: &[Vec<u8>],
    password: &str,
    rng: &mut dyn Random,
) -> Result<Vec<u8>, P12Error> {
    let key_id = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert);
    let attributes = bag_attributes(name, key_id.as_ref());

    let mut bags = vec![cert_bag(cert, Some(&attributes))];
    bags.extend(chain.iter().map(|c| cert_bag(c, None)));
    let cert_safe = seq(&bags.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let (alg, sealed) = pbes2_encrypt(&cert_safe, password.as_bytes(), rng)?;
    let encrypted_data = seq(&[
        &integer(0),
        &seq(&[&oid(oid::DATA), &alg, &tlv(0x80, &sealed)]),
    ]);
    let certs_info = seq(&[&oid(oid::ENCRYPTED_DATA), &explicit0(&encrypted_data)]);

    let (alg, sealed) = pbes2_encrypt(key_pkcs8.expose(), password.as_bytes(), rng)?;
    let shrouded = seq(&[&alg, &octets(&sealed)]);
    let key_bag = seq(&[
        &oid(oid::KEY_BAG_SHROUDED),
        &explicit0(&shrouded),
        &attributes,
    ]);
    let key_info = seq(&[&oid(oid::DATA), &explicit0(&octets(&seq(&[&key_bag])))]);

    let auth_safe = seq(&[&certs_info, &key_info]);
    let mut salt = [0; SALT_LEN];
    rng.fill(&mut salt);
    let tag = mac(password, &salt, ITERATIONS, &auth_safe);
    let mac_data = seq(&[
        &seq(&[&algorithm_null(oid::SHA256), &octets(tag.as_ref())]),
        &octets(&salt),
        &integer(ITERATIONS),
    ]);
    Ok(seq(&[
        &integer(3),
        &seq(&[&oid(oid::DATA), &explicit0(&octets(&auth_safe))]),
        &mac_data,
    ]))
}

// --- decoding ---------------------------------------------------------------------------

/// A bounded DER reader over one level of TLVs.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next TLV: its tag and content.
    fn any(&mut self) -> Result<(u8, &'a [u8]), P12Error> {
        let bad = P12Error::Malformed("truncated DER");
        let (&tag, rest) = self.0.split_first().ok_or(bad.clone())?;
        let (&first, mut rest) = rest.split_first().ok_or(bad.clone())?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(P12Error::Malformed("bad DER length"));
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err(bad);
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Ok((tag, content))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], P12Error> {
        match self.any()? {
            (t, content) if t == tag => Ok(content),
            _ => Err(P12Error::Malformed(what)),
        }
    }

    fn seq(&mut self, what: &'static str) -> Result<Der<'a>, P12Error> {
        self.expect(0x30, what).map(Der)
    }

    fn oid(&mut self) -> Result<&'a [u8], P12Error> {
        self.expect(0x06, "an object identifier expected")
    }

    fn octets(&mut self) -> Result<&'a [u8], P12Error> {
        self.expect(0x04, "an OCTET STRING expected")
    }

    fn u32(&mut self) -> Result<u32, P12Error> {
        let content = self.expect(0x02, "an INTEGER expected")?;
        if content.is_empty() || content.len() > 5 || content[0] & 0x80 != 0 {
            return Err(P12Error::Unsupported("an INTEGER out of range"));
        }
        let value = content
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        u32::try_from(value).map_err(|_| P12Error::Unsupported("an INTEGER out of range"))
    }

    /// The content of a [0] EXPLICIT wrapper.
    fn explicit0(&mut self) -> Result<Der<'a>, P12Error> {
        self.expect(0xa0, "[0] expected").map(Der)
    }
}

fn is(found: &[u8], arcs: &[u64]) -> bool {
    found == oid_content(arcs)
}

/// Decrypts PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC) given the content of its
/// AlgorithmIdentifier.
fn pbes2_decrypt(mut alg: Der<'_>, data: &[u8], password: &[u8]) -> Result<Secret, P12Error> {
    if !is(alg.oid()?, oid::PBES2) {
        return Err(P12Error::Unsupported("encryption other than PBES2"));
    }
    let mut params = alg.seq("PBES2 parameters")?;
    let mut kdf = params.seq("PBES2 key derivation")?;
    if !is(kdf.oid()?, oid::PBKDF2) {
        return Err(P12Error::Unsupported("key derivation other than PBKDF2"));
    }
    let mut kdf = kdf.seq("PBKDF2 parameters")?;
    let salt = kdf.octets()?;
    let iterations = kdf.u32()?;
    if iterations > 10_000_000 {
        return Err(P12Error::Unsupported(
            "more than 10 million PBKDF2 iterations",
        ));
    }
    // An optional key length, then the PRF.
    let mut prf = loop {
        match kdf.any()? {
            (0x02, _) => continue,
            (0x30, content) => break Der(content),
            _ => return Err(P12Error::Malformed("PBKDF2 parameters")),
        }
    };
    if !is(prf.oid()?, oid::HMAC_SHA256) {
        return Err(P12Error::Unsupported(
            "PBKDF2 with a PRF other than HMAC-SHA-256",
        ));
    }
    let mut cipher = params.seq("PBES2 cipher")?;
    if !is(cipher.oid()?, oid::AES256_CBC) {
        return Err(P12Error::Unsupported("a cipher other than AES-256-CBC"));
    }
    let iv: [u8; 16] = cipher
        .octets()?
        .try_into()
        .map_err(|_| P12Error::Malformed("AES-CBC IV"))?;
    let key = pbkdf2_key(password, salt, iterations)?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(
        UnboundCipherKey::new(&AES_256, key.expose())
            .map_err(|_| P12Error::Decrypt("AES-256-CBC key"))?,
    )
    .map_err(|_| P12Error::Decrypt("AES-256-CBC key"))?;
    let mut buf = data.to_vec();
    let len = key
        .decrypt(&mut buf, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| P12Error::Decrypt("bad padding"))?
        .len();
    buf.truncate(len);
    Ok(Secret::new(buf))
}

/// A bag's friendlyName and localKeyId.
fn read_attributes(mut set: Der<'_>) -> Result<(Option<String>, Option<Vec<u8>>), P12Error> {
    let (mut name, mut id) = (None, None);
    while !set.is_empty() {
        let mut attr = set.seq("bag attribute")?;
        let kind = attr.oid()?;
        let mut values = Der(attr.expect(0x31, "attribute values")?);
        if is(kind, oid::FRIENDLY_NAME) {
            let bmp = values.expect(0x1e, "friendlyName BMPString")?;
            let units: Vec<u16> = bmp
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            name = Some(String::from_utf16_lossy(&units));
        } else if is(kind, oid::LOCAL_KEY_ID) {
            id = Some(values.octets()?.to_vec());
        }
    }
    Ok((name, id))
}

/// The bags of one SafeContents into `out`.
fn read_bags(safe: &[u8], password: &str, out: &mut Contents) -> Result<(), P12Error> {
    let mut bags = Der(safe).seq("SafeContents")?;
    while !bags.is_empty() {
        let mut bag = bags.seq("SafeBag")?;
        let kind = bag.oid()?;
        let mut value = bag.explicit0()?;
        let (name, id) = if bag.is_empty() {
            (None, None)
        } else {
            read_attributes(Der(bag.expect(0x31, "bag attributes")?))?
        };
        if is(kind, oid::CERT_BAG) {
            let mut cert = value.seq("CertBag")?;
            if !is(cert.oid()?, oid::X509_CERTIFICATE) {
                return Err(P12Error::Unsupported("a certificate other than X.509"));
            }
            out.certs.push(CertEntry {
                der: cert.explicit0()?.octets()?.to_vec(),
                name,
                key_id: id,
            });
        } else if is(kind, oid::KEY_BAG_SHROUDED) {
            let mut info = value.seq("EncryptedPrivateKeyInfo")?;
            let alg = info.seq("key encryption algorithm")?;
            let key = pbes2_decrypt(alg, info.octets()?, password.as_bytes())?;
            out.keys.push(KeyEntry {
                pkcs8: key,
                key_id: id,
            });
        } else {
            return Err(P12Error::Unsupported(
                "a bag other than certificate or shrouded key",
            ));
        }
    }
    Ok(())
}

/// Reads a bundle written as [`encode`] writes it, after verifying its MAC.
pub fn decode(data: &[u8], password: &str) -> Result<Contents, P12Error> {
    let mut pfx = Der(data).seq("PFX")?;
    if pfx.u32()? != 3 {
        return Err(P12Error::Unsupported("PFX version other than 3"));
    }
    let mut info = pfx.seq("authSafe")?;
    if !is(info.oid()?, oid::DATA) {
        return Err(P12Error::Unsupported("a public-key protected authSafe"));
    }
    let auth_safe = info.explicit0()?.octets()?;
    let mut mac_data = pfx.seq("MacData")?;
    let mut digest_info = mac_data.seq("DigestInfo")?;
    let mut alg = digest_info.seq("MAC algorithm")?;
    if !is(alg.oid()?, oid::SHA256) {
        return Err(P12Error::Unsupported("a MAC other than HMAC-SHA-256"));
    }
    let expected = digest_info.octets()?;
    let salt = mac_data.octets()?;
    let iterations = if mac_data.is_empty() {
        1
    } else {
        mac_data.u32()?
    };
    if iterations > 10_000_000 {
        return Err(P12Error::Unsupported("more than 10 million MAC iterations"));
    }
    let tag = mac(password, salt, iterations, auth_safe);
    if !bool::from(tag.as_ref().ct_eq(expected)) {
        return Err(P12Error::BadMac);
    }
    let mut out = Contents::default();
    let mut infos = Der(auth_safe).seq("AuthenticatedSafe")?;
    while !infos.is_empty() {
        let mut info = infos.seq("ContentInfo")?;
        let kind = info.oid()?;
        let mut content = info.explicit0()?;
        if is(kind, oid::DATA) {
            read_bags(content.octets()?, password, &mut out)?;
        } else if is(kind, oid::ENCRYPTED_DATA) {
            let mut encrypted = content.seq("EncryptedData")?;
            encrypted.u32()?;
            let mut body = encrypted.seq("EncryptedContentInfo")?;
            body.oid()?;
            let alg = body.seq("content encryption algorithm")?;
            let sealed = body.expect(0x80, "encryptedContent")?;
            let plain = pbes2_decrypt(alg, sealed, password.as_bytes())?;
            read_bags(plain.expose(), password, &mut out)?;
        } else {
            return Err(P12Error::Unsupported(
                "a content type other than data or encryptedData",
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;

    #[test]
    fn der_lengths_integers_and_oids() {
        assert_eq!(tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        assert_eq!(&tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(&tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 1, 44]);
        assert_eq!(integer(3), [0x02, 1, 3]);
        assert_eq!(integer(0), [0x02, 1, 0]);
        assert_eq!(integer(2048), [0x02, 2, 0x08, 0x00]);
        assert_eq!(integer(128), [0x02, 2, 0x00, 0x80]);
        assert_eq!(
            hex::encode(oid(oid::PBES2)),
            "06092a864886f70d01050d" // 1.2.840.113549.1.5.13
        );
        assert_eq!(
            hex::encode(oid(oid::AES256_CBC)),
            "060960864801650304012a" // 2.16.840.1.101.3.4.1.42
        );
    }

    #[test]
    fn a_bundle_reads_back_only_with_its_password() {
        let mut rng = SeededRandom::new(12);
        let key = Secret::from_slice(b"pkcs8 stand-in");
        let bundle = encode(
            "alice@example.org",
            b"leaf",
            &key,
            &[b"ca".to_vec()],
            "correct horse",
            &mut rng,
        )
        .unwrap();
        let read = decode(&bundle, "correct horse").unwrap();
        assert_eq!(read.certs.len(), 2);
        let leaf = &read.certs[0];
        assert_eq!(leaf.der, b"leaf");
        assert_eq!(leaf.name.as_deref(), Some("alice@example.org"));
        assert_eq!(read.certs[1].der, b"ca");
        assert_eq!(read.certs[1].name, None);
        assert_eq!(read.keys.len(), 1);
        assert_eq!(read.keys[0].pkcs8, key);
        assert_eq!(
            read.keys[0].key_id, leaf.key_id,
            "the key and its certificate share an id"
        );
        assert_eq!(decode(&bundle, "wrong").unwrap_err(), P12Error::BadMac);
        let mut damaged = bundle.clone();
        let last = damaged.len() - 40;
        damaged[last] ^= 1;
        assert!(decode(&damaged, "correct horse").is_err());
        assert!(decode(&bundle[..bundle.len() - 1], "correct horse").is_err());
    }
}
