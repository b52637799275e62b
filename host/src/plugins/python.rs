//! Objectives written in Python: a `.py` file is read by the Python bridge (`libsft_python.so`, built
//! from `python/bridge`, which embeds the interpreter with PyO3), and served through the C objective
//! ABI of [`super::c_abi`], so it is checked, trained, plotted and swept like any objective. The host
//! itself never links Python: the bridge is loaded only when a `.py` objective is used, from the plugin
//! search path (the `host` binary's folder last), and a host without it runs everything else.

use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use plugin_api::c_abi::{PythonEntryFn, PYTHON_ENTRY_SYMBOL};

use super::c_abi::{self, CObjectiveLib, ERR_LEN};
use super::SearchPath;

/// The bridge library's name in the search path.
pub const BRIDGE_NAME: &str = "sft_python";

/// Whether `path` names a Python objective.
pub fn is_python(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

/// The bridge's entry point, loaded once per process (the library is never unloaded).
fn bridge() -> Result<PythonEntryFn> {
    static ENTRY: OnceLock<Result<PythonEntryFn, String>> = OnceLock::new();
    let entry = ENTRY.get_or_init(|| {
        let path = SearchPath::new(&[]).resolve(BRIDGE_NAME).map_err(|_| {
            format!(
                "Python objectives need the Python bridge, lib{BRIDGE_NAME}.so, next to `host` or in the plugin search path; build it with `cargo build -p python-bridge` (it needs a Python 3 with NumPy)"
            )
        })?;
        // Global symbols: the extension modules Python imports (NumPy's) resolve libpython's symbols from
        // the process, as they do in a `python` executable.
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
        // SAFETY: loading the bridge runs its initialisers (it links libpython); that is what it is for.
        let library = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }
            .map_err(|e| format!("{} is not a loadable library: {e}", path.display()))?;
        // SAFETY: the type is the one plugin-api declares for the symbol.
        let entry = unsafe { library.get::<PythonEntryFn>(PYTHON_ENTRY_SYMBOL.as_bytes()) }
            .map(|symbol| *symbol)
            .map_err(|_| format!("{} exports no `{PYTHON_ENTRY_SYMBOL}`", path.display()))?;
        std::mem::forget(library);
        Ok(entry)
    });
    entry.clone().map_err(|e| anyhow!(e))
}

/// Reads the Python objective at `path` through the bridge.
pub fn open(path: &Path) -> Result<CObjectiveLib> {
    let shown = path.display();
    let entry = bridge()?;
    let absolute = std::fs::canonicalize(path).map_err(|e| anyhow!("cannot read {shown}: {e}"))?;
    let c_path = CString::new(absolute.to_string_lossy().as_bytes())
        .map_err(|_| anyhow!("{shown}: the path contains a NUL byte"))?;
    let mut err = vec![0u8; ERR_LEN];
    // SAFETY: plugin-api's declaration of the entry point; the buffers are valid for the call.
    let objective = unsafe { entry(c_path.as_ptr(), err.as_mut_ptr().cast::<c_char>(), err.len()) };
    if objective.is_null() {
        bail!("{shown}: {}", c_abi::message(&err));
    }
    // SAFETY: a non-NULL result points to a table the bridge keeps for the rest of the process.
    let objective = unsafe { &*objective };
    let create_in = objective.create_in.ok_or_else(|| anyhow!("{shown}: the Python bridge gave no `create_in`"))?;
    c_abi::from_table(path, &objective.table, Some((create_in, objective.module)))
}
