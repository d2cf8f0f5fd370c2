//! The responder's IKE_SA_INIT key exchange values, one per group, reused for a
//! short time (RFC 7296 §2.12 allows it); an initiator's too when its settings say so. Computing our public value is the
//! expensive half of a MODP exchange (an exponentiation of up to 4096 bits); reused,
//! an IKE_SA_INIT costs one shared-secret computation, and only after the peer's
//! value passed its checks. Each IKE SA still gets its own keys: the initiator's
//! value and both nonces differ.

use super::Instant;
use crate::crypto::{CryptoError, KeyExchange, Random};
use crate::wire::KeGroup;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long one private value may serve: the forward secrecy given up is the
/// window in which stealing it breaks the IKE SAs made with it.
pub(super) const REUSE_TIME: Duration = Duration::from_secs(30);
/// How many IKE_SA_INITs one private value may answer: a busy responder gets a
/// fresh one more often, at 1/256 of an exponentiation per IKE SA.
pub(super) const REUSE_COUNT: u32 = 256;

struct Ephemeral {
    /// Shared with the initiator SAs that took it, which keep it until their answer.
    kex: Arc<KeyExchange>,
    expires: Instant,
    uses: u32,
}

/// The responder's current key exchange value per group.
#[derive(Default)]
pub(super) struct Ephemerals {
    by_group: HashMap<KeGroup, Ephemeral>,
}

impl Ephemerals {
    /// Our value for `group` to answer one more IKE_SA_INIT with, a fresh one if
    /// the current one is used up or too old.
    pub fn take(
        &mut self,
        group: KeGroup,
        now: Instant,
        rng: &mut dyn Random,
    ) -> Result<&Arc<KeyExchange>, CryptoError> {
        self.forget_expired(now);
        if self
            .by_group
            .get(&group)
            .is_none_or(|e| e.uses >= REUSE_COUNT)
        {
            let kex = Arc::new(KeyExchange::generate(group, rng)?);
            let expires = now + REUSE_TIME;
            self.by_group.insert(
                group,
                Ephemeral {
                    kex,
                    expires,
                    uses: 0,
                },
            );
        }
        let e = self
            .by_group
            .get_mut(&group)
            .ok_or_else(|| CryptoError::Unsupported(group.to_string()))?;
        e.uses += 1;
        Ok(&e.kex)
    }

    /// Drops the private values whose time is over, so none outlives its window.
    pub fn forget_expired(&mut self, now: Instant) {
        self.by_group.retain(|_, e| now < e.expires);
    }

    /// When the next private value is to be dropped.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_group.values().map(|e| e.expires).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;

    #[test]
    fn a_value_is_reused_until_its_time_or_count_runs_out() {
        let mut rng = SeededRandom::new(7);
        let mut cache = Ephemerals::default();
        let t0 = Instant::default();
        let first = cache
            .take(KeGroup::CURVE25519, t0, &mut rng)
            .unwrap()
            .public_value()
            .to_vec();
        for _ in 1..REUSE_COUNT {
            let again = cache.take(KeGroup::CURVE25519, t0, &mut rng).unwrap();
            assert_eq!(again.public_value(), first);
        }
        let after_count = cache.take(KeGroup::CURVE25519, t0, &mut rng).unwrap();
        assert_ne!(
            after_count.public_value(),
            first,
            "fresh after {REUSE_COUNT} uses"
        );
        let second = after_count.public_value().to_vec();
        // Another group has its own value.
        let ecp = cache.take(KeGroup::ECP_256, t0, &mut rng).unwrap();
        assert_eq!(ecp.group(), KeGroup::ECP_256);
        assert_eq!(cache.next_expiry(), Some(t0 + REUSE_TIME));
        let later = t0 + REUSE_TIME;
        cache.forget_expired(later);
        assert_eq!(
            cache.next_expiry(),
            None,
            "no private value outlives its window"
        );
        let after_time = cache.take(KeGroup::CURVE25519, later, &mut rng).unwrap();
        assert_ne!(after_time.public_value(), second);
    }
}
