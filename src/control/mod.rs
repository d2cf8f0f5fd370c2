//! The control thread: binds the IKE sockets, drives the sans-IO engine with the
//! real clock and the OS random generator, initiates the connections marked to
//! start, logs every event, and on SIGINT/SIGTERM deletes its IKE SAs before leaving.

mod log;
mod socket;

use crate::config::Config;
use crate::crypto::Random;
use crate::ike::{self, Endpoint, Event, Settings};
use log::KeyLog;
use socket::{IkeSocket, Received};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// How `esptun run` was asked to behave.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// Print every IKE message as JSON, decrypted.
    pub verbose: bool,
    /// Write keys to this Wireshark profile directory.
    pub keylog: Option<PathBuf>,
}

/// The operating system's random generator.
struct OsRandom;

impl Random for OsRandom {
    #[allow(
        clippy::disallowed_methods,
        reason = "the driver is where real randomness enters"
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(serve(config, options))
}

/// The address the kernel would send from to reach `remote`.
fn route_source(remote: SocketAddr) -> Result<IpAddr, String> {
    let any: SocketAddr = if remote.is_ipv4() {
        (IpAddr::from([0, 0, 0, 0]), 0).into()
    } else {
        (IpAddr::from([0u16; 8]), 0).into()
    };
    let probe = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
    probe
        .connect(remote)
        .map_err(|e| format!("no route to {remote}: {e}"))?;
    Ok(probe.local_addr().map_err(|e| e.to_string())?.ip())
}

#[allow(clippy::disallowed_methods, reason = "the driver owns the clocks")]
fn clocks() -> (std::time::Instant, Duration) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (std::time::Instant::now(), unix)
}

async fn serve(config: Config, options: Options) -> Result<(), String> {
    let (start, unix_time_at_start) = clocks();
    let now = move || ike::Instant(start.elapsed());
    let listen = config.listen.clone();
    let mut sockets = Vec::new();
    for addr in &listen.addrs {
        for port in [listen.ike_port, listen.natt_port] {
            let bound = SocketAddr::new(*addr, port);
            let socket = IkeSocket::bind(bound).map_err(|e| format!("bind {bound}: {e}"))?;
            println!("listening on {bound}");
            sockets.push(Arc::new(socket));
        }
    }
    let (tx, mut rx) = mpsc::channel::<Received>(1024);
    for socket in &sockets {
        let (socket, tx) = (socket.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                match socket.recv().await {
                    Ok(r) => {
                        if tx.send(r).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("receive on {}: {e}", socket.bound),
                }
            }
        });
    }
    let settings = Settings {
        natt_port: listen.natt_port,
        cookie_threshold: config.ike.cookie_threshold,
        half_open_timeout: config.ike.half_open_timeout,
        unix_time_at_start,
        ..Settings::default()
    };
    let policies = config
        .connections
        .iter()
        .map(|c| c.policy.clone())
        .collect();
    let mut endpoint = Endpoint::new(settings, policies, Box::new(OsRandom));
    let mut keylog = match &options.keylog {
        Some(dir) => Some(KeyLog::create(dir).map_err(|e| format!("{}: {e}", dir.display()))?),
        None => None,
    };
    for (index, c) in config
        .connections
        .iter()
        .enumerate()
        .filter(|(_, c)| c.start)
    {
        let Some(&remote_ip) = c.policy.remote_addrs.first() else {
            continue;
        };
        let remote = SocketAddr::new(remote_ip, c.remote_port);
        let local_ip = match c.policy.local_addrs.first() {
            Some(ip) => *ip,
            None => route_source(remote).map_err(|e| c.origin.error(e).to_string())?,
        };
        let local = SocketAddr::new(local_ip, listen.ike_port);
        println!("initiating {} {local} -> {remote}", c.policy.name);
        if let Err(e) = endpoint.initiate(now(), index, local, remote) {
            eprintln!("{}", c.origin.error(format!("cannot initiate: {e}")));
        }
    }
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        flush(
            &mut endpoint,
            &sockets,
            &options,
            keylog.as_mut(),
            listen.natt_port,
        );
        if stopping.is_some_and(|until| {
            endpoint.established() == 0 || tokio::time::Instant::now() >= until
        }) {
            return Ok(());
        }
        let timer = endpoint
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(start + t.0));
        let wake = [timer, stopping].into_iter().flatten().min();
        tokio::select! {
            Some(r) = rx.recv() => handle(&mut endpoint, now(), r, listen.natt_port),
            () = sleep_until(wake) => endpoint.handle_timeout(now()),
            _ = interrupt.recv(), if stopping.is_none() => {
                println!("interrupted: deleting IKE SAs");
                endpoint.delete_all(now());
                stopping = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = terminate.recv(), if stopping.is_none() => {
                println!("terminated: deleting IKE SAs");
                endpoint.delete_all(now());
                stopping = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
        }
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Hands a datagram to the engine; on the NAT-T port only those behind the non-ESP
/// marker are IKE (RFC 3948 §2.2): the rest is ESP or a NAT keepalive.
fn handle(endpoint: &mut Endpoint, now: ike::Instant, r: Received, natt_port: u16) {
    let ike = if r.local.port() == natt_port {
        match r.data.strip_prefix(&crate::wire::NON_ESP_MARKER) {
            Some(ike) => ike,
            // ESP belongs to the data plane (issue 4); keepalives (0xff) carry nothing.
            None => return,
        }
    } else {
        &r.data
    };
    endpoint.handle(now, r.local, r.remote, ike);
}

/// Sends what the engine queued, then prints its events.
fn flush(
    endpoint: &mut Endpoint,
    sockets: &[Arc<IkeSocket>],
    options: &Options,
    mut keylog: Option<&mut KeyLog>,
    natt_port: u16,
) {
    while let Some(t) = endpoint.poll_transmit() {
        let socket = sockets
            .iter()
            .filter(|s| s.bound.port() == t.local.port() && s.bound.is_ipv4() == t.remote.is_ipv4())
            .find(|s| s.bound.ip() == t.local.ip())
            .or_else(|| {
                sockets.iter().find(|s| {
                    s.bound.port() == t.local.port()
                        && s.bound.is_ipv4() == t.remote.is_ipv4()
                        && s.bound.ip().is_unspecified()
                })
            });
        let Some(socket) = socket else {
            eprintln!("no socket for {} -> {}", t.local, t.remote);
            continue;
        };
        let data = if t.local.port() == natt_port {
            [&crate::wire::NON_ESP_MARKER[..], &t.data].concat()
        } else {
            t.data
        };
        if let Err(e) = socket.send(&data, t.local.ip(), t.remote) {
            eprintln!("send {} -> {}: {e}", t.local, t.remote);
        }
    }
    while let Some(event) = endpoint.poll_event() {
        println!("{}", log::line(&event));
        match &event {
            Event::Message(m) if options.verbose => println!("{}", log::json(m)),
            Event::IkeSaUp(up) => {
                if let Some(k) = keylog.as_deref_mut() {
                    if let Err(e) = k.ike(up) {
                        eprintln!("key log: {e}");
                    }
                }
            }
            Event::ChildSaUp(c) => {
                if let Some(k) = keylog.as_deref_mut() {
                    if let Err(e) = k.esp(c) {
                        eprintln!("key log: {e}");
                    }
                }
            }
            _ => {}
        }
    }
}
