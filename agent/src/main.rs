//! `stampede-agent`: parse the command line, set up logging, call the library.

use std::process::ExitCode;

use stampede_agent::cli::{self, Cli};

fn main() -> ExitCode {
    let cli: Cli = match stampede_proto::logging::parse_args("stampede-agent") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    stampede_proto::logging::init_with("info", cli.log);
    cli::run(cli)
}
