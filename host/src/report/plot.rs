//! SVG line plots, drawn with plotters.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

/// One named line.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Axis labels and title of a line plot.
pub struct LinePlot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Writes `series` as an SVG line plot with a legend, through a temporary file renamed into place so a
/// failure leaves no half-written plot.
pub fn write_line_plot(path: &Path, plot: &LinePlot<'_>, series: &[Series]) -> Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max) = points().fold((f64::MAX, f64::MIN), |(lo, hi), &(x, _)| (lo.min(x), hi.max(x)));
    let y_max = points().fold(f64::MIN, |hi, &(_, y)| hi.max(y));
    let y_min = points().fold(0.0f64, |lo, &(_, y)| lo.min(y));
    if !(x_min.is_finite() && x_max.is_finite() && y_max.is_finite()) {
        return Err(anyhow!("nothing finite to plot"));
    }
    let y_top = if y_max > y_min { y_max + 0.05 * (y_max - y_min) } else { y_min + 1.0 };

    let tmp = path.with_extension("svg.tmp");
    {
        let root = SVGBackend::new(&tmp, (800, 560)).into_drawing_area();
        let draw = |e: String| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| draw(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(plot.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x_min..x_max, y_min..y_top)
            .map_err(|e| draw(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(plot.x_label)
            .y_desc(plot.y_label)
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| draw(e.to_string()))?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| draw(e.to_string()))?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| draw(e.to_string()))?;
        root.present().map_err(|e| draw(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A histogram over [0, 1] in equal bins, with an optional labelled vertical marker.
pub struct Histogram<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub counts: &'a [usize],
    pub marker: Option<(f64, String)>,
}

/// Writes a histogram as SVG (temporary file renamed into place).
pub fn write_histogram(path: &Path, h: &Histogram<'_>) -> Result<()> {
    let bins = h.counts.len().max(1);
    let top = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let tmp = path.with_extension("svg.tmp");
    {
        let root = SVGBackend::new(&tmp, (800, 500)).into_drawing_area();
        let draw = |e: String| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| draw(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(h.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0f64..1.0f64, 0.0f64..top)
            .map_err(|e| draw(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(h.x_label)
            .y_desc(h.y_label)
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| draw(e.to_string()))?;
        let width = 1.0 / bins as f64;
        chart
            .draw_series(h.counts.iter().enumerate().map(|(i, &c)| {
                let x0 = i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, c as f64)], PALETTE[0].filled())
            }))
            .map_err(|e| draw(e.to_string()))?;
        if let Some((x, label)) = &h.marker {
            let color = PALETTE[3];
            chart
                .draw_series(LineSeries::new(vec![(*x, 0.0), (*x, top)], color.stroke_width(2)))
                .map_err(|e| draw(e.to_string()))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(|e| draw(e.to_string()))?;
        }
        root.present().map_err(|e| draw(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
