//! Traffic selector negotiation (RFC 7296 §2.9): the responder narrows what the
//! initiator proposes to what its policy allows; the initiator checks that the answer
//! is within what it asked for.

use crate::wire::payload::{AddrRange, TrafficSelector, TsRange};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A selector covering `addrs`, any protocol and port.
pub fn of(addrs: AddrRange) -> TsRange {
    TsRange {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        addrs,
    }
}

/// A selector covering exactly one address, any protocol and port.
pub fn host(addr: IpAddr) -> TsRange {
    of(match addr {
        IpAddr::V4(a) => AddrRange::V4(a, a),
        IpAddr::V6(a) => AddrRange::V6(a, a),
    })
}

/// A selector covering every address of `addr`'s family.
pub fn family_of(addr: IpAddr) -> TsRange {
    of(match addr {
        IpAddr::V4(_) => AddrRange::V4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST),
        IpAddr::V6(_) => AddrRange::V6(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from(u128::MAX)),
    })
}

/// The configured selectors, or the IKE address when none are ("dynamic").
pub fn or_dynamic(configured: &[TsRange], ike_addr: IpAddr) -> Vec<TsRange> {
    if configured.is_empty() {
        vec![host(ike_addr)]
    } else {
        configured.to_vec()
    }
}

/// The address ranges of a TS payload; selectors of other types are not ours to narrow.
pub fn ranges(selectors: &[TrafficSelector]) -> Vec<TsRange> {
    selectors
        .iter()
        .filter_map(|s| match s {
            TrafficSelector::Range(r) => Some(*r),
            TrafficSelector::Other { .. } => None,
        })
        .collect()
}

/// Every non-empty intersection of an offered selector with one of ours, in the
/// offer's order and without repeats. Empty means the offer is unacceptable.
pub fn narrow(offered: &[TsRange], ours: &[TsRange]) -> Vec<TsRange> {
    let mut out: Vec<TsRange> = Vec::new();
    for o in offered {
        for m in ours {
            if let Some(x) = intersect(o, m).filter(|x| !out.contains(x)) {
                out.push(x);
            }
        }
    }
    out
}

/// True if every selector of `answer` lies within one of `asked`.
pub fn within(answer: &[TsRange], asked: &[TsRange]) -> bool {
    !answer.is_empty()
        && answer
            .iter()
            .all(|a| asked.iter().any(|b| intersect(a, b) == Some(*a)))
}

/// True if a packet's `addr`, `protocol` and `port` (None for a non-initial
/// fragment, which only a selector for every port can claim) fall within `ts`.
pub fn covers(ts: &TsRange, addr: IpAddr, protocol: u8, port: Option<u16>) -> bool {
    let in_range = match (ts.addrs, addr) {
        (AddrRange::V4(s, e), IpAddr::V4(a)) => s <= a && a <= e,
        (AddrRange::V6(s, e), IpAddr::V6(a)) => s <= a && a <= e,
        _ => false,
    };
    in_range
        && (ts.ip_protocol == 0 || ts.ip_protocol == protocol)
        && match port {
            Some(p) => ts.start_port <= p && p <= ts.end_port,
            None => (ts.start_port, ts.end_port) == (0, u16::MAX),
        }
}

fn intersect(a: &TsRange, b: &TsRange) -> Option<TsRange> {
    let ip_protocol = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    if start_port > end_port {
        return None;
    }
    let addrs = match (a.addrs, b.addrs) {
        (AddrRange::V4(s1, e1), AddrRange::V4(s2, e2)) => {
            let (s, e) = (s1.max(s2), e1.min(e2));
            (s <= e).then_some(AddrRange::V4(s, e))?
        }
        (AddrRange::V6(s1, e1), AddrRange::V6(s2, e2)) => {
            let (s, e) = (s1.max(s2), e1.min(e2));
            (s <= e).then_some(AddrRange::V6(s, e))?
        }
        _ => return None,
    };
    Some(TsRange {
        ip_protocol,
        start_port,
        end_port,
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: &str, b: &str) -> TsRange {
        TsRange {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            addrs: AddrRange::V4(a.parse().unwrap(), b.parse().unwrap()),
        }
    }

    fn v6(a: &str, b: &str) -> TsRange {
        TsRange {
            addrs: AddrRange::V6(a.parse().unwrap(), b.parse().unwrap()),
            ..v4("0.0.0.0", "0.0.0.0")
        }
    }

    #[test]
    fn responder_narrows_a_wide_offer_to_its_policy() {
        let offered = [v4("0.0.0.0", "255.255.255.255"), v6("::", "ffff::")];
        let ours = [v4("10.1.0.0", "10.1.0.255")];
        assert_eq!(narrow(&offered, &ours), vec![ours[0]]);
    }

    #[test]
    fn narrowing_keeps_each_family_and_drops_disjoint_ranges() {
        let offered = [v4("10.1.0.0", "10.1.0.255"), v6("fd00:1::", "fd00:1::ffff")];
        let ours = [v4("10.1.0.128", "10.1.1.255"), v6("fd00:1::", "fd00:1::ff")];
        assert_eq!(
            narrow(&offered, &ours),
            vec![v4("10.1.0.128", "10.1.0.255"), v6("fd00:1::", "fd00:1::ff")]
        );
        assert!(narrow(&[v4("10.9.0.0", "10.9.0.255")], &ours).is_empty());
    }

    #[test]
    fn protocols_and_ports_intersect() {
        let tcp80 = TsRange {
            ip_protocol: 6,
            start_port: 80,
            end_port: 80,
            ..v4("10.1.0.1", "10.1.0.1")
        };
        let any = v4("10.1.0.0", "10.1.0.255");
        assert_eq!(narrow(&[any], &[tcp80]), vec![tcp80]);
        let udp = TsRange {
            ip_protocol: 17,
            ..tcp80
        };
        assert!(narrow(&[udp], &[tcp80]).is_empty());
    }

    #[test]
    fn initiator_accepts_only_answers_inside_its_offer() {
        let asked = [v4("10.1.0.0", "10.1.0.255")];
        assert!(within(&[v4("10.1.0.0", "10.1.0.127")], &asked));
        assert!(!within(&[v4("10.1.0.0", "10.1.1.0")], &asked));
        assert!(!within(&[], &asked));
    }

    #[test]
    fn packets_are_covered_by_address_protocol_and_port() {
        let net = v4("10.1.0.0", "10.1.0.255");
        let a: IpAddr = "10.1.0.7".parse().unwrap();
        assert!(covers(&net, a, 6, Some(443)));
        assert!(covers(&net, a, 6, None));
        assert!(!covers(&net, "10.1.1.7".parse().unwrap(), 6, Some(443)));
        assert!(!covers(&net, "fd00::7".parse().unwrap(), 6, Some(443)));
        let dns = TsRange {
            ip_protocol: 17,
            start_port: 53,
            end_port: 53,
            ..net
        };
        assert!(covers(&dns, a, 17, Some(53)));
        assert!(!covers(&dns, a, 17, Some(54)));
        assert!(!covers(&dns, a, 6, Some(53)));
        // A fragment without ports cannot be proven to be port 53.
        assert!(!covers(&dns, a, 17, None));
    }

    #[test]
    fn dynamic_means_the_ike_address() {
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(or_dynamic(&[], addr), vec![v4("192.0.2.1", "192.0.2.1")]);
    }
}
