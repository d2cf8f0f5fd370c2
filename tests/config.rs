//! The configuration file: the documented example loads, defaults apply, and every
//! kind of mistake is reported with file, line and key.

mod common;

use common::pki::{Alg, Ca, Leaf};
use esptun::config::{Config, ConfigError, Origin};
use esptun::ike::{LocalAuth, RemoteAuth};
use esptun::wire::ProtocolId;
use esptun::wire::payload::{AddrRange, Identity};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A scratch directory with a CA, a host certificate and key, and PSK files.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("esptun-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::root("Test CA", Alg::P256);
        let host = ca.issue(Leaf::host("left.example", Alg::P256));
        let chain = format!("{}{}", host.pem, ca.pem);
        let files: &[(&str, &[u8])] = &[
            ("ca.crt", ca.pem.as_bytes()),
            ("ca.der", &ca.der),
            ("left.crt", host.pem.as_bytes()),
            ("chain.crt", chain.as_bytes()),
            ("left.key", host.key_pem.as_bytes()),
            ("site-b.psk", b"  a shared secret \n"),
            ("hex.psk", b"0x0102ff\n"),
            ("empty.psk", b" \n"),
            ("badhex.psk", b"0xabc\n"),
        ];
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
        }
        Self(dir)
    }

    /// Loads `text` as `site.toml`; errors with the directory stripped from paths.
    fn load(&self, text: &str) -> Result<Config, String> {
        let path = self.0.join("site.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map_err(|e| self.strip(&e))
    }

    fn strip(&self, e: &ConfigError) -> String {
        e.to_string().replace(&format!("{}/", self.0.display()), "")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example from README "Configuration", verbatim; the line numbers in the
/// expected errors below count from its first line.
const EXAMPLE: &str = r#"[listen]                 # optional
addrs = ["0.0.0.0", "::"]   # default: both wildcards
ike_port = 500              # default 500
natt_port = 4500            # default 4500

[ike]                    # optional engine knobs
cookie_threshold = 10       # half-open IKE SAs before COOKIEs are demanded (default 10)
half_open_timeout = 30      # seconds a half-open SA lives (default 30)

[[connection]]
name = "site-b"                       # required, unique
local_addrs = ["192.0.2.1"]           # IPs; default [] = any
remote_addrs = ["192.0.2.2"]          # IPs; default [] = any peer (then start must be false)
remote_port = 500                     # default 500
proposals = ["aes128gcm16-prfsha256-x25519"]  # default ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"]
start = true                          # default false: initiate at start-up; otherwise answer only
encap = false                         # force UDP encapsulation even without NAT (default false)
fragment_size = 1280                  # RFC 7383 fragment size, 576..=65535 (default 1280)
psk_file = "site-b.psk"               # required when either side's auth = "psk"
[connection.local]
auth = "pubkey"                       # "pubkey" or "psk"
id = "left.example"                   # required; parsed by crate::auth::identity::parse
certs = ["left.crt"]                  # pubkey: required, leaf first, then intermediates
key = "left.key"                      # pubkey: required
[connection.remote]
auth = "pubkey"
id = "right.example"                  # optional; absent or "%any" = any identity
cacerts = ["ca.crt"]                  # pubkey: required (at least one)
[[connection.children]]               # at least one
name = "net"                          # required, unique within the connection
local_ts = ["10.1.0.0/24", "fd00:1::/64"]   # CIDR or single address; default [] = dynamic (our IKE address)
remote_ts = ["10.2.0.0/24", "fd00:2::/64"]  # default [] = dynamic (the peer's IKE address)
esp_proposals = ["aes128gcm16"]       # default ["aes128gcm16", "aes256gcm16"]; parsed with ProtocolId::ESP
mode = "tunnel"                       # only tunnel is supported; "transport" is a clear error

[dataplane]              # optional: the userspace ESP data plane
tun = "esptun0"             # TUN device name (default "esptun0")
workers = 2                 # ESP worker threads (default: one per core)
path_mtu = 1500             # MTU of the path to peers, 1400..=65535 (default 1500)
replay_window = 1024        # inbound replay window in packets, 32..=65536 (default 1024)
offload = true              # TUN GSO/GRO when the kernel allows it (default true)
"#;

/// The example with the whole line that starts with `prefix` replaced by `with`
/// (a comment keeps the other lines' numbers).
fn edit(prefix: &str, with: &str) -> String {
    edit_in(EXAMPLE, prefix, with)
}

fn edit_in(text: &str, prefix: &str, with: &str) -> String {
    let mut found = false;
    let out: Vec<&str> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with(prefix) {
                found = true;
                with
            } else {
                l
            }
        })
        .collect();
    assert!(found, "no line starts with {prefix:?}");
    out.join("\n") + "\n"
}

fn v4(a: &str, b: &str) -> AddrRange {
    AddrRange::V4(a.parse().unwrap(), b.parse().unwrap())
}

fn v6(a: &str, b: &str) -> AddrRange {
    AddrRange::V6(a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn the_documented_example_loads() {
    let dir = Dir::new("example");
    let config = dir.load(EXAMPLE).unwrap();
    assert_eq!(
        config.listen.addrs,
        ["0.0.0.0".parse::<IpAddr>().unwrap(), "::".parse().unwrap()]
    );
    assert_eq!(
        (config.listen.ike_port, config.listen.natt_port),
        (500, 4500)
    );
    assert_eq!(config.ike.cookie_threshold, 10);
    assert_eq!(config.ike.half_open_timeout, Duration::from_secs(30));
    let [c] = config.connections.as_slice() else {
        panic!("one connection")
    };
    assert!(c.start);
    assert_eq!(c.remote_port, 500);
    let p = &c.policy;
    assert_eq!(p.name, "site-b");
    assert_eq!(p.local_addrs, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(p.remote_addrs, ["192.0.2.2".parse::<IpAddr>().unwrap()]);
    assert!(!p.encap);
    assert_eq!(p.fragment_size, 1280);
    assert_eq!(p.proposals.len(), 1);
    assert_eq!(p.proposals[0].number, 1);
    assert_eq!(p.proposals[0].protocol, ProtocolId::IKE);
    assert!(
        matches!(&p.local, LocalAuth::Pubkey { id: Identity::Fqdn(f), certs, .. } if f == "left.example" && certs.len() == 1)
    );
    assert!(
        matches!(&p.remote, RemoteAuth::Pubkey { id: Some(Identity::Fqdn(f)), .. } if f == "right.example")
    );
    let [child] = p.children.as_slice() else {
        panic!("one child")
    };
    assert_eq!(child.name, "net");
    let addrs = |ts: &[esptun::wire::payload::TsRange]| -> Vec<AddrRange> {
        ts.iter().map(|t| t.addrs).collect()
    };
    assert_eq!(
        addrs(&child.local_ts),
        vec![
            v4("10.1.0.0", "10.1.0.255"),
            v6("fd00:1::", "fd00:1::ffff:ffff:ffff:ffff")
        ]
    );
    assert_eq!(
        addrs(&child.remote_ts),
        vec![
            v4("10.2.0.0", "10.2.0.255"),
            v6("fd00:2::", "fd00:2::ffff:ffff:ffff:ffff")
        ]
    );
    let any = &child.local_ts[0];
    assert_eq!(
        (any.ip_protocol, any.start_port, any.end_port),
        (0, 0, 65535)
    );
    assert_eq!(child.esp_proposals.len(), 1);
    assert_eq!(child.esp_proposals[0].protocol, ProtocolId::ESP);
    assert_eq!(
        c.origin,
        Origin {
            file: dir.0.join("site.toml"),
            line: 10,
            key: "connection[0]".into()
        }
    );
    assert_eq!(
        dir.strip(&c.origin.error("cannot initiate")),
        "site.toml:10: connection[0]: cannot initiate"
    );
}

#[test]
fn defaults_apply_to_a_minimal_file() {
    let dir = Dir::new("defaults");
    let config = dir
        .load(
            r#"
[[connection]]
name = "a"
psk_file = "site-b.psk"
local = { auth = "psk", id = "a.example" }
remote = { auth = "psk" }
[[connection.children]]
name = "c"
"#,
        )
        .unwrap();
    assert_eq!(
        config.listen.addrs,
        ["0.0.0.0".parse::<IpAddr>().unwrap(), "::".parse().unwrap()]
    );
    assert_eq!(
        (config.listen.ike_port, config.listen.natt_port),
        (500, 4500)
    );
    assert_eq!(config.ike.cookie_threshold, 10);
    assert_eq!(config.ike.half_open_timeout, Duration::from_secs(30));
    let c = &config.connections[0];
    assert!(!c.start);
    assert_eq!(c.remote_port, 500);
    let p = &c.policy;
    assert!(p.local_addrs.is_empty() && p.remote_addrs.is_empty());
    assert!(!p.encap);
    assert_eq!(p.fragment_size, 1280);
    let numbers: Vec<u8> = p.proposals.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2], "the two default IKE proposals");
    assert!(matches!(&p.remote, RemoteAuth::Psk { id: None, .. }));
    let child = &p.children[0];
    assert_eq!(
        child.esp_proposals.len(),
        2,
        "the two default ESP proposals"
    );
    assert!(
        child.local_ts.is_empty() && child.remote_ts.is_empty(),
        "dynamic"
    );
}

#[test]
fn psk_files_are_trimmed_or_hex_decoded_and_sides_may_mix() {
    let dir = Dir::new("psk");
    let config = dir
        .load(
            r#"
[[connection]]
name = "a"
psk_file = "site-b.psk"
[connection.local]
auth = "psk"
id = "a.example"
[connection.remote]
auth = "psk"
id = "%any"
[[connection.children]]
name = "c"

[[connection]]
name = "b"
psk_file = "hex.psk"
[connection.local]
auth = "pubkey"
id = "left.example"
certs = ["chain.crt"]
key = "left.key"
[connection.remote]
auth = "psk"
id = "b.example"
[[connection.children]]
name = "c"
local_ts = ["10.9.8.7/16", "192.0.2.1", "fd00::1"]
"#,
        )
        .unwrap();
    let a = &config.connections[0].policy;
    assert!(matches!(&a.local, LocalAuth::Psk { psk, .. } if psk.expose() == b"a shared secret"));
    assert!(
        matches!(&a.remote, RemoteAuth::Psk { id: None, psk } if psk.expose() == b"a shared secret")
    );
    let b = &config.connections[1].policy;
    assert!(
        matches!(&b.local, LocalAuth::Pubkey { certs, .. } if certs.len() == 2),
        "leaf and CA from one PEM file"
    );
    assert!(matches!(&b.remote, RemoteAuth::Psk { psk, .. } if psk.expose() == [1, 2, 255]));
    let ts: Vec<AddrRange> = b.children[0].local_ts.iter().map(|t| t.addrs).collect();
    assert_eq!(
        ts,
        [
            v4("10.9.0.0", "10.9.255.255"),
            v4("192.0.2.1", "192.0.2.1"),
            v6("fd00::1", "fd00::1")
        ],
        "host bits masked; single addresses are /32 and /128"
    );
}

#[test]
fn der_ca_files_and_absolute_paths_load() {
    let dir = Dir::new("der");
    let absolute = dir.0.join("ca.der");
    let text = edit(
        "cacerts =",
        &format!("cacerts = [{:?}]", absolute.display().to_string()),
    );
    assert!(dir.load(&text).is_ok());
}

#[test]
fn mistakes_name_file_line_and_key() {
    let dir = Dir::new("errors");
    let cases: &[(&str, &str, &str)] = &[
        // Unknown keys and tables, listing the valid ones.
        (
            "id = \"left.example\"",
            "idd = \"left.example\"",
            "site.toml:22: connection[0].local.idd: unknown key `idd`, expected one of `auth`, `id`, `certs`, `key`",
        ),
        (
            "[ike]",
            "[ikee]",
            "site.toml:6: ikee: unknown key `ikee`, expected one of `listen`, `ike`, `connection`, `dataplane`",
        ),
        // Wrong types.
        (
            "start =",
            "start = \"yes\"",
            "site.toml:16: connection[0].start: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "ike_port =",
            "ike_port = 70000",
            "site.toml:3: listen.ike_port: invalid value: integer `70000`, expected u16",
        ),
        // Values that do not parse.
        (
            "local_ts =",
            "local_ts = [\"10.1.0.0/24\", \"10.1.0.0/33\"]",
            "site.toml:31: connection[0].children[0].local_ts[1]: \"10.1.0.0/33\" is not an address or CIDR prefix",
        ),
        (
            "proposals =",
            "proposals = [\"aes128gcm16-prfsha256-x25519\", \"aes-md5-modp1024\"]",
            "site.toml:15: connection[0].proposals[1]: unknown or unsupported algorithm keyword `md5`",
        ),
        (
            "esp_proposals =",
            "esp_proposals = [\"aes128gcm16\", \"aes128\"]",
            "site.toml:33: connection[0].children[0].esp_proposals[1]: proposal `aes128`: no integrity algorithm",
        ),
        (
            "remote_addrs =",
            "remote_addrs = [\"192.0.2.300\"]",
            "site.toml:13: connection[0].remote_addrs[0]: \"192.0.2.300\" is not an IP address",
        ),
        (
            "id = \"right.example\"",
            "id = \"C=CH, X=1\"",
            "site.toml:27: connection[0].remote.id: distinguished name component \"X=1\": expected one of C, ST, L, O, OU, CN, SN, serialNumber, E, DC followed by =value",
        ),
        (
            "auth = \"pubkey\"",
            "auth = \"eap\"",
            "site.toml:21: connection[0].local.auth: \"eap\": expected \"pubkey\" or \"psk\"",
        ),
        (
            "fragment_size =",
            "fragment_size = 100",
            "site.toml:18: connection[0].fragment_size: 100 is outside 576..=65535",
        ),
        (
            "mode =",
            "mode = \"transport\"",
            "site.toml:34: connection[0].children[0].mode: \"transport\": only \"tunnel\" is supported",
        ),
        (
            "mode =",
            "rekey_bytes = 1000\nlife_bytes = 1000",
            "site.toml:35: connection[0].children[0].life_bytes: must exceed rekey_bytes (1000)",
        ),
        // Files.
        (
            "certs =",
            "certs = [\"missing.crt\"]",
            "site.toml:23: connection[0].local.certs[0]: missing.crt: No such file or directory (os error 2)",
        ),
        (
            "key =",
            "key = \"ca.crt\"",
            "site.toml:24: connection[0].local.key: private key: no PEM or DER private key: no items found",
        ),
        (
            "cacerts =",
            "cacerts = [\"left.key\"]",
            "site.toml:28: connection[0].remote.cacerts[0]: certificate: no PEM CERTIFICATE block and not DER",
        ),
        // Required keys.
        (
            "name = \"net\"",
            "# no name",
            "site.toml:29: connection[0].children[0].name: required key is missing",
        ),
        (
            "id = \"left.example\"",
            "# no id",
            "site.toml:20: connection[0].local.id: required key is missing",
        ),
        (
            "key =",
            "# no key",
            "site.toml:20: connection[0].local.key: required with auth = \"pubkey\"",
        ),
        (
            "cacerts =",
            "cacerts = []",
            "site.toml:28: connection[0].remote.cacerts: needs at least one file with auth = \"pubkey\"",
        ),
        (
            "proposals =",
            "proposals = []",
            "site.toml:15: connection[0].proposals: needs at least one proposal (omit it for the defaults)",
        ),
        // Cross-field checks.
        (
            "remote_addrs =",
            "remote_addrs = []",
            "site.toml:16: connection[0].start: start = true needs remote_addrs",
        ),
        (
            "natt_port =",
            "natt_port = 500",
            "site.toml:4: listen.natt_port: must differ from ike_port",
        ),
        (
            "addrs =",
            "addrs = []",
            "site.toml:2: listen.addrs: needs at least one address (omit it for both wildcards)",
        ),
        (
            "workers =",
            "workers = 0",
            "site.toml:38: dataplane.workers: must be 1 to 256",
        ),
        (
            "path_mtu =",
            "path_mtu = 1280",
            "site.toml:39: dataplane.path_mtu: must be within 1400..=65535",
        ),
        (
            "tun =",
            "tun = \"a-name-far-too-long\"",
            "site.toml:37: dataplane.tun: must be an interface name of 1 to 15 characters without '/' or spaces",
        ),
        // Syntax.
        (
            "start =",
            "start = true\nstart = false",
            "site.toml:17: duplicate key",
        ),
    ];
    for (prefix, with, expected) in cases {
        let err = dir.load(&edit(prefix, with)).unwrap_err();
        assert_eq!(err, *expected, "replacing {prefix:?}");
    }
}

#[test]
fn psk_mistakes_point_at_auth_or_psk_file() {
    let dir = Dir::new("psk-errors");
    let psk_local = edit("auth = \"pubkey\"", "auth = \"psk\"");
    let without_file = edit_in(&psk_local, "psk_file =", "# no psk_file");
    assert_eq!(
        dir.load(&without_file).unwrap_err(),
        "site.toml:21: connection[0].local.auth: auth = \"psk\" needs psk_file in the connection"
    );
    for (file, why) in [
        ("empty.psk", "the PSK file is empty"),
        ("badhex.psk", "0x-prefixed PSK is not hex"),
        (
            "nope.psk",
            "nope.psk: No such file or directory (os error 2)",
        ),
    ] {
        let text = edit_in(&psk_local, "psk_file =", &format!("psk_file = {file:?}"));
        assert_eq!(
            dir.load(&text).unwrap_err(),
            format!("site.toml:19: connection[0].psk_file: {why}")
        );
    }
}

#[test]
fn duplicate_names_and_missing_children_are_errors() {
    let dir = Dir::new("dups");
    let connection =
        &EXAMPLE[EXAMPLE.find("[[connection]]").unwrap()..EXAMPLE.find("[dataplane]").unwrap()];
    assert_eq!(
        dir.load(&format!("{EXAMPLE}{connection}")).unwrap_err(),
        "site.toml:43: connection[1].name: duplicate connection name \"site-b\""
    );
    let children = &EXAMPLE
        [EXAMPLE.find("[[connection.children]]").unwrap()..EXAMPLE.find("[dataplane]").unwrap()];
    assert_eq!(
        dir.load(&format!("{EXAMPLE}{children}")).unwrap_err(),
        "site.toml:43: connection[0].children[1].name: duplicate child name \"net\""
    );
    let childless = &EXAMPLE[..EXAMPLE.find("[[connection.children]]").unwrap()];
    assert_eq!(
        dir.load(childless).unwrap_err(),
        "site.toml:10: connection[0]: needs at least one [[connection.children]]"
    );
}

#[test]
fn errors_outside_any_key_name_the_file() {
    let dir = Dir::new("syntax");
    assert_eq!(
        dir.load(&edit("name = \"site-b\"", "name = \"site-b"))
            .unwrap_err(),
        "site.toml:11: invalid basic string, expected `\"`"
    );
    let err = Config::load(&dir.0.join("nope.toml")).unwrap_err();
    assert_eq!(
        dir.strip(&err),
        "nope.toml: No such file or directory (os error 2)"
    );
    assert_eq!(err.line, None);
    assert_eq!(err.key, "");
}

#[test]
fn routing_table_and_mark_default_and_refuse_what_would_break_routing() {
    let dir = Dir::new("routing");
    let minimal = r#"[[connection]]
name = "a"
psk_file = "site-b.psk"
local = { auth = "psk", id = "a.example" }
remote = { auth = "psk" }
[[connection.children]]
name = "c"
[dataplane]
"#;
    let config = dir.load(minimal).unwrap();
    assert_eq!(
        (config.dataplane.route_table, config.dataplane.fwmark),
        (4500, 0x45)
    );
    let config = dir
        .load(&format!("{minimal}route_table = 100\nfwmark = 0xca6c\n"))
        .unwrap();
    assert_eq!(
        (config.dataplane.route_table, config.dataplane.fwmark),
        (100, 0xca6c)
    );
    for (line, expected) in [
        (
            "route_table = 254",
            "site.toml:9: dataplane.route_table: must be 1 to 4294967295 and not one of the kernel's tables 252 to 255",
        ),
        (
            "route_table = 0",
            "site.toml:9: dataplane.route_table: must be 1 to 4294967295 and not one of the kernel's tables 252 to 255",
        ),
        ("fwmark = 0", "site.toml:9: dataplane.fwmark: must not be 0"),
    ] {
        assert_eq!(
            dir.load(&format!("{minimal}{line}\n")).unwrap_err(),
            expected
        );
    }
}
