//! `host plot objectives`: the paper's figure of logit-gradient weights `W(p) = s(p)(1 - p)`.

use std::path::Path;

use anyhow::{bail, Result};

use crate::plugins::check::curve;
use crate::plugins::{ObjectivePlugin, SearchPath};
use crate::report::plot::{write_line_plot, LinePlot, Series};

/// Splits `general_family:alpha=10,q=0.5` into the plugin and its `key=value` parameters.
pub fn split_plugin_spec(spec: &str) -> (&str, Vec<String>) {
    let file_start = spec.rfind('/').map_or(0, |i| i + 1);
    match spec[file_start..].find(':') {
        Some(colon) => {
            let (name, params) = spec.split_at(file_start + colon);
            let params = params[1..].split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
            (name, params)
        }
        None => (spec, Vec::new()),
    }
}

pub fn objectives(search: &SearchPath, specs: &[String], out: &Path, points: usize) -> Result<()> {
    if specs.is_empty() {
        bail!("give at least one --plugin NAME[:key=value,...]");
    }
    let mut series = Vec::new();
    for spec in specs {
        let (name, params) = split_plugin_spec(spec);
        let objective = ObjectivePlugin::from_assignments(search, name, &params)?;
        let label = match objective.params.describe() {
            d if d.is_empty() => objective.name().to_string(),
            d => format!("{} ({d})", objective.name()),
        };
        let rows = curve(&objective, points)?;
        series.push(Series { label, points: rows.iter().map(|r| (r.p, r.logit_grad)).collect() });
    }
    let plot = LinePlot {
        title: "Logit-gradient weight of each objective",
        x_label: "p = probability of the target token",
        y_label: "W(p) = s(p)(1 - p)",
    };
    write_line_plot(out, &plot, &series)?;
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_plugin_spec;

    #[test]
    fn splits_names_paths_and_params() {
        assert_eq!(split_plugin_spec("nll"), ("nll", vec![]));
        assert_eq!(split_plugin_spec("general_family:alpha=10"), ("general_family", vec!["alpha=10".to_string()]));
        assert_eq!(
            split_plugin_spec("./a:b/libx.so:q=0.5,side=top"),
            ("./a:b/libx.so", vec!["q=0.5".to_string(), "side=top".to_string()])
        );
    }
}
