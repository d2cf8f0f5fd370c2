//! NAT detection (RFC 7296 §2.23): each side hashes the addresses it believes it
//! sends from and to; a mismatch on arrival means a NAT rewrote them.

use crate::wire::IkeSpi;
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
