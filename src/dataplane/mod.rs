//! The userspace ESP data plane: worker threads, one per core by default, each
//! owning one queue of a multi-queue TUN device, one ESP socket per family and
//! transport, and its buffers.
//!
//! Outbound, a worker reads a batch from its TUN queue, finds each packet's Child SA by
//! its traffic selectors, seals it in place and sends the batch with one sendmmsg.
//! Which worker reads a packet is the TUN's steering program's choice (`steer`): the
//! flows of per-resource tunnels take turns, all those of another SA go to the worker
//! of its inbound SPI. Outbound SAs are shared (`Arc`) by all workers: their sequence
//! number is one atomic. Inbound, the kernel steers each ESP packet to the worker that
//! owns its SPI (a classic BPF program on the sockets, `SPI % workers`), so every
//! replay window has exactly one owner and the fast path takes no lock. A spread SA
//! (for a peer without per-resource SAs, its SPI says so) has a part on every worker,
//! each with the keys and a replay window over its own class of sequence numbers, and
//! the program steers its packets by sequence number: one tunnel's decryption uses
//! every core, though a flow's packets may reach the TUN out of order. The non-ESP
//! marker steers IKE on the NAT-T port to the control thread's socket instead. UDP
//! sockets receive with GRO. A train of datagrams (a peer's GSO run, or the kernel's
//! GRO) is steered by its first; what in it belongs to another worker or the control
//! thread goes on to it (`relay`).
//!
//! The control thread installs and removes SAs with messages that workers apply
//! between batches.
//!
//! Fail closed: every configured child is [`SaSink::protect`]ed from start-up to
//! shutdown. Its remote selectors are routed into the TUN (in esptun's own table, see
//! `route`) whether or not it has an SA, and a packet for it without an SA is held
//! in a small queue and an SA asked for ([`DataplaneEvent::Acquire`]), never sent in
//! clear. When several SAs match a packet, the one activated last carries it, so a
//! rekey is make-before-break: the new inbound SA is installed first, the outbound
//! one is activated once the peer has its side, and the old SA keeps opening
//! stragglers until it is removed.

mod buf;
mod coalesce;
mod packet;
mod relay;
mod route;
mod segment;
mod socket;
mod steer;
mod worker;

pub use buf::PacketBuf;
pub use packet::Flow;

use crate::config::{DataplaneSettings, Listen};
use crate::esp::replay::Class;
use crate::esp::{InboundSa, OutboundSa, SaKeys};
use crate::ike::{ChildSaUp, Lifetime, Limits, is_spread};
use crate::netio::Received;
use crate::sink::{Protected, SaSink};
use crate::wire::payload::{AddrRange, TsRange};
use crossbeam_channel::Sender;
use nix::sys::eventfd::{EfdFlags, EventFd};
use relay::{Owner, Relay};
use route::Routes;
use socket::{EspSockets, Transport};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender, unbounded_channel};
use tun_rs::{DeviceBuilder, SyncDevice};

/// Outer IPv6 header, UDP header, ESP header, an 8-byte IV, at most 3 bytes of
/// padding, pad length, next header and a 16-byte ICV: the TUN MTU leaves room for
/// this much, so AEAD SAs over either family never need an ICMP error.
const TUN_MTU_OVERHEAD: u16 = 40 + 8 + 8 + 8 + 3 + 2 + 16;

/// Why a packet was dropped. Each has a counter per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Outbound: no Child SA's selectors cover it. Inbound: unknown SPI.
    NoSa,
    /// Inbound: a sequence number already seen or left of the window.
    Replay,
    /// Inbound: the ICV did not verify.
    BadIcv,
    /// Inbound: the inner packet is outside the SA's selectors.
    SelectorMismatch,
    /// Not parseable: bad IP header, bad ESP padding or next header, truncated.
    Malformed,
    /// Outbound: too big for the path with DF set; an ICMP error went back.
    TooBig,
    /// The SA reached its hard byte or packet lifetime, or used up its sequence numbers.
    Expired,
    /// The kernel refused to send or deliver it.
    Io,
    /// Outbound: for a protected child without SA, but its hold queue was full (the
    /// oldest held packet goes) or the packet too big to keep.
    HoldOverflow,
    /// Outbound: held for a protected child longer than an SA took to come (30 s).
    HoldExpired,
    /// Inbound: in a GSO or GRO train that reached another worker or the control
    /// thread than its own, and no room on the way to it (see `relay`).
    Handoff,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        DropReason::NoSa,
        DropReason::Replay,
        DropReason::BadIcv,
        DropReason::SelectorMismatch,
        DropReason::Malformed,
        DropReason::TooBig,
        DropReason::Expired,
        DropReason::Io,
        DropReason::HoldOverflow,
        DropReason::HoldExpired,
        DropReason::Handoff,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoSa => "no_sa",
            DropReason::Replay => "replay",
            DropReason::BadIcv => "bad_icv",
            DropReason::SelectorMismatch => "selector_mismatch",
            DropReason::Malformed => "malformed",
            DropReason::TooBig => "too_big",
            DropReason::Expired => "expired",
            DropReason::Io => "io",
            DropReason::HoldOverflow => "hold_overflow",
            DropReason::HoldExpired => "hold_expired",
            DropReason::Handoff => "handoff",
        }
    }
}

/// A worker's drop counters, read by the control thread.
#[derive(Default)]
pub struct Drops([AtomicU64; DropReason::ALL.len()]);

impl Drops {
    fn count(&self, why: DropReason) {
        self.0[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, why: DropReason) -> u64 {
        self.0[why as usize].load(Ordering::Relaxed)
    }
}

/// The batches one worker moved, by size: `OUTBOUND`, packets read from
/// the TUN at once; `INBOUND`, datagrams received at once (from one or two
/// trains with UDP GRO); `TRAINS`, datagrams per UDP GRO receive (1 when
/// nothing was coalesced). Only that worker writes them, once a batch; the control
/// thread sums them for metrics.
pub struct Batches([[AtomicU64; worker::BATCH + 1]; 3]);

impl Default for Batches {
    fn default() -> Self {
        Self([const { [const { AtomicU64::new(0) }; worker::BATCH + 1] }; 3])
    }
}

impl Batches {
    /// Packets read from the TUN at once.
    const OUTBOUND: usize = 0;
    /// Datagrams received at once.
    const INBOUND: usize = 1;
    /// Datagrams per UDP GRO receive.
    const TRAINS: usize = 2;

    fn count(&self, kind: usize, size: usize) {
        self.0[kind][size.min(worker::BATCH)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Packets and bytes (inner) through one SA direction.
#[derive(Default)]
pub struct Traffic {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    fn add(&self, len: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// (packets, bytes) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Which of `limits` this traffic has reached, if any.
    fn reached(&self, limits: &Limits) -> Option<&'static str> {
        let (packets, bytes) = self.get();
        if limits.packets.is_some_and(|l| packets >= l) {
            Some("packets")
        } else if limits.bytes.is_some_and(|l| bytes >= l) {
            Some("bytes")
        } else {
            None
        }
    }
}

/// What the data plane tells the control thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataplaneEvent {
    /// A packet for a protected child without SA is held: negotiate one. Sent at most
    /// once a second per child and worker.
    Acquire {
        /// The connection's index in the configuration (the engine's policy index).
        policy: usize,
        /// The child's index in the connection.
        child: usize,
    },
    /// ESP arrived for an SPI no worker has. Sent at most once a second per peer and
    /// SPI, and a few times a second per worker in all.
    UnknownSpi {
        /// The socket it arrived on: its bound address, which may be a wildcard.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// The SPI.
        spi: u32,
    },
    /// Authentic ESP in UDP came from `remote`, not from where the Child SA sends:
    /// a NAT in front of the peer mapped it anew. Sent once per new address.
    PeerMoved {
        /// The Child SA, by our inbound SPI.
        spi_in: u32,
        /// Where it came from.
        remote: SocketAddr,
    },
    /// A worker stopped without being told to: its share of the traffic is lost and
    /// the steering programs still send it packets, so the daemon must not go on.
    WorkerFailed {
        /// Its index (its thread is `esp-worker-INDEX`).
        worker: usize,
        /// Its error, or that it panicked.
        why: String,
    },
}

/// A configured child's selectors, which workers hold packets for while no SA
/// covers them.
struct Protection {
    policy: usize,
    child: usize,
    local_ts: Vec<TsRange>,
    remote_ts: Vec<TsRange>,
}

/// An outbound Child SA with its policy, shared by every worker. A move (MOBIKE,
/// a NAT's new mapping) replaces it with a clone on the new path, which shares its
/// SA state and counters.
#[derive(Clone)]
pub struct Outbound {
    sa: Arc<OutboundSa>,
    spi: u32,
    /// Our inbound SPI, which names the Child SA everywhere (the outbound SPI is the
    /// peer's choice and need not be unique).
    id: u32,
    /// The protected child it serves: its held packets go out with it.
    policy: usize,
    child: usize,
    /// Our selectors: the packet's source must be within them.
    local_ts: Vec<TsRange>,
    /// The peer's: the packet's destination must be within them.
    remote_ts: Vec<TsRange>,
    /// Index into each worker's sockets (all workers open them in the same order).
    socket: usize,
    /// Where ESP goes: the peer's NAT-T address and port, or its address for raw ESP.
    peer: SocketAddr,
    /// Our outer address, the source of every packet.
    local: IpAddr,
    /// The largest inner packet that fits the path MTU once sealed.
    max_inner: usize,
    /// The worker that sends with it ahead of unpinned SAs: for a per-resource SA
    /// (RFC 9611), the one its inbound SPI is steered to, so each flow's packets stay
    /// on one worker both ways.
    pinned: Option<usize>,
    /// Bytes and packets after which it must not be used.
    hard: Limits,
    traffic: Arc<Traffic>,
}

/// An inbound Child SA, owned by one worker; a spread SA's part on one worker.
pub struct Inbound {
    sa: InboundSa,
    local_ts: Vec<TsRange>,
    remote_ts: Vec<TsRange>,
    hard: Limits,
    traffic: Arc<Traffic>,
    /// Where the peer sends ESP in UDP from, to notice a NAT's new mapping; None
    /// for raw ESP.
    peer: Option<SocketAddr>,
}

/// What the control thread tells a worker.
enum Command {
    /// Hold packets for a child while no SA covers them (every worker).
    Protect(Arc<Protection>),
    /// Forget the protections of this connection and the packets held for them.
    Unprotect(usize),
    /// Send with this SA, ahead of every older one, starting with the packets held
    /// for its child (every worker).
    Outbound(Arc<Outbound>),
    /// Take ownership of an inbound SA (the worker its SPI is steered to), or of
    /// the worker's part of a spread one.
    Inbound(u32, Box<Inbound>),
    /// Send with this SA instead of the one with its install id, if that one is in
    /// use (every worker).
    Move(Arc<Outbound>),
    /// The peer of this inbound SA now sends from here (its owner, or every worker
    /// for a spread SA).
    InboundPeer(u32, SocketAddr),
    /// Forget both directions of the Child SA with this inbound SPI.
    Remove(u32),
    /// Leave the loop.
    Stop,
}

struct WorkerHandle {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
    drops: Arc<Drops>,
    batches: Arc<Batches>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    fn send(&self, command: Command) {
        // A worker that is gone has nothing left to update.
        if self.commands.send(command).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

/// Where an outbound SA's packets go.
struct Path {
    /// Index into each worker's sockets.
    socket: usize,
    peer: SocketAddr,
    local: IpAddr,
    encap: bool,
}

impl Path {
    /// The largest inner packet that `sa` fits into the path MTU on this path.
    fn max_inner(&self, sa: &OutboundSa, path_mtu: u16) -> usize {
        let outer_ip = if self.local.is_ipv4() { 20 } else { 40 };
        let udp = if self.encap { 8 } else { 0 };
        sa.max_payload(usize::from(path_mtu) - outer_ip - udp)
    }
}

/// One installed Child SA, as the control thread tracks it.
struct Installed {
    name: String,
    inbound: Arc<Traffic>,
    outbound: Arc<Outbound>,
    /// The workers send with it.
    active: bool,
    /// Routes it added (its remote selectors no protected route covers).
    routes: Vec<(IpAddr, u8)>,
    lifetime: Lifetime,
    /// Soft and hard limits already reported.
    reported: (bool, bool),
    /// Inbound packets at the last [`Dataplane::inbound_active`].
    seen: u64,
}

/// The running data plane: the TUN device, the workers, the installed SAs.
pub struct Dataplane {
    settings: DataplaneSettings,
    tun_index: u32,
    workers: Vec<WorkerHandle>,
    sockets: Vec<(Transport, SocketAddr)>,
    installed: HashMap<u32, Installed>,
    /// Prefixes of protected children, with the connection of each, routed from
    /// start-up (or the reload that added it) until shutdown (or the reload that
    /// removed the last connection protecting it).
    protected: Vec<((IpAddr, u8), usize)>,
    /// How many installed SAs route each prefix no protected one covers.
    route_users: HashMap<(IpAddr, u8), usize>,
    /// Our table and rules, left in place unless released.
    routes: Routes,
    /// Whether the TUN carries virtio-net headers (GSO/GRO).
    pub offload: bool,
    /// Passes ESP that reached the control thread's socket to its worker.
    relay: Arc<Relay>,
    /// Shares new flows among the workers in turn, but those of an SA's destinations
    /// that one worker must seal (see [`Dataplane::home`]).
    steering: Option<steer::Steering>,
}

/// Packets each worker holds per protected child while no SA covers them.
const HOLD_PACKETS: usize = 32;

impl Dataplane {
    /// Takes over the routing table, creates the TUN device and starts the workers;
    /// returns with it the receiver of the workers' events. The control thread must
    /// already have bound the NAT-T port with SO_REUSEPORT: its socket is the first of
    /// the port's group, where the steering program sends IKE. IKE that reaches a
    /// worker anyway (in a GSO or GRO train) goes to `ike`, where the control thread's
    /// sockets put theirs.
    pub fn start(
        settings: &DataplaneSettings,
        listen: &Listen,
        ike: mpsc::Sender<Received>,
    ) -> io::Result<(Self, UnboundedReceiver<DataplaneEvent>)> {
        let routes = Routes::claim(settings.route_table, settings.fwmark).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("routing table {}: {e}", settings.route_table),
            )
        })?;
        let n = settings.workers;
        let mtu = settings.path_mtu - TUN_MTU_OVERHEAD;
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(&settings.tun)
                .mtu(mtu)
                .multi_queue(true)
                .offload(offload)
                .tx_queue_len(1000)
                .enable(false)
                .build_sync()
        };
        let (first, offload) = match build(settings.offload) {
            Ok(dev) => (dev, settings.offload),
            Err(e) if settings.offload => {
                crate::warn!("TUN offload unavailable ({e}); using plain reads and writes");
                (build(false)?, false)
            }
            Err(e) => return Err(e),
        };
        // No link-local address: the kernel would send router solicitations and MLD
        // reports into the tunnel, where no policy covers them.
        // Where /proc/sys is read-only (containers), `net.ipv6.conf.default.addr_gen_mode
        // = 1` does the same; otherwise the solicitations are only dropped, so warn.
        let gen_mode = format!("/proc/sys/net/ipv6/conf/{}/addr_gen_mode", settings.tun);
        let current = std::fs::read_to_string(&gen_mode).unwrap_or_default();
        if !current.is_empty()
            && current.trim() != "1"
            && let Err(e) = std::fs::write(&gen_mode, "1")
        {
            crate::warn!("{gen_mode}: {e}; the TUN gets a link-local address");
        }
        first.enabled(true)?;
        let tun_index = first.if_index()?;
        let mut queues: Vec<SyncDevice> = vec![first];
        for _ in 1..n {
            queues.push(queues[0].try_clone()?);
        }
        let steering = if n > 1 {
            steer::Steering::attach(&queues[0], n)
                .map_err(|e| crate::warn!("TUN steering program unavailable ({e}): the kernel places each flow on a worker by its hash"))
                .ok()
        } else {
            None
        };
        let sockets = socket::addresses(listen);
        let mut worker_sockets: Vec<EspSockets> = Vec::new();
        for index in 0..n {
            worker_sockets.push(EspSockets::open(&sockets, index, n, settings.fwmark)?);
        }
        let (events, receiver) = unbounded_channel();
        let wakes = (0..n)
            .map(|_| {
                EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (relay, inboxes) = Relay::new(wakes.clone(), worker::RX_OFFSET, ike);
        let relay = Arc::new(relay);
        let mut workers = Vec::new();
        let each = queues
            .into_iter()
            .zip(worker_sockets)
            .zip(wakes.into_iter().zip(inboxes));
        for (index, ((queue, sockets), (wake, inbox))) in each.enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let drops = Arc::new(Drops::default());
            let batches = Arc::new(Batches::default());
            queue.set_nonblocking(true)?;
            let (w_wake, w_drops, w_events) = (wake.clone(), drops.clone(), events.clone());
            let w_batches = batches.clone();
            let w_relay = relay.clone();
            let supervisor = events.clone();
            let hold_size = usize::from(mtu);
            // Built on its own thread: the batch headers hold raw pointers (not Send).
            let thread = std::thread::Builder::new()
                .name(format!("esp-worker-{index}"))
                .spawn(move || {
                    supervised(index, &supervisor, move || {
                        // Workers parse whatever the network sends: they need nothing.
                        crate::privilege::restrict(&[])?;
                        let channels = worker::Channels {
                            commands: rx,
                            wake: w_wake,
                            drops: w_drops,
                            batches: w_batches,
                            events: w_events,
                            relay: w_relay,
                            inbox,
                        };
                        worker::Worker::new(index, queue, sockets, channels, hold_size).run()
                    });
                })?;
            workers.push(WorkerHandle {
                commands: tx,
                wake,
                drops,
                batches,
                thread: Some(thread),
            });
        }
        let dataplane = Self {
            settings: settings.clone(),
            tun_index,
            workers,
            sockets,
            installed: HashMap::new(),
            protected: Vec::new(),
            route_users: HashMap::new(),
            routes,
            offload,
            relay,
            steering,
        };
        Ok((dataplane, receiver))
    }

    /// Sends the flows to the remote selectors of SA `spi_in` to `worker` (Some) or stops
    /// (None). Each worker takes an SA's sequence numbers as it seals, so an SA sealed by
    /// two workers reaches the peer out of order by up to a batch and by any delay of one
    /// worker, beyond a replay window (strongSwan's is 32 packets): every flow of an SA
    /// that is not per-resource must go to one worker, the one its inbound SPI is
    /// steered to. Where the program's map cannot be written, the program is dropped
    /// and the kernel places flows, keeping each with the queue that wrote its last
    /// reply.
    fn home(&mut self, spi_in: u32, remote_ts: &[TsRange], worker: Option<usize>) {
        let Some(steering) = &mut self.steering else {
            return;
        };
        let prefixes = remote_ts.iter().flat_map(|t| t.addrs.cidrs());
        if let Err(e) = steering.home(spi_in, prefixes, worker) {
            crate::warn!(
                "TUN steering program: {e}; the kernel places each flow on a worker from now on"
            );
            self.steering = None;
        }
    }

    /// Sends the flows of outbound SA `sa`, as it starts to carry them, to the worker of
    /// its inbound SPI, unless it is per-resource (each worker has its own).
    fn home_of(&mut self, sa: &Outbound) {
        if sa.pinned.is_none() {
            let worker = socket::owner(sa.id, self.workers.len());
            self.home(sa.id, &sa.remote_ts, Some(worker));
        }
    }

    /// The workers that hold inbound SA `spi` (or a part of it).
    fn inbound_workers(&self, spi: u32) -> std::ops::Range<usize> {
        let n = self.workers.len();
        if is_spread(spi) {
            0..n
        } else {
            let owner = socket::owner(spi, n);
            owner..owner + 1
        }
    }

    /// Whether a protected child of some connection routes `prefix`.
    fn is_protected(&self, prefix: (IpAddr, u8)) -> bool {
        self.protected.iter().any(|&(p, _)| p == prefix)
    }

    /// This host's addresses; none (so routes get no source) if the kernel will not say.
    fn addresses(&mut self) -> Vec<IpAddr> {
        self.routes.addresses().unwrap_or_else(|e| {
            crate::warn!("cannot list this host's addresses: {e}");
            Vec::new()
        })
    }

    /// Where an SA from `local` to `remote` sends: the socket of its transport and
    /// family bound to `local` (or the wildcard), and the peer's address and port.
    fn path(&self, local: SocketAddr, remote: SocketAddr, encap: bool) -> Result<Path, String> {
        let transport = if encap {
            Transport::Udp
        } else {
            Transport::Raw
        };
        let socket = self
            .sockets
            .iter()
            .position(|&(t, bound)| {
                t == transport
                    && bound.is_ipv4() == local.is_ipv4()
                    && (bound.ip() == local.ip() || bound.ip().is_unspecified())
            })
            .ok_or_else(|| format!("no ESP socket for {}", local.ip()))?;
        Ok(Path {
            socket,
            peer: if encap {
                remote
            } else {
                SocketAddr::new(remote.ip(), 0)
            },
            local: local.ip(),
            encap,
        })
    }

    /// Routes the SA's remote prefixes that no protected route covers (those of a
    /// child whose peer was unknown at start-up: dynamic selectors, any peer);
    /// returns the prefixes it now uses.
    fn route_negotiated(&mut self, c: &ChildSaUp) -> Vec<(IpAddr, u8)> {
        let mut routes = Vec::new();
        let mut sources: Option<Vec<IpAddr>> = None;
        for prefix in c.remote_ts.iter().flat_map(|t| t.addrs.cidrs()) {
            if self.protected.iter().any(|&(p, _)| within(prefix, p)) {
                continue;
            }
            if !self.route_users.contains_key(&prefix) {
                let sources = match &sources {
                    Some(s) => s,
                    None => {
                        let ours = self.addresses();
                        sources.insert(
                            ours.into_iter()
                                .filter(|&a| c.local_ts.iter().any(|t| holds(&t.addrs, a)))
                                .collect(),
                        )
                    }
                };
                // The SA is already with the workers and stays installed (and
                // tracked, so it is removed later); only this route is missing.
                if let Err(e) = self
                    .routes
                    .add(prefix, self.tun_index, source(sources, prefix.0))
                {
                    crate::warn!(
                        "route {}/{} into {}: {e}",
                        prefix.0,
                        prefix.1,
                        self.settings.tun
                    );
                    continue;
                }
            }
            *self.route_users.entry(prefix).or_default() += 1;
            routes.push(prefix);
        }
        routes
    }
}

impl SaSink for Dataplane {
    fn protect(&mut self, protected: &Protected) -> Result<(), String> {
        let &Protected {
            policy,
            child,
            name,
            local_ts,
            remote_ts,
            ..
        } = protected;
        let protection = Arc::new(Protection {
            policy,
            child,
            local_ts: local_ts.to_vec(),
            remote_ts: remote_ts.to_vec(),
        });
        for w in &self.workers {
            w.send(Command::Protect(protection.clone()));
        }
        let ours = self.addresses();
        // A selector for a whole family (a client's, before it has its virtual IP)
        // says nothing about which address is ours: the kernel picks the TUN's.
        let sources: Vec<IpAddr> = ours
            .iter()
            .copied()
            .filter(|&a| {
                local_ts
                    .iter()
                    .any(|t| holds(&t.addrs, a) && *t != crate::ike::ts::family_of(a))
            })
            .collect();
        for prefix in remote_ts.iter().flat_map(|t| t.addrs.cidrs()) {
            if self.is_protected(prefix) {
                self.protected.push((prefix, policy));
                continue;
            }
            if let Some(own) = ours.iter().find(|&&a| covers(prefix, a)) {
                crate::warn!(
                    "{name}: {}/{} holds this host's address {own}: its neighbours there are reached through {}",
                    prefix.0,
                    prefix.1,
                    self.settings.tun
                );
            }
            let failed = |e| {
                format!(
                    "{name}: route {}/{} into {}: {e}",
                    prefix.0, prefix.1, self.settings.tun
                )
            };
            // A route an SA added already is ours; it just stops being the SA's.
            if self.route_users.remove(&prefix).is_none() {
                self.routes
                    .add(prefix, self.tun_index, source(&sources, prefix.0))
                    .map_err(failed)?;
            }
            self.routes.add_blackhole(prefix).map_err(failed)?;
            self.protected.push((prefix, policy));
        }
        Ok(())
    }

    fn unprotect(&mut self, policy: usize) {
        for w in &self.workers {
            w.send(Command::Unprotect(policy));
        }
        let (mut gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.protected)
            .into_iter()
            .partition(|&(_, p)| p == policy);
        self.protected = kept;
        gone.sort_unstable();
        gone.dedup();
        for (prefix, _) in gone {
            if self.is_protected(prefix) {
                continue;
            }
            let removed = self
                .routes
                .delete(prefix, self.tun_index)
                .and_then(|()| self.routes.delete_blackhole(prefix));
            if let Err(e) = removed {
                crate::warn!("remove route {}/{}: {e}", prefix.0, prefix.1);
            }
        }
    }

    fn drop_stale(&mut self) {
        self.routes.drop_stale();
    }

    fn release(&mut self) {
        self.routes.release();
    }

    fn add_virtual_ip(&mut self, addr: IpAddr) -> Result<(), String> {
        self.routes
            .add_address(self.tun_index, addr)
            .map_err(|e| format!("add virtual IP {addr} to {}: {e}", self.settings.tun))
    }

    fn remove_virtual_ip(&mut self, addr: IpAddr) {
        if let Err(e) = self.routes.delete_address(self.tun_index, addr) {
            crate::warn!("remove virtual IP {addr} from {}: {e}", self.settings.tun);
        }
    }

    fn install(&mut self, c: &ChildSaUp) -> Result<(), String> {
        if self.installed.contains_key(&c.spi_in) {
            return Err(format!("inbound SPI {:08x} is installed already", c.spi_in));
        }
        let path = self.path(c.local, c.remote, c.encap)?;
        let keys = |spi, (encryption, integrity)| SaKeys {
            spi,
            encr: c.encr,
            integ: c.integ,
            esn: c.esn,
            encryption,
            integrity,
        };
        let out_sa = OutboundSa::new(&keys(c.spi_out, (&c.keys_out.0, &c.keys_out.1)))
            .map_err(|e| e.to_string())?;
        let workers = self.inbound_workers(c.spi_in);
        let count = workers.len() as u32;
        let in_sas = workers
            .clone()
            .map(|w| {
                // One worker: the whole SA, whichever worker it is.
                let class = Class::new(w as u32, count);
                InboundSa::of_class(
                    &keys(c.spi_in, (&c.keys_in.0, &c.keys_in.1)),
                    self.settings.replay_window,
                    class,
                )
                .map(|sa| (w, sa))
                .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outbound = Arc::new(Outbound {
            max_inner: path.max_inner(&out_sa, self.settings.path_mtu),
            pinned: c
                .per_resource
                .then(|| socket::owner(c.spi_in, self.workers.len())),
            sa: Arc::new(out_sa),
            spi: c.spi_out,
            id: c.spi_in,
            policy: c.policy,
            child: c.child_index,
            local_ts: c.local_ts.clone(),
            remote_ts: c.remote_ts.clone(),
            socket: path.socket,
            peer: path.peer,
            local: path.local,
            hard: c.lifetime.hard,
            traffic: Arc::default(),
        });
        // Shared by a spread SA's parts: lifetimes and `status` count the whole SA.
        let traffic = Arc::new(Traffic::default());
        // Inbound first: the peer may send as soon as it has installed its side.
        for (w, sa) in in_sas {
            let inbound = Box::new(Inbound {
                sa,
                local_ts: c.local_ts.clone(),
                remote_ts: c.remote_ts.clone(),
                hard: c.lifetime.hard,
                traffic: traffic.clone(),
                peer: c.encap.then_some(c.remote),
            });
            self.workers[w].send(Command::Inbound(c.spi_in, inbound));
        }
        if c.outbound {
            self.home_of(&outbound);
            for w in &self.workers {
                w.send(Command::Outbound(outbound.clone()));
            }
        }
        let routes = self.route_negotiated(c);
        self.installed.insert(
            c.spi_in,
            Installed {
                name: c.child.clone(),
                inbound: traffic,
                outbound,
                active: c.outbound,
                routes,
                lifetime: c.lifetime,
                reported: (false, false),
                seen: 0,
            },
        );
        Ok(())
    }

    fn activate(&mut self, spi_in: u32) {
        let Some(sa) = self.installed.get_mut(&spi_in) else {
            return;
        };
        if !sa.active {
            sa.active = true;
            let outbound = sa.outbound.clone();
            self.home_of(&outbound);
            for w in &self.workers {
                w.send(Command::Outbound(outbound.clone()));
            }
        }
    }

    fn move_child(&mut self, spi_in: u32, local: SocketAddr, remote: SocketAddr, encap: bool) {
        let Some(installed) = self.installed.get(&spi_in) else {
            return;
        };
        let path = match self.path(local, remote, encap) {
            Ok(path) => path,
            Err(e) => {
                crate::warn!("CHILD_SA {spi_in:08x}_i stays where it was: {e}");
                return;
            }
        };
        let old = &installed.outbound;
        let moved = Arc::new(Outbound {
            max_inner: path.max_inner(&old.sa, self.settings.path_mtu),
            socket: path.socket,
            peer: path.peer,
            local: path.local,
            ..Outbound::clone(old)
        });
        if installed.active {
            for w in &self.workers {
                w.send(Command::Move(moved.clone()));
            }
        }
        if encap {
            for w in self.inbound_workers(spi_in) {
                self.workers[w].send(Command::InboundPeer(spi_in, remote));
            }
        }
        if let Some(installed) = self.installed.get_mut(&spi_in) {
            installed.outbound = moved;
        }
    }

    fn remove(&mut self, spi_in: u32) -> Option<String> {
        let sa = self.installed.remove(&spi_in)?;
        self.home(spi_in, &sa.outbound.remote_ts, None);
        for w in &self.workers {
            w.send(Command::Remove(spi_in));
        }
        for prefix in &sa.routes {
            let Some(users) = self.route_users.get_mut(prefix) else {
                continue;
            };
            *users -= 1;
            if *users == 0 {
                self.route_users.remove(prefix);
                if let Err(e) = self.routes.delete(*prefix, self.tun_index) {
                    crate::warn!("remove route {}/{}: {e}", prefix.0, prefix.1);
                }
            }
        }
        Some(describe(spi_in, &sa))
    }

    fn inbound_active(&mut self) -> Vec<u32> {
        self.installed
            .iter_mut()
            .filter_map(|(&spi, sa)| {
                let (packets, _) = sa.inbound.get();
                (std::mem::replace(&mut sa.seen, packets) != packets).then_some(spi)
            })
            .collect()
    }

    fn expiries(&mut self) -> Vec<(u32, bool, &'static str)> {
        let mut out = Vec::new();
        for (&spi, sa) in &mut self.installed {
            let reached = |limits: &Limits| {
                sa.inbound
                    .reached(limits)
                    .or_else(|| sa.outbound.traffic.reached(limits))
            };
            if !sa.reported.1
                && let Some(cause) = reached(&sa.lifetime.hard)
            {
                sa.reported = (true, true);
                out.push((spi, true, cause));
                continue;
            }
            if !sa.reported.0
                && let Some(cause) = reached(&sa.lifetime.soft)
            {
                sa.reported.0 = true;
                out.push((spi, false, cause));
            }
        }
        out
    }

    fn traffic(&self, spi_in: u32) -> Option<((u64, u64), (u64, u64))> {
        let sa = self.installed.get(&spi_in)?;
        Some((sa.inbound.get(), sa.outbound.traffic.get()))
    }

    fn installed(&self) -> usize {
        self.installed.len()
    }

    fn drops(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|&why| {
                (
                    why.name(),
                    self.workers.iter().map(|w| w.drops.get(why)).sum(),
                )
            })
            .collect()
    }

    fn batch_sizes(&self) -> [Vec<u64>; 3] {
        [Batches::OUTBOUND, Batches::INBOUND, Batches::TRAINS].map(|kind| {
            (0..=worker::BATCH)
                .map(|size| {
                    self.workers
                        .iter()
                        .map(|w| w.batches.0[kind][size].load(Ordering::Relaxed))
                        .sum()
                })
                .collect()
        })
    }

    fn worker_packets(&self) -> Vec<(u64, u64)> {
        let packets = |w: &WorkerHandle, kind: usize| -> u64 {
            let sizes = &w.batches.0[kind];
            (0..=worker::BATCH)
                .map(|size| size as u64 * sizes[size].load(Ordering::Relaxed))
                .sum()
        };
        self.workers
            .iter()
            .map(|w| (packets(w, Batches::OUTBOUND), packets(w, Batches::INBOUND)))
            .collect()
    }

    fn stray_esp(&mut self, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        let Owner::Worker(to) = relay::owner(datagram, self.workers.len()) else {
            return;
        };
        let Ok(path) = self.path(local, remote, true) else {
            return;
        };
        if !self.relay.copy_to_worker(to, datagram, path.socket, remote) {
            self.workers[to].drops.count(DropReason::Handoff);
        }
    }

    fn report(&self) -> String {
        let mut out = String::new();
        let mut sas: Vec<_> = self.installed.iter().collect();
        sas.sort_by_key(|(spi, _)| **spi);
        for (spi, sa) in sas {
            let _ = writeln!(out, "{}", describe(*spi, sa));
        }
        let _ = write!(out, "drops:");
        for (why, total) in self.drops() {
            let _ = write!(out, " {why}={total}");
        }
        out
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        for w in &self.workers {
            w.send(Command::Stop);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Runs a worker's `body` and reports its end unless it was told to stop: the error
/// it returned, or its panic (whose message the panic hook has printed).
fn supervised(
    worker: usize,
    events: &UnboundedSender<DataplaneEvent>,
    body: impl FnOnce() -> Result<(), String>,
) {
    let why = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => return,
        Ok(Err(why)) => why,
        Err(_) => "panicked".to_string(),
    };
    let _ = events.send(DataplaneEvent::WorkerFailed { worker, why });
}

fn describe(spi_in: u32, sa: &Installed) -> String {
    crate::sink::describe(
        &sa.name,
        spi_in,
        sa.outbound.spi,
        sa.inbound.get(),
        sa.outbound.traffic.get(),
    )
}

/// True if `prefix` holds `addr`.
fn covers((net, len): (IpAddr, u8), addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// True if prefix `inner` lies within prefix `outer`.
fn within(inner: (IpAddr, u8), outer: (IpAddr, u8)) -> bool {
    outer.1 <= inner.1 && covers(outer, inner.0)
}

/// True if `range` holds `addr`.
fn holds(range: &AddrRange, addr: IpAddr) -> bool {
    match (*range, addr) {
        (AddrRange::V4(s, e), IpAddr::V4(a)) => s <= a && a <= e,
        (AddrRange::V6(s, e), IpAddr::V6(a)) => s <= a && a <= e,
        _ => false,
    }
}

/// The source for a route to `dst`: the first of `sources` of its family.
fn source(sources: &[IpAddr], dst: IpAddr) -> Option<IpAddr> {
    sources
        .iter()
        .copied()
        .find(|s| s.is_ipv4() == dst.is_ipv4())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: impl FnOnce() -> Result<(), String>) -> Option<DataplaneEvent> {
        let (events, mut receiver) = unbounded_channel();
        supervised(3, &events, body);
        receiver.try_recv().ok()
    }

    #[test]
    fn a_worker_that_fails_or_panics_is_reported_and_one_told_to_stop_is_not() {
        assert_eq!(end_of(|| Ok(())), None);
        assert_eq!(
            end_of(|| Err("TUN read: bad fd".into())),
            Some(DataplaneEvent::WorkerFailed {
                worker: 3,
                why: "TUN read: bad fd".into()
            })
        );
        assert_eq!(
            end_of(|| panic!("a bug in a worker")),
            Some(DataplaneEvent::WorkerFailed {
                worker: 3,
                why: "panicked".into()
            })
        );
    }
}
