//! IKE load generator for scripts/bench-ike.sh: the crate's own engine as the
//! initiator of many clients, one per source address, each with its own identity (the
//! address), its own UDP sockets on ports 500 and 4500, and its own inner address (from
//! `--inner` on) whose Child SAs join it to the responder's `--lan`. It keeps `--in-flight`
//! handshakes going against one responder until that holds `--sas` IKE+Child SAs, and
//! keeps them: nothing is deleted or rekeyed, and what the engine retransmits it
//! retransmits. One process, one thread, epoll over the sockets.
//!
//! usage: loadgen --to ADDR --from ADDR [--sources N] [--sas N] [--in-flight N]
//!                [--auth psk|ecdsa|modp] [--psk TEXT] [--pki DIR] [--gateway-id ID]
//!                [--inner ADDR] [--lan CIDR] [--timeout S] [--json FILE]
//!   --from ADDR     the first source address (IPv4); the others follow it, --sources in
//!                   all (1000), each already on an interface
//!   --inner ADDR    the first client's inner address, the others following (10.128.0.1);
//!                   --lan the responder's side (10.0.0.0/24): nothing is sent through them
//!   --auth          psk: PSK and x25519 (default); ecdsa: ECDSA P-256 certificates, one
//!                   per source issued here by the CA in --pki DIR (ca.crt and ca.key, as
//!                   `esptun pki ca` writes them), and x25519; modp: PSK and MODP-2048
//!   --gateway-id    the identity the responder must prove (gw.example)
//!
//! Every second a line: SAs so far, the rate in that second, handshakes in flight,
//! retransmissions, failures. At the end the rate overall and at 1 k, 10 k and 50 k
//! SAs: the rate at M SAs is that of the SAs from M - W to M, W = min(M/2, 2000) (the
//! first few hundred are the ramp-up); with --json the same as one JSON object. Exits
//! 1 if the target was not reached.
//!
//! The clients' KE value is reused as a responder's is (`Settings::initiator_reuses_ke`),
//! so that the generator spends less per handshake than the responder it measures;
//! each client's first IKE SA carries INITIAL_CONTACT, as a device's would.

use clap::{Parser, ValueEnum};
use esptun::auth::identity::{self, RemoteId};
use esptun::auth::private_key::PrivateKey;
use esptun::auth::x509::{TrustAnchors, read_certificates};
use esptun::control::OsRandom;
use esptun::crypto::Secret;
use esptun::ike::{
    ChildPolicy, Endpoint, Event, IkeLifetime, Instant, LocalAuth, Policy, RemoteAuth, Settings,
    proposal, ts,
};
use esptun::pki::{self, Host, KeyType, Profile};
use esptun::wire::ProtocolId;
use esptun::wire::payload::{AddrRange, Identity, TsRange};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const IKE_PORT: u16 = 500;
const NATT_PORT: u16 = 4500;
/// Prefixes IKE on the NAT-T port (RFC 3948 §2.2).
const NON_ESP_MARKER: [u8; 4] = [0; 4];
const MILESTONES: [usize; 3] = [1_000, 10_000, 50_000];
/// The most SAs a milestone's rate is taken over.
const WINDOW: usize = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Auth {
    Psk,
    Ecdsa,
    Modp,
}

#[derive(Parser, Debug)]
#[command(about = "IKE load generator: many clients, one responder (see the source's header)")]
struct Options {
    /// The responder's address (UDP 500).
    #[arg(long)]
    to: Ipv4Addr,
    /// The first source address.
    #[arg(long)]
    from: Ipv4Addr,
    /// Source addresses, and so clients.
    #[arg(long, default_value_t = 1000)]
    sources: u32,
    /// IKE+Child SAs to establish.
    #[arg(long, default_value_t = 10_000)]
    sas: usize,
    /// Handshakes kept going at once.
    #[arg(long, default_value_t = 100)]
    in_flight: usize,
    #[arg(long, value_enum, default_value_t = Auth::Psk)]
    auth: Auth,
    /// The pre-shared key (psk, modp).
    #[arg(long, default_value = "esptun load generator's pre-shared key")]
    psk: String,
    /// The CA's directory (ecdsa).
    #[arg(long)]
    pki: Option<PathBuf>,
    #[arg(long, default_value = "gw.example")]
    gateway_id: String,
    /// The first client's inner address.
    #[arg(long, default_value = "10.128.0.1")]
    inner: Ipv4Addr,
    /// The responder's side of the Child SAs, ADDR/LEN.
    #[arg(long, default_value = "10.0.0.0/24", value_parser = prefix)]
    lan: TsRange,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Also write the summary here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The credentials every client shares but its identity (and, with certificates, its
/// certificate and key).
enum Credentials {
    Psk(Secret),
    Certificates {
        ca: pki::Issued,
        anchors: Arc<TrustAnchors>,
        unix_now: u64,
    },
}

/// An IPv4 prefix as a traffic selector.
fn prefix(text: &str) -> Result<TsRange, String> {
    let bad = || format!("{text}: not ADDR/LEN");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let first = u32::from(addr) & mask;
    Ok(ts::of(AddrRange::V4(first.into(), (first | !mask).into())))
}

/// The policy of client `index`, who comes from `addr`.
fn client_policy(
    o: &Options,
    creds: &Credentials,
    index: u32,
    addr: Ipv4Addr,
    gateway: &Identity,
) -> Result<Policy, String> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ike = match o.auth {
        Auth::Psk | Auth::Ecdsa => "aes128gcm16-prfsha256-x25519",
        Auth::Modp => "aes128gcm16-prfsha256-modp2048",
    };
    let id = Identity::Ipv4(addr);
    let (local, remote) = match creds {
        Credentials::Psk(psk) => (
            LocalAuth::Psk {
                id,
                psk: psk.clone(),
            },
            RemoteAuth::Psk {
                id: RemoteId::Exact(gateway.clone()),
                psk: psk.clone(),
            },
        ),
        Credentials::Certificates {
            ca,
            anchors,
            unix_now,
        } => {
            let host = Host {
                sans: vec![addr.to_string()],
                kind: KeyType::EcdsaP256,
                days: 2,
                ipsec_ike: false,
                profile: Profile::Host,
            };
            let issued = pki::make_host(ca, &host, *unix_now).map_err(|e| e.to_string())?;
            let certs = read_certificates(issued.cert_pem.as_bytes()).map_err(|e| e.to_string())?;
            let key = PrivateKey::from_pem_or_der(issued.key_pem.as_bytes())
                .map_err(|e| e.to_string())?;
            (
                LocalAuth::Pubkey {
                    id,
                    certs,
                    key: Arc::new(key),
                },
                RemoteAuth::Pubkey {
                    id: RemoteId::Exact(gateway.clone()),
                    anchors: anchors.clone(),
                },
            )
        }
    };
    Ok(Policy {
        name: format!("lg-{addr}"),
        local_addrs: Vec::new(),
        remote_addrs: Vec::new(),
        proposals: proposal::parse_all(&strings(&[ike]), ProtocolId::IKE)
            .map_err(|e| e.to_string())?,
        encap: false,
        fragment_size: 1280,
        local,
        remote,
        children: vec![ChildPolicy {
            name: "inner".into(),
            local_ts: vec![ts::host(IpAddr::V4(Ipv4Addr::from(
                u32::from(o.inner).wrapping_add(index),
            )))],
            remote_ts: vec![o.lan],
            esp_proposals: proposal::parse_all(&strings(&["aes128gcm16"]), ProtocolId::ESP)
                .map_err(|e| e.to_string())?,
            ..ChildPolicy::default()
        }],
        ike_lifetime: IkeLifetime {
            rekey_time: None,
            ..IkeLifetime::default()
        },
        dpd_delay: None,
        keyingtries: 1,
        pools: Vec::new(),
        vips: Vec::new(),
        mobike: false,
    })
}

/// One source address's two sockets, and every socket's address by its epoll token.
struct Sockets {
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    by_local: HashMap<SocketAddr, usize>,
    epoll: Epoll,
}

impl Sockets {
    fn bind(addrs: &[Ipv4Addr]) -> Result<Self, String> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
        let mut s = Self {
            sockets: Vec::new(),
            locals: Vec::new(),
            by_local: HashMap::new(),
            epoll,
        };
        for &addr in addrs {
            for port in [IKE_PORT, NATT_PORT] {
                let local = SocketAddr::new(IpAddr::V4(addr), port);
                let socket = UdpSocket::bind(local).map_err(|e| {
                    let hint = if e.raw_os_error() == Some(nix::libc::EMFILE) {
                        " (two sockets per source: raise ulimit -n)"
                    } else {
                        " (is the address on an interface?)"
                    };
                    format!("bind {local}: {e}{hint}")
                })?;
                socket.set_nonblocking(true).map_err(|e| e.to_string())?;
                let token = s.sockets.len();
                s.epoll
                    .add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, token as u64))
                    .map_err(|e| e.to_string())?;
                s.by_local.insert(local, token);
                s.locals.push(local);
                s.sockets.push(socket);
            }
        }
        Ok(s)
    }
}

/// What happened so far.
#[derive(Default)]
struct Tally {
    started: usize,
    /// When each IKE SA came up, in seconds since the start, in order.
    ups: Vec<f64>,
    up: HashSet<u64>,
    children: usize,
    /// IKE SAs that went down before they were up, and after.
    failed: usize,
    lost: usize,
    child_failed: usize,
    /// Failures by reason, for the summary.
    reasons: BTreeMap<String, usize>,
    send_errors: usize,
}

struct Generator {
    endpoint: Endpoint,
    sockets: Sockets,
    tally: Tally,
    start: std::time::Instant,
    buf: Vec<u8>,
}

impl Generator {
    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn now(&self) -> Instant {
        Instant(self.start.elapsed())
    }

    /// Takes the engine's events, then sends what it has to send (in that order, as
    /// the engine asks).
    fn pump(&mut self) {
        while let Some(e) = self.endpoint.poll_event() {
            let t = &mut self.tally;
            match e {
                Event::IkeSaUp(up) => {
                    t.up.insert(up.spi_i.0);
                    t.ups.push(self.start.elapsed().as_secs_f64());
                }
                Event::ChildSaUp(_) => t.children += 1,
                Event::IkeSaDown { spi_i, reason, .. } => {
                    if t.up.remove(&spi_i.0) {
                        t.lost += 1;
                    } else {
                        t.failed += 1;
                    }
                    *t.reasons.entry(reason.to_string()).or_default() += 1;
                }
                Event::ChildSaFailed { reason, .. } => {
                    t.child_failed += 1;
                    *t.reasons.entry(format!("child: {reason}")).or_default() += 1;
                }
                _ => {}
            }
        }
        while let Some(t) = self.endpoint.poll_transmit() {
            let Some(&i) = self.sockets.by_local.get(&t.local) else {
                self.tally.send_errors += 1;
                continue;
            };
            let socket = &self.sockets.sockets[i];
            let sent = if t.local.port() == NATT_PORT {
                self.buf.clear();
                self.buf.extend_from_slice(&NON_ESP_MARKER);
                self.buf.extend_from_slice(&t.data);
                socket.send_to(&self.buf, t.remote)
            } else {
                socket.send_to(&t.data, t.remote)
            };
            // The engine retransmits what a full socket buffer lost.
            if sent.is_err() {
                self.tally.send_errors += 1;
            }
        }
    }

    /// Reads everything waiting on socket `i` into the engine.
    fn receive(&mut self, i: usize, buf: &mut [u8]) {
        let local = self.sockets.locals[i];
        loop {
            // Drained (or failed: epoll says when it has more).
            let Ok((len, remote)) = self.sockets.sockets[i].recv_from(buf) else {
                return;
            };
            let data = if local.port() == NATT_PORT {
                // Anything else on the NAT-T port is ESP or a keepalive: not ours.
                match buf[..len].strip_prefix(&NON_ESP_MARKER) {
                    Some(ike) => ike,
                    None => continue,
                }
            } else {
                &buf[..len]
            };
            let now = Instant(self.start.elapsed());
            self.endpoint.handle(now, local, remote, data);
            self.pump();
        }
    }
}

/// SAs per second over the SAs from `m - W` to `m`; None if fewer came up.
fn rate_at(ups: &[f64], m: usize) -> Option<f64> {
    let window = (m / 2).min(WINDOW);
    let first = ups.get(m.checked_sub(window + 1)?)?;
    let last = ups.get(m - 1)?;
    Some(window as f64 / (last - first).max(1e-9))
}

#[allow(
    clippy::disallowed_methods,
    reason = "a load generator is a driver: it reads the clock"
)]
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[allow(
    clippy::disallowed_methods,
    reason = "a load generator is a driver: it reads the clock"
)]
fn run(o: &Options) -> Result<bool, String> {
    if o.sources == 0 || o.in_flight == 0 {
        return Err("--sources and --in-flight must be at least 1".into());
    }
    let gateway = identity::parse(&o.gateway_id).map_err(|e| e.to_string())?;
    let unix = unix_now();
    let creds = match o.auth {
        Auth::Psk | Auth::Modp => Credentials::Psk(Secret::from_slice(o.psk.as_bytes())),
        Auth::Ecdsa => {
            let dir = o
                .pki
                .as_ref()
                .ok_or("--auth ecdsa needs --pki DIR (the CA)")?;
            let ca = pki::load_ca(dir).map_err(|e| e.to_string())?;
            let ca_der = read_certificates(ca.cert_pem.as_bytes()).map_err(|e| e.to_string())?;
            let anchors = Arc::new(TrustAnchors::new(ca_der).map_err(|e| e.to_string())?);
            Credentials::Certificates {
                ca,
                anchors,
                unix_now: unix.as_secs(),
            }
        }
    };
    let first = u32::from(o.from);
    let addrs: Vec<Ipv4Addr> = (0..o.sources)
        .map(|i| Ipv4Addr::from(first.wrapping_add(i)))
        .collect();
    let clock = std::time::Instant::now();
    let policies = (0..o.sources)
        .zip(&addrs)
        .map(|(i, &a)| client_policy(o, &creds, i, a, &gateway).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    if matches!(creds, Credentials::Certificates { .. }) {
        println!(
            "{} client certificates issued in {:.2} s",
            policies.len(),
            clock.elapsed().as_secs_f64()
        );
    }
    let settings = Settings {
        unix_time_at_start: unix,
        initiator_reuses_ke: true,
        ..Settings::default()
    };
    let mut g = Generator {
        endpoint: Endpoint::new(settings, policies, Box::new(OsRandom)),
        sockets: Sockets::bind(&addrs)?,
        tally: Tally::default(),
        start: std::time::Instant::now(),
        buf: Vec::with_capacity(2048),
    };
    let responder = SocketAddr::new(IpAddr::V4(o.to), IKE_PORT);
    let mut events = vec![EpollEvent::empty(); 256];
    let mut buf = vec![0u8; 65_535];
    let mut next_report = 1.0;
    let mut reported = (0, 0);
    println!(
        "{:>7} {:>8} {:>8} {:>9} {:>11} {:>7}",
        "s", "SAs", "SAs/s", "in flight", "retransmits", "failed"
    );
    while g.tally.ups.len() < o.sas {
        let t = &g.tally;
        let in_flight = t.started - t.ups.len() - t.failed;
        if in_flight < o.in_flight && t.ups.len() + in_flight < o.sas {
            let client = t.started % addrs.len();
            let local = SocketAddr::new(IpAddr::V4(addrs[client]), IKE_PORT);
            let now = g.now();
            if let Err(e) = g.endpoint.initiate(now, client, local, responder) {
                return Err(format!("initiate from {local}: {e}"));
            }
            g.tally.started += 1;
            g.pump();
            continue;
        }
        let elapsed = g.elapsed();
        if elapsed >= next_report {
            let t = &g.tally;
            println!(
                "{:>7.0} {:>8} {:>8} {:>9} {:>11} {:>7}",
                next_report,
                t.ups.len(),
                t.ups.len() - reported.0,
                in_flight,
                g.endpoint.stats().retransmits - reported.1,
                t.failed + t.lost
            );
            reported = (t.ups.len(), g.endpoint.stats().retransmits);
            next_report += 1.0;
        }
        if elapsed > o.timeout {
            println!("timed out after {:.0} s", o.timeout);
            break;
        }
        if g.tally.failed > o.sas {
            println!("more failures than SAs asked for: giving up");
            break;
        }
        let timer = g.endpoint.poll_timeout().map(|t| t.0.as_secs_f64());
        if timer.is_some_and(|t| t <= elapsed) {
            let now = g.now();
            g.endpoint.handle_timeout(now);
            g.pump();
            continue;
        }
        let until = timer.unwrap_or(f64::MAX).min(next_report);
        // Whole milliseconds up: never a busy loop just short of a deadline.
        let wait = Duration::from_secs_f64((until - elapsed).max(0.0)).as_millis() + 1;
        let wait = EpollTimeout::from(wait.min(1000) as u16);
        let ready = match g.sockets.epoll.wait(&mut events, wait) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(format!("epoll: {e}")),
        };
        for ev in &events[..ready] {
            g.receive(ev.data() as usize, &mut buf);
        }
    }
    let t = &g.tally;
    let seconds = t.ups.last().copied().unwrap_or_else(|| g.elapsed());
    let overall = t.ups.len() as f64 / seconds.max(1e-9);
    let retransmits = g.endpoint.stats().retransmits;
    println!(
        "{} IKE SAs ({} Child SAs) in {seconds:.2} s: {overall:.0}/s from {} clients, {} in flight, auth {:?}",
        t.ups.len(),
        t.children,
        o.sources,
        o.in_flight,
        o.auth
    );
    let mut at = serde_json::Map::new();
    for m in MILESTONES.into_iter().chain([o.sas]) {
        if let Some(r) = rate_at(&t.ups, m)
            && !at.contains_key(&m.to_string())
        {
            println!("  at {m:>6} SAs: {r:.0}/s");
            at.insert(m.to_string(), json!((r * 10.0).round() / 10.0));
        }
    }
    println!(
        "  failed {} (IKE SAs never up), lost {} (up, then down), Child SAs failed {}, retransmits {retransmits}, send errors {}",
        t.failed, t.lost, t.child_failed, t.send_errors
    );
    for (why, n) in &t.reasons {
        println!("  {n} × {why}");
    }
    if let Some(path) = &o.json {
        let summary = json!({
            "auth": format!("{:?}", o.auth).to_lowercase(),
            "sources": o.sources,
            "in_flight": o.in_flight,
            "target": o.sas,
            "established": t.ups.len(),
            "children": t.children,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "rate": (overall * 10.0).round() / 10.0,
            "rate_at": at,
            "failed": t.failed,
            "lost": t.lost,
            "child_failed": t.child_failed,
            "retransmits": retransmits,
            "send_errors": t.send_errors,
            "reasons": t.reasons,
        });
        std::fs::write(path, format!("{summary}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(t.ups.len() >= o.sas)
}

fn main() -> ExitCode {
    let o = Options::parse();
    match run(&o) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
