//! IKE sockets that learn each datagram's destination address (IP_PKTINFO) and
//! choose each reply's source address, so a wildcard-bound gateway still answers
//! from the address the peer used and NAT detection hashes the right one.

use nix::libc;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn,
    SockaddrIn6, SockaddrStorage, bind, recvmsg, sendmsg, setsockopt, socket, sockopt,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Largest datagram we read: IKE messages are far smaller, fragments smaller still.
const MAX_DATAGRAM: usize = 65_535;

/// A bound UDP socket on one address and port.
pub struct IkeSocket {
    socket: UdpSocket,
    /// The address it is bound to (possibly a wildcard).
    pub bound: SocketAddr,
}

/// One datagram as received.
pub struct Received {
    /// The bytes.
    pub data: Vec<u8>,
    /// The sender.
    pub remote: SocketAddr,
    /// The address and port it was sent to.
    pub local: SocketAddr,
}

fn io_error(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl IkeSocket {
    /// Binds `addr` with packet-info reception on (v6 sockets only take v6).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(
            family,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io_error)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io_error)?;
        match addr {
            SocketAddr::V4(a) => {
                setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).map_err(io_error)?;
                bind(fd.as_raw_fd(), &SockaddrIn::from(a)).map_err(io_error)?;
            }
            SocketAddr::V6(a) => {
                setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(io_error)?;
                setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true).map_err(io_error)?;
                bind(fd.as_raw_fd(), &SockaddrIn6::from(a)).map_err(io_error)?;
            }
        }
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        Ok(Self {
            socket,
            bound: addr,
        })
    }

    /// Waits for the next datagram.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            self.socket.readable().await?;
            match self.socket.try_io(Interest::READABLE, || self.recv_now()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn recv_now(&self) -> io::Result<Received> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
        let (len, remote, local_ip) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<SockaddrStorage>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .map_err(io_error)?;
            let mut local_ip = self.bound.ip();
            for c in msg.cmsgs().map_err(io_error)? {
                match c {
                    ControlMessageOwned::Ipv4PacketInfo(pi) => {
                        local_ip = IpAddr::V4(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr)));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(pi) => {
                        local_ip = IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            let remote = msg.address.and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from((v4.ip(), v4.port())))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
                    })
            });
            (msg.bytes, remote, local_ip)
        };
        let remote = remote.ok_or_else(|| io::Error::other("datagram without a source address"))?;
        buf.truncate(len);
        Ok(Received {
            data: buf,
            remote,
            local: SocketAddr::new(local_ip, self.bound.port()),
        })
    }

    /// Sends `data` to `remote` from `source` (when the socket is bound to a wildcard).
    pub fn send(&self, data: &[u8], source: IpAddr, remote: SocketAddr) -> io::Result<()> {
        let iov = [IoSlice::new(data)];
        let fd = self.socket.as_raw_fd();
        let choose_source = self.bound.ip().is_unspecified() && !source.is_unspecified();
        let sent = match (remote, source) {
            (SocketAddr::V4(to), IpAddr::V4(from)) => {
                let pi = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(from).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let cmsg = [ControlMessage::Ipv4PacketInfo(&pi)];
                let cmsg: &[ControlMessage<'_>] = if choose_source { &cmsg } else { &[] };
                sendmsg(
                    fd,
                    &iov,
                    cmsg,
                    MsgFlags::empty(),
                    Some(&SockaddrIn::from(to)),
                )
            }
            (SocketAddr::V6(to), IpAddr::V6(from)) => {
                let pi = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: from.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let cmsg = [ControlMessage::Ipv6PacketInfo(&pi)];
                let cmsg: &[ControlMessage<'_>] = if choose_source { &cmsg } else { &[] };
                sendmsg(
                    fd,
                    &iov,
                    cmsg,
                    MsgFlags::empty(),
                    Some(&SockaddrIn6::from(to)),
                )
            }
            _ => return Err(io::Error::other("source and destination families differ")),
        };
        sent.map(|_| ()).map_err(io_error)
    }
}
