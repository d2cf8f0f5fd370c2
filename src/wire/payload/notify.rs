//! Notify payload (RFC 7296 §3.10).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Protocol ID  |   SPI Size    |      Notify Message Type      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                Security Parameter Index (SPI)                 ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                       Notification Data                       ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::{NotifyType, ProtocolId};
use crate::wire::reader::{DecodeError, Reader, Writer};

/// An error or status notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPayload {
    /// The protocol of the SA the notify refers to, or NONE.
    pub protocol: ProtocolId,
    /// That SA's SPI, or empty.
    pub spi: Vec<u8>,
    /// The notification; unknown values are kept.
    pub notify_type: NotifyType,
    /// Type-specific data.
    pub data: Vec<u8>,
}

impl NotifyPayload {
    /// A notify about no particular SA.
    pub fn new(notify_type: NotifyType, data: Vec<u8>) -> Self {
        Self {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            notify_type,
            data,
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let protocol = ProtocolId(r.u8("Notify payload protocol")?);
        let spi_size = r.u8("Notify payload SPI size")?;
        let notify_type = NotifyType(r.u16("Notify payload type")?);
        let spi = r.bytes(spi_size.into(), "Notify payload SPI")?.to_vec();
        Ok(Self {
            protocol,
            spi,
            notify_type,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u8(self.protocol.0);
        w.count8(self.spi.len(), "Notify payload SPI");
        w.u16(self.notify_type.0);
        w.bytes(&self.spi);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spi_size_beyond_body_is_rejected() {
        assert!(NotifyPayload::decode(&mut Reader::new(&[3, 4, 0x40, 0x09, 1, 2])).is_err());
        let n =
            NotifyPayload::decode(&mut Reader::new(&[3, 4, 0x40, 0x09, 1, 2, 3, 4, 9])).unwrap();
        assert_eq!(n.notify_type, NotifyType::REKEY_SA);
        assert_eq!(
            (n.spi.as_slice(), n.data.as_slice()),
            (&[1, 2, 3, 4][..], &[9][..])
        );
    }
}
