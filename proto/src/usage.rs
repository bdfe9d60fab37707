//! Usage errors, the same way in every binary: exit 64 (EX_USAGE) with one line that names
//! the value. A value echoed in that line is cut to [`MAX_ECHO_CHARS`] ([`cut`]): a 10 MB
//! `--pattern` or scenario value must not come back as a 10 MB error line.

use std::borrow::Cow;

/// Exit code for bad usage or configuration (sysexits.h EX_USAGE).
pub const EX_USAGE: u8 = 64;

/// Longest value echoed in an error line, in characters; a longer one is cut with `…`.
pub const MAX_ECHO_CHARS: usize = 100;

/// Longest error line [`one_line`] returns, in characters: a last resort for a message made
/// of many short words (a long value with spaces and no closing quote).
pub const MAX_LINE_CHARS: usize = 10 * MAX_ECHO_CHARS;

/// A value as an error line may echo it: unchanged up to [`MAX_ECHO_CHARS`] characters,
/// otherwise its first [`MAX_ECHO_CHARS`] characters and `…`.
pub fn cut(value: &str) -> Cow<'_, str> {
    cut_at(value, MAX_ECHO_CHARS)
}

fn cut_at(value: &str, max: usize) -> Cow<'_, str> {
    match value.char_indices().nth(max) {
        Some((end, _)) => Cow::Owned(format!("{}…", &value[..end])),
        None => Cow::Borrowed(value),
    }
}

/// The first paragraph of a multi-line message on one line, every value in it [`cut`]. Clap
/// spreads one error over several lines ("required arguments were not provided:\n  --port")
/// and appends usage; this keeps what comes before the first blank line.
pub fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    cut_at(&cut_values(&line), MAX_LINE_CHARS).into_owned()
}

/// Quote characters around an echoed value: clap's `'…'`, our `"…"`, serde's `` `…` ``.
const QUOTES: [char; 3] = ['\'', '"', '`'];

/// `line` with every quoted value and every word longer than [`MAX_ECHO_CHARS`] [`cut`].
/// A quote opens a value only after a space or punctuation (so `agent's` is a word) and
/// closes it at the same quote character.
pub fn cut_values(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(MAX_LINE_CHARS + 8));
    let mut rest = line;
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        let opens = QUOTES.contains(&c) && !prev.is_some_and(char::is_alphanumeric);
        if opens && let Some(len) = rest[1..].find(c) {
            out.push(c);
            out.push_str(&cut(&rest[1..1 + len]));
            out.push(c);
            rest = &rest[len + 2..];
            prev = Some(c);
            continue;
        }
        let end = rest
            .find(|ch: char| ch.is_whitespace() || (ch != c && QUOTES.contains(&ch)))
            .unwrap_or(rest.len())
            .max(c.len_utf8());
        let word = &rest[..end];
        out.push_str(&cut(word));
        prev = word.chars().next_back();
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_paragraph() {
        let clap = "error: the following required arguments were not provided:\n  --port <PORT>\n\nUsage: x observe --port <PORT>\n";
        assert_eq!(
            one_line(clap),
            "error: the following required arguments were not provided: --port <PORT>"
        );
        assert_eq!(one_line("one"), "one");
    }

    #[test]
    fn long_values_are_cut_short_ones_kept() {
        let short = "error: invalid value 'many' for '--connections <N>': invalid digit";
        assert_eq!(one_line(short), short);
        let prose = "the agent's cap isn't \"reached\" (see `--max`)";
        assert_eq!(cut_values(prose), prose);
        let big = "x".repeat(10 << 20);
        for line in [
            format!(
                "error: invalid value '{big}' for '--pattern <PATTERN>': invalid pattern \"{big}\""
            ),
            format!("s.toml:1: unknown field `{big}`, expected one of `agents`"),
            format!("invalid target {big}"),
        ] {
            let l = one_line(&line);
            assert!(l.chars().count() < 400, "{}", l.len());
            assert!(
                l.contains(&format!("{}…", "x".repeat(MAX_ECHO_CHARS))),
                "{l}"
            );
            assert!(!l.contains(&"x".repeat(MAX_ECHO_CHARS + 1)), "{l}");
        }
        // Kept what follows the value, so the line still says what is wrong.
        let l = one_line(&format!("invalid pattern \"{big}\": expected burst"));
        assert!(l.ends_with("…\": expected burst"), "{l}");
        // A quoted value with spaces is one value; an unclosed one still ends short.
        let spaced = format!("invalid target \"{}\"", "a b ".repeat(1000));
        assert!(
            one_line(&spaced).chars().count() < 200,
            "{}",
            one_line(&spaced)
        );
        let unclosed = format!("invalid target \"{}", "a b ".repeat(100_000));
        assert!(one_line(&unclosed).chars().count() <= MAX_LINE_CHARS + 1);
        // Characters, not bytes: a multi-byte value is cut on a character boundary.
        assert_eq!(cut(&"µ".repeat(150)), format!("{}…", "µ".repeat(100)));
        assert_eq!(cut("short"), "short");
    }
}
