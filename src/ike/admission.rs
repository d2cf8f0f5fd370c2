//! Who gets a half-open IKE SA, and what a flood of IKE_SA_INITs costs: the load
//! that turns COOKIEs on (RFC 7296 §2.6), the rotating COOKIE secret, the count of
//! half-open SAs in all and per source, and the log of stateless refusals, which
//! says each kind at most once a second with a count instead of once per packet.

use super::{Event, Instant};
use crate::crypto::Random;
use crate::wire::IkeSpi;
use aws_lc_rs::hmac;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How often the COOKIE secret changes; the previous one stays valid for one more
/// period, so a COOKIE handed out just before a change still works.
pub(super) const COOKIE_ROTATION: Duration = Duration::from_secs(120);
/// The slot the IKE_SA_INIT rate is counted in: requests of the current and the
/// previous slot count toward the COOKIE decision.
const RATE_SLOT: Duration = Duration::from_secs(1);
/// At most one line per kind of refusal in this time.
const LOG_PERIOD: Duration = Duration::from_secs(1);

/// The COOKIE secrets: the current one and the one before it.
pub(super) struct Cookies {
    current: (u8, hmac::Key),
    previous: Option<(u8, hmac::Key)>,
    since: Instant,
}

fn secret(version: u8, rng: &mut dyn Random) -> (u8, hmac::Key) {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes);
    (version, hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// What a COOKIE covers (RFC 7296 §2.6): Ni | IPi | SPIi.
fn covered(nonce: &[u8], remote: SocketAddr, spi_i: IkeSpi) -> Vec<u8> {
    let ip = match remote.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    [nonce, &ip, &spi_i.0.to_be_bytes()].concat()
}

impl Cookies {
    /// A first secret from `rng`, counted as made at the driver's start.
    pub fn new(rng: &mut dyn Random) -> Self {
        Self {
            current: secret(0, rng),
            previous: None,
            since: Instant::default(),
        }
    }

    /// Changes the secret once its period is over; a previous one older than
    /// that is dropped too.
    pub fn rotate(&mut self, now: Instant, rng: &mut dyn Random) {
        if now < self.since + COOKIE_ROTATION {
            return;
        }
        let next = secret(self.current.0.wrapping_add(1), rng);
        let old = std::mem::replace(&mut self.current, next);
        self.previous = (now < self.since + 2 * COOKIE_ROTATION).then_some(old);
        self.since = now;
    }

    /// The COOKIE for this request: the secret's version, then
    /// HMAC-SHA-256(secret, Ni | IPi | SPIi), as RFC 7296 §2.6 suggests.
    pub fn make(&self, nonce: &[u8], remote: SocketAddr, spi_i: IkeSpi) -> Vec<u8> {
        let (version, key) = &self.current;
        let tag = hmac::sign(key, &covered(nonce, remote, spi_i));
        [&[*version], tag.as_ref()].concat()
    }

    /// True if `cookie` was made by the current or the previous secret for this request.
    pub fn verify(&self, cookie: &[u8], nonce: &[u8], remote: SocketAddr, spi_i: IkeSpi) -> bool {
        let Some((version, tag)) = cookie.split_first() else {
            return false;
        };
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|(v, _)| v == version)
            .is_some_and(|(_, key)| hmac::verify(key, &covered(nonce, remote, spi_i), tag).is_ok())
    }
}

/// IKE_SA_INIT requests of the current and the previous one-second slot.
#[derive(Default)]
pub(super) struct InitRate {
    slot: Instant,
    this: usize,
    last: usize,
}

impl InitRate {
    fn advance(&mut self, now: Instant) {
        if now < self.slot + RATE_SLOT {
            return;
        }
        self.last = if now < self.slot + 2 * RATE_SLOT {
            self.this
        } else {
            0
        };
        self.this = 0;
        self.slot = now;
    }

    /// Counts one request.
    pub fn record(&mut self, now: Instant) {
        self.advance(now);
        self.this = self.this.saturating_add(1);
    }

    /// Requests of the last one to two seconds.
    pub fn recent(&mut self, now: Instant) -> usize {
        self.advance(now);
        self.this.saturating_add(self.last)
    }
}

/// The address block one source is counted by: a host's address for IPv4, its
/// /64 for IPv6, where a single host may hold a whole /64.
pub(super) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => {
            let bits = u128::from(a) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// The responder's half-open SAs (by our SPI), and per source those that proved
/// the peer receives at its address (they echoed a COOKIE).
///
/// Only those count per source: a spoofer cannot echo COOKIEs, so it cannot use up
/// another host's share; SAs made without a COOKIE are bounded anyway, because
/// COOKIEs come on once half-open SAs and recent requests reach the threshold.
#[derive(Default)]
pub(super) struct HalfOpen {
    sas: HashMap<IkeSpi, Option<IpAddr>>,
    per_source: HashMap<IpAddr, usize>,
}

impl HalfOpen {
    /// A new half-open SA; `source` when the peer echoed a COOKIE.
    pub fn add(&mut self, spi: IkeSpi, source: Option<IpAddr>) {
        if let Some(s) = source {
            *self.per_source.entry(s).or_default() += 1;
        }
        self.sas.insert(spi, source);
    }

    /// The SA is no longer half-open (authenticated or gone).
    pub fn remove(&mut self, spi: IkeSpi) {
        let Some(Some(source)) = self.sas.remove(&spi) else {
            return;
        };
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// All half-open SAs.
    pub fn len(&self) -> usize {
        self.sas.len()
    }

    /// Those counted for `source`.
    pub fn from(&self, source: IpAddr) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }
}

/// The kinds of refusal that keep no state and are logged in summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Refusal {
    /// IKE_SA_INIT answered with a COOKIE to echo.
    Cookie,
    /// IKE_SA_INIT answered with INVALID_KE_PAYLOAD.
    InvalidKe,
    /// IKE_SA_INIT answered with another error (NO_PROPOSAL_CHOSEN, INVALID_SYNTAX).
    Refused,
    /// IKE_SA_INIT dropped: the half-open limit is reached.
    OverLimit,
    /// IKE_SA_INIT dropped: the source's share of half-open SAs is used up.
    OverSourceLimit,
    /// A request for an IKE SA we do not have (answered with INVALID_IKE_SPI,
    /// within its own rate limit).
    UnknownSpi,
}

impl Refusal {
    fn what(self) -> &'static str {
        match self {
            Self::Cookie => "IKE_SA_INIT answered with COOKIE",
            Self::InvalidKe => "IKE_SA_INIT answered with INVALID_KE_PAYLOAD",
            Self::Refused => "IKE_SA_INIT refused",
            Self::OverLimit => "IKE_SA_INIT dropped over the half-open limit",
            Self::OverSourceLimit => "IKE_SA_INIT dropped over the half-open limit per source",
            Self::UnknownSpi => "request for an unknown IKE_SA",
        }
    }
}

struct Window {
    ends: Instant,
    /// Refusals since the last line.
    more: u64,
    last_from: Option<SocketAddr>,
}

/// The log of stateless refusals: the first of a kind is told in full, those that
/// follow within [`LOG_PERIOD`] are counted and summed up in one line when it
/// ends, so a flood makes one line a second per kind instead of one per packet.
#[derive(Default)]
pub(super) struct Refusals {
    windows: HashMap<Refusal, Window>,
}

impl Refusals {
    /// Notes one refusal from `remote`; true if it is to be told in full (with the
    /// message sent, if any), false if it was only counted.
    pub fn note(&mut self, now: Instant, kind: Refusal, remote: SocketAddr) -> bool {
        match self.windows.get_mut(&kind) {
            // A window that is over but not yet summed up keeps counting: the driver's
            // timer fires a little after the deadline, and a flood fills that gap.
            Some(w) if now < w.ends || w.more > 0 => {
                w.more += 1;
                w.last_from = Some(remote);
                false
            }
            _ => {
                self.windows.insert(
                    kind,
                    Window {
                        ends: now + LOG_PERIOD,
                        more: 0,
                        last_from: None,
                    },
                );
                true
            }
        }
    }

    /// When a summary line is due.
    pub fn next_summary(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter(|w| w.more > 0)
            .map(|w| w.ends)
            .min()
    }

    /// Writes the summaries that are due; a kind still arriving keeps counting
    /// for the next one.
    pub fn summarize(&mut self, now: Instant, events: &mut impl Extend<Event>) {
        let mut lines = Vec::new();
        self.windows.retain(|kind, w| {
            if now < w.ends {
                return true;
            }
            if w.more == 0 {
                return false;
            }
            let from = w
                .last_from
                .map_or(String::new(), |a| format!(", the last from {a}"));
            lines.push(format!(
                "{} more: {}{from} (at most one line a second)",
                w.more,
                kind.what()
            ));
            *w = Window {
                ends: now + LOG_PERIOD,
                more: 0,
                last_from: None,
            };
            true
        });
        lines.sort();
        events.extend(lines.into_iter().map(|text| Event::Log {
            spi_i: IkeSpi(0),
            connection: None,
            text,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;

    fn at(secs: u64) -> Instant {
        Instant(Duration::from_secs(secs))
    }

    #[test]
    fn a_cookie_survives_one_rotation_and_not_two() {
        let mut rng = SeededRandom::new(1);
        let mut cookies = Cookies::new(&mut rng);
        let remote: SocketAddr = "192.0.2.9:500".parse().unwrap();
        let cookie = cookies.make(b"nonce", remote, IkeSpi(7));
        assert!(cookies.verify(&cookie, b"nonce", remote, IkeSpi(7)));
        assert!(!cookies.verify(&cookie, b"other", remote, IkeSpi(7)));
        assert!(!cookies.verify(
            &cookie,
            b"nonce",
            "192.0.2.8:500".parse().unwrap(),
            IkeSpi(7)
        ));
        assert!(!cookies.verify(&cookie, b"nonce", remote, IkeSpi(8)));
        cookies.rotate(at(119), &mut rng);
        assert_eq!(cookies.make(b"nonce", remote, IkeSpi(7)), cookie, "not yet");
        cookies.rotate(at(120), &mut rng);
        assert_ne!(cookies.make(b"nonce", remote, IkeSpi(7)), cookie);
        assert!(
            cookies.verify(&cookie, b"nonce", remote, IkeSpi(7)),
            "previous secret"
        );
        cookies.rotate(at(240), &mut rng);
        assert!(
            !cookies.verify(&cookie, b"nonce", remote, IkeSpi(7)),
            "two rotations"
        );
    }

    #[test]
    fn the_rate_counts_the_last_one_to_two_seconds() {
        let mut rate = InitRate::default();
        for _ in 0..5 {
            rate.record(at(0));
        }
        assert_eq!(rate.recent(at(0)), 5);
        rate.record(at(1));
        assert_eq!(rate.recent(at(1)), 6);
        assert_eq!(rate.recent(at(2)), 1);
        assert_eq!(rate.recent(at(10)), 0);
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64() {
        let a = source_of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = source_of("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = source_of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(source_of(v4), v4);
        let mut half_open = HalfOpen::default();
        half_open.add(IkeSpi(1), Some(a));
        half_open.add(IkeSpi(2), Some(b));
        half_open.add(IkeSpi(3), None);
        assert_eq!((half_open.len(), half_open.from(a)), (3, 2));
        half_open.remove(IkeSpi(1));
        half_open.remove(IkeSpi(3));
        half_open.remove(IkeSpi(3));
        assert_eq!((half_open.len(), half_open.from(a)), (1, 1));
    }

    #[test]
    fn refusals_make_one_line_a_second_per_kind() {
        let mut log = Refusals::default();
        let from: SocketAddr = "192.0.2.9:500".parse().unwrap();
        assert!(log.note(at(0), Refusal::Cookie, from), "the first is told");
        assert!(
            log.note(at(0), Refusal::Refused, from),
            "each kind has its own"
        );
        for _ in 0..999 {
            assert!(!log.note(at(0), Refusal::Cookie, from));
        }
        assert_eq!(log.next_summary(), Some(at(1)));
        let mut events = Vec::new();
        log.summarize(at(1), &mut events);
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0], Event::Log { text, .. } if text.starts_with("999 more: IKE_SA_INIT answered with COOKIE")),
            "{events:?}"
        );
        // Still arriving: counted for the next line, not told in full.
        assert!(!log.note(at(1), Refusal::Cookie, from));
        // Quiet for a period: the next one is told in full again.
        log.summarize(at(2), &mut events);
        log.summarize(at(3), &mut events);
        assert_eq!(events.len(), 2);
        assert!(log.note(at(4), Refusal::Cookie, from));
    }
}
