//! esptun: a userspace IKEv2 (RFC 7296) / ESP (RFC 4303) VPN gateway.
//!
//! ```text
//!   UDP 500/4500 <-> control thread: sans-IO IKE core (ike) driven by control/
//!                        | SaSink: install/update/remove Child SAs
//!                        v
//!   TUN <-> ESP workers, one per core (dataplane/, esp/) <-> UDP 4500 (RFC 3948)
//! ```
//!
//! Module map (the sans-IO modules never read the clock or the OS RNG; callers
//! pass `now` and a [`crypto::Random`] in):
//! - [`wire`]: the IKEv2 codec, no crypto, no state.
//! - [`crypto`]: PRFs, key derivation, key exchange groups, SK payload protection.
//! - [`auth`]: AUTH payload computation and signature verification.
//! - [`ike`]: the IKE engine (proposals, message IDs and retransmission so far).
//! - [`esp`]: sealing and opening ESP packets, the replay window.
//! - [`dataplane`]: the ESP workers, the TUN device, the ESP sockets (I/O).
//! - [`inspect`]: reading pcap captures and printing the IKE exchanges in them.
//! - [`privilege`]: the capabilities the threads keep once everything is open.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod auth;
pub mod config;
pub mod control;
pub mod crypto;
pub mod dataplane;
pub mod esp;
pub mod ike;
pub mod inspect;
pub mod logging;
pub mod netio;
pub mod netlink;
pub mod pki;
pub mod privilege;
pub mod sink;
pub mod wire;
