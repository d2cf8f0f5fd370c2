//! A netlink socket and the message codec shared by esptun's routing (rtnetlink,
//! [`crate::dataplane`]) and its kernel SAs (XFRM, [`crate::sink::xfrm`]). Hand
//! written rather than a netlink crate's: esptun needs a dozen fixed-layout
//! messages, and the XFRM crate available pins an older netlink core and is almost
//! undocumented.

use nix::libc;
use nix::sys::socket::{MsgFlags, NetlinkAddr, bind, recv, sendto};
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use zeroize::{Zeroize, Zeroizing};

/// An error or acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// The end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// Every request carries it.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Asks for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Asks for every object of the kind.
pub const NLM_F_DUMP: u16 = 0x300;
/// Fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// The header every message starts with.
pub const NLMSG_HDRLEN: usize = 16;
/// Room for any answer: the kernel splits dumps into datagrams of at most a page or
/// two, and a datagram read into less is cut short.
pub const ANSWER: usize = 65536;

/// A netlink socket for requests, or one subscribed to multicast groups.
pub struct Netlink {
    fd: OwnedFd,
    /// Requests are numbered so that their answers are told from multicast
    /// messages and from late answers to earlier ones; a `Cell` so that reading
    /// counters needs no `&mut`.
    seq: Cell<u32>,
}

impl Netlink {
    /// A socket of `protocol` (NETLINK_ROUTE, NETLINK_XFRM) for requests. socket2
    /// rather than nix: nix cannot name NETLINK_XFRM.
    pub fn open(protocol: i32) -> io::Result<Self> {
        let socket = socket2::Socket::new(
            socket2::Domain::from(libc::AF_NETLINK),
            socket2::Type::RAW.cloexec(),
            Some(socket2::Protocol::from(protocol)),
        )?;
        Ok(Self {
            fd: OwnedFd::from(socket),
            seq: Cell::new(0),
        })
    }

    /// A socket of `protocol` that receives the multicast `groups` (a bit per group,
    /// group N being bit N-1).
    pub fn subscribe(protocol: i32, groups: u32) -> io::Result<Self> {
        let netlink = Self::open(protocol)?;
        bind(netlink.fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(netlink)
    }

    /// Waits for the next datagram, read into `buf` (of [`ANSWER`] bytes, reused by
    /// the caller), and hands each message in it to `each` as (type, body).
    pub fn receive(&self, buf: &mut [u8], mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let n = recv(self.fd.as_raw_fd(), buf, MsgFlags::empty())?;
        for (kind, _, body) in messages(&buf[..n]) {
            each(kind, body);
        }
        Ok(())
    }

    fn send(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<u32> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut msg = message(kind, flags, seq, body);
        let sent = sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        );
        // An XFRM state's message carries its keys.
        msg.zeroize();
        sent?;
        Ok(seq)
    }

    /// Sends one request and waits for its acknowledgement.
    pub fn request(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body)?;
        self.answers(seq, |kind, body| match kind {
            NLMSG_ERROR => Some(errno(body)),
            _ => None,
        })
    }

    /// Sends a request the kernel answers with one message (a GET of one object)
    /// and returns that message's body, zeroed when dropped (an XFRM state's holds
    /// its keys).
    pub fn query(&self, kind: u16, body: &[u8]) -> io::Result<Zeroizing<Vec<u8>>> {
        let seq = self.send(kind, NLM_F_REQUEST, body)?;
        self.answers(seq, |kind, body| match kind {
            NLMSG_ERROR => Some(errno(body).and_then(|()| Err(io::Error::other("no answer")))),
            _ => Some(Ok(Zeroizing::new(body.to_vec()))),
        })
    }

    /// Sends a dump request and hands each answer's body to `each`.
    pub fn dump(&self, kind: u16, body: &[u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_DUMP, body)?;
        self.answers(seq, |kind, body| match kind {
            NLMSG_DONE => Some(Ok(())),
            NLMSG_ERROR => Some(errno(body)),
            _ => {
                each(body);
                None
            }
        })
    }

    /// Reads the answers to request `seq` until `done` returns a result. The buffer
    /// is zeroed when dropped: XFRM dumps and errors (which echo the request) carry
    /// keys.
    fn answers<T>(
        &self,
        seq: u32,
        mut done: impl FnMut(u16, &[u8]) -> Option<io::Result<T>>,
    ) -> io::Result<T> {
        let mut answer = Zeroizing::new(vec![0u8; ANSWER]);
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut answer, MsgFlags::empty())?;
            for (kind, got, body) in messages(&answer[..n]) {
                if got != seq {
                    continue;
                }
                if let Some(result) = done(kind, body) {
                    return result;
                }
            }
        }
    }
}

/// One netlink message: header (length, type, flags, sequence, port 0), then `body`.
pub fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    let total = (NLMSG_HDRLEN + body.len()) as u32;
    msg.extend_from_slice(&total.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    msg
}

/// The messages in one datagram: (type, sequence, body).
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
        let body = &buf[NLMSG_HDRLEN..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, seq, body))
    })
}

/// The result an NLMSG_ERROR body carries (errno 0 is an acknowledgement).
pub fn errno(body: &[u8]) -> io::Result<()> {
    let code = body
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| io::Error::other("short netlink error"))?;
    match code {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

/// Appends an attribute, padded to 4 bytes.
pub fn attribute(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// The attributes that follow a fixed header of `header` bytes: (type, value).
pub fn attributes(body: &[u8], header: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body.get(header..).unwrap_or_default();
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        if len < 4 || len > rest.len() {
            return None;
        }
        // The top bits flag nested and byte-order attributes.
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = &rest[4..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_a_datagram_and_skip_a_torn_tail() {
        let mut datagram = message(NLMSG_ERROR, 0, 7, &[0; 4]);
        datagram.extend(message(NLMSG_DONE, 0, 8, &[1, 2]));
        datagram.extend([0, 0]); // padding of the second
        datagram.extend(&message(NLMSG_DONE, 0, 9, &[])[..10]);
        let got: Vec<(u16, u32, Vec<u8>)> = messages(&datagram)
            .map(|(k, s, b)| (k, s, b.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![(NLMSG_ERROR, 7, vec![0; 4]), (NLMSG_DONE, 8, vec![1, 2])]
        );
        assert!(errno(&0i32.to_ne_bytes()).is_ok());
        assert_eq!(
            errno(&(-17i32).to_ne_bytes()).unwrap_err().raw_os_error(),
            Some(17)
        );
    }

    #[test]
    fn attributes_round_trip_with_padding_and_stop_at_a_bad_length() {
        let mut body = vec![9u8; 4];
        attribute(&mut body, 1, &[1, 2, 3]);
        attribute(&mut body, 0x8002, &[4; 8]);
        let got: Vec<(u16, Vec<u8>)> = attributes(&body, 4).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(got, vec![(1, vec![1, 2, 3]), (2, vec![4; 8])]);
        body.extend([200, 0, 3, 0]);
        assert_eq!(attributes(&body, 4).count(), 2);
    }
}
