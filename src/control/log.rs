//! What the daemon prints for each engine event, and the key log it keeps when asked:
//! a Wireshark profile directory whose `ikev2_decryption_table` and `esp_sa` tables
//! decrypt a capture of the tunnel.

use crate::crypto::{Encr, Integ, Secret};
use crate::ike::{ChildSaUp, DownReason, Event, IkeSaUp, MessageRecord};
use crate::logging::Level;
use crate::wire::IkeSpi;
use crate::wire::message::summarize;
use crate::wire::payload::TsRange;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn selectors(list: &[TsRange]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The connection an event names, if it does (Child SA events name only their IKE SA).
pub fn connection(event: &Event) -> Option<&str> {
    match event {
        Event::Message(m) => m.connection.as_deref(),
        Event::Log { connection, .. } => connection.as_deref(),
        Event::IkeSaUp(up) | Event::IkeSaRekeyed { up, .. } => Some(&up.connection),
        Event::IkeSaDown { connection, .. } => Some(connection),
        Event::ChildSaUp(c) => Some(&c.connection),
        Event::IkeSaMoved { .. }
        | Event::ChildSaOutbound { .. }
        | Event::ChildSaFailed { .. }
        | Event::ChildSaDown { .. } => None,
    }
}

/// The IKE SA an event concerns, by initiator SPI.
pub fn spi_i(event: &Event) -> Option<IkeSpi> {
    match event {
        Event::Message(m) => Some(m.spi_i),
        Event::IkeSaUp(up) | Event::IkeSaRekeyed { up, .. } => Some(up.spi_i),
        Event::ChildSaUp(c) => Some(c.spi_i),
        Event::Log { spi_i, .. }
        | Event::IkeSaDown { spi_i, .. }
        | Event::IkeSaMoved { spi_i, .. }
        | Event::ChildSaOutbound { spi_i, .. }
        | Event::ChildSaFailed { spi_i, .. }
        | Event::ChildSaDown { spi_i, .. } => Some(*spi_i),
    }
}

/// How severe an event is: a negotiation that failed, or a peer that went silent,
/// is a warning; the rest is information.
pub fn level(event: &Event) -> Level {
    match event {
        Event::ChildSaFailed { .. }
        | Event::IkeSaDown {
            reason: DownReason::PeerDead | DownReason::Failed(_) | DownReason::Refused(_),
            ..
        } => Level::Warn,
        _ => Level::Info,
    }
}

/// The one line printed for an event.
pub fn line(event: &Event) -> String {
    match event {
        Event::Message(m) => message(m),
        Event::Log { spi_i, text, .. } => format!("IKE_SA {:016x}: {text}", spi_i.0),
        Event::IkeSaUp(up) => ike_up(up, "ESTABLISHED"),
        Event::IkeSaRekeyed { old, up } => {
            format!("{} (rekeys {:016x})", ike_up(up, "REKEYED"), old.0)
        }
        Event::IkeSaDown {
            spi_i,
            connection,
            reason,
            ..
        } => format!("IKE_SA {:016x}: DOWN {connection}: {reason}", spi_i.0),
        Event::IkeSaMoved {
            spi_i,
            local,
            remote,
            encap,
            ..
        } => format!(
            "IKE_SA {:016x}: MOVED to {local} <-> {remote}, ESP{}",
            spi_i.0,
            if *encap { " in UDP" } else { "" }
        ),
        Event::ChildSaUp(c) => child_up(c),
        Event::ChildSaOutbound { spi_i, spi_in } => format!(
            "IKE_SA {:016x}: CHILD_SA {spi_in:08x}_i now carries outbound traffic",
            spi_i.0
        ),
        Event::ChildSaFailed {
            spi_i,
            child,
            reason,
        } => {
            format!("IKE_SA {:016x}: CHILD_SA {child} FAILED: {reason}", spi_i.0)
        }
        Event::ChildSaDown {
            spi_i,
            spi_in,
            spi_out,
        } => format!(
            "IKE_SA {:016x}: CHILD_SA DELETED spi_in {spi_in:08x} spi_out {spi_out:08x}",
            spi_i.0
        ),
    }
}

fn message(m: &MessageRecord) -> String {
    let kind = if m.response { "response" } else { "request" };
    let size = if m.fragments > 1 {
        format!("{} bytes in {} fragments", m.bytes, m.fragments)
    } else {
        format!("{} bytes", m.bytes)
    };
    let (verb, dir) = if m.sent {
        ("sent", "to")
    } else {
        ("received", "from")
    };
    format!(
        "IKE_SA {:016x}: {verb} {} {kind} {} ({size}) {dir} {} {}",
        m.spi_i.0,
        m.exchange,
        m.message_id,
        m.peer,
        summarize(&m.payloads)
    )
}

/// Addresses as the log and `updown`'s environment show them: separated by spaces.
pub fn addresses(addrs: &[std::net::IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ike_up(up: &IkeSaUp, what: &str) -> String {
    let mut vips = String::new();
    if !up.virtual_ips.is_empty() {
        let whose = if up.initiator { "our" } else { "peer's" };
        vips = format!(", {whose} virtual IP {}", addresses(&up.virtual_ips));
    }
    if !up.dns.is_empty() {
        vips += &format!(", DNS {}", addresses(&up.dns));
    }
    format!(
        "IKE_SA {:016x}: {what} {} {} [{}] <-> {} [{}] spi_i {:016x} spi_r {:016x} {}{vips}",
        up.spi_i.0,
        up.connection,
        up.local,
        up.local_id,
        up.remote,
        up.remote_id,
        up.spi_i.0,
        up.spi_r.0,
        up.suite
    )
}

/// A Child SA's algorithms as logged and as `esptun status` shows them:
/// encryption, then integrity and ESN when it has them.
pub fn esp_algorithms(c: &ChildSaUp) -> String {
    let integ = c.integ.map(|i| format!("/{i}")).unwrap_or_default();
    format!("{}{integ}{}", c.encr, if c.esn { "/ESN" } else { "" })
}

fn child_up(c: &ChildSaUp) -> String {
    let rekeys = c
        .rekeys
        .map(|old| format!(" (rekeys {old:08x}_i)"))
        .unwrap_or_default();
    format!(
        "IKE_SA {:016x}: CHILD_SA {}/{} UP spi_in {:08x} spi_out {:08x} {} local_ts {} remote_ts {} {} -> {}{}{}{rekeys}",
        c.spi_i.0,
        c.connection,
        c.child,
        c.spi_in,
        c.spi_out,
        esp_algorithms(c),
        selectors(&c.local_ts),
        selectors(&c.remote_ts),
        c.local,
        c.remote,
        if c.transport { " (transport mode)" } else { "" },
        if c.encap { " (UDP-encapsulated)" } else { "" },
    )
}

/// The `-v` record of a message: the line's facts plus every payload, decrypted.
pub fn json(m: &MessageRecord) -> String {
    serde_json::json!({
        "spi_i": format!("{:016x}", m.spi_i.0),
        "sent": m.sent,
        "exchange": m.exchange.to_string(),
        "response": m.response,
        "message_id": m.message_id,
        "bytes": m.bytes,
        "fragments": m.fragments,
        "peer": m.peer.to_string(),
        "payloads": crate::inspect::describe_payloads(&m.payloads),
    })
    .to_string()
}

/// Appends IKE and ESP keys to a Wireshark profile directory, and to `keys.json`
/// there for `esptun inspect --keys` (one object per SA, in the shape of
/// `tests/vectors/*/keys.json`).
pub struct KeyLog {
    ike: File,
    esp: File,
    json: File,
}

fn hex(s: &Secret) -> String {
    hex::encode(s.expose())
}

impl KeyLog {
    /// Creates `dir` (a Wireshark profile) with empty tables and decryption turned on.
    /// The files are the owner's alone and never written through a symlink, which
    /// another user could have planted to make us overwrite a file of their choice.
    pub fn create(dir: &Path) -> io::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let open = |name: &str| -> io::Result<File> {
            let path: PathBuf = dir.join(name);
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        open("preferences")?.write_all(
            b"esp.enable_encryption_decode: TRUE\nesp.enable_authentication_check: TRUE\n",
        )?;
        let table = |name: &str, header: &str| -> io::Result<File> {
            let mut f = open(name)?;
            writeln!(f, "# {header}, written by esptun --keylog")?;
            Ok(f)
        };
        Ok(Self {
            ike: table(
                "ikev2_decryption_table",
                "Wireshark UAT: IKEv2 decryption table",
            )?,
            esp: table("esp_sa", "Wireshark UAT: ESP SAs")?,
            json: open("keys.json")?,
        })
    }

    /// Appends one object to `keys.json`.
    fn json(&mut self, entry: &serde_json::Value) -> io::Result<()> {
        writeln!(self.json, "{entry}")?;
        self.json.flush()
    }

    /// Records an IKE SA's keys (for Wireshark, if it can decrypt its suite).
    pub fn ike(&mut self, up: &IkeSaUp) -> io::Result<()> {
        let k = &up.keys;
        self.json(&serde_json::json!({ "ike_sas": [{
            "spi_i": format!("{:016x}", up.spi_i.0),
            "spi_r": format!("{:016x}", up.spi_r.0),
            "sk_d": hex(&k.sk_d),
            "sk_ai": hex(&k.sk_ai),
            "sk_ar": hex(&k.sk_ar),
            "sk_ei": hex(&k.sk_ei),
            "sk_er": hex(&k.sk_er),
            "sk_pi": hex(&k.sk_pi),
            "sk_pr": hex(&k.sk_pr),
        }]}))?;
        let encr = match up.suite.encr {
            Encr::AesCbc { key_len } => format!("AES-CBC-{} [RFC3602]", key_len * 8),
            Encr::AesGcm16 { key_len } => {
                format!("AES-GCM-{} with 16 octet ICV [RFC5282]", key_len * 8)
            }
            Encr::ChaCha20Poly1305 => {
                return writeln!(
                    self.ike,
                    "# {:016x}: ChaCha20-Poly1305 is not in Wireshark's IKEv2 table",
                    up.spi_i.0
                );
            }
        };
        let integ = match up.suite.integ {
            None => "NONE [RFC4306]",
            Some(Integ::HmacSha1) => "HMAC_SHA1_96 [RFC2404]",
            Some(Integ::HmacSha256) => "HMAC_SHA2_256_128 [RFC4868]",
            Some(Integ::HmacSha384) => "HMAC_SHA2_384_192 [RFC4868]",
            Some(Integ::HmacSha512) => "HMAC_SHA2_512_256 [RFC4868]",
        };
        writeln!(
            self.ike,
            "{:016x},{:016x},{},{},\"{encr}\",{},{},\"{integ}\"",
            up.spi_i.0,
            up.spi_r.0,
            hex(&k.sk_ei),
            hex(&k.sk_er),
            hex(&k.sk_ai),
            hex(&k.sk_ar)
        )?;
        self.ike.flush()
    }

    /// Records both directions of a Child SA.
    pub fn esp(&mut self, c: &ChildSaUp) -> io::Result<()> {
        self.json(&serde_json::json!({ "child_sas": [{
            "spi_left_to_right": format!("{:08x}", c.spi_out),
            "spi_right_to_left": format!("{:08x}", c.spi_in),
            "encryption_initiator": hex(&c.keys_out.0),
            "encryption_responder": hex(&c.keys_in.0),
            "integrity_initiator": hex(&c.keys_out.1),
            "integrity_responder": hex(&c.keys_in.1),
        }]}))?;
        let encr = match c.encr {
            Encr::AesCbc { .. } => "AES-CBC [RFC3602]",
            Encr::AesGcm16 { .. } => "AES-GCM with 16 octet ICV [RFC4106]",
            Encr::ChaCha20Poly1305 => "ChaCha20 with Poly1305 [RFC7634]",
        };
        let integ = match c.integ {
            None => "NULL",
            Some(Integ::HmacSha1) => "HMAC-SHA-1-96 [RFC2404]",
            Some(Integ::HmacSha256) => "HMAC-SHA-256-128 [RFC4868]",
            Some(Integ::HmacSha384) => "HMAC-SHA-384-192 [RFC4868]",
            Some(Integ::HmacSha512) => "HMAC-SHA-512-256 [RFC4868]",
        };
        let family = if c.local.is_ipv4() { "IPv4" } else { "IPv6" };
        for (src, dst, spi, (ek, ik)) in [
            (c.remote.ip(), c.local.ip(), c.spi_in, &c.keys_in),
            (c.local.ip(), c.remote.ip(), c.spi_out, &c.keys_out),
        ] {
            let ik = if ik.is_empty() {
                String::new()
            } else {
                format!("0x{}", hex(ik))
            };
            writeln!(
                self.esp,
                "\"{family}\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{encr}\",\"0x{}\",\"{integ}\",\"{ik}\"",
                hex(ek)
            )?;
        }
        self.esp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keylog_files_are_the_owners_and_never_written_through_a_symlink() {
        let dir = std::env::temp_dir().join(format!("esptun-keylog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        KeyLog::create(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for name in [
            "preferences",
            "ikev2_decryption_table",
            "esp_sa",
            "keys.json",
        ] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        let victim = dir.join("victim");
        fs::write(&victim, "untouched").unwrap();
        fs::remove_file(dir.join("esp_sa")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("esp_sa")).unwrap();
        let refused = KeyLog::create(&dir)
            .err()
            .expect("a planted symlink is refused");
        assert!(refused.to_string().contains("esp_sa"), "{refused}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        fs::remove_dir_all(&dir).unwrap();
    }
}
