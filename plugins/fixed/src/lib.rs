//! Fixed mixing: the user's weights, given per set name (`"math=0.8,medical=0.2"`) or in set order
//! (`"0.8,0.2"`).

use plugin_api::prelude::*;

pub struct Fixed {
    spec: String,
}

impl Fixed {
    fn parse(&self, names: &[&str]) -> Result<Vec<f64>, String> {
        let parts: Vec<&str> = self.spec.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let number = |s: &str| -> Result<f64, String> {
            let w: f64 = s.parse().map_err(|_| format!("parameter `weights`: {s:?} is not a number"))?;
            if w < 0.0 || !w.is_finite() {
                return Err(format!("parameter `weights`: weight {w} must be finite and non-negative"));
            }
            Ok(w)
        };
        if parts.iter().all(|p| !p.contains('=')) {
            if parts.len() != names.len() {
                return Err(format!(
                    "parameter `weights` has {} weights for {} training sets",
                    parts.len(),
                    names.len()
                ));
            }
            return parts.iter().map(|p| number(p)).collect();
        }
        let mut weights = vec![None; names.len()];
        for part in parts {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("parameter `weights`: mix `name=w` and bare weights, got {part:?}"))?;
            let i = names.iter().position(|n| *n == name.trim()).ok_or_else(|| {
                format!("parameter `weights` names unknown set {:?} (sets: {})", name.trim(), names.join(", "))
            })?;
            weights[i] = Some(number(value.trim())?);
        }
        weights
            .iter()
            .zip(names)
            .map(|(w, n)| w.ok_or_else(|| format!("parameter `weights` gives no weight for set {n:?}")))
            .collect()
    }
}

impl Mixer for Fixed {
    const NAME: &'static str = "fixed";
    const DESCRIPTION: &'static str = "fixed weights per set: \"name=w,...\" or \"w1,w2,...\" in set order";
    const PARAMS: &'static [ParamSpec] = &[ParamSpec {
        name: plugin_api::abi_stable::std_types::RStr::from_str("weights"),
        ty: plugin_api::ParamType::Str,
        default: plugin_api::ParamDefault::None,
        choices: plugin_api::abi_stable::std_types::RSlice::from_slice(&[]),
        doc: plugin_api::abi_stable::std_types::RStr::from_str("\"name=w,...\" or \"w1,w2,...\""),
    }];

    fn from_params(params: &Params) -> Result<Self, String> {
        let spec = params.str("weights")?.ok_or("parameter `weights` is required, e.g. \"math=0.8,medical=0.2\"")?;
        Ok(Fixed { spec: spec.to_string() })
    }
    fn weights(&self, request: &MixerRequest<'_>) -> Result<Vec<f64>, String> {
        let names: Vec<&str> = request.sets.iter().map(|s| s.name.as_str()).collect();
        self.parse(&names)
    }
}

export_mixer!(Fixed);

#[cfg(test)]
mod tests {
    use super::Fixed;

    #[test]
    fn parses_named_and_ordered_weights() {
        let fixed = |s: &str| Fixed { spec: s.to_string() };
        assert_eq!(fixed("b=0.2, a=0.8").parse(&["a", "b"]).unwrap(), vec![0.8, 0.2]);
        assert_eq!(fixed("0.8,0.2").parse(&["a", "b"]).unwrap(), vec![0.8, 0.2]);
        assert!(fixed("0.8").parse(&["a", "b"]).unwrap_err().contains("1 weights for 2"));
        assert!(fixed("c=1").parse(&["a", "b"]).unwrap_err().contains("unknown set"));
        assert!(fixed("a=1").parse(&["a", "b"]).unwrap_err().contains("no weight for set \"b\""));
        assert!(fixed("a=-1,b=1").parse(&["a", "b"]).unwrap_err().contains("non-negative"));
    }
}
