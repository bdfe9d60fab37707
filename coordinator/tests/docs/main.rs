//! The docs a new user follows are true of the binaries: every command line in README.md,
//! docs/*.md and agent/README.md that runs `stampede`, `stampede-agent` or `stampede-target`
//! (also as `cargo run -p X -- …`, after `sudo` or `ip netns exec`) parses with that binary's
//! own clap definition (no unknown flag or subcommand, no flags that conflict, no value it
//! refuses unless the value is a placeholder such as `HOST:PORT` or `N`); synopsis lines
//! (`[--flag VALUE]`) name only flags the binary has; and every relative link in those pages
//! and ARCHITECTURE.md points at a file (and heading) that exists. A failure names the page,
//! the line and the flag.

mod links;
mod shell;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ErrorKind};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}

/// The pages a user reads: README.md, agent/README.md, deploy/README.md and docs/*.md; with `ARCHITECTURE.md`
/// when `diagrams` (its fenced blocks are drawings, not commands: only its links count).
fn pages(diagrams: bool) -> Vec<PathBuf> {
    let root = root();
    let with = [
        "README.md",
        "agent/README.md",
        "deploy/README.md",
        "ARCHITECTURE.md",
    ];
    let mut pages: Vec<PathBuf> = with[..if diagrams { 4 } else { 3 }]
        .iter()
        .map(|p| root.join(p))
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The clap definition of a binary the docs may run, by name, built: global flags (`stampede
/// history --db`, `--entry`, `--json`) are then known to every subcommand, as clap parses them.
fn binary(name: &str) -> Option<clap::Command> {
    let mut cmd = match name {
        "stampede" => stampede::cli::command(),
        "stampede-agent" => stampede_agent::cli::command(),
        "stampede-target" => stampede_target::cli::command(),
        _ => return None,
    };
    cmd.build();
    Some(cmd)
}

/// The problems of one command line, or none; the name of the binary it runs, if any.
fn check(cmd: &shell::CommandLine) -> (Option<String>, Result<(), String>) {
    let program = &cmd.words[0];
    let name = program.rsplit('/').next().unwrap_or(program).to_owned();
    let Some(def) = binary(&name) else {
        return (None, Ok(()));
    };
    let result = if cmd.synopsis {
        check_synopsis(&name, def, &cmd.words[1..])
    } else {
        check_parse(&name, def, &cmd.words)
    };
    (Some(name), result)
}

/// `cmd` and the name of the (sub)command the leading words of `args` select.
fn descend(name: &str, mut cmd: clap::Command, args: &[String]) -> (String, clap::Command) {
    let mut path = name.to_owned();
    for word in args {
        match cmd.find_subcommand(word).cloned() {
            Some(sub) => {
                path = format!("{path} {word}");
                cmd = sub;
            }
            None => break,
        }
    }
    (path, cmd)
}

/// True when `cmd` has the long flag `--flag` (`help` and `version` included).
fn has_flag(cmd: &clap::Command, flag: &str) -> bool {
    flag == "help"
        || flag == "version"
        || cmd.get_arguments().any(|a| {
            a.get_long() == Some(flag) || a.get_all_aliases().is_some_and(|al| al.contains(&flag))
        })
}

/// Every flag of a command line against the (sub)command it is given to, before clap's own
/// parse: that stops at the first error, and a placeholder value (`--target HOST:PORT`)
/// coming first would hide an unknown flag after it.
fn check_flags(name: &str, def: &clap::Command, args: &[String]) -> Result<(), String> {
    let mut cmd = def.clone();
    let mut path = name.to_owned();
    let mut positional = false;
    let mut args = args.iter();
    while let Some(word) = args.next() {
        if word == "--" {
            return Ok(());
        }
        let arg = if let Some(long) = word.strip_prefix("--") {
            let (flag, inline) = long
                .split_once('=')
                .map_or((long, false), |(f, _)| (f, true));
            if !has_flag(&cmd, flag) {
                return Err(format!("unknown flag --{flag} for `{path}`"));
            }
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .filter(|_| !inline)
        } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            let c = short.chars().next().expect("not empty");
            let arg = cmd.get_arguments().find(|a| a.get_short() == Some(c));
            if arg.is_none() && !matches!(c, 'h' | 'V') {
                return Err(format!("unknown flag -{c} for `{path}`"));
            }
            arg.filter(|_| short.len() == 1)
        } else {
            if !positional && let Some(sub) = cmd.find_subcommand(word).cloned() {
                path = format!("{path} {word}");
                cmd = sub;
            } else {
                positional = true;
            }
            None
        };
        // A flag's value is not a subcommand or a positional.
        if arg.is_some_and(|a| a.get_action().takes_values()) {
            args.next();
        }
    }
    Ok(())
}

/// A full command line: every flag known ([`check_flags`]), then clap must parse it,
/// placeholders and left-out required flags aside.
fn check_parse(name: &str, def: clap::Command, words: &[String]) -> Result<(), String> {
    check_flags(name, &def, &words[1..])?;
    let Err(e) = def.clone().try_get_matches_from(words) else {
        return Ok(());
    };
    let context = |kind| e.get(kind).map(ToString::to_string).unwrap_or_default();
    let (path, _) = descend(name, def, &words[1..]);
    match e.kind() {
        // An excerpt may leave out what it does not discuss.
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::MissingRequiredArgument
        | ErrorKind::MissingSubcommand
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Ok(()),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
            if placeholder(&context(ContextKind::InvalidValue)) =>
        {
            Ok(())
        }
        ErrorKind::UnknownArgument => {
            let arg = context(ContextKind::InvalidArg);
            let what = if arg.starts_with('-') {
                "unknown flag"
            } else {
                "unexpected argument"
            };
            Err(format!("{what} {arg} for `{path}`"))
        }
        ErrorKind::InvalidSubcommand => Err(format!(
            "unknown subcommand {} of `{path}`",
            context(ContextKind::InvalidSubcommand)
        )),
        _ => Err(format!(
            "`{path}` refuses it: {}",
            e.render().to_string().lines().next().unwrap_or_default()
        )),
    }
}

/// A value written as a placeholder (`N`, `HOST:PORT`, `http://COORDINATOR:7700`): a word of
/// capital letters only.
fn placeholder(value: &str) -> bool {
    value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase()))
}

/// A synopsis: each `--flag` it names must be one of the (sub)command's.
fn check_synopsis(name: &str, def: clap::Command, args: &[String]) -> Result<(), String> {
    let (path, cmd) = descend(name, def, args);
    let mut unknown = Vec::new();
    // After `--` come the child's command and arguments (`supervise -- COMMAND ARGS...`).
    for word in args.iter().take_while(|w| *w != "--") {
        for piece in word.split(['[', ']', '|']) {
            let Some(flag) = piece.strip_prefix("--") else {
                continue;
            };
            let flag = flag.split('=').next().unwrap_or(flag).trim_end_matches('.');
            if !has_flag(&cmd, flag) {
                unknown.push(format!("--{flag}"));
            }
        }
    }
    match unknown.as_slice() {
        [] => Ok(()),
        flags => Err(format!("unknown flag {} for `{path}`", flags.join(", "))),
    }
}

/// Every problem of every command line of `page` (named `name` in the messages), and how
/// many lines of each binary were checked.
fn problems(name: &str, page: &str) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut problems = Vec::new();
    let mut checked = BTreeMap::new();
    for cmd in shell::commands(page) {
        let (bin, result) = check(&cmd);
        if let Some(bin) = bin {
            *checked.entry(bin).or_insert(0) += 1;
        }
        if let Err(e) = result {
            problems.push(format!("{name}:{}: {e}\n    in: {}", cmd.line, cmd.text));
        }
    }
    (problems, checked)
}

#[test]
fn every_command_line_in_the_docs_parses() {
    let root = root();
    let mut all = Vec::new();
    let mut readme = BTreeMap::new();
    for page in pages(false) {
        let text = std::fs::read_to_string(&page).expect("the page is readable");
        let name = page
            .strip_prefix(&root)
            .unwrap_or(&page)
            .display()
            .to_string();
        let (problems, checked) = problems(&name, &text);
        all.extend(problems);
        if name == "README.md" {
            readme = checked;
        }
    }
    assert!(
        all.is_empty(),
        "{} command lines in the docs do not match the binaries:\n{}",
        all.len(),
        all.join("\n")
    );
    // The check saw what it is there for: README runs each binary, more than once.
    for bin in ["stampede", "stampede-agent", "stampede-target"] {
        assert!(
            readme.get(bin).is_some_and(|n| *n >= 2),
            "README.md shows {bin} in fewer than 2 command lines (found {readme:?}): \
             did the fenced blocks change form?"
        );
    }
}

#[test]
fn a_bad_line_is_named_with_its_flag() {
    let page = "intro\n\n```sh\n# fine\nstampede demo --agents 2\nsudo -E stampede run \\\n    --listen 0.0.0.0:7700 --agnets 3\ncargo run --release -p stampede-agent -- fire --target HOST:PORT --connections N --wrkers 2\nstampede-target observe --port 80 && stampede bogus\n```\n\n```\nstampede-target [--listen ADDR] [--backlogg N]\n                [--paused]\n```\n\n```text\nstampede run --not-checked\n```\n";
    let (found, checked) = problems("page.md", page);
    assert_eq!(
        found,
        [
            "page.md:6: unknown flag --agnets for `stampede run`\n    in: sudo -E stampede run --listen 0.0.0.0:7700 --agnets 3",
            "page.md:8: unknown flag --wrkers for `stampede-agent fire`\n    in: cargo run --release -p stampede-agent -- fire --target HOST:PORT --connections N --wrkers 2",
            "page.md:9: unknown subcommand bogus of `stampede`\n    in: stampede-target observe --port 80 && stampede bogus",
            "page.md:13: unknown flag --backlogg for `stampede-target`\n    in: stampede-target [--listen ADDR] [--backlogg N] [--paused]",
        ]
    );
    assert_eq!(checked["stampede"], 3);
    assert_eq!(checked["stampede-target"], 2);
    // A value the binary refuses is a problem unless it is a placeholder.
    let (refused, _) = problems("p.md", "```sh\nstampede run --connections many\n```\n");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("p.md:2: `stampede run` refuses it"),
        "{refused:?}"
    );
}

/// `stampede run --help` is where a user looks for a default: each one is there.
#[test]
fn run_help_shows_the_defaults() {
    let mut cmd = stampede::cli::command();
    let help = cmd
        .find_subcommand_mut("run")
        .expect("stampede run exists")
        .render_long_help()
        .to_string();
    for (flag, default) in [
        ("--listen", "127.0.0.1:7700"),
        ("--agents", "1"),
        ("--agent-wait", "60s"),
        ("--connections", "100"),
        ("--pattern", "burst"),
        ("--timeout", "10s"),
        ("--hold", "0"),
        ("--close", "rst"),
        ("--lead", "500ms"),
    ] {
        let at = help.find(&format!("{flag} <")).expect(flag);
        let rest = &help[at..];
        let entry = &rest[..rest[2..].find("\n      --").map_or(rest.len(), |e| e + 2)];
        assert!(
            entry.contains(&format!("[default: {default}]")),
            "stampede run --help does not show {flag}'s default {default}:\n{entry}"
        );
    }
}

#[test]
fn every_relative_link_points_at_a_file_and_heading() {
    let root = root();
    let mut broken = Vec::new();
    let mut seen = 0;
    for page in pages(true) {
        let text = std::fs::read_to_string(&page).expect("the page is readable");
        let name = page
            .strip_prefix(&root)
            .unwrap_or(&page)
            .display()
            .to_string();
        for (line, target) in links::relative(&text) {
            seen += 1;
            if let Err(e) = links::check(&page, &target) {
                broken.push(format!("{name}:{line}: link {target}: {e}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
    assert!(
        seen >= 10,
        "only {seen} relative links found: is the link parser blind?"
    );
}
