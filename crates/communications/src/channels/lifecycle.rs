//! `pending_verification → active ⇄ suspended`, and any of them `→ revoked` (terminal).

use kernel::error::ApiError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ChannelStatus {
    PendingVerification,
    Active,
    Suspended,
    Revoked,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingVerification => "pending_verification",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    Verify,
    Suspend,
    Reactivate,
    Revoke,
}

impl LifecycleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Suspend => "suspend",
            Self::Reactivate => "reactivate",
            Self::Revoke => "revoke",
        }
    }

    /// The status `action` leads to from `from`, or a 409 naming the illegal move.
    pub fn apply(self, from: ChannelStatus) -> Result<ChannelStatus, ApiError> {
        use ChannelStatus::*;
        let to = match (self, from) {
            (Self::Verify, PendingVerification) => Some(Active),
            (Self::Suspend, Active) => Some(Suspended),
            (Self::Reactivate, Suspended) => Some(Active),
            (Self::Revoke, PendingVerification | Active | Suspended) => Some(Revoked),
            _ => None,
        };
        to.ok_or_else(|| {
            ApiError::conflict(
                Some("status"),
                format!("cannot {} a channel account that is {}", self.as_str(), from.as_str()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ChannelStatus::*;
    use super::LifecycleAction::*;

    #[test]
    fn legal_moves() {
        assert_eq!(Verify.apply(PendingVerification).ok(), Some(Active));
        assert_eq!(Suspend.apply(Active).ok(), Some(Suspended));
        assert_eq!(Reactivate.apply(Suspended).ok(), Some(Active));
        for from in [PendingVerification, Active, Suspended] {
            assert_eq!(Revoke.apply(from).ok(), Some(Revoked));
        }
    }

    #[test]
    fn everything_else_is_refused() {
        let all = [PendingVerification, Active, Suspended, Revoked];
        let legal = [(Verify, PendingVerification), (Suspend, Active), (Reactivate, Suspended)];
        for action in [Verify, Suspend, Reactivate, Revoke] {
            for from in all {
                let allowed = legal.contains(&(action, from)) || (action == Revoke && from != Revoked);
                assert_eq!(action.apply(from).is_ok(), allowed, "{action:?} from {from:?}");
            }
        }
    }
}
