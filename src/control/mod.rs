//! The control thread: binds the IKE sockets, drives the sans-IO engine with the
//! real clock and the OS random generator, initiates the connections marked to
//! start, logs every event, answers `esptun status` on its control socket, and on
//! SIGINT/SIGTERM deletes its IKE SAs before leaving.

pub mod api;
mod log;
mod metrics;
mod socket;
pub mod status;

use crate::config::{Config, Connection, DataplaneMode, DataplaneSettings, IkeSettings, Listen};
use crate::crypto::Random;
use crate::dataplane::{Dataplane, DataplaneEvent};
use crate::ike::{self, AddressPool, Endpoint, Event, Settings, ts};
use crate::logging::Level;
use crate::netio::Received;
use crate::sink::{Protected, SaSink, xfrm::Xfrm};
use crate::wire::IkeSpi;
use log::KeyLog;
use nix::fcntl::{Flock, FlockArg};
use socket::{IkeSocket, MAX_DATAGRAM};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// How `esptun run` was asked to behave.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// Write keys to this Wireshark profile directory.
    pub keylog: Option<PathBuf>,
}

/// The operating system's random generator, for the drivers (the daemon, the command
/// line, the examples) to hand the sans-IO core.
pub struct OsRandom;

impl Random for OsRandom {
    #[allow(
        clippy::disallowed_methods,
        reason = "the drivers are where real randomness enters"
    )]
    fn fill(&mut self, out: &mut [u8]) {
        // Failing to read the OS RNG leaves no safe way to go on.
        aws_lc_rs::rand::fill(out).expect("the OS random generator failed");
    }
}

/// How long shutdown waits for peers to confirm our Deletes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs the daemon until a signal stops it.
pub fn run(options: Options) -> Result<(), String> {
    let config = Config::load(&options.config).map_err(|e| e.to_string())?;
    let _instance = claim_instance(&config.dataplane.tun)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(serve(config, options))
}

/// Makes this the only esptun for its TUN in this network namespace: a second one would
/// share the ports and the device and, leaving, remove the first one's routes. The lock
/// is held (and the file names our PID) until the daemon exits.
fn claim_instance(tun: &str) -> Result<Flock<File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(api::RUN_DIR).map_err(|e| format!("{}: {e}", api::RUN_DIR))?;
    let path = api::instance_path(tun, "pid");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)
                .and_then(|()| writeln!(lock, "{}", std::process::id()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(lock)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(format!(
                "another esptun (pid {}) already runs TUN {tun} in this network namespace ({})",
                pid.trim(),
                path.display()
            ))
        }
        Err((_, e)) => Err(format!("{}: {e}", path.display())),
    }
}

/// The address the kernel would send from to reach `remote` with IKE, which carries
/// `mark` (and so is not routed into the TUN).
fn route_source(remote: SocketAddr, mark: u32) -> Result<IpAddr, String> {
    let any: SocketAddr = if remote.is_ipv4() {
        (IpAddr::from([0, 0, 0, 0]), 0).into()
    } else {
        (IpAddr::from([0u16; 8]), 0).into()
    };
    let probe = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
    nix::sys::socket::setsockopt(&probe, nix::sys::socket::sockopt::Mark, &mark)
        .map_err(|e| format!("SO_MARK: {e}"))?;
    probe
        .connect(remote)
        .map_err(|e| format!("no route to {remote}: {e}"))?;
    Ok(probe.local_addr().map_err(|e| e.to_string())?.ip())
}

/// The environment of an `updown` command: `ESPTUN_*` variables and their values.
type UpdownEnv = Vec<(&'static str, String)>;

/// What a connection's `updown` command is told about an IKE SA, besides the event.
fn updown_env(up: &ike::IkeSaUp, tun: &str) -> UpdownEnv {
    vec![
        ("ESPTUN_CONNECTION", up.connection.clone()),
        ("ESPTUN_TUN", tun.to_owned()),
        (
            "ESPTUN_ROLE",
            if up.initiator {
                "initiator"
            } else {
                "responder"
            }
            .to_owned(),
        ),
        ("ESPTUN_LOCAL", up.local.to_string()),
        ("ESPTUN_REMOTE", up.remote.to_string()),
        ("ESPTUN_LOCAL_ID", up.local_id.to_string()),
        ("ESPTUN_REMOTE_ID", up.remote_id.to_string()),
        ("ESPTUN_VIRTUAL_IPS", log::addresses(&up.virtual_ips)),
        ("ESPTUN_DNS", log::addresses(&up.dns)),
    ]
}

/// Runs `cmd` for `event` ("up" or "down") without waiting for it: a slow hook
/// must not stall IKE. Its failure is logged.
fn run_updown(cmd: &Path, event: &'static str, env: &[(&'static str, String)]) {
    let spawned = std::process::Command::new(cmd)
        .env("ESPTUN_EVENT", event)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .spawn();
    let cmd = cmd.display().to_string();
    match spawned {
        Ok(mut child) => {
            std::thread::spawn(move || match child.wait() {
                Ok(status) if status.success() => {}
                Ok(status) => crate::warn!("updown {cmd} {event}: {status}"),
                Err(e) => crate::warn!("updown {cmd} {event}: {e}"),
            });
        }
        Err(e) => crate::warn!("updown {cmd} {event}: {e}"),
    }
}

#[allow(clippy::disallowed_methods, reason = "the driver owns the clocks")]
fn clocks() -> (std::time::Instant, Duration) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (std::time::Instant::now(), unix)
}

/// RFC 3948 §2.3 suggests 20 seconds: short enough for most NATs' UDP timeouts.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// How often the data plane's byte and packet counters are held against the Child
/// SAs' lifetimes (the workers enforce hard limits themselves, per packet).
const LIFETIME_CHECK: Duration = Duration::from_secs(1);

/// The control thread's state between events.
struct Daemon {
    endpoint: Endpoint,
    sockets: Vec<Arc<IkeSocket>>,
    options: Options,
    keylog: Option<KeyLog>,
    dataplane: Box<dyn SaSink>,
    natt_port: u16,
    /// IKE SAs whose own address is translated: (our address, the peer's).
    keepalives: HashMap<IkeSpi, (SocketAddr, SocketAddr)>,
    /// The virtual IPs gateways leased us, by connection, on the TUN. They stay
    /// when their IKE SA goes (without an SA their packets are held or dropped):
    /// the kernel flushes every IPv4 route through a device whose last IPv4 address
    /// is removed, which would take the TUN routes of every connection with it. A
    /// new lease replaces them, added before the old ones are removed.
    virtual_ips: HashMap<String, Vec<IpAddr>>,
    /// Each connection's `updown` command, by name.
    updown: HashMap<String, PathBuf>,
    /// The IKE SAs whose `updown` ran for "up": the command and what it was told,
    /// for "down".
    hooked: HashMap<IkeSpi, (PathBuf, UpdownEnv)>,
    /// The SAs that are up, for `esptun status`.
    registry: status::Registry,
    /// The daemon's monotonic clock: `start.elapsed()` is the engine's now.
    start: std::time::Instant,
    send_errors: SendErrors,
    /// Each connection's [`Connection::fingerprint`](crate::config::Connection), by
    /// the engine's policy index: what a reload compares.
    fingerprints: Vec<[u8; 32]>,
    /// The sections a reload cannot change: `[listen]`, `[ike]`, `[dataplane]`,
    /// `[metrics]`, `[[pool]]` (whose leases the engine holds).
    sections: (
        Listen,
        IkeSettings,
        DataplaneSettings,
        Option<SocketAddr>,
        Vec<AddressPool>,
    ),
    /// Served when `[metrics] listen` is set.
    metrics: Option<metrics::Metrics>,
}

/// Send failures, told at most once a second: answers to a flood from spoofed,
/// unreachable sources would otherwise make a log line each.
#[derive(Default)]
struct SendErrors {
    /// When the current second began.
    since: Option<Duration>,
    /// Failures since, not yet told.
    more: u64,
    last: String,
}

impl SendErrors {
    /// The lines to log for failure `what`: none if it is not the first in a second.
    fn note(&mut self, now: Duration, what: String) -> Vec<String> {
        if self
            .since
            .is_some_and(|t| now.saturating_sub(t) < Duration::from_secs(1))
        {
            self.more += 1;
            self.last = what;
            return Vec::new();
        }
        self.since = Some(now);
        self.flush().into_iter().chain([what]).collect()
    }

    /// The line for the failures only counted so far, if any.
    fn flush(&mut self) -> Option<String> {
        (self.more > 0).then(|| {
            let line = format!("{} more send failures, the last: {}", self.more, self.last);
            self.more = 0;
            line
        })
    }
}

async fn serve(config: Config, options: Options) -> Result<(), String> {
    let (start, unix_time_at_start) = clocks();
    let now = move || ike::Instant(start.elapsed());
    let listen = config.listen.clone();
    let mut sockets = Vec::new();
    for addr in &listen.addrs {
        for port in [listen.ike_port, listen.natt_port] {
            let bound = SocketAddr::new(*addr, port);
            let natt = port == listen.natt_port;
            let socket = IkeSocket::bind(bound, natt, config.dataplane.fwmark)
                .map_err(|e| format!("bind {bound}: {e}"))?;
            if config.dataplane.mode == DataplaneMode::Xfrm {
                socket
                    .prepare_for_kernel_esp(natt)
                    .map_err(|e| format!("{bound}: kernel ESP: {e}"))?;
            }
            crate::info!("listening on {bound}");
            sockets.push(Arc::new(socket));
        }
    }
    let (tx, mut rx) = mpsc::channel::<Received>(1024);
    let (dataplane, mut dataplane_events) = start_dataplane(&config.dataplane, &listen, &tx)?;
    for socket in &sockets {
        let (socket, tx) = (socket.clone(), tx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match socket.recv(&mut buf).await {
                    Ok(r) => {
                        if tx.send(r).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => crate::warn!("receive on {}: {e}", socket.bound),
                }
            }
        });
    }
    let settings = Settings {
        natt_port: listen.natt_port,
        cookie_threshold: config.ike.cookie_threshold,
        half_open_limit: config.ike.half_open_limit,
        half_open_per_source: config.ike.half_open_per_source,
        half_open_timeout: config.ike.half_open_timeout,
        retransmit: config.ike.retransmit,
        unix_time_at_start,
        pools: config.pools.clone(),
        resources: resources(&config.dataplane),
        initiator_reuses_ke: false,
    };
    let keylog = match &options.keylog {
        Some(dir) => Some(KeyLog::create(dir).map_err(|e| format!("{}: {e}", dir.display()))?),
        None => None,
    };
    let mut daemon = Daemon {
        endpoint: Endpoint::new(settings, Vec::new(), Box::new(OsRandom)),
        sockets,
        options,
        keylog,
        dataplane,
        natt_port: listen.natt_port,
        keepalives: HashMap::new(),
        virtual_ips: HashMap::new(),
        updown: HashMap::new(),
        hooked: HashMap::new(),
        registry: status::Registry::default(),
        start,
        send_errors: SendErrors::default(),
        fingerprints: Vec::new(),
        sections: (
            config.listen.clone(),
            config.ike.clone(),
            config.dataplane.clone(),
            config.metrics,
            config.pools.clone(),
        ),
        metrics: config.metrics.map(metrics::Metrics::start).transpose()?,
    };
    if let Some(at) = config.metrics {
        crate::info!("metrics on http://{at}/metrics");
    }
    for c in &config.connections {
        let peer = daemon.peer_of(c)?;
        daemon.add_connection(c, peer).1?;
    }
    daemon.dataplane.drop_stale();
    let control = api::Server::bind(&api::instance_path(&config.dataplane.tun, "sock"))?;
    let (requests, mut request_rx) = mpsc::channel::<api::Request>(16);
    crate::privilege::restrict(&crate::privilege::CONTROL)?;
    daemon.endpoint.start(now());
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut report = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
    let mut lifetimes = tokio::time::interval(LIFETIME_CHECK);
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        daemon.flush();
        if stopping.is_some_and(|until| {
            daemon.endpoint.established() == 0 || tokio::time::Instant::now() >= until
        }) {
            report_counters(daemon.dataplane.as_ref());
            daemon.dataplane.release();
            return Ok(());
        }
        let timer = daemon
            .endpoint
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(start + t.0));
        let wake = [timer, stopping].into_iter().flatten().min();
        tokio::select! {
            Some(r) = rx.recv() => daemon.handle(now(), r),
            () = sleep_until(wake) => daemon.endpoint.handle_timeout(now()),
            _ = keepalive.tick() => daemon.send_keepalives(),
            _ = lifetimes.tick() => {
                if let Some(line) = daemon.send_errors.flush() {
                    crate::warn!("{line}");
                }
                for (spi_in, hard, cause) in daemon.dataplane.expiries() {
                    daemon.endpoint.expire_child(now(), spi_in, hard, cause);
                }
                let active = daemon.dataplane.inbound_active();
                daemon.endpoint.inbound_seen(now(), &active);
                daemon.follow_our_address(now());
                if let Some(m) = daemon.metrics.as_mut() {
                    m.refresh(&daemon.endpoint, daemon.dataplane.as_ref(), &daemon.registry);
                }
            }
            Some(e) = dataplane_events.recv() => match e {
                // Shutting down: held packets ask in vain.
                DataplaneEvent::Acquire { .. } if stopping.is_some() => {}
                DataplaneEvent::Acquire { policy, child } => {
                    daemon.endpoint.acquire(now(), policy, child);
                }
                DataplaneEvent::PeerMoved { spi_in, remote } => {
                    daemon.endpoint.esp_moved(now(), spi_in, remote);
                }
                DataplaneEvent::UnknownSpi { local, remote, spi } => {
                    daemon.endpoint.unknown_spi(now(), local, remote, spi);
                }
                DataplaneEvent::WorkerFailed { worker, why } => {
                    // Peers learn at once instead of by DPD; the routes stay, so
                    // protected traffic is dropped, not sent in clear, until esptun
                    // runs again.
                    daemon.endpoint.delete_all(now());
                    daemon.flush();
                    return Err(format!(
                        "ESP worker {worker} stopped: {why}; esptun cannot carry its share of the traffic and exits (protected prefixes stay blackholed until it runs again)"
                    ));
                }
            },
            _ = report.recv() => report_counters(daemon.dataplane.as_ref()),
            _ = hangup.recv(), if stopping.is_none() => {
                if let Err(e) = daemon.reload(now()) {
                    crate::warn!("{e}");
                }
            }
            () = control.serve_next(&requests) => {}
            Some((command, reply)) = request_rx.recv() => {
                let _ = reply.send(daemon.answer(&command));
            }
            _ = interrupt.recv(), if stopping.is_none() => {
                crate::info!("interrupted: deleting IKE SAs");
                daemon.endpoint.delete_all(now());
                stopping = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = terminate.recv(), if stopping.is_none() => {
                crate::info!("terminated: deleting IKE SAs");
                daemon.endpoint.delete_all(now());
                stopping = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
        }
    }
}

/// Starts the data plane `settings.mode` names. The userspace one comes after the
/// IKE sockets: the NAT-T port's group must have the control socket first; and it
/// adds to their queue, `ike`, the IKE its workers receive in GSO or GRO trains.
#[allow(clippy::type_complexity, reason = "said once, here")]
fn start_dataplane(
    settings: &DataplaneSettings,
    listen: &Listen,
    ike: &mpsc::Sender<Received>,
) -> Result<(Box<dyn SaSink>, mpsc::UnboundedReceiver<DataplaneEvent>), String> {
    match settings.mode {
        DataplaneMode::Userspace => {
            let (dataplane, events) = Dataplane::start(settings, listen, ike.clone())
                .map_err(|e| format!("data plane ({}): {e}", settings.tun))?;
            crate::info!(
                "data plane: TUN {} (path MTU {}, offload {}), {} workers",
                settings.tun,
                settings.path_mtu,
                if dataplane.offload { "on" } else { "off" },
                settings.workers
            );
            Ok((Box::new(dataplane), events))
        }
        DataplaneMode::Xfrm => {
            let (xfrm, events) = Xfrm::start(settings.replay_window)
                .map_err(|e| format!("data plane (kernel XFRM): {e}"))?;
            crate::info!("data plane: the kernel's IPsec (XFRM)");
            Ok((Box::new(xfrm), events))
        }
    }
}

/// How many per-resource Child SAs (RFC 9611) a child with `per_resource_sas` gets:
/// one per worker, whose steering (`SPI % workers`) the engine's SPIs then follow.
/// The kernel's per-CPU SAs (XFRMA_SA_PCPU) are newer than the kernels we install
/// into: one there.
fn resources(settings: &DataplaneSettings) -> u32 {
    match settings.mode {
        DataplaneMode::Userspace => u32::try_from(settings.workers).unwrap_or(1),
        DataplaneMode::Xfrm => 1,
    }
}

/// Logs each Child SA's counters and the drops (SIGUSR1, and at exit).
fn report_counters(dataplane: &dyn SaSink) {
    for line in dataplane.report().lines() {
        crate::info!("{line}");
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Hands a datagram to the engine; on the NAT-T port only those behind the non-ESP
    /// marker are IKE (RFC 3948 §2.2). The workers' steering program sends ESP to
    /// them, so what else arrives here is a keepalive (0xff), which the data plane
    /// drops, or ESP that followed IKE in a GSO or GRO train, which it takes.
    fn handle(&mut self, now: ike::Instant, r: Received) {
        let ike = if r.local.port() == self.natt_port {
            match r.data.strip_prefix(&crate::wire::NON_ESP_MARKER) {
                Some(ike) => ike,
                None => {
                    self.dataplane.stray_esp(r.local, r.remote, &r.data);
                    return;
                }
            }
        } else {
            &r.data
        };
        self.endpoint.handle(now, r.local, r.remote, ike);
    }

    /// Where the connection's peer is, if it names one: (our address, the peer's).
    /// Our address is the one the kernel routes from when the connection names none;
    /// failing to find one is an error only for a connection that starts at once.
    fn peer_of(&self, c: &Connection) -> Result<Option<(SocketAddr, SocketAddr)>, String> {
        let (listen, _, dataplane, _, _) = &self.sections;
        let Some(&remote_ip) = c.policy.remote_addrs.first() else {
            return Ok(None);
        };
        let remote = SocketAddr::new(remote_ip, c.remote_port);
        let local_ip = match c.policy.local_addrs.first() {
            Some(&ip) => ip,
            None => match route_source(remote, dataplane.fwmark) {
                Ok(ip) => ip,
                Err(e) if c.start => return Err(c.origin.error(e).to_string()),
                Err(e) => {
                    crate::warn!("{}", c.origin.error(e));
                    return Ok(None);
                }
            },
        };
        Ok(Some((SocketAddr::new(local_ip, listen.ike_port), remote)))
    }

    /// Moves the IKE SAs we initiated with MOBIKE to the address the kernel now
    /// routes to their peers from, when it changed (an address went, a link
    /// changed). Without a route the SA stays, for the address may come back.
    fn follow_our_address(&mut self, now: ike::Instant) {
        let fwmark = self.sections.2.fwmark;
        for (spi, local, remote) in self.endpoint.roaming() {
            if let Ok(ip) = route_source(remote, fwmark)
                && ip != local.ip()
            {
                self.endpoint.update_addresses(now, spi, ip);
            }
        }
    }

    /// Puts a connection in service, at start or by a reload: the engine gets its
    /// policy and peer, and its children's traffic goes through the TUN or nowhere
    /// from now on. Returns its index, and whether every route went in.
    fn add_connection(
        &mut self,
        c: &Connection,
        peer: Option<(SocketAddr, SocketAddr)>,
    ) -> (usize, Result<(), String>) {
        if c.legacy_windows_proposals {
            let name = &c.policy.name;
            if c.weak_algorithms.is_empty() {
                crate::warn!(
                    "{name}: legacy_windows_proposals = true, but no proposal uses SHA-1 \
                     integrity or MODP-1024: the opt-in can go"
                );
            } else {
                crate::warn!(
                    "{name}: legacy_windows_proposals = true: negotiating the weak {} for \
                     Windows' default proposals; switch the clients to strong proposals \
                     (README \"Native clients\") and drop the opt-in",
                    c.weak_algorithms.join(", ")
                );
            }
        }
        let index = self.endpoint.add_policy(c.policy.clone());
        self.fingerprints.push(c.fingerprint);
        match &c.updown {
            Some(cmd) => self.updown.insert(c.policy.name.clone(), cmd.clone()),
            None => self.updown.remove(&c.policy.name),
        };
        if let Some((local, remote)) = peer {
            self.endpoint.add_peer(index, local, remote);
            if c.start {
                crate::info!("initiating {} {local} -> {remote}", c.policy.name);
            }
        }
        let local_ip = peer
            .map(|(local, _)| local.ip())
            .or_else(|| c.policy.local_addrs.first().copied());
        // A gateway's clients are within its pools, whichever address each leases; a
        // client's own address is whichever the gateway leases it.
        let pools = &self.sections.4;
        let leased: Vec<_> = pools
            .iter()
            .filter(|p| c.policy.pools.contains(&p.name))
            .map(|p| ts::of(p.addrs))
            .collect();
        let ours: Vec<_> = c.policy.vips.iter().map(|&v| ts::family_of(v)).collect();
        let mut routed = Ok(());
        for (child_index, child) in c.policy.children.iter().enumerate() {
            let remote_ts = match c.policy.remote_addrs.first() {
                _ if !leased.is_empty() => leased.clone(),
                Some(&ip) => ts::or_dynamic(&child.remote_ts, ip),
                // Dynamic, and the peer is whoever comes: its SA will route it.
                None if child.remote_ts.is_empty() => continue,
                None => child.remote_ts.clone(),
            };
            let local_ts = match local_ip {
                _ if !ours.is_empty() => ours.clone(),
                Some(ip) => ts::or_dynamic(&child.local_ts, ip),
                None => child.local_ts.clone(),
            };
            let name = format!("{}/{}", c.policy.name, child.name);
            let protected = Protected {
                policy: index,
                child: child_index,
                name: &name,
                local_ts: &local_ts,
                remote_ts: &remote_ts,
                peer: peer.map(|(local, remote)| (local.ip(), remote.ip())),
                transport: child.transport,
            };
            if let Err(e) = self.dataplane.protect(&protected) {
                routed = Err(c.origin.error(e).to_string());
                break;
            }
        }
        (index, routed)
    }

    /// Takes the connection at `index` out of service: Deletes for its IKE SAs, its
    /// Child SAs out of the data plane as they go, then its routes.
    fn retire_connection(&mut self, now: ike::Instant, index: usize) {
        self.endpoint.retire(now, index);
        self.flush();
        self.dataplane.unprotect(index);
    }

    /// Reads the configuration file again and applies what changed in it: new
    /// connections are added (and started as configured), removed ones retired,
    /// changed ones replaced (the new one in service before the old one's SAs go),
    /// unchanged ones keep their SAs. A file that does not load, or that changes a
    /// section only a restart applies, changes nothing. Returns what it did.
    fn reload(&mut self, now: ike::Instant) -> Result<String, String> {
        let path = self.options.config.clone();
        let refused = |why: String| format!("reload refused, nothing changed: {why}");
        let config = Config::load(&path).map_err(|e| refused(e.to_string()))?;
        let (listen, ike, dataplane, metrics, pools) = &self.sections;
        for (section, same) in [
            ("[listen]", config.listen == *listen),
            ("[ike]", config.ike == *ike),
            ("[dataplane]", config.dataplane == *dataplane),
            ("[metrics]", config.metrics == *metrics),
            ("[[pool]]", config.pools == *pools),
        ] {
            if !same {
                return Err(refused(format!(
                    "{}: {section} changed: a reload applies [[connection]] changes only; restart esptun for this one",
                    path.display()
                )));
            }
        }
        let running: Vec<(usize, String)> = self
            .endpoint
            .connections()
            .map(|(i, p)| (i, p.name.clone()))
            .collect();
        let old = |name: &str| running.iter().find(|(_, n)| n == name).map(|&(i, _)| i);
        // Everything that can fail on the file's account before anything changes.
        let mut plan = Vec::new();
        for c in &config.connections {
            let replaces = old(&c.policy.name);
            if replaces.is_some_and(|i| self.fingerprints[i] == c.fingerprint) {
                continue;
            }
            plan.push((c, replaces, self.peer_of(c).map_err(refused)?));
        }
        let (mut added, mut changed, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for (c, replaces, peer) in plan {
            let name = c.policy.name.clone();
            // A route the kernel refuses now is told, and the rest still applied:
            // the file is good, and the connections before it are changed already.
            let (index, routed) = self.add_connection(c, peer);
            if let Err(e) = routed {
                crate::warn!("reload: {e}");
            }
            if let Some(old) = replaces {
                self.retire_connection(now, old);
                changed.push(name);
            } else {
                added.push(name);
            }
            self.endpoint.schedule_start(now, index);
        }
        for (index, name) in &running {
            if !config.connections.iter().any(|c| c.policy.name == *name) {
                self.retire_connection(now, *index);
                removed.push(name.clone());
            }
        }
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        let unchanged = config.connections.len() - added.len() - changed.len();
        let line = format!(
            "reloaded {}: added {}; changed {}; removed {}; {unchanged} unchanged",
            path.display(),
            list(&added),
            list(&changed),
            list(&removed)
        );
        crate::info!("{line}");
        Ok(line)
    }

    /// The answer to a control socket command (one of [`api::COMMANDS`], with its
    /// argument).
    fn answer(&mut self, command: &str) -> serde_json::Value {
        let (word, name) = command.split_once(' ').unwrap_or((command, ""));
        let name = name.trim();
        // CONN or CONN/CHILD.
        let (conn, child) = match name.split_once('/') {
            Some((conn, child)) => (conn, Some(child)),
            None => (name, None),
        };
        let policy = self.endpoint.find(conn);
        let now = ike::Instant(self.start.elapsed());
        // The child's index, when CONN/CHILD names one.
        let child = match (word, policy, child) {
            ("up" | "down", Some(policy), Some(child)) => {
                let children = &self.endpoint.policies()[policy].children;
                let Some(index) = children.iter().position(|c| c.name == child) else {
                    return serde_json::json!({ "error": format!("no child named {child:?} in {name:?}") });
                };
                Some(index)
            }
            _ => None,
        };
        match (word, policy) {
            ("status", _) => self
                .registry
                .status(self.start.elapsed(), self.dataplane.as_ref()),
            ("reload", _) => match self.reload(now) {
                Ok(line) => serde_json::json!({ "reloaded": line }),
                Err(e) => {
                    crate::warn!("{e}");
                    serde_json::json!({ "error": e })
                }
            },
            ("conns", _) => {
                let conns: Vec<serde_json::Value> = self
                    .endpoint
                    .connections()
                    .map(|(i, p)| {
                        serde_json::json!({
                            "name": p.name,
                            "remote_addrs": p.remote_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            "children": p.children.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                            "ike_sas": self.registry.ike_sas_of(&p.name),
                            "held": self.endpoint.held(i),
                            "children_held": self.endpoint.held_children(i).into_iter()
                                .map(|c| p.children[c].name.clone()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                serde_json::json!({ "connections": conns })
            }
            ("up" | "down", None) => {
                serde_json::json!({ "error": format!("no connection named {conn:?}") })
            }
            ("up", Some(policy)) => {
                crate::info!("{name}: brought up (esptun up)");
                let result = match child {
                    Some(child) => self.endpoint.up_child(now, policy, child),
                    None => self.endpoint.up(now, policy),
                };
                match result {
                    Ok(()) => serde_json::json!({ "up": name }),
                    Err(e) => serde_json::json!({ "error": e }),
                }
            }
            ("down", Some(policy)) => {
                crate::info!("{name}: taken down (esptun down)");
                match child {
                    Some(child) => {
                        let deleted = self.endpoint.down_child(now, policy, child);
                        serde_json::json!({ "down": name, "child_sas_deleted": deleted })
                    }
                    None => {
                        let deleted = self.endpoint.down(now, policy);
                        serde_json::json!({ "down": name, "ike_sas_deleted": deleted })
                    }
                }
            }
            _ => {
                let drops: serde_json::Map<String, serde_json::Value> = self
                    .dataplane
                    .drops()
                    .into_iter()
                    .map(|(why, n)| (why.to_string(), n.into()))
                    .collect();
                serde_json::json!({ "drops": drops, "ike_malformed": self.endpoint.malformed() })
            }
        }
    }

    /// The socket to send from `local` to `remote`: bound to `local`, else the wildcard.
    fn socket(&self, local: SocketAddr, remote: SocketAddr) -> Option<&IkeSocket> {
        let candidates = || {
            self.sockets.iter().filter(move |s| {
                s.bound.port() == local.port() && s.bound.is_ipv4() == remote.is_ipv4()
            })
        };
        candidates()
            .find(|s| s.bound.ip() == local.ip())
            .or_else(|| candidates().find(|s| s.bound.ip().is_unspecified()))
            .map(|s| &**s)
    }

    /// RFC 3948 §2.3: one 0xff byte keeps our NAT's mapping for the peer open.
    fn send_keepalives(&self) {
        for &(local, remote) in self.keepalives.values() {
            if let Some(socket) = self.socket(local, remote)
                && let Err(e) = socket.send(&[0xff], local.ip(), remote)
            {
                crate::warn!("keepalive {local} -> {remote}: {e}");
            }
        }
    }

    /// Acts on and prints the engine's events, then sends what it queued: a Child SA is
    /// in the data plane before the message that lets the peer use it leaves.
    fn flush(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            let connection = log::connection(&event)
                .or_else(|| log::spi_i(&event).and_then(|spi| self.registry.connection_of(spi)))
                .unwrap_or("-")
                .to_string();
            // Formatted only when the level lets the line out.
            match log::level(&event) {
                Level::Warn => crate::warn!("{connection} {}", log::line(&event)),
                _ => crate::info!("{connection} {}", log::line(&event)),
            }
            if let Some(m) = self.metrics.as_mut() {
                m.on_event(&event, &self.registry);
            }
            self.registry.on_event(&event, self.start.elapsed());
            match &event {
                Event::Message(m) => crate::debug!("{connection} {}", log::json(m)),
                Event::IkeSaUp(up) | Event::IkeSaRekeyed { up, .. } => {
                    if let Event::IkeSaRekeyed { old, .. } = &event {
                        self.keepalives.remove(old);
                        if let Some(hooked) = self.hooked.remove(old) {
                            self.hooked.insert(up.spi_i, hooked);
                        }
                    } else if let Some(cmd) = self.updown.get(&up.connection) {
                        let env = updown_env(up, &self.sections.2.tun);
                        run_updown(cmd, "up", &env);
                        self.hooked.insert(up.spi_i, (cmd.clone(), env));
                    }
                    if matches!(event, Event::IkeSaUp(_))
                        && up.initiator
                        && !up.virtual_ips.is_empty()
                    {
                        let old = self
                            .virtual_ips
                            .insert(up.connection.clone(), up.virtual_ips.clone())
                            .unwrap_or_default();
                        for &vip in up.virtual_ips.iter().filter(|v| !old.contains(v)) {
                            if let Err(e) = self.dataplane.add_virtual_ip(vip) {
                                crate::error!("{}: {e}", up.connection);
                            }
                        }
                        for vip in old {
                            if !self.virtual_ips.values().any(|v| v.contains(&vip)) {
                                self.dataplane.remove_virtual_ip(vip);
                            }
                        }
                    }
                    if up.behind_nat {
                        self.keepalives.insert(up.spi_i, (up.local, up.remote));
                    }
                    if let Some(k) = self.keylog.as_mut()
                        && let Err(e) = k.ike(up)
                    {
                        crate::error!("key log: {e}");
                    }
                }
                Event::ChildSaUp(c) => {
                    if let Err(e) = self.dataplane.install(c) {
                        crate::error!("{connection} CHILD_SA {} not installed: {e}", c.child);
                    }
                    if let Some(k) = self.keylog.as_mut()
                        && let Err(e) = k.esp(c)
                    {
                        crate::error!("key log: {e}");
                    }
                }
                Event::ChildSaOutbound { spi_in, .. } => self.dataplane.activate(*spi_in),
                Event::ChildSaDown { spi_in, .. } => {
                    if let Some(line) = self.dataplane.remove(*spi_in) {
                        crate::info!("{connection} {line}");
                    }
                }
                Event::IkeSaMoved {
                    spi_i,
                    local,
                    remote,
                    encap,
                    behind_nat,
                    children,
                } => {
                    for &spi_in in children {
                        self.dataplane.move_child(spi_in, *local, *remote, *encap);
                    }
                    if *behind_nat {
                        self.keepalives.insert(*spi_i, (*local, *remote));
                    } else {
                        self.keepalives.remove(spi_i);
                    }
                }
                // Its Child SAs came first, each as ChildSaDown (a rekeyed IKE SA has none).
                Event::IkeSaDown { spi_i, .. } => {
                    self.keepalives.remove(spi_i);
                    if let Some((cmd, env)) = self.hooked.remove(spi_i) {
                        run_updown(&cmd, "down", &env);
                    }
                }
                _ => {}
            }
        }
        while let Some(t) = self.endpoint.poll_transmit() {
            let now = self.start.elapsed();
            let Some(socket) = self.socket(t.local, t.remote) else {
                let what = format!("no socket for {} -> {}", t.local, t.remote);
                self.send_errors
                    .note(now, what)
                    .iter()
                    .for_each(|l| crate::warn!("{l}"));
                continue;
            };
            let data = if t.local.port() == self.natt_port {
                [&crate::wire::NON_ESP_MARKER[..], &t.data].concat()
            } else {
                t.data
            };
            if let Err(e) = socket.send(&data, t.local.ip(), t.remote) {
                let what = format!("send {} -> {}: {e}", t.local, t.remote);
                self.send_errors
                    .note(now, what)
                    .iter()
                    .for_each(|l| crate::warn!("{l}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_failures_in_a_flood_make_a_line_a_second_and_a_count() {
        let mut errors = SendErrors::default();
        let ms = Duration::from_millis;
        let mut lines = Vec::new();
        for i in 0..3000 {
            lines.extend(errors.note(ms(i), format!("send to {i}")));
        }
        lines.extend(errors.flush());
        assert_eq!(
            lines,
            [
                "send to 0",
                "999 more send failures, the last: send to 999",
                "send to 1000",
                "999 more send failures, the last: send to 1999",
                "send to 2000",
                "999 more send failures, the last: send to 2999",
            ]
        );
        assert_eq!(errors.flush(), None);
    }
}
