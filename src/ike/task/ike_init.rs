//! IKE_SA_INIT (RFC 7296 §1.2): proposals, key exchange and nonces; COOKIE and
//! INVALID_KE_PAYLOAD restarts; NAT detection and the float to the NAT-T port
//! (RFC 3948); fragmentation and signature-hash support announced (RFC 7383, 7427).

use super::super::ephemeral::Ephemerals;
use super::super::ike_sa::{Ctx, IkeSa};
use super::super::{DownReason, Error, Policy, natd, proposal};
use super::{Task, ike_auth, notify};
use crate::auth::signature::Hash;
use crate::crypto::keys::skeyseed;
use crate::crypto::{IkeKeys, IkeSuite, KeyExchange, PeerValue, Secret, SkKey};
use crate::wire::message::{find_notify, notifies};
use crate::wire::payload::{CertReqPayload, KePayload, NoncePayload, Payload, SaPayload};
use crate::wire::{CertEncoding, ExchangeType, Header, IkeSpi, KeGroup, Message, NotifyType};
use std::net::SocketAddr;
use std::sync::Arc;

/// How often the initiator restarts for COOKIE or INVALID_KE_PAYLOAD before giving up.
const MAX_RESTARTS: u8 = 3;
/// The hashes we accept in RFC 7427 signatures, in the order we announce them.
const HASHES: [Hash; 3] = [Hash::Sha256, Hash::Sha384, Hash::Sha512];

fn signature_hashes() -> Payload {
    let data = HASHES
        .iter()
        .flat_map(|h| h.rfc7427_id().to_be_bytes())
        .collect();
    notify(NotifyType::SIGNATURE_HASH_ALGORITHMS, data)
}

/// Initiator: sends (or, after a restart, resends) the IKE_SA_INIT request.
pub(in super::super) fn start(sa: &mut IkeSa, ctx: &mut Ctx<'_>) -> Result<(), Error> {
    if sa.kex.is_none() {
        let group = sa
            .policy
            .proposals
            .first()
            .and_then(proposal::group)
            .ok_or(Error::NoProposalChosen)?;
        sa.kex = Some(Arc::new(KeyExchange::generate(group, ctx.rng)?));
    }
    if sa.nonce_i.is_empty() {
        sa.nonce_i = ctx.nonce();
    }
    let Some(kex) = sa.kex.as_ref() else {
        return Err(Error::Internal("no key exchange".into()));
    };
    let mut payloads = Vec::new();
    if let Some(cookie) = &sa.cookie {
        payloads.push(notify(NotifyType::COOKIE, cookie.clone()));
    }
    let natd = natd::notifies(
        (sa.spi_i, IkeSpi(0)),
        sa.local,
        sa.remote,
        sa.policy.encap,
        ctx.rng,
    );
    payloads.extend([
        Payload::Sa(SaPayload {
            proposals: sa.policy.proposals.clone(),
        }),
        Payload::Ke(KePayload {
            group: kex.group(),
            data: kex.public_value().to_vec(),
        }),
        Payload::Nonce(NoncePayload {
            data: sa.nonce_i.clone(),
        }),
    ]);
    payloads.extend(natd);
    payloads.extend([
        notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, Vec::new()),
        signature_hashes(),
    ]);
    let mut sent = sa.send_request(ctx, ExchangeType::IKE_SA_INIT, payloads, Task::IkeInit)?;
    sa.init_request = sent.swap_remove(0);
    Ok(())
}

fn restart(sa: &mut IkeSa, ctx: &mut Ctx<'_>) {
    sa.restarts += 1;
    sa.requester = super::super::exchange::Requester::new(ctx.settings.retransmit, 0);
    if let Err(e) = start(sa, ctx) {
        sa.log(ctx, format!("cannot restart IKE_SA_INIT: {e}"));
        sa.down(ctx, DownReason::Failed(e));
    }
}

/// Initiator: takes the IKE_SA_INIT response and goes on with IKE_AUTH.
pub(super) fn response(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    datagram: &[u8],
    header: &Header,
    payloads: Vec<Payload>,
) {
    if let Some(cookie) = find_notify(&payloads, NotifyType::COOKIE) {
        if sa.restarts < MAX_RESTARTS && !cookie.data.is_empty() {
            sa.log(ctx, "responder demands a COOKIE, retrying with it");
            sa.cookie = Some(cookie.data.clone());
            restart(sa, ctx);
        } else {
            sa.down(ctx, DownReason::Refused(NotifyType::COOKIE));
        }
        return;
    }
    if let Some(invalid_ke) = find_notify(&payloads, NotifyType::INVALID_KE_PAYLOAD) {
        let wanted = <[u8; 2]>::try_from(invalid_ke.data.as_slice())
            .map(|b| KeGroup(u16::from_be_bytes(b)))
            .ok();
        let ours = wanted.filter(|g| {
            sa.policy
                .proposals
                .iter()
                .any(|p| proposal::offers_group(p, *g))
                && sa.kex.as_ref().is_none_or(|k| k.group() != *g)
        });
        match ours.map(|g| KeyExchange::generate(g, ctx.rng)) {
            Some(Ok(kex)) if sa.restarts < MAX_RESTARTS => {
                sa.log(ctx, format!("responder wants {}, retrying", kex.group()));
                sa.kex = Some(Arc::new(kex));
                restart(sa, ctx);
            }
            _ => sa.down(ctx, DownReason::Refused(NotifyType::INVALID_KE_PAYLOAD)),
        }
        return;
    }
    if let Some(error) = notifies(&payloads).find(|n| n.notify_type.is_error()) {
        sa.log(
            ctx,
            format!("IKE_SA_INIT refused with {}", error.notify_type),
        );
        sa.down(ctx, DownReason::Refused(error.notify_type));
        return;
    }
    match accept(sa, ctx, datagram, header, &payloads) {
        Ok(()) => {
            if let Err(e) = ike_auth::start(sa, ctx) {
                sa.log(ctx, format!("cannot start IKE_AUTH: {e}"));
                sa.down(ctx, DownReason::Failed(e));
            }
        }
        Err(e) => {
            sa.log(ctx, format!("IKE_SA_INIT response unacceptable: {e}"));
            sa.down(ctx, DownReason::Failed(e));
        }
    }
}

fn accept(
    sa: &mut IkeSa,
    ctx: &mut Ctx<'_>,
    datagram: &[u8],
    header: &Header,
    payloads: &[Payload],
) -> Result<(), Error> {
    let (sa_payload, ke, nonce) = init_payloads(payloads)?;
    let [chosen] = sa_payload.proposals.as_slice() else {
        return Err(Error::InvalidSyntax(
            "response must hold exactly one proposal".into(),
        ));
    };
    if !proposal::allows(&sa.policy.proposals, chosen) {
        return Err(Error::NoProposalChosen);
    }
    let suite = IkeSuite::from_proposal(chosen)?;
    let kex = sa
        .kex
        .as_ref()
        .ok_or_else(|| Error::Internal("no key exchange".into()))?;
    if ke.group != suite.group || kex.group() != suite.group {
        return Err(Error::InvalidSyntax(format!(
            "KE for {} but {} chosen",
            ke.group, suite.group
        )));
    }
    if header.spi_r.0 == 0 {
        return Err(Error::InvalidSyntax("responder SPI is zero".into()));
    }
    let shared = kex.shared_secret(&ke.data)?;
    sa.spi_r = header.spi_r;
    sa.nonce_r = nonce.to_vec();
    sa.init_response = datagram.to_vec();
    peer_capabilities(sa, ctx, header, payloads);
    install_keys(sa, suite, &shared)?;
    sa.log(ctx, format!("IKE proposal {}", proposal::Notation(chosen)));
    if sa.nat_detected || sa.policy.encap {
        let natt = ctx.settings.natt_port;
        if sa.local.port() != natt {
            sa.local.set_port(natt);
            if sa.remote.port() == 500 {
                sa.remote.set_port(4500);
            }
            sa.log(ctx, format!("floating to {} -> {}", sa.local, sa.remote));
        }
    }
    Ok(())
}

fn init_payloads(payloads: &[Payload]) -> Result<(&SaPayload, &KePayload, &[u8]), Error> {
    let mut sa = None;
    let mut ke = None;
    let mut nonce = None;
    for p in payloads {
        match p {
            Payload::Sa(s) => sa = Some(s),
            Payload::Ke(k) => ke = Some(k),
            Payload::Nonce(n) => nonce = Some(n.data.as_slice()),
            _ => {}
        }
    }
    match (sa, ke, nonce) {
        (Some(sa), Some(ke), Some(nonce)) => Ok((sa, ke, nonce)),
        _ => Err(Error::InvalidSyntax(
            "IKE_SA_INIT needs SA, KE and Nonce".into(),
        )),
    }
}

/// NAT detection, fragmentation and signature hashes, from either side's message.
fn peer_capabilities(sa: &mut IkeSa, ctx: &mut Ctx<'_>, header: &Header, payloads: &[Payload]) {
    let of = |t| notifies(payloads).filter(move |n| n.notify_type == t);
    let spis = (header.spi_i, header.spi_r);
    if let Some((local_nat, remote_nat)) = natd::detect(spis, payloads, sa.local, sa.remote) {
        sa.note_nat(local_nat, remote_nat);
        if local_nat {
            sa.log(ctx, "NAT detected on our side");
        }
        if remote_nat {
            sa.log(ctx, "NAT detected on the peer's side");
        }
    }
    sa.peer_fragmentation = of(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED)
        .next()
        .is_some();
    sa.peer_hashes = of(NotifyType::SIGNATURE_HASH_ALGORITHMS).next().map(|n| {
        n.data
            .chunks_exact(2)
            .filter_map(|c| Hash::from_rfc7427_id(u16::from_be_bytes([c[0], c[1]])))
            .collect()
    });
}

/// Derives SKEYSEED and the SA's keys; each side encrypts with its own SK_e/SK_a.
fn install_keys(sa: &mut IkeSa, suite: IkeSuite, shared: &Secret) -> Result<(), Error> {
    let seed = skeyseed(suite.prf, &sa.nonce_i, &sa.nonce_r, shared);
    let keys = IkeKeys::derive(&suite, &seed, &sa.nonce_i, &sa.nonce_r, sa.spi_i, sa.spi_r)?;
    let initiator_key = SkKey::new(suite.encr, suite.integ, &keys.sk_ei, &keys.sk_ai)?;
    let responder_key = SkKey::new(suite.encr, suite.integ, &keys.sk_er, &keys.sk_ar)?;
    let (ours, theirs) = if sa.initiator {
        (initiator_key, responder_key)
    } else {
        (responder_key, initiator_key)
    };
    sa.sk_out = Some(ours);
    sa.sk_in = Some(theirs);
    sa.suite = Some(suite);
    sa.keys = Some(keys);
    Ok(())
}

/// Responder: answers an IKE_SA_INIT request with a new half-open SA, or with the
/// error to send back statelessly.
///
/// The peer's KE is checked (group chosen, length, range or curve) before any key
/// exchange work, and our own value comes from `ephemerals`: an IKE_SA_INIT costs
/// at most one shared-secret computation, after the checks passed.
///
/// The proposal is chosen with the first of `candidates` (the connections the
/// addresses allow) that accepts one; only those that accept it too stay
/// candidates for IKE_AUTH, so the identities cannot lead to a connection whose
/// proposals would have refused the IKE SA's algorithms.
pub(in super::super) fn respond(
    ctx: &mut Ctx<'_>,
    ephemerals: &mut Ephemerals,
    mut candidates: Vec<Arc<Policy>>,
    local: SocketAddr,
    remote: SocketAddr,
    datagram: &[u8],
    message: &Message,
) -> Result<IkeSa, Error> {
    let payloads = &message.payloads;
    let (sa_payload, ke, nonce) = init_payloads(payloads)?;
    let mut wanted = None;
    let mut choice = None;
    for policy in &candidates {
        if let Some(p) = proposal::select(
            &policy.proposals,
            &proposal::with_group(&sa_payload.proposals, ke.group),
        ) {
            choice = Some((policy.clone(), p));
            break;
        }
        if wanted.is_none() {
            wanted = proposal::select(&policy.proposals, &sa_payload.proposals)
                .as_ref()
                .and_then(proposal::group);
        }
    }
    let Some((policy, chosen)) = choice else {
        return Err(match wanted {
            Some(wanted) => Error::InvalidKePayload {
                offered: ke.group,
                wanted,
            },
            None => Error::NoProposalChosen,
        });
    };
    let suite = IkeSuite::from_proposal(&chosen)?;
    let peer_value = PeerValue::parse(suite.group, &ke.data)?;
    let kex = ephemerals.take(suite.group, ctx.now, ctx.rng)?;
    let public_value = kex.public_value().to_vec();
    let shared = kex.agree(peer_value)?;
    candidates.retain(|p| proposal::allows(&p.proposals, &chosen));
    let spi_r = ctx.fresh_ike_spi();
    let header = &message.header;
    let mut sa = IkeSa::new(policy, false, header.spi_i, local, remote, ctx.settings);
    sa.spi_r = spi_r;
    sa.candidates = candidates;
    sa.nonce_i = nonce.to_vec();
    sa.nonce_r = ctx.nonce();
    sa.init_request = datagram.to_vec();
    peer_capabilities(&mut sa, ctx, header, payloads);
    install_keys(&mut sa, suite, &shared)?;
    sa.log(
        ctx,
        format!(
            "{} <- {remote}: IKE proposal {}",
            sa.policy.name,
            proposal::Notation(&chosen)
        ),
    );
    let mut out = vec![
        Payload::Sa(SaPayload {
            proposals: vec![chosen],
        }),
        Payload::Ke(KePayload {
            group: suite.group,
            data: public_value,
        }),
        Payload::Nonce(NoncePayload {
            data: sa.nonce_r.clone(),
        }),
    ];
    out.extend(natd::notifies(
        (sa.spi_i, sa.spi_r),
        local,
        remote,
        sa.policy.encap,
        ctx.rng,
    ));
    if sa.peer_fragmentation {
        out.push(notify(
            NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
            Vec::new(),
        ));
    }
    out.push(signature_hashes());
    if let super::super::RemoteAuth::Pubkey { anchors, .. } = &sa.policy.remote {
        out.push(Payload::CertReq(CertReqPayload {
            encoding: CertEncoding::X509_CERT_SIG,
            authorities: anchors.certreq_hashes(),
        }));
    }
    let mut sent = sa.send_response(ctx, ExchangeType::IKE_SA_INIT, 0, out)?;
    sa.init_response = sent.swap_remove(0);
    sa.half_open_until = Some(ctx.now + ctx.settings.half_open_timeout);
    Ok(sa)
}
