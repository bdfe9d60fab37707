//! What the target reports: the `target{}` object of report.json. The type is the contract
//! between the target and the coordinator, so it lives in `stampede_proto::target`; this
//! module names it for the target's own code.

pub use stampede_proto::output::write_json_atomic;
pub use stampede_proto::target::{CONTRACT_KEYS, CounterDeltas, TargetStats};
