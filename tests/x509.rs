//! Certificate chains, identities and our signatures, against PKIs made by rcgen.

mod common;

use common::pki::{Alg, Ca, Leaf, NOW};
use esptun::auth::identity;
use esptun::auth::private_key::PrivateKey;
use esptun::auth::signature::{Hash, PublicKey};
use esptun::auth::x509::{TrustAnchors, check_identity, read_certificates, validate_chain};
use esptun::auth::{AuthError, Credential, verify};
use esptun::crypto::Prf;
use esptun::wire::AuthMethod;
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};

fn anchors(ca: &Ca) -> TrustAnchors {
    TrustAnchors::new(vec![ca.der.clone()]).unwrap()
}

#[test]
fn chains_validate_with_and_without_intermediates() {
    for alg in [Alg::P256, Alg::Rsa3072] {
        let root = Ca::root("Root", alg);
        let leaf = root.issue(Leaf::host("gw.example", alg)).der;
        assert!(
            validate_chain(&leaf, &[], &anchors(&root), NOW).is_ok(),
            "{alg:?} direct"
        );
        let sub = root.intermediate("Sub", Alg::P256);
        let leaf = sub.issue(Leaf::host("gw.example", alg)).der;
        assert!(
            validate_chain(&leaf, std::slice::from_ref(&sub.der), &anchors(&root), NOW).is_ok()
        );
        // Without the intermediate, the error names it as the issuer not found.
        let e = validate_chain(&leaf, &[], &anchors(&root), NOW).unwrap_err();
        assert!(matches!(e, AuthError::UntrustedChain(_)), "{e}");
        assert!(e.to_string().contains("the issuer CN=Sub"), "{e}");
        // With it but a root we do not trust, the root's name is the one missing.
        let other = Ca::root("Other", Alg::P256);
        let e = validate_chain(&leaf, std::slice::from_ref(&sub.der), &anchors(&other), NOW)
            .unwrap_err();
        assert!(e.to_string().contains("the issuer CN=Root"), "{e}");
    }
}

#[test]
fn untrusted_expired_and_future_certificates_are_refused() {
    let root = Ca::root("Root", Alg::P256);
    let other = Ca::root("Other", Alg::P256);
    let leaf = other.issue(Leaf::host("gw.example", Alg::P256)).der;
    let e = validate_chain(&leaf, &[], &anchors(&root), NOW).unwrap_err();
    assert!(e.to_string().contains("not issued by a trusted CA"), "{e}");
    let old = root
        .issue(Leaf {
            valid: ((2025, 1, 1), (2026, 1, 1)),
            ..Leaf::host("gw.example", Alg::P256)
        })
        .der;
    let e = validate_chain(&old, &[], &anchors(&root), NOW).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    let future = root
        .issue(Leaf {
            valid: ((2027, 1, 1), (2030, 1, 1)),
            ..Leaf::host("gw.example", Alg::P256)
        })
        .der;
    let e = validate_chain(&future, &[], &anchors(&root), NOW).unwrap_err();
    assert!(e.to_string().contains("not valid before"), "{e}");
}

#[test]
fn extended_and_plain_key_usage_are_checked() {
    let root = Ca::root("Root", Alg::P256);
    let with_eku = |eku| {
        root.issue(Leaf {
            eku,
            ..Leaf::host("gw.example", Alg::P256)
        })
        .der
    };
    for ok in [
        vec![],
        vec![ExtendedKeyUsagePurpose::ServerAuth],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        vec![ExtendedKeyUsagePurpose::Other(vec![
            1, 3, 6, 1, 5, 5, 7, 3, 17,
        ])],
    ] {
        assert!(
            validate_chain(&with_eku(ok.clone()), &[], &anchors(&root), NOW).is_ok(),
            "{ok:?}"
        );
    }
    let code = with_eku(vec![ExtendedKeyUsagePurpose::CodeSigning]);
    let e = validate_chain(&code, &[], &anchors(&root), NOW).unwrap_err();
    assert!(e.to_string().contains("extended key usage"), "{e}");
    let encipher_only = root
        .issue(Leaf {
            key_usage: vec![KeyUsagePurpose::KeyEncipherment],
            ..Leaf::host("gw.example", Alg::P256)
        })
        .der;
    let e = validate_chain(&encipher_only, &[], &anchors(&root), NOW).unwrap_err();
    assert!(e.to_string().contains("does not allow signatures"), "{e}");
}

#[test]
fn identities_match_alternative_names_or_subject() {
    let root = Ca::root("Root", Alg::P256);
    let leaf = root
        .issue(Leaf {
            sans: vec![
                SanType::DnsName("gw.example".try_into().unwrap()),
                SanType::Rfc822Name("admin@example.org".try_into().unwrap()),
                SanType::IpAddress("192.0.2.1".parse().unwrap()),
                SanType::IpAddress("2001:db8::1".parse().unwrap()),
            ],
            ..Leaf::host("gw.example", Alg::P256)
        })
        .der;
    for ok in [
        "gw.example",
        "GW.Example",
        "admin@example.org",
        "192.0.2.1",
        "2001:db8::1",
        // rcgen writes CN first, C as UTF8String; we encode C as PrintableString.
        "CN=gw.example, C=CH, O=esptun tests",
    ] {
        let id = identity::parse(ok).unwrap();
        assert!(check_identity(&id, &leaf).is_ok(), "{ok}");
    }
    for bad in [
        "other.example",
        "root@example.org",
        "192.0.2.2",
        "CN=other, C=CH, O=esptun tests",
        "C=CH, O=esptun tests, CN=gw.example",
    ] {
        let id = identity::parse(bad).unwrap();
        let e = check_identity(&id, &leaf).unwrap_err();
        assert!(matches!(e, AuthError::IdMismatch { .. }), "{bad}: {e}");
    }
}

#[test]
fn our_signatures_verify_with_the_certificate_key() {
    let octets = b"signed octets of an IKE_AUTH";
    for alg in [Alg::P256, Alg::P384, Alg::Rsa3072] {
        let root = Ca::root("Root", Alg::P256);
        let issued = root.issue(Leaf::host("gw.example", alg));
        let (leaf, key_pem) = (issued.der, issued.key_pem);
        let key = PrivateKey::from_pem_or_der(key_pem.as_bytes()).unwrap();
        assert!(key.matches_certificate(&leaf));
        assert!(!key.matches_certificate(&root.der));
        let public = PublicKey::from_certificate(&leaf).unwrap();
        let all = [Hash::Sha256, Hash::Sha384, Hash::Sha512];
        let auth = key.sign(octets, Some(&all)).unwrap();
        assert_eq!(auth.method, AuthMethod::DIGITAL_SIGNATURE);
        assert!(
            verify(
                &auth,
                octets,
                Prf::HmacSha256,
                Credential::PublicKey(&public)
            )
            .is_ok()
        );
        assert!(
            verify(
                &auth,
                b"other octets",
                Prf::HmacSha256,
                Credential::PublicKey(&public)
            )
            .is_err()
        );
        match key.sign(octets, None) {
            Ok(legacy) => {
                assert_ne!(legacy.method, AuthMethod::DIGITAL_SIGNATURE);
                assert!(
                    verify(
                        &legacy,
                        octets,
                        Prf::HmacSha256,
                        Credential::PublicKey(&public)
                    )
                    .is_ok()
                );
            }
            Err(e) => assert!(matches!(alg, Alg::Rsa3072), "{alg:?}: {e}"),
        }
    }
}

#[test]
fn pem_readers_take_chains_and_refuse_garbage() {
    let root = Ca::root("Root", Alg::P256);
    let sub = root.intermediate("Sub", Alg::P256);
    let leaf = sub.issue(Leaf::host("gw.example", Alg::P256));
    let chain = format!("{}{}", leaf.pem, sub.pem);
    assert_eq!(
        read_certificates(chain.as_bytes()).unwrap(),
        vec![leaf.der.clone(), sub.der.clone()]
    );
    assert_eq!(
        read_certificates(&leaf.der).unwrap(),
        vec![leaf.der.clone()]
    );
    assert!(read_certificates(b"").is_err());
    assert!(
        read_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err()
    );
    assert!(read_certificates(&[0x30, 0x03, 0x02]).is_err());
    assert!(PrivateKey::from_pem_or_der(b"not a key").is_err());
    assert!(PrivateKey::from_pem_or_der(&[0x30, 0x00]).is_err());
    assert!(PrivateKey::from_pem_or_der(leaf.key_pem.as_bytes()).is_ok());
}

#[test]
fn pem_errors_are_in_words() {
    let leaf = Ca::root("Root", Alg::P256).issue(Leaf::host("gw.example", Alg::P256));
    let cut = |pem: &str| pem[..pem.len() / 2].to_string();
    assert_eq!(
        read_certificates(cut(&leaf.pem).as_bytes())
            .unwrap_err()
            .to_string(),
        "certificate: PEM: truncated: the CERTIFICATE block has no \"-----END CERTIFICATE-----\" line"
    );
    assert_eq!(
        PrivateKey::from_pem_or_der(cut(&leaf.key_pem).as_bytes())
            .unwrap_err()
            .to_string(),
        "private key: PEM: truncated: the PRIVATE KEY block has no \"-----END PRIVATE KEY-----\" line"
    );
    assert_eq!(
        PrivateKey::from_pem_or_der(b"not a key")
            .unwrap_err()
            .to_string(),
        "private key: no PEM private key block and not DER"
    );
}
