//! deploy/systemd/esptun.service passes `systemd-analyze verify` (skipped, saying
//! so, where systemd-analyze is not installed: Debian's package `systemd`).

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

/// The unit's ExecStart binary, which verify requires to exist.
const INSTALLED: &str = "/usr/local/bin/esptun run --config";

#[test]
fn the_unit_verifies() {
    match Command::new("systemd-analyze").arg("--version").output() {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
            return;
        }
        other => assert!(other.unwrap().status.success()),
    }
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/esptun.service"),
    )
    .unwrap();
    assert!(unit.contains(INSTALLED), "ExecStart is not {INSTALLED}");
    // verify checks that ExecStart's binary exists: point it at the one under test,
    // the unit otherwise as shipped.
    let unit = unit.replace(
        INSTALLED,
        &format!("{} run --config", env!("CARGO_BIN_EXE_esptun")),
    );
    let dir = std::env::temp_dir().join(format!("esptun-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("esptun.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--recursive-errors=no", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A mistyped key or value is only a warning ("…, ignoring"), so warnings fail too.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
