//! One IKE SA: its state, keys, exchange windows and Child SAs, and the mechanics
//! every exchange shares (protecting, sending, receiving and logging messages).

use super::exchange::{Incoming, Requester, Responder, Timeout};
use super::task::{Task, informational};
use super::{
    Action, DownReason, Error, Event, IkeSaUp, Instant, MessageRecord, Policy, Settings, Transmit,
};
use crate::auth::signature::Hash;
use crate::crypto::fragment::{Reassembly, seal_fragments};
use crate::crypto::sk::{open_message, seal_message};
use crate::crypto::{IkeKeys, IkeSuite, KeyExchange, Random, SkKey};
use crate::wire::payload::{Identity, NotifyPayload, Payload, TsRange, decode_chain};
use crate::wire::{ExchangeType, Flags, Header, IkeSpi, Message, Reader};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long an established IKE SA may stay without a Child SA before it re-creates
/// its children: time for the peer to create them itself.
const CHILDLESS_GRACE: Duration = Duration::from_secs(5);
/// How long before it closes instead, having none to re-create: longer, so that a
/// peer re-creating its children gets to, retransmissions included.
const CHILDLESS_CLOSE_GRACE: Duration = Duration::from_secs(30);
/// Child SA creations failing in a row after which a childless IKE SA is closed,
/// leaving the retry to the connection's back-off.
const MAX_CHILD_FAILURES: u32 = 3;
/// How long the peer's SA from a rekey collision we won may wait for the peer's
/// Delete. A peer that learns of the collision only from our Delete of the old SA
/// drops its SA without a word (charon: "peer did not notice IKE_SA rekey
/// collision"), so ours would otherwise stay until its hard lifetime.
pub(super) const REDUNDANT_GRACE: Duration = Duration::from_secs(10);

/// An unprotected INVALID_IKE_SPI answer (RFC 7296 §2.21.4): the peer lost the SA.
fn lost_by_peer(message: &Message) -> bool {
    matches!(message.payloads.as_slice(),
        [Payload::Notify(n)] if n.notify_type == crate::wire::NotifyType::INVALID_IKE_SPI)
}

/// Where an IKE SA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent,
    /// Initiator: IKE_AUTH request sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    HalfOpen,
    /// Both sides authenticated.
    Established,
    /// Finished; the endpoint removes it.
    Dead,
}

/// Where a Child SA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChildState {
    /// Carrying traffic.
    Installed,
    /// Our CREATE_CHILD_SA rekeying it is under way.
    Rekeying,
    /// Replaced by a newer SA; deleted next (by us, or by the peer who rekeyed it).
    Rekeyed,
    /// Our Delete for it is under way.
    Deleting,
    /// Deleted on both sides; its inbound side takes stragglers until then.
    Retired { remove_at: Instant },
}

/// A Child SA as the IKE SA remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChildSa {
    pub name: String,
    /// Its child's index in the policy.
    pub index: usize,
    pub spi_in: u32,
    pub spi_out: u32,
    pub local_ts: Vec<TsRange>,
    pub remote_ts: Vec<TsRange>,
    /// Transport mode, which its rekeys keep.
    pub transport: bool,
    /// One of its child's per-resource SAs (RFC 9611): its rekeys say so again, and
    /// keep `spi_in % resources`, the resource it belongs to.
    pub per_resource: bool,
    pub state: ChildState,
    /// When its soft time limit fires (once), and its hard one.
    pub soft_at: Option<Instant>,
    pub hard_at: Option<Instant>,
    /// We send with it (a rekey's responder waits for the old SA's Delete).
    pub outbound: bool,
    /// The inbound SPI of the Child SA it replaces.
    pub rekeys: Option<u32>,
    /// The peer rekeyed this SA while our own rekey of it was under way (§2.8.1):
    /// its exchange's nonces and the inbound SPI of the SA we made for it.
    pub peer_rekey: Option<PeerRekey>,
}

impl ChildSa {
    /// Still counts as the child's SA: not replaced, not going away.
    pub fn is_active(&self) -> bool {
        matches!(self.state, ChildState::Installed | ChildState::Rekeying)
    }
}

/// The other side of a rekey collision, kept until our own exchange ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PeerRekey {
    pub nonce_i: Vec<u8>,
    pub nonce_r: Vec<u8>,
    /// Our inbound SPI of the Child SA, or our SPI of the IKE SA, it created.
    pub created: u64,
}

/// Work an IKE SA starts as a request when its window is free, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Work {
    /// Create child `index` of the policy.
    CreateChild(usize),
    /// Create another per-resource SA (RFC 9611) for child `index`, with an
    /// inbound SPI for the resource `.1` (`SPI % resources`).
    AddResource(usize, u32),
    /// Rekey the Child SA with this inbound SPI.
    RekeyChild(u32),
    /// Delete these Child SAs (our inbound SPIs).
    DeleteChildren(Vec<u32>),
    /// Rekey the IKE SA.
    RekeyIke,
    /// An empty INFORMATIONAL: is the peer alive?
    Dpd,
    /// Tell the peer its ESP with this SPI found no SA here.
    InvalidSpi(u32),
    /// Delete the IKE SA.
    DeleteIke,
    /// Our address changed to this one: move the SA there (MOBIKE).
    UpdateAddresses(SocketAddr),
}

/// What an IKE SA asks of the endpoint, which holds the other SAs.
pub(super) enum Request {
    /// A new IKE SA to index (one made by an IKE SA rekey).
    Spawn(Box<IkeSa>),
    /// The IKE SA with our SPI `spi` is the peer's from a rekey collision our
    /// exchange won (RFC 7296 §2.8.2): the peer should delete it, and we do if it
    /// has not after [`REDUNDANT_GRACE`].
    Redundant(IkeSpi),
    /// Give these Child SAs, the work for them and the virtual IPs and DNS servers,
    /// to the IKE SA with our SPI `to` (its rekey replaced this one).
    AdoptChildren {
        to: IkeSpi,
        children: Vec<ChildSa>,
        work: Vec<(Instant, Work)>,
        virtual_ips: Vec<(IpAddr, Option<String>)>,
        dns: Vec<IpAddr>,
        /// Whose leases the virtual IPs are.
        remote_id: Option<Identity>,
    },
    /// Report the IKE SA with our SPI `spi` as the replacement of `old` (initiator SPI).
    Announce { spi: IkeSpi, old: IkeSpi },
    /// The peer authenticated as `remote_id` says it has no other IKE SA with us:
    /// drop every other one with that identity, silently (RFC 7296 §2.4).
    InitialContact { keep: IkeSpi, remote_id: Identity },
}

/// What the endpoint lends an IKE SA while it handles one input.
pub(super) struct Ctx<'a> {
    pub now: Instant,
    pub settings: &'a Settings,
    pub rng: &'a mut dyn Random,
    pub out: &'a mut VecDeque<Transmit>,
    pub events: &'a mut VecDeque<Event>,
    /// Inbound ESP SPIs in use on this endpoint.
    pub child_spis: &'a mut HashSet<u32>,
    /// The endpoint's running totals.
    pub stats: &'a mut super::Stats,
    /// Children the operator took down, by policy and child index: never created.
    pub held: &'a HashSet<(usize, usize)>,
    /// The virtual IP leases.
    pub pools: &'a mut super::pool::Pools,
    /// Every policy, in configuration order.
    pub policies: &'a [Arc<Policy>],
    /// The endpoint's other IKE SAs, by our SPI (to pick SPIs not in use).
    pub others: &'a HashMap<IkeSpi, Box<IkeSa>>,
    /// What the endpoint is asked to do once the SA is back in its table.
    pub requests: &'a mut Vec<Request>,
}

impl Ctx<'_> {
    /// The index of `policy` among the endpoint's policies.
    pub fn policy_index(&self, policy: &Arc<Policy>) -> usize {
        self.policies
            .iter()
            .position(|p| Arc::ptr_eq(p, policy))
            .unwrap_or_default()
    }

    /// Whether the operator took child `child` of `policy` down.
    pub fn is_held(&self, policy: &Arc<Policy>, child: usize) -> bool {
        !self.held.is_empty() && self.held.contains(&(self.policy_index(policy), child))
    }

    /// Seconds since the Unix epoch, for certificate validity.
    pub fn unix_now(&self) -> u64 {
        (self.settings.unix_time_at_start + self.now.0).as_secs()
    }

    /// A fresh inbound ESP SPI (≥ 256: lower values are reserved, RFC 4303 §2.1),
    /// for `resource` if given: the data plane steers SPIs by `SPI % resources`;
    /// with [`super::SPREAD_SPI_BIT`] set if `spread`, clear otherwise.
    pub fn alloc_child_spi(&mut self, resource: Option<u32>, spread: bool) -> u32 {
        let resources = self.settings.resources.max(1);
        let bit = if spread { super::SPREAD_SPI_BIT } else { 0 };
        loop {
            let mut b = [0; 4];
            self.rng.fill(&mut b);
            let spi = (u32::from_be_bytes(b) & !super::SPREAD_SPI_BIT) | bit;
            if spi >= 256
                && resource.is_none_or(|r| spi % resources == r)
                && self.child_spis.insert(spi)
            {
                return spi;
            }
        }
    }

    /// The resource whose worker the data plane steers inbound SPI `spi` to.
    pub fn resource_of(&self, spi: u32) -> u32 {
        spi % self.settings.resources.max(1)
    }

    /// Per-resource Child SAs (RFC 9611) are on for `child`: it asks for them and
    /// the data plane has several resources.
    pub fn per_resource(&self, child: &super::ChildPolicy) -> bool {
        child.per_resource && self.settings.resources > 1
    }

    /// `child`'s SAs that are not per-resource are spread over the resources.
    pub fn spreads(&self, child: &super::ChildPolicy) -> bool {
        child.spread && self.settings.resources > 1
    }

    /// A fresh IKE SPI of ours, not zero and not in use.
    pub fn fresh_ike_spi(&mut self) -> IkeSpi {
        loop {
            let mut b = [0; 8];
            self.rng.fill(&mut b);
            let spi = IkeSpi(u64::from_be_bytes(b));
            if spi.0 != 0 && !self.others.contains_key(&spi) {
                return spi;
            }
        }
    }

    /// A time up to `spread` earlier than `at`, chosen at random, so both ends of a
    /// tunnel seldom start the same rekey together.
    pub fn spread(&mut self, at: Duration, spread: Duration) -> Duration {
        let mut r = [0; 4];
        self.rng.fill(&mut r);
        let fraction = f64::from(u32::from_be_bytes(r)) / f64::from(u32::MAX);
        at.saturating_sub(spread.min(at).mul_f64(fraction))
    }

    /// A random delay between `min` and twice it, so retries of both peers spread.
    pub fn jitter(&mut self, min: Duration) -> Duration {
        let mut r = [0; 2];
        self.rng.fill(&mut r);
        min + min.mul_f64(f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX))
    }

    /// A fresh nonce of 32 bytes, enough for every PRF we offer (RFC 7296 §2.10).
    pub fn nonce(&mut self) -> Vec<u8> {
        let mut n = vec![0; 32];
        self.rng.fill(&mut n);
        n
    }
}

/// The outcome of decrypting an incoming SK or SKF message.
pub(super) enum Unprotected {
    /// The whole message, decrypted.
    Complete(Vec<Payload>),
    /// A fragment was stored; more are needed.
    Partial,
    /// Not authentic or not well formed; drop it.
    Invalid(String),
}

/// One IKE SA.
pub(super) struct IkeSa {
    pub policy: Arc<Policy>,
    /// Responder: the policies whose addresses match, chosen from by IDs in IKE_AUTH.
    pub candidates: Vec<Arc<Policy>>,
    pub initiator: bool,
    pub spi_i: IkeSpi,
    pub spi_r: IkeSpi,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: State,
    pub requester: Requester,
    pub responder: Responder,
    /// The exchange our outstanding request belongs to.
    pub pending: Option<Task>,
    /// Initiator: our half of the IKE_SA_INIT key exchange (perhaps a reused one).
    pub kex: Option<Arc<KeyExchange>>,
    pub nonce_i: Vec<u8>,
    pub nonce_r: Vec<u8>,
    /// IKE_SA_INIT request and response as sent and received: signed by AUTH.
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    pub cookie: Option<Vec<u8>>,
    /// IKE_SA_INIT restarts (COOKIE or INVALID_KE_PAYLOAD), bounded against loops.
    pub restarts: u8,
    pub suite: Option<IkeSuite>,
    pub keys: Option<IkeKeys>,
    pub sk_in: Option<SkKey>,
    pub sk_out: Option<SkKey>,
    pub peer_fragmentation: bool,
    /// Hashes the peer accepts for RFC 7427 signatures; None if it did not say.
    pub peer_hashes: Option<Vec<Hash>>,
    pub nat_detected: bool,
    /// Our own address is translated: we owe the NAT keepalives (RFC 3948 §2.3).
    pub behind_nat: bool,
    /// The peer's address is translated: a NAT may map it anew (RFC 7296 §2.23).
    pub peer_behind_nat: bool,
    /// Both sides announced MOBIKE (RFC 4555) and our policy allows it.
    pub mobike: bool,
    /// Where the request being answered came from: (our address, the peer's).
    pub reply_to: Option<(SocketAddr, SocketAddr)>,
    /// Fragments of the message being reassembled: (message ID, is response, pieces).
    pub reassembly: Option<(u32, bool, Reassembly)>,
    pub children: Vec<ChildSa>,
    pub half_open_until: Option<Instant>,
    /// Work waiting for the request window, in order.
    pub queue: VecDeque<Work>,
    /// Work to queue later (retries after TEMPORARY_FAILURE and the like).
    pub delayed: Vec<(Instant, Work)>,
    /// The peer's authenticated identity.
    pub remote_id: Option<Identity>,
    /// The client's virtual IPs: leased to the peer (with the pool each came from),
    /// or to us (with none).
    pub virtual_ips: Vec<(IpAddr, Option<String>)>,
    /// DNS servers the gateway named, when we are its client.
    pub dns: Vec<IpAddr>,
    /// Send INITIAL_CONTACT in IKE_AUTH: we hold no other IKE SA with this peer.
    pub initial_contact: bool,
    /// When to rekey the IKE SA (soft) and when it must end (hard).
    pub rekey_at: Option<Instant>,
    pub expire_at: Option<Instant>,
    /// Replaced by a rekey: its Child SAs went to the new IKE SA, it only awaits deletion.
    pub superseded: bool,
    /// The peer rekeyed this IKE SA while our own rekey of it was under way.
    pub peer_rekey: Option<PeerRekey>,
    /// Since when the SA has had no Child SA (None while it has some).
    pub childless_since: Option<Instant>,
    /// Child SA creations that failed in a row, for the back-off.
    pub child_failures: u32,
    /// Why it went down, for the endpoint's restart decision.
    pub down_reason: Option<DownReason>,
    /// When the peer last showed it is alive (IKE or ESP).
    pub last_inbound: Instant,
    /// When we last told the peer INVALID_SPI (rate limit).
    pub invalid_spi_at: Option<Instant>,
    /// Messages dropped as not authentic: when the last log line said so, and how
    /// many were dropped since without one (anyone who knows the SPIs can send them).
    pub dropped_logged_at: Option<Instant>,
    pub dropped_unlogged: u64,
}

impl IkeSa {
    /// A new IKE SA in its first state; tasks fill in the rest.
    pub fn new(
        policy: Arc<Policy>,
        initiator: bool,
        spi_i: IkeSpi,
        local: SocketAddr,
        remote: SocketAddr,
        settings: &Settings,
    ) -> Self {
        Self {
            policy,
            candidates: Vec::new(),
            initiator,
            spi_i,
            spi_r: IkeSpi(0),
            local,
            remote,
            state: if initiator {
                State::InitSent
            } else {
                State::HalfOpen
            },
            requester: Requester::new(settings.retransmit, 0),
            responder: Responder::new(0),
            pending: None,
            kex: None,
            nonce_i: Vec::new(),
            nonce_r: Vec::new(),
            init_request: Vec::new(),
            init_response: Vec::new(),
            cookie: None,
            restarts: 0,
            suite: None,
            keys: None,
            sk_in: None,
            sk_out: None,
            peer_fragmentation: false,
            peer_hashes: None,
            nat_detected: false,
            behind_nat: false,
            peer_behind_nat: false,
            mobike: false,
            reply_to: None,
            reassembly: None,
            children: Vec::new(),
            half_open_until: None,
            queue: VecDeque::new(),
            delayed: Vec::new(),
            remote_id: None,
            virtual_ips: Vec::new(),
            dns: Vec::new(),
            initial_contact: false,
            rekey_at: None,
            expire_at: None,
            superseded: false,
            peer_rekey: None,
            childless_since: None,
            child_failures: 0,
            down_reason: None,
            last_inbound: Instant::default(),
            invalid_spi_at: None,
            dropped_logged_at: None,
            dropped_unlogged: 0,
        }
    }

    /// Our SPI of this SA: the endpoint's key for it.
    pub fn our_spi(&self) -> IkeSpi {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    /// Our rekey of this SA is under way and offered `spi` as ours in the new one.
    pub fn creating(&self, spi: IkeSpi) -> bool {
        matches!(&self.pending, Some(Task::RekeyIke(r)) if r.spi == spi)
    }

    /// The SA as [`IkeSaUp`] reports it, once authenticated.
    pub fn summary(&self) -> Option<IkeSaUp> {
        Some(IkeSaUp {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: self.initiator,
            connection: self.policy.name.clone(),
            local: self.local,
            remote: self.remote,
            behind_nat: self.behind_nat,
            local_id: self.policy.local.id().clone(),
            remote_id: self.remote_id.clone()?,
            virtual_ips: self.virtual_ips.iter().map(|(a, _)| *a).collect(),
            dns: self.dns.clone(),
            suite: self.suite?,
            keys: self.keys.clone()?,
        })
    }

    /// Marks the SA authenticated and sets its lifetime and liveness clocks.
    pub fn established(&mut self, ctx: &mut Ctx<'_>) {
        self.state = State::Established;
        self.half_open_until = None;
        self.last_inbound = ctx.now;
        let life = self.policy.ike_lifetime;
        if let Some(rekey) = life.rekey_time {
            let at = ctx.spread(rekey, life.rand_time);
            self.rekey_at = Some(ctx.now + at);
            self.expire_at = Some(ctx.now + rekey + life.over_time);
        }
    }

    /// Takes the queued and delayed work for Child SAs (everything but the IKE SA's
    /// own), to go with them to the IKE SA that replaces this one; queued work is
    /// due at `now`.
    pub fn take_child_work(&mut self, now: Instant) -> Vec<(Instant, Work)> {
        let for_children = |w: &Work| {
            !matches!(
                w,
                Work::RekeyIke | Work::Dpd | Work::DeleteIke | Work::UpdateAddresses(_)
            )
        };
        let (queued, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(for_children);
        self.queue = kept.into();
        let (delayed, kept) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(_, w)| for_children(w));
        self.delayed = kept;
        queued
            .into_iter()
            .map(|w| (now, w))
            .chain(delayed)
            .collect()
    }

    /// Starts the next queued work if the request window is free.
    pub fn kick(&mut self, ctx: &mut Ctx<'_>) {
        while self.state == State::Established && !self.requester.is_busy() {
            let Some(work) = self.queue.pop_front() else {
                break;
            };
            Task::start(self, ctx, work);
        }
        let has_children = self.children.iter().any(ChildSa::is_active)
            || self.queue.iter().any(|w| matches!(w, Work::CreateChild(_)))
            || self
                .delayed
                .iter()
                .any(|(_, w)| matches!(w, Work::CreateChild(_)))
            || matches!(self.pending, Some(Task::CreateChild(_) | Task::IkeAuth(_)));
        if self.state != State::Established || self.superseded || has_children {
            self.childless_since = None;
        } else if self.childless_since.is_none() {
            self.childless_since = Some(ctx.now);
        }
    }

    /// The header of a message we send.
    pub fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            minor_version: 0,
            exchange,
            flags: Flags::new(self.initiator, response),
            message_id,
        }
    }

    /// A log line about this SA.
    pub fn log(&self, ctx: &mut Ctx<'_>, text: impl Into<String>) {
        ctx.events.push_back(Event::Log {
            spi_i: self.spi_i,
            connection: self.connection(),
            text: text.into(),
        });
    }

    /// The connection's name, once it is sure: a responder's is only a candidate
    /// until IKE_AUTH picks it.
    pub fn connection(&self) -> Option<String> {
        (self.initiator || self.remote_id.is_some()).then(|| self.policy.name.clone())
    }

    /// Logs a message dropped as not authentic, at most once a second: a flood of
    /// forged messages makes one line a second, with the number left untold.
    fn log_dropped(&mut self, ctx: &mut Ctx<'_>, text: String) {
        let quiet = self
            .dropped_logged_at
            .is_some_and(|at| ctx.now < at + Duration::from_secs(1));
        if quiet {
            self.dropped_unlogged += 1;
            return;
        }
        let more = std::mem::take(&mut self.dropped_unlogged);
        let text = if more > 0 {
            format!("{text} ({more} more dropped since the last such line)")
        } else {
            text
        };
        self.dropped_logged_at = Some(ctx.now);
        self.log(ctx, text);
    }

    /// Ends the SA and reports why.
    pub fn down(&mut self, ctx: &mut Ctx<'_>, reason: DownReason) {
        if self.state == State::Dead {
            return;
        }
        self.state = State::Dead;
        for c in std::mem::take(&mut self.children) {
            ctx.child_spis.remove(&c.spi_in);
            ctx.events.push_back(Event::ChildSaDown {
                spi_i: self.spi_i,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
            });
        }
        if let Some(id) = &self.remote_id {
            for (_, pool) in std::mem::take(&mut self.virtual_ips) {
                if let Some(pool) = pool {
                    ctx.pools.release(&pool, id);
                }
            }
        }
        self.down_reason = Some(reason.clone());
        ctx.events.push_back(Event::IkeSaDown {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            connection: self.policy.name.clone(),
            reason,
        });
    }

    /// Encodes (IKE_SA_INIT) or encrypts, fragmenting above the policy's size when
    /// the peer supports it (RFC 7383).
    fn protect(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        inner: &[Payload],
    ) -> Result<Vec<Vec<u8>>, Error> {
        if header.exchange == ExchangeType::IKE_SA_INIT {
            let message = Message {
                header: header.clone(),
                payloads: inner.to_vec(),
            };
            return Ok(vec![
                message
                    .encode()
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ]);
        }
        let limit = self.fragment_limit(ctx.settings);
        let fragmentation = self.peer_fragmentation;
        let key = self
            .sk_out
            .as_mut()
            .ok_or_else(|| Error::Internal("no keys to protect a message".into()))?;
        let whole = seal_message(key, header, inner, ctx.rng)?;
        if whole.len() <= limit || !fragmentation {
            return Ok(vec![whole]);
        }
        Ok(seal_fragments(key, header, inner, limit, ctx.rng)?)
    }

    /// Largest IKE message in one datagram: the fragment size less IP and UDP
    /// headers and, on the NAT-T port, the non-ESP marker.
    fn fragment_limit(&self, settings: &Settings) -> usize {
        let ip = if self.remote.is_ipv4() { 20 } else { 40 };
        let marker = if self.local.port() == settings.natt_port {
            4
        } else {
            0
        };
        self.policy.fragment_size.saturating_sub(ip + 8 + marker)
    }

    fn transmit(&self, ctx: &mut Ctx<'_>, datagrams: &[Vec<u8>]) {
        self.transmit_on(ctx, datagrams, (self.local, self.remote));
    }

    /// Sends from `local` to `remote`: a response goes where its request came from
    /// (RFC 7296 §2.11), which under MOBIKE need not be the SA's addresses.
    fn transmit_on(
        &self,
        ctx: &mut Ctx<'_>,
        datagrams: &[Vec<u8>],
        (local, remote): (SocketAddr, SocketAddr),
    ) {
        for d in datagrams {
            ctx.out.push_back(Transmit {
                local,
                remote,
                data: d.clone(),
            });
        }
    }

    /// Whether its Child SAs encapsulate ESP in UDP (RFC 3948): when a NAT was
    /// detected or the connection forces it — not merely because the IKE SA is on
    /// the NAT-T port, where MOBIKE (RFC 4555 §3.5) moves it without any NAT.
    pub fn esp_in_udp(&self) -> bool {
        self.nat_detected || self.policy.encap
    }

    /// Takes the outcome of NAT detection (RFC 7296 §2.23) on the SA's path.
    pub fn note_nat(&mut self, ours: bool, theirs: bool) {
        self.nat_detected = ours || theirs;
        self.behind_nat = ours;
        self.peer_behind_nat = theirs;
    }

    /// Takes `local` and `remote` as the SA's addresses from now on. Once it is
    /// established, its Child SAs follow ([`Event::IkeSaMoved`]).
    pub fn move_to(&mut self, ctx: &mut Ctx<'_>, local: SocketAddr, remote: SocketAddr) {
        if (self.local, self.remote) == (local, remote) {
            return;
        }
        (self.local, self.remote) = (local, remote);
        if self.state == State::Established {
            self.announce_move(ctx);
        }
    }

    /// Tells the driver the SA's Child SAs send from its addresses from now on.
    pub fn announce_move(&self, ctx: &mut Ctx<'_>) {
        let (local, remote) = (self.local, self.remote);
        ctx.events.push_back(Event::IkeSaMoved {
            spi_i: self.spi_i,
            local,
            remote,
            encap: self.esp_in_udp(),
            behind_nat: self.behind_nat,
            children: self.children.iter().map(|c| c.spi_in).collect(),
        });
    }

    fn record(
        &self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        sent: bool,
        sizes: &[usize],
        payloads: &[Payload],
    ) {
        ctx.events.push_back(Event::Message(MessageRecord {
            spi_i: self.spi_i,
            connection: self.connection(),
            sent,
            exchange: header.exchange,
            response: header.flags.response(),
            message_id: header.message_id,
            bytes: sizes.iter().sum(),
            fragments: sizes.len(),
            peer: self.remote,
            payloads: payloads.to_vec(),
        }));
    }

    /// Sends a request of `task`'s exchange; returns the datagrams (IKE_SA_INIT keeps them).
    pub fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        inner: Vec<Payload>,
        task: Task,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let message_id = self
            .requester
            .next_message_id()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let header = self.header(exchange, false, message_id);
        let datagrams = self.protect(ctx, &header, &inner)?;
        self.requester
            .sent(ctx.now, datagrams.clone(), ctx.rng)
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.pending = Some(task);
        let sizes: Vec<usize> = datagrams.iter().map(Vec::len).collect();
        self.record(ctx, &header, true, &sizes, &inner);
        self.transmit(ctx, &datagrams);
        Ok(datagrams)
    }

    /// Sends the response to request `message_id` and caches it for retransmissions.
    pub fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        message_id: u32,
        inner: Vec<Payload>,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let header = self.header(exchange, true, message_id);
        let datagrams = self.protect(ctx, &header, &inner)?;
        self.responder.responded(message_id, datagrams.clone());
        let sizes: Vec<usize> = datagrams.iter().map(Vec::len).collect();
        self.record(ctx, &header, true, &sizes, &inner);
        let to = self.reply_to.unwrap_or((self.local, self.remote));
        self.transmit_on(ctx, &datagrams, to);
        Ok(datagrams)
    }

    /// Sends an error notify as the response to `message_id`.
    pub fn send_error_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        message_id: u32,
        error: &Error,
    ) {
        let notify = Payload::Notify(NotifyPayload::new(error.notify(), Vec::new()));
        if let Err(e) = self.send_response(ctx, exchange, message_id, vec![notify]) {
            self.log(ctx, format!("cannot send {}: {e}", error.notify()));
        }
    }

    /// Verifies and decrypts an SK message or one SKF fragment of it.
    fn unprotect(&mut self, datagram: &[u8], message: &Message) -> Unprotected {
        let Some(key) = self.sk_in.as_ref() else {
            return Unprotected::Invalid("no keys yet".into());
        };
        match message.payloads.as_slice() {
            [Payload::Sk(sk)] => match open_message(key, datagram, sk) {
                Ok(payloads) => Unprotected::Complete(payloads),
                Err(e) => Unprotected::Invalid(e.to_string()),
            },
            [Payload::Skf(skf)] => {
                let plaintext = match key.open(datagram, skf.data.len()) {
                    Ok(p) => p,
                    Err(e) => return Unprotected::Invalid(e.to_string()),
                };
                let id = (message.header.message_id, message.header.flags.response());
                if self
                    .reassembly
                    .as_ref()
                    .is_none_or(|(m, r, _)| (*m, *r) != id)
                {
                    self.reassembly = Some((id.0, id.1, Reassembly::default()));
                }
                let Some((_, _, pieces)) = self.reassembly.as_mut() else {
                    return Unprotected::Partial;
                };
                match pieces.add(skf, plaintext) {
                    Ok(None) => Unprotected::Partial,
                    Ok(Some(whole)) => {
                        self.reassembly = None;
                        match decode_chain(whole.first_payload, &mut Reader::new(&whole.plaintext))
                        {
                            Ok(payloads) => Unprotected::Complete(payloads),
                            Err(e) => Unprotected::Invalid(e.to_string()),
                        }
                    }
                    Err(e) => {
                        self.reassembly = None;
                        Unprotected::Invalid(e.to_string())
                    }
                }
            }
            _ => Unprotected::Invalid("message is not encrypted".into()),
        }
    }

    /// Handles a message for this SA (decoded; `datagram` as received).
    pub fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        message: Message,
    ) {
        let header = message.header.clone();
        // The sender's role must be the other one.
        if header.flags.initiator() == self.initiator {
            return;
        }
        if header.flags.response() {
            self.handle_response(ctx, datagram, message);
        } else {
            self.handle_request(ctx, local, remote, datagram, message);
        }
    }

    fn handle_response(&mut self, ctx: &mut Ctx<'_>, datagram: &[u8], message: Message) {
        let header = message.header.clone();
        if !self.requester.is_busy() {
            return;
        }
        if lost_by_peer(&message) && self.requester.outstanding_id() == Some(header.message_id) {
            // Unauthenticated, but it names our SPIs and the message ID in flight: only
            // the peer (or someone on its path, who can drop our packets anyway) knows them.
            self.log(ctx, "the peer has no such IKE_SA (INVALID_IKE_SPI)");
            self.down(ctx, DownReason::PeerDead);
            return;
        }
        let payloads = if header.exchange == ExchangeType::IKE_SA_INIT {
            message.payloads
        } else {
            match self.unprotect(datagram, &message) {
                Unprotected::Complete(p) => p,
                Unprotected::Partial => return,
                Unprotected::Invalid(why) => {
                    self.log_dropped(ctx, format!("dropped {} response: {why}", header.exchange));
                    return;
                }
            }
        };
        if !self.requester.response(header.message_id) {
            return;
        }
        self.last_inbound = ctx.now;
        self.record(ctx, &header, false, &[datagram.len()], &payloads);
        let Some(task) = self.pending.take() else {
            return;
        };
        task.response(self, ctx, datagram, &header, payloads);
    }

    fn handle_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        message: Message,
    ) {
        let header = message.header.clone();
        match self.responder.incoming(header.message_id) {
            Incoming::New => {}
            Incoming::Retransmitted(cached) => {
                // A fragmented request is answered once, on its first fragment.
                let first = match message.payloads.as_slice() {
                    [Payload::Skf(f)] => f.fragment_number == 1,
                    _ => true,
                };
                if first {
                    let cached = cached.to_vec();
                    self.transmit_on(ctx, &cached, (local, remote));
                }
                return;
            }
            Incoming::OutOfWindow => return,
        }
        let payloads = if header.exchange == ExchangeType::IKE_SA_INIT {
            return;
        } else {
            match self.unprotect(datagram, &message) {
                Unprotected::Complete(p) => p,
                Unprotected::Partial => return,
                Unprotected::Invalid(why) => {
                    self.log_dropped(ctx, format!("dropped {} request: {why}", header.exchange));
                    return;
                }
            }
        };
        // An authentic request shows where the peer is now: until it is established
        // (floating to the NAT-T port), and after when it is behind a NAT that may
        // map it anew (RFC 7296 §2.23); under MOBIKE only UPDATE_SA_ADDRESSES moves
        // the SA (RFC 4555 §3.5).
        if self.state != State::Established || (!self.mobike && self.peer_behind_nat) {
            self.move_to(ctx, local, remote);
        }
        self.reply_to = Some((local, remote));
        self.last_inbound = ctx.now;
        self.record(ctx, &header, false, &[datagram.len()], &payloads);
        Task::respond(self, ctx, &header, payloads);
        self.reply_to = None;
    }

    /// Acts on the clock: half-open expiry, IKE and Child SA lifetimes, stragglers'
    /// grace, liveness checks, delayed work, a childless SA, retransmission.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        if self.half_open_until.is_some_and(|t| now >= t) && self.state == State::HalfOpen {
            self.log(ctx, "half-open IKE SA expired");
            self.down(ctx, DownReason::HalfOpenExpired);
            return;
        }
        if self.expire_at.is_some_and(|t| now >= t) {
            self.expire_at = None;
            self.log(ctx, "IKE_SA hard lifetime reached");
            self.queue.push_front(Work::DeleteIke);
        }
        if self.rekey_at.is_some_and(|t| now >= t) {
            self.rekey_at = None;
            if !self.superseded {
                self.queue.push_back(Work::RekeyIke);
            }
        }
        let due: Vec<(u32, bool)> = self
            .children
            .iter()
            .filter_map(|c| {
                let hard = c.hard_at.is_some_and(|t| now >= t);
                let soft = c.soft_at.is_some_and(|t| now >= t);
                (hard || soft).then_some((c.spi_in, hard))
            })
            .collect();
        for (spi_in, hard) in due {
            informational::expire_child(self, ctx, spi_in, hard, "time");
        }
        let over: Vec<u32> = self
            .children
            .iter()
            .filter(|c| matches!(c.state, ChildState::Retired { remove_at } if now >= remove_at))
            .map(|c| c.spi_in)
            .collect();
        for spi_in in over {
            informational::remove_child(self, ctx, spi_in);
        }
        if self.dpd_due().is_some_and(|t| now >= t) {
            self.queue.push_back(Work::Dpd);
        }
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| now >= *t);
        self.delayed = later;
        self.queue.extend(ready.into_iter().map(|(_, w)| w));
        if self
            .childless_since
            .is_some_and(|t| now >= t + self.childless_grace())
        {
            if self.heir(ctx) {
                self.childless_since = Some(now);
            } else {
                self.childless_since = None;
                self.childless(ctx);
            }
        }
        match self.requester.timeout(now, ctx.rng) {
            Timeout::Idle => {}
            Timeout::Retransmit(datagrams) => {
                let datagrams = datagrams.to_vec();
                ctx.stats.retransmits += 1;
                self.log(ctx, "retransmitting request");
                self.transmit(ctx, &datagrams);
            }
            Timeout::GiveUp => {
                let reason = match self.pending.take() {
                    Some(Task::Delete) => DownReason::DeletedLocally,
                    _ => DownReason::PeerDead,
                };
                // A replaced SA the peer no longer knows is no sign of a dead peer.
                self.log(
                    ctx,
                    if self.superseded && reason == DownReason::DeletedLocally {
                        "no answer to the Delete of this replaced IKE_SA: removing it"
                    } else {
                        "giving up after retransmissions"
                    },
                );
                self.down(ctx, reason);
            }
        }
    }

    /// We made this SA answering the peer's rekey of another IKE SA that was being
    /// rekeyed by us too: until that collision is settled, its Child SAs may come here.
    fn heir(&self, ctx: &Ctx<'_>) -> bool {
        let ours = self.our_spi().0;
        ctx.others
            .values()
            .any(|o| o.peer_rekey.as_ref().is_some_and(|r| r.created == ours))
    }

    /// No Child SA left: bring back the children that should be up, or close the SA
    /// (after a few failed tries the whole connection starts over instead).
    fn childless(&mut self, ctx: &mut Ctx<'_>) {
        let wanted: Vec<usize> = (0..self.policy.children.len())
            .filter(|&i| {
                self.policy.children[i].start_action == Action::Start
                    && !ctx.is_held(&self.policy, i)
            })
            .collect();
        let held = (0..self.policy.children.len()).any(|i| ctx.is_held(&self.policy, i));
        if self.recreates_children() && !wanted.is_empty() {
            self.log(ctx, "no CHILD_SA left, creating them again");
            self.queue.extend(wanted.into_iter().map(Work::CreateChild));
        } else if held && !self.superseded {
            // The operator took children down (esptun down CONN/CHILD): the IKE SA
            // stays, idle, for `esptun up`.
        } else {
            self.log(ctx, "no CHILD_SA left, closing the IKE_SA");
            self.queue.push_back(Work::DeleteIke);
        }
    }

    /// Marks this SA as the redundant one of a rekey collision: it carries nothing
    /// and only awaits its deletion, whose Delete is retransmitted once at most (the
    /// peer may have dropped the SA already, silently).
    pub fn redundant(&mut self) {
        self.superseded = true;
        self.requester.limit_tries(1);
    }

    /// Whether a childless SA brings back its children rather than closing (never
    /// one a rekey replaced: its children live on elsewhere).
    fn recreates_children(&self) -> bool {
        !self.superseded
            && self.child_failures < MAX_CHILD_FAILURES
            && self
                .policy
                .children
                .iter()
                .any(|c| c.start_action == Action::Start)
    }

    /// How long the SA may stay childless before [`IkeSa::childless`] acts.
    fn childless_grace(&self) -> Duration {
        if self.recreates_children() {
            CHILDLESS_GRACE
        } else {
            CHILDLESS_CLOSE_GRACE
        }
    }

    /// When a liveness check is due: `dpd_delay` after the peer was last heard from,
    /// unless a request (which checks liveness too) is already under way.
    fn dpd_due(&self) -> Option<Instant> {
        let delay = self.policy.dpd_delay?;
        let idle = self.state == State::Established
            && !self.requester.is_busy()
            && !self.queue.contains(&Work::Dpd);
        idle.then(|| self.last_inbound + delay)
    }

    /// When this SA next needs the clock.
    pub fn deadline(&self) -> Option<Instant> {
        let half_open = self
            .half_open_until
            .filter(|_| self.state == State::HalfOpen);
        let children = self.children.iter().flat_map(|c| {
            let retired = match c.state {
                ChildState::Retired { remove_at } => Some(remove_at),
                _ => None,
            };
            [c.soft_at, c.hard_at, retired]
        });
        let childless = self.childless_since.map(|t| t + self.childless_grace());
        let delayed = self.delayed.iter().map(|(t, _)| Some(*t));
        [
            self.requester.deadline(),
            half_open,
            self.rekey_at,
            self.expire_at,
            self.dpd_due(),
            childless,
        ]
        .into_iter()
        .chain(children)
        .chain(delayed)
        .flatten()
        .min()
    }
}
