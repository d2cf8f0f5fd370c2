//! IKE sockets that learn each datagram's destination address (IP_PKTINFO) and
//! choose each reply's source address, so a wildcard-bound gateway still answers
//! from the address the peer used and NAT detection hashes the right one.

use crate::netio::{self, PacketInfo, Received};
use nix::libc;
use nix::sys::socket::{MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt, sockopt};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Largest datagram we read: IKE messages are far smaller, fragments smaller still.
pub const MAX_DATAGRAM: usize = 65_535;

/// Room for a burst: when a flood outpaces the control thread for a moment (a burst,
/// the thread off the CPU), the default 208 KB fill and legitimate requests are
/// dropped with the flood, each costing its peer a retransmission timeout (4 s by
/// default). 4 MB hold some 4000 datagrams, a fifth of a second at 20 000/s.
const RECEIVE_BUFFER: usize = 4 << 20;

/// A bound UDP socket on one address and port.
pub struct IkeSocket {
    socket: UdpSocket,
    /// The address it is bound to (possibly a wildcard).
    pub bound: SocketAddr,
}

impl IkeSocket {
    /// Binds `addr`; `reuse_port` for the NAT-T port, whose ESP the workers take;
    /// `mark` keeps its packets out of the TUN.
    pub fn bind(addr: SocketAddr, reuse_port: bool, mark: u32) -> io::Result<Self> {
        let fd = netio::bind_udp(addr, reuse_port, false, mark)?;
        // SO_RCVBUFFORCE goes past net.core.rmem_max with CAP_NET_ADMIN, which esptun
        // has for its TUN; without it, as much as rmem_max allows.
        if setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER)?;
        }
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        Ok(Self {
            socket,
            bound: addr,
        })
    }

    /// Hands ESP to the kernel (`dataplane.mode = "xfrm"`): see
    /// [`prepare_ike_socket`](crate::sink::xfrm::prepare_ike_socket).
    pub fn prepare_for_kernel_esp(&self, natt: bool) -> io::Result<()> {
        crate::sink::xfrm::prepare_ike_socket(&self.socket, self.bound.is_ipv4(), natt)
    }

    /// Waits for the next datagram, read into `buf` (of [`MAX_DATAGRAM`] bytes, the
    /// caller's to reuse: a fresh one per datagram cost a 64 KB allocation and
    /// memset each, and under a flood those stood 1024 deep in the channel).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            self.socket.readable().await?;
            match self
                .socket
                .try_io(Interest::READABLE, || self.recv_now(buf))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn recv_now(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
        let (len, remote, local_ip) = {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = recvmsg::<SockaddrStorage>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )?;
            let local_ip = msg
                .cmsgs()?
                .find_map(|c| netio::packet_info_address(&c))
                .unwrap_or(self.bound.ip());
            let remote = msg.address.as_ref().and_then(netio::socket_addr);
            (msg.bytes, remote, local_ip)
        };
        let remote = remote.ok_or_else(|| io::Error::other("datagram without a source address"))?;
        Ok(Received {
            data: buf[..len].to_vec(),
            remote,
            local: SocketAddr::new(local_ip, self.bound.port()),
        })
    }

    /// Sends `data` to `remote` from `source` (when the socket is bound to a wildcard).
    pub fn send(&self, data: &[u8], source: IpAddr, remote: SocketAddr) -> io::Result<()> {
        let iov = [IoSlice::new(data)];
        let fd = self.socket.as_raw_fd();
        if source.is_ipv4() != remote.is_ipv4() {
            return Err(io::Error::other("source and destination families differ"));
        }
        let info = PacketInfo::new(source);
        let cmsg = [info.cmsg()];
        // A socket bound to one address sends from it; a wildcard one is told which.
        let cmsg = if self.bound.ip().is_unspecified() && !source.is_unspecified() {
            &cmsg[..]
        } else {
            &[]
        };
        let to = SockaddrStorage::from(remote);
        sendmsg(fd, &iov, cmsg, MsgFlags::empty(), Some(&to))?;
        Ok(())
    }
}
