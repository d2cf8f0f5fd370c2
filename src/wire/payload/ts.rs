//! Traffic Selector payloads TSi and TSr (RFC 7296 §3.13).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Number of TSs |                 RESERVED                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                       <Traffic Selectors>                     ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Traffic selector:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   TS Type     |IP Protocol ID*|       Selector Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Start Port*         |           End Port*           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                         Starting Address*                     ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                         Ending Address*                       ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::TsType;
use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TS_HEADER_LEN: usize = 4;
const IPV4_TS_LEN: usize = 16;
const IPV6_TS_LEN: usize = 40;

/// A set of traffic selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsPayload {
    /// The selectors, in the order sent (the first may describe the triggering packet).
    pub selectors: Vec<TrafficSelector>,
}

/// One traffic selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficSelector {
    /// An IPv4 or IPv6 address range with protocol and port range.
    Range(TsRange),
    /// A selector of another type (e.g. RFC 9478 security labels), kept as received.
    Other {
        /// The TS type number.
        ts_type: TsType,
        /// The octet after the type (IP protocol or reserved, depending on type).
        second_octet: u8,
        /// Everything after the selector length field.
        body: Vec<u8>,
    },
}

/// An address range with an IP protocol and a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TsRange {
    /// IP protocol number, 0 for any.
    pub ip_protocol: u8,
    /// First port (or ICMP type/code) in the range.
    pub start_port: u16,
    /// Last port in the range.
    pub end_port: u16,
    /// First and last address, both of one family.
    pub addrs: AddrRange,
}

/// An inclusive address range within one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrRange {
    /// IPv4 start and end.
    V4(Ipv4Addr, Ipv4Addr),
    /// IPv6 start and end.
    V6(Ipv6Addr, Ipv6Addr),
}

/// The prefix length when `start..=end` is exactly one CIDR block of a `bits`-wide address.
fn prefix_len(start: u128, end: u128, bits: u32) -> Option<u32> {
    let host = start ^ end;
    let host_bits = 128 - host.leading_zeros();
    let mask = if host_bits == 0 {
        0
    } else {
        u128::MAX >> (128 - host_bits)
    };
    (host == mask && start & mask == 0 && host_bits <= bits).then_some(bits - host_bits)
}

impl AddrRange {
    /// The fewest CIDR prefixes that together cover exactly this range (for routes).
    pub fn cidrs(&self) -> Vec<(IpAddr, u8)> {
        let (mut start, end, bits) = match *self {
            Self::V4(a, b) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
            Self::V6(a, b) => (u128::from(a), u128::from(b), 128),
        };
        let to_ip = |v: u128| match bits {
            32 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            _ => IpAddr::V6(Ipv6Addr::from(v)),
        };
        // The highest address of the aligned block of `h` host bits that starts at `start`.
        let span = |h: u32| u128::MAX.checked_shr(128 - h).unwrap_or(0);
        let mut out = Vec::new();
        loop {
            // The largest aligned block at `start` that does not pass `end`.
            let mut host_bits = start.trailing_zeros().min(bits);
            while span(host_bits) > end - start {
                host_bits -= 1;
            }
            out.push((to_ip(start), (bits - host_bits) as u8));
            let last = start + span(host_bits);
            if last >= end {
                break;
            }
            start = last + 1;
        }
        out
    }
}

/// As a CIDR prefix (`10.1.0.0/24`) when it is one, else as `start..end`.
impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, start, end) = match *self {
            Self::V4(a, b) => (
                prefix_len(u32::from(a).into(), u32::from(b).into(), 32),
                IpAddr::V4(a),
                IpAddr::V4(b),
            ),
            Self::V6(a, b) => (
                prefix_len(a.into(), b.into(), 128),
                IpAddr::V6(a),
                IpAddr::V6(b),
            ),
        };
        match prefix {
            Some(len) => write!(f, "{start}/{len}"),
            None => write!(f, "{start}..{end}"),
        }
    }
}

impl fmt::Display for TsRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addrs)?;
        if self.ip_protocol != 0 {
            write!(f, "[proto {}", self.ip_protocol)?;
            if (self.start_port, self.end_port) != (0, u16::MAX) {
                write!(f, " ports {}-{}", self.start_port, self.end_port)?;
            }
            f.write_str("]")?;
        } else if (self.start_port, self.end_port) != (0, u16::MAX) {
            write!(f, "[ports {}-{}]", self.start_port, self.end_port)?;
        }
        Ok(())
    }
}

impl TrafficSelector {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ts_type = TsType(r.u8("traffic selector")?);
        let second_octet = r.u8("traffic selector")?;
        let length = r.u16("traffic selector length")?;
        let fixed_len = match ts_type {
            TsType::IPV4_ADDR_RANGE => Some(IPV4_TS_LEN),
            TsType::IPV6_ADDR_RANGE => Some(IPV6_TS_LEN),
            _ => None,
        };
        if let Some(expected) = fixed_len.filter(|&l| l != usize::from(length)) {
            return Err(r.error(
                "traffic selector length",
                DecodeErrorKind::BadLength {
                    length: length.into(),
                    min: expected,
                    max: expected,
                },
            ));
        }
        let mut body = r.body_by_length(length, TS_HEADER_LEN, "traffic selector")?;
        if fixed_len.is_none() {
            return Ok(Self::Other {
                ts_type,
                second_octet,
                body: body.rest().to_vec(),
            });
        }
        let start_port = body.u16("traffic selector")?;
        let end_port = body.u16("traffic selector")?;
        let addrs = if ts_type == TsType::IPV4_ADDR_RANGE {
            AddrRange::V4(
                body.array::<4>("traffic selector")?.into(),
                body.array::<4>("traffic selector")?.into(),
            )
        } else {
            AddrRange::V6(
                body.array::<16>("traffic selector")?.into(),
                body.array::<16>("traffic selector")?.into(),
            )
        };
        Ok(Self::Range(TsRange {
            ip_protocol: second_octet,
            start_port,
            end_port,
            addrs,
        }))
    }

    fn encode(&self, w: &mut Writer) {
        let start = w.len();
        match self {
            Self::Range(ts) => {
                let ts_type = match ts.addrs {
                    AddrRange::V4(..) => TsType::IPV4_ADDR_RANGE,
                    AddrRange::V6(..) => TsType::IPV6_ADDR_RANGE,
                };
                w.u8(ts_type.0);
                w.u8(ts.ip_protocol);
                let mark = w.length16(start);
                w.u16(ts.start_port);
                w.u16(ts.end_port);
                match ts.addrs {
                    AddrRange::V4(a, b) => {
                        w.bytes(&a.octets());
                        w.bytes(&b.octets());
                    }
                    AddrRange::V6(a, b) => {
                        w.bytes(&a.octets());
                        w.bytes(&b.octets());
                    }
                }
                w.end(mark, "traffic selector");
            }
            Self::Other {
                ts_type,
                second_octet,
                body,
            } => {
                w.u8(ts_type.0);
                w.u8(*second_octet);
                let mark = w.length16(start);
                w.bytes(body);
                w.end(mark, "traffic selector");
            }
        }
    }
}

impl TsPayload {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u8("TS payload count")?;
        r.bytes(3, "TS payload")?;
        let mut selectors = Vec::with_capacity(count.into());
        for _ in 0..count {
            selectors.push(TrafficSelector::decode(r)?);
        }
        r.finish("TS payload (selector count)")?;
        Ok(Self { selectors })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.count8(self.selectors.len(), "TS payload selectors");
        w.bytes(&[0; 3]);
        for ts in &self.selectors {
            ts.encode(w);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_split_into_the_fewest_prefixes() {
        let v4 = |a: &str, b: &str| AddrRange::V4(a.parse().unwrap(), b.parse().unwrap());
        let show = |r: AddrRange| {
            r.cidrs()
                .iter()
                .map(|(a, l)| format!("{a}/{l}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(show(v4("10.1.0.0", "10.1.0.255")), ["10.1.0.0/24"]);
        assert_eq!(show(v4("0.0.0.0", "255.255.255.255")), ["0.0.0.0/0"]);
        assert_eq!(
            show(v4("10.0.0.1", "10.0.0.6")),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        let all6 = AddrRange::V6("::".parse().unwrap(), Ipv6Addr::from(u128::MAX));
        assert_eq!(show(all6), ["::/0"]);
        let host6 = AddrRange::V6("fd00::1".parse().unwrap(), "fd00::1".parse().unwrap());
        assert_eq!(show(host6), ["fd00::1/128"]);
    }

    use super::*;

    fn sample() -> TsPayload {
        TsPayload {
            selectors: vec![
                TrafficSelector::Range(TsRange {
                    ip_protocol: 0,
                    start_port: 0,
                    end_port: 65535,
                    addrs: AddrRange::V4([10, 1, 0, 0].into(), [10, 1, 0, 255].into()),
                }),
                TrafficSelector::Range(TsRange {
                    ip_protocol: 6,
                    start_port: 443,
                    end_port: 443,
                    addrs: AddrRange::V6(
                        "fd00:1::".parse().unwrap(),
                        "fd00:1::ffff".parse().unwrap(),
                    ),
                }),
                TrafficSelector::Other {
                    ts_type: TsType::SECLABEL,
                    second_octet: 0,
                    body: b"label".to_vec(),
                },
            ],
        }
    }

    fn encode(ts: &TsPayload) -> Vec<u8> {
        let mut w = Writer::new();
        ts.encode(&mut w);
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_v4_v6_and_unknown_types() {
        let bytes = encode(&sample());
        assert_eq!(
            TsPayload::decode(&mut Reader::new(&bytes)).unwrap(),
            sample()
        );
    }

    #[test]
    fn rejects_wrong_selector_length_and_count() {
        let mut bytes = encode(&sample());
        bytes[7] = 17; // IPv4 selector claiming 17 bytes
        let e = TsPayload::decode(&mut Reader::new(&bytes)).unwrap_err();
        assert_eq!(e.what, "traffic selector length");
        let mut bytes = encode(&sample());
        bytes[0] = 2;
        assert!(TsPayload::decode(&mut Reader::new(&bytes)).is_err());
        bytes[0] = 4;
        assert!(TsPayload::decode(&mut Reader::new(&bytes)).is_err());
    }

    #[test]
    fn ranges_that_are_prefixes_print_as_cidr() {
        assert_eq!(prefix_len(0x0a01_0000, 0x0a01_00ff, 32), Some(24));
        assert_eq!(prefix_len(0, u32::MAX.into(), 32), Some(0));
        assert_eq!(prefix_len(5, 5, 32), Some(32));
        assert_eq!(prefix_len(0x0a01_0001, 0x0a01_00ff, 32), None);
        assert_eq!(prefix_len(0, 2, 32), None);
        assert_eq!(prefix_len(0, u128::MAX, 128), Some(0));
    }

    #[test]
    fn displays_ranges_readably() {
        let TrafficSelector::Range(r) = sample().selectors[1] else {
            unreachable!()
        };
        assert_eq!(r.to_string(), "fd00:1::/112[proto 6 ports 443-443]");
        let odd = AddrRange::V4([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert_eq!(odd.to_string(), "10.0.0.1..10.0.0.2");
        let host = AddrRange::V6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
        assert_eq!(host.to_string(), "::1/128");
    }
}
