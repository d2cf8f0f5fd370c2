//! `esptun check` as a user runs it: a good file is summarised, a bad one is refused
//! with the same `file:line: key:` message `run` would print, and nothing starts.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn check(dir: &Path, toml: &str) -> Output {
    let path = dir.join("site.toml");
    std::fs::write(&path, toml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_esptun"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("esptun runs")
}

const SITE: &str = r#"[[connection]]
name = "site-b"
remote_addrs = ["192.0.2.2"]
start = true
psk_file = "site.psk"
local = { auth = "psk", id = "left.example" }
remote = { auth = "psk", id = "right.example" }
[[connection.children]]
name = "net"
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
"#;

#[test]
fn check_summarises_a_good_file_and_refuses_a_bad_one_with_its_line() {
    let dir = std::env::temp_dir().join(format!("esptun-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("site.psk"), "a pre-shared key\n").unwrap();
    std::fs::set_permissions(dir.join("site.psk"), Permissions::from_mode(0o600)).unwrap();

    let good = check(&dir, SITE);
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        out.contains("connection site-b: initiates as left.example, children net"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("site.toml: OK"), "{out}");

    let bad = check(&dir, &SITE.replace("10.2.0.0/24", "10.2.0.0/33"));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains(
            "site.toml:11: connection[0].children[0].remote_ts[0]: \"10.2.0.0/33\" is not an address or CIDR prefix"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
