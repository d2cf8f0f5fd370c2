//! CREATE_CHILD_SA for Child SAs (RFC 7296 §1.3.1, §1.3.3): further Child SAs and
//! rekeys, in both roles, make-before-break, with the collisions of §2.8.1 resolved
//! by the lowest nonce.

use super::super::ike_sa::{ChildSa, ChildState, Ctx, IkeSa, PeerRekey, State, Work};
use super::super::{Action, Error, Event};
use super::Task;
use super::child::{self, ChildRequest};
use crate::wire::message::find_notify;
use crate::wire::payload::Payload;
use crate::wire::{ExchangeType, NotifyType, ProtocolId};
use std::time::Duration;

/// How long after TEMPORARY_FAILURE (and similar) a rekey or creation is retried, at
/// least: the actual delay is random up to twice this (§2.25).
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How many INVALID_KE_PAYLOAD restarts one request may take.
const MAX_RESTARTS: u8 = 2;

/// Initiator: sends CREATE_CHILD_SA for child `index`, rekeying the Child SA with
/// inbound SPI `rekeys` if given, or adding a per-resource SA for `resource`.
pub(in super::super) fn start(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    index: usize,
    rekeys: Option<u32>,
    resource: Option<u32>,
) -> Result<(), Error> {
    let old = match rekeys {
        Some(spi) => {
            let Some(old) = sa.children.iter().find(|c| c.spi_in == spi) else {
                return Ok(());
            };
            if old.state != ChildState::Installed {
                return Ok(());
            }
            Some(old.clone())
        }
        None => None,
    };
    let (req, payloads) = child::request(sa, ctx, index, old.as_ref(), false, resource)?;
    send(sa, ctx, req, payloads)?;
    if let Some(c) = rekeys.and_then(|spi| sa.children.iter_mut().find(|c| c.spi_in == spi)) {
        c.state = ChildState::Rekeying;
    }
    Ok(())
}

fn send(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    req: ChildRequest,
    payloads: Vec<Payload>,
) -> Result<(), Error> {
    let spi_in = req.spi_in;
    if let Err(e) = sa.send_request(
        ctx,
        ExchangeType::CREATE_CHILD_SA,
        payloads,
        Task::CreateChild(req),
    ) {
        ctx.child_spis.remove(&spi_in);
        return Err(e);
    }
    Ok(())
}

/// Which exchange of a collision wins: true if ours, i.e. the lowest of the four
/// nonces is in the peer's exchange (§2.8.1: the SA made with the lowest nonce is
/// the redundant one, deleted by whoever initiated it).
pub(super) fn we_win(ours: (&[u8], &[u8]), theirs: &PeerRekey) -> bool {
    let our_min = ours.0.min(ours.1);
    let their_min = theirs.nonce_i.as_slice().min(theirs.nonce_r.as_slice());
    their_min < our_min
}

/// Initiator: the answer to our CREATE_CHILD_SA.
pub(super) fn response(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    req: ChildRequest,
    payloads: Vec<Payload>,
) {
    if let Some(group) = child::wanted_group(&payloads)
        && req.restarts < MAX_RESTARTS
    {
        let index = req.index;
        ctx.child_spis.remove(&req.spi_in);
        sa.log(ctx, format!("peer wants {group} for PFS, retrying"));
        let spi_in = ctx.alloc_child_spi(req.resource, crate::ike::is_spread(req.spi_in));
        let req = ChildRequest {
            spi_in,
            proposals: req
                .proposals
                .iter()
                .map(|p| crate::wire::payload::Proposal {
                    spi: spi_in.to_be_bytes().to_vec(),
                    ..p.clone()
                })
                .collect(),
            ..req
        };
        let retried = child::restart_with(ctx, req, group).and_then(|req| {
            let payloads = child::payloads(&req);
            send(sa, ctx, req, payloads)
        });
        if let Err(e) = retried {
            ctx.child_spis.remove(&spi_in);
            failed(sa, ctx, index, None, e);
        }
        return;
    }
    let old = req.rekeys;
    // A collision decided before the SA goes in: the loser never sends with its
    // redundant SA.
    let collision = old.and_then(|spi| {
        sa.children
            .iter()
            .find(|c| c.spi_in == spi)
            .and_then(|c| c.peer_rekey.clone())
    });
    let nr = child::find_nonce(&payloads).map(<[u8]>::to_vec);
    let won = match (&collision, &nr) {
        (Some(theirs), Some(nr)) => we_win((&req.nonce, nr), theirs),
        _ => true,
    };
    match child::accept(sa, ctx, &req, &payloads, won) {
        Ok(()) => {
            sa.child_failures = 0;
            let Some(old) = old else {
                if !req.is_extra() {
                    child::add_resources(sa, ctx, req.index);
                }
                return;
            };
            if won {
                if let Some(theirs) = &collision {
                    sa.log(ctx, "rekey collision: our exchange wins");
                    // The SA of the peer's exchange is redundant: the peer deletes it,
                    // and we never send with it (not even once the old SA is gone).
                    let redundant = sa
                        .children
                        .iter_mut()
                        .find(|c| u64::from(c.spi_in) == theirs.created);
                    if let Some(c) = redundant.filter(|c| c.state == ChildState::Installed) {
                        c.state = ChildState::Rekeyed;
                    }
                }
                if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old)
                    && c.is_active()
                {
                    c.state = ChildState::Rekeyed;
                    sa.queue.push_back(Work::DeleteChildren(vec![old]));
                }
            } else {
                sa.log(
                    ctx,
                    format!(
                        "rekey collision: the peer's exchange wins, deleting our redundant {:08x}",
                        req.spi_in
                    ),
                );
                if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == req.spi_in) {
                    c.state = ChildState::Deleting;
                }
                if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old)
                    && c.is_active()
                {
                    c.state = ChildState::Rekeyed;
                }
                sa.queue.push_back(Work::DeleteChildren(vec![req.spi_in]));
            }
        }
        Err(e) => {
            ctx.child_spis.remove(&req.spi_in);
            if !matches!(e, Error::Notified(_)) && child::find_sa(&payloads).is_some() {
                // The peer installed what we refuse: ask it to remove it (§1.4.1).
                sa.queue.push_back(Work::DeleteChildren(vec![req.spi_in]));
            }
            if req.is_extra() {
                // The child has its SA; this worker sends with it (RFC 9611 §4).
                let name = &sa.policy.children[req.index].name;
                let why = if e == Error::Notified(NotifyType::TS_MAX_QUEUE) {
                    "the peer keeps no more of them".to_string()
                } else {
                    e.to_string()
                };
                sa.log(
                    ctx,
                    format!("CHILD_SA {name}: no further per-resource SA: {why}"),
                );
                return;
            }
            failed(sa, ctx, req.index, old, e);
        }
    }
}

/// Our CREATE_CHILD_SA failed: retry where the peer asks to, report it, and put a
/// Child SA we were rekeying back the way it was.
fn failed(sa: &mut IkeSa, ctx: &mut Ctx<'_>, index: usize, old: Option<u32>, e: Error) {
    let name = sa.policy.children[index].name.clone();
    let temporary = matches!(
        e,
        Error::Notified(NotifyType::TEMPORARY_FAILURE | NotifyType::NO_PROPOSAL_CHOSEN)
    );
    match old.and_then(|spi| sa.children.iter_mut().find(|c| c.spi_in == spi)) {
        Some(c) if e == Error::Notified(NotifyType::CHILD_SA_NOT_FOUND) => {
            // The peer no longer has it: it closed it (its Delete may still be on the
            // way, or already here), so it is gone on both sides.
            let (spi, was_active) = (c.spi_in, c.is_active());
            sa.log(
                ctx,
                format!("CHILD_SA {name} {spi:08x}: the peer has no such SA"),
            );
            super::informational::remove_child(sa, ctx, spi);
            if was_active && !has_active(sa, index) {
                super::informational::closed_by_peer(sa, index);
            }
        }
        Some(c) => {
            if c.state == ChildState::Rekeying {
                // Collided with the peer's rekey: that one stands and deletes this SA.
                c.state = if c.peer_rekey.is_some() {
                    ChildState::Rekeyed
                } else {
                    ChildState::Installed
                };
            }
            if c.state == ChildState::Installed && temporary {
                let spi = c.spi_in;
                let at = ctx.now + ctx.jitter(RETRY_DELAY);
                sa.delayed.push((at, Work::RekeyChild(spi)));
            }
            sa.log(ctx, format!("CHILD_SA {name} rekey failed: {e}"));
        }
        None if old.is_some() => {}
        None => {
            ctx.events.push_back(Event::ChildSaFailed {
                spi_i: sa.spi_i,
                child: name,
                reason: e.clone(),
            });
            sa.child_failures += 1;
            if temporary || sa.policy.children[index].start_action == Action::Start {
                let backoff = RETRY_DELAY * 2u32.pow(sa.child_failures.min(6));
                let at = ctx.now + ctx.jitter(backoff);
                sa.delayed.push((at, Work::CreateChild(index)));
            }
        }
    }
}

/// Queues a new Child SA for child `index` unless one is up or under way.
pub(in super::super) fn recreate_if_wanted(sa: &mut IkeSa, index: usize) {
    let has = sa
        .children
        .iter()
        .any(|c| c.index == index && c.is_active())
        || sa.queue.contains(&Work::CreateChild(index))
        || matches!(&sa.pending, Some(Task::CreateChild(r)) if r.index == index && r.rekeys.is_none());
    if !has {
        sa.queue.push_back(Work::CreateChild(index));
    }
}

/// Responder: answers a CREATE_CHILD_SA request for a Child SA.
pub(super) fn respond(sa: &mut IkeSa, ctx: &mut Ctx<'_>, message_id: u32, payloads: Vec<Payload>) {
    let exchange = ExchangeType::CREATE_CHILD_SA;
    let answer = |sa: &mut IkeSa, ctx: &mut Ctx<'_>, out: Vec<Payload>| {
        if let Err(e) = sa.send_response(ctx, exchange, message_id, out) {
            sa.log(ctx, format!("cannot answer CREATE_CHILD_SA: {e}"));
        }
    };
    let refuse = |sa: &mut IkeSa, ctx: &mut Ctx<'_>, t: NotifyType| {
        let n = crate::wire::payload::NotifyPayload::new(t, Vec::new());
        if let Err(e) = sa.send_response(ctx, exchange, message_id, vec![Payload::Notify(n)]) {
            sa.log(ctx, format!("cannot answer CREATE_CHILD_SA: {e}"));
        }
    };
    if sa.superseded
        || matches!(sa.pending, Some(Task::RekeyIke(_)))
        || sa.state != State::Established
    {
        // §2.25: no new Child SAs on an IKE SA being rekeyed or replaced.
        refuse(sa, ctx, NotifyType::TEMPORARY_FAILURE);
        return;
    }
    let rekey_of = find_notify(&payloads, NotifyType::REKEY_SA)
        .filter(|n| n.protocol == ProtocolId::ESP)
        .and_then(|n| <[u8; 4]>::try_from(n.spi.as_slice()).ok())
        .map(u32::from_be_bytes);
    let old = match rekey_of {
        Some(spi_out) => match sa.children.iter().find(|c| c.spi_out == spi_out) {
            None => {
                refuse(sa, ctx, NotifyType::CHILD_SA_NOT_FOUND);
                return;
            }
            Some(c) if !c.is_active() => {
                // Already replaced or being deleted (§2.8.1, §2.25).
                refuse(sa, ctx, NotifyType::TEMPORARY_FAILURE);
                return;
            }
            Some(c) => Some(c.clone()),
        },
        None => None,
    };
    match child::respond(sa, ctx, &payloads, false, old.as_ref()) {
        Ok(Some(ans)) => {
            if let Some(old) = old.filter(|c| c.state == ChildState::Rekeying) {
                let ni = child::find_nonce(&payloads).unwrap_or_default().to_vec();
                let nr = child::find_nonce(&ans.payloads)
                    .unwrap_or_default()
                    .to_vec();
                if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == old.spi_in) {
                    c.peer_rekey = Some(PeerRekey {
                        nonce_i: ni,
                        nonce_r: nr,
                        created: u64::from(ans.spi_in),
                    });
                }
            }
            sa.child_failures = 0;
            answer(sa, ctx, ans.payloads);
        }
        Ok(None) => refuse(sa, ctx, NotifyType::INVALID_SYNTAX),
        Err(e) => {
            sa.log(ctx, format!("CREATE_CHILD_SA refused: {e}"));
            answer(sa, ctx, vec![child::error_notify(&e)]);
        }
    }
}

/// The rekeyed SA a newer one replaces is gone: the newer one sends from now on.
pub(in super::super) fn activate_successors(sa: &mut IkeSa, ctx: &mut Ctx<'_>, old: u32) {
    for c in &mut sa.children {
        if c.rekeys == Some(old) && !c.outbound && c.state == ChildState::Installed {
            c.outbound = true;
            ctx.events.push_back(Event::ChildSaOutbound {
                spi_i: sa.spi_i,
                spi_in: c.spi_in,
            });
        }
    }
}

/// True if child `index` has an SA that is neither replaced nor going away.
pub(in super::super) fn has_active(sa: &IkeSa, index: usize) -> bool {
    sa.children
        .iter()
        .any(|c: &ChildSa| c.index == index && c.is_active())
}
