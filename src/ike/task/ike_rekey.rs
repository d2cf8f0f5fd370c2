//! CREATE_CHILD_SA rekeying the IKE SA (RFC 7296 §1.3.2, §2.18): a new IKE SA keyed
//! from the old SK_d takes over the Child SAs, message IDs start again at zero, and
//! the rekey's initiator deletes the old SA. Collisions go by the lowest nonce (§2.8.2).

use super::super::ike_sa::{Ctx, IkeSa, PeerRekey, Request, State, Work};
use super::super::{Error, Event, proposal};
use super::Task;
use super::child::{find_ke, find_nonce, find_sa, wanted_group};
use super::create_child::we_win;
use crate::crypto::keys::rekey_skeyseed;
use crate::crypto::{IkeKeys, IkeSuite, KeyExchange, Secret, SkKey};
use crate::wire::payload::{KePayload, NoncePayload, NotifyPayload, Payload, Proposal, SaPayload};
use crate::wire::{ExchangeType, IkeSpi, NotifyType, ProtocolId};
use std::time::Duration;

/// Least wait before an IKE SA rekey the peer refused for now is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Our side of an IKE SA rekey we started.
pub(in super::super) struct IkeRekey {
    /// Our SPI of the new IKE SA (its initiator SPI).
    pub spi: IkeSpi,
    pub nonce: Vec<u8>,
    pub kex: KeyExchange,
    pub proposals: Vec<Proposal>,
    pub restarts: u8,
}

fn with_spi(proposals: &[Proposal], spi: IkeSpi) -> Vec<Proposal> {
    proposals
        .iter()
        .map(|p| Proposal {
            spi: spi.0.to_be_bytes().to_vec(),
            ..p.clone()
        })
        .collect()
}

fn request_payloads(r: &IkeRekey) -> Vec<Payload> {
    vec![
        Payload::Sa(SaPayload {
            proposals: r.proposals.clone(),
        }),
        Payload::Nonce(NoncePayload {
            data: r.nonce.clone(),
        }),
        Payload::Ke(KePayload {
            group: r.kex.group(),
            data: r.kex.public_value().to_vec(),
        }),
    ]
}

/// Initiator: sends the rekey request with the policy's proposals.
pub(in super::super) fn start(sa: &mut IkeSa, ctx: &mut Ctx<'_>) -> Result<(), Error> {
    let spi = ctx.fresh_ike_spi();
    let group = sa
        .suite
        .map(|s| s.group)
        .ok_or_else(|| Error::Internal("rekey before keys".into()))?;
    // The group in use first: the peer accepted it once, so no INVALID_KE round trip.
    let mut proposals = with_spi(&sa.policy.proposals, spi);
    proposals.sort_by_key(|p| proposal::group(p) != Some(group));
    let r = IkeRekey {
        spi,
        nonce: ctx.nonce(),
        kex: KeyExchange::generate(group, ctx.rng)?,
        proposals,
        restarts: 0,
    };
    send(sa, ctx, r)
}

fn send(sa: &mut IkeSa, ctx: &mut Ctx<'_>, r: IkeRekey) -> Result<(), Error> {
    let payloads = request_payloads(&r);
    sa.send_request(
        ctx,
        ExchangeType::CREATE_CHILD_SA,
        payloads,
        Task::RekeyIke(r),
    )?;
    Ok(())
}

/// SKEYSEED and keys of the new IKE SA (§2.18), and the SK keys each side sends with.
fn derive(
    old: &IkeSa,
    suite: &IkeSuite,
    g_ir: &Secret,
    nonces: (&[u8], &[u8]),
    spis: (IkeSpi, IkeSpi),
) -> Result<(IkeKeys, SkKey, SkKey), Error> {
    let (Some(old_suite), Some(old_keys)) = (old.suite, old.keys.as_ref()) else {
        return Err(Error::Internal("rekey before keys".into()));
    };
    let seed = rekey_skeyseed(old_suite.prf, &old_keys.sk_d, g_ir, nonces.0, nonces.1);
    let keys = IkeKeys::derive(suite, &seed, nonces.0, nonces.1, spis.0, spis.1)?;
    let initiator_key = SkKey::new(suite.encr, suite.integ, &keys.sk_ei, &keys.sk_ai)?;
    let responder_key = SkKey::new(suite.encr, suite.integ, &keys.sk_er, &keys.sk_ar)?;
    Ok((keys, initiator_key, responder_key))
}

/// The new IKE SA: established at once, everything learned about the peer kept.
#[allow(clippy::too_many_arguments, reason = "one call per role, all named")]
fn successor(
    old: &IkeSa,
    ctx: &mut Ctx<'_>,
    initiator: bool,
    spis: (IkeSpi, IkeSpi),
    suite: IkeSuite,
    keys: (IkeKeys, SkKey, SkKey),
    nonce_i: Vec<u8>,
    nonce_r: Vec<u8>,
) -> IkeSa {
    let mut new = IkeSa::new(
        old.policy.clone(),
        initiator,
        spis.0,
        old.local,
        old.remote,
        ctx.settings,
    );
    let (keys, initiator_key, responder_key) = keys;
    new.spi_r = spis.1;
    new.suite = Some(suite);
    new.keys = Some(keys);
    (new.sk_out, new.sk_in) = if initiator {
        (Some(initiator_key), Some(responder_key))
    } else {
        (Some(responder_key), Some(initiator_key))
    };
    new.nonce_i = nonce_i;
    new.nonce_r = nonce_r;
    new.peer_fragmentation = old.peer_fragmentation;
    new.peer_hashes = old.peer_hashes.clone();
    new.nat_detected = old.nat_detected;
    new.behind_nat = old.behind_nat;
    new.peer_behind_nat = old.peer_behind_nat;
    new.remote_id = old.remote_id.clone();
    new.established(ctx);
    new
}

/// Hands the Child SAs of `old`, and the work for them, to its replacement `new`
/// and says so.
fn hand_over(old: &mut IkeSa, ctx: &mut Ctx<'_>, new: &mut IkeSa) {
    old.superseded = true;
    new.children = std::mem::take(&mut old.children);
    new.virtual_ips = std::mem::take(&mut old.virtual_ips);
    new.dns = std::mem::take(&mut old.dns);
    new.delayed.extend(old.take_child_work(ctx.now));
    if let Some(up) = new.summary() {
        ctx.events.push_back(Event::IkeSaRekeyed {
            old: old.spi_i,
            up: Box::new(up),
        });
    }
}

/// Initiator: the answer to our rekey.
pub(super) fn response(sa: &mut IkeSa, ctx: &mut Ctx<'_>, r: IkeRekey, payloads: Vec<Payload>) {
    if let Some(group) = wanted_group(&payloads) {
        let allowed = r.proposals.iter().any(|p| proposal::offers_group(p, group));
        if allowed && r.restarts < 2 && group != r.kex.group() {
            let retried = KeyExchange::generate(group, ctx.rng)
                .map_err(Error::from)
                .and_then(|kex| {
                    let restarts = r.restarts + 1;
                    send(sa, ctx, IkeRekey { kex, restarts, ..r })
                });
            if let Err(e) = retried {
                sa.log(ctx, format!("IKE_SA rekey failed: {e}"));
            }
            return;
        }
    }
    match accept(sa, ctx, &r, &payloads) {
        Ok(mut new) => {
            let won = sa
                .peer_rekey
                .as_ref()
                .is_none_or(|theirs| we_win((&r.nonce, &new.nonce_r), theirs));
            if won {
                if let Some(theirs) = sa.peer_rekey.take() {
                    sa.log(ctx, "IKE_SA rekey collision: our exchange wins");
                    ctx.requests
                        .push(Request::Redundant(IkeSpi(theirs.created)));
                }
                hand_over(sa, ctx, &mut new);
                sa.queue.push_back(Work::DeleteIke);
            } else {
                sa.log(ctx, "IKE_SA rekey collision: the peer's exchange wins");
                adopt_into_peers(sa, ctx);
                new.redundant();
                new.queue.push_back(Work::DeleteIke);
            }
            ctx.requests.push(Request::Spawn(Box::new(new)));
        }
        Err(e) => {
            sa.log(ctx, format!("IKE_SA rekey failed: {e}"));
            if sa.peer_rekey.is_some() {
                adopt_into_peers(sa, ctx);
            } else if !sa.superseded {
                let at = ctx.now + ctx.jitter(RETRY_DELAY);
                sa.delayed.push((at, Work::RekeyIke));
            }
        }
    }
}

/// The peer's rekey of this IKE SA stands: its new IKE SA (ours as responder) takes
/// the Child SAs, and the peer deletes this one.
pub(super) fn adopt_into_peers(sa: &mut IkeSa, ctx: &mut Ctx<'_>) {
    let Some(theirs) = sa.peer_rekey.take() else {
        return;
    };
    sa.superseded = true;
    let children = std::mem::take(&mut sa.children);
    ctx.requests.push(Request::AdoptChildren {
        to: IkeSpi(theirs.created),
        children,
        work: sa.take_child_work(ctx.now),
        virtual_ips: std::mem::take(&mut sa.virtual_ips),
        dns: std::mem::take(&mut sa.dns),
        remote_id: sa.remote_id.clone(),
    });
    ctx.requests.push(Request::Announce {
        spi: IkeSpi(theirs.created),
        old: sa.spi_i,
    });
}

fn accept(
    sa: &IkeSa,
    ctx: &mut Ctx<'_>,
    r: &IkeRekey,
    payloads: &[Payload],
) -> Result<IkeSa, Error> {
    if let Some(n) = crate::wire::message::notifies(payloads).find(|n| n.notify_type.is_error()) {
        return Err(Error::Notified(n.notify_type));
    }
    let [chosen] = find_sa(payloads).ok_or_else(|| Error::InvalidSyntax("no SA".into()))? else {
        return Err(Error::InvalidSyntax("answer must hold one proposal".into()));
    };
    if chosen.protocol != ProtocolId::IKE || !proposal::allows(&r.proposals, chosen) {
        return Err(Error::NoProposalChosen);
    }
    let spi_r = <[u8; 8]>::try_from(chosen.spi.as_slice())
        .map(|b| IkeSpi(u64::from_be_bytes(b)))
        .map_err(|_| Error::InvalidSyntax("responder's new IKE SPI is not 8 bytes".into()))?;
    let suite = IkeSuite::from_proposal(chosen)?;
    let ke = find_ke(payloads)
        .filter(|k| k.group == suite.group && r.kex.group() == suite.group)
        .ok_or_else(|| Error::InvalidSyntax(format!("no KE for {}", suite.group)))?;
    let nr = find_nonce(payloads).ok_or_else(|| Error::InvalidSyntax("no Nonce".into()))?;
    let g_ir = r.kex.shared_secret(&ke.data)?;
    let keys = derive(sa, &suite, &g_ir, (&r.nonce, nr), (r.spi, spi_r))?;
    Ok(successor(
        sa,
        ctx,
        true,
        (r.spi, spi_r),
        suite,
        keys,
        r.nonce.clone(),
        nr.to_vec(),
    ))
}

/// Responder: answers a CREATE_CHILD_SA that rekeys the IKE SA.
pub(super) fn respond(sa: &mut IkeSa, ctx: &mut Ctx<'_>, message_id: u32, payloads: Vec<Payload>) {
    let exchange = ExchangeType::CREATE_CHILD_SA;
    let colliding = matches!(sa.pending, Some(Task::RekeyIke(_)));
    let busy_with_children = matches!(
        sa.pending,
        Some(Task::CreateChild(_) | Task::DeleteChildren(_))
    );
    let result = if sa.superseded || sa.state != State::Established || busy_with_children {
        // §2.25.2: not while this SA is replaced or its Child SAs are being changed.
        Err(Error::Notified(NotifyType::TEMPORARY_FAILURE))
    } else {
        answer(sa, ctx, &payloads)
    };
    match result {
        Ok((mut new, out)) => {
            if let Err(e) = sa.send_response(ctx, exchange, message_id, out) {
                sa.log(ctx, format!("cannot answer the IKE_SA rekey: {e}"));
                return;
            }
            if colliding {
                sa.peer_rekey = Some(PeerRekey {
                    nonce_i: new.nonce_i.clone(),
                    nonce_r: new.nonce_r.clone(),
                    created: new.spi_r.0,
                });
            } else {
                hand_over(sa, ctx, &mut new);
            }
            ctx.requests.push(Request::Spawn(Box::new(new)));
        }
        Err(e) => {
            sa.log(ctx, format!("IKE_SA rekey refused: {e}"));
            let data = match &e {
                Error::InvalidKePayload { wanted, .. } => wanted.0.to_be_bytes().to_vec(),
                _ => Vec::new(),
            };
            let n = Payload::Notify(NotifyPayload::new(e.notify(), data));
            if let Err(e) = sa.send_response(ctx, exchange, message_id, vec![n]) {
                sa.log(ctx, format!("cannot answer the IKE_SA rekey: {e}"));
            }
        }
    }
}

fn answer(
    sa: &IkeSa,
    ctx: &mut Ctx<'_>,
    payloads: &[Payload],
) -> Result<(IkeSa, Vec<Payload>), Error> {
    let offered = find_sa(payloads).ok_or_else(|| Error::InvalidSyntax("no SA".into()))?;
    let ke = find_ke(payloads).ok_or_else(|| Error::InvalidSyntax("no KE".into()))?;
    let ni = find_nonce(payloads).ok_or_else(|| Error::InvalidSyntax("no Nonce".into()))?;
    let with_their_group = proposal::with_group(offered, ke.group);
    let Some(chosen) = proposal::select(&sa.policy.proposals, &with_their_group) else {
        return Err(
            match proposal::select(&sa.policy.proposals, offered)
                .as_ref()
                .and_then(proposal::group)
            {
                Some(wanted) => Error::InvalidKePayload {
                    offered: ke.group,
                    wanted,
                },
                None => Error::NoProposalChosen,
            },
        );
    };
    let spi_i = <[u8; 8]>::try_from(chosen.spi.as_slice())
        .map(|b| IkeSpi(u64::from_be_bytes(b)))
        .map_err(|_| Error::InvalidSyntax("initiator's new IKE SPI is not 8 bytes".into()))?;
    let suite = IkeSuite::from_proposal(&chosen)?;
    let kex = KeyExchange::generate(suite.group, ctx.rng)?;
    let g_ir = kex.shared_secret(&ke.data)?;
    let nr = ctx.nonce();
    let spi_r = ctx.fresh_ike_spi();
    let keys = derive(sa, &suite, &g_ir, (ni, &nr), (spi_i, spi_r))?;
    let new = successor(
        sa,
        ctx,
        false,
        (spi_i, spi_r),
        suite,
        keys,
        ni.to_vec(),
        nr.clone(),
    );
    let out = vec![
        Payload::Sa(SaPayload {
            proposals: vec![Proposal {
                spi: spi_r.0.to_be_bytes().to_vec(),
                ..chosen
            }],
        }),
        Payload::Nonce(NoncePayload { data: nr }),
        Payload::Ke(KePayload {
            group: kex.group(),
            data: kex.public_value().to_vec(),
        }),
    ];
    Ok((new, out))
}
