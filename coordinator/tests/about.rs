//! Each binary's `--help` and man page describe that binary, not the install subcommands
//! (whose doc comment clap's derive once applied to the whole command of the agent and the
//! target).

use std::process::Command;

use support::sibling_bin;

mod support;

fn stdout_of(bin: &str, args: &[&str]) -> String {
    let out = Command::new(sibling_bin(bin)).args(args).output().unwrap();
    assert!(out.status.success(), "{bin} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_and_man_page_name_each_binary() {
    for (bin, about) in [
        ("stampede", "The coordinator:"),
        ("stampede-agent", "The load host:"),
        ("stampede-target", "The listener under test:"),
    ] {
        let help = stdout_of(bin, &["--help"]);
        let first = help.lines().next().unwrap_or_default();
        assert!(first.starts_with(about), "{bin}: {first}");
        let page = stdout_of(bin, &["man"]);
        let name = page
            .split(".SH NAME\n")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_default();
        assert!(name.contains(about), "{bin}: {name}");
        assert!(!page.contains("install a binary"), "{bin}: {page}");
    }
}
