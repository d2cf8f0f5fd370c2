//! NAT detection (RFC 7296 §2.23): each side hashes the addresses it believes it
//! sends from and to; a mismatch on arrival means a NAT rewrote them.

use crate::crypto::Random;
use crate::wire::payload::{NotifyPayload, Payload};
use crate::wire::{IkeSpi, NotifyType};
use aws_lc_rs::digest;
use std::net::{IpAddr, SocketAddr};

/// SHA-1(SPIi | SPIr | IP | port), the data of NAT_DETECTION_*_IP notifies.
pub(super) fn hash(spi_i: IkeSpi, spi_r: IkeSpi, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.0.to_be_bytes());
    ctx.update(&spi_r.0.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// Our NAT_DETECTION_SOURCE_IP and _DESTINATION_IP notifies for the path `local` ->
/// `remote`, hashed with the SPIs `spi_i`, `spi_r`. When `forced` (the connection
/// forces UDP encapsulation, `encap = true`) the source hash is random: it cannot
/// match, so the peer believes us translated and encapsulates too, as strongSwan's
/// `encap = yes` has it.
pub(super) fn notifies(
    (spi_i, spi_r): (IkeSpi, IkeSpi),
    local: SocketAddr,
    remote: SocketAddr,
    forced: bool,
    rng: &mut dyn Random,
) -> [Payload; 2] {
    let source = if forced {
        let mut fake = vec![0; 20];
        rng.fill(&mut fake);
        fake
    } else {
        hash(spi_i, spi_r, local)
    };
    [
        Payload::Notify(NotifyPayload::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            source,
        )),
        Payload::Notify(NotifyPayload::new(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            hash(spi_i, spi_r, remote),
        )),
    ]
}

/// NAT detection on the path `local` -> `remote` from the peer's NAT_DETECTION
/// notifies (hashed with the SPIs `spi_i`, `spi_r`): (we are translated, the peer
/// is); None if it sent none.
pub(super) fn detect(
    (spi_i, spi_r): (IkeSpi, IkeSpi),
    payloads: &[Payload],
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<(bool, bool)> {
    let of = |t| crate::wire::message::notifies(payloads).filter(move |n| n.notify_type == t);
    let mut destination = of(NotifyType::NAT_DETECTION_DESTINATION_IP).peekable();
    let mut source = of(NotifyType::NAT_DETECTION_SOURCE_IP).peekable();
    destination.peek()?;
    source.peek()?;
    let (ours, theirs) = (hash(spi_i, spi_r, local), hash(spi_i, spi_r, remote));
    Some((
        !destination.any(|n| n.data == ours),
        !source.any(|n| n.data == theirs),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_spis_address_and_port() {
        let a: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let h = hash(IkeSpi(1), IkeSpi(0), a);
        assert_eq!(h.len(), 20);
        assert_ne!(
            h,
            hash(IkeSpi(1), IkeSpi(0), "192.0.2.1:4500".parse().unwrap())
        );
        assert_ne!(h, hash(IkeSpi(1), IkeSpi(2), a));
        assert_ne!(
            h,
            hash(IkeSpi(1), IkeSpi(0), "192.0.2.2:500".parse().unwrap())
        );
    }
}
