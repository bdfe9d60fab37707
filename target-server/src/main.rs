//! `stampede-target`: parse flags (through [`stampede_proto::logging::parse_args`]), set up
//! logging ([`stampede_proto::logging::init`]), run the command (the library's
//! [`stampede_target::cli`]), print its summary and map the outcome to an exit code (0 done,
//! 1 failed, 64 bad usage).

use std::process::ExitCode;

use stampede_proto::usage::EX_USAGE;
use stampede_target::Error;
use stampede_target::cli::{self, Cli};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli: Cli = match stampede_proto::logging::parse_args("stampede-target") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    stampede_proto::logging::init_with("info", cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stampede-target: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(e) = stampede_proto::signal::cancel_on_signal(shutdown.clone()) {
            tracing::warn!(cause = %e, "cannot install SIGINT/SIGTERM handlers");
        }
        cli::execute(cli, shutdown).await
    });
    match result {
        Ok(stats) => {
            println!("{}", stats.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stampede-target: error: {e}");
            ExitCode::from(match e {
                Error::Config(_) | Error::Token(_) | Error::Tls(_) => EX_USAGE,
                _ => 1,
            })
        }
    }
}
