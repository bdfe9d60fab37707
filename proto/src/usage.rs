//! Usage errors, the same way in every binary: exit 64 (EX_USAGE) with one line that names
//! the value.

/// Exit code for bad usage or configuration (sysexits.h EX_USAGE).
pub const EX_USAGE: u8 = 64;

/// The first paragraph of a multi-line message on one line. Clap spreads one error over
/// several lines ("required arguments were not provided:\n  --port") and appends usage;
/// this keeps what comes before the first blank line.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
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
}
