//! Property tests of the scenario decoder: any text is a scenario or an error naming the
//! file, never a panic; valid TOML with random values for every known key is too; and every
//! scenario that parses plans (`Scenario::plan`) without a panic. A plan that is Ok hands
//! each agent a Prepare the agent accepts.

use proptest::prelude::*;
use stampede::scenario::Scenario;
use stampede_proto::pattern::Pattern;
use stampede_proto::plan::Load;

/// Cases per property: enough to find a panic, few enough that the suite takes seconds.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(384)
}

/// A TOML value of any type, absurd ones included.
fn any_value() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_owned()),
        Just("-inf".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<String>().prop_map(|s| toml_string(&s)),
        Just("[]".to_owned()),
        Just("[1, \"max\", -3]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ]
    .boxed()
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32 & 0xFFFF)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quoted(s: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    s.prop_map(|s| toml_string(&s)).boxed()
}

fn duration_text() -> BoxedStrategy<String> {
    quoted(prop_oneof![
        30 => "[0-9]{1,3}(\\.[0-9]{1,3})?(us|ms|s)",
        6 => "[0-9]{1,6}(\\.[0-9]{1,3})?(ns|us|ms|s|m|h)",
        1 => Just("0".to_owned()),
        1 => Just("1e400s".to_owned()),
        1 => Just("18446744073709551615h".to_owned()),
    ])
}

fn small_or_absurd() -> BoxedStrategy<String> {
    prop_oneof![
        30 => (1..20u64).prop_map(|n| n.to_string()),
        6 => (0..2_000_000u64).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => Just("9223372036854775807".to_owned()),
    ]
    .boxed()
}

/// A value for `key` that is often of the right type and sometimes anything at all.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let typed = match key {
        "listen" => quoted(prop_oneof![
            6 => Just("127.0.0.1:7700".to_owned()),
            3 => Just("[::1]:0".to_owned()),
            3 => Just("0.0.0.0:7700".to_owned()),
            1 => "[0-9.:]{0,20}",
        ]),
        "agents" | "connections" | "backlog" => small_or_absurd(),
        "agent_wait" | "timeout" | "hold" | "lead" | "p99_max" => duration_text(),
        "target" => quoted(prop_oneof![
            6 => Just("127.0.0.1:9".to_owned()),
            3 => Just("[::1]:65535".to_owned()),
            3 => Just("198.18.0.1:0".to_owned()),
            1 => "[0-9.:\\[\\]]{0,24}",
        ]),
        "target_control" => quoted(prop_oneof![
            Just("http://127.0.0.1:9100".to_owned()),
            Just("https://[::1]:1".to_owned()),
            Just("http://:1".to_owned()),
            "(http|https|ftp)://[a-z0-9.:\\[\\]]{0,20}",
        ]),
        // Paths that do not exist: plan() may try to read them.
        "target_control_ca" | "out" | "token_file" | "tls_cert" | "tls_key" | "tls_client_ca" => {
            quoted("/nonexistent/stampede-props/[a-z]{0,8}")
        }
        "pattern" => quoted(prop_oneof![
            Just("burst".to_owned()),
            "ramp:[0-9]{1,7}(\\.[0-9]{1,3})?:[0-9]{1,5}(us|ms|s|m|h)",
            "waves:[0-9]{1,10}:[0-9]{1,6}(us|ms|s|m|h)",
            "(ramp|waves):[0-9.e+-]{0,12}:[0-9.]{0,8}(ms|s|h)?",
        ]),
        "close" => quoted(prop_oneof![
            6 => Just("rst".to_owned()),
            6 => Just("fin".to_owned()),
            1 => ".{0,4}"
        ]),
        "expect_greeting" | "probe_admission" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "backlogs" => prop::collection::vec(small_or_absurd(), 0..4)
            .prop_map(|v| format!("[{}]", v.join(", ")))
            .boxed(),
        "accept_rates" => prop::collection::vec(
            prop_oneof![
                8 => (0..100_000u32).prop_map(|n| n.to_string()),
                4 => Just("\"max\"".to_owned()),
                1 => Just("-1".to_owned()),
                1 => any::<f64>().prop_map(|f| format!("{f:?}")),
            ],
            0..4,
        )
        .prop_map(|v| format!("[{}]", v.join(", ")))
        .boxed(),
        _ => any_value(),
    };
    prop_oneof![60 => typed, 1 => any_value()].boxed()
}

const KEYS: [&str; 20] = [
    "listen",
    "agents",
    "agent_wait",
    "target",
    "target_control",
    "target_control_ca",
    "backlog",
    "connections",
    "pattern",
    "timeout",
    "hold",
    "close",
    "expect_greeting",
    "probe_admission",
    "lead",
    "out",
    "token_file",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
];
const SWEEP_KEYS: [&str; 3] = ["backlogs", "accept_rates", "p99_max"];

/// `key = value` lines, each key at most once (TOML refuses repeats), present about half the
/// time; now and then a misspelt key.
fn lines(keys: &'static [&'static str]) -> BoxedStrategy<String> {
    let line = |key: &'static str| {
        prop::option::weighted(
            if key == "target" { 0.9 } else { 0.4 },
            (value_for(key), prop::bool::weighted(0.01)).prop_map(move |(v, typo)| {
                let key = if typo {
                    format!("{key}x")
                } else {
                    key.to_owned()
                };
                format!("{key} = {v}\n")
            }),
        )
    };
    keys.iter()
        .map(|k| line(k).boxed())
        .collect::<Vec<_>>()
        .prop_map(|v| v.into_iter().flatten().collect::<String>())
        .boxed()
}

/// Scenario TOML: known keys with random values, and sometimes a `[sweep]` table.
fn scenario_text() -> BoxedStrategy<String> {
    (lines(&KEYS), prop::option::of(lines(&SWEEP_KEYS)))
        .prop_map(|(run, sweep)| match sweep {
            Some(s) => format!("{run}[sweep]\n{s}"),
            None => run,
        })
        .boxed()
}

/// Plans the scenario, then checks what a plan promises: each agent's share of the load
/// travels as a Prepare the agent accepts.
fn plan_and_check(s: &Scenario) -> Result<(), TestCaseError> {
    let _ = s.serve_config();
    if let Some(sweep) = &s.sweep {
        let _ = s.sweep_plan(sweep);
    }
    let Ok(plan) = s.plan() else {
        return Ok(());
    };
    prop_assert_eq!(plan.load.check(), Ok(()));
    let n = plan.agents;
    // Agents that get connections: the first, the last, and at most a few in between.
    for i in [0, n / 2, n - 1] {
        let connections = plan.share(i, n);
        if connections == 0 {
            continue;
        }
        let prepare = plan.agent_load(connections).to_prepare("props");
        let arrived = Load::try_from(&prepare);
        prop_assert!(
            arrived.is_ok(),
            "agent {} of {} refuses its part of {:?}: {:?}",
            i,
            n,
            plan.load,
            arrived
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_of_any_text_never_panics(text in any::<String>()) {
        if let Ok(s) = Scenario::parse(&text, "any.toml") {
            plan_and_check(&s)?;
        }
    }

    /// Text made of TOML's own characters reaches deeper into the parser than random text.
    #[test]
    fn parse_of_toml_shaped_text_never_panics(
        text in "([a-z_\\[\\]]{0,12} ?= ?(\"[^\"\n]{0,12}\"|[0-9.e+-]{0,12}|\\[[0-9, \"]{0,12}\\]|true|\\{[^}]{0,8}\\})?\n?){0,8}"
    ) {
        match Scenario::parse(&text, "shaped.toml") {
            Ok(s) => plan_and_check(&s)?,
            Err(e) => prop_assert!(e.to_string().starts_with("shaped.toml"), "{}", e),
        }
    }

    /// A ramp split across agents: each agent ramps at its share of the rate, and the
    /// float arithmetic of that share must still fit the agent's connections.
    #[test]
    fn every_agent_accepts_its_share_of_a_ramp(
        agents in 1..=64usize,
        connections in 1..=100_000u64,
        rate in prop_oneof![(1..100_000u32).prop_map(f64::from), 0.001f64..1e6],
        duration_ms in 1..=86_400_000u64,
    ) {
        let duration = std::time::Duration::from_millis(duration_ms);
        let pattern = Pattern::Ramp { rate, duration };
        let fits = pattern.max_connections().unwrap();
        let s = Scenario {
            target: Some("127.0.0.1:9".parse().unwrap()),
            agents,
            connections: connections.min(fits),
            pattern,
            ..Default::default()
        };
        prop_assert!(s.plan().is_ok(), "{:?}", s.plan().err());
        plan_and_check(&s)?;
    }

    /// Valid TOML with random values for every known key: Ok or an error naming the file,
    /// and every Ok plans without a panic.
    #[test]
    fn parse_of_known_keys_with_random_values_never_panics(text in scenario_text()) {
        match Scenario::parse(&text, "keys.toml") {
            Ok(s) => plan_and_check(&s)?,
            Err(e) => prop_assert!(e.to_string().starts_with("keys.toml"), "{}", e),
        }
    }
}
