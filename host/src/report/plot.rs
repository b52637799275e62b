//! SVG plots drawn with plotters: line plots (objective curves) and histograms (token probabilities).
//!
//! Every plot is drawn into a temporary file renamed into place, so a failure leaves no half-written
//! plot; the frame (title, axes, grid) and the legend look the same in every plot.

use std::ops::Range;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One named line.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Title and axis labels of a plot.
pub struct LinePlot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
}

/// A histogram over [0, 1] in equal bins, with an optional labelled vertical marker.
pub struct Histogram<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub counts: &'a [usize],
    pub marker: Option<(f64, String)>,
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

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
pub(super) type DrawResult = std::result::Result<(), String>;

/// Writes `series` as an SVG line plot with a legend.
pub fn write_line_plot(path: &Path, plot: &LinePlot<'_>, series: &[Series]) -> Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max) = points().fold((f64::MAX, f64::MIN), |(lo, hi), &(x, _)| (lo.min(x), hi.max(x)));
    let y_max = points().fold(f64::MIN, |hi, &(_, y)| hi.max(y));
    let y_min = points().fold(0.0f64, |lo, &(_, y)| lo.min(y));
    if !(x_min.is_finite() && x_max.is_finite() && y_max.is_finite()) {
        return Err(anyhow!("nothing finite to plot"));
    }
    let y_top = if y_max > y_min { y_max + 0.05 * (y_max - y_min) } else { y_min + 1.0 };
    let legend = Some(SeriesLabelPosition::UpperRight);
    draw_svg(path, (800, 560), plot, x_min..x_max, y_min..y_top, legend, |chart| {
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        Ok(())
    })
}

/// Writes a histogram as SVG.
pub fn write_histogram(path: &Path, h: &Histogram<'_>) -> Result<()> {
    let width = 1.0 / h.counts.len().max(1) as f64;
    let top = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let frame = LinePlot { title: h.title, x_label: h.x_label, y_label: h.y_label };
    let legend = h.marker.as_ref().map(|_| SeriesLabelPosition::UpperLeft);
    draw_svg(path, (800, 500), &frame, 0.0..1.0, 0.0..top, legend, |chart| {
        let bars = h.counts.iter().enumerate().map(|(i, &c)| {
            let x0 = i as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.95, c as f64)], PALETTE[0].filled())
        });
        chart.draw_series(bars).map_err(|e| e.to_string())?;
        if let Some((x, label)) = &h.marker {
            let color = PALETTE[3];
            chart
                .draw_series(LineSeries::new(vec![(*x, 0.0), (*x, top)], color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        Ok(())
    })
}

/// Draws the frame (title, axes, grid), lets `content` draw into it, and adds the legend of the labelled
/// series at `legend`; written as [`write_svg`] writes.
fn draw_svg(
    path: &Path,
    size: (u32, u32),
    frame: &LinePlot<'_>,
    x: Range<f64>,
    y: Range<f64>,
    legend: Option<SeriesLabelPosition>,
    content: impl FnOnce(&mut Chart<'_, '_>) -> DrawResult,
) -> Result<()> {
    write_svg(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(frame.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x, y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(frame.x_label)
            .y_desc(frame.y_label)
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        content(&mut chart)?;
        if let Some(position) = legend {
            chart
                .configure_series_labels()
                .position(position)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Writes an SVG of `size` at `path`: `draw` draws on a white page in a temporary file, which is
/// renamed into place only if drawing succeeded (a failed drawing leaves no file, and an existing one
/// untouched).
pub(super) fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<()> {
    let tmp = path.with_extension("svg.tmp");
    let drawn: DrawResult = (|| {
        let root = SVGBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("drawing {}: {e}", path.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
