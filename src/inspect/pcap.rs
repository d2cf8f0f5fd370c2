//! Reading the UDP datagrams out of a pcap or pcapng capture.
//!
//! A capture is hostile input: every length is checked against the bytes present, no
//! buffer is sized from a length field before its bytes are there, and a file that is
//! not a capture or is cut short is a one-line [`CaptureError`]. Frames that are not UDP
//! over IP, or are malformed, or were cut short by the snap length, are not errors: a
//! capture holds all sorts of traffic, so they are skipped.

use etherparse::{EtherType, IpNumber, Ipv6ExtensionSlice, NetSlice, SlicedPacket};
use etherparse::{TransportSlice, UdpSlice};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// 1-based number of the frame that carried it (its last fragment, if fragmented).
    pub frame: usize,
    /// When it was captured, in nanoseconds since the Unix epoch (0 in a Simple Packet Block).
    pub timestamp_ns: u64,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Why a capture could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// The file is too short to hold any capture's magic number.
    #[error("not a pcap or pcapng file (only {len} bytes long)")]
    TooShort {
        /// The file's length in bytes.
        len: usize,
    },
    /// The file starts with neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (starts with {magic:#010x})")]
    NotACapture {
        /// The first four bytes, in file order.
        magic: u32,
    },
    /// The file ends inside its pcap file header or first pcapng section header.
    #[error("truncated capture: the {len}-byte file ends inside its header")]
    TruncatedHeader {
        /// The file's length in bytes.
        len: usize,
    },
    /// The file ends inside a record or block.
    #[error("truncated capture: frame {frame} at byte {offset} is cut short")]
    Truncated {
        /// 1-based number of the frame being read when the bytes ran out.
        frame: usize,
        /// Where its record or block starts in the file.
        offset: usize,
    },
    /// Frames on a link layer this reader does not decode, and no datagram found elsewhere.
    #[error("unsupported link type {0} (Ethernet, NULL/LOOP, raw IP and Linux SLL/SLL2 are read)")]
    UnsupportedLinkType(u32),
    /// A pcapng block is malformed.
    #[error("bad pcapng block at byte {offset}: {what}")]
    BadBlock {
        /// Where the block starts in the file.
        offset: usize,
        /// What is wrong with it.
        what: &'static str,
    },
}

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const OPT_ENDOFOPT: u16 = 0;
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;
/// ARPHRD types whose SLL protocol field is not an EtherType: FRAD, 802.11 radiotap, netlink.
const ARPHRD_NOT_ETHERTYPE: [u16; 3] = [770, 803, 824];
/// AF_INET, and AF_INET6 as Linux, the BSDs and Darwin number it.
const NULL_IP_FAMILIES: [u32; 5] = [2, 10, 24, 28, 30];
/// The largest IP payload a fragment offset and length can describe.
const MAX_REASSEMBLED: usize = 65_535;
/// Real datagrams need at most ~120 fragments; more is an attack on the reassembly cost.
const MAX_FRAGMENTS: usize = 256;
/// Linux forgets fragments after 30 s; this keeps a reused IP ID from joining stale ones.
const FRAGMENT_TIMEOUT_NS: u64 = 60_000_000_000;

/// Reads every UDP datagram from a pcap or pcapng capture, in file order.
pub fn udp_datagrams(capture: &[u8]) -> Result<Vec<UdpDatagram>, CaptureError> {
    let magic: [u8; 4] = array(capture, 0).ok_or(CaptureError::TooShort { len: capture.len() })?;
    let mut out = Extractor::default();
    match u32::from_le_bytes(magic) {
        PCAPNG_SHB => out.pcapng(capture)?,
        PCAP_MAGIC_US => out.pcap(capture, Order(false), 6)?,
        PCAP_MAGIC_NS => out.pcap(capture, Order(false), 9)?,
        m if m.swap_bytes() == PCAP_MAGIC_US => out.pcap(capture, Order(true), 6)?,
        m if m.swap_bytes() == PCAP_MAGIC_NS => out.pcap(capture, Order(true), 9)?,
        _ => {
            return Err(CaptureError::NotACapture {
                magic: u32::from_be_bytes(magic),
            });
        }
    }
    match out.unsupported {
        Some(link_type) if out.datagrams.is_empty() => {
            Err(CaptureError::UnsupportedLinkType(link_type))
        }
        _ => Ok(out.datagrams),
    }
}

/// The byte order a capture's header fields were written in: big-endian if true.
#[derive(Clone, Copy)]
struct Order(bool);

impl Order {
    fn u16(self, bytes: &[u8], at: usize) -> Option<u16> {
        let v = u16::from_le_bytes(array(bytes, at)?);
        Some(if self.0 { v.swap_bytes() } else { v })
    }

    fn u32(self, bytes: &[u8], at: usize) -> Option<u32> {
        let v = u32::from_le_bytes(array(bytes, at)?);
        Some(if self.0 { v.swap_bytes() } else { v })
    }

    fn u64(self, bytes: &[u8], at: usize) -> Option<u64> {
        let v = u64::from_le_bytes(array(bytes, at)?);
        Some(if self.0 { v.swap_bytes() } else { v })
    }
}

/// `N` bytes at `at`, if the slice holds them (no arithmetic that could overflow).
fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..)?.get(..N)?.try_into().ok()
}

/// Seconds per timestamp tick: 10^-n or 2^-n.
#[derive(Clone, Copy)]
enum Resolution {
    Decimal(u8),
    Binary(u8),
}

/// Nanoseconds since the epoch, saturating rather than wrapping on absurd values.
fn nanos(ticks: u64, resolution: Resolution, offset_s: i64) -> u64 {
    let ticks = u128::from(ticks);
    let ns = match resolution {
        Resolution::Decimal(n) if n <= 9 => ticks * 10u128.pow(9 - u32::from(n)),
        Resolution::Decimal(n) => 10u128
            .checked_pow(u32::from(n - 9))
            .map_or(0, |divisor| ticks / divisor),
        Resolution::Binary(n) => (ticks * 1_000_000_000) >> n.min(127),
    };
    let ns = i128::try_from(ns).unwrap_or(i128::MAX) + i128::from(offset_s) * 1_000_000_000;
    u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
}

/// The link layers this reader finds IP in.
#[derive(Clone, Copy)]
enum Link {
    Ethernet,
    Null,
    Ip,
    Sll,
    Sll2,
}

fn link(link_type: u32) -> Option<Link> {
    match link_type {
        1 => Some(Link::Ethernet),
        0 | 108 => Some(Link::Null),
        101 | 228 | 229 => Some(Link::Ip),
        113 => Some(Link::Sll),
        276 => Some(Link::Sll2),
        _ => None,
    }
}

/// A pcapng interface, as its Interface Description Block describes it.
#[derive(Clone, Copy)]
struct Interface {
    link_type: u32,
    snaplen: u32,
    resolution: Resolution,
    offset_s: i64,
}

fn interface(body: &[u8], order: Order) -> Result<Interface, &'static str> {
    let short = "interface description shorter than its fields";
    let mut iface = Interface {
        link_type: u32::from(order.u16(body, 0).ok_or(short)?),
        snaplen: order.u32(body, 4).ok_or(short)?,
        resolution: Resolution::Decimal(6),
        offset_s: 0,
    };
    let mut at = 8;
    while let Some(code) = order.u16(body, at) {
        let len = usize::from(order.u16(body, at + 2).ok_or(short)?);
        let value = body.get(at + 4..).and_then(|v| v.get(..len));
        match (code, value.ok_or("option runs past the end of its block")?) {
            (OPT_ENDOFOPT, _) => break,
            (IF_TSRESOL, &[r]) if r & 0x80 == 0 => iface.resolution = Resolution::Decimal(r),
            (IF_TSRESOL, &[r]) => iface.resolution = Resolution::Binary(r & 0x7f),
            (IF_TSOFFSET, v) => {
                // A signed count of seconds, in two's complement.
                iface.offset_s = order.u64(v, 0).ok_or("if_tsoffset is not 8 bytes")? as i64;
            }
            _ => {}
        }
        at += 4 + len.next_multiple_of(4);
    }
    Ok(iface)
}

/// Etherparse slices from the link layer down; `None` when the frame holds no usable IP.
fn slice(link: Link, data: &[u8]) -> Option<SlicedPacket<'_>> {
    match link {
        Link::Ethernet => SlicedPacket::from_ethernet(data).ok(),
        Link::Ip => SlicedPacket::from_ip(data).ok(),
        Link::Null => {
            // The family is in the capturing host's byte order, which the file does not say.
            let family: [u8; 4] = array(data, 0)?;
            let families = [u32::from_le_bytes(family), u32::from_be_bytes(family)];
            if !families.iter().any(|f| NULL_IP_FAMILIES.contains(f)) {
                return None;
            }
            SlicedPacket::from_ip(data.get(4..)?).ok()
        }
        // etherparse's own SLL parser refuses ARPHRD_LOOPBACK and ARPHRD_NONE (tun, VTI),
        // which is where `tcpdump -i any` sees a local IKE daemon's traffic.
        Link::Sll => cooked(data, 2, 14, 16),
        Link::Sll2 => cooked(data, 8, 0, 20),
    }
}

fn cooked(data: &[u8], arphrd: usize, protocol: usize, len: usize) -> Option<SlicedPacket<'_>> {
    if ARPHRD_NOT_ETHERTYPE.contains(&u16::from_be_bytes(array(data, arphrd)?)) {
        return None;
    }
    let protocol = EtherType(u16::from_be_bytes(array(data, protocol)?));
    SlicedPacket::from_ether_type(protocol, data.get(len..)?).ok()
}

/// One piece of a fragmented UDP datagram.
struct Fragment<'a> {
    id: u32,
    offset: usize,
    more: bool,
    data: &'a [u8],
}

/// A fragmented datagram is named by its addresses and IP ID (the protocol is always UDP).
type FragmentKey = (IpAddr, IpAddr, u32);

/// The pieces of one datagram so far, borrowed from the capture and sorted by offset.
struct Pending<'a> {
    first_ns: u64,
    end: Option<usize>,
    pieces: Vec<(usize, &'a [u8])>,
}

/// The datagrams found so far, and the fragments still waiting for the rest.
#[derive(Default)]
struct Extractor<'a> {
    frames: usize,
    datagrams: Vec<UdpDatagram>,
    pending: HashMap<FragmentKey, Pending<'a>>,
    /// The first link type seen on a frame that could not be decoded.
    unsupported: Option<u32>,
}

impl<'a> Extractor<'a> {
    fn pcap(&mut self, capture: &'a [u8], order: Order, decimals: u8) -> Result<(), CaptureError> {
        let len = capture.len();
        // The top four bits may carry an FCS length (pcap-linktype(7)); IP lengths skip the FCS.
        let link_type = order
            .u32(capture, 20)
            .ok_or(CaptureError::TruncatedHeader { len })?;
        let link_type = link_type & 0x0fff_ffff;
        let link = link(link_type).ok_or(CaptureError::UnsupportedLinkType(link_type))?;
        let units = 10u64.pow(u32::from(decimals));
        let mut at = 24;
        while let Some(rest) = capture.get(at..).filter(|r| !r.is_empty()) {
            let cut = self.truncated(at);
            let word = |i: usize| order.u32(rest, 4 * i).ok_or(cut);
            let (seconds, fraction, captured) = (word(0)?, word(1)?, word(2)?);
            word(3)?; // the original length, unused but part of the record header
            // The snap length is not enforced: writers get it wrong, and the bytes are there.
            let data = rest.get(16..).and_then(|r| r.get(..captured as usize));
            let data = data.ok_or(cut)?;
            let ticks = u64::from(seconds) * units + u64::from(fraction);
            self.frame(link, nanos(ticks, Resolution::Decimal(decimals), 0), data);
            at += 16 + data.len();
        }
        Ok(())
    }

    fn pcapng(&mut self, capture: &'a [u8]) -> Result<(), CaptureError> {
        let mut order = Order(false);
        let mut interfaces: Vec<Interface> = Vec::new();
        let mut at = 0;
        while let Some(rest) = capture.get(at..).filter(|r| !r.is_empty()) {
            let cut = match at {
                0 => CaptureError::TruncatedHeader { len: capture.len() },
                _ => self.truncated(at),
            };
            let bad = |what| CaptureError::BadBlock { offset: at, what };
            // The section header's type reads the same in both orders; its magic says which.
            if Order(false).u32(rest, 0).ok_or(cut)? == PCAPNG_SHB {
                order = match Order(false).u32(rest, 8).ok_or(cut)? {
                    PCAPNG_BYTE_ORDER_MAGIC => Order(false),
                    m if m.swap_bytes() == PCAPNG_BYTE_ORDER_MAGIC => Order(true),
                    _ => return Err(bad("section header without a byte-order magic")),
                };
                interfaces.clear();
            }
            let (Some(block_type), Some(total)) = (order.u32(rest, 0), order.u32(rest, 4)) else {
                return Err(cut);
            };
            if total < 12 || !total.is_multiple_of(4) {
                return Err(bad("length is not a multiple of 4 of at least 12"));
            }
            let block = rest.get(..total as usize).ok_or(cut)?;
            let body = block.get(8..block.len() - 4).unwrap_or_default();
            if order.u32(block, block.len() - 4) != Some(total) {
                return Err(bad("trailing length differs from the leading one"));
            }
            let lost = bad("packet on an interface its section does not describe");
            match block_type {
                PCAPNG_SHB if order.u16(body, 4) != Some(1) || body.len() < 16 => {
                    return Err(bad("section header is not pcapng version 1"));
                }
                PCAPNG_IDB => interfaces.push(interface(body, order).map_err(bad)?),
                PCAPNG_EPB | PCAPNG_OPB => {
                    let short = bad("packet block too short");
                    let word = |i: usize| order.u32(body, 4 * i).ok_or(short);
                    let index = match block_type {
                        PCAPNG_EPB => word(0)?,
                        _ => order.u16(body, 0).ok_or(short)?.into(),
                    };
                    let (high, low, captured) = (word(1)?, word(2)?, word(3)?);
                    let data = body.get(20..).and_then(|d| d.get(..captured as usize));
                    let data = data.ok_or(bad("captured length runs past the block"))?;
                    let iface = *interfaces.get(index as usize).ok_or(lost)?;
                    let ticks = u64::from(high) << 32 | u64::from(low);
                    self.frame_on(iface, nanos(ticks, iface.resolution, iface.offset_s), data);
                }
                PCAPNG_SPB => {
                    let iface = *interfaces.first().ok_or(lost)?;
                    let original = order.u32(body, 0).ok_or(bad("packet block too short"))?;
                    // No captured length here: the snap length and the padding bound it.
                    let snaplen = Some(iface.snaplen).filter(|&s| s != 0).unwrap_or(u32::MAX);
                    let len = original.min(snaplen) as usize;
                    let data = body.get(4..).unwrap_or_default();
                    self.frame_on(iface, 0, data.get(..len).unwrap_or(data));
                }
                // Statistics, name resolution, decryption secrets, custom blocks: no datagrams.
                _ => {}
            }
            at += block.len();
        }
        Ok(())
    }

    fn truncated(&self, offset: usize) -> CaptureError {
        let frame = self.frames + 1;
        CaptureError::Truncated { frame, offset }
    }

    fn frame_on(&mut self, iface: Interface, timestamp_ns: u64, data: &'a [u8]) {
        match link(iface.link_type) {
            Some(link) => self.frame(link, timestamp_ns, data),
            None => {
                self.frames += 1;
                self.unsupported.get_or_insert(iface.link_type);
            }
        }
    }

    fn frame(&mut self, link: Link, timestamp_ns: u64, data: &'a [u8]) {
        self.frames += 1;
        // Not IP, malformed, or cut short by the snap length: nothing to show.
        let Some(packet) = slice(link, data) else {
            return;
        };
        let (src, dst, frag) = match &packet.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                let frag =
                    (h.is_fragmenting_payload() && h.protocol() == IpNumber::UDP).then(|| {
                        Fragment {
                            id: u32::from(h.identification()),
                            offset: usize::from(h.fragments_offset().byte_offset()),
                            more: h.more_fragments(),
                            data: ip.payload().payload,
                        }
                    });
                (h.source_addr().into(), h.destination_addr().into(), frag)
            }
            Some(NetSlice::Ipv6(ip)) => {
                let frag = ip
                    .extensions()
                    .clone()
                    .into_iter()
                    .find_map(|ext| match ext {
                        Ipv6ExtensionSlice::Fragment(f)
                            if f.is_fragmenting_payload() && f.next_header() == IpNumber::UDP =>
                        {
                            Some(Fragment {
                                id: f.identification(),
                                offset: usize::from(f.fragment_offset().byte_offset()),
                                more: f.more_fragments(),
                                data: ip.payload().payload,
                            })
                        }
                        _ => None,
                    });
                let h = ip.header();
                (h.source_addr().into(), h.destination_addr().into(), frag)
            }
            _ => return,
        };
        let (ports, payload) = match (frag, &packet.transport) {
            (None, Some(TransportSlice::Udp(udp))) => (
                (udp.source_port(), udp.destination_port()),
                udp.payload().to_vec(),
            ),
            (Some(f), _) => {
                let Some(mut whole) = self.reassemble((src, dst, f.id), f, timestamp_ns) else {
                    return;
                };
                let Ok(udp) = UdpSlice::from_slice(&whole) else {
                    return;
                };
                let (ports, len) = (
                    (udp.source_port(), udp.destination_port()),
                    udp.payload().len(),
                );
                whole.drain(..udp.header_len());
                whole.truncate(len);
                (ports, whole)
            }
            _ => return,
        };
        self.datagrams.push(UdpDatagram {
            frame: self.frames,
            timestamp_ns,
            src: SocketAddr::new(src, ports.0),
            dst: SocketAddr::new(dst, ports.1),
            payload,
        });
    }

    /// Adds a fragment; returns the IP payload once every byte of it has arrived.
    fn reassemble(&mut self, key: FragmentKey, f: Fragment<'a>, now_ns: u64) -> Option<Vec<u8>> {
        let end = f.offset + f.data.len();
        // All but the last fragment carry a multiple of 8 bytes (RFC 791, RFC 8200 §4.5).
        let aligned = !f.more || f.data.len().is_multiple_of(8);
        if f.data.is_empty() || end > MAX_REASSEMBLED || !aligned {
            return None;
        }
        let fresh = || Pending {
            first_ns: now_ns,
            end: None,
            pieces: Vec::new(),
        };
        let p = self.pending.entry(key).or_insert_with(fresh);
        if now_ns.saturating_sub(p.first_ns) > FRAGMENT_TIMEOUT_NS
            || p.pieces.len() >= MAX_FRAGMENTS
        {
            *p = fresh();
        }
        match (p.end, f.more) {
            // Past the known end, or a second, different end: a broken or hostile sender.
            (Some(known), _) if end > known => return None,
            (Some(known), false) if end != known => return None,
            (None, false) if p.pieces.iter().any(|(o, d)| o + d.len() > end) => return None,
            (None, false) => p.end = Some(end),
            _ => {}
        }
        let at = p.pieces.partition_point(|(o, _)| *o <= f.offset);
        p.pieces.insert(at, (f.offset, f.data));
        let total = p.end?;
        let mut covered = 0;
        for (offset, data) in &p.pieces {
            if *offset > covered {
                return None;
            }
            covered = covered.max(offset + data.len());
        }
        if covered < total {
            return None;
        }
        // The union of the pieces is exactly 0..total, so this copies no more than they hold.
        let mut whole = vec![0; total];
        for (offset, data) in self.pending.remove(&key)?.pieces {
            if let Some(slot) = whole.get_mut(offset..offset + data.len()) {
                slot.copy_from_slice(data);
            }
        }
        Some(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ethernet2Header, PacketBuilderStep, UdpHeader, VlanId};
    use etherparse::{IpFragOffset, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, PacketBuilder};

    const VECTOR: &[u8] = include_bytes!("../../tests/vectors/gcm/capture.pcap");
    const A4: [u8; 4] = [192, 0, 2, 1];
    const B4: [u8; 4] = [192, 0, 2, 2];
    const A6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn build(step: PacketBuilderStep<UdpHeader>, payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        step.write(&mut frame, payload).unwrap();
        frame
    }

    fn eth() -> PacketBuilderStep<Ethernet2Header> {
        PacketBuilder::ethernet2([1; 6], [2; 6])
    }

    /// Ethernet/IPv4/UDP 500 -> 4500.
    fn eth4(payload: &[u8]) -> Vec<u8> {
        let ip = eth().ipv4(A4, B4, 64);
        build(ip.udp(500, 4500), payload)
    }

    /// Ethernet/IPv6/UDP 4500 -> 4500.
    fn eth6(payload: &[u8]) -> Vec<u8> {
        let ip = eth().ipv6(A6, B6, 64);
        build(ip.udp(4500, 4500), payload)
    }

    fn words(be: bool, words: &[u32]) -> Vec<u8> {
        let bytes = |w: &u32| if be { w.to_be_bytes() } else { w.to_le_bytes() };
        words.iter().flat_map(bytes).collect()
    }

    /// Two consecutive u16 fields as one u32 word in the file's byte order.
    fn pair(be: bool, first: u16, second: u16) -> u32 {
        let (high, low) = if be { (first, second) } else { (second, first) };
        u32::from(high) << 16 | u32::from(low)
    }

    /// A classic pcap (version 2.4); frame `i` is at 1_700_000_000 + i seconds and 250 units.
    fn pcap(be: bool, magic: u32, link_type: u32, frames: &[&[u8]]) -> Vec<u8> {
        let mut out = words(be, &[magic, pair(be, 2, 4), 0, 0, 65535, link_type]);
        for (i, f) in frames.iter().enumerate() {
            let len = f.len() as u32;
            out.extend(words(be, &[1_700_000_000 + i as u32, 250, len, len]));
            out.extend_from_slice(f);
        }
        out
    }

    fn block(be: bool, block_type: u32, body: &[u8]) -> Vec<u8> {
        let total = 12 + body.len().next_multiple_of(4);
        let mut out = words(be, &[block_type, total as u32]);
        out.extend_from_slice(body);
        out.resize(total - 4, 0);
        out.extend(words(be, &[total as u32]));
        out
    }

    fn shb(be: bool) -> Vec<u8> {
        let body = [PCAPNG_BYTE_ORDER_MAGIC, pair(be, 1, 0), u32::MAX, u32::MAX];
        block(be, PCAPNG_SHB, &words(be, &body))
    }

    fn idb(be: bool, link_type: u16, options: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = words(be, &[pair(be, link_type, 0), 0]);
        for (code, value) in options {
            body.extend(words(be, &[pair(be, *code, value.len() as u16)]));
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        block(be, PCAPNG_IDB, &body)
    }

    fn epb(be: bool, interface: u32, ticks: u64, data: &[u8]) -> Vec<u8> {
        let len = data.len() as u32;
        let mut body = words(
            be,
            &[interface, (ticks >> 32) as u32, ticks as u32, len, len],
        );
        body.extend_from_slice(data);
        block(be, PCAPNG_EPB, &body)
    }

    /// A little-endian then a big-endian section; five UDP frames, one per packet block.
    fn sample_pcapng() -> Vec<u8> {
        let nano_plus_100s: [(u16, &[u8]); 2] =
            [(IF_TSRESOL, &[9]), (IF_TSOFFSET, &100i64.to_le_bytes())];
        let le = [
            shb(false),
            idb(false, 1, &[]),
            idb(false, 101, &nano_plus_100s),
            block(false, 0x0000_0bad, b"custom block"),
            epb(false, 0, 1_500_000, &eth4(b"one")),
            epb(false, 1, 123, &eth6(b"two")[14..]),
        ];
        // Darwin's AF_INET6, from a big-endian host.
        let null = [&30u32.to_be_bytes()[..], &eth6(b"four")[14..]].concat();
        let five = eth4(b"five");
        let mut spb = words(true, &[five.len() as u32]);
        spb.extend(five);
        let be = [
            shb(true),
            idb(true, 1, &[(IF_TSRESOL, &[0x80 | 10])]),
            idb(true, 108, &[]),
            epb(true, 0, 3 << 10, &eth4(b"three")),
            epb(true, 1, 5, &null),
            block(true, PCAPNG_SPB, &spb),
        ];
        [le.concat(), be.concat()].concat()
    }

    /// `payload` over IPv4 (Ethernet) or IPv6 (raw IP), split into `size`-byte fragments.
    fn fragments(v6: bool, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
        let whole = if v6 { eth6(payload) } else { eth4(payload) };
        let udp = &whole[if v6 { 54 } else { 34 }..];
        let frame = |(i, chunk): (usize, &[u8])| {
            let more = (i + 1) * size < udp.len();
            let offset = IpFragOffset::try_new((i * size / 8) as u16).unwrap();
            let mut f = Vec::new();
            if v6 {
                let h = Ipv6Header {
                    payload_length: (8 + chunk.len()) as u16,
                    next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
                    source: A6,
                    destination: B6,
                    ..Default::default()
                };
                h.write(&mut f).unwrap();
                let frag = Ipv6FragmentHeader::new(IpNumber::UDP, offset, more, 0xdead_beef);
                frag.write(&mut f).unwrap();
            } else {
                let mut h = Ipv4Header::new(chunk.len() as u16, 64, IpNumber::UDP, A4, B4).unwrap();
                (h.identification, h.more_fragments, h.fragment_offset) = (77, more, offset);
                h.header_checksum = h.calc_header_checksum();
                f.extend_from_slice(&whole[..14]);
                h.write(&mut f).unwrap();
            }
            [f, chunk.to_vec()].concat()
        };
        udp.chunks(size).enumerate().map(frame).collect()
    }

    fn payloads(d: &[UdpDatagram]) -> Vec<&[u8]> {
        d.iter().map(|d| d.payload.as_slice()).collect()
    }

    #[test]
    fn reads_the_gcm_vector() {
        let d = udp_datagrams(VECTOR).unwrap();
        assert_eq!(d.len(), 38);
        assert!(d.iter().enumerate().all(|(i, d)| d.frame == i + 1));
        assert_eq!(d[0].src, "192.0.2.1:500".parse().unwrap());
        assert_eq!(d[0].dst, "192.0.2.2:500".parse().unwrap());
        // 274 bytes on the wire: Ethernet 14, IPv4 20, UDP 8.
        assert_eq!(d[0].payload.len(), 274 - 42);
        assert_eq!(d[0].timestamp_ns, 1_795_344_601_481_137_000);
        assert_eq!(d[37].payload.len(), 103 - 42);
        let hosts = ["192.0.2.1", "192.0.2.2"].map(|h| h.parse::<IpAddr>().unwrap());
        assert!(
            d.iter()
                .all(|d| hosts.contains(&d.src.ip()) && hosts.contains(&d.dst.ip()))
        );
        assert!(d.iter().all(|d| [500, 4500].contains(&d.dst.port())));
    }

    #[test]
    fn classic_pcap_in_both_byte_orders_and_resolutions() {
        let frame = eth4(b"hello");
        for be in [false, true] {
            for (magic, ns) in [(PCAP_MAGIC_US, 250_000), (PCAP_MAGIC_NS, 250)] {
                let d = udp_datagrams(&pcap(be, magic, 1, &[&frame, &frame])).unwrap();
                assert_eq!(payloads(&d), [b"hello", b"hello"]);
                assert_eq!(d[1].frame, 2);
                assert_eq!(d[0].timestamp_ns, 1_700_000_000_000_000_000 + ns);
            }
        }
    }

    #[test]
    fn pcapng_sections_interfaces_and_resolutions() {
        let d = udp_datagrams(&sample_pcapng()).unwrap();
        let expected: [&[u8]; 5] = [b"one", b"two", b"three", b"four", b"five"];
        assert_eq!(payloads(&d), expected);
        let frames: Vec<usize> = d.iter().map(|d| d.frame).collect();
        assert_eq!(frames, [1, 2, 3, 4, 5]);
        let times: Vec<u64> = d.iter().map(|d| d.timestamp_ns).collect();
        assert_eq!(
            times,
            [1_500_000_000, 100_000_000_123, 3_000_000_000, 5_000, 0]
        );
        assert_eq!(d[1].src, SocketAddr::new(A6.into(), 4500));
    }

    #[test]
    fn cooked_null_and_raw_ip_link_layers() {
        let (ip4, ip6) = (&eth4(b"v4")[14..], &eth6(b"v6")[14..]);
        let ether = [0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        let sll = [&ether[..], ip4].concat();
        // ARPHRD_LOOPBACK (772), which etherparse's LinuxSllSlice refuses.
        let loopback = [0, 0, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd];
        let sll_lo = [&loopback[..], ip6].concat();
        // SLL2 on ARPHRD_NONE (0xfffe), as on a tun or VTI device.
        let none = [
            0x08, 0, 0, 0, 0, 0, 0, 7, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let sll2 = [&none[..], ip4].concat();
        let null_le = [&2u32.to_le_bytes()[..], ip4].concat();
        let loop_be = [&10u32.to_be_bytes()[..], ip6].concat();
        let cases: [(u32, &[u8], &[u8]); 9] = [
            (113, &sll, b"v4"),
            (113, &sll_lo, b"v6"),
            (276, &sll2, b"v4"),
            (0, &null_le, b"v4"),
            (108, &loop_be, b"v6"),
            (101, ip4, b"v4"),
            (101, ip6, b"v6"),
            (228, ip4, b"v4"),
            (229, ip6, b"v6"),
        ];
        for (link_type, frame, payload) in cases {
            let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, link_type, &[frame])).unwrap();
            assert_eq!(payloads(&d), [payload], "link type {link_type}");
        }
    }

    #[test]
    fn vlan_tagged_ethernet() {
        let id = |v| VlanId::try_new(v).unwrap();
        let single = build(eth().single_vlan(id(7)).ipv4(A4, B4, 64).udp(1, 2), b"1q");
        let double = build(
            eth().double_vlan(id(7), id(8)).ipv6(A6, B6, 64).udp(1, 2),
            b"qinq",
        );
        let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, 1, &[&single, &double])).unwrap();
        assert_eq!(payloads(&d), [&b"1q"[..], b"qinq"]);
    }

    #[test]
    fn ip_fragments_are_reassembled() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        for (v6, link_type) in [(false, 1), (true, 101)] {
            let mut frames = fragments(v6, &payload, 1232);
            assert_eq!(frames.len(), 3);
            frames.swap(0, 2);
            frames.insert(1, frames[0].clone()); // a duplicate changes nothing
            let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, link_type, &frames)).unwrap();
            assert_eq!(payloads(&d), [&payload[..]]);
            assert_eq!((d[0].frame, d[0].dst.port()), (4, 4500));
            // Without its middle piece the datagram never appears.
            let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, link_type, &frames[..3])).unwrap();
            assert!(d.is_empty());
        }
    }

    #[test]
    fn frames_without_a_whole_udp_datagram_are_skipped() {
        let (mut tcp, mut icmp) = (Vec::new(), Vec::new());
        let ip = eth().ipv6(A6, B6, 64);
        ip.tcp(1, 2, 3, 4).write(&mut tcp, b"tcp").unwrap();
        let ip = eth().ipv4(A4, B4, 64);
        ip.icmpv4_echo_request(1, 1)
            .write(&mut icmp, b"ping")
            .unwrap();
        let udp = eth4(b"kept");
        let snapped = &udp[..udp.len() - 2];
        let arp = [&[2; 12][..], &[0x08, 0x06], &[0; 28]].concat();
        let mut keepalive = eth4(&[0xff]);
        keepalive.resize(60, 0); // Ethernet padding is not payload
        let frames: [&[u8]; 7] = [&tcp, &icmp, snapped, &arp, &[], &keepalive, &udp];
        let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, 1, &frames)).unwrap();
        assert_eq!(payloads(&d), [&[0xff][..], b"kept"]);
        assert_eq!((d[0].frame, d[1].frame), (6, 7));
    }

    #[test]
    fn errors_are_typed_one_line_messages() {
        use CaptureError::*;
        let not = udp_datagrams(b"hello world, not a capture").unwrap_err();
        assert_eq!(
            not.to_string(),
            "not a pcap or pcapng file (starts with 0x68656c6c)"
        );
        assert_eq!(udp_datagrams(b""), Err(TooShort { len: 0 }));
        assert_eq!(
            udp_datagrams(&VECTOR[..10]),
            Err(TruncatedHeader { len: 10 })
        );
        let cut = udp_datagrams(&VECTOR[..30]).unwrap_err();
        assert_eq!(
            cut.to_string(),
            "truncated capture: frame 1 at byte 24 is cut short"
        );
        assert_eq!(udp_datagrams(&VECTOR[..100]), Err(cut));
        let usb = pcap(false, PCAP_MAGIC_US, 189, &[]);
        assert_eq!(udp_datagrams(&usb), Err(UnsupportedLinkType(189)));
        let ng = [shb(false), idb(false, 189, &[]), epb(false, 0, 0, b"usb")].concat();
        assert_eq!(udp_datagrams(&ng), Err(UnsupportedLinkType(189)));
        let orphan = [shb(false), epb(false, 0, 0, &eth4(b"x"))].concat();
        assert!(matches!(udp_datagrams(&orphan), Err(BadBlock { .. })));

        let packet = epb(false, 0, 0, &eth4(b"x"));
        let good = [shb(false), idb(false, 1, &[]), packet.clone()].concat();
        let (at, real) = (good.len() - packet.len(), packet.len() as u32);
        let with_lengths = |leading: u32, trailing: u32| {
            let mut ng = good.clone();
            ng[at + 4..at + 8].copy_from_slice(&leading.to_le_bytes());
            ng.splice(ng.len() - 4.., trailing.to_le_bytes());
            udp_datagrams(&ng)
        };
        for (leading, trailing) in [(real + 1, real + 1), (8, 8), (real, real - 4)] {
            let e = with_lengths(leading, trailing).unwrap_err();
            assert!(matches!(e, BadBlock { offset, .. } if offset == at), "{e}");
        }
        let beyond = with_lengths(real + 4, real);
        assert_eq!(
            beyond,
            Err(Truncated {
                frame: 1,
                offset: at
            })
        );
        for e in [
            not,
            cut,
            BadBlock {
                offset: 0,
                what: "x",
            },
            UnsupportedLinkType(1),
        ] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn hostile_input_never_panics_or_outgrows_itself() {
        let payload: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let frags = fragments(false, &payload, 600);
        let frags: Vec<&[u8]> = frags.iter().map(Vec::as_slice).collect();
        let fragmented = pcap(true, PCAP_MAGIC_NS, 1, &frags);
        let samples = [sample_pcapng(), fragmented, VECTOR[..1500].to_vec()];
        let check = |bytes: &[u8]| {
            if let Ok(d) = udp_datagrams(bytes) {
                assert!(d.iter().map(|d| d.payload.len()).sum::<usize>() <= bytes.len());
            }
        };
        for sample in &samples {
            (0..=sample.len()).for_each(|len| check(&sample[..len]));
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..4000 {
            let mut bytes = samples[i % samples.len()].clone();
            for _ in 0..1 + next() % 6 {
                let at = next() as usize % bytes.len();
                bytes[at] = next() as u8;
            }
            check(&bytes);
        }
    }
}
