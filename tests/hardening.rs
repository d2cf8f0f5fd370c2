//! The engine under hostile input, in memory and virtual time: downgrades through
//! a second connection, and answers naming transforms we never offered.

use esptun::crypto::sk::{open_message, seal_message};
use esptun::crypto::{SeededRandom, SkKey};
use esptun::ike::exchange::RetransmitPolicy;
use esptun::ike::{
    Action, ChildPolicy, DownReason, Endpoint, Error, Event, IkeLifetime, IkeSaUp, Instant,
    Lifetime, LocalAuth, Policy, RemoteAuth, Settings, Transmit, proposal,
};
use esptun::wire::payload::{Payload, Transform};
use esptun::wire::{EncrId, ExchangeType, KeGroup, Message, NotifyType, ProtocolId, TransformType};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The gateway under test.
const GW: &str = "192.0.2.2:500";
/// Its peers.
const ALICE: &str = "192.0.2.1:500";
const BOB: &str = "192.0.2.3:500";

/// A PSK connection between `me` and `peer` with one dynamic child.
struct Conn {
    name: &'static str,
    me: &'static str,
    peer: Option<&'static str>,
    proposals: &'static [&'static str],
    esp: &'static [&'static str],
    psk: &'static [u8],
    ike_lifetime: IkeLifetime,
}

impl Default for Conn {
    fn default() -> Self {
        Self {
            name: "site",
            me: "gw.example",
            peer: None,
            proposals: &["aes128gcm16-prfsha256-x25519"],
            esp: &["aes128gcm16"],
            psk: b"a shared secret of decent length",
            ike_lifetime: IkeLifetime {
                rekey_time: None,
                ..IkeLifetime::default()
            },
        }
    }
}

fn policy(c: Conn) -> Arc<Policy> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let id = |s: &str| esptun::auth::identity::parse(s).unwrap();
    let psk = esptun::crypto::Secret::from_slice(c.psk);
    Arc::new(Policy {
        name: c.name.into(),
        local_addrs: Vec::new(),
        remote_addrs: Vec::new(),
        proposals: proposal::parse_all(&strings(c.proposals), ProtocolId::IKE).unwrap(),
        encap: false,
        fragment_size: 1280,
        local: LocalAuth::Psk {
            id: id(c.me),
            psk: psk.clone(),
        },
        remote: RemoteAuth::Psk {
            id: c.peer.map(id),
            psk,
        },
        children: vec![ChildPolicy {
            name: "net".into(),
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            esp_proposals: proposal::parse_all(&strings(c.esp), ProtocolId::ESP).unwrap(),
            lifetime: Lifetime::default(),
            rand_time: Duration::ZERO,
            start_action: Action::None,
            dpd_action: Action::None,
            close_action: Action::None,
        }],
        ike_lifetime: c.ike_lifetime,
        dpd_delay: None,
        keyingtries: 1,
    })
}

/// A client of the gateway: it is `me`, the gateway is gw.example.
fn client(me: &'static str, proposals: &'static [&'static str]) -> Arc<Policy> {
    policy(Conn {
        me,
        peer: Some("gw.example"),
        proposals,
        ..Conn::default()
    })
}

fn settings() -> Settings {
    Settings {
        retransmit: RetransmitPolicy {
            jitter_percent: 0,
            ..RetransmitPolicy::default()
        },
        ..Settings::default()
    }
}

struct Node {
    addr: SocketAddr,
    endpoint: Endpoint,
    events: Vec<Event>,
}

impl Node {
    fn logs(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Log { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn messages_sent(&self, exchange: ExchangeType, response: bool) -> usize {
        self.events
            .iter()
            .filter(|e| {
                matches!(e, Event::Message(m)
                if m.sent && m.exchange == exchange && m.response == response)
            })
            .count()
    }

    fn ike_up(&self) -> Vec<&IkeSaUp> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::IkeSaUp(up) => Some(up.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn children_up(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::ChildSaUp(_)))
            .count()
    }

    fn downs(&self) -> Vec<DownReason> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::IkeSaDown { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Endpoints by address, the datagrams in flight between them, virtual time.
struct Net {
    now: Instant,
    nodes: Vec<Node>,
    wire: VecDeque<Transmit>,
}

impl Net {
    fn new() -> Self {
        Self {
            now: Instant::default(),
            nodes: Vec::new(),
            wire: VecDeque::new(),
        }
    }

    /// Adds an endpoint at `addr`; returns its index.
    fn add(&mut self, addr: &str, settings: Settings, policies: Vec<Arc<Policy>>) -> usize {
        let rng = SeededRandom::new(self.nodes.len() as u64 + 1);
        self.nodes.push(Node {
            addr: addr.parse().unwrap(),
            endpoint: Endpoint::new(settings, policies, Box::new(rng)),
            events: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn initiate(&mut self, node: usize, to: usize) {
        let (from, to) = (self.nodes[node].addr, self.nodes[to].addr);
        self.nodes[node]
            .endpoint
            .initiate(self.now, 0, from, to)
            .unwrap();
        self.collect();
    }

    fn collect(&mut self) {
        for node in &mut self.nodes {
            while let Some(t) = node.endpoint.poll_transmit() {
                self.wire.push_back(t);
            }
            while let Some(e) = node.endpoint.poll_event() {
                node.events.push(e);
            }
        }
    }

    /// Hands `t` to the endpoint at its destination, which sees the sender's
    /// addresses unchanged; a datagram for nobody is lost.
    fn deliver(&mut self, t: Transmit) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.addr.ip() == t.remote.ip()) {
            node.endpoint.handle(self.now, t.remote, t.local, &t.data);
        }
        self.collect();
    }

    /// Delivers what is in flight until nothing is, except what `keep` refuses.
    fn run(&mut self, mut keep: impl FnMut(&Transmit) -> bool) {
        for _ in 0..100_000 {
            let Some(t) = self.wire.pop_front() else {
                return;
            };
            if keep(&t) {
                self.deliver(t);
            }
        }
        panic!("no quiescence");
    }

    /// Runs the clock to `until`, delivering everything on the way.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.run(|_| true);
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.endpoint.poll_timeout())
                .min();
            match next {
                Some(next) if next <= until => {
                    self.now = self.now.max(next);
                    for node in &mut self.nodes {
                        node.endpoint.handle_timeout(self.now);
                    }
                    self.collect();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
    }

    fn after(&self, d: Duration) -> Instant {
        self.now + d
    }
}

fn exchange(t: &Transmit) -> ExchangeType {
    Message::decode(&t.data).unwrap().header.exchange
}

#[test]
fn identities_cannot_lead_to_a_connection_that_refuses_the_ike_proposal() {
    let weak = &["aes128-sha256-prfsha1-modp2048"];
    let strict = &["aes256gcm16-prfsha384-ecp384"];
    let gateway = || {
        vec![
            policy(Conn {
                name: "open",
                peer: Some("open.example"),
                proposals: weak,
                ..Conn::default()
            }),
            policy(Conn {
                name: "strict",
                peer: Some("strict.example"),
                proposals: strict,
                psk: b"the strict connection's own key",
                ..Conn::default()
            }),
        ]
    };
    let strict_client = |proposals| {
        policy(Conn {
            me: "strict.example",
            peer: Some("gw.example"),
            proposals,
            psk: b"the strict connection's own key",
            ..Conn::default()
        })
    };
    // The strict connection's peer offering the weak suite that "open" accepts.
    let mut net = Net::new();
    let gw = net.add(GW, settings(), gateway());
    let peer = net.add(ALICE, settings(), vec![strict_client(weak)]);
    net.initiate(peer, gw);
    net.run_until(net.after(Duration::from_secs(60)));
    assert!(net.nodes[gw].ike_up().is_empty(), "no IKE SA on 'strict'");
    assert_eq!(
        net.nodes[peer].downs(),
        [DownReason::Refused(NotifyType::AUTHENTICATION_FAILED)]
    );
    assert!(
        net.nodes[gw]
            .logs()
            .iter()
            .any(|l| l.contains("strict.example") && l.contains("allows this IKE SA's proposal")),
        "{:?}",
        net.nodes[gw].logs()
    );
    // With its own suite it comes up, on "strict"; "open" still works with its suite.
    let mut net = Net::new();
    let gw = net.add(GW, settings(), gateway());
    let peer = net.add(ALICE, settings(), vec![strict_client(strict)]);
    let open = net.add(BOB, settings(), vec![client("open.example", weak)]);
    net.initiate(peer, gw);
    net.initiate(open, gw);
    net.run(|_| true);
    let ups: Vec<(&str, String)> = net.nodes[gw]
        .ike_up()
        .iter()
        .map(|u| (u.connection.as_str(), u.suite.to_string()))
        .collect();
    assert_eq!(ups.len(), 2, "{ups:?}");
    assert!(ups.contains(&("strict", net.nodes[peer].ike_up()[0].suite.to_string())));
    assert_eq!(net.nodes[peer].ike_up()[0].suite.group, KeGroup::ECP_384);
    assert!(ups.iter().any(|(c, _)| *c == "open"));
}

/// The gateway's keys for what it sends, from its IkeSaUp.
fn responder_key(up: &IkeSaUp) -> SkKey {
    SkKey::new(
        up.suite.encr,
        up.suite.integ,
        &up.keys.sk_er,
        &up.keys.sk_ar,
    )
    .unwrap()
}

/// Decrypts a protected message of the gateway, lets `edit` change its payloads,
/// and encrypts it again with the same keys: what a responder that misbehaves
/// (or holds the keys) could send.
fn tamper(t: &Transmit, up: &IkeSaUp, edit: impl FnOnce(&mut Vec<Payload>)) -> Transmit {
    let message = Message::decode(&t.data).unwrap();
    let Some(Payload::Sk(sk)) = message.payloads.last() else {
        panic!("not protected");
    };
    let mut key = responder_key(up);
    let mut inner = open_message(&key, &t.data, sk).unwrap();
    edit(&mut inner);
    let data = seal_message(&mut key, &message.header, &inner, &mut SeededRandom::new(9)).unwrap();
    Transmit { data, ..t.clone() }
}

/// Puts `extra` first among the chosen proposal's transforms.
fn add_transform(payloads: &mut [Payload], extra: Transform) {
    for p in payloads {
        if let Payload::Sa(sa) = p {
            sa.proposals[0].transforms.insert(0, extra.clone());
        }
    }
}

fn aes_gcm_256() -> Transform {
    Transform::with_key_length(TransformType::ENCR, EncrId::AES_GCM_16.0, 256)
}

fn child_failed_with(events: &[Event], error: Error) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::ChildSaFailed { reason, .. } if *reason == error))
}

/// Alice and the gateway, alice offering only aes128gcm16 for ESP.
fn pair() -> (Net, usize, usize) {
    let mut net = Net::new();
    let gw = net.add(GW, settings(), vec![policy(Conn::default())]);
    let alice = net.add(
        ALICE,
        settings(),
        vec![policy(Conn {
            me: "alice.example",
            peer: Some("gw.example"),
            ike_lifetime: IkeLifetime {
                rekey_time: Some(Duration::from_secs(600)),
                over_time: Duration::from_secs(600),
                rand_time: Duration::ZERO,
            },
            ..Conn::default()
        })],
    );
    (net, gw, alice)
}

/// Runs the wire, passing the gateway's responses of `exchange` through `edit`.
fn run_tampering(
    net: &mut Net,
    gw: usize,
    exchange_type: ExchangeType,
    edit: fn(&mut Vec<Payload>),
) {
    let gw_addr = net.nodes[gw].addr;
    while let Some(t) = net.wire.pop_front() {
        let t = if t.local == gw_addr && exchange(&t) == exchange_type {
            let up = net.nodes[gw].ike_up()[0];
            tamper(&t, up, edit)
        } else {
            t
        };
        net.deliver(t);
    }
}

#[test]
fn an_esp_transform_never_offered_is_refused_in_ike_auth() {
    let (mut net, gw, alice) = pair();
    net.initiate(alice, gw);
    run_tampering(&mut net, gw, ExchangeType::IKE_AUTH, |p| {
        add_transform(p, aes_gcm_256())
    });
    let node = &net.nodes[alice];
    assert_eq!(node.ike_up().len(), 1);
    assert_eq!(node.children_up(), 0, "nothing installed");
    assert!(child_failed_with(&node.events, Error::NoProposalChosen));
}

#[test]
fn an_esp_transform_never_offered_is_refused_in_create_child_sa() {
    let (mut net, gw, alice) = pair();
    net.initiate(alice, gw);
    net.run(|_| true);
    assert_eq!(net.nodes[alice].children_up(), 1);
    let spi_in = net.nodes[alice]
        .events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaUp(c) => Some(c.spi_in),
            _ => None,
        })
        .unwrap();
    net.nodes[alice]
        .endpoint
        .expire_child(net.now, spi_in, false, "test");
    net.collect();
    run_tampering(&mut net, gw, ExchangeType::CREATE_CHILD_SA, |p| {
        add_transform(p, aes_gcm_256())
    });
    let node = &net.nodes[alice];
    assert_eq!(node.children_up(), 1, "the rekey installed nothing");
    assert!(
        node.logs()
            .iter()
            .any(|l| l.contains("rekey failed: no acceptable proposal")),
        "{:?}",
        node.logs()
    );
}

#[test]
fn an_ike_transform_never_offered_is_refused_in_ike_sa_init() {
    let (mut net, gw, alice) = pair();
    net.initiate(alice, gw);
    let gw_addr = net.nodes[gw].addr;
    while let Some(mut t) = net.wire.pop_front() {
        if t.local == gw_addr && exchange(&t) == ExchangeType::IKE_SA_INIT {
            let mut m = Message::decode(&t.data).unwrap();
            add_transform(&mut m.payloads, aes_gcm_256());
            t.data = m.encode().unwrap();
        }
        net.deliver(t);
    }
    let node = &net.nodes[alice];
    assert!(node.ike_up().is_empty());
    assert_eq!(node.downs(), [DownReason::Failed(Error::NoProposalChosen)]);
    assert_eq!(node.messages_sent(ExchangeType::IKE_AUTH, false), 0);
}

#[test]
fn an_ike_transform_never_offered_is_refused_in_an_ike_rekey() {
    let (mut net, gw, alice) = pair();
    net.initiate(alice, gw);
    net.run(|_| true);
    assert_eq!(net.nodes[alice].ike_up().len(), 1);
    // Up to just past alice's rekey_time, with the gateway's answer altered.
    let rekey_at = net.after(Duration::from_secs(601));
    while net.now < rekey_at {
        run_tampering(&mut net, gw, ExchangeType::CREATE_CHILD_SA, |p| {
            add_transform(p, aes_gcm_256())
        });
        let next = net.nodes[alice].endpoint.poll_timeout().unwrap();
        net.now = next.min(rekey_at);
        for node in &mut net.nodes {
            node.endpoint.handle_timeout(net.now);
        }
        net.collect();
    }
    run_tampering(&mut net, gw, ExchangeType::CREATE_CHILD_SA, |p| {
        add_transform(p, aes_gcm_256())
    });
    let node = &net.nodes[alice];
    assert!(
        node.messages_sent(ExchangeType::CREATE_CHILD_SA, false) >= 1,
        "alice tried to rekey"
    );
    assert!(
        !node
            .events
            .iter()
            .any(|e| matches!(e, Event::IkeSaRekeyed { .. })),
        "no IKE SA keyed from the altered answer"
    );
    assert!(
        node.logs()
            .contains(&"IKE_SA rekey failed: no acceptable proposal"),
        "{:?}",
        node.logs()
    );
}
