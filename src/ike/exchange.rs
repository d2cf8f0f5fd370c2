//! Message IDs, retransmission and cached responses (RFC 7296 §2.1–§2.3): the
//! only place the engine decides when a message is sent again.
//!
//! Each IKE SA holds one [`Requester`] for the requests it sends and one
//! [`Responder`] for those it answers, both with a window of one (we never send
//! SET_WINDOW_SIZE). A request is resent on an exponential schedule, with the
//! same bytes (all its fragments, RFC 7383 §2.6.1), until a response arrives or
//! the tries run out; a retransmitted request gets the cached response again.

use super::Instant;
use crate::crypto::Random;
use std::time::Duration;

/// When requests are resent: strongSwan's `retransmit_*` settings, same defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetransmitPolicy {
    /// Wait after the first transmission.
    pub timeout: Duration,
    /// Factor by which each further wait grows.
    pub base: f64,
    /// Retransmissions before giving up.
    pub tries: u32,
    /// Each wait is shortened by a random amount up to this percentage, so peers
    /// that lost the same packets do not retry in lockstep.
    pub jitter_percent: u8,
    /// Upper bound on a single wait.
    pub limit: Duration,
}

impl Default for RetransmitPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(4),
            base: 1.8,
            tries: 5,
            jitter_percent: 0,
            limit: Duration::from_secs(3600),
        }
    }
}

impl RetransmitPolicy {
    /// The wait after transmission number `attempt` (0 = the original), before jitter.
    fn wait(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        self.timeout
            .mul_f64(self.base.powi(exponent))
            .min(self.limit)
    }
}

/// Why a request could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A request is still waiting for its response (window of one).
    #[error("a request is already outstanding")]
    Busy,
    /// Message IDs must not wrap (§2.2); the IKE SA has to be rekeyed instead.
    #[error("message IDs exhausted")]
    MessageIdsExhausted,
}

/// What a timer expiry asks the driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Timeout<'a> {
    /// Nothing is due.
    Idle,
    /// Send these datagrams again (every fragment of the request).
    Retransmit(&'a [Vec<u8>]),
    /// The peer never answered: the IKE SA is dead (IkeSaDown).
    GiveUp,
}

/// The request we wait on.
#[derive(Debug)]
struct Outstanding {
    message_id: u32,
    datagrams: Vec<Vec<u8>>,
    /// Transmissions so far, the original included.
    sent: u32,
    deadline: Instant,
}

/// Our side as requester: the next message ID and the request in flight.
#[derive(Debug)]
pub struct Requester {
    policy: RetransmitPolicy,
    next_id: Option<u32>,
    outstanding: Option<Outstanding>,
}

impl Requester {
    /// A requester whose first request will carry `first_id` (0 for a new IKE SA,
    /// 1 for the initiator after IKE_SA_INIT).
    pub fn new(policy: RetransmitPolicy, first_id: u32) -> Self {
        Self {
            policy,
            next_id: Some(first_id),
            outstanding: None,
        }
    }

    /// Retransmits each request at most `tries` times from now on.
    pub fn limit_tries(&mut self, tries: u32) {
        self.policy.tries = self.policy.tries.min(tries);
    }

    /// The message ID the next request will carry.
    pub fn next_message_id(&self) -> Result<u32, RequestError> {
        self.next_id.ok_or(RequestError::MessageIdsExhausted)
    }

    /// Whether a request is waiting for its response.
    pub fn is_busy(&self) -> bool {
        self.outstanding.is_some()
    }

    /// Records that `datagrams` (one message, or its fragments) carrying the next
    /// message ID were sent at `now`; returns that ID.
    pub fn sent(
        &mut self,
        now: Instant,
        datagrams: Vec<Vec<u8>>,
        rng: &mut dyn Random,
    ) -> Result<u32, RequestError> {
        if self.is_busy() {
            return Err(RequestError::Busy);
        }
        let message_id = self.next_message_id()?;
        self.next_id = message_id.checked_add(1);
        self.outstanding = Some(Outstanding {
            message_id,
            datagrams,
            sent: 1,
            deadline: now + self.jittered(0, rng),
        });
        Ok(message_id)
    }

    /// Takes a response with `message_id`: true if it answers the outstanding
    /// request (which is then complete), false for a stray or late duplicate.
    pub fn response(&mut self, message_id: u32) -> bool {
        let answers = self
            .outstanding
            .as_ref()
            .is_some_and(|o| o.message_id == message_id);
        if answers {
            self.outstanding = None;
        }
        answers
    }

    /// The message ID of the request waiting for its response.
    pub fn outstanding_id(&self) -> Option<u32> {
        self.outstanding.as_ref().map(|o| o.message_id)
    }

    /// When the driver should call [`Requester::timeout`] next.
    pub fn deadline(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|o| o.deadline)
    }

    /// Acts on the clock: resends the outstanding request when its wait is over,
    /// or gives up after the last retransmission's wait.
    pub fn timeout(&mut self, now: Instant, rng: &mut dyn Random) -> Timeout<'_> {
        let Some(o) = self.outstanding.as_ref() else {
            return Timeout::Idle;
        };
        if now < o.deadline {
            return Timeout::Idle;
        }
        if o.sent > self.policy.tries {
            self.outstanding = None;
            return Timeout::GiveUp;
        }
        let wait = self.jittered(o.sent, rng);
        let Some(o) = self.outstanding.as_mut() else {
            return Timeout::Idle;
        };
        o.deadline = now + wait;
        o.sent += 1;
        Timeout::Retransmit(&o.datagrams)
    }

    fn jittered(&self, attempt: u32, rng: &mut dyn Random) -> Duration {
        let wait = self.policy.wait(attempt);
        if self.policy.jitter_percent == 0 {
            return wait;
        }
        let mut r = [0; 4];
        rng.fill(&mut r);
        let fraction = f64::from(u32::from_be_bytes(r)) / f64::from(u32::MAX);
        wait.mul_f64(1.0 - f64::from(self.policy.jitter_percent.min(100)) / 100.0 * fraction)
    }
}

/// How an incoming request relates to the ones already answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The next request in sequence: process it.
    New,
    /// The request we last answered, sent again: resend this cached response.
    Retransmitted(&'a [Vec<u8>]),
    /// Anything else (older, or ahead of the window): drop it silently (§2.3).
    OutOfWindow,
}

/// Our side as responder: the next message ID we expect and the last response.
#[derive(Debug, Default)]
pub struct Responder {
    expected: u32,
    last: Option<(u32, Vec<Vec<u8>>)>,
}

impl Responder {
    /// A responder expecting `first_id` next (0 for a new IKE SA, 1 after IKE_SA_INIT).
    pub fn new(first_id: u32) -> Self {
        Self {
            expected: first_id,
            last: None,
        }
    }

    /// Classifies a request by its message ID.
    pub fn incoming(&self, message_id: u32) -> Incoming<'_> {
        match &self.last {
            Some((id, response)) if *id == message_id => Incoming::Retransmitted(response),
            _ if message_id == self.expected => Incoming::New,
            _ => Incoming::OutOfWindow,
        }
    }

    /// Records the response sent to request `message_id`, to resend on a retransmission.
    pub fn responded(&mut self, message_id: u32, datagrams: Vec<Vec<u8>>) {
        debug_assert_eq!(
            message_id, self.expected,
            "responses follow requests in order"
        );
        self.expected = message_id.wrapping_add(1);
        self.last = Some((message_id, datagrams));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRandom;

    fn at(secs: f64) -> Instant {
        Instant(Duration::from_secs_f64(secs))
    }

    #[test]
    fn retransmits_on_strongswans_schedule_then_gives_up() {
        let mut rng = SeededRandom::new(1);
        let mut r = Requester::new(RetransmitPolicy::default(), 0);
        assert_eq!(r.sent(at(0.0), vec![b"req".to_vec()], &mut rng), Ok(0));
        assert_eq!(r.sent(at(0.0), vec![], &mut rng), Err(RequestError::Busy));
        // 4 s, then 4·1.8^k: 7.2, 12.96, 23.328, 41.99 and 75.58 s before giving up.
        let mut now = Duration::ZERO;
        let mut expected_waits = vec![4.0];
        for k in 1..=5 {
            expected_waits.push(4.0 * 1.8f64.powi(k));
        }
        for (i, wait) in expected_waits.iter().enumerate() {
            let deadline = r.deadline().unwrap().0;
            assert!(
                ((deadline - now).as_secs_f64() - wait).abs() < 1e-6,
                "wait {i}"
            );
            assert_eq!(
                r.timeout(Instant(deadline - Duration::from_millis(1)), &mut rng),
                Timeout::Idle
            );
            now = deadline;
            let outcome = r.timeout(Instant(now), &mut rng);
            if i < 5 {
                assert_eq!(outcome, Timeout::Retransmit(&[b"req".to_vec()]), "try {i}");
            } else {
                assert_eq!(outcome, Timeout::GiveUp);
            }
        }
        assert!((now.as_secs_f64() - 165.0).abs() < 0.1, "{now:?}");
        assert!(!r.is_busy());
        assert_eq!(r.next_message_id(), Ok(1));
    }

    #[test]
    fn a_response_ends_the_exchange_and_strays_are_ignored() {
        let mut rng = SeededRandom::new(2);
        let mut r = Requester::new(RetransmitPolicy::default(), 1);
        let fragments = vec![vec![1], vec![2], vec![3]];
        assert_eq!(r.sent(at(0.0), fragments.clone(), &mut rng), Ok(1));
        assert_eq!(
            r.timeout(at(4.0), &mut rng),
            Timeout::Retransmit(&fragments)
        );
        assert!(!r.response(0), "an old response");
        assert!(!r.response(2), "a response from the future");
        assert!(r.is_busy());
        assert!(r.response(1));
        assert!(!r.response(1), "the duplicate of the response");
        assert_eq!(r.deadline(), None);
        assert_eq!(r.timeout(at(100.0), &mut rng), Timeout::Idle);
        assert_eq!(r.sent(at(5.0), vec![vec![4]], &mut rng), Ok(2));
    }

    #[test]
    fn jitter_only_shortens_waits_within_its_bound() {
        let policy = RetransmitPolicy {
            jitter_percent: 20,
            ..RetransmitPolicy::default()
        };
        let mut rng = SeededRandom::new(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut r = Requester::new(policy, 0);
            r.sent(at(0.0), vec![vec![0]], &mut rng).unwrap();
            let wait = r.deadline().unwrap().0.as_secs_f64();
            assert!((3.2..=4.0).contains(&wait), "{wait}");
            seen.insert(wait.to_bits());
        }
        assert!(seen.len() > 40, "jitter varies");
    }

    #[test]
    fn waits_are_capped_by_the_limit() {
        let policy = RetransmitPolicy {
            tries: 20,
            limit: Duration::from_secs(60),
            ..RetransmitPolicy::default()
        };
        assert_eq!(policy.wait(10), Duration::from_secs(60));
        assert_eq!(policy.wait(0), Duration::from_secs(4));
    }

    #[test]
    fn message_ids_never_wrap() {
        let mut rng = SeededRandom::new(4);
        let mut r = Requester::new(RetransmitPolicy::default(), u32::MAX);
        assert_eq!(r.sent(at(0.0), vec![], &mut rng), Ok(u32::MAX));
        assert!(r.response(u32::MAX));
        assert_eq!(r.next_message_id(), Err(RequestError::MessageIdsExhausted));
        assert_eq!(
            r.sent(at(1.0), vec![], &mut rng),
            Err(RequestError::MessageIdsExhausted)
        );
    }

    #[test]
    fn responder_answers_retransmissions_from_its_cache() {
        let mut r = Responder::new(1);
        assert_eq!(r.incoming(0), Incoming::OutOfWindow);
        assert_eq!(r.incoming(2), Incoming::OutOfWindow);
        assert_eq!(r.incoming(1), Incoming::New);
        r.responded(1, vec![b"resp-1".to_vec()]);
        assert_eq!(
            r.incoming(1),
            Incoming::Retransmitted(&[b"resp-1".to_vec()])
        );
        assert_eq!(r.incoming(2), Incoming::New);
        r.responded(2, vec![b"resp-2a".to_vec(), b"resp-2b".to_vec()]);
        assert_eq!(
            r.incoming(1),
            Incoming::OutOfWindow,
            "only the last response is kept"
        );
        assert_eq!(
            r.incoming(2),
            Incoming::Retransmitted(&[b"resp-2a".to_vec(), b"resp-2b".to_vec()])
        );
    }
}
