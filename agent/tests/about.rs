//! `stampede-agent --help` and its man page describe the agent itself, not the install
//! subcommands (whose doc comment clap's derive once applied to the whole command).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_stampede-agent");

fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_and_man_page_name_the_agent() {
    let help = stdout_of(&["--help"]);
    let first = help.lines().next().unwrap_or_default();
    assert!(first.starts_with("The load host:"), "{first}");
    let page = stdout_of(&["man"]);
    let name = page
        .split(".SH NAME\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default();
    assert!(name.contains("The load host:"), "{name}");
    assert!(!page.contains("install a binary"), "{page}");
}
