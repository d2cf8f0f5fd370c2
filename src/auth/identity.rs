//! Identities as users write them, with strongSwan's conventions: an IP address,
//! `user@example.org` (RFC822), `example.org` or `@example.org` (FQDN), `@#0a0b` (key ID),
//! or a distinguished name such as `C=CH, O=Example, CN=gw.example.org` (DER DN).

use crate::wire::payload::Identity;
use std::net::IpAddr;

/// Why an identity string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Nothing was given.
    #[error("identity is empty")]
    Empty,
    /// Non-ASCII or control characters where IKE allows only printable ASCII.
    #[error("identity {0:?} must be printable ASCII")]
    NotAscii(String),
    /// The `@#` key ID is not hex.
    #[error("key ID {0:?} is not hex")]
    BadKeyId(String),
    /// A DN component is not `attribute=value`, or names an attribute we cannot encode.
    #[error(
        "distinguished name component {0:?}: expected one of C, ST, L, O, OU, CN, SN, serialNumber, E, DC followed by =value"
    )]
    BadDnComponent(String),
}

/// Parses an identity the way strongSwan's `id =` option does.
pub fn parse(text: &str) -> Result<Identity, IdentityError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(IdentityError::Empty);
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(match addr {
            IpAddr::V4(a) => Identity::Ipv4(a),
            IpAddr::V6(a) => Identity::Ipv6(a),
        });
    }
    if let Some(hex_id) = text.strip_prefix("@#") {
        return hex::decode(hex_id)
            .map(Identity::KeyId)
            .map_err(|_| IdentityError::BadKeyId(hex_id.into()));
    }
    if text.contains('=') {
        return encode_dn(text).map(Identity::DerDn);
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdentityError::NotAscii(text.into()));
    }
    Ok(match text.strip_prefix('@') {
        Some(fqdn) => Identity::Fqdn(fqdn.into()),
        None if text.contains('@') => Identity::Rfc822(text.into()),
        None => Identity::Fqdn(text.into()),
    })
}

/// ASN.1 string tags used for DN attribute values.
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const UTF8_STRING: u8 = 0x0c;

/// DER of `C=CH, O=Example, CN=gw`: one single-valued RDN per component, in the order written.
fn encode_dn(text: &str) -> Result<Vec<u8>, IdentityError> {
    let mut rdns = Vec::new();
    for component in text
        .split([',', '/'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let bad = || IdentityError::BadDnComponent(component.into());
        let (attr, value) = component.split_once('=').ok_or_else(bad)?;
        let (oid, tag): (&[u8], u8) = match attr.trim() {
            "C" => (&[0x55, 0x04, 0x06], PRINTABLE_STRING),
            "ST" => (&[0x55, 0x04, 0x08], UTF8_STRING),
            "L" => (&[0x55, 0x04, 0x07], UTF8_STRING),
            "O" => (&[0x55, 0x04, 0x0a], UTF8_STRING),
            "OU" => (&[0x55, 0x04, 0x0b], UTF8_STRING),
            "CN" => (&[0x55, 0x04, 0x03], UTF8_STRING),
            "SN" => (&[0x55, 0x04, 0x04], UTF8_STRING),
            "serialNumber" => (&[0x55, 0x04, 0x05], PRINTABLE_STRING),
            "E" | "emailAddress" => (
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
                IA5_STRING,
            ),
            "DC" => (
                &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
                IA5_STRING,
            ),
            _ => return Err(bad()),
        };
        let value = value.trim();
        if tag != UTF8_STRING && !value.is_ascii() {
            return Err(bad());
        }
        let attribute = tlv(0x30, &[tlv(0x06, oid), tlv(tag, value.as_bytes())].concat());
        rdns.extend(tlv(0x31, &attribute));
    }
    if rdns.is_empty() {
        return Err(IdentityError::Empty);
    }
    Ok(tlv(0x30, &rdns))
}

/// One DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_strongswan() {
        assert_eq!(
            parse("192.0.2.1").unwrap(),
            Identity::Ipv4([192, 0, 2, 1].into())
        );
        assert_eq!(
            parse("2001:db8::1").unwrap(),
            Identity::Ipv6("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            parse("gw.example").unwrap(),
            Identity::Fqdn("gw.example".into())
        );
        assert_eq!(
            parse("@gw.example").unwrap(),
            Identity::Fqdn("gw.example".into())
        );
        assert_eq!(
            parse("alice@example.org").unwrap(),
            Identity::Rfc822("alice@example.org".into())
        );
        assert_eq!(parse("@#0a0B").unwrap(), Identity::KeyId(vec![10, 11]));
        assert_eq!(parse("  ").unwrap_err(), IdentityError::Empty);
        assert!(matches!(parse("@#xyz"), Err(IdentityError::BadKeyId(_))));
        assert!(matches!(parse("gw\u{e9}"), Err(IdentityError::NotAscii(_))));
        assert!(matches!(
            parse("C=CH, X=1"),
            Err(IdentityError::BadDnComponent(c)) if c == "X=1"
        ));
    }

    #[test]
    fn distinguished_names_encode_to_der_that_x509_parser_reads_back() {
        let Identity::DerDn(der) = parse("C=CH, O=Example Org, CN=gw.example").unwrap() else {
            panic!("not a DN");
        };
        let (rest, name) =
            <x509_parser::x509::X509Name as x509_parser::prelude::FromDer<_>>::from_der(&der)
                .unwrap();
        assert!(rest.is_empty());
        assert_eq!(name.to_string(), "C=CH, O=Example Org, CN=gw.example");
    }

    #[test]
    fn long_values_use_long_form_lengths() {
        let cn = "x".repeat(300);
        let Identity::DerDn(der) = parse(&format!("CN={cn}")).unwrap() else {
            panic!("not a DN");
        };
        let (_, name) =
            <x509_parser::x509::X509Name as x509_parser::prelude::FromDer<_>>::from_der(&der)
                .unwrap();
        assert_eq!(name.to_string(), format!("CN={cn}"));
    }
}
