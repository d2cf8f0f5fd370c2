//! The example configurations in deploy/examples, rendered by their render.sh with
//! addresses and certificates from `esptun pki`, load as esptun configurations, and
//! each pair's two sides (the strongSwan one read from swanctl.conf) agree on
//! addresses, identities, selectors and proposals. So the examples cannot rot.

use esptun::config::{Config, Connection};
use esptun::ike::{LocalAuth, RemoteAuth};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LEFT: &str = "192.0.2.1";
const RIGHT: &str = "192.0.2.2";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples")
}

/// A scratch directory with a CA and certificates for left.example and
/// right.example made by `esptun pki`, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("esptun-examples-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = dir.join("pki");
        let pki = pki.to_str().unwrap();
        for args in [
            &["pki", "ca", "--out", pki][..],
            &["pki", "issue", "--dir", pki, "--san", "left.example"],
            &["pki", "issue", "--dir", pki, "--san", "right.example"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_esptun"))
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
        Self(dir)
    }

    /// Runs render.sh on the example set `set` into DIR/set with `env`.
    fn render(&self, set: &str, env: &[(&str, &str)]) -> (PathBuf, Output) {
        let dest = self.0.join(set);
        let out = Command::new("bash")
            .arg(examples().join("render.sh"))
            .arg(examples().join(set))
            .arg(&dest)
            .env_remove("LEFT_ADDR")
            .env_remove("RIGHT_ADDR")
            .env_remove("CERT_DIR")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (dest, out)
    }

    /// Renders `set` with the test's addresses and certificates; the key of the PSK
    /// examples goes next to the rendered files.
    fn rendered(&self, set: &str) -> PathBuf {
        let pki = self.0.join("pki");
        let (dest, out) = self.render(
            set,
            &[
                ("LEFT_ADDR", LEFT),
                ("RIGHT_ADDR", RIGHT),
                ("CERT_DIR", pki.to_str().unwrap()),
            ],
        );
        assert!(
            out.status.success(),
            "render.sh {set}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let psk = dest.join("site.psk");
        std::fs::write(&psk, "an example key, long enough\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        dest
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(path: &Path) -> Config {
    let text = std::fs::read_to_string(path).unwrap();
    Config::parse(&text, path).unwrap_or_else(|e| panic!("{e}"))
}

/// The connection's addresses, identities and selectors as text.
fn summary(c: &Connection) -> BTreeMap<&'static str, String> {
    let p = &c.policy;
    let list = |v: &[String]| v.join(",");
    let addrs =
        |a: &[std::net::IpAddr]| list(&a.iter().map(ToString::to_string).collect::<Vec<_>>());
    let (local_id, local_auth) = match &p.local {
        LocalAuth::Pubkey { id, .. } => (id.to_string(), "pubkey"),
        LocalAuth::Psk { id, .. } => (id.to_string(), "psk"),
    };
    let (remote_id, remote_auth) = match &p.remote {
        RemoteAuth::Pubkey { id, .. } => (id.exact().map(ToString::to_string), "pubkey"),
        RemoteAuth::Psk { id, .. } => (id.exact().map(ToString::to_string), "psk"),
    };
    let child = &p.children[0];
    let ts = |t: &[esptun::wire::payload::TsRange]| {
        list(&t.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    BTreeMap::from([
        ("local_addrs", addrs(&p.local_addrs)),
        ("remote_addrs", addrs(&p.remote_addrs)),
        ("local_id", local_id),
        ("local_auth", local_auth.into()),
        ("remote_id", remote_id.unwrap_or_default()),
        ("remote_auth", remote_auth.into()),
        ("local_ts", ts(&child.local_ts)),
        ("remote_ts", ts(&child.remote_ts)),
    ])
}

/// The other side's view: local and remote swapped.
fn mirrored(view: &BTreeMap<&'static str, String>) -> BTreeMap<&'static str, String> {
    view.iter()
        .map(|(k, v)| {
            let k = match *k {
                "local_addrs" => "remote_addrs",
                "remote_addrs" => "local_addrs",
                "local_id" => "remote_id",
                "remote_id" => "local_id",
                "local_auth" => "remote_auth",
                "remote_auth" => "local_auth",
                "local_ts" => "remote_ts",
                "remote_ts" => "local_ts",
                other => other,
            };
            (k, v.clone())
        })
        .collect()
}

#[test]
fn every_example_renders_and_loads() {
    let scratch = Scratch::new("load");
    let mut loaded = 0;
    for set in std::fs::read_dir(examples()).unwrap() {
        let set = set.unwrap();
        if !set.file_type().unwrap().is_dir() {
            continue;
        }
        let name = set.file_name().into_string().unwrap();
        let dest = scratch.rendered(&name);
        for file in std::fs::read_dir(&dest).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let config = load(&path);
                assert_eq!(config.connections.len(), 1, "{}", path.display());
                loaded += 1;
            }
        }
    }
    assert_eq!(
        loaded, 5,
        "two esptun<->esptun pairs and the esptun side of strongswan"
    );
}

#[test]
fn both_sides_of_each_esptun_pair_agree() {
    let scratch = Scratch::new("pairs");
    for (set, auth) in [("esptun-certs", "pubkey"), ("esptun-psk", "psk")] {
        let dest = scratch.rendered(set);
        let left = summary(&load(&dest.join("left.toml")).connections[0]);
        let right = summary(&load(&dest.join("right.toml")).connections[0]);
        assert_eq!(left["local_addrs"], LEFT, "{set}");
        assert_eq!(left["remote_addrs"], RIGHT, "{set}");
        assert_eq!(left["local_auth"], auth, "{set}");
        assert_eq!(left["local_ts"], "10.1.0.0/24,fd00:1::/64", "{set}");
        assert_eq!(right["local_ts"], "10.2.0.0/24,fd00:2::/64", "{set}");
        assert_eq!(mirrored(&left), right, "{set}");
        let start = |file: &str| load(&dest.join(file)).connections[0].start;
        assert!(
            start("left.toml") && !start("right.toml"),
            "{set}: left initiates"
        );
    }
}

/// swanctl.conf as `section.section.key` = value (its syntax is nested
/// `name { … }` blocks of `key = value` lines).
fn swanctl(text: &str) -> BTreeMap<String, String> {
    let mut path: Vec<&str> = Vec::new();
    let mut values = BTreeMap::new();
    for line in text.lines().map(|l| l.split('#').next().unwrap().trim()) {
        if let Some(section) = line.strip_suffix('{') {
            path.push(section.trim());
        } else if line == "}" {
            path.pop().expect("balanced braces");
        } else if let Some((key, value)) = line.split_once('=') {
            let key = [&path[..], &[key.trim()]].concat().join(".");
            values.insert(key, value.trim().to_string());
        }
    }
    assert!(path.is_empty(), "unbalanced braces");
    values
}

#[test]
fn strongswan_side_matches_the_esptun_side() {
    let scratch = Scratch::new("strongswan");
    let dest = scratch.rendered("strongswan");
    let config = load(&dest.join("esptun.toml"));
    let ours = summary(&config.connections[0]);
    let conf = swanctl(&std::fs::read_to_string(dest.join("swanctl.conf")).unwrap());
    let get = |key: &str| -> String {
        conf.get(&format!("connections.esptun.{key}"))
            .unwrap_or_else(|| panic!("swanctl.conf has no {key}"))
            .replace(' ', "")
    };
    let theirs = BTreeMap::from([
        ("local_addrs", get("local_addrs")),
        ("remote_addrs", get("remote_addrs")),
        ("local_id", get("local.id")),
        ("local_auth", get("local.auth")),
        ("remote_id", get("remote.id")),
        ("remote_auth", get("remote.auth")),
        ("local_ts", get("children.lan.local_ts")),
        ("remote_ts", get("children.lan.remote_ts")),
    ]);
    assert_eq!(mirrored(&ours), theirs);
    assert_eq!(ours["local_addrs"], LEFT);
    // The proposals as written on both sides (esptun keeps them parsed).
    let raw: toml::Table = std::fs::read_to_string(dest.join("esptun.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let connection = &raw["connection"][0];
    let words = |v: &toml::Value| -> String {
        let list: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        list.join(",")
    };
    assert_eq!(words(&connection["proposals"]), get("proposals"));
    assert_eq!(
        words(&connection["children"][0]["esp_proposals"]),
        get("children.lan.esp_proposals")
    );
    // strongSwan finds its files by name in the swanctl directories.
    assert_eq!(get("local.certs"), "right.example.crt");
    assert_eq!(get("remote.cacerts"), "ca.crt");
}

#[test]
fn render_refuses_missing_values_and_unknown_placeholders() {
    let scratch = Scratch::new("render");
    let (dest, out) = scratch.render(
        "esptun-certs",
        &[("LEFT_ADDR", LEFT), ("RIGHT_ADDR", RIGHT)],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("uses @CERT_DIR@ but CERT_DIR is not set"),
        "{out:?}"
    );
    assert!(!dest.join("left.toml").exists());

    let set = scratch.0.join("custom");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::write(set.join("a.toml"), "x = \"@LEFT_ADDR@ @PEER@\"\n").unwrap();
    let out = Command::new("bash")
        .arg(examples().join("render.sh"))
        .arg(&set)
        .arg(scratch.0.join("custom-out"))
        .env("LEFT_ADDR", "a|b&c\\d")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown placeholder @PEER@"),
        "{out:?}"
    );
    std::fs::write(set.join("a.toml"), "x = \"@LEFT_ADDR@\"\n").unwrap();
    let out = Command::new("bash")
        .arg(examples().join("render.sh"))
        .arg(&set)
        .arg(scratch.0.join("custom-out"))
        .env("LEFT_ADDR", "a|b&c\\d")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(scratch.0.join("custom-out/a.toml")).unwrap(),
        "x = \"a|b&c\\d\"\n",
        "values are taken literally"
    );
}
