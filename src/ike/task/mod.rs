//! Exchanges as small tasks, dispatched through one enum: the task of our
//! outstanding request takes its response; requests are routed by exchange and state;
//! queued [`Work`] becomes a request when the window is free.

pub(super) mod child;
pub(super) mod cp;
pub(super) mod create_child;
pub(super) mod ike_auth;
pub(super) mod ike_init;
pub(super) mod ike_rekey;
pub(in super::super) mod informational;
pub(in super::super) mod mobike;

use super::ike_sa::{Ctx, IkeSa, State, Work};
use super::{DownReason, Error};
use crate::wire::payload::Payload;
use crate::wire::{ExchangeType, Header, NotifyType, ProtocolId};
use child::ChildRequest;
use ike_rekey::IkeRekey;

/// A notify payload of `kind` carrying `data`.
fn notify(kind: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(crate::wire::payload::NotifyPayload::new(kind, data))
}

/// The exchange our outstanding request belongs to.
pub(super) enum Task {
    /// IKE_SA_INIT.
    IkeInit,
    /// IKE_AUTH with the first Child SA, if the policy has one.
    IkeAuth(Option<ChildRequest>),
    /// CREATE_CHILD_SA for a new Child SA or a Child SA rekey.
    CreateChild(ChildRequest),
    /// CREATE_CHILD_SA rekeying the IKE SA.
    RekeyIke(IkeRekey),
    /// INFORMATIONAL deleting these Child SAs (our inbound SPIs).
    DeleteChildren(Vec<u32>),
    /// INFORMATIONAL deleting the IKE SA.
    Delete,
    /// Another INFORMATIONAL (an error notify, a liveness check); its answer needs no action.
    Informational,
    /// INFORMATIONAL moving the SA to our new address (MOBIKE).
    UpdateAddresses(mobike::Update),
}

impl Task {
    /// Starts queued work as a request (the window is free).
    pub fn start(sa: &mut IkeSa, ctx: &mut Ctx<'_>, work: Work) {
        let result = match work {
            Work::CreateChild(index) => {
                if create_child::has_active(sa, index) || ctx.is_held(&sa.policy, index) {
                    Ok(())
                } else {
                    create_child::start(sa, ctx, index, None, None)
                }
            }
            Work::AddResource(index, resource) => {
                if child::has_resource(sa, ctx, index, resource)
                    || !create_child::has_active(sa, index)
                    || ctx.is_held(&sa.policy, index)
                {
                    Ok(())
                } else {
                    create_child::start(sa, ctx, index, None, Some(resource))
                }
            }
            Work::RekeyChild(spi_in) => match sa.children.iter().find(|c| c.spi_in == spi_in) {
                Some(c) => {
                    let index = c.index;
                    create_child::start(sa, ctx, index, Some(spi_in), None)
                }
                None => Ok(()),
            },
            Work::DeleteChildren(spis) => {
                informational::start_delete_children(sa, ctx, spis);
                Ok(())
            }
            Work::RekeyIke if sa.superseded => Ok(()),
            Work::RekeyIke => ike_rekey::start(sa, ctx),
            Work::Dpd => {
                informational::start_notify(sa, ctx, Vec::new());
                Ok(())
            }
            Work::InvalidSpi(spi) => {
                informational::start_notify(sa, ctx, vec![informational::invalid_spi_notify(spi)]);
                Ok(())
            }
            Work::DeleteIke => {
                informational::delete(sa, ctx);
                Ok(())
            }
            Work::UpdateAddresses(local) => {
                mobike::start_update(sa, ctx, local);
                Ok(())
            }
        };
        if let Err(e) = result {
            sa.log(ctx, format!("cannot start a request: {e}"));
        }
    }

    /// Takes the response to this task's request.
    pub fn response(
        self,
        sa: &mut IkeSa,
        ctx: &mut Ctx<'_>,
        datagram: &[u8],
        header: &Header,
        payloads: Vec<Payload>,
    ) {
        match self {
            Self::IkeInit => ike_init::response(sa, ctx, datagram, header, payloads),
            Self::IkeAuth(child) => ike_auth::response(sa, ctx, child, payloads),
            Self::CreateChild(req) => create_child::response(sa, ctx, req, payloads),
            Self::RekeyIke(r) => ike_rekey::response(sa, ctx, r, payloads),
            Self::DeleteChildren(spis) => informational::children_deleted(sa, ctx, &spis),
            Self::Delete => sa.down(ctx, DownReason::DeletedLocally),
            Self::Informational => {}
            Self::UpdateAddresses(update) => mobike::updated(sa, ctx, update, &payloads),
        }
    }

    /// Answers a request that arrived on an existing IKE SA.
    pub fn respond(sa: &mut IkeSa, ctx: &mut Ctx<'_>, header: &Header, payloads: Vec<Payload>) {
        let id = header.message_id;
        match (header.exchange, sa.state) {
            (ExchangeType::IKE_AUTH, State::HalfOpen) => ike_auth::respond(sa, ctx, id, payloads),
            (ExchangeType::INFORMATIONAL, State::Established | State::HalfOpen) => {
                informational::respond(sa, ctx, id, payloads)
            }
            (ExchangeType::CREATE_CHILD_SA, State::Established) => {
                let rekeys_ike = child::find_sa(&payloads)
                    .and_then(<[_]>::first)
                    .is_some_and(|p| p.protocol == ProtocolId::IKE);
                if rekeys_ike {
                    ike_rekey::respond(sa, ctx, id, payloads);
                } else {
                    create_child::respond(sa, ctx, id, payloads);
                }
            }
            (exchange, state) => {
                let error = Error::InvalidSyntax(format!("{exchange} request in state {state:?}"));
                sa.log(ctx, error.to_string());
                sa.send_error_response(ctx, exchange, id, &error);
            }
        }
    }
}
