//! Charts for the HTML reports, drawn by plotters' SVG backend: what a chart shows is a
//! [`Chart`] value (axes with titles and units, series, labelled reference lines), and
//! [`render`] turns it into a `<figure>`: the SVG (1-2-5 ticks from [`axis`], a grid, log axes
//! where asked) beside an HTML legend, so the legend can never cover data. Every series has
//! its own colour *and* dash or marker ([`style`]). `report::html` and `sweep::html` build
//! their charts from these parts and nothing else.
//!
//! Text is SVG `<text>` (no font files: plotters is built without `ttf`), so label sizes are
//! estimates; margins leave room for them.

pub(crate) mod axis;
pub(crate) mod style;

use maud::{Markup, PreEscaped, html};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use self::axis::Coord;
pub(crate) use self::axis::Scale;
pub(crate) use self::axis::number;
pub(crate) use self::style::Style;
use self::style::{GRID, Marker, REFERENCE, rgb, swatch};

/// Width and height of a chart's SVG, pixels.
const W: u32 = 720;
const H: u32 = 300;
/// Room right of the plot for horizontal reference lines' labels.
const RIGHT_LABELS: u32 = 120;

/// One axis: its title names the quantity and its unit (`time since the start (s)`).
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub(crate) title: String,
    pub(crate) scale: Scale,
    /// Tick labels (default: the number, `1,500`, `0.05`).
    pub(crate) labels: fn(f64) -> String,
}

impl Axis {
    pub(crate) fn linear(title: impl Into<String>) -> Axis {
        Axis {
            title: title.into(),
            scale: Scale::Linear,
            labels: number,
        }
    }

    pub(crate) fn log(title: impl Into<String>) -> Axis {
        Axis {
            title: title.into(),
            scale: Scale::Log,
            labels: number,
        }
    }

    /// The same axis with its own tick labels.
    pub(crate) fn labelled(self, labels: fn(f64) -> String) -> Axis {
        Axis { labels, ..self }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// A line through the points, with the style's dash and a marker at each point.
    Line,
    /// A line without markers (dense curves: percentiles, timelines).
    Curve,
    /// Bars `width` wide starting at each x; bar series stack in the order given.
    Bars { width: f64 },
}

/// One named series.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) style: Style,
    pub(crate) kind: Kind,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A labelled reference line: vertical at an x value, or horizontal at a y value.
#[derive(Debug, Clone)]
pub(crate) struct RefLine {
    pub(crate) vertical: bool,
    pub(crate) at: f64,
    pub(crate) label: String,
}

impl RefLine {
    pub(crate) fn x(at: f64, label: impl Into<String>) -> RefLine {
        RefLine {
            vertical: true,
            at,
            label: label.into(),
        }
    }

    pub(crate) fn y(at: f64, label: impl Into<String>) -> RefLine {
        RefLine {
            vertical: false,
            at,
            label: label.into(),
        }
    }
}

/// A whole chart.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// A short id (`completions`), the figure's `data-chart`.
    pub(crate) id: &'static str,
    pub(crate) title: String,
    pub(crate) x: Axis,
    pub(crate) y: Axis,
    pub(crate) series: Vec<Series>,
    pub(crate) refs: Vec<RefLine>,
}

/// The chart as a `<figure>`: caption, SVG, legend. A series without points keeps its legend
/// entry (marked "no data") so a reader sees it was looked for.
pub(crate) fn render(chart: &Chart) -> Markup {
    let svg = svg(chart).unwrap_or_else(|e| {
        // Drawing into a String cannot fail short of a plotters bug: say so on the page.
        format!("<p class=\"error\">chart could not be drawn: {e}</p>")
    });
    html! {
        figure.chart data-chart=(chart.id) data-x-title=(chart.x.title) data-y-title=(chart.y.title) {
            figcaption { (chart.title) }
            div.plot { (PreEscaped(svg)) }
            ul.legend {
                @for s in &chart.series {
                    li data-color=(s.style.color) data-points=(s.points.len()) {
                        (swatch(&s.style, matches!(s.kind, Kind::Bars { .. })))
                        " " (s.name)
                        @if s.points.is_empty() { " (no data)" }
                    }
                }
                @for r in &chart.refs {
                    li.ref {
                        (swatch(&Style { color: REFERENCE, dash: Some((6, 4)), marker: Marker::None }, false))
                        " " (r.label)
                    }
                }
            }
        }
    }
}

/// Bars stacked in series order: each bar's (x, bottom, top).
fn stacked(chart: &Chart) -> Vec<Vec<(f64, f64, f64)>> {
    let mut tops: Vec<(f64, f64)> = Vec::new();
    chart
        .series
        .iter()
        .map(|s| {
            if !matches!(s.kind, Kind::Bars { .. }) {
                return Vec::new();
            }
            s.points
                .iter()
                .map(|&(x, y)| {
                    let base = match tops.iter_mut().find(|(tx, _)| (tx - x).abs() < 1e-9) {
                        Some(t) => {
                            let b = t.1;
                            t.1 += y;
                            b
                        }
                        None => {
                            tops.push((x, y));
                            0.0
                        }
                    };
                    (x, base, base + y)
                })
                .collect()
        })
        .collect()
}

/// The SVG text of a chart.
fn svg(chart: &Chart) -> Result<String, Box<dyn std::error::Error>> {
    let bars = stacked(chart);
    let xs = chart.series.iter().flat_map(|s| {
        let w = match s.kind {
            Kind::Bars { width } => width,
            _ => 0.0,
        };
        s.points.iter().flat_map(move |p| [p.0, p.0 + w])
    });
    let xs = xs.chain(chart.refs.iter().filter(|r| r.vertical).map(|r| r.at));
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let ys = ys
        .chain(bars.iter().flatten().map(|b| b.2))
        .chain(chart.refs.iter().filter(|r| !r.vertical).map(|r| r.at));
    let xc = Coord::fit(chart.x.scale, xs.collect::<Vec<_>>());
    let yc = Coord::fit(chart.y.scale, ys.collect::<Vec<_>>());
    let horizontal = chart.refs.iter().any(|r| !r.vertical);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut cc = ChartBuilder::on(&root)
            .margin_top(if chart.refs.iter().any(|r| r.vertical) {
                34
            } else {
                10
            })
            .margin_right(if horizontal { RIGHT_LABELS } else { 32 })
            .margin_left(6)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(xc.clone(), yc.clone())?;
        let (xl, yl) = (chart.x.labels, chart.y.labels);
        let (x_formatter, y_formatter) = (move |v: &f64| xl(*v), move |v: &f64| yl(*v));
        cc.configure_mesh()
            .x_desc(chart.x.title.as_str())
            .y_desc(chart.y.title.as_str())
            .bold_line_style(rgb(GRID))
            .max_light_lines(0)
            .axis_style(rgb("#666666"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .x_label_formatter(&x_formatter)
            .y_label_formatter(&y_formatter)
            .draw()?;
        for (s, bars) in chart.series.iter().zip(&bars) {
            let color = s.style.rgb();
            match s.kind {
                Kind::Bars { width } => {
                    cc.draw_series(bars.iter().filter(|b| b.2 > b.1).map(|&(x, lo, hi)| {
                        Rectangle::new([(x, lo), (x + width, hi)], color.filled())
                    }))?;
                }
                Kind::Line | Kind::Curve => {
                    let line = color.stroke_width(2);
                    match s.style.dash {
                        None => {
                            cc.draw_series(LineSeries::new(s.points.iter().copied(), line))?;
                        }
                        Some((on, off)) => {
                            cc.draw_series(DashedLineSeries::new(
                                s.points.iter().copied(),
                                on,
                                off,
                                line,
                            ))?;
                        }
                    }
                    if s.kind == Kind::Line {
                        for &p in &s.points {
                            draw_marker(&cc, p, s.style.marker, color)?;
                        }
                    }
                }
            }
        }
        let (x0, x1) = xc.ends();
        let (y0, y1) = yc.ends();
        let reference_color = rgb(REFERENCE);
        let reference = reference_color.stroke_width(1);
        let mut last_label_end = [f64::NEG_INFINITY; 2];
        for r in &chart.refs {
            let ends = if r.vertical {
                [(r.at, y0), (r.at, y1)]
            } else {
                [(x0, r.at), (x1, r.at)]
            };
            cc.draw_series(DashedLineSeries::new(ends, 6, 4, reference))?;
            let (px, py) = cc.backend_coord(&ends[1]);
            let style = TextStyle::from(("sans-serif", 15).into_font()).color(&reference_color);
            if r.vertical {
                // Two rows above the plot, so neighbouring lines' labels do not overlap.
                let width = 12.0 * 0.55 * r.label.chars().count() as f64;
                // Centred on its line, unless that would cut it at the figure's edge (a line
                // at the last x): then it ends, or starts, at the line.
                let (x, edge) = (f64::from(px), f64::from(root.dim_in_pixel().0));
                let (hpos, left, right) = if x + width / 2.0 > edge {
                    (HPos::Right, x - width, x)
                } else if x - width / 2.0 < 0.0 {
                    (HPos::Left, x, x + width)
                } else {
                    (HPos::Center, x - width / 2.0, x + width / 2.0)
                };
                let row = usize::from(left < last_label_end[0] + 4.0);
                last_label_end[row] = right;
                let y = py - 4 - 14 * (1 - row as i32);
                let style = style.pos(Pos::new(hpos, VPos::Bottom));
                root.draw(&Text::new(r.label.as_str(), (px, y), style))?;
            } else {
                let style = style.pos(Pos::new(HPos::Left, VPos::Center));
                root.draw(&Text::new(r.label.as_str(), (px + 6, py), style))?;
            }
        }
        root.present()?;
    }
    Ok(out)
}

/// One marker at a data point.
fn draw_marker<DB: DrawingBackend>(
    cc: &ChartContext<'_, DB, Cartesian2d<Coord, Coord>>,
    p: (f64, f64),
    marker: Marker,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let fill = color.filled();
    let area = cc.plotting_area();
    match marker {
        Marker::Circle => area.draw(&Circle::new(p, 4, fill)),
        Marker::Square => {
            area.draw(&(EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], fill)))
        }
        Marker::Triangle => area.draw(&TriangleMarker::new(p, 5, fill)),
        Marker::Diamond => area.draw(
            &(EmptyElement::at(p) + Polygon::new(vec![(0, -5), (5, 0), (0, 5), (-5, 0)], fill)),
        ),
        Marker::Cross => area.draw(&Cross::new(p, 4, color.stroke_width(2))),
        Marker::None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
