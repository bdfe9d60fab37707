//! What a `stampede` command produced ([`Output`]: its summary and exit code), how it failed
//! ([`Failure`]: usage, exit 64, or anything else, exit 1), and how its results are saved:
//! into `--out`, made and proven writable before anything runs, or when that fails at the
//! end into a fallback directory the error names ([`Unsaved`]), the summary printed all the
//! same.

use std::path::{Path, PathBuf};

use crate::report::{OutDir, Report};
use crate::scenario::ConfigError;
use crate::sweep::SweepReport;

/// Why a command failed: bad usage or configuration (exit 64), or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad usage or configuration.
    #[error(transparent)]
    Usage(#[from] ConfigError),
    /// The run itself failed.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
    /// The command ran, but its results could not be written to `--out`: they were written
    /// to a fallback directory instead (or that failed too). `main` still prints the summary;
    /// the exit code is 1.
    #[error("{unsaved}")]
    Unsaved {
        /// What the command produced.
        output: Box<Output>,
        /// Where it went instead of `--out`.
        unsaved: Unsaved,
    },
}

/// Results that `--out` did not take, and where they went instead.
#[derive(Debug, thiserror::Error)]
#[error("{}", match fallback {
    Ok(dir) => format!("writing the results to {}: {error}; written to {} instead", out.display(), dir.display()),
    Err(e) => format!("writing the results to {}: {error}; the fallback failed too ({e}): only the summary is left", out.display()),
})]
pub struct Unsaved {
    /// The `--out` directory.
    pub out: PathBuf,
    /// Why writing there failed.
    pub error: std::io::Error,
    /// The fallback directory written instead, or why that failed.
    pub fallback: Result<PathBuf, std::io::Error>,
}

/// What a command produced (one per process: the size difference costs nothing).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// A run's (or the demo's) report.
    Run(Report),
    /// A sweep's report.
    Sweep(SweepReport),
    /// A health check's answer.
    Health(crate::health::Health),
    /// Text for stdout and the exit code it goes with (`schedule`, `history`, and the
    /// setting-up commands: a token, a script, a man page, a note, with code 0).
    Text {
        /// What to print.
        text: String,
        /// The exit code.
        code: u8,
    },
}

impl Output {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        match self {
            Output::Run(r) => r.summary(),
            Output::Sweep(s) => s.summary(),
            Output::Health(h) => h.summary(),
            Output::Text { text, .. } => text.clone(),
        }
    }

    /// A partial run (or sweep step) is not a success.
    pub fn complete(&self) -> bool {
        match self {
            Output::Run(r) => !(r.aborted || r.partial),
            Output::Sweep(s) => s.stopped.is_none() && s.steps.iter().all(|st| !st.partial),
            Output::Health(h) => h.serving,
            Output::Text { code, .. } => *code != 1,
        }
    }

    /// The exit code of a command that produced this: 0 done, 1 not complete (partial,
    /// aborted, a sweep stopped early: it wins over 2), 2 a `--fail-if` threshold failed.
    pub fn exit_code(&self) -> u8 {
        if !self.complete() {
            1
        } else if !self.thresholds_passed() {
            2
        } else {
            0
        }
    }

    /// False when a `--fail-if` threshold failed (in any step of a sweep): exit 2, unless
    /// the run was not [`complete`](Output::complete), which is exit 1.
    pub fn thresholds_passed(&self) -> bool {
        match self {
            Output::Run(r) => r.thresholds_passed(),
            // A sweep looks for a setting that meets the thresholds: the small backlogs
            // failing them is what it is for. It fails when no step passes.
            Output::Sweep(s) => {
                s.reports.is_empty() || s.reports.iter().any(Report::thresholds_passed)
            }
            Output::Health(_) => true,
            Output::Text { code, .. } => *code != 2,
        }
    }
}

/// The output directory, created and proven writable before anything runs.
pub(super) fn out_dir(dir: Option<&Path>) -> Result<Option<OutDir>, ConfigError> {
    dir.map(OutDir::prepare)
        .transpose()
        .map_err(ConfigError::Out)
}

/// Writes a command's results with `write` into `out` (if one was given); if that fails,
/// into a new fallback directory named after `name`. `what` names the files for the log.
pub(super) fn save(
    out: Option<&OutDir>,
    name: &str,
    what: &str,
    write: impl Fn(&Path) -> std::io::Result<()>,
) -> Result<(), Unsaved> {
    let Some(out) = out else { return Ok(()) };
    let Err(error) = write(out.path()) else {
        tracing::info!(dir = %out.path().display(), "{what} written");
        return Ok(());
    };
    let fallback = OutDir::fallback(name).and_then(|dir| {
        write(dir.path())?;
        Ok(dir.path().to_owned())
    });
    Err(Unsaved {
        out: out.path().to_owned(),
        error,
        fallback,
    })
}

/// `output` as the command's result, or as a failure that still carries it.
pub(super) fn deliver(output: Output, saved: Result<(), Unsaved>) -> Result<Output, Failure> {
    match saved {
        Ok(()) => Ok(output),
        Err(unsaved) => Err(Failure::Unsaved {
            output: Box::new(output),
            unsaved,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_refused_by_out_go_to_a_named_fallback() {
        let dir = std::env::temp_dir().join(format!("stampede-cli-out-{}", std::process::id()));
        let out = OutDir::prepare(&dir).unwrap();
        let name = format!("cli-save-{}", std::process::id());
        // Refused in --out, taken in the fallback.
        let write = |d: &Path| {
            if d == dir.as_path() {
                Err(std::io::Error::other("disk full"))
            } else {
                std::fs::write(d.join("report.json"), "{}")
            }
        };
        let unsaved = save(Some(&out), &name, "report", write).unwrap_err();
        let fallback = unsaved.fallback.as_ref().unwrap().clone();
        assert!(fallback.join("report.json").is_file());
        let msg = unsaved.to_string();
        assert!(msg.contains("disk full"), "{msg}");
        assert!(msg.contains(&format!("written to {} instead", fallback.display())));
        std::fs::remove_dir_all(&fallback).unwrap();
        // Refused everywhere: the message says only the summary is left.
        let fail = |_: &Path| Err(std::io::Error::other("read-only"));
        let unsaved = save(Some(&out), &name, "report", fail).unwrap_err();
        assert!(unsaved.to_string().contains("only the summary is left"));
        if let Ok(d) = &unsaved.fallback {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("stampede-{name}")));
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("stampede-{name}-1")));
        // No --out: nothing written, nothing failed.
        assert!(save(None, &name, "report", fail).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod exit_tests {
    use super::*;
    use crate::report::ThresholdResult;

    /// A failed threshold is exit 2; a partial run is exit 1 whatever its thresholds say.
    #[test]
    fn a_failed_threshold_is_2_and_partial_wins() {
        let failed = ThresholdResult {
            expr: "ghost>0".into(),
            value: Some(1.0),
            unit: Some("count".into()),
            passed: false,
            detail: "1".into(),
        };
        let mut report = Report::default();
        assert_eq!(Output::Run(report.clone()).exit_code(), 0);
        report.thresholds.push(failed);
        assert_eq!(Output::Run(report.clone()).exit_code(), 2);
        report.partial = true;
        assert_eq!(Output::Run(report).exit_code(), 1);
    }
}
