//! IKE_SA_INIT flood generator for tests/flood/run.sh: paced IKE_SA_INIT requests
//! to a responder, from source addresses spoofed over a range and from the
//! legitimate peer's own address, through a raw IPv4 socket (IP_HDRINCL). Root
//! only; run it inside a network namespace whose routes keep the traffic there.
//!
//! usage: flood --to ADDR --rate PPS --seconds S [--spoof CIDR] [--peer ADDR]
//!              [--peer-share F] [--kinds K,K,...]
//!   --spoof CIDR     spoofed sources, picked at random per packet (198.18.0.0/15)
//!   --peer ADDR      also send from this address (random ports), a share F of the
//!                    packets (--peer-share, default 0.1)
//!   --kinds          cycled per packet: no-ke (SA and Nonce only), empty-ke (a KE for
//!                    the proposed group with no value), ke (the group's length of
//!                    random bytes: any 32 bytes are a Curve25519 value), wrong-group
//!                    (x25519 proposed, an ECP-256 KE sent); default all four
//!
//! Prints one line at the end: `sent N in T s: R/s`, with the count per kind.
//! Every packet has its own SPI, nonce and (for ke) value, so none is a
//! retransmission the responder could answer from its cache.

use esptun::ike::proposal;
use esptun::wire::payload::{KePayload, NoncePayload, NotifyPayload, SaPayload};
use esptun::wire::{
    ExchangeType, Flags, Header, IkeSpi, KeGroup, Message, NotifyType, Payload, ProtocolId,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NONCE_LEN: usize = 32;
const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// Packets sent back to back between two looks at the clock.
const BURST: u64 = 32;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    NoKe,
    EmptyKe,
    Ke,
    WrongGroup,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "no-ke" => Self::NoKe,
            "empty-ke" => Self::EmptyKe,
            "ke" => Self::Ke,
            "wrong-group" => Self::WrongGroup,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::NoKe => "no-ke",
            Self::EmptyKe => "empty-ke",
            Self::Ke => "ke",
            Self::WrongGroup => "wrong-group",
        }
    }
}

/// One kind's IKE message, encoded once; each packet gets its own SPI and nonce
/// (and KE value) written over the template's.
struct Template {
    kind: Kind,
    ike: Vec<u8>,
    nonce_at: usize,
    /// Where the KE value is, when it is to be random per packet.
    value_at: Option<(usize, usize)>,
}

impl Template {
    fn new(kind: Kind) -> Result<Self, String> {
        let offer = proposal::parse("aes128gcm16-prfsha256-x25519", ProtocolId::IKE)
            .map_err(|e| e.to_string())?;
        // Marker bytes to find the fields again in the encoding.
        let nonce = vec![0xa5; NONCE_LEN];
        let (group, value) = match kind {
            Kind::NoKe => (None, Vec::new()),
            Kind::EmptyKe => (Some(KeGroup::CURVE25519), Vec::new()),
            Kind::Ke => (Some(KeGroup::CURVE25519), vec![0x5a; 32]),
            Kind::WrongGroup => (Some(KeGroup::ECP_256), vec![0x5a; 64]),
        };
        let mut payloads = vec![Payload::Sa(SaPayload {
            proposals: vec![offer],
        })];
        if let Some(group) = group {
            payloads.push(Payload::Ke(KePayload {
                group,
                data: value.clone(),
            }));
        }
        payloads.push(Payload::Nonce(NoncePayload {
            data: nonce.clone(),
        }));
        // As a real initiator's: NAT detection makes the responder hash both addresses.
        for t in [
            NotifyType::NAT_DETECTION_SOURCE_IP,
            NotifyType::NAT_DETECTION_DESTINATION_IP,
        ] {
            payloads.push(Payload::Notify(NotifyPayload::new(t, vec![0; 20])));
        }
        let message = Message {
            header: Header {
                spi_i: IkeSpi(1),
                spi_r: IkeSpi(0),
                minor_version: 0,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: Flags::new(true, false),
                message_id: 0,
            },
            payloads,
        };
        let ike = message.encode().map_err(|e| e.to_string())?;
        let find = |needle: &[u8]| ike.windows(needle.len()).position(|w| w == needle);
        let nonce_at = find(&nonce).ok_or("nonce not found in the encoding")?;
        let value_at = match kind {
            Kind::Ke => Some((find(&value).ok_or("KE not found")?, value.len())),
            _ => None,
        };
        Ok(Self {
            kind,
            ike,
            nonce_at,
            value_at,
        })
    }
}

/// xorshift64*: fast and good enough to make SPIs, nonces and addresses differ.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Options {
    to: Ipv4Addr,
    rate: u64,
    seconds: f64,
    spoof: (u32, u32),
    peer: Option<Ipv4Addr>,
    peer_share: f64,
    kinds: Vec<Kind>,
}

fn cidr(text: &str) -> Result<(u32, u32), String> {
    let (addr, bits) = text.split_once('/').ok_or("CIDR needs a /")?;
    let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{text}: {e}"))?;
    let bits: u32 = bits.parse().map_err(|e| format!("{text}: {e}"))?;
    if !(1..=32).contains(&bits) {
        return Err(format!("{text}: prefix length 1..=32"));
    }
    let size = 1u32 << (32 - bits).min(31);
    Ok((u32::from(addr) & !(size.wrapping_sub(1)), size))
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        to: Ipv4Addr::UNSPECIFIED,
        rate: 20_000,
        seconds: 10.0,
        spoof: cidr("198.18.0.0/15")?,
        peer: None,
        peer_share: 0.1,
        kinds: vec![Kind::NoKe, Kind::EmptyKe, Kind::Ke, Kind::WrongGroup],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--to" => o.to = value.parse().map_err(|e| bad(&e))?,
            "--rate" => o.rate = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = value.parse().map_err(|e| bad(&e))?,
            "--spoof" => o.spoof = cidr(value)?,
            "--peer" => o.peer = Some(value.parse().map_err(|e| bad(&e))?),
            "--peer-share" => o.peer_share = value.parse().map_err(|e| bad(&e))?,
            "--kinds" => {
                o.kinds = value
                    .split(',')
                    .map(|k| Kind::parse(k).ok_or(format!("unknown kind {k}")))
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.to.is_unspecified() || o.rate == 0 || o.kinds.is_empty() {
        return Err("--to ADDR and a --rate above 0 are needed".into());
    }
    Ok(o)
}

/// Writes the IPv4 and UDP headers and the IKE message into `buf`; the kernel
/// fills the IP checksum and ID, and a UDP checksum of 0 means none (RFC 768).
fn packet(buf: &mut Vec<u8>, src: SocketAddrV4, dst: Ipv4Addr, ike: &[u8]) {
    let total = IP_HEADER + UDP_HEADER + ike.len();
    buf.clear();
    buf.extend_from_slice(&[0x45, 0]);
    buf.extend_from_slice(&(total as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    buf.extend_from_slice(&src.ip().octets());
    buf.extend_from_slice(&dst.octets());
    buf.extend_from_slice(&src.port().to_be_bytes());
    buf.extend_from_slice(&500u16.to_be_bytes());
    buf.extend_from_slice(&((UDP_HEADER + ike.len()) as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(ike);
}

#[allow(
    clippy::disallowed_methods,
    reason = "a load generator paces itself by the clock"
)]
fn run(o: &Options) -> Result<(), String> {
    let mut templates = o
        .kinds
        .iter()
        .map(|&k| Template::new(k))
        .collect::<Result<Vec<_>, _>>()?;
    // IPPROTO_RAW implies IP_HDRINCL: we write the (spoofed) IP header ourselves.
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
        .map_err(|e| format!("raw socket: {e}"))?;
    let to = SockAddr::from(SocketAddrV4::new(o.to, 0));
    let start = Instant::now();
    // Two generators started together still differ; xorshift needs a seed other than 0.
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng((clock ^ (u64::from(std::process::id()) << 32)) | 1);
    let mut counts = vec![0u64; templates.len()];
    let mut failed = 0u64;
    let mut first_error = None;
    let mut buf = Vec::with_capacity(2048);
    let total = (o.rate as f64 * o.seconds) as u64;
    let peer_every = (o.peer_share > 0.0).then(|| (1.0 / o.peer_share).round().max(1.0) as u64);
    let mut sent = 0u64;
    while sent < total {
        // Paced against the start, so a late burst catches up and the mean rate holds.
        let due = start + Duration::from_secs_f64(sent as f64 / o.rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        for _ in 0..BURST.min(total - sent) {
            let index = (sent % templates.len() as u64) as usize;
            let t = &mut templates[index];
            t.ike[..8].copy_from_slice(&rng.next().to_be_bytes());
            rng.fill(&mut t.ike[t.nonce_at..t.nonce_at + NONCE_LEN]);
            if let Some((at, len)) = t.value_at {
                rng.fill(&mut t.ike[at..at + len]);
            }
            let ip = match (o.peer, peer_every) {
                (Some(peer), Some(every)) if sent.is_multiple_of(every) => peer,
                _ => Ipv4Addr::from(
                    o.spoof
                        .0
                        .wrapping_add(rng.below(u64::from(o.spoof.1)) as u32),
                ),
            };
            // Any port but IKE's own, so answers to the peer's address reach no IKE socket.
            let port = loop {
                let p = 1024 + rng.below(65536 - 1024) as u16;
                if p != 4500 {
                    break p;
                }
            };
            packet(&mut buf, SocketAddrV4::new(ip, port), o.to, &t.ike);
            match socket.send_to(&buf, &to) {
                Ok(_) => counts[index] += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
            sent += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok: u64 = counts.iter().sum();
    let per_kind: Vec<String> = templates
        .iter()
        .zip(&counts)
        .map(|(t, n)| format!("{} {n}", t.kind.name()))
        .collect();
    println!(
        "sent {ok} in {elapsed:.2} s: {:.0}/s ({}){}",
        ok as f64 / elapsed,
        per_kind.join(", "),
        first_error.map_or(String::new(), |e| format!("; {failed} failed: {e}"))
    );
    Ok(())
}

fn main() -> ExitCode {
    match options().and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flood: {e}");
            ExitCode::from(2)
        }
    }
}
