//! Virtual IP address pools (RFC 7296 §3.15.1): a gateway leases each client an
//! address per identity, the same identity gets the same address back, and no two
//! identities ever hold one address at once.

use crate::wire::payload::{AddrRange, Identity};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// A pool as configured: the addresses it hands out and the DNS servers it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    /// Its name, which connections' `pools` refer to.
    pub name: String,
    /// The first and last address handed out (one family).
    pub addrs: AddrRange,
    /// DNS servers for clients with an address from it (INTERNAL_IP4/6_DNS).
    pub dns: Vec<IpAddr>,
}

impl AddressPool {
    /// How many addresses it holds.
    fn size(&self) -> u128 {
        match self.addrs {
            AddrRange::V4(s, e) => u128::from(u32::from(e).saturating_sub(u32::from(s))) + 1,
            AddrRange::V6(s, e) => u128::from(e)
                .saturating_sub(u128::from(s))
                .saturating_add(1),
        }
    }

    /// The address `offset` places after the first.
    fn address(&self, offset: u128) -> IpAddr {
        match self.addrs {
            // The offset is below the pool's size, so it fits the family.
            AddrRange::V4(s, _) => IpAddr::V4((u32::from(s) + offset as u32).into()),
            AddrRange::V6(s, _) => IpAddr::V6((u128::from(s) + offset).into()),
        }
    }

    /// Whether its addresses are IPv4.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.addrs, AddrRange::V4(..))
    }
}

/// One identity's address.
#[derive(Debug)]
struct Lease {
    offset: u128,
    /// IKE SAs using it (an identity's new SA may come up before its old one goes).
    holders: u32,
}

/// A pool's leases.
#[derive(Debug)]
struct Pool {
    config: AddressPool,
    /// Addresses below this offset have been handed out at some time.
    next: u128,
    /// Every identity that holds an address, online or not.
    leases: HashMap<Identity, Lease>,
    /// Identities whose leases went offline, oldest first: their addresses are
    /// taken back, oldest first, once no address was ever handed out is left. An
    /// identity may appear more than once, or after it came back; those entries
    /// are skipped.
    offline: VecDeque<Identity>,
}

impl Pool {
    fn acquire(&mut self, id: &Identity) -> Option<IpAddr> {
        if let Some(lease) = self.leases.get_mut(id) {
            lease.holders += 1;
            return Some(self.config.address(lease.offset));
        }
        let offset = if self.next < self.config.size() {
            self.next += 1;
            self.next - 1
        } else {
            self.reclaim()?
        };
        self.leases.insert(id.clone(), Lease { offset, holders: 1 });
        Some(self.config.address(offset))
    }

    /// The address of the identity offline longest, taken from it.
    fn reclaim(&mut self) -> Option<u128> {
        while let Some(id) = self.offline.pop_front() {
            if self.leases.get(&id).is_some_and(|l| l.holders == 0) {
                return self.leases.remove(&id).map(|l| l.offset);
            }
        }
        None
    }

    fn release(&mut self, id: &Identity) {
        let Some(lease) = self.leases.get_mut(id) else {
            return;
        };
        lease.holders = lease.holders.saturating_sub(1);
        if lease.holders == 0 {
            self.offline.push_back(id.clone());
            // Skipped entries pile up when identities come and go: keep them bounded.
            if self.offline.len() > 2 * self.leases.len() + 16 {
                let leases = &self.leases;
                let mut seen = std::collections::HashSet::new();
                self.offline.retain(|id| {
                    leases.get(id).is_some_and(|l| l.holders == 0) && seen.insert(id.clone())
                });
            }
        }
    }
}

/// Every pool of the endpoint, with their leases.
#[derive(Debug, Default)]
pub(super) struct Pools(Vec<Pool>);

impl Pools {
    pub fn new(configs: &[AddressPool]) -> Self {
        Self(
            configs
                .iter()
                .map(|config| Pool {
                    config: config.clone(),
                    next: 0,
                    leases: HashMap::new(),
                    offline: VecDeque::new(),
                })
                .collect(),
        )
    }

    fn pool(&mut self, name: &str) -> Option<&mut Pool> {
        self.0.iter_mut().find(|p| p.config.name == name)
    }

    /// The pool's configuration.
    pub fn config(&self, name: &str) -> Option<&AddressPool> {
        self.0
            .iter()
            .find(|p| p.config.name == name)
            .map(|p| &p.config)
    }

    /// An address of `family` (true for IPv4) for `id` from the first of `names`
    /// that has one: the one `id` held before if it still can. Returns it with its pool.
    pub fn acquire(
        &mut self,
        names: &[String],
        ipv4: bool,
        id: &Identity,
    ) -> Option<(IpAddr, String)> {
        names.iter().find_map(|name| {
            let pool = self.pool(name).filter(|p| p.config.is_ipv4() == ipv4)?;
            Some((pool.acquire(id)?, name.clone()))
        })
    }

    /// `id` no longer uses its address from pool `name`; it keeps it until the
    /// pool runs out of others.
    pub fn release(&mut self, name: &str, id: &Identity) {
        if let Some(pool) = self.pool(name) {
            pool.release(id);
        }
    }

    /// (online, offline) leases in all.
    pub fn leases(&self) -> (usize, usize) {
        self.0.iter().fold((0, 0), |(on, off), p| {
            let online = p.leases.values().filter(|l| l.holders > 0).count();
            (on + online, off + p.leases.len() - online)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(range: (&str, &str)) -> Pools {
        Pools::new(&[AddressPool {
            name: "rw".into(),
            addrs: AddrRange::V4(range.0.parse().unwrap(), range.1.parse().unwrap()),
            dns: Vec::new(),
        }])
    }

    fn user(name: &str) -> Identity {
        Identity::Rfc822(format!("{name}@example.org"))
    }

    fn lease(p: &mut Pools, who: &str) -> Option<String> {
        p.acquire(&["rw".into()], true, &user(who))
            .map(|(a, _)| a.to_string())
    }

    #[test]
    fn each_identity_gets_its_own_address_and_the_same_one_back() {
        let mut p = pools(("10.3.0.1", "10.3.0.3"));
        assert_eq!(lease(&mut p, "alice").as_deref(), Some("10.3.0.1"));
        assert_eq!(lease(&mut p, "bob").as_deref(), Some("10.3.0.2"));
        p.release("rw", &user("alice"));
        assert_eq!(lease(&mut p, "carol").as_deref(), Some("10.3.0.3"));
        assert_eq!(lease(&mut p, "alice").as_deref(), Some("10.3.0.1"));
        assert_eq!(p.leases(), (3, 0));
        assert_eq!(lease(&mut p, "dave"), None, "every address is online");
        assert_eq!(
            p.acquire(&["rw".into()], false, &user("dave")),
            None,
            "no IPv6 pool"
        );
    }

    #[test]
    fn an_exhausted_pool_takes_back_the_address_offline_longest() {
        let mut p = pools(("10.3.0.1", "10.3.0.2"));
        lease(&mut p, "alice");
        lease(&mut p, "bob");
        p.release("rw", &user("bob"));
        p.release("rw", &user("alice"));
        assert_eq!(lease(&mut p, "carol").as_deref(), Some("10.3.0.2"));
        assert_eq!(lease(&mut p, "bob").as_deref(), Some("10.3.0.1"));
        assert_eq!(lease(&mut p, "alice"), None);
    }

    #[test]
    fn an_address_is_online_while_any_sa_of_its_identity_holds_it() {
        let mut p = pools(("10.3.0.1", "10.3.0.1"));
        lease(&mut p, "alice");
        lease(&mut p, "alice");
        p.release("rw", &user("alice"));
        assert_eq!(lease(&mut p, "bob"), None);
        p.release("rw", &user("alice"));
        assert_eq!(lease(&mut p, "bob").as_deref(), Some("10.3.0.1"));
    }

    #[test]
    fn churn_keeps_the_offline_queue_bounded() {
        let mut p = pools(("10.3.0.1", "10.3.0.9"));
        for _ in 0..1000 {
            lease(&mut p, "alice");
            p.release("rw", &user("alice"));
        }
        assert!(p.0[0].offline.len() <= 18);
        assert_eq!(p.leases(), (0, 1));
    }

    #[test]
    fn ipv6_pools_count_past_64_bits() {
        let mut p = Pools::new(&[AddressPool {
            name: "rw6".into(),
            addrs: AddrRange::V6(
                "fd00:3::".parse().unwrap(),
                "fd00:3::ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            ),
            dns: Vec::new(),
        }]);
        let (a, _) = p.acquire(&["rw6".into()], false, &user("alice")).unwrap();
        assert_eq!(a.to_string(), "fd00:3::");
    }
}
