//! One attached session as a state machine: [`Session`] holds what lives as long as the
//! stream does (the link, the run armed for a Start, the run firing) and has one method per
//! event: [`Session::on_prepare`], [`Session::on_start`], [`Session::on_abort`],
//! [`Session::on_heartbeat_tick`], [`Session::on_silence`], [`Session::on_stream_end`].
//! [`Session::run`] only dispatches; whatever ends it also ends the run in flight, whose
//! result then goes out marked cancelled with the reason (`end_run`).
//!
//! Liveness: a coordinator that states `liveness_ms` in its Welcome sends something (a Ping
//! at least) every heartbeat; hearing nothing for that long means it is gone or cut off,
//! and an agent firing with nobody watching is what must never happen: the run is
//! aborted and the session ends (then attaches again). A fleet's run may state a longer
//! bound (`Prepare.liveness_ms`); it holds from the run's Ready until the run is over (or
//! dropped unfired) and the coordinator has been heard since: then the Welcome's bound is
//! back ([`Session::liveness`]).

use std::ops::ControlFlow::{self, Break, Continue};
use std::time::Duration;

use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::firing::Firing;
use super::link::Link;
use super::prepare::{ArmedRun, prepare};
use super::rejection::Rejection;
use super::{Ended, SessionConfig};

/// What a step decides: go on, or end the session for this reason.
type Step = ControlFlow<Ended>;

/// How long a run cut short by the end of the session may take to hand over its final
/// result (the engine notices cancellation within ~50 ms).
const LAST_WORD_GRACE: Duration = Duration::from_secs(2);
/// How long, after its final result, a departing agent waits for the coordinator to see its
/// stream end (so the result is on the wire before the process exits).
const FLUSH_GRACE: Duration = Duration::from_secs(1);
/// The longest liveness bound a run's Prepare may ask for (a fleet's grows 2 ms per agent:
/// 4 s at 1,000); the Welcome's bound stands if it is longer.
const MAX_RUN_LIVENESS: Duration = Duration::from_secs(30);

/// An attached session's long-lived state.
pub(super) struct Session<'a> {
    config: &'a SessionConfig,
    link: Link,
    /// When to send the next heartbeat (the interval the coordinator asked for).
    tick: Interval,
    /// That interval.
    heartbeat: Duration,
    /// Armed by the last Prepare, waiting for its Start.
    armed: Option<ArmedRun>,
    /// The last run started; busy until its token is cancelled.
    firing: Option<Firing>,
    /// Silence from the coordinator after which the session ends (and a run in flight is
    /// aborted): Welcome.liveness_ms (`None`: 0, a coordinator that sends no Ping).
    welcome_liveness: Option<Duration>,
    /// The bound of the run armed or firing (its Prepare's when longer than the Welcome's).
    run_liveness: Option<Duration>,
    /// When the last run was over: its bound holds until the coordinator is heard after it.
    run_ended: Option<Instant>,
    /// This session's own stall has bought the coordinator time until then since it was
    /// last heard (once, so a dead coordinator is still found).
    stall_excused: Option<Instant>,
    /// When the coordinator was last heard from.
    last_heard: Instant,
}

impl<'a> Session<'a> {
    /// A session on a freshly attached link, heartbeats at the Welcome's interval.
    pub(super) fn new(config: &'a SessionConfig, link: Link) -> Session<'a> {
        let every = link.welcome.heartbeat_interval_ms.clamp(100, 60_000);
        let heartbeat = Duration::from_millis(every);
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let liveness = match link.welcome.liveness_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        Session {
            config,
            link,
            tick,
            heartbeat,
            armed: None,
            firing: None,
            welcome_liveness: liveness,
            run_liveness: None,
            run_ended: None,
            stall_excused: None,
            last_heard: Instant::now(),
        }
    }

    /// Obeys the coordinator until the stream ends or `shutdown`.
    pub(super) async fn run(mut self, shutdown: &CancellationToken) -> Ended {
        let ended = loop {
            self.note_run_over();
            let deadline = self.silence_deadline();
            // Biased: whatever the coordinator sent is read before its silence is judged.
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Break(Ended::Shutdown),
                _ = self.tick.tick() => self.on_heartbeat_tick().await,
                m = self.link.inbound.message() => self.on_inbound(m).await,
                _ = silence(deadline) => self.on_silence(),
                _ = Firing::over(self.firing.as_ref().filter(|f| f.is_busy())) => Continue(()),
            };
            if let Break(ended) = step {
                break ended;
            }
        };
        self.end_run(&ended).await;
        ended
    }

    /// Whatever ended the session ends the run: its sockets close now, not at some later
    /// moment nobody planned, and its cut-short result (marked cancelled, with the reason)
    /// goes out while the stream may still carry it.
    async fn end_run(mut self, ended: &Ended) {
        let Some(mut firing) = self.firing.take().filter(Firing::is_busy) else {
            return;
        };
        let why = match ended {
            Ended::Shutdown => "the agent is shutting down (SIGINT or SIGTERM)".to_owned(),
            Ended::Broken(why) | Ended::Idle(why) => format!("lost the coordinator: {why}"),
            Ended::Refused(s) => format!("refused by the coordinator: {}", s.message()),
        };
        tracing::warn!(run_id = %firing.run_id, reason = %why, "run cut short");
        firing.abort(&why);
        if !firing.last_word(LAST_WORD_GRACE).await {
            return;
        }
        // Our side of the stream ends once the final result is out; the coordinator then
        // closes its side, which tells us the result reached it.
        drop(self.link.out);
        let _ = tokio::time::timeout(FLUSH_GRACE, async {
            while let Ok(Some(_)) = self.link.inbound.message().await {}
        })
        .await;
    }

    /// The liveness bound that applies now: the run's while one is armed or firing, and
    /// after it until the coordinator is heard again (it is busiest reading results then,
    /// ours among them); else the Welcome's.
    fn liveness(&self) -> Option<Duration> {
        let in_run = self.armed.is_some() || self.firing.as_ref().is_some_and(Firing::is_busy);
        let unheard_since = self.run_ended.is_some_and(|ended| self.last_heard <= ended);
        match self.run_liveness {
            Some(run) if in_run || unheard_since => Some(run),
            _ => self.welcome_liveness,
        }
    }

    /// When the coordinator's silence ends the session (`None`: never): the bound that
    /// applies from the last word heard, or later if this process's own stall was excused.
    fn silence_deadline(&self) -> Option<Instant> {
        let deadline = self.last_heard + self.liveness()?;
        Some(deadline.max(self.stall_excused.unwrap_or(deadline)))
    }

    /// Notes, once per run, that the run is over (its token cancelled: done, aborted or cut
    /// short), however that was seen: the Welcome's bound is back once the coordinator is
    /// heard again. Checked on every pass, so an end that another branch won the race
    /// against (or an Abort, which cancels inside its handler) is not missed.
    fn note_run_over(&mut self) {
        if self.run_ended.is_none() && self.firing.as_ref().is_some_and(|f| !f.is_busy()) {
            self.run_ended = Some(Instant::now());
        }
    }

    /// Nothing from the coordinator for the liveness bound: it is gone or cut off, so
    /// nobody watches this run; stop firing and attach again.
    ///
    /// A timer that fires well after its deadline means this process itself was stalled
    /// (SIGSTOP, a starved CPU): the coordinator's Pings may be waiting unread in the socket.
    /// It then gets one heartbeat more to be heard before it is judged gone.
    fn on_silence(&mut self) -> Step {
        if let (Some(bound), Some(deadline)) = (self.liveness(), self.silence_deadline()) {
            let now = Instant::now();
            if now.saturating_duration_since(deadline) > OWN_STALL && self.stall_excused.is_none() {
                // One heartbeat more (half a lone agent's bound), not half of a bound that
                // grew with the fleet (the Welcome's does too): the agent must still give up
                // before the coordinator judges it lost.
                let extra = self.heartbeat.min(bound / 2);
                self.stall_excused = Some(now + extra);
                return Continue(());
            }
        }
        let ms = self.liveness().map_or(0, |l| l.as_millis());
        Break(Ended::Broken(format!(
            "no word from the coordinator for {ms} ms (its liveness bound)"
        )))
    }

    /// Dispatches one thing read from the stream.
    async fn on_inbound(
        &mut self,
        m: Result<Option<pb::CoordinatorMessage>, tonic::Status>,
    ) -> Step {
        if let Ok(Some(_)) = &m {
            self.last_heard = Instant::now();
            self.stall_excused = None;
        }
        match m {
            Ok(Some(pb::CoordinatorMessage { msg: Some(msg) })) => match msg {
                In::Prepare(p) => self.on_prepare(p).await,
                In::Start(s) => self.on_start(s).await,
                In::Abort(a) => self.on_abort(a),
                In::Ping(p) => self.on_ping(p).await,
                In::Welcome(_) => Continue(()),
            },
            Ok(Some(_)) => Continue(()),
            Ok(None) => self.on_stream_end(None),
            Err(s) => self.on_stream_end(Some(s)),
        }
    }

    /// A periodic Ping needs no answer; the delivery round before a Start (a Ping naming
    /// the run this agent is armed for) is answered at once, so the coordinator can measure
    /// how long its fan-out takes and choose a start lead every agent meets.
    async fn on_ping(&mut self, p: pb::Ping) -> Step {
        let armed_for = self.armed.as_ref().map(|a| a.run_id.as_str());
        if p.run_id.is_empty() || armed_for != Some(p.run_id.as_str()) {
            return Continue(());
        }
        let echo = pb::Heartbeat {
            run_id: p.run_id,
            echo_ping_unix_nanos: p.sent_unix_nanos,
            ..Default::default()
        };
        self.send(Out::Heartbeat(echo)).await
    }

    /// Tells the coordinator this agent lives, and how far the run has come.
    async fn on_heartbeat_tick(&mut self) -> Step {
        let heartbeat = self
            .firing
            .as_ref()
            .map_or_else(pb::Heartbeat::default, Firing::heartbeat);
        self.send(Out::Heartbeat(heartbeat)).await
    }

    /// Validates, syncs the clock and arms; answers Ready or Rejected.
    async fn on_prepare(&mut self, p: pb::Prepare) -> Step {
        let run_id = p.run_id.clone();
        if self.firing.as_ref().is_some_and(Firing::is_busy) {
            return self.send(Rejection::Busy.to_msg(run_id)).await;
        }
        // A fleet's run may state a longer bound; never a shorter one, never one where the
        // coordinator stated none, and never past MAX_RUN_LIVENESS (a huge value would turn
        // "never alone" off). It holds only for a run this agent accepts.
        let run_liveness = self
            .welcome_liveness
            .map(|w| w.max(Duration::from_millis(p.liveness_ms).min(MAX_RUN_LIVENESS)));
        // A run armed before is replaced: dropping it sends its threads home.
        self.armed = None;
        let prepared = prepare(self.config, &mut self.link.client, p).await;
        // Arming can take longer than the liveness bound: the coordinator's Pings wait in
        // the stream meanwhile, so silence counts from here.
        self.last_heard = Instant::now();
        let reply = match prepared {
            Ok(run) => {
                let ready = run.ready();
                self.armed = Some(run);
                self.run_liveness = run_liveness;
                self.run_ended = None;
                Out::Ready(ready)
            }
            Err(rejection) => {
                tracing::warn!(%run_id, reason = %rejection, "plan rejected");
                rejection.to_msg(run_id)
            }
        };
        self.send(reply).await
    }

    /// Fires the armed run at the agreed instant, or refuses to fire late.
    async fn on_start(&mut self, s: pb::Start) -> Step {
        let Some(run) = self.armed.take().filter(|a| a.run_id == s.run_id) else {
            return self.reject(s.run_id, Rejection::NotArmed).await;
        };
        let local_start = run.clock.to_agent(s.start_at_unix_nanos);
        // Saturating: the instant comes from the coordinator, and an absurd one (i64::MIN)
        // must be refused as past, not overflow.
        let ahead_ns = local_start.saturating_sub(unix_nanos_now());
        if ahead_ns <= 0 {
            // Firing late would make the burst a lie: refuse instead.
            let late = Rejection::StartPassed {
                late_ms: -(ahead_ns as f64) / 1e6,
            };
            tracing::warn!(run_id = %s.run_id, reason = %late, "start refused");
            return self.reject(s.run_id, late).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_nanos(ahead_ns as u64);
        match Firing::start(run, deadline, self.link.out.clone()) {
            Ok(firing) => {
                self.firing = Some(firing);
                self.run_ended = None;
            }
            Err(refused) => {
                tracing::warn!(run_id = %s.run_id, reason = %refused, "start refused");
                return self.reject(s.run_id, refused).await;
            }
        }
        Continue(())
    }

    /// Stops the run named, firing or armed.
    fn on_abort(&mut self, ab: pb::Abort) -> Step {
        if let Some(f) = self.firing.as_ref().filter(|f| f.run_id == ab.run_id) {
            tracing::warn!(run_id = %ab.run_id, reason = %ab.reason, "run aborted by the coordinator");
            f.abort(&format!("aborted by the coordinator: {}", ab.reason));
        }
        if self.armed.as_ref().is_some_and(|a| a.run_id == ab.run_id) {
            self.armed = None;
        }
        Continue(())
    }

    /// The coordinator closed the stream (`None`) or it failed.
    fn on_stream_end(&mut self, error: Option<tonic::Status>) -> Step {
        let ended = match error {
            None => Ended::Broken("the coordinator closed the stream".into()),
            Some(s) => Ended::from(s),
        };
        // After its runs, with none in flight, the coordinator going away is how a run
        // ends (`stampede run` exits): nothing went wrong.
        let idle = self.armed.is_none() && self.firing.as_ref().is_some_and(|f| !f.is_busy());
        Break(match ended {
            Ended::Broken(why) if idle => Ended::Idle(why),
            ended => ended,
        })
    }

    /// Sends one message; a failed send means the stream is gone.
    async fn send(&self, msg: Out) -> Step {
        let msg = pb::AgentMessage { msg: Some(msg) };
        match self.link.out.send(msg).await {
            Ok(()) => Continue(()),
            Err(_) => Break(Ended::Broken("stream closed".into())),
        }
    }

    /// Refuses a Start; a failed send is found out by the next step.
    async fn reject(&self, run_id: String, why: Rejection) -> Step {
        let _ = self.send(why.to_msg(run_id)).await;
        Continue(())
    }
}

/// How late a liveness timer may fire before it says more about this process (stalled)
/// than about the coordinator.
const OWN_STALL: Duration = Duration::from_millis(100);

/// Completes at `deadline`; never without one.
async fn silence(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
