//! What the data plane reads in an inner packet (the security policy's view of it)
//! and the ICMP errors it writes back when a packet cannot fit the tunnel.

use crate::ike::ts;
use crate::wire::payload::TsRange;
use etherparse::{
    Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    icmpv4::DestUnreachableHeader,
};
use std::net::IpAddr;

/// The fields traffic selectors match (RFC 4301 §4.4.1.1), plus what the MTU check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Inner source address.
    pub src: IpAddr,
    /// Inner destination address.
    pub dst: IpAddr,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Source port, or ICMP type and code; None for non-initial fragments.
    pub src_port: Option<u16>,
    /// Destination port, or ICMP type and code; None for non-initial fragments.
    pub dst_port: Option<u16>,
    /// IPv4 with DF set, or any IPv6 packet (routers never fragment IPv6).
    pub dont_fragment: bool,
}

impl Flow {
    /// Parses an IPv4 or IPv6 packet; None if it is neither or is truncated.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        let sliced = SlicedPacket::from_ip(packet).ok()?;
        let (src, dst, protocol, dont_fragment) = match sliced.net.as_ref()? {
            NetSlice::Ipv4(v4) => {
                let h = v4.header();
                (
                    IpAddr::V4(h.source_addr()),
                    IpAddr::V4(h.destination_addr()),
                    v4.payload().ip_number.0,
                    h.dont_fragment(),
                )
            }
            NetSlice::Ipv6(v6) => {
                let h = v6.header();
                (
                    IpAddr::V6(h.source_addr()),
                    IpAddr::V6(h.destination_addr()),
                    v6.payload().ip_number.0,
                    true,
                )
            }
            NetSlice::Arp(_) => return None,
        };
        // ICMP has no ports; RFC 7296 §3.13.1 puts type and code in the port fields.
        let (src_port, dst_port) = match &sliced.transport {
            Some(TransportSlice::Tcp(t)) => (Some(t.source_port()), Some(t.destination_port())),
            Some(TransportSlice::Udp(u)) => (Some(u.source_port()), Some(u.destination_port())),
            Some(TransportSlice::Icmpv4(i)) => {
                let tc = u16::from_be_bytes([i.type_u8(), i.code_u8()]);
                (Some(tc), Some(tc))
            }
            Some(TransportSlice::Icmpv6(i)) => {
                let tc = u16::from_be_bytes([i.type_u8(), i.code_u8()]);
                (Some(tc), Some(tc))
            }
            _ => (None, None),
        };
        Some(Self {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
            dont_fragment,
        })
    }

    /// True if the flow's source is within `from` and its destination within `to`.
    pub fn selected(&self, from: &[TsRange], to: &[TsRange]) -> bool {
        from.iter()
            .any(|t| ts::covers(t, self.src, self.protocol, self.src_port))
            && to
                .iter()
                .any(|t| ts::covers(t, self.dst, self.protocol, self.dst_port))
    }
}

/// The IPv6 minimum MTU bounds how much of the offending packet an ICMPv6 error quotes.
const IPV6_MIN_MTU: usize = 1280;
/// RFC 1812 §4.3.2.3: quote as much as fits in 576 bytes.
const IPV4_ICMP_MAX: usize = 576;

/// The ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6) telling the
/// sender of `packet` to send at most `mtu` bytes. It is sourced from the packet's
/// destination: the gateway has no address of its own inside the tunnel, and hosts
/// match such errors by the quoted header, not by who sent them.
pub fn too_big(packet: &[u8], flow: &Flow, mtu: u16) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match (flow.src, flow.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let quote = &packet[..packet.len().min(IPV4_ICMP_MAX - 28)];
            PacketBuilder::ipv4(dst.octets(), src.octets(), 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
                ))
                .write(&mut out, quote)
                .ok()?;
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let quote = &packet[..packet.len().min(IPV6_MIN_MTU - 48)];
            PacketBuilder::ipv6(dst.octets(), src.octets(), 64)
                .icmpv6(Icmpv6Type::PacketTooBig { mtu: mtu.into() })
                .write(&mut out, quote)
                .ok()?;
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::payload::AddrRange;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn udp_v4(src: [u8; 4], dst: [u8; 4], dport: u16, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(5000, dport)
            .write(&mut out, &vec![0; len])
            .unwrap();
        out
    }

    fn net(a: [u8; 4], b: [u8; 4]) -> TsRange {
        TsRange {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            addrs: AddrRange::V4(Ipv4Addr::from(a), Ipv4Addr::from(b)),
        }
    }

    #[test]
    fn udp_flow_is_matched_by_address_protocol_and_port() {
        let p = udp_v4([10, 1, 0, 2], [10, 2, 0, 2], 53, 10);
        let f = Flow::parse(&p).unwrap();
        assert_eq!(f.protocol, 17);
        assert_eq!((f.src_port, f.dst_port), (Some(5000), Some(53)));
        let local = [net([10, 1, 0, 0], [10, 1, 0, 255])];
        let remote = [net([10, 2, 0, 0], [10, 2, 0, 255])];
        assert!(f.selected(&local, &remote));
        assert!(!f.selected(&remote, &local));
        let dns_only = [TsRange {
            ip_protocol: 17,
            start_port: 53,
            end_port: 53,
            ..remote[0]
        }];
        assert!(f.selected(&local, &dns_only));
        let tcp_dns = [TsRange {
            ip_protocol: 6,
            ..dns_only[0]
        }];
        assert!(!f.selected(&local, &tcp_dns));
    }

    #[test]
    fn garbage_and_truncated_packets_have_no_flow() {
        assert_eq!(Flow::parse(&[]), None);
        assert_eq!(Flow::parse(&[0x45, 0, 0, 40]), None);
        let p = udp_v4([10, 1, 0, 2], [10, 2, 0, 2], 53, 10);
        assert_eq!(Flow::parse(&p[..p.len() - 4]), None);
    }

    #[test]
    fn too_big_v4_quotes_the_header_and_names_the_mtu() {
        let mut p = udp_v4([10, 1, 0, 2], [10, 2, 0, 2], 53, 1400);
        p[6] |= 0x40; // DF
        let f = Flow::parse(&p).unwrap();
        assert!(f.dont_fragment);
        let icmp = too_big(&p, &f, 1380).unwrap();
        let back = SlicedPacket::from_ip(&icmp).unwrap();
        let Some(NetSlice::Ipv4(v4)) = &back.net else {
            panic!("not v4")
        };
        assert_eq!(v4.header().destination_addr(), Ipv4Addr::new(10, 1, 0, 2));
        let Some(TransportSlice::Icmpv4(i)) = back.transport else {
            panic!("not icmp")
        };
        assert_eq!(
            i.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1380
            })
        );
        assert_eq!(i.payload(), &p[..548]);
    }

    #[test]
    fn too_big_v6_fits_the_minimum_mtu() {
        let mut p = Vec::new();
        let (a, b) = (
            Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2),
            Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 2),
        );
        PacketBuilder::ipv6(a.octets(), b.octets(), 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut p, &[0; 1400])
            .unwrap();
        let f = Flow::parse(&p).unwrap();
        assert_eq!((f.protocol, f.dst_port), (6, Some(80)));
        let icmp = too_big(&p, &f, 1400).unwrap();
        assert_eq!(icmp.len(), IPV6_MIN_MTU);
        let back = SlicedPacket::from_ip(&icmp).unwrap();
        let Some(TransportSlice::Icmpv6(i)) = back.transport else {
            panic!("not icmpv6")
        };
        assert_eq!(i.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
    }
}
