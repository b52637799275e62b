//! Plugin parameters: the schema a plugin declares (static data) and the values the host passes in.
//!
//! The host validates a run config's `[objective.params]` table against the schema before it calls the
//! plugin (unknown names and wrong types are the host's errors, with the config key named), fills in
//! defaults, and hands over a flat list of [`ParamEntry`]. Plugins read it through [`Params`].

use abi_stable::{
    std_types::{RSlice, RStr, RString},
    StableAbi,
};

/// The type of a parameter.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    Float,
    Int,
    Bool,
    Str,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Float => "float",
            ParamType::Int => "int",
            ParamType::Bool => "bool",
            ParamType::Str => "string",
        }
    }
}

/// A parameter's default, as static data. `None` means the parameter is optional and absent unless set.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub enum ParamDefault {
    None,
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(RStr<'static>),
}

/// One declared parameter.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct ParamSpec {
    pub name: RStr<'static>,
    pub ty: ParamType,
    pub default: ParamDefault,
    /// For `Str` parameters: the accepted values (empty = any string).
    pub choices: RSlice<'static, RStr<'static>>,
    pub doc: RStr<'static>,
}

impl ParamSpec {
    /// A float parameter with a default.
    pub const fn float(name: &'static str, default: f64, doc: &'static str) -> Self {
        Self::new(name, ParamType::Float, ParamDefault::Float(default), doc)
    }
    /// A float parameter that is absent unless the user sets it.
    pub const fn optional_float(name: &'static str, doc: &'static str) -> Self {
        Self::new(name, ParamType::Float, ParamDefault::None, doc)
    }
    pub const fn int(name: &'static str, default: i64, doc: &'static str) -> Self {
        Self::new(name, ParamType::Int, ParamDefault::Int(default), doc)
    }
    pub const fn bool(name: &'static str, default: bool, doc: &'static str) -> Self {
        Self::new(name, ParamType::Bool, ParamDefault::Bool(default), doc)
    }
    /// A string parameter restricted to `choices`, defaulting to `default`.
    pub const fn choice(
        name: &'static str,
        default: &'static str,
        choices: &'static [RStr<'static>],
        doc: &'static str,
    ) -> Self {
        Self {
            name: RStr::from_str(name),
            ty: ParamType::Str,
            default: ParamDefault::Str(RStr::from_str(default)),
            choices: RSlice::from_slice(choices),
            doc: RStr::from_str(doc),
        }
    }
    const fn new(name: &'static str, ty: ParamType, default: ParamDefault, doc: &'static str) -> Self {
        Self { name: RStr::from_str(name), ty, default, choices: RSlice::from_slice(&[]), doc: RStr::from_str(doc) }
    }
}

/// A parameter value passed to a plugin.
#[repr(u8)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub enum ParamValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(RString),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Str(v) => write!(f, "{v:?}"),
        }
    }
}

impl ParamDefault {
    /// The default as a value, or `None` for an optional parameter.
    pub fn to_value(self) -> Option<ParamValue> {
        match self {
            ParamDefault::None => None,
            ParamDefault::Float(v) => Some(ParamValue::Float(v)),
            ParamDefault::Int(v) => Some(ParamValue::Int(v)),
            ParamDefault::Bool(v) => Some(ParamValue::Bool(v)),
            ParamDefault::Str(v) => Some(ParamValue::Str(v.into())),
        }
    }
}

/// One name = value pair.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ParamEntry {
    pub name: RString,
    pub value: ParamValue,
}

/// Read access to the parameter values a plugin was created with.
pub struct Params<'a> {
    entries: &'a [ParamEntry],
}

impl<'a> Params<'a> {
    pub fn new(entries: &'a [ParamEntry]) -> Self {
        Self { entries }
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.entries.iter().find(|e| e.name.as_str() == name).map(|e| &e.value)
    }

    /// A float parameter (an int value is accepted and widened); `Ok(None)` when absent.
    pub fn f64(&self, name: &str) -> Result<Option<f64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(ParamValue::Float(v)) => Ok(Some(*v)),
            Some(ParamValue::Int(v)) => Ok(Some(*v as f64)),
            Some(other) => Err(format!("parameter `{name}` must be a float, got {other}")),
        }
    }

    /// A float parameter that must be present (the host fills in declared defaults).
    pub fn require_f64(&self, name: &str) -> Result<f64, String> {
        self.f64(name)?.ok_or_else(|| format!("parameter `{name}` is required"))
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(ParamValue::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(format!("parameter `{name}` must be an integer, got {other}")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(ParamValue::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(format!("parameter `{name}` must be a boolean, got {other}")),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<&str>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(ParamValue::Str(v)) => Ok(Some(v.as_str())),
            Some(other) => Err(format!("parameter `{name}` must be a string, got {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: ParamValue) -> ParamEntry {
        ParamEntry { name: name.into(), value }
    }

    #[test]
    fn reads_values_and_widens_ints_to_floats() {
        let entries = [entry("alpha", ParamValue::Int(3)), entry("side", ParamValue::Str("top".into()))];
        let params = Params::new(&entries);
        assert_eq!(params.f64("alpha").unwrap(), Some(3.0));
        assert_eq!(params.str("side").unwrap(), Some("top"));
        assert_eq!(params.f64("missing").unwrap(), None);
        assert!(params.require_f64("missing").is_err());
        let err = params.f64("side").unwrap_err();
        assert!(err.contains("`side` must be a float"), "{err}");
    }

    #[test]
    fn defaults_become_values() {
        let spec = ParamSpec::float("alpha", 1.5, "exponent");
        assert_eq!(spec.default.to_value(), Some(ParamValue::Float(1.5)));
        assert_eq!(ParamSpec::optional_float("q", "").default.to_value(), None);
    }
}
