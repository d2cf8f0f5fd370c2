//! The IKEv2 codec: messages and payloads to and from bytes.
//!
//! No crypto, no state, no I/O. Decoders take hostile input: every length is
//! checked against the bytes present, errors say what was wrong and where, and
//! nothing is allocated beyond a constant factor of the datagram.

pub mod der;
pub mod enums;
pub mod header;
pub mod message;
pub mod payload;
pub mod reader;
pub mod rules;

pub use enums::*;
pub use header::{Flags, Header, IkeSpi};
pub use message::Message;
pub use payload::Payload;
pub use reader::{DecodeError, DecodeErrorKind, EncodeError, Reader, Writer};

/// The IKE major version this codec speaks.
pub const IKE_MAJOR_VERSION: u8 = 2;
/// Length of the fixed IKE header.
pub const IKE_HEADER_LEN: usize = 28;
/// The four zero octets that mark IKE on the UDP 4500 port (RFC 3948 §2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
