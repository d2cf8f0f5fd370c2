//! The sans-IO IKE engine: proposals, exchanges and IKE SA state, driven by an
//! explicit clock and an injected random generator.
//!
//! The driver owns sockets and timers and talks to an [`Endpoint`] in one grammar:
//! `handle(now, local, remote, datagram)` for each IKE datagram (without the non-ESP
//! marker), `handle_timeout(now)` when [`Endpoint::poll_timeout`] is reached, and after
//! either of them drains [`Endpoint::poll_event`] then [`Endpoint::poll_transmit`].
//! Events come first: a Child SA must be installed before the answer that lets the peer
//! send with it is on the wire (make-before-break).

mod admission;
mod endpoint;
mod ephemeral;
mod error;
pub mod exchange;
mod ike_sa;
mod natd;
mod pool;
pub mod proposal;
mod task;
pub mod ts;

pub use endpoint::{Endpoint, Settings};
pub use error::Error;
pub use pool::AddressPool;

/// Our inbound SPIs of spread Child SAs have this bit set, all others clear: the
/// data plane spreads a spread SA's packets over its workers by sequence number, and
/// its steering programs see only the SPI to tell.
pub const SPREAD_SPI_BIT: u32 = 1 << 31;

/// True if our inbound SPI `spi` is a spread Child SA's ([`ChildPolicy::spread`]).
pub fn is_spread(spi: u32) -> bool {
    spi & SPREAD_SPI_BIT != 0
}

use crate::auth::identity::RemoteId;
use crate::auth::private_key::PrivateKey;
use crate::auth::x509::TrustAnchors;
use crate::crypto::{Encr, IkeKeys, IkeSuite, Integ, Secret};
use crate::wire::payload::{Identity, Payload, Proposal, TsRange};
use crate::wire::{ExchangeType, IkeSpi, NotifyType};
use std::net::{IpAddr, SocketAddr};
use std::ops::Add;
use std::sync::Arc;
use std::time::Duration;

/// A point on the driver's monotonic clock: the time since the driver started.
///
/// The engine never reads a clock; drivers pass `now` in, tests pass virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub Duration);

impl Add<Duration> for Instant {
    type Output = Self;

    fn add(self, rhs: Duration) -> Self {
        Self(self.0.saturating_add(rhs))
    }
}

/// One connection as the engine sees it: who we are, whom we accept, what we offer.
#[derive(Debug)]
pub struct Policy {
    /// Name for logs and events.
    pub name: String,
    /// Our addresses for this connection; empty matches any.
    pub local_addrs: Vec<IpAddr>,
    /// The peer's addresses; empty accepts any peer.
    pub remote_addrs: Vec<IpAddr>,
    /// IKE proposals in our order of preference.
    pub proposals: Vec<Proposal>,
    /// UDP-encapsulate (float to the NAT-T port) even without NAT.
    pub encap: bool,
    /// Largest IP datagram an IKE message or fragment may make (RFC 7383).
    pub fragment_size: usize,
    /// How we authenticate.
    pub local: LocalAuth,
    /// How the peer must authenticate.
    pub remote: RemoteAuth,
    /// The Child SAs to negotiate; the first one is created with the IKE SA.
    pub children: Vec<ChildPolicy>,
    /// When the IKE SA is rekeyed and when it must end.
    pub ike_lifetime: IkeLifetime,
    /// Send a liveness check after this long without anything from the peer (DPD).
    pub dpd_delay: Option<Duration>,
    /// Initiations tried before giving up; 0 tries forever.
    pub keyingtries: u32,
    /// As the peer's gateway: the pools (by name) its virtual IPs are leased from,
    /// first one with room first; dynamic remote selectors then mean those addresses.
    pub pools: Vec<String>,
    /// As the peer's client: the virtual IPs we ask for (0.0.0.0 or :: for any of
    /// that family); dynamic local selectors then mean the addresses we get.
    pub vips: Vec<IpAddr>,
    /// Announce MOBIKE (RFC 4555): a client moves its SAs when its address changes.
    pub mobike: bool,
}

/// The IKE SA's lifetime, as swanctl's connection `rekey_time`, `over_time`, `rand_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeLifetime {
    /// Rekey after this long (less a random part of `rand_time`); None never rekeys.
    pub rekey_time: Option<Duration>,
    /// The hard end, this long after `rekey_time`.
    pub over_time: Duration,
    /// Up to this much is taken off `rekey_time` at random, so peers rarely collide.
    pub rand_time: Duration,
}

impl Default for IkeLifetime {
    /// swanctl's defaults: rekey after 4 h, hard end 10 % later, spread over that 10 %.
    fn default() -> Self {
        Self {
            rekey_time: Some(Duration::from_secs(4 * 3600)),
            over_time: Duration::from_secs(1440),
            rand_time: Duration::from_secs(1440),
        }
    }
}

/// What happens to a child at start-up (`start_action`), when the peer is found
/// dead (`dpd_action`) and when the peer closes it (`close_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Nothing more (swanctl's `none` and `clear`): its selectors stay routed into
    /// the TUN and their packets are dropped.
    #[default]
    None,
    /// Negotiate it when the first packet for its selectors arrives.
    Trap,
    /// Negotiate it (again) right away (swanctl's `start` and `restart`).
    Start,
}

/// Our identity and credential.
#[derive(Debug)]
pub enum LocalAuth {
    /// Signature with a private key, sending its certificate chain.
    Pubkey {
        /// Our identity (IDi or IDr).
        id: Identity,
        /// Leaf certificate first, then intermediates, DER.
        certs: Vec<Vec<u8>>,
        /// The leaf's private key.
        key: Arc<PrivateKey>,
    },
    /// Pre-shared key.
    Psk {
        /// Our identity.
        id: Identity,
        /// The shared key.
        psk: Secret,
    },
}

/// The identity and credential we demand from the peer.
#[derive(Debug)]
pub enum RemoteAuth {
    /// Signature by a certificate that chains to one of `anchors`.
    Pubkey {
        /// The identity the peer may claim (its certificate must hold it too).
        id: RemoteId,
        /// The CAs we trust for this peer.
        anchors: Arc<TrustAnchors>,
    },
    /// Pre-shared key.
    Psk {
        /// The identity the peer may claim.
        id: RemoteId,
        /// The shared key.
        psk: Secret,
    },
}

impl LocalAuth {
    /// Our identity.
    pub fn id(&self) -> &Identity {
        match self {
            Self::Pubkey { id, .. } | Self::Psk { id, .. } => id,
        }
    }

    /// How we authenticate, in words (`pubkey` as swanctl names it, or `psk`).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Pubkey { .. } => "pubkey",
            Self::Psk { .. } => "psk",
        }
    }
}

impl RemoteAuth {
    /// The identity the peer may claim.
    pub fn id(&self) -> &RemoteId {
        match self {
            Self::Pubkey { id, .. } | Self::Psk { id, .. } => id,
        }
    }
}

/// One Child SA to negotiate. The default has no proposals, selects the IKE
/// addresses, and has no lifetimes or actions: a base for what differs.
#[derive(Debug, Clone, Default)]
pub struct ChildPolicy {
    /// Name for logs and events.
    pub name: String,
    /// Our side's selectors; empty means our IKE address.
    pub local_ts: Vec<TsRange>,
    /// The peer's side; empty means the peer's IKE address.
    pub remote_ts: Vec<TsRange>,
    /// ESP proposals in our order of preference.
    pub esp_proposals: Vec<Proposal>,
    /// Ask for (and grant) transport mode with USE_TRANSPORT_MODE instead of tunnel mode.
    pub transport: bool,
    /// Offer (and grant) a Child SA per data plane resource (RFC 9611, SA_RESOURCE_INFO).
    pub per_resource: bool,
    /// Its SAs that are not per-resource are spread: their inbound SPIs carry
    /// [`SPREAD_SPI_BIT`], and the data plane shares their packets out among its
    /// resources by sequence number (for peers without RFC 9611).
    pub spread: bool,
    /// When its Child SAs should be rekeyed (soft) and must end (hard).
    pub lifetime: Lifetime,
    /// Up to this much is taken off the soft time limit at random (swanctl's `rand_time`).
    pub rand_time: Duration,
    /// At start-up: negotiate, arm a trap, or wait for the peer.
    pub start_action: Action,
    /// When the peer stops answering.
    pub dpd_action: Action,
    /// When the peer deletes the Child SA or its IKE SA.
    pub close_action: Action,
}

/// The soft and hard lifetimes of a Child SA (RFC 4301 §4.4.2.1). The engine keeps
/// the time limits; the data plane counts bytes and packets and reports crossings
/// with [`Endpoint::expire_child`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// Reaching any of these asks for a rekey.
    pub soft: Limits,
    /// Reaching any of these ends the Child SA.
    pub hard: Limits,
}

/// Limits of one kind; None is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Time since the Child SA was negotiated.
    pub time: Option<Duration>,
    /// Inner bytes in either direction.
    pub bytes: Option<u64>,
    /// Packets in either direction.
    pub packets: Option<u64>,
}

/// A datagram for the driver to send: from `local` (whose port picks the socket;
/// on the NAT-T port the driver adds the non-ESP marker) to `remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The IKE message.
    pub data: Vec<u8>,
}

/// Something the driver should know, log or act on.
#[derive(Debug)]
pub enum Event {
    /// An IKE message was sent or received (after decryption), for the log.
    Message(MessageRecord),
    /// A line for the log about one IKE SA.
    Log {
        /// The IKE SA, by its initiator SPI.
        spi_i: IkeSpi,
        /// Its connection, once known (a responder knows it after IKE_AUTH).
        connection: Option<String>,
        /// What happened.
        text: String,
    },
    /// An IKE SA was authenticated on both sides.
    IkeSaUp(Box<IkeSaUp>),
    /// An IKE SA was rekeyed: `up` replaces `old` and took over its Child SAs; `old`
    /// is deleted next (its [`Event::IkeSaDown`] then concerns no Child SA).
    IkeSaRekeyed {
        /// The replaced IKE SA's initiator SPI.
        old: IkeSpi,
        /// The new IKE SA.
        up: Box<IkeSaUp>,
    },
    /// An IKE SA is gone; its Child SAs with it.
    IkeSaDown {
        /// The IKE SA's SPIs.
        spi_i: IkeSpi,
        /// The responder SPI (zero if never learned).
        spi_r: IkeSpi,
        /// Its connection.
        connection: String,
        /// Why.
        reason: DownReason,
    },
    /// A Child SA was negotiated: install its inbound side, and its outbound side
    /// too when [`ChildSaUp::outbound`] says so.
    ChildSaUp(Box<ChildSaUp>),
    /// Send with this Child SA from now on (the peer has its inbound side): it takes
    /// precedence over every older SA with the same selectors.
    ChildSaOutbound {
        /// The IKE SA.
        spi_i: IkeSpi,
        /// Our inbound SPI, which names the Child SA.
        spi_in: u32,
    },
    /// The IKE SA's addresses changed (MOBIKE, or a NAT that mapped the peer anew):
    /// its Child SAs send from `local` to `remote` from now on.
    IkeSaMoved {
        /// The IKE SA.
        spi_i: IkeSpi,
        /// Our address and port.
        local: SocketAddr,
        /// The peer's address and port.
        remote: SocketAddr,
        /// ESP goes in UDP (RFC 3948) on these ports.
        encap: bool,
        /// Our address is translated now: we owe the NAT keepalives.
        behind_nat: bool,
        /// Its Child SAs, by our inbound SPI.
        children: Vec<u32>,
    },
    /// A Child SA could not be negotiated; its IKE SA stays up.
    ChildSaFailed {
        /// The IKE SA.
        spi_i: IkeSpi,
        /// The child's name.
        child: String,
        /// The error (ours or the peer's notify).
        reason: Error,
    },
    /// A Child SA was deleted, or rekeyed and its grace period for stragglers is
    /// over: remove both directions. Every Child SA of an IKE SA that goes down
    /// gets one before the [`Event::IkeSaDown`].
    ChildSaDown {
        /// The IKE SA.
        spi_i: IkeSpi,
        /// Our inbound SPI.
        spi_in: u32,
        /// The peer's inbound SPI (our outbound).
        spi_out: u32,
    },
}

/// Running totals of the engine's work, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// IKE SAs begun: IKE_SA_INITs we sent, and half-open SAs a peer's made (the
    /// requests refused statelessly, a flood's, are not counted).
    pub handshakes_started: u64,
    /// Requests sent again for want of an answer.
    pub retransmits: u64,
}

/// Why an IKE SA went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The peer stopped answering: retransmissions ran out.
    PeerDead,
    /// A responder's half-open SA was not completed in time.
    HalfOpenExpired,
    /// The peer deleted it.
    DeletedByPeer,
    /// We deleted it.
    DeletedLocally,
    /// Negotiation failed on our side; the peer was told with `error.notify()`.
    Failed(Error),
    /// The peer refused with an error notify.
    Refused(NotifyType),
    /// The peer started afresh (INITIAL_CONTACT on a new IKE SA): this one is stale.
    Replaced,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerDead => f.write_str("peer not answering"),
            Self::HalfOpenExpired => f.write_str("half-open SA expired"),
            Self::DeletedByPeer => f.write_str("deleted by peer"),
            Self::DeletedLocally => f.write_str("deleted"),
            Self::Failed(e) => write!(f, "{e} (sent {})", e.notify()),
            Self::Refused(n) => write!(f, "peer refused with {n}"),
            Self::Replaced => f.write_str("replaced: the peer sent INITIAL_CONTACT"),
        }
    }
}

/// A message as logged.
#[derive(Debug, Clone)]
pub struct MessageRecord {
    /// The IKE SA, by its initiator SPI.
    pub spi_i: IkeSpi,
    /// Its connection, once known (a responder knows it after IKE_AUTH).
    pub connection: Option<String>,
    /// True for a message we sent.
    pub sent: bool,
    /// The exchange.
    pub exchange: ExchangeType,
    /// True for a response.
    pub response: bool,
    /// Its message ID.
    pub message_id: u32,
    /// Total bytes on the wire (all fragments).
    pub bytes: usize,
    /// Datagrams it took (more than one when fragmented).
    pub fragments: usize,
    /// The peer.
    pub peer: SocketAddr,
    /// The payloads, decrypted.
    pub payloads: Vec<Payload>,
}

/// A newly authenticated IKE SA.
#[derive(Debug)]
pub struct IkeSaUp {
    /// Initiator SPI.
    pub spi_i: IkeSpi,
    /// Responder SPI.
    pub spi_r: IkeSpi,
    /// True if we initiated it.
    pub initiator: bool,
    /// Its connection.
    pub connection: String,
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// Our address is translated, so we send NAT keepalives to keep the mapping.
    pub behind_nat: bool,
    /// Our identity.
    pub local_id: Identity,
    /// The peer's authenticated identity.
    pub remote_id: Identity,
    /// The client's virtual IPs: leased to the peer by us, or to us by the peer.
    pub virtual_ips: Vec<IpAddr>,
    /// DNS servers the gateway named (when we are its client).
    pub dns: Vec<IpAddr>,
    /// Negotiated algorithms.
    pub suite: IkeSuite,
    /// Its keys, for key logging.
    pub keys: IkeKeys,
}

/// A negotiated Child SA, everything a data plane needs.
#[derive(Debug)]
pub struct ChildSaUp {
    /// The IKE SA it belongs to.
    pub spi_i: IkeSpi,
    /// Its connection.
    pub connection: String,
    /// The child's name.
    pub child: String,
    /// Our inbound SPI.
    pub spi_in: u32,
    /// The peer's inbound SPI, which we send with.
    pub spi_out: u32,
    /// Encryption algorithm.
    pub encr: Encr,
    /// Integrity algorithm (None for AEAD).
    pub integ: Option<Integ>,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Keys for traffic we receive: encryption (with salt) and integrity.
    pub keys_in: (Secret, Secret),
    /// Keys for traffic we send.
    pub keys_out: (Secret, Secret),
    /// Our selectors.
    pub local_ts: Vec<TsRange>,
    /// The peer's selectors.
    pub remote_ts: Vec<TsRange>,
    /// Transport mode (both sides sent USE_TRANSPORT_MODE); tunnel mode otherwise.
    pub transport: bool,
    /// One of its child's per-resource SAs (RFC 9611: both sides sent
    /// SA_RESOURCE_INFO): the worker its inbound SPI is steered to sends with it.
    pub per_resource: bool,
    /// True for UDP encapsulation (RFC 3948) on the IKE SA's NAT-T ports.
    pub encap: bool,
    /// Our outer address and port.
    pub local: SocketAddr,
    /// The peer's outer address and port.
    pub remote: SocketAddr,
    /// Its lifetimes (the data plane enforces bytes and packets).
    pub lifetime: Lifetime,
    /// When the engine will rekey it, from now (its soft time less a random part
    /// of `rand_time`); None if time never rekeys it.
    pub rekey_after: Option<Duration>,
    /// Start sending with it at once; otherwise wait for [`Event::ChildSaOutbound`].
    pub outbound: bool,
    /// The inbound SPI of the Child SA this one rekeys.
    pub rekeys: Option<u32>,
    /// Index of its connection in the endpoint's policies.
    pub policy: usize,
    /// Index of its child in the connection's children.
    pub child_index: usize,
}
