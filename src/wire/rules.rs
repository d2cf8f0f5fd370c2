//! Which payloads each exchange's requests and responses may or must carry.
//!
//! One table per message kind, checked against the decrypted payloads (for
//! IKE_SA_INIT, the plain ones). A payload marked `sufficient` (a Notify in a
//! response, AUTH or EAP in IKE_AUTH) lifts the minimums: an error response is
//! just a Notify, and EAP rounds carry no IDs. Conditional requirements the table
//! cannot express (IDi in the first IKE_AUTH request only) are checked by the task
//! that handles the message.

use super::enums::{ExchangeType, PayloadType};
use super::payload::Payload;

/// How often one payload type may appear in a message.
#[derive(Debug, Clone, Copy)]
pub struct PayloadRule {
    /// The payload type the rule is about.
    pub payload: PayloadType,
    /// Fewest occurrences, unless a sufficient payload is present.
    pub min: u8,
    /// Most occurrences.
    pub max: u8,
    /// Its presence makes the message acceptable without the minimums.
    pub sufficient: bool,
}

const fn rule(payload: PayloadType, min: u8, max: u8) -> PayloadRule {
    PayloadRule {
        payload,
        min,
        max,
        sufficient: false,
    }
}

const fn sufficient(payload: PayloadType, max: u8) -> PayloadRule {
    PayloadRule {
        payload,
        min: 0,
        max,
        sufficient: true,
    }
}

const MANY_NOTIFY: u8 = 64;
const MANY_VENDOR: u8 = 32;
const MANY_CERT: u8 = 16;
const MANY_DELETE: u8 = 64;

use PayloadType as P;

static IKE_SA_INIT_REQUEST: &[PayloadRule] = &[
    rule(P::NOTIFY, 0, MANY_NOTIFY),
    rule(P::SA, 1, 1),
    rule(P::KE, 1, 1),
    rule(P::NONCE, 1, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static IKE_SA_INIT_RESPONSE: &[PayloadRule] = &[
    sufficient(P::NOTIFY, MANY_NOTIFY),
    rule(P::SA, 1, 1),
    rule(P::KE, 1, 1),
    rule(P::NONCE, 1, 1),
    rule(P::CERTREQ, 0, MANY_CERT),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static IKE_AUTH_REQUEST: &[PayloadRule] = &[
    rule(P::NOTIFY, 0, MANY_NOTIFY),
    sufficient(P::EAP, 1),
    sufficient(P::AUTH, 1),
    rule(P::IDI, 0, 1),
    rule(P::CERT, 0, MANY_CERT),
    rule(P::CERTREQ, 0, MANY_CERT),
    rule(P::IDR, 0, 1),
    rule(P::SA, 0, 1),
    rule(P::TSI, 0, 1),
    rule(P::TSR, 0, 1),
    rule(P::CP, 0, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static IKE_AUTH_RESPONSE: &[PayloadRule] = &[
    sufficient(P::NOTIFY, MANY_NOTIFY),
    sufficient(P::EAP, 1),
    sufficient(P::AUTH, 1),
    rule(P::CERT, 0, MANY_CERT),
    rule(P::IDR, 0, 1),
    rule(P::SA, 0, 1),
    rule(P::TSI, 0, 1),
    rule(P::TSR, 0, 1),
    rule(P::CP, 0, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static CREATE_CHILD_SA_REQUEST: &[PayloadRule] = &[
    rule(P::NOTIFY, 0, MANY_NOTIFY),
    rule(P::SA, 1, 1),
    rule(P::NONCE, 1, 1),
    rule(P::KE, 0, 1),
    rule(P::TSI, 0, 1),
    rule(P::TSR, 0, 1),
    rule(P::CP, 0, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static CREATE_CHILD_SA_RESPONSE: &[PayloadRule] = &[
    sufficient(P::NOTIFY, MANY_NOTIFY),
    rule(P::SA, 1, 1),
    rule(P::NONCE, 1, 1),
    rule(P::KE, 0, 1),
    rule(P::TSI, 0, 1),
    rule(P::TSR, 0, 1),
    rule(P::CP, 0, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static INFORMATIONAL: &[PayloadRule] = &[
    rule(P::NOTIFY, 0, MANY_NOTIFY),
    rule(P::CP, 0, 1),
    rule(P::DELETE, 0, MANY_DELETE),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

// RFC 9242 leaves the content to extensions; RFC 9370 puts one KE in it.
static IKE_INTERMEDIATE: &[PayloadRule] = &[
    rule(P::NOTIFY, 0, MANY_NOTIFY),
    rule(P::KE, 0, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static IKE_FOLLOWUP_KE_REQUEST: &[PayloadRule] = &[
    rule(P::NOTIFY, 0, MANY_NOTIFY),
    rule(P::KE, 1, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

static IKE_FOLLOWUP_KE_RESPONSE: &[PayloadRule] = &[
    sufficient(P::NOTIFY, MANY_NOTIFY),
    rule(P::KE, 1, 1),
    rule(P::VENDOR_ID, 0, MANY_VENDOR),
];

/// The rules for a request (`response == false`) or response of `exchange`.
pub fn rules(exchange: ExchangeType, response: bool) -> Option<&'static [PayloadRule]> {
    Some(match (exchange, response) {
        (ExchangeType::IKE_SA_INIT, false) => IKE_SA_INIT_REQUEST,
        (ExchangeType::IKE_SA_INIT, true) => IKE_SA_INIT_RESPONSE,
        (ExchangeType::IKE_AUTH, false) => IKE_AUTH_REQUEST,
        (ExchangeType::IKE_AUTH, true) => IKE_AUTH_RESPONSE,
        (ExchangeType::CREATE_CHILD_SA, false) => CREATE_CHILD_SA_REQUEST,
        (ExchangeType::CREATE_CHILD_SA, true) => CREATE_CHILD_SA_RESPONSE,
        (ExchangeType::INFORMATIONAL, _) => INFORMATIONAL,
        (ExchangeType::IKE_INTERMEDIATE, _) => IKE_INTERMEDIATE,
        (ExchangeType::IKE_FOLLOWUP_KE, false) => IKE_FOLLOWUP_KE_REQUEST,
        (ExchangeType::IKE_FOLLOWUP_KE, true) => IKE_FOLLOWUP_KE_RESPONSE,
        _ => return None,
    })
}

/// True for exchanges whose payloads travel inside SK (everything after IKE_SA_INIT).
pub fn is_encrypted(exchange: ExchangeType) -> bool {
    exchange != ExchangeType::IKE_SA_INIT
}

/// How a message broke its exchange's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    /// No rules exist for this exchange type.
    #[error("exchange type {0} is not supported")]
    UnsupportedExchange(ExchangeType),
    /// A payload type this message may not carry.
    #[error("{0} payload not allowed here")]
    NotAllowed(PayloadType),
    /// A required payload is absent.
    #[error("{0} payload missing")]
    Missing(PayloadType),
    /// A payload appears more often than allowed.
    #[error("{payload} payload appears {count} times, at most {max} allowed")]
    TooMany {
        /// The payload type.
        payload: PayloadType,
        /// How often it appeared.
        count: usize,
        /// How often it may.
        max: u8,
    },
}

/// Checks the (decrypted) payloads of a request or response of `exchange`.
/// Unknown non-critical payloads are always allowed (RFC 7296 §2.5).
pub fn check(
    exchange: ExchangeType,
    response: bool,
    payloads: &[Payload],
) -> Result<(), RuleViolation> {
    let table = rules(exchange, response).ok_or(RuleViolation::UnsupportedExchange(exchange))?;
    let count = |t: PayloadType| payloads.iter().filter(|p| p.payload_type() == t).count();
    for p in payloads {
        if !matches!(p, Payload::Unknown(_)) && !table.iter().any(|r| r.payload == p.payload_type())
        {
            return Err(RuleViolation::NotAllowed(p.payload_type()));
        }
    }
    let any_sufficient = table.iter().any(|r| r.sufficient && count(r.payload) > 0);
    for r in table {
        let n = count(r.payload);
        if n > r.max.into() {
            return Err(RuleViolation::TooMany {
                payload: r.payload,
                count: n,
                max: r.max,
            });
        }
        if n < r.min.into() && !any_sufficient {
            return Err(RuleViolation::Missing(r.payload));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::enums::{KeGroup, NotifyType};
    use crate::wire::payload::{KePayload, NoncePayload, NotifyPayload, SaPayload, UnknownPayload};

    fn ke() -> Payload {
        Payload::Ke(KePayload {
            group: KeGroup::CURVE25519,
            data: vec![0; 32],
        })
    }
    fn nonce() -> Payload {
        Payload::Nonce(NoncePayload { data: vec![0; 32] })
    }
    fn sa() -> Payload {
        Payload::Sa(SaPayload { proposals: vec![] })
    }
    fn notify(t: NotifyType) -> Payload {
        Payload::Notify(NotifyPayload::new(t, vec![]))
    }

    #[test]
    fn ike_sa_init_request_needs_sa_ke_nonce() {
        let ok = [
            sa(),
            ke(),
            nonce(),
            notify(NotifyType::NAT_DETECTION_SOURCE_IP),
        ];
        assert_eq!(check(ExchangeType::IKE_SA_INIT, false, &ok), Ok(()));
        assert_eq!(
            check(ExchangeType::IKE_SA_INIT, false, &[sa(), nonce()]),
            Err(RuleViolation::Missing(PayloadType::KE))
        );
        assert_eq!(
            check(
                ExchangeType::IKE_SA_INIT,
                false,
                &[sa(), ke(), ke(), nonce()]
            ),
            Err(RuleViolation::TooMany {
                payload: PayloadType::KE,
                count: 2,
                max: 1
            })
        );
    }

    #[test]
    fn notify_only_response_is_acceptable() {
        let cookie = [notify(NotifyType::COOKIE)];
        assert_eq!(check(ExchangeType::IKE_SA_INIT, true, &cookie), Ok(()));
        let invalid_ke = [notify(NotifyType::INVALID_KE_PAYLOAD)];
        assert_eq!(
            check(ExchangeType::CREATE_CHILD_SA, true, &invalid_ke),
            Ok(())
        );
        // ...but not in a request.
        assert!(check(ExchangeType::IKE_SA_INIT, false, &cookie).is_err());
    }

    #[test]
    fn unlisted_payloads_are_rejected_unknown_ones_tolerated() {
        assert_eq!(
            check(ExchangeType::INFORMATIONAL, false, &[sa()]),
            Err(RuleViolation::NotAllowed(PayloadType::SA))
        );
        let unknown = Payload::Unknown(UnknownPayload {
            payload_type: PayloadType(200),
            body: vec![],
        });
        assert_eq!(
            check(ExchangeType::INFORMATIONAL, false, &[unknown]),
            Ok(())
        );
        assert_eq!(
            check(ExchangeType(99), false, &[]),
            Err(RuleViolation::UnsupportedExchange(ExchangeType(99)))
        );
    }
}
