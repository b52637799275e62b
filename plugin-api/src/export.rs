//! The export macros: each turns one plugin type into the library's root module.

/// Shared body of the export macros: the root-module function, with a panic-catching constructor.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($ty:ty, $trait_:path, $kind:ident, $to:ident, $adapter:path, formula: $formula:expr, loss_form: $loss_form:expr, benchmark: $benchmark:expr) => {
        // What abi_stable's `#[export_root_module]` expands to, written with `$crate` paths so that a
        // plugin needs no direct dependency on abi_stable.
        #[export_name = $crate::__root_module_symbol!()]
        pub static SFT_PLUGIN_LIB_HEADER: $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(sft_plugin_root_module)
            }
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginModuleRef>(
                    erased_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };

        pub fn sft_plugin_root_module() -> $crate::PluginModuleRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            use $crate::abi_stable::std_types::{RResult, RSlice, RStr, RString};
            use $trait_ as PluginTrait;

            extern "C" fn create(params: RSlice<'_, $crate::ParamEntry>) -> RResult<$crate::PluginInstance, RString> {
                $crate::catch_panic("create", || {
                    let instance = <$ty as PluginTrait>::from_params(&$crate::Params::new(params.as_slice()))?;
                    Ok($crate::PluginInstance::$kind($crate::$to::from_value(
                        $adapter(instance),
                        $crate::abi_stable::sabi_trait::TD_Opaque,
                    )))
                })
            }

            $crate::PluginModule {
                kind: $crate::PluginKind::$kind,
                name: RStr::from_str(<$ty as PluginTrait>::NAME),
                description: RStr::from_str(<$ty as PluginTrait>::DESCRIPTION),
                formula: RStr::from_str($formula),
                params: RSlice::from_slice(<$ty as PluginTrait>::PARAMS),
                loss_form: $loss_form,
                create,
                benchmark: $benchmark,
            }
            .leak_into_prefix()
        }
    };
}

/// Exports an [`Objective`](crate::objective::Objective) as this library's plugin.
#[macro_export]
macro_rules! export_objective {
    ($objective:ty) => {
        $crate::__export_plugin!(
            $objective,
            $crate::objective::Objective,
            Objective,
            ObjectiveState_TO,
            $crate::objective::ObjectiveAdapter,
            formula: <$objective as $crate::objective::Objective>::FORMULA,
            loss_form: <$objective as $crate::objective::Objective>::LOSS_FORM,
            benchmark: None
        );
    };
}

/// Exports a [`PointwiseObjective`](crate::objective::PointwiseObjective) as this library's plugin.
#[macro_export]
macro_rules! export_pointwise_objective {
    ($objective:ty) => {
        $crate::export_objective!($crate::objective::Pointwise<$objective>);
    };
}

/// Exports a [`Mixer`](crate::mixer::Mixer) as this library's plugin.
#[macro_export]
macro_rules! export_mixer {
    ($mixer:ty) => {
        $crate::__export_plugin!(
            $mixer,
            $crate::mixer::Mixer,
            Mixer,
            MixerState_TO,
            $crate::mixer::MixerAdapter,
            formula: "",
            loss_form: $crate::LossForm::NotApplicable,
            benchmark: None
        );
    };
}

/// Exports an [`Evaluator`](crate::evaluator::Evaluator) as this library's plugin.
#[macro_export]
macro_rules! export_evaluator {
    ($evaluator:ty) => {
        $crate::__export_plugin!(
            $evaluator,
            $crate::evaluator::Evaluator,
            Evaluator,
            EvaluatorState_TO,
            $crate::evaluator::EvaluatorAdapter,
            formula: "",
            loss_form: $crate::LossForm::NotApplicable,
            benchmark: if <$evaluator as $crate::evaluator::Evaluator>::HAS_BENCHMARK {
                Some($crate::evaluator::benchmark_entry::<$evaluator>)
            } else {
                None
            }
        );
    };
}
