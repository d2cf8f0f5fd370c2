//! IKE_AUTH (RFC 7296 §1.2, §2.15): identities, certificates and AUTH by either
//! side, with the first Child SA riding along.

use super::super::ike_sa::{Ctx, IkeSa, Request, State, Work};
use super::super::{DownReason, Error, Event, LocalAuth, Policy, RemoteAuth};
use super::Task;
use super::child::{self, ChildRequest};
use super::{cp, mobike};
use crate::auth::x509::{check_identity, validate_chain};
use crate::auth::{Credential, psk_auth_data, signed_octets, verify};
use crate::wire::message::{find_notify, notifies};
use crate::wire::payload::{
    AuthPayload, CertPayload, CertReqPayload, IdPayload, NotifyPayload, Payload,
};
use crate::wire::{AuthMethod, CertEncoding, ExchangeType, NotifyType};
use std::sync::Arc;

fn id_payload(payloads: &[Payload], initiator: bool) -> Option<&IdPayload> {
    payloads.iter().find_map(|p| match (p, initiator) {
        (Payload::IdI(id), true) | (Payload::IdR(id), false) => Some(id),
        _ => None,
    })
}

fn auth_payload(payloads: &[Payload]) -> Option<&AuthPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Auth(a) => Some(a),
        _ => None,
    })
}

/// The certificates a peer sent, leaf first (RFC 7296 §3.6: the first CERT holds the key).
fn certificates(payloads: &[Payload]) -> Vec<&[u8]> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Cert(c) if c.encoding == CertEncoding::X509_CERT_SIG => {
                Some(c.data.as_slice())
            }
            _ => None,
        })
        .collect()
}

/// Our ID, certificates and (when we check certificates) CERTREQ.
fn identity_payloads(policy: &Policy, initiator: bool) -> (IdPayload, Vec<Payload>) {
    let id = IdPayload {
        id: policy.local.id().clone(),
    };
    let mut out = vec![if initiator {
        Payload::IdI(id.clone())
    } else {
        Payload::IdR(id.clone())
    }];
    if let LocalAuth::Pubkey { certs, .. } = &policy.local {
        out.extend(certs.iter().map(|der| {
            Payload::Cert(CertPayload {
                encoding: CertEncoding::X509_CERT_SIG,
                data: der.clone(),
            })
        }));
    }
    (id, out)
}

/// Our AUTH payload over our signed octets.
fn our_auth(sa: &IkeSa, id: &IdPayload) -> Result<AuthPayload, Error> {
    let (Some(suite), Some(keys)) = (sa.suite, sa.keys.as_ref()) else {
        return Err(Error::Internal("AUTH before keys".into()));
    };
    let octets = if sa.initiator {
        signed_octets(&sa.init_request, &sa.nonce_r, suite.prf, &keys.sk_pi, id)
    } else {
        signed_octets(&sa.init_response, &sa.nonce_i, suite.prf, &keys.sk_pr, id)
    };
    Ok(match &sa.policy.local {
        LocalAuth::Psk { psk, .. } => AuthPayload {
            method: AuthMethod::SHARED_KEY_MIC,
            data: psk_auth_data(suite.prf, psk, &octets).expose().to_vec(),
        },
        LocalAuth::Pubkey { key, .. } => key.sign(&octets, sa.peer_hashes.as_deref())?,
    })
}

/// Checks the peer's identity, certificate chain and AUTH payload under `policy`.
fn authenticate_peer(
    sa: &IkeSa,
    ctx: &Ctx<'_>,
    policy: &Policy,
    id: &IdPayload,
    payloads: &[Payload],
) -> Result<(), Error> {
    let failed = |why: String| Error::AuthenticationFailed(why);
    let auth = auth_payload(payloads).ok_or_else(|| failed("no AUTH payload".into()))?;
    let want = policy.remote.id();
    if !want.accepts(&id.id) {
        return Err(failed(format!(
            "peer identity {} is not the expected {want}",
            id.id
        )));
    }
    let (Some(suite), Some(keys)) = (sa.suite, sa.keys.as_ref()) else {
        return Err(Error::Internal("AUTH before keys".into()));
    };
    let octets = if sa.initiator {
        signed_octets(&sa.init_response, &sa.nonce_i, suite.prf, &keys.sk_pr, id)
    } else {
        signed_octets(&sa.init_request, &sa.nonce_r, suite.prf, &keys.sk_pi, id)
    };
    match &policy.remote {
        RemoteAuth::Psk { psk, .. } => {
            verify(auth, &octets, suite.prf, Credential::Psk(psk))?;
        }
        RemoteAuth::Pubkey { anchors, .. } => {
            let certs = certificates(payloads);
            let (leaf, intermediates) = certs
                .split_first()
                .ok_or_else(|| failed("peer sent no certificate".into()))?;
            let intermediates: Vec<Vec<u8>> = intermediates.iter().map(|c| c.to_vec()).collect();
            let key = validate_chain(leaf, &intermediates, anchors, ctx.unix_now())?;
            check_identity(&id.id, leaf)?;
            verify(auth, &octets, suite.prf, Credential::PublicKey(&key))?;
        }
    }
    Ok(())
}

/// Initiator: sends IKE_AUTH with the first Child SA.
pub(in super::super) fn start(sa: &mut IkeSa, ctx: &mut Ctx<'_>) -> Result<(), Error> {
    let policy = sa.policy.clone();
    let (id, mut payloads) = identity_payloads(&policy, true);
    if sa.initial_contact {
        payloads.push(Payload::Notify(NotifyPayload::new(
            NotifyType::INITIAL_CONTACT,
            Vec::new(),
        )));
    }
    if let RemoteAuth::Pubkey { anchors, .. } = &policy.remote {
        payloads.push(Payload::CertReq(CertReqPayload {
            encoding: CertEncoding::X509_CERT_SIG,
            authorities: anchors.certreq_hashes(),
        }));
    }
    if let Some(remote_id) = policy.remote.id().exact() {
        payloads.push(Payload::IdR(IdPayload {
            id: remote_id.clone(),
        }));
    }
    payloads.push(Payload::Auth(our_auth(sa, &id)?));
    payloads.extend(cp::request(&policy.vips));
    payloads.extend(mobike::supported(sa));
    let child = if policy.children.is_empty() {
        None
    } else {
        // The first child the operator did not take down (the first if all are).
        let first = (0..policy.children.len())
            .find(|&i| !ctx.is_held(&policy, i))
            .unwrap_or(0);
        let (req, child_payloads) = child::request(sa, ctx, first, None, true, None)?;
        payloads.extend(child_payloads);
        Some(req)
    };
    sa.send_request(ctx, ExchangeType::IKE_AUTH, payloads, Task::IkeAuth(child))?;
    sa.state = State::AuthSent;
    Ok(())
}

/// Reports the newly authenticated SA.
fn announce(sa: &IkeSa, ctx: &mut Ctx<'_>) {
    if let Some(up) = sa.summary() {
        ctx.events.push_back(Event::IkeSaUp(Box::new(up)));
    }
}

/// Initiator: takes the IKE_AUTH response.
pub(super) fn response(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    child: Option<ChildRequest>,
    payloads: Vec<Payload>,
) {
    let release = |ctx: &mut Ctx<'_>| {
        if let Some(req) = &child {
            ctx.child_spis.remove(&req.spi_in);
        }
    };
    if auth_payload(&payloads).is_none() {
        let notify = notifies(&payloads)
            .find(|n| n.notify_type.is_error())
            .map_or(NotifyType::INVALID_SYNTAX, |n| n.notify_type);
        // What the peer's operator needs to match against its configuration.
        let sent = match notify {
            NotifyType::AUTHENTICATION_FAILED => format!(
                " (we sent the identity {} and authenticated by {})",
                sa.policy.local.id(),
                sa.policy.local.method()
            ),
            _ => String::new(),
        };
        sa.log(ctx, format!("IKE_AUTH refused with {notify}{sent}"));
        release(ctx);
        sa.down(ctx, DownReason::Refused(notify));
        return;
    }
    let policy = sa.policy.clone();
    let verdict = id_payload(&payloads, false)
        .ok_or_else(|| Error::InvalidSyntax("no IDr".into()))
        .and_then(|id| authenticate_peer(sa, ctx, &policy, id, &payloads).map(|()| id.clone()));
    let id = match verdict {
        Ok(id) => id,
        Err(e) => {
            sa.log(ctx, format!("responder not authenticated: {e}"));
            release(ctx);
            let notify = NotifyPayload::new(e.notify(), Vec::new());
            if let Err(send) = sa.send_request(
                ctx,
                ExchangeType::INFORMATIONAL,
                vec![Payload::Notify(notify)],
                Task::Informational,
            ) {
                sa.log(ctx, format!("cannot tell the peer: {send}"));
            }
            sa.down(ctx, DownReason::Failed(e));
            return;
        }
    };
    if let Err(e) = cp::accept(sa, &payloads) {
        let why = refusal_of_child(&payloads);
        sa.log(ctx, format!("{e}{why}: closing the IKE_SA"));
        release(ctx);
        let delete = vec![Payload::Delete(crate::wire::payload::DeletePayload::ike())];
        if let Err(send) = sa.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            delete,
            Task::Informational,
        ) {
            sa.log(ctx, format!("cannot send Delete: {send}"));
        }
        sa.down(ctx, DownReason::Failed(e));
        return;
    }
    sa.remote_id = Some(id.id.clone());
    mobike::negotiated(sa, &payloads);
    sa.established(ctx);
    announce(sa, ctx);
    // Every further child of the connection follows in CREATE_CHILD_SA (§1.3.1).
    let first = child.as_ref().map(|req| req.index);
    for index in (0..sa.policy.children.len()).filter(|&i| Some(i) != first) {
        sa.queue.push_back(Work::CreateChild(index));
    }
    let Some(req) = child else {
        return;
    };
    let accepted = child::accept(sa, ctx, &req, &payloads, true);
    if accepted.is_ok() {
        child::add_resources(sa, ctx, req.index);
    }
    if let Err(e) = accepted {
        sa.child_failures += 1;
        ctx.child_spis.remove(&req.spi_in);
        let installed_by_peer = payloads.iter().any(|p| matches!(p, Payload::Sa(_)));
        ctx.events.push_back(Event::ChildSaFailed {
            spi_i: sa.spi_i,
            child: sa.policy.children[req.index].name.clone(),
            reason: e,
        });
        if installed_by_peer {
            // The responder installed what we refuse: ask it to remove it (§1.4.1).
            let delete = crate::wire::payload::DeletePayload::esp(&[req.spi_in]);
            if let Err(send) = sa.send_request(
                ctx,
                ExchangeType::INFORMATIONAL,
                vec![Payload::Delete(delete)],
                Task::Informational,
            ) {
                sa.log(ctx, format!("cannot delete the refused CHILD_SA: {send}"));
            }
        }
    }
}

/// ", the gateway sent NOTIFY" for the error notify that refused the Child SA, if any.
fn refusal_of_child(payloads: &[Payload]) -> String {
    child::refusal(payloads).map_or_else(String::new, |n| {
        format!(" (the gateway sent {})", n.notify_type)
    })
}

/// Responder: picks the policy the IDs ask for among `candidates`.
fn choose_policy(
    candidates: &[Arc<Policy>],
    peer: &IdPayload,
    ours: Option<&IdPayload>,
    method: AuthMethod,
) -> Option<Arc<Policy>> {
    let fits = |p: &Arc<Policy>, strict: bool| {
        let remote_ok = p.remote.id().accepts(&peer.id);
        let local_ok = !strict || ours.is_none_or(|id| *p.local.id() == id.id);
        let method_ok = matches!(
            (&p.remote, method),
            (RemoteAuth::Psk { .. }, AuthMethod::SHARED_KEY_MIC)
        ) || matches!(&p.remote, RemoteAuth::Pubkey { .. })
            && method != AuthMethod::SHARED_KEY_MIC;
        remote_ok && local_ok && method_ok
    };
    candidates
        .iter()
        .find(|p| fits(p, true))
        .or_else(|| candidates.iter().find(|p| fits(p, false)))
        .cloned()
}

/// Responder: answers IKE_AUTH.
pub(super) fn respond(sa: &mut IkeSa, ctx: &mut Ctx<'_>, message_id: u32, payloads: Vec<Payload>) {
    let exchange = ExchangeType::IKE_AUTH;
    let (Some(peer_id), Some(auth)) = (id_payload(&payloads, true), auth_payload(&payloads)) else {
        let e = Error::InvalidSyntax("IKE_AUTH needs IDi and AUTH".into());
        sa.log(ctx, e.to_string());
        sa.send_error_response(ctx, exchange, message_id, &e);
        sa.down(ctx, DownReason::Failed(e));
        return;
    };
    let wanted_id = id_payload(&payloads, false);
    // IKE_SA_INIT left as candidates the connections that the addresses and its
    // proposal allow.
    let candidates = if sa.candidates.is_empty() {
        std::slice::from_ref(&sa.policy)
    } else {
        sa.candidates.as_slice()
    };
    let verdict = choose_policy(candidates, peer_id, wanted_id, auth.method)
        .ok_or_else(|| {
            let why = if choose_policy(ctx.policies, peer_id, wanted_id, auth.method).is_some() {
                "only connections that do not allow this IKE SA's addresses or proposal accept"
            } else {
                "no connection accepts"
            };
            Error::AuthenticationFailed(format!("{why} peer identity {}", peer_id.id))
        })
        .and_then(|policy| {
            authenticate_peer(sa, ctx, &policy, peer_id, &payloads).map(|()| policy)
        });
    let policy = match verdict {
        Ok(p) => p,
        Err(e) => {
            sa.log(ctx, format!("peer {} not authenticated: {e}", peer_id.id));
            sa.send_error_response(ctx, exchange, message_id, &e);
            sa.down(ctx, DownReason::Failed(e));
            return;
        }
    };
    sa.policy = policy.clone();
    let peer_id = peer_id.clone();
    let (id, mut out) = identity_payloads(&policy, false);
    mobike::negotiated(sa, &payloads);
    if sa.mobike {
        out.extend(mobike::supported(sa));
    }
    match our_auth(sa, &id) {
        Ok(auth) => out.push(Payload::Auth(auth)),
        Err(e) => {
            sa.log(ctx, format!("cannot make our AUTH: {e}"));
            sa.send_error_response(ctx, exchange, message_id, &e);
            sa.down(ctx, DownReason::Failed(e));
            return;
        }
    }
    sa.remote_id = Some(peer_id.id.clone());
    let config_reply = cp::lease(sa, ctx, &payloads);
    sa.established(ctx);
    announce(sa, ctx);
    if find_notify(&payloads, NotifyType::INITIAL_CONTACT).is_some() {
        ctx.requests.push(Request::InitialContact {
            keep: sa.our_spi(),
            remote_id: peer_id.id.clone(),
        });
    }
    let child = config_reply.and_then(|reply| {
        out.extend(reply);
        child::respond(sa, ctx, &payloads, true, None)
    });
    match child {
        Ok(Some(answer)) => out.extend(answer.payloads),
        Ok(None) => {}
        Err(e) => {
            let name = policy
                .children
                .first()
                .map_or("", |c| c.name.as_str())
                .to_owned();
            out.push(Payload::Notify(NotifyPayload::new(e.notify(), Vec::new())));
            ctx.events.push_back(Event::ChildSaFailed {
                spi_i: sa.spi_i,
                child: name,
                reason: e,
            });
        }
    }
    if let Err(e) = sa.send_response(ctx, exchange, message_id, out) {
        sa.log(ctx, format!("cannot send IKE_AUTH response: {e}"));
        sa.down(ctx, DownReason::Failed(e));
    }
}
