//! `Endpoint::handle` past the integrity check: two endpoints negotiate an IKE SA
//! with a pre-shared key in memory, then the input is a program of steps: messages
//! sealed with the live SA's keys around fuzzed payload bytes (SK or SKF, request or
//! response, to either side), raw datagrams, the data plane's reports, genuine
//! traffic delivered, and time passing.

#![no_main]

use esptun::config::Config;
use esptun::crypto::SeededRandom;
use esptun::crypto::sk::{SkKey, seal_plain};
use esptun::ike::{Endpoint, Event, IkeSaUp, Instant, Policy, Settings, Transmit};
use esptun::wire::payload::{Payload, SkPayload, SkfPayload};
use esptun::wire::{ExchangeType, Flags, Header, PayloadType};
use esptun_fuzz::{Input, files};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// IKE and ESP proposals: one AEAD, one CBC with HMAC, ChaCha20; x25519 keeps the
/// handshake cheap.
const SUITES: [(&str, &str); 3] = [
    ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
    ("aes256-sha256-x25519", "aes256-sha256"),
    (
        "chacha20poly1305-prfsha256-x25519",
        "chacha20poly1305-x25519",
    ),
];
const ADDRS: [&str; 2] = ["192.0.2.1:500", "192.0.2.2:500"];
/// Datagrams queued for one side beyond this are lost, as on a real link.
const INBOX: usize = 64;

/// Left's and right's policies for each suite, from a configuration as the daemon
/// loads it (short rekey and DPD times, so that time steps reach those paths).
fn policies() -> &'static [[Arc<Policy>; 2]] {
    static POLICIES: OnceLock<Vec<[Arc<Policy>; 2]>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let side = |ike: &str, esp: &str, me: &str, peer: &str, left: bool| {
            let (l, r) = if left { ("1", "2") } else { ("2", "1") };
            let text = format!(
                r#"
[[connection]]
name = "site"
remote_addrs = ["192.0.2.{r}"]
proposals = ["{ike}"]
psk_file = "site-b.psk"
rekey_time = "10m"
dpd_delay = "1m"
[connection.local]
auth = "psk"
id = "{me}"
[connection.remote]
auth = "psk"
id = "{peer}"
[[connection.children]]
name = "net"
local_ts = ["10.{l}.0.0/24", "fd00:{l}::/64"]
remote_ts = ["10.{r}.0.0/24", "fd00:{r}::/64"]
esp_proposals = ["{esp}"]
rekey_time = "5m"
[[connection.children]]
name = "net2"
local_ts = ["10.{l}.1.0/24"]
remote_ts = ["10.{r}.1.0/24"]
esp_proposals = ["{esp}"]
"#
            );
            let config = Config::parse(&text, &files().join("site.toml")).expect("fuzz config");
            config.connections[0].policy.clone()
        };
        SUITES
            .iter()
            .map(|(ike, esp)| {
                [
                    side(ike, esp, "left.example", "right.example", true),
                    side(ike, esp, "right.example", "left.example", false),
                ]
            })
            .collect()
    })
}

/// One endpoint and what its peer needs to talk to it.
struct Side {
    endpoint: Endpoint,
    inbox: VecDeque<Transmit>,
    /// The newest IKE SA it has up: SPIs, addresses, suite and keys.
    sa: Option<Box<IkeSaUp>>,
    /// Per IKE SA (initiator SPI): the next request ID it expects, and the ID of its
    /// own latest request.
    ids: HashMap<u64, (u32, u32)>,
    /// Inbound SPIs of its Child SAs, for the data plane's reports.
    children: Vec<u32>,
}

struct Pair {
    now: Instant,
    sides: [Side; 2],
    rng: SeededRandom,
}

impl Pair {
    fn new(suite: usize) -> Self {
        let side = |i: usize| Side {
            endpoint: Endpoint::new(
                Settings::default(),
                vec![policies()[suite][i].clone()],
                Box::new(SeededRandom::new(i as u64 + 1)),
            ),
            inbox: VecDeque::new(),
            sa: None,
            ids: HashMap::new(),
            children: Vec::new(),
        };
        let mut pair = Self {
            now: Instant(Duration::from_secs(1)),
            sides: [side(0), side(1)],
            rng: SeededRandom::new(3),
        };
        let (local, remote) = (addr(0), addr(1));
        pair.sides[0].endpoint.add_peer(0, local, remote);
        pair.sides[0]
            .endpoint
            .initiate(pair.now, 0, local, remote)
            .expect("initiate");
        pair.settle();
        assert!(
            pair.sides.iter().all(|s| s.sa.is_some()),
            "the pair did not come up"
        );
        pair
    }

    /// Moves each side's events into its records and its datagrams to the other.
    fn collect(&mut self) {
        for i in 0..2 {
            while let Some(event) = self.sides[i].endpoint.poll_event() {
                self.sides[i].record(event);
            }
            while let Some(t) = self.sides[i].endpoint.poll_transmit() {
                let peer = &mut self.sides[1 - i];
                if peer.inbox.len() < INBOX {
                    peer.inbox.push_back(t);
                }
            }
        }
    }

    /// Delivers up to `n` queued datagrams to each side.
    fn deliver(&mut self, n: usize) {
        for i in 0..2 {
            for _ in 0..n {
                let Some(t) = self.sides[i].inbox.pop_front() else {
                    break;
                };
                self.sides[i]
                    .endpoint
                    .handle(self.now, t.remote, t.local, &t.data);
                self.collect();
            }
        }
    }

    /// Delivers until nothing is in flight (or a bounded number of rounds: two
    /// endpoints may keep talking, which is no fault).
    fn settle(&mut self) {
        self.collect();
        for _ in 0..32 {
            if self.sides.iter().all(|s| s.inbox.is_empty()) {
                break;
            }
            self.deliver(INBOX);
        }
    }

    /// Lets `by` pass and runs every timer due by then.
    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        for i in 0..2 {
            let mut rounds = 0;
            while self.sides[i]
                .endpoint
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                rounds += 1;
                assert!(rounds < 1000, "handle_timeout leaves a timer due");
                self.sides[i].endpoint.handle_timeout(self.now);
                self.collect();
            }
        }
    }

    /// A message from the peer of side `to` on its newest IKE SA, sealed with the
    /// peer's keys around the fuzzed payload bytes.
    fn sealed(&mut self, to: usize, input: &mut Input<'_>) {
        let shape = input.u8();
        let (response, fragment) = (shape & 1 != 0, shape & 2 != 0);
        let exchange = match input.u8() {
            e @ 0xf0.. => ExchangeType(e),
            e => ExchangeType(34 + e % 4),
        };
        let delta = input.u8() as i8;
        let first = PayloadType(input.u8());
        let (number, total) = (u16::from(input.u8()), u16::from(input.u8()));
        let plain = input.chunk();
        let side = &self.sides[to];
        let Some(sa) = &side.sa else { return };
        let (next_in, last_out) = side.ids.get(&sa.spi_i.0).copied().unwrap_or_default();
        let expected = if response { last_out } else { next_in };
        let peer_initiated = !sa.initiator;
        let (sk_e, sk_a) = if peer_initiated {
            (&sa.keys.sk_ei, &sa.keys.sk_ai)
        } else {
            (&sa.keys.sk_er, &sa.keys.sk_ar)
        };
        let mut key = SkKey::new(sa.suite.encr, sa.suite.integ, sk_e, sk_a).expect("SA keys");
        let header = Header {
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            minor_version: 0,
            exchange,
            flags: Flags::new(peer_initiated, response),
            message_id: expected.wrapping_add_signed(i32::from(delta)),
        };
        let sealed = seal_plain(&mut key, &header, &plain, &mut self.rng, |data| {
            if fragment {
                Payload::Skf(SkfPayload {
                    first_payload: first,
                    fragment_number: number,
                    total_fragments: total,
                    data,
                })
            } else {
                Payload::Sk(SkPayload {
                    first_payload: first,
                    data,
                })
            }
        });
        // Too long to encode is the only way this fails.
        let Ok(datagram) = sealed else { return };
        let (local, remote) = (sa.local, sa.remote);
        self.sides[to]
            .endpoint
            .handle(self.now, local, remote, &datagram);
        self.collect();
    }

    /// What the data plane or the operator tells side `to`.
    fn report(&mut self, to: usize, input: &mut Input<'_>) {
        let (what, pick) = (input.u8(), usize::from(input.u8()));
        let now = self.now;
        let side = &mut self.sides[to];
        let spi = match side.children.len() {
            0 => u32::from(input.u16()),
            n => side.children[pick % n],
        };
        let e = &mut side.endpoint;
        match what % 7 {
            0 => e.expire_child(now, spi, false, "fuzz"),
            1 => e.expire_child(now, spi, true, "fuzz"),
            2 => e.acquire(now, 0, pick % 3),
            3 => e.inbound_seen(now, &[spi]),
            4 => e.unknown_spi(now, addr(to), addr(1 - to), spi ^ 1),
            5 => {
                let _ = e.initiate(now, 0, addr(to), addr(1 - to));
            }
            _ => e.delete_all(now),
        }
        self.collect();
    }
}

impl Side {
    fn record(&mut self, event: Event) {
        match event {
            Event::Message(m) => {
                let ids = self.ids.entry(m.spi_i.0).or_default();
                match (m.sent, m.response) {
                    (false, false) => ids.0 = ids.0.max(m.message_id.wrapping_add(1)),
                    (true, false) => ids.1 = m.message_id,
                    _ => {}
                }
            }
            Event::IkeSaUp(up) | Event::IkeSaRekeyed { up, .. } => self.sa = Some(up),
            Event::ChildSaUp(c) => self.children.push(c.spi_in),
            Event::ChildSaDown { spi_in, .. } => self.children.retain(|&s| s != spi_in),
            _ => {}
        }
    }
}

fn addr(side: usize) -> SocketAddr {
    ADDRS[side].parse().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut pair = Pair::new(usize::from(input.u8()) % SUITES.len());
    while !input.is_empty() {
        let op = input.u8();
        let to = usize::from(op >> 7);
        match (op & 0x7f) % 6 {
            0 | 1 => pair.sealed(to, &mut input),
            2 => {
                let datagram = input.chunk();
                let (local, remote) = (addr(to), addr(1 - to));
                pair.sides[to]
                    .endpoint
                    .handle(pair.now, local, remote, &datagram);
                pair.collect();
            }
            3 => pair.report(to, &mut input),
            4 => pair.deliver(usize::from(input.u8() % 8) + 1),
            _ => pair.advance(Duration::from_secs(u64::from(input.u8()) * 4)),
        }
    }
    pair.settle();
});
