//! How series look: a colour, a dash pattern and a marker for each, so that two series never
//! differ by colour alone (readable in greyscale and by colour-blind readers), and the small
//! legend swatch that shows all three.

use maud::{Markup, html};
use plotters::style::RGBColor;

/// A point marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    Circle,
    Square,
    Triangle,
    Cross,
    Diamond,
    None,
}

/// One series' look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    /// `#rrggbb`.
    pub(crate) color: &'static str,
    /// Dash and gap in pixels; `None`: a solid line.
    pub(crate) dash: Option<(u32, u32)>,
    pub(crate) marker: Marker,
}

/// Colours (Okabe–Ito, safe for the common colour-blindnesses, then two darker extras).
const COLORS: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#6a3d9a", "#8c564b",
];
const DASHES: [Option<(u32, u32)>; 4] = [None, Some((8, 4)), Some((2, 3)), Some((10, 3))];
const MARKERS: [Marker; 5] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
    Marker::Cross,
];

/// The colour of reference lines (thresholds, schedules, backlogs): no series uses it.
pub(crate) const REFERENCE: &str = "#333333";
/// Grid lines and the plot's frame.
pub(crate) const GRID: &str = "#dddddd";

impl Style {
    /// The `i`-th series' look: colour, dash and marker all change from one series to the next.
    pub(crate) fn nth(i: usize) -> Style {
        Style {
            color: COLORS[i % COLORS.len()],
            dash: DASHES[i % DASHES.len()],
            marker: MARKERS[i % MARKERS.len()],
        }
    }

    /// A filled area's look (bars in a stack): colour only, no line or marker.
    pub(crate) fn fill(color: &'static str) -> Style {
        Style {
            color,
            dash: None,
            marker: Marker::None,
        }
    }

    /// The colour for plotters.
    pub(crate) fn rgb(&self) -> RGBColor {
        rgb(self.color)
    }

    /// The `stroke-dasharray` value (`none` for a solid line).
    fn dasharray(&self) -> String {
        self.dash
            .map_or_else(|| "none".to_owned(), |(on, off)| format!("{on} {off}"))
    }
}

/// `#rrggbb` as plotters' colour; black for anything else (colours here are constants).
pub(crate) fn rgb(hex: &str) -> RGBColor {
    let byte = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    RGBColor(byte(1), byte(3), byte(5))
}

/// A 36×14 swatch for the legend: a bar for a filled series, else the line with its dash
/// and one marker.
pub(crate) fn swatch(style: &Style, filled: bool) -> Markup {
    let c = style.color;
    html! {
        svg.swatch xmlns="http://www.w3.org/2000/svg" width="36" height="14" viewBox="0 0 36 14" aria-hidden="true" {
            @if filled {
                rect x="2" y="2" width="32" height="10" fill=(c) {}
            } @else {
                line x1="1" y1="7" x2="35" y2="7" stroke=(c) stroke-width="2" stroke-dasharray=(style.dasharray()) {}
                (marker_svg(style.marker, 18.0, 7.0, c))
            }
        }
    }
}

/// A marker drawn as SVG at (x, y) (for the legend; plotters draws the chart's).
fn marker_svg(m: Marker, x: f64, y: f64, c: &str) -> Markup {
    let r = 3.5;
    match m {
        Marker::Circle => html! { circle cx=(x) cy=(y) r=(r) fill=(c) {} },
        Marker::Square => {
            html! { rect x=(x - r) y=(y - r) width=(2.0 * r) height=(2.0 * r) fill=(c) {} }
        }
        Marker::Triangle => html! {
            polygon points=(format!("{x},{} {},{} {},{}", y - r, x - r, y + r, x + r, y + r)) fill=(c) {}
        },
        Marker::Diamond => html! {
            polygon points=(format!("{x},{} {},{y} {x},{} {},{y}", y - r, x + r, y + r, x - r)) fill=(c) {}
        },
        Marker::Cross => html! {
            path d=(format!("M{} {}L{} {}M{} {}L{} {}", x - r, y - r, x + r, y + r, x - r, y + r, x + r, y - r)) stroke=(c) stroke-width="2" {}
        },
        Marker::None => html! {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_series_differ_in_colour_dash_and_marker() {
        for i in 0..12 {
            let (a, b) = (Style::nth(i), Style::nth(i + 1));
            assert_ne!(a.color, b.color, "{i}");
            assert_ne!(a.dash, b.dash, "{i}");
            assert_ne!(a.marker, b.marker, "{i}");
        }
        // The first 8 all differ in colour, and none is the reference lines' colour.
        let colors: std::collections::BTreeSet<_> = (0..8).map(|i| Style::nth(i).color).collect();
        assert_eq!(colors.len(), 8);
        assert!(!colors.contains(REFERENCE) && !colors.contains(GRID));
    }

    #[test]
    fn hex_colours_convert() {
        assert_eq!(rgb("#0072b2"), RGBColor(0, 0x72, 0xb2));
    }
}
