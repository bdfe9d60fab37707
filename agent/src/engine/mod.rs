//! The connect engine: one executor for every pattern (burst, ramp, waves), fed by the
//! [`Schedule`] offsets the sockets were armed with.
//!
//! Each worker thread owns a share of the armed sockets (attempt `i` goes to worker
//! `i % workers`, so every worker's offsets are non-decreasing) and one epoll instance. Its
//! loop issues every connect() whose intended time has come, waits on epoll for completions,
//! and expires deadlines and holds; nothing else happens between two connect() calls of a
//! burst. Per attempt it reads `SO_ERROR` and `TCP_INFO` at completion, waits for the greeting
//! or the probe's acknowledgement when asked, and classifies ([`Outcome`]). Latencies are
//! measured from the *intended* time, so a stalled agent shows in the numbers. Each worker
//! records into its own [`Tally`] and ships it at every [`INTERVAL`] boundary; the firing
//! thread merges them exactly into [`Interval`]s and the [`RunResult`].
//!
//! The parts, from one socket up:
//! - `context`: what a worker gives its attempts: the context they act in (epoll, target,
//!   settings, start instant) and the ledger they record into (tally, timers, counters);
//! - `slot`: one attempt as a state machine (armed, connecting, greeting or probing,
//!   holding, done), with the one errno → outcome mapping and the one event dispatch;
//! - `worker`: one thread's loop over its attempts (issue what is due, wait, hand events
//!   over, expire, check probes, end holds, ship the interval);
//! - `merge`: what workers report and how the firing thread adds it up per interval and
//!   for the run;
//! - `lateness`: the late bound ([`LATE_BOUND`]): what a stalled worker missed is cancelled
//!   and counted, never fired late in a catch-up burst;
//! - `gate`: [`StartGate`]: how threads started before the Start learn its instant (or
//!   are sent home), the late-start refusal;
//! - `fire`: [`Armed::fire`] and [`Armed::fire_at`]: the threads, the start wait, the
//!   result.
//!
//! [`Schedule`]: crate::plan::Schedule
//! [`Outcome`]: stampede_proto::outcome::Outcome
//! [`Tally`]: crate::result::Tally
//! [`Interval`]: crate::result::Interval
//! [`RunResult`]: crate::result::RunResult
//! [`Armed::fire`]: crate::arm::Armed::fire

mod context;
mod fire;
mod gate;
mod lateness;
mod merge;
mod slot;
mod waiting;
mod worker;

pub use fire::{FireError, LATE_START_TOLERANCE};
pub use gate::{StartGate, StartWait};
pub use lateness::LATE_BOUND;
pub use worker::INTERVAL;
