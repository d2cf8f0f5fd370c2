//! The configuration file: TOML shaped like swanctl.conf, parsed straight into the
//! engine's types. Files it names (certificates, keys, PSKs) are read at load time,
//! so every error can name the file, the line and the key. The keys are documented
//! in README "Configuration".

use crate::auth::identity::{self, RemoteId};
use crate::auth::private_key::PrivateKey;
use crate::auth::x509::{TrustAnchors, check_identity, read_certificates};
use crate::crypto::Secret;
use crate::ike::exchange::RetransmitPolicy;
use crate::ike::{
    Action, AddressPool, ChildPolicy, IkeLifetime, Lifetime, Limits, LocalAuth, Policy, RemoteAuth,
    Settings, proposal,
};
use crate::wire::ProtocolId;
use crate::wire::payload::{AddrRange, Identity, Proposal, TsRange};
use serde::Deserialize;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::{Spanned, Value};

/// A configuration error: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{}{message}", file.display(), line_part(*line), key_part(key))]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// The key as a path such as `connection[0].local.id`; empty when the whole file is meant.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn line_part(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn key_part(key: &str) -> String {
    if key.is_empty() {
        ": ".to_owned()
    } else {
        format!(": {key}: ")
    }
}

/// Where a value came from, so checks done later can still name file, line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The configuration file.
    pub file: PathBuf,
    /// The line (1-based).
    pub line: usize,
    /// The key path, such as `connection[0]`.
    pub key: String,
}

impl Origin {
    /// An error about the value at this origin.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: Some(self.line),
            key: self.key.clone(),
            message: message.into(),
        }
    }
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
    /// The data plane: which one, and the userspace one's TUN device and workers.
    pub dataplane: DataplaneSettings,
    /// Where Prometheus scrapes the metrics (`[metrics] listen`); none serves none.
    pub metrics: Option<std::net::SocketAddr>,
    /// Virtual IP pools (`[[pool]]`), which connections' `pools` name.
    pub pools: Vec<AddressPool>,
}

/// Where Child SAs are installed and ESP is sealed and opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneMode {
    /// esptun's own workers, on a TUN device: tunnel mode only.
    Userspace,
    /// The kernel's IPsec (XFRM): tunnel and transport mode.
    Xfrm,
}

/// Which data plane, and the userspace one's TUN device and ESP workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneSettings {
    /// Which data plane carries the Child SAs.
    pub mode: DataplaneMode,
    /// The TUN device's name.
    pub tun: String,
    /// Worker threads (one TUN queue and one socket per family each).
    pub workers: usize,
    /// The MTU of the path to peers; the TUN's MTU leaves room for ESP inside it.
    pub path_mtu: u16,
    /// Packets the inbound replay window spans.
    pub replay_window: u64,
    /// Use virtio-net GSO/GRO on the TUN device when the kernel allows it.
    pub offload: bool,
    /// The routing table esptun owns: its routes into the TUN, and nothing else.
    pub route_table: u32,
    /// The firewall mark on esptun's own sockets, whose packets skip `route_table`.
    pub fwmark: u32,
}

/// Path MTUs whose TUN MTU (after the ESP overhead) still carries IPv6 (1280).
const PATH_MTUS: std::ops::RangeInclusive<u16> = 1400..=65535;
/// RFC 4303 §3.4.3 asks for at least 32; bigger windows tolerate more reordering.
const REPLAY_WINDOWS: std::ops::RangeInclusive<u64> = 32..=65536;
/// The kernel's own tables: compat (252), default, main, local; 0 names none.
const RESERVED_TABLES: std::ops::RangeInclusive<u32> = 252..=255;

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
#[derive(Debug, Clone, PartialEq)]
pub struct IkeSettings {
    /// Half-open IKE SAs plus recent IKE_SA_INIT requests before COOKIEs are demanded.
    pub cookie_threshold: usize,
    /// Half-open IKE SAs at which further IKE_SA_INIT requests are dropped.
    pub half_open_limit: usize,
    /// Half-open IKE SAs one source (IPv4 address, IPv6 /64) may hold after echoing a COOKIE.
    pub half_open_per_source: usize,
    /// How long a half-open IKE SA lives.
    pub half_open_timeout: Duration,
    /// When our requests are resent, and when we give up on the peer.
    pub retransmit: RetransmitPolicy,
}

/// One connection: the engine's policy plus what the daemon does with it.
#[derive(Debug)]
pub struct Connection {
    /// The policy handed to the engine.
    pub policy: Arc<Policy>,
    /// Initiate at start-up: a child's `start_action` is `"start"` (which `start = true`
    /// sets for all of them).
    pub start: bool,
    /// The peer's IKE port.
    pub remote_port: u16,
    /// The `[[connection]]` table, for errors found after loading (e.g. when initiating).
    pub origin: Origin,
    /// A command run when an IKE SA of the connection comes up and when it goes,
    /// told about it in its environment (`ESPTUN_*`), e.g. to apply the DNS servers
    /// a gateway named.
    pub updown: Option<PathBuf>,
    /// SHA-256 over the `[[connection]]` table (as parsed: layout and comments do not
    /// count) and the certificates and PSK it reads: a reload replaces the connection
    /// when this changed, and leaves it and its SAs alone when not.
    pub fingerprint: [u8; 32],
    /// `legacy_windows_proposals = true`: SHA-1 integrity and MODP-1024 are allowed.
    pub legacy_windows_proposals: bool,
    /// The weak algorithms its IKE and ESP proposals use (empty without the opt-in,
    /// which is needed for any), for the warning at start.
    pub weak_algorithms: Vec<String>,
}

/// A list the user wrote, with the span of the whole list (for "must not be empty").
type List = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    ike: RawIke,
    #[serde(default)]
    connection: Vec<Spanned<RawConnection>>,
    #[serde(default)]
    dataplane: RawDataplane,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    pool: Vec<Spanned<RawPool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    addrs: Spanned<String>,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    mode: Option<Spanned<String>>,
    tun: Option<Spanned<String>>,
    workers: Option<Spanned<usize>>,
    path_mtu: Option<Spanned<u16>>,
    replay_window: Option<Spanned<u64>>,
    offload: Option<bool>,
    route_table: Option<Spanned<u32>>,
    fwmark: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    addrs: Option<List>,
    ike_port: Option<u16>,
    natt_port: Option<Spanned<u16>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIke {
    cookie_threshold: Option<Spanned<usize>>,
    half_open_limit: Option<Spanned<usize>>,
    half_open_per_source: Option<Spanned<usize>>,
    half_open_timeout: Option<Spanned<Value>>,
    retransmit_timeout: Option<Spanned<Value>>,
    retransmit_base: Option<Spanned<f64>>,
    retransmit_tries: Option<Spanned<u32>>,
    retransmit_jitter: Option<Spanned<u8>>,
    retransmit_limit: Option<Spanned<Value>>,
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
    proposals: Option<List>,
    start: Option<Spanned<bool>>,
    #[serde(default)]
    encap: bool,
    fragment_size: Option<Spanned<usize>>,
    psk_file: Option<Spanned<String>>,
    rekey_time: Option<Spanned<Value>>,
    over_time: Option<Spanned<Value>>,
    rand_time: Option<Spanned<Value>>,
    dpd_delay: Option<Spanned<Value>>,
    keyingtries: Option<u32>,
    local: Spanned<RawLocal>,
    remote: Spanned<RawRemote>,
    #[serde(default)]
    children: Vec<Spanned<RawChild>>,
    #[serde(default)]
    pools: Vec<Spanned<String>>,
    #[serde(default)]
    vips: Vec<Spanned<String>>,
    mobike: Option<bool>,
    updown: Option<Spanned<String>>,
    legacy_windows_proposals: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    auth: Spanned<String>,
    id: Spanned<String>,
    certs: Option<List>,
    key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    auth: Spanned<String>,
    id: Option<Spanned<String>>,
    cacerts: Option<List>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    name: Spanned<String>,
    #[serde(default)]
    local_ts: Vec<Spanned<String>>,
    #[serde(default)]
    remote_ts: Vec<Spanned<String>>,
    esp_proposals: Option<List>,
    mode: Option<Spanned<String>>,
    per_resource_sas: Option<Spanned<bool>>,
    spread_inbound: Option<Spanned<bool>>,
    rekey_time: Option<Spanned<Value>>,
    life_time: Option<Spanned<Value>>,
    rand_time: Option<Spanned<Value>>,
    rekey_bytes: Option<u64>,
    life_bytes: Option<Spanned<u64>>,
    rekey_packets: Option<u64>,
    life_packets: Option<Spanned<u64>>,
    start_action: Option<Spanned<String>>,
    dpd_action: Option<Spanned<String>>,
    close_action: Option<Spanned<String>>,
}

const DEFAULT_PROPOSALS: [&str; 2] = ["aes128gcm16-prfsha256-x25519", "aes256-sha256-modp2048"];
const DEFAULT_ESP_PROPOSALS: [&str; 2] = ["aes128gcm16", "aes256gcm16"];
/// RFC 7383 fragments below the IPv4 minimum reassembly size would not survive every path.
const FRAGMENT_SIZES: std::ops::RangeInclusive<usize> = 576..=65535;

/// The shortest PSK accepted: 128 bits, were it random.
const MIN_PSK_LEN: usize = 16;
/// The bound on every duration, so that no deadline computed from one can overflow
/// (and it fits in u64 nanoseconds); no lifetime or timeout needs more.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);
/// swanctl's default Child SA rekey_time.
const CHILD_REKEY_TIME: Duration = Duration::from_secs(3600);
/// The engine computes each retransmission wait before `retransmit_limit` caps it,
/// and a Duration holds less than 2^64 s (1.8e19 s).
const MAX_UNCAPPED_WAIT_SECS: f64 = 1e18;
/// Enough for any peer worth waiting for; the bound keeps the engine's transmission
/// count far from overflow even with tiny waits.
const MAX_RETRANSMIT_TRIES: u32 = 100;

/// swanctl's values for each action key, the default first.
const START_ACTIONS: &[(&str, Action)] = &[
    ("none", Action::None),
    ("start", Action::Start),
    ("trap", Action::Trap),
];
const DPD_ACTIONS: &[(&str, Action)] = &[
    ("clear", Action::None),
    ("restart", Action::Start),
    ("trap", Action::Trap),
    ("none", Action::None),
];
const CLOSE_ACTIONS: &[(&str, Action)] = &[
    ("none", Action::None),
    ("clear", Action::None),
    ("trap", Action::Trap),
    ("start", Action::Start),
];

/// The text being parsed, to turn byte offsets into lines and resolve file names.
struct Source<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn origin(&self, span: Range<usize>, key: impl Into<String>) -> Origin {
        Origin {
            file: self.file.to_path_buf(),
            line: self.line(span.start),
            key: key.into(),
        }
    }

    fn error<T>(
        &self,
        at: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.origin(at.span(), key).error(message)
    }

    /// A file named in the configuration, relative to the configuration's directory.
    fn path(&self, name: &Spanned<String>) -> PathBuf {
        self.file
            .parent()
            .unwrap_or(Path::new(""))
            .join(name.get_ref())
    }

    /// Reads a file named in the configuration.
    fn read(&self, name: &Spanned<String>, key: &str) -> Result<Vec<u8>, ConfigError> {
        let path = self.path(name);
        std::fs::read(&path).map_err(|e| self.error(name, key, format!("{}: {e}", path.display())))
    }

    /// Reads a private key or PSK file, refusing one that group or others may open
    /// (as ssh does), since the key leaks to any local user.
    fn read_secret(&self, name: &Spanned<String>, key: &str) -> Result<Secret, ConfigError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let path = self.path(name);
        let failed = |e: std::io::Error| self.error(name, key, format!("{}: {e}", path.display()));
        let mut file = std::fs::File::open(&path).map_err(failed)?;
        let mode = file.metadata().map_err(failed)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(self.error(
                name,
                key,
                format!(
                    "{} is open to group or others (mode {mode:04o}): run chmod 600 {}",
                    path.display(),
                    path.display()
                ),
            ));
        }
        let mut bytes = Vec::new();
        let read = file.read_to_end(&mut bytes);
        let bytes = Secret::new(bytes);
        read.map_err(failed)?;
        Ok(bytes)
    }

    /// A toml error with the key path recovered from its span, since serde's own
    /// messages name only the last key (or, for a missing key, none at all).
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let Some(span) = e.span() else {
            return ConfigError {
                file: self.file.to_path_buf(),
                line: None,
                key: String::new(),
                message: e.message().to_owned(),
            };
        };
        // A file with a syntax error still yields a partial tree; a key the error
        // made unreadable (or a duplicate, which is dropped) gets no path, only a line.
        let (tree, _) = DeTable::parse_recoverable(self.text);
        let mut key = table_path(tree.get_ref(), span.start, "").unwrap_or_default();
        let mut message = e.message().to_owned();
        if let Some(missing) = backticked(&message, "missing field ") {
            // The span is the table; the user needs the key to add.
            key = join(&key, &missing);
            message = "required key is missing".to_owned();
        } else if let Some(rest) = message.strip_prefix("unknown field ") {
            message = format!("unknown key {rest}");
        }
        self.origin(span, key).error(message)
    }
}

/// `word` in "prefix `word`".
fn backticked(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    Some(rest.split_once('`')?.0.to_owned())
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The path of the innermost key or value at `offset`. Keys under a `[table]`
/// header lie outside the header's span, so every table is searched, not only
/// those whose span holds the offset.
fn table_path(table: &DeTable<'_>, offset: usize, prefix: &str) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        let path = join(prefix, k.get_ref());
        value_path(v, offset, &path).or_else(|| k.span().contains(&offset).then_some(path))
    })
}

fn value_path(v: &Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
    let inner = match v.get_ref() {
        DeValue::Table(t) => table_path(t, offset, path),
        DeValue::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, item)| value_path(item, offset, &format!("{path}[{i}]"))),
        _ => None,
    };
    inner.or_else(|| v.span().contains(&offset).then(|| path.to_owned()))
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        // The same file as plain values, each connection's written out canonically.
        let tables: Vec<String> = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|mut t| t.remove("connection"))
            .and_then(|v| match v {
                Value::Array(a) => Some(a.iter().map(ToString::to_string).collect()),
                _ => None,
            })
            .unwrap_or_default();
        let listen = listen(&src, raw.listen)?;
        let ike = ike_settings(&src, &raw.ike)?;
        // Before the connections, whose children's mode it decides.
        let dataplane = dataplane(&src, raw.dataplane)?;
        let mut pools: Vec<AddressPool> = Vec::new();
        for (i, p) in raw.pool.iter().enumerate() {
            let pool = pool(&src, p.get_ref(), &format!("pool[{i}]"), &pools)?;
            pools.push(pool);
        }
        let mut connections: Vec<Connection> = Vec::new();
        for (i, c) in raw.connection.iter().enumerate() {
            let key = format!("connection[{i}]");
            let name = &c.get_ref().name;
            if connections.iter().any(|o| o.policy.name == *name.get_ref()) {
                return Err(src.error(
                    name,
                    format!("{key}.name"),
                    format!("duplicate connection name {:?}", name.get_ref()),
                ));
            }
            let table = tables.get(i).map_or("", String::as_str);
            let connection = connection(&src, c, key.clone(), table, &pools, dataplane.mode)?;
            overlap(&src, c.get_ref(), &key, &connection, &connections)?;
            connections.push(connection);
        }
        Ok(Self {
            listen,
            ike,
            connections,
            dataplane,
            metrics: raw
                .metrics
                .listen
                .map(|at| {
                    at.get_ref().parse().map_err(|_| {
                        src.error(
                            &at,
                            "metrics.listen",
                            format!(
                                "{:?} is not an address and port (\"127.0.0.1:9469\", \"[::1]:9469\")",
                                at.get_ref()
                            ),
                        )
                    })
                })
                .transpose()?,
            pools,
        })
    }
}

/// One `[[pool]]`: a CIDR prefix (without its network address, nor an IPv4
/// broadcast address), a range `FIRST-LAST` or one address, and DNS servers.
fn pool(
    src: &Source<'_>,
    raw: &RawPool,
    key: &str,
    earlier: &[AddressPool],
) -> Result<AddressPool, ConfigError> {
    let name = raw.name.get_ref();
    if earlier.iter().any(|p| p.name == *name) {
        return Err(src.error(
            &raw.name,
            format!("{key}.name"),
            format!("duplicate pool name {name:?}"),
        ));
    }
    let at = &raw.addrs;
    let text = at.get_ref().trim();
    let bad = || {
        src.error(
            at,
            format!("{key}.addrs"),
            format!("{text:?} is not a CIDR prefix, FIRST-LAST range or address (\"10.3.0.0/24\", \"10.3.0.10-10.3.0.99\", \"fd00:3::/112\")"),
        )
    };
    let addrs = match text.split_once('-') {
        Some((first, last)) => {
            match (
                first.trim().parse::<IpAddr>(),
                last.trim().parse::<IpAddr>(),
            ) {
                (Ok(IpAddr::V4(s)), Ok(IpAddr::V4(e))) if s <= e => AddrRange::V4(s, e),
                (Ok(IpAddr::V6(s)), Ok(IpAddr::V6(e))) if s <= e => AddrRange::V6(s, e),
                _ => return Err(bad()),
            }
        }
        None => {
            let range = selector(src, at, &format!("{key}.addrs"))?.addrs;
            // A prefix's first address names the network (and, in IPv4, its last
            // the broadcast): no client may have them, unless that is all there is.
            match range {
                AddrRange::V4(s, e) if text.contains('/') && u32::from(e) - u32::from(s) >= 3 => {
                    AddrRange::V4((u32::from(s) + 1).into(), (u32::from(e) - 1).into())
                }
                AddrRange::V6(s, e) if text.contains('/') && u128::from(e) - u128::from(s) >= 1 => {
                    AddrRange::V6((u128::from(s) + 1).into(), e)
                }
                other => other,
            }
        }
    };
    Ok(AddressPool {
        name: name.clone(),
        addrs,
        dns: ips(src, &raw.dns, &format!("{key}.dns"))?,
    })
}

/// A connection's `pools` (each must be a `[[pool]]`) and `vips` (at most one per
/// family, and only for the userspace data plane, which puts them on its TUN); a
/// connection is a gateway to its peer or its client, not both.
fn virtual_ips(
    src: &Source<'_>,
    raw: &RawConnection,
    key: &str,
    pools: &[AddressPool],
    dataplane: DataplaneMode,
) -> Result<(Vec<String>, Vec<IpAddr>), ConfigError> {
    if let (DataplaneMode::Xfrm, Some(first)) = (dataplane, raw.vips.first()) {
        return Err(src.error(
            first,
            format!("{key}.vips[0]"),
            "asking for virtual IPs needs dataplane.mode = \"userspace\": in xfrm mode esptun has no TUN to put them on",
        ));
    }
    for (i, name) in raw.pools.iter().enumerate() {
        if !pools.iter().any(|p| p.name == *name.get_ref()) {
            return Err(src.error(
                name,
                format!("{key}.pools[{i}]"),
                format!("no [[pool]] is named {:?}", name.get_ref()),
            ));
        }
    }
    let vips = ips(src, &raw.vips, &format!("{key}.vips"))?;
    for (i, vip) in vips.iter().enumerate() {
        let at = &raw.vips[i];
        if vips[..i].iter().any(|v| v.is_ipv4() == vip.is_ipv4()) {
            return Err(src.error(at, format!("{key}.vips[{i}]"), "one virtual IP per family"));
        }
        if let Some(first) = raw.pools.first() {
            return Err(src.error(
                at,
                format!("{key}.vips[{i}]"),
                format!(
                    "a connection either leases virtual IPs (pools, line {}) or asks for them (vips), not both",
                    src.line(first.span().start)
                ),
            ));
        }
    }
    // The dynamic side's selectors are the virtual IPs: other ones would let the
    // client claim addresses that are not its own, or never match its packets.
    type Side = for<'a> fn(&'a RawChild) -> &'a Vec<Spanned<String>>;
    let virtual_side: Option<(&str, &str, Side, &str)> = if !raw.pools.is_empty() {
        Some((
            "pools",
            "remote_ts",
            |c| &c.remote_ts,
            "the virtual IPs leased to the client",
        ))
    } else if !vips.is_empty() {
        Some((
            "vips",
            "local_ts",
            |c| &c.local_ts,
            "the virtual IPs the gateway leases us",
        ))
    } else {
        None
    };
    if let Some((by, side, selectors, why)) = virtual_side {
        for (j, child) in raw.children.iter().enumerate() {
            if let Some(first) = selectors(child.get_ref()).first() {
                return Err(src.error(
                    first,
                    format!("{key}.children[{j}].{side}[0]"),
                    format!("must be left out: with {by} it is {why}"),
                ));
            }
        }
    }
    Ok((
        raw.pools.iter().map(|p| p.get_ref().clone()).collect(),
        vips,
    ))
}

/// Refuses a child with `mode = "transport"` (at key `key`) that the data plane, its
/// connection's virtual IPs or its selectors (`ts`, local and remote) rule out.
fn transport_child(
    src: &Source<'_>,
    c: &RawConnection,
    ch: &RawChild,
    mode: &Spanned<String>,
    key: &str,
    dataplane: DataplaneMode,
    ts: (&[TsRange], &[TsRange]),
) -> Result<(), ConfigError> {
    let mode_key = format!("{key}.mode");
    if dataplane == DataplaneMode::Userspace {
        return Err(src.error(
            mode,
            mode_key,
            "\"transport\" needs dataplane.mode = \"xfrm\": the userspace data plane only does tunnel mode",
        ));
    }
    // Transport mode carries the hosts' own addresses; a virtual IP is an inner address.
    let virtual_ips = [("pools", &c.pools), ("vips", &c.vips)];
    if let Some((by, first)) = virtual_ips
        .iter()
        .find_map(|(by, list)| Some((by, list.first()?)))
    {
        return Err(src.error(
            mode,
            mode_key,
            format!(
                "\"transport\" cannot go with {by} (line {}): virtual IPs need tunnel mode",
                src.line(first.span().start)
            ),
        ));
    }
    let is_host = |t: &TsRange| match t.addrs {
        AddrRange::V4(a, b) => a == b,
        AddrRange::V6(a, b) => a == b,
    };
    let sides = [
        ("local_ts", &ch.local_ts, ts.0, "our"),
        ("remote_ts", &ch.remote_ts, ts.1, "the peer's"),
    ];
    for (side, raw, parsed, whose) in sides {
        if let Some(i) = parsed.iter().position(|t| !is_host(t)) {
            return Err(src.error(
                &raw[i],
                format!("{key}.{side}[{i}]"),
                format!(
                    "{:?} is not a single address: mode = \"transport\" protects host-to-host \
                     traffic (leave {side} out for {whose} IKE address)",
                    raw[i].get_ref()
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a child whose selectors overlap a child of an earlier connection (both
/// sides; an empty local side overlaps everything, an empty remote side is the
/// peer's address, unknown here): a packet in the overlap would go to whichever
/// peer's SA came up last.
fn overlap(
    src: &Source<'_>,
    raw: &RawConnection,
    key: &str,
    new: &Connection,
    earlier: &[Connection],
) -> Result<(), ConfigError> {
    let meets = |a: &[TsRange], b: &[TsRange]| {
        a.is_empty() || b.is_empty() || !crate::ike::ts::narrow(a, b).is_empty()
    };
    for (j, child) in new.policy.children.iter().enumerate() {
        for (k, remote) in child.remote_ts.iter().enumerate() {
            for other in earlier {
                let Some(o) = other.policy.children.iter().find(|o| {
                    !o.remote_ts.is_empty()
                        && meets(&child.local_ts, &o.local_ts)
                        && meets(std::slice::from_ref(remote), &o.remote_ts)
                }) else {
                    continue;
                };
                return Err(src.error(
                    &raw.children[j].get_ref().remote_ts[k],
                    format!("{key}.children[{j}].remote_ts[{k}]"),
                    format!(
                        "overlaps the selectors of connection {:?} child {:?}: a packet \
                         in both would go to whichever peer's SA came up last; narrow one",
                        other.policy.name, o.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn ike_settings(src: &Source<'_>, raw: &RawIke) -> Result<IkeSettings, ConfigError> {
    let defaults = RetransmitPolicy::default();
    let timeout = duration(
        src,
        raw.retransmit_timeout.as_ref(),
        "ike.retransmit_timeout",
    )?
    .unwrap_or(defaults.timeout);
    if let Some(at) = raw
        .retransmit_timeout
        .as_ref()
        .filter(|_| timeout.is_zero())
    {
        return Err(src.error(at, "ike.retransmit_timeout", "must be above 0"));
    }
    let base = raw
        .retransmit_base
        .as_ref()
        .map_or(defaults.base, |b| *b.get_ref());
    if let Some(at) = raw
        .retransmit_base
        .as_ref()
        .filter(|_| !(1.0..).contains(&base))
    {
        return Err(src.error(at, "ike.retransmit_base", "must be at least 1"));
    }
    let tries = raw
        .retransmit_tries
        .as_ref()
        .map_or(defaults.tries, |t| *t.get_ref());
    if let Some(at) = raw
        .retransmit_tries
        .as_ref()
        .filter(|_| tries > MAX_RETRANSMIT_TRIES)
    {
        return Err(src.error(
            at,
            "ike.retransmit_tries",
            format!("must be at most {MAX_RETRANSMIT_TRIES}"),
        ));
    }
    let longest = timeout.as_secs_f64() * base.powi(i32::try_from(tries).unwrap_or(i32::MAX));
    let blame = [
        raw.retransmit_tries
            .as_ref()
            .map(|t| (t.span(), "ike.retransmit_tries")),
        raw.retransmit_base
            .as_ref()
            .map(|b| (b.span(), "ike.retransmit_base")),
        raw.retransmit_timeout
            .as_ref()
            .map(|t| (t.span(), "ike.retransmit_timeout")),
    ];
    // The defaults are far below the bound, so one of these was given.
    if longest > MAX_UNCAPPED_WAIT_SECS
        && let Some((span, key)) = blame.into_iter().flatten().next()
    {
        return Err(src.origin(span, key).error(format!(
            "retransmit_timeout × retransmit_base^retransmit_tries is more than {MAX_UNCAPPED_WAIT_SECS:e} s, \
             a wait the engine cannot compute even when retransmit_limit caps it"
        )));
    }
    let jitter_percent = match &raw.retransmit_jitter {
        Some(j) if *j.get_ref() > 100 => {
            return Err(src.error(j, "ike.retransmit_jitter", "must be within 0..=100"));
        }
        Some(j) => *j.get_ref(),
        None => defaults.jitter_percent,
    };
    // strongSwan's 0 for no limit; the bound every duration has is as good as none.
    let limit = duration(src, raw.retransmit_limit.as_ref(), "ike.retransmit_limit")?.map_or(
        defaults.limit,
        |l| if l.is_zero() { MAX_DURATION } else { l },
    );
    let engine = Settings::default();
    let at_least_one = |value: &Option<Spanned<usize>>, key: &str, default: usize| match value {
        Some(v) if *v.get_ref() == 0 => Err(src.error(v, key, "must be at least 1")),
        Some(v) => Ok(*v.get_ref()),
        None => Ok(default),
    };
    let half_open_limit = at_least_one(
        &raw.half_open_limit,
        "ike.half_open_limit",
        engine.half_open_limit,
    )?;
    let half_open_per_source = at_least_one(
        &raw.half_open_per_source,
        "ike.half_open_per_source",
        engine.half_open_per_source,
    )?;
    let cookie_threshold = raw
        .cookie_threshold
        .as_ref()
        .map_or(engine.cookie_threshold, |c| *c.get_ref());
    // COOKIEs must come on before the limit drops everyone, or they never help.
    if cookie_threshold >= half_open_limit {
        let blame = [
            raw.cookie_threshold
                .as_ref()
                .map(|c| (c.span(), "ike.cookie_threshold")),
            raw.half_open_limit
                .as_ref()
                .map(|l| (l.span(), "ike.half_open_limit")),
        ];
        if let Some((span, key)) = blame.into_iter().flatten().next() {
            return Err(src.origin(span, key).error(format!(
                "cookie_threshold ({cookie_threshold}) must be below half_open_limit ({half_open_limit})"
            )));
        }
    }
    let half_open_timeout = duration(src, raw.half_open_timeout.as_ref(), "ike.half_open_timeout")?
        .unwrap_or(engine.half_open_timeout);
    if let Some(at) = raw
        .half_open_timeout
        .as_ref()
        .filter(|_| half_open_timeout.is_zero())
    {
        return Err(src.error(at, "ike.half_open_timeout", "must be above 0"));
    }
    Ok(IkeSettings {
        cookie_threshold,
        half_open_limit,
        half_open_per_source,
        half_open_timeout,
        retransmit: RetransmitPolicy {
            timeout,
            base,
            tries,
            jitter_percent,
            limit,
        },
    })
}

/// swanctl's time forms: seconds as a number (fractions allowed, for
/// `retransmit_timeout = 0.5`) or a string with a unit; at most [`MAX_DURATION`].
fn duration(
    src: &Source<'_>,
    value: Option<&Spanned<Value>>,
    key: &str,
) -> Result<Option<Duration>, ConfigError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let secs = match value.get_ref() {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::String(s) => seconds(s),
        _ => None,
    };
    match secs {
        Some(s) if (0.0..=MAX_DURATION.as_secs_f64()).contains(&s) => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) if s > 0.0 => Err(src.error(
            value,
            key,
            format!(
                "{} is more than {}d (10 years)",
                value.get_ref(),
                MAX_DURATION.as_secs() / 86_400
            ),
        )),
        _ => Err(src.error(
            value,
            key,
            format!(
                "{} is not a duration: expected seconds (30 or 0.5) or a string with s, m, h or d \
                 (\"90s\", \"30m\", \"1h\", \"2d\")",
                value.get_ref()
            ),
        )),
    }
}

/// `"90s"`, `"30m"`, `"1h"`, `"2d"` or `"90"` in seconds.
fn seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let unit_at = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn dataplane(src: &Source<'_>, raw: RawDataplane) -> Result<DataplaneSettings, ConfigError> {
    let mode = match raw.mode {
        None => DataplaneMode::Userspace,
        Some(m) => match m.get_ref().as_str() {
            "userspace" => DataplaneMode::Userspace,
            "xfrm" => DataplaneMode::Xfrm,
            other => {
                return Err(src.error(
                    &m,
                    "dataplane.mode",
                    format!("{other:?}: expected \"userspace\" or \"xfrm\""),
                ));
            }
        },
    };
    let tun = match raw.tun {
        // IFNAMSIZ is 16 with the terminating NUL.
        Some(t)
            if t.get_ref().is_empty()
                || t.get_ref().len() > 15
                || t.get_ref().contains(['/', ' ']) =>
        {
            return Err(src.error(
                &t,
                "dataplane.tun",
                "must be an interface name of 1 to 15 characters without '/' or spaces",
            ));
        }
        Some(t) => t.into_inner(),
        None => "esptun0".to_owned(),
    };
    let workers = match raw.workers {
        Some(w) if *w.get_ref() == 0 || *w.get_ref() > 256 => {
            return Err(src.error(&w, "dataplane.workers", "must be 1 to 256"));
        }
        Some(w) => w.into_inner(),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let path_mtu = match raw.path_mtu {
        Some(m) if !PATH_MTUS.contains(m.get_ref()) => {
            return Err(src.error(
                &m,
                "dataplane.path_mtu",
                format!("must be within {}..={}", PATH_MTUS.start(), PATH_MTUS.end()),
            ));
        }
        Some(m) => m.into_inner(),
        None => 1500,
    };
    let replay_window = match raw.replay_window {
        Some(w) if !REPLAY_WINDOWS.contains(w.get_ref()) => {
            return Err(src.error(
                &w,
                "dataplane.replay_window",
                format!(
                    "must be within {}..={}",
                    REPLAY_WINDOWS.start(),
                    REPLAY_WINDOWS.end()
                ),
            ));
        }
        Some(w) => w.into_inner(),
        None => 1024,
    };
    let route_table = match raw.route_table {
        Some(t) if *t.get_ref() == 0 || RESERVED_TABLES.contains(t.get_ref()) => {
            return Err(src.error(
                &t,
                "dataplane.route_table",
                "must be 1 to 4294967295 and not one of the kernel's tables 252 to 255",
            ));
        }
        Some(t) => t.into_inner(),
        None => 4500,
    };
    let fwmark = match raw.fwmark {
        // Unmarked packets carry mark 0: they must not count as esptun's.
        Some(m) if *m.get_ref() == 0 => {
            return Err(src.error(&m, "dataplane.fwmark", "must not be 0"));
        }
        Some(m) => m.into_inner(),
        None => 0x45,
    };
    Ok(DataplaneSettings {
        mode,
        tun,
        workers,
        path_mtu,
        replay_window,
        offload: raw.offload.unwrap_or(true),
        route_table,
        fwmark,
    })
}

fn listen(src: &Source<'_>, raw: RawListen) -> Result<Listen, ConfigError> {
    let addrs = match &raw.addrs {
        Some(list) if list.get_ref().is_empty() => {
            return Err(src.error(
                list,
                "listen.addrs",
                "needs at least one address (omit it for both wildcards)",
            ));
        }
        Some(list) => ips(src, list.get_ref(), "listen.addrs")?,
        None => vec![IpAddr::from([0, 0, 0, 0]), IpAddr::from([0u16; 8])],
    };
    let ike_port = raw.ike_port.unwrap_or(500);
    let natt_port = match &raw.natt_port {
        Some(p) if *p.get_ref() == ike_port => {
            return Err(src.error(p, "listen.natt_port", "must differ from ike_port"));
        }
        Some(p) => *p.get_ref(),
        None => 4500,
    };
    Ok(Listen {
        addrs,
        ike_port,
        natt_port,
    })
}

/// The IKE SA's lifetime as swanctl derives it: `over_time` 10 % of `rekey_time`,
/// `rand_time` as long as `over_time`; `rekey_time = 0` never rekeys.
fn ike_lifetime(
    src: &Source<'_>,
    c: &Spanned<RawConnection>,
    key: &str,
) -> Result<IkeLifetime, ConfigError> {
    let raw = c.get_ref();
    // The engine's default is swanctl's.
    let rekey = duration(src, raw.rekey_time.as_ref(), &format!("{key}.rekey_time"))?
        .or(IkeLifetime::default().rekey_time)
        .unwrap_or_default();
    let over = duration(src, raw.over_time.as_ref(), &format!("{key}.over_time"))?
        .unwrap_or_else(|| Duration::from_nanos(nanos(rekey).div_ceil(10)));
    if let Some(at) = raw
        .over_time
        .as_ref()
        .filter(|_| over.is_zero() && !rekey.is_zero())
    {
        return Err(src.error(
            at,
            format!("{key}.over_time"),
            "must be above 0: it is the time a rekeying gets before the IKE SA ends",
        ));
    }
    let rand = rand_time(
        src,
        raw.rand_time.as_ref(),
        &format!("{key}.rand_time"),
        rekey,
        (over, "over_time"),
        raw.over_time.as_ref().map_or(c.span(), Spanned::span),
    )?;
    Ok(IkeLifetime {
        rekey_time: (!rekey.is_zero()).then_some(rekey),
        over_time: over,
        rand_time: rand,
    })
}

/// A child's lifetimes (see [`limit`]) and `rand_time`, by default the time between
/// its soft and hard limits.
fn child_lifetime(
    src: &Source<'_>,
    ch: &Spanned<RawChild>,
    key: &str,
) -> Result<(Lifetime, Duration), ConfigError> {
    let raw = ch.get_ref();
    let time = |value: &Option<Spanned<Value>>, name: &str| {
        duration(src, value.as_ref(), &format!("{key}.{name}")).map(|d| d.map(nanos))
    };
    let life_time =
        time(&raw.life_time, "life_time")?.zip(raw.life_time.as_ref().map(Spanned::span));
    let (soft_time, hard_time) = limit(
        src,
        key,
        "time",
        (time(&raw.rekey_time, "rekey_time")?, life_time),
        nanos(CHILD_REKEY_TIME),
        |n| Duration::from_nanos(n).as_secs_f64().to_string(),
    )?;
    let count = |life: &Option<Spanned<u64>>| life.as_ref().map(|l| (*l.get_ref(), l.span()));
    let (soft_bytes, hard_bytes) = limit(
        src,
        key,
        "bytes",
        (raw.rekey_bytes, count(&raw.life_bytes)),
        0,
        |n| n.to_string(),
    )?;
    let (soft_packets, hard_packets) = limit(
        src,
        key,
        "packets",
        (raw.rekey_packets, count(&raw.life_packets)),
        0,
        |n| n.to_string(),
    )?;
    let rand = rand_time(
        src,
        raw.rand_time.as_ref(),
        &format!("{key}.rand_time"),
        Duration::from_nanos(soft_time),
        (
            Duration::from_nanos(hard_time.saturating_sub(soft_time)),
            "life_time − rekey_time",
        ),
        raw.life_time.as_ref().map_or(ch.span(), Spanned::span),
    )?;
    let some = |v: u64| (v > 0).then_some(v);
    let lifetime = Lifetime {
        soft: Limits {
            time: some(soft_time).map(Duration::from_nanos),
            bytes: some(soft_bytes),
            packets: some(soft_packets),
        },
        hard: Limits {
            time: some(hard_time).map(Duration::from_nanos),
            bytes: some(hard_bytes),
            packets: some(hard_packets),
        },
    };
    Ok((lifetime, rand))
}

/// One kind of Child SA limit, `rekey_X` (soft) and `life_X` (hard, with where it
/// was written), 0 for none, as swanctl derives them: an absent soft limit is the
/// hard one / 1.1 (or `default_rekey` without either), an absent hard limit the soft
/// one + 10 %. The engine rekeys at the soft limit, so a hard one needs a soft one
/// below it, or the Child SA would end without a rekey ever being tried.
fn limit(
    src: &Source<'_>,
    key: &str,
    name: &str,
    (rekey, life): (Option<u64>, Option<(u64, Range<usize>)>),
    default_rekey: u64,
    show: fn(u64) -> String,
) -> Result<(u64, u64), ConfigError> {
    let soft = match (rekey, &life) {
        (Some(soft), _) => soft,
        (None, Some((hard, _))) => hard - hard.div_ceil(11),
        (None, None) => default_rekey,
    };
    let Some((hard, at)) = life else {
        // Rounded up so that it exceeds even a tiny soft limit; too large to count is none.
        return Ok((soft, soft.checked_add(soft.div_ceil(10)).unwrap_or(0)));
    };
    let error = |message: String| {
        src.origin(at.clone(), format!("{key}.life_{name}"))
            .error(message)
    };
    if hard > 0 && soft == 0 {
        return Err(error(format!(
            "needs a rekey_{name} above 0: the Child SA must be rekeyed before life_{name} ends it"
        )));
    }
    if hard > 0 && soft >= hard {
        return Err(error(format!("must exceed rekey_{name} ({})", show(soft))));
    }
    Ok((soft, hard))
}

/// `rand_time`, or its swanctl default (a duration and what it is). A rekey falls
/// due a random part of it before `rekey`, so it must stay below `rekey`, or a rekey
/// could fall due at once; a default that does not is blamed on `default_at`, the
/// key it comes from.
fn rand_time(
    src: &Source<'_>,
    given: Option<&Spanned<Value>>,
    key: &str,
    rekey: Duration,
    (default, default_is): (Duration, &str),
    default_at: Range<usize>,
) -> Result<Duration, ConfigError> {
    let rand = duration(src, given, key)?.unwrap_or(default);
    if rekey.is_zero() || rand < rekey {
        return Ok(rand);
    }
    let below = format!("must be below rekey_time ({})", rekey.as_secs_f64());
    Err(match given {
        Some(at) => src.error(at, key, below),
        None => src.origin(default_at, key).error(format!(
            "defaults to {default_is} ({}), which {below}: set it",
            rand.as_secs_f64()
        )),
    })
}

/// [`MAX_DURATION`] keeps every duration within u64 nanoseconds.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The action `value` names in `names` (their first when absent). Anything but
/// `Action::None` negotiates on our own, which needs a peer to call.
fn action(
    src: &Source<'_>,
    value: Option<&Spanned<String>>,
    key: &str,
    names: &[(&str, Action)],
    has_peer: bool,
) -> Result<Action, ConfigError> {
    let Some(value) = value else {
        return Ok(names[0].1);
    };
    let name = key.rsplit('.').next().unwrap_or(key);
    match names.iter().find(|(n, _)| n == value.get_ref()) {
        Some((_, Action::None)) => Ok(Action::None),
        Some((_, a)) if has_peer => Ok(*a),
        Some(_) => Err(src.error(
            value,
            key,
            format!("{name} = {:?} needs remote_addrs", value.get_ref()),
        )),
        None => {
            let quoted: Vec<String> = names.iter().map(|(n, _)| format!("{n:?}")).collect();
            Err(src.error(
                value,
                key,
                format!(
                    "{:?}: expected one of {}",
                    value.get_ref(),
                    quoted.join(", ")
                ),
            ))
        }
    }
}

fn ips(src: &Source<'_>, list: &[Spanned<String>], key: &str) -> Result<Vec<IpAddr>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            a.get_ref().parse().map_err(|_| {
                src.error(
                    a,
                    format!("{key}[{i}]"),
                    format!("{:?} is not an IP address", a.get_ref()),
                )
            })
        })
        .collect()
}

/// Proposals numbered from 1 in the order written, or the defaults when the key is absent.
/// One that uses an algorithm only Windows' built-in client still proposes by default
/// (SHA-1 integrity, MODP-1024) needs `legacy`, the connection's opt-in; the names of
/// those in use go into `weak`.
fn proposals(
    src: &Source<'_>,
    list: Option<&List>,
    defaults: &[&str],
    protocol: ProtocolId,
    key: &str,
    legacy: bool,
    weak: &mut Vec<String>,
) -> Result<Vec<Proposal>, ConfigError> {
    let Some(list) = list else {
        let texts: Vec<String> = defaults.iter().map(|s| (*s).to_owned()).collect();
        return Ok(proposal::parse_all(&texts, protocol).expect("default proposals parse"));
    };
    if list.get_ref().is_empty() {
        return Err(src.error(
            list,
            key,
            "needs at least one proposal (omit it for the defaults)",
        ));
    }
    list.get_ref()
        .iter()
        .zip(1..)
        .map(|(text, number)| {
            let at = format!("{key}[{}]", number - 1);
            let p = proposal::parse(text.get_ref(), protocol)
                .map(|p| Proposal { number, ..p })
                .map_err(|e| src.error(text, &at, e.to_string()))?;
            let legacy_ones = proposal::legacy_transforms(&p);
            if !legacy_ones.is_empty() && !legacy {
                return Err(src.error(
                    text,
                    &at,
                    format!(
                        "`{}` uses {}: weak algorithms (SHA-1, a 1024-bit group) that only \
                         Windows' built-in client still proposes by default. Set \
                         legacy_windows_proposals = true in this connection to accept them, \
                         or rather switch the Windows clients to strong proposals \
                         (Set-VpnConnectionIPsecConfiguration, README \"Native \
                         clients\") and leave them out",
                        text.get_ref(),
                        legacy_ones.join(", ")
                    ),
                ));
            }
            for name in legacy_ones {
                if !weak.contains(&name) {
                    weak.push(name);
                }
            }
            Ok(p)
        })
        .collect()
}

/// `10.1.0.0/24`, `fd00::/64` or a single address, as an any-protocol selector.
/// Host bits are masked off, as strongSwan does.
fn selector(src: &Source<'_>, s: &Spanned<String>, key: &str) -> Result<TsRange, ConfigError> {
    let text = s.get_ref().trim();
    let bad = || src.error(s, key, format!("{text:?} is not an address or CIDR prefix"));
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) if l.bytes().all(|b| b.is_ascii_digit()) => {
            (a, Some(l.parse::<u32>().map_err(|_| bad())?))
        }
        Some(_) => return Err(bad()),
        None => (text, None),
    };
    let addrs = match addr.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(a) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return Err(bad());
            }
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            let start = u32::from(a) & mask;
            AddrRange::V4(start.into(), (start | !mask).into())
        }
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return Err(bad());
            }
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
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

fn identity_at(src: &Source<'_>, s: &Spanned<String>, key: &str) -> Result<Identity, ConfigError> {
    identity::parse(s.get_ref()).map_err(|e| src.error(s, key, e.to_string()))
}

/// The PSK file's content without surrounding whitespace; `0x...` is hex for a binary key.
fn read_psk(src: &Source<'_>, file: &Spanned<String>, key: &str) -> Result<Secret, ConfigError> {
    let bytes = src.read_secret(file, key)?;
    let text = bytes.expose().trim_ascii();
    let secret = match text.strip_prefix(b"0x") {
        Some(digits) => Secret::new(
            hex::decode(digits).map_err(|_| src.error(file, key, "0x-prefixed PSK is not hex"))?,
        ),
        None => Secret::from_slice(text),
    };
    if secret.is_empty() {
        return Err(src.error(file, key, "the PSK file is empty"));
    }
    if secret.len() < MIN_PSK_LEN {
        return Err(src.error(
            file,
            key,
            format!(
                "the PSK is {} bytes, fewer than {MIN_PSK_LEN}: one observed exchange lets \
                 anyone test guesses offline; make one with \
                 (umask 077; head -c 32 /dev/urandom | base64 >FILE)",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

/// Certificates from every file in `list`, in order; DER.
fn certificates(src: &Source<'_>, list: &List, key: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let mut certs = Vec::new();
    for (i, f) in list.get_ref().iter().enumerate() {
        let k = format!("{key}[{i}]");
        let bytes = src.read(f, &k)?;
        certs.extend(read_certificates(&bytes).map_err(|e| src.error(f, &k, e.to_string()))?);
    }
    Ok(certs)
}

/// A non-empty list for `auth = "pubkey"`, else an error at the table or the empty list.
fn required_list<'a, T>(
    src: &Source<'_>,
    list: Option<&'a List>,
    table: &Spanned<T>,
    key: &str,
) -> Result<&'a List, ConfigError> {
    match list {
        None => Err(src.error(table, key, "required with auth = \"pubkey\"")),
        Some(l) if l.get_ref().is_empty() => {
            Err(src.error(l, key, "needs at least one file with auth = \"pubkey\""))
        }
        Some(l) => Ok(l),
    }
}

fn check_auth(src: &Source<'_>, auth: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    match auth.get_ref().as_str() {
        "psk" | "pubkey" => Ok(()),
        other => Err(src.error(
            auth,
            key,
            format!("{other:?}: expected \"pubkey\" or \"psk\""),
        )),
    }
}

fn connection(
    src: &Source<'_>,
    c_at: &Spanned<RawConnection>,
    key: String,
    table: &str,
    pools: &[AddressPool],
    dataplane: DataplaneMode,
) -> Result<Connection, ConfigError> {
    let origin = src.origin(c_at.span(), &key);
    let mut fingerprint = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    // Length-prefixed, so that no two different inputs run together the same way.
    let mut absorb = |bytes: &[u8]| {
        fingerprint.update(&(bytes.len() as u64).to_be_bytes());
        fingerprint.update(bytes);
    };
    absorb(table.as_bytes());
    let c = c_at.get_ref();
    let local = c.local.get_ref();
    let remote = c.remote.get_ref();
    let (local_key, remote_key) = (format!("{key}.local"), format!("{key}.remote"));
    check_auth(src, &local.auth, &format!("{local_key}.auth"))?;
    check_auth(src, &remote.auth, &format!("{remote_key}.auth"))?;

    // Read once even when both sides use it.
    let psk_side = [(&local.auth, &local_key), (&remote.auth, &remote_key)]
        .into_iter()
        .find(|(auth, _)| auth.get_ref() == "psk");
    let psk = match (psk_side, &c.psk_file) {
        (None, _) => None,
        (Some((auth, side)), None) => {
            return Err(src.error(
                auth,
                format!("{side}.auth"),
                "auth = \"psk\" needs psk_file in the connection",
            ));
        }
        (Some(_), Some(file)) => Some(read_psk(src, file, &format!("{key}.psk_file"))?),
    };
    if let Some(psk) = &psk {
        absorb(psk.expose());
    }

    let local_id = identity_at(src, &local.id, &format!("{local_key}.id"))?;
    let local_auth = match psk.clone().filter(|_| local.auth.get_ref() == "psk") {
        Some(psk) => LocalAuth::Psk { id: local_id, psk },
        None => {
            let certs_key = format!("{local_key}.certs");
            let files = required_list(src, local.certs.as_ref(), &c.local, &certs_key)?;
            let certs = certificates(src, files, &certs_key)?;
            // The key must match the first certificate: it changes only with it.
            certs.iter().for_each(|c| absorb(c));
            let k = format!("{local_key}.key");
            let key_file = local
                .key
                .as_ref()
                .ok_or_else(|| src.error(&c.local, &k, "required with auth = \"pubkey\""))?;
            let private = PrivateKey::from_pem_or_der(src.read_secret(key_file, &k)?.expose())
                .map_err(|e| src.error(key_file, &k, e.to_string()))?;
            if !private.matches_certificate(&certs[0]) {
                return Err(src.error(
                    key_file,
                    &k,
                    "this key does not belong to the first certificate in certs",
                ));
            }
            // Found here rather than by the peer, which would only say AUTHENTICATION_FAILED.
            if let Err(e) = check_identity(&local_id, &certs[0]) {
                return Err(src.error(&local.id, format!("{local_key}.id"), e.to_string()));
            }
            LocalAuth::Pubkey {
                id: local_id,
                certs,
                key: Arc::new(private),
            }
        }
    };

    let remote_id = match &remote.id {
        Some(id) => identity::parse_remote(id.get_ref())
            .map_err(|e| src.error(id, format!("{remote_key}.id"), e.to_string()))?,
        None => RemoteId::Any,
    };
    let remote_auth = match psk.filter(|_| remote.auth.get_ref() == "psk") {
        Some(psk) => RemoteAuth::Psk { id: remote_id, psk },
        None => {
            let k = format!("{remote_key}.cacerts");
            let files = required_list(src, remote.cacerts.as_ref(), &c.remote, &k)?;
            let cacerts = certificates(src, files, &k)?;
            cacerts.iter().for_each(|c| absorb(c));
            let anchors =
                TrustAnchors::new(cacerts).map_err(|e| src.error(files, &k, e.to_string()))?;
            RemoteAuth::Pubkey {
                id: remote_id,
                anchors: Arc::new(anchors),
            }
        }
    };

    if c.children.is_empty() {
        // Without a Child SA there is nothing to carry traffic, and IKE_AUTH needs one.
        return Err(origin.error("needs at least one [[connection.children]]"));
    }
    let remote_addrs = ips(src, &c.remote_addrs, &format!("{key}.remote_addrs"))?;
    let has_peer = !remote_addrs.is_empty();
    let start = c.start.as_ref().filter(|s| *s.get_ref());
    if let Some(at) = start.filter(|_| !has_peer) {
        return Err(src.error(
            at,
            format!("{key}.start"),
            "start = true needs remote_addrs",
        ));
    }
    let legacy = c
        .legacy_windows_proposals
        .as_ref()
        .is_some_and(|l| *l.get_ref());
    // IKE proposals before the children's, so that an error names the first line.
    let mut weak = Vec::new();
    let ike_proposals = proposals(
        src,
        c.proposals.as_ref(),
        &DEFAULT_PROPOSALS,
        ProtocolId::IKE,
        &format!("{key}.proposals"),
        legacy,
        &mut weak,
    )?;
    let mut children: Vec<ChildPolicy> = Vec::new();
    for (i, ch_at) in c.children.iter().enumerate() {
        let ch = ch_at.get_ref();
        let k = format!("{key}.children[{i}]");
        if children.iter().any(|o| o.name == *ch.name.get_ref()) {
            return Err(src.error(
                &ch.name,
                format!("{k}.name"),
                format!("duplicate child name {:?}", ch.name.get_ref()),
            ));
        }
        let local_ts = selectors(src, &ch.local_ts, &format!("{k}.local_ts"))?;
        let remote_ts = selectors(src, &ch.remote_ts, &format!("{k}.remote_ts"))?;
        let transport = match &ch.mode {
            None => false,
            Some(mode) => match mode.get_ref().as_str() {
                "tunnel" => false,
                "transport" => {
                    let ts = (local_ts.as_slice(), remote_ts.as_slice());
                    transport_child(src, c, ch, mode, &k, dataplane, ts)?;
                    true
                }
                other => {
                    return Err(src.error(
                        mode,
                        format!("{k}.mode"),
                        format!("{other:?}: expected \"tunnel\" or \"transport\""),
                    ));
                }
            },
        };
        // A switch only the userspace data plane carries out; on in xfrm mode, an error.
        let userspace_only = |flag: &Option<Spanned<bool>>, key: &str, why: &str| match flag {
            Some(on) if *on.get_ref() && dataplane == DataplaneMode::Xfrm => Err(src.error(
                on,
                format!("{k}.{key}"),
                format!("needs dataplane.mode = \"userspace\": {why}"),
            )),
            Some(on) => Ok(*on.get_ref()),
            None => Ok(false),
        };
        let per_resource = userspace_only(
            &ch.per_resource_sas,
            "per_resource_sas",
            "the kernel's per-CPU SAs are not used",
        )?;
        let spread = userspace_only(
            &ch.spread_inbound,
            "spread_inbound",
            "the kernel steers ESP by SPI",
        )?;
        let start_action = match (start, &ch.start_action) {
            (Some(start), Some(at)) => {
                return Err(src.error(
                    at,
                    format!("{k}.start_action"),
                    format!(
                        "conflicts with {key}.start = true (line {}), which means \
                         start_action = \"start\" for every child",
                        src.line(start.span().start)
                    ),
                ));
            }
            (Some(_), None) => Action::Start,
            (None, value) => action(
                src,
                value.as_ref(),
                &format!("{k}.start_action"),
                START_ACTIONS,
                has_peer,
            )?,
        };
        let (lifetime, rand_time) = child_lifetime(src, ch_at, &k)?;
        children.push(ChildPolicy {
            name: ch.name.get_ref().clone(),
            local_ts,
            remote_ts,
            esp_proposals: proposals(
                src,
                ch.esp_proposals.as_ref(),
                &DEFAULT_ESP_PROPOSALS,
                ProtocolId::ESP,
                &format!("{k}.esp_proposals"),
                legacy,
                &mut weak,
            )?,
            transport,
            per_resource,
            spread,
            lifetime,
            rand_time,
            start_action,
            dpd_action: action(
                src,
                ch.dpd_action.as_ref(),
                &format!("{k}.dpd_action"),
                DPD_ACTIONS,
                has_peer,
            )?,
            close_action: action(
                src,
                ch.close_action.as_ref(),
                &format!("{k}.close_action"),
                CLOSE_ACTIONS,
                has_peer,
            )?,
        });
    }
    let fragment_size = match &c.fragment_size {
        Some(f) if !FRAGMENT_SIZES.contains(f.get_ref()) => {
            return Err(src.error(
                f,
                format!("{key}.fragment_size"),
                format!("{} is outside 576..=65535", f.get_ref()),
            ));
        }
        Some(f) => *f.get_ref(),
        None => 1280,
    };
    let initiate = children.iter().any(|ch| ch.start_action == Action::Start);
    let (pools, vips) = virtual_ips(src, c, &key, pools, dataplane)?;
    Ok(Connection {
        policy: Arc::new(Policy {
            name: c.name.get_ref().clone(),
            local_addrs: ips(src, &c.local_addrs, &format!("{key}.local_addrs"))?,
            remote_addrs,
            proposals: ike_proposals,
            encap: c.encap,
            fragment_size,
            local: local_auth,
            remote: remote_auth,
            children,
            ike_lifetime: ike_lifetime(src, c_at, &key)?,
            dpd_delay: duration(src, c.dpd_delay.as_ref(), &format!("{key}.dpd_delay"))?
                .filter(|d| !d.is_zero()),
            // swanctl gives up after one try; a gateway's tunnels must come back by themselves.
            keyingtries: c.keyingtries.unwrap_or(0),
            pools,
            vips,
            mobike: c.mobike.unwrap_or(true),
        }),
        start: initiate,
        updown: c
            .updown
            .as_ref()
            .map(|cmd| {
                use std::os::unix::fs::PermissionsExt;
                let path = src.path(cmd);
                let key = format!("{key}.updown");
                let meta = std::fs::metadata(&path)
                    .map_err(|e| src.error(cmd, &key, format!("{}: {e}", path.display())))?;
                if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                    return Err(src.error(
                        cmd,
                        &key,
                        format!("{} is not an executable file", path.display()),
                    ));
                }
                Ok(path)
            })
            .transpose()?,
        remote_port: c.remote_port.unwrap_or(500),
        origin,
        fingerprint: fingerprint
            .finish()
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes"),
        legacy_windows_proposals: legacy,
        weak_algorithms: weak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Result<AddrRange, ConfigError> {
        let src = Source {
            text: "",
            file: Path::new("t.toml"),
        };
        selector(&src, &Spanned::new(0..0, text.to_owned()), "k").map(|t| t.addrs)
    }

    #[test]
    fn selectors_mask_host_bits_and_take_single_addresses() {
        let v4 = |a: &str, b: &str| AddrRange::V4(a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(ts("10.1.2.3/24").unwrap(), v4("10.1.2.0", "10.1.2.255"));
        assert_eq!(ts("10.1.2.3").unwrap(), v4("10.1.2.3", "10.1.2.3"));
        assert_eq!(ts("0.0.0.0/0").unwrap(), v4("0.0.0.0", "255.255.255.255"));
        let v6 = |a: &str, b: &str| AddrRange::V6(a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(
            ts("::/0").unwrap(),
            v6("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        );
        assert_eq!(ts("fd00::1").unwrap(), v6("fd00::1", "fd00::1"));
        for bad in [
            "10.1.0.0/33",
            "fd00::/129",
            "10.1.0.0/",
            "10.1.0.0/+8",
            "x/8",
            "",
        ] {
            assert!(ts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_paths_follow_headers_inline_tables_and_dotted_keys() {
        let text = "[[connection]]\nname = 1\n[connection.local]\nid = 2\n[[connection]]\n\
                    remote = { id = 3 }\nlocal.auth = 4\n[[connection.children]]\nx = 5\n";
        let (tree, _) = DeTable::parse_recoverable(text);
        let at = |needle: &str| table_path(tree.get_ref(), text.find(needle).unwrap(), "");
        assert_eq!(at("1").as_deref(), Some("connection[0].name"));
        assert_eq!(at("2").as_deref(), Some("connection[0].local.id"));
        assert_eq!(at("3").as_deref(), Some("connection[1].remote.id"));
        assert_eq!(at("4").as_deref(), Some("connection[1].local.auth"));
        assert_eq!(at("x =").as_deref(), Some("connection[1].children[0].x"));
        assert_eq!(at("[[connection]]\nr").as_deref(), Some("connection[1]"));
    }
}
