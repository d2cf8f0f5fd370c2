//! ESP open, as a worker runs it on every packet from the network: raw packets, and
//! packets sealed with the SA's own keys around fuzzed inner bytes and then changed,
//! through the replay window (ESN or not) and the inner packet's parse and selector
//! check.

#![no_main]

use esptun::crypto::{Encr, Integ, Secret};
use esptun::dataplane::Flow;
use esptun::esp::{HEADROOM, InboundSa, OutboundSa, SaKeys};
use esptun::wire::payload::{AddrRange, TsRange};
use esptun_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const SUITES: [(Encr, Option<Integ>); 4] = [
    (Encr::AesGcm16 { key_len: 16 }, None),
    (Encr::AesGcm16 { key_len: 32 }, None),
    (Encr::ChaCha20Poly1305, None),
    (Encr::AesCbc { key_len: 32 }, Some(Integ::HmacSha256)),
];

fn net(addrs: AddrRange) -> TsRange {
    TsRange {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        addrs,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.u8();
    let (encr, integ) = SUITES[usize::from(setup) % SUITES.len()];
    let esn = setup & 0x80 != 0;
    let encryption = Secret::new(vec![0x11; encr.key_material_len()]);
    let integrity = Secret::new(vec![0x22; integ.map_or(0, Integ::key_len)]);
    let keys = SaKeys {
        spi: 0x1234_5678,
        encr,
        integ,
        esn,
        encryption: &encryption,
        integrity: &integrity,
    };
    let outbound = OutboundSa::new(&keys).expect("outbound SA");
    let mut inbound = InboundSa::new(&keys, 64 << (setup >> 5 & 3)).expect("inbound SA");
    let remote = [
        net(AddrRange::V4([10, 2, 0, 0].into(), [10, 2, 0, 255].into())),
        net(AddrRange::V6(
            "fd00:2::".parse().unwrap(),
            "fd00:2::ffff".parse().unwrap(),
        )),
    ];
    let local = [net(AddrRange::V4(
        [10, 1, 0, 0].into(),
        [10, 1, 255, 255].into(),
    ))];
    while !input.is_empty() {
        let op = input.u8();
        let mut packet = if op & 1 == 0 {
            input.chunk()
        } else {
            // Sealed with the SA's keys, so the fuzzer reaches past the ICV; then, if
            // it asks, a new sequence number and some bytes changed.
            let inner = input.chunk();
            // Room after the packet for any suite's padding, trailer and ICV.
            let mut buf = vec![0; HEADROOM + inner.len() + 64];
            buf[HEADROOM..HEADROOM + inner.len()].copy_from_slice(&inner);
            let next_header = input.u8();
            let Ok(esp) = outbound.seal(&mut buf, HEADROOM, inner.len(), next_header) else {
                continue;
            };
            let mut packet = buf[esp].to_vec();
            if op & 2 != 0 {
                let seq = u32::from(input.u16()) << 16 | u32::from(input.u16());
                packet[4..8].copy_from_slice(&seq.to_be_bytes());
            }
            for _ in 0..op >> 5 {
                let (at, value) = (usize::from(input.u16()), input.u8());
                let len = packet.len();
                packet[at % len] ^= value;
            }
            packet
        };
        if let Ok((inner, _next_header, _seq)) = inbound.open(&mut packet)
            && let Some(flow) = Flow::parse(&packet[inner])
        {
            let _ = flow.selected(&remote, &local);
        }
    }
});
