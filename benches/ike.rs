//! IKE message costs: decoding a real IKE_AUTH request and its decrypted payloads,
//! and opening an SK payload with each suite (`cargo bench --bench ike`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use esptun::crypto::sk::{open_message, seal_message};
use esptun::crypto::{Encr, Integ, Secret, SeededRandom, SkKey};
use esptun::inspect::{KeyLog, udp_datagrams};
use esptun::wire::payload::{NoncePayload, Payload, VendorPayload, decode_chain};
use esptun::wire::{ExchangeType, Flags, Header, IkeSpi, Message, NON_ESP_MARKER, Reader};
use std::hint::black_box;

/// The IKE_AUTH request of the `gcm` vector (frame 3): 1002 bytes, encrypted.
fn ike_auth_request() -> Vec<u8> {
    let capture = include_bytes!("../tests/vectors/gcm/capture.pcap");
    let datagrams = udp_datagrams(capture).expect("the vector capture reads");
    datagrams[2]
        .payload
        .strip_prefix(&NON_ESP_MARKER)
        .expect("IKE_AUTH floats to port 4500")
        .to_vec()
}

fn decode(c: &mut Criterion) {
    let bytes = ike_auth_request();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("IKE_AUTH request", |b| {
        b.iter(|| Message::decode(black_box(&bytes)).expect("decodes"))
    });
    // The payloads inside its SK payload: IDs, certificate, AUTH, SA, TS, notifies.
    let keys =
        KeyLog::parse("gcm", include_str!("../tests/vectors/gcm/keys.json")).expect("key file");
    let sa = &keys.ike_sas[0];
    let key =
        SkKey::new(Encr::AesGcm16 { key_len: 16 }, None, &sa.sk_ei, &sa.sk_ai).expect("keys fit");
    let message = Message::decode(&bytes).expect("decodes");
    let Some(Payload::Sk(sk)) = message.payloads.last() else {
        unreachable!("IKE_AUTH is encrypted")
    };
    let inner = key.open(&bytes, sk.data.len()).expect("opens");
    group.throughput(Throughput::Bytes(inner.len() as u64));
    group.bench_function("IKE_AUTH request, decrypted payloads", |b| {
        b.iter(|| {
            decode_chain(sk.first_payload, &mut Reader::new(black_box(&inner))).expect("decodes")
        })
    });
    group.finish();
}

fn sk_open(c: &mut Criterion) {
    let suites = [
        ("AES-GCM-16-128", Encr::AesGcm16 { key_len: 16 }, None),
        ("AES-GCM-16-256", Encr::AesGcm16 { key_len: 32 }, None),
        ("ChaCha20-Poly1305", Encr::ChaCha20Poly1305, None),
        (
            "AES-CBC-128/HMAC-SHA2-256-128",
            Encr::AesCbc { key_len: 16 },
            Some(Integ::HmacSha256),
        ),
        (
            "AES-CBC-256/HMAC-SHA2-512-256",
            Encr::AesCbc { key_len: 32 },
            Some(Integ::HmacSha512),
        ),
    ];
    // About the size of an IKE_AUTH with one ECDSA certificate.
    let inner = vec![
        Payload::Nonce(NoncePayload { data: vec![7; 32] }),
        Payload::Vendor(VendorPayload {
            id: vec![0x5a; 900],
        }),
    ];
    let header = Header {
        spi_i: IkeSpi(0x0123_4567_89ab_cdef),
        spi_r: IkeSpi(0xfedc_ba98_7654_3210),
        minor_version: 0,
        exchange: ExchangeType::IKE_AUTH,
        flags: Flags::new(true, false),
        message_id: 1,
    };
    let mut group = c.benchmark_group("SK open");
    for (name, encr, integ) in suites {
        let sk_e = Secret::new(vec![0x11; encr.key_material_len()]);
        let sk_a = Secret::new(vec![0x22; integ.map_or(0, Integ::key_len)]);
        let mut key = SkKey::new(encr, integ, &sk_e, &sk_a).expect("keys fit");
        let sealed =
            seal_message(&mut key, &header, &inner, &mut SeededRandom::new(1)).expect("seals");
        let message = Message::decode(&sealed).expect("decodes");
        let Some(Payload::Sk(sk)) = message.payloads.last() else {
            unreachable!("seal_message ends in SK")
        };
        group.throughput(Throughput::Bytes(sealed.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| open_message(&key, black_box(&sealed), sk).expect("opens"))
        });
    }
    group.finish();
}

criterion_group!(benches, decode, sk_open);
criterion_main!(benches);
