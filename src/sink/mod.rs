//! Where the control thread puts the Child SAs the engine negotiates: the userspace
//! ESP workers ([`Dataplane`](crate::dataplane::Dataplane), `dataplane.mode =
//! "userspace"`) or the kernel's IPsec through XFRM netlink ([`xfrm::Xfrm`],
//! `"xfrm"`). The engine knows neither; the control thread drives one of them
//! through this trait and hears back through [`DataplaneEvent`](crate::dataplane::DataplaneEvent)s.
//!
//! Both keep the same promises: a configured child is protected from start-up to
//! shutdown (its traffic is held or dropped while it has no SA, never sent in
//! clear); a rekey is make-before-break (inbound first, outbound on
//! [`SaSink::activate`], the old SA opening stragglers until removed); byte and
//! packet lifetimes are enforced below the control thread and reported through
//! [`SaSink::expiries`].

pub mod xfrm;

use crate::ike::ChildSaUp;
use crate::wire::payload::TsRange;
use std::net::{IpAddr, SocketAddr};

/// A configured child to protect from start-up on.
pub struct Protected<'a> {
    /// Index of its connection in the engine's policies.
    pub policy: usize,
    /// Index of the child in the connection.
    pub child: usize,
    /// `connection/child`, for logs.
    pub name: &'a str,
    /// Our selectors, dynamic ones resolved to our address.
    pub local_ts: &'a [TsRange],
    /// The peer's selectors, dynamic ones resolved to its address.
    pub remote_ts: &'a [TsRange],
    /// The IKE addresses (ours, the peer's), when the connection names its peer.
    pub peer: Option<(IpAddr, IpAddr)>,
    /// Transport mode rather than tunnel mode.
    pub transport: bool,
}

/// What the control thread needs of a data plane.
pub trait SaSink {
    /// Protects a configured child until shutdown or [`SaSink::unprotect`]: its
    /// traffic goes through an SA or nowhere, and traffic without an SA asks for
    /// one ([`DataplaneEvent::Acquire`](crate::dataplane::DataplaneEvent::Acquire)). Fails if the protection cannot be put in
    /// place, since the traffic would otherwise leave in clear.
    fn protect(&mut self, child: &Protected) -> Result<(), String>;

    /// Stops protecting the children of connection `policy` (a reload removed it).
    fn unprotect(&mut self, policy: usize);

    /// Ends start-up: what an earlier run left and this one did not take over goes.
    fn drop_stale(&mut self);

    /// Removes every protection: the tunnels are closed on purpose. Without it
    /// (esptun fails, is killed) protected traffic stays blocked.
    fn release(&mut self);

    /// Puts a virtual IP the gateway leased us on this host.
    fn add_virtual_ip(&mut self, addr: IpAddr) -> Result<(), String>;

    /// Takes a virtual IP off this host: its lease is over.
    fn remove_virtual_ip(&mut self, addr: IpAddr);

    /// Installs a Child SA: its inbound side at once, its outbound side too if
    /// [`ChildSaUp::outbound`] says so (otherwise at [`SaSink::activate`]). Fails
    /// only before anything is installed.
    fn install(&mut self, c: &ChildSaUp) -> Result<(), String>;

    /// Sends with the Child SA whose inbound SPI is `spi_in` from now on, ahead of
    /// every older SA of its child.
    fn activate(&mut self, spi_in: u32);

    /// Moves a Child SA to a new path (MOBIKE, or a NAT's new mapping of the
    /// peer), keeping its keys, sequence numbers and counters.
    fn move_child(&mut self, spi_in: u32, local: SocketAddr, remote: SocketAddr, encap: bool);

    /// Removes a Child SA, both directions, and returns its final counters line.
    fn remove(&mut self, spi_in: u32) -> Option<String>;

    /// Inbound SPIs of the Child SAs that opened packets since the last call.
    fn inbound_active(&mut self) -> Vec<u32>;

    /// Child SAs that crossed a soft or hard byte or packet limit since the last
    /// call: (inbound SPI, hard, which limit), each limit once.
    fn expiries(&mut self) -> Vec<(u32, bool, &'static str)>;

    /// A Child SA's traffic so far: (packets, bytes) in, then out.
    fn traffic(&self, spi_in: u32) -> Option<((u64, u64), (u64, u64))>;

    /// How many Child SAs are installed.
    fn installed(&self) -> usize;

    /// Packets dropped so far, by reason.
    fn drops(&self) -> Vec<(&'static str, u64)>;

    /// How many batches of each size (the index) the data plane moved: outbound,
    /// inbound, and datagrams per UDP GRO receive; empty where the kernel does the
    /// batching.
    fn batch_sizes(&self) -> [Vec<u64>; 3];

    /// Packets each worker moved: (read from the TUN, received from the network);
    /// empty where the kernel carries them.
    fn worker_packets(&self) -> Vec<(u64, u64)>;

    /// ESP that reached the control thread's NAT-T socket (`local`, from `remote`):
    /// the rest of a GSO or GRO train whose first datagram was IKE, which the kernel
    /// delivers to the socket that one is steered to.
    fn stray_esp(&mut self, local: SocketAddr, remote: SocketAddr, datagram: &[u8]);

    /// Per-SA traffic and the drop counters, one line each.
    fn report(&self) -> String;
}

/// The final counters line of a Child SA, the same in both modes.
pub fn describe(
    name: &str,
    spi_in: u32,
    spi_out: u32,
    (in_packets, in_bytes): (u64, u64),
    (out_packets, out_bytes): (u64, u64),
) -> String {
    format!(
        "CHILD_SA {name} {spi_in:08x}_i {spi_out:08x}_o: in {in_packets} packets {in_bytes} bytes, out {out_packets} packets {out_bytes} bytes"
    )
}
