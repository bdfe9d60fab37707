//! One chart axis as plotters sees it: a [`Ranged`] coordinate, linear or log10, whose key
//! points (ticks and grid lines) are the 1-2-5 steps a reader counts in (0, 20, 40 … or
//! 1, 2, 5, 10, 20 …) instead of plotters' own choice (powers of ten only on log axes).

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};

/// How values map onto an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// Equal steps for equal differences; the axis starts at 0 unless a value is negative.
    Linear,
    /// Equal steps for equal ratios (latencies that span decades); values below the
    /// smallest positive one are drawn at it.
    Log,
}

/// A laid-out axis: its scale, its ends and its ticks.
#[derive(Debug, Clone)]
pub(crate) struct Coord {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Coord {
    /// An axis that shows every value in `values` (and 0 on a linear one), its ends rounded
    /// out to a tick.
    pub(crate) fn fit(scale: Scale, values: impl IntoIterator<Item = f64>) -> Coord {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            if v.is_finite() && (scale == Scale::Linear || v > 0.0) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        match scale {
            Scale::Linear => {
                let (lo, hi) = (lo.min(0.0), hi.max(0.0));
                let hi = if hi - lo < 1e-12 { lo + 1.0 } else { hi };
                let step = nice_step((hi - lo) / 6.0);
                let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
                let n = ((hi - lo) / step).round() as usize;
                let ticks = (0..=n).map(|i| lo + i as f64 * step).collect();
                Coord {
                    scale,
                    lo,
                    hi,
                    ticks,
                }
            }
            Scale::Log => {
                if !lo.is_finite() {
                    (lo, hi) = (1.0, 10.0);
                }
                let lo = floor_125(lo);
                let hi = ceil_125(hi.max(lo * 2.0));
                let mut ticks = ticks_125(lo, hi);
                // Too many to read: the powers of ten only.
                if ticks.len() > 9 {
                    ticks.retain(|t| {
                        let m = t / 10f64.powf(t.log10().floor());
                        (m - 1.0).abs() < 1e-9
                    });
                }
                Coord {
                    scale,
                    lo,
                    hi,
                    ticks,
                }
            }
        }
    }

    /// The ticks, smallest first.
    #[cfg(test)]
    pub(crate) fn ticks(&self) -> &[f64] {
        &self.ticks
    }

    /// The axis's ends.
    pub(crate) fn ends(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// Where `v` lies between the ends, 0 to 1 (values outside are clamped).
    pub(crate) fn fraction(&self, v: f64) -> f64 {
        let f = match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => {
                (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
            }
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

impl Ranged for Coord {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (self.fraction(*value) * span).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Coord {
    fn format_ext(&self, value: &f64) -> String {
        number(*value)
    }
}

/// A tick label: as few digits as the value needs (`0.05`, `2`, `1,500`, `20,000`).
pub(crate) fn number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1000.0 {
        let whole = v.round() as i64;
        let digits = whole.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        return if whole < 0 { format!("-{out}") } else { out };
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The 1-2-5 step at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-12).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// The largest 1-2-5 value at or below `v` (> 0).
fn floor_125(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s <= v * (1.0 + 1e-9))
        .unwrap_or(p)
}

/// The smallest 1-2-5 value at or above `v` (> 0).
fn ceil_125(v: f64) -> f64 {
    nice_step(v)
}

/// Every 1-2-5 value from `lo` to `hi` (both 1-2-5 values).
fn ticks_125(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut p = 10f64.powf(lo.log10().floor());
    // Bounded: at most 3 ticks a decade over the f64 range.
    for _ in 0..1000 {
        for m in [1.0, 2.0, 5.0] {
            let t = m * p;
            if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                out.push(t);
            }
        }
        p *= 10.0;
        if p > hi * (1.0 + 1e-9) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_step_by_one_two_or_five() {
        let c = Coord::fit(Scale::Linear, [3.0, 87.0]);
        assert_eq!(c.ticks(), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let c = Coord::fit(Scale::Linear, [0.0, 1.3]);
        assert_eq!(c.ends(), (0.0, 1.5));
        assert_eq!(c.ticks(), [0.0, 0.5, 1.0, 1.5]);
        let c = Coord::fit(Scale::Linear, [0.0, 0.0]);
        assert_eq!(c.ends(), (0.0, 1.0));
    }

    #[test]
    fn log_ticks_are_one_two_five_and_thin_out_over_many_decades() {
        let c = Coord::fit(Scale::Log, [30.0, 900.0]);
        assert_eq!(c.ticks(), [20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]);
        // 20 µs to 3 s: the powers of ten only.
        let c = Coord::fit(Scale::Log, [20.0, 3_074_000.0]);
        assert_eq!(c.ends(), (20.0, 5_000_000.0));
        assert_eq!(c.ticks(), [100.0, 1e3, 1e4, 1e5, 1e6]);
        // Nothing positive: a decade, so the chart still draws.
        assert_eq!(Coord::fit(Scale::Log, [0.0]).ends(), (1.0, 10.0));
    }

    #[test]
    fn values_map_inside_the_pixel_range() {
        let c = Coord::fit(Scale::Log, [10.0, 1000.0]);
        assert_eq!(c.map(&10.0, (0, 200)), 0);
        assert_eq!(c.map(&100.0, (0, 200)), 100);
        assert_eq!(c.map(&1000.0, (0, 200)), 200);
        // Zero on a log axis sits at the bottom instead of vanishing.
        assert_eq!(c.map(&0.0, (0, 200)), 0);
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(1500.0), "1,500");
        assert_eq!(number(1_000_000.0), "1,000,000");
        assert_eq!(number(0.0), "0");
    }
}
