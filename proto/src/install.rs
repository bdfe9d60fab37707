//! What every binary offers for installing it, the same way in each: `completions SHELL`
//! (a completion script on stdout), `man [DIR]` (one man page per command and subcommand in
//! DIR, or the top page on stdout) and [`VERSION`], the text `--version` prints, which names
//! the git commit the binary was built from (`build.rs` finds it).
//!
//! A binary gets them either by flattening [`InstallCommand`] into its own subcommands and
//! calling [`InstallCommand::run`] (`stampede`, whose commands all return their output), or
//! through [`with_install`] and [`run_if_asked`], which `logging::parse_args` applies before
//! the binary's own types see the command line (`stampede-agent`, `stampede-target`). Either
//! way the scripts and pages are made from the binary's whole clap `Command`, so they always
//! match the flags it parses.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgMatches, FromArgMatches, Subcommand};
use clap_complete::Shell;

/// The version every binary prints: the workspace version and the commit it was built from,
/// e.g. `0.1.0 (commit 2afbc1e4f3a1, 2026-11-27)`. Built from a tree without git history (a
/// source tarball, a container build without `.git`) it says so; `STAMPEDE_COMMIT` set
/// while building names the commit instead.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("STAMPEDE_BUILD_COMMIT"),
    ")"
);

/// The subcommands that install a binary: completions and man pages.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum InstallCommand {
    /// Print a shell completion script to stdout.
    ///
    /// For bash, zsh, fish, elvish or powershell, e.g. `source <(stampede completions bash)`,
    /// or save it where the shell looks (bash: ~/.local/share/bash-completion/completions/).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages: one per (sub)command into DIR, or the top page to stdout.
    ///
    /// DIR is created if missing (e.g. ~/.local/share/man/man1, then `man stampede-run`);
    /// without DIR, `stampede man | man -l -` shows the top page.
    Man {
        /// Directory for the pages (e.g. ~/.local/share/man/man1).
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

impl InstallCommand {
    /// Writes what the subcommand asks for: the script or the top page to `out`, or the
    /// pages into DIR. `cmd` is the binary's whole command line (`Cli::command()`). Returns
    /// a line for stderr saying what was written where, if anything went to files.
    pub fn run(&self, cmd: clap::Command, out: &mut dyn Write) -> io::Result<Option<String>> {
        match self {
            InstallCommand::Completions { shell } => {
                let mut cmd = cmd;
                let name = cmd.get_name().to_owned();
                clap_complete::generate(*shell, &mut cmd, name, out);
                Ok(None)
            }
            InstallCommand::Man { dir: None } => {
                clap_mangen::Man::new(cmd).render(out)?;
                Ok(None)
            }
            InstallCommand::Man { dir: Some(dir) } => {
                let pages = write_man_pages(cmd, dir)?;
                Ok(Some(format!(
                    "{} man pages written to {}",
                    pages.len(),
                    dir.display()
                )))
            }
        }
    }
}

/// `cmd` with the `completions` and `man` subcommands added, its own `about` and
/// `long_about` kept: clap's derive applies [`InstallCommand`]'s doc comment to the command
/// it augments, which would make `--help` and the man page describe the install commands
/// instead of the binary.
pub fn with_install(cmd: clap::Command) -> clap::Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let reset = |text: Option<clap::builder::StyledStr>| match text {
        Some(text) => clap::builder::Resettable::Value(text),
        None => clap::builder::Resettable::Reset,
    };
    InstallCommand::augment_subcommands(cmd)
        .about(reset(about))
        .long_about(reset(long_about))
}

/// Runs `completions` or `man` if `matches` (parsed by [`with_install`]`(cmd)`) asks for one,
/// writing to stdout (the script, the page, or which pages went where), and returns the
/// exit code: 0; 64 ([`crate::usage::EX_USAGE`]) when `man DIR` cannot write into the DIR
/// given (as every binary treats an unwritable path it was given); else 1 — each failure
/// with one line on stderr naming `bin` and what failed. `None` when another command was
/// asked for.
pub fn run_if_asked(bin: &str, cmd: clap::Command, matches: &ArgMatches) -> Option<ExitCode> {
    let command = InstallCommand::from_arg_matches(matches).ok()?;
    let mut stdout = io::stdout().lock();
    let result = command
        .run(cmd, &mut stdout)
        .and_then(|note| stdout.flush().map(|()| note));
    Some(match result {
        Ok(note) => {
            if let Some(note) = note {
                println!("{note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{bin}: error: {e}");
            match command {
                InstallCommand::Man { dir: Some(_) } => ExitCode::from(crate::usage::EX_USAGE),
                _ => ExitCode::FAILURE,
            }
        }
    })
}

/// Writes one page per command and subcommand (`stampede.1`, `stampede-run.1`, …) into
/// `dir`, creating it; errors name the directory. Returns the files written, the top page
/// last. (`clap_mangen::generate_to` walks the same way but does not say what it wrote.)
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(cmd: &clap::Command, dir: &Path, pages: &mut Vec<PathBuf>) -> io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, pages)?;
        }
        pages.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
        Ok(())
    }
    let named = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("writing man pages to {}: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(named)?;
    // Built once, so each subcommand's page is named after its full path (`stampede-run`).
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(&cmd, dir, &mut pages).map_err(named)?;
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    #[command(name = "demo-bin", version = VERSION)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        /// Go.
        Go {
            /// How far.
            #[arg(long)]
            far: u32,
        },
        #[command(flatten)]
        Install(InstallCommand),
    }

    #[test]
    fn completions_name_the_flags_and_subcommands() {
        let cli = Cli::try_parse_from(["demo-bin", "completions", "bash"]).unwrap();
        let Sub::Install(install) = cli.command else {
            panic!("completions is an install command");
        };
        let mut out = Vec::new();
        assert_eq!(install.run(Cli::command(), &mut out).unwrap(), None);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("demo-bin"), "{script}");
        assert!(script.contains("--far"), "{script}");
        assert!(script.contains("completions"), "{script}");
        assert!(Cli::try_parse_from(["demo-bin", "completions", "tcsh"]).is_err());
    }

    #[test]
    fn man_writes_a_page_per_subcommand() {
        let dir = std::env::temp_dir().join(format!("stampede-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let man = InstallCommand::Man {
            dir: Some(dir.join("man1")),
        };
        let note = man.run(Cli::command(), &mut io::sink()).unwrap().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.join("man1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "demo-bin-completions.1",
                "demo-bin-go.1",
                "demo-bin-man.1",
                "demo-bin.1"
            ]
        );
        assert!(note.starts_with("4 man pages written to "), "{note}");
        let page = std::fs::read_to_string(dir.join("man1/demo-bin-go.1")).unwrap();
        assert!(page.contains("far"), "{page}");
        // Without DIR: the top page on stdout.
        let mut out = Vec::new();
        let top = InstallCommand::Man { dir: None };
        assert_eq!(top.run(Cli::command(), &mut out).unwrap(), None);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with(".ie \\n(.g .ds Aq")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // A binary built on `Parser` alone (as `stampede-agent` and `stampede-target` are)
    // describes itself in `--help` and its man page, not the install commands.
    #[derive(Debug, Parser)]
    #[command(name = "demo-daemon")]
    /// demo-daemon: the thing this binary is.
    ///
    /// More about it.
    struct Daemon {
        #[arg(long)]
        far: Option<u32>,
    }

    #[test]
    fn with_install_keeps_the_binarys_own_description() {
        let mut cmd = with_install(Daemon::command());
        assert_eq!(
            cmd.get_about().map(ToString::to_string).as_deref(),
            Some("demo-daemon: the thing this binary is")
        );
        let help = cmd.render_help().to_string();
        assert!(
            help.starts_with("demo-daemon: the thing this binary is\n"),
            "{help}"
        );
        assert!(!help.contains("install a binary"), "{help}");
        let mut page = Vec::new();
        InstallCommand::Man { dir: None }
            .run(with_install(Daemon::command()), &mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains("the thing this binary is"), "{page}");
        assert!(!page.contains("install a binary"), "{page}");
        assert!(cmd.find_subcommand("man").is_some());
    }

    #[test]
    fn the_version_names_its_commit_or_says_why_not() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(
            VERSION.contains("(commit ") || VERSION.contains("(no commit:"),
            "{VERSION}"
        );
    }
}
