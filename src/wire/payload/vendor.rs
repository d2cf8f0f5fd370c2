//! Vendor ID payload (RFC 7296 §3.12): an opaque identifier, usually a hash.

use crate::wire::reader::{Reader, Writer};

/// A Vendor ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPayload {
    /// The vendor identifier bytes.
    pub id: Vec<u8>,
}

impl VendorPayload {
    pub(super) fn decode(r: &mut Reader<'_>) -> Self {
        Self {
            id: r.rest().to_vec(),
        }
    }

    pub(super) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.id);
    }
}
