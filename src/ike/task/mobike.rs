//! MOBIKE (RFC 4555): a client whose address changes tells its gateway with
//! UPDATE_SA_ADDRESSES from the new address, and both sides move the IKE SA and its
//! Child SAs there without negotiating anything again. NAT detection runs again on
//! the new path; COOKIE2 ties the answer to the request (§3.5, §3.6).

use super::super::ike_sa::{Ctx, IkeSa, Work};
use super::super::natd;
use super::{Task, notify};
use crate::wire::message::{find_notify, notifies};
use crate::wire::payload::Payload;
use crate::wire::{ExchangeType, NotifyType};
use std::net::SocketAddr;

/// The UPDATE_SA_ADDRESSES request in flight: its COOKIE2.
pub(in super::super) struct Update {
    cookie2: Vec<u8>,
}

/// MOBIKE_SUPPORTED for IKE_AUTH, when the policy allows MOBIKE.
pub(super) fn supported(sa: &IkeSa) -> Option<Payload> {
    sa.policy
        .mobike
        .then(|| notify(NotifyType::MOBIKE_SUPPORTED, Vec::new()))
}

/// Notes whether MOBIKE is on for the SA: both sides announced it in IKE_AUTH.
pub(super) fn negotiated(sa: &mut IkeSa, payloads: &[Payload]) {
    sa.mobike = sa.policy.mobike && find_notify(payloads, NotifyType::MOBIKE_SUPPORTED).is_some();
}

/// Gateway: the payloads answering an INFORMATIONAL request that holds
/// UPDATE_SA_ADDRESSES (none for other requests): the SA moves to the addresses the
/// request came over, after NAT detection on them, unless the peer forbade NATs
/// and there is one.
pub(super) fn update_requested(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    payloads: &[Payload],
) -> Vec<Payload> {
    if find_notify(payloads, NotifyType::UPDATE_SA_ADDRESSES).is_none() {
        return Vec::new();
    }
    let Some((local, remote)) = sa.reply_to.filter(|_| sa.mobike) else {
        sa.log(ctx, "UPDATE_SA_ADDRESSES without MOBIKE: ignored");
        return Vec::new();
    };
    let nat = natd::detect((sa.spi_i, sa.spi_r), payloads, local, remote);
    if nat.is_some_and(|(ours, theirs)| ours || theirs)
        && find_notify(payloads, NotifyType::NO_NATS_ALLOWED).is_some()
    {
        sa.log(
            ctx,
            format!("peer at {remote} forbids NATs, and there is one: staying"),
        );
        return vec![notify(NotifyType::UNEXPECTED_NAT_DETECTED, Vec::new())];
    }
    if let Some((ours, theirs)) = nat {
        sa.note_nat(ours, theirs);
    }
    sa.move_to(ctx, local, remote);
    let mut out = natd::notifies(
        (sa.spi_i, sa.spi_r),
        local,
        remote,
        sa.policy.encap,
        ctx.rng,
    )
    .to_vec();
    if let Some(cookie2) = find_notify(payloads, NotifyType::COOKIE2) {
        out.push(notify(NotifyType::COOKIE2, cookie2.data.clone()));
    }
    out
}

/// Client: our address became `local` (the kernel routes to the peer from there,
/// and the SA sends from it already): tell the peer from it. The Child SAs move
/// once the peer has answered.
pub(in super::super) fn start_update(sa: &mut IkeSa, ctx: &mut Ctx<'_>, local: SocketAddr) {
    if !sa.mobike || local != sa.local {
        return;
    }
    sa.log(
        ctx,
        format!("our address is now {local}: updating the peer (MOBIKE)"),
    );
    let mut cookie2 = vec![0; 16];
    ctx.rng.fill(&mut cookie2);
    let mut payloads = vec![notify(NotifyType::UPDATE_SA_ADDRESSES, Vec::new())];
    payloads.extend(natd::notifies(
        (sa.spi_i, sa.spi_r),
        local,
        sa.remote,
        sa.policy.encap,
        ctx.rng,
    ));
    payloads.push(notify(NotifyType::COOKIE2, cookie2.clone()));
    let task = Task::UpdateAddresses(Update { cookie2 });
    if let Err(e) = sa.send_request(ctx, ExchangeType::INFORMATIONAL, payloads, task) {
        sa.log(ctx, format!("cannot send UPDATE_SA_ADDRESSES: {e}"));
    }
}

/// Client: the gateway answered our UPDATE_SA_ADDRESSES: the Child SAs follow.
pub(super) fn updated(sa: &mut IkeSa, ctx: &mut Ctx<'_>, update: Update, payloads: &[Payload]) {
    let echoed = find_notify(payloads, NotifyType::COOKIE2).map(|n| n.data.as_slice());
    if echoed != Some(update.cookie2.as_slice()) {
        sa.log(
            ctx,
            "UPDATE_SA_ADDRESSES answered without our COOKIE2: ignored",
        );
        return;
    }
    if let Some(n) = notifies(payloads).find(|n| n.notify_type.is_error()) {
        sa.log(
            ctx,
            format!("peer refused our new address: {}", n.notify_type),
        );
        return;
    }
    let (local, remote) = (sa.local, sa.remote);
    if let Some((ours, theirs)) = natd::detect((sa.spi_i, sa.spi_r), payloads, local, remote) {
        sa.note_nat(ours, theirs);
    }
    let natt = ctx.settings.natt_port;
    if sa.behind_nat && local.port() != natt {
        // The new path has a NAT the old one had not: ESP must go in UDP, so the SA
        // floats to the NAT-T ports first (RFC 7296 §2.23) and says so from there.
        sa.local.set_port(natt);
        if sa.remote.port() == 500 {
            sa.remote.set_port(4500);
        }
        sa.log(
            ctx,
            format!(
                "NAT on the new path: floating to {} -> {}",
                sa.local, sa.remote
            ),
        );
        sa.queue.push_front(Work::UpdateAddresses(sa.local));
        return;
    }
    sa.announce_move(ctx);
}
