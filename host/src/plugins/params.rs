//! Parameter values for a plugin, checked against the schema it declares.
//!
//! Values come from a run config's `[objective.params]` table or from `--param key=value` flags. Unknown
//! names, wrong types and values outside a declared choice list are refused here, naming the key, before
//! the plugin is called; declared defaults are filled in.

use anyhow::{bail, Result};
use plugin_api::{ParamEntry, ParamSpec, ParamType, ParamValue};

/// A complete, validated set of parameter values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSet {
    values: Vec<(String, ParamValue)>,
}

impl ParamSet {
    /// Validates `given` (name, TOML value) against `specs`; `origin` names where the values came from
    /// (for example `run.toml [objective.params]`) in error messages.
    pub fn from_toml(specs: &[ParamSpec], given: &[(String, toml::Value)], origin: &str) -> Result<Self> {
        for (name, _) in given {
            if !specs.iter().any(|s| s.name.as_str() == name) {
                let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                bail!("{origin}: unknown parameter `{name}` (this plugin's parameters: {known})");
            }
        }
        let mut values = Vec::new();
        for spec in specs {
            let name = spec.name.as_str();
            let value = match given.iter().find(|(n, _)| n == name) {
                Some((_, raw)) => Some(convert(spec, raw, origin)?),
                None => spec.default.to_value(),
            };
            if let Some(value) = value {
                values.push((name.to_string(), value));
            }
        }
        Ok(Self { values })
    }

    /// Parses `key=value` strings (values as TOML literals, bare words as strings) and validates them.
    pub fn from_assignments(specs: &[ParamSpec], assignments: &[String], origin: &str) -> Result<Self> {
        let mut given = Vec::new();
        for assignment in assignments {
            let Some((key, raw)) = assignment.split_once('=') else {
                bail!("{origin}: expected key=value, got `{assignment}`");
            };
            let (key, raw) = (key.trim(), raw.trim());
            let mut value = parse_literal(raw);
            // A string parameter takes bare words as they are (`fault=nan` is the string "nan").
            let is_string = specs.iter().any(|s| s.name.as_str() == key && s.ty == ParamType::Str);
            if is_string && !value.is_str() {
                value = toml::Value::String(raw.to_string());
            }
            given.push((key.to_string(), value));
        }
        Self::from_toml(specs, &given, origin)
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Replaces or adds a value (used when the host resolves `percentile` into `q`).
    pub fn set(&mut self, name: &str, value: ParamValue) {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.to_string(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.values.retain(|(n, _)| n != name);
    }

    /// The values as they cross the ABI.
    pub fn entries(&self) -> Vec<ParamEntry> {
        self.values
            .iter()
            .map(|(name, value)| ParamEntry { name: name.as_str().into(), value: value.clone() })
            .collect()
    }

    /// `alpha=10, side="top"`, for logs and reports.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.values.iter().map(|(n, v)| format!("{n}={v}")).collect();
        parts.join(", ")
    }
}

/// A TOML literal if it parses as one (`0.5`, `true`, `"top"`), else the bare text as a string.
pub fn parse_literal(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn convert(spec: &ParamSpec, raw: &toml::Value, origin: &str) -> Result<ParamValue> {
    let name = spec.name.as_str();
    let value = match (spec.ty, raw) {
        (ParamType::Float, toml::Value::Float(v)) => ParamValue::Float(*v),
        (ParamType::Float, toml::Value::Integer(v)) => ParamValue::Float(*v as f64),
        (ParamType::Int, toml::Value::Integer(v)) => ParamValue::Int(*v),
        (ParamType::Bool, toml::Value::Boolean(v)) => ParamValue::Bool(*v),
        (ParamType::Str, toml::Value::String(v)) => ParamValue::Str(v.as_str().into()),
        (ty, other) => {
            bail!("{origin}: parameter `{name}` must be a {}, got {} `{other}`", ty.as_str(), other.type_str())
        }
    };
    if let ParamValue::Str(s) = &value {
        let choices = spec.choices.as_slice();
        if !choices.is_empty() && !choices.iter().any(|c| c.as_str() == s.as_str()) {
            let allowed: Vec<&str> = choices.iter().map(|c| c.as_str()).collect();
            bail!("{origin}: parameter `{name}` must be one of {}, got {s:?}", allowed.join("|"));
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::threshold::Threshold;

    #[test]
    fn fills_defaults_and_checks_names_types_and_choices() {
        let specs = Threshold::PARAMS;
        let set = ParamSet::from_assignments(specs, &["q=0.5".into()], "--param").unwrap();
        assert_eq!(set.get("q"), Some(&ParamValue::Float(0.5)));
        assert_eq!(set.get("side"), Some(&ParamValue::Str("top".into())));
        assert_eq!(set.get("percentile"), None);

        let err = ParamSet::from_assignments(specs, &["qq=0.5".into()], "--param").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--param: unknown parameter `qq` (this plugin's parameters: q, percentile, side, against)"
        );
        let err = ParamSet::from_assignments(specs, &["q=high".into()], "--param").unwrap_err();
        assert!(err.to_string().contains("`q` must be a float, got string"), "{err}");
        let err = ParamSet::from_assignments(specs, &["side=left".into()], "--param").unwrap_err();
        assert!(err.to_string().contains("one of top|bottom"), "{err}");
        // Integers widen to floats.
        let set = ParamSet::from_assignments(specs, &["q=1".into()], "--param").unwrap();
        assert_eq!(set.get("q"), Some(&ParamValue::Float(1.0)));
    }
}
