//! The stable ABI shared by the `host` and its plugins, and the helpers plugin authors write against.
//!
//! A plugin is a `cdylib` exporting one abi_stable root module, [`PluginModule`]. The module says what
//! kind of plugin it is (objective, data mixer or evaluator), its name, description, formula and
//! parameter schema as static data, and holds one constructor that turns parameter values into a
//! running instance behind a stable trait object. Everything that crosses the boundary is plain
//! numbers, strings and slices: this crate knows nothing of tensors or of the host.
//!
//! The root module is a *prefix type*: fields appended after the last prefix field in a later version
//! are optional to the host, so plugins built against an earlier, compatible plugin-api keep loading.
//! abi_stable checks the layout of every type reachable from the module and the crate's semver at load
//! time, so a plugin built against an incompatible plugin-api is refused instead of misbehaving.
//!
//! Plugin authors implement [`PointwiseObjective`] (or [`Objective`], [`Mixer`], [`Evaluator`]) and
//! call one export macro; see the `plugins/` folder for short examples.

// abi_stable's `#[sabi_trait]` expands to impls inside a const block; that is its design, not ours.
#![allow(non_local_definitions)]

pub mod c_abi;
pub mod curve;
pub mod evaluator;
mod export;
pub mod mixer;
pub mod objective;
pub mod params;
pub mod threshold;

pub use abi_stable;
use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

pub use evaluator::{EvaluatorBox, EvaluatorExample, EvaluatorState, EvaluatorState_TO, ExampleScores, NamedScore};
pub use mixer::{MixerBox, MixerRequest, MixerState, MixerState_TO, TrainingSet};
pub use objective::{
    LossForm, ObjectiveBatch, ObjectiveBox, ObjectiveNeeds, ObjectiveOutput, ObjectiveState, ObjectiveState_TO,
};
pub use params::{ParamDefault, ParamEntry, ParamSpec, ParamType, ParamValue, Params};

/// The three kinds of plugin the host loads.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Per-token training objective: `logp` in, loss, weight and inclusion mask out.
    Objective,
    /// Sampling weights over several training sets.
    Mixer,
    /// Scores generations against references.
    Evaluator,
}

impl PluginKind {
    /// The lower-case name used in the CLI and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Objective => "objective",
            PluginKind::Mixer => "mixer",
            PluginKind::Evaluator => "evaluator",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A constructed plugin, of whichever kind the module declares.
#[repr(u8)]
#[derive(StableAbi)]
pub enum PluginInstance {
    Objective(ObjectiveBox),
    Mixer(MixerBox),
    Evaluator(EvaluatorBox),
}

/// The root module every plugin exports (through [`export_objective!`], [`export_pointwise_objective!`],
/// [`export_mixer!`] or [`export_evaluator!`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// What the plugin is; the host refuses a plugin of the wrong kind by this field.
    pub kind: PluginKind,
    /// The plugin's code name (for objectives, the names of DESIGN.md's table).
    pub name: RStr<'static>,
    /// One line for `host plugins list`.
    pub description: RStr<'static>,
    /// The formula in plain text, for objectives `f(p) = ...`; empty for other kinds.
    pub formula: RStr<'static>,
    /// The parameters the plugin accepts, with types, defaults and docs.
    pub params: RSlice<'static, ParamSpec>,
    /// How `host plugins check` relates an objective's `loss` to its `weight`.
    pub loss_form: LossForm,
    /// Builds an instance from parameter values. The host has already checked names and types against
    /// `params` and filled in defaults; the plugin checks ranges and cross-parameter rules.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(params: RSlice<'_, ParamEntry>) -> RResult<PluginInstance, RString>,
    /// An evaluator may carry its benchmark: examples for a split, size and seed. Added after the
    /// prefix, so a plugin built before this field existed still loads (the host sees `None`).
    #[sabi(missing_field(option))]
    pub benchmark:
        Option<extern "C" fn(split: RStr<'_>, size: u64, seed: u64) -> RResult<RVec<BenchmarkExample>, RString>>,
}

/// One example of a benchmark carried by an evaluator plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct BenchmarkExample {
    pub prompt: RString,
    pub reference: RString,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "sft_plugin";
    const NAME: &'static str = "sft_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The version of this crate, which abi_stable compares with a plugin's at load time.
pub const PLUGIN_API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs `call`, turning a panic into an error message, so no panic ever unwinds across the ABI.
pub fn catch_panic<T>(what: &str, call: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(message)) => RResult::RErr(RString::from(message)),
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            RResult::RErr(RString::from(format!("plugin panicked in {what}: {detail}")))
        }
    }
}

/// Everything a plugin author needs, in one import.
pub mod prelude {
    pub use crate::evaluator::{Evaluator, EvaluatorExample, ExampleScores};
    pub use crate::mixer::{Mixer, MixerRequest, TrainingSet};
    pub use crate::objective::{
        LossForm, Objective, ObjectiveBatch, ObjectiveNeeds, ObjectiveOutput, PointwiseObjective,
    };
    pub use crate::params::{ParamSpec, Params};
    pub use crate::threshold::{Against, Side, Threshold};
    pub use crate::{export_evaluator, export_mixer, export_objective, export_pointwise_objective};
}

/// The symbol abi_stable looks up in a plugin library (`abi_stable::library::ROOT_MODULE_LOADER_NAME`),
/// spelled out because `#[export_name]` takes only a literal; a test keeps the two in step.
#[doc(hidden)]
#[macro_export]
macro_rules! __root_module_symbol {
    () => {
        "_1as_0lib_1header_0root_bmodule_bloader"
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(__root_module_symbol!(), abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }
}
