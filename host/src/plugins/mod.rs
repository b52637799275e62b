//! Finding, loading and calling plugins: the only part of the host that knows abi_stable.
//!
//! A plugin is named by path or by name. Names are looked up in the search path (`--plugin-dir`
//! folders, then `HOST_PLUGIN_PATH`, then the folder of the `host` binary, then the installed plugins'
//! folder [`INSTALLED_PLUGINS`] beside it, where the Python wheel puts them), with or without the `lib`
//! prefix and the platform suffix. Loading checks abi_stable's layout and version compatibility and the
//! plugin's kind; every refusal is one line naming the file. A library with no abi_stable root module
//! that exports `sft_objective_v1` is loaded as an objective written in C ([`c_abi`]); a `.py` file as an
//! objective written in Python ([`python`]), served through the same C ABI. Calls into a
//! plugin go through the typed wrappers in [`objective`], [`mixer`] and [`evaluator`], which turn a
//! plugin's errors and panics (caught on the plugin's side of the boundary) into host errors and
//! validate what comes back.

pub mod c_abi;
pub mod check;
mod elf;
pub mod evaluator;
pub mod mixer;
pub mod objective;
pub mod params;
pub mod python;

use std::path::{Path, PathBuf};

use abi_stable::abi_stability::abi_checking::check_layout_compatibility;
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError, RootModule};
use abi_stable::sabi_types::VersionNumber;
use abi_stable::std_types::RBoxError;
use abi_stable::StableAbi;
use anyhow::{anyhow, bail, Result};
use plugin_api::{LossForm, ParamSpec, PluginInstance, PluginKind, PluginModuleRef};

pub use evaluator::EvaluatorPlugin;
pub use mixer::MixerPlugin;
pub use objective::ObjectivePlugin;

/// The shipped plugins' folder relative to the folder of an installed `host` (`<prefix>/bin/host` finds
/// `<prefix>/share/sft-plugins/plugins`): the layout `pip install` of the wheel gives.
pub const INSTALLED_PLUGINS: &str = "../share/sft-plugins/plugins";

/// Where plugins named without a path are looked for, in order.
#[derive(Clone, Debug, Default)]
pub struct SearchPath {
    pub dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// `--plugin-dir` folders (each must be a folder: a mistyped one is an error, not silently skipped),
    /// then `HOST_PLUGIN_PATH`, then the folder of the running binary.
    pub fn from_cli(cli_dirs: &[PathBuf]) -> Result<Self> {
        if let Some(missing) = cli_dirs.iter().find(|d| !d.is_dir()) {
            bail!("--plugin-dir {}: no such directory", missing.display());
        }
        Ok(Self::new(cli_dirs))
    }

    /// `cli_dirs`, then `HOST_PLUGIN_PATH`, then the folder of the running binary and the installed
    /// plugins' folder beside it (when there is one).
    pub fn new(cli_dirs: &[PathBuf]) -> Self {
        let mut dirs = cli_dirs.to_vec();
        if let Some(env) = std::env::var_os("HOST_PLUGIN_PATH") {
            dirs.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
            // Canonical, so listings and errors show `<prefix>/share/...`, not `<prefix>/bin/../share/...`.
            let installed = std::fs::canonicalize(exe_dir.join(INSTALLED_PLUGINS)).ok().filter(|p| p.is_dir());
            dirs.push(exe_dir);
            dirs.extend(installed);
        }
        Self { dirs }
    }

    /// Resolves a plugin given by path or by name to an existing file.
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf> {
        let as_path = Path::new(name_or_path);
        // A name with a folder in it is a path; a bare file name may be in the working folder.
        if name_or_path.contains(std::path::MAIN_SEPARATOR) || name_or_path.contains('/') {
            if as_path.is_file() {
                return Ok(as_path.to_path_buf());
            }
            bail!("plugin file not found: {name_or_path}");
        }
        let local_file = name_or_path.ends_with(std::env::consts::DLL_SUFFIX) || python::is_python(as_path);
        if local_file && as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        for dir in &self.dirs {
            for candidate in file_names(name_or_path) {
                let path = dir.join(&candidate);
                if path.is_file() {
                    return Ok(path);
                }
            }
        }
        let searched: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        bail!(
            "no plugin named `{name_or_path}` in the plugin search path ({}); give a path or --plugin-dir",
            searched.join(", ")
        )
    }

    /// Every plugin-looking file in the search path (first occurrence of each file name wins).
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.to_string_lossy().ends_with(std::env::consts::DLL_SUFFIX))
                // The Python bridge serves `.py` objectives; it is not one itself.
                .filter(|p| !file_names(python::BRIDGE_NAME).iter().any(|name| p.file_name() == Some(name.as_ref())))
                .collect();
            files.sort();
            for file in files {
                if let Some(name) = file.file_name() {
                    if seen.insert(name.to_os_string()) {
                        out.push(file);
                    }
                }
            }
        }
        out
    }
}

/// `neg_p` → `libneg_p.so`, `neg_p.so`, `neg_p` (platform prefix and suffix).
fn file_names(name: &str) -> Vec<String> {
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let name = name.strip_suffix(suffix).unwrap_or(name);
    let mut names = Vec::new();
    if !name.starts_with(prefix) {
        names.push(format!("{prefix}{name}{suffix}"));
    }
    names.push(format!("{name}{suffix}"));
    names.push(name.to_string());
    names
}

/// A loaded plugin library: its root module and where it came from.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    module: Module,
}

/// How the library declares itself: an abi_stable root module, or a C objective table.
#[derive(Clone)]
enum Module {
    Stable(PluginModuleRef),
    C(c_abi::CObjectiveLib),
}

impl LoadedPlugin {
    /// Loads the library at `path`, checking abi_stable's version and layout compatibility.
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display();
        if !path.is_file() {
            bail!("plugin file not found: {shown}");
        }
        if python::is_python(path) {
            return Ok(Self { path: path.to_path_buf(), module: Module::C(python::open(path)?) });
        }
        elf::check_complete(path)?;
        let header = match lib_header_from_path(path) {
            Ok(header) => header,
            Err(error @ LibraryError::GetSymbolError { .. }) => {
                return match c_abi::open(path)? {
                    Some(c) => Ok(Self { path: path.to_path_buf(), module: Module::C(c) }),
                    None => Err(load_error(path, error)),
                };
            }
            Err(error) => return Err(load_error(path, error)),
        };
        // abi_stable accepts a plugin with a newer 0.y than the host and leaves it to the layout check;
        // semver says 0.y releases are incompatible, so refuse them here with the versions named.
        let ours = VersionNumber::new(PluginModuleRef::VERSION_STRINGS).map_err(|e| anyhow!("{e}"))?;
        let theirs = VersionNumber::new(header.version_strings())
            .map_err(|e| anyhow!("{shown}: unreadable plugin-api version: {e}"))?;
        if !ours.is_loosely_compatible(theirs) {
            return Err(load_error(
                path,
                LibraryError::IncompatibleVersionNumber {
                    library_name: PluginModuleRef::NAME,
                    expected_version: ours,
                    actual_version: theirs,
                },
            ));
        }
        check_layout(header).map_err(|e| load_error(path, e))?;
        // SAFETY: `check_layout` has just verified the library's root module layout against ours.
        let module = unsafe { header.init_root_module_with_unchecked_layout::<PluginModuleRef>() }
            .map_err(|e| load_error(path, e))?;
        Ok(Self { path: path.to_path_buf(), module: Module::Stable(module) })
    }

    /// Resolves and loads a plugin, refusing one of another kind.
    pub fn load(search: &SearchPath, name_or_path: &str, kind: PluginKind) -> Result<Self> {
        let plugin = Self::open(&search.resolve(name_or_path)?)?;
        if plugin.kind() != kind {
            bail!(
                "{} is {} plugin (`{}`), expected {} plugin",
                plugin.path.display(),
                with_article(plugin.kind()),
                plugin.name(),
                with_article(kind)
            );
        }
        Ok(plugin)
    }

    pub fn kind(&self) -> PluginKind {
        match &self.module {
            Module::Stable(module) => module.kind(),
            Module::C(_) => PluginKind::Objective,
        }
    }
    pub fn name(&self) -> &'static str {
        match &self.module {
            Module::Stable(module) => module.name().as_str(),
            Module::C(c) => c.name,
        }
    }
    pub fn description(&self) -> &'static str {
        match &self.module {
            Module::Stable(module) => module.description().as_str(),
            Module::C(c) => c.description,
        }
    }
    pub fn formula(&self) -> &'static str {
        match &self.module {
            Module::Stable(module) => module.formula().as_str(),
            Module::C(c) => c.formula,
        }
    }
    pub fn params(&self) -> &'static [ParamSpec] {
        match &self.module {
            Module::Stable(module) => module.params().as_slice(),
            Module::C(c) => c.params,
        }
    }
    pub fn loss_form(&self) -> LossForm {
        match &self.module {
            Module::Stable(module) => module.loss_form(),
            Module::C(c) => c.loss_form,
        }
    }
    /// The C objective table, when the plugin is written against `sft_objective.h`.
    pub fn c_objective(&self) -> Option<&c_abi::CObjectiveLib> {
        match &self.module {
            Module::Stable(_) => None,
            Module::C(c) => Some(c),
        }
    }

    /// The benchmark an evaluator plugin carries: `(prompt, reference)` for a split, size and seed.
    /// `Ok(None)` when the plugin carries none (including plugins built before the entry existed).
    pub fn benchmark(&self, split: &str, size: usize, seed: u64) -> Result<Option<Vec<(String, String)>>> {
        let Module::Stable(module) = &self.module else { return Ok(None) };
        let Some(entry) = module.benchmark().flatten() else { return Ok(None) };
        let examples = entry(split.into(), size as u64, seed)
            .into_result()
            .map_err(|e| anyhow!("benchmark of `{}` ({}) failed: {e}", self.name(), self.path.display()))?;
        Ok(Some(examples.into_iter().map(|e| (e.prompt.into_string(), e.reference.into_string())).collect()))
    }

    /// Calls the plugin's constructor with already validated parameters.
    fn create(&self, params: &params::ParamSet) -> Result<PluginInstance> {
        let Module::Stable(module) = &self.module else {
            bail!("{} is a C objective, not an abi_stable plugin", self.path.display());
        };
        let entries = params.entries();
        let result = module.create()(entries.as_slice().into());
        result.into_result().map_err(|e| self.refused(e))
    }

    /// The error for a constructor refusing its parameters.
    fn refused(&self, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("plugin `{}` ({}) refused its parameters: {message}", self.name(), self.path.display())
    }
}

/// Checks the library's root-module layout against the host's. abi_stable's own check accepts a plugin
/// whose root module has *more* trailing (suffix) fields than the host knows, i.e. a newer plugin in an
/// older host. The other direction matters as much here: a plugin built before a field was appended
/// must keep loading in a newer host. Prefix-type accessors see the shorter module at run time (such
/// fields read as absent), and the guaranteed prefix must still match exactly, so a layout that is
/// compatible in either direction is safe.
fn check_layout(header: &LibHeader) -> Result<(), LibraryError> {
    let ours = <PluginModuleRef as StableAbi>::LAYOUT;
    let Some(theirs) = header.layout() else {
        // Built with abi_stable's `unsafe_no_layout_constant`: nothing to check against, so refuse.
        return Err(LibraryError::AbiInstability(RBoxError::from_fmt(&"the plugin exports no layout to check")));
    };
    match check_layout_compatibility(ours, theirs) {
        Ok(()) => Ok(()),
        Err(forward) => match check_layout_compatibility(theirs, ours) {
            Ok(()) => Ok(()),
            Err(_) => Err(LibraryError::AbiInstability(RBoxError::from_fmt(&forward))),
        },
    }
}

/// One line for each way a library can fail to load as a plugin.
fn load_error(path: &Path, error: LibraryError) -> anyhow::Error {
    let shown = path.display();
    match error {
        LibraryError::OpenError { err, .. } => {
            anyhow!("{shown} is not a loadable library: {}", one_line(&err.to_string()))
        }
        LibraryError::GetSymbolError { .. } => {
            anyhow!(
                "{shown} is not a plugin: it exports no `{}` root module (nor a C `{}` entry)",
                PluginModuleRef::NAME,
                c_abi::ENTRY_SYMBOL
            )
        }
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => anyhow!(
            "{shown} was built against plugin-api {actual_version}, incompatible with this host's plugin-api {expected_version}; rebuild the plugin"
        ),
        LibraryError::AbiInstability(detail) => {
            tracing::debug!("{shown}: layout mismatch:\n{detail}");
            anyhow!(
            "{shown} has an incompatible plugin ABI (its plugin-api types differ from this host's); rebuild the plugin against plugin-api {}",
            plugin_api::PLUGIN_API_VERSION
        )
        },
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => anyhow!(
            "{shown} was built with an incompatible abi_stable or compiler ABI; rebuild the plugin"
        ),
        other => anyhow!("{shown} could not be loaded as a plugin: {}", one_line(&other.to_string())),
    }
}

/// "an objective", "a mixer", "an evaluator".
fn with_article(kind: PluginKind) -> String {
    let article = if kind.as_str().starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}

/// Keeps the first line of a multi-line message.
fn one_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_string()
}
