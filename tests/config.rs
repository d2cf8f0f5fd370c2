//! The configuration file: the documented example loads, defaults apply, and every
//! kind of mistake is reported with file, line and key.

mod common;

use common::pki::{Alg, Ca, Leaf};
use esptun::config::Config;
use esptun::ike::{LocalAuth, RemoteAuth};
use esptun::wire::payload::{AddrRange, Identity};
use std::path::PathBuf;

/// A scratch directory with a CA, a host certificate and key, and a PSK file.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("esptun-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::root("Test CA", Alg::P256);
        let host = ca.issue(Leaf::host("left.example", Alg::P256));
        std::fs::write(dir.join("ca.crt"), &ca.pem).unwrap();
        std::fs::write(dir.join("left.crt"), &host.pem).unwrap();
        std::fs::write(dir.join("left.key"), &host.key_pem).unwrap();
        std::fs::write(dir.join("site.psk"), "  a shared secret \n").unwrap();
        std::fs::write(dir.join("hex.psk"), "0x0102ff\n").unwrap();
        Self(dir)
    }

    fn load(&self, text: &str) -> Result<Config, String> {
        let path = self.0.join("site.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
            .map_err(|e| e.to_string().replace(&format!("{}/", self.0.display()), ""))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const EXAMPLE: &str = r#"[[connection]]
name = "site-b"
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
proposals = ["aes128gcm16-prfsha256-x25519"]
start = true
[connection.local]
auth = "pubkey"
id = "left.example"
certs = ["left.crt"]
key = "left.key"
[connection.remote]
auth = "pubkey"
id = "right.example"
cacerts = ["ca.crt"]
[[connection.children]]
name = "net"
local_ts = ["10.1.0.0/24", "fd00:1::/64"]
remote_ts = ["10.2.0.0/24", "fd00:2::/64"]
esp_proposals = ["aes128gcm16"]
"#;

#[test]
fn the_documented_example_loads() {
    let dir = Dir::new("example");
    let config = dir.load(EXAMPLE).unwrap();
    assert_eq!(config.listen.ike_port, 500);
    assert_eq!(config.listen.natt_port, 4500);
    assert_eq!(config.listen.addrs.len(), 2);
    assert_eq!(config.ike.cookie_threshold, 10);
    let [c] = config.connections.as_slice() else {
        panic!("one connection")
    };
    assert!(c.start);
    assert_eq!(c.remote_port, 500);
    let p = &c.policy;
    assert_eq!(p.name, "site-b");
    assert_eq!(p.fragment_size, 1280);
    assert_eq!(p.proposals.len(), 1);
    assert!(
        matches!(&p.local, LocalAuth::Pubkey { id: Identity::Fqdn(f), certs, .. } if f == "left.example" && certs.len() == 1)
    );
    assert!(
        matches!(&p.remote, RemoteAuth::Pubkey { id: Some(Identity::Fqdn(f)), .. } if f == "right.example")
    );
    let child = &p.children[0];
    assert_eq!(child.local_ts.len(), 2);
    assert_eq!(
        child.local_ts[0].addrs,
        AddrRange::V4("10.1.0.0".parse().unwrap(), "10.1.0.255".parse().unwrap())
    );
    assert_eq!(
        child.remote_ts[1].addrs,
        AddrRange::V6(
            "fd00:2::".parse().unwrap(),
            "fd00:2::ffff:ffff:ffff:ffff".parse().unwrap()
        )
    );
}

#[test]
fn psk_connections_take_defaults_and_trim_or_decode_the_key() {
    let dir = Dir::new("psk");
    let config = dir
        .load(
            r#"
[listen]
addrs = ["127.0.0.1"]
[[connection]]
name = "a"
psk_file = "site.psk"
[connection.local]
auth = "psk"
id = "a.example"
[connection.remote]
auth = "psk"
[[connection.children]]
name = "c"
[[connection]]
name = "b"
psk_file = "hex.psk"
[connection.local]
auth = "psk"
id = "b.example"
[connection.remote]
auth = "psk"
id = "%any"
"#,
        )
        .unwrap();
    let a = &config.connections[0].policy;
    assert!(matches!(&a.local, LocalAuth::Psk { psk, .. } if psk.expose() == b"a shared secret"));
    assert!(matches!(&a.remote, RemoteAuth::Psk { id: None, .. }));
    assert_eq!(a.proposals.len(), 2, "default proposals");
    assert_eq!(a.children[0].esp_proposals.len(), 2);
    assert!(a.children[0].local_ts.is_empty(), "dynamic");
    let b = &config.connections[1].policy;
    assert!(matches!(&b.local, LocalAuth::Psk { psk, .. } if psk.expose() == [1, 2, 255]));
}

#[test]
fn mistakes_name_file_line_and_key() {
    let dir = Dir::new("errors");
    let cases: &[(&str, &str, &str)] = &[
        (
            "id = \"left.example\"",
            "idd = \"left.example\"",
            "site.toml:9: connection[0].local.idd: unknown field `idd`",
        ),
        (
            "start = true",
            "start = \"yes\"",
            "site.toml:6: connection[0].start: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "\"10.1.0.0/24\",",
            "\"10.1.0.0/33\",",
            "site.toml:18: connection[0].children[0].local_ts[0]: \"10.1.0.0/33\" is not an address or CIDR prefix",
        ),
        (
            "proposals = [\"aes128gcm16-prfsha256-x25519\"]",
            "proposals = [\"aes128gcm16-prfsha256-x25519\", \"aes-md5-modp1024\"]",
            "site.toml:5: connection[0].proposals[1]: unknown or unsupported algorithm keyword `md5`",
        ),
        (
            "\"left.crt\"",
            "\"missing.crt\"",
            "site.toml:10: connection[0].local.certs[0]: missing.crt: No such file or directory (os error 2)",
        ),
        (
            "key = \"left.key\"\n",
            "",
            "site.toml:7: connection[0].local.key: required with auth = \"pubkey\"",
        ),
        (
            "esp_proposals = [\"aes128gcm16\"]",
            "esp_proposals = [\"aes128gcm16\"]\nmode = \"transport\"",
            "site.toml:21: connection[0].children[0].mode: \"transport\": only \"tunnel\" is supported",
        ),
        (
            "auth = \"pubkey\"\nid = \"left.example\"\ncerts = [\"left.crt\"]\nkey = \"left.key\"",
            "auth = \"psk\"\nid = \"left.example\"",
            "site.toml:8: connection[0].local.auth: auth = \"psk\" needs psk_file in the connection",
        ),
        (
            "remote_addrs = [\"192.0.2.2\"]\n",
            "",
            "site.toml:5: connection[0].start: start = true needs remote_addrs",
        ),
        (
            "id = \"right.example\"",
            "id = \"C=CH, X=1\"",
            "site.toml:14: connection[0].remote.id: distinguished name component \"X=1\"",
        ),
        (
            "key = \"left.key\"",
            "key = \"ca.crt\"",
            "site.toml:11: connection[0].local.key: private key: no PEM or DER private key",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let err = dir.load(&EXAMPLE.replacen(from, to, 1)).unwrap_err();
        assert!(err.starts_with(expected), "\n got: {err}\nwant: {expected}");
    }
    let twice = format!("{EXAMPLE}{EXAMPLE}");
    let err = dir.load(&twice).unwrap_err();
    assert_eq!(
        err,
        "site.toml: connection[1].name: duplicate connection name \"site-b\""
    );
    let err = Config::load(&dir.0.join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("nope.toml: No such file or directory (os error 2)"),
        "{err}"
    );
}
