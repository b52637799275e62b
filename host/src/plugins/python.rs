//! Objectives written in Python: a `.py` file is read by the Python bridge (`libsft_python.so`, built
//! from `python/bridge`, which embeds the interpreter with PyO3), and served through the C objective
//! ABI of [`super::c_abi`], so it is checked, trained, plotted and swept like any objective. The host
//! itself never links Python: the bridge is loaded only when a `.py` objective is used, from the plugin
//! search path (the `host` binary's folder last), and a host without it runs everything else.
//!
//! The bridge links no libpython (it uses the stable ABI, Python 3.9+): before loading it the host
//! loads the libpython of the Python to embed ([`Interpreter::find`]: `$HOST_PYTHON`, else the virtual
//! environment `host` is installed in, else `$VIRTUAL_ENV`'s, else `python3` on `PATH`) and hands the
//! bridge that Python's `sys.path`, so a `.py` objective imports what `python` there would.

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use plugin_api::c_abi::{PythonEntryFn, PythonSiteDirsFn, PYTHON_ENTRY_SYMBOL, PYTHON_SITE_DIRS_SYMBOL};

use super::c_abi::{self, CObjectiveLib, ERR_LEN};
use super::SearchPath;

/// The bridge library's name in the search path.
pub const BRIDGE_NAME: &str = "sft_python";

/// Whether `path` names a Python objective.
pub fn is_python(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
}

/// The oldest Python the bridge's stable ABI serves.
const MIN_PYTHON: (u32, u32) = (3, 9);

/// What the host asks of the Python to embed: its version, its shared libpython, its `sys.path`.
const QUERY: &str = r#"
import json, sys, sysconfig
v = sysconfig.get_config_var
print(json.dumps({"version": list(sys.version_info[:2]), "libdir": v("LIBDIR") or "", "ldlibrary": v("LDLIBRARY") or "",
                  "soname": v("INSTSONAME") or "", "path": [p for p in sys.path if p]}))
"#;

/// The Python a `.py` objective runs in.
#[derive(Debug, serde::Deserialize)]
struct Interpreter {
    #[serde(skip)]
    executable: PathBuf,
    version: (u32, u32),
    libdir: String,
    ldlibrary: String,
    soname: String,
    path: Vec<String>,
}

impl Interpreter {
    /// `$HOST_PYTHON`, else the virtual environment this `host` is installed in (`<venv>/bin/host`
    /// beside `<venv>/pyvenv.cfg`), else `$VIRTUAL_ENV`'s, else `python3`; asked for what it is.
    fn find() -> Result<Self, String> {
        let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
        let installed_venv = exe_dir.filter(|d| d.parent().is_some_and(|venv| venv.join("pyvenv.cfg").is_file()));
        let (executable, origin) = if let Some(explicit) = std::env::var_os("HOST_PYTHON") {
            (PathBuf::from(explicit), "HOST_PYTHON")
        } else if let Some(bin) = installed_venv {
            (bin.join("python3"), "the virtual environment of `host`")
        } else if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
            (Path::new(&venv).join("bin/python3"), "VIRTUAL_ENV")
        } else {
            (PathBuf::from("python3"), "PATH")
        };
        let shown = executable.display();
        let output = std::process::Command::new(&executable)
            .args(["-c", QUERY])
            .output()
            .map_err(|e| format!("Python objectives need a Python 3: cannot run {shown} (from {origin}): {e}"))?;
        if !output.status.success() {
            let why = String::from_utf8_lossy(&output.stderr);
            let why = why.lines().last().unwrap_or("no message");
            return Err(format!("Python objectives need a Python 3: {shown} (from {origin}) failed: {why}"));
        }
        let mut found: Interpreter = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("{shown} (from {origin}) did not describe itself: {e}"))?;
        if found.version < MIN_PYTHON {
            return Err(format!(
                "{shown} (from {origin}) is Python {}.{}; Python objectives need {}.{} or later (set HOST_PYTHON)",
                found.version.0, found.version.1, MIN_PYTHON.0, MIN_PYTHON.1
            ));
        }
        found.executable = executable;
        Ok(found)
    }

    /// Loads its libpython into the process with global symbols, for the bridge and the extension
    /// modules Python imports (NumPy's) to resolve against, as in a `python` executable.
    fn load_libpython(&self) -> Result<(), String> {
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
        let mut candidates = Vec::new();
        for name in [&self.soname, &self.ldlibrary] {
            if name.contains(".so") {
                candidates.push(Path::new(&self.libdir).join(name));
                candidates.push(PathBuf::from(name));
            }
        }
        let mut last_error = None;
        for candidate in &candidates {
            // SAFETY: loading libpython runs no Python code; its initialisers only set up the library.
            match unsafe { libloading::os::unix::Library::open(Some(candidate), flags) } {
                Ok(library) => {
                    std::mem::forget(library);
                    return Ok(());
                }
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        let (major, minor) = self.version;
        Err(match last_error {
            None => format!(
                "{} (Python {major}.{minor}) has no shared libpython (built without --enable-shared); Python objectives need one (set HOST_PYTHON to another Python)",
                self.executable.display()
            ),
            Some(e) => format!("cannot load the libpython of {} (Python {major}.{minor}): {e}", self.executable.display()),
        })
    }
}

/// The bridge's entry point, loaded once per process (the library is never unloaded).
fn bridge() -> Result<PythonEntryFn> {
    static ENTRY: OnceLock<Result<PythonEntryFn, String>> = OnceLock::new();
    let entry = ENTRY.get_or_init(|| {
        let path = SearchPath::new(&[]).resolve(BRIDGE_NAME).map_err(|_| {
            format!(
                "Python objectives need the Python bridge, lib{BRIDGE_NAME}.so, next to `host` or in the plugin search path; build it with `cargo build -p python-bridge`"
            )
        })?;
        let python = Interpreter::find()?;
        python.load_libpython()?;
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
        // SAFETY: loading the bridge runs its initialisers; the Python ones wait for the first entry.
        let library = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }
            .map_err(|e| format!("{} is not a loadable library: {e}", path.display()))?;
        // SAFETY: the types are the ones plugin-api declares for the symbols.
        let (entry, site_dirs) = unsafe {
            let entry = library.get::<PythonEntryFn>(PYTHON_ENTRY_SYMBOL.as_bytes()).map(|symbol| *symbol);
            let site_dirs = library.get::<PythonSiteDirsFn>(PYTHON_SITE_DIRS_SYMBOL.as_bytes()).map(|symbol| *symbol);
            (entry, site_dirs)
        };
        let entry = entry.map_err(|_| format!("{} exports no `{PYTHON_ENTRY_SYMBOL}`", path.display()))?;
        let site_dirs = site_dirs.map_err(|_| format!("{} exports no `{PYTHON_SITE_DIRS_SYMBOL}`", path.display()))?;
        let dirs = CString::new(python.path.join("\n")).map_err(|_| "a sys.path entry contains a NUL byte".to_string())?;
        // SAFETY: plugin-api's declaration; the string outlives the call (the bridge copies it).
        unsafe { site_dirs(dirs.as_ptr()) };
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
