//! The trend charts of capacity.html, drawn with plotters into SVG strings: one line per
//! series over the entry's runs (x = run number, oldest first), axis titles with units, a
//! grid, a legend, and regressed runs marked with a red ring labelled "regression". All text
//! is SVG `<text>` (no fonts are embedded), so a browser or a test can read every title.
//!
//! Kept in one file on purpose: it only needs [`Series`] in and SVG out, so it can move onto
//! shared chart helpers later without touching the page.

use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its legend text.
    pub label: String,
    /// (run number, value); a missing value is left out of the line.
    pub points: Vec<(f64, f64)>,
}

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// The caption above the plot.
    pub title: &'a str,
    /// The x axis title, with its unit.
    pub x_desc: &'a str,
    /// The y axis title, with its unit.
    pub y_desc: &'a str,
    /// The lines.
    pub series: Vec<Series>,
    /// Run numbers that regressed: marked on every series at that x.
    pub regressions: Vec<f64>,
    /// Runs in all (the x axis spans 1..=runs).
    pub runs: usize,
}

/// Line colours, in series order.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// Width and height of every chart, SVG pixels.
const SIZE: (u32, u32) = (760, 320);

/// Draws `chart` as an SVG document (a string starting with `<svg`).
pub fn draw(chart: &Chart<'_>) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_into(&mut svg, chart) {
        // Drawing into a String cannot fail for I/O; a plotters error here is a bug, shown
        // in place of the chart rather than failing the whole page.
        return format!("<p>chart \"{}\" could not be drawn: {e}</p>", chart.title);
    }
    svg
}

fn draw_into(svg: &mut String, c: &Chart<'_>) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    // Headroom above the highest point; a flat zero line still gets a unit range.
    let ymax = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
    let xmax = c.runs.max(1) as f64 + 0.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..xmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .x_labels(c.runs.clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, s) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            s.points
                .iter()
                .map(move |p| Circle::new(*p, 3, colour.filled())),
        )?;
    }
    let marks: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| c.regressions.contains(&p.0)))
        .copied()
        .collect();
    if !c.regressions.is_empty() {
        chart
            .draw_series(
                marks
                    .into_iter()
                    .map(|p| Circle::new(p, 7, RED.stroke_width(2))),
            )?
            .label("regression")
            .legend(|(x, y)| Circle::new((x + 9, y), 5, RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_carries_its_titles_legend_and_regression_marks_as_text() {
        let svg = draw(&Chart {
            title: "connect latency",
            x_desc: "run (oldest first)",
            y_desc: "latency (ms)",
            series: vec![Series {
                label: "connect p99".into(),
                points: vec![(1.0, 1.5), (2.0, 900.0)],
            }],
            regressions: vec![2.0],
            runs: 2,
        });
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "connect latency",
            "run (oldest first)",
            "latency (ms)",
            "connect p99",
            "regression",
        ] {
            assert!(
                svg.contains(&format!(">{text}<")) || svg.contains(&format!(">\n{text}\n<")),
                "no {text} in {svg}"
            );
        }
        // The ring around the regressed point is red.
        assert!(svg.contains("#FF0000"), "{svg}");
    }
}
