//! Horizontal bar charts with ±1 standard-deviation error bars (one bar per sweep setting), as SVG.
//!
//! Each bar's label and value are written just above it inside the plot, so long setting names need no
//! label margin; the first bar is at the top. Drawn into a temporary file renamed into place, like the
//! other plots.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::plot::write_svg;

/// One bar: a mean and, when known, its standard deviation.
pub struct Bar {
    pub label: String,
    pub mean: f64,
    pub std: Option<f64>,
}

pub struct BarChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub bars: &'a [Bar],
    /// The bar drawn in the highlight colour (the winner).
    pub highlight: Option<usize>,
}

const BAR: RGBColor = RGBColor(31, 119, 180);
const HIGHLIGHT: RGBColor = RGBColor(44, 160, 44);
const ERROR: RGBColor = RGBColor(40, 40, 40);

/// Writes the chart as SVG at `path`.
pub fn write_bar_chart(path: &Path, chart: &BarChart<'_>) -> Result<()> {
    let bars = chart.bars;
    if bars.is_empty() {
        return Err(anyhow!("drawing {}: no bars", path.display()));
    }
    let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
    let lows = bars.iter().filter_map(|b| finite(b.mean - b.std.unwrap_or(0.0)));
    let highs = bars.iter().filter_map(|b| finite(b.mean + b.std.unwrap_or(0.0)));
    let low = lows.fold(0.0f64, f64::min);
    let high = highs.fold(0.0f64, f64::max);
    let span = if high > low { high - low } else { 1.0 };
    let (x0, x1) = (if low < 0.0 { low - 0.05 * span } else { 0.0 }, high + 0.25 * span);
    let n = bars.len();
    let height = 150 + 70 * n as u32;

    write_svg(path, (800, height), |root| {
        let mut area = ChartBuilder::on(root)
            .caption(chart.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(8)
            .build_cartesian_2d(x0..x1, -0.6..(n as f64 - 0.4))
            .map_err(|e| e.to_string())?;
        area.configure_mesh()
            .disable_y_mesh()
            .x_max_light_lines(2)
            .y_labels(0)
            .x_desc(chart.x_label)
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, bar) in bars.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let color = if chart.highlight == Some(i) { HIGHLIGHT } else { BAR };
            if bar.mean.is_finite() {
                area.draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y - 0.18), (bar.mean, y + 0.18)],
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
            }
            if let Some(std) = bar.std.filter(|s| s.is_finite() && *s > 0.0 && bar.mean.is_finite()) {
                let (a, b) = (bar.mean - std, bar.mean + std);
                let lines = [vec![(a, y), (b, y)], vec![(a, y - 0.1), (a, y + 0.1)], vec![(b, y - 0.1), (b, y + 0.1)]];
                area.draw_series(lines.into_iter().map(|l| PathElement::new(l, ERROR.stroke_width(2))))
                    .map_err(|e| e.to_string())?;
            }
            let value = match bar.std {
                Some(std) => format!("{:.4} ± {std:.4}", bar.mean),
                None => format!("{:.4}", bar.mean),
            };
            let text = format!("{}: {value}", bar.label);
            area.draw_series(std::iter::once(Text::new(text, (x0, y + 0.46), ("sans-serif", 14).into_font())))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_labels_and_error_bars() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.svg");
        let bars = [
            Bar { label: "nll".into(), mean: 0.5, std: Some(0.1) },
            Bar { label: "general_family alpha=10".into(), mean: 0.7, std: None },
        ];
        write_bar_chart(&path, &BarChart { title: "t", x_label: "greedy.accuracy", bars: &bars, highlight: Some(1) })
            .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("nll: 0.5000 ± 0.1000"), "{svg}");
        assert!(svg.contains("general_family alpha=10: 0.7000"));
        assert!(!dir.path().join("bars.svg.tmp").exists());
    }
}
