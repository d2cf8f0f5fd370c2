//! Routes to the remote traffic selectors through the TUN device, set over
//! rtnetlink (RTM_NEWROUTE/RTM_DELROUTE) rather than by running `ip`.

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A route-netlink socket.
pub struct Routes {
    fd: OwnedFd,
    seq: u32,
}

impl Routes {
    /// Opens the socket.
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        Ok(Self { fd, seq: 0 })
    }

    /// Routes `prefix/len` through interface `oif`, replacing any route to it.
    pub fn add(&mut self, prefix: IpAddr, len: u8, oif: u32) -> io::Result<()> {
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, prefix, len, oif)
    }

    /// Removes the route to `prefix/len` through `oif`.
    pub fn delete(&mut self, prefix: IpAddr, len: u8, oif: u32) -> io::Result<()> {
        self.request(RTM_DELROUTE, 0, prefix, len, oif)
    }

    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        prefix: IpAddr,
        len: u8,
        oif: u32,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let (family, addr) = match prefix {
            IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
            IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
        };
        let mut msg = Vec::with_capacity(64);
        msg.extend_from_slice(&[0; 4]); // length, filled in below
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        // struct rtmsg
        msg.extend_from_slice(&[
            family,
            len,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            RT_SCOPE_LINK,
            RTN_UNICAST,
        ]);
        msg.extend_from_slice(&0u32.to_ne_bytes());
        attribute(&mut msg, RTA_DST, &addr);
        attribute(&mut msg, RTA_OIF, &oif.to_ne_bytes());
        let total = msg.len() as u32;
        msg[..4].copy_from_slice(&total.to_ne_bytes());
        sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut answer = [0u8; 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut answer, MsgFlags::empty())?;
            let answer = &answer[..n];
            if answer.len() < 20 {
                return Err(io::Error::other("short rtnetlink answer"));
            }
            let kind = u16::from_ne_bytes([answer[4], answer[5]]);
            let seq = u32::from_ne_bytes([answer[8], answer[9], answer[10], answer[11]]);
            if kind != NLMSG_ERROR || seq != self.seq {
                continue;
            }
            let errno = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
            return match errno {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(-e)),
            };
        }
    }
}

/// Appends a route attribute, padded to 4 bytes.
fn attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}
