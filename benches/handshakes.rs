//! How fast one responder establishes IKE and Child SAs, and whether that rate holds
//! as its established SAs pile up (`cargo bench --bench handshakes [-- TOTAL]`,
//! default 20000): initiators with distinct addresses keep 100 handshakes in flight
//! (PSK, x25519, AES-GCM) against one responder endpoint, in memory, and every 1000
//! SAs the table shows the responder's handshakes per second of its own CPU time (its
//! `handle`, `poll_timeout` and draining of events and datagrams, as the daemon's
//! loop calls them). The sockets' cost is not in it: this measures the engine.

use esptun::auth::identity::{self, RemoteId};
use esptun::crypto::{Secret, SeededRandom};
use esptun::ike::{
    ChildPolicy, Endpoint, Event, IkeLifetime, Instant, LocalAuth, Policy, RemoteAuth, Settings,
    proposal,
};
use esptun::wire::ProtocolId;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const IN_FLIGHT: usize = 100;
const REPORT_EVERY: usize = 1000;

fn policy(me: &str, peer: Option<&str>) -> Arc<Policy> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let psk = Secret::from_slice(b"a benchmark's pre-shared key");
    Arc::new(Policy {
        name: "bench".into(),
        local_addrs: Vec::new(),
        remote_addrs: Vec::new(),
        proposals: proposal::parse_all(
            &strings(&["aes128gcm16-prfsha256-x25519"]),
            ProtocolId::IKE,
        )
        .expect("proposal"),
        encap: false,
        fragment_size: 1280,
        local: LocalAuth::Psk {
            id: identity::parse(me).expect("identity"),
            psk: psk.clone(),
        },
        remote: RemoteAuth::Psk {
            id: peer.map_or(RemoteId::Any, |p| {
                RemoteId::Exact(identity::parse(p).expect("identity"))
            }),
            psk,
        },
        children: vec![ChildPolicy {
            name: "net".into(),
            esp_proposals: proposal::parse_all(&strings(&["aes128gcm16"]), ProtocolId::ESP)
                .expect("proposal"),
            ..ChildPolicy::default()
        }],
        // No rekeys: the SAs only pile up.
        ike_lifetime: IkeLifetime {
            rekey_time: None,
            ..IkeLifetime::default()
        },
        dpd_delay: None,
        keyingtries: 1,
        pools: Vec::new(),
        vips: Vec::new(),
        mobike: true,
    })
}

/// The address of initiator `i`: one of 10.0.0.0/8, as 1000s of clients have.
fn client(i: usize) -> SocketAddr {
    let [_, a, b, c] = (i as u32 + 1).to_be_bytes();
    SocketAddr::new(IpAddr::from([10, a, b, c]), 500)
}

#[allow(clippy::disallowed_methods, reason = "a benchmark reads the clock")]
fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let gateway: SocketAddr = "192.0.2.1:500".parse().expect("address");
    // Admission control off: this measures the work of handshakes that get in.
    let responder_settings = Settings {
        cookie_threshold: 1_000_000,
        half_open_limit: 1_000_001,
        ..Settings::default()
    };
    let mut responder = Endpoint::new(
        responder_settings,
        vec![policy("gw.example", None)],
        Box::new(SeededRandom::new(1)),
    );
    let mut initiators = Endpoint::new(
        Settings::default(),
        vec![policy("client.example", Some("gw.example"))],
        Box::new(SeededRandom::new(2)),
    );
    let now = Instant::default();
    let (mut started, mut established) = (0, 0);
    let mut to_responder = VecDeque::new();
    let mut in_responder = Duration::ZERO;
    let mut block = (Duration::ZERO, 0);
    println!("{:>10} {:>16} {:>14}", "SAs", "handshakes/s", "µs each");
    while established < total {
        while started < total && started - established < IN_FLIGHT {
            initiators
                .initiate(now, 0, client(started), gateway)
                .expect("initiate");
            started += 1;
        }
        while let Some(t) = initiators.poll_transmit() {
            to_responder.push_back(t);
        }
        while initiators.poll_event().is_some() {}
        let clock = std::time::Instant::now();
        while let Some(t) = to_responder.pop_front() {
            responder.handle(now, t.remote, t.local, &t.data);
            let _ = responder.poll_timeout();
            while let Some(e) = responder.poll_event() {
                if matches!(e, Event::IkeSaUp(_)) {
                    established += 1;
                }
            }
        }
        let answers: Vec<_> = std::iter::from_fn(|| responder.poll_transmit()).collect();
        let spent = clock.elapsed();
        in_responder += spent;
        block.0 += spent;
        for t in answers {
            initiators.handle(now, t.remote, t.local, &t.data);
        }
        if established / REPORT_EVERY > block.1 {
            block.1 = established / REPORT_EVERY;
            let per = block.0 / REPORT_EVERY as u32;
            println!(
                "{:>10} {:>16.0} {:>14.1}",
                block.1 * REPORT_EVERY,
                1.0 / per.as_secs_f64(),
                per.as_secs_f64() * 1e6
            );
            block.0 = Duration::ZERO;
        }
    }
    println!(
        "{total} IKE+Child SAs in {:.2} s of responder time: {:.0} handshakes/s on average",
        in_responder.as_secs_f64(),
        total as f64 / in_responder.as_secs_f64()
    );
}
