//! INFORMATIONAL (RFC 7296 §1.4): deletes in both directions, error notifies, and an
//! empty answer to everything else (liveness checks, MOBIKE address updates) so the
//! peer keeps the SA.

use super::super::ike_sa::{Ctx, IkeSa, State};
use super::super::{DownReason, Event};
use super::Task;
use crate::wire::payload::{DeletePayload, NotifyPayload, Payload};
use crate::wire::{ExchangeType, NotifyType, ProtocolId};

/// Answers an INFORMATIONAL request.
pub(super) fn respond(sa: &mut IkeSa, ctx: &mut Ctx<'_>, message_id: u32, payloads: Vec<Payload>) {
    let mut out = Vec::new();
    let mut down = None;
    for p in &payloads {
        match p {
            Payload::Delete(d) if d.protocol == ProtocolId::IKE => {
                down = Some(DownReason::DeletedByPeer);
            }
            Payload::Delete(d) if d.protocol == ProtocolId::ESP => {
                let mut ours = Vec::new();
                for spi in d
                    .spis
                    .iter()
                    .filter_map(|s| <[u8; 4]>::try_from(s.as_slice()).ok())
                {
                    let spi_out = u32::from_be_bytes(spi);
                    if let Some(i) = sa.children.iter().position(|c| c.spi_out == spi_out) {
                        let child = sa.children.remove(i);
                        ctx.child_spis.remove(&child.spi_in);
                        ours.push(child.spi_in);
                        ctx.events.push_back(Event::ChildSaDown {
                            spi_i: sa.spi_i,
                            spi_in: child.spi_in,
                            spi_out,
                        });
                    }
                }
                if !ours.is_empty() {
                    out.push(Payload::Delete(DeletePayload::esp(&ours)));
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
        sa.down(ctx, reason);
    }
}

/// A Child SA reached a lifetime (`cause`: time, bytes or packets). Soft asks for a
/// rekey, which this engine cannot do yet, so it is logged once; hard deletes the
/// Child SA on both sides (RFC 4301 §4.4.2.1).
pub(in super::super) fn expire_child(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    spi_in: u32,
    hard: bool,
    cause: &str,
) {
    let Some(i) = sa.children.iter().position(|c| c.spi_in == spi_in) else {
        return;
    };
    if !hard {
        let child = &mut sa.children[i];
        child.soft_at = None;
        let text = format!(
            "CHILD_SA {} {spi_in:08x}: soft lifetime ({cause}) reached; rekeying is not implemented, it ends at its hard lifetime",
            child.name
        );
        sa.log(ctx, text);
        return;
    }
    let child = sa.children.remove(i);
    ctx.child_spis.remove(&child.spi_in);
    sa.log(
        ctx,
        format!(
            "CHILD_SA {} {spi_in:08x}: hard lifetime ({cause}) reached, deleting it",
            child.name
        ),
    );
    ctx.events.push_back(Event::ChildSaDown {
        spi_i: sa.spi_i,
        spi_in: child.spi_in,
        spi_out: child.spi_out,
    });
    let delete = vec![Payload::Delete(DeletePayload::esp(&[child.spi_in]))];
    if let Err(e) = sa.send_request(
        ctx,
        ExchangeType::INFORMATIONAL,
        delete,
        Task::Informational,
    ) {
        sa.log(ctx, format!("cannot send the CHILD_SA Delete: {e}"));
    }
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

/// How often one IKE SA may tell its peer about unknown SPIs.
const INVALID_SPI_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Tells the peer its ESP with SPI `spi` reached no Child SA of ours (RFC 7296
/// §2.21.4), at most once per [`INVALID_SPI_INTERVAL`].
pub(in super::super) fn invalid_spi(sa: &mut IkeSa, ctx: &mut Ctx<'_>, spi: u32) {
    if sa.requester.is_busy()
        || sa
            .invalid_spi_at
            .is_some_and(|t| ctx.now < t + INVALID_SPI_INTERVAL)
    {
        return;
    }
    sa.invalid_spi_at = Some(ctx.now);
    // The SPI goes in the notification data (RFC 7296 §3.10.1).
    let notify = NotifyPayload::new(NotifyType::INVALID_SPI, spi.to_be_bytes().to_vec());
    let payloads = vec![Payload::Notify(notify)];
    if let Err(e) = sa.send_request(
        ctx,
        ExchangeType::INFORMATIONAL,
        payloads,
        Task::Informational,
    ) {
        sa.log(ctx, format!("cannot send INVALID_SPI: {e}"));
    }
}
