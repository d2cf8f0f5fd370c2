//! Key Exchange payload (RFC 7296 §3.4).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Diffie-Hellman Group Num    |           RESERVED            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                       Key Exchange Data                       ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::enums::KeGroup;
use crate::wire::reader::{DecodeError, Reader, Writer};

/// A public key-exchange value for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KePayload {
    /// The group the value belongs to.
    pub group: KeGroup,
    /// The public value, encoded as the group's RFC prescribes.
    pub data: Vec<u8>,
}

impl KePayload {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let group = KeGroup(r.u16("KE payload group")?);
        r.u16("KE payload")?;
        Ok(Self {
            group,
            data: r.rest().to_vec(),
        })
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.u16(self.group.0);
        w.u16(0);
        w.bytes(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_group_and_data_and_rejects_short_body() {
        let ke = KePayload::decode(&mut Reader::new(&[0, 31, 0, 0, 5, 6])).unwrap();
        assert_eq!(ke.group, KeGroup::CURVE25519);
        assert_eq!(ke.data, [5, 6]);
        assert!(KePayload::decode(&mut Reader::new(&[0, 31, 0])).is_err());
    }
}
