//! The duration syntax of every stampede flag and scenario file: a number and a unit, as in
//! `500ms`, `2s`, `1.5s`, `1m`. Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. A bare `0`
//! means zero; any other bare number is refused, because `--timeout 5` is ambiguous.
//!
//! Measured durations are shown to people by [`human_us`] (`850µs`, `12.3ms`, `3.07s`): the
//! one unit style of every terminal summary, whichever binary prints it.

use std::time::Duration;

/// A duration string that could not be parsed; the message names the value and the syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration \"{input}\": {reason} (expected a number and a unit, e.g. 500ms, 2s, 1m)"
)]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

/// A duration as flags and files give it: parsed by [`parse_duration`], shown by
/// [`format_duration`], and (de)serialized as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl std::str::FromStr for Dur {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Dur)
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

serde_via_str!(Dur);

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `0`.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |reason| ParseDurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(err("no number"));
    }
    let value: f64 = number.parse().map_err(|_| err("not a number"))?;
    let nanos_per_unit: f64 = match unit.trim() {
        "" if value == 0.0 => 0.0,
        "" => return Err(err("missing unit")),
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(err("unknown unit")),
    };
    let nanos = value * nanos_per_unit;
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Formats a duration the way [`parse_duration`] reads it back, with the largest unit that
/// keeps it exact to the microsecond (`1.5s`, `250ms`, `0`); whole minutes and hours in `m`
/// and `h`, so a value given as `25h` is echoed as `25h` (not `1500m`) when it is refused.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0".into();
    }
    let (div, unit) = match ns {
        n if n % 3_600_000_000_000 == 0 => (3600e9, "h"),
        n if n % 60_000_000_000 == 0 => (60e9, "m"),
        n if n >= 1_000_000_000 => (1e9, "s"),
        n if n >= 1_000_000 => (1e6, "ms"),
        n if n >= 1_000 => (1e3, "us"),
        _ => (1.0, "ns"),
    };
    let v = ns as f64 / div;
    // Decimals down to the microsecond in every unit: three below ms and us, six below s
    // (with three, 1.000001s printed as 1s).
    let decimals = if div >= 1e9 { 6 } else { 3 };
    let mut text = format!("{v:.decimals$}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    format!("{text}{unit}")
}

/// A measured duration in µs for people: `850µs` below a millisecond, `12.3ms` below a
/// second, `3.07s` from there on: three significant digits or so, and always a unit. The one
/// style of every terminal summary (`stampede`, `stampede-agent fire`).
pub fn human_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        // Below 999.95 ms, so that rounding to one decimal never shows "1000.0ms".
        1_000..=999_949 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// [`human_us`] with a sign, for offsets and errors that may be negative (`-1.2ms`).
pub fn human_signed_us(us: i64) -> String {
    let magnitude = human_us(us.unsigned_abs());
    if us < 0 {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 3h "), Ok(Duration::from_secs(3 * 3600)));
    }

    #[test]
    fn refuses_ambiguous_and_malformed_input() {
        for bad in ["", "5", "abc", "ms", "1x", "-1s", "1..2s", "1e400s"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("\"{bad}\"")), "{err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_millis(250),
            Duration::from_secs(120),
            Duration::from_micros(17),
            // Found by proto/tests/decoders.rs: seconds kept only three decimals.
            Duration::from_micros(1_000_001),
            Duration::from_micros(86_399_999_999),
            Duration::from_secs(25 * 3600),
            Duration::from_secs(90 * 60),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
    }

    /// Whole hours and minutes are shown as typed in those units: a refused `25h` or
    /// `1000000h` is echoed so, not as `1500m` or `60000000m`.
    #[test]
    fn whole_hours_and_minutes_keep_their_unit() {
        for text in ["25h", "1000000h", "90m", "1m", "1h", "59s", "1.5s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn human_durations_carry_a_unit_and_about_three_digits() {
        for (us, text) in [
            (0, "0µs"),
            (850, "850µs"),
            (999, "999µs"),
            (1_000, "1.0ms"),
            (1_234, "1.2ms"),
            (12_345, "12.3ms"),
            (999_949, "999.9ms"),
            (999_950, "1.00s"),
            (1_014_783, "1.01s"),
            (3_070_000, "3.07s"),
            (133_000_000, "133.00s"),
        ] {
            assert_eq!(human_us(us), text, "{us}");
        }
        assert_eq!(human_signed_us(-1_234), "-1.2ms");
        assert_eq!(human_signed_us(850), "850µs");
        assert_eq!(human_signed_us(i64::MIN), format!("-{}", human_us(1 << 63)));
    }
}
