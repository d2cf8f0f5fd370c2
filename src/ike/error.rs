//! Why an exchange failed, each cause mapped to the notify it sends in one place.

use crate::auth::AuthError;
use crate::crypto::CryptoError;
use crate::crypto::sk::SkError;
use crate::wire::{DecodeError, KeGroup, NotifyType};

/// An IKE negotiation error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// None of the peer's proposals is acceptable.
    #[error("no acceptable proposal")]
    NoProposalChosen,
    /// The peer's KE payload is for a group other than the one we chose.
    #[error("key exchange group {offered} not acceptable, {wanted} required")]
    InvalidKePayload {
        /// The group the peer sent.
        offered: KeGroup,
        /// The group we want.
        wanted: KeGroup,
    },
    /// Authentication of the peer failed.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// No common traffic selectors.
    #[error("traffic selectors unacceptable")]
    TsUnacceptable,
    /// A required payload is missing or one is malformed.
    #[error("invalid syntax: {0}")]
    InvalidSyntax(String),
    /// No virtual IP could be leased to the peer, or none was leased to us.
    #[error("no virtual IP: {0}")]
    AddressFailure(String),
    /// The connection leases virtual IPs and the peer asked for none.
    #[error("the peer asked for no virtual IP, which this connection requires")]
    CpRequired,
    /// We asked for transport mode and the peer made a tunnel-mode Child SA (RFC 7296
    /// §1.3.1: the initiator deletes one it cannot accept).
    #[error(
        "the peer declined transport mode (no USE_TRANSPORT_MODE in its answer): its tunnel-mode CHILD_SA is deleted"
    )]
    TransportModeDeclined,
    /// The child has as many per-resource SAs (RFC 9611) as we keep.
    #[error("no more per-resource Child SAs for this child")]
    TsMaxQueue,
    /// The peer answered with an error notify.
    #[error("peer sent {0}")]
    Notified(NotifyType),
    /// A cryptographic operation failed on our side.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The notify that tells the peer about this error.
    pub fn notify(&self) -> NotifyType {
        match self {
            Self::NoProposalChosen => NotifyType::NO_PROPOSAL_CHOSEN,
            Self::InvalidKePayload { .. } => NotifyType::INVALID_KE_PAYLOAD,
            Self::AuthenticationFailed(_) => NotifyType::AUTHENTICATION_FAILED,
            Self::TsUnacceptable => NotifyType::TS_UNACCEPTABLE,
            Self::InvalidSyntax(_) => NotifyType::INVALID_SYNTAX,
            Self::AddressFailure(_) => NotifyType::INTERNAL_ADDRESS_FAILURE,
            Self::CpRequired => NotifyType::FAILED_CP_REQUIRED,
            Self::TransportModeDeclined => NotifyType::NO_PROPOSAL_CHOSEN,
            Self::TsMaxQueue => NotifyType::TS_MAX_QUEUE,
            Self::Notified(n) => *n,
            Self::Internal(_) => NotifyType::NO_PROPOSAL_CHOSEN,
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        Self::AuthenticationFailed(e.to_string())
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::InvalidPublicValue(_) => Self::InvalidSyntax(e.to_string()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::InvalidSyntax(e.to_string())
    }
}

impl From<SkError> for Error {
    fn from(e: SkError) -> Self {
        match e {
            SkError::Decode(d) => d.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}
