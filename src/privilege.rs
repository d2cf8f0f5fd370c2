//! Capabilities after start-up. Once the TUN device, the sockets, the routing rules
//! and the files are open, a compromised control thread should not be able to do
//! what root can: it keeps only the network capabilities it still uses (routes for
//! SAs that come and go, its marked sockets), and the ESP workers, which parse
//! every packet from the network, keep none at all.

use caps::{CapSet, Capability, CapsHashSet};

/// What the control thread keeps: NET_ADMIN for routes (and socket marks),
/// NET_RAW and NET_BIND_SERVICE for its raw and low-port sockets.
pub const CONTROL: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
];

/// Reduces the calling thread's capabilities to `keep` (those of them it has), in
/// every set, the bounding set included so that not even an exec regains the rest.
/// Threads it starts later inherit the reduced sets; threads started before keep
/// theirs and must call it themselves.
pub fn restrict(keep: &[Capability]) -> Result<(), String> {
    let failed =
        |what: &str, e: caps::errors::CapsError| format!("dropping capabilities ({what}): {e}");
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| failed("read", e))?;
    let keep: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // Without CAP_SETPCAP (started unprivileged with file capabilities) the bounding
    // set cannot shrink, and holds nothing we could use anyway.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::read(None, CapSet::Bounding).map_err(|e| failed("bounding", e))? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| failed("bounding", e))?;
            }
        }
    }
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(|e| failed("ambient", e))?;
    }
    caps::clear(None, CapSet::Inheritable).map_err(|e| failed("inheritable", e))?;
    // Effective first: it must stay within the permitted set at every step.
    caps::set(None, CapSet::Effective, &keep).map_err(|e| failed("effective", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| failed("permitted", e))?;
    Ok(())
}
