//! stampede-agent: fires connect bursts at kernel speed and classifies every attempt
//! truthfully (docs/design.md, docs/kernel.md).
//!
//! The library is what both `stampede-agent fire` and the coordinator (in-process, for
//! `demo` and tests) call:
//! - [`plan`]: a [`FireConfig`] validated into a [`Plan`] with its [`Schedule`] (burst, ramp,
//!   waves);
//! - [`arm`]: fd limit and ephemeral-port preflight, then every socket created and configured
//!   before the start instant ([`Armed`]);
//! - [`engine`]: [`Armed::fire`] issues the connects at their intended times on one worker
//!   thread per core, classifies each attempt and streams [`Interval`]s;
//! - [`result`]: tallies, intervals and the [`RunResult`], with their report, wire and
//!   terminal forms;
//! - [`cidr`]: the `--allow-target` blocks;
//! - [`cli`]: the `stampede-agent` command line.
//!
//! ```no_run
//! # use stampede_agent::*;
//! # use std::time::{Duration, Instant};
//! let plan = Plan::new(FireConfig::new("127.0.0.1:9000".parse().unwrap(), 1000)).unwrap();
//! let armed = arm(&plan).unwrap();
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let result = armed.fire(Instant::now() + Duration::from_millis(5), &cancel, None).unwrap();
//! println!("{}", result.summary("127.0.0.1:9000", "burst"));
//! ```

pub mod arm;
pub mod cidr;
pub mod cli;
pub mod daemon;
pub mod engine;
pub mod plan;
pub mod result;
pub mod session;

pub use arm::{ArmError, Armed, FdLimit, arm, raise_fd_limit};
pub use engine::FireError;
pub use plan::{CloseMode, FireConfig, Plan, PlanError, Schedule};
pub use result::{Interval, RunResult, Tally};
