//! Exchanges as small tasks, dispatched through one enum: the task of our
//! outstanding request takes its response; requests are routed by exchange and state.

pub(super) mod child;
pub(super) mod ike_auth;
pub(super) mod ike_init;
pub(in super::super) mod informational;

use super::ike_sa::{Ctx, IkeSa, State};
use super::{DownReason, Error};
use crate::wire::payload::{NotifyPayload, Payload};
use crate::wire::{ExchangeType, Header, NotifyType};
use child::ChildRequest;

/// The exchange our outstanding request belongs to.
pub(super) enum Task {
    /// IKE_SA_INIT.
    IkeInit,
    /// IKE_AUTH with the first Child SA, if the policy has one.
    IkeAuth(Option<ChildRequest>),
    /// INFORMATIONAL deleting the IKE SA.
    Delete,
    /// Another INFORMATIONAL (an error notify, a Child SA delete); its answer needs no action.
    Informational,
}

impl Task {
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
            Self::Delete => sa.down(ctx, DownReason::DeletedLocally),
            Self::Informational => {}
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
                // Rekeying and further Child SAs come with a later engine; say so cleanly.
                let refuse = NotifyPayload::new(NotifyType::NO_ADDITIONAL_SAS, Vec::new());
                if let Err(e) =
                    sa.send_response(ctx, header.exchange, id, vec![Payload::Notify(refuse)])
                {
                    sa.log(ctx, format!("cannot answer CREATE_CHILD_SA: {e}"));
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
