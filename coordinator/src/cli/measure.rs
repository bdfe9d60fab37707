//! The subcommands that measure: `stampede run`, `stampede sweep` and `stampede demo`, from
//! their flags (a scenario file under them) to the report, recorded in the history when
//! asked and saved into `--out`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stampede_proto::rlimit::FdLimit;
use tokio_util::sync::CancellationToken;

use super::output::{deliver, out_dir, save};
use super::{DemoArgs, Failure, Output, RunArgs, SweepArgs};
use crate::admission::Limits;
use crate::history::{Kind, Ran};
use crate::report::OutDir;
use crate::run::RunError;
use crate::scenario::{ConfigError, Scenario, SweepSettings};
use crate::schedule::record::Recorder;
use crate::threshold;

/// The scenario file (if any) with the given flags over it.
fn settings(args: &RunArgs, explicit: &BTreeSet<String>) -> Result<Scenario, ConfigError> {
    let file = args.scenario.as_deref().map(Scenario::load).transpose()?;
    Ok(Scenario::layered(file, &args.settings, explicit))
}

/// Raises the descriptor limit to the hard one (each agent session holds a descriptor) and
/// refuses, with `fits`, a fleet that cannot fit under it, before anything is served; the
/// limit, for the log once serving (`None`: it could not be read, said here).
fn fit_fleet(
    fits: impl FnOnce(&Limits, FdLimit) -> Result<(), ConfigError>,
) -> Result<Option<FdLimit>, ConfigError> {
    match stampede_proto::rlimit::raise_fd_limit() {
        Ok(fd) => {
            fits(&Limits::default(), fd)?;
            Ok(Some(fd))
        }
        Err(e) => {
            tracing::warn!(cause = %e, "cannot read the file descriptor limit");
            Ok(None)
        }
    }
}

/// Serves the coordinator endpoint these settings ask for, for a fleet of their `agents`.
pub(super) async fn serve(
    settings: &Scenario,
    shutdown: &CancellationToken,
) -> Result<crate::Coordinator, Failure> {
    let agents = settings.agents;
    serve_fleet(settings, agents, shutdown, |limits, fd| {
        Ok(limits.check_fleet(agents, fd)?)
    })
    .await
}

/// Serves the coordinator endpoint these settings ask for, for a fleet of up to `agents`
/// (their Welcome's liveness bound allows for it), once `fits` has accepted the fleet it
/// will hold under the descriptor limit (`schedule`: its largest entry's).
pub(super) async fn serve_fleet(
    settings: &Scenario,
    agents: usize,
    shutdown: &CancellationToken,
    fits: impl FnOnce(&Limits, FdLimit) -> Result<(), ConfigError>,
) -> Result<crate::Coordinator, Failure> {
    let config = crate::ServeConfig {
        expected_agents: agents,
        ..settings.serve_config()?
    };
    let fd = fit_fleet(fits)?;
    let coordinator = crate::serve(config, shutdown.clone())
        .await
        .map_err(anyhow::Error::from)?;
    if let Some(fd) = fd {
        tracing::info!(
            soft = fd.soft,
            hard = fd.hard,
            max_agents = Limits::default().max_agents(fd),
            "file descriptor limit"
        );
    }
    tracing::info!(addr = %coordinator.addr, "waiting for agents");
    Ok(coordinator)
}

/// `stampede run`.
pub(super) async fn run(
    args: RunArgs,
    explicit: &BTreeSet<String>,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let settings = settings(&args, explicit)?;
    let plan = settings.plan()?;
    let out = out_dir(settings.out.as_deref())?;
    let coordinator = serve(&settings, shutdown).await?;
    let done = run_served(
        &args,
        &settings,
        &plan,
        out,
        &coordinator,
        shutdown,
        progress,
    )
    .await;
    coordinator.close(CLOSE_GRACE).await;
    done
}

/// How long a finished command waits for its agents' streams to end cleanly.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// `stampede run` once its endpoint is serving.
async fn run_served(
    args: &RunArgs,
    settings: &Scenario,
    plan: &crate::run::RunPlan,
    out: Option<OutDir>,
    coordinator: &crate::Coordinator,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let recorder = Recorder::start(
        &args.record,
        args.scenario.as_deref(),
        settings,
        Kind::Run,
        coordinator,
        shutdown,
    )
    .await
    .map_err(Failure::from)?;
    // Written second by second into --out as the run goes (or not at all).
    let hlog = out.as_ref().map_or(crate::run::HlogTo::Off, |o| {
        crate::run::HlogTo::File(o.path().join("report.hlog"))
    });
    let result =
        crate::run::execute_logged(&coordinator.registry, plan, hlog, shutdown, progress).await;
    let mut done = match result {
        Ok(done) => done,
        Err(e) => {
            recorder.failed(&e);
            return Err(anyhow::Error::from(e).into());
        }
    };
    done.report.thresholds = threshold::evaluate(&settings.fail_if, &done.report);
    recorder.finish(Ran::Run(&done.report), Some(done.merged()));
    let saved = save(out.as_ref(), &done.report.run_id, REPORT_FILES, |dir| {
        done.write(dir)
    });
    deliver(Output::Run(done.report), saved)
}

/// What a run writes, for the log.
const REPORT_FILES: &str = "report (json, csv, html, hlog)";

/// What a sweep writes ([`crate::sweep::SweepReport::write`]), for the log.
const SWEEP_FILES: &str = "sweep (json, csv, html)";

/// `stampede sweep`.
pub(super) async fn sweep(
    args: SweepArgs,
    explicit: &BTreeSet<String>,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let settings = settings(&args.run, explicit)?;
    let sweep = SweepSettings::layered(settings.sweep.clone(), &args.sweep, explicit);
    let plan = settings.sweep_plan(&sweep)?;
    let out = out_dir(settings.out.as_deref())?;
    let coordinator = serve(&settings, shutdown).await?;
    let done = sweep_served(
        &args,
        &settings,
        &plan,
        out,
        &coordinator,
        shutdown,
        progress,
    )
    .await;
    coordinator.close(CLOSE_GRACE).await;
    done
}

/// `stampede sweep` once its endpoint is serving.
async fn sweep_served(
    args: &SweepArgs,
    settings: &Scenario,
    plan: &crate::sweep::SweepPlan,
    out: Option<OutDir>,
    coordinator: &crate::Coordinator,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let recorder = Recorder::start(
        &args.run.record,
        args.run.scenario.as_deref(),
        settings,
        Kind::Sweep,
        coordinator,
        shutdown,
    )
    .await
    .map_err(Failure::from)?;
    let result = crate::sweep::execute(&coordinator.registry, plan, shutdown, progress).await;
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            recorder.failed(&e);
            return Err(match e {
                // Flags this target cannot follow: bad usage (exit 64), like a bad flag.
                RunError::TargetUnfit(e) => Failure::Usage(ConfigError::TargetUnfit(e)),
                e => anyhow::Error::from(e).into(),
            });
        }
    };
    report.judge(&settings.fail_if);
    recorder.finish(Ran::Sweep(&report), None);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("sweep-{started}");
    let saved = save(out.as_ref(), &name, SWEEP_FILES, |dir| report.write(dir));
    deliver(Output::Sweep(report), saved)
}

/// `stampede demo`.
pub(super) async fn demo(
    args: DemoArgs,
    shutdown: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Output, Failure> {
    let config = crate::demo::DemoConfig {
        agents: args.agents,
        connections: args.connections,
        backlog: args.backlog,
    };
    config.validate()?;
    crate::scenario::check_thresholds(&args.fail_if)?;
    let out = out_dir(args.out.as_deref())?;
    let mut done = crate::demo::run(&config, shutdown, progress)
        .await
        .map_err(anyhow::Error::from)?;
    done.report.thresholds = threshold::evaluate(&args.fail_if, &done.report);
    let saved = save(out.as_ref(), &done.report.run_id, REPORT_FILES, |dir| {
        done.write(dir)
    });
    deliver(Output::Run(done.report), saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log line names every kind of file a sweep writes.
    #[test]
    fn the_sweep_log_line_names_every_file_written() {
        let dir = std::env::temp_dir().join(format!("stampede-sweep-files-{}", std::process::id()));
        crate::sweep::html::tests::report().write(&dir).unwrap();
        let mut written: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(written, ["sweep.csv", "sweep.html", "sweep.json"]);
        for name in &written {
            let kind = name.trim_start_matches("sweep.");
            assert!(
                SWEEP_FILES.contains(kind),
                "{kind} missing from {SWEEP_FILES}"
            );
        }
    }
}
