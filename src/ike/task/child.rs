//! Child SA negotiation shared by IKE_AUTH (the first Child SA, RFC 7296 §1.2) and
//! CREATE_CHILD_SA (further Child SAs and rekeys, §1.3): ESP proposals, the optional
//! PFS key exchange, traffic selectors and KEYMAT (§2.17).

use super::super::ike_sa::{ChildSa, ChildState, Ctx, IkeSa, Work};
use super::super::{ChildPolicy, ChildSaUp, Error, Event, Lifetime, Limits, proposal, ts};
use super::cp;
use crate::crypto::{ChildKeys, Encr, Integ, KeyExchange, Secret};
use crate::wire::message::{find_notify, notifies};
use crate::wire::payload::{
    KePayload, NoncePayload, NotifyPayload, Payload, Proposal, SaPayload, TrafficSelector,
    TsPayload, TsRange,
};
use crate::wire::{EncrId, EsnId, IntegId, KeGroup, NotifyType, ProtocolId, TransformType};

/// Without ESN, sequence numbers run out after 2^32 packets (RFC 4303 §3.3.3): rekey
/// this many packets before, and stop at the last one.
const SEQ_SOFT_MARGIN: u64 = 1 << 22;

/// Per-resource SAs (RFC 9611) a responder keeps for one child of one IKE SA; more
/// are refused with TS_MAX_QUEUE. Each costs memory, and no machine we serve has
/// more workers than this.
const MAX_RESOURCE_SAS: usize = 64;

/// What the initiator asked for, to check the answer against.
pub(in super::super) struct ChildRequest {
    /// The child's index in the policy.
    pub index: usize,
    pub spi_in: u32,
    pub proposals: Vec<Proposal>,
    pub local_ts: Vec<TsRange>,
    pub remote_ts: Vec<TsRange>,
    /// Our nonce; empty inside IKE_AUTH, which uses the IKE SA's.
    pub nonce: Vec<u8>,
    /// Our PFS key exchange, when the first proposal names a group.
    pub kex: Option<KeyExchange>,
    /// The inbound SPI of the Child SA this one rekeys.
    pub rekeys: Option<u32>,
    /// We asked for transport mode.
    pub transport: bool,
    /// We sent SA_RESOURCE_INFO: the SA may be one of several per-resource SAs.
    pub per_resource: bool,
    /// The resource (`SPI % resources`) our inbound SPI was drawn for, kept on restarts.
    pub resource: Option<u32>,
    /// INVALID_KE_PAYLOAD retries so far.
    pub restarts: u8,
}

impl ChildRequest {
    /// Another per-resource SA of a child that has one: its failure is not the child's.
    pub fn is_extra(&self) -> bool {
        self.rekeys.is_none() && self.resource.is_some()
    }
}

/// `p` without key exchange transforms: IKE_AUTH carries no KE payload (§1.2).
fn without_ke(p: &Proposal) -> Proposal {
    Proposal {
        transforms: p
            .transforms
            .iter()
            .filter(|t| t.kind != TransformType::KE)
            .cloned()
            .collect(),
        ..p.clone()
    }
}

/// Our ESP proposals carrying our inbound SPI; inside IKE_AUTH without groups.
fn offer(child: &ChildPolicy, spi_in: u32, in_auth: bool) -> Vec<Proposal> {
    child
        .esp_proposals
        .iter()
        .map(|p| Proposal {
            spi: spi_in.to_be_bytes().to_vec(),
            ..if in_auth { without_ke(p) } else { p.clone() }
        })
        .collect()
}

fn selectors(ranges: &[TsRange]) -> TsPayload {
    TsPayload {
        selectors: ranges.iter().copied().map(TrafficSelector::Range).collect(),
    }
}

fn esp_spi(p: &Proposal) -> Result<u32, Error> {
    <[u8; 4]>::try_from(p.spi.as_slice())
        .map(u32::from_be_bytes)
        .map_err(|_| Error::InvalidSyntax(format!("ESP SPI of {} bytes", p.spi.len())))
}

fn find_ts(payloads: &[Payload]) -> (Option<&TsPayload>, Option<&TsPayload>) {
    let tsi = payloads.iter().find_map(|p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    });
    let tsr = payloads.iter().find_map(|p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    });
    (tsi, tsr)
}

pub(super) fn find_sa(payloads: &[Payload]) -> Option<&[Proposal]> {
    payloads.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s.proposals.as_slice()),
        _ => None,
    })
}

pub(super) fn find_nonce(payloads: &[Payload]) -> Option<&[u8]> {
    payloads.iter().find_map(|p| match p {
        Payload::Nonce(n) => Some(n.data.as_slice()),
        _ => None,
    })
}

pub(super) fn find_ke(payloads: &[Payload]) -> Option<&KePayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Ke(k) => Some(k),
        _ => None,
    })
}

/// Initiator: a request for child `index` of the policy, rekeying `rekeys` (our
/// inbound SPI) if given, or adding a per-resource SA for `resource`; returns it
/// with its payloads. Inside IKE_AUTH (`in_auth`) there is no nonce or KE; in
/// CREATE_CHILD_SA the payloads are those of §1.3.1/§1.3.3.
pub(in super::super) fn request(
    sa: &IkeSa,
    ctx: &mut Ctx<'_>,
    index: usize,
    rekeys: Option<&ChildSa>,
    in_auth: bool,
    resource: Option<u32>,
) -> Result<(ChildRequest, Vec<Payload>), Error> {
    let child = sa
        .policy
        .children
        .get(index)
        .ok_or_else(|| Error::Internal(format!("no child {index}")))?;
    // A rekey keeps its SA's resource: the new SA must reach the same worker.
    let per_resource = ctx.per_resource(child) && rekeys.is_none_or(|old| old.per_resource);
    let resource = match rekeys {
        Some(old) if old.per_resource => Some(ctx.resource_of(old.spi_in)),
        Some(_) => None,
        None => resource,
    };
    // A first SA is spread before the answer says whether the peer does RFC 9611:
    // one that does then adds per-resource SAs beside it.
    let spread = resource.is_none() && ctx.spreads(child);
    let spi_in = ctx.alloc_child_spi(resource, spread);
    let (local_ts, remote_ts) = match rekeys {
        Some(old) => (old.local_ts.clone(), old.remote_ts.clone()),
        None => (
            cp::dynamic(sa, &child.local_ts, true),
            cp::dynamic(sa, &child.remote_ts, false),
        ),
    };
    let proposals = offer(child, spi_in, in_auth);
    let mut req = ChildRequest {
        index,
        spi_in,
        proposals,
        local_ts,
        remote_ts,
        nonce: Vec::new(),
        kex: None,
        rekeys: rekeys.map(|c| c.spi_in),
        transport: rekeys.map_or(child.transport, |old| old.transport),
        per_resource,
        resource,
        restarts: 0,
    };
    if !in_auth {
        req.nonce = ctx.nonce();
        if let Some(group) = req.proposals.first().and_then(proposal::group) {
            req.kex = Some(KeyExchange::generate(group, ctx.rng)?);
        }
    }
    let payloads = payloads(&req);
    Ok((req, payloads))
}

/// The payloads of a request, also after a restart with another group.
pub(super) fn payloads(req: &ChildRequest) -> Vec<Payload> {
    let mut out = Vec::new();
    if let Some(old) = req.rekeys {
        let mut n = NotifyPayload::new(NotifyType::REKEY_SA, Vec::new());
        n.protocol = ProtocolId::ESP;
        n.spi = old.to_be_bytes().to_vec();
        out.push(Payload::Notify(n));
    }
    if req.transport {
        out.push(super::notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
    }
    if req.per_resource {
        out.push(super::notify(NotifyType::SA_RESOURCE_INFO, Vec::new()));
    }
    out.push(Payload::Sa(SaPayload {
        proposals: req.proposals.clone(),
    }));
    if !req.nonce.is_empty() {
        out.push(Payload::Nonce(NoncePayload {
            data: req.nonce.clone(),
        }));
    }
    if let Some(kex) = &req.kex {
        out.push(Payload::Ke(KePayload {
            group: kex.group(),
            data: kex.public_value().to_vec(),
        }));
    }
    out.push(Payload::TsI(selectors(&req.local_ts)));
    out.push(Payload::TsR(selectors(&req.remote_ts)));
    out
}

/// Initiator: after INVALID_KE_PAYLOAD naming `group`, the same request with a key
/// exchange in that group, if our proposals allow it.
pub(super) fn restart_with(
    ctx: &mut Ctx<'_>,
    mut req: ChildRequest,
    group: KeGroup,
) -> Result<ChildRequest, Error> {
    let proposals = proposal::with_group(&req.proposals, group);
    if proposals.is_empty() || req.kex.as_ref().is_some_and(|k| k.group() == group) {
        return Err(Error::Notified(NotifyType::INVALID_KE_PAYLOAD));
    }
    req.proposals = proposals;
    req.kex = Some(KeyExchange::generate(group, ctx.rng)?);
    req.restarts += 1;
    Ok(req)
}

/// The error notify of a refused Child SA, if the answer is one (inside IKE_AUTH,
/// with AUTH present, any error concerns the Child SA and the IKE SA stands).
pub(super) fn refusal(payloads: &[Payload]) -> Option<&NotifyPayload> {
    notifies(payloads).find(|n| n.notify_type.is_error())
}

/// Initiator: checks the responder's answer and brings the Child SA up, sending
/// with it at once when `outbound` (the responder installed its inbound side before
/// answering; only the loser of a rekey collision does not).
pub(in super::super) fn accept(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    req: &ChildRequest,
    payloads: &[Payload],
    outbound: bool,
) -> Result<(), Error> {
    if let Some(n) = refusal(payloads) {
        return Err(Error::Notified(n.notify_type));
    }
    let (Some(chosen), (Some(tsi), Some(tsr))) = (find_sa(payloads), find_ts(payloads)) else {
        return Err(Error::InvalidSyntax(
            "no SA, TSi and TSr for the Child SA".into(),
        ));
    };
    let [chosen] = chosen else {
        return Err(Error::InvalidSyntax("answer must hold one proposal".into()));
    };
    if chosen.protocol != ProtocolId::ESP || !proposal::allows(&req.proposals, chosen) {
        return Err(Error::NoProposalChosen);
    }
    let (local_ts, remote_ts) = (ts::ranges(&tsi.selectors), ts::ranges(&tsr.selectors));
    if !ts::within(&local_ts, &req.local_ts) || !ts::within(&remote_ts, &req.remote_ts) {
        return Err(Error::TsUnacceptable);
    }
    match (
        req.transport,
        find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some(),
    ) {
        (true, false) => return Err(Error::TransportModeDeclined),
        // The peer would treat its packets as transport mode, and we as tunnel mode.
        (false, true) => {
            return Err(Error::InvalidSyntax(
                "USE_TRANSPORT_MODE in the answer to a tunnel-mode request".into(),
            ));
        }
        _ => {}
    }
    let g_ir = match (proposal::group(chosen), &req.kex) {
        (None, _) => None,
        (Some(group), Some(kex)) if kex.group() == group => {
            let ke = find_ke(payloads)
                .filter(|k| k.group == group)
                .ok_or_else(|| Error::InvalidSyntax(format!("no KE payload for {group}")))?;
            Some(kex.shared_secret(&ke.data)?)
        }
        (Some(_), _) => return Err(Error::NoProposalChosen),
    };
    let nonces = if req.nonce.is_empty() {
        (sa.nonce_i.clone(), sa.nonce_r.clone())
    } else {
        let nr = find_nonce(payloads).ok_or_else(|| Error::InvalidSyntax("no Nonce".into()))?;
        (req.nonce.clone(), nr.to_vec())
    };
    let spi_out = esp_spi(chosen)?;
    let per_resource =
        req.per_resource && find_notify(payloads, NotifyType::SA_RESOURCE_INFO).is_some();
    up(
        sa,
        ctx,
        Negotiated {
            index: req.index,
            spi_in: req.spi_in,
            spi_out,
            chosen,
            local_ts,
            remote_ts,
            g_ir: g_ir.as_ref(),
            nonces: (&nonces.0, &nonces.1),
            initiator: true,
            outbound,
            rekeys: req.rekeys,
            transport: req.transport,
            per_resource,
        },
    )
}

/// Initiator: child `index` got a per-resource SA from a peer that supports them:
/// queues one more for each resource that has none, so that every worker sends
/// and receives with its own SA.
pub(in super::super) fn add_resources(sa: &mut IkeSa, ctx: &Ctx<'_>, index: usize) {
    let per_resource = sa
        .children
        .iter()
        .any(|c| c.index == index && c.is_active() && c.per_resource);
    if !per_resource {
        return;
    }
    for resource in 0..ctx.settings.resources {
        let work = Work::AddResource(index, resource);
        if !has_resource(sa, ctx, index, resource) && !sa.queue.contains(&work) {
            sa.queue.push_back(work);
        }
    }
}

/// The resource of each active SA of child `index`, one per SA.
fn resources_in_use<'a>(
    sa: &'a IkeSa,
    ctx: &'a Ctx<'_>,
    index: usize,
) -> impl Iterator<Item = u32> + 'a {
    sa.children
        .iter()
        .filter(move |c| c.index == index && c.is_active())
        .map(|c| ctx.resource_of(c.spi_in))
}

/// Whether child `index` has an active SA on `resource`.
pub(in super::super) fn has_resource(
    sa: &IkeSa,
    ctx: &Ctx<'_>,
    index: usize,
    resource: u32,
) -> bool {
    resources_in_use(sa, ctx, index).any(|r| r == resource)
}

/// Responder: the resource for a new per-resource SA of child `index`: the one with
/// the fewest of its SAs; None for its first (any will do). Refuses beyond
/// [`MAX_RESOURCE_SAS`].
fn least_used_resource(sa: &IkeSa, ctx: &Ctx<'_>, index: usize) -> Result<Option<u32>, Error> {
    let resources = ctx.settings.resources;
    let mut used = vec![0usize; resources as usize];
    for r in resources_in_use(sa, ctx, index) {
        used[r as usize] += 1;
    }
    let total: usize = used.iter().sum();
    if total >= MAX_RESOURCE_SAS {
        return Err(Error::TsMaxQueue);
    }
    Ok((total > 0).then(|| {
        (0..resources)
            .min_by_key(|&r| used[r as usize])
            .unwrap_or(0)
    }))
}

/// What a responder answers: the Child SA's payloads and its inbound SPI.
pub(in super::super) struct Answer {
    pub payloads: Vec<Payload>,
    pub spi_in: u32,
}

/// Responder: picks a child policy for the initiator's offer and brings the Child SA
/// up; returns the answer's payloads (none if the initiator asked for no Child SA).
/// `rekeys` is the Child SA a CREATE_CHILD_SA rekeys, whose child is tried first and
/// whose outbound side keeps carrying traffic until the initiator deletes it.
pub(in super::super) fn respond(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    payloads: &[Payload],
    in_auth: bool,
    rekeys: Option<&ChildSa>,
) -> Result<Option<Answer>, Error> {
    let (Some(offered), (Some(tsi), Some(tsr))) = (find_sa(payloads), find_ts(payloads)) else {
        if in_auth {
            return Ok(None);
        }
        return Err(Error::InvalidSyntax(
            "CREATE_CHILD_SA needs SA, TSi and TSr".into(),
        ));
    };
    let offered: Vec<Proposal> = offered
        .iter()
        .filter(|p| p.protocol == ProtocolId::ESP)
        .map(|p| if in_auth { without_ke(p) } else { p.clone() })
        .collect();
    let (tsi, tsr) = (ts::ranges(&tsi.selectors), ts::ranges(&tsr.selectors));
    let wants_transport = find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some();
    let asks_per_resource = find_notify(payloads, NotifyType::SA_RESOURCE_INFO).is_some();
    let ni = if in_auth {
        sa.nonce_i.clone()
    } else {
        find_nonce(payloads)
            .ok_or_else(|| Error::InvalidSyntax("no Nonce".into()))?
            .to_vec()
    };
    let mut order: Vec<usize> = (0..sa.policy.children.len()).collect();
    if let Some(old) = rekeys {
        order.retain(|&i| i != old.index);
        order.insert(0, old.index);
    }
    let mut error = Error::NoProposalChosen;
    for index in order {
        let child = sa.policy.children[index].clone();
        let Some(chosen) = proposal::select(&offer(&child, 0, in_auth), &offered) else {
            continue;
        };
        let remote_ts = ts::narrow(&tsi, &cp::dynamic(sa, &child.remote_ts, false));
        let local_ts = ts::narrow(&tsr, &cp::dynamic(sa, &child.local_ts, true));
        if remote_ts.is_empty() || local_ts.is_empty() {
            error = Error::TsUnacceptable;
            continue;
        }
        // Before any key exchange: a refused per-resource SA costs nothing.
        let per_resource = asks_per_resource && ctx.per_resource(&child);
        let resource = match rekeys {
            _ if !per_resource => None,
            Some(old) => Some(ctx.resource_of(old.spi_in)),
            None => least_used_resource(sa, ctx, index)?,
        };
        let mut kex = None;
        if let Some(group) = proposal::group(&chosen) {
            match find_ke(payloads).filter(|k| k.group == group) {
                Some(ke) => {
                    let ours = KeyExchange::generate(group, ctx.rng)?;
                    let shared = ours.shared_secret(&ke.data)?;
                    kex = Some((ours, shared));
                }
                None => {
                    return Err(Error::InvalidKePayload {
                        offered: find_ke(payloads).map_or(KeGroup::NONE, |k| k.group),
                        wanted: group,
                    });
                }
            }
        }
        // Transport mode only when both sides want it; anything else is tunnel mode,
        // which the initiator may still refuse (§1.3.1).
        let transport = wants_transport && child.transport;
        if wants_transport != child.transport {
            let (asked, ours) = if wants_transport {
                ("transport", "tunnel")
            } else {
                ("tunnel", "transport")
            };
            sa.log(
                ctx,
                format!(
                    "CHILD_SA {}: the peer asks for {asked} mode, the child is configured for {ours} mode: tunnel mode",
                    child.name
                ),
            );
        }
        let spi_out = esp_spi(&chosen)?;
        let spi_in = ctx.alloc_child_spi(resource, !per_resource && ctx.spreads(&child));
        let nr = if in_auth {
            sa.nonce_r.clone()
        } else {
            ctx.nonce()
        };
        up(
            sa,
            ctx,
            Negotiated {
                index,
                spi_in,
                spi_out,
                chosen: &chosen,
                local_ts: local_ts.clone(),
                remote_ts: remote_ts.clone(),
                g_ir: kex.as_ref().map(|(_, shared)| shared),
                nonces: (&ni, &nr),
                initiator: false,
                outbound: rekeys.is_none(),
                rekeys: rekeys.map(|c| c.spi_in),
                transport,
                per_resource,
            },
        )?;
        let answer = Proposal {
            spi: spi_in.to_be_bytes().to_vec(),
            ..chosen
        };
        let mut out = Vec::new();
        if transport {
            out.push(super::notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
        }
        if per_resource {
            out.push(super::notify(NotifyType::SA_RESOURCE_INFO, Vec::new()));
        }
        out.push(Payload::Sa(SaPayload {
            proposals: vec![answer],
        }));
        if !in_auth {
            out.push(Payload::Nonce(NoncePayload { data: nr }));
        }
        if let Some((ours, _)) = kex {
            out.push(Payload::Ke(KePayload {
                group: ours.group(),
                data: ours.public_value().to_vec(),
            }));
        }
        out.push(Payload::TsI(selectors(&remote_ts)));
        out.push(Payload::TsR(selectors(&local_ts)));
        return Ok(Some(Answer {
            payloads: out,
            spi_in,
        }));
    }
    Err(error)
}

/// A Child SA both sides agreed on.
struct Negotiated<'a> {
    index: usize,
    spi_in: u32,
    spi_out: u32,
    chosen: &'a Proposal,
    local_ts: Vec<TsRange>,
    remote_ts: Vec<TsRange>,
    g_ir: Option<&'a Secret>,
    nonces: (&'a [u8], &'a [u8]),
    /// We sent the request that negotiated it.
    initiator: bool,
    outbound: bool,
    rekeys: Option<u32>,
    transport: bool,
    /// Both sides sent SA_RESOURCE_INFO.
    per_resource: bool,
}

/// `lifetime` with the packet limits that keep a 32-bit sequence number from wrapping.
fn within_sequence_space(mut lifetime: Lifetime, esn: bool) -> Lifetime {
    if !esn {
        let last = u64::from(u32::MAX);
        let cap =
            |l: &mut Limits, max: u64| l.packets = Some(l.packets.map_or(max, |p| p.min(max)));
        cap(&mut lifetime.soft, last - SEQ_SOFT_MARGIN);
        cap(&mut lifetime.hard, last);
    }
    lifetime
}

/// Derives KEYMAT, records the Child SA and reports it.
fn up(sa: &mut IkeSa, ctx: &mut Ctx<'_>, n: Negotiated<'_>) -> Result<(), Error> {
    let chosen = n.chosen;
    let of = |kind| chosen.transforms.iter().find(|t| t.kind == kind);
    let unsupported = || Error::Internal(format!("ESP {}", proposal::Notation(chosen)));
    let encr_t = of(TransformType::ENCR).ok_or_else(unsupported)?;
    let encr =
        Encr::from_transform(EncrId(encr_t.id), encr_t.key_length()).ok_or_else(unsupported)?;
    let integ = match of(TransformType::INTEG) {
        Some(t) if t.id != IntegId::NONE.0 => {
            Some(Integ::from_id(IntegId(t.id)).ok_or_else(unsupported)?)
        }
        _ => None,
    };
    let esn = of(TransformType::ESN).is_some_and(|t| t.id == EsnId::ESN.0);
    let (Some(suite), Some(keys)) = (sa.suite, sa.keys.as_ref()) else {
        return Err(Error::Internal("Child SA before IKE keys".into()));
    };
    let km = ChildKeys::derive(
        suite.prf, &keys.sk_d, encr, integ, n.g_ir, n.nonces.0, n.nonces.1,
    )?;
    let initiator_keys = (km.encr_i.clone(), km.integ_i.clone());
    let responder_keys = (km.encr_r.clone(), km.integ_r.clone());
    // The initiator-to-responder keys come first, "initiator" meaning whoever sent
    // this exchange's request (§2.17), not the IKE SA's original initiator.
    let (keys_out, keys_in) = if n.initiator {
        (initiator_keys, responder_keys)
    } else {
        (responder_keys, initiator_keys)
    };
    let child = &sa.policy.children[n.index];
    let lifetime = within_sequence_space(child.lifetime, esn);
    let name = child.name.clone();
    let soft_at = lifetime
        .soft
        .time
        .map(|t| ctx.now + ctx.spread(t, child.rand_time));
    sa.children.push(ChildSa {
        name: name.clone(),
        index: n.index,
        spi_in: n.spi_in,
        spi_out: n.spi_out,
        local_ts: n.local_ts.clone(),
        remote_ts: n.remote_ts.clone(),
        transport: n.transport,
        per_resource: n.per_resource,
        state: ChildState::Installed,
        soft_at,
        hard_at: lifetime.hard.time.map(|t| ctx.now + t),
        outbound: n.outbound,
        rekeys: n.rekeys,
        peer_rekey: None,
    });
    ctx.events.push_back(Event::ChildSaUp(Box::new(ChildSaUp {
        spi_i: sa.spi_i,
        connection: sa.policy.name.clone(),
        child: name,
        spi_in: n.spi_in,
        spi_out: n.spi_out,
        encr,
        integ,
        esn,
        keys_in,
        keys_out,
        local_ts: n.local_ts,
        remote_ts: n.remote_ts,
        transport: n.transport,
        per_resource: n.per_resource,
        encap: sa.esp_in_udp(),
        local: sa.local,
        remote: sa.remote,
        lifetime,
        rekey_after: soft_at.map(|t| t.0.saturating_sub(ctx.now.0)),
        outbound: n.outbound,
        rekeys: n.rekeys,
        policy: ctx.policy_index(&sa.policy),
        child_index: n.index,
    })));
    Ok(())
}

/// The notify that tells the initiator why its Child SA request failed.
pub(super) fn error_notify(error: &Error) -> Payload {
    let data = match error {
        Error::InvalidKePayload { wanted, .. } => wanted.0.to_be_bytes().to_vec(),
        _ => Vec::new(),
    };
    Payload::Notify(NotifyPayload::new(error.notify(), data))
}

/// The group an INVALID_KE_PAYLOAD answer asks for.
pub(super) fn wanted_group(payloads: &[Payload]) -> Option<KeGroup> {
    let n = find_notify(payloads, NotifyType::INVALID_KE_PAYLOAD)?;
    <[u8; 2]>::try_from(n.data.as_slice())
        .map(|b| KeGroup(u16::from_be_bytes(b)))
        .ok()
}
