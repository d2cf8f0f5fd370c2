//! `esptun inspect`: pcap and pcapng reading (link types, IP fragments, UDP on the
//! IKE ports), then every IKE message decoded and, with the strongSwan vectors' keys,
//! decrypted, reassembled and rendered as text.

#![no_main]

use esptun::inspect::{KeyLog, inspect, text};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The keys of all three vector captures in one key log, so that any of them
/// decrypts.
fn keys() -> &'static KeyLog {
    static KEYS: OnceLock<KeyLog> = OnceLock::new();
    KEYS.get_or_init(|| {
        let files = [
            include_str!("../../tests/vectors/gcm/keys.json"),
            include_str!("../../tests/vectors/gcm-pfs/keys.json"),
            include_str!("../../tests/vectors/cbc/keys.json"),
        ];
        let mut logs = files.map(|json| KeyLog::parse("keys.json", json).expect("vector keys"));
        let [first, rest @ ..] = &mut logs;
        for log in rest {
            first.ike_sas.append(&mut log.ike_sas);
            first.child_sas.append(&mut log.child_sas);
        }
        let [first, ..] = logs;
        first
    })
}

fuzz_target!(|capture: &[u8]| {
    if let Ok(records) = inspect(capture, Some(keys())) {
        let _ = text(&records);
    }
});
