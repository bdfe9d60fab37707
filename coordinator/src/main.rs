//! `stampede`: parse the command line, set up logging, run the command (the library's
//! [`stampede::cli`]), print its summary and map the outcome to an exit code (0 done, 1
//! failed or partial, 2 a `--fail-if` threshold failed, 64 bad usage or config; 1 wins
//! over 2). Results that could not be written where
//! asked still print their summary, and the error line says where they went instead. Every
//! error is one line with long values cut ([`stampede_proto::usage::one_line`]).

use std::process::ExitCode;

use stampede::cli::{self, Failure};
use stampede::progress::Progress;
use stampede_proto::logging;
use stampede_proto::usage::{EX_USAGE, one_line};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => return logging::usage_error("stampede", &e),
    };
    // Setting-up commands (token, completions, man) draw no progress line.
    let draws_progress = !matches!(
        invocation.cli.command,
        cli::Command::Token(_) | cli::Command::Install(_)
    );
    let log = invocation.cli.log;
    logging::init_with(log_filter(&invocation.cli.command), log);
    let progress = Progress::stderr(log.quiet || !draws_progress);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stampede: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        if let Err(e) = stampede_proto::signal::cancel_on_signal(shutdown.clone()) {
            tracing::warn!(cause = %e, "cannot install SIGINT/SIGTERM handlers");
        }
        cli::execute(invocation, shutdown.clone(), &|line| progress.line(line)).await
    });
    progress.finish();
    match result {
        Ok(output) => {
            print!("{}", output.summary());
            ExitCode::from(output.exit_code())
        }
        Err(Failure::Usage(e)) => {
            eprintln!("stampede: error: {}", one_line(&e.to_string()));
            ExitCode::from(EX_USAGE)
        }
        Err(Failure::Other(e)) => {
            eprintln!("stampede: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
        Err(Failure::Unsaved { output, unsaved }) => {
            print!("{}", output.summary());
            eprintln!("stampede: error: {}", one_line(&unsaved.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// The default log filter (RUST_LOG overrides it). A directive matches by prefix, so
/// `stampede` alone would also let in the demo's in-process agents and target
/// (`stampede_agent`, `stampede_target`): those stay at warnings, and the demo, whose story is
/// its summary, shows only its progress and where the report went.
fn log_filter(command: &cli::Command) -> &'static str {
    match command {
        cli::Command::Demo(_) => "warn,stampede::progress=info,stampede::cli=info",
        _ => "warn,stampede=info,stampede_agent=warn,stampede_target=warn",
    }
}
