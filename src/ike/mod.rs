//! The sans-IO IKE engine: proposals, exchanges and IKE SA state, driven by an
//! explicit clock and an injected random generator.

pub mod exchange;
pub mod proposal;

use std::ops::Add;
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
