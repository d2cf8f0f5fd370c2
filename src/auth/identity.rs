//! Identities as users write them, with strongSwan's conventions: an IP address,
//! `user@example.org` (RFC822), `example.org` or `@example.org` (FQDN), `@#0a0b` (key ID),
//! or a distinguished name such as `C=CH, O=Example, CN=gw.example.org` (DER DN).

use crate::wire::der::tlv;
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
    /// `*` in an identity that has no text to match it against.
    #[error("identity pattern {0:?}: `*` works in FQDNs, e-mail addresses and DN values only")]
    BadPattern(String),
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

/// The identity a connection demands of its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteId {
    /// `%any`: whatever identity the peer's credential vouches for.
    Any,
    /// Exactly this identity.
    Exact(Identity),
    /// A pattern with `*` wildcards: in an FQDN or e-mail address (`*.example.org`,
    /// `*@example.org`), or for an RDN's value in a DN (`C=CH, O=Example, CN=*`).
    Pattern(IdPattern),
}

/// An identity with `*` wildcards, as written, and the identity it parses to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPattern {
    text: String,
    /// The pattern as an identity of the type it matches (`*` kept as text).
    shape: Identity,
}

impl RemoteId {
    /// The one identity accepted, if only one is.
    pub fn exact(&self) -> Option<&Identity> {
        match self {
            Self::Exact(id) => Some(id),
            Self::Any | Self::Pattern(_) => None,
        }
    }

    /// Whether the peer may claim `id` (its credential must still vouch for it).
    pub fn accepts(&self, id: &Identity) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(want) => want == id,
            Self::Pattern(p) => p.matches(id),
        }
    }
}

impl std::fmt::Display for RemoteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("%any"),
            Self::Exact(id) => id.fmt(f),
            Self::Pattern(p) => f.write_str(&p.text),
        }
    }
}

impl IdPattern {
    fn matches(&self, id: &Identity) -> bool {
        match (&self.shape, id) {
            (Identity::Fqdn(p), Identity::Fqdn(s)) | (Identity::Rfc822(p), Identity::Rfc822(s)) => {
                glob(
                    p.to_ascii_lowercase().as_bytes(),
                    s.to_ascii_lowercase().as_bytes(),
                )
            }
            (Identity::DerDn(p), Identity::DerDn(s)) => {
                match (dn_attributes(p), dn_attributes(s)) {
                    (Some(p), Some(s)) => {
                        p.len() == s.len()
                            && p.iter().zip(&s).all(|((pt, pv), (st, sv))| {
                                pt == st && glob(pv.as_bytes(), sv.as_bytes())
                            })
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// Parses the `remote.id` option: `%any`, a pattern with `*`, or one identity.
pub fn parse_remote(text: &str) -> Result<RemoteId, IdentityError> {
    let text = text.trim();
    if text == "%any" {
        return Ok(RemoteId::Any);
    }
    let id = parse(text)?;
    if !text.contains('*') {
        return Ok(RemoteId::Exact(id));
    }
    match id {
        Identity::Fqdn(_) | Identity::Rfc822(_) | Identity::DerDn(_) => {
            Ok(RemoteId::Pattern(IdPattern {
                text: text.to_owned(),
                shape: id,
            }))
        }
        _ => Err(IdentityError::BadPattern(text.into())),
    }
}

/// A DN's attributes in order, as (type OID, value text); None if not readable.
fn dn_attributes(der: &[u8]) -> Option<Vec<(String, String)>> {
    use x509_parser::prelude::FromDer;
    let (_, name) = x509_parser::x509::X509Name::from_der(der).ok()?;
    name.iter()
        .flat_map(|rdn| rdn.iter())
        .map(|a| Some((a.attr_type().to_id_string(), a.as_str().ok()?.to_owned())))
        .collect()
}

/// Whether `text` matches `pattern`, where `*` stands for any run of bytes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // The last `*` seen and where in `text` its run ended, to backtrack to.
    let (mut p, mut t, mut star) = (0, 0, None);
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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
    fn patterns_match_the_identities_they_describe() {
        let accepts =
            |pattern: &str, id: &str| parse_remote(pattern).unwrap().accepts(&parse(id).unwrap());
        assert!(accepts("*@example.org", "alice@example.org"));
        assert!(accepts("*@example.org", "Bob@Example.ORG"));
        assert!(!accepts("*@example.org", "alice@example.org.evil"));
        assert!(
            !accepts("*@example.org", "example.org"),
            "an FQDN is no e-mail address"
        );
        assert!(accepts("*.example.org", "laptop.example.org"));
        assert!(!accepts("*.example.org", "example.org"));
        assert!(accepts("a*b*c", "abc"));
        assert!(accepts("a*b*c", "axxbyybc"));
        assert!(!accepts("a*b*c", "axxbyyb"));
        assert!(accepts(
            "C=CH, O=Example, CN=*",
            "C=CH, O=Example, CN=carol"
        ));
        assert!(!accepts("C=CH, O=Example, CN=*", "C=CH, O=Other, CN=carol"));
        assert!(!accepts(
            "C=CH, O=Example, CN=*",
            "C=CH, O=Example, OU=x, CN=carol"
        ));
        assert!(accepts("%any", "anyone.example"));
        assert!(accepts("gw.example", "gw.example"));
        assert!(!accepts("gw.example", "gw2.example"));
        assert_eq!(parse_remote(" %any ").unwrap(), RemoteId::Any);
        assert_eq!(
            parse_remote("*@example.org").unwrap().to_string(),
            "*@example.org"
        );
        assert!(matches!(
            parse_remote("@#0a*"),
            Err(IdentityError::BadKeyId(_))
        ));
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
