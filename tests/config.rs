//! The configuration file: the documented example loads, defaults apply, and every
//! kind of mistake is reported with file, line and key.

mod common;

use common::pki::{Alg, Ca, Leaf};
use esptun::auth::identity::RemoteId;
use esptun::config::{Config, ConfigError, DataplaneMode, Origin};
use esptun::ike::exchange::RetransmitPolicy;
use esptun::ike::{Action, IkeLifetime, Lifetime, Limits, LocalAuth, RemoteAuth};
use esptun::wire::ProtocolId;
use esptun::wire::payload::{AddrRange, Identity};
use std::fs::Permissions;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
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
            ("site-b.psk", b"  a shared secret, long enough \n"),
            ("hex.psk", b"0x000102030405060708090a0b0c0d0eff\n"),
            ("empty.psk", b" \n"),
            ("badhex.psk", b"0xabc\n"),
            ("short.psk", b"0x0102ff\n"),
            ("open.psk", b"a shared secret, long enough\n"),
            ("open.key", host.key_pem.as_bytes()),
        ];
        for (file, content) in files {
            std::fs::write(dir.join(file), content).unwrap();
            // Secrets are refused unless their owner alone may read them.
            let mode = match *file {
                "open.psk" => 0o640,
                "open.key" => 0o604,
                _ => 0o600,
            };
            std::fs::set_permissions(dir.join(file), Permissions::from_mode(mode)).unwrap();
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

/// The example from README "Configuration" (its first TOML block), verbatim; the
/// line numbers in the expected errors below count from its first line.
fn example() -> &'static str {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").expect("README has a TOML example") + "```toml\n".len();
    let len = readme[start..].find("```").expect("the example ends");
    &readme[start..start + len]
}

/// The example with the whole line that starts with `prefix` replaced by `with`
/// (a comment keeps the other lines' numbers).
fn edit(prefix: &str, with: &str) -> String {
    edit_in(example(), prefix, with)
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

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A Child SA lifetime with only time limits, in seconds.
fn times(soft: u64, hard: u64) -> Lifetime {
    Lifetime {
        soft: Limits {
            time: Some(secs(soft)),
            ..Limits::default()
        },
        hard: Limits {
            time: Some(secs(hard)),
            ..Limits::default()
        },
    }
}

/// A PSK connection with `ike` on line 2, `conn` from line 9 and `child` from line 12.
fn lifecycle(ike: &str, conn: &str, child: &str) -> String {
    format!(
        r#"[ike]
{ike}
[[connection]]
name = "a"
remote_addrs = ["192.0.2.2"]
psk_file = "site-b.psk"
local = {{ auth = "psk", id = "a.example" }}
remote = {{ auth = "psk" }}
{conn}
[[connection.children]]
name = "c"
{child}
"#
    )
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
    let config = dir.load(example()).unwrap();
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
    assert_eq!(config.metrics, Some("127.0.0.1:9469".parse().unwrap()));
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
        matches!(&p.remote, RemoteAuth::Pubkey { id: RemoteId::Exact(Identity::Fqdn(f)), .. } if f == "right.example")
    );
    let [child] = p.children.as_slice() else {
        panic!("one child")
    };
    assert_eq!(child.name, "net");
    assert!(!child.transport);
    assert_eq!(config.dataplane.mode, DataplaneMode::Userspace);
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
    assert_eq!(config.ike.retransmit, RetransmitPolicy::default());
    assert_eq!(
        p.ike_lifetime,
        IkeLifetime {
            rekey_time: Some(secs(4 * 3600)),
            over_time: secs(24 * 60),
            rand_time: secs(24 * 60),
        }
    );
    assert_eq!(p.dpd_delay, Some(secs(30)));
    assert_eq!(p.keyingtries, 0);
    assert_eq!(child.lifetime, times(3600, 66 * 60));
    assert_eq!(child.rand_time, secs(6 * 60));
    assert_eq!(
        (child.start_action, child.dpd_action, child.close_action),
        (Action::Start, Action::Start, Action::None),
        "start = true; restart; none"
    );
    assert_eq!(
        c.origin,
        Origin {
            file: dir.0.join("site.toml"),
            line: 15,
            key: "connection[0]".into()
        }
    );
    assert_eq!(
        dir.strip(&c.origin.error("cannot initiate")),
        "site.toml:15: connection[0]: cannot initiate"
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
    assert!(matches!(
        &p.remote,
        RemoteAuth::Psk {
            id: RemoteId::Any,
            ..
        }
    ));
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
    // swanctl's defaults, except keyingtries (0, not 1).
    assert_eq!(
        config.ike.retransmit,
        RetransmitPolicy {
            timeout: secs(4),
            base: 1.8,
            tries: 5,
            jitter_percent: 0,
            limit: secs(3600),
        }
    );
    assert_eq!(
        p.ike_lifetime,
        IkeLifetime {
            rekey_time: Some(secs(4 * 3600)),
            over_time: secs(1440),
            rand_time: secs(1440),
        }
    );
    assert_eq!((p.dpd_delay, p.keyingtries), (None, 0));
    assert_eq!(child.lifetime, times(3600, 3960));
    assert_eq!(child.rand_time, secs(360));
    assert_eq!(
        (child.start_action, child.dpd_action, child.close_action),
        (Action::None, Action::None, Action::None)
    );
    assert!(!child.transport, "tunnel mode");
    assert_eq!(config.dataplane.mode, DataplaneMode::Userspace);
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
    assert!(
        matches!(&a.local, LocalAuth::Psk { psk, .. } if psk.expose() == b"a shared secret, long enough")
    );
    assert!(
        matches!(&a.remote, RemoteAuth::Psk { id: RemoteId::Any, psk } if psk.expose() == b"a shared secret, long enough")
    );
    let b = &config.connections[1].policy;
    assert!(
        matches!(&b.local, LocalAuth::Pubkey { certs, .. } if certs.len() == 2),
        "leaf and CA from one PEM file"
    );
    assert!(
        matches!(&b.remote, RemoteAuth::Psk { psk, .. } if psk.expose() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255])
    );
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
            "site.toml:32: connection[0].local.idd: unknown key `idd`, expected one of `auth`, `id`, `certs`, `key`",
        ),
        (
            "[ike]",
            "[ikee]",
            "site.toml:6: ikee: unknown key `ikee`, expected one of `listen`, `ike`, `connection`, `dataplane`, `metrics`, `pool`",
        ),
        (
            "listen = \"127.0.0.1:9469\"",
            "listen = \"localhost:9469\"",
            "site.toml:61: metrics.listen: \"localhost:9469\" is not an address and port (\"127.0.0.1:9469\", \"[::1]:9469\")",
        ),
        // Wrong types.
        (
            "start =",
            "start = \"yes\"",
            "site.toml:21: connection[0].start: invalid type: string \"yes\", expected a boolean",
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
            "site.toml:41: connection[0].children[0].local_ts[1]: \"10.1.0.0/33\" is not an address or CIDR prefix",
        ),
        (
            "proposals =",
            "proposals = [\"aes128gcm16-prfsha256-x25519\", \"aes-md5-modp1024\"]",
            "site.toml:20: connection[0].proposals[1]: unknown or unsupported algorithm keyword `md5`",
        ),
        (
            "esp_proposals =",
            "esp_proposals = [\"aes128gcm16\", \"aes128\"]",
            "site.toml:43: connection[0].children[0].esp_proposals[1]: proposal `aes128`: no integrity algorithm",
        ),
        (
            "remote_addrs =",
            "remote_addrs = [\"192.0.2.300\"]",
            "site.toml:18: connection[0].remote_addrs[0]: \"192.0.2.300\" is not an IP address",
        ),
        (
            "id = \"right.example\"",
            "id = \"C=CH, X=1\"",
            "site.toml:37: connection[0].remote.id: distinguished name component \"X=1\": expected one of C, ST, L, O, OU, CN, SN, serialNumber, E, DC followed by =value",
        ),
        (
            "auth = \"pubkey\"",
            "auth = \"eap\"",
            "site.toml:31: connection[0].local.auth: \"eap\": expected \"pubkey\" or \"psk\"",
        ),
        (
            "fragment_size =",
            "fragment_size = 100",
            "site.toml:23: connection[0].fragment_size: 100 is outside 576..=65535",
        ),
        (
            "mode =",
            "mode = \"transport\"",
            "site.toml:44: connection[0].children[0].mode: \"transport\" needs dataplane.mode = \"xfrm\": the userspace data plane only does tunnel mode",
        ),
        (
            "mode =",
            "rekey_bytes = 1000\nlife_bytes = 1000",
            "site.toml:45: connection[0].children[0].life_bytes: must exceed rekey_bytes (1000)",
        ),
        // Files.
        (
            "certs =",
            "certs = [\"missing.crt\"]",
            "site.toml:33: connection[0].local.certs[0]: missing.crt: No such file or directory (os error 2)",
        ),
        (
            "key =",
            "key = \"ca.crt\"",
            "site.toml:34: connection[0].local.key: private key: no PEM private key block and not DER",
        ),
        (
            "cacerts =",
            "cacerts = [\"left.key\"]",
            "site.toml:38: connection[0].remote.cacerts[0]: certificate: no PEM CERTIFICATE block and not DER",
        ),
        // Required keys.
        (
            "name = \"net\"",
            "# no name",
            "site.toml:39: connection[0].children[0].name: required key is missing",
        ),
        (
            "id = \"left.example\"",
            "# no id",
            "site.toml:30: connection[0].local.id: required key is missing",
        ),
        (
            "key =",
            "# no key",
            "site.toml:30: connection[0].local.key: required with auth = \"pubkey\"",
        ),
        (
            "cacerts =",
            "cacerts = []",
            "site.toml:38: connection[0].remote.cacerts: needs at least one file with auth = \"pubkey\"",
        ),
        (
            "proposals =",
            "proposals = []",
            "site.toml:20: connection[0].proposals: needs at least one proposal (omit it for the defaults)",
        ),
        // Cross-field checks.
        (
            "id = \"left.example\"",
            "id = \"someone-else.example\"",
            "site.toml:32: connection[0].local.id: identity someone-else.example does not match the certificate (subject CN=left.example, C=CH, O=esptun tests, SAN [DNSName(left.example)])",
        ),
        (
            "remote_addrs =",
            "remote_addrs = []",
            "site.toml:21: connection[0].start: start = true needs remote_addrs",
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
            "site.toml:55: dataplane.workers: must be 1 to 256",
        ),
        (
            "path_mtu =",
            "path_mtu = 1280",
            "site.toml:56: dataplane.path_mtu: must be within 1400..=65535",
        ),
        (
            "tun =",
            "tun = \"a-name-far-too-long\"",
            "site.toml:54: dataplane.tun: must be an interface name of 1 to 15 characters without '/' or spaces",
        ),
        // Syntax.
        (
            "start =",
            "start = true\nstart = false",
            "site.toml:22: duplicate key",
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
        "site.toml:31: connection[0].local.auth: auth = \"psk\" needs psk_file in the connection"
    );
    for (file, why) in [
        ("empty.psk", "the PSK file is empty"),
        ("badhex.psk", "0x-prefixed PSK is not hex"),
        (
            "short.psk",
            "the PSK is 3 bytes, fewer than 16: one observed exchange lets anyone test guesses \
             offline; make one with (umask 077; head -c 32 /dev/urandom | base64 >FILE)",
        ),
        (
            "open.psk",
            "open.psk is open to group or others (mode 0640): run chmod 600 open.psk",
        ),
        (
            "nope.psk",
            "nope.psk: No such file or directory (os error 2)",
        ),
    ] {
        let text = edit_in(&psk_local, "psk_file =", &format!("psk_file = {file:?}"));
        assert_eq!(
            dir.load(&text).unwrap_err(),
            format!("site.toml:24: connection[0].psk_file: {why}")
        );
    }
}

#[test]
fn duplicate_names_and_missing_children_are_errors() {
    let dir = Dir::new("dups");
    let example = example();
    let connection =
        &example[example.find("[[connection]]").unwrap()..example.find("[dataplane]").unwrap()];
    assert_eq!(
        dir.load(&format!("{example}{connection}")).unwrap_err(),
        "site.toml:63: connection[1].name: duplicate connection name \"site-b\""
    );
    let children = &example
        [example.find("[[connection.children]]").unwrap()..example.find("[dataplane]").unwrap()];
    assert_eq!(
        dir.load(&format!("{example}{children}")).unwrap_err(),
        "site.toml:63: connection[0].children[1].name: duplicate child name \"net\""
    );
    let childless = &example[..example.find("[[connection.children]]").unwrap()];
    assert_eq!(
        dir.load(childless).unwrap_err(),
        "site.toml:15: connection[0]: needs at least one [[connection.children]]"
    );
}

#[test]
fn errors_outside_any_key_name_the_file() {
    let dir = Dir::new("syntax");
    assert_eq!(
        dir.load(&edit("name = \"site-b\"", "name = \"site-b"))
            .unwrap_err(),
        "site.toml:16: invalid basic string, expected `\"`"
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
fn durations_take_swanctl_forms_on_every_time_key() {
    let dir = Dir::new("durations");
    for (value, expected) in [
        ("45", Duration::from_secs(45)),
        ("\"45\"", Duration::from_secs(45)),
        ("\"90s\"", Duration::from_secs(90)),
        ("\"30m\"", Duration::from_secs(30 * 60)),
        ("\"1h\"", Duration::from_secs(3600)),
        ("\"2d\"", Duration::from_secs(2 * 86_400)),
        ("\"1.5h\"", Duration::from_secs(5400)),
        ("0.5", Duration::from_millis(500)),
        ("\"3650d\"", Duration::from_secs(3650 * 86_400)),
    ] {
        let config = dir
            .load(&lifecycle(&format!("half_open_timeout = {value}"), "", ""))
            .unwrap();
        assert_eq!(config.ike.half_open_timeout, expected, "{value}");
    }
    let config = dir
        .load(&lifecycle(
            "retransmit_timeout = 0.5\nretransmit_limit = \"1m\"",
            "rekey_time = \"1d\"\nover_time = \"2h\"\nrand_time = \"30m\"\ndpd_delay = \"2m\"",
            "rekey_time = \"30m\"\nlife_time = \"45m\"\nrand_time = \"5m\"",
        ))
        .unwrap();
    let retransmit = config.ike.retransmit;
    assert_eq!(
        (retransmit.timeout, retransmit.limit),
        (Duration::from_millis(500), secs(60))
    );
    let p = &config.connections[0].policy;
    assert_eq!(
        p.ike_lifetime,
        IkeLifetime {
            rekey_time: Some(secs(86_400)),
            over_time: secs(7200),
            rand_time: secs(1800),
        }
    );
    assert_eq!(p.dpd_delay, Some(secs(120)));
    assert_eq!(p.children[0].lifetime, times(1800, 2700));
    assert_eq!(p.children[0].rand_time, secs(300));
}

#[test]
fn bad_durations_name_the_key_and_the_accepted_forms() {
    let dir = Dir::new("bad-durations");
    let forms = "expected seconds (30 or 0.5) or a string with s, m, h or d (\"90s\", \"30m\", \"1h\", \"2d\")";
    for ((ike, conn, child), expected) in [
        (
            ("half_open_timeout = \"1w\"", "", ""),
            format!("site.toml:2: ike.half_open_timeout: \"1w\" is not a duration: {forms}"),
        ),
        (
            ("retransmit_timeout = \"0.5 s\"", "", ""),
            format!("site.toml:2: ike.retransmit_timeout: \"0.5 s\" is not a duration: {forms}"),
        ),
        (
            ("", "dpd_delay = -5", ""),
            format!("site.toml:9: connection[0].dpd_delay: -5 is not a duration: {forms}"),
        ),
        (
            ("", "over_time = \"1.2.3m\"", ""),
            format!("site.toml:9: connection[0].over_time: \"1.2.3m\" is not a duration: {forms}"),
        ),
        (
            ("", "", "rekey_time = \"h\""),
            format!(
                "site.toml:12: connection[0].children[0].rekey_time: \"h\" is not a duration: {forms}"
            ),
        ),
        (
            ("", "", "life_time = true"),
            format!(
                "site.toml:12: connection[0].children[0].life_time: true is not a duration: {forms}"
            ),
        ),
        (
            ("", "", "rand_time = \"-1m\""),
            format!(
                "site.toml:12: connection[0].children[0].rand_time: \"-1m\" is not a duration: {forms}"
            ),
        ),
        (
            ("", "rekey_time = \"3651d\"", ""),
            "site.toml:9: connection[0].rekey_time: \"3651d\" is more than 3650d (10 years)".into(),
        ),
        (
            ("", "rand_time = 9223372036854775807", ""),
            "site.toml:9: connection[0].rand_time: 9223372036854775807 is more than 3650d (10 years)"
                .into(),
        ),
        (
            ("retransmit_limit = inf", "", ""),
            "site.toml:2: ike.retransmit_limit: inf is more than 3650d (10 years)".into(),
        ),
    ] {
        assert_eq!(
            dir.load(&lifecycle(ike, conn, child)).unwrap_err(),
            expected,
            "{ike}{conn}{child}"
        );
    }
}

#[test]
fn lifetimes_are_derived_as_swanctl_derives_them() {
    let dir = Dir::new("lifetimes");
    let child = |lines: &str| {
        let config = dir.load(&lifecycle("", "", lines)).unwrap();
        let child = &config.connections[0].policy.children[0];
        (child.lifetime, child.rand_time)
    };
    let counts = |soft: Option<u64>, hard: Option<u64>| Lifetime {
        soft: Limits {
            bytes: soft,
            ..times(3600, 3960).soft
        },
        hard: Limits {
            bytes: hard,
            ..times(3600, 3960).hard
        },
    };
    assert_eq!(
        child("rekey_time = \"2h\""),
        (times(7200, 7920), secs(720)),
        "life_time = rekey_time + 10 %, rand_time the difference"
    );
    assert_eq!(
        child("life_time = \"66m\""),
        (times(3600, 3960), secs(360)),
        "rekey_time = life_time / 1.1"
    );
    assert_eq!(
        child("rekey_time = 0"),
        (Lifetime::default(), Duration::ZERO),
        "0 is no limit"
    );
    assert_eq!(
        child("life_time = 0"),
        (Lifetime::default(), Duration::ZERO)
    );
    assert_eq!(
        child("rekey_time = \"1h\"\nlife_time = 0"),
        (
            Lifetime {
                soft: times(3600, 0).soft,
                hard: Limits::default()
            },
            Duration::ZERO
        )
    );
    assert_eq!(child("rand_time = 0").1, Duration::ZERO);
    assert_eq!(
        child("rekey_bytes = 1000").0,
        counts(Some(1000), Some(1100))
    );
    assert_eq!(child("life_bytes = 1100").0, counts(Some(1000), Some(1100)));
    assert_eq!(
        child("rekey_bytes = 5").0,
        counts(Some(5), Some(6)),
        "+10 % rounded up, above the soft limit"
    );
    assert_eq!(
        child("rekey_bytes = 10\nlife_bytes = 0").0,
        counts(Some(10), None)
    );
    let (lifetime, _) = child("rekey_packets = 100\nlife_packets = 200");
    assert_eq!(
        (lifetime.soft.packets, lifetime.hard.packets),
        (Some(100), Some(200))
    );

    let ike = |lines: &str| {
        let config = dir.load(&lifecycle("", lines, "")).unwrap();
        config.connections[0].policy.ike_lifetime
    };
    let ike_lifetime = |rekey: Option<u64>, over: u64, rand: u64| IkeLifetime {
        rekey_time: rekey.map(secs),
        over_time: secs(over),
        rand_time: secs(rand),
    };
    assert_eq!(
        ike("rekey_time = \"1h\""),
        ike_lifetime(Some(3600), 360, 360)
    );
    assert_eq!(
        ike("rekey_time = 0"),
        ike_lifetime(None, 0, 0),
        "never rekeys"
    );
    assert_eq!(
        ike("over_time = \"1h\""),
        ike_lifetime(Some(14_400), 3600, 3600)
    );
    assert_eq!(ike("rand_time = 0"), ike_lifetime(Some(14_400), 1440, 0));
    assert_eq!(
        dir.load(&lifecycle("", "dpd_delay = 0\nkeyingtries = 3", ""))
            .map(|c| (
                c.connections[0].policy.dpd_delay,
                c.connections[0].policy.keyingtries
            ))
            .unwrap(),
        (None, 3)
    );
    let retransmit = dir
        .load(&lifecycle(
            "retransmit_base = 2\nretransmit_tries = 7\nretransmit_jitter = 20\nretransmit_limit = 0",
            "",
            "",
        ))
        .unwrap()
        .ike
        .retransmit;
    assert_eq!(
        retransmit,
        RetransmitPolicy {
            base: 2.0,
            tries: 7,
            jitter_percent: 20,
            limit: secs(3650 * 86_400),
            ..RetransmitPolicy::default()
        },
        "retransmit_limit = 0 is strongSwan's no limit"
    );
}

#[test]
fn lifecycle_mistakes_name_file_line_and_key() {
    let dir = Dir::new("lifecycle-errors");
    let cases: &[((&str, &str, &str), &str)] = &[
        (
            ("", "", "rekey_time = \"1h\"\nlife_time = 3600"),
            "site.toml:13: connection[0].children[0].life_time: must exceed rekey_time (3600)",
        ),
        (
            ("", "", "rekey_bytes = 0\nlife_bytes = 1000"),
            "site.toml:13: connection[0].children[0].life_bytes: needs a rekey_bytes above 0: the Child SA must be rekeyed before life_bytes ends it",
        ),
        (
            ("", "", "rekey_time = 0\nlife_time = \"1h\""),
            "site.toml:13: connection[0].children[0].life_time: needs a rekey_time above 0: the Child SA must be rekeyed before life_time ends it",
        ),
        (
            ("", "", "life_packets = 1"),
            "site.toml:12: connection[0].children[0].life_packets: needs a rekey_packets above 0: the Child SA must be rekeyed before life_packets ends it",
        ),
        (
            ("", "", "rand_time = \"1h\""),
            "site.toml:12: connection[0].children[0].rand_time: must be below rekey_time (3600)",
        ),
        (
            ("", "", "rekey_time = \"1h\"\nlife_time = \"3h\""),
            "site.toml:13: connection[0].children[0].rand_time: defaults to life_time − rekey_time (7200), which must be below rekey_time (3600): set it",
        ),
        (
            ("", "over_time = 0", ""),
            "site.toml:9: connection[0].over_time: must be above 0: it is the time a rekeying gets before the IKE SA ends",
        ),
        (
            ("", "over_time = \"5h\"", ""),
            "site.toml:9: connection[0].rand_time: defaults to over_time (18000), which must be below rekey_time (14400): set it",
        ),
        (
            ("", "rand_time = \"4h\"", ""),
            "site.toml:9: connection[0].rand_time: must be below rekey_time (14400)",
        ),
        (
            ("retransmit_timeout = 0", "", ""),
            "site.toml:2: ike.retransmit_timeout: must be above 0",
        ),
        (
            ("retransmit_base = 0.5", "", ""),
            "site.toml:2: ike.retransmit_base: must be at least 1",
        ),
        (
            ("retransmit_base = nan", "", ""),
            "site.toml:2: ike.retransmit_base: must be at least 1",
        ),
        (
            ("retransmit_tries = 101", "", ""),
            "site.toml:2: ike.retransmit_tries: must be at most 100",
        ),
        (
            ("retransmit_jitter = 101", "", ""),
            "site.toml:2: ike.retransmit_jitter: must be within 0..=100",
        ),
        (
            ("retransmit_base = 10000", "", ""),
            "site.toml:2: ike.retransmit_base: retransmit_timeout × retransmit_base^retransmit_tries is more than 1e18 s, a wait the engine cannot compute even when retransmit_limit caps it",
        ),
        (
            ("retransmit_tries = 100", "", ""),
            "site.toml:2: ike.retransmit_tries: retransmit_timeout × retransmit_base^retransmit_tries is more than 1e18 s, a wait the engine cannot compute even when retransmit_limit caps it",
        ),
    ];
    for ((ike, conn, child), expected) in cases {
        assert_eq!(
            dir.load(&lifecycle(ike, conn, child)).unwrap_err(),
            *expected,
            "{ike}{conn}{child}"
        );
    }
}

#[test]
fn actions_take_swanctl_names() {
    let dir = Dir::new("actions");
    let child = |lines: &str| {
        let config = dir.load(&lifecycle("", "", lines)).unwrap();
        let c = &config.connections[0];
        let child = &c.policy.children[0];
        (
            c.start,
            child.start_action,
            child.dpd_action,
            child.close_action,
        )
    };
    use Action::{None as Clear, Start, Trap};
    for (lines, expected) in [
        ("start_action = \"none\"", (false, Clear, Clear, Clear)),
        ("start_action = \"start\"", (true, Start, Clear, Clear)),
        ("start_action = \"trap\"", (false, Trap, Clear, Clear)),
        ("dpd_action = \"clear\"", (false, Clear, Clear, Clear)),
        ("dpd_action = \"none\"", (false, Clear, Clear, Clear)),
        ("dpd_action = \"restart\"", (false, Clear, Start, Clear)),
        ("dpd_action = \"trap\"", (false, Clear, Trap, Clear)),
        ("close_action = \"none\"", (false, Clear, Clear, Clear)),
        ("close_action = \"clear\"", (false, Clear, Clear, Clear)),
        ("close_action = \"trap\"", (false, Clear, Clear, Trap)),
        ("close_action = \"start\"", (false, Clear, Clear, Start)),
    ] {
        assert_eq!(child(lines), expected, "{lines}");
    }
}

#[test]
fn start_true_is_start_action_start_for_every_child() {
    let dir = Dir::new("start");
    let config = dir
        .load(&lifecycle(
            "",
            "start = true",
            "[[connection.children]]\nname = \"d\"",
        ))
        .unwrap();
    let c = &config.connections[0];
    assert!(c.start);
    let actions: Vec<Action> = c.policy.children.iter().map(|ch| ch.start_action).collect();
    assert_eq!(actions, [Action::Start, Action::Start]);
    let config = dir
        .load(&lifecycle("", "start = false", "start_action = \"trap\""))
        .unwrap();
    assert!(!config.connections[0].start, "false is no shorthand");
    assert_eq!(
        dir.load(&edit("# start_action", "start_action = \"start\""))
            .unwrap_err(),
        "site.toml:48: connection[0].children[0].start_action: conflicts with connection[0].start = true (line 21), which means start_action = \"start\" for every child",
        "the README example's commented-out line"
    );
    assert_eq!(
        dir.load(&lifecycle("", "start = true", "start_action = \"none\""))
            .unwrap_err(),
        "site.toml:12: connection[0].children[0].start_action: conflicts with connection[0].start = true (line 9), which means start_action = \"start\" for every child"
    );
}

#[test]
fn action_mistakes_list_the_values_or_ask_for_remote_addrs() {
    let dir = Dir::new("action-errors");
    let key = "site.toml:12: connection[0].children[0]";
    for (line, expected) in [
        (
            "start_action = \"restart\"",
            format!(
                "{key}.start_action: \"restart\": expected one of \"none\", \"start\", \"trap\""
            ),
        ),
        (
            "dpd_action = \"start\"",
            format!(
                "{key}.dpd_action: \"start\": expected one of \"clear\", \"restart\", \"trap\", \"none\""
            ),
        ),
        (
            "close_action = \"restart\"",
            format!(
                "{key}.close_action: \"restart\": expected one of \"none\", \"clear\", \"trap\", \"start\""
            ),
        ),
    ] {
        assert_eq!(dir.load(&lifecycle("", "", line)).unwrap_err(), expected);
    }
    // Without remote_addrs (one line less) only the actions that wait are allowed.
    let anyone = |child: &str| {
        dir.load(&lifecycle("", "", child).replace("remote_addrs = [\"192.0.2.2\"]\n", ""))
    };
    for ok in [
        "start_action = \"none\"",
        "dpd_action = \"clear\"",
        "close_action = \"clear\"",
    ] {
        assert!(anyone(ok).is_ok(), "{ok}");
    }
    let key = "site.toml:11: connection[0].children[0]";
    for (line, expected) in [
        (
            "start_action = \"start\"",
            format!("{key}.start_action: start_action = \"start\" needs remote_addrs"),
        ),
        (
            "start_action = \"trap\"",
            format!("{key}.start_action: start_action = \"trap\" needs remote_addrs"),
        ),
        (
            "dpd_action = \"restart\"",
            format!("{key}.dpd_action: dpd_action = \"restart\" needs remote_addrs"),
        ),
        (
            "dpd_action = \"trap\"",
            format!("{key}.dpd_action: dpd_action = \"trap\" needs remote_addrs"),
        ),
        (
            "close_action = \"start\"",
            format!("{key}.close_action: close_action = \"start\" needs remote_addrs"),
        ),
        (
            "close_action = \"trap\"",
            format!("{key}.close_action: close_action = \"trap\" needs remote_addrs"),
        ),
    ] {
        assert_eq!(anyone(line).unwrap_err(), expected);
    }
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

#[test]
fn a_private_key_open_to_others_is_refused_with_the_chmod_to_run() {
    let dir = Dir::new("open-key");
    assert_eq!(
        dir.load(&edit("key = ", "key = \"open.key\"")).unwrap_err(),
        "site.toml:34: connection[0].local.key: open.key is open to group or others (mode 0604): run chmod 600 open.key"
    );
}

#[test]
fn selectors_overlapping_another_connections_are_refused() {
    let dir = Dir::new("overlap");
    let example = example();
    let connection =
        &example[example.find("[[connection]]").unwrap()..example.find("[dataplane]").unwrap()];
    let second = |local: &str, remote: &str| {
        let other = connection
            .replace("name = \"site-b\"", "name = \"site-c\"")
            .replace(
                "local_ts = [\"10.1.0.0/24\", \"fd00:1::/64\"]",
                &format!("local_ts = {local}"),
            )
            .replace(
                "remote_ts = [\"10.2.0.0/24\", \"fd00:2::/64\"]",
                &format!("remote_ts = {remote}"),
            );
        dir.load(&format!("{example}{other}"))
    };
    assert_eq!(
        second(
            r#"["10.1.0.0/24"]"#,
            r#"["10.3.0.0/24", "fd00:2::8:0/112"]"#
        )
        .unwrap_err(),
        "site.toml:89: connection[1].children[0].remote_ts[1]: overlaps the selectors of \
         connection \"site-b\" child \"net\": a packet in both would go to whichever peer's SA \
         came up last; narrow one"
    );
    // The whole IPv4 space from our own address (dynamic local selectors) overlaps too.
    assert!(second("[]", r#"["0.0.0.0/0"]"#).is_err());
    // Other remote networks, or the same ones from other local networks, are apart.
    second(r#"["10.1.0.0/24"]"#, r#"["10.3.0.0/24", "fd00:3::/64"]"#).unwrap();
    second(r#"["10.4.0.0/24"]"#, r#"["10.2.0.0/24"]"#).unwrap();
}

#[test]
fn a_connection_fingerprint_follows_its_table_and_files_not_layout() {
    let dir = Dir::new("fingerprint");
    let text = r#"
[[connection]]
name = "a"
psk_file = "site-b.psk"
local = { auth = "psk", id = "a.example" }
remote = { auth = "psk" }
[[connection.children]]
name = "c"
remote_ts = ["10.2.0.0/24"]

[[connection]]
name = "b"
[connection.local]
auth = "pubkey"
id = "left.example"
certs = ["chain.crt"]
key = "left.key"
[connection.remote]
auth = "pubkey"
cacerts = ["ca.crt"]
[[connection.children]]
name = "c"
remote_ts = ["10.3.0.0/24"]
"#;
    let prints = |text: &str| -> Vec<[u8; 32]> {
        let config = dir.load(text).unwrap();
        config.connections.iter().map(|c| c.fingerprint).collect()
    };
    let before = prints(text);
    assert_ne!(before[0], before[1]);
    // Comments, blank lines, and another way to write the same table change nothing.
    let relaid = text
        .replace(
            "local = { auth = \"psk\", id = \"a.example\" }",
            "# ours\nlocal.auth = \"psk\"\nlocal.id = \"a.example\"\n",
        )
        .replace(
            "[[connection.children]]\nname = \"c\"\nremote_ts = [\"10.3",
            "\n[[connection.children]] # the LAN\nname   = \"c\"\nremote_ts = [\"10.3",
        );
    assert_ne!(relaid, text);
    assert_eq!(prints(&relaid), before);
    // A key of one connection changes that one only.
    let rekeyed = text.replace(
        "remote_ts = [\"10.2.0.0/24\"]",
        "remote_ts = [\"10.2.0.0/24\"]\nrekey_time = \"10m\"",
    );
    assert_ne!(rekeyed, text);
    let after = prints(&rekeyed);
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    // So does the content of a file it reads (the PSK here, certificates likewise).
    std::fs::write(
        dir.0.join("site-b.psk"),
        "another secret, as long as needed\n",
    )
    .unwrap();
    let after = prints(text);
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    std::fs::write(dir.0.join("ca.crt"), Ca::root("Other CA", Alg::P256).pem).unwrap();
    assert_ne!(prints(text)[1], before[1]);
}

#[test]
fn road_warrior_pools_and_vips_load_and_their_mistakes_are_named() {
    let dir = Dir::new("pools");
    let gateway = |pools: &str, conn: &str, child: &str| {
        format!(
            r#"{pools}
[[connection]]
name = "rw"
psk_file = "site-b.psk"
local = {{ auth = "psk", id = "gw.example" }}
remote = {{ auth = "psk", id = "*@example.org" }}
{conn}
[[connection.children]]
name = "net"
local_ts = ["10.1.0.0/24"]
{child}
"#
        )
    };
    let pools = r#"
[[pool]]
name = "rw4"
addrs = "10.3.0.0/24"
dns = ["10.1.0.53"]
[[pool]]
name = "rw6"
addrs = "fd00:3::/112"
[[pool]]
name = "few"
addrs = "10.4.0.10-10.4.0.11"
"#;
    let config = dir
        .load(&gateway(pools, r#"pools = ["rw4", "rw6"]"#, ""))
        .unwrap();
    let p: Vec<_> = config
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.addrs))
        .collect();
    assert_eq!(
        p,
        [
            ("rw4", v4("10.3.0.1", "10.3.0.254")),
            ("rw6", v6("fd00:3::1", "fd00:3::ffff")),
            ("few", v4("10.4.0.10", "10.4.0.11")),
        ]
    );
    assert_eq!(
        config.pools[0].dns,
        ["10.1.0.53".parse::<IpAddr>().unwrap()]
    );
    let policy = &config.connections[0].policy;
    assert_eq!(policy.pools, ["rw4", "rw6"]);
    assert!(
        policy
            .remote
            .id()
            .accepts(&Identity::Rfc822("carol@example.org".into()))
    );
    assert!(
        !policy
            .remote
            .id()
            .accepts(&Identity::Rfc822("carol@example.com".into()))
    );

    let client = dir
        .load(
            r#"
[[connection]]
name = "home"
remote_addrs = ["192.0.2.1"]
vips = ["0.0.0.0", "::"]
psk_file = "site-b.psk"
local = { auth = "psk", id = "carol@example.org" }
remote = { auth = "psk", id = "gw.example" }
[[connection.children]]
name = "net"
remote_ts = ["0.0.0.0/0"]
"#,
        )
        .unwrap();
    assert_eq!(
        client.connections[0].policy.vips,
        ["0.0.0.0".parse::<IpAddr>().unwrap(), "::".parse().unwrap()]
    );

    let cases = [
        (
            gateway(pools, r#"pools = ["rw5"]"#, ""),
            "site.toml:18: connection[0].pools[0]: no [[pool]] is named \"rw5\"",
        ),
        (
            gateway(
                pools,
                r#"pools = ["rw4"]"#,
                r#"remote_ts = ["10.3.0.0/24"]"#,
            ),
            "site.toml:22: connection[0].children[0].remote_ts[0]: must be left out: with pools it is the virtual IPs leased to the client",
        ),
        (
            gateway(pools, "pools = [\"rw4\"]\nvips = [\"0.0.0.0\"]", ""),
            "site.toml:19: connection[0].vips[0]: a connection either leases virtual IPs (pools, line 18) or asks for them (vips), not both",
        ),
        (
            gateway("", r#"vips = ["0.0.0.0", "10.0.0.1"]"#, ""),
            "site.toml:7: connection[0].vips[1]: one virtual IP per family",
        ),
        (
            gateway("", r#"vips = ["0.0.0.0"]"#, ""),
            "site.toml:10: connection[0].children[0].local_ts[0]: must be left out: with vips it is the virtual IPs the gateway leases us",
        ),
        (
            gateway(
                "[[pool]]\nname = \"p\"\naddrs = \"10.3.0.9-10.3.0.1\"",
                "",
                "",
            ),
            "site.toml:3: pool[0].addrs: \"10.3.0.9-10.3.0.1\" is not a CIDR prefix, FIRST-LAST range or address (\"10.3.0.0/24\", \"10.3.0.10-10.3.0.99\", \"fd00:3::/112\")",
        ),
        (
            gateway(
                "[[pool]]\nname = \"p\"\naddrs = \"10.3.0.1\"\n[[pool]]\nname = \"p\"\naddrs = \"10.3.0.2\"",
                "",
                "",
            ),
            "site.toml:5: pool[1].name: duplicate pool name \"p\"",
        ),
        (
            gateway("", "", "").replace("*@example.org", "@#ab*"),
            "site.toml:6: connection[0].remote.id: key ID \"ab*\" is not hex",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(dir.load(&text).err().as_deref(), Some(want), "{text}");
    }
}

#[test]
fn windows_legacy_proposals_need_the_connections_opt_in() {
    let dir = Dir::new("legacy");
    let file = |conn: &str, esp: &str| {
        format!(
            r#"[[connection]]
name = "win"
psk_file = "site-b.psk"
local = {{ auth = "psk", id = "gw.example" }}
remote = {{ auth = "psk" }}
{conn}
[[connection.children]]
name = "net"
{esp}
"#
        )
    };
    // Without the opt-in: an error at the proposal, saying how to opt in and why not to.
    let err = dir
        .load(&file(
            r#"proposals = ["aes256-sha256-modp2048", "aes256-sha1-modp1024"]"#,
            "",
        ))
        .unwrap_err();
    assert!(
        err.starts_with("site.toml:6: connection[0].proposals[1]: `aes256-sha1-modp1024` uses HMAC_SHA1_96, MODP_1024, PRF_HMAC_SHA1: weak algorithms"),
        "{err}"
    );
    assert!(
        err.contains("Set legacy_windows_proposals = true in this connection")
            && err.contains("Set-VpnConnectionIPsecConfiguration"),
        "{err}"
    );
    let err = dir
        .load(&file("", r#"esp_proposals = ["aes256-sha1"]"#))
        .unwrap_err();
    assert!(
        err.starts_with("site.toml:9: connection[0].children[0].esp_proposals[0]: `aes256-sha1` uses HMAC_SHA1_96:"),
        "{err}"
    );
    let err = dir
        .load(&file(
            r#"proposals = ["aes256-sha256-modp1024"]
legacy_windows_proposals = false"#,
            "",
        ))
        .unwrap_err();
    assert!(err.contains("uses MODP_1024:"), "{err}");

    // With it: loaded, and the weak algorithms named for the warning at start.
    let config = dir
        .load(&file(
            r#"proposals = ["aes256-sha1-modp1024"]
legacy_windows_proposals = true"#,
            r#"esp_proposals = ["aes256-sha1", "aes256gcm16"]"#,
        ))
        .unwrap();
    let c = &config.connections[0];
    assert!(c.legacy_windows_proposals);
    assert_eq!(
        c.weak_algorithms,
        ["HMAC_SHA1_96", "MODP_1024", "PRF_HMAC_SHA1"]
    );
    assert_eq!(c.policy.children[0].esp_proposals.len(), 2);
    // A strong connection is untouched, and an opt-in that enables nothing names nothing.
    let config = dir
        .load(&file("legacy_windows_proposals = true", ""))
        .unwrap();
    assert!(config.connections[0].weak_algorithms.is_empty());
    let config = dir.load(&file("", "")).unwrap();
    assert!(!config.connections[0].legacy_windows_proposals);
    // A SHA-1 PRF alone was allowed before and still is.
    assert!(
        dir.load(&file(r#"proposals = ["aes256gcm16-prfsha1-ecp256"]"#, ""))
            .is_ok()
    );
}

#[test]
fn transport_children_need_xfrm_host_selectors_and_no_virtual_ips() {
    let dir = Dir::new("transport");
    // The child's keys from line 12, the data plane's mode after them.
    let file = |conn: &str, child: &str, dataplane: &str| {
        format!("{}[dataplane]\n{dataplane}\n", lifecycle("", conn, child))
    };
    let xfrm = "mode = \"xfrm\"";
    let config = dir.load(&file("", "mode = \"transport\"", xfrm)).unwrap();
    assert_eq!(config.dataplane.mode, DataplaneMode::Xfrm);
    let child = &config.connections[0].policy.children[0];
    assert!(child.transport);
    assert!(child.local_ts.is_empty() && child.remote_ts.is_empty());
    let hosts = "mode = \"transport\"\nlocal_ts = [\"192.0.2.1\", \"2001:db8::1/128\"]\n\
                 remote_ts = [\"192.0.2.2/32\"]";
    let config = dir.load(&file("", hosts, xfrm)).unwrap();
    assert!(config.connections[0].policy.children[0].transport);
    let tunnel = dir.load(&file("", "mode = \"tunnel\"", xfrm)).unwrap();
    assert!(!tunnel.connections[0].policy.children[0].transport);
    let spread = dir.load(&file("", "per_resource_sas = true", "")).unwrap();
    assert!(spread.connections[0].policy.children[0].per_resource);
    assert!(!tunnel.connections[0].policy.children[0].per_resource);
    let spread = dir.load(&file("", "spread_inbound = true", "")).unwrap();
    assert!(spread.connections[0].policy.children[0].spread);
    assert!(!tunnel.connections[0].policy.children[0].spread);
    let cases = [
        (
            file("", "mode = \"transport\"", ""),
            "site.toml:12: connection[0].children[0].mode: \"transport\" needs dataplane.mode = \"xfrm\": the userspace data plane only does tunnel mode",
        ),
        (
            file("", "mode = \"transport\"", "mode = \"userspace\""),
            "site.toml:12: connection[0].children[0].mode: \"transport\" needs dataplane.mode = \"xfrm\": the userspace data plane only does tunnel mode",
        ),
        (
            file(
                "",
                "mode = \"transport\"\nlocal_ts = [\"10.1.0.0/24\"]",
                xfrm,
            ),
            "site.toml:13: connection[0].children[0].local_ts[0]: \"10.1.0.0/24\" is not a single address: mode = \"transport\" protects host-to-host traffic (leave local_ts out for our IKE address)",
        ),
        (
            file(
                "",
                "mode = \"transport\"\nremote_ts = [\"192.0.2.2\",\n  \"fd00::/64\"]",
                xfrm,
            ),
            "site.toml:14: connection[0].children[0].remote_ts[1]: \"fd00::/64\" is not a single address: mode = \"transport\" protects host-to-host traffic (leave remote_ts out for the peer's IKE address)",
        ),
        (
            file("vips = [\"0.0.0.0\"]", "mode = \"transport\"", xfrm),
            "site.toml:12: connection[0].children[0].mode: \"transport\" cannot go with vips (line 9): virtual IPs need tunnel mode",
        ),
        (
            format!(
                "[[pool]]\nname = \"p\"\naddrs = \"10.3.0.0/24\"\n{}",
                file("pools = [\"p\"]", "mode = \"transport\"", xfrm)
            ),
            "site.toml:15: connection[0].children[0].mode: \"transport\" cannot go with pools (line 12): virtual IPs need tunnel mode",
        ),
        (
            file("vips = [\"0.0.0.0\"]", "", xfrm),
            "site.toml:9: connection[0].vips[0]: asking for virtual IPs needs dataplane.mode = \"userspace\": in xfrm mode esptun has no TUN to put them on",
        ),
        (
            file("", "mode = \"beet\"", xfrm),
            "site.toml:12: connection[0].children[0].mode: \"beet\": expected \"tunnel\" or \"transport\"",
        ),
        (
            file("", "", "mode = \"kernel\""),
            "site.toml:14: dataplane.mode: \"kernel\": expected \"userspace\" or \"xfrm\"",
        ),
        (
            file("", "per_resource_sas = true", xfrm),
            "site.toml:12: connection[0].children[0].per_resource_sas: needs dataplane.mode = \"userspace\": the kernel's per-CPU SAs are not used",
        ),
        (
            file("", "spread_inbound = true", xfrm),
            "site.toml:12: connection[0].children[0].spread_inbound: needs dataplane.mode = \"userspace\": the kernel steers ESP by SPI",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(dir.load(&text).unwrap_err(), expected, "{text}");
    }
}
