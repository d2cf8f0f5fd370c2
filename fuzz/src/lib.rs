//! What the fuzz targets share: the files a configuration names, and a reader that
//! takes what a target needs from the fuzzer's bytes.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A directory holding what the configurations in the corpus name: the README's
/// `left.crt`, `left.key` and `ca.crt` (the strongSwan vectors' PKI), `site-b.psk`, and
/// the examples' `site.psk`.
pub fn files() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("esptun-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/gcm/pki");
        for name in ["ca.crt", "left.crt", "left.key", "right.crt", "right.key"] {
            std::fs::copy(pki.join(name), dir.join(name)).expect("vector PKI file");
        }
        for psk in ["site-b.psk", "site.psk"] {
            std::fs::write(dir.join(psk), "a shared secret of decent length\n").expect("PSK file");
        }
        // esptun refuses keys and PSKs that others may read.
        for secret in ["left.key", "right.key", "site-b.psk", "site.psk"] {
            std::fs::set_permissions(dir.join(secret), Permissions::from_mode(0o600))
                .expect("chmod 600");
        }
        dir
    })
}

/// The fuzzer's bytes, consumed front to back; past the end every read is zero or
/// empty, so any input is a whole program.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// True once everything is consumed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken.to_vec()
    }

    /// A byte string with its length in front (two bytes).
    pub fn chunk(&mut self) -> Vec<u8> {
        let n = usize::from(self.u16());
        self.bytes(n)
    }
}
