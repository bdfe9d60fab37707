//! Unit tests of the settings: parsing, layering, defaults, the checks and their order.

mod settings {
    use std::time::Duration;

    use crate::scenario::check::check_control_url;
    use crate::scenario::*;

    fn explicit(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "agents = 3\nconections = 10\n";
        let err = Scenario::parse(text, "cap.toml").unwrap_err().to_string();
        assert!(err.starts_with("cap.toml:2:"), "{err}");
        assert!(err.contains("conections"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = Scenario::parse(
            "agents = 3\nconnections = 30\ntarget = \"127.0.0.1:9\"\npattern = \"waves:2:1s\"\n",
            "s.toml",
        )
        .unwrap();
        let flags = Scenario {
            connections: 99,
            // Not given by the user: the file's value stands.
            agents: 7,
            ..Default::default()
        };
        let plan = Scenario::layered(Some(file), &flags, &explicit(&["connections"]))
            .plan()
            .unwrap();
        assert_eq!(plan.load.connections, 99);
        assert_eq!(plan.agents, 3);
        assert_eq!(plan.load.pattern.to_string(), "waves:2:1s");
        assert_eq!(plan.load.target, "127.0.0.1:9".parse().unwrap());
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        let s = Scenario::default();
        assert_eq!(s.listen, "127.0.0.1:7700".parse().unwrap());
        assert_eq!((s.agents, s.connections), (1, 100));
        assert_eq!(s.timeout.0, Duration::from_secs(10));
        assert_eq!(s.lead.0, Duration::from_millis(500));
        assert_eq!(s.close, CloseMode::Rst);
        // Every key of the file form is a flag and back: a file written from the defaults
        // reads back as the defaults.
        let text = toml::to_string(&s).unwrap();
        assert_eq!(Scenario::parse(&text, "d.toml").unwrap(), s);
        let sweep = Scenario::parse(
            "[sweep]\nbacklogs = [8, 64]\naccept_rates = [500, \"max\"]\np99_max = \"50ms\"\n",
            "s.toml",
        )
        .unwrap()
        .sweep
        .unwrap();
        assert_eq!(sweep.backlogs, [8, 64]);
        assert_eq!(
            sweep.accept_rates,
            [AcceptRate(500.0), AcceptRate(f64::INFINITY)]
        );
        assert_eq!(sweep.p99_max.0, Duration::from_millis(50));
    }

    #[test]
    fn bad_values_are_named() {
        for (s, needle) in [
            ("target = \"127.0.0.1:9\"\ntimeout = \"5\"", "timeout"),
            ("target = \"127.0.0.1:9\"\npattern = \"spray\"", "spray"),
            ("target = \"127.0.0.1:9\"\nclose = \"slam\"", "slam"),
            ("target = \"127.0.0.1:9\"\nagents = 0", "agents"),
            (
                "target = \"127.0.0.1:9\"\nconnections = 500\npattern = \"ramp:100:4s\"",
                "at most 400",
            ),
            ("connections = 5", "no target"),
            (
                "target = \"127.0.0.1:9\"\nexpect_greeting = true\nprobe_admission = true",
                "exclude each other",
            ),
            ("target = \"localhost\"", "s.toml:1"),
            (
                "target = \"127.0.0.1:9\"\ntarget_control = \"ftp://h:1\"",
                "http or https",
            ),
            ("target = \"127.0.0.1:9\"\nbacklog = 8", "--target-control"),
        ] {
            let err = Scenario::parse(s, "s.toml").and_then(|sc| sc.plan().map(|_| sc));
            let msg = err.unwrap_err().to_string();
            assert!(msg.contains(needle), "{s}: {msg}");
        }
    }

    #[test]
    fn values_are_checked_before_missing_settings() {
        // Each scenario has a bad value and lacks a target: the value is reported.
        for (s, needle) in [
            ("connections = 0", "invalid connections 0"),
            ("agents = 0", "invalid agents \"0\""),
            ("backlog = -5", "invalid backlog \"-5\""),
            ("timeout = \"0\"\nbacklog = 8", "invalid timeout 0"),
            ("lead = \"2m\"", "invalid lead \"2m\""),
        ] {
            let e = Scenario::parse(s, "s.toml").unwrap().plan().unwrap_err();
            assert!(e.to_string().contains(needle), "{s}: {e}");
        }
        let sweep = SweepSettings {
            backlogs: vec![8, -1],
            ..Default::default()
        };
        let e = Scenario::default().sweep_plan(&sweep).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid backlog \"-1\": expected a whole number, 0 or more"
        );
        // All values good: what is missing, in the same order as before.
        let e = Scenario::default().plan().unwrap_err();
        assert!(matches!(e, ConfigError::NoTarget), "{e}");
        let e = Scenario::default()
            .sweep_plan(&SweepSettings::default())
            .unwrap_err();
        assert!(matches!(e, ConfigError::NoBacklogs), "{e}");
    }

    #[test]
    fn absurd_numbers_are_refused_with_their_bounds() {
        let base = "target = \"127.0.0.1:9\"\n";
        for (s, needle) in [
            ("agents = 10001", "expected 1 to 10000"),
            ("connections = 1000000001", "at most 1000000000"),
            ("agent_wait = \"0\"", "above 0, at most 24h"),
            ("agent_wait = \"25h\"", "above 0, at most 24h"),
            ("lead = \"61s\"", "at most 1m"),
            ("hold = \"25h\"", "at most 24h"),
            ("pattern = \"ramp:1:25h\"", "at most 24h"),
        ] {
            let text = format!("{base}{s}\n");
            let e = Scenario::parse(&text, "s.toml")
                .unwrap()
                .plan()
                .unwrap_err();
            assert!(e.to_string().contains(needle), "{s}: {e}");
        }
        for s in [
            "agents = 10000",
            "connections = 1000000000\nagents = 10000",
            "agent_wait = \"24h\"",
            "lead = \"1m\"\nhold = \"24h\"",
            "backlog = 0\ntarget_control = \"http://127.0.0.1:1\"",
        ] {
            let text = format!("{base}{s}\n");
            let plan = Scenario::parse(&text, "s.toml").unwrap().plan();
            assert!(plan.is_ok(), "{s}: {plan:?}");
        }
        let sc = Scenario::parse(
            &format!("{base}target_control = \"http://127.0.0.1:1\"\n"),
            "s.toml",
        )
        .unwrap();
        for p99 in ["0", "61m"] {
            let sweep = SweepSettings {
                backlogs: vec![8],
                p99_max: p99.parse().unwrap(),
                ..Default::default()
            };
            let e = sc.sweep_plan(&sweep).unwrap_err().to_string();
            assert!(e.contains("invalid p99_max"), "{e}");
        }
        // The sweep's passes and accept-wait bound, from a file: checked like the flags.
        let sweep = |extra: &str| {
            Scenario::parse(&format!("[sweep]\nbacklogs = [8]\n{extra}\n"), "s.toml")
                .map(|s| s.sweep.unwrap())
        };
        let plan = sc
            .sweep_plan(
                &sweep("refine = \"10%\"\nconfirm = 3\nrepeat = 5\naccept_wait_max = \"2s\"")
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(plan.refine, Some(crate::sweep::Tolerance::Percent(10.0)));
        assert_eq!((plan.confirm, plan.repeat), (3, 5));
        assert_eq!(plan.accept_wait_max, Duration::from_secs(2));
        let defaults = sc.sweep_plan(&sweep("").unwrap()).unwrap();
        assert_eq!(defaults.refine, None);
        assert_eq!((defaults.confirm, defaults.repeat), (0, 1));
        assert_eq!(defaults.accept_wait_max, Duration::from_millis(100));
        for (extra, what) in [
            ("repeat = 0", "invalid repeat"),
            ("confirm = 101", "invalid confirm"),
            ("accept_wait_max = \"0\"", "invalid accept_wait_max"),
        ] {
            let e = sc
                .sweep_plan(&sweep(extra).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{extra}: {e}");
        }
        let e = sweep("refine = \"0%\"").unwrap_err().to_string();
        assert!(e.contains("invalid refine tolerance"), "{e}");
    }

    #[test]
    fn long_values_in_errors_are_cut() {
        let huge = "q".repeat(1 << 20);
        for text in [
            format!("target = \"127.0.0.1:9\"\npattern = \"{huge}\"\n"),
            format!("{huge} = 1\n"),
            format!("target = \"127.0.0.1:9\"\ntarget_control = \"http://{huge}\"\n"),
        ] {
            let e = Scenario::parse(&text, "s.toml")
                .and_then(|s| s.plan())
                .unwrap_err()
                .to_string();
            assert!(e.len() < 1000, "{}", &e[..300]);
            assert!(e.contains('…'), "{e}");
        }
    }

    /// Found by coordinator/tests/decoders.rs: `timeout = "1us"` planned, then every agent
    /// refused the Prepare it arrived in (0 ms); sub-millisecond parts are refused up front.
    #[test]
    fn what_agents_cannot_receive_is_refused_before_the_run() {
        let text = "target = \"127.0.0.1:9\"\ntimeout = \"500us\"\n";
        let e = Scenario::parse(text, "s.toml")
            .unwrap()
            .plan()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid timeout 500us: a run sends it to agents in whole milliseconds"
        );
        let text = "target = \"127.0.0.1:9\"\ntimeout = \"2ms\"\nhold = \"1.5s\"\n";
        assert!(Scenario::parse(text, "s.toml").unwrap().plan().is_ok());
    }

    #[test]
    fn control_urls_are_parsed_not_split() {
        assert!(check_control_url("http://[::1]:8001").is_ok());
        assert!(check_control_url("https://198.18.0.5:8001").is_ok());
        let e = check_control_url("http://198.18.0.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no port"), "{e}");
    }

    #[test]
    fn off_loopback_needs_a_token() {
        let s = Scenario {
            listen: "0.0.0.0:0".parse().unwrap(),
            ..Default::default()
        };
        let e = s.serve_config().unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
        let s = Scenario {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        let e = s.serve_config().unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");
    }
}

mod fail_if_tests {
    use crate::scenario::*;
    use crate::threshold::MAX_THRESHOLDS;

    /// `fail_if = [...]` in a file takes the flag's grammar; a bad expression names the file,
    /// the line and the expression; `--fail-if` given on the command line replaces the list.
    #[test]
    fn fail_if_is_a_key_and_a_flag() {
        let text = "target = \"127.0.0.1:9\"\nfail_if = [\"ghost>0\", \"connect.p99 > 50ms\"]\n";
        let file = Scenario::parse(text, "t.toml").unwrap();
        let exprs: Vec<String> = file.fail_if.iter().map(ToString::to_string).collect();
        assert_eq!(exprs, ["ghost>0", "connect.p99 > 50ms"]);
        let plan = file.plan().unwrap();
        assert_eq!(plan.scenario["fail_if"][1], "connect.p99 > 50ms");

        let err = Scenario::parse("agents = 1\nfail_if = [\"ghost >> 0\"]\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:2:"), "{err}");
        assert!(err.contains("invalid threshold \"ghost >> 0\""), "{err}");

        let flags = Scenario {
            fail_if: vec!["refused>0".parse().unwrap()],
            ..Default::default()
        };
        let explicit: BTreeSet<String> = ["fail_if".to_owned()].into();
        let layered = Scenario::layered(Some(file.clone()), &flags, &explicit);
        assert_eq!(layered.fail_if, flags.fail_if);
        let kept = Scenario::layered(Some(file.clone()), &flags, &BTreeSet::new());
        assert_eq!(kept.fail_if, file.fail_if);
    }

    #[test]
    fn too_many_thresholds_are_refused() {
        let mut s = Scenario {
            target: Some("127.0.0.1:9".parse().unwrap()),
            ..Default::default()
        };
        s.fail_if = vec!["ghost>0".parse().unwrap(); MAX_THRESHOLDS];
        assert!(s.plan().is_ok());
        s.fail_if.push("ghost>0".parse().unwrap());
        let err = s.plan().unwrap_err().to_string();
        assert!(err.contains("invalid fail_if \"101 expressions\""), "{err}");
    }
}
