//! Property tests of the target's decoders of outside input: a `ConfigureRequest` from the
//! control service with absurd values (any backlog, u64::MAX delays and holds, NaN, infinite
//! and negative rates, any enum int) and the `--on-accept` text. Each answers Ok or an error
//! naming the field, never a panic; what is accepted is valid, and actions print and read back.

use proptest::prelude::*;
use stampede_proto::pb;
use stampede_target::Change;
use stampede_target::config::OnAccept;

/// Cases per property: enough to find a panic, few enough that the suite takes seconds.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(512)
}

fn absurd_u64() -> BoxedStrategy<u64> {
    prop_oneof![Just(0u64), Just(u64::MAX), 0..100_000u64, any::<u64>()].boxed()
}

fn absurd_f64() -> BoxedStrategy<f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(-0.0),
        Just(0.0),
        Just(f64::MAX),
        Just(5e-324),
        0.0f64..1e6,
        any::<f64>(),
    ]
    .boxed()
}

fn configure() -> BoxedStrategy<pb::ConfigureRequest> {
    let policy = (
        absurd_u64(),
        prop::option::of(absurd_f64()),
        any::<u32>(),
        any::<bool>(),
    )
        .prop_map(|(delay_ms, rate_per_sec, batch, paused)| pb::AcceptPolicy {
            delay_ms,
            rate_per_sec,
            batch,
            paused,
        });
    let on_accept = (prop_oneof![0..6i32, any::<i32>()], absurd_u64())
        .prop_map(|(kind, hold_ms)| pb::OnAccept { kind, hold_ms });
    (
        prop::option::of(prop_oneof![
            Just(-1i32),
            Just(i32::MIN),
            Just(i32::MAX),
            any::<i32>()
        ]),
        prop::option::of(policy),
        prop::option::of(on_accept),
    )
        .prop_map(|(backlog, accept_policy, on_accept)| pb::ConfigureRequest {
            backlog,
            accept_policy,
            on_accept,
        })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn configure_with_absurd_values_never_panics(r in configure()) {
        match Change::try_from(r) {
            Ok(change) => {
                if let Some(policy) = &change.accept {
                    prop_assert_eq!(policy.validate(), Ok(()));
                    let _ = (policy.burst(), policy.never_accepts());
                }
                if let Some(action) = change.on_accept {
                    let _ = action.to_string();
                }
            }
            Err(e) => prop_assert!(e.to_string().starts_with("invalid "), "{}", e),
        }
    }

    #[test]
    fn on_accept_text_never_panics(s in any::<String>()) {
        let _ = s.parse::<OnAccept>();
    }

    /// Actions print and read back; holds at microsecond precision up to a day.
    #[test]
    fn on_accept_round_trips(
        kind in 0..5u8,
        hold_us in 0..=24 * 3600 * 1_000_000u64,
        shaped in "(greet|echo|close|reset|hold:[0-9.]{0,8}(us|ms|s|m|h)?)",
    ) {
        let action = match kind {
            0 => OnAccept::Greet,
            1 => OnAccept::Echo,
            2 => OnAccept::Close,
            3 => OnAccept::Reset,
            _ => OnAccept::Hold(std::time::Duration::from_micros(hold_us)),
        };
        prop_assert_eq!(action.to_string().parse::<OnAccept>(), Ok(action));
        if let Ok(a) = shaped.parse::<OnAccept>() {
            let _ = a.to_string();
        }
    }
}
