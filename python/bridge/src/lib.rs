//! The Python bridge: objectives written as `.py` files, served to the host through the C objective ABI
//! (`plugin-api/include/sft_objective.h`, declared in Rust by [`plugin_api::c_abi`]). The host loads
//! this library only when a `.py` objective is used and calls [`sft_python_objective_v1`] with the
//! file's path; the interpreter (PyO3, embedded) starts then.
//!
//! A Python objective declares, at module level:
//! - `NAME` (required), `DESCRIPTION`, `FORMULA` (strings);
//! - `PARAMS`: a list of `(name, type, default, doc)` tuples or dicts with those keys (and `choices`
//!   for strings); `type` is `float`, `int`, `bool` or `str` (the Python type or its name); a default
//!   of `None` makes the parameter optional. The host checks names and types as for native plugins;
//!   an optional `validate(params)` raising an exception refuses values (ranges);
//! - `LOSS_FORM`: `"potential"` (default: weight = -d loss / d log p) or `"detached_weighted_nll"`;
//!   `NEEDS`: a list of `"entropy"`, `"top1_prob"`;
//! - either pointwise functions `loss(p, params)` and `weight(p, params)` (and optionally
//!   `include(p, params)`), called with the loss positions' probabilities as one float64 NumPy array,
//!   `params` a dict; or `compute(batch, params)` receiving what a native objective gets (`batch.logp`
//!   float32, `batch.mask` uint8, `batch.sequence_starts` uint32, `batch.entropy` and
//!   `batch.top1_prob` arrays or `None`, `batch.step`, `batch.total_steps`) and returning
//!   `(loss, weight, include)`, one value per token.
//!
//! A returned scalar is broadcast; any other shape than one value per position is refused. A Python
//! exception becomes one line: `file:line: Type: message` at the deepest frame in the objective's
//! file. Nothing here panics across the ABI: every entry point catches panics.
//!
//! The bridge uses only Python's stable ABI (PyO3's `abi3-py39`) and links no libpython: the host loads
//! the libpython of the Python it is asked to embed (a virtual environment's, `$HOST_PYTHON`, or
//! `python3`) before loading this library, so one build serves Python 3.9 and later. Arrays cross as
//! bytes through `numpy.frombuffer` and `ndarray.tobytes` (NumPy's C API is not in the stable ABI).

use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::AssertUnwindSafe;

use plugin_api::c_abi::{
    SftBatch, SftObjectiveV1, SftParam, SftParamSpec, SftPythonObjective, SftValue, ABI_VERSION, NEEDS_ENTROPY,
    NEEDS_TOP1,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::sync::Mutex;

/// One `.py` objective: its module and how it computes.
struct PyObjective {
    path: String,
    module: Py<PyModule>,
    pointwise: bool,
    has_include: bool,
    has_validate: bool,
}

/// A created state: the objective and its parameter values.
struct PyState {
    objective: &'static PyObjective,
    params: Py<PyDict>,
}

/// Writes `message` (one line, truncated at a character boundary) into the caller's buffer.
fn write_error(err: *mut c_char, err_len: usize, message: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut end = line.len().min(err_len - 1);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    // SAFETY: the caller's buffer holds `err_len` bytes; `end + 1 <= err_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(line.as_ptr(), err.cast::<u8>(), end);
        *err.add(end) = 0;
    }
}

/// Runs `call`, turning a panic into an error message.
fn guarded<T>(call: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(format!("the Python bridge panicked: {detail}"))
    })
}

/// `file:line: Type: message` for a Python exception, at the deepest frame in `path` (else the deepest).
fn describe(py: Python<'_>, error: &PyErr, path: &str) -> String {
    let text = || -> PyResult<String> {
        let traceback = py.import_bound("traceback")?;
        let value = error.value_bound(py);
        let kind: String = error.get_type_bound(py).getattr("__name__")?.extract()?;
        // A long message (NumPy's import advice) keeps its first and last lines.
        let message: String = value.str()?.extract()?;
        let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let message = match lines.as_slice() {
            [] => String::new(),
            [one] => one.to_string(),
            [first, .., last] => format!("{first} ... {last}"),
        };
        let headline = if message.is_empty() { kind.clone() } else { format!("{kind}: {message}") };
        // A syntax error is located by the exception itself, not by a frame.
        if let (Ok(file), Ok(line)) = (value.getattr("filename"), value.getattr("lineno")) {
            if let (Ok(file), Ok(line)) = (file.extract::<String>(), line.extract::<u32>()) {
                let message: String = value.getattr("msg").and_then(|m| m.extract()).unwrap_or(message);
                return Ok(format!("{file}:{line}: {kind}: {message}"));
            }
        }
        let Some(tb) = error.traceback_bound(py) else { return Ok(headline) };
        let frames = traceback.call_method1("extract_tb", (tb,))?;
        let frames: Vec<(String, u32)> = frames
            .iter()?
            .map(|frame| {
                let frame = frame?;
                Ok((frame.getattr("filename")?.extract()?, frame.getattr("lineno")?.extract()?))
            })
            .collect::<PyResult<_>>()?;
        let at = frames.iter().rev().find(|(file, _)| file == path).or(frames.last());
        Ok(match at {
            Some((file, line)) => format!("{file}:{line}: {headline}"),
            None => headline,
        })
    };
    text().unwrap_or_else(|_| error.to_string())
}

/// A C string that lives for the rest of the process.
fn leak_c(text: &str) -> Result<*const c_char, String> {
    let owned = CString::new(text).map_err(|_| format!("{text:?} contains a NUL byte"))?;
    Ok(Box::leak(owned.into_boxed_c_str()).as_ptr())
}

/// An optional module-level string.
fn optional_str(module: &Bound<'_, PyModule>, name: &str) -> PyResult<Option<String>> {
    match module.getattr(name) {
        Ok(value) if value.is_none() => Ok(None),
        Ok(value) => value.extract().map(Some),
        Err(_) => Ok(None),
    }
}

/// The C parameter type of a declared `type` (a Python type or its name).
fn param_type(ty: &Bound<'_, PyAny>) -> Result<i32, String> {
    let name: String = match ty.getattr("__name__") {
        Ok(name) => name.extract().map_err(|e| e.to_string())?,
        Err(_) => ty.extract().map_err(|_| format!("type {ty} is neither a type nor a type name"))?,
    };
    match name.as_str() {
        "float" => Ok(0),
        "int" => Ok(1),
        "bool" => Ok(2),
        "str" => Ok(3),
        other => Err(format!("type `{other}` is not float, int, bool or str")),
    }
}

/// One `PARAMS` entry as a C spec.
fn param_spec(entry: &Bound<'_, PyAny>, k: usize) -> Result<SftParamSpec, String> {
    let field = |key: &str, index: usize| -> Result<Option<Bound<'_, PyAny>>, String> {
        if let Ok(dict) = entry.downcast::<PyDict>() {
            return dict.get_item(key).map_err(|e| e.to_string());
        }
        let tuple = entry.downcast::<PyTuple>().map_err(|_| format!("PARAMS[{k}] is neither a tuple nor a dict"))?;
        Ok(tuple.get_item(index).ok())
    };
    let name: String = field("name", 0)?
        .ok_or(format!("PARAMS[{k}] has no name"))?
        .extract()
        .map_err(|_| format!("PARAMS[{k}]: the name is not a string"))?;
    let at = |what: String| format!("PARAMS[{k}] (`{name}`): {what}");
    let ty = param_type(&field("type", 1)?.ok_or_else(|| at("no type".into()))?).map_err(at)?;
    let default = field("default", 2)?.filter(|d| !d.is_none());
    let doc: Option<String> = field("doc", 3)?
        .filter(|d| !d.is_none())
        .map(|d| d.extract())
        .transpose()
        .map_err(|_| at("the doc is not a string".into()))?;
    let wrong_default = |d: &Bound<'_, PyAny>| at(format!("the default {d} does not have the declared type"));
    let default_value = match (&default, ty) {
        (None, _) => SftValue { i: 0 },
        // bool is a subclass of int in Python: refuse it where a number is declared, and the reverse.
        (Some(d), 0) if !d.is_instance_of::<pyo3::types::PyBool>() => {
            SftValue { f: d.extract::<f64>().map_err(|_| wrong_default(d))? }
        }
        (Some(d), 1) if !d.is_instance_of::<pyo3::types::PyBool>() => {
            SftValue { i: d.extract::<i64>().map_err(|_| wrong_default(d))? }
        }
        (Some(d), 2) if d.is_instance_of::<pyo3::types::PyBool>() => {
            SftValue { b: d.extract::<bool>().map_err(|_| wrong_default(d))? as i32 }
        }
        (Some(d), 3) => SftValue { s: leak_c(&d.extract::<String>().map_err(|_| wrong_default(d))?).map_err(at)? },
        (Some(d), _) => return Err(wrong_default(d)),
    };
    let choices = match field("choices", 4)?.filter(|c| !c.is_none()) {
        None => std::ptr::null(),
        Some(choices) => {
            let list: Vec<String> = choices.extract().map_err(|_| at("choices are not a list of strings".into()))?;
            let mut pointers = list.iter().map(|c| leak_c(c)).collect::<Result<Vec<_>, _>>().map_err(at)?;
            pointers.push(std::ptr::null());
            Box::leak(pointers.into_boxed_slice()).as_ptr()
        }
    };
    Ok(SftParamSpec {
        name: leak_c(&name).map_err(at)?,
        ty,
        has_default: default.is_some() as i32,
        default_value,
        choices,
        doc: match doc {
            Some(doc) => leak_c(&doc).map_err(at)?,
            None => std::ptr::null(),
        },
    })
}

/// The host's Python's `sys.path` folders ([`sft_python_site_dirs_v1`]).
static SITE_DIRS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// See [`plugin_api::c_abi::PYTHON_SITE_DIRS_SYMBOL`].
///
/// # Safety
/// `dirs` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sft_python_site_dirs_v1(dirs: *const c_char) {
    if dirs.is_null() {
        return;
    }
    // SAFETY: the caller's contract.
    let dirs = unsafe { CStr::from_ptr(dirs) }.to_string_lossy();
    if let Ok(mut site_dirs) = SITE_DIRS.lock() {
        *site_dirs = dirs.split('\n').filter(|d| !d.is_empty()).map(String::from).collect();
    }
}

/// Runs the file and reads its declarations into a table.
fn load(py: Python<'_>, path: &str) -> Result<&'static SftPythonObjective, String> {
    // The bridge's own panic hook would print to stderr; every entry point reports panics as errors.
    std::panic::set_hook(Box::new(|_| {}));
    let code = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let sys = py.import_bound("sys").map_err(|e| describe(py, &e, path))?;
    let folder = std::path::Path::new(path).parent().map(|p| p.display().to_string()).unwrap_or_default();
    // Imports next to the file, and the host's Python's packages (a virtual environment's), as
    // `python file.py` would see them.
    let sys_path = sys.getattr("path").and_then(|p| p.downcast_into::<PyList>().map_err(Into::into));
    let sys_path = sys_path.map_err(|e| describe(py, &e, path))?;
    if !sys_path.contains(&folder).unwrap_or(false) {
        sys_path.insert(0, &folder).map_err(|e| describe(py, &e, path))?;
    }
    let site = py.import_bound("site").map_err(|e| describe(py, &e, path))?;
    for dir in SITE_DIRS.lock().map(|d| d.clone()).unwrap_or_default() {
        if !sys_path.contains(&dir).unwrap_or(false) {
            site.call_method1("addsitedir", (dir,)).map_err(|e| describe(py, &e, path))?;
        }
    }
    // NumPy carries the arrays; without it no objective runs, so say so before anything else.
    py.import_bound("numpy").map_err(|e| {
        let python = py.version().split_whitespace().next().unwrap_or("?").to_string();
        format!("Python objectives need NumPy in the Python {python} the bridge embeds: {}", describe(py, &e, path))
    })?;
    let stem = std::path::Path::new(path).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let module = PyModule::from_code_bound(py, &code, path, &stem).map_err(|e| describe(py, &e, path))?;

    let declared = |what: String| format!("{path}: {what}");
    let name = optional_str(&module, "NAME")
        .map_err(|_| declared("`NAME` is not a string".into()))?
        .ok_or_else(|| declared("no `NAME` (the objective's code name, a string)".into()))?;
    let description =
        optional_str(&module, "DESCRIPTION").map_err(|_| declared("`DESCRIPTION` is not a string".into()))?;
    let formula = optional_str(&module, "FORMULA").map_err(|_| declared("`FORMULA` is not a string".into()))?;
    let has = |attr: &str| module.getattr(attr).is_ok_and(|f| f.is_callable());
    let pointwise = match (has("loss") && has("weight"), has("compute")) {
        (true, false) => true,
        (false, true) => false,
        (true, true) => return Err(declared("defines both `loss`/`weight` and `compute`; keep one".into())),
        (false, false) => {
            return Err(declared(
                "defines neither `loss(p, params)` and `weight(p, params)` nor `compute(batch, params)`".into(),
            ))
        }
    };
    let loss_form = match optional_str(&module, "LOSS_FORM")
        .map_err(|_| declared("`LOSS_FORM` is not a string".into()))?
    {
        None => 0,
        Some(form) if form == "potential" => 0,
        Some(form) if form == "detached_weighted_nll" => 1,
        Some(other) => {
            return Err(declared(format!("`LOSS_FORM` is {other:?}, not \"potential\" or \"detached_weighted_nll\"")))
        }
    };
    let mut needs = 0;
    if let Ok(list) = module.getattr("NEEDS") {
        let list: Vec<String> = list.extract().map_err(|_| declared("`NEEDS` is not a list of strings".into()))?;
        for need in list {
            needs |= match need.as_str() {
                "entropy" => NEEDS_ENTROPY,
                "top1_prob" => NEEDS_TOP1,
                other => return Err(declared(format!("`NEEDS` has {other:?}, not \"entropy\" or \"top1_prob\""))),
            };
        }
        if pointwise && needs != 0 {
            return Err(declared("`NEEDS` is for `compute(batch, params)`; pointwise functions see only p".into()));
        }
    }
    let mut specs = Vec::new();
    if let Ok(params) = module.getattr("PARAMS") {
        let params = params.downcast::<PyList>().map_err(|_| declared("`PARAMS` is not a list".into()))?;
        for (k, entry) in params.iter().enumerate() {
            specs.push(param_spec(&entry, k).map_err(declared)?);
        }
    }
    let n_params = specs.len() as u32;
    let text = |t: Option<String>| t.map(|t| leak_c(&t)).transpose().map(|p| p.unwrap_or(std::ptr::null()));
    let objective = Box::leak(Box::new(PyObjective {
        path: path.to_string(),
        module: module.clone().unbind(),
        pointwise,
        has_include: has("include"),
        has_validate: has("validate"),
    }));
    let table = SftObjectiveV1 {
        abi_version: ABI_VERSION,
        needs,
        name: leak_c(&name).map_err(declared)?,
        description: text(description).map_err(declared)?,
        formula: text(formula).map_err(declared)?,
        loss_form,
        n_params,
        params: Box::leak(specs.into_boxed_slice()).as_ptr(),
        create: None,
        compute: Some(compute),
        destroy: Some(destroy),
    };
    let served = SftPythonObjective {
        table,
        module: (objective as *mut PyObjective).cast::<c_void>(),
        create_in: Some(create_in),
    };
    Ok(Box::leak(Box::new(served)))
}

/// Reads the Python objective at `path`; NULL with a message in `err` when it cannot be served.
///
/// # Safety
/// `path` is a NUL-terminated string; `err` holds `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sft_python_objective_v1(
    path: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> *const SftPythonObjective {
    let result = guarded(|| {
        // SAFETY: the caller's contract.
        let path = unsafe { CStr::from_ptr(path) }.to_str().map_err(|_| "the path is not UTF-8".to_string())?;
        // Starts the interpreter of the libpython the host loaded (once; later calls do nothing).
        pyo3::prepare_freethreaded_python();
        Python::with_gil(|py| load(py, path))
    });
    match result {
        Ok(objective) => objective,
        Err(message) => {
            write_error(err, err_len, &message);
            std::ptr::null()
        }
    }
}

/// The parameters as a dict, by their declared types.
fn params_dict<'py>(py: Python<'py>, params: &[SftParam]) -> Result<Bound<'py, PyDict>, String> {
    let dict = PyDict::new_bound(py);
    for param in params {
        // SAFETY: the host passes NUL-terminated names and values of the declared type.
        let name = unsafe { CStr::from_ptr(param.name) }.to_string_lossy().into_owned();
        let set = match param.ty {
            0 => dict.set_item(&name, unsafe { param.value.f }),
            1 => dict.set_item(&name, unsafe { param.value.i }),
            2 => dict.set_item(&name, unsafe { param.value.b } != 0),
            _ => dict.set_item(&name, unsafe { CStr::from_ptr(param.value.s) }.to_string_lossy().into_owned()),
        };
        set.map_err(|e| e.to_string())?;
    }
    Ok(dict)
}

unsafe extern "C" fn create_in(
    module: *mut c_void,
    params: *const SftParam,
    n_params: u32,
    err: *mut c_char,
    err_len: usize,
) -> *mut c_void {
    let result = guarded(|| {
        // SAFETY: `module` is the handle `load` leaked; the host passes `n_params` parameters.
        let objective: &'static PyObjective = unsafe { &*module.cast::<PyObjective>() };
        let params =
            if n_params == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(params, n_params as usize) } };
        Python::with_gil(|py| {
            let dict = params_dict(py, params)?;
            if objective.has_validate {
                let validate = objective.module.bind(py).getattr("validate").map_err(|e| e.to_string())?;
                validate.call1((dict.clone(),)).map_err(|e| describe(py, &e, &objective.path))?;
            }
            Ok(Box::into_raw(Box::new(PyState { objective, params: dict.unbind() })).cast::<c_void>())
        })
    });
    result.unwrap_or_else(|message| {
        write_error(err, err_len, &message);
        std::ptr::null_mut()
    })
}

/// Values that cross into Python as a NumPy array: the element type NumPy knows them by.
trait Element: Copy {
    const DTYPE: &'static str;
}
impl Element for f32 {
    const DTYPE: &'static str = "float32";
}
impl Element for f64 {
    const DTYPE: &'static str = "float64";
}
impl Element for u8 {
    const DTYPE: &'static str = "uint8";
}
impl Element for u32 {
    const DTYPE: &'static str = "uint32";
}

/// `values` as a writable one-dimensional NumPy array (a copy; objectives may change it in place).
fn to_array<T: Element>(numpy: &Bound<'_, PyModule>, values: &[T], path: &str) -> Result<PyObject, String> {
    // SAFETY: any initialised plain number slice may be read as its bytes.
    let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) };
    let buffer = PyBytes::new_bound(numpy.py(), bytes);
    let array = numpy.call_method1("frombuffer", (buffer, T::DTYPE)).and_then(|a| a.call_method0("copy"));
    array.map(Bound::unbind).map_err(|e| describe(numpy.py(), &e, path))
}

/// A returned value as `n` float64s: a scalar is broadcast, an array must hold exactly `n`.
fn floats(
    numpy: &Bound<'_, PyModule>,
    value: &Bound<'_, PyAny>,
    n: usize,
    what: &str,
    path: &str,
) -> Result<Vec<f64>, String> {
    let py = numpy.py();
    // `asarray`, not `ascontiguousarray`: the latter makes a scalar one-dimensional, hiding it.
    let array = numpy
        .call_method1("asarray", (value, "float64"))
        .map_err(|e| format!("`{what}` returned something that is not numbers: {}", describe(py, &e, path)))?;
    let ndim: usize = array.getattr("ndim").and_then(|d| d.extract()).map_err(|e| e.to_string())?;
    let shape: Vec<usize> = array.getattr("shape").and_then(|s| s.extract()).map_err(|e| e.to_string())?;
    // `tobytes` writes C order whatever the array's layout.
    let bytes = array.call_method0("tobytes").map_err(|e| e.to_string())?;
    let bytes = bytes.downcast::<PyBytes>().map_err(|e| e.to_string())?.as_bytes();
    let values: Vec<f64> =
        bytes.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().expect("chunks of 8 bytes"))).collect();
    match (ndim, values.len()) {
        (0, 1) => Ok(vec![values[0]; n]),
        (1, len) if len == n => Ok(values),
        _ => Err(format!("`{what}` returned shape {shape:?} for {n} positions (one value per position, or a scalar)")),
    }
}

/// `include` values as 0/1.
fn flags(values: Vec<f64>, what: &str) -> Result<Vec<u8>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            0.0 => Ok(0),
            1.0 => Ok(1),
            other => Err(format!("`{what}` must be 0 or 1 (or bool), got {other} at position {i}")),
        })
        .collect()
}

/// What an objective returns per token.
struct TokenValues {
    loss: Vec<f32>,
    weight: Vec<f32>,
    include: Vec<u8>,
}

/// Loss, weight and include per token for one batch.
fn compute_batch(py: Python<'_>, state: &PyState, batch: &SftBatch) -> Result<TokenValues, String> {
    let objective = state.objective;
    let path = objective.path.as_str();
    let module = objective.module.bind(py);
    let params = state.params.bind(py);
    let numpy = py.import_bound("numpy").map_err(|e| describe(py, &e, path))?;
    let n = batch.n_tokens;
    let slice = |ptr: *const f32| (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr, n) });
    // SAFETY: the header's contract: `logp` and `mask` hold `n_tokens` entries, `sequence_starts` `n_sequences`.
    let logp = if n == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(batch.logp, n) } };
    let mask = if n == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(batch.mask, n) } };
    let call = |name: &str, args: Bound<'_, PyTuple>| -> Result<Bound<'_, PyAny>, String> {
        let function = module.getattr(name).map_err(|e| describe(py, &e, path))?;
        function.call1(args).map_err(|e| describe(py, &e, path))
    };
    if objective.pointwise {
        // As a native pointwise objective: p = exp(log p) in float64 at the loss positions only.
        let positions: Vec<usize> = (0..n).filter(|&i| mask[i] != 0).collect();
        let p: Vec<f64> = positions.iter().map(|&i| (logp[i] as f64).exp()).collect();
        let p = to_array(&numpy, &p, path)?;
        let m = positions.len();
        let args = || PyTuple::new_bound(py, [p.clone_ref(py), params.as_any().clone().unbind()]);
        let loss = floats(&numpy, &call("loss", args())?, m, "loss", path)?;
        let weight = floats(&numpy, &call("weight", args())?, m, "weight", path)?;
        let include = match objective.has_include {
            true => flags(floats(&numpy, &call("include", args())?, m, "include", path)?, "include")?,
            false => vec![1; m],
        };
        let (mut l, mut w, mut inc) = (vec![0.0f32; n], vec![0.0f32; n], vec![0u8; n]);
        for (k, &i) in positions.iter().enumerate() {
            if include[k] == 1 {
                (l[i], w[i], inc[i]) = (loss[k] as f32, weight[k] as f32, 1);
            }
        }
        return Ok(TokenValues { loss: l, weight: w, include: inc });
    }
    let starts = if batch.n_sequences == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(batch.sequence_starts, batch.n_sequences) }
    };
    let types = py.import_bound("types").map_err(|e| describe(py, &e, path))?;
    let fields = PyDict::new_bound(py);
    let optional = |values: Option<&[f32]>| -> Result<PyObject, String> {
        match values {
            Some(values) => to_array(&numpy, values, path),
            None => Ok(py.None()),
        }
    };
    let set = |key: &str, value: PyObject| fields.set_item(key, value).map_err(|e| e.to_string());
    set("logp", to_array(&numpy, logp, path)?)?;
    set("mask", to_array(&numpy, mask, path)?)?;
    set("sequence_starts", to_array(&numpy, starts, path)?)?;
    set("entropy", optional(slice(batch.entropy))?)?;
    set("top1_prob", optional(slice(batch.top1_prob))?)?;
    set("step", batch.step.into_py(py))?;
    set("total_steps", batch.total_steps.into_py(py))?;
    let namespace = types.getattr("SimpleNamespace").and_then(|ns| ns.call((), Some(&fields)));
    let namespace = namespace.map_err(|e| describe(py, &e, path))?;
    let result = call("compute", PyTuple::new_bound(py, [namespace, params.as_any().clone()]))?;
    let parts = result
        .downcast::<PyTuple>()
        .ok()
        .filter(|t| t.len() == 3)
        .ok_or_else(|| format!("`compute` must return (loss, weight, include), got {}", result))?;
    let part = |k: usize| parts.get_item(k).map_err(|e| e.to_string());
    let loss = floats(&numpy, &part(0)?, n, "compute's loss", path)?;
    let weight = floats(&numpy, &part(1)?, n, "compute's weight", path)?;
    let include = flags(floats(&numpy, &part(2)?, n, "compute's include", path)?, "compute's include")?;
    Ok(TokenValues {
        loss: loss.iter().map(|&v| v as f32).collect(),
        weight: weight.iter().map(|&v| v as f32).collect(),
        include,
    })
}

unsafe extern "C" fn compute(
    state: *mut c_void,
    batch: *const SftBatch,
    loss: *mut f32,
    weight: *mut f32,
    include: *mut u8,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    let result = guarded(|| {
        // SAFETY: `state` came from `create_in`; `batch` and the outputs are valid for the call.
        let (state, batch) = unsafe { (&*state.cast::<PyState>(), &*batch) };
        let values = Python::with_gil(|py| compute_batch(py, state, batch))?;
        let n = batch.n_tokens;
        unsafe {
            std::ptr::copy_nonoverlapping(values.loss.as_ptr(), loss, n);
            std::ptr::copy_nonoverlapping(values.weight.as_ptr(), weight, n);
            std::ptr::copy_nonoverlapping(values.include.as_ptr(), include, n);
        }
        Ok(())
    });
    match result {
        Ok(()) => 0,
        Err(message) => {
            write_error(err, err_len, &message);
            1
        }
    }
}

unsafe extern "C" fn destroy(state: *mut c_void) {
    if !state.is_null() {
        // SAFETY: `state` came from `create_in` and is destroyed once; its Python parts are released
        // under the interpreter's lock.
        let state = unsafe { Box::from_raw(state.cast::<PyState>()) };
        Python::with_gil(|_| drop(state));
    }
}
