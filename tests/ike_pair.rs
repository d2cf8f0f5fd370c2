//! Two endpoints in memory, in virtual time: whole IKE SAs negotiated with loss,
//! duplication and reordering injected, and what each side would install recorded.

mod common;

use common::pki::{Alg, Ca, Leaf, NOW};
use esptun::auth::identity;
use esptun::auth::private_key::PrivateKey;
use esptun::auth::x509::TrustAnchors;
use esptun::crypto::Secret;
use esptun::crypto::SeededRandom;
use esptun::ike::exchange::RetransmitPolicy;
use esptun::ike::{
    Action, ChildPolicy, ChildSaUp, DownReason, Endpoint, Event, IkeLifetime, Instant, Lifetime,
    Limits, LocalAuth, Policy, RemoteAuth, Settings, Transmit,
};
use esptun::ike::{Error, proposal};
use esptun::wire::payload::{AddrRange, TsRange};
use esptun::wire::{ExchangeType, NotifyType, ProtocolId};
use std::collections::VecDeque;
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
            id: Some(identity::parse(peer).unwrap()),
            psk: Secret::from_slice(spec.psk),
        },
        children: vec![ChildPolicy {
            name: "net".into(),
            local_ts,
            remote_ts,
            esp_proposals: proposal::parse_all(&strings(&spec.esp), ProtocolId::ESP).unwrap(),
            lifetime: spec.lifetime,
            rand_time: Duration::ZERO,
            start_action: Action::None,
            dpd_action: Action::None,
            close_action: Action::None,
        }],
        ike_lifetime: spec.ike_lifetime,
        dpd_delay: spec.dpd_delay,
        keyingtries: 0,
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
            id: auth.peer_id.map(|id| identity::parse(id).unwrap()),
            anchors: Arc::new(TrustAnchors::new(vec![auth.trusted_ca]).unwrap()),
        },
        children: p.children.clone(),
        ike_lifetime: p.ike_lifetime,
        dpd_delay: p.dpd_delay,
        keyingtries: p.keyingtries,
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

struct Pair {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    wire: VecDeque<(Side, Transmit)>,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
}

impl Pair {
    fn new(a: Arc<Policy>, b: Arc<Policy>, settings_b: Settings) -> Self {
        Self {
            now: Instant::default(),
            a: Endpoint::new(settings(), vec![a], Box::new(SeededRandom::new(1))),
            b: Endpoint::new(settings_b, vec![b], Box::new(SeededRandom::new(2))),
            wire: VecDeque::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
        }
    }

    fn psk(spec_a: Spec, spec_b: Spec) -> Self {
        Self::new(policy(spec_a, true), policy(spec_b, false), settings())
    }

    fn initiate(&mut self) {
        self.a
            .initiate(self.now, 0, A.parse().unwrap(), B.parse().unwrap())
            .unwrap();
        self.collect();
    }

    /// Moves what both endpoints want to send onto the wire, and their events into the logs.
    fn collect(&mut self) {
        while let Some(t) = self.a.poll_transmit() {
            self.wire.push_back((Side::B, t));
        }
        while let Some(t) = self.b.poll_transmit() {
            self.wire.push_back((Side::A, t));
        }
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
    }

    fn deliver(&mut self, (to, t): (Side, Transmit)) {
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
fn forced_encapsulation_floats_both_sides_to_4500() {
    let spec = || Spec {
        encap: true,
        ..Spec::default()
    };
    let mut pair = Pair::psk(spec(), Spec::default());
    pair.initiate();
    pair.drive();
    pair.assert_tunnel();
    for child in Pair::children(&pair.events_a)
        .into_iter()
        .chain(Pair::children(&pair.events_b))
    {
        assert!(child.encap);
        assert_eq!((child.local.port(), child.remote.port()), (4500, 4500));
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
