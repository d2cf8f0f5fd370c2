//! Reading UDP datagrams out of pcap and pcapng captures.
//!
//! Captures are input from anywhere: every length is checked against the bytes
//! present, the only allocations are copies of bytes the file holds, and a file
//! that is not a capture, or is cut short, is a one-line [`CaptureError`].

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice, UdpSlice};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// 1-based number of the frame that carried it (its last fragment, if fragmented).
    pub frame: usize,
    /// Capture time, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Why a capture could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// The file starts with neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (it starts with {0})")]
    NotACapture(String),
    /// A header or record runs past the end of the file.
    #[error("truncated capture: {what} at byte {offset} is cut short")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts in the file.
        offset: usize,
    },
    /// A pcapng block is malformed.
    #[error("malformed pcapng block at byte {offset}: {what}")]
    BadBlock {
        /// Where the block starts in the file.
        offset: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A packet refers to a pcapng interface that was never described.
    #[error("packet at byte {offset} names undescribed interface {interface}")]
    UnknownInterface {
        /// Where the packet block starts.
        offset: usize,
        /// The interface number it names.
        interface: u32,
    },
    /// The link layer is not one this reader decodes.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
}

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const IF_TSRESOL: u16 = 9;

const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LOOP: u32 = 108;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;
const SLL2_HEADER_LEN: usize = 20;

/// Reads every UDP datagram from a pcap or pcapng capture, in file order.
pub fn udp_datagrams(capture: &[u8]) -> Result<Vec<UdpDatagram>, CaptureError> {
    let magic = capture
        .get(..4)
        .ok_or(CaptureError::Truncated {
            what: "file header",
            offset: 0,
        })?
        .try_into()
        .map(u32::from_le_bytes)
        .unwrap_or_default();
    let mut frames = Frames::default();
    if magic == PCAPNG_SHB {
        read_pcapng(capture, &mut frames)?;
    } else if [PCAP_MAGIC_US, PCAP_MAGIC_NS]
        .iter()
        .any(|m| magic == *m || magic == m.swap_bytes())
    {
        read_pcap(capture, &mut frames)?;
    } else {
        return Err(CaptureError::NotACapture(hex_prefix(capture)));
    }
    Ok(frames.datagrams)
}

fn hex_prefix(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(&bytes[..bytes.len().min(8)]))
}

/// A cursor over the file in one byte order.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    big_endian: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], CaptureError> {
        let bytes = self
            .at
            .checked_add(len)
            .and_then(|end| self.data.get(self.at..end))
            .ok_or(CaptureError::Truncated {
                what,
                offset: self.at,
            })?;
        self.at += len;
        Ok(bytes)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, CaptureError> {
        let b: [u8; 2] = self.take(2, what)?.try_into().unwrap_or_default();
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CaptureError> {
        let b: [u8; 4] = self.take(4, what)?.try_into().unwrap_or_default();
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }
}

fn read_pcap(capture: &[u8], frames: &mut Frames) -> Result<(), CaptureError> {
    let magic_le = u32::from_le_bytes(capture[..4].try_into().unwrap_or_default());
    let mut c = Cursor {
        data: capture,
        at: 4,
        big_endian: magic_le != PCAP_MAGIC_US && magic_le != PCAP_MAGIC_NS,
    };
    let magic = if c.big_endian {
        magic_le.swap_bytes()
    } else {
        magic_le
    };
    let units_per_second = if magic == PCAP_MAGIC_NS {
        1_000_000_000
    } else {
        1_000_000
    };
    c.take(16, "file header")?; // version, thiszone, sigfigs, snaplen
    // The upper bits may carry the FCS length (pcap-linktype(7)).
    let link_type = c.u32("file header")? & 0x0fff_ffff;
    check_link_type(link_type)?;
    while !c.is_empty() {
        let record = c.at;
        let cut = |what| {
            move |_| CaptureError::Truncated {
                what,
                offset: record,
            }
        };
        c.take(16, "").map_err(cut("record header"))?;
        c.at = record;
        let seconds = c.u32("")?;
        let fraction = c.u32("")?;
        let captured = c.u32("")?;
        c.u32("")?; // original length
        let data = c.take(captured as usize, "").map_err(cut("record"))?;
        let ns = u64::from(seconds) * 1_000_000_000 + scale(fraction.into(), units_per_second);
        frames.frame(link_type, ns, data);
    }
    Ok(())
}

/// A pcapng interface: link type and timestamp units per second.
#[derive(Clone, Copy)]
struct Interface {
    link_type: u32,
    units_per_second: u128,
}

fn read_pcapng(capture: &[u8], frames: &mut Frames) -> Result<(), CaptureError> {
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut at = 0;
    let mut big_endian = false;
    while at < capture.len() {
        let head = capture.get(at..at + 12).ok_or(CaptureError::Truncated {
            what: "block header",
            offset: at,
        })?;
        let block_type = u32::from_le_bytes(head[..4].try_into().unwrap_or_default());
        if block_type == PCAPNG_SHB {
            let order = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
            big_endian = match order {
                PCAPNG_BYTE_ORDER_MAGIC => false,
                o if o.swap_bytes() == PCAPNG_BYTE_ORDER_MAGIC => true,
                _ => {
                    return Err(CaptureError::BadBlock {
                        offset: at,
                        what: "bad byte-order magic",
                    });
                }
            };
            interfaces.clear();
        }
        let mut c = Cursor {
            data: capture,
            at,
            big_endian,
        };
        let block_type = c.u32("block header")?;
        let total = c.u32("block header")? as usize;
        if total < 12 || !total.is_multiple_of(4) {
            return Err(CaptureError::BadBlock {
                offset: at,
                what: "length not a multiple of 4 of at least 12",
            });
        }
        let block = capture.get(at..at + total).ok_or(CaptureError::Truncated {
            what: "block",
            offset: at,
        })?;
        let mut trailer = Cursor {
            data: block,
            at: total - 4,
            big_endian,
        };
        if trailer.u32("block trailer")? as usize != total {
            return Err(CaptureError::BadBlock {
                offset: at,
                what: "trailing length differs from the leading one",
            });
        }
        let mut body = Cursor {
            data: &block[..total - 4],
            at: 8,
            big_endian,
        };
        let short = |_| CaptureError::BadBlock {
            offset: at,
            what: "body shorter than its fields",
        };
        match block_type {
            PCAPNG_IDB => {
                let link_type = u32::from(body.u16("").map_err(short)?);
                check_link_type(link_type)?;
                body.take(6, "").map_err(short)?; // reserved, snaplen
                interfaces.push(Interface {
                    link_type,
                    units_per_second: tsresol(&mut body).map_err(short)?,
                });
            }
            PCAPNG_EPB | PCAPNG_SPB => {
                let (interface, ticks, captured) = if block_type == PCAPNG_EPB {
                    let interface = body.u32("").map_err(short)?;
                    let high = body.u32("").map_err(short)?;
                    let low = body.u32("").map_err(short)?;
                    let captured = body.u32("").map_err(short)?;
                    body.u32("").map_err(short)?; // original length
                    (
                        interface,
                        u64::from(high) << 32 | u64::from(low),
                        captured as usize,
                    )
                } else {
                    let original = body.u32("").map_err(short)? as usize;
                    (0, 0, original.min(body.data.len() - body.at))
                };
                let iface =
                    *interfaces
                        .get(interface as usize)
                        .ok_or(CaptureError::UnknownInterface {
                            offset: at,
                            interface,
                        })?;
                let data = body.take(captured, "").map_err(short)?;
                let ns = scale(ticks.into(), iface.units_per_second);
                frames.frame(iface.link_type, ns, data);
            }
            _ => {} // statistics, name resolution, custom blocks: nothing to show
        }
        at += total;
    }
    Ok(())
}

/// Units per second from an IDB's options (if_tsresol; microseconds without it).
fn tsresol(options: &mut Cursor<'_>) -> Result<u128, CaptureError> {
    let mut units = 1_000_000;
    while !options.is_empty() {
        let code = options.u16("option")?;
        let len = usize::from(options.u16("option")?);
        let value = options.take(len.next_multiple_of(4), "option")?;
        match (code, value.first()) {
            (0, _) => break,
            (IF_TSRESOL, Some(&r)) if r & 0x80 == 0 && r <= 19 => units = 10u128.pow(r.into()),
            (IF_TSRESOL, Some(&r)) if r & 0x80 != 0 && r & 0x7f <= 63 => units = 1 << (r & 0x7f),
            _ => {}
        }
    }
    Ok(units)
}

/// `ticks` at `units_per_second`, in nanoseconds (saturating).
fn scale(ticks: u128, units_per_second: u128) -> u64 {
    u64::try_from(ticks * 1_000_000_000 / units_per_second.max(1)).unwrap_or(u64::MAX)
}

fn check_link_type(link_type: u32) -> Result<(), CaptureError> {
    match link_type {
        LINKTYPE_NULL | LINKTYPE_ETHERNET | LINKTYPE_RAW | LINKTYPE_LOOP | LINKTYPE_LINUX_SLL
        | LINKTYPE_IPV4 | LINKTYPE_IPV6 | LINKTYPE_LINUX_SLL2 => Ok(()),
        other => Err(CaptureError::UnsupportedLinkType(other)),
    }
}

/// Source, destination, protocol and identification of a fragmented IP datagram.
type FragmentKey = (IpAddr, IpAddr, u8, u32);

/// The datagrams found so far, and the fragments still waiting for the rest.
#[derive(Default)]
struct Frames {
    count: usize,
    datagrams: Vec<UdpDatagram>,
    fragments: HashMap<FragmentKey, Fragments>,
}

/// The pieces of one fragmented IP payload, as (offset, bytes).
#[derive(Default)]
struct Fragments {
    pieces: Vec<(usize, Vec<u8>)>,
    total: Option<usize>,
}

impl Fragments {
    /// The whole payload, once the pieces cover 0..total without a gap.
    fn assemble(&mut self) -> Option<Vec<u8>> {
        let total = self.total?;
        self.pieces.sort_by_key(|(offset, _)| *offset);
        let mut covered = 0;
        for (offset, bytes) in &self.pieces {
            if *offset > covered {
                return None;
            }
            covered = covered.max(offset + bytes.len());
        }
        if covered < total {
            return None;
        }
        let mut whole = vec![0; total];
        for (offset, bytes) in &self.pieces {
            let end = (offset + bytes.len()).min(total);
            if *offset < end {
                whole[*offset..end].copy_from_slice(&bytes[..end - offset]);
            }
        }
        Some(whole)
    }
}

impl Frames {
    fn frame(&mut self, link_type: u32, timestamp_ns: u64, data: &[u8]) {
        self.count += 1;
        let sliced = match link_type {
            LINKTYPE_ETHERNET => SlicedPacket::from_ethernet(data),
            LINKTYPE_LINUX_SLL => SlicedPacket::from_linux_sll(data),
            LINKTYPE_LINUX_SLL2 => match data.get(SLL2_HEADER_LEN..) {
                Some(rest) => SlicedPacket::from_ether_type(
                    EtherType(u16::from_be_bytes([data[0], data[1]])),
                    rest,
                ),
                None => return,
            },
            // A 4-byte address family in host order; the IP version nibble says the same.
            LINKTYPE_NULL | LINKTYPE_LOOP => match data.get(4..) {
                Some(rest) => SlicedPacket::from_ip(rest),
                None => return,
            },
            _ => SlicedPacket::from_ip(data),
        };
        // Not IP, or cut short by the snap length: not a datagram we can show.
        let Ok(packet) = sliced else { return };
        let (src, dst, fragment) = match &packet.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                let fragment = h.is_fragmenting_payload().then(|| {
                    let offset = usize::from(h.fragments_offset().value()) * 8;
                    (
                        h.protocol().0,
                        u32::from(h.identification()),
                        offset,
                        h.more_fragments(),
                    )
                });
                (
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                    fragment,
                )
            }
            Some(NetSlice::Ipv6(ip)) => {
                let fragment = ip
                    .extensions()
                    .clone()
                    .into_iter()
                    .find_map(|ext| match ext {
                        etherparse::Ipv6ExtensionSlice::Fragment(f)
                            if f.is_fragmenting_payload() =>
                        {
                            Some((
                                ip.payload().ip_number.0,
                                f.identification(),
                                usize::from(f.fragment_offset().value()) * 8,
                                f.more_fragments(),
                            ))
                        }
                        _ => None,
                    });
                let h = ip.header();
                (
                    IpAddr::from(h.source_addr()),
                    IpAddr::from(h.destination_addr()),
                    fragment,
                )
            }
            _ => return,
        };
        match fragment {
            None => {
                if let Some(TransportSlice::Udp(udp)) = &packet.transport {
                    self.push(timestamp_ns, src, dst, udp);
                }
            }
            Some((protocol, id, offset, more)) => {
                if protocol != etherparse::IpNumber::UDP.0 {
                    return;
                }
                let Some(payload) = packet.net.as_ref().and_then(|n| n.ip_payload_ref()) else {
                    return;
                };
                let key = (src, dst, protocol, id);
                let entry = self.fragments.entry(key).or_default();
                entry.pieces.push((offset, payload.payload.to_vec()));
                if !more {
                    entry.total = Some(offset + payload.payload.len());
                }
                if let Some(whole) = entry.assemble() {
                    self.fragments.remove(&key);
                    if let Ok(udp) = UdpSlice::from_slice(&whole) {
                        self.push(timestamp_ns, src, dst, &udp);
                    }
                }
            }
        }
    }

    fn push(&mut self, timestamp_ns: u64, src: IpAddr, dst: IpAddr, udp: &UdpSlice<'_>) {
        self.datagrams.push(UdpDatagram {
            frame: self.count,
            timestamp_ns,
            src: SocketAddr::new(src, udp.source_port()),
            dst: SocketAddr::new(dst, udp.destination_port()),
            payload: udp.payload().to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const VECTOR: &[u8] = include_bytes!("../../tests/vectors/gcm/capture.pcap");

    fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(500, 4500);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    fn pcap(big_endian: bool, magic: u32, link_type: u32, frames: &[&[u8]]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend(u32b(magic));
        out.extend(u16b(2));
        out.extend(u16b(4));
        out.extend([0; 8]);
        out.extend(u32b(65535));
        out.extend(u32b(link_type));
        for (i, f) in frames.iter().enumerate() {
            out.extend(u32b(1_700_000_000 + i as u32));
            out.extend(u32b(250));
            out.extend(u32b(f.len() as u32));
            out.extend(u32b(f.len() as u32));
            out.extend_from_slice(f);
        }
        out
    }

    fn block(block_type: u32, body: &[u8]) -> Vec<u8> {
        let total = (12 + body.len().next_multiple_of(4)) as u32;
        let mut out = Vec::new();
        out.extend(block_type.to_le_bytes());
        out.extend(total.to_le_bytes());
        out.extend_from_slice(body);
        out.resize(total as usize - 4, 0);
        out.extend(total.to_le_bytes());
        out
    }

    fn pcapng(interfaces: &[(u16, Option<u8>)], packets: &[(u32, u64, &[u8])]) -> Vec<u8> {
        let mut shb = PCAPNG_BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        shb.extend([1, 0, 0, 0]); // version 1.0
        shb.extend(u64::MAX.to_le_bytes()); // section length unknown
        let mut out = block(PCAPNG_SHB, &shb);
        out.extend(block(0x0000_0bad, b"custom"));
        for (link_type, resol) in interfaces {
            let mut idb = link_type.to_le_bytes().to_vec();
            idb.extend([0, 0]);
            idb.extend(65535u32.to_le_bytes());
            if let Some(r) = resol {
                idb.extend(IF_TSRESOL.to_le_bytes());
                idb.extend(1u16.to_le_bytes());
                idb.extend([*r, 0, 0, 0]);
                idb.extend([0; 4]); // opt_endofopt
            }
            out.extend(block(PCAPNG_IDB, &idb));
        }
        for (interface, ticks, data) in packets {
            let mut epb = interface.to_le_bytes().to_vec();
            epb.extend(((ticks >> 32) as u32).to_le_bytes());
            epb.extend((*ticks as u32).to_le_bytes());
            epb.extend((data.len() as u32).to_le_bytes());
            epb.extend((data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            out.extend(block(PCAPNG_EPB, &epb));
        }
        out
    }

    #[test]
    fn reads_the_strongswan_vector() {
        let datagrams = udp_datagrams(VECTOR).unwrap();
        assert_eq!(datagrams.len(), 38);
        let first = &datagrams[0];
        assert_eq!(first.frame, 1);
        assert_eq!(first.src, "192.0.2.1:500".parse().unwrap());
        assert_eq!(first.dst, "192.0.2.2:500".parse().unwrap());
        // Frame 1 is 274 bytes on the wire: Ethernet 14, IPv4 20, UDP 8.
        assert_eq!(first.payload.len(), 274 - 42);
        assert!(
            datagrams[2..]
                .iter()
                .all(|d| d.src.port() == 4500 && d.dst.port() == 4500)
        );
        assert!(
            datagrams
                .windows(2)
                .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns)
        );
    }

    #[test]
    fn classic_pcap_in_both_byte_orders_and_resolutions() {
        let frame = udp_v4(b"hello");
        for big_endian in [false, true] {
            for (magic, ns) in [(PCAP_MAGIC_US, 250_000), (PCAP_MAGIC_NS, 250)] {
                let d =
                    udp_datagrams(&pcap(big_endian, magic, LINKTYPE_ETHERNET, &[&frame])).unwrap();
                assert_eq!(d.len(), 1);
                assert_eq!(d[0].payload, b"hello");
                assert_eq!(d[0].timestamp_ns, 1_700_000_000_000_000_000 + ns);
            }
        }
    }

    #[test]
    fn pcapng_with_two_interfaces_and_a_timestamp_resolution() {
        let eth = udp_v4(b"on ethernet");
        let raw = &eth[14..]; // the same datagram without its Ethernet header
        let capture = pcapng(
            &[
                (LINKTYPE_ETHERNET as u16, None),
                (LINKTYPE_RAW as u16, Some(9)),
            ],
            &[(0, 1_500_000, &eth), (1, 2_000_000_123, raw)],
        );
        let d = udp_datagrams(&capture).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].frame, d[1].frame), (1, 2));
        assert_eq!(d[0].timestamp_ns, 1_500_000_000);
        assert_eq!(d[1].timestamp_ns, 2_000_000_123);
        assert_eq!(d[1].payload, b"on ethernet");
    }

    #[test]
    fn cooked_loopback_and_vlan_link_layers() {
        let eth = udp_v4(b"x");
        let ip = &eth[14..];
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(ip);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        let mut vlan = eth[..12].to_vec();
        vlan.extend([0x81, 0x00, 0x00, 0x07]);
        vlan.extend_from_slice(&eth[12..]);
        for (link_type, frame) in [
            (LINKTYPE_LINUX_SLL, &sll),
            (LINKTYPE_LINUX_SLL2, &sll2),
            (LINKTYPE_NULL, &null),
            (LINKTYPE_ETHERNET, &vlan),
        ] {
            let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, link_type, &[frame])).unwrap();
            assert_eq!(d.len(), 1, "link type {link_type}");
            assert_eq!(d[0].dst.port(), 4500);
        }
    }

    /// Splits an IPv4/UDP datagram into fragments of at most `size` payload bytes.
    fn fragments_v4(udp_payload: &[u8], size: usize) -> Vec<Vec<u8>> {
        let whole = udp_v4(udp_payload);
        let ip_payload = &whole[34..];
        ip_payload
            .chunks(size)
            .enumerate()
            .map(|(i, chunk)| {
                let mut header = etherparse::Ipv4Header::new(
                    chunk.len() as u16,
                    64,
                    etherparse::IpNumber::UDP,
                    [192, 0, 2, 1],
                    [192, 0, 2, 2],
                )
                .unwrap();
                header.identification = 77;
                header.more_fragments = (i + 1) * size < ip_payload.len();
                header.fragment_offset =
                    etherparse::IpFragOffset::try_new((i * size / 8) as u16).unwrap();
                header.header_checksum = header.calc_header_checksum();
                let mut frame = whole[..14].to_vec();
                header.write(&mut frame).unwrap();
                frame.extend_from_slice(chunk);
                frame
            })
            .collect()
    }

    #[test]
    fn ip_fragments_are_reassembled_in_any_order() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut frames = fragments_v4(&payload, 1480);
        assert_eq!(frames.len(), 3);
        frames.swap(0, 2);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, LINKTYPE_ETHERNET, &refs)).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].payload, payload);
        assert_eq!(d[0].frame, 3);
        // A missing fragment yields nothing rather than a hole.
        let d = udp_datagrams(&pcap(false, PCAP_MAGIC_US, LINKTYPE_ETHERNET, &refs[..2])).unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn non_udp_frames_are_skipped() {
        let mut tcp = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6([1; 16], [2; 16], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut tcp, b"tcp")
            .unwrap();
        let arp_ish = [0u8; 20];
        let d = udp_datagrams(&pcap(
            false,
            PCAP_MAGIC_US,
            LINKTYPE_ETHERNET,
            &[&tcp, &arp_ish],
        ))
        .unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn errors_are_typed_and_name_the_place() {
        assert!(matches!(
            udp_datagrams(b"hello world, not a capture"),
            Err(CaptureError::NotACapture(_))
        ));
        assert!(matches!(
            udp_datagrams(b""),
            Err(CaptureError::Truncated { .. })
        ));
        assert_eq!(
            udp_datagrams(&VECTOR[..30]),
            Err(CaptureError::Truncated {
                what: "record header",
                offset: 24
            })
        );
        assert_eq!(
            udp_datagrams(&VECTOR[..100]),
            Err(CaptureError::Truncated {
                what: "record",
                offset: 24
            })
        );
        assert_eq!(
            udp_datagrams(&pcap(false, PCAP_MAGIC_US, 147, &[])),
            Err(CaptureError::UnsupportedLinkType(147))
        );
        let mut ng = pcapng(&[(1, None)], &[(0, 0, &udp_v4(b"x"))]);
        let last = ng.len() - 4;
        ng[last] ^= 4;
        assert!(matches!(
            udp_datagrams(&ng),
            Err(CaptureError::BadBlock { .. })
        ));
        let ng = pcapng(&[], &[(0, 0, &udp_v4(b"x"))]);
        assert!(matches!(
            udp_datagrams(&ng),
            Err(CaptureError::UnknownInterface { interface: 0, .. })
        ));
    }

    #[test]
    fn hostile_captures_never_panic() {
        for len in 0..VECTOR.len().min(2000) {
            let _ = udp_datagrams(&VECTOR[..len]);
        }
        let ng = pcapng(&[(1, Some(6))], &[(0, 5, &udp_v4(b"payload"))]);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let base = if state & 1 == 0 {
                &VECTOR[..600]
            } else {
                &ng[..]
            };
            let mut bytes = base.to_vec();
            for k in 0..4 {
                let at = (state >> (k * 16)) as usize % bytes.len();
                bytes[at] = (state >> (k * 8)) as u8;
            }
            let _ = udp_datagrams(&bytes);
        }
    }
}
