//! What the coordinator's process benches (`capture`, `fleet`) share: their knobs read from
//! the environment and the machine's load printed beside every figure.

/// `name` from the environment as a number, or `default` when unset or not a number.
pub(crate) fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), or empty when unreadable.
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
