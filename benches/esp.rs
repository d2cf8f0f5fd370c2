//! ESP per-packet cost: sealing and opening in place for each suite and packet size,
//! next to the raw AEAD seal of the crypto crate, and a super-packet's worth sealed and
//! opened out of place or copied first (`cargo bench --bench esp`).

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use esptun::crypto::{Encr, Integ, Secret};
use esptun::esp::{HEADROOM, InboundSa, NEXT_HEADER_IPV4, OutboundSa, SaKeys};
use std::hint::black_box;

const SIZES: [usize; 4] = [64, 512, 1400, 8192];
const SUITES: [(&str, Encr, Option<Integ>); 4] = [
    ("aes128gcm16", Encr::AesGcm16 { key_len: 16 }, None),
    ("aes256gcm16", Encr::AesGcm16 { key_len: 32 }, None),
    ("chacha20poly1305", Encr::ChaCha20Poly1305, None),
    (
        "aes256-sha256",
        Encr::AesCbc { key_len: 32 },
        Some(Integ::HmacSha256),
    ),
];

fn keys(encr: Encr, integ: Option<Integ>) -> (Secret, Secret) {
    (
        Secret::new(vec![0x42; encr.key_material_len()]),
        Secret::new(vec![0x17; integ.map_or(0, Integ::key_len)]),
    )
}

fn seal_open(c: &mut Criterion) {
    for (name, encr, integ) in SUITES {
        let (ek, ik) = keys(encr, integ);
        let sa_keys = SaKeys {
            spi: 0x1000,
            encr,
            integ,
            esn: false,
            encryption: &ek,
            integrity: &ik,
        };
        let mut group = c.benchmark_group(format!("esp/{name}"));
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let out = OutboundSa::new(&sa_keys).expect("keys");
            // One buffer for every packet, as a worker has: sealing writes the
            // trailer and ICV into it and needs no clearing in between.
            let mut buf = vec![0u8; HEADROOM + size + 64];
            group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, &size| {
                b.iter(|| {
                    black_box(
                        out.seal(&mut buf, HEADROOM, size, NEXT_HEADER_IPV4)
                            .expect("seals"),
                    )
                })
            });
            // Open a fresh packet each time: the replay window refuses repeats.
            let sealer = OutboundSa::new(&sa_keys).expect("keys");
            let mut inbound = InboundSa::new(&sa_keys, 1024).expect("keys");
            group.bench_with_input(BenchmarkId::new("seal+open", size), &size, |b, &size| {
                b.iter(|| {
                    let esp = sealer
                        .seal(&mut buf, HEADROOM, size, NEXT_HEADER_IPV4)
                        .expect("seals");
                    black_box(inbound.open(&mut buf[esp]).expect("opens"))
                })
            });
        }
        group.finish();
    }
}

/// The floor: aws-lc-rs AES-128-GCM sealing the same sizes with no ESP around it.
fn raw_aead(c: &mut Criterion) {
    let key = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &[0x42; 16]).expect("key"));
    let mut group = c.benchmark_group("raw/aes128gcm");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut data = vec![0u8; size];
        let mut counter = 0u64;
        group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                let mut n = [0u8; 12];
                n[4..].copy_from_slice(&counter.to_be_bytes());
                black_box(
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(&[0u8; 8]),
                        &mut data,
                    )
                    .expect("seals"),
                )
            })
        });
    }
    group.finish();
}

/// A 64 KiB TSO super-packet or GRO train of 1400-byte packets, as a worker has it:
/// each segment sealed from inside the super-packet, or copied into its own buffer
/// and sealed there; each datagram opened from inside the train, or copied out and
/// opened in place. Buffers are a worker's size, one per packet.
fn trains(c: &mut Criterion) {
    const SIZE: usize = 1400;
    const COUNT: usize = 46;
    const BUF: usize = HEADROOM + 65_535 + 64;
    let (ek, ik) = keys(Encr::AesGcm16 { key_len: 16 }, None);
    let sa_keys = SaKeys {
        spi: 0x1000,
        encr: Encr::AesGcm16 { key_len: 16 },
        integ: None,
        esn: false,
        encryption: &ek,
        integrity: &ik,
    };
    let out = OutboundSa::new(&sa_keys).expect("keys");
    let mut bufs: Vec<Vec<u8>> = (0..COUNT).map(|_| vec![0u8; BUF]).collect();
    let super_packet = vec![0x5au8; SIZE * COUNT];
    let mut group = c.benchmark_group(format!("train/aes128gcm16/{COUNT}x{SIZE}"));
    group.throughput(Throughput::Bytes((SIZE * COUNT) as u64));
    group.bench_function("copy+seal", |b| {
        b.iter(|| {
            for (chunk, buf) in super_packet.chunks(SIZE).zip(&mut bufs) {
                buf[HEADROOM..HEADROOM + SIZE].copy_from_slice(chunk);
                black_box(
                    out.seal(buf, HEADROOM, SIZE, NEXT_HEADER_IPV4)
                        .expect("seals"),
                );
            }
        })
    });
    group.bench_function("seal_from", |b| {
        b.iter(|| {
            for (chunk, buf) in super_packet.chunks(SIZE).zip(&mut bufs) {
                black_box(
                    out.seal_from(chunk, buf, HEADROOM, NEXT_HEADER_IPV4)
                        .expect("seals"),
                );
            }
        })
    });
    // A train of ESP datagrams as UDP GRO leaves it.
    let mut train = Vec::new();
    for buf in &mut bufs {
        let esp = out
            .seal(buf, HEADROOM, SIZE, NEXT_HEADER_IPV4)
            .expect("seals");
        train.extend_from_slice(&buf[esp]);
    }
    let len = train.len() / COUNT;
    // A fresh SA for each round (not timed): the replay window refuses repeats.
    let fresh = || InboundSa::new(&sa_keys, 1024).expect("keys");
    group.bench_function("copy+open", |b| {
        b.iter_batched(
            fresh,
            |mut inbound| {
                for (esp, buf) in train.chunks(len).zip(&mut bufs) {
                    buf[..len].copy_from_slice(esp);
                    black_box(inbound.open(&mut buf[..len]).expect("opens"));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("open_from", |b| {
        b.iter_batched(
            fresh,
            |mut inbound| {
                for (esp, buf) in train.chunks(len).zip(&mut bufs) {
                    black_box(inbound.open_from(esp, buf).expect("opens"));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, seal_open, raw_aead, trains);
criterion_main!(benches);
