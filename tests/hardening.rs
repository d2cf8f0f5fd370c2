//! The engine under hostile input, in memory and virtual time: what an
//! unauthenticated IKE_SA_INIT may cost, who may hold half-open SAs, what a flood
//! (or forged messages on a known SA) writes to the log, the COOKIE secret's
//! rotation, downgrades through a second connection, answers naming transforms we
//! never offered, and the configuration of the limits.

use esptun::auth::identity::RemoteId;
use esptun::config::Config;
use esptun::crypto::sk::{open_message, seal_message};
use esptun::crypto::{Random, SeededRandom, SkKey};
use esptun::ike::exchange::RetransmitPolicy;
use esptun::ike::{
    ChildPolicy, DownReason, Endpoint, Error, Event, IkeLifetime, IkeSaUp, Instant, LocalAuth,
    Policy, RemoteAuth, Settings, Transmit, proposal,
};
use esptun::wire::payload::{NotifyPayload, Payload, Transform};
use esptun::wire::{
    EncrId, ExchangeType, IkeSpi, KeGroup, Message, NotifyType, ProtocolId, TransformType,
};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The gateway under test.
const GW: &str = "192.0.2.2:500";
/// Its peers.
const ALICE: &str = "192.0.2.1:500";
const BOB: &str = "192.0.2.3:500";
const CAROL: &str = "192.0.2.4:500";
const MALLORY: &str = "198.51.100.66:500";

/// The MODP-2048 private exponent is drawn in one piece of this many octets
/// (224 bits); no other draw of the engine has this size (SPIs 8, nonces and
/// secrets 32), so counting such draws counts MODP-2048 key generations.
const MODP2048_EXPONENT: usize = 28;

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
            id: c.peer.map_or(RemoteId::Any, |p| RemoteId::Exact(id(p))),
            psk,
        },
        children: vec![ChildPolicy {
            name: "net".into(),
            esp_proposals: proposal::parse_all(&strings(c.esp), ProtocolId::ESP).unwrap(),
            ..ChildPolicy::default()
        }],
        ike_lifetime: c.ike_lifetime,
        dpd_delay: None,
        keyingtries: 1,
        pools: Vec::new(),
        vips: Vec::new(),
        mobike: true,
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

/// A seeded generator that records the size of every draw.
struct Counting {
    inner: SeededRandom,
    draws: Arc<Mutex<Vec<usize>>>,
}

impl Random for Counting {
    fn fill(&mut self, out: &mut [u8]) {
        self.draws.lock().unwrap().push(out.len());
        self.inner.fill(out);
    }
}

struct Node {
    addr: SocketAddr,
    endpoint: Endpoint,
    events: Vec<Event>,
    draws: Arc<Mutex<Vec<usize>>>,
}

impl Node {
    /// Draws of `size` octets so far.
    fn draws_of(&self, size: usize) -> usize {
        self.draws
            .lock()
            .unwrap()
            .iter()
            .filter(|d| **d == size)
            .count()
    }

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
        let draws = Arc::new(Mutex::new(Vec::new()));
        let rng = Counting {
            inner: SeededRandom::new(self.nodes.len() as u64 + 1),
            draws: draws.clone(),
        };
        self.nodes.push(Node {
            addr: addr.parse().unwrap(),
            endpoint: Endpoint::new(settings, policies, Box::new(rng)),
            events: Vec::new(),
            draws,
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

    /// A datagram that arrives at `to` from `from`, whoever sent it.
    fn inject(&mut self, to: usize, from: &str, data: &[u8]) {
        let (local, remote) = (self.nodes[to].addr, from.parse().unwrap());
        self.nodes[to]
            .endpoint
            .handle(self.now, local, remote, data);
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

fn notify_of(t: &Transmit) -> Option<NotifyType> {
    Message::decode(&t.data)
        .unwrap()
        .payloads
        .iter()
        .find_map(|p| match p {
            Payload::Notify(n) => Some(n.notify_type),
            _ => None,
        })
}

fn ke_of(data: &[u8]) -> Option<Vec<u8>> {
    Message::decode(data)
        .unwrap()
        .payloads
        .iter()
        .find_map(|p| match p {
            Payload::Ke(k) => Some(k.data.clone()),
            _ => None,
        })
}

/// A real IKE_SA_INIT request for `proposals`, to forge others from.
fn init_request(proposals: &'static [&'static str]) -> Message {
    let mut net = Net::new();
    let a = net.add(ALICE, settings(), vec![client("alice.example", proposals)]);
    let gw = net.add(GW, settings(), Vec::new());
    net.initiate(a, gw);
    let t = net.wire.pop_front().unwrap();
    Message::decode(&t.data).unwrap()
}

/// `template` from another initiator SPI, with `edit` applied to its payloads.
fn forge(template: &Message, spi_i: u64, edit: impl FnOnce(&mut Vec<Payload>)) -> Vec<u8> {
    let mut m = template.clone();
    m.header.spi_i = IkeSpi(spi_i);
    edit(&mut m.payloads);
    m.encode().unwrap()
}

fn set_ke(payloads: &mut [Payload], data: Vec<u8>) {
    for p in payloads {
        if let Payload::Ke(k) = p {
            k.data = data.clone();
        }
    }
}

#[test]
fn a_bad_ke_is_refused_before_any_exponentiation() {
    let modp = &["aes256-sha256-modp2048"];
    let template = init_request(modp);
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 1000,
            half_open_limit: 2000,
            ..settings()
        },
        vec![policy(Conn {
            proposals: modp,
            ..Conn::default()
        })],
    );
    let bad_values = [Vec::new(), vec![2; 255], vec![0; 256], vec![0xff; 256]];
    for i in 0..100u64 {
        let ke = bad_values[i as usize % bad_values.len()].clone();
        let request = forge(&template, 1000 + i, |p| set_ke(p, ke));
        net.inject(gw, ALICE, &request);
    }
    let replies: Vec<Transmit> = net.wire.drain(..).collect();
    assert_eq!(replies.len(), 100);
    assert!(
        replies
            .iter()
            .all(|t| notify_of(t) == Some(NotifyType::INVALID_SYNTAX))
    );
    assert_eq!(net.nodes[gw].endpoint.half_open(), 0);
    assert_eq!(
        net.nodes[gw].draws_of(MODP2048_EXPONENT),
        0,
        "no key pair generated for a KE that fails its checks"
    );

    // With COOKIEs on, a request without one costs no key exchange at all.
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 0,
            ..settings()
        },
        vec![policy(Conn {
            proposals: modp,
            ..Conn::default()
        })],
    );
    for i in 0..20 {
        net.inject(gw, ALICE, &forge(&template, 5000 + i, |_| {}));
    }
    assert!(
        net.wire
            .iter()
            .all(|t| notify_of(t) == Some(NotifyType::COOKIE))
    );
    assert_eq!(net.nodes[gw].draws_of(MODP2048_EXPONENT), 0);
}

#[test]
fn one_exponentiation_serves_many_ike_sa_inits_and_each_sa_has_its_own_keys() {
    let modp = &["aes256-sha256-modp2048"];
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 1000,
            half_open_limit: 2000,
            ..settings()
        },
        vec![policy(Conn {
            proposals: modp,
            ..Conn::default()
        })],
    );
    let template = init_request(modp);
    for i in 0..50 {
        net.inject(gw, MALLORY, &forge(&template, 7000 + i, |_| {}));
    }
    let values: Vec<Vec<u8>> = net.wire.drain(..).filter_map(|t| ke_of(&t.data)).collect();
    assert_eq!(values.len(), 50);
    assert!(values.iter().all(|v| *v == values[0]), "one value reused");
    assert_eq!(net.nodes[gw].endpoint.half_open(), 50);
    assert_eq!(net.nodes[gw].draws_of(MODP2048_EXPONENT), 1);

    // Real peers get the same value from the gateway, and still keys of their own.
    let peers: Vec<usize> = [(ALICE, "alice.example"), (BOB, "bob.example")]
        .into_iter()
        .map(|(addr, id)| net.add(addr, settings(), vec![client(id, modp)]))
        .collect();
    for &p in &peers {
        net.initiate(p, gw);
    }
    let mut gateway_values = Vec::new();
    net.run(|t| {
        if exchange(t) == ExchangeType::IKE_SA_INIT && t.local.to_string() == GW {
            gateway_values.extend(ke_of(&t.data));
        }
        true
    });
    assert_eq!(gateway_values, [values[0].clone(), values[0].clone()]);
    let (a, b) = (
        net.nodes[peers[0]].ike_up()[0],
        net.nodes[peers[1]].ike_up()[0],
    );
    assert_ne!(a.keys, b.keys);
    assert_eq!(net.nodes[gw].ike_up().len(), 2);
    assert_eq!(net.nodes[gw].draws_of(MODP2048_EXPONENT), 1);

    // Its time over, the value is dropped and the next IKE_SA_INIT gets a new one.
    let later = net.after(Duration::from_secs(31));
    net.run_until(later);
    net.inject(gw, MALLORY, &forge(&template, 9999, |_| {}));
    let fresh = ke_of(&net.wire.pop_front().unwrap().data).unwrap();
    assert_ne!(fresh, values[0]);
    assert_eq!(net.nodes[gw].draws_of(MODP2048_EXPONENT), 2);
}

#[test]
fn refused_ike_sa_inits_count_toward_the_cookie_threshold() {
    let mut net = Net::new();
    let gw = net.add(GW, settings(), vec![policy(Conn::default())]);
    // Nothing the gateway accepts: each is refused and leaves no half-open SA.
    let unacceptable = init_request(&["aes256-sha256-modp2048"]);
    for i in 0..10 {
        net.inject(gw, MALLORY, &forge(&unacceptable, 100 + i, |_| {}));
    }
    assert_eq!(net.nodes[gw].endpoint.half_open(), 0);
    net.wire.clear();
    let alice = net.add(
        ALICE,
        settings(),
        vec![client("alice.example", &["aes128gcm16-prfsha256-x25519"])],
    );
    net.initiate(alice, gw);
    net.run(|_| true);
    assert_eq!(net.nodes[alice].ike_up().len(), 1);
    assert_eq!(
        net.nodes[alice].messages_sent(ExchangeType::IKE_SA_INIT, false),
        2,
        "ten refused requests in the last second turned COOKIEs on"
    );
    // A second later the load is gone again.
    let later = net.after(Duration::from_secs(2));
    net.run_until(later);
    let bob = net.add(
        BOB,
        settings(),
        vec![client("bob.example", &["aes128gcm16-prfsha256-x25519"])],
    );
    net.initiate(bob, gw);
    net.run(|_| true);
    assert_eq!(
        net.nodes[bob].messages_sent(ExchangeType::IKE_SA_INIT, false),
        1
    );
}

/// Mallory completes IKE_SA_INIT (echoing COOKIEs) `tries` times and never
/// follows with IKE_AUTH.
fn half_open_flood(net: &mut Net, gw: usize, tries: usize) -> usize {
    let mallory = net.add(
        MALLORY,
        settings(),
        vec![client("mallory.example", &["aes128gcm16-prfsha256-x25519"])],
    );
    for _ in 0..tries {
        net.initiate(mallory, gw);
    }
    let from_mallory = net.nodes[mallory].addr;
    net.run(|t| !(t.local == from_mallory && exchange(t) == ExchangeType::IKE_AUTH));
    mallory
}

#[test]
fn one_source_holds_at_most_its_share_of_half_open_sas() {
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 0,
            half_open_limit: 20,
            half_open_per_source: 5,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    half_open_flood(&mut net, gw, 30);
    assert_eq!(net.nodes[gw].endpoint.half_open(), 5);
    // Anyone else still gets in.
    let alice = net.add(
        ALICE,
        settings(),
        vec![client("alice.example", &["aes128gcm16-prfsha256-x25519"])],
    );
    net.initiate(alice, gw);
    net.run(|_| true);
    assert_eq!(net.nodes[alice].ike_up().len(), 1);
    assert_eq!(net.nodes[alice].children_up(), 1);
    let logs = net.nodes[gw].logs();
    let drops: Vec<&&str> = logs.iter().filter(|l| l.contains("holds 5")).collect();
    assert_eq!(drops.len(), 1, "told once, then counted: {logs:?}");
}

#[test]
fn the_half_open_limit_still_holds_against_many_sources() {
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 0,
            half_open_limit: 3,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    for (addr, id) in [
        (ALICE, "alice.example"),
        (BOB, "bob.example"),
        (CAROL, "carol.example"),
    ] {
        let n = net.add(
            addr,
            settings(),
            vec![client(id, &["aes128gcm16-prfsha256-x25519"])],
        );
        net.initiate(n, gw);
    }
    net.run(|t| exchange(t) != ExchangeType::IKE_AUTH);
    assert_eq!(net.nodes[gw].endpoint.half_open(), 3);
    half_open_flood(&mut net, gw, 1);
    assert_eq!(net.nodes[gw].endpoint.half_open(), 3);
    assert!(
        net.nodes[gw]
            .logs()
            .iter()
            .any(|l| l.contains("dropped IKE_SA_INIT from 198.51.100.66:500: 3 half-open SAs"))
    );
}

#[test]
fn spoofed_requests_do_not_use_up_the_share_of_the_host_they_name() {
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            // Each request without a COOKIE counts twice (request and half-open SA).
            cookie_threshold: 5,
            half_open_per_source: 1,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    // Mallory sends in Alice's name; without COOKIEs yet, each makes a half-open SA.
    let template = init_request(&["aes128gcm16-prfsha256-x25519"]);
    for i in 0..3 {
        net.inject(gw, ALICE, &forge(&template, 300 + i, |_| {}));
    }
    net.wire.clear();
    assert_eq!(net.nodes[gw].endpoint.half_open(), 3);
    // Alice herself echoes the COOKIE now demanded and is counted from then on.
    let alice = net.add(
        ALICE,
        settings(),
        vec![client("alice.example", &["aes128gcm16-prfsha256-x25519"])],
    );
    net.initiate(alice, gw);
    net.run(|_| true);
    assert_eq!(
        net.nodes[alice].messages_sent(ExchangeType::IKE_SA_INIT, false),
        2
    );
    assert_eq!(net.nodes[alice].ike_up().len(), 1);
}

#[test]
fn a_flood_of_stateless_refusals_logs_one_line_a_second_per_kind() {
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 5000,
            half_open_limit: 6000,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    let unacceptable = init_request(&["aes256-sha256-modp2048"]);
    let wrong_group = init_request(&["aes128gcm16-prfsha256-ecp256-x25519"]);
    let mut unknown_spi = init_request(&["aes128gcm16-prfsha256-x25519"]);
    unknown_spi.header.exchange = ExchangeType::IKE_AUTH;
    unknown_spi.header.spi_r = IkeSpi(42);
    unknown_spi.header.message_id = 1;
    for i in 0..1000 {
        net.inject(gw, MALLORY, &forge(&unacceptable, 10_000 + i, |_| {}));
        net.inject(gw, MALLORY, &forge(&wrong_group, 20_000 + i, |_| {}));
        net.inject(gw, MALLORY, &forge(&unknown_spi, 30_000 + i, |_| {}));
    }
    // Every refusal is answered (INVALID_IKE_SPI within its own rate limit).
    let replies: Vec<Option<NotifyType>> = net.wire.drain(..).map(|t| notify_of(&t)).collect();
    let count = |n| replies.iter().filter(|r| **r == Some(n)).count();
    assert_eq!(count(NotifyType::NO_PROPOSAL_CHOSEN), 1000);
    assert_eq!(count(NotifyType::INVALID_KE_PAYLOAD), 1000);
    assert_eq!(count(NotifyType::INVALID_IKE_SPI), 10);
    // But the log has one line per kind, and one message record per reply kind.
    let node = &net.nodes[gw];
    assert_eq!(node.logs().len(), 3, "{:?}", node.logs());
    assert_eq!(node.messages_sent(ExchangeType::IKE_SA_INIT, true), 2);
    // A second later, one summary line per kind with the count.
    net.run_until(net.after(Duration::from_secs(1)));
    let logs = net.nodes[gw].logs();
    assert_eq!(logs.len(), 6, "{logs:?}");
    for what in [
        "999 more: IKE_SA_INIT refused",
        "999 more: IKE_SA_INIT answered with INVALID_KE_PAYLOAD",
        "999 more: request for an unknown IKE_SA",
    ] {
        assert!(logs.iter().any(|l| l.starts_with(what)), "{what}: {logs:?}");
    }
    // COOKIEs alike.
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 0,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    let template = init_request(&["aes128gcm16-prfsha256-x25519"]);
    for i in 0..1000 {
        net.inject(gw, MALLORY, &forge(&template, 40_000 + i, |_| {}));
    }
    assert_eq!(net.wire.len(), 1000);
    assert_eq!(net.nodes[gw].logs().len(), 1);
    assert_eq!(
        net.nodes[gw].messages_sent(ExchangeType::IKE_SA_INIT, true),
        1
    );
}

/// The counts the summary lines give ("N more: ..."), added up.
fn summed_up(logs: &[&str]) -> u64 {
    logs.iter()
        .filter_map(|l| l.split_once(" more: ")?.0.parse::<u64>().ok())
        .sum()
}

#[test]
fn refusals_that_come_after_their_summary_is_due_are_still_counted() {
    // The driver's timer fires a little after the summary is due; under a flood,
    // requests arrive in between. They must be added to the line still to come, not
    // start a new window (a line in full) and drop the count of the old one: the
    // flood test once saw its summaries give 40% of the COOKIEs actually sent.
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 0,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    let template = init_request(&["aes128gcm16-prfsha256-x25519"]);
    let mut spi = 50_000;
    let mut flood = |net: &mut Net, n: u64| {
        for _ in 0..n {
            spi += 1;
            net.inject(gw, MALLORY, &forge(&template, spi, |_| {}));
        }
    };
    flood(&mut net, 100);
    // Each summary is due a second after the last (at 1 s, then 1.001 s, ...); the
    // batches at 1.001, 2.002 and 3.003 s come after that, before handle_timeout ran.
    for ms in [1001, 1500, 2002, 2500, 3003] {
        net.now = Instant(Duration::from_millis(ms));
        flood(&mut net, 50);
        net.run_until(net.after(Duration::ZERO));
    }
    net.run_until(net.after(Duration::from_secs(2)));
    let logs = net.nodes[gw].logs();
    let told = logs
        .iter()
        .filter(|l| l.contains("COOKIE demanded"))
        .count();
    assert_eq!(told, 1, "{logs:?}");
    assert_eq!(summed_up(&logs), 349, "{logs:?}");
    assert_eq!(
        net.nodes[gw].messages_sent(ExchangeType::IKE_SA_INIT, true),
        1
    );
}

#[test]
fn half_open_sas_made_in_a_flood_expire_when_their_time_comes() {
    // The endpoint files each SA's deadline rather than asking every SA for it on
    // each datagram (quadratic in a flood of full IKE_SA_INITs); a responder SA is
    // made outside `with_sa` and must be filed all the same. And its entry in the
    // index of initiators' SPIs goes with it, found without a walk.
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 5000,
            half_open_limit: 6000,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    let template = init_request(&["aes128gcm16-prfsha256-x25519"]);
    let timeout = settings().half_open_timeout;
    let half_open = |net: &Net| net.nodes[gw].endpoint.half_open();
    for i in 0..100 {
        net.inject(gw, MALLORY, &forge(&template, 60_000 + i, |_| {}));
    }
    net.now = Instant(Duration::from_secs(10));
    for i in 0..100 {
        net.inject(gw, MALLORY, &forge(&template, 70_000 + i, |_| {}));
    }
    assert_eq!(half_open(&net), 200);
    net.run_until(Instant(timeout - Duration::from_millis(1)));
    assert_eq!(half_open(&net), 200);
    net.run_until(Instant(timeout));
    assert_eq!(half_open(&net), 100, "the first hundred at {timeout:?}");
    net.run_until(Instant(timeout + Duration::from_secs(10)));
    assert_eq!(half_open(&net), 0, "the second hundred 10 s later");
    // Gone with its SA: the IKE_SA_INIT that made it, sent again, makes a new one.
    net.inject(gw, MALLORY, &forge(&template, 60_000, |_| {}));
    assert_eq!(half_open(&net), 1);
}

#[test]
fn a_cookie_is_honoured_for_one_rotation_of_the_secret_only() {
    let template = init_request(&["aes128gcm16-prfsha256-x25519"]);
    for (wait, honoured) in [(130, true), (250, false)] {
        let mut net = Net::new();
        let gw = net.add(
            GW,
            Settings {
                cookie_threshold: 0,
                ..settings()
            },
            vec![policy(Conn::default())],
        );
        net.inject(gw, ALICE, &forge(&template, 77, |_| {}));
        let reply = Message::decode(&net.wire.pop_front().unwrap().data).unwrap();
        let [Payload::Notify(cookie)] = reply.payloads.as_slice() else {
            panic!("a COOKIE: {reply:?}");
        };
        assert_eq!(cookie.notify_type, NotifyType::COOKIE);
        // The secret changes every 120 s; the one before stays valid one period more.
        net.now = Instant(Duration::from_secs(wait));
        let echo = forge(&template, 77, |p| {
            p.insert(0, Payload::Notify(cookie.clone()))
        });
        net.inject(gw, ALICE, &echo);
        let answer = net.wire.pop_front().unwrap();
        assert_eq!(
            ke_of(&answer.data).is_some(),
            honoured,
            "after {wait} s: {:?}",
            notify_of(&answer)
        );
        assert_eq!(net.nodes[gw].endpoint.half_open(), usize::from(honoured));
    }
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
            .any(|l| l.contains("strict.example")
                && l.contains("do not allow this IKE SA's addresses or proposal")),
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
    // The gateway installed its side of the refused SA: it is asked to remove it.
    let deletes_asked = node.events.iter().any(|e| {
        matches!(e, Event::Message(m) if m.sent && !m.response
            && m.exchange == ExchangeType::INFORMATIONAL
            && m.payloads.iter().any(|p| matches!(p, Payload::Delete(_))))
    });
    assert!(deletes_asked, "no Delete for the refused Child SA");
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

fn load(ike: &str) -> Result<Config, String> {
    Config::parse(&format!("[ike]\n{ike}\n"), Path::new("site.toml")).map_err(|e| e.to_string())
}

#[test]
fn half_open_limits_are_configured_and_checked() {
    let config =
        load("half_open_limit = 50\nhalf_open_per_source = 3\ncookie_threshold = 20").unwrap();
    assert_eq!(
        (
            config.ike.half_open_limit,
            config.ike.half_open_per_source,
            config.ike.cookie_threshold
        ),
        (50, 3, 20)
    );
    let defaults = load("").unwrap().ike;
    let engine = Settings::default();
    assert_eq!(
        (
            defaults.half_open_limit,
            defaults.half_open_per_source,
            defaults.cookie_threshold,
            defaults.half_open_timeout
        ),
        (1000, 5, 10, Duration::from_secs(30))
    );
    assert_eq!(
        (engine.half_open_limit, engine.half_open_per_source),
        (1000, 5)
    );
    for (ike, error) in [
        (
            "half_open_limit = 0",
            "site.toml:2: ike.half_open_limit: must be at least 1",
        ),
        (
            "half_open_per_source = 0",
            "site.toml:2: ike.half_open_per_source: must be at least 1",
        ),
        (
            "cookie_threshold = 1000",
            "site.toml:2: ike.cookie_threshold: cookie_threshold (1000) must be below half_open_limit (1000)",
        ),
        (
            "half_open_limit = 10",
            "site.toml:2: ike.half_open_limit: cookie_threshold (10) must be below half_open_limit (10)",
        ),
        (
            "half_open_timeout = 0",
            "site.toml:2: ike.half_open_timeout: must be above 0",
        ),
    ] {
        assert_eq!(load(ike).err().as_deref(), Some(error), "{ike}");
    }
}

#[test]
fn a_cookie_notify_is_not_taken_for_a_cookie_of_another_request() {
    // A COOKIE that is not ours (random bytes, or one for another SPI) is answered
    // with a new COOKIE, never with a half-open SA.
    let mut net = Net::new();
    let gw = net.add(
        GW,
        Settings {
            cookie_threshold: 0,
            ..settings()
        },
        vec![policy(Conn::default())],
    );
    let template = init_request(&["aes128gcm16-prfsha256-x25519"]);
    for (i, cookie) in [vec![], vec![0], vec![0; 33], vec![1; 64]]
        .into_iter()
        .enumerate()
    {
        let request = forge(&template, 60_000 + i as u64, |p| {
            p.insert(
                0,
                Payload::Notify(NotifyPayload::new(NotifyType::COOKIE, cookie)),
            );
        });
        net.inject(gw, ALICE, &request);
    }
    assert!(
        net.wire
            .iter()
            .all(|t| notify_of(t) == Some(NotifyType::COOKIE))
    );
    assert_eq!(net.nodes[gw].endpoint.half_open(), 0);
}

#[test]
fn forged_messages_on_a_known_sa_log_one_line_a_second() {
    let (mut net, gw, alice) = pair();
    net.initiate(alice, gw);
    let mut auth_request = None;
    net.run(|t| {
        if exchange(t) == ExchangeType::IKE_AUTH && auth_request.is_none() {
            auth_request = Some(t.data.clone());
        }
        true
    });
    assert_eq!(net.nodes[gw].ike_up().len(), 1);
    // Alice's IKE_AUTH request as the next request (message ID 2), its ICV broken:
    // what anyone who saw the SPIs can send.
    let mut forged = auth_request.unwrap();
    forged[20..24].copy_from_slice(&2u32.to_be_bytes());
    *forged.last_mut().unwrap() ^= 1;
    let before = net.nodes[gw].logs().len();
    for _ in 0..1000 {
        net.inject(gw, ALICE, &forged);
    }
    let logs = net.nodes[gw].logs();
    assert_eq!(logs.len(), before + 1, "{:?}", &logs[before..]);
    net.now = net.after(Duration::from_secs(1));
    net.inject(gw, ALICE, &forged);
    let logs = net.nodes[gw].logs();
    assert!(
        logs.last()
            .unwrap()
            .ends_with("(999 more dropped since the last such line)"),
        "{logs:?}"
    );
}
