//! The configuration file: TOML, then every key's checks, with the files it names
//! (certificates, keys, PSKs) read from a scratch directory.

#![no_main]

use esptun::config::Config;
use esptun_fuzz::files;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A file name is read whole: a device such as /dev/zero never ends, which is the
    // operator's own doing, not a fault of the parser.
    if ["/dev", "/proc", "/sys"].iter().any(|d| text.contains(d)) {
        return;
    }
    if let Err(e) = Config::parse(text, &files().join("site.toml")) {
        let _ = e.to_string();
    }
});
