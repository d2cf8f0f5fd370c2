//! The kernel data plane (`dataplane.mode = "xfrm"`): the control thread
//! negotiates, the kernel's IPsec carries the packets, configured over XFRM
//! netlink as strongSwan's kernel-netlink plugin does.
//!
//! - Each Child SA is two XFRM states (AEAD or CBC+HMAC, ESN and replay window,
//!   UDP encapsulation on the NAT-T ports, byte and packet lifetimes as the
//!   kernel's soft and hard limits). The outbound one is added only when the SA is
//!   activated: the kernel sends with the newest state of a reqid at once, so that
//!   is the whole make-before-break.
//! - Each configured child has its own reqid, and policies (out, in, and fwd in
//!   tunnel mode) whose template names it. A protected child's policies are in
//!   from start-up: without a state the kernel drops its packets and raises an
//!   ACQUIRE, which becomes [`DataplaneEvent::Acquire`]. Where the peer is not
//!   known in advance (road warriors), blocking policies stand in until an SA
//!   brings its own.
//! - Soft and hard EXPIREs come back through [`SaSink::expiries`]; MAPPINGs (ESP in
//!   UDP from a new NAT mapping of the peer) as [`DataplaneEvent::PeerMoved`].
//!
//! What is ours is told by number: reqids carry [`REQID_TAG`] and policy
//! priorities lie within [`PRIORITY_BASE`]'s band. Start-up deletes the states an
//! earlier run left (their keys died with it) and keeps its policies until the
//! children are protected again, so that nothing leaks in between; a clean stop
//! deletes all of ours and nobody else's.

use super::{Protected, SaSink, describe};
use crate::crypto::Secret;
use crate::crypto::suite::{Encr, Integ};
use crate::dataplane::DataplaneEvent;
use crate::ike::{ChildSaUp, Lifetime, Limits};
use crate::netlink::{Netlink, attribute, attributes};
use crate::wire::payload::{AddrRange, TsRange};
use nix::libc;
use nix::sys::socket::setsockopt;
use nix::{setsockopt_impl, sockopt_impl};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use zeroize::Zeroizing;

const XFRM_MSG_NEWSA: u16 = 16;
const XFRM_MSG_DELSA: u16 = 17;
const XFRM_MSG_GETSA: u16 = 18;
const XFRM_MSG_DELPOLICY: u16 = 20;
const XFRM_MSG_GETPOLICY: u16 = 21;
const XFRM_MSG_ACQUIRE: u16 = 23;
const XFRM_MSG_EXPIRE: u16 = 24;
const XFRM_MSG_UPDPOLICY: u16 = 25;
const XFRM_MSG_MAPPING: u16 = 38;
const XFRMA_ALG_CRYPT: u16 = 2;
const XFRMA_ENCAP: u16 = 4;
const XFRMA_TMPL: u16 = 5;
const XFRMA_LTIME_VAL: u16 = 9;
const XFRMA_ALG_AEAD: u16 = 18;
const XFRMA_ALG_AUTH_TRUNC: u16 = 20;
const XFRMA_REPLAY_ESN_VAL: u16 = 23;
const XFRMNLGRP_ACQUIRE: u32 = 1;
const XFRMNLGRP_EXPIRE: u32 = 2;
const XFRMNLGRP_MAPPING: u32 = 8;
const IPPROTO_ESP: u8 = 50;
const XFRM_MODE_TRANSPORT: u8 = 0;
const XFRM_MODE_TUNNEL: u8 = 1;
const XFRM_POLICY_IN: u8 = 0;
const XFRM_POLICY_OUT: u8 = 1;
const XFRM_POLICY_FWD: u8 = 2;
const XFRM_POLICY_ALLOW: u8 = 0;
const XFRM_POLICY_BLOCK: u8 = 1;
const XFRM_STATE_AF_UNSPEC: u8 = 32;
const XFRM_STATE_ESN: u8 = 128;
/// "No limit" for byte and packet lifetimes (0 would expire at once).
const XFRM_INF: u64 = u64::MAX;
const UDP_ENCAP_ESPINUDP: i32 = 2;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// sizeof(struct xfrm_usersa_info), and of the other fixed headers used here.
const USERSA_INFO: usize = 224;
const USERSA_ID: usize = 24;
const USERPOLICY_INFO: usize = 168;
const USERPOLICY_ID: usize = 64;
const USER_TMPL: usize = 64;
const USER_ACQUIRE: usize = 280;
const SELECTOR: usize = 56;
/// The replay bitmap the kernel accepts at most (XFRMA_REPLAY_ESN_MAX is 4096
/// bytes, header included), in packets.
const MAX_REPLAY_WINDOW: u32 = (4096 - 24) / 4 * 32;

/// The top bits of every reqid esptun uses; the rest counts configured children.
pub const REQID_TAG: u32 = 0xe570_0000;
const REQID_MASK: u32 = 0xfff0_0000;
/// esptun's policy priorities lie within `PRIORITY_BASE..PRIORITY_BASE + 0x1_0000`:
/// lower is preferred, so more specific selectors get lower values, and blocking
/// policies the highest.
pub const PRIORITY_BASE: u32 = 0x0e57_0000;
const BLOCK_PRIORITY: u32 = PRIORITY_BASE + 0xf000;

sockopt_impl!(
    /// UDP_ENCAP: the kernel takes ESP in UDP off this socket (RFC 3948) and
    /// leaves it what starts with the non-ESP marker.
    UdpEncap,
    SetOnly,
    libc::SOL_UDP,
    libc::UDP_ENCAP,
    i32
);
sockopt_impl!(
    /// IP_XFRM_POLICY: a per-socket policy, ahead of the global ones.
    Ipv4Policy,
    SetOnly,
    libc::IPPROTO_IP,
    libc::IP_XFRM_POLICY,
    [u8; USERPOLICY_INFO]
);
sockopt_impl!(
    /// IPV6_XFRM_POLICY: a per-socket policy, ahead of the global ones.
    Ipv6Policy,
    SetOnly,
    libc::IPPROTO_IPV6,
    libc::IPV6_XFRM_POLICY,
    [u8; USERPOLICY_INFO]
);

/// Prepares an IKE socket for kernel ESP: no policy of ours ever applies to IKE
/// (a transport-mode child between the same hosts would otherwise catch it), and
/// on the NAT-T port the kernel takes the ESP and leaves the IKE.
pub fn prepare_ike_socket(socket: &impl AsFd, ipv4: bool, natt: bool) -> io::Result<()> {
    let family = if ipv4 { AF_INET } else { AF_INET6 };
    for dir in [XFRM_POLICY_IN, XFRM_POLICY_OUT] {
        let mut bypass = [0u8; USERPOLICY_INFO];
        bypass[40..42].copy_from_slice(&family.to_ne_bytes());
        bypass[160] = dir;
        bypass[161] = XFRM_POLICY_ALLOW;
        if ipv4 {
            setsockopt(socket, Ipv4Policy, &bypass)?;
        } else {
            setsockopt(socket, Ipv6Policy, &bypass)?;
        }
    }
    if natt {
        setsockopt(socket, UdpEncap, &UDP_ENCAP_ESPINUDP)?;
    }
    Ok(())
}

/// One direction of an XFRM selector: a prefix and a port block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct End {
    prefix: (IpAddr, u8),
    /// Port and mask (0, 0 for any).
    port: (u16, u16),
}

/// A policy's key in the kernel: selector and direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PolicyKey {
    src: End,
    dst: End,
    proto: u8,
    dir: u8,
}

/// What a policy does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Protect with an SA of `reqid` between these outer addresses (src, dst).
    Tmpl {
        reqid: u32,
        outer: (IpAddr, IpAddr),
        transport: bool,
    },
    /// Drop: the peer that will protect it is not known yet.
    Block,
}

/// One of our policies in the kernel.
struct Policy {
    action: Action,
    /// Installed SAs that rely on it.
    users: usize,
    /// Connections that protect it from start-up.
    protectors: HashSet<usize>,
}

/// An installed Child SA, with what it takes to add its states again.
struct Sa {
    name: String,
    spi_in: u32,
    spi_out: u32,
    reqid: u32,
    encr: Encr,
    integ: Option<Integ>,
    esn: bool,
    keys_in: (Secret, Secret),
    keys_out: (Secret, Secret),
    local: SocketAddr,
    remote: SocketAddr,
    encap: bool,
    transport: bool,
    lifetime: Lifetime,
    /// Its outbound state is in the kernel.
    active: bool,
    policies: Vec<PolicyKey>,
    /// Soft and hard limits already reported.
    reported: (bool, bool),
    /// Inbound packets at the last [`SaSink::inbound_active`].
    seen: u64,
}

/// A kernel EXPIRE: which state, and whether it is hard.
struct Expire {
    spi: u32,
    daddr: IpAddr,
    hard: bool,
    cause: &'static str,
}

/// The kernel data plane.
pub struct Xfrm {
    netlink: Netlink,
    replay_window: u32,
    /// Each configured child's reqid, and back (the ACQUIRE listener reads it).
    reqids: HashMap<(usize, usize), u32>,
    children: Arc<Mutex<HashMap<u32, (usize, usize)>>>,
    policies: HashMap<PolicyKey, Policy>,
    /// Policies an earlier run left, kept until [`SaSink::drop_stale`].
    stale: Vec<Vec<u8>>,
    installed: HashMap<u32, Sa>,
    expired: crossbeam_channel::Receiver<Expire>,
}

impl Xfrm {
    /// Opens XFRM netlink, deletes the states an earlier run left, and starts
    /// listening for ACQUIREs and EXPIREs; returns with it the receiver of the
    /// events the control thread acts on.
    pub fn start(replay_window: u64) -> io::Result<(Self, UnboundedReceiver<DataplaneEvent>)> {
        let netlink = Netlink::open(libc::NETLINK_XFRM)?;
        let listener = Netlink::subscribe(
            libc::NETLINK_XFRM,
            [XFRMNLGRP_ACQUIRE, XFRMNLGRP_EXPIRE, XFRMNLGRP_MAPPING]
                .iter()
                .fold(0, |groups, g| groups | 1 << (g - 1)),
        )?;
        let mut stale_states = Vec::new();
        netlink.dump(XFRM_MSG_GETSA, &[], |body| {
            if body.len() >= USERSA_INFO && is_our_reqid(u32_at(body, 208)) {
                stale_states.push(state_id(body));
            }
        })?;
        for id in stale_states {
            let _ = netlink.request(XFRM_MSG_DELSA, 0, &id);
        }
        let mut stale = Vec::new();
        netlink.dump(XFRM_MSG_GETPOLICY, &[], |body| {
            if body.len() >= USERPOLICY_INFO && is_our_priority(u32_at(body, 152)) {
                stale.push(policy_id_of(body));
            }
        })?;
        let (events, receiver) = unbounded_channel();
        let (expire_tx, expired) = crossbeam_channel::unbounded();
        let children = Arc::new(Mutex::new(HashMap::new()));
        let listened = children.clone();
        std::thread::Builder::new()
            .name("xfrm-events".into())
            .spawn(move || listen(&listener, &listened, &events, &expire_tx))?;
        let xfrm = Self {
            netlink,
            replay_window: u32::try_from(replay_window)
                .unwrap_or(u32::MAX)
                .min(MAX_REPLAY_WINDOW),
            reqids: HashMap::new(),
            children,
            policies: HashMap::new(),
            stale,
            installed: HashMap::new(),
            expired,
        };
        Ok((xfrm, receiver))
    }

    /// The reqid of configured child `child` of connection `policy`.
    fn reqid(&mut self, policy: usize, child: usize) -> u32 {
        let next = REQID_TAG | (self.reqids.len() as u32 + 1);
        *self.reqids.entry((policy, child)).or_insert_with(|| {
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(next, (policy, child));
            next
        })
    }

    /// Puts policy `key` in with `action` (replacing what it did) unless it is in
    /// already and does that.
    fn put_policy(&mut self, key: &PolicyKey, action: Action) -> io::Result<&mut Policy> {
        let body = policy_message(key, action);
        self.stale.retain(|id| *id != policy_id(key));
        let same = self.policies.get(key).is_some_and(|p| p.action == action);
        if !same {
            self.netlink.request(XFRM_MSG_UPDPOLICY, 0, &body)?;
        }
        let policy = self.policies.entry(key.clone()).or_insert(Policy {
            action,
            users: 0,
            protectors: HashSet::new(),
        });
        policy.action = action;
        Ok(policy)
    }

    /// Deletes policy `key` if nothing needs it any more.
    fn release_policy(&mut self, key: &PolicyKey) {
        let Some(policy) = self.policies.get(key) else {
            return;
        };
        if policy.users > 0 || !policy.protectors.is_empty() {
            return;
        }
        self.policies.remove(key);
        if let Err(e) = self.netlink.request(XFRM_MSG_DELPOLICY, 0, &policy_id(key)) {
            crate::warn!("delete XFRM policy {}: {e}", describe_key(key));
        }
    }

    /// Adds the inbound (`inbound`) or outbound state of `sa`, carrying on from
    /// `carried` (the replay state and counters of the state it replaces) if given.
    fn add_state(&self, sa: &Sa, inbound: bool, carried: &[(u16, Vec<u8>)]) -> io::Result<()> {
        let body = Zeroizing::new(state_message(sa, inbound, self.replay_window, carried));
        self.netlink.request(XFRM_MSG_NEWSA, 0, &body)
    }

    /// The id of the inbound or outbound state of `sa`.
    fn state_of(sa: &Sa, inbound: bool) -> Vec<u8> {
        if inbound {
            usersa_id(sa.local.ip(), sa.spi_in)
        } else {
            usersa_id(sa.remote.ip(), sa.spi_out)
        }
    }

    /// The state's (packets, bytes), if the kernel has it.
    fn counters(&self, id: &[u8]) -> Option<(u64, u64)> {
        let body = self.netlink.query(XFRM_MSG_GETSA, id).ok()?;
        (body.len() >= USERSA_INFO).then(|| (u64_at(&body, 168), u64_at(&body, 160)))
    }

    /// The policies for an SA or a protected child between `local_ts` and
    /// `remote_ts`: out, in, and (tunnel mode) fwd.
    fn keys(local_ts: &[TsRange], remote_ts: &[TsRange], transport: bool) -> Vec<PolicyKey> {
        let mut keys = Vec::new();
        for (ours, theirs, proto) in pairs(local_ts, remote_ts) {
            keys.push(PolicyKey {
                src: ours,
                dst: theirs,
                proto,
                dir: XFRM_POLICY_OUT,
            });
            let dirs: &[u8] = if transport {
                &[XFRM_POLICY_IN]
            } else {
                &[XFRM_POLICY_IN, XFRM_POLICY_FWD]
            };
            for &dir in dirs {
                keys.push(PolicyKey {
                    src: theirs,
                    dst: ours,
                    proto,
                    dir,
                });
            }
        }
        keys
    }

    /// A policy's template for an SA from `local` to `remote` (swapped inbound).
    fn tmpl(key: &PolicyKey, reqid: u32, local: IpAddr, remote: IpAddr, transport: bool) -> Action {
        let outer = if key.dir == XFRM_POLICY_OUT {
            (local, remote)
        } else {
            (remote, local)
        };
        Action::Tmpl {
            reqid,
            outer,
            transport,
        }
    }
}

impl SaSink for Xfrm {
    fn protect(&mut self, child: &Protected) -> Result<(), String> {
        let reqid = self.reqid(child.policy, child.child);
        for key in Self::keys(child.local_ts, child.remote_ts, child.transport) {
            let action = match child.peer {
                Some((local, remote)) => Self::tmpl(&key, reqid, local, remote, child.transport),
                None => Action::Block,
            };
            let policy = self
                .put_policy(&key, action)
                .map_err(|e| format!("{}: XFRM policy {}: {e}", child.name, describe_key(&key)))?;
            policy.protectors.insert(child.policy);
        }
        Ok(())
    }

    fn unprotect(&mut self, policy: usize) {
        let keys: Vec<PolicyKey> = self
            .policies
            .iter_mut()
            .filter_map(|(key, p)| p.protectors.remove(&policy).then(|| key.clone()))
            .collect();
        for key in keys {
            self.release_policy(&key);
        }
    }

    fn drop_stale(&mut self) {
        for id in std::mem::take(&mut self.stale) {
            let _ = self.netlink.request(XFRM_MSG_DELPOLICY, 0, &id);
        }
    }

    fn release(&mut self) {
        for sa in self.installed.values() {
            for inbound in [true, false] {
                let _ = self
                    .netlink
                    .request(XFRM_MSG_DELSA, 0, &Self::state_of(sa, inbound));
            }
        }
        self.installed.clear();
        for key in self.policies.keys() {
            let _ = self.netlink.request(XFRM_MSG_DELPOLICY, 0, &policy_id(key));
        }
        self.policies.clear();
    }

    fn add_virtual_ip(&mut self, addr: IpAddr) -> Result<(), String> {
        Err(format!(
            "virtual IP {addr}: dataplane.mode = \"xfrm\" does not take virtual IPs"
        ))
    }

    fn remove_virtual_ip(&mut self, _addr: IpAddr) {}

    fn install(&mut self, c: &ChildSaUp) -> Result<(), String> {
        if self.installed.contains_key(&c.spi_in) {
            return Err(format!("inbound SPI {:08x} is installed already", c.spi_in));
        }
        let reqid = self.reqid(c.policy, c.child_index);
        let mut sa = Sa {
            name: c.child.clone(),
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            reqid,
            encr: c.encr,
            integ: c.integ,
            esn: c.esn,
            keys_in: c.keys_in.clone(),
            keys_out: c.keys_out.clone(),
            local: c.local,
            remote: c.remote,
            encap: c.encap,
            transport: c.transport,
            lifetime: c.lifetime,
            active: false,
            policies: Vec::new(),
            reported: (false, false),
            seen: 0,
        };
        self.add_state(&sa, true, &[])
            .map_err(|e| format!("XFRM state {:08x} (inbound): {e}", c.spi_in))?;
        let keys = Self::keys(&c.local_ts, &c.remote_ts, c.transport);
        for key in keys {
            let action = Self::tmpl(&key, reqid, c.local.ip(), c.remote.ip(), c.transport);
            match self.put_policy(&key, action) {
                Ok(policy) => {
                    policy.users += 1;
                    sa.policies.push(key);
                }
                // The SA stays (and is removed later); only this policy is missing.
                Err(e) => crate::warn!("{}: XFRM policy {}: {e}", c.child, describe_key(&key)),
            }
        }
        self.installed.insert(c.spi_in, sa);
        if c.outbound {
            self.activate(c.spi_in);
        }
        Ok(())
    }

    fn activate(&mut self, spi_in: u32) {
        let Some(sa) = self.installed.get(&spi_in) else {
            return;
        };
        if sa.active {
            return;
        }
        match self.add_state(sa, false, &[]) {
            Ok(()) => {
                if let Some(sa) = self.installed.get_mut(&spi_in) {
                    sa.active = true;
                }
            }
            Err(e) => crate::warn!(
                "CHILD_SA {spi_in:08x}_i: XFRM state {:08x} (outbound): {e}",
                sa.spi_out
            ),
        }
    }

    fn move_child(&mut self, spi_in: u32, local: SocketAddr, remote: SocketAddr, encap: bool) {
        let Some(old) = self.installed.get(&spi_in) else {
            return;
        };
        // The kernel cannot change a state's addresses: each is added anew at the new
        // path with the old one's replay state and counters, then the old one goes.
        let mut carried = Vec::new();
        for inbound in [true, false] {
            if !inbound && !old.active {
                continue;
            }
            let id = Self::state_of(old, inbound);
            let kept = match self.netlink.query(XFRM_MSG_GETSA, &id) {
                Ok(body) => carried_attributes(&body),
                Err(e) => {
                    crate::warn!("CHILD_SA {spi_in:08x}_i stays where it was: {e}");
                    return;
                }
            };
            carried.push((inbound, id, kept));
        }
        let Some(sa) = self.installed.get_mut(&spi_in) else {
            return;
        };
        (sa.local, sa.remote, sa.encap) = (local, remote, encap);
        let sa = &self.installed[&spi_in];
        for (inbound, id, kept) in carried {
            let _ = self.netlink.request(XFRM_MSG_DELSA, 0, &id);
            if let Err(e) = self.add_state(sa, inbound, &kept) {
                crate::warn!("CHILD_SA {spi_in:08x}_i: move to {local} -> {remote}: {e}");
            }
        }
        let updates: Vec<(PolicyKey, Action)> = sa
            .policies
            .iter()
            .map(|key| {
                let action = Self::tmpl(key, sa.reqid, local.ip(), remote.ip(), sa.transport);
                (key.clone(), action)
            })
            .collect();
        for (key, action) in updates {
            if let Err(e) = self.put_policy(&key, action) {
                crate::warn!("XFRM policy {}: {e}", describe_key(&key));
            }
        }
    }

    fn remove(&mut self, spi_in: u32) -> Option<String> {
        let (traffic_in, traffic_out) = self.traffic(spi_in)?;
        let sa = self.installed.remove(&spi_in)?;
        for inbound in [true, false] {
            // A state the kernel let expire (hard limit) is gone already.
            let _ = self
                .netlink
                .request(XFRM_MSG_DELSA, 0, &Self::state_of(&sa, inbound));
        }
        for key in &sa.policies {
            if let Some(policy) = self.policies.get_mut(key) {
                policy.users = policy.users.saturating_sub(1);
            }
            self.release_policy(key);
        }
        Some(describe(
            &sa.name,
            spi_in,
            sa.spi_out,
            traffic_in,
            traffic_out,
        ))
    }

    fn inbound_active(&mut self) -> Vec<u32> {
        let mut packets: HashMap<u32, u64> = HashMap::new();
        let dumped = self.netlink.dump(XFRM_MSG_GETSA, &[], |body| {
            if body.len() >= USERSA_INFO && is_our_reqid(u32_at(body, 208)) {
                packets.insert(u32::from_be_bytes(array_at(body, 72)), u64_at(body, 168));
            }
        });
        if let Err(e) = dumped {
            crate::warn!("XFRM states: {e}");
            return Vec::new();
        }
        self.installed
            .iter_mut()
            .filter_map(|(&spi, sa)| {
                let now = *packets.get(&spi)?;
                (std::mem::replace(&mut sa.seen, now) != now).then_some(spi)
            })
            .collect()
    }

    fn expiries(&mut self) -> Vec<(u32, bool, &'static str)> {
        let mut out = Vec::new();
        for e in self.expired.try_iter() {
            let found = self.installed.iter_mut().find(|(spi_in, sa)| {
                (**spi_in == e.spi && sa.local.ip() == e.daddr)
                    || (sa.spi_out == e.spi && sa.remote.ip() == e.daddr)
            });
            let Some((&spi_in, sa)) = found else {
                continue;
            };
            if e.hard && !sa.reported.1 {
                sa.reported = (true, true);
                out.push((spi_in, true, e.cause));
            } else if !e.hard && !sa.reported.0 {
                sa.reported.0 = true;
                out.push((spi_in, false, e.cause));
            }
        }
        out
    }

    fn traffic(&self, spi_in: u32) -> Option<((u64, u64), (u64, u64))> {
        let sa = self.installed.get(&spi_in)?;
        let inbound = self.counters(&Self::state_of(sa, true)).unwrap_or_default();
        let outbound = if sa.active {
            self.counters(&Self::state_of(sa, false))
                .unwrap_or_default()
        } else {
            (0, 0)
        };
        Some((inbound, outbound))
    }

    fn installed(&self) -> usize {
        self.installed.len()
    }

    fn drops(&self) -> Vec<(&'static str, u64)> {
        let stats = std::fs::read_to_string("/proc/net/xfrm_stat").unwrap_or_default();
        kernel_drops(&stats)
    }

    fn batch_sizes(&self) -> [Vec<u64>; 3] {
        [Vec::new(), Vec::new(), Vec::new()]
    }

    fn worker_packets(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

    /// None comes: the kernel takes ESP off the socket (UDP_ENCAP) before we see it.
    fn stray_esp(&mut self, _: SocketAddr, _: SocketAddr, _: &[u8]) {}

    fn report(&self) -> String {
        let mut out = String::new();
        let mut spis: Vec<u32> = self.installed.keys().copied().collect();
        spis.sort_unstable();
        for spi_in in spis {
            let sa = &self.installed[&spi_in];
            let (traffic_in, traffic_out) = self.traffic(spi_in).unwrap_or_default();
            let _ = writeln!(
                out,
                "{}",
                describe(&sa.name, spi_in, sa.spi_out, traffic_in, traffic_out)
            );
        }
        let _ = write!(out, "drops (kernel, whole namespace):");
        for (why, total) in self.drops() {
            let _ = write!(out, " {why}={total}");
        }
        out
    }
}

/// Our drop reasons from the kernel's `/proc/net/xfrm_stat` counters.
fn kernel_drops(stats: &str) -> Vec<(&'static str, u64)> {
    let value = |names: &[&str]| -> u64 {
        stats
            .lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .filter(|(name, _)| names.contains(name))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    };
    vec![
        (
            "no_sa",
            value(&["XfrmInNoStates", "XfrmOutNoStates", "XfrmOutPolBlock"]),
        ),
        ("replay", value(&["XfrmInStateSeqError"])),
        ("bad_icv", value(&["XfrmInStateProtoError"])),
        (
            "selector_mismatch",
            value(&["XfrmInTmplMismatch", "XfrmInNoPols", "XfrmInPolBlock"]),
        ),
        (
            "malformed",
            value(&["XfrmInHdrError", "XfrmInStateModeError"]),
        ),
        (
            "expired",
            value(&["XfrmInStateExpired", "XfrmOutStateExpired"]),
        ),
        ("io", value(&["XfrmInError", "XfrmOutError"])),
    ]
}

/// Reads ACQUIREs, EXPIREs and MAPPINGs until the daemon exits.
fn listen(
    netlink: &Netlink,
    children: &Mutex<HashMap<u32, (usize, usize)>>,
    events: &UnboundedSender<DataplaneEvent>,
    expired: &crossbeam_channel::Sender<Expire>,
) {
    // Its socket is bound already: reading it needs no capability.
    if let Err(e) = crate::privilege::restrict(&[]) {
        crate::warn!("XFRM events: {e}");
    }
    let mut buf = vec![0u8; crate::netlink::ANSWER];
    loop {
        let received = netlink.receive(&mut buf, |kind, body| match kind {
            XFRM_MSG_ACQUIRE => {
                let child = acquired_reqid(body).and_then(|reqid| {
                    children
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&reqid)
                        .copied()
                });
                if let Some((policy, child)) = child {
                    let _ = events.send(DataplaneEvent::Acquire { policy, child });
                }
            }
            XFRM_MSG_EXPIRE => {
                if let Some(e) = expire_of(body) {
                    let _ = expired.send(e);
                }
            }
            XFRM_MSG_MAPPING => {
                if let Some((spi_in, remote)) = mapping_of(body) {
                    let _ = events.send(DataplaneEvent::PeerMoved { spi_in, remote });
                }
            }
            _ => {}
        });
        // ENOBUFS: the kernel dropped messages for us (an EXPIRE lost is seen again at
        // the hard limit, an ACQUIRE when the larval state times out); the next ones
        // still come. Nothing else is expected, but giving up would lose them all.
        match received {
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => {
                crate::warn!("XFRM events: {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Ok(()) => {}
        }
    }
}

/// The reqid of an ACQUIRE's template, if it is ours.
fn acquired_reqid(body: &[u8]) -> Option<u32> {
    let (_, tmpl) = attributes(body, USER_ACQUIRE).find(|&(kind, _)| kind == XFRMA_TMPL)?;
    let reqid = u32::from_ne_bytes(tmpl.get(44..48)?.try_into().ok()?);
    is_our_reqid(reqid).then_some(reqid)
}

/// A MAPPING (authentic ESP in UDP from a new address or port: the peer's NAT
/// mapped it anew) of one of our inbound states: its SPI and the new address.
fn mapping_of(body: &[u8]) -> Option<(u32, SocketAddr)> {
    // struct xfrm_user_mapping: id, reqid, old and new address, old and new port.
    if body.len() < 64 || !is_our_reqid(u32_at(body, 24)) {
        return None;
    }
    let ip = address(u16_at(body, 20), &body[44..60])?;
    let port = u16::from_be_bytes(array_at(body, 62));
    Some((
        u32::from_be_bytes(array_at(body, 16)),
        SocketAddr::new(ip, port),
    ))
}

/// An EXPIRE of one of our states: which, whether hard, and which limit.
fn expire_of(body: &[u8]) -> Option<Expire> {
    if body.len() <= USERSA_INFO || !is_our_reqid(u32_at(body, 208)) {
        return None;
    }
    let hard = body[USERSA_INFO] != 0;
    let (bytes, packets) = (u64_at(body, 160), u64_at(body, 168));
    let (byte_limit, packet_limit) = if hard {
        (u64_at(body, 104), u64_at(body, 120))
    } else {
        (u64_at(body, 96), u64_at(body, 112))
    };
    let cause = if bytes >= byte_limit {
        "bytes"
    } else if packets >= packet_limit {
        "packets"
    } else {
        "time"
    };
    Some(Expire {
        spi: u32::from_be_bytes(array_at(body, 72)),
        daddr: address(u16_at(body, 212), &body[56..72])?,
        hard,
        cause,
    })
}

fn is_our_reqid(reqid: u32) -> bool {
    reqid & REQID_MASK == REQID_TAG
}

fn is_our_priority(priority: u32) -> bool {
    (PRIORITY_BASE..PRIORITY_BASE + 0x1_0000).contains(&priority)
}

fn array_at<const N: usize>(body: &[u8], at: usize) -> [u8; N] {
    body.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

fn u16_at(body: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(array_at(body, at))
}

fn u32_at(body: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(array_at(body, at))
}

fn u64_at(body: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(array_at(body, at))
}

/// An address in an xfrm_address_t of `family`.
fn address(family: u16, bytes: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(bytes.get(..4)?).ok()?,
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes.get(..16)?).ok()?,
        ))),
        _ => None,
    }
}

fn family(addr: IpAddr) -> u16 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// xfrm_address_t: the address, zero-padded to 16 bytes.
fn xfrm_address(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// struct xfrm_usersa_id of the ESP state `spi` towards `daddr`.
fn usersa_id(daddr: IpAddr, spi: u32) -> Vec<u8> {
    let mut id = vec![0u8; USERSA_ID];
    id[..16].copy_from_slice(&xfrm_address(daddr));
    id[16..20].copy_from_slice(&spi.to_be_bytes());
    id[20..22].copy_from_slice(&family(daddr).to_ne_bytes());
    id[22] = IPPROTO_ESP;
    id
}

/// The xfrm_usersa_id naming the state an xfrm_usersa_info describes.
fn state_id(info: &[u8]) -> Vec<u8> {
    let mut id = vec![0u8; USERSA_ID];
    id[..20].copy_from_slice(&info[56..76]);
    id[20..22].copy_from_slice(&info[212..214]);
    id[22] = info[76];
    id
}

/// xfrm_lifetime_cfg: byte and packet limits (time is the engine's).
fn lifetime_cfg(soft: &Limits, hard: &Limits) -> [u8; 64] {
    let mut out = [0u8; 64];
    let limits = [
        soft.bytes.unwrap_or(XFRM_INF),
        hard.bytes.unwrap_or(XFRM_INF),
        soft.packets.unwrap_or(XFRM_INF),
        hard.packets.unwrap_or(XFRM_INF),
    ];
    for (i, limit) in limits.into_iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&limit.to_ne_bytes());
    }
    out
}

/// NEWSA for the inbound or outbound state of `sa`, with `carried` attributes
/// (replay state, counters) in place of fresh ones.
fn state_message(
    sa: &Sa,
    inbound: bool,
    replay_window: u32,
    carried: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let (src, dst, spi, keys) = if inbound {
        (sa.remote, sa.local, sa.spi_in, &sa.keys_in)
    } else {
        (sa.local, sa.remote, sa.spi_out, &sa.keys_out)
    };
    // Room for every attribute (the replay bitmap is at most 4 KiB): growing would
    // leave a copy of the keys behind in the old allocation.
    let mut body = Vec::with_capacity(USERSA_INFO + 8192);
    body.resize(USERSA_INFO, 0);
    if sa.transport {
        body[40..42].copy_from_slice(&family(dst.ip()).to_ne_bytes());
    }
    body[56..72].copy_from_slice(&xfrm_address(dst.ip()));
    body[72..76].copy_from_slice(&spi.to_be_bytes());
    body[76] = IPPROTO_ESP;
    body[80..96].copy_from_slice(&xfrm_address(src.ip()));
    body[96..160].copy_from_slice(&lifetime_cfg(&sa.lifetime.soft, &sa.lifetime.hard));
    body[208..212].copy_from_slice(&sa.reqid.to_ne_bytes());
    body[212..214].copy_from_slice(&family(dst.ip()).to_ne_bytes());
    body[214] = if sa.transport {
        XFRM_MODE_TRANSPORT
    } else {
        XFRM_MODE_TUNNEL
    };
    body[216] = if sa.transport {
        0
    } else {
        XFRM_STATE_AF_UNSPEC
    } | if sa.esn { XFRM_STATE_ESN } else { 0 };
    let (encryption, integrity) = (keys.0.expose(), keys.1.expose());
    let key_bits = |key: &[u8]| ((key.len() * 8) as u32).to_ne_bytes();
    match (sa.encr, sa.integ) {
        (Encr::AesCbc { .. }, Some(integ)) => {
            let mut crypt = algorithm_name("cbc(aes)");
            crypt.extend_from_slice(&key_bits(encryption));
            crypt.extend_from_slice(encryption);
            attribute(&mut body, XFRMA_ALG_CRYPT, &crypt);
            let mut auth = algorithm_name(match integ {
                Integ::HmacSha1 => "hmac(sha1)",
                Integ::HmacSha256 => "hmac(sha256)",
                Integ::HmacSha384 => "hmac(sha384)",
                Integ::HmacSha512 => "hmac(sha512)",
            });
            auth.extend_from_slice(&key_bits(integrity));
            auth.extend_from_slice(&((integ.icv_len() * 8) as u32).to_ne_bytes());
            auth.extend_from_slice(integrity);
            attribute(&mut body, XFRMA_ALG_AUTH_TRUNC, &auth);
            crypt.fill(0);
            auth.fill(0);
        }
        (encr, _) => {
            let mut aead = algorithm_name(match encr {
                Encr::ChaCha20Poly1305 => "rfc7539esp(chacha20,poly1305)",
                _ => "rfc4106(gcm(aes))",
            });
            aead.extend_from_slice(&key_bits(encryption));
            aead.extend_from_slice(&128u32.to_ne_bytes());
            aead.extend_from_slice(encryption);
            attribute(&mut body, XFRMA_ALG_AEAD, &aead);
            aead.fill(0);
        }
    }
    if sa.encap {
        let mut encap = [0u8; 24];
        encap[..2].copy_from_slice(&(UDP_ENCAP_ESPINUDP as u16).to_ne_bytes());
        encap[2..4].copy_from_slice(&src.port().to_be_bytes());
        encap[4..6].copy_from_slice(&dst.port().to_be_bytes());
        attribute(&mut body, XFRMA_ENCAP, &encap);
    }
    let replay = carried
        .iter()
        .find(|(kind, _)| *kind == XFRMA_REPLAY_ESN_VAL)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            let bitmap_words = replay_window.div_ceil(32);
            let mut esn = vec![0u8; 24 + bitmap_words as usize * 4];
            esn[..4].copy_from_slice(&bitmap_words.to_ne_bytes());
            esn[20..24].copy_from_slice(&replay_window.to_ne_bytes());
            esn
        });
    attribute(&mut body, XFRMA_REPLAY_ESN_VAL, &replay);
    for (kind, value) in carried {
        if *kind == XFRMA_LTIME_VAL {
            attribute(&mut body, *kind, value);
        }
    }
    body
}

/// alg_name[64], NUL-padded, with room for the lengths and a key to follow (so
/// that no copy of the key is left behind by growing).
fn algorithm_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 8 + 64);
    out.resize(64, 0);
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

/// The attributes of a state worth carrying to its replacement: the replay state
/// and the current lifetime counters.
fn carried_attributes(info: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out: Vec<(u16, Vec<u8>)> = attributes(info, USERSA_INFO)
        .filter(|&(kind, _)| kind == XFRMA_REPLAY_ESN_VAL)
        .map(|(kind, value)| (kind, value.to_vec()))
        .collect();
    if info.len() >= USERSA_INFO {
        out.push((XFRMA_LTIME_VAL, info[160..192].to_vec()));
    }
    out
}

/// The (ours, theirs, protocol) selector ends between two sets of selectors.
fn pairs(local_ts: &[TsRange], remote_ts: &[TsRange]) -> Vec<(End, End, u8)> {
    let mut out = Vec::new();
    for l in local_ts {
        for r in remote_ts {
            let same_family = matches!(
                (l.addrs, r.addrs),
                (AddrRange::V4(..), AddrRange::V4(..)) | (AddrRange::V6(..), AddrRange::V6(..))
            );
            let proto = match (l.ip_protocol, r.ip_protocol) {
                (a, 0) | (0, a) => a,
                (a, b) if a == b => a,
                _ => continue,
            };
            if !same_family {
                continue;
            }
            for lp in l.addrs.cidrs() {
                for rp in r.addrs.cidrs() {
                    for lport in port_blocks(l.start_port, l.end_port) {
                        for rport in port_blocks(r.start_port, r.end_port) {
                            out.push((
                                End {
                                    prefix: lp,
                                    port: lport,
                                },
                                End {
                                    prefix: rp,
                                    port: rport,
                                },
                                proto,
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// A port range as (port, mask) blocks; the whole range is one (0, 0).
fn port_blocks(start: u16, end: u16) -> Vec<(u16, u16)> {
    let (mut start, end) = (u32::from(start), u32::from(end));
    let mut out = Vec::new();
    while start <= end {
        let mut bits = start.trailing_zeros().min(16);
        while start + (1 << bits) - 1 > end {
            bits -= 1;
        }
        out.push((start as u16, (0xffffu32 << bits) as u16));
        start += 1 << bits;
    }
    out
}

/// struct xfrm_selector for `key`.
fn selector(key: &PolicyKey) -> [u8; SELECTOR] {
    let mut sel = [0u8; SELECTOR];
    sel[..16].copy_from_slice(&xfrm_address(key.dst.prefix.0));
    sel[16..32].copy_from_slice(&xfrm_address(key.src.prefix.0));
    sel[32..34].copy_from_slice(&key.dst.port.0.to_be_bytes());
    sel[34..36].copy_from_slice(&key.dst.port.1.to_be_bytes());
    sel[36..38].copy_from_slice(&key.src.port.0.to_be_bytes());
    sel[38..40].copy_from_slice(&key.src.port.1.to_be_bytes());
    sel[40..42].copy_from_slice(&family(key.dst.prefix.0).to_ne_bytes());
    sel[42] = key.dst.prefix.1;
    sel[43] = key.src.prefix.1;
    sel[44] = key.proto;
    sel
}

/// struct xfrm_userpolicy_id for `key`.
fn policy_id(key: &PolicyKey) -> Vec<u8> {
    let mut id = vec![0u8; USERPOLICY_ID];
    id[..SELECTOR].copy_from_slice(&selector(key));
    id[60] = key.dir;
    id
}

/// The xfrm_userpolicy_id naming the policy an xfrm_userpolicy_info describes.
fn policy_id_of(info: &[u8]) -> Vec<u8> {
    let mut id = vec![0u8; USERPOLICY_ID];
    id[..SELECTOR].copy_from_slice(&info[..SELECTOR]);
    id[60] = info[160];
    id
}

/// The priority of a policy with `key`: more specific selectors win.
fn priority(key: &PolicyKey, action: Action) -> u32 {
    if action == Action::Block {
        return BLOCK_PRIORITY;
    }
    let unspecific = 256 - u32::from(key.src.prefix.1) - u32::from(key.dst.prefix.1);
    let any_proto = u32::from(key.proto == 0);
    let any_ports = u32::from(key.src.port.1 == 0) + u32::from(key.dst.port.1 == 0);
    PRIORITY_BASE + 0x100 + unspecific * 8 + any_proto * 4 + any_ports
}

/// UPDPOLICY for `key` doing `action`.
fn policy_message(key: &PolicyKey, action: Action) -> Vec<u8> {
    let mut body = vec![0u8; USERPOLICY_INFO];
    body[..SELECTOR].copy_from_slice(&selector(key));
    for (i, limit) in [XFRM_INF; 4].into_iter().enumerate() {
        body[56 + i * 8..64 + i * 8].copy_from_slice(&limit.to_ne_bytes());
    }
    body[152..156].copy_from_slice(&priority(key, action).to_ne_bytes());
    body[160] = key.dir;
    match action {
        Action::Block => body[161] = XFRM_POLICY_BLOCK,
        Action::Tmpl {
            reqid,
            outer: (src, dst),
            transport,
        } => {
            body[161] = XFRM_POLICY_ALLOW;
            let mut tmpl = [0u8; USER_TMPL];
            tmpl[..16].copy_from_slice(&xfrm_address(dst));
            tmpl[20] = IPPROTO_ESP;
            tmpl[24..26].copy_from_slice(&family(dst).to_ne_bytes());
            tmpl[28..44].copy_from_slice(&xfrm_address(src));
            tmpl[44..48].copy_from_slice(&reqid.to_ne_bytes());
            tmpl[48] = if transport {
                XFRM_MODE_TRANSPORT
            } else {
                XFRM_MODE_TUNNEL
            };
            // Any algorithm: the SA was negotiated by IKE.
            tmpl[52..64].fill(0xff);
            attribute(&mut body, XFRMA_TMPL, &tmpl);
        }
    }
    body
}

/// `src -> dst proto N dir D` for logs.
fn describe_key(key: &PolicyKey) -> String {
    let dir = match key.dir {
        XFRM_POLICY_IN => "in",
        XFRM_POLICY_OUT => "out",
        _ => "fwd",
    };
    format!(
        "{}/{} -> {}/{} proto {} dir {dir}",
        key.src.prefix.0, key.src.prefix.1, key.dst.prefix.0, key.dst.prefix.1, key.proto
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str, dst: &str, proto: u8, dir: u8) -> PolicyKey {
        let end = |s: &str| {
            let (addr, len) = s.split_once('/').unwrap();
            End {
                prefix: (addr.parse().unwrap(), len.parse().unwrap()),
                port: (0, 0),
            }
        };
        PolicyKey {
            src: end(src),
            dst: end(dst),
            proto,
            dir,
        }
    }

    fn sa(encr: Encr, integ: Option<Integ>, encap: bool, transport: bool) -> Sa {
        Sa {
            name: "lan".into(),
            spi_in: 0x1111_2222,
            spi_out: 0x3333_4444,
            reqid: REQID_TAG | 1,
            encr,
            integ,
            esn: true,
            keys_in: (Secret::new(vec![1; 20]), Secret::new(vec![2; 32])),
            keys_out: (Secret::new(vec![3; 20]), Secret::new(vec![4; 32])),
            local: "192.0.2.1:4500".parse().unwrap(),
            remote: "198.51.100.7:31000".parse().unwrap(),
            encap,
            transport,
            lifetime: Lifetime {
                soft: Limits {
                    bytes: Some(1000),
                    ..Limits::default()
                },
                hard: Limits::default(),
            },
            active: false,
            policies: Vec::new(),
            reported: (false, false),
            seen: 0,
        }
    }

    fn attrs(body: &[u8], header: usize) -> HashMap<u16, Vec<u8>> {
        attributes(body, header)
            .map(|(k, v)| (k, v.to_vec()))
            .collect()
    }

    #[test]
    fn port_ranges_become_aligned_masked_blocks() {
        assert_eq!(port_blocks(0, 65535), vec![(0, 0)]);
        assert_eq!(port_blocks(80, 80), vec![(80, 0xffff)]);
        assert_eq!(port_blocks(1024, 2047), vec![(1024, 0xfc00)]);
        assert_eq!(port_blocks(5, 7), vec![(5, 0xffff), (6, 0xfffe)]);
        assert_eq!(port_blocks(65535, 65535), vec![(65535, 0xffff)]);
    }

    #[test]
    fn selector_has_the_kernels_layout() {
        let mut k = key("10.1.0.0/24", "10.2.0.7/32", 6, XFRM_POLICY_OUT);
        k.dst.port = (443, 0xffff);
        let sel = selector(&k);
        assert_eq!(&sel[..4], &[10, 2, 0, 7]);
        assert_eq!(&sel[16..20], &[10, 1, 0, 0]);
        assert_eq!(&sel[32..36], &[1, 187, 0xff, 0xff]);
        assert_eq!(&sel[36..40], &[0, 0, 0, 0]);
        assert_eq!(u16_at(&sel, 40), AF_INET);
        assert_eq!((sel[42], sel[43], sel[44]), (32, 24, 6));
        let id = policy_id(&k);
        assert_eq!((&id[..SELECTOR], id[60]), (&sel[..], XFRM_POLICY_OUT));
    }

    #[test]
    fn policies_carry_our_priority_band_the_template_and_prefer_specific_selectors() {
        let wide = key("10.0.0.0/8", "10.2.0.0/16", 0, XFRM_POLICY_IN);
        let narrow = key("10.1.0.0/24", "10.2.0.0/24", 0, XFRM_POLICY_IN);
        let tmpl = Xfrm::tmpl(
            &narrow,
            REQID_TAG | 7,
            "192.0.2.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
            false,
        );
        let body = policy_message(&narrow, tmpl);
        assert_eq!(body[160], XFRM_POLICY_IN);
        assert_eq!(body[161], XFRM_POLICY_ALLOW);
        let p = u32_at(&body, 152);
        assert!(is_our_priority(p));
        assert!(p < priority(&wide, tmpl));
        assert!(priority(&wide, tmpl) < priority(&wide, Action::Block));
        assert!(is_our_priority(priority(&wide, Action::Block)));
        let t = &attrs(&body, USERPOLICY_INFO)[&XFRMA_TMPL];
        // Inbound: from the peer to us.
        assert_eq!(&t[..4], &[192, 0, 2, 1]);
        assert_eq!(&t[28..32], &[198, 51, 100, 7]);
        assert_eq!(t[20], IPPROTO_ESP);
        assert_eq!(u32_at(t, 44), REQID_TAG | 7);
        assert_eq!(t[48], XFRM_MODE_TUNNEL);
        let block = policy_message(&wide, Action::Block);
        assert_eq!(block[161], XFRM_POLICY_BLOCK);
        assert!(attrs(&block, USERPOLICY_INFO).is_empty());
    }

    #[test]
    fn an_aead_state_in_udp_has_key_and_salt_icv_encap_ports_esn_and_limits() {
        let sa = sa(Encr::AesGcm16 { key_len: 16 }, None, true, false);
        let body = state_message(&sa, false, 1024, &[]);
        assert_eq!(&body[56..60], &[198, 51, 100, 7]);
        assert_eq!(u32::from_be_bytes(array_at(&body, 72)), 0x3333_4444);
        assert_eq!(body[76], IPPROTO_ESP);
        assert_eq!(&body[80..84], &[192, 0, 2, 1]);
        assert_eq!(u64_at(&body, 96), 1000, "soft byte limit");
        assert_eq!(u64_at(&body, 104), XFRM_INF, "no hard byte limit");
        assert_eq!(u32_at(&body, 208), REQID_TAG | 1);
        assert_eq!(body[214], XFRM_MODE_TUNNEL);
        assert_eq!(body[215], 0, "the window is in the ESN attribute");
        assert_eq!(body[216], XFRM_STATE_AF_UNSPEC | XFRM_STATE_ESN);
        let a = attrs(&body, USERSA_INFO);
        let aead = &a[&XFRMA_ALG_AEAD];
        assert!(aead.starts_with(b"rfc4106(gcm(aes))\0"));
        assert_eq!((u32_at(aead, 64), u32_at(aead, 68)), (160, 128));
        assert_eq!(&aead[72..], &[3; 20]);
        let encap = &a[&XFRMA_ENCAP];
        assert_eq!(u16_at(encap, 0), 2);
        assert_eq!(&encap[2..6], &[0x11, 0x94, 0x79, 0x18], "4500 -> 31000");
        let esn = &a[&XFRMA_REPLAY_ESN_VAL];
        assert_eq!((u32_at(esn, 0), u32_at(esn, 20)), (32, 1024));
        assert_eq!(esn.len(), 24 + 32 * 4);
        assert!(!a.contains_key(&XFRMA_ALG_CRYPT));
    }

    #[test]
    fn a_cbc_state_in_transport_mode_has_cipher_and_truncated_hmac() {
        let mut sa = sa(
            Encr::AesCbc { key_len: 16 },
            Some(Integ::HmacSha256),
            false,
            true,
        );
        sa.keys_in.0 = Secret::new(vec![5; 16]);
        let body = state_message(&sa, true, 64, &[]);
        assert_eq!(u32::from_be_bytes(array_at(&body, 72)), 0x1111_2222);
        assert_eq!(&body[56..60], &[192, 0, 2, 1], "inbound: to us");
        assert_eq!(body[214], XFRM_MODE_TRANSPORT);
        assert_eq!(u16_at(&body, 40), AF_INET, "transport: a selector family");
        let a = attrs(&body, USERSA_INFO);
        let crypt = &a[&XFRMA_ALG_CRYPT];
        assert!(crypt.starts_with(b"cbc(aes)\0"));
        assert_eq!(u32_at(crypt, 64), 128);
        let auth = &a[&XFRMA_ALG_AUTH_TRUNC];
        assert!(auth.starts_with(b"hmac(sha256)\0"));
        assert_eq!((u32_at(auth, 64), u32_at(auth, 68)), (256, 128));
        assert_eq!(&auth[72..], &[2; 32]);
        assert!(!a.contains_key(&XFRMA_ENCAP));
    }

    #[test]
    fn a_moved_state_carries_its_replay_state_and_counters() {
        let sa = sa(Encr::ChaCha20Poly1305, None, true, false);
        let mut replay = vec![0u8; 24 + 4];
        replay[..4].copy_from_slice(&1u32.to_ne_bytes());
        replay[4..8].copy_from_slice(&77u32.to_ne_bytes());
        let mut info = state_message(&sa, false, 32, &[]);
        info[160..168].copy_from_slice(&5000u64.to_ne_bytes());
        info.truncate(USERSA_INFO);
        attribute(&mut info, XFRMA_REPLAY_ESN_VAL, &replay);
        let carried = carried_attributes(&info);
        let body = state_message(&sa, false, 32, &carried);
        let a = attrs(&body, USERSA_INFO);
        assert_eq!(a[&XFRMA_REPLAY_ESN_VAL], replay);
        assert_eq!(u64_at(&a[&XFRMA_LTIME_VAL], 0), 5000);
        assert!(a[&XFRMA_ALG_AEAD].starts_with(b"rfc7539esp(chacha20,poly1305)\0"));
    }

    #[test]
    fn expires_and_acquires_are_read_when_ours() {
        let sa = sa(Encr::AesGcm16 { key_len: 16 }, None, false, false);
        let mut expire = state_message(&sa, true, 32, &[]);
        expire.truncate(USERSA_INFO);
        expire[160..168].copy_from_slice(&1200u64.to_ne_bytes());
        expire.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        let e = expire_of(&expire).unwrap();
        assert_eq!(
            (e.spi, e.daddr, e.hard, e.cause),
            (0x1111_2222, sa.local.ip(), false, "bytes")
        );
        expire[208..212].copy_from_slice(&7u32.to_ne_bytes());
        assert!(expire_of(&expire).is_none(), "someone else's reqid");
        let mut acquire = vec![0u8; USER_ACQUIRE];
        let mut tmpl = [0u8; USER_TMPL];
        tmpl[44..48].copy_from_slice(&(REQID_TAG | 3).to_ne_bytes());
        attribute(&mut acquire, XFRMA_TMPL, &tmpl);
        assert_eq!(acquired_reqid(&acquire), Some(REQID_TAG | 3));
        assert_eq!(acquired_reqid(&acquire[..USER_ACQUIRE]), None);
    }

    #[test]
    fn a_mapping_names_the_inbound_spi_and_the_peers_new_address() {
        let mut mapping = usersa_id("192.0.2.1".parse().unwrap(), 0x1111_2222);
        mapping.extend((REQID_TAG | 1).to_ne_bytes());
        mapping.extend(xfrm_address("198.51.100.7".parse().unwrap()));
        mapping.extend(xfrm_address("198.51.100.9".parse().unwrap()));
        mapping.extend(4500u16.to_be_bytes());
        mapping.extend(31001u16.to_be_bytes());
        assert_eq!(
            mapping_of(&mapping),
            Some((0x1111_2222, "198.51.100.9:31001".parse().unwrap()))
        );
        mapping[24..28].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(mapping_of(&mapping), None, "someone else's reqid");
    }

    #[test]
    fn kernel_counters_map_to_our_drop_reasons() {
        let stats = "XfrmInNoStates           \t3\nXfrmOutNoStates \t4\nXfrmInStateSeqError\t5\nXfrmInStateProtoError\t6\n";
        let drops: HashMap<_, _> = kernel_drops(stats).into_iter().collect();
        assert_eq!(
            (
                drops["no_sa"],
                drops["replay"],
                drops["bad_icv"],
                drops["io"]
            ),
            (7, 5, 6, 0)
        );
    }
}
