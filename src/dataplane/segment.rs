//! The segments of a packet read from the TUN with its virtio-net header: a TSO/USO
//! super-packet (one IP and transport header, up to 64 KiB of payload) becomes the
//! packets the kernel would have sent, each with its own lengths, IPv4 id, TCP
//! sequence number and flags, and a complete checksum (the inner packet travels as
//! is, and the far end's TUN expects a valid one).
//!
//! The super-packet is read straight into a transmit buffer and never copied: each
//! segment in turn is made in place there, its headers written over the end of the
//! segment before (sealed by then), and sealed from there into a buffer of its own.
//! Only where that cannot be (a packet held for an SA, a suite that seals in place
//! only, more segments than buffers) are the segments written out first.

use std::ops::Range;
use tun_rs::{VIRTIO_NET_HDR_LEN, checksum, checksum_no_fold};

/// virtio_net_hdr.flags: the checksum from `csum_start` on is left to us.
pub(super) const F_NEEDS_CSUM: u8 = 1;
/// virtio_net_hdr.gso_type values (include/uapi/linux/virtio_net.h).
const GSO_NONE: u8 = 0;
pub(super) const GSO_TCPV4: u8 = 1;
pub(super) const GSO_TCPV6: u8 = 4;
pub(super) const GSO_UDP_L4: u8 = 5;
/// Set with a TCP type when the first segment carries CWR (SKB_GSO_TCP_ECN).
const GSO_ECN: u8 = 0x80;
const TCPV4_ECN: u8 = GSO_TCPV4 | GSO_ECN;
const TCPV6_ECN: u8 = GSO_TCPV6 | GSO_ECN;

const TCP_FIN: u8 = 0x01;
pub(super) const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
pub(super) const PROTO_TCP: u8 = 6;
pub(super) const PROTO_UDP: u8 = 17;
/// Where the TCP checksum is, from the start of the TCP header.
pub(super) const TCP_CSUM_OFFSET: usize = 16;
/// Where the UDP checksum is, from the start of the UDP header.
pub(super) const UDP_CSUM_OFFSET: usize = 6;

/// Why a packet from the TUN cannot be segmented (the kernel never sends one such;
/// each is counted as malformed and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Shorter than its virtio-net header, its IP header or its transport header.
    #[error("packet truncated")]
    Truncated,
    /// A GSO type this gateway does not segment (UFO, ECN on UDP, unknown).
    #[error("unsupported GSO type {0:#04x}")]
    GsoType(u8),
    /// The GSO type names the other IP version, or the packet is neither.
    #[error("GSO type does not match the IP version")]
    Version,
    /// csum_start/csum_offset outside the packet or not at the transport checksum.
    #[error("checksum offsets out of range")]
    Checksum,
    /// A GSO packet with a segment size of zero.
    #[error("zero GSO segment size")]
    ZeroSize,
    /// A segment longer than an IP length field can say.
    #[error("segment too long")]
    TooLong,
}

/// What the header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One packet, as is.
    Plain,
    /// One packet whose checksum at `at` sums from `start` on, the field holding the
    /// pseudo-header's sum.
    Complete { start: usize, at: usize },
    /// TCP segmentation; `ecn`: only the first segment keeps CWR.
    Tcp { ecn: bool },
    /// UDP segmentation.
    Udp,
}

/// A packet read from the TUN, checked against its virtio-net header: how it splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    kind: Kind,
    /// The super-packet's length.
    len: usize,
    /// IP header length, where the transport header starts.
    ip_len: usize,
    /// IP and transport header length, where the payload starts.
    hdr_len: usize,
    /// Payload bytes per segment (the last may have fewer).
    size: usize,
    v6: bool,
}

impl Segments {
    /// Checks `vnet` (the header the TUN wrote before the packet) against `packet`.
    /// The header's own `hdr_len` is not trusted: in forwarded packets the kernel sets
    /// it to the first packet's whole length; the transport header says its length.
    pub fn parse(vnet: &[u8; VIRTIO_NET_HDR_LEN], packet: &[u8]) -> Result<Self, SegmentError> {
        let field = |at: usize| usize::from(u16::from_ne_bytes([vnet[at], vnet[at + 1]]));
        let (flags, gso_type) = (vnet[0], vnet[1]);
        let (size, csum_start, csum_offset) = (field(4), field(6), field(8));
        let len = packet.len();
        let v6 = match packet.first().map(|b| b >> 4) {
            Some(4) => false,
            Some(6) => true,
            _ if gso_type == GSO_NONE => {
                // Not IP: no checksum to complete, and the policy will refuse it.
                return Ok(Self::plain(len));
            }
            _ => return Err(SegmentError::Version),
        };
        let kind = match gso_type {
            GSO_NONE if flags & F_NEEDS_CSUM == 0 => return Ok(Self::plain(len)),
            GSO_NONE => {
                let at = csum_start + csum_offset;
                if at + 2 > len {
                    return Err(SegmentError::Checksum);
                }
                return Ok(Self {
                    kind: Kind::Complete {
                        start: csum_start,
                        at,
                    },
                    ..Self::plain(len)
                });
            }
            GSO_TCPV4 | GSO_TCPV6 | TCPV4_ECN | TCPV6_ECN => {
                if v6 != (gso_type & !GSO_ECN == GSO_TCPV6) {
                    return Err(SegmentError::Version);
                }
                Kind::Tcp {
                    ecn: gso_type & GSO_ECN != 0,
                }
            }
            GSO_UDP_L4 => Kind::Udp,
            _ => return Err(SegmentError::GsoType(gso_type)),
        };
        if size == 0 {
            return Err(SegmentError::ZeroSize);
        }
        // The transport header starts right after the IP header (and, in IPv6, its
        // extension headers, which csum_start skips).
        let ip_len = csum_start;
        let fixed = if v6 { 40 } else { 20 };
        if len < fixed {
            return Err(SegmentError::Truncated);
        }
        let ip_ok = if v6 {
            ip_len >= fixed
        } else {
            ip_len == usize::from(packet[0] & 0x0f) * 4 && ip_len >= fixed
        };
        if !ip_ok {
            return Err(SegmentError::Checksum);
        }
        // (checksum offset, header length, least header length): a TCP header says its
        // length, from 20 bytes (data offset 5) up.
        let (checksum_offset, transport_len, least) = match kind {
            Kind::Tcp { .. } => {
                let offset = packet.get(ip_len + 12).ok_or(SegmentError::Truncated)?;
                (16, usize::from(offset >> 4) * 4, 20)
            }
            _ => (6, 8, 8),
        };
        if csum_offset != checksum_offset || transport_len < least {
            return Err(SegmentError::Checksum);
        }
        let hdr_len = ip_len + transport_len;
        if hdr_len > len {
            return Err(SegmentError::Truncated);
        }
        let segments = Self {
            kind,
            len,
            ip_len,
            hdr_len,
            size,
            v6,
        };
        // The first segment is the longest; its lengths must fit their fields.
        let first = hdr_len + segments.range(0).len();
        let ip_field = if v6 { first - 40 } else { first };
        if u16::try_from(ip_field).is_err() || u16::try_from(first - ip_len).is_err() {
            return Err(SegmentError::TooLong);
        }
        Ok(segments)
    }

    /// A packet that goes as it came.
    fn plain(len: usize) -> Self {
        Self {
            kind: Kind::Plain,
            len,
            ip_len: 0,
            hdr_len: len,
            size: len.max(1),
            v6: false,
        }
    }

    /// How many packets it makes (at least one: headers alone make one).
    pub fn count(&self) -> usize {
        (self.len - self.hdr_len).div_ceil(self.size).max(1)
    }

    /// Where segment `i`'s payload is in the super-packet.
    fn range(&self, i: usize) -> Range<usize> {
        let start = self.hdr_len + i * self.size;
        start..(start + self.size).min(self.len)
    }

    /// Makes the super-packet in `packet` (as long as [`Segments::parse`] saw it)
    /// its own first segment, in place; returns that segment's length. Every other
    /// segment must have been written out first: this rewrites the headers they copy.
    pub fn first_in_place(&self, packet: &mut [u8]) -> usize {
        let len = self.range(0).end;
        self.finish(&mut packet[..len], 0);
        len
    }

    /// The IP and transport headers' length, which every segment starts with.
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    /// Makes segment `i` in place inside the super-packet `packet` (as long as
    /// [`Segments::parse`] saw it), its headers (`headers`, the super-packet's as
    /// read) written right before its payload; returns the segment's range. Made in
    /// order, from the first: a segment's headers overwrite the end of the payloads
    /// before it (the first's, the super-packet's own headers), which must be done with.
    pub fn place(&self, packet: &mut [u8], i: usize, headers: &[u8]) -> Range<usize> {
        let payload = self.range(i);
        let start = payload.start - self.hdr_len;
        packet[start..payload.start].copy_from_slice(headers);
        self.finish(&mut packet[start..payload.end], i);
        start..payload.end
    }

    /// Writes segment `i` of `packet` to the start of `out`; returns its length.
    /// `out` must hold the first segment's length (that of any segment).
    pub fn write(&self, packet: &[u8], i: usize, out: &mut [u8]) -> usize {
        let payload = self.range(i);
        let len = self.hdr_len + payload.len();
        out[..self.hdr_len].copy_from_slice(&packet[..self.hdr_len]);
        out[self.hdr_len..len].copy_from_slice(&packet[payload]);
        self.finish(&mut out[..len], i);
        len
    }

    /// Sets segment `i`'s header fields (in `seg`, its headers and payload, whose
    /// headers are still the super-packet's) and completes its checksum.
    fn finish(&self, seg: &mut [u8], i: usize) {
        let (l4, len) = (self.ip_len, seg.len());
        let (at, protocol) = match self.kind {
            Kind::Plain => return,
            Kind::Complete { start, at } => {
                let partial = u16::from_be_bytes([seg[at], seg[at + 1]]);
                seg[at..at + 2].fill(0);
                let sum = !checksum(&seg[start..], u64::from(partial));
                seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
                return;
            }
            Kind::Tcp { ecn } => {
                let seq = u32::from_be_bytes([seg[l4 + 4], seg[l4 + 5], seg[l4 + 6], seg[l4 + 7]])
                    .wrapping_add((i * self.size) as u32);
                seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                if i + 1 < self.count() {
                    seg[l4 + 13] &= !(TCP_FIN | TCP_PSH);
                }
                if ecn && i > 0 {
                    seg[l4 + 13] &= !TCP_CWR;
                }
                (l4 + TCP_CSUM_OFFSET, PROTO_TCP)
            }
            Kind::Udp => {
                seg[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
                (l4 + UDP_CSUM_OFFSET, PROTO_UDP)
            }
        };
        let addrs = if self.v6 {
            seg[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            8..40
        } else {
            let id = u16::from_be_bytes([seg[4], seg[5]]).wrapping_add(i as u16);
            seg[4..6].copy_from_slice(&id.to_be_bytes());
            seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            set_ipv4_header_checksum(&mut seg[..l4]);
            12..20
        };
        let pseudo = pseudo_header_sum(&seg[addrs], protocol, (len - l4) as u16);
        seg[at..at + 2].fill(0);
        let mut sum = !checksum(&seg[l4..], pseudo);
        if protocol == PROTO_UDP && sum == 0 {
            // UDP sends "no checksum" as zero, a computed zero as all ones.
            sum = 0xffff;
        }
        seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Writes an IPv4 header's checksum (of `header`, the whole header, options too).
pub(super) fn set_ipv4_header_checksum(header: &mut [u8]) {
    header[10..12].fill(0);
    let sum = !checksum(header, 0);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// The ones' complement sum, not folded, of a TCP or UDP pseudo-header: the
/// `addresses` (source and destination, as they stand in the IP header), the
/// protocol and the transport length.
pub(super) fn pseudo_header_sum(addresses: &[u8], protocol: u8, len: u16) -> u64 {
    checksum_no_fold(addresses, u64::from(protocol) + u64::from(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpHeaders, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, TcpHeader, TcpOptionElement,
    };
    use proptest::prelude::*;

    const V4: ([u8; 4], [u8; 4]) = ([10, 1, 0, 2], [10, 2, 0, 5]);
    const V6: ([u8; 16], [u8; 16]) = (
        [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
    );

    fn vnet(
        gso_type: u8,
        hdr_len: u16,
        size: u16,
        start: u16,
        offset: u16,
    ) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut h = [0; VIRTIO_NET_HDR_LEN];
        h[0] = F_NEEDS_CSUM;
        h[1] = gso_type;
        for (at, v) in [(2, hdr_len), (4, size), (6, start), (8, offset)] {
            h[at..at + 2].copy_from_slice(&v.to_ne_bytes());
        }
        h
    }

    fn ip(v6: bool, id: u16, protocol: IpNumber) -> IpHeaders {
        if v6 {
            let h = Ipv6Header {
                hop_limit: 64,
                source: V6.0,
                destination: V6.1,
                next_header: protocol,
                ..Default::default()
            };
            IpHeaders::Ipv6(h, Default::default())
        } else {
            let mut h = Ipv4Header::new(0, 64, protocol, V4.0, V4.1).unwrap();
            h.identification = id;
            h.dont_fragment = true;
            IpHeaders::Ipv4(h, Default::default())
        }
    }

    fn tcp(seq: u32, last: bool, first: bool) -> TcpHeader {
        let mut t = TcpHeader::new(40000, 5201, seq, 512);
        t.acknowledgment_number = 77;
        t.ack = true;
        (t.psh, t.fin, t.cwr) = (last, last, first);
        t.set_options(&[TcpOptionElement::Timestamp(1, 2)]).unwrap();
        t
    }

    /// A packet as etherparse builds it, checksums and lengths included.
    fn build(ip: IpHeaders, transport: Option<TcpHeader>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let b = PacketBuilder::ip(ip);
        match transport {
            Some(t) => b.tcp_header(t).write(&mut out, payload),
            None => b.udp(5000, 53).write(&mut out, payload),
        }
        .unwrap();
        out
    }

    /// Every segment, written out; also checks that making them in place inside the
    /// super-packet, one after the other, and the first alone, give the same bytes.
    fn split(vnet: &[u8; VIRTIO_NET_HDR_LEN], packet: &[u8]) -> Result<Vec<Vec<u8>>, SegmentError> {
        let s = Segments::parse(vnet, packet)?;
        let written: Vec<Vec<u8>> = (0..s.count())
            .map(|i| {
                let mut out = vec![0xee; packet.len()];
                let len = s.write(packet, i, &mut out);
                out.truncate(len);
                out
            })
            .collect();
        let (headers, mut placed) = (packet[..s.header_len()].to_vec(), packet.to_vec());
        for (i, segment) in written.iter().enumerate() {
            let range = s.place(&mut placed, i, &headers);
            assert_eq!(
                &placed[range], segment,
                "segment {i} in place and written out"
            );
        }
        let mut first = packet.to_vec();
        let len = s.first_in_place(&mut first);
        assert_eq!(first[..len], written[0], "the first segment alone in place");
        Ok(written)
    }

    /// A super-packet of `payload` bytes in segments of `mss`, and what the kernel
    /// would have sent instead, built independently.
    fn tso(
        v6: bool,
        payload: usize,
        mss: usize,
        ecn: bool,
    ) -> ([u8; VIRTIO_NET_HDR_LEN], Vec<u8>, Vec<Vec<u8>>) {
        let data: Vec<u8> = (0..payload).map(|i| (i * 7 + i / 251) as u8).collect();
        let packet = build(
            ip(v6, 0xfff0, IpNumber::TCP),
            Some(tcp(0xffff_f000, true, true)),
            &data,
        );
        let ip_len = if v6 { 40 } else { 20 };
        let n = payload.div_ceil(mss).max(1);
        let expected = (0..n)
            .map(|i| {
                let chunk = &data[(i * mss).min(payload)..((i + 1) * mss).min(payload)];
                let seq = 0xffff_f000u32.wrapping_add((i * mss) as u32);
                let id = 0xfff0u16.wrapping_add(i as u16);
                let t = tcp(seq, i + 1 == n, i == 0 || !ecn);
                build(ip(v6, id, IpNumber::TCP), Some(t), chunk)
            })
            .collect();
        let gso = match (v6, ecn) {
            (false, false) => GSO_TCPV4,
            (true, false) => GSO_TCPV6,
            (false, true) => GSO_TCPV4 | GSO_ECN,
            (true, true) => GSO_TCPV6 | GSO_ECN,
        };
        // hdr_len as the forwarding path leaves it: the first packet's whole length.
        let h = vnet(
            gso,
            (ip_len + 32 + mss) as u16,
            mss as u16,
            ip_len as u16,
            16,
        );
        (h, packet, expected)
    }

    #[test]
    fn tcp_super_packets_split_as_the_kernel_would() {
        for v6 in [false, true] {
            for (payload, mss) in [
                (65_000, 1388),
                (1388 * 5, 1388),
                (100, 1388),
                (0, 1388),
                (3000, 1),
            ] {
                let (h, packet, expected) = tso(v6, payload, mss, false);
                assert_eq!(
                    split(&h, &packet).unwrap(),
                    expected,
                    "v6 {v6} {payload}/{mss}"
                );
            }
        }
    }

    #[test]
    fn with_ecn_only_the_first_tcp_segment_keeps_cwr() {
        for v6 in [false, true] {
            let (h, packet, expected) = tso(v6, 5000, 1400, true);
            assert_eq!(split(&h, &packet).unwrap(), expected);
        }
    }

    #[test]
    fn udp_super_packets_split_into_datagrams_with_their_own_lengths() {
        for v6 in [false, true] {
            let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
            let packet = build(ip(v6, 9, IpNumber::UDP), None, &data);
            let ip_len = if v6 { 40 } else { 20 };
            let h = vnet(GSO_UDP_L4, 0, 1200, ip_len, 6);
            let expected: Vec<Vec<u8>> = data
                .chunks(1200)
                .enumerate()
                .map(|(i, c)| build(ip(v6, 9 + i as u16, IpNumber::UDP), None, c))
                .collect();
            assert_eq!(split(&h, &packet).unwrap(), expected, "v6 {v6}");
        }
    }

    #[test]
    fn a_udp_checksum_of_zero_goes_as_all_ones() {
        // Payload chosen so that the datagram's sum comes to zero.
        let mut data = [0u8; 2];
        let probe = build(ip(false, 0, IpNumber::UDP), None, &data);
        let sum = u16::from_be_bytes([probe[26], probe[27]]);
        data.copy_from_slice(&sum.to_be_bytes());
        let packet = build(ip(false, 0, IpNumber::UDP), None, &data);
        let h = vnet(GSO_UDP_L4, 28, 100, 20, 6);
        let got = split(&h, &packet).unwrap();
        assert_eq!(&got[0][26..28], &[0xff, 0xff]);
        assert_eq!(got[0], packet, "etherparse sends it the same way");
    }

    #[test]
    fn a_single_packet_gets_its_checksum_completed() {
        let data = [5u8; 333];
        let packet = build(ip(true, 0, IpNumber::TCP), Some(tcp(1, true, false)), &data);
        // As the kernel hands it over: the field holds the pseudo-header's sum.
        let mut partial = packet.clone();
        let l4_len = (packet.len() - 40) as u64;
        let pseudo = !checksum(&packet[8..40], (6 << 16) + l4_len);
        partial[56..58].copy_from_slice(&(!pseudo).to_be_bytes());
        let h = vnet(GSO_NONE, 0, 0, 40, 16);
        assert_eq!(split(&h, &partial).unwrap(), [packet]);
        // Without NEEDS_CSUM the packet goes untouched.
        let mut plain = h;
        plain[0] = 0;
        assert_eq!(split(&plain, &partial).unwrap(), [partial]);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let (h, packet, _) = tso(false, 5000, 1400, false);
        let with = |at: usize, v: u16| {
            let mut h = h;
            h[at..at + 2].copy_from_slice(&v.to_ne_bytes());
            Segments::parse(&h, &packet)
        };
        assert_eq!(with(4, 0), Err(SegmentError::ZeroSize));
        assert_eq!(
            with(6, 24),
            Err(SegmentError::Checksum),
            "csum_start past the IP header"
        );
        assert_eq!(with(6, 60_000), Err(SegmentError::Checksum));
        assert_eq!(
            with(8, 6),
            Err(SegmentError::Checksum),
            "not TCP's checksum"
        );
        // hdr_len is not trusted, so nothing it says is refused.
        assert!(with(2, 0).is_ok() && with(2, u16::MAX).is_ok());
        let typed = |t: u8| {
            let mut h = h;
            h[1] = t;
            Segments::parse(&h, &packet)
        };
        assert_eq!(typed(GSO_TCPV6), Err(SegmentError::Version));
        assert_eq!(typed(3), Err(SegmentError::GsoType(3)), "UFO");
        assert_eq!(
            typed(GSO_UDP_L4 | GSO_ECN),
            Err(SegmentError::GsoType(0x85))
        );
        assert_eq!(typed(0x42), Err(SegmentError::GsoType(0x42)));
        assert_eq!(
            typed(GSO_ECN),
            Err(SegmentError::GsoType(0x80)),
            "ECN without TCP"
        );
        assert_eq!(
            Segments::parse(&h, &packet[..30]),
            Err(SegmentError::Truncated)
        );
        assert_eq!(Segments::parse(&h, &[]), Err(SegmentError::Version));
        let mut none = vnet(GSO_NONE, 0, 0, 20, 16);
        none[6..8].copy_from_slice(&(packet.len() as u16).to_ne_bytes());
        assert_eq!(Segments::parse(&none, &packet), Err(SegmentError::Checksum));
        // A TCP data offset under 5 words.
        let mut short = packet.clone();
        short[32] = 0x40;
        assert_eq!(Segments::parse(&h, &short), Err(SegmentError::Checksum));
    }

    proptest! {
        /// Whatever the header and bytes, parsing and writing every segment neither
        /// panics nor loses or invents payload.
        #[test]
        fn any_header_on_any_packet_is_segmented_or_refused(
            h in any::<[u8; VIRTIO_NET_HDR_LEN]>(),
            gso in prop::sample::select(vec![GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, 0x81, 0x85]),
            version in prop::sample::select(vec![0x45u8, 0x46, 0x60, 0x44, 0x15]),
            mut packet in prop::collection::vec(any::<u8>(), 0..3000),
        ) {
            let mut h = h;
            h[1] = gso;
            if let Some(b) = packet.first_mut() {
                *b = version;
            }
            if let Ok(s) = Segments::parse(&h, &packet) {
                let mut out = vec![0; packet.len()];
                let mut payload = 0;
                for i in 0..s.count() {
                    payload += s.write(&packet, i, &mut out) - s.hdr_len;
                }
                prop_assert_eq!(payload, packet.len() - s.hdr_len);
                let (headers, mut placed) = (packet[..s.hdr_len].to_vec(), packet.clone());
                for i in 0..s.count() {
                    let len = s.write(&packet, i, &mut out);
                    let range = s.place(&mut placed, i, &headers);
                    prop_assert_eq!(&placed[range], &out[..len]);
                }
                s.first_in_place(&mut packet);
            }
        }

        /// Real super-packets of any size and MSS split as the kernel would.
        #[test]
        fn any_tcp_super_packet_splits_as_the_kernel_would(
            v6 in any::<bool>(), ecn in any::<bool>(), payload in 0usize..20_000, mss in 1usize..3000,
        ) {
            let (h, packet, expected) = tso(v6, payload, mss, ecn);
            prop_assert_eq!(split(&h, &packet).unwrap(), expected);
        }
    }
}
