//! The command lines of a markdown page, as a reader would type them: fenced shell blocks
//! (`sh`, `bash`, `shell`, `console` with `$ ` prompts, or no language), `\`-continued lines
//! joined, comments dropped, split at `&&`, `||`, `;`, `|` and `&`, `$(…)`/`<(…)` taken as
//! commands of their own, words unquoted, and wrappers (`sudo -E`, `env`, `VAR=…`,
//! `ip netns exec NS`, `lab.sh exec I`, `cargo run -p X --`) peeled off to the program
//! and its arguments. Synopsis lines (`stampede-target [--listen ADDR] …`, continued on
//! lines that start with `[`) are kept apart: only their flags can be checked.

/// One command as written in a page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandLine {
    /// The page's line the command starts on (1-based).
    pub(crate) line: usize,
    /// The logical line as written (continuations joined).
    pub(crate) text: String,
    /// The program (`stampede`, `cargo`, `deploy/netns/lab.sh`) and its arguments, unquoted.
    pub(crate) words: Vec<String>,
    /// A usage synopsis (`[--flag VALUE]`), not something to run.
    pub(crate) synopsis: bool,
}

/// Every command line in the page's shell blocks.
pub(crate) fn commands(page: &str) -> Vec<CommandLine> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    // The logical line being gathered: where it starts and its text so far.
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in page.lines().enumerate() {
        let trimmed = raw.trim_start();
        if let Some(rest) = trimmed.strip_prefix("```") {
            if fence.take().is_none() {
                fence = Some(rest.trim().to_owned());
            }
            out.extend(pending.take().map_or_else(Vec::new, |(l, t)| split(l, &t)));
            continue;
        }
        let Some(lang) = fence.as_deref() else {
            continue;
        };
        let console = matches!(lang, "console" | "shell-session");
        if !(console || matches!(lang, "" | "sh" | "bash" | "shell")) {
            continue;
        }
        let continued = pending.as_ref().is_some_and(|(_, prev)| {
            prev.ends_with('\\') || (trimmed.starts_with('[') && is_synopsis(prev))
        });
        if continued {
            let (line, prev) = pending.take().expect("continued has a line");
            let head = prev.strip_suffix('\\').unwrap_or(&prev);
            pending = Some((line, format!("{} {}", head.trim_end(), trimmed.trim_end())));
            continue;
        }
        out.extend(pending.take().map_or_else(Vec::new, |(l, t)| split(l, &t)));
        let text = match (console, trimmed.strip_prefix("$ ")) {
            (false, _) => trimmed,
            (true, Some(cmd)) => cmd,
            // A console block's output.
            (true, None) => continue,
        };
        if !text.trim().is_empty() {
            pending = Some((i + 1, text.trim_end().to_owned()));
        }
    }
    out.extend(pending.take().map_or_else(Vec::new, |(l, t)| split(l, &t)));
    out
}

fn is_synopsis(text: &str) -> bool {
    text.contains(" [-") || text.contains(" [SCENARIO")
}

/// The commands of one logical line.
fn split(line: usize, text: &str) -> Vec<CommandLine> {
    let text = strip_comment(text.trim());
    if text.is_empty() {
        return Vec::new();
    }
    if is_synopsis(&text) {
        let words = text.split_whitespace().map(str::to_owned).collect();
        return vec![CommandLine {
            line,
            text: text.clone(),
            words,
            synopsis: true,
        }];
    }
    let mut out = Vec::new();
    let mut outer = String::new();
    let mut rest = text.as_str();
    // `$(cmd)` and `<(cmd)` are commands of their own; in the outer one they become a word.
    while let Some(start) = rest.find("$(").or_else(|| rest.find("<(")) {
        outer.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find(')') else {
            break;
        };
        out.extend(split(line, &rest[start + 2..start + 2 + len]));
        outer.push_str("SUBSTITUTED");
        rest = &rest[start + 3 + len..];
    }
    outer.push_str(rest);
    for part in pieces(&outer) {
        let words = peel(words(&part));
        if !words.is_empty() {
            out.push(CommandLine {
                line,
                text: text.clone(),
                words,
                synopsis: false,
            });
        }
    }
    out
}

/// `text` without a trailing `# comment` (a `#` at a word's start, outside quotes).
fn strip_comment(text: &str) -> String {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev.is_whitespace() => return text[..i].trim_end().to_owned(),
            None => {}
        }
        prev = c;
    }
    text.to_owned()
}

/// The line cut at `&&`, `||`, `;`, `|` and `&` outside quotes (`2>&1` is not a cut).
fn pieces(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let cut =
            quote.is_none() && (c == ';' || c == '|' || (c == '&' && i > 0 && chars[i - 1] != '>'));
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => quote = Some(c),
            _ => {}
        }
        if cut {
            out.push(String::new());
            if chars.get(i + 1) == Some(&c) {
                i += 1;
            }
        } else {
            out.last_mut().expect("never empty").push(c);
        }
        i += 1;
    }
    out
}

/// Shell words: quotes removed, `\x` kept as `x`, redirections (`> f`, `2>&1`, `<f`) dropped.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None if c == '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            None if c.is_whitespace() => out.extend(word.take()),
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    let mut kept = Vec::new();
    let mut skip_next = false;
    for w in out {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        let bare = w.trim_start_matches(|c: char| c.is_ascii_digit());
        if bare.starts_with('>') || bare.starts_with('<') {
            // `>` alone takes the next word as its file; `>file` and `2>&1` do not.
            skip_next = bare.trim_start_matches(['>', '<', '&']).is_empty() && !bare.contains('&');
            continue;
        }
        kept.push(w);
    }
    kept
}

/// The program a line runs and its arguments, wrappers taken off. `cargo run -p X -- ARGS`
/// becomes `X ARGS`.
fn peel(mut w: Vec<String>) -> Vec<String> {
    loop {
        let Some(first) = w.first().map(String::as_str) else {
            return w;
        };
        let base = first.rsplit('/').next().unwrap_or(first);
        let drop = match base {
            _ if first.contains('=') && !first.starts_with('-') => 1,
            "sudo" | "env" => 1 + flags(&w[1..], &["-u", "--user"]),
            "nohup" | "time" | "exec" | "setsid" => 1,
            "timeout" => 2 + flags(&w[1..], &[]),
            "ip" if w.get(1).is_some_and(|s| s == "netns")
                && w.get(2).is_some_and(|s| s == "exec") =>
            {
                4
            }
            "lab.sh" if w.get(1).is_some_and(|s| s == "exec") => 3,
            "cargo" if w.get(1).is_some_and(|s| s == "run") => return cargo_run(&w),
            _ => return w,
        };
        w.drain(..drop.min(w.len()));
    }
}

/// How many leading words are flags (with the values of `with_value`).
fn flags(w: &[String], with_value: &[&str]) -> usize {
    let mut n = 0;
    while let Some(f) = w.get(n).filter(|f| f.starts_with('-')) {
        n += if with_value.contains(&f.as_str()) {
            2
        } else {
            1
        };
    }
    n
}

/// `cargo run [-p X | --bin X] … [-- ARGS]` as `X ARGS`; unchanged when it names no package.
fn cargo_run(w: &[String]) -> Vec<String> {
    let end = w.iter().position(|s| s == "--").unwrap_or(w.len());
    let named = w[..end]
        .windows(2)
        .find(|p| ["-p", "--package", "--bin"].contains(&p[0].as_str()))
        .map(|p| p[1].clone());
    match named {
        Some(bin) => std::iter::once(bin)
            .chain(w.iter().skip(end + 1).cloned())
            .collect(),
        None => w.to_vec(),
    }
}
