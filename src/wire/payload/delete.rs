//! Delete payload (RFC 7296 §3.11).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Protocol ID   |   SPI Size    |          Num of SPIs          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~               Security Parameter Index(es) (SPI)              ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::ProtocolId;
use crate::wire::reader::{DecodeError, DecodeErrorKind, Reader, Writer};

/// Deletion of the IKE SA (no SPIs) or of Child SAs (their inbound SPIs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePayload {
    /// IKE, AH or ESP.
    pub protocol: ProtocolId,
    /// Size of each SPI: 0 for IKE, 4 for AH and ESP.
    pub spi_size: u8,
    /// The SPIs, each `spi_size` octets.
    pub spis: Vec<Vec<u8>>,
}

impl DeletePayload {
    /// Deletes the IKE SA the message belongs to.
    pub fn ike() -> Self {
        Self {
            protocol: ProtocolId::IKE,
            spi_size: 0,
            spis: Vec::new(),
        }
    }

    /// Deletes ESP Child SAs by the SPIs the sender receives on.
    pub fn esp(spis: &[u32]) -> Self {
        Self {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let protocol = ProtocolId(r.u8("Delete payload protocol")?);
        let spi_size = r.u8("Delete payload SPI size")?;
        let count = usize::from(r.u16("Delete payload SPI count")?);
        let needed = count * usize::from(spi_size);
        if needed != r.remaining() {
            return Err(r.error(
                "Delete payload SPIs",
                DecodeErrorKind::Mismatch {
                    declared: needed,
                    actual: r.remaining(),
                },
            ));
        }
        let mut spis = Vec::with_capacity(if spi_size == 0 { 0 } else { count });
        if spi_size > 0 {
            for _ in 0..count {
                spis.push(r.bytes(spi_size.into(), "Delete payload SPI")?.to_vec());
            }
        } else if count != 0 {
            return Err(r.error(
                "Delete payload SPI count",
                DecodeErrorKind::BadValue {
                    value: count as u64,
                },
            ));
        }
        Ok(Self {
            protocol,
            spi_size,
            spis,
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u8(self.protocol.0);
        w.u8(self.spi_size);
        w.count16(self.spis.len(), "Delete payload SPIs");
        for spi in &self.spis {
            w.bytes(spi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_must_match_spi_bytes() {
        let ok =
            DeletePayload::decode(&mut Reader::new(&[3, 4, 0, 2, 1, 1, 1, 1, 2, 2, 2, 2])).unwrap();
        assert_eq!(ok, DeletePayload::esp(&[0x01010101, 0x02020202]));
        assert!(
            DeletePayload::decode(&mut Reader::new(&[3, 4, 0, 3, 1, 1, 1, 1, 2, 2, 2, 2])).is_err()
        );
        assert!(DeletePayload::decode(&mut Reader::new(&[3, 4, 0, 1, 1, 1, 1, 1, 2])).is_err());
        // A huge count cannot make the decoder allocate: it fails on the size check.
        assert!(DeletePayload::decode(&mut Reader::new(&[3, 255, 255, 255])).is_err());
    }

    #[test]
    fn ike_delete_has_no_spis() {
        assert_eq!(
            DeletePayload::decode(&mut Reader::new(&[1, 0, 0, 0])).unwrap(),
            DeletePayload::ike()
        );
        assert!(DeletePayload::decode(&mut Reader::new(&[1, 0, 0, 5])).is_err());
    }
}
