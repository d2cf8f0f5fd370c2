//! The configuration file: TOML shaped like swanctl.conf, parsed straight into the
//! engine's types. Files it names (certificates, keys, PSKs) are read at load time,
//! so every error can name the file, the line and the key.

use crate::auth::identity;
use crate::auth::private_key::PrivateKey;
use crate::auth::x509::{TrustAnchors, read_certificates};
use crate::crypto::Secret;
use crate::ike::{ChildPolicy, LocalAuth, Policy, RemoteAuth, proposal};
use crate::wire::ProtocolId;
use crate::wire::payload::{AddrRange, Proposal, TsRange};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// A configuration error: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), if key.is_empty() { ": ".to_owned() } else { format!(": {key}: ") })]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// The key, as a path such as `connection[0].local.id`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The loaded configuration.
#[derive(Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: Listen,
    /// Engine settings.
    pub ike: IkeSettings,
    /// Connections, in file order.
    pub connections: Vec<Connection>,
}

/// Sockets to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Addresses, each bound on both ports.
    pub addrs: Vec<IpAddr>,
    /// The IKE port (500).
    pub ike_port: u16,
    /// The NAT-T port (4500).
    pub natt_port: u16,
}

/// Engine-wide knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSettings {
    /// Half-open IKE SAs before COOKIEs are demanded.
    pub cookie_threshold: usize,
    /// How long a half-open IKE SA lives.
    pub half_open_timeout: Duration,
}

/// One connection: the engine's policy plus what the daemon does with it.
#[derive(Debug)]
pub struct Connection {
    /// The policy handed to the engine.
    pub policy: Arc<Policy>,
    /// Initiate at start-up.
    pub start: bool,
    /// The peer's IKE port.
    pub remote_port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    ike: RawIke,
    #[serde(default)]
    connection: Vec<RawConnection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addrs: Option<Vec<Spanned<String>>>,
    ike_port: Option<u16>,
    natt_port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIke {
    cookie_threshold: Option<usize>,
    half_open_timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    name: Spanned<String>,
    #[serde(default)]
    local_addrs: Vec<Spanned<String>>,
    #[serde(default)]
    remote_addrs: Vec<Spanned<String>>,
    remote_port: Option<u16>,
    proposals: Option<Vec<Spanned<String>>>,
    start: Option<Spanned<bool>>,
    #[serde(default)]
    encap: bool,
    fragment_size: Option<Spanned<usize>>,
    psk_file: Option<Spanned<String>>,
    local: Spanned<RawLocal>,
    remote: Spanned<RawRemote>,
    #[serde(default)]
    children: Vec<RawChild>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    auth: Spanned<String>,
    id: Spanned<String>,
    certs: Option<Vec<Spanned<String>>>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    auth: Spanned<String>,
    id: Option<Spanned<String>>,
    cacerts: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    name: Spanned<String>,
    #[serde(default)]
    local_ts: Vec<Spanned<String>>,
    #[serde(default)]
    remote_ts: Vec<Spanned<String>>,
    esp_proposals: Option<Vec<Spanned<String>>>,
    mode: Option<Spanned<String>>,
}

const DEFAULT_PROPOSALS: [&str; 2] = ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"];
const DEFAULT_ESP_PROPOSALS: [&str; 2] = ["aes128gcm16", "aes256gcm16"];

/// Turns byte offsets into errors with line numbers.
struct Source<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error<T>(
        &self,
        at: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line(at.span().start)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// A path relative to the configuration file's directory.
    fn path(&self, name: &str) -> PathBuf {
        let dir = self.file.parent().unwrap_or(Path::new(""));
        dir.join(name)
    }

    fn read(&self, name: &Spanned<String>, key: &str) -> Result<Vec<u8>, ConfigError> {
        let path = self.path(name.get_ref());
        std::fs::read(&path).map_err(|e| self.error(name, key, format!("{}: {e}", path.display())))
    }

    /// Where a serde error points, as `connection[1].children[0].name`: the table
    /// headers above the line, and the key on it.
    fn key_at(&self, offset: usize) -> String {
        let line = self.line(offset);
        let mut path = String::new();
        let mut connection = None::<usize>;
        let mut child = 0;
        for text in self.text.lines().take(line) {
            let t = text.trim();
            if t == "[[connection]]" {
                connection = Some(connection.map_or(0, |c| c + 1));
                child = 0;
                path = format!("connection[{}]", connection.unwrap_or(0));
            } else if t == "[[connection.children]]" {
                path = format!("connection[{}].children[{child}]", connection.unwrap_or(0));
                child += 1;
            } else if let Some(table) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                path = match table.strip_prefix("connection.") {
                    Some(sub) => format!("connection[{}].{sub}", connection.unwrap_or(0)),
                    None => table.to_owned(),
                };
            }
        }
        let key = self
            .text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().to_owned())
            .filter(|k| !k.starts_with('['));
        match (path.is_empty(), key) {
            (_, None) => path,
            (true, Some(k)) => k,
            (false, Some(k)) => format!("{path}.{k}"),
        }
    }
}

impl Config {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` names it in errors and anchors relative file names.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let src = Source { text, file: path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            ConfigError {
                file: path.to_path_buf(),
                line: e.span().map(|_| src.line(offset)),
                key: e.span().map(|_| src.key_at(offset)).unwrap_or_default(),
                message: e.message().to_owned(),
            }
        })?;
        let listen = Listen {
            addrs: match raw.listen.addrs {
                Some(addrs) => addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| ip(&src, a, &format!("listen.addrs[{i}]")))
                    .collect::<Result<_, _>>()?,
                None => vec![IpAddr::from([0, 0, 0, 0]), IpAddr::from([0u16; 8])],
            },
            ike_port: raw.listen.ike_port.unwrap_or(500),
            natt_port: raw.listen.natt_port.unwrap_or(4500),
        };
        let ike = IkeSettings {
            cookie_threshold: raw.ike.cookie_threshold.unwrap_or(10),
            half_open_timeout: Duration::from_secs(raw.ike.half_open_timeout.unwrap_or(30)),
        };
        let mut connections: Vec<Connection> = Vec::new();
        for (i, c) in raw.connection.into_iter().enumerate() {
            let conn = connection(&src, c, &format!("connection[{i}]"))?;
            if connections
                .iter()
                .any(|o| o.policy.name == conn.policy.name)
            {
                return Err(ConfigError {
                    file: path.to_path_buf(),
                    line: None,
                    key: format!("connection[{i}].name"),
                    message: format!("duplicate connection name {:?}", conn.policy.name),
                });
            }
            connections.push(conn);
        }
        Ok(Self {
            listen,
            ike,
            connections,
        })
    }
}

fn ip(src: &Source<'_>, s: &Spanned<String>, key: &str) -> Result<IpAddr, ConfigError> {
    s.get_ref()
        .parse()
        .map_err(|_| src.error(s, key, format!("{:?} is not an IP address", s.get_ref())))
}

fn ips(src: &Source<'_>, list: &[Spanned<String>], key: &str) -> Result<Vec<IpAddr>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| ip(src, a, &format!("{key}[{i}]")))
        .collect()
}

fn proposals(
    src: &Source<'_>,
    list: Option<&[Spanned<String>]>,
    defaults: &[&str],
    protocol: ProtocolId,
    key: &str,
) -> Result<Vec<Proposal>, ConfigError> {
    let texts: Vec<String> = match list {
        Some(l) => l.iter().map(|s| s.get_ref().clone()).collect(),
        None => defaults.iter().map(|s| (*s).to_owned()).collect(),
    };
    for (i, t) in texts.iter().enumerate() {
        if let (Err(e), Some(l)) = (proposal::parse(t, protocol), list) {
            return Err(src.error(&l[i], format!("{key}[{i}]"), e.to_string()));
        }
    }
    proposal::parse_all(&texts, protocol).map_err(|e| ConfigError {
        file: src.file.to_path_buf(),
        line: None,
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// `10.1.0.0/24`, `fd00::/64` or a single address, as an any-protocol selector.
fn selector(src: &Source<'_>, s: &Spanned<String>, key: &str) -> Result<TsRange, ConfigError> {
    let bad = || {
        src.error(
            s,
            key,
            format!("{:?} is not an address or CIDR prefix", s.get_ref()),
        )
    };
    let (addr, len) = match s.get_ref().split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().map_err(|_| bad())?)),
        None => (s.get_ref().as_str(), None),
    };
    let addrs = match addr.trim().parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(a) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return Err(bad());
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let start = u32::from(a) & mask;
            AddrRange::V4(start.into(), (start | !mask).into())
        }
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return Err(bad());
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            let start = u128::from(a) & mask;
            AddrRange::V6(start.into(), (start | !mask).into())
        }
    };
    Ok(TsRange {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        addrs,
    })
}

fn selectors(
    src: &Source<'_>,
    list: &[Spanned<String>],
    key: &str,
) -> Result<Vec<TsRange>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| selector(src, s, &format!("{key}[{i}]")))
        .collect()
}

fn identity_at(
    src: &Source<'_>,
    s: &Spanned<String>,
    key: &str,
) -> Result<crate::wire::payload::Identity, ConfigError> {
    identity::parse(s.get_ref()).map_err(|e| src.error(s, key, e.to_string()))
}

fn connection(src: &Source<'_>, c: RawConnection, key: &str) -> Result<Connection, ConfigError> {
    let name = c.name.get_ref().clone();
    let psk = |want: &Spanned<String>, which: &str| -> Result<Secret, ConfigError> {
        let file = c.psk_file.as_ref().ok_or_else(|| {
            src.error(
                want,
                format!("{key}.{which}.auth"),
                "auth = \"psk\" needs psk_file in the connection",
            )
        })?;
        let bytes = src.read(file, &format!("{key}.psk_file"))?;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        let secret = match text.strip_prefix("0x") {
            Some(hex_text) => hex::decode(hex_text).map_err(|_| {
                src.error(
                    file,
                    format!("{key}.psk_file"),
                    "0x-prefixed PSK is not hex",
                )
            })?,
            None => text.as_bytes().to_vec(),
        };
        if secret.is_empty() {
            return Err(src.error(file, format!("{key}.psk_file"), "the PSK file is empty"));
        }
        Ok(Secret::new(secret))
    };
    let local = c.local.get_ref();
    let local_key = format!("{key}.local");
    let local_auth = match local.auth.get_ref().as_str() {
        "psk" => LocalAuth::Psk {
            id: identity_at(src, &local.id, &format!("{local_key}.id"))?,
            psk: psk(&local.auth, "local")?,
        },
        "pubkey" => {
            let missing = |k: &str| {
                src.error(
                    &c.local,
                    format!("{local_key}.{k}"),
                    "required with auth = \"pubkey\"",
                )
            };
            let cert_files = local
                .certs
                .as_ref()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| missing("certs"))?;
            let mut certs = Vec::new();
            for (i, f) in cert_files.iter().enumerate() {
                let k = format!("{local_key}.certs[{i}]");
                let bytes = src.read(f, &k)?;
                certs.extend(
                    read_certificates(&bytes).map_err(|e| src.error(f, &k, e.to_string()))?,
                );
            }
            let key_file = local.key.as_ref().ok_or_else(|| missing("key"))?;
            let k = format!("{local_key}.key");
            let private = PrivateKey::from_pem_or_der(&src.read(key_file, &k)?)
                .map_err(|e| src.error(key_file, &k, e.to_string()))?;
            if !private.matches_certificate(&certs[0]) {
                return Err(src.error(
                    key_file,
                    &k,
                    "this key does not belong to the first certificate in certs",
                ));
            }
            LocalAuth::Pubkey {
                id: identity_at(src, &local.id, &format!("{local_key}.id"))?,
                certs,
                key: Arc::new(private),
            }
        }
        other => {
            return Err(src.error(
                &local.auth,
                format!("{local_key}.auth"),
                format!("{other:?}: expected \"pubkey\" or \"psk\""),
            ));
        }
    };
    let remote = c.remote.get_ref();
    let remote_key = format!("{key}.remote");
    let remote_id = match &remote.id {
        Some(id) if id.get_ref() != "%any" => {
            Some(identity_at(src, id, &format!("{remote_key}.id"))?)
        }
        _ => None,
    };
    let remote_auth = match remote.auth.get_ref().as_str() {
        "psk" => RemoteAuth::Psk {
            id: remote_id,
            psk: psk(&remote.auth, "remote")?,
        },
        "pubkey" => {
            let files = remote
                .cacerts
                .as_ref()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| {
                    src.error(
                        &c.remote,
                        format!("{remote_key}.cacerts"),
                        "required with auth = \"pubkey\"",
                    )
                })?;
            let mut cas = Vec::new();
            for (i, f) in files.iter().enumerate() {
                let k = format!("{remote_key}.cacerts[{i}]");
                let bytes = src.read(f, &k)?;
                cas.extend(read_certificates(&bytes).map_err(|e| src.error(f, &k, e.to_string()))?);
            }
            let anchors = TrustAnchors::new(cas).map_err(|e| {
                src.error(&files[0], format!("{remote_key}.cacerts"), e.to_string())
            })?;
            RemoteAuth::Pubkey {
                id: remote_id,
                anchors: Arc::new(anchors),
            }
        }
        other => {
            return Err(src.error(
                &remote.auth,
                format!("{remote_key}.auth"),
                format!("{other:?}: expected \"pubkey\" or \"psk\""),
            ));
        }
    };
    let mut children: Vec<ChildPolicy> = Vec::new();
    for (i, ch) in c.children.iter().enumerate() {
        let k = format!("{key}.children[{i}]");
        if let Some(mode) = ch.mode.as_ref().filter(|m| m.get_ref() != "tunnel") {
            return Err(src.error(
                mode,
                format!("{k}.mode"),
                format!("{:?}: only \"tunnel\" is supported", mode.get_ref()),
            ));
        }
        if children.iter().any(|o| o.name == *ch.name.get_ref()) {
            return Err(src.error(
                &ch.name,
                format!("{k}.name"),
                format!("duplicate child name {:?}", ch.name.get_ref()),
            ));
        }
        children.push(ChildPolicy {
            name: ch.name.get_ref().clone(),
            local_ts: selectors(src, &ch.local_ts, &format!("{k}.local_ts"))?,
            remote_ts: selectors(src, &ch.remote_ts, &format!("{k}.remote_ts"))?,
            esp_proposals: proposals(
                src,
                ch.esp_proposals.as_deref(),
                &DEFAULT_ESP_PROPOSALS,
                ProtocolId::ESP,
                &format!("{k}.esp_proposals"),
            )?,
        });
    }
    let remote_addrs = ips(src, &c.remote_addrs, &format!("{key}.remote_addrs"))?;
    let start = c.start.as_ref().is_some_and(|s| *s.get_ref());
    if let Some(at) = c
        .start
        .as_ref()
        .filter(|_| start && remote_addrs.is_empty())
    {
        return Err(src.error(
            at,
            format!("{key}.start"),
            "start = true needs remote_addrs",
        ));
    }
    let fragment_size = match &c.fragment_size {
        Some(f) if !(576..=65535).contains(f.get_ref()) => {
            return Err(src.error(
                f,
                format!("{key}.fragment_size"),
                "must be within 576..=65535",
            ));
        }
        Some(f) => *f.get_ref(),
        None => 1280,
    };
    Ok(Connection {
        policy: Arc::new(Policy {
            name,
            local_addrs: ips(src, &c.local_addrs, &format!("{key}.local_addrs"))?,
            remote_addrs,
            proposals: proposals(
                src,
                c.proposals.as_deref(),
                &DEFAULT_PROPOSALS,
                ProtocolId::IKE,
                &format!("{key}.proposals"),
            )?,
            encap: c.encap,
            fragment_size,
            local: local_auth,
            remote: remote_auth,
            children,
        }),
        start,
        remote_port: c.remote_port.unwrap_or(500),
    })
}
