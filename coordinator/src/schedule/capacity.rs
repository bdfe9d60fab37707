//! The capacity file of `stampede schedule`: `[[entry]]` tables, each with a name, a cron
//! expression (UTC), a kind (`run` or `sweep`), a scenario (a path relative to the capacity
//! file, or an inline `[entry.scenario]` table with the keys `stampede run` reads), `repeat`
//! and optional `[entry.thresholds]`. Everything is checked before the coordinator listens:
//! unknown keys, a bad cron, a duplicate name, a scenario that `run` or `sweep` would refuse;
//! each error is one line naming the file, the line and the key (exit 64).

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use croner::Cron;
use serde::Deserialize;
use stampede_proto::input::{ReadError, read_bounded};
use stampede_proto::usage::cut;
use toml::Spanned;

use crate::history::{Kind, Thresholds};
use crate::scenario::{ConfigError, MAX_SCENARIO_BYTES, Scenario};

/// Most runs one tick of an entry makes.
pub const MAX_REPEAT: u32 = 100;

/// Most entries a capacity file holds.
pub const MAX_ENTRIES: usize = 1000;

/// A checked capacity file.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// The file.
    pub path: PathBuf,
    /// Its entries, in file order.
    pub entries: Vec<Entry>,
}

/// One `[[entry]]`.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Unique within the file.
    pub name: String,
    /// When it runs (UTC).
    pub cron: Cron,
    /// The expression as written.
    pub cron_text: String,
    /// Run or sweep.
    pub kind: Kind,
    /// The scenario as the file (or its scenario file) gives it; the command line's flags
    /// go over it at each run.
    pub scenario: Scenario,
    /// The scenario file's stem, or the entry's name for an inline table.
    pub scenario_name: String,
    /// Runs per tick (the verdict compares their median).
    pub repeat: u32,
    /// When a difference is a regression.
    pub thresholds: Thresholds,
    /// `FILE:LINE` of its scenario, for errors.
    pub location: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    entry: Vec<RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Spanned<String>,
    cron: Spanned<String>,
    #[serde(default)]
    kind: RawKind,
    scenario: Spanned<toml::Value>,
    #[serde(default = "one")]
    repeat: Spanned<u32>,
    #[serde(default)]
    thresholds: Thresholds,
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    #[default]
    Run,
    Sweep,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Capacity {
    /// Reads and checks a capacity file.
    pub fn load(path: &Path) -> Result<Capacity, ConfigError> {
        let name = path.display().to_string();
        let file = read_bounded(path, MAX_SCENARIO_BYTES).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        let text = String::from_utf8(file.bytes).map_err(|_| ConfigError::Read {
            path: name.clone(),
            source: ReadError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not UTF-8 text",
            )),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Capacity::parse(&text, &name, dir).map(|entries| Capacity {
            path: path.to_owned(),
            entries,
        })
    }

    /// Refuses now, not at 3 a.m., what `run` or `sweep` would refuse in each entry's
    /// scenario with the command line's flags (`explicit`: those given) over it.
    pub fn check(
        &self,
        flags: &Scenario,
        explicit: &std::collections::BTreeSet<String>,
    ) -> Result<(), ConfigError> {
        for e in &self.entries {
            let s = Scenario::layered(Some(e.scenario.clone()), flags, explicit);
            let checked = match e.kind {
                Kind::Run => s.plan().map(drop),
                Kind::Sweep => s.sweep_plan(&s.sweep.clone().unwrap_or_default()).map(drop),
            };
            checked.map_err(|err| ConfigError::File {
                location: e.location.clone(),
                message: format!("scenario: entry \"{}\": {err}", e.name),
            })?;
        }
        Ok(())
    }

    /// The entry whose runs wait for the most agents (the flags over its scenario; the first
    /// in file order among equals) and that count: the fleet the one endpoint must hold.
    pub fn largest_fleet(
        &self,
        flags: &Scenario,
        explicit: &std::collections::BTreeSet<String>,
    ) -> Option<(&Entry, usize)> {
        self.entries
            .iter()
            .map(|e| {
                let s = Scenario::layered(Some(e.scenario.clone()), flags, explicit);
                (e, s.agents)
            })
            .fold(None, |best, (e, agents)| match best {
                Some((_, most)) if most >= agents => best,
                _ => Some((e, agents)),
            })
    }

    /// Parses capacity text; `name` is used in errors, `dir` resolves scenario paths.
    pub fn parse(text: &str, name: &str, dir: &Path) -> Result<Vec<Entry>, ConfigError> {
        let at = |offset: usize, key: &str, message: String| ConfigError::File {
            location: format!("{name}:{}", line_of(text, offset)),
            message: format!("{key}: {message}"),
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line = line_of(text, offset);
            // The key is on the error's line, when the message does not name it already.
            let message = e.message().trim().to_owned();
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_owned())
                .filter(|k| !k.is_empty() && !message.contains(k.as_str()));
            ConfigError::File {
                location: format!("{name}:{line}"),
                message: match key {
                    Some(k) => format!("{}: {}", cut(&k), cut(&message)),
                    None => cut(&message).into_owned(),
                },
            }
        })?;
        if raw.entry.is_empty() {
            return Err(ConfigError::File {
                location: name.to_owned(),
                message: "entry: no [[entry]] tables: nothing to schedule".into(),
            });
        }
        if raw.entry.len() > MAX_ENTRIES {
            return Err(at(
                0,
                "entry",
                format!("{} entries, at most {MAX_ENTRIES}", raw.entry.len()),
            ));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.entry.len());
        for e in raw.entry {
            let entry_name = e.name.get_ref().trim().to_owned();
            if entry_name.is_empty()
                || entry_name.len() > 100
                || entry_name.chars().any(char::is_control)
            {
                return Err(at(
                    e.name.span().start,
                    "name",
                    format!(
                        "invalid name \"{}\": 1 to 100 printable characters",
                        cut(&entry_name)
                    ),
                ));
            }
            if entries.iter().any(|x| x.name == entry_name) {
                return Err(at(
                    e.name.span().start,
                    "name",
                    format!("duplicate entry name \"{}\"", cut(&entry_name)),
                ));
            }
            let cron_text = e.cron.get_ref().trim().to_owned();
            let cron = Cron::from_str(&cron_text).map_err(|err| {
                at(e.cron.span().start, "cron", format!("invalid cron \"{}\" ({err}): expected minute hour day month weekday (5 fields, or 6 with seconds first), in UTC", cut(&cron_text)))
            })?;
            let repeat = *e.repeat.get_ref();
            if !(1..=MAX_REPEAT).contains(&repeat) {
                return Err(at(
                    e.repeat.span().start,
                    "repeat",
                    format!("invalid repeat {repeat}: expected 1 to {MAX_REPEAT}"),
                ));
            }
            let t = &e.thresholds;
            if [t.latency_percent, t.latency_ms, t.count_percent]
                .iter()
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                return Err(at(
                    e.name.span().start,
                    "thresholds",
                    "every threshold is a number, 0 or more".into(),
                ));
            }
            let kind = match e.kind {
                RawKind::Run => Kind::Run,
                RawKind::Sweep => Kind::Sweep,
            };
            let scenario_at = e.scenario.span().start;
            let (scenario, scenario_name) = match e.scenario.into_inner() {
                toml::Value::String(file) => {
                    let p = dir.join(&file);
                    let s = Scenario::load(&p)
                        .map_err(|err| at(scenario_at, "scenario", err.to_string()))?;
                    let stem = p
                        .file_stem()
                        .map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned());
                    (s, stem)
                }
                toml::Value::Table(table) => {
                    let s = Scenario::deserialize(toml::Value::Table(table)).map_err(|err| {
                        at(
                            scenario_at,
                            "scenario",
                            cut(err.message().trim()).into_owned(),
                        )
                    })?;
                    (s, entry_name.clone())
                }
                _ => {
                    return Err(at(
                        scenario_at,
                        "scenario",
                        "expected a scenario file path or an inline [entry.scenario] table".into(),
                    ));
                }
            };
            entries.push(Entry {
                name: entry_name,
                cron,
                cron_text,
                kind,
                scenario,
                scenario_name,
                repeat,
                thresholds: e.thresholds,
                location: format!("{name}:{}", line_of(text, scenario_at)),
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Entry>, String> {
        Capacity::parse(text, "cap.toml", Path::new("/nonexistent")).map_err(|e| e.to_string())
    }

    const GOOD: &str = "[[entry]]\nname = \"web\"\ncron = \"0 3 * * *\"\nrepeat = 3\n\
        [entry.scenario]\ntarget = \"127.0.0.1:80\"\nconnections = 50\n\
        [entry.thresholds]\nlatency_ms = 10\n";

    #[test]
    fn an_inline_entry_parses_with_its_overrides() {
        let e = parse(GOOD).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].name.as_str(), e[0].repeat, e[0].kind),
            ("web", 3, Kind::Run)
        );
        assert_eq!(e[0].scenario.connections, 50);
        assert_eq!(e[0].thresholds.latency_ms, 10.0);
        assert_eq!(e[0].thresholds.latency_percent, 20.0);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                GOOD.replace("0 3 * * *", "0 25 * * *"),
                "cap.toml:3: cron: invalid cron \"0 25 * * *\"",
            ),
            (
                GOOD.replace("repeat = 3", "repaet = 3"),
                "cap.toml:4: unknown field `repaet`",
            ),
            (
                format!("{GOOD}{GOOD}"),
                "cap.toml:11: name: duplicate entry name \"web\"",
            ),
            (
                GOOD.replace("connections = 50", "conections = 50"),
                "cap.toml:5: scenario: unknown field `conections`",
            ),
            (
                GOOD.replace("repeat = 3", "repeat = 0"),
                "cap.toml:4: repeat: invalid repeat 0",
            ),
            (
                GOOD.replace("repeat = 3", "kind = \"swep\""),
                "cap.toml:4: kind",
            ),
            (
                "[[entry]]\nname = \"x\"\ncron = \"* * * * *\"\nscenario = \"missing.toml\"\n"
                    .into(),
                "cap.toml:4: scenario: reading scenario /nonexistent/missing.toml",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with(want), "{e}\nwanted: {want}");
            assert!(!e.contains('\n'), "{e}");
        }
        // What a run would refuse, with the flags over it: a target given as a flag is enough.
        let text = GOOD.replace("target = \"127.0.0.1:80\"\n", "");
        let cap = Capacity {
            path: "cap.toml".into(),
            entries: parse(&text).unwrap(),
        };
        let none = std::collections::BTreeSet::new();
        let e = cap
            .check(&Scenario::default(), &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cap.toml:5: scenario: entry \"web\": no target"),
            "{e}"
        );
        let flags = Scenario {
            target: Some("127.0.0.1:9".parse().unwrap()),
            ..Scenario::default()
        };
        cap.check(&flags, &["target".to_owned()].into()).unwrap();
    }
}
