//! One ESP worker: a loop over its TUN queue, its sockets and its command channel.

use super::buf::PacketBuf;
use super::coalesce::{Coalescer, VNET_HDR_NONE};
use super::packet::{self, Flow};
use super::relay::{DatagramAt, Handoff, Relay, Route};
use super::segment::{SegmentError, Segments};
use super::socket::{self, Batch, Datagram, EspSockets, MAX_TRAIN, Transport};
use super::{
    Batches, Command, DataplaneEvent, DropReason, Drops, HOLD_PACKETS, Inbound, Outbound,
    Protection,
};
use crate::esp::{EspError, HEADROOM, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use crate::netio;
use crate::wire::payload::{AddrRange, TsRange};
use crossbeam_channel::Receiver;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::SockaddrStorage;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tun_rs::{IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

/// Packets per batch, from the TUN and from each socket.
pub(super) const BATCH: usize = IDEAL_BATCH_SIZE;
/// Segments a 64 KiB GSO packet splits into when its MSS is at least 1 KiB.
const GSO_SEGMENTS: usize = 64;
/// Every buffer holds the largest IP packet plus the room sealing adds around it.
const BUF_LEN: usize = HEADROOM + 65_535 + 64;
/// With offload the TUN writes its virtio-net header right before the packet, which
/// a read puts at HEADROOM: the header lands in the room sealing writes over later.
const _: () = assert!(VIRTIO_NET_HDR_LEN <= HEADROOM);
/// Where a received datagram is written: the inner packet that opening leaves in it
/// must have room in front for the virtio-net header the TUN wants with offload.
pub(super) const RX_OFFSET: usize = VIRTIO_NET_HDR_LEN;
const _: () = assert!(RX_OFFSET + MAX_TRAIN <= BUF_LEN);
/// Held packets of a child go out in one batch when its SA is activated.
const _: () = assert!(HOLD_PACKETS <= BATCH);
/// The least time between two reports of one kind (an acquire for one child, one
/// peer's unknown SPI).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Unknown-SPI reports a worker sends per REPORT_INTERVAL in all.
const SPI_REPORTS: usize = 10;

#[allow(
    clippy::disallowed_methods,
    reason = "workers pace their reports to the control thread by the clock"
)]
fn clock() -> Instant {
    Instant::now()
}

/// What a worker shares with the control thread.
pub struct Channels {
    /// Commands, applied between batches.
    pub commands: Receiver<Command>,
    /// Written after each command.
    pub wake: Arc<EventFd>,
    /// The drop counters.
    pub drops: Arc<Drops>,
    /// The batch size counters.
    pub batches: Arc<Batches>,
    /// Acquires and unknown SPIs.
    pub events: UnboundedSender<DataplaneEvent>,
    /// Datagrams of trains that belong to other workers or the control thread.
    pub relay: Arc<Relay>,
    /// Datagrams others received for this worker's SPIs.
    pub inbox: Receiver<Handoff>,
}

/// A worker's state; `run` consumes it on its own thread.
pub struct Worker {
    /// Its place among the workers, which says whose SPIs it owns.
    index: usize,
    tun: SyncDevice,
    /// Whether the TUN carries virtio-net headers (GSO/GRO).
    offload: bool,
    sockets: EspSockets,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    drops: Arc<Drops>,
    batches: Arc<Batches>,
    events: UnboundedSender<DataplaneEvent>,
    relay: Arc<Relay>,
    inbox: Receiver<Handoff>,
    /// The workers handed datagrams in this batch, to be woken once each.
    handed: Vec<bool>,
    spd: Spd,
    /// Protected children, each with the packets this worker holds for it.
    held: Vec<Held>,
    /// The largest packet a hold queue keeps (the TUN's MTU).
    hold_size: usize,
    spi_reports: SpiReports,
    /// Inbound SAs this worker owns, by SPI.
    inbound: HashMap<u32, Box<Inbound>>,
    batch: Batch,
    /// Packets from the TUN, sealed in place.
    tx: Vec<PacketBuf>,
    /// Datagrams from the sockets, opened in place.
    rx: Vec<PacketBuf>,
    /// Inner packets for the TUN, swapped out of `rx` (keeps `rx` whole for the next batch).
    to_tun: Vec<PacketBuf>,
    sizes: Vec<usize>,
    /// What each buffer in `tx` holds.
    slots: Vec<Slot>,
    /// The batch's sealed packets, in `tx` order (kept between batches for its capacity).
    sealed: Vec<Sealed>,
    /// Where each inner packet in `to_tun` starts (kept for its capacity, as `sealed`).
    ready: Vec<usize>,
    /// A super-packet with more segments than `tx` has buffers left, while they go out.
    spare: PacketBuf,
    coalescer: Coalescer,
    /// A UDP GRO train as received, whose datagrams are opened from there into `rx`.
    train: Box<[u8]>,
    /// Where each received datagram starts in `train`, when they came in one
    /// (else empty: each is in its `rx` buffer).
    train_at: Vec<usize>,
    /// Each received datagram's length and addresses.
    received: Vec<Datagram>,
    /// Told to stop (possibly in the middle of a batch).
    stopping: bool,
}

/// The security policy database: outbound SAs, among those that cover a packet
/// the one activated last first, so that it carries what older SAs with the same
/// selectors would; SAs pinned to this worker (per-resource SAs) come before all
/// others, so each worker sends with its own. SAs whose remote selectors are single
/// addresses (a gateway's road warriors, by their virtual IPs) are found by the
/// packet's destination, so thousands of them cost one hash lookup; they come
/// before the others, being the most specific.
#[derive(Default)]
struct Spd {
    /// This worker's index, which pinned SAs name.
    worker: usize,
    /// Every SA, in a slot that stays its own until it is removed.
    slots: Vec<Option<Arc<Outbound>>>,
    free: Vec<usize>,
    /// Slots by install id (our inbound SPI).
    by_id: HashMap<u32, usize>,
    /// Slots of the SAs for single addresses, by address, the one activated last first.
    hosts: HashMap<IpAddr, Vec<usize>>,
    /// Slots of the others, the one activated last first.
    ranges: Vec<usize>,
}

impl Spd {
    fn new(worker: usize) -> Self {
        Self {
            worker,
            ..Self::default()
        }
    }

    fn activate(&mut self, sa: Arc<Outbound>) {
        self.remove(sa.id);
        let hosts = single_addresses(&sa.remote_ts);
        let id = sa.id;
        let mine = sa.pinned == Some(self.worker);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(sa);
                slot
            }
            None => {
                self.slots.push(Some(sa));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        match hosts {
            Some(addrs) => {
                for addr in addrs {
                    let order = self.hosts.entry(addr).or_default();
                    let at = place(&self.slots, self.worker, order, mine);
                    order.insert(at, slot);
                }
            }
            None => {
                let at = place(&self.slots, self.worker, &self.ranges, mine);
                self.ranges.insert(at, slot);
            }
        }
    }

    /// Forgets the SA installed as inbound SPI `id`, and no other (outbound SPIs are
    /// the peers' choice: two peers may pick the same).
    fn remove(&mut self, id: u32) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        let Some(sa) = self.slots[slot].take() else {
            return;
        };
        match single_addresses(&sa.remote_ts) {
            Some(addrs) => {
                for addr in addrs {
                    if let Some(slots) = self.hosts.get_mut(&addr) {
                        slots.retain(|&s| s != slot);
                        if slots.is_empty() {
                            self.hosts.remove(&addr);
                        }
                    }
                }
            }
            None => self.ranges.retain(|&s| s != slot),
        }
        self.free.push(slot);
    }

    /// Puts `sa` in the place of the SA with its install id, if this worker sends
    /// with that one (its order among the others stays).
    fn replace(&mut self, sa: Arc<Outbound>) {
        if let Some(&slot) = self.by_id.get(&sa.id) {
            self.slots[slot] = Some(sa);
        }
    }

    /// The slot of the SA for `flow`.
    fn lookup(&self, flow: &Flow) -> Option<usize> {
        let covers = |&slot: &usize| {
            self.slots[slot]
                .as_ref()
                .is_some_and(|sa| flow.selected(&sa.local_ts, &sa.remote_ts))
        };
        let host = self
            .hosts
            .get(&flow.dst)
            .and_then(|s| s.iter().copied().find(covers));
        host.or_else(|| self.ranges.iter().copied().find(covers))
    }

    /// The SA in `slot`, one [`Spd::lookup`] returned.
    fn get(&self, slot: usize) -> &Outbound {
        self.slots[slot]
            .as_deref()
            .expect("lookup returns occupied slots")
    }
}

/// Where a newly activated SA goes in `order` (slots, the one to send with first):
/// first if pinned to `worker`, else after the SAs that are.
fn place(slots: &[Option<Arc<Outbound>>], worker: usize, order: &[usize], mine: bool) -> usize {
    if mine {
        return 0;
    }
    order
        .iter()
        .position(|&s| slots[s].as_ref().is_none_or(|sa| sa.pinned != Some(worker)))
        .unwrap_or(order.len())
}

/// The addresses of selectors that each cover a single address; None if any covers more.
fn single_addresses(selectors: &[TsRange]) -> Option<Vec<IpAddr>> {
    selectors
        .iter()
        .map(|t| match t.addrs {
            AddrRange::V4(s, e) if s == e => Some(IpAddr::V4(s)),
            AddrRange::V6(s, e) if s == e => Some(IpAddr::V6(s)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .filter(|addrs| !addrs.is_empty())
}

/// A protected child as one worker sees it.
struct Held {
    protection: Arc<Protection>,
    queue: HoldQueue,
    /// When this worker last asked for an SA for it.
    acquired: Option<Instant>,
}

/// How long a packet waits for an SA before it is dropped: as long as the kernel's
/// larval SAs hold theirs (`net.core.xfrm_acq_expires`). An SA that comes later
/// should not carry a burst of stale packets (old SYNs, old DNS queries).
const HOLD_TIMEOUT: Duration = Duration::from_secs(30);

/// Packets waiting for an SA: a ring of buffers allocated up front, the oldest
/// pushed out when it is full.
struct HoldQueue {
    slots: Vec<Vec<u8>>,
    /// When each slot's packet was held.
    held_at: Vec<Option<Instant>>,
    size: usize,
    start: usize,
    len: usize,
}

impl HoldQueue {
    fn new(slots: usize, size: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| Vec::with_capacity(size)).collect(),
            held_at: vec![None; slots],
            size,
            start: 0,
            len: 0,
        }
    }

    /// Keeps a copy of `packet`, held at `now`; false if a packet was lost: the
    /// oldest, pushed out, or this one, bigger than a buffer.
    fn push(&mut self, packet: &[u8], now: Instant) -> bool {
        if packet.len() > self.size {
            return false;
        }
        let n = self.slots.len();
        let at = (self.start + self.len) % n;
        let full = self.len == n;
        if full {
            self.start = (self.start + 1) % n;
        } else {
            self.len += 1;
        }
        let slot = &mut self.slots[at];
        slot.clear();
        slot.extend_from_slice(packet);
        self.held_at[at] = Some(now);
        !full
    }

    /// Takes the oldest packet held for less than [`HOLD_TIMEOUT`] at `now`; older
    /// ones are dropped on the way and counted in `stale`.
    fn pop(&mut self, now: Instant, stale: &mut u64) -> Option<&[u8]> {
        while self.len > 0 {
            let at = self.start;
            self.start = (at + 1) % self.slots.len();
            self.len -= 1;
            let fresh = self.held_at[at].is_some_and(|t| now.duration_since(t) < HOLD_TIMEOUT);
            if fresh {
                return Some(&self.slots[at]);
            }
            *stale += 1;
        }
        None
    }
}

/// Which unknown SPIs were reported lately: at most one report per peer and SPI per
/// REPORT_INTERVAL, and SPI_REPORTS in all, so a flood of made-up SPIs costs a
/// short scan per packet and reaches the control thread only a few times a second.
struct SpiReports {
    recent: Vec<(IpAddr, u32, Instant)>,
    window: Option<Instant>,
    sent: usize,
}

impl SpiReports {
    fn new() -> Self {
        Self {
            // Twice the cap: every report of the last interval stays in view.
            recent: Vec::with_capacity(2 * SPI_REPORTS),
            window: None,
            sent: 0,
        }
    }

    /// Whether to report `spi` from `peer` now; if so, it is counted.
    fn allow(&mut self, now: Instant, peer: IpAddr, spi: u32) -> bool {
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= REPORT_INTERVAL)
        {
            self.window = Some(now);
            self.sent = 0;
        }
        if self.sent >= SPI_REPORTS
            || self.recent.iter().any(|&(p, s, at)| {
                p == peer && s == spi && now.duration_since(at) < REPORT_INTERVAL
            })
        {
            return false;
        }
        if self.recent.len() < self.recent.capacity() {
            self.recent.push((peer, spi, now));
        } else if let Some(oldest) = self.recent.iter_mut().min_by_key(|r| r.2) {
            *oldest = (peer, spi, now);
        }
        self.sent += 1;
        true
    }
}

/// A sealed packet waiting to be sent: which buffer, where ESP starts, and which SA
/// (an index into the policy table, which only changes between batches; cloning the
/// `Arc` instead would bounce its count between the cores).
struct Sealed {
    buf: usize,
    head: usize,
    sa: usize,
}

/// What a transmit buffer holds after the TUN reads (with `sizes`, how much).
#[derive(Clone, Copy)]
enum Slot {
    /// An inner packet, sealed in place; `follows`: a later segment of the
    /// super-packet before it, written out here, which that one's verdict covers.
    Packet { follows: bool },
    /// A super-packet, never sent itself: its segments are sealed from here into the
    /// buffers after it, one each.
    Super(Segments),
}

/// The most header bytes (IP, its extensions, transport) a super-packet may have
/// for its segments to be made in place; one with more is written out instead.
const PLACED_HEADERS: usize = 256;

impl Worker {
    /// Sets worker `index` up, holding packets of up to `hold_size` bytes for protected
    /// children; nothing runs until `run`.
    pub fn new(
        index: usize,
        tun: SyncDevice,
        sockets: EspSockets,
        channels: Channels,
        hold_size: usize,
    ) -> Self {
        let buffers = || {
            (0..BATCH)
                .map(|_| PacketBuf::new(BUF_LEN))
                .collect::<Vec<_>>()
        };
        channels.relay.contribute(BUF_LEN);
        Self {
            index,
            offload: tun.tcp_gso(),
            coalescer: Coalescer::new(BATCH),
            tun,
            batch: Batch::new(BATCH, &sockets),
            sockets,
            commands: channels.commands,
            wake: channels.wake,
            drops: channels.drops,
            batches: channels.batches,
            events: channels.events,
            handed: vec![false; channels.relay.workers()],
            relay: channels.relay,
            inbox: channels.inbox,
            spd: Spd::new(index),
            held: Vec::new(),
            hold_size,
            spi_reports: SpiReports::new(),
            inbound: HashMap::new(),
            tx: buffers(),
            rx: buffers(),
            to_tun: buffers(),
            sizes: vec![0; BATCH],
            slots: vec![Slot::Packet { follows: false }; BATCH],
            sealed: Vec::with_capacity(BATCH),
            ready: Vec::with_capacity(BATCH),
            spare: PacketBuf::new(BUF_LEN),
            train: vec![0; MAX_TRAIN].into_boxed_slice(),
            train_at: Vec::with_capacity(BATCH),
            received: Vec::with_capacity(BATCH),
            stopping: false,
        }
    }

    /// Serves until told to stop; an error says why it cannot go on (the TUN device
    /// is gone or broken), which the caller must not survive silently.
    pub fn run(mut self) -> Result<(), String> {
        // Registered once, not per wake-up as poll(2) wants its array: a wake-up then
        // neither allocates nor hooks into every descriptor's wait queue again.
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
        let fds = [self.wake.as_fd(), self.tun.as_fd()]
            .into_iter()
            .chain(self.sockets.0.iter().map(|s| s.as_fd()));
        for (i, fd) in fds.enumerate() {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                .map_err(|e| format!("epoll: {e}"))?;
        }
        let mut events = vec![EpollEvent::empty(); 2 + self.sockets.0.len()];
        let mut ready = vec![false; events.len()];
        loop {
            let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("epoll_wait: {e}")),
            };
            ready.fill(false);
            for event in &events[..n] {
                let (i, flags) = (event.data() as usize, event.events());
                // A TUN device deleted under us reports an error forever and reads
                // fail: serving on would spin without moving a packet.
                let broken = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
                if i == 1 && flags.intersects(broken) {
                    let names: Vec<&str> = (flags & broken).iter_names().map(|(n, _)| n).collect();
                    return Err(format!(
                        "TUN device deleted or broken (epoll: {})",
                        names.join("|")
                    ));
                }
                ready[i] = true;
            }
            if ready[0] {
                let _ = self.wake.read();
                if !self.apply_commands() {
                    return Ok(());
                }
                self.take_handoffs();
            }
            if ready[1] {
                self.outbound_batch()?;
            }
            for i in 0..self.sockets.0.len() {
                if ready[2 + i] {
                    self.inbound_batch(i);
                }
            }
            if self.stopping {
                return Ok(());
            }
        }
    }

    /// Applies queued commands; false when told to stop.
    fn apply_commands(&mut self) -> bool {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Protect(protection) => self.held.push(Held {
                    protection,
                    queue: HoldQueue::new(HOLD_PACKETS, self.hold_size),
                    acquired: None,
                }),
                Command::Unprotect(policy) => {
                    self.held.retain(|h| h.protection.policy != policy);
                }
                Command::Outbound(sa) => {
                    let (policy, child) = (sa.policy, sa.child);
                    self.spd.activate(sa);
                    self.release_held(policy, child);
                }
                Command::Inbound(spi, sa) => {
                    self.inbound.insert(spi, sa);
                }
                Command::Move(sa) => self.spd.replace(sa),
                Command::InboundPeer(spi, peer) => {
                    if let Some(sa) = self.inbound.get_mut(&spi) {
                        sa.peer = Some(peer);
                    }
                }
                Command::Remove(id) => {
                    self.inbound.remove(&id);
                    self.spd.remove(id);
                }
                Command::Stop => {
                    self.stopping = true;
                    return false;
                }
            }
        }
        true
    }

    /// Reads a batch from the TUN queue, seals what policy covers, sends it. Fails
    /// when the device does (not for a packet it cannot segment).
    fn outbound_batch(&mut self) -> Result<(), String> {
        let mut count = 0;
        // One read can take a buffer per segment and one for itself: read only while
        // a full-size GSO packet (64 KiB, ≥ 1 KiB segments) is sure to fit.
        while count == 0 || BATCH - count > GSO_SEGMENTS {
            match self.read_tun(count) {
                Ok(n) => count = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TUN read: {e}")),
            }
        }
        self.send_outbound(count);
        Ok(())
    }

    /// Reads a packet from the TUN into `tx[count]`, where a super-packet stays with
    /// a buffer kept for each of its segments after it; returns how many buffers `tx`
    /// uses now (a full batch goes out on the way when they do not all fit).
    fn read_tun(&mut self, count: usize) -> io::Result<usize> {
        let at = if self.offload {
            HEADROOM - VIRTIO_NET_HDR_LEN
        } else {
            HEADROOM
        };
        let read = self.tun.recv(&mut self.tx[count].storage_mut()[at..])?;
        self.slots[count] = Slot::Packet { follows: false };
        if !self.offload {
            self.sizes[count] = read;
            return Ok(count + 1);
        }
        let buf = self.tx[count].storage_mut();
        let (vnet, packet) = buf[at..at + read].split_at(read.min(VIRTIO_NET_HDR_LEN));
        let segments = vnet
            .try_into()
            .map_err(|_| SegmentError::Truncated)
            .and_then(|vnet| Segments::parse(vnet, packet));
        let Ok(segments) = segments else {
            self.drops.count(DropReason::Malformed);
            return Ok(count);
        };
        let (len, n) = (packet.len(), segments.count());
        if n == 1 {
            self.sizes[count] = segments.first_in_place(&mut buf[HEADROOM..]);
            return Ok(count + 1);
        }
        if n < BATCH - count {
            self.sizes[count] = len;
            self.slots[count] = Slot::Super(segments);
            return Ok(count + 1 + n);
        }
        // A small MSS: more segments than buffers left. Kept aside while they go out.
        let mut spare = std::mem::replace(&mut self.spare, PacketBuf::new(0));
        std::mem::swap(&mut self.tx[count], &mut spare);
        let packet = &spare.storage_mut()[HEADROOM..HEADROOM + len];
        let mut count = count;
        for i in 0..n {
            if count == BATCH {
                self.send_outbound(count);
                count = 0;
            }
            self.sizes[count] =
                segments.write(packet, i, &mut self.tx[count].storage_mut()[HEADROOM..]);
            self.slots[count] = Slot::Packet {
                follows: i > 0 && count > 0,
            };
            count += 1;
        }
        self.spare = spare;
        Ok(count)
    }

    /// Counts the packets in `tx[..count]` as a batch and sends them.
    fn send_outbound(&mut self, count: usize) {
        if count > 0 {
            self.batches.count(Batches::OUTBOUND, count);
        }
        self.seal_and_send(count, true);
    }

    /// Sends the packets held for child `child` of `policy` through the policy
    /// database, where the SA just activated for it comes first.
    fn release_held(&mut self, policy: usize, child: usize) {
        let Some(held) = self
            .held
            .iter_mut()
            .find(|h| (h.protection.policy, h.protection.child) == (policy, child))
        else {
            return;
        };
        let (now, mut stale, mut count) = (clock(), 0, 0);
        while let Some(packet) = held.queue.pop(now, &mut stale) {
            self.tx[count].storage_mut()[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
            self.sizes[count] = packet.len();
            self.slots[count] = Slot::Packet { follows: false };
            count += 1;
        }
        for _ in 0..stale {
            self.drops.count(DropReason::HoldExpired);
        }
        self.seal_and_send(count, false);
    }

    /// Seals the packets in `tx[..count]` (each `sizes[i]` bytes after HEADROOM, or
    /// the segments of a super-packet) and sends them. One that no SA covers is held
    /// for its protected child if `hold` (else, or without such a child, dropped):
    /// never sent in clear.
    fn seal_and_send(&mut self, count: usize, hold: bool) {
        let mut now = None;
        // Taken out so that `self` stays free to borrow; put back, with its capacity.
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.clear();
        let mut verdict = Verdict::Drop(DropReason::Malformed);
        let mut i = 0;
        while i < count {
            let follows = match self.slots[i] {
                Slot::Packet { follows } => follows,
                Slot::Super(segments) => {
                    if self.seal_segments(i, segments, &mut sealed) {
                        i += 1 + segments.count();
                    } else {
                        // Written out into the buffers after it: they go as packets.
                        i += 1;
                    }
                    continue;
                }
            };
            let buf = &mut self.tx[i];
            buf.set_len(HEADROOM + self.sizes[i]);
            if !follows {
                verdict = match route(&self.spd, &buf.as_ref()[HEADROOM..]) {
                    Ok((sa, next_header)) => Verdict::Seal(sa, next_header),
                    Err(Refused::NoSa(flow)) => Verdict::NoSa(flow),
                    Err(Refused::Drop(why)) => Verdict::Drop(why),
                    Err(Refused::TooBig(icmp)) => {
                        // One error for a super-packet: its segments are as long.
                        self.send_icmp(&icmp);
                        Verdict::Drop(DropReason::TooBig)
                    }
                };
            }
            match verdict {
                Verdict::Seal(sa, next_header) => {
                    match seal(self.spd.get(sa), &mut self.tx[i], None, next_header) {
                        Ok(head) => sealed.push(Sealed { buf: i, head, sa }),
                        Err(why) => self.drops.count(why),
                    }
                }
                Verdict::NoSa(flow) if hold => self.hold(i, &flow, &mut now),
                Verdict::NoSa(_) => self.drops.count(DropReason::NoSa),
                Verdict::Drop(why) => self.drops.count(why),
            }
            i += 1;
        }
        // One send per run of packets with the same SA (usually the whole batch).
        let mut packets: [&[u8]; BATCH] = [&[]; BATCH];
        for run in sealed.chunk_by(|a, b| a.sa == b.sa) {
            let sa = self.spd.get(run[0].sa);
            for (p, s) in packets.iter_mut().zip(run) {
                *p = &self.tx[s.buf].as_ref()[s.head..];
            }
            let socket = &self.sockets.0[sa.socket];
            let failed = self
                .batch
                .send(socket, &packets[..run.len()], sa.peer, sa.local);
            for _ in 0..failed {
                self.drops.count(DropReason::Io);
            }
        }
        self.sealed = sealed;
    }

    /// Seals each segment of the super-packet in `tx[at]` straight from there into
    /// the buffer after it with the SA its first segment goes to; true when done.
    /// False when not to be done so (no SA, or refused; headers too long to keep
    /// aside): then the segments are written out into those buffers as packets, for
    /// the usual way to hold, refuse or seal them.
    fn seal_segments(&mut self, at: usize, segments: Segments, sealed: &mut Vec<Sealed>) -> bool {
        let header_len = segments.header_len();
        let (head, tail) = self.tx.split_at_mut(at + 1);
        let packet = &mut head[at].storage_mut()[HEADROOM..HEADROOM + self.sizes[at]];
        if header_len <= PLACED_HEADERS {
            let mut kept = [0; PLACED_HEADERS];
            let headers = &mut kept[..header_len];
            headers.copy_from_slice(&packet[..header_len]);
            let mut segment = segments.place(packet, 0, headers);
            if let Ok((sa, next_header)) = route(&self.spd, &packet[segment.clone()]) {
                let outbound = self.spd.get(sa);
                for (i, out) in tail[..segments.count()].iter_mut().enumerate() {
                    if i > 0 {
                        segment = segments.place(packet, i, headers);
                    }
                    match seal(outbound, out, Some(&packet[segment.clone()]), next_header) {
                        Ok(head) => sealed.push(Sealed {
                            buf: at + 1 + i,
                            head,
                            sa,
                        }),
                        Err(why) => self.drops.count(why),
                    }
                }
                return true;
            }
            // As read, for the segments to be written out.
            packet[..header_len].copy_from_slice(headers);
        }
        for (i, out) in tail[..segments.count()].iter_mut().enumerate() {
            self.sizes[at + 1 + i] = segments.write(packet, i, &mut out.storage_mut()[HEADROOM..]);
            self.slots[at + 1 + i] = Slot::Packet { follows: i > 0 };
        }
        false
    }

    /// Writes an ICMP error for a packet that does not fit the tunnel back into the TUN.
    fn send_icmp(&mut self, icmp: &[u8]) {
        let hdr = if self.offload {
            &VNET_HDR_NONE[..]
        } else {
            &[]
        };
        if writev(&self.tun, &[IoSlice::new(hdr), IoSlice::new(icmp)]).is_err() {
            self.drops.count(DropReason::Io);
        }
    }

    /// Holds the packet in `tx[i]` for the protected child `flow` belongs to, and asks
    /// for an SA for it (at most once per REPORT_INTERVAL); drops it if there is none.
    fn hold(&mut self, i: usize, flow: &Flow, now: &mut Option<Instant>) {
        let Some(held) = self
            .held
            .iter_mut()
            .find(|h| flow.selected(&h.protection.local_ts, &h.protection.remote_ts))
        else {
            self.drops.count(DropReason::NoSa);
            return;
        };
        let now = *now.get_or_insert_with(clock);
        if !held.queue.push(&self.tx[i].as_ref()[HEADROOM..], now) {
            self.drops.count(DropReason::HoldOverflow);
        }
        if held
            .acquired
            .is_none_or(|at| now.duration_since(at) >= REPORT_INTERVAL)
        {
            held.acquired = Some(now);
            // The control thread outlives the workers; a send cannot fail while it matters.
            let _ = self.events.send(DataplaneEvent::Acquire {
                policy: held.protection.policy,
                child: held.protection.child,
            });
        }
    }

    /// Receives from socket `index` and opens what came: a recvmmsg batch, or with
    /// UDP GRO the datagrams of a train or two.
    fn inbound_batch(&mut self, index: usize) {
        self.received.clear();
        if self.sockets.0[index].gro {
            self.receive_trains(index);
            return;
        }
        let socket = &self.sockets.0[index];
        if self
            .batch
            .recv(index, socket, &mut self.rx, RX_OFFSET, &mut self.received)
            .is_err()
        {
            return;
        }
        self.open_batch(index);
    }

    /// Receives UDP GRO trains from socket `index` and opens each one's datagrams
    /// where they are, into `rx` (no copy of the ciphertext first); reads another
    /// train only while a full one would still have fitted a batch.
    fn receive_trains(&mut self, index: usize) {
        let mut taken = 0;
        while taken + GSO_SEGMENTS <= BATCH {
            let socket = &self.sockets.0[index];
            let Ok((datagram, segment)) = self.batch.recv_train(socket, &mut self.train) else {
                break;
            };
            let mut count = 0;
            for range in socket::segments(datagram.len, segment) {
                if self.received.len() == BATCH {
                    self.open_batch(index);
                }
                self.train_at.push(range.start);
                self.received.push(Datagram {
                    len: range.len(),
                    ..datagram
                });
                count += 1;
            }
            self.batches.count(Batches::TRAINS, count);
            taken += count;
            self.open_batch(index);
        }
    }

    /// Counts the datagrams received from socket `index` as a batch and opens them.
    fn open_batch(&mut self, index: usize) {
        self.batches.count(Batches::INBOUND, self.received.len());
        self.open_received(index);
    }

    /// Opens the datagrams other workers (or the control thread) handed over, in runs
    /// from one socket.
    fn take_handoffs(&mut self) {
        self.received.clear();
        let mut socket = 0;
        // What is there now: whatever comes later wakes the worker again.
        for _ in 0..self.inbox.len() {
            let Ok(h) = self.inbox.try_recv() else {
                break;
            };
            if !self.received.is_empty() && (h.socket != socket || self.received.len() == BATCH) {
                self.open_received(socket);
            }
            socket = h.socket;
            let i = self.received.len();
            self.relay
                .recycle(std::mem::replace(&mut self.rx[i], h.buf));
            self.received.push(h.datagram);
        }
        if !self.received.is_empty() {
            self.open_received(socket);
        }
    }

    /// Opens the datagrams in `rx[..received.len()]` (or in `train`, at `train_at`),
    /// which came in on socket `index`, writes the inner packets to the TUN, and
    /// passes on what belongs to another worker or the control thread; empties
    /// `received` and `train_at`.
    fn open_received(&mut self, index: usize) {
        // The control thread hands over an inbound SA before it sends the answer that
        // lets the peer use it, so what it sent before these packets came must apply
        // to them (a rekey's first packets would otherwise find no SA).
        if !self.commands.is_empty() && !self.apply_commands() {
            self.received.clear();
            self.train_at.clear();
            return;
        }
        let socket = &self.sockets.0[index];
        let udp = socket.transport == Transport::Udp;
        let raw_v4 = !udp && socket.bound.is_ipv4();
        let mut now = None;
        // Where each inner packet in to_tun[..ready.len()] starts.
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        for i in 0..self.received.len() {
            let datagram = self.received[i];
            let len = datagram.len;
            let in_train = self.train_at.get(i).map(|&at| &self.train[at..at + len]);
            let mut esp = RX_OFFSET..RX_OFFSET + len;
            if raw_v4 {
                // Raw IPv4 sockets deliver the IP header too.
                let ihl = usize::from(self.rx[i].as_ref()[RX_OFFSET] & 0x0f) * 4;
                esp.start += ihl.min(len);
            }
            // A train (GSO or GRO) was steered by its first datagram alone.
            if udp {
                let at = match in_train {
                    Some(data) => DatagramAt::InTrain(data),
                    None => DatagramAt::Own(&mut self.rx[i]),
                };
                let route = self.relay.route(
                    self.index,
                    at,
                    index,
                    socket.bound,
                    datagram,
                    &mut self.handed,
                );
                match route {
                    Route::Open => {}
                    Route::Done => continue,
                    Route::NoRoom => {
                        self.drops.count(DropReason::Handoff);
                        continue;
                    }
                }
            }
            if in_train.is_some() {
                self.rx[i].reset();
            }
            let buf = self.rx[i].as_mut();
            let from = datagram.sender.as_ref().filter(|_| udp);
            match open(&mut self.inbound, in_train, &mut buf[esp.clone()], from) {
                Ok((inner, moved)) => {
                    if let Some((spi_in, remote)) = moved {
                        let _ = self
                            .events
                            .send(DataplaneEvent::PeerMoved { spi_in, remote });
                    }
                    let (start, end) = (esp.start + inner.start, esp.start + inner.end);
                    let k = ready.len();
                    std::mem::swap(&mut self.rx[i], &mut self.to_tun[k]);
                    self.to_tun[k].set_len(end);
                    ready.push(start);
                }
                Err(DropReason::NoSa) => {
                    self.drops.count(DropReason::NoSa);
                    let esp = in_train.unwrap_or(&buf[esp]);
                    let spi = u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]]);
                    let Some(remote) = datagram.sender.as_ref().and_then(netio::socket_addr) else {
                        continue;
                    };
                    let now = *now.get_or_insert_with(clock);
                    if self.spi_reports.allow(now, remote.ip(), spi) {
                        let _ = self.events.send(DataplaneEvent::UnknownSpi {
                            local: socket.bound,
                            remote,
                            spi,
                        });
                    }
                }
                Err(why) => self.drops.count(why),
            }
        }
        self.received.clear();
        self.train_at.clear();
        for (w, handed) in self.handed.iter_mut().enumerate() {
            if std::mem::take(handed) {
                self.relay.wake(w);
            }
        }
        let failed = write_to_tun(
            &self.tun,
            self.offload.then_some(&mut self.coalescer),
            &mut self.to_tun,
            &ready,
        );
        for _ in 0..failed {
            self.drops.count(DropReason::Io);
        }
        self.ready = ready;
    }
}

/// Writes the inner packets `bufs[k][starts[k]..]` (k < `starts.len()` ≤ BATCH) to
/// the TUN, a flow's TCP segments or UDP datagrams coalesced when it takes offload
/// (a `coalescer`), each write's virtio-net header in the room in front of its first
/// packet; returns how many writes failed.
fn write_to_tun(
    tun: &SyncDevice,
    coalescer: Option<&mut Coalescer>,
    bufs: &mut [PacketBuf],
    starts: &[usize],
) -> usize {
    let Some(coalescer) = coalescer else {
        let failed = starts
            .iter()
            .zip(bufs.iter())
            .map(|(&s, b)| writev(tun, &[IoSlice::new(&b.as_ref()[s..])]).is_err());
        return failed.filter(|&f| f).count();
    };
    let mut packets: [&[u8]; BATCH] = [&[]; BATCH];
    for ((p, &s), b) in packets.iter_mut().zip(starts).zip(bufs.iter()) {
        *p = &b.as_ref()[s..];
    }
    coalescer.plan(&packets[..starts.len()]);
    for write in coalescer.writes() {
        let start = starts[usize::from(write.first)];
        let packet = bufs[usize::from(write.first)].as_mut();
        let hdr = write.finish(&mut packet[start..]);
        packet[start - VIRTIO_NET_HDR_LEN..start].copy_from_slice(&hdr);
    }
    let mut failed = 0;
    let mut slices = [IoSlice::new(&[]); BATCH];
    for write in coalescer.writes() {
        let first = usize::from(write.first);
        let payload = write.payload_start();
        for (slice, k) in slices.iter_mut().zip(coalescer.members(write)) {
            let from = if k == first {
                starts[k] - VIRTIO_NET_HDR_LEN
            } else {
                starts[k] + payload
            };
            *slice = IoSlice::new(&bufs[k].as_ref()[from..]);
        }
        if writev(tun, &slices[..usize::from(write.count)]).is_err() {
            failed += 1;
        }
    }
    failed
}

/// One write of `slices` to the TUN, which takes it as one packet.
fn writev(tun: &SyncDevice, slices: &[IoSlice]) -> nix::Result<usize> {
    nix::sys::uio::writev(tun, slices)
}

/// Why an outbound packet was not sealed.
enum Refused {
    /// No SA covers it; it may be held for a protected child.
    NoSa(Flow),
    Drop(DropReason),
    /// Too big with DF set: this ICMP error goes back into the TUN.
    TooBig(Vec<u8>),
}

/// What becomes of the packets of one read from the TUN: the first segment's
/// verdict holds for the others, which share the headers policy looks at and are
/// no longer than it.
#[derive(Clone, Copy)]
enum Verdict {
    /// Sealed with the SA in this slot, with this ESP next header.
    Seal(usize, u8),
    /// No SA covers it; it may be held for a protected child.
    NoSa(Flow),
    Drop(DropReason),
}

/// Finds the SA for `packet` and checks that it may go: the SA's hard limit, and
/// its size if DF is set. Returns the SA's slot and the ESP next header.
fn route(spd: &Spd, packet: &[u8]) -> Result<(usize, u8), Refused> {
    let flow = Flow::parse(packet).ok_or(Refused::Drop(DropReason::Malformed))?;
    let index = spd.lookup(&flow).ok_or(Refused::NoSa(flow))?;
    let sa = spd.get(index);
    if sa.traffic.reached(&sa.hard).is_some() {
        return Err(Refused::Drop(DropReason::Expired));
    }
    if packet.len() > sa.max_inner && flow.dont_fragment {
        let mtu = u16::try_from(sa.max_inner).unwrap_or(u16::MAX);
        return Err(packet::too_big(packet, &flow, mtu)
            .map_or(Refused::Drop(DropReason::TooBig), Refused::TooBig));
    }
    let next_header = match flow.src {
        IpAddr::V4(_) => NEXT_HEADER_IPV4,
        IpAddr::V6(_) => NEXT_HEADER_IPV6,
    };
    Ok((index, next_header))
}

/// Seals `inner` (None: the packet at `buf[HEADROOM..]`, in place) with `sa` into
/// `buf` after HEADROOM, leaving `buf` as long as the ESP packet's end; returns
/// where ESP starts.
fn seal(
    sa: &Outbound,
    buf: &mut PacketBuf,
    inner: Option<&[u8]>,
    next_header: u8,
) -> Result<usize, DropReason> {
    let len = inner.map_or(buf.len() - HEADROOM, <[u8]>::len);
    let esp = match inner {
        Some(inner) => sa
            .sa
            .seal_from(inner, buf.storage_mut(), HEADROOM, next_header),
        None => sa.sa.seal(buf.storage_mut(), HEADROOM, len, next_header),
    }
    .map_err(|e| match e {
        // Not with BUF_LEN's room after the largest IP packet.
        EspError::NoRoom | EspError::NoHeadroom => DropReason::TooBig,
        _ => DropReason::Expired,
    })?;
    buf.set_len(esp.end);
    sa.traffic.add(len);
    Ok(esp.start)
}

/// An opened packet: the inner packet's range, and (SPI, sender) when its peer moved.
type Opened = (std::ops::Range<usize>, Option<(u32, SocketAddr)>);

/// Opens an ESP packet into `esp`: in place, or from `source` (as long, decrypted
/// into it); returns the inner packet's range within `esp`, and (SPI, sender) when
/// it came in UDP from elsewhere than its SA's peer (a NAT mapped the peer anew;
/// reported once per new address). NoSa means an SPI (the first four bytes) no SA
/// of this worker has.
fn open(
    inbound: &mut HashMap<u32, Box<Inbound>>,
    source: Option<&[u8]>,
    esp: &mut [u8],
    sender: Option<&SockaddrStorage>,
) -> Result<Opened, DropReason> {
    let spi = source
        .unwrap_or(esp)
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DropReason::Malformed)?;
    let sa = inbound.get_mut(&spi).ok_or(DropReason::NoSa)?;
    if sa.traffic.reached(&sa.hard).is_some() {
        return Err(DropReason::Expired);
    }
    let opened = match source {
        Some(source) => sa.sa.open_from(source, esp),
        None => sa.sa.open(esp),
    };
    let (inner, next_header, _) = opened.map_err(|e| match e {
        EspError::Replay(_) => DropReason::Replay,
        EspError::BadIcv => DropReason::BadIcv,
        _ => DropReason::Malformed,
    })?;
    let packet = &esp[inner.clone()];
    let flow = Flow::parse(packet).ok_or(DropReason::Malformed)?;
    let version_matches = match flow.src {
        IpAddr::V4(_) => next_header == NEXT_HEADER_IPV4,
        IpAddr::V6(_) => next_header == NEXT_HEADER_IPV6,
    };
    if !version_matches {
        return Err(DropReason::Malformed);
    }
    if !flow.selected(&sa.remote_ts, &sa.local_ts) {
        return Err(DropReason::SelectorMismatch);
    }
    sa.traffic.add(packet.len());
    let moved = match (sa.peer, sender.and_then(netio::socket_addr)) {
        (Some(peer), Some(from)) if peer != from => {
            sa.peer = Some(from);
            Some((spi, from))
        }
        _ => None,
    };
    Ok((inner, moved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encr, Secret};
    use crate::esp::{InboundSa, OutboundSa, SaKeys};
    use crate::ike::Limits;
    use crate::wire::payload::{AddrRange, TsRange};
    use std::net::Ipv4Addr;

    fn net(a: [u8; 4], b: [u8; 4]) -> TsRange {
        TsRange {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            addrs: AddrRange::V4(Ipv4Addr::from(a), Ipv4Addr::from(b)),
        }
    }

    /// An SA installed as inbound SPI `id`, sending with the peer's `spi` to `remote`.
    fn outbound(id: u32, spi: u32, remote: TsRange) -> Arc<Outbound> {
        let (key, none) = (Secret::new(vec![7; 20]), Secret::new(Vec::new()));
        let sa = OutboundSa::new(&SaKeys {
            spi,
            encr: Encr::AesGcm16 { key_len: 16 },
            integ: None,
            esn: false,
            encryption: &key,
            integrity: &none,
        })
        .unwrap();
        Arc::new(Outbound {
            sa: Arc::new(sa),
            spi,
            id,
            policy: 0,
            child: 0,
            local_ts: vec![net([10, 1, 0, 0], [10, 1, 0, 255])],
            remote_ts: vec![remote],
            socket: 0,
            peer: "192.0.2.2:0".parse().unwrap(),
            local: "192.0.2.1".parse().unwrap(),
            max_inner: 1400,
            pinned: None,
            hard: Limits::default(),
            traffic: Arc::default(),
        })
    }

    fn pinned(id: u32, worker: usize) -> Arc<Outbound> {
        let sa = outbound(id, id, net([10, 2, 0, 0], [10, 2, 255, 255]));
        Arc::new(Outbound {
            pinned: Some(worker),
            ..Outbound::clone(&sa)
        })
    }

    fn to(dst: [u8; 4]) -> Flow {
        Flow {
            src: IpAddr::from([10, 1, 0, 2]),
            dst: IpAddr::from(dst),
            protocol: 1,
            src_port: Some(0x0800),
            dst_port: Some(0x0800),
            dont_fragment: false,
        }
    }

    /// The install ids of the SAs not indexed by address, the first one first.
    fn ids(spd: &Spd) -> Vec<u32> {
        spd.ranges.iter().map(|&s| spd.get(s).id).collect()
    }

    fn found(spd: &Spd, dst: [u8; 4]) -> Option<u32> {
        spd.lookup(&to(dst)).map(|s| spd.get(s).id)
    }

    #[test]
    fn the_sa_activated_last_carries_what_older_ones_cover() {
        let mut spd = Spd::new(0);
        spd.activate(outbound(1, 0x100, net([10, 2, 0, 0], [10, 2, 0, 255])));
        spd.activate(outbound(2, 0x200, net([10, 2, 0, 0], [10, 2, 255, 255])));
        assert_eq!(found(&spd, [10, 2, 0, 5]), Some(2));
        assert_eq!(found(&spd, [10, 2, 9, 5]), Some(2));
        assert_eq!(found(&spd, [10, 3, 0, 1]), None);
        // A rekey: the new SA takes over; the old one is found again once it goes.
        spd.activate(outbound(3, 0x300, net([10, 2, 0, 0], [10, 2, 255, 255])));
        assert_eq!(ids(&spd), [3, 2, 1]);
        spd.remove(3);
        spd.remove(2);
        assert_eq!(found(&spd, [10, 2, 0, 5]), Some(1));
    }

    #[test]
    fn each_worker_sends_with_its_own_per_resource_sa_and_falls_back_to_the_newest() {
        // Worker 1 of two; the child has a plain SA and one per-resource SA per worker.
        let mut spd = Spd::new(1);
        spd.activate(outbound(1, 0x100, net([10, 2, 0, 0], [10, 2, 255, 255])));
        spd.activate(pinned(3, 1));
        spd.activate(pinned(2, 0));
        assert_eq!(ids(&spd), [3, 2, 1]);
        assert_eq!(found(&spd, [10, 2, 0, 5]), Some(3));
        // A rekey of the fallback SA does not take over from the worker's own SA...
        spd.activate(outbound(4, 0x400, net([10, 2, 0, 0], [10, 2, 255, 255])));
        assert_eq!(ids(&spd), [3, 4, 2, 1]);
        // ...a rekey of the worker's own SA does, and without one the newest serves.
        spd.activate(pinned(5, 1));
        assert_eq!(found(&spd, [10, 2, 0, 5]), Some(5));
        spd.remove(5);
        spd.remove(3);
        assert_eq!(found(&spd, [10, 2, 0, 5]), Some(4));
    }

    #[test]
    fn clients_are_found_by_their_address_before_wider_selectors() {
        let mut spd = Spd::new(0);
        spd.activate(outbound(1, 0x100, net([10, 3, 0, 0], [10, 3, 0, 255])));
        for client in 2..1002u32 {
            let [_, _, hi, lo] = (client - 2).to_be_bytes();
            let vip = [10, 3, hi, lo];
            spd.activate(outbound(client, client, net(vip, vip)));
        }
        assert_eq!(spd.hosts.len(), 1000);
        assert_eq!(found(&spd, [10, 3, 0, 7]), Some(9));
        assert_eq!(found(&spd, [10, 3, 3, 231]), Some(1001));
        spd.remove(9);
        assert_eq!(
            found(&spd, [10, 3, 0, 7]),
            Some(1),
            "the wider SA covers it now"
        );
        // A client's rekey: the new SA takes over at once, the old one goes later.
        spd.activate(outbound(2000, 0x2000, net([10, 3, 0, 8], [10, 3, 0, 8])));
        assert_eq!(found(&spd, [10, 3, 0, 8]), Some(2000));
        spd.remove(2000);
        assert_eq!(found(&spd, [10, 3, 0, 8]), Some(10));
        // Slots are reused, and a removed SA leaves no trace.
        let slots = spd.slots.len();
        spd.activate(outbound(3000, 0x3000, net([10, 9, 0, 1], [10, 9, 0, 1])));
        assert_eq!(spd.slots.len(), slots);
        spd.remove(3000);
        assert!(!spd.hosts.contains_key(&IpAddr::from([10, 9, 0, 1])));
    }

    #[test]
    fn removal_is_by_install_id_even_when_peers_share_an_outbound_spi() {
        let mut spd = Spd::new(0);
        // Two peers chose the same SPI for their inbound SAs (our outbound ones).
        spd.activate(outbound(1, 0xabcd, net([10, 2, 0, 0], [10, 2, 0, 255])));
        spd.activate(outbound(2, 0xabcd, net([10, 3, 0, 0], [10, 3, 0, 255])));
        spd.remove(2);
        assert_eq!(ids(&spd), [1]);
        assert_eq!(found(&spd, [10, 2, 0, 5]), Some(1));
        spd.remove(0xabcd);
        assert_eq!(ids(&spd), [1], "an outbound SPI names nothing");
    }

    /// The fast path's buffers are sealed into, received into, opened in and swapped
    /// between `rx` and `to_tun` for every packet, with no clearing in between: each
    /// packet, large or small, must come out whole, and no buffer may grow or shrink.
    #[test]
    fn buffers_are_reused_for_every_packet_with_explicit_lengths() {
        let mut spd = Spd::new(0);
        let Ok(mut sa) = Arc::try_unwrap(outbound(1, 0x100, net([10, 2, 0, 0], [10, 2, 0, 255])))
        else {
            unreachable!("not shared yet");
        };
        // A GSO super-packet's segments, or a path with jumbo frames.
        sa.max_inner = 65_535;
        spd.activate(Arc::new(sa));
        let (key, none) = (Secret::new(vec![7; 20]), Secret::new(Vec::new()));
        let keys = SaKeys {
            spi: 0x100,
            encr: Encr::AesGcm16 { key_len: 16 },
            integ: None,
            esn: false,
            encryption: &key,
            integrity: &none,
        };
        let mut inbound = HashMap::new();
        inbound.insert(
            0x100,
            Box::new(Inbound {
                sa: InboundSa::new(&keys, 64).unwrap(),
                local_ts: vec![net([10, 2, 0, 0], [10, 2, 0, 255])],
                remote_ts: vec![net([10, 1, 0, 0], [10, 1, 0, 255])],
                hard: Limits::default(),
                traffic: Arc::default(),
                peer: None,
            }),
        );
        let (mut tx, mut rx, mut to_tun) = (
            PacketBuf::new(BUF_LEN),
            PacketBuf::new(BUF_LEN),
            PacketBuf::new(BUF_LEN),
        );
        let mut packet = Vec::new();
        for i in 0..300usize {
            // From an empty UDP datagram to the largest IP packet, in no order.
            let payload = vec![i as u8; (i * 7919) % (65_535 - 28 + 1)];
            packet.clear();
            etherparse::PacketBuilder::ipv4([10, 1, 0, 2], [10, 2, 0, 5], 64)
                .udp(1000, 2000)
                .write(&mut packet, &payload)
                .unwrap();
            // As the TUN read and seal_and_send leave it; every other one sealed from
            // where it is (as a segment inside its super-packet), over the last one.
            let from = i % 2 == 1;
            tx.reset();
            if !from {
                tx.storage_mut()[HEADROOM..HEADROOM + packet.len()].copy_from_slice(&packet);
            }
            tx.set_len(HEADROOM + packet.len());
            let Ok((slot, next_header)) = route(&spd, &packet) else {
                panic!("packet {i} refused");
            };
            let inner = from.then_some(&packet[..]);
            let Ok(head) = seal(spd.get(slot), &mut tx, inner, next_header) else {
                panic!("packet {i} not sealed");
            };
            let esp = &tx.as_ref()[head..];
            // As the socket read leaves it; every third one opened from where it is (as
            // a datagram inside its GRO train), over the last one.
            rx.reset();
            let source = (i % 3 == 0).then_some(esp);
            let at = RX_OFFSET..RX_OFFSET + esp.len();
            if source.is_none() {
                rx.storage_mut()[at.clone()].copy_from_slice(esp);
            }
            let esp = at;
            let Ok((inner, _)) = open(&mut inbound, source, &mut rx.as_mut()[esp.clone()], None)
            else {
                panic!("packet {i} not opened");
            };
            std::mem::swap(&mut rx, &mut to_tun);
            to_tun.set_len(esp.start + inner.end);
            assert_eq!(&to_tun.as_ref()[esp.start + inner.start..], &packet[..]);
            for b in [&tx, &rx, &to_tun] {
                assert_eq!(b.capacity(), BUF_LEN);
            }
        }
    }

    #[test]
    fn hold_queue_pushes_out_the_oldest() {
        let (now, mut stale) = (clock(), 0);
        let mut q = HoldQueue::new(3, 4);
        assert!(q.push(&[1], now) && q.push(&[2, 2], now) && q.push(&[3], now));
        assert!(!q.push(&[4, 4, 4, 4], now), "full: the oldest goes");
        assert!(!q.push(&[5; 5], now), "bigger than a buffer");
        assert_eq!(q.pop(now, &mut stale), Some(&[2, 2][..]));
        assert!(q.push(&[6], now));
        let mut rest = Vec::new();
        while let Some(p) = q.pop(now, &mut stale) {
            rest.push(p.to_vec());
        }
        assert_eq!(stale, 0);
        assert_eq!(rest, [vec![3], vec![4, 4, 4, 4], vec![6]]);
        let capacities: Vec<usize> = q.slots.iter().map(Vec::capacity).collect();
        assert_eq!(capacities, [4, 4, 4], "no buffer grew");
    }

    #[test]
    fn packets_held_too_long_are_dropped_not_sent() {
        let t0 = clock();
        let mut q = HoldQueue::new(4, 4);
        q.push(&[1], t0);
        q.push(&[2], t0 + Duration::from_secs(10));
        let mut stale = 0;
        let later = t0 + HOLD_TIMEOUT + Duration::from_secs(1);
        assert_eq!(
            q.pop(later, &mut stale),
            Some(&[2][..]),
            "held 21 s: still sent"
        );
        assert_eq!(stale, 1, "held 31 s: dropped");
        assert_eq!(q.pop(later, &mut stale), None);
    }

    #[test]
    fn unknown_spis_are_reported_once_a_second_per_peer_and_a_few_in_all() {
        let t0 = clock();
        let (a, b) = (IpAddr::from([192, 0, 2, 2]), IpAddr::from([192, 0, 2, 3]));
        let mut r = SpiReports::new();
        assert!(r.allow(t0, a, 1));
        assert!(!r.allow(t0 + Duration::from_millis(900), a, 1));
        assert!(r.allow(t0, a, 2));
        assert!(r.allow(t0, b, 1));
        assert!(r.allow(t0 + REPORT_INTERVAL, a, 1));
        // A flood of made-up SPIs: SPI_REPORTS per interval, then silence.
        let t1 = t0 + 2 * REPORT_INTERVAL;
        let allowed = (0..1000u32)
            .filter(|&spi| r.allow(t1, b, 1000 + spi))
            .count();
        assert_eq!(allowed, SPI_REPORTS);
        assert!(r.allow(t1 + REPORT_INTERVAL, b, 5000));
    }
}
