//! INFORMATIONAL (RFC 7296 §1.4): deletes in both directions, liveness checks
//! (DPD), INVALID_SPI, error notifies, and an empty answer to everything else so the
//! peer keeps the SA.

use super::super::ike_sa::{ChildState, Ctx, IkeSa, State, Work};
use super::super::{Action, DownReason, Event};
use super::Task;
use super::create_child::{activate_successors, has_active, recreate_if_wanted};
use crate::wire::payload::{DeletePayload, NotifyPayload, Payload};
use crate::wire::{ExchangeType, NotifyType, ProtocolId};
use std::time::Duration;

/// How long a deleted or replaced Child SA still opens packets already in flight.
pub(in super::super) const STRAGGLER_GRACE: Duration = Duration::from_secs(3);
/// How often one IKE SA may tell its peer about unknown SPIs.
const INVALID_SPI_INTERVAL: Duration = Duration::from_secs(1);

fn esp_spis(d: &DeletePayload) -> impl Iterator<Item = u32> + '_ {
    d.spis
        .iter()
        .filter_map(|s| <[u8; 4]>::try_from(s.as_slice()).ok())
        .map(u32::from_be_bytes)
}

/// Answers an INFORMATIONAL request.
pub(super) fn respond(sa: &mut IkeSa, ctx: &mut Ctx<'_>, message_id: u32, payloads: Vec<Payload>) {
    let mut out = super::mobike::update_requested(sa, ctx, &payloads);
    let mut down = None;
    for p in &payloads {
        match p {
            Payload::Delete(d) if d.protocol == ProtocolId::IKE => {
                down = Some(DownReason::DeletedByPeer);
            }
            Payload::Delete(d) if d.protocol == ProtocolId::ESP => {
                let mut ours = Vec::new();
                for spi_out in esp_spis(d) {
                    let Some(c) = sa.children.iter().find(|c| {
                        c.spi_out == spi_out && !matches!(c.state, ChildState::Retired { .. })
                    }) else {
                        continue;
                    };
                    let (spi_in, index, was_active) = (c.spi_in, c.index, c.is_active());
                    let per_resource = c.per_resource;
                    // Deletes that cross are not answered with the same SAs (§1.4.1).
                    if c.state != ChildState::Deleting {
                        ours.push(spi_in);
                    }
                    retire(sa, ctx, spi_in);
                    if was_active && !has_active(sa, index) {
                        closed_by_peer(sa, index);
                    } else if was_active && per_resource {
                        // One of several per-resource SAs went without a successor:
                        // its worker would send with another's SA from now on.
                        super::child::add_resources(sa, ctx, index);
                    }
                }
                if !ours.is_empty() {
                    out.push(Payload::Delete(DeletePayload::esp(&ours)));
                }
            }
            Payload::Notify(n) if n.notify_type == NotifyType::INVALID_SPI => {
                let spi = <[u8; 4]>::try_from(n.data.as_slice())
                    .ok()
                    .map(u32::from_be_bytes);
                let lost = sa
                    .children
                    .iter()
                    .find(|c| Some(c.spi_out) == spi && c.is_active())
                    .map(|c| (c.spi_in, c.index));
                if let Some((spi_in, index)) = lost {
                    sa.log(
                        ctx,
                        format!(
                            "peer has no SA {:08x}: replacing CHILD_SA",
                            spi.unwrap_or(0)
                        ),
                    );
                    remove_child(sa, ctx, spi_in);
                    recreate_if_wanted(sa, index);
                }
            }
            Payload::Notify(n) if n.notify_type.is_error() => {
                sa.log(ctx, format!("peer reports {}", n.notify_type));
                if n.notify_type == NotifyType::AUTHENTICATION_FAILED {
                    down = Some(DownReason::Refused(n.notify_type));
                }
            }
            _ => {}
        }
    }
    if let Err(e) = sa.send_response(ctx, ExchangeType::INFORMATIONAL, message_id, out) {
        sa.log(ctx, format!("cannot answer INFORMATIONAL: {e}"));
    }
    if let Some(reason) = down {
        if reason == DownReason::DeletedByPeer && !sa.superseded {
            // Our rekey of this IKE SA crossed the peer's, and the peer deletes it
            // before ours is answered: its exchange won, its new IKE SA takes the
            // Child SAs (§2.8.2).
            super::ike_rekey::adopt_into_peers(sa, ctx);
        }
        sa.down(ctx, reason);
    }
}

/// The peer closed child `index`'s last SA: its `close_action` says what now.
pub(super) fn closed_by_peer(sa: &mut IkeSa, index: usize) {
    if sa.policy.children[index].close_action == Action::Start {
        recreate_if_wanted(sa, index);
    }
}

/// Stops using a Child SA that is deleted on both sides: newer SAs replacing it
/// send from now on, and it goes once the grace for packets in flight is over.
pub(in super::super) fn retire(sa: &mut IkeSa, ctx: &mut Ctx<'_>, spi_in: u32) {
    if let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == spi_in) {
        c.state = ChildState::Retired {
            remove_at: ctx.now + STRAGGLER_GRACE,
        };
        c.outbound = false;
        c.soft_at = None;
        c.hard_at = None;
    }
    activate_successors(sa, ctx, spi_in);
}

/// Removes a Child SA at once (hard lifetime, grace over, gone on the peer).
pub(in super::super) fn remove_child(sa: &mut IkeSa, ctx: &mut Ctx<'_>, spi_in: u32) {
    let Some(i) = sa.children.iter().position(|c| c.spi_in == spi_in) else {
        return;
    };
    let child = sa.children.remove(i);
    ctx.child_spis.remove(&child.spi_in);
    ctx.events.push_back(Event::ChildSaDown {
        spi_i: sa.spi_i,
        spi_in: child.spi_in,
        spi_out: child.spi_out,
    });
    activate_successors(sa, ctx, spi_in);
}

/// A Child SA reached a lifetime (`cause`: time, bytes or packets). Soft starts a
/// rekey; hard removes it and tells the peer (RFC 4301 §4.4.2.1).
pub(in super::super) fn expire_child(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    spi_in: u32,
    hard: bool,
    cause: &str,
) {
    let Some(child) = sa.children.iter_mut().find(|c| c.spi_in == spi_in) else {
        return;
    };
    let name = child.name.clone();
    if !hard {
        child.soft_at = None;
        if child.state == ChildState::Installed {
            sa.log(
                ctx,
                format!("CHILD_SA {name} {spi_in:08x}: soft lifetime ({cause}) reached, rekeying"),
            );
            sa.queue.push_back(Work::RekeyChild(spi_in));
        }
        return;
    }
    let (index, was_active, state) = (child.index, child.is_active(), child.state);
    sa.log(
        ctx,
        format!("CHILD_SA {name} {spi_in:08x}: hard lifetime ({cause}) reached, deleting it"),
    );
    remove_child(sa, ctx, spi_in);
    if !matches!(state, ChildState::Deleting | ChildState::Retired { .. }) {
        sa.queue.push_back(Work::DeleteChildren(vec![spi_in]));
    }
    if was_active && !has_active(sa, index) {
        // Not replaced in time (the rekey failed): a child that should be up comes back.
        if sa.policy.children[index].start_action == Action::Start {
            recreate_if_wanted(sa, index);
        }
    }
}

/// Sends a Delete for Child SAs that still exist (or that we just removed).
pub(super) fn start_delete_children(sa: &mut IkeSa, ctx: &mut Ctx<'_>, spis: Vec<u32>) {
    for c in sa.children.iter_mut().filter(|c| spis.contains(&c.spi_in)) {
        if !matches!(c.state, ChildState::Retired { .. }) {
            c.state = ChildState::Deleting;
        }
    }
    let delete = vec![Payload::Delete(DeletePayload::esp(&spis))];
    if let Err(e) = sa.send_request(
        ctx,
        ExchangeType::INFORMATIONAL,
        delete,
        Task::DeleteChildren(spis),
    ) {
        sa.log(ctx, format!("cannot send the CHILD_SA Delete: {e}"));
    }
}

/// The peer answered our Child SA Delete.
pub(super) fn children_deleted(sa: &mut IkeSa, ctx: &mut Ctx<'_>, spis: &[u32]) {
    for &spi in spis {
        if sa
            .children
            .iter()
            .any(|c| c.spi_in == spi && c.state == ChildState::Deleting)
        {
            retire(sa, ctx, spi);
        }
    }
}

/// Tells the peer its ESP with SPI `spi` reached no Child SA of ours (RFC 7296
/// §2.21.4), at most once per [`INVALID_SPI_INTERVAL`].
pub(in super::super) fn invalid_spi(sa: &mut IkeSa, ctx: &mut Ctx<'_>, spi: u32) {
    if sa
        .invalid_spi_at
        .is_some_and(|t| ctx.now < t + INVALID_SPI_INTERVAL)
        || sa.queue.iter().any(|w| matches!(w, Work::InvalidSpi(_)))
    {
        return;
    }
    sa.invalid_spi_at = Some(ctx.now);
    sa.queue.push_back(Work::InvalidSpi(spi));
}

/// Sends an INFORMATIONAL that carries `payloads` and needs no action on its answer
/// (a liveness check when empty).
pub(super) fn start_notify(sa: &mut IkeSa, ctx: &mut Ctx<'_>, payloads: Vec<Payload>) {
    if let Err(e) = sa.send_request(
        ctx,
        ExchangeType::INFORMATIONAL,
        payloads,
        Task::Informational,
    ) {
        sa.log(ctx, format!("cannot send INFORMATIONAL: {e}"));
    }
}

/// The INVALID_SPI notify: the SPI goes in the notification data (RFC 7296 §3.10.1).
pub(super) fn invalid_spi_notify(spi: u32) -> Payload {
    Payload::Notify(NotifyPayload::new(
        NotifyType::INVALID_SPI,
        spi.to_be_bytes().to_vec(),
    ))
}

/// Deletes the IKE SA (and with it every Child SA): sends Delete and ends the SA once
/// the peer answers or retransmissions run out.
pub(in super::super) fn delete(sa: &mut IkeSa, ctx: &mut Ctx<'_>) {
    if sa.state != State::Established || sa.requester.is_busy() {
        sa.down(ctx, DownReason::DeletedLocally);
        return;
    }
    let delete = vec![Payload::Delete(DeletePayload::ike())];
    if let Err(e) = sa.send_request(ctx, ExchangeType::INFORMATIONAL, delete, Task::Delete) {
        sa.log(ctx, format!("cannot send Delete: {e}"));
        sa.down(ctx, DownReason::DeletedLocally);
    }
}
