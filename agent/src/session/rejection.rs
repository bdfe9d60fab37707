//! Why the agent says no: every reason it sends the coordinator in a `Rejected` message, as
//! one typed enum. Its `Display` is the reason text itself, so the coordinator, its report
//! and the tests read exactly what was sent.

use stampede_proto::histogram::HistogramError;
use stampede_proto::pb;
use stampede_proto::plan::LoadError;

use crate::{ArmError, FireError, PlanError};

/// A plan, a Start or a run this agent refuses or could not carry out.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// A Prepare while a run is still firing.
    #[error("busy: a run is still in progress on this agent")]
    Busy,
    /// The plan breaks a rule every load follows ([`stampede_proto::plan::Load::check`]).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The plan breaks this agent's limits or rules ([`crate::Plan::new`]).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The clock probes failed (the gRPC status message).
    #[error("clock sync with the coordinator failed: {0}")]
    ClockSync(String),
    /// The arming thread panicked.
    #[error("arming panicked: {0}")]
    ArmPanicked(tokio::task::JoinError),
    /// Arming failed (fd limit, port budget, a system call).
    #[error(transparent)]
    Arm(#[from] ArmError),
    /// A Start for a run that is not the one armed here.
    #[error("Start for a run this agent has not armed")]
    NotArmed,
    /// The Start message came after its start instant.
    #[error("start time already past by {late_ms:.3} ms when Start arrived; not firing late")]
    StartPassed {
        /// How late, in milliseconds.
        late_ms: f64,
    },
    /// The engine found its start instant already past.
    #[error(transparent)]
    FiredLate(FireError),
    /// The engine failed.
    #[error("firing failed: {0}")]
    Fire(FireError),
    /// The firing thread panicked.
    #[error("firing panicked: {0}")]
    FirePanicked(tokio::task::JoinError),
    /// The final result could not be encoded.
    #[error("encoding the result failed: {0}")]
    EncodeResult(HistogramError),
}

impl From<FireError> for Rejection {
    fn from(e: FireError) -> Rejection {
        match e {
            e @ FireError::StartPassed { .. } => Rejection::FiredLate(e),
            e => Rejection::Fire(e),
        }
    }
}

impl Rejection {
    /// The `Rejected` message that tells the coordinator why, for `run_id`.
    pub(super) fn to_msg(&self, run_id: String) -> pb::agent_message::Msg {
        pb::agent_message::Msg::Rejected(pb::Rejected {
            run_id,
            reason: self.to_string(),
        })
    }
}
