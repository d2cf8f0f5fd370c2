//! The configuration payload in IKE_AUTH (RFC 7296 §2.19, §3.15): a client asks
//! for virtual IPs and DNS servers, its gateway leases them from its pools and
//! names the subnets behind it (split include).

use super::super::ike_sa::{Ctx, IkeSa};
use super::super::{Error, ts};
use crate::wire::payload::{CfgAttribute, CpPayload, Payload, TsRange};
use crate::wire::{CfgAttrType, CfgType};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn find(payloads: &[Payload], cfg_type: CfgType) -> Option<&CpPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Cp(cp) if cp.cfg_type == cfg_type => Some(cp),
        _ => None,
    })
}

fn attribute(kind: CfgAttrType, value: Vec<u8>) -> CfgAttribute {
    CfgAttribute { kind, value }
}

/// An IPv6 address attribute's value: the address and its prefix length (§3.15.1).
fn ipv6_with_prefix(addr: Ipv6Addr, prefix: u8) -> Vec<u8> {
    let mut value = addr.octets().to_vec();
    value.push(prefix);
    value
}

/// Client: the CFG_REQUEST for the policy's virtual IPs (and DNS servers of the same
/// families); None when it asks for none.
pub(super) fn request(vips: &[IpAddr]) -> Option<Payload> {
    let mut attributes = Vec::new();
    for vip in vips {
        match vip {
            IpAddr::V4(a) => {
                let value = if a.is_unspecified() {
                    Vec::new()
                } else {
                    a.octets().to_vec()
                };
                attributes.push(attribute(CfgAttrType::INTERNAL_IP4_ADDRESS, value));
                attributes.push(attribute(CfgAttrType::INTERNAL_IP4_DNS, Vec::new()));
            }
            IpAddr::V6(a) => {
                let value = if a.is_unspecified() {
                    Vec::new()
                } else {
                    ipv6_with_prefix(*a, 128)
                };
                attributes.push(attribute(CfgAttrType::INTERNAL_IP6_ADDRESS, value));
                attributes.push(attribute(CfgAttrType::INTERNAL_IP6_DNS, Vec::new()));
            }
        }
    }
    (!attributes.is_empty()).then_some(Payload::Cp(CpPayload {
        cfg_type: CfgType::CFG_REQUEST,
        attributes,
    }))
}

/// Gateway: leases the peer (authenticated, `sa.remote_id` set) an address of each
/// family its CFG_REQUEST asks for, from the policy's pools, and returns the
/// CFG_REPLY: the addresses, the pools' DNS servers and the subnets of the
/// policy's children. None for a policy without pools (a request is ignored, as
/// §3.15.1 allows). A peer that asks for nothing, or gets nothing, cannot have a
/// Child SA: its dynamic selectors would be whatever it claims.
pub(super) fn lease(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    payloads: &[Payload],
) -> Result<Option<Payload>, Error> {
    let policy = sa.policy.clone();
    if policy.pools.is_empty() {
        return Ok(None);
    }
    let Some(id) = sa.remote_id.clone() else {
        return Err(Error::Internal("lease before authentication".into()));
    };
    let request = find(payloads, CfgType::CFG_REQUEST).ok_or(Error::CpRequired)?;
    let asks = |kind| request.attributes.iter().any(|a| a.kind == kind);
    let mut attributes = Vec::new();
    let mut dns: Vec<IpAddr> = Vec::new();
    // The families asked for, to say which ran out.
    let mut asked = Vec::new();
    for (ipv4, kind, family) in [
        (true, CfgAttrType::INTERNAL_IP4_ADDRESS, "IPv4"),
        (false, CfgAttrType::INTERNAL_IP6_ADDRESS, "IPv6"),
    ] {
        if !asks(kind) {
            continue;
        }
        asked.push(family);
        let Some((addr, pool)) = ctx.pools.acquire(&policy.pools, ipv4, &id) else {
            continue;
        };
        attributes.push(attribute(
            kind,
            match addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => ipv6_with_prefix(a, 128),
            },
        ));
        if let Some(config) = ctx.pools.config(&pool) {
            for server in &config.dns {
                if !dns.contains(server) {
                    dns.push(*server);
                }
            }
        }
        sa.virtual_ips.push((addr, Some(pool)));
    }
    if sa.virtual_ips.is_empty() {
        return Err(Error::AddressFailure(if asked.is_empty() {
            "the peer asked for no address".into()
        } else {
            format!(
                "no {} address left in pools {}",
                asked.join(" or "),
                policy.pools.join(", ")
            )
        }));
    }
    for server in dns {
        attributes.push(match server {
            IpAddr::V4(a) => attribute(CfgAttrType::INTERNAL_IP4_DNS, a.octets().to_vec()),
            IpAddr::V6(a) => attribute(CfgAttrType::INTERNAL_IP6_DNS, a.octets().to_vec()),
        });
    }
    let subnets = policy.children.iter().flat_map(|c| &c.local_ts);
    for prefix in subnets.flat_map(|t| t.addrs.cidrs()) {
        attributes.push(match prefix {
            (IpAddr::V4(a), len) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                let mut value = a.octets().to_vec();
                value.extend(mask.to_be_bytes());
                attribute(CfgAttrType::INTERNAL_IP4_SUBNET, value)
            }
            (IpAddr::V6(a), len) => {
                attribute(CfgAttrType::INTERNAL_IP6_SUBNET, ipv6_with_prefix(a, len))
            }
        });
    }
    Ok(Some(Payload::Cp(CpPayload {
        cfg_type: CfgType::CFG_REPLY,
        attributes,
    })))
}

/// Client: takes the virtual IPs and DNS servers of the gateway's CFG_REPLY; fails
/// when the policy asked for virtual IPs and got none, since its dynamic selectors
/// would then have no address to stand for.
pub(super) fn accept(sa: &mut IkeSa, payloads: &[Payload]) -> Result<(), Error> {
    if sa.policy.vips.is_empty() {
        return Ok(());
    }
    let reply = find(payloads, CfgType::CFG_REPLY);
    for a in reply.into_iter().flat_map(|cp| &cp.attributes) {
        let v4 = <[u8; 4]>::try_from(a.value.as_slice())
            .ok()
            .map(Ipv4Addr::from);
        let v6 = a
            .value
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from);
        let addr = match a.kind {
            CfgAttrType::INTERNAL_IP4_ADDRESS => v4.map(IpAddr::V4),
            CfgAttrType::INTERNAL_IP6_ADDRESS => v6.map(IpAddr::V6),
            CfgAttrType::INTERNAL_IP4_DNS => {
                sa.dns.extend(v4.map(IpAddr::V4));
                continue;
            }
            CfgAttrType::INTERNAL_IP6_DNS => {
                sa.dns.extend(v6.map(IpAddr::V6));
                continue;
            }
            _ => continue,
        };
        let new = |a: &IpAddr| !a.is_unspecified() && !sa.virtual_ips.iter().any(|(b, _)| b == a);
        if let Some(addr) = addr.filter(new) {
            sa.virtual_ips.push((addr, None));
        }
    }
    if sa.virtual_ips.is_empty() {
        return Err(Error::AddressFailure(
            "the gateway assigned no virtual IP".into(),
        ));
    }
    Ok(())
}

/// The selectors dynamic ones (configured as none) stand for: the client's virtual
/// IPs when it has them, else `ike_addr`. A client that has asked for virtual IPs but
/// not got them yet offers every address of their families, for the gateway to
/// narrow (§2.9, as the initiator of IKE_AUTH does not know its address yet).
pub(in super::super) fn dynamic(sa: &IkeSa, configured: &[TsRange], ours: bool) -> Vec<TsRange> {
    let virtual_side = if ours {
        !sa.policy.vips.is_empty()
    } else {
        !sa.policy.pools.is_empty()
    };
    if !configured.is_empty() || !virtual_side {
        let ike = if ours { sa.local.ip() } else { sa.remote.ip() };
        return ts::or_dynamic(configured, ike);
    }
    if !sa.virtual_ips.is_empty() {
        return sa.virtual_ips.iter().map(|&(a, _)| ts::host(a)).collect();
    }
    if !ours {
        // A gateway's peer without a lease has no selectors at all.
        return Vec::new();
    }
    sa.policy
        .vips
        .iter()
        .map(|&vip| ts::family_of(vip))
        .collect()
}
