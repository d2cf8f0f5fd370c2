//! Receive coalescing for the TUN: the inner packets opened from one batch of ESP
//! datagrams, grouped by TCP or UDP flow, with the segments that follow each other
//! written as one super-packet (what the kernel's GRO builds) behind a virtio-net
//! header that tells the kernel how to segment it again.
//!
//! Nothing is copied: a group is written with one writev of the header, its first
//! packet (whose IP and TCP headers are rewritten in place for the whole group) and
//! the payload of each later segment where it was opened. The rules are the
//! kernel's `tcp_gro_receive` and `inet_gro_receive`: same addresses and ports,
//! TOS/traffic class, TTL/hop limit, DF, ACK, window and options; consecutive IPv4
//! IDs and sequence numbers; only ACK and PSH set, PSH ending a group; no IP options,
//! extension headers or fragments; all segments as long as the first but the last,
//! which may be shorter and then ends the group; at most 64 KiB. UDP datagrams of a
//! flow are coalesced by the same IP and size rules (UDP GSO, as tun-rs did before;
//! a zero UDP checksum, which segmentation would fill in, is left alone). A group is marked
//! NEEDS_CSUM, so the receiving stack trusts it: each segment's checksum is checked
//! before it joins one, and a segment that fails is written alone, for the stack
//! to drop as it would have.

use super::segment::{
    F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, PROTO_TCP, PROTO_UDP, TCP_CSUM_OFFSET, TCP_PSH,
    UDP_CSUM_OFFSET, pseudo_header_sum, set_ipv4_header_checksum,
};
use tun_rs::{VIRTIO_NET_HDR_LEN, checksum};

/// A virtio-net header for a packet that needs nothing done (no GSO, checksum as is).
pub(super) const VNET_HDR_NONE: [u8; VIRTIO_NET_HDR_LEN] = [0; VIRTIO_NET_HDR_LEN];

const TCP_ACK: u8 = 0x10;
/// No further member (a group's last packet).
const END: u16 = u16::MAX;

/// One write to the TUN: a packet alone, or a group of segments coalesced.
#[derive(Clone, Copy, Debug)]
pub(super) struct Write {
    /// The first packet's index, whose buffer holds the headers.
    pub first: u16,
    /// How many packets the write carries.
    pub count: u16,
    last: u16,
    group: Option<Segments>,
}

/// What a group of TCP segments or UDP datagrams needs to take another and to be written.
#[derive(Clone, Copy, Debug)]
struct Segments {
    v6: bool,
    proto: u8,
    /// IP header length, where TCP or UDP starts.
    iph: u16,
    /// IP and TCP or UDP header length, where the payload starts.
    hdr_len: u16,
    /// The first segment's payload length, which the others may not exceed.
    gso_size: u16,
    /// The IP length of the whole group.
    total: u32,
    /// The sequence number a TCP segment must have to join.
    next_seq: u32,
    /// The last segment has PSH, so it is the group's last too.
    psh: bool,
    /// The first segment's checksum was checked (only once another wants to join).
    verified: bool,
    /// Nothing more may join.
    closed: bool,
}

/// A TCP segment or UDP datagram that could join a group, as parsed from its packet.
struct Segment {
    v6: bool,
    proto: u8,
    iph: u16,
    hdr_len: u16,
    seq: u32,
    payload: u16,
    psh: bool,
}

/// Plans the writes of one batch; keeps its storage from batch to batch.
pub(super) struct Coalescer {
    writes: Vec<Write>,
    /// Each packet's next member in its group.
    next: Vec<u16>,
    /// The writes that are groups still open to more segments.
    open: Vec<u16>,
}

impl Coalescer {
    /// Room for batches of up to `batch` packets (no more than `u16::MAX - 1`).
    pub fn new(batch: usize) -> Self {
        Self {
            writes: Vec::with_capacity(batch),
            next: Vec::with_capacity(batch),
            open: Vec::with_capacity(batch),
        }
    }

    /// Groups `packets` (inner IP packets, in the order they came) into writes,
    /// in the order the first packet of each came, which keeps every flow in order.
    pub fn plan(&mut self, packets: &[&[u8]]) {
        self.writes.clear();
        self.open.clear();
        self.next.clear();
        for (i, &packet) in packets.iter().enumerate().take(usize::from(END)) {
            // `take` bounds the index to fit a u16.
            let i = i as u16;
            self.next.push(END);
            let Some(segment) = parse(packet) else {
                self.push(i, None);
                continue;
            };
            match self.join(packets, i, &segment) {
                Joined::Yes => {}
                Joined::Alone => self.push(i, None),
                Joined::No => {
                    let group = Segments {
                        v6: segment.v6,
                        proto: segment.proto,
                        iph: segment.iph,
                        hdr_len: segment.hdr_len,
                        gso_size: segment.payload,
                        total: u32::from(segment.hdr_len) + u32::from(segment.payload),
                        next_seq: segment.seq.wrapping_add(u32::from(segment.payload)),
                        psh: segment.psh,
                        verified: false,
                        closed: segment.psh,
                    };
                    if !group.closed {
                        self.open.push(self.writes.len() as u16);
                    }
                    self.push(i, Some(group));
                }
            }
        }
    }

    /// The writes `plan` made, in order.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// The packets of `write`, first to last.
    pub fn members(&self, write: &Write) -> impl Iterator<Item = usize> + '_ {
        let mut at = write.first;
        std::iter::from_fn(move || {
            let i = at;
            (i != END).then(|| {
                at = self.next[usize::from(i)];
                usize::from(i)
            })
        })
    }

    fn push(&mut self, i: u16, group: Option<Segments>) {
        self.writes.push(Write {
            first: i,
            count: 1,
            last: i,
            group,
        });
    }

    /// Adds segment `i` to the open group of its flow if it may join; a group it
    /// finds but cannot join is closed, as `i` comes after it in the flow.
    fn join(&mut self, packets: &[&[u8]], i: u16, segment: &Segment) -> Joined {
        let packet = packets[usize::from(i)];
        let Some(at) = self.open.iter().rposition(|&w| {
            let w = &self.writes[usize::from(w)];
            let g = w.group.as_ref().expect("open writes are groups");
            g.v6 == segment.v6
                && g.proto == segment.proto
                && same_flow(packets[usize::from(w.first)], packet, segment)
        }) else {
            return Joined::No;
        };
        let w = usize::from(self.open[at]);
        let write = self.writes[w];
        let first = packets[usize::from(write.first)];
        let mut group = write.group.expect("open writes are groups");
        let fits = group.total + u32::from(segment.payload) <= 65_535
            && (segment.proto == PROTO_UDP || segment.seq == group.next_seq)
            && segment.payload <= group.gso_size
            && may_follow(first, packet, segment, write.count);
        if !fits {
            self.close(at);
            return Joined::No;
        }
        if !group.verified {
            if !checksum_valid(first, segment) {
                self.close(at);
                return Joined::No;
            }
            group.verified = true;
        }
        if !checksum_valid(packet, segment) {
            self.writes[w].group = Some(group);
            self.close(at);
            return Joined::Alone;
        }
        group.total += u32::from(segment.payload);
        group.next_seq = segment.seq.wrapping_add(u32::from(segment.payload));
        group.psh = segment.psh;
        group.closed = segment.psh || segment.payload < group.gso_size;
        self.next[usize::from(write.last)] = i;
        self.writes[w] = Write {
            count: write.count + 1,
            last: i,
            group: Some(group),
            ..write
        };
        if group.closed {
            self.open.remove(at);
        }
        Joined::Yes
    }

    fn close(&mut self, at: usize) {
        let w = usize::from(self.open.remove(at));
        if let Some(g) = self.writes[w].group.as_mut() {
            g.closed = true;
        }
    }
}

enum Joined {
    Yes,
    /// It failed its checksum: written by itself.
    Alone,
    /// It starts a group of its own.
    No,
}

impl Write {
    /// Rewrites the headers in `first` (the write's first packet) for the whole
    /// group and returns the virtio-net header to write in front of it; a packet
    /// alone is left as it is, with a header that asks for nothing.
    pub fn finish(&self, first: &mut [u8]) -> [u8; VIRTIO_NET_HDR_LEN] {
        let Some(g) = self.group.filter(|_| self.count > 1) else {
            return VNET_HDR_NONE;
        };
        let iph = usize::from(g.iph);
        // At most 65 535 (a condition of joining).
        let total = g.total as u16;
        let addresses = if g.v6 {
            first[4..6].copy_from_slice(&(total - g.iph).to_be_bytes());
            8..40
        } else {
            first[2..4].copy_from_slice(&total.to_be_bytes());
            set_ipv4_header_checksum(&mut first[..iph]);
            12..20
        };
        let (gso_type, csum_offset) = match (g.proto, g.v6) {
            (PROTO_UDP, _) => {
                first[iph + 4..iph + 6].copy_from_slice(&(total - g.iph).to_be_bytes());
                (GSO_UDP_L4, UDP_CSUM_OFFSET)
            }
            (_, v6) => {
                if g.psh {
                    first[iph + 13] |= TCP_PSH;
                }
                let gso = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
                (gso, TCP_CSUM_OFFSET)
            }
        };
        // The kernel adds the transport header and payload to this when it segments.
        let pseudo = pseudo_header_sum(&first[addresses], g.proto, total - g.iph);
        let csum = iph + csum_offset;
        first[csum..csum + 2].copy_from_slice(&checksum(&[], pseudo).to_be_bytes());
        let mut hdr = [0; VIRTIO_NET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = gso_type;
        hdr[2..4].copy_from_slice(&g.hdr_len.to_le_bytes());
        hdr[4..6].copy_from_slice(&g.gso_size.to_le_bytes());
        hdr[6..8].copy_from_slice(&g.iph.to_le_bytes());
        hdr[8..10].copy_from_slice(&(csum_offset as u16).to_le_bytes());
        hdr
    }

    /// Where the payload starts in each packet after the first.
    pub fn payload_start(&self) -> usize {
        self.group.map_or(0, |g| usize::from(g.hdr_len))
    }
}

/// The segment in `packet` if it is TCP or UDP that may be coalesced: IPv4 without
/// options or fragmentation, or IPv6 without extension headers; some payload;
/// lengths that agree with the packet's; for TCP only ACK and PSH set, for UDP a
/// checksum.
fn parse(packet: &[u8]) -> Option<Segment> {
    let (v6, iph, proto) = match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            // IHL 5, no MF, no offset, the reserved bit clear.
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0xbfff;
            (packet[0] == 0x45 && total == packet.len() && fragment == 0)
                .then_some((false, 20, packet[9]))?
        }
        6 if packet.len() >= 40 => {
            let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            (payload + 40 == packet.len()).then_some((true, 40, packet[6]))?
        }
        _ => return None,
    };
    let (hdr_len, seq, psh) = match proto {
        PROTO_TCP => {
            let tcp = packet.get(iph..iph + 20)?;
            let doff = usize::from(tcp[12] >> 4) * 4;
            // No reserved or AE bits, and of the flags only ACK, with PSH or not.
            let flags_ok = tcp[12] & 0x0f == 0 && tcp[13] & !TCP_PSH == TCP_ACK;
            if doff < 20 || !flags_ok {
                return None;
            }
            let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            (iph + doff, seq, tcp[13] & TCP_PSH != 0)
        }
        PROTO_UDP => {
            let udp = packet.get(iph..iph + 8)?;
            let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            if len != packet.len() - iph || udp[6..8] == [0, 0] {
                return None;
            }
            (iph + 8, 0, false)
        }
        _ => return None,
    };
    if hdr_len >= packet.len() {
        return None;
    }
    Some(Segment {
        v6,
        proto,
        iph: iph as u16,
        hdr_len: hdr_len as u16,
        seq,
        // Less than 65 536: the packet's length is its IP length.
        payload: (packet.len() - hdr_len) as u16,
        psh,
    })
}

/// Whether `packet` (parsed as `segment`) is of the flow of `first`, a packet of
/// the same IP version.
fn same_flow(first: &[u8], packet: &[u8], segment: &Segment) -> bool {
    let iph = usize::from(segment.iph);
    let addresses = if segment.v6 { 8..40 } else { 12..20 };
    first.get(iph..iph + 4) == Some(&packet[iph..iph + 4])
        && first[addresses.clone()] == packet[addresses]
}

/// Whether `packet` may follow the `count` segments of `first`'s group as far as
/// the headers say (the group checks sequence and sizes): equal IP fields that
/// segmentation copies, the next IPv4 ID, for TCP an equal header but for
/// sequence, checksum and PSH.
fn may_follow(first: &[u8], packet: &[u8], segment: &Segment, count: u16) -> bool {
    let iph = usize::from(segment.iph);
    let ip_ok = if segment.v6 {
        // Version, traffic class, flow label; hop limit.
        first[..4] == packet[..4] && first[7] == packet[7]
    } else {
        let id = |p: &[u8]| u16::from_be_bytes([p[4], p[5]]);
        first[1] == packet[1]
            && first[6] & 0x40 == packet[6] & 0x40
            && first[8] == packet[8]
            && id(packet) == id(first).wrapping_add(count)
    };
    if segment.proto == PROTO_UDP {
        return ip_ok;
    }
    let hdr_len = usize::from(segment.hdr_len);
    ip_ok
        && first.len() > hdr_len
        && first[iph + 12] == packet[iph + 12]
        // ACK number.
        && first[iph + 8..iph + 12] == packet[iph + 8..iph + 12]
        // Window.
        && first[iph + 14..iph + 16] == packet[iph + 14..iph + 16]
        // Urgent pointer and options.
        && first[iph + 18..hdr_len] == packet[iph + 18..hdr_len]
}

/// Whether the TCP or UDP checksum of `packet` (parsed as `segment`, or of its
/// flow) is right.
fn checksum_valid(packet: &[u8], segment: &Segment) -> bool {
    let iph = usize::from(segment.iph);
    let addresses = if segment.v6 { 8..40 } else { 12..20 };
    // Less than 65 536: the packet's length is its IP length.
    let len = (packet.len() - iph) as u16;
    let pseudo = pseudo_header_sum(&packet[addresses], segment.proto, len);
    checksum(&packet[iph..], pseudo) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpDscp, IpEcn, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader,
        TcpOptionElement, UdpHeader,
    };
    use proptest::prelude::*;

    /// A TCP segment to build, alice's host to bob's; each test changes a field.
    #[derive(Clone)]
    struct Seg {
        v6: bool,
        sport: u16,
        seq: u32,
        id: u16,
        len: usize,
        psh: bool,
        ack: u32,
        window: u16,
        ttl: u8,
        tos: u8,
        df: bool,
        ts: u32,
        tcp_edit: fn(&mut TcpHeader),
        ip_edit: fn(&mut Ipv4Header),
    }

    impl Seg {
        fn new(v6: bool, seq: u32, len: usize) -> Self {
            Seg {
                v6,
                sport: 40_000,
                seq,
                id: 0x1000,
                len,
                psh: false,
                ack: 77,
                window: 500,
                ttl: 63,
                tos: 0,
                df: true,
                ts: 1,
                tcp_edit: |_| {},
                ip_edit: |_| {},
            }
        }

        /// The segment after this one, of `len` bytes.
        fn next(&self, len: usize) -> Self {
            Seg {
                seq: self.seq.wrapping_add(self.len as u32),
                id: self.id.wrapping_add(1),
                len,
                ..self.clone()
            }
        }

        fn build(&self) -> Vec<u8> {
            // Bytes that follow the stream, so that coalesced payloads stay in order.
            let payload: Vec<u8> = (0..self.len)
                .map(|i| (self.seq.wrapping_add(i as u32) % 251) as u8)
                .collect();
            let mut tcp = TcpHeader::new(self.sport, 5201, self.seq, self.window);
            tcp.ack = true;
            tcp.acknowledgment_number = self.ack;
            tcp.psh = self.psh;
            tcp.set_options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(self.ts, 9),
            ])
            .unwrap();
            (self.tcp_edit)(&mut tcp);
            let tcp_len = (tcp.header_len() + payload.len()) as u16;
            let mut out = Vec::new();
            if self.v6 {
                let ip = Ipv6Header {
                    traffic_class: self.tos,
                    flow_label: Ipv6FlowLabel::try_new(0x1_2345).unwrap(),
                    payload_length: tcp_len,
                    next_header: IpNumber::TCP,
                    hop_limit: self.ttl,
                    source: [0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                    destination: [0xfd, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                };
                tcp.checksum = tcp.calc_checksum_ipv6(&ip, &payload).unwrap();
                out.extend_from_slice(&ip.to_bytes());
            } else {
                let mut ip = Ipv4Header::new(
                    tcp_len,
                    self.ttl,
                    IpNumber::TCP,
                    [10, 1, 0, 2],
                    [10, 2, 0, 2],
                )
                .unwrap();
                ip.identification = self.id;
                ip.dont_fragment = self.df;
                ip.dscp = IpDscp::try_new(self.tos >> 2).unwrap();
                ip.ecn = IpEcn::try_new(self.tos & 3).unwrap();
                (self.ip_edit)(&mut ip);
                ip.header_checksum = ip.calc_header_checksum();
                tcp.checksum = tcp.calc_checksum_ipv4(&ip, &payload).unwrap();
                out.extend_from_slice(&ip.to_bytes());
            }
            out.extend_from_slice(&tcp.to_bytes());
            out.extend_from_slice(&payload);
            out
        }
    }

    /// A run of `lens.len()` segments of one flow, the last with PSH.
    fn run(v6: bool, lens: &[usize]) -> Vec<Seg> {
        let mut segs = vec![Seg::new(v6, 0xffff_f000, lens[0])];
        for &len in &lens[1..] {
            let next = segs.last().unwrap().next(len);
            segs.push(next);
        }
        segs.last_mut().unwrap().psh = true;
        segs
    }

    /// What the TUN would be handed: each write's virtio-net header and its bytes.
    fn writes(packets: &mut [Vec<u8>]) -> Vec<([u8; VIRTIO_NET_HDR_LEN], Vec<u8>)> {
        let mut c = Coalescer::new(packets.len());
        c.plan(&packets.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let mut out = Vec::new();
        for w in c.writes() {
            let hdr = w.finish(&mut packets[usize::from(w.first)]);
            let mut bytes = packets[usize::from(w.first)].clone();
            for k in c.members(w).skip(1) {
                bytes.extend_from_slice(&packets[k][w.payload_start()..]);
            }
            assert_eq!(c.members(w).count(), usize::from(w.count));
            out.push((hdr, bytes));
        }
        out
    }

    /// RFC 1071 the plain way: 16-bit words with end-around carry.
    fn naive_sum(data: &[u8], mut acc: u32) -> u16 {
        for w in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            acc = (acc & 0xffff) + (acc >> 16);
        }
        ((acc & 0xffff) + (acc >> 16)) as u16
    }

    /// What the kernel makes of a write: the segments of a GSO packet (checking its
    /// header against its bytes), or the packet as it is.
    fn segment(hdr: [u8; VIRTIO_NET_HDR_LEN], packet: &[u8]) -> Vec<Vec<u8>> {
        if hdr == VNET_HDR_NONE {
            return vec![packet.to_vec()];
        }
        if hdr[1] == GSO_UDP_L4 {
            return segment_udp(hdr, packet);
        }
        let le = |i: usize| usize::from(u16::from_le_bytes([hdr[i], hdr[i + 1]]));
        let v6 = packet[0] >> 4 == 6;
        let (iph, gso_type) = if v6 { (40, 4) } else { (20, 1) };
        assert_eq!((hdr[0], hdr[1], le(6), le(8)), (1, gso_type, iph, 16));
        let (gso, hdr_len) = (le(4), le(2));
        // The partial checksum: the pseudo-header's sum with the whole length.
        let addresses = if v6 { &packet[8..40] } else { &packet[12..20] };
        let pseudo = naive_sum(addresses, 6 + (packet.len() - iph) as u32);
        assert_eq!(&packet[iph + 16..iph + 18], &pseudo.to_be_bytes());
        let mut out = Vec::new();
        if v6 {
            let (ip, rest) = Ipv6Header::from_slice(packet).unwrap();
            assert_eq!(usize::from(ip.payload_length), rest.len());
            let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
            assert_eq!(hdr_len, iph + tcp.header_len());
            let chunks = payload.chunks(gso).count();
            for (k, chunk) in payload.chunks(gso).enumerate() {
                let mut ip = ip.clone();
                ip.payload_length = (tcp.header_len() + chunk.len()) as u16;
                let mut tcp = tcp.clone();
                tcp.sequence_number = tcp.sequence_number.wrapping_add((k * gso) as u32);
                tcp.psh &= k + 1 == chunks;
                tcp.checksum = tcp.calc_checksum_ipv6(&ip, chunk).unwrap();
                out.push([&ip.to_bytes()[..], &tcp.to_bytes(), chunk].concat());
            }
        } else {
            let (ip, rest) = Ipv4Header::from_slice(packet).unwrap();
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(usize::from(ip.total_len), packet.len());
            let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
            assert_eq!(hdr_len, iph + tcp.header_len());
            let chunks = payload.chunks(gso).count();
            for (k, chunk) in payload.chunks(gso).enumerate() {
                let mut ip = ip.clone();
                ip.identification = ip.identification.wrapping_add(k as u16);
                ip.set_payload_len(tcp.header_len() + chunk.len()).unwrap();
                ip.header_checksum = ip.calc_header_checksum();
                let mut tcp = tcp.clone();
                tcp.sequence_number = tcp.sequence_number.wrapping_add((k * gso) as u32);
                tcp.psh &= k + 1 == chunks;
                tcp.checksum = tcp.calc_checksum_ipv4(&ip, chunk).unwrap();
                out.push([&ip.to_bytes()[..], &tcp.to_bytes(), chunk].concat());
            }
        }
        out
    }

    /// What the kernel makes of a UDP GSO packet over IPv4.
    fn segment_udp(hdr: [u8; VIRTIO_NET_HDR_LEN], packet: &[u8]) -> Vec<Vec<u8>> {
        let le = |i: usize| usize::from(u16::from_le_bytes([hdr[i], hdr[i + 1]]));
        assert_eq!((hdr[0], le(2), le(6), le(8)), (1, 28, 20, 6));
        let pseudo = naive_sum(&packet[12..20], 17 + (packet.len() - 20) as u32);
        assert_eq!(&packet[26..28], &pseudo.to_be_bytes());
        let (ip, rest) = Ipv4Header::from_slice(packet).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        let (udp, payload) = UdpHeader::from_slice(rest).unwrap();
        assert_eq!(usize::from(udp.length), rest.len());
        let mut out = Vec::new();
        for (k, chunk) in payload.chunks(le(4)).enumerate() {
            let mut ip = ip.clone();
            ip.identification = ip.identification.wrapping_add(k as u16);
            ip.set_payload_len(8 + chunk.len()).unwrap();
            ip.header_checksum = ip.calc_header_checksum();
            let udp =
                UdpHeader::with_ipv4_checksum(udp.source_port, udp.destination_port, &ip, chunk)
                    .unwrap();
            out.push([&ip.to_bytes()[..], &udp.to_bytes(), chunk].concat());
        }
        out
    }

    /// UDP datagrams of a flow, `lens` bytes each, with consecutive IPv4 IDs.
    fn datagrams(lens: &[usize]) -> Vec<Vec<u8>> {
        lens.iter()
            .enumerate()
            .map(|(k, &len)| {
                let payload: Vec<u8> = (0..len).map(|i| (i * 3 + k) as u8).collect();
                let mut ip = Ipv4Header::new(
                    (8 + len) as u16,
                    63,
                    IpNumber::UDP,
                    [10, 1, 0, 2],
                    [10, 2, 0, 2],
                )
                .unwrap();
                ip.identification = 7 + k as u16;
                ip.header_checksum = ip.calc_header_checksum();
                let udp = UdpHeader::with_ipv4_checksum(5000, 5201, &ip, &payload).unwrap();
                [&ip.to_bytes()[..], &udp.to_bytes(), &payload].concat()
            })
            .collect()
    }

    #[test]
    fn a_flows_udp_datagrams_become_one_gso_packet() {
        let original = datagrams(&[1400, 1400, 1400, 900, 1400]);
        let mut packets = original.clone();
        let out = writes(&mut packets);
        assert_eq!(out.len(), 2, "nothing after a shorter datagram");
        let again: Vec<Vec<u8>> = out.iter().flat_map(|(h, p)| segment(*h, p)).collect();
        assert_eq!(again, original);
        // A zero checksum (none computed): segmentation would fill one in.
        let mut packets = datagrams(&[100, 100]);
        for p in &mut packets {
            p[26..28].fill(0);
        }
        assert_eq!(writes(&mut packets).len(), 2);
        // A bad checksum: written alone.
        let mut packets = datagrams(&[100, 100, 100]);
        packets[1][40] ^= 1;
        let out = writes(&mut packets);
        assert_eq!(out.iter().filter(|(h, _)| *h == VNET_HDR_NONE).count(), 3);
    }

    fn built(segs: &[Seg]) -> Vec<Vec<u8>> {
        segs.iter().map(Seg::build).collect()
    }

    /// Coalesces `segs` and checks that segmenting gives them back; returns the
    /// packets per write.
    fn coalesced(segs: &[Seg]) -> Vec<usize> {
        let original = built(segs);
        let mut packets = original.clone();
        let out = writes(&mut packets);
        let again: Vec<Vec<u8>> = out.iter().flat_map(|(h, p)| segment(*h, p)).collect();
        assert_eq!(again, original);
        out.iter()
            .map(|(h, p)| {
                if *h == VNET_HDR_NONE {
                    1
                } else {
                    segment(*h, p).len()
                }
            })
            .collect()
    }

    #[test]
    fn a_flows_segments_become_one_super_packet() {
        for v6 in [false, true] {
            let segs = run(v6, &[1000, 1000, 1000, 1000, 500]);
            assert_eq!(coalesced(&segs), [5]);
            let mut packets = built(&segs);
            let out = writes(&mut packets);
            let (hdr, p) = &out[0];
            let iph = if v6 { 40 } else { 20 };
            // gso_size 1000, hdr_len: IP, TCP and its 12 bytes of options.
            assert_eq!(&hdr[2..6], &[(iph + 32) as u8, 0, 0xe8, 3]);
            assert_eq!(p.len(), iph + 32 + 4500);
            assert_ne!(p[iph + 13] & TCP_PSH, 0, "the last segment's PSH");
        }
    }

    #[test]
    fn segments_join_only_when_everything_but_sequence_and_id_agrees() {
        let a = Seg::new(false, 1, 1000);
        let b = a.next(1000);
        assert_eq!(
            coalesced(&[a.clone(), b.clone()]),
            [2],
            "the pair that joins"
        );
        // b with its TCP or IPv4 header edited.
        let tcp = |tcp_edit: fn(&mut TcpHeader)| Seg {
            tcp_edit,
            ..b.clone()
        };
        let ip = |ip_edit: fn(&mut Ipv4Header)| Seg {
            ip_edit,
            ..b.clone()
        };
        let refusals: Vec<(&str, Seg, Seg)> = vec![
            (
                "sequence gap",
                a.clone(),
                Seg {
                    seq: b.seq + 1,
                    ..b.clone()
                },
            ),
            (
                "ACK",
                a.clone(),
                Seg {
                    ack: 78,
                    ..b.clone()
                },
            ),
            (
                "window",
                a.clone(),
                Seg {
                    window: 501,
                    ..b.clone()
                },
            ),
            ("options", a.clone(), Seg { ts: 2, ..b.clone() }),
            (
                "TTL",
                a.clone(),
                Seg {
                    ttl: 62,
                    ..b.clone()
                },
            ),
            (
                "TOS",
                a.clone(),
                Seg {
                    tos: 1,
                    ..b.clone()
                },
            ),
            (
                "DF",
                a.clone(),
                Seg {
                    df: false,
                    ..b.clone()
                },
            ),
            (
                "IP ID",
                a.clone(),
                Seg {
                    id: b.id + 1,
                    ..b.clone()
                },
            ),
            (
                "port",
                a.clone(),
                Seg {
                    sport: 40_001,
                    ..b.clone()
                },
            ),
            ("longer than the first", a.clone(), a.next(1001)),
            ("after a shorter one", a.next(0).next(0), a.next(0).next(0)),
            (
                "after PSH",
                Seg {
                    psh: true,
                    ..a.clone()
                },
                b.clone(),
            ),
            ("SYN", a.clone(), tcp(|t| t.syn = true)),
            ("FIN", a.clone(), tcp(|t| t.fin = true)),
            ("RST", a.clone(), tcp(|t| t.rst = true)),
            ("URG", a.clone(), tcp(|t| t.urg = true)),
            ("ECE", a.clone(), tcp(|t| t.ece = true)),
            ("CWR", a.clone(), tcp(|t| t.cwr = true)),
            ("no ACK", a.clone(), tcp(|t| t.ack = false)),
            ("no payload", a.clone(), b.next(0)),
            (
                "IP options",
                a.clone(),
                ip(|ip| ip.options = [1, 1, 1, 0].into()),
            ),
            ("fragment", a.clone(), ip(|ip| ip.more_fragments = true)),
            (
                "IPv6 and IPv4",
                a.clone(),
                Seg {
                    v6: true,
                    ..b.clone()
                },
            ),
        ];
        for (why, a, b) in refusals {
            let original = built(&[a, b]);
            let mut packets = original.clone();
            let out = writes(&mut packets);
            assert_eq!(out.len(), 2, "{why}");
            for ((hdr, p), o) in out.iter().zip(&original) {
                assert_eq!((hdr, p), (&VNET_HDR_NONE, o), "{why}: written as it came");
            }
        }
    }

    #[test]
    fn a_segment_with_a_bad_checksum_is_written_alone() {
        for bad in [0, 1, 2] {
            let segs = run(false, &[100, 100, 100, 100]);
            let mut packets = built(&segs);
            // The payload's last byte; the sum no longer matches.
            *packets[bad].last_mut().unwrap() ^= 0x40;
            let corrupt = packets[bad].clone();
            let out = writes(&mut packets);
            let alone: Vec<_> = out.iter().filter(|(_, p)| *p == corrupt).collect();
            assert_eq!(alone.len(), 1, "corrupt {bad}");
            assert_eq!(
                alone[0].0, VNET_HDR_NONE,
                "corrupt {bad}: left for the stack to drop"
            );
            let all: Vec<Vec<u8>> = out.iter().flat_map(|(h, p)| segment(*h, p)).collect();
            assert_eq!(all.len(), 4, "corrupt {bad}: all there, in order");
            assert_eq!(all[bad], corrupt);
        }
    }

    #[test]
    fn ipv6_extension_headers_and_groups_past_64_kib_are_refused() {
        let mut packets = built(&run(true, &[100, 100]));
        for p in &mut packets {
            // A hop-by-hop header (PadN) in front of TCP: not coalesced, however valid.
            p.splice(40..40, [6, 0, 1, 4, 0, 0, 0, 0]);
            p[6] = 0;
            let len = u16::from_be_bytes([p[4], p[5]]) + 8;
            p[4..6].copy_from_slice(&len.to_be_bytes());
        }
        assert_eq!(writes(&mut packets).len(), 2);
        // 65 535 bytes of IP at most: 20 + 32 + 13 × 5000 = 65 052, one more is too many.
        assert_eq!(coalesced(&run(false, &[5000; 14])), [13, 1]);
    }

    #[test]
    fn out_of_order_segments_keep_their_order() {
        let segs = run(false, &[100; 5]);
        let order = |o: &[usize]| o.iter().map(|&i| segs[i].clone()).collect::<Vec<_>>();
        assert_eq!(coalesced(&order(&[0, 2, 1, 3, 4])), [1, 1, 1, 2]);
        assert_eq!(coalesced(&order(&[0, 1, 3, 4, 2])), [2, 2, 1]);
        assert_eq!(coalesced(&order(&[1, 0, 2, 3, 4])), [1, 1, 3]);
    }

    #[test]
    fn flows_of_one_batch_are_grouped_apart() {
        let a = run(false, &[100; 3]);
        let b: Vec<Seg> = run(false, &[200; 3])
            .into_iter()
            .map(|s| Seg { sport: 40_001, ..s })
            .collect();
        let c = run(true, &[300; 2]);
        let mut udp = a[0].build();
        udp[9] = 17;
        let mut packets = vec![
            a[0].build(),
            b[0].build(),
            c[0].build(),
            a[1].build(),
            b[1].build(),
            udp.clone(),
            c[1].build(),
            a[2].build(),
            b[2].build(),
        ];
        let out = writes(&mut packets);
        let sizes: Vec<usize> = out.iter().map(|(h, p)| segment(*h, p).len()).collect();
        assert_eq!(sizes, [3, 3, 2, 1]);
        assert_eq!(out[3], (VNET_HDR_NONE, udp));
    }

    #[test]
    fn the_sum_is_rfc_1071s() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 999, 1000, 1001] {
            assert_eq!(
                checksum(&data[..len], 0x1_2345),
                naive_sum(&data[..len], 0x1_2345)
            );
        }
    }

    proptest! {
        /// Coalescing and then segmenting as the kernel does gives back every segment,
        /// each flow in order, whatever the interleaving and sizes.
        #[test]
        fn coalescing_then_segmenting_gives_back_the_segments(
            v6 in any::<bool>(),
            flows in prop::collection::vec((1usize..3000, 1usize..25, 0usize..3000, any::<u32>()), 1..4),
            picks in prop::collection::vec(0usize..3, 0..80),
        ) {
            let mut queues: Vec<Vec<Seg>> = flows.iter().enumerate().map(|(f, &(gso, n, last, seq))| {
                let mut lens = vec![gso; n];
                lens[n - 1] = last % gso + 1;
                let mut segs = run(v6, &lens);
                for s in &mut segs {
                    s.sport = 1000 + f as u16;
                    s.seq = s.seq.wrapping_add(seq);
                    s.id = s.id.wrapping_add(seq as u16);
                }
                segs.reverse();
                segs
            }).collect();
            let mut order = Vec::new();
            let n = queues.len();
            for p in picks {
                if let Some(s) = queues[p % n].pop() {
                    order.push(s);
                }
            }
            for q in &mut queues {
                while let Some(s) = q.pop() {
                    order.push(s);
                }
            }
            let original = built(&order);
            let mut packets = original.clone();
            let out = writes(&mut packets);
            // Per flow (by source port), in the order they came.
            let by_flow = |ps: &[Vec<u8>]| {
                let iph = if v6 { 40 } else { 20 };
                let mut f: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
                for p in ps {
                    f[usize::from(u16::from_be_bytes([p[iph], p[iph + 1]])) - 1000].push(p.clone());
                }
                f
            };
            let again: Vec<Vec<u8>> = out.iter().flat_map(|(h, p)| segment(*h, p)).collect();
            prop_assert_eq!(by_flow(&again), by_flow(&original));
        }
    }
}
