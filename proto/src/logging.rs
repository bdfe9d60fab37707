//! The start of every binary, the same way in each: [`parse_args`] reads the command line
//! (clap errors become one line and exit 64, help and version exit 0), then [`init_with`]
//! sends `tracing` logs to stderr as the shared [`LogArgs`] flags say (`--quiet`,
//! `--log-format text|json`; every binary flattens them into its command line). Results go to
//! stdout or files, never through the log. While a live status line is drawn on the terminal
//! ([`set_live_line`]), each log line is written inside its suspend: the live line cleared,
//! the log line written whole, the live line drawn again, so the two never interleave.
//!
//! A `main` is then three steps:
//!
//! ```no_run
//! # #[derive(clap::Parser)] struct Cli {}
//! # fn run(_: Cli) -> std::process::ExitCode { std::process::ExitCode::SUCCESS }
//! fn main() -> std::process::ExitCode {
//!     let cli: Cli = match stampede_proto::logging::parse_args("stampede-example") {
//!         Ok(cli) => cli,
//!         Err(code) => return code,
//!     };
//!     stampede_proto::logging::init("info");
//!     run(cli)
//! }
//! ```

use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use clap::error::ErrorKind;
use clap::{Args, ValueEnum};

use crate::usage::{EX_USAGE, one_line};

/// Parses the process's command line into `P`, which gains the `completions` and `man`
/// subcommands ([`crate::install`]). When it returns `Err`, it has already done what the
/// command line asked for or printed what the user needs, and the error is the exit code
/// `main` should return:
/// - `--help` and `--version`: printed to stdout as usual, [`ExitCode::SUCCESS`];
/// - `completions SHELL`, `man [DIR]`: done, 0 (1 if writing failed);
/// - anything else: one line on stderr, `BIN: error: … (see --help)` (the first paragraph of
///   clap's message, see [`one_line`]), and exit 64 ([`EX_USAGE`]).
///
/// `bin` is the binary's name as the user typed it (`stampede`, `stampede-agent`, …).
/// It never calls `process::exit`: only `main` decides how the process ends.
pub fn parse_args<P: clap::Parser>(bin: &str) -> Result<P, ExitCode> {
    parse_args_from(bin, std::env::args_os())
}

/// [`parse_args`] of the given command line (the first item is the program name).
pub fn parse_args_from<P, I, T>(bin: &str, args: I) -> Result<P, ExitCode>
where
    P: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cmd = crate::install::with_install(P::command());
    let matches = cmd
        .clone()
        .try_get_matches_from(args)
        .map_err(|e| usage_error(bin, &e))?;
    if let Some(code) = crate::install::run_if_asked(bin, cmd, &matches) {
        return Err(code);
    }
    P::from_arg_matches(&matches).map_err(|e| usage_error(bin, &e))
}

/// Prints a clap error the way [`parse_args`] does and returns its exit code; for callers
/// that parse with `try_parse_from` themselves.
pub fn usage_error(bin: &str, error: &clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    eprintln!("{}", usage_line(bin, error));
    ExitCode::from(EX_USAGE)
}

/// The one line a usage error prints: `BIN: <first paragraph of the error> (see --help)`.
fn usage_line(bin: &str, error: &clap::Error) -> String {
    format!(
        "{bin}: {} (see --help)",
        one_line(&error.render().to_string())
    )
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, colour on a terminal.
    #[default]
    Text,
    /// For machines: one JSON object per line (timestamp, level, target, fields).
    Json,
}

/// The logging flags of every binary: `#[command(flatten)] log: LogArgs` in its top-level
/// command (global, so they go before or after a subcommand).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct LogArgs {
    /// Only warnings and errors on stderr, and no progress line; results still go to stdout
    /// and files (RUST_LOG, when set, still decides the log filter).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Log lines as text (for people) or json (one object per line, for machines).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Text,
        global = true,
        env = "STAMPEDE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Whether `--quiet` was given (set by [`init_with`]): live status lines check it.
static QUIET: AtomicBool = AtomicBool::new(false);

/// True when the process was started with `--quiet`: no live status line, no progress.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Runs a log line's write while the live status line is out of the way (an indicatif bar's
/// `suspend`): it must call the write it is given exactly once.
pub type Suspend = Arc<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

/// The live status line's suspend, while one is drawn.
static LIVE_LINE: RwLock<Option<Suspend>> = RwLock::new(None);

/// Says that a live status line is drawn on stderr (`Some`: log lines are written through
/// its suspend) or no longer is (`None`).
pub fn set_live_line(suspend: Option<Suspend>) {
    *LIVE_LINE.write().unwrap_or_else(|p| p.into_inner()) = suspend;
}

/// Where a finished log line goes.
type Sink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The log's writer: each event is collected whole, then written to `sink` in one piece,
/// inside the live line's suspend when one is drawn.
#[derive(Clone)]
pub struct LogWriter {
    sink: Sink,
}

impl LogWriter {
    /// Log lines to stderr.
    pub fn stderr() -> LogWriter {
        LogWriter::to(|line| {
            let _ = std::io::stderr().lock().write_all(line);
        })
    }

    /// A writer for one log line (what the subscriber takes for each event).
    pub fn line(&self) -> LogLine {
        LogLine {
            sink: self.sink.clone(),
            line: Vec::new(),
        }
    }

    /// Log lines to `sink` (tests: a buffer).
    pub fn to(sink: impl Fn(&[u8]) + Send + Sync + 'static) -> LogWriter {
        LogWriter {
            sink: Arc::new(sink),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        self.line()
    }
}

/// One event's text, written out when the formatter is done with it (on drop).
pub struct LogLine {
    sink: Sink,
    line: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let mut write = || (self.sink)(&self.line);
        // Cloned out, so the lock is not held while writing.
        let live = LIVE_LINE.read().unwrap_or_else(|p| p.into_inner()).clone();
        match live {
            Some(suspend) => suspend(&mut write),
            None => write(),
        }
    }
}

/// [`init_with`] and no flags: text, not quiet.
pub fn init(default_filter: &str) {
    init_with(default_filter, LogArgs::default());
}

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` or, when that is unset or
/// invalid, by `default_filter` (an `EnvFilter` directive such as `"info"` or
/// `"warn,stampede=info"`), or `warn` with `--quiet`. Text has colour codes only when stderr
/// is a terminal, so journald and log files get plain text; `--log-format json` writes one
/// JSON object per line. Call it once, after parsing the command line; a second call (a
/// subscriber is already set) changes nothing.
pub fn init_with(default_filter: &str, args: LogArgs) {
    QUIET.store(args.quiet, Ordering::Relaxed);
    let default_filter = if args.quiet { "warn" } else { default_filter };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter::stderr());
    let _ = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    #[command(name = "demo-bin", version)]
    struct Cli {
        /// A number.
        #[arg(long)]
        count: u32,
    }

    #[test]
    fn a_clap_error_is_one_line_naming_the_binary() {
        let e = Cli::try_parse_from(["demo-bin", "--count", "many"]).unwrap_err();
        let line = usage_line("demo-bin", &e);
        assert!(line.starts_with("demo-bin: error: "), "{line}");
        assert!(line.ends_with(" (see --help)"), "{line}");
        assert!(line.contains("'many'"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[derive(Debug, Parser)]
    #[command(name = "demo-bin")]
    struct WithLog {
        #[command(flatten)]
        log: LogArgs,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Go,
    }

    /// The flags go before or after a subcommand; a bad format is a usage error.
    #[test]
    fn log_flags_are_global_and_checked() {
        let parse = |args: &[&str]| WithLog::try_parse_from(args).map(|c| c.log);
        assert_eq!(parse(&["demo-bin"]).unwrap(), LogArgs::default());
        let quiet_json = LogArgs {
            quiet: true,
            log_format: LogFormat::Json,
        };
        assert_eq!(
            parse(&["demo-bin", "-q", "--log-format", "json", "go"]).unwrap(),
            quiet_json
        );
        assert_eq!(
            parse(&["demo-bin", "go", "--quiet", "--log-format", "json"]).unwrap(),
            quiet_json
        );
        assert!(parse(&["demo-bin", "--log-format", "xml"]).is_err());
    }

    /// A binary whose flags are all optional, like stampede-target.
    #[derive(Debug, Parser)]
    #[command(name = "demo-bin", version)]
    struct Optional {
        /// A number.
        #[arg(long, default_value_t = 1)]
        count: u32,
    }

    #[test]
    fn install_commands_run_at_parse_time() {
        let parse = |args: &[&str]| parse_args_from::<Optional, _, _>("demo-bin", args);
        assert_eq!(
            parse(&["demo-bin", "completions", "bash"]).unwrap_err(),
            ExitCode::SUCCESS
        );
        assert_eq!(parse(&["demo-bin", "--count", "3"]).unwrap().count, 3);
        let bad = parse(&["demo-bin", "completions", "tcsh"]).unwrap_err();
        assert_eq!(bad, ExitCode::from(EX_USAGE));
        // The DIR given cannot be made (a file where the directory should be): usage, 64.
        let file = std::env::temp_dir().join(format!("stampede-man-file-{}", std::process::id()));
        std::fs::write(&file, "").unwrap();
        let dir = file.join("man1");
        let args = ["demo-bin", "man", dir.to_str().unwrap()];
        assert_eq!(parse(&args).unwrap_err(), ExitCode::from(EX_USAGE));
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn help_and_version_exit_zero_and_errors_64() {
        let help = Cli::try_parse_from(["demo-bin", "--version"]).unwrap_err();
        assert_eq!(usage_error("demo-bin", &help), ExitCode::SUCCESS);
        let bad = Cli::try_parse_from(["demo-bin"]).unwrap_err();
        assert_eq!(usage_error("demo-bin", &bad), ExitCode::from(EX_USAGE));
    }

    /// With a live line drawn, a log line is written whole inside its suspend; without
    /// one, straight to the sink.
    #[test]
    fn log_lines_are_written_inside_the_live_lines_suspend() {
        use std::sync::Mutex;
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let writer = LogWriter::to(move |line| {
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(line).into_owned());
        });
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let hook = seen.clone();
        set_live_line(Some(Arc::new(move |write: &mut dyn FnMut()| {
            hook.lock().unwrap().push("[clear]".into());
            write();
            hook.lock().unwrap().push("[draw]".into());
        })));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 1, "first");
            set_live_line(None);
            tracing::info!("second");
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!((seen[0].as_str(), seen[2].as_str()), ("[clear]", "[draw]"));
        assert!(
            seen[1].contains("first n=1") && seen[1].ends_with('\n'),
            "one whole line: {seen:?}"
        );
        assert!(seen[3].contains("second"), "{seen:?}");
    }
}
