//! `esptun pki`: the CA and host certificates it writes validate as IKE peers need.

use esptun::auth::identity;
use esptun::auth::private_key::PrivateKey;
use esptun::auth::x509::{TrustAnchors, check_identity, read_certificates, validate_chain};
use std::path::Path;
use std::process::Command;

fn esptun(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_esptun"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[allow(
    clippy::disallowed_methods,
    reason = "certificates are checked at the real time they were made"
)]
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn cert(path: &Path) -> Vec<u8> {
    read_certificates(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
}

#[test]
fn ca_and_host_certificates_validate_and_name_their_identity() {
    let dir = std::env::temp_dir().join(format!("esptun-pki-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    esptun(&["pki", "ca", "--out", d]);
    esptun(&["pki", "host", "--dir", d, "--id", "left.example"]);
    esptun(&["pki", "host", "--dir", d, "--id", "192.0.2.2", "--rsa"]);
    let anchors = TrustAnchors::new(vec![cert(&dir.join("ca.crt"))]).unwrap();
    for id in ["left.example", "192.0.2.2"] {
        let leaf = cert(&dir.join(format!("{id}.crt")));
        assert!(validate_chain(&leaf, &[], &anchors, now()).is_ok(), "{id}");
        assert!(
            check_identity(&identity::parse(id).unwrap(), &leaf).is_ok(),
            "{id}"
        );
        let key =
            PrivateKey::from_pem_or_der(&std::fs::read(dir.join(format!("{id}.key"))).unwrap())
                .unwrap();
        assert!(key.matches_certificate(&leaf));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(format!("{id}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private keys are not readable by others");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_esptun"))
        .args(["pki", "host", "--dir", d, "--id", "C=CH, CN=x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot name a host certificate"));
    std::fs::remove_dir_all(&dir).unwrap();
}
