//! The workers' ESP sockets: UDP on the NAT-T port (RFC 3948), in one SO_REUSEPORT
//! group with the control thread's socket, and raw IP protocol 50 sockets for ESP
//! without NAT. Classic BPF programs steer each packet to the worker that owns its
//! SPI, and IKE (behind the non-ESP marker) to the control thread. A spread SA's
//! packets (its SPI has [`SPREAD_SPI_BIT`]) go by sequence number instead, in blocks
//! of 2^[`SPREAD_SHIFT`], to the worker whose part of the SA checks them.

use super::buf::PacketBuf;
use super::worker::BATCH;
use crate::config::Listen;
use crate::esp::replay::{Class, SPREAD_SHIFT};
use crate::ike::{SPREAD_SPI_BIT, is_spread};
use crate::netio::{self, PacketInfo};
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, RecvMsg, SockaddrStorage, bind,
    recvmmsg, recvmsg, sendmmsg, sendmsg, setsockopt, sockopt,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// How ESP travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In UDP on the NAT-T port (RFC 3948).
    Udp,
    /// As IP protocol 50.
    Raw,
}

/// The sockets every worker opens, in this order: for each listen address, UDP on
/// the NAT-T port, then raw ESP.
pub fn addresses(listen: &Listen) -> Vec<(Transport, SocketAddr)> {
    listen
        .addrs
        .iter()
        .flat_map(|&a| {
            [
                (Transport::Udp, SocketAddr::new(a, listen.natt_port)),
                (Transport::Raw, SocketAddr::new(a, 0)),
            ]
        })
        .collect()
}

/// The worker whose sockets the steering programs hand packets for `spi`, if it is
/// not spread.
pub fn owner(spi: u32, workers: usize) -> usize {
    spi as usize % workers
}

/// The worker the steering programs hand the ESP packet starting `esp` to, as they
/// compute it: by SPI, or for a spread SA by sequence number; None if it is too short
/// to tell.
pub fn steer(esp: &[u8], workers: usize) -> Option<usize> {
    let spi = u32::from_be_bytes(*esp.first_chunk::<4>()?);
    if !is_spread(spi) {
        return Some(owner(spi, workers));
    }
    let seq = u32::from_be_bytes(*esp.get(4..8)?.first_chunk::<4>()?);
    Some(Class::of(seq, workers as u32) as usize)
}

/// One socket of a worker.
pub struct EspSocket {
    fd: OwnedFd,
    /// UDP or raw.
    pub transport: Transport,
    /// The address it is bound to.
    pub bound: SocketAddr,
    /// UDP GRO is on: receive with [`Batch::recv_train`].
    pub gro: bool,
}

impl AsFd for EspSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A worker's sockets, in [`addresses`] order.
pub struct EspSockets(pub Vec<EspSocket>);

/// The largest UDP GRO train: the kernel coalesces no more than 64 KiB, and a
/// sender's GSO run is no larger.
pub const MAX_TRAIN: usize = 65_535;

/// Turns UDP GRO on: the datagrams of one flow that arrive together then stay one
/// buffer, a train, which the kernel queues once and we take with one system call.
/// Without it (kernels before 5.0) they come one by one, which `tell` logs (once for
/// all workers).
fn enable_gro(fd: &OwnedFd, bound: SocketAddr, tell: bool) -> bool {
    match setsockopt(fd, sockopt::UdpGroSegment, &true) {
        Ok(()) => true,
        Err(e) => {
            if tell {
                crate::warn!(
                    "UDP GRO unavailable on {bound} ({e}): receiving datagrams one by one"
                );
            }
            false
        }
    }
}

nix::setsockopt_impl!(
    AttachFilter,
    libc::SOL_SOCKET,
    libc::SO_ATTACH_FILTER,
    libc::sock_fprog,
    sockopt::SetStruct<libc::sock_fprog>
);

/// SO_ATTACH_FILTER, which nix does not name.
#[derive(Clone, Copy, Debug)]
struct AttachFilter;

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const LD_W_IND: u16 = 0x40;
const LDX_B_MSH: u16 = 0xb1;
const ALU_MOD_K: u16 = 0x94;
const ALU_ADD_K: u16 = 0x04;
const ALU_RSH_K: u16 = 0x74;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_A: u16 = 0x16;
const RET_K: u16 = 0x06;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn program(filter: &mut [libc::sock_filter]) -> libc::sock_fprog {
    libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    }
}

/// With the SPI in A, leaves in A the worker [`steer`] names: for a spread SPI it
/// loads the sequence number (4 bytes on, by `load`) and takes its block's class.
fn worker_in_a(load: u16, workers: usize) -> [libc::sock_filter; 4] {
    [
        insn(JSET_K, 0, 2, SPREAD_SPI_BIT),
        insn(load, 0, 0, 4),
        insn(ALU_RSH_K, 0, 0, SPREAD_SHIFT),
        insn(ALU_MOD_K, 0, 0, workers as u32),
    ]
}

/// The NAT-T group's steering: the first four payload bytes are zero for IKE (the
/// non-ESP marker) and go to socket 0, the control thread's; anything too short to
/// hold an SPI (keepalives), or a spread SA's sequence number, also yields 0, since a
/// failed load returns 0. ESP goes to socket 1 + the worker [`steer`] names.
fn steer_udp(fd: &OwnedFd, workers: usize) -> io::Result<()> {
    let mut filter = vec![insn(LD_W_ABS, 0, 0, 0), insn(JEQ_K, 6, 0, 0)];
    filter.extend(worker_in_a(LD_W_ABS, workers));
    filter.extend([
        insn(ALU_ADD_K, 0, 0, 1),
        insn(RET_A, 0, 0, 0),
        insn(RET_K, 0, 0, 0),
    ]);
    setsockopt(fd, sockopt::AttachReusePortCbpf, &program(&mut filter))?;
    Ok(())
}

/// A raw ESP socket sees every ESP packet; this keeps those [`steer`] names worker
/// `index` for. IPv4 raw sockets see the IP header first, IPv6 ones start at the ESP
/// header.
fn steer_raw(fd: &OwnedFd, v4: bool, index: usize, workers: usize) -> io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = if v4 {
        vec![insn(LDX_B_MSH, 0, 0, 0), insn(LD_W_IND, 0, 0, 0)]
    } else {
        vec![insn(LD_W_ABS, 0, 0, 0)]
    };
    filter.extend(worker_in_a(if v4 { LD_W_IND } else { LD_W_ABS }, workers));
    filter.extend([
        insn(JEQ_K, 0, 1, index as u32),
        insn(RET_K, 0, 0, u32::MAX),
        insn(RET_K, 0, 0, 0),
    ]);
    setsockopt(fd, AttachFilter, &program(&mut filter))?;
    Ok(())
}

#[cfg(test)]
impl EspSocket {
    /// A worker's UDP socket on loopback, on a port of the kernel's choice (no mark,
    /// no steering: no privileges), with UDP GRO if `gro`.
    pub(super) fn loopback(gro: bool) -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let bound = socket.local_addr().expect("bound");
        let fd = OwnedFd::from(socket);
        setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).expect("IP_PKTINFO");
        let gro = gro && enable_gro(&fd, bound, true);
        Self {
            fd,
            transport: Transport::Udp,
            bound,
            gro,
        }
    }

    /// Waits up to a second for a datagram.
    pub(super) fn wait_readable(&self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut fds, PollTimeout::from(1000u16)),
            Ok(1),
            "nothing came"
        );
    }
}

impl EspSockets {
    /// Opens worker `index`'s sockets, marked `mark` so that ESP leaves by the main
    /// routing table. Workers must open theirs in index order, after the control
    /// thread bound the NAT-T port: a socket's place in the port's group is its bind
    /// order.
    pub fn open(
        addrs: &[(Transport, SocketAddr)],
        index: usize,
        workers: usize,
        mark: u32,
    ) -> io::Result<Self> {
        let mut out = Vec::new();
        for &(transport, bound) in addrs {
            let mut gro = false;
            let fd = match transport {
                Transport::Udp => {
                    let fd = netio::bind_udp(bound, true, true, mark)?;
                    if index == 0 {
                        steer_udp(&fd, workers)?;
                    }
                    gro = enable_gro(&fd, bound, index == 0);
                    fd
                }
                Transport::Raw => {
                    let domain = if bound.is_ipv4() {
                        socket2::Domain::IPV4
                    } else {
                        socket2::Domain::IPV6
                    };
                    let esp = socket2::Protocol::from(libc::IPPROTO_ESP);
                    let fd =
                        OwnedFd::from(socket2::Socket::new(domain, socket2::Type::RAW, Some(esp))?);
                    setsockopt(&fd, sockopt::Mark, &mark)?;
                    steer_raw(&fd, bound.is_ipv4(), index, workers)?;
                    // No IPV6_V6ONLY: a raw IPv6 socket only sees IPv6, and refuses it.
                    bind(fd.as_raw_fd(), &SockaddrStorage::from(bound))?;
                    fd
                }
            };
            setsockopt(&fd, sockopt::RcvBuf, &(4 << 20))?;
            setsockopt(&fd, sockopt::SndBuf, &(4 << 20))?;
            out.push(EspSocket {
                fd,
                transport,
                bound,
                gro,
            });
        }
        Ok(Self(out))
    }
}

/// UDP GSO (UDP_SEGMENT): at most this many segments and bytes in one send.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 65_000;

/// How many packets from the start of `packets` one GSO send can carry: all of one
/// size, except that the last may be shorter, and of one SPI. The peer's kernel
/// steers a GSO train (and a GRO train built from it) by its first segment alone, so
/// a train of one SA reaches the worker that owns it whole.
fn gso_run(packets: &[&[u8]]) -> usize {
    let segment = packets[0].len();
    let spi = packets[0].get(..4);
    let mut bytes = 0;
    let mut n = 0;
    for p in packets.iter().take(GSO_MAX_SEGMENTS) {
        if p.len() > segment || bytes + p.len() > GSO_MAX_BYTES || p.get(..4) != spi {
            break;
        }
        bytes += p.len();
        n += 1;
        if p.len() < segment {
            break;
        }
    }
    n
}

/// A received datagram's length and addresses (where it lies is the caller's).
#[derive(Clone, Copy)]
pub struct Datagram {
    /// Its length.
    pub len: usize,
    /// The sender.
    pub sender: Option<SockaddrStorage>,
    /// The address it was sent to (IP_PKTINFO; UDP sockets only).
    pub local: Option<IpAddr>,
}

/// The ranges of a train's datagrams: `segment` bytes each, the last possibly
/// shorter; one datagram if `segment` is 0 (nothing was coalesced).
pub fn segments(len: usize, segment: usize) -> impl Iterator<Item = Range<usize>> {
    let size = if segment == 0 { len.max(1) } else { segment };
    (0..len)
        .step_by(size)
        .map(move |start| start..len.min(start + size))
}

/// The IP_PKTINFO address of a received datagram, if it carries one.
fn local_address(msg: &RecvMsg<'_, '_, SockaddrStorage>) -> Option<IpAddr> {
    msg.cmsgs()
        .ok()?
        .find_map(|c| netio::packet_info_address(&c))
}

/// Reusable headers for batched receive and send.
pub struct Batch {
    /// recvmmsg headers, one set per socket: nix never gives a header back the room
    /// for control messages that the kernel shrank to what it wrote, so a UDP
    /// socket's IP_PKTINFO must not meet headers a raw socket (none) or the other
    /// family (a smaller one) used last.
    recv: Vec<MultiHeaders<SockaddrStorage>>,
    /// Room for one train's control messages: IP_PKTINFO and UDP_GRO.
    cmsg: Vec<u8>,
    send: MultiHeaders<SockaddrStorage>,
    /// The destination of each datagram of a sendmmsg (kept for its capacity; an
    /// array on the stack would mean writing 16 KiB to send one datagram).
    dests: Vec<Option<SockaddrStorage>>,
    /// Send runs of equal-sized UDP datagrams as one GSO send; off once the kernel
    /// or the device refuses it.
    gso: bool,
}

impl Batch {
    /// Room for `size` datagrams per call on each of `sockets`.
    pub fn new(size: usize, sockets: &EspSockets) -> Self {
        Self {
            recv: sockets
                .0
                .iter()
                .map(|s| {
                    let pktinfo = s.transport == Transport::Udp;
                    MultiHeaders::preallocate(
                        size,
                        pktinfo.then(|| nix::cmsg_space!(libc::in6_pktinfo)),
                    )
                })
                .collect(),
            cmsg: nix::cmsg_space!(libc::in6_pktinfo, libc::c_int),
            send: MultiHeaders::preallocate(size, Some(nix::cmsg_space!(libc::in6_pktinfo))),
            dests: Vec::with_capacity(size),
            gso: true,
        }
    }

    /// Receives up to `bufs.len()` datagrams without blocking from socket `index`,
    /// each into `bufs[i][offset..]`, and appends each one to `received`.
    pub fn recv(
        &mut self,
        index: usize,
        socket: &EspSocket,
        bufs: &mut [PacketBuf],
        offset: usize,
        received: &mut Vec<Datagram>,
    ) -> io::Result<()> {
        // On the stack: this runs for every batch.
        let n = bufs.len().min(BATCH);
        let mut bufs = bufs.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| {
                b.reset();
                &mut b.as_mut()[offset..]
            }))]
        });
        let results = recvmmsg(
            socket.fd.as_raw_fd(),
            &mut self.recv[index],
            iovs[..n].iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        received.extend(results.map(|r| Datagram {
            len: r.bytes,
            sender: r.address,
            local: local_address(&r),
        }));
        Ok(())
    }

    /// Receives one datagram or UDP GRO train without blocking into `train` (of
    /// [`MAX_TRAIN`] bytes); returns it and its segment size for [`segments`]. With
    /// recvmsg, not recvmmsg: the latter's headers would lose the UDP_GRO message
    /// after any datagram that came without one (see `recv`).
    pub fn recv_train(
        &mut self,
        socket: &EspSocket,
        train: &mut [u8],
    ) -> io::Result<(Datagram, usize)> {
        let mut iov = [IoSliceMut::new(train)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.fd.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::MSG_DONTWAIT,
        )?;
        let segment = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
            _ => None,
        });
        let datagram = Datagram {
            len: msg.bytes,
            sender: msg.address,
            local: local_address(&msg),
        };
        Ok((datagram, segment.unwrap_or(0)))
    }

    /// Sends each of `packets` to `to` from `source`, in as few calls as the kernel
    /// takes; returns how many it refused.
    pub fn send(
        &mut self,
        socket: &EspSocket,
        packets: &[&[u8]],
        to: SocketAddr,
        source: IpAddr,
    ) -> usize {
        // Always one control message: the headers were allocated with room for it, and
        // the kernel rejects room left empty. For a socket bound to `source` it is moot.
        let info = PacketInfo::new(source);
        let cmsg = [info.cmsg()];
        let to = SockaddrStorage::from(to);
        let mut failed = 0;
        let mut rest = packets;
        while !rest.is_empty() {
            let run = gso_run(rest);
            if self.gso && socket.transport == Transport::Udp && run > 1 {
                // One datagram per iovec, split by the kernel (or the NIC) at `segment`.
                let segment = rest[0].len() as u16;
                let mut iovs = [IoSlice::new(&[]); GSO_MAX_SEGMENTS];
                for (iov, p) in iovs.iter_mut().zip(&rest[..run]) {
                    *iov = IoSlice::new(p);
                }
                let cmsgs = [info.cmsg(), ControlMessage::UdpGsoSegments(&segment)];
                match sendmsg(
                    socket.fd.as_raw_fd(),
                    &iovs[..run],
                    &cmsgs,
                    MsgFlags::empty(),
                    Some(&to),
                ) {
                    Ok(_) => rest = &rest[run..],
                    Err(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) => {
                        crate::warn!(
                            "UDP GSO refused on {}: sending datagrams one by one",
                            socket.bound
                        );
                        self.gso = false;
                    }
                    Err(_) => {
                        failed += run;
                        rest = &rest[run..];
                    }
                }
                continue;
            }
            // With GSO on, this is a packet no run can take: send it alone, then try again.
            let take = if self.gso && socket.transport == Transport::Udp {
                1
            } else {
                rest.len().min(BATCH)
            };
            let mut iovs = [[IoSlice::new(&[])]; BATCH];
            for (iov, p) in iovs.iter_mut().zip(&rest[..take]) {
                *iov = [IoSlice::new(p)];
            }
            self.dests.clear();
            self.dests.resize(take, Some(to));
            match sendmmsg(
                socket.fd.as_raw_fd(),
                &mut self.send,
                &iovs[..take],
                &self.dests,
                cmsg,
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let sent = results.count().max(1);
                    rest = &rest[sent.min(rest.len())..];
                }
                Err(_) => {
                    // The first packet was refused (e.g. no route): drop it, go on.
                    failed += 1;
                    rest = &rest[1..];
                }
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ESP-looking packet of `len` bytes: SPI `spi`, then `fill`.
    fn esp(spi: u32, len: usize, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; len];
        p[..4].copy_from_slice(&spi.to_be_bytes());
        p
    }

    /// Five datagrams of 1000 bytes and a shorter last one, of one SA, then two of
    /// another SA.
    fn two_runs() -> [Vec<Vec<u8>>; 2] {
        let mut first: Vec<Vec<u8>> = (0..5).map(|i| esp(0x100, 1000, i)).collect();
        first.push(esp(0x100, 300, 5));
        [first, vec![esp(0x101, 1000, 6), esp(0x101, 1000, 7)]]
    }

    fn send_runs(batch: &mut Batch, from: &EspSocket, to: SocketAddr, runs: &[Vec<Vec<u8>>]) {
        let packets: Vec<&[u8]> = runs.iter().flatten().map(Vec::as_slice).collect();
        assert_eq!(batch.send(from, &packets, to, from.bound.ip()), 0);
    }

    #[test]
    fn a_gso_run_per_sa_arrives_as_a_train_and_splits_into_its_datagrams() {
        let sockets = EspSockets(vec![EspSocket::loopback(false), EspSocket::loopback(true)]);
        let [tx, rx] = &sockets.0[..] else {
            unreachable!()
        };
        assert!(rx.gro, "UDP GRO (Linux 5.0) refused");
        let mut batch = Batch::new(BATCH, &sockets);
        let runs = two_runs();
        send_runs(&mut batch, tx, rx.bound, &runs);
        let mut train = vec![0; MAX_TRAIN];
        for run in &runs {
            rx.wait_readable();
            let (datagram, segment) = batch.recv_train(rx, &mut train).unwrap();
            assert_eq!(segment, 1000, "one train per SA, coalesced");
            assert_eq!(datagram.local, Some(rx.bound.ip()));
            assert_eq!(
                datagram.sender.as_ref().and_then(netio::socket_addr),
                Some(tx.bound)
            );
            let got: Vec<&[u8]> = segments(datagram.len, segment).map(|r| &train[r]).collect();
            assert_eq!(got, *run);
        }
        assert_eq!(
            batch.recv_train(rx, &mut train).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
    }

    #[test]
    fn recvmmsg_takes_a_gso_run_datagram_by_datagram_with_local_addresses() {
        let sockets = EspSockets(vec![EspSocket::loopback(false), EspSocket::loopback(false)]);
        let [tx, rx] = &sockets.0[..] else {
            unreachable!()
        };
        let mut batch = Batch::new(BATCH, &sockets);
        let mut bufs: Vec<PacketBuf> = (0..BATCH).map(|_| PacketBuf::new(2048)).collect();
        // Twice: the headers must keep their room for IP_PKTINFO from one call to the next.
        for _ in 0..2 {
            let runs = two_runs();
            send_runs(&mut batch, tx, rx.bound, &runs);
            let sent: Vec<Vec<u8>> = runs.into_iter().flatten().collect();
            let mut received = Vec::new();
            while received.len() < sent.len() {
                rx.wait_readable();
                let n = received.len();
                batch.recv(1, rx, &mut bufs[n..], 8, &mut received).unwrap();
            }
            for (i, (d, p)) in received.iter().zip(&sent).enumerate() {
                assert_eq!(&bufs[i].as_ref()[8..8 + d.len], &p[..], "datagram {i}");
                assert_eq!(d.local, Some(rx.bound.ip()), "datagram {i}");
                assert_eq!(
                    d.sender.as_ref().and_then(netio::socket_addr),
                    Some(tx.bound)
                );
            }
        }
    }

    /// A NAT-T group on loopback as the daemon makes it: the control thread's socket,
    /// then three workers', the first with the steering program. Each datagram must
    /// reach the socket `steer` names (IKE and the too short the control thread's).
    #[test]
    fn the_steering_program_picks_the_worker_steer_names() {
        let workers = 3;
        let group: Vec<std::net::UdpSocket> = {
            let first = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .expect("socket");
            first.set_reuse_port(true).expect("SO_REUSEPORT");
            first
                .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
                .expect("bind");
            let port = first.local_addr().unwrap().as_socket().unwrap();
            let mut group = vec![std::net::UdpSocket::from(first)];
            for i in 0..workers {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                    .expect("socket");
                s.set_reuse_port(true).expect("SO_REUSEPORT");
                s.bind(&port.into()).expect("bind");
                let fd = OwnedFd::from(s);
                if i == 0 {
                    steer_udp(&fd, workers).expect("attach the program");
                }
                group.push(std::net::UdpSocket::from(fd));
            }
            group
        };
        let to = group[0].local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent: Vec<Vec<u8>> = vec![vec![0, 0, 0, 0, 1, 2, 3], vec![0x80, 0, 0, 1, 0]];
        let block = 1u32 << SPREAD_SHIFT;
        let seqs = [
            1,
            block - 1,
            block,
            2 * block + 3,
            3 * block + 9,
            u32::MAX - 5,
        ];
        for spi in [0x100u32, 0x101, 0x102, 0x8000_0100, 0xffff_ffff] {
            for seq in seqs {
                let mut p = vec![0; 40];
                p[..4].copy_from_slice(&spi.to_be_bytes());
                p[4..8].copy_from_slice(&seq.to_be_bytes());
                sent.push(p);
            }
        }
        for p in &sent {
            tx.send_to(p, to).unwrap();
        }
        let mut got = vec![Vec::new(); workers + 1];
        let mut buf = [0u8; 64];
        for (i, s) in group.iter().enumerate() {
            s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            while let Ok(n) = s.recv(&mut buf) {
                got[i].push(buf[..n].to_vec());
            }
        }
        for (i, received) in got.iter().enumerate() {
            let want: Vec<Vec<u8>> = sent
                .iter()
                .filter(|p| {
                    let control = p.len() < 8 || p[..4] == [0; 4];
                    let worker = if control { None } else { steer(p, workers) };
                    worker.map_or(0, |w| w + 1) == i
                })
                .cloned()
                .collect();
            assert_eq!(received, &want, "socket {i}");
        }
    }

    #[test]
    fn segments_split_a_train_and_leave_a_lone_datagram_whole() {
        assert_eq!(segments(300, 0).collect::<Vec<_>>(), vec![0..300]);
        assert_eq!(
            segments(2500, 1000).collect::<Vec<_>>(),
            [0..1000, 1000..2000, 2000..2500]
        );
        assert_eq!(segments(2000, 1000).count(), 2);
        assert_eq!(segments(0, 0).count(), 0);
    }

    #[test]
    fn gso_runs_are_equal_sized_but_for_a_shorter_last() {
        let (big, small) = (vec![0u8; 1400], vec![0u8; 100]);
        assert_eq!(gso_run(&[&big, &big, &big]), 3);
        assert_eq!(gso_run(&[&big, &big, &small, &big]), 3);
        assert_eq!(gso_run(&[&small, &big]), 1);
        assert_eq!(gso_run(&[&big]), 1);
        let many = vec![&big[..]; 100];
        assert_eq!(gso_run(&many), GSO_MAX_BYTES / 1400);
        let tiny = [0u8; 10];
        assert_eq!(gso_run(&vec![&tiny[..]; 100]), GSO_MAX_SEGMENTS);
    }

    #[test]
    fn gso_runs_never_mix_spis() {
        let sa = |spi: u32| {
            let mut p = vec![0u8; 1400];
            p[..4].copy_from_slice(&spi.to_be_bytes());
            p
        };
        let (a, b) = (sa(0x100), sa(0x101));
        assert_eq!(gso_run(&[&a, &a, &b, &b]), 2);
        assert_eq!(gso_run(&[&b, &b]), 2);
        assert_eq!(gso_run(&[&a, &b, &a]), 1);
    }
}
