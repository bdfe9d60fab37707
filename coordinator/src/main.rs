//! `stampede`: parse the command line, set up logging, run the command (the library's
//! [`stampede::cli`]), print its summary and map the outcome to an exit code (0 done, 1
//! failed or partial, 2 a `--fail-if` threshold failed, 64 bad usage or config; 1 wins
//! over 2). Results that could not be written where
//! asked still print their summary, and the error line says where they went instead. Every
//! error is one line with long values cut ([`stampede_proto::usage::one_line`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use stampede::cli::{self, Failure};
use stampede_proto::logging;
use stampede_proto::usage::{EX_USAGE, one_line};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => return logging::usage_error("stampede", &e),
    };
    // Setting-up commands (token, completions, man) draw no progress line to end.
    let draws_progress = !matches!(
        invocation.cli.command,
        cli::Command::Token(_) | cli::Command::Install(_)
    );
    logging::init("warn,stampede=info");
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
        cli::execute(invocation, shutdown.clone(), &progress).await
    });
    if draws_progress && std::io::stderr().is_terminal() {
        eprintln!();
    }
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

/// A progress line: rewritten in place on a terminal, one log line otherwise.
fn progress(line: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}\x1b[K");
    } else {
        tracing::info!("{line}");
    }
}
