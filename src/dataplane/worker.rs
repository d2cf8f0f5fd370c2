//! One ESP worker: a loop over its TUN queue, its sockets and its command channel.

use super::packet::{self, Flow};
use super::socket::{Batch, EspSockets, Transport};
use super::{Command, DropReason, Drops, Inbound, Outbound};
use crate::esp::{EspError, HEADROOM, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use crossbeam_channel::Receiver;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EventFd;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

/// Packets per batch, from the TUN and from each socket.
const BATCH: usize = IDEAL_BATCH_SIZE;
/// Segments a 64 KiB GSO packet splits into when its MSS is at least 1 KiB.
const GSO_SEGMENTS: usize = 64;
/// Every buffer holds the largest IP packet plus the room sealing adds around it.
const BUF_LEN: usize = HEADROOM + 65_535 + 64;
/// Where a received datagram is written: the inner packet that opening leaves in it
/// must have room in front for the virtio-net header the TUN wants with offload.
const RX_OFFSET: usize = VIRTIO_NET_HDR_LEN;

/// A worker's state; `run` consumes it on its own thread.
pub struct Worker {
    tun: SyncDevice,
    sockets: EspSockets,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    drops: Arc<Drops>,
    spd: Spd,
    /// Inbound SAs this worker owns, by SPI.
    inbound: HashMap<u32, Box<Inbound>>,
    batch: Batch,
    /// Packets from the TUN, sealed in place.
    tx: Vec<Vec<u8>>,
    /// Datagrams from the sockets, opened in place.
    rx: Vec<Vec<u8>>,
    /// Inner packets for the TUN, swapped out of `rx` (keeps `rx` whole for the next batch).
    to_tun: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    gso: Vec<u8>,
    gro: GROTable,
    lens: Vec<usize>,
}

/// The security policy database: outbound SAs, the one activated last first, so
/// that it carries what older SAs with the same selectors would.
#[derive(Default)]
struct Spd(Vec<Arc<Outbound>>);

impl Spd {
    fn activate(&mut self, sa: Arc<Outbound>) {
        self.0.insert(0, sa);
    }

    /// Forgets the SA installed as inbound SPI `id`, and no other (outbound SPIs are
    /// the peers' choice: two peers may pick the same).
    fn remove(&mut self, id: u32) {
        self.0.retain(|sa| sa.id != id);
    }

    /// The index of the SA for `flow`.
    fn lookup(&self, flow: &Flow) -> Option<usize> {
        self.0
            .iter()
            .position(|sa| flow.selected(&sa.local_ts, &sa.remote_ts))
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

impl Worker {
    /// Sets a worker up; nothing runs until `run`.
    pub fn new(
        tun: SyncDevice,
        sockets: EspSockets,
        commands: Receiver<Command>,
        wake: Arc<EventFd>,
        drops: Arc<Drops>,
    ) -> Self {
        let buffers = || (0..BATCH).map(|_| vec![0u8; BUF_LEN]).collect::<Vec<_>>();
        Self {
            tun,
            sockets,
            commands,
            wake,
            drops,
            spd: Spd::default(),
            inbound: HashMap::new(),
            batch: Batch::new(BATCH),
            tx: buffers(),
            rx: buffers(),
            to_tun: buffers(),
            sizes: vec![0; BATCH],
            gso: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
            gro: GROTable::default(),
            lens: Vec::with_capacity(BATCH),
        }
    }

    /// Serves until told to stop.
    pub fn run(mut self) {
        loop {
            let mut ready = Vec::with_capacity(2 + self.sockets.0.len());
            {
                let mut fds = vec![
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.tun.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    self.sockets
                        .0
                        .iter()
                        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        eprintln!("worker poll: {e}");
                        return;
                    }
                }
                ready.extend(
                    fds.iter()
                        .map(|f| f.revents().is_some_and(|r| !r.is_empty())),
                );
            }
            if ready[0] {
                let _ = self.wake.read();
                if !self.apply_commands() {
                    return;
                }
            }
            if ready[1] {
                self.outbound_batch();
            }
            for i in 0..self.sockets.0.len() {
                if ready[2 + i] {
                    self.inbound_batch(i);
                }
            }
        }
    }

    /// Applies queued commands; false when told to stop.
    fn apply_commands(&mut self) -> bool {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Outbound(sa) => self.spd.activate(sa),
                Command::Inbound(spi, sa) => {
                    self.inbound.insert(spi, sa);
                }
                Command::Remove(id) => {
                    self.inbound.remove(&id);
                    self.spd.remove(id);
                }
                Command::Stop => return false,
            }
        }
        true
    }

    /// Reads a batch from the TUN queue, seals what policy covers, sends it.
    fn outbound_batch(&mut self) {
        let mut count = 0;
        // With offload one read can split into a segment per buffer: read only while a
        // full-size GSO packet (64 KiB, ≥ 1 KiB segments) is sure to fit.
        while count == 0 || BATCH - count >= GSO_SEGMENTS {
            let got = self.tun.recv_multiple(
                &mut self.gso,
                &mut self.tx[count..],
                &mut self.sizes[count..],
                HEADROOM,
            );
            match got {
                Ok(n) => count += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // A GSO packet tun-rs could not split; the rest of the queue is fine.
                    self.drops.count(DropReason::Malformed);
                    break;
                }
            }
        }
        let mut sealed: Vec<Sealed> = Vec::with_capacity(count);
        for i in 0..count {
            let buf = &mut self.tx[i];
            buf.truncate(HEADROOM + self.sizes[i]);
            match seal(&self.spd, buf) {
                Ok((head, sa)) => sealed.push(Sealed { buf: i, head, sa }),
                Err(Refused::Drop(why)) => self.drops.count(why),
                Err(Refused::TooBig(icmp)) => {
                    self.drops.count(DropReason::TooBig);
                    // Through send_multiple, which adds the virtio-net header offload needs.
                    let mut one = [[&[0; VIRTIO_NET_HDR_LEN][..], &icmp].concat()];
                    if self
                        .tun
                        .send_multiple(&mut self.gro, &mut one, VIRTIO_NET_HDR_LEN)
                        .is_err()
                    {
                        self.drops.count(DropReason::Io);
                    }
                }
            }
        }
        // One send per run of packets with the same SA (usually the whole batch).
        for run in sealed.chunk_by(|a, b| a.sa == b.sa) {
            let sa = &self.spd.0[run[0].sa];
            let packets: Vec<&[u8]> = run.iter().map(|s| &self.tx[s.buf][s.head..]).collect();
            let socket = &self.sockets.0[sa.socket];
            let failed = self.batch.send(socket, &packets, sa.peer, sa.local);
            for _ in 0..failed {
                self.drops.count(DropReason::Io);
            }
        }
        for buf in &mut self.tx[..count] {
            buf.resize(BUF_LEN, 0);
        }
    }

    /// Receives a batch of ESP, opens what is ours, writes the inner packets to the TUN.
    fn inbound_batch(&mut self, index: usize) {
        self.lens.clear();
        let socket = &self.sockets.0[index];
        if self
            .batch
            .recv(socket, &mut self.rx, RX_OFFSET, &mut self.lens)
            .is_err()
        {
            return;
        }
        let raw_v4 = socket.transport == Transport::Raw && socket.bound.is_ipv4();
        // Where each inner packet in to_tun[..ready.len()] starts.
        let mut ready: Vec<usize> = Vec::with_capacity(self.lens.len());
        for (i, &len) in self.lens.iter().enumerate() {
            let buf = &mut self.rx[i];
            let mut esp = RX_OFFSET..RX_OFFSET + len;
            if raw_v4 {
                // Raw IPv4 sockets deliver the IP header too.
                let ihl = usize::from(buf[RX_OFFSET] & 0x0f) * 4;
                esp.start += ihl.min(len);
            }
            match open(&mut self.inbound, &mut buf[esp.clone()]) {
                Ok(inner) => {
                    let (start, end) = (esp.start + inner.start, esp.start + inner.end);
                    let k = ready.len();
                    std::mem::swap(&mut self.rx[i], &mut self.to_tun[k]);
                    self.to_tun[k].truncate(end);
                    ready.push(start);
                }
                Err(why) => self.drops.count(why),
            }
        }
        // tun-rs writes every buffer of a call from one offset: one call per run of
        // equal offsets (a batch of one SA has one).
        let mut start = 0;
        for run in ready.chunk_by(|a, b| a == b) {
            let end = start + run.len();
            if self
                .tun
                .send_multiple(&mut self.gro, &mut self.to_tun[start..end], run[0])
                .is_err()
            {
                self.drops.count(DropReason::Io);
            }
            start = end;
        }
        for buf in &mut self.to_tun[..ready.len()] {
            buf.resize(BUF_LEN, 0);
        }
    }
}

/// Why an outbound packet was not sealed.
enum Refused {
    Drop(DropReason),
    /// Too big with DF set: this ICMP error goes back into the TUN.
    TooBig(Vec<u8>),
}

/// Finds the SA for the packet at `buf[HEADROOM..]` and seals it in place.
fn seal(spd: &Spd, buf: &mut Vec<u8>) -> Result<(usize, usize), Refused> {
    let packet = &buf[HEADROOM..];
    let flow = Flow::parse(packet).ok_or(Refused::Drop(DropReason::Malformed))?;
    let index = spd.lookup(&flow).ok_or(Refused::Drop(DropReason::NoSa))?;
    let sa = &spd.0[index];
    if sa.traffic.reached(&sa.hard).is_some() {
        return Err(Refused::Drop(DropReason::Expired));
    }
    let len = packet.len();
    if len > sa.max_inner && flow.dont_fragment {
        let mtu = u16::try_from(sa.max_inner).unwrap_or(u16::MAX);
        return Err(packet::too_big(packet, &flow, mtu)
            .map_or(Refused::Drop(DropReason::TooBig), Refused::TooBig));
    }
    let next_header = match flow.src {
        IpAddr::V4(_) => NEXT_HEADER_IPV4,
        IpAddr::V6(_) => NEXT_HEADER_IPV6,
    };
    let head = sa
        .sa
        .seal(buf, HEADROOM, next_header)
        .map_err(|_| Refused::Drop(DropReason::Expired))?;
    sa.traffic.add(len);
    Ok((head, index))
}

/// Opens an ESP packet in place; returns the inner packet's range within it.
fn open(
    inbound: &mut HashMap<u32, Box<Inbound>>,
    esp: &mut [u8],
) -> Result<std::ops::Range<usize>, DropReason> {
    let spi = esp
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DropReason::Malformed)?;
    let sa = inbound.get_mut(&spi).ok_or(DropReason::NoSa)?;
    if sa.traffic.reached(&sa.hard).is_some() {
        return Err(DropReason::Expired);
    }
    let (inner, next_header, _) = sa.sa.open(esp).map_err(|e| match e {
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
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encr, Secret};
    use crate::esp::{OutboundSa, SaKeys};
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
            sa,
            spi,
            id,
            local_ts: vec![net([10, 1, 0, 0], [10, 1, 0, 255])],
            remote_ts: vec![remote],
            socket: 0,
            peer: "192.0.2.2:0".parse().unwrap(),
            local: "192.0.2.1".parse().unwrap(),
            max_inner: 1400,
            hard: Limits::default(),
            traffic: super::super::Traffic::default(),
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

    fn ids(spd: &Spd) -> Vec<u32> {
        spd.0.iter().map(|sa| sa.id).collect()
    }

    #[test]
    fn the_sa_activated_last_carries_what_older_ones_cover() {
        let mut spd = Spd::default();
        spd.activate(outbound(1, 0x100, net([10, 2, 0, 0], [10, 2, 0, 255])));
        spd.activate(outbound(2, 0x200, net([10, 2, 0, 0], [10, 2, 255, 255])));
        assert_eq!(spd.lookup(&to([10, 2, 0, 5])), Some(0));
        assert_eq!(spd.0[0].id, 2);
        assert_eq!(spd.lookup(&to([10, 2, 9, 5])), Some(0));
        assert_eq!(spd.lookup(&to([10, 3, 0, 1])), None);
        // A rekey: the new SA takes over; the old one is found again once it goes.
        spd.activate(outbound(3, 0x300, net([10, 2, 0, 0], [10, 2, 255, 255])));
        assert_eq!(ids(&spd), [3, 2, 1]);
        spd.remove(3);
        spd.remove(2);
        assert_eq!(spd.0[spd.lookup(&to([10, 2, 0, 5])).unwrap()].id, 1);
    }

    #[test]
    fn removal_is_by_install_id_even_when_peers_share_an_outbound_spi() {
        let mut spd = Spd::default();
        // Two peers chose the same SPI for their inbound SAs (our outbound ones).
        spd.activate(outbound(1, 0xabcd, net([10, 2, 0, 0], [10, 2, 0, 255])));
        spd.activate(outbound(2, 0xabcd, net([10, 3, 0, 0], [10, 3, 0, 255])));
        spd.remove(2);
        assert_eq!(ids(&spd), [1]);
        assert_eq!(spd.lookup(&to([10, 2, 0, 5])), Some(0));
        spd.remove(0xabcd);
        assert_eq!(ids(&spd), [1], "an outbound SPI names nothing");
    }
}
