//! Two endpoints in memory, in virtual time: whole IKE SAs negotiated with loss,
//! duplication and reordering injected, and what each side would install recorded.

mod common;

use common::pki::{Alg, Ca, Leaf, NOW};
use esptun::auth::identity::{self, RemoteId};
use esptun::auth::private_key::PrivateKey;
use esptun::auth::x509::TrustAnchors;
use esptun::crypto::ChildKeys;
use esptun::crypto::Secret;
use esptun::crypto::SeededRandom;
use esptun::ike::exchange::RetransmitPolicy;
use esptun::ike::{
    Action, AddressPool, ChildPolicy, ChildSaUp, DownReason, Endpoint, Event, IkeLifetime, IkeSaUp,
    Instant, Lifetime, Limits, LocalAuth, Policy, RemoteAuth, Settings, Transmit,
};
use esptun::ike::{Error, MessageRecord, proposal};
use esptun::wire::payload::{AddrRange, Payload, TsRange};
use esptun::wire::{ExchangeType, KeGroup, Message, NotifyType, ProtocolId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

fn cidr(start: &str, end: &str) -> TsRange {
    let addrs = match (start.parse().unwrap(), end.parse().unwrap()) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(e)) => AddrRange::V4(s, e),
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(e)) => AddrRange::V6(s, e),
        _ => panic!("mixed families"),
    };
    TsRange {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        addrs,
    }
}

/// A PSK policy between left.example (10.1/24) and right.example (10.2/24).
struct Spec {
    proposals: Vec<&'static str>,
    esp: Vec<&'static str>,
    psk: &'static [u8],
    local_ts: Vec<TsRange>,
    remote_ts: Vec<TsRange>,
    encap: bool,
    fragment_size: usize,
    lifetime: Lifetime,
    ike_lifetime: IkeLifetime,
    dpd_delay: Option<Duration>,
    /// Every child's start, dpd and close action.
    start_action: Action,
    dpd_action: Action,
    close_action: Action,
    keyingtries: u32,
    /// A second child, "net2", between 10.1.1/24 and 10.2.1/24.
    second_child: bool,
    /// Announce MOBIKE.
    mobike: bool,
    /// Every child asks for (and grants) transport mode.
    transport: bool,
    /// Every child asks for (and grants) per-resource SAs.
    per_resource: bool,
    /// Every child's SAs that are not per-resource are spread.
    spread: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            proposals: vec!["aes128gcm16-prfsha256-x25519"],
            esp: vec!["aes128gcm16"],
            psk: b"a shared secret of decent length",
            local_ts: vec![cidr("10.1.0.0", "10.1.0.255")],
            remote_ts: vec![cidr("10.2.0.0", "10.2.0.255")],
            encap: false,
            fragment_size: 1280,
            lifetime: Lifetime::default(),
            // No IKE SA rekeys unless a test asks: `drive` runs until nothing is left to do.
            ike_lifetime: IkeLifetime {
                rekey_time: None,
                ..IkeLifetime::default()
            },
            dpd_delay: None,
            start_action: Action::None,
            dpd_action: Action::None,
            close_action: Action::None,
            keyingtries: 0,
            second_child: false,
            mobike: true,
            transport: false,
            per_resource: false,
            spread: false,
        }
    }
}

fn policy(spec: Spec, left: bool) -> Arc<Policy> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (me, peer) = if left {
        ("left.example", "right.example")
    } else {
        ("right.example", "left.example")
    };
    let (local_ts, remote_ts) = if left {
        (spec.local_ts, spec.remote_ts)
    } else {
        (spec.remote_ts, spec.local_ts)
    };
    let esp_proposals = proposal::parse_all(&strings(&spec.esp), ProtocolId::ESP).unwrap();
    let child = |name: &str, local_ts, remote_ts| ChildPolicy {
        name: name.into(),
        local_ts,
        remote_ts,
        esp_proposals: esp_proposals.clone(),
        transport: spec.transport,
        per_resource: spec.per_resource,
        spread: spec.spread,
        lifetime: spec.lifetime,
        rand_time: Duration::ZERO,
        start_action: spec.start_action,
        dpd_action: spec.dpd_action,
        close_action: spec.close_action,
    };
    let mut children = vec![child("net", local_ts, remote_ts)];
    if spec.second_child {
        let (l, r) = (
            cidr("10.1.1.0", "10.1.1.255"),
            cidr("10.2.1.0", "10.2.1.255"),
        );
        let (local, remote) = if left { (l, r) } else { (r, l) };
        children.push(child("net2", vec![local], vec![remote]));
    }
    Arc::new(Policy {
        name: "site".into(),
        local_addrs: Vec::new(),
        remote_addrs: Vec::new(),
        proposals: proposal::parse_all(&strings(&spec.proposals), ProtocolId::IKE).unwrap(),
        encap: spec.encap,
        fragment_size: spec.fragment_size,
        local: LocalAuth::Psk {
            id: identity::parse(me).unwrap(),
            psk: Secret::from_slice(spec.psk),
        },
        remote: RemoteAuth::Psk {
            id: RemoteId::Exact(identity::parse(peer).unwrap()),
            psk: Secret::from_slice(spec.psk),
        },
        children,
        ike_lifetime: spec.ike_lifetime,
        dpd_delay: spec.dpd_delay,
        keyingtries: spec.keyingtries,
        pools: Vec::new(),
        vips: Vec::new(),
        mobike: spec.mobike,
    })
}

/// Certificate credentials for one side: its certificate and key, and the CA it trusts.
struct CertAuth {
    id: &'static str,
    cert: Vec<u8>,
    key: String,
    trusted_ca: Vec<u8>,
    peer_id: Option<&'static str>,
}

fn with_certs(p: &Policy, auth: CertAuth) -> Arc<Policy> {
    Arc::new(Policy {
        name: p.name.clone(),
        local_addrs: Vec::new(),
        remote_addrs: Vec::new(),
        proposals: p.proposals.clone(),
        encap: p.encap,
        fragment_size: p.fragment_size,
        local: LocalAuth::Pubkey {
            id: identity::parse(auth.id).unwrap(),
            certs: vec![auth.cert],
            key: Arc::new(PrivateKey::from_pem_or_der(auth.key.as_bytes()).unwrap()),
        },
        remote: RemoteAuth::Pubkey {
            id: auth.peer_id.map_or(RemoteId::Any, |id| {
                RemoteId::Exact(identity::parse(id).unwrap())
            }),
            anchors: Arc::new(TrustAnchors::new(vec![auth.trusted_ca]).unwrap()),
        },
        children: p.children.clone(),
        ike_lifetime: p.ike_lifetime,
        dpd_delay: p.dpd_delay,
        keyingtries: p.keyingtries,
        pools: p.pools.clone(),
        vips: p.vips.clone(),
        mobike: p.mobike,
    })
}

/// A pair authenticating with certificates of `alg` from one CA.
fn cert_pair(alg: Alg, tweak: impl FnOnce(&mut CertAuth, &mut CertAuth)) -> Pair {
    let ca = Ca::root("Test CA", Alg::P256);
    let left = ca.issue(Leaf::host("left.example", alg));
    let right = ca.issue(Leaf::host("right.example", alg));
    let mut a = CertAuth {
        id: "left.example",
        cert: left.der,
        key: left.key_pem,
        trusted_ca: ca.der.clone(),
        peer_id: Some("right.example"),
    };
    let mut b = CertAuth {
        id: "right.example",
        cert: right.der,
        key: right.key_pem,
        trusted_ca: ca.der.clone(),
        peer_id: None,
    };
    tweak(&mut a, &mut b);
    Pair::new(
        with_certs(&policy(Spec::default(), true), a),
        with_certs(&policy(Spec::default(), false), b),
        settings(),
    )
}

fn settings() -> Settings {
    Settings {
        unix_time_at_start: Duration::from_secs(NOW),
        retransmit: RetransmitPolicy {
            jitter_percent: 10,
            ..RetransmitPolicy::default()
        },
        ..Settings::default()
    }
}

/// Which endpoint a datagram is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// One Child SA as a side's data plane holds it.
#[derive(Debug)]
struct Installed {
    spi_out: u32,
    child: String,
    keys_in: Keys,
    keys_out: Keys,
    /// Sent with (from ChildSaUp or ChildSaOutbound on).
    outbound: bool,
}

/// What one side would have installed, rebuilt from its events as they come: the
/// Child SAs by inbound SPI, and the IKE SAs up by (SPIi, SPIr). Events that make
/// no sense for it (a SPI installed twice, a removal of one never installed) fail.
#[derive(Debug, Default)]
struct Plane {
    children: BTreeMap<u32, Installed>,
    ike: BTreeSet<(u64, u64)>,
}

impl Plane {
    /// Takes one event; returns the inbound SPI of a Child SA it starts sending with
    /// in place of an older one (rekeys), whose peer must have its inbound side.
    fn apply(&mut self, event: &Event) -> Option<u32> {
        match event {
            Event::ChildSaUp(c) => {
                let sa = Installed {
                    spi_out: c.spi_out,
                    child: c.child.clone(),
                    keys_in: c.keys_in.clone(),
                    keys_out: c.keys_out.clone(),
                    outbound: c.outbound,
                };
                let twice = self.children.insert(c.spi_in, sa);
                assert!(twice.is_none(), "SPI {:08x} installed twice", c.spi_in);
                (c.outbound && c.rekeys.is_some()).then_some(c.spi_in)
            }
            Event::ChildSaOutbound { spi_in, .. } => {
                let sa = self
                    .children
                    .get_mut(spi_in)
                    .unwrap_or_else(|| panic!("outbound switch to {spi_in:08x}, not installed"));
                assert!(!sa.outbound, "{spi_in:08x} switched to twice");
                sa.outbound = true;
                Some(*spi_in)
            }
            Event::ChildSaDown {
                spi_in, spi_out, ..
            } => {
                let sa = self
                    .children
                    .remove(spi_in)
                    .unwrap_or_else(|| panic!("ChildSaDown for {spi_in:08x}, not installed"));
                assert_eq!(sa.spi_out, *spi_out);
                None
            }
            Event::IkeSaUp(up) | Event::IkeSaRekeyed { up, .. } => {
                self.ike.insert((up.spi_i.0, up.spi_r.0));
                None
            }
            Event::IkeSaDown { spi_i, spi_r, .. } => {
                self.ike.remove(&(spi_i.0, spi_r.0));
                None
            }
            _ => None,
        }
    }

    /// The peer installed the inbound side of what `sender` now sends with on `spi_in`.
    fn check_sending(sender: &Self, spi_in: u32, peer: &Self) {
        let sa = &sender.children[&spi_in];
        let theirs = peer.children.get(&sa.spi_out).unwrap_or_else(|| {
            panic!(
                "sends with {:08x} before the peer has its inbound side",
                sa.spi_out
            )
        });
        assert_eq!(theirs.keys_in, sa.keys_out);
    }
}

struct Pair {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    wire: VecDeque<(Side, Transmit)>,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
    plane_a: Plane,
    plane_b: Plane,
    /// Everything sent to this side is lost.
    cut: Option<Side>,
    /// Datagrams lost to `cut`.
    lost: usize,
    /// Restarts of B so far (each gets its own random seed).
    restarts: u64,
}

impl Pair {
    fn new(a: Arc<Policy>, b: Arc<Policy>, settings_b: Settings) -> Self {
        Self::seeded(a, b, settings_b, 1)
    }

    /// A pair whose random generators are seeded from `seed`.
    fn seeded(a: Arc<Policy>, b: Arc<Policy>, settings_b: Settings, seed: u64) -> Self {
        Self::with_settings(a, b, settings(), settings_b, seed)
    }

    /// A pair with its own settings for A too.
    fn with_settings(
        a: Arc<Policy>,
        b: Arc<Policy>,
        settings_a: Settings,
        settings_b: Settings,
        seed: u64,
    ) -> Self {
        Self {
            now: Instant::default(),
            a: Endpoint::new(
                settings_a,
                vec![a],
                Box::new(SeededRandom::new(2 * seed - 1)),
            ),
            b: Endpoint::new(settings_b, vec![b], Box::new(SeededRandom::new(2 * seed))),
            wire: VecDeque::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            plane_a: Plane::default(),
            plane_b: Plane::default(),
            cut: None,
            lost: 0,
            restarts: 0,
        }
    }

    fn psk(spec_a: Spec, spec_b: Spec) -> Self {
        Self::new(policy(spec_a, true), policy(spec_b, false), settings())
    }

    fn psk_seeded(spec_a: Spec, spec_b: Spec, seed: u64) -> Self {
        Self::seeded(
            policy(spec_a, true),
            policy(spec_b, false),
            settings(),
            seed,
        )
    }

    fn initiate(&mut self) {
        self.a
            .initiate(self.now, 0, A.parse().unwrap(), B.parse().unwrap())
            .unwrap();
        self.collect();
    }

    /// A learns where its peer is and starts what its policy starts by itself.
    fn start_a(&mut self) {
        self.a.add_peer(0, A.parse().unwrap(), B.parse().unwrap());
        self.a.start(self.now);
        self.collect();
    }

    /// B loses all state, as after a reboot: a fresh endpoint with the same policy.
    fn restart_b(&mut self) {
        self.restarts += 1;
        let policies = self.b.policies().to_vec();
        let rng = SeededRandom::new(1000 + self.restarts);
        self.b = Endpoint::new(settings(), policies, Box::new(rng));
        self.events_b.clear();
        self.plane_b = Plane::default();
    }

    /// Moves what both endpoints want to send onto the wire, and their events into
    /// the logs and the data planes, checking each switch of the outbound SA.
    fn collect(&mut self) {
        while let Some(t) = self.a.poll_transmit() {
            self.wire.push_back((Side::B, t));
        }
        while let Some(t) = self.b.poll_transmit() {
            self.wire.push_back((Side::A, t));
        }
        let new_a: Vec<Event> = std::iter::from_fn(|| self.a.poll_event()).collect();
        let new_b: Vec<Event> = std::iter::from_fn(|| self.b.poll_event()).collect();
        let switched_a: Vec<u32> = new_a.iter().filter_map(|e| self.plane_a.apply(e)).collect();
        let switched_b: Vec<u32> = new_b.iter().filter_map(|e| self.plane_b.apply(e)).collect();
        for spi in switched_a {
            Plane::check_sending(&self.plane_a, spi, &self.plane_b);
        }
        for spi in switched_b {
            Plane::check_sending(&self.plane_b, spi, &self.plane_a);
        }
        self.events_a.extend(new_a);
        self.events_b.extend(new_b);
    }

    fn deliver(&mut self, (to, t): (Side, Transmit)) {
        if self.cut == Some(to) {
            self.lost += 1;
            return;
        }
        let endpoint = match to {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        };
        // No NAT in between: the receiver sees the sender's addresses unchanged.
        endpoint.handle(self.now, t.remote, t.local, &t.data);
        self.collect();
    }

    fn deliver_next(&mut self) {
        let next = self.wire.pop_front().expect("a datagram in flight");
        self.deliver(next);
    }

    fn drop_next(&mut self) -> Transmit {
        self.wire.pop_front().expect("a datagram in flight").1
    }

    fn duplicate_next(&mut self) {
        let next = self.wire.front().cloned().expect("a datagram in flight");
        self.wire.push_front(next);
    }

    /// Like [`Pair::drive`], but stops before the first timer after `until`.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..10_000 {
            if !self.wire.is_empty() {
                self.deliver_next();
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(next) if next <= until => {
                    self.now = self.now.max(next);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.collect();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("no quiescence after 10000 steps");
    }

    /// Delivers everything, advancing virtual time to the next timer whenever the
    /// wire is empty, until nothing is left to do (or a bound is hit).
    fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.wire.is_empty() {
                self.deliver_next();
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                return;
            };
            self.now = self.now.max(next);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.collect();
        }
        panic!("no quiescence after 10000 steps");
    }

    fn children(events: &[Event]) -> Vec<&ChildSaUp> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaUp(c) => Some(c.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn ike_up(events: &[Event]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Event::IkeSaUp(_)))
            .count()
    }

    fn downs(events: &[Event]) -> Vec<DownReason> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::IkeSaDown { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    fn sent(events: &[Event], exchange: ExchangeType, response: bool) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, Event::Message(m) if m.sent && m.exchange == exchange && m.response == response))
            .count()
    }

    /// Both sides have exactly one matching Child SA.
    fn assert_tunnel(&self) {
        let (a, b) = (
            Self::children(&self.events_a),
            Self::children(&self.events_b),
        );
        assert_eq!((a.len(), b.len()), (1, 1), "one Child SA on each side");
        let (a, b) = (a[0], b[0]);
        assert_eq!((a.spi_in, a.spi_out), (b.spi_out, b.spi_in));
        assert_eq!(a.keys_out, b.keys_in);
        assert_eq!(a.keys_in, b.keys_out);
        assert_ne!(a.keys_in, a.keys_out);
        assert_eq!((&a.local_ts, &a.remote_ts), (&b.remote_ts, &b.local_ts));
        assert_eq!(Self::ike_up(&self.events_a), 1);
        assert_eq!(Self::ike_up(&self.events_b), 1);
    }

    /// Both data planes hold the same Child SAs, mirrored (SPIs, keys, child) and
    /// sending, and both sides the same IKE SAs, nothing half-open; returns how many
    /// Child SAs. For quiet moments: old SAs still in their grace fail it.
    fn assert_converged(&self) -> usize {
        let (a, b) = (&self.plane_a, &self.plane_b);
        let spis = |p: &Plane| {
            p.children
                .keys()
                .map(|s| format!("{s:08x}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            a.children.len(),
            b.children.len(),
            "Child SAs: A {:?}, B {:?}",
            spis(a),
            spis(b)
        );
        for (spi_in, sa) in &a.children {
            let peer = b
                .children
                .get(&sa.spi_out)
                .unwrap_or_else(|| panic!("A's {spi_in:08x} has no peer SA {:08x}", sa.spi_out));
            assert_eq!(peer.spi_out, *spi_in);
            assert_eq!(peer.child, sa.child);
            assert_eq!((&peer.keys_in, &peer.keys_out), (&sa.keys_out, &sa.keys_in));
            assert!(sa.outbound && peer.outbound, "both send with {spi_in:08x}");
        }
        assert_eq!(a.ike, b.ike, "the same IKE SAs on both sides");
        assert_eq!(self.a.established(), a.ike.len(), "A's IKE SAs");
        assert_eq!(self.b.established(), b.ike.len(), "B's IKE SAs");
        assert_eq!(self.a.half_open() + self.b.half_open(), 0);
        a.children.len()
    }

    /// The inbound SPIs of the Child SAs a side has installed.
    fn live(&self, side: Side) -> Vec<u32> {
        let plane = match side {
            Side::A => &self.plane_a,
            Side::B => &self.plane_b,
        };
        plane.children.keys().copied().collect()
    }

    fn endpoint(&mut self, side: Side) -> &mut Endpoint {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn events(&self, side: Side) -> &[Event] {
        match side {
            Side::A => &self.events_a,
            Side::B => &self.events_b,
        }
    }

    /// The data plane of `side` reports the soft (rekey) or hard (delete) limit of
    /// its Child SA `spi_in` crossed.
    fn expire(&mut self, side: Side, spi_in: u32, hard: bool) {
        let now = self.now;
        self.endpoint(side).expire_child(now, spi_in, hard, "bytes");
        self.collect();
    }

    /// Runs for `secs` more seconds of virtual time.
    fn run_for(&mut self, secs: u64) {
        self.run_until(self.now + Duration::from_secs(secs));
    }

    /// Moves the clock to the next timer and lets both sides act on it, delivering
    /// nothing (what they send stays on the wire).
    fn tick(&mut self) {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("a timer");
        self.now = self.now.max(next);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.collect();
    }
}

#[test]
fn psk_peers_establish_ike_and_child_sa() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    let a = Pair::children(&pair.events_a)[0];
    assert_eq!(a.local_ts, vec![cidr("10.1.0.0", "10.1.0.255")]);
    assert_eq!(a.remote_ts, vec![cidr("10.2.0.0", "10.2.0.255")]);
    assert!(!a.encap, "no NAT, no forced encapsulation");
    assert_eq!(a.remote, B.parse::<SocketAddr>().unwrap());
    assert_eq!(pair.a.established(), 1);
    assert_eq!(pair.b.established(), 1);
}

#[test]
fn every_suite_of_the_interop_matrix_negotiates() {
    for (ike, esp) in [
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
        ("aes256-sha256-modp2048", "aes256-sha256"),
        ("chacha20poly1305-prfsha384-ecp384", "chacha20poly1305"),
    ] {
        let spec = || Spec {
            proposals: vec![ike],
            esp: vec![esp],
            ..Spec::default()
        };
        let mut pair = Pair::psk(spec(), spec());
        pair.initiate();
        pair.drive();
        pair.assert_tunnel();
    }
}

/// Windows' built-in client's default proposals (the opt-in of
/// `legacy_windows_proposals` in the configuration): IKE with AES-CBC-256,
/// HMAC-SHA-1-96, PRF-HMAC-SHA-1 and MODP-1024, ESP with AES-CBC-256 and
/// HMAC-SHA-1-96. Both ends key the same SK and ESP suites, and an ESP packet one
/// side seals with its keys the other opens with its own.
#[test]
fn windows_legacy_suite_negotiates_and_keys_esp_with_hmac_sha1_96() {
    use esptun::crypto::{Encr, Integ, Prf};
    use esptun::esp::{InboundSa, NEXT_HEADER_IPV4, OutboundSa, SaKeys};
    let spec = || Spec {
        proposals: vec!["aes256-sha1-modp1024"],
        esp: vec!["aes256-sha1"],
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), spec());
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    for events in [&pair.events_a, &pair.events_b] {
        let suite = ike_ups(events)[0].suite;
        assert_eq!(suite.encr, Encr::AesCbc { key_len: 32 });
        assert_eq!(suite.integ, Some(Integ::HmacSha1));
        assert_eq!(suite.prf, Prf::HmacSha1);
        assert_eq!(suite.group, KeGroup::MODP_1024);
    }
    let (a, b) = (
        Pair::children(&pair.events_a)[0],
        Pair::children(&pair.events_b)[0],
    );
    assert_eq!(
        (a.encr, a.integ),
        (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha1))
    );
    assert_eq!((a.keys_out.0.len(), a.keys_out.1.len()), (32, 20));
    fn sa<'a>(up: &ChildSaUp, spi: u32, keys: &'a (Secret, Secret)) -> SaKeys<'a> {
        SaKeys {
            spi,
            encr: up.encr,
            integ: up.integ,
            esn: up.esn,
            encryption: &keys.0,
            integrity: &keys.1,
        }
    }
    let out = OutboundSa::new(&sa(a, a.spi_out, &a.keys_out)).unwrap();
    let mut inb = InboundSa::new(&sa(b, b.spi_in, &b.keys_in), 64).unwrap();
    let mut buf = vec![0; 64 + 84 + 64];
    buf[64..64 + 84].fill(0x45);
    let esp = out.seal(&mut buf, 64, 84, NEXT_HEADER_IPV4).unwrap();
    let mut packet = buf[esp].to_vec();
    let (range, _, _) = inb.open(&mut packet).unwrap();
    assert_eq!(&packet[range], &[0x45; 84]);
}

#[test]
fn responder_narrows_traffic_selectors() {
    let wide = Spec {
        local_ts: vec![cidr("10.1.0.0", "10.1.255.255")],
        remote_ts: vec![
            cidr("10.0.0.0", "10.255.255.255"),
            cidr("fd00::", "fd00::ffff"),
        ],
        ..Spec::default()
    };
    let mut pair = Pair::psk(wide, Spec::default());
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    let a = Pair::children(&pair.events_a)[0];
    assert_eq!(a.local_ts, vec![cidr("10.1.0.0", "10.1.0.255")]);
    assert_eq!(a.remote_ts, vec![cidr("10.2.0.0", "10.2.0.255")]);
}

#[test]
fn disjoint_selectors_fail_the_child_and_the_childless_ike_sa_closes() {
    let other = Spec {
        local_ts: vec![cidr("10.9.0.0", "10.9.0.255")],
        ..Spec::default()
    };
    let mut pair = Pair::psk(Spec::default(), other);
    pair.initiate();
    pair.drive();
    assert_eq!(Pair::ike_up(&pair.events_a), 1);
    assert!(Pair::children(&pair.events_a).is_empty());
    assert!(pair.events_a.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            reason: Error::Notified(NotifyType::TS_UNACCEPTABLE),
            ..
        }
    )));
    // An IKE SA that carries nothing is not kept (no child is set to start).
    assert!(
        logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("no CHILD_SA left"))
    );
    assert_eq!(pair.a.established() + pair.b.established(), 0);
}

#[test]
fn lost_ike_auth_request_is_retransmitted() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.deliver_next(); // IKE_SA_INIT request
    pair.deliver_next(); // response
    pair.drop_next(); // IKE_AUTH request lost
    assert!(pair.wire.is_empty());
    pair.drive();
    pair.assert_tunnel();
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::IKE_AUTH, false),
        1,
        "logged once"
    );
    assert!(
        pair.now >= Instant(Duration::from_secs(3)),
        "waited for the timer: {:?}",
        pair.now
    );
}

#[test]
fn responder_resends_cached_response_to_duplicate_request() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.deliver_next();
    pair.deliver_next();
    pair.duplicate_next(); // IKE_AUTH request arrives twice
    pair.drive();
    pair.assert_tunnel();
    assert_eq!(
        Pair::sent(&pair.events_b, ExchangeType::IKE_AUTH, true),
        1,
        "answered once, the duplicate got the cached copy"
    );
}

#[test]
fn lost_response_is_recovered_from_the_cache() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.deliver_next();
    pair.deliver_next();
    pair.deliver_next(); // IKE_AUTH request processed by B
    pair.drop_next(); // its response lost
    pair.drive();
    pair.assert_tunnel();
}

#[test]
fn reordered_duplicate_of_an_old_response_is_ignored() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.deliver_next();
    let stale = pair.wire.front().cloned().unwrap();
    pair.deliver_next(); // IKE_SA_INIT response
    pair.wire.push_back(stale); // arrives again after the IKE_AUTH request
    pair.drive();
    pair.assert_tunnel();
}

#[test]
fn cookie_is_demanded_and_echoed() {
    let mut pair = Pair::new(
        policy(Spec::default(), true),
        policy(Spec::default(), false),
        Settings {
            cookie_threshold: 0,
            ..settings()
        },
    );
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    // The first request was answered with a COOKIE, statelessly; the second carried it.
    let init_requests = Pair::sent(&pair.events_a, ExchangeType::IKE_SA_INIT, false);
    assert_eq!(init_requests, 2);
    let cookie_reply = pair.events_b.iter().any(|e| {
        matches!(e, Event::Message(m)
        if m.sent && m.payloads.len() == 1 && format!("{:?}", m.payloads[0]).contains("COOKIE"))
    });
    assert!(cookie_reply);
}

#[test]
fn invalid_ke_payload_is_answered_and_retried_with_the_group_asked_for() {
    let a = Spec {
        proposals: vec!["aes128gcm16-prfsha256-x25519-ecp256"],
        ..Spec::default()
    };
    let b = Spec {
        proposals: vec!["aes128gcm16-prfsha256-ecp256"],
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, b);
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::IKE_SA_INIT, false),
        2
    );
    assert!(pair.events_b.iter().any(|e| matches!(e, Event::Message(m)
        if m.sent && format!("{:?}", m.payloads).contains("INVALID_KE_PAYLOAD"))));
}

#[test]
fn no_common_proposal_is_refused() {
    let b = Spec {
        proposals: vec!["aes256-sha256-modp2048"],
        ..Spec::default()
    };
    let mut pair = Pair::psk(Spec::default(), b);
    pair.initiate();
    pair.drive();
    assert_eq!(
        Pair::downs(&pair.events_a),
        vec![DownReason::Refused(NotifyType::NO_PROPOSAL_CHOSEN)]
    );
    assert_eq!(pair.b.half_open(), 0, "the refusal kept no state");
    // B says what was offered and what it has, as charon does.
    let refused: Vec<&str> = logs(&pair.events_b)
        .into_iter()
        .filter(|l| l.contains("refused: no acceptable proposal"))
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", logs(&pair.events_b));
    assert!(
        refused[0].ends_with(
            "; received AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE25519; \
             configured site: AES_CBC_256/PRF_HMAC_SHA2_256/HMAC_SHA2_256_128/MODP_2048"
        ),
        "{}",
        refused[0]
    );
}

#[test]
fn wrong_psk_fails_authentication_on_both_sides() {
    let b = Spec {
        psk: b"another secret, not the same one",
        ..Spec::default()
    };
    let mut pair = Pair::psk(Spec::default(), b);
    pair.initiate();
    pair.drive();
    assert_eq!(
        Pair::downs(&pair.events_a),
        vec![DownReason::Refused(NotifyType::AUTHENTICATION_FAILED)]
    );
    assert!(matches!(
        Pair::downs(&pair.events_b).as_slice(),
        [DownReason::Failed(Error::AuthenticationFailed(_))]
    ));
    assert_eq!(pair.a.established() + pair.b.established(), 0);
}

#[test]
fn fragmented_ike_auth_survives_a_lost_fragment() {
    // Many selectors make IKE_AUTH larger than the 576-byte fragment size.
    let many: Vec<TsRange> = (0..48)
        .map(|i| cidr(&format!("10.1.{i}.0"), &format!("10.1.{i}.255")))
        .collect();
    let spec = || Spec {
        local_ts: many.clone(),
        fragment_size: 576,
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), spec());
    pair.initiate();
    pair.deliver_next();
    pair.deliver_next();
    let fragments = pair.wire.len();
    assert!(
        fragments >= 2,
        "IKE_AUTH request was fragmented: {fragments}"
    );
    assert!(pair.wire.iter().all(|(_, t)| t.data.len() <= 576 - 28));
    pair.wire.swap(0, 1); // reordered
    pair.wire.remove(fragments - 1); // and the last one lost
    pair.drive();
    pair.assert_tunnel();
    assert_eq!(Pair::children(&pair.events_a)[0].local_ts.len(), 48);
}

#[test]
fn silent_peer_is_declared_dead_after_the_retransmissions() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    let mut sent = 0;
    for _ in 0..100 {
        while !pair.wire.is_empty() {
            pair.drop_next();
            sent += 1;
        }
        match pair.a.poll_timeout() {
            Some(t) => {
                pair.now = t;
                pair.a.handle_timeout(t);
                pair.collect();
            }
            None => break,
        }
    }
    assert_eq!(sent, 6, "the request and its 5 retransmissions");
    assert_eq!(Pair::downs(&pair.events_a), vec![DownReason::PeerDead]);
    // 4 s · (1 + 1.8 + … + 1.8^5) ≈ 165 s, less up to 10 % jitter per wait.
    assert!(
        pair.now > Instant(Duration::from_secs(145))
            && pair.now <= Instant(Duration::from_secs(166))
    );
}

#[test]
fn half_open_sa_expires_on_the_responder() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.deliver_next();
    assert_eq!(pair.b.half_open(), 1);
    pair.wire.clear();
    let t = pair.b.poll_timeout().unwrap();
    assert_eq!(t, Instant(Duration::from_secs(30)));
    pair.now = t;
    pair.b.handle_timeout(t);
    pair.collect();
    assert_eq!(pair.b.half_open(), 0);
    assert_eq!(
        Pair::downs(&pair.events_b),
        vec![DownReason::HalfOpenExpired]
    );
}

#[test]
fn forced_encapsulation_on_either_side_floats_both_to_4500_in_udp() {
    // The forcing side's NAT_DETECTION_SOURCE_IP cannot match: its peer believes it
    // translated, and both put ESP in UDP. Were the responder to encapsulate alone,
    // its peer's kernel would drop what it sends.
    let spec = |encap| Spec {
        encap,
        ..Spec::default()
    };
    for (a, b) in [(true, false), (false, true)] {
        let mut pair = Pair::psk(spec(a), spec(b));
        pair.initiate();
        pair.drive();
        pair.assert_tunnel();
        for child in Pair::children(&pair.events_a)
            .into_iter()
            .chain(Pair::children(&pair.events_b))
        {
            assert!(child.encap, "forced by {}", if a { "a" } else { "b" });
            assert_eq!((child.local.port(), child.remote.port()), (4500, 4500));
        }
    }
}

#[test]
fn delete_ends_the_sa_on_both_sides() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.drive();
    pair.a.delete_all(pair.now);
    pair.collect();
    pair.drive();
    assert_eq!(
        Pair::downs(&pair.events_a),
        vec![DownReason::DeletedLocally]
    );
    assert_eq!(Pair::downs(&pair.events_b), vec![DownReason::DeletedByPeer]);
    assert_eq!(pair.a.established() + pair.b.established(), 0);
}

#[test]
fn garbage_is_counted_and_changes_nothing() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.drive();
    let before = pair.events_b.len();
    pair.b.handle(
        pair.now,
        B.parse().unwrap(),
        A.parse().unwrap(),
        b"\x01\x02garbage",
    );
    pair.collect();
    assert_eq!(pair.b.malformed(), 1);
    assert_eq!(pair.events_b.len(), before);
    assert_eq!(pair.b.established(), 1);
}

#[test]
fn ecdsa_certificates_authenticate_both_sides() {
    let mut pair = cert_pair(Alg::P256, |_, _| {});
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    let up = pair.events_b.iter().find_map(|e| match e {
        Event::IkeSaUp(up) => Some(up),
        _ => None,
    });
    assert_eq!(
        up.unwrap().remote_id,
        identity::parse("left.example").unwrap()
    );
}

#[test]
fn rsa_3072_ike_auth_is_fragmented_and_reassembled() {
    let mut pair = cert_pair(Alg::Rsa3072, |_, _| {});
    pair.initiate();
    pair.deliver_next();
    pair.deliver_next();
    assert!(
        pair.wire.len() >= 2,
        "IKE_AUTH request in fragments: {}",
        pair.wire.len()
    );
    pair.drive();
    pair.assert_tunnel();
    let fragmented_response = pair.events_b.iter().any(|e| {
        matches!(e,
        Event::Message(m) if m.sent && m.exchange == ExchangeType::IKE_AUTH && m.fragments > 1)
    });
    assert!(fragmented_response);
}

#[test]
fn certificate_from_an_untrusted_ca_fails_authentication() {
    let mut pair = cert_pair(Alg::P256, |a, _| {
        let rogue = Ca::root("Rogue CA", Alg::P256);
        let forged = rogue.issue(Leaf::host("left.example", Alg::P256));
        a.cert = forged.der;
        a.key = forged.key_pem;
    });
    pair.initiate();
    pair.drive();
    assert_eq!(
        Pair::downs(&pair.events_a),
        vec![DownReason::Refused(NotifyType::AUTHENTICATION_FAILED)]
    );
    let b = Pair::downs(&pair.events_b);
    assert!(
        matches!(&b[..], [DownReason::Failed(Error::AuthenticationFailed(why))] if why.contains("not issued by a trusted CA")),
        "{b:?}"
    );
}

#[test]
fn identity_not_in_the_certificate_fails_authentication() {
    let mut pair = cert_pair(Alg::P256, |a, _| a.id = "someone-else.example");
    pair.initiate();
    pair.drive();
    let b = Pair::downs(&pair.events_b);
    assert!(
        matches!(&b[..], [DownReason::Failed(Error::AuthenticationFailed(why))] if why.contains("does not match the certificate")),
        "{b:?}"
    );
    assert_eq!(
        Pair::downs(&pair.events_a),
        vec![DownReason::Refused(NotifyType::AUTHENTICATION_FAILED)]
    );
    // A says what it presented, which its operator compares with B's configuration.
    assert!(
        logs(&pair.events_a).contains(
            &"IKE_AUTH refused with AUTHENTICATION_FAILED (we sent the identity someone-else.example and authenticated by pubkey)"
        ),
        "{:?}",
        logs(&pair.events_a)
    );
}

#[test]
fn initiator_refuses_a_responder_with_an_unexpected_identity() {
    let mut pair = cert_pair(Alg::P256, |a, _| a.peer_id = Some("other.example"));
    pair.initiate();
    pair.drive();
    let a = Pair::downs(&pair.events_a);
    assert!(
        matches!(&a[..], [DownReason::Failed(Error::AuthenticationFailed(_))]),
        "{a:?}"
    );
    assert!(
        pair.events_b.iter().any(
            |e| matches!(e, Event::Log { text, .. } if text.contains("AUTHENTICATION_FAILED"))
        ),
        "the responder hears about it"
    );
}

fn child_downs(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDown { spi_in, .. } => Some(*spi_in),
            _ => None,
        })
        .collect()
}

fn logs(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn child_sa_is_rekeyed_at_its_soft_lifetime_make_before_break() {
    let spec = Spec {
        lifetime: Lifetime {
            soft: Limits {
                time: Some(Duration::from_secs(600)),
                ..Limits::default()
            },
            hard: Limits {
                time: Some(Duration::from_secs(660)),
                ..Limits::default()
            },
        },
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec, Spec::default());
    pair.initiate();
    pair.run_until(Instant(Duration::from_secs(1)));
    pair.assert_tunnel();
    let old_a = Pair::children(&pair.events_a)[0].spi_in;
    let old_b = Pair::children(&pair.events_b)[0].spi_in;
    pair.run_until(Instant(Duration::from_secs(630)));
    let (a, b) = (
        Pair::children(&pair.events_a),
        Pair::children(&pair.events_b),
    );
    assert_eq!((a.len(), b.len()), (2, 2), "one rekey on each side");
    let (new_a, new_b) = (a[1], b[1]);
    assert_eq!((new_a.spi_in, new_a.spi_out), (new_b.spi_out, new_b.spi_in));
    assert_eq!(
        (&new_a.keys_out, &new_a.keys_in),
        (&new_b.keys_in, &new_b.keys_out)
    );
    assert_ne!(new_a.keys_out, a[0].keys_out, "fresh keys");
    assert_eq!((new_a.rekeys, new_b.rekeys), (Some(old_a), Some(old_b)));
    // The initiator sends on the new SA at once; the responder once the old one is
    // deleted, and only then.
    assert!(new_a.outbound && !new_b.outbound);
    assert!(
        pair.events_b
            .iter()
            .any(|e| matches!(e, Event::ChildSaOutbound { spi_in, .. } if *spi_in == new_b.spi_in))
    );
    // The old SAs go on both sides after the grace for packets in flight; the new stay.
    assert_eq!(child_downs(&pair.events_a), vec![old_a]);
    assert_eq!(child_downs(&pair.events_b), vec![old_b]);
    assert!(
        logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("soft lifetime (time)"))
    );
    assert!(
        !logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("hard lifetime"))
    );
    assert_eq!(pair.a.established() + pair.b.established(), 2);
}

#[test]
fn data_plane_reports_end_a_child_sa_on_both_sides() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.drive();
    let spi_a = Pair::children(&pair.events_a)[0].spi_in;
    let spi_b = Pair::children(&pair.events_b)[0].spi_in;
    pair.b.expire_child(pair.now, spi_b, false, "bytes");
    pair.collect();
    assert!(child_downs(&pair.events_b).is_empty());
    pair.b.expire_child(pair.now, spi_b, true, "packets");
    pair.collect();
    pair.drive();
    assert_eq!(child_downs(&pair.events_b), vec![spi_b]);
    assert_eq!(child_downs(&pair.events_a), vec![spi_a]);
    assert!(
        logs(&pair.events_b)
            .iter()
            .any(|l| l.contains("hard lifetime (packets)"))
    );
    assert_eq!(pair.b.established(), 1);
}

// ---- The SA lifecycle: rekeys, collisions, faults, liveness, restarts. ----

fn secs(s: u64) -> Instant {
    Instant(Duration::from_secs(s))
}

fn soft_hard(soft: u64, hard: u64) -> Lifetime {
    let limit = |s| Limits {
        time: Some(Duration::from_secs(s)),
        ..Limits::default()
    };
    Lifetime {
        soft: limit(soft),
        hard: limit(hard),
    }
}

/// IKE SA rekeys after `secs`, without a random part.
fn ike_rekey_after(secs: u64) -> IkeLifetime {
    IkeLifetime {
        rekey_time: Some(Duration::from_secs(secs)),
        over_time: Duration::from_secs(360),
        rand_time: Duration::ZERO,
    }
}

/// The messages a side sent (or received), of one exchange, requests or responses.
fn messages(
    events: &[Event],
    sent: bool,
    exchange: ExchangeType,
    response: bool,
) -> Vec<&MessageRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m)
                if m.sent == sent && m.exchange == exchange && m.response == response =>
            {
                Some(m)
            }
            _ => None,
        })
        .collect()
}

/// The requests a side sent, in order: (exchange, message ID, IKE SA's SPIi).
fn requests(events: &[Event]) -> Vec<(ExchangeType, u32, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.sent && !m.response => {
                Some((m.exchange, m.message_id, m.spi_i.0))
            }
            _ => None,
        })
        .collect()
}

fn nonce(m: &MessageRecord) -> Vec<u8> {
    m.payloads
        .iter()
        .find_map(|p| match p {
            Payload::Nonce(n) => Some(n.data.clone()),
            _ => None,
        })
        .expect("a Nonce")
}

/// The SPI of the first proposal of the message's SA payload.
fn proposal_spi(m: &MessageRecord) -> Vec<u8> {
    m.payloads
        .iter()
        .find_map(|p| match p {
            Payload::Sa(sa) => Some(sa.proposals[0].spi.clone()),
            _ => None,
        })
        .expect("an SA payload")
}

fn esp_spi(m: &MessageRecord) -> u32 {
    u32::from_be_bytes(proposal_spi(m).try_into().unwrap())
}

fn ike_spi(m: &MessageRecord) -> u64 {
    u64::from_be_bytes(proposal_spi(m).try_into().unwrap())
}

fn rekeys_ike(m: &MessageRecord) -> bool {
    m.payloads
        .iter()
        .any(|p| matches!(p, Payload::Sa(sa) if sa.proposals[0].protocol == ProtocolId::IKE))
}

fn ke_group(m: &MessageRecord) -> Option<KeGroup> {
    m.payloads.iter().find_map(|p| match p {
        Payload::Ke(k) => Some(k.group),
        _ => None,
    })
}

fn notify_types(m: &MessageRecord) -> Vec<NotifyType> {
    m.payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Notify(n) => Some(n.notify_type),
            _ => None,
        })
        .collect()
}

/// The ESP SPIs a side asked its peer to delete, in its INFORMATIONAL requests.
fn deleted(events: &[Event]) -> Vec<u32> {
    messages(events, true, ExchangeType::INFORMATIONAL, false)
        .iter()
        .flat_map(|m| &m.payloads)
        .filter_map(|p| match p {
            Payload::Delete(d) if d.protocol == ProtocolId::ESP => Some(&d.spis),
            _ => None,
        })
        .flatten()
        .map(|s| u32::from_be_bytes(s.as_slice().try_into().unwrap()))
        .collect()
}

/// The IKE SAs a side reported as replacements, by (SPIi, SPIr).
fn rekeyed(events: &[Event]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaRekeyed { up, .. } => Some((up.spi_i.0, up.spi_r.0)),
            _ => None,
        })
        .collect()
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

#[test]
fn child_sa_rekey_started_by_the_responder_is_make_before_break() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    let (old_a, old_b) = (pair.live(Side::A)[0], pair.live(Side::B)[0]);
    pair.expire(Side::B, old_b, false);
    pair.drive();
    assert_eq!(pair.assert_converged(), 1, "one Child SA, as before");
    let (a, b) = (
        Pair::children(&pair.events_a),
        Pair::children(&pair.events_b),
    );
    assert_eq!((a.len(), b.len()), (2, 2));
    let (new_a, new_b) = (a[1], b[1]);
    assert_eq!(pair.live(Side::A), vec![new_a.spi_in]);
    assert_eq!((new_a.rekeys, new_b.rekeys), (Some(old_a), Some(old_b)));
    assert_ne!(new_a.keys_in, a[0].keys_in, "fresh keys");
    // B started it, so B sends on the new SA at once; A once B deleted the old one.
    assert!(new_b.outbound && !new_a.outbound);
    assert_eq!(deleted(&pair.events_b), vec![old_b]);
    assert_eq!(child_downs(&pair.events_a), vec![old_a]);
    assert_eq!(child_downs(&pair.events_b), vec![old_b]);
    // B's first requests as the IKE SA's responder count from message ID 0.
    let ids: Vec<_> = requests(&pair.events_b)
        .iter()
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(
        ids,
        [
            (ExchangeType::CREATE_CHILD_SA, 0),
            (ExchangeType::INFORMATIONAL, 1)
        ]
    );
}

/// Encryption and integrity key of one direction of a Child SA.
type Keys = (Secret, Secret);

/// A rekeys its Child SA with `esp` on both sides. Returns the keys A sends with on
/// the new SA, the keys the same nonces give without a key exchange, and the KE
/// groups of the request and the response.
fn rekey_keys(esp: &'static str) -> (Keys, Keys, (Option<KeGroup>, Option<KeGroup>)) {
    let spec = || Spec {
        esp: vec![esp],
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), spec());
    pair.initiate();
    pair.drive();
    let old = pair.live(Side::A)[0];
    pair.expire(Side::A, old, false);
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    let request = messages(&pair.events_a, true, ExchangeType::CREATE_CHILD_SA, false)[0];
    let response = messages(&pair.events_a, false, ExchangeType::CREATE_CHILD_SA, true)[0];
    let ike = pair
        .events_a
        .iter()
        .find_map(|e| match e {
            Event::IkeSaUp(up) => Some(up),
            _ => None,
        })
        .unwrap();
    let new = Pair::children(&pair.events_a)[1];
    let plain = ChildKeys::derive(
        ike.suite.prf,
        &ike.keys.sk_d,
        new.encr,
        new.integ,
        None,
        &nonce(request),
        &nonce(response),
    )
    .unwrap();
    (
        new.keys_out.clone(),
        (plain.encr_i, plain.integ_i),
        (ke_group(request), ke_group(response)),
    )
}

#[test]
fn pfs_rekey_exchanges_ke_payloads_and_mixes_the_new_secret_into_the_keys() {
    // Without PFS the keys are those of SK_d and the nonces alone (the check is sound)…
    let (keys, plain, groups) = rekey_keys("aes128gcm16");
    assert_eq!(groups, (None, None));
    assert_eq!(keys, plain);
    // …with PFS both sides send KE and the shared secret goes into KEYMAT.
    let (keys, plain, groups) = rekey_keys("aes128gcm16-x25519");
    let x25519 = Some(KeGroup::CURVE25519);
    assert_eq!(groups, (x25519, x25519));
    assert_ne!(keys.0, plain.0);
}

#[test]
fn pfs_rekey_is_retried_in_the_group_the_responder_asks_for() {
    let a = Spec {
        esp: vec!["aes128gcm16-x25519-ecp256"],
        ..Spec::default()
    };
    let b = Spec {
        esp: vec!["aes128gcm16-ecp256"],
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, b);
    pair.initiate();
    pair.drive();
    assert_eq!(pair.assert_converged(), 1, "IKE_AUTH carries no KE");
    let old_a = pair.live(Side::A)[0];
    pair.expire(Side::A, old_a, false);
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    let asked: Vec<_> = messages(&pair.events_a, true, ExchangeType::CREATE_CHILD_SA, false)
        .iter()
        .map(|m| ke_group(m))
        .collect();
    assert_eq!(asked, [Some(KeGroup::CURVE25519), Some(KeGroup::ECP_256)]);
    let answers = messages(&pair.events_b, true, ExchangeType::CREATE_CHILD_SA, true);
    assert_eq!(notify_types(answers[0]), [NotifyType::INVALID_KE_PAYLOAD]);
    assert_eq!(ke_group(answers[1]), Some(KeGroup::ECP_256));
    // The refused try made no SA anywhere.
    assert_eq!(Pair::children(&pair.events_a).len(), 2);
    assert_eq!(Pair::children(&pair.events_b).len(), 2);
    assert_eq!(child_downs(&pair.events_a), vec![old_a]);
}

/// One rekey exchange of a collision, from both sides' logs: its nonces and the
/// SPIs of the SA it made, the initiator's then the responder's.
fn exchange_of(initiator: &[Event], responder: &[Event], ike: bool) -> ([Vec<u8>; 2], [u64; 2]) {
    let pick = |events, response| {
        messages(events, true, ExchangeType::CREATE_CHILD_SA, response)
            .into_iter()
            .filter(|m| {
                ike == rekeys_ike(m) && !notify_types(m).contains(&NotifyType::TEMPORARY_FAILURE)
            })
            .collect::<Vec<_>>()
    };
    let (request, response) = (pick(initiator, false), pick(responder, true));
    assert_eq!((request.len(), response.len()), (1, 1), "one exchange");
    let spi = |m| {
        if ike {
            ike_spi(m)
        } else {
            u64::from(esp_spi(m))
        }
    };
    (
        [nonce(request[0]), nonce(response[0])],
        [spi(request[0]), spi(response[0])],
    )
}

#[test]
fn simultaneous_child_sa_rekeys_keep_only_the_sa_without_the_lowest_nonce() {
    let mut redundant_sides = BTreeSet::new();
    for seed in 1..=6 {
        let spec = || Spec {
            lifetime: soft_hard(600, 900),
            ..Spec::default()
        };
        let mut pair = Pair::psk_seeded(spec(), spec(), seed);
        pair.initiate();
        pair.run_until(secs(1));
        assert_eq!(pair.assert_converged(), 1);
        let (old_a, old_b) = (pair.live(Side::A)[0], pair.live(Side::B)[0]);
        // Both soft lifetimes end at 600 s: both requests cross.
        pair.run_until(secs(620));
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        let (nonces_a, spis_a) = exchange_of(&pair.events_a, &pair.events_b, false);
        let (nonces_b, spis_b) = exchange_of(&pair.events_b, &pair.events_a, false);
        let lowest = |n: &[Vec<u8>; 2]| n[0].clone().min(n[1].clone());
        // §2.8.1: the SA made with the lowest of the four nonces is redundant.
        let redundant = if lowest(&nonces_a) < lowest(&nonces_b) {
            Side::A
        } else {
            Side::B
        };
        let (survivor_a, survivor_b, made_by_redundant, old_of_winner) = match redundant {
            Side::A => (spis_b[1], spis_b[0], spis_a[0], old_b),
            Side::B => (spis_a[0], spis_a[1], spis_b[0], old_a),
        };
        assert_eq!(pair.live(Side::A), vec![survivor_a as u32]);
        assert_eq!(pair.live(Side::B), vec![survivor_b as u32]);
        // Its initiator deletes the redundant SA, the winner deletes the old one.
        assert_eq!(
            deleted(pair.events(redundant)),
            vec![made_by_redundant as u32]
        );
        assert_eq!(deleted(pair.events(other(redundant))), vec![old_of_winner]);
        for events in [&pair.events_a, &pair.events_b] {
            assert_eq!(Pair::children(events).len(), 3, "old, ours, theirs");
            assert_eq!(child_downs(events).len(), 2, "old and redundant");
        }
        assert!(
            logs(pair.events(redundant))
                .iter()
                .any(|l| l.contains("the peer's exchange wins"))
        );
        redundant_sides.insert(redundant == Side::A);
    }
    assert_eq!(redundant_sides.len(), 2, "each side lost with some seed");
}

#[test]
fn simultaneous_ike_sa_rekeys_keep_one_new_ike_sa_with_all_children() {
    let mut redundant_sides = BTreeSet::new();
    for seed in 1..=6 {
        let spec = || Spec {
            ike_lifetime: ike_rekey_after(3600),
            ..Spec::default()
        };
        let mut pair = Pair::psk_seeded(spec(), spec(), seed);
        pair.initiate();
        pair.run_until(secs(1));
        assert_eq!(pair.assert_converged(), 1);
        let children = (pair.live(Side::A), pair.live(Side::B));
        let old = pair.plane_a.ike.clone();
        pair.run_until(secs(3620));
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        assert_eq!(
            (pair.live(Side::A), pair.live(Side::B)),
            children,
            "the Child SAs carried on"
        );
        assert!(child_downs(&pair.events_a).is_empty() && child_downs(&pair.events_b).is_empty());
        let (nonces_a, spis_a) = exchange_of(&pair.events_a, &pair.events_b, true);
        let (nonces_b, spis_b) = exchange_of(&pair.events_b, &pair.events_a, true);
        let lowest = |n: &[Vec<u8>; 2]| n[0].clone().min(n[1].clone());
        let a_redundant = lowest(&nonces_a) < lowest(&nonces_b);
        let survivor = if a_redundant { spis_b } else { spis_a };
        let new: BTreeSet<_> = [(survivor[0], survivor[1])].into();
        assert_eq!(pair.plane_a.ike, new);
        assert_ne!(pair.plane_a.ike, old);
        assert_eq!(rekeyed(&pair.events_a), vec![(survivor[0], survivor[1])]);
        assert_eq!(rekeyed(&pair.events_b), vec![(survivor[0], survivor[1])]);
        for events in [&pair.events_a, &pair.events_b] {
            let mut downs = Pair::downs(events);
            downs.sort_by_key(|d| format!("{d:?}"));
            assert_eq!(
                downs,
                [DownReason::DeletedByPeer, DownReason::DeletedLocally],
                "the old and the redundant IKE SA"
            );
        }
        // The Child SAs work on as before on the new IKE SA.
        let spi = pair.live(Side::A)[0];
        pair.expire(Side::A, spi, false);
        pair.run_for(10);
        assert_eq!(pair.assert_converged(), 1);
        assert_ne!(pair.live(Side::A), vec![spi]);
        redundant_sides.insert(a_redundant);
    }
    assert_eq!(redundant_sides.len(), 2, "each side lost with some seed");
}

/// Both sides rekey the IKE SA at 3600 s; returns the pair once both requests are
/// answered (the answers still on the wire) and the side whose exchange made the
/// redundant IKE SA (the lowest nonce).
fn crossing_ike_rekeys(seed: u64) -> (Pair, Side) {
    let spec = || Spec {
        ike_lifetime: ike_rekey_after(3600),
        ..Spec::default()
    };
    let mut pair = Pair::psk_seeded(spec(), spec(), seed);
    pair.initiate();
    pair.run_until(secs(3599));
    assert_eq!(pair.assert_converged(), 1);
    pair.tick();
    assert_eq!(pair.wire.len(), 2, "both rekey requests");
    pair.deliver_next();
    pair.deliver_next();
    let (nonces_a, _) = exchange_of(&pair.events_a, &pair.events_b, true);
    let (nonces_b, _) = exchange_of(&pair.events_b, &pair.events_a, true);
    let lowest = |n: &[Vec<u8>; 2]| n[0].clone().min(n[1].clone());
    let redundant = if lowest(&nonces_a) < lowest(&nonces_b) {
        Side::A
    } else {
        Side::B
    };
    (pair, redundant)
}

#[test]
fn delete_of_the_old_ike_sa_overtaking_the_losers_rekey_answer_keeps_the_children() {
    for seed in 1..=4 {
        let (mut pair, loser) = crossing_ike_rekeys(seed);
        let children = (pair.live(Side::A), pair.live(Side::B));
        // The loser's answer is late: the winner's Delete of the old IKE SA comes first.
        let late = pair.wire.iter().position(|(to, _)| *to == loser).unwrap();
        let late = pair.wire.remove(late).unwrap();
        pair.deliver_next(); // the winner's answer: it deletes the old IKE SA
        pair.deliver_next(); // that Delete, at the loser
        pair.deliver(late);
        pair.run_for(30);
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        assert_eq!((pair.live(Side::A), pair.live(Side::B)), children);
        assert!(child_downs(&pair.events_a).is_empty() && child_downs(&pair.events_b).is_empty());
    }
}

#[test]
fn the_peers_redundant_ike_sa_goes_when_the_peer_drops_it_silently() {
    for seed in 1..=4 {
        let (mut pair, loser) = crossing_ike_rekeys(seed);
        let winner = other(loser);
        let children = (pair.live(Side::A), pair.live(Side::B));
        // As charon does when the winner's Delete of the old IKE SA overtakes the
        // winner's answer to its own rekey: it drops its new SA without a word (and
        // the answer with it). The winner holds that SA alone.
        let answer = pair.wire.iter().position(|(to, _)| *to == loser).unwrap();
        pair.wire.remove(answer);
        // The winner deletes it after the grace (the peer answers INVALID_IKE_SPI;
        // without an answer it would be gone after one retransmission): well before
        // its hard lifetime, and without ever making Child SAs on it.
        pair.run_for(25);
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        assert_eq!((pair.live(Side::A), pair.live(Side::B)), children);
        let said = logs(pair.events(winner));
        assert!(
            !said.iter().any(|l| l.contains("creating them again")),
            "seed {seed}: {said:#?}"
        );
    }
}

fn is_response(t: &Transmit) -> bool {
    Message::decode(&t.data).unwrap().header.flags.response()
}

#[test]
fn crossing_ike_sa_rekeys_survive_lost_answers() {
    for seed in 1..=4 {
        let (mut pair, _) = crossing_ike_rekeys(seed);
        let children = (pair.live(Side::A), pair.live(Side::B));
        // Every answer is lost for 12 s: both requests are sent three times.
        let until = pair.now + Duration::from_secs(12);
        while pair.now < until {
            match pair.wire.pop_front() {
                Some(d) if is_response(&d.1) => {}
                Some(d) => pair.deliver(d),
                None => pair.tick(),
            }
        }
        pair.run_for(60);
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        assert_eq!((pair.live(Side::A), pair.live(Side::B)), children);
        assert!(child_downs(&pair.events_a).is_empty() && child_downs(&pair.events_b).is_empty());
    }
}

/// Both sides rekey their Child SA at 600 s; returns the pair once both requests
/// are answered (the answers still on the wire) and the side whose exchange made
/// the redundant SA.
fn crossing_child_rekeys(seed: u64) -> (Pair, Side) {
    let spec = || Spec {
        lifetime: soft_hard(600, 900),
        ..Spec::default()
    };
    let mut pair = Pair::psk_seeded(spec(), spec(), seed);
    pair.initiate();
    pair.run_until(secs(599));
    assert_eq!(pair.assert_converged(), 1);
    pair.tick();
    assert_eq!(pair.wire.len(), 2, "both rekey requests");
    pair.deliver_next();
    pair.deliver_next();
    let (nonces_a, _) = exchange_of(&pair.events_a, &pair.events_b, false);
    let (nonces_b, _) = exchange_of(&pair.events_b, &pair.events_a, false);
    let lowest = |n: &[Vec<u8>; 2]| n[0].clone().min(n[1].clone());
    let redundant = if lowest(&nonces_a) < lowest(&nonces_b) {
        Side::A
    } else {
        Side::B
    };
    (pair, redundant)
}

#[test]
fn delete_of_the_old_child_sa_overtaking_the_losers_rekey_answer() {
    for seed in 1..=4 {
        let (mut pair, loser) = crossing_child_rekeys(seed);
        let late = pair.wire.iter().position(|(to, _)| *to == loser).unwrap();
        let late = pair.wire.remove(late).unwrap();
        pair.deliver_next(); // the winner's answer: it deletes the old Child SA
        pair.deliver_next(); // that Delete, at the loser
        pair.deliver(late);
        pair.run_for(30);
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        for events in [&pair.events_a, &pair.events_b] {
            assert_eq!(Pair::children(events).len(), 3);
            assert_eq!(child_downs(events).len(), 2);
        }
    }
}

#[test]
fn crossing_child_sa_rekeys_survive_lost_answers() {
    for seed in 1..=4 {
        let (mut pair, _) = crossing_child_rekeys(seed);
        let until = pair.now + Duration::from_secs(12);
        while pair.now < until {
            match pair.wire.pop_front() {
                Some(d) if is_response(&d.1) => {}
                Some(d) => pair.deliver(d),
                None => pair.tick(),
            }
        }
        pair.run_for(60);
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        for events in [&pair.events_a, &pair.events_b] {
            assert_eq!(Pair::children(events).len(), 3);
            assert_eq!(child_downs(events).len(), 2);
        }
    }
}

/// A rekeys its Child SA while B deletes it (hard limit): the requests cross, and
/// B answers the rekey with CHILD_SA_NOT_FOUND, which reaches A before B's Delete
/// if `answer_first`.
fn rekey_while_deleted(answer_first: bool, close_action: Action) -> Pair {
    let a = Spec {
        close_action,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.initiate();
    pair.drive();
    let (old_a, old_b) = (pair.live(Side::A)[0], pair.live(Side::B)[0]);
    pair.expire(Side::A, old_a, false);
    pair.expire(Side::B, old_b, true);
    assert_eq!(pair.wire.len(), 2, "the rekey and the Delete cross");
    pair.deliver_next(); // B: no such SA; its answer follows its Delete
    if answer_first {
        pair.wire.swap(0, 1);
    }
    pair.run_for(1);
    let answer = messages(&pair.events_b, true, ExchangeType::CREATE_CHILD_SA, true)[0];
    assert_eq!(notify_types(answer), [NotifyType::CHILD_SA_NOT_FOUND]);
    assert_eq!(child_downs(&pair.events_a), vec![old_a]);
    assert_eq!(child_downs(&pair.events_b), vec![old_b]);
    pair
}

#[test]
fn child_sa_rekeyed_while_the_peer_deletes_it_is_gone_on_both_sides() {
    for answer_first in [false, true] {
        let mut pair = rekey_while_deleted(answer_first, Action::None);
        assert_eq!(pair.assert_converged(), 0, "answer first: {answer_first}");
        assert_eq!(Pair::children(&pair.events_a).len(), 1, "nothing new");
        assert_eq!(Pair::children(&pair.events_b).len(), 1);
        // Nothing left to carry (no child starts by itself): the IKE SA closes.
        pair.drive();
        assert_eq!(pair.assert_converged(), 0);
        assert_eq!(pair.a.established() + pair.b.established(), 0);
    }
}

#[test]
fn child_sa_deleted_by_the_peer_during_a_rekey_comes_back_with_close_action_start() {
    for answer_first in [false, true] {
        let mut pair = rekey_while_deleted(answer_first, Action::Start);
        pair.drive();
        assert_eq!(pair.assert_converged(), 1, "answer first: {answer_first}");
        let new = Pair::children(&pair.events_a)[1];
        assert_eq!(new.rekeys, None, "a new Child SA, not a rekey");
    }
}

#[test]
fn late_rekey_request_for_an_sa_already_rekeyed_gets_temporary_failure() {
    for hold_delete in [false, true] {
        let mut pair = Pair::psk(Spec::default(), Spec::default());
        pair.initiate();
        pair.drive();
        let (old_a, old_b) = (pair.live(Side::A)[0], pair.live(Side::B)[0]);
        pair.expire(Side::A, old_a, false);
        pair.expire(Side::B, old_b, false);
        // Both rekey requests are sent; B's is held up on the way.
        let late = pair.wire.remove(1).unwrap();
        assert_eq!(late.0, Side::A);
        pair.deliver_next(); // A's request: B answers (a collision, for B)
        pair.deliver_next(); // A's rekey is done; A deletes the old SA
        let delete = pair.wire.pop_front().unwrap();
        if !hold_delete {
            pair.deliver(delete.clone());
            pair.deliver_next();
        }
        pair.deliver(late); // at A: that SA is rekeyed already
        pair.deliver_next(); // the refusal, at B
        if hold_delete {
            pair.deliver(delete);
        }
        pair.drive();
        assert_eq!(pair.assert_converged(), 1, "hold delete: {hold_delete}");
        let refusal = messages(&pair.events_a, true, ExchangeType::CREATE_CHILD_SA, true);
        assert_eq!(notify_types(refusal[0]), [NotifyType::TEMPORARY_FAILURE]);
        // A's SA stands; B does not try again, and its refused SPI never came up.
        let ours = messages(&pair.events_a, true, ExchangeType::CREATE_CHILD_SA, false);
        assert_eq!(pair.live(Side::A), vec![esp_spi(ours[0])]);
        assert_eq!(
            messages(&pair.events_b, true, ExchangeType::CREATE_CHILD_SA, false).len(),
            1
        );
        assert_eq!(Pair::children(&pair.events_a).len(), 2);
        assert_eq!(Pair::children(&pair.events_b).len(), 2);
        assert_eq!(child_downs(&pair.events_b), vec![old_b]);
    }
}

#[test]
fn child_sa_rekey_colliding_with_an_ike_sa_rekey_is_retried_and_completes() {
    for seed in 1..=6 {
        let a = Spec {
            ike_lifetime: ike_rekey_after(3600),
            ..Spec::default()
        };
        let b = Spec {
            lifetime: soft_hard(3600, 3900),
            ..Spec::default()
        };
        let mut pair = Pair::psk_seeded(a, b, seed);
        pair.initiate();
        pair.run_until(secs(1));
        let old_child = pair.live(Side::A);
        let old_ike = pair.plane_a.ike.clone();
        // At 3600 s A rekeys the IKE SA and B the Child SA: each refuses the other's
        // request for now (§2.25.2) and retries.
        pair.run_until(secs(3950));
        assert_eq!(pair.assert_converged(), 1, "seed {seed}");
        assert_ne!(pair.plane_a.ike, old_ike, "IKE SA rekeyed");
        assert_ne!(
            pair.live(Side::A),
            old_child,
            "Child SA rekeyed, seed {seed}"
        );
        assert!(
            !logs(&pair.events_b)
                .iter()
                .any(|l| l.contains("hard lifetime")),
            "seed {seed}"
        );
    }
}

/// A's Child SA rekey, with `fault` done to the wire once the request is sent: it
/// completes all the same, one fresh SA on both sides and the old one gone.
fn rekey_despite(fault: impl FnOnce(&mut Pair)) -> Pair {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.drive();
    let (old_a, old_b) = (pair.live(Side::A)[0], pair.live(Side::B)[0]);
    pair.expire(Side::A, old_a, false);
    fault(&mut pair);
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    assert_ne!(pair.live(Side::A), vec![old_a]);
    assert_eq!(child_downs(&pair.events_a), vec![old_a]);
    assert_eq!(child_downs(&pair.events_b), vec![old_b]);
    assert_eq!(Pair::children(&pair.events_a).len(), 2, "one rekey");
    assert_eq!(Pair::children(&pair.events_b).len(), 2);
    pair
}

#[test]
fn child_sa_rekey_survives_a_lost_request() {
    let pair = rekey_despite(|p| {
        p.drop_next();
    });
    assert!(logs(&pair.events_a).contains(&"retransmitting request"));
}

#[test]
fn child_sa_rekey_survives_a_lost_response() {
    let pair = rekey_despite(|p| {
        p.deliver_next();
        p.drop_next();
    });
    assert_eq!(
        Pair::sent(&pair.events_b, ExchangeType::CREATE_CHILD_SA, true),
        1,
        "answered once, the retransmission from the cache"
    );
}

#[test]
fn child_sa_rekey_survives_duplicated_messages() {
    let pair = rekey_despite(|p| {
        p.duplicate_next(); // the request twice
        p.deliver_next();
        p.deliver_next();
        p.duplicate_next(); // and its answer three times
        p.deliver_next(); // A's rekey is done, its Delete sent
        p.deliver_next();
        p.deliver_next();
        p.duplicate_next(); // the Delete twice
    });
    assert_eq!(
        Pair::sent(&pair.events_b, ExchangeType::CREATE_CHILD_SA, true),
        1
    );
    assert_eq!(
        Pair::sent(&pair.events_b, ExchangeType::INFORMATIONAL, true),
        1
    );
}

#[test]
fn child_sa_rekey_survives_a_lost_delete_and_a_lost_delete_answer() {
    rekey_despite(|p| {
        p.deliver_next();
        p.deliver_next(); // rekeyed; the Delete of the old SA is sent
        p.drop_next();
        p.tick(); // sent again
        p.deliver_next();
        p.drop_next(); // its answer lost
        p.tick();
    });
}

#[test]
fn stale_rekey_response_arriving_after_the_delete_is_ignored() {
    rekey_despite(|p| {
        p.deliver_next();
        let stale = p.drop_next(); // the answer, delayed
        p.tick(); // the request again, answered from the cache
        p.deliver_next();
        p.deliver_next(); // rekeyed; the Delete of the old SA is sent
        p.deliver_next();
        p.deliver_next(); // and answered
        p.deliver((Side::A, stale));
    });
}

#[test]
fn rekey_answer_reordered_with_a_crossing_delete_of_another_child() {
    let spec = || Spec {
        second_child: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), spec());
    pair.initiate();
    pair.drive();
    assert_eq!(pair.assert_converged(), 2);
    let of = |plane: &Plane, name: &str| {
        plane
            .children
            .iter()
            .find(|(_, sa)| sa.child == name)
            .map(|(spi, _)| *spi)
            .unwrap()
    };
    let (net_a, net2_b) = (of(&pair.plane_a, "net"), of(&pair.plane_b, "net2"));
    pair.expire(Side::A, net_a, false);
    pair.expire(Side::B, net2_b, true);
    pair.deliver_next(); // B answers A's rekey after sending its Delete…
    pair.wire.swap(0, 1); // …but the answer arrives first
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    let survivor = &pair.plane_a.children[&pair.live(Side::A)[0]];
    assert_eq!(survivor.child, "net");
    assert_ne!(pair.live(Side::A), vec![net_a]);
}

#[test]
fn ike_sa_rekey_moves_the_children_and_message_ids_restart() {
    for rekeyer in [Side::A, Side::B] {
        let rekeying = || Spec {
            ike_lifetime: ike_rekey_after(3600),
            ..Spec::default()
        };
        let (a, b) = match rekeyer {
            Side::A => (rekeying(), Spec::default()),
            Side::B => (Spec::default(), rekeying()),
        };
        let mut pair = Pair::psk(a, b);
        pair.initiate();
        pair.run_until(secs(1));
        let children = (pair.live(Side::A), pair.live(Side::B));
        let old = pair.plane_a.ike.clone();
        pair.run_until(secs(3610));
        assert_eq!(pair.assert_converged(), 1);
        assert_eq!((pair.live(Side::A), pair.live(Side::B)), children);
        assert!(child_downs(&pair.events_a).is_empty() && child_downs(&pair.events_b).is_empty());
        assert_eq!(pair.plane_a.ike.len(), 1);
        assert_ne!(pair.plane_a.ike, old);
        let new = *pair.plane_a.ike.first().unwrap();
        for side in [Side::A, Side::B] {
            let up = pair
                .events(side)
                .iter()
                .find_map(|e| match e {
                    Event::IkeSaRekeyed { old, up } => Some((old.0, up)),
                    _ => None,
                })
                .unwrap();
            assert_eq!(up.0, old.first().unwrap().0);
            assert_eq!((up.1.spi_i.0, up.1.spi_r.0), new);
            assert_eq!(up.1.initiator, side == rekeyer, "the rekey's initiator");
            let reason = if side == rekeyer {
                DownReason::DeletedLocally
            } else {
                DownReason::DeletedByPeer
            };
            assert_eq!(Pair::downs(pair.events(side)), [reason]);
        }
        // Each side's requests on the new IKE SA start at message ID 0: a Child SA
        // rekey and its Delete.
        for side in [Side::A, Side::B] {
            let spi = pair.live(side)[0];
            pair.expire(side, spi, false);
            pair.run_for(10);
            assert_eq!(pair.assert_converged(), 1);
            assert_ne!(pair.live(side), vec![spi]);
            let on_new: Vec<_> = requests(pair.events(side))
                .into_iter()
                .filter(|r| r.2 == new.0)
                .map(|r| (r.0, r.1))
                .collect();
            assert_eq!(
                on_new,
                [
                    (ExchangeType::CREATE_CHILD_SA, 0),
                    (ExchangeType::INFORMATIONAL, 1)
                ],
                "{side:?}"
            );
        }
        assert_eq!((pair.a.established(), pair.b.established()), (1, 1));
    }
}

/// A rekeys the IKE SA at 3600 s with `fault` done to the wire once its request
/// is sent: the rekey completes all the same, with one Child SA. Returns the pair
/// and the Child SAs before, (A's, B's).
fn ike_rekey_despite(fault: impl FnOnce(&mut Pair)) -> (Pair, (Vec<u32>, Vec<u32>)) {
    let a = Spec {
        ike_lifetime: ike_rekey_after(3600),
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.initiate();
    pair.run_until(secs(3599));
    let children = (pair.live(Side::A), pair.live(Side::B));
    let old = pair.plane_a.ike.clone();
    pair.tick();
    fault(&mut pair);
    pair.run_for(300);
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(pair.plane_a.ike.len(), 1);
    assert_ne!(pair.plane_a.ike, old);
    assert_eq!(rekeyed(&pair.events_a), rekeyed(&pair.events_b));
    assert_eq!(Pair::downs(&pair.events_a), [DownReason::DeletedLocally]);
    assert_eq!(Pair::downs(&pair.events_b), [DownReason::DeletedByPeer]);
    (pair, children)
}

#[test]
fn ike_sa_rekey_survives_a_lost_request() {
    let (pair, children) = ike_rekey_despite(|p| {
        p.drop_next();
    });
    assert_eq!(children, (pair.live(Side::A), pair.live(Side::B)));
}

#[test]
fn ike_sa_rekey_survives_a_lost_response_and_duplicates() {
    let (pair, children) = ike_rekey_despite(|p| {
        p.duplicate_next();
        p.deliver_next();
        p.drop_next(); // the answer
        p.deliver_next(); // the duplicate request: the cached answer again
        p.duplicate_next();
    });
    assert_eq!(children, (pair.live(Side::A), pair.live(Side::B)));
}

#[test]
fn request_on_the_new_ike_sa_before_the_rekey_answer_arrives_waits_for_it() {
    let (pair, children) = ike_rekey_despite(|p| {
        p.deliver_next(); // B answers: the new IKE SA is B's now
        p.drop_next(); // but the answer is lost
        let child = p.live(Side::B)[0];
        p.expire(Side::B, child, false); // B rekeys it, on the new IKE SA
        p.deliver_next(); // at A, which does not know that IKE SA yet
    });
    // Not answered with INVALID_IKE_SPI: B's request waited for A's retransmission,
    // and the Child SA was rekeyed on the new IKE SA.
    assert!(
        !logs(&pair.events_b)
            .iter()
            .any(|l| l.contains("INVALID_IKE_SPI"))
    );
    assert_eq!(child_downs(&pair.events_a), children.0);
    assert_eq!(child_downs(&pair.events_b), children.1);
    let on_new = messages(&pair.events_b, true, ExchangeType::CREATE_CHILD_SA, false);
    assert_eq!(on_new.len(), 1);
    assert_eq!(
        (on_new[0].spi_i.0, on_new[0].message_id),
        (rekeyed(&pair.events_b)[0].0, 0)
    );
}

#[test]
fn dpd_declares_a_silent_peer_dead_and_the_connection_restarts() {
    let a = Spec {
        dpd_delay: Some(Duration::from_secs(30)),
        start_action: Action::Start,
        dpd_action: Action::Start,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.start_a();
    pair.run_until(secs(1));
    assert_eq!(pair.assert_converged(), 1);
    let old_a = pair.live(Side::A)[0];
    pair.cut = Some(Side::B);
    pair.run_until(Instant(Duration::from_millis(29_900)));
    assert_eq!(pair.lost, 0, "nothing to say before dpd_delay");
    pair.run_until(secs(30));
    let checks = messages(&pair.events_a, true, ExchangeType::INFORMATIONAL, false);
    assert_eq!(checks.len(), 1);
    assert!(checks[0].payloads.is_empty(), "an empty INFORMATIONAL");
    while Pair::downs(&pair.events_a).is_empty() {
        assert!(pair.now < secs(300));
        pair.run_until(pair.now + Duration::from_millis(100));
    }
    assert_eq!(pair.lost, 6, "the check and its 5 retransmissions");
    let dead_at = pair.now;
    assert!(dead_at > secs(30 + 145) && dead_at <= secs(30 + 166));
    assert_eq!(Pair::downs(&pair.events_a), [DownReason::PeerDead]);
    assert_eq!(child_downs(&pair.events_a), [old_a]);
    // dpd_action = start: A initiates again after a short back-off.
    pair.run_for(2);
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::IKE_SA_INIT, false),
        2
    );
    // B comes back, having lost everything.
    pair.restart_b();
    pair.cut = None;
    pair.run_for(20);
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(Pair::ike_up(&pair.events_a), 2);
}

#[test]
fn after_an_outage_the_restarted_connection_replaces_the_peers_stale_ike_sa() {
    let a = Spec {
        dpd_delay: Some(Duration::from_secs(30)),
        start_action: Action::Start,
        dpd_action: Action::Start,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.start_a();
    pair.run_until(secs(1));
    let old_b = pair.live(Side::B)[0];
    // The link fails for a while; B, without DPD, keeps its IKE SA.
    pair.cut = Some(Side::B);
    pair.run_until(secs(200));
    assert_eq!(Pair::downs(&pair.events_a), [DownReason::PeerDead]);
    assert!(Pair::downs(&pair.events_b).is_empty());
    pair.cut = None;
    pair.run_for(60);
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(Pair::downs(&pair.events_b), [DownReason::Replaced]);
    assert_eq!(child_downs(&pair.events_b), [old_b]);
}

#[test]
fn inbound_esp_postpones_dpd() {
    let a = Spec {
        dpd_delay: Some(Duration::from_secs(30)),
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.initiate();
    pair.run_until(secs(20));
    let spi = pair.live(Side::A)[0];
    pair.a.inbound_seen(pair.now, &[spi]);
    pair.run_until(Instant(Duration::from_millis(49_900)));
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::INFORMATIONAL, false),
        0
    );
    pair.run_until(secs(50));
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::INFORMATIONAL, false),
        1
    );
    assert_eq!(
        Pair::sent(&pair.events_b, ExchangeType::INFORMATIONAL, true),
        1
    );
    assert_eq!(pair.assert_converged(), 1);
}

#[test]
fn initial_contact_from_a_restarted_peer_replaces_the_stale_ike_sa() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.initiate();
    pair.drive();
    let old_a = pair.live(Side::A)[0];
    let stale = pair.plane_a.ike.clone();
    pair.restart_b();
    pair.b
        .initiate(pair.now, 0, B.parse().unwrap(), A.parse().unwrap())
        .unwrap();
    pair.collect();
    pair.drive();
    let auth = messages(&pair.events_b, true, ExchangeType::IKE_AUTH, false);
    assert!(notify_types(auth[0]).contains(&NotifyType::INITIAL_CONTACT));
    assert_eq!(Pair::downs(&pair.events_a), [DownReason::Replaced]);
    assert_eq!(child_downs(&pair.events_a), [old_a]);
    assert_eq!(pair.assert_converged(), 1);
    assert!(pair.plane_a.ike.is_disjoint(&stale));
    // Dropped silently: there is nobody to tell.
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::INFORMATIONAL, false),
        0
    );
}

/// The KE value of each IKE_SA_INIT request a side sent.
fn ke_values(events: &[Event]) -> Vec<Vec<u8>> {
    messages(events, true, ExchangeType::IKE_SA_INIT, false)
        .iter()
        .filter_map(|m| {
            m.payloads.iter().find_map(|p| match p {
                Payload::Ke(k) => Some(k.data.clone()),
                _ => None,
            })
        })
        .collect()
}

#[test]
fn only_the_first_ike_sa_of_a_connection_sends_initial_contact() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    for _ in 0..2 {
        pair.initiate();
        pair.drive();
    }
    let auth = messages(&pair.events_a, true, ExchangeType::IKE_AUTH, false);
    let contact: Vec<bool> = auth
        .iter()
        .map(|m| notify_types(m).contains(&NotifyType::INITIAL_CONTACT))
        .collect();
    assert_eq!(contact, [true, false]);
    assert_eq!((pair.a.established(), pair.b.established()), (2, 2));
    let [first, second] = <[Vec<u8>; 2]>::try_from(ke_values(&pair.events_a)).unwrap();
    assert_ne!(first, second, "a fresh KE value per IKE SA by default");
}

#[test]
fn an_initiator_told_to_reuse_its_ke_value_and_each_sa_still_has_its_own_keys() {
    let mut pair = Pair::psk(Spec::default(), Spec::default());
    pair.a = Endpoint::new(
        Settings {
            initiator_reuses_ke: true,
            ..settings()
        },
        pair.a.policies().to_vec(),
        Box::new(SeededRandom::new(7)),
    );
    // At once: a value is reused for 30 s at most, and `drive` runs the clock on.
    pair.initiate();
    pair.initiate();
    pair.drive();
    let [first, second] = <[Vec<u8>; 2]>::try_from(ke_values(&pair.events_a)).unwrap();
    assert_eq!(first, second);
    let ups: Vec<&IkeSaUp> = pair
        .events_a
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaUp(up) => Some(&**up),
            _ => None,
        })
        .collect();
    assert_eq!(ups.len(), 2);
    assert_ne!(ups[0].keys.sk_d, ups[1].keys.sk_d);
}

#[test]
fn invalid_ike_spi_from_a_restarted_peer_ends_the_sa_and_it_reconnects() {
    let a = Spec {
        dpd_delay: Some(Duration::from_secs(30)),
        start_action: Action::Start,
        dpd_action: Action::Start,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.start_a();
    pair.run_until(secs(1));
    let old_a = pair.live(Side::A)[0];
    pair.restart_b();
    pair.run_until(secs(30)); // the liveness check reaches the fresh B
    assert!(
        logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("INVALID_IKE_SPI"))
    );
    assert_eq!(Pair::downs(&pair.events_a), [DownReason::PeerDead]);
    assert_eq!(child_downs(&pair.events_a), [old_a]);
    pair.run_until(secs(32));
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(Pair::ike_up(&pair.events_a), 2);
    assert!(!logs(&pair.events_a).contains(&"retransmitting request"));
}

/// Initiations A started (IKE_SA_INIT requests, retransmissions aside).
fn tries(pair: &Pair) -> usize {
    Pair::sent(&pair.events_a, ExchangeType::IKE_SA_INIT, false)
}

#[test]
fn keyingtries_bound_initiation_retries_and_count_afresh_after_success() {
    let a = Spec {
        start_action: Action::Start,
        dpd_action: Action::Start,
        dpd_delay: Some(Duration::from_secs(30)),
        keyingtries: 3,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.cut = Some(Side::B);
    pair.start_a();
    pair.drive();
    assert_eq!(tries(&pair), 3);
    assert_eq!(Pair::downs(&pair.events_a), vec![DownReason::PeerDead; 3]);
    let gave_up = |p: &Pair| {
        logs(&p.events_a)
            .iter()
            .filter(|l| l.contains("giving up after 3 keying tries"))
            .count()
    };
    assert_eq!(gave_up(&pair), 1);
    assert_eq!(pair.a.poll_timeout(), None, "nothing more");
    // Started again: the first try fails, the peer is back during the second.
    pair.start_a();
    while Pair::downs(&pair.events_a).len() < 4 {
        pair.tick();
        pair.wire.clear();
    }
    pair.cut = None;
    pair.run_for(30);
    assert_eq!(tries(&pair), 5);
    assert_eq!(pair.assert_converged(), 1);
    // The peer goes away for good: after the liveness check fails, A tries three
    // times again, not what was left of the earlier count.
    pair.cut = Some(Side::B);
    pair.drive();
    assert_eq!(tries(&pair), 5 + 3);
    assert_eq!(gave_up(&pair), 2);
}

#[test]
fn keyingtries_zero_retries_until_the_peer_appears() {
    let a = Spec {
        start_action: Action::Start,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.cut = Some(Side::B);
    pair.start_a();
    pair.run_until(secs(2000));
    assert!(tries(&pair) >= 8, "{} tries", tries(&pair));
    assert!(
        !logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("keying tries"))
    );
    // The back-off grows but stays bounded.
    let waits: Vec<f64> = logs(&pair.events_a)
        .iter()
        .filter_map(|l| l.strip_prefix("site: initiating again in "))
        .map(|l| l.trim_end_matches(" s").parse().unwrap())
        .collect();
    assert_eq!(waits.len(), tries(&pair) - 1);
    assert!(waits.iter().all(|w| *w <= 60.0), "{waits:?}");
    assert!(waits.last().unwrap() > &waits[0]);
    pair.cut = None;
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
}

#[test]
fn acquire_initiates_a_trapped_connection_once() {
    let a = Spec {
        start_action: Action::Trap,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.start_a();
    assert!(pair.wire.is_empty(), "a trap waits for traffic");
    assert_eq!(pair.a.poll_timeout(), None);
    pair.a.acquire(pair.now, 0, 0);
    pair.a.acquire(pair.now, 0, 0);
    pair.collect();
    assert_eq!(pair.wire.len(), 1, "one IKE_SA_INIT");
    pair.deliver_next();
    pair.deliver_next(); // IKE_AUTH under way
    pair.a.acquire(pair.now, 0, 0);
    pair.collect();
    assert_eq!(pair.wire.len(), 1);
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    pair.a.acquire(pair.now, 0, 0); // the SA is there: nothing to do
    pair.collect();
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(tries(&pair), 1);
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::CREATE_CHILD_SA, false),
        0
    );
}

#[test]
fn further_children_follow_ike_auth_in_create_child_sa() {
    let spec = || Spec {
        second_child: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), spec());
    pair.initiate();
    // Right away: before the first timer (no retransmission, no retry).
    pair.run_until(Instant::default());
    assert_eq!(pair.assert_converged(), 2);
    let ids: Vec<_> = requests(&pair.events_a)
        .iter()
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(
        ids,
        [
            (ExchangeType::IKE_SA_INIT, 0),
            (ExchangeType::IKE_AUTH, 1),
            (ExchangeType::CREATE_CHILD_SA, 2)
        ]
    );
    for events in [&pair.events_a, &pair.events_b] {
        let names: Vec<_> = Pair::children(events)
            .iter()
            .map(|c| c.child.as_str())
            .collect();
        assert_eq!(names, ["net", "net2"]);
    }
    let net2 = Pair::children(&pair.events_a)[1];
    assert_eq!(net2.local_ts, [cidr("10.1.1.0", "10.1.1.255")]);
    assert_eq!(net2.remote_ts, [cidr("10.2.1.0", "10.2.1.255")]);
}

#[test]
fn esp_for_a_child_sa_still_being_negotiated_is_not_reported_as_invalid_spi() {
    let spec = || Spec {
        second_child: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), spec());
    pair.initiate();
    for _ in 0..5 {
        pair.deliver_next(); // IKE_SA_INIT, IKE_AUTH, and B takes the second child
    }
    let request = messages(&pair.events_a, true, ExchangeType::CREATE_CHILD_SA, false)[0];
    let spi = esp_spi(request);
    // B sends with the new SA at once; its first packet overtakes the answer.
    pair.a
        .unknown_spi(pair.now, A.parse().unwrap(), B.parse().unwrap(), spi);
    pair.collect();
    pair.drive();
    assert_eq!(pair.assert_converged(), 2);
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::INFORMATIONAL, false),
        0
    );
    assert_eq!(Pair::children(&pair.events_b).len(), 2);
}

#[test]
fn childless_ike_sa_creates_the_children_that_should_be_up_again() {
    let a = Spec {
        start_action: Action::Start,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.start_a();
    pair.run_until(secs(1));
    let old_b = pair.live(Side::B)[0];
    pair.expire(Side::B, old_b, true); // B deletes the only Child SA
    pair.run_for(4);
    assert_eq!(pair.assert_converged(), 0, "close_action none: not at once");
    pair.run_for(10);
    assert_eq!(pair.assert_converged(), 1, "after the childless grace");
    assert!(
        logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("no CHILD_SA left, creating them again"))
    );
    assert_eq!(Pair::ike_up(&pair.events_a), 1, "on the same IKE SA");
    pair.run_for(60);
    assert_eq!(pair.assert_converged(), 1, "and B keeps it");
}

#[test]
fn a_connection_taken_down_stays_down_until_brought_up() {
    let a = Spec {
        start_action: Action::Start,
        dpd_action: Action::Start,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.start_a();
    pair.run_until(secs(1));
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(pair.a.down(pair.now, 0), 1);
    pair.collect();
    pair.run_for(120);
    assert_eq!(Pair::downs(&pair.events_a), [DownReason::DeletedLocally]);
    assert_eq!(Pair::downs(&pair.events_b), [DownReason::DeletedByPeer]);
    assert!(pair.a.held(0));
    // Neither start_action = "start" nor a packet for the child brings it back.
    pair.a.acquire(pair.now, 0, 0);
    pair.collect();
    pair.run_for(60);
    assert_eq!(
        Pair::sent(&pair.events_a, ExchangeType::IKE_SA_INIT, false),
        1
    );
    assert!(pair.live(Side::A).is_empty());
    pair.a.up(pair.now, 0).unwrap();
    pair.collect();
    pair.run_for(5);
    assert!(!pair.a.held(0));
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(Pair::ike_up(&pair.events_a), 2);
    // A responder's connection has no peer to dial.
    assert!(
        pair.b
            .up(pair.now, 0)
            .unwrap_err()
            .contains("waits for the peer")
    );
}

#[test]
fn a_reload_replaces_a_changed_connection_and_its_sas() {
    let starting = || Spec {
        start_action: Action::Start,
        ..Spec::default()
    };
    let b = Spec {
        esp: vec!["aes128gcm16", "aes256gcm16"],
        ..Spec::default()
    };
    let mut pair = Pair::psk(starting(), b);
    pair.start_a();
    pair.run_until(secs(1));
    assert_eq!(pair.assert_converged(), 1);
    let old_spi = pair.live(Side::A)[0];
    // What `esptun reload` does with a connection whose ESP proposal changed.
    let changed = policy(
        Spec {
            esp: vec!["aes256gcm16"],
            ..starting()
        },
        true,
    );
    let new = pair.a.add_policy(changed);
    pair.a.add_peer(new, A.parse().unwrap(), B.parse().unwrap());
    assert_eq!(pair.a.retire(pair.now, 0), 1);
    pair.a.schedule_start(pair.now, new);
    pair.collect();
    pair.run_for(10);
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(Pair::downs(&pair.events_a), [DownReason::DeletedLocally]);
    assert_eq!(Pair::ike_up(&pair.events_a), 2);
    let last = *Pair::children(&pair.events_a).last().unwrap();
    assert_eq!(
        (last.policy, last.encr.to_string()),
        (new, "AES_GCM_16-256".to_string())
    );
    assert_ne!(pair.live(Side::A), [old_spi]);
    // The retired connection is gone for good: not named, not started again.
    assert_eq!(pair.a.find("site"), Some(new));
    assert_eq!(pair.a.connections().count(), 1);
    pair.run_for(120);
    assert_eq!(Pair::ike_up(&pair.events_a), 2);
}

#[test]
fn a_retired_connection_accepts_no_peer() {
    let a = Spec {
        start_action: Action::Start,
        close_action: Action::Start,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, Spec::default());
    pair.start_a();
    pair.run_until(secs(1));
    assert_eq!(pair.assert_converged(), 1);
    // B's only connection is removed: its SA goes, and A's retries find no match.
    assert_eq!(pair.b.retire(pair.now, 0), 1);
    pair.collect();
    pair.run_for(30);
    assert_eq!(pair.b.connections().count(), 0);
    assert_eq!(pair.b.find("site"), None);
    assert_eq!(Pair::ike_up(&pair.events_b), 1);
    assert!(pair.live(Side::B).is_empty());
    assert!(
        Pair::sent(&pair.events_a, ExchangeType::IKE_SA_INIT, false) > 1,
        "A keeps trying"
    );
}

#[test]
fn a_child_taken_down_stays_down_on_its_ike_sa_until_brought_up() {
    let a = Spec {
        start_action: Action::Start,
        dpd_action: Action::Start,
        close_action: Action::Start,
        second_child: true,
        ..Spec::default()
    };
    let b = Spec {
        second_child: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, b);
    pair.start_a();
    pair.run_until(secs(1));
    assert_eq!(pair.assert_converged(), 2);
    let names = |pair: &Pair| -> Vec<String> {
        let mut v: Vec<String> = pair
            .plane_a
            .children
            .values()
            .map(|c| c.child.clone())
            .collect();
        v.sort();
        v
    };
    // net2 goes on both sides; neither close_action, the childless check nor a
    // trapped packet brings it back; the IKE SA stays.
    assert_eq!(pair.a.down_child(pair.now, 0, 1), 1);
    pair.collect();
    pair.a.acquire(pair.now, 0, 1);
    pair.collect();
    pair.run_for(60);
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(names(&pair), ["net"]);
    assert_eq!(pair.a.held_children(0), [1]);
    // Both children down: A keeps its IKE SA, idle; B (whose own policy closes a
    // childless IKE SA) deletes it, and A, every child held, does not dial again.
    assert_eq!(pair.a.down_child(pair.now, 0, 0), 1);
    pair.collect();
    pair.run_for(120);
    assert_eq!(pair.assert_converged(), 0);
    assert_eq!(pair.a.established() + pair.b.established(), 0);
    assert_eq!(Pair::ike_up(&pair.events_a), 1);
    assert!(
        !logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("creating them again"))
    );
    assert!(
        pair.a
            .up(pair.now, 0)
            .unwrap_err()
            .contains("every child of it is down")
    );
    // net2 up: a new IKE SA, whose IKE_AUTH carries net2 (net stays down); then net
    // on the same IKE SA.
    pair.a.up_child(pair.now, 0, 1).unwrap();
    pair.collect();
    pair.run_for(5);
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(names(&pair), ["net2"]);
    assert_eq!(Pair::ike_up(&pair.events_a), 2);
    pair.a.up_child(pair.now, 0, 0).unwrap();
    pair.collect();
    pair.run_for(5);
    assert_eq!(pair.assert_converged(), 2);
    assert_eq!(Pair::ike_up(&pair.events_a), 2);
    assert!(pair.a.held_children(0).is_empty());
}

/// `p` as a road warrior's policy: asking for `vips` (a client), or leasing from
/// `pools` (a gateway); the virtual side's selectors are left to the addresses.
fn virtual_ips(p: &Policy, pools: &[&str], vips: &[&str]) -> Arc<Policy> {
    let LocalAuth::Psk { id, psk } = &p.local else {
        panic!("a PSK policy");
    };
    let children = p
        .children
        .iter()
        .map(|c| ChildPolicy {
            local_ts: if vips.is_empty() {
                c.local_ts.clone()
            } else {
                Vec::new()
            },
            remote_ts: if pools.is_empty() {
                c.remote_ts.clone()
            } else {
                Vec::new()
            },
            ..c.clone()
        })
        .collect();
    Arc::new(Policy {
        name: p.name.clone(),
        local_addrs: Vec::new(),
        remote_addrs: Vec::new(),
        proposals: p.proposals.clone(),
        encap: p.encap,
        fragment_size: p.fragment_size,
        local: LocalAuth::Psk {
            id: id.clone(),
            psk: psk.clone(),
        },
        remote: RemoteAuth::Psk {
            id: RemoteId::Any,
            psk: psk.clone(),
        },
        children,
        ike_lifetime: p.ike_lifetime,
        dpd_delay: p.dpd_delay,
        keyingtries: p.keyingtries,
        pools: pools.iter().map(|s| s.to_string()).collect(),
        vips: vips.iter().map(|s| s.parse().unwrap()).collect(),
        mobike: true,
    })
}

/// A client (A, asking for `vips`) and its gateway (B, with pools rw4 = 10.3.0.1-2
/// and rw6 = fd00:3::1-2, and 10.2.0.0/24 and fd00:2::/64 behind it).
fn road_warrior(vips: &[&str], pools: &[&str]) -> Pair {
    road_warrior_with(vips, pools, Spec::default)
}

/// [`road_warrior`] with both sides' policies made from `spec` (their selectors set).
fn road_warrior_with(vips: &[&str], pools: &[&str], spec: fn() -> Spec) -> Pair {
    let lan = || Spec {
        remote_ts: vec![
            cidr("10.2.0.0", "10.2.0.255"),
            cidr("fd00:2::", "fd00:2::ffff"),
        ],
        ..spec()
    };
    let pool = |name: &str, first: &str, last: &str, dns: &str| AddressPool {
        name: name.into(),
        addrs: cidr(first, last).addrs,
        dns: vec![dns.parse().unwrap()],
    };
    let gateway = Settings {
        pools: vec![
            pool("rw4", "10.3.0.1", "10.3.0.2", "10.2.0.53"),
            pool("rw6", "fd00:3::1", "fd00:3::2", "fd00:2::53"),
        ],
        ..settings()
    };
    Pair::new(
        virtual_ips(&policy(lan(), true), &[], vips),
        virtual_ips(&policy(lan(), false), pools, &[]),
        gateway,
    )
}

fn ike_ups(events: &[Event]) -> Vec<&IkeSaUp> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaUp(up) => Some(up.as_ref()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_road_warrior_gets_virtual_ips_and_dns_and_its_selectors_are_narrowed_to_them() {
    let mut pair = road_warrior(&["0.0.0.0", "::"], &["rw4", "rw6"]);
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    let vips: Vec<std::net::IpAddr> =
        vec!["10.3.0.1".parse().unwrap(), "fd00:3::1".parse().unwrap()];
    let (client, gateway) = (ike_ups(&pair.events_a)[0], ike_ups(&pair.events_b)[0]);
    assert_eq!(client.virtual_ips, vips);
    assert_eq!(
        client.dns,
        [
            "10.2.0.53".parse::<std::net::IpAddr>().unwrap(),
            "fd00:2::53".parse().unwrap()
        ]
    );
    assert_eq!(gateway.virtual_ips, vips);
    let hosts = vec![cidr("10.3.0.1", "10.3.0.1"), cidr("fd00:3::1", "fd00:3::1")];
    assert_eq!(Pair::children(&pair.events_a)[0].local_ts, hosts);
    assert_eq!(Pair::children(&pair.events_b)[0].remote_ts, hosts);
    // The split-include subnets are the gateway's side of its children.
    let reply = pair.events_a.iter().find_map(|e| match e {
        Event::Message(m) if !m.sent && m.exchange == ExchangeType::IKE_AUTH => {
            m.payloads.iter().find_map(|p| match p {
                Payload::Cp(cp) => Some(cp.clone()),
                _ => None,
            })
        }
        _ => None,
    });
    let kinds: Vec<u16> = reply.unwrap().attributes.iter().map(|a| a.kind.0).collect();
    assert_eq!(
        kinds,
        [1, 8, 3, 10, 13, 15],
        "ADDR, ADDR6, DNS, DNS6, SUBNET, SUBNET6"
    );
    assert_eq!(pair.b.leases(), (2, 0));
}

#[test]
fn a_road_warrior_gets_its_address_back_and_the_lease_goes_offline_in_between() {
    let mut pair = road_warrior(&["0.0.0.0"], &["rw4"]);
    pair.initiate();
    pair.drive();
    pair.a.delete_all(pair.now);
    pair.collect();
    pair.drive();
    assert_eq!(pair.b.leases(), (0, 1));
    pair.a = Endpoint::new(
        settings(),
        pair.a.policies().to_vec(),
        Box::new(SeededRandom::new(77)),
    );
    pair.initiate();
    pair.drive();
    let ups = ike_ups(&pair.events_a);
    assert_eq!(ups.len(), 2);
    assert_eq!(ups[0].virtual_ips, ups[1].virtual_ips);
    assert_eq!(pair.b.leases(), (1, 0));
}

#[test]
fn a_gateway_without_an_address_of_the_family_refuses_and_the_client_closes() {
    // The client asks for IPv4 only; the gateway leases IPv6 only.
    let mut pair = road_warrior(&["0.0.0.0"], &["rw6"]);
    pair.initiate();
    pair.drive();
    assert!(Pair::children(&pair.events_a).is_empty());
    assert!(Pair::children(&pair.events_b).is_empty());
    assert!(matches!(
        Pair::downs(&pair.events_a)[..],
        [DownReason::Failed(Error::AddressFailure(_))]
    ));
    assert!(
        logs(&pair.events_a).iter().any(|l| l.contains(
            "the gateway assigned no virtual IP (the gateway sent INTERNAL_ADDRESS_FAILURE)"
        )),
        "{:?}",
        logs(&pair.events_a)
    );
    assert!(pair.events_b.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed { reason: Error::AddressFailure(why), .. } if why == "no IPv4 address left in pools rw6"
    )));
    assert_eq!(pair.a.established() + pair.b.established(), 0);
    assert_eq!(pair.b.leases(), (0, 0));
}

#[test]
fn a_gateway_with_pools_gives_no_child_sa_to_a_peer_asking_for_no_address() {
    let mut pair = road_warrior(&[], &["rw4"]);
    pair.initiate();
    pair.drive();
    assert!(Pair::children(&pair.events_b).is_empty());
    assert!(pair.events_a.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            reason: Error::Notified(NotifyType::FAILED_CP_REQUIRED),
            ..
        }
    )));
}

fn moves(events: &[Event]) -> Vec<(SocketAddr, SocketAddr, Vec<u32>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaMoved {
                local,
                remote,
                children,
                ..
            } => Some((*local, *remote, children.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_whose_address_changes_moves_the_sa_and_its_child_sas_with_mobike() {
    let mut pair = road_warrior(&["0.0.0.0"], &["rw4"]);
    pair.initiate();
    pair.drive();
    let [(spi, local, remote)] = pair.a.roaming()[..] else {
        panic!("one SA that roams: {:?}", pair.a.roaming());
    };
    assert_eq!((local, remote), (A.parse().unwrap(), B.parse().unwrap()));
    let new: SocketAddr = "198.51.100.7:500".parse().unwrap();
    pair.a.update_addresses(pair.now, spi, new.ip());
    pair.collect();
    pair.drive();
    let child_a = Pair::children(&pair.events_a)[0].spi_in;
    let child_b = Pair::children(&pair.events_b)[0].spi_in;
    assert_eq!(
        moves(&pair.events_a),
        [(new, B.parse().unwrap(), vec![child_a])]
    );
    assert_eq!(
        moves(&pair.events_b),
        [(B.parse().unwrap(), new, vec![child_b])]
    );
    assert!(
        logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("our address is now 198.51.100.7:500"))
    );
    // Nothing was negotiated again, and the SA stays where it went.
    pair.assert_tunnel();
    pair.a.update_addresses(pair.now, spi, new.ip());
    pair.collect();
    pair.drive();
    assert_eq!(moves(&pair.events_a).len(), 1);
}

#[test]
fn without_mobike_an_established_sa_answers_a_request_where_it_came_from_but_stays() {
    let mut pair = Pair::psk(
        Spec {
            mobike: false,
            ..Spec::default()
        },
        Spec::default(),
    );
    pair.initiate();
    pair.drive();
    assert!(pair.a.roaming().is_empty(), "MOBIKE needs both sides");
    // A's next request arrives from elsewhere (no NAT was detected, no MOBIKE).
    pair.a.down_child(pair.now, 0, 0);
    pair.collect();
    let (to, mut t) = pair.wire.pop_front().unwrap();
    let stray: SocketAddr = "198.51.100.7:500".parse().unwrap();
    t.local = stray;
    pair.deliver((to, t));
    let (_, answer) = pair.wire.back().unwrap();
    assert_eq!(answer.remote, stray, "answered where the request came from");
    assert!(moves(&pair.events_b).is_empty());
}

#[test]
fn a_road_warrior_keeps_its_address_through_ike_and_child_sa_rekeys() {
    let mut pair = road_warrior_with(&["0.0.0.0"], &["rw4"], || Spec {
        ike_lifetime: ike_rekey_after(100),
        lifetime: soft_hard(60, 90),
        ..Spec::default()
    });
    pair.initiate();
    pair.run_for(350);
    let vip = cidr("10.3.0.1", "10.3.0.1");
    let rekeyed: Vec<Vec<std::net::IpAddr>> = pair
        .events_a
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaRekeyed { up, .. } => Some(up.virtual_ips.clone()),
            _ => None,
        })
        .collect();
    assert!(rekeyed.len() >= 2, "IKE SA rekeys: {}", rekeyed.len());
    let vip_addr: std::net::IpAddr = "10.3.0.1".parse().unwrap();
    assert!(rekeyed.iter().all(|v| v == &[vip_addr]), "{rekeyed:?}");
    let children = Pair::children(&pair.events_a);
    assert!(children.len() >= 5, "Child SA rekeys: {}", children.len());
    assert!(children.iter().all(|c| c.local_ts == [vip]));
    assert!(
        Pair::children(&pair.events_b)
            .iter()
            .all(|c| c.remote_ts == [vip])
    );
    assert_eq!(
        pair.b.leases(),
        (1, 0),
        "one lease, held by the current IKE SA"
    );
    pair.assert_converged();
}

#[test]
fn a_client_that_moves_behind_a_nat_floats_to_the_natt_port_and_then_moves() {
    let mut pair = road_warrior(&["0.0.0.0"], &["rw4"]);
    pair.initiate();
    pair.drive();
    let [(spi, ..)] = pair.a.roaming()[..] else {
        panic!("one SA");
    };
    // A's new address is behind a NAT that shows it to B as 203.0.113.9 (same port).
    let inside: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    let outside: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    pair.a.update_addresses(pair.now, spi, inside);
    pair.collect();
    for _ in 0..100 {
        let Some((to, mut t)) = pair.wire.pop_front() else {
            break;
        };
        match to {
            Side::B if t.local.ip() == inside => t.local.set_ip(outside),
            Side::A if t.remote.ip() == outside => t.remote.set_ip(inside),
            _ => {}
        }
        pair.deliver((to, t));
    }
    let natt = |ip| SocketAddr::new(ip, 4500);
    let b: SocketAddr = "192.0.2.2:4500".parse().unwrap();
    assert!(
        logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("NAT on the new path: floating to 198.51.100.7:4500")),
        "{:?}",
        logs(&pair.events_a)
    );
    let (a_moves, b_moves) = (moves(&pair.events_a), moves(&pair.events_b));
    assert_eq!(
        a_moves.len(),
        1,
        "A moves once, from the NAT-T port: {a_moves:?}"
    );
    assert_eq!((a_moves[0].0, a_moves[0].1), (natt(inside), b));
    assert_eq!(
        (b_moves.last().unwrap().0, b_moves.last().unwrap().1),
        (b, natt(outside))
    );
    let encap = pair
        .events_a
        .iter()
        .any(|e| matches!(e, Event::IkeSaMoved { encap: true, .. }));
    assert!(encap, "ESP goes in UDP from now on");
}

// ---- Transport mode (RFC 7296 §1.3.1). ----

/// Whether the message carries USE_TRANSPORT_MODE.
fn asks_transport(m: &MessageRecord) -> bool {
    notify_types(m).contains(&NotifyType::USE_TRANSPORT_MODE)
}

/// A side's Child SA messages of one exchange (IKE SA rekeys left out): whether each
/// carries USE_TRANSPORT_MODE.
fn transport_notifies(events: &[Event], exchange: ExchangeType, response: bool) -> Vec<bool> {
    messages(events, true, exchange, response)
        .into_iter()
        .filter(|m| !rekeys_ike(m))
        .map(asks_transport)
        .collect()
}

/// Each Child SA a side brought up: transport mode or not.
fn modes(events: &[Event]) -> Vec<bool> {
    Pair::children(events).iter().map(|c| c.transport).collect()
}

#[test]
fn transport_children_on_both_sides_get_transport_mode_in_ike_auth_and_create_child_sa() {
    let spec = || Spec {
        transport: true,
        second_child: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), spec());
    pair.initiate();
    pair.drive();
    assert_eq!(pair.assert_converged(), 2);
    assert_eq!(modes(&pair.events_a), [true, true]);
    assert_eq!(modes(&pair.events_b), [true, true]);
    for exchange in [ExchangeType::IKE_AUTH, ExchangeType::CREATE_CHILD_SA] {
        assert_eq!(
            transport_notifies(&pair.events_a, exchange, false),
            [true],
            "{exchange} request"
        );
        assert_eq!(
            transport_notifies(&pair.events_b, exchange, true),
            [true],
            "{exchange} response"
        );
    }
}

#[test]
fn a_transport_initiator_deletes_the_tunnel_mode_child_sas_a_tunnel_responder_makes() {
    let a = Spec {
        transport: true,
        second_child: true,
        ..Spec::default()
    };
    let b = Spec {
        second_child: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, b);
    pair.initiate();
    pair.drive();
    for exchange in [ExchangeType::IKE_AUTH, ExchangeType::CREATE_CHILD_SA] {
        assert_eq!(transport_notifies(&pair.events_a, exchange, false), [true]);
        assert_eq!(transport_notifies(&pair.events_b, exchange, true), [false]);
    }
    // B made both in tunnel mode; A never installed them and had B delete them.
    assert_eq!(modes(&pair.events_b), [false, false]);
    assert!(Pair::children(&pair.events_a).is_empty());
    let made_by_b: Vec<u32> = Pair::children(&pair.events_b)
        .iter()
        .map(|c| c.spi_out)
        .collect();
    assert_eq!(deleted(&pair.events_a), made_by_b);
    let b_in: Vec<u32> = Pair::children(&pair.events_b)
        .iter()
        .map(|c| c.spi_in)
        .collect();
    assert_eq!(child_downs(&pair.events_b), b_in);
    let declined: Vec<&str> = pair
        .events_a
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaFailed {
                child,
                reason: Error::TransportModeDeclined,
                ..
            } => Some(child.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(declined, ["net", "net2"]);
    assert!(
        logs(&pair.events_b)
            .iter()
            .any(|l| l.contains("CHILD_SA net: the peer asks for transport mode, the child is configured for tunnel mode: tunnel mode")),
        "{:?}",
        logs(&pair.events_b)
    );
    assert_eq!(pair.assert_converged(), 0);
}

#[test]
fn a_tunnel_initiator_gets_tunnel_mode_from_a_transport_responder_and_its_rekey_keeps_it() {
    let b = Spec {
        transport: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(Spec::default(), b);
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    assert_eq!(
        transport_notifies(&pair.events_a, ExchangeType::IKE_AUTH, false),
        [false]
    );
    assert_eq!(
        transport_notifies(&pair.events_b, ExchangeType::IKE_AUTH, true),
        [false]
    );
    assert!(logs(&pair.events_b).iter().any(|l| l.contains(
        "the peer asks for tunnel mode, the child is configured for transport mode: tunnel mode"
    )));
    // B rekeys the SA as it is, in tunnel mode, whatever its child's configuration.
    let old_b = pair.live(Side::B)[0];
    pair.expire(Side::B, old_b, false);
    pair.drive();
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(
        transport_notifies(&pair.events_b, ExchangeType::CREATE_CHILD_SA, false),
        [false]
    );
    assert_eq!(modes(&pair.events_a), [false, false]);
    assert_eq!(modes(&pair.events_b), [false, false]);
}

#[test]
fn rekeys_of_a_transport_child_sa_by_either_side_stay_in_transport_mode() {
    let a = Spec {
        transport: true,
        lifetime: soft_hard(600, 660),
        ike_lifetime: ike_rekey_after(400),
        ..Spec::default()
    };
    let b = Spec {
        transport: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(a, b);
    pair.initiate();
    // The IKE SA rekeys at 400 s, taking the Child SA along; A rekeys that at 600 s.
    pair.run_until(secs(630));
    assert_eq!(rekeyed(&pair.events_a).len(), 1);
    let old_b = *pair.live(Side::B).last().unwrap();
    pair.expire(Side::B, old_b, false);
    pair.run_for(5);
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(modes(&pair.events_a), [true, true, true]);
    assert_eq!(modes(&pair.events_b), [true, true, true]);
    for side in [Side::A, Side::B] {
        assert_eq!(
            transport_notifies(pair.events(side), ExchangeType::CREATE_CHILD_SA, false),
            [true],
            "{side:?}'s rekey request"
        );
        assert_eq!(
            transport_notifies(
                pair.events(other(side)),
                ExchangeType::CREATE_CHILD_SA,
                true
            ),
            [true],
            "the answer to {side:?}'s rekey"
        );
    }
}

// ---- Per-resource Child SAs (RFC 9611). ----

/// A pair whose data planes have `a` and `b` resources (workers), the children as
/// `spec(true)` for A and `spec(false)` for B make them.
fn with_resources(a: u32, b: u32, spec: impl Fn(bool) -> Spec) -> Pair {
    let resources = |r| Settings {
        resources: r,
        ..settings()
    };
    Pair::with_settings(
        policy(spec(true), true),
        policy(spec(false), false),
        resources(a),
        resources(b),
        1,
    )
}

/// Each installed inbound SPI's resource (`SPI % resources`), sorted.
fn resources_of(spis: &[u32], resources: u32) -> Vec<u32> {
    let mut r: Vec<u32> = spis.iter().map(|s| s % resources).collect();
    r.sort_unstable();
    r
}

#[test]
fn peers_that_both_offer_per_resource_sas_get_one_per_worker_and_rekeys_keep_the_worker() {
    let spec = |_| Spec {
        lifetime: soft_hard(600, 660),
        per_resource: true,
        ..Spec::default()
    };
    let mut pair = with_resources(3, 3, spec);
    pair.initiate();
    pair.run_until(secs(5));
    assert_eq!(pair.assert_converged(), 3, "one Child SA per worker");
    assert_eq!(resources_of(&pair.live(Side::A), 3), [0, 1, 2]);
    assert_eq!(resources_of(&pair.live(Side::B), 3), [0, 1, 2]);
    assert!(
        Pair::children(&pair.events_a)
            .iter()
            .all(|c| c.per_resource)
    );
    assert!(
        Pair::children(&pair.events_b)
            .iter()
            .all(|c| c.per_resource)
    );
    let sent = |m: &MessageRecord| m.exchange == ExchangeType::CREATE_CHILD_SA && m.sent;
    let created = pair
        .events_a
        .iter()
        .filter(|e| matches!(e, Event::Message(m) if sent(m) && !m.response))
        .count();
    assert_eq!(created, 2, "the initiator adds two SAs to the first");
    // Each SA is rekeyed on its own, into an SA for the same worker on both sides.
    pair.run_until(secs(700));
    assert_eq!(pair.assert_converged(), 3);
    assert_eq!(resources_of(&pair.live(Side::A), 3), [0, 1, 2]);
    assert_eq!(resources_of(&pair.live(Side::B), 3), [0, 1, 2]);
    // Both sides rekey at their soft limits; collisions make some SAs twice.
    assert!(
        Pair::children(&pair.events_a).len() >= 6,
        "every SA rekeyed"
    );
    assert!(
        Pair::children(&pair.events_a)
            .iter()
            .all(|c| c.per_resource)
    );
}

#[test]
fn a_per_resource_sa_the_peer_deletes_outright_is_replaced_on_its_worker() {
    let spec = |_| Spec {
        per_resource: true,
        ..Spec::default()
    };
    let mut pair = with_resources(3, 3, spec);
    pair.initiate();
    pair.run_until(secs(5));
    assert_eq!(pair.assert_converged(), 3);
    // B's data plane ends one SA at its hard limit: B deletes it, A adds one back.
    let gone = pair.live(Side::B)[0];
    pair.expire(Side::B, gone, true);
    pair.run_until(secs(10));
    assert_eq!(child_downs(&pair.events_b), vec![gone]);
    assert_eq!(pair.assert_converged(), 3, "one Child SA per worker again");
    assert_eq!(resources_of(&pair.live(Side::A), 3), [0, 1, 2]);
    assert_eq!(resources_of(&pair.live(Side::B), 3), [0, 1, 2]);
}

#[test]
fn a_peer_without_per_resource_sas_gets_one_child_sa() {
    // (A's resources, B's, A's child asks for them, B's child grants them)
    for (a, b, on_a, on_b) in [
        (4, 1, true, true),
        (1, 4, true, true),
        (4, 4, true, false),
        (4, 4, false, true),
    ] {
        let spec = |is_a| Spec {
            per_resource: if is_a { on_a } else { on_b },
            ..Spec::default()
        };
        let mut pair = with_resources(a, b, spec);
        pair.initiate();
        pair.drive();
        pair.assert_tunnel();
        assert!(!Pair::children(&pair.events_a)[0].per_resource);
        assert!(!Pair::children(&pair.events_b)[0].per_resource);
    }
}

#[test]
fn spread_children_mark_their_inbound_spis_and_rekeys_keep_the_mark() {
    // A spreads, B does not; both have two workers.
    let spec = |is_a| Spec {
        lifetime: soft_hard(600, 660),
        spread: is_a,
        ..Spec::default()
    };
    let mut pair = with_resources(2, 2, spec);
    pair.initiate();
    pair.run_until(secs(5));
    assert_eq!(pair.assert_converged(), 1);
    let marked = |spis: &[u32]| {
        spis.iter()
            .map(|&s| esptun::ike::is_spread(s))
            .collect::<Vec<_>>()
    };
    assert_eq!(marked(&pair.live(Side::A)), [true]);
    assert_eq!(marked(&pair.live(Side::B)), [false]);
    pair.run_until(secs(700));
    assert_eq!(pair.assert_converged(), 1);
    assert!(Pair::children(&pair.events_a).len() >= 2, "rekeyed");
    assert_eq!(marked(&pair.live(Side::A)), [true]);
    assert_eq!(marked(&pair.live(Side::B)), [false]);
    // B spreads, as the responder: the SPIs it answers with are marked too.
    let mut pair = with_resources(2, 2, |is_a| Spec {
        spread: !is_a,
        ..spec(true)
    });
    pair.initiate();
    pair.run_until(secs(700));
    assert_eq!(pair.assert_converged(), 1);
    assert_eq!(marked(&pair.live(Side::A)), [false]);
    assert_eq!(marked(&pair.live(Side::B)), [true]);
}

#[test]
fn spreading_needs_several_resources_and_yields_to_per_resource_sas() {
    // One worker: nothing to spread over.
    let mut pair = with_resources(1, 1, |_| Spec {
        spread: true,
        ..Spec::default()
    });
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    assert!(!esptun::ike::is_spread(pair.live(Side::A)[0]));
    // Both do RFC 9611: the responder's SAs are per-resource, none spread; the
    // initiator's first was spread before it knew, its added ones are not.
    let mut pair = with_resources(2, 2, |_| Spec {
        spread: true,
        per_resource: true,
        ..Spec::default()
    });
    pair.initiate();
    pair.run_until(secs(5));
    assert_eq!(pair.assert_converged(), 2);
    assert!(
        !pair
            .live(Side::B)
            .iter()
            .any(|&s| esptun::ike::is_spread(s))
    );
    let spread_a = pair
        .live(Side::A)
        .iter()
        .filter(|&&s| esptun::ike::is_spread(s))
        .count();
    assert_eq!(spread_a, 1);
    assert_eq!(resources_of(&pair.live(Side::A), 2), [0, 1]);
}

#[test]
fn a_responder_refuses_per_resource_sas_beyond_its_limit_with_ts_max_queue() {
    let spec = |_| Spec {
        per_resource: true,
        ..Spec::default()
    };
    let mut pair = with_resources(70, 2, spec);
    pair.initiate();
    pair.drive();
    assert_eq!(pair.assert_converged(), 64, "the responder's limit");
    let refused = |e: &Event| {
        matches!(e, Event::Message(m) if m.sent && m.response
            && m.payloads.iter().any(|p| matches!(p, Payload::Notify(n)
                if n.notify_type == NotifyType::TS_MAX_QUEUE)))
    };
    assert!(pair.events_b.iter().any(refused));
    assert!(
        logs(&pair.events_a)
            .iter()
            .any(|l| l.contains("no further per-resource SA: the peer keeps no more of them"))
    );
    assert!(
        !pair
            .events_a
            .iter()
            .any(|e| matches!(e, Event::ChildSaFailed { .. })),
        "the child is up"
    );
    // Its SAs spread over the responder's two workers evenly.
    let on_b = resources_of(&pair.live(Side::B), 2);
    assert_eq!(on_b.iter().filter(|&&r| r == 0).count(), 32);
}
