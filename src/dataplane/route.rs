//! esptun's routing, over rtnetlink rather than by running `ip`: a table of its own
//! holding its routes into the TUN, and a rule per family that sends every packet
//! without esptun's firewall mark to that table. esptun's sockets carry the mark, so
//! its IKE and ESP leave by the main table even when a tunnelled selector holds the
//! peer, and no route esptun did not create is ever replaced or deleted.
//!
//! Each protected prefix also gets a blackhole route behind its TUN route. The TUN
//! route goes when the device does (esptun killed, crashed or failed); the blackhole
//! and the rule stay, so protected traffic is dropped rather than sent in clear until
//! esptun runs again, claims the table and replaces them. Only a clean stop removes
//! them.

use crate::netlink::{NLM_F_CREATE, NLM_F_EXCL, Netlink, attribute, attributes};
use nix::libc;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
/// rtm_table for tables that do not fit its byte; RTA_TABLE holds the real one.
const RT_TABLE_COMPAT: u8 = 252;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTN_BLACKHOLE: u8 = 6;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// A virtual IP is ours alone: no duplicate address detection to wait for.
const IFA_F_NODAD: u8 = 0x02;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FR_ACT_TO_TBL: u8 = 1;
const FIB_RULE_INVERT: u32 = 0x2;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The protocol esptun's routes carry (ESP's IP protocol number): `ip route` shows
/// `proto 50`, and start-up and shutdown delete only routes with it.
pub const RTPROT_ESPTUN: u8 = 50;
/// Where the rule sits: after the local table (0), before main (32766).
pub const RULE_PRIORITY: u32 = 4500;
/// A blackhole's metric: worse than a TUN route's (IPv4 0, IPv6 1024).
const BLACKHOLE_METRIC: u32 = 4500;

/// A route-netlink socket and the table and mark it manages.
pub struct Routes {
    netlink: Netlink,
    table: u32,
    mark: u32,
    /// Blackholes an earlier run left, kept until [`Routes::drop_stale`] so that
    /// their prefixes stay closed while this run sets up its own.
    stale: Vec<Vec<u8>>,
}

impl Routes {
    /// Takes over `table` for routes into the TUN: removes what an earlier run left
    /// but its rules and blackholes, adds `not fwmark MARK lookup TABLE` for both
    /// families (unless it is there). Only [`Routes::release`] removes them: an
    /// esptun that fails, panics or is killed leaves its prefixes blackholed.
    pub fn claim(table: u32, mark: u32) -> io::Result<Self> {
        let mut routes = Self {
            netlink: Netlink::open(libc::NETLINK_ROUTE)?,
            table,
            mark,
            stale: Vec::new(),
        };
        for route in routes.ours()? {
            if route.get(7) == Some(&RTN_BLACKHOLE) {
                routes.stale.push(route);
            } else {
                // The route as the kernel described it names exactly that route.
                let _ = routes.request(RTM_DELROUTE, 0, &route);
            }
        }
        for family in [AF_INET, AF_INET6] {
            let rule = rule_message(family, table, mark);
            match routes.request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, &rule) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
        }
        Ok(routes)
    }

    /// Routes `prefix/len` through interface `oif` in our table, from `src` when
    /// given. Fails if our table already has that route: it is never replaced.
    pub fn add(
        &mut self,
        (prefix, len): (IpAddr, u8),
        oif: u32,
        src: Option<IpAddr>,
    ) -> io::Result<()> {
        let route = route_message(self.table, prefix, len, Target::Tun { oif, src });
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &route)
    }

    /// Adds the blackhole that keeps `prefix/len` closed when the TUN route is gone;
    /// an earlier run's is taken over.
    pub fn add_blackhole(&mut self, (prefix, len): (IpAddr, u8)) -> io::Result<()> {
        let route = route_message(self.table, prefix, len, Target::Blackhole);
        self.stale.retain(|r| prefix_of(r) != Some((prefix, len)));
        match self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &route) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes the blackhole of `prefix/len`: no connection protects it any more.
    pub fn delete_blackhole(&mut self, (prefix, len): (IpAddr, u8)) -> io::Result<()> {
        let route = route_message(self.table, prefix, len, Target::Blackhole);
        self.request(RTM_DELROUTE, 0, &route)
    }

    /// Deletes the blackholes of an earlier run that this one did not take over.
    pub fn drop_stale(&mut self) {
        for route in std::mem::take(&mut self.stale) {
            let _ = self.request(RTM_DELROUTE, 0, &route);
        }
    }

    /// Removes our route to `prefix/len` through `oif`.
    pub fn delete(&mut self, (prefix, len): (IpAddr, u8), oif: u32) -> io::Result<()> {
        let route = route_message(self.table, prefix, len, Target::Tun { oif, src: None });
        self.request(RTM_DELROUTE, 0, &route)
    }

    /// Puts `addr` (a virtual IP, as a host address) on interface `index`; one
    /// already there is fine.
    pub fn add_address(&mut self, index: u32, addr: IpAddr) -> io::Result<()> {
        match self.request(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            &address_message(index, addr),
        ) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes `addr` off interface `index`.
    pub fn delete_address(&mut self, index: u32, addr: IpAddr) -> io::Result<()> {
        self.request(RTM_DELADDR, 0, &address_message(index, addr))
    }

    /// This host's global addresses (the candidates for a route's source).
    pub fn addresses(&mut self) -> io::Result<Vec<IpAddr>> {
        // struct ifaddrmsg: family, prefix length, flags, scope, interface index.
        let request = [AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0];
        let mut out = Vec::new();
        self.netlink.dump(RTM_GETADDR, &request, |body| {
            if let Some(addr) = address_of(body) {
                out.push(addr);
            }
        })?;
        Ok(out)
    }

    /// Every route in our table that esptun made, as the kernel describes them.
    fn ours(&mut self) -> io::Result<Vec<Vec<u8>>> {
        // struct rtmsg, zero but for the family: every route of every table.
        let request = [AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut ours = Vec::new();
        let table = self.table;
        self.netlink.dump(RTM_GETROUTE, &request, |body| {
            if is_ours(body, table) {
                ours.push(body.to_vec());
            }
        })?;
        Ok(ours)
    }

    fn request(&self, kind: u16, flags: u16, body: &[u8]) -> io::Result<()> {
        self.netlink.request(kind, flags, body)
    }

    /// Deletes our rules and every route of ours, on a clean stop. Errors only mean
    /// there was nothing (left) to delete.
    pub fn release(&mut self) {
        for family in [AF_INET, AF_INET6] {
            let rule = rule_message(family, self.table, self.mark);
            let _ = self.request(RTM_DELRULE, 0, &rule);
        }
        match self.ours() {
            Ok(routes) => {
                for route in routes {
                    let _ = self.request(RTM_DELROUTE, 0, &route);
                }
            }
            Err(e) => crate::warn!("routing table {}: cannot list its routes: {e}", self.table),
        }
    }
}

fn table_byte(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RT_TABLE_COMPAT)
}

fn octets(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    }
}

/// Where a route sends packets.
#[derive(Clone, Copy)]
enum Target {
    /// Into the TUN (interface `oif`), from `src` when given.
    Tun { oif: u32, src: Option<IpAddr> },
    /// Nowhere, behind a TUN route to the same prefix.
    Blackhole,
}

/// struct rtmsg and attributes for a route to `prefix/len` in `table`.
fn route_message(table: u32, prefix: IpAddr, len: u8, target: Target) -> Vec<u8> {
    let (family, dst) = octets(prefix);
    let (scope, kind) = match target {
        Target::Tun { .. } => (RT_SCOPE_LINK, RTN_UNICAST),
        Target::Blackhole => (RT_SCOPE_UNIVERSE, RTN_BLACKHOLE),
    };
    let mut body = vec![
        family,
        len,
        0,
        0,
        table_byte(table),
        RTPROT_ESPTUN,
        scope,
        kind,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes());
    attribute(&mut body, RTA_TABLE, &table.to_ne_bytes());
    attribute(&mut body, RTA_DST, &dst);
    match target {
        Target::Tun { oif, src } => {
            attribute(&mut body, RTA_OIF, &oif.to_ne_bytes());
            if let Some(src) = src.filter(|s| s.is_ipv4() == prefix.is_ipv4()) {
                attribute(&mut body, RTA_PREFSRC, &octets(src).1);
            }
        }
        Target::Blackhole => attribute(&mut body, RTA_PRIORITY, &BLACKHOLE_METRIC.to_ne_bytes()),
    }
    body
}

/// The destination prefix of an RTM_NEWROUTE body.
fn prefix_of(body: &[u8]) -> Option<(IpAddr, u8)> {
    let (&family, &len) = (body.first()?, body.get(1)?);
    let (_, dst) = attributes(body, 12).find(|&(kind, _)| kind == RTA_DST)?;
    let addr = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(dst).ok()?)),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(dst).ok()?)),
        _ => return None,
    };
    Some((addr, len))
}

/// struct ifaddrmsg and attributes for host address `addr` on interface `index`.
fn address_message(index: u32, addr: IpAddr) -> Vec<u8> {
    let (family, octets) = octets(addr);
    let len = if addr.is_ipv4() { 32 } else { 128 };
    let mut body = vec![family, len, IFA_F_NODAD, RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&index.to_ne_bytes());
    attribute(&mut body, IFA_LOCAL, &octets);
    attribute(&mut body, IFA_ADDRESS, &octets);
    body
}

/// struct fib_rule_hdr and attributes for `not fwmark MARK lookup TABLE`.
fn rule_message(family: u8, table: u32, mark: u32) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0, table_byte(table), 0, 0, FR_ACT_TO_TBL];
    body.extend_from_slice(&FIB_RULE_INVERT.to_ne_bytes());
    attribute(&mut body, FRA_PRIORITY, &RULE_PRIORITY.to_ne_bytes());
    attribute(&mut body, FRA_FWMARK, &mark.to_ne_bytes());
    attribute(&mut body, FRA_FWMASK, &u32::MAX.to_ne_bytes());
    attribute(&mut body, FRA_TABLE, &table.to_ne_bytes());
    body
}

/// True if an RTM_NEWROUTE body is a route esptun made in `table`.
fn is_ours(body: &[u8], table: u32) -> bool {
    if body.len() < 12 || body[5] != RTPROT_ESPTUN {
        return false;
    }
    let in_table = attributes(body, 12)
        .find(|&(kind, _)| kind == RTA_TABLE)
        .and_then(|(_, v)| v.try_into().ok().map(u32::from_ne_bytes))
        .unwrap_or(u32::from(body[4]));
    in_table == table
}

/// The address of an RTM_NEWADDR body, if it is of global scope.
fn address_of(body: &[u8]) -> Option<IpAddr> {
    let (&family, &scope) = (body.first()?, body.get(3)?);
    if scope != RT_SCOPE_UNIVERSE {
        return None;
    }
    // IFA_LOCAL is ours on point-to-point links, where IFA_ADDRESS is the far end.
    let mut found = None;
    for (kind, value) in attributes(body, 8) {
        if kind == IFA_LOCAL || (kind == IFA_ADDRESS && found.is_none()) {
            found = match (family, value.len()) {
                (AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))),
                (AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(value).ok()?,
                ))),
                _ => found,
            };
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_our_table_protocol_and_source() {
        let body = route_message(
            4500,
            "10.2.0.0".parse().unwrap(),
            24,
            Target::Tun {
                oif: 7,
                src: Some("10.1.0.1".parse().unwrap()),
            },
        );
        // rtmsg: family, dst_len, src_len, tos, table (compat), protocol, scope, type, flags.
        assert_eq!(&body[..8], &[AF_INET, 24, 0, 0, 252, 50, 253, 1]);
        let attrs: Vec<(u16, Vec<u8>)> = attributes(&body, 12)
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                (RTA_TABLE, 4500u32.to_ne_bytes().to_vec()),
                (RTA_DST, vec![10, 2, 0, 0]),
                (RTA_OIF, 7u32.to_ne_bytes().to_vec()),
                (RTA_PREFSRC, vec![10, 1, 0, 1]),
            ]
        );
        assert!(is_ours(&body, 4500));
        assert!(!is_ours(&body, 4501));
        // A source of the other family is left out, as is a small table's compat byte.
        let v6 = route_message(
            100,
            "fd00:2::".parse().unwrap(),
            64,
            Target::Tun {
                oif: 7,
                src: Some("10.1.0.1".parse().unwrap()),
            },
        );
        assert_eq!(v6[4], 100);
        assert!(attributes(&v6, 12).all(|(k, _)| k != RTA_PREFSRC));
        let mut static_route = body.clone();
        static_route[5] = 4;
        assert!(!is_ours(&static_route, 4500), "not made by esptun");
        assert_eq!(prefix_of(&v6), Some(("fd00:2::".parse().unwrap(), 64)));
    }

    #[test]
    fn blackhole_is_ours_goes_nowhere_and_loses_to_the_tun_route() {
        let body = route_message(4500, "10.2.0.0".parse().unwrap(), 24, Target::Blackhole);
        assert_eq!(&body[..8], &[AF_INET, 24, 0, 0, 252, 50, 0, RTN_BLACKHOLE]);
        let attrs: Vec<(u16, Vec<u8>)> = attributes(&body, 12)
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                (RTA_TABLE, 4500u32.to_ne_bytes().to_vec()),
                (RTA_DST, vec![10, 2, 0, 0]),
                (RTA_PRIORITY, BLACKHOLE_METRIC.to_ne_bytes().to_vec()),
            ]
        );
        assert!(is_ours(&body, 4500));
        assert_eq!(prefix_of(&body), Some(("10.2.0.0".parse().unwrap(), 24)));
    }

    #[test]
    fn rule_is_inverted_fwmark_to_our_table() {
        let body = rule_message(AF_INET6, 4500, 0x45);
        assert_eq!(&body[..8], &[AF_INET6, 0, 0, 0, 252, 0, 0, FR_ACT_TO_TBL]);
        assert_eq!(&body[8..12], &FIB_RULE_INVERT.to_ne_bytes());
        let attrs: Vec<(u16, Vec<u8>)> = attributes(&body, 12)
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                (FRA_PRIORITY, RULE_PRIORITY.to_ne_bytes().to_vec()),
                (FRA_FWMARK, 0x45u32.to_ne_bytes().to_vec()),
                (FRA_FWMASK, u32::MAX.to_ne_bytes().to_vec()),
                (FRA_TABLE, 4500u32.to_ne_bytes().to_vec()),
            ]
        );
    }

    #[test]
    fn addresses_are_local_and_global() {
        let mut ptp = vec![AF_INET, 32, 0, RT_SCOPE_UNIVERSE, 3, 0, 0, 0];
        attribute(&mut ptp, IFA_ADDRESS, &[192, 0, 2, 9]);
        attribute(&mut ptp, IFA_LOCAL, &[192, 0, 2, 1]);
        assert_eq!(address_of(&ptp), Some("192.0.2.1".parse().unwrap()));
        let mut v6 = vec![AF_INET6, 64, 0, RT_SCOPE_UNIVERSE, 3, 0, 0, 0];
        attribute(
            &mut v6,
            IFA_ADDRESS,
            &"fd00:1::1".parse::<Ipv6Addr>().unwrap().octets(),
        );
        assert_eq!(address_of(&v6), Some("fd00:1::1".parse().unwrap()));
        v6[3] = RT_SCOPE_LINK;
        assert_eq!(address_of(&v6), None);
    }

    #[test]
    fn a_virtual_ip_is_a_host_address_without_dad_on_the_tun() {
        for vip in ["10.3.0.7", "fd00:3::7"] {
            let vip: IpAddr = vip.parse().unwrap();
            let body = address_message(9, vip);
            assert_eq!(body[1], if vip.is_ipv4() { 32 } else { 128 });
            assert_eq!(body[2], IFA_F_NODAD);
            assert_eq!(body[4..8], 9u32.to_ne_bytes());
            assert_eq!(address_of(&body), Some(vip));
        }
    }
}
