//! Socket plumbing shared by the control thread and the ESP workers: binding the
//! UDP sockets of one port, choosing a datagram's source address (IP_PKTINFO), and
//! address conversions.

use nix::libc;
use nix::sys::socket::{
    AddressFamily, ControlMessage, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike,
    SockaddrStorage, bind, setsockopt, socket, sockopt,
};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

/// Binds a UDP socket to `addr` (IPv6 sockets take only IPv6) with packet-info
/// reception on. `reuse_port` joins the port's SO_REUSEPORT group, which the control
/// thread and the workers share on the NAT-T port. Its packets carry firewall mark
/// `mark`, which routes them around esptun's own routing table (and so the TUN).
pub fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    blocking: bool,
    mark: u32,
) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if !blocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Datagram, flags, None)?;
    setsockopt(&fd, sockopt::Mark, &mark)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    match addr {
        SocketAddr::V4(a) => {
            setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn::from(a))?;
        }
        SocketAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?;
        }
    }
    Ok(fd)
}

/// One IKE datagram for the control thread, as its sockets received it (or a worker,
/// in a GSO or GRO train).
pub struct Received {
    /// The bytes.
    pub data: Vec<u8>,
    /// The sender.
    pub remote: SocketAddr,
    /// The address and port it was sent to.
    pub local: SocketAddr,
}

/// The source address of a datagram sent from a wildcard-bound socket.
pub enum PacketInfo {
    /// IPv4.
    V4(libc::in_pktinfo),
    /// IPv6.
    V6(libc::in6_pktinfo),
}

impl PacketInfo {
    /// Sends from `source`.
    pub fn new(source: IpAddr) -> Self {
        match source {
            IpAddr::V4(a) => Self::V4(libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            }),
            IpAddr::V6(a) => Self::V6(libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                ipi6_ifindex: 0,
            }),
        }
    }

    /// The control message to pass to sendmsg/sendmmsg.
    pub fn cmsg(&self) -> ControlMessage<'_> {
        match self {
            Self::V4(pi) => ControlMessage::Ipv4PacketInfo(pi),
            Self::V6(pi) => ControlMessage::Ipv6PacketInfo(pi),
        }
    }
}

/// The destination address of a received datagram, from its IP_PKTINFO message.
pub fn packet_info_address(c: &nix::sys::socket::ControlMessageOwned) -> Option<IpAddr> {
    use nix::sys::socket::ControlMessageOwned;
    match c {
        ControlMessageOwned::Ipv4PacketInfo(pi) => {
            Some(IpAddr::V4(u32::from_be(pi.ipi_addr.s_addr).into()))
        }
        ControlMessageOwned::Ipv6PacketInfo(pi) => Some(IpAddr::V6(pi.ipi6_addr.s6_addr.into())),
        _ => None,
    }
}

/// A socket address as std sees it; None for families other than IPv4 and IPv6.
pub fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    match a.family()? {
        AddressFamily::Inet => a.as_sockaddr_in().map(|v4| (v4.ip(), v4.port()).into()),
        AddressFamily::Inet6 => a.as_sockaddr_in6().map(|v6| (v6.ip(), v6.port()).into()),
        _ => None,
    }
}
