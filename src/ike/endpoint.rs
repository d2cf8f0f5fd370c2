//! The endpoint: every IKE SA indexed by our SPI, new SAs for IKE_SA_INIT requests,
//! COOKIEs under load (RFC 7296 §2.6), limits on half-open SAs in all and per
//! source, stateless error replies logged in summary.

use super::admission::{Cookies, HalfOpen, InitRate, Refusal, Refusals, source_of};
use super::ephemeral::Ephemerals;
use super::exchange::RetransmitPolicy;
use super::ike_sa::{Ctx, IkeSa, REDUNDANT_GRACE, Request, State, Work};
use super::pool::Pools;
use super::task::{create_child, ike_init, informational};
use super::{
    Action, AddressPool, ChildPolicy, DownReason, Error, Event, Instant, Policy, Stats, Transmit,
    proposal,
};
use crate::crypto::Random;
use crate::wire::payload::{Identity, NotifyPayload, Payload};
use crate::wire::{ExchangeType, Flags, Header, IkeSpi, Message, NotifyType};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Endpoint-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our NAT-T port, floated to when NAT is detected or encapsulation is forced.
    pub natt_port: u16,
    /// IKE_SA_INIT requests must echo a COOKIE once the half-open SAs plus the
    /// IKE_SA_INIT requests of the last one to two seconds (refused ones too)
    /// reach this many; 0 demands COOKIEs always.
    pub cookie_threshold: usize,
    /// Half-open SAs at which further IKE_SA_INIT requests are dropped outright.
    pub half_open_limit: usize,
    /// Half-open SAs that one source (an IPv4 address, an IPv6 /64) may hold once
    /// it echoed a COOKIE; further requests from it are dropped.
    pub half_open_per_source: usize,
    /// How long a responder keeps an SA waiting for IKE_AUTH.
    pub half_open_timeout: Duration,
    /// Retransmission of our requests.
    pub retransmit: RetransmitPolicy,
    /// Wall-clock time (since the Unix epoch) at `Instant(0)`, for certificate validity.
    pub unix_time_at_start: Duration,
    /// Virtual IP pools that connections' `pools` name.
    pub pools: Vec<AddressPool>,
    /// The data plane's resources (ESP workers), each of which may carry its own
    /// Child SA of a child with [`ChildPolicy::per_resource`] (RFC 9611); inbound SPIs
    /// are steered by `SPI % resources`. 1 turns per-resource Child SAs off.
    pub resources: u32,
    /// Our IKE_SA_INITs take their key exchange value from the responder's reuse (one
    /// per group for 30 s or 256 IKE SAs, RFC 7296 §2.12) instead of a fresh one each:
    /// for a load generator, which must spend less per handshake than the responder it
    /// measures. Off, every IKE SA we start has a value of its own.
    pub initiator_reuses_ke: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            natt_port: 4500,
            cookie_threshold: 10,
            half_open_limit: 1000,
            half_open_per_source: 5,
            half_open_timeout: Duration::from_secs(30),
            retransmit: RetransmitPolicy::default(),
            unix_time_at_start: Duration::ZERO,
            pools: Vec::new(),
            resources: 1,
            initiator_reuses_ke: false,
        }
    }
}

/// All IKE SAs of one gateway, driven as described in [the module](super).
pub struct Endpoint {
    shared: Shared,
    /// Keyed by our SPI; boxed, for an IkeSa is large (its SK keys and messages): inline,
    /// the table's spare capacity cost as much as the SAs, and every removal and
    /// reinsertion copied one.
    sas: HashMap<IkeSpi, Box<IkeSa>>,
    /// Each SA's deadline, refreshed whenever the SA may have changed (`with_sa`, a
    /// new responder SA, ESP seen), so that the next timeout is the first entry: a
    /// walk over every SA per datagram made a flood of full IKE_SA_INITs, whose
    /// half-open SAs pile up, cost time quadratic in their number.
    timers: BTreeSet<(Instant, IkeSpi)>,
    deadlines: HashMap<IkeSpi, Instant>,
    /// The established SAs of each connection (by policy index): whether an initiation
    /// is the first with its peer (INITIAL_CONTACT) and how many are up, without a walk
    /// over every SA, which made a load generator's initiations cost time linear in
    /// its SAs.
    up: HashMap<usize, HashSet<IkeSpi>>,
    /// The established SAs by the peer's authenticated identity: the ones an
    /// INITIAL_CONTACT from it replaces, found without a walk over every SA (each
    /// road warrior that connects sends one).
    by_peer_id: HashMap<Identity, HashSet<IkeSpi>>,
    /// Responder SAs by the initiator's SPI and address, to spot retransmitted IKE_SA_INIT.
    by_initiator: HashMap<(IkeSpi, SocketAddr), IkeSpi>,
    /// Its keys by our SPI, so a responder SA that goes takes its entry with it
    /// without a walk over all of them (one per half-open SA expiring in a flood).
    initiator_of: HashMap<IkeSpi, (IkeSpi, SocketAddr)>,
    half_open: HalfOpen,
    init_rate: InitRate,
    cookies: Cookies,
    /// Our IKE_SA_INIT key exchange values, shared by the SAs of a short period.
    ephemerals: Ephemerals,
    refusals: Refusals,
    malformed: u64,
    /// Where to reach the peer of each policy we may initiate (by policy index).
    peers: HashMap<usize, (SocketAddr, SocketAddr)>,
    /// Restart state of the connections we initiate, by policy index.
    conns: HashMap<usize, Conn>,
    /// INVALID_IKE_SPI answers in the current second: (its start, count).
    invalid_ike_spi: (Instant, u32),
    /// `delete_all` was called: nothing restarts any more.
    stopping: bool,
    /// Connections a reload removed or replaced: their index stays (SAs, events and
    /// the data plane name connections by index), but nothing matches, initiates or
    /// names them any more.
    retired: HashSet<usize>,
}

/// What every SA borrows while it works: kept apart from `sas` so both can be borrowed.
struct Shared {
    settings: Settings,
    policies: Vec<Arc<Policy>>,
    rng: Box<dyn Random + Send>,
    child_spis: HashSet<u32>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Children the operator took down, by policy and child index.
    held: HashSet<(usize, usize)>,
    /// The virtual IP leases.
    pools: Pools,
}

impl Shared {
    fn ctx<'a>(
        &'a mut self,
        now: Instant,
        others: &'a HashMap<IkeSpi, Box<IkeSa>>,
        requests: &'a mut Vec<Request>,
    ) -> Ctx<'a> {
        Ctx {
            now,
            settings: &self.settings,
            rng: self.rng.as_mut(),
            out: &mut self.out,
            events: &mut self.events,
            child_spis: &mut self.child_spis,
            stats: &mut self.stats,
            held: &self.held,
            pools: &mut self.pools,
            policies: &self.policies,
            others,
            requests,
        }
    }
}

/// What the endpoint keeps per connection it initiates.
#[derive(Debug, Default)]
struct Conn {
    /// Initiations that failed in a row (for `keyingtries` and the back-off).
    failures: u32,
    /// When to initiate again.
    retry_at: Option<Instant>,
    /// Taken down by the operator: never initiated (at start, again, on demand)
    /// until brought up.
    held: bool,
}

/// The longest wait between two initiations of one connection.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// At most this many INVALID_IKE_SPI answers per second, whatever arrives.
const INVALID_IKE_SPI_PER_SECOND: u32 = 10;

impl Endpoint {
    /// An endpoint answering and initiating for `policies`.
    pub fn new(
        settings: Settings,
        policies: Vec<Arc<Policy>>,
        mut rng: Box<dyn Random + Send>,
    ) -> Self {
        let cookies = Cookies::new(rng.as_mut());
        let pools = Pools::new(&settings.pools);
        Self {
            shared: Shared {
                settings,
                policies,
                rng,
                child_spis: HashSet::new(),
                out: VecDeque::new(),
                events: VecDeque::new(),
                stats: Stats::default(),
                held: HashSet::new(),
                pools,
            },
            sas: HashMap::new(),
            timers: BTreeSet::new(),
            deadlines: HashMap::new(),
            up: HashMap::new(),
            by_peer_id: HashMap::new(),
            by_initiator: HashMap::new(),
            initiator_of: HashMap::new(),
            half_open: HalfOpen::default(),
            init_rate: InitRate::default(),
            cookies,
            ephemerals: Ephemerals::default(),
            refusals: Refusals::default(),
            malformed: 0,
            peers: HashMap::new(),
            conns: HashMap::new(),
            invalid_ike_spi: (Instant::default(), 0),
            stopping: false,
            retired: HashSet::new(),
        }
    }

    /// Virtual IP leases in all pools: (online, offline).
    pub fn leases(&self) -> (usize, usize) {
        self.shared.pools.leases()
    }

    /// Every policy ever loaded, retired ones included, by index.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.shared.policies
    }

    /// The connections in service (not retired by a reload), with their indexes.
    pub fn connections(&self) -> impl Iterator<Item = (usize, &Arc<Policy>)> {
        self.shared
            .policies
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.retired.contains(i))
    }

    /// The index of the connection in service named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.connections()
            .find(|(_, p)| p.name == name)
            .map(|(i, _)| i)
    }

    /// Adds a connection (a reload found it new or changed) and returns its index;
    /// [`Endpoint::add_peer`] and [`Endpoint::schedule_start`] then apply as at start.
    pub fn add_policy(&mut self, policy: Arc<Policy>) -> usize {
        self.shared.policies.push(policy);
        self.shared.policies.len() - 1
    }

    /// Takes the connection at `policy` out of service for good (a reload removed or
    /// replaced it): its IKE SAs are deleted as by [`Endpoint::down`], and it is
    /// never matched, initiated or named again. Returns how many IKE SAs it deleted.
    pub fn retire(&mut self, now: Instant, policy: usize) -> usize {
        let deleted = self.down(now, policy);
        self.retired.insert(policy);
        self.peers.remove(&policy);
        if let Some(p) = self.shared.policies.get(policy) {
            // Half-open SAs of other connections may still have chosen it in IKE_AUTH.
            for sa in self.sas.values_mut() {
                sa.candidates.retain(|c| !Arc::ptr_eq(c, p));
            }
        }
        deleted
    }

    /// The engine's running totals.
    pub fn stats(&self) -> Stats {
        self.shared.stats
    }

    /// Datagrams dropped because they did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Responder SAs still waiting for IKE_AUTH.
    pub fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// IKE SAs that completed IKE_AUTH.
    pub fn established(&self) -> usize {
        self.up.values().map(HashSet::len).sum()
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

    /// Files the SA's deadline (`None`: it has none, or is gone).
    fn schedule(&mut self, spi: IkeSpi, deadline: Option<Instant>) {
        if let Some(old) = self.deadlines.remove(&spi) {
            self.timers.remove(&(old, spi));
        }
        if let Some(at) = deadline {
            self.deadlines.insert(spi, at);
            self.timers.insert((at, spi));
        }
    }

    /// Runs `f` on one SA with the endpoint's shared state lent out, starts the work
    /// it queued, reaps it if done, and carries out what it asked of the endpoint.
    fn with_sa(&mut self, now: Instant, spi: IkeSpi, f: impl FnOnce(&mut IkeSa, &mut Ctx<'_>)) {
        let Some(mut sa) = self.sas.remove(&spi) else {
            return;
        };
        let mut requests = Vec::new();
        {
            let mut ctx = self.shared.ctx(now, &self.sas, &mut requests);
            f(&mut sa, &mut ctx);
            sa.kick(&mut ctx);
        }
        if sa.state != State::HalfOpen {
            self.half_open.remove(spi);
        }
        if sa.state == State::Dead {
            self.schedule(spi, None);
            if let Some(key) = self.initiator_of.remove(&spi) {
                self.by_initiator.remove(&key);
            }
            // A responder's SA has its policy for good once established.
            if let Some(up) = self.index_of(&sa.policy).and_then(|i| self.up.get_mut(&i)) {
                up.remove(&spi);
            }
            if let Some(id) = &sa.remote_id {
                let spis = self.by_peer_id.get_mut(id);
                if spis.is_some_and(|spis| spis.remove(&spi) && spis.is_empty()) {
                    self.by_peer_id.remove(id);
                }
            }
            self.after_down(now, &sa);
        } else {
            if sa.state == State::Established {
                self.connected(spi, &sa);
            }
            self.schedule(spi, sa.deadline());
            self.sas.insert(spi, sa);
        }
        for request in requests {
            self.serve(now, request);
        }
    }

    fn serve(&mut self, now: Instant, request: Request) {
        match request {
            Request::Spawn(sa) => {
                let spi = sa.our_spi();
                self.sas.insert(spi, sa);
                self.with_sa(now, spi, |_, _| {});
            }
            Request::Redundant(spi) => self.with_sa(now, spi, |sa, ctx| {
                sa.redundant();
                sa.delayed
                    .push((ctx.now + REDUNDANT_GRACE, Work::DeleteIke));
            }),
            Request::AdoptChildren {
                to,
                children,
                work,
                virtual_ips,
                dns,
                remote_id,
            } => match self.sas.get_mut(&to) {
                Some(target) => {
                    target.children.extend(children);
                    target.delayed.extend(work);
                    target.virtual_ips = virtual_ips;
                    target.dns = dns;
                    self.with_sa(now, to, |_, _| {});
                }
                None => {
                    // No SA to hold the leases: they go offline.
                    for (_, pool) in virtual_ips {
                        if let (Some(pool), Some(id)) = (pool, &remote_id) {
                            self.shared.pools.release(&pool, id);
                        }
                    }
                    for c in children {
                        self.shared.child_spis.remove(&c.spi_in);
                        self.shared.events.push_back(Event::ChildSaDown {
                            spi_i: IkeSpi(0),
                            spi_in: c.spi_in,
                            spi_out: c.spi_out,
                        });
                    }
                }
            },
            Request::Announce { spi, old } => {
                if let Some(up) = self.sas.get(&spi).and_then(|sa| sa.summary()) {
                    self.shared.events.push_back(Event::IkeSaRekeyed {
                        old,
                        up: Box::new(up),
                    });
                }
            }
            Request::InitialContact { keep, remote_id } => {
                let stale: Vec<IkeSpi> = self
                    .by_peer_id
                    .get(&remote_id)
                    .into_iter()
                    .flatten()
                    .filter(|spi| **spi != keep)
                    .copied()
                    .collect();
                for spi in stale {
                    self.with_sa(now, spi, |sa, ctx| {
                        sa.log(
                            ctx,
                            format!("{remote_id} sent INITIAL_CONTACT: dropping this IKE_SA"),
                        );
                        sa.down(ctx, DownReason::Replaced);
                    });
                }
            }
        }
    }

    /// The index of `policy` among the endpoint's.
    fn index_of(&self, policy: &Arc<Policy>) -> Option<usize> {
        self.shared
            .policies
            .iter()
            .position(|p| Arc::ptr_eq(p, policy))
    }

    /// IKE SA `spi` of `policy` is up: its connection counts keying tries afresh.
    fn connected(&mut self, spi: IkeSpi, sa: &IkeSa) {
        if let Some(id) = &sa.remote_id {
            // Called on every turn of an established SA: no clone once it is in.
            match self.by_peer_id.get_mut(id) {
                Some(spis) => {
                    spis.insert(spi);
                }
                None => {
                    self.by_peer_id.insert(id.clone(), HashSet::from([spi]));
                }
            }
        }
        let Some(index) = self.index_of(&sa.policy) else {
            return;
        };
        self.up.entry(index).or_default().insert(spi);
        if let Some(conn) = self.conns.get_mut(&index) {
            conn.failures = 0;
        }
    }

    /// An IKE SA is gone: start its connection again if its actions or the
    /// initiation retries (`keyingtries`) say so.
    fn after_down(&mut self, now: Instant, sa: &IkeSa) {
        if sa.superseded || self.stopping {
            return;
        }
        let Some(index) = self.index_of(&sa.policy) else {
            return;
        };
        let all_held = self.all_children_held(index);
        if !self.peers.contains_key(&index) || self.held(index) || all_held {
            return;
        }
        let children = &sa.policy.children;
        let any =
            |pick: fn(&ChildPolicy) -> Action| children.iter().any(|c| pick(c) == Action::Start);
        let established = sa.remote_id.is_some();
        let restart = match sa.down_reason {
            Some(DownReason::PeerDead) if established => any(|c| c.dpd_action),
            Some(DownReason::DeletedByPeer) => any(|c| c.close_action),
            Some(DownReason::DeletedLocally) => any(|c| c.start_action),
            Some(DownReason::Replaced | DownReason::HalfOpenExpired) | None => false,
            Some(_) if sa.initiator && !established => {
                let conn = self.conns.entry(index).or_default();
                conn.failures += 1;
                let tries = sa.policy.keyingtries;
                if tries != 0 && conn.failures >= tries {
                    self.shared.events.push_back(Event::Log {
                        spi_i: sa.spi_i,
                        connection: Some(sa.policy.name.clone()),
                        text: format!("{}: giving up after {tries} keying tries", sa.policy.name),
                    });
                    conn.failures = 0;
                    false
                } else {
                    true
                }
            }
            Some(_) => false,
        };
        if restart {
            let failures = self.conns.get(&index).map_or(0, |c| c.failures);
            let backoff = if failures == 0 {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(1 << failures.min(6)).min(MAX_BACKOFF)
            };
            let mut r = [0; 2];
            self.shared.rng.fill(&mut r);
            let wait =
                backoff.mul_f64(0.5 + f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX) / 2.0);
            self.shared.events.push_back(Event::Log {
                spi_i: sa.spi_i,
                connection: Some(sa.policy.name.clone()),
                text: format!(
                    "{}: initiating again in {:.1} s",
                    sa.policy.name,
                    wait.as_secs_f64()
                ),
            });
            self.conns.entry(index).or_default().retry_at = Some(now + wait);
        }
    }

    /// The name of the connection at `policy`, for the operator's messages.
    fn name_of(&self, policy: usize) -> Result<String, String> {
        self.shared
            .policies
            .get(policy)
            .map(|p| p.name.clone())
            .ok_or_else(|| format!("no connection {policy}"))
    }

    /// Our SPIs of every IKE SA of `policy`, in any state.
    fn sas_of(&self, policy: &Arc<Policy>) -> Vec<IkeSpi> {
        self.sas
            .iter()
            .filter(|(_, sa)| Arc::ptr_eq(&sa.policy, policy))
            .map(|(spi, _)| *spi)
            .collect()
    }

    /// Our SPI of an established IKE SA of `policy` that no rekey replaced.
    fn live_sa(&self, policy: &Arc<Policy>) -> Option<IkeSpi> {
        self.sas
            .iter()
            .find(|(_, sa)| {
                Arc::ptr_eq(&sa.policy, policy) && sa.state == State::Established && !sa.superseded
            })
            .map(|(spi, _)| *spi)
    }

    /// True if an IKE SA of the policy at `policy` exists (in any state).
    fn has_sa(&self, policy: usize) -> bool {
        self.shared
            .policies
            .get(policy)
            .is_some_and(|p| self.sas.values().any(|sa| Arc::ptr_eq(&sa.policy, p)))
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
        let index = policy;
        let policy = self
            .shared
            .policies
            .get(index)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no policy {index}")))?;
        let spi = self.fresh_spi();
        let mut sa = IkeSa::new(policy, true, spi, local, remote, &self.shared.settings);
        // INITIAL_CONTACT only when no other IKE SA with this peer exists (§2.4).
        sa.initial_contact = self.up.get(&index).is_none_or(HashSet::is_empty);
        if self.shared.settings.initiator_reuses_ke
            && let Some(group) = sa.policy.proposals.first().and_then(proposal::group)
        {
            let kex = self.ephemerals.take(group, now, self.shared.rng.as_mut())?;
            sa.kex = Some(kex.clone());
        }
        self.sas.insert(spi, Box::new(sa));
        let mut result = Ok(());
        self.with_sa(now, spi, |sa, ctx| {
            ctx.stats.handshakes_started += 1;
            if let Err(e) = ike_init::start(sa, ctx) {
                sa.log(ctx, format!("cannot initiate: {e}"));
                sa.down(ctx, super::DownReason::Failed(e.clone()));
                result = Err(e);
            }
        });
        result.map(|()| spi)
    }

    /// Initiates every connection with a known peer whose children start at once.
    pub fn start(&mut self, now: Instant) {
        for index in 0..self.shared.policies.len() {
            self.schedule_start(now, index);
        }
        self.handle_timeout(now);
    }

    /// Has the connection at `policy` initiated at the next timeout if its peer is
    /// known, a child of it starts at once and it is in service.
    pub fn schedule_start(&mut self, now: Instant, policy: usize) {
        let starts = self
            .shared
            .policies
            .get(policy)
            .is_some_and(|p| p.children.iter().any(|c| c.start_action == Action::Start));
        if starts && self.peers.contains_key(&policy) && !self.retired.contains(&policy) {
            self.conns.entry(policy).or_default().retry_at = Some(now);
        }
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
    /// for it: negotiate one, on the IKE SA we have or a new one, unless under way or
    /// the child is not to be started on demand.
    pub fn acquire(&mut self, now: Instant, policy: usize, child: usize) {
        let Some(p) = self.shared.policies.get(policy).cloned() else {
            return;
        };
        let Some(c) = p.children.get(child) else {
            return;
        };
        let on_demand = [c.start_action, c.dpd_action, c.close_action]
            .iter()
            .any(|a| *a != Action::None);
        let child_held = self.shared.held.contains(&(policy, child));
        if !on_demand || self.stopping || self.held(policy) || child_held {
            return;
        }
        if let Some(spi) = self.live_sa(&p) {
            self.with_sa(now, spi, |sa, _| {
                create_child::recreate_if_wanted(sa, child)
            });
            return;
        }
        let waiting = self
            .conns
            .get(&policy)
            .is_some_and(|c| c.retry_at.is_some());
        if self.has_sa(policy) || waiting {
            return;
        }
        let Some(&(local, remote)) = self.peers.get(&policy) else {
            return;
        };
        if let Err(e) = self.initiate(now, policy, local, remote) {
            self.shared.events.push_back(Event::Log {
                spi_i: IkeSpi(0),
                connection: Some(p.name.clone()),
                text: format!("{}: cannot initiate on demand: {e}", p.name),
            });
        }
    }

    /// The IKE SAs that move when our address does (we initiated them and MOBIKE
    /// is on): our SPI, our address, the peer's.
    pub fn roaming(&self) -> Vec<(IkeSpi, SocketAddr, SocketAddr)> {
        self.sas
            .iter()
            .filter(|(_, sa)| {
                sa.initiator
                    && sa.mobike
                    && sa.state == State::Established
                    && !sa.superseded
                    && sa.policy.local_addrs.is_empty()
            })
            .map(|(&spi, sa)| (spi, sa.local, sa.remote))
            .collect()
    }

    /// Our address for the IKE SA with our SPI `spi` is now `local` (its port
    /// kept): tell the peer and move there (MOBIKE).
    pub fn update_addresses(&mut self, now: Instant, spi: IkeSpi, local: std::net::IpAddr) {
        self.with_sa(now, spi, |sa, _| {
            let to = SocketAddr::new(local, sa.local.port());
            if sa.mobike && to != sa.local {
                // A request in flight is retransmitted from there too; the gateway
                // answers where it came from.
                sa.local = to;
                sa.queue.retain(|w| !matches!(w, Work::UpdateAddresses(_)));
                sa.queue.push_back(Work::UpdateAddresses(to));
            }
        });
    }

    /// Authentic ESP on the Child SA with inbound SPI `spi_in` came from `remote`,
    /// not where its IKE SA sends: a NAT in front of the peer mapped it anew. The
    /// SA follows (RFC 7296 §2.23) when the peer is the one behind the NAT, and
    /// checks the new path with a liveness check. ESP that an attacker replays from
    /// elsewhere fails the replay check first; one on the path can redirect only
    /// what it could already drop (RFC 3948 §3.3).
    pub fn esp_moved(&mut self, now: Instant, spi_in: u32, remote: SocketAddr) {
        let Some(spi) = self
            .sas
            .iter()
            .find(|(_, sa)| sa.children.iter().any(|c| c.spi_in == spi_in))
            .map(|(spi, _)| *spi)
        else {
            return;
        };
        self.with_sa(now, spi, |sa, ctx| {
            if sa.state == State::Established && sa.peer_behind_nat && remote != sa.remote {
                let local = sa.local;
                sa.move_to(ctx, local, remote);
                if !sa.queue.contains(&Work::Dpd) {
                    sa.queue.push_back(Work::Dpd);
                }
            }
        });
    }

    /// The data plane received authentic ESP on the Child SAs with these inbound
    /// SPIs: their peers are alive (no liveness check is due). One pass over the
    /// SAs however many there are, for a gateway with thousands of busy clients.
    pub fn inbound_seen(&mut self, now: Instant, spis_in: &[u32]) {
        let seen: HashSet<u32> = spis_in.iter().copied().collect();
        let mut alive = Vec::new();
        for (spi, sa) in &mut self.sas {
            if sa.children.iter().any(|c| seen.contains(&c.spi_in)) {
                sa.last_inbound = now;
                alive.push((*spi, sa.deadline()));
            }
        }
        for (spi, deadline) in alive {
            self.schedule(spi, deadline);
        }
    }

    /// ESP arrived at `local` from `remote` for SPI `spi`, which is not ours: if an
    /// IKE SA with that peer exists, tell it with INVALID_SPI (RFC 7296 §2.21.4) so it
    /// replaces the Child SA instead of sending into the void. An SPI allocated for
    /// a Child SA still being negotiated is ours: the peer may send with it first.
    pub fn unknown_spi(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, spi: u32) {
        if self.shared.child_spis.contains(&spi) {
            return;
        }
        let owner = self
            .sas
            .iter()
            .find(|(_, sa)| {
                sa.state == State::Established
                    && !sa.superseded
                    && sa.remote.ip() == remote.ip()
                    && (local.ip().is_unspecified() || sa.local.ip() == local.ip())
            })
            .map(|(spi, _)| *spi);
        if let Some(owner) = owner {
            self.with_sa(now, owner, |sa, ctx| {
                informational::invalid_spi(sa, ctx, spi);
            });
        }
    }

    /// Takes the connection at `policy` down for the operator: deletes its IKE SAs
    /// (Delete to established peers) and initiates it no more, whatever its actions
    /// say, until [`Endpoint::up`]. Returns how many IKE SAs it deleted.
    pub fn down(&mut self, now: Instant, policy: usize) -> usize {
        let Some(p) = self.shared.policies.get(policy).cloned() else {
            return 0;
        };
        let conn = self.conns.entry(policy).or_default();
        conn.held = true;
        conn.retry_at = None;
        let spis = self.sas_of(&p);
        for &spi in &spis {
            self.with_sa(now, spi, informational::delete);
        }
        spis.len()
    }

    /// Brings the connection at `policy` up for the operator, after
    /// [`Endpoint::down`] or without one: initiates it unless an IKE SA of it exists.
    /// Fails if its peer is unknown (it waits for the peer to connect).
    pub fn up(&mut self, now: Instant, policy: usize) -> Result<(), String> {
        let name = self.name_of(policy)?;
        if !self.peers.contains_key(&policy) {
            return Err(format!(
                "{name}: its peer is not known: it waits for the peer to connect"
            ));
        }
        if self.all_children_held(policy) {
            return Err(format!(
                "{name}: every child of it is down: bring one up (esptun up {name}/CHILD)"
            ));
        }
        let idle = !self.has_sa(policy);
        let conn = self.conns.entry(policy).or_default();
        conn.held = false;
        conn.failures = 0;
        if idle {
            conn.retry_at = Some(now);
            self.handle_timeout(now);
        }
        Ok(())
    }

    /// Takes child `child` of the connection at `policy` down for the operator:
    /// deletes its Child SAs (Delete to the peer), and no action, trap or childless
    /// IKE SA creates it again until [`Endpoint::up_child`]. Its IKE SA stays. Returns
    /// how many Child SAs it deleted.
    pub fn down_child(&mut self, now: Instant, policy: usize, child: usize) -> usize {
        let Some(p) = self.shared.policies.get(policy).cloned() else {
            return 0;
        };
        self.shared.held.insert((policy, child));
        let mut deleted = 0;
        for spi in self.sas_of(&p) {
            self.with_sa(now, spi, |sa, _| {
                let doomed: Vec<u32> = sa
                    .children
                    .iter()
                    .filter(|c| c.index == child && c.is_active())
                    .map(|c| c.spi_in)
                    .collect();
                deleted += doomed.len();
                if !doomed.is_empty() {
                    sa.queue.push_back(Work::DeleteChildren(doomed));
                }
            });
        }
        deleted
    }

    /// Brings child `child` of the connection at `policy` up again after
    /// [`Endpoint::down_child`] (or without one): negotiated on the connection's IKE
    /// SA, or with a new one as [`Endpoint::up`] makes. Fails if the whole connection
    /// is down (`esptun up CONN` first) or its peer is unknown.
    pub fn up_child(&mut self, now: Instant, policy: usize, child: usize) -> Result<(), String> {
        self.shared.held.remove(&(policy, child));
        let name = self.name_of(policy)?;
        if self.held(policy) {
            return Err(format!(
                "{name} is down: bring it up first (esptun up {name})"
            ));
        }
        match self.live_sa(&self.shared.policies[policy]) {
            Some(spi) => {
                self.with_sa(now, spi, |sa, _| {
                    create_child::recreate_if_wanted(sa, child)
                });
                Ok(())
            }
            None => self.up(now, policy),
        }
    }

    /// True if the connection at `policy` has children and the operator took every
    /// one of them down.
    fn all_children_held(&self, policy: usize) -> bool {
        let children = self
            .shared
            .policies
            .get(policy)
            .map_or(0, |p| p.children.len());
        children > 0 && (0..children).all(|c| self.shared.held.contains(&(policy, c)))
    }

    /// The children of the connection at `policy` the operator took down.
    pub fn held_children(&self, policy: usize) -> Vec<usize> {
        let mut held: Vec<usize> = self
            .shared
            .held
            .iter()
            .filter(|(p, _)| *p == policy)
            .map(|(_, c)| *c)
            .collect();
        held.sort_unstable();
        held
    }

    /// True if the operator took the connection at `policy` down.
    pub fn held(&self, policy: usize) -> bool {
        self.conns.get(&policy).is_some_and(|c| c.held)
    }

    /// Deletes every IKE SA: Delete to established peers, silence for the others.
    /// Nothing is restarted afterwards.
    pub fn delete_all(&mut self, now: Instant) {
        self.stopping = true;
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
        if self.sas.contains_key(&ours) {
            self.with_sa(now, ours, |sa, ctx| {
                sa.handle(ctx, local, remote, datagram, message)
            });
        } else if !h.flags.response() && !self.sas.values().any(|sa| sa.creating(ours)) {
            // For the IKE SA our rekey is creating, the request overtook the answer:
            // the peer sends it again.
            self.invalid_ike_spi(now, local, remote, &message.header);
        }
    }

    /// Answers a request for an IKE SA we do not have, unprotected and rate-limited
    /// (RFC 7296 §2.21.4), so a peer that still has one after our restart learns it.
    fn invalid_ike_spi(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, h: &Header) {
        if self.refusals.note(now, Refusal::UnknownSpi, remote) {
            self.shared.events.push_back(Event::Log {
                spi_i: h.spi_i,
                connection: None,
                text: format!(
                    "{} request from {remote} for an unknown IKE_SA (SPIs {:016x}_i {:016x}_r)",
                    h.exchange, h.spi_i.0, h.spi_r.0
                ),
            });
        }
        let (since, count) = &mut self.invalid_ike_spi;
        if now >= *since + Duration::from_secs(1) {
            (*since, *count) = (now, 0);
        }
        if *count >= INVALID_IKE_SPI_PER_SECOND {
            return;
        }
        *count += 1;
        let message = Message {
            header: Header {
                flags: Flags::new(!h.flags.initiator(), true),
                ..h.clone()
            },
            payloads: vec![Payload::Notify(NotifyPayload::new(
                NotifyType::INVALID_IKE_SPI,
                Vec::new(),
            ))],
        };
        if let Ok(data) = message.encode() {
            self.shared.out.push_back(Transmit {
                local,
                remote,
                data,
            });
        }
    }

    /// An IKE_SA_INIT response that keeps no state: COOKIE or an error; `record`
    /// reports it as [`Event::Message`] (the first of its kind in a while).
    fn stateless_reply(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        spi_i: IkeSpi,
        notify: NotifyPayload,
        record: bool,
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
        let Ok(data) = message.encode() else {
            return;
        };
        if record {
            self.shared
                .events
                .push_back(Event::Message(super::MessageRecord {
                    spi_i,
                    connection: None,
                    sent: true,
                    exchange: ExchangeType::IKE_SA_INIT,
                    response: true,
                    message_id: 0,
                    bytes: data.len(),
                    fragments: 1,
                    peer: remote,
                    payloads: message.payloads,
                }));
        }
        self.shared.out.push_back(Transmit {
            local,
            remote,
            data,
        });
    }

    /// Notes a stateless refusal; the first of its kind in a while is logged with
    /// `text` (and true returned), the others are summed up by `handle_timeout`.
    fn refuse(
        &mut self,
        now: Instant,
        kind: Refusal,
        remote: SocketAddr,
        spi_i: IkeSpi,
        text: impl FnOnce(&Self) -> String,
    ) -> bool {
        let first = self.refusals.note(now, kind, remote);
        if first {
            let text = text(self);
            self.shared.events.push_back(Event::Log {
                spi_i,
                connection: None,
                text,
            });
        }
        first
    }

    /// An IKE_SA_INIT for a new SA: dropped over the limits, answered with a COOKIE
    /// under load, refused statelessly, or answered by a new half-open SA.
    fn new_responder(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        message: &Message,
    ) {
        let spi_i = message.header.spi_i;
        let settings = &self.shared.settings;
        let (limit, threshold, per_source) = (
            settings.half_open_limit,
            settings.cookie_threshold,
            settings.half_open_per_source,
        );
        let half_open = self.half_open.len();
        // Refused and abandoned requests count too: they cost work but leave no SA.
        let load = half_open + self.init_rate.recent(now);
        self.init_rate.record(now);
        if half_open >= limit {
            self.refuse(now, Refusal::OverLimit, remote, spi_i, |_| {
                format!("dropped IKE_SA_INIT from {remote}: {half_open} half-open SAs")
            });
            return;
        }
        let mut source = None;
        if load >= threshold {
            let nonce = message.payloads.iter().find_map(|p| match p {
                Payload::Nonce(n) => Some(n.data.as_slice()),
                _ => None,
            });
            let Some(nonce) = nonce else {
                return;
            };
            self.cookies.rotate(now, self.shared.rng.as_mut());
            let echoed = matches!(message.payloads.first(),
                Some(Payload::Notify(n)) if n.notify_type == NotifyType::COOKIE
                    && self.cookies.verify(&n.data, nonce, remote, spi_i));
            if !echoed {
                let cookie = self.cookies.make(nonce, remote, spi_i);
                let record = self.refuse(now, Refusal::Cookie, remote, spi_i, |_| {
                    format!("IKE_SA_INIT from {remote}: COOKIE demanded (load {load})")
                });
                let notify = NotifyPayload::new(NotifyType::COOKIE, cookie);
                self.stateless_reply(local, remote, spi_i, notify, record);
                return;
            }
            // The peer receives at its address: its share may be counted.
            let from = source_of(remote.ip());
            let held = self.half_open.from(from);
            if held >= per_source {
                self.refuse(now, Refusal::OverSourceLimit, remote, spi_i, |_| {
                    format!("dropped IKE_SA_INIT from {remote}: it holds {held} half-open SAs")
                });
                return;
            }
            source = Some(from);
        }
        let candidates: Vec<Arc<Policy>> = self.policies_for(local, remote).cloned().collect();
        let mut requests = Vec::new();
        let mut ctx = self.shared.ctx(now, &self.sas, &mut requests);
        let result = if candidates.is_empty() {
            Err(Error::NoProposalChosen)
        } else {
            ike_init::respond(
                &mut ctx,
                &mut self.ephemerals,
                candidates,
                local,
                remote,
                datagram,
                message,
            )
        };
        match result {
            Ok(sa) => {
                let spi_r = sa.our_spi();
                self.by_initiator.insert((spi_i, remote), spi_r);
                self.initiator_of.insert(spi_r, (spi_i, remote));
                self.half_open.add(spi_r, source);
                self.shared.stats.handshakes_started += 1;
                self.schedule(spi_r, sa.deadline());
                self.sas.insert(spi_r, Box::new(sa));
            }
            Err(e) => {
                let (kind, data) = match &e {
                    Error::InvalidKePayload { wanted, .. } => {
                        (Refusal::InvalidKe, wanted.0.to_be_bytes().to_vec())
                    }
                    _ => (Refusal::Refused, Vec::new()),
                };
                // Only the first of a flood is told, so only its detail is worked out.
                let record = self.refuse(now, kind, remote, spi_i, |me| {
                    let detail = match e {
                        Error::NoProposalChosen => me.proposals_seen(local, remote, message),
                        _ => String::new(),
                    };
                    format!("IKE_SA_INIT from {remote} refused: {e}{detail}")
                });
                let notify = NotifyPayload::new(e.notify(), data);
                self.stateless_reply(local, remote, spi_i, notify, record);
            }
        }
    }

    /// The connections whose addresses admit an IKE SA from `remote` to `local`.
    fn policies_for(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> impl Iterator<Item = &Arc<Policy>> {
        self.connections().map(|(_, p)| p).filter(move |p| {
            (p.local_addrs.is_empty() || p.local_addrs.contains(&local.ip()))
                && (p.remote_addrs.is_empty() || p.remote_addrs.contains(&remote.ip()))
        })
    }

    /// What a peer offered in its IKE_SA_INIT and what the connections for its
    /// addresses have, as charon logs a NO_PROPOSAL_CHOSEN.
    fn proposals_seen(&self, local: SocketAddr, remote: SocketAddr, message: &Message) -> String {
        use super::proposal::Notation;
        let list = |proposals: &[crate::wire::payload::Proposal]| {
            let items: Vec<String> = proposals.iter().map(|p| Notation(p).to_string()).collect();
            items.join(", ")
        };
        let offered = message.payloads.iter().find_map(|p| match p {
            Payload::Sa(sa) => Some(list(&sa.proposals)),
            _ => None,
        });
        let configured: Vec<String> = self
            .policies_for(local, remote)
            .map(|p| format!("{}: {}", p.name, list(&p.proposals)))
            .collect();
        format!(
            "; received {}; configured {}",
            offered.unwrap_or_else(|| "no SA payload".into()),
            if configured.is_empty() {
                format!("no connection for {local} <-> {remote}")
            } else {
                configured.join("; ")
            }
        )
    }

    /// Acts on the clock for every SA whose deadline has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ephemerals.forget_expired(now);
        self.refusals.summarize(now, &mut self.shared.events);
        let due: Vec<IkeSpi> = self
            .timers
            .range(..=(now, IkeSpi(u64::MAX)))
            .map(|(_, spi)| *spi)
            .collect();
        for spi in due {
            self.with_sa(now, spi, IkeSa::handle_timeout);
        }
        let restarts: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.retry_at.is_some_and(|t| t <= now))
            .map(|(i, _)| *i)
            .collect();
        for index in restarts {
            if let Some(c) = self.conns.get_mut(&index) {
                c.retry_at = None;
            }
            let Some(&(local, remote)) = self.peers.get(&index) else {
                continue;
            };
            if self.has_sa(index) || self.stopping {
                continue;
            }
            // A failure is reported as an IKE_SA event; after_down schedules the next try.
            let _ = self.initiate(now, index, local, remote);
        }
    }

    /// The earliest time [`Endpoint::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let restarts = self.conns.values().filter_map(|c| c.retry_at);
        self.timers
            .first()
            .map(|(at, _)| *at)
            .into_iter()
            .chain(restarts)
            .chain(self.ephemerals.next_expiry())
            .chain(self.refusals.next_summary())
            .min()
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
