//! The endpoint: every IKE SA indexed by our SPI, new SAs for IKE_SA_INIT requests,
//! COOKIEs above a number of half-open SAs (RFC 7296 §2.6), stateless error replies.

use super::exchange::RetransmitPolicy;
use super::ike_sa::{Ctx, IkeSa, State};
use super::task::{ike_init, informational};
use super::{Error, Event, Instant, Policy, Transmit};
use crate::crypto::Random;
use crate::wire::payload::{NotifyPayload, Payload};
use crate::wire::{ExchangeType, Flags, Header, IkeSpi, Message, NotifyType};
use aws_lc_rs::hmac;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Endpoint-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our NAT-T port, floated to when NAT is detected or encapsulation is forced.
    pub natt_port: u16,
    /// Half-open SAs above which IKE_SA_INIT requests must echo a COOKIE.
    pub cookie_threshold: usize,
    /// Half-open SAs above which IKE_SA_INIT requests are dropped outright.
    pub half_open_limit: usize,
    /// How long a responder keeps an SA waiting for IKE_AUTH.
    pub half_open_timeout: Duration,
    /// Retransmission of our requests.
    pub retransmit: RetransmitPolicy,
    /// Wall-clock time (since the Unix epoch) at `Instant(0)`, for certificate validity.
    pub unix_time_at_start: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            natt_port: 4500,
            cookie_threshold: 10,
            half_open_limit: 1000,
            half_open_timeout: Duration::from_secs(30),
            retransmit: RetransmitPolicy::default(),
            unix_time_at_start: Duration::ZERO,
        }
    }
}

/// All IKE SAs of one gateway, driven as described in [the module](super).
pub struct Endpoint {
    shared: Shared,
    /// Keyed by our SPI.
    sas: HashMap<IkeSpi, IkeSa>,
    /// Responder SAs by the initiator's SPI and address, to spot retransmitted IKE_SA_INIT.
    by_initiator: HashMap<(IkeSpi, SocketAddr), IkeSpi>,
    cookie_key: hmac::Key,
    malformed: u64,
    /// Where to reach the peer of each policy we may initiate (by policy index).
    peers: HashMap<usize, (SocketAddr, SocketAddr)>,
}

/// What every SA borrows while it works: kept apart from `sas` so both can be borrowed.
struct Shared {
    settings: Settings,
    policies: Vec<Arc<Policy>>,
    rng: Box<dyn Random + Send>,
    child_spis: HashSet<u32>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Shared {
    fn ctx(&mut self, now: Instant) -> Ctx<'_> {
        Ctx {
            now,
            settings: &self.settings,
            rng: self.rng.as_mut(),
            out: &mut self.out,
            events: &mut self.events,
            child_spis: &mut self.child_spis,
            policies: &self.policies,
        }
    }
}

impl Endpoint {
    /// An endpoint answering and initiating for `policies`.
    pub fn new(
        settings: Settings,
        policies: Vec<Arc<Policy>>,
        mut rng: Box<dyn Random + Send>,
    ) -> Self {
        let mut secret = [0u8; 32];
        rng.fill(&mut secret);
        Self {
            shared: Shared {
                settings,
                policies,
                rng,
                child_spis: HashSet::new(),
                out: VecDeque::new(),
                events: VecDeque::new(),
            },
            sas: HashMap::new(),
            by_initiator: HashMap::new(),
            cookie_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            malformed: 0,
            peers: HashMap::new(),
        }
    }

    /// The policies, in configuration order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.shared.policies
    }

    /// Datagrams dropped because they did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Responder SAs still waiting for IKE_AUTH.
    pub fn half_open(&self) -> usize {
        self.sas
            .values()
            .filter(|sa| sa.state == State::HalfOpen)
            .count()
    }

    /// IKE SAs that completed IKE_AUTH.
    pub fn established(&self) -> usize {
        self.sas
            .values()
            .filter(|sa| sa.state == State::Established)
            .count()
    }

    fn fresh_spi(&mut self) -> IkeSpi {
        loop {
            let mut b = [0; 8];
            self.shared.rng.fill(&mut b);
            let spi = IkeSpi(u64::from_be_bytes(b));
            if spi.0 != 0 && !self.sas.contains_key(&spi) {
                return spi;
            }
        }
    }

    /// Runs `f` on one SA with the endpoint's shared state lent out, then reaps it if done.
    fn with_sa(&mut self, now: Instant, spi: IkeSpi, f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>)) {
        let Some(sa) = self.sas.get_mut(&spi) else {
            return;
        };
        f(sa, &mut self.shared.ctx(now));
        if sa.state == State::Dead {
            self.sas.remove(&spi);
            self.by_initiator.retain(|_, ours| *ours != spi);
        }
    }

    /// Starts an IKE SA for the policy at `policy` from `local` to `remote`;
    /// returns its initiator SPI.
    pub fn initiate(
        &mut self,
        now: Instant,
        policy: usize,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSpi, Error> {
        let policy = self
            .shared
            .policies
            .get(policy)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no policy {policy}")))?;
        let spi = self.fresh_spi();
        let sa = IkeSa::new(policy, true, spi, local, remote, &self.shared.settings);
        self.sas.insert(spi, sa);
        let mut result = Ok(());
        self.with_sa(now, spi, |sa, ctx| {
            if let Err(e) = ike_init::start(sa, ctx) {
                sa.log(ctx, format!("cannot initiate: {e}"));
                sa.down(ctx, super::DownReason::Failed(e.clone()));
                result = Err(e);
            }
        });
        result.map(|()| spi)
    }

    /// The data plane reports that the Child SA with inbound SPI `spi_in` crossed its
    /// soft or hard byte or packet limit (`cause`); hard deletes it (see
    /// [`ChildSaDown`](super::Event::ChildSaDown)).
    pub fn expire_child(&mut self, now: Instant, spi_in: u32, hard: bool, cause: &str) {
        let owner = self
            .sas
            .iter()
            .find(|(_, sa)| sa.children.iter().any(|c| c.spi_in == spi_in))
            .map(|(spi, _)| *spi);
        if let Some(spi) = owner {
            self.with_sa(now, spi, |sa, ctx| {
                informational::expire_child(sa, ctx, spi_in, hard, cause);
            });
        }
    }

    /// Tells the engine how to reach the peer of the policy at `policy`: from `local`
    /// to `remote`. Needed before it can initiate that policy by itself (start,
    /// trap, restart after a failure).
    pub fn add_peer(&mut self, policy: usize, local: SocketAddr, remote: SocketAddr) {
        self.peers.insert(policy, (local, remote));
    }

    /// The data plane saw a packet for child `child` of policy `policy` and has no SA
    /// for it: negotiate one unless that is under way.
    pub fn acquire(&mut self, now: Instant, policy: usize, child: usize) {
        let Some(&(local, remote)) = self.peers.get(&policy) else {
            return;
        };
        let Some(p) = self.shared.policies.get(policy).cloned() else {
            return;
        };
        if child >= p.children.len() || self.sas.values().any(|sa| Arc::ptr_eq(&sa.policy, &p)) {
            return;
        }
        if let Err(e) = self.initiate(now, policy, local, remote) {
            self.shared.events.push_back(Event::Log {
                spi_i: IkeSpi(0),
                text: format!("{}: cannot initiate on demand: {e}", p.name),
            });
        }
    }

    /// The data plane received authentic ESP on the Child SA with inbound SPI
    /// `spi_in`: its peer is alive (no liveness check is due).
    pub fn inbound_seen(&mut self, now: Instant, spi_in: u32) {
        if let Some(sa) = self
            .sas
            .values_mut()
            .find(|sa| sa.children.iter().any(|c| c.spi_in == spi_in))
        {
            sa.last_inbound = now;
        }
    }

    /// ESP arrived at `local` from `remote` for SPI `spi`, which is not ours: if an
    /// IKE SA with that peer exists, tell it with INVALID_SPI (RFC 7296 §2.21.4) so it
    /// replaces the Child SA instead of sending into the void.
    pub fn unknown_spi(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, spi: u32) {
        let _ = local;
        let owner = self
            .sas
            .iter()
            .find(|(_, sa)| sa.state == State::Established && sa.remote.ip() == remote.ip())
            .map(|(spi, _)| *spi);
        if let Some(owner) = owner {
            self.with_sa(now, owner, |sa, ctx| {
                informational::invalid_spi(sa, ctx, spi);
            });
        }
    }

    /// Deletes every IKE SA: Delete to established peers, silence for the others.
    pub fn delete_all(&mut self, now: Instant) {
        let spis: Vec<IkeSpi> = self.sas.keys().copied().collect();
        for spi in spis {
            self.with_sa(now, spi, informational::delete);
        }
    }

    /// Takes one IKE datagram (without the non-ESP marker) that arrived at `local` from `remote`.
    pub fn handle(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, datagram: &[u8]) {
        let message = match Message::decode(datagram) {
            Ok(m) => m,
            Err(_) => {
                self.malformed += 1;
                return;
            }
        };
        let h = &message.header;
        let from_initiator = h.flags.initiator();
        if from_initiator && h.exchange == ExchangeType::IKE_SA_INIT && !h.flags.response() {
            if h.spi_r.0 != 0 || h.message_id != 0 {
                return;
            }
            match self.by_initiator.get(&(h.spi_i, remote)).copied() {
                Some(spi) => self.with_sa(now, spi, |sa, ctx| {
                    sa.handle(ctx, local, remote, datagram, message)
                }),
                None => self.new_responder(now, local, remote, datagram, &message),
            }
            return;
        }
        let ours = if from_initiator { h.spi_r } else { h.spi_i };
        self.with_sa(now, ours, |sa, ctx| {
            sa.handle(ctx, local, remote, datagram, message)
        });
    }

    fn cookie(&self, nonce: &[u8], remote: SocketAddr, spi_i: IkeSpi) -> Vec<u8> {
        let ip = match remote.ip() {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let mut ctx = hmac::Context::with_key(&self.cookie_key);
        ctx.update(nonce);
        ctx.update(&ip);
        ctx.update(&spi_i.0.to_be_bytes());
        ctx.sign().as_ref().to_vec()
    }

    /// An IKE_SA_INIT response that keeps no state: COOKIE or an error.
    fn stateless_reply(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        spi_i: IkeSpi,
        notify: NotifyPayload,
    ) {
        let message = Message {
            header: Header {
                spi_i,
                spi_r: IkeSpi(0),
                minor_version: 0,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: Flags::new(false, true),
                message_id: 0,
            },
            payloads: vec![Payload::Notify(notify)],
        };
        if let Ok(data) = message.encode() {
            self.shared
                .events
                .push_back(Event::Message(super::MessageRecord {
                    spi_i,
                    sent: true,
                    exchange: ExchangeType::IKE_SA_INIT,
                    response: true,
                    message_id: 0,
                    bytes: data.len(),
                    fragments: 1,
                    peer: remote,
                    payloads: message.payloads,
                }));
            self.shared.out.push_back(Transmit {
                local,
                remote,
                data,
            });
        }
    }

    fn new_responder(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        message: &Message,
    ) {
        let spi_i = message.header.spi_i;
        let half_open = self.half_open();
        if half_open >= self.shared.settings.half_open_limit {
            self.shared.events.push_back(Event::Log {
                spi_i,
                text: format!("dropped IKE_SA_INIT from {remote}: {half_open} half-open SAs"),
            });
            return;
        }
        if half_open >= self.shared.settings.cookie_threshold {
            let nonce = message.payloads.iter().find_map(|p| match p {
                Payload::Nonce(n) => Some(n.data.as_slice()),
                _ => None,
            });
            let Some(nonce) = nonce else {
                return;
            };
            let expected = self.cookie(nonce, remote, spi_i);
            let echoed = matches!(message.payloads.first(),
                Some(Payload::Notify(n)) if n.notify_type == NotifyType::COOKIE && n.data == expected);
            if !echoed {
                self.stateless_reply(
                    local,
                    remote,
                    spi_i,
                    NotifyPayload::new(NotifyType::COOKIE, expected),
                );
                return;
            }
        }
        let candidates: Vec<Arc<Policy>> = self
            .shared
            .policies
            .iter()
            .filter(|p| {
                (p.local_addrs.is_empty() || p.local_addrs.contains(&local.ip()))
                    && (p.remote_addrs.is_empty() || p.remote_addrs.contains(&remote.ip()))
            })
            .cloned()
            .collect();
        let spi_r = self.fresh_spi();
        let mut ctx = self.shared.ctx(now);
        let result = if candidates.is_empty() {
            Err(Error::NoProposalChosen)
        } else {
            ike_init::respond(
                &mut ctx, candidates, spi_r, local, remote, datagram, message,
            )
        };
        match result {
            Ok(sa) => {
                self.by_initiator.insert((spi_i, remote), spi_r);
                self.sas.insert(spi_r, sa);
            }
            Err(e) => {
                self.shared.events.push_back(Event::Log {
                    spi_i,
                    text: format!("IKE_SA_INIT from {remote} refused: {e}"),
                });
                let data = match &e {
                    Error::InvalidKePayload { wanted, .. } => wanted.0.to_be_bytes().to_vec(),
                    _ => Vec::new(),
                };
                self.stateless_reply(local, remote, spi_i, NotifyPayload::new(e.notify(), data));
            }
        }
    }

    /// Acts on the clock for every SA whose deadline has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<IkeSpi> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.deadline().is_some_and(|d| d <= now))
            .map(|(spi, _)| *spi)
            .collect();
        for spi in due {
            self.with_sa(now, spi, IkeSa::handle_timeout);
        }
    }

    /// The earliest time [`Endpoint::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(IkeSa::deadline).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.shared.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.events.pop_front()
    }
}
