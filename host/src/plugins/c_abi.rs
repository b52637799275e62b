//! Objectives written in C: a library exporting `sft_objective_v1` (see `plugin-api/include/sft_objective.h`,
//! the whole contract) instead of an abi_stable root module.
//!
//! [`open`] loads such a library with libloading, refuses a table of another ABI version or with
//! missing or malformed fields (one line naming the file), and copies its metadata into the host's own
//! types, so the parameter schema goes through the same [`ParamSet`] validation as a Rust plugin's. The
//! library is never unloaded: the table's strings and function pointers stay valid for the process.
//! [`CObjectiveLib::create`] and [`CObjective::compute`] turn a NULL state or a non-zero return into an
//! error carrying the plugin's message; the caller validates outputs like any plugin's. A crash inside
//! the C code cannot be caught; the header says so.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::sync::Mutex;

use abi_stable::std_types::{RSlice, RStr};
use anyhow::{anyhow, bail, Result};
use plugin_api::{LossForm, ObjectiveNeeds, ParamDefault, ParamSpec, ParamType, ParamValue};

use super::objective::{ObjectiveInputs, ObjectiveValues};
use super::params::ParamSet;

use plugin_api::c_abi::{
    ComputeFn, CreateFn, CreateInFn, DestroyFn, SftBatch, SftObjectiveV1, SftParam, SftValue, NEEDS_ENTROPY, NEEDS_TOP1,
};
pub use plugin_api::c_abi::{ABI_VERSION, ENTRY_SYMBOL};

/// Size of the buffer the plugin writes its error message into.
pub(crate) const ERR_LEN: usize = 1024;

/// How states are made: the table's `create`, or the Python bridge's `create_in` with a file's handle.
#[derive(Clone, Copy)]
enum Create {
    Table(CreateFn),
    In(CreateInFn, *mut c_void),
}

/// A loaded C objective: its declarations, copied into host types, and its entry points.
#[derive(Clone, Copy)]
pub struct CObjectiveLib {
    pub name: &'static str,
    pub description: &'static str,
    pub formula: &'static str,
    pub loss_form: LossForm,
    pub params: &'static [ParamSpec],
    needs: ObjectiveNeeds,
    create: Create,
    compute: ComputeFn,
    destroy: Option<DestroyFn>,
}

// SAFETY: the handle in `Create::In` is the bridge's, valid for the process and usable from any thread
// (the bridge takes Python's lock on every call).
unsafe impl Send for CObjectiveLib {}
unsafe impl Sync for CObjectiveLib {}

/// Loads `path` as a C objective. `Ok(None)` when it is not a loadable library or exports no
/// `sft_objective_v1` (the caller reports it as not a plugin); an error when it exports one that this
/// host refuses.
pub fn open(path: &Path) -> Result<Option<CObjectiveLib>> {
    let shown = path.display();
    // SAFETY: loading a library runs its initialisers; that is what loading any plugin means.
    let Ok(library) = (unsafe { libloading::Library::new(path) }) else { return Ok(None) };
    let table = {
        // SAFETY: the type is the one the header declares for the symbol.
        let Ok(entry) =
            (unsafe { library.get::<unsafe extern "C" fn() -> *const SftObjectiveV1>(ENTRY_SYMBOL.as_bytes()) })
        else {
            return Ok(None);
        };
        // SAFETY: the header's entry point takes nothing and returns a pointer to a static table.
        unsafe { entry() }
    };
    // The table, and everything it points to, lives as long as the library: keep it loaded for good.
    std::mem::forget(library);
    if table.is_null() {
        bail!("{shown}: `{ENTRY_SYMBOL}` returned NULL instead of its objective table");
    }
    // SAFETY: `abi_version` is the first field in every version of the table, so it is read first and alone.
    let version = unsafe { std::ptr::read(table.cast::<u32>()) };
    if version != ABI_VERSION {
        bail!(
            "{shown} is a C objective built for sft_objective ABI version {version}, but this host supports version {ABI_VERSION}; rebuild it against plugin-api/include/sft_objective.h"
        );
    }
    // SAFETY: a version-1 table has the layout of `SftObjectiveV1`, and lives as long as the library.
    from_table(path, unsafe { &*table }, None).map(Some)
}

/// Reads a version-1 table (the caller has checked the version) into host types. `create_in`, given
/// for a table of the Python bridge, replaces the table's own `create`.
pub(crate) fn from_table(
    path: &Path,
    table: &'static SftObjectiveV1,
    create_in: Option<(CreateInFn, *mut c_void)>,
) -> Result<CObjectiveLib> {
    let shown = path.display();
    let malformed = |what: &str| anyhow!("{shown}: malformed C objective table: {what}");
    let name = c_string(table.name).map_err(|e| malformed(&format!("`name` {e}")))?;
    if name.is_empty() {
        return Err(malformed("`name` is empty"));
    }
    let text = |ptr: *const c_char, what: &str| match ptr.is_null() {
        true => Ok(""),
        false => c_string(ptr).map_err(|e| malformed(&format!("`{what}` {e}"))),
    };
    let description = text(table.description, "description")?;
    let formula = text(table.formula, "formula")?;
    let loss_form = match table.loss_form {
        0 => LossForm::Potential,
        1 => LossForm::DetachedWeightedNll,
        other => return Err(malformed(&format!("`loss_form` is {other} (must be 0 or 1)"))),
    };
    if table.needs & !(NEEDS_ENTROPY | NEEDS_TOP1) != 0 {
        return Err(malformed(&format!("`needs` has unknown flags {:#x}", table.needs)));
    }
    let needs = ObjectiveNeeds {
        entropy: table.needs & NEEDS_ENTROPY != 0,
        top1_prob: table.needs & NEEDS_TOP1 != 0,
        base_logp: false, // not in the C ABI
    };
    let create = match create_in {
        Some((create_in, module)) => Create::In(create_in, module),
        None => Create::Table(table.create.ok_or_else(|| malformed("`create` is NULL"))?),
    };
    let compute = table.compute.ok_or_else(|| malformed("`compute` is NULL"))?;
    let params = param_specs(table).map_err(|e| malformed(&e))?;
    Ok(CObjectiveLib { name, description, formula, loss_form, params, needs, create, compute, destroy: table.destroy })
}

/// Copies a C string that lives as long as the (never unloaded) library into a leaked `&'static str`.
fn c_string(ptr: *const c_char) -> Result<&'static str, String> {
    if ptr.is_null() {
        return Err("is NULL".into());
    }
    // SAFETY: non-NULL, NUL-terminated by the header's contract.
    let text = unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| "is not UTF-8".to_string())?;
    Ok(Box::leak(text.to_owned().into_boxed_str()))
}

/// The table's parameter declarations as the host's [`ParamSpec`]s (leaked: loaded once per process).
fn param_specs(table: &SftObjectiveV1) -> Result<&'static [ParamSpec], String> {
    let n = table.n_params as usize;
    if n == 0 {
        return Ok(&[]);
    }
    if table.params.is_null() {
        return Err(format!("`params` is NULL but `n_params` is {n}"));
    }
    // SAFETY: the header's contract: `params` points to `n_params` specs.
    let specs = unsafe { std::slice::from_raw_parts(table.params, n) };
    let mut out = Vec::with_capacity(n);
    for (k, spec) in specs.iter().enumerate() {
        let name = c_string(spec.name).map_err(|e| format!("params[{k}].name {e}"))?;
        let at = |what: &str| format!("parameter `{name}`: {what}");
        let ty = match spec.ty {
            0 => ParamType::Float,
            1 => ParamType::Int,
            2 => ParamType::Bool,
            3 => ParamType::Str,
            other => return Err(at(&format!("type is {other} (must be 0 to 3)"))),
        };
        // SAFETY: the union is read as the member the declared type names.
        let default = match (spec.has_default != 0, ty) {
            (false, _) => ParamDefault::None,
            (true, ParamType::Float) => ParamDefault::Float(unsafe { spec.default_value.f }),
            (true, ParamType::Int) => ParamDefault::Int(unsafe { spec.default_value.i }),
            (true, ParamType::Bool) => ParamDefault::Bool(unsafe { spec.default_value.b } != 0),
            (true, ParamType::Str) => {
                let text = c_string(unsafe { spec.default_value.s }).map_err(|e| at(&format!("default {e}")))?;
                ParamDefault::Str(RStr::from_str(text))
            }
        };
        let mut choices = Vec::new();
        if !spec.choices.is_null() {
            if ty != ParamType::Str {
                return Err(at("`choices` given for a parameter that is not a string"));
            }
            for i in 0.. {
                // SAFETY: a NULL-terminated list, read up to its terminator.
                let item = unsafe { *spec.choices.add(i) };
                if item.is_null() {
                    break;
                }
                choices.push(RStr::from_str(c_string(item).map_err(|e| at(&format!("choice {i} {e}")))?));
            }
        }
        let doc = if spec.doc.is_null() { "" } else { c_string(spec.doc).map_err(|e| at(&format!("doc {e}")))? };
        out.push(ParamSpec {
            name: RStr::from_str(name),
            ty,
            default,
            choices: RSlice::from_slice(Box::leak(choices.into_boxed_slice())),
            doc: RStr::from_str(doc),
        });
    }
    Ok(Box::leak(out.into_boxed_slice()))
}

/// The plugin's message from its error buffer, on one line.
pub(crate) fn message(buffer: &[u8]) -> String {
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let text = String::from_utf8_lossy(&buffer[..end]);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    }
}

impl CObjectiveLib {
    /// Calls `create` with already validated parameters; a NULL state is the plugin refusing them.
    pub fn create(&self, params: &ParamSet) -> Result<CObjective, String> {
        let entries = params.entries();
        let mut strings = Vec::new(); // keeps the C strings alive across the call
        let mut keep = |s: &str| -> Result<*const c_char, String> {
            let owned = CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))?;
            strings.push(owned);
            Ok(strings.last().expect("just pushed").as_ptr())
        };
        let mut c_params = Vec::with_capacity(entries.len());
        for entry in &entries {
            let (ty, value) = match &entry.value {
                ParamValue::Float(f) => (0, SftValue { f: *f }),
                ParamValue::Int(i) => (1, SftValue { i: *i }),
                ParamValue::Bool(b) => (2, SftValue { b: *b as i32 }),
                ParamValue::Str(s) => (3, SftValue { s: keep(s.as_str())? }),
            };
            c_params.push(SftParam { name: keep(entry.name.as_str())?, ty, value });
        }
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: the header's contract; every pointer is valid for the call.
        let (params_ptr, n_params, err_ptr) = (c_params.as_ptr(), c_params.len() as u32, err.as_mut_ptr().cast());
        let state = match self.create {
            Create::Table(create) => unsafe { create(params_ptr, n_params, err_ptr, err.len()) },
            Create::In(create_in, module) => unsafe { create_in(module, params_ptr, n_params, err_ptr, err.len()) },
        };
        if state.is_null() {
            return Err(message(&err));
        }
        Ok(CObjective { lib: *self, state: Mutex::new(State(state)) })
    }
}

/// The state pointer of a created C objective. The header promises C authors one call at a time per
/// state, from any thread: the mutex around it gives exactly that.
struct State(*mut c_void);
// SAFETY: the header allows calls from any thread, one at a time (see above).
unsafe impl Send for State {}

/// A created C objective; its state is destroyed when this is dropped.
pub struct CObjective {
    lib: CObjectiveLib,
    state: Mutex<State>,
}

impl CObjective {
    pub fn needs(&self) -> ObjectiveNeeds {
        self.lib.needs
    }

    /// Calls `compute`; a non-zero return is an error with the plugin's message. The outputs start out
    /// invalid (NaN, include = 255), so a position the plugin leaves unwritten fails the host's checks.
    pub fn compute(&self, inputs: &ObjectiveInputs<'_>) -> Result<ObjectiveValues, String> {
        let n = inputs.logp.len();
        if inputs.mask.len() != n {
            return Err(format!("mask has {} entries for {n} logp", inputs.mask.len()));
        }
        for (what, extra) in [("entropy", inputs.entropy), ("top1_prob", inputs.top1_prob)] {
            if extra.is_some_and(|v| v.len() != n) {
                return Err(format!("{what} does not have one entry per token"));
            }
        }
        let optional = |v: Option<&[f32]>| v.map_or(std::ptr::null(), <[f32]>::as_ptr);
        let batch = SftBatch {
            logp: inputs.logp.as_ptr(),
            mask: inputs.mask.as_ptr(),
            n_tokens: n,
            sequence_starts: inputs.sequence_starts.as_ptr(),
            n_sequences: inputs.sequence_starts.len(),
            entropy: optional(inputs.entropy),
            top1_prob: optional(inputs.top1_prob),
            step: inputs.step,
            total_steps: inputs.total_steps,
        };
        let mut values = ObjectiveValues { loss: vec![f32::NAN; n], weight: vec![f32::NAN; n], include: vec![255; n] };
        let mut err = vec![0u8; ERR_LEN];
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: the header's contract; inputs and outputs hold `n_tokens` entries for the call.
        let code = unsafe {
            (self.lib.compute)(
                state.0,
                &batch,
                values.loss.as_mut_ptr(),
                values.weight.as_mut_ptr(),
                values.include.as_mut_ptr(),
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if code != 0 {
            return Err(format!("{} (code {code})", message(&err)));
        }
        Ok(values)
    }
}

impl Drop for CObjective {
    fn drop(&mut self) {
        if let Some(destroy) = self.lib.destroy {
            let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
            // SAFETY: `state` came from this library's `create` and is destroyed once.
            unsafe { destroy(state.0) };
        }
    }
}
