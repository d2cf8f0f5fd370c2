//! The first Child SA, negotiated inside IKE_AUTH (RFC 7296 §1.2, §2.9, §2.17):
//! ESP proposals without key exchange, traffic selectors, KEYMAT.

use super::super::ike_sa::{ChildSa, Ctx, IkeSa};
use super::super::{ChildPolicy, ChildSaUp, Error, Event, proposal, ts};
use crate::crypto::{ChildKeys, Encr, Integ};
use crate::wire::message::notifies;
use crate::wire::payload::{Payload, Proposal, TrafficSelector, TsPayload, TsRange};
use crate::wire::{EncrId, EsnId, IntegId, NotifyType, ProtocolId, TransformType};

/// Notifies that refuse a Child SA but leave the IKE SA standing.
const CHILD_ERRORS: [NotifyType; 6] = [
    NotifyType::NO_PROPOSAL_CHOSEN,
    NotifyType::TS_UNACCEPTABLE,
    NotifyType::SINGLE_PAIR_REQUIRED,
    NotifyType::INTERNAL_ADDRESS_FAILURE,
    NotifyType::FAILED_CP_REQUIRED,
    NotifyType::INVALID_SELECTORS,
];

/// What the initiator asked for, to check the answer against.
pub(in super::super) struct ChildRequest {
    pub name: String,
    pub spi_in: u32,
    pub proposals: Vec<Proposal>,
    pub local_ts: Vec<TsRange>,
    pub remote_ts: Vec<TsRange>,
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

/// Our ESP proposals for IKE_AUTH, carrying our inbound SPI.
fn offer(child: &ChildPolicy, spi_in: u32) -> Vec<Proposal> {
    child
        .esp_proposals
        .iter()
        .map(|p| Proposal {
            spi: spi_in.to_be_bytes().to_vec(),
            ..without_ke(p)
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

fn find_sa(payloads: &[Payload]) -> Option<&[Proposal]> {
    payloads.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s.proposals.as_slice()),
        _ => None,
    })
}

/// Initiator: the SA, TSi and TSr payloads for the policy's first child, if any.
pub(in super::super) fn request(
    sa: &IkeSa,
    ctx: &mut Ctx<'_>,
) -> Option<(ChildRequest, Vec<Payload>)> {
    let child = sa.policy.children.first()?;
    let spi_in = ctx.alloc_child_spi();
    let req = ChildRequest {
        name: child.name.clone(),
        spi_in,
        proposals: offer(child, spi_in),
        local_ts: ts::or_dynamic(&child.local_ts, sa.local.ip()),
        remote_ts: ts::or_dynamic(&child.remote_ts, sa.remote.ip()),
    };
    let payloads = vec![
        Payload::Sa(crate::wire::payload::SaPayload {
            proposals: req.proposals.clone(),
        }),
        Payload::TsI(selectors(&req.local_ts)),
        Payload::TsR(selectors(&req.remote_ts)),
    ];
    Some((req, payloads))
}

/// Initiator: checks the responder's answer and brings the Child SA up.
pub(in super::super) fn accept(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    req: &ChildRequest,
    payloads: &[Payload],
) -> Result<(), Error> {
    if let Some(n) = notifies(payloads).find(|n| CHILD_ERRORS.contains(&n.notify_type)) {
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
    if chosen.protocol != ProtocolId::ESP
        || proposal::select(&req.proposals, std::slice::from_ref(chosen)).is_none()
    {
        return Err(Error::NoProposalChosen);
    }
    let (local_ts, remote_ts) = (ts::ranges(&tsi.selectors), ts::ranges(&tsr.selectors));
    if !ts::within(&local_ts, &req.local_ts) || !ts::within(&remote_ts, &req.remote_ts) {
        return Err(Error::TsUnacceptable);
    }
    let spi_out = esp_spi(chosen)?;
    up(
        sa, ctx, &req.name, req.spi_in, spi_out, chosen, local_ts, remote_ts,
    )
}

/// Responder: picks a child policy for the initiator's offer; returns the SA, TSi
/// and TSr payloads of the answer (none if the initiator asked for no Child SA).
pub(in super::super) fn respond(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    payloads: &[Payload],
) -> Result<Vec<Payload>, Error> {
    let (Some(offered), (Some(tsi), Some(tsr))) = (find_sa(payloads), find_ts(payloads)) else {
        return Ok(Vec::new());
    };
    let offered: Vec<Proposal> = offered
        .iter()
        .filter(|p| p.protocol == ProtocolId::ESP)
        .map(without_ke)
        .collect();
    let (tsi, tsr) = (ts::ranges(&tsi.selectors), ts::ranges(&tsr.selectors));
    let mut error = Error::NoProposalChosen;
    let children = sa.policy.children.clone();
    for child in &children {
        let Some(chosen) = proposal::select(&offer(child, 0), &offered) else {
            continue;
        };
        let remote_ts = ts::narrow(&tsi, &ts::or_dynamic(&child.remote_ts, sa.remote.ip()));
        let local_ts = ts::narrow(&tsr, &ts::or_dynamic(&child.local_ts, sa.local.ip()));
        if remote_ts.is_empty() || local_ts.is_empty() {
            error = Error::TsUnacceptable;
            continue;
        }
        let spi_out = esp_spi(&chosen)?;
        let spi_in = ctx.alloc_child_spi();
        up(
            sa,
            ctx,
            &child.name,
            spi_in,
            spi_out,
            &chosen,
            local_ts.clone(),
            remote_ts.clone(),
        )?;
        let answer = Proposal {
            spi: spi_in.to_be_bytes().to_vec(),
            ..chosen
        };
        return Ok(vec![
            Payload::Sa(crate::wire::payload::SaPayload {
                proposals: vec![answer],
            }),
            Payload::TsI(selectors(&remote_ts)),
            Payload::TsR(selectors(&local_ts)),
        ]);
    }
    Err(error)
}

/// Derives KEYMAT and reports the Child SA.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per role, all fields named"
)]
fn up(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    name: &str,
    spi_in: u32,
    spi_out: u32,
    chosen: &Proposal,
    local_ts: Vec<TsRange>,
    remote_ts: Vec<TsRange>,
) -> Result<(), Error> {
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
        suite.prf,
        &keys.sk_d,
        encr,
        integ,
        None,
        &sa.nonce_i,
        &sa.nonce_r,
    )?;
    let initiator_keys = (km.encr_i.clone(), km.integ_i.clone());
    let responder_keys = (km.encr_r.clone(), km.integ_r.clone());
    let (keys_out, keys_in) = if sa.initiator {
        (initiator_keys, responder_keys)
    } else {
        (responder_keys, initiator_keys)
    };
    let lifetime = sa
        .policy
        .children
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.lifetime)
        .unwrap_or_default();
    sa.children.push(ChildSa {
        name: name.to_owned(),
        spi_in,
        spi_out,
        soft_at: lifetime.soft.time.map(|t| ctx.now + t),
        hard_at: lifetime.hard.time.map(|t| ctx.now + t),
    });
    ctx.events.push_back(Event::ChildSaUp(Box::new(ChildSaUp {
        spi_i: sa.spi_i,
        connection: sa.policy.name.clone(),
        child: name.to_owned(),
        spi_in,
        spi_out,
        encr,
        integ,
        esn,
        keys_in,
        keys_out,
        local_ts,
        remote_ts,
        encap: sa.local.port() == ctx.settings.natt_port,
        local: sa.local,
        remote: sa.remote,
        lifetime,
        outbound: true,
        rekeys: None,
        policy: ctx.policy_index(&sa.policy),
        child_index: sa
            .policy
            .children
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_default(),
    })));
    Ok(())
}
