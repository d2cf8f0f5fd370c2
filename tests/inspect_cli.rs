//! `esptun inspect` as a user runs it: on the vector captures, with and without
//! keys, as text and JSON, and on files that are not captures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn esptun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esptun"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("esptun runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "esptun failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn text_output_shows_every_exchange_decrypted() {
    for profile in ["gcm", "gcm-pfs", "cbc"] {
        let capture = format!("tests/vectors/{profile}/capture.pcap");
        let keys = format!("tests/vectors/{profile}/keys.json");
        let text = stdout(&esptun(&["inspect", &capture, "--keys", &keys]));
        let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(headers.len(), 38, "{profile}: one line per datagram");
        let ike = headers.iter().filter(|l| l.contains(" IKE ")).count();
        assert_eq!(ike, 20, "{profile}");
        assert_eq!(
            text.matches("integrity=ok").count(),
            18,
            "{profile}: every SK payload opened"
        );
        assert!(!text.contains("error"), "{profile}:\n{text}");
        for needle in [
            "IKE_SA_INIT request from initiator",
            "IDi type=FQDN id=left.example",
            "IDr type=FQDN id=right.example",
            "CERT encoding=X509_CERT_SIG",
            "AUTH method=DIGITAL_SIGNATURE",
            "TSi",
            "addresses=10.1.0.0/24",
            "addresses=fd00:1::/64",
            "N(REKEY_SA)",
            "D protocol=ESP",
            "D protocol=IKE",
            " ESP spi=",
        ] {
            assert!(text.contains(needle), "{profile}: no {needle:?} in\n{text}");
        }
    }
}

#[test]
fn without_keys_encrypted_payloads_are_shown_as_such() {
    let text = stdout(&esptun(&["inspect", "tests/vectors/gcm/capture.pcap"]));
    assert_eq!(
        text.matches("error=\"encrypted; no keys given\"").count(),
        18
    );
    assert!(text.contains("KE group=CURVE25519"));
}

#[test]
fn json_output_is_one_record_per_datagram() {
    let out = stdout(&esptun(&[
        "inspect",
        "tests/vectors/cbc/capture.pcap",
        "--keys",
        "tests/vectors/cbc/keys.json",
        "--json",
    ]));
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(records.len(), 38);
    let auth = &records[2];
    assert_eq!(auth["exchange"], "IKE_AUTH");
    assert_eq!(auth["payloads"][0]["integrity"], "ok");
    let inner = auth["payloads"][0]["decrypted"].as_array().unwrap();
    assert_eq!(inner[0]["payload"], "IDi");
    assert_eq!(inner[0]["id"], "left.example");
}

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("esptun-inspect-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn one_line_error(path: &Path) -> String {
    let out = esptun(&["inspect", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn non_captures_and_truncated_captures_get_one_line_errors() {
    let err = one_line_error(&scratch("notes.txt", b"this is not a capture at all\n"));
    assert!(err.contains("not a pcap"), "{err}");
    let capture =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/gcm/capture.pcap"))
            .unwrap();
    let err = one_line_error(&scratch("cut.pcap", &capture[..capture.len() / 2]));
    assert!(err.contains("truncated"), "{err}");
    let err = one_line_error(Path::new("tests/vectors/no-such-file.pcap"));
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn a_bad_key_file_is_named_with_line_and_field() {
    let keys = scratch("keys.json", b"{\n  \"ike_sas\": [ { \"spi_i\": 5 } ]\n}\n");
    let out = esptun(&[
        "inspect",
        "tests/vectors/gcm/capture.pcap",
        "--keys",
        keys.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("keys.json") && err.contains("line 2"), "{err}");
}
