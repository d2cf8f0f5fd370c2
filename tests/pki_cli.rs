//! `esptun pki`: the CA and host certificates it writes validate as IKE peers need,
//! land in `certs/` (0700, keys 0600) unless told otherwise, are never overwritten
//! without `--force`, and `pki show` describes them.

use esptun::auth::identity;
use esptun::auth::private_key::PrivateKey;
use esptun::auth::x509::{TrustAnchors, check_identity, read_certificates, validate_chain};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("esptun-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Runs esptun in this directory.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_esptun"))
            .args(args)
            .current_dir(&self.0)
            .output()
            .unwrap()
    }

    /// Runs esptun in this directory; it must succeed. Returns its output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "esptun {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs esptun in this directory; it must fail. Returns its error output.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "esptun {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn ca_and_host_certificates_validate_and_name_their_identity() {
    let dir = Scratch::new("validate");
    let d = dir.0.to_str().unwrap();
    dir.ok(&["pki", "ca", "--out", d]);
    dir.ok(&["pki", "host", "--dir", d, "--id", "left.example"]);
    dir.ok(&["pki", "host", "--dir", d, "--id", "192.0.2.2", "--rsa"]);
    let anchors = TrustAnchors::new(vec![cert(&dir.path("ca.crt"))]).unwrap();
    for id in ["left.example", "192.0.2.2"] {
        let leaf = cert(&dir.path(&format!("{id}.crt")));
        assert!(validate_chain(&leaf, &[], &anchors, now()).is_ok(), "{id}");
        assert!(
            check_identity(&identity::parse(id).unwrap(), &leaf).is_ok(),
            "{id}"
        );
        let key_file = dir.path(&format!("{id}.key"));
        let key = PrivateKey::from_pem_or_der(&std::fs::read(&key_file).unwrap()).unwrap();
        assert!(key.matches_certificate(&leaf));
        assert_eq!(mode(&key_file), 0o600, "private keys are their owner's");
    }
    let err = dir.fails(&["pki", "host", "--dir", d, "--id", "C=CH, CN=x"]);
    assert!(err.contains("cannot name a host certificate"), "{err}");
}

#[test]
fn certs_is_the_default_directory_and_private() {
    let dir = Scratch::new("default");
    dir.ok(&["pki", "ca"]);
    dir.ok(&["pki", "issue", "--san", "gw.example"]);
    let certs = dir.path("certs");
    assert_eq!(mode(&certs), 0o700);
    assert_eq!(mode(&certs.join("ca.key")), 0o600);
    assert_eq!(mode(&certs.join("gw.example.key")), 0o600);
    // Certificates are public: readable by others as far as the umask allows.
    assert_eq!(mode(&certs.join("gw.example.crt")) & 0o700, 0o600);
    // A checkout makes certs/ 0755; writing there makes it private again.
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.ok(&["pki", "issue", "--san", "other.example"]);
    assert_eq!(mode(&certs), 0o700);
}

#[test]
fn nothing_is_overwritten_without_force() {
    let dir = Scratch::new("force");
    let certs = dir.path("certs");
    dir.ok(&["pki", "ca"]);
    dir.ok(&["pki", "issue", "--san", "gw.example"]);
    let files = ["ca.crt", "ca.key", "gw.example.crt", "gw.example.key"];
    let read = || files.map(|f| std::fs::read(certs.join(f)).unwrap());
    let before = read();
    let err = dir.fails(&["pki", "ca"]);
    assert!(
        err.contains("certs/ca.crt: exists (--force replaces it)"),
        "{err}"
    );
    let err = dir.fails(&["pki", "host", "--id", "gw.example"]);
    assert!(
        err.contains("certs/gw.example.crt: exists (--force replaces it)"),
        "{err}"
    );
    // Only the key left: still refused.
    std::fs::remove_file(certs.join("gw.example.crt")).unwrap();
    let err = dir.fails(&["pki", "issue", "--san", "gw.example"]);
    assert!(err.contains("certs/gw.example.key: exists"), "{err}");
    std::fs::write(certs.join("gw.example.crt"), &before[2]).unwrap();
    assert_eq!(read(), before, "the refusals changed nothing");

    // --force replaces both, and the key is 0600 whatever the old file's mode.
    let key = certs.join("gw.example.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir.ok(&["pki", "issue", "--san", "gw.example", "--force"]);
    dir.ok(&["pki", "ca", "--force"]);
    let after = read();
    for (i, file) in files.iter().enumerate() {
        assert_ne!(after[i], before[i], "{file} replaced");
    }
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn show_prints_names_usages_validity_and_fingerprint() {
    let dir = Scratch::new("show");
    dir.ok(&["pki", "ca", "--cn", "Show CA"]);
    dir.ok(&[
        "pki",
        "issue",
        "--san",
        "gw.example",
        "--san",
        "192.0.2.1",
        "--san",
        "2001:db8::1",
        "--san",
        "ops@gw.example",
        "--ipsec-ike",
        "--days",
        "30",
    ]);
    dir.ok(&["pki", "issue", "--san", "plain.example"]);
    let crt = dir.path("certs/gw.example.crt");
    let text = dir.ok(&["pki", "show", crt.to_str().unwrap()]);
    let field = |text: &str, name: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line[name.len()..].trim().to_string()
    };
    assert_eq!(field(&text, "subject:"), "CN=gw.example, O=esptun");
    assert_eq!(field(&text, "issuer:"), "CN=Show CA, O=esptun");
    assert_eq!(
        field(&text, "alt names:"),
        "DNS:gw.example, IP:192.0.2.1, IP:2001:db8::1, email:ops@gw.example"
    );
    assert_eq!(field(&text, "key usage:"), "Digital Signature");
    assert_eq!(
        field(&text, "ext key usage:"),
        "serverAuth, clientAuth, ipsecIKE"
    );
    assert_eq!(field(&text, "key:"), "ECDSA P-256");
    assert_eq!(field(&text, "CA:"), "no");
    // 30 days from the start of today.
    let day = |t: String| t[..10].to_string();
    let start = field(&text, "not before:");
    let end = field(&text, "not after:");
    assert!(start.ends_with(" 00:00:00 UTC") && end.ends_with(" 00:00:00 UTC"));
    assert_ne!(day(start), day(end));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert(&crt));
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(field(&text, "SHA-256:"), hex.join(":"));
    // Every name the certificate carries is an identity it proves.
    let leaf = cert(&crt);
    for id in ["gw.example", "192.0.2.1", "2001:db8::1", "ops@gw.example"] {
        assert!(
            check_identity(&identity::parse(id).unwrap(), &leaf).is_ok(),
            "{id}"
        );
    }
    let anchors = TrustAnchors::new(vec![cert(&dir.path("certs/ca.crt"))]).unwrap();
    assert!(validate_chain(&leaf, &[], &anchors, now()).is_ok());

    let plain = dir.ok(&["pki", "show", "certs/plain.example.crt"]);
    assert_eq!(field(&plain, "ext key usage:"), "serverAuth, clientAuth");
    let ca = dir.ok(&["pki", "show", "certs/ca.crt"]);
    assert_eq!(field(&ca, "CA:"), "yes");
    assert_eq!(field(&ca, "alt names:"), "(none)");
    assert_eq!(field(&ca, "key usage:"), "Key Cert Sign, CRL Sign");

    // A chain file shows each certificate.
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(&crt).unwrap(),
        std::fs::read_to_string(dir.path("certs/ca.crt")).unwrap()
    );
    std::fs::write(dir.path("chain.crt"), chain).unwrap();
    let both = dir.ok(&["pki", "show", "chain.crt"]);
    assert_eq!(both.matches("subject:").count(), 2);
}

#[test]
fn damaged_files_are_reported_in_words() {
    let dir = Scratch::new("damaged");
    dir.ok(&["pki", "ca"]);
    dir.ok(&["pki", "ca", "--out", "other"]);
    std::fs::copy(dir.path("other/ca.key"), dir.path("certs/ca.key")).unwrap();
    let err = dir.fails(&["pki", "issue", "--san", "gw.example"]);
    assert_eq!(
        err.trim(),
        "esptun: certs/ca.key: not the key of certs/ca.crt"
    );
    let ca = std::fs::read_to_string(dir.path("certs/ca.crt")).unwrap();
    std::fs::write(dir.path("certs/ca.crt"), &ca[..ca.len() / 2]).unwrap();
    let err = dir.fails(&["pki", "issue", "--san", "gw.example"]);
    assert_eq!(
        err.trim(),
        "esptun: certs/ca.crt: certificate: PEM: truncated: the CERTIFICATE block has no \"-----END CERTIFICATE-----\" line"
    );
    let err = dir.fails(&["pki", "show", "certs/ca.crt"]);
    assert!(err.contains("truncated: the CERTIFICATE block"), "{err}");
    let err = dir.fails(&["pki", "show", "certs/ca.key"]);
    assert!(
        err.contains("no PEM CERTIFICATE block and not DER"),
        "{err}"
    );
    let err = dir.fails(&["pki", "issue", "--dir", "elsewhere", "--san", "x.example"]);
    assert!(
        err.contains("elsewhere/ca.crt: No such file or directory"),
        "{err}"
    );
}

/// The value of the line of `pki show` output that starts with `name`.
fn shown(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line[name.len()..].trim().to_string()
}

/// True when the openssl command is there; says so on stderr when not.
fn have_openssl(test: &str) -> bool {
    let there = Command::new("openssl").arg("version").output().is_ok();
    if !there {
        eprintln!(
            "{test}: SKIPPED the openssl checks: no openssl command (apt-get install openssl)"
        );
    }
    there
}

#[test]
fn profiles_give_native_clients_the_usages_they_check() {
    let dir = Scratch::new("profiles");
    dir.ok(&["pki", "ca"]);
    dir.ok(&[
        "pki",
        "issue",
        "--profile",
        "gateway",
        "--san",
        "vpn.example.org",
        "--san",
        "192.0.2.1",
    ]);
    dir.ok(&[
        "pki",
        "issue",
        "--profile",
        "gateway",
        "--san",
        "198.51.100.7",
    ]);
    dir.ok(&[
        "pki",
        "issue",
        "--profile",
        "client",
        "--san",
        "alice@example.org",
    ]);
    dir.ok(&[
        "pki",
        "issue",
        "--profile",
        "client",
        "--san",
        "laptop.example.org",
        "--rsa",
    ]);
    let show = |name: &str| dir.ok(&["pki", "show", &format!("certs/{name}.crt")]);

    let gw = show("vpn.example.org");
    assert_eq!(shown(&gw, "subject:"), "CN=vpn.example.org, O=esptun");
    assert_eq!(
        shown(&gw, "alt names:"),
        "DNS:vpn.example.org, IP:192.0.2.1"
    );
    assert_eq!(shown(&gw, "key usage:"), "Digital Signature");
    assert_eq!(shown(&gw, "ext key usage:"), "serverAuth, ipsecIKE");
    let by_ip = show("198.51.100.7");
    assert_eq!(shown(&by_ip, "subject:"), "CN=198.51.100.7, O=esptun");
    assert_eq!(shown(&by_ip, "alt names:"), "IP:198.51.100.7");
    let client = show("alice@example.org");
    assert_eq!(shown(&client, "subject:"), "CN=alice@example.org, O=esptun");
    assert_eq!(shown(&client, "alt names:"), "email:alice@example.org");
    assert_eq!(shown(&client, "ext key usage:"), "clientAuth, ipsecIKE");
    let laptop = show("laptop.example.org");
    assert_eq!(shown(&laptop, "alt names:"), "DNS:laptop.example.org");
    assert_eq!(shown(&laptop, "key:"), "RSA-3072");

    // esptun's own peer validation takes each, for the identity it names.
    let anchors = TrustAnchors::new(vec![cert(&dir.path("certs/ca.crt"))]).unwrap();
    for id in [
        "vpn.example.org",
        "198.51.100.7",
        "alice@example.org",
        "laptop.example.org",
    ] {
        let leaf = cert(&dir.path(&format!("certs/{id}.crt")));
        assert!(validate_chain(&leaf, &[], &anchors, now()).is_ok(), "{id}");
        assert!(
            check_identity(&identity::parse(id).unwrap(), &leaf).is_ok(),
            "{id}"
        );
    }
    // So does OpenSSL, for the purpose each is made for (and not the other one).
    if have_openssl("profiles") {
        let verify = |purpose: &str, name: &str| {
            Command::new("openssl")
                .args(["verify", "-CAfile", "certs/ca.crt", "-purpose", purpose])
                .arg(format!("certs/{name}.crt"))
                .current_dir(&dir.0)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify("sslserver", "vpn.example.org"));
        assert!(!verify("sslclient", "vpn.example.org"));
        assert!(verify("sslclient", "alice@example.org"));
        assert!(!verify("sslserver", "alice@example.org"));
    }

    // A gateway is named by what clients dial; an e-mail address is no such thing.
    let err = dir.fails(&[
        "pki",
        "issue",
        "--profile",
        "gateway",
        "--san",
        "ops@example.org",
    ]);
    assert!(
        err.contains("--profile gateway: the first --san must be the DNS name or IP address"),
        "{err}"
    );
    assert!(!dir.path("certs/ops@example.org.crt").exists());
    // Without --profile, nothing changed: serverAuth and clientAuth.
    dir.ok(&["pki", "issue", "--san", "site.example"]);
    assert_eq!(
        shown(&show("site.example"), "ext key usage:"),
        "serverAuth, clientAuth"
    );
}

/// Runs openssl in `dir` with `args`: whether it succeeded, and its output and error
/// output (where `pkcs12 -info` prints the layout).
fn openssl(dir: &Scratch, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.into_owned())
}

#[test]
fn export_writes_a_pkcs12_bundle_that_openssl_and_esptun_read() {
    use esptun::pki::p12;
    let dir = Scratch::new("export");
    dir.ok(&["pki", "ca"]);
    dir.ok(&[
        "pki",
        "issue",
        "--profile",
        "client",
        "--san",
        "alice@example.org",
    ]);
    std::fs::write(dir.path("pw"), "a long pass phrase\n").unwrap();
    let said = dir.ok(&[
        "pki",
        "export",
        "--name",
        "alice@example.org",
        "--out",
        "alice.p12",
        "--password-file",
        "pw",
    ]);
    assert!(said.starts_with("wrote alice.p12"), "{said}");
    assert!(
        !said.contains("password:"),
        "a given password is not printed: {said}"
    );
    assert_eq!(mode(&dir.path("alice.p12")), 0o600, "it holds the key");
    let leaf = cert(&dir.path("certs/alice@example.org.crt"));
    let ca = cert(&dir.path("certs/ca.crt"));

    // esptun's own reader: the MAC, both PBES2 layers, the bags.
    let bundle = std::fs::read(dir.path("alice.p12")).unwrap();
    let read = p12::decode(&bundle, "a long pass phrase").unwrap();
    let certs: Vec<&Vec<u8>> = read.certs.iter().map(|c| &c.der).collect();
    assert_eq!(certs, [&leaf, &ca]);
    assert_eq!(read.certs[0].name.as_deref(), Some("alice@example.org"));
    assert_eq!(read.keys.len(), 1);
    let key = PrivateKey::from_pem_or_der(read.keys[0].pkcs8.expose()).unwrap();
    assert!(
        key.matches_certificate(&leaf),
        "the key inside is the certificate's"
    );
    assert_eq!(
        read.keys[0].key_id, read.certs[0].key_id,
        "key and certificate are paired"
    );
    assert_eq!(
        p12::decode(&bundle, "a long pass phrase\n").unwrap_err(),
        p12::P12Error::BadMac,
        "the line end is not part of the password"
    );

    // Not replaced without --force.
    let err = dir.fails(&[
        "pki",
        "export",
        "--name",
        "alice@example.org",
        "--out",
        "alice.p12",
        "--password-file",
        "pw",
    ]);
    assert!(
        err.contains("alice.p12: exists (--force replaces it)"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.path("alice.p12")).unwrap(), bundle);

    // No password file: a random password, printed once, opens it.
    let said = dir.ok(&[
        "pki",
        "export",
        "--name",
        "alice@example.org",
        "--out",
        "made.p12",
    ]);
    let password = said
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no password printed: {said}"));
    assert_eq!(password.len(), 20);
    let made = std::fs::read(dir.path("made.p12")).unwrap();
    assert_eq!(p12::decode(&made, password).unwrap().keys.len(), 1);
    let err = dir.fails(&[
        "pki",
        "export",
        "--name",
        "bob@example.org",
        "--out",
        "bob.p12",
    ]);
    assert!(
        err.contains("certs/bob@example.org.crt: No such file"),
        "{err}"
    );
    std::fs::write(dir.path("empty"), "\n").unwrap();
    let err = dir.fails(&[
        "pki",
        "export",
        "--name",
        "alice@example.org",
        "--out",
        "e.p12",
        "--password-file",
        "empty",
    ]);
    assert!(err.contains("empty: empty"), "{err}");

    if !have_openssl("export") {
        return;
    }
    // OpenSSL reads it as it reads its own `pkcs12 -export` (OpenSSL 3's defaults).
    let (ok, info) = openssl(
        &dir,
        &[
            "pkcs12",
            "-info",
            "-nokeys",
            "-in",
            "alice.p12",
            "-passin",
            "file:pw",
        ],
    );
    assert!(ok, "{info}");
    for expected in [
        "MAC: sha256, Iteration 2048",
        "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256",
        "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256",
        "subject=CN = alice@example.org, O = esptun",
        "subject=CN = esptun CA, O = esptun",
        "friendlyName: alice@example.org",
    ] {
        assert!(info.contains(expected), "no {expected:?} in\n{info}");
    }
    // The key OpenSSL decrypts is the certificate's.
    let (ok, key_pem) = openssl(
        &dir,
        &[
            "pkcs12",
            "-nocerts",
            "-nodes",
            "-in",
            "alice.p12",
            "-passin",
            "file:pw",
        ],
    );
    assert!(ok, "{key_pem}");
    let key = PrivateKey::from_pem_or_der(key_pem.as_bytes()).unwrap();
    assert!(key.matches_certificate(&leaf));
    let (ok, wrong) = openssl(
        &dir,
        &[
            "pkcs12",
            "-info",
            "-nokeys",
            "-in",
            "alice.p12",
            "-passin",
            "pass:wrong",
        ],
    );
    assert!(!ok && wrong.contains("Mac verify error"), "{wrong}");
    // And esptun reads what OpenSSL writes by default (its KDF and MAC agree with ours).
    let (ok, said) = openssl(
        &dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "certs/alice@example.org.key",
            "-in",
            "certs/alice@example.org.crt",
            "-certfile",
            "certs/ca.crt",
            "-passout",
            "file:pw",
            "-out",
            "openssl.p12",
        ],
    );
    assert!(ok, "{said}");
    let theirs = p12::decode(
        &std::fs::read(dir.path("openssl.p12")).unwrap(),
        "a long pass phrase",
    )
    .unwrap();
    assert!(theirs.certs.iter().any(|c| c.der == leaf));
    let key = PrivateKey::from_pem_or_der(theirs.keys[0].pkcs8.expose()).unwrap();
    assert!(key.matches_certificate(&leaf));
}
