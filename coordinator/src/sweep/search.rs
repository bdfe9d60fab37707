//! The passes of a sweep at one accept rate: the coarse list of backlogs (smallest first),
//! then with `--refine TOL` a bisection between the last unclean and the first clean backlog
//! until they are at most TOL apart, then with `--confirm N` N reruns of the recommended
//! backlog (it stands only if every rerun is clean).

use super::recommend::{bracket, recommend};
use super::steps::Stepper;
pub(super) use super::steps::Stop;
use super::{AcceptRate, Phase, Recommendation};

/// Most refine steps at one rate: bisecting a gap of 2^31 ends well before.
const MAX_REFINE_STEPS: usize = 32;

/// How close `--refine` brings the last unclean and the first clean backlog: a number of
/// backlog slots (`16`) or a share of the clean backlog (`5%`); never closer than 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// At most this many apart.
    Slots(u32),
    /// At most this percentage of the clean backlog apart.
    Percent(f64),
}

impl Tolerance {
    /// The largest gap accepted below clean backlog `clean` (at least 1).
    pub fn gap(self, clean: i32) -> i64 {
        let gap = match self {
            Tolerance::Slots(n) => i64::from(n),
            Tolerance::Percent(p) => (f64::from(clean) * p / 100.0).ceil() as i64,
        };
        gap.max(1)
    }
}

impl std::str::FromStr for Tolerance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "invalid refine tolerance \"{}\": expected backlog slots (16) or a percentage \
                 of the clean backlog (5%), above 0",
                stampede_proto::usage::cut(s)
            )
        };
        match t.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0)
                .map(Tolerance::Percent)
                .ok_or_else(bad),
            None => t
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(Tolerance::Slots)
                .ok_or_else(bad),
        }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::Slots(n) => write!(f, "{n}"),
            Tolerance::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl serde::Serialize for Tolerance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Tolerance {
    /// A number (`16`) or a string (`"16"`, `"5%"`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Every pass at `rate` (the `index`-th of `rates` rates); the recommendation at the end.
pub(super) async fn at_rate(
    stepper: &mut Stepper<'_>,
    rate: Option<AcceptRate>,
    index: usize,
    rates: usize,
) -> Result<Recommendation, Stop> {
    let plan = stepper.plan();
    let mut backlogs = plan.backlogs.clone();
    // Smallest first: the recommendation is the smallest clean step, whatever order was given.
    backlogs.sort_unstable();
    backlogs.dedup();
    let total = backlogs.len() * rates;
    for (i, &b) in backlogs.iter().enumerate() {
        let label = format!("step {}/{total}", index * backlogs.len() + i + 1);
        stepper.step(b, rate, Phase::Coarse, &label).await?;
    }
    if let Some(tol) = plan.refine {
        for _ in 0..MAX_REFINE_STEPS {
            let Some([lo, hi]) = bracket(stepper.steps(), rate) else {
                break;
            };
            if i64::from(hi) - i64::from(lo) <= tol.gap(hi) {
                break;
            }
            let mid = lo + (hi - lo) / 2;
            let label = format!("refine between {lo} and {hi}");
            stepper.step(mid, rate, Phase::Refine, &label).await?;
        }
    }
    if let Some(b) = recommend(plan, rate, stepper.steps()).backlog {
        for i in 1..=plan.confirm {
            let label = format!("confirm {i}/{}", plan.confirm);
            stepper.step(b, rate, Phase::Confirm, &label).await?;
        }
    }
    Ok(recommend(plan, rate, stepper.steps()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_parse_and_bound_the_gap() {
        assert_eq!("16".parse(), Ok(Tolerance::Slots(16)));
        assert_eq!(" 5% ".parse(), Ok(Tolerance::Percent(5.0)));
        for bad in ["0", "-3", "0%", "abc", "150%", ""] {
            let e = bad.parse::<Tolerance>().unwrap_err();
            assert!(e.starts_with("invalid refine tolerance"), "{bad}: {e}");
        }
        assert_eq!(Tolerance::Slots(16).gap(512), 16);
        assert_eq!(Tolerance::Percent(5.0).gap(512), 26);
        assert_eq!(Tolerance::Percent(5.0).gap(4), 1, "never closer than 1");
        assert_eq!(Tolerance::Percent(5.0).to_string(), "5%");
    }
}
