//! Datagrams that reached the wrong thread. A train of datagrams (a peer's GSO run,
//! or what the kernel's GRO coalesced by 4-tuple alone) goes to the socket its first
//! datagram is steered to, whole or split there: a worker's train may hold ESP of an
//! SA another worker owns (a peer with two Child SAs) and IKE behind the non-ESP
//! marker, and a train led by IKE lands on the control thread's socket with ESP in
//! it. Each goes on to its owner here without blocking anyone: ESP in a pooled
//! buffer to the owner's inbox, IKE into the control thread's bounded queue. What
//! finds no room is dropped and counted (`handoff`), as a full receive buffer would
//! have dropped it.

use super::buf::PacketBuf;
use super::socket::{self, Datagram};
use crate::netio::{self, Received};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::SockaddrStorage;
use std::net::SocketAddr;
use std::sync::Arc;

/// Buffers in the pool per worker: a full train's worth in flight to each.
const BUFFERS_PER_WORKER: usize = 64;

/// An ESP datagram on its way to the worker that owns its SPI.
pub struct Handoff {
    /// The datagram, at `offset` as a socket read leaves it.
    pub buf: PacketBuf,
    /// The socket it came in on, by index: every worker opens the same ones in the
    /// same order.
    pub socket: usize,
    /// Its length and addresses.
    pub datagram: Datagram,
}

/// Whom a datagram on the NAT-T port belongs to.
#[derive(Debug, PartialEq, Eq)]
pub enum Owner {
    /// IKE, behind the non-ESP marker: the control thread.
    Control,
    /// ESP: the worker that owns its SPI.
    Worker(usize),
    /// Too short for either: a NAT keepalive (RFC 3948 §2.3), which carries nothing.
    Nobody,
}

/// What [`Relay::route`] did with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// It is the caller's to open.
    Open,
    /// It went on to its owner, or was a keepalive.
    Done,
    /// It belongs elsewhere and found no room on the way: it is dropped.
    NoRoom,
}

/// Where a received datagram is: a buffer of its own (at the relay's offset), which
/// it goes on in, or a slice of a GRO train, which it goes on as a copy of.
pub enum DatagramAt<'a> {
    /// In its own buffer.
    Own(&'a mut PacketBuf),
    /// Inside a train.
    InTrain(&'a [u8]),
}

/// Decides as the steering program does for a train's first segment (`steer_udp`).
pub fn owner(datagram: &[u8], workers: usize) -> Owner {
    match datagram.first_chunk::<4>() {
        None => Owner::Nobody,
        Some([0, 0, 0, 0]) => Owner::Control,
        // The program gives a spread SA's datagram too short for its sequence number
        // to the control thread, which has no use for it.
        Some(_) => socket::steer(datagram, workers).map_or(Owner::Nobody, Owner::Worker),
    }
}

/// What the workers and the control thread share to pass datagrams on.
pub struct Relay {
    /// Each worker's inbox and wake-up.
    inboxes: Vec<(Sender<Handoff>, Arc<EventFd>)>,
    /// Empty buffers. One handed over leaves one of these in its place, and the
    /// owner puts back the one it swaps out for it: the count never changes, and
    /// nothing is allocated once the workers gave theirs ([`Relay::contribute`]).
    free: (Sender<PacketBuf>, Receiver<PacketBuf>),
    /// Where the control thread's IKE sockets put what they receive.
    ike: tokio::sync::mpsc::Sender<Received>,
    /// Where a datagram starts in a buffer.
    offset: usize,
}

impl Relay {
    /// A relay among the workers woken by `wakes`, whose buffers hold datagrams at
    /// `offset`; IKE goes to `ike`. Returns each worker's inbox with it.
    pub fn new(
        wakes: Vec<Arc<EventFd>>,
        offset: usize,
        ike: tokio::sync::mpsc::Sender<Received>,
    ) -> (Self, Vec<Receiver<Handoff>>) {
        let buffers = BUFFERS_PER_WORKER * wakes.len();
        let free = crossbeam_channel::bounded(buffers);
        let (inboxes, receivers) = wakes
            .into_iter()
            .map(|wake| {
                // Never the limit: no more buffers exist.
                let (tx, rx) = crossbeam_channel::bounded(buffers);
                ((tx, wake), rx)
            })
            .unzip();
        let relay = Self {
            inboxes,
            free,
            ike,
            offset,
        };
        (relay, receivers)
    }

    /// Adds a worker's share of empty buffers, of `buf_len` bytes, to the pool. Each
    /// worker allocates its own on its own thread, whose fresh memory stays out of
    /// the resident set until a datagram is written into it (allocated on the control
    /// thread, where calloc zeroes reused memory, the pool added 4.5 MB to a
    /// two-worker gateway's RSS).
    pub fn contribute(&self, buf_len: usize) {
        for _ in 0..BUFFERS_PER_WORKER {
            self.recycle(PacketBuf::new(buf_len));
        }
    }

    /// How many workers there are.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Passes on a datagram worker `index` received on UDP socket `socket` (bound to
    /// `bound`), unless it is the worker's own. A datagram in a buffer of its own
    /// goes on to another worker in it, leaving an empty buffer in its place, and
    /// that worker is marked in `handed`, to be woken ([`Relay::wake`]) once for the
    /// batch; one in a train goes on as a copy, and wakes its worker at once.
    pub fn route(
        &self,
        index: usize,
        at: DatagramAt<'_>,
        socket: usize,
        bound: SocketAddr,
        datagram: Datagram,
        handed: &mut [bool],
    ) -> Route {
        let data = match &at {
            DatagramAt::Own(buf) => &buf.as_ref()[self.offset..self.offset + datagram.len],
            DatagramAt::InTrain(data) => data,
        };
        let done = match owner(data, self.workers()) {
            Owner::Worker(w) if w == index => return Route::Open,
            Owner::Worker(w) => match at {
                DatagramAt::Own(buf) => {
                    let sent = self.to_worker(w, buf, socket, datagram);
                    handed[w] |= sent;
                    sent
                }
                // A train steered by its first datagram, with another SA's further on.
                DatagramAt::InTrain(data) => datagram
                    .sender
                    .as_ref()
                    .and_then(netio::socket_addr)
                    .is_some_and(|sender| self.copy_to_worker(w, data, socket, sender)),
            },
            Owner::Control => {
                let local = SocketAddr::new(datagram.local.unwrap_or(bound.ip()), bound.port());
                datagram
                    .sender
                    .as_ref()
                    .and_then(netio::socket_addr)
                    .is_some_and(|remote| self.to_control(data, local, remote))
            }
            Owner::Nobody => true,
        };
        if done { Route::Done } else { Route::NoRoom }
    }

    /// Hands the datagram in `buf` to worker `to` and leaves an empty buffer in its
    /// place; false if there was no room, and `buf` keeps it.
    fn to_worker(&self, to: usize, buf: &mut PacketBuf, socket: usize, datagram: Datagram) -> bool {
        let Ok(spare) = self.free.1.try_recv() else {
            return false;
        };
        let handoff = Handoff {
            buf: std::mem::replace(buf, spare),
            socket,
            datagram,
        };
        match self.send(to, handoff) {
            Ok(()) => true,
            Err(handed) => {
                self.recycle(std::mem::replace(buf, handed));
                false
            }
        }
    }

    /// Hands a copy of the ESP datagram `data`, received on socket `socket` from
    /// `sender`, to worker `to`, and wakes it; false if there was no room.
    pub fn copy_to_worker(
        &self,
        to: usize,
        data: &[u8],
        socket: usize,
        sender: SocketAddr,
    ) -> bool {
        let Ok(mut buf) = self.free.1.try_recv() else {
            return false;
        };
        buf.reset();
        let Some(at) = buf
            .storage_mut()
            .get_mut(self.offset..self.offset + data.len())
        else {
            self.recycle(buf);
            return false;
        };
        at.copy_from_slice(data);
        let datagram = Datagram {
            len: data.len(),
            sender: Some(SockaddrStorage::from(sender)),
            local: None,
        };
        let handoff = Handoff {
            buf,
            socket,
            datagram,
        };
        match self.send(to, handoff) {
            Ok(()) => {
                self.wake(to);
                true
            }
            Err(buf) => {
                self.recycle(buf);
                false
            }
        }
    }

    /// Puts `handoff` into worker `to`'s inbox; gives its buffer back if full.
    fn send(&self, to: usize, handoff: Handoff) -> Result<(), PacketBuf> {
        self.inboxes[to]
            .0
            .try_send(handoff)
            .map_err(|(TrySendError::Full(h) | TrySendError::Disconnected(h))| h.buf)
    }

    /// Wakes worker `to` to take what was handed to it.
    pub fn wake(&self, to: usize) {
        let _ = self.inboxes[to].1.write(1);
    }

    /// Puts an empty buffer back into the pool: one a worker swapped out for a
    /// datagram handed to it.
    pub fn recycle(&self, buf: PacketBuf) {
        // Never full: it has room for every buffer there is.
        let _ = self.free.0.try_send(buf);
    }

    /// Hands an IKE datagram to the control thread; false if its queue is full.
    fn to_control(&self, data: &[u8], local: SocketAddr, remote: SocketAddr) -> bool {
        // IKE, not the data path: a copy of its own, as the IKE sockets make.
        self.ike
            .try_send(Received {
                data: data.to_vec(),
                remote,
                local,
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::socket::{Batch, EspSocket, EspSockets, MAX_TRAIN, segments};
    use nix::sys::eventfd::EfdFlags;
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::io::IoSlice;
    use std::os::fd::{AsFd, AsRawFd};
    use tokio::sync::mpsc;

    /// Where the tests put datagrams in their buffers.
    const OFFSET: usize = 10;

    struct Setup {
        relay: Relay,
        inboxes: Vec<Receiver<Handoff>>,
        wakes: Vec<Arc<EventFd>>,
        ike: mpsc::Receiver<Received>,
    }

    /// A relay among `workers` workers, with room for `ike` datagrams in the IKE queue.
    fn setup(workers: usize, ike: usize) -> Setup {
        let wakes: Vec<_> = (0..workers)
            .map(|_| Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap()))
            .collect();
        let (tx, rx) = mpsc::channel(ike);
        let (relay, inboxes) = Relay::new(wakes.clone(), OFFSET, tx);
        for _ in 0..workers {
            relay.contribute(2048);
        }
        Setup {
            relay,
            inboxes,
            wakes,
            ike: rx,
        }
    }

    /// A buffer holding `data` as a socket read leaves it.
    fn holding(data: &[u8]) -> PacketBuf {
        let mut buf = PacketBuf::new(2048);
        buf.storage_mut()[OFFSET..OFFSET + data.len()].copy_from_slice(data);
        buf
    }

    fn esp(spi: u32) -> Vec<u8> {
        let mut p = vec![spi as u8; 200];
        p[..4].copy_from_slice(&spi.to_be_bytes());
        p
    }

    fn datagram(len: usize, sender: SocketAddr) -> Datagram {
        Datagram {
            len,
            sender: Some(SockaddrStorage::from(sender)),
            local: None,
        }
    }

    #[test]
    fn owners_are_as_the_steering_program_picks_them() {
        assert_eq!(owner(&[0xff], 3), Owner::Nobody);
        assert_eq!(owner(&[1, 2, 3], 3), Owner::Nobody);
        assert_eq!(owner(&[0, 0, 0, 0, 0x21], 3), Owner::Control);
        assert_eq!(owner(&[0, 0, 1, 0, 9, 9], 3), Owner::Worker(256 % 3));
        assert_eq!(owner(&esp(7), 3), Owner::Worker(1));
        // A spread SA's: by the block of its sequence number, whatever its SPI.
        let spread = |seq: u32| {
            let mut p = esp(0x8000_0007);
            p[4..8].copy_from_slice(&seq.to_be_bytes());
            owner(&p, 3)
        };
        let block = 1 << crate::esp::replay::SPREAD_SHIFT;
        assert_eq!(spread(5), Owner::Worker(0));
        assert_eq!(spread(block), Owner::Worker(1));
        assert_eq!(spread(3 * block - 1), Owner::Worker(2));
        assert_eq!(spread(3 * block), Owner::Worker(0));
        assert_eq!(owner(&[0x80, 0, 0, 7, 0, 0, 0], 3), Owner::Nobody);
    }

    /// What `rx`, socket 1, received of `count` datagrams sent as one train, each in
    /// a buffer at OFFSET: split from the train with GRO, as the kernel split it
    /// without.
    fn receive(batch: &mut Batch, rx: &EspSocket, count: usize) -> Vec<(PacketBuf, Datagram)> {
        let mut bufs: Vec<PacketBuf> = (0..count).map(|_| PacketBuf::new(2048)).collect();
        let mut received = Vec::new();
        if rx.gro {
            let mut train = vec![0; MAX_TRAIN];
            rx.wait_readable();
            let (whole, size) = batch.recv_train(rx, &mut train).unwrap();
            for (buf, range) in bufs.iter_mut().zip(segments(whole.len, size)) {
                buf.storage_mut()[OFFSET..OFFSET + range.len()]
                    .copy_from_slice(&train[range.clone()]);
                received.push(Datagram {
                    len: range.len(),
                    ..whole
                });
            }
        } else {
            while received.len() < count {
                rx.wait_readable();
                let n = received.len();
                batch
                    .recv(1, rx, &mut bufs[n..], OFFSET, &mut received)
                    .unwrap();
            }
        }
        assert_eq!(received.len(), count, "all in one train");
        bufs.into_iter().zip(received).collect()
    }

    /// A peer's GSO run (or the kernel's GRO) put two SAs' ESP, IKE and a keepalive
    /// in one train, which reached worker 0's socket (whole with GRO, split by the
    /// kernel without): each datagram reaches its owner.
    #[test]
    fn a_mixed_train_goes_to_each_datagrams_owner() {
        for gro in [true, false] {
            let sockets = EspSockets(vec![EspSocket::loopback(false), EspSocket::loopback(gro)]);
            let [tx, rx] = &sockets.0[..] else {
                unreachable!()
            };
            assert_eq!(rx.gro, gro, "UDP GRO (Linux 5.0) refused");
            // Of 2 workers, SPIs 2 and 4 are worker 0's, 3 is worker 1's.
            let mut ike = vec![0xee; 200];
            ike[..4].fill(0);
            let sent = [esp(2), esp(3), ike, esp(4), vec![0xff]];
            let iovs: Vec<IoSlice<'_>> = sent.iter().map(|p| IoSlice::new(p)).collect();
            let to = SockaddrStorage::from(rx.bound);
            let segment = 200u16;
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(
                tx.as_fd().as_raw_fd(),
                &iovs,
                &cmsg,
                MsgFlags::empty(),
                Some(&to),
            )
            .unwrap();
            let mut s = setup(2, 4);
            let mut batch = Batch::new(8, &sockets);
            let mut handed = [false; 2];
            let mut kept = Vec::new();
            for ((mut buf, d), p) in receive(&mut batch, rx, sent.len()).into_iter().zip(&sent) {
                let data = buf.as_ref()[OFFSET..OFFSET + d.len].to_vec();
                assert_eq!(data, p[..]);
                // A worker opens a train's datagrams where they are, and each
                // datagram the kernel split in a buffer of its own.
                let at = if gro {
                    DatagramAt::InTrain(&data)
                } else {
                    DatagramAt::Own(&mut buf)
                };
                match s.relay.route(0, at, 1, rx.bound, d, &mut handed) {
                    Route::Open => kept.push(data),
                    Route::Done => {}
                    Route::NoRoom => panic!("no room"),
                }
            }
            assert_eq!(kept, [esp(2), esp(4)], "worker 0 opens its own");
            // Woken once for the batch, or at once for a copy out of a train.
            assert_eq!(handed, [false, !gro], "worker 1 is to be woken");
            assert_eq!(s.wakes[1].read().is_ok(), gro);
            let h = s.inboxes[1].try_recv().expect("worker 1's ESP");
            assert_eq!(
                &h.buf.as_ref()[OFFSET..OFFSET + h.datagram.len],
                &esp(3)[..]
            );
            assert_eq!(h.socket, 1);
            let sender = h.datagram.sender.as_ref().and_then(netio::socket_addr);
            assert_eq!(sender, Some(tx.bound));
            assert!(s.inboxes[0].is_empty() && s.inboxes[1].is_empty());
            let r = s.ike.try_recv().expect("the IKE message");
            assert_eq!(
                r.data, sent[2],
                "with its non-ESP marker, as the IKE socket reads it"
            );
            assert_eq!((r.local, r.remote), (rx.bound, tx.bound));
            assert!(s.ike.try_recv().is_err(), "the keepalive goes nowhere");
        }
    }

    #[test]
    fn what_finds_no_room_stays_put_and_the_pool_stays_whole() {
        let mut s = setup(2, 1);
        let peer: SocketAddr = "192.0.2.2:4500".parse().unwrap();
        let bound: SocketAddr = "0.0.0.0:4500".parse().unwrap();
        let mut handed = [false; 2];
        let pool = BUFFERS_PER_WORKER * 2;
        let route = |s: &Setup, data: &[u8], handed: &mut [bool; 2]| {
            let mut buf = holding(data);
            let d = datagram(data.len(), peer);
            let r = s
                .relay
                .route(0, DatagramAt::Own(&mut buf), 0, bound, d, handed);
            (r, buf.as_ref()[OFFSET..OFFSET + data.len()].to_vec())
        };
        for _ in 0..pool {
            assert_eq!(route(&s, &esp(3), &mut handed).0, Route::Done);
        }
        let (r, left) = route(&s, &esp(5), &mut handed);
        assert_eq!(r, Route::NoRoom, "the pool is empty");
        assert_eq!(left, esp(5), "the datagram stays where it was");
        // Worker 1 takes one and puts back the buffer it swapped out.
        let h = s.inboxes[1].try_recv().unwrap();
        s.relay.recycle(h.buf);
        assert_eq!(route(&s, &esp(5), &mut handed).0, Route::Done);
        assert_eq!(s.inboxes[1].len(), pool);
        // The control thread's queue holds one.
        let mut ike = esp(0);
        ike[4] = 1;
        assert_eq!(route(&s, &ike, &mut handed).0, Route::Done);
        assert_eq!(route(&s, &ike, &mut handed).0, Route::NoRoom);
        assert_eq!(s.ike.try_recv().unwrap().local, bound);
    }

    #[test]
    fn esp_that_reached_the_control_thread_goes_to_its_worker_woken() {
        let s = setup(2, 1);
        let peer: SocketAddr = "192.0.2.2:4500".parse().unwrap();
        assert!(s.relay.copy_to_worker(1, &esp(3), 2, peer));
        let h = s.inboxes[1].try_recv().unwrap();
        assert_eq!(
            &h.buf.as_ref()[OFFSET..OFFSET + h.datagram.len],
            &esp(3)[..]
        );
        assert_eq!(h.socket, 2);
        assert_eq!(
            h.datagram.sender.as_ref().and_then(netio::socket_addr),
            Some(peer)
        );
        assert_eq!(s.wakes[1].read().unwrap(), 1);
        assert!(s.wakes[0].read().is_err(), "worker 0 sleeps on");
    }
}
